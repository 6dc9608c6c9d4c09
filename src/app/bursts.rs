//! When an app's sends are worth batching ([`crate::proto::Request::Batch`]).
//!
//! On the compat backend every frame an app sends runs the whole path through the kernel
//! before the next one leaves, unless its port's kernel side runs as a NAPI thread, which then
//! takes the app's frames in batches that the receiver's GRO merges: a bulk sender then costs
//! about a third of the CPU per byte, but a lone frame pays a thread's wakeup (a 64-byte
//! ping-pong's round trip went from 10 to 16 µs). So the app asks for batching while it
//! streams: a connection holding at least [`BURST_SEGMENTS`] segments of bytes sent and not
//! acknowledged or not yet sent, and gives it back after [`QUIET`] without one.
use std::time::{Duration, Instant};

/// A connection with this many segments of bytes in flight or waiting to go is streaming.
pub const BURST_SEGMENTS: usize = 16;
/// Batching ends after this long without a streaming connection.
pub const QUIET: Duration = Duration::from_millis(50);

/// Whether the app streams, as its passes saw it.
#[derive(Debug, Default)]
pub struct Bursts {
    on: bool,
    /// The last pass that saw a streaming connection.
    last: Option<Instant>,
}

impl Bursts {
    /// Whether a connection of `mss` with `backlog` bytes in flight or unsent streams.
    pub fn streams(backlog: usize, mss: u16) -> bool {
        backlog >= BURST_SEGMENTS * usize::from(mss)
    }

    /// The end of a pass at `now` that saw a streaming connection (`streaming`) or not:
    /// Some(on) when batching should start or stop.
    pub fn pass(&mut self, streaming: bool, now: Instant) -> Option<bool> {
        if streaming {
            self.last = Some(now);
        }
        let want = self.last.is_some_and(|t| now.saturating_duration_since(t) < QUIET);
        (want != self.on).then(|| {
            self.on = want;
            want
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_streams_from_sixteen_segments_of_backlog() {
        assert!(!Bursts::streams(15 * 1448, 1448));
        assert!(Bursts::streams(16 * 1448, 1448));
        assert!(!Bursts::streams(64, 1448), "a small message");
    }

    #[test]
    fn batching_starts_with_a_stream_and_ends_after_a_quiet_spell() {
        let t0 = Instant::now();
        let mut b = Bursts::default();
        assert_eq!(b.pass(false, t0), None, "nothing streams: nothing to ask");
        assert_eq!(b.pass(true, t0), Some(true));
        assert!(b.on);
        assert_eq!(b.pass(true, t0 + QUIET / 2), None, "asked once");
        let last = t0 + QUIET / 2;
        assert_eq!(b.pass(false, last + QUIET / 2), None, "still within the quiet spell");
        assert_eq!(b.pass(false, last + QUIET), Some(false));
        assert!(!b.on);
        assert_eq!(b.pass(false, last + QUIET * 2), None, "asked once");
        assert_eq!(b.pass(true, last + QUIET * 3), Some(true), "a new stream");
    }

    #[test]
    fn passes_without_a_stream_never_ask() {
        let t0 = Instant::now();
        let mut b = Bursts::default();
        for i in 0..100 {
            assert_eq!(b.pass(false, t0 + Duration::from_millis(i)), None);
        }
    }
}
