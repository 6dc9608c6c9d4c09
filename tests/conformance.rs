//! Conformance of the rules both sides carry: the BPF helpers (tcp_seq.h's serial comparisons,
//! window scale, flight and una_pos; tcp_tx.h's window field), run with BPF_PROG_TEST_RUN
//! through a test-only program built from the same headers (tests/bpf/conformance.bpf.c), and
//! their Rust halves (`etran::transport::tcp::seq`, `etran::transport::tcp::window::no_shrink_field`) give equal
//! results on the same inputs: a table of edge cases, then random ones. Needs root (CAP_BPF).
mod common;

use std::mem::{size_of, MaybeUninit};

use etran::{
    bpf::tcp::types::{tcp_conn, tcp_conn_fin},
    transport::tcp::{seq, window},
};
use libbpf_rs::{
    skel::{OpenSkel, SkelBuilder},
    ProgramInput,
};

use common::{
    fixture::{fuzz_seed, Rng},
    tcp::as_bytes,
};

mod bpf {
    #![allow(clippy::all, missing_docs, non_camel_case_types, non_upper_case_globals, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/conformance.skel.rs"));
}
use bpf::{
    types::{conformance_in, conformance_op, conformance_out},
    ConformanceSkel, ConformanceSkelBuilder,
};

const XDP_PASS: u32 = 2;

/// The test-only program, loaded.
fn load(storage: &mut MaybeUninit<libbpf_rs::OpenObject>) -> ConformanceSkel<'_> {
    let open = ConformanceSkelBuilder::default().open(storage).expect("open conformance.bpf.o");
    open.load().expect("the verifier accepts the conformance program")
}

/// Runs operation `op` of the BPF side on (a, b, conn).
fn run(
    skel: &ConformanceSkel<'_>,
    op: conformance_op,
    a: u32,
    b: u32,
    c: &tcp_conn,
) -> conformance_out {
    // The program's tcp_conn is tcp.h's, as etran's skeleton sees it.
    assert_eq!(size_of::<conformance_in>(), 16 + size_of::<tcp_conn>());
    let mut frame = Vec::with_capacity(size_of::<conformance_in>());
    for word in [op.0, a, b, 0] {
        frame.extend_from_slice(&word.to_ne_bytes());
    }
    frame.extend_from_slice(as_bytes(c));
    let mut out = vec![0u8; frame.len()];
    let input =
        ProgramInput { data_in: Some(&frame), data_out: Some(&mut out), ..Default::default() };
    let ret = skel.progs.conformance.test_run(input).expect("test run");
    assert_eq!(ret.return_value, XDP_PASS, "op {op:?}");
    // SAFETY: the program wrote a conformance_out at the head of the frame.
    unsafe { std::ptr::read_unaligned(out.as_ptr().cast()) }
}

/// Serial comparisons and the window scale on (a, b): BPF and Rust agree.
fn check_pair(skel: &ConformanceSkel<'_>, a: u32, b: u32) {
    let none = tcp_conn::default();
    let got = run(skel, conformance_op::CONFORMANCE_BEFORE, a, b, &none).value;
    assert_eq!(got != 0, seq::before(a, b), "before({a:#x}, {b:#x})");
    let got = run(skel, conformance_op::CONFORMANCE_AFTER, a, b, &none).value;
    assert_eq!(got != 0, seq::after(a, b), "after({a:#x}, {b:#x})");
}

/// Flight, una_pos and the window field of `c`: BPF and Rust agree.
fn check_conn(skel: &ConformanceSkel<'_>, c: &tcp_conn) {
    let flight = run(skel, conformance_op::CONFORMANCE_FLIGHT, 0, 0, c).value;
    assert_eq!(flight, seq::flight_bytes(c), "flight_bytes of {c:?}");
    let una = run(skel, conformance_op::CONFORMANCE_UNA_POS, 0, 0, c).value;
    assert_eq!(una, seq::una_pos(c), "una_pos of {c:?}");
    let field = run(skel, conformance_op::CONFORMANCE_WINDOW, 0, 0, c).value;
    assert_eq!(field, u32::from(window::no_shrink_field(c)), "window field of {c:?}");
}

const EDGES: [u32; 9] =
    [0, 1, 2, 0x7fff_ffff, 0x8000_0000, 0x8000_0001, 0xffff_fffe, 0xffff_ffff, 1000];

fn window_conn(
    rcv_nxt: u32,
    rcv_wnd: u32,
    rcv_reserve: u32,
    adv_ahead: u32,
    shift: u8,
) -> tcp_conn {
    tcp_conn {
        rcv_nxt,
        rcv_wnd,
        rcv_reserve,
        rcv_adv: rcv_nxt.wrapping_add(adv_ahead),
        rcv_wscale: shift,
        ..Default::default()
    }
}

fn flight_conn(snd_una: u32, sent: u32, tx_pos: u32, fin: u8) -> tcp_conn {
    tcp_conn { snd_una, snd_nxt: snd_una.wrapping_add(sent), tx_pos, fin, ..Default::default() }
}

#[test]
fn bpf_and_rust_agree_on_the_table() {
    let mut storage = MaybeUninit::uninit();
    let skel = load(&mut storage);
    for a in EDGES {
        for b in EDGES {
            check_pair(&skel, a, b);
        }
    }
    for shift in 0..=u8::MAX {
        let got =
            run(&skel, conformance_op::CONFORMANCE_WSCALE, shift.into(), 0, &tcp_conn::default());
        assert_eq!(got.value, u32::from(seq::wscale(shift)), "wscale({shift})");
    }
    let fin_sent = tcp_conn_fin::TCP_CONN_FIN_SENT.0 as u8;
    for (una, sent, tx_pos, fin) in [
        (100, 0, 100, 0),
        (100, 0, 100, fin_sent), // FIN acknowledged: nothing in flight
        (100, 1, 100, fin_sent), // only the FIN in flight
        (100, 51, 150, fin_sent),
        (u32::MAX - 10, 20, 5, 0), // across wrap-around
        (u32::MAX, 1, 0, fin_sent),
    ] {
        check_conn(&skel, &flight_conn(una, sent, tx_pos, fin));
    }
    for shift in [0, 1, 7, 14, 15, 255] {
        for (wnd, reserve, ahead) in [
            (1 << 20, 65536, 983_040),       // as the daemon starts a connection
            (1 << 20, 65536, 983_040 + 100), // the edge ahead of what the buffer would show
            (1 << 20, 65536, 0),
            (0, 0, 0),
            (1000, 4095, 0),  // reserve above the window
            (1000, 0, 5000),  // edge beyond the room: shrinks
            (u32::MAX, 0, 0), // field capped at 0xffff
            (u32::MAX, 0, u32::MAX / 2),
        ] {
            check_conn(&skel, &window_conn(0xffff_ff00, wnd, reserve, ahead, shift));
        }
    }
}

#[test]
fn bpf_and_rust_agree_on_random_inputs() {
    let mut storage = MaybeUninit::uninit();
    let skel = load(&mut storage);
    let mut rng = Rng(fuzz_seed("conformance", 0x5eed_c0f0_4a11_d00d));
    // A value near an edge, or anywhere.
    let near = |rng: &mut Rng| -> u32 {
        let base = EDGES[rng.below(EDGES.len())];
        match rng.below(3) {
            0 => rng.next() as u32,
            _ => base.wrapping_add((rng.below(2001) as u32).wrapping_sub(1000)),
        }
    };
    for _ in 0..4000 {
        let (a, b) = (near(&mut rng), near(&mut rng));
        check_pair(&skel, a, b);
        let fin = rng.below(4) as u8;
        let sent = if rng.below(2) == 0 { rng.below(1 << 20) as u32 } else { near(&mut rng) };
        check_conn(&skel, &flight_conn(near(&mut rng), sent, near(&mut rng), fin));
        let shift = rng.below(17) as u8;
        let wnd = (rng.next() as u32) >> rng.below(32);
        let reserve = (rng.next() as u32) >> rng.below(32);
        let ahead = if rng.below(2) == 0 {
            wnd.wrapping_add(rng.below(4096) as u32)
        } else {
            near(&mut rng)
        };
        check_conn(&skel, &window_conn(near(&mut rng), wnd, reserve, ahead, shift));
    }
}
