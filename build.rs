//! Compiles every `*.bpf.c` under `src/bpf` (one folder per room: `tcp/`, `testbed/`, `xsk/`,
//! the entrance at the top) into a libbpf skeleton (`$OUT_DIR/<name>.skel.rs`, named by the
//! file) that is embedded in the binary. Programs are written against the kernel UAPI headers
//! (linux-libc-dev) plus our own headers, included by their path under src/bpf
//! (`"common/parse.h"`, `"tcp/tcp.h"`): XDP code touches only packet bytes and UAPI structs, so
//! it needs no CO-RE relocations and no committed vmlinux.h. Test-only programs under
//! `tests/bpf` (built from the same headers) become skeletons the same way; only the integration
//! tests include those.
use std::{
    env,
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
};

use libbpf_cargo::SkeletonBuilder;

/// Every file under `dir`, depth first, sorted so that the build order is stable.
fn files(dir: &Path, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("readable BPF source entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            files(&path, found);
        } else {
            found.push(path);
        }
    }
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let clang = env::var("ETRAN_CLANG").unwrap_or_else(|_| "clang-19".to_string());
    println!("cargo:rerun-if-env-changed=ETRAN_CLANG");
    let mut sources = Vec::new();
    for dir in ["src/bpf", "tests/bpf"] {
        println!("cargo:rerun-if-changed={dir}");
        files(Path::new(dir), &mut sources);
    }
    for path in &sources {
        if matches!(path.extension().and_then(OsStr::to_str), Some("c" | "h")) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    for src in sources.iter().filter(|p| p.to_string_lossy().ends_with(".bpf.c")) {
        let file = src.file_name().and_then(OsStr::to_str).expect("utf-8 file name");
        let name = file.trim_end_matches(".bpf.c");
        SkeletonBuilder::new()
            .source(src)
            .clang(&clang)
            .clang_args(["-I/usr/include/x86_64-linux-gnu", "-Isrc/bpf", "-Wall", "-Werror"])
            .build_and_generate(out.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| panic!("building {}: {e:#}", src.display()));
    }
}
