//! The TCP object of a datapath as the daemon finds it: its maps and programs, reached from the
//! attached entrance program (see [`tcp_handles`]).
use anyhow::Context;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::loader::kernel;

/// What the daemon needs of the TCP object of a datapath: the app-port maps, the egress program,
/// the ingress program (for segments the slow path replays) and what the gen pump runs. Found
/// from the attached entrance program (program array → TCP ingress → its maps; the egress and
/// gen programs by their names and the shared connection map), so no pins are needed.
pub struct TcpHandles {
    /// DEVMAP: port slot → kernel-side ifindex (where ingress hands frames to apps).
    pub app_ports: MapHandle,
    /// ARRAY: port slot → kernel-side ifindex (what egress checks a frame's origin against).
    pub port_ifindex: MapHandle,
    /// ARRAY_OF_MAPS: port slot → the port's receive budget (etran_port_budget).
    pub port_budget: MapHandle,
    pub egress: std::os::fd::OwnedFd,
    /// TCP ingress (etran_tcp_ingress), which the slow path replays captured segments through.
    pub ingress: std::os::fd::OwnedFd,
    /// HASH: the connections (etran_tcp_conns).
    pub conns: MapHandle,
    /// The ACK generator (etran_tcp_gen), run by the gen pump.
    pub gen: std::os::fd::OwnedFd,
    /// QUEUE of connection keys owing an ACK at once (etran_tcp_ack_queue).
    pub ack_queue: MapHandle,
    /// QUEUE of connection keys owing a delayed ACK (etran_tcp_dack_queue).
    pub dack_queue: MapHandle,
    /// RINGBUF where ingress wakes the gen pump (etran_tcp_gen_wake).
    pub gen_wake: MapHandle,
    /// HASH: listening TCP port (network order) → owner's port slot (etran_tcp_listen).
    pub listen: MapHandle,
    /// HASH: flows in handshake or TIME_WAIT (etran_tcp_pending): their segments reach the
    /// daemon.
    pub pending: MapHandle,
    /// RINGBUF of slow-path segments (etran_tcp_slow, struct etran_tcp_slow_seg records).
    pub slow: MapHandle,
}

/// Kernel names are cut at 15 bytes: etran_tcp_ingress, etran_tcp_egress, etran_transports,
/// etran_port_ifindex, etran_port_budget.
const TCP_INGRESS_PROG: &str = "etran_tcp_ingre";
const TCP_EGRESS_PROG: &str = "etran_tcp_egres";
const TCP_GEN_PROG: &str = "etran_tcp_gen";

pub fn tcp_handles(entrance_prog_id: u32) -> anyhow::Result<TcpHandles> {
    let missing = || anyhow::anyhow!("the datapath has no TCP transport loaded");
    let transports = kernel::prog_info(entrance_prog_id)?
        .map_ids
        .into_iter()
        .filter_map(|id| MapHandle::from_map_id(id).ok())
        .find(|m| m.name() == "etran_transport")
        .ok_or_else(missing)?;
    let tcp_id = (0..transports.max_entries())
        .filter_map(|k| transports.lookup(&k.to_ne_bytes(), MapFlags::ANY).ok().flatten())
        .filter_map(|v| <[u8; 4]>::try_from(v.as_slice()).ok().map(u32::from_ne_bytes))
        .find(|id| kernel::prog_info(*id).is_ok_and(|i| i.name == TCP_INGRESS_PROG))
        .ok_or_else(missing)?;
    let named = |prog: u32, name: &str| -> anyhow::Result<Option<(u32, MapHandle)>> {
        for id in kernel::prog_info(prog)?.map_ids {
            let map = MapHandle::from_map_id(id).with_context(|| format!("opening map {id}"))?;
            if map.name() == name {
                return Ok(Some((id, map)));
            }
        }
        Ok(None)
    };
    let (conns_id, conns) = named(tcp_id, "etran_tcp_conns")?.ok_or_else(missing)?;
    let (_, app_ports) = named(tcp_id, "etran_app_ports")?.ok_or_else(missing)?;
    let (_, port_budget) = named(tcp_id, "etran_port_budg")?.ok_or_else(missing)?;
    // The egress and gen programs: the ones of those names sharing the connection map. A
    // program freed while we look (another process's) is skipped, not an error.
    let (mut egress, mut gen) = (None, None);
    for id in kernel::prog_ids() {
        let Ok(info) = kernel::prog_info(id) else { continue };
        if !info.map_ids.contains(&conns_id) {
            continue;
        }
        match info.name.as_str() {
            TCP_EGRESS_PROG => egress = Some(id),
            TCP_GEN_PROG => gen = Some(id),
            _ => {}
        }
    }
    let (egress, gen) = (egress.ok_or_else(missing)?, gen.ok_or_else(missing)?);
    let (_, port_ifindex) = named(egress, "etran_port_ifin")?.ok_or_else(missing)?;
    let (_, ack_queue) = named(gen, "etran_tcp_ack_q")?.ok_or_else(missing)?;
    let (_, dack_queue) = named(gen, "etran_tcp_dack_")?.ok_or_else(missing)?;
    let (_, gen_wake) = named(tcp_id, "etran_tcp_gen_w")?.ok_or_else(missing)?;
    let (_, listen) = named(tcp_id, "etran_tcp_liste")?.ok_or_else(missing)?;
    let (_, pending) = named(tcp_id, "etran_tcp_pendi")?.ok_or_else(missing)?;
    let (_, slow) = named(tcp_id, "etran_tcp_slow")?.ok_or_else(missing)?;
    Ok(TcpHandles {
        app_ports,
        port_ifindex,
        port_budget,
        egress: libbpf_rs::Program::fd_from_id(egress)?,
        ingress: libbpf_rs::Program::fd_from_id(tcp_id)?,
        conns,
        gen: libbpf_rs::Program::fd_from_id(gen)?,
        ack_queue,
        dack_queue,
        gen_wake,
        listen,
        pending,
        slow,
    })
}
