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
//!   then the generator into a Linux UDP socket. On a kernel that refuses live frames (this
//!   machine's 6.18.44) the AF_XDP sender's row alone, and a note says why.
//! - echo: h1 keeps a window of timestamped frames in flight (4 × batch, 32..1024), h2 reflects
//!   them (MACs swapped); round-trip p50/p99 from the timestamps. Then the same with UDP sockets
//!   (non-blocking, busy-polling).
//!
//! With `--queues N` (at most one per CPU) the hosts' NICs get N queues and each row runs N
//! lanes: lane q is one thread on CPU q that runs both ends of queue q in turn (socket pair,
//! or generator and socket), so each queue's frames, their receive processing (softirq on the
//! sending CPU) and their pages stay on one CPU. The Linux rows use N socket pairs on ports
//! 9 + q.
//!
//! With `--chain` (see [`chain`]) each host gets an app port as eTran's compat backend builds
//! it, and one row runs through the whole chain, port to port: txonly one-way, echo both ways.
//!
//! With `--iface` the bench is one-sided on that interface (no placement tuning): txonly sends
//! to a locally administered unicast MAC (02:00:00:00:00:02), rxdrop receives whatever arrives,
//! echo reflects for a remote client; `--queues N` runs one socket per queue, queue q on the
//! CPU after queue q−1's.
mod chain;
mod end;
mod udp;
mod xsk;

use self::{chain::*, end::*, udp::*, xsk::*};

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::Mutex,
    time::Duration,
};

use anyhow::Context;
use serde::Serialize;

use super::support::{
    self as bench, cpu_for, fmt_pps, gbps, pin_to_cpu, run_phase, udp_frame, Ctl, Worker,
    UDP_PAYLOAD,
};
use crate::{
    cli::{RawArgs, RawMode},
    napi,
    netns::NetNs,
    output::{Output, Table},
    testbed::{port_name, Spec, Testbed, HOST_NIC},
    xsk::{frame_size_for, Statistics, XskProgram},
};

const UDP_PORT: u16 = 9;
/// The Ethernet header: a frame is this much longer than the IP packet an MTU bounds.
const ETH_HLEN: u32 = 14;
/// Frames a receive-only socket lends the kernel when its loop has a CPU of its own. The frames
/// cycle through the FIFO fill ring, so each one's first cache line (where the kernel copies the
/// frame) and page are touched once per round: 1024 of them stay in cache and TLB; with 8192 the
/// copy missed, and rx-drop ran 25–40 % slower.
const RX_FRAMES_HOT: u32 = 1024;
/// ... and when the loop shares its CPU with the sender: it refills only when it gets the CPU
/// back, so the kernel needs a deeper reserve or it drops frames on an empty fill ring.
const RX_FRAMES_SHARED: u32 = 8192;
/// Opens an end in the calling thread's namespace.
type Open<'a> = Box<dyn for<'s> Fn(Setup<'s>) -> anyhow::Result<Box<dyn End>> + Send + Sync + 'a>;

/// A worker that runs one end on its own (pinned, in its namespace).
fn solo<'a>(pl: Place, open: &'a Open<'a>, setup: Setup<'a>) -> Worker<'a, Report> {
    Box::new(move |ctl: &Ctl| {
        pl.enter()?;
        let mut end = open(setup)?;
        if ctl.ready() {
            while !ctl.stopped() {
                let moved = end.step(ctl)?;
                if pl.share || !moved {
                    relax(pl.share);
                }
            }
        }
        Ok(end.finish())
    })
}

/// One end of a lane: where it opens, how, and with what.
struct LaneEnd<'a> {
    ns: NetNs,
    open: &'a Open<'a>,
    setup: Setup<'a>,
}

/// A worker that runs both ends of queue `setup.queue` in one thread on `cpu`: `b` (the
/// receiving side) opened in its namespace first, then `a` in its own, where the thread stays
/// (a generator needs that). Frames cross from one end to the other in softirq on this CPU,
/// so nothing crosses CPUs.
fn lane<'a>(cpu: usize, a: LaneEnd<'a>, b: LaneEnd<'a>) -> Worker<'a, Report> {
    Box::new(move |ctl: &Ctl| {
        b.ns.enter()?;
        let mut end_b = (b.open)(b.setup)?;
        a.ns.enter()?;
        let mut end_a = (a.open)(a.setup)?;
        pin_to_cpu(cpu)?;
        if ctl.ready() {
            while !ctl.stopped() {
                let moved = end_a.step(ctl)?;
                if !(end_b.step(ctl)? || moved) {
                    relax(false);
                }
            }
        }
        let mut r = end_a.finish();
        r.absorb(end_b.finish());
        Ok(r)
    })
}

#[derive(Debug, Serialize)]
struct Row {
    path: String,
    /// As the summary's: where this row ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    topology: Option<&'static str>,
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
    /// With lanes: the frames (echo: round trips) each lane received, by queue.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    lane_rx: Vec<u64>,
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
    /// With lanes: the CPU time of all lanes per frame received (or round trip; per frame sent
    /// for one-sided TX).
    #[serde(skip_serializing_if = "Option::is_none")]
    lanes: Option<f64>,
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
            lanes: None,
        }
    }

    /// All workers' CPU time per frame received (per frame sent when nothing is received:
    /// one-sided TX).
    fn of_lanes(res: &bench::PhaseResult) -> CpuPerFrame {
        let total: u64 = res.cpu_ns.iter().sum();
        let frames = if res.rx_total > 0 { res.rx_total } else { res.tx_total };
        let lanes = (frames > 0).then(|| total as f64 / frames as f64);
        CpuPerFrame { lanes, ..Default::default() }
    }

    fn cell(&self) -> String {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        match self.lanes {
            Some(v) => format!("{v:.0} (lanes)"),
            None => format!("{} / {} / {}", f(self.sender), f(self.receiver), f(self.napi)),
        }
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
    /// The testbed's MTU; None with `--iface`.
    mtu: Option<u32>,
    /// Through eTran's compat chain (`--chain`): app port, egress, NIC, ..., ingress, app port.
    chain: bool,
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
    if args.iface.is_none() && args.size > args.mtu + ETH_HLEN {
        anyhow::bail!(
            "--size {}: the testbed's MTU {} carries frames of at most {} bytes (raise --mtu)",
            args.size,
            args.mtu,
            args.mtu + ETH_HLEN
        );
    }
    if args.chain && (args.mode == RawMode::Rxdrop || args.queues > 1) {
        anyhow::bail!("--chain measures --mode txonly and echo on one queue (an app port has one)");
    }
    let frame_size =
        if args.chain { chain::frame_size(args.mtu)? } else { frame_size_for(args.size, 0)? };
    let p = Params { size: args.size, batch: args.batch, frame_size };
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
    let cpus = bench::cpu_count();
    if args.queues as usize > cpus {
        anyhow::bail!(
            "--queues {}: this machine has {cpus} CPU{}, and bench raw runs one lane per queue \
             and CPU",
            args.queues,
            if cpus == 1 { "" } else { "s" }
        );
    }
    if args.queues > 1 {
        notes.push(
            "lanes: queue q's two ends run in one thread on cpu q, taking turns; frames cross \
             between them in softirq on that CPU; CPU ns/frame (lanes) is all lanes' CPU time \
             per frame received"
                .to_string(),
        );
    }
    let mut rows = match &args.iface {
        Some(iface) => one_sided(iface, args.mode, p, args.queues, args.duration, out)?,
        None => on_testbed(&args, p, out, &mut notes)?,
    };
    let topology = args.iface.is_none().then_some(if args.switch { "switch" } else { "direct" });
    for r in &mut rows {
        r.topology = topology;
    }
    let summary = Summary {
        mode: mode_name(args.mode),
        size: p.size,
        batch: p.batch,
        duration_s: args.duration.as_secs_f64(),
        queues: args.queues,
        cpus: bench::cpu_count(),
        iface: args.iface.clone(),
        topology,
        mtu: args.iface.is_none().then_some(args.mtu),
        chain: args.chain,
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
    let mtu = s.mtu.map_or_else(String::new, |m| format!(", MTU {m}"));
    let place = match (&s.iface, s.topology) {
        (Some(i), _) => format!("one-sided on {i}"),
        (None, Some("switch")) => {
            format!("testbed h1 → switch namespace (XDP forwarding) → h2{mtu}")
        }
        (None, _) => format!("testbed h1 ↔ h2 on one veth pair (no switch){mtu}"),
    };
    let place = match s.chain {
        true => format!(
            "{place}; through eTran's compat chain: app port etp1a → egress stand-in on etp1k \
             → h1 eth0 → … → h2 eth0, ingress stand-in → etp1k → etp1a → AF_XDP socket"
        ),
        false => place,
    };
    let queues = match s.queues {
        1 => "one queue".to_string(),
        n => format!("{n} queues"),
    };
    crate::outln!(
        "bench raw {}: {}-byte frames, batch {}, {:.1} s per path, {queues}, {} CPUs, {place}",
        s.mode,
        s.size,
        s.batch,
        s.duration_s,
        s.cpus,
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
    crate::out!("{}", t.render());
    for n in &s.notes {
        crate::outln!("{n}");
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
                    "; drops at receiving sockets: ring full {}, fill empty {}, other {}",
                    st.rx_ring_full, st.rx_fill_ring_empty_descs, st.rx_dropped
                ));
            }
            crate::outln!("{line}");
        }
    }
}

/// The XDP programs a row needs on a host.
#[derive(Debug, Clone, Copy, Default)]
struct Needs {
    /// `xsk_redirect` on the NIC: the host receives with AF_XDP.
    steer: bool,
    /// `xsk_pktgen`, transmitting out of the NIC.
    gen: bool,
}

const NOTHING: Needs = Needs { steer: false, gen: false };
const STEER: Needs = Needs { steer: true, gen: false };
const GEN: Needs = Needs { steer: false, gen: true };

/// One row of a mode: its path, where its receive side runs (one queue), and its two ends: h1's
/// (sender, generator or client) and h2's (receiver or reflector).
struct RowPlan<'a> {
    path: &'static str,
    rx: Rx,
    a: EndPlan<'a>,
    b: EndPlan<'a>,
}

/// One end of a row: its role (for labels), the XDP programs it needs on its host, and how it
/// opens.
struct EndPlan<'a> {
    role: &'static str,
    needs: Needs,
    open: Open<'a>,
}

fn end<'a>(role: &'static str, needs: Needs, open: Open<'a>) -> EndPlan<'a> {
    EndPlan { role, needs, open }
}

/// Loads and attaches what `needs` asks for on the host of `ns` (None when nothing).
fn host_programs(ns: &NetNs, needs: Needs) -> anyhow::Result<Option<Mutex<XskProgram>>> {
    if !needs.steer && !needs.gen {
        return Ok(None);
    }
    let prog = ns.run(|| -> anyhow::Result<XskProgram> {
        let nic = crate::sys::ifindex(HOST_NIC)?;
        let mut prog = XskProgram::load(if needs.gen { nic } else { 0 })?;
        if needs.steer {
            prog.attach_redirect(nic)?;
        }
        if needs.gen {
            // Attached (to lo, where it passes everything) so test runs skip an RCU grace
            // period.
            prog.attach_pktgen(crate::sys::ifindex("lo")?)?;
        }
        Ok(prog)
    })??;
    Ok(Some(Mutex::new(prog)))
}

fn plan<'a>(
    mode: RawMode,
    tb: &Testbed,
    p: Params,
    chain: Option<&'a [AppSide; 2]>,
) -> Vec<RowPlan<'a>> {
    let (h1, h2) = (tb.host(1).clone(), tb.host(2).clone());
    let payload = p.size as usize - UDP_PAYLOAD;
    let (src, dst) = (h1.ip, h2.ip);
    // Queue q's traffic goes to UDP port UDP_PORT + q (where lane q's Linux socket listens).
    let port = |s: &Setup| UDP_PORT + s.queue as u16;
    let udp_dst = move |s: &Setup| SocketAddrV4::new(dst, port(s));
    let frame =
        move |s: &Setup| udp_frame(h1.mac, h2.mac, src, dst, 9000, port(s), p.size as usize);
    let xsk_rx = move || -> Open<'a> {
        Box::new(move |s| Ok(Box::new(XskRx::open(Src::Iface(HOST_NIC), p, s)?)))
    };
    // AF_XDP TX into AF_XDP RX; the receive NAPI as a thread on the other CPU.
    let xsk_to_xsk = |path| RowPlan {
        path,
        rx: Rx::NapiThread { loop_cpu: 0 },
        a: end(
            "tx",
            NOTHING,
            Box::new(move |s| Ok(Box::new(XskTx::open(Src::Iface(HOST_NIC), &frame(&s), p, s)?))),
        ),
        b: end("rx", STEER, xsk_rx()),
    };
    let gen = move || -> Open<'a> {
        Box::new(move |s| Ok(Box::new(Gen::open(HOST_NIC, &frame(&s), s)?)))
    };
    let udp_rx =
        || -> Open<'a> { Box::new(move |s| Ok(Box::new(UdpRx::open(udp_dst(&s), payload, p)?))) };
    if let Some([a, b]) = chain {
        let (a, b) = (Src::Port(a), Src::Port(b));
        // Receive processing where eTran's apps get it: softirq on the sending CPU.
        return vec![match mode {
            RawMode::Echo => RowPlan {
                path: "chain echo",
                rx: Rx::Softirq,
                a: end(
                    "client",
                    NOTHING,
                    Box::new(move |s| Ok(Box::new(XskEchoClient::open(a, &frame(&s), p, s)?))),
                ),
                b: end(
                    "reflector",
                    NOTHING,
                    Box::new(move |s| Ok(Box::new(XskReflect::open(b, p, false, s)?))),
                ),
            },
            _ => RowPlan {
                path: "chain one-way",
                rx: Rx::Softirq,
                a: end(
                    "tx",
                    NOTHING,
                    Box::new(move |s| Ok(Box::new(XskTx::open(a, &frame(&s), p, s)?))),
                ),
                b: end("rx", NOTHING, Box::new(move |s| Ok(Box::new(XskRx::open(b, p, s)?)))),
            },
        }];
    }
    match mode {
        RawMode::Txonly => vec![
            xsk_to_xsk("AF_XDP"),
            RowPlan {
                path: "Linux UDP",
                rx: Rx::NapiThread { loop_cpu: 1 },
                a: end(
                    "tx",
                    NOTHING,
                    Box::new(move |s| Ok(Box::new(UdpTx::open(src, udp_dst(&s), payload, p)?))),
                ),
                b: end("rx", NOTHING, udp_rx()),
            },
        ],
        RawMode::Rxdrop => vec![
            RowPlan {
                path: "AF_XDP (BPF_PROG_RUN gen)",
                rx: Rx::BusyPoll,
                a: end("gen", GEN, gen()),
                b: end("rx", STEER, xsk_rx()),
            },
            xsk_to_xsk("AF_XDP→AF_XDP"),
            RowPlan {
                path: "Linux UDP (BPF_PROG_RUN gen)",
                rx: Rx::Softirq,
                a: end("gen", GEN, gen()),
                b: end("rx", NOTHING, udp_rx()),
            },
        ],
        RawMode::Echo => vec![
            RowPlan {
                path: "AF_XDP",
                rx: Rx::Softirq,
                a: end(
                    "client",
                    STEER,
                    Box::new(move |s| {
                        Ok(Box::new(XskEchoClient::open(Src::Iface(HOST_NIC), &frame(&s), p, s)?))
                    }),
                ),
                b: end(
                    "reflector",
                    STEER,
                    Box::new(move |s| {
                        Ok(Box::new(XskReflect::open(Src::Iface(HOST_NIC), p, false, s)?))
                    }),
                ),
            },
            RowPlan {
                path: "Linux UDP (busy-poll)",
                rx: Rx::Softirq,
                a: end(
                    "client",
                    NOTHING,
                    Box::new(move |s| Ok(Box::new(UdpEchoClient::open(udp_dst(&s), payload, p)?))),
                ),
                b: end(
                    "server",
                    NOTHING,
                    Box::new(move |s| Ok(Box::new(UdpEchoServer::open(udp_dst(&s), payload, p)?))),
                ),
            },
        ],
    }
}

fn on_testbed(
    args: &RawArgs,
    p: Params,
    out: &Output,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Row>> {
    let (mode, queues, d) = (args.mode, args.queues, args.duration);
    let spec = Spec { direct: !args.switch, queues, mtu: args.mtu, ..Spec::new("", 2) };
    let tb = Testbed::private_with(spec).context("building the private testbed")?;
    let mut kernel =
        Kernel { hop: first_hop(&tb)?, h2: tb.netns(2)?, napi: Vec::new(), defer: false };
    let chain = match args.chain {
        true => Some([
            ChainHost::build(&tb.netns(1)?, HOST_NIC, args.mtu)?,
            ChainHost::build(&tb.netns(2)?, HOST_NIC, args.mtu)?,
        ]),
        false => None,
    };
    let app_sides = match &chain {
        Some([a, b]) => Some([a.app_side()?, b.app_side()?]),
        None => None,
    };
    // Some kernels refuse BPF_PROG_RUN with live frames (this machine's 6.18.44: EPERM).
    let live_frames = crate::loader::kernel::Feature::LiveFrames.probe();
    if mode == RawMode::Rxdrop && !live_frames {
        notes.push(
            "this kernel refuses BPF_PROG_RUN with live frames: no generator rows, the \
             AF_XDP→AF_XDP row alone (its sender sets the pace)"
                .to_string(),
        );
    }
    let mut rows = Vec::new();
    for row_plan in plan(mode, &tb, p, app_sides.as_ref())
        .into_iter()
        .filter(|r| live_frames || !(r.a.needs.gen || r.b.needs.gen))
    {
        let RowPlan { path, rx, a, b } = row_plan;
        let (ns1, ns2) = (tb.netns(1)?, tb.netns(2)?);
        let progs_a = host_programs(&ns1, a.needs)?;
        let progs_b = host_programs(&ns2, b.needs)?;
        if queues > 1 {
            kernel.place(Rx::Softirq)?;
            let mut workers = Vec::new();
            for q in 0..queues {
                workers.push(lane(
                    q as usize,
                    LaneEnd {
                        ns: ns1.try_clone()?,
                        open: &a.open,
                        setup: Setup::lane(&progs_a, q),
                    },
                    LaneEnd {
                        ns: ns2.try_clone()?,
                        open: &b.open,
                        setup: Setup::lane(&progs_b, q),
                    },
                ));
            }
            let (res, reports) = run_phase(path, d, out, workers)?;
            let last = queues - 1;
            let (la, lb) = (format!("h1 {} q0-{last}", a.role), format!("h2 {} q0-{last}", b.role));
            rows.push(row(path, la, lb, &res, reports, p, CpuPerFrame::of_lanes(&res)));
            continue;
        }
        let rx = kernel.place(rx)?;
        notes.push(format!("placement ({path}): {}", rx.describe(&kernel.hop)));
        let (cpu_a, cpu_b) = (cpu_for(0), cpu_for(rx.loop_cpu()));
        let share = cpu_a == cpu_b;
        let pa = Place { ns: Some(ns1), cpu: cpu_a, name: "h1".into(), share: false };
        let pb = Place { ns: Some(ns2), cpu: cpu_b, name: "h2".into(), share };
        let sa = Setup::solo(&progs_a, 0, false, RX_FRAMES_HOT);
        let lent = match (args.chain, share) {
            (true, _) => chain::APP_LENDS,
            (false, true) => RX_FRAMES_SHARED,
            (false, false) => RX_FRAMES_HOT,
        };
        let sb = Setup::solo(&progs_b, 0, rx == Rx::BusyPoll, lent);
        let (la, lb) = (pa.label(a.role), pb.label(b.role));
        let napi = kernel.napi.clone();
        let napi_cpu = || napi.iter().filter_map(|&t| bench::task_cpu_ns(t)).sum::<u64>();
        let napi0 = napi_cpu();
        let (res, reports) =
            run_phase(path, d, out, vec![solo(pa, &a.open, sa), solo(pb, &b.open, sb)])?;
        let napi_ns = (!napi.is_empty()).then(|| napi_cpu().saturating_sub(napi0));
        let cpu = CpuPerFrame::of(&res, Some(0), Some(1), napi_ns);
        rows.push(row(path, la, lb, &res, reports, p, cpu));
    }
    drop(kernel);
    drop(chain);
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
            napi::defer_to_busy_poll(&self.h2, HOST_NIC, want_defer)?;
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

/// Gives `hop` threaded NAPI with its kernel thread pinned to `cpu`, or (None) takes it back to
/// softirq; returns its kernel threads.
fn threaded_napi(hop: &Hop, cpu: Option<usize>) -> anyhow::Result<Vec<i32>> {
    use crate::sys::cvt;
    let threads = napi::set_threaded(&hop.ns, &hop.dev, cpu.is_some())?;
    if let Some(cpu) = cpu {
        for &pid in &threads {
            // SAFETY: cpu_set_t is plain data.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                cvt(libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set))
                    .with_context(|| format!("pinning NAPI thread {pid}"))?;
            }
        }
    }
    Ok(threads)
}

fn one_sided(
    iface: &str,
    mode: RawMode,
    p: Params,
    queues: u32,
    d: Duration,
    out: &Output,
) -> anyhow::Result<Vec<Row>> {
    let ifindex = crate::sys::ifindex(iface)?;
    if let Some(have) = crate::ethtool::rx_queues(iface)? {
        let plural = if have == 1 { "" } else { "s" };
        anyhow::ensure!(
            queues <= have,
            "--queues {queues}: {iface} has only {have} RX queue{plural}"
        );
    }
    let open: Open<'_> = match mode {
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
            Box::new(move |s| Ok(Box::new(XskTx::open(Src::Iface(iface), &frame, p, s)?)))
        }
        RawMode::Rxdrop => Box::new(move |s| Ok(Box::new(XskRx::open(Src::Iface(iface), p, s)?))),
        RawMode::Echo => {
            Box::new(move |s| Ok(Box::new(XskReflect::open(Src::Iface(iface), p, true, s)?)))
        }
    };
    let programs = if mode == RawMode::Txonly {
        None
    } else {
        let mut prog = XskProgram::load(0)?;
        prog.attach_redirect(ifindex)?;
        Some(Mutex::new(prog))
    };
    // Same placement as on the testbed: senders from CPU 0, receivers and reflectors from
    // CPU 1; queue q one CPU further.
    let first = usize::from(mode != RawMode::Txonly);
    let role = match mode {
        RawMode::Txonly => "tx",
        RawMode::Rxdrop => "rx",
        RawMode::Echo => "reflector",
    };
    let place = |q: u32| Place {
        ns: None,
        cpu: cpu_for(first + q as usize),
        name: "local".into(),
        share: false,
    };
    let label = match queues {
        1 => place(0).label(role),
        n => format!("local {role} q0-{}", n - 1),
    };
    let workers = (0..queues)
        .map(|q| solo(place(q), &open, Setup::solo(&programs, q, false, RX_FRAMES_HOT)))
        .collect();
    let (res, reports) = run_phase("AF_XDP", d, out, workers)?;
    let (sender, receiver) = match mode {
        RawMode::Txonly => (label, "-".to_string()),
        _ => ("-".to_string(), label),
    };
    let cpu = if queues > 1 {
        CpuPerFrame::of_lanes(&res)
    } else if mode == RawMode::Txonly {
        CpuPerFrame::of(&res, Some(0), None, None)
    } else {
        CpuPerFrame::of(&res, None, Some(0), None)
    };
    let mut r = row("AF_XDP", sender, receiver, &res, reports, p, cpu);
    r.gbit_s = gbps(res.tx_pps.max(res.rx_pps), p.size);
    Ok(vec![r])
}

/// A row from a phase's results; the workers' reports are folded into one.
fn row(
    path: &str,
    sender: String,
    receiver: String,
    res: &bench::PhaseResult,
    reports: Vec<Report>,
    p: Params,
    cpu_ns_per_frame: CpuPerFrame,
) -> Row {
    let lane_rx = match cpu_ns_per_frame.lanes {
        Some(_) => reports.iter().map(|r| r.rx).collect(),
        None => Vec::new(),
    };
    let mut all = Report::default();
    for r in reports {
        all.absorb(r);
    }
    let us = |q: f64| {
        all.hist.as_ref().filter(|h| !h.is_empty()).map(|h| h.value_at_quantile(q) as f64 / 1e3)
    };
    Row {
        path: path.to_string(),
        // The caller knows the testbed.
        topology: None,
        sender,
        receiver,
        tx_pps: res.tx_pps,
        rx_pps: res.rx_pps,
        gbit_s: gbps(res.rx_pps, p.size),
        rtt_p50_us: us(0.5),
        rtt_p99_us: us(0.99),
        xsk: all.xsk,
        receiver_stats: all.stats,
        other_frames: all.other,
        lane_rx,
        seconds: res.seconds,
        cpu_ns_per_frame,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_window_keeps_its_frames_in_flight_and_gives_up_on_silence() {
        let mut w = EchoWindow::new(64);
        assert_eq!(w.room(), 64, "a batch at a time");
        w.sent(256);
        assert_eq!(w.room(), 0, "4 × batch in flight");
        w.returned(10);
        assert_eq!(w.room(), 10);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(w.room(), 64, "the rest counted lost after 50 ms of silence");
        assert_eq!(w.lost, 246);
    }

    #[test]
    fn lane_cpu_is_per_frame_received_or_sent() {
        let res = |tx_total, rx_total| bench::PhaseResult {
            tx_total,
            rx_total,
            cpu_ns: vec![600, 400],
            ..Default::default()
        };
        assert_eq!(CpuPerFrame::of_lanes(&res(100, 10)).lanes, Some(100.0));
        assert_eq!(CpuPerFrame::of_lanes(&res(50, 0)).lanes, Some(20.0));
        assert_eq!(CpuPerFrame::of_lanes(&res(0, 0)).lanes, None);
        assert_eq!(CpuPerFrame::of_lanes(&res(1, 1)).cell(), "1000 (lanes)");
    }
}
