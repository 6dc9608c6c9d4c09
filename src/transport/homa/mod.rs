//! Homa (HomaModule's protocol, IP protocol 146) on the user-space side. Today: the wire format
//! and the protocol's pure logic, unit-tested away from the kernel; the BPF programs, the app
//! engine and the daemon's control path are built on them next (ARCHITECTURE.md, "Homa").
//!
//! - [`wire`]: every packet type, encoded and decoded with the layouts of
//!   `src/bpf/homa/homa_wire.h`.
//!
//! Defaults are HomaModule's (PlatformLab/HomaModule 9edb95896ba8) unless a constant says
//! otherwise and why.
pub mod wire;

use crate::bpf::homa::types::etran_homa_limit;

/// The most payload one DATA packet carries (`ETRAN_HOMA_MAX_PAYLOAD`): a 1500-byte MTU less
/// IPv4 and the DATA header.
pub const MAX_PAYLOAD: u32 = etran_homa_limit::ETRAN_HOMA_MAX_PAYLOAD.0;
/// The longest message (`ETRAN_HOMA_MAX_MESSAGE`, 64 MiB).
pub const MAX_MESSAGE: u32 = etran_homa_limit::ETRAN_HOMA_MAX_MESSAGE.0;

