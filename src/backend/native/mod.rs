//! The native backend, for a kernel with etran's series (patches/): apps' AF_XDP sockets sit
//! on the NIC itself, and the transport's programs are linked to them.
//!
//! An app's port ([`XskPort`]) is one AF_XDP socket on a free queue of the NIC, made by the
//! daemon (memfd UMEM and rings as in compat, [`socket`]) and bound by it in copy mode with
//! `XDP_RX_ANY_QUEUE` (patches/0003: ingress, on whatever queue a frame came in, redirects it
//! to the socket through `etran_app_xsks`), or in zero copy where every frame arrives
//! ([`ZeroCopy`], [`zero_copy_first`]), then linked (bpf links, CAP_NET_ADMIN: never the
//! app) to its transport's egress as `BPF_XSK_EGRESS` (patches/0001, 0004: it checks and
//! rewrites each frame the app sends, moving its start into [`TX_HEADROOM`], and `XDP_PASS`
//! sends it) and to its transport's generator as `BPF_XSK_GEN` (patches/0002: TCP's emits the
//! ACKs due at once, Homa's the GRANTs on its gen queue, after each RX batch that reached the
//! socket). The socket's queue is the app's identity in BPF: `etran_port_queue` maps the app's
//! slot to it, and egress compares it with the queue the frame is sent on (`rx_queue_index`),
//! which the app cannot change: the daemon bound the socket. The app gets the bound socket and
//! maps its rings (kernels since 6.4 allow that).
//!
//! What the gen hooks do not emit after an RX batch (ACKs or GRANTs owed after frames that
//! reached no socket or that a run left behind) the gen pumps emit when ingress wakes them as
//! in compat ([`GenPump`], [`GrantPump`]); on a kernel with gen on demand (patches/0005,
//! `kernel::has_gen_wakeup`) they do it by waking an app socket of the transport, whose gen hook
//! then runs in the daemon's context ([`GenWake`]), not with templates through their gen ports;
//! TCP's delayed ACKs too, at the pump's deadline (the daemon sets `etran_tcp_gen_flush` while it
//! wakes: the hook then pops the delayed queue as well).
//!
//! Pacing: TCP's egress paces each connection through the socket's packet queue (patches/0008,
//! [`Pacing::PacketQueue`]) when the datapath was loaded so (`etran up`: native, the kernel has
//! the queue, `--pacing auto`; off by default); else none ([`Pacing::None`]).
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use anyhow::Context;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::{
    ports::PortMode,
    pump::{GenPump, GenWake, GrantPump},
    replay::LiveFrames,
    socket, AppPort, Backend, Pacing,
};
use crate::{
    bpf::tcp::types::etran_app_port_limit,
    loader::kernel,
    log,
    proto::{FdKind, Reply, Transport},
    transport::{
        homa::control::HomaHandles,
        tcp::{control::Replay, TcpHandles},
    },
    xsk::{sys, Geometry},
};

/// Where an app's TX frames start in their chunk: room for egress to replace the TX header with
/// the packet's headers (at most 94 bytes longer) in front of it, plus the `struct xdp_frame`
/// (40 bytes) `bpf_xdp_adjust_head` keeps at the chunk's start.
pub const TX_HEADROOM: u32 = 256;

/// Whether the daemon binds apps' sockets in zero copy (`etran daemon --zero-copy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ZeroCopy {
    /// Zero copy for the app on queue 0 of a NIC with one RX queue (where every frame
    /// arrives) when the driver supports it; copy mode otherwise.
    #[default]
    Auto,
    /// Every app's socket in copy mode.
    Off,
}

/// Whether an app's socket on `queue` of a NIC of `rx_queues` RX queues is bound in zero copy
/// first (copy mode if the driver refuses it). A zero-copy socket takes only the frames of its
/// own queue (`XDP_RX_ANY_QUEUE` is copy-only) and owns that queue's buffers: so only where
/// every frame arrives, queue 0 of a NIC with one RX queue. The NIC's frames then land in the
/// app's UMEM; ingress's redirects to the other apps' (copy-mode) sockets are copied out of it.
/// Never with `pacing` through the packet queue: a zero-copy socket's egress cannot queue a frame
/// (patches/0008 is copy mode only), so its paced segments would be lost.
pub fn zero_copy_first(choice: ZeroCopy, pacing: Pacing, queue: u32, rx_queues: u32) -> bool {
    choice == ZeroCopy::Auto && pacing == Pacing::None && queue == 0 && rx_queues == 1
}

/// A transport's programs linked to its apps' sockets.
struct Hooks {
    egress: OwnedFd,
    gen: OwnedFd,
}

impl Hooks {
    /// Copies of a transport object's egress and gen-hook twin (`None` when the object was not
    /// loaded for native).
    fn of(
        egress: &OwnedFd,
        xsk_gen: Option<&OwnedFd>,
        missing: impl Fn() -> anyhow::Error,
    ) -> anyhow::Result<Hooks> {
        Ok(Hooks {
            egress: egress.try_clone().context("duplicating an egress descriptor")?,
            gen: xsk_gen.ok_or_else(missing)?.try_clone()?,
        })
    }
}

/// The datapath objects an app's socket is wired into, and the programs linked to it.
struct Wiring {
    /// XSKMAP: slot → the app's socket (etran_app_xsks).
    xsks: MapHandle,
    /// ARRAY: slot → its socket's NIC queue + 1 (etran_port_queue).
    port_queue: MapHandle,
    /// ARRAY_OF_MAPS: slot → its receive budget (etran_port_budget).
    port_budget: MapHandle,
    tcp: Hooks,
    homa: Hooks,
    /// The kernel's values of `BPF_XSK_EGRESS` and `BPF_XSK_GEN` (from its BTF).
    egress_type: u32,
    gen_type: u32,
}

impl Wiring {
    /// The programs linked to the sockets of `transport`'s apps.
    fn hooks(&self, transport: Transport) -> &Hooks {
        match transport {
            Transport::Tcp => &self.tcp,
            Transport::Homa => &self.homa,
        }
    }
}

pub struct Native {
    nic: String,
    nic_ifindex: u32,
    /// The NIC's queues apps may bind (its TX queues: a socket sends on its own queue).
    queues: u32,
    /// Which of them an app of this daemon holds.
    taken: Vec<bool>,
    /// The NIC's RX queues (see [`zero_copy_first`]).
    rx_queues: u32,
    zero_copy: ZeroCopy,
    wiring: Wiring,
    pump: GenPump,
    grants: GrantPump,
    mtu: u32,
    /// The kernel runs gen on demand: the pumps wake apps' sockets ([`GenWake`]).
    gen_wakeup: bool,
    /// What the datapath's egress does about pacing.
    pacing: Pacing,
}

impl Native {
    /// The backend over the TCP and Homa objects of a datapath loaded for native on `nic` (of
    /// MTU `nic_mtu`, with `pacing`); the TCP gen pump's port is named `gen_port`, Homa's
    /// `gen_port`h (see [`GenPump::new`], [`GrantPump::new`]); apps' sockets bound in zero copy
    /// as `zero_copy` says (never with pacing: see [`zero_copy_first`]).
    pub fn new(
        tcp: &TcpHandles,
        homa: &HomaHandles,
        nic: &str,
        gen_port: &str,
        nic_mtu: u32,
        pacing: Pacing,
        zero_copy: ZeroCopy,
    ) -> anyhow::Result<Native> {
        let missing =
            || anyhow::anyhow!("the datapath on {nic} was not loaded for the native backend");
        let wiring = Wiring {
            xsks: tcp.app_xsks.as_ref().ok_or_else(missing).map(MapHandle::try_from)??,
            port_queue: tcp.port_queue.as_ref().ok_or_else(missing).map(MapHandle::try_from)??,
            port_budget: MapHandle::try_from(&tcp.port_budget)?,
            tcp: Hooks::of(&tcp.egress, tcp.xsk_gen.as_ref(), missing)?,
            homa: Hooks::of(&homa.egress, homa.xsk_gen.as_ref(), missing)?,
            egress_type: kernel::attach_type("BPF_XSK_EGRESS")?,
            gen_type: kernel::attach_type("BPF_XSK_GEN")?,
        };
        let queues = crate::ethtool::tx_queues(nic)?.unwrap_or(1).min(Self::SLOTS - 1);
        let pump = GenPump::new(tcp, gen_port).context("starting the gen pump")?;
        let grants =
            GrantPump::new(homa, &format!("{gen_port}h")).context("starting the Homa gen pump")?;
        Ok(Native {
            nic: nic.to_string(),
            nic_ifindex: crate::sys::ifindex(nic)?,
            queues,
            taken: vec![false; queues as usize],
            rx_queues: crate::ethtool::rx_queues(nic)?.unwrap_or(1),
            zero_copy,
            wiring,
            pump,
            grants,
            mtu: socket::port_mtu(nic_mtu)?,
            gen_wakeup: kernel::has_gen_wakeup(),
            pacing,
        })
    }

    /// The pump whose gen is linked to the sockets of `transport`'s apps ([`GenWake`]).
    fn wake_mut(&mut self, transport: Transport) -> &mut GenWake {
        match transport {
            Transport::Tcp => self.pump.wake_mut(),
            Transport::Homa => self.grants.wake_mut(),
        }
    }
}

/// An app's port in the native backend: its socket on a queue of the NIC.
pub struct XskPort {
    slot: u32,
    queue: u32,
    name: String,
    nic: String,
    nic_ifindex: u32,
    xsk: OwnedFd,
    umem: OwnedFd,
    rx_budget: MapHandle,
    geometry: Geometry,
    /// The egress and gen links: dropping them detaches the programs.
    links: Vec<OwnedFd>,
    /// Its slot's entries in the datapath's maps are set (and must be cleared).
    in_maps: bool,
    /// Bound in zero copy (else copy mode with `XDP_RX_ANY_QUEUE`).
    zero_copy: bool,
    /// A TCP app's segments may wait in the socket's packet queue (`Registered { paced }`).
    paced: bool,
}

impl XskPort {
    /// Makes, binds, links (to `transport`'s programs) and registers the socket of the app in
    /// `slot` on `queue`, in zero copy where [`zero_copy_first`] says so and the driver supports
    /// it, in copy mode otherwise; on failure whatever was set up is undone.
    fn open(n: &Native, slot: u32, queue: u32, transport: Transport) -> anyhow::Result<XskPort> {
        if zero_copy_first(n.zero_copy, n.pacing, queue, n.rx_queues) {
            match XskPort::open_as(n, slot, queue, transport, true) {
                Err(e) if bind_refused(&e) == Some(libc::EOPNOTSUPP) => log::debug(format!(
                    "{} queue {queue}: no zero copy ({e:#}), binding in copy mode",
                    n.nic
                )),
                r => return r,
            }
        }
        XskPort::open_as(n, slot, queue, transport, false)
    }

    fn open_as(
        n: &Native,
        slot: u32,
        queue: u32,
        transport: Transport,
        zero_copy: bool,
    ) -> anyhow::Result<XskPort> {
        let geometry = socket::geometry(n.mtu, TX_HEADROOM)?;
        let (xsk, umem) = socket::make_socket(&geometry)
            .with_context(|| format!("creating the AF_XDP socket for {} queue {queue}", n.nic))?;
        let mut port = XskPort {
            slot,
            queue,
            name: format!("{} queue {queue}", n.nic),
            nic: n.nic.clone(),
            nic_ifindex: n.nic_ifindex,
            xsk,
            umem,
            rx_budget: socket::rx_budget_map().context("creating the app's receive budget")?,
            geometry,
            links: Vec::new(),
            in_maps: false,
            zero_copy,
            paced: transport == Transport::Tcp && n.pacing == Pacing::PacketQueue,
        };
        match port.wire(&n.wiring, transport) {
            Ok(()) => Ok(port),
            Err(e) => {
                port.unwire(&n.wiring);
                Err(e)
            }
        }
    }

    fn wire(&mut self, w: &Wiring, transport: Transport) -> anyhow::Result<()> {
        let mode =
            if self.zero_copy { sys::XDP_ZEROCOPY } else { sys::XDP_COPY | sys::XDP_RX_ANY_QUEUE };
        let addr = sys::sockaddr_xdp {
            sxdp_family: sys::AF_XDP as u16,
            sxdp_flags: sys::XDP_USE_NEED_WAKEUP | mode,
            sxdp_ifindex: self.nic_ifindex,
            sxdp_queue_id: self.queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: addr is a valid sockaddr_xdp of the length given.
        let ret = unsafe {
            libc::bind(
                self.xsk.as_raw_fd(),
                (&addr as *const sys::sockaddr_xdp).cast(),
                std::mem::size_of::<sys::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        crate::sys::cvt(ret).map_err(BindError).with_context(|| {
            let mode = if self.zero_copy { "zero copy" } else { "copy mode" };
            format!("binding an AF_XDP socket to {} in {mode}", self.name)
        })?;
        let hooks = w.hooks(transport);
        for (prog, ty, what) in
            [(&hooks.egress, w.egress_type, "egress"), (&hooks.gen, w.gen_type, "the generator")]
        {
            let link = kernel::link_xsk(prog.as_fd(), self.xsk.as_fd(), ty)
                .with_context(|| format!("linking {what} to the socket on {}", self.name))?;
            self.links.push(link);
        }
        let slot = self.slot.to_ne_bytes();
        self.in_maps = true;
        let inner = (self.rx_budget.as_fd().as_raw_fd() as u32).to_ne_bytes();
        w.port_budget
            .update(&slot, &inner, MapFlags::ANY)
            .with_context(|| format!("registering slot {}'s receive budget", self.slot))?;
        w.port_queue
            .update(&slot, &(self.queue + 1).to_ne_bytes(), MapFlags::ANY)
            .with_context(|| format!("registering {} as slot {}", self.name, self.slot))?;
        let fd = self.xsk.as_raw_fd() as u32;
        w.xsks
            .update(&slot, &fd.to_ne_bytes(), MapFlags::ANY)
            .with_context(|| format!("inserting {}'s socket into slot {}", self.name, self.slot))?;
        Ok(())
    }

    /// Undoes [`XskPort::wire`]: nothing routes to the slot, nothing stays linked. Best effort.
    fn unwire(&mut self, w: &Wiring) {
        if std::mem::take(&mut self.in_maps) {
            socket::clear_slot(&w.xsks, &w.port_budget, &w.port_queue, self.slot);
        }
        self.links.clear();
    }
}

/// The bind of an app's socket failed (with this error).
#[derive(Debug)]
struct BindError(std::io::Error);

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BindError {}

/// The errno of `e` when it is a refused bind ([`XskPort::wire`]), not a later step's failure.
fn bind_refused(e: &anyhow::Error) -> Option<i32> {
    e.root_cause().downcast_ref::<BindError>().and_then(|b| b.0.raw_os_error())
}

impl AppPort for XskPort {
    fn slot(&self) -> u32 {
        self.slot
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn mode(&self) -> PortMode {
        if self.zero_copy {
            PortMode::ZeroCopy
        } else {
            PortMode::Copy
        }
    }

    fn queue(&self) -> u32 {
        self.queue
    }

    fn registered(&self, iface: &str, version: u32) -> (Reply, Vec<BorrowedFd<'_>>) {
        let reply = Reply::Registered {
            version,
            slot: self.slot,
            port: self.nic.clone(),
            port_ifindex: self.nic_ifindex,
            kernel_port: self.nic.clone(),
            kernel_ifindex: self.nic_ifindex,
            geometry: self.geometry,
            iface: iface.to_string(),
            fds: vec![FdKind::Xsk { queue: self.queue }, FdKind::Umem, FdKind::RxBudget],
            bound: true,
            // The daemon says, from the datapath's pacing.
            homa_link_mbps: 0,
            paced: self.paced,
        };
        (reply, vec![self.xsk.as_fd(), self.umem.as_fd(), self.rx_budget.as_fd()])
    }
}

impl Backend for Native {
    type AppPort = XskPort;
    /// The datapath's slot maps' size (ETRAN_APP_PORTS, common/transport.h).
    const SLOTS: u32 = etran_app_port_limit::ETRAN_APP_PORTS.0;

    fn pacing(&self) -> Pacing {
        self.pacing
    }

    fn mtu(&self) -> u32 {
        self.mtu
    }

    fn open_port(&mut self, slot: u32, transport: Transport) -> anyhow::Result<XskPort> {
        let mut busy = 0;
        for q in 0..self.queues {
            if self.taken[q as usize] {
                continue;
            }
            match XskPort::open(self, slot, q, transport) {
                Ok(port) => {
                    self.taken[q as usize] = true;
                    let mode = if port.zero_copy { "zero copy" } else { "copy mode" };
                    log::info(format!("app port {} (slot {slot}): {mode}", port.name));
                    if self.gen_wakeup {
                        // Without a copy the pump sends templates, as on a kernel without it.
                        match port.xsk.try_clone() {
                            Ok(sock) => self.wake_mut(transport).add(slot, sock),
                            Err(e) => log::warn(format!("duplicating {}'s socket: {e}", port.name)),
                        }
                    }
                    return Ok(port);
                }
                // Another socket holds the queue (not one of ours): try the next.
                Err(e) if bind_refused(&e) == Some(libc::EBUSY) => busy += 1,
                Err(e) => return Err(e),
            }
        }
        anyhow::bail!(
            "no free queue on {} for another app ({} queue(s), {} held by others): give it more \
             TX queues (`etran testbed up --app-queues N`)",
            self.nic,
            self.queues,
            busy
        )
    }

    fn close_port(&mut self, port: &mut XskPort) {
        for t in [Transport::Tcp, Transport::Homa] {
            self.wake_mut(t).remove(port.slot);
        }
        socket::log_drops(&port.name, port.xsk.as_fd());
        port.unwire(&self.wiring);
        if let Some(t) = self.taken.get_mut(port.queue as usize) {
            *t = false;
        }
    }

    fn slot_in_use(&self, slot: u32) -> bool {
        let v = self.wiring.port_queue.lookup(&slot.to_ne_bytes(), MapFlags::ANY);
        matches!(v, Ok(Some(v)) if v.iter().any(|&b| b != 0))
    }

    fn replay(&self, tcp: &TcpHandles, _: &str) -> anyhow::Result<Box<dyn Replay>> {
        kernel::require(&[kernel::Feature::LiveFrames], "the native backend's slow path")?;
        Ok(Box::new(LiveFrames::new(&tcp.ingress, self.nic_ifindex)?))
    }

    /// Clears slots a daemon that died left set (its sockets and links died with it).
    fn remove_stale(&mut self) -> anyhow::Result<()> {
        for slot in 1..Self::SLOTS {
            if self.slot_in_use(slot) {
                log::warn(format!("clearing stale native slot {slot}"));
            }
            let w = &self.wiring;
            socket::clear_slot(&w.xsks, &w.port_budget, &w.port_queue, slot);
        }
        Ok(())
    }

    fn gen_pump(&self) -> &GenPump {
        &self.pump
    }

    fn gen_pump_mut(&mut self) -> &mut GenPump {
        &mut self.pump
    }

    fn grant_pump(&self) -> &GrantPump {
        &self.grants
    }

    fn grant_pump_mut(&mut self) -> &mut GrantPump {
        &mut self.grants
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zero copy only on queue 0 of a NIC with one RX queue (every frame arrives there), and
    /// never when it is off or TCP paces through the packet queue.
    #[test]
    fn zero_copy_only_where_every_frame_arrives() {
        let (auto, none) = (ZeroCopy::Auto, Pacing::None);
        assert!(zero_copy_first(auto, none, 0, 1));
        assert!(!zero_copy_first(auto, none, 1, 1), "another queue's frames would miss it");
        assert!(!zero_copy_first(auto, none, 0, 2), "RSS spreads flows over both queues");
        assert!(!zero_copy_first(ZeroCopy::Off, none, 0, 1));
        assert!(!zero_copy_first(auto, Pacing::PacketQueue, 0, 1), "a zero-copy run cannot queue");
    }

    /// A refused bind is told from a later step's failure, whatever context wraps it.
    #[test]
    fn a_refused_bind_is_found_under_its_context() {
        let e = anyhow::Error::new(BindError(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP)))
            .context("binding")
            .context("creating the app's port");
        assert_eq!(bind_refused(&e), Some(libc::EOPNOTSUPP));
        let other = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EBUSY));
        assert_eq!(bind_refused(&other), None);
    }
}
