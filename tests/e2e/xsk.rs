//! Root tests of the AF_XDP layer on a veth pair (va <-> vb) inside a private network namespace
//! (`xt-<pid>-<n>`), created with `ip` and deleted by a guard even when a test panics.
use std::{
    os::fd::AsRawFd,
    process::Command,
    time::{Duration, Instant},
};

use common::netns::VethNs;
use etran::xsk::{
    desc, BindMode, BusyPoll, FrameAlloc, Mode, Socket, SocketConfig, Umem, UmemConfig,
    VirtualSocket, XskProgram,
};

fn small_umem(frames: u32) -> Umem {
    Umem::new(UmemConfig { frame_count: frames, frame_size: 2048, headroom: 0, huge_pages: true })
        .unwrap()
}

fn cfg(rx: u32, tx: u32) -> SocketConfig {
    SocketConfig {
        rx_size: rx,
        tx_size: tx,
        fill_size: 1024,
        comp_size: 1024,
        ..Default::default()
    }
}

/// Frame `seq` of length `len`: broadcast Ethernet header, ethertype 0x88b5, then `seq` and a
/// pattern derived from it.
fn make_frame(seq: u32, len: usize, out: &mut [u8]) {
    out[..6].fill(0xff);
    out[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    out[12..14].copy_from_slice(&[0x88, 0xb5]);
    out[14..18].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in out[18..len].iter_mut().enumerate() {
        *b = (seq as usize * 7 + i) as u8;
    }
}

/// The sequence number of one of our frames, checking every byte; None for other traffic
/// (IPv6 router solicitations and the like, sent when the links come up).
fn check_frame(data: &[u8]) -> Option<u32> {
    if data.len() < 18 || data[12..14] != [0x88, 0xb5] {
        return None;
    }
    let seq = u32::from_be_bytes(data[14..18].try_into().unwrap());
    for (i, b) in data[18..].iter().enumerate() {
        assert_eq!(*b, (seq as usize * 7 + i) as u8, "frame {seq} corrupt at byte {i}");
    }
    Some(seq)
}

fn frame_len(seq: u32) -> u32 {
    60 + (seq * 37) % 1400
}

/// Puts every free frame of `alloc` on `sock`'s fill ring (as many as fit).
fn refill(sock: &mut Socket, alloc: &mut FrameAlloc) {
    let fill = sock.fill().expect("own fill ring");
    let mut r = fill.reserve(alloc.available());
    let n = r.len();
    for i in 0..n {
        r.set(i, alloc.alloc().unwrap());
    }
    r.submit();
}

/// Sends frames `seqs` from `tx` (frames from `alloc`, completions reaped on `comp_owner` or
/// `tx` itself) while `poll_rx` drains the receiver; stops after all are received or `timeout`.
#[allow(clippy::too_many_arguments)]
fn pump(
    tx: &mut Socket,
    tx_alloc: &mut FrameAlloc,
    seqs: std::ops::Range<u32>,
    mut poll_rx: impl FnMut() -> usize,
    timeout: Duration,
) -> usize {
    let umem = tx.umem().clone();
    let mut next = seqs.start;
    let mut received = 0;
    let total = seqs.len();
    let deadline = Instant::now() + timeout;
    while received < total && Instant::now() < deadline {
        if let Some(comp) = tx.comp() {
            let p = comp.peek(256);
            for a in p.iter() {
                assert!(tx_alloc.free(a));
            }
            p.release();
        }
        if next < seqs.end {
            let txr = tx.tx().unwrap();
            let want = (seqs.end - next).min(64).min(tx_alloc.available());
            let mut r = txr.reserve(want);
            for i in 0..r.len() {
                let a = tx_alloc.alloc().unwrap();
                let len = frame_len(next);
                // SAFETY: the frame is ours until submitted.
                make_frame(next, len as usize, unsafe { umem.data_mut(a, len as usize) });
                r.set(i, desc(a, len));
                next += 1;
            }
            r.submit();
        }
        // Copy mode sends at most a budget (32) of descriptors per kick: keep kicking while
        // anything is queued.
        if tx.tx().unwrap().in_flight() > 0 {
            tx.wake_tx().unwrap();
        }
        received += poll_rx();
    }
    received
}

#[test]
fn send_n_frames_and_receive_all_intact_on_the_peer() {
    let Some(_root) = common::root::shared() else { return };
    send_and_receive_all(None);
}

/// The same with a busy-polling receiver and vb's NAPI deferred to it (as `bench raw` runs
/// rxdrop): the receiving thread's kicks run vb's receive processing, and nothing is lost.
#[test]
fn busy_polling_receiver_gets_every_frame() {
    let Some(_root) = common::root::shared() else { return };
    send_and_receive_all(Some(BusyPoll { usecs: 20, budget: 64 }));
}

fn send_and_receive_all(busy_poll: Option<BusyPoll>) {
    let ns = VethNs::new(1);
    if busy_poll.is_some() {
        let defer = Command::new("ip")
            .args(["netns", "exec", &ns.name, "sh", "-c"])
            .arg("echo 2 > /sys/class/net/vb/napi_defer_hard_irqs && echo 200000 > /sys/class/net/vb/gro_flush_timeout")
            .status()
            .expect("run sh");
        assert!(defer.success(), "deferring vb's NAPI");
    }
    ns.run(|| {
        const N: u32 = 20_000;
        let umem_a = small_umem(1024);
        let mut a = Socket::new(&umem_a, "va", 0, &cfg(0, 512)).unwrap();
        assert_eq!(a.mode(), Mode::Copy, "veth is copy mode only");
        let mut alloc_a = FrameAlloc::new(&umem_a);

        let umem_b = small_umem(2048);
        let mut b =
            Socket::new(&umem_b, "vb", 0, &SocketConfig { busy_poll, ..cfg(1024, 0) }).unwrap();
        if let Some(bp) = busy_poll {
            let mut v: libc::c_int = 0;
            let mut len = 4;
            // SAFETY: an int option into a local.
            let r = unsafe {
                libc::getsockopt(
                    b.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_BUSY_POLL,
                    (&mut v as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            assert_eq!((r, v), (0, bp.usecs as libc::c_int));
        }
        let mut alloc_b = FrameAlloc::new(&umem_b);
        refill(&mut b, &mut alloc_b);
        let mut prog = XskProgram::load(0).unwrap();
        prog.attach_redirect(b.ifindex()).unwrap();
        prog.insert(0, &b).unwrap();

        let mut expect = 0u32;
        let got = pump(
            &mut a,
            &mut alloc_a,
            0..N,
            || {
                if busy_poll.is_some() {
                    b.kick_rx().unwrap();
                }
                let before = expect;
                let rx = b.rx().unwrap();
                let p = rx.peek(256);
                let mut addrs = Vec::with_capacity(p.len() as usize);
                for d in p.iter() {
                    // SAFETY: received frames are ours until refilled.
                    let data = unsafe { umem_b.data(d.addr, d.len as usize) };
                    addrs.push(d.addr);
                    let Some(seq) = check_frame(data) else {
                        continue;
                    };
                    assert_eq!(seq, expect, "out of order or lost");
                    assert_eq!(d.len, frame_len(seq));
                    expect += 1;
                }
                let n = (expect - before) as usize;
                p.release();
                for a in addrs {
                    assert!(alloc_b.free(a));
                }
                refill(&mut b, &mut alloc_b);
                n
            },
            Duration::from_secs(10),
        );
        assert_eq!(got, N as usize);
        // Everything sent completes; no frame leaked on either side.
        let deadline = Instant::now() + Duration::from_secs(2);
        while alloc_a.allocated() > 0 && Instant::now() < deadline {
            let comp = a.comp().unwrap();
            let p = comp.peek(256);
            for x in p.iter() {
                assert!(alloc_a.free(x));
            }
            p.release();
        }
        assert_eq!(alloc_a.allocated(), 0);
        assert_eq!(alloc_a.rejected(), 0);
        let sa = a.statistics().unwrap();
        let sb = b.statistics().unwrap();
        assert_eq!(sa.tx_invalid_descs, 0);
        assert_eq!(sb.rx_dropped + sb.rx_ring_full + sb.rx_invalid_descs, 0, "{sb:?}");
        assert!(!a.options_zerocopy().unwrap());
    });
}

#[test]
fn shared_umem_on_the_same_queue_and_across_devices() {
    let Some(_root) = common::root::shared() else { return };
    let ns = VethNs::new(1);
    ns.run(|| {
        let umem = small_umem(1024);
        // Owner on vb queue 0; a TX-only sharer on the same queue uses the owner's fill and
        // completion rings; a sharer on va gets its own.
        let mut owner = Socket::new(&umem, "vb", 0, &cfg(512, 512)).unwrap();
        let mut same = Socket::new_shared(&owner, "vb", 0, &cfg(0, 512)).unwrap();
        assert!(same.is_shared() && same.fill().is_none() && same.comp().is_none());
        let mut other = Socket::new_shared(&owner, "va", 0, &cfg(512, 0)).unwrap();
        assert!(other.fill().is_some() && other.comp().is_some());
        assert_eq!(other.mode(), owner.mode());

        // Frames 0..512 for `other`'s fill ring, 512..1024 for sending through `same`.
        let mut rx_alloc = FrameAlloc::with_range(2048, 0, 512);
        let mut tx_alloc = FrameAlloc::with_range(2048, 512, 512);
        refill(&mut other, &mut rx_alloc);
        let mut prog_a = XskProgram::load(0).unwrap();
        prog_a.attach_redirect(other.ifindex()).unwrap();
        prog_a.insert(0, &other).unwrap();

        const N: u32 = 3000;
        let mut seen = 0u32;
        let mut next = 0u32;
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen < N && Instant::now() < deadline {
            // Completions of `same`'s sends come back on the owner's completion ring.
            {
                let p = owner.comp().unwrap().peek(256);
                for a in p.iter() {
                    assert!(tx_alloc.free(a), "completion {a:#x} not from the TX range");
                }
                p.release();
            }
            if next < N {
                let txr = same.tx().unwrap();
                let mut r = txr.reserve(32.min(tx_alloc.available()).min(N - next));
                for i in 0..r.len() {
                    let a = tx_alloc.alloc().unwrap();
                    let len = frame_len(next);
                    // SAFETY: ours until submitted.
                    make_frame(next, len as usize, unsafe { umem.data_mut(a, len as usize) });
                    r.set(i, desc(a, len));
                    next += 1;
                }
                r.submit();
                same.kick_tx().unwrap();
            }
            let p = other.rx().unwrap().peek(256);
            let mut back = Vec::new();
            for d in p.iter() {
                assert!(d.addr < 512 * 2048, "RX frame outside other's fill range");
                back.push(d.addr);
                // SAFETY: received frames are ours.
                if let Some(seq) = check_frame(unsafe { umem.data(d.addr, d.len as usize) }) {
                    assert_eq!(seq, seen);
                    seen += 1;
                }
            }
            p.release();
            for a in back {
                rx_alloc.free(a);
            }
            refill(&mut other, &mut rx_alloc);
        }
        assert_eq!(seen, N);
        assert_eq!(owner.statistics().unwrap().tx_invalid_descs, 0);
        drop(prog_a);
        // Clean close in any order: the UMEM outlives its first socket.
        drop(owner);
        drop(same);
        drop(other);
    });
}

#[test]
fn need_wakeup_tx_waits_for_the_kick_and_statistics_count() {
    let Some(_root) = common::root::shared() else { return };
    let ns = VethNs::new(1);
    ns.run(|| {
        let umem = small_umem(256);
        let mut a = Socket::new(&umem, "va", 0, &cfg(0, 64)).unwrap();
        assert!(a.uses_need_wakeup());
        let mut b = Socket::new(&small_umem(256), "vb", 0, &cfg(32, 0)).unwrap();
        let mut b_alloc = FrameAlloc::new(b.umem());
        // Fill B with 48 frames: 32 fit in its RX ring, the rest of the 100 find it full.
        {
            let fill = b.fill().unwrap();
            let mut r = fill.reserve(48);
            for i in 0..48 {
                r.set(i, b_alloc.alloc().unwrap());
            }
            r.submit();
        }
        let mut prog = XskProgram::load(0).unwrap();
        prog.attach_redirect(b.ifindex()).unwrap();
        prog.insert(0, &b).unwrap();

        let mut alloc = FrameAlloc::new(&umem);
        let send = |a: &mut Socket, alloc: &mut FrameAlloc, n: u32, base: u32| {
            let mut r = a.tx().unwrap().reserve(n);
            assert_eq!(r.len(), n);
            for i in 0..n {
                let f = alloc.alloc().unwrap();
                // SAFETY: ours until submitted.
                make_frame(base + i, 64, unsafe { umem.data_mut(f, 64) });
                r.set(i, desc(f, 64));
            }
            r.submit();
        };
        send(&mut a, &mut alloc, 50, 0);
        // Copy mode sends only from sendto: without the kick nothing moves.
        assert!(a.tx_needs_wakeup());
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(a.comp().unwrap().available(1), 0);
        assert_eq!(a.tx().unwrap().in_flight(), 50);
        let mut done = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while done < 50 && Instant::now() < deadline {
            assert!(a.wake_tx().unwrap());
            done += a.comp().unwrap().peek(64).len();
        }
        assert_eq!(a.comp().unwrap().available(64), 50);
        // 50 more: B's RX ring (32) is full after the first batch, so these are dropped.
        send(&mut a, &mut alloc, 50, 50);
        let deadline = Instant::now() + Duration::from_secs(5);
        while a.tx().unwrap().in_flight() > 0 && Instant::now() < deadline {
            a.kick_tx().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(b.rx().unwrap().available(64), 32);
        let s = b.statistics().unwrap();
        assert!(s.rx_ring_full >= 100 - 32 - 16, "{s:?}");
        // Release 32, leaving no frame on the fill ring: the next frames find it empty.
        b.rx().unwrap().peek(64).release();
        let p = a.comp().unwrap().peek(128);
        let back: Vec<u64> = p.iter().collect();
        p.release();
        for f in back {
            assert!(alloc.free(f));
        }
        send(&mut a, &mut alloc, 40, 100);
        a.kick_tx().unwrap();
        a.kick_tx().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let s2 = b.statistics().unwrap();
        assert!(
            s2.rx_fill_ring_empty_descs + s2.rx_dropped > s.rx_fill_ring_empty_descs + s.rx_dropped,
            "{s2:?}"
        );
        // A descriptor pointing outside the UMEM is refused and counted.
        let mut r = a.tx().unwrap().reserve(1);
        r.set(0, desc(umem.len() as u64 + 4096, 64));
        r.submit();
        a.kick_tx().unwrap();
        assert!(a.statistics().unwrap().tx_invalid_descs >= 1);
    });
}

#[test]
fn virtual_socket_serves_several_queues_fairly() {
    let Some(_root) = common::root::shared() else { return };
    let ns = VethNs::new(2);
    ns.run(|| {
        // Receivers: vb queues 0 and 1 sharing one UMEM, each with its own fill ring.
        let umem = small_umem(2048);
        let r0 = Socket::new(&umem, "vb", 0, &cfg(512, 0)).unwrap();
        let r1 = Socket::new_shared(&r0, "vb", 1, &cfg(512, 0)).unwrap();
        let mut allocs =
            [FrameAlloc::with_range(2048, 0, 1024), FrameAlloc::with_range(2048, 1024, 1024)];
        let mut vs = VirtualSocket::new(vec![r0, r1], 4096);
        for (s, al) in vs.sockets_mut().iter_mut().zip(allocs.iter_mut()) {
            refill(s, al);
        }
        let mut prog = XskProgram::load(0).unwrap();
        prog.attach_redirect(vs.sockets()[0].ifindex()).unwrap();
        for (q, s) in vs.sockets().iter().enumerate() {
            prog.insert(q as u32, s).unwrap();
        }
        // Senders: va queues 0 and 1 (a frame sent on queue q arrives on vb queue q).
        let tumem = small_umem(1024);
        let mut t0 = Socket::new(&tumem, "va", 0, &cfg(0, 256)).unwrap();
        let mut t1 = Socket::new_shared(&t0, "va", 1, &cfg(0, 256)).unwrap();
        let mut talloc =
            [FrameAlloc::with_range(2048, 0, 512), FrameAlloc::with_range(2048, 512, 512)];
        const N: u32 = 2000;
        let mut sent = [0u32; 2];
        let mut got = [0u32; 2];
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.iter().sum::<u32>() < 2 * N && Instant::now() < deadline {
            for (q, t) in [&mut t0, &mut t1].into_iter().enumerate() {
                let p = t.comp().unwrap().peek(256);
                for a in p.iter() {
                    assert!(talloc[q].free(a));
                }
                p.release();
                let want = 32.min(N - sent[q]).min(talloc[q].available());
                let mut r = t.tx().unwrap().reserve(want);
                for i in 0..r.len() {
                    let a = talloc[q].alloc().unwrap();
                    let seq = q as u32 * 1_000_000 + sent[q];
                    // SAFETY: ours until submitted.
                    make_frame(seq, 100, unsafe { tumem.data_mut(a, 100) });
                    r.set(i, desc(a, 100));
                    sent[q] += 1;
                }
                r.submit();
                t.kick_tx().unwrap();
            }
            let mut back: Vec<(usize, u64)> = Vec::new();
            vs.recv_round(|q, d| {
                back.push((q, d.addr));
                // SAFETY: received frames are ours.
                if let Some(seq) = check_frame(unsafe { umem.data(d.addr, d.len as usize) }) {
                    assert_eq!(seq, q as u32 * 1_000_000 + got[q], "queue {q} order");
                    got[q] += 1;
                }
            });
            for (q, a) in back {
                assert!(allocs[q].free(a), "frame {a:#x} came back on the wrong queue");
            }
            for (s, al) in vs.sockets_mut().iter_mut().zip(allocs.iter_mut()) {
                refill(s, al);
            }
        }
        assert_eq!(got, [N, N]);
    });
}

#[test]
fn mio_reports_readable() {
    let Some(_root) = common::root::shared() else { return };
    let ns = VethNs::new(1);
    ns.run(|| {
        // With 128 bytes of UMEM headroom, received data starts 256 (the kernel's own
        // headroom) + 128 bytes into its chunk.
        let umem = Umem::new(UmemConfig { headroom: 128, ..UmemConfig::default() }).unwrap();
        let mut b = Socket::new(&umem, "vb", 0, &cfg(64, 0)).unwrap();
        let mut alloc = FrameAlloc::new(&umem);
        refill(&mut b, &mut alloc);
        let mut prog = XskProgram::load(0).unwrap();
        prog.attach_redirect(b.ifindex()).unwrap();
        prog.insert(0, &b).unwrap();
        let mut poll = mio::Poll::new().unwrap();
        poll.registry().register(&mut b, mio::Token(7), mio::Interest::READABLE).unwrap();
        let tumem = small_umem(64);
        let mut a = Socket::new(&tumem, "va", 0, &cfg(0, 64)).unwrap();
        // SAFETY: frame 0 is ours.
        make_frame(0, 64, unsafe { tumem.data_mut(0, 64) });
        assert_eq!(a.tx().unwrap().produce_from(&[desc(0, 64)]), 1);
        a.wake_tx().unwrap();
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_secs(5))).unwrap();
        let ev = events.iter().next().expect("an event within 5 s");
        assert_eq!(ev.token(), mio::Token(7));
        assert!(ev.is_readable());
        let d = b.rx().unwrap().peek(1).get(0);
        assert_eq!(d.addr % 2048, 256 + 128, "RX data offset in its chunk");
        assert_eq!(d.len, 64);
        poll.registry().deregister(&mut b).unwrap();
    });
}

#[test]
fn errors_are_clear() {
    let Some(_root) = common::root::shared() else { return };
    let ns = VethNs::new(1);
    ns.run(|| {
        let umem = small_umem(64);
        let err = |r: anyhow::Result<Socket>| format!("{:#}", r.expect_err("an error"));
        let e = err(Socket::new(&umem, "va", 0, &cfg(1000, 64)));
        assert!(e.contains("RX ring size 1000 is not a power of two"), "{e}");
        let mut c = cfg(64, 64);
        c.fill_size = 3;
        assert!(err(Socket::new(&umem, "va", 0, &c)).contains("fill ring size 3"));
        let e = err(Socket::new(&umem, "nosuch0", 0, &cfg(64, 64)));
        assert!(e.contains("no interface named"), "{e}");
        let e = err(Socket::new(&umem, "va", 5, &cfg(64, 64)));
        assert!(e.contains("no queue 5"), "{e}");
        let e = err(Socket::new(&umem, "va", 0, &cfg(0, 0)));
        assert!(e.contains("needs an RX ring"), "{e}");
        let mut zc = cfg(64, 64);
        zc.bind = BindMode::ZeroCopy;
        let e = err(Socket::new(&umem, "va", 0, &zc));
        assert!(e.contains("zero-copy"), "{e}");
        // The failed attempts left nothing bound: a real bind now works, and a second,
        // non-shared socket on the same queue is refused with a hint.
        let first = Socket::new(&umem, "va", 0, &cfg(64, 64)).unwrap();
        let e = err(Socket::new(&small_umem(64), "va", 0, &cfg(64, 64)));
        assert!(e.contains("already owns that queue"), "{e}");
        drop(first);
        // Closing released the queue: a fresh socket binds at once.
        drop(Socket::new(&small_umem(64), "va", 0, &cfg(64, 64)).unwrap());
        // Without CAP_NET_RAW (dropped on this thread only) creation fails clearly.
        let e = std::thread::scope(|s| {
            s.spawn(|| {
                drop_all_capabilities();
                err(Socket::new(&umem, "va", 0, &cfg(64, 64)))
            })
            .join()
            .unwrap()
        });
        assert!(e.contains("CAP_NET_RAW"), "{e}");
    });
}

/// Clears the calling thread's effective capabilities (capabilities are per thread).
fn drop_all_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header { version: 0x2008_0522, pid: 0 };
    let mut d = [Data::default(); 2];
    // SAFETY: valid header and two data structs (version 3).
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()), 0);
        d[0].effective = 0;
        d[1].effective = 0;
        assert_eq!(libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()), 0);
    }
}

/// The rows `bench raw --mode` `mode` has on the testbed: rxdrop's generator rows need
/// `BPF_PROG_RUN` with live frames, which some kernels refuse (this machine's 6.18.44), and
/// then only its AF_XDP sender's row runs.
fn raw_rows(mode: &str) -> usize {
    match mode {
        "rxdrop" if etran::loader::kernel::Feature::LiveFrames.probe() => 3,
        "rxdrop" => 1,
        _ => 2,
    }
}

/// `etran bench raw` end to end on its private testbed (direct by default, `--switch` with
/// the switch namespace), briefly: every path moves frames, the JSON summary is complete and
/// says which topology it ran on.
#[test]
fn bench_raw_smoke() {
    let Some(_root) = common::root::shared() else { return };
    // Frames moved: per-frame costs exist only when something was sent and received. The
    // rates cover a 300 ms window that a loaded machine may starve (an emulated guest did, a
    // receiver's cost `null`): a run in which a row moved nothing runs again for longer.
    let moved = |r: &serde_json::Value, mode: &str| {
        let cost = &r["cpu_ns_per_frame"];
        [&cost["sender"], &cost["receiver"]].iter().all(|c| c.as_f64().is_some_and(|c| c > 0.0))
            && (mode != "echo" || r["rtt_p99_us"].as_f64().is_some_and(|t| t > 0.0))
    };
    for (mode, switch) in [("rxdrop", false), ("echo", false), ("txonly", true)] {
        for duration in ["300ms", "1s", "3s"] {
            let mut args = vec!["-j", "bench", "raw", "--mode", mode, "--duration", duration];
            if switch {
                args.push("--switch");
            }
            let out =
                Command::new(common::cli::etran_bin()).args(&args).output().expect("running etran");
            assert!(out.status.success(), "{mode}: {}", String::from_utf8_lossy(&out.stdout));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
            assert_eq!(v["topology"], if switch { "switch" } else { "direct" }, "{v}");
            let rows = v["rows"].as_array().expect("rows");
            assert_eq!(rows.len(), raw_rows(mode), "{v}");
            if raw_rows(mode) == 1 {
                let notes = v["notes"].as_array().expect("notes");
                assert!(notes.iter().any(|n| n.as_str().unwrap().contains("live frames")), "{v}");
            }
            let still = rows.iter().find(|r| !moved(r, mode));
            match still {
                None => break,
                Some(r) if duration == "3s" => panic!("{mode}: nothing moved in 3 s: {r}"),
                Some(r) => eprintln!("{mode}: nothing moved in {duration}, again for longer: {r}"),
            }
        }
    }
    let out = Command::new(common::cli::etran_bin())
        .args(["bench", "raw", "--iface", "nosuch0", "--duration", "100ms"])
        .output()
        .expect("running etran");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no interface named"), "{err}");
}

/// `--chain`: frames through eTran's compat chain (app port, egress, NIC, switch, NIC, ingress,
/// the peer's app port), one-way at 64 B and echo at full size: both ends count frames, the
/// summary says chain and switch; rxdrop is refused in one line.
#[test]
fn bench_raw_chain() {
    let Some(_root) = common::root::shared() else { return };
    for (mode, size) in [("txonly", "64"), ("echo", "1514")] {
        let out = Command::new(common::cli::etran_bin())
            .args(["-j", "bench", "raw", "--chain", "--switch", "--mode", mode, "--size", size])
            .args(["--duration", "300ms"])
            .output()
            .expect("running etran");
        assert!(out.status.success(), "{mode}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
        assert_eq!((&v["chain"], &v["topology"]), (&true.into(), &"switch".into()), "{v}");
        let rows = v["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 1, "{v}");
        let r = &rows[0];
        let path = if mode == "echo" { "chain echo" } else { "chain one-way" };
        assert_eq!((&r["path"], &r["topology"]), (&path.into(), &"switch".into()), "{r}");
        assert!(r["tx_pps"].as_f64().unwrap() > 0.0 && r["rx_pps"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["gbit_s"].as_f64().unwrap() > 0.0, "{r}");
        let cost = &r["cpu_ns_per_frame"];
        assert!(cost["sender"].as_f64().unwrap() > 0.0, "{mode}: {r}");
        assert!(cost["receiver"].as_f64().unwrap() > 0.0, "{mode}: {r}");
        assert!(r["receiver_stats"].is_object(), "{r}");
        if mode == "echo" {
            assert!(r["rtt_p99_us"].as_f64().unwrap() > 0.0, "{r}");
        }
    }
    let out = Command::new(common::cli::etran_bin())
        .args(["bench", "raw", "--chain", "--mode", "rxdrop", "--duration", "100ms"])
        .output()
        .expect("running etran");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--chain measures") && err.lines().count() == 1, "{err}");
}

/// `--queues 2`: one lane per queue and CPU; every lane moves frames in every mode, and a lane
/// count above the CPU count is refused with one line.
#[test]
fn bench_raw_lanes() {
    let Some(_root) = common::root::shared() else { return };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus >= 2 {
        for mode in ["rxdrop", "echo", "txonly"] {
            let args =
                ["-j", "bench", "raw", "--mode", mode, "--queues", "2", "--duration", "300ms"];
            let out =
                Command::new(common::cli::etran_bin()).args(args).output().expect("running etran");
            assert!(out.status.success(), "{mode}: {}", String::from_utf8_lossy(&out.stderr));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
            assert_eq!(v["queues"], 2, "{v}");
            for r in v["rows"].as_array().expect("rows") {
                let lanes = r["lane_rx"].as_array().expect("per-lane counts");
                assert_eq!(lanes.len(), 2, "{mode}: {r}");
                assert!(lanes.iter().all(|n| n.as_u64().unwrap() > 0), "{mode}: {r}");
                assert!(r["cpu_ns_per_frame"]["lanes"].as_f64().unwrap() > 0.0, "{mode}: {r}");
            }
        }
    }
    // One-sided: a socket per queue of the interface, and no more queues than it has.
    for (queues, ok) in [(1, false), (2, true)] {
        let ns = VethNs::new(queues);
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name, common::cli::etran_bin(), "-j", "bench", "raw"])
            .args(["--iface", "va", "--queues", "2", "--duration", "300ms"])
            .output()
            .expect("running etran");
        if !ok {
            // With -j the error comes as JSON on stdout.
            let err = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success() && err.contains("va has only 1 RX queue"), "{err}");
            continue;
        }
        if cpus < 2 {
            continue;
        }
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
        let r = &v["rows"][0];
        assert!(r["tx_pps"].as_f64().unwrap() > 0.0, "{v}");
        assert!(r["cpu_ns_per_frame"]["lanes"].as_f64().unwrap() > 0.0, "{v}");
    }
    let too_many = (cpus + 1).to_string();
    let out = Command::new(common::cli::etran_bin())
        .args(["bench", "raw", "--queues", &too_many, "--duration", "100ms"])
        .output()
        .expect("running etran");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lane per queue") && err.lines().count() == 1, "{err}");
}
