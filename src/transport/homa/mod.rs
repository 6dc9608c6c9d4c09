//! Homa (HomaModule's protocol, IP protocol 146) on the user-space side: the wire format, the
//! protocol's pure logic (unit-tested away from the kernel), the app engine and the daemon's
//! control path; the fast path is `src/bpf/homa/` (ARCHITECTURE.md, "Homa").
//!
//! - [`wire`]: every packet type, encoded and decoded with the layouts of
//!   `src/bpf/homa/homa_wire.h`.
//! - [`id`]: RPC ids (clients even, the server's the client's + 1) and their allocation.
//! - [`ranges`]: sets of byte ranges, what the message modules count with.
//! - [`msgin`]: a message assembled from DATA segments, and which ranges to ask again.
//! - [`msgout`]: the sender: shortest remaining message first, never beyond its grant.
//! - [`grant`]: the receiver's grant scheduler (SRPT, overcommit, the incoming cap, FIFO).
//! - [`prio`]: priority levels and the unscheduled cutoffs a receiver announces.
//! - [`pace`]: the app's half of the pacer: DATA held back while a paced app's frames wait.
//! - [`loss`]: the per-RPC timer: RESEND, NEED_ACK, abort, on silent ticks.
//! - [`acks`]: a client's acks waiting to reach their server.
//! - [`rpc`]: the app-side engine: one bound port's RPCs, from RX metadata to TX frames.
//! - [`control`]: the daemon's side: port bindings, id blocks, peers, teardown.
//!
//! Defaults are HomaModule's (PlatformLab/HomaModule 9edb95896ba8) unless a constant says
//! otherwise and why.
pub mod acks;
pub mod control;
pub mod grant;
pub mod id;
pub mod loss;
pub mod msgin;
pub mod msgout;
pub mod pace;
pub mod prio;
pub mod ranges;
pub mod rpc;
pub mod wire;

use crate::bpf::homa::types::etran_homa_limit;

/// The most payload one DATA packet carries (`ETRAN_HOMA_MAX_PAYLOAD`): a 1500-byte MTU less
/// IPv4 and the DATA header.
pub const MAX_PAYLOAD: u32 = etran_homa_limit::ETRAN_HOMA_MAX_PAYLOAD.0;
/// The longest message (`ETRAN_HOMA_MAX_MESSAGE`, 64 MiB).
pub const MAX_MESSAGE: u32 = etran_homa_limit::ETRAN_HOMA_MAX_MESSAGE.0;

#[cfg(test)]
mod sim;
