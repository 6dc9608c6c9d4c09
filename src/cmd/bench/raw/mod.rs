//! `etran bench raw`: the raw AF_XDP frame rate between two hosts with no transport, beside
//! the Linux UDP socket rate for the same pattern. The ceiling every transport is judged by.
//!
//! On the built-in testbed (no `--iface`): host 1 is the sender / echo client, host 2 the
//! receiver / reflector; the receiving NIC gets `xsk_redirect` for the AF_XDP phases only.
//! Placement (printed with the results): on one CPU the whole one-way path (send, the switch's
//! XDP forwarding, the receiver's XDP and AF_XDP copy) would run where the sender runs, so for
//! txonly and rxdrop the switch port facing h1 gets threaded NAPI pinned to CPU 1, and the
//! sender plus the receiving loop (which does almost nothing per frame and yields after each
//! batch) share CPU 0. Echo splits naturally: client on CPU 0, reflector on CPU 1. Linux UDP
//! receivers spin on CPU 1. Modes:
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
    xsk::{desc, FrameAlloc, Mode, Socket, SocketConfig, Statistics, Umem, UmemConfig, XskProgram},
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
    let mut notes =
        vec!["tx: frames the sending kernel completed (AF_XDP completions, sendmmsg returns, \
         generated frames); rx: frames delivered to the receiving socket (echo: round trips); \
         the difference was dropped on the way (veth queues, a full fill ring)"
            .to_string()];
    let rows = match &args.iface {
        Some(iface) => one_sided(iface, args.mode, p, args.duration, out)?,
        None => on_testbed(args.mode, p, args.duration, out, &mut notes)?,
    };
    let summary = Summary {
        mode: mode_name(args.mode),
        size: p.size,
        batch: p.batch,
        duration_s: args.duration.as_secs_f64(),
        queues: 1,
        cpus: bench::cpu_count(),
        iface: args.iface.clone(),
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
    println!(
        "bench raw {}: {}-byte frames, batch {}, {:.1} s per path, one queue, {} CPUs{}",
        s.mode,
        s.size,
        s.batch,
        s.duration_s,
        s.cpus,
        s.iface.as_ref().map(|i| format!(", one-sided on {i}")).unwrap_or_default()
    );
    let echo = s.rows.iter().any(|r| r.rtt_p50_us.is_some());
    let mut header = vec!["path", "sender", "receiver", "tx", "rx", "Gbit/s"];
    if echo {
        header.extend(["RTT p50 µs", "RTT p99 µs"]);
    }
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
    out: &Output,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Row>> {
    let tb = crate::testbed::Testbed::private(2).context("building the private testbed")?;
    let (h1, h2) = (tb.host(1).clone(), tb.host(2).clone());
    // One-way modes: the switch's receive processing for h1's frames (its XDP forwarding, and
    // with it h2's XDP and AF_XDP copy) moves to a kernel thread on the second CPU, so the
    // sender's CPU only sends; the receiving loop, which does almost nothing per frame, shares
    // the first CPU with the sender. Without that, one CPU runs the whole path.
    let mut split = false;
    if mode != RawMode::Echo && bench::cpu_count() > 1 {
        match threaded_napi(&tb, 1, Some(cpu_for(1))) {
            Ok(()) => {
                split = true;
                notes.push(format!(
                    "placement (AF_XDP rows): switch port {} receive processing (threaded NAPI, \
                     where h2's XDP and AF_XDP copy also run) on cpu{}; h1 sender and h2 receive \
                     loop on cpu{}",
                    crate::testbed::port_name(1),
                    cpu_for(1),
                    cpu_for(0)
                ));
                notes.push(if mode == RawMode::Txonly {
                    format!(
                        "placement (Linux UDP rows): the same, but the UDP receiver spins on \
                         cpu{} (Linux's best placement for this pattern)",
                        cpu_for(1)
                    )
                } else {
                    format!(
                        "placement (Linux UDP rows): switch port {} back to softirq on the \
                         sender's cpu{}, UDP receiver spinning on cpu{} (Linux's best placement \
                         for this pattern: with threaded NAPI it received about 4x less)",
                        crate::testbed::port_name(1),
                        cpu_for(0),
                        cpu_for(1)
                    )
                });
            }
            Err(e) => notes.push(format!(
                "placement: could not move the switch's receive processing off the sender's \
                 CPU ({e:#}); the whole path runs on cpu{}",
                cpu_for(0)
            )),
        }
    }
    let place = |idx: u8, role: usize| -> anyhow::Result<Place> {
        let receiver = role == 1 && split;
        Ok(Place {
            ns: Some(tb.netns(idx)?),
            cpu: if receiver { cpu_for(0) } else { cpu_for(role) },
            name: format!("h{idx}"),
            share: receiver,
        })
    };
    // Linux UDP gets the placement where it did best in our measurements: its receive loop
    // spinning alone on the second CPU; for the generator pattern with the switch back in
    // softirq (its GRO/IP/UDP work then stays on the first CPU), for txonly as is.
    let udp_receiver = |keep_split: bool| -> anyhow::Result<Place> {
        if split && !keep_split {
            threaded_napi(&tb, 1, None)?;
        }
        Ok(Place { ns: Some(tb.netns(2)?), cpu: cpu_for(1), name: "h2".into(), share: false })
    };
    let frame = udp_frame(h1.mac, h2.mac, h1.ip, h2.ip, 9000, UDP_PORT, p.size as usize);
    let payload = p.size as usize - UDP_PAYLOAD;
    let (nic1, nic2) = (h1.nic.clone(), h2.nic.clone());
    let mut rows = Vec::new();
    match mode {
        RawMode::Txonly => {
            rows.push(pair(
                "AF_XDP",
                d,
                out,
                place(1, 0)?,
                place(2, 1)?,
                |pl| xsk_tx_worker(pl, nic1.clone(), frame.clone(), p),
                |pl| xsk_rx_worker(pl, nic2.clone(), p),
                "tx",
                "rx",
                p,
            )?);
            rows.push(pair(
                "Linux UDP",
                d,
                out,
                place(1, 0)?,
                udp_receiver(true)?,
                |pl| udp_tx_worker(pl, h1.ip, SocketAddrV4::new(h2.ip, UDP_PORT), payload, p),
                |pl| udp_rx_worker(pl, SocketAddrV4::new(h2.ip, UDP_PORT), payload, p),
                "tx",
                "rx",
                p,
            )?);
        }
        RawMode::Rxdrop => {
            rows.push(pair(
                "AF_XDP (BPF_PROG_RUN gen)",
                d,
                out,
                place(1, 0)?,
                place(2, 1)?,
                |pl| gen_worker(pl, nic1.clone(), frame.clone()),
                |pl| xsk_rx_worker(pl, nic2.clone(), p),
                "gen",
                "rx",
                p,
            )?);
            rows.push(pair(
                "AF_XDP→AF_XDP",
                d,
                out,
                place(1, 0)?,
                place(2, 1)?,
                |pl| xsk_tx_worker(pl, nic1.clone(), frame.clone(), p),
                |pl| xsk_rx_worker(pl, nic2.clone(), p),
                "tx",
                "rx",
                p,
            )?);
            rows.push(pair(
                "Linux UDP (BPF_PROG_RUN gen)",
                d,
                out,
                place(1, 0)?,
                udp_receiver(false)?,
                |pl| gen_worker(pl, nic1.clone(), frame.clone()),
                |pl| udp_rx_worker(pl, SocketAddrV4::new(h2.ip, UDP_PORT), payload, p),
                "gen",
                "rx",
                p,
            )?);
        }
        RawMode::Echo => {
            rows.push(pair(
                "AF_XDP",
                d,
                out,
                place(1, 0)?,
                place(2, 1)?,
                |pl| xsk_echo_client_worker(pl, nic1.clone(), frame.clone(), p),
                |pl| xsk_reflect_worker(pl, nic2.clone(), p, false),
                "client",
                "reflector",
                p,
            )?);
            rows.push(pair(
                "Linux UDP (busy-poll)",
                d,
                out,
                place(1, 0)?,
                place(2, 1)?,
                |pl| udp_echo_client_worker(pl, SocketAddrV4::new(h2.ip, UDP_PORT), payload, p),
                |pl| udp_echo_server_worker(pl, SocketAddrV4::new(h2.ip, UDP_PORT), payload, p),
                "client",
                "server",
                p,
            )?);
        }
    }
    drop(tb);
    Ok(rows)
}

/// Gives switch port `p{idx}` threaded NAPI with its kernel thread pinned to `cpu`, or (None)
/// takes it back to softirq. Threaded NAPI is switched through sysfs, which has to be the switch
/// namespace's: a short-lived thread enters it, unshares its mount namespace (slave, so nothing
/// propagates back) and mounts a fresh sysfs there. The kernel thread that appears is pinned.
fn threaded_napi(tb: &crate::testbed::Testbed, idx: u8, cpu: Option<usize>) -> anyhow::Result<()> {
    use crate::sys::cvt;
    let dev = crate::testbed::port_name(idx);
    let ns = tb.switch_netns()?;
    ns.run(|| -> anyhow::Result<()> {
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
            .context("mounting the switch's sysfs")?;
        }
        let before = napi_threads(&dev);
        std::fs::write(
            format!("/sys/class/net/{dev}/threaded"),
            if cpu.is_some() { "1" } else { "0" },
        )
        .with_context(|| format!("switching threaded NAPI on {dev}"))?;
        let Some(cpu) = cpu else {
            return Ok(());
        };
        let new: Vec<i32> =
            napi_threads(&dev).into_iter().filter(|p| !before.contains(p)).collect();
        anyhow::ensure!(!new.is_empty(), "no NAPI thread appeared for {dev}");
        for pid in new {
            // SAFETY: cpu_set_t is plain data.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                cvt(libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set))
                    .with_context(|| format!("pinning NAPI thread {pid}"))?;
            }
        }
        Ok(())
    })?
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
) -> anyhow::Result<Row> {
    let (la, lb) = (a.label(role_a), b.label(role_b));
    let (res, reports) = run_phase(path, d, out, vec![make_a(a), make_b(b)])?;
    Ok(row(path, la, lb, &res, reports, p))
}

fn row(
    path: &str,
    sender: String,
    receiver: String,
    res: &bench::PhaseResult,
    reports: Vec<Report>,
    p: Params,
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
