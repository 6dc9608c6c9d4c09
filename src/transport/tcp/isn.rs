//! Initial sequence numbers (RFC 6528): a 4-microsecond clock plus a keyed hash of the
//! connection's addresses and ports, so ISNs are unpredictable to an off-path attacker and
//! still increase for reuses of the same 4-tuple.
use std::{
    hash::{BuildHasher, RandomState},
    net::SocketAddrV4,
    time::Instant,
};

pub struct IsnGenerator {
    /// SipHash with per-process random keys: the secret of RFC 6528.
    secret: RandomState,
    epoch: Instant,
}

impl Default for IsnGenerator {
    fn default() -> Self {
        IsnGenerator { secret: RandomState::new(), epoch: Instant::now() }
    }
}

impl IsnGenerator {
    pub fn isn(&self, local: SocketAddrV4, remote: SocketAddrV4) -> u32 {
        self.isn_at(local, remote, self.epoch.elapsed().as_micros() as u64)
    }

    fn isn_at(&self, local: SocketAddrV4, remote: SocketAddrV4, micros: u64) -> u32 {
        let f = self.secret.hash_one((local, remote)) as u32;
        ((micros / 4) as u32).wrapping_add(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn same_tuple_advances_with_the_clock_and_tuples_differ() {
        let g = IsnGenerator::default();
        let (l, r) = (addr("10.99.0.1:40000"), addr("10.99.0.2:80"));
        assert_eq!(g.isn_at(l, r, 400).wrapping_sub(g.isn_at(l, r, 0)), 100);
        assert_ne!(g.isn_at(l, r, 0), g.isn_at(l, addr("10.99.0.2:81"), 0));
        let other = IsnGenerator::default();
        assert_ne!(g.isn_at(l, r, 0), other.isn_at(l, r, 0), "keys are random per generator");
    }
}
