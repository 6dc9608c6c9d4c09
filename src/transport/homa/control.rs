//! Homa's control path in the daemon: which app holds which Homa port, the host's client ids,
//! the peers egress may address, and the teardown of a departed app's ports and RPCs.
//!
//! No packet of Homa's needs the daemon (ingress and egress handle all of them), so this is not
//! yet a [`crate::transport::Control`] with a descriptor to poll: the RPC timer scan (RESEND,
//! NEED_ACK, aborts) will make it one.
use std::{collections::HashMap, net::Ipv4Addr};

use anyhow::Context;
use libbpf_rs::{MapCore, MapFlags, MapHandle};
use mio::Token;

use super::id::{HostIds, IdBlock};
use crate::{
    bpf::homa::types::{homa_peer, homa_port, homa_rpc},
    loader,
    refusal::Refusal,
};

/// Kernel names are cut at 15 bytes: etran_homa_ingress, etran_homa_egress, etran_homa_xsk_gen
/// (and the maps etran_homa_ports, etran_homa_peers below).
const HOMA_INGRESS_PROG: &str = "etran_homa_ingr";
const HOMA_EGRESS_PROG: &str = "etran_homa_egre";
const HOMA_GEN_PROG: &str = "etran_homa_gen";
const HOMA_XSK_GEN_PROG: &str = "etran_homa_xsk_";

/// Ports `HomaBind { port: 0 }` picks from (IANA's dynamic range).
const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;

/// What the daemon needs of the Homa object of a datapath, found from the attached entrance
/// program (program array → Homa ingress → its maps; egress by its name and the RPC map).
pub struct HomaHandles {
    /// The egress program, attached to the kernel side of each Homa app's port (compat) or
    /// linked to its socket (native).
    pub egress: std::os::fd::OwnedFd,
    /// HASH: Homa port (network order) → struct homa_port (etran_homa_ports).
    pub ports: MapHandle,
    /// HASH: peer IPv4 address → struct homa_peer (etran_homa_peers).
    pub peers: MapHandle,
    /// HASH: struct homa_rpc_key → struct homa_rpc (etran_homa_rpcs).
    pub rpcs: MapHandle,
    /// The GRANT generator (etran_homa_gen), run by the gen pump.
    pub gen: std::os::fd::OwnedFd,
    /// Its twin linked to Homa apps' sockets as BPF_XSK_GEN (etran_homa_xsk_gen): loaded only
    /// for the native backend.
    pub xsk_gen: Option<std::os::fd::OwnedFd>,
    /// QUEUE of RPC keys a GRANT may be owed to (etran_homa_genq).
    pub gen_queue: MapHandle,
    /// RINGBUF where ingress wakes the gen pump (etran_homa_genw).
    pub gen_wake: MapHandle,
}

pub fn homa_handles(entrance_prog_id: u32) -> anyhow::Result<HomaHandles> {
    let missing = || anyhow::anyhow!("the datapath has no Homa transport loaded");
    let ingress =
        loader::transport_prog(entrance_prog_id, HOMA_INGRESS_PROG)?.ok_or_else(missing)?;
    let (rpcs_id, rpcs) = loader::prog_map(ingress, "etran_homa_rpcs")?.ok_or_else(missing)?;
    let (_, ports) = loader::prog_map(ingress, "etran_homa_port")?.ok_or_else(missing)?;
    let (_, peers) = loader::prog_map(ingress, "etran_homa_peer")?.ok_or_else(missing)?;
    let egress = loader::prog_sharing(rpcs_id, HOMA_EGRESS_PROG).ok_or_else(missing)?;
    let gen = loader::prog_sharing(rpcs_id, HOMA_GEN_PROG).ok_or_else(missing)?;
    let (_, gen_queue) = loader::prog_map(gen, "etran_homa_genq")?.ok_or_else(missing)?;
    let (_, gen_wake) = loader::prog_map(ingress, "etran_homa_genw")?.ok_or_else(missing)?;
    let xsk_gen = loader::prog_sharing(rpcs_id, HOMA_XSK_GEN_PROG)
        .map(libbpf_rs::Program::fd_from_id)
        .transpose()?;
    Ok(HomaHandles {
        egress: libbpf_rs::Program::fd_from_id(egress)?,
        ports,
        peers,
        rpcs,
        gen: libbpf_rs::Program::fd_from_id(gen)?,
        xsk_gen,
        gen_queue,
        gen_wake,
    })
}

fn bytes_of<T>(v: &T) -> &[u8] {
    // SAFETY: plain #[repr(C)] data generated from BTF.
    unsafe { std::slice::from_raw_parts((v as *const T).cast(), std::mem::size_of::<T>()) }
}

fn read<T: Copy>(b: &[u8]) -> Option<T> {
    // SAFETY: as above; the length is checked.
    (b.len() >= std::mem::size_of::<T>())
        .then(|| unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

/// One bound port.
struct Bound {
    owner: Token,
    slot: u32,
}

pub struct HomaControl {
    handles: HomaHandles,
    iface: String,
    local_mac: [u8; 6],
    ids: HostIds,
    bound: HashMap<u16, Bound>,
    /// Binds made, for the report.
    binds: u64,
}

impl HomaControl {
    pub fn new(handles: HomaHandles, iface: &str, local_mac: [u8; 6]) -> HomaControl {
        HomaControl {
            handles,
            iface: iface.to_string(),
            local_mac,
            ids: HostIds::default(),
            bound: HashMap::new(),
            binds: 0,
        }
    }

    /// The egress program Homa apps' ports carry.
    pub fn egress(&self) -> &std::os::fd::OwnedFd {
        &self.handles.egress
    }

    /// Binds Homa `port` (0: a free one) to the app in `slot`; returns the port and a block of
    /// client ids. `EADDRINUSE` when the port is taken (by any daemon's app: the map says).
    pub fn bind(&mut self, owner: Token, slot: u32, port: u16) -> Result<(u16, IdBlock), Refusal> {
        let taken = |p: u16| {
            matches!(self.handles.ports.lookup(&p.to_be_bytes(), MapFlags::ANY), Ok(Some(_)))
        };
        let port = match port {
            0 => EPHEMERAL
                .clone()
                .find(|&p| !taken(p))
                .ok_or_else(|| Refusal::new(libc::EADDRNOTAVAIL, "no free ephemeral Homa port"))?,
            p if taken(p) => {
                return Err(Refusal::new(libc::EADDRINUSE, format!("Homa port {p} is taken")))
            }
            p => p,
        };
        let local_ip = crate::sys::local_ipv4(&self.iface).ok_or_else(|| {
            Refusal::new(libc::EADDRNOTAVAIL, format!("{} has no IPv4 address", self.iface))
        })?;
        let v = homa_port {
            slot,
            local_ip: u32::from(local_ip).to_be(),
            local_mac: self.local_mac,
            ..Default::default()
        };
        self.handles.ports.update(&port.to_be_bytes(), bytes_of(&v), MapFlags::NO_EXIST).map_err(
            |e| Refusal::new(libc::EADDRINUSE, format!("binding Homa port {port}: {e}")),
        )?;
        self.bound.insert(port, Bound { owner, slot });
        self.binds += 1;
        Ok((port, self.ids.block()))
    }

    /// Another block of client ids for the app of `owner`, which must hold a Homa port (ids
    /// number a bound port's RPCs). `EPROTOTYPE` otherwise.
    pub fn more_ids(&mut self, owner: Token) -> Result<IdBlock, Refusal> {
        if !self.bound.values().any(|b| b.owner == owner) {
            return Err(Refusal::new(libc::EPROTOTYPE, "no Homa port bound: no RPC ids to renew"));
        }
        Ok(self.ids.block())
    }

    /// Tells egress the Ethernet address of `ip`, from the neighbour table.
    pub fn peer(&mut self, ip: Ipv4Addr) -> Result<(), Refusal> {
        let mac = crate::transport::peer_mac(&self.iface, ip)?;
        let v = homa_peer { mac, ..Default::default() };
        self.handles
            .peers
            .update(&u32::from(ip).to_be_bytes(), bytes_of(&v), MapFlags::ANY)
            .map_err(|e| Refusal::new(libc::ENOBUFS, format!("adding peer {ip}: {e}")))
    }

    /// The session `owner` ended: its ports go, then every RPC of its slots.
    pub fn teardown(&mut self, owner: Token) {
        let mut slots = Vec::new();
        self.bound.retain(|port, b| {
            if b.owner != owner {
                return true;
            }
            let _ = self.handles.ports.delete(&port.to_be_bytes());
            slots.push(b.slot);
            false
        });
        if !slots.is_empty() {
            if let Err(e) = self.remove_rpcs(|r| slots.contains(&r.owner_slot)) {
                crate::log::warn(format!("removing Homa RPCs: {e:#}"));
            }
        }
    }

    /// Deletes the RPCs `which` picks.
    fn remove_rpcs(&self, which: impl Fn(&homa_rpc) -> bool) -> anyhow::Result<()> {
        let rpcs = &self.handles.rpcs;
        let keys: Vec<Vec<u8>> = rpcs.keys().collect();
        for k in keys {
            let Some(v) = rpcs.lookup(&k, MapFlags::ANY).context("reading an RPC")? else {
                continue;
            };
            if read::<homa_rpc>(&v).is_some_and(|r| which(&r)) {
                let _ = rpcs.delete(&k);
            }
        }
        Ok(())
    }

    /// The daemon stops: every session's ports and RPCs go.
    pub fn shutdown(&mut self) {
        let owners: Vec<Token> = self.bound.values().map(|b| b.owner).collect();
        for o in owners {
            self.teardown(o);
        }
    }

    /// One line of what it holds, for the daemon's log when it stops.
    pub fn report(&self) -> String {
        format!("Homa: {} port(s) bound", self.binds)
    }
}
