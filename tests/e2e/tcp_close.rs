//! Closing and aborting TCP connections end to end, against Linux TCP: `etran up va` and
//! `etran daemon` in namespace -a (an app listening), a Linux client in -b. Orderly close with
//! either side first (half-close included), TIME_WAIT on our side only when we closed first,
//! a reset from Linux, an abort from the app, and the same 4-tuple closed and reopened through
//! TIME_WAIT. Outcomes are checked on both sides: bytes, EOFs and errors, the Linux socket's
//! state (`ss`), and the datapath's maps. Needs root.
use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddrV4, TcpListener, TcpStream},
    os::fd::{AsRawFd, FromRawFd},
    process::Command,
    time::{Duration, Instant},
};

use common::{
    daemon::EtranApp,
    netns::{in_netns, sh},
    peer::etran_accept,
    tcp::{add_neighbour_of_b, conn_present, map_entries, pattern, pending_present, wait_for},
};
use etran::{
    app::{ready, ConnId, Listener},
    bpf::tcp::types::tcp_conn_key,
    proto::errno_of,
    transport::tcp::{close, rto::RtoConfig},
};

const PORT: u16 = 7300;
/// The daemon's TIME_WAIT (its default) and then some.
const AFTER_TIME_WAIT: u64 = 4;

/// An app listening on PORT behind a daemon on `va` (the common bed), with Linux in -b.
fn listening(name: &str) -> (EtranApp, Listener) {
    let mut e = EtranApp::new(name);
    let l = e.app.listen(PORT).unwrap();
    (e, l)
}

/// What these tests do with the bed.
trait CloseBed {
    fn linux_client(
        &mut self,
        l: &Listener,
        port: Option<u16>,
    ) -> (TcpStream, ConnId, tcp_conn_key);
    fn connect_from(&mut self, peer: SocketAddrV4, port: u16) -> std::io::Result<ConnId>;
    fn send_all(&mut self, id: ConnId, data: &[u8]);
    fn read_to_eof(&mut self, id: ConnId) -> Vec<u8>;
    fn recv_error(&mut self, id: ConnId) -> ErrorKind;
    fn state(&self, id: ConnId) -> close::State;
}

impl CloseBed for EtranApp {
    /// A Linux client connects (from `from_port` if given); the app accepts it. Returns the
    /// client, the app's connection and its key.
    fn linux_client(
        &mut self,
        l: &Listener,
        port: Option<u16>,
    ) -> (TcpStream, ConnId, tcp_conn_key) {
        let linux = linux_connect(&self.net.b, port);
        let id = etran_accept(&mut self.app, l, Duration::from_secs(5));
        (linux, id, self.app.stream(id).unwrap().key())
    }

    /// Connects to `peer` from local port `port` (non-blocking connect, polled to its end).
    fn connect_from(&mut self, peer: SocketAddrV4, port: u16) -> std::io::Result<ConnId> {
        let c = self.app.connect(peer, Some(port))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(id) = ready(self.app.poll_connect(&c))? {
                return Ok(id);
            }
            assert!(Instant::now() < deadline, "no answer to the connect: {}", self.daemon.log());
            self.app.wait(Some(Duration::from_millis(50)))?;
        }
    }

    fn send_all(&mut self, id: ConnId, data: &[u8]) {
        let mut sent = 0;
        self.poll_until("the app's bytes to be queued", |app| {
            match app.send(id, &data[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("send: {e}"),
            }
            sent == data.len()
        });
    }

    /// Everything up to the peer's FIN.
    fn read_to_eof(&mut self, id: ConnId) -> Vec<u8> {
        let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
        self.poll_until("EOF", |app| match app.recv(id, &mut buf) {
            Ok(0) => true,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                false
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("recv: {e}"),
        });
        got
    }

    /// Polls until `recv` fails (it must return no bytes on the way); the error's kind.
    fn recv_error(&mut self, id: ConnId) -> ErrorKind {
        let (mut kind, mut buf) = (None, [0u8; 16]);
        self.poll_until("recv to fail", |app| match app.recv(id, &mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => {
                kind = Some(e.kind());
                true
            }
            Ok(n) => panic!("recv returned {n} where an error was expected"),
        });
        kind.expect("recv failed")
    }

    fn state(&self, id: ConnId) -> close::State {
        self.app.stream(id).expect("known connection").close_state()
    }
}

/// A Linux client in namespace `ns` connected to the app, from `from_port` if given (reusable:
/// SO_REUSEADDR, so that the same 4-tuple comes back).
fn linux_connect(ns: &str, from_port: Option<u16>) -> TcpStream {
    in_netns(ns, || {
        // SAFETY: plain socket calls on a descriptor owned by `s` right away; every pointer
        // passed outlives its call.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket");
            let s = TcpStream::from_raw_fd(fd);
            let addr = |ip: [u8; 4], port: u16| libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(ip) },
                sin_zero: [0; 8],
            };
            let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
            // connect() gives up after SO_SNDTIMEO.
            let tv = libc::timeval { tv_sec: 3, tv_usec: 0 };
            let tv_len = std::mem::size_of::<libc::timeval>() as u32;
            let tvp = (&tv as *const libc::timeval).cast();
            assert_eq!(libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, tvp, tv_len), 0);
            if let Some(p) = from_port {
                let one: libc::c_int = 1;
                let onep = (&one as *const libc::c_int).cast();
                assert_eq!(libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, onep, 4), 0);
                let sa = addr([10, 77, 0, 2], p);
                assert_eq!(libc::bind(fd, (&sa as *const libc::sockaddr_in).cast(), len), 0);
            }
            let sa = addr([10, 77, 0, 1], PORT);
            let r = libc::connect(fd, (&sa as *const libc::sockaddr_in).cast(), len);
            assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        }
    })
}

/// Makes closing `s` send a RST (SO_LINGER with a zero timeout).
fn set_linger_zero(s: &TcpStream) {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    let len = std::mem::size_of::<libc::linger>() as u32;
    // SAFETY: a valid socket and option buffer.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            len,
        )
    };
    assert_eq!(r, 0);
}

/// Linux's TCP sockets in namespace `ns` that involve PORT: (state, local, peer) as `ss`
/// prints them.
fn linux_sockets(ns: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "exec", ns, "ss", "-Htan"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!(":{PORT}")))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// (a) The app closes first; Linux reads EOF, sends more (half-close on its side), closes; the
/// app reads it and EOF. Our side ends in TIME_WAIT, which holds the tuple for its period.
#[test]
fn etran_closes_first() {
    let Some(_root) = common::root::shared() else { return };
    let (mut e, l) = listening("tcpclsa");
    let (mut linux, id, key) = e.linux_client(&l, None);
    let to_linux = pattern(3, 5000);
    e.send_all(id, &to_linux);
    e.app.close(id).unwrap();
    assert_eq!(e.app.send(id, b"late").unwrap_err().kind(), ErrorKind::BrokenPipe);

    let mut got = Vec::new();
    linux.read_to_end(&mut got).expect("EOF after the app's bytes");
    assert_eq!(got, to_linux, "app → Linux byte-exact, then EOF");
    e.poll_until("our FIN acknowledged", |app| {
        app.stream(id).unwrap().close_state() == close::State::FinWait2
    });
    assert!(!e.app.is_closed(id));

    let to_app = pattern(9, 3000);
    linux.write_all(&to_app).unwrap();
    drop(linux);
    assert_eq!(e.read_to_eof(id), to_app, "Linux → app byte-exact after our FIN");
    e.poll_until("the close to complete", |app| app.is_closed(id));
    assert_eq!(e.state(id), close::State::TimeWait);
    assert!(e.app.recv(id, &mut [0u8; 8]).unwrap() == 0, "EOF stays");

    // Released: out of the fast path, the tuple held in TIME_WAIT.
    wait_for("the release", 3, || !conn_present(&e.net.a, &key));
    assert!(pending_present(&e.net.a, &key), "TIME_WAIT holds the tuple");
    // Linux got the ACK of its FIN: its socket is gone, not stuck in LAST-ACK.
    wait_for("Linux's socket to close", 3, || linux_sockets(&e.net.b).is_empty());
    wait_for("TIME_WAIT to end", AFTER_TIME_WAIT, || !pending_present(&e.net.a, &key));
    assert_eq!(map_entries(&e.net.a), (0, 0));
    assert!(e.app.remove_connection(id).is_some());
    assert!(e.app.is_closed(id));
}

/// (b) Linux closes first (shutdown of its sending side): the app reads EOF, still sends 10 kB
/// that Linux reads byte-exact, then closes. No TIME_WAIT on our side; Linux's socket is in it.
#[test]
fn linux_closes_first_and_the_app_keeps_sending() {
    let Some(_root) = common::root::shared() else { return };
    let (mut e, l) = listening("tcpclsb");
    let (mut linux, id, key) = e.linux_client(&l, None);
    let to_app = pattern(1, 4000);
    linux.write_all(&to_app).unwrap();
    linux.shutdown(Shutdown::Write).unwrap();
    assert_eq!(e.read_to_eof(id), to_app);
    assert_eq!(e.state(id), close::State::CloseWait);
    assert!(!e.app.is_closed(id));

    let to_linux = pattern(5, 10_000);
    std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut got = Vec::new();
            linux.read_to_end(&mut got).expect("EOF after the app's bytes");
            (got, linux)
        });
        e.send_all(id, &to_linux);
        e.app.close(id).unwrap();
        e.poll_until("the close to complete", |app| app.is_closed(id));
        let (got, linux) = reader.join().unwrap();
        assert_eq!(got, to_linux, "app → Linux byte-exact after Linux's FIN");
        drop(linux);
    });
    assert_eq!(e.state(id), close::State::Closed);
    assert_eq!(e.app.stream(id).unwrap().error(), None);

    wait_for("the release", 3, || !conn_present(&e.net.a, &key));
    assert!(!pending_present(&e.net.a, &key), "no TIME_WAIT when the peer closed first");
    assert_eq!(map_entries(&e.net.a), (0, 0));
    let socks = linux_sockets(&e.net.b);
    assert!(socks.len() == 1 && socks[0].starts_with("TIME-WAIT"), "Linux closed first: {socks:?}");
}

/// (c) Linux resets the connection (SO_LINGER 0): the app's calls fail with ConnectionReset
/// and the connection leaves the fast path.
#[test]
fn linux_reset_reaches_the_app() {
    let Some(_root) = common::root::shared() else { return };
    let (mut e, l) = listening("tcpclsc");
    let (mut linux, id, key) = e.linux_client(&l, None);
    linux.write_all(b"ping").unwrap();
    let mut buf = [0u8; 16];
    e.poll_until("the ping", |app| app.recv(id, &mut buf).is_ok());
    assert_eq!(&buf[..4], b"ping");
    set_linger_zero(&linux);
    drop(linux);

    assert_eq!(e.recv_error(id), ErrorKind::ConnectionReset);
    assert_eq!(e.app.send(id, b"x").unwrap_err().kind(), ErrorKind::ConnectionReset);
    assert!(e.app.is_closed(id));
    assert!(!conn_present(&e.net.a, &key));
    assert_eq!(map_entries(&e.net.a), (0, 0));
    e.app.remove_connection(id);
}

/// The peer becomes unreachable: the app's retransmission timer gives up after its retries,
/// `send` and `recv` report the timeout, and the daemon removes the connection.
#[test]
fn an_unreachable_peer_times_out() {
    let Some(_root) = common::root::shared() else { return };
    let (mut e, l) = listening("tcpclsg");
    let ms = Duration::from_millis;
    e.app.set_rto(RtoConfig {
        initial: ms(2),
        min: ms(1),
        max: ms(8),
        max_retries: 3,
        ..RtoConfig::default()
    });
    let (linux, id, key) = e.linux_client(&l, None);
    sh(&format!("ip -n {} link set vb down", e.net.b));
    e.app.send(id, b"never acknowledged").unwrap();
    assert_eq!(e.recv_error(id), ErrorKind::TimedOut);
    assert_eq!(e.app.send(id, b"x").unwrap_err().kind(), ErrorKind::TimedOut);
    assert_eq!(e.app.stats().timeouts_given_up, 1);
    wait_for("the daemon to remove it", 3, || !conn_present(&e.net.a, &key));
    assert_eq!(map_entries(&e.net.a), (0, 0));
    drop(linux);
    e.app.remove_connection(id);
}

/// The app aborts: Linux reads a reset; nothing is left in the maps.
#[test]
fn app_abort_resets_linux() {
    let Some(_root) = common::root::shared() else { return };
    let (mut e, l) = listening("tcpclse");
    let (mut linux, id, key) = e.linux_client(&l, None);
    e.send_all(id, b"bye");
    e.app.abort(id);
    assert!(e.app.is_closed(id));
    assert_eq!(e.app.recv(id, &mut [0u8; 4]).unwrap_err().kind(), ErrorKind::NotConnected);
    let mut got = [0u8; 3];
    linux.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"bye");
    let err = linux.read(&mut [0u8; 4]).expect_err("a reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    wait_for("the abort", 3, || !conn_present(&e.net.a, &key));
    assert_eq!(map_entries(&e.net.a), (0, 0));
}

/// (d) The same 4-tuple (Linux reconnects from one port) opened, used and closed by the app
/// first, 20 times: each new SYN finds the previous connection in TIME_WAIT and opens anew;
/// nothing accumulates in the maps.
#[test]
fn the_same_tuple_closes_and_reopens() {
    let Some(_root) = common::root::shared() else { return };
    let (mut e, l) = listening("tcpclsd");
    let from = 41_000;
    for i in 0..20 {
        let (mut linux, id, key) = e.linux_client(&l, Some(from));
        assert_eq!(u16::from_be(key.remote_port), from);
        let msg = pattern(i, 100 + i);
        linux.write_all(&msg).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        e.poll_until("the message", |app| {
            if let Ok(n) = app.recv(id, &mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            got.len() == msg.len()
        });
        assert_eq!(got, msg, "round {i}");
        e.send_all(id, &got);
        e.app.close(id).unwrap();
        let mut echo = Vec::new();
        linux.read_to_end(&mut echo).unwrap();
        assert_eq!(echo, msg, "round {i}: the echo, then EOF");
        drop(linux);
        e.poll_until("the close to complete", |app| app.is_closed(id));
        assert_eq!(e.state(id), close::State::TimeWait, "round {i}");
        e.app.remove_connection(id);
        wait_for("the release", 3, || !conn_present(&e.net.a, &key));
        let (conns, pending) = map_entries(&e.net.a);
        assert_eq!((conns, pending), (0, 1), "round {i}: only the TIME_WAIT tuple");
        wait_for("Linux's socket to close", 3, || linux_sockets(&e.net.b).is_empty());
    }
    wait_for("TIME_WAIT to end", AFTER_TIME_WAIT, || map_entries(&e.net.a) == (0, 0));
}

/// An active open the app closes first: its 4-tuple cannot be opened again while in TIME_WAIT,
/// and can once TIME_WAIT is over.
#[test]
fn a_tuple_in_time_wait_is_not_reused() {
    let Some(_root) = common::root::shared() else { return };
    let (mut e, _l) = listening("tcpclsf");
    add_neighbour_of_b(&e.net);
    let peer: SocketAddrV4 = "10.77.0.2:7301".parse().unwrap();
    let listener = in_netns(&e.net.b, || TcpListener::bind(peer).unwrap());
    let id = e.app.connect_blocking(peer).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let key = e.app.stream(id).unwrap().key();
    e.app.close(id).unwrap();
    server.read_to_end(&mut Vec::new()).unwrap();
    drop(server);
    e.poll_until("the close to complete", |app| app.is_closed(id));
    assert_eq!(e.state(id), close::State::TimeWait);
    e.app.remove_connection(id);
    wait_for("the release", 3, || !conn_present(&e.net.a, &key));

    let port = u16::from_be(key.local_port);
    // As connect(2) after bind(2) to a 4-tuple in TIME_WAIT: EADDRINUSE.
    let err = e.connect_from(peer, port).unwrap_err();
    assert_eq!(errno_of(&err), Some(libc::EADDRINUSE), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
    wait_for("TIME_WAIT to end", AFTER_TIME_WAIT, || !pending_present(&e.net.a, &key));
    let id = e.connect_from(peer, port).expect("free again");
    assert_eq!(u16::from_be(e.app.stream(id).unwrap().key().local_port), port);
    let (_server, from) = listener.accept().unwrap();
    assert_eq!(from.port(), port);
    e.app.abort(id);
    wait_for("the abort", 3, || map_entries(&e.net.a) == (0, 0));
}
