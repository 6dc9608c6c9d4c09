//! The byte streams `etran bench echo` and the interop tests send and check: stream `seed`'s byte at offset
//! `i` is `table[(i + shift(seed)) % PERIOD]`, one pseudo-random table of prime period shared by
//! every stream. Generating and checking are `memcpy`/`memcmp` of table slices (a per-byte
//! formula cost the echo bench a quarter of a CPU at 64 KB messages), and a misplaced or
//! misrouted run of bytes still shows: no segment size lines up with a prime period, and two
//! streams are different shifts of the table.
use std::sync::OnceLock;

/// The period: prime.
pub const PERIOD: usize = 65521;

/// Table byte `j` (a multiplicative hash; the python3 interop peer computes the same).
fn table_byte(j: usize) -> u8 {
    ((j as u64 * 2_654_435_761) >> 13) as u8
}

/// How far stream `seed` is shifted into the table. Distinct for seeds below [`PERIOD`].
fn shift(seed: u32) -> usize {
    (u64::from(seed) * 40_503 % PERIOD as u64) as usize
}

/// The table, twice over: any run of up to [`PERIOD`] bytes from any offset is one slice.
fn table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| (0..2 * PERIOD).map(|j| table_byte(j % PERIOD)).collect())
}

/// Stream `seed` of the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pattern {
    shift: usize,
}

impl Pattern {
    pub fn new(seed: u32) -> Pattern {
        Pattern { shift: shift(seed) }
    }

    /// The `len` (≤ [`PERIOD`]) bytes from stream offset `off`.
    pub fn at(&self, off: u64, len: usize) -> &'static [u8] {
        let start = ((off + self.shift as u64) % PERIOD as u64) as usize;
        &table()[start..start + len]
    }

    /// Appends the `len` bytes from stream offset `off` to `out`.
    pub fn extend(&self, out: &mut Vec<u8>, off: u64, len: u64) {
        let mut done = 0;
        while done < len {
            let k = (len - done).min(PERIOD as u64);
            out.extend_from_slice(self.at(off + done, k as usize));
            done += k;
        }
    }

    /// The first stream offset in `data` (received at stream offset `off`) that differs, if
    /// any.
    pub fn mismatch(&self, off: u64, data: &[u8]) -> Option<u64> {
        let mut done = 0;
        for chunk in data.chunks(PERIOD) {
            let want = self.at(off + done as u64, chunk.len());
            if chunk != want {
                let i = chunk.iter().zip(want).position(|(a, b)| a != b).expect("they differ");
                return Some(off + (done + i) as u64);
            }
            done += chunk.len();
        }
        None
    }

    /// What the python3 interop peer needs to compute the same stream: the table's formula and
    /// this stream's shift (`two[(off + shift) % P]`, `two` the table twice).
    pub const PYTHON: &'static str = "P = 65521\n\
         one = bytes(((j * 2654435761) >> 13) & 0xff for j in range(P))\n\
         two = one + one\n";

    /// The shift the python3 peer adds to every offset.
    pub fn python_shift(&self) -> usize {
        self.shift
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_across_seeds_and_offsets() {
        let (a, b) = (Pattern::new(1), Pattern::new(2));
        assert_ne!(a.at(0, 512), b.at(0, 512));
        assert_ne!(a.at(0, 256), a.at(256, 256));
        // Every shift of a stream by a non-multiple of the period shows within a few bytes.
        for d in [1, 256, 1448, 4096, 65536] {
            assert_ne!(a.at(0, 16), a.at(d, 16), "shift {d}");
        }
        let shifts: std::collections::HashSet<usize> =
            (0..20_000).map(|s| Pattern::new(s).shift).collect();
        assert_eq!(shifts.len(), 20_000, "stream shifts are distinct");
    }

    #[test]
    fn extend_and_mismatch_agree_across_the_period_boundary() {
        let p = Pattern::new(7);
        let off = PERIOD as u64 - 100;
        let mut data = Vec::new();
        p.extend(&mut data, off, 3 * PERIOD as u64 + 17);
        assert_eq!(data.len(), 3 * PERIOD + 17);
        assert_eq!(p.mismatch(off, &data), None);
        for (i, &b) in data.iter().enumerate().step_by(997) {
            assert_eq!(b, p.at(off + i as u64, 1)[0]);
        }
        data[PERIOD + 5] ^= 1;
        assert_eq!(p.mismatch(off, &data), Some(off + PERIOD as u64 + 5));
    }
}
