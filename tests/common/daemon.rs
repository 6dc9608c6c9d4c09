//! An `etran daemon` child process for root tests, started under `ip netns exec` on `va`; killed
//! (and its directory removed) on drop.
#![allow(dead_code)]

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

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
        let sock = dir.join("run/etran.sock");
        let log = dir.join("daemon.log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_etran"), "-v", "daemon"])
            .args(["--iface", "va", "--socket"])
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
        d
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: plain kill on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("daemon ignored SIGTERM: {}", self.log());
            }
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

/// A veth pair (`va` in `<name>-a`, `vb` in `<name>-b`) with `etran up va` done and GRO on `vb`
/// (frames redirected out of `va` reach `vb` only if it runs NAPI: the veth rule).
pub fn etran_up_pair(name: &str) -> super::netns::VethPair {
    use etran::datapath::pins;
    pins::ensure_bpffs(std::path::Path::new(pins::BPFFS_ROOT)).unwrap();
    let net = super::netns::VethPair::new(name);
    let out = Command::new("ip")
        .args(["netns", "exec", &net.a, env!("CARGO_BIN_EXE_etran"), "up", "va"])
        .output()
        .unwrap();
    assert!(out.status.success(), "etran up: {}", String::from_utf8_lossy(&out.stderr));
    super::netns::in_netns(&net.b, || etran::ethtool::set_gro("vb", true).unwrap());
    net
}
