//! The sender's side: every outgoing message of an app, cut into DATA segments of at most
//! [`MAX_PAYLOAD`] bytes, sent shortest remaining message first (SRPT: fewest bytes left to
//! send), never beyond what the receiver allowed: the unscheduled bytes, then its grants.
//! Whatever may not leave yet simply waits here; nothing is dropped. Bytes a RESEND asks for
//! go before new data, at the priority the RESEND names, as HomaModule resends at once. Bytes
//! the receiver granted from its FIFO share (a GRANT at [`HIGH_PRIORITY`], above every level
//! it grants by rank) go before other scheduled bytes, oldest message first: the receiver gave
//! them to a message SRPT made wait, and a sender that kept them back for its shorter messages
//! would undo that share (one sender carrying every message to a receiver would starve its
//! long ones at its own SRPT). Unscheduled bytes keep their SRPT turn before them.
//!
//! Generic over the message key `K` (the caller's RPC handle), so that one `Sender` serves all
//! of an app's RPCs to every peer: the app's uplink is what SRPT shares.
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{prio::HIGH_PRIORITY, ranges::Ranges, wire::ResendLength, MAX_PAYLOAD};
use crate::bpf::homa::types::etran_homa_limit;

/// Bytes of a message a sender may send before any grant: HomaModule's `unsched_bytes`
/// (homa_utils.c; the original eTran used 60,000): `ETRAN_HOMA_UNSCHED_BYTES`, which egress
/// enforces.
pub const UNSCHED_BYTES: u32 = etran_homa_limit::ETRAN_HOMA_UNSCHED_BYTES.0;

/// The unscheduled bytes of a `length`-byte message: `unsched_bytes` rounded up to full packets
/// (no short packet at the boundary), at most the message. DATA announces it as `incoming`.
pub fn unscheduled(length: u32, unsched_bytes: u32) -> u32 {
    unsched_bytes.div_ceil(MAX_PAYLOAD).saturating_mul(MAX_PAYLOAD).min(length)
}

/// One DATA packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<K> {
    pub key: K,
    pub offset: u32,
    pub len: u32,
    pub priority: u8,
    /// Asked for by a RESEND.
    pub retransmit: bool,
}

/// How to answer a RESEND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResendReply {
    /// The bytes asked for are queued again.
    Resending,
    /// None of them was sent yet (we chose other messages): answer BUSY, so that the
    /// receiver knows we are alive.
    Busy,
}

#[derive(Debug)]
struct OutMsg {
    length: u32,
    /// The receiver allows bytes below this (unscheduled, then granted).
    granted: u32,
    /// Bytes below this were sent once.
    sent: u32,
    /// `sent` at each of the last ticks, oldest first ([`Sender::tick`]).
    sent_at: VecDeque<u32>,
    unsched: u32,
    unsched_priority: u8,
    /// The latest GRANT's priority, for scheduled bytes.
    sched_priority: u8,
    /// Bytes below this were granted from the receiver's FIFO share.
    fifo_until: u32,
    birth: u64,
    /// Bytes owed again, and the latest RESEND's priority for them.
    resend: Ranges,
    resend_priority: u8,
}

impl OutMsg {
    fn limit(&self) -> u32 {
        self.granted.min(self.length)
    }
}

/// An app's outgoing messages.
#[derive(Debug)]
pub struct Sender<K> {
    msgs: BTreeMap<K, OutMsg>,
    /// SRPT order, (bytes left to send once, age, key), of the messages with new bytes they may
    /// send, and of those with bytes owed again.
    ready: BTreeSet<(u32, u64, K)>,
    resending: BTreeSet<(u32, u64, K)>,
    /// The messages with bytes from a FIFO grant to send, oldest first: (age, key).
    fifo: BTreeSet<(u64, K)>,
    births: u64,
    unsched_bytes: u32,
    /// The age [`Sender::tick`] was last given.
    age: usize,
}

impl<K: Ord + Copy> Sender<K> {
    pub fn new(unsched_bytes: u32) -> Sender<K> {
        Sender {
            msgs: BTreeMap::new(),
            ready: BTreeSet::new(),
            resending: BTreeSet::new(),
            fifo: BTreeSet::new(),
            births: 0,
            unsched_bytes,
            age: 1,
        }
    }

    /// A new message of `length` bytes (more than 0), whose unscheduled bytes go at
    /// `unsched_priority` (from the receiver's cutoffs). Returns its unscheduled bytes, the
    /// `incoming` of its DATA. A key already present is left as it is.
    pub fn add(&mut self, key: K, length: u32, unsched_priority: u8) -> u32 {
        let unsched = unscheduled(length, self.unsched_bytes);
        if self.msgs.contains_key(&key) {
            return unsched;
        }
        self.births += 1;
        self.msgs.insert(
            key,
            OutMsg {
                length,
                granted: unsched,
                sent: 0,
                sent_at: VecDeque::new(),
                unsched,
                unsched_priority,
                sched_priority: 0,
                fifo_until: 0,
                birth: self.births,
                resend: Ranges::default(),
                resend_priority: 0,
            },
        );
        self.file(key);
        unsched
    }

    /// The message is done (acknowledged, aborted): it sends nothing more.
    pub fn remove(&mut self, key: K) {
        self.unfile(key);
        self.msgs.remove(&key);
    }

    /// A GRANT: bytes below `offset` may go, scheduled ones at `priority`; at
    /// [`HIGH_PRIORITY`] or above it comes from the receiver's FIFO share.
    pub fn on_grant(&mut self, key: K, offset: u32, priority: u8) {
        self.update(key, |m| {
            m.granted = m.granted.max(offset.min(m.length));
            m.sched_priority = priority;
            if priority >= HIGH_PRIORITY {
                m.fifo_until = m.fifo_until.max(m.granted);
            }
        });
    }

    /// One tick of the loss timer: bytes sent `age` ticks ago or more count as settled. A RESEND
    /// takes only those again; bytes sent since are taken as still on their way (HomaModule
    /// does not resend a packet still in the NIC's queue; here queues between two apps, a
    /// veth's among them, can hold a packet for milliseconds on a loaded host).
    pub fn tick(&mut self, age: usize) {
        for m in self.msgs.values_mut() {
            m.sent_at.push_back(m.sent);
            while m.sent_at.len() > age.max(1) {
                m.sent_at.pop_front();
            }
        }
        self.age = age.max(1);
    }

    /// A RESEND of `length` bytes at `offset`; `None` when the message is unknown (the caller
    /// answers RPC_UNKNOWN). Only bytes sent once, at least the age [`Sender::tick`] was given
    /// ago, are sent again (BUSY for the rest); a RESEND reaching past the grant means a GRANT
    /// was lost, so the grant grows to its end (HomaModule's rule).
    pub fn on_resend(
        &mut self,
        key: K,
        offset: u32,
        length: ResendLength,
        priority: u8,
    ) -> Option<ResendReply> {
        let age = self.age;
        self.update(key, |m| {
            let end = match length {
                ResendLength::Bytes(n) => offset.saturating_add(n),
                ResendLength::All => m.sent,
            };
            m.granted = m.granted.max(end.min(m.length));
            // Fewer ticks than the age since the message came: nothing settled yet.
            let settled = if m.sent_at.len() >= age { m.sent_at[0] } else { 0 };
            if offset >= settled {
                return ResendReply::Busy;
            }
            m.resend.insert(offset, end.min(settled));
            m.resend_priority = priority;
            ResendReply::Resending
        })
    }

    /// The receiver lost the whole RPC (RPC_UNKNOWN to a client's request): everything sent
    /// goes again, at the unscheduled priority.
    pub fn restart(&mut self, key: K) {
        self.update(key, |m| {
            m.resend.insert(0, m.sent);
            m.resend_priority = m.unsched_priority;
        });
    }

    /// The next packet to send, if any may go: bytes owed again first, then new bytes of the
    /// message with the fewest left to send, unless it is past its unscheduled bytes and
    /// another holds bytes from a FIFO grant (the oldest such goes first).
    pub fn next_segment(&mut self) -> Option<Segment<K>> {
        if let Some(&(_, _, key)) = self.resending.first() {
            return self.update(key, |m| {
                let (s, e) = m.resend.pop_front(MAX_PAYLOAD).expect("filed as resending");
                Segment {
                    key,
                    offset: s,
                    len: e - s,
                    priority: m.resend_priority,
                    retransmit: true,
                }
            });
        }
        let &(_, _, mut key) = self.ready.first()?;
        if let Some(&(_, oldest)) = self.fifo.first() {
            if self.msgs[&key].sent >= self.msgs[&key].unsched {
                key = oldest;
            }
        }
        self.update(key, |m| {
            let offset = m.sent;
            let len = (m.limit() - offset).min(MAX_PAYLOAD);
            m.sent += len;
            let priority = if offset < m.unsched { m.unsched_priority } else { m.sched_priority };
            Segment { key, offset, len, priority, retransmit: false }
        })
    }

    /// Whether a packet may go now ([`Sender::next_segment`] has one).
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty() || !self.resending.is_empty()
    }

    /// Whether a packet of a message whose key `which` picks may go now (it is among those
    /// [`Sender::next_segment`] chooses from).
    pub fn ready_for(&self, which: impl Fn(&K) -> bool) -> bool {
        self.ready.iter().chain(&self.resending).any(|(_, _, k)| which(k))
    }

    /// Bytes of the message sent once, and the most it may send now: the loss timer's view.
    pub fn progress(&self, key: K) -> Option<(u32, u32)> {
        self.msgs.get(&key).map(|m| (m.sent, m.limit()))
    }

    /// Changes one message, keeping the SRPT order right.
    fn update<R>(&mut self, key: K, change: impl FnOnce(&mut OutMsg) -> R) -> Option<R> {
        self.unfile(key);
        let r = change(self.msgs.get_mut(&key)?);
        self.file(key);
        Some(r)
    }

    fn order(&self, key: K) -> Option<(u32, u64, K)> {
        self.msgs.get(&key).map(|m| (m.length - m.sent, m.birth, key))
    }

    fn file(&mut self, key: K) {
        let Some(o) = self.order(key) else { return };
        let m = &self.msgs[&key];
        if m.sent < m.limit() {
            self.ready.insert(o);
        }
        if !m.resend.is_empty() {
            self.resending.insert(o);
        }
        if m.sent < m.fifo_until.min(m.limit()) {
            self.fifo.insert((m.birth, key));
        }
    }

    fn unfile(&mut self, key: K) {
        if let Some(o) = self.order(key) {
            self.ready.remove(&o);
            self.resending.remove(&o);
            self.fifo.remove(&(o.1, key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: &mut Sender<u32>) -> Vec<Segment<u32>> {
        std::iter::from_fn(|| s.next_segment()).collect()
    }

    #[test]
    fn unscheduled_bytes_are_full_packets() {
        assert_eq!(unscheduled(100, UNSCHED_BYTES), 100);
        assert_eq!(unscheduled(1 << 20, UNSCHED_BYTES), 29 * 1424, "40,000 rounded up");
        assert_eq!(unscheduled(1 << 20, 0), 0);
        // What egress lets a message send before a grant.
        let limit = etran_homa_limit::ETRAN_HOMA_UNSCHED_LIMIT.0;
        assert_eq!(unscheduled(u32::MAX, UNSCHED_BYTES), limit);
    }

    #[test]
    fn never_beyond_the_grant_then_grants_let_more_out() {
        let mut s = Sender::new(UNSCHED_BYTES);
        let unsched = s.add(1, 100_000, 4);
        let first = drain(&mut s);
        assert_eq!(first.iter().map(|g| g.len).sum::<u32>(), unsched, "unscheduled only");
        assert!(first.iter().all(|g| g.priority == 4 && !g.retransmit && g.len == MAX_PAYLOAD));
        s.on_grant(1, unsched + 3000, 2);
        let more = drain(&mut s);
        assert_eq!(
            more.iter().map(|g| (g.offset, g.len, g.priority)).collect::<Vec<_>>(),
            [(unsched, 1424, 2), (unsched + 1424, 1424, 2), (unsched + 2848, 152, 2)]
        );
        s.on_grant(1, 10, 1);
        assert_eq!(s.next_segment(), None, "a smaller grant takes nothing back");
        s.on_grant(1, u32::MAX, 0);
        let rest = drain(&mut s);
        assert_eq!(rest.last().map(|g| g.offset + g.len), Some(100_000), "capped at the end");
        assert_eq!(s.progress(1), Some((100_000, 100_000)));
    }

    #[test]
    fn shortest_remaining_first() {
        let mut s = Sender::new(u32::MAX);
        s.add(1, 10_000, 0);
        s.add(2, 3000, 0);
        s.add(3, 3000, 0);
        let order: Vec<u32> = drain(&mut s).iter().map(|g| g.key).collect();
        // 2 and 3 tie on remaining bytes: the older goes first, and 3 then has fewer left.
        assert_eq!(order, [2, 2, 2, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1]);

        // A short message arriving mid-way preempts a long one at the next packet.
        s.add(4, 100_000, 0);
        s.next_segment();
        s.add(5, 10, 0);
        assert_eq!(s.next_segment().map(|g| (g.key, g.len)), Some((5, 10)));
        assert_eq!(s.next_segment().map(|g| g.key), Some(4));
    }

    /// Bytes the receiver granted from its FIFO share (a GRANT at HIGH_PRIORITY) go before a
    /// shorter message's scheduled bytes, oldest message first; a new message's unscheduled
    /// bytes still go first. Before, they waited behind every shorter message, and a sender
    /// carrying all of a receiver's messages undid the receiver's FIFO share.
    #[test]
    fn fifo_granted_bytes_go_before_shorter_scheduled_ones() {
        let mut s = Sender::new(UNSCHED_BYTES);
        let unsched = s.add(1, 1 << 20, 4);
        s.add(2, 1 << 20, 4);
        s.add(3, 200_000, 4);
        drain(&mut s);
        s.on_grant(3, 200_000, 0);
        s.on_grant(2, unsched + 2 * MAX_PAYLOAD, HIGH_PRIORITY);
        s.on_grant(1, unsched + MAX_PAYLOAD, HIGH_PRIORITY);
        s.add(4, 100, 4);
        let order: Vec<(u32, u32)> =
            (0..5).filter_map(|_| s.next_segment()).map(|g| (g.key, g.offset)).collect();
        assert_eq!(
            order,
            [(4, 0), (1, unsched), (2, unsched), (2, unsched + MAX_PAYLOAD), (3, unsched)]
        );
    }

    #[test]
    fn resends_go_first_and_busy_when_unsent() {
        let mut s = Sender::new(UNSCHED_BYTES);
        s.add(1, 1 << 20, 4);
        for _ in 0..10 {
            s.next_segment();
        }
        let sent = 10 * MAX_PAYLOAD;
        assert_eq!(
            s.on_resend(1, 1000, ResendLength::Bytes(100), 7),
            Some(ResendReply::Busy),
            "sent, but too recently: still on its way"
        );
        s.tick(2);
        s.tick(2);
        assert_eq!(s.on_resend(1, sent, ResendLength::Bytes(100), 7), Some(ResendReply::Busy));
        assert_eq!(
            s.on_resend(1, 1000, ResendLength::Bytes(2000), 7),
            Some(ResendReply::Resending)
        );
        let g = s.next_segment().expect("owed");
        assert_eq!((g.offset, g.len, g.priority, g.retransmit), (1000, 1424, 7, true));
        let g = s.next_segment().expect("owed");
        assert_eq!((g.offset, g.len, g.retransmit), (2424, 576, true));
        assert_eq!(s.next_segment().map(|g| (g.offset, g.retransmit)), Some((sent, false)));
        assert_eq!(s.on_resend(9, 0, ResendLength::All, 7), None, "unknown: RPC_UNKNOWN");
    }

    #[test]
    fn a_resend_past_the_grant_stands_for_a_lost_grant() {
        let mut s = Sender::new(0);
        s.add(1, 10_000, 4);
        assert_eq!(s.next_segment(), None, "nothing unscheduled");
        // The GRANT for [0, 3000) was lost; the receiver's RESEND names it.
        assert_eq!(s.on_resend(1, 0, ResendLength::Bytes(3000), 7), Some(ResendReply::Busy));
        assert_eq!(s.progress(1), Some((0, 3000)));
        assert_eq!(drain(&mut s).iter().map(|g| g.len).sum::<u32>(), 3000);
    }

    #[test]
    fn resend_all_and_restart_send_everything_sent_again() {
        let mut s = Sender::new(UNSCHED_BYTES);
        s.add(1, 5000, 6);
        drain(&mut s);
        s.tick(1);
        assert_eq!(s.on_resend(1, 0, ResendLength::All, 7), Some(ResendReply::Resending));
        let again = drain(&mut s);
        assert_eq!(again.iter().map(|g| g.len).sum::<u32>(), 5000);
        assert!(again.iter().all(|g| g.retransmit && g.priority == 7));
        s.restart(1);
        let again = drain(&mut s);
        assert_eq!(again.iter().map(|g| g.len).sum::<u32>(), 5000);
        assert!(again.iter().all(|g| g.retransmit && g.priority == 6), "unscheduled level");
        s.remove(1);
        assert_eq!(s.progress(1), None);
        s.restart(1);
        assert_eq!(s.next_segment(), None);
    }
}
