//! `etran run -- CMD`: execs CMD with the POSIX shim (`shim/`, carried in this binary as
//! `etran_shim_so::SHIM_SO`) preloaded, after checking that it can be: a statically linked
//! program has no dynamic loader to preload anything, and the loader ignores LD_PRELOAD's
//! paths for a setuid or setgid one.
use std::{
    ffi::OsStr,
    fs,
    io::Read,
    os::unix::{
        fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};

use crate::{cli::RunArgs, output::Output};

pub fn run(args: RunArgs, _out: &Output) -> anyhow::Result<()> {
    let prog = &args.cmd[0];
    if let Some(path) = find_program(prog) {
        if let Some(why) = cannot_interpose(&path)? {
            bail!(
                "{} {why}: LD_PRELOAD cannot reach its sockets, so it cannot run over eTran",
                path.display()
            );
        }
    }
    let sock = &args.daemon_socket;
    let is_socket = fs::metadata(sock).is_ok_and(|m| m.mode() & libc::S_IFMT == libc::S_IFSOCK);
    if !is_socket {
        bail!(
            "no etran daemon socket at {} (start `etran daemon`, or say where with --daemon-socket)",
            sock.display()
        );
    }
    let so = write_shim()?;
    let mut preload = so.into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    let err = Command::new(prog)
        .args(&args.cmd[1..])
        .env("LD_PRELOAD", preload)
        .env("ETRAN_DAEMON_SOCKET", sock)
        .exec();
    bail!("running {}: {err}", Path::new(prog).display())
}

/// Where `prog` is: itself if it names a path, else the first match on PATH.
fn find_program(prog: &OsStr) -> Option<PathBuf> {
    let p = Path::new(prog);
    if p.components().count() > 1 {
        return Some(p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(p)).find(|c| c.is_file())
}

/// Why the loader would not preload the shim into `path`, if it would not.
fn cannot_interpose(path: &Path) -> anyhow::Result<Option<&'static str>> {
    let meta = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mode = meta.permissions().mode();
    if (mode & libc::S_ISUID != 0 && meta.uid() != uid)
        || (mode & libc::S_ISGID != 0 && meta.gid() != gid)
    {
        return Ok(Some("is setuid or setgid"));
    }
    let mut head = vec![0u8; 4096];
    let n = fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .with_context(|| format!("reading {}", path.display()))?;
    head.truncate(n);
    Ok((elf_interp(&head) == Some(false)).then_some("is statically linked"))
}

/// For a 64-bit little-endian ELF file starting with `head`: whether it names a dynamic loader
/// (a `PT_INTERP` program header). None: not such a file (a script, say), or its program
/// headers lie beyond `head`.
fn elf_interp(head: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return None;
    }
    let u16_at = |at: usize| u16::from_le_bytes([head[at], head[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(head[32..40].try_into().ok()?) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    let end = phoff.checked_add(phentsize.checked_mul(phnum)?)?;
    if phentsize < 4 || end > head.len() {
        return None;
    }
    Some((0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes")) == PT_INTERP
    }))
}

/// Writes the shim where only this user can write (`$XDG_RUNTIME_DIR/etran`, or
/// `/tmp/etran-UID`), named by its contents so that runs share one copy; returns its path.
fn write_shim() -> anyhow::Result<PathBuf> {
    let so = etran_shim_so::SHIM_SO;
    if so.is_empty() {
        bail!("this etran was built without its shim");
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("etran"),
        None => PathBuf::from(format!("/tmp/etran-{uid}")),
    };
    if let Err(e) = fs::DirBuilder::new().mode(0o700).create(&dir) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(e).with_context(|| format!("creating {}", dir.display()));
        }
    }
    // Someone else's directory (or a link to one) could hand us their object to preload.
    let meta = fs::symlink_metadata(&dir)?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        bail!("{} is not a private directory of this user: remove it", dir.display());
    }
    let path = dir.join(format!("etran-shim-{:016x}.so", fnv1a(so)));
    if fs::read(&path).is_ok_and(|have| have == so) {
        return Ok(path);
    }
    let tmp = dir.join(format!(".etran-shim-{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o500)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    std::io::Write::write_all(&mut f, so).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(path)
}

/// FNV-1a over `bytes`: names the shim's copy by its contents.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(path: &str) -> Vec<u8> {
        let mut head = vec![0u8; 4096];
        let n = fs::File::open(path).unwrap().read(&mut head).unwrap();
        head.truncate(n);
        head
    }

    #[test]
    fn a_dynamic_program_names_its_loader_and_a_script_is_not_elf() {
        assert_eq!(elf_interp(&head_of("/bin/sh")), Some(true));
        assert_eq!(elf_interp(b"#!/bin/sh\necho hello\n"), None);
        assert_eq!(elf_interp(&[0x7f, b'E', b'L', b'F']), None, "too short");
    }

    #[test]
    fn this_static_test_binary_has_no_loader() {
        // The tests link with crt-static as the etran binary does.
        let me = std::env::current_exe().unwrap();
        assert_eq!(elf_interp(&head_of(me.to_str().unwrap())), Some(false));
        assert_eq!(cannot_interpose(&me).unwrap(), Some("is statically linked"));
        assert_eq!(cannot_interpose(Path::new("/bin/sh")).unwrap(), None);
    }
}
