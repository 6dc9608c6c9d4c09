//! Connections used across `fork` under `etran run`: an unmodified Python
//! `socketserver.ForkingTCPServer` on host 1 (the parent accepts, forks and closes its copy;
//! the child serves the connection and exits with `os._exit`), Linux clients on host 2, every
//! byte checked. Variants: the parent writes a 200 KB banner before it forks and the child
//! the rest (the stream's unsent and unacknowledged bytes move with it); a child that exits
//! with `os._exit` without closing (the shim's `_exit` closes it). Then: grandchildren serving
//! what their parents inherited; holders killed with SIGKILL (as on Linux: the other holder
//! keeps the connection, both directions, and the last one's death closes it with a FIN;
//! nothing is left in the datapath); a connect in progress at fork (the same outcome as
//! Linux's); a connection passed over a Unix socket (the receiver gets an unconnected kernel
//! socket, as documented); a fork and a `sendmsg` while a handshake hangs (each returns within
//! about a second); blocking calls on a connecting socket; how often a child's waits ask the
//! daemon about a socket its parent may connect; a short send after a wait leaving before a
//! blocking `recv` sleeps, without busy polling. Needs root, python3 and strace.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::daemon::{port_links, tcp_conn_count, EtranHosts};

use crate::shim::{
    conn_lines, etran_run, registrations, start_server, stops_having_served, text, ECHO_CLIENT,
    PYTHON,
};

/// ForkingTCPServer echoing `conns` connections (argv: port, conns, mode), then waiting for
/// its children. `banner`: the parent writes the banner's first 200 KB before it forks, the
/// child the rest before it echoes; `exit`: the child leaves with `os._exit` without closing.
const FORKING_SERVER: &str = r#"
import os, socket, socketserver, sys
port, conns, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
BANNER = bytes(range(256)) * 1200
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        if mode == "banner":
            self.request.sendall(BANNER[204800:])
        while True:
            b = self.request.recv(65536)
            if not b:
                break
            self.request.sendall(b)
        if mode == "exit":
            os._exit(0)
class Server(socketserver.ForkingTCPServer):
    allow_reuse_address = True
    def process_request(self, request, client_address):
        if mode == "banner":
            request.sendall(BANNER[:204800])
        super().process_request(request, client_address)
srv = Server(("0.0.0.0", port), Echo)
print("listening", flush=True)
for _ in range(conns):
    srv.handle_request()
srv.server_close()
print("served", conns, flush=True)
"#;

const CONNS: usize = 3;

/// A testbed whose host 1 runs etran (a daemon) and whose host 2 is plain Linux.
struct Bed {
    hosts: EtranHosts,
    h1: String,
    h2: String,
}

impl Bed {
    fn new(name: &str) -> Bed {
        let hosts = EtranHosts::first_only(name, etran::testbed::Spec::new("", 2));
        let (h1, h2) = (hosts.ns(1), hosts.ns(2));
        Bed { hosts, h1, h2 }
    }

    /// Host `n`'s address.
    fn ip(&self, n: u8) -> String {
        self.hosts.tb.host(n).ip.to_string()
    }

    fn daemon(&self) -> &common::daemon::Daemon {
        &self.hosts.daemons[0]
    }
}

/// Python `script` with `args` in namespace `ns`, on Linux's sockets.
fn python_in(ns: &str, script: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, PYTHON, "-c", script]).args(args);
    c
}

/// The next `n` lines a server printed, trimmed.
fn next_lines(out: &mut impl std::io::BufRead, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for _ in 0..n {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        lines.push(line.trim().to_string());
    }
    lines
}
const BYTES: usize = 300_000;

fn forking_server_serves(name: &str, port: u16, mode: &str, banner: usize) {
    serves_forking(name, port, FORKING_SERVER, mode, banner);
}

/// Runs `server` (argv: port, conns, mode) under `etran run` on host 1 against `CONNS` Linux
/// echo clients on host 2 (reading `banner` bytes of the banner first): every byte echoed,
/// every connection through eTran and closed, none reset.
fn serves_forking(name: &str, port: u16, server: &str, mode: &str, banner: usize) {
    let bed = Bed::new(name);
    let daemon = bed.daemon();
    let port = port.to_string();
    let cmd = etran_run(&bed.h1, &daemon.sock, &[PYTHON, "-c", server, &port, "3", mode]);
    let (mut server, mut out) = start_server(cmd, daemon);
    let (conns, bytes, banner) = (CONNS.to_string(), BYTES.to_string(), banner.to_string());
    let args = [bed.ip(1), port, conns, bytes, banner];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let client = python_in(&bed.h2, ECHO_CLIENT, &args).output().unwrap();
    let said = String::from_utf8_lossy(&client.stdout);
    assert_eq!(said.trim(), ["ok"; CONNS].join(" "), "{}: {}", text(&client), daemon.log());
    stops_having_served(&mut server, &mut out, daemon, CONNS);
    // The children's last messages reach the daemon as they exit: its log may lag a little.
    let deadline = Instant::now() + Duration::from_secs(5);
    while conn_lines(&daemon.log()) != (CONNS, CONNS) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = daemon.log();
    assert_eq!(conn_lines(&log), (CONNS, CONNS), "every connection through eTran, closed: {log}");
    assert!(!log.contains("reset (handle"), "no connection was reset: {log}");
}

#[test]
fn a_forking_tcp_server_under_etran_run_echoes_byte_exact() {
    let Some(_root) = common::root::shared() else { return };
    forking_server_serves("fork-echo", 7010, "echo", 0);
}

#[test]
fn a_banner_written_before_fork_and_finished_by_the_child_arrives_whole() {
    let Some(_root) = common::root::shared() else { return };
    forking_server_serves("fork-banner", 7011, "banner", 307_200);
}

#[test]
fn a_child_leaving_with_os_exit_closes_its_connection() {
    let Some(_root) = common::root::shared() else { return };
    forking_server_serves("fork-exit", 7012, "exit", 0);
}

/// A server whose children fork again (argv: port, conns, mode): the parent accepts, forks and
/// closes its copy; the child forks a grandchild and closes its copy; the grandchild writes
/// the banner's first 1000 bytes and echoes. `used`: the child writes the banner itself before
/// it forks (it has the stream then) and waits for the grandchild; `daemon`: the child never
/// uses the connection and leaves at once with `os._exit` (a daemon's double fork).
const GRANDCHILD_SERVER: &str = r#"
import os, socket, sys
port, conns, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
BANNER = bytes(range(256)) * 1200
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port))
srv.listen(8)
print("listening", flush=True)
kids = []
for _ in range(conns):
    c, _ = srv.accept()
    pid = os.fork()
    if pid == 0:
        srv.close()
        if mode == "used":
            c.sendall(BANNER[:1000])
        g = os.fork()
        if g == 0:
            if mode != "used":
                c.sendall(BANNER[:1000])
            while True:
                b = c.recv(65536)
                if not b:
                    break
                c.sendall(b)
            c.close()
            os._exit(0)
        if mode == "daemon":
            os._exit(0)
        c.close()
        _, st = os.waitpid(g, 0)
        os._exit(os.waitstatus_to_exitcode(st))
    c.close()
    kids.append(pid)
for pid in kids:
    _, st = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(st) == 0, st
print("served", conns, flush=True)
"#;

#[test]
fn a_grandchild_serves_a_connection_its_parent_used_before_forking() {
    let Some(_root) = common::root::shared() else { return };
    serves_forking("fork-grand-used", 7013, GRANDCHILD_SERVER, "used", 1000);
}

#[test]
fn a_grandchild_serves_a_connection_its_parent_never_used_and_left_at_once() {
    let Some(_root) = common::root::shared() else { return };
    serves_forking("fork-grand-daemon", 7014, GRANDCHILD_SERVER, "daemon", 1000);
}

/// Children killed holding a connection (argv: port), one connection per mode: `adopted`,
/// the parent closed its copy and the child, which wrote to the connection (it has the
/// stream), kills itself; `parked`, the parent closed its copy (the stream waits at the
/// daemon) and the child kills itself without using it; `both`, the parent keeps its copy and
/// waits while the child writes and kills itself, then writes and closes; `unread`, as `parked`
/// with bytes the client sent unread (a RST then, as Linux's close). Then it waits for a line on
/// stdin, so that the test can look at the datapath while it lives.
const KILLED_SERVER: &str = r#"
import errno, os, select, signal, socket, sys
port = int(sys.argv[1])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port))
srv.listen(8)
print("listening", flush=True)
for mode in ("adopted", "parked", "both", "unread"):
    c, _ = srv.accept()
    if mode == "unread":
        select.select([c], [], [], 10)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        if mode in ("parked", "unread"):
            os.read(r, 1)
        else:
            c.sendall(b"from the child")
        os.kill(os.getpid(), signal.SIGKILL)
    if mode != "both":
        c.close()
    os.write(w, b"x")
    _, st = os.waitpid(pid, 0)
    line = [mode, str(os.waitstatus_to_exitcode(st))]
    if mode == "both":
        try:
            c.sendall(b" and the parent")
            line.append("sent")
        except OSError as e:
            line.append(errno.errorcode[e.errno])
        c.close()
    os.close(r)
    os.close(w)
    print(" ".join(line), flush=True)
print("done", flush=True)
sys.stdin.readline()
"#;

/// The Linux client of [`KILLED_SERVER`]: one connection per mode, read until the end; says
/// how it ended (`rst`, `fin`, `hang`), what it read, and whether it ended within 1.5 s.
const KILLED_CLIENT: &str = r#"
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
for mode in ("adopted", "parked", "both", "unread"):
    s = socket.create_connection((host, port), timeout=10)
    if mode == "unread":
        s.sendall(b"never read")
    t = time.monotonic()
    got = b""
    try:
        while True:
            b = s.recv(100)
            if not b:
                end = "fin"
                break
            got += b
    except ConnectionResetError:
        end = "rst"
    except socket.timeout:
        end = "hang"
    print(mode, end, repr(got), time.monotonic() - t < 1.5, flush=True)
    s.close()
"#;

#[test]
fn a_holder_killed_with_sigkill_closes_as_on_linux_and_leaves_nothing() {
    use std::io::Write;
    let Some(_root) = common::root::shared() else { return };
    let bed = Bed::new("fork-killed");
    let (h1, daemon) = (&bed.h1, bed.daemon());
    let ports_before = port_links(h1).len();
    let mut cmd = etran_run(h1, &daemon.sock, &[PYTHON, "-c", KILLED_SERVER, "7015"]);
    cmd.stdin(std::process::Stdio::piped());
    let (mut server, mut out) = start_server(cmd, daemon);
    let client = python_in(&bed.h2, KILLED_CLIENT, &[&bed.ip(1), "7015"]).output().unwrap();
    let said = String::from_utf8_lossy(&client.stdout);
    // As on Linux: the last descriptor going away closes with a FIN, and a connection the
    // killed child had stays the parent's.
    let want = "adopted fin b'from the child' True\nparked fin b'' True\n\
                both fin b'from the child and the parent' True\nunread rst b'' True\n";
    assert_eq!(said, want, "{}: {}", text(&client), daemon.log());
    let lines = next_lines(&mut out, 5);
    let want = ["adopted -9", "parked -9", "both -9 sent", "unread -9", "done"];
    assert_eq!(lines, want, "{}", daemon.log());
    // While the server lives: no connection left in the datapath, the children's ports gone
    // (the server's own is the one left), each killed child's session closed.
    let log = daemon.log();
    assert_eq!(tcp_conn_count(h1, "eth0"), 0, "{log}");
    let apps = registrations(&log);
    let closed =
        log.lines().filter(|l| l.contains("app session") && l.contains(" closed: port ")).count();
    assert_eq!(apps - closed, 1, "only the server's session is left: {log}");
    // Compat: the server's app port is a veth pair (native: a socket on the NIC, no link).
    let port_links_each = if common::on_native() { 0 } else { 2 };
    assert_eq!(port_links(h1).len() - ports_before, port_links_each, "one app port: {log}");
    server.stdin.take().unwrap().write_all(b"\n").unwrap();
    let status = server.wait().unwrap();
    assert!(status.success(), "{status}");
    // The daemon closes the session when it reads the link's end: a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    while port_links(h1).len() != ports_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(port_links(h1).len(), ports_before, "{}", daemon.log());
}

/// A child that has the stream (it answered the client's first line) is killed; the parent,
/// which kept its copy, carries on in both directions (argv: port): it says so, echoes the
/// client's next line in capitals and closes.
const KEPT_SERVER: &str = r#"
import os, signal, socket, sys
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("listening", flush=True)
c, _ = srv.accept()
pid = os.fork()
if pid == 0:
    c.sendall(c.recv(100) + b" from the child")
    os.kill(os.getpid(), signal.SIGKILL)
_, st = os.waitpid(pid, 0)
c.sendall(b"the parent here")
got = b""
while not got.endswith(b"."):
    got += c.recv(100)
c.sendall(got.upper())
c.close()
print("child", os.waitstatus_to_exitcode(st), "parent", got.decode(), flush=True)
"#;

/// The Linux client of [`KEPT_SERVER`] (argv: host, port): what it read at each step.
const KEPT_CLIENT: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
def read(n):
    got = b""
    while len(got) < n:
        b = s.recv(n - len(got))
        if not b:
            break
        got += b
    return got
s.sendall(b"hello")
print(read(20))
print(read(15))
s.sendall(b"and back to you.")
print(read(16))
print(s.recv(100))
"#;

#[test]
fn a_holder_killed_with_the_stream_leaves_the_connection_to_the_other_holder() {
    let Some(_root) = common::root::shared() else { return };
    let bed = Bed::new("fork-kept");
    let (h1, daemon) = (&bed.h1, bed.daemon());
    let cmd = etran_run(h1, &daemon.sock, &[PYTHON, "-c", KEPT_SERVER, "7019"]);
    let (mut server, mut out) = start_server(cmd, daemon);
    let client = python_in(&bed.h2, KEPT_CLIENT, &[&bed.ip(1), "7019"]).output().unwrap();
    let said = String::from_utf8_lossy(&client.stdout);
    let want = "b'hello from the child'\nb'the parent here'\nb'AND BACK TO YOU.'\nb''\n";
    assert_eq!(said, want, "{}: {}", text(&client), daemon.log());
    assert_eq!(next_lines(&mut out, 1), ["child -9 parent and back to you."]);
    assert!(server.wait().unwrap().success());
    let log = daemon.log();
    assert!(log.contains("kept for the other holders"), "{log}");
    assert!(!log.contains("reset (handle"), "not reset: {log}");
}

/// A non-blocking connect still in progress at fork (argv: host, open port, closed port): the
/// child waits for it and echoes through it, then the parent; a refused one says so in the
/// child. The same lines as on Linux's sockets.
const CONNECT_AT_FORK: &str = r#"
import errno, os, select, socket, sys
host, port, closed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def pending(p):
    s = socket.socket()
    s.setblocking(False)
    e = s.connect_ex((host, p))
    print("connect", errno.errorcode.get(e, e), flush=True)
    return s
s = pending(port)
pid = os.fork()
if pid == 0:
    select.select([], [s], [], 10)
    s.setblocking(True)
    s.sendall(b"from the child")
    print("child", s.recv(100), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
s.setblocking(True)
s.sendall(b"and the parent")
print("parent", s.recv(100), flush=True)
s.close()
r = pending(closed)
pid = os.fork()
if pid == 0:
    select.select([], [r], [], 10)
    e = r.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    print("child", errno.errorcode.get(e, e), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
r.close()
"#;

/// Connects racing a fork (argv: host, port of a first echo server, port of a second): one a
/// thread starts as the main thread forks (it may start before or after the fork), one the
/// parent starts after the fork on a socket it opened before. Each time the child waits for
/// the parent's word that the connect is done, then echoes through its copy of the socket;
/// then the parent does. The same lines as on Linux's sockets: the child's copy is the same
/// socket, connected.
const CONNECT_RACING_FORK: &str = r#"
import os, socket, sys, threading
host, ports = sys.argv[1], [int(p) for p in sys.argv[2:4]]
for how, port in zip(("thread", "after"), ports):
    s = socket.socket()
    t = threading.Thread(target=s.connect, args=((host, port),))
    if how == "thread":
        t.start()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.read(r, 1)
        s.sendall(b"from the child")
        print(how, "child", s.recv(100), flush=True)
        os._exit(0)
    if how == "after":
        t.start()
    t.join()
    os.write(w, b"x")
    os.waitpid(pid, 0)
    s.sendall(b"and the parent")
    print(how, "parent", s.recv(100), flush=True)
    s.close()
"#;

#[test]
fn a_connect_racing_a_fork_is_the_childs_too_as_on_linux() {
    let Some(_root) = common::root::shared() else { return };
    let bed = Bed::new("fork-race");
    let want = "thread child b'from the child'\nthread parent b'and the parent'\n\
                after child b'from the child'\nafter parent b'and the parent'\n";
    let log = same_as_linux(&bed, CONNECT_RACING_FORK, &["7020", "7021"], &["7020", "7021"], want);
    assert_eq!(conn_lines(&log).0, 2, "both through eTran: {log}");
    assert!(!log.contains("reset (handle"), "not reset: {log}");
}

/// A connect the parent starts after the fork on a socket the child holds too (argv: host, open
/// port, closed port, another open port): the child, told that the connect began, waits until
/// the socket is writable and echoes through it (then the parent does), or says how it failed;
/// the parent sleeps a while before it waits for the connect itself, or (`close`) closes its
/// copy at once and waits for the child. The same lines as on Linux's sockets: the child's copy
/// is the same socket, connecting with the parent's.
const CONNECT_AFTER_FORK: &str = r#"
import errno, os, select, socket, sys, time
host = sys.argv[1]
for how, port in zip(("wait", "refused", "close"), map(int, sys.argv[2:5])):
    s = socket.socket()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.read(r, 1)
        select.select([], [s], [], 10)
        e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if e:
            print(how, "child", errno.errorcode.get(e, e), flush=True)
        else:
            s.setblocking(True)
            s.sendall(b"from the child")
            print(how, "child", s.recv(100), flush=True)
        os._exit(0)
    s.setblocking(False)
    e = s.connect_ex((host, port))
    print(how, "connect", errno.errorcode.get(e, e), flush=True)
    os.write(w, b"x")
    if how == "close":
        s.close()
        os.waitpid(pid, 0)
        continue
    time.sleep(0.3)
    select.select([], [s], [], 10)
    os.waitpid(pid, 0)
    if how == "wait":
        s.setblocking(True)
        s.sendall(b"and the parent")
        print(how, "parent", s.recv(100), flush=True)
    s.close()
"#;

#[test]
fn a_connect_the_parent_starts_after_fork_is_waited_for_by_the_child_as_on_linux() {
    let Some(_root) = common::root::shared() else { return };
    let bed = Bed::new("fork-connect-after");
    let want = "wait connect EINPROGRESS\nwait child b'from the child'\n\
                wait parent b'and the parent'\nrefused connect EINPROGRESS\n\
                refused child ECONNREFUSED\nclose connect EINPROGRESS\n\
                close child b'from the child'\n";
    let log =
        same_as_linux(&bed, CONNECT_AFTER_FORK, &["7026", "7027", "7028"], &["7026", "7028"], want);
    assert_eq!(conn_lines(&log), (2, 2), "through eTran, closed: {log}");
    assert!(!log.contains("reset (handle"), "not reset: {log}");
}

/// A Linux echo server for one connection (argv: port).
const ONE_ECHO: &str = r#"
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(1)
print("listening", flush=True)
c, _ = srv.accept()
while True:
    b = c.recv(100)
    if not b:
        break
    c.sendall(b)
"#;

/// Runs `script` on host 1 (argv: host 2's address, then `ports`), on Linux's sockets and under
/// `etran run`, against a Linux echo server for one connection ([`ONE_ECHO`]) on each of
/// `echo_ports` of host 2: both print `want`, every echo server ends well. Returns the
/// daemon's log.
fn same_as_linux(
    bed: &Bed,
    script: &str,
    ports: &[&str],
    echo_ports: &[&str],
    want: &str,
) -> String {
    let server = LinuxServer { script: ONE_ECHO, args: &[], ends: true };
    same_as_linux_against(bed, server, script, ports, echo_ports, want)
}

/// A Linux server on host 2 for [`same_as_linux_against`]: `script` (argv: its port, then
/// `args`), which must end well when `ends`, and is killed otherwise.
struct LinuxServer<'a> {
    script: &'a str,
    args: &'a [&'a str],
    ends: bool,
}

/// [`same_as_linux`] against `server` on each of `server_ports`.
fn same_as_linux_against(
    bed: &Bed,
    server: LinuxServer<'_>,
    script: &str,
    ports: &[&str],
    server_ports: &[&str],
    want: &str,
) -> String {
    let (ip2, daemon) = (bed.ip(2), bed.daemon());
    let args = [&[ip2.as_str()], ports].concat();
    for etran in [false, true] {
        let mut servers: Vec<_> =
            server_ports.iter().map(|port| linux_server(bed, &server, port)).collect();
        let mut cmd = if etran {
            let argv = [&[PYTHON, "-c", script], &args[..]].concat();
            etran_run(&bed.h1, &daemon.sock, &argv)
        } else {
            python_in(&bed.h1, script, &args)
        };
        // A minute: the script's own waits are 10 s at most.
        let out =
            common::cli::output_within(&mut cmd, Duration::from_secs(60)).unwrap_or_else(|e| {
                let at = common::blocked_in(&[daemon.child.as_ref().unwrap().id()]);
                panic!("etran {etran}: {e}; the daemon's threads in:\n{at}{}", daemon.log())
            });
        if !server.ends {
            servers.iter_mut().for_each(|s| drop(s.kill()));
        }
        let said = String::from_utf8_lossy(&out.stdout);
        assert_eq!(said, want, "etran {etran}: {}: {}", text(&out), daemon.log());
        for mut srv in servers {
            let status = srv.wait().unwrap();
            assert!(!server.ends || status.success(), "etran {etran}: the server: {status}");
        }
    }
    daemon.log()
}

/// `server` on host 2, listening on `port`.
fn linux_server(bed: &Bed, server: &LinuxServer<'_>, port: &str) -> common::KillOnDrop {
    let argv = [&[port], server.args].concat();
    let mut srv = common::KillOnDrop::spawn(
        python_in(&bed.h2, server.script, &argv).stdout(std::process::Stdio::piped()),
    )
    .unwrap();
    let mut out = std::io::BufReader::new(srv.stdout.take().unwrap());
    assert_eq!(next_lines(&mut out, 1), ["listening"]);
    srv
}

#[test]
fn a_connect_in_progress_at_fork_ends_as_on_linux_in_the_child_and_the_parent() {
    let Some(_root) = common::root::shared() else { return };
    let bed = Bed::new("fork-connect");
    let want = "connect EINPROGRESS\nchild b'from the child'\nparent b'and the parent'\n\
                connect EINPROGRESS\nchild ECONNREFUSED\n";
    let log = same_as_linux(&bed, CONNECT_AT_FORK, &["7016", "7017"], &["7016"], want);
    assert_eq!(conn_lines(&log), (1, 1), "through eTran, closed: {log}");
}

/// An accepted connection passed over a Unix socket (argv: port) to another process under
/// the shim, which serves it: the sender passes the descriptor to itself first (a duplicate)
/// and writes a first line through the copy, then passes it on and closes its own at once;
/// the receiver reads the client's line and answers. `plain` (argv 2): the receiver runs
/// without the shim, and tries the kernel socket it received.
const PASSING_SERVER: &str = r#"
import os, socket, subprocess, sys
RECEIVER = """
import socket, sys
u = socket.socket(fileno=int(sys.argv[1]))
_, fds, _, _ = socket.recv_fds(u, 10, 1)
s = socket.socket(fileno=fds[0])
print("receiver peer", s.getpeername()[0], flush=True)
got = b""
while not got.endswith(b"\\n"):
    got += s.recv(100)
s.sendall(b"receiver got " + got)
s.close()
"""
PLAIN = """
import errno, socket, sys
u = socket.socket(fileno=int(sys.argv[1]))
_, fds, _, _ = socket.recv_fds(u, 10, 1)
s = socket.socket(fileno=fds[0])
out = []
for what, call in (("recv", lambda: s.recv(10)), ("send", lambda: s.send(b"x")),
                   ("peer", s.getpeername)):
    try:
        out.append("%s %r" % (what, call()))
    except OSError as e:
        out.append("%s %s" % (what, errno.errorcode[e.errno]))
print("receiver", ", ".join(out), flush=True)
"""
env = dict(os.environ)
if sys.argv[2] == "plain":
    RECEIVER = PLAIN
    del env["LD_PRELOAD"]
a, b = socket.socketpair()
rx = subprocess.Popen([sys.executable, "-c", RECEIVER, str(b.fileno())], pass_fds=[b.fileno()],
                      env=env)
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("listening", flush=True)
c, _ = srv.accept()
socket.send_fds(b, [b"self"], [c.fileno()])
_, fds, _, _ = socket.recv_fds(a, 10, 1)
d = socket.socket(fileno=fds[0])
d.sendall(b"from the sender;")
d.close()
socket.send_fds(a, [b"conn"], [c.fileno()])
c.close()
rx.wait()
print("passed", rx.returncode, flush=True)
"#;

/// A Linux client (argv: host, port) sending a line, then printing all it reads (and `rst`
/// if a reset ended it).
const LINE_CLIENT: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
s.sendall(b"hello\n")
got, end = b"", ""
try:
    while True:
        b = s.recv(100)
        got += b
        if not b:
            break
except ConnectionResetError:
    end = " rst"
print(repr(got) + end)
"#;

#[test]
fn a_connection_passed_over_a_unix_socket_is_served_by_the_receiver() {
    let Some(_root) = common::root::shared() else { return };
    let bed = Bed::new("fork-passed");
    let daemon = bed.daemon();
    let cmd = etran_run(&bed.h1, &daemon.sock, &[PYTHON, "-c", PASSING_SERVER, "7018", "shim"]);
    let (mut server, mut out) = start_server(cmd, daemon);
    let client = python_in(&bed.h2, LINE_CLIENT, &[&bed.ip(1), "7018"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&client.stdout),
        "b'from the sender;receiver got hello\\n'\n",
        "{}: {}",
        text(&client),
        daemon.log()
    );
    let lines = next_lines(&mut out, 2);
    let peer = format!("receiver peer {}", bed.ip(2));
    assert_eq!(lines, [peer.as_str(), "passed 0"], "{}", daemon.log());
    assert!(server.wait().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while conn_lines(&daemon.log()) != (1, 1) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = daemon.log();
    assert_eq!(conn_lines(&log), (1, 1), "through eTran, closed: {log}");
    assert!(!log.contains("reset (handle"), "not reset: {log}");
}

#[test]
fn a_connection_passed_to_a_process_outside_the_shim_is_unconnected_there_and_reset() {
    let Some(_root) = common::root::shared() else { return };
    let bed = Bed::new("fork-passed-plain");
    let daemon = bed.daemon();
    let cmd = etran_run(&bed.h1, &daemon.sock, &[PYTHON, "-c", PASSING_SERVER, "7019", "plain"]);
    let (mut server, mut out) = start_server(cmd, daemon);
    let started = Instant::now();
    let client = python_in(&bed.h2, LINE_CLIENT, &[&bed.ip(1), "7019"]).output().unwrap();
    let took = started.elapsed();
    let said = String::from_utf8_lossy(&client.stdout);
    assert_eq!(said, "b'from the sender;' rst\n", "{}: {}", text(&client), daemon.log());
    // Kept 10 s for a receiver, reset at the next housekeeping (every 5 s).
    assert!(took >= Duration::from_secs(9) && took < Duration::from_secs(20), "{took:?}");
    let lines = next_lines(&mut out, 2);
    let want = ["receiver recv ENOTCONN, send EPIPE, peer ENOTCONN", "passed 0"];
    assert_eq!(lines, want, "{}", daemon.log());
    assert!(server.wait().unwrap().success());
    assert!(daemon.log().contains("reset (handle 1)"), "{}", daemon.log());
}

/// A listener passed over a Unix socket (argv: port, conns, address): the server opens it on
/// the address, passes it to a process it starts (under the shim too), waits for its word and
/// closes its own copy; the receiver accepts `conns` connections on it and answers each
/// line (nginx-style workers, a socket-activated service).
const LISTENER_PASSING_SERVER: &str = r#"
import socket, subprocess, sys
RECEIVER = """
import socket, sys
u = socket.socket(fileno=int(sys.argv[1]))
_, fds, _, _ = socket.recv_fds(u, 10, 1)
srv = socket.socket(fileno=fds[0])
u.sendall(b"r")
for i in range(int(sys.argv[2])):
    c, _ = srv.accept()
    got = b""
    while not got.endswith(b"\\n"):
        got += c.recv(100)
    c.sendall(b"receiver %d got " % i + got)
    c.close()
print("receiver served", sys.argv[2], flush=True)
"""
port, conns, addr = int(sys.argv[1]), sys.argv[2], sys.argv[3]
a, b = socket.socketpair()
srv = socket.create_server((addr, port))
rx = subprocess.Popen([sys.executable, "-c", RECEIVER, str(b.fileno()), conns],
                      pass_fds=[b.fileno()])
socket.send_fds(a, [b"listener"], [srv.fileno()])
a.recv(1)
srv.close()
print("listening", flush=True)
print("passed", rx.wait(), flush=True)
"#;

/// Linux clients of [`LISTENER_PASSING_SERVER`] (argv: host, port, conns): one line each,
/// what came back.
const LINES_CLIENT: &str = r#"
import socket, sys
for i in range(int(sys.argv[3])):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    s.sendall(b"hello %d\n" % i)
    got = b""
    while True:
        b = s.recv(100)
        if not b:
            break
        got += b
    print(got)
"#;

#[test]
fn a_listener_passed_over_a_unix_socket_accepts_in_the_receiver() {
    let Some(_root) = common::root::shared() else { return };
    listener_passed("fork-passed-listener", "7022", |_| "0.0.0.0".to_string());
}

#[test]
fn a_listener_bound_to_one_address_passed_over_a_unix_socket_accepts_in_the_receiver() {
    let Some(_root) = common::root::shared() else { return };
    listener_passed("fork-passed-one", "7023", |bed| bed.ip(1));
}

/// [`LISTENER_PASSING_SERVER`] on host 1 bound to `addr`'s address on `port`, on Linux's
/// sockets and under `etran run`: the same lines, and under eTran the connections are its.
fn listener_passed(name: &str, port: &str, addr: impl Fn(&Bed) -> String) {
    let bed = Bed::new(name);
    let (daemon, addr) = (bed.daemon(), addr(&bed));
    let want = "b'receiver 0 got hello 0\\n'\nb'receiver 1 got hello 1\\n'\n\
                b'receiver 2 got hello 2\\n'\n";
    for etran in [false, true] {
        let args = [port, "3", addr.as_str()];
        let cmd = if etran {
            etran_run(
                &bed.h1,
                &daemon.sock,
                &[&[PYTHON, "-c", LISTENER_PASSING_SERVER], &args[..]].concat(),
            )
        } else {
            python_in(&bed.h1, LISTENER_PASSING_SERVER, &args)
        };
        let (mut server, mut out) = start_server(cmd, daemon);
        let client = python_in(&bed.h2, LINES_CLIENT, &[&bed.ip(1), port, "3"]).output().unwrap();
        let said = String::from_utf8_lossy(&client.stdout);
        assert_eq!(said, want, "etran {etran}: {}: {}", text(&client), daemon.log());
        assert_eq!(next_lines(&mut out, 2), ["receiver served 3", "passed 0"]);
        assert!(server.wait().unwrap().success());
    }
    let log = daemon.log();
    assert_eq!(conn_lines(&log).0, 3, "through eTran: {log}");
}

/// A non-blocking connect still in progress passed over a Unix socket (argv: host, port): the
/// sender starts it, passes the socket to a process it started (under the shim too) and
/// closes its own copy; the receiver waits until the socket is writable, then echoes through
/// it. The same lines as on Linux's sockets.
const CONNECT_PASSING: &str = r#"
import errno, socket, subprocess, sys
RECEIVER = """
import select, socket, sys
u = socket.socket(fileno=int(sys.argv[1]))
_, fds, _, _ = socket.recv_fds(u, 10, 1)
s = socket.socket(fileno=fds[0])
select.select([], [s], [], 10)
print("receiver error", s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), flush=True)
s.setblocking(True)
s.sendall(b"from the receiver")
print("receiver", s.recv(100), flush=True)
s.close()
"""
host, port = sys.argv[1], int(sys.argv[2])
a, b = socket.socketpair()
rx = subprocess.Popen([sys.executable, "-c", RECEIVER, str(b.fileno())], pass_fds=[b.fileno()])
s = socket.socket()
s.setblocking(False)
e = s.connect_ex((host, port))
print("connect", errno.errorcode.get(e, e), flush=True)
socket.send_fds(a, [b"conn"], [s.fileno()])
s.close()
print("passed", rx.wait(), flush=True)
"#;

#[test]
fn a_connect_in_progress_passed_over_a_unix_socket_completes_in_the_receiver() {
    let Some(_root) = common::root::shared() else { return };
    let bed = Bed::new("fork-passed-connect");
    let want = "connect EINPROGRESS\nreceiver error 0\nreceiver b'from the receiver'\npassed 0\n";
    let log = same_as_linux(&bed, CONNECT_PASSING, &["7024"], &["7024"], want);
    assert_eq!(conn_lines(&log), (1, 1), "through eTran, closed: {log}");
    assert!(!log.contains("reset (handle"), "not reset: {log}");
}

/// Children killed right after reading what the client sent, writing nothing (argv: port),
/// one connection per mode: `kept`, the parent keeps its copy and carries on once the child
/// is gone (it writes, echoes the client's next line in capitals and closes); `alone`, the
/// parent closed its copy at once, so the child was the last holder. As on Linux: the bytes
/// were read, so the connection stays the parent's, or closes with a FIN.
const READ_THEN_KILLED: &str = r#"
import os, signal, socket, sys
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("listening", flush=True)
for mode in ("kept", "alone"):
    c, _ = srv.accept()
    pid = os.fork()
    if pid == 0:
        got = b""
        while len(got) < 5:
            got += c.recv(5 - len(got))
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "alone":
        c.close()
    _, st = os.waitpid(pid, 0)
    if mode == "kept":
        c.sendall(b"the parent here")
        got = b""
        while not got.endswith(b"."):
            got += c.recv(100)
        c.sendall(got.upper())
        c.close()
    print(mode, os.waitstatus_to_exitcode(st), flush=True)
"#;

/// The Linux client of [`READ_THEN_KILLED`] (argv: host, port): what it read at each step,
/// and how the stream ended (`fin`, `rst`).
const READ_THEN_KILLED_CLIENT: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
def read(s, n):
    got = b""
    while len(got) < n:
        try:
            b = s.recv(n - len(got))
        except ConnectionResetError:
            return repr(got) + " rst"
        if not b:
            return repr(got) + " fin"
        got += b
    return repr(got)
s = socket.create_connection((host, port), timeout=10)
s.sendall(b"hello")
print("kept", read(s, 15), flush=True)
try:
    s.sendall(b"and back to you.")
except OSError as e:
    print("kept send", e.errno, flush=True)
print("kept", read(s, 16), read(s, 1), flush=True)
s.close()
s = socket.create_connection((host, port), timeout=10)
s.sendall(b"hello")
print("alone", read(s, 1), flush=True)
"#;

#[test]
fn a_holder_killed_after_reading_leaves_the_connection_as_on_linux() {
    let Some(_root) = common::root::shared() else { return };
    let bed = Bed::new("fork-read-killed");
    let daemon = bed.daemon();
    let want = "kept b'the parent here'\nkept b'AND BACK TO YOU.' b'' fin\nalone b'' fin\n";
    for etran in [false, true] {
        let cmd = if etran {
            etran_run(&bed.h1, &daemon.sock, &[PYTHON, "-c", READ_THEN_KILLED, "7025"])
        } else {
            python_in(&bed.h1, READ_THEN_KILLED, &["7025"])
        };
        let (mut server, mut out) = start_server(cmd, daemon);
        let client =
            python_in(&bed.h2, READ_THEN_KILLED_CLIENT, &[&bed.ip(1), "7025"]).output().unwrap();
        let said = String::from_utf8_lossy(&client.stdout);
        assert_eq!(said, want, "etran {etran}: {}: {}", text(&client), daemon.log());
        assert_eq!(next_lines(&mut out, 2), ["kept -9", "alone -9"], "{}", daemon.log());
        assert!(server.wait().unwrap().success());
    }
    let log = daemon.log();
    assert_eq!(conn_lines(&log).0, 2, "through eTran: {log}");
    assert!(!log.contains("reset (handle"), "not reset: {log}");
}

/// A child waiting, with `epoll` and `poll`, on a socket its parent opened before the fork and
/// never connected: the waits return at once (on Linux the socket is unconnected: writable,
/// hung up), and the child spins through them for 300 ms, then says how many it made and how
/// long it took.
const WAITS_ON_AN_UNCONNECTED_COPY: &str = r#"
import os, select, socket, time
s = socket.socket()
pid = os.fork()
if pid == 0:
    ep = select.epoll()
    ep.register(s.fileno(), select.EPOLLIN)
    p = select.poll()
    p.register(s.fileno(), select.POLLIN)
    calls, start = 0, time.monotonic()
    while time.monotonic() - start < 0.3:
        ep.poll(0)
        p.poll(0)
        calls += 2
    print("calls", calls, "ms", int((time.monotonic() - start) * 1000), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"#;

/// [`WAITS_ON_AN_UNCONNECTED_COPY`] under `etran run`: the child asks the daemon whether the
/// parent connected the socket (a pidfd and a round trip each time) at most every 2 ms
/// (`PARENT_CHECK`), not at every wait: strace counts the pidfd_open calls.
#[test]
fn waits_ask_about_a_socket_the_parent_may_connect_every_few_ms_not_at_every_pass() {
    let Some(_root) = common::root::shared() else { return };
    let bed = Bed::new("fork-pace");
    let daemon = bed.daemon();
    let trace = std::env::temp_dir().join(format!("etran-fork-pace-{}.strace", std::process::id()));
    let out = Command::new("ip")
        .args(["netns", "exec", &bed.h1, "strace", "-f", "-qq", "-e", "trace=pidfd_open", "-o"])
        .arg(&trace)
        .args([common::cli::etran_bin(), "run", "--daemon-socket"])
        .arg(&daemon.sock)
        .args(["--", PYTHON, "-c", WAITS_ON_AN_UNCONNECTED_COPY])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let strace = std::fs::read_to_string(&trace).unwrap_or_default();
    let _ = std::fs::remove_file(&trace);
    let words: Vec<&str> = said.split_whitespace().collect();
    let [_, calls, _, ms] = words[..] else { panic!("{}: {}", text(&out), daemon.log()) };
    let (calls, ms): (u64, u64) = (calls.parse().unwrap(), ms.parse().unwrap());
    let asks = strace.lines().filter(|l| l.contains("pidfd_open(")).count() as u64;
    // One question per 2 ms, and a few more (registering, the last one in flight).
    assert!(asks <= ms / 2 + 10, "{asks} questions in {ms} ms, {calls} waits: {strace}");
}

/// A Linux server whose queue is one connection long (argv: port, delay): it accepts nothing for
/// `delay` seconds (the SYNs of a second connection are dropped meanwhile: the connect hangs;
/// eTran sends SYNs at 0, 0.2, 0.6, 1.4 and 3 s, Linux at 0, 1 and 3 s), then two connections,
/// and echoes once on the second.
const QUEUE_OF_ONE: &str = r#"
import socket, sys, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(0)
print("listening", flush=True)
time.sleep(float(sys.argv[2]))
a, _ = srv.accept()
b, _ = srv.accept()
b.sendall(b.recv(100))
b.close()
a.close()
"#;

/// The start of a script whose connect `s` hangs ([`QUEUE_OF_ONE`], argv: host, port): a first
/// connection fills the server's queue, then `s` connects without blocking. An alarm ends a
/// script that hangs.
const HANGING_CONNECT: &str = r#"
import errno, os, select, signal, socket, sys, time
signal.alarm(20)
host, port = sys.argv[1], int(sys.argv[2])
first = socket.create_connection((host, port))
time.sleep(0.1)
s = socket.socket()
s.setblocking(False)
e = s.connect_ex((host, port))
print("connect", errno.errorcode.get(e, e), flush=True)
"#;

/// After [`HANGING_CONNECT`], its descriptor is passed over a Unix socket: `sendmsg` returns
/// within a second (the receiver would get an unconnected socket), where it waited for the
/// handshake before.
const PASSING_A_HANGING_CONNECT: &str = r#"
a, b = socket.socketpair()
start = time.monotonic()
socket.send_fds(a, [b"conn"], [s.fileno()])
print("passed", "soon" if time.monotonic() - start < 3 else "late", flush=True)
"#;

#[test]
fn passing_a_connect_whose_handshake_hangs_returns_within_a_second_as_on_linux() {
    let Some(_root) = common::root::shared() else { return };
    let bed = Bed::new("fork-pass-hang");
    let want = "connect EINPROGRESS\npassed soon\n";
    let script = format!("{HANGING_CONNECT}{PASSING_A_HANGING_CONNECT}");
    let server = LinuxServer { script: QUEUE_OF_ONE, args: &["60"], ends: false };
    same_as_linux_against(&bed, server, &script, &["7030"], &["7030"], want);
}

/// Blocking calls on a socket whose non-blocking connect is in progress (argv: host, two echo
/// ports, a closed port), as on Linux: `recv` waits for the connect and then for the bytes (a
/// thread sends them a while later), `send` waits for the connect, and `recv` on a refused
/// connect gets its error.
const CALLS_WHILE_CONNECTING: &str = r#"
import errno, socket, sys, threading, time
host = sys.argv[1]
def pending(port):
    s = socket.socket()
    s.setblocking(False)
    e = s.connect_ex((host, int(port)))
    print("connect", errno.errorcode.get(e, e), flush=True)
    s.setblocking(True)
    return s
s = pending(sys.argv[2])
def later():
    time.sleep(0.3)
    s.sendall(b"to recv")
t = threading.Thread(target=later)
t.start()
print("recv", s.recv(100), flush=True)
t.join()
s.close()
s = pending(sys.argv[3])
s.sendall(b"sent while connecting")
print("send then recv", s.recv(100), flush=True)
s.close()
s = pending(sys.argv[4])
try:
    print("recv", s.recv(100), flush=True)
except OSError as e:
    print("recv", errno.errorcode.get(e.errno, e.errno), flush=True)
s.close()
"#;

#[test]
fn blocking_calls_on_a_connecting_socket_wait_for_the_connect_as_on_linux() {
    let Some(_root) = common::root::shared() else { return };
    let bed = Bed::new("shim-connecting");
    let want = "connect EINPROGRESS\nrecv b'to recv'\nconnect EINPROGRESS\n\
                send then recv b'sent while connecting'\nconnect EINPROGRESS\n\
                recv ECONNREFUSED\n";
    let ports = ["7032", "7033", "7034"];
    same_as_linux(&bed, CALLS_WHILE_CONNECTING, &ports, &ports[..2], want);
    // The closes reach the daemon's log as the program exits: it may lag a little.
    let deadline = Instant::now() + Duration::from_secs(5);
    while conn_lines(&bed.daemon().log()) != (2, 2) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = bed.daemon().log();
    assert_eq!(conn_lines(&log), (2, 2), "through eTran, closed: {log}");
}

/// After [`HANGING_CONNECT`] (the server accepting after 2.3 s, the handshake's SYNs at 3 s go
/// through), a fork: it returns soon, the child's copy is the same socket, still connecting,
/// which it echoes through once the connect is up; the parent waits for the connect itself,
/// then for the child.
const FORK_WHILE_CONNECTING: &str = r#"
start = time.monotonic()
pid = os.fork()
if pid == 0:
    s.setblocking(True)
    s.sendall(b"from the child")
    print("child", s.recv(100), flush=True)
    os._exit(0)
took = time.monotonic() - start
select.select([], [s], [], 15)
os.waitpid(pid, 0)
print("fork", "soon" if took < 2.5 else "late", flush=True)
"#;

#[test]
fn a_fork_while_a_handshake_hangs_returns_soon_and_the_child_waits_for_it_as_on_linux() {
    let Some(_root) = common::root::shared() else { return };
    let bed = Bed::new("fork-slow-connect");
    let want = "connect EINPROGRESS\nchild b'from the child'\nfork soon\n";
    let script = format!("{HANGING_CONNECT}{FORK_WHILE_CONNECTING}");
    let server = LinuxServer { script: QUEUE_OF_ONE, args: &["2.3"], ends: true };
    same_as_linux_against(&bed, server, &script, &["7036"], &["7036"], want);
}

/// A client (argv: host, port) that waits for its socket to be writable (`select`: its thread
/// runs an event loop from then on, and the shim leaves its short sends for the end of the
/// pass, the thread's next wait), sends a short line and blocks in `recv` for the echo.
const SEND_AFTER_A_WAIT: &str = r#"
import select, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
select.select([], [s], [], 10)
s.sendall(b"after a wait")
print(s.recv(100), flush=True)
s.close()
"#;

/// The `recv` must send the short line before it sleeps, even when its first look outlasts the
/// busy poll (`ETRAN_BUSY_POLL_US=0` here; under TCG in the native guest, every time): it slept
/// with the line held back and no deadline, and the child of each fork test above that
/// `select`s before it writes hung there on native.
#[test]
fn a_short_send_after_a_wait_leaves_before_recv_sleeps_without_busy_polling() {
    let Some(_root) = common::root::shared() else { return };
    let bed = Bed::new("fork-no-spin");
    let daemon = bed.daemon();
    let server = LinuxServer { script: ONE_ECHO, args: &[], ends: true };
    let mut srv = linux_server(&bed, &server, "7029");
    let ip2 = bed.ip(2);
    let mut cmd =
        etran_run(&bed.h1, &daemon.sock, &[PYTHON, "-c", SEND_AFTER_A_WAIT, &ip2, "7029"]);
    cmd.env("ETRAN_BUSY_POLL_US", "0");
    let out = common::cli::output_within(&mut cmd, Duration::from_secs(20)).unwrap_or_else(|e| {
        drop(srv.kill());
        panic!("{e}{}", daemon.log())
    });
    assert_eq!(String::from_utf8_lossy(&out.stdout), "b'after a wait'\n", "{}", text(&out));
    assert!(srv.wait().unwrap().success(), "the server");
    assert_eq!(conn_lines(&daemon.log()).0, 1, "through eTran: {}", daemon.log());
}
