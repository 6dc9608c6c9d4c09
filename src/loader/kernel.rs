//! What the running kernel offers, probed feature by feature rather than guessed from its
//! version (distributions backport, and the release number says nothing about BTF or our
//! patches), and the XDP attach operations on an interface, over libbpf's netlink helpers.
use std::{
    ffi::CStr,
    io, mem,
    os::fd::{FromRawFd, OwnedFd},
};

use anyhow::{bail, Context};
use clap::ValueEnum;
use libbpf_rs::{libbpf_sys, Btf, MapType, ProgramType};
use serde::Serialize;

use crate::xsk::sys;

/// A kernel feature etran uses. [`Feature::since`] is the first mainline release that has it,
/// for messages only: whether the running kernel has it is always probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    /// bpf_spin_lock in XDP programs: every TCP connection's state is updated under its lock.
    XdpSpinLock,
    /// BPF_MAP_TYPE_RINGBUF: slow-path segments and ACK-generator wakeups to the daemon.
    RingBuf,
    /// BPF_MAP_TYPE_QUEUE: the connections owing an ACK.
    QueueMap,
    /// BPF_MAP_TYPE_DEVMAP: redirects between the NIC and apps' ports, and in the testbed switch.
    DevMap,
    /// bpf_xdp_load_bytes: ingress copies slow-path segments for the daemon.
    XdpLoadBytes,
    /// BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES: the native backend's daemon replays early
    /// data through ingress with it, and `bench raw --mode rxdrop` generates frames.
    LiveFrames,
    /// AF_XDP sockets and BPF_MAP_TYPE_XSKMAP: how apps send and receive.
    AfXdp,
    /// The kernel's own BTF (/sys/kernel/btf/vmlinux): how etran recognises a kernel with the
    /// eTran hooks; without it only the compat backend is considered.
    VmlinuxBtf,
    /// The AF_XDP hooks of etran's kernel series (native backend): egress, gen, any-queue
    /// receive.
    NativeHooks,
    /// Gen on demand (patches/0005): the native backend's daemon runs an app socket's gen
    /// program through it instead of sending the gen pump's templates.
    GenWakeup,
    /// The packet queue (patches/0008): an egress program queues a frame to leave at a given
    /// time. Not required: where it is, TCP paces through it (`etran up --pacing`).
    PacketQueue,
    /// The rbtree walk (Linux 6.16's `bpf_rbtree_root`/`left`/`right`, backported by
    /// patches/0011-0012): a program finds a key's lower bound in its own rbtree. Probed only:
    /// Homa's grant scheduler keeps its bounded array.
    RbtreeSearch,
}

/// What the TCP datapath needs (`etran up`: its programs and maps).
pub const TCP_DATAPATH: &[Feature] = &[
    Feature::XdpSpinLock,
    Feature::RingBuf,
    Feature::QueueMap,
    Feature::DevMap,
    Feature::XdpLoadBytes,
];

/// What the daemon and its apps need on the compat backend (`etran daemon`): app ports with
/// AF_XDP sockets, and the gen pump.
pub const TCP_DAEMON: &[Feature] = &[Feature::AfXdp];

/// Every feature, in the order `etran check` lists them.
pub const ALL: &[Feature] = &[
    Feature::XdpSpinLock,
    Feature::RingBuf,
    Feature::QueueMap,
    Feature::DevMap,
    Feature::XdpLoadBytes,
    Feature::LiveFrames,
    Feature::AfXdp,
    Feature::VmlinuxBtf,
    Feature::NativeHooks,
    Feature::GenWakeup,
    Feature::PacketQueue,
    Feature::RbtreeSearch,
];

impl Feature {
    pub fn name(self) -> &'static str {
        match self {
            Feature::XdpSpinLock => "bpf_spin_lock in XDP programs",
            Feature::RingBuf => "BPF ring buffer maps",
            Feature::QueueMap => "BPF queue maps",
            Feature::DevMap => "XDP device maps",
            Feature::XdpLoadBytes => "bpf_xdp_load_bytes",
            Feature::LiveFrames => "BPF_PROG_RUN with live XDP frames",
            Feature::AfXdp => "AF_XDP sockets",
            Feature::VmlinuxBtf => "kernel BTF (/sys/kernel/btf/vmlinux)",
            Feature::NativeHooks => "etran's AF_XDP hooks (BPF_XSK_EGRESS/BPF_XSK_GEN)",
            Feature::GenWakeup => "etran's gen on demand (the Rx wakeup runs BPF_XSK_GEN)",
            Feature::PacketQueue => "etran's packet queue (bpf_xsk_egress_queue; TCP pacing)",
            Feature::RbtreeSearch => "BPF rbtree walk (bpf_rbtree_root/left/right; not used yet)",
        }
    }

    /// The first Linux release that has the feature ("patched" for our own hooks; the kernel's
    /// BTF is a build option, CONFIG_DEBUG_INFO_BTF).
    pub fn since(self) -> &'static str {
        match self {
            Feature::XdpSpinLock => "5.1",
            Feature::RingBuf => "5.8",
            Feature::QueueMap => "4.20",
            Feature::DevMap => "4.14",
            Feature::XdpLoadBytes | Feature::LiveFrames => "5.18",
            Feature::AfXdp => "4.18",
            Feature::VmlinuxBtf => "5.4",
            Feature::NativeHooks | Feature::GenWakeup | Feature::PacketQueue => "patched",
            // And our series' 6.12 (patches/0012, a backport).
            Feature::RbtreeSearch => "6.16",
        }
    }

    /// Whether the running kernel has it (needs CAP_BPF for the BPF probes).
    pub fn probe(self) -> bool {
        let helper = |id| ProgramType::Xdp.is_helper_supported(id).unwrap_or(false);
        let map = |t: MapType| t.is_supported().unwrap_or(false);
        match self {
            Feature::XdpSpinLock => helper(libbpf_sys::BPF_FUNC_spin_lock),
            Feature::RingBuf => map(MapType::RingBuf),
            Feature::QueueMap => map(MapType::Queue),
            Feature::DevMap => map(MapType::Devmap),
            Feature::XdpLoadBytes => helper(libbpf_sys::BPF_FUNC_xdp_load_bytes),
            Feature::LiveFrames => has_live_frames(),
            Feature::AfXdp => map(MapType::Xskmap) && xsk_socket().is_ok(),
            Feature::VmlinuxBtf => std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
            Feature::NativeHooks => has_native_hooks(),
            Feature::GenWakeup => has_gen_wakeup(),
            Feature::PacketQueue => has_kfunc(PACKET_QUEUE_KFUNC),
            Feature::RbtreeSearch => has_kfunc(RBTREE_SEARCH_KFUNC),
        }
    }
}

/// Fails with a message naming the first of `features` the running kernel lacks, the first
/// release that has it and `what` needs it.
pub fn require(features: &[Feature], what: &str) -> anyhow::Result<()> {
    for &f in features {
        if !f.probe() {
            let release = kernel_release().unwrap_or_else(|_| "?".into());
            let since = match f.since() {
                "patched" => "only a kernel with the eTran patches has it".to_string(),
                v => format!("Linux {v} and newer have it"),
            };
            bail!("this kernel ({release}) lacks {} ({since}), which {what} needs", f.name());
        }
    }
    Ok(())
}

/// Runs a two-instruction XDP program (`return XDP_DROP`) once in live-frames mode: kernels
/// without the mode refuse the flag (EINVAL), and some that have it refuse the run (this
/// machine's 6.18.44: EPERM, as root). Only those refusals count as missing: a probe that
/// could not even load its program learned nothing.
fn has_live_frames() -> bool {
    let refused = |e: &io::Error| matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EPERM));
    !probe_live_frames().is_err_and(|e| refused(&e))
}

fn probe_live_frames() -> io::Result<()> {
    // r0 = XDP_DROP; exit
    let insns = [
        libbpf_sys::bpf_insn { code: 0xb7, imm: libbpf_sys::XDP_DROP as i32, ..Default::default() },
        libbpf_sys::bpf_insn { code: 0x95, ..Default::default() },
    ];
    // SAFETY: valid instruction array and NUL-terminated strings; NULL opts are accepted.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            libbpf_sys::BPF_PROG_TYPE_XDP,
            c"etran_probe".as_ptr(),
            c"GPL".as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            std::ptr::null_mut(),
        )
    };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: bpf_prog_load returned a new descriptor we own.
    let prog = unsafe { OwnedFd::from_raw_fd(fd) };
    crate::xsk::run_live_frames(std::os::fd::AsFd::as_fd(&prog), &[0u8; 64], 0, 1)
}

fn xsk_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(sys::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    crate::sys::cvt(fd)?;
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The running kernel's release, e.g. `6.1.0-57-amd64`.
pub fn kernel_release() -> anyhow::Result<String> {
    // SAFETY: utsname is plain data; uname fills it.
    let mut uts: libc::utsname = unsafe { mem::zeroed() };
    crate::sys::cvt(unsafe { libc::uname(&mut uts) }).context("uname")?;
    // SAFETY: uname NUL-terminates release.
    Ok(unsafe { CStr::from_ptr(uts.release.as_ptr()) }.to_string_lossy().into_owned())
}

/// What the native backend needs of the kernel, by the names our patch series (`patches/`) gives
/// it: enumerators it appends to the BPF UAPI's enums (their values come from BTF, never from a
/// header, so that the numbering never matters) and the member patch 0003 adds to `struct
/// xdp_sock` (its bind flag, `XDP_RX_ANY_QUEUE`, is a macro: BTF has no trace of it).
pub const NATIVE_ABI: &[(&str, &str)] = &[
    ("bpf_attach_type", "BPF_XSK_EGRESS"),
    ("bpf_attach_type", "BPF_XSK_GEN"),
    ("bpf_link_type", "BPF_LINK_TYPE_XSK"),
    ("xdp_sock", "rx_any_queue"),
];

/// The names of [`NATIVE_ABI`] that `has` (type, member or enumerator) says are missing.
pub fn missing_native_abi(has: impl Fn(&str, &str) -> bool) -> Vec<&'static str> {
    NATIVE_ABI.iter().filter(|(ty, name)| !has(ty, name)).map(|&(_, name)| name).collect()
}

/// Whether `btf` has enumerator or member `name` in type `ty`.
fn btf_has(btf: &Btf<'_>, ty: &str, name: &str) -> bool {
    use libbpf_rs::btf::types::{Enum, Struct};
    let named = |n: Option<&std::ffi::OsStr>| n.is_some_and(|n| n == name);
    btf.type_by_name::<Enum<'_>>(ty).is_some_and(|e| e.iter().any(|m| named(m.name)))
        || btf.type_by_name::<Struct<'_>>(ty).is_some_and(|s| s.iter().any(|m| named(m.name)))
}

/// What the running kernel lacks of [`NATIVE_ABI`] (all of it without the kernel's BTF).
pub fn missing_native_hooks() -> Vec<&'static str> {
    let Ok(btf) = Btf::from_vmlinux() else {
        return NATIVE_ABI.iter().map(|&(_, name)| name).collect();
    };
    missing_native_abi(|ty, name| btf_has(&btf, ty, name))
}

/// Gen on demand (patches/0005), by the member it adds to `struct xdp_sock`: on a kernel with
/// it a `recvfrom` on an AF_XDP socket (its Rx wakeup) runs the socket's `BPF_XSK_GEN` program
/// once. Not part of [`NATIVE_ABI`]: without it the native backend's gen pumps send templates.
pub const GEN_WAKEUP_ABI: (&str, &str) = ("xdp_sock", "gen_wakeup");

/// True when the running kernel runs a socket's gen program on demand ([`GEN_WAKEUP_ABI`]).
pub fn has_gen_wakeup() -> bool {
    let (ty, name) = GEN_WAKEUP_ABI;
    Btf::from_vmlinux().is_ok_and(|btf| btf_has(&btf, ty, name))
}

/// The packet queue's kfunc (patches/0008): a `BPF_XSK_EGRESS` program that returns
/// `bpf_xsk_egress_queue(ctx, tstamp)` has its frame sent at `tstamp` (CLOCK_MONOTONIC ns) by
/// the kernel, which holds the descriptor meanwhile. Not part of [`NATIVE_ABI`]: where it is, TCP
/// egress paces through it (`etran up --pacing`, tcp_pace.h).
pub const PACKET_QUEUE_KFUNC: &str = "bpf_xsk_egress_queue";

/// The rbtree walk's first kfunc (patches/0012, Linux 6.16's): under the lock of a `struct
/// bpf_rb_root`, `bpf_rbtree_root(root)` returns its root node, and `bpf_rbtree_left` and
/// `bpf_rbtree_right` (which come with it) a node's children, so that a program walks the tree
/// to a key's lower bound in a bounded loop. Not part of [`NATIVE_ABI`]: nothing in etran calls
/// it yet (Homa's grant scheduler keeps its bounded array, which every kernel verifies).
pub const RBTREE_SEARCH_KFUNC: &str = "bpf_rbtree_root";

/// True when the running kernel's BTF has the function `name` (a kfunc).
pub fn has_kfunc(name: &str) -> bool {
    use libbpf_rs::btf::types::Func;
    Btf::from_vmlinux().is_ok_and(|btf| btf.type_by_name::<Func<'_>>(name).is_some())
}

/// True when the kernel carries the hooks of our patch series ([`NATIVE_ABI`], all of it).
pub fn has_native_hooks() -> bool {
    missing_native_hooks().is_empty()
}

/// The value the running kernel gives `enum bpf_attach_type`'s member `name` (one of the
/// series' appended ones, [`NATIVE_ABI`]), read from its BTF: never compiled in, so that the
/// numbering never matters.
pub fn attach_type(name: &str) -> anyhow::Result<u32> {
    use libbpf_rs::btf::types::Enum;
    let btf = Btf::from_vmlinux().context("reading the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
    btf.type_by_name::<Enum<'_>>("bpf_attach_type")
        .and_then(|e| e.iter().find(|m| m.name.is_some_and(|n| n == name)).map(|m| m.value as u32))
        .with_context(|| format!("this kernel has no {name} (etran's kernel series, patches/)"))
}

/// Links program `prog` to the AF_XDP socket `xsk` as `attach_type` (`BPF_XSK_EGRESS` or
/// `BPF_XSK_GEN`, [`attach_type`]); the link lasts as long as the returned descriptor (or the
/// socket). Needs CAP_NET_ADMIN, which apps do not have: only the daemon links.
pub fn link_xsk(
    prog: std::os::fd::BorrowedFd<'_>,
    xsk: std::os::fd::BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall wrapper; a NULL opts pointer is accepted by libbpf.
    let fd = unsafe {
        libbpf_sys::bpf_link_create(
            prog.as_raw_fd(),
            xsk.as_raw_fd(),
            attach_type,
            std::ptr::null(),
        )
    };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: bpf_link_create returned a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// x86-64's `SMP_CACHE_BYTES` (`L1_CACHE_SHIFT` 6): what `SKB_DATA_ALIGN` rounds up to.
const SMP_CACHE_BYTES: usize = 64;

/// The largest MTU a veth carries to an XDP program without multi-buffer (frags) support, as
/// `veth_xdp_set` computes it: the frame must fit one page after the XDP headroom and the
/// `skb_shared_info` at its end, `SKB_WITH_OVERHEAD(PAGE_SIZE - XDP_PACKET_HEADROOM)`, less the
/// Ethernet header. Above it the kernel refuses to attach such a program on the peer ("Peer MTU
/// is too large to set XDP"). 3506 on x86-64 with 4 KiB pages; `ETRAN_TCP_MAX_FRAME` (tcp.h)
/// is the same figure plus the Ethernet header, fixed at build time. Reads the size of `struct
/// skb_shared_info` from the kernel's BTF.
pub fn veth_xdp_max_mtu() -> anyhow::Result<u32> {
    use libbpf_rs::btf::{types::Struct, HasSize};
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .context("reading the page size")?;
    let btf = Btf::from_vmlinux().context("reading the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
    let shinfo = btf
        .type_by_name::<Struct<'_>>("skb_shared_info")
        .context("the kernel's BTF has no struct skb_shared_info")?
        .size();
    let aligned = shinfo.div_ceil(SMP_CACHE_BYTES) * SMP_CACHE_BYTES;
    let eth = 14;
    let mtu = page
        .checked_sub(sys::XDP_PACKET_HEADROOM as usize + aligned + eth)
        .context("a page too small for an XDP frame")?;
    Ok(u32::try_from(mtu)?)
}

/// How an XDP program sits on an interface, in the words of iproute2 and the kernel's
/// `XDP_FLAGS_*_MODE` (`drv`, `skb`, `hw`), so that "native" names only the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AttachMode {
    /// Driver mode (falls back to skb with a warning when the driver lacks XDP).
    Drv,
    /// Generic (skb) mode, in the kernel's stack.
    Skb,
    /// Offloaded to the NIC: never asked for, only found.
    #[value(skip)]
    Hw,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Drv => "drv",
            AttachMode::Skb => "skb",
            AttachMode::Hw => "hw",
        }
    }

    fn flag(self) -> u32 {
        match self {
            AttachMode::Drv => libbpf_sys::XDP_FLAGS_DRV_MODE,
            AttachMode::Skb => libbpf_sys::XDP_FLAGS_SKB_MODE,
            AttachMode::Hw => libbpf_sys::XDP_FLAGS_HW_MODE,
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
        (opts.drv_prog_id, AttachMode::Drv),
        (opts.skb_prog_id, AttachMode::Skb),
        (opts.hw_prog_id, AttachMode::Hw),
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
    use super::{missing_native_abi, GEN_WAKEUP_ABI, NATIVE_ABI};
    use crate::bpf::tcp::types::etran_tcp_limit;

    /// The series' names are looked up in their own types, and every missing one is named.
    #[test]
    fn the_native_abi_is_looked_up_by_name_in_its_type() {
        assert!(missing_native_abi(|_, _| true).is_empty());
        let all: Vec<&str> = NATIVE_ABI.iter().map(|&(_, n)| n).collect();
        assert_eq!(missing_native_abi(|_, _| false), all);
        // Patch 0001 and 0002 alone: no any-queue receive.
        let without_0003 = missing_native_abi(|ty, _| ty != "xdp_sock");
        assert_eq!(without_0003, ["rx_any_queue"]);
        // The paper's names are not ours: a kernel with only those has nothing.
        let papers = |_: &str, name: &str| name == "BPF_XDP_EGRESS" || name == "BPF_XDP_GEN";
        assert_eq!(missing_native_abi(papers), all);
        // Gen on demand (patch 0005) is not needed: patches 0001-0004 run native, the gen
        // pumps sending templates.
        assert!(!NATIVE_ABI.contains(&GEN_WAKEUP_ABI));
        assert!(missing_native_abi(|ty, name| (ty, name) != GEN_WAKEUP_ABI).is_empty());
    }

    /// The datapath's longest frame, fixed at build time, is what this kernel's veth carries.
    #[test]
    fn the_veth_limit_is_the_datapaths_longest_frame() {
        let max = super::veth_xdp_max_mtu().unwrap();
        assert_eq!(max + 14, etran_tcp_limit::ETRAN_TCP_MAX_FRAME.0, "ETRAN_TCP_MAX_FRAME (tcp.h)");
    }
}
