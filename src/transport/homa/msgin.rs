//! One incoming message, assembled from DATA segments that arrive in any order, duplicated or
//! overlapping (a resent packet may straddle what already arrived): each byte is taken once,
//! from whichever segment brings it first. And what to ask for again when the sender goes
//! quiet: every range below the granted offset that has not arrived, one RESEND each, as
//! HomaModule does (it tracks the same gaps; it drops a segment that only partly overlaps
//! what it holds, where we keep its new bytes).
use std::fmt;

use super::{ranges::Ranges, MAX_MESSAGE};

/// A message being received: its bytes and which of them arrived.
#[derive(Debug)]
pub struct MessageIn {
    length: u32,
    /// Allocated at the first payload, so an announced length costs nothing until data comes.
    buf: Vec<u8>,
    have: Ranges,
}

/// Why a segment or message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The message is longer than [`MAX_MESSAGE`].
    TooLong(u32),
    /// The segment runs past the end of the message.
    PastEnd { offset: u32, len: usize },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::TooLong(n) => write!(f, "a {n}-byte message is longer than {MAX_MESSAGE}"),
            Refused::PastEnd { offset, len } => {
                write!(f, "{len} bytes at offset {offset} run past the message's end")
            }
        }
    }
}

impl std::error::Error for Refused {}

impl MessageIn {
    pub fn new(length: u32) -> Result<MessageIn, Refused> {
        if length > MAX_MESSAGE {
            return Err(Refused::TooLong(length));
        }
        Ok(MessageIn { length, buf: Vec::new(), have: Ranges::default() })
    }

    pub fn length(&self) -> u32 {
        self.length
    }

    /// Bytes received (each counted once, wherever it lies).
    pub fn received(&self) -> u32 {
        self.have.bytes() as u32
    }

    pub fn is_complete(&self) -> bool {
        self.received() == self.length
    }

    /// Takes the segment's bytes not held yet; returns how many that was (0: a duplicate).
    pub fn add(&mut self, offset: u32, payload: &[u8]) -> Result<u32, Refused> {
        let past = || Refused::PastEnd { offset, len: payload.len() };
        let end = u32::try_from(payload.len())
            .ok()
            .and_then(|n| offset.checked_add(n))
            .filter(|&end| end <= self.length)
            .ok_or_else(past)?;
        if self.buf.is_empty() {
            self.buf = vec![0; self.length as usize];
        }
        let mut taken = 0;
        for (s, e) in self.have.insert(offset, end) {
            let from = (s - offset) as usize..(e - offset) as usize;
            self.buf[s as usize..e as usize].copy_from_slice(&payload[from]);
            taken += e - s;
        }
        Ok(taken)
    }

    /// The ranges below `granted` (the most the sender may have sent) that have not arrived:
    /// one RESEND `(offset, length)` each.
    pub fn resend_ranges(&self, granted: u32) -> Vec<(u32, u32)> {
        let limit = granted.min(self.length);
        self.have.gaps_below(limit).into_iter().map(|(s, e)| (s, e - s)).collect()
    }

    /// The whole message, once complete.
    pub fn into_bytes(self) -> Option<Vec<u8>> {
        self.is_complete().then_some(self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::homa::MAX_PAYLOAD;
    use etran_testkit::fixture::{fuzz_seed, Rng};

    fn message(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = Rng(seed);
        (0..len).map(|_| rng.next_u64() as u8).collect()
    }

    #[test]
    fn in_order_out_of_order_duplicate_and_overlap() {
        let msg = message(5000, 7);
        let mut m = MessageIn::new(5000).expect("small");
        assert_eq!(m.add(1424, &msg[1424..2848]), Ok(1424), "out of order first");
        assert_eq!(m.resend_ranges(5000), vec![(0, 1424), (2848, 2152)]);
        assert_eq!(m.resend_ranges(2000), vec![(0, 1424)], "only what was granted");
        assert_eq!(m.add(1424, &msg[1424..2848]), Ok(0), "duplicate");
        // A resent segment straddling held bytes: only its new bytes count.
        assert_eq!(m.add(1000, &msg[1000..3000]), Ok(424 + 152));
        assert_eq!(m.add(0, &msg[..1000]), Ok(1000));
        assert_eq!(m.received(), 3000);
        assert!(!m.is_complete());
        assert_eq!(m.add(3000, &msg[3000..]), Ok(2000));
        assert!(m.is_complete());
        assert_eq!(m.resend_ranges(u32::MAX), vec![]);
        assert_eq!(m.into_bytes(), Some(msg));
    }

    #[test]
    fn one_byte_message() {
        let mut m = MessageIn::new(1).expect("small");
        assert_eq!(m.resend_ranges(1), vec![(0, 1)]);
        assert_eq!(m.add(0, b"x"), Ok(1));
        assert_eq!(m.into_bytes(), Some(b"x".to_vec()));
    }

    #[test]
    fn refusals_carry_their_reason() {
        assert_eq!(MessageIn::new(MAX_MESSAGE + 1).unwrap_err(), Refused::TooLong(MAX_MESSAGE + 1));
        let mut m = MessageIn::new(100).expect("small");
        assert_eq!(m.add(99, b"ab"), Err(Refused::PastEnd { offset: 99, len: 2 }));
        assert_eq!(m.add(u32::MAX, b"ab"), Err(Refused::PastEnd { offset: u32::MAX, len: 2 }));
        assert_eq!(m.add(100, b""), Ok(0), "empty at the end is harmless");
        assert_eq!(m.received(), 0);
        assert!(Refused::PastEnd { offset: 99, len: 2 }.to_string().contains("offset 99"));
    }

    /// Messages from 1 byte to 16 MB arrive as packets shuffled, duplicated and re-cut at
    /// other boundaries (as a resend after a lost packet might be); each is rebuilt byte for
    /// byte, and until it is complete the resend ranges name exactly what is missing.
    #[test]
    fn randomized_arrival_orders_rebuild_every_size() {
        let mut rng = Rng(fuzz_seed("homa msgin", 0x16_0000));
        let sizes = [1usize, 2, 1423, 1424, 1425, 40_000, 1_000_000, 16 << 20];
        for (i, &len) in sizes.iter().enumerate() {
            let msg = message(len, 100 + i as u64);
            let mut segments: Vec<(usize, usize)> = (0..len)
                .step_by(MAX_PAYLOAD as usize)
                .map(|s| (s, (s + MAX_PAYLOAD as usize).min(len)))
                .collect();
            // Duplicates and overlapping re-cuts, a tenth as many as there are packets.
            for _ in 0..segments.len() / 10 + 1 {
                let s = rng.below(len);
                let e = (s + 1 + rng.below(3 * MAX_PAYLOAD as usize)).min(len);
                segments.push((s, e));
            }
            for k in (1..segments.len()).rev() {
                segments.swap(k, rng.below(k + 1));
            }
            let mut m = MessageIn::new(len as u32).expect("fits");
            let mut taken = 0u64;
            for (n, &(s, e)) in segments.iter().enumerate() {
                taken += u64::from(m.add(s as u32, &msg[s..e]).expect("inside"));
                if n % 997 == 0 && !m.is_complete() {
                    let missing: u64 =
                        m.resend_ranges(len as u32).iter().map(|&(_, l)| u64::from(l)).sum();
                    assert_eq!(missing + u64::from(m.received()), len as u64);
                }
            }
            assert_eq!(taken, len as u64, "every byte taken exactly once");
            assert_eq!(m.into_bytes().as_deref(), Some(&msg[..]), "{len} bytes");
        }
    }
}
