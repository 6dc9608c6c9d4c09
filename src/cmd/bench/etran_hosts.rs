//! eTran on a benchmark's testbed hosts: the datapath up on each host's NIC and a daemon per
//! host (in-process, on a thread inside the host's namespace, its socket in a private
//! directory) for as long as the benchmark's apps run. Everything is torn down before
//! returning: daemons stopped, the datapath taken down, the directory removed; a Ctrl-C on the
//! way runs the same stop.
use std::{
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use mio::Waker;

use crate::{
    backend::native::ZeroCopy,
    bpf::entrance::types::{etran_backend, etran_pacing},
    daemon::{Config, Daemon},
    loader::{self, AttachMode, HomaSched, UpOptions},
    netns::NetNs,
    testbed::HOST_NIC,
};

/// Runs `apps` with etran up on every host of `hosts` on `backend` with `pacing` (Homa's
/// grant scheduler and its pacer's link rate set as `sched` says, apps' sockets in zero copy as `zero_copy` says); it gets each host's daemon socket, in the same order. `label` names the benchmark in
/// the private directory and the Ctrl-C hook.
pub fn with_daemons<T>(
    hosts: &[&NetNs],
    backend: etran_backend,
    pacing: etran_pacing,
    zero_copy: ZeroCopy,
    sched: HomaSched,
    label: &str,
    apps: impl FnOnce(&[PathBuf]) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let dir = std::env::temp_dir().join(format!("etran-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let wakers: Arc<Mutex<Vec<Arc<Waker>>>> = Arc::default();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let key = format!("bench-{label}-etran:{}", std::process::id());
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
    let opts = UpOptions {
        backend,
        pacing,
        mode: AttachMode::Drv,
        queues: None,
        force: false,
        homa: sched,
    };
    let result = run_in(hosts, &opts, zero_copy, &dir, &wakers, &done_tx, apps);
    for ns in hosts {
        match ns.run(|| loader::down(HOST_NIC)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) | Err(e) => crate::log::warn(format!("etran down {HOST_NIC}: {e:#}")),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    crate::cleanup::unregister(&key);
    result
}

fn run_in<T>(
    hosts: &[&NetNs],
    opts: &UpOptions,
    zero_copy: ZeroCopy,
    dir: &Path,
    wakers: &Mutex<Vec<Arc<Waker>>>,
    done_tx: &mpsc::Sender<()>,
    apps: impl FnOnce(&[PathBuf]) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    for ns in hosts {
        ns.run(|| loader::up(HOST_NIC, opts))?.with_context(|| format!("etran up {HOST_NIC}"))?;
    }
    let socks: Vec<PathBuf> =
        (0..hosts.len()).map(|i| dir.join(format!("host{}.sock", i + 1))).collect();
    std::thread::scope(|s| {
        // Daemons: built inside their namespace, their wakers handed back.
        let mut daemons = Vec::new();
        for (ns, sock) in hosts.iter().zip(&socks) {
            let (tx, rx) = mpsc::channel();
            let done_tx = done_tx.clone();
            let handle = s.spawn(move || -> anyhow::Result<()> {
                let r = (|| {
                    ns.enter()?;
                    let mut d = match Daemon::new(Config {
                        iface: HOST_NIC.to_string(),
                        socket: sock.clone(),
                        time_wait: crate::daemon::DEFAULT_TIME_WAIT,
                        ecn: true,
                        announce: false,
                        zero_copy,
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
        let mut result = if daemons.iter().all(|(_, w)| w.is_some()) {
            apps(&socks)
        } else {
            Err(anyhow::anyhow!("an etran daemon did not start"))
        };
        for (handle, waker) in daemons {
            let started = waker.is_some();
            if let Some(w) = waker {
                let _ = w.wake();
            }
            let joined =
                handle.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the thread panicked")));
            if let Err(e) = joined {
                // Why a daemon did not start says more than that it did not.
                if result.is_ok() || !started {
                    result = Err(e.context("etran daemon"));
                }
            }
        }
        result
    })
}
