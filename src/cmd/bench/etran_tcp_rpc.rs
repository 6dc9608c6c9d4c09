//! The eTran TCP side of `etran bench rpc`: the RPCs the Linux TCP row carries ([`super::rpc_msg`],
//! one connection per outstanding RPC, framed by the lengths in the header), carried by eTran
//! TCP apps on every host of the run, placed as the other rows place their threads: per server
//! port one server [`App`] listening on it on the servers' host, answering every connection
//! with the Linux row's [`Answering`] service ([`etran_echo::serve`]), and per client thread
//! one client [`App`] on its host, each connection to its slot's port. After the deadline the
//! RPCs in flight complete (not counted); then every connection is closed.
use std::{
    io::ErrorKind,
    path::Path,
    sync::atomic::AtomicU64,
    time::{Duration, Instant},
};

use anyhow::Context;

use super::{
    arrivals::Arrivals,
    etran_echo,
    etran_rpc::{self, Outcome, Params},
    linux_echo::Progress,
    linux_rpc::Answering,
    rpc_msg::{ClientWindow, Exchange, RpcResult},
    rpc_plan::ClientThread,
    support::Ticket,
};
use crate::app::{App, AppCounters, ConnId};

/// The longest a waiting app sleeps before it looks at the run's flags and its RPCs' ages.
const WAIT_SLICE: Duration = Duration::from_millis(10);

/// Runs the RPCs over eTran TCP. `watch` runs on the calling thread while the clients run
/// (the caller's progress display); its argument tells whether the clients are done.
pub fn run(
    p: &Params<'_>,
    progress: &Progress,
    watch: impl FnOnce(&dyn Fn() -> bool),
) -> anyhow::Result<Outcome> {
    p.with_daemons(|socks| {
        etran_rpc::threads(
            p,
            socks,
            watch,
            |port, sock| {
                let mut app = App::open(sock)?;
                let listener = app.listen(port.addr.port())?;
                Ok((app, listener, port.slots))
            },
            |(mut app, listener, expect), stop| {
                let adopted = AtomicU64::new(0);
                let unclosed = etran_echo::serve(
                    &mut app,
                    &listener,
                    p.wait,
                    expect,
                    false,
                    &adopted,
                    stop,
                    Answering::default,
                )?;
                for id in unclosed {
                    app.abort(id);
                }
                Ok(app.counters())
            },
            |thread, sock, start| client(p, thread, sock, start, progress),
        )
    })
}

/// One client thread: its clients, one connection per outstanding RPC (`depth` each, each to
/// its slot's port; open loop: at most), made before the common start, until its deadline; then
/// the RPCs in flight complete, uncounted, and the connections close.
fn client(
    p: &Params<'_>,
    thread: &ClientThread,
    sock: &Path,
    start: Ticket<'_>,
    progress: &Progress,
) -> anyhow::Result<(RpcResult, AppCounters)> {
    let mut app = App::open(sock)?;
    let mut conns: Vec<(ConnId, Exchange)> = Vec::new();
    for (server, caller) in p.plan.callers(thread, p.workload, p.response) {
        let id = app.connect_blocking(server).with_context(|| format!("connecting to {server}"))?;
        conns.push((id, Exchange::new(caller)));
    }
    let deadline = start.ready();
    let mut result = RpcResult::new(&p.workload).keeping_times(p.keep_times).on_host(thread.host);
    let seed = u64::from(thread.first_client) + 1;
    let mut arrivals = Arrivals::new(p.gbps, p.workload.mean(), seed, Instant::now());
    // Open loop: the connections without an RPC.
    let mut free = Vec::new();
    for (k, (_, ex)) in conns.iter_mut().enumerate() {
        if arrivals.reissue_on_completion() {
            ex.start();
        } else {
            free.push(k);
        }
    }
    let mut buf = vec![0u8; 1 << 16];
    let mut published = 0;
    let mut window = ClientWindow::open(&mut result, deadline, WAIT_SLICE, p.rpc_timeout);
    while window.measuring() || conns.iter().any(|(_, ex)| ex.in_flight().is_some()) {
        // Responses first: a request started on one goes out below, before the step sleeps.
        for (k, (id, ex)) in conns.iter_mut().enumerate() {
            loop {
                let n = match app.recv(*id, &mut buf) {
                    Ok(0) => anyhow::bail!("the server closed a connection"),
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e).context("receiving responses"),
                };
                let now = Instant::now();
                if ex.on_response(&buf[..n], now, deadline, &mut result)? && now < deadline {
                    if arrivals.reissue_on_completion() {
                        ex.start();
                    } else {
                        free.push(k);
                    }
                }
            }
            while !ex.unsent().is_empty() {
                match app.send_more(*id, ex.unsent()) {
                    Ok(n) => ex.sent(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e).context("sending a request"),
                }
            }
        }
        etran_echo::step(&mut app, p.wait, arrivals.sleep(Instant::now(), WAIT_SLICE))?;
        let now = Instant::now();
        if now < deadline {
            while let Some(k) = arrivals.due(now, || free.pop()) {
                conns[k].1.start();
            }
        }
        progress.publish(&result.total, &mut published);
        result.publish(p.seconds, now);
        window
            .tick(now, &mut result, conns.iter().filter_map(|(_, ex)| ex.in_flight()))
            .with_context(|| oldest_rpc(&app, &conns))?;
    }
    result.late = arrivals.late();
    let mut closing: Vec<ConnId> = conns.iter().map(|(id, _)| *id).collect();
    for id in &closing {
        app.close(*id).context("closing a connection")?;
    }
    let counters = app.counters();
    // The FINs go both ways (the server closes as it sees ours).
    let give_up = Instant::now() + Duration::from_secs(3);
    while !closing.is_empty() && Instant::now() < give_up {
        etran_echo::step(&mut app, p.wait, WAIT_SLICE)?;
        etran_echo::reap(&mut app, &mut closing)?;
    }
    Ok((result, counters))
}

/// Where the oldest RPC in flight stands, on its exchange and its connection: whose side a
/// stalled RPC waits on.
fn oldest_rpc(app: &App, conns: &[(ConnId, Exchange)]) -> String {
    let Some((id, ex)) = conns
        .iter()
        .filter(|(_, ex)| ex.in_flight().is_some())
        .min_by_key(|(_, ex)| ex.in_flight().map(|c| c.sent))
    else {
        return "no RPC in flight".into();
    };
    let Some(s) = app.stream(*id) else {
        return format!("{}; the connection is gone", ex.progress());
    };
    format!(
        "{}; the connection: {} bytes in flight, {} unsent, send window {}, rto {:?}, srtt {:?}, \
         {} readable, error {:?}, {:?}",
        ex.progress(),
        s.in_flight(),
        s.unsent(),
        s.send_wnd(),
        s.rto(),
        s.srtt(),
        s.readable(),
        s.error(),
        s.stats()
    )
}
