//! etran in containers, built with `unshare` as a container runtime builds them: `etran daemon`
//! in one container (its own mount and PID namespaces, private `/run` and `/tmp`, a testbed
//! host's network namespace) and a program under `etran run` in another (the same network
//! namespace, as containers of one pod share it; its own mount and PID namespaces), the two
//! sharing nothing but the directory that holds the daemon's socket. A Linux client on the other
//! testbed host downloads from the contained server (bodies checked by hash); the app's
//! container going away frees its session; the daemon's container stopping removes every port;
//! a daemon container started after one was killed rebuilds the datapath whose pins died with
//! the first one's bpffs, and serves again. Needs root, python3 and curl.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{cli::etran_bin, daemon::port_links, netns::sh};
use etran::testbed::{host_ip, Spec, Testbed, HOST_NIC};

/// Debian's python3 (PATH may hold a wrapper script first).
const PYTHON: &str = "/usr/bin/python3";
/// The contained HTTP server's port.
const PORT: u16 = 8090;

/// A container: `CMD` run by `sh` as the init of new mount and PID namespaces inside network
/// namespace `ns`, with private tmpfs on `/run` and `/tmp` and the shared directory mounted at
/// `at` (`mount` options `opts`). Killed on drop.
struct Container {
    child: Child,
    log: PathBuf,
}

impl Container {
    fn start(ns: &str, shared: &Path, at: &str, opts: &str, log: PathBuf, cmd: &str) -> Container {
        let setup = format!(
            "mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /tmp && mkdir {at} && \
             mount --bind -o {opts} {} {at} && {cmd}",
            shared.display()
        );
        let out = fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "unshare", "--mount", "--pid", "--fork", "--mount-proc"])
            .args(["--propagation", "private", "--kill-child", "sh", "-c", &setup])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("unshare");
        Container { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `what`.
    fn wait_for(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(what) {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("container exited ({st}) before {what:?}: {}", self.log());
            }
            assert!(Instant::now() < deadline, "no {what:?} within 20 s: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the container's init (its PID namespace dies with it).
    fn signal(&mut self, sig: &str) {
        let init = common::children(self.child.id());
        let init = init.first().expect("the container's init").to_string();
        assert!(sh(&format!("kill -{sig} {init}")).status.success());
    }

    /// Waits for the container to end.
    fn wait_exit(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "container still running: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon's container: `etran up`, then the daemon as the container's init, its socket
/// in the shared directory (mounted apart from `/run/etran`, where the daemon keeps its lock
/// and etran its bpffs, so that neither is shared).
fn daemon_container(ns: &str, shared: &Path, log: PathBuf) -> Container {
    let etran = etran_bin();
    let mut c = Container::start(
        ns,
        shared,
        "/run/etran-apps",
        "rw",
        log,
        &format!(
            "{etran} up {HOST_NIC} && \
             exec {etran} -v daemon --iface {HOST_NIC} --socket /run/etran-apps/etran.sock"
        ),
    );
    c.wait_for("etran daemon: serving");
    c
}

/// The app ports a daemon holds, by its log: sessions registered less ports removed.
fn live_ports(log: &str) -> usize {
    let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    count(" registered: slot ") - count(" closed: port ")
}

/// The app's container: the shared directory read-only at `/run/etran` (the default socket
/// path); it says what it sees of the others, then serves `www` over HTTP under `etran run`.
fn app_container(ns: &str, shared: &Path, www: &Path, log: PathBuf) -> Container {
    let mut c = Container::start(
        ns,
        shared,
        "/run/etran",
        "ro",
        log,
        &format!(
            "echo \"run holds: $(ls /run | tr '\\n' ' ')processes: $(ls /proc | grep -c '^[0-9]')\"; \
             touch /run/etran/x 2>/dev/null || echo socket directory read-only; \
             cd {} && \
             exec {} run -- {PYTHON} -u -m http.server {PORT}",
            www.display(),
            etran_bin()
        ),
    );
    c.wait_for("Serving HTTP");
    c
}

/// `curl` on `ns` (plain Linux) downloads the blob from host 1; returns its sha256.
fn download(ns: &str) -> String {
    let out = sh(&format!(
        "ip netns exec {ns} curl -sS --max-time 20 http://{}:{PORT}/blob | sha256sum",
        host_ip(1)
    ));
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string()
}

#[test]
fn a_daemon_and_an_app_in_containers_share_only_the_socket_directory() {
    let Some(_root) = common::root::shared() else { return };
    let tb = Testbed::private_with(Spec::new("", 2)).expect("private testbed");
    let (h1, h2) = (tb.host(1).netns.clone(), tb.host(2).netns.clone());
    // Outside /tmp and /run: the containers put their own there.
    let dir = PathBuf::from(format!("/var/tmp/etran-test-containers-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let (shared, www) = (dir.join("shared"), dir.join("www"));
    fs::create_dir_all(&shared).unwrap();
    fs::create_dir_all(&www).unwrap();
    let blob: Vec<u8> =
        (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    fs::write(www.join("blob"), &blob).unwrap();
    let want =
        String::from_utf8_lossy(&sh(&format!("sha256sum {}", www.join("blob").display())).stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();

    let mut daemon = daemon_container(&h1, &shared, dir.join("daemon1.log"));
    let mut app = app_container(&h1, &shared, &www, dir.join("app1.log"));
    // Its own /run holds the shared directory (and mount's utab), not the host's (no netns/),
    // and its PID namespace only its own few (the shell, its subshells, ls and grep at the
    // moment of counting).
    let log = app.log();
    let run = log.split("run holds: ").nth(1).and_then(|s| s.split("processes").next());
    assert!(run.is_some_and(|r| r.contains("etran ") && !r.contains("netns")), "{log}");
    let seen: usize = log
        .split("processes: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a process count");
    assert!(seen < 10, "the app's container sees {seen} processes: {log}");
    // The app cannot write where the socket is, and nothing of the daemon's but its socket is
    // there (its lock and etran's bpffs stay in the daemon's container).
    assert!(log.contains("socket directory read-only"), "{log}");
    let names: Vec<String> = fs::read_dir(&shared)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["etran.sock"], "the shared directory");
    for _ in 0..3 {
        assert_eq!(download(&h2), want, "the body over eTran from the contained server");
    }
    assert!(daemon.log().contains("established (handle "), "{}", daemon.log());

    // The app's container goes (its init killed): the daemon frees its session and port.
    app.signal("KILL");
    app.wait_exit();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("closed: port ") {
        assert!(Instant::now() < deadline, "session not freed: {}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(port_links(&h1), Vec::<String>::new());
    assert_eq!(live_ports(&daemon.log()), 0, "{}", daemon.log());

    // A new app, then the daemon's container stops (SIGTERM to its init, as a runtime stops
    // it): every port goes, and the socket with it.
    let _app = app_container(&h1, &shared, &www, dir.join("app2.log"));
    assert_eq!(download(&h2), want);
    if common::on_native() {
        // Native: the app's socket is on the NIC (no link to see); the daemon says it made it.
        assert_eq!(live_ports(&daemon.log()), 1, "the app's port: {}", daemon.log());
    } else {
        assert!(!port_links(&h1).is_empty(), "the app's port");
    }
    daemon.signal("TERM");
    daemon.wait_exit();
    assert!(daemon.log().contains("every app port was removed"), "{}", daemon.log());
    assert_eq!(port_links(&h1), Vec::<String>::new());
    assert!(!shared.join("etran.sock").exists(), "the socket outlived its daemon");
    drop(_app);

    // The first daemon's bpffs (and its pins) died with its mount namespace, and the kernel
    // emptied the entrance's program array: a new daemon container's `etran up` rebuilds the
    // datapath, and a new app is served.
    let daemon2 = daemon_container(&h1, &shared, dir.join("daemon2.log"));
    assert!(daemon2.log().contains("had lost its transports"), "{}", daemon2.log());
    let _app = app_container(&h1, &shared, &www, dir.join("app3.log"));
    assert_eq!(download(&h2), want, "served after the rebuild");

    drop(_app);
    drop(daemon2);
    let _ = Command::new("ip").args(["netns", "exec", &h1, etran_bin(), "down", HOST_NIC]).output();
    drop(tb);
    let _ = fs::remove_dir_all(&dir);
}
