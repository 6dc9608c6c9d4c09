//! The app side of the daemon protocol: connect, register, receive the port's descriptors.
//!
//! ```no_run
//! let mut session = etran::daemon::client::Session::connect("/run/etran/etran.sock")?;
//! let reg = session.register(etran::daemon::proto::Transport::Tcp, 1)?;
//! println!("slot {} on {}", reg.slot, reg.port);
//! # anyhow::Ok(())
//! ```
//! Dropping the [`Session`] (or the process exiting) closes the socket, and the daemon removes
//! the port; [`Session::close`] does the same explicitly.
//!
//! Messages the daemon sends on its own (`Accepted`, `Reset`) are queued as they are read;
//! [`Session::poll`] reads without blocking, and the session's descriptor (`AsFd`) can join an
//! event loop.
use std::{
    collections::VecDeque,
    io,
    io::Write,
    os::{
        fd::{AsFd, BorrowedFd, OwnedFd},
        unix::net::UnixStream,
    },
    path::Path,
    sync::{Arc, Weak},
    time::Duration,
};

use anyhow::{bail, Context};

use super::proto::{self, ConnInit, FdKind, Geometry, Reply, Request, Transport};

/// How long a blocking request (`register`, `listen`, `connect_tcp`) waits for its reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the daemon.
pub struct Session {
    /// The only strong reference: dropping the session closes the socket.
    stream: Arc<UnixStream>,
    buf: Vec<u8>,
    /// Connections accepted, handed out by [`Session::try_accept`].
    accepted: VecDeque<(u64, ConnInit)>,
    /// Handles of connections the peer reset, handed out by [`Session::take_reset`].
    resets: VecDeque<u64>,
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
    /// AF_XDP sockets, one per queue, in queue order: to map, then bind on `port`
    /// ([`crate::xsk::Socket::adopt`]).
    pub xsks: Vec<OwnedFd>,
    /// The UMEM memfd (map it `MAP_SHARED`, `geometry.umem_len` bytes).
    pub umem: OwnedFd,
    /// The session's socket, for the requests the app library sends on its own (`Release`,
    /// `Abort`); replies are read through the [`Session`]. It does not keep the session open.
    pub control: Weak<UnixStream>,
}

impl Session {
    pub fn connect(path: impl AsRef<Path>) -> anyhow::Result<Session> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).with_context(|| {
            format!("connecting to the etran daemon at {} (is it running?)", path.display())
        })?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        Ok(Session {
            stream: Arc::new(stream),
            buf: Vec::new(),
            accepted: VecDeque::new(),
            resets: VecDeque::new(),
        })
    }

    /// The raw stream (tests use it to send arbitrary bytes).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    pub fn send(&mut self, req: &Request) -> anyhow::Result<()> {
        (&*self.stream).write_all(&proto::encode(req)).context("writing to the daemon")
    }

    /// Waits for the next reply, collecting any descriptors that come with it.
    pub fn recv(&mut self) -> anyhow::Result<(Reply, Vec<OwnedFd>)> {
        let mut fds = Vec::new();
        loop {
            if let Some((reply, used)) =
                proto::decode::<Reply>(&self.buf).context("reading the daemon's reply")?
            {
                self.buf.drain(..used);
                return Ok((reply, fds));
            }
            let mut chunk = [0u8; 4096];
            let n = proto::recv_fds(self.stream.as_fd(), &mut chunk, &mut fds, false)
                .context("reading from the daemon")?;
            if n == 0 {
                bail!("the daemon closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Registers this app: the daemon builds its port and passes its socket(s) and UMEM.
    pub fn register(&mut self, transport: Transport, queues: u32) -> anyhow::Result<Registration> {
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
                fds: kinds,
                ..
            } => {
                if kinds.len() != fds.len() {
                    bail!(
                        "the daemon announced {} descriptors but sent {}",
                        kinds.len(),
                        fds.len()
                    );
                }
                let (mut xsks, mut umem) = (Vec::new(), None);
                for (kind, fd) in kinds.into_iter().zip(fds) {
                    match kind {
                        FdKind::Xsk { .. } => xsks.push(fd),
                        FdKind::Umem => umem = Some(fd),
                    }
                }
                let umem = umem.context("the daemon sent no UMEM")?;
                let control = Arc::downgrade(&self.stream);
                Ok(Registration {
                    slot,
                    port,
                    port_ifindex,
                    kernel_port,
                    kernel_ifindex,
                    geometry,
                    xsks,
                    umem,
                    control,
                })
            }
            Reply::Error { message } => bail!("the daemon refused the registration: {message}"),
            other => bail!("unexpected reply to Register: {other:?}"),
        }
    }

    /// Listens on TCP `port`: connections to it arrive through [`Session::try_accept`].
    pub fn listen(&mut self, port: u16) -> anyhow::Result<()> {
        self.send(&Request::Listen { port })?;
        loop {
            let (reply, _) = self.recv()?;
            match self.stash(reply) {
                None => {}
                Some(Reply::Listening { port: p }) if p == port => return Ok(()),
                Some(Reply::ListenFailed { reason, .. }) => bail!("listening on {port}: {reason}"),
                Some(Reply::Error { message }) => bail!("listening on {port}: {message}"),
                Some(other) => bail!("unexpected reply to Listen: {other:?}"),
            }
        }
    }

    /// Connects to `remote` (blocking until the handshake completes or fails).
    pub fn connect_tcp(
        &mut self,
        remote: std::net::SocketAddrV4,
        local_port: Option<u16>,
    ) -> anyhow::Result<(u64, ConnInit)> {
        self.send(&Request::Connect {
            remote_ip: *remote.ip(),
            remote_port: remote.port(),
            local_port,
        })?;
        loop {
            let (reply, _) = self.recv()?;
            match self.stash(reply) {
                None => {}
                Some(Reply::Connected { handle, init }) => return Ok((handle, init)),
                Some(Reply::ConnectFailed { reason }) => bail!("connecting to {remote}: {reason}"),
                Some(Reply::Error { message }) => bail!("connecting to {remote}: {message}"),
                Some(other) => bail!("unexpected reply to Connect: {other:?}"),
            }
        }
    }

    /// Queues a message the daemon sends on its own; any other is handed back.
    fn stash(&mut self, reply: Reply) -> Option<Reply> {
        match reply {
            Reply::Accepted { handle, init } => self.accepted.push_back((handle, init)),
            // A connection reset before it was handed out is never handed out.
            Reply::Reset { handle } if self.accepted.iter().any(|a| a.0 == handle) => {
                self.accepted.retain(|a| a.0 != handle)
            }
            Reply::Reset { handle } => self.resets.push_back(handle),
            other => return Some(other),
        }
        None
    }

    /// Reads and queues whatever the daemon sent, without blocking. An `Error` (the daemon
    /// closes the session after it) or the daemon going away is an error.
    pub fn poll(&mut self) -> anyhow::Result<()> {
        loop {
            while let Some((reply, used)) =
                proto::decode::<Reply>(&self.buf).context("reading the daemon's message")?
            {
                self.buf.drain(..used);
                match self.stash(reply) {
                    None => {}
                    Some(Reply::Error { message }) => {
                        bail!("the daemon closed the session: {message}")
                    }
                    Some(other) => bail!("unexpected message from the daemon: {other:?}"),
                }
            }
            let mut chunk = [0u8; 4096];
            let mut fds = Vec::new();
            let r = proto::recv_fds(self.stream.as_fd(), &mut chunk, &mut fds, true);
            match r {
                Ok(0) => bail!("the daemon closed the connection"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e).context("reading from the daemon"),
            }
        }
    }

    /// The next accepted connection (`handle`, what the app adopts), without blocking.
    pub fn try_accept(&mut self) -> anyhow::Result<Option<(u64, ConnInit)>> {
        if self.accepted.is_empty() {
            self.poll()?;
        }
        Ok(self.accepted.pop_front())
    }

    /// The handle of the next connection the peer reset, from what was read so far (see
    /// [`Session::poll`]).
    pub fn take_reset(&mut self) -> Option<u64> {
        self.resets.pop_front()
    }

    /// Ends the session; the daemon removes the port.
    pub fn close(mut self) -> anyhow::Result<()> {
        self.send(&Request::Close)
    }
}

/// The session's socket: readable when the daemon sent something ([`Session::poll`]).
impl AsFd for Session {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}
