//! An app's *port* (compat backend): a veth pair in the daemon's network namespace.
//!
//! - `etp<slot>k`, the kernel side: its ifindex sits in the datapath's `app_ports` devmap at
//!   `slot` (the app's identity in BPF); the egress program of the app's transport runs here.
//! - `etp<slot>a`, the app side: `xsk_redirect` is attached (drv-mode XDP), the app's AF_XDP
//!   socket sits in that program's XSKMAP and is bound to its queue 0 by the app.
//!
//! Both ends are up with GRO on (see [`crate::ethtool::set_gro`]; the app side also has its XDP
//! program, which the veth rule asks for), and have the NIC's MTU ([`port_mtu`]) plus the RX
//! metadata ingress puts in front of a frame ([`RX_META_LEN`]): a frame redirected into a veth
//! longer than its peer's MTU is dropped, so what the NIC takes must pass the port with its
//! metadata, and what egress makes of an app's frame must pass the NIC.
//!
//! The UMEM: an AF_XDP socket cannot bind without one, and apps hold no CAP_NET_RAW, so the
//! daemon creates it: a memfd of [`FRAME_COUNT`] chunks ([`geometry`]: 2048 bytes, or 4096 when
//! the MTU needs them) mapped shared,
//! registered on the socket (`XDP_UMEM_REG` pins the pages), rings sized. The app receives the
//! socket and the memfd, maps the memfd `MAP_SHARED` (same pages) and the four rings from the
//! socket, binds it (copy mode, need-wakeup; binding needs no privilege), and owns them from then
//! on. The socket goes unbound because kernels before 6.4 refuse to map a bound socket's rings;
//! the XSKMAP takes it unbound, and frames reach it once the app has bound it.
//!
//! The receive budget: a one-entry mmappable BPF array (`struct etran_port_rx`) of the port's
//! own, in the datapath's `etran_port_budget` at `slot`, handed to the app with the socket. The
//! app keeps its fill and RX counters there; ingress hands the port only frames it can take
//! (see `compat/app_ports.h`), so no frame whose data the kernel acknowledged is lost on the
//! way to the app.
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use anyhow::Context;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::{
    backend::{ports::PortMode, AppPort},
    napi::ThreadedSwitch,
    netlink::{Netlink, VethQueues},
    netns::NetNs,
    proto::{FdKind, Reply, Transport},
    xsk::{Geometry, XskProgram},
};

use crate::backend::socket;
pub use crate::backend::socket::{port_mtu, FRAME_COUNT, RX_META_LEN, RX_RING_SIZE, TX_RING_SIZE};

/// The datapath objects a port is wired into.
pub struct PortMaps {
    /// DEVMAP: port slot → kernel-side ifindex (where ingress hands frames to apps).
    pub app_ports: MapHandle,
    /// ARRAY: port slot → kernel-side ifindex (what egress checks a frame's origin against).
    pub port_ifindex: MapHandle,
    /// ARRAY_OF_MAPS: port slot → the port's receive budget (compat/app_ports.h).
    pub port_budget: MapHandle,
    /// Each transport's egress program: a port's kernel side carries its app's transport's.
    pub tcp_egress: OwnedFd,
    pub homa_egress: OwnedFd,
}

impl PortMaps {
    /// The egress program of `transport`'s apps.
    pub fn egress(&self, transport: Transport) -> &OwnedFd {
        match transport {
            Transport::Tcp => &self.tcp_egress,
            Transport::Homa => &self.homa_egress,
        }
    }
}

/// Prefix of every port name; the daemon owns every link named `etp<digits>{k,a}`.
pub const PREFIX: &str = "etp";

/// The UMEM and rings of a compat port of MTU `mtu`: egress runs on the port's far side, so TX
/// frames need no headroom ([`socket::geometry`]).
pub fn geometry(mtu: u32) -> anyhow::Result<Geometry> {
    socket::geometry(mtu, 0)
}

/// Whether `name` is a port name (`etp<digits>k` or `etp<digits>a`).
pub fn is_port_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else { return false };
    let Some(num) = rest.strip_suffix('k').or_else(|| rest.strip_suffix('a')) else {
        return false;
    };
    !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit())
}

pub struct VethPort {
    pub slot: u32,
    pub kernel_name: String,
    pub app_name: String,
    pub kernel_ifindex: u32,
    pub app_ifindex: u32,
    pub xsk: Option<OwnedFd>,
    pub umem: Option<OwnedFd>,
    /// The port's receive budget map (see the module's doc).
    pub rx_budget: Option<MapHandle>,
    /// What the app needs to map `umem` and the socket's rings.
    pub geometry: Geometry,
    prog: Option<XskProgram>,
    in_devmap: bool,
    /// The veth pair exists and is ours to delete.
    created: bool,
    /// The app's transport: only TCP's frames are batched ([`AppPort::batch_sends`]).
    transport: Transport,
    /// The kernel side's receive processing runs as a NAPI thread ([`AppPort::batch_sends`]).
    threaded: bool,
    /// What switches it, made at the first request.
    switch: Option<ThreadedSwitch>,
}

impl AppPort for VethPort {
    fn slot(&self) -> u32 {
        self.slot
    }

    fn name(&self) -> &str {
        &self.app_name
    }

    fn mode(&self) -> PortMode {
        PortMode::VethPort
    }

    fn queue(&self) -> u32 {
        0
    }

    fn registered(&self, iface: &str, version: u32) -> (Reply, Vec<BorrowedFd<'_>>) {
        let reply = Reply::Registered {
            version,
            slot: self.slot,
            port: self.app_name.clone(),
            port_ifindex: self.app_ifindex,
            kernel_port: self.kernel_name.clone(),
            kernel_ifindex: self.kernel_ifindex,
            geometry: self.geometry,
            iface: iface.to_string(),
            fds: vec![FdKind::Xsk { queue: 0 }, FdKind::Umem, FdKind::RxBudget],
            bound: false,
            // The daemon says, from the datapath's pacing.
            homa_link_mbps: 0,
            paced: false,
        };
        let fds = [self.xsk.as_ref().map(|f| f.as_fd()), self.umem.as_ref().map(|f| f.as_fd())]
            .into_iter()
            .chain([self.rx_budget.as_ref().map(|m| m.as_fd())])
            .flatten()
            .collect();
        (reply, fds)
    }

    /// On a stock kernel, AF_XDP copy-mode transmit re-enables bottom halves after every
    /// frame, so each frame the app sends runs the whole path (egress, the switch, the
    /// receiver's stack and its ACK) before the next one leaves: a receiver's GRO never sees
    /// two frames together, and a Linux receiver takes every segment as a packet of its own
    /// (7,251 per 10 MB against 175 from a Linux sender). With the kernel side's receive
    /// processing in a NAPI thread, the app's `sendto` only queues its frames there and the
    /// thread takes them in batches that the receiver merges; the app keeps that queue short
    /// (`app::bursts`). Homa's ports stay in softirq: its compat pacer releases frames at the
    /// link's rate by its own clock and would not see a queue behind it. Without the knob (no
    /// sysfs, an old kernel) the port stays in softirq. The switch runs on a thread of its own
    /// ([`ThreadedSwitch`]): going back to softirq takes the kernel 20 ms, which the daemon's
    /// loop must not wait.
    fn batch_sends(&mut self, on: bool) {
        if self.transport != Transport::Tcp || on == self.threaded {
            return;
        }
        if self.switch.is_none() {
            match ThreadedSwitch::new(&self.kernel_name) {
                Ok(s) => self.switch = Some(s),
                Err(e) => return crate::log::warn(format!("{}: {e:#}", self.kernel_name)),
            }
        }
        if let Some(switch) = &self.switch {
            switch.set(on);
            self.threaded = on;
        }
    }

    fn batching(&self) -> bool {
        self.threaded
    }
}

impl VethPort {
    /// Builds the port for `slot` with MTU `mtu` (see [`port_mtu`]); on failure, whatever was
    /// built is removed again.
    pub fn create(
        nl: &mut Netlink,
        maps: &PortMaps,
        slot: u32,
        transport: Transport,
        mtu: u32,
    ) -> anyhow::Result<VethPort> {
        let mut port = VethPort {
            slot,
            kernel_name: format!("{PREFIX}{slot}k"),
            app_name: format!("{PREFIX}{slot}a"),
            kernel_ifindex: 0,
            app_ifindex: 0,
            xsk: None,
            umem: None,
            rx_budget: None,
            geometry: geometry(mtu)?,
            prog: None,
            in_devmap: false,
            created: false,
            transport,
            threaded: false,
            switch: None,
        };
        match port.build(nl, maps, transport, mtu) {
            Ok(()) => Ok(port),
            Err(e) => {
                port.teardown(nl, maps);
                Err(e)
            }
        }
    }

    fn build(
        &mut self,
        nl: &mut Netlink,
        maps: &PortMaps,
        transport: Transport,
        mtu: u32,
    ) -> anyhow::Result<()> {
        let s = self.slot as u8;
        let here = NetNs::current()?;
        nl.add_veth(
            &self.kernel_name,
            [0x02, 0xe7, 0x70, s, (self.slot >> 8) as u8, 0x01],
            &self.app_name,
            [0x02, 0xe7, 0x70, s, (self.slot >> 8) as u8, 0x02],
            &here,
            VethQueues::same(1),
        )?;
        self.created = true;
        self.kernel_ifindex = nl.index(&self.kernel_name)?;
        self.app_ifindex = nl.index(&self.app_name)?;
        for (name, idx) in
            [(&self.kernel_name, self.kernel_ifindex), (&self.app_name, self.app_ifindex)]
        {
            // No IPv6 (neighbour discovery, router solicitations): the kernel side would send
            // the app frames no ingress handed over, outside its receive budget.
            let knob = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
            if std::path::Path::new(&knob).exists() {
                std::fs::write(&knob, "1").with_context(|| format!("writing {knob}"))?;
            }
            // Before the XDP programs: a veth with one caps its peer's MTU.
            nl.set_mtu(idx, mtu + RX_META_LEN)?;
            nl.set_up(idx)?;
            crate::ethtool::set_gro(name, true)?;
        }
        let budget = socket::rx_budget_map().context("creating the port's receive budget")?;
        let mut prog = XskProgram::load_for_port(budget.as_fd())?;
        prog.attach_port_redirect(self.app_ifindex)?;
        self.prog = Some(prog);
        self.rx_budget = Some(budget);

        let (xsk, umem) = socket::make_socket(&self.geometry)
            .with_context(|| format!("creating the AF_XDP socket on {}", self.app_name))?;
        self.prog.as_ref().expect("loaded").insert_fd(0, xsk.as_fd())?;
        self.xsk = Some(xsk);
        self.umem = Some(umem);

        // Egress on the kernel side checks that a frame came from the port owning its
        // connection: register the port's ifindex and its budget, then hand it frames.
        let (slot, ifindex) = (self.slot.to_ne_bytes(), self.kernel_ifindex.to_ne_bytes());
        self.in_devmap = true;
        let budget = self.rx_budget.as_ref().expect("made with the program");
        let inner = (budget.as_fd().as_raw_fd() as u32).to_ne_bytes();
        maps.port_budget
            .update(&slot, &inner, MapFlags::ANY)
            .with_context(|| format!("registering port {}'s receive budget", self.slot))?;
        maps.port_ifindex
            .update(&slot, &ifindex, MapFlags::ANY)
            .with_context(|| format!("registering {} as port {}", self.kernel_name, self.slot))?;
        crate::loader::attach_egress(maps.egress(transport), self.kernel_ifindex)?;
        maps.app_ports.update(&slot, &ifindex, MapFlags::ANY).with_context(|| {
            format!("inserting {} into app_ports slot {}", self.kernel_name, self.slot)
        })?;
        Ok(())
    }

    /// Removes everything the port owns: devmap slot, XDP program, veth pair, descriptors.
    /// Best effort: every step runs, failures are logged.
    pub fn teardown(&mut self, nl: &mut Netlink, maps: &PortMaps) {
        if self.in_devmap {
            // The build may have stopped before inserting anything.
            socket::clear_slot(&maps.app_ports, &maps.port_budget, &maps.port_ifindex, self.slot);
            self.in_devmap = false;
        }
        self.prog = None; // detaches xsk_redirect and frees its XSKMAP
        self.xsk = None;
        self.umem = None;
        self.rx_budget = None;
        if self.created {
            // Deleting one end of a veth deletes both.
            match nl.index(&self.kernel_name).and_then(|i| nl.delete_link(i)) {
                Ok(()) => self.created = false,
                Err(e) => crate::log::warn(format!("deleting port {}: {e:#}", self.kernel_name)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names() {
        assert!(is_port_name("etp1k"));
        assert!(is_port_name("etp63a"));
        assert!(!is_port_name("etpk"));
        assert!(!is_port_name("etp1x"));
        assert!(!is_port_name("eth0"));
        assert!("etp63k".len() <= 15);
    }
}
