//! The persist timer (RFC 9293 3.8.6.1, RFC 1122 4.2.2.17): while the peer's window is closed
//! and data waits, a zero-window probe goes out now and then, so that a window update the
//! network lost cannot leave both sides waiting for good (the peer answers a probe with an ACK
//! carrying its window).
//!
//! The first probe goes one RTO after the window closed; each later one waits twice as long
//! as the one before, bounded as the RTO is (`RtoConfig::max`). The timer never gives up: a
//! peer that keeps its window closed while answering the probes keeps the connection alive
//! (RFC 1122 4.2.2.17), and the fast path drops answers that change nothing before the app sees
//! them, so the app cannot tell an answered probe from a lost one. Once the window opens (or
//! nothing waits any more) the timer stops and its backoff starts over.
use std::time::{Duration, Instant};

/// What [`Persist::on_timer`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Call again at (or after) this instant.
    Wait(Instant),
    /// A probe is due now (the next one is armed).
    Probe,
}

/// The persist timer of one connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Persist {
    /// When the next probe is due; None while the timer is stopped.
    deadline: Option<Instant>,
    /// Probes sent since the window closed (the backoff's exponent).
    probes: u32,
}

impl Persist {
    /// The window is open, or nothing waits: the timer stops, its backoff starts over.
    pub fn stop(&mut self) {
        *self = Persist::default();
    }

    /// The window is closed and data waits: arms the timer at its first call (one `rto` from
    /// `now`), says when the next probe is due, or that one is due now.
    pub fn on_timer(&mut self, now: Instant, rto: Duration, max: Duration) -> Tick {
        let at = *self.deadline.get_or_insert(now + rto.min(max));
        if now < at {
            return Tick::Wait(at);
        }
        self.probes = self.probes.saturating_add(1);
        let wait = rto.saturating_mul(1 << self.probes.min(31)).min(max);
        self.deadline = Some(now + wait);
        Tick::Probe
    }

    /// Probes sent since the window closed.
    pub fn probes(&self) -> u32 {
        self.probes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_first_probe_goes_one_rto_after_the_window_closed() {
        let mut p = Persist::default();
        let t0 = Instant::now();
        assert_eq!(p.on_timer(t0, 200 * MS, 2000 * MS), Tick::Wait(t0 + 200 * MS));
        assert_eq!(p.on_timer(t0 + 199 * MS, 200 * MS, 2000 * MS), Tick::Wait(t0 + 200 * MS));
        assert_eq!(p.on_timer(t0 + 200 * MS, 200 * MS, 2000 * MS), Tick::Probe);
        assert_eq!(p.probes(), 1);
    }

    #[test]
    fn probes_back_off_exponentially_up_to_the_rto_bound_and_never_give_up() {
        let (rto, max) = (200 * MS, 2000 * MS);
        let mut p = Persist::default();
        let mut now = Instant::now();
        let Tick::Wait(mut at) = p.on_timer(now, rto, max) else { panic!("armed") };
        let mut waits = Vec::new();
        for _ in 0..40 {
            assert_eq!(p.on_timer(at, rto, max), Tick::Probe);
            now = at;
            let Tick::Wait(next) = p.on_timer(now, rto, max) else { panic!("re-armed") };
            waits.push((next - now).as_millis());
            at = next;
        }
        assert_eq!(waits[..5], [400, 800, 1600, 2000, 2000]);
        assert!(waits.iter().all(|&w| w <= 2000), "bounded");
        assert_eq!(p.probes(), 40, "still probing");
    }

    #[test]
    fn a_window_that_opens_stops_the_timer_and_the_backoff_starts_over() {
        let (rto, max) = (10 * MS, 1000 * MS);
        let mut p = Persist::default();
        let t0 = Instant::now();
        p.on_timer(t0, rto, max);
        assert_eq!(p.on_timer(t0 + rto, rto, max), Tick::Probe);
        assert_eq!(p.on_timer(t0 + rto, rto, max), Tick::Wait(t0 + 3 * rto));
        p.stop();
        assert_eq!(p, Persist::default());
        let t1 = t0 + 100 * MS;
        assert_eq!(p.on_timer(t1, rto, max), Tick::Wait(t1 + rto), "one RTO again");
    }

    #[test]
    fn an_rto_above_the_bound_waits_only_the_bound() {
        let mut p = Persist::default();
        let t0 = Instant::now();
        assert_eq!(p.on_timer(t0, 5000 * MS, 2000 * MS), Tick::Wait(t0 + 2000 * MS));
    }
}
