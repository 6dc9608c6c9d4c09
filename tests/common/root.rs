//! Root tests: whether they can run here, and who runs beside whom.
//!
//! Every test that needs root (BPF programs, namespaces, AF_XDP) starts with
//! `let Some(_root) = common::root::shared() else { return };`. Without root, or where no bpffs
//! can be mounted, it says on stderr that it skips and passes, instead of failing half way.
//! The guard it holds lets tests run two at a time (`--test-threads=2`), except beside one that
//! took [`alone`]: a test that counts what the whole machine holds (namespaces, pins) or times
//! itself against Linux has the machine to itself, as it did in a test binary of its own.
use std::{
    io::Write,
    path::Path,
    sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

static MACHINE: RwLock<()> = RwLock::new(());

/// Held for the whole of a root test: one of the two.
pub struct Guard {
    _shared: Option<RwLockReadGuard<'static, ()>>,
    _alone: Option<RwLockWriteGuard<'static, ()>>,
}

/// Why root tests cannot run here, if they cannot.
fn cannot_run() -> Option<&'static str> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("needs root".to_string());
        }
        let bpffs = Path::new(etran::loader::pins::BPFFS_ROOT);
        etran::loader::pins::ensure_bpffs(bpffs).err().map(|e| format!("no bpffs: {e:#}"))
    })
    .as_deref()
}

/// Whether this root test can run; if not, says so on the real stderr (libtest captures only
/// the print macros), naming the test.
fn can_run() -> bool {
    let Some(why) = cannot_run() else { return true };
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a root test");
    let _ = writeln!(std::io::stderr(), "skipped {test}: {why}");
    false
}

/// For a root test that may run beside others; None (after saying so): skip it.
pub fn shared() -> Option<Guard> {
    let shared = || MACHINE.read().unwrap_or_else(|p| p.into_inner());
    can_run().then(|| Guard { _shared: Some(shared()), _alone: None })
}

/// For a root test that must have the machine to itself; None (after saying so): skip it.
pub fn alone() -> Option<Guard> {
    let alone = || MACHINE.write().unwrap_or_else(|p| p.into_inner());
    can_run().then(|| Guard { _shared: None, _alone: Some(alone()) })
}
