//! The embedded BPF programs: one libbpf skeleton per `src/bpf/*.bpf.c`, built by build.rs.
//!
//! Layout of the C side: `parse.h` (bounds-checked header parsing), `stats.h` (counter layouts
//! and names shared with `etran stats`), `stats_maps.h` (the counter maps every program shares),
//! `transport.h` (the entrance's program-array slots), `tcp.h` (TCP state, RX metadata and TX
//! header layouts), `tcp_maps.h` (the TCP object's maps), `tcp_seq.h` (serial arithmetic and
//! window scaling), `csum.h` (Internet checksum: sums, and the checks of received IPv4 and TCP
//! checksums), `tcp_cc.h` (congestion control: the window, DCTCP, the echo of ECN marks),
//! `tcp_tx.h` (a segment's headers written from connection state, shared by egress and the ACK
//! generator), `tcp_ingress.h`, `tcp_egress.h` and `tcp_gen.h` (the three TCP programs' logic),
//! one `*.bpf.c` per program object holding only the hook glue.
#![allow(clippy::all, missing_docs, non_camel_case_types, non_upper_case_globals, dead_code)]

pub mod entrance {
    include!(concat!(env!("OUT_DIR"), "/entrance.skel.rs"));
}

pub mod switch {
    include!(concat!(env!("OUT_DIR"), "/switch.skel.rs"));
}

pub mod xsk_redirect {
    include!(concat!(env!("OUT_DIR"), "/xsk_redirect.skel.rs"));
}

pub mod tcp {
    include!(concat!(env!("OUT_DIR"), "/tcp.skel.rs"));
}
