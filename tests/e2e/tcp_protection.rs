//! Protection against a hostile app, end to end (the reason eTran keeps the transport in the
//! kernel): on one host (`etran up va` and a daemon in namespace -a), an honest app streams to a
//! Linux peer (-b) while a hostile app (tests/common/hostile.rs), registered like any app and
//! with a connection of its own, writes thousands of forged frames into its TX ring: the honest
//! connection's 4-tuple at its own position, unknown 4-tuples, bogus intents, lying and
//! oversize lengths, raw RST/SYN segments, random bytes. Checked: every frame that reaches the
//! wire (captured on the peer's side) belongs to one of the two connections and lies within that
//! connection's state, with correct checksums, and while the hostile app writes, only its own
//! connection's frames appear; the honest connection's state is byte for byte what it was; every
//! forged frame is dropped and counted by reason; the honest stream arrives intact. The pair
//! runs at the largest MTU, so that the longest frames reach egress. Needs root.
use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read, Write},
    net::{SocketAddrV4, TcpListener},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use common::{
    daemon::{register, DaemonPair},
    fixture::Rng,
    hostile::{Forgery, Hostile, Victim},
    netns::{in_netns, RawSocket},
    tcp::{add_neighbour_of_b, as_bytes, from_bytes, not_after, pattern, wait_for},
};
use etran::{
    app::App,
    bpf::tcp::types::{tcp_conn, tcp_conn_key},
    transport::tcp::segment::{Segment, RST},
};
use libbpf_rs::{MapCore, MapFlags};

const HONEST_PORT: u16 = 7501;
const HOSTILE_PORT: u16 = 7502;
/// Bytes of the honest stream, sent half before and half after the attack.
const HALF: usize = 256 << 10;
const FORGED_PER_KIND: usize = 1000;
/// Valid frames of the hostile app's own connection (ACKs with forged consumption reports).
const OWN_FRAMES: usize = 500;

/// The raw bytes of connection `key` in etran_tcp_conns of `va` in namespace `ns`.
fn conn_bytes(ns: &str, key: &tcp_conn_key) -> Vec<u8> {
    in_netns(ns, || {
        let dp = etran::loader::find("va").unwrap().expect("etran is up on va");
        let tcp = etran::transport::tcp::tcp_handles(dp.summary.prog_id).unwrap();
        tcp.conns.lookup(as_bytes(key), MapFlags::ANY).unwrap().expect("the connection")
    })
}

/// etran's drops on `va` in namespace `ns`, by reason.
fn drops(ns: &str) -> BTreeMap<String, u64> {
    in_netns(ns, || {
        let dp = etran::loader::find("va").unwrap().expect("etran is up on va");
        dp.counters().unwrap().drops.into_iter().map(|d| (d.reason, d.count.packets)).collect()
    })
}

/// A TCP frame seen on the wire from the etran host.
#[derive(Debug, Clone)]
struct Seen {
    /// 0 before the attack, 1 during it, 2 after.
    phase: u8,
    seg: Segment,
    checksums_ok: bool,
}

fn key_of(seg: &Segment) -> tcp_conn_key {
    tcp_conn_key {
        local_ip: u32::from_ne_bytes(seg.src.ip().octets()),
        remote_ip: u32::from_ne_bytes(seg.dst.ip().octets()),
        local_port: seg.src.port().to_be(),
        remote_port: seg.dst.port().to_be(),
    }
}

#[test]
fn a_hostile_app_forges_nothing_onto_the_wire() {
    let Some(_root) = common::root::alone() else { return };
    let mtu = etran::loader::kernel::veth_xdp_max_mtu().unwrap();
    let DaemonPair { net, daemon } = DaemonPair::at_mtu("hostile", mtu);
    let (a, b) = (net.a.clone(), net.b.clone());
    add_neighbour_of_b(&net);
    let peer = |port| SocketAddrV4::new([10, 77, 0, 2].into(), port);
    let (honest_listener, hostile_listener) = in_netns(&b, || {
        (
            TcpListener::bind(peer(HONEST_PORT)).unwrap(),
            TcpListener::bind(peer(HOSTILE_PORT)).unwrap(),
        )
    });

    let mut app = register(&daemon.sock);
    let id = app.connect_blocking(peer(HONEST_PORT)).expect("the honest app connects");
    let (mut honest_peer, _) = honest_listener.accept().unwrap();
    let honest = app.stream(id).unwrap().key();
    let mss = usize::from(app.stream(id).unwrap().mss());
    // The port's veths carry the RX metadata's bytes beyond the port's MTU.
    use etran::backend::compat::port::{port_mtu, RX_META_LEN};
    let veth_mtu = port_mtu(mtu).unwrap() + RX_META_LEN;
    let mut evil = Hostile::connect(&daemon.sock, veth_mtu, peer(HOSTILE_PORT));
    let (_hostile_peer, _) = hostile_listener.accept().unwrap();
    let hostile = evil.key();
    let start: Vec<tcp_conn> =
        [&honest, &hostile].iter().map(|k| from_bytes(&conn_bytes(&a, k))).collect();

    let phase = AtomicU8::new(0);
    let stop = AtomicBool::new(false);
    let seen: Mutex<Vec<Seen>> = Mutex::default();
    let linux_got = AtomicU64::new(0);
    let raw = in_netns(&b, || RawSocket::open("vb"));
    let mut rng = Rng(0x6057_11e5);
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut forged, mut at_egress) = (0u64, 0u64);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let Some(f) = raw.recv(20) else { continue };
                // Frames from the etran host (vb also sees its own).
                if f.len() < 34 || f[12..14] != [8, 0] || f[26..30] != [10, 77, 0, 1] {
                    continue;
                }
                let seg = Segment::parse(&f).expect("a TCP segment from the etran host");
                let checksums_ok = Segment::checksums_ok(&f);
                seen.lock().unwrap().push(Seen {
                    phase: phase.load(Ordering::Relaxed),
                    seg,
                    checksums_ok,
                });
            }
        });
        // Ends the capture however the test ends (a panic included).
        let _stop = common::StopOnDrop(&stop);
        let linux = s.spawn(|| {
            honest_peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let (mut got, mut buf) = (Vec::new(), vec![0u8; 1 << 16]);
            while got.len() < 2 * HALF {
                let n = honest_peer.read(&mut buf).expect("the honest stream");
                assert!(n > 0, "the honest stream ended after {} bytes", got.len());
                got.extend_from_slice(&buf[..n]);
                linux_got.store(got.len() as u64, Ordering::Relaxed);
            }
            assert!(got == pattern(5, 2 * HALF), "the honest stream arrives intact");
            honest_peer.write_all(&pattern(9, 4096)).unwrap();
        });

        // The honest app's first half, then quiet: everything sent and acknowledged.
        let data = pattern(5, 2 * HALF);
        let mut sent = 0;
        let send_until = |app: &mut App, sent: &mut usize, upto: usize| {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                app.poll().unwrap();
                if *sent < upto {
                    match app.send(id, &data[*sent..upto]) {
                        Ok(n) => *sent += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => panic!("honest send: {e}"),
                    }
                }
                let st = app.stream(id).unwrap();
                if *sent == upto && st.unsent() == 0 && st.in_flight() == 0 {
                    return;
                }
                assert!(Instant::now() < deadline, "the honest app is stuck at {sent}");
            }
        };
        send_until(&mut app, &mut sent, HALF);
        wait_for("Linux to read the first half", 5, || {
            linux_got.load(Ordering::Relaxed) == HALF as u64
        });
        // Settled: unchanged over 50 ms (the peer sent its last window update).
        let mut before = conn_bytes(&a, &honest);
        wait_for("the honest connection to settle", 5, || {
            std::thread::sleep(Duration::from_millis(50));
            let now = conn_bytes(&a, &honest);
            let settled = now == before;
            before = now;
            settled
        });
        let honest_state: tcp_conn = from_bytes(&before);
        let victim = Victim {
            key: honest,
            tx_pos: honest_state.tx_pos,
            local_mac: honest_state.local_mac,
            remote_mac: honest_state.remote_mac,
        };

        // The attack.
        let drops_before = drops(&a);
        phase.store(1, Ordering::Relaxed);
        let mut kinds: Vec<Option<Forgery>> = Forgery::ALL
            .iter()
            .flat_map(|&f| std::iter::repeat_n(Some(f), FORGED_PER_KIND))
            .chain(std::iter::repeat_n(None, OWN_FRAMES))
            .collect();
        for i in (1..kinds.len()).rev() {
            kinds.swap(i, rng.below(i + 1));
        }
        for (i, kind) in kinds.iter().enumerate() {
            let frame = match kind {
                Some(f) => {
                    forged += 1;
                    at_egress += u64::from(f.reaches_egress());
                    if let Some(r) = f.reason() {
                        *expected.entry(r).or_default() += 1;
                    }
                    evil.forge(*f, &victim, &mut rng)
                }
                None => evil.own_control(&mut rng),
            };
            evil.send_raw(&frame);
            if i % 32 == 31 {
                evil.flush();
            }
        }
        evil.flush();
        let tx_drops = |d: &BTreeMap<String, u64>| -> u64 {
            d.iter().filter(|(r, _)| r.starts_with("tcp_tx_")).map(|(_, n)| n).sum()
        };
        let dropped_before = tx_drops(&drops_before);
        evil.drain();
        std::thread::sleep(Duration::from_millis(100)); // frames still on their way to vb
        phase.store(2, Ordering::Relaxed);
        let drops_after = drops(&a);
        let delta: BTreeMap<&str, u64> = drops_after
            .iter()
            .map(|(r, n)| (r.as_str(), n - drops_before[r]))
            .filter(|(_, n)| *n > 0)
            .collect();
        let dropped = tx_drops(&drops_after) - dropped_before;
        assert!(
            dropped >= at_egress && dropped <= forged,
            "every forged frame egress sees is dropped, the valid ones are not: {dropped} drops \
             {delta:?}, {forged} forged ({at_egress} surely reaching egress) by reason \
             {expected:?}"
        );
        for (reason, n) in &expected {
            let got = drops_after[*reason] - drops_before[*reason];
            assert!(got >= *n, "{reason}: {got} drops, {n} forged frames must meet it");
        }
        assert_eq!(conn_bytes(&a, &honest), before, "the honest connection is untouched");

        // The honest app goes on: its stream arrives intact, and it still receives.
        send_until(&mut app, &mut sent, 2 * HALF);
        linux.join().unwrap();
        let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < 4096 {
            assert!(Instant::now() < deadline, "the honest app receives nothing");
            app.poll().unwrap();
            match app.recv(id, &mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("honest recv: {e}"),
            }
        }
        assert_eq!(got, pattern(9, 4096));
        std::thread::sleep(Duration::from_millis(50));
    });

    // What reached the wire: the two connections' own segments, within their state.
    let end: Vec<tcp_conn> =
        [&honest, &hostile].iter().map(|k| from_bytes(&conn_bytes(&a, k))).collect();
    let seen = seen.into_inner().unwrap();
    let mut per_phase = [[0usize; 2]; 3];
    for s in &seen {
        let k = key_of(&s.seg);
        let which = [honest, hostile]
            .iter()
            .position(|c| as_bytes(c) == as_bytes(&k))
            .unwrap_or_else(|| panic!("a segment of no connection on the wire: {s:?}"));
        let (c0, c1) = (&start[which], &end[which]);
        let seq_end = s.seg.seq.wrapping_add(s.seg.payload.len() as u32);
        // A packet longer than the MSS is the peer's GRO merging segments that arrived together
        // (a streaming app's port batches its frames): the tap sees it after GRO, with the first
        // segment's checksum; the kernel verified each segment's before it merged them.
        assert!(s.checksums_ok || s.seg.payload.len() > mss, "checksums: {s:?}");
        assert_eq!(s.seg.flags & RST, 0, "no RST: {s:?}");
        assert!(
            not_after(c0.snd_nxt, s.seg.seq) && not_after(seq_end, c1.snd_nxt),
            "sequence numbers within what the connection sent: {s:?}"
        );
        assert!(
            not_after(c0.rcv_nxt, s.seg.ack) && not_after(s.seg.ack, c1.rcv_nxt),
            "ACK within what the connection received: {s:?}"
        );
        per_phase[usize::from(s.phase)][which] += 1;
    }
    eprintln!(
        "{forged} forged frames ({at_egress} surely reaching egress), {OWN_FRAMES} valid ones of \
         the hostile connection; on the wire (honest, hostile) before/during/after the attack: \
         {per_phase:?}"
    );
    assert_eq!(per_phase[1][0], 0, "nothing of the honest connection during the attack");
    assert_eq!(per_phase[1][1], OWN_FRAMES, "the hostile app's valid frames went out");
    assert!(per_phase[0][0] > 0 && per_phase[2][0] > 0, "the honest stream was seen");
    drop(evil);
    drop(app);
    drop(daemon);
    drop(net);
}
