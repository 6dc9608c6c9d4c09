//! The gen pumps: how the daemon emits the work of the transports' generators (ARCHITECTURE.md,
//! "ACKs: the generator"), each through a gen port of its own: TCP's ACKs ([`GenPump`]; all of
//! them in the compat backend; in the native one, the delayed ACKs and the ACKs due at once that
//! the gen hook of the apps' sockets did not emit after an RX batch) and Homa's GRANTs
//! ([`GrantPump`]; in the native backend, those the gen hook left: owed after frames that reached
//! no socket, or behind a key owed nothing, where a hook run ends). On a kernel with gen on
//! demand (patches/0005) the native backend's pumps send no templates for that work: they wake
//! an app's socket, whose gen hook runs in the daemon's context ([`GenWake`]).
//!
//! ACKs are decided in the kernel (`src/bpf/tcp/tcp_gen.h`): ingress marks a connection that owes
//! one, pushes its key on the queue of ACKs due at once (`etran_tcp_ack_queue`) or on the
//! delayed one (`etran_tcp_dack_queue`), at most once per queue, and writes a small record to the
//! `etran_tcp_gen_wake` ring buffer. The ring buffer's descriptor is pollable (the daemon
//! registers it with its mio loop); on readiness [`GenPump::on_readable`] drains the records and,
//! when an ACK is due at once, sends template frames ([`template`]) through its gen port, one per
//! key queued: `etran_tcp_gen` on the port's far side pops one key per frame and turns the frame
//! into that connection's pure ACK for the NIC. The template's first byte tells the program which
//! queue to pop. Nothing sleeps on a fixed period.
//!
//! Delayed-ACK policy: the delayed queue is flushed only at the pump's deadline, [`DELAYED_ACK`]
//! after its first record (the caller's loop waits for [`GenPump::deadline`] and calls
//! [`GenPump::on_deadline`]). Data the app sends before then carries the ACK, and the generator
//! skips the connection (counted as `tcp_gen_settled`). Flushing the ACKs due at once leaves the
//! delayed ones alone: with many connections something is due at once nearly all the time.
//!
//! The gen port: a veth pair the pump creates and deletes, `name` (its own AF_XDP socket, copy
//! mode, transmit only) and `name`p (the generator, drv-mode XDP). A flush is one `sendto` for up
//! to [`MAX_REPEAT`] frames, each costing what an app's frame costs to cross its port. Running
//! the generator with `BPF_PROG_RUN` live frames instead costs about 50 µs per call whatever it
//! carries (the kernel builds and frees a page pool of 64 pages each call): with 100 connections
//! that was most of the daemon's time (README, "Where the time goes").
use std::{
    os::fd::{AsFd, AsRawFd, OwnedFd, RawFd},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use libbpf_rs::{MapCore, MapFlags, MapHandle, RingBuffer, RingBufferBuilder};

use crate::{
    backend::daemon_pair::DaemonPair,
    bpf::{
        homa::types::etran_homa_gen,
        tcp::types::{
            etran_tcp_ack_queued, etran_tcp_gen_template, etran_tcp_gen_wake, etran_tcp_limit,
        },
    },
    transport::{homa::control::HomaHandles, tcp::TcpHandles},
    xsk::{desc, BindMode, Desc, FrameAlloc, Socket, SocketConfig, Umem, UmemConfig},
};

/// How long an ACK not due at once may wait for data to carry it. Well under the minimum RTO
/// (`tcp::rto`), so a delayed ACK never looks like a loss to our own sender. (In the daemon's
/// mio loop, epoll's millisecond timeouts round it up to the next millisecond.)
pub const DELAYED_ACK: Duration = Duration::from_millis(1);

/// The template frame: as long as the longest pure ACK (Ethernet, IPv4, TCP with 40 bytes of
/// options: the timestamp option and three SACK blocks); the generator trims it to the ACK it
/// writes.
pub const TEMPLATE_LEN: usize = etran_tcp_limit::ETRAN_TCP_MAX_HEADERS.0 as usize;

/// The most template frames one flush sends per `sendto` (the gen port's frames and rings).
const MAX_REPEAT: u64 = 1024;

/// Sends one flush may make before leaving what is left to the next wakeup (a queue refilled as
/// fast as it is drained must not starve the loop).
const MAX_CALLS: u32 = 16;

/// The UMEM chunk of a template frame (the smallest AF_XDP takes).
const CHUNK: u32 = 2048;

/// The frame the pump sends to pop queue `q` (an `etran_tcp_ack_queued` bit): as long as the
/// longest pure ACK, its first byte the queue, its Ethernet type the generator's marker.
pub fn template(q: u8) -> [u8; TEMPLATE_LEN] {
    let mut t = [0u8; TEMPLATE_LEN];
    t[0] = q;
    t[12..14]
        .copy_from_slice(&(etran_tcp_gen_template::ETRAN_TCP_GEN_ETHERTYPE.0 as u16).to_be_bytes());
    t
}

/// What the ring-buffer records said since the last drain: keys pushed on each queue.
#[derive(Default)]
struct Wakes {
    immediate: u64,
    delayed: u64,
}

/// The generator's two queues (the value is the template's first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Immediate = etran_tcp_ack_queued::ETRAN_TCP_ACK_IMMEDIATE.0 as isize,
    Delayed = etran_tcp_ack_queued::ETRAN_TCP_ACK_DELAYED.0 as isize,
}

impl Queue {
    fn index(self) -> usize {
        match self {
            Queue::Immediate => 0,
            Queue::Delayed => 1,
        }
    }
}

/// The pump's own port: an AF_XDP socket on one end of a veth pair, the generator on the other.
struct GenPort {
    // Declared before the pair: the socket unbinds before its device goes.
    sock: Socket,
    umem: Umem,
    frames: FrameAlloc,
    batch: Vec<Desc>,
    _pair: DaemonPair,
}

impl GenPort {
    /// Creates the veth pair `name`/`name`p (replacing a stale one left by a crash), attaches
    /// the generator `prog` (its name, for errors) to `name`p and binds a transmit-only socket
    /// on `name`.
    fn open(name: &str, prog_fd: RawFd, prog: &str) -> anyhow::Result<GenPort> {
        // Before the socket: AF_XDP transmits only on a running device with its carrier.
        let pair = DaemonPair::open(name, prog_fd, prog)
            .with_context(|| format!("creating the gen port {name}"))?;
        let n = MAX_REPEAT as u32;
        let umem = Umem::new(UmemConfig {
            frame_count: n,
            frame_size: CHUNK,
            headroom: 0,
            huge_pages: false,
        })?;
        let cfg = SocketConfig {
            rx_size: 0,
            tx_size: n,
            // Binding asks for a fill ring even without RX.
            fill_size: 64,
            comp_size: n,
            bind: BindMode::Copy,
            need_wakeup: true,
            tx_budget: Some(n),
            busy_poll: None,
        };
        let sock = Socket::new(&umem, name, 0, &cfg)
            .with_context(|| format!("binding the gen port's socket on {name}"))?;
        Ok(GenPort {
            sock,
            frames: FrameAlloc::new(&umem),
            umem,
            batch: Vec::with_capacity(n as usize),
            _pair: pair,
        })
    }

    /// Sends up to `n` copies of `frame` with one kick; returns how many went on the TX ring
    /// (fewer when frames are still in flight).
    fn send(&mut self, frame: &[u8], n: u32) -> anyhow::Result<u32> {
        self.reclaim();
        self.batch.clear();
        for _ in 0..n {
            let Some(base) = self.frames.alloc() else { break };
            let addr = base + self.umem.tx_offset();
            // SAFETY: the chunk was just allocated: nothing else uses it.
            unsafe { self.umem.data_mut(addr, frame.len()) }.copy_from_slice(frame);
            self.batch.push(desc(addr, frame.len() as u32));
        }
        let tx = self.sock.tx().expect("the gen port's socket has a TX ring");
        // The TX ring is as large as the frame pool, so every frame fits.
        let queued = tx.produce_from(&self.batch);
        // Where the kernel lacks XDP_MAX_TX_SKB_BUDGET, a sendto sends 32 frames: kick until
        // the ring is empty (each kick runs the frames through the generator synchronously).
        for _ in 0..=(queued / 32) {
            self.sock.kick_tx().context("kicking the gen port")?;
            if self.sock.tx().expect("TX ring").in_flight() == 0 {
                break;
            }
        }
        self.reclaim();
        Ok(queued)
    }

    /// Takes back the frames the kernel finished with.
    fn reclaim(&mut self) {
        self.frames.reclaim(self.sock.comp().expect("the gen port's socket has a completion ring"));
    }
}

/// Work done so far, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PumpStats {
    /// Sends (each one kick of the gen port).
    pub calls: u64,
    /// Template frames sent in them (each pops at most one key).
    pub runs: u64,
    /// Wakeups of an app's socket to run gen on demand ([`GenWake`]: each one `recvfrom`; one
    /// that finds the socket's gen already running runs nothing itself).
    pub wakeups: u64,
}

/// Whether a queue map holds a key (a queue map's lookup is a peek: ENOENT when empty).
fn peek(queue: &MapHandle) -> bool {
    matches!(queue.lookup(&[], MapFlags::ANY), Ok(Some(_)))
}

/// Wakeups a socket of [`GenWake`] may refuse in a row before it is dropped (an unbound
/// socket, whose device went away, refuses every one; a refusal may also be passing).
const MAX_REFUSALS: u32 = 3;

/// Gen on demand (native backend, patches/0005): a `recvfrom` on an AF_XDP socket with a linked
/// `BPF_XSK_GEN` program (its Rx wakeup) runs the program once, up to 64 frames, in the
/// caller's context, straight out of the NIC: no template, no gen port. The pump holds a copy of
/// each app socket of its transport (any of them runs the same program on the same queues) and
/// wakes one instead of sending templates while it has one; the backend adds and removes them
/// ([`GenPump::wake_mut`], [`GrantPump::wake_mut`]). Empty in compat, and on a kernel without
/// the patch (`kernel::has_gen_wakeup`): the templates then.
/// A socket that refuses [`MAX_REFUSALS`] wakeups in a row is dropped, as if its app had
/// closed (the pump sends templates once none is left).
#[derive(Default)]
pub struct GenWake {
    socks: Vec<WakeSock>,
}

/// A socket of [`GenWake`]: its app's slot, and the wakeups it refused in a row.
struct WakeSock {
    slot: u32,
    sock: OwnedFd,
    refused: u32,
}

impl GenWake {
    /// Adds the socket of the app in `slot`.
    pub fn add(&mut self, slot: u32, sock: OwnedFd) {
        self.socks.push(WakeSock { slot, sock, refused: 0 });
    }

    /// Removes the socket of the app in `slot` (it is closing).
    pub fn remove(&mut self, slot: u32) {
        self.socks.retain(|w| w.slot != slot);
    }

    /// The apps' slots whose sockets it holds, in the order it tries them.
    #[cfg(test)]
    fn slots(&self) -> Vec<u32> {
        self.socks.iter().map(|w| w.slot).collect()
    }

    /// Whether it has a socket to wake.
    fn ready(&self) -> bool {
        !self.socks.is_empty()
    }

    /// Runs the gen program once through the first socket that takes the wakeup; false when
    /// none does (none added, or each unbound: its device went away). The sockets that refused
    /// it count one refusal more, and go at [`MAX_REFUSALS`].
    fn wake(&mut self) -> bool {
        let took = self.socks.iter_mut().any(|w| {
            // SAFETY: a zero-length receive into no buffer; the socket is ours.
            let ret = unsafe {
                libc::recvfrom(
                    w.sock.as_raw_fd(),
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
            w.refused = if ret >= 0 { 0 } else { w.refused + 1 };
            ret >= 0
        });
        self.socks.retain(|w| w.refused < MAX_REFUSALS);
        took
    }

    /// Wakes gen while `queued` says keys are left (a run ends at a key owed nothing, or at its
    /// budget), up to [`MAX_CALLS`] runs; counts them in `stats`. False when no socket takes the
    /// wakeup: the caller sends templates instead.
    fn drain(&mut self, stats: &mut PumpStats, queued: impl Fn() -> bool) -> bool {
        for _ in 0..MAX_CALLS {
            if !self.wake() {
                return false;
            }
            stats.wakeups += 1;
            if !queued() {
                break;
            }
        }
        true
    }
}

/// A generator's wake ring buffer, and what its records said since the last drain.
struct WakeRing<T> {
    // Declared before the map it reads.
    ring: RingBuffer<'static>,
    seen: Arc<Mutex<T>>,
    map: MapHandle,
}

impl<T: Default + Send + 'static> WakeRing<T> {
    /// Opens the ring buffer `map` (`what`, for errors); `record` adds each record to `T`.
    fn open(
        map: &libbpf_rs::MapHandle,
        what: &str,
        record: impl Fn(&mut T, &[u8]) + 'static,
    ) -> anyhow::Result<WakeRing<T>> {
        let map = MapHandle::try_from(map)?;
        let seen = Arc::new(Mutex::new(T::default()));
        let sink = seen.clone();
        let mut builder = RingBufferBuilder::new();
        builder.add(&map, move |rec: &[u8]| {
            record(&mut sink.lock().unwrap_or_else(|e| e.into_inner()), rec);
            0
        })?;
        let ring = builder.build().with_context(|| format!("opening {what}"))?;
        Ok(WakeRing { ring, seen, map })
    }

    /// The descriptor to poll for readability. A ring buffer's wakeup can be lost, after which
    /// it stays silent: the caller also drains it without readiness.
    fn fd(&self) -> RawFd {
        self.map.as_fd().as_raw_fd()
    }

    /// Drains the records and takes what they said.
    fn take(&self) -> anyhow::Result<T> {
        crate::loader::drain_ring(&self.ring).context("reading a gen wake ring buffer")?;
        Ok(std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner())))
    }
}

pub struct GenPump {
    // Declared before the maps it reads.
    wakes: WakeRing<Wakes>,
    queues: [MapHandle; 2],
    port: GenPort,
    /// Keys announced and not yet run for, per queue ([`Queue::index`]).
    outstanding: [u64; 2],
    deadline: Option<Instant>,
    stats: PumpStats,
    wake: GenWake,
    /// Set while the delayed ACKs are flushed on demand (etran_tcp_gen_flush; native only).
    gen_flush: Option<MapHandle>,
}

impl GenPump {
    /// Opens the pump on the TCP object of a datapath, with its gen port `port`/`port`p (see
    /// the module doc).
    pub fn new(tcp: &TcpHandles, port: &str) -> anyhow::Result<GenPump> {
        let queues = [MapHandle::try_from(&tcp.ack_queue)?, MapHandle::try_from(&tcp.dack_queue)?];
        let wakes =
            WakeRing::open(&tcp.gen_wake, "the gen wake ring buffer", |s: &mut Wakes, rec| {
                if rec.len() >= std::mem::size_of::<etran_tcp_gen_wake>() {
                    // SAFETY: the record is a struct etran_tcp_gen_wake (checked length, any bits).
                    let w: etran_tcp_gen_wake =
                        unsafe { std::ptr::read_unaligned(rec.as_ptr().cast()) };
                    if w.kind == etran_tcp_ack_queued::ETRAN_TCP_ACK_IMMEDIATE.0 {
                        s.immediate += 1;
                    } else {
                        s.delayed += 1;
                    }
                }
            })?;
        let port = GenPort::open(port, tcp.gen.as_raw_fd(), "etran_tcp_gen")?;
        Ok(GenPump {
            wakes,
            queues,
            port,
            outstanding: [0; 2],
            deadline: None,
            stats: PumpStats::default(),
            wake: GenWake::default(),
            gen_flush: tcp.gen_flush.as_ref().map(MapHandle::try_from).transpose()?,
        })
    }

    /// The app sockets through which gen runs on demand ([`GenWake`]).
    pub fn wake_mut(&mut self) -> &mut GenWake {
        &mut self.wake
    }

    /// The descriptor to poll for readability (the wake ring buffer; see [`WakeRing::fd`]).
    pub fn fd(&self) -> RawFd {
        self.wakes.fd()
    }

    /// Empties queue `q` through the gen hook on demand ([`GenWake`]): the hook pops the ACKs
    /// due at once, and the delayed ones while `etran_tcp_gen_flush` is set. False when it
    /// cannot (no socket to wake, or no flag for the delayed queue): templates then.
    fn drain_on_demand(&mut self, q: Queue) -> anyhow::Result<bool> {
        let queue = &self.queues[q.index()];
        let flag = match q {
            Queue::Immediate => None,
            Queue::Delayed => match &self.gen_flush {
                Some(f) if self.wake.ready() => Some(f),
                _ => return Ok(false),
            },
        };
        let set = |on: u32| -> anyhow::Result<()> {
            if let Some(f) = flag {
                f.update(&0u32.to_ne_bytes(), &on.to_ne_bytes(), MapFlags::ANY)
                    .context("setting etran_tcp_gen_flush")?;
            }
            Ok(())
        };
        set(1)?;
        let drained = self.wake.drain(&mut self.stats, || peek(queue));
        set(0)?;
        Ok(drained)
    }

    /// When [`GenPump::on_deadline`] must be called next (delayed ACKs are waiting).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn stats(&self) -> PumpStats {
        self.stats
    }

    /// Drains the wake records; pumps if an ACK is due at once, else arms the delayed-ACK
    /// deadline.
    pub fn on_readable(&mut self, now: Instant) -> anyhow::Result<()> {
        let w = self.wakes.take()?;
        self.outstanding[0] += w.immediate;
        self.outstanding[1] += w.delayed;
        if w.immediate > 0 {
            self.flush(Queue::Immediate)?;
        }
        if w.delayed > 0 && self.deadline.is_none() {
            self.deadline = Some(now + DELAYED_ACK);
        }
        Ok(())
    }

    /// Flushes delayed ACKs once their deadline passed.
    pub fn on_deadline(&mut self, now: Instant) -> anyhow::Result<()> {
        match self.deadline {
            Some(d) if d <= now => {
                self.deadline = None;
                self.flush(Queue::Delayed)
            }
            _ => Ok(()),
        }
    }

    /// Whether keys are queued (a wake record may have been lost to a full ring buffer; the
    /// daemon's housekeeping pumps then).
    pub fn queued(&self) -> bool {
        [Queue::Immediate, Queue::Delayed].into_iter().any(|q| self.has_keys(q))
    }

    fn has_keys(&self, q: Queue) -> bool {
        peek(&self.queues[q.index()])
    }

    /// Periodic: a wake record lost to a full ring buffer leaves keys queued; sends them.
    pub fn housekeeping(&mut self) -> anyhow::Result<()> {
        if self.queued() {
            self.pump()?;
        }
        Ok(())
    }

    /// Sends every queued ACK now, due or delayed.
    pub fn pump(&mut self) -> anyhow::Result<()> {
        self.deadline = None;
        self.flush(Queue::Immediate)?;
        self.flush(Queue::Delayed)
    }

    /// Empties one queue: sends a template per key announced (up to [`MAX_CALLS`] sends). No peek at the queue after the runs: a key pushed since has its wake record
    /// on the way (which pumps again), and one whose record was lost is the housekeeping's
    /// ([`GenPump::queued`]). A peek is a system call per pump, for nothing nearly always.
    fn flush(&mut self, q: Queue) -> anyhow::Result<()> {
        let i = q.index();
        if self.drain_on_demand(q)? {
            self.outstanding[i] = 0;
            return Ok(());
        }
        let mut repeat = self.outstanding[i].clamp(1, MAX_REPEAT);
        for _ in 0..MAX_CALLS {
            let sent = self.run_queue(q, repeat as u32)?;
            self.outstanding[i] = self.outstanding[i].saturating_sub(u64::from(sent));
            // Nothing went (every frame still in flight): the next wakeup sends the rest.
            if self.outstanding[i] == 0 || sent == 0 {
                break;
            }
            repeat = self.outstanding[i].min(MAX_REPEAT);
        }
        Ok(())
    }

    /// One send of `repeat` templates for the queue of ACKs due at once (each pops at most one
    /// key).
    pub fn run(&mut self, repeat: u32) -> anyhow::Result<()> {
        self.run_queue(Queue::Immediate, repeat).map(drop)
    }

    /// Returns how many templates went out.
    fn run_queue(&mut self, q: Queue, repeat: u32) -> anyhow::Result<u32> {
        let sent = self.port.send(&template(q as u8), repeat)?;
        self.stats.calls += 1;
        self.stats.runs += u64::from(sent);
        Ok(sent)
    }
}

/// How long after a wake the Homa pump looks at its queue again: ingress writes at most one wake
/// record per this (`ETRAN_HOMA_GEN_WAKE_US`), so every key queued is seen within about twice
/// this even when no app sent a template for it.
pub const GRANT_RECHECK: Duration =
    Duration::from_micros(etran_homa_gen::ETRAN_HOMA_GEN_WAKE_US.0 as u64);

/// Templates one Homa flush sends before it looks at the queue again.
const GRANT_BATCH: u32 = 8;

/// Homa's template frame: a GRANT's length, its Ethernet type the generator's marker.
pub fn grant_template() -> [u8; GRANT_TEMPLATE_LEN] {
    let mut t = [0u8; GRANT_TEMPLATE_LEN];
    t[12..14].copy_from_slice(&(etran_homa_gen::ETRAN_HOMA_GEN_ETHERTYPE.0 as u16).to_be_bytes());
    t
}

/// The length of Homa's template (Ethernet, IPv4 and a GRANT).
pub const GRANT_TEMPLATE_LEN: usize = etran_homa_gen::ETRAN_HOMA_GEN_TEMPLATE_LEN.0 as usize;

/// The Homa gen pump: runs `etran_homa_gen` (`src/bpf/homa/homa_gen.h`), which turns each
/// template into the GRANT of the RPC at the head of the gen queue. Apps send templates of their
/// own with the frames of the pass that received the DATA (the GRANT then leaves as early as an
/// app-written one did; on native the gen hook sends them first, in the NAPI poll that brought
/// the DATA); the pump is what sends the GRANTs of an app that does not: ingress
/// wakes it at most once per [`GRANT_RECHECK`], and it drains the queue then and again
/// [`GRANT_RECHECK`] later, as long as keys are left.
pub struct GrantPump {
    woken: WakeRing<u64>,
    queue: MapHandle,
    port: GenPort,
    deadline: Option<Instant>,
    stats: PumpStats,
    wake: GenWake,
}

impl GrantPump {
    /// Opens the pump on the Homa object of a datapath, with its gen port `port`/`port`p.
    pub fn new(homa: &HomaHandles, port: &str) -> anyhow::Result<GrantPump> {
        let queue = MapHandle::try_from(&homa.gen_queue)?;
        let woken =
            WakeRing::open(&homa.gen_wake, "the Homa gen wake ring buffer", |n: &mut u64, _| {
                *n += 1
            })?;
        let port = GenPort::open(port, homa.gen.as_raw_fd(), "etran_homa_gen")?;
        Ok(GrantPump {
            woken,
            queue,
            port,
            deadline: None,
            stats: PumpStats::default(),
            wake: GenWake::default(),
        })
    }

    /// The app sockets through which gen runs on demand ([`GenWake`]).
    pub fn wake_mut(&mut self) -> &mut GenWake {
        &mut self.wake
    }

    /// The descriptor to poll for readability (the wake ring buffer; see [`WakeRing::fd`]).
    pub fn fd(&self) -> RawFd {
        self.woken.fd()
    }

    /// When [`GrantPump::on_deadline`] must be called next (the queue is looked at again).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn stats(&self) -> PumpStats {
        self.stats
    }

    /// Drains the wake records; if any came, sends the queued GRANTs and looks again
    /// [`GRANT_RECHECK`] later.
    pub fn on_readable(&mut self, now: Instant) -> anyhow::Result<()> {
        if self.woken.take()? > 0 {
            self.pump()?;
            self.deadline = Some(now + GRANT_RECHECK);
        }
        Ok(())
    }

    /// At the deadline: sends what was queued since (keys pushed without a wake record), and
    /// looks again later while there was any.
    pub fn on_deadline(&mut self, now: Instant) -> anyhow::Result<()> {
        match self.deadline {
            Some(d) if d <= now => {
                self.deadline = None;
                if self.queued() {
                    self.pump()?;
                    self.deadline = Some(now + GRANT_RECHECK);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether keys are queued (a peek at the queue).
    pub fn queued(&self) -> bool {
        peek(&self.queue)
    }

    /// Periodic: sends what a lost wake record left queued.
    pub fn housekeeping(&mut self) -> anyhow::Result<()> {
        if self.queued() {
            self.pump()?;
        }
        Ok(())
    }

    /// Sends templates while keys are queued (up to [`MAX_CALLS`] sends): nothing when the
    /// apps' templates took them all, as they nearly always do.
    pub fn pump(&mut self) -> anyhow::Result<()> {
        // On demand when a socket can be woken (native): no templates.
        if self.wake.ready()
            && self.queued()
            && self.wake.drain(&mut self.stats, || peek(&self.queue))
        {
            return Ok(());
        }
        let t = grant_template();
        for _ in 0..MAX_CALLS {
            if !self.queued() {
                break;
            }
            let sent = self.port.send(&t, GRANT_BATCH)?;
            self.stats.calls += 1;
            self.stats.runs += u64::from(sent);
            if sent == 0 {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::Cell, os::unix::net::UnixStream};

    use super::{GenWake, PumpStats, MAX_CALLS, MAX_REFUSALS};

    /// A socket whose zero-length `recvfrom` succeeds (its peer closed: end of stream), as an
    /// AF_XDP socket's Rx wakeup does.
    fn takes_wakeups() -> std::os::fd::OwnedFd {
        let (a, _b) = UnixStream::pair().unwrap();
        a.into()
    }

    /// One whose `recvfrom` fails (nothing to read, non-blocking; while the peer it returns
    /// stays open), as an unbound socket's does.
    fn refuses_wakeups() -> (std::os::fd::OwnedFd, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (a.into(), b)
    }

    #[test]
    fn gen_wake_runs_gen_while_keys_are_left_through_a_socket_that_takes_it() {
        let mut wake = GenWake::default();
        let mut stats = PumpStats::default();
        // No socket: the caller sends templates.
        assert!(!wake.drain(&mut stats, || true));
        assert_eq!(stats.wakeups, 0);

        // A socket that refuses is skipped for the next one.
        let (refusing, _peer) = refuses_wakeups();
        wake.add(1, refusing);
        assert!(!wake.drain(&mut stats, || true));
        wake.add(2, takes_wakeups());
        let left = Cell::new(2);
        let queued = || {
            left.set(left.get() - 1);
            left.get() >= 0
        };
        assert!(wake.drain(&mut stats, queued));
        assert_eq!(stats.wakeups, 3, "a run per peek that found keys, and the one before");

        // Keys that never run out: at most MAX_CALLS runs per drain.
        stats = PumpStats::default();
        assert!(wake.drain(&mut stats, || true));
        assert_eq!(stats.wakeups, u64::from(MAX_CALLS));

        // Its app closed: no socket takes the wakeup any more.
        wake.remove(2);
        assert!(!wake.drain(&mut stats, || true));
    }

    /// A socket that refuses the wakeup (unbound: its device went away) is tried again a few
    /// times, then dropped: a wakeup no longer costs a failed `recvfrom` for it first.
    #[test]
    fn gen_wake_drops_a_socket_that_keeps_refusing() {
        let mut wake = GenWake::default();
        let mut stats = PumpStats::default();
        let (refusing, _peer) = refuses_wakeups();
        wake.add(1, refusing);
        wake.add(2, takes_wakeups());
        for _ in 0..MAX_REFUSALS {
            assert_eq!(wake.slots(), [1, 2]);
            assert!(wake.drain(&mut stats, || false), "the second takes it");
        }
        assert_eq!(wake.slots(), [2], "dropped after {MAX_REFUSALS} refusals in a row");
        // One that takes a wakeup between refusals is kept: only refusals in a row count.
        let (flaky, peer) = refuses_wakeups();
        let mut wake = GenWake::default();
        wake.add(3, flaky);
        for _ in 0..MAX_REFUSALS - 1 {
            assert!(!wake.drain(&mut stats, || false));
        }
        drop(peer); // end of stream: its recvfrom succeeds now
        assert!(wake.drain(&mut stats, || false));
        assert_eq!(wake.slots(), [3]);
    }
}
