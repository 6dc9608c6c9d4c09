//! The `etran` binary as a user runs it: on the host, or in a namespace (`ip netns exec`).
use std::{
    path::Path,
    process::{Command, Output},
    sync::OnceLock,
};

/// The `etran` binary cargo builds beside the test binaries: the tests run in
/// `target/<profile>/deps/`, the binary is `target/<profile>/etran`.
pub fn etran_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        let bin = exe.parent().and_then(Path::parent).expect("target/<profile>").join("etran");
        assert!(bin.exists(), "{} not found (cargo test builds it)", bin.display());
        bin.to_str().expect("a UTF-8 target path").to_string()
    })
}

/// `etran args` on the host.
pub fn etran(args: &[&str]) -> Output {
    Command::new(etran_bin()).args(args).output().expect("run etran")
}

/// `etran args` in namespace `ns`.
pub fn etran_in(ns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns, etran_bin()])
        .args(args)
        .output()
        .expect("run etran under ip netns exec")
}

/// `etran args` in namespace `ns`, which must succeed.
pub fn etran_in_ok(ns: &str, args: &[&str]) -> Output {
    let out = etran_in(ns, args);
    assert!(
        out.status.success(),
        "etran {} in {ns}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `etran -j bench echo` of every transport for 1 s, 20000-byte messages at depth 2 (enough
/// to fill full-size segments), with `extra` flags; must succeed. Its JSON report.
pub fn bench_echo_bulk(extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["-j", "bench", "echo", "--duration", "1s", "--size", "20000"];
    args.extend(["--depth", "2"]);
    args.extend(extra);
    let out = etran(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("bench echo's JSON report")
}
