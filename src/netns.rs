//! Network namespaces the way `ip netns` keeps them: a namespace is named by a file under
//! /run/netns that a bind mount of the namespace keeps alive with no process in it.
//!
//! Only the calling *thread* ever changes namespace ([`NetNs::enter`]); [`NetNs::run`] runs a
//! closure on a short-lived scoped thread inside a namespace, which is how everything else in
//! etran does per-namespace work (netlink and ethtool sockets belong to the namespace of the
//! thread that creates them).
use std::{
    ffi::CString,
    fs, io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};

use crate::sys::cvt;

/// Where named namespaces live (shared with iproute2: `ip netns list` sees ours).
pub const NETNS_DIR: &str = "/run/netns";
/// statfs f_type of a file that is a namespace (a bind mount of an nsfs inode).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// A network namespace, held open by a file descriptor.
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
}

/// Checks that `name` can name a namespace file: non-empty, at most 64 bytes, only ASCII
/// letters, digits, `_`, `-`, `.`, and not `.`/`..`.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let ok_chars =
        name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if name.is_empty() || name.len() > 64 || !ok_chars || name == "." || name == ".." {
        bail!("bad network namespace name {name:?} (use up to 64 of A-Z a-z 0-9 _ - .)");
    }
    Ok(())
}

fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

fn cpath(path: &Path) -> anyhow::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).context("path with a NUL byte")
}

fn statfs_type(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: zeroed statfs is a valid out-parameter; c is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::statfs(c.as_ptr(), &mut st) })?;
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64)
}

/// Makes /run/netns a shared mount point, as iproute2 does, so that namespace bind mounts
/// propagate to other mount namespaces (e.g. `ip netns exec` shells).
fn prepare_dir() -> anyhow::Result<()> {
    fs::create_dir_all(NETNS_DIR).with_context(|| format!("creating {NETNS_DIR}"))?;
    let dir = cpath(Path::new(NETNS_DIR))?;
    let none = c"none";
    // SAFETY: valid NUL-terminated strings; a null data pointer is allowed.
    let shared = || unsafe {
        libc::mount(
            none.as_ptr(),
            dir.as_ptr(),
            none.as_ptr(),
            libc::MS_SHARED | libc::MS_REC,
            std::ptr::null(),
        )
    };
    if shared() == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EINVAL) {
        return Err(err).context("making /run/netns a shared mount");
    }
    // Not a mount point yet: bind it onto itself, then share it.
    // SAFETY: as above.
    cvt(unsafe {
        libc::mount(
            dir.as_ptr(),
            dir.as_ptr(),
            none.as_ptr(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    })
    .context("bind-mounting /run/netns onto itself")?;
    cvt(shared()).context("making /run/netns a shared mount")?;
    Ok(())
}

impl NetNs {
    /// Creates the named namespace, like `ip netns add`. Fails if the name is taken.
    pub fn add(name: &str) -> anyhow::Result<NetNs> {
        Self::add_with(name, || Ok(()))
    }

    /// Like [`NetNs::add`], but runs `init` inside the new namespace before it becomes visible
    /// under its name (the testbed marks its namespaces this way, so a marked namespace is never
    /// half made). The namespace is not created if `init` fails.
    pub fn add_with(
        name: &str,
        init: impl FnOnce() -> anyhow::Result<()> + Send,
    ) -> anyhow::Result<NetNs> {
        validate_name(name)?;
        prepare_dir()?;
        let path = path_of(name);
        fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| {
            match e.kind() {
                io::ErrorKind::AlreadyExists => {
                    anyhow::anyhow!("network namespace {name:?} already exists")
                }
                _ => anyhow::Error::new(e).context(format!("creating {}", path.display())),
            }
        })?;
        let target = cpath(&path)?;
        let made = std::thread::scope(|s| {
            s.spawn(|| -> anyhow::Result<()> {
                // SAFETY: unshare affects only this (short-lived) thread.
                cvt(unsafe { libc::unshare(libc::CLONE_NEWNET) })
                    .context("unshare(CLONE_NEWNET)")?;
                init()?;
                let src = c"/proc/thread-self/ns/net";
                // SAFETY: valid NUL-terminated strings.
                cvt(unsafe {
                    libc::mount(
                        src.as_ptr(),
                        target.as_ptr(),
                        c"none".as_ptr(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    )
                })
                .with_context(|| {
                    format!("bind-mounting the new namespace on {}", path.display())
                })?;
                Ok(())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        });
        if let Err(e) = made {
            let _ = fs::remove_file(&path);
            return Err(e.context(format!("creating network namespace {name:?}")));
        }
        Self::open(name)
    }

    /// Opens an existing named namespace.
    pub fn open(name: &str) -> anyhow::Result<NetNs> {
        validate_name(name)?;
        let path = path_of(name);
        let file = fs::File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => anyhow::anyhow!("no network namespace named {name:?}"),
            _ => anyhow::Error::new(e).context(format!("opening {}", path.display())),
        })?;
        if statfs_type(&path).ok() != Some(NSFS_MAGIC) {
            bail!("{} is not a network namespace (stale file?)", path.display());
        }
        Ok(NetNs { fd: file.into() })
    }

    /// Whether `name` exists under /run/netns as a file that is *not* a mounted namespace (the
    /// leftover of a crash between creating the file and mounting the namespace on it).
    pub fn is_stale_file(name: &str) -> bool {
        validate_name(name).is_ok()
            && path_of(name).is_file()
            && statfs_type(&path_of(name)).ok() != Some(NSFS_MAGIC)
    }

    /// Removes the named namespace, like `ip netns del`: unmounts and unlinks its file. The
    /// namespace itself (and its interfaces) goes away once no process or descriptor holds it.
    /// Returns Ok(()) when no such namespace exists.
    pub fn delete(name: &str) -> anyhow::Result<()> {
        validate_name(name)?;
        let path = path_of(name);
        let c = cpath(&path)?;
        // SAFETY: c is NUL-terminated.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            let err = io::Error::last_os_error();
            // EINVAL: not a mount point (stale file); ENOENT: absent.
            if !matches!(err.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) {
                return Err(err).with_context(|| format!("unmounting {}", path.display()));
            }
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }

    /// Names under /run/netns, sorted (empty when the directory does not exist).
    pub fn list() -> anyhow::Result<Vec<String>> {
        let dir = match fs::read_dir(NETNS_DIR) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).context("reading /run/netns"),
        };
        let mut names = Vec::new();
        for entry in dir {
            let entry = entry.context("reading /run/netns")?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// The calling thread's namespace.
    pub fn current() -> anyhow::Result<NetNs> {
        let file = fs::File::open("/proc/thread-self/ns/net")
            .context("opening /proc/thread-self/ns/net")?;
        Ok(NetNs { fd: file.into() })
    }

    /// Moves the calling thread (only) into this namespace.
    pub fn enter(&self) -> anyhow::Result<()> {
        // SAFETY: fd is an open namespace file.
        cvt(unsafe { libc::setns(self.fd.as_raw_fd(), libc::CLONE_NEWNET) })
            .context("setns(CLONE_NEWNET)")?;
        Ok(())
    }

    /// Runs `f` on a scoped thread inside this namespace and returns its result. A panic in `f`
    /// propagates to the caller.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| -> anyhow::Result<T> {
                self.enter()?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// A duplicate of the descriptor (e.g. for IFLA_NET_NS_FD).
    pub fn try_clone(&self) -> anyhow::Result<NetNs> {
        Ok(NetNs { fd: self.fd.try_clone().context("dup")? })
    }

    /// The (st_dev, st_ino) pair that identifies the namespace.
    pub fn id(&self) -> anyhow::Result<(u64, u64)> {
        // SAFETY: zeroed stat is a valid out-parameter.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        cvt(unsafe { libc::fstat(self.fd.as_raw_fd(), &mut st) }).context("fstat")?;
        #[allow(clippy::unnecessary_cast)]
        Ok((st.st_dev as u64, st.st_ino as u64))
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for NetNs {
    fn as_raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

impl FromRawFd for NetNs {
    /// # Safety
    /// `fd` must be an open network namespace descriptor that the caller gives away.
    unsafe fn from_raw_fd(fd: i32) -> Self {
        NetNs { fd: OwnedFd::from_raw_fd(fd) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for ok in ["etran-h1", "tb-x.1", "a", "etb123_4-sw"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "x\0", &"n".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
