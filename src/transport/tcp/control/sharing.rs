//! Connections shared across processes (a forked child inheriting its parent's): who holds
//! them, and their moves between apps.
//!
//! Holding a connection's kernel socket is the right to use it, as in the kernel. Its owner
//! shows the socket before it forks (`share`: the socket's identity, and the owner's pidfd as a
//! holder) and names each child after (`forked`: the child's pidfd). A session showing that
//! socket adopts the connection (`adopt`): the fast path stops serving it (`etran_tcp_rehome`
//! sets ETRAN_TCP_OWNER_MOVING), its owner is asked to hand the stream over (`Surrender`), and
//! once it did (`surrendered`) the adopter gets the stream and the fast path serves it.
//! An owner closing a shared connection while another holder lives parks it (`park`): the
//! stream waits here for the next adopter; a parked connection whose holders all died or let
//! go is closed as the kernel closes a socket nobody holds (`orphan`: a FIN, or a RST when
//! bytes received were never read; `expire_parked`, run as soon as the daemon sees a holder's
//! pidfd readable). A holder is a
//! process (its pidfd tells when it ended), whether or not it ever registered; a child that
//! forks again shows what it inherited (`share` of a connection it does not own), so its own
//! children are holders too.
//!
//! A session that ends holding a connection's stream (its process killed) loses the stream
//! with it, but the kernel's state holds what the connection needs where nothing was lost
//! (`rescue`): every byte received was read (the kernel's receive window is whole again),
//! no FIN of ours is out; the bytes it sent and the peer has not acknowledged yet are
//! unknown, and a stream rebuilt from the kernel's positions fails if one of them must be
//! sent again. Such a stream is parked for the other holders (or goes to an adopter waiting
//! for it), as Linux keeps a socket open while any process holds it; otherwise the
//! connection is reset.
use std::{
    collections::VecDeque,
    os::fd::{AsFd, OwnedFd},
    time::{Duration, Instant},
};

use mio::Token;

use super::{map_key, read_conn, SlowPath, SlowTimer, TcpHandles, SND_BUF};
use crate::{
    bpf::tcp::types::{tcp_conn_fin, tcp_conn_flag},
    log,
    refusal::Refusal,
    timer::TimerWheel,
    transport::tcp::{
        listen::SocketId,
        rehome::{rehome, MOVING},
        segment::FlowKey,
        stream::{memfd, Resume, Stream, StreamInit},
    },
};

/// The owner of a connection on its way between apps, or parked (no session).
pub(super) const NOBODY: Token = Token(usize::MAX);

/// How long a connection passed over a Unix socket waits for its receiver (`adopt_passed`)
/// while no holder the daemon knows lives.
const PASSING: Duration = Duration::from_secs(10);

/// Where a shared connection's stream is.
enum Hand {
    /// With its owner (`Conn::owner`).
    Owned,
    /// Asked of `from`, which hands it over.
    Moving { from: Token },
    /// Here, handed over by an owner that closed it.
    Parked { stream: OwnedFd },
}

/// A process holding a shared connection.
struct Holding {
    /// Its pid as the app sees it.
    pid: u32,
    pidfd: OwnedFd,
    /// Its session while open: what it sent may not be read yet (a `Forked` naming the
    /// child it left the connection to), so it counts as a holder even once it ended.
    session: Option<Token>,
}

impl Holding {
    fn counts(&self) -> bool {
        self.session.is_some() || alive(&self.pidfd)
    }
}

/// One shared connection.
pub(super) struct Shared {
    socket: SocketId,
    /// Processes holding it.
    holders: Vec<Holding>,
    hand: Hand,
    /// Sessions waiting for it, with their port slots.
    adopters: VecDeque<(Token, u32)>,
    /// Passed over a Unix socket: kept for its receiver until then, held or not.
    passed_until: Option<Instant>,
}

impl Shared {
    /// Whether a process may still use it: a holder lives (or its session is still open), or
    /// a receiver may yet come.
    fn held(&self) -> bool {
        self.holders.iter().any(Holding::counts)
            || self.passed_until.is_some_and(|t| Instant::now() < t)
    }
}

/// A process holding shared connections: its pid as the app sees it, and its pidfd.
#[derive(Clone, Copy)]
pub struct Holder<'a> {
    pub pid: u32,
    pub pidfd: &'a OwnedFd,
}

/// What a session must be told (the daemon words it as a reply).
pub enum Handed {
    Surrender { to: Token, handle: u64, rx_pos: u32 },
    Adopted { to: Token, handle: u64, at: Resume, stream: OwnedFd },
    AdoptFailed { to: Token, handle: u64, refusal: Refusal },
    Unshared { to: Token, handle: u64 },
}

/// Whether the process behind `pidfd` still runs (a pidfd is readable once it ended).
fn alive(pidfd: &OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) == 0 }
}

impl SlowPath {
    /// `Share` from `owner`: the connections `conns` stand for their kernel sockets; process
    /// `by` holds them. A connection `owner` does not own is one it
    /// inherited (a child about to fork a grandchild): shown with the socket it was shared
    /// with, its holder is recorded all the same. `passing`: the sockets go over a Unix
    /// socket, and the connections wait for their receiver ([`PASSING`]).
    pub fn share(&mut self, owner: Token, by: Holder, conns: &[(u64, SocketId)], passing: bool) {
        for &(handle, socket) in conns {
            let s = if self.owned(owner, handle).is_some() {
                self.shared.entry(handle).or_insert_with(|| Shared {
                    socket,
                    holders: Vec::new(),
                    hand: Hand::Owned,
                    adopters: VecDeque::new(),
                    passed_until: None,
                })
            } else {
                match self.shared.get_mut(&handle).filter(|s| s.socket == socket) {
                    Some(s) => s,
                    None => continue,
                }
            };
            add_holder(s, by.pid, by.pidfd, Some(owner));
            if passing {
                s.passed_until = Some(Instant::now() + PASSING);
            }
        }
    }

    /// `AdoptPassed` from session `to` (port `slot`): process `by` received the kernel socket
    /// `socket` over a Unix socket; the connection it stands for comes to `to`, and `by`
    /// holds it from now on.
    pub fn adopt_passed(
        &mut self,
        tcp: &TcpHandles,
        to: Token,
        slot: u32,
        by: Holder,
        socket: SocketId,
    ) -> Vec<Handed> {
        let found = self.shared.iter_mut().find(|(_, s)| s.socket == socket);
        let Some((&handle, s)) = found else {
            let refusal = Refusal::new(libc::ENOTCONN, "no connection of etran's".to_string());
            return vec![Handed::AdoptFailed { to, handle: 0, refusal }];
        };
        add_holder(s, by.pid, by.pidfd, Some(to));
        s.passed_until = None;
        let owner = self.handles.get(&handle).and_then(|k| self.conns.get(k)).map(|c| c.owner);
        if owner == Some(to) {
            // Sent to itself: its stream is here already.
            let refusal = Refusal::new(libc::EALREADY, "this app has it".to_string());
            return vec![Handed::AdoptFailed { to, handle: 0, refusal }];
        }
        self.adopt(tcp, to, slot, handle, socket)
    }

    /// `Forked`: process `pid` (`pidfd`) holds the connections `handles` too.
    pub fn forked(&mut self, pid: u32, pidfd: &OwnedFd, handles: &[u64]) {
        for h in handles {
            if let Some(s) = self.shared.get_mut(h) {
                add_holder(s, pid, pidfd, None);
            }
        }
    }

    /// `Adopt { handle }` from session `to` (port `slot`), showing the kernel socket `socket`.
    pub fn adopt(
        &mut self,
        tcp: &TcpHandles,
        to: Token,
        slot: u32,
        handle: u64,
        socket: SocketId,
    ) -> Vec<Handed> {
        let refuse = |errno, why: &str| {
            let refusal = Refusal::new(errno, why.to_string());
            vec![Handed::AdoptFailed { to, handle, refusal }]
        };
        let Some(key) = self.handles.get(&handle).copied() else {
            return refuse(libc::ECONNRESET, "the connection is gone");
        };
        let Some(s) = self.shared.get_mut(&handle).filter(|s| s.socket == socket) else {
            return refuse(libc::EBADF, "not the connection's socket");
        };
        let owner = self.conns.get(&key).map(|c| c.owner);
        match &s.hand {
            Hand::Owned if owner == Some(to) => vec![],
            Hand::Owned => match rehome(tcp.rehome.as_fd(), &map_key(&key), MOVING) {
                Ok(Some(at)) => {
                    let from = owner.unwrap_or(NOBODY);
                    s.hand = Hand::Moving { from };
                    s.adopters.push_back((to, slot));
                    if let Some(c) = self.conns.get_mut(&key) {
                        c.owner = NOBODY;
                    }
                    vec![Handed::Surrender { to: from, handle, rx_pos: at.rx_pos }]
                }
                _ => refuse(libc::ECONNRESET, "the connection left the fast path"),
            },
            Hand::Moving { .. } => {
                s.adopters.push_back((to, slot));
                vec![]
            }
            Hand::Parked { .. } => {
                s.adopters.push_back((to, slot));
                let Hand::Parked { stream } = std::mem::replace(&mut s.hand, Hand::Owned) else {
                    unreachable!("matched above")
                };
                self.hand_to_adopter(tcp, handle, stream)
            }
        }
    }

    /// `Park { handle, pid, keep }` from session `from`: process `pid` closed its descriptor
    /// (or, with `keep`, parks the stream while it holds one).
    #[allow(clippy::too_many_arguments)]
    pub fn park<T>(
        &mut self,
        tcp: &TcpHandles,
        timers: &mut TimerWheel<T>,
        wrap: impl Fn(SlowTimer) -> T,
        from: Token,
        handle: u64,
        pid: u32,
        keep: bool,
    ) -> Vec<Handed> {
        let owned = self.owned(from, handle);
        let Some(s) = self.shared.get_mut(&handle) else {
            return vec![Handed::Unshared { to: from, handle }];
        };
        if !keep {
            s.holders.retain(|h| h.pid != pid);
        }
        let held = s.held();
        let Some(key) = owned else {
            // Parked, and its last holder let go: nobody will adopt it.
            if !held && matches!(s.hand, Hand::Parked { .. }) {
                self.close_parked(tcp, timers, &wrap, &[handle]);
            }
            return vec![];
        };
        if !matches!(s.hand, Hand::Owned) {
            return vec![];
        }
        if !held {
            return vec![Handed::Unshared { to: from, handle }];
        }
        match rehome(tcp.rehome.as_fd(), &map_key(&key), MOVING) {
            Ok(Some(at)) => {
                s.hand = Hand::Moving { from };
                if let Some(c) = self.conns.get_mut(&key) {
                    c.owner = NOBODY;
                }
                vec![Handed::Surrender { to: from, handle, rx_pos: at.rx_pos }]
            }
            _ => vec![Handed::Unshared { to: from, handle }],
        }
    }

    /// `Surrendered { handle }` from session `from`: the stream, which goes to the next
    /// adopter or waits here.
    pub fn surrendered(
        &mut self,
        tcp: &TcpHandles,
        from: Token,
        handle: u64,
        stream: OwnedFd,
    ) -> Vec<Handed> {
        let Some(s) = self.shared.get_mut(&handle) else { return vec![] };
        if !matches!(s.hand, Hand::Moving { from: f } if f == from) {
            return vec![];
        }
        s.hand = Hand::Owned;
        self.hand_to_adopter(tcp, handle, stream)
    }

    /// Gives `stream` to the first adopter still waiting, or parks it.
    fn hand_to_adopter(&mut self, tcp: &TcpHandles, handle: u64, stream: OwnedFd) -> Vec<Handed> {
        let key = self.handles.get(&handle).copied();
        let s = self.shared.get_mut(&handle).expect("shared");
        let Some((to, slot)) = s.adopters.pop_front() else {
            s.hand = Hand::Parked { stream };
            return vec![];
        };
        let Some(key) = key else {
            let refusal = Refusal::new(libc::ECONNRESET, "the connection is gone");
            return vec![Handed::AdoptFailed { to, handle, refusal }];
        };
        match rehome(tcp.rehome.as_fd(), &map_key(&key), slot) {
            Ok(Some(at)) => {
                if let Some(c) = self.conns.get_mut(&key) {
                    c.owner = to;
                }
                let mut out = vec![Handed::Adopted { to, handle, at, stream }];
                // The others wait for its next move.
                let s = self.shared.get_mut(&handle).expect("shared");
                if !s.adopters.is_empty() {
                    if let Ok(Some(at)) = rehome(tcp.rehome.as_fd(), &map_key(&key), MOVING) {
                        s.hand = Hand::Moving { from: to };
                        if let Some(c) = self.conns.get_mut(&key) {
                            c.owner = NOBODY;
                        }
                        out.push(Handed::Surrender { to, handle, rx_pos: at.rx_pos });
                    }
                }
                out
            }
            _ => {
                let refusal = Refusal::new(libc::ECONNRESET, "the connection left the fast path");
                vec![Handed::AdoptFailed { to, handle, refusal }]
            }
        }
    }

    /// A session ended: the streams it was handing over died with it, and are rescued (see
    /// [`SlowPath::rescue`]) or reset; it waits for none any more. Returns what other
    /// sessions must be told.
    pub(super) fn forget_sharer(&mut self, tcp: &TcpHandles, owner: Token) -> Vec<Handed> {
        let mut lost = Vec::new();
        for (&handle, s) in self.shared.iter_mut() {
            s.adopters.retain(|(t, _)| *t != owner);
            for h in s.holders.iter_mut().filter(|h| h.session == Some(owner)) {
                h.session = None;
            }
            if matches!(s.hand, Hand::Moving { from } if from == owner) {
                lost.push(handle);
            }
        }
        let mut out = Vec::new();
        let mut reset = Vec::new();
        for handle in lost {
            match self.rescue(tcp, handle) {
                Some(stream) => out.extend(self.hand_to_adopter(tcp, handle, stream)),
                None => reset.push(handle),
            }
        }
        out.extend(self.drop_shared(tcp, &reset));
        out
    }

    /// The shared connections among `keys` (owned by a session that ended, its process
    /// killed) whose streams could be rebuilt: parked for their other holders. Returns the
    /// others, to be reset.
    pub(super) fn rescue_owned(&mut self, tcp: &TcpHandles, keys: Vec<FlowKey>) -> Vec<FlowKey> {
        let mut reset = Vec::new();
        for key in keys {
            let handle = self.conns.get(&key).map(|c| c.handle);
            let parked = handle.filter(|h| self.shared.contains_key(h)).and_then(|h| {
                let stream = self.rescue(tcp, h)?;
                self.shared.get_mut(&h).expect("shared").hand = Hand::Parked { stream };
                Some(())
            });
            if parked.is_none() {
                reset.push(key);
            }
        }
        reset
    }

    /// The stream of shared connection `handle`, whose owner died with it, rebuilt from the
    /// kernel's state (see the module doc) in a memfd; the connection is nobody's (the fast
    /// path holds its segments: `MOVING`). None when something the owner held is lost: the
    /// connection must be reset.
    fn rescue(&mut self, tcp: &TcpHandles, handle: u64) -> Option<OwnedFd> {
        let key = *self.handles.get(&handle)?;
        let mk = map_key(&key);
        let at = rehome(tcp.rehome.as_fd(), &mk, MOVING).ok()??;
        if let Some(c) = self.conns.get_mut(&key) {
            c.owner = NOBODY;
        }
        let cur = read_conn(tcp, &mk)?;
        let why = if at.fin & tcp_conn_fin::TCP_CONN_FIN_SENT.0 != 0 {
            Some("its FIN was out")
        } else if at.rcv_wnd != self.config.rcv_wnd {
            Some("bytes it received may be unread")
        } else {
            None
        };
        if let Some(why) = why {
            log::info(format!("shared connection {} ← {}: its owner died, {why}", key.0, key.1));
            return None;
        }
        let init = StreamInit {
            key: mk,
            rx_pos: at.rx_pos,
            tx_pos: at.una_pos,
            send_wnd: at.send_wnd,
            mss: cur.mss,
            sack: cur.flags & tcp_conn_flag::TCP_CONN_SACK.0 as u8 != 0,
            snd_seq: cur.snd_una,
            rcv_buf: self.config.rcv_wnd,
            rcv_wscale: cur.rcv_wscale,
            snd_buf: SND_BUF,
        };
        let in_flight = at.tx_pos.wrapping_sub(at.una_pos);
        let stream = memfd(&Stream::lost_owner(init, in_flight)).ok()?;
        log::info(format!(
            "shared connection {} ← {}: its owner died, kept for the other holders (handle {handle})",
            key.0, key.1
        ));
        Some(stream)
    }

    /// Holders that ended are forgotten (their pidfds closed), and parked connections left
    /// without any are closed (nobody will adopt them: `close_orphan`). Run when a holder's
    /// pidfd says it ended, and at housekeeping.
    pub fn expire_parked<T>(
        &mut self,
        tcp: &TcpHandles,
        timers: &mut TimerWheel<T>,
        wrap: impl Fn(SlowTimer) -> T,
    ) {
        for s in self.shared.values_mut() {
            s.holders.retain(Holding::counts);
        }
        let dead: Vec<u64> = self
            .shared
            .iter()
            .filter(|(_, s)| matches!(s.hand, Hand::Parked { .. }) && !s.held())
            .map(|(&h, _)| h)
            .collect();
        self.close_parked(tcp, timers, &wrap, &dead);
    }

    /// Closes the parked connections `handles`, which nobody holds any more (no adopter
    /// waits for a parked stream).
    fn close_parked<T>(
        &mut self,
        tcp: &TcpHandles,
        timers: &mut TimerWheel<T>,
        wrap: &impl Fn(SlowTimer) -> T,
        handles: &[u64],
    ) {
        for h in handles {
            match self.shared.remove(h) {
                // Passed over a Unix socket and never received: the handover failed (the
                // peer's bytes may have been dropped while it waited), reset.
                Some(Shared { passed_until: Some(_), .. }) => self.reset_passed(tcp, *h),
                Some(Shared { hand: Hand::Parked { stream }, .. }) => {
                    self.close_orphan(tcp, timers, wrap, *h, stream)
                }
                _ => {}
            }
        }
    }

    fn reset_passed(&mut self, tcp: &TcpHandles, handle: u64) {
        if let Some(key) = self.handles.get(&handle).copied() {
            log::info(format!(
                "shared connection {} ← {} reset (handle {handle}): passed, never received",
                key.0, key.1
            ));
            self.abort_conn(tcp, &key);
        }
    }

    /// Resets the connections `handles`; their waiting adopters are told.
    fn drop_shared(&mut self, tcp: &TcpHandles, handles: &[u64]) -> Vec<Handed> {
        let mut out = Vec::new();
        for h in handles {
            let Some(s) = self.shared.remove(h) else { continue };
            for (to, _) in s.adopters {
                let refusal = Refusal::new(libc::ECONNRESET, "the stream was lost on its way");
                out.push(Handed::AdoptFailed { to, handle: *h, refusal });
            }
            if let Some(key) = self.handles.get(h).copied() {
                log::info(format!("shared connection {} ← {} reset (handle {h})", key.0, key.1));
                self.abort_conn(tcp, &key);
            }
        }
        out
    }
}

/// Process `pid` (`pidfd`; its session, if it has one) holds `s`.
fn add_holder(s: &mut Shared, pid: u32, pidfd: &OwnedFd, session: Option<Token>) {
    if let Some(h) = s.holders.iter_mut().find(|h| h.pid == pid) {
        h.session = h.session.or(session);
        return;
    }
    if let Ok(pidfd) = pidfd.try_clone() {
        s.holders.push(Holding { pid, pidfd, session });
    }
}
