//! The TCP object of a datapath as the daemon finds it: its maps and programs, reached from the
//! attached entrance program (see [`tcp_handles`]).
use libbpf_rs::MapHandle;

use crate::loader;

/// What the daemon needs of the TCP object of a datapath: the app-port maps, the egress program,
/// the ingress program (for segments the slow path replays), what the gen pump runs and what
/// moves connections between apps. Found from the attached entrance program (program array →
/// TCP ingress → its maps; the egress, gen and rehome programs by their names and the shared
/// connection map), so no pins are needed.
pub struct TcpHandles {
    /// DEVMAP: port slot → kernel-side ifindex (where ingress hands frames to apps).
    pub app_ports: MapHandle,
    /// ARRAY: port slot → kernel-side ifindex (what egress checks a frame's origin against).
    pub port_ifindex: MapHandle,
    /// ARRAY_OF_MAPS: port slot → the port's receive budget (etran_port_budget).
    pub port_budget: MapHandle,
    /// XSKMAP: slot → the app's socket on the NIC (etran_app_xsks; native backend).
    pub app_xsks: Option<MapHandle>,
    /// ARRAY: slot → its socket's NIC queue + 1 (etran_port_queue; native backend).
    pub port_queue: Option<MapHandle>,
    pub egress: std::os::fd::OwnedFd,
    /// TCP ingress (etran_tcp_ingress), which the slow path replays captured segments through.
    pub ingress: std::os::fd::OwnedFd,
    /// HASH: the connections (etran_tcp_conns).
    pub conns: MapHandle,
    /// The ACK generator (etran_tcp_gen), run by the gen pump.
    pub gen: std::os::fd::OwnedFd,
    /// What moves a connection between apps (etran_tcp_rehome), run by the daemon.
    pub rehome: std::os::fd::OwnedFd,
    /// Its twin linked to apps' sockets as BPF_XSK_GEN (etran_tcp_xsk_gen): loaded only for
    /// the native backend.
    pub xsk_gen: Option<std::os::fd::OwnedFd>,
    /// QUEUE of connection keys owing an ACK at once (etran_tcp_ack_queue).
    pub ack_queue: MapHandle,
    /// QUEUE of connection keys owing a delayed ACK (etran_tcp_dack_queue).
    pub dack_queue: MapHandle,
    /// ARRAY: set while the daemon flushes the delayed ACKs through the gen hook on demand
    /// (etran_tcp_gen_flush; native backend: read by etran_tcp_xsk_gen only).
    pub gen_flush: Option<MapHandle>,
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
const TCP_REHOME_PROG: &str = "etran_tcp_rehom";
const TCP_XSK_GEN_PROG: &str = "etran_tcp_xsk_g";

pub fn tcp_handles(entrance_prog_id: u32) -> anyhow::Result<TcpHandles> {
    let missing = || {
        anyhow::anyhow!(
            "the datapath has no TCP transport loaded: its pins went away with the bpffs that \
             held them (a stopped container's, or one an ended command mounted); with a bpffs at \
             {} that outlives it, `etran up` on the interface rebuilds the datapath",
            loader::pins::BPFFS_ROOT
        )
    };
    let tcp_id = loader::transport_prog(entrance_prog_id, TCP_INGRESS_PROG)?.ok_or_else(missing)?;
    let named = loader::prog_map;
    let (conns_id, conns) = named(tcp_id, "etran_tcp_conns")?.ok_or_else(missing)?;
    let (_, app_ports) = named(tcp_id, "etran_app_ports")?.ok_or_else(missing)?;
    let (_, port_budget) = named(tcp_id, "etran_port_budg")?.ok_or_else(missing)?;
    // The egress and gen programs: the ones of those names sharing the connection map.
    let egress = loader::prog_sharing(conns_id, TCP_EGRESS_PROG);
    let gen = loader::prog_sharing(conns_id, TCP_GEN_PROG);
    let (egress, gen) = (egress.ok_or_else(missing)?, gen.ok_or_else(missing)?);
    let rehome = loader::prog_sharing(conns_id, TCP_REHOME_PROG).ok_or_else(missing)?;
    let (_, port_ifindex) = named(egress, "etran_port_ifin")?.ok_or_else(missing)?;
    let (_, ack_queue) = named(gen, "etran_tcp_ack_q")?.ok_or_else(missing)?;
    let (_, dack_queue) = named(gen, "etran_tcp_dack_")?.ok_or_else(missing)?;
    let (_, gen_wake) = named(tcp_id, "etran_tcp_gen_w")?.ok_or_else(missing)?;
    let (_, listen) = named(tcp_id, "etran_tcp_liste")?.ok_or_else(missing)?;
    let (_, pending) = named(tcp_id, "etran_tcp_pendi")?.ok_or_else(missing)?;
    let (_, slow) = named(tcp_id, "etran_tcp_slow")?.ok_or_else(missing)?;
    // The native backend's maps and gen program (present only where they were loaded).
    let app_xsks = named(tcp_id, "etran_app_xsks")?.map(|(_, m)| m);
    let port_queue = named(egress, "etran_port_queu")?.map(|(_, m)| m);
    let xsk_gen_id = loader::prog_sharing(conns_id, TCP_XSK_GEN_PROG);
    let gen_flush = match xsk_gen_id {
        Some(id) => named(id, "etran_tcp_gen_f")?.map(|(_, m)| m),
        None => None,
    };
    let xsk_gen = xsk_gen_id.map(libbpf_rs::Program::fd_from_id).transpose()?;
    Ok(TcpHandles {
        app_ports,
        port_ifindex,
        port_budget,
        app_xsks,
        port_queue,
        egress: libbpf_rs::Program::fd_from_id(egress)?,
        ingress: libbpf_rs::Program::fd_from_id(tcp_id)?,
        conns,
        gen: libbpf_rs::Program::fd_from_id(gen)?,
        rehome: libbpf_rs::Program::fd_from_id(rehome)?,
        xsk_gen,
        ack_queue,
        dack_queue,
        gen_flush,
        gen_wake,
        listen,
        pending,
        slow,
    })
}
