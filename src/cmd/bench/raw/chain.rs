//! `bench raw --chain`: frames through the hops eTran's compat datapath gives every frame of a
//! transport (app port veth → egress on its kernel side → NIC → testbed → NIC → ingress → the
//! peer's app port → its AF_XDP socket), with the transport's own work left out. The ports are
//! built by the compat backend's code ([`VethPort`]) into the same maps
//! (`compat/app_ports.h`), the sockets taken over as an app takes its port over
//! ([`crate::xsk::Geometry::take_over`]); the programs are the stand-ins of
//! `xsk/xsk_chain.bpf.c`.
use std::{
    mem::MaybeUninit,
    os::fd::{AsFd, OwnedFd},
};

use anyhow::Context;
use libbpf_rs::{skel::SkelBuilder, Link, MapCore, MapFlags, MapHandle};

use crate::{
    backend::compat::port::{self, PortMaps, VethPort},
    bpf::xsk_chain::XskChainSkelBuilder,
    netlink::Netlink,
    netns::NetNs,
    proto::Transport,
    xsk::{Bind, Geometry, Socket, Umem},
};

/// The chain's app port slot (any: the host has no other).
const SLOT: u32 = 1;

/// Frames a chain's receiving end lends the kernel: what an app lends its port's fill ring
/// (`app::port`: all the ring holds).
pub(super) const APP_LENDS: u32 = port::RX_RING_SIZE;

/// One host's chain: its app port, the maps and egress program the port is wired into, and
/// the ingress stand-in on its NIC. Dropping it removes the port.
pub(super) struct ChainHost {
    port: VethPort,
    maps: PortMaps,
    nl: Netlink,
    _ingress: Link,
}

/// What an end needs to take the port's socket over, as an app would.
pub(super) struct AppSide {
    geometry: Geometry,
    umem: OwnedFd,
    xsk: OwnedFd,
    name: String,
    ifindex: u32,
}

impl AppSide {
    pub(super) fn take_over(&self) -> anyhow::Result<(Umem, Socket)> {
        let xsk = self.xsk.try_clone().context("duplicating the port's socket")?;
        self.geometry.take_over(self.umem.as_fd(), xsk, &self.name, self.ifindex, Bind::Queue(0))
    }
}

/// The UMEM chunk size of a chain's ports on a testbed of MTU `mtu`.
pub(super) fn frame_size(mtu: u32) -> anyhow::Result<u32> {
    Ok(port::geometry(port::port_mtu(mtu)?)?.frame_size)
}

impl ChainHost {
    /// Builds the chain in namespace `ns` on its `nic`, with app ports of the MTU the compat
    /// backend gives a NIC of MTU `mtu`.
    pub(super) fn build(ns: &NetNs, nic: &str, mtu: u32) -> anyhow::Result<ChainHost> {
        ns.run(|| {
            let nic_index = crate::sys::ifindex(nic)?;
            let mut storage = MaybeUninit::uninit();
            let mut open = XskChainSkelBuilder::default()
                .open(&mut storage)
                .context("opening the xsk_chain BPF object")?;
            if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
                ro.chain_slot = SLOT;
            }
            let skel = crate::bpf::verifier::load(open, "the chain programs")?;
            skel.maps
                .etran_nic
                .update(&0u32.to_ne_bytes(), &nic_index.to_ne_bytes(), MapFlags::ANY)
                .context("pointing the chain's egress at the NIC")?;
            let ingress = skel
                .progs
                .xsk_chain_ingress
                .attach_xdp(nic_index as i32)
                .with_context(|| format!("attaching xsk_chain_ingress to {nic}"))?;
            let maps = PortMaps {
                app_ports: MapHandle::try_from(&skel.maps.etran_app_ports)?,
                port_ifindex: MapHandle::try_from(&skel.maps.etran_port_ifindex)?,
                // The stand-in ingress redirects without the receive budget (the bench's ends
                // lend the whole fill ring and read at once); the port still gets one, as
                // every compat port does.
                port_budget: MapHandle::try_from(&skel.maps.etran_port_budget)?,
                // The chain's port is a TCP app's; its egress stand-in takes either's place.
                tcp_egress: skel.progs.xsk_chain_egress.as_fd().try_clone_to_owned()?,
                homa_egress: skel.progs.xsk_chain_egress.as_fd().try_clone_to_owned()?,
            };
            let mut nl = Netlink::open()?;
            let port =
                VethPort::create(&mut nl, &maps, SLOT, Transport::Tcp, port::port_mtu(mtu)?)?;
            Ok(ChainHost { port, maps, nl, _ingress: ingress })
        })?
    }

    pub(super) fn app_side(&self) -> anyhow::Result<AppSide> {
        let dup = |fd: &Option<OwnedFd>| -> anyhow::Result<OwnedFd> {
            Ok(fd.as_ref().context("the port has no socket")?.try_clone()?)
        };
        Ok(AppSide {
            geometry: self.port.geometry,
            umem: dup(&self.port.umem)?,
            xsk: dup(&self.port.xsk)?,
            name: self.port.app_name.clone(),
            ifindex: self.port.app_ifindex,
        })
    }
}

impl Drop for ChainHost {
    fn drop(&mut self) {
        self.port.teardown(&mut self.nl, &self.maps);
    }
}
