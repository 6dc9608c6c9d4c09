//! The app's end of the daemon protocol ([`crate::proto`]): connect, register, receive the
//! port's descriptors, ask for listens and connects, learn what the daemon tells on its own.
//!
//! ```no_run
//! let mut link = etran::app::DaemonLink::connect("/run/etran/etran.sock")?;
//! let reg = link.register(etran::proto::Transport::Tcp, 1)?;
//! println!("slot {} on {}", reg.slot, reg.port);
//! # std::io::Result::Ok(())
//! ```
//! One [`DaemonLink`] owns the socket: an [`crate::app::App`] holds its link, and every request
//! (its own `Release`/`Abort` included) goes through it. Dropping the link (or the process
//! exiting) closes the socket, and the daemon removes the port; [`DaemonLink::close`] does the
//! same explicitly.
//!
//! Errors are `std::io::Error`s with the errno a POSIX call would give: the daemon's refusals
//! carry theirs ([`crate::proto::Refusal`]; [`crate::proto::errno_of`] reads it back).
//!
//! Messages the daemon sends on its own (`Accepted`, `Reset`) and answers to connects in
//! progress (`Connected`, `ConnectFailed`) are queued as they are read; [`DaemonLink::poll`]
//! reads without blocking, and the link is a mio source (readable when the daemon sent
//! something).
use std::{
    collections::VecDeque,
    io::{self, Write},
    net::{Ipv4Addr, SocketAddrV4},
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
        unix::net::UnixStream,
    },
    path::Path,
    time::Duration,
};

use crate::{
    proto::{self, ConnInit, FdKind, Geometry, IdBlock, Refusal, Reply, Request, Transport},
    xsk::Bind,
};

/// How long a request that waits for its reply (`register`, `listen`) waits.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection to the daemon.
pub struct DaemonLink {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Connections accepted, handed out by [`DaemonLink::take_accepted`].
    accepted: VecDeque<(u64, ConnInit)>,
    /// Connects that completed, claimed by [`DaemonLink::take_connected`].
    connected: VecDeque<(u64, ConnInit)>,
    /// Connects that failed, by remote address.
    connect_failed: VecDeque<(SocketAddrV4, Refusal)>,
    /// Handles of connections the peer reset, handed out by [`DaemonLink::take_reset`].
    resets: VecDeque<u64>,
    /// Connections to hand over (`Surrender`): (handle, rx_pos), by [`DaemonLink::take_surrender`].
    surrenders: VecDeque<(u64, u32)>,
}

/// What a successful registration hands the app.
#[derive(Debug)]
pub struct Registration {
    pub slot: u32,
    pub port: String,
    pub port_ifindex: u32,
    pub kernel_port: String,
    pub kernel_ifindex: u32,
    pub geometry: Geometry,
    /// The interface the daemon serves: what an app's connections go through.
    pub iface: String,
    /// AF_XDP sockets, one per queue, in queue order, each with how to bind it on `port`
    /// ([`crate::xsk::Socket::adopt`]: the queue, and whether the daemon bound it already).
    pub xsks: Vec<(Bind, OwnedFd)>,
    /// The UMEM memfd (map it `MAP_SHARED`, `geometry.umem_len` bytes).
    pub umem: OwnedFd,
    /// The port's receive budget map (see [`crate::proto::FdKind::RxBudget`]).
    pub rx_budget: OwnedFd,
    /// The link rate the datapath paces the app's Homa DATA at (see `Reply::Registered`; 0:
    /// it does not).
    pub homa_link_mbps: u32,
    /// TCP's segments may wait in the kernel's packet queue (see `Reply::Registered`).
    pub paced: bool,
}

/// An error the daemon's side of the link caused, with its kind.
fn broken(kind: io::ErrorKind, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(kind, what.to_string())
}

impl DaemonLink {
    pub fn connect(path: impl AsRef<Path>) -> io::Result<DaemonLink> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(|e| {
            let what = format!(
                "connecting to the etran daemon at {} (is it running?): {e}",
                path.display()
            );
            broken(e.kind(), what)
        })?;
        DaemonLink::over(stream)
    }

    /// A link over a connected stream, waiting at most `REPLY_TIMEOUT` for an answer.
    fn over(stream: UnixStream) -> io::Result<DaemonLink> {
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        Ok(DaemonLink {
            stream,
            buf: Vec::new(),
            accepted: VecDeque::new(),
            connected: VecDeque::new(),
            connect_failed: VecDeque::new(),
            resets: VecDeque::new(),
            surrenders: VecDeque::new(),
        })
    }

    /// The raw stream (tests use it to send arbitrary bytes).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    pub fn send(&mut self, req: &Request) -> io::Result<()> {
        (&self.stream).write_all(&proto::encode(req))
    }

    /// Waits (up to [`REPLY_TIMEOUT`]) for the next message, collecting any descriptors that
    /// come with it.
    pub fn recv(&mut self) -> io::Result<(Reply, Vec<OwnedFd>)> {
        let mut fds = Vec::new();
        loop {
            if let Some((reply, used)) = self.decode()? {
                self.buf.drain(..used);
                return Ok((reply, fds));
            }
            let mut chunk = [0u8; 4096];
            let n = proto::recv_fds(self.stream.as_fd(), &mut chunk, &mut fds, false)?;
            if n == 0 {
                return Err(broken(io::ErrorKind::ConnectionReset, "the daemon closed the link"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn decode(&self) -> io::Result<Option<(Reply, usize)>> {
        proto::decode::<Reply>(&self.buf).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("the daemon's message: {e}"))
        })
    }

    /// Registers this app: the daemon builds its port and passes its socket(s) and UMEM.
    pub fn register(&mut self, transport: Transport, queues: u32) -> io::Result<Registration> {
        self.send(&Request::Register { version: proto::PROTOCOL_VERSION, transport, queues })?;
        let (reply, fds) = self.recv()?;
        match reply {
            Reply::Registered {
                slot,
                port,
                port_ifindex,
                kernel_port,
                kernel_ifindex,
                geometry,
                iface,
                fds: kinds,
                bound,
                homa_link_mbps,
                paced,
                ..
            } => {
                if kinds.len() != fds.len() {
                    let what = format!(
                        "the daemon announced {} descriptors but sent {}",
                        kinds.len(),
                        fds.len()
                    );
                    return Err(broken(io::ErrorKind::InvalidData, what));
                }
                let (mut xsks, mut umem, mut rx_budget) = (Vec::new(), None, None);
                for (kind, fd) in kinds.into_iter().zip(fds) {
                    match kind {
                        FdKind::Xsk { queue } if bound => xsks.push((Bind::Bound(queue), fd)),
                        FdKind::Xsk { queue } => xsks.push((Bind::Queue(queue), fd)),
                        FdKind::Umem => umem = Some(fd),
                        FdKind::RxBudget => rx_budget = Some(fd),
                    }
                }
                let umem = umem
                    .ok_or_else(|| broken(io::ErrorKind::InvalidData, "the daemon sent no UMEM"))?;
                let rx_budget = rx_budget.ok_or_else(|| {
                    broken(io::ErrorKind::InvalidData, "the daemon sent no receive budget")
                })?;
                Ok(Registration {
                    slot,
                    port,
                    port_ifindex,
                    kernel_port,
                    kernel_ifindex,
                    geometry,
                    iface,
                    xsks,
                    umem,
                    rx_budget,
                    homa_link_mbps,
                    paced,
                })
            }
            Reply::Error { refusal } => Err(refusal.to_io_error()),
            other => Err(unexpected("Register", &other)),
        }
    }

    /// Listens on TCP `port`: connections to it arrive through [`DaemonLink::take_accepted`] (once
    /// [`DaemonLink::poll`] read them). `EADDRINUSE` when the port is taken;
    /// [`DaemonLink::unlisten`] ends it. With `socket`, the listener is that kernel socket's, which
    /// other sessions showing it may share; with `idle`, connections come only after an `Accepting`
    /// ([`crate::app::App::accepting`]).
    pub fn listen(
        &mut self,
        port: u16,
        socket: Option<BorrowedFd<'_>>,
        idle: bool,
    ) -> io::Result<()> {
        let req = Request::Listen { port, socket: socket.is_some(), idle };
        match socket {
            Some(fd) => proto::send_fds(self.stream.as_fd(), &proto::encode(&req), &[fd])?,
            None => self.send(&req)?,
        }
        loop {
            let (reply, _) = self.recv()?;
            match self.stash(reply) {
                None => {}
                Some(Reply::Listening { port: p }) if p == port => return Ok(()),
                Some(Reply::ListenFailed { refusal, .. } | Reply::Error { refusal }) => {
                    return Err(refusal.to_io_error())
                }
                Some(other) => return Err(unexpected("Listen", &other)),
            }
        }
    }

    /// Stops listening on TCP `port`: later SYNs to it are refused. Returns the connections to
    /// it the daemon accepted and no one took with [`DaemonLink::take_accepted`] (every one there
    /// will be: the daemon answers after its last `Accepted` for the port).
    pub fn unlisten(&mut self, port: u16) -> io::Result<Vec<(u64, ConnInit)>> {
        self.send(&Request::Unlisten { port })?;
        loop {
            let (reply, _) = self.recv()?;
            match self.stash(reply) {
                None => {}
                Some(Reply::Unlistened { port: p }) if p == port => break,
                Some(Reply::Error { refusal }) => return Err(refusal.to_io_error()),
                Some(other) => return Err(unexpected("Unlisten", &other)),
            }
        }
        let mut orphans = Vec::new();
        self.accepted.retain(|a| {
            let orphan = a.1.local.port() == port;
            if orphan {
                orphans.push(*a);
            }
            !orphan
        });
        Ok(orphans)
    }

    /// Asks for a connection to `remote` (from `local_port`, or an ephemeral one), without
    /// waiting: its outcome comes through [`DaemonLink::take_connected`].
    pub fn request_connect(
        &mut self,
        remote: SocketAddrV4,
        local_port: Option<u16>,
    ) -> io::Result<()> {
        self.send(&Request::Connect {
            remote_ip: *remote.ip(),
            remote_port: remote.port(),
            local_port,
        })
    }

    /// The outcome of a connect to `remote` (from `local_port` if given) read so far: the
    /// connection, the refusal (`ECONNREFUSED`, `ETIMEDOUT`, `EADDRINUSE`, ...), or `None` while
    /// the handshake goes on. Connects to one remote are interchangeable (any completed one
    /// answers any of them).
    pub fn take_connected(
        &mut self,
        remote: SocketAddrV4,
        local_port: Option<u16>,
    ) -> io::Result<Option<(u64, ConnInit)>> {
        let ours = |init: &ConnInit| {
            init.remote == remote && local_port.is_none_or(|p| p == init.local.port())
        };
        if let Some(i) = self.connected.iter().position(|(_, init)| ours(init)) {
            return Ok(self.connected.remove(i));
        }
        if let Some(i) = self.connect_failed.iter().position(|(r, _)| *r == remote) {
            let (_, refusal) = self.connect_failed.remove(i).expect("found");
            return Err(refusal.to_io_error());
        }
        Ok(None)
    }

    /// Connects to `remote`, blocking (up to [`REPLY_TIMEOUT`]: then `ETIMEDOUT`) until the
    /// handshake completes or fails. Nothing else is done meanwhile: an app with connections
    /// to serve uses [`crate::app::App::connect_blocking`].
    pub fn connect_tcp(
        &mut self,
        remote: SocketAddrV4,
        local_port: Option<u16>,
    ) -> io::Result<(u64, ConnInit)> {
        self.request_connect(remote, local_port)?;
        loop {
            if let Some(done) = self.take_connected(remote, local_port)? {
                return Ok(done);
            }
            let (reply, _) = self.recv().map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock => io::Error::from_raw_os_error(libc::ETIMEDOUT),
                _ => e,
            })?;
            match self.stash(reply) {
                None => {}
                Some(Reply::Error { refusal }) => return Err(refusal.to_io_error()),
                Some(other) => return Err(unexpected("Connect", &other)),
            }
        }
    }

    /// Queues a message the daemon sends on its own or for a connect in progress; any other is
    /// handed back.
    fn stash(&mut self, reply: Reply) -> Option<Reply> {
        match reply {
            Reply::Accepted { handle, init } => self.accepted.push_back((handle, init)),
            Reply::Connected { handle, init } => self.connected.push_back((handle, init)),
            Reply::ConnectFailed { remote, refusal } => {
                self.connect_failed.push_back((remote, refusal))
            }
            // A connection reset before it was handed out is never handed out.
            Reply::Reset { handle } if self.accepted.iter().any(|a| a.0 == handle) => {
                self.accepted.retain(|a| a.0 != handle)
            }
            Reply::Reset { handle } if self.connected.iter().any(|a| a.0 == handle) => {
                self.connected.retain(|a| a.0 != handle)
            }
            Reply::Reset { handle } => self.resets.push_back(handle),
            Reply::Surrender { handle, rx_pos } => self.surrenders.push_back((handle, rx_pos)),
            other => return Some(other),
        }
        None
    }

    /// Reads and queues whatever the daemon sent, without blocking. An `Error` (the daemon
    /// closes the link after it) or the daemon going away is an error.
    pub fn poll(&mut self) -> io::Result<()> {
        loop {
            while let Some((reply, used)) = self.decode()? {
                self.buf.drain(..used);
                match self.stash(reply) {
                    None => {}
                    Some(Reply::Error { refusal }) => return Err(refusal.to_io_error()),
                    Some(other) => return Err(unexpected("nothing", &other)),
                }
            }
            let mut chunk = [0u8; 4096];
            let mut fds = Vec::new();
            match proto::recv_fds(self.stream.as_fd(), &mut chunk, &mut fds, true) {
                Ok(0) => {
                    return Err(broken(
                        io::ErrorKind::ConnectionReset,
                        "the daemon closed the link",
                    ))
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether connection `handle` was accepted (read) and not yet taken.
    pub fn is_accepted(&self, handle: u64) -> bool {
        self.accepted.iter().any(|a| a.0 == handle)
    }

    /// Whether a connection accepted on TCP `port` was read and not yet taken.
    pub fn has_accepted(&self, port: u16) -> bool {
        self.accepted.iter().any(|(_, i)| i.local.port() == port)
    }

    /// The next connection accepted on TCP `port` among those read so far (no system call).
    pub fn take_accepted(&mut self, port: u16) -> Option<(u64, ConnInit)> {
        let at = self.accepted.iter().position(|(_, i)| i.local.port() == port)?;
        self.accepted.remove(at)
    }

    /// Binds Homa `port` (0: any free one) to this app (registered for Homa): returns the port
    /// and the block of client RPC ids to number its requests from. `EADDRINUSE` when taken.
    pub fn homa_bind(&mut self, port: u16) -> io::Result<(u16, IdBlock)> {
        self.send(&Request::HomaBind { port })?;
        loop {
            let (reply, _) = self.recv()?;
            match self.stash(reply) {
                None => {}
                Some(Reply::HomaBound { port, ids }) => return Ok((port, ids)),
                Some(Reply::HomaBindFailed { refusal, .. } | Reply::Error { refusal }) => {
                    return Err(refusal.to_io_error())
                }
                Some(other) => return Err(unexpected("HomaBind", &other)),
            }
        }
    }

    /// Another block of client RPC ids (this app's is used up).
    pub fn homa_ids(&mut self) -> io::Result<IdBlock> {
        self.send(&Request::HomaIds)?;
        loop {
            let (reply, _) = self.recv()?;
            match self.stash(reply) {
                None => {}
                Some(Reply::HomaIds { ids }) => return Ok(ids),
                Some(Reply::Error { refusal }) => return Err(refusal.to_io_error()),
                Some(other) => return Err(unexpected("HomaIds", &other)),
            }
        }
    }

    /// Has the daemon tell egress the Ethernet address of Homa peer `ip` (before the first RPC
    /// to it). `EHOSTUNREACH` when the neighbour table has none, `EOPNOTSUPP` for this host
    /// itself.
    pub fn homa_peer(&mut self, ip: Ipv4Addr) -> io::Result<()> {
        self.send(&Request::HomaPeer { ip })?;
        loop {
            let (reply, _) = self.recv()?;
            match self.stash(reply) {
                None => {}
                Some(Reply::HomaPeer { ip: i, refusal }) if i == ip => {
                    return refusal.map_or(Ok(()), |r| Err(r.to_io_error()))
                }
                Some(Reply::Error { refusal }) => return Err(refusal.to_io_error()),
                Some(other) => return Err(unexpected("HomaPeer", &other)),
            }
        }
    }

    /// The handle of the next connection the peer reset, from what was read so far (see
    /// [`DaemonLink::poll`]).
    pub fn take_reset(&mut self) -> Option<u64> {
        self.resets.pop_front()
    }

    /// The next connection the daemon asked this app to hand over (`Surrender`): its handle
    /// and the stream position up to which frames may still be on their way.
    pub fn take_surrender(&mut self) -> Option<(u64, u32)> {
        self.surrenders.pop_front()
    }

    /// Before a fork: connections `conns` (handle, kernel socket) stand for those sockets;
    /// process `pid` (`pidfd`, this one) holds them. Waits for the daemon's answer, so that a
    /// child's `Adopt` finds them. `passing`: they are about to go over a Unix socket.
    pub fn share(
        &mut self,
        pid: u32,
        pidfd: BorrowedFd<'_>,
        conns: &[(u64, BorrowedFd<'_>)],
        passing: bool,
    ) -> io::Result<()> {
        for chunk in conns.chunks(proto::MAX_FDS - 1) {
            let handles = chunk.iter().map(|c| c.0).collect();
            let mut fds = vec![pidfd];
            fds.extend(chunk.iter().map(|c| c.1));
            let msg = proto::encode(&Request::Share { pid, handles, passing });
            proto::send_fds(self.stream.as_fd(), &msg, &fds)?;
            self.wait_for("Share", |r| matches!(r, Reply::Shared).then_some(Ok(())))?;
        }
        Ok(())
    }

    /// A connect of this app's on `socket`, which processes forked before it began hold too:
    /// in progress (`errno` 0), or failed with `errno`. Waits for the daemon's answer, so that
    /// those processes' `AdoptPassed` is told to wait for it.
    pub fn connecting(&mut self, socket: BorrowedFd<'_>, errno: i32) -> io::Result<()> {
        let msg = proto::encode(&Request::Connecting { errno });
        proto::send_fds(self.stream.as_fd(), &msg, &[socket])?;
        self.wait_for("Connecting", |r| matches!(r, Reply::Shared).then_some(Ok(())))
    }

    /// After a fork: process `pid` (`pidfd`) holds the connections `handles` too.
    pub fn forked(&mut self, pid: u32, pidfd: BorrowedFd<'_>, handles: Vec<u64>) -> io::Result<()> {
        let msg = proto::encode(&Request::Forked { pid, handles });
        proto::send_fds(self.stream.as_fd(), &msg, &[pidfd])
    }

    /// Adopts connection `handle`, showing its kernel socket: where the kernel's state stands
    /// and the memfd holding the stream handed over.
    pub fn adopt(
        &mut self,
        handle: u64,
        socket: BorrowedFd<'_>,
    ) -> io::Result<(proto::Resume, OwnedFd)> {
        let msg = proto::encode(&Request::Adopt { handle });
        proto::send_fds(self.stream.as_fd(), &msg, &[socket])?;
        self.adopted(Some(handle)).map(|(_, at, fd)| (at, fd))
    }

    /// Adopts the connection that `socket`, received over a Unix socket by process `pid`
    /// (`pidfd`, this one), stands for: its handle, where the kernel's state stands and the
    /// memfd holding the stream.
    pub fn adopt_passed(
        &mut self,
        pid: u32,
        pidfd: BorrowedFd<'_>,
        socket: BorrowedFd<'_>,
    ) -> io::Result<(u64, proto::Resume, OwnedFd)> {
        let msg = proto::encode(&Request::AdoptPassed { pid });
        proto::send_fds(self.stream.as_fd(), &msg, &[pidfd, socket])?;
        self.adopted(None)
    }

    /// The answer to an adoption of `handle` (None: by the socket, whose answer names it or
    /// says 0).
    fn adopted(&mut self, handle: Option<u64>) -> io::Result<(u64, proto::Resume, OwnedFd)> {
        let ours = |h: u64| handle.is_none_or(|want| want == h);
        loop {
            let (reply, mut fds) = self.recv()?;
            match self.stash(reply) {
                None => {}
                Some(Reply::Adopted { handle: h, at }) if ours(h) => {
                    let fd = fds.pop().ok_or_else(|| {
                        broken(io::ErrorKind::InvalidData, "the daemon sent no stream")
                    })?;
                    return Ok((h, at, fd));
                }
                Some(Reply::AdoptFailed { handle: h, refusal }) if ours(h) => {
                    return Err(refusal.to_io_error())
                }
                Some(Reply::Error { refusal }) => return Err(refusal.to_io_error()),
                Some(other) => return Err(unexpected("Adopt", &other)),
            }
        }
    }

    /// This process (`pid`) closes its descriptor of connection `handle`, which it owns (or
    /// with `keep` parks the stream, holding the descriptor still): `Some(rx_pos)` when
    /// another holder lives or `keep` (hand the stream over: see
    /// [`crate::app::App::park`]), None to close it as usual.
    pub fn park(&mut self, handle: u64, pid: u32, keep: bool) -> io::Result<Option<u32>> {
        self.send(&Request::Park { handle, pid, keep })?;
        // Asked for already (a holder adopting it): the daemon answers nothing more.
        if let Some(at) = self.surrenders.iter().position(|s| s.0 == handle) {
            return Ok(self.surrenders.remove(at).map(|s| s.1));
        }
        loop {
            let (reply, _) = self.recv()?;
            match reply {
                Reply::Surrender { handle: h, rx_pos } if h == handle => return Ok(Some(rx_pos)),
                Reply::Unshared { handle: h } if h == handle => return Ok(None),
                reply => match self.stash(reply) {
                    None => {}
                    Some(Reply::Error { refusal }) => return Err(refusal.to_io_error()),
                    Some(other) => return Err(unexpected("Park", &other)),
                },
            }
        }
    }

    /// Process `pid` no longer holds connection `handle`, which it does not own (not answered).
    pub fn drop_holder(&mut self, handle: u64, pid: u32) -> io::Result<()> {
        self.send(&Request::Park { handle, pid, keep: false })
    }

    /// Hands the stream of connection `handle` over (the memfd `stream`).
    pub fn surrendered(&mut self, handle: u64, stream: BorrowedFd<'_>) -> io::Result<()> {
        let msg = proto::encode(&Request::Surrendered { handle });
        proto::send_fds(self.stream.as_fd(), &msg, &[stream])
    }

    /// Waits for the answer `want` picks (messages sent on their own are queued meanwhile).
    fn wait_for<T>(
        &mut self,
        to: &str,
        want: impl Fn(&Reply) -> Option<io::Result<T>>,
    ) -> io::Result<T> {
        loop {
            let (reply, _) = self.recv()?;
            match self.stash(reply) {
                None => {}
                Some(r) => match want(&r) {
                    Some(done) => return done,
                    None => match r {
                        Reply::Error { refusal } => return Err(refusal.to_io_error()),
                        other => return Err(unexpected(to, &other)),
                    },
                },
            }
        }
    }

    /// Ends the link; the daemon removes the port.
    pub fn close(mut self) -> io::Result<()> {
        self.send(&Request::Close)
    }
}

fn unexpected(to: &str, reply: &Reply) -> io::Error {
    broken(
        io::ErrorKind::InvalidData,
        format!("unexpected answer to {to} from the daemon: {reply:?}"),
    )
}

/// The link's socket: readable when the daemon sent something ([`DaemonLink::poll`]).
impl AsFd for DaemonLink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

// The link is pollable: readable when the daemon sent something (edge-triggered: read it all
// with [`DaemonLink::poll`] before waiting again).
crate::sys::source_via_fd!(DaemonLink, l => l.stream.as_raw_fd());

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tcp::handshake::{Config, Failure, Handshake, Outcome};

    fn init(local_port: u16, remote_port: u16) -> ConnInit {
        ConnInit {
            local: SocketAddrV4::new([10, 0, 0, 1].into(), local_port),
            remote: SocketAddrV4::new([10, 0, 0, 2].into(), remote_port),
            rx_pos: 0,
            tx_pos: 0,
            send_wnd: 1000,
            mss: 1000,
            rcv_buf: 1000,
            snd_buf: 1000,
            sack: false,
            snd_seq: 0,
            rcv_wscale: 0,
        }
    }

    /// Connections come out of the listener of their port; an unlisten hands back the ones of
    /// its port no one took, those the daemon accepted before its answer included.
    #[test]
    fn accepted_connections_go_to_their_listener_and_an_unlisten_returns_the_orphans() {
        let dir = std::env::temp_dir().join(format!("etran-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.sock");
        let daemon = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut link = DaemonLink::connect(&path).unwrap();
        let (mut d, _) = daemon.accept().unwrap();
        let tell = |d: &mut UnixStream, r: Reply| d.write_all(&proto::encode(&r)).unwrap();
        tell(&mut d, Reply::Accepted { handle: 1, init: init(80, 1) });
        tell(&mut d, Reply::Accepted { handle: 2, init: init(81, 2) });
        std::thread::sleep(Duration::from_millis(20));
        link.poll().unwrap();
        assert_eq!(link.take_accepted(81).map(|a| a.0), Some(2));
        assert_eq!(link.take_accepted(81), None);
        // The daemon's answer comes after one more connection to 80, and one to 81.
        tell(&mut d, Reply::Accepted { handle: 3, init: init(80, 3) });
        tell(&mut d, Reply::Accepted { handle: 4, init: init(81, 4) });
        tell(&mut d, Reply::Unlistened { port: 80 });
        let orphans: Vec<u64> = link.unlisten(80).unwrap().iter().map(|a| a.0).collect();
        assert_eq!(orphans, [1, 3]);
        assert_eq!(link.take_accepted(80), None);
        assert_eq!(link.take_accepted(81).map(|a| a.0), Some(4));
        let mut sent = vec![0u8; 64];
        let n = std::io::Read::read(&mut d, &mut sent).unwrap();
        let (req, _) = proto::decode::<Request>(&sent[..n]).unwrap().unwrap();
        assert_eq!(req, Request::Unlisten { port: 80 });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A `Park` is answered by `Surrender` or `Unshared`; a `Surrender` the daemon sent on its
    /// own before (another holder adopting) answers it too, and one for another connection
    /// waits for the app's next pass.
    #[test]
    fn a_park_is_answered_by_the_surrender_whoever_asked_for_it() {
        let (ours, mut d) = UnixStream::pair().unwrap();
        let mut link = DaemonLink::over(ours).unwrap();
        let tell = |d: &mut UnixStream, r: Reply| d.write_all(&proto::encode(&r)).unwrap();
        tell(&mut d, Reply::Surrender { handle: 9, rx_pos: 5 });
        tell(&mut d, Reply::Unshared { handle: 7 });
        assert_eq!(link.park(7, 100, false).unwrap(), None);
        assert_eq!(link.take_surrender(), Some((9, 5)), "kept for the next pass");
        tell(&mut d, Reply::Surrender { handle: 8, rx_pos: 6 });
        link.poll().unwrap();
        assert_eq!(link.park(8, 100, true).unwrap(), Some(6), "asked for already");
        let mut sent = vec![0u8; 256];
        let n = std::io::Read::read(&mut d, &mut sent).unwrap();
        let (first, used) = proto::decode::<Request>(&sent[..n]).unwrap().unwrap();
        assert_eq!(first, Request::Park { handle: 7, pid: 100, keep: false });
        let (second, _) = proto::decode::<Request>(&sent[used..n]).unwrap().unwrap();
        assert_eq!(second, Request::Park { handle: 8, pid: 100, keep: true });
    }

    #[test]
    fn the_daemons_handshake_gives_up_well_before_the_app_stops_waiting() {
        let (local, remote) = ("10.0.0.1:40000".parse().unwrap(), "10.0.0.2:80".parse().unwrap());
        let mac = [2, 0, 0, 0, 0, 1];
        let (mut h, _) = Handshake::active(Config::default(), local, remote, mac, mac, 1, 0);
        let mut waited = Duration::ZERO;
        let mut sent = 1;
        loop {
            waited += h.rto();
            let step = h.on_timeout(0);
            if step.outcome == Outcome::Failed(Failure::TimedOut) {
                break;
            }
            sent += usize::from(step.send.is_some());
        }
        assert_eq!(sent, 5, "the SYN and 4 retransmissions");
        assert!(waited <= REPLY_TIMEOUT / 2, "gave up after {waited:?}");
    }
}
