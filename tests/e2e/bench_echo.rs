//! `etran bench echo` through the real binary on its private testbed: numbers for Linux, eTran,
//! and eTran against Linux, every byte verified, nothing left behind. Needs root.
use std::process::Command;

use common::cli::etran;
use serde_json::Value;

fn namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn linux_echo_runs_verified_and_cleans_up() {
    let Some(_root) = common::root::alone() else { return };
    let before = Leftovers::before();
    let out = etran(&[
        "-j",
        "bench",
        "echo",
        "--transport",
        "linux",
        "--duration",
        "1s",
        "--size",
        "1000",
        "--conns",
        "4",
        "--depth",
        "2",
        "--threads",
        "2",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &report["results"][0];
    assert_eq!(row["transport"], "linux");
    let messages = row["messages"].as_u64().unwrap();
    assert!(messages > 100, "{row}");
    assert!(row["verified_bytes"].as_u64().unwrap() >= messages * 1000);
    let cpu = row["cpu_us_per_msg"].as_f64().unwrap();
    assert!(cpu > 0.0 && cpu < 1e6, "CPU time per round trip: {row}");
    let p = &row["rtt_us"];
    assert!(p["p50"].as_f64().unwrap() <= p["p99"].as_f64().unwrap());
    assert!(report["placement"].as_str().unwrap().contains("CPU"));
    let c = &row["linux_counters"];
    assert!(c["fast_retransmits"].is_u64() && c["rtos"].is_u64(), "{row}");
    before.assert_none();
}

fn bpf_pins() -> Vec<String> {
    std::fs::read_dir("/run/etran/bpf")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("net"))
        .collect()
}

/// The testbed namespaces and datapath pins there were before a bench: it must leave none.
pub(crate) struct Leftovers {
    namespaces: Vec<String>,
    pins: Vec<String>,
}

impl Leftovers {
    pub(crate) fn before() -> Leftovers {
        Leftovers { namespaces: namespaces(), pins: bpf_pins() }
    }

    pub(crate) fn assert_none(&self) {
        let left: Vec<_> =
            namespaces().into_iter().filter(|n| !self.namespaces.contains(n)).collect();
        assert!(
            left.iter().all(|n| !n.starts_with("etb")),
            "private testbed left behind: {left:?}"
        );
        let pins: Vec<_> = bpf_pins().into_iter().filter(|n| !self.pins.contains(n)).collect();
        assert!(pins.is_empty(), "pins left behind: {pins:?}");
    }
}

/// eTran against eTran: datapath, daemons and apps in the testbed's hosts, every echoed byte
/// checked, one App thread per side busy-polling and two waiting in the library
/// (`--wait block`); the namespaces, pins and daemon sockets are gone afterwards.
#[test]
fn etran_echo_runs_verified_and_cleans_up() {
    let Some(_root) = common::root::alone() else { return };
    let before = Leftovers::before();
    for (size, threads, wait) in [("64", "1", "busy"), ("1000", "2", "block")] {
        let out = etran(&[
            "-j",
            "bench",
            "echo",
            "--transport",
            "etran",
            "--duration",
            "1s",
            "--size",
            size,
            "--conns",
            "4",
            "--depth",
            "3",
            "--threads",
            threads,
            "--wait",
            wait,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{size} B: {stderr}");
        // The built-in daemons' lifecycle lines are for -v only.
        assert!(!stderr.contains("etran daemon:"), "daemon lines in the output: {stderr}");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["wait"], wait);
        let row = &report["results"][0];
        assert_eq!(row["transport"], "etran");
        let messages = row["messages"].as_u64().unwrap();
        assert!(messages > 0, "{row}");
        let size: u64 = size.parse().unwrap();
        assert!(row["verified_bytes"].as_u64().unwrap() >= messages * size, "{row}");
        let p = &row["rtt_us"];
        assert!(p["p50"].as_f64().unwrap() <= p["p99"].as_f64().unwrap());
        // The apps' counters: every frame sent was kicked out; nothing lost on a clean testbed.
        let c = &row["counters"];
        assert!(c["tx_kicks"].as_u64().unwrap() > 0, "{c}");
        assert!(c["tx_kick_eagain"].as_u64().unwrap() <= c["tx_kicks"].as_u64().unwrap());
        for k in ["rx_dropped", "rx_ring_full", "rx_fill_ring_empty_descs"] {
            assert_eq!(c["xdp"][k], 0, "{k}: {c}");
        }
        assert!(c["xdp"]["tx_ring_empty_descs"].is_u64() && c["rtos"].is_u64(), "{c}");
        assert!(c["fast_retransmits"].is_u64(), "{c}");
        // One client and one server App per thread, each back to all its TX frames.
        let apps = row["leak_check"]["apps"].as_array().unwrap();
        assert_eq!(apps.len(), 2 * threads.parse::<usize>().unwrap(), "{row}");
        for app in apps {
            assert_eq!(app["tx_free_at_end"], app["tx_frames"], "{app}");
        }
    }
    before.assert_none();
}

/// eTran clients against Linux TCP servers (the server host runs no etran), every side
/// sleeping when idle (`--wait block`: the servers block in epoll_wait): every echoed byte
/// checked, the client apps back to all their TX frames, the client host's connection map and
/// ports back where they started, nothing left behind.
#[test]
fn etran_against_linux_echo_runs_verified_and_cleans_up() {
    let Some(_root) = common::root::alone() else { return };
    let before = Leftovers::before();
    let out = etran(&[
        "-j",
        "bench",
        "echo",
        "--transport",
        "etran-linux",
        "--wait",
        "block",
        "--duration",
        "1s",
        "--size",
        "1000",
        "--conns",
        "4",
        "--depth",
        "3",
        "--threads",
        "2",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &report["results"][0];
    assert_eq!(row["transport"], "etran-linux");
    let messages = row["messages"].as_u64().unwrap();
    assert!(messages > 0, "{row}");
    assert!(row["verified_bytes"].as_u64().unwrap() >= messages * 1000, "{row}");
    let leaks = &row["leak_check"];
    assert_eq!(leaks["before"], leaks["after"], "{leaks}");
    assert_eq!(leaks["closed_conns"], leaks["before"]["tcp_conns"], "{leaks}");
    // Only the client host has apps: one per thread.
    let apps = leaks["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 2, "{row}");
    for app in apps {
        assert!(app["app"].as_str().unwrap().starts_with("client"), "{app}");
        assert_eq!(app["tx_free_at_end"], app["tx_frames"], "{app}");
    }
    before.assert_none();
}

/// Connections opened and closed continuously (each after 2 round trips), on both engines:
/// eTran's connection maps, app ports, descriptors and UMEM frames are back where they started.
#[test]
fn churn_leaves_nothing_behind() {
    let Some(_root) = common::root::alone() else { return };
    let out = etran(&[
        "-j",
        "bench",
        "echo",
        "--duration",
        "3s",
        "--size",
        "200",
        "--conns",
        "4",
        "--depth",
        "1",
        "--threads",
        "2",
        "--churn",
        "2",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["churn"], 2);
    for row in report["results"].as_array().unwrap() {
        let churn = &row["churn"];
        let closes = churn["closes"].as_u64().unwrap();
        assert!(closes >= 20, "{row}");
        assert!(churn["opens"].as_u64().unwrap() >= closes + 4, "{row}");
        assert!(row["messages"].as_u64().unwrap() >= 2 * closes, "{row}");
    }
    let etran = &report["results"][0];
    assert_eq!(etran["transport"], "etran");
    let leaks = &etran["leak_check"];
    assert_eq!(leaks["before"], leaks["after"], "{leaks}");
    assert_eq!(leaks["closed_conns"], leaks["before"]["tcp_conns"], "{leaks}");
    assert!(leaks["peak_conns"][0].as_u64().unwrap() > 0, "the sampler saw connections: {leaks}");
    for app in leaks["apps"].as_array().unwrap() {
        assert_eq!(app["tx_free_at_end"], app["tx_frames"], "{app}");
    }
}

#[test]
fn echo_rejects_bad_flags_in_one_line() {
    for args in [
        &["bench", "echo", "--threads", "3", "--conns", "2"][..],
        &["bench", "echo", "--size", "0"],
        &["bench", "echo", "--duration", "0s"],
        &["bench", "echo", "--transport", "etran", "--iface", "lo"],
        &["bench", "echo", "--churn", "0"],
    ] {
        let out = etran(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.trim().lines().count() <= 3, "{args:?}: short error, got {err}");
    }
}

/// `--direct`: every transport on one veth pair, each row saying so; the Linux row alone with
/// TSO, eTran against a Linux peer still verified (its ingress sees full checksums).
#[test]
fn direct_topology_rows_say_where_they_ran() {
    let Some(_root) = common::root::alone() else { return };
    let report = common::cli::bench_echo_bulk(&["--direct"]);
    assert!(report["testbed"].as_str().unwrap().contains("no switch"), "{report}");
    let rows = report["results"].as_array().unwrap();
    let names: Vec<_> = rows.iter().map(|r| r["transport"].as_str().unwrap()).collect();
    assert_eq!(names, ["etran", "etran-linux", "linux"]);
    for row in rows {
        assert_eq!(row["topology"], "direct", "{row}");
        assert_eq!(row["tso"], row["transport"] == "linux", "{row}");
        let messages = row["messages"].as_u64().unwrap();
        assert!(messages > 0 && row["verified_bytes"].as_u64().unwrap() >= messages * 20000);
    }
    // And the default, for contrast: the switch, no TSO.
    let out = etran(&["-j", "bench", "echo", "--transport", "linux", "--duration", "300ms"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["results"][0]["topology"], "switch");
    assert_eq!(report["results"][0]["tso"], false);
}
