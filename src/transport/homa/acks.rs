//! A client's acks for one server host: RPCs whose whole response arrived, which the server may
//! now forget. Each rides to the server on the next DATA there (one per packet), or in an ACK
//! packet: when a NEED_ACK asks, or when more are held than one ACK packet carries (then the
//! RPC that overflowed rides in that packet's header), as homa_peer.c keeps them.
use super::wire::{Ack, Acks, MAX_ACKS};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingAcks {
    held: Vec<Ack>,
}

impl PendingAcks {
    /// An RPC to this server completed. Returns the acks to send in an ACK packet now (whose
    /// header names the RPC just completed, acked by it too) when no room was left.
    pub fn push(&mut self, ack: Ack) -> Option<Acks> {
        if self.held.len() < MAX_ACKS {
            self.held.push(ack);
            return None;
        }
        let full = Acks::new(&self.held).expect("at most MAX_ACKS held");
        self.held.clear();
        Some(full)
    }

    /// One ack for the DATA about to go to this server.
    pub fn take_one(&mut self) -> Option<Ack> {
        self.held.pop()
    }

    /// Every ack held, for an ACK packet (answering a NEED_ACK).
    pub fn take_all(&mut self) -> Acks {
        let all = Acks::new(&self.held).expect("at most MAX_ACKS held");
        self.held.clear();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(id: u64) -> Ack {
        Ack { client_id: id, server_port: 80 }
    }

    #[test]
    fn piggyback_then_overflow_into_an_ack_packet() {
        let mut p = PendingAcks::default();
        for id in 1..=5 {
            assert_eq!(p.push(ack(2 * id)), None);
        }
        assert_eq!(p.take_one(), Some(ack(10)), "one rides on the next DATA");
        assert_eq!(p.push(ack(12)), None);
        let full = p.push(ack(14)).expect("sixth: an ACK packet now");
        assert_eq!(full.as_slice(), [ack(2), ack(4), ack(6), ack(8), ack(12)]);
        assert_eq!(p.take_all().as_slice(), [], "the overflowing one is in the header");
    }

    #[test]
    fn need_ack_takes_them_all() {
        let mut p = PendingAcks::default();
        p.push(ack(2));
        p.push(ack(4));
        assert_eq!(p.take_all().as_slice(), [ack(2), ack(4)]);
        assert_eq!(p.take_one(), None);
    }
}
