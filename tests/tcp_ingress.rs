//! Table-driven BPF_PROG_TEST_RUN fixtures for the TCP ingress program, run through the entrance
//! exactly as `etran up` links them: packet in → verdict, connection state, RX metadata,
//! counters. Plus a mutation fuzzer over one connection's segments. Needs root (CAP_BPF).
mod common;

use std::mem::size_of;

use common::{
    fixture::{drop_total, fuzz_seed, total_frames, Rng},
    packet::*,
    tcp::*,
};
use etran::{
    bpf::tcp::types::{
        etran_tcp_rx_flag, etran_tcp_rx_meta, tcp_conn, tcp_conn_fin, tcp_conn_flag, tcp_conn_key,
    },
    loader::ObjectStorage,
};

const PEER_PORT: u16 = 40000;
const LOCAL_PORT: u16 = 80;
const HANDLE: u64 = 0xfeed_0000_beef;
/// Both sequence spaces start just short of the 2^32 wrap, so serial arithmetic is exercised.
const RCV: u32 = 0xffff_ff00;
const SND: u32 = 0xffff_fc00;
const OUTSTANDING: u32 = 2000;
const RX_POS: u32 = 0xffff_fff0;
/// Stream position of snd_nxt; snd_una's lies OUTSTANDING before it, across the wrap.
const TX_POS: u32 = 0x0000_0300;
const UNA_POS: u32 = TX_POS.wrapping_sub(OUTSTANDING);
const WND: u32 = 10_000;
const PEER_WND: u16 = 65535;
/// Offset of the payload in a frame built by `seg` (Ethernet + IPv4 + TCP + timestamp option).
const PAYLOAD_OFF: u16 = 14 + 20 + 20 + 12;

const FR: u32 = etran_tcp_rx_flag::ETRAN_TCP_RX_FAST_RETRANSMIT.0;
const FIN: u32 = etran_tcp_rx_flag::ETRAN_TCP_RX_FIN.0;
const OOO: u32 = etran_tcp_rx_flag::ETRAN_TCP_RX_OUT_OF_ORDER.0;
const MERGED: u32 = etran_tcp_rx_flag::ETRAN_TCP_RX_MERGED.0;
const FIN_ACKED: u32 = etran_tcp_rx_flag::ETRAN_TCP_RX_FIN_ACKED.0;
const SACK: u32 = etran_tcp_rx_flag::ETRAN_TCP_RX_SACK.0;
const FIN_SENT: u8 = tcp_conn_fin::TCP_CONN_FIN_SENT.0 as u8;
const FIN_RCVD: u8 = tcp_conn_fin::TCP_CONN_FIN_RCVD.0 as u8;

fn key() -> tcp_conn_key {
    tcp_conn_key {
        local_ip: u32::from_ne_bytes(DST_IP),
        remote_ip: u32::from_ne_bytes(SRC_IP),
        local_port: LOCAL_PORT.to_be(),
        remote_port: PEER_PORT.to_be(),
    }
}

/// The connection every fixture starts from: 2000 bytes in flight, 10000 bytes of app buffer, a
/// congestion window the peer's window hides.
fn base_conn() -> tcp_conn {
    let c = tcp_conn {
        owner_port: 0,
        handle: HANDLE,
        rcv_nxt: RCV,
        rcv_wnd: WND,
        rx_pos: RX_POS,
        tx_pos: TX_POS,
        snd_una: SND,
        snd_nxt: SND.wrapping_add(OUTSTANDING),
        snd_wnd: PEER_WND.into(),
        ts_recent: 7,
        flags: tcp_conn_flag::TCP_CONN_TIMESTAMPS.0 as u8,
        ..Default::default()
    };
    with_cwnd(c, 1 << 20)
}

/// A segment of the fixture connection with the timestamp option (TSval 100).
fn seg(seq: u32, ack: u32, flags: u8, wnd: u16, payload: &[u8]) -> Vec<u8> {
    tcp_frame(tcp_segment(
        PEER_PORT,
        LOCAL_PORT,
        seq,
        ack,
        flags,
        wnd,
        &tcp_ts_option(100, 1),
        payload,
    ))
}

fn data(seq_off: i64, len: usize) -> Vec<u8> {
    let seq = RCV.wrapping_add(seq_off as u32);
    seg(seq, SND, TCP_ACK | TCP_PSH, PEER_WND, &vec![0x5a; len])
}

fn ack(ack_off: u32, wnd: u16) -> Vec<u8> {
    seg(RCV, SND.wrapping_add(ack_off), TCP_ACK, wnd, &[])
}

/// A pure ACK with the timestamp option and SACK blocks (offsets from SND), as Linux sends it.
fn sack_ack(ack_off: u32, blocks: &[(u32, u32)]) -> Vec<u8> {
    let mut opts = tcp_ts_option(100, 1);
    opts.extend_from_slice(&[1, 1, 5, 2 + 8 * blocks.len() as u8]);
    for &(l, r) in blocks {
        opts.extend_from_slice(&SND.wrapping_add(l).to_be_bytes());
        opts.extend_from_slice(&SND.wrapping_add(r).to_be_bytes());
    }
    let seq = SND.wrapping_add(ack_off);
    tcp_frame(tcp_segment(PEER_PORT, LOCAL_PORT, RCV, seq, TCP_ACK, PEER_WND, &opts, &[]))
}

/// The fields the program may change, for comparison.
#[derive(Clone, Debug, PartialEq)]
struct State {
    rcv_nxt: u32,
    rcv_wnd: u32,
    rx_pos: u32,
    /// Out-of-order intervals as (offset from RCV, length), most recent first.
    ooo: Vec<(u32, u32)>,
    /// The D-SACK range as (offset from RCV, length); (_, 0) for none.
    dsack: (u32, u32),
    snd_una: u32,
    snd_wnd: u32,
    dupacks: u16,
    ts_recent: u32,
    ack_pending: u32,
    ack_now: u8,
    fin: u8,
}

impl From<&tcp_conn> for State {
    fn from(c: &tcp_conn) -> State {
        State {
            rcv_nxt: c.rcv_nxt,
            rcv_wnd: c.rcv_wnd,
            rx_pos: c.rx_pos,
            ooo: c.ooo[..usize::from(c.ooo_n).min(c.ooo.len())]
                .iter()
                .map(|r| (r.start.wrapping_sub(RCV), r.end.wrapping_sub(r.start)))
                .collect(),
            dsack: match c.dsack.end.wrapping_sub(c.dsack.start) {
                0 => (0, 0),
                len => (c.dsack.start.wrapping_sub(RCV), len),
            },
            snd_una: c.snd_una,
            snd_wnd: c.snd_wnd,
            dupacks: c.dupacks,
            ts_recent: c.ts_recent,
            ack_pending: c.ack_pending,
            ack_now: c.ack_now,
            fin: c.fin,
        }
    }
}

impl State {
    /// In-order bytes the app now holds.
    fn advance(&mut self, n: u32) {
        self.rcv_nxt = self.rcv_nxt.wrapping_add(n);
        self.rx_pos = self.rx_pos.wrapping_add(n);
        self.rcv_wnd -= n;
        self.ack_pending += n;
    }
}

/// The metadata fields a fixture expects (the handle is always checked).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Meta {
    rx_pos: u32,
    off: u16,
    len: u16,
    una_pos: u32,
    send_wnd: u32,
    merged: u32,
    flags: u32,
}

impl From<&etran_tcp_rx_meta> for Meta {
    fn from(m: &etran_tcp_rx_meta) -> Meta {
        Meta {
            rx_pos: m.rx_pos,
            off: m.payload_off,
            len: m.payload_len,
            una_pos: m.una_pos,
            send_wnd: m.send_wnd,
            merged: m.merged,
            flags: m.flags,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Verdict {
    Pass,
    Drop(&'static str),
    Redirect(Meta),
    /// Copied to the daemon's slow-path ring buffer and dropped (counted as transport).
    Slow,
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

/// Sets the connection's out-of-order intervals: (offset from RCV, length), most recent first.
fn set_ooo(c: &mut tcp_conn, ooo: &[(u32, u32)]) {
    for (slot, &(off, len)) in c.ooo.iter_mut().zip(ooo) {
        slot.start = RCV.wrapping_add(off);
        slot.end = RCV.wrapping_add(off + len);
    }
    c.ooo_n = ooo.len() as u8;
}

/// SACK negotiated (D-SACK ranges are recorded only then).
fn sack(c: &mut tcp_conn) {
    c.flags |= tcp_conn_flag::TCP_CONN_SACK.0 as u8;
}

/// Metadata of a delivered in-order segment at the start of the window, nothing acknowledged.
fn meta(len: u16) -> Meta {
    Meta {
        rx_pos: RX_POS,
        off: PAYLOAD_OFF,
        len,
        una_pos: UNA_POS,
        send_wnd: PEER_WND.into(),
        ..Default::default()
    }
}

fn fixtures() -> Vec<Fixture> {
    let none = |_: &mut tcp_conn| {};
    let same = |_: &mut State| {};
    let ooo_1000_200 = |c: &mut tcp_conn| set_ooo(c, &[(1000, 200)]);
    let four_intervals =
        |c: &mut tcp_conn| set_ooo(c, &[(1000, 100), (2000, 100), (3000, 100), (4000, 100)]);
    let unknown = eth(
        ETH_P_IP,
        &ipv4(IPPROTO_TCP, &tcp_segment(PEER_PORT, 81, RCV, SND, TCP_ACK, 100, &[], b"x")),
    );
    let mut padded = data(0, 10);
    padded.extend_from_slice(&[0xee; 20]); // Ethernet trailer padding, not payload
    let mut tot_below_headers = data(0, 10);
    tot_below_headers[16..18].copy_from_slice(&40u16.to_be_bytes());
    fix_checksums(&mut tot_below_headers);
    // Corrupted on the way (each would change the state if taken: see the fixtures below).
    let corrupt = |mut frame: Vec<u8>, at: usize, xor: u8| {
        frame[at] ^= xor;
        frame
    };
    const TCP: usize = 14 + 20;
    let bad_payload = corrupt(data(0, 300), usize::from(PAYLOAD_OFF) + 123, 0x10);
    let bad_ack = corrupt(ack(500, PEER_WND), TCP + 10, 0x02);
    let bad_fin = corrupt(data(0, 50), TCP + 13, TCP_FIN);
    let bad_ttl = corrupt(data(0, 10), 14 + 8, 0x01);
    let bad_ip_check = corrupt(data(0, 10), 14 + 10, 0x80);
    let bad_bare_fin = corrupt(seg(RCV, SND, TCP_ACK, PEER_WND, &[]), TCP + 13, TCP_FIN);
    // What a Linux sender with TX checksum offload leaves in the field: the pseudo-header sum.
    let mut partial = data(0, 10);
    partial[TCP + 16..TCP + 18].fill(0);
    let len = (partial.len() - TCP) as u16;
    let pseudo = !checksum(&[&SRC_IP[..], &DST_IP, &[0, IPPROTO_TCP], &len.to_be_bytes()].concat());
    partial[TCP + 16..TCP + 18].copy_from_slice(&pseudo.to_be_bytes());
    // RX_MAX_SEGMENT: a header with every option and our MSS's payload.
    let largest = data(0, 60 + 1460 - 32);
    let oversize = data(0, 60 + 1460 - 32 + 1);
    let f = |name, setup, frame, verdict, effect| Fixture { name, setup, frame, verdict, effect };
    // Our FIN went out behind the bytes in flight.
    let fin_sent = |c: &mut tcp_conn| {
        c.fin = FIN_SENT;
        c.snd_nxt = c.snd_nxt.wrapping_add(1);
    };
    // The peer's FIN was taken: rcv_nxt is past it.
    let fin_rcvd = |c: &mut tcp_conn| c.fin = FIN_RCVD;
    vec![
        f("unknown flow (the kernel's: not checked here)", none, unknown, Verdict::Pass, same),
        // SYN and RST of an established connection: the daemon's, never the kernel's.
        f("syn", none, seg(RCV, SND, TCP_SYN, PEER_WND, &[]), Verdict::Slow, same),
        f("rst", none, seg(RCV, SND, TCP_RST | TCP_ACK, PEER_WND, &[]), Verdict::Slow, same),
        f("in-order data", none, data(0, 300), Verdict::Redirect(meta(300)), |s| {
            s.advance(300);
            s.ts_recent = 100;
        }),
        f(
            "in-order with an overlapping prefix",
            none,
            data(-100, 300),
            Verdict::Redirect(Meta { off: PAYLOAD_OFF + 100, ..meta(200) }),
            |s| {
                s.advance(200);
                s.ts_recent = 100;
            },
        ),
        f("ethernet padding is not payload", none, padded, Verdict::Redirect(meta(10)), |s| {
            s.advance(10);
            s.ts_recent = 100;
        }),
        f(
            "payload over rcv_wnd is capped",
            |c| c.rcv_wnd = 100,
            data(0, 300),
            Verdict::Redirect(meta(100)),
            |s| {
                s.advance(100);
                s.ts_recent = 100;
            },
        ),
        f(
            "in-order data with FIN",
            none,
            seg(RCV, SND, TCP_ACK | TCP_FIN, PEER_WND, &[1; 50]),
            Verdict::Redirect(Meta { flags: FIN, ..meta(50) }),
            |s| {
                s.advance(50);
                s.rcv_nxt = s.rcv_nxt.wrapping_add(1);
                s.ack_now = 1;
                s.ts_recent = 100;
                s.fin = FIN_RCVD;
            },
        ),
        f(
            "bare FIN",
            none,
            seg(RCV, SND, TCP_ACK | TCP_FIN, PEER_WND, &[]),
            Verdict::Redirect(Meta { flags: FIN, ..meta(0) }),
            |s| {
                s.rcv_nxt = s.rcv_nxt.wrapping_add(1);
                s.ack_now = 1;
                s.ts_recent = 100;
                s.fin = FIN_RCVD;
            },
        ),
        f(
            "old data with a new FIN: the FIN is taken (Linux merges a FIN into a retransmission)",
            none,
            seg(RCV.wrapping_sub(10), SND, TCP_ACK | TCP_FIN, PEER_WND, &[1; 10]),
            Verdict::Redirect(Meta { off: PAYLOAD_OFF + 10, flags: FIN, ..meta(0) }),
            |s| {
                s.rcv_nxt = s.rcv_nxt.wrapping_add(1);
                s.ack_now = 1;
                s.ts_recent = 100;
                s.fin = FIN_RCVD;
            },
        ),
        f(
            "FIN out of order is not taken",
            none,
            seg(RCV.wrapping_add(100), SND, TCP_ACK | TCP_FIN, PEER_WND, &[1; 10]),
            Verdict::Redirect(Meta { rx_pos: RX_POS.wrapping_add(100), flags: OOO, ..meta(10) }),
            |s| {
                s.ooo = vec![(100, 10)];
                s.ack_now = 1;
            },
        ),
        f(
            "their FIN again: ACKed again, and said again (the app may have lost the first)",
            fin_rcvd,
            seg(RCV.wrapping_sub(1), SND, TCP_ACK | TCP_FIN, PEER_WND, &[]),
            Verdict::Redirect(Meta { flags: FIN, ..meta(0) }),
            |s| {
                s.ack_now = 1;
                s.ts_recent = 100;
            },
        ),
        f(
            "their FIN again with its data",
            fin_rcvd,
            seg(RCV.wrapping_sub(11), SND, TCP_ACK | TCP_FIN, PEER_WND, &[1; 10]),
            Verdict::Drop("tcp_duplicate"),
            |s| s.ack_now = 1,
        ),
        f("data after their FIN", fin_rcvd, data(0, 10), Verdict::Drop("tcp_after_fin"), same),
        f(
            "ACK after their FIN: says it again",
            fin_rcvd,
            ack(500, PEER_WND),
            Verdict::Redirect(Meta { una_pos: UNA_POS + 500, flags: FIN, ..meta(0) }),
            |s| {
                s.snd_una = SND.wrapping_add(500);
                s.ts_recent = 100;
            },
        ),
        f(
            "ACK of our FIN",
            fin_sent,
            ack(OUTSTANDING + 1, PEER_WND),
            Verdict::Redirect(Meta { una_pos: TX_POS, flags: FIN_ACKED, ..meta(0) }),
            |s| {
                s.snd_una = SND.wrapping_add(OUTSTANDING + 1);
                s.ts_recent = 100;
            },
        ),
        f(
            "ACK of the bytes before our FIN",
            fin_sent,
            ack(OUTSTANDING, PEER_WND),
            Verdict::Redirect(Meta { una_pos: TX_POS, ..meta(0) }),
            |s| {
                s.snd_una = SND.wrapping_add(OUTSTANDING);
                s.ts_recent = 100;
            },
        ),
        f(
            "data while our FIN is unacknowledged: it takes no stream position",
            fin_sent,
            data(0, 10),
            Verdict::Redirect(meta(10)),
            |s| {
                s.advance(10);
                s.ts_recent = 100;
            },
        ),
        f(
            "ACK of our FIN alone",
            |c| {
                c.fin = FIN_SENT;
                c.snd_una = c.snd_nxt;
                c.snd_nxt = c.snd_nxt.wrapping_add(1);
            },
            seg(RCV, SND.wrapping_add(OUTSTANDING + 1), TCP_ACK, PEER_WND, &[]),
            Verdict::Redirect(Meta { una_pos: TX_POS, flags: FIN_ACKED, ..meta(0) }),
            |s| {
                s.snd_una = SND.wrapping_add(OUTSTANDING + 1);
                s.ts_recent = 100;
            },
        ),
        f(
            "our FIN acknowledged again: said again (the app may have lost the first)",
            |c| {
                c.fin = FIN_SENT;
                c.snd_nxt = c.snd_nxt.wrapping_add(1);
                c.snd_una = c.snd_nxt;
            },
            seg(RCV, SND.wrapping_add(OUTSTANDING + 1), TCP_ACK, PEER_WND, &[]),
            Verdict::Redirect(Meta { una_pos: TX_POS, flags: FIN_ACKED, ..meta(0) }),
            |s| s.ts_recent = 100,
        ),
        f(
            "their FIN acknowledging ours",
            fin_sent,
            seg(RCV, SND.wrapping_add(OUTSTANDING + 1), TCP_ACK | TCP_FIN, PEER_WND, &[]),
            Verdict::Redirect(Meta { una_pos: TX_POS, flags: FIN | FIN_ACKED, ..meta(0) }),
            |s| {
                s.snd_una = SND.wrapping_add(OUTSTANDING + 1);
                s.rcv_nxt = s.rcv_nxt.wrapping_add(1);
                s.ack_now = 1;
                s.ts_recent = 100;
                s.fin = FIN_SENT | FIN_RCVD;
            },
        ),
        f(
            "beyond the window",
            none,
            data(WND.into(), 100),
            Verdict::Drop("tcp_beyond_window"),
            |s| s.ack_now = 1,
        ),
        f(
            "zero-window probe",
            |c| c.rcv_wnd = 0,
            data(0, 1),
            Verdict::Drop("tcp_beyond_window"),
            |s| s.ack_now = 1,
        ),
        f("pure duplicate", none, data(-300, 300), Verdict::Drop("tcp_duplicate"), |s| {
            s.ack_now = 1
        }),
        f(
            "out of order starts the interval",
            none,
            data(1000, 200),
            Verdict::Redirect(Meta { rx_pos: RX_POS.wrapping_add(1000), flags: OOO, ..meta(200) }),
            |s| {
                s.ooo = vec![(1000, 200)];
                s.ack_now = 1;
            },
        ),
        f(
            "out of order extends an adjacent interval",
            ooo_1000_200,
            data(1200, 100),
            Verdict::Redirect(Meta { rx_pos: RX_POS.wrapping_add(1200), flags: OOO, ..meta(100) }),
            |s| {
                s.ooo = vec![(1000, 300)];
                s.ack_now = 1;
            },
        ),
        f(
            "out of order overlapping the interval's front",
            ooo_1000_200,
            data(900, 150),
            Verdict::Redirect(Meta { rx_pos: RX_POS.wrapping_add(900), flags: OOO, ..meta(150) }),
            |s| {
                s.ooo = vec![(900, 300)];
                s.ack_now = 1;
            },
        ),
        f(
            "out of order apart from the interval: a second interval, in front",
            ooo_1000_200,
            data(2000, 100),
            Verdict::Redirect(Meta { rx_pos: RX_POS.wrapping_add(2000), flags: OOO, ..meta(100) }),
            |s| {
                s.ooo = vec![(2000, 100), (1000, 200)];
                s.ack_now = 1;
            },
        ),
        f(
            "out of order extending an older interval moves it to the front",
            |c| set_ooo(c, &[(2000, 100), (1000, 200), (3000, 10)]),
            data(1200, 50),
            Verdict::Redirect(Meta { rx_pos: RX_POS.wrapping_add(1200), flags: OOO, ..meta(50) }),
            |s| {
                s.ooo = vec![(1000, 250), (2000, 100), (3000, 10)];
                s.ack_now = 1;
            },
        ),
        f(
            "out of order bridging two intervals joins them",
            |c| set_ooo(c, &[(3000, 10), (1300, 100), (1000, 200)]),
            data(1150, 200),
            Verdict::Redirect(Meta { rx_pos: RX_POS.wrapping_add(1150), flags: OOO, ..meta(200) }),
            |s| {
                s.ooo = vec![(1000, 400), (3000, 10)];
                s.ack_now = 1;
            },
        ),
        f(
            "no room for a fifth interval: left out",
            four_intervals,
            data(5000, 100),
            Verdict::Drop("tcp_ooo_gap"),
            |s| s.ack_now = 1,
        ),
        f(
            "no room for a fifth interval, acknowledging: in order, no payload",
            four_intervals,
            seg(RCV.wrapping_add(5000), SND.wrapping_add(500), TCP_ACK, PEER_WND, &[1; 100]),
            Verdict::Redirect(Meta { una_pos: UNA_POS + 500, ..meta(0) }),
            |s| {
                s.snd_una = SND.wrapping_add(500);
                s.ack_now = 1;
            },
        ),
        f(
            "four intervals: data next to one still joins it",
            four_intervals,
            data(4100, 100),
            Verdict::Redirect(Meta { rx_pos: RX_POS.wrapping_add(4100), flags: OOO, ..meta(100) }),
            |s| {
                s.ooo = vec![(4000, 200), (1000, 100), (2000, 100), (3000, 100)];
                s.ack_now = 1;
            },
        ),
        f(
            "in-order data reaching two intervals: both merge, one past its end stays",
            |c| set_ooo(c, &[(2000, 100), (1300, 100), (1000, 200)]),
            data(0, 1350),
            Verdict::Redirect(Meta { merged: 50, flags: MERGED, ..meta(1350) }),
            |s| {
                s.advance(1400);
                s.ooo = vec![(2000, 100)];
                s.ack_now = 1;
                s.ts_recent = 100;
            },
        ),
        f(
            "duplicate inside an interval: D-SACK, its interval to the front",
            |c| {
                sack(c);
                set_ooo(c, &[(2000, 100), (1000, 200)]);
            },
            data(1020, 50),
            Verdict::Drop("tcp_duplicate"),
            |s| {
                s.ooo = vec![(1000, 200), (2000, 100)];
                s.dsack = (1020, 50);
                s.ack_now = 1;
            },
        ),
        f(
            "duplicate inside an interval without SACK: no D-SACK kept",
            ooo_1000_200,
            data(1020, 50),
            Verdict::Drop("tcp_duplicate"),
            |s| s.ack_now = 1,
        ),
        f(
            "pure duplicate with SACK: D-SACK",
            sack,
            data(-300, 300),
            Verdict::Drop("tcp_duplicate"),
            |s| {
                s.dsack = (300u32.wrapping_neg(), 300);
                s.ack_now = 1;
            },
        ),
        f(
            "overlapping prefix with SACK: D-SACK for the overlap, ACKed at once",
            sack,
            data(-100, 300),
            Verdict::Redirect(Meta { off: PAYLOAD_OFF + 100, ..meta(200) }),
            |s| {
                s.advance(200);
                s.dsack = (100u32.wrapping_neg(), 100);
                s.ack_now = 1;
                s.ts_recent = 100;
            },
        ),
        f(
            "duplicate ACK with SACK blocks reaches the app",
            sack,
            sack_ack(0, &[(500, 1000)]),
            Verdict::Redirect(Meta { off: PAYLOAD_OFF + 12, flags: SACK, ..meta(0) }),
            |s| {
                s.dupacks = 1;
                s.ts_recent = 100;
            },
        ),
        f(
            "SACK blocks on a connection without SACK are not news",
            none,
            sack_ack(0, &[(500, 1000)]),
            Verdict::Drop("tcp_consumed"),
            |s| {
                s.dupacks = 1;
                s.ts_recent = 100;
            },
        ),
        f(
            "in-order data fills the gap",
            ooo_1000_200,
            data(0, 1000),
            Verdict::Redirect(Meta { merged: 200, flags: MERGED, ..meta(1000) }),
            |s| {
                s.advance(1200);
                s.ooo = vec![];
                s.ack_now = 1;
                s.ts_recent = 100;
            },
        ),
        f(
            "ack advances snd_una",
            |c| c.dupacks = 2,
            ack(500, PEER_WND),
            Verdict::Redirect(Meta { una_pos: UNA_POS + 500, ..meta(0) }),
            |s| {
                s.snd_una = SND.wrapping_add(500);
                s.dupacks = 0;
                s.ts_recent = 100;
            },
        ),
        f(
            "ack of all outstanding data",
            none,
            ack(OUTSTANDING, PEER_WND),
            Verdict::Redirect(Meta { una_pos: TX_POS, ..meta(0) }),
            |s| {
                s.snd_una = SND.wrapping_add(OUTSTANDING);
                s.ts_recent = 100;
            },
        ),
        f(
            "ack beyond snd_nxt",
            none,
            ack(OUTSTANDING + 1, PEER_WND),
            Verdict::Drop("tcp_ack_unsent"),
            |s| s.ack_now = 1,
        ),
        f("first duplicate ack", none, ack(0, PEER_WND), Verdict::Drop("tcp_consumed"), |s| {
            s.dupacks = 1;
            s.ts_recent = 100;
        }),
        f(
            "third duplicate ack",
            |c| c.dupacks = 2,
            ack(0, PEER_WND),
            Verdict::Redirect(Meta { flags: FR, ..meta(0) }),
            |s| {
                s.dupacks = 3;
                s.ts_recent = 100;
            },
        ),
        f(
            "same ack with nothing outstanding is no duplicate",
            |c| c.snd_nxt = c.snd_una,
            ack(0, PEER_WND),
            Verdict::Drop("tcp_consumed"),
            |s| s.ts_recent = 100,
        ),
        f(
            "window update is scaled",
            |c| c.snd_wscale = 7,
            ack(0, 1000),
            Verdict::Redirect(Meta { send_wnd: 128_000, ..meta(0) }),
            |s| {
                s.snd_wnd = 128_000;
                s.ts_recent = 100;
            },
        ),
        f(
            "old ack is ignored",
            none,
            seg(RCV, SND.wrapping_sub(10), TCP_ACK, 10, &[]),
            Verdict::Drop("tcp_consumed"),
            |s| s.ts_recent = 100,
        ),
        f(
            "keepalive: no data at rcv_nxt - 1, answered with an ACK",
            none,
            seg(RCV.wrapping_sub(1), SND, TCP_ACK, PEER_WND, &[]),
            Verdict::Drop("tcp_probe"),
            |s| s.ack_now = 1,
        ),
        f(
            "Linux's zero-window probe (a keepalive into a closed window): answered",
            |c| c.rcv_wnd = 0,
            seg(RCV.wrapping_sub(1), SND, TCP_ACK, PEER_WND, &[]),
            Verdict::Drop("tcp_probe"),
            |s| s.ack_now = 1,
        ),
        f(
            "bare ack beyond the window",
            none,
            seg(RCV.wrapping_add(WND + 1), SND.wrapping_add(500), TCP_ACK, PEER_WND, &[]),
            Verdict::Drop("tcp_beyond_window"),
            |s| s.ack_now = 1,
        ),
        f(
            "bare ack at the window's right edge",
            none,
            seg(RCV.wrapping_add(WND), SND.wrapping_add(500), TCP_ACK, PEER_WND, &[]),
            Verdict::Redirect(Meta { una_pos: UNA_POS + 500, ..meta(0) }),
            |s| s.snd_una = SND.wrapping_add(500),
        ),
        f(
            "the longest segment taken (checksum over every chunk size)",
            none,
            largest,
            Verdict::Redirect(meta(60 + 1460 - 32)),
            |s| {
                s.advance(60 + 1460 - 32);
                s.ts_recent = 100;
            },
        ),
        f("odd payload length", none, data(0, 301), Verdict::Redirect(meta(301)), |s| {
            s.advance(301);
            s.ts_recent = 100;
        }),
        f("longer than our MSS allows", none, oversize, Verdict::Drop("tcp_oversize"), same),
        f("corrupted payload byte", none, bad_payload, Verdict::Drop("tcp_bad_csum"), same),
        f("corrupted ACK number", none, bad_ack, Verdict::Drop("tcp_bad_csum"), same),
        f("corrupted flags: a FIN never sent", none, bad_fin, Verdict::Drop("tcp_bad_csum"), same),
        f("corrupted bare ACK: a FIN", none, bad_bare_fin, Verdict::Drop("tcp_bad_csum"), same),
        f(
            "partial checksum (sender's offload)",
            none,
            partial,
            Verdict::Drop("tcp_bad_csum"),
            same,
        ),
        f("corrupted TTL", none, bad_ttl, Verdict::Drop("bad_ip_csum"), same),
        f("corrupted IP checksum", none, bad_ip_check, Verdict::Drop("bad_ip_csum"), same),
        f(
            "corrupted SYN of an established connection (never reaches the daemon)",
            none,
            corrupt(seg(RCV, SND, TCP_SYN, PEER_WND, &[]), TCP + 5, 0x40),
            Verdict::Drop("tcp_bad_csum"),
            same,
        ),
        f("no owner port", |c| c.owner_port = 5, data(0, 10), Verdict::Drop("tcp_no_owner"), same),
        f("tot_len below the headers", none, tot_below_headers, Verdict::Drop("short_l4"), same),
    ]
}

/// What one run returned: verdict, metadata (when any was written) and the frame.
struct Run {
    verdict: u32,
    meta: Option<etran_tcp_rx_meta>,
    frame: Vec<u8>,
}

/// Runs a frame through the entrance (which tail-calls TCP) with an xdp_md context, so the
/// metadata length comes back: the kernel copies data out from data_meta on.
fn run(h: &Harness<'_>, frame: &[u8]) -> Run {
    let mut raw = h.run(&h.objs.entrance.progs.etran_entrance, frame, LO);
    let meta_len = raw.ctx.data as usize;
    let meta = (meta_len == size_of::<etran_tcp_rx_meta>()).then(|| from_bytes(&raw.data));
    assert!(meta_len == 0 || meta.is_some(), "unexpected metadata length {meta_len}");
    Run { verdict: raw.verdict, meta, frame: raw.data.split_off(meta_len) }
}

#[test]
fn tcp_ingress_fixtures() {
    let mut storage = ObjectStorage::default();
    let h = Harness::new(&mut storage);
    for fx in fixtures() {
        let mut conn = base_conn();
        (fx.setup)(&mut conn);
        h.set_conn(&key(), &conn);
        let mut want = State::from(&conn);
        (fx.effect)(&mut want);
        let before = h.counters();
        let run = run(&h, &fx.frame);
        let after = h.counters();
        let (t0, p0, d0) = tcp_row(&before);
        let (t1, p1, d1) = tcp_row(&after);
        let name = fx.name;
        match fx.verdict {
            Verdict::Pass => {
                assert_eq!(run.verdict, XDP_PASS, "{name}: verdict");
                assert!(run.meta.is_none(), "{name}: no metadata on a passed frame");
                assert_eq!(run.frame, fx.frame, "{name}: a passed frame is untouched");
                assert_eq!((t1 - t0, p1 - p0, d1 - d0), (0, 1, 0), "{name}: counted as pass");
            }
            Verdict::Drop(reason) => {
                assert_eq!(run.verdict, XDP_DROP, "{name}: verdict");
                if reason.contains("csum") || reason == "tcp_oversize" {
                    // Dropped before anything was prepared for an app, let alone changed.
                    assert!(run.meta.is_none(), "{name}: no metadata");
                    let now = h.conn(&key());
                    assert_eq!(as_bytes(&now), as_bytes(&conn), "{name}: state byte for byte");
                }
                assert_eq!((t1 - t0, p1 - p0, d1 - d0), (0, 0, 1), "{name}: counted as drop");
                assert_eq!(
                    drop_total(&after, reason) - drop_total(&before, reason),
                    1,
                    "{name}: reason {reason}"
                );
            }
            Verdict::Slow => {
                assert_eq!(run.verdict, XDP_DROP, "{name}: verdict");
                assert!(run.meta.is_none(), "{name}: no metadata");
                assert_eq!((t1 - t0, p1 - p0, d1 - d0), (1, 0, 0), "{name}: counted as transport");
            }
            Verdict::Redirect(m) => {
                assert_eq!(run.verdict, XDP_REDIRECT, "{name}: verdict");
                assert_eq!((t1 - t0, p1 - p0, d1 - d0), (1, 0, 0), "{name}: counted as transport");
                let got = run.meta.unwrap_or_else(|| panic!("{name}: metadata written"));
                assert_eq!(got.handle, HANDLE, "{name}: handle");
                assert_eq!(Meta::from(&got), m, "{name}: metadata");
                assert_eq!(run.frame, fx.frame, "{name}: the frame itself is untouched");
            }
        }
        assert_eq!(State::from(&h.conn(&key())), want, "{name}: connection state");
    }
}

/// A segment of the fixture connection aimed at its current state `c`: sequence numbers near
/// rcv_nxt (in order, overlapping, ahead, beyond the window, far off), ACKs within and around
/// the bytes in flight, any window, flags mostly ACK (sometimes FIN, PSH; rarely SYN or RST,
/// which go to the slow path), the timestamp option or none or option garbage, 0 to 1488
/// payload bytes. Checksums right: the state machine itself is exercised.
fn live_segment(rng: &mut Rng, c: &tcp_conn) -> Vec<u8> {
    let len = [0, 0, 1, rng.below(100), rng.below(1449), 1448, 1488][rng.below(7)];
    let seq = c.rcv_nxt.wrapping_add(match rng.below(8) {
        0..=2 => 0,
        3 => rng.below(len + 2) as u32,
        4 => (rng.below(len + 2) as u32).wrapping_neg(),
        5 => rng.below(c.rcv_wnd as usize + 2000) as u32,
        6 => 1 << 31,
        _ => rng.next() as u32,
    });
    let flight = c.snd_nxt.wrapping_sub(c.snd_una);
    let ack = c.snd_una.wrapping_add(match rng.below(6) {
        0..=2 => rng.below(flight as usize + 1) as u32,
        3 => flight + 1 + rng.below(3) as u32,
        4 => (1 + rng.below(3) as u32).wrapping_neg(),
        _ => rng.next() as u32,
    });
    let mut flags = TCP_ACK;
    for (bit, one_in) in [(TCP_PSH, 2), (TCP_FIN, 40), (TCP_SYN, 50), (TCP_RST, 50)] {
        if rng.below(one_in) == 0 {
            flags |= bit;
        }
    }
    if rng.below(20) == 0 {
        flags &= !TCP_ACK;
    }
    let options = match rng.below(6) {
        0 => Vec::new(),
        // Option garbage, a whole number of words (up to the 40 bytes a header has room for).
        1 => (0..4 * (1 + rng.below(10))).map(|_| rng.next() as u8).collect(),
        // The timestamp option, TSval around ts_recent (older, equal, newer).
        _ => tcp_ts_option(c.ts_recent.wrapping_add(rng.below(5) as u32).wrapping_sub(2), 1),
    };
    let payload: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
    let window = [0, 1, 1000, 65535, rng.next() as u16][rng.below(5)];
    tcp_frame(tcp_segment(PEER_PORT, LOCAL_PORT, seq, ack, flags, window, &options, &payload))
}

/// Mutates a frame in one of the ways a corrupted or hostile segment differs from a good one;
/// half of the mutations are re-checksummed, so they reach the protocol checks.
fn mutate(rng: &mut Rng, frame: &mut Vec<u8>) {
    const TCP: usize = 14 + 20;
    let refix = rng.below(2) == 0;
    match rng.below(10) {
        // Bit flips: the TCP sequence, ack, flags and window fields mostly.
        0 | 1 => {
            for _ in 0..=rng.below(3) {
                let at = if rng.below(2) == 0 {
                    TCP + 4 + rng.below(12)
                } else {
                    rng.below(frame.len())
                };
                if at < frame.len() {
                    frame[at] ^= 1 << rng.below(8);
                }
            }
        }
        // A random byte anywhere.
        2 => {
            let at = rng.below(frame.len());
            frame[at] = rng.next() as u8;
        }
        // Truncated.
        3 => frame.truncate(14.max(rng.below(frame.len() + 1))),
        // tot_len lies.
        4 => {
            let tot = u16::from_be_bytes([frame[16], frame[17]]);
            let lie = [0, 19, 20, 39, 40, tot - 1, tot + 1, tot + 100, rng.next() as u16];
            frame[16..18].copy_from_slice(&lie[rng.below(lie.len())].to_be_bytes());
        }
        // doff lies.
        5 => frame[TCP + 12] = (rng.below(16) as u8) << 4 | (frame[TCP + 12] & 0x0f),
        // ihl lies.
        6 => frame[14] = 0x40 | rng.below(16) as u8,
        // Checksum lies (never re-checksummed).
        7 => {
            let at = if rng.below(2) == 0 { 24 } else { TCP + 16 };
            let lie = rng.next() as u16;
            frame[at..at + 2].copy_from_slice(&lie.to_be_bytes());
            return;
        }
        // Ethernet padding after the datagram (not payload, not summed).
        8 => frame.extend((0..1 + rng.below(60)).map(|_| rng.next() as u8)),
        // Another 4-tuple or protocol.
        _ => {
            let at = [23, 26 + rng.below(8), TCP + rng.below(4)][rng.below(3)];
            frame[at] ^= 1 + rng.below(255) as u8;
        }
    }
    if refix {
        fix_checksums(frame);
    }
}

/// The TCP header of a frame, where the IPv4 header's length says it starts (as much of it
/// as there is).
fn tcp_header(frame: &[u8]) -> &[u8] {
    let ihl = usize::from(frame.get(14).map_or(0, |b| b & 0x0f)) * 4;
    frame.get(14 + ihl..).unwrap_or(&[])
}

/// The TSval of a frame's timestamp option where ingress looks for it (first option).
fn tsval_of(frame: &[u8]) -> Option<u32> {
    let o = tcp_header(frame).get(20..32)?;
    (o[..4] == [1, 1, 8, 10]).then(|| u32::from_be_bytes(o[4..8].try_into().unwrap()))
}

/// 100 000 segments (fixture frames and segments aimed at the connection's current state, half
/// of them mutated: bit flips, truncations, option garbage, tot_len/doff/ihl lies, checksum lies,
/// padding, other 4-tuples; half of the mutations re-checksummed) through the entrance against
/// the live connection. After each: the verdict is one of three; a frame whose checksums fail
/// changes nothing, reaches no app and not the daemon; nothing is delivered that is not a
/// well-formed segment of the connection, and its metadata points inside it; the receive
/// window only shrinks, by what the stream advanced, and ACKs owed grow by as much; the
/// out-of-order interval lies within the window; snd_una moves forward, never past snd_nxt,
/// and only for an ACK; the peer's FIN is taken only from a segment that carries one; ts_recent
/// takes only the segment's TSval. Every frame is counted once. ETRAN_FUZZ_SEED picks the seed.
#[test]
fn tcp_ingress_survives_mutated_segments() {
    const RUNS: usize = 100_000;
    let mut storage = ObjectStorage::default();
    let h = Harness::new(&mut storage);
    let records = std::cell::Cell::new(0usize);
    let mut ring = libbpf_rs::RingBufferBuilder::new();
    ring.add(&h.objs.tcp.maps.etran_tcp_slow, |_| {
        records.set(records.get() + 1);
        0
    })
    .unwrap();
    let ring = ring.build().unwrap();
    let seeds: Vec<Vec<u8>> = fixtures().into_iter().map(|f| f.frame).collect();
    let seed = fuzz_seed("tcp ingress", 0x7c90_5eed);
    let mut rng = Rng(seed);
    let frames_before = total_frames(&h.counters());
    let mut prev = base_conn();
    let (mut redirected, mut bad_sums, mut fins) = (0, 0, 0);
    for i in 0..RUNS {
        if i % 128 == 0 {
            // A fresh connection, in one of the states the fast path holds.
            let mut c = base_conn();
            c.rcv_wnd = [WND, 1000, 0, 200_000][rng.below(4)];
            c.snd_wscale = [0, 7, 14][rng.below(3)];
            let (ts, sack) =
                (tcp_conn_flag::TCP_CONN_TIMESTAMPS.0 as u8, tcp_conn_flag::TCP_CONN_SACK.0 as u8);
            c.flags = [0, ts, ts | sack, sack][rng.below(4)];
            c.fin = [0, 0, 0, FIN_SENT, FIN_RCVD][rng.below(5)];
            if c.fin == FIN_SENT {
                c.snd_nxt = c.snd_nxt.wrapping_add(1);
            }
            h.set_conn(&key(), &c);
            prev = c;
        } else if i % 16 == 0 {
            // What egress does meanwhile: the app consumed and reopened its window, sent more
            // (unless it sent its FIN), and that carried the ACK owed.
            let mut c = prev;
            c.rcv_wnd = c.rcv_wnd.max(WND);
            if c.fin & FIN_SENT == 0 {
                let more = rng.below(3000) as u32;
                c.snd_nxt = c.snd_nxt.wrapping_add(more);
                c.tx_pos = c.tx_pos.wrapping_add(more);
            }
            c.ack_pending = 0;
            c.ack_now = 0;
            h.set_conn(&key(), &c);
            prev = c;
        }
        let mut frame = if rng.below(3) == 0 {
            seeds[rng.below(seeds.len())].clone()
        } else {
            live_segment(&mut rng, &prev)
        };
        if rng.below(2) == 0 {
            mutate(&mut rng, &mut frame);
        }
        let verifies = checksums_verify(&frame);
        let run = run(&h, &frame);
        ring.consume().unwrap();
        let to_daemon = records.replace(0);
        let c = h.conn(&key());
        let ctx = || format!("seed {seed:#x} run {i}: {prev:?} → {c:?} for {frame:02x?}");
        let unchanged = as_bytes(&c) == as_bytes(&prev);
        assert!(matches!(run.verdict, XDP_PASS | XDP_DROP | XDP_REDIRECT), "verdict: {}", ctx());
        if !verifies {
            bad_sums += 1;
            assert!(unchanged, "a frame failing its checksums changes nothing: {}", ctx());
            assert_ne!(run.verdict, XDP_REDIRECT, "and reaches no app: {}", ctx());
            assert_eq!(to_daemon, 0, "and not the daemon: {}", ctx());
        }
        if run.verdict == XDP_PASS || to_daemon > 0 {
            assert!(unchanged, "a frame for the kernel or the daemon changes nothing: {}", ctx());
        }
        let flags = tcp_header(&frame).get(13).copied().unwrap_or(0);
        assert!(c.rcv_wnd <= prev.rcv_wnd, "rcv_wnd never grows on ingress: {}", ctx());
        let advanced = c.rx_pos.wrapping_sub(prev.rx_pos);
        assert_eq!(advanced, prev.rcv_wnd - c.rcv_wnd, "stream and window together: {}", ctx());
        assert_eq!(
            c.ack_pending.wrapping_sub(prev.ack_pending),
            advanced,
            "ACKs owed grow by the bytes taken: {}",
            ctx()
        );
        let fin_taken = c.fin & FIN_RCVD != 0 && prev.fin & FIN_RCVD == 0;
        assert_eq!(prev.fin & !c.fin, 0, "FIN states are never undone: {}", ctx());
        if fin_taken {
            fins += 1;
            assert!(verifies && flags & TCP_FIN != 0, "a FIN only from a FIN: {}", ctx());
        }
        assert_eq!(
            c.rcv_nxt.wrapping_sub(prev.rcv_nxt),
            advanced + u32::from(fin_taken),
            "rcv_nxt moves by the bytes taken and the FIN: {}",
            ctx()
        );
        assert!(usize::from(c.ooo_n) <= c.ooo.len(), "interval count in bounds: {}", ctx());
        let held = &c.ooo[..usize::from(c.ooo_n).min(c.ooo.len())];
        for (i, r) in held.iter().enumerate() {
            let (start, end) = (r.start.wrapping_sub(c.rcv_nxt), r.end.wrapping_sub(c.rcv_nxt));
            assert!(
                start > 0 && start < end && end <= c.rcv_wnd,
                "interval {i} lies within the window past rcv_nxt: {}",
                ctx()
            );
            for o in &held[i + 1..] {
                let (a, b) = (o.start.wrapping_sub(c.rcv_nxt), o.end.wrapping_sub(c.rcv_nxt));
                assert!(b < start || a > end, "intervals never touch: {}", ctx());
            }
        }
        assert!(
            not_after(prev.snd_una, c.snd_una) && not_after(c.snd_una, c.snd_nxt),
            "snd_una moves forward, never past snd_nxt: {}",
            ctx()
        );
        if c.snd_una != prev.snd_una {
            assert!(flags & TCP_ACK != 0, "only an ACK moves snd_una: {}", ctx());
        }
        assert_eq!(c.snd_nxt, prev.snd_nxt, "ingress never sends: {}", ctx());
        if c.ts_recent != prev.ts_recent {
            assert_eq!(Some(c.ts_recent), tsval_of(&frame), "ts_recent is a TSval: {}", ctx());
        }
        if run.verdict == XDP_REDIRECT {
            redirected += 1;
            assert!(verifies, "only intact frames reach the app: {}", ctx());
            let ports = [PEER_PORT.to_be_bytes(), LOCAL_PORT.to_be_bytes()].concat();
            assert_eq!(tcp_header(&frame)[..4], ports, "the connection's segment: {}", ctx());
            let m = run.meta.expect("a redirected frame carries metadata");
            assert_eq!(m.handle, HANDLE);
            if m.flags & OOO == 0 {
                assert_eq!(m.rx_pos, prev.rx_pos, "an in-order frame starts at rx_pos: {}", ctx());
            }
            if m.flags & FIN != 0 {
                assert!(c.fin & FIN_RCVD != 0, "FIN said only after the FIN: {}", ctx());
            }
            let flight = c.snd_nxt.wrapping_sub(c.snd_una)
                - u32::from(c.fin & FIN_SENT != 0 && c.snd_una != c.snd_nxt);
            assert_eq!(m.una_pos, c.tx_pos.wrapping_sub(flight), "snd_una's position: {}", ctx());
            let room = c.cwnd_edge.wrapping_sub(c.snd_una);
            let room = if (room as i32) > 0 { room } else { 0 };
            assert_eq!(m.send_wnd, c.snd_wnd.min(room), "the send window: {}", ctx());
            let tot = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
            assert!(
                usize::from(m.payload_off) + usize::from(m.payload_len) <= 14 + tot,
                "payload within the datagram (not the padding): {}",
                ctx()
            );
        }
        prev = c;
    }
    // Every frame counted once, whatever became of it.
    assert_eq!(total_frames(&h.counters()) - frames_before, RUNS as u64);
    eprintln!(
        "{RUNS} segments: {redirected} delivered, {bad_sums} with bad checksums, {fins} FINs"
    );
    assert!(redirected > RUNS / 10 && bad_sums > RUNS / 5 && fins > 50, "the mix exercised all");
}
