//! The ACK generator: ingress marking and queueing the ACKs it decides on (run through the
//! entrance as `etran up` links them), the `etran_tcp_gen` program turning a queued key into a
//! byte-exact pure ACK for the NIC (BPF_PROG_TEST_RUN fixtures, checksums computed
//! independently), the gen pump's live-frames calls (cost with and without the spare
//! attachment), and an end-to-end run: a segment injected at a veth "NIC" is ACKed onto the wire
//! by the pump, no app involved. Needs root (CAP_BPF, CAP_NET_ADMIN).
mod common;

use std::{
    os::fd::AsFd,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{
    fixture::drop_total,
    netns::{in_netns, sh, RawSocket, VethPair},
    packet::*,
    tcp::*,
};
use etran::{
    backend::compat::pump::{self, GenPump},
    bpf::tcp::types::{
        etran_tcp_ack_queued, etran_tcp_gen_wake, tcp_conn, tcp_conn_flag, tcp_conn_key,
    },
    loader::{self, ObjectStorage},
    transport::tcp::tcp_handles,
};
use libbpf_rs::{MapCore, MapFlags, RingBufferBuilder};

/// Both sequence spaces start just short of the 2^32 wrap.
const RCV: u32 = 0xffff_ff00;
const SND: u32 = 0xffff_fc00;
const WND: u32 = 100_000;
const RCV_WSCALE: u8 = 2;
const MSS: u16 = 1000;
const TS_RECENT: u32 = 7;
const TS: u8 = tcp_conn_flag::TCP_CONN_TIMESTAMPS.0 as u8;
const ECN: u8 = tcp_conn_flag::TCP_CONN_ECN.0 as u8;
const SACK: u8 = tcp_conn_flag::TCP_CONN_SACK.0 as u8;

const NOT_QUEUED: u8 = etran_tcp_ack_queued::ETRAN_TCP_ACK_NOT_QUEUED.0 as u8;
const DELAYED: u8 = etran_tcp_ack_queued::ETRAN_TCP_ACK_DELAYED.0 as u8;
const IMMEDIATE: u8 = etran_tcp_ack_queued::ETRAN_TCP_ACK_IMMEDIATE.0 as u8;

/// The template the pump runs the generator over: as long as the longest pure ACK.
const TEMPLATE: [u8; pump::TEMPLATE_LEN] = [0; pump::TEMPLATE_LEN];

/// An established connection with nothing owed (and a congestion window out of the way).
fn base_conn() -> tcp_conn {
    let c = tcp_conn {
        owner_port: 0,
        handle: 0xfeed,
        rcv_nxt: RCV,
        rcv_wnd: WND,
        snd_una: SND,
        snd_nxt: SND.wrapping_add(500),
        snd_wnd: 65535,
        ts_recent: TS_RECENT,
        rcv_wscale: RCV_WSCALE,
        mss: MSS,
        flags: TS,
        local_mac: LOCAL_MAC,
        remote_mac: PEER_MAC,
        ip_id: 0xffff,
        ..Default::default()
    };
    with_cwnd(c, 1 << 20)
}

/// A segment from the peer (timestamp option, TSval 100) at `seq_off` from rcv_nxt.
fn data(seq_off: u32, len: usize) -> Vec<u8> {
    data_from(PEER_PORT, seq_off, len)
}

/// The same from another peer port (another connection).
fn data_from(peer_port: u16, seq_off: u32, len: usize) -> Vec<u8> {
    tcp_frame(tcp_segment(
        peer_port,
        LOCAL_PORT,
        RCV.wrapping_add(seq_off),
        SND,
        TCP_ACK | TCP_PSH,
        65535,
        &tcp_ts_option(100, 1),
        &vec![0x5a; len],
    ))
}

/// A pure ACK from the peer for 100 of our bytes.
fn peer_ack() -> Vec<u8> {
    let opts = tcp_ts_option(100, 1);
    tcp_frame(tcp_segment(PEER_PORT, LOCAL_PORT, RCV, SND + 100, TCP_ACK, 65535, &opts, &[]))
}

/// The generator queue named by an `etran_tcp_ack_queued` bit.
fn queue<'a>(h: &'a Harness<'_>, q: u8) -> &'a libbpf_rs::MapMut<'a> {
    match q {
        IMMEDIATE => &h.objs.tcp.maps.etran_tcp_ack_queue,
        DELAYED => &h.objs.tcp.maps.etran_tcp_dack_queue,
        _ => panic!("no queue {q}"),
    }
}

/// Pops every key of one queue.
fn drain_queue(h: &Harness<'_>, q: u8) -> Vec<tcp_conn_key> {
    let q = queue(h, q);
    std::iter::from_fn(|| q.lookup_and_delete(&[]).unwrap().map(|v| from_bytes(&v))).collect()
}

/// Empties both queues.
fn drain_queues(h: &Harness<'_>) {
    drain_queue(h, IMMEDIATE);
    drain_queue(h, DELAYED);
}

fn push_key(h: &Harness<'_>, q: u8, k: &tcp_conn_key) {
    queue(h, q).update(&[], as_bytes(k), MapFlags::ANY).unwrap();
}

/// Reads the wake ring buffer: the queue kind of each record (one key pushed) since the last
/// call.
struct Wakes {
    ring: libbpf_rs::RingBuffer<'static>,
    got: Arc<Mutex<Vec<u32>>>,
}

impl Wakes {
    fn new(h: &Harness<'_>) -> Wakes {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let mut b = RingBufferBuilder::new();
        b.add(&h.objs.tcp.maps.etran_tcp_gen_wake, move |rec: &[u8]| {
            let w: etran_tcp_gen_wake = from_bytes(rec);
            sink.lock().unwrap().push(w.kind);
            0
        })
        .unwrap();
        Wakes { ring: b.build().unwrap(), got }
    }

    fn take(&self) -> Vec<u32> {
        self.ring.consume().unwrap();
        std::mem::take(&mut *self.got.lock().unwrap())
    }
}

struct Case {
    name: &'static str,
    setup: fn(&mut tcp_conn),
    frames: Vec<Vec<u8>>,
    /// ack_queued afterwards.
    queued: u8,
    /// Keys pushed on the (immediate, delayed) queues.
    pushed: (usize, usize),
    /// Wake records: the kind of queue each key was pushed on.
    wakes: Vec<u32>,
}

#[test]
fn tcp_gen_ingress_queues_due_acks() {
    let mut storage = ObjectStorage::default();
    let h = Harness::new(&mut storage);
    let wakes = Wakes::new(&h);
    let none = |_: &mut tcp_conn| {};
    let (d, i) = (u32::from(DELAYED), u32::from(IMMEDIATE));
    let c = |name, setup, frames, queued, pushed, wakes| Case {
        name,
        setup,
        frames,
        queued,
        pushed,
        wakes,
    };
    let both = DELAYED | IMMEDIATE;
    let full = |n: u32| (0..n).map(|k| data(k * u32::from(MSS), MSS.into())).collect::<Vec<_>>();
    let cases = vec![
        c("a small in-order segment: delayed", none, vec![data(0, 100)], DELAYED, (0, 1), vec![d]),
        c(
            "seven full segments: still delayed, queued once",
            none,
            full(7),
            DELAYED,
            (0, 1),
            vec![d],
        ),
        c(
            "the eighth full segment: due at once, the delayed key stays",
            none,
            full(8),
            both,
            (1, 1),
            vec![d, i],
        ),
        c(
            "seven segments owed, one more: at once",
            |c| {
                c.ack_pending = 7 * u32::from(MSS);
                c.ack_queued = DELAYED;
            },
            vec![data(0, MSS.into())],
            both,
            (1, 0),
            vec![i],
        ),
        c(
            "owed bytes short of the window left: delayed",
            |c| c.rcv_wnd = 500,
            vec![data(0, 249)],
            DELAYED,
            (0, 1),
            vec![d],
        ),
        c(
            "owed bytes reach the window left: at once",
            |c| c.rcv_wnd = 500,
            vec![data(0, 250)],
            IMMEDIATE,
            (1, 0),
            vec![i],
        ),
        c("out of order", none, vec![data(500, 100)], IMMEDIATE, (1, 0), vec![i]),
        c(
            "a gap filled",
            |c| {
                c.ooo[0].start = RCV.wrapping_add(100);
                c.ooo[0].end = RCV.wrapping_add(150);
                c.ooo_n = 1;
            },
            vec![data(0, 100)],
            IMMEDIATE,
            (1, 0),
            vec![i],
        ),
        c(
            "a duplicate (dropped, re-ACKed)",
            none,
            vec![data(200u32.wrapping_neg(), 100)],
            IMMEDIATE,
            (1, 0),
            vec![i],
        ),
        c("a pure ACK: nothing owed", none, vec![peer_ack()], NOT_QUEUED, (0, 0), vec![]),
        c(
            "already queued for at once: nothing more",
            |c| c.ack_queued = IMMEDIATE,
            vec![data(500, 100), data(0, 100)],
            IMMEDIATE,
            (0, 0),
            vec![],
        ),
        c(
            "already queued delayed, then out of order: pushed on the immediate queue too",
            |c| {
                c.ack_queued = DELAYED;
                c.ack_pending = 10;
            },
            vec![data(0, 100), data(500, 100)],
            both,
            (1, 0),
            vec![i],
        ),
    ];
    for case in cases {
        let name = case.name;
        let mut conn = base_conn();
        (case.setup)(&mut conn);
        h.set_conn(&key(), &conn);
        drain_queues(&h);
        wakes.take();
        for f in &case.frames {
            let v = h.run(&h.objs.entrance.progs.etran_entrance, f, LO).verdict;
            assert!(matches!(v, XDP_REDIRECT | XDP_DROP), "{name}: verdict {v}");
        }
        assert_eq!(h.conn(&key()).ack_queued, case.queued, "{name}: ack_queued");
        let keys = (drain_queue(&h, IMMEDIATE), drain_queue(&h, DELAYED));
        assert_eq!((keys.0.len(), keys.1.len()), case.pushed, "{name}: keys queued");
        let all = keys.0.iter().chain(&keys.1);
        assert!(all.map(as_bytes).all(|k| k == as_bytes(&key())), "{name}: the conn's key");
        assert_eq!(wakes.take(), case.wakes, "{name}: wake records");
    }
}

/// CLOCK_MONOTONIC in ms: bpf_ktime_get_ns's clock, in the TSval unit.
fn monotonic_ms() -> u32 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) }, 0);
    (ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000) as u32
}

/// The pure ACK the generator must send for `c`, built field by field.
fn expected_ack(c: &tcp_conn, tsval: u32) -> Vec<u8> {
    expected_sack(c, tsval, &[])
}

/// The same with SACK blocks (sequence numbers) after the options.
fn expected_sack(c: &tcp_conn, tsval: u32, blocks: &[(u32, u32)]) -> Vec<u8> {
    let window = (c.rcv_wnd >> c.rcv_wscale).min(65535) as u16;
    let mut options = if c.flags & TS != 0 { tcp_ts_option(tsval, c.ts_recent) } else { vec![] };
    if !blocks.is_empty() {
        options.extend_from_slice(&[1, 1, 5, 2 + 8 * blocks.len() as u8]);
        for (l, r) in blocks {
            options.extend_from_slice(&l.to_be_bytes());
            options.extend_from_slice(&r.to_be_bytes());
        }
    }
    let seg =
        tcp_segment(LOCAL_PORT, PEER_PORT, c.snd_nxt, c.rcv_nxt, TCP_ACK, window, &options, &[]);
    let seg = with_tcp_checksum(LOCAL_IP, PEER_IP, seg);
    let ip = Ipv4 { tos: 0, id: c.ip_id, src: LOCAL_IP, dst: PEER_IP, ..Ipv4::default() };
    eth_with(PEER_MAC, LOCAL_MAC, ETH_P_IP, &ipv4_with(&ip, &seg))
}

/// One generator run popping queue `q` (the template's first byte names it, as the pump does).
fn gen(h: &Harness<'_>, q: u8) -> RawRun {
    let mut template = TEMPLATE;
    template[0] = q;
    h.run(&h.objs.tcp.progs.etran_tcp_gen, &template, LO)
}

/// A connection owing an ACK, its key alone on queue `q`.
fn queued_conn(h: &Harness<'_>, q: u8, change: impl Fn(&mut tcp_conn)) -> tcp_conn {
    let mut c = base_conn();
    c.ack_pending = 300;
    c.ack_now = 1;
    c.ack_queued = q;
    change(&mut c);
    h.set_conn(&key(), &c);
    drain_queues(h);
    push_key(h, q, &key());
    c
}

#[test]
fn tcp_gen_emits_a_pure_ack() {
    let mut storage = ObjectStorage::default();
    let h = Harness::new(&mut storage);
    type Change = fn(&mut tcp_conn);
    let variants: [(&str, u8, Change); 5] = [
        ("timestamps", IMMEDIATE, |_| {}),
        ("no timestamps", IMMEDIATE, |c| c.flags = 0),
        ("ECN: a pure ACK is not ECN-capable", IMMEDIATE, |c| c.flags = TS | ECN),
        ("delayed, no ack_now", DELAYED, |c| c.ack_now = 0),
        ("window field capped", IMMEDIATE, |c| c.rcv_wnd = 1 << 20),
    ];
    for (name, q, change) in variants {
        let before = queued_conn(&h, q, change);
        let c0 = h.counters();
        let t0 = monotonic_ms();
        let run = gen(&h, q);
        let t1 = monotonic_ms();
        let c1 = h.counters();
        assert_eq!(run.verdict, XDP_REDIRECT, "{name}: verdict");
        assert_eq!(run.ctx.data, 0, "{name}: no metadata");
        let seg = checked_tcp_segment(&run.data);
        let tsval = if before.flags & TS != 0 {
            assert_eq!(seg[20..24], [1, 1, 8, 10], "{name}: timestamp option");
            let v = u32::from_be_bytes(seg[24..28].try_into().unwrap());
            assert!(not_after(t0, v) && not_after(v, t1), "{name}: TSval {v} in {t0}..={t1}");
            v
        } else {
            0
        };
        assert_eq!(run.data, expected_ack(&before, tsval), "{name}: the frame sent");
        let (t0c, p0, d0) = tcp_row(&c0);
        let (t1c, p1, d1) = tcp_row(&c1);
        assert_eq!((t1c - t0c, p1 - p0, d1 - d0), (1, 0, 0), "{name}: counted as sent");

        let after = h.conn(&key());
        let mut want = before;
        want.ack_now = 0;
        want.ack_pending = 0;
        want.ack_queued = NOT_QUEUED;
        want.ip_id = before.ip_id.wrapping_add(1);
        // The edge it advertised is remembered (no reserve here: the whole free room).
        let field = (before.rcv_wnd >> before.rcv_wscale).min(65535);
        want.rcv_adv = before.rcv_nxt.wrapping_add(field << before.rcv_wscale);
        assert_eq!(as_bytes(&after)[4..], as_bytes(&want)[4..], "{name}: conn (lock word aside)");

        // Nothing queued: the batch ends with a drop that counts nothing.
        let run = gen(&h, q);
        assert_eq!(run.verdict, XDP_DROP, "{name}: empty queue");
        assert_eq!(tcp_row(&h.counters()), tcp_row(&c1), "{name}: an empty pop counts nothing");
    }
}

#[test]
fn tcp_gen_writes_sack_blocks() {
    let mut storage = ObjectStorage::default();
    let h = Harness::new(&mut storage);
    let r = |off: u32, len: u32| (RCV.wrapping_add(off), RCV.wrapping_add(off + len));
    let set = |c: &mut tcp_conn, ooo: &[(u32, u32)], dsack: Option<(u32, u32)>| {
        for (slot, &(start, end)) in c.ooo.iter_mut().zip(ooo) {
            (slot.start, slot.end) = (start, end);
        }
        c.ooo_n = ooo.len() as u8;
        if let Some((start, end)) = dsack {
            (c.dsack.start, c.dsack.end) = (start, end);
        }
    };
    type Case = (&'static str, u8, Vec<(u32, u32)>, Option<(u32, u32)>, Vec<(u32, u32)>);
    let cases: Vec<Case> = vec![
        (
            "intervals in their order (most recent first)",
            TS | SACK,
            vec![r(2000, 100), r(1000, 200)],
            None,
            vec![r(2000, 100), r(1000, 200)],
        ),
        (
            "D-SACK first; three blocks next to timestamps",
            TS | SACK,
            vec![r(1000, 200), r(2000, 100), r(3000, 10)],
            Some(r(1020, 50)),
            vec![r(1020, 50), r(1000, 200), r(2000, 100)],
        ),
        (
            "a D-SACK below rcv_nxt alone",
            TS | SACK,
            vec![],
            Some((RCV.wrapping_sub(300), RCV)),
            vec![(RCV.wrapping_sub(300), RCV)],
        ),
        (
            "four blocks without timestamps",
            SACK,
            vec![r(4000, 1), r(3000, 10), r(2000, 100), r(1000, 200)],
            None,
            vec![r(4000, 1), r(3000, 10), r(2000, 100), r(1000, 200)],
        ),
        ("no SACK negotiated: no blocks", TS, vec![r(1000, 200)], None, vec![]),
    ];
    for (name, flags, ooo, dsack, blocks) in cases {
        let before = queued_conn(&h, IMMEDIATE, |c| {
            c.flags = flags;
            set(c, &ooo, dsack);
        });
        let t0 = monotonic_ms();
        let run = gen(&h, IMMEDIATE);
        assert_eq!(run.verdict, XDP_REDIRECT, "{name}: verdict");
        let seg = checked_tcp_segment(&run.data);
        let tsval =
            if flags & TS != 0 { u32::from_be_bytes(seg[24..28].try_into().unwrap()) } else { 0 };
        assert!(flags & TS == 0 || not_after(t0, tsval), "{name}: TSval");
        assert_eq!(run.data, expected_sack(&before, tsval, &blocks), "{name}: the frame sent");
        let after = h.conn(&key());
        assert_eq!(after.dsack.start, after.dsack.end, "{name}: a D-SACK is reported once");
        assert_eq!(after.ooo_n, before.ooo_n, "{name}: the intervals stay");
        assert_eq!((after.ack_now, after.ack_pending), (0, 0), "{name}: settled");
    }
}

#[test]
fn tcp_gen_skips_what_is_not_owed() {
    let mut storage = ObjectStorage::default();
    let h = Harness::new(&mut storage);
    let reason = |h: &Harness<'_>, r| drop_total(&h.counters(), r);

    // A key queued twice is sent once: the second pop finds nothing owed.
    queued_conn(&h, IMMEDIATE, |_| {});
    push_key(&h, IMMEDIATE, &key());
    assert_eq!(gen(&h, IMMEDIATE).verdict, XDP_REDIRECT, "first pop");
    let settled = reason(&h, "tcp_gen_settled");
    assert_eq!(gen(&h, IMMEDIATE).verdict, XDP_DROP, "second pop");
    assert_eq!(reason(&h, "tcp_gen_settled"), settled + 1, "counted as settled");
    assert_eq!(gen(&h, IMMEDIATE).verdict, XDP_DROP, "queue empty");

    // A key in both queues: the immediate pop sends and clears only its own bit; the delayed
    // pop later finds nothing owed.
    queued_conn(&h, IMMEDIATE, |c| c.ack_queued = DELAYED | IMMEDIATE);
    push_key(&h, DELAYED, &key());
    assert_eq!(gen(&h, IMMEDIATE).verdict, XDP_REDIRECT, "immediate pop sends");
    assert_eq!(h.conn(&key()).ack_queued, DELAYED, "still in the delayed queue");
    let settled = reason(&h, "tcp_gen_settled");
    assert_eq!(gen(&h, DELAYED).verdict, XDP_DROP, "delayed pop");
    assert_eq!(reason(&h, "tcp_gen_settled"), settled + 1, "counted as settled");
    assert_eq!(h.conn(&key()).ack_queued, NOT_QUEUED, "in no queue");
    assert_eq!(gen(&h, DELAYED).verdict, XDP_DROP, "delayed queue empty");

    // Data the app sent carried the ACK before the generator ran.
    for q in [IMMEDIATE, DELAYED] {
        queued_conn(&h, q, |c| {
            c.ack_now = 0;
            c.ack_pending = 0;
        });
        let settled = reason(&h, "tcp_gen_settled");
        assert_eq!(gen(&h, q).verdict, XDP_DROP, "queue {q}");
        assert_eq!(reason(&h, "tcp_gen_settled"), settled + 1, "queue {q}");
        assert_eq!(h.conn(&key()).ack_queued, NOT_QUEUED, "queue {q}: unmarked");
    }

    // A connection deleted after queuing is skipped and counted.
    queued_conn(&h, IMMEDIATE, |_| {});
    h.objs.tcp.maps.etran_tcp_conns.delete(as_bytes(&key())).unwrap();
    let gone = reason(&h, "tcp_gen_no_conn");
    assert_eq!(gen(&h, IMMEDIATE).verdict, XDP_DROP);
    assert_eq!(reason(&h, "tcp_gen_no_conn"), gone + 1);

    // No NIC: the ACK stays owed, the mark is cleared so the next segment queues it again.
    let before = queued_conn(&h, IMMEDIATE, |_| {});
    h.objs.tcp.maps.etran_nic.delete(&0u32.to_ne_bytes()).unwrap();
    let no_nic = reason(&h, "tcp_tx_no_nic");
    assert_eq!(gen(&h, IMMEDIATE).verdict, XDP_DROP);
    assert_eq!(reason(&h, "tcp_tx_no_nic"), no_nic + 1);
    let after = h.conn(&key());
    assert_eq!((after.ack_now, after.ack_pending), (before.ack_now, before.ack_pending));
    assert_eq!(after.ack_queued, NOT_QUEUED);
    assert_eq!(after.ip_id, before.ip_id, "nothing sent");
}

/// The pump's live-frames calls, attached to its spare veth and not, in a private namespace:
/// prints the cost per call (run with --nocapture) and checks that the live runs popped and sent.
#[test]
fn tcp_gen_pump_live_frames() {
    let pair = VethPair::new("etran-gencost");
    in_netns(&pair.a, || {
        let mut storage = ObjectStorage::default();
        let h = Harness::new(&mut storage);
        let id = libbpf_rs::Program::id_from_fd(h.objs.entrance.progs.etran_entrance.as_fd());
        let handles = tcp_handles(id.unwrap()).expect("TCP handles");
        for attached in [true, false] {
            let mut pump =
                GenPump::new(&handles, attached.then_some("etgentest")).expect("gen pump");
            assert_eq!(pump.spare_ifindex().is_some(), attached);
            for repeat in [1u32, 8, 64] {
                let calls = if attached || repeat == 1 { 200 } else { 5 };
                let t = Instant::now();
                for _ in 0..calls {
                    pump.run(repeat).unwrap();
                }
                let per_call = t.elapsed() / calls;
                eprintln!("gen pump, attached {attached:5}: repeat {repeat:3}: {per_call:?}/call");
            }
            // Live runs pop keys and update the connection (the frames go to lo, which has no
            // XDP transmit and drops them).
            for q in [IMMEDIATE, DELAYED] {
                let before = queued_conn(&h, q, |_| {});
                let sent = tcp_row(&h.counters()).0;
                pump.pump().unwrap();
                assert!(!pump.queued(), "queue {q} drained");
                let after = h.conn(&key());
                assert_eq!((after.ack_now, after.ack_pending, after.ack_queued), (0, 0, 0));
                assert_eq!(after.ip_id, before.ip_id.wrapping_add(1));
                assert_eq!(tcp_row(&h.counters()).0, sent + 1, "queue {q}: counted as sent");
            }
        }
        assert!(etran::sys::ifindex("etgentest").is_err(), "spare veth removed");
    });
}

/// The pump flushes the ACKs due at once as soon as ingress wakes it and leaves the delayed
/// ones queued and owed until its deadline.
#[test]
fn tcp_gen_pump_immediate_flush_leaves_delayed_acks() {
    const OTHER_PORT: u16 = PEER_PORT + 1;
    let pair = VethPair::new("etran-genflush");
    in_netns(&pair.a, || {
        let mut storage = ObjectStorage::default();
        let h = Harness::new(&mut storage);
        let id = libbpf_rs::Program::id_from_fd(h.objs.entrance.progs.etran_entrance.as_fd());
        let handles = tcp_handles(id.unwrap()).expect("TCP handles");
        let mut pump = GenPump::new(&handles, Some("etgenflush")).expect("gen pump");
        let other = tcp_conn_key { remote_port: OTHER_PORT.to_be(), ..key() };
        h.set_conn(&key(), &base_conn());
        h.set_conn(&other, &base_conn());
        drain_queues(&h);

        // A small segment on one connection (delayed), one out of order on the other (at once).
        let entrance = &h.objs.entrance.progs.etran_entrance;
        assert_eq!(h.run(entrance, &data(0, 100), LO).verdict, XDP_REDIRECT);
        assert_eq!(h.run(entrance, &data_from(OTHER_PORT, 500, 100), LO).verdict, XDP_REDIRECT);
        let sent = tcp_row(&h.counters()).0;
        let t0 = Instant::now();
        pump.on_readable(t0).unwrap();
        assert_eq!(tcp_row(&h.counters()).0, sent + 1, "the ACK due at once sent");
        let o = h.conn(&other);
        assert_eq!((o.ack_now, o.ack_queued), (0, NOT_QUEUED), "the immediate ACK settled");
        let d = h.conn(&key());
        assert_eq!((d.ack_pending, d.ack_queued), (100, DELAYED), "the delayed ACK still owed");
        assert!(matches!(
            queue(&h, DELAYED).lookup(&[], MapFlags::ANY),
            Ok(Some(k)) if k == as_bytes(&key())
        ));
        let deadline = pump.deadline().expect("the delayed ACK arms the deadline");
        assert_eq!(deadline, t0 + etran::backend::compat::pump::DELAYED_ACK);

        // Before the deadline nothing happens; at it the delayed ACK goes.
        pump.on_deadline(t0).unwrap();
        assert_eq!(h.conn(&key()).ack_queued, DELAYED, "not before the deadline");
        pump.on_deadline(deadline).unwrap();
        assert_eq!(tcp_row(&h.counters()).0, sent + 2, "the delayed ACK sent");
        let d = h.conn(&key());
        assert_eq!((d.ack_pending, d.ack_queued), (0, NOT_QUEUED));
        assert_eq!(pump.deadline(), None);
        assert!(!pump.queued(), "both queues empty");
    });
}

/// End to end, no app and no daemon: `etran up` on a veth "NIC", a connection inserted, a pump
/// on its datapath; segments the peer injects (AF_PACKET) make the kernel owe ACKs, and the pump
/// puts them on the wire: at once for eight full segments (GEN_STRETCH_SEGMENTS), at the
/// delayed-ACK deadline for one small segment.
#[test]
fn tcp_gen_pump_acks_on_the_wire() {
    const ME: [u8; 4] = [10, 77, 0, 1];
    const PEER: [u8; 4] = [10, 77, 0, 2];
    const MY_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 1];
    const PEER_MAC_: [u8; 6] = [0x02, 0x77, 0, 0, 0, 2];
    const SMALL_MSS: u16 = 100;
    let pair = VethPair::new("etran-gen");
    let (a, b) = (&pair.a, &pair.b);
    let etran = env!("CARGO_BIN_EXE_etran");
    sh(&format!(
        "ip -n {a} link set va address 02:77:00:00:00:01 && \
         ip -n {b} link set vb address 02:77:00:00:00:02 && \
         ip netns exec {a} {etran} up va && ip netns exec {b} {etran} up vb"
    ));
    // vb carries the etran datapath too only so that frames redirected into va reach it (the
    // veth rule); it passes them, since it knows no connection.
    let raw = in_netns(b, || RawSocket::open("vb"));
    let key = tcp_conn_key {
        local_ip: u32::from_ne_bytes(ME),
        remote_ip: u32::from_ne_bytes(PEER),
        local_port: 40000u16.to_be(),
        remote_port: 5555u16.to_be(),
    };
    let conn = tcp_conn { remote_mac: PEER_MAC_, local_mac: MY_MAC, mss: SMALL_MSS, ..base_conn() };
    let segment = |seq_off: u32, len: usize| {
        let opts = tcp_ts_option(100, 1);
        let seq = RCV.wrapping_add(seq_off);
        let tcp = tcp_segment(5555, 40000, seq, SND, TCP_ACK, 65535, &opts, &vec![7; len]);
        let ip = Ipv4 { src: PEER, dst: ME, ..Ipv4::default() };
        eth_with(MY_MAC, PEER_MAC_, ETH_P_IP, &ipv4_with(&ip, &with_tcp_checksum(PEER, ME, tcp)))
    };
    // The ACK numbers that reach the peer within `ms`.
    let acks_seen = |ms: u64| {
        let deadline = Instant::now() + Duration::from_millis(ms);
        let mut acks = Vec::new();
        while let Some(f) =
            raw.recv(deadline.saturating_duration_since(Instant::now()).as_millis() as i32)
        {
            if f.len() >= 54 && f[12..14] == [8, 0] && f[23] == IPPROTO_TCP && f[26..30] == ME {
                let seg = checked_tcp_segment(&f);
                if seg[13] == TCP_ACK && f.len() == 14 + 20 + 32 {
                    acks.push(u32::from_be_bytes(seg[8..12].try_into().unwrap()));
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        acks
    };
    in_netns(a, || {
        let dp = loader::find("va").unwrap().expect("etran is up on va");
        let tcp = tcp_handles(dp.summary.prog_id).expect("TCP handles");
        // Ingress hands payload to the owner's port: lo stands in for it (nobody reads it).
        let (slot, lo) = (0u32.to_ne_bytes(), LO.to_ne_bytes());
        tcp.app_ports.update(&slot, &lo, MapFlags::ANY).unwrap();
        tcp.port_ifindex.update(&slot, &lo, MapFlags::ANY).unwrap();
        tcp.conns.update(as_bytes(&key), as_bytes(&conn), MapFlags::ANY).unwrap();
        let mut pump = GenPump::new(&tcp, Some("etgen")).expect("gen pump");
        let wait = |pump: &mut GenPump| {
            let mut pfd = libc::pollfd { fd: pump.fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: polling one valid descriptor.
            assert_eq!(unsafe { libc::poll(&mut pfd, 1, 2000) }, 1, "the pump is woken");
            pump.on_readable(Instant::now()).unwrap();
        };

        // Eight full segments in one: the ACK goes out at once.
        raw.send(&segment(0, 8 * usize::from(SMALL_MSS)));
        wait(&mut pump);
        assert_eq!(pump.deadline(), None, "nothing left for later");
        assert_eq!(acks_seen(300), vec![RCV.wrapping_add(800)], "the immediate ACK");

        // One small segment: delayed until the pump's deadline.
        raw.send(&segment(800, 10));
        wait(&mut pump);
        let deadline = pump.deadline().expect("a delayed ACK arms the deadline");
        assert!(acks_seen(0).is_empty(), "not sent before the deadline");
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        pump.on_deadline(Instant::now()).unwrap();
        assert_eq!(acks_seen(300), vec![RCV.wrapping_add(810)], "the delayed ACK");
        let c: tcp_conn =
            from_bytes(&tcp.conns.lookup(as_bytes(&key), MapFlags::ANY).unwrap().unwrap());
        assert_eq!((c.ack_pending, c.ack_now, c.ack_queued), (0, 0, NOT_QUEUED));
    });
    // Dropping `pair` takes both datapaths down and removes the namespaces.
}

/// Where segment `frame` (as the NIC would send it) puts the right edge of our window:
/// ack + (window << rcv_wscale).
fn advertised_edge(frame: &[u8], rcv_wscale: u8) -> u32 {
    let seg = checked_tcp_segment(frame);
    let ack = u32::from_be_bytes(seg[8..12].try_into().unwrap());
    let window = u32::from(u16::from_be_bytes([seg[14], seg[15]]));
    ack.wrapping_add(window << rcv_wscale)
}

/// An app's DATA frame (TX header and payload) at the connection's tx_pos, with a consumption
/// report.
fn app_data(c: &tcp_conn, consumed: u32, len: usize) -> Vec<u8> {
    use etran::bpf::tcp::types::etran_tcp_tx_hdr;
    use etran::transport::tcp::stream::{write_hdr, INTENT_DATA, TX_HDR_LEN};
    let mut f = vec![0x33u8; TX_HDR_LEN + len];
    let hdr = etran_tcp_tx_hdr {
        key: key(),
        tx_pos: c.tx_pos,
        consumed,
        len: len as u16,
        intent: INTENT_DATA,
        reserved: 0,
    };
    write_hdr(&mut f, &hdr);
    f
}

/// RFC 9293 3.8.6.2.1: the right edge we advertise never moves back, whoever writes the
/// segment. Data arriving in pieces that are not multiples of the window scale (128) would make
/// a rounded-down window field move it back and forth; pure ACKs from the generator and data
/// segments from egress, interleaved, consumption reports now and then, must all advertise an
/// edge at least the highest one before, backed by the app's buffer; ingress takes data up to
/// the last edge.
#[test]
fn tcp_window_edge_never_moves_back() {
    let mut storage = ObjectStorage::default();
    let h = Harness::new(&mut storage);
    let entrance = &h.objs.entrance.progs.etran_entrance;
    let egress = &h.objs.tcp.progs.etran_tcp_egress;
    let (buf, reserve, shift) = (1u32 << 20, 1u32 << 16, 7u8);
    let mut c = base_conn();
    c.rcv_wnd = buf;
    c.rcv_wscale = shift;
    c.rcv_reserve = reserve;
    c.rcv_adv = RCV.wrapping_add((buf - reserve) >> shift << shift);
    c.snd_wnd = 1 << 20;
    c.mss = 1448;
    h.set_conn(&key(), &c);
    drain_queues(&h);

    let mut last = c.rcv_adv;
    let mut off = 0u32; // received bytes past RCV
    for i in 0..300u32 {
        let len = 1000 + (i * 37) % 448;
        assert_eq!(h.run(entrance, &data(off, len as usize), LO).verdict, XDP_REDIRECT, "{i}");
        off += len;
        let run = if i % 3 == 0 {
            // The app answers: its data segment carries the window (and a report, sometimes).
            let consumed = if i % 30 == 0 { 20_000 + i } else { 0 };
            let run = h.run(egress, &app_data(&h.conn(&key()), consumed, 10), LO);
            assert_eq!(run.verdict, XDP_REDIRECT, "{i}: egress");
            run
        } else {
            drain_queues(&h);
            push_key(&h, IMMEDIATE, &key());
            let run = gen(&h, IMMEDIATE);
            assert_eq!(run.verdict, XDP_REDIRECT, "{i}: gen");
            run
        };
        let edge = advertised_edge(&run.data, shift);
        assert!(not_after(last, edge), "{i}: the edge moved back from {last} to {edge}");
        let now = h.conn(&key());
        assert!(
            not_after(edge, now.rcv_nxt.wrapping_add(now.rcv_wnd)),
            "{i}: edge {edge} past the buffer (rcv_nxt {} + room {})",
            now.rcv_nxt,
            now.rcv_wnd
        );
        assert_eq!((now.rcv_adv, now.rcv_shrinks), (edge, 0), "{i}: remembered, no shrink");
        last = edge;
    }
    // The peer may fill the window up to the last edge: every byte is taken.
    let now = h.conn(&key());
    let room = last.wrapping_sub(now.rcv_nxt);
    let mut left = room;
    while left > 0 {
        let len = left.min(1448);
        let run = h.run(entrance, &data(off, len as usize), LO);
        assert_eq!(run.verdict, XDP_REDIRECT);
        let meta: etran::bpf::tcp::types::etran_tcp_rx_meta = from_bytes(&run.data);
        assert_eq!(u32::from(meta.payload_len), len, "taken up to the advertised edge");
        off += len;
        left -= len;
    }
    assert_eq!(h.conn(&key()).rcv_nxt, last);
    drain_queues(&h);

    // Once round-ups used the whole reserve up, the edge falls back to the buffer, counted.
    let mut c = h.conn(&key());
    c.rcv_wnd = 1000;
    c.rcv_adv = c.rcv_nxt.wrapping_add(1100);
    c.ack_now = 1;
    h.set_conn(&key(), &c);
    push_key(&h, IMMEDIATE, &key());
    let edge = advertised_edge(&gen(&h, IMMEDIATE).data, shift);
    assert_eq!(edge, c.rcv_nxt.wrapping_add(1000 >> shift << shift));
    let now = h.conn(&key());
    assert_eq!((now.rcv_adv, now.rcv_shrinks), (edge, 1));
}

/// After the peer's FIN a segment that would only announce the window is not sent (a closed
/// Linux peer answers it with RST); the consumption report it carries still counts, and one
/// that is also an owed ACK goes out.
#[test]
fn tcp_window_update_after_the_peer_fin_is_not_sent() {
    use etran::bpf::tcp::types::{etran_tcp_tx_hdr, tcp_conn_fin};
    use etran::transport::tcp::stream::{write_hdr, INTENT_WINDOW_UPDATE, TX_HDR_LEN};
    let mut storage = ObjectStorage::default();
    let h = Harness::new(&mut storage);
    let egress = &h.objs.tcp.progs.etran_tcp_egress;
    let update = |consumed: u32| {
        let mut f = vec![0u8; TX_HDR_LEN];
        let c = h.conn(&key());
        let hdr = etran_tcp_tx_hdr {
            key: key(),
            tx_pos: c.tx_pos,
            consumed,
            len: 0,
            intent: INTENT_WINDOW_UPDATE,
            reserved: 0,
        };
        write_hdr(&mut f, &hdr);
        h.run(egress, &f, LO)
    };
    let mut c = base_conn();
    c.rcv_wnd = 1000;
    h.set_conn(&key(), &c);
    assert_eq!(update(100).verdict, XDP_REDIRECT, "before the FIN: sent");
    c = h.conn(&key());
    c.fin = tcp_conn_fin::TCP_CONN_FIN_RCVD.0 as u8;
    h.set_conn(&key(), &c);
    let before = h.counters();
    assert_eq!(update(200).verdict, XDP_DROP, "after the FIN: not sent");
    assert_eq!(
        drop_total(&h.counters(), "tcp_tx_wnd_after_fin")
            - drop_total(&before, "tcp_tx_wnd_after_fin"),
        1
    );
    assert_eq!(h.conn(&key()).rcv_wnd, 1300, "the reports count");
    c = h.conn(&key());
    c.ack_now = 1;
    h.set_conn(&key(), &c);
    assert_eq!(update(0).verdict, XDP_REDIRECT, "an owed ACK goes out");
}
