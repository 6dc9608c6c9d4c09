//! Connections used across `fork` under `etran run`: an unmodified Python
//! `socketserver.ForkingTCPServer` on host 1 (the parent accepts, forks and closes its copy;
//! the child serves the connection and exits with `os._exit`), Linux clients on host 2, every
//! byte checked. Variants: the parent writes a 200 KB banner before it forks and the child
//! the rest (the stream's unsent and unacknowledged bytes move with it); a child that exits
//! with `os._exit` without closing (the shim's `_exit` closes it). Needs root and python3.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::daemon::EtranHosts;

use crate::shim::{
    conn_lines, etran_run, start_server, stops_having_served, text, ECHO_CLIENT, PYTHON,
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
const BYTES: usize = 300_000;

fn forking_server_serves(name: &str, port: u16, mode: &str, banner: usize) {
    let hosts = EtranHosts::first_only(name, etran::testbed::Spec::new("", 2));
    let (h1, h2) = (hosts.ns(1), hosts.ns(2));
    let ip1 = hosts.tb.host(1).ip.to_string();
    let daemon = &hosts.daemons[0];
    let port = port.to_string();
    let cmd = etran_run(&h1, &daemon.sock, &[PYTHON, "-c", FORKING_SERVER, &port, "3", mode]);
    let (mut server, mut out) = start_server(cmd, daemon);
    let client = Command::new("ip")
        .args(["netns", "exec", &h2, PYTHON, "-c", ECHO_CLIENT, &ip1, &port])
        .args([CONNS.to_string(), BYTES.to_string(), banner.to_string()])
        .output()
        .unwrap();
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
