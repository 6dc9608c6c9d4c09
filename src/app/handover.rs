//! Connections moving between apps (ARCHITECTURE.md, "The POSIX shim": fork): a process
//! holding a connection's kernel socket adopts it ([`App::adopt`]) from the app that owns it,
//! which hands its stream over when the daemon asks (`Surrender`, read by
//! [`App::poll_daemon`]), or which parks it at the daemon when it closes its descriptor while
//! another process holds one ([`App::park`]). The stream travels in a memfd
//! ([`Stream::hand_over`], [`Stream::resume`]).
use std::{
    io,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    time::{Duration, Instant},
};

use super::{App, ConnId, Stream};
use crate::proto;
use crate::transport::tcp::{
    seq::after,
    stream::{memfd, read_memfd},
};

/// How long a surrendering app waits for the frames ingress handed it before the move began
/// (they cross the port in microseconds; one missing fails the stream in its new owner).
const DRAIN: Duration = Duration::from_millis(20);

impl App {
    /// Adopts connection `handle`, whose kernel socket (`socket`) this process holds: its
    /// owner hands the stream over (or the daemon had it parked), and it is this app's.
    pub fn adopt(&mut self, handle: u64, socket: BorrowedFd<'_>) -> io::Result<ConnId> {
        let (at, memfd) = self.driver.link.adopt(handle, socket)?;
        self.resume(handle, &at, memfd)
    }

    /// Adopts the connection whose kernel socket (`socket`) process `pid` (`pidfd`, this one)
    /// received over a Unix socket (`ENOTCONN`: none of the daemon's).
    pub fn adopt_passed(
        &mut self,
        pid: u32,
        pidfd: BorrowedFd<'_>,
        socket: BorrowedFd<'_>,
    ) -> io::Result<ConnId> {
        let (handle, at, memfd) = self.driver.link.adopt_passed(pid, pidfd, socket)?;
        self.resume(handle, &at, memfd)
    }

    /// Resumes the stream of connection `handle` handed over in `memfd`, the kernel's state at
    /// `at`: it is this app's.
    fn resume(&mut self, handle: u64, at: &proto::Resume, memfd: OwnedFd) -> io::Result<ConnId> {
        let bytes = read_memfd(memfd)?;
        let stream = Stream::resume(&bytes, at, self.rto)?;
        self.released.remove(&handle);
        self.conns.insert(handle, stream);
        for (meta, payload) in self.early.take(handle) {
            super::deliver(&mut self.conns, &mut self.stats, &meta, &payload);
        }
        Ok(ConnId(handle))
    }

    /// This process (`pid`) closes its last descriptor of connection `id`, which others may
    /// hold too (with `keep`: it holds it still, and parks it so that any holder may adopt
    /// it without this app's help): true when it was handed over (parked at the daemon for
    /// the next holder to adopt, and forgotten here), false when nobody else holds it (close
    /// it as usual).
    pub fn park(&mut self, id: ConnId, pid: u32, keep: bool) -> io::Result<bool> {
        match self.driver.link.park(id.0, pid, keep)? {
            Some(rx_pos) => {
                self.surrender(id.0, rx_pos)?;
                self.moved.retain(|&h| h != id.0);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Connections handed over since the last call (the daemon asked for them).
    pub fn take_moved(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.moved)
    }

    /// Hands the stream of connection `h` over (the daemon asked: the fast path no longer
    /// serves it here), once the frames received up to `rx_pos` are in.
    pub(super) fn surrender(&mut self, h: u64, rx_pos: u32) -> io::Result<()> {
        let until = Instant::now() + DRAIN;
        while self.conns.get(&h).is_some_and(|s| after(rx_pos, s.rx_end()))
            && Instant::now() < until
        {
            if self.receive()? == 0 {
                std::thread::yield_now();
            }
        }
        let Some(stream) = self.conns.remove(&h) else { return Ok(()) };
        self.early.take(h);
        self.holding.retain(|&x| x != h);
        let memfd = memfd(&stream.hand_over())?;
        self.moved.push(h);
        self.driver.link.surrendered(h, memfd.as_fd())
    }
}
