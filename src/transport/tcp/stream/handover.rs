//! Moving a live connection's stream between apps (a forked child adopting a connection its
//! parent accepted, and back): [`Stream::hand_over`] writes out what the kernel does not keep —
//! the bytes received and not read, the bytes written and not acknowledged, the positions,
//! the close state — and [`Stream::resume`] rebuilds the stream in the new owner from it and
//! from where the kernel's state stands once the connection is the new owner's ([`Resume`],
//! what `etran_tcp_rehome` reads under the connection's lock).
//!
//! The kernel's positions win where the two differ, since segments of a moving connection
//! are dropped (`tcp_moving`) and frames were on their way when the move began:
//! - acknowledged bytes the old owner had not heard of (a kept ACK, a frame it never read) are
//!   freed;
//! - bytes it framed that egress never took (dropped while moving) are unsent again, and the
//!   bytes egress took count as sent now, so the retransmission timer covers them;
//! - the receive window the kernel holds may lack consumption reports of frames dropped while
//!   moving: what the old owner read and the kernel was not told of is reported again;
//! - the out-of-order intervals are gone (the kernel reneged on them when the move began:
//!   frames of them could be missing here), so the peer resends them;
//! - received bytes the kernel acknowledged and the old owner never got leave a hole nobody
//!   fills: the stream fails with `ConnectionAborted`, as for a frame its port lost.
//!
//! Wire form: a 4-byte little-endian length, the [`Handover`] header as JSON, then the bytes
//! received and unread, then the bytes written and unacknowledged.
use std::{
    collections::VecDeque,
    io::{self, Read, Seek, Write},
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{dist, Stream, StreamInit, StreamStats};
use crate::{
    bpf::tcp::types::{tcp_conn_fin, tcp_conn_key},
    transport::tcp::{
        close::{self, Event},
        rto::RtoConfig,
    },
};

/// What a stream hands over besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    pub local_ip: u32,
    pub remote_ip: u32,
    pub local_port: u16,
    pub remote_port: u16,
    pub mss: u16,
    pub rcv_buf: u32,
    pub adv: u32,
    pub read_pos: u32,
    /// Bytes received and unread (from `read_pos`), which follow the header.
    pub readable: u32,
    pub fin: bool,
    pub snd_cap: u32,
    pub snd_una: u32,
    pub snd_nxt: u32,
    /// Bytes written and unacknowledged (from `snd_una`), which follow the received ones.
    pub unacked: u32,
    pub send_wnd: u32,
    pub sack: bool,
    pub seq_base: u32,
    pub nodelay: bool,
    pub close: close::State,
    pub fin_sent: bool,
    /// The failure the stream reports, if any (`errno`).
    pub error: Option<i32>,
    /// The smoothed round-trip time (ns), once sampled: the new owner's timers start from it.
    pub srtt_ns: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub retransmitted: u64,
    /// Bytes before this position are not known (see [`Stream::lost_owner`]): resending one
    /// fails the stream.
    #[serde(default)]
    pub unknown_end: Option<u32>,
}

/// Where the kernel's state of the connection stands when it becomes the new owner's (read by
/// `etran_tcp_rehome` under the connection's lock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// Stream positions of rcv_nxt, snd_nxt and snd_una.
    pub rx_pos: u32,
    pub tx_pos: u32,
    pub una_pos: u32,
    /// What new data may fill from snd_una.
    pub send_wnd: u32,
    /// The receive window the kernel holds.
    pub rcv_wnd: u32,
    /// `enum tcp_conn_fin`.
    pub fin: u32,
}

fn errno_of(kind: io::ErrorKind) -> i32 {
    match kind {
        io::ErrorKind::ConnectionReset => libc::ECONNRESET,
        io::ErrorKind::TimedOut => libc::ETIMEDOUT,
        _ => libc::ECONNABORTED,
    }
}

fn kind_of(errno: i32) -> io::ErrorKind {
    io::Error::from_raw_os_error(errno).kind()
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("a stream handed over: {what}"))
}

impl Handover {
    /// The header of a stream [`Stream::hand_over`] wrote, and the bytes that follow it.
    pub fn read(bytes: &[u8]) -> io::Result<(Handover, &[u8])> {
        let head_len = bytes
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| malformed("no header"))?;
        let head = bytes.get(4..4 + head_len).ok_or_else(|| malformed("header cut"))?;
        let h: Handover = serde_json::from_slice(head).map_err(|e| malformed(&e.to_string()))?;
        Ok((h, &bytes[4 + head_len..]))
    }
}

/// A memfd holding `bytes` (a stream on its way between apps, or parked at the daemon).
pub fn memfd(bytes: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated name; the descriptor is owned right after.
    let fd = unsafe { libc::memfd_create(c"etran-stream".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    file.write_all(bytes)?;
    Ok(file.into())
}

/// The bytes of the memfd `fd` holds (from its start).
pub fn read_memfd(fd: OwnedFd) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut file = std::fs::File::from(fd);
    file.seek(io::SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

impl Stream {
    /// The stream's state and bytes, for [`Stream::resume`] in another app.
    pub fn hand_over(&self) -> Vec<u8> {
        let readable = self.readable();
        let h = Handover {
            local_ip: self.key.local_ip,
            remote_ip: self.key.remote_ip,
            local_port: self.key.local_port,
            remote_port: self.key.remote_port,
            mss: self.mss,
            rcv_buf: self.rbuf.len() as u32,
            adv: self.adv,
            read_pos: self.read_pos,
            readable: readable as u32,
            fin: self.fin,
            snd_cap: self.snd_cap as u32,
            snd_una: self.snd_una,
            snd_nxt: self.snd_nxt,
            unacked: self.sbuf.len() as u32,
            send_wnd: self.send_wnd,
            sack: self.sack,
            seq_base: self.seq_base,
            nodelay: self.nodelay,
            close: self.close,
            fin_sent: self.fin_sent,
            error: self.error.map(errno_of),
            srtt_ns: self.rto.srtt().map(|d| d.as_nanos() as u64),
            rx_bytes: self.stats.rx_bytes,
            tx_bytes: self.stats.tx_bytes,
            retransmitted: self.stats.retransmitted,
            unknown_end: self.unknown_end,
        };
        let head = serde_json::to_vec(&h).expect("a handover always serializes");
        let mut out = Vec::with_capacity(4 + head.len() + readable + self.sbuf.len());
        out.extend_from_slice(&(head.len() as u32).to_le_bytes());
        out.extend_from_slice(&head);
        let cap = self.rbuf.len();
        let first = readable.min(cap - self.head);
        out.extend_from_slice(&self.rbuf[self.head..self.head + first]);
        out.extend_from_slice(&self.rbuf[..readable - first]);
        let (a, b) = self.sbuf.as_slices();
        out.extend_from_slice(a);
        out.extend_from_slice(b);
        out
    }

    /// The stream [`Stream::hand_over`] wrote, in its new owner, where the kernel's state
    /// stands (`at`; see the module doc), with that owner's retransmission settings.
    pub fn resume(bytes: &[u8], at: &Resume, rto: RtoConfig) -> io::Result<Stream> {
        Stream::resume_at(bytes, at, rto, Instant::now())
    }

    /// The stream of a process that died holding it, rebuilt from what the kernel keeps
    /// (`init`: its positions now, nothing readable): the `in_flight` bytes from
    /// `init.tx_pos` the dead owner had sent are unknown (zeros here), so the stream fails
    /// if one of them must be sent again; if the peer acknowledges them, nothing was lost.
    /// Returns the stream as [`Stream::hand_over`] writes it.
    pub fn lost_owner(init: StreamInit, in_flight: u32) -> Vec<u8> {
        let mut s = Stream::new(init);
        s.sbuf.extend(std::iter::repeat_n(0, in_flight as usize));
        s.snd_nxt = s.snd_una.wrapping_add(in_flight);
        s.unknown_end = (in_flight > 0).then_some(s.snd_nxt);
        s.hand_over()
    }

    fn resume_at(bytes: &[u8], at: &Resume, rto: RtoConfig, now: Instant) -> io::Result<Stream> {
        let (h, body) = Handover::read(bytes)?;
        let (readable, unacked) = (h.readable as usize, h.unacked as usize);
        if body.len() != readable + unacked
            || h.rcv_buf == 0
            || readable > h.rcv_buf as usize
            || unacked > h.snd_cap as usize
            || dist(h.snd_nxt, h.snd_una) as usize > unacked
        {
            return Err(malformed("lengths disagree"));
        }
        let init = StreamInit {
            key: tcp_conn_key {
                local_ip: h.local_ip,
                remote_ip: h.remote_ip,
                local_port: h.local_port,
                remote_port: h.remote_port,
            },
            rx_pos: h.read_pos,
            tx_pos: h.snd_una,
            send_wnd: at.send_wnd,
            mss: h.mss,
            sack: h.sack,
            snd_seq: h.seq_base.wrapping_add(h.snd_una),
            rcv_buf: h.rcv_buf,
            rcv_wscale: 0,
            snd_buf: h.snd_cap,
        };
        let mut s = Stream::with_rto(init, rto);
        s.adv = h.adv;
        s.rbuf[..readable].copy_from_slice(&body[..readable]);
        s.rcv_end = h.read_pos.wrapping_add(h.readable);
        s.kernel_end = s.rcv_end;
        s.fin = h.fin;
        s.sbuf = VecDeque::from(body[readable..].to_vec());
        s.sbuf.reserve(h.snd_cap as usize - unacked);
        s.nodelay = h.nodelay;
        s.unknown_end = h.unknown_end;
        s.close = h.close;
        s.error = h.error.map(kind_of);
        s.stats = StreamStats {
            rx_bytes: h.rx_bytes,
            tx_bytes: h.tx_bytes,
            retransmitted: h.retransmitted,
            ..StreamStats::default()
        };
        if let Some(us) = h.srtt_ns {
            s.rto.on_sample(Duration::from_nanos(us));
        }
        // The send side: acknowledged bytes freed, what egress never took unsent again.
        let acked = dist(at.una_pos, h.snd_una);
        let framed = dist(h.snd_nxt, h.snd_una);
        let una = if acked <= framed { at.una_pos } else { h.snd_una };
        s.sbuf.drain(..dist(una, h.snd_una) as usize);
        s.snd_una = una;
        let taken = dist(at.tx_pos, una);
        s.snd_nxt = if taken <= dist(h.snd_nxt, una) { at.tx_pos } else { h.snd_nxt };
        if s.snd_nxt != una {
            s.board.sent(una, s.snd_nxt, now);
        }
        s.fin_sent = at.fin & tcp_conn_fin::TCP_CONN_FIN_SENT.0 != 0 && s.close.fin_queued();
        // The receive side: a FIN the old owner never got; bytes it never got (a hole).
        let held = dist(s.rcv_end, h.read_pos);
        let kernel_held = dist(at.rx_pos, h.read_pos);
        if kernel_held > held && s.error.is_none() {
            s.fail(io::ErrorKind::ConnectionAborted);
            s.stats.rx_holes += 1;
        } else if at.fin & tcp_conn_fin::TCP_CONN_FIN_RCVD.0 != 0 && !s.fin {
            s.fin = true;
            s.close = s.close.on(Event::PeerFin);
        }
        // What was read and never reported reaches the kernel with the next frame.
        let free = h.rcv_buf.saturating_sub(kernel_held.min(held));
        s.reported = s.read_pos.wrapping_sub(free.saturating_sub(at.rcv_wnd));
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{bpf::tcp::types::etran_tcp_rx_meta, transport::tcp::stream::TimerEvent};

    fn init() -> StreamInit {
        StreamInit {
            key: tcp_conn_key { local_ip: 1, remote_ip: 2, local_port: 3, remote_port: 4 },
            rx_pos: 1000,
            tx_pos: u32::MAX - 3000, // the send positions wrap during the test
            send_wnd: 1 << 20,
            mss: 1000,
            sack: true,
            snd_seq: 77,
            rcv_buf: 8192,
            rcv_wscale: 0,
            snd_buf: 16384,
        }
    }

    fn data(rx_pos: u32, una_pos: u32, payload: &[u8]) -> etran_tcp_rx_meta {
        etran_tcp_rx_meta {
            rx_pos,
            una_pos,
            payload_len: payload.len() as u16,
            send_wnd: 1 << 20,
            ..Default::default()
        }
    }

    /// A stream mid-transfer: bytes received (some read), bytes written (some sent, some
    /// acknowledged).
    fn busy() -> (Stream, Vec<u8>, Vec<u8>) {
        let mut s = Stream::new(init());
        let rx: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let una0 = init().tx_pos;
        s.on_rx(&data(1000, una0, &rx[..3000]), &rx[..3000]);
        s.on_rx(&data(4000, una0, &rx[3000..]), &rx[3000..]);
        let mut got = vec![0u8; 1200];
        assert_eq!(s.read(&mut got), 1200);
        let tx: Vec<u8> = (0..9000u32).map(|i| (i * 13 + 5) as u8).collect();
        assert_eq!(s.write(&tx), 9000);
        let mut frame = vec![0u8; 2048];
        for _ in 0..4 {
            s.next_segment(&mut frame).unwrap();
        }
        // The peer acknowledged the first 1500 bytes.
        s.on_rx(&data(6000, una0.wrapping_add(1500), &[]), &[]);
        (s, rx[1200..].to_vec(), tx[1500..].to_vec())
    }

    fn resumed_at(s: &Stream) -> Resume {
        let (una, nxt) = s.send_positions();
        Resume {
            rx_pos: s.rcv_end,
            tx_pos: nxt,
            una_pos: una,
            send_wnd: s.send_wnd(),
            rcv_wnd: 8192 - 5000,
            fin: 0,
        }
    }

    fn read_all(s: &mut Stream) -> Vec<u8> {
        let mut out = vec![0u8; s.readable()];
        let n = s.read(&mut out);
        out.truncate(n);
        out
    }

    #[test]
    fn a_round_trip_keeps_every_byte_and_position() {
        let (s, unread, unacked) = busy();
        let bytes = s.hand_over();
        let mut r = Stream::resume(&bytes, &resumed_at(&s), RtoConfig::default()).unwrap();
        assert_eq!(format!("{:?}", r.key()), format!("{:?}", s.key()));
        assert_eq!(r.send_positions(), s.send_positions());
        assert_eq!((r.in_flight(), r.unsent()), (s.in_flight(), s.unsent()));
        assert_eq!(r.mss(), s.mss());
        assert_eq!(r.close_state(), s.close_state());
        assert_eq!(r.srtt(), s.srtt());
        assert_eq!(r.stats().tx_bytes, s.stats().tx_bytes);
        // The 1200 bytes read were never reported, and the kernel's window lacks them.
        assert_eq!(r.unreported(), 1200);
        assert_eq!(read_all(&mut r), unread);
        // The unacknowledged bytes come out again, in order, at the same positions.
        let mut s2 = s;
        let mut frame = vec![0u8; 2048];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        while let Some(f) = s2.next_segment(&mut frame) {
            a.extend_from_slice(&frame[super::super::TX_HDR_LEN..f.frame_len]);
        }
        while let Some(f) = r.next_segment(&mut frame) {
            b.extend_from_slice(&frame[super::super::TX_HDR_LEN..f.frame_len]);
        }
        assert_eq!(a, b, "the unsent bytes");
        assert_eq!(r.sbuf.iter().copied().collect::<Vec<u8>>(), unacked);
        // A second hand-over of the resumed stream is the same stream again.
        let again = Stream::resume(&r.hand_over(), &resumed_at(&r), RtoConfig::default()).unwrap();
        assert_eq!(again.send_positions(), r.send_positions());
        assert_eq!(again.sbuf, r.sbuf);
    }

    #[test]
    fn the_kernels_positions_win() {
        let (s, _, unacked) = busy();
        let (una, nxt) = s.send_positions();
        // The kernel saw 1000 more bytes acknowledged, and egress took only 2000 of the bytes
        // framed (the rest was dropped while moving).
        let at = Resume {
            una_pos: una.wrapping_add(1000),
            tx_pos: una.wrapping_add(2000),
            ..resumed_at(&s)
        };
        assert!(dist(nxt, una) > 2000);
        let r = Stream::resume(&s.hand_over(), &at, RtoConfig::default()).unwrap();
        assert_eq!(r.send_positions(), (una.wrapping_add(1000), una.wrapping_add(2000)));
        assert_eq!(r.sbuf.iter().copied().collect::<Vec<u8>>(), unacked[1000..]);
        assert_eq!(r.scoreboard().outstanding(), 1000, "what egress took is in flight");
    }

    #[test]
    fn bytes_the_old_owner_never_got_fail_the_stream() {
        let (s, ..) = busy();
        let at = Resume { rx_pos: s.rcv_end.wrapping_add(500), ..resumed_at(&s) };
        let r = Stream::resume(&s.hand_over(), &at, RtoConfig::default()).unwrap();
        assert_eq!(r.error(), Some(io::ErrorKind::ConnectionAborted));
        assert_eq!(r.stats().rx_holes, 1);
    }

    #[test]
    fn a_fin_the_old_owner_never_got_ends_the_stream() {
        let (s, unread, _) = busy();
        let at = Resume { fin: tcp_conn_fin::TCP_CONN_FIN_RCVD.0, ..resumed_at(&s) };
        let mut r = Stream::resume(&s.hand_over(), &at, RtoConfig::default()).unwrap();
        assert_eq!(r.close_state(), close::State::CloseWait);
        assert_eq!(read_all(&mut r), unread);
        assert!(r.is_eof());
    }

    #[test]
    fn a_closed_stream_keeps_its_fin() {
        let (mut s, ..) = busy();
        s.close();
        let fin_sent = Resume { fin: tcp_conn_fin::TCP_CONN_FIN_SENT.0, ..resumed_at(&s) };
        let r = Stream::resume(&s.hand_over(), &fin_sent, RtoConfig::default()).unwrap();
        assert_eq!(r.close_state(), close::State::FinWait1);
        assert!(r.fin_sent);
    }

    /// A stream rebuilt after its owner died with 500 bytes in flight: their acknowledgement
    /// frees them, and the stream carries on; resending them fails it instead.
    #[test]
    fn a_lost_owners_stream_fails_only_if_its_unknown_bytes_must_go_again() {
        let una = init().tx_pos;
        let at = Resume {
            rx_pos: 1000,
            tx_pos: una.wrapping_add(500),
            una_pos: una,
            send_wnd: 1 << 20,
            rcv_wnd: 8192,
            fin: 0,
        };
        let bytes = Stream::lost_owner(init(), 500);
        let mut frame = vec![0u8; 2048];
        // Acknowledged: the next bytes go out as usual.
        let mut r = Stream::resume(&bytes, &at, RtoConfig::default()).unwrap();
        assert_eq!((r.in_flight(), r.unsent()), (500, 0));
        r.on_rx(&data(1000, una.wrapping_add(500), &[]), &[]);
        assert_eq!(r.write(b"more"), 4);
        let f = r.next_frame(&mut frame).unwrap();
        assert_eq!((f.tx_pos, f.payload_len), (una.wrapping_add(500), 4));
        assert_eq!(r.error(), None);
        // A timeout before the acknowledgement: nobody has the bytes to resend.
        let mut r = Stream::resume(&bytes, &at, RtoConfig::default()).unwrap();
        let mut now = Instant::now();
        while !matches!(r.on_timer(now), TimerEvent::Resend) {
            now += Duration::from_millis(100);
        }
        assert!(r.next_frame(&mut frame).is_none());
        assert_eq!(r.error(), Some(io::ErrorKind::ConnectionAborted));
    }

    #[test]
    fn garbage_is_refused() {
        let (s, ..) = busy();
        let mut bytes = s.hand_over();
        bytes.pop();
        assert!(Stream::resume(&bytes, &resumed_at(&s), RtoConfig::default()).is_err());
        assert!(Stream::resume(b"\x05\0\0\0{}", &Resume::default(), RtoConfig::default()).is_err());
        assert!(Stream::resume(b"", &Resume::default(), RtoConfig::default()).is_err());
    }
}
