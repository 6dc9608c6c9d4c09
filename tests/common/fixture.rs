//! Helpers shared by the BPF_PROG_TEST_RUN fixture tests: counter look-ups by name and a
//! deterministic random source for the mutation fuzzers.
#![allow(dead_code)]

use etran::datapath::counters::{ClassCounts, Counters};

pub fn class<'a>(c: &'a Counters, class: &str) -> &'a ClassCounts {
    c.traffic.iter().find(|r| r.class == class).unwrap_or_else(|| panic!("no class {class}"))
}

pub fn drop_total(c: &Counters, reason: &str) -> u64 {
    c.drops
        .iter()
        .find(|d| d.reason == reason)
        .unwrap_or_else(|| panic!("no reason {reason}"))
        .count
        .packets
}

/// xorshift64*: deterministic, so a failure names a reproducible seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
