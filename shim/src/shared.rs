//! Connections shared across processes: a forked child uses a connection its parent accepted
//! (Python's `ForkingTCPServer`, sshd-style servers), the parent closes its copy, or uses it
//! again once the child is done, as with the kernel's sockets.
//!
//! Holding the connection's kernel socket is the right to use it. Before a fork the owner
//! shows each connection's kernel socket to the daemon (`Share`, answered before the child
//! runs, so a child's `Adopt` always finds it) and names the child after (`Forked`, with its
//! pidfd: the daemon learns when it ends). A process that uses a connection whose stream it
//! does not have (`Sock::inherited`) adopts it (`Shim::adopt_conn`): the daemon has the owner
//! hand the stream over (the owner's next pass, `App::poll_daemon`; its descriptor then stands
//! for a connection another process has, `Shim::mark_moved`), or gives the stream it parked.
//! An owner about to block in `waitpid` (which runs no pass) parks its shared connections
//! first (`Shim::park_for_wait`); one that blocks elsewhere outside the shim keeps an adopter
//! waiting until its next call.
//! A descriptor passed over a Unix socket is shown the same way before `sendmsg`
//! (`Shim::share_passed`), and the receiver adopts it at `recvmsg` (`Shim::adopt_passed`); a
//! listener passed so is joined (`Shim::join_passed_listener`). A fresh socket at a fork
//! stays one socket too: while the parent connects it, the children holding a copy wait for
//! the connect (`Shim::show_connect_to_children`, `Kind::ParentConnecting`); once it is up
//! they are shown the connection (`Shim::share_with_children`) and adopt it at their next call
//! (`Shim::adopt_from_parent`), or take its error.
//! A process holding a shared connection reports its reads to the datapath once it has read
//! all there was (`App::report_reads`), so that should it die, the daemon knows nothing it
//! received is lost and keeps the connection for the others (or closes it with a FIN).
//! Closing a shared connection parks it while another holder lives (`Shim::let_go_shared`):
//! ForkingTCPServer's parent closes its copy at once, and the connection stays up for the
//! child. See ARCHITECTURE.md ("The POSIX shim") for what is not covered.
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use libc::c_int;

use etran::app::ConnId;

use crate::state::{errno_of, Kind, Shim, Sock, PARENT_CHECK};

/// The errnos a connect fails with: the daemon's answer for a socket whose connect the parent
/// made and that failed (`Connecting`), or for a connection that is gone.
const CONNECT_ERRORS: [c_int; 8] = [
    libc::ECONNREFUSED,
    libc::ETIMEDOUT,
    libc::ENETUNREACH,
    libc::EHOSTUNREACH,
    libc::ECONNABORTED,
    libc::ECONNRESET,
    libc::EADDRINUSE,
    libc::EADDRNOTAVAIL,
];

/// A pidfd of process `pid` (None on kernels without pidfd_open).
fn pidfd(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: a plain system call; the descriptor is owned right after.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as c_int;
    // SAFETY: a fresh descriptor of ours.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The kernel socket behind `fd`, an open descriptor of ours.
fn socket_identity(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: open for the call.
    etran::transport::tcp::listen::socket_id(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// Where the TCP/IPv4 socket `fd` is bound (None: to no port).
fn bound_addr(fd: RawFd) -> Option<std::net::SocketAddrV4> {
    // SAFETY: an address buffer of ours.
    let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: as above, on an open descriptor.
    let r = unsafe {
        crate::real::getsockname(fd, (&mut a as *mut libc::sockaddr_in).cast(), &mut len)
    };
    (r == 0 && a.sin_port != 0).then(|| {
        let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
        std::net::SocketAddrV4::new(ip, u16::from_be(a.sin_port))
    })
}

fn this_pid() -> u32 {
    // SAFETY: no arguments.
    unsafe { libc::getpid() as u32 }
}

impl Shim {
    /// Before `fork`: shows the daemon the kernel sockets of the connections this process
    /// holds, whether it has their streams or not (a child forking a grandchild shows those
    /// it inherited, registering first if it never used eTran), and marks them shared.
    /// Returns their handles (for [`Shim::forked`]).
    pub fn share_before_fork(&mut self) -> Vec<u64> {
        let fds = self.fds();
        self.show_conns(&fds, false)
    }

    /// Before descriptors `fds` go over a Unix socket (`sendmsg`, `SCM_RIGHTS`): the
    /// connections among them are shown to the daemon, which keeps them for their receiver
    /// ([`Shim::adopt_passed`]) even if this process closes its descriptors at once.
    pub fn share_passed(&mut self, fds: &[RawFd]) {
        self.show_conns(fds, true);
    }

    /// Shows the daemon the connections of descriptors `fds` (see above); their handles.
    fn show_conns(&mut self, fds: &[RawFd], passing: bool) -> Vec<u64> {
        let mut conns: Vec<(u64, RawFd)> = Vec::new();
        for &fd in fds {
            if let Some(Sock { kind: Kind::Conn { id, .. }, .. }) = self.get(fd) {
                if !conns.iter().any(|c| c.0 == id.0) {
                    conns.push((id.0, fd));
                }
            }
        }
        if conns.is_empty() {
            return Vec::new();
        }
        let Some(app) = self.app() else { return Vec::new() };
        let Some(me) = pidfd(this_pid() as libc::pid_t) else { return Vec::new() };
        // SAFETY: our open descriptors, borrowed for the call.
        let shown: Vec<(u64, BorrowedFd<'_>)> =
            conns.iter().map(|&(h, fd)| (h, unsafe { BorrowedFd::borrow_raw(fd) })).collect();
        if let Err(e) = app.link().share(this_pid(), me.as_fd(), &shown, passing) {
            eprintln!("etran: other processes cannot use this process's connections ({e})");
            return Vec::new();
        }
        for &(_, fd) in &conns {
            if let Some(sock) = self.get_mut(fd) {
                sock.shared = true;
            }
        }
        conns.into_iter().map(|c| c.0).collect()
    }

    /// Before `fork`, the connects of this process still in progress (`before_fork` waited a
    /// second for them) are shown to the daemon: the child waits for them
    /// (`Kind::ParentConnecting`) and holds each connection once it is up, as the child of a
    /// connect begun after the fork does ([`Shim::forked`] names the child).
    pub fn show_connects_before_fork(&mut self) {
        for fd in self.fds() {
            if matches!(
                self.get(fd),
                Some(Sock { inherited: false, kind: Kind::Connecting(_), .. })
            ) {
                self.show_connect(fd, 0);
            }
        }
    }

    /// After `fork`, in the parent: child `pid` holds the connections `handles` too, and the
    /// fresh sockets and those still connecting (the child has their descriptors: once this
    /// process connects one, the connection is the child's too, as with the kernel's sockets).
    pub fn forked(&mut self, pid: libc::pid_t, handles: Vec<u64>) {
        for fd in self.fds() {
            if let Some(sock) = self.get_mut(fd) {
                if matches!(sock.kind, Kind::Connecting(_)) && !sock.inherited {
                    sock.forked_to.push(pid);
                    crate::state::AWAITED.store(true, std::sync::atomic::Ordering::Relaxed);
                } else if matches!(sock.kind, Kind::Fresh { .. }) && !sock.forked_to.contains(&pid)
                {
                    // Children gone (reaped) hold nothing: a server forking for years keeps
                    // only the live ones.
                    // SAFETY: signal 0 only checks that the process exists.
                    sock.forked_to.retain(|&p| unsafe { libc::kill(p, 0) } == 0);
                    sock.forked_to.push(pid);
                }
            }
        }
        self.name_holder(pid, handles);
    }

    /// Tells the daemon that process `pid` holds the connections `handles` too.
    fn name_holder(&mut self, pid: libc::pid_t, handles: Vec<u64>) {
        if handles.is_empty() {
            return;
        }
        let (Some(app), Some(fd)) = (self.app.as_mut(), pidfd(pid)) else { return };
        let _ = app.link().forked(pid as u32, fd.as_fd(), handles);
    }

    /// Connects ended on sockets forked children hold too (`Sock::forked_to`): each
    /// connection is shown to the daemon, and the children that still live hold it; a failed
    /// connect's error is shown for them.
    pub fn share_with_children(&mut self) {
        for fd in self.fds() {
            let (children, failed) = match self.get_mut(fd) {
                Some(sock) if matches!(sock.kind, Kind::Conn { .. }) => {
                    (std::mem::take(&mut sock.forked_to), None)
                }
                Some(sock) if matches!(sock.kind, Kind::Failed) => {
                    (std::mem::take(&mut sock.forked_to), Some(sock.error))
                }
                _ => continue,
            };
            if children.is_empty() {
                continue;
            }
            if let Some(errno) = failed {
                self.show_connect(fd, if errno != 0 { errno } else { libc::ECONNABORTED });
                continue;
            }
            let handles = self.show_conns(&[fd], false);
            for pid in children {
                self.name_holder(pid, handles.clone());
            }
        }
    }

    /// A connect began on `fd`: the children forked before, which hold its socket too and
    /// still live, wait for it (`Kind::ParentConnecting`); the daemon is shown it.
    pub fn show_connect_to_children(&mut self, fd: RawFd) {
        let Some(sock) = self.get_mut(fd) else { return };
        // SAFETY: signal 0 only checks that the process exists.
        sock.forked_to.retain(|&p| unsafe { libc::kill(p, 0) } == 0);
        if !sock.forked_to.is_empty() {
            self.show_connect(fd, 0);
            crate::state::AWAITED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// `fd`, the last descriptor here of a socket whose connect is in progress, closes after
    /// waiting for it (`state::finish_awaited_connects`): the connect is aborted once up, so
    /// the children waiting for it are told it was (`ECONNABORTED`).
    pub fn abandon_connect(&mut self, fd: RawFd) {
        let waited = matches!(
            self.get(fd),
            Some(Sock { kind: Kind::Connecting(_), forked_to, .. }) if !forked_to.is_empty()
        );
        if waited && self.same_socket(fd).len() == 1 {
            self.show_connect(fd, libc::ECONNABORTED);
        }
    }

    /// Shows the daemon the connect of `fd`'s socket for the processes forked before it
    /// began: in progress (`errno` 0), or failed with `errno`.
    fn show_connect(&mut self, fd: RawFd, errno: c_int) {
        let Some(app) = self.app.as_mut() else { return };
        // SAFETY: `fd` is open (ours); the daemon gets its own copy.
        let socket = unsafe { BorrowedFd::borrow_raw(fd) };
        if let Err(e) = app.link().connecting(socket, errno) {
            eprintln!("etran: forked children cannot wait for this process's connect ({e})");
        }
    }

    /// A fresh socket the parent held at the fork (`fd`, `Sock::from_parent`): when the parent
    /// connected it since, this process holds that connection, and `fd` is an eTran socket
    /// from now on (asked at each use while it is not); while the parent's connect goes on,
    /// `fd` waits for it (`Kind::ParentConnecting`, asked again by the passes); when it failed,
    /// `fd` has its error. A socket the parent never connected stays the kernel's.
    pub fn adopt_from_parent(&mut self, fd: RawFd) {
        let waiting = match self.get_mut(fd) {
            Some(sock @ Sock { from_parent: true, kind: Kind::Fresh { .. }, .. }) => {
                sock.parent_asked = Some(std::time::Instant::now());
                false
            }
            Some(Sock { from_parent: true, kind: Kind::ParentConnecting, .. }) => true,
            _ => return,
        };
        let (kind, error) = match self.adopt_by_socket(fd) {
            Ok(id) => {
                let nodelay = self.get(fd).is_some_and(|s| s.nodelay);
                if nodelay {
                    let _ = self.app_ref().set_nodelay(id, true);
                }
                (Kind::Conn { id, rd_shut: false, wr_shut: false }, 0)
            }
            Err(libc::EINPROGRESS) if waiting => return,
            Err(libc::EINPROGRESS) => {
                let due = std::time::Instant::now() + PARENT_CHECK;
                self.parent_due.get_or_insert(due);
                (Kind::ParentConnecting, 0)
            }
            Err(e) if CONNECT_ERRORS.contains(&e) => (Kind::Failed, e),
            Err(_) if !waiting => return,
            // The connect ended without an outcome this process can learn (its process ended
            // first): aborted.
            Err(_) => (Kind::Failed, libc::ECONNABORTED),
        };
        self.leave_kernel_epolls(fd);
        // The parent may have changed the flags of the one open file since the fork.
        // SAFETY: a plain query of an open descriptor.
        let flags = unsafe { crate::real::fcntl(fd, libc::F_GETFL, 0) };
        if let Some(sock) = self.get_mut(fd) {
            sock.shared |= matches!(kind, Kind::Conn { .. });
            sock.from_parent = matches!(kind, Kind::ParentConnecting);
            sock.kind = kind;
            sock.error = error;
            if flags >= 0 {
                sock.nonblock = flags & libc::O_NONBLOCK != 0;
            }
        }
    }

    /// [`Shim::adopt_from_parent`] for the passes of a wait (`poll`, `epoll_wait`), which may
    /// come thousands of times a second: a fresh socket is asked about at most every
    /// [`PARENT_CHECK`] (each question is a pidfd and a round trip to the daemon), and one
    /// waiting for its parent's connect is left to [`Shim::ask_parents`], which asks at that
    /// pace. A call that uses the socket asks at once (`route`), since the program may know
    /// the parent connected it.
    pub fn adopt_from_parent_paced(&mut self, fd: RawFd) {
        let asked = match self.get(fd) {
            Some(Sock { from_parent: true, kind: Kind::Fresh { .. }, parent_asked, .. }) => {
                *parent_asked
            }
            _ => return,
        };
        if crate::state::due(asked, std::time::Instant::now(), PARENT_CHECK) {
            self.adopt_from_parent(fd);
        }
    }

    /// The sockets waiting for their parent's connect ask the daemon again (see
    /// [`Shim::adopt_from_parent`]).
    pub fn ask_parents(&mut self) {
        let waiting =
            |s: &Shim, fd| matches!(s.get(fd), Some(Sock { kind: Kind::ParentConnecting, .. }));
        let mut still = false;
        for fd in self.fds() {
            if waiting(self, fd) {
                self.adopt_from_parent(fd);
                still |= waiting(self, fd);
            }
        }
        self.parent_due = still.then(|| std::time::Instant::now() + PARENT_CHECK);
    }

    /// Asks the daemon for the connection whose kernel socket `fd` is (another process shared
    /// it): this process holds it and has its stream. The daemon's errno otherwise
    /// (`ENOTCONN`: none; `EINPROGRESS`: the connect of another process goes on).
    fn adopt_by_socket(&mut self, fd: RawFd) -> Result<ConnId, c_int> {
        let me = pidfd(this_pid() as libc::pid_t).ok_or(libc::ENOSYS)?;
        let app = self.app().ok_or(libc::EOPNOTSUPP)?;
        // SAFETY: `fd` is open (ours); the daemon gets its own copy.
        let socket = unsafe { BorrowedFd::borrow_raw(fd) };
        app.adopt_passed(this_pid(), me.as_fd(), socket).map_err(|e| errno_of(&e))
    }

    /// Before a blocking wait for a child (`waitpid`): the shared connections this process has
    /// are parked at the daemon, so that the child may adopt them while this process, blocked
    /// in the kernel, runs no pass to hand them over.
    pub fn park_for_wait(&mut self) {
        let mine: Vec<u64> = self
            .fds()
            .into_iter()
            .filter_map(|fd| match self.get(fd) {
                Some(Sock {
                    inherited: false, shared: true, kind: Kind::Conn { id, .. }, ..
                }) => Some(id.0),
                _ => None,
            })
            .collect();
        let Some(app) = self.app.as_mut().filter(|_| !mine.is_empty()) else { return };
        let parked: Vec<u64> = mine
            .into_iter()
            .filter(|&h| matches!(app.park(ConnId(h), this_pid(), true), Ok(true)))
            .collect();
        self.mark_elsewhere(&parked);
    }

    /// A connection whose stream another process has (`inherited`) is adopted: this process
    /// shows its kernel socket (`fd`'s) and gets the stream.
    pub fn adopt_conn(&mut self, fd: RawFd) -> Result<(), c_int> {
        let handle = match self.get(fd) {
            Some(Sock { inherited: true, kind: Kind::Conn { id, .. }, .. }) => id.0,
            _ => return Ok(()),
        };
        let app = self.app().ok_or(libc::EOPNOTSUPP)?;
        // SAFETY: `fd` is open (ours); the daemon gets its own copy.
        let socket = unsafe { BorrowedFd::borrow_raw(fd) };
        let id = app.adopt(handle, socket).map_err(|e| errno_of(&e))?;
        let nodelay = self.get(fd).is_some_and(|s| s.nodelay);
        if nodelay {
            let _ = self.app_ref().set_nodelay(id, true);
        }
        if let Some(sock) = self.get_mut(fd) {
            sock.inherited = false;
        }
        Ok(())
    }

    /// A descriptor received over a Unix socket (`fd`, an unconnected TCP socket of the
    /// kernel's): when it is the kernel socket behind a connection of the daemon's, this
    /// process adopts the connection and `fd` is an eTran socket from now on; otherwise it
    /// stays the kernel's. One this process holds already (it passed it to itself) is a
    /// duplicate of that descriptor.
    pub fn adopt_passed(&mut self, fd: RawFd) {
        let id = socket_identity(fd);
        let mine = self.fds().into_iter().find(|&f| {
            matches!(self.get(f), Some(Sock { kind: Kind::Conn { .. }, .. }))
                && socket_identity(f) == id
        });
        if let (Some(orig), Some(_)) = (mine, id) {
            self.share(orig, fd);
            return;
        }
        let Ok(id) = self.adopt_by_socket(fd) else { return };
        // SAFETY: a plain query of an open descriptor.
        let flags = unsafe { crate::real::fcntl(fd, libc::F_GETFL, 0) };
        let mut sock = Sock::new(
            Kind::Conn { id, rd_shut: false, wr_shut: false },
            flags >= 0 && flags & libc::O_NONBLOCK != 0,
        );
        sock.shared = true;
        self.insert(fd, sock);
    }

    /// A listening TCP socket received over a Unix socket (`fd`): when it is bound where
    /// eTran serves (any address, or one of the daemon's interface: the kernel socket of a
    /// listener another process under the shim passed listens too), this process joins that
    /// listener, sharing its connections with the other members that accept, and `fd` is an
    /// eTran listener from now on; otherwise it stays the kernel's.
    pub fn join_passed_listener(&mut self, fd: RawFd) {
        let Some(at) = bound_addr(fd).filter(|a| self.serves_bind(*a.ip())) else { return };
        let port = at.port();
        let Some(app) = self.app() else { return };
        // SAFETY: `fd` is open (just received); the daemon gets its own copy.
        let socket = unsafe { BorrowedFd::borrow_raw(fd) };
        let Ok(listener) = app.listen_shared(port, socket, true) else { return };
        // Its kernel socket is non-blocking already (the sender's shim made it so, for the
        // accepts it tries without waiting): whether the program wants it so is its own.
        let kind = Kind::Listening { listener, backlog: Default::default(), accepting: false };
        self.insert(fd, Sock::new(kind, false));
    }

    /// Connections this process handed over (the daemon asked): their descriptors stand for
    /// streams another process has now.
    pub fn mark_moved(&mut self) {
        let Some(app) = self.app.as_mut() else { return };
        let moved = app.take_moved();
        if !moved.is_empty() {
            self.mark_elsewhere(&moved);
        }
    }

    /// The connections `moved` are another process's (or parked): their descriptors adopt
    /// them at their next use.
    fn mark_elsewhere(&mut self, moved: &[u64]) {
        for fd in self.fds() {
            if let Some(sock) = self.get_mut(fd) {
                if matches!(sock.kind, Kind::Conn { id, .. } if moved.contains(&id.0)) {
                    sock.inherited = true;
                }
            }
        }
    }

    /// Closing the last descriptor of a shared connection: the daemon keeps it for the other
    /// holders (parked, or it stays with the process that has it). Returns whether it did, and
    /// nothing is left to close here.
    pub fn let_go_shared(&mut self, sock: &Sock) -> bool {
        let Kind::Conn { id, .. } = sock.kind else { return false };
        let Some(app) = self.app.as_mut().filter(|_| sock.shared) else { return false };
        if sock.inherited {
            // Another process has its stream: this one only stops holding it.
            let _ = app.link().drop_holder(id.0, this_pid());
            return true;
        }
        app.park(id, this_pid(), false).unwrap_or(false)
    }
}
