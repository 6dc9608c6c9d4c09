//! Our own AF_XDP layer: UMEM and frame allocator ([`umem`]), lock-free rings over the kernel's
//! shared memory ([`ring`]), sockets ([`socket`]) and multi-queue virtual sockets with deficit
//! round robin ([`vsock`]). Raw syscalls over memmap2; no libxdp.
//!
//! Typical use (one queue):
//! 1. [`Umem::new`] the packet memory, [`FrameAlloc::new`] to track its frames;
//! 2. [`Socket::new`] on an interface queue (registers the UMEM; zero-copy or copy);
//! 3. put frames on the fill ring for RX, descriptors on the TX ring for TX, kick with
//!    [`Socket::wake_tx`] / [`Socket::wake_rx`], reap the completion ring.
//!
//! Frames reach the socket only through an XSKMAP: see `crate::bpf::xsk_redirect`.
pub mod prog;
pub mod ring;
pub mod socket;
pub mod sys;
pub mod umem;
pub mod vsock;

use serde::{Deserialize, Serialize};

pub use prog::{run_live_frames, XskProgram};
pub use ring::{ring_pair, ConsRing, Peek, ProdRing, Reservation};
pub use socket::{
    Bind, BindMode, BusyPoll, CompRing, Desc, FillRing, Mode, Rings, RxRing, Socket, SocketConfig,
    Statistics, TxRing,
};
pub use umem::{frame_size_for, FrameAlloc, Umem, UmemConfig};

pub use vsock::{Drr, Served, VirtualSocket};

/// UMEM and ring geometry of a socket made for someone else (the daemon makes the app's):
/// what its user needs to map and use its rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    pub umem_len: u64,
    pub frame_size: u32,
    pub headroom: u32,
    /// Where a TX frame starts in its chunk: room for an egress program that moves the frame's
    /// start (native backend: `bpf_xdp_adjust_head` in `BPF_XSK_EGRESS`, patches/0004). 0 for
    /// a socket whose egress runs elsewhere (compat: on the port's far side).
    #[serde(default)]
    pub tx_headroom: u32,
    pub fill_size: u32,
    pub comp_size: u32,
    pub rx_size: u32,
    pub tx_size: u32,
}

impl Geometry {
    /// Maps the UMEM memfd `umem` of a socket made with this geometry and takes the socket
    /// `xsk` over on `bind`'s queue of `ifname` (`ifindex`), need-wakeup, copy mode
    /// ([`Socket::adopt`]): what an app does with its port.
    pub fn take_over(
        &self,
        umem: std::os::fd::BorrowedFd<'_>,
        xsk: std::os::fd::OwnedFd,
        ifname: &str,
        ifindex: u32,
        bind: Bind,
    ) -> anyhow::Result<(Umem, Socket)> {
        use anyhow::Context;
        if self.frame_size == 0 || self.umem_len % u64::from(self.frame_size) != 0 {
            anyhow::bail!("inconsistent UMEM geometry: {self:?}");
        }
        let cfg = UmemConfig {
            frame_count: u32::try_from(self.umem_len / u64::from(self.frame_size))?,
            frame_size: self.frame_size,
            headroom: self.headroom,
            huge_pages: false,
        };
        let umem = Umem::from_memfd(umem, cfg)?;
        let sizes = [self.fill_size, self.comp_size, self.rx_size, self.tx_size];
        let sock = Socket::adopt(xsk, &umem, ifname, ifindex, bind, sizes, true)
            .with_context(|| format!("taking over the socket on {ifname}"))?;
        Ok((umem, sock))
    }
}

/// A TX/RX descriptor for `len` bytes at UMEM address `addr`.
pub fn desc(addr: u64, len: u32) -> Desc {
    Desc { addr, len, options: 0 }
}
