//! One app's session: its Unix stream, the bytes read so far, the port it owns and the
//! transport it registered for.
use std::{
    collections::VecDeque,
    io,
    os::fd::{AsFd, OwnedFd},
};

use mio::net::UnixStream;

use crate::{
    backend::any::AnyPort,
    proto::{self, DecodeError, Request, Transport},
};

pub struct AppSession {
    pub stream: UnixStream,
    pub id: u64,
    buf: Vec<u8>,
    pub port: Option<AnyPort>,
    /// The transport it registered for: whose control path owns its connections.
    pub transport: Option<Transport>,
    /// Descriptors the app sent (a `Listen`'s socket, ...), in order, not yet taken.
    pub fds: VecDeque<OwnedFd>,
}

/// Descriptors an app's session holds ahead of the messages that take them (a `Listen`'s
/// socket, a `Share`'s pidfd and sockets); any more are closed.
const MAX_HELD_FDS: usize = proto::MAX_FDS;

/// What reading a session produced.
pub enum Input {
    Request(Request),
    /// The peer closed its end (or the connection failed).
    Closed,
    /// Bytes that are not our protocol; the session must be told and closed.
    Bad(DecodeError),
}

impl AppSession {
    pub fn new(stream: UnixStream, id: u64) -> AppSession {
        AppSession {
            stream,
            id,
            buf: Vec::new(),
            port: None,
            transport: None,
            fds: VecDeque::new(),
        }
    }

    /// Reads everything available and decodes it into `out`; stops at the first close or error.
    pub fn read(&mut self, out: &mut Vec<Input>) {
        let mut chunk = [0u8; 4096];
        let mut closed = false;
        let mut fds = Vec::new();
        loop {
            match proto::recv_fds(self.stream.as_fd(), &mut chunk, &mut fds, true) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    // Never hold more than one maximal message plus its prefix.
                    if self.buf.len() > proto::MAX_MESSAGE + 4 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        self.fds.extend(fds);
        // An app could send descriptors with every message and pile them up here: the daemon
        // keeps the first few, enough for the messages in flight that take one.
        self.fds.truncate(MAX_HELD_FDS);
        loop {
            match proto::decode::<Request>(&self.buf) {
                Ok(Some((req, used))) => {
                    self.buf.drain(..used);
                    out.push(Input::Request(req));
                }
                Ok(None) => break,
                Err(e) => {
                    out.push(Input::Bad(e));
                    return;
                }
            }
        }
        if closed {
            out.push(Input::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn descriptors_sent_beyond_what_messages_take_are_not_piled_up() {
        let (ours, app) = mio::net::UnixStream::pair().unwrap();
        let mut session = AppSession::new(ours, 1);
        let null = std::fs::File::open("/dev/null").unwrap();
        for _ in 0..5 {
            let fds = [null.as_fd(); 4];
            proto::send_fds(app.as_fd(), b"x", &fds).unwrap();
        }
        let mut out = Vec::new();
        session.read(&mut out);
        assert_eq!(session.fds.len(), MAX_HELD_FDS);
    }
}
