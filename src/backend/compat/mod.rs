//! The compat backend, for stock kernels. Each app gets a veth port whose kernel side carries the
//! transport's egress program ([`port`]): the app's frames cross the pair and egress checks and
//! rewrites them before they are redirected to the NIC. The generators (TCP's ACKs, Homa's GRANTs)
//! have no hook of their own: each sits on the far side of a gen port of the daemon's, and its gen
//! pump sends it template frames when ingress queues work ([`super::pump`]); TCP ingress sits
//! on the far side of a replay port too, for the slow path's held segments
//! ([`super::replay::ReplayPort`]). No pacing
//! ([`Pacing::None`]): egress hands each frame to the NIC as the app sends it, and nothing on the
//! way paces either (XDP_REDIRECT to the NIC bypasses its qdisc, `fq` included).
use std::os::fd::AsFd;

use anyhow::Context;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::{replay::ReplayPort, socket, Backend, Pacing};
use crate::{
    bpf::tcp::types::etran_app_port_limit,
    log,
    netlink::Netlink,
    proto::Transport,
    transport::{
        homa::control::HomaHandles,
        tcp::{control::Replay, TcpHandles},
    },
};

pub mod port;

use super::pump::{GenPump, GrantPump};
use port::{PortMaps, VethPort};

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

    fn pacing(&self) -> Pacing {
        Pacing::None
    }

    fn mtu(&self) -> u32 {
        self.mtu
    }

    fn open_port(&mut self, slot: u32, transport: Transport) -> anyhow::Result<VethPort> {
        VethPort::create(&mut self.nl, &self.maps, slot, transport, self.mtu)
    }

    fn close_port(&mut self, port: &mut VethPort) {
        if let Some(xsk) = &port.xsk {
            socket::log_drops(&port.app_name, xsk.as_fd());
        }
        port.teardown(&mut self.nl, &self.maps);
    }

    fn slot_in_use(&self, slot: u32) -> bool {
        matches!(self.maps.app_ports.lookup(&slot.to_ne_bytes(), MapFlags::ANY), Ok(Some(_)))
    }

    fn replay(&self, tcp: &TcpHandles, name: &str) -> anyhow::Result<Box<dyn Replay>> {
        Ok(Box::new(ReplayPort::open(name, &tcp.ingress)?))
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
            }
            let m = &self.maps;
            socket::clear_slot(&m.app_ports, &m.port_budget, &m.port_ifindex, slot);
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
