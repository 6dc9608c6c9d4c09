//! `etran up` / `stats` / `down` end to end on a veth pair in private namespaces, through the
//! real binary, as a user would run them with `ip netns exec`. Needs root.
use std::process::{Command, Output};

use common::{
    cli::etran_in as etran,
    netns::{in_netns, sh, VethPair},
};
use serde_json::Value;

fn ok_json(ns: &str, args: &[&str]) -> Value {
    let out = etran(ns, args);
    assert!(out.status.success(), "etran {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn err_line(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one-line error, got {err:?}");
    err
}

fn class<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats[0]["traffic"].as_array().unwrap().iter().find(|c| c["class"] == name).unwrap()
}

#[test]
fn up_stats_down_lifecycle() {
    let Some(_root) = common::root::shared() else { return };
    let net = VethPair::new("dp-life");
    let first = etran(&net.a, &["-j", "up", "va"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let warning = String::from_utf8_lossy(&first.stderr);
    assert!(
        warning.lines().count() == 1
            && warning.contains("va is a veth")
            && warning.contains("tx off"),
        "one line on a veth's checksum offload: {warning:?}"
    );
    let up: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(up["already_up"], false);
    let backend = if common::on_native() { "native" } else { "compat" };
    assert_eq!(up["datapath"]["backend"], backend, "--backend auto");
    assert_eq!(up["datapath"]["xdp_mode"], "drv");
    assert_eq!(ok_json(&net.a, &["-j", "up", "va"])["already_up"], true, "up is idempotent");

    // Traffic the kernel owns still flows through an interface under etran, and is counted.
    sh(&format!("ip netns exec {} ping -c 5 -i 0.05 -W 1 10.77.0.2", net.a));
    let stats = ok_json(&net.a, &["-j", "stats", "va"]);
    assert_eq!(stats[0]["iface"], "va");
    assert!(class(&stats, "ipv4_other")["pass"]["packets"].as_u64().unwrap() >= 5);
    assert_eq!(class(&stats, "tcp")["drop"]["packets"], 0);
    let events = stats[0]["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["event"] == "tcp_gen_ack" && e["packets"] == 0), "{stats}");
    let all = ok_json(&net.a, &["-j", "stats"]);
    assert_eq!(all.as_array().unwrap().len(), 1, "stats without IFACE lists every etran interface");
    let table = String::from_utf8(etran(&net.a, &["stats", "va"]).stdout).unwrap();
    assert!(table.contains("total bytes") && table.contains("no drops"), "{table}");

    // A reader that goes away (`| head`) ends the command quietly, not with a panic.
    let piped = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; ip netns exec {} {} stats --watch 10ms va | head -c 1 >/dev/null",
            net.a,
            common::cli::etran_bin()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(piped.status.success() && stderr.is_empty(), "{:?}: {stderr}", piped.status);

    let down = ok_json(&net.a, &["-j", "down", "va"]);
    assert_eq!(down["was_up"], true);
    let again = etran(&net.a, &["down", "va"]);
    assert!(again.status.success(), "down of an interface that is not up exits 0");
    assert!(String::from_utf8_lossy(&again.stdout).contains("not up"));
    let xdp = sh(&format!("ip -n {} -d link show va", net.a));
    assert!(!String::from_utf8_lossy(&xdp.stdout).contains("prog/xdp"), "nothing left attached");
    let stats = etran(&net.a, &["stats", "va"]);
    assert!(err_line(&stats).contains("not up on va"));
}

#[test]
fn skb_mode_and_queue_limits() {
    let Some(_root) = common::root::shared() else { return };
    let net = VethPair::new("dp-mode");
    let up = ok_json(&net.a, &["-j", "up", "va", "--mode", "skb", "--queues", "1"]);
    assert_eq!(up["datapath"]["xdp_mode"], "skb");
    assert_eq!(up["datapath"]["queues"], 1);
    ok_json(&net.a, &["-j", "down", "va"]);
    let err = err_line(&etran(&net.a, &["up", "va", "--queues", "8"]));
    assert!(err.contains("RX queue"), "{err}");
    let out = sh(&format!("ip -n {} -d link show va", net.a));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("prog/xdp"),
        "refused up attaches nothing"
    );
    // A veth with several queues cannot keep a connection on one of them.
    sh(&format!(
        "ip -n {} link add vq numtxqueues 2 numrxqueues 2 type veth peer name vr \
         numtxqueues 2 numrxqueues 2",
        net.a
    ));
    let err = err_line(&etran(&net.a, &["up", "vq"]));
    assert!(err.contains("veth with 2 RX queues"), "{err}");
    let out = sh(&format!("ip -n {} -d link show vq", net.a));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("prog/xdp"), "nothing attached");
}

#[test]
fn bad_input_gets_one_line_errors() {
    let Some(_root) = common::root::shared() else { return };
    let net = VethPair::new("dp-err");
    assert!(err_line(&etran(&net.a, &["up", "nosuch0"])).contains("no interface named"));
    assert!(err_line(&etran(&net.a, &["down", "nosuch0"])).contains("no interface named"));
    // The namespace's own loopback: not Ethernet, refused with nothing attached.
    assert!(err_line(&etran(&net.a, &["up", "lo"])).contains("not an Ethernet interface"));
    let out = sh(&format!("ip -n {} -d link show lo", net.a));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("prog/xdp"), "nothing attached");
    if common::on_native() {
        // The series' kernel: the native backend is there when asked for.
        let up = ok_json(&net.a, &["-j", "up", "--backend", "native", "va"]);
        assert_eq!(up["datapath"]["backend"], "native");
        ok_json(&net.a, &["-j", "down", "va"]);
    } else {
        // A stock kernel: the native backend is refused, naming the series' first missing hook.
        let err = err_line(&etran(&net.a, &["up", "--backend", "native", "va"]));
        assert!(err.contains("lacks BPF_XSK_EGRESS") && err.contains("--backend compat"), "{err}");
        let out = sh(&format!("ip -n {} -d link show va", net.a));
        assert!(!String::from_utf8_lossy(&out.stdout).contains("prog/xdp"), "nothing attached");
        // So are the echo and RPC benches', before they build anything.
        for bench in ["echo", "rpc"] {
            let err = err_line(&etran(&net.a, &["bench", bench, "--backend", "native"]));
            assert!(err.contains("--backend native: this kernel lacks BPF_XSK_EGRESS"), "{err}");
        }
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            common::cli::etran_bin(),
            "up",
            "lo",
        ])
        .output()
        .unwrap();
    assert!(err_line(&out).contains("needs root"));
}

/// Loads `r0 = XDP_PASS; exit` as some other tool's XDP program and attaches it to `iface`.
fn attach_foreign_program(ns: &str, iface: &str) {
    in_netns(ns, || {
        use libbpf_rs::libbpf_sys as sys;
        let insns = [
            sys::bpf_insn {
                code: (sys::BPF_ALU64 | sys::BPF_MOV | sys::BPF_K) as u8,
                _bitfield_align_1: [],
                _bitfield_1: sys::bpf_insn::new_bitfield_1(0, 0),
                off: 0,
                imm: 2,
            },
            sys::bpf_insn {
                code: (sys::BPF_JMP | sys::BPF_EXIT) as u8,
                _bitfield_align_1: [],
                _bitfield_1: sys::bpf_insn::new_bitfield_1(0, 0),
                off: 0,
                imm: 0,
            },
        ];
        let fd = unsafe {
            sys::bpf_prog_load(
                sys::BPF_PROG_TYPE_XDP,
                c"foreign".as_ptr(),
                c"GPL".as_ptr(),
                insns.as_ptr(),
                2,
                std::ptr::null_mut(),
            )
        };
        assert!(fd >= 0, "load foreign program: {fd}");
        let ifindex = etran::sys::ifindex(iface).unwrap();
        let ret = unsafe {
            sys::bpf_xdp_attach(ifindex as i32, fd, sys::XDP_FLAGS_DRV_MODE, std::ptr::null())
        };
        assert_eq!(ret, 0, "attach foreign program");
        unsafe { libc::close(fd) };
    });
}

#[test]
fn foreign_program_is_refused_unless_forced() {
    let Some(_root) = common::root::shared() else { return };
    let net = VethPair::new("dp-frgn");
    attach_foreign_program(&net.a, "va");
    let err = err_line(&etran(&net.a, &["up", "va"]));
    assert!(err.contains("already carries XDP program") && err.contains("--force"), "{err}");
    let out = sh(&format!("ip -n {} -d link show va", net.a));
    assert!(String::from_utf8_lossy(&out.stdout).contains("foreign"), "foreign program untouched");
    assert_eq!(ok_json(&net.a, &["-j", "up", "va", "--force"])["already_up"], false);
    ok_json(&net.a, &["-j", "down", "va"]);
}
