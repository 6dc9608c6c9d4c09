//! `etran bench rpc`: RPCs over eTran Homa, and the same RPCs over eTran TCP and Linux TCP, on
//! the same private testbed, same sizes, same CPU placement, printed side by side. Clients on
//! hosts 1..N-1 (`--hosts N`, 2 by default) keep `--depth` RPCs outstanding each against
//! echo-style servers on host N, one per server port (`--ports`; [`super::rpc_plan`]), closed
//! loop, or issue them as Poisson arrivals at `--gbps` ([`super::arrivals`]); request sizes
//! come from `--workload` (a fixed size, or the Homa paper's W1–W5: [`super::workload`]), and
//! for W1–W5 each transport's unloaded run is the baseline of the slowdowns. Every request and
//! every response is checked byte for byte ([`super::rpc_msg`]). HomaModule itself cannot be
//! loaded here (no modules), so Linux TCP is the kernel's baseline.
use std::{
    net::Ipv4Addr,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde::Serialize;

use super::{
    echo::{counters_line, progress_bar, waits, watch_progress, Percentiles},
    etran_rpc, etran_tcp_rpc,
    linux_echo::{Progress, Server, Wait},
    linux_rpc,
    rpc_msg::{ResponseSize, RpcResult, Seconds, Tally, HEADER},
    rpc_plan::{Plan, Shape},
    support::{self as bench, CpuUse, Start},
    workload::Workload,
};
use crate::{
    app::AppCounters,
    bpf::entrance::types::{etran_backend, etran_pacing},
    cli::{EchoWait, RpcArgs, RpcTransport},
    netns::NetNs,
    output::{Output, Table},
    sys, testbed,
};

#[derive(Serialize)]
struct Bucket {
    /// The largest request size in the bucket (a decile of the workload).
    max_request_bytes: u32,
    rpcs: u64,
    rtt_us: Percentiles,
    /// The decile's RTT p50 unloaded (one client, one RPC at a time), and this run's RTT
    /// percentiles divided by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    unloaded_p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slowdown: Option<Slowdown>,
}

#[derive(Serialize, Clone, Copy)]
struct Slowdown {
    p50: f64,
    p99: f64,
}

/// What one client host completed.
#[derive(Serialize)]
struct HostTally {
    /// Its testbed host number.
    host: u8,
    #[serde(flatten)]
    tally: Tally,
}

/// What one server port answered (RPCs completed at the clients).
#[derive(Serialize)]
struct PortTally {
    port: u16,
    #[serde(flatten)]
    tally: Tally,
}

#[derive(Serialize)]
struct Row {
    transport: &'static str,
    rpcs_per_sec: f64,
    /// Request bytes (what --gbps offers).
    request_gbit_per_sec: f64,
    /// Response payload.
    gbit_per_sec: f64,
    /// Open loop: arrivals that found all of their thread's RPCs outstanding (they waited).
    #[serde(skip_serializing_if = "Option::is_none")]
    late_arrivals: Option<u64>,
    rtt_us: Percentiles,
    rpcs: u64,
    /// The mean length of the requests measured (those shorter than the header grew to it).
    mean_request_bytes: f64,
    /// Response bytes checked (every request was checked by its server too).
    verified_bytes: u64,
    /// The RPCs by client host and by server port.
    by_host: Vec<HostTally>,
    by_port: Vec<PortTally>,
    /// CPU time per RPC, both hosts (apps, daemons, softirq work; busy-polling counts as used),
    /// in microseconds.
    cpu_us_per_rpc: Option<f64>,
    cpu: Option<CpuUse>,
    /// Round-trip times by request-size decile (w1..w5 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    by_size: Option<Vec<Bucket>>,
    /// eTran only: every socket's port counters together (both hosts).
    #[serde(skip_serializing_if = "Option::is_none")]
    counters: Option<AppCounters>,
    /// What the testbed's switch dropped during the row (absent without a switch).
    #[serde(skip_serializing_if = "Option::is_none")]
    switch_drops: Option<testbed::switch::Drops>,
}

#[derive(Serialize)]
struct Report {
    /// "w1".."w5" or "N B".
    workload: String,
    /// The workload's mean request length (its table's).
    workload_mean_bytes: f64,
    /// Fixed response size; absent: as long as the request (or, with `one_way`, at most 100
    /// bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    response_bytes: Option<u32>,
    /// cp_node's --one-way: responses of 100 bytes, or the request's length if shorter.
    one_way: bool,
    /// The largest request (--max-size).
    max_request_bytes: u32,
    /// Testbed hosts: clients on each of hosts 1..N-1, the servers on host N.
    hosts: u32,
    /// Per client host: clients, their depth, the threads they run on and (open loop) the
    /// Gbit/s of requests they offer together; 0 is closed loop.
    clients: u32,
    depth: u32,
    threads: u32,
    gbps: f64,
    /// Server ports, each its own socket and thread.
    ports: u32,
    duration_secs: f64,
    /// w1..w5: how long each transport's unloaded run (one client, one RPC at a time) lasted,
    /// the baseline of the slowdowns.
    #[serde(skip_serializing_if = "Option::is_none")]
    unloaded_secs: Option<f64>,
    rpc_timeout_secs: f64,
    /// "busy" or "block".
    wait: &'static str,
    waits: String,
    /// The eTran rows' datapath backend: "compat" or "native".
    backend: &'static str,
    placement: String,
    testbed: String,
    /// Fraction of frames the switch drops.
    loss: f64,
    /// Homa's grant scheduler, where not HomaModule's defaults (--homa-max-incoming,
    /// --homa-overcommit).
    #[serde(skip_serializing_if = "Option::is_none")]
    homa_max_incoming: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    homa_overcommit: Option<u32>,
    results: Vec<Row>,
}

pub fn run(args: RpcArgs, out: &Output) -> anyhow::Result<()> {
    let workload = validate(&args)?;
    let transports = match args.transport {
        RpcTransport::All => {
            vec![RpcTransport::EtranHoma, RpcTransport::EtranTcp, RpcTransport::LinuxTcp]
        }
        t => vec![t],
    };
    let (wait, waits) = waits(
        args.wait,
        "RPC sockets",
        "sleep on the AF_XDP socket whenever a pass finds nothing (RpcSocket::wait)",
    );
    sys::require_root("etran bench rpc (it builds a private testbed)")?;
    let n = args.hosts as u8;
    // A kernel without etran's hooks refuses native here, before anything is built.
    let backend = args.backend.resolve()?;
    let native = backend == etran_backend::ETRAN_BACKEND_NATIVE;
    let tb = testbed::Testbed::private_with(testbed::Spec {
        // Native: each socket sends on a NIC queue of its own (client threads, server ports).
        app_queues: Some(if native { args.threads.max(ports(&args)) } else { 1 }),
        loss: args.loss,
        rate_bps: args.rate,
        prio: args.prio,
        ..testbed::Spec::new("", n)
    })?;
    let hosts = (1..=n).map(|i| tb.netns(i)).collect::<anyhow::Result<Vec<_>>>()?;
    let cpus = bench::cpu_count();
    let shape = Shape {
        server_ip: tb.host(n).ip,
        client_hosts: n - 1,
        clients: args.clients,
        depth: args.depth,
        threads: args.threads,
        ports: ports(&args),
    };
    let plan = Plan::new(shape, cpus);
    let placement = placement(&plan, n, cpus);
    let testbed = format!(
        "private testbed, {n} hosts, {} switch{}{}, MTU {} (host NICs without TX checksum \
         offload, so without TSO)",
        tb.spec().mode(),
        match args.rate {
            Some(r) => format!(
                " limiting its ports to {} Mbit/s{}",
                r / 1_000_000,
                if args.prio { " with 8 strict priority classes" } else { " (one FIFO)" }
            ),
            None => "".into(),
        },
        if args.loss > 0.0 { format!(" dropping {} of the frames", args.loss) } else { "".into() },
        tb.spec().mtu
    );
    let load = Load {
        plan: &plan,
        hosts: &hosts,
        gbps_per_thread: args.gbps / f64::from(args.threads),
        duration: args.duration,
        dump_times: args.dump_times.as_deref(),
        backend,
        pacing: args.pacing.resolve(backend),
    };
    // The slowdowns' baseline: each decile's RTT with one client (on host 1) and one RPC at a
    // time, to one port.
    let alone = Shape { client_hosts: 1, clients: 1, depth: 1, threads: 1, ports: 1, ..shape };
    let unloaded_plan = Plan::new(alone, cpus);
    let unloaded_hosts = [tb.netns(1)?, tb.netns(n)?];
    let unloaded = matches!(workload, Workload::Dist(..)).then(|| Load {
        plan: &unloaded_plan,
        hosts: &unloaded_hosts,
        gbps_per_thread: 0.0,
        duration: args.duration.min(UNLOADED),
        dump_times: None,
        backend,
        pacing: args.pacing.resolve(backend),
    });
    let mut results = Vec::new();
    for t in transports {
        let baseline = match &unloaded {
            Some(u) => Some(measure(t, &args, u, workload, wait, out)?),
            None => None,
        };
        let before = tb.switch_drops()?;
        let mut row = measure(t, &args, &load, workload, wait, out)?;
        row.switch_drops = tb.switch_drops()?.zip(before).map(|(after, before)| after - before);
        if let (Some(base), Some(buckets)) = (baseline, row.by_size.as_mut()) {
            slow_down(buckets, base.by_size.as_deref().unwrap_or_default());
        }
        results.push(row);
    }
    drop(tb);
    let report = Report {
        workload: workload.name(),
        workload_mean_bytes: workload.mean(),
        response_bytes: args.response_size,
        one_way: args.one_way,
        max_request_bytes: args.max_size,
        hosts: args.hosts,
        clients: args.clients,
        depth: args.depth,
        threads: args.threads,
        gbps: args.gbps,
        ports: ports(&args),
        duration_secs: args.duration.as_secs_f64(),
        unloaded_secs: unloaded.as_ref().map(|u| u.duration.as_secs_f64()),
        rpc_timeout_secs: args.rpc_timeout.as_secs_f64(),
        wait: match args.wait {
            EchoWait::Busy => "busy",
            EchoWait::Block => "block",
        },
        waits,
        backend: if native { "native" } else { "compat" },
        placement,
        testbed,
        loss: args.loss,
        homa_max_incoming: args.homa.homa_max_incoming,
        homa_overcommit: args.homa.homa_overcommit,
        results,
    };
    if out.json() {
        out.print_json(&report)
    } else {
        print_table(&report);
        Ok(())
    }
}

/// The workload, once every flag is within bounds.
fn validate(args: &RpcArgs) -> anyhow::Result<Workload> {
    let workload = Workload::parse(&args.workload, HEADER as u32, args.max_size)?;
    if args.response_size.is_some_and(|n| n > args.max_size) {
        bail!("--response-size cannot exceed --max-size ({})", args.max_size);
    }
    if args.clients == 0 || args.depth == 0 || args.threads == 0 {
        bail!("--clients, --depth and --threads must be at least 1");
    }
    if args.threads > args.clients {
        bail!("--threads ({}) cannot exceed --clients ({})", args.threads, args.clients);
    }
    if !(2..=u32::from(testbed::MAX_HOSTS)).contains(&args.hosts) {
        bail!(
            "--hosts must be 2 to {} (clients on hosts 1..N-1, the servers on host N)",
            testbed::MAX_HOSTS
        );
    }
    let slots = u64::from(args.clients) * u64::from(args.depth);
    let ports = ports(args);
    if !(1..=64).contains(&ports) {
        bail!("--ports must be 1 to 64");
    }
    if u64::from(ports) > slots {
        bail!(
            "--ports ({ports}) cannot exceed --clients × --depth ({slots}): each port takes RPC \
             slots of every client host"
        );
    }
    let outstanding = slots * u64::from(args.hosts - 1);
    if args.threads > 64 || outstanding > 4096 {
        bail!("at most 64 threads and 4096 RPCs outstanding (--clients × --depth × client hosts)");
    }
    let biggest = u64::from(workload.max().max(args.response_size.unwrap_or(0)));
    if outstanding * biggest > 256 << 20 {
        bail!("at most 256 MiB outstanding: lower --clients × --depth or the sizes");
    }
    Ok(workload)
}

/// Server ports, by the flags: --ports, or one per client thread.
fn ports(args: &RpcArgs) -> u32 {
    args.ports.unwrap_or(args.threads)
}

/// Where the threads of `plan` run, on a testbed of `hosts` hosts and `cpus` CPUs.
fn placement(plan: &Plan, hosts: u8, cpus: usize) -> String {
    let first = plan.ports[0].addr.port();
    let last = first + plan.ports.len() as u16 - 1;
    let clients = if hosts == 2 { "host 1".to_string() } else { format!("hosts 1-{}", hosts - 1) };
    if cpus < 2 {
        return format!(
            "client threads on {clients}, server ports {first}-{last} on host {hosts}, all on CPU 0"
        );
    }
    format!(
        "client thread i of host h ({clients}) on CPU (i+h-1) mod {cpus}; server ports \
         {first}-{last} on host {hosts}, each its own socket and thread, port j's on CPU (j+1) \
         mod {cpus}; each client's RPC slots take the ports in turn"
    )
}

/// How long responses are, by the flags.
fn response_size(args: &RpcArgs) -> ResponseSize {
    match (args.response_size, args.one_way) {
        (Some(n), _) => ResponseSize::Fixed(n),
        (None, true) => ResponseSize::OneWay,
        (None, false) => ResponseSize::Echo,
    }
}

/// How long the unloaded run of w1..w5 lasts at most (the whole --duration when shorter).
const UNLOADED: Duration = Duration::from_secs(2);

/// The load of one run.
struct Load<'a> {
    plan: &'a Plan,
    /// Its hosts: the client hosts in order, then the servers'.
    hosts: &'a [NetNs],
    /// Each client thread's offered Gbit/s of requests; 0 is closed loop.
    gbps_per_thread: f64,
    duration: Duration,
    /// Where every RPC's length and RTT go (`--dump-times`), if anywhere.
    dump_times: Option<&'a Path>,
    /// The eTran rows' datapath backend.
    backend: etran_backend,
    /// Its pacing (TCP's and Homa's).
    pacing: etran_pacing,
}

fn measure(
    t: RpcTransport,
    args: &RpcArgs,
    load: &Load<'_>,
    workload: Workload,
    wait: Wait,
    out: &Output,
) -> anyhow::Result<Row> {
    match t {
        RpcTransport::EtranHoma | RpcTransport::EtranTcp => {
            measure_etran(t, args, load, workload, wait, out)
        }
        RpcTransport::LinuxTcp => measure_linux(args, load, workload, wait, out),
        RpcTransport::All => unreachable!("expanded by run"),
    }
}

/// Adds to each bucket its unloaded RTT p50 from `base` and its slowdowns.
fn slow_down(buckets: &mut [Bucket], base: &[Bucket]) {
    for (b, u) in buckets.iter_mut().zip(base) {
        if u.rpcs == 0 || u.rtt_us.p50 <= 0.0 {
            continue;
        }
        b.unloaded_p50_us = Some(u.rtt_us.p50);
        b.slowdown = (b.rpcs > 0).then(|| Slowdown {
            p50: b.rtt_us.p50 / u.rtt_us.p50,
            p99: b.rtt_us.p99 / u.rtt_us.p50,
        });
    }
}

/// An eTran row: Homa RPC sockets, or TCP apps carrying the Linux row's RPCs.
fn measure_etran(
    t: RpcTransport,
    args: &RpcArgs,
    load: &Load<'_>,
    workload: Workload,
    wait: Wait,
    out: &Output,
) -> anyhow::Result<Row> {
    let name = if t == RpcTransport::EtranTcp { "etran-tcp" } else { "etran-homa" };
    let (progress, seconds) = (Progress::default(), Seconds::default());
    let bar = progress_bar(name, load.duration, out);
    let params = etran_rpc::Params {
        hosts: load.hosts,
        plan: load.plan,
        workload,
        response: response_size(args),
        duration: load.duration,
        wait,
        rpc_timeout: args.rpc_timeout,
        gbps: load.gbps_per_thread,
        keep_times: load.dump_times.is_some(),
        seconds: &seconds,
        sched: args.homa.sched(),
        backend: load.backend,
        pacing: load.pacing,
        zero_copy: args.zero_copy,
    };
    let watch = |done: &dyn Fn() -> bool| {
        let mut line = |secs| per_second(name, &seconds, secs, bar.as_ref());
        watch_progress(bar.as_ref(), &progress, Instant::now(), done, "RPCs", &mut line)
    };
    let r = match t {
        RpcTransport::EtranTcp => etran_tcp_rpc::run(&params, &progress, watch),
        _ => etran_rpc::run(&params, &progress, watch),
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let r = r.with_context(|| format!("{name} RPCs"))?;
    dump_times(load, name, &workload, &r.result)?;
    let mut row = row(name, load, &workload, &r.result)?;
    row.counters = Some(r.counters);
    Ok(row)
}

/// The Linux run: one server thread per port in the servers' namespace, each client thread in
/// its host's.
fn measure_linux(
    args: &RpcArgs,
    load: &Load<'_>,
    workload: Workload,
    wait: Wait,
    out: &Output,
) -> anyhow::Result<Row> {
    let name = "linux-tcp";
    let plan = load.plan;
    let server_ns = load.hosts.last().context("no host")?;
    let stop = AtomicBool::new(false);
    let (progress, seconds) = (Progress::default(), Seconds::default());
    let servers = server_ns.run(|| {
        plan.ports
            .iter()
            .map(|port| Server::bind((Ipv4Addr::UNSPECIFIED, port.addr.port()).into()))
            .collect::<anyhow::Result<Vec<_>>>()
    })??;
    let wakers: Vec<_> = servers.iter().map(Server::waker).collect();
    let together = Start::new(plan.clients.len(), load.duration);
    let bar = progress_bar(name, load.duration, out);
    let (results, served) = std::thread::scope(|s| {
        let server_threads: Vec<_> = servers
            .into_iter()
            .zip(&plan.ports)
            .map(|(server, port)| {
                let stop = &stop;
                s.spawn(move || -> anyhow::Result<()> {
                    server_ns.enter()?;
                    bench::pin_to_cpu(port.cpu)?;
                    server.serve(wait, stop, linux_rpc::Answering::default)
                })
            })
            .collect();
        let start = Instant::now();
        let clients: Vec<_> = plan
            .clients
            .iter()
            .map(|thread| {
                let client_ns = &load.hosts[usize::from(thread.host) - 1];
                let client = linux_rpc::Client {
                    plan,
                    thread,
                    workload,
                    response: response_size(args),
                    wait,
                    rpc_timeout: args.rpc_timeout,
                    gbps: load.gbps_per_thread,
                    keep_times: load.dump_times.is_some(),
                };
                let (progress, seconds, together) = (&progress, &seconds, &together);
                s.spawn(move || -> anyhow::Result<RpcResult> {
                    let ticket = together.ticket();
                    client_ns.enter()?;
                    bench::pin_to_cpu(thread.cpu)?;
                    client.run(ticket, progress, seconds)
                })
            })
            .collect();
        let done = || clients.iter().all(|c| c.is_finished());
        let mut line = |secs| per_second(name, &seconds, secs, bar.as_ref());
        watch_progress(bar.as_ref(), &progress, start, &done, "RPCs", &mut line);
        let results: Vec<_> =
            clients.into_iter().map(|c| c.join().expect("client thread")).collect();
        stop.store(true, Ordering::Relaxed);
        for w in &wakers {
            let _ = w.wake();
        }
        let served: Vec<_> =
            server_threads.into_iter().map(|t| t.join().expect("server thread")).collect();
        (results, served)
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut total = RpcResult::new(&workload);
    for r in results {
        total.merge(&r.with_context(|| format!("{name} RPC client"))?)?;
    }
    for r in served {
        r.with_context(|| format!("{name} RPC server"))?;
    }
    dump_times(load, name, &workload, &total)?;
    row(name, load, &workload, &total)
}

/// Prints cp_node's per-second line of the clients (to stderr, as cp_node's log, above the
/// progress bar if there is one): what they completed in the `secs` seconds since the last.
fn per_second(transport: &str, seconds: &Seconds, secs: f64, bar: Option<&indicatif::ProgressBar>) {
    let line = format!("{transport} {}", seconds.take().line(secs));
    match bar {
        Some(bar) => bar.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}

/// Writes every RPC's request length and RTT to `<--dump-times>.<transport>`, as cp_node's
/// `--dump-times` does (a line per RPC: length in bytes, RTT in microseconds).
fn dump_times(
    load: &Load<'_>,
    transport: &str,
    workload: &Workload,
    r: &RpcResult,
) -> anyhow::Result<()> {
    let (Some(base), Some(times)) = (load.dump_times, &r.times) else { return Ok(()) };
    let mut path = base.as_os_str().to_owned();
    path.push(format!(".{transport}"));
    let mut text = format!(
        "# Round-trip times of individual RPCs: etran bench rpc, {transport}, workload {}\n\
         # Length   RTT (usec)\n",
        workload.name()
    );
    for &(len, ns) in times {
        text += &format!("{len:9} {:12.2}\n", ns as f64 / 1000.0);
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", Path::new(&path).display()))
}

fn row(
    transport: &'static str,
    load: &Load<'_>,
    workload: &Workload,
    r: &RpcResult,
) -> anyhow::Result<Row> {
    let t = &r.total;
    if t.messages == 0 {
        bail!("{transport}: no RPC completed in {:?}", load.duration);
    }
    let secs = load.duration.as_secs_f64();
    let by_size = matches!(workload, Workload::Dist(..)).then(|| {
        r.bounds
            .iter()
            .zip(&r.by_size)
            .map(|(&max, h)| Bucket {
                max_request_bytes: max.max(HEADER as u32),
                rpcs: h.len(),
                rtt_us: Percentiles::of(h),
                unloaded_p50_us: None,
                slowdown: None,
            })
            .collect()
    });
    Ok(Row {
        transport,
        rpcs_per_sec: t.messages as f64 / secs,
        request_gbit_per_sec: r.request_bytes as f64 * 8.0 / secs / 1e9,
        late_arrivals: (load.gbps_per_thread > 0.0).then_some(r.late),
        gbit_per_sec: t.verified_bytes as f64 * 8.0 / secs / 1e9,
        rtt_us: Percentiles::of(&t.rtt_ns),
        rpcs: t.messages,
        mean_request_bytes: r.request_bytes as f64 / t.messages as f64,
        verified_bytes: t.verified_bytes,
        by_host: r.by_host.iter().map(|(&host, &tally)| HostTally { host, tally }).collect(),
        by_port: r.by_port.iter().map(|(&port, &tally)| PortTally { port, tally }).collect(),
        cpu_us_per_rpc: t.cpu().map(|c| c.total_ns() as f64 / 1000.0 / t.messages as f64),
        cpu: t.cpu(),
        by_size,
        counters: None,
        switch_drops: None,
    })
}

fn print_table(r: &Report) {
    let response = match (r.response_bytes, r.one_way) {
        (Some(n), _) => format!("{n} B responses"),
        (None, true) => "100 B responses (one way; shorter requests are echoed)".into(),
        (None, false) => "responses as long as their requests".into(),
    };
    let per_host = if r.hosts > 2 { " per client host" } else { "" };
    let pattern = if r.gbps > 0.0 {
        format!(
            "open loop: {} Gbit/s of requests offered{per_host} (Poisson arrivals), {} client(s) \
             with at most {} RPCs outstanding each",
            r.gbps, r.clients, r.depth
        )
    } else {
        format!("closed loop: {} client(s){per_host} x depth {}", r.clients, r.depth)
    };
    crate::outln!(
        "rpc: workload {} (mean {:.0} B), {response}, {pattern}, {} client thread(s){per_host}, \
         {} server port(s), {:.1} s",
        r.workload,
        r.workload_mean_bytes,
        r.threads,
        r.ports,
        r.duration_secs
    );
    crate::outln!("placement: {}; {}", r.placement, r.testbed);
    if r.homa_max_incoming.is_some() || r.homa_overcommit.is_some() {
        let or_default = |v: Option<u32>, d: &str| v.map_or(d.to_string(), |n| n.to_string());
        crate::outln!(
            "homa grant scheduler: max_incoming {}, overcommit {}",
            or_default(r.homa_max_incoming, "400000 (default)"),
            or_default(r.homa_overcommit, "8 (default)")
        );
    }
    crate::outln!("waits: {}; eTran backend: {}", r.waits, r.backend);
    let mut t = Table::new([
        "transport",
        "RPCs/s",
        "avg req B",
        "req Gbit/s",
        "resp Gbit/s",
        "RTT p50 us",
        "p99 us",
        "p99.9 us",
        "CPU us/RPC",
        "verified bytes",
    ]);
    for row in &r.results {
        t.row([
            row.transport.to_string(),
            format!("{:.0}", row.rpcs_per_sec),
            format!("{:.1}", row.mean_request_bytes),
            format!("{:.3}", row.request_gbit_per_sec),
            format!("{:.3}", row.gbit_per_sec),
            format!("{:.1}", row.rtt_us.p50),
            format!("{:.1}", row.rtt_us.p99),
            format!("{:.1}", row.rtt_us.p99_9),
            row.cpu_us_per_rpc.map_or("-".into(), |c| format!("{c:.1}")),
            row.verified_bytes.to_string(),
        ]);
    }
    crate::out!("{}", t.render());
    let sized: Vec<(&str, &Vec<Bucket>)> =
        r.results.iter().filter_map(|row| Some((row.transport, row.by_size.as_ref()?))).collect();
    if let Some((_, first)) = sized.first() {
        crate::outln!("RTT by request size (deciles of {}), us:", r.workload);
        let mut header = vec!["request size".to_string()];
        for (name, _) in &sized {
            header.extend([format!("{name} p50"), "p99".into()]);
        }
        let mut t = Table::new(header);
        for (i, bucket) in first.iter().enumerate() {
            let mut cells = vec![format!("<= {}", bucket.max_request_bytes)];
            for (_, buckets) in &sized {
                let b = &buckets[i];
                cells.extend(if b.rpcs == 0 {
                    ["-".to_string(), "-".to_string()]
                } else {
                    [format!("{:.1}", b.rtt_us.p50), format!("{:.1}", b.rtt_us.p99)]
                });
            }
            t.row(cells);
        }
        crate::out!("{}", t.render());
        print_slowdowns(r, &sized);
    }
    for row in r.results.iter().filter(|_| r.hosts > 2 || r.ports > 1) {
        let hosts: Vec<String> =
            row.by_host.iter().map(|h| format!("host {} {}", h.host, h.tally.rpcs)).collect();
        let ports: Vec<String> =
            row.by_port.iter().map(|p| format!("{} {}", p.port, p.tally.rpcs)).collect();
        crate::outln!(
            "{} RPCs by client host: {}; by server port: {}",
            row.transport,
            hosts.join(", "),
            ports.join(", ")
        );
    }
    for row in &r.results {
        if let Some(late) = row.late_arrivals.filter(|&n| n > 0) {
            crate::outln!(
                "{}: {late} arrivals found all of their thread's RPCs outstanding and waited \
                 (raise --depth or lower --gbps)",
                row.transport
            );
        }
        if let Some(c) = &row.counters {
            crate::outln!("{} counters: {}", row.transport, counters_line(c));
        }
        if let Some(d) = &row.switch_drops {
            crate::outln!("{} switch drops: {d}", row.transport);
        }
    }
}

/// The slowdown table: each decile's RTT percentiles over its unloaded RTT p50.
fn print_slowdowns(r: &Report, sized: &[(&str, &Vec<Bucket>)]) {
    let (Some(secs), Some((_, first))) = (r.unloaded_secs, sized.first()) else { return };
    crate::outln!(
        "slowdown by request size (RTT / the decile's RTT p50 unloaded: one client, one RPC at a \
         time, {secs:.1} s, same transport):"
    );
    let mut header = vec!["request size".to_string()];
    for (name, _) in sized {
        header.extend([format!("{name} p50"), "p99".into()]);
    }
    let mut t = Table::new(header);
    for (i, bucket) in first.iter().enumerate() {
        let mut cells = vec![format!("<= {}", bucket.max_request_bytes)];
        for (_, buckets) in sized {
            cells.extend(match buckets[i].slowdown {
                Some(s) => [format!("{:.2}", s.p50), format!("{:.2}", s.p99)],
                None => ["-".to_string(), "-".to_string()],
            });
        }
        t.row(cells);
    }
    crate::out!("{}", t.render());
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> RpcArgs {
        let cli =
            crate::cli::Cli::try_parse_from(["etran", "bench", "rpc"].iter().chain(extra).copied())
                .unwrap();
        match cli.command {
            crate::cli::Command::Bench(crate::cli::BenchCommand::Rpc(a)) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn bad_flags_are_one_line_errors() {
        assert_eq!(validate(&args(&[])).unwrap(), Workload::Fixed(100));
        assert_eq!(validate(&args(&["--workload", "w5"])).unwrap().name(), "w5");
        for (flags, want) in [
            (&["--workload", "8"][..], "--workload must be"),
            (&["--workload", "w9"], "--workload must be"),
            (&["--depth", "0"], "at least 1"),
            (&["--threads", "2"], "cannot exceed --clients"),
            (&["--clients", "100", "--depth", "100"], "4096 RPCs outstanding"),
            (&["--workload", "w5", "--clients", "300", "--depth", "2"], "256 MiB"),
            (&["--workload", "2000000"], "--workload must be"),
            (&["--response-size", "2000000"], "cannot exceed --max-size"),
            (&["--hosts", "1"], "--hosts must be 2 to 32"),
            (&["--hosts", "33"], "--hosts must be 2 to 32"),
            (&["--ports", "0"], "--ports must be 1 to 64"),
            (
                &["--ports", "3", "--clients", "2"],
                "--ports (3) cannot exceed --clients × --depth (2)",
            ),
            (&["--clients", "64", "--depth", "32", "--hosts", "4"], "4096 RPCs outstanding"),
        ] {
            let e = validate(&args(flags)).unwrap_err().to_string();
            assert!(e.contains(want) && !e.contains('\n'), "{flags:?}: {e}");
        }
        assert_eq!(args(&["--gbps", "0.5"]).gbps, 0.5);
        let wide = args(&["--hosts", "8", "--ports", "4", "--clients", "2", "--depth", "2"]);
        assert!(validate(&wide).is_ok());
        assert_eq!((ports(&wide), ports(&args(&["--threads", "2", "--clients", "2"]))), (4, 2));
        let big = args(&["--workload", "16000000", "--max-size", "16000000"]);
        assert_eq!(validate(&big).unwrap(), Workload::Fixed(16_000_000), "--max-size lifts it");
        let w4 = args(&["--workload", "w4", "--max-size", "100000"]);
        assert_eq!(validate(&w4).unwrap().max(), 100_000, "--max-size cuts w4");
        assert_eq!(response_size(&args(&["--one-way"])), ResponseSize::OneWay);
        let tuned = args(&["--homa-max-incoming", "100000", "--homa-overcommit", "2"]);
        let want = crate::loader::HomaSched {
            max_incoming: Some(100_000),
            max_overcommit: Some(2),
            link_mbps: None,
        };
        assert_eq!(tuned.homa.sched(), want);
        assert_eq!(args(&[]).homa.sched(), Default::default());
        assert_eq!(response_size(&args(&[])), ResponseSize::Echo);
        for bad in [
            ["--response-size", "0"],
            ["--rpc-timeout", "0s"],
            ["--gbps", "-1"],
            ["--gbps", "1000"],
            ["--gbps", "fast"],
            ["--max-size", "15"],
            ["--max-size", "67108865"],
            ["--one-way", "--response-size=5"],
            ["--homa-overcommit", "9"],
            ["--homa-max-incoming", "1000"],
        ] {
            let e = crate::cli::Cli::try_parse_from(["etran", "bench", "rpc"].iter().chain(&bad));
            assert!(e.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn slowdowns_divide_by_the_unloaded_median_of_the_same_decile() {
        let bucket = |rpcs, p50, p99| Bucket {
            max_request_bytes: 100,
            rpcs,
            rtt_us: Percentiles { p50, p99, p99_9: p99 },
            unloaded_p50_us: None,
            slowdown: None,
        };
        let mut loaded = vec![bucket(10, 30.0, 90.0), bucket(10, 50.0, 60.0), bucket(0, 0.0, 0.0)];
        let base = [bucket(5, 10.0, 12.0), bucket(0, 0.0, 0.0), bucket(3, 20.0, 25.0)];
        slow_down(&mut loaded, &base);
        let s = loaded[0].slowdown.unwrap();
        assert_eq!((s.p50, s.p99, loaded[0].unloaded_p50_us), (3.0, 9.0, Some(10.0)));
        assert!(loaded[1].slowdown.is_none(), "no unloaded RPC of that size: no slowdown");
        assert!(loaded[2].slowdown.is_none() && loaded[2].unloaded_p50_us == Some(20.0));
    }
}
