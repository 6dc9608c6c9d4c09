//! Compiles every `src/bpf/*.bpf.c` into a libbpf skeleton (`$OUT_DIR/<name>.skel.rs`) that is
//! embedded in the binary. Programs are written against the kernel UAPI headers (linux-libc-dev)
//! plus our own headers in src/bpf: XDP code touches only packet bytes and UAPI structs, so it
//! needs no CO-RE relocations and no committed vmlinux.h.
use std::{env, ffi::OsStr, fs, path::PathBuf};

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let clang = env::var("ETRAN_CLANG").unwrap_or_else(|_| "clang-19".to_string());
    println!("cargo:rerun-if-env-changed=ETRAN_CLANG");
    println!("cargo:rerun-if-changed=src/bpf");

    let mut sources: Vec<PathBuf> = fs::read_dir("src/bpf")
        .expect("src/bpf exists")
        .map(|e| e.expect("readable src/bpf entry").path())
        .collect();
    sources.sort();
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
