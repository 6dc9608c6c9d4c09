//! Protocol logic of the TCP transport that lives in user space (the daemon's slow path and the
//! library), kept pure so it is tested without BPF or sockets.
pub mod close;
pub mod handshake;
pub mod isn;
pub mod options;
pub mod rto;
pub mod sack;
pub mod segment;
pub mod window;
