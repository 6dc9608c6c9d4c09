//! DCTCP congestion control (RFC 8257), run by the daemon once per observation window from the
//! per-connection counters the BPF datapath keeps (bytes acknowledged, bytes acknowledged with
//! ECE, losses). The window becomes a pacing rate that egress enforces: rate = cwnd / RTT,
//! capped at the link rate.
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DctcpConfig {
    /// Segment payload size in bytes.
    pub mss: u32,
    /// Initial window in segments.
    pub initial_segments: u32,
    /// Gain of the α estimator (RFC 8257 recommends 1/16).
    pub g: f64,
    /// Largest window in bytes (the send buffer).
    pub max_window: u64,
    /// Link rate in bytes per second: the rate never exceeds it.
    pub link_rate: u64,
}

impl Default for DctcpConfig {
    fn default() -> Self {
        DctcpConfig {
            mss: 1448,
            initial_segments: 10,
            g: 1.0 / 16.0,
            max_window: 512 * 1024,
            link_rate: 25_000_000_000 / 8,
        }
    }
}

/// What the datapath counted during one observation window (about one RTT).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowSample {
    pub acked_bytes: u64,
    /// Of those, bytes whose ACK carried ECE (the receiver saw CE).
    pub ece_bytes: u64,
    /// A loss was detected (fast retransmit) in the window.
    pub loss: bool,
    /// A retransmission timeout fired.
    pub timeout: bool,
}

#[derive(Debug, Clone)]
pub struct Dctcp {
    config: DctcpConfig,
    cwnd: f64,
    ssthresh: f64,
    alpha: f64,
}

impl Dctcp {
    pub fn new(config: DctcpConfig) -> Self {
        let cwnd = f64::from(config.mss * config.initial_segments);
        // α starts at 1 (RFC 8257 3.3): the first marks cut hard until the estimate settles.
        Dctcp { config, cwnd, ssthresh: f64::INFINITY, alpha: 1.0 }
    }

    pub fn window(&self) -> u64 {
        self.cwnd as u64
    }

    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Folds one observation window in and returns the new window in bytes.
    pub fn on_window(&mut self, s: &WindowSample) -> u64 {
        let mss = f64::from(self.config.mss);
        let min = 2.0 * mss;
        if s.acked_bytes > 0 {
            let marked = (s.ece_bytes.min(s.acked_bytes)) as f64 / s.acked_bytes as f64;
            self.alpha = (1.0 - self.config.g) * self.alpha + self.config.g * marked;
        }
        if s.timeout {
            self.ssthresh = (self.cwnd / 2.0).max(min);
            self.cwnd = mss;
        } else if s.loss {
            self.ssthresh = (self.cwnd / 2.0).max(min);
            self.cwnd = self.ssthresh;
        } else if s.ece_bytes > 0 {
            self.cwnd = (self.cwnd * (1.0 - self.alpha / 2.0)).max(min);
            self.ssthresh = self.cwnd;
        } else if self.cwnd < self.ssthresh {
            self.cwnd += s.acked_bytes as f64;
        } else {
            self.cwnd += mss * s.acked_bytes as f64 / self.cwnd;
        }
        self.cwnd = self.cwnd.min(self.config.max_window as f64).max(mss);
        self.window()
    }

    /// The pacing rate in bytes per second for the current window at round-trip time `rtt`.
    pub fn rate(&self, rtt: Duration) -> u64 {
        let secs = rtt.as_secs_f64().max(1e-6);
        ((self.cwnd / secs) as u64).clamp(1, self.config.link_rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(bytes: u64) -> WindowSample {
        WindowSample { acked_bytes: bytes, ..Default::default() }
    }

    #[test]
    fn slow_start_doubles_then_avoidance_adds_one_mss_per_window() {
        let mut cc = Dctcp::new(DctcpConfig::default());
        let w0 = cc.window();
        assert_eq!(w0, 14480);
        assert_eq!(cc.on_window(&acked(w0)), 2 * w0);
        cc.on_window(&WindowSample { loss: true, ..acked(0) });
        let w = cc.window();
        assert_eq!(w, w0, "loss halves the window");
        assert_eq!(cc.on_window(&acked(w)), w + 1448, "congestion avoidance: +1 MSS per RTT");
    }

    #[test]
    fn alpha_tracks_the_marked_fraction() {
        let mut cc = Dctcp::new(DctcpConfig { max_window: u64::MAX / 4, ..Default::default() });
        for _ in 0..200 {
            cc.on_window(&WindowSample { acked_bytes: 1000, ece_bytes: 250, ..Default::default() });
        }
        assert!((cc.alpha() - 0.25).abs() < 1e-3, "alpha {}", cc.alpha());
        let mut clean = Dctcp::new(DctcpConfig::default());
        for _ in 0..200 {
            clean.on_window(&acked(1000));
        }
        assert!(clean.alpha() < 1e-3);
    }

    #[test]
    fn marks_cut_the_window_by_half_alpha() {
        let mut cc = Dctcp::new(DctcpConfig { g: 1.0, ..Default::default() });
        cc.on_window(&acked(14480));
        let before = cc.window() as f64;
        // Everything marked with g = 1: α = 1, the window halves (as TCP would on loss).
        let after =
            cc.on_window(&WindowSample { acked_bytes: 10, ece_bytes: 10, ..Default::default() });
        assert_eq!(after, (before / 2.0) as u64);
        // A quarter marked: α = 0.25, the cut is 12.5 %.
        let w = cc.window() as f64;
        let cut =
            cc.on_window(&WindowSample { acked_bytes: 100, ece_bytes: 25, ..Default::default() });
        assert_eq!(cut, (w * 0.875) as u64);
    }

    #[test]
    fn window_stays_between_one_mss_and_the_buffer() {
        let mut cc = Dctcp::new(DctcpConfig::default());
        cc.on_window(&WindowSample { timeout: true, ..Default::default() });
        assert_eq!(cc.window(), 1448, "a timeout restarts from one segment");
        for _ in 0..100 {
            cc.on_window(&acked(1 << 20));
        }
        assert_eq!(cc.window(), 512 * 1024);
        for _ in 0..100 {
            cc.on_window(&WindowSample { acked_bytes: 1, ece_bytes: 1, ..Default::default() });
        }
        assert_eq!(cc.window(), 2 * 1448, "marks never push below two segments");
    }

    #[test]
    fn rate_is_window_per_rtt_capped_at_the_link() {
        let cc = Dctcp::new(DctcpConfig::default());
        assert_eq!(cc.rate(Duration::from_micros(100)), 144_800_000);
        assert_eq!(cc.rate(Duration::ZERO), 3_125_000_000, "capped at 25 Gbit/s");
    }
}
