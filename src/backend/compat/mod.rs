//! The compat backend, for stock kernels. Each app gets a veth port whose kernel side carries
//! the transport's egress program ([`port`]): the app's frames cross the pair and egress
//! checks and rewrites them before they are redirected to the NIC. The generators (TCP's ACKs,
//! Homa's GRANTs) have no hook of their own: each sits on the far side of a gen port of the
//! daemon's, and its gen pump sends it template frames when ingress queues work ([`pump`]). No
//! pacing ([`Pacing::None`]): egress hands each frame to the NIC as the app sends it, and
//! nothing on the way paces either (XDP_REDIRECT to the NIC bypasses its qdisc, `fq` included).
use std::{
    os::fd::{AsFd, OwnedFd, RawFd},
    time::Instant,
};

use anyhow::Context;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::{Backend, Pacing};
use crate::{
    bpf::tcp::types::etran_app_port_limit,
    log,
    netlink::Netlink,
    proto::Transport,
    transport::{homa::control::HomaHandles, tcp::TcpHandles},
    xsk::Statistics,
};

pub mod port;
pub mod pump;

use port::VethPort;
use pump::{GenPump, GrantPump};

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

pub struct Compat {
    nl: Netlink,
    maps: PortMaps,
    pump: GenPump,
    grants: GrantPump,
    /// The MTU of every app port ([`port::port_mtu`] of the NIC's).
    mtu: u32,
}

impl Compat {
    /// The backend over the TCP and Homa objects of a datapath on a NIC of MTU `nic_mtu`; the
    /// TCP gen pump's port (a veth pair) is named `gen_port`, Homa's `gen_port`h (see
    /// [`GenPump::new`], [`GrantPump::new`]).
    pub fn new(
        tcp: &TcpHandles,
        homa: &HomaHandles,
        gen_port: &str,
        nic_mtu: u32,
    ) -> anyhow::Result<Compat> {
        let mtu = port::port_mtu(nic_mtu)?;
        let pump = GenPump::new(tcp, gen_port).context("starting the gen pump")?;
        let grants =
            GrantPump::new(homa, &format!("{gen_port}h")).context("starting the Homa gen pump")?;
        let homa_egress = &homa.egress;
        let maps = PortMaps {
            app_ports: MapHandle::try_from(&tcp.app_ports)?,
            port_ifindex: MapHandle::try_from(&tcp.port_ifindex)?,
            port_budget: MapHandle::try_from(&tcp.port_budget)?,
            tcp_egress: tcp.egress.try_clone().context("duplicating TCP's egress descriptor")?,
            homa_egress: homa_egress.try_clone().context("duplicating Homa's egress descriptor")?,
        };
        Ok(Compat { nl: Netlink::open()?, maps, pump, grants, mtu })
    }
}

impl Backend for Compat {
    type AppPort = VethPort;
    /// The `etran_app_ports` devmap's size (ETRAN_APP_PORTS, common/transport.h).
    const SLOTS: u32 = etran_app_port_limit::ETRAN_APP_PORTS.0;
    const PACING: Pacing = Pacing::None;

    fn mtu(&self) -> u32 {
        self.mtu
    }

    fn open_port(&mut self, slot: u32, transport: Transport) -> anyhow::Result<VethPort> {
        VethPort::create(&mut self.nl, &self.maps, slot, transport, self.mtu)
    }

    fn close_port(&mut self, port: &mut VethPort) {
        // The socket's drops are lost with it, and are what tells a frame lost on its way
        // into the app from one the app lost.
        let stats = port.xsk.as_ref().and_then(|fd| Statistics::of(fd.as_fd()).ok());
        if let Some(st) = stats.filter(|s| s.rx_drops() > 0) {
            log::warn(format!(
                "app port {}: its AF_XDP socket dropped {} frames ingress had accepted (RX ring \
                 full {}, no frame to copy into or too long {})",
                port.app_name,
                st.rx_drops(),
                st.rx_ring_full,
                st.rx_dropped
            ));
        }
        port.teardown(&mut self.nl, &self.maps);
    }

    fn slot_in_use(&self, slot: u32) -> bool {
        matches!(self.maps.app_ports.lookup(&slot.to_ne_bytes(), MapFlags::ANY), Ok(Some(_)))
    }

    /// Deletes port links left by a daemon that died without cleaning up (their devmap entries
    /// go with them) and clears slots that point at no live port.
    fn remove_stale(&mut self) -> anyhow::Result<()> {
        for link in self.nl.links()? {
            if port::is_port_name(&link.name) && link.name.ends_with('k') {
                log::warn(format!("removing stale app port {}", link.name));
                self.nl.delete_link(link.index)?;
            }
        }
        for slot in 1..Self::SLOTS {
            let key = slot.to_ne_bytes();
            if let Ok(Some(_)) = self.maps.app_ports.lookup(&key, MapFlags::ANY) {
                log::warn(format!("clearing stale app_ports slot {slot}"));
                let _ = self.maps.app_ports.delete(&key);
            }
            let _ = self.maps.port_budget.delete(&key);
            let _ = self.maps.port_ifindex.update(&key, &0u32.to_ne_bytes(), MapFlags::ANY);
        }
        Ok(())
    }

    fn gen_fds(&self) -> Vec<RawFd> {
        vec![self.pump.fd(), self.grants.fd()]
    }

    fn gen_deadline(&self) -> Option<Instant> {
        match (self.pump.deadline(), self.grants.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_gen_wake(&mut self, now: Instant) -> anyhow::Result<()> {
        self.pump.on_readable(now)?;
        self.grants.on_readable(now)
    }

    fn on_gen_deadline(&mut self, now: Instant) -> anyhow::Result<()> {
        self.pump.on_deadline(now)?;
        self.grants.on_deadline(now)
    }

    fn on_housekeeping(&mut self) -> anyhow::Result<()> {
        // A wake record lost to a full ring buffer leaves keys queued.
        if self.pump.queued() {
            self.pump.pump()?;
        }
        if self.grants.queued() {
            self.grants.pump()?;
        }
        Ok(())
    }

    fn report(&self) -> String {
        let (g, h) = (self.pump.stats(), self.grants.stats());
        format!(
            "gen pump: {} sends, {} templates; Homa's: {} sends, {} templates",
            g.calls, g.runs, h.calls, h.runs
        )
    }
}
