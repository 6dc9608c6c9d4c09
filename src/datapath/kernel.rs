//! What the running kernel offers (BTF, version, the native eTran hooks) and the XDP attach
//! operations on an interface, over libbpf's netlink helpers.
use std::{ffi::CStr, io, mem};

use anyhow::{bail, Context};
use libbpf_rs::{libbpf_sys, Btf};

/// Oldest kernel etran supports: the XDP metadata, tail-call and map features of the datapath
/// were all in place by 6.6 (the base of the original eTran kernel).
pub const MIN_KERNEL: (u32, u32) = (6, 6);

/// Checks the running kernel: version at least [`MIN_KERNEL`] and BTF present.
pub fn check_supported() -> anyhow::Result<()> {
    let release = kernel_release()?;
    let version = parse_release(&release)
        .with_context(|| format!("cannot parse the kernel release {release:?}"))?;
    if version < MIN_KERNEL {
        bail!(
            "kernel {release} is too old: etran needs Linux {}.{} or newer",
            MIN_KERNEL.0,
            MIN_KERNEL.1
        );
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!("kernel {release} has no BTF (/sys/kernel/btf/vmlinux): build it with CONFIG_DEBUG_INFO_BTF=y");
    }
    Ok(())
}

fn kernel_release() -> anyhow::Result<String> {
    // SAFETY: utsname is plain data; uname fills it.
    let mut uts: libc::utsname = unsafe { mem::zeroed() };
    crate::sys::cvt(unsafe { libc::uname(&mut uts) })?;
    // SAFETY: uname NUL-terminates release.
    Ok(unsafe { CStr::from_ptr(uts.release.as_ptr()) }.to_string_lossy().into_owned())
}

/// `6.18.44-fc-v782` → (6, 18).
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// True when the kernel carries the eTran hooks (our patch series adds `BPF_XDP_EGRESS` to
/// `enum bpf_attach_type`; resolved by name from BTF so numbering never matters).
pub fn has_native_hooks() -> bool {
    let Ok(btf) = Btf::from_vmlinux() else {
        return false;
    };
    let found = btf
        .type_by_name::<libbpf_rs::btf::types::Enum<'_>>("bpf_attach_type")
        .is_some_and(|attach| attach.iter().any(|m| m.name.is_some_and(|n| n == "BPF_XDP_EGRESS")));
    found
}

/// How an XDP program sits on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    Native,
    Generic,
    Offload,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
            AttachMode::Offload => "offload",
        }
    }

    fn flag(self) -> u32 {
        match self {
            AttachMode::Native => libbpf_sys::XDP_FLAGS_DRV_MODE,
            AttachMode::Generic => libbpf_sys::XDP_FLAGS_SKB_MODE,
            AttachMode::Offload => libbpf_sys::XDP_FLAGS_HW_MODE,
        }
    }
}

/// The XDP program attached to `ifindex`, if any: (program id, mode).
pub fn attached(ifindex: u32) -> anyhow::Result<Option<(u32, AttachMode)>> {
    // SAFETY: opts is a properly sized, zeroed libbpf opts struct.
    let mut opts: libbpf_sys::bpf_xdp_query_opts = unsafe { mem::zeroed() };
    opts.sz = mem::size_of::<libbpf_sys::bpf_xdp_query_opts>() as _;
    let ret = unsafe { libbpf_sys::bpf_xdp_query(ifindex as i32, 0, &mut opts) };
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret)).context("querying XDP programs");
    }
    let found = [
        (opts.drv_prog_id, AttachMode::Native),
        (opts.skb_prog_id, AttachMode::Generic),
        (opts.hw_prog_id, AttachMode::Offload),
    ]
    .into_iter()
    .find(|(id, _)| *id != 0);
    Ok(found)
}

/// Attaches `prog_fd` in `mode`, refusing to replace anything already there.
pub fn attach(ifindex: u32, prog_fd: i32, mode: AttachMode) -> io::Result<()> {
    let flags = mode.flag() | libbpf_sys::XDP_FLAGS_UPDATE_IF_NOEXIST;
    // SAFETY: a NULL opts pointer is accepted by libbpf.
    let ret =
        unsafe { libbpf_sys::bpf_xdp_attach(ifindex as i32, prog_fd, flags, std::ptr::null()) };
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret));
    }
    Ok(())
}

pub fn detach(ifindex: u32, mode: AttachMode) -> anyhow::Result<()> {
    // SAFETY: a NULL opts pointer is accepted by libbpf.
    let ret = unsafe { libbpf_sys::bpf_xdp_detach(ifindex as i32, mode.flag(), std::ptr::null()) };
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret)).context("detaching the XDP program");
    }
    Ok(())
}

/// Name and map ids of a loaded program.
pub struct ProgInfo {
    pub name: String,
    pub map_ids: Vec<u32>,
}

/// The ids of every loaded program, at the time of the call.
pub fn prog_ids() -> Vec<u32> {
    let (mut id, mut ids) = (0u32, Vec::new());
    // SAFETY: plain syscall wrapper writing the next id into a valid u32.
    while unsafe { libbpf_sys::bpf_prog_get_next_id(id, &mut id) } == 0 {
        ids.push(id);
    }
    ids
}

pub fn prog_info(id: u32) -> anyhow::Result<ProgInfo> {
    let fd = libbpf_rs::Program::fd_from_id(id).with_context(|| format!("opening program {id}"))?;
    let mut map_ids = vec![0u32; 64];
    // SAFETY: info is zeroed plain data; map_ids points to a buffer of nr_map_ids entries.
    let mut info: libbpf_sys::bpf_prog_info = unsafe { mem::zeroed() };
    info.nr_map_ids = map_ids.len() as u32;
    info.map_ids = map_ids.as_mut_ptr() as u64;
    let mut len = mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    let ret = unsafe {
        libbpf_sys::bpf_prog_get_info_by_fd(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &mut info,
            &mut len,
        )
    };
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret)).context("reading program info");
    }
    map_ids.truncate(info.nr_map_ids.min(64) as usize);
    // SAFETY: the kernel NUL-terminates name within BPF_OBJ_NAME_LEN.
    let name = unsafe { CStr::from_ptr(info.name.as_ptr()) }.to_string_lossy().into_owned();
    Ok(ProgInfo { name, map_ids })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse() {
        assert_eq!(parse_release("6.18.44-fc-v782"), Some((6, 18)));
        assert_eq!(parse_release("5.10.0"), Some((5, 10)));
        assert_eq!(parse_release("garbage"), None);
    }

    #[test]
    fn this_kernel_is_supported() {
        check_supported().unwrap();
    }
}
