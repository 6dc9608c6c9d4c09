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

/// Fails with a clear message unless the process runs with root privileges (CAP_BPF and
/// CAP_NET_ADMIN in practice).
pub fn require_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("{what} needs root (CAP_BPF and CAP_NET_ADMIN): run it with sudo");
    }
    Ok(())
}

/// Number of CPUs this process may run on.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pins the calling thread to `cpu` (benchmarks state where every side ran).
pub fn pin_thread(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET stays within it for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        anyhow::ensure!(cpu < libc::CPU_SETSIZE as usize, "no CPU {cpu}");
        libc::CPU_SET(cpu, &mut set);
        cvt(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_has_an_index_and_garbage_does_not() {
        assert!(super::ifindex("lo").unwrap() > 0);
        let err = super::ifindex("no-such-if0").unwrap_err().to_string();
        assert!(err.contains("no interface named"), "{err}");
    }
}
