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
use std::os::fd::RawFd;

use mio::Token;

use crate::timer::TimerWheel;

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
