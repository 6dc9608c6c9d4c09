//! TCP small queues, as Linux's TSQ (`tcp_small_queue_check`): how much a connection paced
//! through the packet queue may have handed to the kernel and not yet seen completed.
//!
//! Paced (native, `etran up --pacing auto`), egress keeps each segment due later in the app
//! socket's packet queue (patches/0008, `tcp_pace.h`), which holds [`PACKET_QUEUE_FRAMES`]
//! frames; one that finds it full is sent at once (`tcp_tx_pace_refused`) and may overtake the
//! connection's queued segments, which the peer takes for a loss. Linux keeps a flow's queue
//! below it short instead: a flow may have about max(2 segments, 1 ms at its pacing rate) in
//! the qdisc and driver, and the rest waits in the socket until completions come back. So does
//! the app here: a frame egress queues completes only when the kernel releases it (the
//! completion ring gives its chunk back), so the bytes a connection handed over and has not
//! seen completed bound what it has waiting there. A connection sends while it has less than
//! its [`room`] uncompleted, and the app as a whole while fewer than [`SOCKET_FRAMES`] of its
//! frames are ([`SmallQueues::may_send`]): the queue never fills, whatever the number of
//! connections. Only paced apps count (`Registered { paced }`): unpaced, a frame completes as
//! soon as it left and there is no queue to keep short.
//!
//! The app does not know the kernel's pacing rate (cwnd / srtt, times 1.2 to 2), but it knows
//! the send window (`send_wnd`: the peer's window and the congestion window, the less) and its
//! own smoothed RTT: send_wnd / srtt is the rate without the factor, so the room errs short.
use std::{collections::HashMap, time::Duration};

/// Frames one socket's packet queue holds (patches/0008's `XSK_PKTQ_MAX`): a frame egress
/// queues beyond them is refused.
pub const PACKET_QUEUE_FRAMES: u32 = 256;
/// Frames an app may have uncompleted at once, over all its connections: the queue's size, less
/// room for FINs and for frames handed over between two checks.
pub const SOCKET_FRAMES: u32 = PACKET_QUEUE_FRAMES - 32;
const _: () = assert!(SOCKET_FRAMES < PACKET_QUEUE_FRAMES);
/// The least a connection may have uncompleted, in segments: Linux's 2, and 2 more since the
/// app sees completions only at its next pass (an ACK's arrival), not when they happen.
pub const MIN_SEGMENTS: u32 = 4;
/// The time at the connection's rate its room holds (Linux: about 1 ms).
pub const WINDOW: Duration = Duration::from_millis(1);

/// The bytes a connection of `mss` with send window `send_wnd` and smoothed RTT `srtt` may
/// have uncompleted: [`WINDOW`] at send_wnd / srtt, at least [`MIN_SEGMENTS`] segments (all of
/// that before the first RTT sample).
pub fn room(mss: u16, send_wnd: u32, srtt: Option<Duration>) -> u32 {
    let least = MIN_SEGMENTS * u32::from(mss);
    let Some(srtt) = srtt.filter(|d| !d.is_zero()) else { return least };
    let at_rate = u128::from(send_wnd) * WINDOW.as_nanos() / srtt.as_nanos();
    least.max(at_rate.min(u128::from(u32::MAX)) as u32)
}

/// A connection's frames handed over and not completed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Queued {
    bytes: u32,
    frames: u32,
}

/// What an app's connections have handed over and not seen completed, by connection handle.
#[derive(Debug, Default)]
pub struct SmallQueues {
    conns: HashMap<u64, Queued>,
    /// Every connection's frames together (the removed ones' too, until they complete).
    frames: u32,
}

impl SmallQueues {
    /// Whether connection `handle` may hand over another frame while its room is `room` bytes.
    pub fn may_send(&self, handle: u64, room: u32) -> bool {
        self.frames < SOCKET_FRAMES && self.conns.get(&handle).is_none_or(|q| q.bytes < room)
    }

    /// Connection `handle` handed over a frame of `bytes` payload bytes.
    pub fn handed(&mut self, handle: u64, bytes: u32) {
        let q = self.conns.entry(handle).or_default();
        q.bytes += bytes;
        q.frames += 1;
        self.frames += 1;
    }

    /// A frame of `bytes` that connection `handle` handed over completed.
    pub fn completed(&mut self, handle: u64, bytes: u32) {
        self.frames = self.frames.saturating_sub(1);
        if let Some(q) = self.conns.get_mut(&handle) {
            q.bytes = q.bytes.saturating_sub(bytes);
            q.frames = q.frames.saturating_sub(1);
            if q.frames == 0 {
                self.conns.remove(&handle);
            }
        }
    }

    /// Bytes connection `handle` has uncompleted.
    pub fn bytes(&self, handle: u64) -> u32 {
        self.conns.get(&handle).map_or(0, |q| q.bytes)
    }

    /// Frames the app has uncompleted.
    pub fn frames(&self) -> u32 {
        self.frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u16 = 1000;

    #[test]
    fn the_room_is_a_millisecond_at_the_rate_and_never_under_four_segments() {
        assert_eq!(room(MSS, 1 << 20, None), 4000, "no RTT sample yet");
        // 1 MB per 10 ms: 100 KB in a millisecond.
        assert_eq!(room(MSS, 1_000_000, Some(Duration::from_millis(10))), 100_000);
        // A small window over a long RTT: the floor.
        assert_eq!(room(MSS, 20_000, Some(Duration::from_millis(50))), 4000);
        // A sub-millisecond RTT: more than the window, which bounds the sender anyway.
        assert_eq!(room(MSS, 64_000, Some(Duration::from_micros(100))), 640_000);
        assert_eq!(room(MSS, 64_000, Some(Duration::ZERO)), 4000);
    }

    #[test]
    fn a_connection_waits_while_its_room_is_used_and_goes_on_as_frames_complete() {
        let mut q = SmallQueues::default();
        let room = 3000;
        for _ in 0..3 {
            assert!(q.may_send(7, room));
            q.handed(7, 1000);
        }
        assert!(!q.may_send(7, room), "3000 bytes uncompleted");
        assert!(q.may_send(8, room), "another connection has its own room");
        q.completed(7, 1000);
        assert_eq!(q.bytes(7), 2000);
        assert!(q.may_send(7, room));
        q.completed(7, 1000);
        q.completed(7, 1000);
        assert_eq!((q.bytes(7), q.frames()), (0, 0));
        assert!(q.conns.is_empty(), "nothing kept for a connection with nothing queued");
    }

    #[test]
    fn the_app_as_a_whole_never_fills_the_packet_queue() {
        let mut q = SmallQueues::default();
        // Many connections, each within its own room: the socket's limit stops them all.
        let mut handle = 0;
        while q.may_send(handle, 4000) {
            q.handed(handle, 1000);
            handle += 1;
        }
        assert_eq!(q.frames(), SOCKET_FRAMES);
        assert!(!q.may_send(handle + 1, u32::MAX));
        q.completed(0, 1000);
        assert!(q.may_send(handle + 1, 4000));
    }

    #[test]
    fn a_fin_counts_as_a_frame_of_no_bytes() {
        let mut q = SmallQueues::default();
        q.handed(1, 1000);
        q.handed(1, 0); // its FIN
        assert_eq!(q.frames(), 2);
        q.completed(1, 1000);
        q.completed(1, 0);
        assert_eq!((q.frames(), q.bytes(1)), (0, 0));
    }
}
