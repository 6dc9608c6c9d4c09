//! The shared harness of etran's integration tests (one crate, compiled once, used by every
//! test crate as `common`):
//! - [`root`]: the root check every root test starts with (it skips, and says so, where it cannot
//!   run), and the guard that lets a test have the machine to itself;
//! - [`cli`]: the `etran` binary run on the host or in a namespace;
//! - [`netns`]: private namespaces (a veth pair), raw sockets, running code in a namespace;
//! - [`daemon`]: an `etran daemon` child, `etran up` on a pair, two etran hosts on a testbed;
//! - [`fixture`]: the BPF_PROG_TEST_RUN fixture runner every program's table uses (a
//!   [`fixture::Bench`] per program, [`fixture::Row`]s of frame in, map state before, verdict,
//!   what was sent, map state and counters after), counters, the fuzzers' random source;
//!   [`tcp`]: the TCP programs' harness (the datapath, its maps, a run of each program, the
//!   fixture connection and its frames both ways, [`tcp::OnConn`]) and end-to-end helpers;
//! - [`packet`]: frame builders and parsers; [`capture`], [`peer`], [`hostile`]: a capture
//!   judge, Linux peers, and a hostile app for the end-to-end tests; [`thread_cpu`]: what an
//!   app thread costs; [`KillOnDrop`]: a spawned child killed, its forks too, however the test
//!   ends.
pub mod capture;
pub mod cli;
pub mod daemon;
pub mod fixture;
pub mod hostile;
pub mod netns;
pub mod packet;
pub mod peer;
pub mod root;
pub mod tcp;

/// Whether these tests run on etran's kernel series, where `--backend auto` takes native: the
/// harness that booted it says so (`ETRAN_E2E_BACKEND=native`, scripts/native-e2e). Anything
/// else is a stock kernel, on which `auto` takes compat: what a test asserts of the backend does
/// not rest on etran's own detection of the kernel (which the tests check).
pub fn on_native() -> bool {
    std::env::var("ETRAN_E2E_BACKEND").is_ok_and(|b| b == "native")
}

/// The processes whose parent is `pid`, from every process's `/proc/PID/stat` (a kernel
/// without CONFIG_PROC_CHILDREN, as the native guest's, has no `/proc/PID/task/TID/children`).
pub fn children(pid: u32) -> Vec<u32> {
    processes_whose(1, pid)
}

/// The processes of process group `pgid`.
pub fn process_group(pgid: u32) -> Vec<u32> {
    processes_whose(2, pgid)
}

/// The processes whose field `n` after the state in `/proc/PID/stat` (1: the parent, 2: the
/// process group) is `value`, sorted.
fn processes_whose(n: usize, value: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            after_comm(&stat).nth(n).and_then(|v| v.parse::<u32>().ok()) == Some(value)
        })
        .collect();
    found.sort_unstable();
    found
}

/// The fields of a `/proc/.../stat` line after the command name, from the state on:
/// `PID (COMM) STATE PPID PGRP ...`, where COMM may hold spaces and parentheses.
fn after_comm(stat: &str) -> std::str::SplitWhitespace<'_> {
    stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace()
}

/// Where each thread of `pids` is, a line each: `pid/tid comm state wchan syscall` (the
/// system call's number and arguments, `running` in user space: what a hung test says about
/// the processes it waited for).
pub fn blocked_in(pids: &[u32]) -> String {
    let read = |p: String| std::fs::read_to_string(p).unwrap_or_default().trim().to_string();
    let mut out = String::new();
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for t in tasks.flatten() {
            let dir = t.path().display().to_string();
            let stat = read(format!("{dir}/stat"));
            let state = after_comm(&stat).next();
            out += &format!(
                "{pid}/{} {} {} {} [{}]\n",
                t.file_name().to_string_lossy(),
                read(format!("{dir}/comm")),
                state.unwrap_or("?"),
                read(format!("{dir}/wchan")),
                read(format!("{dir}/syscall")),
            );
        }
    }
    out
}

/// Sets its flag when dropped: a thread told to stop however the test ends (a panic included),
/// so that the `std::thread::scope` around it ends.
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A child process leading a process group of its own; on drop, SIGKILL to that group (the
/// child and whatever it forked: a server's workers) and the child reaped, so that a test
/// that panics leaves nothing running in, and keeping alive, its namespaces.
pub struct KillOnDrop(std::process::Child);

impl KillOnDrop {
    /// Spawns `cmd` in a new process group.
    pub fn spawn(cmd: &mut std::process::Command) -> std::io::Result<KillOnDrop> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0).spawn().map(KillOnDrop)
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let pgid = self.0.id();
        // The group's number stays ours while its leader is unreaped or a member lives.
        if matches!(self.0.try_wait(), Ok(None)) || !process_group(pgid).is_empty() {
            // SAFETY: signalling the process group of our own child.
            unsafe { libc::kill(-(pgid as i32), libc::SIGKILL) };
        }
        let _ = self.0.wait();
        // Forks left to init: until they are gone (a zombie holds no namespace).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while process_group(pgid).iter().any(|&p| !is_zombie(p))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

fn is_zombie(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    after_comm(&stat).next().is_none_or(|s| s == "Z")
}

/// CPU time this thread has used (`getrusage(RUSAGE_THREAD)`): an app that runs on this thread,
/// without the test binary's other threads (another test, say).
pub fn thread_cpu() -> std::time::Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) }, 0);
    let tv = |t: libc::timeval| std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
