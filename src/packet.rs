//! AF_PACKET: whole Ethernet frames sent out of one interface, as they are. The TCP slow path
//! sends its handshake and reset segments through one bound to the NIC; the compat backend's
//! replay port takes held segments through one ([`crate::backend::replay`]).
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::Context;

/// A send-only AF_PACKET socket for frames out of one interface.
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    /// Opens one for the interface `iface` of the caller's network namespace.
    pub fn open(iface: &str) -> anyhow::Result<PacketSocket> {
        let ifindex = crate::sys::ifindex(iface)? as i32;
        // Protocol 0: this socket only sends, it receives nothing.
        // SAFETY: plain socket call; the fd is owned right after.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        crate::sys::cvt(fd).with_context(|| format!("opening an AF_PACKET socket for {iface}"))?;
        // SAFETY: fd is a fresh descriptor we own.
        Ok(PacketSocket { fd: unsafe { OwnedFd::from_raw_fd(fd) }, ifindex })
    }

    /// Sends `frame` (Ethernet header included) out of the interface, its destination MAC the
    /// frame's own.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        if let Some(dst) = frame.get(..6) {
            sll.sll_addr[..6].copy_from_slice(dst);
        }
        // SAFETY: frame and sll outlive the call.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        crate::sys::cvt(n).map(drop)
    }
}
