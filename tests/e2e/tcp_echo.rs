//! TCP through the app library end to end: eTran to eTran on a private testbed (both hosts with
//! `etran up` and a daemon), and an app killed mid-transfer against Linux TCP. Needs root.
use std::{
    io::{BufRead, BufReader, ErrorKind, Read},
    net::{SocketAddrV4, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    daemon::{port_links, register, served_ports, tcp_conn_count, DaemonPair, EtranHosts},
    fixture::Rng,
    netns::in_netns,
};
use etran::{
    app::{ready, App, ConnId, Listener},
    testbed::HOST_NIC,
};

/// The byte at `offset` of message `msg` on connection `conn`.
fn byte(conn: usize, msg: usize, offset: usize) -> u8 {
    (offset.wrapping_mul(131) ^ conn.wrapping_mul(0x9e37) ^ msg.wrapping_mul(71) ^ (offset >> 9))
        as u8
}

/// Echoes every byte back on every connection it accepts on `l`, until `stop`.
fn echo_server(app: &mut App, l: &Listener, stop: &std::sync::atomic::AtomicBool) {
    let mut conns: Vec<(ConnId, Vec<u8>)> = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        app.poll().unwrap();
        while let Some(id) = ready(app.accept(l)).unwrap() {
            conns.push((id, Vec::new()));
        }
        for (id, pending) in &mut conns {
            if !pending.is_empty() {
                match app.send(*id, pending) {
                    Ok(n) => drop(pending.drain(..n)),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("echo send: {e}"),
                }
            }
            match app.recv(*id, &mut buf) {
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("echo recv: {e}"),
            }
        }
    }
}

/// One client connection: its messages, one at a time, each echoed back byte-exact.
struct Sender {
    id: ConnId,
    sizes: Vec<usize>,
    msg: usize,
    sent: usize,
    got: usize,
}

/// 16 connections, each a few messages of random size from 1 B to 1 MB (both ends included),
/// echoed by an eTran server app: every byte checked through `App::recv`.
#[test]
fn random_sizes_echo_byte_exact_over_many_connections() {
    let Some(_root) = common::root::shared() else { return };
    const CONNS: usize = 16;
    const PORT: u16 = 7400;
    let hosts = EtranHosts::new("echo-rand");
    let server_addr = SocketAddrV4::new(hosts.tb.host(2).ip, PORT);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut sapp = register(&hosts.daemons[1].sock);
    let listener = sapp.listen(PORT).unwrap();
    let mut rng = Rng(0x5eed_1234_abcd);
    let mut total = 0;
    std::thread::scope(|s| {
        let server = s.spawn(|| echo_server(&mut sapp, &listener, &stop));
        let mut app = register(&hosts.daemons[0].sock);
        let mut conns: Vec<Sender> = (0..CONNS)
            .map(|c| {
                // Log-uniform sizes; the extremes on the first two connections.
                let mut sizes: Vec<usize> = (0..3)
                    .map(|_| {
                        let k = rng.below(21);
                        ((1 << k) + rng.below(1 << k)).min(1 << 20)
                    })
                    .collect();
                match c {
                    0 => sizes[0] = 1,
                    1 => sizes[0] = 1 << 20,
                    _ => {}
                }
                total += sizes.iter().sum::<usize>();
                let id = app.connect_blocking(server_addr).expect("connect");
                Sender { id, sizes, msg: 0, sent: 0, got: 0 }
            })
            .collect();
        let mut out = vec![0u8; 1 << 16];
        let mut buf = vec![0u8; 1 << 16];
        let mut echoed = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while conns.iter().any(|c| c.msg < c.sizes.len()) {
            assert!(Instant::now() < deadline, "stalled: {echoed} of {total} bytes echoed");
            app.poll().unwrap();
            for (c, conn) in conns.iter_mut().enumerate() {
                let Some(&size) = conn.sizes.get(conn.msg) else { continue };
                if conn.sent < size {
                    let n = (size - conn.sent).min(out.len());
                    for (i, b) in out[..n].iter_mut().enumerate() {
                        *b = byte(c, conn.msg, conn.sent + i);
                    }
                    match app.send(conn.id, &out[..n]) {
                        Ok(k) => conn.sent += k,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => panic!("send: {e}"),
                    }
                }
                let want = (size - conn.got).min(buf.len());
                match app.recv(conn.id, &mut buf[..want]) {
                    Ok(0) => panic!("connection {c} ended early"),
                    Ok(n) => {
                        for (i, &b) in buf[..n].iter().enumerate() {
                            let at = conn.got + i;
                            assert_eq!(
                                b,
                                byte(c, conn.msg, at),
                                "conn {c} msg {} byte {at}",
                                conn.msg
                            );
                        }
                        conn.got += n;
                        echoed += n;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("recv: {e}"),
                }
                if conn.got == size {
                    (conn.msg, conn.sent, conn.got) = (conn.msg + 1, 0, 0);
                }
            }
        }
        assert_eq!(echoed, total);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        server.join().unwrap();
        drop(app);
    });
    drop(sapp);
    // Sessions gone: the daemons removed every connection and port.
    for i in [1, 2] {
        let ns = hosts.ns(i);
        let deadline = Instant::now() + Duration::from_secs(5);
        while tcp_conn_count(&ns, HOST_NIC) > 0 || !port_links(&ns).is_empty() {
            assert!(
                Instant::now() < deadline,
                "host {i} kept state: {}",
                hosts.daemons[usize::from(i) - 1].log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

const KILL_PORT: u16 = 7300;
const KILL_CONNS: usize = 4;
const CHILD_ENV: &str = "ETRAN_TEST_CHILD_SOCK";
const READY: &str = "etran-child-ready";

/// The byte at `offset` of every stream the child sends.
fn stream_byte(offset: u64) -> u8 {
    (offset.wrapping_mul(7) ^ (offset >> 8)) as u8
}

/// The child half of `killed_app_leaves_nothing_behind` (run by it, in its own process): listens,
/// accepts the Linux connections and sends to them without end.
#[test]
#[ignore = "run as a child process by killed_app_leaves_nothing_behind"]
fn killed_app_child() {
    let sock = std::env::var(CHILD_ENV).expect("started by the parent test");
    let mut app = register(std::path::Path::new(&sock));
    let listener = app.listen(KILL_PORT).unwrap();
    let mut conns: Vec<(ConnId, u64)> = Vec::new();
    let mut out = vec![0u8; 1 << 14];
    let mut announced = false;
    loop {
        app.poll().unwrap();
        if let Some(id) = ready(app.accept(&listener)).unwrap() {
            conns.push((id, 0));
        }
        for (id, sent) in &mut conns {
            for (i, b) in out.iter_mut().enumerate() {
                *b = stream_byte(*sent + i as u64);
            }
            match app.send(*id, &out) {
                Ok(n) => *sent += n as u64,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("send: {e}"),
            }
        }
        // Ready once each peer acknowledged 256 KB: bytes only written may die with the app.
        let acked = |&(id, sent): &(ConnId, u64)| {
            let s = app.stream(id).expect("a live connection");
            sent - (s.in_flight() as u64 + s.unsent() as u64)
        };
        if !announced && conns.len() == KILL_CONNS && conns.iter().all(|c| acked(c) >= 256 << 10) {
            println!("{READY}");
            announced = true;
        }
    }
}

/// How long the child app may take to have [`KILL_CONNS`] × 256 KB acknowledged (seconds in a
/// guest under TCG, milliseconds on the host).
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Waits for a line of `lines` holding `word`: Err says why none came (the sender ended, or
/// `within` passed).
fn wait_for_line(
    lines: &std::sync::mpsc::Receiver<String>,
    word: &str,
    within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l.contains(word) => return Ok(()),
            Ok(_) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!("printed no {word} within {within:?}"))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(format!("died before printing {word}"))
            }
        }
    }
}

/// An app SIGKILLed while it streams to Linux peers: its peers get an RST, and its port, its
/// connections and the daemon's descriptors for it are gone.
#[test]
fn killed_app_leaves_nothing_behind() {
    let Some(_root) = common::root::shared() else { return };
    let DaemonPair { net, daemon } = DaemonPair::new("tcpkill");
    let (a, b) = (net.a.clone(), net.b.clone());
    let fds_before = daemon.fds();
    let mut child = common::KillOnDrop::spawn(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "tcp_echo::killed_app_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &daemon.sock)
            .stdout(Stdio::piped()),
    )
    .unwrap();
    // The child's lines, through a thread: the wait for READY has a deadline.
    let (line_tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(l).is_err() {
                break;
            }
        }
    });
    let addr: std::net::SocketAddr = format!("10.77.0.1:{KILL_PORT}").parse().unwrap();
    // The child listens once it printed nothing yet but registered: retry the first connect.
    let deadline = Instant::now() + Duration::from_secs(10);
    let streams: Vec<TcpStream> = in_netns(&b, || {
        (0..KILL_CONNS)
            .map(|_| loop {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                    Ok(s) => break s,
                    Err(e) => {
                        assert!(Instant::now() < deadline, "connect: {e}: {}", daemon.log());
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })
            .collect()
    });
    std::thread::scope(|s| {
        let readers: Vec<_> = streams
            .into_iter()
            .map(|mut st| {
                s.spawn(move || -> (u64, std::io::Error) {
                    st.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let (mut got, mut buf) = (0u64, vec![0u8; 1 << 16]);
                    loop {
                        match st.read(&mut buf) {
                            Ok(0) => panic!("a FIN, not a reset, after {got} bytes"),
                            Ok(n) => {
                                for (i, &x) in buf[..n].iter().enumerate() {
                                    assert_eq!(
                                        x,
                                        stream_byte(got + i as u64),
                                        "byte {}",
                                        got + i as u64
                                    );
                                }
                                got += n as u64;
                            }
                            Err(e) => return (got, e),
                        }
                    }
                })
            })
            .collect();
        if let Err(why) = wait_for_line(&lines, READY, READY_WITHIN) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            child.wait().unwrap();
            let got: Vec<_> =
                readers.into_iter().map(|r| r.join().map(|(n, e)| (n, e.kind()))).collect();
            panic!("the child app {why}: the readers got {got:?}; {}", daemon.log());
        }
        if common::on_native() {
            assert_eq!(served_ports(&a, "va"), 1, "the child's port (a socket on va)");
        } else {
            assert_eq!(port_links(&a).len(), 2, "the child's port");
        }
        assert_eq!(tcp_conn_count(&a, "va"), KILL_CONNS);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        for r in readers {
            let (got, err) = r.join().unwrap();
            assert!(got >= 256 << 10, "only {got} bytes before the end");
            assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while !port_links(&a).is_empty() || served_ports(&a, "va") > 0 || tcp_conn_count(&a, "va") > 0 {
        assert!(Instant::now() < deadline, "state left behind: {}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The daemon closes the session's descriptors last.
    let mut fds = daemon.fds();
    while fds.len() != fds_before.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        fds = daemon.fds();
    }
    assert_eq!(fds.len(), fds_before.len(), "daemon descriptors {fds:?}, before {fds_before:?}");
    drop(daemon);
    drop(net);
}
