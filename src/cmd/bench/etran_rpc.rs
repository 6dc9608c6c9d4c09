//! The eTran Homa side of `etran bench rpc`: etran on both hosts ([`etran_hosts`]), and per
//! [`Share`] one server [`RpcSocket`] (its own registration and Homa port) on the server host
//! answering every request, and one client [`RpcSocket`] on the client host keeping `depth`
//! RPCs outstanding for each of its clients, placed as the Linux engine places its threads.
//! Same RPCs and checks as the Linux engine ([`super::rpc_msg`]). After the deadline the RPCs
//! in flight complete (not counted); an RPC without a response for `rpc_timeout` fails the run.
//! Once every socket is gone, no Homa RPC may be left in either host's datapath.
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
    linux_echo::{Progress, Share, Wait},
    rpc_msg::{self, Call, Caller, ResponseSize, RpcResult, Seconds},
    workload::Workload,
};
use crate::{
    app::rpc::RpcSocket,
    app::AppCounters,
    bpf::entrance::types::etran_backend,
    loader::{self, HomaSched},
    netns::NetNs,
    testbed::HOST_NIC,
};

/// What one eTran run needs.
pub struct Params<'a> {
    pub client: &'a NetNs,
    pub server: &'a NetNs,
    /// One client and one server socket per share.
    pub shares: &'a [Share],
    pub depth: u32,
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
    /// The datapath backend of both hosts.
    pub backend: etran_backend,
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
    etran_hosts::with_daemons(&[p.client, p.server], p.backend, p.sched, "rpc", |socks| {
        let outcome = sockets(p, socks, progress, watch)?;
        for ns in [p.client, p.server] {
            rpcs_drained(ns)?;
        }
        Ok(outcome)
    })
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
        |share, sock| Ok(RpcSocket::open(sock, share.server.port())?),
        |sock, stop| serve(sock, p.wait, stop),
        |share, sock, deadline| client(p, share, sock, deadline, progress),
    )
}

/// An eTran row's threads: per share a server thread in the server host (`open_server` there
/// on its CPU, then `serve` until the clients are done) and, once every server is open, a
/// client thread in the client host on its CPU (`client`, until `deadline` and its RPCs in
/// flight complete). `watch` runs on the calling thread meanwhile. The first error ends the
/// run: the cause rather than the threads that gave up because of it.
pub(super) fn threads<S>(
    p: &Params<'_>,
    socks: &[PathBuf],
    watch: impl FnOnce(&dyn Fn() -> bool),
    open_server: impl Fn(&Share, &Path) -> anyhow::Result<S> + Sync,
    serve: impl Fn(S, &AtomicBool) -> anyhow::Result<AppCounters> + Sync,
    client: impl Fn(&Share, &Path, Instant) -> anyhow::Result<(RpcResult, AppCounters)> + Sync,
) -> anyhow::Result<Outcome> {
    let stop = AtomicBool::new(false);
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
    std::thread::scope(|s| {
        let servers: Vec<_> = p
            .shares
            .iter()
            .map(|share| {
                let (ready_tx, stop, sock) = (ready_tx.clone(), &stop, &socks[1]);
                let (open_server, serve) = (&open_server, &serve);
                s.spawn(move || -> anyhow::Result<AppCounters> {
                    let setup = (|| -> anyhow::Result<S> {
                        p.server.enter()?;
                        super::support::pin_to_cpu(share.server_cpu)?;
                        open_server(share, sock)
                    })();
                    let _ = ready_tx.send(setup.as_ref().map(|_| ()).map_err(|e| {
                        anyhow::anyhow!("server on port {}: {e:#}", share.server.port())
                    }));
                    serve(setup?, stop)
                })
            })
            .collect();
        drop(ready_tx);
        let ready = (0..p.shares.len()).try_for_each(|_| {
            ready_rx.recv().unwrap_or_else(|_| Err(anyhow::anyhow!("a server died")))
        });
        let deadline = Instant::now() + p.duration;
        let clients: Vec<_> = match &ready {
            Err(_) => Vec::new(),
            Ok(()) => p
                .shares
                .iter()
                .map(|share| {
                    let (sock, client) = (&socks[0], &client);
                    s.spawn(move || {
                        p.client.enter()?;
                        super::support::pin_to_cpu(share.client_cpu)?;
                        client(share, sock, deadline)
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

/// One client thread: its share's clients, `depth` RPCs outstanding each (slot `k` is client
/// `k / depth`'s; open loop: at most), until `deadline`; then the RPCs in flight complete,
/// uncounted.
fn client(
    p: &Params<'_>,
    share: &Share,
    sock: &Path,
    deadline: Instant,
    progress: &Progress,
) -> anyhow::Result<(RpcResult, AppCounters)> {
    let mut sock = RpcSocket::open(sock, 0)?;
    let mut callers: Vec<Caller> = (0..share.conns)
        .map(|c| Caller::new(share.first_conn_id + c, p.workload, p.response))
        .collect();
    let depth = p.depth as usize;
    let mut slots: Vec<Option<Call>> = vec![None; callers.len() * depth];
    let done: Completions = Rc::default();
    let server: SocketAddrV4 = share.server;
    let mut issue = |sock: &mut RpcSocket, slots: &mut [Option<Call>], k: usize| {
        let (call, buf) = callers[k / depth].next();
        slots[k] = Some(call);
        let done = done.clone();
        sock.enqueue_request(server, buf, move |_, r| done.borrow_mut().push((k, r)))
            .context("queueing a request")
    };
    let mut result = RpcResult::new(&p.workload).keeping_times(p.keep_times);
    let seed = u64::from(share.first_conn_id) + 1;
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
    let (mut published, mut measuring, mut last_check) = (0, true, Instant::now());
    result.total.window_starts();
    while measuring || slots.iter().any(Option::is_some) {
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
        if measuring && now >= deadline {
            result.total.window_ends();
            measuring = false;
        }
        if now.duration_since(last_check) >= WAIT_SLICE {
            last_check = now;
            for call in slots.iter().flatten() {
                call.stalled(now, p.rpc_timeout)?;
            }
        }
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
