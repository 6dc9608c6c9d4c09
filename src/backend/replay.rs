//! How the TCP slow path's held segments go through ingress again once their connection is in
//! the fast path ([`crate::transport::tcp::control::Replay`]), as if they arrived from the NIC
//! now.
//!
//! - compat ([`ReplayPort`]): a veth pair of the daemon's ([`DaemonPair`]) with TCP ingress
//!   attached to its far side; a frame sent into it (AF_PACKET) meets ingress there, which hands
//!   it to the app's port as it would from the NIC. Kernels may refuse `BPF_PROG_RUN` with live
//!   frames (this one, 6.18.44, answers EPERM), so compat does without it.
//! - native ([`LiveFrames`]): the app's AF_XDP socket is bound to the NIC and takes no frame
//!   received on another device, so ingress runs over the frame with `BPF_PROG_RUN` in
//!   live-frames mode on the NIC's receive queue (≈ 15 µs a call).
use std::{
    io,
    os::fd::{AsFd, AsRawFd, OwnedFd},
};

use anyhow::Context;

use super::daemon_pair::DaemonPair;
use crate::{packet::PacketSocket, transport::tcp::control::Replay};

/// Compat's replay: AF_PACKET into `name`, TCP ingress on `name`p.
pub struct ReplayPort {
    // Declared before the pair: the socket goes before its device.
    packet: PacketSocket,
    _pair: DaemonPair,
}

impl ReplayPort {
    /// Creates the pair `name`/`name`p with the TCP ingress program `ingress` on its far side.
    pub fn open(name: &str, ingress: &OwnedFd) -> anyhow::Result<ReplayPort> {
        let pair = DaemonPair::open(name, ingress.as_raw_fd(), "etran_tcp_ingress")
            .with_context(|| format!("creating the replay port {name}"))?;
        let packet = PacketSocket::open(name)?;
        Ok(ReplayPort { packet, _pair: pair })
    }
}

impl Replay for ReplayPort {
    fn replay(&self, frame: &[u8]) -> io::Result<()> {
        self.packet.send(frame)
    }
}

/// Native's replay: TCP ingress run over the frame as received on the NIC's first queue.
pub struct LiveFrames {
    ingress: OwnedFd,
    nic_ifindex: u32,
}

impl LiveFrames {
    pub fn new(ingress: &OwnedFd, nic_ifindex: u32) -> anyhow::Result<LiveFrames> {
        let ingress = ingress.try_clone().context("duplicating the ingress program descriptor")?;
        Ok(LiveFrames { ingress, nic_ifindex })
    }
}

impl Replay for LiveFrames {
    fn replay(&self, frame: &[u8]) -> io::Result<()> {
        crate::xsk::run_live_frames(self.ingress.as_fd(), frame, self.nic_ifindex, 1)
    }
}
