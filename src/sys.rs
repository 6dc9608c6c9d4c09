//! Thin helpers over raw syscalls shared by the netns, netlink, datapath and xsk modules.
use std::{ffi::CString, io};

/// Turns a libc-style return value (negative on error, errno set) into an io::Result.
pub fn cvt<T: Copy + PartialOrd + Default>(ret: T) -> io::Result<T> {
    if ret < T::default() {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// CPUs online on this machine, whichever this process may run on (the kernel's per-CPU
/// choices, such as a veth's RX queue for an XDP-redirected frame, range over them all).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf reads a system value; no memory is passed.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(1)
}

/// The ifindex of `name` in the caller's network namespace, with a one-line error otherwise.
pub fn ifindex(name: &str) -> anyhow::Result<u32> {
    let cname = CString::new(name).map_err(|_| anyhow::anyhow!("bad interface name {name:?}"))?;
    // SAFETY: cname is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if idx == 0 {
        anyhow::bail!("no interface named {name:?} in this network namespace");
    }
    Ok(idx)
}

/// `getsockopt(fd, level, opt)` into a zeroed `T`: the value and the length the kernel wrote
/// (older kernels write shorter versions of some structs).
pub fn sockopt<T: Copy>(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    opt: libc::c_int,
) -> io::Result<(T, usize)> {
    // SAFETY: every T used here is a plain C struct for which all-zero is valid.
    let mut val: T = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: val and len are valid for writes of the advertised size.
    let ret = unsafe { libc::getsockopt(fd, level, opt, (&mut val as *mut T).cast(), &mut len) };
    cvt(ret)?;
    Ok((val, len as usize))
}

/// The process at the other end of the Unix socket `fd` (`SO_PEERCRED`: the one that
/// connected, in our pid namespace), `None` when the kernel does not say.
pub fn peer_pid(fd: std::os::fd::BorrowedFd<'_>) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let (cred, _) =
        sockopt::<libc::ucred>(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED).ok()?;
    u32::try_from(cred.pid).ok().filter(|&p| p > 0)
}

/// Fails with a clear message unless the process runs with root privileges (CAP_BPF and
/// CAP_NET_ADMIN in practice).
pub fn require_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("{what} needs root (CAP_BPF and CAP_NET_ADMIN): run it with sudo");
    }
    Ok(())
}

/// The first IPv4 address of `iface`.
pub fn local_ipv4(iface: &str) -> Option<std::net::Ipv4Addr> {
    ipv4_addrs().into_iter().find(|(name, _)| name == iface).map(|(_, ip)| ip)
}

/// Every IPv4 address of this network namespace, with its interface's name, in the kernel's
/// order (empty if they cannot be read).
pub fn ipv4_addrs() -> Vec<(String, std::net::Ipv4Addr)> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head`; freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        // SAFETY: ifa_addr points to a sockaddr (when set); sa_family tells its kind.
        if !ifa.ifa_addr.is_null()
            && i32::from(unsafe { (*ifa.ifa_addr).sa_family }) == libc::AF_INET
        {
            // SAFETY: ifa_name is a NUL-terminated string.
            let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            found.push((name.to_string_lossy().into_owned(), ip));
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: the list getifaddrs allocated.
    unsafe { libc::freeifaddrs(head) };
    found
}

/// The neighbour table's (complete) entry for `ip` on `iface`, in the calling thread's network
/// namespace (`/proc/net` follows the process's main thread, not an in-process daemon's).
pub fn neighbour(iface: &str, ip: std::net::Ipv4Addr) -> Option<[u8; 6]> {
    let table = std::fs::read_to_string("/proc/thread-self/net/arp").ok()?;
    parse_arp(&table, iface, ip)
}

fn parse_arp(table: &str, iface: &str, ip: std::net::Ipv4Addr) -> Option<[u8; 6]> {
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // IP address, HW type, Flags, HW address, Mask, Device; flag 0x2 = complete.
        if f.len() < 6 || f[5] != iface || f[0].parse() != Ok(ip) {
            continue;
        }
        let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()?;
        if flags & 0x2 == 0 {
            continue;
        }
        let mut mac = [0u8; 6];
        let parts: Vec<&str> = f[3].split(':').collect();
        if parts.len() != 6 {
            return None;
        }
        for (m, p) in mac.iter_mut().zip(parts) {
            *m = u8::from_str_radix(p, 16).ok()?;
        }
        if mac == [0; 6] {
            return None;
        }
        return Some(mac);
    }
    None
}

/// A type over one pollable descriptor is a mio source through it: `source_via_fd!(T, s =>
/// expr)`, where `expr` gives the raw descriptor of `s: &T`.
macro_rules! source_via_fd {
    ($t:ty, $s:ident => $fd:expr) => {
        impl mio::event::Source for $t {
            fn register(
                &mut self,
                registry: &mio::Registry,
                token: mio::Token,
                interests: mio::Interest,
            ) -> std::io::Result<()> {
                let $s = &*self;
                mio::unix::SourceFd(&$fd).register(registry, token, interests)
            }

            fn reregister(
                &mut self,
                registry: &mio::Registry,
                token: mio::Token,
                interests: mio::Interest,
            ) -> std::io::Result<()> {
                let $s = &*self;
                mio::unix::SourceFd(&$fd).reregister(registry, token, interests)
            }

            fn deregister(&mut self, registry: &mio::Registry) -> std::io::Result<()> {
                let $s = &*self;
                mio::unix::SourceFd(&$fd).deregister(registry)
            }
        }
    };
}
pub(crate) use source_via_fd;

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_has_an_index_and_garbage_does_not() {
        assert!(super::ifindex("lo").unwrap() > 0);
        let err = super::ifindex("no-such-if0").unwrap_err().to_string();
        assert!(err.contains("no interface named"), "{err}");
    }

    #[test]
    fn arp_table_lookup() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 10.77.0.2        0x1         0x2         02:77:00:00:00:02     *        va\n\
                 10.77.0.3        0x1         0x0         00:00:00:00:00:00     *        va\n";
        let ip = |s: &str| s.parse().unwrap();
        assert_eq!(super::parse_arp(t, "va", ip("10.77.0.2")), Some([2, 0x77, 0, 0, 0, 2]));
        assert_eq!(super::parse_arp(t, "vb", ip("10.77.0.2")), None);
        assert_eq!(super::parse_arp(t, "va", ip("10.77.0.3")), None, "incomplete");
        assert_eq!(super::parse_arp(t, "va", ip("10.77.0.4")), None);
    }
}
