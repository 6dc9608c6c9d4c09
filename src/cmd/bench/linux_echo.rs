//! The Linux TCP side of `etran bench echo`: an echo server and a client that keeps `depth`
//! fixed-size messages outstanding on each connection, over kernel TCP sockets driven by mio.
//! "Blocking" waits in epoll; "busy" polls epoll with a zero timeout and spins, which is what a
//! kernel-bypass stack does and what hides the cost of waking an idle vCPU.
//!
//! Every byte that comes back is checked against the pattern that was sent (the connection's
//! stream of [`Pattern`]), so a run with a single wrong byte fails.
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

use super::support::CpuUse;
use crate::pattern::Pattern;
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

    /// Echoes everything it reads.
    pub fn run(self, wait: Wait, stop: &AtomicBool) -> anyhow::Result<()> {
        self.serve(wait, stop, || Echoing)
    }

    /// Serves every connection with its own service from `new` until `stop`; a service's
    /// error ends the run.
    pub fn serve<S: Service>(
        mut self,
        wait: Wait,
        stop: &AtomicBool,
        mut new: impl FnMut() -> S,
    ) -> anyhow::Result<()> {
        struct Conn<S> {
            stream: TcpStream,
            service: S,
            /// What to send back; the bytes before `written` are sent.
            pending: Vec<u8>,
            written: usize,
        }
        let mut conns: Vec<Option<Conn<S>>> = Vec::new();
        // Slots of closed connections, reused (churn closes them continuously).
        let mut free: Vec<usize> = Vec::new();
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 1 << 16];
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
                                let i = free.pop().unwrap_or_else(|| {
                                    conns.push(None);
                                    conns.len() - 1
                                });
                                self.poll.registry().register(
                                    &mut stream,
                                    Token(i),
                                    Interest::READABLE | Interest::WRITABLE,
                                )?;
                                let service = new();
                                conns[i] =
                                    Some(Conn { stream, service, pending: Vec::new(), written: 0 });
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
                            while conn.written < conn.pending.len() {
                                match conn.stream.write(&conn.pending[conn.written..]) {
                                    Ok(n) => conn.written += n,
                                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                    Err(_) => {
                                        closed = true;
                                        break;
                                    }
                                }
                            }
                            if closed || conn.written < conn.pending.len() {
                                break;
                            }
                            conn.pending.clear();
                            conn.written = 0;
                            match conn.stream.read(&mut buf) {
                                Ok(0) => {
                                    closed = true;
                                    break;
                                }
                                Ok(n) => conn.service.on_bytes(&buf[..n], &mut conn.pending)?,
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                Err(_) => {
                                    closed = true;
                                    break;
                                }
                            }
                        }
                        if closed {
                            conns[i] = None;
                            free.push(i);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// What a [`Server`] does with one connection's bytes.
pub trait Service {
    /// Takes the bytes read; appends what to send back to `out`.
    fn on_bytes(&mut self, data: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()>;
}

/// The echo service: everything back as it came.
pub struct Echoing;

impl Service for Echoing {
    fn on_bytes(&mut self, data: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
        out.extend_from_slice(data);
        Ok(())
    }
}

/// What one client thread measured.
pub struct ClientResult {
    pub messages: u64,
    pub verified_bytes: u64,
    pub rtt_ns: Histogram<u64>,
    /// Connections opened (the first ones included) and closed (churn).
    pub opens: u64,
    pub closes: u64,
    /// The machine's CPU use at the start and the end of the measured window (the earliest
    /// start and the latest end of every client thread).
    pub cpu_window: Option<(CpuUse, CpuUse)>,
}

impl ClientResult {
    pub fn new() -> ClientResult {
        ClientResult {
            messages: 0,
            verified_bytes: 0,
            rtt_ns: super::support::latency_histogram(),
            opens: 0,
            closes: 0,
            cpu_window: None,
        }
    }

    /// Marks the start of this thread's measured window.
    pub fn window_starts(&mut self) {
        let now = CpuUse::now();
        self.cpu_window = Some((now, now));
    }

    /// Marks the end of this thread's measured window.
    pub fn window_ends(&mut self) {
        if let Some((_, end)) = &mut self.cpu_window {
            *end = CpuUse::now();
        }
    }

    /// CPU used during the measured window.
    pub fn cpu(&self) -> Option<CpuUse> {
        self.cpu_window.map(|(start, end)| end.since(&start))
    }

    /// Adds another thread's counts.
    pub fn merge(&mut self, other: &ClientResult) -> anyhow::Result<()> {
        self.messages += other.messages;
        self.verified_bytes += other.verified_bytes;
        self.opens += other.opens;
        self.closes += other.closes;
        self.rtt_ns.add(&other.rtt_ns)?;
        self.cpu_window = match (self.cpu_window, other.cpu_window) {
            (Some((s1, e1)), Some((s2, e2))) => Some((s1.min(s2), e1.max(e2))),
            (a, b) => a.or(b),
        };
        Ok(())
    }
}

/// What the clients count as they go, for the per-second display.
#[derive(Default)]
pub struct Progress {
    /// Completed round trips.
    pub messages: AtomicU64,
    /// Connections closed and replaced (churn).
    pub reopened: AtomicU64,
}

impl Progress {
    /// Adds the round trips `result` completed since the last call (`published` remembers how
    /// many were added): once per pass, so client threads do not share a cache line per message.
    pub fn publish(&self, result: &ClientResult, published: &mut u64) {
        if result.messages > *published {
            self.messages.fetch_add(result.messages - *published, Ordering::Relaxed);
            *published = result.messages;
        }
    }
}

/// One connection's echo bookkeeping, whatever transport moves its bytes: what to send next,
/// which messages are in flight since when, and the check of every byte that comes back.
pub struct Echo {
    pub id: u32,
    depth: u32,
    /// Messages this connection carries before it is closed (churn), or unlimited.
    limit: Option<u32>,
    sent_bytes: u64,
    recv_bytes: u64,
    /// Messages fully echoed back.
    completed: u64,
    /// Send times of the messages not yet echoed, oldest first.
    in_flight: VecDeque<Instant>,
    /// This connection's byte stream.
    pattern: Pattern,
    /// Queued message bytes; those before `written` the transport took already (compacted
    /// lazily, so a partial send moves no bytes).
    write_buf: Vec<u8>,
    written: usize,
}

impl Echo {
    pub fn new(id: u32, depth: u32, limit: Option<u32>) -> Echo {
        Echo {
            id,
            depth,
            limit,
            sent_bytes: 0,
            recv_bytes: 0,
            completed: 0,
            in_flight: VecDeque::with_capacity(depth as usize),
            pattern: Pattern::new(id),
            write_buf: Vec::new(),
            written: 0,
        }
    }

    /// The bookkeeping of the connection that replaces this one after a churn close: a fresh
    /// stream under another id (`stride` apart, so ids stay unique across threads).
    pub fn successor(&self, stride: u32) -> Echo {
        Echo::new(self.id.wrapping_add(stride), self.depth, self.limit)
    }

    /// Queues the first `depth` messages (fewer if the connection carries fewer), sent at `now`.
    pub fn start(&mut self, size: u64, now: Instant) {
        for _ in 0..self.depth {
            self.queue_message(size, now);
        }
    }

    /// Queues one more message of `size` bytes, sent at `now`, unless the limit is reached.
    fn queue_message(&mut self, size: u64, now: Instant) {
        if self.exhausted() {
            return;
        }
        if self.written > 0 && self.written * 2 >= self.write_buf.len() {
            self.write_buf.drain(..self.written);
            self.written = 0;
        }
        let start = self.sent_bytes + self.unsent().len() as u64;
        self.pattern.extend(&mut self.write_buf, start, size);
        self.in_flight.push_back(now);
    }

    /// Every message this connection is to carry has been queued.
    fn exhausted(&self) -> bool {
        let queued = self.completed + self.in_flight.len() as u64;
        self.limit.is_some_and(|l| queued >= u64::from(l))
    }

    /// Every message this connection was to carry came back: it is due for closing.
    pub fn finished(&self) -> bool {
        self.exhausted() && self.idle()
    }

    /// No message is in flight.
    pub fn idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Queued bytes the transport has not taken yet.
    pub fn unsent(&self) -> &[u8] {
        &self.write_buf[self.written..]
    }

    /// The transport took the first `n` queued bytes.
    pub fn sent(&mut self, n: usize) {
        self.sent_bytes += n as u64;
        self.written += n;
        if self.written == self.write_buf.len() {
            self.write_buf.clear();
            self.written = 0;
        }
    }

    /// Checks echoed `bytes`, records each completed round trip, and replaces it with a new
    /// message while `deadline` has not passed.
    pub fn on_echo(
        &mut self,
        bytes: &[u8],
        size: u64,
        deadline: Instant,
        result: &mut ClientResult,
    ) -> anyhow::Result<()> {
        if let Some(offset) = self.pattern.mismatch(self.recv_bytes, bytes) {
            bail!("echo mismatch on connection {} at byte {offset}", self.id);
        }
        self.recv_bytes += bytes.len() as u64;
        result.verified_bytes += bytes.len() as u64;
        let arrived = Instant::now();
        while self.completed < self.recv_bytes / size {
            self.completed += 1;
            let sent = self.in_flight.pop_front().context("an echo of a message never sent")?;
            result.rtt_ns.saturating_record(arrived.duration_since(sent).as_nanos() as u64);
            result.messages += 1;
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

/// What client thread `i` runs, and where: one split of the connections and one CPU placement
/// for every engine, so that rows compare. Client thread `i` talks to server thread `i` only
/// (its own listening port), since an eTran port cannot be listened on by two apps.
#[derive(Debug, Clone)]
pub struct Share {
    /// Server thread `i`'s address.
    pub server: SocketAddrV4,
    pub first_conn_id: u32,
    pub conns: u32,
    /// Replacement connections (churn) take ids this far apart: the total, so ids stay unique.
    pub id_stride: u32,
    pub client_cpu: usize,
    pub server_cpu: usize,
}

/// Splits `conns` over `threads` client threads: thread `i` on CPU `i mod N`, its server thread
/// on CPU `i+1 mod N`, listening on [`server_port`]`(i)` of `server_ip`.
pub fn plan(server_ip: Ipv4Addr, conns: u32, threads: u32) -> Vec<Share> {
    let cpus = super::support::cpu_count();
    let (per_thread, extra) = (conns / threads, conns % threads);
    (0..threads)
        .map(|i| Share {
            server: SocketAddrV4::new(server_ip, server_port(i)),
            first_conn_id: i * per_thread + i.min(extra),
            conns: per_thread + u32::from(i < extra),
            id_stride: conns,
            client_cpu: super::support::cpu_for(i as usize),
            server_cpu: (i as usize + 1) % cpus,
        })
        .collect()
}

/// Client thread: its share's connections, `depth` messages of `size` bytes outstanding on each,
/// until `deadline`; with `churn`, each connection closes after that many round trips and a new
/// one takes its place.
pub struct Client {
    pub share: Share,
    pub depth: u32,
    pub size: u32,
    pub churn: Option<u32>,
    pub wait: Wait,
}

impl Client {
    pub fn run(&self, deadline: Instant, progress: &Progress) -> anyhow::Result<ClientResult> {
        let poll_timeout = self.wait.timeout();
        let mut poll = Poll::new()?;
        let mut result = ClientResult::new();
        let mut conns = Vec::with_capacity(self.share.conns as usize);
        for i in 0..self.share.conns {
            let echo = Echo::new(self.share.first_conn_id + i, self.depth, self.churn);
            conns.push(self.open(&poll, Token(i as usize), echo, &mut result)?);
        }
        let size = u64::from(self.size);
        let now = Instant::now();
        for c in &mut conns {
            c.echo.start(size, now);
            flush(c)?;
        }
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 1 << 16];
        let mut published = 0;
        result.window_starts();
        while Instant::now() < deadline {
            progress.publish(&result, &mut published);
            match poll.poll(&mut events, poll_timeout.or(Some(Duration::from_millis(50)))) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r?,
            }
            for event in events.iter() {
                let token = event.token();
                let c = &mut conns[token.0];
                loop {
                    let n = match c.stream.read(&mut buf) {
                        Ok(0) => bail!("the server closed connection {}", c.echo.id),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e).context("receiving echoes"),
                    };
                    c.echo.on_echo(&buf[..n], size, deadline, &mut result)?;
                }
                if c.echo.finished() {
                    poll.registry().deregister(&mut c.stream)?;
                    let echo = c.echo.successor(self.share.id_stride);
                    // Dropping the old stream closes it (FIN).
                    *c = self.open(&poll, token, echo, &mut result)?;
                    result.closes += 1;
                    progress.reopened.fetch_add(1, Ordering::Relaxed);
                    c.echo.start(size, Instant::now());
                }
                flush(c)?;
            }
        }
        result.window_ends();
        progress.publish(&result, &mut published);
        Ok(result)
    }

    /// Connects a new stream for `echo`, registered under `token`.
    fn open(
        &self,
        poll: &Poll,
        token: Token,
        echo: Echo,
        result: &mut ClientResult,
    ) -> anyhow::Result<ClientConn> {
        let server = SocketAddr::V4(self.share.server);
        let std_stream = std::net::TcpStream::connect_timeout(&server, Duration::from_secs(3))
            .with_context(|| format!("connecting to {server}"))?;
        std_stream.set_nodelay(true)?;
        std_stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(std_stream);
        poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        result.opens += 1;
        Ok(ClientConn { stream, echo })
    }
}

fn flush(c: &mut ClientConn) -> anyhow::Result<()> {
    while !c.echo.unsent().is_empty() {
        match c.stream.write(c.echo.unsent()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_splits_connections_and_places_threads_like_every_engine() {
        let shares = plan(Ipv4Addr::new(10, 0, 0, 2), 10, 4);
        assert_eq!(shares.iter().map(|s| s.conns).collect::<Vec<_>>(), [3, 3, 2, 2]);
        assert_eq!(shares.iter().map(|s| s.first_conn_id).collect::<Vec<_>>(), [0, 3, 6, 8]);
        let ports: Vec<u16> = shares.iter().map(|s| s.server.port()).collect();
        assert_eq!(ports, [7700, 7701, 7702, 7703]);
        let cpus = super::super::support::cpu_count();
        for (i, s) in shares.iter().enumerate() {
            assert_eq!((s.client_cpu, s.server_cpu), (i % cpus, (i + 1) % cpus));
            assert_eq!(s.id_stride, 10);
        }
        // Connection ids never collide across threads, replacements included.
        let mut ids: Vec<u32> = shares
            .iter()
            .flat_map(|s| (0..s.conns).map(move |k| s.first_conn_id + k))
            .flat_map(|id| [id, id + 10, id + 20])
            .collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }

    /// Loopback echo with pipelining, with and without churn: every message completes, every
    /// byte is verified, and churned connections are replaced.
    #[test]
    fn loopback_echo_round_trips_are_verified() {
        let runs = [Wait::Blocking, Wait::Busy].into_iter().flat_map(|w| [(w, None), (w, Some(3))]);
        for (wait, churn) in runs {
            let server = Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let SocketAddr::V4(addr) = server.addr().unwrap() else { unreachable!() };
            let waker = server.waker();
            let stop = AtomicBool::new(false);
            let progress = Progress::default();
            let mut share = plan(*addr.ip(), 3, 1).remove(0);
            share.server = addr;
            let client = Client { share, depth: 4, size: 3000, churn, wait };
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
            assert_eq!(progress.messages.load(Ordering::Relaxed), result.messages);
            assert_eq!(progress.reopened.load(Ordering::Relaxed), result.closes);
            assert_eq!(result.opens, 3 + result.closes);
            match churn {
                None => assert_eq!(result.closes, 0),
                // Each connection carries 3 messages: about one close per 3 round trips.
                Some(k) => assert!(result.closes + 3 >= result.messages / u64::from(k)),
            }
        }
    }
}
