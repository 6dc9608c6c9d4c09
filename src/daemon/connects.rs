//! Connects other processes wait for (`Connecting`): a process that forked before it connected
//! a socket shows the socket while the connect is in progress, and how it failed. A child
//! holding a copy of that socket asks for the connection (`AdoptPassed`) and is told to wait
//! (`EINPROGRESS`), or the connect's error, as the child's copy of a kernel socket is
//! connecting, or failed, with the parent's. Once up, the connection is shown as any shared
//! one (`Share`), which ends the entry.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use mio::Token;

use crate::transport::tcp::listen::SocketId;

/// How long a failed connect's error waits for the processes holding its socket.
const FAILED_KEPT: Duration = Duration::from_secs(60);

/// A connect shown by a session: in progress (`errno` 0), or failed, since `at`.
struct Shown {
    owner: Token,
    errno: i32,
    at: Instant,
}

/// The connects shown, by their kernel socket.
#[derive(Default)]
pub struct Connects(HashMap<SocketId, Shown>);

impl Connects {
    /// `Connecting { errno }` from session `owner`, showing `socket`.
    pub fn show(&mut self, owner: Token, socket: SocketId, errno: i32) {
        self.0.insert(socket, Shown { owner, errno, at: Instant::now() });
    }

    /// The connection of `socket` is shown (`Share`): it is up, nothing more to wait for.
    pub fn up(&mut self, socket: &SocketId) {
        self.0.remove(socket);
    }

    /// What a process asking for `socket`'s connection is told: `EINPROGRESS` while it goes
    /// on, its errno once it failed; None for a socket no connect was shown for.
    pub fn errno(&self, socket: &SocketId) -> Option<i32> {
        self.0.get(socket).map(|s| if s.errno == 0 { libc::EINPROGRESS } else { s.errno })
    }

    /// Session `owner` ended: its connects will never complete.
    pub fn forget(&mut self, owner: Token) {
        self.0.retain(|_, s| s.owner != owner);
    }

    /// Failed connects shown more than [`FAILED_KEPT`] ago are forgotten (at housekeeping).
    pub fn expire(&mut self, now: Instant) {
        self.0.retain(|_, s| s.errno == 0 || now.duration_since(s.at) < FAILED_KEPT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_is_waited_for_until_up_and_a_failure_until_it_expires() {
        let mut c = Connects::default();
        let (a, b) = ((1, 2), (1, 3));
        c.show(Token(7), a, 0);
        c.show(Token(8), b, libc::ECONNREFUSED);
        assert_eq!(c.errno(&a), Some(libc::EINPROGRESS));
        assert_eq!(c.errno(&b), Some(libc::ECONNREFUSED));
        c.expire(Instant::now() + FAILED_KEPT);
        assert_eq!((c.errno(&a), c.errno(&b)), (Some(libc::EINPROGRESS), None));
        c.up(&a);
        assert_eq!(c.errno(&a), None);
        c.show(Token(7), a, 0);
        c.forget(Token(7));
        assert_eq!(c.errno(&a), None);
    }
}
