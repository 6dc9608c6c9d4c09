//! The eTran side of `etran bench echo`: etran on the hosts ([`etran_hosts`]), and per
//! [`Share`] one server App (its own registration, port and listening port) in the server host
//! and one client App in the client host, placed as the Linux engine places its threads. Apps
//! busy-poll ([`Wait::Busy`]: a pass polls the port and goes on at once) or wait
//! ([`Wait::Blocking`]: a pass starts with [`App::wait`], which sleeps after the library's
//! busy-poll budget). With a Linux peer ([`Peer::Linux`]) the server host runs no etran: each
//! share's server is the Linux engine's, waiting the same way. Same protocol and byte check as the Linux engine
//! ([`crate::pattern`]). At the end every connection is closed (FIN both ways; one that
//! does not close within 3 s is aborted and reported). A leak check brackets the apps:
//! connection-map entries, app ports and descriptors before any app, once every connection
//! closed and after the last app, and each app's UMEM TX pool. Everything is torn down before
//! returning: apps gone, then [`etran_hosts`] stops the rest.
use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use libbpf_rs::{MapCore, MapHandle};
use mio::Waker;
use serde::Serialize;

use super::{
    etran_hosts,
    linux_echo::{self, ClientResult, Echo, Echoing, Progress, Service, Share, Wait},
};
use crate::{
    app::{ready, App, AppCounters, ConnId, Listener},
    backend::{compat::port, native::ZeroCopy},
    bpf::entrance::types::{etran_backend, etran_pacing},
    loader,
    netlink::Netlink,
    netns::NetNs,
    testbed::HOST_NIC,
};

/// Who answers the eTran clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// eTran server apps, on a datapath and daemon of their own.
    Etran,
    /// Linux TCP sockets (waiting as the eTran clients do), with no etran on the server host.
    Linux,
}

/// What one eTran run needs.
pub struct Params<'a> {
    pub client: &'a NetNs,
    pub server: &'a NetNs,
    pub peer: Peer,
    /// One client and one server App per share.
    pub shares: &'a [Share],
    pub depth: u32,
    pub size: u32,
    /// Round trips per connection before it is closed and replaced.
    pub churn: Option<u32>,
    pub duration: Duration,
    /// How every app (and a Linux peer) waits.
    pub wait: Wait,
    /// The datapath backend of the eTran hosts.
    pub backend: etran_backend,
    /// Their TCP pacing.
    pub pacing: etran_pacing,
    /// Their daemons' zero copy (native).
    pub zero_copy: ZeroCopy,
    /// Paced connections keep their share of the packet queue short (`App::set_small_queues`).
    pub small_queues: bool,
    /// An app that streams has its port batch its frames (`App::set_batching`).
    pub batching: bool,
}

/// The longest a waiting app sleeps before it looks at the flags of the run (stop, connections
/// adopted by the server).
const WAIT_SLICE: Duration = Duration::from_millis(10);

/// Moves frames: at once ([`Wait::Busy`]), or once there is something to do
/// ([`Wait::Blocking`], up to `slice`).
pub(super) fn step(app: &mut App, wait: Wait, slice: Duration) -> std::io::Result<usize> {
    match wait {
        Wait::Busy => app.poll(),
        Wait::Blocking => app.wait(Some(slice)),
    }
}

impl Params<'_> {
    /// The hosts that run etran (datapath and daemon): the client's first.
    fn etran_hosts(&self) -> Vec<&NetNs> {
        match self.peer {
            Peer::Etran => vec![self.client, self.server],
            Peer::Linux => vec![self.client],
        }
    }
}

/// Runs the echo over eTran. `watch` runs on the calling thread while the clients run (the
/// caller's progress display); its argument tells whether the clients are done.
pub fn run(
    p: &Params<'_>,
    progress: &Progress,
    watch: impl FnOnce(&dyn Fn() -> bool) + Send,
) -> anyhow::Result<Outcome> {
    etran_hosts::with_daemons(
        &p.etran_hosts(),
        p.backend,
        p.pacing,
        p.zero_copy,
        Default::default(),
        "echo",
        |socks| apps(p, socks, progress, watch),
    )
}

fn apps(
    p: &Params<'_>,
    socks: &[PathBuf],
    progress: &Progress,
    watch: impl FnOnce(&dyn Fn() -> bool) + Send,
) -> anyhow::Result<Outcome> {
    let mut probe = Probe::open(p.client, (p.peer == Peer::Etran).then_some(p.server))?;
    let before = probe.snapshot()?;
    let n = p.shares.len();
    let stop = AtomicBool::new(false);
    // A Linux server that blocks in epoll_wait sees `stop` only once woken.
    let linux_wakers: Mutex<Vec<Arc<Waker>>> = Mutex::default();
    let phases = Phases::default();
    // Per share: connections its server app adopted (a Linux server needs no adopting).
    let unadopted = if p.peer == Peer::Linux { u64::MAX } else { 0 };
    let adopted: Vec<AtomicU64> = p.shares.iter().map(|_| AtomicU64::new(unadopted)).collect();
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
    let mut closed_conns = [0u64; 2];
    let run = std::thread::scope(|s| -> anyhow::Result<(ClientResult, Vec<AppFrames>, [u64; 2])> {
        let servers: Vec<_> = p
            .shares
            .iter()
            .enumerate()
            .map(|(i, share)| {
                let (ready_tx, stop, adopted) = (ready_tx.clone(), &stop, &adopted[i]);
                let linux_wakers = &linux_wakers;
                s.spawn(move || -> anyhow::Result<Option<AppFrames>> {
                    let setup = (|| {
                        p.server.enter()?;
                        super::support::pin_to_cpu(share.server_cpu)?;
                        let port = share.server.port();
                        Ok(match p.peer {
                            Peer::Etran => {
                                let mut app = register(&socks[1], format!("server {i}"), p)?;
                                let listener = app.listen(port)?;
                                Server::Etran(Box::new(app), listener)
                            }
                            Peer::Linux => {
                                let server = linux_echo::Server::bind(
                                    (std::net::Ipv4Addr::UNSPECIFIED, port).into(),
                                )?;
                                let mut w = linux_wakers.lock().unwrap_or_else(|p| p.into_inner());
                                w.push(server.waker());
                                Server::Linux(server)
                            }
                        })
                    })();
                    match setup {
                        Ok(Server::Etran(mut app, listener)) => {
                            let _ = ready_tx.send(Ok(()));
                            let churn = p.churn.is_some();
                            let unclosed = serve(
                                &mut app,
                                &listener,
                                p.wait,
                                share.conns,
                                churn,
                                adopted,
                                stop,
                                || Echoing,
                            )?;
                            app.quiesce(&unclosed).map(Some)
                        }
                        Ok(Server::Linux(server)) => {
                            let _ = ready_tx.send(Ok(()));
                            server.run(p.wait, stop).map(|_| None)
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(anyhow::anyhow!("{e:#}")));
                            Err(e)
                        }
                    }
                })
            })
            .collect();
        drop(ready_tx);
        let ready = (0..n).try_for_each(|_| {
            ready_rx.recv().unwrap_or_else(|_| Err(anyhow::anyhow!("server died")))
        });
        let clients: Vec<_> = match &ready {
            Err(_) => Vec::new(),
            Ok(()) => p
                .shares
                .iter()
                .enumerate()
                .map(|(i, _)| {
                    let (phases, adopted) = (&phases, &adopted[i]);
                    s.spawn(move || -> anyhow::Result<(ClientResult, AppFrames)> {
                        let r = client(p, i, &socks[0], phases, adopted, progress);
                        if r.is_err() {
                            phases.failed.store(true, Ordering::Release);
                        }
                        r
                    })
                })
                .collect(),
        };
        let peak = std::cell::Cell::new([0u64; 2]);
        let sampled = std::cell::Cell::new(Instant::now());
        watch(&|| {
            // The display's polling doubles as the sampler of the connection maps, once a
            // second under churn (walking a large map is not free).
            if p.churn.is_some() && sampled.get().elapsed() >= Duration::from_secs(1) {
                sampled.set(Instant::now());
                if let Ok(c) = probe.conns() {
                    let old = peak.get();
                    peak.set([old[0].max(c[0]), old[1].max(c[1])]);
                }
            }
            let finished = clients.iter().filter(|c| c.is_finished()).count();
            finished + phases.closed.load(Ordering::Acquire) as usize >= clients.len()
        });
        if !clients.is_empty() && phases.closed.load(Ordering::Acquire) as usize == clients.len() {
            // Every client closed its connections; the servers close theirs as the FINs come.
            let give_up = Instant::now() + Duration::from_secs(2);
            closed_conns = probe.conns()?;
            while closed_conns != before.tcp_conns && Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(10));
                closed_conns = probe.conns()?;
            }
        }
        // The last to arrive: lets the clients go on.
        if phases.pass(&phases.closed, clients.len() + 1).is_err() {
            phases.failed.store(true, Ordering::Release);
        }
        let mut total = ClientResult::new();
        let mut frames = Vec::new();
        let mut first_err = ready.err().map(|e| e.context("eTran echo server"));
        // The cause, rather than the threads that gave up because of it.
        let mut note = |e: anyhow::Error| {
            if first_err.as_ref().is_none_or(|f| f.is::<Abandoned>() && !e.is::<Abandoned>()) {
                first_err = Some(e);
            }
        };
        for c in clients {
            match joined(c) {
                Ok((r, f)) => {
                    total.merge(&r)?;
                    frames.push(f);
                }
                Err(e) => note(e.context("eTran echo client")),
            }
        }
        stop.store(true, Ordering::Relaxed);
        // Dropped once woken: each holds a descriptor the leak check counts.
        for w in linux_wakers.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = w.wake();
        }
        for srv in servers {
            match joined(srv) {
                Ok(f) => frames.extend(f),
                Err(e) => note(e.context("eTran echo server")),
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok((total, frames, peak.get())),
        }
    });
    let (result, apps, peak_conns) = run?;
    // The daemons tear down closed sessions asynchronously: give them a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = probe.snapshot()?;
    while after != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        after = probe.snapshot()?;
    }
    Ok(Outcome { result, leaks: LeakCheck { before, closed_conns, after, peak_conns, apps } })
}

/// A panicking thread becomes an error, so that the teardown still runs.
fn joined<T>(h: std::thread::ScopedJoinHandle<'_, anyhow::Result<T>>) -> anyhow::Result<T> {
    h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the thread panicked")))
}

/// One share's echo server (the app boxed: it is large, and a Linux server small).
enum Server {
    Etran(Box<Probed>, Listener),
    Linux(linux_echo::Server),
}

/// Registers an app with the daemon at `sock`; `role` names it in the leak check; its paced
/// connections keep their small queues, and its port batches, as `p` says.
fn register(sock: &Path, role: String, p: &Params<'_>) -> anyhow::Result<Probed> {
    let mut app = App::open(sock)?;
    app.set_small_queues(p.small_queues);
    app.set_batching(p.batching);
    let tx_free_at_open = app.port().tx_frames().available();
    Ok(Probed { app, role, tx_free_at_open })
}

/// An app and what the leak check needs to know about it.
struct Probed {
    app: App,
    role: String,
    tx_free_at_open: u32,
}

impl std::ops::Deref for Probed {
    type Target = App;
    fn deref(&self) -> &App {
        &self.app
    }
}

impl std::ops::DerefMut for Probed {
    fn deref_mut(&mut self) -> &mut App {
        &mut self.app
    }
}

impl Probed {
    /// Aborts the connections in `unclosed` (their close did not complete), waits (briefly)
    /// for the kernel to complete every TX frame, then reports the pool.
    fn quiesce(mut self, unclosed: &[ConnId]) -> anyhow::Result<AppFrames> {
        if !unclosed.is_empty() {
            let states: Vec<_> = unclosed
                .iter()
                .filter_map(|&id| self.app.stream(id))
                .map(|s| s.close_state())
                .collect();
            crate::log::warn(format!("{}: connections that did not close: {states:?}", self.role));
        }
        for &id in unclosed {
            self.app.abort(id);
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            self.app.poll()?;
            let pool = self.app.port().tx_frames();
            if pool.available() == pool.capacity() || Instant::now() >= deadline {
                return Ok(AppFrames {
                    counters: self.app.counters(),
                    app: self.role,
                    tx_frames: pool.capacity(),
                    tx_free_at_open: self.tx_free_at_open,
                    tx_free_at_end: pool.available(),
                    unclosed: unclosed.len(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Where the client threads wait for each other: to start measuring together once all are
/// connected, and once all closed their connections, for the leak check's look at the
/// connection maps (the main thread is the last to arrive there).
#[derive(Default)]
struct Phases {
    connected: AtomicU32,
    closed: AtomicU32,
    failed: AtomicBool,
}

impl Phases {
    /// Arrives at `phase` and waits until `n` arrived (or a thread failed).
    fn pass(&self, phase: &AtomicU32, n: usize) -> anyhow::Result<()> {
        phase.fetch_add(1, Ordering::AcqRel);
        while (phase.load(Ordering::Acquire) as usize) < n {
            if self.failed.load(Ordering::Acquire) {
                return Err(Abandoned.into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

/// A thread gave up because another failed: that one's error is the one to report.
#[derive(Debug)]
struct Abandoned;

impl std::fmt::Display for Abandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("another thread failed")
    }
}

impl std::error::Error for Abandoned {}

/// Forgets the connections in `closing` that are closed; returns how many. One that failed
/// (reset, timed out) instead of closing is an error.
pub(super) fn reap(app: &mut App, closing: &mut Vec<ConnId>) -> anyhow::Result<u64> {
    let mut n = 0;
    let mut i = 0;
    while i < closing.len() {
        let id = closing[i];
        if !app.is_closed(id) {
            i += 1;
            continue;
        }
        if let Some(e) = app.stream(id).and_then(|s| s.error()) {
            bail!("a connection failed while closing: {}", std::io::Error::from(e));
        }
        app.remove_connection(id);
        closing.swap_remove(i);
        n += 1;
    }
    Ok(n)
}

/// Serves every connection with a [`Service`] of its own (`new`) until `stop`: the echo, or
/// the RPCs of `bench rpc`; accepts connections on the way (up to `expect`, or without end
/// under churn) and closes each one the client closed. Returns the connections not closed by
/// then.
#[allow(clippy::too_many_arguments)]
pub(super) fn serve<S: Service>(
    app: &mut App,
    listener: &Listener,
    wait: Wait,
    expect: u32,
    churn: bool,
    adopted: &AtomicU64,
    stop: &AtomicBool,
    mut new: impl FnMut() -> S,
) -> anyhow::Result<Vec<ConnId>> {
    let mut conns: Vec<(ConnId, S, Vec<u8>)> = Vec::new();
    let mut closing = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut passes = 0u32;
    while !stop.load(Ordering::Relaxed) {
        // Accepting costs a syscall: only while connections are expected, every 16th pass of a
        // busy loop (a waiting app wakes for the daemon's message).
        passes = passes.wrapping_add(1);
        let expected = churn || (adopted.load(Ordering::Relaxed) as usize) < expect as usize;
        if expected && (wait == Wait::Blocking || passes % 16 == 0) {
            while let Some(id) = ready(app.accept(listener))? {
                conns.push((id, new(), Vec::new()));
                adopted.fetch_add(1, Ordering::Release);
            }
        }
        step(app, wait, WAIT_SLICE)?;
        let mut i = 0;
        while i < conns.len() {
            let (id, service, pending) = &mut conns[i];
            let mut ended = false;
            loop {
                if !pending.is_empty() {
                    match app.send_more(*id, pending) {
                        Ok(n) => drop(pending.drain(..n)),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e).context("echoing"),
                    }
                    if !pending.is_empty() {
                        break;
                    }
                }
                match app.recv(*id, &mut buf) {
                    Ok(0) => {
                        ended = true;
                        break;
                    }
                    Ok(n) => service.on_bytes(&buf[..n], pending)?,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e).context("receiving"),
                }
            }
            if ended {
                // The client closed its side (everything echoed): close ours.
                app.close(*id).context("closing")?;
                closing.push(*id);
                conns.swap_remove(i);
            } else {
                i += 1;
            }
        }
        reap(app, &mut closing)?;
    }
    closing.extend(conns.iter().map(|c| c.0));
    Ok(closing)
}

struct Conn {
    conn: ConnId,
    echo: Echo,
    /// This client thread's n-th connection (1-based): messages start once its server thread
    /// adopted that many.
    seq: u64,
    started: bool,
}

/// Client thread `index`: its share of the connections, measured from the moment every client
/// thread is connected. After the deadline it lets the messages in flight come back (not
/// counted), closes every connection and waits until they are closed, for the leak check.
fn client(
    p: &Params<'_>,
    index: usize,
    sock: &Path,
    phases: &Phases,
    adopted: &AtomicU64,
    progress: &Progress,
) -> anyhow::Result<(ClientResult, AppFrames)> {
    let share = &p.shares[index];
    p.client.enter()?;
    super::support::pin_to_cpu(share.client_cpu)?;
    let mut app = register(sock, format!("client {index}"), p)?;
    let mut result = ClientResult::new();
    let mut conns = Vec::with_capacity(share.conns as usize);
    for i in 0..share.conns {
        let echo = Echo::new(share.first_conn_id + i, p.depth, p.churn);
        conns.push(open(&mut app, share, echo, &mut result)?);
    }
    phases.pass(&phases.connected, p.shares.len())?;
    let size = u64::from(p.size);
    let deadline = Instant::now() + p.duration;
    let mut buf = vec![0u8; 1 << 16];
    let mut run = Exchange { size, deadline, adopted, wait: p.wait };
    let mut closing = Vec::new();
    let mut published = 0;
    result.window_starts();
    while Instant::now() < deadline {
        run.pass(&mut app, &mut conns, &mut buf, &mut result)?;
        progress.publish(&result, &mut published);
        for c in &mut conns {
            if c.echo.finished() {
                app.close(c.conn).context("closing a connection")?;
                closing.push(c.conn);
                let echo = c.echo.successor(share.id_stride);
                *c = open(&mut app, share, echo, &mut result)?;
            }
        }
        let closed = reap(&mut app, &mut closing)?;
        if closed > 0 {
            result.closes += closed;
            progress.reopened.fetch_add(closed, Ordering::Relaxed);
        }
    }
    result.window_ends();
    // The messages still in flight come back before the connections close (not counted).
    let mut late = ClientResult::new();
    let give_up = Instant::now() + Duration::from_secs(3);
    while conns.iter().any(|c| !c.echo.idle()) {
        if Instant::now() >= give_up {
            let stuck: Vec<u32> =
                conns.iter().filter(|c| !c.echo.idle()).map(|c| c.echo.id).collect();
            bail!("echoes on connections {stuck:?} still missing 3 s after the end of the run");
        }
        run.pass(&mut app, &mut conns, &mut buf, &mut late)?;
    }
    for c in &conns {
        app.close(c.conn).context("closing a connection")?;
        closing.push(c.conn);
    }
    let give_up = Instant::now() + Duration::from_secs(3);
    while !closing.is_empty() && Instant::now() < give_up {
        step(&mut app, p.wait, WAIT_SLICE)?;
        reap(&mut app, &mut closing)?;
    }
    phases.pass(&phases.closed, p.shares.len() + 1)?;
    let frames = app.quiesce(&closing)?;
    Ok((result, frames))
}

/// Opens the client thread's next connection (blocking for the handshake) for `echo`.
fn open(
    app: &mut App,
    share: &Share,
    echo: Echo,
    result: &mut ClientResult,
) -> anyhow::Result<Conn> {
    result.opens += 1;
    let seq = result.opens;
    let t = Instant::now();
    let conn = app.connect_blocking(share.server).with_context(|| {
        format!("opening connection {seq} to {} (after {:?})", share.server, t.elapsed())
    })?;
    Ok(Conn { conn, echo, seq, started: false })
}

/// The client loop's fixed inputs.
struct Exchange<'a> {
    size: u64,
    deadline: Instant,
    adopted: &'a AtomicU64,
    wait: Wait,
}

impl Exchange<'_> {
    /// One pass over the connections: polls the port, starts the adopted connections, checks
    /// echoes, sends queued messages.
    fn pass(
        &mut self,
        app: &mut App,
        conns: &mut [Conn],
        buf: &mut [u8],
        result: &mut ClientResult,
    ) -> anyhow::Result<()> {
        step(app, self.wait, WAIT_SLICE)?;
        for c in conns {
            if !c.started {
                // Start once the server app adopted the connection, so that no round trip
                // counts the accept (the library would hold earlier bytes: app::early).
                if self.adopted.load(Ordering::Acquire) < c.seq {
                    continue;
                }
                c.echo.start(self.size, Instant::now());
                c.started = true;
            }
            loop {
                let n = match app.recv(c.conn, buf) {
                    Ok(0) => bail!("the server closed connection {}", c.echo.id),
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e).context("receiving echoes"),
                };
                c.echo.on_echo(&buf[..n], self.size, self.deadline, result)?;
            }
            while !c.echo.unsent().is_empty() {
                match app.send_more(c.conn, c.echo.unsent()) {
                    Ok(n) => c.echo.sent(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e).context("sending messages"),
                }
            }
        }
        Ok(())
    }
}

/// What the eTran run measured, and its leak check.
pub struct Outcome {
    pub result: ClientResult,
    pub leaks: LeakCheck,
}

/// Counts that must come back to where they started once every app has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Entries in `etran_tcp_conns`: client host, server host.
    pub tcp_conns: [u64; 2],
    /// App ports (veth pairs) the daemons hold: client host, server host.
    pub app_ports: [u64; 2],
    /// Open descriptors of this process, where the daemons and the apps run.
    pub fds: u64,
}

/// One app at its end: its UMEM TX pool must be all free again once nothing is in flight (RX
/// frames go back to the fill ring as each poll consumes them), and every connection closed.
#[derive(Debug, Clone, Serialize)]
pub struct AppFrames {
    pub app: String,
    pub tx_frames: u32,
    pub tx_free_at_open: u32,
    pub tx_free_at_end: u32,
    /// Connections whose close did not complete within 3 s (then aborted).
    pub unclosed: usize,
    /// The app's counters over its whole life (connecting and closing included).
    #[serde(skip)]
    pub counters: AppCounters,
}

#[derive(Debug, Clone, Serialize)]
pub struct LeakCheck {
    /// Before any app registered.
    pub before: Snapshot,
    /// `etran_tcp_conns` entries (client host, server host) once every connection was closed,
    /// the apps still registered: what orderly closes left.
    pub closed_conns: [u64; 2],
    /// After every app closed its connections and its session.
    pub after: Snapshot,
    /// The most `etran_tcp_conns` entries seen during the run (client host, server host).
    pub peak_conns: [u64; 2],
    pub apps: Vec<AppFrames>,
}

impl LeakCheck {
    /// Every app's counters together.
    pub fn counters(&self) -> AppCounters {
        let mut c = AppCounters::default();
        for a in &self.apps {
            c += a.counters;
        }
        c
    }

    /// What grew, one line each; empty when nothing leaked.
    pub fn leaks(&self) -> Vec<String> {
        let (b, a) = (&self.before, &self.after);
        let mut out = Vec::new();
        for (i, host) in ["client", "server"].iter().enumerate() {
            if self.closed_conns[i] > b.tcp_conns[i] {
                out.push(format!(
                    "{host} host: {} etran_tcp_conns entries after every connection closed \
                     (started with {})",
                    self.closed_conns[i], b.tcp_conns[i]
                ));
            }
            if a.tcp_conns[i] > b.tcp_conns[i] {
                out.push(format!(
                    "{host} host: {} etran_tcp_conns entries left (started with {})",
                    a.tcp_conns[i], b.tcp_conns[i]
                ));
            }
            if a.app_ports[i] > b.app_ports[i] {
                out.push(format!(
                    "{host} host: {} app ports left (started with {})",
                    a.app_ports[i], b.app_ports[i]
                ));
            }
        }
        if a.fds > b.fds {
            out.push(format!("{} descriptors open, {} before the apps", a.fds, b.fds));
        }
        for f in &self.apps {
            if f.unclosed > 0 {
                out.push(format!("{}: {} connections did not close", f.app, f.unclosed));
            }
            if f.tx_free_at_end < f.tx_free_at_open {
                out.push(format!(
                    "{}: {} of {} TX frames free at the end, {} at the start",
                    f.app, f.tx_free_at_end, f.tx_frames, f.tx_free_at_open
                ));
            }
        }
        out
    }
}

/// Reads the counts of a [`Snapshot`]; its own descriptors are open before the first snapshot,
/// so they cancel out. A server host without etran (a Linux peer) counts 0.
struct Probe {
    conns: [Option<MapHandle>; 2],
    netlink: [Option<Netlink>; 2],
}

impl Probe {
    fn open(client: &NetNs, server: Option<&NetNs>) -> anyhow::Result<Probe> {
        let conns = |ns: &NetNs| -> anyhow::Result<MapHandle> {
            ns.run(|| -> anyhow::Result<MapHandle> {
                let dp = loader::find(HOST_NIC)?.context("etran is not up")?;
                Ok(crate::transport::tcp::tcp_handles(dp.summary.prog_id)?.conns)
            })?
        };
        Ok(Probe {
            conns: [Some(conns(client)?), server.map(conns).transpose()?],
            netlink: [Some(Netlink::open_in(client)?), server.map(Netlink::open_in).transpose()?],
        })
    }

    fn conns(&self) -> anyhow::Result<[u64; 2]> {
        Ok(self.conns.each_ref().map(|m| m.as_ref().map_or(0, |m| m.keys().count() as u64)))
    }

    fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        let mut app_ports = [0u64; 2];
        for (n, nl) in app_ports.iter_mut().zip(&mut self.netlink) {
            if let Some(nl) = nl {
                *n = nl.links()?.iter().filter(|l| port::is_port_name(&l.name)).count() as u64;
            }
        }
        let fds = std::fs::read_dir("/proc/self/fd").context("listing /proc/self/fd")?.count();
        Ok(Snapshot { tcp_conns: self.conns()?, app_ports, fds: fds as u64 })
    }
}
