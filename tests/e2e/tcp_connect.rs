//! Opening TCP connections through the daemon's slow path, end to end, against Linux TCP:
//! `etran up va` and `etran daemon` in namespace -a, Linux in -b. Passive: an app listens, a
//! Linux client connects. Active: the app connects to a Linux listener (after a refusal for a
//! missing neighbour entry), and to a closed port (refused). Each time the connection lands in
//! `etran_tcp_conns`, bytes flow both ways byte-exact, and dropping the app's session removes
//! the connection and resets the Linux side. Needs root.
use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddrV4, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use common::{
    daemon::{register, DaemonPair},
    netns::in_netns,
    tcp::{add_neighbour_of_b, conn_present, pattern},
};
use etran::{
    app::{App, ConnId},
    daemon::{client::Session, proto::Transport},
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

    let (mut session, mut app) = register(&daemon.sock);
    session.listen(PORT).unwrap();
    // A second listener on the same port is refused; the session stays usable.
    let mut other = Session::connect(&daemon.sock).unwrap();
    other.register(Transport::Tcp, 1).unwrap();
    let err = other.listen(PORT).unwrap_err();
    assert!(format!("{err:#}").contains("already taken"), "{err:#}");
    drop(other);

    let mut client = in_netns(&b, || {
        TcpStream::connect_timeout(
            &format!("10.77.0.1:{PORT}").parse().unwrap(),
            Duration::from_secs(3),
        )
        .expect("the daemon completes the handshake")
    });
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    let id = loop {
        app.poll().unwrap();
        if let Some(id) = app.accept(&mut session).unwrap() {
            break id;
        }
        assert!(Instant::now() < deadline, "no Accepted: {}", daemon.log());
        std::thread::sleep(Duration::from_millis(2));
    };
    let key = app.stream(id).expect("adopted").key();
    assert!(conn_present(&a, &key));

    exchange(&mut app, id, &mut client);

    // Session teardown: the connection leaves the map, the client is reset.
    drop(app);
    drop(session);
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
    let (mut session, mut app) = register(&daemon.sock);
    let peer: SocketAddrV4 = "10.77.0.2:7200".parse().unwrap();

    // No neighbour entry for the peer yet: a clear refusal, the session lives on.
    let err = app.connect(&mut session, peer).unwrap_err();
    assert!(format!("{err:#}").contains("no neighbour entry"), "{err:#}");
    add_neighbour_of_b(&net);

    let listener = in_netns(&b, || TcpListener::bind(peer).expect("listen"));
    let id = app.connect(&mut session, peer).expect("connected");
    let (mut server, from) = listener.accept().expect("Linux accepted");
    let key = app.stream(id).unwrap().key();
    assert_eq!(from.port(), u16::from_be(key.local_port));
    assert!(conn_present(&a, &key));
    exchange(&mut app, id, &mut server);

    // Nobody listens on 7201: Linux resets the SYN and the connect fails.
    let err = app.connect(&mut session, "10.77.0.2:7201".parse().unwrap()).unwrap_err();
    assert!(format!("{err:#}").contains("Refused"), "{err:#}");

    drop(app);
    drop(session);
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
