//! The sender's side of SACK (RFC 2018, 6675, 8985), pure: the SACK blocks of a received frame
//! and the scoreboard of what was sent, delivered and lost.
//!
//! Everything is in send-stream positions (the app's `tx_pos` space, wrapping `u32`); the
//! caller converts the peer's sequence numbers ([`Blocks::from_frame`] returns them raw).
//!
//! The scoreboard keeps one entry per transmitted segment from `snd_una` on, with when and in
//! which order it was (last) sent. A segment is *lost* when (RFC 6675's IsLost, counted in
//! transmissions rather than sequence numbers so that it covers retransmissions too)
//! [`DUP_THRESH`] segments sent after it were delivered, or (RFC 8985, RACK) one segment sent
//! after it was delivered and a reordering timeout passed since it was sent. So a lost
//! retransmission is found like a lost first transmission, and a tail loss after a probe. The
//! bytes in the network ("pipe", RFC 6675) are the outstanding ones less those SACKed and those
//! deemed lost and not yet resent.
use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use crate::bpf::tcp::types::tcp_sack_limit;

/// Segments delivered after one before it is deemed lost (RFC 6675's DupThresh; the fast path's
/// third duplicate ACK).
pub const DUP_THRESH: usize = tcp_sack_limit::TCP_DUP_THRESH.0 as usize;
/// The most SACK blocks a segment carries (40 option bytes).
pub const MAX_BLOCKS: usize = tcp_sack_limit::TCP_SACK_MAX_BLOCKS.0 as usize;

const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_SACK: u8 = 5;

/// The SACK blocks of one segment: `[left, right)` sequence numbers, in the order sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Blocks {
    len: usize,
    blocks: [(u32, u32); MAX_BLOCKS],
}

impl Blocks {
    pub fn new(blocks: &[(u32, u32)]) -> Blocks {
        let mut b = Blocks::default();
        for &block in blocks.iter().take(MAX_BLOCKS) {
            b.blocks[b.len] = block;
            b.len += 1;
        }
        b
    }

    /// The SACK option of a whole frame (Ethernet, IPv4, TCP: as ingress hands it over). A frame
    /// that is not that, or whose options are malformed, has none.
    pub fn from_frame(frame: &[u8]) -> Blocks {
        let ip = frame.get(14..).unwrap_or_default();
        if frame.get(12..14) != Some(&[0x08, 0x00]) || ip.first().is_none_or(|b| b >> 4 != 4) {
            return Blocks::default();
        }
        let tcp = ip.get(usize::from(ip[0] & 0xf) * 4..).unwrap_or_default();
        let Some(&doff) = tcp.get(12) else { return Blocks::default() };
        let opts = tcp.get(20..usize::from(doff >> 4) * 4).unwrap_or_default();
        Blocks::from_options(opts)
    }

    /// The SACK option among TCP option bytes, if well formed.
    pub fn from_options(mut opts: &[u8]) -> Blocks {
        while let Some(&kind) = opts.first() {
            match kind {
                TCPOPT_EOL => break,
                TCPOPT_NOP => {
                    opts = &opts[1..];
                    continue;
                }
                _ => {}
            }
            let Some(&len) = opts.get(1) else { break };
            let len = usize::from(len);
            if len < 2 || len > opts.len() {
                break;
            }
            if kind == TCPOPT_SACK {
                let body = &opts[2..len];
                if body.len() % 8 != 0 || body.len() > 8 * MAX_BLOCKS {
                    break;
                }
                let word = |b: &[u8]| u32::from_be_bytes(b.try_into().expect("4 bytes"));
                let mut b = Blocks::default();
                for block in body.chunks_exact(8) {
                    b.blocks[b.len] = (word(&block[..4]), word(&block[4..]));
                    b.len += 1;
                }
                return b;
            }
            opts = &opts[len..];
        }
        Blocks::default()
    }

    pub fn as_slice(&self) -> &[(u32, u32)] {
        &self.blocks[..self.len]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `a - b` along the stream.
fn dist(a: u32, b: u32) -> u32 {
    a.wrapping_sub(b)
}

/// One transmitted segment, `[start, end)` positions.
#[derive(Debug, Clone, Copy)]
struct Seg {
    start: u32,
    end: u32,
    /// When it was last sent.
    sent: Instant,
    /// Its last transmission's place in the order of all transmissions (from 1).
    xmit: u64,
    sacked: bool,
    /// Deemed lost and not resent since.
    lost: bool,
    /// Sent more than once (Karn: no RTT sample).
    retransmitted: bool,
}

impl Seg {
    fn len(&self) -> u32 {
        dist(self.end, self.start)
    }
}

/// What a cumulative or selective acknowledgement did to the scoreboard.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The RTT of the most recently sent segment it delivered, if that one was sent once.
    pub rtt: Option<Duration>,
    /// Segments it delivered that had not been SACKed before.
    pub segments: u32,
    /// The first block that reported data below `snd_una` or inside another block (RFC 2883):
    /// the peer got those bytes (positions) twice.
    pub dsack: Option<(u32, u32)>,
}

impl Delivery {
    fn merge(&mut self, other: Delivery) {
        self.rtt = other.rtt.or(self.rtt);
        self.segments += other.segments;
        self.dsack = self.dsack.or(other.dsack);
    }
}

/// The segments sent from `snd_una` on, contiguous, in stream order.
#[derive(Debug, Default)]
pub struct Scoreboard {
    segs: VecDeque<Seg>,
    /// Transmissions so far (the last one's `xmit`).
    xmits: u64,
    /// The largest `xmit`s delivered (SACKed or cumulatively acknowledged), largest first.
    delivered: [u64; DUP_THRESH],
    sacked_bytes: u32,
    lost_bytes: u32,
    /// Segments whose last transmission was a retransmission and that are not delivered.
    resent_segs: usize,
    sacked_segs: usize,
}

impl Scoreboard {
    /// Bytes sent and not cumulatively acknowledged.
    pub fn outstanding(&self) -> u32 {
        match (self.segs.front(), self.segs.back()) {
            (Some(f), Some(b)) => dist(b.end, f.start),
            _ => 0,
        }
    }

    /// The bytes in the network (RFC 6675 pipe): outstanding, less SACKed, less deemed lost
    /// and not resent.
    pub fn pipe(&self) -> u32 {
        self.outstanding() - self.sacked_bytes - self.lost_bytes
    }

    /// When only retransmissions are in the network (every other byte outstanding SACKed or
    /// deemed lost): the first one's start and when the last of them went out. RACK finds a
    /// lost segment by the delivery of one sent after it; after these, nothing was.
    pub fn only_resends_out(&self) -> Option<(u32, Instant)> {
        let mut out: Option<(u32, Instant)> = None;
        for s in self.segs.iter().filter(|s| !s.sacked && !s.lost) {
            if !s.retransmitted {
                return None;
            }
            out = Some(out.map_or((s.start, s.sent), |(start, at)| (start, at.max(s.sent))));
        }
        out
    }

    /// Bytes deemed lost and waiting to be resent.
    pub fn lost_bytes(&self) -> u32 {
        self.lost_bytes
    }

    pub fn sacked_bytes(&self) -> u32 {
        self.sacked_bytes
    }

    /// New data `[start, end)` went out (it continues the segments held).
    pub fn sent(&mut self, start: u32, end: u32, now: Instant) {
        debug_assert!(self.segs.back().is_none_or(|b| b.end == start));
        self.xmits += 1;
        self.segs.push_back(Seg {
            start,
            end,
            sent: now,
            xmit: self.xmits,
            sacked: false,
            lost: false,
            retransmitted: false,
        });
    }

    /// Index of the segment holding position `pos`, if any (`pos` within the outstanding bytes).
    fn find(&self, pos: u32) -> Option<usize> {
        let front = self.segs.front()?.start;
        let off = dist(pos, front);
        if off >= self.outstanding() {
            return None;
        }
        Some(self.segs.partition_point(|s| dist(s.end, front) <= off))
    }

    /// Splits the segment holding `pos` so that one starts there. Returns its index.
    fn split_at(&mut self, pos: u32) -> Option<usize> {
        let i = self.find(pos)?;
        let seg = self.segs[i];
        if seg.start == pos {
            return Some(i);
        }
        self.segs[i].end = pos;
        self.segs.insert(i + 1, Seg { start: pos, ..seg });
        self.resent_segs += usize::from(seg.retransmitted && !seg.sacked);
        self.sacked_segs += usize::from(seg.sacked);
        Some(i + 1)
    }

    /// The lowest range deemed lost, at most `max` bytes (split off so that it can be resent
    /// alone).
    pub fn next_lost(&mut self, max: u32) -> Option<(u32, u32)> {
        if self.lost_bytes == 0 {
            return None;
        }
        let i = self.segs.iter().position(|s| s.lost)?;
        let seg = self.segs[i];
        if seg.len() > max {
            self.split_at(seg.start.wrapping_add(max));
        }
        let seg = self.segs[i];
        Some((seg.start, seg.end))
    }

    /// `[start, end)` (from [`Scoreboard::next_lost`], or within the outstanding bytes) was sent
    /// again.
    pub fn resent(&mut self, start: u32, end: u32, now: Instant) {
        let Some(first) = self.split_at(start) else { return };
        // The index of `start`'s segment stays: a split at `end` inserts after it.
        let stop = self.split_at(end).unwrap_or(self.segs.len());
        self.xmits += 1;
        for s in self.segs.range_mut(first..stop) {
            if s.sacked {
                continue;
            }
            if s.lost {
                s.lost = false;
                self.lost_bytes -= s.len();
            }
            self.resent_segs += usize::from(!s.retransmitted);
            s.retransmitted = true;
            s.sent = now;
            s.xmit = self.xmits;
        }
    }

    /// A segment was delivered: remember its transmission's place.
    fn note_delivered(&mut self, xmit: u64) {
        if xmit <= self.delivered[DUP_THRESH - 1] {
            return;
        }
        let mut v = xmit;
        for d in self.delivered.iter_mut() {
            if v > *d {
                std::mem::swap(&mut v, d);
            }
        }
    }

    /// The cumulative acknowledgement reached `una`: the segments before it leave.
    pub fn ack(&mut self, una: u32, now: Instant) -> Delivery {
        let mut out = Delivery::default();
        let mut newest: Option<Seg> = None;
        if let Some(i) = self.split_at(una) {
            self.drop_front(i, &mut out, &mut newest);
        } else if self.segs.back().is_some_and(|b| b.end == una) {
            self.drop_front(self.segs.len(), &mut out, &mut newest);
        }
        out.rtt =
            newest.filter(|s| !s.retransmitted).map(|s| now.saturating_duration_since(s.sent));
        out
    }

    fn drop_front(&mut self, n: usize, out: &mut Delivery, newest: &mut Option<Seg>) {
        for _ in 0..n {
            let s = self.segs.pop_front().expect("n segments held");
            if s.sacked {
                self.sacked_bytes -= s.len();
                self.sacked_segs -= 1;
                continue;
            }
            if s.lost {
                self.lost_bytes -= s.len();
            }
            self.resent_segs -= usize::from(s.retransmitted);
            self.note_delivered(s.xmit);
            out.segments += 1;
            if newest.is_none_or(|n| s.xmit > n.xmit) {
                *newest = Some(s);
            }
        }
    }

    /// SACK blocks (positions): the segments they cover are delivered. Blocks below the first
    /// outstanding byte, or inside another block of the same segment, are D-SACKs (RFC 2883).
    pub fn sack(&mut self, blocks: &[(u32, u32)], now: Instant) -> Delivery {
        let mut out = Delivery::default();
        let Some(front) = self.segs.front().map(|s| s.start) else {
            out.dsack = blocks.first().copied();
            return out;
        };
        let total = self.outstanding();
        let mut newest: Option<Seg> = None;
        for (k, &(l, r)) in blocks.iter().enumerate() {
            let (lo, hi) = (dist(l, front), dist(r, front));
            let inside_next = blocks
                .get(1)
                .is_some_and(|&(l1, r1)| k == 0 && dist(l, l1) < 1 << 31 && dist(r1, r) < 1 << 31);
            if lo >= 1 << 31 || inside_next {
                // Below snd_una, or a duplicate inside the next block.
                out.dsack.get_or_insert((l, r));
                continue;
            }
            if hi <= lo || lo >= total {
                continue;
            }
            let hi = hi.min(total);
            let Some(first) = self.split_at(front.wrapping_add(lo)) else { continue };
            let stop = if hi == total {
                self.segs.len()
            } else {
                self.split_at(front.wrapping_add(hi)).unwrap_or(self.segs.len())
            };
            for i in first..stop {
                let s = self.segs[i];
                if s.sacked {
                    continue;
                }
                if s.lost {
                    self.lost_bytes -= s.len();
                }
                self.segs[i].sacked = true;
                self.segs[i].lost = false;
                self.sacked_bytes += s.len();
                self.sacked_segs += 1;
                self.resent_segs -= usize::from(s.retransmitted);
                self.note_delivered(s.xmit);
                out.segments += 1;
                if newest.is_none_or(|n| s.xmit > n.xmit) {
                    newest = Some(s);
                }
            }
        }
        out.rtt =
            newest.filter(|s| !s.retransmitted).map(|s| now.saturating_duration_since(s.sent));
        out
    }

    /// Applies a cumulative acknowledgement and SACK blocks together.
    pub fn on_ack(&mut self, una: u32, blocks: &[(u32, u32)], now: Instant) -> Delivery {
        let mut d = self.ack(una, now);
        d.merge(self.sack(blocks, now));
        d
    }

    /// Whether the peer dropped data it had SACKed (RFC 2018 8: reneging): the segment at
    /// `snd_una` is marked SACKed, yet the cumulative acknowledgement stopped before it.
    pub fn reneged(&self) -> bool {
        self.segs.front().is_some_and(|s| s.sacked)
    }

    /// Forgets every SACK mark (after reneging, or when a timeout suggests it).
    pub fn clear_sacks(&mut self) {
        for s in self.segs.iter_mut().filter(|s| s.sacked) {
            s.sacked = false;
            self.resent_segs += usize::from(s.retransmitted);
        }
        self.sacked_bytes = 0;
        self.sacked_segs = 0;
    }

    /// Marks losses (see the module doc): `reo_timeout` is how long after its transmission a
    /// segment that a later one overtook is deemed lost (RTT plus a reordering window). Returns
    /// when the next one would be, if one is pending.
    pub fn mark_losses(&mut self, now: Instant, reo_timeout: Duration) -> Option<Instant> {
        if self.sacked_segs == 0 && self.resent_segs == 0 {
            return None; // nothing delivered out of order: nothing can be lost
        }
        let newest = self.delivered[0];
        let thresh = self.delivered[DUP_THRESH - 1];
        let mut next: Option<Instant> = None;
        for s in self.segs.iter_mut() {
            if s.sacked || s.lost || s.xmit >= newest {
                continue;
            }
            let due = s.sent + reo_timeout;
            if s.xmit < thresh || now >= due {
                s.lost = true;
                self.lost_bytes += s.len();
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        next
    }

    /// Marks every segment not SACKed as lost (a retransmission timeout).
    pub fn mark_all_lost(&mut self) {
        for s in self.segs.iter_mut() {
            if !s.sacked && !s.lost {
                s.lost = true;
                self.lost_bytes += s.len();
            }
        }
    }

    /// Marks the segment holding `pos` as lost (a partial acknowledgement without SACK, or a
    /// probe of the last segment), unless SACKed or already marked.
    pub fn mark_lost_at(&mut self, pos: u32) {
        if let Some(i) = self.find(pos) {
            let s = &mut self.segs[i];
            if !s.sacked && !s.lost {
                s.lost = true;
                self.lost_bytes += s.len();
            }
        }
    }

    /// The last segment sent, `[start, end)`.
    pub fn last(&self) -> Option<(u32, u32)> {
        self.segs.back().map(|s| (s.start, s.end))
    }

    /// Segments held (tests and stats).
    pub fn segments(&self) -> usize {
        self.segs.len()
    }

    /// The counters kept along agree with the segments (tests).
    #[cfg(test)]
    pub fn assert_consistent(&self) {
        let sum =
            |f: fn(&Seg) -> bool| -> u32 { self.segs.iter().filter(|s| f(s)).map(Seg::len).sum() };
        assert_eq!(self.sacked_bytes, sum(|s| s.sacked), "sacked bytes");
        assert_eq!(self.lost_bytes, sum(|s| s.lost), "lost bytes");
        let count = |f: fn(&Seg) -> bool| self.segs.iter().filter(|s| f(s)).count();
        assert_eq!(self.sacked_segs, count(|s| s.sacked), "sacked segments");
        assert_eq!(self.resent_segs, count(|s| s.retransmitted && !s.sacked), "resent segments");
        assert!(self.segs.iter().zip(self.segs.iter().skip(1)).all(|(a, b)| a.end == b.start));
        assert!(self.segs.iter().all(|s| !(s.sacked && s.lost) && s.len() > 0));
    }
}

#[cfg(test)]
mod tests;
