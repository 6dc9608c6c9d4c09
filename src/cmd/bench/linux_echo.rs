//! The Linux TCP side of `etran bench echo`: an echo server and a client that keeps `depth`
//! fixed-size messages outstanding on each connection, over kernel TCP sockets driven by mio.
//! "Blocking" waits in epoll; "busy" polls epoll with a zero timeout and spins, which is what a
//! kernel-bypass stack does and what hides the cost of waking an idle vCPU.
//!
//! Every byte that comes back is checked against the pattern that was sent (a function of the
//! connection and the stream offset), so a run with a single wrong byte fails.
use std::{
    collections::VecDeque,
    io::{self, Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use mio::{
    net::{TcpListener, TcpStream},
    Events, Interest, Poll, Token, Waker,
};

/// How a thread waits for its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Blocking,
    Busy,
}

impl Wait {
    fn timeout(self) -> Option<Duration> {
        match self {
            Wait::Blocking => None,
            Wait::Busy => Some(Duration::ZERO),
        }
    }
}

/// The byte at stream offset `offset` of connection `conn`: cheap, and different across
/// connections and positions so misrouted or reordered bytes are caught.
pub fn pattern(conn: u32, offset: u64) -> u8 {
    (offset.wrapping_mul(131) ^ u64::from(conn).wrapping_mul(0x9e37)) as u8 ^ (offset >> 8) as u8
}

const WAKER: Token = Token(usize::MAX);
const LISTENER: Token = Token(usize::MAX - 1);

/// Echo server: one thread per listener. Runs until `stop` is set (it wakes the poll).
pub struct Server {
    listener: TcpListener,
    poll: Poll,
    waker: Arc<Waker>,
}

impl Server {
    pub fn bind(addr: SocketAddr) -> anyhow::Result<Server> {
        let mut listener =
            TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Server { listener, poll, waker })
    }

    #[cfg(test)]
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Echoes everything it reads. Returns the bytes echoed.
    pub fn run(mut self, wait: Wait, stop: &AtomicBool) -> anyhow::Result<u64> {
        struct Conn {
            stream: TcpStream,
            pending: Vec<u8>,
        }
        let mut conns: Vec<Option<Conn>> = Vec::new();
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 1 << 16];
        let mut echoed = 0u64;
        while !stop.load(Ordering::Relaxed) {
            match self.poll.poll(&mut events, wait.timeout()) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r?,
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    LISTENER => loop {
                        match self.listener.accept() {
                            Ok((mut stream, _)) => {
                                stream.set_nodelay(true)?;
                                let token = Token(conns.len());
                                self.poll.registry().register(
                                    &mut stream,
                                    token,
                                    Interest::READABLE | Interest::WRITABLE,
                                )?;
                                conns.push(Some(Conn { stream, pending: Vec::new() }));
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e).context("accept"),
                        }
                    },
                    Token(i) => {
                        let Some(conn) = conns.get_mut(i).and_then(Option::as_mut) else {
                            continue;
                        };
                        let mut closed = false;
                        loop {
                            if !conn.pending.is_empty() {
                                match conn.stream.write(&conn.pending) {
                                    Ok(n) => {
                                        echoed += n as u64;
                                        conn.pending.drain(..n);
                                    }
                                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                    Err(_) => {
                                        closed = true;
                                        break;
                                    }
                                }
                                if !conn.pending.is_empty() {
                                    break;
                                }
                            }
                            match conn.stream.read(&mut buf) {
                                Ok(0) => {
                                    closed = true;
                                    break;
                                }
                                Ok(n) => conn.pending.extend_from_slice(&buf[..n]),
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                Err(_) => {
                                    closed = true;
                                    break;
                                }
                            }
                        }
                        if closed {
                            conns[i] = None;
                        }
                    }
                }
            }
        }
        Ok(echoed)
    }
}

/// What one client thread measured.
pub struct ClientResult {
    pub messages: u64,
    pub verified_bytes: u64,
    pub rtt_ns: Histogram<u64>,
}

/// One connection's echo bookkeeping, whatever transport moves its bytes: what to send next,
/// which messages are in flight since when, and the check of every byte that comes back.
pub struct Echo {
    pub id: u32,
    sent_bytes: u64,
    recv_bytes: u64,
    /// Messages fully echoed back.
    completed: u64,
    /// Send times of the messages not yet echoed, oldest first.
    in_flight: VecDeque<Instant>,
    /// Queued message bytes not yet taken by the transport.
    pub write_buf: Vec<u8>,
}

impl Echo {
    pub fn new(id: u32, depth: u32) -> Echo {
        Echo {
            id,
            sent_bytes: 0,
            recv_bytes: 0,
            completed: 0,
            in_flight: VecDeque::with_capacity(depth as usize),
            write_buf: Vec::new(),
        }
    }

    /// Queues one more message of `size` bytes, sent at `now`.
    pub fn queue_message(&mut self, size: u64, now: Instant) {
        let start = self.sent_bytes + self.write_buf.len() as u64;
        self.write_buf.extend((start..start + size).map(|o| pattern(self.id, o)));
        self.in_flight.push_back(now);
    }

    /// The transport took the first `n` queued bytes.
    pub fn sent(&mut self, n: usize) {
        self.sent_bytes += n as u64;
        self.write_buf.drain(..n);
    }

    /// Checks echoed `bytes`, records each completed round trip, and replaces it with a new
    /// message while `deadline` has not passed.
    pub fn on_echo(
        &mut self,
        bytes: &[u8],
        size: u64,
        deadline: Instant,
        result: &mut ClientResult,
        progress: &AtomicU64,
    ) -> anyhow::Result<()> {
        for (i, &b) in bytes.iter().enumerate() {
            let offset = self.recv_bytes + i as u64;
            if b != pattern(self.id, offset) {
                bail!("echo mismatch on connection {} at byte {offset}", self.id);
            }
        }
        self.recv_bytes += bytes.len() as u64;
        result.verified_bytes += bytes.len() as u64;
        let arrived = Instant::now();
        while self.completed < self.recv_bytes / size {
            self.completed += 1;
            let sent = self.in_flight.pop_front().context("an echo of a message never sent")?;
            result.rtt_ns.saturating_record(arrived.duration_since(sent).as_nanos() as u64);
            result.messages += 1;
            progress.fetch_add(1, Ordering::Relaxed);
            if arrived < deadline {
                self.queue_message(size, arrived);
            }
        }
        Ok(())
    }
}

struct ClientConn {
    stream: TcpStream,
    echo: Echo,
}

/// Client thread: `conns` connections to `server`, `depth` messages of `size` bytes outstanding
/// on each, until `deadline`. Counts completed round trips in `progress`.
pub struct Client {
    pub server: SocketAddrV4,
    pub first_conn_id: u32,
    pub conns: u32,
    pub depth: u32,
    pub size: u32,
    pub wait: Wait,
}

impl Client {
    pub fn run(&self, deadline: Instant, progress: &AtomicU64) -> anyhow::Result<ClientResult> {
        let poll_timeout = self.wait.timeout();
        let mut poll = Poll::new()?;
        let mut conns = Vec::with_capacity(self.conns as usize);
        for i in 0..self.conns {
            let std_stream = std::net::TcpStream::connect_timeout(
                &SocketAddr::V4(self.server),
                Duration::from_secs(3),
            )
            .with_context(|| format!("connecting to {}", self.server))?;
            std_stream.set_nodelay(true)?;
            std_stream.set_nonblocking(true)?;
            let mut stream = TcpStream::from_std(std_stream);
            poll.registry().register(
                &mut stream,
                Token(i as usize),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            conns.push(ClientConn { stream, echo: Echo::new(self.first_conn_id + i, self.depth) });
        }
        let size = u64::from(self.size);
        let mut result = ClientResult {
            messages: 0,
            verified_bytes: 0,
            rtt_ns: crate::bench::latency_histogram(),
        };
        let now = Instant::now();
        for c in &mut conns {
            for _ in 0..self.depth {
                c.echo.queue_message(size, now);
            }
            flush(c)?;
        }
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 1 << 16];
        while Instant::now() < deadline {
            match poll.poll(&mut events, poll_timeout.or(Some(Duration::from_millis(50)))) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r?,
            }
            for event in events.iter() {
                let c = &mut conns[event.token().0];
                loop {
                    let n = match c.stream.read(&mut buf) {
                        Ok(0) => bail!("the server closed connection {}", c.echo.id),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e).context("receiving echoes"),
                    };
                    c.echo.on_echo(&buf[..n], size, deadline, &mut result, progress)?;
                }
                flush(c)?;
            }
        }
        Ok(result)
    }
}

fn flush(c: &mut ClientConn) -> anyhow::Result<()> {
    while !c.echo.write_buf.is_empty() {
        match c.stream.write(&c.echo.write_buf) {
            Ok(n) => c.echo.sent(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e).context("sending messages"),
        }
    }
    Ok(())
}

/// Port of the echo server for client thread `i`.
pub fn server_port(i: u32) -> u16 {
    7700 + i as u16
}

pub fn server_addr(ip: Ipv4Addr, i: u32) -> SocketAddrV4 {
    SocketAddrV4::new(ip, server_port(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_differs_across_connections_and_offsets() {
        let a: Vec<u8> = (0..512).map(|o| pattern(1, o)).collect();
        let b: Vec<u8> = (0..512).map(|o| pattern(2, o)).collect();
        assert_ne!(a, b);
        assert_ne!(a[..256], a[256..]);
    }

    /// Loopback echo with pipelining: every message completes and every byte is verified.
    #[test]
    fn loopback_echo_round_trips_are_verified() {
        for wait in [Wait::Blocking, Wait::Busy] {
            let server = Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let SocketAddr::V4(addr) = server.addr().unwrap() else { unreachable!() };
            let waker = server.waker();
            let stop = AtomicBool::new(false);
            let progress = AtomicU64::new(0);
            let client =
                Client { server: addr, first_conn_id: 0, conns: 3, depth: 4, size: 3000, wait };
            let result = std::thread::scope(|s| {
                let srv = s.spawn(|| server.run(wait, &stop));
                let r = client.run(Instant::now() + Duration::from_millis(300), &progress);
                stop.store(true, Ordering::Relaxed);
                waker.wake().unwrap();
                srv.join().unwrap().unwrap();
                r.unwrap()
            });
            assert!(result.messages > 10, "{wait:?}: {} messages", result.messages);
            assert!(result.verified_bytes >= result.messages * 3000);
            assert_eq!(result.rtt_ns.len(), result.messages);
            assert_eq!(progress.load(Ordering::Relaxed), result.messages);
        }
    }
}
