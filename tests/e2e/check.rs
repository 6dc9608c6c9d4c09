//! `etran up --check` on this machine's kernel: every feature the TCP transport needs is found and
//! every embedded BPF program loads (the kernel matrix, scripts/kernel-matrix, runs the same
//! check on older kernels). Needs root.
use std::process::Command;

use serde_json::Value;

#[test]
fn this_kernel_has_every_tcp_feature_and_loads_every_program() {
    let Some(_root) = common::root::alone() else { return };
    let out =
        Command::new(common::cli::etran_bin()).args(["up", "--check", "-j"]).output().unwrap();
    assert!(out.status.success(), "etran up --check: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(report["tcp_compat"], true, "{report:#}");

    let features = report["features"].as_array().unwrap();
    for f in features {
        // The eTran hooks need our patched kernel; this one is stock.
        let expected = f["feature"] != "native-hooks";
        assert_eq!(f["present"], expected, "{f}");
    }
    let needed = |by: &str| features.iter().filter(|f| f["needed_by"] == by).count();
    assert!(needed("etran up") >= 5 && needed("etran daemon") >= 2, "{report:#}");

    let programs: Vec<(&str, &Value)> = report["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["object"].as_str().unwrap(), &p["error"]))
        .collect();
    let objects: Vec<&str> = programs.iter().map(|(o, _)| *o).collect();
    assert_eq!(objects, ["entrance", "tcp", "homa", "switch", "xsk_redirect"]);
    for (object, error) in programs {
        assert!(error.is_null(), "{object}: {error}");
    }
}
