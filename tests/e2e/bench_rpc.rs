//! `etran bench rpc` through the real binary on its private testbed: eTran Homa, eTran TCP and Linux TCP
//! rows from one run, every request and response checked, no RPC left in either datapath (the
//! bench fails otherwise), nothing left behind. Needs root.
use common::cli::etran;
use serde_json::Value;

use super::bench_echo::Leftovers;

fn bench_rpc(args: &[&str]) -> Value {
    bench_rpc_logged(args).0
}

/// [`bench_rpc`], and what it wrote to stderr (cp_node's per-second lines).
fn bench_rpc_logged(args: &[&str]) -> (Value, String) {
    let out = etran(&[&["-j", "bench", "rpc"], args].concat());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // With -j an error is the report on stdout.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{args:?}: {stderr}{stdout}");
    assert!(!stderr.contains("etran daemon:"), "daemon lines in the output: {stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

/// Each entry of `list` (a row's `by_host` or `by_port`): its `key`, and RPCs completed, all
/// of them adding up to the row's.
fn tallies(row: &Value, list: &str, key: &str) -> Vec<(u64, u64)> {
    let t: Vec<(u64, u64)> = row[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e[key].as_u64().unwrap(), e["rpcs"].as_u64().unwrap()))
        .collect();
    assert_eq!(t.iter().map(|e| e.1).sum::<u64>(), row["rpcs"].as_u64().unwrap(), "{list}: {row}");
    t
}

/// A row's totals are sane: RPCs completed, every response byte checked, ordered percentiles,
/// a CPU cost.
fn check_row(row: &Value, min_response: u64) {
    let rpcs = row["rpcs"].as_u64().unwrap();
    assert!(rpcs > 0, "{row}");
    assert!(row["verified_bytes"].as_u64().unwrap() >= rpcs * min_response, "{row}");
    let p = &row["rtt_us"];
    let (p50, p99) = (p["p50"].as_f64().unwrap(), p["p99"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= p["p99_9"].as_f64().unwrap(), "{row}");
    assert!(row["mean_request_bytes"].as_f64().unwrap() >= 16.0, "{row}");
    let cpu = row["cpu_us_per_rpc"].as_f64().unwrap();
    assert!(cpu > 0.0 && cpu < 1e6, "{row}");
    if row["transport"].as_str().unwrap().starts_with("etran") {
        let c = &row["counters"];
        assert!(c["tx_kicks"].as_u64().unwrap() > 0, "{c}");
        for k in ["rx_dropped", "rx_ring_full", "rx_fill_ring_empty_descs"] {
            assert_eq!(c["xdp"][k], 0, "{k}: {c}");
        }
    }
}

/// Every row of a W2 run (sizes up to 1 MB: some RPCs granted), two client threads, open loop
/// (Poisson arrivals) with slowdowns against each transport's unloaded run; then eTran alone at
/// a fixed size with short responses, closed loop, sleeping when idle.
#[test]
fn rpc_rows_are_verified_and_clean_up() {
    let Some(_root) = common::root::alone() else { return };
    let before = Leftovers::before();
    let report = bench_rpc(&[
        "--duration",
        "1s",
        "--workload",
        "w2",
        "--clients",
        "2",
        "--depth",
        "4",
        "--threads",
        "2",
        "--gbps",
        "0.01",
    ]);
    assert_eq!(report["workload"], "w2");
    assert_eq!(report["gbps"], 0.01);
    assert_eq!(report["unloaded_secs"], 1.0);
    assert!(report["placement"].as_str().unwrap().contains("CPU"));
    let rows = report["results"].as_array().unwrap();
    let names: Vec<_> = rows.iter().map(|r| r["transport"].as_str().unwrap()).collect();
    assert_eq!(names, ["etran-homa", "etran-tcp", "linux-tcp"]);
    for row in rows {
        check_row(row, 16);
        // Two threads: two server ports by default, each taking RPCs from the one client host.
        assert_eq!(tallies(row, "by_host", "host").len(), 1, "{row}");
        let ports = tallies(row, "by_port", "port");
        assert!(ports.len() == 2 && ports.iter().all(|p| p.1 > 0), "{row}");
        let buckets = row["by_size"].as_array().unwrap();
        assert_eq!(buckets.len(), 10, "{row}");
        let counted: u64 = buckets.iter().map(|b| b["rpcs"].as_u64().unwrap()).sum();
        assert_eq!(counted, row["rpcs"].as_u64().unwrap(), "{row}");
        // Open loop: about 2,800 RPCs/s offered, fewer when the debug build lags (counted).
        assert!(row["late_arrivals"].is_u64(), "{row}");
        let slowed: Vec<f64> =
            buckets.iter().filter_map(|b| b["slowdown"]["p50"].as_f64()).collect();
        assert!(slowed.len() >= 8 && slowed.iter().all(|&s| s > 0.0), "{row}");
    }

    let dump = std::env::temp_dir().join(format!("etran-rpc-times-{}", std::process::id()));
    let report = bench_rpc(&[
        "--dump-times",
        dump.to_str().unwrap(),
        "--transport",
        "etran-homa",
        "--duration",
        "1s",
        "--workload",
        "3000",
        "--response-size",
        "20",
        "--clients",
        "3",
        "--depth",
        "2",
        "--wait",
        "block",
    ]);
    let row = &report["results"][0];
    check_row(row, 20);
    assert_eq!(row["verified_bytes"].as_u64().unwrap(), row["rpcs"].as_u64().unwrap() * 20);
    assert_eq!(row["mean_request_bytes"], 3000.0, "{row}");
    assert!(row.get("by_size").is_none(), "a fixed size has no size buckets: {row}");
    assert!(row.get("late_arrivals").is_none() && report.get("unloaded_secs").is_none());
    // --dump-times: a line per RPC counted (length, RTT in us) under two comment lines.
    let file = dump.with_extension("etran-homa");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len() as u64, row["rpcs"].as_u64().unwrap(), "{text}");
    for l in lines {
        let f: Vec<f64> = l.split_whitespace().map(|v| v.parse().unwrap()).collect();
        assert!(f.len() == 2 && f[0] == 3000.0 && f[1] > 0.0, "{l}");
    }

    before.assert_none();
}

/// `--hosts 3 --ports 3`: clients on hosts 1 and 2 fan in to three server ports on host 3, for
/// every transport: each host and each port completes RPCs, every response byte checked (40 B
/// each), and nothing is left behind.
#[test]
fn rpc_fans_in_from_hosts_over_ports() {
    let Some(_root) = common::root::alone() else { return };
    let before = Leftovers::before();
    let flags = "--hosts 3 --ports 3 --clients 2 --depth 2 --duration 1s --workload 3000";
    let flags: Vec<&str> = flags.split(' ').chain(["--response-size", "40"]).collect();
    let report = bench_rpc(&flags);
    assert_eq!((report["hosts"].as_u64(), report["ports"].as_u64()), (Some(3), Some(3)));
    let placement = report["placement"].as_str().unwrap();
    assert!(placement.contains("hosts 1-2") && placement.contains("on host 3"), "{placement}");
    assert!(report["testbed"].as_str().unwrap().contains("3 hosts"), "{report}");
    let rows = report["results"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        check_row(row, 40);
        assert_eq!(row["verified_bytes"].as_u64().unwrap(), row["rpcs"].as_u64().unwrap() * 40);
        let hosts = tallies(row, "by_host", "host");
        assert_eq!(hosts.iter().map(|h| h.0).collect::<Vec<_>>(), [1, 2], "{row}");
        let ports = tallies(row, "by_port", "port");
        assert_eq!(ports.iter().map(|p| p.0).collect::<Vec<_>>(), [7700, 7701, 7702], "{row}");
        for (list, key) in [("by_host", "host"), ("by_port", "port")] {
            for e in row[list].as_array().unwrap() {
                let rpcs = e["rpcs"].as_u64().unwrap();
                assert!(rpcs > 0, "{key} without RPCs: {row}");
                assert_eq!(e["verified_bytes"].as_u64().unwrap(), rpcs * 40, "{row}");
            }
        }
    }
    before.assert_none();
}

/// An eTran TCP client that sleeps when idle sends the request it starts on a response at
/// once: one RPC at a time, each round trip well under the 10 ms a sleeping app waits at most
/// (the next request used to wait for that sleep to end: 10.4 ms a round trip, 96 RPCs/s).
/// The bound: a p50 under 5 ms and more than 200 RPCs/s, or, where Linux's own sleeping
/// sockets in the same run do worse than that, twice Linux's p50 and half its rate: in an
/// emulated guest (`scripts/native-e2e`) a sleeping vCPU wakes in milliseconds, and Linux
/// took 8.4-8.7 ms a round trip (110-131 RPCs/s; eTran 2.6-13.2 ms). On a host Linux's round
/// trip is tens of microseconds, so the bound there is 5 ms and 200 RPCs/s.
#[test]
fn etran_tcp_rpcs_go_out_before_the_client_sleeps() {
    let Some(_root) = common::root::alone() else { return };
    let run = |transport: &str| {
        let flags = format!("--transport {transport} --wait block --workload 100 --duration 1s");
        let report = bench_rpc(&flags.split(' ').collect::<Vec<_>>());
        let row = report["results"][0].clone();
        check_row(&row, 100);
        (row["rtt_us"]["p50"].as_f64().unwrap(), row["rpcs"].as_u64().unwrap(), row)
    };
    let (linux_p50, linux_rpcs, _) = run("linux-tcp");
    let (p50, rpcs, row) = run("etran-tcp");
    let (max_p50, min_rpcs) = (5000f64.max(2.0 * linux_p50), 200u64.min(linux_rpcs / 2));
    assert!(
        p50 < max_p50 && rpcs > min_rpcs,
        "p50 {p50} us (bound {max_p50}), {rpcs} RPCs (bound {min_rpcs}; Linux: p50 {linux_p50} \
         us, {linux_rpcs} RPCs): {row}"
    );
}

/// cp_node's dialect: a per-second line of the clients on stderr for every second of each run
/// (unloaded and loaded), `--one-way` responses of 100 B, `--max-size` cutting W4 at 100 KB
/// (with a smaller incoming cap on the hosts), then lifting the cap for 4 MB requests.
/// eTran TCP's bursts through a 1 Gbit/s bottleneck (eight 1 MB RPCs at once) lose nothing at
/// the switch's ports: frames sent from both CPUs used to share one 256-frame receive ring,
/// which overflowed by hundreds of frames a second (each one a retransmission, some a 200 ms
/// timeout). The bench reports the switch's drops by where they happened.
#[test]
fn bursts_through_a_bottleneck_find_room_at_the_switch_ports() {
    let Some(_root) = common::root::shared() else { return };
    let leftovers = Leftovers::before();
    let report = bench_rpc(&[
        "--transport",
        "etran-tcp",
        "--workload",
        "1000000",
        "--rate",
        "1gbit",
        "--depth",
        "8",
        "--duration",
        "2s",
    ]);
    let row = &report["results"][0];
    check_row(row, 1_000_000);
    let drops = &row["switch_drops"];
    assert_eq!(drops["rings"], 0, "{row}");
    assert!(drops["queues"].is_u64(), "{row}");
    leftovers.assert_none();
}

#[test]
fn rpc_speaks_cp_node() {
    let Some(_root) = common::root::alone() else { return };
    let args = ["--transport", "etran-homa", "--duration", "2s", "--workload", "w4"];
    let (report, log) = bench_rpc_logged(
        &[&args[..], &["--one-way", "--max-size", "100000", "--homa-max-incoming", "150000"]]
            .concat(),
    );
    assert_eq!(report["homa_max_incoming"], 150_000);
    assert_eq!(
        (report["one_way"].as_bool(), report["max_request_bytes"].as_u64()),
        (Some(true), Some(100_000))
    );
    let row = &report["results"][0];
    check_row(row, 16);
    let rpcs = row["rpcs"].as_u64().unwrap();
    assert!(row["verified_bytes"].as_u64().unwrap() <= rpcs * 100, "{row}");
    assert_eq!(row["by_size"][9]["max_request_bytes"], 100_000, "{row}");
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("etran-homa clients: ")).collect();
    let mut busy = 0;
    for &l in &lines {
        let f: Vec<&str> = l.split(' ').collect();
        let words = [3, 5, 6, 8, 9, 10, 11, 12, 14, 16, 18, 19, 20, 22].map(|i| f[i]);
        let want = [
            "Kops/sec,",
            "Gbps",
            "out,",
            "Gbps",
            "in,",
            "RTT",
            "(us)",
            "P50",
            "P99",
            "P99.9",
            "avg.",
            "req.",
            "length",
            "bytes",
        ];
        assert_eq!((f.len(), words), (23, want), "{l}");
        let num = |i: usize| f[i].trim_end_matches(',').parse::<f64>().unwrap();
        assert!(num(13) <= num(15) && num(15) <= num(17), "{l}");
        busy += usize::from(num(2) > 0.0 && num(13) > 0.0 && num(21) >= 16.0);
    }
    assert!(busy >= 3, "a line a second, unloaded and loaded: {log}");
    let report = bench_rpc(&[
        "--transport",
        "etran-homa",
        "--duration",
        "1s",
        "--workload",
        "4000000",
        "--max-size",
        "4000000",
        "--one-way",
    ]);
    let row = &report["results"][0];
    check_row(row, 100);
    assert_eq!(row["mean_request_bytes"], 4e6, "{row}");
}

/// On a lossy switch: with a 2 ms deadline an RPC whose packet was lost cannot be recovered in
/// time, and the run ends at once with one line naming it, not a hang; at 2 % loss with the
/// default deadline every row recovers and complete, every response checked.
#[test]
fn lossy_runs_recover_or_end_in_one_line() {
    let Some(_root) = common::root::alone() else { return };
    let before = Leftovers::before();
    let start = std::time::Instant::now();
    let out = etran(&[
        "-j",
        "bench",
        "rpc",
        "--transport",
        "etran-homa",
        "--loss",
        "0.2",
        "--workload",
        "3000",
        "--clients",
        "2",
        "--depth",
        "2",
        "--duration",
        "1s",
        "--rpc-timeout",
        "2ms",
    ]);
    assert!(start.elapsed() < std::time::Duration::from_secs(30), "{:?}", start.elapsed());
    assert!(!out.status.success());
    // With -j the error is the report.
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = report["error"].as_str().unwrap();
    assert!(e.contains("got no response within 2ms") && !e.contains('\n'), "{e}");

    // 3 s: a Linux client whose SYN or SYN-ACK is lost (4 % of connections at 2 % loss) waits
    // its 1 s SYN timeout; in a 1 s run its row then had no RPC at all.
    let report = bench_rpc(&["--loss", "0.02", "--workload", "w3", "--duration", "3s"]);
    assert_eq!(report["loss"], 0.02);
    for row in report["results"].as_array().unwrap() {
        check_row(row, 16);
    }
    before.assert_none();
}

#[test]
fn rpc_rejects_bad_flags_in_one_line() {
    for args in [
        &["bench", "rpc", "--workload", "w7"][..],
        &["bench", "rpc", "--workload", "4"],
        &["bench", "rpc", "--threads", "3", "--clients", "2"],
        &["bench", "rpc", "--depth", "0"],
        &["bench", "rpc", "--response-size", "0"],
        &["bench", "rpc", "--loss", "2"],
    ] {
        let out = etran(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.trim().lines().count() <= 3, "{args:?}: short error, got {err}");
    }
    for (args, flag) in [
        (&["bench", "rpc", "--hosts", "1"][..], "--hosts"),
        (&["bench", "rpc", "--hosts", "40"], "--hosts"),
        (&["bench", "rpc", "--ports", "0"], "--ports"),
        (&["bench", "rpc", "--ports", "5", "--clients", "2", "--depth", "2"], "--ports"),
    ] {
        let out = etran(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.trim().lines().count() == 1, "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
    }
}
