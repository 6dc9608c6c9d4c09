//! Sets of byte ranges `[start, end)` of a message, kept disjoint and merged: what a receiver
//! holds of a message ([`super::msgin`]) and what a sender owes again ([`super::msgout`]).
//! Operations cost O(log n + k) for n ranges held and k touched, so a 64 MiB message arriving in
//! any order stays cheap.
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges {
    /// start → end, disjoint and never touching (touching ranges are merged).
    by_start: BTreeMap<u32, u32>,
    /// Bytes covered.
    bytes: u64,
}

impl Ranges {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    /// Adds `[start, end)`; returns the pieces of it that were not held before, in order.
    pub fn insert(&mut self, start: u32, end: u32) -> Vec<(u32, u32)> {
        let mut new = Vec::new();
        if start >= end {
            return new;
        }
        // The merged range grows from [start, end) over every held range it touches.
        let (mut lo, mut hi) = (start, end);
        let mut cursor = start;
        let first = self.by_start.range(..=start).next_back().map(|(&s, _)| s).unwrap_or(start);
        let touched: Vec<(u32, u32)> = self
            .by_start
            .range(first..=end)
            .map(|(&s, &e)| (s, e))
            .filter(|&(_, e)| e >= start)
            .collect();
        for (s, e) in touched {
            if s > cursor {
                new.push((cursor, s.min(end)));
            }
            cursor = cursor.max(e);
            lo = lo.min(s);
            hi = hi.max(e);
            self.by_start.remove(&s);
            self.bytes -= u64::from(e - s);
        }
        if cursor < end {
            new.push((cursor, end));
        }
        self.by_start.insert(lo, hi);
        self.bytes += u64::from(hi - lo);
        new
    }

    /// Removes and returns the first range, cut to at most `max` bytes.
    pub fn pop_front(&mut self, max: u32) -> Option<(u32, u32)> {
        let (&s, &e) = self.by_start.iter().next()?;
        self.by_start.remove(&s);
        let cut = e.min(s.saturating_add(max));
        if cut < e {
            self.by_start.insert(cut, e);
        }
        self.bytes -= u64::from(cut - s);
        Some((s, cut))
    }

    /// The ranges below `limit` that are not held, in order.
    pub fn gaps_below(&self, limit: u32) -> Vec<(u32, u32)> {
        let mut gaps = Vec::new();
        let mut cursor = 0;
        for (&s, &e) in self.by_start.range(..limit) {
            if s > cursor {
                gaps.push((cursor, s));
            }
            cursor = e;
        }
        if cursor < limit {
            gaps.push((cursor, limit));
        }
        gaps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etran_testkit::fixture::{fuzz_seed, Rng};

    #[test]
    fn insert_reports_only_new_bytes_and_merges() {
        let mut r = Ranges::default();
        assert_eq!(r.insert(10, 20), vec![(10, 20)]);
        assert_eq!(r.insert(30, 40), vec![(30, 40)]);
        assert_eq!(r.insert(10, 20), vec![], "duplicate");
        assert_eq!(r.insert(15, 35), vec![(20, 30)], "fills the hole between");
        assert_eq!(r.bytes(), 30);
        assert_eq!(r.gaps_below(50), vec![(0, 10), (40, 50)]);
        assert_eq!(r.insert(0, 50), vec![(0, 10), (40, 50)]);
        assert_eq!(r.gaps_below(50), vec![]);
        assert_eq!(r.insert(50, 60), vec![(50, 60)], "touching merges");
        assert_eq!(r.by_start.len(), 1);
        assert_eq!(r.insert(7, 7), vec![], "empty");
    }

    #[test]
    fn pop_front_cuts() {
        let mut r = Ranges::default();
        r.insert(100, 4000);
        r.insert(5000, 5001);
        assert_eq!(r.pop_front(1424), Some((100, 1524)));
        assert_eq!(r.pop_front(10_000), Some((1524, 4000)));
        assert_eq!(r.pop_front(10_000), Some((5000, 5001)));
        assert_eq!(r.pop_front(1), None);
        assert!(r.is_empty());
    }

    /// Against a byte map: random inserts report exactly the bytes that were new, and the gaps
    /// are exactly the bytes missing.
    #[test]
    fn randomized_against_a_byte_map() {
        let mut rng = Rng(fuzz_seed("homa ranges", 0xabc1));
        for _ in 0..200 {
            let n = 1 + rng.below(3000);
            let mut held = vec![false; n];
            let mut r = Ranges::default();
            for _ in 0..rng.below(60) {
                let s = rng.below(n);
                let e = s + rng.below(n - s + 1);
                let mut want = Vec::new();
                for (i, h) in held.iter_mut().enumerate().take(e).skip(s) {
                    if !*h {
                        match want.last_mut() {
                            Some((_, end)) if *end == i as u32 => *end += 1,
                            _ => want.push((i as u32, i as u32 + 1)),
                        }
                        *h = true;
                    }
                }
                assert_eq!(r.insert(s as u32, e as u32), want);
                assert_eq!(r.bytes(), held.iter().filter(|&&h| h).count() as u64);
            }
            let limit = rng.below(n + 1);
            let missing: u64 =
                r.gaps_below(limit as u32).iter().map(|(s, e)| u64::from(e - s)).sum();
            assert_eq!(missing, held[..limit].iter().filter(|&&h| !h).count() as u64);
        }
    }
}
