//! End to end: the real binary, daemons and apps on private namespaces and testbeds, against
//! unmodified Linux programs; one module per subject. Needs root; without it every test says it
//! skips (tests/common/root.rs).
extern crate etran_testkit as common;

mod app_datapath;
mod apps;
mod bench_echo;
mod bench_rpc;
mod check;
mod containers;
mod daemon;
mod datapath;
mod homa_incast;
mod homa_rpc;
mod http_curl;
mod mtu;
mod port_batching;
mod shim;
mod shim_fork;
mod tcp_close;
mod tcp_connect;
mod tcp_dctcp;
mod tcp_echo;
mod tcp_handshake;
mod tcp_integrity;
mod tcp_interop;
mod tcp_loss;
mod tcp_open_race;
mod tcp_peer_options;
mod tcp_protection;
mod tcp_window;
mod tcp_zero_window;
mod testbed;
mod xsk;
