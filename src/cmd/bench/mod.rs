//! `etran bench`: built-in benchmarks, each run side by side with Linux.
pub mod echo;
mod etran_echo;
mod linux_echo;
pub mod raw;
pub mod rpc;
mod support;
