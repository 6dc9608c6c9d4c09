//! Linux UDP socket ends of `etran bench raw`, the comparison for every AF_XDP pattern:
//! sendmmsg/recvmmsg batches, never blocking (a lane takes turns with the other end).
use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    sync::atomic::Ordering,
};

use anyhow::Context;
use hdrhistogram::Histogram;

use super::{
    end::{End, Params, Report},
    xsk::EchoWindow,
};
use crate::cmd::bench::support::{latency_histogram, now_ns, Ctl};

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

/// Sends batches of datagrams as fast as the socket takes them.
pub(super) struct UdpTx {
    s: UdpSocket,
    b: Box<MsgBatch>,
    batch: usize,
}

impl UdpTx {
    pub(super) fn open(
        src: Ipv4Addr,
        dst: SocketAddrV4,
        payload: usize,
        p: Params,
    ) -> anyhow::Result<Self> {
        let s = udp_socket(SocketAddrV4::new(src, 0))?;
        s.connect(dst)?;
        let b = MsgBatch::new(p.batch as usize, payload, false);
        Ok(UdpTx { s, b, batch: p.batch as usize })
    }
}

impl End for UdpTx {
    fn step(&mut self, ctl: &Ctl) -> anyhow::Result<bool> {
        match self.b.send(self.s.as_raw_fd(), self.batch, libc::MSG_DONTWAIT) {
            Ok(n) => {
                ctl.tx.fetch_add(n as u64, Ordering::Relaxed);
                Ok(n > 0)
            }
            Err(e) if would_block(&e) => Ok(false),
            Err(e) => Err(e).context("sendmmsg"),
        }
    }

    fn finish(self: Box<Self>) -> Report {
        Report::default()
    }
}

/// Receives and counts datagrams of the expected size.
pub(super) struct UdpRx {
    s: UdpSocket,
    b: Box<MsgBatch>,
    payload: usize,
    report: Report,
}

impl UdpRx {
    pub(super) fn open(bind: SocketAddrV4, payload: usize, p: Params) -> anyhow::Result<Self> {
        let s = udp_socket(bind)?;
        let b = MsgBatch::new(p.batch.max(64) as usize, payload, false);
        Ok(UdpRx { s, b, payload, report: Report::default() })
    }
}

impl End for UdpRx {
    /// Drains the socket (up to 4096 datagrams): in a lane the generator runs a burst between
    /// two steps.
    fn step(&mut self, ctl: &Ctl) -> anyhow::Result<bool> {
        let mut total = 0;
        while total < 4096 {
            let n = match self.b.recv(self.s.as_raw_fd(), libc::MSG_DONTWAIT) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if would_block(&e) => break,
                Err(e) => return Err(e).context("recvmmsg"),
            };
            let good =
                self.b.hdrs[..n].iter().filter(|h| h.msg_len as usize == self.payload).count();
            self.report.other += (n - good) as u64;
            self.report.rx += good as u64;
            ctl.rx.fetch_add(good as u64, Ordering::Relaxed);
            total += n;
        }
        Ok(total > 0)
    }

    fn finish(self: Box<Self>) -> Report {
        self.report
    }
}

/// Sends back every datagram it receives, as it came in. The client counts round trips.
pub(super) struct UdpEchoServer {
    s: UdpSocket,
    b: Box<MsgBatch>,
    payload: usize,
}

impl UdpEchoServer {
    pub(super) fn open(bind: SocketAddrV4, payload: usize, p: Params) -> anyhow::Result<Self> {
        let s = udp_socket(bind)?;
        let b = MsgBatch::new(p.batch as usize, payload, true);
        Ok(UdpEchoServer { s, b, payload })
    }
}

impl End for UdpEchoServer {
    fn step(&mut self, ctl: &Ctl) -> anyhow::Result<bool> {
        let fd = self.s.as_raw_fd();
        let n = match self.b.recv(fd, libc::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(e) if would_block(&e) => return Ok(false),
            Err(e) => return Err(e).context("recvmmsg"),
        };
        for h in &mut self.b.hdrs[..n] {
            // Echo exactly what came in.
            // SAFETY: msg_iov points at this header's iovec.
            unsafe { (*h.msg_hdr.msg_iov).iov_len = h.msg_len as usize };
        }
        let mut done = 0;
        while done < n && !ctl.stopped() {
            // SAFETY: the tail of the header array is still valid.
            let r = unsafe {
                libc::sendmmsg(fd, self.b.hdrs.as_mut_ptr().add(done), (n - done) as u32, 0)
            };
            if r > 0 {
                done += r as usize;
            }
        }
        for iov in &mut self.b.iovs {
            iov.iov_len = self.payload;
        }
        Ok(n > 0)
    }

    fn finish(self: Box<Self>) -> Report {
        Report::default()
    }
}

/// Keeps a window of timestamped datagrams in flight to the server and times their return.
pub(super) struct UdpEchoClient {
    s: UdpSocket,
    tx: Box<MsgBatch>,
    rx: Box<MsgBatch>,
    hist: Histogram<u64>,
    payload: usize,
    window: EchoWindow,
    seq: u64,
    report: Report,
}

impl UdpEchoClient {
    pub(super) fn open(server: SocketAddrV4, payload: usize, p: Params) -> anyhow::Result<Self> {
        let s = udp_socket(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        s.connect(server)?;
        Ok(UdpEchoClient {
            s,
            tx: MsgBatch::new(p.batch as usize, payload, false),
            rx: MsgBatch::new(p.batch as usize, payload, false),
            hist: latency_histogram(),
            payload,
            window: EchoWindow::new(p.batch),
            seq: 0,
            report: Report::default(),
        })
    }
}

impl End for UdpEchoClient {
    fn step(&mut self, ctl: &Ctl) -> anyhow::Result<bool> {
        let fd = self.s.as_raw_fd();
        let mut moved = false;
        match self.rx.recv(fd, libc::MSG_DONTWAIT) {
            Ok(n) => {
                let now = now_ns();
                for (h, buf) in self.rx.hdrs[..n].iter().zip(&self.rx.bufs) {
                    if h.msg_len as usize == self.payload {
                        let ts = u64::from_ne_bytes(buf[8..16].try_into().expect("8 bytes"));
                        let _ = self.hist.record(now.saturating_sub(ts).max(1));
                    }
                }
                self.window.returned(n as u64);
                self.report.rx += n as u64;
                ctl.rx.fetch_add(n as u64, Ordering::Relaxed);
                moved = n > 0;
            }
            Err(e) if would_block(&e) => {}
            Err(e) => return Err(e).context("recvmmsg"),
        }
        let k = self.window.room() as usize;
        if k > 0 {
            let now = now_ns();
            for buf in &mut self.tx.bufs[..k] {
                buf[0..8].copy_from_slice(&self.seq.to_ne_bytes());
                buf[8..16].copy_from_slice(&now.to_ne_bytes());
                self.seq += 1;
            }
            match self.tx.send(fd, k, libc::MSG_DONTWAIT) {
                Ok(n) => {
                    self.window.sent(n as u64);
                    ctl.tx.fetch_add(n as u64, Ordering::Relaxed);
                    moved |= n > 0;
                }
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e).context("sendmmsg"),
            }
        }
        Ok(moved)
    }

    fn finish(mut self: Box<Self>) -> Report {
        self.report.hist = Some(self.hist);
        self.report.lost = self.window.lost;
        self.report
    }
}
