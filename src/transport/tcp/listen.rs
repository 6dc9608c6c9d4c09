//! Who accepts on a listening port: the slow path's table of listeners (pure: no BPF, no
//! sockets).
//!
//! A port is listened on by one session, or shared by several that show the same kernel
//! socket: the POSIX shim hands the daemon the kernel socket behind a listening descriptor
//! (SCM_RIGHTS), and a forked worker that inherited the descriptor shows the very same socket
//! ([`SocketId`], its inode). Holding the socket is the right to accept on it, as in the kernel,
//! where every process holding a listening socket may accept from it.
//!
//! A member is *accepting* once its program accepts or waits for connections (a master that
//! listens and forks workers never does). Each SYN goes to the next accepting member in turn
//! (connections are shared out at the handshake, as with `SO_REUSEPORT`, rather than taken
//! from one queue); while no member accepts, SYNs wait ([`MAX_WAITING`] per port, later ones
//! are dropped and the peer sends them again) and are answered when one starts.
use std::collections::HashMap;

use mio::Token;

use super::segment::{FlowKey, Segment};
use crate::refusal::Refusal;

/// SYNs held per port while no member accepts (a kernel listener's default backlog).
pub const MAX_WAITING: usize = 128;

/// A kernel socket's identity: its device and inode numbers (`fstat`).
pub type SocketId = (u64, u64);

/// The identity of the kernel socket descriptor `fd` refers to, whichever process holds it;
/// None when it is not a socket.
pub fn socket_id(fd: std::os::fd::BorrowedFd<'_>) -> Option<SocketId> {
    use std::os::fd::AsRawFd;
    // SAFETY: fstat on an open descriptor, into our buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let ok = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0;
    (ok && st.st_mode & libc::S_IFMT == libc::S_IFSOCK).then_some((st.st_dev, st.st_ino))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    owner: Token,
    slot: u32,
    accepting: bool,
}

struct Listening {
    /// The kernel socket its members showed (None: the port is one session's alone).
    socket: Option<SocketId>,
    members: Vec<Member>,
    /// Where the turn goes next among the members.
    next: usize,
    /// SYNs waiting for a member that accepts.
    waiting: Vec<(FlowKey, Segment)>,
}

/// What to do with a SYN to a port.
#[derive(Debug, PartialEq, Eq)]
pub enum OnSyn {
    /// Nobody listens on it.
    NoListener,
    /// Answer it for this member.
    Answer { owner: Token, slot: u32 },
    /// Held until a member accepts (or dropped, the queue being full).
    Held,
}

#[derive(Default)]
pub struct Listeners {
    ports: HashMap<u16, Listening>,
}

impl Listeners {
    /// Whether anyone listens on `port`.
    pub fn contains(&self, port: u16) -> bool {
        self.ports.contains_key(&port)
    }

    /// `owner` (whose app port is `slot`) listens on `port`, showing `socket` if it has one,
    /// accepting at once or not. Returns whether the port is newly listened on (it then
    /// enters the fast path's table); `EADDRINUSE` when someone else listens on it without
    /// that very socket, or `owner` already does.
    pub fn listen(
        &mut self,
        port: u16,
        owner: Token,
        slot: u32,
        socket: Option<SocketId>,
        accepting: bool,
    ) -> Result<bool, Refusal> {
        let member = Member { owner, slot, accepting };
        let Some(l) = self.ports.get_mut(&port) else {
            let l = Listening { socket, members: vec![member], next: 0, waiting: Vec::new() };
            self.ports.insert(port, l);
            return Ok(true);
        };
        if socket.is_none() || l.socket != socket || l.members.iter().any(|m| m.owner == owner) {
            return Err(Refusal::new(libc::EADDRINUSE, format!("port {port} is already taken")));
        }
        l.members.push(member);
        Ok(false)
    }

    /// `owner` no longer listens on `port`. None when it did not; else whether the port is now
    /// free (nobody listens any more: the SYNs waiting there are forgotten).
    pub fn unlisten(&mut self, port: u16, owner: Token) -> Option<bool> {
        let l = self.ports.get_mut(&port)?;
        let at = l.members.iter().position(|m| m.owner == owner)?;
        l.members.remove(at);
        if l.members.is_empty() {
            self.ports.remove(&port);
            return Some(true);
        }
        Some(false)
    }

    /// The ports `owner` listens on.
    pub fn ports_of(&self, owner: Token) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .ports
            .iter()
            .filter(|(_, l)| l.members.iter().any(|m| m.owner == owner))
            .map(|(p, _)| *p)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// `owner` accepts on `port` from now on. Returns the SYNs that waited, to be answered
    /// now (each through [`Listeners::on_syn`] again).
    pub fn accepting(&mut self, port: u16, owner: Token) -> Vec<(FlowKey, Segment)> {
        let Some(l) = self.ports.get_mut(&port) else { return Vec::new() };
        let Some(m) = l.members.iter_mut().find(|m| m.owner == owner) else { return Vec::new() };
        m.accepting = true;
        std::mem::take(&mut l.waiting)
    }

    /// A SYN (no connection exists for `key`) to `key`'s local port.
    pub fn on_syn(&mut self, key: FlowKey, seg: &Segment) -> OnSyn {
        let Some(l) = self.ports.get_mut(&key.0.port()) else { return OnSyn::NoListener };
        let n = l.members.len();
        for i in 0..n {
            let m = l.members[(l.next + i) % n];
            if m.accepting {
                l.next = (l.next + i + 1) % n;
                return OnSyn::Answer { owner: m.owner, slot: m.slot };
            }
        }
        if let Some(w) = l.waiting.iter_mut().find(|(k, _)| *k == key) {
            w.1 = seg.clone(); // the peer sent it again
        } else if l.waiting.len() < MAX_WAITING {
            l.waiting.push((key, seg.clone()));
        }
        OnSyn::Held
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;

    fn key(port: u16, peer: u16) -> FlowKey {
        (
            SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 1), port),
            SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 2), peer),
        )
    }

    fn syn(peer: u16) -> Segment {
        let k = key(80, peer);
        Segment { src: k.1, dst: k.0, flags: super::super::segment::SYN, ..Segment::default() }
    }

    const SOCK: Option<SocketId> = Some((1, 42));

    #[test]
    fn a_port_is_one_sessions_unless_the_same_socket_is_shown() {
        let mut l = Listeners::default();
        assert_eq!(l.listen(80, Token(1), 1, None, true), Ok(true));
        let taken = l.listen(80, Token(2), 2, None, true).unwrap_err();
        assert_eq!(taken.errno, libc::EADDRINUSE);
        assert_eq!(l.listen(81, Token(1), 1, SOCK, true), Ok(true));
        assert_eq!(l.listen(81, Token(2), 2, SOCK, true), Ok(false), "the same socket: shared");
        assert!(l.listen(81, Token(3), 3, Some((1, 43)), true).is_err(), "another socket");
        assert!(l.listen(81, Token(3), 3, None, true).is_err(), "no socket");
        assert!(l.listen(81, Token(2), 2, SOCK, true).is_err(), "a member twice");
        // A port listened on without a socket is never shared.
        assert!(l.listen(80, Token(3), 3, SOCK, true).is_err());
        assert_eq!(l.ports_of(Token(1)), vec![80, 81]);
        assert_eq!(l.unlisten(81, Token(1)), Some(false), "a member is left");
        assert_eq!(l.unlisten(81, Token(1)), None, "not a member");
        assert_eq!(l.unlisten(81, Token(2)), Some(true), "the last one: the port is free");
        assert!(!l.contains(81));
    }

    #[test]
    fn syns_go_to_accepting_members_in_turn() {
        let mut l = Listeners::default();
        l.listen(80, Token(1), 1, SOCK, false).unwrap(); // a master: never accepts
        l.listen(80, Token(2), 2, SOCK, true).unwrap();
        l.listen(80, Token(3), 3, SOCK, true).unwrap();
        let owners: Vec<Token> = (0..4)
            .map(|i| match l.on_syn(key(80, 1000 + i), &syn(1000 + i)) {
                OnSyn::Answer { owner, slot } => {
                    assert_eq!(owner.0 as u32, slot);
                    owner
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(owners, [Token(2), Token(3), Token(2), Token(3)]);
        assert_eq!(l.on_syn(key(81, 1), &syn(1)), OnSyn::NoListener);
        l.unlisten(80, Token(2));
        assert!(matches!(l.on_syn(key(80, 7), &syn(7)), OnSyn::Answer { owner: Token(3), .. }));
    }

    #[test]
    fn syns_wait_for_a_member_that_accepts() {
        let mut l = Listeners::default();
        l.listen(80, Token(1), 1, SOCK, false).unwrap();
        assert_eq!(l.on_syn(key(80, 1), &syn(1)), OnSyn::Held);
        assert_eq!(l.on_syn(key(80, 1), &syn(1)), OnSyn::Held, "sent again: held once");
        assert_eq!(l.on_syn(key(80, 2), &syn(2)), OnSyn::Held);
        for p in 3..(MAX_WAITING as u16 + 10) {
            l.on_syn(key(80, p), &syn(p));
        }
        l.listen(80, Token(2), 2, SOCK, false).unwrap();
        assert!(l.accepting(80, Token(3)).is_empty(), "not a member");
        let waited = l.accepting(80, Token(2));
        assert_eq!(waited.len(), MAX_WAITING, "the queue is bounded");
        assert_eq!((waited[0].0, waited[1].0), (key(80, 1), key(80, 2)), "in arrival order");
        assert!(matches!(l.on_syn(key(80, 1), &syn(1)), OnSyn::Answer { owner: Token(2), .. }));
        assert!(l.accepting(80, Token(2)).is_empty(), "handed out once");
    }
}
