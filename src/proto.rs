//! The app ↔ daemon protocol on the Unix socket: the wire messages both sides share (the
//! daemon in [`crate::daemon`], the app library's end in [`crate::app::link`]); it imports
//! neither.
//!
//! Framing: every message is a 4-byte little-endian length `n` (1 ≤ n ≤ [`MAX_MESSAGE`])
//! followed by `n` bytes of UTF-8 JSON (serde's externally tagged enums, e.g.
//! `{"Register":{"version":1,"transport":"tcp","queues":1}}`). JSON keeps the control path easy
//! to inspect and extend; it carries only a handful of messages per app lifetime.
//!
//! Versioning: the first message of a session must be `Register` with `version` =
//! [`PROTOCOL_VERSION`]; any other version gets an `Error` and the session is closed. Fields
//! added later are optional (`#[serde(default)]`), so a newer daemon still reads older apps.
//! New messages, and changed meanings, bump the version: an older peer would take them for
//! garbage. (2: `Release`, `Abort`, `Reset`. 3: the app binds the AF_XDP socket it is given.
//! 4: refusals are a [`Refusal`], an errno plus optional text, instead of a string;
//! `ConnectFailed` names the remote address. 5: `Unlisten`, `Unlistened`. 6: the `homa`
//! transport: `HomaBind`, `HomaPeer` and their answers. 7: the receive budget. 8: `Listen`
//! may show a kernel socket and wait to be `Accepting`: listeners shared across processes. 9: the
//! native backend: `Registered` may hand over a socket the daemon bound (`bound`), and TX frames
//! start `geometry.tx_headroom` bytes into their chunk. 10: connections shared across processes:
//! `Share`, `Forked`, `Adopt`, `Park`, `Surrendered` and their answers. 11: `HomaIds`, another
//! block of client RPC ids. 12: connections passed over Unix sockets: `Share` with `passing`,
//! `AdoptPassed`. 13: `Connecting`, a connect other processes wait for. 14: `Batch`, an app that
//! streams asks its port to batch its frames.)
//!
//! Refusals carry the errno a POSIX call would give (`EADDRINUSE` for a port that is taken,
//! `ECONNREFUSED` for a SYN answered by RST, `ETIMEDOUT`, ...): the app library hands them on as
//! `std::io::Error`s, so a POSIX shim can return them as they are.
//!
//! Descriptors: `Registered` travels in one `sendmsg` together with its descriptors
//! (SCM_RIGHTS), in the order the message lists them (`fds`); a `Listen` with `socket` set
//! carries one, the same way; so do `Share` (the process's pidfd, then one kernel socket per
//! connection), `Forked` (the child's pidfd), `Adopt` (the connection's kernel socket),
//! `AdoptPassed` (the process's pidfd, then the socket), `Connecting` (the socket),
//! `Surrendered` and `Adopted` (a memfd holding the stream handed over). See [`send_fds`] /
//! [`recv_fds`].
//!
//! Connections shared across processes (a forked child inheriting its parent's): holding the
//! connection's kernel socket is the right to use it, as in the kernel. The owner shows each
//! connection's socket before it forks (`Share`) and names the child after (`Forked`); a
//! process showing that socket adopts the connection (`Adopt`): its owner hands the stream over
//! (`Surrender`, answered by `Surrendered`) and the adopter resumes it (`Adopted`). An owner
//! closing a shared connection parks it at the daemon instead (`Park`), while another holder
//! lives.
use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
};

use serde::{Deserialize, Serialize};

pub use crate::transport::tcp::stream::Resume;

/// What the app needs to adopt a connection and to map its rings: defined by the TCP
/// transport and by the AF_XDP layer, carried here.
pub use crate::{
    refusal::{errno_of, Refusal},
    transport::{homa::id::IdBlock, tcp::stream::ConnInit},
    xsk::Geometry,
};

/// Version of this protocol; bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 14;
/// Largest message body accepted (a `Registered` is a few hundred bytes).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most descriptors one message carries.
pub const MAX_FDS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Homa,
}

/// App → daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Asks for a port: must be the first message of a session, and is accepted once.
    Register { version: u32, transport: Transport, queues: u32 },
    /// Ends the session; the daemon tears down everything it owned and closes the socket.
    Close,
    /// Accept TCP connections to `port` on the NIC's address(es) (after `Register`). Answered
    /// by `Listening` or `ListenFailed`; each completed handshake then by `Accepted`.
    /// With `socket`, the message carries the kernel socket bound to `port` that stands for
    /// the listener (SCM_RIGHTS): a session showing the same socket later (a forked worker)
    /// joins the listener, and connections are shared out among its members. With `idle`, no
    /// connection goes to this session before its `Accepting`.
    Listen {
        port: u16,
        #[serde(default)]
        socket: bool,
        #[serde(default)]
        idle: bool,
    },
    /// The session accepts connections on `port` (one it listens on) from now on. Not
    /// answered.
    Accepting { port: u16 },
    /// Stop accepting connections to `port` (one this session listens on): later SYNs to it
    /// are refused (the kernel answers RST), handshakes to it still running are dropped.
    /// Answered by `Unlistened`, after every `Accepted` for the port.
    Unlisten { port: u16 },
    /// Opens a TCP connection from the NIC's address (`local_port`, or an ephemeral one).
    /// Answered by `Connected` or `ConnectFailed`.
    Connect { remote_ip: Ipv4Addr, remote_port: u16, local_port: Option<u16> },
    /// The connection `handle` is closed on the app's side (both FINs exchanged, ours
    /// acknowledged): the daemon removes it from the fast path, and holds its 4-tuple in
    /// TIME_WAIT when `time_wait` (the app closed first). Not answered.
    Release { handle: u64, time_wait: bool },
    /// Abort the connection `handle`: the daemon resets it (RST) and removes it. Not answered.
    Abort { handle: u64 },
    /// The app's sends come in bursts (`on`: a connection framed a burst in one pass) or no
    /// longer do: the backend batches what the app's port carries, or stops (a compat port
    /// runs its kernel side's receive processing in a NAPI thread; see
    /// `backend::AppPort::batch_sends`). Not answered.
    Batch { on: bool },
    /// Bind Homa `port` (0: any free one) to this session's app port: Homa packets to it reach
    /// the app, and the app may send from it. Answered by `HomaBound` (with the port and a
    /// block of client RPC ids) or `HomaBindFailed`. A `homa` session only.
    HomaBind { port: u16 },
    /// The app is about to start RPCs to `ip`: the daemon tells egress the peer's Ethernet
    /// address (from the neighbour table). Answered by `HomaPeer`.
    HomaPeer { ip: Ipv4Addr },
    /// Another block of client RPC ids: the app's is used up (a block lasts 2^19 RPCs).
    /// Answered by `HomaIds`, or `Error` when the session has no Homa port.
    HomaIds,
    /// Before a fork: the connections `handles` (this session's, or shared ones it inherited)
    /// stand for the kernel sockets the message carries, one each after the pidfd of process
    /// `pid` (this one), which holds them. Answered by `Shared`. With `passing`, the sockets
    /// are on their way over a Unix socket to a process the daemon does not know yet: the
    /// connections wait a while for it (`AdoptPassed`), whether or not a known holder lives.
    Share {
        pid: u32,
        handles: Vec<u64>,
        #[serde(default)]
        passing: bool,
    },
    /// After a fork: process `pid` (its pidfd carried) holds the connections `handles` too.
    /// Not answered.
    Forked { pid: u32, handles: Vec<u64> },
    /// The connection `handle` comes to this session, which shows its kernel socket (carried).
    /// Answered by `Adopted` or `AdoptFailed`.
    Adopt { handle: u64 },
    /// Process `pid` (its pidfd carried, then a kernel socket) received that socket over a Unix
    /// socket: the connection it stands for, if any, comes to this session. Answered by
    /// `Adopted` (naming the connection) or `AdoptFailed` with handle 0 (`ENOTCONN`: no
    /// connection of the daemon's stands for it).
    AdoptPassed { pid: u32 },
    /// A connect of this session's is in progress (`errno` 0) on the kernel socket the message
    /// carries, or it failed with `errno`: other processes holding that socket (a child forked
    /// before the connect began) asking for it (`AdoptPassed`) are answered `AdoptFailed`
    /// with `EINPROGRESS`, or with that errno, until the connection is shown (`Share`), the
    /// session ends or, once failed, a minute passed. Answered by `Shared`.
    Connecting { errno: i32 },
    /// Process `pid` closed its descriptor of connection `handle` (with `keep`, it still holds
    /// one: it parks the stream at the daemon, as a parent does at fork). From its owner:
    /// answered by `Surrender` (another holder lives, or `keep`: hand the stream over, it waits
    /// at the daemon) or `Unshared` (close it as usual); from another session, not answered.
    Park {
        handle: u64,
        pid: u32,
        #[serde(default)]
        keep: bool,
    },
    /// The stream of connection `handle`, which the daemon asked for (`Surrender`), in the
    /// memfd carried ([`crate::transport::tcp::stream::Stream::hand_over`]). Not answered.
    Surrendered { handle: u64 },
}

/// What each descriptor passed with `Registered` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FdKind {
    /// An AF_XDP socket for the app's port, queue `queue`: mmap its rings, then, unless
    /// `Registered` says `bound`, bind it there (copy mode, need-wakeup). Since version 3;
    /// before, the daemon bound it, which kernels before 6.4 do not let the app map.
    Xsk { queue: u32 },
    /// The memfd backing the UMEM registered on the queue-0 socket: mmap it `MAP_SHARED`.
    Umem,
    /// The port's receive budget (`struct etran_port_rx`, a one-entry mmappable BPF array):
    /// mmap it shared and keep its `posted` counter current. Since version 7.
    RxBudget,
}

/// Daemon → app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Registered {
        version: u32,
        /// The app's slot in the datapath's `app_ports` devmap: its identity in BPF.
        slot: u32,
        /// The app side of its port (where the app binds its sockets).
        port: String,
        port_ifindex: u32,
        /// The kernel side of its port (in `app_ports`, runs egress).
        kernel_port: String,
        kernel_ifindex: u32,
        geometry: Geometry,
        /// The interface the daemon serves (the NIC): the connections go through it (the
        /// POSIX shim routes by it). Empty from a daemon that did not say.
        #[serde(default)]
        iface: String,
        /// The descriptors sent with this message, in order.
        fds: Vec<FdKind>,
        /// The daemon bound the AF_XDP socket already, to `port` at its `Xsk` queue (native
        /// backend: on the NIC, with egress linked to it): the app maps its rings and does not
        /// bind it. Since version 9.
        #[serde(default)]
        bound: bool,
        /// The link rate (Mbit/s) at which the datapath paces this app's Homa DATA through its
        /// socket's packet queue (native, `--pacing auto`: homa_pace.h); 0: it does not. A
        /// paced frame completes only when it leaves, and the app keeps few uncompleted
        /// (`transport::homa::pace`). Optional: older daemons never pace Homa.
        #[serde(default)]
        homa_link_mbps: u32,
        /// TCP egress paces through the packet queue (native, `etran up --pacing auto`): a
        /// segment may wait there, and completes only when it leaves, so the app keeps what
        /// each connection has there short (`transport::tcp::small_queues`). Absent: false.
        #[serde(default)]
        paced: bool,
    },
    /// The request failed; the daemon closes the session after sending it.
    Error {
        refusal: Refusal,
    },
    Listening {
        port: u16,
    },
    /// The `Listen` was refused (the session stays open).
    ListenFailed {
        port: u16,
        refusal: Refusal,
    },
    /// The answer to `Unlisten`: no `Accepted` for `port` follows.
    Unlistened {
        port: u16,
    },
    /// A connection to a listening port completed its handshake and is in the fast path under
    /// `handle` (the value RX metadata carries).
    Accepted {
        handle: u64,
        init: ConnInit,
    },
    /// A `Connect` completed its handshake (same meaning as `Accepted`).
    Connected {
        handle: u64,
        init: ConnInit,
    },
    /// A `Connect` to `remote` failed (refused, reset, timed out, or not even started).
    ConnectFailed {
        remote: SocketAddrV4,
        refusal: Refusal,
    },
    /// The peer reset the connection `handle`: it is gone from the fast path.
    Reset {
        handle: u64,
    },
    /// `HomaBind` succeeded: `port` is the app's, and its client RPCs take their ids from
    /// `ids` (unique on this host).
    HomaBound {
        port: u16,
        ids: IdBlock,
    },
    /// The answer to `HomaIds`: the app's client RPCs take their ids from `ids` now.
    HomaIds {
        ids: IdBlock,
    },
    /// `HomaBind` of `port` was refused (the session stays open).
    HomaBindFailed {
        port: u16,
        refusal: Refusal,
    },
    /// The answer to `HomaPeer`: egress knows `ip`'s address, unless `refusal` says why not.
    HomaPeer {
        ip: Ipv4Addr,
        refusal: Option<Refusal>,
    },
    /// The answer to `Share` and `Connecting`.
    Shared,
    /// The connection `handle` is this session's now: resume its stream (the memfd carried)
    /// where the kernel's stands (`at`).
    Adopted {
        handle: u64,
        at: Resume,
    },
    /// The `Adopt` of `handle` was refused (`EBADF`: not its socket; `ECONNRESET`: the stream
    /// was lost on the way).
    AdoptFailed {
        handle: u64,
        refusal: Refusal,
    },
    /// Hand the stream of connection `handle` over (`Surrendered`): it no longer reaches this
    /// session. Frames it received up to stream position `rx_pos` may still be on their way.
    Surrender {
        handle: u64,
        rx_pos: u32,
    },
    /// The answer to a `Park` of `handle` when nobody else holds it: close it as usual.
    Unshared {
        handle: u64,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The length prefix is 0 or above [`MAX_MESSAGE`].
    BadLength(usize),
    /// The body is not a message of this protocol.
    Malformed(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::BadLength(n) => {
                write!(f, "message length {n} outside 1..={MAX_MESSAGE}")
            }
            DecodeError::Malformed(e) => write!(f, "malformed message: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Frames `msg`: length prefix + JSON.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = serde_json::to_vec(msg).expect("protocol messages always serialize");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes the first message in `buf`: `Ok(None)` while it is incomplete, else the message and
/// the bytes it used.
pub fn decode<T: for<'de> Deserialize<'de>>(buf: &[u8]) -> Result<Option<(T, usize)>, DecodeError> {
    let Some(prefix) = buf.get(..4) else { return Ok(None) };
    let len = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize;
    if len == 0 || len > MAX_MESSAGE {
        return Err(DecodeError::BadLength(len));
    }
    let Some(body) = buf.get(4..4 + len) else { return Ok(None) };
    let msg = serde_json::from_slice(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    Ok(Some((msg, 4 + len)))
}

/// Checks the version of a `Register`.
pub fn check_version(version: u32) -> Result<(), Refusal> {
    if version != PROTOCOL_VERSION {
        return Err(Refusal::new(
            libc::EPROTONOSUPPORT,
            format!(
                "unsupported protocol version {version} (this daemon speaks {PROTOCOL_VERSION})"
            ),
        ));
    }
    Ok(())
}

/// Sends all of `data` on the stream socket `sock`, with `fds` attached to the first byte
/// (SCM_RIGHTS). Retries on EINTR/EAGAIN (messages are small; the socket buffer holds them).
pub fn send_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors"));
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut sent = 0;
    let mut first = true;
    while sent < data.len() {
        let mut iov =
            libc::iovec { iov_base: data[sent..].as_ptr() as *mut _, iov_len: data.len() - sent };
        let space = cmsg_space(MAX_FDS);
        let mut cbuf = vec![0u64; space.div_ceil(8)];
        // SAFETY: msghdr is plain data; every pointer below outlives the sendmsg call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if first && !raw.is_empty() {
            let len = std::mem::size_of_val(raw.as_slice());
            msg.msg_control = cbuf.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE is a pure computation.
            msg.msg_controllen = unsafe { libc::CMSG_SPACE(len as u32) } as usize;
            // SAFETY: the control buffer is large enough for one header with `len` bytes.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(len as u32) as usize;
                std::ptr::copy_nonoverlapping(raw.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), len);
            }
        }
        // SAFETY: msg is fully initialised above.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    wait_fd(sock.as_raw_fd(), libc::POLLOUT)?;
                    continue;
                }
                _ => return Err(err),
            }
        }
        first = false;
        sent += n as usize;
    }
    Ok(())
}

fn cmsg_space(fds: usize) -> usize {
    // SAFETY: CMSG_SPACE is a pure computation.
    unsafe { libc::CMSG_SPACE((fds * std::mem::size_of::<RawFd>()) as u32) as usize }
}

fn wait_fd(fd: RawFd, events: i16) -> io::Result<()> {
    let mut p = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, 5000) };
    match n {
        n if n < 0 => Err(io::Error::last_os_error()),
        0 => Err(io::Error::new(io::ErrorKind::TimedOut, "socket not ready for 5 s")),
        _ => Ok(()),
    }
}

/// Receives bytes into `buf` and any descriptors passed with them (appended to `fds`, close-on-
/// exec). Returns the byte count (0 at end of stream). Blocks as the socket does, unless
/// `dontwait` (then `WouldBlock` when nothing is there, in one syscall).
pub fn recv_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    dontwait: bool,
) -> io::Result<usize> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let space = cmsg_space(MAX_FDS);
    // Room for MAX_FDS descriptors (CMSG_SPACE(64) is 80 bytes), on the stack.
    let mut cbuf = [0u64; 16];
    debug_assert!(space <= std::mem::size_of_val(&cbuf));
    // SAFETY: msghdr is plain data; the buffers outlive recvmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    let n = loop {
        // SAFETY: msg is valid for recvmsg.
        let flags = libc::MSG_CMSG_CLOEXEC | if dontwait { libc::MSG_DONTWAIT } else { 0 };
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    // SAFETY: walking the control messages the kernel wrote into cbuf.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let bytes = (*c).cmsg_len - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("descriptors were truncated (MSG_CTRUNC)"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::os::{fd::AsFd, unix::net::UnixStream};

    use super::*;

    fn register() -> Request {
        Request::Register { version: PROTOCOL_VERSION, transport: Transport::Tcp, queues: 1 }
    }

    #[test]
    fn round_trip() {
        let mut buf = encode(&register());
        buf.extend(encode(&Request::Close));
        let (a, n) = decode::<Request>(&buf).unwrap().unwrap();
        assert_eq!(a, register());
        let (b, m) = decode::<Request>(&buf[n..]).unwrap().unwrap();
        assert_eq!(b, Request::Close);
        assert_eq!(n + m, buf.len());
        let refusal = Refusal::new(libc::EADDRINUSE, "x");
        for reply in
            [Reply::Error { refusal }, Reply::Reset { handle: 3 }, Reply::Unlistened { port: 80 }]
        {
            let enc = encode(&reply);
            assert_eq!(decode::<Reply>(&enc).unwrap().unwrap(), (reply, enc.len()));
        }
        for req in [
            Request::Release { handle: 9, time_wait: true },
            Request::Abort { handle: 9 },
            Request::Unlisten { port: 80 },
            Request::Listen { port: 80, socket: true, idle: true },
            Request::Accepting { port: 80 },
            Request::HomaBind { port: 0 },
            Request::HomaPeer { ip: Ipv4Addr::new(10, 99, 0, 2) },
            Request::HomaIds,
            Request::Share { pid: 7, handles: vec![1, 2], passing: true },
            Request::AdoptPassed { pid: 7 },
            Request::Connecting { errno: libc::ECONNREFUSED },
            Request::Forked { pid: 8, handles: vec![1] },
            Request::Adopt { handle: 1 },
            Request::Park { handle: 1, pid: 8, keep: true },
            Request::Surrendered { handle: 1 },
        ] {
            let enc = encode(&req);
            assert_eq!(decode::<Request>(&enc).unwrap().unwrap(), (req, enc.len()));
        }
    }

    #[test]
    fn wire_form_is_documented_json() {
        let enc = encode(&register());
        assert_eq!(u32::from_le_bytes(enc[..4].try_into().unwrap()) as usize, enc.len() - 4);
        assert_eq!(&enc[4..], br#"{"Register":{"version":14,"transport":"tcp","queues":1}}"#);
    }

    /// A `Registered` without `bound` (a daemon before version 9, or compat) leaves the app to
    /// bind the socket.
    #[test]
    fn registered_without_bound_is_unbound() {
        let body = br#"{"Registered":{"version":8,"slot":1,"port":"etp1a","port_ifindex":5,"kernel_port":"etp1k","kernel_ifindex":6,"geometry":{"umem_len":4096,"frame_size":2048,"headroom":0,"fill_size":2,"comp_size":2,"rx_size":2,"tx_size":2},"fds":[]}}"#;
        let mut framed = (body.len() as u32).to_le_bytes().to_vec();
        framed.extend_from_slice(body);
        match decode::<Reply>(&framed).unwrap().unwrap().0 {
            Reply::Registered { bound, geometry, .. } => {
                assert!(!bound);
                assert_eq!(geometry.tx_headroom, 0);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_older_listen_is_one_sessions_and_accepts_at_once() {
        let body = br#"{"Listen":{"port":80}}"#;
        let mut framed = (body.len() as u32).to_le_bytes().to_vec();
        framed.extend_from_slice(body);
        let (req, _) = decode::<Request>(&framed).unwrap().unwrap();
        assert_eq!(req, Request::Listen { port: 80, socket: false, idle: false });
    }

    #[test]
    fn truncated_waits_for_more() {
        let enc = encode(&register());
        for cut in 0..enc.len() {
            assert_eq!(decode::<Request>(&enc[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn oversized_and_empty_are_rejected() {
        let mut big = ((MAX_MESSAGE + 1) as u32).to_le_bytes().to_vec();
        big.extend_from_slice(b"{}");
        assert_eq!(decode::<Request>(&big), Err(DecodeError::BadLength(MAX_MESSAGE + 1)));
        assert_eq!(decode::<Request>(&[0, 0, 0, 0]), Err(DecodeError::BadLength(0)));
    }

    #[test]
    fn garbage_and_unknown_messages_are_malformed() {
        for body in [&b"GET / HTTP/1.1"[..], br#"{"Launch":{}}"#, br#"{"Register":{}}"#] {
            let mut m = (body.len() as u32).to_le_bytes().to_vec();
            m.extend_from_slice(body);
            assert!(matches!(decode::<Request>(&m), Err(DecodeError::Malformed(_))));
        }
    }

    #[test]
    fn unknown_version_is_refused() {
        assert!(check_version(PROTOCOL_VERSION).is_ok());
        let err = check_version(PROTOCOL_VERSION + 1).unwrap_err();
        assert_eq!(err.errno, libc::EPROTONOSUPPORT);
        assert!(err.to_string().contains("unsupported protocol version"), "{err}");
    }

    #[test]
    fn refusals_keep_their_errno() {
        let bare = Refusal { errno: libc::ECONNREFUSED, message: None }.to_io_error();
        assert_eq!(bare.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(errno_of(&bare), Some(libc::ECONNREFUSED));
        let told = Refusal::new(libc::EADDRINUSE, "port 80 is already taken");
        let enc = encode(&Reply::ListenFailed { port: 80, refusal: told.clone() });
        let Reply::ListenFailed { refusal, .. } = decode::<Reply>(&enc).unwrap().unwrap().0 else {
            panic!("not a ListenFailed")
        };
        let e = refusal.to_io_error();
        assert_eq!((e.kind(), errno_of(&e)), (io::ErrorKind::AddrInUse, Some(libc::EADDRINUSE)));
        assert!(e.to_string().contains("port 80 is already taken"), "{e}");
        assert_eq!(errno_of(&io::Error::other("no errno")), None);
    }

    #[test]
    fn descriptors_travel_with_the_message() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        send_fds(a.as_fd(), b"hello", &[file.as_fd(), file.as_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let mut fds = Vec::new();
        let n = recv_fds(b.as_fd(), &mut buf, &mut fds, false).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 2);
        assert_ne!(fds[0].as_raw_fd(), file.as_raw_fd());
    }
}
