//! The embedded BPF programs: one libbpf skeleton per `*.bpf.c` under `src/bpf`, built by
//! build.rs, and [`verifier`], which loads any of them with errors that name the program, line
//! and reason when the kernel's verifier refuses it.
//!
//! Layout of the C side, one folder per room:
//! - `entrance.bpf.c`: the one program on the NIC; classifies, counts, and tail-calls the
//!   transport that owns the frame through a program array.
//! - `common/`: what every program shares: `parse.h` (bounds-checked header parsing), `csum.h`
//!   (Internet checksum: sums, and the checks of received IPv4 and TCP checksums), `stats.h`
//!   (counter layouts and names shared with `etran stats`), `stats_maps.h` (the counter maps),
//!   `transport.h` (the entrance's program-array slots).
//! - `compat/app_ports.h`: the compat backend's maps every transport object includes (app
//!   ports, the NIC slot).
//! - `tcp/`: the TCP transport: `tcp.h` (state, RX metadata and TX header layouts), `tcp_maps.h`
//!   (its maps), `tcp_seq.h` (serial arithmetic and window scaling), `tcp_cc.h` (congestion
//!   control: the window, DCTCP, the echo of ECN marks), `tcp_tx.h` (a segment's headers
//!   written from connection state, shared by egress and the ACK generator), `tcp_ingress.h`,
//!   `tcp_egress.h` and `tcp_gen.h` (the three programs' logic), `tcp.bpf.c` (the hook glue).
//! - `homa/`: the Homa transport: `homa_wire.h` (HomaModule's packets, the one definition BPF
//!   and Rust share), `homa.h` (limits, port/peer/RPC state, RX metadata and TX header),
//!   `homa_maps.h`, `homa_sched.h` (the grant scheduler), `homa_ingress.h`, `homa_egress.h` and
//!   `homa_gen.h` (the three programs' logic: gen writes the GRANTs), `homa.bpf.c` (the hook
//!   glue).
//! - `testbed/switch.bpf.c`: the built-in testbed's switch (tc programs).
//! - `xsk/xsk_redirect.bpf.c`: plain AF_XDP (frames on queue q → the socket in slot q) and the
//!   live-frame traffic generator of `etran bench raw`; `xsk/xsk_chain.bpf.c`: the compat
//!   datapath's hops without a transport (`etran bench raw --chain`).
pub mod verifier;

pub use skeletons::*;

/// libbpf-cargo's generated code, linted as generated code.
#[allow(clippy::all, missing_docs, non_camel_case_types, non_upper_case_globals, dead_code)]
mod skeletons {
    pub mod entrance {
        include!(concat!(env!("OUT_DIR"), "/entrance.skel.rs"));
    }

    pub mod switch {
        include!(concat!(env!("OUT_DIR"), "/switch.skel.rs"));
    }

    pub mod xsk_redirect {
        include!(concat!(env!("OUT_DIR"), "/xsk_redirect.skel.rs"));
    }

    pub mod xsk_chain {
        include!(concat!(env!("OUT_DIR"), "/xsk_chain.skel.rs"));
    }

    pub mod tcp {
        include!(concat!(env!("OUT_DIR"), "/tcp.skel.rs"));
    }

    pub mod homa {
        include!(concat!(env!("OUT_DIR"), "/homa.skel.rs"));
    }
}
