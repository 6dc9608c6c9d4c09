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
//! holds: anything else means a data frame the kernel accepted, and acknowledged, was lost on
//! the way to the app (its fill ring ran empty). The peer will not resend it, so the connection
//! fails with `ConnectionAborted` rather than hang or read garbage.
//! [`Stream::read`] consumes bytes;
//! [`Stream::take_consumed`] hands the not yet reported count to the next TX header, and
//! [`Stream::window_update_due`] says when a pure `WINDOW_UPDATE` is worth a frame: only when
//! the window the peer still has is down to half the advertisable buffer and the report at least
//! doubles it ([`crate::tcp::window::update_due`]), and never after the peer's FIN. Bytes
//! received stay readable after the connection failed (a reset, say): [`Stream::read`] returns
//! them before the caller reports the error.
//!
//! Send side: [`Stream::write`] appends to a bounded send buffer holding every byte from
//! `snd_una` (oldest unacknowledged) on. [`Stream::next_segment`] cuts the unsent bytes into
//! frames of at most `mss` payload behind an `etran_tcp_tx_hdr` (intent DATA at `snd_nxt`),
//! never past the peer's window (`snd_nxt - snd_una + len <= peer_wnd`, the check egress makes).
//! While the caller holds the tail ([`Stream::hold_tail`]: small writes within one pass of its
//! loop), new bytes short of a segment wait for the next write or the end of the pass, so that
//! consecutive small writes leave as one segment; [`Stream::set_nodelay`] turns that off.
//! The metadata's `una_pos` (the kernel's `snd_una` as a stream position, absolute so that a
//! lost RX frame is healed by the next one) frees bytes at the front. `FAST_RETRANSMIT` rewinds
//! a resend cursor to
//! `snd_una`; [`Stream::next_retransmit`] produces the resend frames, intent RETRANSMIT, which
//! egress sends at their own sequence numbers without moving `snd_nxt`.
//!
//! Recovery from refused frames. Egress may refuse a DATA frame the app cannot foresee (the
//! congestion window, a peer window that shrank, a full ring on the way): the kernel's `tx_pos`
//! then stays behind the app's `snd_nxt` and the app is never told. Egress places DATA by
//! position: a DATA frame may start anywhere from `snd_una`'s position up to the kernel's
//! `tx_pos`; the part already sent goes out as a retransmission, only the rest is new (and
//! window-checked). So the rule here is the TCP retransmission timeout: when no byte was
//! acknowledged for an RTO ([`RtoEstimator`], exponential backoff) while bytes are
//! outstanding, [`Stream::on_timer`] rewinds `snd_nxt` to `snd_una` and [`Stream::next_segment`]
//! sends the bytes again from there as DATA, under a slow-start resend window (one MSS, growing
//! by what each acknowledgement frees) rather than in one burst. Whatever the kernel's `tx_pos`
//! (it is always `snd_una` plus the bytes egress accepted, somewhere in `[snd_una, snd_max]`),
//! the resent frames are accepted, no byte is sent twice as new, and a refused frame costs at
//! most one RTO instead of wedging the stream. RETRANSMIT stays strict (refused unless wholly in
//! flight), which is what fast retransmit wants: it never turns into new data. The RTO follows
//! RTT samples taken one segment at a time, first transmissions only (Karn's rule).
//!
//! Close ([`crate::tcp::close`] keeps the state): [`Stream::close`] ends the send side; once
//! every written byte was framed, [`Stream::next_frame`] writes a FIN frame (intent FIN, no
//! payload), which egress sends in sequence order. The retransmission timer covers the FIN as
//! it covers bytes: a timeout resends the unacknowledged bytes, then the FIN again. `FIN_ACKED`
//! metadata ends our side; the peer's `FIN` ends the other. [`Stream::fail`] ends everything
//! (reset, abort, timeout) with the error later calls report.
use std::{
    collections::VecDeque,
    io,
    time::{Duration, Instant},
};

use crate::bpf::tcp::types::{
    etran_tcp_limit, etran_tcp_rx_flag, etran_tcp_rx_meta, etran_tcp_tx_hdr, etran_tcp_tx_intent,
    tcp_conn_key,
};
use crate::tcp::{
    close::{self, Event},
    rto::{GaveUp, RtoConfig, RtoEstimator},
    window,
};

/// Bytes of the TX header in front of every frame's payload.
pub const TX_HDR_LEN: usize = std::mem::size_of::<etran_tcp_tx_hdr>();
/// Bytes of RX metadata in front of every received frame.
pub const RX_META_LEN: usize = std::mem::size_of::<etran_tcp_rx_meta>();
/// The most payload one frame may carry (egress's bound).
pub const MAX_PAYLOAD: u16 = etran_tcp_limit::ETRAN_TCP_MAX_PAYLOAD.0 as u16;

const FAST_RETRANSMIT: u32 = etran_tcp_rx_flag::ETRAN_TCP_RX_FAST_RETRANSMIT.0;
const FIN: u32 = etran_tcp_rx_flag::ETRAN_TCP_RX_FIN.0;
const OUT_OF_ORDER: u32 = etran_tcp_rx_flag::ETRAN_TCP_RX_OUT_OF_ORDER.0;
const MERGED: u32 = etran_tcp_rx_flag::ETRAN_TCP_RX_MERGED.0;
const FIN_ACKED: u32 = etran_tcp_rx_flag::ETRAN_TCP_RX_FIN_ACKED.0;

/// TX intents as the header's `u8`.
pub const INTENT_DATA: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_DATA.0 as u8;
pub const INTENT_ACK: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_ACK.0 as u8;
pub const INTENT_WINDOW_UPDATE: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_WINDOW_UPDATE.0 as u8;
pub const INTENT_RETRANSMIT: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_RETRANSMIT.0 as u8;
pub const INTENT_FIN: u8 = etran_tcp_tx_intent::ETRAN_TCP_TX_FIN.0 as u8;

/// What the daemon hands over for an established connection (and what it put in the
/// connection's `tcp_conn`).
#[derive(Debug, Clone, Copy)]
pub struct StreamInit {
    pub key: tcp_conn_key,
    /// The kernel's `rx_pos` (stream position of `rcv_nxt`).
    pub rx_pos: u32,
    /// The kernel's `tx_pos` (stream position of `snd_nxt`).
    pub tx_pos: u32,
    /// The peer's window (`snd_wnd`).
    pub peer_wnd: u32,
    /// The connection's MSS (at most [`MAX_PAYLOAD`]).
    pub mss: u16,
    /// Receive buffer bytes: must equal the `rcv_wnd` the daemon gave the connection.
    pub rcv_buf: u32,
    /// Our window scale, which limits the window the buffer can advertise
    /// ([`window::advertisable`]).
    pub rcv_wscale: u8,
    /// Send buffer bytes (unacknowledged plus unsent).
    pub snd_buf: u32,
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
pub struct Segment {
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
    /// Bytes framed again: fast retransmits and resends after a timeout.
    pub retransmitted: u64,
    pub fast_retransmits: u64,
    /// Retransmission timeouts that rewound the send position.
    pub timeouts: u64,
    /// Holes left by data frames lost between ingress and the app (each fails the stream).
    pub rx_holes: u64,
}

/// What [`Stream::on_timer`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerEvent {
    /// Nothing outstanding: no timer runs.
    Idle,
    /// Bytes are outstanding; call again at (or after) this instant.
    Waiting(Instant),
    /// The RTO expired: the send position went back to `snd_una`, so [`Stream::next_segment`]
    /// (or [`Stream::next_frame`]) has frames to resend. The next deadline is backed off.
    Resend,
    /// Too many timeouts in a row without progress: the connection should be aborted.
    GaveUp(GaveUp),
}

/// One connection's byte streams.
pub struct Stream {
    key: tcp_conn_key,
    mss: u16,
    // Receive side.
    rbuf: Box<[u8]>,
    head: usize,             // index of read_pos in rbuf
    read_pos: u32,           // next byte read() returns
    rcv_end: u32,            // end of the readable (in-order) bytes
    unreported: u32,         // consumed, not yet reported in a TX header
    fin: bool,               // the stream ends at rcv_end
    ooo: Option<(u32, u32)>, // out-of-order bytes held: [start, end), one interval as the kernel
    adv: u32,                // the largest window the kernel advertises for this buffer
    // Send side.
    sbuf: VecDeque<u8>, // bytes from snd_una on
    snd_cap: usize,
    snd_una: u32,
    snd_nxt: u32, // next position next_segment frames (goes back on a timeout)
    snd_max: u32, // end of every byte ever framed: [snd_una, snd_max) is outstanding
    peer_wnd: u32,
    hold: bool,               // a short tail of new bytes waits for more (hold_tail)
    nodelay: bool,            // never hold (set_nodelay)
    retx: Option<(u32, u32)>, // [next, end) positions still to resend
    recover: Option<u32>,     // in fast recovery until snd_una reaches this (RFC 6582)
    rto: RtoEstimator,
    rto_deadline: Option<Instant>, // armed lazily by on_timer; None after progress
    // The one segment being timed for an RTT sample: (its end position, when it was framed).
    // Karn's rule: only first transmissions are timed, and a resend cancels the measurement.
    rtt_probe: Option<(u32, Instant)>,
    // After a timeout: how many bytes may be in flight while the rewound bytes are resent. It
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

/// Whether position `a` lies past `b` (serial arithmetic).
fn after(a: u32, b: u32) -> bool {
    (dist(a, b) as i32) > 0
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
            unreported: 0,
            fin: false,
            ooo: None,
            adv: window::advertisable(init.rcv_buf, init.rcv_wscale),
            sbuf: VecDeque::with_capacity(init.snd_buf as usize),
            snd_cap: init.snd_buf as usize,
            snd_una: init.tx_pos,
            snd_nxt: init.tx_pos,
            snd_max: init.tx_pos,
            peer_wnd: init.peer_wnd,
            hold: false,
            nodelay: false,
            retx: None,
            recover: None,
            rto: RtoEstimator::new(rto),
            rto_deadline: None,
            rtt_probe: None,
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
        let mut fx = RxEffect { freed: self.on_una(meta.una_pos), ..RxEffect::default() };
        self.peer_wnd = meta.peer_wnd;
        let len = (meta.payload_len as usize).min(payload.len()) as u32;
        let lost = self.lost_before(meta, len);
        if lost > 0 && self.error.is_none() {
            self.fail(io::ErrorKind::ConnectionAborted);
            self.stats.rx_holes += 1;
            fx.lost = lost;
            return fx;
        }
        if meta.flags & FIN_ACKED != 0 && self.close.fin_queued() {
            self.close = self.close.on(Event::FinAcked);
            self.rto.on_progress();
            self.rto_deadline = None;
        }
        // One fast retransmit per window (RFC 6582): the holes after the first are resent on
        // the partial acknowledgements that follow (on_una).
        if meta.flags & FAST_RETRANSMIT != 0 && self.in_flight() != 0 && self.recover.is_none() {
            self.recover = Some(self.snd_nxt);
            self.resend_hole();
            self.stats.fast_retransmits += 1;
            fx.fast_retransmit = true;
        }
        fx.dropped += meta.payload_len as u32 - len;
        if len > 0 {
            fx.dropped += self.store(meta.rx_pos, &payload[..len as usize]);
        }
        if meta.flags & OUT_OF_ORDER != 0 && len > 0 {
            let (start, end) = (meta.rx_pos, meta.rx_pos.wrapping_add(len));
            // lost_before checked that it touches the interval held, if any.
            self.ooo = Some(match self.ooo {
                None => (start, end),
                Some((a, b)) => {
                    (if after(a, start) { start } else { a }, if after(end, b) { end } else { b })
                }
            });
        }
        if meta.flags & MERGED != 0 {
            self.ooo = None;
        }
        if meta.flags & OUT_OF_ORDER == 0 {
            let mut end = meta.rx_pos.wrapping_add(len);
            if meta.flags & MERGED != 0 {
                end = end.wrapping_add(meta.merged);
            }
            let cap = self.rbuf.len() as u32;
            let reach = dist(end, self.read_pos).min(cap);
            // Only the frame that continues the readable bytes moves the frontier.
            if dist(meta.rx_pos, self.read_pos) <= dist(self.rcv_end, self.read_pos)
                && reach > dist(self.rcv_end, self.read_pos)
            {
                fx.readable = reach - dist(self.rcv_end, self.read_pos);
                self.rcv_end = self.read_pos.wrapping_add(reach);
            }
            if meta.flags & FIN != 0 && !self.fin {
                self.fin = true;
                self.close = self.close.on(Event::PeerFin);
                fx.fin = true;
            }
        }
        self.stats.rx_bytes += u64::from(fx.readable);
        self.stats.rx_dropped += u64::from(fx.dropped);
        fx
    }

    /// Bytes (at most) the kernel delivered in frames that never reached us, as far as this
    /// frame (of `len` payload bytes) shows: an in-order frame starting past the readable end, an
    /// out-of-order one apart from the interval held (the kernel grows its one interval only
    /// by adjacent or overlapping payload), a merge reaching past what we hold.
    fn lost_before(&self, meta: &etran_tcp_rx_meta, len: u32) -> u32 {
        let (pos, end) = (meta.rx_pos, meta.rx_pos.wrapping_add(len));
        if meta.flags & OUT_OF_ORDER != 0 {
            return match self.ooo {
                Some((_, b)) if after(pos, b) => dist(pos, b),
                Some((a, _)) if after(a, end) => dist(a, end),
                _ => 0,
            };
        }
        if after(pos, self.rcv_end) {
            return dist(pos, self.rcv_end);
        }
        let merged_end = end.wrapping_add(meta.merged);
        let covers = |(a, b): (u32, u32)| !after(a, end) && !after(merged_end, b);
        if meta.flags & MERGED != 0 && meta.merged > 0 && !self.ooo.is_some_and(covers) {
            return meta.merged;
        }
        0
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
        self.unreported = self.unreported.wrapping_add(n as u32);
        n
    }

    /// Consumed bytes not yet reported to the kernel.
    pub fn unreported(&self) -> u32 {
        self.unreported
    }

    /// Whether a pure window update should be sent now (see the module doc). The window the
    /// peer has is what the kernel last advertised less what arrived since, as far as this
    /// side knows: the advertisable buffer less the bytes held or read and not reported.
    pub fn window_update_due(&self) -> bool {
        if self.fin || self.unreported == 0 {
            return false;
        }
        let held = dist(self.rcv_end, self.read_pos);
        let after = self.adv.saturating_sub(held);
        let left = after.saturating_sub(self.unreported);
        window::update_due(left, after, self.adv, u32::from(self.mss))
    }

    /// Takes the consumption report for a TX header.
    pub fn take_consumed(&mut self) -> u32 {
        std::mem::take(&mut self.unreported)
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

    pub fn peer_wnd(&self) -> u32 {
        self.peer_wnd
    }

    /// Positions (snd_una, snd_nxt).
    pub fn send_positions(&self) -> (u32, u32) {
        (self.snd_una, self.snd_nxt)
    }

    /// Bytes framed at least once and not yet acknowledged (after a timeout, more than
    /// [`Stream::in_flight`]).
    pub fn outstanding(&self) -> u32 {
        dist(self.snd_max, self.snd_una)
    }

    /// Frees the bytes before the kernel's `snd_una` position; returns how many were freed.
    fn on_una(&mut self, una_pos: u32) -> u32 {
        // Up to everything ever framed: after a timeout rewound snd_nxt, acknowledgements of
        // the earlier transmissions still arrive, and dropping them would leave snd_una behind
        // the kernel's for good. Anything further is a position behind ours: nothing new.
        let n = dist(una_pos, self.snd_una);
        if n == 0 || n > self.outstanding() {
            return 0;
        }
        self.sbuf.drain(..n as usize);
        if n > self.in_flight() {
            self.snd_nxt = self.snd_una.wrapping_add(n);
        }
        let old_una = self.snd_una;
        self.snd_una = self.snd_una.wrapping_add(n);
        if let Some((end, sent)) = self.rtt_probe {
            if dist(end, old_una) <= n {
                self.rtt_probe = None;
                self.rto.on_sample(sent.elapsed());
            }
        }
        if let Some(w) = self.resend_wnd {
            // Done once everything rewound is acknowledged or resent.
            self.resend_wnd = (dist(self.snd_max, self.snd_nxt) != 0).then(|| w.saturating_add(n));
        }
        // Progress: the retry count starts over and the timer restarts (RFC 6298 5.3).
        self.rto.on_progress();
        self.rto_deadline = None;
        match self.recover {
            // Everything sent before the loss is acknowledged: recovery is over.
            Some(rec) if n >= dist(rec, old_una) => {
                self.recover = None;
                self.retx = None;
            }
            // A partial acknowledgement: the peer's next hole starts at snd_una.
            Some(_) => self.resend_hole(),
            None => self.retx = None,
        }
        n
    }

    /// Sets the resend range to the segment at snd_una, the one the peer is missing.
    fn resend_hole(&mut self) {
        let len = self.in_flight().min(u32::from(self.mss));
        self.retx = (len > 0).then(|| (self.snd_una, self.snd_una.wrapping_add(len)));
    }

    /// Writes the next new DATA frame into `frame` (header plus payload), if there are unsent
    /// bytes the peer's window admits. The header carries the pending consumption report.
    pub fn next_segment(&mut self, frame: &mut [u8]) -> Option<Segment> {
        let room = frame.len().checked_sub(TX_HDR_LEN)?;
        let len = self.sendable().min(room);
        if len == 0 {
            return None;
        }
        let seg = self.emit(frame, self.snd_nxt, len, INTENT_DATA);
        // Below snd_max the bytes were framed before (a resend after a timeout).
        let again = dist(self.snd_max, self.snd_nxt).min(len as u32);
        self.snd_nxt = self.snd_nxt.wrapping_add(len as u32);
        if again == 0 && self.rtt_probe.is_none() {
            self.rtt_probe = Some((self.snd_nxt, Instant::now()));
        }
        if dist(self.snd_nxt, self.snd_una) >= self.outstanding() {
            self.snd_max = self.snd_nxt;
            self.resend_wnd = None;
        }
        self.stats.tx_bytes += u64::from(len as u32 - again);
        self.stats.retransmitted += u64::from(again);
        Some(seg)
    }

    /// The next frame to send: a pending resend first, then new data, then the FIN.
    pub fn next_frame(&mut self, frame: &mut [u8]) -> Option<Segment> {
        if self.close.is_closed() {
            return None;
        }
        if self.retx.is_some() {
            if let Some(seg) = self.next_retransmit(frame) {
                return Some(seg);
            }
        }
        if let Some(seg) = self.next_segment(frame) {
            return Some(seg);
        }
        if !self.fin_due() {
            return None;
        }
        let frame_len = self.control_frame(INTENT_FIN, frame)?;
        self.fin_sent = true;
        Some(Segment { tx_pos: self.snd_nxt, payload_len: 0, frame_len })
    }

    /// Whether [`Stream::next_frame`] would produce a frame now (windows and coalescing
    /// included).
    pub fn tx_ready(&self) -> bool {
        !self.close.is_closed() && (self.retx.is_some() || self.sendable() > 0 || self.fin_due())
    }

    /// Payload the next DATA frame carries (frame room aside): the unsent bytes the windows
    /// admit, at most a segment; 0 while a short tail of new bytes is held (see
    /// [`Stream::hold_tail`]).
    fn sendable(&self) -> usize {
        let window = self.send_wnd().saturating_sub(self.in_flight()) as usize;
        let len = self.unsent().min(window).min(self.mss as usize);
        let short_tail =
            len == self.unsent() && len < self.mss as usize && self.snd_nxt == self.snd_max;
        if short_tail && self.hold {
            0
        } else {
            len
        }
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

    /// The window new frames may fill: the peer's, and after a timeout the resend window.
    fn send_wnd(&self) -> u32 {
        self.resend_wnd.map_or(self.peer_wnd, |w| w.min(self.peer_wnd))
    }

    /// The FIN goes out once every written byte was framed.
    fn fin_due(&self) -> bool {
        self.close.fin_queued() && !self.fin_sent && self.unsent() == 0
    }

    /// A FIN went out and is not acknowledged: the retransmission timer covers it.
    fn fin_in_flight(&self) -> bool {
        self.close.fin_queued() && self.fin_sent
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
        self.retx = None;
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

    /// Drives the retransmission timer: call it on every poll (and at the [`TimerEvent::Waiting`]
    /// instant). The timer runs while bytes are outstanding; it is armed at the first call that
    /// finds them, so the caller's polling granularity adds to the RTO.
    pub fn on_timer(&mut self, now: Instant) -> TimerEvent {
        if self.close.is_closed() || (self.outstanding() == 0 && !self.fin_in_flight()) {
            self.rto_deadline = None;
            return TimerEvent::Idle;
        }
        match self.rto_deadline {
            None => {
                let at = now + self.rto.rto();
                self.rto_deadline = Some(at);
                TimerEvent::Waiting(at)
            }
            Some(at) if now < at => TimerEvent::Waiting(at),
            Some(_) => match self.rto.on_timeout() {
                Err(gave_up) => {
                    self.rto_deadline = None;
                    TimerEvent::GaveUp(gave_up)
                }
                Ok(wait) => {
                    // Resend everything from the last acknowledged byte (and the FIN after
                    // it): see the module doc.
                    self.snd_nxt = self.snd_una;
                    self.resend_wnd = Some(u32::from(self.mss));
                    self.rtt_probe = None;
                    self.fin_sent = false;
                    self.retx = None;
                    self.recover = None;
                    self.rto_deadline = Some(now + wait);
                    self.stats.timeouts += 1;
                    TimerEvent::Resend
                }
            },
        }
    }

    /// The current retransmission timeout (backoff included).
    pub fn rto(&self) -> Duration {
        self.rto.rto()
    }

    /// The smoothed round-trip time, once a segment was timed.
    pub fn srtt(&self) -> Option<Duration> {
        self.rto.srtt()
    }

    /// Whether fast recovery left bytes to resend.
    pub fn retransmit_pending(&self) -> bool {
        self.retx.is_some()
    }

    /// Writes the next resend frame, intent RETRANSMIT: the segment at `snd_una` after a fast
    /// retransmit or a partial acknowledgement in fast recovery.
    pub fn next_retransmit(&mut self, frame: &mut [u8]) -> Option<Segment> {
        let (pos, end) = self.retx?;
        let room = frame.len().checked_sub(TX_HDR_LEN)?;
        let len = dist(end, pos).min(dist(self.snd_nxt, pos)) as usize;
        let len = len.min(self.mss as usize).min(room);
        if len == 0 {
            self.retx = None;
            return None;
        }
        let seg = self.emit(frame, pos, len, INTENT_RETRANSMIT);
        self.rtt_probe = None;
        let next = pos.wrapping_add(len as u32);
        self.retx = (next != end).then_some((next, end));
        self.stats.retransmitted += len as u64;
        Some(seg)
    }

    /// Header and `len` bytes from stream position `pos` (within the send buffer).
    fn emit(&mut self, frame: &mut [u8], pos: u32, len: usize, intent: u8) -> Segment {
        let off = dist(pos, self.snd_una) as usize;
        let hdr = etran_tcp_tx_hdr {
            key: self.key,
            tx_pos: pos,
            consumed: self.take_consumed(),
            len: len as u16,
            intent,
            reserved: 0,
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
        Segment { tx_pos: pos, payload_len: len as u16, frame_len: TX_HDR_LEN + len }
    }

    /// Writes a payload-less frame (ACK or WINDOW_UPDATE) carrying the consumption report.
    pub fn control_frame(&mut self, intent: u8, frame: &mut [u8]) -> Option<usize> {
        if frame.len() < TX_HDR_LEN {
            return None;
        }
        let hdr = etran_tcp_tx_hdr {
            key: self.key,
            tx_pos: self.snd_nxt,
            consumed: self.take_consumed(),
            len: 0,
            intent,
            reserved: 0,
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

/// Reads RX metadata from `bytes` (exactly [`RX_META_LEN`] or more).
pub fn read_meta(bytes: &[u8]) -> etran_tcp_rx_meta {
    assert!(bytes.len() >= RX_META_LEN);
    // SAFETY: plain data, every bit pattern valid, read without alignment.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<etran_tcp_rx_meta>()) }
}

#[cfg(test)]
mod tests;
