//! The request sizes of `etran bench rpc`: a fixed size, or one of the Homa paper's workloads
//! W1–W5 (Montazeri et al., "Homa: A Receiver-Driven Low-Latency Transport Protocol Using
//! Network Priorities", SIGCOMM 2018, Figure 1) as a piecewise-linear CDF.
//!
//! The tables are our own approximations, read from the published CDF curves and descriptions
//! (W1: Facebook memcached; W2: a Google search application; W3: all of Google's applications
//! together; W4: Facebook Hadoop; W5: web search, from DCTCP), truncated at 1 MB as HomaModule's
//! `cp_node` truncates them, then adjusted so that their means land near `cp_node`'s truncated
//! means (193 B, 441 B, 2,568 B, 61.0 KB, 386 KB). They are not `cp_node`'s weight tables.

/// The largest request size by default: the workloads' truncation (`--max-size`).
pub const MAX_SIZE: u32 = 1_000_000;
/// The most `--max-size` may be: the longest message etran's Homa carries (64 MiB).
pub const SIZE_LIMIT: u32 = 1 << 26;

/// One workload's CDF: (size in bytes, fraction of messages at most that size), both
/// increasing, the first fraction 0 and the last 1. Sizes are spread evenly within a segment.
type Cdf = &'static [(u32, f64)];

const W1: Cdf = &[
    (8, 0.0),
    (16, 0.10),
    (32, 0.31),
    (64, 0.55),
    (128, 0.76),
    (256, 0.885),
    (512, 0.95),
    (1024, 0.983),
    (4096, 0.997),
    (16384, 0.9996),
    (100_000, 1.0),
];

const W2: Cdf = &[
    (8, 0.0),
    (32, 0.22),
    (64, 0.42),
    (128, 0.61),
    (256, 0.76),
    (512, 0.87),
    (1024, 0.94),
    (4096, 0.992),
    (16384, 0.999),
    (131_072, 0.99994),
    (MAX_SIZE, 1.0),
];

const W3: Cdf = &[
    (8, 0.0),
    (64, 0.25),
    (256, 0.52),
    (512, 0.66),
    (1024, 0.78),
    (4096, 0.91),
    (16384, 0.979),
    (65536, 0.996),
    (262_144, 0.9996),
    (MAX_SIZE, 1.0),
];

const W4: Cdf = &[
    (53, 0.0),
    (128, 0.12),
    (256, 0.27),
    (512, 0.40),
    (1024, 0.52),
    (4096, 0.64),
    (16384, 0.73),
    (65536, 0.82),
    (262_144, 0.94),
    (MAX_SIZE, 1.0),
];

const W5: Cdf = &[
    (1430, 0.0),
    (4096, 0.07),
    (16384, 0.14),
    (65536, 0.27),
    (131_072, 0.38),
    (262_144, 0.48),
    (524_288, 0.62),
    (MAX_SIZE, 1.0),
];

/// Where request sizes come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workload {
    Fixed(u32),
    /// `w1`..`w5` (the name), its CDF, and the size larger sizes are cut to (`--max-size`, as
    /// cp_node truncates its distributions at HomaModule's longest message).
    Dist(&'static str, Cdf, u32),
}

impl Workload {
    /// `w1`..`w5` (any case), cut at `max`, or a size in bytes within `min..=max`.
    pub fn parse(s: &str, min: u32, max: u32) -> anyhow::Result<Workload> {
        let dist = match s.to_ascii_lowercase().as_str() {
            "w1" => Some(("w1", W1)),
            "w2" => Some(("w2", W2)),
            "w3" => Some(("w3", W3)),
            "w4" => Some(("w4", W4)),
            "w5" => Some(("w5", W5)),
            _ => None,
        };
        if let Some((name, cdf)) = dist {
            return Ok(Workload::Dist(name, cdf, max));
        }
        match s.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Workload::Fixed(n)),
            _ => anyhow::bail!(
                "--workload must be w1..w5 or a size from {min} to {max} bytes (--max-size), not \
                 {s:?}"
            ),
        }
    }

    /// "w3" or "1000 B".
    pub fn name(&self) -> String {
        match self {
            Workload::Fixed(n) => format!("{n} B"),
            Workload::Dist(name, _, _) => (*name).to_string(),
        }
    }

    /// The largest size it draws.
    pub fn max(&self) -> u32 {
        match self {
            Workload::Fixed(n) => *n,
            Workload::Dist(_, cdf, cap) => cdf[cdf.len() - 1].0.min(*cap),
        }
    }

    /// The size at fraction `u` (in [0, 1)) of the distribution: the inverse CDF.
    pub fn size_at(&self, u: f64) -> u32 {
        let (cdf, cap) = match self {
            Workload::Fixed(n) => return *n,
            Workload::Dist(_, cdf, cap) => (cdf, *cap),
        };
        let i = cdf.iter().position(|&(_, f)| f > u).unwrap_or(cdf.len() - 1).max(1);
        let ((s0, f0), (s1, f1)) = (cdf[i - 1], cdf[i]);
        let t = ((u - f0) / (f1 - f0)).clamp(0.0, 1.0);
        ((f64::from(s0) + t * f64::from(s1 - s0)).round() as u32).min(cap)
    }

    /// The mean size.
    pub fn mean(&self) -> f64 {
        match self {
            Workload::Fixed(n) => f64::from(*n),
            Workload::Dist(_, cdf, cap) => cdf
                .windows(2)
                .map(|w| {
                    let ((s0, f0), (s1, f1)) = (w[0], w[1]);
                    let (s0, s1, cap) = (f64::from(s0), f64::from(s1), f64::from(*cap));
                    // Sizes are spread evenly over the segment; those past the cap are it.
                    let below = ((cap - s0) / (s1 - s0)).clamp(0.0, 1.0);
                    let mean = below * (s0 + s0.max(s1.min(cap))) / 2.0 + (1.0 - below) * cap;
                    (f1 - f0) * mean
                })
                .sum(),
        }
    }

    /// The upper bounds of the size deciles (the sizes at 10 %, 20 % .. 100 %): the buckets the
    /// per-size latencies are reported in.
    pub fn deciles(&self) -> [u32; 10] {
        std::array::from_fn(
            |i| if i == 9 { self.max() } else { self.size_at((i + 1) as f64 / 10.0) },
        )
    }
}

/// A small, fast pseudo-random generator (xorshift64*): sizes need no better.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // A zero state would stay zero.
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_takes_names_and_sizes_and_refuses_the_rest() {
        assert_eq!(Workload::parse("W3", 16, MAX_SIZE).unwrap().name(), "w3");
        assert_eq!(Workload::parse("100", 16, MAX_SIZE).unwrap(), Workload::Fixed(100));
        for bad in ["w6", "15", "1000001", "-1", "1k", ""] {
            let e = Workload::parse(bad, 16, MAX_SIZE).unwrap_err().to_string();
            assert!(e.starts_with("--workload must be w1..w5") && !e.contains('\n'), "{e}");
        }
        let big = Workload::parse("16000000", 16, SIZE_LIMIT).unwrap();
        assert_eq!(big, Workload::Fixed(16_000_000), "--max-size lifts the cap");
    }

    #[test]
    fn tables_are_cdfs_within_the_truncation() {
        for w in ["w1", "w2", "w3", "w4", "w5"] {
            let Workload::Dist(_, cdf, _) = Workload::parse(w, 1, MAX_SIZE).unwrap() else {
                unreachable!()
            };
            assert_eq!(cdf[0].1, 0.0, "{w}");
            assert_eq!(cdf[cdf.len() - 1].1, 1.0, "{w}");
            assert!(cdf.windows(2).all(|p| p[0].0 < p[1].0 && p[0].1 < p[1].1), "{w}");
            assert!(cdf[cdf.len() - 1].0 <= MAX_SIZE);
        }
    }

    /// The means land near cp_node's truncated means, and sampling reproduces them.
    #[test]
    fn means_match_cp_node_and_sampling_follows_the_cdf() {
        let want = [("w1", 193.0), ("w2", 441.0), ("w3", 2568.0), ("w4", 61e3), ("w5", 386e3)];
        for (name, mean) in want {
            let w = Workload::parse(name, 1, MAX_SIZE).unwrap();
            let m = w.mean();
            assert!((m / mean - 1.0).abs() < 0.1, "{name}: mean {m}, cp_node {mean}");
            let mut rng = Rng::new(7);
            let n = 400_000;
            let sizes: Vec<u32> = (0..n).map(|_| w.size_at(rng.unit())).collect();
            let sampled = sizes.iter().map(|&s| f64::from(s)).sum::<f64>() / n as f64;
            assert!((sampled / m - 1.0).abs() < 0.05, "{name}: sampled {sampled}, table {m}");
            assert!(sizes.iter().all(|&s| s >= w.size_at(0.0) && s <= w.max()), "{name}");
            // The median of the samples is the table's.
            let below = sizes.iter().filter(|&&s| s <= w.size_at(0.5)).count() as f64 / n as f64;
            assert!((below - 0.5).abs() < 0.01, "{name}: {below} at or below the median");
        }
    }

    #[test]
    fn inverse_cdf_interpolates_within_a_segment() {
        let w = Workload::Dist("t", &[(10, 0.0), (20, 0.5), (120, 1.0)], MAX_SIZE);
        assert_eq!(w.size_at(0.0), 10);
        assert_eq!(w.size_at(0.25), 15);
        assert_eq!(w.size_at(0.5), 20);
        assert_eq!(w.size_at(0.75), 70);
        assert_eq!(w.size_at(0.999_999), 120);
        assert_eq!(w.deciles()[4], 20);
        assert_eq!(w.deciles()[9], 120);
        assert_eq!(Workload::Fixed(64).size_at(0.3), 64);
        assert_eq!(Workload::Fixed(64).deciles(), [64; 10]);
    }

    /// `--max-size` below a table's end cuts it as cp_node cuts at HomaModule's limit: larger
    /// sizes become the cap, and the mean follows.
    #[test]
    fn a_cap_cuts_the_table() {
        let w = Workload::Dist("t", &[(10, 0.0), (20, 0.5), (120, 1.0)], 70);
        assert_eq!((w.size_at(0.25), w.size_at(0.75), w.size_at(0.9)), (15, 70, 70));
        assert_eq!(w.max(), 70);
        // Half at 15 on average, a quarter spread over 20..70, a quarter at 70.
        assert!((w.mean() - (0.5 * 15.0 + 0.25 * 45.0 + 0.25 * 70.0)).abs() < 1e-9);
        let uncut = Workload::Dist("t", &[(10, 0.0), (20, 0.5), (120, 1.0)], MAX_SIZE);
        assert!((uncut.mean() - (0.5 * 15.0 + 0.5 * 70.0)).abs() < 1e-9);
        let mut rng = Rng::new(3);
        let n = 200_000;
        let sampled = (0..n).map(|_| f64::from(w.size_at(rng.unit()))).sum::<f64>() / n as f64;
        assert!((sampled / w.mean() - 1.0).abs() < 0.02, "{sampled}");
    }
}
