//! The issue's applications under `etran run`, unmodified, from Debian's packages (scripts/deps
//! installs them): nginx with a master and two forked workers sharing its listener, serving
//! curl (bodies checked by hash) and wrk; each starts, serves Linux clients on the second
//! testbed host and exits cleanly, every connection through eTran and closed. Needs root.
use std::{
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

use common::{
    daemon::{Daemon, EtranHosts},
    KillOnDrop,
};

use super::shim::{conn_lines, cpu_time, etran_run, registrations, text, PYTHON};

/// Waits (up to 20 s) until `n` more apps than `before` registered with `daemon`; `why`
/// says what the server logged.
fn await_registrations(daemon: &Daemon, before: usize, n: usize, why: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while registrations(&daemon.log()) - before < n {
        assert!(Instant::now() < deadline, "{n} apps did not register: {}{}", why(), daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many times the daemon's log says an app listens on `port`.
fn listens(daemon: &Daemon, port: u16) -> usize {
    daemon.log().matches(&format!(" listens on {port}")).count()
}

/// Waits (up to 20 s) for one more listen on `port` than `before`. A server registers at its
/// listen and listens a moment later: a SYN in between finds no listener.
fn await_listen(daemon: &Daemon, port: u16, before: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while listens(daemon, port) == before {
        assert!(Instant::now() < deadline, "nothing listens on {port}: {}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops `child` with `signal` and waits for it to exit successfully.
fn stop(child: &mut Child, signal: i32, daemon: &Daemon) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    await_success(child, daemon);
}

/// Waits (up to 20 s) for `child` to exit, successfully.
fn await_success(child: &mut Child, daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "it did not stop: {}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}: {}", daemon.log());
}

fn sha256(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string()
}

/// `len` bytes of a fixed pattern.
fn pattern(len: usize, mul: u32) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(mul) >> 11) as u8).collect()
}

const NGINX_CONF: &str = r#"
daemon off;
master_process on;
worker_processes 2;
user root;
pid DIR/nginx.pid;
error_log DIR/error.log info;
events { worker_connections 512; }
http {
    log_format worker '$pid $request_uri $status $body_bytes_sent';
    access_log DIR/access.log worker;
    client_body_temp_path DIR/body;
    proxy_temp_path DIR/proxy;
    fastcgi_temp_path DIR/fastcgi;
    uwsgi_temp_path DIR/uwsgi;
    scgi_temp_path DIR/scgi;
    sendfile on;
    keepalive_requests 100000;
    server {
        listen PORT;
        root DIR/www;
    }
}
"#;

#[test]
fn nginx_with_two_workers_serves_curl_and_wrk_over_etran() {
    let Some(_root) = common::root::shared() else { return };
    let hosts = EtranHosts::first_only("app-nginx", etran::testbed::Spec::new("", 2));
    let (h1, h2) = (hosts.ns(1), hosts.ns(2));
    let ip1 = hosts.tb.host(1).ip.to_string();
    let daemon = &hosts.daemons[0];
    let dir = daemon.dir.join("nginx");
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/1k.html"), pattern(1024, 2_654_435_761)).unwrap();
    std::fs::write(dir.join("www/big.bin"), pattern(3_000_000, 40_503)).unwrap();
    let conf = NGINX_CONF.replace("DIR", dir.to_str().unwrap()).replace("PORT", "8080");
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let before = registrations(&daemon.log());
    let conf_path = dir.join("nginx.conf");
    let mut cmd = etran_run(&h1, &daemon.sock, &["nginx", "-c", conf_path.to_str().unwrap()]);
    let mut nginx = KillOnDrop::spawn(&mut cmd).expect("etran run nginx");
    let errors = || std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    // The master (which listens) and its two workers (which join its listener).
    await_registrations(daemon, before, 3, errors);

    // Two connections (one per worker, in turn), each fetching both pages (keep-alive).
    for i in 0..2 {
        let mut curl = Command::new("ip");
        curl.args(["netns", "exec", &h2, "curl", "-sS", "--max-time", "30"]);
        for page in ["1k.html", "big.bin"] {
            curl.arg("-o").arg(dir.join(format!("got-{i}-{page}")));
            curl.arg(format!("http://{ip1}:8080/{page}"));
        }
        let out = curl.output().unwrap();
        assert!(out.status.success(), "curl: {}: {}", text(&out), daemon.log());
        for page in ["1k.html", "big.bin"] {
            let got = dir.join(format!("got-{i}-{page}"));
            assert_eq!(sha256(&got), sha256(&dir.join("www").join(page)), "{page}'s hash");
        }
    }
    let wrk = Command::new("ip")
        .args(["netns", "exec", &h2, "wrk", "-t1", "-c4", "-d1s"])
        .arg(format!("http://{ip1}:8080/1k.html"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&wrk.stdout);
    eprintln!("wrk against nginx under etran run:\n{said}");
    let rate: f64 = said
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(wrk.status.success() && rate > 0.0, "wrk: {}", text(&wrk));
    assert!(!said.contains("Non-2xx") && !said.contains("Socket errors"), "{said}");

    // Idle with a keep-alive connection open: the workers sleep (edge-triggered epoll).
    let share = idle_share(&h2, &ip1, nginx.id());
    eprintln!("idle nginx under etran run: {:.2} % of a CPU", share * 100.0);
    assert!(share < 0.02, "an idle nginx used {:.2} % of a CPU", share * 100.0);

    stop(&mut nginx, libc::SIGQUIT, daemon);
    let log = std::fs::read_to_string(dir.join("access.log")).unwrap();
    let mut workers: Vec<&str> = log.lines().filter_map(|l| l.split(' ').next()).collect();
    workers.sort_unstable();
    workers.dedup();
    assert_eq!(workers.len(), 2, "both workers served: {log}");
    all_ended(daemon, 6);
}

/// The share of a CPU the server `pid` and its children use over 2 s while a Linux client on
/// `ns` holds one keep-alive HTTP connection to it open and idle.
fn idle_share(ns: &str, ip: &str, pid: u32) -> f64 {
    let client = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], 8080), timeout=30)
s.sendall(b"GET /1k.html HTTP/1.1\r\nHost: t\r\n\r\n")
got = b""
while not got.endswith(b"\r\n\r\n") and b"\r\n\r\n" not in got:
    got += s.recv(4096)
print("idle", flush=True)
time.sleep(3)
"#;
    let mut c = KillOnDrop::spawn(
        Command::new("ip")
            .args(["netns", "exec", ns, PYTHON, "-c", client, ip])
            .stdout(std::process::Stdio::piped()),
    )
    .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(c.stdout.take().unwrap()), &mut line)
        .unwrap();
    assert_eq!(line.trim(), "idle");
    let pids: Vec<u32> = std::iter::once(pid).chain(common::children(pid)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let total = || pids.iter().map(|&p| cpu_time(p)).sum::<Duration>();
    let (t0, c0) = (Instant::now(), total());
    std::thread::sleep(Duration::from_secs(2));
    let share = (total() - c0).as_secs_f64() / t0.elapsed().as_secs_f64();
    let _ = c.wait();
    share
}

/// At least `n` connections went through eTran, and every one ended: closed, reset by the
/// client (wrk and redis-benchmark leave with responses unread, which Linux answers with RST),
/// or by the server (closed with bytes unread, as an iperf3 server closes its data stream).
fn all_ended(daemon: &Daemon, n: usize) {
    let log = daemon.log();
    let (opened, closed) = conn_lines(&log);
    let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    let reset = count(" reset by the peer") + count(" aborted (handle ");
    assert!(opened >= n && opened == closed + reset, "through eTran, all ended: {log}");
}

#[test]
fn redis_serves_redis_benchmark_and_redis_cli_over_etran() {
    let Some(_root) = common::root::shared() else { return };
    let hosts = EtranHosts::first_only("app-redis", etran::testbed::Spec::new("", 2));
    let (h1, h2) = (hosts.ns(1), hosts.ns(2));
    let ip1 = hosts.tb.host(1).ip.to_string();
    let daemon = &hosts.daemons[0];
    let dir = daemon.dir.join("redis");
    std::fs::create_dir_all(&dir).unwrap();
    let (before, listened) = (registrations(&daemon.log()), listens(daemon, 6379));
    let args = ["--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", ""];
    let mut cmd = vec!["redis-server"];
    cmd.extend(args);
    cmd.extend(["--appendonly", "no", "--dir", dir.to_str().unwrap()]);
    let mut redis =
        KillOnDrop::spawn(&mut etran_run(&h1, &daemon.sock, &cmd)).expect("etran run redis");
    await_registrations(daemon, before, 1, String::new);
    await_listen(daemon, 6379, listened);

    // Every byte of a value back, through redis-cli (the value from a file: -x).
    let value: String =
        pattern(3000, 2_654_435_761).iter().map(|b| (b'a' + b % 26) as char).collect();
    std::fs::write(dir.join("value"), &value).unwrap();
    let cli = |args: &[&str], stdin: Option<&Path>| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &h2, "redis-cli", "-h", &ip1, "-p", "6379"]).args(args);
        if let Some(p) = stdin {
            c.stdin(std::fs::File::open(p).unwrap());
        }
        c.output().unwrap()
    };
    let set = cli(&["-x", "SET", "checked"], Some(&dir.join("value")));
    assert_eq!(
        String::from_utf8_lossy(&set.stdout).trim(),
        "OK",
        "{}: {}",
        text(&set),
        daemon.log()
    );
    let got = cli(&["--raw", "GET", "checked"], None);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim_end(), value, "the value came back");

    let bench = Command::new("ip")
        .args(["netns", "exec", &h2, "redis-benchmark", "-h", &ip1, "-p", "6379"])
        .args(["-c", "50", "-n", "20000", "-P", "1", "-t", "set,get", "--csv"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&bench.stdout);
    eprintln!("redis-benchmark against redis under etran run:\n{said}");
    for test in ["SET", "GET"] {
        let rps: f64 = said
            .lines()
            .find(|l| l.starts_with(&format!("\"{test}\"")))
            .and_then(|l| l.split(',').nth(1))
            .and_then(|v| v.trim_matches('"').parse().ok())
            .unwrap_or(0.0);
        assert!(bench.status.success() && rps > 0.0, "{test}: {}", text(&bench));
    }
    stop(&mut redis, libc::SIGTERM, daemon);
    all_ended(daemon, 52);
}

#[test]
fn iperf3_server_receives_and_sends_a_stream_over_etran() {
    let Some(_root) = common::root::shared() else { return };
    let hosts = EtranHosts::first_only("app-iperf3", etran::testbed::Spec::new("", 2));
    let (h1, h2) = (hosts.ns(1), hosts.ns(2));
    let ip1 = hosts.tb.host(1).ip.to_string();
    let daemon = &hosts.daemons[0];
    for reverse in [false, true] {
        let before = registrations(&daemon.log());
        let listened = listens(daemon, 5201);
        // One test, then it exits.
        let log = daemon.dir.join(format!("iperf3-{reverse}.log"));
        let mut server = KillOnDrop::spawn(
            etran_run(&h1, &daemon.sock, &["iperf3", "-s", "-1", "-4", "-p", "5201"])
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::process::Stdio::null()),
        )
        .expect("etran run iperf3");
        await_registrations(daemon, before, 1, String::new);
        await_listen(daemon, 5201, listened);
        let mut client = Command::new("ip");
        client.args(["netns", "exec", &h2, "iperf3", "-c", &ip1, "-p", "5201", "-t", "2", "-J"]);
        if reverse {
            client.arg("-R");
        }
        let out = client.output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let bps = report["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0);
        let dir = if reverse { "server → client" } else { "client → server" };
        eprintln!("iperf3 {dir}, server under etran run: {:.2} Gbit/s", bps / 1e9);
        assert!(out.status.success() && bps > 0.0, "{}: {}", text(&out), daemon.log());
        await_success(&mut server, daemon);
        // TCP_INFO and TCP_CONGESTION are served: the server warns of nothing and names the
        // algorithm it sent with.
        let said = std::fs::read_to_string(&log).unwrap();
        assert!(!said.contains("getsockopt") && !said.contains("not supported"), "{said}");
        if reverse {
            assert_eq!(report["end"]["sender_tcp_congestion"], "dctcp", "{report}");
        }
    }
    all_ended(daemon, 4);
}
