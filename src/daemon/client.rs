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
use std::{
    io::Write,
    os::{
        fd::{AsFd, OwnedFd},
        unix::net::UnixStream,
    },
    path::Path,
    time::Duration,
};

use anyhow::{bail, Context};

use super::proto::{self, FdKind, Geometry, Reply, Request, Transport};

/// A connection to the daemon.
pub struct Session {
    stream: UnixStream,
    buf: Vec<u8>,
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
    /// Bound AF_XDP sockets, one per queue, in queue order.
    pub xsks: Vec<OwnedFd>,
    /// The UMEM memfd (map it `MAP_SHARED`, `geometry.umem_len` bytes).
    pub umem: OwnedFd,
}

impl Session {
    pub fn connect(path: impl AsRef<Path>) -> anyhow::Result<Session> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).with_context(|| {
            format!("connecting to the etran daemon at {} (is it running?)", path.display())
        })?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Session { stream, buf: Vec::new() })
    }

    /// The raw stream (tests use it to send arbitrary bytes).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    pub fn send(&mut self, req: &Request) -> anyhow::Result<()> {
        self.stream.write_all(&proto::encode(req)).context("writing to the daemon")
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
            let n = proto::recv_fds(self.stream.as_fd(), &mut chunk, &mut fds)
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
                Ok(Registration {
                    slot,
                    port,
                    port_ifindex,
                    kernel_port,
                    kernel_ifindex,
                    geometry,
                    xsks,
                    umem,
                })
            }
            Reply::Error { message } => bail!("the daemon refused the registration: {message}"),
        }
    }

    /// Ends the session; the daemon removes the port.
    pub fn close(mut self) -> anyhow::Result<()> {
        self.send(&Request::Close)
    }
}
