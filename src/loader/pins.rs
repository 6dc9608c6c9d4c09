//! Where etran pins its BPF objects.
//!
//! `/sys/fs/bpf` does not work for us: `ip netns exec` remounts /sys in a private mount
//! namespace, so a bpffs mounted or pinned there by one invocation is gone in the next. etran
//! therefore keeps its own bpffs at `/run/etran/bpf` (mounted on first use) and pins each
//! interface's objects under `/run/etran/bpf/net<inode>/<iface>/`, where `<inode>` identifies the
//! network namespace (as `lsns -t net` and `readlink /proc/self/ns/net` show it): interface names
//! are only unique within a namespace. Mount the bpffs once on the host (`etran up` and
//! `etran testbed up` do it) and every later `ip netns exec` and container that shares /run sees
//! the same pins.
//!
//! The pins are for persistence and for other tools (`bpftool map dump pinned ...`). etran itself
//! finds an interface's datapath through the program attached to it (see `super::find`), which
//! works from any mount namespace.
use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::Context;

pub const BPFFS_ROOT: &str = "/run/etran/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Mounts a bpffs at `path` unless one is already mounted there.
pub fn ensure_bpffs(path: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    if is_bpffs(path)? {
        return Ok(());
    }
    let target = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: all arguments are valid NUL-terminated strings or NULL.
    let ret = unsafe {
        libc::mount(c"bpf".as_ptr(), target.as_ptr(), c"bpf".as_ptr(), 0, std::ptr::null())
    };
    crate::sys::cvt(ret).with_context(|| format!("mounting bpffs at {}", path.display()))?;
    if in_private_mount_ns() {
        crate::log::warn(format!(
            "mounted bpffs at {} in a private mount namespace (ip netns exec?): pins made here \
             vanish when this command exits, and the kernel then empties the program array, so \
             transports fall back to the kernel stack; mount it on the host first \
             (`etran testbed up` does, or `mount -t bpf bpf {0}`)",
            path.display()
        ));
    }
    Ok(())
}

/// True when our mount namespace differs from our parent's, as under `ip netns exec`, which
/// gives each command a mount namespace of its own that dies with it.
fn in_private_mount_ns() -> bool {
    let ours = fs::metadata("/proc/self/ns/mnt").map(|m| m.ino());
    // SAFETY: getppid has no preconditions.
    let parent =
        fs::metadata(format!("/proc/{}/ns/mnt", unsafe { libc::getppid() })).map(|m| m.ino());
    matches!((ours, parent), (Ok(a), Ok(b)) if a != b)
}

fn is_bpffs(path: &Path) -> anyhow::Result<bool> {
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs is plain data filled by the kernel.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    crate::sys::cvt(unsafe { libc::statfs(cpath.as_ptr(), &mut st) })?;
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// The pin directory of `iface` in the calling thread's network namespace.
pub fn iface_dir(iface: &str) -> anyhow::Result<PathBuf> {
    let ino =
        fs::metadata("/proc/thread-self/ns/net").context("reading our network namespace")?.ino();
    Ok(Path::new(BPFFS_ROOT).join(format!("net{ino}")).join(iface))
}

/// Removes the pin directories of network namespaces that no longer exist: a namespace deleted
/// while etran was up on one of its interfaces detaches the programs, but its pins would keep
/// their maps alive for good. A namespace counts as alive while any thread is in it or a
/// namespace file (`ip netns`, Docker) names it. Returns how many directories went.
pub fn remove_stale() -> anyhow::Result<usize> {
    let root = Path::new(BPFFS_ROOT);
    let Ok(entries) = fs::read_dir(root) else { return Ok(0) };
    let live = live_netns_inodes();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(ino) = name.to_str().and_then(|n| n.strip_prefix("net")?.parse::<u64>().ok())
        else {
            continue;
        };
        if !live.contains(&ino) {
            fs::remove_dir_all(entry.path())
                .with_context(|| format!("removing stale pins {}", entry.path().display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn live_netns_inodes() -> std::collections::HashSet<u64> {
    let mut live = std::collections::HashSet::new();
    let mut add = |path: &Path| {
        if let Ok(m) = fs::metadata(path) {
            live.insert(m.ino());
        }
    };
    for dir in ["/run/netns", "/var/run/docker/netns"] {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            add(&e.path());
        }
    }
    for proc_entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let tasks = proc_entry.path().join("task");
        for task in fs::read_dir(tasks).into_iter().flatten().flatten() {
            add(&task.path().join("ns/net"));
        }
    }
    live
}

/// Removes a pin directory and everything pinned in it (unpinning drops the references).
pub fn remove_dir(dir: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => {
            // The per-namespace directory goes too once its last interface is gone.
            if let Some(parent) = dir.parent() {
                let _ = fs::remove_dir(parent);
            }
            Ok(())
        }
    }
}
