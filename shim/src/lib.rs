//! The POSIX shim `etran run` preloads (`LD_PRELOAD`): an unmodified program's TCP/IPv4
//! sockets whose traffic goes through the interface the etran daemon serves run over eTran
//! (one [`etran::app::App`] per process); every other descriptor — Unix sockets, UDP,
//! loopback, other interfaces, files — goes to the C library untouched (`dlsym(RTLD_NEXT)`).
//! ARCHITECTURE.md ("The POSIX shim") says what is served and how.
//!
//! A call the shim cannot serve faithfully on an eTran socket fails with the errno the kernel
//! gives for something it does not support (`EOPNOTSUPP`), never silently wrong.
// The exported functions are the C library's, with its contracts (man 2 and 3). The unit tests'
// binary exports none of them (nor runs `init`): its own calls to the C library would come here.
#![allow(clippy::missing_safety_doc)]
mod real;
mod shared;
mod state;

use std::{
    cell::{Cell, RefCell},
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::RawFd,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use etran::app::ConnId;
use libc::{
    c_int, c_uint, c_ulong, c_void, iovec, msghdr, nfds_t, pollfd, size_t, sockaddr, socklen_t,
    ssize_t,
};
use state::{block_on, lock, shim, tracked, Guard, Kind, Shim, Sock};

fn set_errno(e: c_int) {
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() = e };
}

/// -1 with `errno` set, as C calls fail.
fn fail<T: From<i8>>(e: c_int) -> T {
    set_errno(e);
    T::from(-1)
}

/// The outcome of a call as C returns it.
fn ret<T: From<i8>>(r: Result<T, c_int>) -> T {
    r.unwrap_or_else(fail)
}

/// Says once on stderr why eTran sockets refuse a call.
fn say_once(flag: &AtomicBool, what: &str) {
    if !flag.swap(true, Ordering::Relaxed) {
        eprintln!("etran: {what}");
    }
}

/// An IPv4 socket address from C's.
unsafe fn v4(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddrV4> {
    if addr.is_null() || (len as usize) < std::mem::size_of::<libc::sockaddr_in>() {
        return None;
    }
    // SAFETY: the caller's address is at least a sockaddr_in long.
    let sin = unsafe { &*addr.cast::<libc::sockaddr_in>() };
    (i32::from(sin.sin_family) == libc::AF_INET).then(|| {
        SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
            u16::from_be(sin.sin_port),
        )
    })
}

/// Writes `a` where the caller asked for an address (truncated to its buffer, as the kernel
/// does, with the full length in `*len`).
unsafe fn put_addr(addr: *mut sockaddr, len: *mut socklen_t, a: SocketAddrV4) {
    if addr.is_null() || len.is_null() {
        return;
    }
    let sin = state::sockaddr_in(a);
    let full = std::mem::size_of::<libc::sockaddr_in>();
    // SAFETY: the caller's buffer holds `*len` bytes.
    unsafe {
        let n = full.min(*len as usize);
        std::ptr::copy_nonoverlapping(
            (&sin as *const libc::sockaddr_in).cast::<u8>(),
            addr.cast::<u8>(),
            n,
        );
        *len = full as socklen_t;
    }
}

fn conn_addrs(shim: &mut Shim, id: ConnId) -> Option<(SocketAddrV4, SocketAddrV4)> {
    let k = shim.app_ref().stream(id)?.key();
    let ip = |v: u32| Ipv4Addr::from(v.to_ne_bytes());
    Some((
        SocketAddrV4::new(ip(k.local_ip), u16::from_be(k.local_port)),
        SocketAddrV4::new(ip(k.remote_ip), u16::from_be(k.remote_port)),
    ))
}

/// The socket behind `fd`; a connection or listener a parent process opened before `fork`
/// is adopted or joined first.
fn sock(shim: &mut Shim, fd: RawFd) -> Result<&mut Sock, c_int> {
    shim.adopt_listener(fd)?;
    shim.adopt_conn(fd)?;
    shim.get_mut(fd).ok_or(libc::EBADF)
}

/// A kernel call that may sleep (a read, an accept, a connect on a kernel descriptor): what
/// sends left for the end of the pass is kicked first (one load when there is none).
fn kernel_wait<T>(call: impl FnOnce() -> T) -> T {
    state::flush_unkicked();
    call()
}

/// What a call on a descriptor does: the kernel's (not a socket of ours, or a fresh one), or
/// eTran's.
enum Route {
    Kernel,
    Etran(Guard),
}

/// Whether `fd` is the kernel's (untracked, or a fresh socket) or eTran's (the lock held).
fn route(fd: RawFd) -> Route {
    // Untracked descriptors (the common case) never take the lock.
    if !tracked(fd) {
        return Route::Kernel;
    }
    let mut g = lock();
    let s = shim(&mut g);
    s.adopt_from_parent(fd);
    match s.get(fd) {
        None | Some(Sock { kind: Kind::Fresh { .. }, .. }) => Route::Kernel,
        Some(_) => Route::Etran(g),
    }
}

// ---- creating, binding, listening, accepting, connecting ----

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, proto: c_int) -> c_int {
    // SAFETY: the caller's arguments, handed on.
    let fd = unsafe { real::socket(domain, ty, proto) };
    let tcp = domain == libc::AF_INET
        && ty & 0xf == libc::SOCK_STREAM
        && (proto == 0 || proto == libc::IPPROTO_TCP);
    if fd >= 0 && tcp && (fd as usize) < state::MAX_FD {
        let mut g = lock();
        let s = shim(&mut g);
        s.remove(fd); // a descriptor the kernel reused behind our back
        s.insert(fd, Sock::new(Kind::Fresh { bound: None }, ty & libc::SOCK_NONBLOCK != 0));
    }
    fd
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: the caller's arguments, handed on.
    let r = unsafe { real::bind(fd, addr, len) };
    if r != 0 || !tracked(fd) {
        return r;
    }
    let mut g = lock();
    let s = shim(&mut g);
    let fresh = matches!(s.get(fd), Some(Sock { kind: Kind::Fresh { .. }, .. }));
    // SAFETY: the caller's address.
    let Some(want) = (unsafe { v4(addr, len) }) else { return r };
    if fresh && s.serves_bind(*want.ip()) {
        // The kernel picked the port if asked for 0.
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut l = std::mem::size_of::<libc::sockaddr_in>() as socklen_t;
        // SAFETY: our buffer.
        unsafe { real::getsockname(fd, (&mut sin as *mut libc::sockaddr_in).cast(), &mut l) };
        let port = u16::from_be(sin.sin_port);
        if let Some(sock) = s.get_mut(fd) {
            sock.kind = Kind::Fresh { bound: Some(SocketAddrV4::new(*want.ip(), port)) };
        }
    } else if fresh {
        s.untrack(fd);
    }
    r
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    if !tracked(fd) {
        // SAFETY: handed on.
        return unsafe { real::listen(fd, backlog) };
    }
    let mut g = lock();
    let s = shim(&mut g);
    let bound = match s.get(fd).map(|k| &k.kind) {
        Some(Kind::Fresh { bound: Some(b) }) => *b,
        Some(Kind::Fresh { bound: None }) | None => {
            s.untrack(fd);
            drop(g);
            // SAFETY: handed on.
            return unsafe { real::listen(fd, backlog) };
        }
        Some(Kind::Listening { .. }) => return 0,
        Some(_) => return fail(libc::EINVAL),
    };
    let Some(app) = s.app() else {
        s.untrack(fd);
        drop(g);
        // SAFETY: handed on.
        return unsafe { real::listen(fd, backlog) };
    };
    // SAFETY: `fd` is open (the caller's socket); the daemon gets its own copy.
    let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let listener = match app.listen_shared(bound.port(), socket, true) {
        Ok(l) => l,
        Err(e) => return fail(state::errno_of(&e)),
    };
    // The kernel socket listens too, for what the kernel receives (loopback, other interfaces
    // for a listener on any address: the datapath takes the port's SYNs on the daemon's
    // interface first), and so that its descriptor is a listening socket to a receiver
    // (SCM_RIGHTS) or after exec. It stays non-blocking: accept tries it without waiting.
    // SAFETY: our descriptor.
    unsafe {
        real::listen(fd, backlog);
        let fl = real::fcntl(fd, libc::F_GETFL, 0);
        real::fcntl(fd, libc::F_SETFL, (fl | libc::O_NONBLOCK) as c_ulong);
    }
    let nodelay = s.get(fd).is_some_and(|k| k.nodelay);
    if let Some(sock) = s.get_mut(fd) {
        sock.kind = Kind::Listening { listener, backlog: Default::default(), accepting: false };
        sock.nodelay = nodelay;
    }
    0
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { accept4(fd, addr, len, 0) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    let Route::Etran(mut g) = route(fd) else {
        // SAFETY: handed on.
        return kernel_wait(|| unsafe { real::accept4(fd, addr, len, flags) });
    };
    let (nonblock, timeout, nodelay) = match sock(shim(&mut g), fd) {
        Ok(Sock { kind: Kind::Listening { .. }, nonblock, rcvtimeo, nodelay, .. }) => {
            (*nonblock, *rcvtimeo, *nodelay)
        }
        Ok(_) => return fail(libc::EINVAL),
        Err(e) => return fail(e),
    };
    shim(&mut g).accepting(fd);
    let mut kernel = [pollfd { fd, events: libc::POLLIN, revents: 0 }];
    let timeout = if nonblock { Some(Duration::ZERO) } else { timeout };
    ret(block_on(g, timeout, &mut kernel, false, |s, _| {
        let id = match s.get_mut(fd).map(|k| &mut k.kind) {
            Some(Kind::Listening { backlog, .. }) => backlog.pop_front(),
            _ => return Some(Err(libc::EBADF)),
        };
        if let Some(id) = id {
            return Some(adopt(s, id, addr, len, flags, nodelay));
        }
        // SAFETY: the caller's arguments; the kernel socket is non-blocking.
        let r = unsafe { real::accept4(fd, addr, len, flags) };
        if r >= 0 {
            return Some(Ok(r));
        }
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
        if e != libc::EAGAIN {
            return Some(Err(e));
        }
        s.consumed(fd, libc::EPOLLIN as u32);
        None
    }))
}

/// Gives an accepted eTran connection a descriptor: a fresh kernel socket stands for it.
fn adopt(
    s: &mut Shim,
    id: ConnId,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
    nodelay: bool,
) -> Result<c_int, c_int> {
    let ty = libc::SOCK_STREAM | (flags & (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC));
    // SAFETY: a new socket of ours.
    let nfd = unsafe { real::socket(libc::AF_INET, ty, 0) };
    if nfd < 0 || nfd as usize >= state::MAX_FD {
        let e = if nfd < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EMFILE)
        } else {
            libc::EMFILE
        };
        if nfd >= 0 {
            // SAFETY: ours.
            unsafe { real::close(nfd) };
        }
        s.app_ref().abort(id);
        return Err(e);
    }
    if nodelay {
        let _ = s.app_ref().set_nodelay(id, true);
    }
    if let Some((_, peer)) = conn_addrs(s, id) {
        // SAFETY: the caller's buffers.
        unsafe { put_addr(addr, len, peer) };
    }
    s.remove(nfd);
    let mut sock = Sock::new(
        Kind::Conn { id, rd_shut: false, wr_shut: false },
        flags & libc::SOCK_NONBLOCK != 0,
    );
    sock.nodelay = nodelay;
    s.insert(nfd, sock);
    Ok(nfd)
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: the caller's address.
    let dst = unsafe { v4(addr, len) };
    let (true, Some(dst)) = (tracked(fd), dst) else {
        // SAFETY: handed on.
        return kernel_wait(|| unsafe { real::connect(fd, addr, len) });
    };
    let mut g = lock();
    let s = shim(&mut g);
    s.adopt_from_parent(fd);
    let bound = match sock(s, fd).map(|k| &k.kind) {
        Ok(Kind::Fresh { bound }) => *bound,
        Ok(Kind::Failed) => None,
        Ok(Kind::Connecting(_) | Kind::ParentConnecting) => return fail(libc::EALREADY),
        Ok(Kind::Conn { .. }) => return fail(libc::EISCONN),
        Ok(Kind::Listening { .. }) => return fail(libc::EINVAL),
        Err(e) => return fail(e),
    };
    if !s.serves_connect(*dst.ip()) {
        s.untrack(fd);
        drop(g);
        // SAFETY: handed on.
        return unsafe { real::connect(fd, addr, len) };
    }
    let local_port = bound.map(|b| b.port()).filter(|&p| p != 0);
    let c = match s.app_ref().connect(dst, local_port) {
        Ok(c) => c,
        Err(e) => return fail(state::errno_of(&e)),
    };
    s.leave_kernel_epolls(fd);
    s.get_mut(fd).expect("checked above").kind = Kind::Connecting(c);
    s.show_connect_to_children(fd);
    let sock = s.get_mut(fd).expect("checked above");
    if sock.nonblock {
        return fail(libc::EINPROGRESS);
    }
    let timeout = sock.sndtimeo;
    let r = block_on(g, timeout, &mut [], false, |s, _| match s.get_mut(fd) {
        Some(Sock { kind: Kind::Connecting(_), .. }) => None,
        Some(Sock { kind: Kind::Conn { .. }, .. }) => Some(Ok(0)),
        Some(sock @ Sock { kind: Kind::Failed, .. }) => Some(Err(std::mem::take(&mut sock.error))),
        _ => Some(Err(libc::EBADF)),
    });
    // A connect whose time ran out goes on, as the kernel's does.
    ret(r.map_err(|e| if e == libc::EAGAIN { libc::EINPROGRESS } else { e }))
}

// ---- closing ----

/// Forgets `fd` and leaves what closing it takes to later passes.
fn release(fd: RawFd) {
    let mut g = lock();
    if shim(&mut g).get(fd).is_some_and(Sock::connect_awaited) {
        // A connect children wait for goes on: it finishes first, and is theirs once up.
        g = state::finish_awaited_connects(g);
    }
    let s = shim(&mut g);
    s.abandon_connect(fd);
    if let Some(sock) = s.remove(fd) {
        s.release(sock);
        if s.pass() {
            state::wake_others(s);
        }
    }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if tracked(fd) {
        release(fd);
    }
    // SAFETY: handed on.
    unsafe { real::close(fd) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    if flags as c_uint & libc::CLOSE_RANGE_CLOEXEC == 0 {
        let last = last.min(state::MAX_FD as c_uint - 1);
        for fd in first..=last {
            if tracked(fd as c_int) {
                release(fd as c_int);
            }
        }
    }
    // SAFETY: handed on.
    unsafe { real::close_range(first, last, flags) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    let Route::Etran(mut g) = route(fd) else {
        // SAFETY: handed on.
        return unsafe { real::shutdown(fd, how) };
    };
    let s = shim(&mut g);
    let (id, rd_shut, wr_shut) = match sock(s, fd).map(|k| &mut k.kind) {
        Ok(Kind::Conn { id, rd_shut, wr_shut }) => (*id, rd_shut, wr_shut),
        Ok(_) => return fail(libc::ENOTCONN),
        Err(e) => return fail(e),
    };
    if !matches!(how, libc::SHUT_RD | libc::SHUT_WR | libc::SHUT_RDWR) {
        return fail(libc::EINVAL);
    }
    if how != libc::SHUT_WR {
        *rd_shut = true;
    }
    let send_fin = how != libc::SHUT_RD && !*wr_shut;
    if how != libc::SHUT_RD {
        *wr_shut = true;
    }
    if send_fin {
        if let Err(e) = s.app_ref().close(id) {
            // A connection already reset has nothing to shut down.
            if e.raw_os_error() != Some(libc::ECONNRESET) {
                return fail(state::errno_of(&e));
            }
        }
    }
    0
}

// ---- receiving ----

const RECV_FLAGS: c_int =
    libc::MSG_DONTWAIT | libc::MSG_WAITALL | libc::MSG_NOSIGNAL | libc::MSG_CMSG_CLOEXEC;

/// Receives into `buf` from eTran connection `fd` (the lock held).
fn recv_etran(mut g: Guard, fd: RawFd, buf: &mut [u8], flags: c_int) -> Result<usize, c_int> {
    let s = shim(&mut g);
    let sock = sock(s, fd)?;
    let (id, rd_shut) = match sock.kind {
        Kind::Conn { id, rd_shut, .. } => (id, rd_shut),
        Kind::Connecting(_) | Kind::ParentConnecting if !sock.inherited => {
            let nonblock = sock.nonblock || flags & libc::MSG_DONTWAIT != 0;
            let timeout = sock.rcvtimeo;
            return recv_etran(connect_done(g, fd, nonblock, timeout)?, fd, buf, flags);
        }
        Kind::Failed if sock.error != 0 => return Err(std::mem::take(&mut sock.error)),
        _ => return Err(libc::ENOTCONN),
    };
    if flags & !RECV_FLAGS != 0 {
        // MSG_PEEK, MSG_OOB, MSG_TRUNC: the engine cannot.
        return Err(libc::EOPNOTSUPP);
    }
    if rd_shut {
        return Ok(0);
    }
    let nonblock = sock.nonblock || flags & libc::MSG_DONTWAIT != 0;
    let all = flags & libc::MSG_WAITALL != 0 && !nonblock;
    let shared = sock.shared;
    let timeout = if nonblock { Some(Duration::ZERO) } else { sock.rcvtimeo };
    let mut got = 0;
    let r = block_on(g, timeout, &mut [], false, |s, _| {
        let r = s.app_ref().recv(id, &mut buf[got..]);
        if s.app_ref().stream(id).is_some_and(|st| st.readable() == 0 && !st.is_eof()) {
            s.consumed(fd, libc::EPOLLIN as u32);
        }
        match r {
            Ok(0) => Some(Ok(())),
            Ok(n) => {
                got += n;
                if shared {
                    // Another process may hold it: should this one die, the daemon knows from
                    // the kernel's receive window that nothing it received is lost.
                    let _ = s.app_ref().report_reads(id);
                }
                (!all || got == buf.len()).then_some(Ok(()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(_) if got > 0 => Some(Ok(())),
            Err(e) => Some(Err(state::errno_of(&e))),
        }
    });
    match r {
        Ok(()) => Ok(got),
        Err(_) if got > 0 => Ok(got),
        Err(e) => Err(e),
    }
}

/// A socket whose connect is in progress, this process's (`Kind::Connecting`) or the parent
/// process's (`Kind::ParentConnecting`): a call that must not wait gets `EAGAIN`; a blocking
/// one waits until it is up or failed (`EAGAIN` once `timeout` passed), as Linux's `recv` and
/// `send` wait on a connecting socket; the call then goes on (a failed connect's error is its
/// result, as the kernel's pending error is). The lock again, for the call.
fn connect_done(
    g: Guard,
    fd: RawFd,
    nonblock: bool,
    timeout: Option<Duration>,
) -> Result<Guard, c_int> {
    if nonblock {
        return Err(libc::EAGAIN);
    }
    block_on(g, timeout, &mut [], false, |s, _| {
        let waiting = matches!(
            s.get(fd).map(|k| &k.kind),
            Some(Kind::ParentConnecting | Kind::Connecting(_))
        );
        (!waiting).then_some(Ok(()))
    })?;
    Ok(lock())
}

/// `buf` as a byte slice (empty for a null or empty buffer).
unsafe fn bytes_mut<'a>(buf: *mut c_void, n: size_t) -> &'a mut [u8] {
    if buf.is_null() || n == 0 {
        return &mut [];
    }
    // SAFETY: the caller's buffer of `n` bytes.
    unsafe { std::slice::from_raw_parts_mut(buf.cast(), n) }
}

unsafe fn bytes<'a>(buf: *const c_void, n: size_t) -> &'a [u8] {
    if buf.is_null() || n == 0 {
        return &[];
    }
    // SAFETY: the caller's buffer of `n` bytes.
    unsafe { std::slice::from_raw_parts(buf.cast(), n) }
}

fn ssize(r: Result<usize, c_int>) -> ssize_t {
    ret(r.map(|n| n as ssize_t))
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    match route(fd) {
        // SAFETY: handed on (a read that may sleep: see `kernel_wait`).
        Route::Kernel => kernel_wait(|| unsafe { real::read(fd, buf, n) }),
        // SAFETY: the caller's buffer.
        Route::Etran(g) => ssize(recv_etran(g, fd, unsafe { bytes_mut(buf, n) }, 0)),
    }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
    // SAFETY: the caller's arguments.
    unsafe { recvfrom(fd, buf, n, flags, std::ptr::null_mut(), std::ptr::null_mut()) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    match route(fd) {
        // SAFETY: handed on.
        Route::Kernel => kernel_wait(|| unsafe { real::recvfrom(fd, buf, n, flags, addr, len) }),
        Route::Etran(g) => {
            // TCP names no sender.
            if !len.is_null() {
                // SAFETY: the caller's length.
                unsafe { *len = 0 };
            }
            // SAFETY: the caller's buffer.
            ssize(recv_etran(g, fd, unsafe { bytes_mut(buf, n) }, flags))
        }
    }
}

/// Reads into the iovecs through one buffer.
unsafe fn recv_iov(
    g: Guard,
    fd: RawFd,
    iov: *const iovec,
    n: usize,
    flags: c_int,
) -> Result<usize, c_int> {
    // SAFETY: the caller's iovecs.
    let iovs = if iov.is_null() || n == 0 {
        &[][..]
    } else {
        unsafe { std::slice::from_raw_parts(iov, n) }
    };
    let total = iovs.iter().map(|v| v.iov_len).sum();
    let mut tmp = vec![0u8; total];
    let got = recv_etran(g, fd, &mut tmp, flags)?;
    let mut at = 0;
    for v in iovs {
        let k = v.iov_len.min(got - at);
        // SAFETY: the caller's buffer of iov_len bytes.
        unsafe { std::ptr::copy_nonoverlapping(tmp[at..].as_ptr(), v.iov_base.cast::<u8>(), k) };
        at += k;
    }
    Ok(got)
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    match route(fd) {
        // SAFETY: handed on.
        Route::Kernel => kernel_wait(|| unsafe { real::readv(fd, iov, n) }),
        // SAFETY: the caller's iovecs.
        Route::Etran(g) => ssize(unsafe { recv_iov(g, fd, iov, n.max(0) as usize, 0) }),
    }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    match route(fd) {
        // SAFETY: handed on.
        Route::Kernel => {
            let n = kernel_wait(|| unsafe { real::recvmsg(fd, msg, flags) });
            if n > 0 && !msg.is_null() {
                // SAFETY: the header the kernel just filled.
                after_receiving(&unsafe { passed_fds(&*msg) });
            }
            n
        }
        Route::Etran(g) => {
            // SAFETY: the caller's message header.
            let m = unsafe { &mut *msg };
            m.msg_namelen = 0;
            m.msg_controllen = 0;
            m.msg_flags = 0;
            // SAFETY: its iovecs.
            ssize(unsafe { recv_iov(g, fd, m.msg_iov, m.msg_iovlen, flags) })
        }
    }
}

// ---- sending ----

const SEND_FLAGS: c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | libc::MSG_MORE | libc::MSG_EOR;

/// Sends `data` on eTran connection `fd` (the lock held): all of it unless non-blocking.
fn send_etran(mut g: Guard, fd: RawFd, data: &[u8], flags: c_int) -> Result<usize, c_int> {
    let s = shim(&mut g);
    let sock = sock(s, fd)?;
    let (id, wr_shut) = match sock.kind {
        Kind::Conn { id, wr_shut, .. } => (id, wr_shut),
        Kind::Connecting(_) | Kind::ParentConnecting if !sock.inherited => {
            let nonblock = sock.nonblock || flags & libc::MSG_DONTWAIT != 0;
            let timeout = sock.sndtimeo;
            return send_etran(connect_done(g, fd, nonblock, timeout)?, fd, data, flags);
        }
        Kind::Failed if sock.error != 0 => return Err(std::mem::take(&mut sock.error)),
        _ => return Err(libc::ENOTCONN),
    };
    if flags & !SEND_FLAGS != 0 {
        return Err(libc::EOPNOTSUPP); // MSG_OOB
    }
    let epipe = || {
        if flags & libc::MSG_NOSIGNAL == 0 {
            // SAFETY: what the kernel does to a writer on a closed connection.
            unsafe { libc::raise(libc::SIGPIPE) };
        }
        libc::EPIPE
    };
    if wr_shut {
        return Err(epipe());
    }
    let nonblock = sock.nonblock || flags & libc::MSG_DONTWAIT != 0;
    let timeout = if nonblock { Some(Duration::ZERO) } else { sock.sndtimeo };
    let mut sent = 0;
    let r = block_on(g, timeout, &mut [], false, |s, _| {
        let r = s.send(id, &data[sent..]);
        if s.app_ref().stream(id).is_some_and(|st| st.send_space() == 0) {
            s.consumed(fd, libc::EPOLLOUT as u32);
        }
        match r {
            Ok(n) => {
                sent += n;
                (sent == data.len() || nonblock).then_some(Ok(()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(_) if sent > 0 => Some(Ok(())),
            Err(e) => Some(Err(state::errno_of(&e))),
        }
    });
    match r {
        Ok(()) => Ok(sent),
        Err(_) if sent > 0 => Ok(sent),
        Err(libc::EPIPE) => Err(epipe()),
        Err(e) => Err(e),
    }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    match route(fd) {
        // SAFETY: handed on.
        Route::Kernel => unsafe { real::write(fd, buf, n) },
        // SAFETY: the caller's buffer.
        Route::Etran(g) => ssize(send_etran(g, fd, unsafe { bytes(buf, n) }, 0)),
    }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t {
    // SAFETY: the caller's arguments.
    unsafe { sendto(fd, buf, n, flags, std::ptr::null(), 0) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> ssize_t {
    match route(fd) {
        // SAFETY: handed on.
        Route::Kernel => unsafe { real::sendto(fd, buf, n, flags, addr, len) },
        // A connected TCP socket ignores the address, as Linux's does.
        // SAFETY: the caller's buffer.
        Route::Etran(g) => ssize(send_etran(g, fd, unsafe { bytes(buf, n) }, flags)),
    }
}

/// Sends the iovecs through one buffer.
unsafe fn send_iov(
    g: Guard,
    fd: RawFd,
    iov: *const iovec,
    n: usize,
    flags: c_int,
) -> Result<usize, c_int> {
    // SAFETY: the caller's iovecs.
    let iovs = if iov.is_null() || n == 0 {
        &[][..]
    } else {
        unsafe { std::slice::from_raw_parts(iov, n) }
    };
    let mut tmp = Vec::with_capacity(iovs.iter().map(|v| v.iov_len).sum());
    for v in iovs {
        // SAFETY: the caller's buffer of iov_len bytes.
        tmp.extend_from_slice(unsafe { bytes(v.iov_base, v.iov_len) });
    }
    send_etran(g, fd, &tmp, flags)
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    match route(fd) {
        // SAFETY: handed on.
        Route::Kernel => unsafe { real::writev(fd, iov, n) },
        // SAFETY: the caller's iovecs.
        Route::Etran(g) => ssize(unsafe { send_iov(g, fd, iov, n.max(0) as usize, 0) }),
    }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    match route(fd) {
        Route::Kernel => {
            // SAFETY: the caller's message header.
            let passed = if msg.is_null() { Vec::new() } else { unsafe { passed_fds(&*msg) } };
            if passed.iter().any(|&p| tracked(p)) {
                before_passing(&passed);
            }
            // SAFETY: handed on.
            unsafe { real::sendmsg(fd, msg, flags) }
        }
        Route::Etran(g) => {
            // SAFETY: the caller's message header.
            let m = unsafe { &*msg };
            if m.msg_controllen > 0 {
                return fail(libc::EOPNOTSUPP); // ancillary data (descriptors) over TCP/IP
            }
            // SAFETY: its iovecs.
            ssize(unsafe { send_iov(g, fd, m.msg_iov, m.msg_iovlen, flags) })
        }
    }
}

/// The descriptors `m` passes (`SCM_RIGHTS`); none for the library's own messages to the
/// daemon, sent under the lock.
unsafe fn passed_fds(m: &msghdr) -> Vec<RawFd> {
    let mut fds = Vec::new();
    if m.msg_controllen == 0 || m.msg_control.is_null() || state::held_here() {
        return fds;
    }
    // SAFETY: the caller's control buffer, walked with the C library's own macros.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(m) };
    while !c.is_null() {
        // SAFETY: a header inside the buffer (CMSG_NXTHDR stops at its end).
        let h = unsafe { &*c };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: a computation on lengths.
            let head = unsafe { libc::CMSG_LEN(0) } as usize;
            let n = (h.cmsg_len as usize).saturating_sub(head) / std::mem::size_of::<c_int>();
            // SAFETY: the header's data, `n` descriptors.
            let data = unsafe { libc::CMSG_DATA(c) } as *const c_int;
            // SAFETY: within the header's data; it may be unaligned.
            fds.extend((0..n).map(|i| unsafe { data.add(i).read_unaligned() }));
        }
        // SAFETY: the next header of the same buffer, or null.
        c = unsafe { libc::CMSG_NXTHDR(m, c) };
    }
    fds
}

/// Descriptors `passed` (some of them eTran sockets) are about to go over a Unix socket: their
/// connections wait at the daemon for the receiver to adopt them (see shared.rs); a listener
/// is joined by the receiver (its kernel socket listens too). A connect in progress among them
/// finishes first, for up to a second (`state::finish_connects`, the bound of the connects
/// forked children wait for; a handshake cannot move between apps): the receiver finds the
/// connection up, or, when it failed or is still in progress, an unconnected socket without
/// the connect's outcome (said once).
fn before_passing(passed: &[RawFd]) {
    static SAID: AtomicBool = AtomicBool::new(false);
    let connecting = |s: &Shim| {
        passed.iter().any(|&p| {
            matches!(s.get(p), Some(Sock { inherited: false, kind: Kind::Connecting(_), .. }))
        })
    };
    let (mut g, _) = state::finish_connects(lock(), connecting);
    let s = shim(&mut g);
    s.share_passed(passed);
    let unconnected =
        |p: &RawFd| matches!(s.get(*p).map(|k| &k.kind), Some(Kind::Failed | Kind::Connecting(_)));
    if passed.iter().any(unconnected) {
        say_once(
            &SAID,
            "an eTran socket whose connect failed or is still in progress after a second, \
             passed over a Unix socket (SCM_RIGHTS), arrives unconnected: the receiver does \
             not see the connect's outcome",
        );
    }
}

/// Descriptors received over a Unix socket: each unconnected TCP/IPv4 socket of the kernel's
/// may be the socket behind a connection passed by another process under the shim, which
/// this one then adopts, and each listening one a listener, which this one joins (see
/// shared.rs).
fn after_receiving(received: &[RawFd]) {
    for &fd in received {
        match tcp_state(fd) {
            Some(false) if unconnected(fd) => shim(&mut lock()).adopt_passed(fd),
            Some(true) if !tracked(fd) => shim(&mut lock()).join_passed_listener(fd),
            _ => {}
        }
    }
}

/// For a TCP/IPv4 socket of the kernel's, whether it listens; None for anything else.
fn tcp_state(fd: RawFd) -> Option<bool> {
    let opt = |name| {
        let (mut v, mut len) = (0 as c_int, std::mem::size_of::<c_int>() as socklen_t);
        // SAFETY: an int-sized option into a local.
        let r = unsafe {
            real::getsockopt(fd, libc::SOL_SOCKET, name, (&mut v as *mut c_int).cast(), &mut len)
        };
        (r == 0).then_some(v)
    };
    if opt(libc::SO_DOMAIN) != Some(libc::AF_INET)
        || opt(libc::SO_PROTOCOL) != Some(libc::IPPROTO_TCP)
    {
        return None;
    }
    opt(libc::SO_ACCEPTCONN).map(|v| v != 0)
}

/// Whether `fd`, a TCP socket not listening, is not connected either.
fn unconnected(fd: RawFd) -> bool {
    // SAFETY: an address buffer of ours.
    let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as socklen_t;
    // SAFETY: as above.
    let r = unsafe { real::getpeername(fd, (&mut a as *mut libc::sockaddr_in).cast(), &mut len) };
    r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOTCONN)
}

/// `sendfile` to an eTran connection: up to 1 MiB read from `inp` (at `*off` if given) and
/// sent; the file position (or `*off`) moves by what was sent.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn sendfile(
    out: c_int,
    inp: c_int,
    off: *mut libc::off_t,
    n: size_t,
) -> ssize_t {
    let Route::Etran(g) = route(out) else {
        // SAFETY: handed on.
        return unsafe { real::sendfile(out, inp, off, n) };
    };
    let mut buf = vec![0u8; n.min(1 << 20)];
    // SAFETY: our buffer; the caller's offset.
    let got = unsafe {
        if off.is_null() {
            real::read(inp, buf.as_mut_ptr().cast(), buf.len())
        } else {
            libc::pread(inp, buf.as_mut_ptr().cast(), buf.len(), *off)
        }
    };
    if got < 0 {
        return got;
    }
    let r = send_etran(g, out, &buf[..got as usize], 0);
    if let Ok(sent) = r {
        // SAFETY: the caller's offset, or the file's position.
        unsafe {
            if !off.is_null() {
                *off += sent as libc::off_t;
            } else if sent < got as usize {
                libc::lseek(inp, sent as libc::off_t - got as libc::off_t, libc::SEEK_CUR);
            }
        }
    }
    ssize(r)
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn sendfile64(
    out: c_int,
    inp: c_int,
    off: *mut libc::off_t,
    n: size_t,
) -> ssize_t {
    // SAFETY: the caller's arguments (off_t is 64 bits here).
    unsafe { sendfile(out, inp, off, n) }
}

// ---- names and options ----

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if let Route::Etran(mut g) = route(fd) {
        let s = shim(&mut g);
        if let Ok(Kind::Conn { id, .. }) = sock(s, fd).map(|k| &k.kind) {
            let id = *id;
            if let Some((local, _)) = conn_addrs(s, id) {
                // SAFETY: the caller's buffers.
                unsafe { put_addr(addr, len, local) };
                return 0;
            }
        }
    }
    // Fresh, listening and connecting sockets: the kernel socket is bound where they are.
    // SAFETY: handed on.
    unsafe { real::getsockname(fd, addr, len) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let Route::Etran(mut g) = route(fd) else {
        // SAFETY: handed on.
        return unsafe { real::getpeername(fd, addr, len) };
    };
    let s = shim(&mut g);
    match sock(s, fd).map(|k| &k.kind) {
        Ok(Kind::Conn { id, .. }) => {
            let id = *id;
            match conn_addrs(s, id) {
                Some((_, peer)) => {
                    // SAFETY: the caller's buffers.
                    unsafe { put_addr(addr, len, peer) };
                    0
                }
                None => fail(libc::ENOTCONN),
            }
        }
        Ok(_) => fail(libc::ENOTCONN),
        Err(e) => fail(e),
    }
}

/// TCP options an eTran socket accepts: kept by its kernel socket (getsockopt reads them
/// back), without effect on eTran's engine (keepalive probes, for one, are not sent).
const TCP_KEPT: [c_int; 7] = [
    libc::TCP_KEEPIDLE,
    libc::TCP_KEEPINTVL,
    libc::TCP_KEEPCNT,
    libc::TCP_QUICKACK,
    libc::TCP_USER_TIMEOUT,
    libc::TCP_CORK,
    libc::TCP_DEFER_ACCEPT,
];

fn timeval_of(val: *const c_void, len: socklen_t) -> Option<Option<Duration>> {
    if val.is_null() || (len as usize) < std::mem::size_of::<libc::timeval>() {
        return None;
    }
    // SAFETY: the caller's timeval.
    let tv = unsafe { &*val.cast::<libc::timeval>() };
    let d = Duration::from_secs(tv.tv_sec.max(0) as u64)
        + Duration::from_micros(tv.tv_usec.max(0) as u64);
    Some((!d.is_zero()).then_some(d))
}

fn int_of(val: *const c_void, len: socklen_t) -> Option<c_int> {
    // SAFETY: the caller's int.
    (!val.is_null() && len as usize >= 4).then(|| unsafe { *val.cast::<c_int>() })
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    if !tracked(fd) {
        // SAFETY: handed on.
        return unsafe { real::setsockopt(fd, level, name, val, len) };
    }
    let mut g = lock();
    let s = shim(&mut g);
    let sock = match sock(s, fd) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    let fresh = matches!(sock.kind, Kind::Fresh { .. });
    let conn = match sock.kind {
        Kind::Conn { id, .. } => Some(id),
        _ => None,
    };
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_RCVTIMEO) => match timeval_of(val, len) {
            Some(t) => sock.rcvtimeo = t,
            None => return fail(libc::EINVAL),
        },
        (libc::SOL_SOCKET, libc::SO_SNDTIMEO) => match timeval_of(val, len) {
            Some(t) => sock.sndtimeo = t,
            None => return fail(libc::EINVAL),
        },
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => match int_of(val, len) {
            Some(v) => {
                sock.nodelay = v != 0;
                if let Some(id) = conn {
                    let _ = s.app_ref().set_nodelay(id, v != 0);
                }
            }
            None => return fail(libc::EINVAL),
        },
        // The algorithm egress runs (tcp_cc.h) is DCTCP: asking for it is fine, any other is
        // unknown, as Linux says of an algorithm it does not have.
        (libc::IPPROTO_TCP, libc::TCP_CONGESTION) => {
            // SAFETY: the caller's buffer of `len` bytes.
            let name = unsafe { bytes(val, len as usize) };
            let name = name.split(|&b| b == 0).next().unwrap_or_default();
            return match (name == b"dctcp", fresh) {
                (true, _) => 0,
                (false, false) => fail(libc::ENOENT),
                (false, true) => {
                    drop(g);
                    // SAFETY: handed on: the kernel's until it connects or listens.
                    unsafe { real::setsockopt(fd, level, libc::TCP_CONGESTION, val, len) }
                }
            };
        }
        (libc::SOL_SOCKET | libc::IPPROTO_IP, _) => {}
        (libc::IPPROTO_TCP, n) if fresh || TCP_KEPT.contains(&n) => {}
        _ if fresh => {}
        _ => return fail(libc::EOPNOTSUPP),
    }
    drop(g);
    // The kernel socket keeps the value (and checks it as it would).
    // SAFETY: handed on.
    unsafe { real::setsockopt(fd, level, name, val, len) }
}

unsafe fn put_int(val: *mut c_void, len: *mut socklen_t, v: c_int) -> c_int {
    if val.is_null() || len.is_null() || (unsafe { *len } as usize) < 4 {
        return fail(libc::EINVAL);
    }
    // SAFETY: the caller's buffer of at least an int.
    unsafe {
        *val.cast::<c_int>() = v;
        *len = 4;
    }
    0
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    let Route::Etran(mut g) = route(fd) else {
        // SAFETY: handed on.
        return unsafe { real::getsockopt(fd, level, name, val, len) };
    };
    let s = shim(&mut g);
    let (listening, conn, nodelay, error) = match sock(s, fd) {
        Ok(k) => (
            matches!(k.kind, Kind::Listening { .. }),
            match k.kind {
                Kind::Conn { id, .. } => Some(id),
                _ => None,
            },
            k.nodelay,
            &mut k.error,
        ),
        Err(e) => return fail(e),
    };
    // SAFETY: the caller's buffers.
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_ERROR) => unsafe { put_int(val, len, std::mem::take(error)) },
        (libc::SOL_SOCKET, libc::SO_ACCEPTCONN) => unsafe { put_int(val, len, listening.into()) },
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => unsafe { put_int(val, len, nodelay.into()) },
        (libc::IPPROTO_TCP, libc::TCP_MAXSEG) if conn.is_some() => {
            match conn.and_then(|id| s.app_ref().stream(id)) {
                Some(st) => unsafe { put_int(val, len, st.mss().into()) },
                None => fail(libc::ENOTCONN),
            }
        }
        // Not connected: the kernel socket's answer (the MSS asked for, or the default) is the
        // one Linux gives.
        (libc::SOL_SOCKET | libc::IPPROTO_IP, _) | (libc::IPPROTO_TCP, libc::TCP_MAXSEG) => {
            drop(g);
            // SAFETY: handed on.
            unsafe { real::getsockopt(fd, level, name, val, len) }
        }
        (libc::IPPROTO_TCP, n) if TCP_KEPT.contains(&n) => {
            drop(g);
            // SAFETY: handed on.
            unsafe { real::getsockopt(fd, level, name, val, len) }
        }
        (libc::IPPROTO_TCP, libc::TCP_INFO) => {
            let info = tcp_info(listening, conn.and_then(|id| s.app_ref().stream(id)));
            // SAFETY: the caller's buffers.
            unsafe { put_bytes(val, len, bytes_of(&info)) }
        }
        // The algorithm egress runs (tcp_cc.h): DCTCP, Reno-like without ECN, as Linux's.
        (libc::IPPROTO_TCP, libc::TCP_CONGESTION) => {
            let mut name = [0u8; 16]; // TCP_CA_NAME_MAX, zero-padded as the kernel gives it
            name[..5].copy_from_slice(b"dctcp");
            // SAFETY: the caller's buffers.
            unsafe { put_bytes(val, len, &name) }
        }
        // The rest of the TCP options: the kernel socket's answer would be wrong.
        _ => fail(libc::EOPNOTSUPP),
    }
}

/// `v`'s bytes.
fn bytes_of<T>(v: &T) -> &[u8] {
    // SAFETY: a plain C struct, every byte initialised (zeroed first).
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// Writes as much of `b` as the caller's buffer holds and says how much, as the kernel does
/// for structures and names.
unsafe fn put_bytes(val: *mut c_void, len: *mut socklen_t, b: &[u8]) -> c_int {
    if val.is_null() || len.is_null() {
        return fail(libc::EFAULT);
    }
    // SAFETY: the caller's buffer of `*len` bytes.
    unsafe {
        let n = (*len as usize).min(b.len());
        std::ptr::copy_nonoverlapping(b.as_ptr(), val.cast::<u8>(), n);
        *len = n as socklen_t;
    }
    0
}

/// `TCP_INFO` from the engine's view of a connection (or a listener's): state, MSS, RTT and its
/// variation, RTO, segments in flight, retransmissions, the send window (egress keeps the
/// congestion window; what the app may send, the smaller of it and the peer's, stands for it)
/// and byte counts.
/// Fields the engine does not know stay zero.
fn tcp_info(listening: bool, st: Option<&etran::app::Stream>) -> libc::tcp_info {
    use etran::transport::tcp::close::State;
    // SAFETY: a plain C struct, valid all zeros.
    let mut i: libc::tcp_info = unsafe { std::mem::zeroed() };
    let Some(st) = st else {
        i.tcpi_state = if listening { 10 } else { 7 }; // TCP_LISTEN, TCP_CLOSE
        return i;
    };
    let us = |d: Duration| d.as_micros().min(u32::MAX.into()) as u32;
    i.tcpi_state = match st.close_state() {
        State::Established => 1,
        State::FinWait1 => 4,
        State::FinWait2 => 5,
        State::TimeWait => 6,
        State::Closed => 7,
        State::CloseWait => 8,
        State::LastAck => 9,
        State::Closing => 11,
    };
    let mss = u32::from(st.mss());
    let stats = st.stats();
    i.tcpi_rto = us(st.rto());
    i.tcpi_snd_mss = mss;
    i.tcpi_rcv_mss = mss;
    i.tcpi_advmss = mss;
    i.tcpi_pmtu = mss + 40;
    i.tcpi_unacked = st.in_flight().div_ceil(mss.max(1));
    i.tcpi_rtt = st.srtt().map_or(0, us);
    i.tcpi_rttvar = st.rttvar().map_or(0, us);
    i.tcpi_snd_cwnd = st.send_wnd() / mss.max(1);
    i.tcpi_snd_ssthresh = u32::MAX >> 1; // TCP_INFINITE_SSTHRESH: egress has the real one
    i.tcpi_total_retrans = stats.retransmitted.div_ceil(u64::from(mss.max(1))) as u32;
    i.tcpi_bytes_acked = stats.tx_bytes.saturating_sub(u64::from(st.in_flight()));
    i.tcpi_bytes_received = stats.rx_bytes;
    i.tcpi_notsent_bytes = st.unsent() as u32;
    i
}

// ---- descriptor flags ----

/// `fcntl`'s third argument is variadic; on x86-64 it arrives in the same register whatever
/// its type, so one integer parameter carries it.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    if !tracked(fd) {
        // SAFETY: handed on.
        return unsafe { real::fcntl(fd, cmd, arg) };
    }
    let mut g = lock();
    let s = shim(&mut g);
    let Some(sock) = s.get_mut(fd) else {
        drop(g);
        // SAFETY: handed on.
        return unsafe { real::fcntl(fd, cmd, arg) };
    };
    let fresh = matches!(sock.kind, Kind::Fresh { .. });
    let listening = matches!(sock.kind, Kind::Listening { .. });
    match cmd {
        libc::F_SETFL => {
            sock.nonblock = arg as c_int & libc::O_NONBLOCK != 0;
            let arg = if listening { arg | libc::O_NONBLOCK as c_ulong } else { arg };
            drop(g);
            // SAFETY: handed on.
            unsafe { real::fcntl(fd, cmd, arg) }
        }
        libc::F_GETFL => {
            let nonblock = sock.nonblock;
            drop(g);
            // SAFETY: handed on.
            let fl = unsafe { real::fcntl(fd, cmd, arg) };
            if fl < 0 || fresh {
                return fl;
            }
            (fl & !libc::O_NONBLOCK) | if nonblock { libc::O_NONBLOCK } else { 0 }
        }
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            drop(g);
            // SAFETY: handed on.
            duplicate(fd, None, || unsafe { real::fcntl(fd, cmd, arg) })
        }
        _ => {
            drop(g);
            // SAFETY: handed on.
            unsafe { real::fcntl(fd, cmd, arg) }
        }
    }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { fcntl(fd, cmd, arg) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn ioctl(fd: c_int, req: c_ulong, arg: c_ulong) -> c_int {
    let p = arg as *mut c_int;
    if req == libc::FIONBIO && !p.is_null() && tracked(fd) {
        let mut g = lock();
        if let Some(sock) = shim(&mut g).get_mut(fd) {
            // SAFETY: the caller's int.
            sock.nonblock = unsafe { *p } != 0;
            if matches!(sock.kind, Kind::Listening { .. }) {
                return 0; // the kernel socket stays non-blocking
            }
        }
    }
    let Route::Etran(mut g) = route(fd) else {
        // SAFETY: handed on.
        return unsafe { real::ioctl(fd, req, arg) };
    };
    let s = shim(&mut g);
    let conn = match sock(s, fd) {
        Ok(Sock { kind: Kind::Conn { id, .. }, .. }) => Some(*id),
        Ok(_) => None,
        Err(e) => return fail(e),
    };
    match req {
        libc::FIONREAD if !p.is_null() => {
            let n = conn.and_then(|id| s.app_ref().stream(id)).map_or(0, |st| st.readable());
            // SAFETY: the caller's int.
            unsafe { *p = n.min(c_int::MAX as usize) as c_int };
            0
        }
        // The send queue's figures would be the idle kernel socket's.
        libc::TIOCOUTQ | libc::SIOCOUTQNSD => fail(libc::EOPNOTSUPP),
        _ => {
            drop(g);
            // SAFETY: handed on (interface ioctls work on any socket).
            unsafe { real::ioctl(fd, req, arg) }
        }
    }
}

/// Duplicates descriptor `fd` with `dup` (the kernel's call, which returns the new
/// descriptor): the new one refers to the same socket, which stays open until both are closed.
/// `to`: the descriptor `dup2`/`dup3` replaces, closed first (its socket released unless
/// another descriptor refers to it) when the kernel's call succeeds.
fn duplicate(fd: c_int, to: Option<c_int>, dup: impl FnOnce() -> c_int) -> c_int {
    if !tracked(fd) && !to.is_some_and(tracked) {
        return dup();
    }
    // Under the lock: no other thread sees the new descriptor before it is ours.
    let mut g = lock();
    let nfd = dup();
    if nfd < 0 || to == Some(fd) {
        return nfd;
    }
    let s = shim(&mut g);
    if let Some(sock) = s.remove(nfd) {
        s.release(sock); // dup2's implicit close of `to`
    }
    if tracked(fd) {
        if nfd as usize >= state::MAX_FD {
            // SAFETY: the descriptor just made, which cannot be ours.
            unsafe { real::close(nfd) };
            return fail(libc::EMFILE);
        }
        s.share(fd, nfd);
    }
    nfd
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: handed on.
    duplicate(fd, None, || unsafe { real::dup(fd) })
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn dup2(fd: c_int, to: c_int) -> c_int {
    // SAFETY: handed on.
    duplicate(fd, Some(to), || unsafe { real::dup2(fd, to) })
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int {
    // SAFETY: handed on.
    duplicate(fd, Some(to), || unsafe { real::dup3(fd, to, flags) })
}

/// Epoll sets may watch eTran and kernel descriptors together: the kernel's set watches the
/// kernel ones (and a fresh socket's, a listener's), the shim keeps the eTran ones
/// beside it (`Shim::epolls`) and `epoll_wait` reports both. `EPOLLET` reports an event once
/// until the program consumed it (`Interest::report`, `Shim::consumed`); `EPOLLONESHOT` is
/// honoured.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn epoll_ctl(
    ep: c_int,
    op: c_int,
    fd: c_int,
    ev: *mut libc::epoll_event,
) -> c_int {
    if !tracked(fd) {
        // SAFETY: handed on.
        return unsafe { real::epoll_ctl(ep, op, fd, ev) };
    }
    let mut g = lock();
    let s = shim(&mut g);
    let in_kernel = match sock(s, fd) {
        Ok(k) => matches!(k.kind, Kind::Fresh { .. } | Kind::Listening { .. }),
        Err(e) => return fail(e),
    };
    if op != libc::EPOLL_CTL_DEL {
        s.accepting(fd); // a listener in an epoll set: its program waits for connections
    }
    // SAFETY: the caller's event, when the operation has one.
    let want = (!ev.is_null()).then(|| unsafe { ((*ev).events, (*ev).u64) });
    let set = s.epolls.entry(ep).or_default();
    let known = set.get(&fd).map(|it| it.in_kernel);
    match (op, want, known) {
        (libc::EPOLL_CTL_ADD, _, Some(_)) => return fail(libc::EEXIST),
        (libc::EPOLL_CTL_MOD | libc::EPOLL_CTL_DEL, _, None) => return fail(libc::ENOENT),
        (libc::EPOLL_CTL_ADD | libc::EPOLL_CTL_MOD, None, _) => return fail(libc::EFAULT),
        (libc::EPOLL_CTL_ADD | libc::EPOLL_CTL_MOD | libc::EPOLL_CTL_DEL, ..) => {}
        _ => return fail(libc::EINVAL),
    }
    if known.unwrap_or(in_kernel) {
        // SAFETY: handed on: the kernel's set watches the kernel socket.
        let r = unsafe { real::epoll_ctl(ep, op, fd, ev) };
        if r != 0 {
            return r;
        }
    }
    match (op, want) {
        (libc::EPOLL_CTL_DEL, _) => drop(set.remove(&fd)),
        (_, Some((events, data))) => {
            let in_kernel = known.unwrap_or(in_kernel);
            set.insert(fd, state::Interest::new(events, data, in_kernel));
            state::set_tracked(ep, true);
        }
        _ => {}
    }
    0
}

/// `epoll_wait` over a set that may hold eTran descriptors; `timeout` None: without limit.
unsafe fn epoll_wait_mixed(
    ep: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: Option<Duration>,
) -> Result<c_int, c_int> {
    if max <= 0 || events.is_null() {
        return Err(libc::EINVAL);
    }
    // SAFETY: the caller's array of `max` events.
    let out = unsafe { std::slice::from_raw_parts_mut(events, max as usize) };
    let g = lock();
    let mut kernel = [pollfd { fd: ep, events: libc::POLLIN, revents: 0 }];
    let r = block_on(g, timeout, &mut kernel, true, |s, k| {
        let mut n = 0;
        let fds: Vec<RawFd> =
            s.epolls.get(&ep).map(|set| set.keys().copied().collect()).unwrap_or_default();
        for fd in fds {
            if n == out.len() {
                break;
            }
            let _ = s.adopt_conn(fd); // a connection whose stream another process has
            s.adopt_from_parent_paced(fd); // a fresh socket the parent may have connected
            let Some(ev) = s.revents(fd) else { continue }; // fresh: the kernel's set has it
            let Some(it) = s.epolls.get_mut(&ep).and_then(|set| set.get_mut(&fd)) else { continue };
            let got = it.report(
                (ev as u16 as u32) & (it.events | libc::EPOLLERR as u32 | libc::EPOLLHUP as u32),
            );
            if got != 0 {
                out[n] = libc::epoll_event { events: got, u64: it.data };
                n += 1;
                if it.events & libc::EPOLLONESHOT as u32 != 0 {
                    it.events = 0;
                }
            }
        }
        // The kernel's set: when eTran has nothing (the call may wait), when a sleep saw it
        // ready, and now and then behind eTran's events (a system call saved per busy wait).
        let now = Instant::now();
        let ask = n == 0 || k.first().is_some_and(|p| p.revents != 0) || now >= s.kernel_due;
        if ask && n < out.len() {
            s.kernel_due = now + state::KERNEL_CHECK;
            // SAFETY: the rest of the caller's array.
            let r =
                unsafe { real::epoll_wait(ep, out[n..].as_mut_ptr(), (out.len() - n) as c_int, 0) };
            if r < 0 && n == 0 {
                return Some(Err(std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO)));
            }
            n += r.max(0) as usize;
        }
        (n > 0).then_some(Ok(n as c_int))
    });
    match r {
        Err(libc::EAGAIN) => Ok(0),
        r => r,
    }
}

/// Runs `f` with the caller's signal mask in place (not atomically, unlike the kernel's
/// `ppoll`/`epoll_pwait`).
fn with_mask<T>(mask: *const libc::sigset_t, f: impl FnOnce() -> T) -> T {
    if mask.is_null() {
        return f();
    }
    // SAFETY: the caller's mask for the wait; this thread's mask restored after.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, mask, &mut old) };
    let r = f();
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    r
}

fn ms_timeout(ms: c_int) -> Option<Duration> {
    (ms >= 0).then(|| Duration::from_millis(ms as u64))
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn epoll_wait(
    ep: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    waiting(|| {
        if !tracked(ep) {
            // SAFETY: handed on.
            return unsafe { real::epoll_wait(ep, events, max, timeout) };
        }
        // SAFETY: the caller's events.
        ret(unsafe { epoll_wait_mixed(ep, events, max, ms_timeout(timeout)) })
    })
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn epoll_pwait(
    ep: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const libc::sigset_t,
) -> c_int {
    waiting(|| {
        if !tracked(ep) {
            // SAFETY: handed on.
            return unsafe { real::epoll_pwait(ep, events, max, timeout, mask) };
        }
        // SAFETY: the caller's events.
        ret(with_mask(mask, || unsafe { epoll_wait_mixed(ep, events, max, ms_timeout(timeout)) }))
    })
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn epoll_pwait2(
    ep: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    ts: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    waiting(|| {
        if !tracked(ep) {
            // SAFETY: handed on.
            return unsafe { real::epoll_pwait2(ep, events, max, ts, mask) };
        }
        // SAFETY: the caller's timespec and events.
        let timeout = unsafe { timespec_timeout(ts) };
        ret(with_mask(mask, || unsafe { epoll_wait_mixed(ep, events, max, timeout) }))
    })
}

/// A C timespec pointer as a timeout (null: without limit).
unsafe fn timespec_timeout(ts: *const libc::timespec) -> Option<Duration> {
    // SAFETY: the caller's timespec.
    (!ts.is_null()).then(|| unsafe {
        Duration::from_secs((*ts).tv_sec.max(0) as u64)
            + Duration::from_nanos((*ts).tv_nsec.max(0) as u64)
    })
}

// ---- waiting ----

/// A wait: what sends left for the end of the pass is kicked first (the thread may sleep), and
/// the thread's sends after it belong to its next pass (see `Shim::send`).
fn waiting<T>(wait: impl FnOnce() -> T) -> T {
    state::flush_unkicked();
    let r = wait();
    state::back_from_wait();
    r
}

/// Sleeps, after kicking what sends left for the end of the pass (see `waiting`): the C
/// library's sleeps, which would otherwise keep those frames until the thread's next wait.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn nanosleep(req: *const libc::timespec, rem: *mut libc::timespec) -> c_int {
    state::flush_unkicked();
    // SAFETY: handed on.
    unsafe { real::nanosleep(req, rem) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn clock_nanosleep(
    clock: libc::clockid_t,
    flags: c_int,
    req: *const libc::timespec,
    rem: *mut libc::timespec,
) -> c_int {
    state::flush_unkicked();
    // SAFETY: handed on.
    unsafe { real::clock_nanosleep(clock, flags, req, rem) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn usleep(us: libc::useconds_t) -> c_int {
    state::flush_unkicked();
    // SAFETY: handed on.
    unsafe { real::usleep(us) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn sleep(secs: c_uint) -> c_uint {
    state::flush_unkicked();
    // SAFETY: handed on.
    unsafe { real::sleep(secs) }
}

/// `poll` over any mix of eTran and kernel descriptors; `timeout` None: without limit.
unsafe fn poll_mixed(
    fds: *mut pollfd,
    n: nfds_t,
    timeout: Option<Duration>,
) -> Result<c_int, c_int> {
    // SAFETY: the caller's pollfds.
    let user = if fds.is_null() || n == 0 {
        &mut [][..]
    } else {
        unsafe { std::slice::from_raw_parts_mut(fds, n as usize) }
    };
    let mut g = lock();
    let s = shim(&mut g);
    // Which entries eTran answers (and where each kernel entry is in `kernel`).
    let mut kernel: Vec<pollfd> = Vec::new();
    let mut at: Vec<Option<usize>> = Vec::with_capacity(user.len());
    let mut any = false;
    for p in user.iter() {
        if tracked(p.fd) {
            // An inherited listener is joined (or stays unusable: POLLERR); one waited on
            // for readability accepts.
            let _ = s.adopt_listener(p.fd);
            let _ = s.adopt_conn(p.fd);
            s.adopt_from_parent_paced(p.fd);
            if p.events & libc::POLLIN != 0 {
                s.accepting(p.fd);
            }
        }
        let etran = tracked(p.fd) && s.revents(p.fd).is_some();
        any |= etran;
        let dual = etran && matches!(s.get(p.fd).map(|k| &k.kind), Some(Kind::Listening { .. }));
        if !etran || dual {
            at.push(Some(kernel.len()));
            kernel.push(pollfd {
                fd: p.fd,
                events: if dual { libc::POLLIN } else { p.events },
                revents: 0,
            });
        } else {
            at.push(None);
        }
    }
    if !any {
        drop(g);
        let ms = timeout.map_or(-1, |t| t.as_millis().min(c_int::MAX as u128) as c_int);
        // SAFETY: handed on.
        let r = unsafe { real::poll(fds, n, ms) };
        return if r < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
        } else {
            Ok(r)
        };
    }
    let r = block_on(g, timeout, &mut [], true, |s, _| {
        for k in kernel.iter_mut() {
            k.revents = 0;
        }
        if !kernel.is_empty() {
            // SAFETY: our pollfds.
            unsafe { real::poll(kernel.as_mut_ptr(), kernel.len() as nfds_t, 0) };
        }
        let mut ready = 0;
        for (p, k) in user.iter_mut().zip(&at) {
            let mut ev = k.map_or(0, |i| kernel[i].revents);
            if tracked(p.fd) {
                ev |= s.revents(p.fd).unwrap_or(0);
            }
            p.revents = ev & (p.events | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL);
            ready += i32::from(p.revents != 0);
        }
        (ready > 0).then_some(Ok(ready))
    });
    match r {
        Err(libc::EAGAIN) => {
            for p in user.iter_mut() {
                p.revents = 0;
            }
            Ok(0)
        }
        r => r,
    }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
    let timeout = (timeout >= 0).then(|| Duration::from_millis(timeout as u64));
    // SAFETY: the caller's pollfds.
    waiting(|| ret(unsafe { poll_mixed(fds, n, timeout) }))
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    n: nfds_t,
    ts: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    waiting(|| {
        // SAFETY: the caller's pollfds.
        let mine = (0..n as usize).any(|i| tracked(unsafe { (*fds.add(i)).fd }));
        if !mine {
            // SAFETY: handed on.
            return unsafe { real::ppoll(fds, n, ts, mask) };
        }
        // SAFETY: the caller's timespec and pollfds.
        let timeout = unsafe { timespec_timeout(ts) };
        ret(with_mask(mask, || unsafe { poll_mixed(fds, n, timeout) }))
    })
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn select(
    n: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    tv: *mut libc::timeval,
) -> c_int {
    // SAFETY: the caller's arguments.
    waiting(|| unsafe { select_mixed(n, r, w, e, tv) })
}

/// `select` over any mix of eTran and kernel descriptors.
unsafe fn select_mixed(
    n: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    tv: *mut libc::timeval,
) -> c_int {
    let sets = [r, w, e];
    // SAFETY: the caller's sets, fds below n.
    let isset = |set: *mut libc::fd_set, fd| !set.is_null() && unsafe { libc::FD_ISSET(fd, set) };
    let mine = (0..n.max(0)).any(|fd| tracked(fd) && sets.iter().any(|&s| isset(s, fd)));
    if !mine {
        // SAFETY: handed on.
        return unsafe { real::select(n, r, w, e, tv) };
    }
    let mut fds: Vec<pollfd> = (0..n)
        .filter_map(|fd| {
            let mut events = 0;
            if isset(r, fd) {
                events |= libc::POLLIN;
            }
            if isset(w, fd) {
                events |= libc::POLLOUT;
            }
            if isset(e, fd) {
                events |= libc::POLLPRI;
            }
            (events != 0).then_some(pollfd { fd, events, revents: 0 })
        })
        .collect();
    // SAFETY: the caller's timeval.
    let timeout = (!tv.is_null()).then(|| unsafe {
        Duration::from_secs((*tv).tv_sec.max(0) as u64)
            + Duration::from_micros((*tv).tv_usec.max(0) as u64)
    });
    // SAFETY: our pollfds.
    let res = unsafe { poll_mixed(fds.as_mut_ptr(), fds.len() as nfds_t, timeout) };
    if let Err(err) = res {
        return fail(err);
    }
    let mut count = 0;
    for &s in &sets {
        if !s.is_null() {
            // SAFETY: the caller's set.
            unsafe { libc::FD_ZERO(s) };
        }
    }
    for p in &fds {
        let hits = [
            (
                r,
                p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
                    && p.events & libc::POLLIN != 0,
            ),
            (w, p.revents & (libc::POLLOUT | libc::POLLERR) != 0 && p.events & libc::POLLOUT != 0),
            (e, p.revents & libc::POLLPRI != 0),
        ];
        for (set, hit) in hits {
            if hit && !set.is_null() {
                // SAFETY: the caller's set.
                unsafe { libc::FD_SET(p.fd, set) };
                count += 1;
            }
        }
    }
    count
}

// ---- process life: fork and exit ----

/// `vfork` is served as `fork`. A vfork child shares our memory and runs no fork handlers, so
/// its calls (it closes descriptors before `exec`) would act on the parent's state, and telling
/// it apart costs a `getpid` on every call. Its contract allows it only `exec` and `_exit`, and
/// `fork` gives such a child the same outcome (Linux's vfork(2) calls `fork` a valid
/// implementation); what it costs is the copy of the page tables. The wrapper cannot call the
/// C library's `vfork` itself: its child would return through this function's frame and
/// clobber it for the parent. `posix_spawn` and `system` clone with `CLONE_VM` inside the C
/// library, whose child makes only internal calls, none through the shim.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn vfork() -> libc::pid_t {
    // SAFETY: fork with the fork handlers, as a vfork caller expects of its child.
    unsafe { fork() }
}

/// `fork`: the connections this process holds are shown to the daemon first, so that the child
/// may adopt them (see shared.rs), and the daemon learns the child's pid after. Their streams
/// stay here until a holder adopts one or this process waits for a child. A connect still in
/// progress finishes first, for up to a second (a handshake's round trip, or the connect's own
/// failure): with the kernel both processes would see its outcome, and a handshake cannot move
/// between apps. One that takes longer goes on here, and the child waits for it as for a
/// connect begun after the fork (`Kind::ParentConnecting`).
/// All of it happens in `before_fork`, whose lock is held until the parent named the child:
/// a connect another thread starts meanwhile waits for the fork, and the child holds that
/// connection once it is up (`Sock::forked_to`), as it holds the kernel's socket.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn fork() -> libc::pid_t {
    IN_FORK.with(|f| f.set(true));
    // SAFETY: the C library's fork, which runs the fork handlers (`before_fork`: the lock is
    // held from there on).
    let pid = unsafe { real::fork() };
    IN_FORK.with(|f| f.set(false));
    if pid != 0 {
        if let Some((mut g, handles)) = FORKING.with(|f| f.borrow_mut().take()) {
            if pid > 0 {
                shim(&mut g).forked(pid, handles);
            }
        }
    }
    pid
}

/// Before a blocking wait for a child: what any sleep in the kernel takes first
/// (`flush_unkicked`: a connect children wait for finishes), then the connections shared with
/// children are parked, so that a child may take them while this process sleeps in the kernel
/// (see shared.rs).
fn before_child_wait(options: c_int) {
    if options & libc::WNOHANG == 0 {
        state::flush_unkicked();
        let mut g = lock();
        shim(&mut g).park_for_wait();
    }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn waitpid(
    pid: libc::pid_t,
    status: *mut c_int,
    options: c_int,
) -> libc::pid_t {
    before_child_wait(options);
    // SAFETY: handed on.
    unsafe { real::waitpid(pid, status, options) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn wait4(
    pid: libc::pid_t,
    status: *mut c_int,
    options: c_int,
    usage: *mut libc::rusage,
) -> libc::pid_t {
    before_child_wait(options);
    // SAFETY: handed on.
    unsafe { real::wait4(pid, status, options, usage) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn wait(status: *mut c_int) -> libc::pid_t {
    // SAFETY: wait(2) is waitpid(-1, status, 0).
    unsafe { waitpid(-1, status, 0) }
}

#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn waitid(
    idtype: libc::idtype_t,
    id: libc::id_t,
    info: *mut libc::siginfo_t,
    options: c_int,
) -> c_int {
    before_child_wait(options);
    // SAFETY: handed on.
    unsafe { real::waitid(idtype, id, info, options) }
}

/// `_exit` (Python's `os._exit` in a forked child): the process's connections close, or go
/// back to the other holders, as at `exit`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn _exit(status: c_int) -> ! {
    at_exit();
    // SAFETY: the C library's.
    unsafe { real::_exit(status) }
}

thread_local! {
    /// The lock held across a fork, so that the child's copy of the state is whole, with
    /// the connections shown to the daemon for the child (`Shim::share_before_fork`).
    static FORKING: RefCell<Option<(Guard, Vec<u64>)>> = const { RefCell::new(None) };
    /// This thread is in our `fork`, which names the child to the daemon (the lock still
    /// held) once the C library's returns.
    static IN_FORK: Cell<bool> = const { Cell::new(false) };
}

/// Finishes the connects in progress and shows the connections to the daemon (see `fork`),
/// then holds the lock across the fork.
extern "C" fn before_fork() {
    let (mut g, done) = state::finish_connects(lock(), Shim::connecting);
    if !done {
        // Still in progress after a second: the children wait for them, as for a connect
        // begun after the fork (shown now, before any child may ask).
        shim(&mut g).show_connects_before_fork();
    }
    let handles = shim(&mut g).share_before_fork();
    FORKING.with(|f| *f.borrow_mut() = Some((g, handles)));
}

extern "C" fn after_fork_parent() {
    // Our `fork` names the child first; a fork of the C library's own lets go at once.
    if !IN_FORK.with(|f| f.get()) {
        FORKING.with(|f| drop(f.borrow_mut().take()));
    }
}

/// The child shares the parent's port and daemon link: it must not drive them. Its inherited
/// eTran sockets refuse calls (closing them is fine); sockets it opens get its own
/// registration.
extern "C" fn after_fork_child() {
    FORKING.with(|f| {
        if let Some((mut g, _)) = f.borrow_mut().take() {
            shim(&mut g).forget_after_fork();
        }
    });
    state::forget_wake_fd();
}

/// When the process exits, its connections close as the kernel would close them: each gets
/// its FIN, and the process waits (up to a second) for the closes to complete, since the
/// daemon resets what an app leaves behind.
extern "C" fn at_exit() {
    let mut g = lock();
    if shim(&mut g).connects_awaited() {
        g = state::finish_awaited_connects(g);
    }
    let fds: Vec<RawFd> = shim(&mut g).fds();
    for fd in fds {
        let s = shim(&mut g);
        s.abandon_connect(fd);
        if let Some(sock) = s.remove(fd) {
            s.release(sock);
        }
    }
    let limit = Instant::now() + Duration::from_secs(1);
    loop {
        let s = shim(&mut g);
        s.pass();
        if !s.closing() || Instant::now() >= limit {
            break;
        }
        let (g2, _) =
            state::sleep(g, &mut [], Some(limit.min(Instant::now() + Duration::from_millis(10))));
        g = g2;
    }
}

#[cfg_attr(test, allow(dead_code))]
extern "C" fn init() {
    state::read_settings();
    // SAFETY: registering plain handlers.
    unsafe {
        libc::pthread_atfork(Some(before_fork), Some(after_fork_parent), Some(after_fork_child));
        libc::atexit(at_exit);
    }
}

#[cfg(not(test))]
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

#[cfg(test)]
mod tests;
