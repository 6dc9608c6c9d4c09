//! TCP's control path, the slow path the daemon runs: handshakes, the end of connections, resets.
//! [`TcpControl`] is what the daemon holds (the transport seam's [`Control`]).
//!
//! Ingress copies SYNs to listening ports (`etran_tcp_listen`) and every segment of a flow in
//! `etran_tcp_pending` to the `etran_tcp_slow` ring buffer; the loop drains it here, runs the
//! handshake state machine ([`super::handshake`]) per 4-tuple and sends its segments
//! through an AF_PACKET socket bound to the NIC. SYN-ACKs are retransmitted from the daemon's
//! timer wheel. Once a handshake completes the connection goes into `etran_tcp_conns` *before*
//! it leaves `etran_tcp_pending` (so no segment of it ever reaches the kernel, which would
//! answer with RST), and before our final ACK of an active open leaves (so the server's first
//! data finds the fast path), and the owning session is told (`Accepted`, `Connected`).
//!
//! Nothing the peer sends right behind the handshake is lost. Ingress copies segments of
//! pending flows that carry payload or a FIN whole (control segments only in part). The daemon
//! holds those of a handshake still running ([`MAX_HELD`] at most) and, once the connection is
//! in the fast path, replays them, the establishing segment's own payload included, in sequence
//! order through the TCP ingress program (the backend's [`Replay`], one frame at a time):
//! each is checked, applied and acknowledged, and reaches the app's port with its metadata,
//! exactly like a segment that arrived later (the app library holds frames that come before
//! `accept`). A copy drained after the connection was established is replayed at once. A
//! segment that overtook a replayed one on the fast path is simply out of order there.
//!
//! Active open (`Connect`): the local address is the NIC's first IPv4 address, the port an
//! ephemeral one (`EPHEMERAL`) unless asked for, the peer's MAC comes from the neighbour table
//! (the kernel's, as `/proc/net/arp` shows it): no entry is a clear error, not an ARP probe. A
//! connect to this host itself (the NIC's address, loopback) is refused (`EOPNOTSUPP`): the wire
//! would not bring its frames back.
//!
//! Close: the fast path exchanges the FINs; the app then releases the connection (`Release`)
//! and it leaves `etran_tcp_conns`. If the app closed first the 4-tuple stays in TIME_WAIT for
//! `time_wait` (in `etran_tcp_pending`, so its segments come here and are answered as
//! [`close::time_wait_segment`] decides), and no active open picks it.
//!
//! Abort (`Abort`, the app's session ending) sends a RST at the positions the fast path reached.
//! A RST from the peer on an established connection is checked by [`close::check_rst`]: a reset
//! removes the connection and the app is told (`Reset`). A SYN on an established connection
//! gets a challenge ACK (RFC 5961 4.2).
use std::{
    cell::RefCell,
    collections::HashMap,
    io,
    net::SocketAddrV4,
    os::fd::{OwnedFd, RawFd},
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::Context;
use libbpf_rs::{MapCore, MapFlags, RingBuffer, RingBufferBuilder};
use mio::Token;

use super::{stream::ConnInit, TcpHandles};
use crate::transport::Control;
use crate::{
    bpf::tcp::types::{etran_tcp_slow_seg, tcp_conn, tcp_conn_key},
    log,
    packet::PacketSocket,
    refusal::Refusal,
    timer::{TimerId, TimerWheel},
    transport::tcp::{
        close::{self, RstCheck, TimeWaitAction},
        handshake::{Config, Established, Failure, Handshake, Outcome},
        isn::IsnGenerator,
        listen::{Listeners, OnSyn, SocketId},
        segment::{FlowKey, Segment, FIN, RST, SYN},
        window,
    },
};

mod orphan;
mod sharing;

pub use sharing::{Handed, Holder};

/// Send buffer the app gets for each connection.
const SND_BUF: u32 = 1 << 20;
/// Local ports active opens pick from.
const EPHEMERAL: std::ops::Range<u16> = 49152..65535;
/// Segments carrying payload or a FIN held per running handshake (a peer's initial window is
/// typically 10); later ones are dropped, and the peer retransmits them.
pub const MAX_HELD: usize = 64;
/// Where the frame starts in a slow-path record (after `len` and `wire_len`).
const SLOW_FRAME_AT: usize = std::mem::offset_of!(etran_tcp_slow_seg, frame);

/// The slow path's timers (the daemon's wheel holds them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowTimer {
    /// A handshake's retransmission timeout.
    Handshake(FlowKey),
    /// The end of a 4-tuple's TIME_WAIT.
    TimeWait(FlowKey),
}

struct Pending {
    hs: Handshake,
    active: bool,
    owner: Token,
    slot: u32,
    timer: Option<TimerId>,
    /// Whole frames carrying payload or a FIN, with their sequence numbers, in arrival order.
    held: Vec<(u32, Vec<u8>)>,
}

/// A frame ingress copied: whole, or only its head (`etran_tcp_slow_seg`).
struct Captured {
    frame: Vec<u8>,
    whole: bool,
}

/// Whether the segment carries something of the peer's stream (payload, FIN): such a segment,
/// captured whole, is replayed through the fast path instead of being handled here.
fn carries_stream(seg: &Segment) -> bool {
    seg.flags & (SYN | RST) == 0 && (!seg.payload.is_empty() || seg.flags & FIN != 0)
}

struct Conn {
    est: Established,
    owner: Token,
    handle: u64,
}

/// A released connection we closed first: what answering its late segments needs.
struct TimeWait {
    est: Established,
    snd_nxt: u32,
    rcv_nxt: u32,
    window: u16,
    timer: TimerId,
    /// Closed by the daemon (`orphan`): our FIN (at `snd_nxt - 1`) not acknowledged yet, and
    /// how often it was sent again.
    fin_resent: Option<u32>,
    /// `rcv_nxt` is past the peer's FIN.
    peer_fin: bool,
}

/// What the slow path has to tell a session (the daemon words it for the app).
pub struct Notify {
    pub owner: Token,
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A connection the session opened completed its handshake.
    Connected { handle: u64, init: ConnInit },
    /// A connection to a port the session listens on completed its handshake.
    Accepted { handle: u64, init: ConnInit },
    /// A connection the session opened (to `remote`) failed.
    ConnectFailed { remote: SocketAddrV4, refusal: Refusal },
    /// The peer reset connection `handle`.
    Reset { handle: u64 },
}

/// Work of the slow path, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SlowStats {
    /// Captured segments replayed through the ingress program.
    pub replayed: u64,
    /// Segments carrying payload or a FIN that could not be kept (too many held, a failed
    /// handshake, a replay that failed): the peer retransmits them.
    pub dropped: u64,
}

pub struct SlowPath {
    ring: RingBuffer<'static>,
    segs: Rc<RefCell<Vec<Captured>>>,
    /// The NIC's: handshake and reset segments leave through it.
    packet: PacketSocket,
    /// How captured segments go through ingress again.
    replay: Box<dyn Replay>,
    iface: String,
    local_mac: [u8; 6],
    next_ephemeral: u16,
    isn: IsnGenerator,
    config: Config,
    /// Listening ports and their members.
    listeners: Listeners,
    pending: HashMap<FlowKey, Pending>,
    conns: HashMap<FlowKey, Conn>,
    handles: HashMap<u64, FlowKey>,
    time_wait: HashMap<FlowKey, TimeWait>,
    time_wait_for: Duration,
    next_handle: u64,
    stats: SlowStats,
    /// Connections shared across processes, by handle (see `sharing`).
    shared: HashMap<u64, sharing::Shared>,
}

/// Bytes of a plain generated C struct.
fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: T is a plain-data struct from the BPF skeleton; any reader takes its bytes.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// The fast path's current state of a connection.
fn read_conn(tcp: &TcpHandles, key: &tcp_conn_key) -> Option<tcp_conn> {
    let v = tcp.conns.lookup(bytes_of(key), MapFlags::ANY).ok()??;
    // SAFETY: the value is a struct tcp_conn (checked length, any bits).
    (v.len() >= std::mem::size_of::<tcp_conn>())
        .then(|| unsafe { std::ptr::read_unaligned(v.as_ptr().cast()) })
}

/// The window field a segment of `c` announces (as egress writes it: the edge never moves
/// back).
fn window_of(c: &tcp_conn) -> u16 {
    window::no_shrink_field(c)
}

fn map_key(k: &FlowKey) -> tcp_conn_key {
    tcp_conn_key {
        local_ip: u32::from_ne_bytes(k.0.ip().octets()),
        remote_ip: u32::from_ne_bytes(k.1.ip().octets()),
        local_port: k.0.port().to_be(),
        remote_port: k.1.port().to_be(),
    }
}

/// Our timestamp clock (CLOCK_MONOTONIC in ms, as the BPF programs' `bpf_ktime_get_ns`).
fn ts_ms() -> u32 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000) as u32
}

/// How a held segment goes through TCP ingress again once its connection is in the fast path,
/// as if it arrived from the NIC now: checked, applied, acknowledged and handed to the app's
/// port. The backend's ([`crate::backend::replay`]).
pub trait Replay {
    fn replay(&self, frame: &[u8]) -> io::Result<()>;
}

impl SlowPath {
    pub fn new(
        tcp: &TcpHandles,
        iface: &str,
        local_mac: [u8; 6],
        mtu_mss: u16,
        time_wait: Duration,
        ecn: bool,
        replay: Box<dyn Replay>,
    ) -> anyhow::Result<SlowPath> {
        let segs: Rc<RefCell<Vec<Captured>>> = Rc::default();
        let sink = segs.clone();
        let mut builder = RingBufferBuilder::new();
        builder.add(&tcp.slow, move |rec: &[u8]| {
            // struct etran_tcp_slow_seg, as long as what it may hold: len, wire_len, then len
            // bytes of frame.
            if rec.len() >= SLOW_FRAME_AT {
                let word = |o: usize| u32::from_ne_bytes(rec[o..o + 4].try_into().expect("4"));
                let len = word(std::mem::offset_of!(etran_tcp_slow_seg, len)) as usize;
                let wire_len = word(std::mem::offset_of!(etran_tcp_slow_seg, wire_len)) as usize;
                let frame = &rec[SLOW_FRAME_AT..(SLOW_FRAME_AT + len).min(rec.len())];
                let whole = frame.len() == wire_len;
                sink.borrow_mut().push(Captured { frame: frame.to_vec(), whole });
            }
            0
        })?;
        let ring = builder.build().context("opening the slow-path ring buffer")?;
        let packet = PacketSocket::open(iface).context("the slow path's socket")?;
        let config = Config { mss: mtu_mss, ecn, ..Config::default() };
        Ok(SlowPath {
            ring,
            segs,
            packet,
            replay,
            iface: iface.to_string(),
            local_mac,
            next_ephemeral: EPHEMERAL.start,
            isn: IsnGenerator::default(),
            config,
            listeners: Listeners::default(),
            pending: HashMap::new(),
            conns: HashMap::new(),
            handles: HashMap::new(),
            time_wait: HashMap::new(),
            time_wait_for: time_wait,
            next_handle: 1,
            stats: SlowStats::default(),
            shared: HashMap::new(),
        })
    }

    pub fn stats(&self) -> SlowStats {
        self.stats
    }

    pub fn fd(&self) -> RawFd {
        self.ring.epoll_fd()
    }

    fn send(&self, seg: &Segment) {
        if let Err(e) = self.packet.send(&seg.build()) {
            log::warn(format!("slow path: sending to {}: {e}", seg.dst));
        }
    }

    /// `Listen { port }` from the session `owner` whose port is `slot`, showing the kernel
    /// socket `socket` (then others showing it may join: [`Listeners::listen`]); `accepting`:
    /// connections go to it at once (else after [`SlowPath::accepting`]).
    pub fn listen(
        &mut self,
        tcp: &TcpHandles,
        owner: Token,
        slot: u32,
        port: u16,
        socket: Option<SocketId>,
        accepting: bool,
    ) -> Result<(), Refusal> {
        if port == 0 {
            return Err(Refusal::new(libc::EINVAL, "port 0 cannot be listened on"));
        }
        let k = port.to_be_bytes();
        if !self.listeners.contains(port)
            && matches!(tcp.listen.lookup(&k, MapFlags::ANY), Ok(Some(_)))
        {
            return Err(Refusal::new(libc::EADDRINUSE, format!("port {port} is already taken")));
        }
        if !self.listeners.listen(port, owner, slot, socket, accepting)? {
            return Ok(()); // joined: the port is in the fast path's table already
        }
        tcp.listen.update(&k, &slot.to_ne_bytes(), MapFlags::NO_EXIST).map_err(|e| {
            self.listeners.unlisten(port, owner);
            Refusal::new(libc::EIO, format!("inserting listening port {port}: {e}"))
        })?;
        Ok(())
    }

    /// `Accepting { port }` from the session `owner`: connections to the port may go to it
    /// now; the SYNs that waited for such a member are answered.
    pub fn accepting<T>(
        &mut self,
        tcp: &TcpHandles,
        timers: &mut TimerWheel<T>,
        wrap: impl Fn(SlowTimer) -> T,
        owner: Token,
        port: u16,
    ) {
        for (key, seg) in self.listeners.accepting(port, owner) {
            if !self.pending.contains_key(&key) && !self.conns.contains_key(&key) {
                self.on_syn(tcp, timers, &wrap, key, &seg);
            }
        }
    }

    /// `Unlisten { port }` from the session `owner`. Once nobody listens on the port it leaves
    /// `etran_tcp_listen`, so a later SYN to it goes to the kernel, which answers RST
    /// (`ECONNREFUSED` at the peer) unless a kernel socket listens there. The handshakes the
    /// session's connections were running are dropped (the kernel resets their final ACK).
    /// Nothing changes for a port `owner` does not listen on.
    pub fn unlisten<T>(
        &mut self,
        tcp: &TcpHandles,
        timers: &mut TimerWheel<T>,
        owner: Token,
        port: u16,
    ) {
        let Some(free) = self.listeners.unlisten(port, owner) else { return };
        if free {
            let _ = tcp.listen.delete(&port.to_be_bytes());
        }
        let keys: Vec<FlowKey> = self
            .pending
            .iter()
            .filter(|(k, p)| !p.active && p.owner == owner && k.0.port() == port)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.drop_pending(tcp, timers, &k);
        }
    }

    /// Drains the ring buffer and handles every segment.
    pub fn on_readable<T>(
        &mut self,
        tcp: &TcpHandles,
        timers: &mut TimerWheel<T>,
        wrap: impl Fn(SlowTimer) -> T,
        out: &mut Vec<Notify>,
    ) {
        if let Err(e) = crate::loader::drain_ring(&self.ring) {
            log::warn(format!("slow path: reading the ring buffer: {e}"));
        }
        let frames = std::mem::take(&mut *self.segs.borrow_mut());
        for c in frames {
            match Segment::parse(&c.frame) {
                Ok(seg) => {
                    let replay = (c.whole && carries_stream(&seg)).then_some(c.frame);
                    self.on_segment(tcp, timers, &wrap, seg, replay, out)
                }
                Err(e) => log::debug(format!("slow path: unparsable frame: {e:?}")),
            }
        }
    }

    /// Runs the TCP ingress program over a captured frame ([`Replay`]).
    fn replay(&mut self, frame: &[u8]) {
        match self.replay.replay(frame) {
            Ok(()) => self.stats.replayed += 1,
            Err(e) => {
                self.stats.dropped += 1;
                log::warn(format!("slow path: replaying a segment through ingress: {e}"));
            }
        }
    }

    fn on_segment<T>(
        &mut self,
        tcp: &TcpHandles,
        timers: &mut TimerWheel<T>,
        wrap: &impl Fn(SlowTimer) -> T,
        seg: Segment,
        replay: Option<Vec<u8>>,
        out: &mut Vec<Notify>,
    ) {
        let key = (seg.dst, seg.src);
        if self.time_wait.contains_key(&key) && self.on_time_wait(tcp, timers, wrap, &key, &seg) {
            return;
        }
        if let Some(p) = self.pending.get_mut(&key) {
            if let Some(frame) = replay {
                if p.held.len() < MAX_HELD {
                    p.held.push((seg.seq, frame));
                } else {
                    self.stats.dropped += 1;
                }
            }
            let step = p.hs.on_segment(&seg, ts_ms());
            match step.outcome {
                Outcome::Pending => {
                    if let Some(s) = &step.send {
                        self.send(s);
                    }
                }
                Outcome::Established(e) => {
                    // Into the fast path before our ACK (of a SYN-ACK) leaves: the server's
                    // first data may follow it at once.
                    let irs = e.irs;
                    if let Some(mut held) = self.establish(tcp, timers, key, e, out) {
                        if let Some(s) = &step.send {
                            self.send(s);
                        }
                        held.sort_by_key(|(seq, _)| seq.wrapping_sub(irs));
                        for (_, frame) in held {
                            self.replay(&frame);
                        }
                    }
                }
                Outcome::Failed(f) => {
                    if let Some(s) = &step.send {
                        self.send(s);
                    }
                    log::info(format!("handshake {} ← {} failed: {f:?}", key.0, key.1));
                    let errno = match f {
                        Failure::Refused => libc::ECONNREFUSED,
                        Failure::Reset => libc::ECONNRESET,
                        Failure::TimedOut => libc::ETIMEDOUT,
                    };
                    self.fail(tcp, timers, &key, Refusal { errno, message: None }, out);
                }
            }
            return;
        }
        if self.conns.contains_key(&key) {
            // Copied before the connection reached the fast path, drained after.
            match replay {
                Some(frame) => self.replay(&frame),
                None => self.on_established(tcp, &key, &seg, out),
            }
            return;
        }
        if !self.listeners.contains(seg.dst.port()) {
            // No connection and no listener: a listener closed while this segment (say the
            // final ACK of a handshake it had answered) waited in the ring. CLOSED answers
            // with a reset (RFC 9293 3.10.7.1), or the peer would wait on a dead connection.
            if let Some(r) = Segment::reset_for(&seg) {
                self.send(&r);
            }
            return;
        }
        if seg.flags & SYN == 0 || seg.flags & RST != 0 {
            return;
        }
        self.on_syn(tcp, timers, wrap, key, &seg);
    }

    /// A SYN to a listening port: answered for the member whose turn it is, or held until a
    /// member accepts.
    fn on_syn<T>(
        &mut self,
        tcp: &TcpHandles,
        timers: &mut TimerWheel<T>,
        wrap: &impl Fn(SlowTimer) -> T,
        key: FlowKey,
        seg: &Segment,
    ) {
        let OnSyn::Answer { owner, slot } = self.listeners.on_syn(key, seg) else { return };
        let iss = self.isn.isn(key.0, key.1);
        let Ok((hs, synack)) = Handshake::passive(self.config, seg, iss, ts_ms()) else {
            log::debug(format!("slow path: not a SYN from {}", key.1));
            return;
        };
        if let Err(e) =
            tcp.pending.update(bytes_of(&map_key(&key)), &slot.to_ne_bytes(), MapFlags::ANY)
        {
            log::warn(format!("slow path: inserting pending {}: {e}", key.1));
            return;
        }
        let timer = Some(timers.insert(Instant::now() + hs.rto(), wrap(SlowTimer::Handshake(key))));
        self.send(&synack);
        let held = Vec::new();
        self.pending.insert(key, Pending { hs, active: false, owner, slot, timer, held });
    }

    /// Puts the connection into the fast path and tells its session; returns the frames held
    /// for it (None when it could not be inserted: then it was reset).
    fn establish<T>(
        &mut self,
        tcp: &TcpHandles,
        timers: &mut TimerWheel<T>,
        key: FlowKey,
        e: Established,
        out: &mut Vec<Notify>,
    ) -> Option<Vec<(u32, Vec<u8>)>> {
        let mut p = self.pending.remove(&key)?;
        let active = p.active;
        if let Some(t) = p.timer.take() {
            timers.cancel(t);
        }
        let handle = self.next_handle;
        self.next_handle += 1;
        let conn = e.conn(p.slot, handle, self.config.rcv_wnd);
        let mk = map_key(&key);
        // Into conns first: the flow never has a moment where the kernel would see it.
        if let Err(err) = tcp.conns.update(bytes_of(&mk), bytes_of(&conn), MapFlags::ANY) {
            log::warn(format!("slow path: inserting connection {}: {err}", key.1));
            let _ = tcp.pending.delete(bytes_of(&mk));
            self.send(&e.abort(e.snd_nxt(), e.rcv_nxt()));
            self.stats.dropped += p.held.len() as u64;
            return None;
        }
        let _ = tcp.pending.delete(bytes_of(&mk));
        let init = ConnInit {
            local: key.0,
            remote: key.1,
            rx_pos: conn.rx_pos,
            tx_pos: conn.tx_pos,
            send_wnd: conn.snd_wnd.min(conn.cwnd),
            mss: conn.mss,
            rcv_buf: self.config.rcv_wnd,
            snd_buf: SND_BUF,
            sack: e.negotiated.sack,
            snd_seq: conn.snd_nxt,
            rcv_wscale: conn.rcv_wscale,
        };
        log::info(format!("connection {} ← {} established (handle {handle})", key.0, key.1));
        self.conns.insert(key, Conn { est: e, owner: p.owner, handle });
        self.handles.insert(handle, key);
        let event = if active {
            Event::Connected { handle, init }
        } else {
            Event::Accepted { handle, init }
        };
        out.push(Notify { owner: p.owner, event });
        Some(p.held)
    }

    /// Ends a failed handshake; an active open's session is told.
    fn fail<T>(
        &mut self,
        tcp: &TcpHandles,
        timers: &mut TimerWheel<T>,
        key: &FlowKey,
        refusal: Refusal,
        out: &mut Vec<Notify>,
    ) {
        if let Some(p) = self.pending.get(key) {
            if p.active {
                let event = Event::ConnectFailed { remote: key.1, refusal };
                out.push(Notify { owner: p.owner, event });
            }
        }
        self.drop_pending(tcp, timers, key);
    }

    /// `Connect` from the session `owner` whose port is `slot`: sends the SYN.
    #[allow(clippy::too_many_arguments)]
    pub fn connect<T>(
        &mut self,
        tcp: &TcpHandles,
        timers: &mut TimerWheel<T>,
        wrap: impl Fn(SlowTimer) -> T,
        owner: Token,
        slot: u32,
        remote: SocketAddrV4,
        local_port: Option<u16>,
    ) -> Result<(), Refusal> {
        let ip = crate::sys::local_ipv4(&self.iface).ok_or_else(|| {
            Refusal::new(libc::EADDRNOTAVAIL, format!("{} has no IPv4 address", self.iface))
        })?;
        let remote_mac = crate::transport::peer_mac(&self.iface, *remote.ip())?;
        let busy = |this: &SlowPath, l: SocketAddrV4| {
            this.pending.contains_key(&(l, remote))
                || this.conns.contains_key(&(l, remote))
                || this.time_wait.contains_key(&(l, remote))
                || this.listeners.contains(l.port())
        };
        let local = match local_port {
            Some(p) => {
                let l = SocketAddrV4::new(ip, p);
                if busy(self, l) {
                    return Err(Refusal::new(
                        libc::EADDRINUSE,
                        format!("{l} → {remote} is in use"),
                    ));
                }
                l
            }
            None => {
                let span = EPHEMERAL.end - EPHEMERAL.start;
                let mut found = None;
                for _ in 0..span {
                    let p = self.next_ephemeral;
                    self.next_ephemeral =
                        if p + 1 == EPHEMERAL.end { EPHEMERAL.start } else { p + 1 };
                    let l = SocketAddrV4::new(ip, p);
                    if !busy(self, l) {
                        found = Some(l);
                        break;
                    }
                }
                found.ok_or_else(|| Refusal::new(libc::EADDRNOTAVAIL, "no free ephemeral port"))?
            }
        };
        let key = (local, remote);
        let iss = self.isn.isn(local, remote);
        let (hs, syn) =
            Handshake::active(self.config, local, remote, self.local_mac, remote_mac, iss, ts_ms());
        tcp.pending.update(bytes_of(&map_key(&key)), &slot.to_ne_bytes(), MapFlags::ANY).map_err(
            |e| Refusal::new(libc::EIO, format!("inserting pending {local} → {remote}: {e}")),
        )?;
        let timer = Some(timers.insert(Instant::now() + hs.rto(), wrap(SlowTimer::Handshake(key))));
        self.send(&syn);
        let held = Vec::new();
        self.pending.insert(key, Pending { hs, active: true, owner, slot, timer, held });
        Ok(())
    }

    fn drop_pending<T>(&mut self, tcp: &TcpHandles, timers: &mut TimerWheel<T>, key: &FlowKey) {
        if let Some(mut p) = self.pending.remove(key) {
            if let Some(t) = p.timer.take() {
                timers.cancel(t);
            }
            self.stats.dropped += p.held.len() as u64;
        }
        let _ = tcp.pending.delete(bytes_of(&map_key(key)));
    }

    /// A timer of the slow path fired. Returns what sessions must be told (a failed connect).
    pub fn on_timeout<T>(
        &mut self,
        tcp: &TcpHandles,
        timers: &mut TimerWheel<T>,
        wrap: impl Fn(SlowTimer) -> T,
        timer: SlowTimer,
    ) -> Vec<Notify> {
        let mut out = Vec::new();
        let key = match timer {
            SlowTimer::Handshake(key) => key,
            SlowTimer::TimeWait(key) => {
                if !self.resend_fin(timers, &wrap, &key) {
                    self.end_time_wait(tcp, timers, &key);
                }
                return out;
            }
        };
        let Some(p) = self.pending.get_mut(&key) else { return out };
        p.timer = None;
        let step = p.hs.on_timeout(ts_ms());
        if let Some(s) = &step.send {
            self.send(s);
        }
        match step.outcome {
            Outcome::Pending => {
                let p = self.pending.get_mut(&key).expect("still pending");
                let at = Instant::now() + p.hs.rto();
                p.timer = Some(timers.insert(at, wrap(SlowTimer::Handshake(key))));
            }
            _ => {
                log::info(format!("handshake {} ← {} timed out", key.0, key.1));
                let refusal = Refusal::new(libc::ETIMEDOUT, "no answer to the SYN");
                self.fail(tcp, timers, &key, refusal, &mut out);
            }
        }
        out
    }

    /// Takes a connection out of the fast path; returns it with the positions the fast path
    /// reached (snd_nxt, rcv_nxt), its window field and whether it still owed the peer an ACK
    /// (the gen pump finds no connection once it is gone). With `hold` the 4-tuple goes into
    /// `etran_tcp_pending` first, so that none of its segments reaches the kernel (which would
    /// answer with RST).
    fn take_conn(
        &mut self,
        tcp: &TcpHandles,
        key: &FlowKey,
        hold: bool,
    ) -> Option<(Conn, u32, u32, u16, bool)> {
        let c = self.conns.remove(key)?;
        self.handles.remove(&c.handle);
        self.shared.remove(&c.handle);
        let mk = map_key(key);
        let (mut snd_nxt, mut rcv_nxt, mut window) = (c.est.snd_nxt(), c.est.rcv_nxt(), 0);
        let mut owes_ack = false;
        if let Some(cur) = read_conn(tcp, &mk) {
            (snd_nxt, rcv_nxt, window) = (cur.snd_nxt, cur.rcv_nxt, window_of(&cur));
            owes_ack = cur.ack_now != 0 || cur.ack_pending != 0;
        }
        if hold {
            if let Err(e) = tcp.pending.update(bytes_of(&mk), &0u32.to_ne_bytes(), MapFlags::ANY) {
                log::warn(format!("slow path: holding {} in TIME_WAIT: {e}", key.1));
            }
        }
        let _ = tcp.conns.delete(bytes_of(&mk));
        Some((c, snd_nxt, rcv_nxt, window, owes_ack))
    }

    /// Resets a connection (RST at the fast path's positions) and removes it.
    fn abort_conn(&mut self, tcp: &TcpHandles, key: &FlowKey) {
        if let Some((c, snd_nxt, rcv_nxt, ..)) = self.take_conn(tcp, key, false) {
            self.send(&c.est.abort(snd_nxt, rcv_nxt));
        }
    }

    /// The connection `handle`, if `owner` owns it.
    fn owned(&self, owner: Token, handle: u64) -> Option<FlowKey> {
        let key = self.handles.get(&handle)?;
        (self.conns.get(key)?.owner == owner).then_some(*key)
    }

    /// `Release { handle, time_wait }` from `owner`: the connection is closed on the app's side.
    pub fn release<T>(
        &mut self,
        tcp: &TcpHandles,
        timers: &mut TimerWheel<T>,
        wrap: impl Fn(SlowTimer) -> T,
        owner: Token,
        handle: u64,
        time_wait: bool,
    ) {
        let Some(key) = self.owned(owner, handle) else {
            log::debug(format!("slow path: release of unknown connection {handle}"));
            return;
        };
        let (c, snd_nxt, rcv_nxt, window, owes_ack) =
            self.take_conn(tcp, &key, time_wait).expect("owned connection");
        log::info(format!("connection {} ← {} closed (handle {handle})", key.0, key.1));
        if owes_ack {
            // Typically the ACK of the peer's FIN, still waiting for the gen pump.
            self.send(&c.est.ack(snd_nxt, rcv_nxt, window));
        }
        if time_wait {
            let timer =
                timers.insert(Instant::now() + self.time_wait_for, wrap(SlowTimer::TimeWait(key)));
            let tw = TimeWait {
                est: c.est,
                snd_nxt,
                rcv_nxt,
                window,
                timer,
                fin_resent: None,
                peer_fin: true,
            };
            self.time_wait.insert(key, tw);
        }
    }

    /// `Abort { handle }` from `owner`.
    pub fn abort(&mut self, tcp: &TcpHandles, owner: Token, handle: u64) {
        if let Some(key) = self.owned(owner, handle) {
            log::info(format!("connection {} ← {} aborted (handle {handle})", key.0, key.1));
            self.abort_conn(tcp, &key);
        }
    }

    /// A segment of a 4-tuple in TIME_WAIT. Returns false when it is a SYN that ended TIME_WAIT
    /// and must be handled as a new connection.
    fn on_time_wait<T>(
        &mut self,
        tcp: &TcpHandles,
        timers: &mut TimerWheel<T>,
        wrap: &impl Fn(SlowTimer) -> T,
        key: &FlowKey,
        seg: &Segment,
    ) -> bool {
        if self.on_orphan_segment(tcp, timers, wrap, key, seg) {
            return true;
        }
        let tw = self.time_wait.get(key).expect("in TIME_WAIT");
        let ack = tw.est.ack(tw.snd_nxt, tw.rcv_nxt, tw.window);
        let listening = self.listeners.contains(key.0.port());
        match close::time_wait_segment(seg.flags, seg.seq, tw.rcv_nxt, listening) {
            TimeWaitAction::Ignore => {}
            TimeWaitAction::Ack => self.send(&ack),
            TimeWaitAction::AckAndRestart => {
                self.send(&ack);
                self.restart_time_wait(timers, wrap, key);
            }
            TimeWaitAction::Reopen => {
                self.end_time_wait(tcp, timers, key);
                return false;
            }
        }
        true
    }

    /// The TIME_WAIT period of `key` starts again now.
    fn restart_time_wait<T>(
        &mut self,
        timers: &mut TimerWheel<T>,
        wrap: &impl Fn(SlowTimer) -> T,
        key: &FlowKey,
    ) {
        let at = Instant::now() + self.time_wait_for;
        let tw = self.time_wait.get_mut(key).expect("in TIME_WAIT");
        timers.cancel(tw.timer);
        tw.timer = timers.insert(at, wrap(SlowTimer::TimeWait(*key)));
    }

    fn end_time_wait<T>(&mut self, tcp: &TcpHandles, timers: &mut TimerWheel<T>, key: &FlowKey) {
        if let Some(tw) = self.time_wait.remove(key) {
            timers.cancel(tw.timer);
            let _ = tcp.pending.delete(bytes_of(&map_key(key)));
        }
    }

    /// A SYN or RST of an established connection (see the module doc).
    fn on_established(
        &mut self,
        tcp: &TcpHandles,
        key: &FlowKey,
        seg: &Segment,
        out: &mut Vec<Notify>,
    ) {
        let Some(cur) = read_conn(tcp, &map_key(key)) else { return };
        let c = self.conns.get(key).expect("established");
        let challenge = c.est.ack(cur.snd_nxt, cur.rcv_nxt, window_of(&cur));
        if seg.has(RST) {
            match close::check_rst(seg.seq, cur.rcv_nxt, cur.rcv_wnd) {
                RstCheck::Reset => {
                    let (owner, handle) = (c.owner, c.handle);
                    log::info(format!("connection {} ← {} reset by the peer", key.0, key.1));
                    self.take_conn(tcp, key, false);
                    out.push(Notify { owner, event: Event::Reset { handle } });
                }
                RstCheck::ChallengeAck => self.send(&challenge),
                RstCheck::Ignore => {}
            }
        } else if seg.has(SYN) {
            self.send(&challenge);
        }
    }

    /// Removes everything `owner` had: listening ports, handshakes, connections (each aborted
    /// with a RST at the positions the fast path reached, but for shared ones whose stream
    /// can be rebuilt for their other holders: `sharing`).
    pub fn teardown<T>(&mut self, tcp: &TcpHandles, timers: &mut TimerWheel<T>, owner: Token) {
        for port in self.listeners.ports_of(owner) {
            self.unlisten(tcp, timers, owner, port);
        }
        let keys: Vec<FlowKey> =
            self.pending.iter().filter(|(_, p)| p.owner == owner).map(|(k, _)| *k).collect();
        for k in keys {
            self.drop_pending(tcp, timers, &k);
        }
        let keys: Vec<FlowKey> =
            self.conns.iter().filter(|(_, c)| c.owner == owner).map(|(k, _)| *k).collect();
        for k in self.rescue_owned(tcp, keys) {
            self.abort_conn(tcp, &k);
        }
    }

    /// Ends every TIME_WAIT (the daemon stops: nothing may route to it any more).
    pub fn shutdown<T>(&mut self, tcp: &TcpHandles, timers: &mut TimerWheel<T>) {
        let keys: Vec<FlowKey> = self.time_wait.keys().copied().collect();
        for k in keys {
            self.end_time_wait(tcp, timers, &k);
        }
    }
}

/// TCP's control path as the daemon holds it: the slow path over the TCP object's handles.
/// The daemon drives it through [`Control`]; the requests only TCP has (listen, unlisten,
/// connect, release, abort) are its own methods.
pub struct TcpControl {
    handles: TcpHandles,
    slow: SlowPath,
}

impl TcpControl {
    /// Opens the slow path on `iface` (whose address is `local_mac`); SYNs offer `mss`; held
    /// segments go through ingress again by `replay`.
    pub fn new(
        handles: TcpHandles,
        iface: &str,
        local_mac: [u8; 6],
        mss: u16,
        time_wait: Duration,
        ecn: bool,
        replay: Box<dyn Replay>,
    ) -> anyhow::Result<TcpControl> {
        let slow = SlowPath::new(&handles, iface, local_mac, mss, time_wait, ecn, replay)
            .context("starting the slow path")?;
        Ok(TcpControl { handles, slow })
    }

    /// See [`SlowPath::listen`].
    pub fn listen(
        &mut self,
        owner: Token,
        slot: u32,
        port: u16,
        socket: Option<SocketId>,
        accepting: bool,
    ) -> Result<(), Refusal> {
        self.slow.listen(&self.handles, owner, slot, port, socket, accepting)
    }

    /// See [`SlowPath::accepting`].
    pub fn accepting<T>(
        &mut self,
        timers: &mut TimerWheel<T>,
        wrap: impl Fn(SlowTimer) -> T,
        owner: Token,
        port: u16,
    ) {
        self.slow.accepting(&self.handles, timers, wrap, owner, port)
    }

    /// See [`SlowPath::unlisten`].
    pub fn unlisten<T>(&mut self, timers: &mut TimerWheel<T>, owner: Token, port: u16) {
        self.slow.unlisten(&self.handles, timers, owner, port)
    }

    /// See [`SlowPath::connect`].
    pub fn connect<T>(
        &mut self,
        timers: &mut TimerWheel<T>,
        wrap: impl Fn(SlowTimer) -> T,
        owner: Token,
        slot: u32,
        remote: SocketAddrV4,
        local_port: Option<u16>,
    ) -> Result<(), Refusal> {
        self.slow.connect(&self.handles, timers, wrap, owner, slot, remote, local_port)
    }

    /// See [`SlowPath::release`].
    pub fn release<T>(
        &mut self,
        timers: &mut TimerWheel<T>,
        wrap: impl Fn(SlowTimer) -> T,
        owner: Token,
        handle: u64,
        time_wait: bool,
    ) {
        self.slow.release(&self.handles, timers, wrap, owner, handle, time_wait)
    }

    /// See [`SlowPath::abort`].
    pub fn abort(&mut self, owner: Token, handle: u64) {
        self.slow.abort(&self.handles, owner, handle)
    }

    /// See [`SlowPath::share`].
    pub fn share(&mut self, owner: Token, by: Holder, conns: &[(u64, SocketId)], passing: bool) {
        self.slow.share(owner, by, conns, passing)
    }

    /// See [`SlowPath::adopt_passed`].
    pub fn adopt_passed(&mut self, to: Token, slot: u32, by: Holder, id: SocketId) -> Vec<Handed> {
        self.slow.adopt_passed(&self.handles, to, slot, by, id)
    }

    /// See [`SlowPath::forked`].
    pub fn forked(&mut self, pid: u32, pidfd: &OwnedFd, handles: &[u64]) {
        self.slow.forked(pid, pidfd, handles)
    }

    /// See [`SlowPath::adopt`].
    pub fn adopt(&mut self, to: Token, slot: u32, handle: u64, socket: SocketId) -> Vec<Handed> {
        self.slow.adopt(&self.handles, to, slot, handle, socket)
    }

    /// See [`SlowPath::park`].
    pub fn park<T>(
        &mut self,
        timers: &mut TimerWheel<T>,
        wrap: impl Fn(SlowTimer) -> T,
        from: Token,
        handle: u64,
        pid: u32,
        keep: bool,
    ) -> Vec<Handed> {
        self.slow.park(&self.handles, timers, wrap, from, handle, pid, keep)
    }

    /// See [`SlowPath::surrendered`].
    pub fn surrendered(&mut self, from: Token, handle: u64, stream: OwnedFd) -> Vec<Handed> {
        self.slow.surrendered(&self.handles, from, handle, stream)
    }

    /// A session ended: what it was handing over died with it (see `sharing`).
    pub fn forget_sharer(&mut self, owner: Token) -> Vec<Handed> {
        self.slow.forget_sharer(&self.handles, owner)
    }

    /// See [`SlowPath::expire_parked`].
    pub fn expire_parked<T>(&mut self, timers: &mut TimerWheel<T>, wrap: impl Fn(SlowTimer) -> T) {
        self.slow.expire_parked(&self.handles, timers, wrap)
    }
}

impl Control for TcpControl {
    type Timer = SlowTimer;
    type Notice = Notify;

    fn fd(&self) -> RawFd {
        self.slow.fd()
    }

    fn on_readable<T>(
        &mut self,
        timers: &mut TimerWheel<T>,
        wrap: impl Fn(SlowTimer) -> T,
        out: &mut Vec<Notify>,
    ) {
        self.slow.on_readable(&self.handles, timers, wrap, out)
    }

    fn on_timeout<T>(
        &mut self,
        timers: &mut TimerWheel<T>,
        wrap: impl Fn(SlowTimer) -> T,
        timer: SlowTimer,
    ) -> Vec<Notify> {
        self.slow.on_timeout(&self.handles, timers, wrap, timer)
    }

    fn teardown<T>(&mut self, timers: &mut TimerWheel<T>, owner: Token) {
        self.slow.teardown(&self.handles, timers, owner)
    }

    fn shutdown<T>(&mut self, timers: &mut TimerWheel<T>) {
        self.slow.shutdown(&self.handles, timers)
    }

    fn report(&self) -> String {
        let s = self.slow.stats();
        format!(
            "slow path: {} segments replayed through ingress, {} dropped",
            s.replayed, s.dropped
        )
    }
}
