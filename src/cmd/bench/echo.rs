//! `etran bench echo`: TCP echo, eTran against Linux TCP with blocking and with busy-polling
//! sockets, same testbed, same message pattern, same CPU placement, printed side by side.
use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde::Serialize;

use super::{
    etran_echo,
    linux_echo::{self, Client, ClientResult, Server, Wait},
};
use crate::{
    bench,
    cli::{EchoArgs, EchoTransport},
    netns::NetNs,
    output::{Output, Table},
    sys, testbed,
};

#[derive(Serialize)]
struct Percentiles {
    p50: f64,
    p99: f64,
    p99_9: f64,
}

#[derive(Serialize)]
struct Row {
    transport: &'static str,
    /// Why there are no numbers (a transport this build cannot run yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    unavailable: Option<String>,
    /// How this row's run differs from what was asked (e.g. fewer threads).
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    messages_per_sec: f64,
    /// Payload each way.
    gbit_per_sec: f64,
    rtt_us: Option<Percentiles>,
    messages: u64,
    verified_bytes: u64,
}

#[derive(Serialize)]
struct Report<'a> {
    size: u32,
    conns: u32,
    depth: u32,
    threads: u32,
    duration_secs: f64,
    placement: &'a str,
    testbed: &'a str,
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
            &[EchoTransport::Etran, EchoTransport::Linux, EchoTransport::LinuxBusy]
        }
        EchoTransport::Etran => &[EchoTransport::Etran],
        EchoTransport::Linux => &[EchoTransport::Linux],
        EchoTransport::LinuxBusy => &[EchoTransport::LinuxBusy],
    };
    if args.iface.is_some() {
        bail!("bench echo runs on its built-in private testbed; --iface is not supported yet");
    }
    sys::require_root("etran bench echo (it builds a private testbed)")?;
    let tb = testbed::Testbed::private(2)?;
    let sides = Sides { client: tb.netns(1)?, server: tb.netns(2)?, server_ip: tb.host(2).ip };
    let cpus = bench::cpu_count();
    let placement = if cpus >= 2 {
        "client threads on CPU 0 (thread i on CPU i mod N), server threads on CPU 1 (i+1 mod N)"
    } else {
        "client and server share CPU 0"
    };
    let testbed = format!(
        "private testbed, 2 hosts, {} switch{}",
        tb.spec().mode(),
        if tb.spec().kernel_forwarding() {
            ""
        } else {
            " (host NICs without TX checksum offload, so without TSO)"
        }
    );

    let mut results = Vec::new();
    for &t in transports {
        results.push(match t {
            EchoTransport::Etran => measure_etran(&args, &sides, out)?,
            EchoTransport::Linux => measure("linux", Wait::Blocking, &args, &sides, out)?,
            EchoTransport::LinuxBusy => measure("linux-busy", Wait::Busy, &args, &sides, out)?,
            EchoTransport::All => unreachable!("expanded above"),
        });
    }
    drop(tb);
    let report = Report {
        size: args.size,
        conns: args.conns,
        depth: args.depth,
        threads: args.threads,
        duration_secs: args.duration.as_secs_f64(),
        placement,
        testbed: &testbed,
        results,
    };
    if out.json() {
        return out.print_json(&report);
    }
    print_table(&report);
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

/// One Linux run: servers in the server namespace, clients in the client namespace.
fn measure(
    name: &'static str,
    wait: Wait,
    args: &EchoArgs,
    sides: &Sides,
    out: &Output,
) -> anyhow::Result<Row> {
    let cpus = bench::cpu_count();
    let stop = AtomicBool::new(false);
    let progress = AtomicU64::new(0);
    let servers = sides.server.run(|| {
        (0..args.threads)
            .map(|i| Server::bind(linux_echo::server_addr(Ipv4Addr::UNSPECIFIED, i).into()))
            .collect::<anyhow::Result<Vec<_>>>()
    })??;
    let wakers: Vec<_> = servers.iter().map(Server::waker).collect();
    let bar = progress_bar(name, args, out);

    let results: Vec<anyhow::Result<ClientResult>> = std::thread::scope(|s| {
        let mut server_threads = Vec::new();
        for (i, server) in servers.into_iter().enumerate() {
            let (ns, stop) = (&sides.server, &stop);
            server_threads.push(s.spawn(move || -> anyhow::Result<u64> {
                ns.enter()?;
                bench::pin_to_cpu((i + 1) % cpus)?;
                server.run(wait, stop)
            }));
        }
        let start = Instant::now();
        let deadline = start + args.duration;
        let per_thread = args.conns / args.threads;
        let extra = args.conns % args.threads;
        let clients: Vec<_> = (0..args.threads)
            .map(|i| {
                let client = Client {
                    server: linux_echo::server_addr(sides.server_ip, i),
                    first_conn_id: i * (per_thread + 1),
                    conns: per_thread + u32::from(i < extra),
                    depth: args.depth,
                    size: args.size,
                    wait,
                };
                let (ns, progress) = (&sides.client, &progress);
                s.spawn(move || -> anyhow::Result<ClientResult> {
                    ns.enter()?;
                    bench::pin_to_cpu(bench::cpu_for(i as usize))?;
                    client.run(deadline, progress)
                })
            })
            .collect();
        watch_progress(bar.as_ref(), &progress, start, &|| clients.iter().all(|c| c.is_finished()));
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

    let mut messages = 0;
    let mut verified = 0;
    let mut rtt = bench::latency_histogram();
    for r in results {
        let r = r.with_context(|| format!("{name} echo client"))?;
        messages += r.messages;
        verified += r.verified_bytes;
        rtt.add(&r.rtt_ns)?;
    }
    row(name, args, messages, verified, &rtt, None)
}

/// Per-second progress on `bar` until `done`.
fn watch_progress(
    bar: Option<&indicatif::ProgressBar>,
    progress: &AtomicU64,
    start: Instant,
    done: &dyn Fn() -> bool,
) {
    let mut last = 0;
    let mut tick = start;
    while !done() {
        std::thread::sleep(Duration::from_millis(50));
        if tick.elapsed() >= Duration::from_secs(1) {
            let now = progress.load(Ordering::Relaxed);
            if let Some(bar) = bar {
                bar.inc(1);
                bar.set_message(format!(
                    "{:.0} msgs/s",
                    (now - last) as f64 / tick.elapsed().as_secs_f64()
                ));
            }
            last = now;
            tick = Instant::now();
        }
    }
}

fn progress_bar(name: &str, args: &EchoArgs, out: &Output) -> Option<indicatif::ProgressBar> {
    out.interactive().then(|| {
        let bar = indicatif::ProgressBar::new(args.duration.as_secs().max(1));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>10} [{bar:30}] {msg}")
                .expect("valid template"),
        );
        bar.set_prefix(name.to_string());
        bar
    })
}

/// The eTran run: one client App (all connections) on CPU 0, one server App on CPU 1.
fn measure_etran(args: &EchoArgs, sides: &Sides, out: &Output) -> anyhow::Result<Row> {
    let cpus = bench::cpu_count();
    let progress = AtomicU64::new(0);
    let bar = progress_bar("etran", args, out);
    let params = etran_echo::Params {
        client: &sides.client,
        server: &sides.server,
        server_addr: linux_echo::server_addr(sides.server_ip, 0),
        conns: args.conns,
        depth: args.depth,
        size: args.size,
        duration: args.duration,
        client_cpu: 0,
        server_cpu: 1 % cpus,
    };
    let r = etran_echo::run(&params, &progress, |done| {
        watch_progress(bar.as_ref(), &progress, Instant::now(), done)
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let r = r.context("etran echo")?;
    let note = (args.threads > 1).then(|| {
        format!(
            "ran with 1 client and 1 server thread (one App per side), not --threads {}",
            args.threads
        )
    });
    row("etran", args, r.messages, r.verified_bytes, &r.rtt_ns, note)
}

fn row(
    transport: &'static str,
    args: &EchoArgs,
    messages: u64,
    verified: u64,
    rtt: &hdrhistogram::Histogram<u64>,
    note: Option<String>,
) -> anyhow::Result<Row> {
    if messages == 0 {
        bail!("{transport}: no message completed a round trip in {:?}", args.duration);
    }
    let secs = args.duration.as_secs_f64();
    let us = |q: f64| rtt.value_at_quantile(q) as f64 / 1000.0;
    Ok(Row {
        transport,
        unavailable: None,
        note,
        messages_per_sec: messages as f64 / secs,
        gbit_per_sec: (messages * u64::from(args.size)) as f64 * 8.0 / secs / 1e9,
        rtt_us: Some(Percentiles { p50: us(0.5), p99: us(0.99), p99_9: us(0.999) }),
        messages,
        verified_bytes: verified,
    })
}

fn print_table(r: &Report<'_>) {
    println!(
        "echo: {} B messages, {} connection(s), depth {}, {} thread(s), {:.1} s",
        r.size, r.conns, r.depth, r.threads, r.duration_secs
    );
    println!("placement: {}; {}", r.placement, r.testbed);
    let mut t = Table::new([
        "transport",
        "msgs/s",
        "Gbit/s",
        "RTT p50 us",
        "p99 us",
        "p99.9 us",
        "verified bytes",
    ]);
    for row in &r.results {
        match (&row.unavailable, &row.rtt_us) {
            (None, Some(p)) => t.row([
                row.transport.to_string(),
                format!("{:.0}", row.messages_per_sec),
                format!("{:.3}", row.gbit_per_sec),
                format!("{:.1}", p.p50),
                format!("{:.1}", p.p99),
                format!("{:.1}", p.p99_9),
                row.verified_bytes.to_string(),
            ]),
            _ => t.row([
                row.transport.to_string(),
                "n/a".into(),
                "n/a".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]),
        }
    }
    print!("{}", t.render());
    for row in &r.results {
        if let Some(note) = &row.note {
            println!("{}: {note}", row.transport);
        }
    }
    for row in r.results.iter().filter(|r| r.unavailable.is_some()) {
        println!("{}: {}", row.transport, row.unavailable.as_deref().unwrap_or_default());
    }
}
