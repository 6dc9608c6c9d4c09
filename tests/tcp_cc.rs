//! Congestion control and ECN in the datapath (tcp_cc.h), BPF_PROG_TEST_RUN fixtures: the
//! sender's window through ingress (slow start, congestion avoidance, DCTCP's alpha over
//! observation windows with given mark fractions, exact in fixed point, the cut by alpha / 2
//! once per window), through egress (the loss signal of a RETRANSMIT, the timeout signal of
//! DATA from snd_una, CWR on the next segment with payload, new data refused beyond the
//! window's edge), the send window in RX metadata, and the receiver's echo of CE marks as ECE
//! (ingress's CE state, ack_now on a change, ECE on the generator's ACKs and on data). Needs
//! root (CAP_BPF).
mod common;

use std::mem::size_of;

use common::{fixture::drop_total, packet::*, tcp::*};
use etran::{
    backend::compat::pump::TEMPLATE_LEN,
    bpf::tcp::types::{
        etran_tcp_ack_queued, etran_tcp_rx_meta, etran_tcp_tx_hdr, etran_tcp_tx_intent,
        tcp_cc_flag, tcp_conn, tcp_conn_flag,
    },
    loader::ObjectStorage,
    transport::tcp::seq::una_pos,
};
use libbpf_rs::MapCore;

const MSS: u16 = 1000;
/// Our sequence numbers start short of the 2^32 wrap: windows and edges cross it.
const SND: u32 = 0xffff_e000;
const RCV: u32 = 0x7000_0000;
/// Stream position of snd_nxt at the start.
const TX_POS: u32 = 0x10_0000;
/// The peer's window field, scaled by 4: about 1 MB, out of the way unless a case lowers it.
const PEER_WND: u16 = 0xffff;
const PEER_WSCALE: u8 = 4;

const TS: u8 = tcp_conn_flag::TCP_CONN_TIMESTAMPS.0 as u8;
const ECN: u8 = tcp_conn_flag::TCP_CONN_ECN.0 as u8;
const SACK: u8 = tcp_conn_flag::TCP_CONN_SACK.0 as u8;
const REDUCED: u8 = tcp_cc_flag::TCP_CC_REDUCED.0 as u8;
const TIMEOUT: u8 = tcp_cc_flag::TCP_CC_TIMEOUT.0 as u8;
const CWR: u8 = tcp_cc_flag::TCP_CC_CWR.0 as u8;
const CE: u8 = tcp_cc_flag::TCP_CC_CE.0 as u8;
const ONE: u32 = 1 << 16;

const DATA: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_DATA.0 as u8;
const ACK: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_ACK.0 as u8;
const RETRANSMIT: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_RETRANSMIT.0 as u8;
const IMMEDIATE: u8 = etran_tcp_ack_queued::ETRAN_TCP_ACK_IMMEDIATE.0 as u8;
const DELAYED: u8 = etran_tcp_ack_queued::ETRAN_TCP_ACK_DELAYED.0 as u8;

/// IPv4 ECN field values.
const ECT0: u8 = 0x02;
const CE_MARK: u8 = 0x03;

/// A connection with `flight` bytes in flight and a congestion window of `cwnd` bytes, as the
/// daemon starts one (slow start, alpha 1); ECN negotiated when `ecn`.
fn conn(flight: u32, cwnd: u32, ecn: bool) -> tcp_conn {
    let c = tcp_conn {
        handle: 0xcc,
        rcv_nxt: RCV,
        rcv_wnd: 100_000,
        snd_una: SND,
        snd_nxt: SND.wrapping_add(flight),
        snd_wnd: u32::from(PEER_WND) << PEER_WSCALE,
        tx_pos: TX_POS,
        snd_wscale: PEER_WSCALE,
        mss: MSS,
        flags: TS | if ecn { ECN } else { 0 },
        local_mac: LOCAL_MAC,
        remote_mac: PEER_MAC,
        ..Default::default()
    };
    with_cwnd(c, cwnd)
}

/// A segment from the peer: its timestamp option, checksums right, `tos` in the IPv4 header.
fn peer_segment(seq: u32, ack: u32, flags: u8, wnd: u16, tos: u8, payload: &[u8]) -> Vec<u8> {
    let opts = tcp_ts_option(100, 1);
    let tcp = tcp_segment(PEER_PORT, LOCAL_PORT, seq, ack, flags, wnd, &opts, payload);
    let tcp = with_tcp_checksum(PEER_IP, LOCAL_IP, tcp);
    let ip = Ipv4 { tos, src: PEER_IP, dst: LOCAL_IP, ..Ipv4::default() };
    eth_with(LOCAL_MAC, PEER_MAC, ETH_P_IP, &ipv4_with(&ip, &tcp))
}

/// The peer's pure ACK of our bytes up to SND + `upto`, with ECE when `ece`.
fn ack_to(upto: u32, ece: bool) -> Vec<u8> {
    let flags = TCP_ACK | if ece { TCP_ECE } else { 0 };
    peer_segment(RCV, SND.wrapping_add(upto), flags, PEER_WND, 0, &[])
}

/// The peer's duplicate ACK (at SND) with SACK blocks (offsets from SND), as Linux sends it.
fn sack_ack(blocks: &[(u32, u32)]) -> Vec<u8> {
    let mut opts = tcp_ts_option(100, 1);
    opts.extend_from_slice(&[1, 1, 5, 2 + 8 * blocks.len() as u8]);
    for &(l, r) in blocks {
        opts.extend_from_slice(&SND.wrapping_add(l).to_be_bytes());
        opts.extend_from_slice(&SND.wrapping_add(r).to_be_bytes());
    }
    let tcp = tcp_segment(PEER_PORT, LOCAL_PORT, RCV, SND, TCP_ACK, PEER_WND, &opts, &[]);
    let tcp = with_tcp_checksum(PEER_IP, LOCAL_IP, tcp);
    let ip = Ipv4 { src: PEER_IP, dst: LOCAL_IP, ..Ipv4::default() };
    eth_with(LOCAL_MAC, PEER_MAC, ETH_P_IP, &ipv4_with(&ip, &tcp))
}

/// The peer's in-order data (acknowledging nothing new), ECN field `tos`.
fn peer_data(seq_off: u32, len: usize, tos: u8) -> Vec<u8> {
    let seq = RCV.wrapping_add(seq_off);
    peer_segment(seq, SND, TCP_ACK | TCP_PSH, PEER_WND, tos, &vec![0x5a; len])
}

/// A TX frame from the app: `intent` with `len` payload bytes at stream position `tx_pos`.
fn tx(intent: u8, tx_pos: u32, len: u16) -> Vec<u8> {
    let h = etran_tcp_tx_hdr { key: key(), tx_pos, consumed: 0, len, intent, reserved: 0 };
    let mut f = as_bytes(&h).to_vec();
    f.extend(std::iter::repeat_n(0x33, len.into()));
    f
}

struct Bed<'a> {
    h: Harness<'a>,
}

impl Bed<'_> {
    fn set(&self, c: &tcp_conn) {
        self.h.set_conn(&key(), c);
    }

    fn conn(&self) -> tcp_conn {
        self.h.conn(&key())
    }

    /// Runs a frame from the peer through the entrance (as `etran up` links it): the verdict
    /// and the RX metadata, if the frame went to the app.
    fn ingress(&self, frame: &[u8]) -> (u32, Option<etran_tcp_rx_meta>) {
        let raw = self.h.run(&self.h.objs.entrance.progs.etran_entrance, frame, LO);
        let meta = (raw.ctx.data as usize == size_of::<etran_tcp_rx_meta>())
            .then(|| from_bytes::<etran_tcp_rx_meta>(&raw.data));
        (raw.verdict, meta)
    }

    /// The send window the RX metadata of the peer's `frame` carries (the frame must reach the
    /// app).
    fn send_wnd_after(&self, frame: &[u8]) -> u32 {
        let (verdict, meta) = self.ingress(frame);
        assert_eq!(verdict, XDP_REDIRECT, "delivered to the app");
        meta.expect("metadata").send_wnd
    }

    /// Runs an app's TX frame through egress: the TCP segment sent, or None (dropped).
    fn egress(&self, frame: &[u8]) -> Option<Vec<u8>> {
        let run = self.h.run(&self.h.objs.tcp.progs.etran_tcp_egress, frame, LO);
        (run.verdict == XDP_REDIRECT).then(|| {
            checked_tcp_segment(&run.data);
            run.data
        })
    }

    /// Egress sent `n` more new bytes (as a DATA frame at tx_pos would): moves snd_nxt and
    /// tx_pos without the windows' checks, which the cases below test on their own.
    fn sent(&self, n: u32) {
        let mut c = self.conn();
        c.snd_nxt = c.snd_nxt.wrapping_add(n);
        c.tx_pos = c.tx_pos.wrapping_add(n);
        self.set(&c);
    }

    /// Pops every key off both ACK queues.
    fn drain_queues(&self) {
        let maps = &self.h.objs.tcp.maps;
        for q in [&maps.etran_tcp_ack_queue, &maps.etran_tcp_dack_queue] {
            while q.lookup_and_delete(&[]).unwrap().is_some() {}
        }
    }

    /// One generator run popping queue `q`: the frame it sent, if any.
    fn gen(&self, q: u8) -> Option<Vec<u8>> {
        let mut template = [0u8; TEMPLATE_LEN];
        template[0] = q;
        let run = self.h.run(&self.h.objs.tcp.progs.etran_tcp_gen, &template, LO);
        (run.verdict == XDP_REDIRECT).then(|| {
            checked_tcp_segment(&run.data);
            run.data
        })
    }
}

fn bed(storage: &mut ObjectStorage) -> Bed<'_> {
    Bed { h: Harness::new(storage) }
}

/// TCP flags of a frame (Ethernet, IPv4 without options, TCP).
fn tcp_flags(frame: &[u8]) -> u8 {
    frame[14 + 20 + 13]
}

/// The IPv4 header's ECN field.
fn ecn_field(frame: &[u8]) -> u8 {
    frame[14 + 1] & 3
}

/// DCTCP's estimator as RFC 8257 3.3 defines it, in alpha's fixed point (2^-16, g = 1/16):
/// alpha * (1 - g) + g * marked / acked.
fn next_alpha(alpha: u32, marked: u32, acked: u32) -> u32 {
    alpha - (alpha >> 4) + ((u64::from(marked) << 12) / u64::from(acked)) as u32
}

#[test]
fn slow_start_grows_by_the_bytes_acked_capped_per_ack() {
    let mut storage = ObjectStorage::default();
    let b = bed(&mut storage);
    b.set(&conn(10_000, 10_000, false));
    // The window grows by what each ACK acknowledges; its edge, and the window the app is
    // told, with it.
    assert_eq!(b.send_wnd_after(&ack_to(2000, false)), 12_000);
    let c = b.conn();
    assert_eq!((c.cwnd, c.cwnd_edge), (12_000, SND.wrapping_add(2000 + 12_000)));
    // A stretch ACK of 9 segments grows it by 8 at most (RFC 3465's L).
    b.sent(6000);
    assert_eq!(b.send_wnd_after(&ack_to(11_000, false)), 20_000);
    assert_eq!(b.conn().cwnd, 20_000);
    // Up to ssthresh, not past it.
    let mut c = conn(10_000, 10_000, false);
    c.ssthresh = 11_000;
    b.set(&c);
    b.send_wnd_after(&ack_to(5000, false));
    assert_eq!(b.conn().cwnd, 11_000);
    // Less than half the window in flight: the app did not use it, so it does not grow.
    b.set(&conn(4000, 10_000, false));
    assert_eq!(b.send_wnd_after(&ack_to(2000, false)), 10_000);
    assert_eq!(b.conn().cwnd, 10_000);
    // Never past the largest window the peer's field can announce (65535 unscaled).
    let mut c = conn(60_000, 60_000, false);
    c.snd_wscale = 0;
    c.snd_wnd = 65_535;
    b.set(&c);
    b.send_wnd_after(&ack_to(8000, false));
    assert_eq!(b.conn().cwnd, 65_535);
}

#[test]
fn congestion_avoidance_adds_one_segment_per_window_acked() {
    let mut storage = ObjectStorage::default();
    let b = bed(&mut storage);
    let mut c = conn(10_000, 10_000, false);
    c.ssthresh = 10_000;
    b.set(&c);
    for (upto, cwnd, ca_acked) in [(2500, 10_000, 2500), (5000, 10_000, 5000), (7500, 10_000, 7500)]
    {
        b.send_wnd_after(&ack_to(upto, false));
        let c = b.conn();
        assert_eq!((c.cwnd, c.ca_acked), (cwnd, ca_acked), "ACK to {upto}");
        b.sent(2500);
    }
    // A window's worth acknowledged: one MSS more.
    b.send_wnd_after(&ack_to(10_000, false));
    let c = b.conn();
    assert_eq!((c.cwnd, c.ca_acked), (11_000, 0));
}

#[test]
fn the_metadata_carries_the_smaller_of_the_peer_window_and_the_congestion_window() {
    let mut storage = ObjectStorage::default();
    let b = bed(&mut storage);
    // The congestion window is the smaller: its room from snd_una.
    b.set(&conn(4000, 10_000, false));
    assert_eq!(b.send_wnd_after(&ack_to(1000, false)), 10_000);
    // The peer's window is the smaller: a window update to a field of 375 << 4.
    b.set(&conn(0, 10_000, false));
    assert_eq!(b.send_wnd_after(&peer_segment(RCV, SND, TCP_ACK, 375, 0, &[])), 6000);
}

#[test]
fn dctcp_alpha_follows_the_marked_fraction_once_per_window() {
    let mut storage = ObjectStorage::default();
    let b = bed(&mut storage);
    // Windows of 10 segments; the first `marked` ACKs of each carry ECE.
    b.set(&conn(10_000, 1 << 20, true));
    let mut alpha = ONE;
    let mut base = 0u32;
    let mut seen = Vec::new();
    for marked in [3u32, 0, 10, 1, 5] {
        // The next window's data goes out before this one's ACKs come back.
        b.sent(10_000);
        for k in 0..10 {
            let upto = base + (k + 1) * u32::from(MSS);
            b.ingress(&ack_to(upto, k < marked));
            let c = b.conn();
            if k < 9 {
                assert_eq!(c.alpha, alpha, "alpha holds within a window ({marked} marked)");
            }
        }
        alpha = next_alpha(alpha, marked * u32::from(MSS), 10_000);
        let c = b.conn();
        assert_eq!(c.alpha, alpha, "alpha after a window with {marked} of 10 marked");
        assert_eq!(c.dctcp_end, SND.wrapping_add(base + 20_000), "the next window's end");
        assert_eq!((c.dctcp_acked, c.dctcp_marked), (0, 0));
        seen.push(c.alpha);
        base += 10_000;
    }
    // The same numbers written out: 1 → 0.956 (3 of 10) → 0.896 → 0.903 (all) → 0.853 → 0.831.
    assert_eq!(seen, [62_668, 58_752, 59_176, 55_887, 54_443]);
}

#[test]
fn ece_cuts_the_window_by_half_alpha_once_per_window_of_data() {
    let mut storage = ObjectStorage::default();
    let b = bed(&mut storage);
    let mut c = conn(20_000, 20_000, true);
    c.alpha = ONE / 2;
    b.set(&c);
    // cwnd * (1 - alpha / 2) = 20000 * 0.75; CWR asked for; the edge stays where it was, so
    // the app is still told the room it may have read before the cut.
    assert_eq!(b.send_wnd_after(&ack_to(1000, true)), 19_000);
    let c = b.conn();
    assert_eq!((c.cwnd, c.ssthresh), (15_000, 15_000));
    assert_eq!(c.cc, REDUCED | CWR);
    assert_eq!((c.cc_recover, c.cwnd_edge), (SND.wrapping_add(20_000), SND.wrapping_add(20_000)));
    // More ECE in the same window of data: no second cut, and no growth either.
    b.ingress(&ack_to(2000, true));
    b.ingress(&ack_to(3000, false));
    let c = b.conn();
    assert_eq!((c.cwnd, c.cc), (15_000, REDUCED | CWR));
    // The window of data ends: alpha takes the window's fraction (2000 of 20000 marked), the
    // cut is over, and congestion avoidance (cwnd = ssthresh) counts the 17000 bytes acked.
    b.sent(10_000);
    b.ingress(&ack_to(20_000, false));
    let c = b.conn();
    assert_eq!(c.alpha, next_alpha(ONE / 2, 2000, 20_000));
    assert_eq!(c.alpha, 31_129);
    assert_eq!((c.cwnd, c.cc & REDUCED, c.ca_acked), (16_000, 0, 17_000 - 15_000));
    // The next ECE cuts again, with the new alpha: 16000 * (1 - 31129 / 2^17).
    b.ingress(&ack_to(21_000, true));
    let c = b.conn();
    assert_eq!(c.cwnd, 16_000 - ((16_000u64 * 31_129) >> 17) as u32);
    assert_eq!(c.cwnd, 12_201);
    assert_eq!(c.cc_recover, SND.wrapping_add(30_000));
    // The floor is two segments.
    let mut c = conn(2500, 2500, true);
    c.alpha = ONE;
    b.set(&c);
    b.ingress(&ack_to(500, true));
    assert_eq!(b.conn().cwnd, 2000);
}

#[test]
fn cwr_goes_on_the_next_segment_with_payload_only() {
    let mut storage = ObjectStorage::default();
    let b = bed(&mut storage);
    let mut c = conn(0, 20_000, true);
    c.ack_pending = 100; // an ACK is owed
    b.set(&c);
    // An ECE cut asks for CWR; a pure ACK does not carry it.
    b.ingress(&ack_to(0, true));
    assert_eq!(b.conn().cc & CWR, CWR);
    let ack = b.egress(&tx(ACK, TX_POS, 0)).expect("sent");
    assert_eq!((tcp_flags(&ack) & TCP_CWR, ecn_field(&ack)), (0, 0), "pure ACK: no CWR, not ECT");
    assert_eq!(b.conn().cc & CWR, CWR, "still owed");
    // The next data segment carries it, and only that one.
    let first = b.egress(&tx(DATA, TX_POS, 100)).expect("sent");
    assert_eq!((tcp_flags(&first) & TCP_CWR, ecn_field(&first)), (TCP_CWR, ECT0));
    assert_eq!(b.conn().cc & CWR, 0);
    let second = b.egress(&tx(DATA, TX_POS + 100, 100)).expect("sent");
    assert_eq!((tcp_flags(&second) & TCP_CWR, ecn_field(&second)), (0, ECT0));
}

#[test]
fn losses_halve_the_window_once_per_window_of_data() {
    let mut storage = ObjectStorage::default();
    let b = bed(&mut storage);
    b.set(&conn(20_000, 20_000, false));
    let una = una_pos(&b.conn());
    // The app resends a segment it found lost: the loss signal.
    let seg = b.egress(&tx(RETRANSMIT, una, 1000)).expect("a retransmission is never held back");
    assert_eq!(tcp_flags(&seg) & TCP_CWR, 0, "no CWR without ECN");
    let c = b.conn();
    assert_eq!((c.cwnd, c.ssthresh, c.cc), (10_000, 10_000, REDUCED));
    assert_eq!(c.cc_recover, SND.wrapping_add(20_000));
    // More resends of the same window of data: no second cut.
    b.egress(&tx(RETRANSMIT, una + 5000, 1000)).expect("sent");
    assert_eq!(b.conn().cwnd, 10_000);
    // Everything sent before the cut acknowledged (congestion avoidance adds a segment for
    // them): the next loss cuts again.
    b.sent(5000);
    b.ingress(&ack_to(20_000, false));
    assert_eq!((b.conn().cc, b.conn().cwnd), (0, 11_000));
    let una = una_pos(&b.conn());
    b.egress(&tx(RETRANSMIT, una, 1000)).expect("sent");
    let c = b.conn();
    assert_eq!((c.cwnd, c.ssthresh, c.cc_recover), (5500, 5500, SND.wrapping_add(25_000)));
    // Two segments at least. With ECN the cut asks for CWR, which the resend itself carries.
    b.set(&conn(3000, 3000, true));
    let seg = b.egress(&tx(RETRANSMIT, una_pos(&b.conn()), 1000)).expect("sent");
    assert_eq!(tcp_flags(&seg) & TCP_CWR, TCP_CWR);
    let c = b.conn();
    assert_eq!((c.cwnd, c.cc), (2000, REDUCED));
}

/// After a loss's cut nothing new fits until the hole is filled (egress counts SACKed bytes as
/// in flight), but each segment the peer got out of order left the network: one more may go
/// in (limited transmit, fast recovery's inflation), so segments sent after a retransmission
/// can reveal its loss.
#[test]
fn each_segment_delivered_out_of_order_lets_another_in() {
    let mut storage = ObjectStorage::default();
    let b = bed(&mut storage);
    let mut c = conn(10_000, 10_000, false);
    c.flags |= SACK;
    b.set(&c);
    b.egress(&tx(RETRANSMIT, una_pos(&c), 1000)).expect("sent");
    assert_eq!(b.conn().cwnd, 5000);
    assert!(b.egress(&tx(DATA, TX_POS, 1)).is_none(), "the window is full");
    // A duplicate ACK with SACK blocks: a segment's room, told to the app.
    assert_eq!(b.send_wnd_after(&sack_ack(&[(1000, 2000)])), 11_000);
    assert!(b.egress(&tx(DATA, TX_POS, 1000)).is_some());
    assert!(b.egress(&tx(DATA, TX_POS + 1000, 1)).is_none());
    // SACK blocks count even when the window moved (a Linux receiver's often does).
    let mut moved = sack_ack(&[(1000, 3000)]);
    moved[14 + 20 + 14..14 + 20 + 16].copy_from_slice(&(PEER_WND - 1).to_be_bytes());
    moved[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&[0, 0]);
    let seg = with_tcp_checksum(PEER_IP, LOCAL_IP, moved[34..].to_vec());
    moved[34..].copy_from_slice(&seg);
    assert_eq!(b.send_wnd_after(&moved), 12_000);
    // A plain duplicate ACK counts; a bare window update (no SACK, the window moved) does not.
    let mut c = conn(10_000, 10_000, false);
    c.snd_wnd = u32::from(PEER_WND - 1) << PEER_WSCALE;
    b.set(&c);
    b.ingress(&ack_to(0, false));
    assert_eq!(b.conn().cwnd_edge, SND.wrapping_add(10_000), "a window update");
    b.ingress(&ack_to(0, false));
    assert_eq!(b.conn().cwnd_edge, SND.wrapping_add(11_000), "a duplicate ACK");
}

#[test]
fn a_timeout_resend_drops_the_window_to_one_segment() {
    let mut storage = ObjectStorage::default();
    let b = bed(&mut storage);
    b.set(&conn(20_000, 20_000, false));
    let una = una_pos(&b.conn());
    // DATA from snd_una with bytes in flight: the app's retransmission timeout fired.
    let seg = b.egress(&tx(DATA, una, 1000)).expect("sent");
    assert_eq!(u32::from_be_bytes(seg[38..42].try_into().unwrap()), SND, "resent at snd_una");
    let c = b.conn();
    assert_eq!((c.cwnd, c.ssthresh, c.cc), (1000, 10_000, TIMEOUT));
    assert_eq!(c.cc_recover, SND.wrapping_add(20_000));
    // Its further resends, and losses found meanwhile, change nothing.
    b.egress(&tx(DATA, una, 1000)).expect("sent");
    b.egress(&tx(RETRANSMIT, una + 1000, 1000)).expect("sent");
    assert_eq!((b.conn().cwnd, b.conn().ssthresh), (1000, 10_000));
    // Slow start from one segment goes on during the recovery...
    b.ingress(&ack_to(1000, false));
    assert_eq!((b.conn().cwnd, b.conn().cc), (2000, TIMEOUT));
    // ...which ends once everything sent before the timeout is acknowledged.
    b.ingress(&ack_to(20_000, false));
    assert_eq!(b.conn().cc, 0);
    // A timeout during a loss's recovery keeps the ssthresh that cut set.
    b.set(&conn(20_000, 20_000, false));
    let una = una_pos(&b.conn());
    b.egress(&tx(RETRANSMIT, una, 1000)).expect("sent");
    b.egress(&tx(DATA, una, 1000)).expect("sent");
    let c = b.conn();
    assert_eq!((c.cwnd, c.ssthresh, c.cc), (1000, 10_000, TIMEOUT));
    // DATA from snd_una with nothing in flight is new data, no timeout.
    b.set(&conn(0, 20_000, false));
    b.egress(&tx(DATA, TX_POS, 1000)).expect("sent");
    let c = b.conn();
    assert_eq!((c.cwnd, c.cc), (20_000, 0));
}

#[test]
fn egress_refuses_new_data_beyond_the_windows_edge() {
    let mut storage = ObjectStorage::default();
    let b = bed(&mut storage);
    b.set(&conn(4000, 5000, false));
    assert!(b.egress(&tx(DATA, TX_POS, 1000)).is_some(), "fills the window exactly");
    let before = b.h.counters();
    assert!(b.egress(&tx(DATA, TX_POS + 1000, 1)).is_none(), "one byte past it");
    let after = b.h.counters();
    assert_eq!(drop_total(&after, "tcp_tx_cwnd") - drop_total(&before, "tcp_tx_cwnd"), 1);
    assert_eq!(b.conn().tx_pos, TX_POS + 1000, "the refused byte did not count as sent");
    // A resend is never held back by the window.
    assert!(b.egress(&tx(RETRANSMIT, una_pos(&b.conn()), 1000)).is_some());
    // After a cut the edge holds: new data may still fill the room the app was told before
    // it (it may have read that window already), and not a byte more.
    let mut c = conn(15_000, 20_000, true);
    c.alpha = ONE;
    b.set(&c);
    assert_eq!(b.send_wnd_after(&ack_to(1000, true)), 19_000);
    assert_eq!(b.conn().cwnd, 10_000);
    for k in 0..5 {
        assert!(b.egress(&tx(DATA, TX_POS + k * 1000, 1000)).is_some(), "segment {k}");
    }
    assert!(b.egress(&tx(DATA, TX_POS + 5000, 1)).is_none());
}

#[test]
fn ce_marks_are_echoed_as_ece_and_a_change_is_acknowledged_at_once() {
    let mut storage = ObjectStorage::default();
    let b = bed(&mut storage);
    b.set(&conn(0, 20_000, true));
    b.drain_queues();
    // A CE-marked data segment: the CE state is set and the ACK is due at once, with ECE.
    b.ingress(&peer_data(0, 100, CE_MARK));
    let c = b.conn();
    assert_eq!((c.cc & CE, c.ack_now), (CE, 1));
    let ack = b.gen(IMMEDIATE).expect("an ACK at once");
    assert_eq!(tcp_flags(&ack), TCP_ACK | TCP_ECE);
    assert_eq!(ecn_field(&ack), 0, "a pure ACK is not ECN-capable");
    // More CE: no change, so the ACK may wait (delayed), and still says ECE.
    b.drain_queues();
    b.ingress(&peer_data(100, 100, CE_MARK));
    let c = b.conn();
    assert_eq!((c.cc & CE, c.ack_now, c.ack_queued), (CE, 0, DELAYED));
    let ack = b.gen(DELAYED).expect("the delayed ACK");
    assert_eq!(tcp_flags(&ack), TCP_ACK | TCP_ECE);
    // Data the app sends meanwhile carries ECE too.
    let seg = b.egress(&tx(DATA, TX_POS, 10)).expect("sent");
    assert_eq!(tcp_flags(&seg) & TCP_ECE, TCP_ECE);
    // An unmarked segment clears the state: due at once again, without ECE.
    b.drain_queues();
    b.ingress(&peer_data(200, 100, ECT0));
    let c = b.conn();
    assert_eq!((c.cc & CE, c.ack_now), (0, 1));
    let ack = b.gen(IMMEDIATE).expect("an ACK at once");
    assert_eq!(tcp_flags(&ack), TCP_ACK);
}

#[test]
fn without_ecn_marks_are_neither_echoed_nor_obeyed() {
    let mut storage = ObjectStorage::default();
    let b = bed(&mut storage);
    b.set(&conn(5000, 10_000, false));
    b.drain_queues();
    b.ingress(&peer_data(0, 100, CE_MARK));
    let c = b.conn();
    assert_eq!((c.cc, c.ack_now, c.ack_queued), (0, 0, DELAYED), "no CE state, no ACK at once");
    let ack = b.gen(DELAYED).expect("the delayed ACK");
    assert_eq!(tcp_flags(&ack), TCP_ACK, "no ECE");
    let seg = b.egress(&tx(DATA, TX_POS, 10)).expect("sent");
    assert_eq!((tcp_flags(&seg) & TCP_ECE, ecn_field(&seg)), (0, 0), "neither ECE nor ECT");
    // ECE from a peer that should not send it: no cut, alpha untouched.
    b.ingress(&ack_to(2000, true));
    let c = b.conn();
    assert_eq!((c.cwnd, c.alpha, c.cc), (12_000, ONE, 0));
}
