//! Builds the POSIX shim (`shim/`, a cdylib over the etran library) with a nested cargo and
//! puts it at `$OUT_DIR/libetran_shim.so`, for `lib.rs` to embed.
//!
//! Why nested: the etran binary is linked with `+crt-static` (.cargo/config.toml), under which
//! rustc builds no cdylib, while a preloaded object must be a normal dynamic glibc one; and
//! cargo cannot make one package's cdylib the input of another's build. So the shim gets its
//! own cargo run, target directory (`<target>/<triple>/<profile>/shim`) and flags. That run
//! builds etran again, and with it this crate: `ETRAN_SHIM_NESTED` stops the recursion there
//! (the shim's own copy of etran carries an empty shim).
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

const NESTED: &str = "ETRAN_SHIM_NESTED";
/// The shim's rustflags (`CARGO_ENCODED_RUSTFLAGS`: separated by 0x1f).
const SHIM_RUSTFLAGS: &str = "-Ctarget-feature=-crt-static\x1f-Cdebuginfo=0";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let so = out.join("libetran_shim.so");
    println!("cargo:rerun-if-env-changed={NESTED}");
    if env::var_os(NESTED).is_some() {
        fs::write(&so, b"").expect("write the empty shim");
        return;
    }
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.join("../..").canonicalize().expect("the repository");
    // Everything the shim is built from: the etran library (BPF included) and the shim.
    for p in ["src", "build.rs", "Cargo.toml", "Cargo.lock", "shim/src", "shim/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let target = env::var("TARGET").expect("TARGET is set by cargo");
    let profile = env::var("PROFILE").expect("PROFILE is set by cargo");
    // OUT_DIR is <target-dir>/<triple>/<profile>/build/<pkg>-<hash>/out.
    let profile_dir = out.ancestors().nth(3).expect("OUT_DIR's profile directory");
    let target_dir = profile_dir.join("shim");
    let mut cargo = Command::new(env::var_os("CARGO").expect("CARGO is set by cargo"));
    cargo
        .args(["build", "--package", "etran-shim", "--target", &target, "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&root)
        .env(NESTED, "1")
        // The outer build's flags (crt-static) and wrappers (clippy) are not the shim's: these
        // flags replace every other source of them (.cargo/config.toml's included). Without
        // debug info the object is a tenth of the size (the binary carries it).
        .env("CARGO_ENCODED_RUSTFLAGS", SHIM_RUSTFLAGS)
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    if profile == "release" {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("run the nested cargo");
    assert!(status.success(), "building the shim failed ({status})");
    let built = target_dir.join(&target).join(&profile).join("libetran_shim.so");
    copy_if_changed(&built, &so);
}

/// Copies `from` to `to` unless `to` already holds the same bytes (keeps its mtime, so that
/// nothing embedding it rebuilds for nothing).
fn copy_if_changed(from: &Path, to: &Path) {
    let new = fs::read(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
    if fs::read(to).ok().as_deref() != Some(&new[..]) {
        fs::write(to, &new).unwrap_or_else(|e| panic!("writing {}: {e}", to.display()));
    }
}
