//! Priority levels (0 lowest to 7, in the IP TOS as `priority << 5`, see [`super::wire::tos`]),
//! and the cutoffs by which a sender picks the priority of a message's unscheduled bytes.
//!
//! Each receiver decides the cutoffs for the traffic it receives and announces them in CUTOFFS
//! packets; a sender keeps the latest per receiver and echoes its version in every DATA, so a
//! receiver sees a stale sender and announces again (at most once a tick per peer). Before any
//! CUTOFFS a sender uses level 6 for every unscheduled byte. Scheduled bytes take the level
//! their GRANT names ([`super::grant`]), below the unscheduled levels.
//!
//! In etran the host's cutoffs are the Homa object's read-only `etran_homa_cutoffs`
//! ([`Cutoffs::RECEIVER`], which a test keeps equal): ingress flags a DATA echoing another
//! version, egress writes the CUTOFFS the app asks for and the version our DATA echo (the one
//! the peer announced, kept in `etran_homa_peers`); the app keeps each peer's cutoffs, from the
//! CUTOFFS it receives, to pick its unscheduled priorities.
use super::wire::PRIORITIES;

/// Control packets (everything but DATA), and RESENDs ask for their data at it: the top level.
pub const CONTROL_PRIORITY: u8 = PRIORITIES as u8 - 1;
/// One below the top, to boost without competing with control packets (FIFO grants).
/// HomaModule's homa_high_priority().
pub const HIGH_PRIORITY: u8 = PRIORITIES as u8 - 2;
/// A cutoff no message length exceeds: HomaModule's INT_MAX.
pub const ANY_LENGTH: u32 = i32::MAX as u32;

/// Unscheduled priority cutoffs: a message of `length` bytes goes at the highest level `i`
/// with `cutoffs[i] >= length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    pub cutoffs: [u32; PRIORITIES],
    /// Changes whenever the cutoffs do; 0: never announced.
    pub version: u16,
}

impl Cutoffs {
    /// What a receiver announces: HomaModule's defaults (homa_utils.c): levels 7, 6, 5 for
    /// messages up to 200, 2800 and 15000 bytes, level 4 for any longer (HomaModule writes its
    /// 1,000,000-byte maximum there; [`ANY_LENGTH`] means the same for our longer messages).
    /// Levels 3 to 0 are left to scheduled bytes. Version 1: HomaModule's first.
    pub const RECEIVER: Cutoffs =
        Cutoffs { cutoffs: [ANY_LENGTH, 0, 0, 0, ANY_LENGTH, 15_000, 2800, 200], version: 1 };

    /// What a sender uses toward a peer it has no CUTOFFS from: every message at level 6
    /// (HomaModule's new peer).
    pub const UNKNOWN_PEER: Cutoffs =
        Cutoffs { cutoffs: [0, 0, 0, 0, 0, 0, ANY_LENGTH, 0], version: 0 };

    /// The level of a `length`-byte message's unscheduled bytes.
    pub fn unsched_priority(&self, length: u32) -> u8 {
        (0..PRIORITIES).rev().find(|&i| self.cutoffs[i] >= length).unwrap_or(0) as u8
    }

    /// The highest level left to scheduled bytes: the one below the lowest unscheduled level
    /// (the highest level whose cutoff admits any length). 0 when all levels are unscheduled.
    pub fn max_sched_priority(&self) -> u8 {
        (1..PRIORITIES).rev().find(|&i| self.cutoffs[i] >= ANY_LENGTH).map_or(0, |i| i - 1) as u8
    }
}

/// A receiver's bookkeeping of one peer's cutoffs: whether a DATA from it that echoed a stale
/// version (ingress compares it with the host's, `ETRAN_HOMA_RX_CUTOFFS_DUE`) calls for a
/// CUTOFFS now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Announced {
    last_tick: Option<u64>,
}

impl Announced {
    /// True when no CUTOFFS went to the peer this tick (a stream of stale DATA costs one
    /// CUTOFFS a tick, and a lost one is sent again).
    pub fn due(&mut self, tick: u64) -> bool {
        if self.last_tick == Some(tick) {
            return false;
        }
        self.last_tick = Some(tick);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiver_defaults_pick_levels_by_size() {
        let c = Cutoffs::RECEIVER;
        let levels: Vec<u8> = [1, 200, 201, 2800, 2801, 15_000, 15_001, 1_000_000, 16 << 20]
            .iter()
            .map(|&n| c.unsched_priority(n))
            .collect();
        assert_eq!(levels, [7, 7, 6, 6, 5, 5, 4, 4, 4]);
        assert_eq!(c.max_sched_priority(), 3, "HomaModule's max_sched_prio");
    }

    #[test]
    fn unknown_peer_is_all_level_six() {
        let c = Cutoffs::UNKNOWN_PEER;
        assert_eq!(c.unsched_priority(1), 6);
        assert_eq!(c.unsched_priority(10 << 20), 6);
        assert_eq!(c.max_sched_priority(), 5);
        assert_eq!((CONTROL_PRIORITY, HIGH_PRIORITY), (7, 6));
    }

    #[test]
    fn all_unscheduled_leaves_level_zero_only() {
        let c = Cutoffs { cutoffs: [ANY_LENGTH; PRIORITIES], version: 3 };
        assert_eq!(c.unsched_priority(5), 7);
        assert_eq!(c.max_sched_priority(), 6);
        let c = Cutoffs { cutoffs: [ANY_LENGTH, 0, 0, 0, 0, 0, 0, 0], version: 3 };
        assert_eq!(c.max_sched_priority(), 0);
    }

    #[test]
    fn stale_peers_get_one_cutoffs_a_tick() {
        let mut a = Announced::default();
        assert!(a.due(10), "never told");
        assert!(!a.due(10), "already sent this tick");
        assert!(a.due(11), "lost? again next tick");
    }
}
