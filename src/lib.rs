//! etran: transports whose state and fast path live in the kernel as eBPF, with applications
//! moving packets through AF_XDP sockets. ARCHITECTURE.md at the top of the repository tells
//! the whole story; in short:
//!
//! - [`bpf`]: the BPF programs (C under `src/bpf/`, embedded as skeletons): the entrance on the
//!   NIC, and per transport its ingress, egress and ACK generator.
//! - [`transport`]: the transport seam ([`transport::RxMeta`], [`transport::Control`]) and one
//!   room per transport holding all of its user-space side ([`transport::tcp`],
//!   [`transport::homa`]: protocol logic, the app-side engine, the daemon-side control path).
//! - [`backend`]: the backend seam ([`backend::Backend`]: an app's egress checkpoint, how the
//!   ACK generator's work is emitted, how frames are paced) and [`backend::compat`], the
//!   stock-kernel backend.
//! - [`app`]: the library applications link: one driver ([`app::Driver`]: their port, the
//!   daemon link, passes and waits) under each transport's API, the socket-style [`app::App`]
//!   over TCP and the RPC [`app::rpc::RpcSocket`] over Homa.
//! - [`daemon`]: the control path: apps register, get a port, open and close connections.
//! - [`loader`]: the datapath on an interface: load, attach, pin, find, counters, probes.
//! - [`xsk`]: our own AF_XDP layer. [`testbed`]: the built-in network of namespaces.
//! - [`cli`], [`cmd`]: the `etran` command; nothing below them imports them.
pub mod app;
pub mod backend;
pub mod bpf;
pub mod checksum;
pub mod cleanup;
pub mod cli;
pub mod cmd;
pub mod daemon;
pub mod ethtool;
pub mod loader;
pub mod log;
pub mod napi;
pub mod netlink;
pub mod netns;
pub mod output;
pub mod packet;
pub mod pattern;
pub mod proto;
pub mod refusal;
pub mod sys;
pub mod testbed;
pub mod timer;
pub mod transport;
pub mod xsk;
