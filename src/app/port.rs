//! An app's end of its port: the AF_XDP socket and memfd UMEM the daemon created for it
//! ([`crate::app::link::Registration`]), mapped through [`crate::xsk`].
//!
//! The daemon registered the memfd as the socket's UMEM (`geometry.frame_size` chunks,
//! `geometry.headroom`, rings sized from `geometry`) and left the socket unbound. Here the memfd
//! is mapped `MAP_SHARED` ([`Umem::from_memfd`]: the very pages the kernel pinned), the four
//! rings are mapped from the socket, and the socket is bound on the app side of the port (queue
//! 0, need-wakeup, copy mode: [`Socket::adopt`]; binding needs no privilege, and mapping first
//! is what kernels before 6.4 require) unless the daemon bound it (native backend: to a queue
//! of the NIC). TX frames start `geometry.tx_headroom` bytes into their chunk (native: egress
//! grows them into it); completions return the address given, within the chunk. The frames are split in two: the first half feeds the
//! fill ring (RX), the second half is the TX pool, reclaimed from the completion ring.
//!
//! RX frames: the transport's ingress program grew each frame at its head for its metadata
//! (TCP's `etran_tcp_rx_meta`, Homa's `etran_homa_rx_meta`: the app's transport's [`RxMeta`];
//! see `app_meta_grow` in src/bpf/common/backend.h), so a descriptor's first [`RxMeta::LEN`]
//! bytes are the metadata and the Ethernet header follows; the payload offset counts from the
//! Ethernet header.
//!
//! The receive budget ([`RxBudget`]): ingress hands the port no more frames than the fill ring
//! was given (nor more than the port's veth ring holds, which the kernel counts itself), so the
//! app publishes what it put on the fill ring as it goes.
use std::{
    io,
    mem::offset_of,
    os::fd::{AsFd, AsRawFd},
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{bail, Context};

use crate::{
    app::link::Registration,
    bpf::tcp::types::etran_port_rx,
    transport::RxMeta,
    xsk::{desc, Desc, FrameAlloc, Mode, Socket, Statistics, Umem},
};

/// Descriptors handled per ring operation.
const BATCH: u32 = 64;
/// TX kicks one flush makes at most while the kernel says more frames wait (see
/// [`AppPort::flush`]).
const KICKS_PER_FLUSH: u32 = 8;

/// Counters of the port's own checks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PortStats {
    pub rx_frames: u64,
    /// Frames shorter than their metadata, or whose payload lies outside the frame.
    pub rx_malformed: u64,
    pub tx_frames: u64,
    /// Sends refused for want of a TX frame or ring slot.
    pub tx_full: u64,
    /// TX kicks (`sendto`), and those that came back EAGAIN (the kernel stopped: the frames
    /// left stay on the ring for the next) or EBUSY (in copy mode the device dropped a frame,
    /// `NET_XMIT_DROP`, a full veth queue for one: AF_XDP completes it all the same, so the
    /// app takes it for sent; its data is recovered as a loss, and its consumption report, a
    /// read position, by the next frame's).
    pub tx_kicks: u64,
    pub tx_kick_eagain: u64,
    pub tx_kick_ebusy: u64,
    /// The socket's own counters (`XDP_STATISTICS`), read by [`AppPort::stats`]: RX frames it
    /// dropped (`rx_dropped`, `rx_ring_full`, `rx_fill_ring_empty_descs`) never reached the app,
    /// though ingress accepted them.
    pub xdp: Statistics,
    /// The socket runs in zero copy (`XDP_OPTIONS`: the native backend's daemon bound it so).
    pub zero_copy: bool,
}

pub struct AppPort {
    sock: Socket,
    umem: Umem,
    tx_frames: FrameAlloc,
    /// Frames written but not yet on the TX ring.
    pending: Vec<Desc>,
    rx_frame_count: u32,
    /// Received frames not yet back on the fill ring: the kernel publishes how far it consumed
    /// the fill ring lazily, so the ring can look full for a moment; they go at the next poll.
    refill: Vec<u64>,
    /// Where a TX frame starts in its chunk ([`crate::xsk::Geometry::tx_headroom`]).
    tx_headroom: u32,
    budget: RxBudget,
    stats: PortStats,
    /// The link rate the datapath paces the app's Homa DATA at ([`AppPort::homa_link_mbps`]).
    homa_link_mbps: u32,
    /// The owner and payload bytes of each TX frame handed over, by its index in the TX pool
    /// ([`AppPort::track_last`]), kept until it completes; empty when the engine does not
    /// count its frames ([`AppPort::tracks`]).
    owners: Vec<Option<(u64, u32)>>,
    /// Tracked frames that completed since [`AppPort::take_completed`].
    completed: Vec<(u64, u32)>,
}

/// The app's half of the port's receive budget (`struct etran_port_rx`, mapped shared with
/// ingress): the running total of descriptors put on the fill ring.
struct RxBudget {
    map: memmap2::MmapRaw,
    posted: u64,
}

impl RxBudget {
    fn map(fd: &impl AsRawFd) -> anyhow::Result<RxBudget> {
        let len = std::mem::size_of::<etran_port_rx>();
        let map = memmap2::MmapOptions::new()
            .len(len)
            .map_raw(fd.as_raw_fd())
            .context("mapping the port's receive budget")?;
        Ok(RxBudget { map, posted: 0 })
    }

    fn posted(&mut self, n: usize) {
        self.posted += n as u64;
        // SAFETY: the mapping holds a whole `etran_port_rx`, whose u64 fields are aligned; the
        // kernel only reads this one.
        let posted = unsafe {
            &*self.map.as_ptr().add(offset_of!(etran_port_rx, posted)).cast::<AtomicU64>()
        };
        posted.store(self.posted, Ordering::Release);
    }
}

impl AppPort {
    /// Maps the registration's UMEM and its first socket's rings, and fills the fill ring.
    pub fn open(reg: Registration) -> anyhow::Result<AppPort> {
        let g = reg.geometry;
        let (bind, fd) =
            reg.xsks.into_iter().next().context("the daemon passed no AF_XDP socket")?;
        let (umem, sock) = g
            .take_over(reg.umem.as_fd(), fd, &reg.port, reg.port_ifindex, bind)
            .context("the daemon's port")?;
        let frame_count = umem.frame_count();
        // RX gets what the fill ring can hold (leaving TX at least a quarter), TX the rest.
        let rx_frame_count = (frame_count - frame_count / 4).min(g.fill_size);
        let tx_frames = FrameAlloc::with_range(
            g.frame_size,
            rx_frame_count,
            (frame_count - rx_frame_count).min(g.tx_size).min(g.comp_size),
        );
        // Paced, the kernel's packet queue holds frames until their time: the engine counts
        // what each connection has there (`transport::tcp::small_queues`).
        let owners = if reg.paced { vec![None; tx_frames.capacity() as usize] } else { Vec::new() };
        let mut port = AppPort {
            sock,
            umem,
            tx_frames,
            pending: Vec::new(),
            rx_frame_count,
            refill: Vec::new(),
            tx_headroom: g.tx_headroom,
            budget: RxBudget::map(&reg.rx_budget)?,
            stats: PortStats::default(),
            homa_link_mbps: reg.homa_link_mbps,
            owners,
            completed: Vec::new(),
        };
        let addrs: Vec<u64> =
            (0..rx_frame_count).map(|i| u64::from(i) * u64::from(g.frame_size)).collect();
        let fill = port.sock.fill().context("no fill ring")?;
        if fill.produce_from(&addrs) != rx_frame_count {
            bail!("the fill ring took fewer than {rx_frame_count} frames");
        }
        port.budget.posted(addrs.len());
        port.sock.wake_rx()?;
        Ok(port)
    }

    pub fn socket(&self) -> &Socket {
        &self.sock
    }

    /// The longest frame one TX descriptor may hold: the UMEM's chunk less the TX headroom.
    pub fn frame_size(&self) -> u32 {
        self.umem.frame_size() - self.tx_headroom
    }

    /// The port's counters, with the socket's read now (zeros if the kernel refuses).
    pub fn stats(&self) -> PortStats {
        PortStats {
            xdp: self.sock.statistics().unwrap_or_default(),
            zero_copy: self.sock.mode() == Mode::ZeroCopy,
            ..self.stats
        }
    }

    /// The TX frame pool (all of it free again once nothing is in flight: a leak check).
    pub fn tx_frames(&self) -> &FrameAlloc {
        &self.tx_frames
    }

    /// Frames owned by the receive side (all on the fill ring or the RX ring between polls).
    pub fn rx_frame_count(&self) -> u32 {
        self.rx_frame_count
    }

    /// Hands every received frame's metadata, payload and whole frame (its TCP header holds
    /// SACK blocks) to `f`, then gives the frames back to the fill ring. Returns how many frames were handled.
    pub fn poll_rx<M: RxMeta>(&mut self, mut f: impl FnMut(&M, &[u8], &[u8])) -> io::Result<usize> {
        let mut total = 0;
        let mut done = Vec::with_capacity(BATCH as usize);
        self.refill_fill();
        loop {
            done.clear();
            let rx = self.sock.rx().expect("adopt maps RX");
            let peek = rx.peek(BATCH);
            if peek.is_empty() {
                break;
            }
            for d in peek.iter() {
                done.push(d);
            }
            peek.release();
            let umem = self.umem.clone();
            for d in &done {
                self.stats.rx_frames += 1;
                match frame_parts(&umem, d) {
                    Some((meta, payload, frame)) => f(&meta, payload, frame),
                    None => self.stats.rx_malformed += 1,
                }
            }
            self.refill.extend(done.iter().map(|d| self.umem.frame_base(d.addr)));
            self.refill_fill();
            total += done.len();
        }
        self.sock.wake_rx()?;
        Ok(total)
    }

    /// Gives the frames waiting in `refill` back to the fill ring (as many as it has room for).
    fn refill_fill(&mut self) {
        if self.refill.is_empty() {
            return;
        }
        let fill = self.sock.fill().expect("adopt maps the fill ring");
        let n = fill.produce_from(&self.refill) as usize;
        self.refill.drain(..n);
        self.budget.posted(n);
    }

    /// Writes one TX frame with `f` (given the whole frame buffer; it returns the length to
    /// send, or `None` to send nothing). The frame goes out at the next [`AppPort::flush`].
    /// Returns what `f` returned; `Ok(None)` too when no TX frame is free.
    pub fn send_with(
        &mut self,
        f: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> io::Result<Option<usize>> {
        self.reclaim();
        let Some(addr) = self.tx_frames.alloc() else {
            self.stats.tx_full += 1;
            return Ok(None);
        };
        let room = self.frame_size() as usize;
        let at = addr + u64::from(self.tx_headroom);
        // SAFETY: the frame was just allocated from the TX pool: nothing else uses it.
        let buf = unsafe { self.umem.data_mut(at, room) };
        match f(buf) {
            Some(len) if len > 0 && len <= room => {
                self.pending.push(desc(at, len as u32));
                Ok(Some(len))
            }
            _ => {
                self.tx_frames.free(addr);
                Ok(None)
            }
        }
    }

    /// Whether the RX ring holds frames (one load of its producer index: cheap enough to spin
    /// on).
    pub fn rx_ready(&mut self) -> bool {
        self.sock.rx().expect("adopt maps RX").available(1) > 0
    }

    /// Frames written and not yet flushed.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The link rate (Mbit/s) at which the datapath paces this app's Homa DATA through its
    /// socket's packet queue (the daemon says at registration; 0: it does not): its frames then
    /// complete only when they leave.
    pub fn homa_link_mbps(&self) -> u32 {
        self.homa_link_mbps
    }

    /// TX frames written and not yet completed (flushed or not), as of the last reclaim.
    pub fn tx_unfinished(&self) -> u32 {
        self.tx_frames.capacity() - self.tx_frames.available()
    }

    /// Whether a TX frame is free (after reclaiming completions).
    pub fn can_send(&mut self) -> bool {
        self.reclaim();
        self.tx_frames.available() > 0
    }

    /// Puts the written frames on the TX ring and kicks the kernel if it asks for it.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let tx = self.sock.tx().expect("adopt maps TX");
            // The TX pool is no larger than the TX ring, so every pending frame fits.
            let n = tx.produce_from(&self.pending) as usize;
            self.stats.tx_frames += n as u64;
            self.pending.drain(..n);
        }
        // In copy mode one kick sends at most 32 frames and says EAGAIN when more wait: the
        // rest would sit on the ring until the next flush, which a sleeping app may not make
        // for a while. So kick again, a bounded number of times (EAGAIN also means the
        // socket's send buffer is full, which another kick at once will not cure). Copy mode
        // always asks for a kick; one with nothing on the ring would be a wasted system call
        // (an RPC socket passing often made ~30 per RPC).
        for _ in 0..KICKS_PER_FLUSH {
            let queued = self.sock.tx().expect("adopt maps TX").in_flight();
            if queued == 0 || !self.sock.tx_needs_wakeup() {
                break;
            }
            self.stats.tx_kicks += 1;
            match self.sock.try_kick_tx()? {
                Some(libc::EAGAIN) => self.stats.tx_kick_eagain += 1,
                Some(libc::EBUSY) => {
                    self.stats.tx_kick_ebusy += 1;
                    break;
                }
                _ => break,
            }
        }
        self.reclaim();
        Ok(())
    }

    /// Takes back the frames the kernel finished sending (and notes the tracked ones).
    fn reclaim(&mut self) {
        let comp = self.sock.comp().expect("adopt maps the completion ring");
        if self.owners.is_empty() {
            return self.tx_frames.reclaim(comp);
        }
        let (owners, completed) = (&mut self.owners, &mut self.completed);
        self.tx_frames.reclaim_each(comp, |i| completed.extend(owners[i].take()));
    }

    /// Tracks the frames handed over from now on, as [`AppPort::tracks`] does (the frames
    /// already handed over complete untracked): the engine asked for its frames to be batched,
    /// and they wait in the kernel before they leave.
    pub fn track_frames(&mut self) {
        if self.owners.is_empty() {
            self.owners = vec![None; self.tx_frames.capacity() as usize];
        }
    }

    /// Whether the daemon said TX frames may wait in the kernel's packet queue (`Registered {
    /// paced }`): the engine then tracks its frames until they complete.
    pub fn tracks(&self) -> bool {
        !self.owners.is_empty()
    }

    /// Tracks the frame [`AppPort::send_with`] wrote last: `owner`'s, of `bytes` payload
    /// bytes; [`AppPort::take_completed`] hands both back once it completed. Nothing without
    /// [`AppPort::tracks`].
    pub fn track_last(&mut self, owner: u64, bytes: u32) {
        let last = self.pending.last().and_then(|d| self.tx_frames.index_of(d.addr));
        if let Some(slot) = last.and_then(|i| self.owners.get_mut(i)) {
            *slot = Some((owner, bytes));
        }
    }

    /// The owners and bytes of the tracked frames that completed since the last call.
    pub fn take_completed(&mut self) -> std::vec::Drain<'_, (u64, u32)> {
        self.reclaim();
        self.completed.drain(..)
    }
}

/// The metadata, payload and whole frame (headers included) of a received frame, if they lie
/// within it.
fn frame_parts<'a, M: RxMeta>(umem: &'a Umem, d: &Desc) -> Option<(M, &'a [u8], &'a [u8])> {
    // SAFETY: the frame came off the RX ring, so it is ours until it goes back to the fill
    // ring after the caller is done; the range lies within the frame (Umem::data checks).
    let whole = unsafe { umem.data(d.addr, d.len as usize) };
    let meta = M::read(whole)?;
    let frame = &whole[M::LEN..];
    let (start, len) = meta.payload();
    let payload = frame.get(start..start + len)?;
    Some((meta, payload, frame))
}

/// The port is pollable: readable when RX has frames (edge-triggered: drain with
/// [`AppPort::poll_rx`] before waiting again).
impl mio::event::Source for AppPort {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.sock.register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.sock.reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.sock.deregister(registry)
    }
}
