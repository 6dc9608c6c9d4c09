//! The gen pump: how the compat backend emits the ACK generator's work (ARCHITECTURE.md, "ACKs:
//! the generator").
//!
//! ACKs are decided in the kernel (`src/bpf/tcp/tcp_gen.h`): ingress marks a connection that owes
//! one, pushes its key on the queue of ACKs due at once (`etran_tcp_ack_queue`) or on the
//! delayed one (`etran_tcp_dack_queue`), at most once per queue, and writes a small record to the
//! `etran_tcp_gen_wake` ring buffer. The ring buffer's descriptor is pollable (the daemon
//! registers it with its mio loop); on readiness [`GenPump::on_readable`] drains the records and,
//! when an ACK is due at once, runs `etran_tcp_gen` with `BPF_PROG_RUN` live frames over a
//! template frame, `repeat` = the keys queued: each run pops one key and sends that connection's
//! pure ACK to the NIC. The template's first byte tells the program which queue to pop. Nothing
//! sleeps on a fixed period.
//!
//! Delayed-ACK policy: the delayed queue is flushed only at the pump's deadline, [`DELAYED_ACK`]
//! after its first record (the caller's loop waits for [`GenPump::deadline`] and calls
//! [`GenPump::on_deadline`]). Data the app sends before then carries the ACK, and the generator
//! skips the connection (counted as `tcp_gen_settled`). Flushing the ACKs due at once leaves the
//! delayed ones alone: with many connections something is due at once nearly all the time.
//!
//! Cheap calls: a live-frames run with `repeat` > 1 of a program attached nowhere waits for an
//! RCU grace period (≈ 24 ms, reference/machine-facts.md), so the pump attaches the generator
//! (skb-mode XDP) to a spare veth pair it creates and deletes. The program passes any frame that
//! really arrives there; the pair is never up.
use std::{
    os::fd::{AsFd, AsRawFd, OwnedFd, RawFd},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use libbpf_rs::{MapCore, MapFlags, MapHandle, RingBuffer, RingBufferBuilder};

use crate::{
    bpf::tcp::types::{etran_tcp_ack_queued, etran_tcp_gen_wake, etran_tcp_limit},
    loader::{kernel, AttachMode},
    netlink::Netlink,
    netns::NetNs,
    transport::tcp::TcpHandles,
};

/// How long an ACK not due at once may wait for data to carry it. Well under the minimum RTO
/// (`tcp::rto`), so a delayed ACK never looks like a loss to our own sender. (In the daemon's
/// mio loop, epoll's millisecond timeouts round it up to the next millisecond.)
pub const DELAYED_ACK: Duration = Duration::from_millis(1);

/// The template frame: as long as the longest pure ACK (Ethernet, IPv4, TCP with 40 bytes of
/// options: the timestamp option and three SACK blocks); the generator trims it to the ACK it
/// writes.
pub const TEMPLATE_LEN: usize = etran_tcp_limit::ETRAN_TCP_MAX_HEADERS.0 as usize;

/// The most runs one `BPF_PROG_RUN` call asks for.
const MAX_REPEAT: u64 = 1024;

/// Calls one pump may make before leaving what is left to the next wakeup (a queue refilled as
/// fast as it is drained must not starve the loop).
const MAX_CALLS: u32 = 16;

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

/// A veth pair that exists only to carry the generator's attachment.
struct Spare {
    ifindex: u32,
}

impl Drop for Spare {
    fn drop(&mut self) {
        // Deleting one end deletes the pair and the attachment with it.
        if let Ok(mut nl) = Netlink::open() {
            let _ = nl.delete_link(self.ifindex);
        }
    }
}

/// Work done so far, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PumpStats {
    /// `BPF_PROG_RUN` calls.
    pub calls: u64,
    /// Program runs asked for in them.
    pub runs: u64,
}

pub struct GenPump {
    // Declared before the maps it reads.
    ring: RingBuffer<'static>,
    wakes: Arc<Mutex<Wakes>>,
    wake_map: MapHandle,
    queues: [MapHandle; 2],
    prog: OwnedFd,
    spare: Option<Spare>,
    /// Keys announced and not yet run for, per queue ([`Queue::index`]).
    outstanding: [u64; 2],
    deadline: Option<Instant>,
    stats: PumpStats,
}

impl GenPump {
    /// Opens the pump on the TCP object of a datapath. With `spare`, creates the veth pair
    /// `spare`/`spare`p (replacing a stale one left by a crash) and attaches the generator to it
    /// so that calls are cheap; without, calls with `repeat` > 1 are slow (for measurements).
    pub fn new(tcp: &TcpHandles, spare: Option<&str>) -> anyhow::Result<GenPump> {
        let prog = tcp.gen.try_clone().context("duplicating the gen program descriptor")?;
        let queues = [MapHandle::try_from(&tcp.ack_queue)?, MapHandle::try_from(&tcp.dack_queue)?];
        let wake_map = MapHandle::try_from(&tcp.gen_wake)?;
        let wakes = Arc::new(Mutex::new(Wakes::default()));
        let sink = wakes.clone();
        let mut builder = RingBufferBuilder::new();
        builder.add(&wake_map, move |rec: &[u8]| {
            if rec.len() >= std::mem::size_of::<etran_tcp_gen_wake>() {
                // SAFETY: the record is a struct etran_tcp_gen_wake (checked length, any bits).
                let w: etran_tcp_gen_wake =
                    unsafe { std::ptr::read_unaligned(rec.as_ptr().cast()) };
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                if w.kind == etran_tcp_ack_queued::ETRAN_TCP_ACK_IMMEDIATE.0 {
                    s.immediate += 1;
                } else {
                    s.delayed += 1;
                }
            }
            0
        })?;
        let ring = builder.build().context("opening the gen wake ring buffer")?;
        let spare = match spare {
            Some(name) => Some(attach_spare(name, prog.as_raw_fd())?),
            None => None,
        };
        Ok(GenPump {
            ring,
            wakes,
            wake_map,
            queues,
            prog,
            spare,
            outstanding: [0; 2],
            deadline: None,
            stats: PumpStats::default(),
        })
    }

    /// The descriptor to poll for readability (the wake ring buffer). A ring buffer's wakeup
    /// can be lost, after which it stays silent: the caller also drains it without readiness.
    pub fn fd(&self) -> RawFd {
        self.wake_map.as_fd().as_raw_fd()
    }

    /// When [`GenPump::on_deadline`] must be called next (delayed ACKs are waiting).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The ifindex the generator is attached to, if any.
    pub fn spare_ifindex(&self) -> Option<u32> {
        self.spare.as_ref().map(|s| s.ifindex)
    }

    pub fn stats(&self) -> PumpStats {
        self.stats
    }

    /// Drains the wake records; pumps if an ACK is due at once, else arms the delayed-ACK
    /// deadline.
    pub fn on_readable(&mut self, now: Instant) -> anyhow::Result<()> {
        crate::loader::drain_ring(&self.ring).context("reading the gen wake ring buffer")?;
        let w = std::mem::take(&mut *self.wakes.lock().unwrap_or_else(|e| e.into_inner()));
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
        // A queue map's lookup is a peek: ENOENT when empty.
        matches!(self.queues[q.index()].lookup(&[], MapFlags::ANY), Ok(Some(_)))
    }

    /// Sends every queued ACK now, due or delayed.
    pub fn pump(&mut self) -> anyhow::Result<()> {
        self.deadline = None;
        self.flush(Queue::Immediate)?;
        self.flush(Queue::Delayed)
    }

    /// Empties one queue: runs the generator `repeat` = keys announced (up to [`MAX_CALLS`]
    /// calls). No peek at the queue after the runs: a key pushed since has its wake record
    /// on the way (which pumps again), and one whose record was lost is the housekeeping's
    /// ([`GenPump::queued`]). A peek is a system call per pump, for nothing nearly always.
    fn flush(&mut self, q: Queue) -> anyhow::Result<()> {
        let i = q.index();
        let mut repeat = self.outstanding[i].clamp(1, MAX_REPEAT);
        for _ in 0..MAX_CALLS {
            self.run_queue(q, repeat as u32)?;
            self.outstanding[i] = self.outstanding[i].saturating_sub(repeat);
            if self.outstanding[i] == 0 {
                break;
            }
            repeat = self.outstanding[i].min(MAX_REPEAT);
        }
        Ok(())
    }

    /// One `BPF_PROG_RUN` call of `repeat` runs over the queue of ACKs due at once (each pops
    /// at most one key).
    pub fn run(&mut self, repeat: u32) -> anyhow::Result<()> {
        self.run_queue(Queue::Immediate, repeat)
    }

    fn run_queue(&mut self, q: Queue, repeat: u32) -> anyhow::Result<()> {
        let mut template = [0u8; TEMPLATE_LEN];
        template[0] = q as u8;
        crate::xsk::run_live_frames(self.prog.as_fd(), &template, 0, repeat)
            .context("BPF_PROG_RUN of etran_tcp_gen (live frames)")?;
        self.stats.calls += 1;
        self.stats.runs += u64::from(repeat);
        Ok(())
    }
}

/// Creates the veth pair `name`/`name`p (down, no addresses) and attaches the program to it.
fn attach_spare(name: &str, prog_fd: RawFd) -> anyhow::Result<Spare> {
    let mut nl = Netlink::open()?;
    if let Some(stale) = nl.link(name)? {
        nl.delete_link(stale.index)?;
    }
    let here = NetNs::current()?;
    let peer = format!("{name}p");
    nl.add_veth(name, [0x02, 0xe7, 0, 0, 0, 1], &peer, [0x02, 0xe7, 0, 0, 0, 2], &here, 1)
        .with_context(|| format!("creating the gen pump's spare veth pair {name}"))?;
    let spare = Spare { ifindex: nl.index(name)? };
    kernel::attach(spare.ifindex, prog_fd, AttachMode::Skb)
        .with_context(|| format!("attaching etran_tcp_gen to {name}"))?;
    Ok(spare)
}
