//! etran: transports whose state and fast path live in the kernel as eBPF, with applications
//! moving packets through AF_XDP sockets. See DESIGN.md for the architecture.
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
pub mod netlink;
pub mod netns;
pub mod output;
pub mod proto;
pub mod sys;
pub mod testbed;
pub mod timer;
pub mod transport;
pub mod xsk;
