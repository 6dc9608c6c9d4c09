//! The app library's TCP data path (DESIGN.md, "Library (the app side)"): one app thread, one
//! port, any number of established connections.
//!
//! - [`port`]: the daemon-created AF_XDP socket and memfd UMEM, mapped; RX with metadata, TX
//!   frames, fill/completion recycling, need-wakeup kicks; a mio source.
//! - [`stream`]: the per-connection byte-stream engine (pure, unit-tested).
//! - [`App`] / [`ConnId`]: the socket-style API over both: non-blocking
//!   [`App::send`] / [`App::recv`], [`App::poll`] to move frames, pollable through mio.
//!
//! Connections are created from what the daemon will hand over after its handshake
//! ([`StreamInit`] plus the conn's `handle`, the value ingress echoes in RX metadata).
//!
//! Loss recovery: fast retransmits go out with the RETRANSMIT intent; a retransmission timeout
//! (per connection, checked in [`App::poll`]) rewinds to `snd_una` and resends as DATA, which
//! egress takes whatever its own position (see `tcp_egress.h`).
pub mod port;
pub mod stream;

use std::{collections::HashMap, io};

pub use port::{AppPort, PortStats};
pub use stream::{Stream, StreamInit, StreamStats};

use crate::daemon::client::{Registration, Session};

/// One connection of an [`App`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

/// App-level counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppStats {
    /// RX frames whose handle matches no connection.
    pub rx_unknown: u64,
    /// Connections whose retransmission timer gave up (the peer is gone).
    pub timeouts_given_up: u64,
    pub window_updates: u64,
}

/// One app thread's connections over its port.
pub struct App {
    port: AppPort,
    conns: HashMap<u64, Stream>,
    stats: AppStats,
}

impl App {
    pub fn open(reg: Registration) -> anyhow::Result<App> {
        Ok(App { port: AppPort::open(reg)?, conns: HashMap::new(), stats: AppStats::default() })
    }

    /// Adopts the next connection `session` accepted on a listening port, if any (non-blocking).
    pub fn accept(&mut self, session: &mut Session) -> anyhow::Result<Option<ConnId>> {
        Ok(session
            .try_accept()?
            .map(|(handle, init)| self.add_connection(handle, init.stream_init())))
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
        self.conns.insert(handle, Stream::new(init));
        ConnId(handle)
    }

    pub fn remove_connection(&mut self, id: ConnId) -> Option<Stream> {
        self.conns.remove(&id.0)
    }

    pub fn stream(&self, id: ConnId) -> Option<&Stream> {
        self.conns.get(&id.0)
    }

    fn conn(&mut self, id: ConnId) -> io::Result<&mut Stream> {
        self.conns.get_mut(&id.0).ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }

    /// Queues bytes to send (as many as the send buffer takes) and pushes frames out.
    /// `WouldBlock` when the send buffer is full.
    pub fn send(&mut self, id: ConnId, data: &[u8]) -> io::Result<usize> {
        let n = self.conn(id)?.write(data);
        if n == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.transmit(id)?;
        self.port.flush()?;
        Ok(n)
    }

    /// Reads received bytes. `Ok(0)` at end of stream, `WouldBlock` when nothing is ready.
    pub fn recv(&mut self, id: ConnId, buf: &mut [u8]) -> io::Result<usize> {
        let s = self.conn(id)?;
        if s.is_eof() || buf.is_empty() {
            return Ok(0);
        }
        let n = s.read(buf);
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if s.window_update_due() {
            self.window_update(id)?;
            self.port.flush()?;
        }
        Ok(n)
    }

    /// Moves frames: hands received ones to their connections, sends what the windows now
    /// allow. Call it when the port is readable (and periodically while sends are pending).
    /// Returns the frames received.
    pub fn poll(&mut self) -> io::Result<usize> {
        let conns = &mut self.conns;
        let stats = &mut self.stats;
        let n = self.port.poll_rx(|meta, payload| match conns.get_mut(&meta.handle) {
            Some(s) => {
                s.on_rx(meta, payload);
            }
            None => stats.rx_unknown += 1,
        })?;
        let now = std::time::Instant::now();
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for h in ids {
            if let Some(s) = self.conns.get_mut(&h) {
                if let stream::TimerEvent::GaveUp(_) = s.on_timer(now) {
                    // Aborting (RST through the daemon) comes with connection teardown.
                    self.stats.timeouts_given_up += 1;
                }
            }
            self.transmit(ConnId(h))?;
            if self.conns[&h].window_update_due() {
                self.window_update(ConnId(h))?;
            }
        }
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
            let sent = self.port.send_with(|frame| s.next_frame(frame).map(|g| g.frame_len))?;
            if sent.is_none() {
                return Ok(());
            }
        }
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
