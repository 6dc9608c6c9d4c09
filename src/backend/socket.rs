//! What both backends' app sockets share: the UMEM and ring geometry, the MTU apps' frames may
//! reach, the memfd UMEM and AF_XDP socket the daemon makes for an app, and the app's receive
//! budget (`struct etran_port_rx`, see `compat/app_ports.h` and `common/backend.h`).
//!
//! The UMEM: an AF_XDP socket cannot bind without one, and apps hold no CAP_NET_RAW, so the
//! daemon creates it: a memfd of [`FRAME_COUNT`] chunks ([`geometry`]: 2048 bytes, or 4096 when
//! the MTU needs them) mapped shared, registered on the socket (`XDP_UMEM_REG` pins the pages),
//! rings sized. The app receives the socket and the memfd, maps the memfd `MAP_SHARED` (same
//! pages) and the four rings from the socket, and owns them from then on.
use std::{
    ffi::CString,
    fs::File,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use anyhow::Context;
use libbpf_rs::{libbpf_sys, MapCore, MapFlags, MapHandle, MapType};

use crate::{
    bpf::{
        homa::types::etran_homa_rx_meta,
        tcp::types::{etran_port_rx, etran_tcp_limit, etran_tcp_rx_meta, etran_tcp_tx_hdr},
    },
    loader::kernel,
    transport::RxMeta,
    xsk::{frame_size_for, sys, Geometry, Statistics},
};

/// The Ethernet header, which an MTU leaves out.
const ETH_HLEN: u32 = 14;
/// The largest MTU every kernel's veth carries to XDP (4 KiB pages, any `skb_shared_info`).
const ETH_DATA_LEN: u32 = 1500;
/// The RX metadata a transport's ingress puts in front of a frame for its app, the longest:
/// the frame grows by as much at its head on its way to the app.
pub const RX_META_LEN: u32 = {
    let (tcp, homa) = (<etran_tcp_rx_meta as RxMeta>::LEN, <etran_homa_rx_meta as RxMeta>::LEN);
    (if tcp > homa { tcp } else { homa }) as u32
};
/// Receive frames (fill and RX rings). A frame that finds the fill ring empty is lost after
/// ingress accepted it, so the receive side gets room for bursts of thousands of frames.
pub const RX_RING_SIZE: u32 = 8192;
/// Transmit frames (TX and completion rings).
pub const TX_RING_SIZE: u32 = 4096;
pub const FRAME_COUNT: u32 = RX_RING_SIZE + TX_RING_SIZE;

/// The MTU of app sockets on a NIC of MTU `nic_mtu`: the NIC's, as far as a veth carries it to
/// XDP (the programs have no multi-buffer support) and the TCP datapath's longest frame
/// (`ETRAN_TCP_MAX_FRAME`) holds it, with room for the RX metadata ([`RX_META_LEN`]) a
/// received frame carries through a veth. The daemon's TCP announces this less 40 as its MSS.
pub fn port_mtu(nic_mtu: u32) -> anyhow::Result<u32> {
    let datapath = etran_tcp_limit::ETRAN_TCP_MAX_FRAME.0 - ETH_HLEN;
    if nic_mtu <= ETH_DATA_LEN {
        return Ok(nic_mtu);
    }
    Ok(nic_mtu.min(datapath).min(kernel::veth_xdp_max_mtu()? - RX_META_LEN))
}

/// The UMEM and rings of an app socket of MTU `mtu`: chunks that receive a whole frame with the
/// ingress program's metadata in front (see [`frame_size_for`]), and hold a TX frame (the TX
/// header and a full segment's payload) `tx_headroom` bytes into its chunk.
pub fn geometry(mtu: u32, tx_headroom: u32) -> anyhow::Result<Geometry> {
    let frame_size = frame_size_for(mtu + ETH_HLEN + RX_META_LEN, 0)
        .with_context(|| format!("an app port at MTU {mtu}"))?;
    let tx_frame = std::mem::size_of::<etran_tcp_tx_hdr>() as u32 + mtu - 40;
    if tx_headroom + tx_frame > frame_size {
        anyhow::bail!(
            "a {tx_frame}-byte TX frame behind {tx_headroom} bytes of headroom does not fit a \
             {frame_size}-byte UMEM chunk (MTU {mtu})"
        );
    }
    Ok(Geometry {
        umem_len: u64::from(frame_size) * u64::from(FRAME_COUNT),
        frame_size,
        headroom: 0,
        tx_headroom,
        fill_size: RX_RING_SIZE,
        comp_size: TX_RING_SIZE,
        rx_size: RX_RING_SIZE,
        tx_size: TX_RING_SIZE,
    })
}

/// Warns when the app socket `xsk` (of port `name`, going away) dropped frames: they are lost
/// with it, and are what tells a frame lost on its way into the app from one the app lost.
pub fn log_drops(name: &str, xsk: BorrowedFd<'_>) {
    if let Some(st) = Statistics::of(xsk).ok().filter(|s| s.rx_drops() > 0) {
        crate::log::warn(format!(
            "app port {name}: its AF_XDP socket dropped {} frames ingress had accepted (RX ring \
             full {}, no frame to copy into or too long {})",
            st.rx_drops(),
            st.rx_ring_full,
            st.rx_dropped
        ));
    }
}

/// Empties `slot` in a backend's slot maps: where ingress hands the app its frames (`to_app`, a
/// devmap or XSKMAP: an absent entry is fine), its receive budget, and what egress knows the app
/// by (`identity`, an array: zeroed). Best effort; a failure to clear the identity is logged.
pub fn clear_slot(to_app: &MapHandle, budget: &MapHandle, identity: &MapHandle, slot: u32) {
    let key = slot.to_ne_bytes();
    let _ = to_app.delete(&key);
    let _ = budget.delete(&key);
    if let Err(e) = identity.update(&key, &0u32.to_ne_bytes(), MapFlags::ANY) {
        crate::log::warn(format!(
            "clearing slot {slot} of {}: {e}",
            identity.name().to_string_lossy()
        ));
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
/// app to map (and bind, unless the daemon binds it).
pub fn make_socket(g: &Geometry) -> anyhow::Result<(OwnedFd, OwnedFd)> {
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
        assert_eq!(port_mtu(max).unwrap(), (max - RX_META_LEN).min(datapath));
        assert_eq!(port_mtu(9000).unwrap(), (max - RX_META_LEN).min(datapath));
    }

    #[test]
    fn chunks_hold_a_whole_frame_behind_the_metadata() {
        assert_eq!(geometry(1500, 0).unwrap().frame_size, 2048);
        let max = etran_tcp_limit::ETRAN_TCP_MAX_FRAME.0 - ETH_HLEN;
        let g = geometry(max, 0).unwrap();
        assert_eq!(g.frame_size, 4096);
        assert_eq!(g.umem_len, 4096 * u64::from(FRAME_COUNT));
        let e = format!("{:#}", geometry(9000, 0).unwrap_err());
        assert!(e.contains("MTU 9000") && e.contains("at most 4096"), "{e}");
    }

    /// The native backend's TX headroom leaves room for a whole segment at every MTU a port
    /// may have; more headroom than the chunk has left is refused.
    #[test]
    fn tx_frames_fit_behind_their_headroom() {
        for mtu in [1280, 1500, etran_tcp_limit::ETRAN_TCP_MAX_FRAME.0 - ETH_HLEN] {
            let g = geometry(mtu, 256).unwrap();
            assert_eq!(g.tx_headroom, 256);
        }
        let e = format!("{:#}", geometry(1500, 600).unwrap_err());
        assert!(e.contains("does not fit") && e.contains("MTU 1500"), "{e}");
    }
}
