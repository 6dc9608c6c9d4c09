//! The app library: one [`App`] per app thread owns its link to the daemon, its port and any
//! number of connections (ARCHITECTURE.md, "Data").
//!
//! ```no_run
//! use etran::app::App;
//! let mut app = App::open("/run/etran/etran.sock")?; // registers: the daemon builds a port
//! let id = app.connect_blocking("10.0.0.2:7".parse().unwrap())?;
//! app.send_blocking(id, b"hello")?;
//! let mut buf = [0u8; 5];
//! let n = app.recv_blocking(id, &mut buf)?;
//! # std::io::Result::Ok(())
//! ```
//!
//! - [`driver`]: what every transport's API shares ([`Driver`]: the port and the daemon link):
//!   a pass (received frames to the engine, its timers and sends, one flush) and a wait
//!   (busy-poll, then sleep); [`App`] is TCP's engine under it, [`rpc::RpcSocket`] Homa's.
//! - `handover`: connections moving between apps (a forked child adopting one, and back):
//!   [`App::adopt`], [`App::park`], and the surrenders the daemon asks for.
//! - [`link`]: the app's end of the daemon protocol ([`DaemonLink`]): register, listen,
//!   connect, accepted connections and resets.
//! - [`port`]: the daemon-created AF_XDP socket and memfd UMEM, mapped; RX with metadata (any
//!   transport's), TX frames, fill/completion recycling, need-wakeup kicks; a mio source.
//! - [`rpc`]: the RPC API over Homa ([`rpc::RpcSocket`]), beside the socket-style one below.
//! - [`stream`]: the per-connection byte-stream engine (pure, unit-tested;
//!   `transport::tcp::stream`).
//! - `early`: frames that reach the port before the app adopted their connection, held
//!   until `accept` (the kernel acknowledged them already).
//! - [`App`] / [`ConnId`] / [`Listener`]: the socket-style API over them: non-blocking
//!   [`App::connect`] / [`App::accept`] / [`App::send`] / [`App::recv`] and blocking
//!   `*_blocking` variants, [`App::poll`] to move frames, [`App::wait`] to sleep until there is
//!   something to do.
//!
//! Errors are `std::io::Error`s carrying the errno a POSIX socket call would give
//! (`ECONNREFUSED`, `ECONNRESET`, `ETIMEDOUT`, `EADDRINUSE`, `ENOTCONN`, `EPIPE`, `EINVAL`,
//! ...), the daemon's refusals included ([`crate::proto::errno_of`] reads the code of either).
//! A non-blocking call that would have to wait fails with `WouldBlock` (`EAGAIN`), as a POSIX
//! call on a non-blocking socket does: [`App::accept`] with no connection pending, [`App::recv`]
//! with nothing to read, [`App::send`] with the send buffer full, [`App::poll_connect`] while
//! the handshake goes on.
//!
//! Waiting (the [`driver`]'s, as for every transport): [`App::wait`] first busy-polls the RX ring
//! for up to [`App::set_busy_poll`]'s budget (like `SO_BUSY_POLL`; [`DEFAULT_BUSY_POLL`], zero
//! sleeps at once), then sleeps in `ppoll` on the AF_XDP socket and the daemon link until a
//! frame or a daemon message comes or the engine's next timer (RTO, tail-loss probe,
//! reordering, early frames: [`App::next_deadline`]) is due. The kernel wakes a sleeping AF_XDP
//! socket when RX gets a frame; TX is kicked when the ring asks for it (need-wakeup) before
//! sleeping. An idle app (connections open, no traffic) thus sleeps and uses no CPU. An app
//! with other event sources registers the [`App`] (a mio `Source`: its port and its link under
//! one token) in its own `mio::Poll`, calls [`App::poll`] and [`App::poll_daemon`] on readiness
//! and uses [`App::next_deadline`] for the poll's timeout. The blocking variants wait with [`App::wait`], up to
//! [`App::set_timeout`]'s limit (like `SO_RCVTIMEO`: `EAGAIN` when it passes).
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
//! [`App::poll`] pass starts with the next connection that has something to send, so that
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
//! (learnt through the [`DaemonLink`]: [`App::poll_daemon`]) makes `send`/`recv` fail with
//! `ConnectionReset`; a retransmission timer that gives up aborts the connection and they fail
//! with `TimedOut`. A data frame the kernel accepted but the port lost (see
//! [`PortStats::xdp`]) leaves a hole no one will fill: once it stayed open for
//! [`stream::REORDER_LIMIT`] (a frame may come behind one ingress applied after it) that
//! connection is aborted and fails with `ConnectionAborted` ([`AppStats::rx_lost_data`], and a
//! warning on stderr saying where the gap was). A closed or failed connection stays until
//! [`App::remove_connection`].
mod bursts;
pub mod driver;
mod handover;
pub mod link;
pub mod port;
pub mod rpc;

use std::{
    collections::{HashMap, HashSet},
    io,
    net::SocketAddrV4,
    path::Path,
    time::{Duration, Instant},
};

use bursts::Bursts;
pub use driver::{Driver, DEFAULT_BUSY_POLL};
pub use link::{DaemonLink, Registration};
pub use port::{AppPort, PortStats};
pub use stream::{Stream, StreamInit, StreamStats};

use crate::{
    bpf::tcp::types::etran_tcp_rx_meta,
    proto::{Request, Transport},
    transport::tcp::{
        early,
        sack::Blocks,
        small_queues::{self, SmallQueues},
        stream,
    },
};

/// Segments a connection writes in one turn of a pass before the next connection's turn
/// ([`stream::PUSH_SEGMENTS`], a receiver's merge).
const TURN_SEGMENTS: usize = stream::PUSH_SEGMENTS as usize;

/// One connection of an [`App`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

/// A TCP port an [`App`] listens on ([`App::listen`]): connections to it come through
/// [`App::accept`] on it, until [`App::close_listener`]. Like a listening socket, it belongs to
/// the app that opened it (an app that ends stops listening on all its ports).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Listener {
    port: u16,
}

impl Listener {
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// A connect in progress ([`App::connect`]): [`App::poll_connect`] tells when it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connecting {
    remote: SocketAddrV4,
    local_port: Option<u16>,
}

impl Connecting {
    pub fn remote(&self) -> SocketAddrV4 {
        self.remote
    }
}

/// The error a POSIX call gives for what a connection's engine reports: the errno's code, so
/// that a shim can hand it on.
fn os_error(kind: io::ErrorKind) -> io::Error {
    let errno = match kind {
        io::ErrorKind::WouldBlock => libc::EAGAIN,
        io::ErrorKind::NotConnected => libc::ENOTCONN,
        io::ErrorKind::BrokenPipe => libc::EPIPE,
        io::ErrorKind::ConnectionReset => libc::ECONNRESET,
        io::ErrorKind::ConnectionAborted => libc::ECONNABORTED,
        io::ErrorKind::ConnectionRefused => libc::ECONNREFUSED,
        io::ErrorKind::TimedOut => libc::ETIMEDOUT,
        io::ErrorKind::InvalidInput => libc::EINVAL,
        other => return other.into(),
    };
    io::Error::from_raw_os_error(errno)
}

/// The outcome of a non-blocking call with `WouldBlock` as `None`, for loops that take what is
/// ready: `while let Some(id) = ready(app.accept(&listener))? { .. }`.
pub fn ready<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

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
    /// Times a paced connection stopped sending because it (or the app) had its room in the
    /// kernel's packet queue used ([`small_queues`]).
    pub small_queue_waits: u64,
}

/// What explains an app's share of a benchmark: its port's TX kicks and their transient
/// refusals, its socket's own counters (`XDP_STATISTICS`: frames dropped on the way in, for a
/// full RX ring or an empty fill ring, and TX ring-empty events), and its connections'
/// recoveries (those it still holds and those it has removed).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct AppCounters {
    pub tx_kicks: u64,
    pub tx_kick_eagain: u64,
    pub tx_kick_ebusy: u64,
    pub xdp: crate::xsk::Statistics,
    /// Apps whose socket runs in zero copy ([`crate::app::port::PortStats::zero_copy`]).
    pub zero_copy_ports: u64,
    /// Recoveries on a loss found by SACK or duplicate ACKs.
    pub fast_retransmits: u64,
    /// Retransmission timeouts.
    pub rtos: u64,
}

/// The counters of several apps together.
impl std::ops::AddAssign for AppCounters {
    fn add_assign(&mut self, o: AppCounters) {
        self.tx_kicks += o.tx_kicks;
        self.tx_kick_eagain += o.tx_kick_eagain;
        self.tx_kick_ebusy += o.tx_kick_ebusy;
        self.xdp += o.xdp;
        self.zero_copy_ports += o.zero_copy_ports;
        self.fast_retransmits += o.fast_retransmits;
        self.rtos += o.rtos;
    }
}

/// Hashes an integer key (a connection handle, a descriptor) with one multiplication: keys the
/// daemon or the kernel chose, not attacker input, looked up for every received frame (and
/// every call of the POSIX shim).
#[derive(Default)]
pub struct HandleHasher(u64);

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

    fn write_i32(&mut self, n: i32) {
        self.write_u64(u64::from(n as u32));
    }
}

/// A map keyed by integers the program chose (handles, descriptors), hashed with
/// [`HandleHasher`].
pub type IntMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<HandleHasher>>;

/// Connections by handle.
type ConnMap = IntMap<u64, Stream>;

/// One app thread's link to the daemon, its port and its connections.
pub struct App {
    /// The port and the daemon link; passes and waits.
    driver: Driver,
    conns: ConnMap,
    /// Handles visited by [`App::poll`] (kept to spare an allocation per poll).
    scratch: Vec<u64>,
    /// The connection [`App::poll`]'s last pass started with: the next pass starts with the
    /// next one that has something to send ([`next_leader`]).
    leader: Option<u64>,
    /// Frames for connections the daemon accepted and the app has not adopted yet.
    early: early::Early,
    /// Retransmission timeout settings of connections adopted from now on.
    rto: crate::transport::tcp::rto::RtoConfig,
    /// Connections the daemon no longer holds for us (released, aborted, reset).
    released: HashSet<u64>,
    /// TCP ports this app listens on.
    listening: HashSet<u16>,
    /// Connections holding a short tail of small writes until the end of the pass.
    holding: Vec<u64>,
    /// How long the blocking calls wait (`None`: without limit).
    timeout: Option<Duration>,
    /// Connections handed over to another app since [`App::take_moved`] (see `handover`).
    moved: Vec<u64>,
    stats: AppStats,
    /// Fast retransmits and RTOs of removed connections.
    gone: AppCounters,
    /// Paced: what each connection has in the kernel's packet queue, kept short
    /// ([`small_queues`]; see [`App::set_small_queues`]).
    queues: SmallQueues,
    small_queues: bool,
    /// Whether the app streams: the port then batches its frames ([`bursts`]).
    bursts: Bursts,
    /// Whether the app asks for batching at all ([`App::set_batching`]).
    batching: bool,
    /// A connection stopped for its small queue in this pass: the pass comes back within
    /// [`small_queues::WINDOW`] even if no frame arrives.
    queue_waited: bool,
}

impl App {
    /// Connects to the daemon at `sock` and registers: the daemon builds this app's port.
    pub fn open(sock: impl AsRef<Path>) -> io::Result<App> {
        Ok(App::on(Driver::open(sock, Transport::Tcp)?))
    }

    /// Takes over a link that registered as `reg` (maps the port).
    pub fn with_link(link: DaemonLink, reg: Registration) -> io::Result<App> {
        Ok(App::on(Driver::with_link(link, reg)?))
    }

    fn on(driver: Driver) -> App {
        App {
            driver,
            conns: ConnMap::default(),
            scratch: Vec::new(),
            leader: None,
            early: early::Early::default(),
            rto: crate::transport::tcp::rto::RtoConfig::default(),
            released: HashSet::new(),
            listening: HashSet::new(),
            holding: Vec::new(),
            timeout: None,
            moved: Vec::new(),
            stats: AppStats::default(),
            gone: AppCounters::default(),
            queues: SmallQueues::default(),
            small_queues: true,
            bursts: Bursts::default(),
            batching: true,
            queue_waited: false,
        }
    }

    /// Frames paced connections handed the kernel and have not seen completed ([`small_queues`];
    /// 0 when the daemon does not pace this app).
    pub fn small_queue_frames(&mut self) -> u32 {
        for (owner, bytes) in self.driver.port.take_completed() {
            self.queues.completed(owner, bytes);
        }
        self.queues.frames()
    }

    /// Whether paced connections keep what they have in the kernel's packet queue short (on by
    /// default; [`small_queues`]). Off, a connection hands over all its windows allow, and a
    /// full queue sends segments at once, out of their turn: for measuring what the cap does.
    pub fn set_small_queues(&mut self, on: bool) {
        self.small_queues = on;
    }

    /// The link to the daemon (requests the [`App`] does not wrap, e.g. a connect from a
    /// chosen local port).
    pub fn link(&mut self) -> &mut DaemonLink {
        self.driver.link()
    }

    /// Ends the app: its connections are released or aborted, then the daemon removes the
    /// port (as dropping it does, but the `Close` is sent and its failure reported).
    pub fn close_app(mut self) -> io::Result<()> {
        self.release_all();
        self.driver.link.send(&Request::Close)
    }

    /// How long [`App::wait`] busy-polls before it sleeps ([`DEFAULT_BUSY_POLL`]; zero: it
    /// sleeps at once).
    pub fn set_busy_poll(&mut self, budget: Duration) {
        self.driver.set_busy_poll(budget);
    }

    pub fn busy_poll(&self) -> Duration {
        self.driver.busy_poll()
    }

    /// How long the blocking calls wait before they give up with `EAGAIN` (`ETIMEDOUT` for
    /// [`App::connect_blocking`]); `None` (the default): without limit.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// Whether the app's port batches its frames while it streams ([`bursts`]; on by default).
    /// Off, every frame runs the kernel's path on its own, as a lone one does: for measuring
    /// what batching does. Turning it off ends batching at the next pass.
    pub fn set_batching(&mut self, on: bool) {
        self.batching = on;
    }

    /// Sets the retransmission timeout (minimum, maximum, initial, retries before giving up)
    /// and the tail-loss probe's bounds of the connections adopted after this call. The default
    /// minimum RTO is Linux's 200 ms, which a Linux receiver's delayed ACK (40 to 200 ms) never
    /// reaches; between etran hosts (1 ms delayed ACK) a few milliseconds suit a datacenter.
    pub fn set_rto(&mut self, rto: crate::transport::tcp::rto::RtoConfig) {
        self.rto = rto;
    }

    /// Listens on TCP `port` (`EADDRINUSE` when it is taken): connections to it come through
    /// [`App::accept`] on the [`Listener`].
    pub fn listen(&mut self, port: u16) -> io::Result<Listener> {
        self.listen_on(port, None, false)
    }

    /// [`App::listen`] for a listener that stands for the kernel socket `socket` (bound to
    /// `port`): other apps showing the same socket (a forked worker that inherited it) share
    /// it, the daemon sharing out the connections among those accepting. With `idle`, none
    /// comes to this app before [`App::accepting`] (a master that only forks workers).
    pub fn listen_shared(
        &mut self,
        port: u16,
        socket: std::os::fd::BorrowedFd<'_>,
        idle: bool,
    ) -> io::Result<Listener> {
        self.listen_on(port, Some(socket), idle)
    }

    fn listen_on(
        &mut self,
        port: u16,
        socket: Option<std::os::fd::BorrowedFd<'_>>,
        idle: bool,
    ) -> io::Result<Listener> {
        self.driver.link.listen(port, socket, idle)?;
        self.listening.insert(port);
        Ok(Listener { port })
    }

    /// Connections to `listener` may come to this app from now on (see
    /// [`App::listen_shared`]).
    pub fn accepting(&mut self, listener: &Listener) -> io::Result<()> {
        self.driver.link.send(&Request::Accepting { port: listener.port })
    }

    /// Adopts the next connection accepted on `listener` (non-blocking): `WouldBlock` (`EAGAIN`)
    /// when none is pending, `EINVAL` for a listener not this app's. Applies what else the
    /// daemon sent ([`App::poll_daemon`]).
    pub fn accept(&mut self, listener: &Listener) -> io::Result<ConnId> {
        if !self.driver.link.has_accepted(listener.port) {
            self.poll_daemon()?;
        }
        self.accept_queued(listener)
    }

    /// [`App::accept`] among the connections already read from the daemon link: no system
    /// call, for an app that reads the link ([`App::poll_daemon`]) only when it is readable.
    pub fn accept_queued(&mut self, listener: &Listener) -> io::Result<ConnId> {
        if !self.listening.contains(&listener.port) {
            return Err(os_error(io::ErrorKind::InvalidInput));
        }
        let next = self.driver.link.take_accepted(listener.port);
        let (handle, init) = next.ok_or_else(|| os_error(io::ErrorKind::WouldBlock))?;
        Ok(self.add_connection(handle, StreamInit::from(&init)))
    }

    /// [`App::accept`], waiting ([`App::wait`]) until a connection comes. `EAGAIN` when
    /// [`App::set_timeout`]'s limit passes first.
    pub fn accept_blocking(&mut self, listener: &Listener) -> io::Result<ConnId> {
        let limit = self.limit();
        loop {
            match self.accept(listener) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_until(limit)?,
                done => return done,
            }
        }
    }

    /// Stops listening: a later SYN to the port is refused (RST: `ECONNREFUSED` at a client),
    /// and the connections to it not yet accepted are reset, as closing a listening socket
    /// does.
    pub fn close_listener(&mut self, listener: Listener) -> io::Result<()> {
        if !self.listening.remove(&listener.port) {
            return Err(os_error(io::ErrorKind::InvalidInput));
        }
        for (handle, _) in self.driver.link.unlisten(listener.port)? {
            self.early.take(handle);
            self.driver.link.send(&Request::Abort { handle })?;
        }
        Ok(())
    }

    /// Reads the daemon's messages without blocking and applies them: connections the peer
    /// reset fail with `ECONNRESET` (accepted ones wait for [`App::accept`]). Call it when
    /// the link is readable, or now and then in a busy loop ([`App::wait`] does).
    pub fn poll_daemon(&mut self) -> io::Result<()> {
        self.driver.link.poll()?;
        self.apply_resets();
        while let Some((h, rx_pos)) = self.driver.link.take_surrender() {
            self.surrender(h, rx_pos)?;
        }
        Ok(())
    }

    fn apply_resets(&mut self) {
        while let Some(h) = self.driver.link.take_reset() {
            if let Some(s) = self.conns.get_mut(&h) {
                s.fail(io::ErrorKind::ConnectionReset);
                self.released.insert(h);
            }
        }
    }

    /// Starts opening a connection to `remote` (from `local_port`, or an ephemeral one)
    /// without waiting for the handshake: [`App::poll_connect`] tells when it is done.
    pub fn connect(
        &mut self,
        remote: SocketAddrV4,
        local_port: Option<u16>,
    ) -> io::Result<Connecting> {
        self.driver.link.request_connect(remote, local_port)?;
        Ok(Connecting { remote, local_port })
    }

    /// The connection `c` opened, adopted; `WouldBlock` (`EAGAIN`) while the handshake goes on;
    /// its error (`ECONNREFUSED`, `ETIMEDOUT`, `EADDRINUSE`, ...) if it failed. Reads what the
    /// daemon sent without blocking.
    pub fn poll_connect(&mut self, c: &Connecting) -> io::Result<ConnId> {
        let done = match self.driver.link.take_connected(c.remote, c.local_port)? {
            Some(done) => done,
            None => {
                self.poll_daemon()?;
                self.driver
                    .link
                    .take_connected(c.remote, c.local_port)?
                    .ok_or_else(|| os_error(io::ErrorKind::WouldBlock))?
            }
        };
        Ok(self.add_connection(done.0, StreamInit::from(&done.1)))
    }

    /// Opens a connection to `remote` and adopts it, waiting ([`App::wait`]: the app's other
    /// connections are served meanwhile) for the handshake. `ETIMEDOUT` when
    /// [`App::set_timeout`]'s limit (or [`link::REPLY_TIMEOUT`]) passes first.
    pub fn connect_blocking(&mut self, remote: SocketAddrV4) -> io::Result<ConnId> {
        let limit = Instant::now() + self.timeout.unwrap_or(link::REPLY_TIMEOUT);
        let c = self.connect(remote, None)?;
        loop {
            match self.poll_connect(&c) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return done,
            }
            if Instant::now() >= limit {
                return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
            }
            self.wait_until(Some(limit))?;
        }
    }

    pub fn port(&self) -> &AppPort {
        self.driver.port()
    }

    pub fn stats(&self) -> AppStats {
        self.stats
    }

    /// See [`AppCounters`]; the socket's counters read now.
    pub fn counters(&self) -> AppCounters {
        let port = self.driver.port.stats();
        let mut c = AppCounters {
            tx_kicks: port.tx_kicks,
            tx_kick_eagain: port.tx_kick_eagain,
            tx_kick_ebusy: port.tx_kick_ebusy,
            xdp: port.xdp,
            zero_copy_ports: port.zero_copy.into(),
            ..self.gone
        };
        for s in self.conns.values() {
            c.fast_retransmits += s.stats().fast_retransmits;
            c.rtos += s.stats().timeouts;
        }
        c
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
        let s = self.conns.remove(&id.0)?;
        self.gone.fast_retransmits += s.stats().fast_retransmits;
        self.gone.rtos += s.stats().timeouts;
        Some(s)
    }

    /// Closes the sending side: a FIN follows the bytes queued so far. Receiving goes on until
    /// the peer's FIN (`recv` returns `Ok(0)`); [`App::is_closed`] tells when it is all over.
    pub fn close(&mut self, id: ConnId) -> io::Result<()> {
        let s = self.usable(id)?;
        s.close();
        s.hold_tail(false);
        self.transmit(id)?;
        self.driver.port.flush()
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
        if let Err(e) = self.driver.link.send(&req) {
            crate::log::warn(format!("telling the daemon about connection {h}: {e}"));
        }
        Some(())
    }

    /// Releases or aborts every connection the daemon still holds for us.
    fn release_all(&mut self) {
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for h in ids {
            self.release(h);
        }
    }

    pub fn stream(&self, id: ConnId) -> Option<&Stream> {
        self.conns.get(&id.0)
    }

    /// The connection, unless it failed (its error then).
    fn usable(&mut self, id: ConnId) -> io::Result<&mut Stream> {
        let s = self.conns.get_mut(&id.0).ok_or_else(|| os_error(io::ErrorKind::NotConnected))?;
        match s.error() {
            Some(e) => Err(os_error(e)),
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
        self.driver.port.flush()?;
        Ok(n)
    }

    /// Sends all of `data`, waiting ([`App::wait`]) while the send buffer is full, as a
    /// blocking `send` does. `EAGAIN` when [`App::set_timeout`]'s limit passes first (some
    /// bytes may have been queued then).
    pub fn send_blocking(&mut self, id: ConnId, mut data: &[u8]) -> io::Result<()> {
        let limit = self.limit();
        while !data.is_empty() {
            match self.send(id, data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_until(limit)?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
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
            return Err(os_error(io::ErrorKind::BrokenPipe));
        }
        let n = s.write(data);
        if n == 0 && !data.is_empty() {
            return Err(os_error(io::ErrorKind::WouldBlock));
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
        self.conns
            .get_mut(&id.0)
            .ok_or_else(|| os_error(io::ErrorKind::NotConnected))?
            .set_nodelay(on);
        self.transmit(id)
    }

    /// Ends the pass: frames the short tails small sends left waiting, and hands every frame
    /// written so far to the kernel.
    pub fn flush(&mut self) -> io::Result<()> {
        self.release_holds()?;
        self.driver.port.flush()
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
        let s = self.conns.get_mut(&id.0).ok_or_else(|| os_error(io::ErrorKind::NotConnected))?;
        let n = s.read(buf);
        if n == 0 {
            return match s.error() {
                Some(e) => Err(os_error(e)),
                None if s.is_eof() || buf.is_empty() => Ok(0),
                None => Err(os_error(io::ErrorKind::WouldBlock)),
            };
        }
        // Once the app drained what was there (an app that reads less waits for poll's check,
        // which comes with the next pass anyway): the window then is as large as it gets.
        if s.readable() == 0 && s.window_update_due() && !s.is_closed() {
            self.window_update(id)?;
            self.driver.port.flush()?;
        }
        Ok(n)
    }

    /// Reports what the app read of connection `id` to the kernel at once, once it read all
    /// there was (a pure ACK carrying the report, which egress sends only if an ACK is owed):
    /// the kernel's receive window is whole again. For a connection another process may take
    /// over should this one die (a shared one): the daemon keeps it only if nothing received
    /// is lost.
    pub fn report_reads(&mut self, id: ConnId) -> io::Result<()> {
        let s = self.conns.get(&id.0).ok_or_else(|| os_error(io::ErrorKind::NotConnected))?;
        if s.readable() > 0 || s.unreported() == 0 {
            return Ok(());
        }
        self.ack(id)?;
        self.driver.port.flush()
    }

    /// [`App::recv`], waiting ([`App::wait`]) until bytes, the end of the stream or an error
    /// come. `EAGAIN` when [`App::set_timeout`]'s limit passes first.
    pub fn recv_blocking(&mut self, id: ConnId, buf: &mut [u8]) -> io::Result<usize> {
        let limit = self.limit();
        loop {
            match self.recv(id, buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_until(limit)?,
                done => return done,
            }
        }
    }

    /// When the blocking call starting now gives up.
    fn limit(&self) -> Option<Instant> {
        self.timeout.map(|t| Instant::now() + t)
    }

    /// [`App::wait`] until `limit` at most; `EAGAIN` once it passed.
    fn wait_until(&mut self, limit: Option<Instant>) -> io::Result<()> {
        driver::wait_until(self, limit)?.ok_or_else(|| os_error(io::ErrorKind::WouldBlock))?;
        Ok(())
    }

    /// When the engine's next timer is due (a retransmission, probe or reordering timer of a
    /// connection, early frames to drop), as of the last [`App::poll`]; `None`: no timer runs.
    /// An app that waits on its own ([`App`] is a mio `Source`) waits at most until then and
    /// calls [`App::poll`].
    pub fn next_deadline(&self) -> Option<Instant> {
        self.driver.next_deadline()
    }

    /// Waits until there is something to do, then does it ([`App::poll`], and
    /// [`App::poll_daemon`] when the daemon sent something): a frame arrived, the daemon sent a
    /// message, a timer of the engine is due, or `timeout` passed. Busy-polls the RX ring for
    /// [`App::set_busy_poll`]'s budget first, then sleeps in `ppoll` on the AF_XDP socket and
    /// the daemon link (see [`driver`]). Returns the frames received.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        driver::wait(self, timeout)
    }

    /// The frames that arrived, to their connections, and nothing else: no timers, no sends,
    /// no kick (those are the next [`App::poll`]'s). For a caller that must see what arrived
    /// between two passes without ending the first. Returns the frames received.
    pub fn receive(&mut self) -> io::Result<usize> {
        driver::receive(self, Instant::now())
    }

    /// Moves frames: hands received ones to their connections, runs the timers, sends what
    /// the windows now allow. Call it when the port is readable, or at
    /// [`App::next_deadline`] (or let [`App::wait`] do both). Returns the frames received.
    pub fn poll(&mut self) -> io::Result<usize> {
        driver::pass(self)
    }

    /// Writes the connection's sendable segments into TX frames (flushed by the caller). They
    /// leave back to back, so one clock read stamps them all (the scoreboard orders segments by
    /// transmission count, not by time).
    ///
    /// Paced ([`AppPort::tracks`]), each frame is counted against the connection's small queue
    /// until it completes, and a connection with its room used waits ([`small_queues`]).
    fn transmit(&mut self, id: ConnId) -> io::Result<()> {
        self.transmit_up_to(id, usize::MAX).map(drop)
    }

    /// [`App::transmit`], `max` frames at most; true when it stopped there (the connection may
    /// have more to send).
    fn transmit_up_to(&mut self, id: ConnId, max: usize) -> io::Result<bool> {
        let now = std::time::Instant::now();
        let tracked = self.driver.port.tracks();
        if tracked {
            self.small_queue_frames();
        }
        for _ in 0..max {
            let s =
                self.conns.get_mut(&id.0).ok_or_else(|| os_error(io::ErrorKind::NotConnected))?;
            if !s.tx_ready() || !self.driver.port.can_send() {
                return Ok(false);
            }
            let room = small_queues::room(s.mss(), s.send_wnd(), s.srtt());
            if tracked && self.small_queues && !self.queues.may_send(id.0, room) {
                // Used up as far as the completions taken so far show: take the newer ones
                // and look again (here, not for every frame: most frames pass without).
                self.small_queue_frames();
                if !self.queues.may_send(id.0, room) {
                    self.stats.small_queue_waits += 1;
                    self.queue_waited = true;
                    return Ok(false);
                }
            }
            let s = self.conns.get_mut(&id.0).expect("looked up above");
            let mut bytes = 0;
            let sent = self.driver.port.send_with(|frame| {
                let f = s.next_frame_at(frame, now)?;
                bytes = u32::from(f.payload_len);
                Some(f.frame_len)
            })?;
            if sent.is_none() {
                return Ok(false);
            }
            if tracked {
                self.driver.port.track_last(id.0, bytes);
                self.queues.handed(id.0, bytes);
            }
        }
        Ok(true)
    }

    /// Asks the daemon to batch the port's frames while the app streams, or to stop
    /// ([`bursts`]). Batched, frames wait in the kernel before they leave: from the first
    /// burst on, the app counts each connection's frames there as a paced one does
    /// ([`small_queues`]).
    fn batch(&mut self, on: bool) {
        if on {
            self.driver.port.track_frames();
        }
        if let Err(e) = self.driver.link.send(&Request::Batch { on }) {
            crate::log::warn(format!("asking the daemon to batch the port's frames: {e}"));
        }
    }

    /// Sends a pure ACK (see [`Stream::ack_due`]). Without a free TX frame the generator sends
    /// it.
    fn ack(&mut self, id: ConnId) -> io::Result<()> {
        let s = self.conns.get_mut(&id.0).ok_or_else(|| os_error(io::ErrorKind::NotConnected))?;
        if self
            .driver
            .port
            .send_with(|frame| s.control_frame(stream::INTENT_ACK_DUE, frame))?
            .is_some()
        {
            self.stats.acks += 1;
        }
        Ok(())
    }

    /// Sends a pure window update carrying the unreported consumption. Without a free TX
    /// frame nothing is taken: the report rides on the next frame.
    fn window_update(&mut self, id: ConnId) -> io::Result<()> {
        let s = self.conns.get_mut(&id.0).ok_or_else(|| os_error(io::ErrorKind::NotConnected))?;
        let sent = self
            .driver
            .port
            .send_with(|frame| s.control_frame(stream::INTENT_WINDOW_UPDATE, frame))?;
        if sent.is_some() {
            self.stats.window_updates += 1;
        }
        Ok(())
    }
}

/// Hands one RX frame held before its connection was adopted to it (nothing was sent then, so
/// it has no SACK blocks that matter), counting what went wrong.
pub(crate) fn deliver(
    conns: &mut ConnMap,
    stats: &mut AppStats,
    meta: &etran_tcp_rx_meta,
    payload: &[u8],
) {
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
    let lost = s.on_rx_at(meta, payload, sack, now).lost;
    if lost > 0 {
        lost_data(stats, meta.handle, s, lost);
    }
}

/// Counts connection `handle` (`s`), which just failed for `lost` bytes the kernel
/// acknowledged and the app never got, and says so on stderr with what tells why: where the
/// gap was, and the frames held for connections not yet adopted and those dropped for want of
/// one (held too long, say: the gap is then at the stream's start).
fn lost_data(stats: &mut AppStats, handle: u64, s: &Stream, lost: u32) {
    stats.rx_lost_data += 1;
    crate::log::warn(format!(
        "connection {handle}: aborted: {lost} bytes ingress acknowledged never reached the app \
         (readable up to stream position {}, in order at ingress up to {}, for {:?}; frames \
         held before adoption {}, for no connection {})",
        s.rx_end(),
        s.rx_in_order_end(),
        stream::REORDER_LIMIT,
        stats.rx_early,
        stats.rx_unknown,
    ));
}

/// TCP's engine under the driver: frames go to their connections (or wait for one about to be
/// adopted), and each pass runs every connection's timers and sends what its windows allow.
impl driver::Engine for App {
    type Meta = etran_tcp_rx_meta;

    fn receiver(
        &mut self,
        now: Instant,
    ) -> (&mut Driver, impl driver::Receive<etran_tcp_rx_meta> + '_) {
        let (conns, early, stats) = (&mut self.conns, &mut self.early, &mut self.stats);
        let rx = move |meta: &etran_tcp_rx_meta, payload: &[u8], frame: &[u8]| {
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
        };
        (&mut self.driver, rx)
    }

    /// Visits the connections starting with the next one that has something to send
    /// ([`next_leader`]); ends with the pure ACKs and window updates due.
    fn on_pass(&mut self, now: Instant) -> io::Result<Option<Instant>> {
        let link = &self.driver.link;
        self.stats.rx_unknown += self.early.expire(now, |h| link.is_accepted(h)) as u64;
        let mut deadline = self.early.next_expiry();
        let mut streaming = false;
        let mut more = Vec::new();
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        ids.extend(self.conns.keys().copied());
        let conns = &self.conns;
        let sends = |h| {
            let s: &Stream = &conns[&h];
            s.tx_ready() || s.ack_due() || s.window_update_due()
        };
        if let Some(at) = next_leader(&ids, self.leader, sends) {
            ids.rotate_left(at);
            self.leader = Some(ids[0]);
        }
        for &h in &ids {
            let s = self.conns.get_mut(&h).expect("listed");
            let timer = s.on_timer(now);
            match timer {
                stream::TimerEvent::GaveUp(_) => {
                    s.fail(io::ErrorKind::TimedOut);
                    self.stats.timeouts_given_up += 1;
                }
                stream::TimerEvent::RxHole(lost) => lost_data(&mut self.stats, h, s, lost),
                _ => {}
            }
            if s.is_closed() {
                self.release(h);
                continue;
            }
            s.hold_tail(false);
            if self.transmit_up_to(ConnId(h), TURN_SEGMENTS)? {
                more.push(h);
            }
            let s = &self.conns[&h];
            streaming |= Bursts::streams(s.in_flight() as usize + s.unsent(), s.mss());
            let due = match timer {
                stream::TimerEvent::Waiting(at) => Some(at),
                // What was sent just now has its timers armed by the next pass (on_timer arms
                // them lazily): an app that sleeps after this pass comes back for that first.
                _ if s.needs_timers() => Some(now),
                _ => None,
            };
            if let Some(at) = due {
                deadline = Some(deadline.map_or(at, |d| d.min(at)));
            }
            if s.window_update_due() {
                self.window_update(ConnId(h))?;
            } else if s.ack_due() {
                self.ack(ConnId(h))?;
            }
        }
        // Connections with more to send take further turns, so that their segments interleave
        // where the kernel batches them (a batch of one flow's run meets a switch's queue as a
        // burst: DCTCP's marks then fall on whoever comes next).
        while !more.is_empty() {
            let mut next = Vec::new();
            for &h in &more {
                if self.transmit_up_to(ConnId(h), TURN_SEGMENTS)? {
                    next.push(h);
                }
            }
            more = next;
        }
        self.scratch = ids;
        self.holding.clear();
        if let Some(on) = self.bursts.pass(streaming && self.batching, now) {
            self.batch(on);
        }
        if std::mem::take(&mut self.queue_waited) {
            // Completions wake no one: come back for them (ACKs arriving usually come first).
            let at = now + small_queues::WINDOW;
            deadline = Some(deadline.map_or(at, |d| d.min(at)));
        }
        Ok(deadline)
    }

    fn on_daemon(&mut self) -> io::Result<()> {
        self.poll_daemon()
    }

    fn driver(&mut self) -> &mut Driver {
        &mut self.driver
    }
}

/// Connections the daemon still holds for us are released or aborted.
impl Drop for App {
    fn drop(&mut self) {
        self.release_all();
    }
}

// The app is pollable: its port and its daemon link, under one token (on readiness call
// [`App::poll`] and [`App::poll_daemon`]; wait no longer than [`App::next_deadline`]).
driver::source_via_driver!(App);

/// Where a pass over `ids` (the connections, in an order that stays put while none comes or
/// goes) starts: at the first connection after `last`, the previous pass's first, that is
/// `ready` to send (data, or an ACK); None when none is. The first to send puts its segments
/// (or the ACK that releases its sender's next ones) at the head of the bottleneck's queue, so
/// the turn goes round the senders alone. A plain rotation over every connection let an idle
/// one hand its turns to the one after it: of two DCTCP flows beside a third not yet sending,
/// one led two passes in three and took 45-54 % of the bottleneck to the other's 33-45 %.
fn next_leader(ids: &[u64], last: Option<u64>, ready: impl Fn(u64) -> bool) -> Option<usize> {
    let start = last.and_then(|l| ids.iter().position(|&h| h == l)).map_or(0, |i| i + 1);
    (0..ids.len()).map(|k| (start + k) % ids.len()).find(|&i| ready(ids[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leaders of `passes` passes over `ids`, `ready` the ones with something to send.
    fn leaders(ids: &[u64], ready: &[u64], passes: usize) -> Vec<u64> {
        let mut last = None;
        (0..passes)
            .map(|_| {
                let at = next_leader(ids, last, |h| ready.contains(&h)).expect("one is ready");
                last = Some(ids[at]);
                ids[at]
            })
            .collect()
    }

    #[test]
    fn the_first_turn_goes_round_the_connections_that_have_something_to_send() {
        // A third connection, idle, between the two senders: a plain rotation led with 1 in
        // two passes of three.
        assert_eq!(leaders(&[1, 2, 3], &[1, 2], 6), [1, 2, 1, 2, 1, 2]);
        assert_eq!(leaders(&[3, 1, 2], &[1, 2], 4), [1, 2, 1, 2]);
        assert_eq!(leaders(&[1, 2, 3], &[1, 2, 3], 4), [1, 2, 3, 1]);
        assert_eq!(leaders(&[1, 2, 3], &[2], 3), [2, 2, 2]);
        // Nobody ready: no leader (the pass keeps the map's order).
        assert_eq!(next_leader(&[1, 2], Some(1), |_| false), None);
        // The last leader gone: the search starts at the beginning.
        assert_eq!(next_leader(&[4, 5], Some(9), |_| true), Some(0));
    }

    #[test]
    fn engine_errors_carry_the_errno_of_their_posix_namesake() {
        for (kind, errno) in [
            (io::ErrorKind::WouldBlock, libc::EAGAIN),
            (io::ErrorKind::NotConnected, libc::ENOTCONN),
            (io::ErrorKind::BrokenPipe, libc::EPIPE),
            (io::ErrorKind::ConnectionReset, libc::ECONNRESET),
            (io::ErrorKind::ConnectionAborted, libc::ECONNABORTED),
            (io::ErrorKind::ConnectionRefused, libc::ECONNREFUSED),
            (io::ErrorKind::TimedOut, libc::ETIMEDOUT),
        ] {
            let e = os_error(kind);
            assert_eq!((e.raw_os_error(), e.kind()), (Some(errno), kind));
        }
    }

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
        let t0 = Instant::now();
        let mut at = |handle, rx_pos, now| {
            let s = conns.get_mut(&handle).expect("known");
            deliver_to(s, &mut stats, &frame(handle, rx_pos), &[1; 10], &Blocks::default(), now)
        };
        at(7, 0, t0);
        at(8, 0, t0);
        // [10, 20) of connection 7 never came: it may be late, for a while.
        at(7, 20, t0);
        at(7, 30, t0 + stream::REORDER_LIMIT / 2);
        at(8, 10, t0 + stream::REORDER_LIMIT);
        at(7, 40, t0 + stream::REORDER_LIMIT);
        deliver(&mut conns, &mut stats, &frame(9, 0), &[1; 10]);
        assert_eq!((stats.rx_lost_data, stats.rx_unknown), (1, 1));
        assert_eq!(conns[&7].error(), Some(io::ErrorKind::ConnectionAborted));
        assert_eq!((conns[&8].error(), conns[&8].readable()), (None, 20));
    }
}
