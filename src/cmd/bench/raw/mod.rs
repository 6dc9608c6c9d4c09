//! `etran bench raw`: the raw AF_XDP frame rate between two hosts with no transport, beside
//! the Linux UDP socket rate for the same pattern. The ceiling every transport is judged by.
//!
//! On the built-in testbed (no `--iface`): host 1 is the sender / echo client, host 2 the
//! receiver / reflector; the receiving NIC gets `xsk_redirect` for the AF_XDP phases only. The
//! testbed is direct (h1 and h2 on one veth pair) unless `--switch` puts the switch namespace,
//! one more XDP hop, between them. Placement, per row and printed with the results (see [`Rx`]):
//! the sender or client always on CPU 0; the receive processing (NAPI: XDP, AF_XDP copy) as a
//! kernel thread on CPU 1 with the nearly idle receiving loop next to the sender (txonly, the
//! AF_XDP→AF_XDP row), or run by the receiving loop itself busy-polling on CPU 1 (the generator
//! row: a NAPI thread there would hand the generator's pages back across CPUs under a contended
//! lock), or the kernel's default, softirq where frames are sent (echo, and Linux rows that do
//! best so). Each row also reports the CPU time each side spent per frame. Modes:
//! - txonly: AF_XDP TX on h1, AF_XDP RX counting on h2; then UDP sendmmsg → recvmmsg.
//! - rxdrop: h1 generates with `BPF_PROG_RUN` live frames (≈ 6.5 Mpps from one thread: more
//!   than any socket can send) into h2's AF_XDP socket; then the same with an AF_XDP sender;
//!   then the generator into a Linux UDP socket.
//! - echo: h1 keeps a window of timestamped frames in flight (4 × batch, 32..1024), h2 reflects
//!   them (MACs swapped); round-trip p50/p99 from the timestamps. Then the same with UDP sockets
//!   (non-blocking, busy-polling).
//!
//! With `--iface` the bench is one-sided on that interface (no placement tuning): txonly sends
//! to a locally administered unicast MAC (02:00:00:00:00:02), rxdrop receives whatever arrives,
//! echo reflects for a remote client.
mod udp;
mod xsk;

use self::{udp::*, xsk::*};

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{
    bench::{
        self, cpu_for, fmt_pps, gbps, latency_histogram, now_ns, pin_to_cpu, run_phase, udp_frame,
        Ctl, Worker, UDP_PAYLOAD,
    },
    cli::{RawArgs, RawMode},
    netns::NetNs,
    output::{Output, Table},
    testbed::{port_name, Spec, Testbed, HOST_NIC},
    xsk::{
        desc, BusyPoll, FrameAlloc, Mode, Socket, SocketConfig, Statistics, Umem, UmemConfig,
        XskProgram,
    },
};

const FRAME_SIZE: u32 = 2048;
const UDP_PORT: u16 = 9;
/// Frames per live-frames `BPF_PROG_RUN` call.
const GEN_REPEAT: u32 = 1 << 14;
/// Copy-mode TX descriptors per `sendto` (`XDP_MAX_TX_SKB_BUDGET`; default 32).
const TX_BUDGET: u32 = 256;

#[derive(Debug, Clone, Copy)]
struct Params {
    size: u32,
    batch: u32,
}

/// What one worker saw.
#[derive(Default)]
struct Report {
    xsk: Option<XskInfo>,
    stats: Option<Statistics>,
    hist: Option<Histogram<u64>>,
    lost: u64,
    other: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct XskInfo {
    mode: Mode,
    huge_pages: bool,
    tx_budget: Option<u32>,
}

impl XskInfo {
    fn of(s: &Socket) -> XskInfo {
        XskInfo { mode: s.mode(), huge_pages: s.umem().huge_pages(), tx_budget: s.tx_budget() }
    }
}

#[derive(Debug, Serialize)]
struct Row {
    path: String,
    sender: String,
    receiver: String,
    tx_pps: f64,
    rx_pps: f64,
    gbit_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rtt_p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rtt_p99_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    xsk: Option<XskInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    receiver_stats: Option<Statistics>,
    /// Frames received that were not the bench's (wrong size: neighbour discovery and such).
    other_frames: u64,
    seconds: f64,
    cpu_ns_per_frame: CpuPerFrame,
}

/// CPU nanoseconds per frame, from start to stop of the workers: the sending thread per frame
/// sent, the receiving thread per frame received (echo: per round trip), the receive NAPI
/// kernel thread per frame received (when it runs as a thread). Softirq work is charged to the
/// thread it interrupted. Unlike the rates, hardly changed by other load on the machine:
/// 1e9 / the busiest CPU's sum is the rate that CPU would sustain alone.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct CpuPerFrame {
    sender: Option<f64>,
    receiver: Option<f64>,
    napi: Option<f64>,
}

impl CpuPerFrame {
    /// From a phase's results: `sender`/`receiver` index the workers; `napi_ns` is the NAPI
    /// thread's CPU time over the phase.
    fn of(
        res: &bench::PhaseResult,
        sender: Option<usize>,
        receiver: Option<usize>,
        napi_ns: Option<u64>,
    ) -> CpuPerFrame {
        let per = |ns: u64, frames: u64| (frames > 0).then(|| ns as f64 / frames as f64);
        let cpu = |i: Option<usize>| i.and_then(|i| res.cpu_ns.get(i).copied());
        CpuPerFrame {
            sender: cpu(sender).and_then(|ns| per(ns, res.tx_total)),
            receiver: cpu(receiver).and_then(|ns| per(ns, res.rx_total)),
            napi: napi_ns.and_then(|ns| per(ns, res.rx_total)),
        }
    }

    fn cell(&self) -> String {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        format!("{} / {} / {}", f(self.sender), f(self.receiver), f(self.napi))
    }
}

#[derive(Debug, Serialize)]
struct Summary {
    mode: &'static str,
    size: u32,
    batch: u32,
    duration_s: f64,
    queues: u32,
    cpus: usize,
    iface: Option<String>,
    /// "direct" (one veth pair between the hosts) or "switch" (the testbed's switch namespace
    /// between them); None with `--iface`.
    topology: Option<&'static str>,
    rows: Vec<Row>,
    notes: Vec<String>,
}

/// Where a worker runs: a namespace (None: the caller's) and a CPU.
struct Place {
    ns: Option<NetNs>,
    cpu: usize,
    name: String,
    /// Another busy worker runs on the same CPU: yield after every batch.
    share: bool,
    /// Receive by busy polling ([`BusyPoll`]): the worker runs its NIC's receive processing.
    busy_poll: bool,
}

impl Place {
    fn enter(&self) -> anyhow::Result<usize> {
        if let Some(ns) = &self.ns {
            ns.enter()?;
        }
        pin_to_cpu(self.cpu)?;
        Ok(self.cpu)
    }

    fn label(&self, role: &str) -> String {
        format!("{} {role} cpu{}", self.name, self.cpu)
    }
}

pub fn run(args: RawArgs, out: &Output) -> anyhow::Result<()> {
    crate::sys::require_root("etran bench raw")?;
    let p = Params { size: args.size, batch: args.batch };
    let mut notes = vec![
        "tx: frames the sending kernel completed (AF_XDP completions, sendmmsg returns, \
         generated frames); rx: frames delivered to the receiving socket (echo: round trips); \
         the difference was dropped on the way (veth queues, a full fill ring)"
            .to_string(),
        "CPU ns/frame: CPU time of the sending thread per frame sent, of the receiving thread \
          and of the receive NAPI thread per frame received (softirq work counts for the thread \
          it ran on); 1e9 / the sum on one CPU is the rate that CPU sustains alone"
            .to_string(),
    ];
    let rows = match &args.iface {
        Some(iface) => one_sided(iface, args.mode, p, args.duration, out)?,
        None => on_testbed(args.mode, p, args.duration, args.switch, out, &mut notes)?,
    };
    let topology = args.iface.is_none().then_some(if args.switch { "switch" } else { "direct" });
    let summary = Summary {
        mode: mode_name(args.mode),
        size: p.size,
        batch: p.batch,
        duration_s: args.duration.as_secs_f64(),
        queues: 1,
        cpus: bench::cpu_count(),
        iface: args.iface.clone(),
        topology,
        rows,
        notes,
    };
    if out.json() {
        return out.print_json(&summary);
    }
    print_summary(&summary);
    Ok(())
}

fn mode_name(m: RawMode) -> &'static str {
    match m {
        RawMode::Txonly => "txonly",
        RawMode::Rxdrop => "rxdrop",
        RawMode::Echo => "echo",
    }
}

fn print_summary(s: &Summary) {
    let place = match (&s.iface, s.topology) {
        (Some(i), _) => format!("one-sided on {i}"),
        (None, Some("switch")) => "testbed h1 → switch namespace (XDP forwarding) → h2".into(),
        (None, _) => "testbed h1 ↔ h2 on one veth pair (no switch)".into(),
    };
    println!(
        "bench raw {}: {}-byte frames, batch {}, {:.1} s per path, one queue, {} CPUs, {place}",
        s.mode, s.size, s.batch, s.duration_s, s.cpus,
    );
    let echo = s.rows.iter().any(|r| r.rtt_p50_us.is_some());
    let mut header = vec!["path", "sender", "receiver", "tx", "rx", "Gbit/s"];
    if echo {
        header.extend(["RTT p50 µs", "RTT p99 µs"]);
    }
    header.push("CPU ns/frame tx / rx / napi");
    let mut t = Table::new(header);
    for r in &s.rows {
        let mut cells = vec![
            r.path.clone(),
            r.sender.clone(),
            r.receiver.clone(),
            if r.tx_pps > 0.0 { fmt_pps(r.tx_pps) } else { "-".into() },
            if r.rx_pps > 0.0 { fmt_pps(r.rx_pps) } else { "-".into() },
            format!("{:.3}", r.gbit_s),
        ];
        if echo {
            let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
            cells.push(f(r.rtt_p50_us));
            cells.push(f(r.rtt_p99_us));
        }
        cells.push(r.cpu_ns_per_frame.cell());
        t.row(cells);
    }
    print!("{}", t.render());
    for n in &s.notes {
        println!("{n}");
    }
    for r in &s.rows {
        if let Some(x) = &r.xsk {
            let mut line = format!(
                "{}: AF_XDP {} mode, UMEM on {} pages",
                r.path,
                x.mode,
                if x.huge_pages { "2 MiB" } else { "4 KiB" }
            );
            if let Some(b) = x.tx_budget {
                line.push_str(&format!(", TX budget {b}/sendto"));
            }
            if let Some(st) = &r.receiver_stats {
                line.push_str(&format!(
                    "; receiver drops: ring full {}, fill empty {}, other {}",
                    st.rx_ring_full, st.rx_fill_ring_empty_descs, st.rx_dropped
                ));
            }
            println!("{line}");
        }
    }
}

fn on_testbed(
    mode: RawMode,
    p: Params,
    d: Duration,
    switch: bool,
    out: &Output,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Row>> {
    let spec = Spec { direct: !switch, ..Spec::new("", 2) };
    let tb = Testbed::private_with(spec).context("building the private testbed")?;
    let (h1, h2) = (tb.host(1).clone(), tb.host(2).clone());
    let mut kernel =
        Kernel { hop: first_hop(&tb)?, h2: tb.netns(2)?, napi: Vec::new(), defer: false };
    let frame = udp_frame(h1.mac, h2.mac, h1.ip, h2.ip, 9000, UDP_PORT, p.size as usize);
    let payload = p.size as usize - UDP_PAYLOAD;
    let (nic1, nic2) = (h1.nic.clone(), h2.nic.clone());
    let (udp_dst, udp_src) = (SocketAddrV4::new(h2.ip, UDP_PORT), h1.ip);
    // Each row: its path, where its receive side runs, its two workers and their roles.
    type Make<'a> = Box<dyn FnOnce(Place) -> Worker<'a, Report> + 'a>;
    let mut plan: Vec<(&str, Rx, Make<'_>, Make<'_>, [&str; 2])> = Vec::new();
    match mode {
        RawMode::Txonly => {
            plan.push((
                "AF_XDP",
                Rx::NapiThread { loop_cpu: 0 },
                Box::new(|pl| xsk_tx_worker(pl, nic1.clone(), frame.clone(), p)),
                Box::new(|pl| xsk_rx_worker(pl, nic2.clone(), p)),
                ["tx", "rx"],
            ));
            plan.push((
                "Linux UDP",
                Rx::NapiThread { loop_cpu: 1 },
                Box::new(move |pl| udp_tx_worker(pl, udp_src, udp_dst, payload, p)),
                Box::new(move |pl| udp_rx_worker(pl, udp_dst, payload, p)),
                ["tx", "rx"],
            ));
        }
        RawMode::Rxdrop => {
            plan.push((
                "AF_XDP (BPF_PROG_RUN gen)",
                Rx::BusyPoll,
                Box::new(|pl| gen_worker(pl, nic1.clone(), frame.clone())),
                Box::new(|pl| xsk_rx_worker(pl, nic2.clone(), p)),
                ["gen", "rx"],
            ));
            plan.push((
                "AF_XDP→AF_XDP",
                Rx::NapiThread { loop_cpu: 0 },
                Box::new(|pl| xsk_tx_worker(pl, nic1.clone(), frame.clone(), p)),
                Box::new(|pl| xsk_rx_worker(pl, nic2.clone(), p)),
                ["tx", "rx"],
            ));
            plan.push((
                "Linux UDP (BPF_PROG_RUN gen)",
                Rx::Softirq,
                Box::new(|pl| gen_worker(pl, nic1.clone(), frame.clone())),
                Box::new(move |pl| udp_rx_worker(pl, udp_dst, payload, p)),
                ["gen", "rx"],
            ));
        }
        RawMode::Echo => {
            plan.push((
                "AF_XDP",
                Rx::Softirq,
                Box::new(|pl| xsk_echo_client_worker(pl, nic1.clone(), frame.clone(), p)),
                Box::new(|pl| xsk_reflect_worker(pl, nic2.clone(), p, false)),
                ["client", "reflector"],
            ));
            plan.push((
                "Linux UDP (busy-poll)",
                Rx::Softirq,
                Box::new(move |pl| udp_echo_client_worker(pl, udp_dst, payload, p)),
                Box::new(move |pl| udp_echo_server_worker(pl, udp_dst, payload, p)),
                ["client", "server"],
            ));
        }
    }
    let mut rows = Vec::new();
    for (path, rx, make_a, make_b, [role_a, role_b]) in plan {
        let rx = kernel.place(rx)?;
        notes.push(format!("placement ({path}): {}", rx.describe(&kernel.hop)));
        let (cpu_a, cpu_b) = (cpu_for(0), cpu_for(rx.loop_cpu()));
        let a = Place {
            ns: Some(tb.netns(1)?),
            cpu: cpu_a,
            name: "h1".into(),
            share: false,
            busy_poll: false,
        };
        let b = Place {
            ns: Some(tb.netns(2)?),
            cpu: cpu_b,
            name: "h2".into(),
            share: cpu_a == cpu_b,
            busy_poll: rx == Rx::BusyPoll,
        };
        rows.push(pair(path, d, out, a, b, make_a, make_b, role_a, role_b, p, &kernel.napi)?);
    }
    drop(kernel);
    drop(tb);
    Ok(rows)
}

/// Where a row's receive processing runs. The sender (or echo client) is always on cpu0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rx {
    /// The kernel's default: receive processing in softirq on the CPU that sent the frames;
    /// the receiving loop spins on cpu1.
    Softirq,
    /// The first hop's receive NAPI (and with it h2's XDP and AF_XDP copy) as a kernel thread
    /// on cpu1; the receiving loop on `loop_cpu` (with the sender on cpu0 it does almost
    /// nothing per frame and yields after each batch).
    NapiThread { loop_cpu: usize },
    /// The receiving loop busy-polls h2's NIC on cpu1: the AF_XDP copy runs in its thread and
    /// the kernel leaves that NAPI to it (no softirq on the sender's CPU, no kernel thread
    /// to wake). Any switch hop stays in softirq on the sender's CPU.
    BusyPoll,
}

impl Rx {
    fn loop_cpu(self) -> usize {
        match self {
            Rx::NapiThread { loop_cpu } => loop_cpu,
            Rx::Softirq | Rx::BusyPoll => 1,
        }
    }

    fn describe(self, hop: &Hop) -> String {
        match self {
            Rx::Softirq => format!(
                "receive processing in softirq on the sending cpu{}, receiving loop on cpu{}",
                cpu_for(0),
                cpu_for(1)
            ),
            Rx::NapiThread { loop_cpu } => format!(
                "{} receive NAPI as a thread on cpu{}, receiving loop on cpu{}",
                hop.label,
                cpu_for(1),
                cpu_for(loop_cpu)
            ),
            Rx::BusyPoll => format!(
                "receiving loop on cpu{} busy-polls h2 {HOST_NIC} (SO_PREFER_BUSY_POLL)",
                cpu_for(1)
            ),
        }
    }
}

/// The kernel side of the placement, switched between rows and put back on drop (the testbed
/// goes right after, but a failure in between should not leave a NAPI thread pinned).
struct Kernel {
    hop: Hop,
    h2: NetNs,
    /// The hop's NAPI threads while it runs threaded.
    napi: Vec<i32>,
    /// Whether h2's NIC defers its NAPI to busy polling.
    defer: bool,
}

impl Kernel {
    /// Sets up `rx`; on a one-CPU machine (or when threaded NAPI cannot be had) everything
    /// stays in softirq.
    fn place(&mut self, rx: Rx) -> anyhow::Result<Rx> {
        let rx = if bench::cpu_count() > 1 { rx } else { Rx::Softirq };
        let want_thread = matches!(rx, Rx::NapiThread { .. });
        let threaded = !self.napi.is_empty();
        if want_thread != threaded {
            self.napi = threaded_napi(&self.hop, want_thread.then(|| cpu_for(1)))?;
        }
        let want_defer = rx == Rx::BusyPoll;
        if want_defer != self.defer {
            defer_to_busy_poll(&self.h2, HOST_NIC, want_defer)?;
            self.defer = want_defer;
        }
        Ok(rx)
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let _ = self.place(Rx::Softirq);
    }
}

/// The interface where frames from h1 are first received (NAPI): the switch port facing h1,
/// or h2's NIC when the hosts share one veth pair.
struct Hop {
    ns: NetNs,
    dev: String,
    label: String,
}

fn first_hop(tb: &Testbed) -> anyhow::Result<Hop> {
    Ok(if tb.spec().direct {
        Hop { ns: tb.netns(2)?, dev: HOST_NIC.into(), label: format!("h2 {HOST_NIC}") }
    } else {
        let dev = port_name(1);
        Hop { ns: tb.switch_netns()?, label: format!("switch port {dev}"), dev }
    })
}

/// Runs `f` on a thread in `ns` that sees that namespace's sysfs (interface attributes are
/// per namespace): it unshares its mount namespace (slave, so nothing propagates back) and
/// mounts a fresh sysfs there, both gone with the thread.
fn in_sysfs<T: Send>(
    ns: &NetNs,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    use crate::sys::cvt;
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
            cvt(libc::mount(
                c"sysfs".as_ptr(),
                c"/sys".as_ptr(),
                c"sysfs".as_ptr(),
                0,
                std::ptr::null(),
            ))
            .context("mounting the namespace's sysfs")?;
        }
        f()
    })?
}

/// Makes `dev` in `ns` leave its receive NAPI to busy-polling sockets ([`BusyPoll`]), or
/// (`on` false) not: after a busy poll the kernel re-arms a timer instead of the device's
/// "interrupt" (for a veth, the peer's transmit scheduling its NAPI), twice before giving up.
fn defer_to_busy_poll(ns: &NetNs, dev: &str, on: bool) -> anyhow::Result<()> {
    let vals = if on { ["2", "200000"] } else { ["0", "0"] };
    in_sysfs(ns, || {
        for (attr, val) in ["napi_defer_hard_irqs", "gro_flush_timeout"].into_iter().zip(vals) {
            std::fs::write(format!("/sys/class/net/{dev}/{attr}"), val)
                .with_context(|| format!("setting {attr} of {dev}"))?;
        }
        Ok(())
    })
}

/// Gives `hop` threaded NAPI with its kernel thread pinned to `cpu`, or (None) takes it back to
/// softirq; returns the new kernel threads.
fn threaded_napi(hop: &Hop, cpu: Option<usize>) -> anyhow::Result<Vec<i32>> {
    use crate::sys::cvt;
    let dev = hop.dev.as_str();
    in_sysfs(&hop.ns, || {
        let before = napi_threads(dev);
        std::fs::write(
            format!("/sys/class/net/{dev}/threaded"),
            if cpu.is_some() { "1" } else { "0" },
        )
        .with_context(|| format!("switching threaded NAPI on {dev}"))?;
        let Some(cpu) = cpu else {
            return Ok(Vec::new());
        };
        let new: Vec<i32> = napi_threads(dev).into_iter().filter(|p| !before.contains(p)).collect();
        anyhow::ensure!(!new.is_empty(), "no NAPI thread appeared for {dev}");
        for &pid in &new {
            // SAFETY: cpu_set_t is plain data.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                cvt(libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set))
                    .with_context(|| format!("pinning NAPI thread {pid}"))?;
            }
        }
        Ok(new)
    })
}

/// Thread ids of the kernel's NAPI threads for `dev` (`napi/<dev>-<id>`).
fn napi_threads(dev: &str) -> Vec<i32> {
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

fn one_sided(
    iface: &str,
    mode: RawMode,
    p: Params,
    d: Duration,
    out: &Output,
) -> anyhow::Result<Vec<Row>> {
    crate::sys::ifindex(iface)?;
    // Same placement as on the testbed: senders on CPU 0, receivers and reflectors on CPU 1.
    let pl = Place {
        ns: None,
        cpu: cpu_for(usize::from(mode != RawMode::Txonly)),
        name: "local".into(),
        share: false,
        busy_poll: false,
    };
    let label = pl.label(match mode {
        RawMode::Txonly => "tx",
        RawMode::Rxdrop => "rx",
        RawMode::Echo => "reflector",
    });
    let worker: Worker<'_, Report> = match mode {
        RawMode::Txonly => {
            let mac = bench::mac_of(iface)?;
            let frame = udp_frame(
                mac,
                [0x02, 0, 0, 0, 0, 0x02],
                Ipv4Addr::new(10, 99, 0, 1),
                Ipv4Addr::new(10, 99, 0, 255),
                9000,
                UDP_PORT,
                p.size as usize,
            );
            xsk_tx_worker(pl, iface.to_string(), frame, p)
        }
        RawMode::Rxdrop => xsk_rx_worker(pl, iface.to_string(), p),
        RawMode::Echo => xsk_reflect_worker(pl, iface.to_string(), p, true),
    };
    let (res, reports) = run_phase("AF_XDP", d, out, vec![worker])?;
    let r = reports.into_iter().next().unwrap_or_default();
    let (sender, receiver) = match mode {
        RawMode::Txonly => (label, "-".to_string()),
        _ => ("-".to_string(), label),
    };
    let pps = res.tx_pps.max(res.rx_pps);
    Ok(vec![Row {
        path: "AF_XDP".into(),
        sender,
        receiver,
        tx_pps: res.tx_pps,
        rx_pps: res.rx_pps,
        gbit_s: gbps(pps, p.size),
        rtt_p50_us: None,
        rtt_p99_us: None,
        xsk: r.xsk,
        receiver_stats: r.stats,
        other_frames: r.other,
        seconds: res.seconds,
        cpu_ns_per_frame: if mode == RawMode::Txonly {
            CpuPerFrame::of(&res, Some(0), None, None)
        } else {
            CpuPerFrame::of(&res, None, Some(0), None)
        },
    }])
}

#[allow(clippy::too_many_arguments)]
fn pair<'a>(
    path: &str,
    d: Duration,
    out: &Output,
    a: Place,
    b: Place,
    make_a: impl FnOnce(Place) -> Worker<'a, Report> + 'a,
    make_b: impl FnOnce(Place) -> Worker<'a, Report> + 'a,
    role_a: &str,
    role_b: &str,
    p: Params,
    napi: &[i32],
) -> anyhow::Result<Row> {
    let (la, lb) = (a.label(role_a), b.label(role_b));
    let napi_cpu = || napi.iter().filter_map(|&t| bench::task_cpu_ns(t)).sum::<u64>();
    let napi0 = napi_cpu();
    let (res, reports) = run_phase(path, d, out, vec![make_a(a), make_b(b)])?;
    let napi_ns = (!napi.is_empty()).then(|| napi_cpu().saturating_sub(napi0));
    Ok(row(path, la, lb, &res, reports, p, napi_ns))
}

fn row(
    path: &str,
    sender: String,
    receiver: String,
    res: &bench::PhaseResult,
    reports: Vec<Report>,
    p: Params,
    napi_ns: Option<u64>,
) -> Row {
    let hist = reports.iter().find_map(|r| r.hist.as_ref());
    let us = |q: f64| hist.filter(|h| !h.is_empty()).map(|h| h.value_at_quantile(q) as f64 / 1e3);
    let xsk = reports.iter().find_map(|r| r.xsk);
    let receiver_stats = reports.get(1).and_then(|r| r.stats).or_else(|| reports[0].stats);
    Row {
        path: path.to_string(),
        sender,
        receiver,
        tx_pps: res.tx_pps,
        rx_pps: res.rx_pps,
        gbit_s: gbps(res.rx_pps, p.size),
        rtt_p50_us: us(0.5),
        rtt_p99_us: us(0.99),
        xsk,
        receiver_stats,
        other_frames: reports.iter().map(|r| r.other).sum(),
        seconds: res.seconds,
        cpu_ns_per_frame: CpuPerFrame::of(res, Some(0), Some(1), napi_ns),
    }
}

/// What a polling loop does when it has nothing (or has finished a batch): spin, or give the
/// CPU to the worker it shares it with.
fn relax(share: bool) {
    if share {
        // SAFETY: no preconditions.
        unsafe { libc::sched_yield() };
    } else {
        std::hint::spin_loop();
    }
}
