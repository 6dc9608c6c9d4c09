//! The app library's TCP data path (ARCHITECTURE.md, "Data"): one app thread, one
//! port, any number of established connections.
//!
//! - [`port`]: the daemon-created AF_XDP socket and memfd UMEM, mapped; RX with metadata, TX
//!   frames, fill/completion recycling, need-wakeup kicks; a mio source.
//! - [`stream`]: the per-connection byte-stream engine (pure, unit-tested).
//! - `early`: frames that reach the port before the app adopted their connection, held
//!   until `accept` (the kernel acknowledged them already).
//! - [`App`] / [`ConnId`]: the socket-style API over both: non-blocking
//!   [`App::send`] / [`App::recv`], [`App::poll`] to move frames, pollable through mio.
//!
//! A pass: the app's loop calls [`App::poll`], then sends and receives on its connections, then
//! [`App::flush`] (or polls again). Small sends within a pass are coalesced (Nagle-like, see
//! [`App::send`], [`App::send_more`]); [`App::set_nodelay`] opts a connection out.
//!
//! Connections are created from what the daemon will hand over after its handshake
//! ([`StreamInit`] plus the conn's `handle`, the value ingress echoes in RX metadata).
//!
//! Loss recovery (see [`stream`]): SACK blocks of received frames (the RX metadata's SACK flag
//! says the TCP header has some) feed each connection's scoreboard; lost ranges go out with the
//! RETRANSMIT intent; the timers (reordering, tail-loss probe, RTO; per connection, checked in
//! [`App::poll`]) resend what they find, after a timeout as DATA, which egress takes whatever
//! its own position (see `tcp_egress.h`).
//!
//! Congestion control runs in the kernel (`tcp_cc.h`); the library learns the send window from
//! each RX frame's metadata and never sends new data beyond it (see [`stream`]). Each
//! [`App::poll`] pass visits the connections starting one further than the last pass, so that
//! no connection always sends first (with several connections through one bottleneck, the
//! first one's segments would always find the shortest queue and draw the fewest ECN marks),
//! and ends with a pure ACK for every connection that received two full segments since it
//! last sent anything ([`Stream::ack_due`]): a busy-polling receiver acknowledges each burst as
//! it ends, as a kernel does at the end of a NAPI poll, instead of waiting for the daemon's
//! generator (a wakeup, which a busy machine delays; with the generator alone, DCTCP flows into
//! one eTran receiver filled 85-88 % of a 300 Mbit/s bottleneck instead of 95 %, `tcp_dctcp`).
//!
//! Close and abort: [`App::close`] sends a FIN after the queued bytes (the receive side stays
//! open); `recv` returns `Ok(0)` after the peer's FIN, and sending goes on until the app closes.
//! Once both FINs went through and ours was acknowledged ([`App::is_closed`]) the app releases
//! the connection to the daemon, which removes it from the fast path (holding the 4-tuple in
//! TIME_WAIT if we closed first). [`App::abort`] (or forgetting a connection that is not
//! closed, see [`App::remove_connection`]) has the daemon send a RST. A reset from the peer
//! (learnt through the [`Session`]: [`App::poll_daemon`]) makes `send`/`recv` fail with
//! `ConnectionReset`; a retransmission timer that gives up aborts the connection and they fail
//! with `TimedOut`. A data frame the kernel accepted but the port lost (see
//! [`PortStats::xdp`]) leaves a hole no one will fill: that connection is aborted and fails with
//! `ConnectionAborted` ([`AppStats::rx_lost_data`]). A closed or failed connection stays until
//! [`App::remove_connection`].
pub mod port;

use std::{
    collections::{HashMap, HashSet},
    io::{self, Write},
    os::unix::net::UnixStream,
    sync::Weak,
};

pub use port::{AppPort, PortStats};
pub use stream::{Stream, StreamInit, StreamStats};

use crate::{
    bpf::tcp::types::etran_tcp_rx_meta,
    daemon::{
        client::{Registration, Session},
        proto::{self, Request},
    },
    transport::tcp::{early, sack::Blocks, stream},
};

/// One connection of an [`App`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

/// App-level counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppStats {
    /// RX frames whose handle matches no connection (and that could not be held for one
    /// about to be adopted, or waited for it in vain: see `early`).
    pub rx_unknown: u64,
    /// RX frames held for a connection not yet adopted.
    pub rx_early: u64,
    /// Connections whose retransmission timer gave up (the peer is gone).
    pub timeouts_given_up: u64,
    /// Connections aborted because a data frame was lost on the way to the app.
    pub rx_lost_data: u64,
    pub window_updates: u64,
    /// Pure ACKs sent at the end of a pass (see [`Stream::ack_due`]).
    pub acks: u64,
}

/// Hashes a connection handle with one multiplication: handles are daemon-chosen integers, not
/// attacker input, and the map is looked up for every received frame.
#[derive(Default)]
struct HandleHasher(u64);

impl std::hash::Hasher for HandleHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the high bits, which hashbrown uses, depend on every input bit.
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Connections by handle.
type ConnMap = HashMap<u64, Stream, std::hash::BuildHasherDefault<HandleHasher>>;

/// One app thread's connections over its port.
pub struct App {
    port: AppPort,
    /// The daemon session's socket, for `Release` and `Abort` (gone with the session, whose
    /// end tears down every connection anyway).
    control: Weak<UnixStream>,
    conns: ConnMap,
    /// Handles visited by [`App::poll`] (kept to spare an allocation per poll).
    scratch: Vec<u64>,
    /// Where [`App::poll`]'s pass over the connections starts: one further each pass, so that
    /// no connection always sends first (its segments would always find the bottleneck's
    /// queue shortest and draw the fewest ECN marks).
    first: usize,
    /// Frames for connections the daemon accepted and the app has not adopted yet.
    early: early::Early,
    /// Retransmission timeout settings of connections adopted from now on.
    rto: crate::transport::tcp::rto::RtoConfig,
    /// Connections the daemon no longer holds for us (released, aborted, reset).
    released: HashSet<u64>,
    /// Connections holding a short tail of small writes until the end of the pass.
    holding: Vec<u64>,
    stats: AppStats,
}

impl App {
    pub fn open(reg: Registration) -> anyhow::Result<App> {
        let control = reg.control.clone();
        Ok(App {
            port: AppPort::open(reg)?,
            control,
            conns: ConnMap::default(),
            scratch: Vec::new(),
            first: 0,
            early: early::Early::default(),
            rto: crate::transport::tcp::rto::RtoConfig::default(),
            released: HashSet::new(),
            holding: Vec::new(),
            stats: AppStats::default(),
        })
    }

    /// Sets the retransmission timeout (minimum, maximum, initial, retries before giving up)
    /// and the tail-loss probe's bounds of the connections adopted after this call. The default
    /// minimum RTO is Linux's 200 ms, which a Linux receiver's delayed ACK (40 to 200 ms) never
    /// reaches; between etran hosts (1 ms delayed ACK) a few milliseconds suit a datacenter.
    pub fn set_rto(&mut self, rto: crate::transport::tcp::rto::RtoConfig) {
        self.rto = rto;
    }

    /// Adopts the next connection `session` accepted on a listening port, if any (non-blocking);
    /// applies what else the daemon sent ([`App::poll_daemon`]).
    pub fn accept(&mut self, session: &mut Session) -> anyhow::Result<Option<ConnId>> {
        let next = session.try_accept()?;
        self.apply_resets(session);
        Ok(next.map(|(handle, init)| self.add_connection(handle, init.stream_init())))
    }

    /// Reads the daemon's messages without blocking and applies them: connections the peer
    /// reset fail with `ConnectionReset` (accepted ones wait for [`App::accept`]). Call it when
    /// the session is readable, or now and then in a busy loop.
    pub fn poll_daemon(&mut self, session: &mut Session) -> anyhow::Result<()> {
        session.poll()?;
        self.apply_resets(session);
        Ok(())
    }

    fn apply_resets(&mut self, session: &mut Session) {
        while let Some(h) = session.take_reset() {
            if let Some(s) = self.conns.get_mut(&h) {
                s.fail(io::ErrorKind::ConnectionReset);
                self.released.insert(h);
            }
        }
    }

    /// Opens a connection to `remote` through the daemon and adopts it (blocks for the
    /// handshake).
    pub fn connect(
        &mut self,
        session: &mut Session,
        remote: std::net::SocketAddrV4,
    ) -> anyhow::Result<ConnId> {
        let (handle, init) = session.connect_tcp(remote, None)?;
        Ok(self.add_connection(handle, init.stream_init()))
    }

    pub fn port(&self) -> &AppPort {
        &self.port
    }

    pub fn stats(&self) -> AppStats {
        self.stats
    }

    /// Adopts an established connection. `handle` is the `tcp_conn.handle` the daemon
    /// inserted (ingress puts it in every RX frame's metadata).
    pub fn add_connection(&mut self, handle: u64, init: StreamInit) -> ConnId {
        self.conns.insert(handle, Stream::with_rto(init, self.rto));
        for (meta, payload) in self.early.take(handle) {
            deliver(&mut self.conns, &mut self.stats, &meta, &payload);
        }
        ConnId(handle)
    }

    /// Forgets a connection; one the daemon still holds is released (closed) or aborted (any
    /// other).
    pub fn remove_connection(&mut self, id: ConnId) -> Option<Stream> {
        self.release(id.0)?;
        self.released.remove(&id.0);
        self.conns.remove(&id.0)
    }

    /// Closes the sending side: a FIN follows the bytes queued so far. Receiving goes on until
    /// the peer's FIN (`recv` returns `Ok(0)`); [`App::is_closed`] tells when it is all over.
    pub fn close(&mut self, id: ConnId) -> io::Result<()> {
        let s = self.usable(id)?;
        s.close();
        s.hold_tail(false);
        self.transmit(id)?;
        self.port.flush()
    }

    /// Aborts the connection: the daemon sends the peer a RST and removes it; the app forgets it.
    pub fn abort(&mut self, id: ConnId) {
        if self.conns.contains_key(&id.0) && !self.released.contains(&id.0) {
            self.conns.get_mut(&id.0).expect("present").fail(io::ErrorKind::ConnectionAborted);
        }
        self.remove_connection(id);
    }

    /// Whether the connection is over: both FINs went through and ours was acknowledged, or it
    /// was reset, aborted or timed out. True for an unknown (e.g. removed) connection.
    pub fn is_closed(&self, id: ConnId) -> bool {
        self.conns.get(&id.0).is_none_or(Stream::is_closed)
    }

    /// Tells the daemon it no longer holds the connection for us, once: `Release` when it is
    /// closed, `Abort` otherwise. None for an unknown connection.
    fn release(&mut self, h: u64) -> Option<()> {
        let s = self.conns.get(&h)?;
        if !self.released.insert(h) {
            return Some(());
        }
        let req = if s.is_closed() && s.error().is_none() {
            Request::Release { handle: h, time_wait: s.close_state().time_wait() }
        } else {
            Request::Abort { handle: h }
        };
        let Some(control) = self.control.upgrade() else { return Some(()) };
        if let Err(e) = (&*control).write_all(&proto::encode(&req)) {
            crate::log::warn(format!("telling the daemon about connection {h}: {e}"));
        }
        Some(())
    }

    pub fn stream(&self, id: ConnId) -> Option<&Stream> {
        self.conns.get(&id.0)
    }

    /// The connection, unless it failed (its error then).
    fn usable(&mut self, id: ConnId) -> io::Result<&mut Stream> {
        let s = self.conns.get_mut(&id.0).ok_or(io::ErrorKind::NotConnected)?;
        match s.error() {
            Some(e) => Err(e.into()),
            None => Ok(s),
        }
    }

    /// Queues bytes to send (as many as the send buffer takes) and pushes frames out.
    /// `WouldBlock` when the send buffer is full, `BrokenPipe` after [`App::close`].
    ///
    /// Small sends are coalesced as Nagle's algorithm does, bounded by the pass: with nothing
    /// in flight the bytes go at once; with bytes in flight a tail short of a segment waits
    /// for the next sends of the pass and leaves with them at the next [`App::flush`] or
    /// [`App::poll`], not later. An app that sleeps on readiness right after `send` should end
    /// its pass with [`App::flush`] first (or the tail waits for the ACK of what is in flight,
    /// as with Nagle). [`App::set_nodelay`] turns it off.
    pub fn send(&mut self, id: ConnId, data: &[u8]) -> io::Result<usize> {
        let n = self.write(id, data, |s| s.in_flight() > 0)?;
        self.port.flush()?;
        Ok(n)
    }

    /// [`App::send`] without the kick (as `MSG_MORE`): the frames wait on the port for the
    /// next [`App::flush`] or [`App::poll`], so one system call sends what a pass over many
    /// connections wrote (in copy mode every kick is a synchronous transmit). More is coming:
    /// a tail short of a segment waits for the end of the pass, so consecutive small sends in
    /// a pass leave as one segment (unless [`App::set_nodelay`]).
    pub fn send_more(&mut self, id: ConnId, data: &[u8]) -> io::Result<usize> {
        self.write(id, data, |_| true)
    }

    /// Queues `data` and frames what may go now; `hold` says whether a short tail waits.
    fn write(&mut self, id: ConnId, data: &[u8], hold: fn(&Stream) -> bool) -> io::Result<usize> {
        let s = self.usable(id)?;
        if !s.close_state().can_send() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let n = s.write(data);
        if n == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let held = hold(s);
        s.hold_tail(held);
        if s.holds_tail() {
            self.holding.push(id.0);
        }
        self.transmit(id)?;
        Ok(n)
    }

    /// Never coalesce the connection's small sends (TCP_NODELAY): each one is framed at once.
    /// For request/response traffic whose every message must leave without waiting for the
    /// end of the pass.
    pub fn set_nodelay(&mut self, id: ConnId, on: bool) -> io::Result<()> {
        self.conns.get_mut(&id.0).ok_or(io::ErrorKind::NotConnected)?.set_nodelay(on);
        self.transmit(id)
    }

    /// Ends the pass: frames the short tails small sends left waiting, and hands every frame
    /// written so far to the kernel.
    pub fn flush(&mut self) -> io::Result<()> {
        self.release_holds()?;
        self.port.flush()
    }

    /// Frames what the connections holding a short tail have.
    fn release_holds(&mut self) -> io::Result<()> {
        for h in std::mem::take(&mut self.holding) {
            if let Some(s) = self.conns.get_mut(&h) {
                s.hold_tail(false);
                self.transmit(ConnId(h))?;
            }
        }
        Ok(())
    }

    /// Reads received bytes. `Ok(0)` at end of stream, `WouldBlock` when nothing is ready.
    /// Bytes the kernel acknowledged are returned even after the connection failed (a reset,
    /// say): its error comes once they are all read.
    pub fn recv(&mut self, id: ConnId, buf: &mut [u8]) -> io::Result<usize> {
        let s = self.conns.get_mut(&id.0).ok_or(io::ErrorKind::NotConnected)?;
        let n = s.read(buf);
        if n == 0 {
            return match s.error() {
                Some(e) => Err(e.into()),
                None if s.is_eof() || buf.is_empty() => Ok(0),
                None => Err(io::ErrorKind::WouldBlock.into()),
            };
        }
        // Once the app drained what was there (an app that reads less waits for poll's check,
        // which comes with the next pass anyway): the window then is as large as it gets.
        if s.readable() == 0 && s.window_update_due() && !s.is_closed() {
            self.window_update(id)?;
            self.port.flush()?;
        }
        Ok(n)
    }

    /// Moves frames: hands received ones to their connections, sends what the windows now
    /// allow. Call it when the port is readable (and periodically while sends are pending).
    /// Returns the frames received.
    pub fn poll(&mut self) -> io::Result<usize> {
        let now = std::time::Instant::now();
        let (conns, early, stats) = (&mut self.conns, &mut self.early, &mut self.stats);
        let n = self.port.poll_rx(|meta, payload, frame| {
            if let Some(s) = conns.get_mut(&meta.handle) {
                let sack = if meta.flags & stream::RX_SACK != 0 {
                    Blocks::from_frame(frame)
                } else {
                    Blocks::default()
                };
                deliver_to(s, stats, meta, payload, &sack, now);
            } else if early.hold(meta, payload, now) {
                stats.rx_early += 1;
            } else {
                stats.rx_unknown += 1;
            }
        })?;
        self.stats.rx_unknown += self.early.expire(now) as u64;
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        ids.extend(self.conns.keys().copied());
        self.first = self.first.wrapping_add(1);
        if !ids.is_empty() {
            let first = self.first % ids.len();
            ids.rotate_left(first);
        }
        for &h in &ids {
            let s = self.conns.get_mut(&h).expect("listed");
            if let stream::TimerEvent::GaveUp(_) = s.on_timer(now) {
                s.fail(io::ErrorKind::TimedOut);
                self.stats.timeouts_given_up += 1;
            }
            if s.is_closed() {
                self.release(h);
                continue;
            }
            s.hold_tail(false);
            self.transmit(ConnId(h))?;
            let s = &self.conns[&h];
            if s.window_update_due() {
                self.window_update(ConnId(h))?;
            } else if s.ack_due() {
                self.ack(ConnId(h))?;
            }
        }
        self.scratch = ids;
        self.holding.clear();
        self.port.flush()?;
        Ok(n)
    }

    /// Writes the connection's sendable segments into TX frames (flushed by the caller).
    fn transmit(&mut self, id: ConnId) -> io::Result<()> {
        loop {
            let s = self.conns.get_mut(&id.0).ok_or(io::ErrorKind::NotConnected)?;
            if !s.tx_ready() || !self.port.can_send() {
                return Ok(());
            }
            let now = std::time::Instant::now();
            let sent =
                self.port.send_with(|frame| s.next_frame_at(frame, now).map(|g| g.frame_len))?;
            if sent.is_none() {
                return Ok(());
            }
        }
    }

    /// Sends a pure ACK (see [`Stream::ack_due`]). Without a free TX frame the generator sends
    /// it.
    fn ack(&mut self, id: ConnId) -> io::Result<()> {
        let s = self.conns.get_mut(&id.0).ok_or(io::ErrorKind::NotConnected)?;
        if self.port.send_with(|frame| s.control_frame(stream::INTENT_ACK_DUE, frame))?.is_some() {
            self.stats.acks += 1;
        }
        Ok(())
    }

    /// Sends a pure window update carrying the unreported consumption. Without a free TX
    /// frame nothing is taken: the report rides on the next frame.
    fn window_update(&mut self, id: ConnId) -> io::Result<()> {
        let s = self.conns.get_mut(&id.0).ok_or(io::ErrorKind::NotConnected)?;
        let sent =
            self.port.send_with(|frame| s.control_frame(stream::INTENT_WINDOW_UPDATE, frame))?;
        if sent.is_some() {
            self.stats.window_updates += 1;
        }
        Ok(())
    }
}

/// Hands one RX frame held before its connection was adopted to it (nothing was sent then, so
/// it has no SACK blocks that matter), counting what went wrong.
fn deliver(conns: &mut ConnMap, stats: &mut AppStats, meta: &etran_tcp_rx_meta, payload: &[u8]) {
    let now = std::time::Instant::now();
    match conns.get_mut(&meta.handle) {
        Some(s) => deliver_to(s, stats, meta, payload, &Blocks::default(), now),
        None => stats.rx_unknown += 1,
    }
}

/// Hands one RX frame to connection `s` (one map lookup per frame: the caller found it).
fn deliver_to(
    s: &mut Stream,
    stats: &mut AppStats,
    meta: &etran_tcp_rx_meta,
    payload: &[u8],
    sack: &Blocks,
    now: std::time::Instant,
) {
    if s.on_rx_at(meta, payload, sack, now).lost > 0 {
        stats.rx_lost_data += 1;
    }
}

/// Connections the daemon still holds for us are released or aborted.
impl Drop for App {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for h in ids {
            self.release(h);
        }
    }
}

/// The app is pollable through its port.
impl mio::event::Source for App {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.port.register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.port.reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.port.deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_data_frame_aborts_its_connection_and_is_counted() {
        let init = StreamInit {
            key: Default::default(),
            rx_pos: 0,
            tx_pos: 0,
            send_wnd: 1 << 20,
            mss: 1000,
            sack: false,
            snd_seq: 0,
            rcv_buf: 4096,
            snd_buf: 4096,
            rcv_wscale: 7,
        };
        let mut conns = ConnMap::from_iter([(7, Stream::new(init)), (8, Stream::new(init))]);
        let mut stats = AppStats::default();
        let frame = |handle, rx_pos| etran_tcp_rx_meta {
            handle,
            rx_pos,
            payload_len: 10,
            ..Default::default()
        };
        deliver(&mut conns, &mut stats, &frame(7, 0), &[1; 10]);
        deliver(&mut conns, &mut stats, &frame(8, 0), &[1; 10]);
        // [10, 20) of connection 7 never came.
        deliver(&mut conns, &mut stats, &frame(7, 20), &[1; 10]);
        deliver(&mut conns, &mut stats, &frame(8, 10), &[1; 10]);
        deliver(&mut conns, &mut stats, &frame(9, 0), &[1; 10]);
        assert_eq!((stats.rx_lost_data, stats.rx_unknown), (1, 1));
        assert_eq!(conns[&7].error(), Some(io::ErrorKind::ConnectionAborted));
        assert_eq!((conns[&8].error(), conns[&8].readable()), (None, 20));
    }
}
