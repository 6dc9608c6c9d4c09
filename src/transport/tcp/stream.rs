//! The TCP byte-stream engine of one connection: pure logic, no sockets.
//!
//! Positions are the kernel's `rx_pos` / `tx_pos`: free-running `u32` stream offsets (they wrap;
//! every comparison is a wrapping difference). The kernel keeps the sequence numbers; the app
//! only ever sees positions.
//!
//! Receive side: a ring buffer of `rcv_buf` bytes covering positions `[read_pos, read_pos +
//! rcv_buf)`, which is exactly what the kernel's receive window allows (`rcv_wnd` = free room
//! past the in-order frontier, reopened by the app's `consumed` reports). In-order payload is
//! written at its `rx_pos` and moves the readable frontier; out-of-order payload
//! (`OUT_OF_ORDER`) is written at its position but stays unreadable until a later in-order frame
//! carries `MERGED`, whose `merged` bytes beyond its own payload then become readable. `FIN`
//! ends the stream after the in-order data. An in-order frame (one not `OUT_OF_ORDER`) always
//! starts where the readable bytes end, and a merge covers only out-of-order bytes the app
//! holds, as long as frames reach the app in the order ingress applied them. They need not: the
//! daemon's replay of segments that came right behind the handshake runs ingress on its CPU while
//! the NIC's NAPI runs it on another, and either may hand its frame to the socket first. So the
//! frontier moves over every byte held up to where ingress had the stream in order (what the
//! frames' positions and merges said), and a gap before that waits for the frame carrying it. A
//! gap still open after [`REORDER_LIMIT`] means a data frame the kernel accepted, and
//! acknowledged, was lost on the way to the app (its fill ring ran empty, say). The peer will not
//! resend it, so the connection fails with `ConnectionAborted` ([`TimerEvent::RxHole`], or
//! [`RxEffect::lost`] when a frame finds it) rather than hang or read garbage.
//! [`Stream::read`] consumes bytes;
//! [`Stream::take_report`] hands the read position to the next TX header (a position, not a
//! count, so that a frame lost on its way to egress takes no window with it), and
//! [`Stream::window_update_due`] says when a pure `WINDOW_UPDATE` is worth a frame: only when
//! the window the peer still has is down to half the advertisable buffer and the report at least
//! doubles it ([`crate::transport::tcp::window::update_due`]), and never after the peer's FIN. Bytes
//! received stay readable after the connection failed (a reset, say): [`Stream::read`] returns
//! them before the caller reports the error.
//!
//! Send side: [`Stream::write`] appends to a bounded send buffer holding every byte from
//! `snd_una` (oldest unacknowledged) on. [`Stream::next_frame`] cuts the unsent bytes into
//! frames of at most `mss` payload behind an `etran_tcp_tx_hdr` (intent DATA at `snd_nxt`),
//! never past the send window (`snd_nxt - snd_una + len <= send_wnd`, the check egress makes).
//! While the caller holds the tail ([`Stream::hold_tail`]: small writes within one pass of its
//! loop), new bytes short of a segment wait for the next write or the end of the pass, so that
//! consecutive small writes leave as one segment; [`Stream::set_nodelay`] turns that off.
//! The kernel runs congestion control (`tcp_cc.h`: slow start, congestion avoidance, DCTCP's
//! reaction to ECN marks, cuts on the losses and timeouts this engine signals by resending),
//! and each RX frame's metadata says the window it leaves: `send_wnd`, the peer's window and
//! the congestion window, the less. Its edge never moves back, so a window read from an older
//! frame is never one egress refuses. The metadata's `una_pos` (the kernel's `snd_una` as a
//! stream position, absolute so that a lost RX frame is healed by the next one) frees bytes at
//! the front.
//!
//! Loss recovery ([`crate::transport::tcp::sack`] keeps the scoreboard): every frame sent is recorded with
//! when and in which order it went out. With SACK (negotiated: [`StreamInit::sack`]) the peer's
//! blocks, parsed from the frame's TCP header by the caller and mapped to positions through
//! [`StreamInit::snd_seq`], mark segments delivered; a segment is deemed lost once three
//! segments sent after it were delivered, or one was and a reordering timeout (SRTT plus a
//! quarter of the smallest RTT) passed (RFC 6675 with RFC 8985's timing, so a lost
//! retransmission is found too). Exactly the lost ranges are resent, intent RETRANSMIT (egress
//! resends them at their own sequence numbers, without moving `snd_nxt`), lowest first, while
//! the bytes in the network (pipe) stay under the window (`cwnd`: the send window, or after a
//! timeout the resend window). The kernel takes the first RETRANSMIT of a window of data as
//! the loss signal and halves its congestion window: new data waits until the acknowledgements
//! catch up with the cut, while the lost bytes go at once (egress never holds them back: they
//! replace bytes the network dropped). A tail-loss probe (RFC 8985 7.3) goes out after 2 SRTT
//! without progress (plus the peer's delayed ACK with one segment in flight): new data if the
//! send window allows, else the last segment again, so that the peer's SACK shows what the tail
//! lost; if it draws no answer, the last segment goes once more before the RTO. Without SACK:
//! NewReno (the kernel's `FAST_RETRANSMIT` after three duplicate ACKs resends the segment at
//! `snd_una`, each partial acknowledgement the next). D-SACK blocks (the peer got bytes twice)
//! are counted; a peer that drops bytes it SACKed (the cumulative ACK stops at a SACKed
//! segment) loses every mark.
//! RTT samples come from every acknowledgement of a segment sent once (Karn's rule).
//!
//! Recovery from refused frames. Egress may refuse a DATA frame the app cannot foresee (the
//! congestion window, a peer window that shrank, a full ring on the way): the kernel's `tx_pos`
//! then stays behind the app's `snd_nxt` and the app is never told. Egress places DATA by
//! position: a DATA frame may start anywhere from `snd_una`'s position up to the kernel's
//! `tx_pos`; the part already sent goes out as a retransmission, only the rest is new (and
//! window-checked). So the rule here is the TCP retransmission timeout: when no byte was
//! acknowledged for an RTO ([`RtoEstimator`], exponential backoff, 200 ms minimum by default for
//! Linux peers) while bytes are outstanding, [`Stream::on_timer`] deems every byte not SACKed
//! lost and they are resent from `snd_una` as DATA, lowest first, under a slow-start resend
//! window (one MSS, growing by what each acknowledgement frees, as the kernel's congestion
//! window does after the timeout it sees in the first resend) rather than in one burst. Whatever
//! the kernel's `tx_pos` (always `snd_una` plus the bytes egress accepted), the resent frames are
//! accepted in order, no byte is sent twice as new, and a refused frame costs at most one RTO
//! instead of wedging the stream. A second timeout in a row forgets the SACK marks as well (a peer
//! that dropped what it SACKed must get it again). Tail-loss probes go as DATA for the same
//! reason; RETRANSMIT stays strict (refused unless wholly in flight): it never turns into new
//! data.
//!
//! Zero windows ([`crate::transport::tcp::persist`] keeps the timer): while the peer's window
//! leaves no room, data waits and nothing is in flight (so no ACK is coming), the persist timer
//! sends zero-window probes (intent PROBE: egress sends a bare ACK at `snd_una - 1`, which the
//! peer answers with an ACK carrying its window), backed off as the RTO is, until the window
//! opens. A window update the network lost then costs a probe interval, not the connection.
//!
//! Close ([`crate::transport::tcp::close`] keeps the state): [`Stream::close`] ends the send side; once
//! every written byte was framed, [`Stream::next_frame`] writes a FIN frame (intent FIN, no
//! payload), which egress sends in sequence order. The retransmission timer covers the FIN as
//! it covers bytes: a timeout resends the unacknowledged bytes, then the FIN again. `FIN_ACKED`
//! metadata ends our side; the peer's `FIN` ends the other. [`Stream::fail`] ends everything
//! (reset, abort, timeout) with the error later calls report.
use std::{
    collections::VecDeque,
    io,
    net::SocketAddrV4,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::bpf::tcp::types::{
    etran_tcp_limit, etran_tcp_rx_flag, etran_tcp_rx_meta, etran_tcp_tx_flag, etran_tcp_tx_hdr,
    etran_tcp_tx_intent, tcp_conn_key,
};
use crate::transport::{
    tcp::{
        close::{self, Event},
        persist::{self, Persist},
        rto::{GaveUp, RtoConfig, RtoEstimator},
        sack::{Blocks, Scoreboard, MAX_BLOCKS},
        seq::after,
        window,
    },
    RxMeta,
};

/// Bytes of the TX header in front of every frame's payload.
pub const TX_HDR_LEN: usize = std::mem::size_of::<etran_tcp_tx_hdr>();
/// The most payload one frame may carry (egress's bound).
pub const MAX_PAYLOAD: u16 = etran_tcp_limit::ETRAN_TCP_MAX_PAYLOAD.0 as u16;

const FAST_RETRANSMIT: u32 = etran_tcp_rx_flag::ETRAN_TCP_RX_FAST_RETRANSMIT.0;
const FIN: u32 = etran_tcp_rx_flag::ETRAN_TCP_RX_FIN.0;
const OUT_OF_ORDER: u32 = etran_tcp_rx_flag::ETRAN_TCP_RX_OUT_OF_ORDER.0;
const MERGED: u32 = etran_tcp_rx_flag::ETRAN_TCP_RX_MERGED.0;
const FIN_ACKED: u32 = etran_tcp_rx_flag::ETRAN_TCP_RX_FIN_ACKED.0;
/// How long bytes ingress had in order may wait for the frame that carries them: a frame
/// reaches the app in the order frames reached its socket, which is not always the order
/// ingress applied them in (the daemon's replay of a segment that came right behind the
/// handshake runs ingress on its CPU while the NIC's NAPI runs it on another, and either may
/// hand its frame over first; microseconds, more under a hypervisor). A gap open longer is a
/// frame lost on its way, and fails the stream ([`Stream::check_gap`]).
pub const REORDER_LIMIT: Duration = Duration::from_secs(1);
/// RX flag: the frame's TCP header carries SACK blocks ([`Blocks::from_frame`]).
pub const RX_SACK: u32 = etran_tcp_rx_flag::ETRAN_TCP_RX_SACK.0;

/// TX intents as the header's `u8`.
pub const INTENT_DATA: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_DATA.0 as u8;
pub const INTENT_ACK: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_ACK.0 as u8;
pub const INTENT_WINDOW_UPDATE: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_WINDOW_UPDATE.0 as u8;
pub const INTENT_RETRANSMIT: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_RETRANSMIT.0 as u8;
pub const INTENT_FIN: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_FIN.0 as u8;
pub const INTENT_ACK_DUE: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_ACK_DUE.0 as u8;
pub const INTENT_PROBE: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_PROBE.0 as u8;
/// TX header flag: the send window, not the app's data, limits this DATA segment's pass: bytes
/// wait beyond what it admits (see tcp.h).
pub const TX_WINDOW_LIMITED: u8 = etran_tcp_tx_flag::ETRAN_TCP_TX_WINDOW_LIMITED.0 as u8;
/// TX header flag: the payload ends the bytes the app has written, or a run of
/// [`PUSH_SEGMENTS`], so the segment carries PSH (see tcp.h); [`Stream::emit`] sets it.
pub const TX_PUSH: u8 = etran_tcp_tx_flag::ETRAN_TCP_TX_PUSH.0 as u8;
/// A stream's segments carry PSH at least once per this many segments of stream positions.
/// A receiver's GRO merges segments that arrive together up to one with PSH, and a Linux
/// receiver acknowledges each merge once: on the testbed, where a compat port batches a
/// streaming app's frames (`app::bursts`), a flight of 20 segments arrived as one merge and
/// drew one ACK, whose loss stalled the sender until its tail-loss probe (2 to 7 times per
/// 10 MB at 1 % loss, a retransmission timeout in a quarter of the transfers). With PSH
/// every 8 segments a flight draws an ACK per 8, and a lost one is covered by the next; the
/// receiver still merges 8 (an etran receiver's `GEN_STRETCH_SEGMENTS` alike).
pub const PUSH_SEGMENTS: u32 = 8;

/// What the daemon hands over for an established connection (and what it put in the
/// connection's `tcp_conn`).
#[derive(Debug, Clone, Copy)]
pub struct StreamInit {
    pub key: tcp_conn_key,
    /// The kernel's `rx_pos` (stream position of `rcv_nxt`).
    pub rx_pos: u32,
    /// The kernel's `tx_pos` (stream position of `snd_nxt`).
    pub tx_pos: u32,
    /// The send window: bytes from `tx_pos` that new data may fill (the peer's window and the
    /// initial congestion window, the less).
    pub send_wnd: u32,
    /// The connection's MSS (at most [`MAX_PAYLOAD`]).
    pub mss: u16,
    /// SACK was negotiated: the peer's SACK blocks drive loss recovery.
    pub sack: bool,
    /// The sequence number of `tx_pos` (`snd_nxt` at the start): maps the peer's SACK blocks to
    /// positions.
    pub snd_seq: u32,
    /// Receive buffer bytes: must equal the `rcv_wnd` the daemon gave the connection.
    pub rcv_buf: u32,
    /// Our window scale, which limits the window the buffer can advertise
    /// ([`window::advertisable`]).
    pub rcv_wscale: u8,
    /// Send buffer bytes (unacknowledged plus unsent).
    pub snd_buf: u32,
}

/// [`StreamInit`] as the daemon sends it to the app (the control path's handover, in the wire
/// protocol's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnInit {
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub rx_pos: u32,
    pub tx_pos: u32,
    /// The send window: the peer's window and the initial congestion window, the less.
    pub send_wnd: u32,
    pub mss: u16,
    pub rcv_buf: u32,
    pub snd_buf: u32,
    /// SACK negotiated.
    #[serde(default)]
    pub sack: bool,
    /// The sequence number of `tx_pos`.
    #[serde(default)]
    pub snd_seq: u32,
    /// Our window scale (what limits the window the buffer can advertise). Absent: 0, which
    /// makes the app's window updates only more eager.
    #[serde(default)]
    pub rcv_wscale: u8,
}

impl From<&ConnInit> for StreamInit {
    fn from(c: &ConnInit) -> StreamInit {
        StreamInit {
            key: tcp_conn_key {
                local_ip: u32::from_ne_bytes(c.local.ip().octets()),
                remote_ip: u32::from_ne_bytes(c.remote.ip().octets()),
                local_port: c.local.port().to_be(),
                remote_port: c.remote.port().to_be(),
            },
            rx_pos: c.rx_pos,
            tx_pos: c.tx_pos,
            send_wnd: c.send_wnd,
            mss: c.mss,
            sack: c.sack,
            snd_seq: c.snd_seq,
            rcv_buf: c.rcv_buf,
            snd_buf: c.snd_buf,
            rcv_wscale: c.rcv_wscale,
        }
    }
}

/// What one RX frame changed, for the caller's readiness bookkeeping.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RxEffect {
    /// Bytes that became readable.
    pub readable: u32,
    /// Send-buffer bytes freed by the peer's acknowledgement.
    pub freed: u32,
    /// The stream ended (FIN) with this frame.
    pub fin: bool,
    /// Fast retransmit was requested.
    pub fast_retransmit: bool,
    /// Payload bytes that fell outside the receive buffer and were dropped (a kernel/app
    /// disagreement; should stay 0).
    pub dropped: u32,
    /// Bytes (at most) of data frames that never reached the app, found with this frame: the
    /// connection failed with `ConnectionAborted`.
    pub lost: u32,
}

/// One frame [`Stream::next_segment`] or [`Stream::next_retransmit`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxFrame {
    pub tx_pos: u32,
    pub payload_len: u16,
    /// Header plus payload: the TX descriptor's length.
    pub frame_len: usize,
}

/// Counters for tests and stats.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamStats {
    pub rx_bytes: u64,
    pub rx_dropped: u64,
    /// New bytes framed (each byte once).
    pub tx_bytes: u64,
    /// Bytes framed again: resends of lost bytes (after a timeout too) and probes.
    pub retransmitted: u64,
    /// Recoveries entered on a loss found by SACK or duplicate ACKs (not by a timeout).
    pub fast_retransmits: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
    /// Timeouts found spurious (RFC 3708): the peer reported the first byte the timeout resent
    /// as one it already had. The bytes had arrived; their acknowledgement had not.
    pub spurious_timeouts: u64,
    /// Tail-loss probes sent.
    pub probes: u64,
    /// Zero-window probes sent (the persist timer).
    pub window_probes: u64,
    /// D-SACK blocks received: the peer got bytes twice (a needless retransmission, or
    /// duplication in the network).
    pub dsacks: u64,
    /// Times the peer dropped data it had SACKed.
    pub reneged: u64,
    /// Holes left by data frames lost between ingress and the app (each fails the stream).
    pub rx_holes: u64,
    /// Frames that reached the app behind one ingress applied after them, until it came (the
    /// bytes the kernel had in order waited: see [`REORDER_LIMIT`]).
    pub rx_reordered: u64,
}

/// Tail-loss probes sent at most between two ACKs that make progress ([`Stream::tail_probe`]).
const TAIL_PROBES: u8 = 2;

/// A tail-loss probe to send (RFC 8985 7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// One new segment, beyond the congestion window (not the peer's).
    NewData,
    /// The last segment sent, again.
    Last,
}

/// What [`Stream::on_timer`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerEvent {
    /// Nothing outstanding: no timer runs.
    Idle,
    /// Bytes are outstanding; call again at (or after) this instant.
    Waiting(Instant),
    /// A timer found something to send: losses (the reordering timer), a tail-loss probe, a
    /// zero-window probe, or, after an RTO, every byte not SACKed (the next RTO is backed off).
    /// See [`Stream::next_frame`].
    Resend,
    /// Too many timeouts in a row without progress: the connection should be aborted.
    GaveUp(GaveUp),
    /// Bytes ingress had in order (acknowledged) never reached the app (at most this many):
    /// the stream failed with `ConnectionAborted` (see [`REORDER_LIMIT`]).
    RxHole(u32),
}

/// One connection's byte streams.
pub struct Stream {
    key: tcp_conn_key,
    mss: u16,
    // Receive side.
    rbuf: Box<[u8]>,
    head: usize,                // index of read_pos in rbuf
    read_pos: u32,              // next byte read() returns
    rcv_end: u32,               // end of the readable (in-order) bytes
    kernel_end: u32,            // end of the bytes ingress had in order, as far as frames told
    fin_at: Option<u32>,        // where the peer's FIN ends the stream (a frame said FIN)
    gap_since: Option<Instant>, // since when the readable bytes end before kernel_end
    reported: u32,              // read_pos as of the last TX header's report (take_report)
    rx_unacked: u32, // payload bytes received since our last frame (each carries the ACK)
    fin: bool,       // the stream ends at rcv_end
    ooo: Vec<(u32, u32)>, // bytes held past rcv_end: disjoint, apart [start, end) intervals
    adv: u32,        // the largest window the kernel advertises for this buffer
    // Send side.
    sbuf: VecDeque<u8>, // bytes from snd_una on
    snd_cap: usize,
    snd_una: u32,
    snd_nxt: u32,      // end of every byte framed: [snd_una, snd_nxt) is outstanding
    send_wnd: u32,     // bytes from snd_una new data may fill (RX metadata: the kernel's windows)
    sack: bool,        // SACK negotiated: losses come from the scoreboard, else NewReno
    seq_base: u32,     // sequence number of send position 0 (the peer's SACK blocks → positions)
    board: Scoreboard, // what was sent from snd_una on: SACKed, lost, when
    // Bytes before this position were sent by an owner that died with them (a stream the
    // daemon rebuilt, `Stream::lost_owner`): their content is unknown, so resending one of
    // them fails the stream instead.
    unknown_end: Option<u32>,
    recover: Option<u32>, // in recovery until snd_una reaches this (RFC 6675 RecoveryPoint)
    after_timeout: bool,  // the recovery follows a timeout: resends go out as DATA
    hold: bool,           // a short tail of new bytes waits for more (hold_tail)
    nodelay: bool,        // never hold (set_nodelay)
    rto: RtoEstimator,
    rto_deadline: Option<Instant>, // armed lazily by on_timer; None after progress
    rack_deadline: Option<Instant>, // when a segment a later one overtook is deemed lost
    pto_deadline: Option<Instant>, // tail-loss probe; armed lazily, None after progress
    probes_out: u8,                // probes sent since the last progress (TAIL_PROBES)
    rto_resent: Option<u32>, // the first byte the last timeout resent, until a D-SACK covers it
    probe: Option<Probe>,    // a probe to send
    persist: Persist,        // zero-window probing (window_closed)
    window_probe: bool,      // a zero-window probe to send
    // After a timeout: how many bytes may be in the network while the lost bytes are resent. It
    // starts at one segment and grows by what each ACK frees (slow start, RFC 5681 3.1), so a
    // spurious timeout costs a few segments, not a window's worth of duplicates.
    resend_wnd: Option<u32>,
    // Close.
    close: close::State,
    fin_sent: bool, // a FIN frame went out since the last timeout
    error: Option<io::ErrorKind>,
    stats: StreamStats,
}

/// `a - b` as a distance along the stream.
fn dist(a: u32, b: u32) -> u32 {
    a.wrapping_sub(b)
}

impl Stream {
    pub fn new(init: StreamInit) -> Stream {
        Stream::with_rto(init, RtoConfig::default())
    }

    /// A stream whose retransmission timeout follows `rto`.
    pub fn with_rto(init: StreamInit, rto: RtoConfig) -> Stream {
        assert!(init.rcv_buf > 0, "a receive buffer needs room");
        Stream {
            key: init.key,
            mss: init.mss.clamp(1, MAX_PAYLOAD),
            rbuf: vec![0; init.rcv_buf as usize].into_boxed_slice(),
            head: 0,
            read_pos: init.rx_pos,
            rcv_end: init.rx_pos,
            kernel_end: init.rx_pos,
            fin_at: None,
            gap_since: None,
            reported: init.rx_pos,
            rx_unacked: 0,
            fin: false,
            ooo: Vec::new(),
            adv: window::advertisable(init.rcv_buf, init.rcv_wscale),
            sbuf: VecDeque::with_capacity(init.snd_buf as usize),
            snd_cap: init.snd_buf as usize,
            snd_una: init.tx_pos,
            snd_nxt: init.tx_pos,
            send_wnd: init.send_wnd,
            sack: init.sack,
            seq_base: init.snd_seq.wrapping_sub(init.tx_pos),
            board: Scoreboard::default(),
            unknown_end: None,
            hold: false,
            nodelay: false,
            recover: None,
            after_timeout: false,
            rto: RtoEstimator::new(rto),
            rto_deadline: None,
            rack_deadline: None,
            pto_deadline: None,
            probes_out: 0,
            rto_resent: None,
            probe: None,
            persist: Persist::default(),
            window_probe: false,
            resend_wnd: None,
            close: close::State::Established,
            fin_sent: false,
            error: None,
            stats: StreamStats::default(),
        }
    }

    pub fn key(&self) -> tcp_conn_key {
        self.key
    }

    pub fn mss(&self) -> u16 {
        self.mss
    }

    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    // ---- Receive side ----

    /// Applies one RX frame: its metadata and its payload (`meta.payload_len` bytes).
    pub fn on_rx(&mut self, meta: &etran_tcp_rx_meta, payload: &[u8]) -> RxEffect {
        self.on_rx_at(meta, payload, &Blocks::default(), Instant::now())
    }

    /// [`Stream::on_rx`] with the frame's SACK blocks (sequence numbers, see
    /// [`Blocks::from_frame`]) at `now`.
    pub fn on_rx_at(
        &mut self,
        meta: &etran_tcp_rx_meta,
        payload: &[u8],
        sack: &Blocks,
        now: Instant,
    ) -> RxEffect {
        let mut fx =
            RxEffect { freed: self.on_ack(meta.una_pos, sack, now), ..RxEffect::default() };
        // A frame that came behind a later one (see REORDER_LIMIT) says the window from an
        // older snd_una: from ours, it could reach past the edge egress holds to.
        if !after(self.snd_una, meta.una_pos) {
            self.send_wnd = meta.send_wnd;
        }
        let len = (meta.payload_len as usize).min(payload.len()) as u32;
        if meta.flags & FIN_ACKED != 0 && self.close.fin_queued() {
            self.close = self.close.on(Event::FinAcked);
            self.rto.on_progress();
            self.rto_deadline = None;
        }
        // Without SACK, NewReno (RFC 6582): the third duplicate ACK resends the segment at
        // snd_una, each partial acknowledgement the next one (on_ack).
        if meta.flags & FAST_RETRANSMIT != 0
            && !self.sack
            && self.in_flight() != 0
            && self.recover.is_none()
        {
            self.recover = Some(self.snd_nxt);
            self.board.mark_lost_at(self.snd_una);
            self.stats.fast_retransmits += 1;
            fx.fast_retransmit = true;
        }
        fx.dropped += meta.payload_len as u32 - len;
        self.rx_unacked = self.rx_unacked.saturating_add(len);
        let end = meta.rx_pos.wrapping_add(len);
        if len > 0 {
            let outside = self.store(meta.rx_pos, &payload[..len as usize]);
            fx.dropped += outside;
            self.hold(meta.rx_pos, end.wrapping_sub(outside));
        }
        if meta.flags & OUT_OF_ORDER == 0 {
            // Ingress had everything up to here in order (the merge: intervals it joined).
            let mut in_order = end;
            if meta.flags & MERGED != 0 {
                in_order = in_order.wrapping_add(meta.merged);
            }
            if after(in_order, self.kernel_end) {
                self.kernel_end = in_order;
            }
            if meta.flags & FIN != 0 {
                // Every frame after the FIN says it, each ending where the stream ends.
                self.fin_at.get_or_insert(in_order);
            }
        }
        fx.readable = self.advance();
        if self.fin_at == Some(self.rcv_end) && !self.fin {
            self.fin = true;
            self.close = self.close.on(Event::PeerFin);
            fx.fin = true;
        }
        fx.lost = self.check_gap(now);
        self.stats.rx_bytes += u64::from(fx.readable);
        self.stats.rx_dropped += u64::from(fx.dropped);
        fx
    }

    /// Adds the bytes [start, end), just stored, to the intervals held past the readable end,
    /// joining the ones it touches (as the kernel does).
    fn hold(&mut self, mut start: u32, mut end: u32) {
        if !after(end, self.rcv_end) {
            return; // readable already
        }
        if after(self.rcv_end, start) {
            start = self.rcv_end;
        }
        self.ooo.retain(|&(a, b)| {
            let apart = after(a, end) || after(start, b);
            if !apart {
                start = if after(a, start) { start } else { a };
                end = if after(end, b) { end } else { b };
            }
            apart
        });
        self.ooo.push((start, end));
    }

    /// Moves the readable end over the bytes held from it on, as far as ingress had them in
    /// order (`kernel_end`: out-of-order bytes stay held until a merge says otherwise, as in
    /// the kernel) and the buffer reaches; returns how many bytes became readable.
    fn advance(&mut self) -> u32 {
        let from = self.rcv_end;
        let mut front = from;
        if let Some(&(_, b)) = self.ooo.iter().find(|&&(a, b)| !after(a, front) && after(b, front))
        {
            front = b; // held intervals never touch: one at most continues the readable bytes
        }
        let limit = dist(self.kernel_end, self.read_pos).min(self.rbuf.len() as u32);
        if dist(front, self.read_pos) > limit {
            front = self.read_pos.wrapping_add(limit);
        }
        if !after(front, from) {
            return 0;
        }
        self.rcv_end = front;
        self.ooo.retain(|&(_, b)| after(b, front));
        dist(front, from)
    }

    /// Bytes ingress had in order that did not reach the app: normally a frame handed over
    /// behind one ingress applied after it (see [`REORDER_LIMIT`]), so the gap waits for it;
    /// one still open after [`REORDER_LIMIT`] is a frame lost on its way (the kernel
    /// acknowledged it: nobody will resend it), which fails the stream with
    /// `ConnectionAborted`. Returns the bytes missing then, those not held (0 otherwise).
    fn check_gap(&mut self, now: Instant) -> u32 {
        if !after(self.kernel_end, self.rcv_end) {
            if self.gap_since.take().is_some() {
                self.stats.rx_reordered += 1;
            }
            return 0;
        }
        let since = *self.gap_since.get_or_insert(now);
        if self.error.is_some() || now.saturating_duration_since(since) < REORDER_LIMIT {
            return 0;
        }
        self.fail(io::ErrorKind::ConnectionAborted);
        self.stats.rx_holes += 1;
        let (from, to) = (self.rcv_end, self.kernel_end);
        let held: u32 = (self.ooo.iter())
            .filter(|&&(a, _)| after(to, a))
            .map(|&(a, b)| dist(if after(b, to) { to } else { b }, a))
            .sum();
        dist(to, from) - held
    }

    /// When an open gap fails the stream ([`Stream::check_gap`]), if one is open.
    fn gap_deadline(&self) -> Option<Instant> {
        self.gap_since.filter(|_| self.error.is_none()).map(|t| t + REORDER_LIMIT)
    }

    /// Writes `data` at stream position `pos`; returns the bytes outside the buffer.
    fn store(&mut self, pos: u32, data: &[u8]) -> u32 {
        let cap = self.rbuf.len();
        let off = dist(pos, self.read_pos) as usize;
        if off >= cap {
            return data.len() as u32;
        }
        let n = data.len().min(cap - off);
        let start = (self.head + off) % cap;
        let first = n.min(cap - start);
        self.rbuf[start..start + first].copy_from_slice(&data[..first]);
        self.rbuf[..n - first].copy_from_slice(&data[first..n]);
        (data.len() - n) as u32
    }

    /// The stream position where the in-order bytes received end.
    pub fn rx_end(&self) -> u32 {
        self.rcv_end
    }

    /// The stream position up to which ingress had the bytes in order, as far as the frames
    /// that reached the app told (past [`Stream::rx_end`] while a frame is late).
    pub fn rx_in_order_end(&self) -> u32 {
        self.kernel_end
    }

    /// Bytes ready for [`Stream::read`].
    pub fn readable(&self) -> usize {
        dist(self.rcv_end, self.read_pos) as usize
    }

    /// All data was read and the peer closed its side.
    pub fn is_eof(&self) -> bool {
        self.fin && self.readable() == 0
    }

    /// The peer's FIN arrived (data may still be unread).
    pub fn fin_received(&self) -> bool {
        self.fin
    }

    /// Copies readable bytes into `buf`; returns how many (0: none ready, or EOF).
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let cap = self.rbuf.len();
        let n = buf.len().min(self.readable());
        let first = n.min(cap - self.head);
        buf[..first].copy_from_slice(&self.rbuf[self.head..self.head + first]);
        buf[first..n].copy_from_slice(&self.rbuf[..n - first]);
        self.head = (self.head + n) % cap;
        self.read_pos = self.read_pos.wrapping_add(n as u32);
        n
    }

    /// Consumed bytes not yet reported to the kernel.
    pub fn unreported(&self) -> u32 {
        self.read_pos.wrapping_sub(self.reported)
    }

    /// Whether a pure window update should be sent now (see the module doc). The window the
    /// peer has is what the kernel last advertised less what arrived since, as far as this
    /// side knows: the advertisable buffer less the bytes held or read and not reported.
    pub fn window_update_due(&self) -> bool {
        if self.fin || self.unreported() == 0 {
            return false;
        }
        let held = dist(self.rcv_end, self.read_pos);
        let after = self.adv.saturating_sub(held);
        let left = after.saturating_sub(self.unreported());
        window::update_due(left, after, self.adv, u32::from(self.mss))
    }

    /// Takes the consumption report for a TX header (every frame carries one, and the ACK): the
    /// read position; what was read since the last report is reported with it.
    pub fn take_report(&mut self) -> u32 {
        self.rx_unacked = 0;
        self.reported = self.read_pos;
        self.read_pos
    }

    /// Whether a pure ACK is worth a frame now, at the end of a pass over what was received:
    /// two full segments arrived since the last frame we sent (RFC 5681 4.2). A busy-polling
    /// app then acknowledges each burst as it ends, as a kernel does at the end of a NAPI poll,
    /// without waiting for the daemon's generator (a wakeup, and its scheduling on a busy
    /// machine); the generator then finds nothing owed and skips the connection. Sent with
    /// [`INTENT_ACK_DUE`]: egress drops it if the generator went first (a repeated ACK would
    /// be a duplicate ACK to the peer).
    pub fn ack_due(&self) -> bool {
        self.rx_unacked >= 2 * u32::from(self.mss) && !self.fin
    }

    // ---- Send side ----

    /// Appends as much of `data` as the send buffer takes; returns how much (0 once the send
    /// side is closed).
    pub fn write(&mut self, data: &[u8]) -> usize {
        if !self.close.can_send() {
            return 0;
        }
        let n = data.len().min(self.send_space());
        self.sbuf.extend(&data[..n]);
        n
    }

    /// Free room in the send buffer.
    pub fn send_space(&self) -> usize {
        self.snd_cap - self.sbuf.len()
    }

    /// Bytes sent and not yet acknowledged.
    pub fn in_flight(&self) -> u32 {
        dist(self.snd_nxt, self.snd_una)
    }

    /// Bytes written and not yet sent.
    pub fn unsent(&self) -> usize {
        self.sbuf.len() - self.in_flight() as usize
    }

    /// The send window the latest RX frame reported (the peer's and the congestion window's,
    /// the less).
    pub fn send_wnd(&self) -> u32 {
        self.send_wnd
    }

    /// Positions (snd_una, snd_nxt).
    pub fn send_positions(&self) -> (u32, u32) {
        (self.snd_una, self.snd_nxt)
    }

    /// The scoreboard of the bytes in flight (what was SACKed, deemed lost, resent).
    pub fn scoreboard(&self) -> &Scoreboard {
        &self.board
    }

    /// The peer's acknowledgement: the cumulative one (the kernel's `snd_una` as a position)
    /// and SACK blocks. Frees the acknowledged bytes (returns how many), takes an RTT sample,
    /// and finds losses.
    fn on_ack(&mut self, una_pos: u32, sack: &Blocks, now: Instant) -> u32 {
        // Anything past what was framed is a position behind ours: nothing new.
        let mut n = dist(una_pos, self.snd_una);
        if n > self.in_flight() {
            n = 0;
        }
        if n > 0 {
            self.sbuf.drain(..n as usize);
            self.snd_una = self.snd_una.wrapping_add(n);
        }
        let mut blocks = [(0, 0); MAX_BLOCKS];
        let sacked = sack.as_slice();
        for (pos, &(l, r)) in blocks.iter_mut().zip(sacked) {
            *pos = (l.wrapping_sub(self.seq_base), r.wrapping_sub(self.seq_base));
        }
        let d = self.board.on_ack(self.snd_una, &blocks[..sacked.len()], now);
        if let Some(rtt) = d.rtt {
            self.rto.on_sample(rtt);
        }
        self.stats.dsacks += u64::from(d.dsack.is_some());
        // RFC 3708: the peer reports the first byte a timeout resent as a duplicate: it had
        // it, and the timeout was spurious (a late ACK, not a loss).
        if let (Some(at), Some((l, r))) = (self.rto_resent, d.dsack) {
            if dist(at, l) < dist(r, l) {
                self.stats.spurious_timeouts += 1;
                self.rto_resent = None;
            }
        }
        if n > 0 {
            // Progress: the retry count starts over and the timer restarts (RFC 6298 5.3).
            self.rto.on_progress();
            self.rto_deadline = None;
            self.resend_wnd = self.resend_wnd.map(|w| w.saturating_add(n));
            match self.recover {
                // Everything sent before the loss is acknowledged: recovery is over.
                Some(rec) if !after(rec, self.snd_una) => self.end_recovery(),
                // A partial acknowledgement in fast recovery without SACK: the next hole
                // starts at snd_una.
                Some(_) if !self.sack && !self.after_timeout => {
                    self.board.mark_lost_at(self.snd_una)
                }
                _ => {}
            }
        }
        if n > 0 || d.segments > 0 {
            self.probes_out = 0;
            self.pto_deadline = None;
        }
        if self.board.reneged() {
            // The peer dropped data it had SACKed (RFC 2018 8): forget every mark, resend
            // from snd_una.
            self.board.clear_sacks();
            self.board.mark_lost_at(self.snd_una);
            self.stats.reneged += 1;
        }
        self.detect_losses(now);
        n
    }

    fn end_recovery(&mut self) {
        self.recover = None;
        self.after_timeout = false;
        self.resend_wnd = None;
    }

    /// Marks what the scoreboard shows lost (RFC 6675 with RACK's timing, see `tcp::sack`);
    /// the first loss starts a recovery.
    fn detect_losses(&mut self, now: Instant) {
        if self.sack {
            let srtt = self.rto.srtt().unwrap_or(self.rto.rto());
            let reo_wnd = self.rto.min_rtt().map_or(Duration::ZERO, |m| m / 4);
            self.rack_deadline = self.board.mark_losses(now, srtt + reo_wnd);
        }
        if self.board.lost_bytes() > 0 && self.recover.is_none() {
            self.recover = Some(self.snd_nxt);
            self.stats.fast_retransmits += 1;
        }
    }

    /// The window the bytes in the network (pipe) may fill: the send window, and after a
    /// timeout the resend window too. (Pipe never exceeds the bytes in flight, which the send
    /// window bounds: outside a timeout's recovery lost bytes are resent at once.)
    fn cwnd(&self) -> u32 {
        self.resend_wnd.map_or(self.send_wnd, |w| w.min(self.send_wnd))
    }

    /// Whether `len` more bytes may go into the network (one always may when none are).
    fn pipe_admits(&self, len: u32) -> bool {
        let pipe = self.board.pipe();
        pipe == 0 || pipe.saturating_add(len) <= self.cwnd()
    }

    /// New bytes the send window admits now (its right edge is snd_una + send_wnd, as egress
    /// checks), at most a segment; 0 while a short tail of new bytes is held (see
    /// [`Stream::hold_tail`]), and 0 while the window admits less than a segment of bytes
    /// that are there to send and bytes are in flight (sender silly-window avoidance, RFC 9293
    /// 3.8.6.2.1): the ACKs on the way open it. Sending what a window edge admits instead cuts
    /// the stream into ever shorter segments once the window is not a multiple of the MSS
    /// (congestion windows rarely are), and every frame costs the same on the path whatever
    /// its length.
    fn new_data_room(&self) -> usize {
        let room = self.send_wnd.saturating_sub(self.in_flight()) as usize;
        let mss = self.mss as usize;
        let len = self.unsent().min(room).min(mss);
        let short_tail = len == self.unsent() && len < mss;
        let window_limited = len < mss && len < self.unsent();
        if (short_tail && self.hold) || (window_limited && self.in_flight() > 0) {
            0
        } else {
            len
        }
    }

    /// Writes the next new DATA frame into `frame` (header plus payload), if there are unsent
    /// bytes the windows admit. The header carries the pending consumption report.
    pub fn next_segment(&mut self, frame: &mut [u8]) -> Option<TxFrame> {
        self.next_segment_at(frame, Instant::now())
    }

    fn next_segment_at(&mut self, frame: &mut [u8], now: Instant) -> Option<TxFrame> {
        let room = frame.len().checked_sub(TX_HDR_LEN)?;
        let len = self.new_data_room().min(room);
        // A probe needs only the send window (never a resend window: RFC 8985 7.3).
        if len == 0 || !(self.probe == Some(Probe::NewData) || self.pipe_admits(len as u32)) {
            return None;
        }
        if self.probe == Some(Probe::NewData) {
            self.probe = None;
        }
        // More bytes wait than the window admits: it, not the app, limits the stream. Egress
        // counts the round as window-limited, which it cannot see itself (tcp_cc.h). The last
        // segment the window admits is pushed: the stream waits for its ACK, which a receiver
        // sends at once at a PSH ending more than a segment (GRO's merge on Linux, `gen_mark`
        // on etran), where it would delay it for a flight shorter than its stretch.
        let window_room = self.send_wnd.saturating_sub(self.in_flight()) as usize;
        let flags = if self.unsent() <= window_room {
            0
        } else if window_room - len < usize::from(self.mss) {
            TX_WINDOW_LIMITED | TX_PUSH
        } else {
            TX_WINDOW_LIMITED
        };
        let seg = self.emit(frame, self.snd_nxt, len, INTENT_DATA, flags);
        let end = self.snd_nxt.wrapping_add(len as u32);
        self.board.sent(self.snd_nxt, end, now);
        self.snd_nxt = end;
        self.pto_deadline = None;
        self.stats.tx_bytes += len as u64;
        Some(seg)
    }

    /// The next frame to send: a resend first (a lost range, or a probe), then new data, then
    /// the FIN.
    pub fn next_frame(&mut self, frame: &mut [u8]) -> Option<TxFrame> {
        self.next_frame_at(frame, Instant::now())
    }

    /// [`Stream::next_frame`] at `now` (the transmission time the scoreboard keeps).
    pub fn next_frame_at(&mut self, frame: &mut [u8], now: Instant) -> Option<TxFrame> {
        if self.close.is_closed() {
            return None;
        }
        if let Some(seg) = self.next_resend(frame, now) {
            return Some(seg);
        }
        if let Some(seg) = self.next_segment_at(frame, now) {
            return Some(seg);
        }
        if std::mem::take(&mut self.window_probe) && self.window_closed() {
            let frame_len = self.control_frame(INTENT_PROBE, frame)?;
            return Some(TxFrame { tx_pos: self.snd_nxt, payload_len: 0, frame_len });
        }
        if !self.fin_due() {
            return None;
        }
        let frame_len = self.control_frame(INTENT_FIN, frame)?;
        self.fin_sent = true;
        Some(TxFrame { tx_pos: self.snd_nxt, payload_len: 0, frame_len })
    }

    /// Whether [`Stream::next_frame`] would produce a frame now (windows and coalescing
    /// included).
    pub fn tx_ready(&self) -> bool {
        !self.close.is_closed()
            && (matches!(self.probe, Some(Probe::Last))
                || (self.board.lost_bytes() > 0 && self.pipe_admits(1))
                || (self.new_data_room() > 0
                    && (self.probe.is_some() || self.pipe_admits(self.mss.into())))
                || (self.window_probe && self.window_closed())
                || self.fin_due())
    }

    /// Coalescing of small writes (Nagle-like): while held, new bytes that do not fill a
    /// segment are not framed, so that the next writes join them; full segments go as always.
    /// The caller releases the hold at the end of its pass. Ignored with [`Stream::set_nodelay`].
    pub fn hold_tail(&mut self, hold: bool) {
        self.hold = hold && !self.nodelay;
    }

    /// Whether a short tail is held.
    pub fn holds_tail(&self) -> bool {
        self.hold && self.unsent() > 0
    }

    /// Never hold small writes (TCP_NODELAY): every write is framed at once.
    pub fn set_nodelay(&mut self, on: bool) {
        self.nodelay = on;
        if on {
            self.hold = false;
        }
    }

    pub fn nodelay(&self) -> bool {
        self.nodelay
    }

    /// The FIN goes out once every written byte was framed.
    fn fin_due(&self) -> bool {
        self.close.fin_queued() && !self.fin_sent && self.unsent() == 0
    }

    /// A FIN went out and is not acknowledged: the retransmission timer covers it.
    fn fin_in_flight(&self) -> bool {
        self.close.fin_queued() && self.fin_sent
    }

    /// Whether bytes (or the FIN) are outstanding, or data waits for a closed window, so that
    /// [`Stream::on_timer`] runs timers.
    pub fn needs_timers(&self) -> bool {
        !self.close.is_closed()
            && (self.in_flight() > 0 || self.fin_in_flight() || self.window_closed())
    }

    /// The peer's window leaves no room, data waits and nothing is outstanding that would draw
    /// an ACK: the persist timer's case.
    fn window_closed(&self) -> bool {
        self.send_wnd == 0 && self.unsent() > 0 && self.in_flight() == 0 && !self.fin_in_flight()
    }

    /// Whether a resend is waiting: a range deemed lost, or a probe of the last segment.
    pub fn retransmit_pending(&self) -> bool {
        self.board.lost_bytes() > 0 || matches!(self.probe, Some(Probe::Last))
    }

    /// Writes the next resend frame: the lowest range deemed lost, intent RETRANSMIT (egress
    /// resends it at its own sequence numbers), or DATA after a timeout and for a probe (which
    /// egress also takes when the original never left: see the module doc).
    pub fn next_retransmit(&mut self, frame: &mut [u8]) -> Option<TxFrame> {
        self.next_resend(frame, Instant::now())
    }

    fn next_resend(&mut self, frame: &mut [u8], now: Instant) -> Option<TxFrame> {
        let room = frame.len().checked_sub(TX_HDR_LEN)?.min(self.mss as usize) as u32;
        let (start, end, intent) = if self.probe == Some(Probe::Last) {
            self.probe = None;
            let (start, end) = self.board.last()?;
            (start, start.wrapping_add(dist(end, start).min(room)), INTENT_DATA)
        } else {
            let (start, end) = self.board.next_lost(room)?;
            if !self.pipe_admits(dist(end, start)) {
                return None;
            }
            (start, end, if self.after_timeout { INTENT_DATA } else { INTENT_RETRANSMIT })
        };
        if self.unknown_end.is_some_and(|e| after(e, start)) {
            // Bytes of an owner that died (see `unknown_end`): nobody can send them again.
            self.fail(io::ErrorKind::ConnectionAborted);
            return None;
        }
        let len = dist(end, start);
        let seg = self.emit(frame, start, len as usize, intent, 0);
        self.board.resent(start, end, now);
        self.stats.retransmitted += u64::from(len);
        Some(seg)
    }

    // ---- Close ----

    /// Closes the send side: the FIN follows the bytes written so far. Closing again is a
    /// no-op.
    pub fn close(&mut self) {
        self.close = self.close.on(Event::Close);
    }

    /// Ends the connection at once (reset, abort, timeout): nothing more is sent, and
    /// [`Stream::error`] reports `why`.
    pub fn fail(&mut self, why: io::ErrorKind) {
        self.close = self.close.on(Event::Abort);
        self.error.get_or_insert(why);
        self.rto_deadline = None;
    }

    pub fn close_state(&self) -> close::State {
        self.close
    }

    /// Nothing more will be exchanged: both FINs went through and ours was acknowledged, or
    /// the connection failed.
    pub fn is_closed(&self) -> bool {
        self.close.is_closed()
    }

    /// Why the connection failed, if it did.
    pub fn error(&self) -> Option<io::ErrorKind> {
        self.error
    }

    /// Drives the timers: call it on every poll (and at the [`TimerEvent::Waiting`] instant).
    /// While bytes (or the FIN) are outstanding: the reordering timer (a segment that a later
    /// one overtook is deemed lost once it expires), the tail-loss probe (RFC 8985: after a
    /// PTO without progress, one segment goes out, new data or the last one sent, so that
    /// the peer's answer shows any loss), and the RTO; while the window is closed with nothing
    /// outstanding, the persist timer alone. Timers are armed at the first call that finds them
    /// needed, so the caller's polling granularity adds to them. On the receive side, a gap
    /// before bytes ingress had in order that stays open for [`REORDER_LIMIT`] fails the stream
    /// ([`TimerEvent::RxHole`]).
    pub fn on_timer(&mut self, now: Instant) -> TimerEvent {
        let lost = self.check_gap(now);
        if lost > 0 {
            return TimerEvent::RxHole(lost);
        }
        let event = self.send_timers(now);
        match (event, self.gap_deadline()) {
            (TimerEvent::Idle, Some(at)) => TimerEvent::Waiting(at),
            (TimerEvent::Waiting(next), Some(at)) => TimerEvent::Waiting(next.min(at)),
            (event, _) => event,
        }
    }

    /// The send side's timers ([`Stream::on_timer`]).
    fn send_timers(&mut self, now: Instant) -> TimerEvent {
        if !self.needs_timers() {
            self.persist.stop();
            self.stop_loss_timers();
            return TimerEvent::Idle;
        }
        if self.window_closed() {
            // Nothing is outstanding: the persist timer alone runs.
            self.stop_loss_timers();
            return match self.persist.on_timer(now, self.rto.rto(), self.rto.max()) {
                persist::Tick::Wait(at) => TimerEvent::Waiting(at),
                persist::Tick::Probe => {
                    self.window_probe = true;
                    self.stats.window_probes += 1;
                    TimerEvent::Resend
                }
            };
        }
        self.persist.stop();
        if self.rack_deadline.is_some_and(|at| now >= at) {
            let lost = self.board.lost_bytes();
            self.detect_losses(now);
            if self.board.lost_bytes() > lost {
                return TimerEvent::Resend;
            }
        }
        if let Some(event) = self.tail_probe(now) {
            return event;
        }
        let rto_at = match self.rto_deadline {
            None => *self.rto_deadline.insert(now + self.rto.rto()),
            Some(at) if now < at => at,
            Some(_) => return self.on_rto(now),
        };
        let next = [self.rack_deadline, self.pto_deadline].into_iter().flatten().min();
        TimerEvent::Waiting(next.map_or(rto_at, |at| at.min(rto_at)))
    }

    fn stop_loss_timers(&mut self) {
        self.rto_deadline = None;
        self.pto_deadline = None;
        self.rack_deadline = None;
    }

    /// The tail-loss probe timer: Some(Resend) when a probe is due now.
    ///
    /// Unlike RFC 8985, which sends one probe and then waits for the RTO, a probe that draws
    /// no answer is followed by a second one (of the last segment) a few segments' probe
    /// timeout later: a Linux receiver whose GRO merged a flight acknowledges it once, so the
    /// loss of that ACK and of the probe's answer (two drops at the testbed's 1 %) cost a
    /// whole 200 ms RTO, now and then, where every byte had arrived. The peer answers a
    /// duplicate at once (RFC 5681 4.2), so the second probe finds out in a round trip, and
    /// costs at most one segment the peer already had.
    fn tail_probe(&mut self, now: Instant) -> Option<TimerEvent> {
        // Only the peer's SACK blocks tell what a probe found (RFC 8985 needs SACK).
        if !self.sack || self.probes_out >= TAIL_PROBES {
            self.pto_deadline = None;
            return None;
        }
        if self.recover.is_some() {
            return self.recovery_probe(now);
        }
        let at = match self.pto_deadline {
            Some(at) => at,
            None => {
                let segments = match self.probes_out {
                    0 => self.in_flight().div_ceil(u32::from(self.mss)),
                    _ => 2, // the peer answers a duplicate at once: no delayed-ACK margin
                };
                let at = now + self.rto.pto(segments)?;
                if self.rto_deadline.is_some_and(|rto| at >= rto) {
                    return None; // the RTO comes first
                }
                *self.pto_deadline.insert(at)
            }
        };
        if now < at {
            return None;
        }
        self.pto_deadline = None;
        // RFC 8985 7.3: the RTO is armed anew behind the probe, or it fires right after it
        // (the lone segment's probe timeout is the RTO) and undoes what the probe may repair.
        self.rto_deadline = Some(now + self.rto.rto());
        self.probes_out += 1;
        self.stats.probes += 1;
        if self.probes_out == 1 && self.new_data_room() > 0 {
            self.probe = Some(Probe::NewData);
        } else if self.in_flight() > 0 {
            self.probe = Some(Probe::Last);
        } else {
            self.fin_sent = false; // only the FIN is out: it is the probe
        }
        Some(TimerEvent::Resend)
    }

    /// In recovery, a lost retransmission is found by the delivery of something sent after it
    /// (RACK). With only retransmissions in the network and nothing new to send, or no room
    /// for it (egress measures the congestion window from snd_una, so SACKed bytes still fill
    /// it, where Linux would send new data against the pipe), nothing is: a probe timeout after
    /// the last of them deems the first lost, and it is resent (counted as a probe), instead of
    /// waiting for the RTO.
    fn recovery_probe(&mut self, now: Instant) -> Option<TimerEvent> {
        self.pto_deadline = None;
        let (start, sent) = self.board.only_resends_out()?;
        if self.board.lost_bytes() > 0 || self.new_data_room() > 0 {
            return None;
        }
        // A resend that fills a hole draws the peer's ACK at once (RFC 5681 4.2), so the
        // probe timeout of a few segments applies, without the margin of a delayed ACK.
        let at = sent + self.rto.pto(2)?;
        if now < at {
            self.pto_deadline = Some(at);
            return None;
        }
        // As behind a tail-loss probe, the RTO waits a whole timeout behind this one, and no
        // other probe goes out before the next progress.
        self.rto_deadline = Some(now + self.rto.rto());
        self.probes_out = TAIL_PROBES;
        self.stats.probes += 1;
        self.board.mark_lost_at(start);
        Some(TimerEvent::Resend)
    }

    /// The RTO expired: every byte not SACKed is deemed lost and resent from snd_una, as DATA,
    /// under the resend window (then the FIN). A second timeout in a row also forgets the SACK
    /// marks: a peer that reneged on them would otherwise wait for bytes never resent.
    fn on_rto(&mut self, now: Instant) -> TimerEvent {
        let wait = match self.rto.on_timeout() {
            Err(gave_up) => {
                self.rto_deadline = None;
                return TimerEvent::GaveUp(gave_up);
            }
            Ok(wait) => wait,
        };
        if self.after_timeout {
            self.board.clear_sacks();
        }
        self.board.mark_all_lost();
        self.recover = Some(self.snd_nxt);
        self.after_timeout = true;
        self.resend_wnd = Some(u32::from(self.mss));
        self.fin_sent = false;
        self.probe = None;
        self.pto_deadline = None;
        self.rack_deadline = None;
        self.rto_deadline = Some(now + wait);
        self.stats.timeouts += 1;
        self.rto_resent = (self.in_flight() > 0).then_some(self.snd_una);
        TimerEvent::Resend
    }

    /// The current retransmission timeout (backoff included).
    pub fn rto(&self) -> Duration {
        self.rto.rto()
    }

    /// The smoothed round-trip time, once a segment was timed.
    pub fn srtt(&self) -> Option<Duration> {
        self.rto.srtt()
    }

    /// The round-trip time's variation, once a segment was timed.
    pub fn rttvar(&self) -> Option<Duration> {
        self.rto.rttvar()
    }

    /// Header (with `flags`) and `len` bytes from stream position `pos` (within the send buffer).
    /// A payload ending the bytes written so far (nothing waits behind it) is pushed
    /// ([`TX_PUSH`]): PSH, as Linux sets it at the end of a write; so is one that crosses a
    /// multiple of [`PUSH_SEGMENTS`] segments of stream positions, and no other, since a
    /// receiver's GRO ends a merge at every PSH.
    fn emit(&mut self, frame: &mut [u8], pos: u32, len: usize, intent: u8, flags: u8) -> TxFrame {
        let off = dist(pos, self.snd_una) as usize;
        let ends_write = off + len == self.sbuf.len();
        let unit = PUSH_SEGMENTS * u32::from(self.mss);
        let ends_run = pos / unit != pos.wrapping_add(len as u32) / unit;
        let flags = if len > 0 && (ends_write || ends_run) { flags | TX_PUSH } else { flags };
        let hdr = etran_tcp_tx_hdr {
            key: self.key,
            tx_pos: pos,
            read_pos: self.take_report(),
            len: len as u16,
            intent,
            flags,
        };
        write_hdr(frame, &hdr);
        let (a, b) = self.sbuf.as_slices();
        let out = &mut frame[TX_HDR_LEN..TX_HDR_LEN + len];
        if off + len <= a.len() {
            out.copy_from_slice(&a[off..off + len]);
        } else if off >= a.len() {
            out.copy_from_slice(&b[off - a.len()..off - a.len() + len]);
        } else {
            let first = a.len() - off;
            out[..first].copy_from_slice(&a[off..]);
            out[first..].copy_from_slice(&b[..len - first]);
        }
        TxFrame { tx_pos: pos, payload_len: len as u16, frame_len: TX_HDR_LEN + len }
    }

    /// Writes a payload-less frame (ACK or WINDOW_UPDATE) carrying the consumption report.
    pub fn control_frame(&mut self, intent: u8, frame: &mut [u8]) -> Option<usize> {
        if frame.len() < TX_HDR_LEN {
            return None;
        }
        let hdr = etran_tcp_tx_hdr {
            key: self.key,
            tx_pos: self.snd_nxt,
            read_pos: self.take_report(),
            len: 0,
            intent,
            flags: 0,
        };
        write_hdr(frame, &hdr);
        Some(TX_HDR_LEN)
    }
}

/// Writes a TX header at the start of `frame`.
pub fn write_hdr(frame: &mut [u8], hdr: &etran_tcp_tx_hdr) {
    assert!(frame.len() >= TX_HDR_LEN);
    // SAFETY: the frame has room for the header; write_unaligned needs no alignment, and the
    // header is plain data with no padding (24 bytes, every field explicit).
    unsafe { std::ptr::write_unaligned(frame.as_mut_ptr().cast::<etran_tcp_tx_hdr>(), *hdr) }
}

/// Reads a TX header from the start of `frame` (tests, and the TX path's own checks).
pub fn read_hdr(frame: &[u8]) -> etran_tcp_tx_hdr {
    assert!(frame.len() >= TX_HDR_LEN);
    // SAFETY: as for write_hdr; every bit pattern is a valid header.
    unsafe { std::ptr::read_unaligned(frame.as_ptr().cast::<etran_tcp_tx_hdr>()) }
}

/// TCP ingress's RX metadata, in front of every frame it hands an app.
impl RxMeta for etran_tcp_rx_meta {
    fn payload(&self) -> (usize, usize) {
        (usize::from(self.payload_off), usize::from(self.payload_len))
    }
}

mod handover;

pub use handover::{memfd, read_memfd, Handover, Resume};

#[cfg(test)]
mod tests;
