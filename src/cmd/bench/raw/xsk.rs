//! AF_XDP ends of `etran bench raw`: TX, RX-drop, reflector, echo client, and the
//! `BPF_PROG_RUN` live-frames generator.
use std::{
    os::fd::{AsFd, OwnedFd},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::Context;
use hdrhistogram::Histogram;

use super::{
    chain::AppSide,
    end::{End, Params, Report, Setup, XskInfo, TX_BUDGET},
};
use crate::{
    cmd::bench::support::{latency_histogram, now_ns, Ctl, UDP_PAYLOAD},
    xsk::{desc, run_live_frames, BusyPoll, FrameAlloc, Socket, SocketConfig, Umem, UmemConfig},
};

/// Busy polling for receivers that run their NIC's receive processing.
const BUSY_POLL: BusyPoll = BusyPoll { usecs: 20, budget: 64 };

pub(super) fn umem(frames: u32, p: Params) -> anyhow::Result<Umem> {
    Umem::new(UmemConfig {
        frame_count: frames,
        frame_size: p.frame_size,
        headroom: 0,
        huge_pages: true,
    })
}

/// Rings for a socket that both receives and transmits (reflector, echo client).
fn duplex_config(busy_poll: bool) -> SocketConfig {
    SocketConfig {
        busy_poll: busy_poll.then_some(BUSY_POLL),
        rx_size: 2048,
        tx_size: 2048,
        fill_size: 4096,
        comp_size: 4096,
        tx_budget: Some(TX_BUDGET),
        ..Default::default()
    }
}

/// Where an end's socket comes from.
#[derive(Clone, Copy)]
pub(super) enum Src<'a> {
    /// Its own, on this interface, steered to by the row's programs.
    Iface(&'a str),
    /// A chain's app port, steered to by the port's own `xsk_redirect`.
    Port(&'a AppSide),
}

/// The end's UMEM (its own: `frames` frames) and socket (its own: `cfg`).
fn open_socket(
    src: Src,
    frames: u32,
    p: Params,
    cfg: &SocketConfig,
    setup: &Setup,
) -> anyhow::Result<(Umem, Socket)> {
    match src {
        Src::Iface(iface) => {
            let um = umem(frames, p)?;
            let s = Socket::new(&um, iface, setup.queue, cfg)?;
            Ok((um, s))
        }
        Src::Port(app) => app.take_over(),
    }
}

/// Gives the kernel frames `frames` (by index) to receive into and points the row's steering
/// program at the socket for its queue (a port's socket is in its port's already).
fn receive_into(
    s: &mut Socket,
    um: &Umem,
    frames: std::ops::Range<u64>,
    setup: &Setup,
    src: Src,
) -> anyhow::Result<()> {
    let addrs: Vec<u64> = frames.map(|i| i * u64::from(um.frame_size())).collect();
    s.fill().expect("own fill ring").produce_from(&addrs);
    match src {
        Src::Iface(_) => setup.programs()?.insert(setup.queue, s),
        Src::Port(_) => Ok(()),
    }
}

/// Has the kernel send what the TX ring holds (copy mode transmits only when kicked).
fn flush_tx(s: &mut Socket) -> anyhow::Result<()> {
    if s.tx().expect("own TX ring").in_flight() > 0 {
        s.wake_tx().context("kicking TX")?;
    }
    Ok(())
}

/// An end's report with its socket's statistics.
fn with_stats(mut report: Report, s: &Socket) -> Report {
    report.stats = s.statistics().ok();
    report
}

/// AF_XDP TX as fast as possible: every UMEM frame holds the template once; descriptors
/// recycle through the completion ring. Counts completions as `tx`.
pub(super) struct XskTx {
    s: Socket,
    alloc: FrameAlloc,
    len: u32,
    batch: u32,
    report: Report,
}

impl XskTx {
    pub(super) fn open(src: Src, frame: &[u8], p: Params, setup: Setup) -> anyhow::Result<Self> {
        let cfg = SocketConfig {
            rx_size: 0,
            tx_size: 2048,
            fill_size: 64,
            comp_size: 4096,
            tx_budget: Some(TX_BUDGET),
            ..Default::default()
        };
        let (um, s) = open_socket(src, 4096, p, &cfg, &setup)?;
        for i in 0..um.frame_count() {
            let a = u64::from(i) * u64::from(p.frame_size);
            // SAFETY: no frame has been handed to the kernel yet.
            unsafe { um.data_mut(a, frame.len()) }.copy_from_slice(frame);
        }
        let report = Report { xsk: Some(XskInfo::of(&s)), ..Default::default() };
        let alloc = FrameAlloc::new(&um);
        Ok(XskTx { s, alloc, len: frame.len() as u32, batch: p.batch, report })
    }
}

impl End for XskTx {
    fn step(&mut self, ctl: &Ctl) -> anyhow::Result<bool> {
        let done = reclaim(&mut self.s, &mut self.alloc);
        if done > 0 {
            ctl.tx.fetch_add(u64::from(done), Ordering::Relaxed);
        }
        let want = self.batch.min(self.alloc.available());
        if want > 0 {
            let mut r = self.s.tx().expect("TX ring").reserve(want);
            for i in 0..r.len() {
                r.set(i, desc(self.alloc.alloc().expect("counted available"), self.len));
            }
            r.submit();
        }
        flush_tx(&mut self.s)?;
        Ok(done > 0 || want > 0)
    }

    fn finish(self: Box<Self>) -> Report {
        with_stats(self.report, &self.s)
    }
}

/// AF_XDP RX that drops: descriptors go straight back to the fill ring; frame data is never
/// touched. Counts frames of the expected size as `rx` (others, e.g. IPv6 neighbour
/// discovery, separately).
pub(super) struct XskRx {
    s: Socket,
    size: u32,
    busy_poll: bool,
    report: Report,
}

impl XskRx {
    pub(super) fn open(src: Src, p: Params, setup: Setup) -> anyhow::Result<Self> {
        let cfg = SocketConfig {
            rx_size: 8192,
            tx_size: 0,
            fill_size: 8192,
            comp_size: 64,
            busy_poll: setup.busy_poll.then_some(BUSY_POLL),
            ..Default::default()
        };
        let (um, mut s) = open_socket(src, 16384, p, &cfg, &setup)?;
        receive_into(&mut s, &um, 0..u64::from(setup.lent), &setup, src)?;
        let report = Report { xsk: Some(XskInfo::of(&s)), ..Default::default() };
        Ok(XskRx { s, size: p.size, busy_poll: setup.busy_poll, report })
    }
}

impl End for XskRx {
    fn step(&mut self, ctl: &Ctl) -> anyhow::Result<bool> {
        if self.busy_poll {
            self.s.kick_rx()?;
        }
        let rings = self.s.rings();
        let (fill, rx) = (rings.fill.expect("fill"), rings.rx.expect("rx"));
        // Drain up to 4096 frames at a time: this loop does almost nothing per frame, so big
        // batches keep it off the kernel's back.
        let pk = rx.peek(4096);
        if pk.is_empty() {
            if self.s.fill_needs_wakeup() {
                self.s.kick_rx()?;
            }
            return Ok(false);
        }
        let mut r = fill.reserve(pk.len());
        let n = r.len();
        let mut good = 0u64;
        for i in 0..n {
            let d = pk.get(i);
            good += u64::from(d.len == self.size);
            r.set(i, d.addr);
        }
        r.submit();
        pk.release_first(n);
        self.report.other += u64::from(n) - good;
        self.report.rx += good;
        ctl.rx.fetch_add(good, Ordering::Relaxed);
        Ok(true)
    }

    fn finish(self: Box<Self>) -> Report {
        with_stats(self.report, &self.s)
    }
}

/// Reflects every received frame back with its MAC addresses swapped (the echo server). Counts
/// reflected frames as `rx` when `count` (one-sided; on the testbed the client counts).
pub(super) struct XskReflect {
    s: Socket,
    um: Umem,
    batch: u32,
    count: bool,
    busy_poll: bool,
    report: Report,
}

impl XskReflect {
    pub(super) fn open(src: Src, p: Params, count: bool, setup: Setup) -> anyhow::Result<Self> {
        let cfg = duplex_config(setup.busy_poll);
        let (um, mut s) = open_socket(src, 16384, p, &cfg, &setup)?;
        receive_into(&mut s, &um, 0..4096, &setup, src)?;
        let report = Report { xsk: Some(XskInfo::of(&s)), ..Default::default() };
        Ok(XskReflect { s, um, batch: p.batch, count, busy_poll: setup.busy_poll, report })
    }
}

impl End for XskReflect {
    fn step(&mut self, ctl: &Ctl) -> anyhow::Result<bool> {
        if self.busy_poll {
            self.s.kick_rx()?;
        }
        let um = &self.um;
        let rings = self.s.rings();
        let (fill, comp, rx, tx) = (
            rings.fill.expect("fill"),
            rings.comp.expect("comp"),
            rings.rx.expect("rx"),
            rings.tx.expect("tx"),
        );
        // Sent frames go back to the fill ring.
        let c = comp.peek(4096);
        let mut r = fill.reserve(c.len());
        let n = r.len();
        for i in 0..n {
            r.set(i, c.get(i));
        }
        r.submit();
        c.release_first(n);
        // Received frames go out again.
        let pk = rx.peek(self.batch);
        let mut t = tx.reserve(pk.len());
        let m = t.len();
        for i in 0..m {
            let d = pk.get(i);
            if d.len >= 12 {
                // SAFETY: a received frame is ours until we hand it to TX below.
                let h = unsafe { um.data_mut(d.addr, 12) };
                let mut tmp = [0u8; 6];
                tmp.copy_from_slice(&h[0..6]);
                h.copy_within(6..12, 0);
                h[6..12].copy_from_slice(&tmp);
            }
            t.set(i, d);
        }
        t.submit();
        pk.release_first(m);
        if self.count && m > 0 {
            self.report.rx += u64::from(m);
            ctl.rx.fetch_add(u64::from(m), Ordering::Relaxed);
        }
        flush_tx(&mut self.s)?;
        Ok(n > 0 || m > 0)
    }

    fn finish(self: Box<Self>) -> Report {
        with_stats(self.report, &self.s)
    }
}

/// Sends timestamped frames keeping a window in flight, and times their return.
pub(super) struct XskEchoClient {
    s: Socket,
    um: Umem,
    alloc: FrameAlloc,
    hist: Histogram<u64>,
    batch: u32,
    len: u32,
    window: EchoWindow,
    seq: u64,
    busy_poll: bool,
    report: Report,
}

impl XskEchoClient {
    pub(super) fn open(src: Src, frame: &[u8], p: Params, setup: Setup) -> anyhow::Result<Self> {
        let cfg = duplex_config(setup.busy_poll);
        let (um, mut s) = open_socket(src, 8192, p, &cfg, &setup)?;
        // Frames 0..4096 transmit, 4096..8192 receive.
        let alloc = FrameAlloc::with_range(p.frame_size, 0, 4096);
        for i in 0..4096u64 {
            // SAFETY: not yet handed to the kernel.
            unsafe { um.data_mut(i * u64::from(p.frame_size), frame.len()) }.copy_from_slice(frame);
        }
        receive_into(&mut s, &um, 4096..8192, &setup, src)?;
        let report = Report { xsk: Some(XskInfo::of(&s)), ..Default::default() };
        Ok(XskEchoClient {
            s,
            um,
            alloc,
            hist: latency_histogram(),
            batch: p.batch,
            len: frame.len() as u32,
            window: EchoWindow::new(p.batch),
            seq: 0,
            busy_poll: setup.busy_poll,
            report,
        })
    }
}

impl End for XskEchoClient {
    fn step(&mut self, ctl: &Ctl) -> anyhow::Result<bool> {
        if self.busy_poll {
            self.s.kick_rx()?;
        }
        reclaim(&mut self.s, &mut self.alloc);
        let um = &self.um;
        let rings = self.s.rings();
        let (fill, rx, tx) =
            (rings.fill.expect("fill"), rings.rx.expect("rx"), rings.tx.expect("tx"));
        let pk = rx.peek(self.batch);
        let got_any = !pk.is_empty();
        if got_any {
            let now = now_ns();
            let mut r = fill.reserve(pk.len());
            let n = r.len();
            let mut got = 0;
            for i in 0..n {
                let d = pk.get(i);
                if d.len == self.len {
                    // SAFETY: received frames are ours until refilled below.
                    let data = unsafe { um.data(d.addr, d.len as usize) };
                    let ts = u64::from_ne_bytes(
                        data[UDP_PAYLOAD + 8..UDP_PAYLOAD + 16].try_into().expect("8 bytes"),
                    );
                    let _ = self.hist.record(now.saturating_sub(ts).max(1));
                    got += 1;
                }
                r.set(i, d.addr);
            }
            r.submit();
            pk.release_first(n);
            self.window.returned(got);
            self.report.other += u64::from(n) - got;
            self.report.rx += got;
            ctl.rx.fetch_add(got, Ordering::Relaxed);
        }
        let want = (self.window.room() as u32).min(self.alloc.available());
        if want > 0 {
            let now = now_ns();
            let mut r = tx.reserve(want);
            for i in 0..r.len() {
                let a = self.alloc.alloc().expect("counted available");
                // SAFETY: allocated, not yet submitted.
                let pl = unsafe { um.data_mut(a + UDP_PAYLOAD as u64, 16) };
                pl[0..8].copy_from_slice(&self.seq.to_ne_bytes());
                pl[8..16].copy_from_slice(&now.to_ne_bytes());
                self.seq += 1;
                r.set(i, desc(a, self.len));
            }
            let k = r.len();
            r.submit();
            self.window.sent(u64::from(k));
            ctl.tx.fetch_add(u64::from(k), Ordering::Relaxed);
        }
        flush_tx(&mut self.s)?;
        Ok(got_any || want > 0)
    }

    fn finish(mut self: Box<Self>) -> Report {
        self.report.stats = self.s.statistics().ok();
        self.report.hist = Some(self.hist);
        self.report.lost = self.window.lost;
        self.report
    }
}

/// An echo client's frames in flight: sent, back, and given up for lost.
pub(super) struct EchoWindow {
    /// Frames kept in flight: 4 × batch, 32..1024.
    window: u64,
    batch: u64,
    sent: u64,
    back: u64,
    pub(super) lost: u64,
    last_progress: Instant,
}

impl EchoWindow {
    pub(super) fn new(batch: u32) -> EchoWindow {
        EchoWindow {
            window: u64::from((batch * 4).clamp(32, 1024)),
            batch: u64::from(batch),
            sent: 0,
            back: 0,
            lost: 0,
            last_progress: Instant::now(),
        }
    }

    pub(super) fn sent(&mut self, n: u64) {
        self.sent += n;
    }

    pub(super) fn returned(&mut self, n: u64) {
        if n > 0 {
            self.back += n;
            self.last_progress = Instant::now();
        }
    }

    /// How many frames may go out now (at most a batch). Whatever is still out after 50 ms of
    /// silence is counted lost first.
    pub(super) fn room(&mut self) -> u64 {
        let out = self.sent - self.back - self.lost;
        if out > 0 && self.last_progress.elapsed() > Duration::from_millis(50) {
            self.lost += out;
            self.last_progress = Instant::now();
        }
        self.window.saturating_sub(self.sent - self.back - self.lost).min(self.batch)
    }
}

/// Returns the frames the kernel finished sending to `alloc`; how many.
fn reclaim(s: &mut Socket, alloc: &mut FrameAlloc) -> u32 {
    let c = s.comp().expect("own completion ring").peek(4096);
    for a in c.iter() {
        alloc.free(a);
    }
    let n = c.len();
    c.release();
    n
}

/// `BPF_PROG_RUN` live-frames generator: XDP_TX of the template out of `iface`, `setup.burst`
/// frames per call. Its thread must stay in the namespace of `iface` (the kernel looks the
/// interface up there on every call).
pub(super) struct Gen {
    prog: OwnedFd,
    frame: Vec<u8>,
    ifindex: u32,
    burst: u32,
}

impl Gen {
    pub(super) fn open(iface: &str, frame: &[u8], setup: Setup) -> anyhow::Result<Self> {
        let ifindex = crate::sys::ifindex(iface)?;
        let prog = setup.programs()?.pktgen_fd()?;
        let gen = Gen { prog, frame: frame.to_vec(), ifindex, burst: setup.burst };
        gen.run(1)?;
        Ok(gen)
    }

    fn run(&self, repeat: u32) -> anyhow::Result<()> {
        run_live_frames(self.prog.as_fd(), &self.frame, self.ifindex, repeat)
            .context("BPF_PROG_RUN of xsk_pktgen (live frames)")
    }
}

impl End for Gen {
    fn step(&mut self, ctl: &Ctl) -> anyhow::Result<bool> {
        self.run(self.burst)?;
        ctl.tx.fetch_add(u64::from(self.burst), Ordering::Relaxed);
        Ok(true)
    }

    fn finish(self: Box<Self>) -> Report {
        Report::default()
    }
}
