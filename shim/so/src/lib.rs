//! The POSIX shim (`shim/`) as bytes: what `etran run` writes out and preloads. Empty in the
//! shim's own copy of etran (see build.rs).
pub static SHIM_SO: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libetran_shim.so"));
