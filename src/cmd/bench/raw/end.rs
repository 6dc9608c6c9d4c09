//! The ends of `etran bench raw`'s patterns, as the rows drive them: an [`End`] opened with a
//! [`Setup`], stepped from one thread, finished into a [`Report`]. Their own rooms are the
//! AF_XDP ends ([`super::xsk`]), the Linux UDP ends ([`super::udp`]) and the compat chain's
//! ([`super::chain`]).
use std::sync::Mutex;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{
    cmd::bench::support::Ctl,
    xsk::{Mode, Socket, Statistics, XskProgram},
};

/// Frames per live-frames `BPF_PROG_RUN` call of a generator with a CPU of its own.
pub(super) const GEN_BURST: u32 = 1 << 14;
/// In a lane, the generator makes this many frames per call and the receiving end, which runs
/// right after, lends twice as many.
pub(super) const LANE_GEN_BURST: u32 = 1024;
pub(super) const RX_FRAMES_LANE: u32 = 2 * LANE_GEN_BURST;
/// Copy-mode TX descriptors per `sendto` (`XDP_MAX_TX_SKB_BUDGET`; default 32).
pub(super) const TX_BUDGET: u32 = 256;

#[derive(Debug, Clone, Copy)]
pub(super) struct Params {
    pub(super) size: u32,
    pub(super) batch: u32,
    /// UMEM chunk size: the smallest that receives a `size`-byte frame.
    pub(super) frame_size: u32,
}

/// What one worker saw.
#[derive(Default)]
pub(super) struct Report {
    pub(super) xsk: Option<XskInfo>,
    pub(super) stats: Option<Statistics>,
    pub(super) hist: Option<Histogram<u64>>,
    pub(super) lost: u64,
    pub(super) other: u64,
    /// Frames (echo: round trips) this worker counted as `rx`.
    pub(super) rx: u64,
}

impl Report {
    /// Folds in the report of the other end of the same lane or of another lane; receive
    /// statistics add up.
    pub(super) fn absorb(&mut self, other: Report) {
        self.xsk = self.xsk.or(other.xsk);
        self.stats = match (self.stats, other.stats) {
            (Some(mut a), Some(b)) => {
                a += b;
                Some(a)
            }
            (a, b) => a.or(b),
        };
        self.hist = match (self.hist.take(), other.hist) {
            (Some(mut a), Some(b)) => {
                let _ = a.add(&b);
                Some(a)
            }
            (a, b) => a.or(b),
        };
        self.lost += other.lost;
        self.other += other.other;
        self.rx += other.rx;
    }
}

/// One end of a pattern (sender, receiver, reflector, client, generator), opened in its
/// namespace and then driven by `step` from one thread: alone on a CPU, or in a lane, taking
/// turns with the other end of its queue.
pub(super) trait End {
    /// One batch of work; whether anything moved.
    fn step(&mut self, ctl: &Ctl) -> anyhow::Result<bool>;
    /// What the end saw, once the phase is over.
    fn finish(self: Box<Self>) -> Report;
}

/// What the thread running an end decides for it.
#[derive(Clone, Copy)]
pub(super) struct Setup<'s> {
    /// The queue of the end's interface.
    pub(super) queue: u32,
    /// Receive by busy polling ([`crate::xsk::BusyPoll`]): the end runs its NIC's receive processing.
    pub(super) busy_poll: bool,
    /// Frames a receive-only socket lends the kernel.
    pub(super) lent: u32,
    /// Frames per generator call.
    pub(super) burst: u32,
    /// The row's XDP programs on the end's host: steering its NIC's queues into AF_XDP
    /// sockets, and the generator.
    pub(super) programs: Option<&'s Mutex<XskProgram>>,
}

impl<'s> Setup<'s> {
    /// For an end of lane `queue`: the generator's bursts fit in what the receiving end lends.
    pub(super) fn lane(programs: &'s Option<Mutex<XskProgram>>, queue: u32) -> Setup<'s> {
        Setup {
            queue,
            busy_poll: false,
            lent: RX_FRAMES_LANE,
            burst: LANE_GEN_BURST,
            programs: programs.as_ref(),
        }
    }

    /// For an end with a thread of its own.
    pub(super) fn solo(
        programs: &'s Option<Mutex<XskProgram>>,
        queue: u32,
        busy_poll: bool,
        lent: u32,
    ) -> Setup<'s> {
        Setup { queue, busy_poll, lent, burst: GEN_BURST, programs: programs.as_ref() }
    }

    pub(super) fn programs(&self) -> anyhow::Result<std::sync::MutexGuard<'_, XskProgram>> {
        self.programs
            .context("the row loaded no XDP programs on this host")?
            .lock()
            .map_err(|_| anyhow::anyhow!("a worker panicked holding the XDP programs"))
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct XskInfo {
    pub(super) mode: Mode,
    pub(super) huge_pages: bool,
    pub(super) tx_budget: Option<u32>,
}

impl XskInfo {
    pub(super) fn of(s: &Socket) -> XskInfo {
        XskInfo { mode: s.mode(), huge_pages: s.umem().huge_pages(), tx_budget: s.tx_budget() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::bench::support::latency_histogram;

    #[test]
    fn reports_of_lanes_add_up() {
        let stats = |full, empty| Statistics {
            rx_ring_full: full,
            rx_fill_ring_empty_descs: empty,
            ..Default::default()
        };
        let hist = |v: u64| {
            let mut h = latency_histogram();
            h.record(v).unwrap();
            h
        };
        let mut a = Report {
            stats: Some(stats(1, 2)),
            hist: Some(hist(1_000)),
            lost: 1,
            other: 2,
            rx: 10,
            ..Default::default()
        };
        let b = Report {
            stats: Some(stats(10, 20)),
            hist: Some(hist(3_000)),
            lost: 3,
            other: 4,
            rx: 30,
            ..Default::default()
        };
        a.absorb(b);
        assert_eq!(a.stats, Some(stats(11, 22)));
        let h = a.hist.expect("merged histogram");
        assert_eq!((h.len(), h.min(), h.max() / 1000), (2, 1_000, 3));
        assert_eq!((a.lost, a.other, a.rx), (4, 6, 40));
        // A side without statistics or histogram takes the other's.
        let mut c = Report::default();
        c.absorb(Report { stats: Some(stats(5, 0)), ..Default::default() });
        assert_eq!(c.stats, Some(stats(5, 0)));
        assert!(c.hist.is_none());
    }
}
