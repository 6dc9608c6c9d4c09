//! `etran up --check` on this machine's kernel: every feature the TCP transport needs is found and
//! every embedded BPF program loads (the kernel matrix, scripts/kernel-matrix, runs the same
//! check on older kernels), with room to spare under the verifier's instruction limit. Needs root.
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
    let native = common::on_native();
    for f in features {
        // The eTran hooks (gen on demand, the packet queue) need our patched kernel: present
        // there, absent from a stock one. The rbtree walk is mainline's since 6.16 (our series
        // backports it).
        // Live frames are the native backend's need only: a stock kernel may refuse them
        // (this machine's 6.18.44 does).
        let patched = ["native-hooks", "gen-wakeup", "packet-queue"];
        let expected = match f["feature"].as_str().unwrap() {
            "rbtree-search" => {
                native || release_at_least(report["kernel"].as_str().unwrap(), (6, 16))
            }
            "live-frames" if !native => continue,
            name => native || !patched.contains(&name),
        };
        assert_eq!(f["present"], expected, "{f}");
    }
    let needed = |by: &str| features.iter().filter(|f| f["needed_by"] == by).count();
    assert!(needed("etran up") >= 5 && needed("etran daemon") >= 1, "{report:#}");

    let programs = report["programs"].as_array().unwrap();
    let objects: Vec<&str> = programs.iter().map(|p| p["object"].as_str().unwrap()).collect();
    assert_eq!(
        objects,
        ["entrance", "tcp", "homa", "tcp_native", "homa_native", "switch", "xsk_redirect"]
    );
    for p in programs {
        assert!(p["error"].is_null(), "{}: {}", p["object"], p["error"]);
        // A program the verifier takes only near its limit is refused by the next kernel whose
        // verifier explores a little more (6.18.44 refused a Homa ingress at 1M that earlier
        // kernels verified well below it): keep every program under half.
        let insns = p["verified_insns"].as_u64().expect("this kernel reports verified_insns");
        let limit = p["verifier_limit"].as_u64().unwrap();
        assert!(
            insns < limit / 2,
            "{}: {} takes the verifier {insns} of {limit} instructions",
            p["object"],
            p["heaviest"]
        );
    }
}

/// Whether kernel release `release` (`6.18.44-fc-v1252`) is at least `major.minor`.
fn release_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut v = release.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (major, minor)
}
