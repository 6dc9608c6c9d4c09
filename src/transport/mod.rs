//! Transports: one room per protocol, each holding everything of it on the user-space side
//! (its BPF sits under `src/bpf/<transport>/`). TCP is the first; Homa goes beside it.
pub mod tcp;
