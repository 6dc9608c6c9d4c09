//! The eTran side of `etran bench echo`: the datapath up on both hosts' NICs, a daemon per host
//! (in-process, on a thread inside the host's namespace, socket in a private directory), one
//! busy-polling server App in the server host and one busy-polling client App (all
//! connections) in the client host. Same protocol and byte check as the Linux engine
//! ([`linux_echo::pattern`]). Everything is torn down before returning: apps closed (abort
//! RSTs), daemons stopped, the datapath taken down; a Ctrl-C on the way runs the same stop.
use std::{
    io::ErrorKind,
    net::SocketAddrV4,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use mio::Waker;

use super::linux_echo::{ClientResult, Echo};
use crate::{
    app::{App, ConnId},
    cli::{Backend, XdpMode},
    daemon::{client::Session, proto::Transport, Config, Daemon},
    datapath::{self, UpOptions},
    netns::NetNs,
    testbed::HOST_NIC,
};

/// What one eTran run needs.
pub struct Params<'a> {
    pub client: &'a NetNs,
    pub server: &'a NetNs,
    pub server_addr: SocketAddrV4,
    pub conns: u32,
    pub depth: u32,
    pub size: u32,
    pub duration: Duration,
    pub client_cpu: usize,
    pub server_cpu: usize,
}

/// Runs the echo over eTran. `watch` runs on the calling thread while the client runs (the
/// caller's progress display); its argument tells whether the client is done.
pub fn run(
    p: &Params<'_>,
    progress: &AtomicU64,
    watch: impl FnOnce(&dyn Fn() -> bool) + Send,
) -> anyhow::Result<ClientResult> {
    let dir = std::env::temp_dir().join(format!("etran-echo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let wakers: Arc<Mutex<Vec<Arc<Waker>>>> = Arc::default();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let key = format!("bench-echo-etran:{}", std::process::id());
    {
        let (wakers, dir, done_rx) = (wakers.clone(), dir.clone(), Mutex::new(done_rx));
        crate::cleanup::register(
            key.clone(),
            Box::new(move || {
                let n = {
                    let w = wakers.lock().unwrap_or_else(|p| p.into_inner());
                    for w in w.iter() {
                        let _ = w.wake();
                    }
                    w.len()
                };
                let rx = done_rx.lock().unwrap_or_else(|p| p.into_inner());
                for _ in 0..n {
                    if rx.recv_timeout(Duration::from_secs(5)).is_err() {
                        break;
                    }
                }
                let _ = std::fs::remove_dir_all(&dir);
            }),
        );
    }
    let result = run_in(p, &dir, &wakers, &done_tx, progress, watch);
    for ns in [p.client, p.server] {
        match ns.run(|| datapath::down(HOST_NIC)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) | Err(e) => crate::log::warn(format!("etran down {HOST_NIC}: {e:#}")),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    crate::cleanup::unregister(&key);
    result
}

fn run_in(
    p: &Params<'_>,
    dir: &std::path::Path,
    wakers: &Mutex<Vec<Arc<Waker>>>,
    done_tx: &mpsc::Sender<()>,
    progress: &AtomicU64,
    watch: impl FnOnce(&dyn Fn() -> bool) + Send,
) -> anyhow::Result<ClientResult> {
    let opts =
        UpOptions { backend: Backend::Auto, mode: XdpMode::Native, queues: None, force: false };
    for ns in [p.client, p.server] {
        ns.run(|| datapath::up(HOST_NIC, &opts))?
            .with_context(|| format!("etran up {HOST_NIC}"))?;
    }
    let socks = [dir.join("client.sock"), dir.join("server.sock")];
    std::thread::scope(|s| {
        // Daemons: built inside their namespace, their wakers handed back.
        let mut daemons = Vec::new();
        for (ns, sock) in [p.client, p.server].into_iter().zip(&socks) {
            let (tx, rx) = mpsc::channel();
            let done_tx = done_tx.clone();
            let handle = s.spawn(move || -> anyhow::Result<()> {
                let r = (|| {
                    ns.enter()?;
                    let mut d = match Daemon::new(Config {
                        iface: HOST_NIC.to_string(),
                        socket: sock.clone(),
                    }) {
                        Ok(d) => d,
                        Err(e) => {
                            let _ = tx.send(None);
                            return Err(e);
                        }
                    };
                    let _ = tx.send(Some(d.waker()));
                    d.run()
                })();
                let _ = done_tx.send(());
                r
            });
            let waker = rx.recv().ok().flatten();
            if let Some(w) = &waker {
                wakers.lock().unwrap_or_else(|p| p.into_inner()).push(w.clone());
            }
            daemons.push((handle, waker));
        }
        let result = if daemons.iter().all(|(_, w)| w.is_some()) {
            apps(p, &socks, progress, watch)
        } else {
            Err(anyhow::anyhow!("an etran daemon did not start"))
        };
        let mut result = result;
        for (handle, waker) in daemons {
            if let Some(w) = waker {
                let _ = w.wake();
            }
            let joined =
                handle.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the thread panicked")));
            if let Err(e) = joined {
                if result.is_ok() {
                    result = Err(e.context("etran daemon"));
                }
            }
        }
        result
    })
}

fn apps(
    p: &Params<'_>,
    socks: &[PathBuf; 2],
    progress: &AtomicU64,
    watch: impl FnOnce(&dyn Fn() -> bool) + Send,
) -> anyhow::Result<ClientResult> {
    let stop = AtomicBool::new(false);
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
    std::thread::scope(|s| {
        let server = s.spawn(|| -> anyhow::Result<u64> {
            let r = (|| {
                p.server.enter()?;
                crate::bench::pin_to_cpu(p.server_cpu)?;
                let mut session = Session::connect(&socks[1])?;
                let reg = session.register(Transport::Tcp, 1)?;
                let app = App::open(reg)?;
                session.listen(p.server_addr.port())?;
                Ok((session, app))
            })();
            let (mut session, mut app) = match r {
                Ok(x) => {
                    let _ = ready_tx.send(Ok(()));
                    x
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return Ok(0);
                }
            };
            serve(&mut app, &mut session, p.conns, &stop)
        });
        let ready = ready_rx.recv().unwrap_or_else(|_| Err(anyhow::anyhow!("server died")));
        let client = s.spawn(|| -> anyhow::Result<ClientResult> {
            ready.context("eTran echo server")?;
            p.client.enter()?;
            crate::bench::pin_to_cpu(p.client_cpu)?;
            client(p, &socks[0], progress)
        });
        watch(&|| client.is_finished());
        // A panicking app thread becomes an error, so the teardown still runs.
        let r =
            client.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the client thread panicked")));
        stop.store(true, Ordering::Relaxed);
        match server.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the thread panicked"))) {
            Ok(_) => r,
            Err(e) => r.and(Err(e.context("eTran echo server"))),
        }
    })
}

/// Echoes everything until `stop`; accepts up to `expect` connections on the way.
fn serve(
    app: &mut App,
    session: &mut Session,
    expect: u32,
    stop: &AtomicBool,
) -> anyhow::Result<u64> {
    let mut conns: Vec<(ConnId, Vec<u8>)> = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut echoed = 0u64;
    let mut spins = 0u32;
    while !stop.load(Ordering::Relaxed) {
        app.poll()?;
        // Accepting costs a syscall: only while connections are expected, and not every spin.
        spins = spins.wrapping_add(1);
        if conns.len() < expect as usize && spins % 16 == 0 {
            while let Some(id) = app.accept(session)? {
                conns.push((id, Vec::new()));
            }
        }
        for (id, pending) in &mut conns {
            loop {
                if !pending.is_empty() {
                    match app.send(*id, pending) {
                        Ok(n) => {
                            echoed += n as u64;
                            pending.drain(..n);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e).context("echoing"),
                    }
                    if !pending.is_empty() {
                        break;
                    }
                }
                match app.recv(*id, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e).context("receiving"),
                }
            }
        }
    }
    Ok(echoed)
}

struct Conn {
    conn: ConnId,
    echo: Echo,
}

fn client(p: &Params<'_>, sock: &PathBuf, progress: &AtomicU64) -> anyhow::Result<ClientResult> {
    let mut session = Session::connect(sock)?;
    let reg = session.register(Transport::Tcp, 1)?;
    let mut app = App::open(reg)?;
    let mut conns = Vec::with_capacity(p.conns as usize);
    for i in 0..p.conns {
        let conn = app.connect(&mut session, p.server_addr)?;
        conns.push(Conn { conn, echo: Echo::new(i, p.depth) });
    }
    let size = u64::from(p.size);
    let mut result =
        ClientResult { messages: 0, verified_bytes: 0, rtt_ns: crate::bench::latency_histogram() };
    let now = Instant::now();
    let deadline = now + p.duration;
    for c in &mut conns {
        for _ in 0..p.depth {
            c.echo.queue_message(size, now);
        }
    }
    let mut buf = vec![0u8; 1 << 16];
    while Instant::now() < deadline {
        app.poll()?;
        for c in &mut conns {
            loop {
                let n = match app.recv(c.conn, &mut buf) {
                    Ok(0) => bail!("the server closed connection {}", c.echo.id),
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e).context("receiving echoes"),
                };
                c.echo.on_echo(&buf[..n], size, deadline, &mut result, progress)?;
            }
            while !c.echo.write_buf.is_empty() {
                match app.send(c.conn, &c.echo.write_buf) {
                    Ok(n) => c.echo.sent(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e).context("sending messages"),
                }
            }
        }
    }
    drop(app);
    let _ = session.close();
    Ok(result)
}
