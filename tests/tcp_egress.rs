//! Table-driven BPF_PROG_TEST_RUN fixtures for the TCP egress program (compat backend: XDP on
//! the kernel side of an app's port): TX frame in → verdict, the exact frame sent (compared with
//! one built here, checksums computed independently), connection state, counters. Plus a
//! mutation fuzzer over TX frames. Needs root (CAP_BPF).
mod common;

use std::mem::size_of;

use common::{
    fixture::{drop_total, fuzz_seed, total_frames, Rng},
    packet::*,
    tcp::*,
};
use etran::{
    bpf::tcp::types::{
        etran_tcp_limit, etran_tcp_tx_hdr, etran_tcp_tx_intent, tcp_conn, tcp_conn_fin,
        tcp_conn_flag, tcp_conn_key,
    },
    loader::ObjectStorage,
};
use libbpf_rs::{MapCore, MapFlags};

/// Both sequence spaces and the send stream start just short of the 2^32 wrap.
const RCV: u32 = 0xffff_ff00;
const SND: u32 = 0xffff_fc00;
const OUTSTANDING: u32 = 2000;
const TX_POS: u32 = 0xffff_fff0;
const WND: u32 = 10_000;
const RCV_WSCALE: u8 = 2;
const PEER_WND: u32 = 8000;
/// The largest payload a TX frame may carry; the fixture connection's MSS.
const MAX: u16 = etran_tcp_limit::ETRAN_TCP_MAX_PAYLOAD.0 as u16;
const MSS: u16 = MAX;
const TS_RECENT: u32 = 7;

const DATA: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_DATA.0 as u8;
const ACK: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_ACK.0 as u8;
const WINDOW_UPDATE: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_WINDOW_UPDATE.0 as u8;
const RETRANSMIT: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_RETRANSMIT.0 as u8;
const FIN: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_FIN.0 as u8;
const ACK_DUE: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_ACK_DUE.0 as u8;
const FIN_SENT: u8 = tcp_conn_fin::TCP_CONN_FIN_SENT.0 as u8;
const FIN_RCVD: u8 = tcp_conn_fin::TCP_CONN_FIN_RCVD.0 as u8;
const TS: u8 = tcp_conn_flag::TCP_CONN_TIMESTAMPS.0 as u8;
const ECN: u8 = tcp_conn_flag::TCP_CONN_ECN.0 as u8;

/// App port slots besides 0 (lo): 1 is another app's port, 2 is empty.
const OTHER_PORT: u32 = 1;
const EMPTY_PORT: u32 = 2;

/// The connection every fixture starts from: 2000 bytes in flight of an 8000-byte peer window
/// (the congestion window is larger), 10000 bytes of receive window, an ACK owed.
fn base_conn() -> tcp_conn {
    let c = tcp_conn {
        owner_port: 0,
        handle: 0xfeed,
        rcv_nxt: RCV,
        rcv_wnd: WND,
        snd_una: SND,
        snd_nxt: SND.wrapping_add(OUTSTANDING),
        snd_wnd: PEER_WND,
        ts_recent: TS_RECENT,
        tx_pos: TX_POS,
        ack_pending: 300,
        ack_now: 1,
        rcv_wscale: RCV_WSCALE,
        mss: MSS,
        flags: TS,
        local_mac: LOCAL_MAC,
        remote_mac: PEER_MAC,
        ip_id: 0xfffe,
        ..Default::default()
    };
    with_cwnd(c, 1 << 20)
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// A TX frame: the header (laid out by the C definition) and `len` payload bytes.
fn tx_frame(h: &etran_tcp_tx_hdr) -> Vec<u8> {
    let mut f = as_bytes(h).to_vec();
    f.extend_from_slice(&payload(h.len.into()));
    f
}

fn hdr(intent: u8, tx_pos: u32, len: u16, consumed: u32) -> etran_tcp_tx_hdr {
    etran_tcp_tx_hdr { key: key(), tx_pos, consumed, len, intent, reserved: 0 }
}

fn data(pos_off: u32, len: u16) -> Vec<u8> {
    tx_frame(&hdr(DATA, TX_POS.wrapping_add(pos_off), len, 0))
}

/// A RETRANSMIT of `len` bytes starting `back` bytes before the fixture's tx_pos.
fn retx(back: u32, len: u16) -> Vec<u8> {
    tx_frame(&hdr(RETRANSMIT, TX_POS.wrapping_sub(back), len, 0))
}

/// A FIN frame: the end of the app's stream at `tx_pos`.
fn fin(tx_pos: u32) -> Vec<u8> {
    tx_frame(&hdr(FIN, tx_pos, 0, 0))
}

/// Our FIN was sent (at snd_nxt - 1) and is not acknowledged.
fn fin_in_flight(c: &tcp_conn) -> bool {
    c.fin & FIN_SENT != 0 && c.snd_una != c.snd_nxt
}

/// The fixture connection after its FIN went out behind the bytes in flight.
fn fin_sent(c: &mut tcp_conn) {
    c.fin = FIN_SENT;
    c.snd_nxt = c.snd_nxt.wrapping_add(1);
}

/// The sequence number of the payload at stream position `pos` on connection `c`: the bytes in
/// flight [snd_una, snd_nxt), less a FIN, sit at positions ending at tx_pos.
fn seq_of(c: &tcp_conn, pos: u32) -> u32 {
    let flight = c.snd_nxt.wrapping_sub(c.snd_una) - u32::from(fin_in_flight(c));
    c.snd_una.wrapping_add(pos.wrapping_sub(c.tx_pos.wrapping_sub(flight)))
}

/// The fields egress may change, for comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
struct State {
    rcv_nxt: u32,
    rcv_wnd: u32,
    snd_una: u32,
    snd_nxt: u32,
    snd_wnd: u32,
    tx_pos: u32,
    ack_pending: u32,
    ack_now: u8,
    ip_id: u16,
    fin: u8,
}

impl From<&tcp_conn> for State {
    fn from(c: &tcp_conn) -> State {
        State {
            rcv_nxt: c.rcv_nxt,
            rcv_wnd: c.rcv_wnd,
            snd_una: c.snd_una,
            snd_nxt: c.snd_nxt,
            snd_wnd: c.snd_wnd,
            tx_pos: c.tx_pos,
            ack_pending: c.ack_pending,
            ack_now: c.ack_now,
            ip_id: c.ip_id,
            fin: c.fin,
        }
    }
}

impl State {
    /// A segment of `len` payload bytes went out, carrying the ACK.
    fn sent(&mut self, len: u32) {
        self.snd_nxt = self.snd_nxt.wrapping_add(len);
        self.tx_pos = self.tx_pos.wrapping_add(len);
        self.ack_pending = 0;
        self.ack_now = 0;
        self.ip_id = self.ip_id.wrapping_add(1);
    }

    /// Our first FIN went out: one sequence number, no stream byte.
    fn fin_sent(&mut self) {
        self.sent(0);
        self.snd_nxt = self.snd_nxt.wrapping_add(1);
        self.fin = FIN_SENT;
    }
}

#[derive(Clone, Copy, Debug)]
enum Verdict {
    Drop(&'static str),
    Send,
    /// Refused, but sent without its payload as the window update its report made due.
    SendBare,
}

/// A receive window closed to the peer (everything advertised arrived) with 15000 bytes of
/// advertisable buffer: a report of 5000 consumed bytes makes a window update due.
fn closed_window(c: &mut tcp_conn) {
    c.rcv_reserve = 1000;
    c.rcv_wnd = 1000;
    c.rcv_adv = RCV;
}

struct Fixture {
    name: &'static str,
    /// Changes to `base_conn()` before the frame.
    setup: fn(&mut tcp_conn),
    frame: Vec<u8>,
    verdict: Verdict,
    /// Changes the frame makes to the connection's state.
    effect: fn(&mut State),
}

fn fixtures() -> Vec<Fixture> {
    let none = |_: &mut tcp_conn| {};
    let same = |_: &mut State| {};
    let f = |name, setup, frame, verdict, effect| Fixture { name, setup, frame, verdict, effect };
    let mut unknown = hdr(DATA, TX_POS, 10, 0);
    unknown.key.local_port = 81u16.to_be();
    let mut longer = data(0, 10);
    longer.push(0);
    let mut shorter = data(0, 10);
    shorter.pop();
    let reserved = tx_frame(&etran_tcp_tx_hdr { reserved: 1, ..hdr(ACK, 0, 0, 0) });
    let over_max = tx_frame(&hdr(DATA, TX_POS, MAX + 1, 0));
    vec![
        f("data", none, data(0, 100), Verdict::Send, |s| s.sent(100)),
        f("one byte", none, data(0, 1), Verdict::Send, |s| s.sent(1)),
        f("three bytes", none, data(0, 3), Verdict::Send, |s| s.sent(3)),
        f("a full MSS", |c| c.snd_wnd = 65535, data(0, MSS), Verdict::Send, |s| s.sent(MSS.into())),
        f(
            "data with a consumption report",
            none,
            tx_frame(&hdr(DATA, TX_POS, 7, 1000)),
            Verdict::Send,
            |s| {
                s.rcv_wnd += 1000;
                s.sent(7);
            },
        ),
        f("ack only", none, tx_frame(&hdr(ACK, 0, 0, 0)), Verdict::Send, |s| s.sent(0)),
        f(
            "ack when none is owed: sent (the app asks for it)",
            |c| (c.ack_now, c.ack_pending) = (0, 0),
            tx_frame(&hdr(ACK, 0, 0, 0)),
            Verdict::Send,
            |s| s.sent(0),
        ),
        f("ack due, owed", none, tx_frame(&hdr(ACK_DUE, 0, 0, 0)), Verdict::Send, |s| s.sent(0)),
        f(
            "ack due, owed only by ack_now",
            |c| c.ack_pending = 0,
            tx_frame(&hdr(ACK_DUE, 0, 0, 0)),
            Verdict::Send,
            |s| s.sent(0),
        ),
        f(
            "ack due when none is owed: it would be a duplicate ACK",
            |c| (c.ack_now, c.ack_pending) = (0, 0),
            tx_frame(&hdr(ACK_DUE, 0, 0, 5000)),
            Verdict::Drop("tcp_tx_ack_settled"),
            |s| s.rcv_wnd += 5000,
        ),
        f(
            "ack due when none is owed, the window it reopens matters: sent as the update",
            |c| {
                closed_window(c);
                (c.ack_now, c.ack_pending) = (0, 0);
            },
            tx_frame(&hdr(ACK_DUE, 0, 0, 5000)),
            Verdict::Send,
            |s| {
                s.rcv_wnd += 5000;
                s.sent(0);
            },
        ),
        f(
            "ack due when none is owed, the peer still has most of the window: dropped",
            |c| {
                closed_window(c);
                c.rcv_adv = RCV.wrapping_add(8000);
                (c.ack_now, c.ack_pending) = (0, 0);
            },
            tx_frame(&hdr(ACK_DUE, 0, 0, 5000)),
            Verdict::Drop("tcp_tx_ack_settled"),
            |s| s.rcv_wnd += 5000,
        ),
        f(
            "data beyond the peer window, its report reopens a closed window: the update alone",
            |c| {
                closed_window(c);
                c.snd_wnd = OUTSTANDING + 99;
            },
            tx_frame(&hdr(DATA, TX_POS, 100, 5000)),
            Verdict::SendBare,
            |s| {
                s.rcv_wnd += 5000;
                s.sent(0);
            },
        ),
        f(
            "a window update after the peer's FIN, even when it would matter",
            |c| {
                closed_window(c);
                c.fin = FIN_RCVD;
                (c.ack_now, c.ack_pending) = (0, 0);
            },
            tx_frame(&hdr(WINDOW_UPDATE, 0, 0, 5000)),
            Verdict::Drop("tcp_tx_wnd_after_fin"),
            |s| s.rcv_wnd += 5000,
        ),
        f(
            "ack due with payload",
            none,
            tx_frame(&hdr(ACK_DUE, 0, 10, 0)),
            Verdict::Drop("tcp_tx_bad_hdr"),
            same,
        ),
        f("window update", none, tx_frame(&hdr(WINDOW_UPDATE, 0, 0, 5000)), Verdict::Send, |s| {
            s.rcv_wnd += 5000;
            s.sent(0);
        }),
        f(
            "window update stops at the largest announceable window",
            |c| c.rcv_wscale = 0,
            tx_frame(&hdr(WINDOW_UPDATE, 0, 0, u32::MAX)),
            Verdict::Send,
            |s| {
                s.rcv_wnd = 65535;
                s.sent(0);
            },
        ),
        f(
            "window field capped at 65535",
            |c| c.rcv_wnd = 1 << 20,
            data(0, 5),
            Verdict::Send,
            |s| s.sent(5),
        ),
        f("no timestamps", |c| c.flags = 0, data(0, 100), Verdict::Send, |s| s.sent(100)),
        f(
            "ECN data is ECT(0)",
            |c| c.flags = TS | ECN,
            data(0, 100),
            Verdict::Send,
            |s| s.sent(100),
        ),
        f(
            "ECN pure ack is not ECN-capable",
            |c| c.flags = ECN,
            tx_frame(&hdr(ACK, 0, 0, 0)),
            Verdict::Send,
            |s| s.sent(0),
        ),
        f(
            "data filling the peer window exactly",
            |c| c.snd_wnd = OUTSTANDING + 100,
            data(0, 100),
            Verdict::Send,
            |s| s.sent(100),
        ),
        f(
            "peer window exceeded",
            |c| c.snd_wnd = OUTSTANDING + 99,
            data(0, 100),
            Verdict::Drop("tcp_tx_peer_window"),
            same,
        ),
        f(
            "zero peer window",
            |c| {
                c.snd_una = c.snd_nxt;
                c.snd_wnd = 0
            },
            data(0, 1),
            Verdict::Drop("tcp_tx_peer_window"),
            same,
        ),
        f(
            "data filling the congestion window exactly",
            |c| *c = with_cwnd(*c, OUTSTANDING + 100),
            data(0, 100),
            Verdict::Send,
            |s| s.sent(100),
        ),
        f(
            "congestion window exceeded",
            |c| *c = with_cwnd(*c, OUTSTANDING + 50),
            data(0, 100),
            Verdict::Drop("tcp_tx_cwnd"),
            same,
        ),
        f(
            "data before snd_una's position",
            none,
            data(OUTSTANDING.wrapping_add(1).wrapping_neg(), 100),
            Verdict::Drop("tcp_tx_stale"),
            same,
        ),
        f(
            "data wholly in flight is resent, windows aside",
            |c| {
                c.snd_wnd = 0;
                *c = with_cwnd(*c, 1);
            },
            data(100u32.wrapping_neg(), 100),
            Verdict::Send,
            |s| s.sent(0),
        ),
        f(
            "data overlapping tx_pos: only the new part advances",
            none,
            data(100u32.wrapping_neg(), 300),
            Verdict::Send,
            |s| s.sent(200),
        ),
        f(
            "data from snd_una's position (app resync)",
            none,
            data(OUTSTANDING.wrapping_neg(), MSS),
            Verdict::Send,
            |s| s.sent(0),
        ),
        f(
            "overlapping data whose new part exceeds the peer window",
            |c| c.snd_wnd = OUTSTANDING + 199,
            data(100u32.wrapping_neg(), 300),
            Verdict::Drop("tcp_tx_peer_window"),
            same,
        ),
        f(
            "overlapping data whose new part exceeds the congestion window",
            |c| *c = with_cwnd(*c, OUTSTANDING + 199),
            data(100u32.wrapping_neg(), 300),
            Verdict::Drop("tcp_tx_cwnd"),
            same,
        ),
        f("retransmit from snd_una", none, retx(OUTSTANDING, 1000), Verdict::Send, |s| s.sent(0)),
        f(
            "retransmit across the sequence wrap",
            none,
            retx(OUTSTANDING - 1000, 100),
            Verdict::Send,
            |s| s.sent(0),
        ),
        f("retransmit of the last byte", none, retx(1, 1), Verdict::Send, |s| s.sent(0)),
        f(
            "retransmit across the position wrap",
            |c| c.tx_pos = 20,
            tx_frame(&hdr(RETRANSMIT, 20u32.wrapping_sub(30), 30, 0)),
            Verdict::Send,
            |s| s.sent(0),
        ),
        f(
            "retransmit ignores the peer and congestion windows",
            |c| {
                c.snd_wnd = 0;
                *c = with_cwnd(*c, 1);
            },
            retx(500, 400),
            Verdict::Send,
            |s| s.sent(0),
        ),
        f(
            "retransmit with a consumption report",
            none,
            tx_frame(&hdr(RETRANSMIT, TX_POS.wrapping_sub(10), 10, 400)),
            Verdict::Send,
            |s| {
                s.rcv_wnd += 400;
                s.sent(0)
            },
        ),
        f(
            "retransmit before snd_una",
            none,
            retx(OUTSTANDING + 1, 10),
            Verdict::Drop("tcp_tx_retx_range"),
            same,
        ),
        f("retransmit at tx_pos", none, retx(0, 10), Verdict::Drop("tcp_tx_retx_range"), same),
        f(
            "retransmit past tx_pos",
            none,
            tx_frame(&hdr(RETRANSMIT, TX_POS.wrapping_add(5), 10, 0)),
            Verdict::Drop("tcp_tx_retx_range"),
            same,
        ),
        f(
            "retransmit with nothing in flight",
            |c| c.snd_una = c.snd_nxt,
            retx(10, 10),
            Verdict::Drop("tcp_tx_retx_range"),
            same,
        ),
        f(
            "retransmit running past the bytes sent",
            none,
            retx(10, 11),
            Verdict::Drop("tcp_tx_retx_unsent"),
            same,
        ),
        f(
            "a refused retransmit's consumption report still counts",
            none,
            tx_frame(&hdr(RETRANSMIT, TX_POS, 10, 300)),
            Verdict::Drop("tcp_tx_retx_range"),
            |s| s.rcv_wnd += 300,
        ),
        f(
            "retransmit over the MSS",
            |c| c.mss = 536,
            retx(1000, 537),
            Verdict::Drop("tcp_tx_over_mss"),
            same,
        ),
        f("retransmit without payload", none, retx(100, 0), Verdict::Drop("tcp_tx_bad_hdr"), same),
        f(
            "retransmit from another app's port",
            |c| c.owner_port = OTHER_PORT,
            retx(100, 10),
            Verdict::Drop("tcp_tx_wrong_owner"),
            same,
        ),
        f("position ahead", none, data(1, 100), Verdict::Drop("tcp_tx_stale"), same),
        f(
            "a refused frame's consumption report still counts",
            none,
            tx_frame(&hdr(DATA, TX_POS.wrapping_add(1), 10, 300)),
            Verdict::Drop("tcp_tx_stale"),
            |s| s.rcv_wnd += 300,
        ),
        f(
            "unknown connection",
            none,
            tx_frame(&unknown),
            Verdict::Drop("tcp_tx_unknown_conn"),
            same,
        ),
        f(
            "another app's port",
            |c| c.owner_port = OTHER_PORT,
            data(0, 10),
            Verdict::Drop("tcp_tx_wrong_owner"),
            same,
        ),
        f(
            "empty port slot",
            |c| c.owner_port = EMPTY_PORT,
            data(0, 10),
            Verdict::Drop("tcp_tx_wrong_owner"),
            same,
        ),
        f(
            "port slot out of range",
            |c| c.owner_port = 1000,
            data(0, 10),
            Verdict::Drop("tcp_tx_wrong_owner"),
            same,
        ),
        f("shorter than a TX header", none, vec![0xab; 20], Verdict::Drop("tcp_tx_short"), same),
        f("zeroed header", none, vec![0; 24], Verdict::Drop("tcp_tx_bad_hdr"), same),
        f("fin after every byte", none, fin(TX_POS), Verdict::Send, |s| s.fin_sent()),
        f(
            "fin with nothing in flight",
            |c| c.snd_una = c.snd_nxt,
            fin(TX_POS),
            Verdict::Send,
            |s| s.fin_sent(),
        ),
        f(
            "fin ignores the peer and congestion windows",
            |c| {
                c.snd_wnd = 0;
                *c = with_cwnd(*c, 1);
            },
            fin(TX_POS),
            Verdict::Send,
            |s| s.fin_sent(),
        ),
        f(
            "fin with a consumption report",
            none,
            tx_frame(&hdr(FIN, TX_POS, 0, 600)),
            Verdict::Send,
            |s| {
                s.rcv_wnd += 600;
                s.fin_sent()
            },
        ),
        f(
            "fin before the app's last bytes were sent",
            none,
            fin(TX_POS.wrapping_add(10)),
            Verdict::Drop("tcp_tx_fin_early"),
            same,
        ),
        f("fin before tx_pos", none, fin(TX_POS - 1), Verdict::Drop("tcp_tx_fin_early"), same),
        f("fin resent at its own sequence number", fin_sent, fin(TX_POS), Verdict::Send, |s| {
            s.sent(0)
        }),
        f(
            "fin resent after its acknowledgement",
            |c| {
                fin_sent(c);
                c.snd_una = c.snd_nxt
            },
            fin(0),
            Verdict::Send,
            |s| s.sent(0),
        ),
        f(
            "fin with payload",
            none,
            tx_frame(&hdr(FIN, TX_POS, 10, 0)),
            Verdict::Drop("tcp_tx_bad_hdr"),
            same,
        ),
        f("new data after the fin", fin_sent, data(0, 10), Verdict::Drop("tcp_tx_after_fin"), same),
        f(
            "data overlapping the fin",
            fin_sent,
            data(5u32.wrapping_neg(), 10),
            Verdict::Drop("tcp_tx_after_fin"),
            same,
        ),
        f(
            "data in flight resent after the fin",
            fin_sent,
            data(OUTSTANDING.wrapping_neg(), 100),
            Verdict::Send,
            |s| s.sent(0),
        ),
        f("retransmit of the last byte before the fin", fin_sent, retx(1, 1), Verdict::Send, |s| {
            s.sent(0)
        }),
        f("retransmit of the fin", fin_sent, retx(0, 1), Verdict::Drop("tcp_tx_retx_range"), same),
        f("ack after the fin", fin_sent, tx_frame(&hdr(ACK, 0, 0, 0)), Verdict::Send, |s| {
            s.sent(0)
        }),
        f(
            "unknown intent",
            none,
            tx_frame(&hdr(ACK_DUE + 1, 0, 0, 0)),
            Verdict::Drop("tcp_tx_bad_hdr"),
            same,
        ),
        f("reserved bits set", none, reserved, Verdict::Drop("tcp_tx_bad_hdr"), same),
        f("frame longer than announced", none, longer, Verdict::Drop("tcp_tx_bad_hdr"), same),
        f("frame shorter than announced", none, shorter, Verdict::Drop("tcp_tx_bad_hdr"), same),
        f("data without payload", none, data(0, 0), Verdict::Drop("tcp_tx_bad_hdr"), same),
        f(
            "ack with payload",
            none,
            tx_frame(&hdr(ACK, 0, 10, 0)),
            Verdict::Drop("tcp_tx_bad_hdr"),
            same,
        ),
        f("payload over the maximum", none, over_max, Verdict::Drop("tcp_tx_bad_hdr"), same),
        f(
            "payload over the MSS",
            |c| c.mss = 536,
            data(0, 537),
            Verdict::Drop("tcp_tx_over_mss"),
            same,
        ),
    ]
}

/// CLOCK_MONOTONIC in ms: bpf_ktime_get_ns's clock, in egress's TSval unit.
fn monotonic_ms() -> u32 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) }, 0);
    (ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000) as u32
}

/// The frame egress must send for TX header `h` on connection `before`, whose state becomes
/// `after`; built field by field from TCP and IPv4 rules, checksums by `packet`'s RFC 1071 code.
fn expected_frame(before: &tcp_conn, after: &State, h: &etran_tcp_tx_hdr, tsval: u32) -> Vec<u8> {
    let len = usize::from(h.len);
    let window =
        (after.rcv_wnd.saturating_sub(before.rcv_reserve) >> before.rcv_wscale).min(65535) as u16;
    let flags = match (len, h.intent) {
        (0, FIN) => TCP_ACK | TCP_FIN,
        (0, _) => TCP_ACK,
        _ => TCP_ACK | TCP_PSH,
    };
    let options =
        if before.flags & TS != 0 { tcp_ts_option(tsval, before.ts_recent) } else { vec![] };
    let seq = match (len, h.intent) {
        (0, FIN) if before.fin & FIN_SENT != 0 => before.snd_nxt.wrapping_sub(1),
        (0, _) => before.snd_nxt,
        _ => seq_of(before, h.tx_pos),
    };
    let seg = tcp_segment(
        LOCAL_PORT,
        PEER_PORT,
        seq,
        before.rcv_nxt,
        flags,
        window,
        &options,
        &payload(len),
    );
    let seg = with_tcp_checksum(LOCAL_IP, PEER_IP, seg);
    let tos = if before.flags & ECN != 0 && len > 0 { 0x02 } else { 0 };
    let ip = Ipv4 { tos, id: before.ip_id, src: LOCAL_IP, dst: PEER_IP, ..Ipv4::default() };
    eth_with(PEER_MAC, LOCAL_MAC, ETH_P_IP, &ipv4_with(&ip, &seg))
}

fn egress_harness(storage: &mut ObjectStorage) -> Harness<'_> {
    let h = Harness::new(storage);
    let ports = &h.objs.tcp.maps.etran_port_ifindex;
    ports.update(&OTHER_PORT.to_ne_bytes(), &999u32.to_ne_bytes(), MapFlags::ANY).unwrap();
    h
}

fn run(h: &Harness<'_>, frame: &[u8]) -> RawRun {
    h.run(&h.objs.tcp.progs.etran_tcp_egress, frame, LO)
}

#[test]
fn tcp_egress_fixtures() {
    let mut storage = ObjectStorage::default();
    let h = egress_harness(&mut storage);
    for fx in fixtures() {
        let name = fx.name;
        let mut conn = base_conn();
        (fx.setup)(&mut conn);
        h.set_conn(&key(), &conn);
        let mut want = State::from(&conn);
        (fx.effect)(&mut want);
        let before = h.counters();
        let t0 = monotonic_ms();
        let run = run(&h, &fx.frame);
        let t1 = monotonic_ms();
        let after = h.counters();
        let (t0c, p0, d0) = tcp_row(&before);
        let (t1c, p1, d1) = tcp_row(&after);
        match fx.verdict {
            Verdict::Drop(reason) => {
                assert_eq!(run.verdict, XDP_DROP, "{name}: verdict");
                assert_eq!((t1c - t0c, p1 - p0, d1 - d0), (0, 0, 1), "{name}: counted as drop");
                assert_eq!(
                    drop_total(&after, reason) - drop_total(&before, reason),
                    1,
                    "{name}: reason {reason}"
                );
            }
            Verdict::Send | Verdict::SendBare => {
                assert_eq!(run.verdict, XDP_REDIRECT, "{name}: verdict");
                assert_eq!((t1c - t0c, p1 - p0, d1 - d0), (1, 0, 0), "{name}: counted as sent");
                assert_eq!(run.ctx.data, 0, "{name}: no metadata");
                let seg = checked_tcp_segment(&run.data);
                let mut h: etran_tcp_tx_hdr = from_bytes(&fx.frame);
                if let Verdict::SendBare = fx.verdict {
                    (h.len, h.intent) = (0, ACK);
                }
                let tsval = if conn.flags & TS != 0 {
                    assert_eq!(seg[20..24], [1, 1, 8, 10], "{name}: timestamp option");
                    let v = u32::from_be_bytes(seg[24..28].try_into().unwrap());
                    assert!(
                        not_after(t0, v) && not_after(v, t1),
                        "{name}: TSval {v} is the ms clock ({t0}..={t1})"
                    );
                    v
                } else {
                    0
                };
                let expect = expected_frame(&conn, &want, &h, tsval);
                assert_eq!(run.data, expect, "{name}: the frame sent");
            }
        }
        assert_eq!(State::from(&h.conn(&key())), want, "{name}: connection state");
    }
}

/// Sequence numbers of resent bytes, as literals: the fixture's flight [0xffff_fc00, 0x3d0)
/// crosses 2^32 at its 1024th byte.
#[test]
fn tcp_egress_resends_at_their_own_sequence_numbers() {
    let mut storage = ObjectStorage::default();
    let h = egress_harness(&mut storage);
    // (frame, seq, payload bytes, new bytes)
    for (frame, seq, len, fresh) in [
        (retx(OUTSTANDING, 10), 0xffff_fc00u32, 10, 0),
        (retx(OUTSTANDING - 1000, 100), 0xffff_ffe8, 100, 0),
        (retx(OUTSTANDING - 1100, 10), 0x4c, 10, 0),
        (retx(1, 1), 0x3cf, 1, 0),
        (data(OUTSTANDING.wrapping_neg(), 30), 0xffff_fc00, 30, 0),
        (data(5u32.wrapping_neg(), 20), 0x3cb, 20, 15),
    ] {
        let conn = base_conn();
        h.set_conn(&key(), &conn);
        let run = run(&h, &frame);
        assert_eq!(run.verdict, XDP_REDIRECT, "{seq:#x}");
        let seg = checked_tcp_segment(&run.data);
        assert_eq!(u32::from_be_bytes(seg[4..8].try_into().unwrap()), seq);
        assert_eq!(seg.len() - usize::from(seg[12] >> 4) * 4, len, "{seq:#x}: payload");
        assert_eq!(seg[seg.len() - len..], frame[24..], "{seq:#x}: the payload itself");
        let c = h.conn(&key());
        assert_eq!(c.snd_nxt, conn.snd_nxt.wrapping_add(fresh), "{seq:#x}: snd_nxt");
        assert_eq!(c.tx_pos, conn.tx_pos.wrapping_add(fresh), "{seq:#x}: tx_pos");
    }
}

/// SACK blocks ride on the app's segments where the payload leaves them room within the MSS;
/// when the ones an immediate ACK owes do not fit, the ACK stays owed (the generator sends it).
#[test]
fn tcp_egress_carries_sack_blocks_where_they_fit() {
    let mut storage = ObjectStorage::default();
    let h = egress_harness(&mut storage);
    let sack = tcp_conn_flag::TCP_CONN_SACK.0 as u8;
    let at = |off: u32| RCV.wrapping_add(off);
    let (i0, i1) = ((at(3000), at(3100)), (at(1000), at(1200)));
    // (payload, blocks carried, ACK still owed)
    for (len, carried, owed) in [(0u16, 2usize, 0u8), (100, 2, 0), (1436, 1, 1), (1448, 0, 1)] {
        let mut conn = base_conn();
        conn.flags = TS | sack;
        conn.mss = 1448;
        (conn.ooo[0].start, conn.ooo[0].end) = i0;
        (conn.ooo[1].start, conn.ooo[1].end) = i1;
        conn.ooo_n = 2;
        h.set_conn(&key(), &conn);
        let frame = if len == 0 { tx_frame(&hdr(ACK, TX_POS, 0, 0)) } else { data(0, len) };
        let run = run(&h, &frame);
        assert_eq!(run.verdict, XDP_REDIRECT, "{len}: verdict");
        let seg = checked_tcp_segment(&run.data);
        let doff = usize::from(seg[12] >> 4) * 4;
        assert_eq!(seg.len() - doff, usize::from(len), "{len}: the payload whole");
        assert!(doff <= 60 && seg.len() - 20 <= 1448 + 12, "{len}: within the MSS");
        let opts = &seg[32..doff];
        if carried == 0 {
            assert!(opts.is_empty(), "{len}: no SACK option: {opts:02x?}");
        } else {
            assert_eq!(opts[..4], [1, 1, 5, 2 + 8 * carried as u8], "{len}: SACK option");
            let block = |i: usize| {
                let b = &opts[4 + 8 * i..12 + 8 * i];
                let word = |w: &[u8]| u32::from_be_bytes(w.try_into().unwrap());
                (word(&b[..4]), word(&b[4..]))
            };
            let want = [i0, i1];
            for (i, w) in want.iter().enumerate().take(carried) {
                assert_eq!(block(i), *w, "{len}: block {i}");
            }
        }
        let c = h.conn(&key());
        assert_eq!((c.ack_now, c.ack_pending), (owed, 0), "{len}: ACK owed after");
    }
}

#[test]
fn tcp_egress_without_a_nic_drops() {
    let mut storage = ObjectStorage::default();
    let h = egress_harness(&mut storage);
    h.objs.tcp.maps.etran_nic.delete(&0u32.to_ne_bytes()).unwrap();
    let conn = base_conn();
    h.set_conn(&key(), &conn);
    let before = h.counters();
    assert_eq!(run(&h, &data(0, 10)).verdict, XDP_DROP);
    let after = h.counters();
    assert_eq!(drop_total(&after, "tcp_tx_no_nic") - drop_total(&before, "tcp_tx_no_nic"), 1);
    assert_eq!(State::from(&h.conn(&key())), State::from(&conn), "state untouched");
}

/// 100 000 mutated TX frames against the live connection, valid ones for its current state
/// mostly (bit flips, random bytes, truncations, trailing bytes; headers naming another app's
/// connection): the verdict is only ever REDIRECT or DROP, the send window always holds,
/// snd_nxt never moves back, whatever is sent is a well-formed segment of the connection with
/// correct checksums, another app's connection never changes, and every frame is counted once.
/// ETRAN_FUZZ_SEED picks the seed.
#[test]
fn tcp_egress_survives_mutated_frames() {
    const RUNS: usize = 100_000;
    let mut storage = ObjectStorage::default();
    let h = egress_harness(&mut storage);
    let seed = fuzz_seed("tcp egress", 0x3e9_7e55);
    let mut rng = Rng(seed);
    let base = base_conn();
    h.set_conn(&key(), &base);
    // Another app's connection (port slot 1), next to ours.
    let mut other_key = key();
    other_key.remote_port = (PEER_PORT + 1).to_be();
    let other = tcp_conn { owner_port: OTHER_PORT, ..base };
    h.set_conn(&other_key, &other);
    let frames_before = total_frames(&h.counters());
    let mut prev = base;
    let (mut resent, mut overlapping, mut sent_frames) = (0, 0, 0);
    for i in 0..RUNS {
        if i % 50 == 0 {
            // The peer acknowledges everything and varies its window; the daemon its cwnd.
            let mut c = h.conn(&key());
            // A FIN stops new data: mostly start over without one (taking back its sequence
            // number, as a connection that never sent it would not have used it).
            if c.fin & FIN_SENT != 0 && rng.below(4) != 0 {
                c.fin = 0;
                c.snd_nxt = c.snd_nxt.wrapping_sub(1);
            }
            // Mostly; sometimes it leaves bytes in flight for retransmits to resend.
            c.snd_una = c.snd_nxt.wrapping_sub([0, 0, 700, 2500][rng.below(4)]);
            c.snd_wnd = [0, 1000, 8000, 65535][rng.below(4)];
            c = with_cwnd(c, [1 << 20, 1 << 20, 3000][rng.below(3)]);
            c.flags = [0, TS, ECN, TS | ECN][rng.below(4)];
            c.rcv_wnd = (rng.next() % 200_000) as u32;
            h.set_conn(&key(), &c);
            prev = c;
        }
        let len = [1, 3, 100, MAX, MAX + 1, 0][rng.below(6)];
        let intent =
            [DATA, DATA, DATA, RETRANSMIT, RETRANSMIT, ACK, WINDOW_UPDATE, FIN, 0][rng.below(9)];
        let consumed = [0, 100, 70_000, u32::MAX][rng.below(4)];
        // At tx_pos, or anywhere in (or just around) the bytes in flight.
        let flight = prev.snd_nxt.wrapping_sub(prev.snd_una) - u32::from(fin_in_flight(&prev));
        let pos = match rng.below(3) {
            0 => prev.tx_pos,
            1 => {
                prev.tx_pos.wrapping_sub(flight).wrapping_add(rng.below(flight as usize + 1) as u32)
            }
            _ => prev.tx_pos.wrapping_sub(flight).wrapping_add(rng.below(3) as u32).wrapping_sub(1),
        };
        let mut h_tx = hdr(intent, pos, len, consumed);
        if rng.below(20) == 0 {
            h_tx.key = other_key; // well-formed, at our position, on another app's connection
        }
        let mut frame = tx_frame(&h_tx);
        for _ in 0..rng.below(3) {
            let at = if rng.below(3) == 0 { rng.below(frame.len()) } else { rng.below(24) };
            let at = at % frame.len();
            match rng.below(4) {
                0 => frame[at] ^= 1 << rng.below(8),
                1 => frame[at] = rng.next() as u8,
                2 => frame.truncate(14.max(rng.below(frame.len() + 1))),
                _ => frame.push(rng.next() as u8),
            }
        }
        let run = run(&h, &frame);
        let c = h.conn(&key());
        let ctx = || format!("seed {seed:#x} run {i}: {prev:?} → {c:?} for {frame:02x?}");
        assert!(
            as_bytes(&h.conn(&other_key)) == as_bytes(&other),
            "another app's connection never changes: {}",
            ctx()
        );
        // The header as egress saw it, mutations included.
        let sent_hdr = (frame.len() >= 24).then(|| from_bytes::<etran_tcp_tx_hdr>(&frame));
        if sent_hdr.is_some_and(|h| h.intent == RETRANSMIT) {
            assert_eq!((c.snd_nxt, c.tx_pos), (prev.snd_nxt, prev.tx_pos), "retransmit: {}", ctx());
        }
        assert!(matches!(run.verdict, XDP_DROP | XDP_REDIRECT), "verdict: {}", ctx());
        // The first FIN takes a sequence number and no stream byte.
        let fin_first = u32::from(c.fin & FIN_SENT != 0 && prev.fin & FIN_SENT == 0);
        let sent = c.snd_nxt.wrapping_sub(prev.snd_nxt) - fin_first;
        assert!(not_after(prev.snd_nxt, c.snd_nxt), "snd_nxt never moves back: {}", ctx());
        assert_eq!(c.tx_pos.wrapping_sub(prev.tx_pos), sent, "stream and seq move together");
        assert!(sent == 0 || prev.fin & FIN_SENT == 0, "no new data after a FIN: {}", ctx());
        let flight = c.snd_nxt.wrapping_sub(c.snd_una) - u32::from(fin_in_flight(&c));
        let limit = c.snd_wnd.min(c.cwnd_edge.wrapping_sub(c.snd_una));
        assert!(sent == 0 || flight <= limit, "within the send window: {}", ctx());
        assert!(c.rcv_wnd >= prev.rcv_wnd, "egress never shrinks rcv_wnd: {}", ctx());
        assert_eq!((c.rcv_nxt, c.snd_una), (prev.rcv_nxt, prev.snd_una), "{}", ctx());
        if run.verdict == XDP_REDIRECT {
            let seg = checked_tcp_segment(&run.data);
            assert_eq!(run.data[..6], PEER_MAC, "destination MAC");
            assert_eq!(run.data[26..34], [LOCAL_IP, PEER_IP].concat(), "addresses");
            assert_eq!(seg[..4], [LOCAL_PORT.to_be_bytes(), PEER_PORT.to_be_bytes()].concat());
            let seq = u32::from_be_bytes(seg[4..8].try_into().unwrap());
            let doff = usize::from(seg[12] >> 4) * 4;
            let len = (seg.len() - doff) as u32;
            let th = sent_hdr.expect("a sent frame had a header");
            assert_eq!(len, u32::from(th.len), "the whole payload: {}", ctx());
            if th.intent == FIN && fin_first == 0 {
                assert_eq!(seq, prev.snd_nxt.wrapping_sub(1), "the FIN again: {}", ctx());
                prev = c;
                continue;
            }
            if len == 0 {
                assert_eq!(seq, prev.snd_nxt, "a pure ACK or the FIN at snd_nxt: {}", ctx());
            } else {
                assert_eq!(seq, seq_of(&prev, th.tx_pos), "seq from position: {}", ctx());
            }
            // Starts within [snd_una, snd_nxt]; only what lies past snd_nxt is new.
            assert!(
                not_after(prev.snd_una, seq) && not_after(seq, prev.snd_nxt),
                "sent from the bytes in flight or at snd_nxt: {}",
                ctx()
            );
            let end = seq.wrapping_add(len);
            let fresh =
                if not_after(end, prev.snd_nxt) { 0 } else { end.wrapping_sub(prev.snd_nxt) };
            assert_eq!(fresh, sent, "snd_nxt advanced by the new bytes only: {}", ctx());
            if len > 0 && seq != prev.snd_nxt {
                resent += 1;
                overlapping += usize::from(fresh > 0);
            }
            assert_eq!((c.ack_pending, c.ack_now), (0, 0), "the segment carried the ACK");
            sent_frames += 1;
        } else {
            assert_eq!(sent, 0, "a dropped frame sends nothing: {}", ctx());
        }
        prev = c;
    }
    assert_eq!(total_frames(&h.counters()) - frames_before, RUNS as u64, "each counted once");
    eprintln!("{RUNS} TX frames: {sent_frames} sent, {resent} resends ({overlapping} overlapping)");
    assert!(h.conn(&key()).snd_nxt != base.snd_nxt, "some data was sent");
    assert!(sent_frames > RUNS / 20, "the mix sent");
    assert!(resent > 0 && overlapping > 0, "resends: {resent}, of which overlapping {overlapping}");
}

#[test]
fn tx_header_is_a_multiple_of_4() {
    assert_eq!(size_of::<etran_tcp_tx_hdr>() % 4, 0);
    assert_eq!(size_of::<etran_tcp_tx_hdr>(), 24);
}

/// Linux's own TCP takes what egress writes: a handshake done by hand from a raw socket, then
/// egress's ACK and a data segment (with timestamps) reach a Linux listener in another
/// namespace, which must hand the payload to its accepted socket.
#[test]
fn linux_accepts_egress_segments() {
    use std::{
        io::Read,
        net::TcpListener,
        time::{Duration, Instant},
    };

    use common::netns::{in_netns, sh, RawSocket, VethPair};

    const ME: [u8; 4] = [10, 77, 0, 9]; // no namespace owns it: the kernel of -a stays out
    const SERVER: [u8; 4] = [10, 77, 0, 2];
    const MY_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 1];
    const SERVER_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 2];
    const ISN: u32 = 0xffff_fff0;
    let pair = VethPair::new("etran-egress");
    let (a, b) = (&pair.a, &pair.b);
    sh(&format!(
        "ip -n {a} link set va address 02:77:00:00:00:01 && \
         ip -n {b} link set vb address 02:77:00:00:00:02 && \
         ip -n {b} neigh replace 10.77.0.9 lladdr 02:77:00:00:00:01 dev vb"
    ));
    let listener = in_netns(b, || TcpListener::bind("10.77.0.2:5555").expect("listen"));
    listener.set_nonblocking(true).unwrap();
    let raw = in_netns(a, || RawSocket::open("va"));

    // SYN with MSS 1460, timestamps and window scale 2, as a Linux client would.
    let syn_ts = monotonic_ms().wrapping_sub(1000);
    let mut opts = vec![2, 4, 0x05, 0xb4];
    opts.extend_from_slice(&tcp_ts_option(syn_ts, 0));
    opts.extend_from_slice(&[1, 3, 3, RCV_WSCALE]);
    let syn = tcp_segment(40000, 5555, ISN, 0, TCP_SYN, 65535, &opts, &[]);
    let syn = with_tcp_checksum(ME, SERVER, syn);
    let ip = Ipv4 { src: ME, dst: SERVER, ..Ipv4::default() };
    raw.send(&eth_with(SERVER_MAC, MY_MAC, ETH_P_IP, &ipv4_with(&ip, &syn)));

    // The SYN-ACK: the server's ISN and TSval.
    let deadline = Instant::now() + Duration::from_secs(3);
    let (server_isn, server_ts) = loop {
        assert!(Instant::now() < deadline, "no SYN-ACK from Linux");
        let Some(f) = raw.recv(100) else { continue };
        if f.len() < 54 || f[12..14] != [8, 0] || f[23] != IPPROTO_TCP || f[26..30] != SERVER {
            continue;
        }
        let seg = &f[34..];
        if seg[13] != TCP_SYN | TCP_ACK {
            continue;
        }
        let isn = u32::from_be_bytes(seg[4..8].try_into().unwrap());
        let doff = usize::from(seg[12] >> 4) * 4;
        let mut opts = &seg[20..doff];
        let mut ts = None;
        while let [kind, rest @ ..] = opts {
            match kind {
                0 => break,
                1 => opts = rest,
                _ => {
                    let len = usize::from(rest[0]);
                    if *kind == 8 {
                        ts = Some(u32::from_be_bytes(opts[2..6].try_into().unwrap()));
                    }
                    opts = &opts[len..];
                }
            }
        }
        break (isn, ts.expect("Linux echoes the timestamp option"));
    };

    let mut storage = ObjectStorage::default();
    let h = Harness::new(&mut storage);
    let key = tcp_conn_key {
        local_ip: u32::from_ne_bytes(ME),
        remote_ip: u32::from_ne_bytes(SERVER),
        local_port: 40000u16.to_be(),
        remote_port: 5555u16.to_be(),
    };
    let conn = tcp_conn {
        rcv_nxt: server_isn.wrapping_add(1),
        rcv_wnd: 65535 << RCV_WSCALE,
        snd_una: ISN.wrapping_add(1),
        snd_nxt: ISN.wrapping_add(1),
        snd_wnd: 65535,
        ts_recent: server_ts,
        rcv_wscale: RCV_WSCALE,
        mss: MSS,
        flags: TS,
        local_mac: MY_MAC,
        remote_mac: SERVER_MAC,
        ..Default::default()
    };
    let conn = with_cwnd(conn, 1 << 20);
    h.set_conn(&key, &conn);
    let msg = payload(777);
    let ack = etran_tcp_tx_hdr { key, tx_pos: 0, consumed: 0, len: 0, intent: ACK, reserved: 0 };
    let data = etran_tcp_tx_hdr { len: msg.len() as u16, intent: DATA, ..ack };
    for tx in [tx_frame(&ack), tx_frame(&data)] {
        let run = h.run(&h.objs.tcp.progs.etran_tcp_egress, &tx, LO);
        assert_eq!(run.verdict, XDP_REDIRECT);
        raw.send(&run.data);
    }

    let deadline = Instant::now() + Duration::from_secs(3);
    let (mut stream, _) = loop {
        match listener.accept() {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "Linux did not complete the handshake");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut got = vec![0u8; msg.len()];
    stream.read_exact(&mut got).expect("Linux delivers egress's payload");
    assert_eq!(got, msg);
}
