//! Shared helpers for the built-in benchmarks: CPU placement, test frames, rates, latency
//! histograms, per-second progress, and a small runner for timed multi-thread phases.
use std::{
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Condvar, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use hdrhistogram::Histogram;

use crate::output::Output;

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        crate::sys::cvt(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set))
            .with_context(|| format!("pinning to CPU {cpu}"))?;
    }
    Ok(())
}

/// CPUs this process may run on.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The CPU for role `i` (0 = sender/client, 1 = receiver/server): distinct when possible.
pub fn cpu_for(i: usize) -> usize {
    i % cpu_count()
}

/// An Ethernet + IPv4 + UDP frame of exactly `size` bytes (at least 60), UDP checksum 0, the
/// payload zero-filled.
pub fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    size: usize,
) -> Vec<u8> {
    let size = size.max(60);
    let mut f = vec![0u8; size];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (size - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = libc::IPPROTO_UDP as u8;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let csum = crate::checksum::checksum(ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

/// Where the UDP payload starts in frames from [`udp_frame`].
pub const UDP_PAYLOAD: usize = 42;

/// The hardware address of `ifname` in the calling thread's namespace.
pub fn mac_of(ifname: &str) -> anyhow::Result<[u8; 6]> {
    // SAFETY: ifreq is plain data.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    anyhow::ensure!(ifname.len() < libc::IFNAMSIZ, "interface name too long");
    for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    crate::sys::cvt(fd).context("socket for SIOCGIFHWADDR")?;
    // SAFETY: ifr is a valid ifreq.
    let ret = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut ifr) };
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    crate::sys::cvt(ret).with_context(|| format!("reading the MAC address of {ifname}"))?;
    // SAFETY: SIOCGIFHWADDR filled the sockaddr variant.
    let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = *b as u8;
    }
    Ok(mac)
}

/// CPU time the calling thread has used, in nanoseconds. On this kernel (no IRQ time
/// accounting) it includes the softirq work that ran in the thread's context.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time thread `tid` (any process, e.g. a kernel NAPI thread) has run, in nanoseconds
/// (`/proc/TID/schedstat`).
pub fn task_cpu_ns(tid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/schedstat")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// CPU time used so far by everything a bench runs on this machine: this process (apps,
/// daemons and gen pumps are its threads, and the softirq work that runs in their context is
/// charged to them) and the kernel's network threads: its softirq threads (the softirq work
/// deferred to them) and threaded NAPI (a compat port batching its app's frames does its
/// egress and its hop to the NIC there: `app::bursts`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct CpuUse {
    pub user_ns: u64,
    pub sys_ns: u64,
    pub kthreads_ns: u64,
}

impl CpuUse {
    pub fn now() -> CpuUse {
        // SAFETY: a zeroed rusage is valid for getrusage to fill.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid rusage.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
        CpuUse { user_ns: ns(ru.ru_utime), sys_ns: ns(ru.ru_stime), kthreads_ns: kthreads_ns() }
    }

    pub fn total_ns(&self) -> u64 {
        self.user_ns + self.sys_ns + self.kthreads_ns
    }

    /// What was used between `earlier` and this mark.
    pub fn since(&self, earlier: &CpuUse) -> CpuUse {
        CpuUse {
            user_ns: self.user_ns.saturating_sub(earlier.user_ns),
            sys_ns: self.sys_ns.saturating_sub(earlier.sys_ns),
            kthreads_ns: self.kthreads_ns.saturating_sub(earlier.kthreads_ns),
        }
    }
}

/// CPU time of the kernel's network threads ([`is_network_kthread`]).
fn kthreads_ns() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| is_network_kthread(&c))
        })
        .filter_map(task_cpu_ns)
        .sum()
}

/// Whether a task named `comm` is a kernel thread doing network work a bench causes: a
/// softirq thread (`ksoftirqd/N`) or a device's threaded NAPI (`napi/DEV-ID`).
fn is_network_kthread(comm: &str) -> bool {
    comm.starts_with("ksoftirqd/") || comm.starts_with("napi/")
}

/// Monotonic nanoseconds (CLOCK_MONOTONIC), comparable across threads and namespaces.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A latency histogram in nanoseconds (1 ns .. 10 s, 3 significant digits).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("valid histogram bounds")
}

/// "1.234 Mpps"-style rate.
pub fn fmt_pps(pps: f64) -> String {
    if pps >= 1e6 {
        format!("{:.3} Mpps", pps / 1e6)
    } else {
        format!("{:.1} Kpps", pps / 1e3)
    }
}

/// Gbit/s of `size`-byte frames at `pps` (frame bytes only, no preamble or gap).
pub fn gbps(pps: f64, size: u32) -> f64 {
    pps * f64::from(size) * 8.0 / 1e9
}

/// Shared state of one timed phase: workers count into `tx`/`rx`, the runner sets `stop`.
#[derive(Default)]
pub struct Ctl {
    pub stop: AtomicBool,
    pub tx: AtomicU64,
    pub rx: AtomicU64,
    ready: AtomicUsize,
    workers: AtomicUsize,
    failed: AtomicBool,
    setup_error: Mutex<Option<String>>,
}

thread_local! {
    /// The worker's CPU time when it became ready (see [`PhaseResult::cpu_ns`]).
    static READY_CPU_NS: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

impl Ctl {
    /// Called by a worker when its setup is done; returns when every worker is ready (or
    /// false when the phase is being abandoned).
    pub fn ready(&self) -> bool {
        READY_CPU_NS.with(|c| c.set(Some(thread_cpu_ns())));
        self.ready.fetch_add(1, Ordering::AcqRel);
        while self.ready.load(Ordering::Acquire) < self.workers.load(Ordering::Acquire) {
            if self.failed.load(Ordering::Acquire) || self.stop.load(Ordering::Acquire) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn fail(&self, msg: String) {
        let mut e = self.setup_error.lock().unwrap_or_else(|p| p.into_inner());
        e.get_or_insert(msg);
        self.failed.store(true, Ordering::Release);
        self.stop.store(true, Ordering::Release);
    }
}

/// What a phase measured.
#[derive(Debug, Clone, Default)]
pub struct PhaseResult {
    pub tx_pps: f64,
    pub rx_pps: f64,
    pub seconds: f64,
    /// Everything counted from the workers' start to their stop.
    pub tx_total: u64,
    pub rx_total: u64,
    /// Each worker's CPU time (in order) from ready to stop: divided by the totals, the CPU
    /// cost of a frame, which other load on the machine hardly changes (unlike the rates).
    pub cpu_ns: Vec<u64>,
}

/// A worker of a phase: does its setup, calls `ctl.ready()`, runs until `ctl.stopped()`,
/// counting into `ctl.tx` / `ctl.rx`, and returns its report.
pub type Worker<'a, R> = Box<dyn FnOnce(&Ctl) -> anyhow::Result<R> + Send + 'a>;

/// Runs `workers` concurrently for `duration` after all are ready, with per-second progress
/// (`label` names the phase). Returns the rates measured between the first and the last
/// sample and each worker's report.
pub fn run_phase<R: Send>(
    label: &str,
    duration: Duration,
    out: &Output,
    workers: Vec<Worker<'_, R>>,
) -> anyhow::Result<(PhaseResult, Vec<R>)> {
    let ctl = Ctl::default();
    let n = workers.len();
    ctl.workers.store(n, Ordering::Release);
    std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .into_iter()
            .map(|w| {
                let ctl = &ctl;
                s.spawn(move || {
                    let r = w(ctl);
                    if let Err(e) = &r {
                        ctl.fail(format!("{e:#}"));
                    }
                    let cpu = READY_CPU_NS.with(|c| c.get()).map_or(0, |t| thread_cpu_ns() - t);
                    r.map(|r| (r, cpu))
                })
            })
            .collect();
        // Wait for every worker's setup.
        let setup_deadline = Instant::now() + Duration::from_secs(30);
        while ctl.ready.load(Ordering::Acquire) < n && !ctl.failed.load(Ordering::Acquire) {
            if Instant::now() > setup_deadline {
                ctl.fail("workers did not get ready within 30 s".into());
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut result = PhaseResult::default();
        if !ctl.failed.load(Ordering::Acquire) {
            result = sample(label, duration, out, &ctl);
        }
        ctl.stop.store(true, Ordering::Release);
        let mut reports = Vec::with_capacity(n);
        let mut first_err = None;
        for h in handles {
            match h.join() {
                Ok(Ok((r, cpu))) => {
                    reports.push(r);
                    result.cpu_ns.push(cpu);
                }
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        if let Some(e) = first_err {
            return Err(e.context(format!("{label} failed")));
        }
        if let Some(msg) = ctl.setup_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            anyhow::bail!("{label}: {msg}");
        }
        result.tx_total = ctl.tx.load(Ordering::Acquire);
        result.rx_total = ctl.rx.load(Ordering::Acquire);
        Ok((result, reports))
    })
}

fn sample(label: &str, duration: Duration, out: &Output, ctl: &Ctl) -> PhaseResult {
    let bar = out.interactive().then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(200));
        b.set_message(format!("{label}: starting"));
        b
    });
    // Let the pipeline fill for a moment before the first sample.
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let (tx0, rx0) = (ctl.tx.load(Ordering::Relaxed), ctl.rx.load(Ordering::Relaxed));
    let (mut ltx, mut lrx, mut lt) = (tx0, rx0, start);
    let mut sec = 0;
    while start.elapsed() < duration && !ctl.stopped() {
        let next = start + Duration::from_secs(sec + 1);
        let until = next.min(start + duration);
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        sec += 1;
        let now = Instant::now();
        let (tx, rx) = (ctl.tx.load(Ordering::Relaxed), ctl.rx.load(Ordering::Relaxed));
        let dt = (now - lt).as_secs_f64().max(1e-9);
        let line = format!(
            "{label} [{sec:>3}s] tx {}  rx {}",
            fmt_pps((tx - ltx) as f64 / dt),
            fmt_pps((rx - lrx) as f64 / dt)
        );
        match &bar {
            Some(b) => b.println(line),
            None if !out.json() => eprintln!("{line}"),
            None => {}
        }
        (ltx, lrx, lt) = (tx, rx, now);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let secs = lt.duration_since(start).as_secs_f64().max(1e-9);
    PhaseResult {
        tx_pps: (ltx - tx0) as f64 / secs,
        rx_pps: (lrx - rx0) as f64 / secs,
        seconds: secs,
        ..Default::default()
    }
}

/// A bench's common start: the measured window opens once every client thread has set up (its
/// socket open, its connections made), for every transport alike. Opening an eTran socket makes
/// the host's daemon build a port, which takes a while on a loaded host: with a deadline fixed
/// before the clients began, the last host to set up lost its share of a short run (a 1 s
/// `bench rpc` once counted no RPC of one host's clients).
pub struct Start {
    waiting: Mutex<usize>,
    all_ready: Condvar,
    duration: Duration,
    deadline: OnceLock<Instant>,
}

impl Start {
    pub fn new(clients: usize, duration: Duration) -> Start {
        Start {
            waiting: Mutex::new(clients),
            all_ready: Condvar::new(),
            duration,
            deadline: OnceLock::new(),
        }
    }

    /// A client thread's place, taken before it sets up.
    pub fn ticket(&self) -> Ticket<'_> {
        Ticket { start: self, arrived: false }
    }

    fn arrive(&self) {
        let mut waiting = self.waiting.lock().expect("start lock");
        *waiting = waiting.saturating_sub(1);
        if *waiting == 0 {
            self.all_ready.notify_all();
        }
    }
}

/// One client thread's place at the [`Start`]: [`Ticket::ready`] once set up; a thread that
/// fails before that still counts as arrived (on drop), so that the others do not wait for it.
pub struct Ticket<'a> {
    start: &'a Start,
    arrived: bool,
}

impl Ticket<'_> {
    /// Waits for every other client thread to be set up; returns the run's common deadline.
    pub fn ready(mut self) -> Instant {
        self.arrived = true;
        self.start.arrive();
        let s = self.start;
        let waiting = s.waiting.lock().expect("start lock");
        drop(s.all_ready.wait_while(waiting, |w| *w > 0).expect("start lock"));
        *s.deadline.get_or_init(|| Instant::now() + s.duration)
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.arrived {
            self.start.arrive();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softirq_and_napi_threads_count_as_the_bench_s_and_others_do_not() {
        for comm in ["ksoftirqd/0\n", "napi/etp3k-8195", "napi/eth0-8193\n"] {
            assert!(is_network_kthread(comm), "{comm:?}");
        }
        for comm in ["kworker/0:1", "etran", "napi", "rcu_preempt", "irq/24-virtio0"] {
            assert!(!is_network_kthread(comm), "{comm:?}");
        }
    }

    #[test]
    fn udp_frame_is_well_formed() {
        let f = udp_frame(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            Ipv4Addr::new(10, 99, 0, 1),
            Ipv4Addr::new(10, 99, 0, 2),
            9000,
            9,
            64,
        );
        assert_eq!(f.len(), 64);
        assert_eq!(crate::checksum::checksum(&f[14..34]), 0, "header checksum verifies");
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 50);
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 30);
    }

    #[test]
    fn rates_format() {
        assert_eq!(fmt_pps(1_234_000.0), "1.234 Mpps");
        assert_eq!(fmt_pps(220_000.0), "220.0 Kpps");
        assert!((gbps(1e6, 64) - 0.512).abs() < 1e-9);
    }
}
