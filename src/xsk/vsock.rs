//! Virtual sockets: one logical endpoint spread over several queues' AF_XDP sockets (as the
//! paper does for an app thread that owns several NIC queues), served fairly with deficit round
//! robin so a busy queue cannot starve the others, in bytes rather than frames.
use super::socket::{Desc, Socket};

/// What one queue did with its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// Bytes consumed (charged against the queue's deficit).
    pub bytes: u32,
    /// Whether the queue still has work (keeps its remaining deficit) or went idle (deficit
    /// reset, as DRR requires, so an idle queue cannot hoard credit).
    pub backlogged: bool,
}

/// Deficit round robin over `n` queues with a fixed quantum (bytes per round).
#[derive(Debug, Clone)]
pub struct Drr {
    quantum: u32,
    deficit: Vec<u32>,
    next: usize,
}

impl Drr {
    pub fn new(queues: usize, quantum: u32) -> Drr {
        assert!(quantum > 0, "DRR quantum must be positive");
        Drr { quantum, deficit: vec![0; queues], next: 0 }
    }

    pub fn queues(&self) -> usize {
        self.deficit.len()
    }

    pub fn deficit(&self, q: usize) -> u32 {
        self.deficit[q]
    }

    /// One round: every queue in turn (starting after the one that went first last time)
    /// gets its deficit topped up by the quantum and is offered that many bytes. `serve(q,
    /// allowance)` must consume only whole frames that fit in `allowance` and report what it
    /// took. Returns the bytes served in the round.
    pub fn round(&mut self, mut serve: impl FnMut(usize, u32) -> Served) -> u64 {
        let n = self.deficit.len();
        let mut total = 0u64;
        for k in 0..n {
            let q = (self.next + k) % n;
            let allowance = self.deficit[q].saturating_add(self.quantum);
            let s = serve(q, allowance);
            debug_assert!(s.bytes <= allowance, "queue {q} overspent its allowance");
            total += u64::from(s.bytes);
            self.deficit[q] = if s.backlogged { allowance - s.bytes.min(allowance) } else { 0 };
        }
        if n > 0 {
            self.next = (self.next + 1) % n;
        }
        total
    }
}

/// Several AF_XDP sockets (one per queue, typically sharing one UMEM) acting as one endpoint.
pub struct VirtualSocket {
    socks: Vec<Socket>,
    drr: Drr,
    tx_next: usize,
}

impl VirtualSocket {
    /// `quantum`: bytes each queue may deliver per round (at least one MTU-sized frame).
    pub fn new(socks: Vec<Socket>, quantum: u32) -> VirtualSocket {
        let drr = Drr::new(socks.len(), quantum.max(1));
        VirtualSocket { socks, drr, tx_next: 0 }
    }

    pub fn sockets(&self) -> &[Socket] {
        &self.socks
    }

    pub fn sockets_mut(&mut self) -> &mut [Socket] {
        &mut self.socks
    }

    /// One DRR round over the RX rings: each frame served is passed to `f(queue, desc)` and
    /// released from its ring (its frame now belongs to the caller, who returns it to a fill
    /// ring). Returns the number of frames.
    pub fn recv_round(&mut self, mut f: impl FnMut(usize, Desc)) -> usize {
        let socks = &mut self.socks;
        let mut frames = 0;
        self.drr.round(|q, allowance| {
            let Some(rx) = socks[q].rx() else {
                return Served { bytes: 0, backlogged: false };
            };
            let want = rx.size();
            let peek = rx.peek(want);
            let mut used = 0u32;
            let mut taken = 0;
            for d in peek.iter() {
                if used + d.len > allowance {
                    break;
                }
                used += d.len;
                taken += 1;
                f(q, d);
            }
            let backlogged = taken < peek.len();
            peek.release_first(taken);
            frames += taken as usize;
            Served { bytes: used, backlogged }
        });
        frames
    }

    /// The next queue (round robin) whose TX ring has room for `want` descriptors.
    pub fn pick_tx(&mut self, want: u32) -> Option<usize> {
        let n = self.socks.len();
        for k in 0..n {
            let q = (self.tx_next + k) % n;
            if self.socks[q].tx().is_some_and(|t| t.free(want) >= want) {
                self.tx_next = (q + 1) % n;
                return Some(q);
            }
        }
        None
    }

    /// Kicks every queue whose TX ring asked for it.
    pub fn wake_tx_all(&self) -> std::io::Result<()> {
        for s in &self.socks {
            s.wake_tx()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn serve_queue(q: &mut VecDeque<u32>, allowance: u32) -> Served {
        let mut used = 0;
        while let Some(&len) = q.front() {
            if used + len > allowance {
                break;
            }
            used += len;
            q.pop_front();
        }
        Served { bytes: used, backlogged: !q.is_empty() }
    }

    #[test]
    fn drr_shares_bytes_fairly_between_small_and_large_frames() {
        // Queue 0: 64-byte frames; queue 1: 1500-byte frames; both always backlogged.
        let mut queues =
            [VecDeque::from(vec![64u32; 100_000]), VecDeque::from(vec![1500u32; 10_000])];
        let mut drr = Drr::new(2, 1514);
        let mut bytes = [0u64; 2];
        for _ in 0..1000 {
            drr.round(|q, allowance| {
                let s = serve_queue(&mut queues[q], allowance);
                bytes[q] += u64::from(s.bytes);
                s
            });
        }
        let (a, b) = (bytes[0] as f64, bytes[1] as f64);
        assert!((a / b - 1.0).abs() < 0.01, "unfair: {bytes:?}");
        assert!(drr.deficit(0) < 1514 + 64 && drr.deficit(1) < 1514 + 1500);
    }

    #[test]
    fn drr_idle_queue_does_not_hoard_credit_and_big_frames_eventually_go() {
        let mut drr = Drr::new(3, 500);
        let mut queues =
            [VecDeque::new(), VecDeque::from(vec![1400u32; 3]), VecDeque::from(vec![100u32; 100])];
        let mut rounds = 0;
        while !queues[1].is_empty() {
            drr.round(|q, a| serve_queue(&mut queues[q], a));
            assert_eq!(drr.deficit(0), 0);
            rounds += 1;
            assert!(rounds < 20, "1400-byte frames starved");
        }
        assert!(!queues[2].is_empty() || rounds >= 18);
    }

    #[test]
    fn drr_starting_queue_rotates() {
        let mut drr = Drr::new(3, 100);
        let mut first = Vec::new();
        for _ in 0..3 {
            let mut seen = None;
            drr.round(|q, _| {
                seen.get_or_insert(q);
                Served { bytes: 0, backlogged: false }
            });
            first.push(seen.unwrap());
        }
        assert_eq!(first, vec![0, 1, 2]);
    }
}
