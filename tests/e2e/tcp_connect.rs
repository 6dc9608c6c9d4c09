//! Opening TCP connections through the daemon's slow path, end to end, against Linux TCP:
//! `etran up va` and `etran daemon` in namespace -a, Linux in -b. Passive: an app listens, a
//! Linux client connects. Active: the app connects to a Linux listener (after a refusal for a
//! missing neighbour entry), and to a closed port (refused). Each time the connection lands in
//! `etran_tcp_conns`, bytes flow both ways byte-exact, and dropping the app (its daemon link)
//! removes the connection and resets the Linux side. Refusals carry the errno connect(2) and
//! bind(2) would give. Needs root.
use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddrV4, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use common::{
    daemon::{register, DaemonPair},
    netns::in_netns,
    peer::etran_accept,
    tcp::{add_neighbour_of_b, conn_present, pattern},
};
use etran::{
    app::{App, ConnId},
    proto::errno_of,
};

const PORT: u16 = 7100;

/// Both directions at once: Linux writes 20 kB from a thread while the app sends 30 kB and
/// receives; each side checks the other's bytes exactly.
fn exchange(app: &mut App, id: ConnId, client: &mut TcpStream) {
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let to_app = pattern(1, 20_000);
    let to_linux = pattern(7, 30_000);
    std::thread::scope(|s| {
        let (c, want) = (client, to_app.clone());
        let linux = s.spawn(move || {
            c.write_all(&want).unwrap();
            let mut got = vec![0u8; 30_000];
            c.read_exact(&mut got).expect("the app's bytes");
            got
        });
        let mut got = Vec::new();
        let mut sent = 0;
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(8);
        while got.len() < to_app.len() || sent < to_linux.len() || !linux.is_finished() {
            app.poll().unwrap();
            if sent < to_linux.len() {
                match app.send(id, &to_linux[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("send: {e}"),
                }
            }
            match app.recv(id, &mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("recv: {e}"),
            }
            assert!(Instant::now() < deadline, "stalled: got {} sent {sent}", got.len());
        }
        assert_eq!(got, to_app, "Linux → app byte-exact");
        assert_eq!(linux.join().unwrap(), to_linux, "app → Linux byte-exact");
    });
}

#[test]
fn linux_client_connects_to_an_etran_listener() {
    let Some(_root) = common::root::shared() else { return };
    let DaemonPair { net, daemon } = DaemonPair::new("tcpconn");
    let (a, b) = (net.a.clone(), net.b.clone());

    let mut app = App::open(&daemon.sock).unwrap();
    let listener = app.listen(PORT).unwrap();
    // A second listener on the same port is refused (EADDRINUSE, as bind(2) says); the app
    // stays usable.
    let mut other = App::open(&daemon.sock).unwrap();
    let err = other.listen(PORT).unwrap_err();
    assert_eq!(errno_of(&err), Some(libc::EADDRINUSE), "{err}");
    assert_eq!(err.kind(), ErrorKind::AddrInUse);
    assert!(err.to_string().contains("already taken"), "{err}");
    other.listen(PORT + 1).expect("another port is free");
    drop(other);

    let mut client = in_netns(&b, || {
        TcpStream::connect_timeout(
            &format!("10.77.0.1:{PORT}").parse().unwrap(),
            Duration::from_secs(3),
        )
        .expect("the daemon completes the handshake")
    });
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    let id = etran_accept(&mut app, &listener, Duration::from_secs(5));
    let key = app.stream(id).expect("adopted").key();
    assert!(conn_present(&a, &key));

    exchange(&mut app, id, &mut client);

    // Session teardown: the connection leaves the map, the client is reset.
    drop(app);
    let deadline = Instant::now() + Duration::from_secs(3);
    while conn_present(&a, &key) {
        assert!(Instant::now() < deadline, "connection left behind: {}", daemon.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut buf = [0u8; 16];
    let err = client.read(&mut buf).expect_err("a reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
}

#[test]
fn etran_app_connects_to_a_linux_listener() {
    let Some(_root) = common::root::shared() else { return };
    let DaemonPair { net, daemon } = DaemonPair::new("tcpact");
    let (a, b) = (net.a.clone(), net.b.clone());
    let mut app = register(&daemon.sock);
    let peer: SocketAddrV4 = "10.77.0.2:7200".parse().unwrap();

    // No neighbour entry for the peer yet: a clear refusal (EHOSTUNREACH), the app lives on.
    let err = app.connect_blocking(peer).unwrap_err();
    assert_eq!(errno_of(&err), Some(libc::EHOSTUNREACH), "{err}");
    assert!(err.to_string().contains("no neighbour entry"), "{err}");
    // This host's own address, or loopback: refused in one line, not a neighbour to add.
    for own in ["10.77.0.1:7200", "127.0.0.1:7200"] {
        let err = app.connect_blocking(own.parse().unwrap()).unwrap_err();
        assert_eq!(errno_of(&err), Some(libc::EOPNOTSUPP), "{own}: {err}");
        assert!(err.to_string().contains("is this host"), "{own}: {err}");
    }
    add_neighbour_of_b(&net);

    let listener = in_netns(&b, || TcpListener::bind(peer).expect("listen"));
    let id = app.connect_blocking(peer).expect("connected");
    let (mut server, from) = listener.accept().expect("Linux accepted");
    let key = app.stream(id).unwrap().key();
    assert_eq!(from.port(), u16::from_be(key.local_port));
    assert!(conn_present(&a, &key));
    exchange(&mut app, id, &mut server);

    // Nobody listens on 7201: Linux resets the SYN and the connect fails as connect(2) does.
    let err = app.connect_blocking("10.77.0.2:7201".parse().unwrap()).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED), "{err}");
    // Non-blocking: in progress first, refused once the RST came.
    let c = app.connect("10.77.0.2:7201".parse().unwrap(), None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let err = loop {
        match app.poll_connect(&c) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert_eq!(e.raw_os_error(), Some(libc::EAGAIN), "in progress: EAGAIN");
                app.wait(Some(Duration::from_millis(100))).map(drop).unwrap()
            }
            Ok(id) => panic!("connected to a closed port: {id:?}"),
            Err(e) => break e,
        }
        assert!(Instant::now() < deadline, "no answer to the connect");
    };
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED), "{err}");

    drop(app);
    let deadline = Instant::now() + Duration::from_secs(3);
    while conn_present(&a, &key) {
        assert!(Instant::now() < deadline, "connection left behind: {}", daemon.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut buf = [0u8; 16];
    server.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let err = server.read(&mut buf).expect_err("a reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
}

/// Listening is an object, as a listening socket is: accept on it is non-blocking as accept(2)
/// on a non-blocking socket (EAGAIN while nothing is pending; EINVAL on another app's), two
/// listeners on two ports each get their own connections, and closing one resets the
/// connections it had not handed out and refuses later SYNs to its port (ECONNREFUSED at a
/// Linux client), while the connections accepted before live on and the port is free again.
#[test]
fn listeners_accept_their_own_connections_and_a_closed_one_refuses() {
    let Some(_root) = common::root::shared() else { return };
    let DaemonPair { net, daemon } = DaemonPair::new("tcplisten");
    let b = net.b.clone();
    let (p1, p2) = (PORT + 10, PORT + 11);
    let connect = |port: u16| {
        in_netns(&b, || {
            let to = SocketAddrV4::new("10.77.0.1".parse().unwrap(), port);
            TcpStream::connect_timeout(&to.into(), Duration::from_secs(3))
        })
    };
    let port_of = |app: &App, id| u16::from_be(app.stream(id).unwrap().key().local_port);
    let mut app = App::open(&daemon.sock).unwrap();
    let first = app.listen(p1).unwrap();
    let second = app.listen(p2).unwrap();
    let err = app.accept(&first).unwrap_err();
    assert_eq!((err.kind(), err.raw_os_error()), (ErrorKind::WouldBlock, Some(libc::EAGAIN)));

    // A connection to the second port comes through the second listener only.
    let mut c2 = connect(p2).expect("the daemon accepts on the second port");
    let id2 = etran_accept(&mut app, &second, Duration::from_secs(5));
    assert_eq!(port_of(&app, id2), p2);
    assert_eq!(app.accept(&first).unwrap_err().kind(), ErrorKind::WouldBlock);
    let mut c1 = connect(p1).expect("the daemon accepts on the first port");
    let id1 = etran_accept(&mut app, &first, Duration::from_secs(5));
    assert_eq!(port_of(&app, id1), p1);
    let mut other = App::open(&daemon.sock).unwrap();
    assert_eq!(other.accept(&second).unwrap_err().raw_os_error(), Some(libc::EINVAL));

    // One more connection to the first port, never accepted: the close resets it.
    let mut pending = connect(p1).expect("the handshake completes before accept");
    app.close_listener(first).unwrap();
    pending.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let err = pending.read(&mut [0u8; 1]).expect_err("reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    let err = connect(p1).expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");

    // What was accepted before lives on; the other listener still accepts.
    exchange(&mut app, id1, &mut c1);
    exchange(&mut app, id2, &mut c2);
    let _c = connect(p2).expect("the second port still listens");
    etran_accept(&mut app, &second, Duration::from_secs(5));
    let again = other.listen(p1).expect("the closed port is free");
    let _c = connect(p1).expect("the new listener accepts");
    etran_accept(&mut other, &again, Duration::from_secs(5));
}

/// An app with open connections and no traffic sleeps in `App::wait` (on its AF_XDP socket
/// and its daemon link) instead of spinning: under 2 % of a CPU over 3 s. Then the blocking
/// calls work as their POSIX namesakes, errnos included: a `recv` with nothing to read times
/// out with EAGAIN, the connections still echo after the idle time, a Linux peer's RST fails
/// `recv` with ECONNRESET, a connection that was forgotten is ENOTCONN, a full send buffer is
/// EAGAIN.
#[test]
fn an_idle_app_sleeps_and_blocking_calls_give_posix_errors() {
    let Some(_root) = common::root::alone() else { return };
    const CONNS: usize = 8;
    let DaemonPair { net, daemon } = DaemonPair::new("tcpidle");
    let b = net.b.clone();
    add_neighbour_of_b(&net);
    let peer: SocketAddrV4 = "10.77.0.2:7300".parse().unwrap();
    let listener = in_netns(&b, || TcpListener::bind(peer).expect("listen"));
    let mut app = App::open(&daemon.sock).unwrap();
    let mut conns = Vec::new();
    for _ in 0..CONNS {
        let id = app.connect_blocking(peer).expect("connected");
        let (server, _) = listener.accept().unwrap();
        conns.push((id, server));
    }
    // Every connection carried bytes both ways (timers ran, ACKs came) before the idle time.
    let mut buf = [0u8; 64];
    app.set_timeout(Some(Duration::from_secs(5)));
    for (id, server) in &mut conns {
        app.send_blocking(*id, b"ping").unwrap();
        server.read_exact(&mut buf[..4]).unwrap();
        server.write_all(b"pong").unwrap();
        assert_eq!(app.recv_blocking(*id, &mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"pong");
    }

    let (cpu0, t0) = (common::thread_cpu(), Instant::now());
    let mut wakeups = 0;
    while t0.elapsed() < Duration::from_secs(3) {
        app.wait(Some(Duration::from_secs(3) - t0.elapsed().min(Duration::from_secs(3)))).unwrap();
        wakeups += 1;
    }
    let (cpu, wall) = (common::thread_cpu() - cpu0, t0.elapsed());
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    assert!(share < 0.02, "an idle app used {:.1} % of a CPU ({wakeups} wakeups)", share * 100.0);

    // Nothing to read: the blocking recv gives up after its timeout with EAGAIN.
    let (id, _) = conns[0];
    app.set_timeout(Some(Duration::from_millis(200)));
    let t = Instant::now();
    let err = app.recv_blocking(id, &mut buf).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EAGAIN), "{err}");
    assert!(t.elapsed() >= Duration::from_millis(200));
    let err = app.recv(id, &mut buf).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EAGAIN), "{err}");

    // Still connected after the idle time: a blocking exchange on each connection.
    app.set_timeout(Some(Duration::from_secs(5)));
    for (id, server) in &mut conns {
        app.send_blocking(*id, b"again").unwrap();
        server.read_exact(&mut buf[..5]).unwrap();
        assert_eq!(&buf[..5], b"again");
    }

    // The Linux peer resets connection 1 (SO_LINGER 0, then close): ECONNRESET.
    let (id, server) = conns.remove(1);
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt with a linger struct of the right size on a live socket.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&server),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(server);
    let err = app.recv_blocking(id, &mut buf).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET), "{err}");
    let err = app.send(id, b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET), "{err}");
    app.remove_connection(id);
    let err = app.recv(id, &mut buf).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");

    // A peer that reads nothing: the send buffer fills, then a send is EAGAIN, and a
    // blocking one gives up after its timeout with EAGAIN too.
    let (id, _) = conns[2];
    let big = vec![7u8; 64 << 20];
    let n = app.send(id, &big).unwrap();
    assert!(n < big.len(), "the send buffer took it all");
    let err = app.send(id, &big[n..]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EAGAIN), "{err}");
    app.set_timeout(Some(Duration::from_millis(200)));
    let err = app.send_blocking(id, &big[n..]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EAGAIN), "{err}");

    // After close, sending is EPIPE (the peer's side stays readable).
    let (id, _) = conns[0];
    app.close(id).unwrap();
    let err = app.send(id, b"late").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPIPE), "{err}");
}
