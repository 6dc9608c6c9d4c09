//! Backends: how the datapath meets the kernel it runs on. `compat` is the stock-kernel one.
pub mod compat;
