//! `etran daemon`: the control path (see `crate::daemon`). Runs in the foreground until
//! SIGINT/SIGTERM, then removes every app port and its socket file and exits 0.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    time::Duration,
};

use mio::Waker;

use crate::{
    cli::DaemonArgs,
    daemon::{Config, Daemon},
    output::Output,
};

pub fn run(args: DaemonArgs, _out: &Output) -> anyhow::Result<()> {
    // The process-wide signal handler runs our cleanup and then exits 130; ours asks the event
    // loop to stop, waits for its teardown and exits 0 itself, so a stop is a clean exit. It is
    // installed before anything is built: a signal that comes while the daemon starts is
    // remembered and honoured as soon as the loop exists.
    let stop = Arc::new(AtomicBool::new(false));
    let waker: Arc<Mutex<Option<Arc<Waker>>>> = Arc::default();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let done_rx = Mutex::new(done_rx);
    let key = format!("daemon:{}", std::process::id());
    {
        let (stop, waker) = (stop.clone(), waker.clone());
        crate::cleanup::register(
            key.clone(),
            Box::new(move || {
                stop.store(true, Ordering::SeqCst);
                if let Some(w) = waker.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    let _ = w.wake();
                }
                let rx = done_rx.lock().unwrap_or_else(|p| p.into_inner());
                let clean = rx.recv_timeout(Duration::from_secs(10)).is_ok();
                std::process::exit(if clean { 0 } else { 1 });
            }),
        );
    }
    let result = (|| {
        let mut daemon = Daemon::new(Config {
            iface: args.iface,
            socket: args.socket,
            time_wait: args.time_wait,
            ecn: !args.no_ecn,
            announce: true,
            zero_copy: args.zero_copy,
        })?;
        *waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(daemon.waker());
        if stop.load(Ordering::SeqCst) {
            daemon.waker().wake()?;
        }
        daemon.run()
    })();
    crate::cleanup::unregister(&key);
    let _ = done_tx.send(());
    result
}
