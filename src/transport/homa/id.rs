//! RPC ids, numbered as HomaModule numbers them. A client gives each of its RPCs an even id; the
//! server's id for the same RPC is that id + 1. Every packet carries the id its *sender* uses
//! (`sender_id`), so its low bit says whether a server sent it, and the receiver's own id is
//! `sender_id ^ 1`. Id 0 is never used: an ack naming client id 0 is no ack.
//!
//! A HomaModule server tells RPCs apart by the client's address and id alone (not its port),
//! so a client's ids must be unique across its whole host, not just one app. The daemon hands
//! out blocks of ids ([`HostIds`]); each app numbers its RPCs within its block ([`IdBlock`]).

/// One side's id of an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RpcId(u64);

impl RpcId {
    /// Our id for the RPC a received packet names by its `sender_id`.
    pub fn from_wire(sender_id: u64) -> RpcId {
        RpcId(sender_id ^ 1)
    }

    /// What our packets for the RPC carry as `sender_id`.
    pub fn wire(self) -> u64 {
        self.0
    }

    /// True on the client's side of the RPC.
    pub fn is_client(self) -> bool {
        self.0 & 1 == 0
    }

    /// The client's id, which acks name.
    pub fn client_id(self) -> u64 {
        self.0 & !1
    }
}

/// Even ids an app gives its RPCs as a client: `[next, end)`. The daemon hands it to the app
/// (it travels in the app protocol).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdBlock {
    next: u64,
    end: u64,
}

impl IdBlock {
    /// Whether every id of the block was given (the app asks the daemon for another).
    pub fn used_up(&self) -> bool {
        self.next >= self.end
    }

    /// The next client id; `None` once the block is used up (the app asks for another).
    pub fn next_id(&mut self) -> Option<RpcId> {
        (self.next < self.end).then(|| {
            let id = RpcId(self.next);
            self.next += 2;
            id
        })
    }
}

#[cfg(test)]
impl IdBlock {
    /// A block of the `n` ids from `start` (even): one a test can use up.
    pub(crate) fn of(start: u64, n: u64) -> IdBlock {
        IdBlock { next: start, end: start + 2 * n }
    }
}

/// The host's client ids, handed out a block at a time.
#[derive(Debug, Default)]
pub struct HostIds {
    blocks: u64,
}

impl HostIds {
    /// Ids per block: 2^19 RPCs each.
    pub const BLOCK: u64 = 1 << 20;

    /// A block no one else on the host was given (2^44 of them before wrapping around, which
    /// at ten million RPCs a second takes longer than a host lives).
    pub fn block(&mut self) -> IdBlock {
        let start = self.blocks.wrapping_mul(Self::BLOCK);
        self.blocks = (self.blocks + 1) % (u64::MAX / Self::BLOCK + 1);
        IdBlock { next: start.max(2), end: start + (Self::BLOCK - 1) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_low_bit_tells_client_from_server() {
        let mut ids = HostIds::default().block();
        let client = ids.next_id().expect("fresh block");
        assert_eq!(client.wire(), 2, "HomaModule's first id; 0 means no ack");
        assert!(client.is_client());
        // The client's DATA reaches the server, which knows the RPC by the odd id.
        let server = RpcId::from_wire(client.wire());
        assert_eq!(server.wire(), 3);
        assert!(!server.is_client());
        assert_eq!(server.client_id(), 2, "an ack names the client's id");
        // The server's reply names the client's id again.
        assert_eq!(RpcId::from_wire(server.wire()), client);
        assert_eq!(ids.next_id().map(RpcId::wire), Some(4));
    }

    #[test]
    fn blocks_never_overlap_and_run_out() {
        let mut host = HostIds::default();
        let mut first = host.block();
        let mut second = host.block();
        let a: Vec<u64> = std::iter::from_fn(|| first.next_id()).map(RpcId::wire).collect();
        let b: Vec<u64> = std::iter::from_fn(|| second.next_id()).map(RpcId::wire).collect();
        assert_eq!(a.len() as u64, HostIds::BLOCK / 2 - 1, "id 0 is skipped");
        assert_eq!(b.len() as u64, HostIds::BLOCK / 2);
        assert!(a.iter().chain(&b).all(|id| id % 2 == 0));
        assert!(a.last() < b.first(), "disjoint");
        assert_eq!(first.next_id(), None);
    }
}
