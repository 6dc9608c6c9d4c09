//! Backends: what differs between a stock kernel and one with the eTran hooks, behind
//! [`Backend`]. [`compat`] is the stock-kernel one; a patched-kernel backend ("native", the
//! `XDP_EGRESS`/`XDP_GEN` hooks) goes beside it as `native/`.
use std::{os::fd::RawFd, time::Instant};

use anyhow::bail;
use clap::ValueEnum;

use crate::{bpf::entrance::types::etran_backend, loader::kernel, proto::Transport};

pub mod compat;

/// How a backend paces the frames apps send, on their way from egress to the NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// Not at all: egress hands each frame to the NIC as the app sends it, so a burst is as
    /// long as the windows let it be (the peer's, and the congestion window ingress keeps).
    None,
}

impl std::fmt::Display for Pacing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pacing::None => f.write_str("none (the windows bound a burst)"),
        }
    }
}

/// What the daemon asks of a backend: each app's egress checkpoint, the ACK generator's work
/// emitted, and what it does about pacing (a backend that paces does it in its egress path,
/// where the daemon has no part; [`Backend::PACING`] says which).
pub trait Backend {
    /// What an app holds of the backend: the way its frames reach the transport's egress.
    type AppPort;
    /// App slots: an app's identity in BPF, 1..SLOTS. Slot 0 is never given out, so a zeroed
    /// connection entry never routes to an app.
    const SLOTS: u32;
    /// How the frames apps send are paced.
    const PACING: Pacing;

    /// The longest IPv4 packet apps' frames may become: the NIC's MTU as far as the backend's
    /// path carries it (TCP announces it less 40 as its MSS).
    fn mtu(&self) -> u32;
    /// Makes the egress checkpoint of the app in `slot`, checking its frames with `transport`'s
    /// egress; on failure nothing is left.
    fn open_port(&mut self, slot: u32, transport: Transport) -> anyhow::Result<Self::AppPort>;
    /// Removes it: nothing routes to its slot afterwards. Best effort, failures are logged.
    fn close_port(&mut self, port: &mut Self::AppPort);
    /// Whether `slot` is taken in the datapath (by any daemon).
    fn slot_in_use(&self, slot: u32) -> bool;
    /// Removes what a daemon that died left behind.
    fn remove_stale(&mut self) -> anyhow::Result<()>;

    /// Readable when the transport queued work for the ACK generator.
    fn gen_fd(&self) -> RawFd;
    /// When [`Backend::on_gen_deadline`] must be called next (delayed work waits).
    fn gen_deadline(&self) -> Option<Instant>;
    /// Emits the work announced since the last call (called on every loop pass: a wakeup can
    /// be lost).
    fn on_gen_wake(&mut self, now: Instant) -> anyhow::Result<()>;
    /// Emits the delayed work whose deadline passed.
    fn on_gen_deadline(&mut self, now: Instant) -> anyhow::Result<()>;
    /// Periodic: emits work whose announcement was lost.
    fn on_housekeeping(&mut self) -> anyhow::Result<()>;
    /// One line of what the backend did, for the daemon's log when it stops.
    fn report(&self) -> String;
}

/// The backend `etran up` is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// Native when the running kernel has the eTran hooks, compat otherwise.
    Auto,
    /// Stock kernel: egress runs on a per-app veth port.
    Compat,
    /// Patched kernel with XDP_EGRESS/XDP_GEN hooks.
    Native,
}

impl BackendChoice {
    /// The backend this kernel gets (the entrance's configuration value).
    pub fn resolve(self) -> anyhow::Result<etran_backend> {
        let native = kernel::has_native_hooks();
        Ok(match self {
            BackendChoice::Native if !native => bail!(
                "this kernel lacks the XDP_EGRESS/XDP_GEN hooks of the etran patch series; use --backend compat"
            ),
            BackendChoice::Native => etran_backend::ETRAN_BACKEND_NATIVE,
            BackendChoice::Auto if native => etran_backend::ETRAN_BACKEND_NATIVE,
            BackendChoice::Auto | BackendChoice::Compat => etran_backend::ETRAN_BACKEND_COMPAT,
        })
    }
}
