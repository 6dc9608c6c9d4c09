//! `etran daemon`: the control path. One mio `Poll` drives the Unix listener apps connect to,
//! one source per app session, the descriptors the backend's generators' work arrives on
//! ([`Backend::gen_fds`]), the one the transport's control path is handed segments on
//! ([`Control::fd`]), a timer wheel and a Waker that asks the loop to shut down. It reaches
//! the transport and the backend only through their seams ([`crate::transport`],
//! [`crate::backend`]).
//!
//! - [`session`]: one app's connection, its port and its transport.
//! - TCP's control path ([`TcpControl`]: handshakes, release, TIME_WAIT, aborts and resets) and
//!   the compat backend ([`Compat`]: an app's veth port, its AF_XDP socket and UMEM, its slot;
//!   the gen pump) live in their own rooms.
//!
//! The wire protocol is [`crate::proto`]; the app side of it lives in [`crate::app::link`].
//!
//! Nothing outlives its owner: a session's port is torn down when the app closes its socket
//! (exit, crash or `Close`), and every session's when the daemon stops. Links named like ports
//! (`etp<n>k`/`etp<n>a`) left by a daemon that crashed are deleted at start. One daemon per
//! interface and network namespace (an flock under /run/etran), so a second one cannot mistake
//! the first one's ports for stale ones.
//!
//! Stopping: SIGINT/SIGTERM reach the process-wide handler of [`crate::cleanup`]; the cleanup
//! that `etran daemon` registers wakes this loop through its mio [`Waker`], waits for the
//! teardown, and exits 0 (see `cmd/daemon.rs`).
//!
//! Replies are small and sent inline from the loop (a full socket buffer is waited on for at
//! most 5 s, then the session is dropped).
use std::{
    collections::HashMap,
    io,
    os::{
        fd::{AsFd, AsRawFd, OwnedFd},
        unix::fs::PermissionsExt,
    },
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use mio::{net::UnixListener, unix::SourceFd, Events, Interest, Poll, Token, Waker};

use crate::{
    backend::{
        any::AnyBackend,
        compat::Compat,
        native::{Native, ZeroCopy},
        ports::{PortRow, PortTable},
        AppPort, Backend, Pacing,
    },
    loader::kernel,
    log,
    netlink::Netlink,
    timer::TimerWheel,
    transport::{
        homa::control::{homa_handles, HomaControl},
        tcp::{
            control::{Event, Handed, Holder, Notify, SlowTimer, TcpControl},
            handshake::mss_for_mtu,
            listen::{self, SocketId},
        },
        Control,
    },
};

mod connects;
pub mod session;

use crate::proto::{self, Refusal, Reply, Request, Transport};
use session::{AppSession, Input};

const WAKER: Token = Token(0);
const LISTENER: Token = Token(1);
const GEN: Token = Token(2);
const SLOW: Token = Token(3);
/// A process holding a shared connection ended (its pidfd, see [`Daemon::watch_holder`]).
const HOLDERS: Token = Token(4);
const FIRST_SESSION: usize = 5;
const HOUSEKEEPING: Duration = Duration::from_secs(5);

/// TIME_WAIT of the connections apps close first, by default. Linux holds 60 s (2 MSL); a
/// short one suits etran's uses (tests, benchmarks on a private network whose delays are far
/// below a second) and keeps connection churn from piling up tuples; the ISN clock keeps a
/// reopened tuple's sequence numbers apart anyway.
pub const DEFAULT_TIME_WAIT: Duration = Duration::from_secs(1);

pub struct Config {
    pub iface: String,
    pub socket: PathBuf,
    /// How long a 4-tuple an app closed first stays in TIME_WAIT.
    pub time_wait: Duration,
    /// Negotiate ECN in handshakes (DCTCP reacts to the marks); off: loss-based congestion
    /// control only.
    pub ecn: bool,
    /// Print lifecycle lines (serving, sessions registered and closed, stopped) whatever the
    /// verbosity, as `etran daemon` does; otherwise only with `-v` (a bench's built-in daemons,
    /// whose lines would interleave with its results).
    pub announce: bool,
    /// Native backend: whether apps' sockets may bind in zero copy (`etran daemon --zero-copy`).
    pub zero_copy: ZeroCopy,
}

enum Timer {
    Housekeeping,
    Tcp(SlowTimer),
}

pub struct Daemon {
    cfg: Config,
    poll: Poll,
    waker: Arc<Waker>,
    listener: UnixListener,
    sessions: HashMap<Token, AppSession>,
    next_token: usize,
    next_id: u64,
    timers: TimerWheel<Timer>,
    backend: AnyBackend,
    tcp: TcpControl,
    homa: HomaControl,
    /// Connects other processes wait for (`Connecting`).
    connects: connects::Connects,
    /// The link rate the datapath paces Homa's DATA at (homa_pace.h; 0: none): its apps keep
    /// few frames uncompleted.
    homa_link_mbps: u32,
    /// Its apps' ports, published for `etran stats` (freed with the daemon).
    published: PortTable,
    /// Held for the daemon's lifetime: one daemon per interface and network namespace.
    lock: (std::fs::File, PathBuf),
}

impl Daemon {
    /// A lifecycle line (see [`Config::announce`]).
    fn note(&self, msg: impl std::fmt::Display) {
        if self.cfg.announce {
            eprintln!("etran daemon: {msg}");
        } else {
            crate::log::info(format!("daemon: {msg}"));
        }
    }

    /// Checks the datapath on `cfg.iface`, removes stale ports and binds the socket.
    pub fn new(cfg: Config) -> anyhow::Result<Daemon> {
        crate::sys::require_root("etran daemon")?;
        kernel::require(kernel::TCP_DAEMON, "the etran daemon (its apps' ports)")?;
        let dp = crate::loader::find(&cfg.iface)?.with_context(|| {
            format!("etran is not up on {}: run `etran up {}` first", cfg.iface, cfg.iface)
        })?;
        let tcp = crate::transport::tcp::tcp_handles(dp.summary.prog_id)?;
        let homa = homa_handles(dp.summary.prog_id)?;
        let lock = lock_iface(&cfg.iface)?;
        // Before the socket appears, so that a daemon apps can reach is complete. The pump's
        // gen port is named after the interface: one daemon per interface and namespace (the
        // lock above), and a stale pair from a crash is replaced.
        let nic = Netlink::open()?
            .link(&cfg.iface)?
            .with_context(|| format!("no interface named {}", cfg.iface))?;
        let local_mac =
            nic.mac.with_context(|| format!("{} has no Ethernet address", cfg.iface))?;
        let gen_port = format!("etgen{}", dp.summary.ifindex);
        // Set (non-zero) only where the datapath paces through the packet queue (loader::load_as).
        let homa_link_mbps = dp.summary.homa_link_mbps;
        // The backend the datapath was loaded for (`etran up --backend`).
        let mut backend = if dp.summary.backend == "native" {
            let pacing = Pacing::of(&dp.summary.pacing);
            AnyBackend::Native(Native::new(
                &tcp,
                &homa,
                &cfg.iface,
                &gen_port,
                nic.mtu,
                pacing,
                cfg.zero_copy,
            )?)
        } else {
            AnyBackend::Compat(Compat::new(&tcp, &homa, &gen_port, nic.mtu)?)
        };
        // The MSS follows the MTU apps' frames may reach (the NIC's, as far as the ports carry
        // it): read once, so an MTU changed under a running daemon takes a restart.
        let mss = mss_for_mtu(backend.mtu());
        let replay = backend
            .replay(&tcp, &format!("etrep{}", dp.summary.ifindex))
            .context("the slow path's replay")?;
        let tcp = TcpControl::new(tcp, &cfg.iface, local_mac, mss, cfg.time_wait, cfg.ecn, replay)?;
        let homa = HomaControl::new(homa, &cfg.iface, local_mac);
        let published = PortTable::new(dp.summary.prog_id, &cfg.iface, AnyBackend::SLOTS)?;
        let listener = bind_listener(&cfg.socket)?;
        if let Err(e) = backend.remove_stale() {
            let _ = std::fs::remove_file(&cfg.socket);
            return Err(e);
        }
        let poll = Poll::new().context("creating the event loop")?;
        for fd in backend.gen_fds() {
            poll.registry().register(&mut SourceFd(&fd), GEN, Interest::READABLE)?;
        }
        poll.registry().register(&mut SourceFd(&tcp.fd()), SLOW, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut listener = listener;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let now = Instant::now();
        let mut timers = TimerWheel::new(Duration::from_millis(10), now);
        timers.insert(now + HOUSEKEEPING, Timer::Housekeeping);
        Ok(Daemon {
            cfg,
            poll,
            waker,
            listener,
            sessions: HashMap::new(),
            next_token: FIRST_SESSION,
            next_id: 1,
            timers,
            backend,
            tcp,
            homa,
            connects: Default::default(),
            homa_link_mbps,
            published,
            lock,
        })
    }

    /// What the datapath did since it came up, for the closing log: the frames it dropped, by
    /// reason, and, paced, the segments TCP egress queued until their release time and those
    /// the packet queue refused (sent at once); the same of Homa's DATA packets (its link
    /// clock, homa_pace.h).
    fn datapath_report(&self) -> Vec<String> {
        let counters = crate::loader::find(&self.cfg.iface)
            .and_then(|dp| dp.context("the datapath is gone")?.counters());
        let c = match counters {
            Ok(c) => c,
            Err(e) => return vec![format!("datapath: no counters ({e:#})")],
        };
        let drops: Vec<String> = c
            .drops
            .iter()
            .filter(|d| d.count.packets > 0)
            .map(|d| format!("{} {}", d.reason, d.count.packets))
            .collect();
        let mut lines = vec![if drops.is_empty() {
            "datapath drops: none".to_string()
        } else {
            format!("datapath drops: {}", drops.join(", "))
        }];
        if self.backend.pacing() == Pacing::PacketQueue {
            let count = |name: &str| {
                c.events.iter().find(|e| e.event == name).map_or(0, |e| e.count.packets)
            };
            lines.push(format!(
                "pacing: {} segments queued until their release time, {} refused by a full \
                 queue (sent at once); Homa: {} DATA packets queued until the link clock let \
                 them go, {} refused",
                count("tcp_tx_paced"),
                count("tcp_tx_pace_refused"),
                count("homa_tx_paced"),
                count("homa_tx_pace_refused")
            ));
        }
        lines
    }

    /// Waking it makes [`Daemon::run`] return (used from the signal cleanup).
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// Runs the event loop until the waker fires, then tears everything down.
    pub fn run(&mut self) -> anyhow::Result<()> {
        self.note(format!(
            "serving {} on {} (pid {}); {} backend, pacing: {}",
            self.cfg.iface,
            self.cfg.socket.display(),
            std::process::id(),
            self.backend.name(),
            self.backend.pacing()
        ));
        let result = self.run_loop();
        self.shutdown();
        result
    }

    fn run_loop(&mut self) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(64);
        let mut fired = Vec::new();
        loop {
            // The wheel's deadlines are coarse (a tick, plus 1 ms of slack); the gen pump's
            // delayed-ACK deadline is not.
            let now = Instant::now();
            let wheel = self
                .timers
                .next_deadline()
                .map(|d| d.saturating_duration_since(now) + Duration::from_millis(1));
            let gen = self.backend.gen_deadline().map(|d| d.saturating_duration_since(now));
            let timeout = match (wheel, gen) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match self.poll.poll(&mut events, timeout) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r.context("waiting for events")?,
            }
            let mut holder_ended = false;
            for ev in events.iter() {
                match ev.token() {
                    WAKER => return Ok(()),
                    LISTENER => self.accept(),
                    // Drained below, on every pass.
                    GEN | SLOW => {}
                    HOLDERS => holder_ended = true,
                    t => self.serve(t),
                }
            }
            if holder_ended {
                // A parked connection whose last holder died is closed now, not at the next
                // housekeeping.
                self.tcp.expire_parked(&mut self.timers, Timer::Tcp);
            }
            // Both rings are drained on every pass, not only when epoll says so: before the
            // timers, so that an answer waiting there is not taken for a loss, and as a
            // backstop to `loader::drain_ring`'s fence against a lost ring wakeup (it costs
            // no syscall).
            let now = Instant::now();
            if let Err(e) = self.backend.on_gen_wake(now) {
                log::warn(format!("gen pump: {e:#}"));
            }
            let mut out = Vec::new();
            self.tcp.on_readable(&mut self.timers, Timer::Tcp, &mut out);
            self.notify(out);
            if let Err(e) = self.backend.on_gen_deadline(now) {
                log::warn(format!("gen pump: {e:#}"));
            }
            self.timers.expire(now, &mut fired);
            for t in fired.drain(..) {
                match t {
                    Timer::Housekeeping => {
                        log::debug(format!("{} app session(s)", self.sessions.len()));
                        if let Err(e) = self.backend.on_housekeeping() {
                            log::warn(format!("gen pump: {e:#}"));
                        }
                        self.tcp.expire_parked(&mut self.timers, Timer::Tcp);
                        self.connects.expire(now);
                        self.timers.insert(now + HOUSEKEEPING, Timer::Housekeeping);
                    }
                    Timer::Tcp(t) => {
                        let out = self.tcp.on_timeout(&mut self.timers, Timer::Tcp, t);
                        self.notify(out);
                    }
                }
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    let id = self.next_id;
                    self.next_id += 1;
                    if let Err(e) =
                        self.poll.registry().register(&mut stream, token, Interest::READABLE)
                    {
                        log::warn(format!("registering app session {id}: {e}"));
                        continue;
                    }
                    log::info(format!("app session {id} connected"));
                    self.sessions.insert(token, AppSession::new(stream, id));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn(format!("accepting an app: {e}"));
                    return;
                }
            }
        }
    }

    fn serve(&mut self, token: Token) {
        let Some(session) = self.sessions.get_mut(&token) else { return };
        let mut inputs = Vec::new();
        session.read(&mut inputs);
        for input in inputs {
            let close = match input {
                Input::Request(Request::Register { version, transport, queues }) => {
                    match self.register(token, version, transport, queues) {
                        Ok(()) => false,
                        Err(refusal) => {
                            self.refuse(token, refusal);
                            true
                        }
                    }
                }
                Input::Request(Request::Listen { port, socket, idle }) => {
                    self.listen(token, port, socket, idle);
                    false
                }
                Input::Request(Request::Accepting { port }) => {
                    self.tcp.accepting(&mut self.timers, Timer::Tcp, token, port);
                    false
                }
                Input::Request(Request::Unlisten { port }) => {
                    self.tcp.unlisten(&mut self.timers, token, port);
                    self.tell(token, &Reply::Unlistened { port });
                    false
                }
                Input::Request(Request::Connect { remote_ip, remote_port, local_port }) => {
                    let remote = std::net::SocketAddrV4::new(remote_ip, remote_port);
                    self.connect(token, remote, local_port);
                    false
                }
                Input::Request(Request::Release { handle, time_wait }) => {
                    self.tcp.release(&mut self.timers, Timer::Tcp, token, handle, time_wait);
                    false
                }
                Input::Request(Request::Abort { handle }) => {
                    self.tcp.abort(token, handle);
                    false
                }
                Input::Request(Request::Batch { on }) => {
                    if let Some(s) = self.sessions.get_mut(&token) {
                        if let (Some(port), Some(transport)) = (s.port.as_mut(), s.transport) {
                            port.batch_sends(on);
                            self.published.set(&port_row(s.stream.as_fd(), port, transport));
                        }
                    }
                    false
                }
                Input::Request(Request::HomaBind { port }) => {
                    self.homa_bind(token, port);
                    false
                }
                Input::Request(Request::HomaIds) => {
                    let reply = match self.homa.more_ids(token) {
                        Ok(ids) => Reply::HomaIds { ids },
                        Err(refusal) => Reply::Error { refusal },
                    };
                    self.tell(token, &reply);
                    false
                }
                Input::Request(Request::HomaPeer { ip }) => {
                    let refusal = self.homa.peer(ip).err();
                    self.tell(token, &Reply::HomaPeer { ip, refusal });
                    false
                }
                Input::Request(Request::Share { pid, handles, passing }) => {
                    self.share(token, pid, &handles, passing);
                    false
                }
                Input::Request(Request::AdoptPassed { pid }) => {
                    self.adopt_passed(token, pid);
                    false
                }
                Input::Request(Request::Connecting { errno }) => {
                    if let Some(Ok(id)) = self.take_fd(token).map(|fd| socket_id(&fd)) {
                        self.connects.show(token, id, errno);
                    }
                    self.tell(token, &Reply::Shared);
                    false
                }
                Input::Request(Request::Forked { pid, handles }) => {
                    if let Some(pidfd) = self.take_fd(token) {
                        self.watch_holder(&pidfd);
                        self.tcp.forked(pid, &pidfd, &handles);
                    }
                    false
                }
                Input::Request(Request::Adopt { handle }) => {
                    self.adopt(token, handle);
                    false
                }
                Input::Request(Request::Park { handle, pid, keep }) => {
                    let out = self.tcp.park(&mut self.timers, Timer::Tcp, token, handle, pid, keep);
                    self.handed(out);
                    false
                }
                Input::Request(Request::Surrendered { handle }) => {
                    if let Some(stream) = self.take_fd(token) {
                        let out = self.tcp.surrendered(token, handle, stream);
                        self.handed(out);
                    }
                    false
                }
                Input::Request(Request::Close) => true,
                Input::Closed => true,
                Input::Bad(e) => {
                    self.refuse(token, Refusal::new(libc::EPROTO, e.to_string()));
                    true
                }
            };
            if close {
                self.close(token);
                return;
            }
        }
    }

    fn register(
        &mut self,
        token: Token,
        version: u32,
        transport: Transport,
        queues: u32,
    ) -> Result<(), Refusal> {
        proto::check_version(version)?;
        let session = self.sessions.get(&token).expect("live session");
        if session.port.is_some() {
            return Err(Refusal::new(libc::EISCONN, "this session is already registered"));
        }
        if queues != 1 {
            let why =
                format!("{queues} queues asked for; this daemon gives each app 1 queue for now");
            return Err(Refusal::new(libc::EINVAL, why));
        }
        let slot = self.free_slot().ok_or_else(|| {
            Refusal::new(libc::ENOBUFS, "no free app port (all slots are in use)")
        })?;
        let port = self
            .backend
            .open_port(slot, transport)
            .map_err(|e| Refusal::new(libc::EIO, format!("{e:#}")))?;
        let session = self.sessions.get_mut(&token).expect("live session");
        let id = session.id;
        let name = port.name().to_string();
        self.published.set(&port_row(session.stream.as_fd(), &port, transport));
        let (mut reply, fds) = port.registered(&self.cfg.iface, proto::PROTOCOL_VERSION);
        if let proto::Reply::Registered { homa_link_mbps, .. } = &mut reply {
            *homa_link_mbps = if transport == Transport::Homa { self.homa_link_mbps } else { 0 };
        }
        let sent = proto::send_fds(session.stream.as_fd(), &proto::encode(&reply), &fds);
        drop(fds);
        session.port = Some(port);
        session.transport = Some(transport);
        sent.map_err(|e| Refusal::new(e.raw_os_error().unwrap_or(libc::EIO), e.to_string()))?;
        self.note(format!("app session {id} registered: slot {slot}, port {name}"));
        Ok(())
    }

    /// `Listen`: with `socket`, the kernel socket the message carried must be a TCP socket
    /// bound to `port`; the listener is then that socket's (see `transport::tcp::listen`).
    fn listen(&mut self, token: Token, port: u16, socket: bool, idle: bool) {
        let Some(session) = self.sessions.get_mut(&token) else { return };
        let shown = socket.then(|| session.fds.pop_front());
        let id = match shown.map(|fd| listening_socket(fd, port)).transpose() {
            Ok(id) => id,
            Err(refusal) => return self.tell(token, &Reply::ListenFailed { port, refusal }),
        };
        let reply = match session.port.as_ref().map(|p| p.slot()) {
            None => Reply::ListenFailed { port, refusal: not_registered() },
            Some(slot) => match self.tcp.listen(token, slot, port, id, !idle) {
                Ok(()) => {
                    log::info(format!("app session {} listens on {port}", session.id));
                    Reply::Listening { port }
                }
                Err(refusal) => Reply::ListenFailed { port, refusal },
            },
        };
        self.tell(token, &reply);
    }

    /// The next descriptor session `token` sent.
    fn take_fd(&mut self, token: Token) -> Option<OwnedFd> {
        self.sessions.get_mut(&token)?.fds.pop_front()
    }

    /// `Share`: the pidfd, then one kernel socket per connection.
    fn share(&mut self, token: Token, pid: u32, handles: &[u64], passing: bool) {
        let pidfd = self.take_fd(token);
        let mut shown = Vec::new();
        for &h in handles {
            if let Some(Ok(id)) = self.take_fd(token).map(|fd| socket_id(&fd)) {
                self.connects.up(&id);
                shown.push((h, id));
            }
        }
        if let Some(pidfd) = pidfd {
            self.watch_holder(&pidfd);
            self.tcp.share(token, Holder { pid, pidfd: &pidfd }, &shown, passing);
        }
        self.tell(token, &Reply::Shared);
    }

    /// Wakes the loop (`HOLDERS`) when the process behind `pidfd` ends. The sharing table keeps
    /// its own copy of the pidfd (the same open file) while the process holds a connection;
    /// the kernel drops the registration when the file's last descriptor closes, so nothing is
    /// deregistered by hand.
    fn watch_holder(&self, pidfd: &OwnedFd) {
        let fd = pidfd.as_raw_fd();
        if let Err(e) =
            self.poll.registry().register(&mut SourceFd(&fd), HOLDERS, Interest::READABLE)
        {
            log::warn(format!("watching a process that holds connections: {e}"));
        }
    }

    /// `Adopt`: the connection's kernel socket comes with it.
    fn adopt(&mut self, token: Token, handle: u64) {
        self.adopt_shown(token, handle, |d, slot, id| d.tcp.adopt(token, slot, handle, id));
    }

    /// `AdoptPassed`: the receiver's pidfd, then the kernel socket it received.
    fn adopt_passed(&mut self, token: Token, pid: u32) {
        let Some(pidfd) = self.take_fd(token) else {
            let refusal = Refusal::new(libc::EBADF, "no pidfd came with the message");
            return self.handed(vec![Handed::AdoptFailed { to: token, handle: 0, refusal }]);
        };
        self.watch_holder(&pidfd);
        let by = Holder { pid, pidfd: &pidfd };
        self.adopt_shown(token, 0, |d, slot, id| match d.connects.errno(&id) {
            // A connect the process that began it has not finished (or that failed).
            Some(errno) => {
                let refusal = Refusal::new(errno, "the connect of another holder".to_string());
                vec![Handed::AdoptFailed { to: token, handle: 0, refusal }]
            }
            None => d.tcp.adopt_passed(token, slot, by, id),
        });
    }

    /// An adoption of `handle` (0: by the socket) showing the next kernel socket session
    /// `token` sent: `adopt` runs once the session's port slot and the socket's identity are
    /// known, or the session is refused.
    fn adopt_shown(
        &mut self,
        token: Token,
        handle: u64,
        adopt: impl FnOnce(&mut Daemon, u32, SocketId) -> Vec<Handed>,
    ) {
        let slot = self.sessions.get(&token).and_then(|s| s.port.as_ref()).map(|p| p.slot());
        let shown = self.take_fd(token).map(|fd| socket_id(&fd));
        let out = match (slot, shown) {
            (Some(slot), Some(Ok(id))) => adopt(self, slot, id),
            (None, _) => vec![Handed::AdoptFailed { to: token, handle, refusal: not_registered() }],
            (_, Some(Err(refusal))) => vec![Handed::AdoptFailed { to: token, handle, refusal }],
            (_, None) => {
                let refusal = Refusal::new(libc::EBADF, "no socket came with the message");
                vec![Handed::AdoptFailed { to: token, handle, refusal }]
            }
        };
        self.handed(out);
    }

    /// Tells sessions what moving shared connections asks of them.
    fn handed(&mut self, out: Vec<Handed>) {
        for h in out {
            match h {
                Handed::Surrender { to, handle, rx_pos } => {
                    self.tell(to, &Reply::Surrender { handle, rx_pos })
                }
                Handed::Unshared { to, handle } => self.tell(to, &Reply::Unshared { handle }),
                Handed::AdoptFailed { to, handle, refusal } => {
                    self.tell(to, &Reply::AdoptFailed { handle, refusal })
                }
                Handed::Adopted { to, handle, at, stream } => {
                    let Some(s) = self.sessions.get(&to) else { continue };
                    let msg = proto::encode(&Reply::Adopted { handle, at });
                    if let Err(e) = proto::send_fds(s.stream.as_fd(), &msg, &[stream.as_fd()]) {
                        log::warn(format!("app session {}: {e}", s.id));
                        self.close(to);
                    }
                }
            }
        }
    }

    fn homa_bind(&mut self, token: Token, port: u16) {
        let Some(session) = self.sessions.get(&token) else { return };
        let reply = match (session.port.as_ref().map(|p| p.slot()), session.transport) {
            (Some(slot), Some(Transport::Homa)) => match self.homa.bind(token, slot, port) {
                Ok((port, ids)) => {
                    log::info(format!("app session {} bound Homa port {port}", session.id));
                    Reply::HomaBound { port, ids }
                }
                Err(refusal) => Reply::HomaBindFailed { port, refusal },
            },
            (Some(_), _) => {
                let refusal = Refusal::new(libc::EPROTOTYPE, "this session registered for TCP");
                Reply::HomaBindFailed { port, refusal }
            }
            (None, _) => Reply::HomaBindFailed { port, refusal: not_registered() },
        };
        self.tell(token, &reply);
    }

    fn connect(&mut self, token: Token, remote: std::net::SocketAddrV4, local_port: Option<u16>) {
        let Some(session) = self.sessions.get(&token) else { return };
        let result = match session.port.as_ref().map(|p| p.slot()) {
            None => Err(not_registered()),
            Some(slot) => {
                self.tcp.connect(&mut self.timers, Timer::Tcp, token, slot, remote, local_port)
            }
        };
        if let Err(refusal) = result {
            self.tell(token, &Reply::ConnectFailed { remote, refusal });
        }
    }

    /// Sends what the slow path has to tell sessions, in the protocol's words.
    fn notify(&mut self, out: Vec<Notify>) {
        for n in out {
            let reply = match n.event {
                Event::Connected { handle, init } => Reply::Connected { handle, init },
                Event::Accepted { handle, init } => Reply::Accepted { handle, init },
                Event::ConnectFailed { remote, refusal } => {
                    Reply::ConnectFailed { remote, refusal }
                }
                Event::Reset { handle } => Reply::Reset { handle },
            };
            self.tell(n.owner, &reply);
        }
    }

    /// Sends `reply` to a session; a session that cannot take it is closed.
    fn tell(&mut self, owner: Token, reply: &Reply) {
        let Some(s) = self.sessions.get(&owner) else { return };
        if let Err(e) = proto::send_fds(s.stream.as_fd(), &proto::encode(reply), &[]) {
            log::warn(format!("app session {}: {e}", s.id));
            self.close(owner);
        }
    }

    fn free_slot(&self) -> Option<u32> {
        (1..AnyBackend::SLOTS).find(|&s| {
            let ours =
                self.sessions.values().any(|x| x.port.as_ref().is_some_and(|p| p.slot() == s));
            !ours && !self.backend.slot_in_use(s)
        })
    }

    /// Tells the session why it is being closed (best effort).
    fn refuse(&mut self, token: Token, refusal: Refusal) {
        if let Some(s) = self.sessions.get(&token) {
            log::warn(format!("app session {}: {refusal}", s.id));
            let msg = proto::encode(&Reply::Error { refusal });
            let _ = proto::send_fds(s.stream.as_fd(), &msg, &[]);
        }
    }

    fn close(&mut self, token: Token) {
        let Some(mut s) = self.sessions.remove(&token) else { return };
        let _ = self.poll.registry().deregister(&mut s.stream);
        // Connections before the port: nothing may route to a slot that is gone.
        match s.transport {
            Some(Transport::Tcp) => {
                self.tcp.teardown(&mut self.timers, token);
                let out = self.tcp.forget_sharer(token);
                self.handed(out);
                self.connects.forget(token);
                // What it kept for other holders, if none lives any more.
                self.tcp.expire_parked(&mut self.timers, Timer::Tcp);
            }
            Some(Transport::Homa) => self.homa.teardown(token),
            None => {}
        }
        if let Some(mut port) = s.port.take() {
            self.published.clear(port.slot());
            self.backend.close_port(&mut port);
            self.note(format!("app session {} closed: port {} removed", s.id, port.name()));
        } else {
            log::info(format!("app session {} closed", s.id));
        }
    }

    /// Tears down every session and removes the socket file.
    fn shutdown(&mut self) {
        let tokens: Vec<Token> = self.sessions.keys().copied().collect();
        for t in tokens {
            self.close(t);
        }
        self.tcp.shutdown(&mut self.timers);
        self.homa.shutdown();
        let _ = self.poll.registry().deregister(&mut self.listener);
        for fd in self.backend.gen_fds() {
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
        let _ = self.poll.registry().deregister(&mut SourceFd(&self.tcp.fd()));
        if let Err(e) = std::fs::remove_file(&self.cfg.socket) {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn(format!("removing {}: {e}", self.cfg.socket.display()));
            }
        }
        let _ = std::fs::remove_file(&self.lock.1);
        log::info(self.backend.report());
        for line in self.datapath_report() {
            log::info(line);
        }
        log::info(self.tcp.report());
        log::info(self.homa.report());
        self.note("stopped; every app port was removed");
    }
}

/// The row `etran stats` shows for `port`, an app's of `transport` on the session `stream`.
fn port_row(
    stream: std::os::fd::BorrowedFd,
    port: &crate::backend::any::AnyPort,
    transport: Transport,
) -> PortRow {
    PortRow {
        slot: port.slot(),
        pid: crate::sys::peer_pid(stream).unwrap_or(0),
        transport,
        port: port.name().to_string(),
        queue: port.queue(),
        mode: port.mode(),
        batching: port.batching(),
    }
}

/// Takes the per-interface daemon lock (`/run/etran/daemon-net<ino>-<iface>.lock`, flock), so
/// that a second daemon cannot remove the first one's ports as stale.
fn lock_iface(iface: &str) -> anyhow::Result<(std::fs::File, PathBuf)> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata("/proc/thread-self/ns/net")
        .context("reading our network namespace")?
        .ino();
    std::fs::create_dir_all("/run/etran").context("creating /run/etran")?;
    let path = format!("/run/etran/daemon-net{ino}-{iface}.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {path}"))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!("another etran daemon already serves {iface} in this network namespace");
    }
    Ok((file, PathBuf::from(path)))
}

/// The identity (device, inode) of a kernel socket an app showed: the socket object a
/// descriptor refers to, whichever process holds it.
fn socket_id(fd: &OwnedFd) -> Result<SocketId, Refusal> {
    listen::socket_id(fd.as_fd())
        .ok_or_else(|| Refusal::new(libc::ENOTSOCK, "the descriptor shown is not a socket"))
}

/// The identity of the kernel socket an app showed for its listener on `port`: a TCP/IPv4
/// socket bound to that port, as the app's `bind` left it (so the kernel, too, holds the port
/// for it).
fn listening_socket(fd: Option<OwnedFd>, port: u16) -> Result<SocketId, Refusal> {
    let bad = |what: &str| Refusal::new(libc::EINVAL, format!("the listener's socket {what}"));
    let fd = fd.ok_or_else(|| bad("did not come with the message"))?;
    let id = socket_id(&fd).map_err(|_| bad("is not a socket"))?;
    let raw = fd.as_raw_fd();
    // SAFETY: plain queries on a descriptor we own; the buffers are ours.
    unsafe {
        let mut ty: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let stream = libc::getsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        ) == 0
            && ty == libc::SOCK_STREAM;
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let named = libc::getsockname(raw, (&mut sin as *mut libc::sockaddr_in).cast(), &mut len);
        if !stream
            || named != 0
            || i32::from(sin.sin_family) != libc::AF_INET
            || u16::from_be(sin.sin_port) != port
        {
            return Err(bad(&format!("is not a TCP/IPv4 socket bound to port {port}")));
        }
    }
    Ok(id)
}

/// Binds the Unix listener: creates the parent directory, replaces a stale socket file (one
/// nobody listens on) and refuses to steal a live one; mode 0660.
fn bind_listener(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another daemon is listening on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
}

/// A request that needs a port, before `Register`.
fn not_registered() -> Refusal {
    Refusal::new(libc::ENOTCONN, "register first")
}
