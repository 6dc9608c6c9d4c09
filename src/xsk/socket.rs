//! AF_XDP sockets: create, size and map the rings, bind (zero-copy with fallback to copy, or
//! sharing another socket's UMEM), kick the kernel, read statistics, close.
use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    sync::Arc,
};

use anyhow::{bail, Context};
use serde::Serialize;

use super::{
    ring::{check_ring_size, ConsRing, ProdRing, RingMem},
    sys::{self, xdp_desc},
    umem::Umem,
};

/// A frame descriptor on the RX and TX rings: UMEM address, length, options.
pub type Desc = xdp_desc;
pub type FillRing = ProdRing<u64>;
pub type CompRing = ConsRing<u64>;
pub type RxRing = ConsRing<Desc>;
pub type TxRing = ProdRing<Desc>;

/// How a socket made for someone else is bound when they take it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// Not yet: bind it to this queue (copy mode).
    Queue(u32),
    /// Its maker bound it already, to this queue (the native backend's daemon binds an app's
    /// socket to the NIC before linking egress to it).
    Bound(u32),
}

impl Bind {
    pub fn queue(self) -> u32 {
        match self {
            Bind::Queue(q) | Bind::Bound(q) => q,
        }
    }
}

/// The mode the bound socket `fd` runs in, as the kernel reports it (`XDP_OPTIONS`).
fn bound_mode(fd: RawFd) -> anyhow::Result<Mode> {
    let (opts, _) =
        sys::get_opt::<sys::xdp_options>(fd, sys::XDP_OPTIONS).context("reading XDP_OPTIONS")?;
    Ok(if opts.flags & sys::XDP_OPTIONS_ZEROCOPY != 0 { Mode::ZeroCopy } else { Mode::Copy })
}

/// Which bind mode to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BindMode {
    /// Zero-copy when the driver supports it, copy mode otherwise.
    #[default]
    Auto,
    ZeroCopy,
    Copy,
}

/// The mode a socket ended up bound in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    ZeroCopy,
    Copy,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::ZeroCopy => "zero-copy",
            Mode::Copy => "copy",
        })
    }
}

/// Ring sizes and bind options. A size of 0 for `rx_size` or `tx_size` leaves that ring out
/// (a socket needs at least one of them); fill and completion sizes apply only to sockets that
/// get their own (the UMEM's first socket, and sharers on another device or queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketConfig {
    pub rx_size: u32,
    pub tx_size: u32,
    pub fill_size: u32,
    pub comp_size: u32,
    pub bind: BindMode,
    /// `XDP_USE_NEED_WAKEUP`: the kernel sleeps until kicked; see [`Socket::wake_tx`].
    pub need_wakeup: bool,
    /// `XDP_MAX_TX_SKB_BUDGET` (Linux 6.17+): descriptors sent per `sendto` in copy mode.
    /// Ignored where the kernel lacks it.
    pub tx_budget: Option<u32>,
    /// Busy polling: see [`BusyPoll`].
    pub busy_poll: Option<BusyPoll>,
}

/// Busy polling (`SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL`, `SO_BUSY_POLL_BUDGET`): each
/// [`Socket::kick_rx`] (and each TX kick) runs one receive NAPI poll of the socket's device
/// queue, up to `budget` frames, in the calling thread. With the device's
/// `napi_defer_hard_irqs` and `gro_flush_timeout` set, the kernel then leaves that NAPI to the
/// polling thread instead of running it in softirq wherever the sender happens to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyPoll {
    pub usecs: u32,
    pub budget: u32,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            rx_size: 2048,
            tx_size: 2048,
            fill_size: 2048,
            comp_size: 2048,
            bind: BindMode::Auto,
            need_wakeup: true,
            tx_budget: None,
            busy_poll: None,
        }
    }
}

/// `XDP_STATISTICS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Statistics {
    /// Frames dropped for want of a frame to copy into (the fill ring empty: these count in
    /// `rx_fill_ring_empty_descs` too) or too long for one; not those of a full RX ring.
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times a frame found the fill ring empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the kernel found the TX ring empty when asked to send.
    pub tx_ring_empty_descs: u64,
}

impl Statistics {
    /// `XDP_STATISTICS` of the AF_XDP socket `fd` (any process's copy of it: the daemon's of
    /// an app's port).
    pub fn of(fd: BorrowedFd<'_>) -> io::Result<Statistics> {
        let (s, _) = sys::get_opt::<sys::xdp_statistics>(fd.as_raw_fd(), sys::XDP_STATISTICS)?;
        Ok(Statistics {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }

    /// Frames the socket dropped after its XDP program had redirected them to it.
    pub fn rx_drops(&self) -> u64 {
        self.rx_dropped + self.rx_ring_full
    }
}

/// The counters of several sockets together.
impl std::ops::AddAssign for Statistics {
    fn add_assign(&mut self, o: Statistics) {
        self.rx_dropped += o.rx_dropped;
        self.rx_invalid_descs += o.rx_invalid_descs;
        self.tx_invalid_descs += o.tx_invalid_descs;
        self.rx_ring_full += o.rx_ring_full;
        self.rx_fill_ring_empty_descs += o.rx_fill_ring_empty_descs;
        self.tx_ring_empty_descs += o.tx_ring_empty_descs;
    }
}

/// One AF_XDP socket bound to one device queue. Closing (drop) unbinds it and unmaps its rings;
/// the UMEM stays mapped while other sockets or handles use it.
pub struct Socket {
    // Fields drop in order: unmap the rings, then close the socket (a mapping would otherwise
    // keep the closed socket bound until it is unmapped).
    rx: Option<RxRing>,
    tx: Option<TxRing>,
    fill: Option<FillRing>,
    comp: Option<CompRing>,
    fd: OwnedFd,
    umem: Umem,
    ifname: String,
    ifindex: u32,
    queue: u32,
    mode: Mode,
    need_wakeup: bool,
    shared: bool,
    tx_budget: Option<u32>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("fd", &self.fd.as_raw_fd())
            .field("ifname", &self.ifname)
            .field("queue", &self.queue)
            .field("mode", &self.mode)
            .field("shared", &self.shared)
            .finish()
    }
}

/// Mutable access to all four rings at once (the fill and completion rings are `None` for a
/// socket sharing another socket's on the same queue).
pub struct Rings<'a> {
    pub fill: Option<&'a mut FillRing>,
    pub comp: Option<&'a mut CompRing>,
    pub rx: Option<&'a mut RxRing>,
    pub tx: Option<&'a mut TxRing>,
}

/// How long a bind keeps retrying EBUSY (see [`bind_retrying`]).
const BUSY_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// bind(2) of an AF_XDP socket. A socket that was just closed gives its queue back
/// asynchronously (the kernel frees its buffer pool from a workqueue), so EBUSY right after a
/// close is retried briefly.
fn bind_retrying(fd: RawFd, addr: &sys::sockaddr_xdp) -> io::Result<()> {
    let deadline = std::time::Instant::now() + BUSY_RETRY;
    loop {
        // SAFETY: addr is a valid sockaddr_xdp of the length passed.
        let ret = unsafe {
            libc::bind(
                fd,
                (addr as *const sys::sockaddr_xdp).cast(),
                std::mem::size_of::<sys::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        match crate::sys::cvt(ret) {
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            r => return r.map(drop),
        }
    }
}

fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN | libc::EINTR)
    )
}

impl Socket {
    /// Creates a socket on `ifname` queue `queue`, registers `umem` with it and binds. This
    /// socket owns the UMEM's fill and completion rings for this queue.
    pub fn new(umem: &Umem, ifname: &str, queue: u32, cfg: &SocketConfig) -> anyhow::Result<Self> {
        Self::build(umem, ifname, queue, cfg, None)
    }

    /// Creates a socket sharing `owner`'s UMEM (`XDP_SHARED_UMEM`). On the same device and
    /// queue it shares the owner's fill and completion rings too (the kernel's rule); on
    /// another device or queue it gets its own. The bind mode and need-wakeup setting are the
    /// owner's.
    pub fn new_shared(
        owner: &Socket,
        ifname: &str,
        queue: u32,
        cfg: &SocketConfig,
    ) -> anyhow::Result<Self> {
        Self::build(&owner.umem, ifname, queue, cfg, Some(owner))
    }

    fn build(
        umem: &Umem,
        ifname: &str,
        queue: u32,
        cfg: &SocketConfig,
        owner: Option<&Socket>,
    ) -> anyhow::Result<Self> {
        if cfg.rx_size == 0 && cfg.tx_size == 0 {
            bail!("an AF_XDP socket needs an RX ring, a TX ring or both");
        }
        for (name, size) in [("RX", cfg.rx_size), ("TX", cfg.tx_size)] {
            if size != 0 {
                check_ring_size(name, size)?;
            }
        }
        let ifindex = crate::sys::ifindex(ifname)?;
        let same_queue = owner.is_some_and(|o| o.ifindex == ifindex && o.queue == queue);
        let own_fq = !same_queue;
        if own_fq {
            check_ring_size("fill", cfg.fill_size)?;
            check_ring_size("completion", cfg.comp_size)?;
        }
        if let Ok(Some(n)) = crate::ethtool::rx_queues(ifname) {
            if queue >= n {
                bail!("{ifname} has no queue {queue} (it has {n})");
            }
        }

        // SAFETY: plain socket call.
        let raw = unsafe { libc::socket(sys::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EPERM) {
                bail!("creating an AF_XDP socket needs CAP_NET_RAW (run as root): {err}");
            }
            if err.raw_os_error() == Some(libc::EAFNOSUPPORT) {
                bail!("this kernel has no AF_XDP support (CONFIG_XDP_SOCKETS): {err}");
            }
            return Err(err).context("creating an AF_XDP socket");
        }
        // SAFETY: raw is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let rfd = fd.as_raw_fd();

        if owner.is_none() {
            let reg = sys::xdp_umem_reg {
                addr: umem.as_ptr() as u64,
                len: umem.len() as u64,
                chunk_size: umem.frame_size(),
                headroom: umem.headroom(),
                flags: 0,
                tx_metadata_len: 0,
            };
            sys::set_opt(rfd, sys::XDP_UMEM_REG, &reg).map_err(|e| match e.raw_os_error() {
                Some(libc::EPERM) => {
                    anyhow::anyhow!(
                        "registering the UMEM needs CAP_IPC_LOCK or a larger RLIMIT_MEMLOCK: {e}"
                    )
                }
                _ => anyhow::Error::new(e).context("registering the UMEM (XDP_UMEM_REG)"),
            })?;
        }
        if own_fq {
            sys::set_opt(rfd, sys::XDP_UMEM_FILL_RING, &cfg.fill_size)
                .context("sizing the fill ring")?;
            sys::set_opt(rfd, sys::XDP_UMEM_COMPLETION_RING, &cfg.comp_size)
                .context("sizing the completion ring")?;
        }
        if cfg.rx_size != 0 {
            sys::set_opt(rfd, sys::XDP_RX_RING, &cfg.rx_size).context("sizing the RX ring")?;
        }
        if cfg.tx_size != 0 {
            sys::set_opt(rfd, sys::XDP_TX_RING, &cfg.tx_size).context("sizing the TX ring")?;
        }

        let (off, _) = sys::get_opt::<sys::xdp_mmap_offsets>(rfd, sys::XDP_MMAP_OFFSETS)
            .context("reading XDP_MMAP_OFFSETS")?;
        let desc_size = std::mem::size_of::<Desc>();
        let rx = (cfg.rx_size != 0)
            .then(|| map_ring(rfd, &off.rx, sys::PGOFF_RX_RING, cfg.rx_size, desc_size))
            .transpose()
            .context("mapping the RX ring")?
            .map(ConsRing::new);
        let tx = (cfg.tx_size != 0)
            .then(|| map_ring(rfd, &off.tx, sys::PGOFF_TX_RING, cfg.tx_size, desc_size))
            .transpose()
            .context("mapping the TX ring")?
            .map(ProdRing::new);
        let (fill, comp) = if own_fq {
            (
                Some(ProdRing::new(
                    map_ring(rfd, &off.fr, sys::PGOFF_FILL_RING, cfg.fill_size, 8)
                        .context("mapping the fill ring")?,
                )),
                Some(ConsRing::new(
                    map_ring(rfd, &off.cr, sys::PGOFF_COMPLETION_RING, cfg.comp_size, 8)
                        .context("mapping the completion ring")?,
                )),
            )
        } else {
            (None, None)
        };

        let mut addr = sys::sockaddr_xdp {
            sxdp_family: sys::AF_XDP as u16,
            sxdp_flags: 0,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        let bind = |addr: &sys::sockaddr_xdp| bind_retrying(rfd, addr);
        let describe = |e: io::Error, flags: u16| -> anyhow::Error {
            let what = format!("binding an AF_XDP socket to {ifname} queue {queue}");
            match e.raw_os_error() {
                Some(libc::EBUSY) => anyhow::anyhow!(
                    "{what}: another AF_XDP socket already owns that queue (share its UMEM instead): {e}"
                ),
                Some(libc::EOPNOTSUPP) if flags & sys::XDP_ZEROCOPY != 0 => {
                    anyhow::anyhow!("{what}: the driver does not support zero-copy: {e}")
                }
                Some(libc::EINVAL) => anyhow::anyhow!(
                    "{what}: invalid (does the queue exist, and does the UMEM fit this socket?): {e}"
                ),
                _ => anyhow::Error::new(e).context(what),
            }
        };
        let need_wakeup;
        if let Some(owner) = owner {
            addr.sxdp_flags = sys::XDP_SHARED_UMEM;
            addr.sxdp_shared_umem_fd = owner.fd.as_raw_fd() as u32;
            bind(&addr).map_err(|e| describe(e, addr.sxdp_flags))?;
            need_wakeup = owner.need_wakeup;
        } else {
            let wake = if cfg.need_wakeup { sys::XDP_USE_NEED_WAKEUP } else { 0 };
            need_wakeup = cfg.need_wakeup;
            match cfg.bind {
                BindMode::Auto => {
                    addr.sxdp_flags = wake | sys::XDP_ZEROCOPY;
                    if let Err(e) = bind(&addr) {
                        if !matches!(
                            e.raw_os_error(),
                            Some(libc::EOPNOTSUPP | libc::EPROTONOSUPPORT)
                        ) {
                            return Err(describe(e, addr.sxdp_flags));
                        }
                        crate::log::debug(format_args!(
                            "{ifname} queue {queue}: no zero-copy ({e}), binding in copy mode"
                        ));
                        addr.sxdp_flags = wake | sys::XDP_COPY;
                        bind(&addr).map_err(|e| describe(e, addr.sxdp_flags))?;
                    }
                }
                BindMode::ZeroCopy => {
                    addr.sxdp_flags = wake | sys::XDP_ZEROCOPY;
                    bind(&addr).map_err(|e| describe(e, addr.sxdp_flags))?;
                }
                BindMode::Copy => {
                    addr.sxdp_flags = wake | sys::XDP_COPY;
                    bind(&addr).map_err(|e| describe(e, addr.sxdp_flags))?;
                }
            }
        }
        let mode = bound_mode(rfd)?;
        let mut tx_budget = None;
        if let (Some(b), Some(_)) = (cfg.tx_budget, tx.as_ref()) {
            if sys::set_opt(rfd, sys::XDP_MAX_TX_SKB_BUDGET, &b).is_ok() {
                tx_budget = Some(b);
            }
        }
        if let Some(bp) = cfg.busy_poll {
            for (opt, val, name) in [
                (libc::SO_PREFER_BUSY_POLL, 1, "SO_PREFER_BUSY_POLL"),
                (libc::SO_BUSY_POLL, bp.usecs, "SO_BUSY_POLL"),
                (libc::SO_BUSY_POLL_BUDGET, bp.budget, "SO_BUSY_POLL_BUDGET"),
            ] {
                let val = val as libc::c_int;
                // SAFETY: an int option on our socket.
                let ret = unsafe {
                    libc::setsockopt(
                        rfd,
                        libc::SOL_SOCKET,
                        opt,
                        (&val as *const libc::c_int).cast(),
                        4,
                    )
                };
                crate::sys::cvt(ret)
                    .with_context(|| format!("setting {name} (needs CAP_NET_ADMIN)"))?;
            }
        }
        Ok(Socket {
            fd,
            umem: umem.clone(),
            rx,
            tx,
            fill,
            comp,
            ifname: ifname.to_string(),
            ifindex,
            queue,
            mode,
            need_wakeup,
            shared: owner.is_some(),
            tx_budget,
        })
    }

    /// Takes over a socket another process created and registered `umem` on (the daemon's app
    /// port): maps its four rings (`fill_size`/`comp_size`/`rx_size`/`tx_size`, as the creator
    /// sized them), then, unless its creator bound it already ([`Bind::Bound`]), binds it
    /// to interface `ifindex` (named `ifname`) at `bind`'s queue in copy mode, with
    /// `XDP_USE_NEED_WAKEUP` when `need_wakeup`.
    /// The interface is the creator's: a socket binds in the network namespace it was created
    /// in, whatever the caller's. Mapping before binding is the order every kernel allows:
    /// before 6.4 the rings of a bound socket cannot be mapped. `umem` must map the registered
    /// memory ([`Umem::from_memfd`]).
    pub fn adopt(
        fd: OwnedFd,
        umem: &Umem,
        ifname: &str,
        ifindex: u32,
        bind: Bind,
        sizes: [u32; 4],
        need_wakeup: bool,
    ) -> anyhow::Result<Self> {
        let queue = bind.queue();
        let [fill_size, comp_size, rx_size, tx_size] = sizes;
        for (name, size) in
            [("fill", fill_size), ("completion", comp_size), ("RX", rx_size), ("TX", tx_size)]
        {
            check_ring_size(name, size)?;
        }
        let rfd = fd.as_raw_fd();
        let (off, _) = sys::get_opt::<sys::xdp_mmap_offsets>(rfd, sys::XDP_MMAP_OFFSETS)
            .context("reading XDP_MMAP_OFFSETS")?;
        let desc_size = std::mem::size_of::<Desc>();
        let rx = map_ring(rfd, &off.rx, sys::PGOFF_RX_RING, rx_size, desc_size)
            .context("mapping the RX ring")?;
        let tx = map_ring(rfd, &off.tx, sys::PGOFF_TX_RING, tx_size, desc_size)
            .context("mapping the TX ring")?;
        let fill = map_ring(rfd, &off.fr, sys::PGOFF_FILL_RING, fill_size, 8)
            .context("mapping the fill ring")?;
        let comp = map_ring(rfd, &off.cr, sys::PGOFF_COMPLETION_RING, comp_size, 8)
            .context("mapping the completion ring")?;
        let wake = if need_wakeup { sys::XDP_USE_NEED_WAKEUP } else { 0 };
        let addr = sys::sockaddr_xdp {
            sxdp_family: sys::AF_XDP as u16,
            sxdp_flags: wake | sys::XDP_COPY,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        if let Bind::Queue(_) = bind {
            bind_retrying(rfd, &addr)
                .with_context(|| format!("binding the AF_XDP socket to {ifname} queue {queue}"))?;
        }
        // The daemon may have bound it in zero copy (the native backend).
        let mode = bound_mode(rfd)?;
        Ok(Socket {
            rx: Some(ConsRing::new(rx)),
            tx: Some(ProdRing::new(tx)),
            fill: Some(ProdRing::new(fill)),
            comp: Some(ConsRing::new(comp)),
            fd,
            umem: umem.clone(),
            ifname: ifname.to_string(),
            ifindex,
            queue,
            mode,
            need_wakeup,
            shared: false,
            tx_budget: None,
        })
    }

    pub fn umem(&self) -> &Umem {
        &self.umem
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Zero-copy or copy, as the kernel reports it (`XDP_OPTIONS`).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn uses_need_wakeup(&self) -> bool {
        self.need_wakeup
    }

    /// Whether this socket was bound with `XDP_SHARED_UMEM`.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// The copy-mode TX budget the kernel accepted, if one was asked for.
    pub fn tx_budget(&self) -> Option<u32> {
        self.tx_budget
    }

    pub fn rx(&mut self) -> Option<&mut RxRing> {
        self.rx.as_mut()
    }

    pub fn tx(&mut self) -> Option<&mut TxRing> {
        self.tx.as_mut()
    }

    pub fn fill(&mut self) -> Option<&mut FillRing> {
        self.fill.as_mut()
    }

    pub fn comp(&mut self) -> Option<&mut CompRing> {
        self.comp.as_mut()
    }

    /// All rings at once, for loops that move frames between them.
    pub fn rings(&mut self) -> Rings<'_> {
        Rings {
            fill: self.fill.as_mut(),
            comp: self.comp.as_mut(),
            rx: self.rx.as_mut(),
            tx: self.tx.as_mut(),
        }
    }

    /// Tells the kernel to process the TX ring: `sendto` (non-blocking). Transient refusals
    /// (EAGAIN, EBUSY, ENOBUFS, ENETDOWN) are not errors: the frames stay queued.
    pub fn kick_tx(&self) -> io::Result<()> {
        self.try_kick_tx().map(|_| ())
    }

    /// [`Socket::kick_tx`], returning the errno of a transient refusal (EAGAIN: the kernel
    /// stopped at its per-call budget or found no completion slot; EBUSY, in copy mode: the
    /// device dropped the frame it was sending, `NET_XMIT_DROP`, which the kernel completes
    /// all the same, and the kick stopped there).
    pub fn try_kick_tx(&self) -> io::Result<Option<i32>> {
        // SAFETY: a zero-length send with null buffers is the documented AF_XDP kick.
        let ret = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        match crate::sys::cvt(ret) {
            Err(e) if !is_transient(&e) => Err(e),
            Err(e) => Ok(e.raw_os_error()),
            Ok(_) => Ok(None),
        }
    }

    /// Tells the kernel to process the fill ring / RX path: `recvfrom` (non-blocking). With
    /// [`BusyPoll`], also one receive NAPI poll in this thread.
    pub fn kick_rx(&self) -> io::Result<()> {
        // SAFETY: a zero-length receive with null buffers is the documented AF_XDP kick.
        let ret = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        match crate::sys::cvt(ret) {
            Err(e) if !is_transient(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Whether the TX ring's need-wakeup flag is set (always true without
    /// `XDP_USE_NEED_WAKEUP`: then every submit must be kicked).
    pub fn tx_needs_wakeup(&self) -> bool {
        !self.need_wakeup || self.tx.as_ref().is_some_and(|t| t.needs_wakeup())
    }

    /// Whether the fill ring's need-wakeup flag is set (this socket's own fill ring).
    pub fn fill_needs_wakeup(&self) -> bool {
        self.need_wakeup && self.fill.as_ref().is_some_and(|f| f.needs_wakeup())
    }

    /// Kicks TX if, and only if, the kernel asked for it. Returns whether it kicked.
    pub fn wake_tx(&self) -> io::Result<bool> {
        if self.tx.is_some() && self.tx_needs_wakeup() {
            self.kick_tx()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Kicks RX if the fill ring asks for it. Returns whether it kicked.
    pub fn wake_rx(&self) -> io::Result<bool> {
        if self.fill_needs_wakeup() {
            self.kick_rx()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// `poll(2)` on the socket: readable when RX has frames, writable when TX has room.
    pub fn poll(&self, events: i16, timeout_ms: i32) -> io::Result<i16> {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events, revents: 0 };
        // SAFETY: one valid pollfd.
        let ret = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        crate::sys::cvt(ret)?;
        Ok(pfd.revents)
    }

    /// `XDP_STATISTICS`.
    pub fn statistics(&self) -> io::Result<Statistics> {
        Statistics::of(self.fd.as_fd())
    }

    /// `XDP_OPTIONS` read afresh: whether the socket runs in zero-copy.
    pub fn options_zerocopy(&self) -> io::Result<bool> {
        let (o, _) = sys::get_opt::<sys::xdp_options>(self.fd.as_raw_fd(), sys::XDP_OPTIONS)?;
        Ok(o.flags & sys::XDP_OPTIONS_ZEROCOPY != 0)
    }
}

fn map_ring<T>(
    fd: RawFd,
    off: &sys::xdp_ring_offset,
    pgoff: u64,
    size: u32,
    entry: usize,
) -> io::Result<RingMem<T>> {
    let len = off.desc as usize + size as usize * entry;
    let map = memmap2::MmapOptions::new().offset(pgoff).len(len).populate().map_raw(fd)?;
    let base = map.as_mut_ptr();
    let keep: Arc<dyn Send + Sync> = Arc::new(map);
    // SAFETY: the kernel lays out the ring at these offsets within the mapping just made, which
    // `keep` holds; `size` was checked to be a power of two.
    Ok(unsafe {
        RingMem::new(
            base.add(off.producer as usize).cast(),
            base.add(off.consumer as usize).cast(),
            base.add(off.flags as usize).cast(),
            base.add(off.desc as usize).cast(),
            size,
            keep,
        )
    })
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

// A socket registers with mio like any fd: readable when RX has frames, writable when TX has
// room (edge-triggered, so drain the ring before waiting again).
crate::sys::source_via_fd!(Socket, s => s.fd.as_raw_fd());
