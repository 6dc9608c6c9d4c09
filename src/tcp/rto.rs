//! Retransmission timeout (RFC 6298): smoothed RTT and variance from samples, exponential
//! backoff on timeouts, and a retry limit after which the connection is reported dead.
//!
//! Datacenter defaults follow eTran (a minimum RTO of a few milliseconds rather than RFC 6298's
//! one second); every bound is configurable.
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtoConfig {
    /// RTO before the first RTT sample.
    pub initial: Duration,
    pub min: Duration,
    pub max: Duration,
    /// Consecutive timeouts without progress before giving up.
    pub max_retries: u32,
    /// Clock granularity G of RFC 6298.
    pub granularity: Duration,
}

impl Default for RtoConfig {
    fn default() -> Self {
        RtoConfig {
            initial: Duration::from_millis(10),
            min: Duration::from_millis(4),
            max: Duration::from_secs(2),
            max_retries: 12,
            granularity: Duration::from_micros(1),
        }
    }
}

/// The connection timed out `max_retries` times in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GaveUp {
    pub retries: u32,
}

impl std::fmt::Display for GaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no acknowledgement after {} retransmissions", self.retries)
    }
}

impl std::error::Error for GaveUp {}

#[derive(Debug, Clone)]
pub struct RtoEstimator {
    config: RtoConfig,
    /// (SRTT, RTTVAR) once a sample was taken.
    smoothed: Option<(Duration, Duration)>,
    /// Current timeout, backoff included.
    rto: Duration,
    retries: u32,
}

impl RtoEstimator {
    pub fn new(config: RtoConfig) -> Self {
        let rto = config.initial.clamp(config.min, config.max);
        RtoEstimator { config, smoothed: None, rto, retries: 0 }
    }

    pub fn rto(&self) -> Duration {
        self.rto
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.smoothed.map(|(srtt, _)| srtt)
    }

    /// A round-trip sample (from a timestamp echo or an unretransmitted segment: Karn's rule is
    /// the caller's). Also ends any backoff: the path is alive.
    pub fn on_sample(&mut self, rtt: Duration) {
        let (srtt, rttvar) = match self.smoothed {
            None => (rtt, rtt / 2),
            Some((srtt, rttvar)) => {
                let err = srtt.abs_diff(rtt);
                // RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R|;  SRTT = 7/8 SRTT + 1/8 R
                (srtt * 7 / 8 + rtt / 8, rttvar * 3 / 4 + err / 4)
            }
        };
        self.smoothed = Some((srtt, rttvar));
        self.retries = 0;
        self.rto = (srtt + self.config.granularity.max(rttvar * 4))
            .clamp(self.config.min, self.config.max);
    }

    /// New data was acknowledged: the retry count starts over (the RTO keeps its backoff until
    /// the next sample, RFC 6298 5.7).
    pub fn on_progress(&mut self) {
        self.retries = 0;
    }

    /// The timer fired: back off and say how long the next wait is, or give up.
    pub fn on_timeout(&mut self) -> Result<Duration, GaveUp> {
        self.retries += 1;
        if self.retries > self.config.max_retries {
            return Err(GaveUp { retries: self.config.max_retries });
        }
        self.rto = (self.rto * 2).min(self.config.max);
        Ok(self.rto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const US: Duration = Duration::from_micros(1);

    fn est() -> RtoEstimator {
        RtoEstimator::new(RtoConfig { min: 200 * US, ..RtoConfig::default() })
    }

    #[test]
    fn first_sample_sets_srtt_and_half_variance() {
        let mut e = est();
        assert_eq!(e.rto(), 10 * MS);
        e.on_sample(100 * US);
        assert_eq!(e.srtt(), Some(100 * US));
        // RTO = SRTT + 4 * RTTVAR = 100 + 4 * 50
        assert_eq!(e.rto(), 300 * US);
    }

    #[test]
    fn later_samples_follow_rfc6298_gains() {
        let mut e = est();
        e.on_sample(100 * US);
        e.on_sample(200 * US);
        // RTTVAR = 3/4 * 50 + 1/4 * 100 = 62.5; SRTT = 7/8 * 100 + 1/8 * 200 = 112.5
        assert_eq!(e.srtt(), Some(Duration::from_nanos(112_500)));
        assert_eq!(e.rto(), Duration::from_nanos(112_500 + 250_000));
    }

    #[test]
    fn rto_is_clamped_to_the_minimum() {
        let mut e = RtoEstimator::new(RtoConfig::default());
        for _ in 0..20 {
            e.on_sample(20 * US);
        }
        assert_eq!(e.rto(), 4 * MS);
    }

    #[test]
    fn timeouts_back_off_exponentially_up_to_max_then_give_up() {
        let mut e = RtoEstimator::new(RtoConfig { max_retries: 10, ..RtoConfig::default() });
        let waits: Vec<_> = (0..10).map(|_| e.on_timeout().unwrap()).collect();
        assert_eq!(waits[0], 20 * MS);
        assert_eq!(waits[1], 40 * MS);
        assert_eq!(*waits.last().unwrap(), 2 * Duration::from_secs(1));
        assert_eq!(e.on_timeout(), Err(GaveUp { retries: 10 }));
    }

    #[test]
    fn progress_resets_retries_and_a_sample_ends_backoff() {
        let mut e = RtoEstimator::new(RtoConfig { max_retries: 2, ..RtoConfig::default() });
        e.on_timeout().unwrap();
        e.on_timeout().unwrap();
        e.on_progress();
        assert!(e.on_timeout().is_ok(), "retry count restarted");
        e.on_sample(MS);
        assert_eq!(e.rto(), 4 * MS, "a fresh sample replaces the backed-off RTO");
    }
}
