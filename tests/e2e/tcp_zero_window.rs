//! Zero windows end to end against Linux TCP (`etran up va` and `etran daemon` in namespace -a,
//! a Linux receiver in -b): an app sends into a Linux receiver that stops reading until its
//! window closes, then reads again, while the network loses the window update and everything
//! else Linux sends until a zero-window probe reaches it (tests/bpf/window_update_loss.bpf.c,
//! tc on `vb`). Only the persist timer's probe, which Linux answers with its window, lets the
//! transfer go on; it completes byte-exact. Needs root.
use std::{
    io::{ErrorKind, Read},
    mem::MaybeUninit,
    net::{SocketAddrV4, TcpListener},
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use common::{
    daemon::EtranApp as Etran,
    netns::{in_netns, set_int_opt},
    tcp::{add_neighbour_of_b, from_bytes, pattern},
};
use libbpf_rs::{
    skel::{OpenSkel, SkelBuilder},
    MapCore, MapFlags, OpenObject, TcHookBuilder, TC_EGRESS, TC_INGRESS,
};

mod bpf {
    #![allow(clippy::all, missing_docs, non_camel_case_types, non_upper_case_globals, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/window_update_loss.skel.rs"));
}
use bpf::{
    types::{wu_state, wu_status},
    WindowUpdateLossSkel, WindowUpdateLossSkelBuilder,
};

const PORT: u16 = 7410;

/// Loads the loss program for Linux's `port` and attaches it with tc to `vb` in namespace `ns`.
fn lose_window_update<'a>(
    storage: &'a mut MaybeUninit<OpenObject>,
    ns: &str,
    port: u16,
) -> WindowUpdateLossSkel<'a> {
    let mut open = WindowUpdateLossSkelBuilder::default().open(storage).expect("open");
    open.maps.rodata_data.as_deref_mut().expect("a .rodata").wu_port = port;
    let skel = open.load().expect("the verifier accepts the loss program");
    let progs = [
        (skel.progs.wu_egress.as_fd().as_raw_fd(), TC_EGRESS),
        (skel.progs.wu_ingress.as_fd().as_raw_fd(), TC_INGRESS),
    ];
    in_netns(ns, || {
        let vb = etran::netlink::Netlink::open().unwrap().index("vb").expect("vb");
        for (i, (fd, point)) in progs.into_iter().enumerate() {
            // SAFETY: the skeleton, which owns the descriptor, outlives this call.
            let prog = unsafe { BorrowedFd::borrow_raw(fd) };
            let mut hook = TcHookBuilder::new(prog)
                .ifindex(vb as i32)
                .replace(true)
                .handle(1)
                .priority(1)
                .hook(point);
            if i == 0 {
                hook.create().expect("clsact on vb"); // one qdisc for both hooks
            }
            hook.attach().expect("attach the loss program");
        }
    });
    skel
}

fn status(skel: &WindowUpdateLossSkel<'_>) -> wu_status {
    let v = skel.maps.wu_status.lookup(&0u32.to_ne_bytes(), MapFlags::ANY).unwrap();
    from_bytes(&v.expect("one entry"))
}

#[test]
fn a_transfer_into_a_closed_window_survives_a_lost_window_update() {
    let Some(_root) = common::root::shared() else { return };
    let mut e = Etran::new("etran-zwnd");
    add_neighbour_of_b(&e.net);
    let peer: SocketAddrV4 = format!("10.77.0.2:{PORT}").parse().unwrap();
    let b = e.net.b.clone();
    let mut storage = MaybeUninit::uninit();
    let skel = lose_window_update(&mut storage, &b, PORT);
    // A small receive buffer (the accepted socket inherits it): the window closes soon.
    let listener = in_netns(&b, || TcpListener::bind(peer).expect("listen"));
    set_int_opt(listener.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 16 << 10);
    let data = pattern(3, 1 << 20);
    let closed = AtomicBool::new(false);
    let id = e.app.connect_blocking(peer).expect("connect");
    let (mut c, _) = listener.accept().unwrap();
    // A stalled transfer fails the test instead of blocking the reader for good.
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::thread::scope(|s| {
        // Reads nothing until its window is closed, then everything.
        let reader = s.spawn(|| {
            let give_up = Instant::now() + Duration::from_secs(30);
            while !closed.load(Ordering::Acquire) && Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut got = Vec::with_capacity(data.len());
            c.read_to_end(&mut got).unwrap_or_else(|e| panic!("stalled at {}: {e}", got.len()));
            got
        });
        let mut off = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reader.is_finished() {
            e.app.wait(Some(Duration::from_millis(5))).unwrap();
            if off < data.len() {
                match e.app.send_more(id, &data[off..]) {
                    Ok(n) => off += n,
                    Err(err) if err.kind() == ErrorKind::WouldBlock => {}
                    Err(err) => panic!("send: {err}"),
                }
                if off == data.len() {
                    e.app.close(id).unwrap();
                }
            }
            e.app.flush().unwrap();
            let st = status(&skel);
            if st.state != wu_state::WU_OPEN.0 {
                closed.store(true, Ordering::Release);
            }
            assert!(Instant::now() < deadline, "stalled at {off} bytes sent: {st:?}");
        }
        assert!(reader.join().unwrap() == data, "every byte, exactly");
        let st = status(&skel);
        eprintln!("{st:?}; app: {:?}", e.app.stream(id).map(|s| s.stats()));
        assert_eq!(st.state, wu_state::WU_PROBED.0, "the update was lost, then a probe came");
        assert!(st.lost >= 1 && st.probes >= 1, "{st:?}");
        assert!(e.app.stream(id).unwrap().stats().window_probes >= 1, "the app probed");
    });
}
