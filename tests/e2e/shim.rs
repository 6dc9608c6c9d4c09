//! `etran run -- CMD`: unmodified programs over eTran through the POSIX shim, on a testbed whose
//! first host runs etran (`etran up`, a daemon) and whose second is plain Linux: a python3
//! echo server (socketserver: poll, accept, a thread per connection, recv, sendall, shutdown)
//! serving Linux clients byte-exact; curl downloading from Linux's `python3 -m http.server`,
//! the body checked by hash; a program using only Unix sockets, UDP and loopback TCP printing
//! exactly what it prints without the shim; a static binary refused in one line. Needs root
//! (the static binary's refusal does not), python3 and curl.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{cli::etran_bin, daemon::EtranHosts};

/// Debian's python3 (PATH may hold a wrapper script first).
const PYTHON: &str = "/usr/bin/python3";

/// An echo server as people write them: socketserver's threading TCP server. It serves
/// `conns` connections, then stops and says how many it served.
const ECHO_SERVER: &str = r#"
import socket, socketserver, sys, threading
port, conns = int(sys.argv[1]), int(sys.argv[2])
done = 0
lock = threading.Lock()
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        global done
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            b = self.request.recv(65536)
            if not b:
                break
            self.request.sendall(b)
        with lock:
            done += 1
            if done == conns:
                threading.Thread(target=srv.shutdown).start()
class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
srv = Server(("0.0.0.0", port), Echo)
print("listening", flush=True)
srv.serve_forever()
srv.server_close()
print("served", done, flush=True)
"#;

/// `conns` clients at once, each sending `n` random bytes (its own seed) while reading the
/// echo, then checking it byte for byte.
const ECHO_CLIENT: &str = r#"
import random, socket, sys, threading
host, port, conns, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
results = [None] * conns
def one(i):
    data = random.Random(i).randbytes(n)
    s = socket.create_connection((host, port), timeout=60)
    def tx():
        for off in range(0, n, 30000):
            s.sendall(data[off:off + 30000])
        s.shutdown(socket.SHUT_WR)
    t = threading.Thread(target=tx)
    t.start()
    got = bytearray()
    while True:
        b = s.recv(1 << 16)
        if not b:
            break
        got += b
    t.join()
    s.close()
    results[i] = "ok" if bytes(got) == data else "bad %d of %d bytes" % (len(got), n)
ts = [threading.Thread(target=one, args=(i,)) for i in range(conns)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print(" ".join(results), flush=True)
"#;

/// Runs `cmd` under `etran run` in namespace `ns`, with the daemon at `sock`.
fn etran_run(ns: &str, sock: &std::path::Path, cmd: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, etran_bin(), "run", "--daemon-socket"]).arg(sock).arg("--");
    c.args(cmd);
    c
}

/// How many apps registered with the daemon so far (each process under `etran run` that
/// used eTran is one).
fn registrations(log: &str) -> usize {
    log.lines().filter(|l| l.contains("app session") && l.contains(" registered: ")).count()
}

/// The daemon's lines for connections established and closed.
fn conn_lines(log: &str) -> (usize, usize) {
    let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    (count(" established (handle "), count(" closed (handle "))
}

fn text(out: &Output) -> String {
    format!(
        "status {}, stdout {:?}, stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_python_echo_server_under_etran_run_serves_linux_clients_byte_exact() {
    let Some(_root) = common::root::shared() else { return };
    let hosts = EtranHosts::first_only("shim-echo", etran::testbed::Spec::new("", 2));
    let (h1, h2) = (hosts.ns(1), hosts.ns(2));
    let ip1 = hosts.tb.host(1).ip.to_string();
    let daemon = &hosts.daemons[0];
    let before = registrations(&daemon.log());
    const CONNS: usize = 3;
    let mut server = etran_run(&h1, &daemon.sock, &[PYTHON, "-c", ECHO_SERVER, "7000", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("etran run");
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "listening", "the server did not start: {}", daemon.log());

    let client = Command::new("ip")
        .args(["netns", "exec", &h2, PYTHON, "-c", ECHO_CLIENT, &ip1, "7000"])
        .args([&CONNS.to_string(), "1000000"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&client.stdout);
    assert_eq!(said.trim(), ["ok"; CONNS].join(" "), "{}: {}", text(&client), daemon.log());

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = server.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the server did not stop: {}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(status.success() && line.trim() == "served 3", "{status}: {line:?}");
    let log = daemon.log();
    assert_eq!(registrations(&log) - before, 1, "one app: {log}");
    assert_eq!(conn_lines(&log), (CONNS, CONNS), "every connection through eTran, closed: {log}");
}

#[test]
fn curl_under_etran_run_downloads_from_a_linux_http_server_byte_exact() {
    let Some(_root) = common::root::shared() else { return };
    let hosts = EtranHosts::first_only("shim-curl", etran::testbed::Spec::new("", 2));
    let (h1, h2) = (hosts.ns(1), hosts.ns(2));
    let ip2 = hosts.tb.host(2).ip.to_string();
    let daemon = &hosts.daemons[0];
    let dir = daemon.dir.join("www");
    std::fs::create_dir_all(&dir).unwrap();
    let body: Vec<u8> =
        (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(dir.join("body.bin"), &body).unwrap();
    let mut server = Command::new("ip")
        .args(["netns", "exec", &h2, PYTHON, "-m", "http.server", "8000", "--bind", &ip2])
        .arg("--directory")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Until it listens.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !common::netns::sh(&format!("ip netns exec {h2} ss -ltn"))
        .stdout
        .windows(5)
        .any(|w| w == b":8000")
    {
        assert!(Instant::now() < deadline, "http.server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = registrations(&daemon.log());
    let got = dir.join("got.bin");
    let url = format!("http://{ip2}:8000/body.bin");
    let got_s = got.to_str().unwrap();
    let curl =
        etran_run(&h1, &daemon.sock, &["curl", "-sS", "--max-time", "30", "-o", got_s, &url])
            .output()
            .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(curl.status.success(), "curl: {}: {}", text(&curl), daemon.log());
    let sha = |p: &std::path::Path| {
        let out = Command::new("sha256sum").arg(p).output().unwrap();
        String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string()
    };
    assert_eq!(sha(&got), sha(&dir.join("body.bin")), "the body's hash");
    let log = daemon.log();
    assert_eq!(registrations(&log) - before, 1, "one app: {log}");
    assert_eq!(conn_lines(&log), (1, 1), "fetched through eTran, closed: {log}");
}

/// Unix sockets, UDP and TCP over loopback (to a listener on any address and to one on
/// 127.0.0.1), with threads, poll and select: all the kernel's.
const LOCAL_ONLY: &str = r#"
import select, socket, threading
a, b = socket.socketpair()
a.sendall(b"unix says hi")
print("unix", b.recv(100))
u1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u1.bind(("127.0.0.1", 0))
u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u2.sendto(b"udp datagram", u1.getsockname())
print("udp", u1.recvfrom(100)[0])
for bind_to in ("0.0.0.0", "127.0.0.1"):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((bind_to, 0))
    ls.listen()
    port = ls.getsockname()[1]
    def serve():
        c, _ = ls.accept()
        while True:
            d = c.recv(4096)
            if not d:
                break
            c.sendall(d.upper())
        c.close()
    t = threading.Thread(target=serve)
    t.start()
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(b"loopback to " + bind_to.encode())
    r, _, _ = select.select([c], [], [], 5)
    p = select.poll(); p.register(c, select.POLLIN); p.poll(5000)
    print("tcp", bind_to, c.recv(100), len(r))
    c.shutdown(socket.SHUT_WR)
    print("eof", c.recv(100))
    c.close()
    t.join()
    ls.close()
"#;

#[test]
fn a_program_using_only_unix_sockets_udp_and_loopback_sees_no_difference() {
    let Some(_root) = common::root::shared() else { return };
    let hosts = EtranHosts::first_only("shim-local", etran::testbed::Spec::new("", 2));
    let h1 = hosts.ns(1);
    let daemon = &hosts.daemons[0];
    let plain =
        Command::new("ip").args(["netns", "exec", &h1, PYTHON, "-c", LOCAL_ONLY]).output().unwrap();
    let shimmed = etran_run(&h1, &daemon.sock, &[PYTHON, "-c", LOCAL_ONLY]).output().unwrap();
    assert!(plain.status.success(), "{}", text(&plain));
    assert_eq!(text(&shimmed), text(&plain), "{}", daemon.log());
}

#[test]
fn etran_run_of_a_static_binary_says_so_in_one_line_and_runs_nothing() {
    // The etran binary itself is statically linked.
    let out =
        Command::new(etran_bin()).args(["run", "--", etran_bin(), "--version"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty(), "{}", text(&out));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is statically linked") && err.contains("cannot run over eTran"), "{err}");
}
