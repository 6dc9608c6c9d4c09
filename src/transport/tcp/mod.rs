//! The TCP transport's room, all of its user-space side (its BPF is in `src/bpf/tcp/`):
//! - pure protocol logic, tested without BPF or sockets: [`close`], [`handshake`], [`isn`],
//!   [`listen`] (who accepts on a listening port), [`options`], [`persist`], [`rto`], [`sack`], [`segment`], [`seq`] (serial arithmetic, the
//!   Rust half of `tcp/tcp_seq.h`), [`window`];
//! - the app-side engine: [`stream`] (one connection's byte stream) and [`early`] (frames that
//!   reach the app before its connection is adopted);
//! - the daemon-side control: [`control`] (the slow path: handshakes, TIME_WAIT, aborts);
//! - [`handles`]: the TCP object's maps and programs, found from the attached datapath;
//!   [`rehome`]: moving a connection between apps (`etran_tcp_rehome`).
pub mod close;
pub mod control;
pub mod early;
pub mod handles;
pub mod handshake;
pub mod isn;
pub mod listen;
pub mod options;
pub mod persist;
pub mod rehome;
pub mod rto;
pub mod sack;
pub mod segment;
pub mod seq;
pub mod small_queues;
pub mod stream;
pub mod window;

pub use handles::{tcp_handles, TcpHandles};
