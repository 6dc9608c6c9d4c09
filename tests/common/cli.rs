//! The `etran` binary as a user runs it: on the host, or in a namespace (`ip netns exec`).
use std::{
    io::Read,
    path::Path,
    process::{Command, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
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

/// `cmd`'s output, as [`Command::output`], but killed (SIGKILL to its process group, which
/// its forks share) once `within` passed: `Err` then holds what it printed so far (stdout and
/// stderr), so that a test that hangs says where.
pub fn output_within(cmd: &mut Command, within: Duration) -> Result<Output, String> {
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + within;
    let mut blocked = String::new();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if Instant::now() > deadline {
            blocked = crate::blocked_in(&crate::process_group(child.id()));
            // SAFETY: signalling the process group of our own child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(status) => Ok(Output { status, stdout, stderr }),
        None => Err(format!(
            "killed after {within:?}, its processes then in:\n{blocked}it printed: {}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )),
    }
}
