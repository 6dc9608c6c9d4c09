//! A device's NAPI knobs (sysfs): whether its receive processing runs as a kernel thread, and
//! whether it defers to busy-polling sockets. Interface attributes are per network namespace,
//! so each change runs on a thread that sees the namespace's own sysfs ([`in_sysfs`]).
use std::{os::unix::fs::FileExt, sync::mpsc};

use anyhow::Context;

use crate::{netns::NetNs, sys::cvt};

/// Runs `f` on a thread in `ns` that sees that namespace's sysfs: it unshares its mount
/// namespace (slave, so nothing propagates back) and mounts a fresh sysfs there, both gone with
/// the thread.
fn in_sysfs<T: Send>(
    ns: &NetNs,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    ns.run(|| -> anyhow::Result<T> {
        // SAFETY: plain syscalls with valid NUL-terminated strings; they affect only this
        // thread's mount namespace, which dies with the thread.
        unsafe {
            cvt(libc::unshare(libc::CLONE_NEWNS)).context("unshare(CLONE_NEWNS)")?;
            cvt(libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_SLAVE | libc::MS_REC,
                std::ptr::null(),
            ))
            .context("making mounts private")?;
            let mounted = cvt(libc::mount(
                c"sysfs".as_ptr(),
                c"/sys".as_ptr(),
                c"sysfs".as_ptr(),
                0,
                std::ptr::null(),
            ));
            // EBUSY: this namespace's sysfs is mounted there already (as under `ip netns
            // exec`); the kernel refuses the same superblock twice on one mount point.
            if let Err(e) = mounted {
                if e.raw_os_error() != Some(libc::EBUSY) {
                    return Err(e).context("mounting the namespace's sysfs");
                }
            }
        }
        f()
    })?
}

/// Runs `dev`'s (in `ns`) receive NAPI as a kernel thread (`on`), or takes it back to softirq;
/// returns the device's NAPI threads (none when switched off). The kernel keeps a thread once
/// made, so switching back on finds it again.
pub fn set_threaded(ns: &NetNs, dev: &str, on: bool) -> anyhow::Result<Vec<i32>> {
    in_sysfs(ns, || {
        std::fs::write(threaded_knob(dev), threaded_value(on))
            .with_context(|| format!("switching threaded NAPI on {dev}"))?;
        if !on {
            return Ok(Vec::new());
        }
        let threads = threads(dev);
        anyhow::ensure!(!threads.is_empty(), "no NAPI thread appeared for {dev}");
        Ok(threads)
    })
}

/// Switches `dev`'s receive NAPI between a kernel thread and softirq on a thread of its own,
/// in the order asked, so that whoever asks never waits: switching a device back to softirq
/// waits for its thread to finish polling (the kernel sleeps in steps of 20 ms), and the
/// daemon, which switches its apps' ports, serves every app from one loop. The thread ends
/// with the switch.
pub struct ThreadedSwitch {
    tx: mpsc::Sender<bool>,
}

impl ThreadedSwitch {
    /// The switch of `dev` in the calling thread's namespace: opens the device's knob (an
    /// error if the kernel has none), and starts the thread that writes it, which logs what
    /// fails.
    pub fn new(dev: &str) -> anyhow::Result<ThreadedSwitch> {
        let path = threaded_knob(dev);
        let knob = in_sysfs(&NetNs::current()?, || {
            std::fs::OpenOptions::new().write(true).open(&path).with_context(|| path.clone())
        })?;
        let (tx, rx) = mpsc::channel::<bool>();
        std::thread::Builder::new()
            .name(format!("napi {dev}"))
            .spawn(move || {
                for on in rx {
                    // At offset 0, as a fresh open would (an attribute is one value).
                    if let Err(e) = knob.write_at(threaded_value(on), 0) {
                        crate::log::warn(format!("{path}: writing {}: {e}", u8::from(on)));
                    }
                }
            })
            .context("starting a NAPI switch thread")?;
        Ok(ThreadedSwitch { tx })
    }

    /// Asks for `dev`'s NAPI in a thread (`on`) or in softirq.
    pub fn set(&self, on: bool) {
        let _ = self.tx.send(on);
    }
}

/// Makes `dev` in `ns` leave its receive NAPI to busy-polling sockets ([`crate::xsk::BusyPoll`]),
/// or (`on` false) not: after a busy poll the kernel re-arms a timer instead of the device's
/// "interrupt" (for a veth, the peer's transmit scheduling its NAPI), twice before giving up.
pub fn defer_to_busy_poll(ns: &NetNs, dev: &str, on: bool) -> anyhow::Result<()> {
    let vals = if on { ["2", "200000"] } else { ["0", "0"] };
    in_sysfs(ns, || {
        for (attr, val) in ["napi_defer_hard_irqs", "gro_flush_timeout"].into_iter().zip(vals) {
            std::fs::write(format!("/sys/class/net/{dev}/{attr}"), val)
                .with_context(|| format!("setting {attr} of {dev}"))?;
        }
        Ok(())
    })
}

/// The sysfs attribute that runs `dev`'s NAPI as a kernel thread, and what it takes.
fn threaded_knob(dev: &str) -> String {
    format!("/sys/class/net/{dev}/threaded")
}

fn threaded_value(on: bool) -> &'static [u8] {
    if on {
        b"1"
    } else {
        b"0"
    }
}

/// Thread ids of the kernel's NAPI threads for `dev` (`napi/<dev>-<id>`).
fn threads(dev: &str) -> Vec<i32> {
    let prefix = format!("napi/{dev}-");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        comm.starts_with(&prefix).then_some(pid)
    })
    .collect()
}
