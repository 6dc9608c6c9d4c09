//! An app's *port* (compat backend): a veth pair in the daemon's network namespace.
//!
//! - `etp<slot>k`, the kernel side: its ifindex sits in the datapath's `app_ports` devmap at
//!   `slot` (the app's identity in BPF); the egress program of the app's transport runs here.
//! - `etp<slot>a`, the app side: `xsk_redirect` is attached (drv-mode XDP), the app's AF_XDP
//!   socket sits in that program's XSKMAP and is bound to its queue 0 by the app.
//!
//! Both ends are up with GRO on (see [`crate::ethtool::set_gro`]; the app side also has its XDP
//! program, which the veth rule asks for), and have the NIC's MTU ([`port_mtu`]): a frame
//! redirected into a veth longer than its peer's MTU is dropped, so what the NIC takes must
//! pass the port, and what egress makes of an app's frame must pass the NIC.
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
use std::{
    ffi::CString,
    fs::File,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::Context;
use libbpf_rs::{libbpf_sys, MapCore, MapFlags, MapHandle, MapType};

use super::PortMaps;
use crate::{
    bpf::{
        homa::types::etran_homa_rx_meta,
        tcp::types::{etran_port_rx, etran_tcp_limit, etran_tcp_rx_meta},
    },
    loader::kernel,
    netlink::Netlink,
    netns::NetNs,
    proto::Transport,
    transport::RxMeta,
    xsk::{frame_size_for, sys, Geometry, XskProgram},
};

/// The Ethernet header, which an MTU leaves out.
const ETH_HLEN: u32 = 14;
/// The largest MTU every kernel's veth carries to XDP (4 KiB pages, any `skb_shared_info`).
const ETH_DATA_LEN: u32 = 1500;
// The RX metadata travels in the headroom the kernel keeps in front of a frame it copies into
// an AF_XDP chunk (copy mode copies `data_meta..data_end`), so a chunk needs no more for it.
const _: () = assert!(<etran_tcp_rx_meta as RxMeta>::LEN <= sys::XDP_PACKET_HEADROOM as usize);
const _: () = assert!(<etran_homa_rx_meta as RxMeta>::LEN <= sys::XDP_PACKET_HEADROOM as usize);
/// Receive frames (fill and RX rings). A frame that finds the fill ring empty is lost after
/// ingress accepted it, so the receive side gets room for bursts of thousands of frames.
pub const RX_RING_SIZE: u32 = 8192;
/// Transmit frames (TX and completion rings).
pub const TX_RING_SIZE: u32 = 4096;
pub const FRAME_COUNT: u32 = RX_RING_SIZE + TX_RING_SIZE;
/// Prefix of every port name; the daemon owns every link named `etp<digits>{k,a}`.
pub const PREFIX: &str = "etp";

/// The MTU of app ports on a NIC of MTU `nic_mtu`: the NIC's, as far as a veth carries it to
/// XDP (the port's programs have no multi-buffer support) and the TCP datapath's longest frame
/// (`ETRAN_TCP_MAX_FRAME`) holds it. The daemon's TCP announces this less 40 as its MSS.
pub fn port_mtu(nic_mtu: u32) -> anyhow::Result<u32> {
    let datapath = etran_tcp_limit::ETRAN_TCP_MAX_FRAME.0 - ETH_HLEN;
    if nic_mtu <= ETH_DATA_LEN {
        return Ok(nic_mtu);
    }
    Ok(nic_mtu.min(datapath).min(kernel::veth_xdp_max_mtu()?))
}

/// The UMEM and rings of a port of MTU `mtu`: chunks that receive a whole frame with the
/// ingress program's metadata in front (see [`frame_size_for`]).
pub fn geometry(mtu: u32) -> anyhow::Result<Geometry> {
    let frame_size =
        frame_size_for(mtu + ETH_HLEN, 0).with_context(|| format!("an app port at MTU {mtu}"))?;
    Ok(Geometry {
        umem_len: u64::from(frame_size) * u64::from(FRAME_COUNT),
        frame_size,
        headroom: 0,
        fill_size: RX_RING_SIZE,
        comp_size: TX_RING_SIZE,
        rx_size: RX_RING_SIZE,
        tx_size: TX_RING_SIZE,
    })
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
            1,
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
            nl.set_mtu(idx, mtu)?;
            nl.set_up(idx)?;
            crate::ethtool::set_gro(name, true)?;
        }
        let budget = rx_budget_map().context("creating the port's receive budget")?;
        let mut prog = XskProgram::load_for_port(budget.as_fd())?;
        prog.attach_port_redirect(self.app_ifindex)?;
        self.prog = Some(prog);
        self.rx_budget = Some(budget);

        let (xsk, umem) = make_socket(&self.geometry)
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
            let slot = self.slot.to_ne_bytes();
            // A missing devmap entry is fine (the build may have stopped before inserting it).
            let _ = maps.app_ports.delete(&slot);
            let _ = maps.port_budget.delete(&slot);
            if let Err(e) = maps.port_ifindex.update(&slot, &0u32.to_ne_bytes(), MapFlags::ANY) {
                crate::log::warn(format!("clearing port_ifindex slot {}: {e}", self.slot));
            }
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

/// A port's receive budget: a one-entry array of `struct etran_port_rx`, all zero (nothing
/// posted yet), that the app can map. Named as `xsk_port_redirect`'s map, which reuses it (the
/// skeleton finds its maps by name).
pub fn rx_budget_map() -> anyhow::Result<MapHandle> {
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as libbpf_sys::size_t,
        map_flags: libbpf_sys::BPF_F_MMAPABLE,
        ..Default::default()
    };
    let value = std::mem::size_of::<etran_port_rx>() as u32;
    Ok(MapHandle::create(MapType::Array, Some("port_rx"), 4, value, 1, &opts)?)
}

/// Creates the memfd UMEM and an AF_XDP socket with it registered and its rings sized, for the
/// app to map and bind.
fn make_socket(g: &Geometry) -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let name = CString::new("etran-umem").expect("no NUL");
    // SAFETY: plain syscall with a valid name.
    let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    let raw = crate::sys::cvt(raw).context("memfd_create")?;
    // SAFETY: raw is a fresh descriptor we own.
    let memfd = unsafe { File::from_raw_fd(raw) };
    memfd.set_len(g.umem_len).context("sizing the UMEM memfd")?;
    let map = memmap2::MmapOptions::new()
        .len(g.umem_len as usize)
        .map_raw(&memfd)
        .context("mapping the UMEM memfd")?;

    // SAFETY: plain socket call.
    let raw = unsafe { libc::socket(sys::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    let raw = crate::sys::cvt(raw).context("creating an AF_XDP socket")?;
    // SAFETY: raw is a fresh descriptor we own.
    let xsk = unsafe { OwnedFd::from_raw_fd(raw) };
    let fd = xsk.as_raw_fd();
    let reg = sys::xdp_umem_reg {
        addr: map.as_ptr() as u64,
        len: g.umem_len,
        chunk_size: g.frame_size,
        headroom: g.headroom,
        flags: 0,
        tx_metadata_len: 0,
    };
    sys::set_opt(fd, sys::XDP_UMEM_REG, &reg).context("registering the UMEM")?;
    sys::set_opt(fd, sys::XDP_UMEM_FILL_RING, &g.fill_size).context("sizing the fill ring")?;
    sys::set_opt(fd, sys::XDP_UMEM_COMPLETION_RING, &g.comp_size)
        .context("sizing the completion ring")?;
    sys::set_opt(fd, sys::XDP_RX_RING, &g.rx_size).context("sizing the RX ring")?;
    sys::set_opt(fd, sys::XDP_TX_RING, &g.tx_size).context("sizing the TX ring")?;
    // The pages stay pinned by the socket's UMEM; the app maps them through the memfd.
    drop(map);
    Ok((xsk, OwnedFd::from(memfd)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_take_the_nics_mtu_as_far_as_xdp_and_the_datapath_carry_it() {
        let max = kernel::veth_xdp_max_mtu().unwrap();
        let datapath = etran_tcp_limit::ETRAN_TCP_MAX_FRAME.0 - ETH_HLEN;
        assert_eq!(port_mtu(1280).unwrap(), 1280);
        assert_eq!(port_mtu(1500).unwrap(), 1500);
        assert_eq!(port_mtu(max).unwrap(), max);
        assert_eq!(port_mtu(9000).unwrap(), max.min(datapath));
    }

    #[test]
    fn chunks_hold_a_whole_frame_behind_the_metadata() {
        assert_eq!(geometry(1500).unwrap().frame_size, 2048);
        let max = etran_tcp_limit::ETRAN_TCP_MAX_FRAME.0 - ETH_HLEN;
        let g = geometry(max).unwrap();
        assert_eq!(g.frame_size, 4096);
        assert_eq!(g.umem_len, 4096 * u64::from(FRAME_COUNT));
        let e = format!("{:#}", geometry(9000).unwrap_err());
        assert!(e.contains("MTU 9000") && e.contains("at most 4096"), "{e}");
    }

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
