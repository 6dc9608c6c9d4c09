//! The `linux/if_xdp.h` ABI: the structs and constants come from libc; this file adds what libc
//! lacks and thin, typed wrappers over the AF_XDP socket options.
use std::{io, mem, os::fd::RawFd};

pub use libc::{
    sockaddr_xdp, xdp_desc, xdp_mmap_offsets, xdp_options, xdp_ring_offset, xdp_statistics,
    xdp_umem_reg, AF_XDP, SOL_XDP, XDP_COPY, XDP_MMAP_OFFSETS, XDP_OPTIONS, XDP_OPTIONS_ZEROCOPY,
    XDP_RING_NEED_WAKEUP, XDP_RX_RING, XDP_SHARED_UMEM, XDP_STATISTICS, XDP_TX_RING,
    XDP_UMEM_COMPLETION_RING, XDP_UMEM_FILL_RING, XDP_UMEM_REG, XDP_USE_NEED_WAKEUP, XDP_ZEROCOPY,
};

/// mmap offsets of the four rings (`XDP_PGOFF_*` / `XDP_UMEM_PGOFF_*`).
pub const PGOFF_RX_RING: u64 = 0;
pub const PGOFF_TX_RING: u64 = 0x8000_0000;
pub const PGOFF_FILL_RING: u64 = 0x1_0000_0000;
pub const PGOFF_COMPLETION_RING: u64 = 0x1_8000_0000;

/// Linux 6.17+: how many TX descriptors one `sendto` turns into skbs in copy mode (default 32).
pub const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// etran's kernel series (patches/0003): a copy-mode socket bound with this flag also takes
/// frames an XDP program redirects to it from the device's other queues. Not in any UAPI header
/// of a stock kernel; `loader::kernel::NATIVE_ABI` finds the series before it is used.
pub const XDP_RX_ANY_QUEUE: u16 = 1 << 5;

/// Headroom the kernel reserves in front of every received frame (`XDP_PACKET_HEADROOM`).
pub const XDP_PACKET_HEADROOM: u32 = 256;

/// `setsockopt(fd, SOL_XDP, opt, &val)`.
pub fn set_opt<T>(fd: RawFd, opt: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: val points to a live T of the length we pass.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            SOL_XDP,
            opt,
            (val as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    crate::sys::cvt(ret).map(drop)
}

/// `getsockopt(fd, SOL_XDP, opt)` into a zeroed T; returns the value and the length the kernel
/// wrote (older kernels write shorter versions of some structs).
pub fn get_opt<T: Copy>(fd: RawFd, opt: libc::c_int) -> io::Result<(T, usize)> {
    crate::sys::sockopt(fd, SOL_XDP, opt)
}
