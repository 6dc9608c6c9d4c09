//! Retransmission timeout (RFC 6298): smoothed RTT and variance from samples, exponential
//! backoff on timeouts, and a retry limit after which the connection is reported dead; and the
//! tail-loss probe timeout (RFC 8985 7.2) derived from the same samples.
//!
//! The defaults suit Linux peers: a minimum RTO of 200 ms, as Linux's own, because a Linux
//! receiver delays its ACK of a lone segment by 40 to 200 ms, and an RTO below that fires
//! spuriously on request/response traffic. Tail losses do not wait that long: a probe goes out
//! after 2 SRTT plus the peer's delayed ACK when a single segment is in flight, plus 2 ms
//! (`pto_margin`, as Linux's senders: `TCP_TIMEOUT_MIN`) when a few are, and plus 500 µs
//! (`pto_margin_stretched`) when so many are that every receiver owes its ACK at once
//! (`ack_stretch`). Between etran hosts (whose receiver delays an ACK by 1 ms) smaller bounds
//! are fine: every one is configurable (`App::set_rto`).
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
    /// The longest the peer may delay an ACK (RFC 8985's WCDelAckT): added to the probe timeout
    /// when one segment is in flight.
    pub delayed_ack: Duration,
    /// Added to 2 SRTT for the probe timeout when more than one segment is in flight (RFC 8985
    /// 7.2's 2 ms; Linux's `TCP_TIMEOUT_MIN`): room for an ACK a little late. (It was a floor
    /// of 10 ms, from the TLP draft: with round trips of tens of µs every tail loss, or lost
    /// last ACK of a flight, stalled a sender 10 ms where a Linux sender waits 2.)
    pub pto_margin: Duration,
    /// Added to 2 SRTT for the probe timeout when `ack_stretch` segments or more are in flight.
    /// Linux's 2 ms is two jiffies, the least its timers promise; this timer is good to about
    /// 100 µs, and with that many segments out no receiver holds its ACK back (only scheduling
    /// delays it). When the last ACK of a flight is lost, the sender waits this long: a Linux
    /// receiver whose GRO merged the flight acknowledges it once, and at 1 % loss on the
    /// testbed's switch 2 ms per lost ACK took eTran's sending from 1.8 to 2.3 times Linux's
    /// time for 10 MB.
    pub pto_margin_stretched: Duration,
    /// Full segments a receiver acknowledges at once: an etran receiver's
    /// `GEN_STRETCH_SEGMENTS` (tcp_gen.h), more than Linux's and RFC 5681's 2.
    pub ack_stretch: u32,
}

impl Default for RtoConfig {
    fn default() -> Self {
        RtoConfig {
            initial: Duration::from_millis(200),
            min: Duration::from_millis(200),
            max: Duration::from_secs(2),
            max_retries: 12,
            granularity: Duration::from_micros(1),
            delayed_ack: Duration::from_millis(200),
            pto_margin: Duration::from_millis(2),
            pto_margin_stretched: Duration::from_micros(500),
            ack_stretch: 8,
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
    min_rtt: Option<Duration>,
}

impl RtoEstimator {
    pub fn new(config: RtoConfig) -> Self {
        let rto = config.initial.clamp(config.min, config.max);
        RtoEstimator { config, smoothed: None, rto, retries: 0, min_rtt: None }
    }

    pub fn rto(&self) -> Duration {
        self.rto
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.smoothed.map(|(srtt, _)| srtt)
    }

    /// The round-trip time's variation (RTTVAR), once a sample was taken.
    pub fn rttvar(&self) -> Option<Duration> {
        self.smoothed.map(|(_, rttvar)| rttvar)
    }

    /// The bound of every backed-off timeout.
    pub fn max(&self) -> Duration {
        self.config.max
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
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        self.retries = 0;
        self.rto = (srtt + self.config.granularity.max(rttvar * 4))
            .clamp(self.config.min, self.config.max);
    }

    /// The tail-loss probe timeout (RFC 8985 7.2) with `segments` in flight: 2 SRTT, plus the
    /// peer's delayed ACK for a lone segment, `pto_margin` for a few, `pto_margin_stretched`
    /// for `ack_stretch` or more; never later than the RTO. None before the first RTT sample
    /// (the RTO covers that time).
    pub fn pto(&self, segments: u32) -> Option<Duration> {
        let (srtt, _) = self.smoothed?;
        let c = &self.config;
        let wait = match segments {
            ..=1 => c.delayed_ack,
            n if n < c.ack_stretch => c.pto_margin,
            _ => c.pto_margin_stretched,
        };
        Some((srtt * 2 + wait).min(self.rto))
    }

    /// The smallest RTT sampled (RFC 8985's reordering window is a quarter of it).
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
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
        RtoEstimator::new(RtoConfig { min: 200 * US, initial: 10 * MS, ..RtoConfig::default() })
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
        assert_eq!(e.rto(), 200 * MS, "Linux's minimum: above its receiver's delayed ACK");
    }

    #[test]
    fn probe_timeout_is_two_srtt_plus_a_delayed_ack_for_a_lone_segment() {
        let mut e = RtoEstimator::new(RtoConfig::default());
        assert_eq!(e.pto(2), None, "no sample: the RTO covers it");
        e.on_sample(8 * MS);
        assert_eq!(e.pto(2), Some(18 * MS), "2 SRTT and Linux's 2 ms");
        assert_eq!(e.pto(1), Some(200 * MS), "capped by the RTO (8 + 4 * 4 -> 200 ms)");
        e.on_sample(US * 100);
        assert_eq!(e.min_rtt(), Some(US * 100));
        let mut e = RtoEstimator::new(RtoConfig { min: MS, ..RtoConfig::default() });
        e.on_sample(US * 100);
        assert_eq!(e.pto(2), Some(MS), "at most the RTO (1 ms)");
        let cfg = RtoConfig { min: MS, pto_margin: US, delayed_ack: MS, ..RtoConfig::default() };
        let mut e = RtoEstimator::new(cfg);
        e.on_sample(US * 100);
        assert_eq!((e.pto(2), e.pto(1)), (Some(US * 201), Some(MS)));
        // Round trips of tens of µs (the testbed): a tail loss waits about Linux's 2 ms, not
        // the TLP draft's 10.
        let mut e = RtoEstimator::new(RtoConfig::default());
        e.on_sample(US * 50);
        assert_eq!(e.pto(2), Some(US * 2100));
        assert_eq!(e.pto(7), Some(US * 2100), "a receiver may still hold its ACK back");
    }

    #[test]
    fn probe_timeout_is_shorter_once_every_receiver_acknowledges_at_once() {
        let mut e = RtoEstimator::new(RtoConfig::default());
        e.on_sample(US * 50);
        assert_eq!(e.pto(8), Some(US * 600), "2 SRTT and 500 µs");
        assert_eq!(e.pto(100), Some(US * 600));
    }

    #[test]
    fn timeouts_back_off_exponentially_up_to_max_then_give_up() {
        let cfg =
            RtoConfig { max_retries: 10, initial: 10 * MS, min: 4 * MS, ..Default::default() };
        let mut e = RtoEstimator::new(cfg);
        let waits: Vec<_> = (0..10).map(|_| e.on_timeout().unwrap()).collect();
        assert_eq!(waits[0], 20 * MS);
        assert_eq!(waits[1], 40 * MS);
        assert_eq!(*waits.last().unwrap(), 2 * Duration::from_secs(1));
        assert_eq!(e.on_timeout(), Err(GaveUp { retries: 10 }));
    }

    #[test]
    fn progress_resets_retries_and_a_sample_ends_backoff() {
        let cfg = RtoConfig { max_retries: 2, min: 4 * MS, ..RtoConfig::default() };
        let mut e = RtoEstimator::new(cfg);
        e.on_timeout().unwrap();
        e.on_timeout().unwrap();
        e.on_progress();
        assert!(e.on_timeout().is_ok(), "retry count restarted");
        e.on_sample(MS);
        assert_eq!(e.rto(), 4 * MS, "a fresh sample replaces the backed-off RTO");
    }
}
