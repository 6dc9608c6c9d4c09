//! Window rules and small sends, end to end against Linux TCP (`etran up va` and `etran daemon`
//! in namespace -a, Linux sockets in -b):
//! - a 10 MB download from Linux: few pure window updates (one per half buffer read, not one per
//!   64 KiB), and the edge our segments advertise never moves back, as the sender sees them;
//!   the same without window scaling (64 KiB windows) never stalls;
//! - 6 connections × 3 MB echo against a Linux server that closes as soon as it has echoed
//!   everything: every byte arrives, nothing is reset (no window update after the peer's FIN,
//!   and bytes the kernel acknowledged are never thrown away);
//! - an idle connection answers a Linux peer's keepalive probes (which are also its zero-window
//!   probes) and lives on;
//! - consecutive small sends in one pass leave as one segment, unless the connection is
//!   nodelay;
//! - an app that stops polling while 16 Linux clients fill their windows loses nothing: what its
//!   port cannot take is dropped before it is acknowledged (`port_full`) and resent;
//! - an app told it is paced counts what each connection handed the kernel until it completes
//!   (TCP small queues): a bulk send waits for its room and every frame comes back. Needs root.
use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddrV4, TcpListener, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use common::{
    daemon::EtranApp as Etran,
    netns::{in_netns, net_stat, set_int_opt, RawSocket},
    peer::etran_accept,
    tcp::{add_neighbour_of_b, pattern},
};
use etran::{
    app::ConnId,
    transport::tcp::segment::{Segment, ACK, RST, SYN},
};

const PORT: u16 = 7400;

/// Linux's count of RSTs it sent, in the calling thread's namespace.
fn linux_out_rsts() -> u64 {
    net_stat("Tcp:OutRsts")
}

/// Our segments as the sender sees them: (ack, right edge), captured on `vb`.
fn capture(raw: &RawSocket, from: SocketAddrV4, stop: &AtomicBool, wscale: u8) -> Vec<(u32, u32)> {
    let mut seen = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let Some(f) = raw.recv(20) else { continue };
        let Ok(s) = Segment::parse(&f) else { continue };
        // SYN-ACK windows are not scaled.
        if s.src == from && s.flags & (ACK | SYN) == ACK {
            assert_eq!(s.flags & RST, 0, "etran reset the connection");
            seen.push((s.ack, s.ack.wrapping_add(u32::from(s.window) << wscale)));
        }
    }
    seen
}

/// A download of `total` bytes from a Linux client to an app; returns the pure window updates
/// the app sent and our segments as the sender saw them (ack, edge under `wscale`).
fn download(name: &str, total: usize, wscale: u8) -> (u64, Vec<(u32, u32)>) {
    let mut e = Etran::new(name);
    let listener = e.app.listen(PORT).unwrap();
    if wscale == 0 {
        common::netns::sh(&format!(
            "ip netns exec {} sysctl -qw net.ipv4.tcp_window_scaling=0",
            e.net.b
        ));
    }
    let data = pattern(9, total);
    let b = e.net.b.clone();
    let stop = AtomicBool::new(false);
    let us = SocketAddrV4::new("10.77.0.1".parse().unwrap(), PORT);
    let raw = in_netns(&b, || RawSocket::open("vb"));
    std::thread::scope(|s| {
        let cap = s.spawn(|| capture(&raw, us, &stop, wscale));
        let linux = s.spawn(|| {
            let mut c = in_netns(&b, || TcpStream::connect(us).expect("connect"));
            c.write_all(&data).unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let id = etran_accept(&mut e.app, &listener, Duration::from_secs(20));
        let mut got = Vec::with_capacity(total);
        let mut buf = vec![0u8; 64 << 10];
        // Each pass reads what is there, 64 KiB at a time.
        'read: loop {
            e.app.poll().unwrap();
            loop {
                match e.app.recv(id, &mut buf) {
                    Ok(0) => break 'read,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                    Err(err) => panic!("recv: {err}"),
                }
            }
            assert!(Instant::now() < deadline, "stalled at {} bytes", got.len());
        }
        linux.join().unwrap();
        assert!(got == data, "byte-exact");
        stop.store(true, Ordering::Release);
        (e.app.stats().window_updates, cap.join().unwrap())
    })
}

/// A segment with an older ACK is a reordered one, which the sender ignores (RFC 9293
/// 3.10.7.4); every other one must not pull the edge back.
fn assert_no_shrink(seen: &[(u32, u32)]) {
    let Some(&(mut ack, mut edge)) = seen.first() else { return };
    for &(a, ed) in &seen[1..] {
        if (a.wrapping_sub(ack) as i32) < 0 {
            continue;
        }
        assert!((ed.wrapping_sub(edge) as i32) >= 0, "the edge moved back from {edge} to {ed}");
        (ack, edge) = (a, ed);
    }
}

#[test]
fn a_linux_download_gets_few_window_updates_and_no_window_shrink() {
    let Some(_root) = common::root::shared() else { return };
    // Our SYN-ACK announces window scale 7 (handshake::Config) to a Linux client.
    let (updates, seen) = download("etran-wnd-dl", 10 << 20, 7);
    eprintln!("10 MB from Linux: {updates} pure window updates, {} segments seen", seen.len());
    assert!(updates <= 30, "{updates} window updates per 10 MB");
    assert_no_shrink(&seen);
}

/// Without window scaling the window tops out at 64 KiB whatever the buffer: the app's window
/// updates must follow that, or the sender stalls.
#[test]
fn a_linux_download_without_window_scaling_never_stalls() {
    let Some(_root) = common::root::shared() else { return };
    let (updates, seen) = download("etran-wnd-ns", 4 << 20, 0);
    eprintln!("4 MB from Linux, no scaling: {updates} pure window updates");
    assert_no_shrink(&seen);
}

#[test]
fn a_linux_peer_closing_right_after_echoing_loses_nothing_and_resets_nothing() {
    let Some(_root) = common::root::shared() else { return };
    let mut e = Etran::new("etran-wnd-echo");
    add_neighbour_of_b(&e.net);
    const CONNS: usize = 6;
    const EACH: usize = 3 << 20;
    let peer: SocketAddrV4 = format!("10.77.0.2:{PORT}").parse().unwrap();
    let b = e.net.b.clone();
    let listener = in_netns(&b, || TcpListener::bind(peer).expect("listen"));
    let rsts_before = in_netns(&b, linux_out_rsts);
    std::thread::scope(|s| {
        // A Linux echo server: echoes everything, and closes at the end of the stream.
        let server = s.spawn(|| {
            std::thread::scope(|t| {
                for _ in 0..CONNS {
                    let (mut c, _) = listener.accept().unwrap();
                    t.spawn(move || {
                        let mut buf = vec![0u8; 1 << 16];
                        loop {
                            let n = c.read(&mut buf).expect("no reset from etran");
                            if n == 0 {
                                break;
                            }
                            c.write_all(&buf[..n]).expect("no reset from etran");
                        }
                    });
                }
            })
        });
        let ids: Vec<ConnId> =
            (0..CONNS).map(|_| e.app.connect_blocking(peer).expect("connect")).collect();
        let sent: Vec<Vec<u8>> = (0..CONNS).map(|i| pattern(i * 7 + 1, EACH)).collect();
        let mut off = [0usize; CONNS];
        let mut got: Vec<Vec<u8>> = (0..CONNS).map(|_| Vec::with_capacity(EACH)).collect();
        let mut eof = [false; CONNS];
        let mut buf = vec![0u8; 16 << 10];
        let deadline = Instant::now() + Duration::from_secs(30);
        while eof.iter().any(|d| !d) {
            e.app.poll().unwrap();
            e.app.poll_daemon().unwrap();
            // A busy app: what arrives meanwhile (the peer's FIN, say) waits for the next poll,
            // while the kernel has acknowledged it already.
            std::thread::sleep(Duration::from_micros(300));
            for i in 0..CONNS {
                if off[i] < EACH {
                    match e.app.send_more(ids[i], &sent[i][off[i]..]) {
                        Ok(n) => off[i] += n,
                        Err(err) if err.kind() == ErrorKind::WouldBlock => {}
                        Err(err) => panic!("send {i}: {err}"),
                    }
                    if off[i] == EACH {
                        e.app.close(ids[i]).unwrap();
                    }
                }
                // One read per pass: the echo piles up in our buffer, and the peer's FIN
                // arrives while much of it is still unread.
                match e.app.recv(ids[i], &mut buf) {
                    Ok(0) => eof[i] = true,
                    Ok(n) => got[i].extend_from_slice(&buf[..n]),
                    Err(err) if err.kind() == ErrorKind::WouldBlock => {}
                    Err(err) => panic!("connection {i} after {} bytes: {err}", got[i].len()),
                }
            }
            e.app.flush().unwrap();
            let progress: Vec<usize> = got.iter().map(Vec::len).collect();
            assert!(Instant::now() < deadline, "stalled: {progress:?}");
        }
        server.join().unwrap();
        for i in 0..CONNS {
            assert!(got[i] == sent[i], "connection {i}: every byte, exactly");
        }
    });
    let rsts = in_netns(&b, linux_out_rsts) - rsts_before;
    assert_eq!(rsts, 0, "Linux sent RSTs: {}", e.daemon.log());
}

/// Linux's count of keepalive probes it sent, in the calling thread's namespace.
fn linux_keepalive_probes() -> u64 {
    net_stat("TcpExt:TCPKeepAlive")
}

#[test]
fn an_idle_connection_answers_a_linux_peers_keepalive_probes() {
    use std::os::fd::AsRawFd;
    let Some(_root) = common::root::shared() else { return };
    let mut e = Etran::new("etran-wnd-keep");
    add_neighbour_of_b(&e.net);
    let peer: SocketAddrV4 = format!("10.77.0.2:{PORT}").parse().unwrap();
    let b = e.net.b.clone();
    // A probe after 1 s of silence, then every second; 2 unanswered end the connection (the
    // accepted socket inherits all of it).
    let listener = in_netns(&b, || TcpListener::bind(peer).expect("listen"));
    let fd = listener.as_raw_fd();
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 1);
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 1);
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 2);
    let probes_before = in_netns(&b, linux_keepalive_probes);
    std::thread::scope(|s| {
        let server = s.spawn(|| {
            let (mut c, _) = listener.accept().unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).expect("the connection outlived the probes");
            c.write_all(&buf).unwrap();
        });
        let id = e.app.connect_blocking(peer).expect("connect");
        // Idle past three probes: unanswered, Linux would have ended it after the second.
        let idle = Instant::now() + Duration::from_millis(4500);
        while Instant::now() < idle {
            e.app.poll().unwrap();
            e.app.poll_daemon().unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        e.app.send(id, b"hello").expect("send after the idle time");
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < 5 {
            e.app.poll().unwrap();
            e.app.poll_daemon().unwrap();
            match e.app.recv(id, &mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(err) if err.kind() == ErrorKind::WouldBlock => {}
                Err(err) => panic!("after the idle time: {err}"),
            }
            assert!(Instant::now() < deadline, "no echo after the idle time");
        }
        assert_eq!(got, b"hello");
        server.join().unwrap();
    });
    let probes = in_netns(&b, linux_keepalive_probes) - probes_before;
    assert!(probes >= 3, "Linux sent {probes} keepalive probes");
}

#[test]
fn small_sends_in_one_pass_leave_as_one_segment_unless_nodelay() {
    let Some(_root) = common::root::shared() else { return };
    let mut e = Etran::new("etran-wnd-nagle");
    add_neighbour_of_b(&e.net);
    let peer: SocketAddrV4 = format!("10.77.0.2:{PORT}").parse().unwrap();
    let b = e.net.b.clone();
    let listener = in_netns(&b, || TcpListener::bind(peer).expect("listen"));
    let raw = in_netns(&b, || RawSocket::open("vb"));
    for nodelay in [false, true] {
        let id = e.app.connect_blocking(peer).expect("connect");
        let (mut server, from) = listener.accept().unwrap();
        e.app.set_nodelay(id, nodelay).unwrap();
        // Forget what the handshake left on the capture.
        while raw.recv(50).is_some() {}
        for i in 0..10u8 {
            assert_eq!(e.app.send(id, &[i; 10]).unwrap(), 10);
        }
        e.app.flush().unwrap();
        let mut got = [0u8; 100];
        server.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        server.read_exact(&mut got).unwrap();
        let want: Vec<u8> = (0..10u8).flat_map(|i| [i; 10]).collect();
        assert_eq!(got[..], want[..]);
        let mut segments = Vec::new();
        while let Some(f) = raw.recv(100) {
            if let Ok(s) = Segment::parse(&f) {
                if std::net::SocketAddr::V4(s.src) == from && !s.payload.is_empty() {
                    segments.push(s.payload.len());
                }
            }
        }
        if nodelay {
            assert_eq!(segments, vec![10; 10], "nodelay: one segment per send");
        } else {
            // Nagle: the first goes at once, the rest waits for the end of the pass.
            assert_eq!(segments, vec![10, 90], "coalesced");
        }
        e.app.abort(id);
    }
}

/// An app that stops polling while 16 Linux clients each send it 1 MB (more than its 8192 RX
/// frames hold) loses nothing: ingress hands its port only what the port can take and drops
/// the rest before acknowledging it (counted as `port_full`; the stall lasts until it does), so
/// Linux resends it once the app reads again, and every connection ends byte-exact. Before the receive budget, the socket
/// dropped frames whose data the kernel had acknowledged and the connections aborted.
#[test]
fn a_stalled_app_loses_nothing_its_port_could_not_take() {
    const CONNS: usize = 16;
    const EACH: usize = 1 << 20;
    let mut e = Etran::new("stall");
    let listener = e.app.listen(PORT).unwrap();
    let b = e.net.b.clone();
    let us = SocketAddrV4::new("10.77.0.1".parse().unwrap(), PORT);
    // Every client sends only once all are accepted, so the whole burst meets the stall.
    let go = std::sync::Barrier::new(CONNS + 1);
    std::thread::scope(|s| {
        for i in 0..CONNS {
            let (b, go) = (&b, &go);
            s.spawn(move || {
                let mut c = in_netns(b, || TcpStream::connect(us).expect("connect"));
                c.set_write_timeout(Some(Duration::from_secs(40))).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
                go.wait();
                // A failure here shows on the app's side, which the test checks.
                if c.write_all(&pattern(i, EACH)).is_ok() {
                    let _ = c.shutdown(std::net::Shutdown::Write);
                    let _ = c.read_to_end(&mut Vec::new());
                }
            });
        }
        let ids: Vec<ConnId> = (0..CONNS)
            .map(|_| etran_accept(&mut e.app, &listener, Duration::from_secs(20)))
            .collect();
        go.wait();
        // The stall: Linux sends what the windows allow (16 × 1 MB windows, more than the
        // port's 8192 RX frames) while nobody takes frames, until ingress turns frames away.
        let port_full = || {
            let stats = common::cli::etran_in_ok(&e.net.a, &["stats"]);
            String::from_utf8_lossy(&stats.stdout).contains("port_full")
        };
        let stall = Instant::now();
        while !port_full() {
            assert!(stall.elapsed() < Duration::from_secs(20), "the port never turned frames away");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut got: Vec<Vec<u8>> = (0..CONNS).map(|_| Vec::with_capacity(EACH)).collect();
        let mut done = [false; CONNS];
        let mut buf = vec![0u8; 64 << 10];
        let deadline = Instant::now() + Duration::from_secs(30);
        while done.contains(&false) {
            e.app.poll().unwrap();
            for (k, &id) in ids.iter().enumerate() {
                while !done[k] {
                    match e.app.recv(id, &mut buf) {
                        Ok(0) => {
                            done[k] = true;
                            e.app.close(id).unwrap();
                        }
                        Ok(n) => got[k].extend_from_slice(&buf[..n]),
                        Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                        Err(err) => panic!("connection {k}: {err} after {} bytes", got[k].len()),
                    }
                }
            }
            let open = done.iter().filter(|d| !**d).count();
            assert!(Instant::now() < deadline, "stalled: {open} connections still open");
        }
        // Every connection's bytes, whichever client it was (they connect in any order).
        let mut firsts: Vec<u8> = got.iter().map(|g| g[0]).collect();
        for g in &got {
            assert_eq!(g.len(), EACH);
            let seed = (0..CONNS).find(|&i| pattern(i, 1)[0] == g[0]).expect("a client's stream");
            assert!(*g == pattern(seed, EACH), "byte-exact");
        }
        firsts.sort();
        firsts.dedup();
        assert_eq!(firsts.len(), CONNS, "every client's stream once");
    });
}

/// TCP small queues on the app's side. Compat never paces, so the registration is told it does
/// (`Registered { paced }`, as native's daemon says with `--pacing auto`): the port then tracks
/// each frame a connection hands over until its completion comes back, and the connection
/// hands over no more than its room. A bulk send to Linux goes through whole, held back by its
/// room at times, and every frame is given back at the end: a frame never seen complete would
/// hold its connection's room for good (the send would stall).
#[test]
fn a_paced_apps_connections_wait_for_their_room_and_every_frame_comes_back() {
    use common::{
        daemon::DaemonPair,
        peer::{etran_send, PyPeer},
    };
    let Some(_root) = common::root::shared() else { return };
    const BYTES: u64 = 4 << 20;
    let DaemonPair { net, daemon } = DaemonPair::new("tcpsq");
    add_neighbour_of_b(&net);
    let mut link = etran::app::DaemonLink::connect(&daemon.sock).unwrap();
    let mut reg = link.register(etran::proto::Transport::Tcp, 1).unwrap();
    reg.paced = true;
    let mut app = etran::app::App::with_link(link, reg).unwrap();
    let peer: SocketAddrV4 = format!("10.77.0.2:{PORT}").parse().unwrap();
    let linux = PyPeer::start(&net.b, "recv", "listen", peer, BYTES, 5);
    let id = app.connect_blocking(peer).expect("connect");
    etran_send(&mut app, id, BYTES, 5, Duration::from_secs(60));
    linux.finish("a paced eTran sender to Linux");
    assert!(app.stats().small_queue_waits > 0, "{:?}", app.stats());
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.small_queue_frames() > 0 {
        assert!(Instant::now() < deadline, "{} frames never completed", app.small_queue_frames());
        app.poll().unwrap();
    }
    assert_eq!(app.port().tx_frames().allocated(), 0, "every TX frame is back");
}
