//! The process's eTran sockets: the one [`App`] (registered with the daemon when the first
//! socket needs it), the sockets by descriptor, and the waits.
//!
//! Every descriptor is a real kernel socket: the one `socket()` made (a TCP/IPv4 socket is
//! decided at `bind`/`connect`/`listen`), or a fresh unconnected one standing for an accepted
//! connection. [`TRACKED`] says, without a lock, which descriptors are ours; every other one
//! goes to the kernel untouched.
//!
//! Threads: one mutex guards the state; nobody sleeps holding it. A thread that must wait
//! sleeps in `ppoll` on the port's AF_XDP socket, the daemon link, its own eventfd and the
//! kernel descriptors it also waits for; a thread whose pass moved something wakes the
//! others' eventfds (their frames may have been taken off the ring by it).
use std::{
    cell::Cell,
    collections::VecDeque,
    io,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsFd, AsRawFd, RawFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use etran::{
    app::{ready, App, ConnId, Connecting, DaemonLink, IntMap, Listener},
    proto::Transport,
};
use libc::c_int;

use crate::real;

/// Descriptors at or above this are never ours (a socket getting one stays the kernel's).
pub const MAX_FD: usize = 1 << 20;

/// Bit `fd` is set while `fd` is one of ours.
static TRACKED: [AtomicU64; MAX_FD / 64] = [const { AtomicU64::new(0) }; MAX_FD / 64];

/// Whether `fd` is ours. One bit test, no system call: a child that shares our memory without
/// having run the fork handlers cannot exist, since `vfork` is served as `fork` (see `vfork`
/// in lib.rs).
pub fn tracked(fd: c_int) -> bool {
    let fd = fd as usize;
    fd < MAX_FD && TRACKED[fd / 64].load(Ordering::Acquire) & (1 << (fd % 64)) != 0
}

pub fn set_tracked(fd: RawFd, on: bool) {
    let (word, bit) = (fd as usize / 64, 1u64 << (fd as usize % 64));
    if on {
        TRACKED[word].fetch_or(bit, Ordering::Release);
    } else {
        TRACKED[word].fetch_and(!bit, Ordering::Release);
    }
}

/// What the environment said when the shim was loaded: a program may clear its environment
/// before forking workers (nginx does), which still use eTran.
struct Settings {
    /// The daemon's socket: `ETRAN_DAEMON_SOCKET` (set by `etran run`), else the default.
    daemon_socket: String,
    /// How long a blocking call busy-polls before it sleeps (`ETRAN_BUSY_POLL_US`, default 50).
    busy_poll: Duration,
    /// Whether sends inside an event loop's pass wait for the thread's next wait to be kicked
    /// (`ETRAN_TX_COALESCE`, default 1; 0: every send kicks).
    coalesce: bool,
}

static SETTINGS: std::sync::OnceLock<Settings> = std::sync::OnceLock::new();

/// Reads the settings from the environment (at load).
pub fn read_settings() {
    SETTINGS.get_or_init(|| Settings {
        daemon_socket: std::env::var("ETRAN_DAEMON_SOCKET")
            .unwrap_or_else(|_| "/run/etran/etran.sock".into()),
        busy_poll: Duration::from_micros(
            std::env::var("ETRAN_BUSY_POLL_US").ok().and_then(|v| v.parse().ok()).unwrap_or(50),
        ),
        coalesce: std::env::var("ETRAN_TX_COALESCE").map_or(true, |v| v != "0"),
    });
}

fn settings() -> &'static Settings {
    read_settings();
    SETTINGS.get().expect("just set")
}

fn busy_poll() -> Duration {
    settings().busy_poll
}

/// How often a pass reads the daemon link while the program never sleeps (a sleeping one
/// wakes when the link is readable): connections accepted and resets wait at most this long.
const LINK_CHECK: Duration = Duration::from_micros(200);

/// How often a pass asks the daemon about the connects parent processes are making
/// (`Kind::ParentConnecting`): such a connect is seen up at most this long after the parent.
pub const PARENT_CHECK: Duration = Duration::from_millis(2);

/// Whether a question last asked at `last` (None: never) is to be asked again at `now`, at
/// most every `every`.
pub fn due(last: Option<Instant>, now: Instant, every: Duration) -> bool {
    last.is_none_or(|t| now.saturating_duration_since(t) >= every)
}

/// How often `epoll_wait` asks the kernel's set while eTran descriptors have events: kernel
/// descriptors' events wait at most this long behind a busy stream of eTran ones.
pub const KERNEL_CHECK: Duration = Duration::from_micros(200);

/// Frames written into the port and not yet kicked (`Shim::send`) that make a kick at once.
const TX_BATCH: usize = 32;

/// Set while sends wait for a kick (`Shim::send` deferred one); cleared by every flush, all
/// under the lock. Read without it by the calls that wait in the kernel.
static UNKICKED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// This thread came back from a wait (poll, select, epoll): it runs an event loop, whose
    /// pass ends at its next wait.
    static IN_LOOP: Cell<bool> = const { Cell::new(false) };
}

/// The thread comes back from a wait: its sends until the next one are one pass's.
pub fn back_from_wait() {
    let _ = IN_LOOP.try_with(|l| l.set(true));
}

/// Set while a connect forked children wait for may be in progress
/// (`Shim::show_connect_to_children`). Read without the lock by the calls that may sleep.
pub static AWAITED: AtomicBool = AtomicBool::new(false);

/// How long a call about to sleep, or a close, waits for the connects forked children wait for,
/// and `sendmsg` for the connects of the descriptors it passes.
const AWAITED_LIMIT: Duration = Duration::from_secs(1);

/// Before a call that may sleep in the kernel (a wait or a read on kernel descriptors only, a
/// sleep): the connects forked children wait for finish first (see
/// [`finish_awaited_connects`]), and the frames sends left for the end of the pass are kicked
/// now, since nothing else would send them while this thread sleeps.
pub fn flush_unkicked() {
    if AWAITED.load(Ordering::Relaxed) && !held_here() {
        drop(finish_awaited_connects(lock()));
    }
    if UNKICKED.load(Ordering::Relaxed) && !held_here() {
        let mut g = lock();
        if let Some(app) = shim(&mut g).app.as_mut() {
            let _ = app.flush();
        }
        UNKICKED.store(false, Ordering::Relaxed);
    }
}

/// The connects forked children wait for (`Kind::ParentConnecting` there) finish first, for
/// up to [`AWAITED_LIMIT`]: while this process sleeps in the kernel, or once it closed the
/// socket, nothing would take the handshake's answer and the children would wait as long. Once
/// up, each is shared with them (`Shim::share_with_children`, run by the pass). Returns the
/// lock again.
pub fn finish_awaited_connects(g: Guard) -> Guard {
    let (g, done) = finish_connects(g, Shim::connects_awaited);
    if !done {
        eprintln!("etran: a connect forked children wait for is still in progress");
    }
    // Asked again by the next connect shown: a connect that takes longer does not hold up
    // every call.
    AWAITED.store(false, Ordering::Relaxed);
    g
}

/// Runs passes until the connects `pending` says are in progress finished, for up to
/// [`AWAITED_LIMIT`] (a handshake whose answer never comes must not hang the caller). Returns
/// the lock again, and whether they finished.
pub fn finish_connects(g: Guard, pending: impl Fn(&Shim) -> bool) -> (Guard, bool) {
    let r =
        block_on(g, Some(AWAITED_LIMIT), &mut [], false, |s, _| (!pending(s)).then_some(Ok(())));
    (lock(), r.is_ok())
}

/// How long a connection the app closed may take to finish closing before it is aborted (the
/// kernel's FIN_WAIT2 timeout).
const CLOSING_LIMIT: Duration = Duration::from_secs(60);

/// What a socket of ours is.
pub enum Kind {
    /// TCP/IPv4, neither connected nor listening yet: the kernel's until then (`bound` is
    /// where the kernel bound it).
    Fresh {
        bound: Option<SocketAddrV4>,
    },
    /// Listening through eTran; the kernel socket listens as well, for what the kernel
    /// receives (loopback, other interfaces: the datapath takes the port's SYNs on the
    /// daemon's interface first), and so that a receiver of its descriptor (`SCM_RIGHTS`) or
    /// a program after `exec` sees a listening socket. The daemon knows the listener by its
    /// kernel socket, which a forked child inherits: the child joins it (`adopt_listener`) and
    /// connections are shared out among the processes that accept (`accepting`: this one
    /// has accepted or waited for connections; until then none comes to it).
    Listening {
        listener: Listener,
        backlog: VecDeque<ConnId>,
        accepting: bool,
    },
    Connecting(Connecting),
    /// A fresh socket the parent held at the fork, which the parent is connecting now (the
    /// daemon said so): calls wait for its connect, as on a connecting kernel socket, and
    /// passes ask the daemon again every [`PARENT_CHECK`] (`Shim::ask_parents`).
    ParentConnecting,
    Conn {
        id: ConnId,
        rd_shut: bool,
        wr_shut: bool,
    },
    /// A connect that failed (its errno went to the caller or to `SO_ERROR`).
    Failed,
}

pub struct Sock {
    pub kind: Kind,
    /// O_NONBLOCK as the app set it (a listener's kernel socket is always non-blocking).
    pub nonblock: bool,
    pub rcvtimeo: Option<Duration>,
    pub sndtimeo: Option<Duration>,
    pub nodelay: bool,
    /// The pending `SO_ERROR`.
    pub error: c_int,
    /// Its state is another process's: opened before a fork by the parent, or a connection
    /// handed over to a process that adopted it since. A connection is adopted at its next use
    /// (`Shim::adopt_conn`), a listener joined (`Shim::adopt_listener`).
    pub inherited: bool,
    /// A connection open at a fork: other processes may hold its descriptor, so closing ours
    /// parks it at the daemon while one does (`shared.rs`).
    pub shared: bool,
    /// A fresh socket at a fork: the children holding its descriptor too (pids). Once this
    /// process connects it they wait for the connect (`Shim::show_connect_to_children`) and
    /// hold the connection as well (`Shim::share_with_children`).
    pub forked_to: Vec<libc::pid_t>,
    /// A fresh socket the parent held at the fork: the parent may connect it, and this
    /// process then uses that connection (`Shim::adopt_from_parent`).
    pub from_parent: bool,
    /// When this process last asked the daemon whether the parent connected it (a wait's
    /// passes ask again only [`PARENT_CHECK`] later: `Shim::adopt_from_parent_paced`).
    pub parent_asked: Option<Instant>,
    /// How many descriptors refer to it (`dup`): it is released when the last one closes.
    refs: usize,
}

impl Sock {
    /// Whether this is a connect of this process's in progress that forked children wait for.
    pub fn connect_awaited(&self) -> bool {
        !self.inherited && matches!(self.kind, Kind::Connecting(_)) && !self.forked_to.is_empty()
    }

    pub fn new(kind: Kind, nonblock: bool) -> Sock {
        Sock {
            kind,
            nonblock,
            rcvtimeo: None,
            sndtimeo: None,
            nodelay: false,
            error: 0,
            inherited: false,
            shared: false,
            forked_to: Vec::new(),
            from_parent: false,
            parent_asked: None,
            refs: 1,
        }
    }
}

/// What an epoll set watches on one of our descriptors (`epoll_ctl`'s event).
pub struct Interest {
    pub events: u32,
    pub data: u64,
    /// The kernel's epoll set watches the kernel socket too: a fresh socket's (the kernel's
    /// until it connects or listens), a listener's (what the kernel receives: loopback).
    pub in_kernel: bool,
    /// `EPOLLET`: the events reported and not consumed since (an edge is an event that rises
    /// again after the program consumed it: read what was readable, filled the send space,
    /// took the last connection).
    pub reported: u32,
}

impl Interest {
    pub fn new(events: u32, data: u64, in_kernel: bool) -> Interest {
        Interest { events, data, in_kernel, reported: 0 }
    }

    /// Of the events `ready` now, those to report: all of them (level-triggered), or
    /// (`EPOLLET`) those not reported since the program last consumed them.
    pub fn report(&mut self, ready: u32) -> u32 {
        if self.events & libc::EPOLLET as u32 == 0 {
            return ready;
        }
        let edge = ready & !self.reported;
        self.reported = ready;
        edge
    }
}

/// Work left when the app closed a descriptor: a connection finishing its close, a connect
/// nobody waits for.
enum Orphan {
    Closing(ConnId, Instant),
    Connect(Connecting),
}

/// The interface the daemon serves: its addresses.
struct Iface {
    ips: Vec<Ipv4Addr>,
}

pub struct Shim {
    pub(crate) app: Option<App>,
    iface: Option<Iface>,
    /// The daemon could not be reached: every socket stays the kernel's.
    unavailable: bool,
    /// Our descriptors → their socket's key in `socks` (descriptors `dup`ed from one another
    /// share one).
    fds: IntMap<RawFd, u64>,
    socks: IntMap<u64, Sock>,
    next_key: u64,
    /// Epoll sets (by their descriptor, tracked too) watching descriptors of ours.
    pub epolls: IntMap<RawFd, IntMap<RawFd, Interest>>,
    orphans: Vec<Orphan>,
    /// Eventfds of the threads sleeping now.
    sleepers: Vec<RawFd>,
    /// A sleep saw the daemon link readable: the next pass reads it.
    link_readable: bool,
    /// A connect of a socket forked children hold too ended, up or failed (`Sock::forked_to`).
    children_connect_ended: bool,
    /// Some while a socket waits for its parent's connect (`Kind::ParentConnecting`): when a
    /// pass asks the daemon again.
    pub(crate) parent_due: Option<Instant>,
    /// When a pass reads the daemon link even if no sleep saw it readable.
    link_due: Instant,
    /// When `epoll_wait` asks the kernel's set again while eTran descriptors have events to
    /// report (without them it always asks).
    pub kernel_due: Instant,
}

static SHIM: Mutex<Option<Shim>> = Mutex::new(None);

/// The state, locked by this thread.
pub struct Guard(MutexGuard<'static, Option<Shim>>);

thread_local! {
    /// This thread holds the lock: the library's own system calls under it come through the
    /// shim's wrappers (the shim is the first object the loader searches), which must not take
    /// it again.
    static HOLDING: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread holds the lock (the call comes from the library itself).
pub fn held_here() -> bool {
    HOLDING.try_with(Cell::get).unwrap_or(true)
}

impl std::ops::Deref for Guard {
    type Target = Option<Shim>;
    fn deref(&self) -> &Option<Shim> {
        &self.0
    }
}

impl std::ops::DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut Option<Shim> {
        &mut self.0
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = HOLDING.try_with(|h| h.set(false));
    }
}

pub fn lock() -> Guard {
    let mut g = Guard(SHIM.lock().unwrap_or_else(|p| p.into_inner()));
    let _ = HOLDING.try_with(|h| h.set(true));
    if g.is_none() {
        *g = Some(Shim::new());
    }
    g
}

pub fn shim(g: &mut Guard) -> &mut Shim {
    g.as_mut().expect("initialised by lock")
}

/// The errno of an App error: its own (or the daemon's refusal's), else the one its kind names
/// (EIO only for the rest).
pub fn errno_of(e: &io::Error) -> c_int {
    use io::ErrorKind::*;
    etran::refusal::errno_of(e).unwrap_or(match e.kind() {
        WouldBlock => libc::EAGAIN,
        TimedOut => libc::ETIMEDOUT,
        ConnectionReset | UnexpectedEof => libc::ECONNRESET,
        ConnectionAborted => libc::ECONNABORTED,
        ConnectionRefused => libc::ECONNREFUSED,
        NotConnected => libc::ENOTCONN,
        BrokenPipe => libc::EPIPE,
        InvalidInput => libc::EINVAL,
        InvalidData => libc::EPROTO,
        NotFound => libc::ENOENT,
        PermissionDenied => libc::EACCES,
        AddrInUse => libc::EADDRINUSE,
        OutOfMemory => libc::ENOMEM,
        _ => libc::EIO,
    })
}

impl Shim {
    /// No socket, no app yet (registered when the first socket needs it).
    fn new() -> Shim {
        Shim {
            app: None,
            iface: None,
            unavailable: false,
            fds: IntMap::default(),
            socks: IntMap::default(),
            next_key: 0,
            epolls: IntMap::default(),
            orphans: Vec::new(),
            sleepers: Vec::new(),
            link_readable: false,
            children_connect_ended: false,
            parent_due: None,
            link_due: Instant::now(),
            kernel_due: Instant::now(),
        }
    }

    /// The app, registered now if it is not yet; None when the daemon cannot be reached (said
    /// once on stderr: the sockets then stay the kernel's).
    pub fn app(&mut self) -> Option<&mut App> {
        if self.app.is_none() && !self.unavailable {
            let opened = DaemonLink::connect(&settings().daemon_socket).and_then(|mut link| {
                let reg = link.register(Transport::Tcp, 1)?;
                let iface = reg.iface.clone();
                Ok((App::with_link(link, reg)?, iface))
            });
            match opened {
                Ok((app, name)) => {
                    let ips = etran::sys::ipv4_addrs()
                        .into_iter()
                        .filter(|(n, _)| *n == name)
                        .map(|(_, ip)| ip)
                        .collect();
                    self.iface = Some(Iface { ips });
                    self.app = Some(app);
                }
                Err(e) => {
                    eprintln!("etran: no eTran for this process ({e}): its sockets use the kernel");
                    self.unavailable = true;
                }
            }
        }
        self.app.as_mut()
    }

    /// The registered app (a socket that is eTran's implies one).
    pub fn app_ref(&mut self) -> &mut App {
        self.app.as_mut().expect("an eTran socket implies a registered app")
    }

    /// Whether a socket bound to `ip` (any address included) is served through eTran.
    pub fn serves_bind(&mut self, ip: Ipv4Addr) -> bool {
        if ip.is_loopback() || self.app().is_none() {
            return false;
        }
        ip.is_unspecified() || self.iface.as_ref().is_some_and(|i| i.ips.contains(&ip))
    }

    /// Whether a connection to `dst` leaves through the daemon's interface: not loopback or
    /// this host, and the kernel's route to it has a source address of that interface.
    pub fn serves_connect(&mut self, dst: Ipv4Addr) -> bool {
        if dst.is_loopback()
            || dst.is_unspecified()
            || dst.is_multicast()
            || dst.is_broadcast()
            || self.app().is_none()
        {
            return false;
        }
        if etran::sys::ipv4_addrs().iter().any(|(_, ip)| *ip == dst) {
            return false;
        }
        let Some(iface) = self.iface.as_ref() else { return false };
        route_source(dst).is_some_and(|src| iface.ips.contains(&src))
    }

    /// The socket behind descriptor `fd`.
    pub fn get(&self, fd: RawFd) -> Option<&Sock> {
        self.socks.get(self.fds.get(&fd)?)
    }

    pub fn get_mut(&mut self, fd: RawFd) -> Option<&mut Sock> {
        self.socks.get_mut(self.fds.get(&fd)?)
    }

    /// Every descriptor of ours.
    pub fn fds(&self) -> Vec<RawFd> {
        self.fds.keys().copied().collect()
    }

    /// The descriptors referring to the same socket as `fd` (`fd` included).
    pub(crate) fn same_socket(&self, fd: RawFd) -> Vec<RawFd> {
        let Some(key) = self.fds.get(&fd) else { return Vec::new() };
        self.fds.iter().filter(|(_, k)| *k == key).map(|(&f, _)| f).collect()
    }

    /// Starts tracking `fd`.
    pub fn insert(&mut self, fd: RawFd, sock: Sock) {
        let key = self.next_key;
        self.next_key += 1;
        self.socks.insert(key, sock);
        self.fds.insert(fd, key);
        set_tracked(fd, true);
    }

    /// `nfd` (a duplicate the kernel just made of `fd`) refers to `fd`'s socket from now on.
    pub fn share(&mut self, fd: RawFd, nfd: RawFd) {
        let Some(&key) = self.fds.get(&fd) else { return };
        if let Some(sock) = self.socks.get_mut(&key) {
            sock.refs += 1;
            self.fds.insert(nfd, key);
            set_tracked(nfd, true);
        }
    }

    /// Stops tracking descriptor `fd` (before the kernel may give its number to another); no
    /// epoll set of ours watches it any more. Returns its socket when no other descriptor
    /// refers to it (the socket is then to be released), or an epoll set's.
    pub fn remove(&mut self, fd: RawFd) -> Option<Sock> {
        set_tracked(fd, false);
        self.epolls.remove(&fd);
        for set in self.epolls.values_mut() {
            set.remove(&fd);
        }
        let key = self.fds.remove(&fd)?;
        let sock = self.socks.get_mut(&key)?;
        sock.refs -= 1;
        if sock.refs > 0 {
            return None;
        }
        self.socks.remove(&key)
    }

    /// The socket behind `fd` is the kernel's for good: none of its descriptors is ours.
    pub fn untrack(&mut self, fd: RawFd) {
        for f in self.same_socket(fd) {
            self.remove(f);
        }
    }

    /// The program consumed `fd`'s events `bits` (`EPOLLIN`: nothing is left to read or
    /// accept; `EPOLLOUT`: the send space is full): an edge-triggered set reports them again
    /// when they come back.
    pub fn consumed(&mut self, fd: RawFd, bits: u32) {
        for fd in self.same_socket(fd) {
            for set in self.epolls.values_mut() {
                if let Some(it) = set.get_mut(&fd) {
                    it.reported &= !bits;
                }
            }
        }
    }

    /// A fresh socket became an eTran connection: the kernel's epoll sets stop watching its
    /// kernel socket and ours watch it instead.
    pub fn leave_kernel_epolls(&mut self, fd: RawFd) {
        for fd in self.same_socket(fd) {
            for (&ep, set) in self.epolls.iter_mut() {
                if let Some(it) = set.get_mut(&fd).filter(|it| it.in_kernel) {
                    // SAFETY: removing our kernel socket from the set.
                    unsafe { real::epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
                    it.in_kernel = false;
                }
            }
        }
    }

    /// What closing an eTran socket leaves to do: a connection sends its FIN and finishes
    /// closing in later passes (or is reset at once when bytes it received are unread), a listener stops (its unaccepted connections are reset), a
    /// connect in progress is aborted once it completes.
    pub fn release(&mut self, sock: Sock) {
        if self.let_go_shared(&sock) {
            return;
        }
        if sock.inherited {
            return; // another process's
        }
        let Some(app) = self.app.as_mut() else { return };
        match sock.kind {
            Kind::Fresh { .. } | Kind::ParentConnecting | Kind::Failed => {}
            Kind::Listening { listener, backlog, .. } => {
                for id in backlog {
                    app.abort(id);
                }
                let _ = app.close_listener(listener);
            }
            Kind::Connecting(c) => self.orphans.push(Orphan::Connect(c)),
            Kind::Conn { id, wr_shut, .. } => {
                if app.stream(id).is_some_and(|s| s.error().is_some()) {
                    app.remove_connection(id);
                } else if app.stream(id).is_some_and(|s| s.readable() > 0) {
                    // Closed with bytes unread: a reset, as Linux sends (RFC 2525, 2.17).
                    app.abort(id);
                } else {
                    if !wr_shut {
                        let _ = app.close(id);
                    }
                    self.orphans.push(Orphan::Closing(id, Instant::now()));
                }
            }
        }
    }

    /// Moves frames (and kicks what sends left), reads the daemon link when a sleep saw it
    /// readable or [`LINK_CHECK`] passed, adopts what listeners and connects got, finishes
    /// closes. Returns whether anything moved (other threads then recheck).
    pub fn pass(&mut self) -> bool {
        let moved = self.pass_app();
        self.mark_moved();
        if std::mem::take(&mut self.children_connect_ended) {
            self.share_with_children();
        }
        if self.parent_due.is_some_and(|d| Instant::now() >= d) {
            self.ask_parents();
        }
        moved
    }

    fn pass_app(&mut self) -> bool {
        let Some(app) = self.app.as_mut() else { return false };
        let mut moved = app.poll().unwrap_or(0) > 0;
        UNKICKED.store(false, Ordering::Relaxed);
        let now = Instant::now();
        if self.link_readable || now >= self.link_due {
            let _ = app.poll_daemon();
            self.link_readable = false;
            self.link_due = now + LINK_CHECK;
        }
        for sock in self.socks.values_mut().filter(|s| !s.inherited) {
            match &mut sock.kind {
                Kind::Listening { listener, backlog, .. } => {
                    while let Ok(Some(id)) = ready(app.accept_queued(listener)) {
                        backlog.push_back(id);
                        moved = true;
                    }
                }
                Kind::Connecting(c) => match app.poll_connect(c) {
                    Ok(id) => {
                        if sock.nodelay {
                            let _ = app.set_nodelay(id, true);
                        }
                        sock.kind = Kind::Conn { id, rd_shut: false, wr_shut: false };
                        self.children_connect_ended |= !sock.forked_to.is_empty();
                        moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        sock.error = errno_of(&e);
                        sock.kind = Kind::Failed;
                        self.children_connect_ended |= !sock.forked_to.is_empty();
                        moved = true;
                    }
                },
                _ => {}
            }
        }
        self.orphans.retain(|o| match o {
            Orphan::Closing(id, since) => {
                if app.is_closed(*id) {
                    app.remove_connection(*id);
                    false
                } else if now - *since > CLOSING_LIMIT {
                    app.abort(*id);
                    false
                } else {
                    true
                }
            }
            Orphan::Connect(c) => match app.poll_connect(c) {
                Ok(id) => {
                    app.abort(id);
                    false
                }
                Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            },
        });
        moved
    }

    /// For a call that must not wait (non-blocking): the frames that arrived, without ending
    /// the pass (no timers, no sends, no kick: the program's next wait does those), unless the
    /// engine's timers or the daemon link are due (a program that never waits still gets
    /// them): then a whole pass. Returns whether anything moved.
    pub fn receive(&mut self) -> bool {
        let Some(app) = self.app.as_mut() else { return false };
        let now = Instant::now();
        if self.link_readable
            || now >= self.link_due
            || app.next_deadline().is_some_and(|d| d <= now)
        {
            return self.pass();
        }
        app.receive().unwrap_or(0) > 0
    }

    /// Sends `data` on connection `id`: kicked at once, or, in a thread inside an event loop's
    /// pass (`ETRAN_TX_COALESCE`), left with the pass's other sends for the kick of the
    /// thread's next wait (a flush of [`TX_BATCH`] frames goes at once). Every wait, blocking
    /// call, close and shutdown of the shim flushes first, and so do reads and sleeps in the
    /// kernel, so the frames leave before the thread sleeps; a thread that writes and then
    /// blocks elsewhere (a futex) leaves them to the next flush of any thread.
    pub fn send(&mut self, id: ConnId, data: &[u8]) -> io::Result<usize> {
        let app = self.app_ref();
        if !settings().coalesce || !IN_LOOP.try_with(Cell::get).unwrap_or(false) {
            let n = app.send(id, data)?;
            app.flush()?;
            return Ok(n);
        }
        let n = app.send_more(id, data)?;
        if app.port().pending() >= TX_BATCH {
            app.flush()?;
        } else {
            UNKICKED.store(true, Ordering::Relaxed);
        }
        Ok(n)
    }

    /// The program accepts, or waits for connections, on listener `fd`: the daemon may send
    /// them here from now on.
    pub fn accepting(&mut self, fd: RawFd) {
        let Some(key) = self.fds.get(&fd) else { return };
        let (Some(app), Some(sock)) = (self.app.as_mut(), self.socks.get_mut(key)) else { return };
        if let Kind::Listening { listener, accepting: accepting @ false, .. } = &mut sock.kind {
            if !sock.inherited && app.accepting(listener).is_ok() {
                *accepting = true;
            }
        }
    }

    /// A listener inherited from the parent (a forked worker's): this process registers and
    /// joins it by showing its kernel socket (`fd`'s), accepting at once. Its parent keeps its
    /// own membership and the connections it was given.
    pub fn adopt_listener(&mut self, fd: RawFd) -> Result<(), c_int> {
        let port = match self.get(fd) {
            Some(Sock { inherited: true, kind: Kind::Listening { listener, .. }, .. }) => {
                listener.port()
            }
            _ => return Ok(()),
        };
        let app = self.app().ok_or(libc::EOPNOTSUPP)?;
        // SAFETY: `fd` is open (ours); the daemon gets its own copy.
        let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let listener = app.listen_shared(port, socket, false).map_err(|e| errno_of(&e))?;
        if let Some(sock) = self.get_mut(fd) {
            if let Kind::Listening { .. } = sock.kind {
                sock.kind = Kind::Listening { listener, backlog: VecDeque::new(), accepting: true };
                sock.inherited = false;
            }
        }
        Ok(())
    }

    /// In a forked child: the port and the daemon link are the parent's, so the child lets go
    /// of them (its copies of their descriptors closed, nothing sent) and of every socket it
    /// inherited; a socket it opens registers anew.
    pub fn forget_after_fork(&mut self) {
        if let Some(mut app) = self.app.take() {
            // SAFETY: the child's copies of the app's descriptors; the app is forgotten, so
            // nothing closes them again or tells the daemon anything.
            unsafe {
                real::close(app.port().socket().as_raw_fd());
                real::close(app.link().as_fd().as_raw_fd());
            }
            std::mem::forget(app);
        }
        self.iface = None;
        for sock in self.socks.values_mut() {
            if !sock.inherited && matches!(sock.kind, Kind::Connecting(_)) {
                // A connect still in progress at the fork (`before_fork` showed it): the
                // child waits for the parent's, as for one begun after the fork.
                sock.kind = Kind::ParentConnecting;
                self.parent_due = Some(Instant::now());
            }
            // A fresh or failed socket carries no state of the parent's app: the child's.
            sock.inherited = matches!(
                sock.kind,
                Kind::Conn { .. } | Kind::Listening { .. } | Kind::Connecting(_)
            );
            sock.shared |= matches!(sock.kind, Kind::Conn { .. });
            sock.from_parent = matches!(sock.kind, Kind::Fresh { .. } | Kind::ParentConnecting);
            sock.parent_asked = None;
            sock.forked_to.clear();
        }
        self.orphans.clear();
        self.sleepers.clear();
    }

    /// Whether a connect of this process's is still in progress.
    pub fn connecting(&self) -> bool {
        self.socks.values().any(|s| !s.inherited && matches!(s.kind, Kind::Connecting(_)))
    }

    /// Whether a connect of this process's that forked children wait for is in progress.
    pub fn connects_awaited(&self) -> bool {
        self.socks.values().any(Sock::connect_awaited)
    }

    /// Whether connections the app closed are still closing.
    pub fn closing(&self) -> bool {
        !self.orphans.is_empty()
    }

    /// The eTran events of `fd` now (poll's bits); None for a socket that is the kernel's
    /// until connected or listening.
    pub fn revents(&mut self, fd: RawFd) -> Option<i16> {
        use libc::{POLLERR, POLLHUP, POLLIN, POLLOUT, POLLRDHUP};
        let app = self.app.as_ref();
        let sock = self.get(fd)?;
        if sock.inherited {
            return Some(POLLERR);
        }
        Some(match &sock.kind {
            Kind::Fresh { .. } => return None,
            Kind::Listening { backlog, .. } => {
                if backlog.is_empty() {
                    0
                } else {
                    POLLIN
                }
            }
            Kind::Connecting(_) | Kind::ParentConnecting => 0,
            Kind::Failed => POLLIN | POLLOUT | POLLERR | POLLHUP,
            Kind::Conn { id, rd_shut, wr_shut } => {
                let Some(s) = app.and_then(|a| a.stream(*id)) else { return Some(POLLHUP) };
                let mut ev = 0;
                let failed = s.error().is_some();
                if s.readable() > 0 || s.is_eof() || failed || *rd_shut {
                    ev |= POLLIN;
                }
                if s.is_eof() {
                    ev |= POLLRDHUP;
                }
                if *wr_shut || failed || (s.close_state().can_send() && s.send_space() > 0) {
                    ev |= POLLOUT;
                }
                if failed {
                    ev |= POLLERR | POLLHUP;
                } else if s.is_eof() && (*wr_shut || !s.close_state().can_send()) {
                    ev |= POLLHUP;
                }
                ev
            }
        })
    }
}

/// The source address the kernel's route to `dst` uses (a UDP socket's connect picks it).
fn route_source(dst: Ipv4Addr) -> Option<Ipv4Addr> {
    // SAFETY: plain socket calls on a descriptor we own and close.
    unsafe {
        let fd = real::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let sin = sockaddr_in(SocketAddrV4::new(dst, 9));
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let mut out: libc::sockaddr_in = std::mem::zeroed();
        let mut out_len = len;
        let ok = real::connect(fd, (&sin as *const libc::sockaddr_in).cast(), len) == 0
            && real::getsockname(fd, (&mut out as *mut libc::sockaddr_in).cast(), &mut out_len)
                == 0;
        real::close(fd);
        ok.then(|| Ipv4Addr::from(u32::from_be(out.sin_addr.s_addr)))
    }
}

pub fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

/// This thread's eventfd, by which other threads wake it; closed when the thread ends.
struct WakeFd(Cell<RawFd>);

impl Drop for WakeFd {
    fn drop(&mut self) {
        if self.0.get() >= 0 {
            // SAFETY: our own eventfd.
            unsafe { real::close(self.0.get()) };
        }
    }
}

thread_local! {
    static WAKE: WakeFd = const { WakeFd(Cell::new(-1)) };
}

/// This thread's eventfd; -1 once the thread's locals are gone (at exit) or none could be
/// made (the thread then sleeps without one: only its own wakeups wake it).
fn wake_fd() -> RawFd {
    WAKE.try_with(|w| {
        if w.0.get() < 0 {
            // SAFETY: creates a descriptor this thread owns.
            w.0.set(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) });
        }
        w.0.get()
    })
    .unwrap_or(-1)
}

/// After a fork: the child's eventfd must not be the parent's.
pub fn forget_wake_fd() {
    let _ = WAKE.try_with(|w| {
        if w.0.get() >= 0 {
            // SAFETY: the child's copy of the descriptor.
            unsafe { real::close(w.0.get()) };
            w.0.set(-1);
        }
    });
}

/// Wakes every sleeping thread but this one.
pub fn wake_others(shim: &Shim) {
    let me = WAKE.try_with(|w| w.0.get()).unwrap_or(-1);
    for &fd in shim.sleepers.iter().filter(|&&fd| fd != me) {
        let one: u64 = 1;
        // SAFETY: an eventfd of a live sleeper (it removes itself under the lock).
        unsafe { real::write(fd, (&one as *const u64).cast(), 8) };
    }
}

/// Sleeps without the lock until the port or the daemon link has something, another thread
/// moved something, one of `kernel` is ready (their `revents` are set), the engine's next
/// timer or `until`. `Err(EINTR)` when a signal came.
pub fn sleep(
    mut g: Guard,
    kernel: &mut [libc::pollfd],
    until: Option<Instant>,
) -> (Guard, Result<(), c_int>) {
    let me = wake_fd();
    let sh = shim(&mut g);
    let mut fds: Vec<libc::pollfd> = kernel.to_vec();
    let mut deadline = until;
    if let Some(app) = sh.app.as_mut() {
        let pending = app.port().pending() > 0;
        let xsk = app.port().socket().as_raw_fd();
        deadline = [deadline, app.next_deadline()].into_iter().flatten().min();
        let events = libc::POLLIN | if pending { libc::POLLOUT } else { 0 };
        fds.push(libc::pollfd { fd: xsk, events, revents: 0 });
        let link = app.link().as_fd().as_raw_fd();
        fds.push(libc::pollfd { fd: link, events: libc::POLLIN, revents: 0 });
        if let Some(due) = sh.parent_due {
            deadline = Some(deadline.map_or(due, |d| d.min(due)));
        }
        if sh.closing() {
            // Closing connections are finished by passes: come back now and then.
            let soon = Instant::now() + Duration::from_millis(50);
            deadline = Some(deadline.map_or(soon, |d| d.min(soon)));
        }
    }
    if me >= 0 {
        fds.push(libc::pollfd { fd: me, events: libc::POLLIN, revents: 0 });
        sh.sleepers.push(me);
    }
    drop(g);
    let ts = deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(left.subsec_nanos() as i32),
        }
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: valid pollfds; the timespec outlives the call.
    let r = unsafe {
        real::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ts_ptr, std::ptr::null())
    };
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let mut g = lock();
    let shim_ref = shim(&mut g);
    shim_ref.sleepers.retain(|&fd| fd != me);
    if me >= 0 && fds.last().is_some_and(|w| w.revents != 0) {
        let mut v = 0u64;
        // SAFETY: draining our own non-blocking eventfd.
        unsafe { real::read(me, (&mut v as *mut u64).cast(), 8) };
    }
    for (k, f) in kernel.iter_mut().zip(&fds) {
        k.revents = f.revents;
    }
    // The link's entry follows the kernel ones and the port's, when there is an app: the sleep
    // read its state, so the next check is due only LINK_CHECK from now.
    if let Some(link) = fds.get(kernel.len() + 1).filter(|_| shim_ref.app.is_some()) {
        shim_ref.link_readable |= link.revents != 0;
        shim_ref.link_due = Instant::now() + LINK_CHECK;
    }
    if r < 0 && errno == libc::EINTR {
        return (g, Err(libc::EINTR));
    }
    (g, Ok(()))
}

/// Runs `attempt` until it gives a result: first as things are (after a pass when
/// `pass_first`: a wait, which ends the program's pass), then after what arrived (a
/// non-blocking call, `timeout` zero, stops there: see [`Shim::receive`]), then after passes,
/// busy-polling, then sleeping (also on `kernel`, whose readiness `attempt` may read).
/// `Err(EAGAIN)` once `timeout` passed, `Err(EINTR)` on a signal.
pub fn block_on<T>(
    mut g: Guard,
    timeout: Option<Duration>,
    kernel: &mut [libc::pollfd],
    pass_first: bool,
    mut attempt: impl FnMut(&mut Shim, &[libc::pollfd]) -> Option<Result<T, c_int>>,
) -> Result<T, c_int> {
    let start = Instant::now();
    let limit = timeout.map(|t| start + t);
    let spin_until = start + busy_poll();
    let mut looked = pass_first;
    // Whether a pass ran since the call began: one always does before the first sleep, however
    // long the first attempt took (past the busy poll: under emulation, or with
    // ETRAN_BUSY_POLL_US=0). It ends the program's pass (frames the short tails its sends
    // held back, `Shim::send`, and kicks them) and arms the timers of what went, which the
    // sleep's deadline takes; sleeping first left them held with no deadline.
    let mut passed = pass_first;
    if pass_first {
        let shim_ref = shim(&mut g);
        if shim_ref.pass() {
            wake_others(shim_ref);
        }
    }
    loop {
        let shim_ref = shim(&mut g);
        if let Some(r) = attempt(shim_ref, kernel) {
            return r;
        }
        for k in kernel.iter_mut() {
            k.revents = 0;
        }
        let now = Instant::now();
        if limit.is_some_and(|l| now >= l) {
            if looked {
                return Err(libc::EAGAIN);
            }
            looked = true;
            if shim_ref.receive() {
                wake_others(shim_ref);
            }
            continue;
        }
        looked = true;
        if now < spin_until || !passed {
            drop(g);
            std::hint::spin_loop();
            g = lock();
        } else {
            let (g2, slept) = sleep(g, kernel, limit);
            g = g2;
            slept?;
        }
        let shim_ref = shim(&mut g);
        if shim_ref.pass() {
            wake_others(shim_ref);
        }
        passed = true;
    }
}

#[cfg(test)]
mod tests;
