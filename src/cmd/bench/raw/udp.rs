//! Linux UDP socket workers of `etran bench raw`, the comparison for every AF_XDP pattern:
//! sendmmsg/recvmmsg batches, busy-polling.
use super::*;

pub(super) fn udp_socket(bind: SocketAddrV4) -> anyhow::Result<UdpSocket> {
    let s = UdpSocket::bind(bind).with_context(|| format!("binding UDP {bind}"))?;
    let big: libc::c_int = 8 << 20;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // SAFETY: valid int option.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&big as *const libc::c_int).cast(),
                4,
            )
        };
    }
    Ok(s)
}

/// Batches of `n` datagrams of `payload` bytes each, for sendmmsg/recvmmsg.
struct MsgBatch {
    bufs: Vec<Vec<u8>>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
    hdrs: Vec<libc::mmsghdr>,
}

impl MsgBatch {
    fn new(n: usize, payload: usize, with_addrs: bool) -> Box<MsgBatch> {
        let mut b = Box::new(MsgBatch {
            bufs: vec![vec![0u8; payload.max(64)]; n],
            iovs: Vec::with_capacity(n),
            // SAFETY: sockaddr_in is plain data.
            addrs: vec![unsafe { std::mem::zeroed() }; n],
            // SAFETY: mmsghdr is plain data.
            hdrs: vec![unsafe { std::mem::zeroed() }; n],
        });
        let b2 = &mut *b;
        for buf in &mut b2.bufs {
            b2.iovs.push(libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: payload });
        }
        for i in 0..n {
            let h = &mut b2.hdrs[i].msg_hdr;
            h.msg_iov = &mut b2.iovs[i];
            h.msg_iovlen = 1;
            if with_addrs {
                h.msg_name = (&mut b2.addrs[i] as *mut libc::sockaddr_in).cast();
                h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            }
        }
        b
    }

    fn reset_names(&mut self) {
        for h in &mut self.hdrs {
            if !h.msg_hdr.msg_name.is_null() {
                h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            }
        }
    }

    fn send(&mut self, fd: i32, n: usize, flags: i32) -> std::io::Result<usize> {
        // SAFETY: hdrs point into this batch's live buffers.
        let r = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), n as u32, flags) };
        crate::sys::cvt(r).map(|r| r as usize)
    }

    fn recv(&mut self, fd: i32, flags: i32) -> std::io::Result<usize> {
        self.reset_names();
        // SAFETY: as above.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as u32,
                flags,
                std::ptr::null_mut(),
            )
        };
        crate::sys::cvt(r).map(|r| r as usize)
    }
}

pub(super) fn would_block(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR | libc::ECONNREFUSED)
    )
}

pub(super) fn udp_tx_worker<'a>(
    pl: Place,
    src: Ipv4Addr,
    dst: SocketAddrV4,
    payload: usize,
    p: Params,
) -> Worker<'a, Report> {
    Box::new(move |ctl: &Ctl| {
        pl.enter()?;
        let s = udp_socket(SocketAddrV4::new(src, 0))?;
        s.connect(dst)?;
        let mut b = MsgBatch::new(p.batch as usize, payload, false);
        let report = Report { ..Default::default() };
        if !ctl.ready() {
            return Ok(report);
        }
        while !ctl.stopped() {
            match b.send(s.as_raw_fd(), p.batch as usize, 0) {
                Ok(n) => {
                    ctl.tx.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e).context("sendmmsg"),
            }
        }
        Ok(report)
    })
}

pub(super) fn udp_rx_worker<'a>(
    pl: Place,
    bind: SocketAddrV4,
    payload: usize,
    p: Params,
) -> Worker<'a, Report> {
    Box::new(move |ctl: &Ctl| {
        pl.enter()?;
        let share = pl.share;
        let s = udp_socket(bind)?;
        let mut b = MsgBatch::new(p.batch.max(64) as usize, payload, false);
        let mut report = Report { ..Default::default() };
        if !ctl.ready() {
            return Ok(report);
        }
        while !ctl.stopped() {
            match b.recv(s.as_raw_fd(), libc::MSG_DONTWAIT) {
                Ok(n) => {
                    let good = b.hdrs[..n].iter().filter(|h| h.msg_len as usize == payload).count();
                    report.other += (n - good) as u64;
                    ctl.rx.fetch_add(good as u64, Ordering::Relaxed);
                    if share {
                        relax(true);
                    }
                }
                Err(e) if would_block(&e) => relax(share),
                Err(e) => return Err(e).context("recvmmsg"),
            }
        }
        Ok(report)
    })
}

pub(super) fn udp_echo_server_worker<'a>(
    pl: Place,
    bind: SocketAddrV4,
    payload: usize,
    p: Params,
) -> Worker<'a, Report> {
    Box::new(move |ctl: &Ctl| {
        pl.enter()?;
        let s = udp_socket(bind)?;
        let mut b = MsgBatch::new(p.batch as usize, payload, true);
        let report = Report { ..Default::default() };
        if !ctl.ready() {
            return Ok(report);
        }
        while !ctl.stopped() {
            match b.recv(s.as_raw_fd(), libc::MSG_DONTWAIT) {
                Ok(n) => {
                    for h in &mut b.hdrs[..n] {
                        // Echo exactly what came in.
                        // SAFETY: msg_iov points at this header's iovec.
                        unsafe { (*h.msg_hdr.msg_iov).iov_len = h.msg_len as usize };
                    }
                    let mut done = 0;
                    while done < n && !ctl.stopped() {
                        // SAFETY: the tail of the header array is still valid.
                        let r = unsafe {
                            libc::sendmmsg(
                                s.as_raw_fd(),
                                b.hdrs.as_mut_ptr().add(done),
                                (n - done) as u32,
                                0,
                            )
                        };
                        if r > 0 {
                            done += r as usize;
                        }
                    }
                    for iov in &mut b.iovs {
                        iov.iov_len = payload;
                    }
                    // The client counts round trips; the server does not add to them.
                }
                Err(e) if would_block(&e) => std::hint::spin_loop(),
                Err(e) => return Err(e).context("recvmmsg"),
            }
        }
        Ok(report)
    })
}

pub(super) fn udp_echo_client_worker<'a>(
    pl: Place,
    server: SocketAddrV4,
    payload: usize,
    p: Params,
) -> Worker<'a, Report> {
    Box::new(move |ctl: &Ctl| {
        pl.enter()?;
        let s = udp_socket(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        s.connect(server)?;
        let mut tx = MsgBatch::new(p.batch as usize, payload, false);
        let mut rx = MsgBatch::new(p.batch as usize, payload, false);
        let mut hist = latency_histogram();
        let mut report = Report { ..Default::default() };
        if !ctl.ready() {
            return Ok(report);
        }
        let window = u64::from(echo_window(p.batch));
        let (mut sent, mut back, mut seq) = (0u64, 0u64, 0u64);
        let mut last_progress = Instant::now();
        let fd = s.as_raw_fd();
        while !ctl.stopped() {
            match rx.recv(fd, libc::MSG_DONTWAIT) {
                Ok(n) => {
                    let now = now_ns();
                    for (h, buf) in rx.hdrs[..n].iter().zip(&rx.bufs) {
                        if h.msg_len as usize == payload {
                            let ts = u64::from_ne_bytes(buf[8..16].try_into().expect("8 bytes"));
                            let _ = hist.record(now.saturating_sub(ts).max(1));
                        }
                    }
                    back += n as u64;
                    ctl.rx.fetch_add(n as u64, Ordering::Relaxed);
                    last_progress = Instant::now();
                }
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e).context("recvmmsg"),
            }
            let outstanding = sent - back - report.lost;
            if outstanding > 0 && last_progress.elapsed() > Duration::from_millis(50) {
                report.lost += outstanding;
                last_progress = Instant::now();
            }
            let room = window.saturating_sub(sent - back - report.lost);
            let k = room.min(u64::from(p.batch)) as usize;
            if k > 0 {
                let now = now_ns();
                for buf in &mut tx.bufs[..k] {
                    buf[0..8].copy_from_slice(&seq.to_ne_bytes());
                    buf[8..16].copy_from_slice(&now.to_ne_bytes());
                    seq += 1;
                }
                match tx.send(fd, k, libc::MSG_DONTWAIT) {
                    Ok(n) => {
                        sent += n as u64;
                        ctl.tx.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) if would_block(&e) => {}
                    Err(e) => return Err(e).context("sendmmsg"),
                }
            }
        }
        report.hist = Some(hist);
        Ok(report)
    })
}
