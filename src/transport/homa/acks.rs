//! A client's acks: RPCs whose whole response arrived, which their server may now forget
//! (HomaModule keeps them per peer, homa_peer.c). Each rides to its server on the next DATA the
//! client sends there, one per packet (the DATA header's `ack`), so that back-to-back RPCs cost
//! two packets each, not three; one that finds nothing to ride on within [`HOLD_TICKS`] goes in
//! an ACK packet of its own (unless a DATA to its server is ready to go by then: it rides on that
//! one), and so does one the server asks for (NEED_ACK).
//!
//! An ack rides only to the server address and port of its own RPC: a server host's ports may
//! belong to different apps, and the app whose port served the RPC is the one that must forget
//! it.
use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddrV4,
};

use super::id::RpcId;

/// Ticks an ack waits for a DATA to ride on. At least 2: an RPC completes during a pass, whose
/// tick may come before the continuation that sends the next request.
pub const HOLD_TICKS: u32 = 2;

/// The acks held, by server.
#[derive(Debug, Default)]
pub struct PendingAcks {
    /// Oldest first, each with the tick it was held at.
    held: HashMap<SocketAddrV4, VecDeque<(RpcId, u32)>>,
    len: usize,
}

impl PendingAcks {
    /// The response of our RPC `id` to `server` arrived whole at tick `now`.
    pub fn push(&mut self, server: SocketAddrV4, id: RpcId, now: u32) {
        self.held.entry(server).or_default().push_back((id, now));
        self.len += 1;
    }

    /// The oldest ack for `server`, for a DATA about to go there.
    pub fn take_one(&mut self, server: SocketAddrV4) -> Option<RpcId> {
        let q = self.held.get_mut(&server)?;
        let (id, _) = q.pop_front()?;
        if q.is_empty() {
            self.held.remove(&server);
        }
        self.len -= 1;
        Some(id)
    }

    /// Takes the ack of `id` (the server asked for it: it goes in an ACK packet now); false if
    /// it is not held.
    pub fn take(&mut self, server: SocketAddrV4, id: RpcId) -> bool {
        let Some(q) = self.held.get_mut(&server) else { return false };
        let Some(i) = q.iter().position(|&(held, _)| held == id) else { return false };
        q.remove(i);
        if q.is_empty() {
            self.held.remove(&server);
        }
        self.len -= 1;
        true
    }

    /// At tick `now`, the acks that waited [`HOLD_TICKS`] without a DATA to ride on: each goes
    /// in an ACK packet. Those to a server `data_ready` names (a DATA to it may go now, which
    /// takes them: the pass that ticks sends after) stay: a pass slower than the hold (an app
    /// the host leaves unscheduled, an emulated CPU) still lets the next request carry the ack.
    pub fn due(
        &mut self,
        now: u32,
        data_ready: impl Fn(SocketAddrV4) -> bool,
    ) -> Vec<(SocketAddrV4, RpcId)> {
        let mut out = Vec::new();
        self.held.retain(|&server, q| {
            if data_ready(server) {
                return true;
            }
            while q.front().is_some_and(|&(_, at)| now.wrapping_sub(at) >= HOLD_TICKS) {
                let (id, _) = q.pop_front().expect("a front");
                out.push((server, id));
            }
            !q.is_empty()
        });
        self.len -= out.len();
        out
    }

    /// Acks held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const S1: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80);
    const S2: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 81);

    fn id(n: u64) -> RpcId {
        RpcId::from_wire(2 * n + 1)
    }

    #[test]
    fn each_rides_on_a_data_to_its_own_server_oldest_first() {
        let mut p = PendingAcks::default();
        p.push(S1, id(1), 0);
        p.push(S1, id(2), 0);
        p.push(S2, id(3), 0);
        assert_eq!(p.len(), 3);
        assert_eq!(p.take_one(S1), Some(id(1)));
        assert_eq!(p.take_one(S1), Some(id(2)));
        assert_eq!(p.take_one(S1), None, "not another port's");
        assert_eq!(p.take_one(S2), Some(id(3)));
        assert!(p.is_empty());
    }

    #[test]
    fn unridden_ones_go_alone_after_the_hold() {
        let mut p = PendingAcks::default();
        p.push(S1, id(1), 10);
        p.push(S1, id(2), 11);
        p.push(S2, id(3), 11);
        let none = |_| false;
        assert_eq!(p.due(11, none), []);
        assert_eq!(p.due(12, none), [(S1, id(1))]);
        let mut rest = p.due(13, none);
        rest.sort();
        assert_eq!(rest, [(S1, id(2)), (S2, id(3))]);
        assert!(p.is_empty());
        // The tick counter wraps.
        p.push(S1, id(4), u32::MAX);
        assert_eq!(p.due(0, none), []);
        assert_eq!(p.due(1, none), [(S1, id(4))]);
    }

    /// Past the hold, an ack whose server has a DATA ready to go waits for it; the others go.
    #[test]
    fn one_with_a_data_ready_to_its_server_keeps_waiting_for_it() {
        let mut p = PendingAcks::default();
        p.push(S1, id(1), 10);
        p.push(S2, id(2), 10);
        assert_eq!(p.due(15, |s| s == S1), [(S2, id(2))]);
        assert_eq!(p.take_one(S1), Some(id(1)), "the DATA to S1 takes it");
        assert!(p.is_empty());
    }

    #[test]
    fn a_need_ack_takes_its_own() {
        let mut p = PendingAcks::default();
        p.push(S1, id(1), 0);
        p.push(S1, id(2), 0);
        assert!(p.take(S1, id(2)));
        assert!(!p.take(S1, id(2)), "once");
        assert!(!p.take(S2, id(1)), "another server's");
        assert_eq!((p.len(), p.take_one(S1)), (1, Some(id(1))));
    }
}
