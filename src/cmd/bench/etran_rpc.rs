//! The eTran Homa side of `etran bench rpc`: etran on every host of the run ([`etran_hosts`]),
//! and per server port of the [`Plan`] one server [`RpcSocket`] (its own registration and Homa
//! port) on the servers' host answering every request, and per client thread one client
//! [`RpcSocket`] on its host keeping `depth` RPCs outstanding for each of its clients, each
//! RPC slot to its port, placed as the Linux engine places its threads. Same RPCs and checks
//! as the Linux engine ([`super::rpc_msg`]). After the deadline the RPCs in flight complete
//! (not counted); an RPC without a response for `rpc_timeout` fails the run. Once every socket
//! is gone, no Homa RPC may be left in any host's datapath.
use std::{
    cell::RefCell,
    io,
    net::SocketAddrV4,
    path::{Path, PathBuf},
    rc::Rc,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use libbpf_rs::MapCore;

use super::{
    arrivals::Arrivals,
    etran_hosts,
    linux_echo::{Progress, Wait},
    rpc_msg::{self, Call, Caller, ClientWindow, ResponseSize, RpcResult, Seconds},
    rpc_plan::{ClientThread, Plan, ServerPort},
    support::{Start, Ticket},
    workload::Workload,
};
use crate::{
    app::rpc::RpcSocket,
    app::AppCounters,
    backend::native::ZeroCopy,
    bpf::entrance::types::{etran_backend, etran_pacing},
    loader::{self, HomaSched},
    netns::NetNs,
    testbed::HOST_NIC,
};

/// What one eTran run needs.
pub struct Params<'a> {
    /// The run's hosts: its client hosts in order (testbed host `h` at `h - 1`), then the
    /// servers' host.
    pub hosts: &'a [NetNs],
    /// One server socket per port, one client socket per client thread.
    pub plan: &'a Plan,
    pub workload: Workload,
    pub response: ResponseSize,
    pub duration: Duration,
    pub wait: Wait,
    pub rpc_timeout: Duration,
    /// Each client thread's offered load in Gbit/s of requests (open loop); 0 is closed loop.
    pub gbps: f64,
    /// Keep every RPC's length and RTT (`--dump-times`).
    pub keep_times: bool,
    /// Where the client threads merge what the per-second lines report.
    pub seconds: &'a Seconds,
    /// Homa's grant scheduler on both hosts.
    pub sched: HomaSched,
    /// The datapath backend of every host.
    pub backend: etran_backend,
    /// Their pacing (TCP's, and Homa's at the link rate `sched` gives).
    pub pacing: etran_pacing,
    /// Their daemons' zero copy (native).
    pub zero_copy: ZeroCopy,
}

/// What the eTran run measured.
pub struct Outcome {
    pub result: RpcResult,
    /// Every socket's port counters together (both hosts).
    pub counters: AppCounters,
}

/// The longest a waiting socket sleeps before it looks at the run's flags and its RPCs' ages.
const WAIT_SLICE: Duration = Duration::from_millis(10);

/// Moves frames: at once ([`Wait::Busy`]), or once there is something to do
/// ([`Wait::Blocking`], up to `slice`).
fn step(sock: &mut RpcSocket, wait: Wait, slice: Duration) -> io::Result<usize> {
    match wait {
        Wait::Busy => sock.run_once(),
        Wait::Blocking => sock.wait(slice),
    }
}

/// Runs the RPCs over eTran Homa. `watch` runs on the calling thread while the clients run
/// (the caller's progress display); its argument tells whether the clients are done.
pub fn run(
    p: &Params<'_>,
    progress: &Progress,
    watch: impl FnOnce(&dyn Fn() -> bool),
) -> anyhow::Result<Outcome> {
    p.with_daemons(|socks| {
        let outcome = sockets(p, socks, progress, watch)?;
        for ns in p.hosts {
            rpcs_drained(ns)?;
        }
        Ok(outcome)
    })
}

impl Params<'_> {
    /// Runs `apps` with etran up and a daemon on every host of the run as its parameters say
    /// ([`etran_hosts::with_daemons`]; the sockets come in the hosts' order).
    pub(super) fn with_daemons<T>(
        &self,
        apps: impl FnOnce(&[PathBuf]) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let hosts: Vec<&NetNs> = self.hosts.iter().collect();
        let (backend, pacing, zero_copy) = (self.backend, self.pacing, self.zero_copy);
        etran_hosts::with_daemons(&hosts, backend, pacing, zero_copy, self.sched, "rpc", apps)
    }
}

fn sockets(
    p: &Params<'_>,
    socks: &[PathBuf],
    progress: &Progress,
    watch: impl FnOnce(&dyn Fn() -> bool),
) -> anyhow::Result<Outcome> {
    threads(
        p,
        socks,
        watch,
        |port, sock| Ok(RpcSocket::open(sock, port.addr.port())?),
        |sock, stop| serve(sock, p.wait, stop),
        |thread, sock, start| client(p, thread, sock, start, progress),
    )
}

/// An eTran row's threads: per server port a server thread in the servers' host
/// (`open_server` there on its CPU, then `serve` until the clients are done) and, once every
/// server is open, each client thread in its host on its CPU (`client`, until `deadline` and
/// its RPCs in flight complete). `watch` runs on the calling thread meanwhile. The first error
/// ends the run: the cause rather than the threads that gave up because of it.
pub(super) fn threads<S>(
    p: &Params<'_>,
    socks: &[PathBuf],
    watch: impl FnOnce(&dyn Fn() -> bool),
    open_server: impl Fn(&ServerPort, &Path) -> anyhow::Result<S> + Sync,
    serve: impl Fn(S, &AtomicBool) -> anyhow::Result<AppCounters> + Sync,
    client: impl Fn(&ClientThread, &Path, Ticket<'_>) -> anyhow::Result<(RpcResult, AppCounters)> + Sync,
) -> anyhow::Result<Outcome> {
    let stop = AtomicBool::new(false);
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
    let (server_ns, server_sock) = (p.hosts.last().context("no host")?, socks.last());
    let server_sock = server_sock.context("no daemon")?;
    let start = Start::new(p.plan.clients.len(), p.duration);
    std::thread::scope(|s| {
        let servers: Vec<_> = p
            .plan
            .ports
            .iter()
            .map(|port| {
                let (ready_tx, stop) = (ready_tx.clone(), &stop);
                let (open_server, serve) = (&open_server, &serve);
                s.spawn(move || -> anyhow::Result<AppCounters> {
                    let setup = (|| -> anyhow::Result<S> {
                        server_ns.enter()?;
                        super::support::pin_to_cpu(port.cpu)?;
                        open_server(port, server_sock)
                    })();
                    let _ = ready_tx.send(setup.as_ref().map(|_| ()).map_err(|e| {
                        anyhow::anyhow!("server on port {}: {e:#}", port.addr.port())
                    }));
                    serve(setup?, stop)
                })
            })
            .collect();
        drop(ready_tx);
        let ready = (0..p.plan.ports.len()).try_for_each(|_| {
            ready_rx.recv().unwrap_or_else(|_| Err(anyhow::anyhow!("a server died")))
        });
        let clients: Vec<_> = match &ready {
            Err(_) => Vec::new(),
            Ok(()) => p
                .plan
                .clients
                .iter()
                .map(|thread| {
                    let at = usize::from(thread.host) - 1;
                    let (ns, sock, client, start) = (&p.hosts[at], &socks[at], &client, &start);
                    s.spawn(move || {
                        let ticket = start.ticket();
                        ns.enter()?;
                        super::support::pin_to_cpu(thread.cpu)?;
                        client(thread, sock, ticket)
                    })
                })
                .collect(),
        };
        watch(&|| clients.iter().all(|c| c.is_finished()));
        let mut first_err = ready.err();
        let mut total = RpcResult::new(&p.workload);
        let mut counters = AppCounters::default();
        for c in clients {
            match c.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the thread panicked"))) {
                Ok((r, c)) => {
                    total.merge(&r)?;
                    counters += c;
                }
                Err(e) => {
                    first_err.get_or_insert(e.context("eTran RPC client"));
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        for srv in servers {
            match srv.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the thread panicked"))) {
                Ok(c) => counters += c,
                Err(e) => {
                    first_err.get_or_insert(e.context("eTran RPC server"));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(Outcome { result: total, counters }),
        }
    })
}

/// A socket's counters in the form every eTran row reports (Homa has no TCP recoveries).
fn counters(sock: &RpcSocket) -> AppCounters {
    let s = sock.app_port().stats();
    AppCounters {
        tx_kicks: s.tx_kicks,
        tx_kick_eagain: s.tx_kick_eagain,
        tx_kick_ebusy: s.tx_kick_ebusy,
        xdp: s.xdp,
        zero_copy_ports: s.zero_copy.into(),
        ..AppCounters::default()
    }
}

/// Answers every request until `stop`; a request that fails its check ends the run.
fn serve(mut sock: RpcSocket, wait: Wait, stop: &AtomicBool) -> anyhow::Result<AppCounters> {
    let failed: Rc<RefCell<Option<anyhow::Error>>> = Rc::default();
    let f = failed.clone();
    sock.set_request_handler(move |s, req, bytes| {
        let mut out = Vec::new();
        let r = rpc_msg::answer(&bytes, &mut out)
            .and_then(|()| Ok(s.enqueue_response(req, out)?))
            .with_context(|| format!("answering {}", req.client()));
        if let Err(e) = r {
            f.borrow_mut().get_or_insert(e);
        }
    });
    while !stop.load(Ordering::Relaxed) {
        step(&mut sock, wait, WAIT_SLICE)?;
        if let Some(e) = failed.borrow_mut().take() {
            return Err(e);
        }
    }
    Ok(counters(&sock))
}

/// Responses as their continuations hand them over: (slot, response).
type Completions = Rc<RefCell<Vec<(usize, io::Result<Vec<u8>>)>>>;

/// One client thread: its clients, `depth` RPCs outstanding each (open loop: at most), each
/// RPC slot to its port, from the common start until its deadline; then the RPCs in flight
/// complete, uncounted.
fn client(
    p: &Params<'_>,
    thread: &ClientThread,
    sock: &Path,
    start: Ticket<'_>,
    progress: &Progress,
) -> anyhow::Result<(RpcResult, AppCounters)> {
    let mut sock = RpcSocket::open(sock, 0)?;
    let deadline = start.ready();
    let mut callers: Vec<(SocketAddrV4, Caller)> =
        p.plan.callers(thread, p.workload, p.response).collect();
    let mut slots: Vec<Option<Call>> = vec![None; callers.len()];
    let done: Completions = Rc::default();
    let mut issue = |sock: &mut RpcSocket, slots: &mut [Option<Call>], k: usize| {
        let (server, caller) = &mut callers[k];
        let (call, buf) = caller.next();
        slots[k] = Some(call);
        let done = done.clone();
        sock.enqueue_request(*server, buf, move |_, r| done.borrow_mut().push((k, r)))
            .context("queueing a request")
    };
    let mut result = RpcResult::new(&p.workload).keeping_times(p.keep_times).on_host(thread.host);
    let seed = u64::from(thread.first_client) + 1;
    let mut arrivals = Arrivals::new(p.gbps, p.workload.mean(), seed, Instant::now());
    // Open loop: the slots without an RPC.
    let mut free = Vec::new();
    for k in 0..slots.len() {
        if arrivals.reissue_on_completion() {
            issue(&mut sock, &mut slots, k)?;
        } else {
            free.push(k);
        }
    }
    let mut published = 0;
    let mut window = ClientWindow::open(&mut result, deadline, WAIT_SLICE, p.rpc_timeout);
    while window.measuring() || slots.iter().any(Option::is_some) {
        step(&mut sock, p.wait, arrivals.sleep(Instant::now(), WAIT_SLICE))?;
        let completed = std::mem::take(&mut *done.borrow_mut());
        let now = Instant::now();
        for (k, response) in completed {
            let call = slots[k].take().context("a response to no request")?;
            let response = response.context("an RPC failed")?;
            if now < deadline {
                result.complete(&call, &response, now)?;
                if arrivals.reissue_on_completion() {
                    issue(&mut sock, &mut slots, k)?;
                } else {
                    free.push(k);
                }
            } else {
                call.check(&response)?;
            }
        }
        if now < deadline {
            while let Some(k) = arrivals.due(now, || free.pop()) {
                issue(&mut sock, &mut slots, k)?;
            }
        }
        progress.publish(&result.total, &mut published);
        result.publish(p.seconds, now);
        window.tick(now, &mut result, slots.iter().flatten())?;
    }
    result.late = arrivals.late();
    Ok((result, counters(&sock)))
}

/// Waits (up to 5 s: the daemon tears sessions down asynchronously) until host `ns`'s
/// datapath holds no Homa RPC.
fn rpcs_drained(ns: &NetNs) -> anyhow::Result<()> {
    let rpcs = || -> anyhow::Result<usize> {
        ns.run(|| -> anyhow::Result<usize> {
            let dp = loader::find(HOST_NIC)?.context("etran is not up")?;
            let h = crate::transport::homa::control::homa_handles(dp.summary.prog_id)?;
            Ok(h.rpcs.keys().count())
        })?
    };
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        let n = rpcs()?;
        if n == 0 {
            return Ok(());
        }
        if Instant::now() >= give_up {
            bail!("{n} Homa RPCs left in a host's datapath after every socket closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
