//! `etran run -- CMD`: unmodified programs over eTran through the POSIX shim, on a testbed whose
//! first host runs etran (`etran up`, a daemon) and whose second is plain Linux: a python3
//! echo server (socketserver: poll, accept, a thread per connection, recv, sendall, shutdown)
//! serving Linux clients byte-exact; curl downloading from Linux's `python3 -m http.server`,
//! the body checked by hash; a program using only Unix sockets, UDP and loopback TCP printing
//! exactly what it prints without the shim; a static binary refused in one line. Needs root
//! (the static binary's refusal does not), python3 and curl. The same echo server written
//! with asyncio (epoll with eTran and kernel descriptors in one set) too.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{cli::etran_bin, daemon::EtranHosts, KillOnDrop};

/// Debian's python3 (PATH may hold a wrapper script first).
pub(crate) const PYTHON: &str = "/usr/bin/python3";

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

/// `conns` clients at once, each reading `banner` bytes of a banner first (argv, optional),
/// then sending `n` random bytes (its own seed) while reading the echo, checking both byte for
/// byte.
pub(crate) const ECHO_CLIENT: &str = r#"
import random, socket, sys, threading
host, port, conns, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
banner = int(sys.argv[5]) if len(sys.argv) > 5 else 0
BANNER = bytes(range(256)) * 1200
results = [None] * conns
def one(i):
    data = random.Random(i).randbytes(n)
    s = socket.create_connection((host, port), timeout=60)
    head = bytearray()
    while len(head) < banner:
        b = s.recv(min(1 << 16, banner - len(head)))
        if not b:
            break
        head += b
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
    if bytes(head) != BANNER[:banner]:
        results[i] = "bad banner: %d of %d bytes" % (len(head), banner)
    else:
        results[i] = "ok" if bytes(got) == data else "bad %d of %d bytes" % (len(got), n)
ts = [threading.Thread(target=one, args=(i,)) for i in range(conns)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print(" ".join(results), flush=True)
"#;

/// Runs `cmd` under `etran run` in namespace `ns`, with the daemon at `sock`.
pub(crate) fn etran_run(ns: &str, sock: &std::path::Path, cmd: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, etran_bin(), "run", "--daemon-socket"]).arg(sock).arg("--");
    c.args(cmd);
    c
}

/// Starts the server `cmd` (an `etran_run`) and waits for its first line, "listening".
pub(crate) fn start_server(
    mut cmd: Command,
    daemon: &common::daemon::Daemon,
) -> (KillOnDrop, BufReader<std::process::ChildStdout>) {
    let mut server = KillOnDrop::spawn(cmd.stdout(Stdio::piped())).expect("etran run");
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "listening", "the server did not start: {}", daemon.log());
    (server, out)
}

/// How many apps registered with the daemon so far (each process under `etran run` that
/// used eTran is one).
pub(crate) fn registrations(log: &str) -> usize {
    log.lines().filter(|l| l.contains("app session") && l.contains(" registered: ")).count()
}

/// The daemon's lines for connections established and closed.
pub(crate) fn conn_lines(log: &str) -> (usize, usize) {
    let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    (count(" established (handle "), count(" closed (handle "))
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "status {}, stdout {:?}, stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The same server with asyncio (non-blocking sockets in an epoll set).
const ASYNC_ECHO_SERVER: &str = r#"
import asyncio, sys
port, conns = int(sys.argv[1]), int(sys.argv[2])
async def main():
    done = 0
    finished = asyncio.Event()
    async def handle(r, w):
        nonlocal done
        while True:
            b = await r.read(65536)
            if not b:
                break
            w.write(b)
            await w.drain()
        w.close()
        await w.wait_closed()
        done += 1
        if done == conns:
            finished.set()
    srv = await asyncio.start_server(handle, "0.0.0.0", port)
    print("listening", flush=True)
    await finished.wait()
    srv.close()
    await srv.wait_closed()
    print("served", done, flush=True)
asyncio.run(main())
"#;

/// Runs `server` (an echo server script taking its port and the connections to serve) under
/// `etran run` on host 1; Linux clients on host 2 check their echoes byte for byte; the server
/// must stop by itself, every connection through eTran and closed.
fn echo_server_serves_linux_clients(name: &str, server: &str) {
    let hosts = EtranHosts::first_only(name, etran::testbed::Spec::new("", 2));
    let (h1, h2) = (hosts.ns(1), hosts.ns(2));
    let ip1 = hosts.tb.host(1).ip.to_string();
    let daemon = &hosts.daemons[0];
    let before = registrations(&daemon.log());
    const CONNS: usize = 3;
    let cmd = etran_run(&h1, &daemon.sock, &[PYTHON, "-c", server, "7000", "3"]);
    let (mut server, mut out) = start_server(cmd, daemon);

    let client = Command::new("ip")
        .args(["netns", "exec", &h2, PYTHON, "-c", ECHO_CLIENT, &ip1, "7000"])
        .args([&CONNS.to_string(), "1000000"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&client.stdout);
    assert_eq!(said.trim(), ["ok"; CONNS].join(" "), "{}: {}", text(&client), daemon.log());

    stops_having_served(&mut server, &mut out, daemon, CONNS);
    let log = daemon.log();
    assert_eq!(registrations(&log) - before, 1, "one app: {log}");
    assert_eq!(conn_lines(&log), (CONNS, CONNS), "every connection through eTran, closed: {log}");
}

/// The echo server stops by itself within 20 s, saying it served `conns` connections.
pub(crate) fn stops_having_served(
    server: &mut std::process::Child,
    out: &mut BufReader<std::process::ChildStdout>,
    daemon: &common::daemon::Daemon,
    conns: usize,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = server.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the server did not stop: {}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(status.success() && line.trim() == format!("served {conns}"), "{status}: {line:?}");
}

#[test]
fn a_python_echo_server_under_etran_run_serves_linux_clients_byte_exact() {
    let Some(_root) = common::root::shared() else { return };
    echo_server_serves_linux_clients("shim-echo", ECHO_SERVER);
}

#[test]
fn an_asyncio_echo_server_under_etran_run_serves_linux_clients_byte_exact() {
    let Some(_root) = common::root::shared() else { return };
    echo_server_serves_linux_clients("shim-aecho", ASYNC_ECHO_SERVER);
}

/// CPU time the process `pid` used so far, all its threads together.
pub(crate) fn cpu_time(pid: u32) -> Duration {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .sum();
    Duration::from_nanos(ns)
}

/// A Linux client that opens a connection, has one byte echoed, then keeps it open and idle
/// for `secs` seconds before closing.
const IDLE_CLIENT: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
s.sendall(b"x")
assert s.recv(1) == b"x"
print("idle", flush=True)
time.sleep(float(sys.argv[3]))
s.shutdown(socket.SHUT_WR)
assert s.recv(1) == b""
print("done", flush=True)
"#;

#[test]
fn an_idle_server_under_etran_run_with_a_connection_open_sleeps() {
    let Some(_root) = common::root::shared() else { return };
    let hosts = EtranHosts::first_only("shim-idle", etran::testbed::Spec::new("", 2));
    let (h1, h2) = (hosts.ns(1), hosts.ns(2));
    let ip1 = hosts.tb.host(1).ip.to_string();
    let daemon = &hosts.daemons[0];
    let cmd = etran_run(&h1, &daemon.sock, &[PYTHON, "-c", ECHO_SERVER, "7001", "1"]);
    let (mut server, _out) = start_server(cmd, daemon);
    let mut line = String::new();
    let mut client = KillOnDrop::spawn(
        Command::new("ip")
            .args(["netns", "exec", &h2, PYTHON, "-c", IDLE_CLIENT, &ip1, "7001", "3"])
            .stdout(Stdio::piped()),
    )
    .unwrap();
    let mut said = BufReader::new(client.stdout.take().unwrap());
    line.clear();
    said.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "idle", "{}", daemon.log());
    // The server's main thread waits in poll (socketserver's), its handler in recv.
    std::thread::sleep(Duration::from_millis(300));
    let (t0, c0) = (Instant::now(), cpu_time(server.id()));
    std::thread::sleep(Duration::from_secs(2));
    let share = (cpu_time(server.id()) - c0).as_secs_f64() / t0.elapsed().as_secs_f64();
    eprintln!("idle server under etran run: {:.2} % of a CPU", share * 100.0);
    line.clear();
    said.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done", "{}", daemon.log());
    assert!(client.wait().unwrap().success());
    assert!(server.wait().unwrap().success(), "{}", daemon.log());
    assert!(share < 0.02, "an idle server used {:.2} % of a CPU", share * 100.0);
}

/// A server that, holding an accepted connection, runs a subprocess (vfork, descriptors closed
/// in the child) and forks a child that writes on the inherited connection and leaves with
/// `os._exit` (the connection goes back to the parent, which still holds it), then echoes one
/// message (through a file, with sendfile).
const FORKING_SERVER: &str = r#"
import os, socket, subprocess, sys
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", int(sys.argv[1])))
ls.listen()
print("listening", flush=True)
c, _ = ls.accept()
subprocess.run(["/bin/true"], check=True, close_fds=True)
pid = os.fork()
if pid == 0:
    c.sendall(b"from the child;")
    os._exit(0)
_, st = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(st), flush=True)
import errno, struct, tempfile
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"dctcp")
try:
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"cubic")
    print("cubic taken", flush=True)
except OSError as e:
    print("cubic", errno.errorcode[e.errno], flush=True)
with tempfile.TemporaryFile() as f:
    f.write(c.recv(100))
    f.seek(0)
    c.sendfile(f)
import select
select.select([c], [], [], 0.3)  # a wait: the ACKs of what was sent come in
info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
rtt, rttvar = struct.unpack_from("II", info, 68)
print("rtt", rtt > 0, rttvar > 0, flush=True)
c.close()
"#;

#[test]
fn a_connection_goes_to_a_forked_child_and_back_to_its_parent() {
    let Some(_root) = common::root::shared() else { return };
    let hosts = EtranHosts::first_only("shim-fork", etran::testbed::Spec::new("", 2));
    let (h1, h2) = (hosts.ns(1), hosts.ns(2));
    let ip1 = hosts.tb.host(1).ip.to_string();
    let daemon = &hosts.daemons[0];
    let cmd = etran_run(&h1, &daemon.sock, &[PYTHON, "-c", FORKING_SERVER, "7002"]);
    let (mut server, mut out) = start_server(cmd, daemon);
    let mut line = String::new();
    let client = Command::new("ip")
        .args(["netns", "exec", &h2, PYTHON, "-c"])
        .arg(
            "import socket,sys,time\n\
             s=socket.create_connection((sys.argv[1],7002),timeout=30)\n\
             time.sleep(0.5); s.sendall(b'still mine')\n\
             got=b''\n\
             while True:\n    b=s.recv(100)\n    got+=b\n    if not b: break\n\
             print(got)",
        )
        .arg(&ip1)
        .output()
        .unwrap();
    let status = server.wait().unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "child 0", "{status}");
    // TCP_CONGESTION names the algorithm egress runs, refuses others as Linux refuses an
    // unknown one; TCP_INFO has the RTT and its variation (sampled by the parent and the
    // child: the estimate moves with the stream).
    for want in ["cubic ENOENT", "rtt True True"] {
        line.clear();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), want, "{status}");
    }
    assert_eq!(
        String::from_utf8_lossy(&client.stdout),
        "b'from the child;still mine'\n",
        "{}: {}",
        text(&client),
        daemon.log()
    );
    assert!(status.success(), "{status}");
    assert_eq!(conn_lines(&daemon.log()), (1, 1), "{}", daemon.log());
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
    let server = KillOnDrop::spawn(
        Command::new("ip")
            .args(["netns", "exec", &h2, PYTHON, "-m", "http.server", "8000", "--bind", &ip2])
            .arg("--directory")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
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
    drop(server);
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

/// A server that duplicates accepted connections: `dup` (the copy serves on after the original
/// closes), `F_DUPFD_CLOEXEC`, and `dup2` onto a second connection's descriptor (which closes
/// that connection: its client sees the end), then serves the first through it.
const DUP_SERVER: &str = r#"
import fcntl, os, socket, sys
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", int(sys.argv[1])))
ls.listen()
print("listening", flush=True)
a, _ = ls.accept()
b, _ = ls.accept()
d = os.dup(a.fileno())
a.close()
os.write(d, b"dup " + os.read(d, 100))
e = fcntl.fcntl(d, fcntl.F_DUPFD_CLOEXEC, 100)
assert e >= 100 and fcntl.fcntl(e, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
os.close(d)
os.write(e, b"fcntl " + os.read(e, 100))
bn = b.detach()
assert os.dup2(e, bn) == bn
os.close(e)
os.write(bn, b"dup2 " + os.read(bn, 100))
os.close(bn)
print("done", flush=True)
"#;

/// Connects A, then B; talks to A through each duplicate; B sees its end when `dup2` replaces
/// its descriptor; A's end comes when the last duplicate closes.
const DUP_CLIENT: &str = r#"
import socket, sys, time
addr = (sys.argv[1], int(sys.argv[2]))
a = socket.create_connection(addr, timeout=30)
time.sleep(0.3)
b = socket.create_connection(addr, timeout=30)
out = []
for m in (b"1", b"2"):
    a.sendall(m)
    out.append(a.recv(100))
out.append(b.recv(100))
a.sendall(b"3")
out.append(a.recv(100))
out.append(a.recv(100))
print(out, flush=True)
"#;

#[test]
fn duplicated_etran_sockets_share_their_connection_until_the_last_closes() {
    let Some(_root) = common::root::shared() else { return };
    let hosts = EtranHosts::first_only("shim-dup", etran::testbed::Spec::new("", 2));
    let (h1, h2) = (hosts.ns(1), hosts.ns(2));
    let ip1 = hosts.tb.host(1).ip.to_string();
    let daemon = &hosts.daemons[0];
    let cmd = etran_run(&h1, &daemon.sock, &[PYTHON, "-c", DUP_SERVER, "7003"]);
    let (mut server, mut out) = start_server(cmd, daemon);
    let client = Command::new("ip")
        .args(["netns", "exec", &h2, PYTHON, "-c", DUP_CLIENT, &ip1, "7003"])
        .output()
        .unwrap();
    let status = server.wait().unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(status.success() && line.trim() == "done", "{status}");
    assert_eq!(
        String::from_utf8_lossy(&client.stdout).trim(),
        "[b'dup 1', b'fcntl 2', b'', b'dup2 3', b'']",
        "{}: {}",
        text(&client),
        daemon.log()
    );
    assert_eq!(conn_lines(&daemon.log()), (2, 2), "both through eTran, closed: {}", daemon.log());
}
