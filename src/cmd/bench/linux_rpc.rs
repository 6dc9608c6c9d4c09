//! The Linux TCP side of `etran bench rpc`: the same RPCs ([`super::rpc_msg`]) over kernel TCP
//! sockets driven by mio, the request framed by the length in its header, the response by the
//! length the request asked for. A client keeps one connection per outstanding RPC (clients ×
//! depth), so that no RPC waits behind another's bytes, as none does over Homa.
use std::{
    io::{self, Read, Write},
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use mio::{net::TcpStream, Events, Interest, Poll, Token};

use super::{
    arrivals::Arrivals,
    linux_echo::{Progress, Service, Wait},
    rpc_msg::{self, ClientWindow, Exchange, Header, ResponseSize, RpcResult, Seconds},
    rpc_plan::{ClientThread, Plan},
    support::Ticket,
    workload::Workload,
};

/// How often a client looks for stalled RPCs.
const STALL_CHECK: Duration = Duration::from_millis(10);

/// The server's side of one connection, for [`super::linux_echo::Server::serve`]: collects
/// each request (framed by the length in its header), checks it and appends its response.
#[derive(Default)]
pub struct Answering {
    request: Vec<u8>,
}

impl Service for Answering {
    fn on_bytes(&mut self, data: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
        self.request.extend_from_slice(data);
        while let Some(h) = Header::read(&self.request) {
            let len = h.len as usize;
            if len < rpc_msg::HEADER {
                bail!("a request header with length {len}");
            }
            if self.request.len() < len {
                break;
            }
            rpc_msg::answer(&self.request[..len], out).context("answering an RPC")?;
            self.request.drain(..len);
        }
        Ok(())
    }
}

/// One client connection and its RPC exchange.
struct ClientConn {
    stream: TcpStream,
    ex: Exchange,
}

impl ClientConn {
    fn start(&mut self) -> anyhow::Result<()> {
        self.ex.start();
        self.flush()
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        while !self.ex.unsent().is_empty() {
            match self.stream.write(self.ex.unsent()) {
                Ok(n) => self.ex.sent(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("sending a request"),
            }
        }
        Ok(())
    }
}

/// Client thread: its clients, `depth` RPCs outstanding each (each slot's connection to its
/// port), connected before the common start ([`Ticket`]), until its deadline.
pub struct Client<'a> {
    pub plan: &'a Plan,
    pub thread: &'a ClientThread,
    pub workload: Workload,
    pub response: ResponseSize,
    pub wait: Wait,
    pub rpc_timeout: Duration,
    /// This thread's offered load in Gbit/s of requests (open loop); 0 is closed loop.
    pub gbps: f64,
    /// Keep every RPC's length and RTT (`--dump-times`).
    pub keep_times: bool,
}

impl Client<'_> {
    pub fn run(
        &self,
        start: Ticket<'_>,
        progress: &Progress,
        seconds: &Seconds,
    ) -> anyhow::Result<RpcResult> {
        let mut poll = Poll::new()?;
        let mut result =
            RpcResult::new(&self.workload).keeping_times(self.keep_times).on_host(self.thread.host);
        let mut conns = Vec::new();
        for (server, caller) in self.plan.callers(self.thread, self.workload, self.response) {
            let server = SocketAddr::V4(server);
            let std_stream = std::net::TcpStream::connect_timeout(&server, Duration::from_secs(3))
                .with_context(|| format!("connecting to {server}"))?;
            std_stream.set_nodelay(true)?;
            std_stream.set_nonblocking(true)?;
            let mut stream = TcpStream::from_std(std_stream);
            let token = Token(conns.len());
            // Writable too: a request longer than the socket's buffer goes on as room frees.
            let both = Interest::READABLE | Interest::WRITABLE;
            poll.registry().register(&mut stream, token, both)?;
            conns.push(ClientConn { stream, ex: Exchange::new(caller) });
        }
        let deadline = start.ready();
        let seed = u64::from(self.thread.first_client) + 1;
        let mut arrivals = Arrivals::new(self.gbps, self.workload.mean(), seed, Instant::now());
        // Open loop: the connections without an RPC.
        let mut free = Vec::new();
        for (k, c) in conns.iter_mut().enumerate() {
            if arrivals.reissue_on_completion() {
                c.start()?;
            } else {
                free.push(k);
            }
        }
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 1 << 16];
        let mut published = 0;
        let mut window = ClientWindow::open(&mut result, deadline, STALL_CHECK, self.rpc_timeout);
        while window.measuring() || conns.iter().any(|c| c.ex.in_flight().is_some()) {
            progress.publish(&result.total, &mut published);
            result.publish(seconds, Instant::now());
            let timeout = match self.wait {
                Wait::Busy => Duration::ZERO,
                Wait::Blocking => arrivals.sleep(Instant::now(), STALL_CHECK),
            };
            match poll.poll(&mut events, Some(timeout)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r?,
            }
            for event in events.iter() {
                let k = event.token().0;
                let c = &mut conns[k];
                loop {
                    let n = match c.stream.read(&mut buf) {
                        Ok(0) => bail!("the server closed a connection"),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e).context("receiving responses"),
                    };
                    let now = Instant::now();
                    if c.ex.on_response(&buf[..n], now, deadline, &mut result)? && now < deadline {
                        if arrivals.reissue_on_completion() {
                            c.ex.start();
                        } else {
                            free.push(k);
                        }
                    }
                }
                c.flush()?;
            }
            let now = Instant::now();
            if now < deadline {
                while let Some(k) = arrivals.due(now, || free.pop()) {
                    conns[k].start()?;
                }
            }
            window.tick(now, &mut result, conns.iter().filter_map(|c| c.ex.in_flight()))?;
        }
        result.late = arrivals.late();
        progress.publish(&result.total, &mut published);
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::bench::{
        linux_echo::Server, rpc_plan::Shape, support::Start, workload::MAX_SIZE,
    };
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Loopback RPCs, both ways of waiting, fixed and distributed sizes: every response
    /// checked, every RPC counted once.
    #[test]
    fn loopback_rpcs_are_verified() {
        let runs = [
            (Wait::Blocking, Workload::Fixed(3000), ResponseSize::Echo, 0.0),
            (
                Wait::Busy,
                Workload::parse("w4", 1, MAX_SIZE).unwrap(),
                ResponseSize::Fixed(100),
                0.0,
            ),
            (Wait::Blocking, Workload::Fixed(1_000_000), ResponseSize::OneWay, 0.0),
            // Open loop: 10,000 RPCs/s offered.
            (Wait::Blocking, Workload::Fixed(1000), ResponseSize::Echo, 0.08),
        ];
        for (wait, workload, response, gbps) in runs {
            let server = Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let SocketAddr::V4(addr) = server.addr().unwrap() else { unreachable!() };
            let waker = server.waker();
            let stop = AtomicBool::new(false);
            let (progress, seconds) = (Progress::default(), Seconds::default());
            let shape = Shape {
                server_ip: *addr.ip(),
                client_hosts: 1,
                clients: 2,
                depth: 3,
                threads: 1,
                ports: 1,
            };
            let mut plan = Plan::new(shape, 2);
            plan.ports[0].addr = addr;
            let client = Client {
                plan: &plan,
                thread: &plan.clients[0],
                workload,
                response,
                wait,
                rpc_timeout: Duration::from_secs(5),
                gbps,
                keep_times: gbps > 0.0,
            };
            let result = std::thread::scope(|s| {
                let srv = s.spawn(|| server.serve(wait, &stop, Answering::default));
                let start = Start::new(1, Duration::from_millis(300));
                let r = client.run(start.ticket(), &progress, &seconds);
                stop.store(true, Ordering::Relaxed);
                waker.wake().unwrap();
                srv.join().unwrap().unwrap();
                r.unwrap()
            });
            let t = &result.total;
            assert!(t.messages > 3, "{wait:?}: {} RPCs", t.messages);
            assert_eq!(t.rtt_ns.len(), t.messages);
            assert_eq!(progress.messages.load(Ordering::Relaxed), t.messages);
            // What the per-second lines saw (the last 10 ms may not have been merged).
            let line = seconds.take().line(0.3);
            assert!(line.starts_with("clients: ") && line.contains(" Kops/sec, "), "{line}");
            match response {
                ResponseSize::Fixed(r) => assert_eq!(t.verified_bytes, t.messages * u64::from(r)),
                ResponseSize::OneWay => assert_eq!(t.verified_bytes, t.messages * 100),
                ResponseSize::Echo => {}
            }
            if gbps > 0.0 {
                // 3,000 offered in 300 ms; a slow machine delivers fewer (1,449 once, beside a
                // build), never more.
                assert!((300..=3300).contains(&t.messages), "open loop: {} RPCs", t.messages);
                let times = result.times.as_ref().expect("kept");
                assert_eq!(times.len() as u64, t.messages);
                assert!(times.iter().all(|&(len, ns)| len == 1000 && ns > 0));
            } else {
                assert!(result.times.is_none());
            }
        }
    }
}
