//! `etran bench echo` through the real binary on its private testbed: numbers for every Linux
//! variant, every byte verified, nothing left behind. Needs root.
use std::process::Command;

use serde_json::Value;

fn etran(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_etran")).args(args).output().expect("run etran")
}

fn namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn linux_echo_runs_verified_and_cleans_up() {
    let before = namespaces();
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
    let p = &row["rtt_us"];
    assert!(p["p50"].as_f64().unwrap() <= p["p99"].as_f64().unwrap());
    assert!(report["placement"].as_str().unwrap().contains("CPU"));
    let left: Vec<_> = namespaces().into_iter().filter(|n| !before.contains(n)).collect();
    assert!(left.iter().all(|n| !n.starts_with("etb")), "private testbed left behind: {left:?}");
}

#[test]
fn echo_rejects_bad_flags_in_one_line() {
    for args in [
        &["bench", "echo", "--threads", "3", "--conns", "2"][..],
        &["bench", "echo", "--size", "0"],
        &["bench", "echo", "--duration", "0s"],
        &["bench", "echo", "--transport", "etran"],
    ] {
        let out = etran(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.trim().lines().count() <= 3, "{args:?}: short error, got {err}");
    }
}
