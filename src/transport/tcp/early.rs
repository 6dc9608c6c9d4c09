//! Frames that arrive for a connection before the app adopted it.
//!
//! The daemon inserts a connection into the fast path when its handshake completes, so the
//! peer's first data can reach the app's port before the app calls `accept`. The kernel has
//! acknowledged those bytes already: dropping them would leave a hole the peer never resends.
//! They wait here, in arrival order, until the connection is adopted; frames for handles nobody
//! adopts within [`EARLY_TTL`] (a stale frame of a released connection) are dropped, unless the
//! daemon said the connection is the app's and it was not accepted yet (an app that accepts
//! slowly: dropping them would fail the connection once adopted), and the total is bounded by
//! [`EARLY_MAX_BYTES`].
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::bpf::tcp::types::etran_tcp_rx_meta;

/// How long frames wait for their connection to be adopted.
pub const EARLY_TTL: Duration = Duration::from_secs(2);
/// The most payload bytes held across all handles.
pub const EARLY_MAX_BYTES: usize = 16 << 20;

struct Held {
    since: Instant,
    frames: Vec<(etran_tcp_rx_meta, Vec<u8>)>,
}

#[derive(Default)]
pub struct Early {
    held: HashMap<u64, Held>,
    bytes: usize,
}

impl Early {
    /// Keeps a copy of the frame for `meta.handle`; false when over the bound (dropped).
    pub fn hold(&mut self, meta: &etran_tcp_rx_meta, payload: &[u8], now: Instant) -> bool {
        if self.bytes + payload.len() > EARLY_MAX_BYTES {
            return false;
        }
        self.bytes += payload.len();
        let h = self.held.entry(meta.handle).or_insert(Held { since: now, frames: Vec::new() });
        h.frames.push((*meta, payload.to_vec()));
        true
    }

    /// The frames held for `handle`, oldest first.
    pub fn take(&mut self, handle: u64) -> Vec<(etran_tcp_rx_meta, Vec<u8>)> {
        let Some(h) = self.held.remove(&handle) else { return Vec::new() };
        self.bytes -= h.frames.iter().map(|(_, p)| p.len()).sum::<usize>();
        h.frames
    }

    /// When the oldest frames held expire ([`Early::expire`]), if any are held.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.held.values().map(|h| h.since + EARLY_TTL).min()
    }

    /// Drops what waited longer than [`EARLY_TTL`], except the frames of the handles `pending`
    /// names (connections the app will adopt: they wait another TTL); returns how many frames.
    pub fn expire(&mut self, now: Instant, mut pending: impl FnMut(u64) -> bool) -> usize {
        if self.held.is_empty() {
            return 0;
        }
        let mut dropped = 0;
        let bytes = &mut self.bytes;
        self.held.retain(|&handle, h| {
            if now.duration_since(h.since) < EARLY_TTL {
                return true;
            }
            if pending(handle) {
                h.since = now;
                return true;
            }
            dropped += h.frames.len();
            *bytes -= h.frames.iter().map(|(_, p)| p.len()).sum::<usize>();
            false
        });
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(handle: u64, rx_pos: u32) -> etran_tcp_rx_meta {
        etran_tcp_rx_meta { handle, rx_pos, ..Default::default() }
    }

    #[test]
    fn frames_wait_in_order_until_taken() {
        let (mut e, t0) = (Early::default(), Instant::now());
        assert!(e.hold(&meta(5, 0), b"ab", t0));
        assert!(e.hold(&meta(6, 0), b"x", t0));
        assert!(e.hold(&meta(5, 2), b"cd", t0));
        let got: Vec<(u32, Vec<u8>)> = e.take(5).into_iter().map(|(m, p)| (m.rx_pos, p)).collect();
        assert_eq!(got, vec![(0, b"ab".to_vec()), (2, b"cd".to_vec())]);
        assert!(e.take(5).is_empty());
        assert_eq!(e.bytes, 1);
    }

    #[test]
    fn unclaimed_frames_expire_and_the_total_is_bounded() {
        let (mut e, t0) = (Early::default(), Instant::now());
        assert_eq!(e.next_expiry(), None, "nothing held: no timer");
        assert!(e.hold(&meta(1, 0), &[0; 100], t0));
        assert_eq!(e.expire(t0 + EARLY_TTL / 2, |_| false), 0);
        assert!(e.hold(&meta(2, 0), &[0; 10], t0 + EARLY_TTL / 2));
        assert_eq!(e.next_expiry(), Some(t0 + EARLY_TTL), "the oldest's");
        assert_eq!(e.expire(t0 + EARLY_TTL, |_| false), 1, "only the older handle's frames");
        assert_eq!(e.next_expiry(), Some(t0 + EARLY_TTL / 2 + EARLY_TTL));
        assert_eq!(e.bytes, 10);
        let big = vec![0; EARLY_MAX_BYTES];
        assert!(!e.hold(&meta(3, 0), &big, t0), "over the bound");
        assert_eq!(e.bytes, 10);
    }

    /// An app that accepts slowly: the daemon said the connection is the app's, so its frames
    /// (acknowledged by the kernel: dropping one fails the connection once adopted) wait on.
    #[test]
    fn frames_of_a_connection_accepted_and_not_yet_taken_never_expire() {
        let (mut e, t0) = (Early::default(), Instant::now());
        assert!(e.hold(&meta(1, 0), b"ab", t0));
        assert!(e.hold(&meta(2, 0), b"cd", t0));
        let accepted = |h| h == 1;
        assert_eq!(e.expire(t0 + EARLY_TTL, accepted), 1, "handle 2's: nobody's");
        assert_eq!(e.next_expiry(), Some(t0 + EARLY_TTL + EARLY_TTL), "another TTL");
        assert_eq!(e.expire(t0 + 5 * EARLY_TTL, accepted), 0);
        let got: Vec<(u32, Vec<u8>)> = e.take(1).into_iter().map(|(m, p)| (m.rx_pos, p)).collect();
        assert_eq!(got, vec![(0, b"ab".to_vec())]);
    }
}
