//! When an RPC client issues its next request: closed loop (again as soon as an RPC completes,
//! `--gbps 0`) or open loop, as `cp_node --gbps` does: Poisson arrivals at a fixed rate,
//! whatever the server's pace, so that the offered load does not sag when responses slow
//! down (which is what makes tail latency under load measurable). An arrival that finds every
//! slot (outstanding RPC) of its client thread busy waits for the next free one and is counted
//! as late.
use std::time::{Duration, Instant};

use super::workload::Rng;

/// One client thread's request schedule.
#[derive(Debug, Clone)]
pub enum Arrivals {
    /// Each slot issues again as soon as its RPC completes.
    Closed,
    /// Poisson arrivals.
    Open(Poisson),
}

/// Poisson arrivals: exponentially distributed gaps of mean `mean_gap`.
#[derive(Debug, Clone)]
pub struct Poisson {
    next: Instant,
    mean_gap_ns: f64,
    rng: Rng,
    /// Whether the current arrival already found every slot busy (it is counted once).
    waiting: bool,
    /// Arrivals that found every slot busy.
    pub late: u64,
}

impl Arrivals {
    /// The schedule of a client thread offering `gbps` Gbit/s of requests of `mean_bytes` on
    /// average (its share of the run's `--gbps`; 0 is closed loop), starting at `start`;
    /// `seed` makes threads' arrivals independent.
    pub fn new(gbps: f64, mean_bytes: f64, seed: u64, start: Instant) -> Arrivals {
        if gbps <= 0.0 {
            return Arrivals::Closed;
        }
        let per_sec = gbps * 1e9 / 8.0 / mean_bytes.max(1.0);
        let mut p = Poisson {
            next: start,
            mean_gap_ns: 1e9 / per_sec,
            rng: Rng::new(seed),
            waiting: false,
            late: 0,
        };
        let gap = p.gap();
        p.next += gap;
        Arrivals::Open(p)
    }

    /// Whether a slot whose RPC just completed issues the next one at once.
    pub fn reissue_on_completion(&self) -> bool {
        matches!(self, Arrivals::Closed)
    }

    /// Open loop: takes the arrival due at `now`, if any, when `free_slot` finds a slot for it
    /// (its index); an arrival without a slot stays due and counts as late once.
    pub fn due(
        &mut self,
        now: Instant,
        free_slot: impl FnOnce() -> Option<usize>,
    ) -> Option<usize> {
        let Arrivals::Open(p) = self else { return None };
        if now < p.next {
            return None;
        }
        match free_slot() {
            Some(k) => {
                let gap = p.gap();
                p.next += gap;
                p.waiting = false;
                Some(k)
            }
            None => {
                if !p.waiting {
                    p.waiting = true;
                    p.late += 1;
                }
                None
            }
        }
    }

    /// How long a waiting client may sleep before its next arrival (at most `slice`).
    pub fn sleep(&self, now: Instant, slice: Duration) -> Duration {
        match self {
            Arrivals::Closed => slice,
            Arrivals::Open(p) => p.next.saturating_duration_since(now).min(slice),
        }
    }

    /// Arrivals that found every slot busy.
    pub fn late(&self) -> u64 {
        match self {
            Arrivals::Closed => 0,
            Arrivals::Open(p) => p.late,
        }
    }
}

impl Poisson {
    fn gap(&mut self) -> Duration {
        // Inverse transform: -ln(1 - u) is exponential with mean 1 (1 - u is never 0).
        Duration::from_nanos((-(1.0 - self.rng.unit()).ln() * self.mean_gap_ns) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_loop_reissues_and_never_schedules() {
        let now = Instant::now();
        let mut a = Arrivals::new(0.0, 100.0, 1, now);
        assert!(a.reissue_on_completion());
        assert_eq!(a.due(now + Duration::from_secs(9), || Some(0)), None);
        assert_eq!(a.sleep(now, Duration::from_millis(10)), Duration::from_millis(10));
    }

    /// 1 Gbit/s of 1250-byte requests is 100,000 arrivals per second: over a simulated second
    /// the count is within a few standard deviations (sqrt(1e5) = 316) of it, and the gaps
    /// are exponential (their standard deviation is their mean).
    #[test]
    fn open_loop_offers_the_rate_with_poisson_gaps() {
        let start = Instant::now();
        let mut a = Arrivals::new(1.0, 1250.0, 7, start);
        assert!(!a.reissue_on_completion());
        let (mut n, mut gaps, mut last) = (0u64, Vec::new(), start);
        let end = start + Duration::from_secs(1);
        loop {
            // Straight to the next arrival.
            let at = start + a.sleep(start, Duration::MAX);
            if at >= end {
                break;
            }
            assert_eq!(a.due(at, || Some(0)), Some(0));
            n += 1;
            gaps.push(at.duration_since(last).as_nanos() as f64);
            last = at;
        }
        assert!((99_000..=101_000).contains(&n), "{n} arrivals");
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let sd = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
        assert!((9_500.0..10_500.0).contains(&mean), "mean gap {mean} ns");
        assert!((0.9..1.1).contains(&(sd / mean)), "sd/mean {}", sd / mean);
        assert_eq!(a.late(), 0);
    }

    #[test]
    fn an_arrival_without_a_slot_waits_and_counts_once() {
        let start = Instant::now();
        let mut a = Arrivals::new(1.0, 1250.0, 3, start);
        let later = start + Duration::from_secs(1);
        assert_eq!(a.due(later, || None), None);
        assert_eq!(a.due(later, || None), None);
        assert_eq!(a.late(), 1, "one arrival, counted once");
        assert_eq!(a.sleep(later, Duration::from_millis(10)), Duration::ZERO, "still due");
        assert_eq!(a.due(later, || Some(4)), Some(4));
        assert_eq!(a.late(), 1);
    }
}
