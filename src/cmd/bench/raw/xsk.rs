//! AF_XDP workers of `etran bench raw`: TX, RX-drop, reflector, echo client, and the
//! `BPF_PROG_RUN` live-frames generator.
use super::*;

/// Frames a receive-only socket lends the kernel when its loop has a CPU of its own. The frames
/// cycle through the FIFO fill ring, so each one's first cache line (where the kernel copies the
/// frame) and page are touched once per round: 1024 of them stay in cache and TLB; with 8192 the
/// copy missed, and rx-drop ran 25–40 % slower.
const RX_FRAMES_HOT: u64 = 1024;
/// ... and when the loop shares its CPU with the sender: it refills only when it gets the CPU
/// back, so the kernel needs a deeper reserve or it drops frames on an empty fill ring.
const RX_FRAMES_SHARED: u64 = 8192;

/// Busy polling for receivers that run their NIC's receive processing.
const BUSY_POLL: BusyPoll = BusyPoll { usecs: 20, budget: 64 };

pub(super) fn umem(frames: u32) -> anyhow::Result<Umem> {
    Umem::new(UmemConfig {
        frame_count: frames,
        frame_size: FRAME_SIZE,
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

/// Gives the kernel frames `frames` (by index) to receive into and steers queue 0 of the
/// socket's interface to it. Traffic stops reaching the socket when the program is dropped.
fn receive_into(s: &mut Socket, frames: std::ops::Range<u64>) -> anyhow::Result<XskProgram> {
    let addrs: Vec<u64> = frames.map(|i| i * u64::from(FRAME_SIZE)).collect();
    s.fill().expect("own fill ring").produce_from(&addrs);
    let mut prog = XskProgram::load(0)?;
    prog.attach_redirect(s.ifindex())?;
    prog.insert(0, s)?;
    Ok(prog)
}

/// AF_XDP TX as fast as possible: every UMEM frame holds the template once; descriptors
/// recycle through the completion ring. Counts completions as `tx`.
pub(super) fn xsk_tx_worker<'a>(
    pl: Place,
    iface: String,
    frame: Vec<u8>,
    p: Params,
) -> Worker<'a, Report> {
    Box::new(move |ctl: &Ctl| {
        pl.enter()?;
        let um = umem(4096)?;
        let cfg = SocketConfig {
            rx_size: 0,
            tx_size: 2048,
            fill_size: 64,
            comp_size: 4096,
            tx_budget: Some(TX_BUDGET),
            ..Default::default()
        };
        let mut s = Socket::new(&um, &iface, 0, &cfg)?;
        for i in 0..um.frame_count() {
            let a = u64::from(i) * u64::from(FRAME_SIZE);
            // SAFETY: no frame has been handed to the kernel yet.
            unsafe { um.data_mut(a, frame.len()) }.copy_from_slice(&frame);
        }
        let mut alloc = FrameAlloc::new(&um);
        let len = frame.len() as u32;
        let mut report = Report { xsk: Some(XskInfo::of(&s)), ..Default::default() };
        if !ctl.ready() {
            return Ok(report);
        }
        while !ctl.stopped() {
            let done = {
                let c = s.comp().expect("own completion ring").peek(4096);
                for a in c.iter() {
                    alloc.free(a);
                }
                let n = c.len();
                c.release();
                n
            };
            if done > 0 {
                ctl.tx.fetch_add(u64::from(done), Ordering::Relaxed);
            }
            let want = p.batch.min(alloc.available());
            if want > 0 {
                let tx = s.tx().expect("TX ring");
                let mut r = tx.reserve(want);
                for i in 0..r.len() {
                    r.set(i, desc(alloc.alloc().expect("counted available"), len));
                }
                r.submit();
            }
            if s.tx().expect("TX ring").in_flight() > 0 {
                s.wake_tx().context("kicking TX")?;
            }
        }
        report.stats = s.statistics().ok();
        Ok(report)
    })
}

/// AF_XDP RX that drops: descriptors go straight back to the fill ring; frame data is never
/// touched. Counts frames of the expected size as `rx` (others, e.g. IPv6 neighbour
/// discovery, separately).
pub(super) fn xsk_rx_worker<'a>(pl: Place, iface: String, p: Params) -> Worker<'a, Report> {
    Box::new(move |ctl: &Ctl| {
        pl.enter()?;
        let share = pl.share;
        let um = umem(16384)?;
        let cfg = SocketConfig {
            rx_size: 8192,
            tx_size: 0,
            fill_size: 8192,
            comp_size: 64,
            busy_poll: pl.busy_poll.then_some(BUSY_POLL),
            ..Default::default()
        };
        let mut s = Socket::new(&um, &iface, 0, &cfg)?;
        let lent = if share { RX_FRAMES_SHARED } else { RX_FRAMES_HOT };
        let prog = receive_into(&mut s, 0..lent)?;
        let mut report = Report { xsk: Some(XskInfo::of(&s)), ..Default::default() };
        if !ctl.ready() {
            return Ok(report);
        }
        // Drain up to 4096 frames at a time: this loop does almost nothing per
        // frame, so big batches keep it off the kernel's back.
        let batch = 4096;
        while !ctl.stopped() {
            if pl.busy_poll {
                s.kick_rx()?;
            }
            let rings = s.rings();
            let (fill, rx) = (rings.fill.expect("fill"), rings.rx.expect("rx"));
            let pk = rx.peek(batch);
            if pk.is_empty() {
                if s.fill_needs_wakeup() {
                    s.kick_rx()?;
                }
                relax(share);
                continue;
            }
            let mut r = fill.reserve(pk.len());
            let n = r.len();
            let mut good = 0u64;
            for i in 0..n {
                let d = pk.get(i);
                good += u64::from(d.len == p.size);
                r.set(i, d.addr);
            }
            r.submit();
            pk.release_first(n);
            report.other += u64::from(n) - good;
            ctl.rx.fetch_add(good, Ordering::Relaxed);
            if share {
                relax(true);
            }
        }
        report.stats = s.statistics().ok();
        drop(prog);
        Ok(report)
    })
}

/// Reflects every received frame back with its MAC addresses swapped (the echo server). Counts
/// reflected frames as `rx` when `count` (one-sided; on the testbed the client counts).
pub(super) fn xsk_reflect_worker<'a>(
    pl: Place,
    iface: String,
    p: Params,
    count: bool,
) -> Worker<'a, Report> {
    Box::new(move |ctl: &Ctl| {
        pl.enter()?;
        let share = pl.share;
        let um = umem(16384)?;
        let mut s = Socket::new(&um, &iface, 0, &duplex_config(pl.busy_poll))?;
        let prog = receive_into(&mut s, 0..4096)?;
        let mut report = Report { xsk: Some(XskInfo::of(&s)), ..Default::default() };
        if !ctl.ready() {
            return Ok(report);
        }
        while !ctl.stopped() {
            if pl.busy_poll {
                s.kick_rx()?;
            }
            let rings = s.rings();
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
            let pk = rx.peek(p.batch);
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
            if count && m > 0 {
                ctl.rx.fetch_add(u64::from(m), Ordering::Relaxed);
            }
            if s.tx().expect("tx").in_flight() > 0 {
                s.wake_tx()?;
            }
            if share {
                relax(true);
            }
        }
        report.stats = s.statistics().ok();
        drop(prog);
        Ok(report)
    })
}

/// Sends timestamped frames keeping a window in flight, and times their return.
pub(super) fn xsk_echo_client_worker<'a>(
    pl: Place,
    iface: String,
    frame: Vec<u8>,
    p: Params,
) -> Worker<'a, Report> {
    Box::new(move |ctl: &Ctl| {
        pl.enter()?;
        let share = pl.share;
        let um = umem(8192)?;
        let mut s = Socket::new(&um, &iface, 0, &duplex_config(pl.busy_poll))?;
        // Frames 0..4096 transmit, 4096..8192 receive.
        let mut alloc = FrameAlloc::with_range(FRAME_SIZE, 0, 4096);
        for i in 0..4096u64 {
            // SAFETY: not yet handed to the kernel.
            unsafe { um.data_mut(i * u64::from(FRAME_SIZE), frame.len()) }.copy_from_slice(&frame);
        }
        let prog = receive_into(&mut s, 4096..8192)?;
        let mut hist = latency_histogram();
        let mut report = Report { xsk: Some(XskInfo::of(&s)), ..Default::default() };
        if !ctl.ready() {
            return Ok(report);
        }
        let window = u64::from(echo_window(p.batch));
        let (mut sent, mut back, mut seq) = (0u64, 0u64, 0u64);
        let mut last_progress = Instant::now();
        let len = frame.len() as u32;
        while !ctl.stopped() {
            if pl.busy_poll {
                s.kick_rx()?;
            }
            let rings = s.rings();
            let (fill, comp, rx, tx) = (
                rings.fill.expect("fill"),
                rings.comp.expect("comp"),
                rings.rx.expect("rx"),
                rings.tx.expect("tx"),
            );
            let c = comp.peek(4096);
            for a in c.iter() {
                alloc.free(a);
            }
            c.release();
            let pk = rx.peek(p.batch);
            if !pk.is_empty() {
                let now = now_ns();
                let mut r = fill.reserve(pk.len());
                let n = r.len();
                let mut got = 0;
                for i in 0..n {
                    let d = pk.get(i);
                    if d.len == len {
                        // SAFETY: received frames are ours until refilled below.
                        let data = unsafe { um.data(d.addr, d.len as usize) };
                        let ts = u64::from_ne_bytes(
                            data[UDP_PAYLOAD + 8..UDP_PAYLOAD + 16].try_into().expect("8 bytes"),
                        );
                        let _ = hist.record(now.saturating_sub(ts).max(1));
                        got += 1;
                    }
                    r.set(i, d.addr);
                }
                r.submit();
                pk.release_first(n);
                back += got;
                report.other += u64::from(n) - got;
                ctl.rx.fetch_add(got, Ordering::Relaxed);
                last_progress = Instant::now();
            }
            let outstanding = sent - back - report.lost;
            if outstanding > 0 && last_progress.elapsed() > Duration::from_millis(50) {
                // Whatever is still out after 50 ms of silence is lost.
                report.lost += outstanding;
                last_progress = Instant::now();
            }
            let room = window.saturating_sub(sent - back - report.lost);
            let want = (room.min(u64::from(p.batch)) as u32).min(alloc.available());
            if want > 0 {
                let now = now_ns();
                let mut r = tx.reserve(want);
                for i in 0..r.len() {
                    let a = alloc.alloc().expect("counted available");
                    // SAFETY: allocated, not yet submitted.
                    let pl = unsafe { um.data_mut(a + UDP_PAYLOAD as u64, 16) };
                    pl[0..8].copy_from_slice(&seq.to_ne_bytes());
                    pl[8..16].copy_from_slice(&now.to_ne_bytes());
                    seq += 1;
                    r.set(i, desc(a, len));
                }
                let k = r.len();
                r.submit();
                sent += u64::from(k);
                ctl.tx.fetch_add(u64::from(k), Ordering::Relaxed);
            }
            if s.tx().expect("tx").in_flight() > 0 {
                s.wake_tx()?;
            }
            if share {
                relax(true);
            }
        }
        report.stats = s.statistics().ok();
        report.hist = Some(hist);
        drop(prog);
        Ok(report)
    })
}

/// Frames the echo clients keep in flight.
pub(super) fn echo_window(batch: u32) -> u32 {
    (batch * 4).clamp(32, 1024)
}

/// `BPF_PROG_RUN` live-frames generator: XDP_TX of the template out of `iface`.
pub(super) fn gen_worker<'a>(pl: Place, iface: String, frame: Vec<u8>) -> Worker<'a, Report> {
    Box::new(move |ctl: &Ctl| {
        pl.enter()?;
        let ifindex = crate::sys::ifindex(&iface)?;
        let mut prog = XskProgram::load(ifindex)?;
        // Attached (to lo, where it passes everything) so test runs skip an RCU grace period.
        prog.attach_gen(crate::sys::ifindex("lo")?)?;
        prog.generate(&frame, ifindex, 1)?;
        let report = Report { ..Default::default() };
        if !ctl.ready() {
            return Ok(report);
        }
        while !ctl.stopped() {
            prog.generate(&frame, ifindex, GEN_REPEAT)?;
            ctl.tx.fetch_add(u64::from(GEN_REPEAT), Ordering::Relaxed);
        }
        Ok(report)
    })
}
