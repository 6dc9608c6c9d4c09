//! Helpers shared by the BPF_PROG_TEST_RUN fixture tests: counter look-ups by name and a
//! deterministic random source for the mutation fuzzers.
use etran::loader::counters::{ClassCounts, Counters};

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

/// Frames counted under event `event` (e.g. "tcp_tx_data").
pub fn event_total(c: &Counters, event: &str) -> u64 {
    c.events
        .iter()
        .find(|e| e.event == event)
        .unwrap_or_else(|| panic!("no event {event}"))
        .count
        .packets
}

/// How many frames each of `events` counted between `before` and `after`.
pub fn event_deltas<const N: usize>(
    before: &Counters,
    after: &Counters,
    events: [&str; N],
) -> [u64; N] {
    events.map(|e| event_total(after, e) - event_total(before, e))
}

/// Frames counted in any class and verdict.
pub fn total_frames(c: &Counters) -> u64 {
    c.traffic.iter().map(|r| r.transport.packets + r.pass.packets + r.drop.packets).sum()
}

/// The seed of mutation fuzzer `name`: `ETRAN_FUZZ_SEED` (decimal or 0x-hex) when set, else
/// `default`. Printed, so that any run can be repeated (and other seeds explored).
pub fn fuzz_seed(name: &str, default: u64) -> u64 {
    let seed = match std::env::var("ETRAN_FUZZ_SEED") {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("ETRAN_FUZZ_SEED={v}: {e}"))
        }
        Err(_) => default,
    };
    assert_ne!(seed, 0, "xorshift never leaves 0: pick another seed");
    eprintln!("{name}: fuzz seed {seed:#x} (set ETRAN_FUZZ_SEED to change it)");
    seed
}

/// xorshift64*: deterministic, so a failure names a reproducible seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}
