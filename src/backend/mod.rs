//! Backends: what differs between a stock kernel and one with the eTran hooks, behind
//! [`Backend`]. [`compat`] is the stock-kernel one; a patched-kernel backend ("native", the
//! `BPF_XSK_EGRESS`/`BPF_XSK_GEN` hooks of `patches/`) goes beside it as `native/`.
use std::{os::fd::RawFd, time::Instant};

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

    /// Readable when a transport queued work for its generator (TCP's ACKs, Homa's GRANTs).
    fn gen_fds(&self) -> Vec<RawFd>;
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
    /// The best this kernel and this etran can do: compat for now (native once its datapath is
    /// built).
    Auto,
    /// Stock kernel: egress runs on a per-app veth port.
    Compat,
    /// A kernel with etran's series (patches/): egress and gen hooks on AF_XDP sockets.
    Native,
}

impl BackendChoice {
    /// The backend this kernel gets (the entrance's configuration value).
    pub fn resolve(self) -> anyhow::Result<etran_backend> {
        let missing = match self {
            BackendChoice::Native => kernel::missing_native_hooks(),
            BackendChoice::Auto | BackendChoice::Compat => Vec::new(),
        };
        self.choose(&missing).map_err(anyhow::Error::msg)
    }

    /// [`BackendChoice::resolve`] given what the kernel lacks of the native ABI
    /// ([`kernel::NATIVE_ABI`]); the error is one line.
    fn choose(self, missing: &[&str]) -> Result<etran_backend, String> {
        match self {
            // etran's side of native (apps' sockets on the NIC, egress and gen linked to them)
            // is not built yet: a patched kernel runs compat, which it keeps working.
            BackendChoice::Auto | BackendChoice::Compat => Ok(etran_backend::ETRAN_BACKEND_COMPAT),
            BackendChoice::Native if !missing.is_empty() => Err(format!(
                "--backend native: this kernel lacks {} (etran's kernel series, patches/); use --backend compat",
                missing.join(", ")
            )),
            BackendChoice::Native => Err(
                "--backend native: this kernel has etran's hooks, but etran's native datapath is not built yet; use --backend compat"
                    .into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BackendChoice::{self, *};
    use crate::bpf::entrance::types::etran_backend;

    fn compat(choice: BackendChoice, missing: &[&str]) -> bool {
        choice.choose(missing) == Ok(etran_backend::ETRAN_BACKEND_COMPAT)
    }

    #[test]
    fn compat_and_auto_run_compat_on_any_kernel() {
        for missing in [&[][..], &["BPF_XSK_GEN"]] {
            assert!(compat(Compat, missing));
            assert!(compat(Auto, missing));
        }
    }

    #[test]
    fn native_is_refused_in_one_line_naming_what_is_missing() {
        let e = Native.choose(&["BPF_XSK_EGRESS", "rx_any_queue"]).unwrap_err();
        assert!(e.contains("lacks BPF_XSK_EGRESS, rx_any_queue"), "{e}");
        let e = Native.choose(&[]).unwrap_err();
        assert!(e.contains("not built yet"), "{e}");
        assert!(!e.contains('\n'));
    }
}
