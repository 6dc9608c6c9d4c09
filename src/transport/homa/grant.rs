//! The receiver's grant scheduler: which incoming messages get GRANTs, how far, at which
//! priority. As HomaModule's homa_grant.c decides it:
//!
//! - **SRPT**: messages rank by bytes not yet received, fewest first, then by age.
//! - **Overcommit**: only the first `max_overcommit` (8) messages in that order are *active*
//!   and get grants; a peer counts once (`max_rpcs_per_peer`, 1): a sender sends one message
//!   at a time anyway (its own SRPT), so a second grant to it would only idle the link.
//! - **Window**: an active message is granted up to `window` bytes past what it received, less
//!   what the other messages of its peer were granted and did not deliver yet (a FIFO grant,
//!   unscheduled bytes: a peer's bytes on the way stay within one window, as with one message;
//!   more would only queue), `window` being `max_incoming / (active + 1)`, so that a share as
//!   large as each active message's stays free for new arrivals (HomaModule's dynamic window),
//!   or fixed.
//! - **Cap**: grants stop while the bytes granted but not received (unscheduled bytes
//!   included, over every message being scheduled) reach `max_incoming`. Only unscheduled
//!   bytes of new messages can push the total beyond it; grants never do.
//! - **Priorities by rank**: the active message of rank r is granted at `max_sched - r`, all
//!   shifted down to the lowest levels when fewer messages are active than levels, so that a
//!   new shorter message can take a higher one; ranks beyond the levels share level 0.
//! - **FIFO share**: SRPT alone starves a long message while shorter ones keep coming, so
//!   `fifo_fraction` (per mille) of the granted bytes goes, `fifo_increment` at a time, to the
//!   oldest message not fully granted, active or not, at [`HIGH_PRIORITY`]. HomaModule paces
//!   these grants by time at that fraction of the link rate; here they are paced by the bytes
//!   granted, which is the same share whenever grants flow and needs no clock. The share is
//!   `fifo_fraction` for each message SRPT *bypassed*: one not fully granted, from the peer of
//!   the message SRPT serves first, and older than it; at most [`FIFO_FRACTION_MAX`]. One long
//!   message behind a stream of shorter ones gets 5 %, as in HomaModule; when long messages
//!   pile up behind shorter ones (every message from one peer, closed loop: each waits for the
//!   FIFO share alone, and they come faster than 5 % carries), each adds its own share, so that
//!   they drain, oldest first, instead of waiting for the stream of shorter ones to stop.
//!
//! Grants end on packet boundaries ([`MAX_PAYLOAD`] from offset 0) or at the message's end, so
//! a sender never cuts a short packet at a grant.
//!
//! Pure and generic: `K` keys a message (the caller's RPC), `P` names its peer. The caller
//! reports what arrives ([`GrantScheduler::received`]) and sends the [`Grant`]s that
//! [`GrantScheduler::grants`] decides.
use std::collections::{BTreeMap, BTreeSet};

use super::{prio::HIGH_PRIORITY, MAX_PAYLOAD};
use crate::bpf::homa::types::etran_homa_limit;

/// The most the FIFO share may grow to, per mille, however many messages SRPT bypassed (the
/// bound HomaModule puts on `fifo_fraction`; `ETRAN_HOMA_FIFO_FRACTION_MAX`, which the grant
/// scheduler in BPF applies).
pub const FIFO_FRACTION_MAX: u32 = etran_homa_limit::ETRAN_HOMA_FIFO_FRACTION_MAX.0;

/// The scheduler's parameters; [`GrantConfig::default`] is HomaModule's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantConfig {
    /// Bytes granted but not received, at most (homa_grant.c: 400,000; the original eTran
    /// used 480,000).
    pub max_incoming: u32,
    /// Messages granted to at once (homa_grant.c: 8).
    pub max_overcommit: usize,
    /// Active messages from one peer (HomaModule's former `max_rpcs_per_peer`: 1).
    pub max_rpcs_per_peer: usize,
    /// A fixed window, or `None` for `max_incoming / (active + 1)` (homa_grant.c's default).
    pub window: Option<u32>,
    /// Per mille of granted bytes that go to the oldest message (homa_grant.c: 50), for each
    /// message SRPT bypassed (see the module's notes), up to [`FIFO_FRACTION_MAX`].
    pub fifo_fraction: u32,
    /// Bytes of one FIFO grant (homa_grant.c: 50,000).
    pub fifo_increment: u32,
    /// The highest scheduled priority (from the cutoffs announced: 3 by default, see
    /// `Cutoffs::max_sched_priority`).
    pub max_sched_priority: u8,
}

impl Default for GrantConfig {
    fn default() -> GrantConfig {
        GrantConfig {
            max_incoming: 400_000,
            max_overcommit: 8,
            max_rpcs_per_peer: 1,
            window: None,
            fifo_fraction: 50,
            fifo_increment: 50_000,
            max_sched_priority: 3,
        }
    }
}

/// A GRANT to send: the message's sender may send up to `offset`, at `priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant<K> {
    pub key: K,
    pub offset: u32,
    pub priority: u8,
    /// Given from the FIFO share rather than by rank.
    pub fifo: bool,
}

#[derive(Debug)]
struct InMsg<P> {
    peer: P,
    length: u32,
    received: u32,
    granted: u32,
    birth: u64,
}

impl<P> InMsg<P> {
    fn remaining(&self) -> u32 {
        self.length - self.received
    }

    /// Granted and not yet received: what it adds to the incoming total.
    fn incoming(&self) -> u32 {
        self.granted.saturating_sub(self.received)
    }
}

/// The messages a receiver is granting to.
#[derive(Debug)]
pub struct GrantScheduler<K, P> {
    cfg: GrantConfig,
    msgs: BTreeMap<K, InMsg<P>>,
    /// SRPT order: (bytes not received, age, key).
    order: BTreeSet<(u32, u64, K)>,
    total_incoming: u64,
    births: u64,
    /// Bytes granted by rank since the last FIFO grant.
    since_fifo: u64,
}

impl<K: Ord + Copy, P: Eq + Copy> GrantScheduler<K, P> {
    pub fn new(cfg: GrantConfig) -> GrantScheduler<K, P> {
        GrantScheduler {
            cfg,
            msgs: BTreeMap::new(),
            order: BTreeSet::new(),
            total_incoming: 0,
            births: 0,
            since_fifo: 0,
        }
    }

    /// A message's first DATA arrived: `length` bytes from `peer`, of which the sender sends
    /// `unsched` without grants (DATA's `incoming`). True when it needs grants, and so is now
    /// scheduled; a message already scheduled is left as it is. (A late packet of a message
    /// already complete must not come here: it would be scheduled anew.)
    pub fn add(&mut self, key: K, peer: P, length: u32, unsched: u32) -> bool {
        if unsched >= length || self.msgs.contains_key(&key) {
            return false;
        }
        self.births += 1;
        let m = InMsg { peer, length, received: 0, granted: unsched, birth: self.births };
        self.total_incoming += u64::from(m.incoming());
        self.order.insert((m.remaining(), m.birth, key));
        self.msgs.insert(key, m);
        true
    }

    /// The message now holds `received` bytes (each counted once). A complete message leaves
    /// the scheduler.
    pub fn received(&mut self, key: K, received: u32) {
        let Some(m) = self.msgs.get_mut(&key) else { return };
        let received = received.min(m.length);
        if received <= m.received {
            return;
        }
        self.order.remove(&(m.remaining(), m.birth, key));
        self.total_incoming -= u64::from(m.incoming());
        m.received = received;
        self.total_incoming += u64::from(m.incoming());
        if m.remaining() == 0 {
            self.remove(key);
        } else {
            self.order.insert((m.remaining(), m.birth, key));
        }
    }

    /// The message is gone (complete, aborted, its RPC freed).
    pub fn remove(&mut self, key: K) {
        if let Some(m) = self.msgs.remove(&key) {
            self.order.remove(&(m.remaining(), m.birth, key));
            self.total_incoming -= u64::from(m.incoming());
        }
    }

    /// Bytes granted (unscheduled included) and not received, over every scheduled message.
    pub fn total_incoming(&self) -> u64 {
        self.total_incoming
    }

    /// How far the message is granted; `None` when it is not scheduled.
    pub fn granted(&self, key: K) -> Option<u32> {
        self.msgs.get(&key).map(|m| m.granted)
    }

    /// The active messages, highest rank first.
    pub fn active(&self) -> Vec<K> {
        let mut active: Vec<(K, P)> = Vec::new();
        for &(_, _, key) in &self.order {
            if active.len() == self.cfg.max_overcommit {
                break;
            }
            let peer = self.msgs[&key].peer;
            if active.iter().filter(|(_, p)| *p == peer).count() < self.cfg.max_rpcs_per_peer {
                active.push((key, peer));
            }
        }
        active.into_iter().map(|(k, _)| k).collect()
    }

    /// The GRANTs to send now. Call it after every change (a DATA arrived, a message came or
    /// went); each message appears at most once.
    pub fn grants(&mut self) -> Vec<Grant<K>> {
        let active = self.active();
        let window = self.cfg.window.unwrap_or(self.cfg.max_incoming / (active.len() as u32 + 1));
        let mut out: Vec<Grant<K>> = self.fifo_grant(window).into_iter().collect();
        for (rank, &key) in active.iter().enumerate() {
            if out.iter().any(|g| g.key == key) {
                continue;
            }
            let m = &self.msgs[&key];
            let want = m.received.saturating_add(window.saturating_sub(self.peer_out(key)));
            let Some(offset) = self.raise(key, want) else { continue };
            let priority = self.priority(rank, active.len());
            self.since_fifo += u64::from(offset - self.grant_to(key, offset));
            out.push(Grant { key, offset, priority, fifo: false });
        }
        out
    }

    /// The grant offset `key` may get toward `want`: on a packet boundary or the end, within
    /// the cap, beyond what it has. `None` when that is no progress.
    fn raise(&self, key: K, want: u32) -> Option<u32> {
        let m = &self.msgs[&key];
        let headroom = u64::from(self.cfg.max_incoming).saturating_sub(self.total_incoming);
        let cap = u64::from(m.granted) + headroom;
        let target = u64::from(want.min(m.length)).min(cap) as u32;
        let offset = if target == m.length { target } else { target - target % MAX_PAYLOAD };
        (offset > m.granted).then_some(offset)
    }

    /// Grants `key` up to `offset`; returns what it had.
    fn grant_to(&mut self, key: K, offset: u32) -> u32 {
        let m = self.msgs.get_mut(&key).expect("scheduled");
        let before = m.granted;
        self.total_incoming -= u64::from(m.incoming());
        m.granted = offset;
        self.total_incoming += u64::from(m.incoming());
        before
    }

    /// Bytes granted and not received of the other messages from `key`'s peer (FIFO grants,
    /// unscheduled bytes), which its window leaves room for.
    fn peer_out(&self, key: K) -> u32 {
        let peer = self.msgs[&key].peer;
        let others = self.msgs.iter().filter(|(k, m)| **k != key && m.peer == peer);
        others.map(|(_, m)| m.incoming()).sum()
    }

    /// The messages SRPT bypassed: not fully granted, from the peer of the message SRPT
    /// serves first (which its one active message keeps waiting), and older than it.
    fn bypassed(&self) -> u32 {
        let Some(&(_, birth, key)) = self.order.first() else { return 0 };
        let peer = self.msgs[&key].peer;
        let waits = |m: &&InMsg<P>| m.peer == peer && m.birth < birth && m.granted < m.length;
        self.msgs.values().filter(waits).count() as u32
    }

    /// homa_grant_priority(): rank 0 highest; when fewer messages are active than scheduled
    /// levels, they use the lowest ones.
    fn priority(&self, rank: usize, active: usize) -> u8 {
        let max = i64::from(self.cfg.max_sched_priority);
        let mut p = max - rank as i64;
        let extra = max + 1 - active as i64;
        if extra > 0 {
            p -= extra;
        }
        p.max(0) as u8
    }

    /// The FIFO grant due now, if the share calls for one and the cap allows it: to the oldest
    /// message not fully granted, unless it ignores grants already (granted far beyond what
    /// it sent: then the next oldest), as homa_grant_find_oldest() chooses.
    fn fifo_grant(&mut self, window: u32) -> Option<Grant<K>> {
        let (fraction, inc) = (self.cfg.fifo_fraction, self.cfg.fifo_increment);
        if fraction == 0 || inc == 0 || fraction >= 1000 {
            return None;
        }
        let fraction = u64::from(fifo_share(fraction, self.bypassed()));
        // Bytes granted by rank for each FIFO grant, so that FIFO bytes are `fraction` of all.
        let due_after = u64::from(inc) * (1000 - fraction) / fraction;
        if self.since_fifo < due_after {
            return None;
        }
        let stuck = u64::from(window) + 2 * u64::from(inc);
        let oldest = self
            .msgs
            .iter()
            .filter(|(_, m)| m.granted < m.length && u64::from(m.incoming()) < stuck)
            .min_by_key(|(_, m)| m.birth);
        let Some((&key, m)) = oldest else {
            // Nothing to give it to: the share stays due, without piling up.
            self.since_fifo = due_after;
            return None;
        };
        let offset = self.raise(key, m.granted.saturating_add(inc))?;
        self.grant_to(key, offset);
        self.since_fifo -= due_after;
        Some(Grant { key, offset, priority: HIGH_PRIORITY, fifo: true })
    }
}

/// The FIFO share, per mille: `fraction` for each of the `bypassed` messages (at least one),
/// at most [`FIFO_FRACTION_MAX`] (or `fraction` itself, if that is more).
fn fifo_share(fraction: u32, bypassed: u32) -> u32 {
    fraction.saturating_mul(bypassed.max(1)).min(FIFO_FRACTION_MAX.max(fraction))
}

#[cfg(test)]
mod tests;
