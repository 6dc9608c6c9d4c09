//! What every transport's app API shares: one [`Driver`] (the app's port and its daemon link)
//! runs passes and waits for any transport's [`Engine`] (TCP's [`crate::app::App`], Homa's
//! [`crate::app::rpc::RpcSocket`]).
//!
//! A pass ([`pass`]): the frames that arrived go to the engine one by one
//! ([`Engine::receiver`]), then the engine runs its timers that are due and writes every frame
//! it may send ([`Engine::on_pass`], which says when its next timer is due), then the port
//! hands the frames to the kernel (one flush a pass).
//!
//! A wait ([`wait`]): a pass; if it received nothing, the RX ring is busy-polled for the
//! driver's budget (like `SO_BUSY_POLL`; none past the engine's next timer or the caller's
//! limit), then the thread sleeps in `ppoll` on the AF_XDP socket (`POLLOUT` too while frames
//! wait to be flushed) and the daemon link until a frame comes, the daemon sends something
//! ([`Engine::on_daemon`]) or the timer is due; then another pass. An idle app thus sleeps.
//! [`Plan`] is the arithmetic of it, pure.
//!
//! A new transport's API object implements [`Engine`] over its transport's engine and gets
//! both, and is a mio source (its port and link under one token, `source_via_driver!`) for
//! apps with event loops of their own.
use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    path::Path,
    time::{Duration, Instant},
};

use super::{
    link::{DaemonLink, Registration},
    port::AppPort,
};
use crate::{proto::Transport, transport::RxMeta};

/// How long [`wait`] busy-polls before it sleeps, unless [`Driver::set_busy_poll`] says
/// otherwise: about one round trip between two hosts of a rack, so that a request/response
/// exchange does not pay a wakeup per message, while an idle app sleeps.
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(50);

/// A transport's app engine as the driver runs it.
pub(crate) trait Engine {
    /// The metadata the transport's ingress writes in front of every frame.
    type Meta: RxMeta;

    /// The driver, beside what takes the pass's received frames (metadata, payload, the whole
    /// frame), borrowed apart so that the port can hand frames straight to the engine.
    fn receiver(&mut self, now: Instant) -> (&mut Driver, impl Receive<Self::Meta> + '_);

    /// After the frames: runs the timers due at `now` and writes into the port every frame
    /// that may go (the driver flushes them). Returns when the next timer is due (`None`: no
    /// timer runs).
    fn on_pass(&mut self, now: Instant) -> io::Result<Option<Instant>>;

    /// The daemon link is readable: reads and applies what the daemon sent.
    fn on_daemon(&mut self) -> io::Result<()>;

    fn driver(&mut self) -> &mut Driver;
}

/// What takes received frames: their transport's metadata, the payload, the whole frame.
pub(crate) trait Receive<M>: FnMut(&M, &[u8], &[u8]) {}

impl<M, F: FnMut(&M, &[u8], &[u8])> Receive<M> for F {}

/// One app thread's port and daemon link, and how it waits.
pub struct Driver {
    pub(super) port: AppPort,
    pub(super) link: DaemonLink,
    /// When the engine's next timer is due, as of the last pass.
    deadline: Option<Instant>,
    busy_poll: Duration,
}

impl Driver {
    /// Connects to the daemon at `sock` and registers for `transport`: the daemon builds the
    /// port.
    pub fn open(sock: impl AsRef<Path>, transport: Transport) -> io::Result<Driver> {
        let mut link = DaemonLink::connect(sock)?;
        let reg = link.register(transport, 1)?;
        Driver::with_link(link, reg)
    }

    /// Takes over a link that registered as `reg` (maps the port).
    pub fn with_link(link: DaemonLink, reg: Registration) -> io::Result<Driver> {
        let port = AppPort::open(reg).map_err(|e| io::Error::other(format!("{e:#}")))?;
        Ok(Driver { port, link, deadline: None, busy_poll: DEFAULT_BUSY_POLL })
    }

    pub fn port(&self) -> &AppPort {
        &self.port
    }

    pub fn link(&mut self) -> &mut DaemonLink {
        &mut self.link
    }

    /// When the engine's next timer is due, as of the last pass.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// How long [`wait`] busy-polls before it sleeps (zero: it sleeps at once).
    pub fn set_busy_poll(&mut self, budget: Duration) {
        self.busy_poll = budget;
    }

    pub fn busy_poll(&self) -> Duration {
        self.busy_poll
    }

    /// Sleeps in `ppoll` on the AF_XDP socket and the daemon link until one is ready or
    /// `left` passes (`None`: without limit). Returns whether the link is readable.
    fn sleep(&mut self, left: Option<Duration>) -> io::Result<bool> {
        let tx = if self.port.pending() > 0 { libc::POLLOUT } else { 0 };
        let mut fds = [
            libc::pollfd {
                fd: self.port.socket().as_raw_fd(),
                events: libc::POLLIN | tx,
                revents: 0,
            },
            libc::pollfd { fd: self.link.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        let ts = left.map(|left| libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(left.subsec_nanos() as i32),
        });
        let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: two valid pollfds; the timespec (if any) outlives the call.
        if unsafe { libc::ppoll(fds.as_mut_ptr(), 2, ts_ptr, std::ptr::null()) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(fds[1].revents != 0)
    }
}

/// One pass of `e` (see the module's doc). Returns the frames received.
pub(crate) fn pass<E: Engine>(e: &mut E) -> io::Result<usize> {
    let now = Instant::now();
    let n = receive(e, now)?;
    let deadline = e.on_pass(now)?;
    let driver = e.driver();
    driver.deadline = deadline;
    driver.port.flush()?;
    Ok(n)
}

/// The first half of a pass: the frames that arrived go to the engine, and nothing else (no
/// timers, no sends, no flush). For a caller that must see what arrived without ending its pass
/// (the POSIX shim's non-blocking calls between a program's waits). Returns the frames received.
pub(crate) fn receive<E: Engine>(e: &mut E, now: Instant) -> io::Result<usize> {
    let (driver, rx) = e.receiver(now);
    driver.port.poll_rx(rx)
}

/// Waits until `e` has something to do, then does it (see the module's doc): a frame arrived,
/// the daemon sent a message, the engine's next timer is due, or `timeout` passed. Returns the
/// frames received.
pub(crate) fn wait<E: Engine>(e: &mut E, timeout: Option<Duration>) -> io::Result<usize> {
    let start = Instant::now();
    let n = pass(e)?;
    if n > 0 {
        return Ok(n);
    }
    let d = e.driver();
    let plan = Plan::new(start, timeout, d.deadline, d.busy_poll);
    while Instant::now() < plan.spin_until {
        if d.port.rx_ready() {
            return pass(e);
        }
        std::hint::spin_loop();
    }
    if let Some(left) = plan.sleep(Instant::now()) {
        if d.sleep(left)? {
            e.on_daemon()?;
        }
    }
    pass(e)
}

/// [`wait`] until `limit` at most (`None`: without limit); `None` once it passed.
pub(crate) fn wait_until<E: Engine>(
    e: &mut E,
    limit: Option<Instant>,
) -> io::Result<Option<usize>> {
    match limit {
        None => wait(e, None).map(Some),
        Some(at) => match at.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => wait(e, Some(left)).map(Some),
            _ => Ok(None),
        },
    }
}

/// When a wait stops spinning and how long it sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    /// Busy-poll until then.
    spin_until: Instant,
    /// When the engine's timer or the caller's limit comes, whichever is first.
    wake: Option<Instant>,
}

impl Plan {
    fn new(
        start: Instant,
        timeout: Option<Duration>,
        deadline: Option<Instant>,
        busy_poll: Duration,
    ) -> Plan {
        let wake = [timeout.map(|t| start + t), deadline].into_iter().flatten().min();
        let spin = start + busy_poll;
        Plan { spin_until: wake.map_or(spin, |w| w.min(spin)), wake }
    }

    /// How long to sleep at `now`: `None` when the wake time has come (no sleep: pass at
    /// once), `Some(None)` without limit.
    fn sleep(&self, now: Instant) -> Option<Option<Duration>> {
        match self.wake {
            None => Some(None),
            Some(w) if w <= now => None,
            Some(w) => Some(Some(w - now)),
        }
    }
}

impl Driver {
    /// Runs `f` on each of the driver's mio sources with its interests: the port with
    /// `interests`, the link readable.
    pub(crate) fn each_source(
        &mut self,
        interests: mio::Interest,
        mut f: impl FnMut(&mut dyn mio::event::Source, mio::Interest) -> io::Result<()>,
    ) -> io::Result<()> {
        f(&mut self.port, interests)?;
        f(&mut self.link, mio::Interest::READABLE)
    }
}

/// An API object over a [`Driver`] (in its field `driver`) is a mio source: the port and the
/// daemon link under one token (on readiness run a pass and read the link; wait no longer than
/// [`Driver::next_deadline`]).
macro_rules! source_via_driver {
    ($t:ty) => {
        impl mio::event::Source for $t {
            fn register(
                &mut self,
                registry: &mio::Registry,
                token: mio::Token,
                interests: mio::Interest,
            ) -> std::io::Result<()> {
                self.driver.each_source(interests, |s, i| registry.register(s, token, i))
            }

            fn reregister(
                &mut self,
                registry: &mio::Registry,
                token: mio::Token,
                interests: mio::Interest,
            ) -> std::io::Result<()> {
                self.driver.each_source(interests, |s, i| registry.reregister(s, token, i))
            }

            fn deregister(&mut self, registry: &mio::Registry) -> std::io::Result<()> {
                self.driver.each_source(mio::Interest::READABLE, |s, _| registry.deregister(s))
            }
        }
    };
}
pub(crate) use source_via_driver;

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const BUDGET: Duration = Duration::from_micros(50);

    #[test]
    fn an_idle_engine_spins_its_budget_then_sleeps_without_limit() {
        let t0 = Instant::now();
        let p = Plan::new(t0, None, None, BUDGET);
        assert_eq!(p, Plan { spin_until: t0 + BUDGET, wake: None });
        assert_eq!(p.sleep(t0 + BUDGET), Some(None));
    }

    #[test]
    fn a_timer_or_limit_ends_the_sleep_and_the_sooner_one_wins() {
        let t0 = Instant::now();
        let p = Plan::new(t0, Some(10 * MS), Some(t0 + 3 * MS), BUDGET);
        assert_eq!(p.wake, Some(t0 + 3 * MS));
        assert_eq!(p.sleep(t0 + MS), Some(Some(2 * MS)));
        let p = Plan::new(t0, Some(2 * MS), Some(t0 + 3 * MS), BUDGET);
        assert_eq!(p.sleep(t0 + MS), Some(Some(MS)));
    }

    #[test]
    fn no_spinning_past_a_timer_due_within_the_budget_and_no_sleep_once_it_is_due() {
        let t0 = Instant::now();
        let p = Plan::new(t0, None, Some(t0 + Duration::from_micros(20)), BUDGET);
        assert_eq!(p.spin_until, t0 + Duration::from_micros(20));
        assert_eq!(p.sleep(p.spin_until), None);
        // A timer already due (the engine armed it this pass): straight to the next pass.
        let p = Plan::new(t0, None, Some(t0), BUDGET);
        assert_eq!((p.spin_until, p.sleep(t0)), (t0, None));
    }

    #[test]
    fn a_zero_budget_sleeps_at_once() {
        let t0 = Instant::now();
        let p = Plan::new(t0, Some(5 * MS), None, Duration::ZERO);
        assert_eq!(p.spin_until, t0);
        assert_eq!(p.sleep(t0), Some(Some(5 * MS)));
    }
}
