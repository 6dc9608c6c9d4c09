//! `etran bench echo`: TCP echo, eTran against Linux TCP, same testbed, same message pattern,
//! same CPU placement, printed side by side. `--wait` says how every side waits: `busy` (eTran
//! apps poll their port in a loop; Linux sockets are busy-polled, epoll with a zero timeout) or
//! `block` (eTran apps wait in the library, [`crate::app::App::wait`]: its busy-poll budget,
//! then sleep; Linux sockets sleep in epoll_wait).
use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde::Serialize;

use super::{
    etran_echo::{self, LeakCheck, Peer},
    linux_echo::{self, Client, ClientResult, Progress, Server, Share, Wait},
    support::{self as bench, CpuUse},
};
use crate::{
    app::{AppCounters, DEFAULT_BUSY_POLL},
    bpf::entrance::types::etran_backend,
    cli::{EchoArgs, EchoTransport, EchoWait},
    netns::NetNs,
    output::{Output, Table},
    sys, testbed,
};

#[derive(Serialize)]
pub(super) struct Percentiles {
    pub(super) p50: f64,
    pub(super) p99: f64,
    pub(super) p99_9: f64,
}

impl Percentiles {
    /// Of a histogram in nanoseconds, in microseconds.
    pub(super) fn of(h: &hdrhistogram::Histogram<u64>) -> Percentiles {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Percentiles { p50: us(0.5), p99: us(0.99), p99_9: us(0.999) }
    }
}

#[derive(Serialize)]
struct Row {
    transport: &'static str,
    /// Where the row ran: "switch" (the testbed's XDP switch between the hosts) or "direct"
    /// (one veth pair).
    topology: &'static str,
    /// Whether the hosts' NICs had TX checksum offload, and with it TSO (the Linux row on the
    /// direct topology).
    tso: bool,
    /// Why there are no numbers (a transport this build cannot run yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    unavailable: Option<String>,
    messages_per_sec: f64,
    /// Payload each way.
    gbit_per_sec: f64,
    rtt_us: Option<Percentiles>,
    messages: u64,
    verified_bytes: u64,
    /// CPU time per round trip, both hosts (apps, daemons, softirq work; busy-polling counts
    /// as used), in microseconds.
    cpu_us_per_msg: Option<f64>,
    /// CPU time of the measured window, by kind.
    cpu: Option<CpuUse>,
    /// Under churn: connections opened (the first ones included) and closed, per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    churn: Option<ChurnRates>,
    /// eTran only: every app's counters together (both hosts), connecting and closing
    /// included.
    #[serde(skip_serializing_if = "Option::is_none")]
    counters: Option<AppCounters>,
    /// Linux only: its TCP's recoveries on both hosts over the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    linux_counters: Option<LinuxCounters>,
    /// eTran only: what the apps left behind.
    #[serde(skip_serializing_if = "Option::is_none")]
    leak_check: Option<LeakCheck>,
    /// What the testbed's switch dropped during the row (absent without a switch).
    #[serde(skip_serializing_if = "Option::is_none")]
    switch_drops: Option<testbed::switch::Drops>,
    /// Frames the hosts' NICs dropped during the row (`Testbed::nic_drops`).
    nic_drops: u64,
}

#[derive(Serialize)]
struct ChurnRates {
    opens: u64,
    closes: u64,
    opens_per_sec: f64,
    closes_per_sec: f64,
}

#[derive(Serialize)]
struct Report<'a> {
    size: u32,
    conns: u32,
    depth: u32,
    threads: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    churn: Option<u32>,
    duration_secs: f64,
    /// "busy" or "block".
    wait: &'static str,
    /// How the sides wait, in words.
    waits: String,
    /// The eTran rows' datapath backend: "compat" or "native".
    backend: &'static str,
    placement: &'a str,
    testbed: &'a str,
    /// MTU of the testbed's interfaces (both transports' MSS is this less 40).
    mtu: u32,
    results: Vec<Row>,
}

/// Where the two sides run: (client host netns, server netns, server address).
struct Sides {
    client: NetNs,
    server: NetNs,
    server_ip: Ipv4Addr,
}

pub fn run(args: EchoArgs, out: &Output) -> anyhow::Result<()> {
    validate(&args)?;
    let transports: &[EchoTransport] = match args.transport {
        EchoTransport::All => {
            &[EchoTransport::Etran, EchoTransport::EtranLinux, EchoTransport::Linux]
        }
        EchoTransport::Etran => &[EchoTransport::Etran],
        EchoTransport::EtranLinux => &[EchoTransport::EtranLinux],
        EchoTransport::Linux => &[EchoTransport::Linux],
    };
    let sleep = format!(
        "wait in the library ({} us busy-poll, then sleep on the AF_XDP socket)",
        DEFAULT_BUSY_POLL.as_micros()
    );
    let (wait, waits) = waits(args.wait, "apps", &sleep);
    if args.iface.is_some() {
        bail!("bench echo runs on its built-in private testbed; --iface is not supported yet");
    }
    sys::require_root("etran bench echo (it builds a private testbed)")?;
    // A kernel without etran's hooks refuses native here, before anything is built.
    let backend = args.backend.resolve()?;
    let native = backend == etran_backend::ETRAN_BACKEND_NATIVE;
    let tb = testbed::Testbed::private_with(testbed::Spec {
        mtu: args.mtu,
        direct: args.direct,
        nics: args.nics.clone(),
        // Native: each app's socket sends on a NIC queue of its own, one app per thread.
        app_queues: Some(if native { args.threads } else { 1 }),
        ..testbed::Spec::new("", 2)
    })?;
    let sides = Sides { client: tb.netns(1)?, server: tb.netns(2)?, server_ip: tb.host(2).ip };
    let shares = linux_echo::plan(sides.server_ip, args.conns, args.threads);
    let placement = if bench::cpu_count() >= 2 {
        "client thread i on CPU i mod N, server thread i on CPU i+1 mod N \
         (each engine: one server thread, port and listening port per client thread)"
    } else {
        "client and server threads share CPU 0"
    };
    let pair = match &args.nics {
        Some(n) => format!("{} and {}", n[0], n[1]),
        None => "one veth pair".to_string(),
    };
    let testbed = if args.direct {
        format!(
            "private testbed, 2 hosts on {pair} (no switch), MTU {}; host NICs with TX \
             checksum offload and TSO for the linux row only (eTran's ingress would refuse a \
             Linux peer's partial checksums)",
            tb.spec().mtu
        )
    } else {
        format!(
            "private testbed, 2 hosts, {} switch, MTU {} (host NICs without TX checksum \
             offload, so without TSO)",
            tb.spec().mode(),
            tb.spec().mtu
        )
    };

    let mut results = Vec::new();
    for &t in transports {
        // Given NICs keep their offloads (a virtio-net NIC on a qemu hub has none to give).
        let veth_pair = args.direct && args.nics.is_none();
        let tso = veth_pair && t == EchoTransport::Linux;
        if veth_pair {
            set_tx_offload(&sides, tso)?;
        }
        let (before, nic_before) = (tb.switch_drops()?, tb.nic_drops()?);
        let mut row = match t {
            EchoTransport::Etran => {
                measure_etran(Peer::Etran, backend, wait, &args, &sides, &shares, out)?
            }
            EchoTransport::EtranLinux => {
                measure_etran(Peer::Linux, backend, wait, &args, &sides, &shares, out)?
            }
            EchoTransport::Linux => measure("linux", wait, &args, &sides, &shares, out)?,
            EchoTransport::All => unreachable!("expanded above"),
        };
        row.topology = if args.direct { "direct" } else { "switch" };
        row.tso = tso;
        row.switch_drops = tb.switch_drops()?.zip(before).map(|(after, before)| after - before);
        row.nic_drops = tb.nic_drops()?.saturating_sub(nic_before);
        results.push(row);
    }
    drop(tb);
    let report = Report {
        size: args.size,
        conns: args.conns,
        depth: args.depth,
        threads: args.threads,
        churn: args.churn,
        duration_secs: args.duration.as_secs_f64(),
        wait: match args.wait {
            EchoWait::Busy => "busy",
            EchoWait::Block => "block",
        },
        waits,
        backend: if native { "native" } else { "compat" },
        placement,
        testbed: &testbed,
        mtu: args.mtu,
        results,
    };
    if out.json() {
        out.print_json(&report)?;
    } else {
        print_table(&report);
    }
    let leaks: Vec<String> = report
        .results
        .iter()
        .filter_map(|r| r.leak_check.as_ref())
        .flat_map(|l| l.leaks())
        .collect();
    if !leaks.is_empty() {
        bail!("leak check failed: {}", leaks.join("; "));
    }
    Ok(())
}

/// How every side waits, and that in words (`apps`: what eTran's side is made of; `sleep`:
/// how they wait with `--wait block`).
pub(super) fn waits(wait: EchoWait, apps: &str, sleep: &str) -> (Wait, String) {
    match wait {
        EchoWait::Busy => (
            Wait::Busy,
            format!(
                "busy: eTran {apps} poll their port without sleeping; Linux sockets busy-polled \
                 (epoll, zero timeout)"
            ),
        ),
        EchoWait::Block => (
            Wait::Blocking,
            format!("block: eTran {apps} {sleep}; Linux sockets block in epoll_wait"),
        ),
    }
}

/// TX checksum offload (and so TSO) on both hosts' NICs, on or off.
fn set_tx_offload(sides: &Sides, on: bool) -> anyhow::Result<()> {
    for ns in [&sides.client, &sides.server] {
        ns.run(|| crate::ethtool::set_tx_checksum(testbed::HOST_NIC, on))??;
    }
    Ok(())
}

fn validate(args: &EchoArgs) -> anyhow::Result<()> {
    if args.size == 0 || args.size > 1 << 20 {
        bail!("--size must be between 1 and 1048576 bytes");
    }
    if args.conns == 0 || args.depth == 0 || args.threads == 0 {
        bail!("--conns, --depth and --threads must be at least 1");
    }
    if args.threads > args.conns {
        bail!("--threads ({}) cannot exceed --conns ({})", args.threads, args.conns);
    }
    if args.threads > 64
        || args.conns > 20_000
        || u64::from(args.depth) * u64::from(args.size) > 64 << 20
    {
        bail!("at most 64 threads, 20000 connections and 64 MiB outstanding per connection");
    }
    Ok(())
}

/// One Linux run: one server thread per share in the server namespace, the client threads in the
/// client namespace.
fn measure(
    name: &'static str,
    wait: Wait,
    args: &EchoArgs,
    sides: &Sides,
    shares: &[Share],
    out: &Output,
) -> anyhow::Result<Row> {
    let stop = AtomicBool::new(false);
    let progress = Progress::default();
    if args.churn.is_some() {
        // Client-side TIME_WAIT would use up the ephemeral ports within seconds of churn; the
        // namespace is the private testbed's, gone after the run.
        sides
            .client
            .run(|| std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "1"))?
            .context("enabling tcp_tw_reuse in the client namespace")?;
    }
    let tcp_before = [linux_counters(&sides.client)?, linux_counters(&sides.server)?];
    let servers = sides.server.run(|| {
        shares
            .iter()
            .map(|sh| Server::bind((Ipv4Addr::UNSPECIFIED, sh.server.port()).into()))
            .collect::<anyhow::Result<Vec<_>>>()
    })??;
    let wakers: Vec<_> = servers.iter().map(Server::waker).collect();
    let bar = progress_bar(name, args.duration, out);

    let results: Vec<anyhow::Result<ClientResult>> = std::thread::scope(|s| {
        let mut server_threads = Vec::new();
        for (server, share) in servers.into_iter().zip(shares) {
            let (ns, stop) = (&sides.server, &stop);
            server_threads.push(s.spawn(move || -> anyhow::Result<()> {
                ns.enter()?;
                bench::pin_to_cpu(share.server_cpu)?;
                server.run(wait, stop)
            }));
        }
        let start = Instant::now();
        let deadline = start + args.duration;
        let clients: Vec<_> = shares
            .iter()
            .map(|share| {
                let client = Client {
                    share: share.clone(),
                    depth: args.depth,
                    size: args.size,
                    churn: args.churn,
                    wait,
                };
                let (ns, progress) = (&sides.client, &progress);
                s.spawn(move || -> anyhow::Result<ClientResult> {
                    ns.enter()?;
                    bench::pin_to_cpu(client.share.client_cpu)?;
                    client.run(deadline, progress)
                })
            })
            .collect();
        watch_progress(
            bar.as_ref(),
            &progress,
            start,
            &|| clients.iter().all(|c| c.is_finished()),
            "msgs",
            &mut |_| {},
        );
        let results = clients.into_iter().map(|c| c.join().expect("client thread")).collect();
        stop.store(true, Ordering::Relaxed);
        for w in &wakers {
            let _ = w.wake();
        }
        for t in server_threads {
            if let Err(e) = t.join().expect("server thread") {
                crate::log::warn(format!("{name} echo server: {e:#}"));
            }
        }
        results
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }

    let mut total = ClientResult::new();
    for r in results {
        total.merge(&r.with_context(|| format!("{name} echo client"))?)?;
    }
    let mut row = row(name, args, &total, None)?;
    let tcp_after = [linux_counters(&sides.client)?, linux_counters(&sides.server)?];
    row.linux_counters = Some(LinuxCounters {
        fast_retransmits: tcp_after.iter().map(|c| c.fast_retransmits).sum::<u64>()
            - tcp_before.iter().map(|c| c.fast_retransmits).sum::<u64>(),
        rtos: tcp_after.iter().map(|c| c.rtos).sum::<u64>()
            - tcp_before.iter().map(|c| c.rtos).sum::<u64>(),
    });
    Ok(row)
}

/// Linux TCP's loss recoveries: entered on SACK or duplicate ACKs (`TcpExt` `TCPSackRecovery`
/// and `TCPRenoRecovery`), and retransmission timeouts (`TCPTimeouts`); as eTran's
/// [`AppCounters`] count them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
struct LinuxCounters {
    fast_retransmits: u64,
    rtos: u64,
}

/// The counters of namespace `ns` now.
fn linux_counters(ns: &NetNs) -> anyhow::Result<LinuxCounters> {
    // thread-self: /proc/net follows the process's first thread, not the namespace entered.
    let text = ns
        .run(|| std::fs::read_to_string("/proc/thread-self/net/netstat"))?
        .context("reading the namespace's TCP counters")?;
    Ok(parse_netstat(&text))
}

/// [`LinuxCounters`] from `/proc/net/netstat`: a line of names then a line of values per
/// group.
fn parse_netstat(text: &str) -> LinuxCounters {
    let mut c = LinuxCounters::default();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        if !names.starts_with("TcpExt:") {
            continue;
        }
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()).skip(1) {
            let v: u64 = value.parse().unwrap_or(0);
            match name {
                "TCPSackRecovery" | "TCPRenoRecovery" => c.fast_retransmits += v,
                "TCPTimeouts" => c.rtos += v,
                _ => {}
            }
        }
    }
    c
}

/// Per-second progress on `bar` until `done`, the round trips counted as `unit`;
/// `each_second` runs at each, with the seconds it covers.
pub(super) fn watch_progress(
    bar: Option<&indicatif::ProgressBar>,
    progress: &Progress,
    start: Instant,
    done: &dyn Fn() -> bool,
    unit: &str,
    each_second: &mut dyn FnMut(f64),
) {
    let mut last = (0, 0);
    let mut tick = start;
    while !done() {
        std::thread::sleep(Duration::from_millis(50));
        if tick.elapsed() >= Duration::from_secs(1) {
            let now = (
                progress.messages.load(Ordering::Relaxed),
                progress.reopened.load(Ordering::Relaxed),
            );
            let secs = tick.elapsed().as_secs_f64();
            each_second(secs);
            if let Some(bar) = bar {
                let mut msg = format!("{:.0} {unit}/s", (now.0 - last.0) as f64 / secs);
                if now.1 > 0 {
                    msg += &format!(", {:.0} reconnects/s", (now.1 - last.1) as f64 / secs);
                }
                bar.inc(1);
                bar.set_message(msg);
            }
            last = now;
            tick = Instant::now();
        }
    }
}

pub(super) fn progress_bar(
    name: &str,
    duration: Duration,
    out: &Output,
) -> Option<indicatif::ProgressBar> {
    out.interactive().then(|| {
        let bar = indicatif::ProgressBar::new(duration.as_secs().max(1));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>10} [{bar:30}] {msg}")
                .expect("valid template"),
        );
        bar.set_prefix(name.to_string());
        bar
    })
}

/// An eTran run: per share one client App and, against `peer`, one server App or Linux server
/// thread, placed as the Linux threads.
fn measure_etran(
    peer: Peer,
    backend: etran_backend,
    wait: Wait,
    args: &EchoArgs,
    sides: &Sides,
    shares: &[Share],
    out: &Output,
) -> anyhow::Result<Row> {
    let name = match peer {
        Peer::Etran => "etran",
        Peer::Linux => "etran-linux",
    };
    let progress = Progress::default();
    let bar = progress_bar(name, args.duration, out);
    let params = etran_echo::Params {
        client: &sides.client,
        server: &sides.server,
        peer,
        shares,
        depth: args.depth,
        size: args.size,
        churn: args.churn,
        duration: args.duration,
        wait,
        backend,
        zero_copy: args.zero_copy,
        pacing: args.pacing.resolve(backend),
        small_queues: !args.no_small_queues,
        batching: !args.no_batching,
    };
    let r = etran_echo::run(&params, &progress, |done| {
        watch_progress(bar.as_ref(), &progress, Instant::now(), done, "msgs", &mut |_| {})
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let r = r.with_context(|| format!("{name} echo"))?;
    row(name, args, &r.result, Some(r.leaks))
}

fn row(
    transport: &'static str,
    args: &EchoArgs,
    r: &ClientResult,
    leak_check: Option<LeakCheck>,
) -> anyhow::Result<Row> {
    if r.messages == 0 {
        bail!("{transport}: no message completed a round trip in {:?}", args.duration);
    }
    let secs = args.duration.as_secs_f64();
    Ok(Row {
        transport,
        // The caller knows the testbed.
        topology: "",
        tso: false,
        unavailable: None,
        messages_per_sec: r.messages as f64 / secs,
        gbit_per_sec: (r.messages * u64::from(args.size)) as f64 * 8.0 / secs / 1e9,
        rtt_us: Some(Percentiles::of(&r.rtt_ns)),
        messages: r.messages,
        verified_bytes: r.verified_bytes,
        cpu_us_per_msg: r.cpu().map(|c| c.total_ns() as f64 / 1000.0 / r.messages as f64),
        cpu: r.cpu(),
        churn: args.churn.map(|_| ChurnRates {
            opens: r.opens,
            closes: r.closes,
            opens_per_sec: r.opens as f64 / secs,
            closes_per_sec: r.closes as f64 / secs,
        }),
        counters: leak_check.as_ref().map(LeakCheck::counters),
        linux_counters: None,
        // The leak check is printed under churn, and always enforced.
        leak_check,
        // The caller knows the testbed.
        switch_drops: None,
        nic_drops: 0,
    })
}

fn print_table(r: &Report<'_>) {
    crate::outln!(
        "echo: {} B messages, {} connection(s), depth {}, {} thread(s), {:.1} s",
        r.size,
        r.conns,
        r.depth,
        r.threads,
        r.duration_secs
    );
    crate::outln!("placement: {}; {}", r.placement, r.testbed);
    crate::outln!("waits: {}; eTran backend: {}", r.waits, r.backend);
    let mut t = Table::new([
        "transport",
        "topology",
        "msgs/s",
        "Gbit/s",
        "RTT p50 us",
        "p99 us",
        "p99.9 us",
        "CPU us/msg",
        "verified bytes",
    ]);
    for row in &r.results {
        match (&row.unavailable, &row.rtt_us) {
            (None, Some(p)) => t.row([
                row.transport.to_string(),
                topology_cell(row),
                format!("{:.0}", row.messages_per_sec),
                format!("{:.3}", row.gbit_per_sec),
                format!("{:.1}", p.p50),
                format!("{:.1}", p.p99),
                format!("{:.1}", p.p99_9),
                row.cpu_us_per_msg.map_or("-".into(), |c| format!("{c:.1}")),
                row.verified_bytes.to_string(),
            ]),
            _ => t.row([
                row.transport.to_string(),
                topology_cell(row),
                "n/a".into(),
                "n/a".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]),
        }
    }
    crate::out!("{}", t.render());
    for row in &r.results {
        if let Some(c) = &row.counters {
            crate::outln!("{} counters: {}", row.transport, counters_line(c));
        }
        if let Some(d) = row.switch_drops.filter(|d| *d != Default::default()) {
            crate::outln!("{} switch drops: {d}", row.transport);
        }
        if row.nic_drops > 0 {
            crate::outln!("{} host NIC drops: {}", row.transport, row.nic_drops);
        }
        if let Some(c) = &row.linux_counters {
            crate::outln!(
                "{} counters (TcpExt, both hosts): fast retransmits {}, RTOs {}",
                row.transport,
                c.fast_retransmits,
                c.rtos
            );
        }
    }
    for row in &r.results {
        if let Some(c) = &row.churn {
            crate::outln!(
                "{}: {} connections opened, {} closed ({:.0} opens/s, {:.0} closes/s)",
                row.transport,
                c.opens,
                c.closes,
                c.opens_per_sec,
                c.closes_per_sec
            );
        }
    }
    if r.churn.is_some() {
        for row in &r.results {
            if let Some(l) = &row.leak_check {
                print_leak_check(row.transport, l);
            }
        }
    }
    for row in r.results.iter().filter(|r| r.unavailable.is_some()) {
        crate::outln!("{}: {}", row.transport, row.unavailable.as_deref().unwrap_or_default());
    }
}

/// The apps' counters in one line.
pub(super) fn counters_line(c: &AppCounters) -> String {
    let x = &c.xdp;
    format!(
        "TX kicks {} (EAGAIN {}, EBUSY {}); socket drops {}: RX ring full {}, no frame to \
         copy into or too long {} (fill ring found empty {} times); TX ring found empty {} \
         times (a kick that sent all it had); fast retransmits {}, RTOs {}; apps in zero copy {}",
        c.tx_kicks,
        c.tx_kick_eagain,
        c.tx_kick_ebusy,
        x.rx_drops(),
        x.rx_ring_full,
        x.rx_dropped,
        x.rx_fill_ring_empty_descs,
        x.tx_ring_empty_descs,
        c.fast_retransmits,
        c.rtos,
        c.zero_copy_ports
    )
}

fn topology_cell(row: &Row) -> String {
    format!("{}{}", row.topology, if row.tso { " +TSO" } else { "" })
}

fn print_leak_check(transport: &str, l: &LeakCheck) {
    let (b, a) = (&l.before, &l.after);
    crate::outln!(
        "{transport} leak check: before the first app, peak during the run, once every \
         connection was closed (apps still registered), after the last app:"
    );
    let mut t = Table::new(["resource", "before", "peak", "all closed", "after"]);
    let none = || "-".to_string();
    for (i, host) in ["client", "server"].iter().enumerate() {
        t.row([
            format!("etran_tcp_conns entries, {host} host"),
            b.tcp_conns[i].to_string(),
            l.peak_conns[i].to_string(),
            l.closed_conns[i].to_string(),
            a.tcp_conns[i].to_string(),
        ]);
        t.row([
            format!("app ports, {host} host"),
            b.app_ports[i].to_string(),
            none(),
            none(),
            a.app_ports[i].to_string(),
        ]);
    }
    t.row([
        "descriptors (daemons and apps)".into(),
        b.fds.to_string(),
        none(),
        none(),
        a.fds.to_string(),
    ]);
    for f in &l.apps {
        t.row([
            format!("free UMEM TX frames, {} (of {})", f.app, f.tx_frames),
            f.tx_free_at_open.to_string(),
            none(),
            f.tx_free_at_end.to_string(),
            none(),
        ]);
    }
    crate::out!("{}", t.render());
    let leaks = l.leaks();
    if leaks.is_empty() {
        crate::outln!("{transport}: nothing leaked");
    }
    for leak in leaks {
        crate::outln!("{transport}: LEAKED: {leak}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_recoveries_come_from_tcpext() {
        let text = "TcpExt: SyncookiesSent TCPRenoRecovery TCPSackRecovery TCPTimeouts\n\
                    TcpExt: 9 2 5 7\n\
                    IpExt: TCPTimeouts InOctets\n\
                    IpExt: 100 200\n";
        assert_eq!(parse_netstat(text), LinuxCounters { fast_retransmits: 7, rtos: 7 });
        assert_eq!(parse_netstat(""), LinuxCounters::default());
    }
}
