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

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_has_an_index_and_garbage_does_not() {
        assert!(super::ifindex("lo").unwrap() > 0);
        let err = super::ifindex("no-such-if0").unwrap_err().to_string();
        assert!(err.contains("no interface named"), "{err}");
    }
}
