//! Private network namespaces for root tests: a veth pair between two fresh namespaces, removed
//! on drop (also when the test panics).
#![allow(dead_code)]

use std::process::{Command, Output};

pub fn sh(cmd: &str) -> Output {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("run sh");
    assert!(out.status.success(), "`{cmd}` failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Two namespaces `<name>-a` and `<name>-b` joined by veth `va` (10.77.0.1/24) and `vb`
/// (10.77.0.2/24).
pub struct VethPair {
    pub a: String,
    pub b: String,
}

impl VethPair {
    pub fn new(name: &str) -> VethPair {
        let pair = VethPair { a: format!("{name}-a"), b: format!("{name}-b") };
        pair.remove();
        let (a, b) = (&pair.a, &pair.b);
        sh(&format!(
            "ip netns add {a} && ip netns add {b} && \
             ip link add va netns {a} type veth peer name vb netns {b} && \
             ip -n {a} addr add 10.77.0.1/24 dev va && ip -n {b} addr add 10.77.0.2/24 dev vb && \
             ip -n {a} link set va up && ip -n {b} link set vb up && \
             ip -n {a} link set lo up && ip -n {b} link set lo up"
        ));
        pair
    }

    fn remove(&self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Runs `f` on a thread that has entered network namespace `name`.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(format!("/run/netns/{name}")).expect("open netns");
            let fd = std::os::fd::AsRawFd::as_raw_fd(&ns);
            // SAFETY: fd is a valid netns file; setns affects only this thread.
            assert_eq!(unsafe { libc::setns(fd, libc::CLONE_NEWNET) }, 0, "setns");
            f()
        })
        .join()
        .expect("netns thread")
    })
}
