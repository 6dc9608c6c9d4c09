//! `etran bench`: built-in benchmarks, each run side by side with Linux.
mod arrivals;
pub mod echo;
mod etran_echo;
mod etran_hosts;
mod etran_rpc;
mod etran_tcp_rpc;
mod linux_echo;
mod linux_rpc;
pub mod raw;
pub mod rpc;
mod rpc_msg;
mod rpc_plan;
mod support;
mod workload;
