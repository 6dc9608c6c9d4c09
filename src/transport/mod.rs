//! Transports: one room per protocol, each holding everything of it on the user-space side (its
//! BPF sits under `src/bpf/<transport>/`): [`tcp`], and [`homa`] (RPCs within the unscheduled
//! bytes so far).
//!
//! What the rest of the system asks of a transport:
//! - the app library: to read the metadata its ingress program puts in front of every frame it
//!   hands an app ([`RxMeta`]), and an engine that turns frames into the app's data and back
//!   (TCP's is [`tcp::stream::Stream`], one connection; Homa's [`homa::rpc::Endpoint`], one
//!   bound port's RPCs);
//! - the daemon: a control path ([`Control`]) for what the fast path hands up (handshakes,
//!   TIME_WAIT, resets for TCP), driven by the daemon's event loop and timer wheel.
use std::{net::Ipv4Addr, os::fd::RawFd};

use mio::Token;

use crate::{refusal::Refusal, timer::TimerWheel};

pub mod homa;
pub mod tcp;

/// The metadata a transport's ingress program writes in front of each frame it hands an app:
/// plain data (a layout from the transport's BPF headers), every bit pattern valid.
pub trait RxMeta: Sized + Copy {
    /// Bytes it takes in front of the frame.
    const LEN: usize = std::mem::size_of::<Self>();

    /// Reads it from the front of `frame`; `None` when the frame is shorter.
    fn read(frame: &[u8]) -> Option<Self> {
        // SAFETY: plain data, every bit pattern valid, read without alignment from at least
        // LEN bytes.
        (frame.len() >= Self::LEN)
            .then(|| unsafe { std::ptr::read_unaligned(frame.as_ptr().cast::<Self>()) })
    }

    /// Where the payload for the app lies in the frame behind it: (offset, length).
    fn payload(&self) -> (usize, usize);
}

/// What the daemon asks of a transport's control path. Its timers sit on the daemon's wheel
/// (`wrap` makes one of the daemon's timers from one of the transport's); what sessions must
/// be told comes back as [`Control::Notice`]s, which the daemon words for the app.
pub trait Control {
    type Timer;
    type Notice;

    /// Readable when the kernel handed the control path work.
    fn fd(&self) -> RawFd;
    /// Handles that work. Called on every pass of the daemon's loop, readable or not: a
    /// ring buffer's wakeup can be lost.
    fn on_readable<T>(
        &mut self,
        timers: &mut TimerWheel<T>,
        wrap: impl Fn(Self::Timer) -> T,
        out: &mut Vec<Self::Notice>,
    );
    /// One of its timers fired.
    fn on_timeout<T>(
        &mut self,
        timers: &mut TimerWheel<T>,
        wrap: impl Fn(Self::Timer) -> T,
        timer: Self::Timer,
    ) -> Vec<Self::Notice>;
    /// The session `owner` ended: everything it had goes.
    fn teardown<T>(&mut self, timers: &mut TimerWheel<T>, owner: Token);
    /// The daemon stops.
    fn shutdown<T>(&mut self, timers: &mut TimerWheel<T>);
    /// One line of what it did, for the daemon's log when it stops.
    fn report(&self) -> String;
}

/// The Ethernet address of peer `ip` on `iface`, from the kernel's neighbour table: no entry is
/// a clear refusal (`EHOSTUNREACH`), not an ARP probe. This host itself (`iface`'s address,
/// loopback) is refused with `EOPNOTSUPP`: the wire does not bring a frame back to the host that
/// sent it (a switch does not send a frame out where it came in), and no transport hands frames
/// from app to app within a host yet.
pub(crate) fn peer_mac(iface: &str, ip: Ipv4Addr) -> Result<[u8; 6], Refusal> {
    if crate::sys::local_ipv4(iface) == Some(ip) || ip.is_loopback() || ip.is_unspecified() {
        let why = format!(
            "{ip} is this host: eTran carries nothing within a host (the kernel's TCP does; \
             `etran run` sends such connects there)"
        );
        return Err(Refusal::new(libc::EOPNOTSUPP, why));
    }
    crate::sys::neighbour(iface, ip).ok_or_else(|| {
        let why = format!("no neighbour entry for {ip} on {iface} (add one)");
        Refusal::new(libc::EHOSTUNREACH, why)
    })
}
