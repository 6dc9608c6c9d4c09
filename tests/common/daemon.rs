//! An `etran daemon` child process for root tests, started under `ip netns exec` on `va`; killed
//! (and its directory removed) on drop.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use etran::app::App;

/// A daemon child process; killed (and its socket dir removed) on drop.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub sock: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(ns: &str, name: &str) -> Daemon {
        let dir = PathBuf::from(format!("/tmp/etran-test-{name}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Daemon::start_in(ns, dir)
    }

    /// Starts a daemon whose socket is `dir/run/etran.sock`, leaving what is there.
    pub fn start_in(ns: &str, dir: PathBuf) -> Daemon {
        Daemon::start_on(ns, "va", dir)
    }

    /// Like [`Daemon::start_in`], serving `iface`.
    pub fn start_on(ns: &str, iface: &str, dir: PathBuf) -> Daemon {
        let sock = dir.join("run/etran.sock");
        let log = dir.join("daemon.log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, crate::cli::etran_bin(), "-v", "daemon"])
            .args(["--iface", iface, "--socket"])
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn daemon");
        let mut d = Daemon { child: Some(child), dir, sock, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&d.sock).is_err() {
            if let Some(st) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited with {st}: {}", d.log());
            }
            assert!(Instant::now() < deadline, "daemon not listening: {}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        // The probe was a session too: hand the daemon back once it has closed it, so tests
        // see it quiet (no extra descriptor, no stray session).
        let ends = |log: &str, word: &str| {
            log.lines().filter(|l| l.contains("app session") && l.ends_with(word)).count()
        };
        loop {
            let log = d.log();
            if ends(&log, " connected") > 0 && ends(&log, " connected") == ends(&log, " closed") {
                break;
            }
            assert!(Instant::now() < deadline, "the probe session never closed: {log}");
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What the daemon's open descriptors point to, sorted (`ip netns exec` execs it: the
    /// child's pid is its own).
    pub fn fds(&self) -> Vec<String> {
        let pid = self.child.as_ref().unwrap().id();
        let mut fds: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|e| fs::read_link(e.path()).ok())
            .map(|t| t.to_string_lossy().into_owned())
            .collect();
        fds.sort();
        fds
    }

    pub fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.as_ref().unwrap().id();
        // SAFETY: plain kill on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Taken only once it exited: a panic here leaves it to drop (killed, reaped).
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(Instant::now() < deadline, "daemon ignored SIGTERM: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A veth pair for apps ([`crate::netns::VethPair::for_apps`]: `va` in `<name>-a`, `vb` in
/// `<name>-b`) with `etran up va` done, GRO on `vb`
/// (frames redirected out of `va` reach `vb` only if it runs NAPI: the veth rule) and TX checksum
/// offload off on `vb` (Linux would leave its checksums partial, which etran's ingress drops).
pub fn etran_up_pair(name: &str) -> crate::netns::VethPair {
    etran_up_pair_at(name, etran::testbed::DEFAULT_MTU)
}

/// [`etran_up_pair`] with both ends at MTU `mtu`.
pub fn etran_up_pair_at(name: &str, mtu: u32) -> crate::netns::VethPair {
    use etran::loader::pins;
    pins::ensure_bpffs(std::path::Path::new(pins::BPFFS_ROOT)).unwrap();
    let net = crate::netns::VethPair::for_apps(name);
    net.set_mtu(mtu);
    let out = Command::new("ip")
        .args(["netns", "exec", &net.a, crate::cli::etran_bin(), "up", "va"])
        .output()
        .unwrap();
    assert!(out.status.success(), "etran up: {}", String::from_utf8_lossy(&out.stderr));
    crate::netns::in_netns(&net.b, || {
        etran::ethtool::set_gro("vb", true).unwrap();
        etran::ethtool::set_tx_checksum("vb", false).unwrap();
    });
    net
}

/// Names of the app ports (`etp<n>k`/`etp<n>a`) in namespace `ns`.
pub fn port_links(ns: &str) -> Vec<String> {
    let out = crate::netns::sh(&format!("ip -n {ns} -o link show"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap().to_string())
        .filter(|n| etran::backend::compat::port::is_port_name(n))
        .collect()
}

/// `etran -j stats IFACE`'s daemon and its app ports (null without a daemon), in namespace
/// `ns`: the ports of either backend.
pub fn served(ns: &str, iface: &str) -> serde_json::Value {
    let out = crate::cli::etran_in_ok(ns, &["-j", "stats", iface]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    stats[0]["daemon"].clone()
}

/// How many app ports the daemon on `iface` in `ns` holds ([`served`]).
pub fn served_ports(ns: &str, iface: &str) -> usize {
    served(ns, iface)["ports"].as_array().map_or(0, Vec::len)
}

/// Entries in the `etran_tcp_conns` map of the datapath on `iface` in namespace `ns`.
pub fn tcp_conn_count(ns: &str, iface: &str) -> usize {
    use libbpf_rs::MapCore;
    crate::netns::in_netns(ns, || {
        let dp = etran::loader::find(iface).unwrap().expect("etran is up");
        etran::transport::tcp::tcp_handles(dp.summary.prog_id).unwrap().conns.keys().count()
    })
}

/// Two hosts of a private testbed, each with `etran up eth0` and an `etran daemon` (or only
/// the first: [`EtranHosts::first_only`]); all of it removed on drop (panics included).
pub struct EtranHosts {
    pub daemons: Vec<Daemon>,
    pub tb: etran::testbed::Testbed,
}

impl EtranHosts {
    pub fn new(name: &str) -> EtranHosts {
        EtranHosts::build(name, etran::testbed::Spec::new("", 2), 2)
    }

    /// Like [`EtranHosts::new`] on a testbed built to `spec` (2 hosts; its name is ignored).
    pub fn with(name: &str, spec: etran::testbed::Spec) -> EtranHosts {
        EtranHosts::build(name, spec, 2)
    }

    /// etran on host 1 only (host 2 is plain Linux), on a testbed built from `spec`
    /// (impairments; its name is ignored).
    pub fn first_only(name: &str, spec: etran::testbed::Spec) -> EtranHosts {
        EtranHosts::build(name, spec, 1)
    }

    /// etran on both hosts of a testbed built from `spec` (its name is ignored).
    pub fn with_spec(name: &str, spec: etran::testbed::Spec) -> EtranHosts {
        EtranHosts::build(name, spec, 2)
    }

    /// etran on every host of a testbed built from `spec`, however many (its name is ignored).
    pub fn every(name: &str, spec: etran::testbed::Spec) -> EtranHosts {
        let n = spec.hosts;
        EtranHosts::build(name, spec, n)
    }

    fn build(name: &str, spec: etran::testbed::Spec, with_etran: u8) -> EtranHosts {
        use etran::{
            loader::pins,
            testbed::{Testbed, HOST_NIC},
        };
        // On the host, so that the pins `etran up` makes under `ip netns exec` are shared.
        pins::ensure_bpffs(std::path::Path::new(pins::BPFFS_ROOT)).unwrap();
        let tb = Testbed::private_with(spec).expect("private testbed");
        let mut hosts = EtranHosts { daemons: Vec::new(), tb };
        for i in 1..=with_etran {
            let ns = hosts.tb.host(i).netns.clone();
            let out = Command::new("ip")
                .args(["netns", "exec", &ns, crate::cli::etran_bin(), "up", HOST_NIC])
                .output()
                .unwrap();
            assert!(out.status.success(), "etran up: {}", String::from_utf8_lossy(&out.stderr));
            let dir = PathBuf::from(format!("/tmp/etran-test-{name}-h{i}"));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            hosts.daemons.push(Daemon::start_on(&ns, HOST_NIC, dir));
        }
        hosts
    }

    /// Host `i`'s (1-based) namespace name.
    pub fn ns(&self, i: u8) -> String {
        self.tb.host(i).netns.clone()
    }

    /// Packets the switch dropped so far, in its bottleneck queues or at its ports' receive
    /// rings.
    pub fn switch_drops(&self) -> u64 {
        let d = self.tb.switch_drops().unwrap().expect("a switched testbed");
        d.queues + d.rings
    }
}

impl Drop for EtranHosts {
    fn drop(&mut self) {
        // Daemons first: they hold ports on the NICs the datapath leaves.
        let with_etran = self.daemons.len() as u8;
        self.daemons.clear();
        for i in 1..=with_etran {
            let ns = self.ns(i);
            let _ = Command::new("ip")
                .args(["netns", "exec", &ns, crate::cli::etran_bin(), "down"])
                .arg(etran::testbed::HOST_NIC)
                .output();
        }
    }
}

/// [`etran_up_pair`] `name` and a daemon on `va`. Destructure it net first
/// (`let DaemonPair { net, daemon } = ...`), so that the daemon goes before the namespaces.
pub struct DaemonPair {
    pub net: crate::netns::VethPair,
    pub daemon: Daemon,
}

impl DaemonPair {
    pub fn new(name: &str) -> DaemonPair {
        DaemonPair::at_mtu(name, etran::testbed::DEFAULT_MTU)
    }

    /// [`DaemonPair::new`] with both ends at MTU `mtu`.
    pub fn at_mtu(name: &str, mtu: u32) -> DaemonPair {
        let net = etran_up_pair_at(name, mtu);
        let daemon = Daemon::start(&net.a, name);
        DaemonPair { net, daemon }
    }
}

/// An app registered with the daemon listening on `sock` (its link to the daemon, its port).
pub fn register(sock: &Path) -> App {
    App::open(sock).unwrap()
}

/// The bed of most end-to-end tests against Linux: [`etran_up_pair`] `name`, a daemon on `va`
/// and one app registered with it; Linux is in `net.b`. Dropped in field order: the app first.
pub struct EtranApp {
    pub app: App,
    pub daemon: Daemon,
    pub net: crate::netns::VethPair,
}

impl EtranApp {
    pub fn new(name: &str) -> EtranApp {
        let DaemonPair { net, daemon } = DaemonPair::new(name);
        let app = register(&daemon.sock);
        EtranApp { app, daemon, net }
    }

    /// Polls the port and the daemon link until `done` holds (or panics after 8 s).
    pub fn poll_until(&mut self, what: &str, mut done: impl FnMut(&mut App) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            self.app.poll().unwrap();
            self.app.poll_daemon().unwrap();
            if done(&mut self.app) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {}",
                self.daemon.log()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}
