//! Private network namespaces for root tests: a veth pair between two fresh namespaces, removed
//! on drop (also when the test panics).
use std::{
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

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
        VethPair::with_app_queues(name, 1)
    }

    /// A pair whose `va` etran apps bind to: as many TX queues as the kernel's backend wants
    /// ([`etran::testbed::kernel_app_queues`]: on native each app sends on a queue of its own),
    /// each arriving on the RX queue of its number of `vb` (with GRO, through its NAPI). One
    /// queue each way on a stock kernel, as [`VethPair::new`].
    pub fn for_apps(name: &str) -> VethPair {
        VethPair::with_app_queues(name, etran::testbed::kernel_app_queues())
    }

    /// `q` TX queues on `va` and RX queues on `vb` (one the other way).
    fn with_app_queues(name: &str, q: u32) -> VethPair {
        let pair = VethPair { a: format!("{name}-a"), b: format!("{name}-b") };
        pair.remove();
        let (a, b) = (&pair.a, &pair.b);
        sh(&format!(
            "ip netns add {a} && ip netns add {b} && \
             ip link add va netns {a} numtxqueues {q} numrxqueues 1 type veth \
             peer name vb netns {b} numtxqueues 1 numrxqueues {q} && \
             ip -n {a} addr add 10.77.0.1/24 dev va && ip -n {b} addr add 10.77.0.2/24 dev vb && \
             ip -n {a} link set va up && ip -n {b} link set vb up && \
             ip -n {a} link set lo up && ip -n {b} link set lo up"
        ));
        pair
    }

    /// Sets the MTU of both ends (before any XDP program: a veth with one caps its peer's).
    pub fn set_mtu(&self, mtu: u32) {
        sh(&format!(
            "ip -n {} link set va mtu {mtu} && ip -n {} link set vb mtu {mtu}",
            self.a, self.b
        ));
    }

    fn remove(&self) {
        // Take down any datapath a test left up, so its pins do not outlive the namespace.
        for (ns, iface) in [(&self.a, "va"), (&self.b, "vb")] {
            if std::path::Path::new("/run/netns").join(ns).exists() {
                in_netns(ns, || {
                    let _ = etran::loader::down(iface);
                });
            }
        }
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

/// The Ethernet address of `iface` in namespace `ns`.
pub fn mac_of(ns: &str, iface: &str) -> [u8; 6] {
    let out = sh(&format!("ip -n {ns} -o link show {iface}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split("link/ether ").nth(1).expect("an Ethernet address").split(' ').next();
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(hex.unwrap().split(':')) {
        *m = u8::from_str_radix(p, 16).unwrap();
    }
    mac
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
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// One private namespace (`xt-<pid>-<n>`) holding a veth pair `va`/`vb` with `queues` RX and TX
/// queues each, IPv6 off (its neighbour discovery and MLD frames would land in sockets under
/// test); deleted on drop.
pub struct VethNs {
    pub name: String,
}

impl VethNs {
    pub fn new(queues: u32) -> VethNs {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("xt-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        sh(&format!("ip netns add {name}"));
        let ns = VethNs { name };
        let n = &ns.name;
        sh(&format!(
            "ip netns exec {n} sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && \
             echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6' && \
             ip -n {n} link add va numtxqueues {queues} numrxqueues {queues} type veth \
             peer name vb numtxqueues {queues} numrxqueues {queues} && \
             ip -n {n} link set lo up && ip -n {n} link set va up && ip -n {n} link set vb up"
        ));
        ns
    }

    /// Runs `f` on a fresh thread inside the namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.name, f)
    }
}

impl Drop for VethNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// An AF_PACKET socket bound to one interface of the calling thread's namespace: sends whole
/// Ethernet frames and receives every frame the interface sees. Closed on drop.
pub struct RawSocket {
    fd: std::os::fd::OwnedFd,
    ifindex: i32,
}

impl RawSocket {
    pub fn open(iface: &str) -> RawSocket {
        use std::os::fd::FromRawFd;
        let name = std::ffi::CString::new(iface).unwrap();
        // SAFETY: plain socket calls; the descriptor is owned from here on.
        unsafe {
            let ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            assert!(ifindex > 0, "no interface {iface}");
            let proto = (libc::ETH_P_ALL as u16).to_be();
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto.into());
            assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
            let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex;
            let rc = libc::bind(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
            RawSocket { fd, ifindex }
        }
    }

    /// Sets the socket's receive buffer (beyond rmem_max: the tests run as root).
    pub fn set_rcvbuf(&self, bytes: i32) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.fd);
        set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes);
    }

    pub fn send(&self, frame: &[u8]) {
        // SAFETY: sending from a valid buffer to a zeroed-then-filled sockaddr_ll.
        unsafe {
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = self.ifindex;
            sll.sll_halen = 6;
            let n = libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(n as usize, frame.len(), "sendto: {}", std::io::Error::last_os_error());
        }
    }

    /// The next frame seen (sent or received), or None after `timeout_ms` without one.
    pub fn recv(&self, timeout_ms: i32) -> Option<Vec<u8>> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.fd);
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: polling one valid descriptor, reading into a buffer of the given length.
        unsafe {
            if libc::poll(&mut pfd, 1, timeout_ms) <= 0 {
                return None;
            }
            let mut buf = vec![0u8; 65536];
            let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
            assert!(n >= 0, "recv: {}", std::io::Error::last_os_error());
            buf.truncate(n as usize);
            Some(buf)
        }
    }
}

/// `setsockopt` of an int option on `fd`; panics (naming the option) if the kernel refuses.
pub fn set_int_opt(fd: std::os::fd::RawFd, level: i32, name: i32, value: i32) {
    // SAFETY: a pointer to an int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    assert_eq!(rc, 0, "setsockopt {level}/{name}: {}", std::io::Error::last_os_error());
}

/// A counter of the calling thread's network namespace, from /proc/net/netstat or /proc/net/snmp,
/// named "Group:Field" (e.g. "TcpExt:TCPTimeouts", "Tcp:OutRsts").
pub fn net_stat(key: &str) -> u64 {
    let (group, field) = key.split_once(':').expect("Group:Field");
    let mut text = std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap();
    text += &std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(&format!("{group}:"))).collect();
    for pair in lines.chunks(2) {
        let names: Vec<&str> = pair[0].split_whitespace().collect();
        let values: Vec<&str> = pair[1].split_whitespace().collect();
        if let Some(i) = names.iter().position(|n| *n == field) {
            return values[i].parse().unwrap();
        }
    }
    panic!("no counter {key}")
}
