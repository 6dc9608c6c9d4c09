//! The RPC API over Homa (eRPC-style, as in the paper): an [`RpcSocket`] is one app thread's
//! port registered for Homa and one bound Homa port, driven by the engine
//! [`crate::transport::homa::rpc::Endpoint`].
//!
//! ```no_run
//! use etran::app::rpc::RpcSocket;
//! let mut server = RpcSocket::open("/run/etran/etran.sock", 7000)?;
//! server.set_request_handler(|s, req, bytes| {
//!     s.enqueue_response(req, bytes).expect("an echo");
//! });
//! loop {
//!     server.run_once()?;
//! }
//! # std::io::Result::Ok(())
//! ```
//! A client queues requests with [`RpcSocket::enqueue_request`], each with a continuation that
//! gets the response (or an error), and calls [`RpcSocket::run_once`] (or
//! [`RpcSocket::wait`], which busy-polls for its budget and then sleeps when there is nothing
//! to do) until they ran. Handlers and continuations get the socket, so they may queue more.
//! The socket is Homa's engine under the app library's [`crate::app::driver`], which runs its
//! passes and waits as it runs TCP's [`crate::app::App`]; like the `App`, it is a mio source.
//!
//! The passes also run the loss timer, every millisecond while RPCs are in progress (so an app
//! with RPCs outstanding must keep calling `run_once` or `wait`): lost packets are asked for
//! again, and a request whose server stays silent for the loss timeout
//! ([`crate::transport::homa::rpc::LOSS`]) ends in its continuation with `ETIMEDOUT`.
use std::{
    collections::{HashMap, HashSet},
    io,
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    time::{Duration, Instant},
};

use crate::{
    app::{
        driver::{self, Driver},
        port::AppPort,
    },
    bpf::homa::types::etran_homa_rx_meta,
    proto::{Refusal, Transport},
    transport::homa::{
        loss::LossConfig,
        pace::Backlog,
        rpc::{Endpoint, EndpointStats, Event, Refused, RpcKey},
    },
};

/// The loss timer's tick (HomaModule's).
const TICK: Duration = Duration::from_millis(1);

/// A request handed to the request handler, to answer with [`RpcSocket::enqueue_response`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestHandle(RpcKey);

impl RequestHandle {
    /// The client's address and Homa port.
    pub fn client(&self) -> SocketAddrV4 {
        self.0.peer
    }
}

type Handler = Box<dyn FnMut(&mut RpcSocket, RequestHandle, Vec<u8>)>;
type Continuation = Box<dyn FnOnce(&mut RpcSocket, io::Result<Vec<u8>>)>;

/// One Homa port of an app thread.
pub struct RpcSocket {
    /// The port and the daemon link; passes and waits.
    driver: Driver,
    endpoint: Endpoint,
    handler: Option<Handler>,
    continuations: HashMap<RpcKey, Continuation>,
    /// Peers whose address egress was given.
    peers: HashSet<Ipv4Addr>,
    /// Events of the last pass, run after it (they may queue more).
    events: Vec<Event>,
    /// When the loss timer last ticked.
    last_tick: Instant,
}

/// The engine's refusal as the errno a POSIX call would give.
fn refused(r: Refused) -> io::Error {
    let (errno, what) = match r {
        Refused::Length(n) => (libc::EMSGSIZE, format!("a {n}-byte message")),
        Refused::NoIds => (libc::EAGAIN, "the RPC id block is used up".to_string()),
        Refused::NotServing => (libc::EINVAL, "no request of this RPC awaits a response".into()),
    };
    Refusal::new(errno, what).to_io_error()
}

impl RpcSocket {
    /// Connects to the daemon at `sock`, registers for Homa and binds Homa `port` (0: any free
    /// one, see [`RpcSocket::local_port`]).
    pub fn open(sock: impl AsRef<Path>, port: u16) -> io::Result<RpcSocket> {
        let mut driver = Driver::open(sock, Transport::Homa)?;
        let (bound, ids) = driver.link().homa_bind(port)?;
        Ok(RpcSocket {
            driver,
            endpoint: Endpoint::new(bound, ids),
            handler: None,
            continuations: HashMap::new(),
            peers: HashSet::new(),
            events: Vec::new(),
            last_tick: Instant::now(),
        })
    }

    /// The Homa port this socket is bound to.
    pub fn local_port(&self) -> u16 {
        self.endpoint.local_port()
    }

    /// The app port underneath (its counters).
    pub fn app_port(&self) -> &AppPort {
        self.driver.port()
    }

    pub fn stats(&self) -> EndpointStats {
        self.endpoint.stats()
    }

    /// Replaces the loss timer's parameters (ticks of 1 ms).
    pub fn set_loss_config(&mut self, cfg: LossConfig) {
        self.endpoint.set_loss_config(cfg);
    }

    /// RPCs in progress: requests waiting for their response, requests being answered.
    pub fn in_progress(&self) -> usize {
        self.endpoint.in_progress()
    }

    /// What runs for each request that arrives whole (replacing any handler before).
    pub fn set_request_handler(
        &mut self,
        f: impl FnMut(&mut RpcSocket, RequestHandle, Vec<u8>) + 'static,
    ) {
        self.handler = Some(Box::new(f));
    }

    /// Queues a request to `dest`; `continuation` runs with its response, from a later
    /// [`RpcSocket::run_once`].
    pub fn enqueue_request(
        &mut self,
        dest: SocketAddrV4,
        buf: Vec<u8>,
        continuation: impl FnOnce(&mut RpcSocket, io::Result<Vec<u8>>) + 'static,
    ) -> io::Result<()> {
        if self.peers.insert(*dest.ip()) {
            if let Err(e) = self.driver.link().homa_peer(*dest.ip()) {
                self.peers.remove(dest.ip());
                return Err(e);
            }
        }
        if self.endpoint.ids_used_up() {
            let ids = self.driver.link().homa_ids()?;
            self.endpoint.renew_ids(ids);
        }
        let rpc = self.endpoint.start_request(dest, buf).map_err(refused)?;
        self.continuations.insert(rpc, Box::new(continuation));
        Ok(())
    }

    /// Queues the response to `req`.
    pub fn enqueue_response(&mut self, req: RequestHandle, buf: Vec<u8>) -> io::Result<()> {
        self.endpoint.respond(req.0, buf).map_err(refused)
    }

    /// One pass: takes the frames that arrived, runs the handler and the continuations they
    /// complete, sends what may go. Returns the frames received.
    pub fn run_once(&mut self) -> io::Result<usize> {
        driver::pass(self)
    }

    /// Runs passes until one receives something or `timeout` passes, busy-polling for
    /// [`RpcSocket::set_busy_poll`]'s budget, then sleeping in `ppoll` on the AF_XDP socket and
    /// the daemon link (see [`driver`]); while RPCs are in progress it wakes every tick for the
    /// loss timer. Returns the frames received.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<usize> {
        let limit = Some(Instant::now() + timeout);
        let mut n = driver::wait(self, Some(timeout))?;
        while n == 0 {
            match driver::wait_until(self, limit)? {
                Some(m) => n = m,
                None => break,
            }
        }
        Ok(n)
    }

    /// How long [`RpcSocket::wait`] busy-polls before it sleeps
    /// ([`crate::app::DEFAULT_BUSY_POLL`]; zero: it sleeps at once).
    pub fn set_busy_poll(&mut self, budget: Duration) {
        self.driver.set_busy_poll(budget);
    }

    /// When the next pass is due for the loss timer (`None`: no RPC in progress), as of the
    /// last pass. An app that waits on its own ([`RpcSocket`] is a mio `Source`) waits at
    /// most until then.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.driver.next_deadline()
    }

    /// Writes every frame the engine may send (the driver flushes them): DATA only while the
    /// port's backlog allows ([`Backlog`]: a paced app keeps few frames uncompleted). Returns
    /// when to look again for completions while DATA waits for them.
    fn transmit(&mut self, now: Instant) -> io::Result<Option<Instant>> {
        let port = &mut self.driver.port;
        let backlog = Backlog::new(port.homa_link_mbps());
        while port.can_send() {
            let data = backlog.data_may_go(port.tx_unfinished());
            let ready = if data { self.endpoint.tx_ready() } else { self.endpoint.control_ready() };
            let endpoint = &mut self.endpoint;
            if !ready || port.send_with(|frame| endpoint.next_frame_as(frame, data))?.is_none() {
                break;
            }
        }
        let held = self.endpoint.tx_ready() && !backlog.data_may_go(port.tx_unfinished());
        Ok(held.then(|| now + backlog.recheck()))
    }
}

/// Homa's engine under the driver: frames go to the endpoint; each pass ticks the loss timer
/// (at most once), runs the handler and continuations of what completed, and sends.
impl driver::Engine for RpcSocket {
    type Meta = etran_homa_rx_meta;

    fn receiver(
        &mut self,
        _now: Instant,
    ) -> (&mut Driver, impl driver::Receive<etran_homa_rx_meta> + '_) {
        let (endpoint, events) = (&mut self.endpoint, &mut self.events);
        let rx = |meta: &etran_homa_rx_meta, payload: &[u8], frame: &[u8]| {
            events.extend(endpoint.on_rx(meta, payload, frame));
        };
        (&mut self.driver, rx)
    }

    fn on_pass(&mut self, now: Instant) -> io::Result<Option<Instant>> {
        // At most one tick a pass: time the app itself spent elsewhere is not the peer's
        // silence.
        if now - self.last_tick >= TICK {
            self.last_tick = now;
            self.events.extend(self.endpoint.tick());
        }
        for ev in std::mem::take(&mut self.events) {
            match ev {
                Event::Request { rpc, bytes } => {
                    if let Some(mut h) = self.handler.take() {
                        h(self, RequestHandle(rpc), bytes);
                        self.handler.get_or_insert(h);
                    }
                }
                Event::Response { rpc, bytes } => {
                    if let Some(c) = self.continuations.remove(&rpc) {
                        c(self, Ok(bytes));
                    }
                }
                Event::TimedOut { rpc } => {
                    if let Some(c) = self.continuations.remove(&rpc) {
                        let what = format!("no word from {} for the loss timeout", rpc.peer);
                        c(self, Err(Refusal::new(libc::ETIMEDOUT, what).to_io_error()));
                    }
                }
            }
        }
        // Completions wake nobody: a sender holding DATA back looks again soon.
        let recheck = self.transmit(now)?;
        let tick = self.endpoint.ticking().then(|| self.last_tick + TICK);
        Ok([tick, recheck].into_iter().flatten().min())
    }

    /// The daemon tells a Homa app nothing of its own accord: only its going away (an error).
    fn on_daemon(&mut self) -> io::Result<()> {
        self.driver.link().poll()
    }

    fn driver(&mut self) -> &mut Driver {
        &mut self.driver
    }
}

// The socket is pollable: its port and its daemon link, under one token (on readiness call
// [`RpcSocket::run_once`]; wait no longer than [`RpcSocket::next_deadline`]).
driver::source_via_driver!(RpcSocket);
