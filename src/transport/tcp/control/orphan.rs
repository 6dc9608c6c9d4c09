//! Closing a connection no process holds any more (its last holders killed with the socket
//! open, its stream parked here): as the kernel closes a socket when its last descriptor goes,
//! with a FIN when every byte received was read, a RST otherwise (`tcp_close`).
//!
//! The FIN goes at the fast path's `snd_nxt` (after the bytes the owner sent), from the slow
//! path, and the 4-tuple waits as in TIME_WAIT (its segments come here): the FIN is sent again
//! with a doubling timeout until acknowledged ([`FIN_TRIES`] times, then a RST), the peer's FIN
//! is acknowledged, and data the peer still sends gets a RST (as Linux answers data for a
//! socket nobody can read). The daemon sends no payload: a stream that still had bytes
//! written and never sent is reset instead, and bytes in flight that the network lost are
//! never acknowledged, so the FIN's retries end in a RST too.
use std::{
    os::fd::{AsFd, OwnedFd},
    time::{Duration, Instant},
};

use super::{map_key, SlowPath, SlowTimer, TcpHandles, TimeWait};
use crate::{
    bpf::tcp::types::tcp_conn_fin,
    log,
    timer::TimerWheel,
    transport::tcp::{
        close,
        rehome::{rehome, MOVING},
        segment::{FlowKey, Segment, ACK, FIN, RST},
        seq::after,
        stream::{read_memfd, Handover, Resume},
    },
};

/// The first wait for the FIN's acknowledgement (Linux's minimum RTO), doubled at each resend.
const FIN_RTO: Duration = Duration::from_millis(200);
/// Resends of the FIN before the connection is reset (about 12 s in all).
pub(super) const FIN_TRIES: u32 = 6;

/// Why a parked stream cannot end with a FIN, if it cannot.
fn reset_because(h: &Handover, unacked: usize, at: &Resume) -> Option<&'static str> {
    let readable_end = h.read_pos.wrapping_add(h.readable);
    if h.readable > 0 || after(at.rx_pos, readable_end) {
        Some("bytes received were never read")
    } else if h.error.is_some()
        || !matches!(h.close, close::State::Established | close::State::CloseWait)
    {
        Some("it had failed or closed")
    } else if at.tx_pos.wrapping_sub(h.snd_una) < h.unacked || unacked != h.unacked as usize {
        Some("bytes written were never sent")
    } else {
        None
    }
}

impl SlowPath {
    /// Closes shared connection `handle`, whose stream was parked (`parked`) and which no
    /// process holds any more (see the module doc).
    pub(super) fn close_orphan<T>(
        &mut self,
        tcp: &TcpHandles,
        timers: &mut TimerWheel<T>,
        wrap: &impl Fn(SlowTimer) -> T,
        handle: u64,
        parked: OwnedFd,
    ) {
        let Some(key) = self.handles.get(&handle).copied() else { return };
        let at = rehome(tcp.rehome.as_fd(), &map_key(&key), MOVING).ok().flatten();
        let bytes = read_memfd(parked).unwrap_or_default();
        let why = match (&at, Handover::read(&bytes)) {
            (Some(at), Ok((h, body))) => reset_because(&h, body.len() - h.readable as usize, at),
            _ => Some("its stream is unreadable"),
        };
        if let Some(why) = why {
            log::info(format!(
                "shared connection {} ← {} reset (handle {handle}): {why}",
                key.0, key.1
            ));
            self.abort_conn(tcp, &key);
            return;
        }
        let peer_fin = at.is_some_and(|a| a.fin & tcp_conn_fin::TCP_CONN_FIN_RCVD.0 != 0);
        let Some((c, snd_nxt, rcv_nxt, window, _)) = self.take_conn(tcp, &key, true) else {
            return;
        };
        log::info(format!(
            "shared connection {} ← {} closed with a FIN: no process holds it (handle {handle})",
            key.0, key.1
        ));
        self.send(&c.est.fin(snd_nxt, rcv_nxt, window));
        let timer = timers.insert(Instant::now() + FIN_RTO, wrap(SlowTimer::TimeWait(key)));
        let tw = TimeWait {
            est: c.est,
            snd_nxt: snd_nxt.wrapping_add(1),
            rcv_nxt,
            window,
            timer,
            fin_resent: Some(0),
            peer_fin,
        };
        self.time_wait.insert(key, tw);
    }

    /// The timer of a 4-tuple in TIME_WAIT fired: true when it was waiting for the
    /// acknowledgement of our FIN and sent it again (or reset the connection: false).
    pub(super) fn resend_fin<T>(
        &mut self,
        timers: &mut TimerWheel<T>,
        wrap: &impl Fn(SlowTimer) -> T,
        key: &FlowKey,
    ) -> bool {
        let Some(tw) = self.time_wait.get_mut(key) else { return false };
        let Some(n) = tw.fin_resent.filter(|&n| n < FIN_TRIES) else {
            if tw.fin_resent.is_some() {
                log::info(format!("closing {} ← {}: the FIN was never acknowledged", key.0, key.1));
                let rst = tw.est.abort(tw.snd_nxt, tw.rcv_nxt);
                self.send(&rst);
            }
            return false;
        };
        tw.fin_resent = Some(n + 1);
        let fin = tw.est.fin(tw.snd_nxt.wrapping_sub(1), tw.rcv_nxt, tw.window);
        tw.timer = timers
            .insert(Instant::now() + FIN_RTO * 2u32.pow(n + 1), wrap(SlowTimer::TimeWait(*key)));
        self.send(&fin);
        true
    }

    /// A segment for a 4-tuple the daemon is closing (`close_orphan`) before TIME_WAIT proper:
    /// true when handled here.
    pub(super) fn on_orphan_segment<T>(
        &mut self,
        tcp: &TcpHandles,
        timers: &mut TimerWheel<T>,
        wrap: &impl Fn(SlowTimer) -> T,
        key: &FlowKey,
        seg: &Segment,
    ) -> bool {
        let tw = self.time_wait.get_mut(key).expect("in TIME_WAIT");
        if tw.fin_resent.is_none() && tw.peer_fin {
            return false;
        }
        if seg.has(RST) {
            self.end_time_wait(tcp, timers, key);
            return true;
        }
        let mut restart = false;
        if tw.fin_resent.is_some() && seg.has(ACK) && seg.ack == tw.snd_nxt {
            tw.fin_resent = None;
            restart = true;
        }
        if !tw.peer_fin {
            let end = seg.seq.wrapping_add(seg.payload.len() as u32);
            if !seg.payload.is_empty() && after(end, tw.rcv_nxt) {
                // Data nobody will read.
                let rst = tw.est.abort(tw.snd_nxt, tw.rcv_nxt);
                self.send(&rst);
                self.end_time_wait(tcp, timers, key);
                return true;
            }
            if seg.has(FIN) && end == tw.rcv_nxt {
                tw.rcv_nxt = tw.rcv_nxt.wrapping_add(1);
                tw.peer_fin = true;
                restart |= tw.fin_resent.is_none();
                let ack = tw.est.ack(tw.snd_nxt, tw.rcv_nxt, tw.window);
                self.send(&ack);
            }
        }
        if restart {
            self.restart_time_wait(timers, wrap, key);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tcp::stream::{Stream, StreamInit};

    fn parked(write: &[u8], read_all: bool) -> (Handover, usize) {
        let init = StreamInit {
            key: Default::default(),
            rx_pos: 100,
            tx_pos: 500,
            send_wnd: 1 << 20,
            mss: 1000,
            sack: true,
            snd_seq: 7,
            rcv_buf: 8192,
            rcv_wscale: 0,
            snd_buf: 16384,
        };
        let mut bytes = Stream::lost_owner(init, 0);
        if !write.is_empty() || !read_all {
            let at = Resume { rx_pos: 100, tx_pos: 500, una_pos: 500, ..Default::default() };
            let mut s = Stream::resume(&bytes, &at, Default::default()).unwrap();
            s.write(write);
            if !read_all {
                let meta = crate::bpf::tcp::types::etran_tcp_rx_meta {
                    rx_pos: 100,
                    una_pos: 500,
                    payload_len: 3,
                    send_wnd: 1 << 20,
                    ..Default::default()
                };
                s.on_rx(&meta, b"abc");
            }
            bytes = s.hand_over();
        }
        let (h, body) = Handover::read(&bytes).unwrap();
        let unacked = body.len() - h.readable as usize;
        (h, unacked)
    }

    #[test]
    fn a_fin_unless_bytes_were_unread_or_never_sent() {
        let at = Resume { rx_pos: 100, tx_pos: 500, una_pos: 500, ..Default::default() };
        let (h, n) = parked(b"", true);
        assert_eq!(reset_because(&h, n, &at), None);
        let (h, n) = parked(b"", false);
        assert_eq!(reset_because(&h, n, &at), Some("bytes received were never read"));
        let (h, n) = parked(b"xyz", true);
        assert_eq!(reset_because(&h, n, &at), Some("bytes written were never sent"));
        // Sent (egress took them), not yet acknowledged: the FIN follows them.
        let sent = Resume { tx_pos: 503, ..at };
        assert_eq!(reset_because(&h, n, &sent), None);
        // Received by the kernel, never by the parked stream.
        let (h, n) = parked(b"", true);
        let more = Resume { rx_pos: 110, ..at };
        assert_eq!(reset_because(&h, n, &more), Some("bytes received were never read"));
    }
}
