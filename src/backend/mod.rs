//! Backends: what differs between a stock kernel and one with the eTran hooks, behind
//! [`Backend`]. [`compat`] is the stock-kernel one, [`native`] the one of a kernel with etran's
//! series (`patches/`: the `BPF_XSK_EGRESS`/`BPF_XSK_GEN` hooks, any-queue receive); what their
//! app sockets share is [`socket`], both emit the ACK generator's leftover work through the
//! gen pump ([`pump`]), and each replays the TCP slow path's held segments its own way
//! ([`replay`]). The daemon holds one as an [`any::AnyBackend`].
use std::{
    os::fd::{BorrowedFd, RawFd},
    time::Instant,
};

use clap::ValueEnum;

use crate::{
    bpf::entrance::types::{etran_backend, etran_pacing},
    loader::kernel,
    proto::{Reply, Transport},
    transport::tcp::{control::Replay, TcpHandles},
};

pub mod any;
pub mod compat;
pub mod daemon_pair;
pub mod native;
pub mod ports;
pub mod pump;
pub mod replay;
pub mod socket;

use pump::{GenPump, GrantPump};

/// How a backend paces the frames apps send, on their way from egress to the NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// Not at all: egress hands each frame to the NIC as the app sends it, so a burst is as
    /// long as the windows let it be (the peer's, and the congestion window ingress keeps).
    None,
    /// TCP egress gives each connection's segments release times at its pacing rate (cwnd /
    /// srtt, times 2 in slow start and 1.2 after, as Linux) and one due later waits in the app
    /// socket's packet queue (native, patches/0008: `tcp_pace.h`); Homa egress keeps the NIC's
    /// queue short at the link rate, when it has one (`homa_pace.h`).
    PacketQueue,
}

impl Pacing {
    /// The pacing a datapath was loaded with, by the name `etran stats` shows
    /// ([`crate::loader::Summary::pacing`]).
    pub fn of(name: &str) -> Pacing {
        if name == "packet_queue" {
            Pacing::PacketQueue
        } else {
            Pacing::None
        }
    }
}

impl std::fmt::Display for Pacing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pacing::None => f.write_str("none (the windows bound a burst)"),
            Pacing::PacketQueue => f.write_str(
                "packet queue (TCP segments released at cwnd/srtt, Homa's DATA by the link clock \
                 when it has a rate, in the kernel)",
            ),
        }
    }
}

/// `etran up --pacing`: whether TCP (and Homa, at a known link rate) paces where the kernel
/// lets it. Off by default: measured in
/// the guest, pacing cost a bulk echo about half its rate and bought nothing on the testbed
/// (README, Pacing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum PacingChoice {
    /// Pace through the packet queue on the native backend when the kernel has it (patch
    /// 0008); elsewhere nothing paces.
    Auto,
    /// Never pace: egress sends every segment at once.
    #[default]
    Off,
}

impl PacingChoice {
    /// The pacing the datapath of `backend` gets on this kernel (the entrance's configuration
    /// value).
    pub fn resolve(self, backend: etran_backend) -> etran_pacing {
        self.choose(backend, kernel::has_kfunc(kernel::PACKET_QUEUE_KFUNC))
    }

    /// [`PacingChoice::resolve`] given whether the kernel has the packet queue.
    fn choose(self, backend: etran_backend, packet_queue: bool) -> etran_pacing {
        if self == PacingChoice::Auto
            && backend == etran_backend::ETRAN_BACKEND_NATIVE
            && packet_queue
        {
            etran_pacing::ETRAN_PACING_PACKET_QUEUE
        } else {
            etran_pacing::ETRAN_PACING_NONE
        }
    }
}

/// An app's port as the daemon hands it over, whatever the backend.
pub trait AppPort {
    /// The app's identity in BPF.
    fn slot(&self) -> u32;
    /// For messages: the port's name.
    fn name(&self) -> &str;
    /// How its socket reaches the NIC (what `etran stats` shows, [`ports`]).
    fn mode(&self) -> ports::PortMode;
    /// The queue its socket is bound to (of the NIC, native; of its veth, compat).
    fn queue(&self) -> u32;
    /// The `Registered` reply (protocol `version`, the daemon serving `iface`) and the
    /// descriptors that go with it, in the order it lists them.
    fn registered(&self, iface: &str, version: u32) -> (Reply, Vec<BorrowedFd<'_>>);
    /// The app's sends come in bursts (`on`) or no longer do ([`Request::Batch`]): a backend
    /// that pays per frame on the way out batches them while they do, at the cost of a
    /// thread's wakeup per frame that leaves alone. The default does nothing.
    ///
    /// [`Request::Batch`]: crate::proto::Request::Batch
    fn batch_sends(&mut self, _on: bool) {}
    /// Whether it batches them now.
    fn batching(&self) -> bool {
        false
    }
}

/// What the daemon asks of a backend: each app's egress checkpoint, the ACK generator's work
/// emitted, and what it does about pacing (a backend that paces does it in its egress path,
/// where the daemon has no part; [`Backend::pacing`] says which).
pub trait Backend {
    /// What an app holds of the backend: the way its frames reach the transport's egress.
    type AppPort: AppPort;
    /// App slots: an app's identity in BPF, 1..SLOTS. Slot 0 is never given out, so a zeroed
    /// connection entry never routes to an app.
    const SLOTS: u32;
    /// How the frames apps send are paced.
    fn pacing(&self) -> Pacing;

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
    /// How the TCP slow path's held segments go through ingress again ([`replay`]); compat's
    /// is a veth pair named `name`.
    fn replay(&self, tcp: &TcpHandles, name: &str) -> anyhow::Result<Box<dyn Replay>>;

    /// The gen pump, which emits the ACK generator's work the backend's path does not (compat:
    /// all of it).
    fn gen_pump(&self) -> &GenPump;
    fn gen_pump_mut(&mut self) -> &mut GenPump;
    /// Homa's gen pump, which sends the GRANTs apps' templates (and, native, the gen hook) did
    /// not.
    fn grant_pump(&self) -> &GrantPump;
    fn grant_pump_mut(&mut self) -> &mut GrantPump;
    /// Readable when a transport queued work for its generator (TCP's ACKs, Homa's GRANTs).
    fn gen_fds(&self) -> Vec<RawFd> {
        vec![self.gen_pump().fd(), self.grant_pump().fd()]
    }
    /// When [`Backend::on_gen_deadline`] must be called next (delayed work waits).
    fn gen_deadline(&self) -> Option<Instant> {
        match (self.gen_pump().deadline(), self.grant_pump().deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    /// Emits the work announced since the last call (called on every loop pass: a wakeup can
    /// be lost).
    fn on_gen_wake(&mut self, now: Instant) -> anyhow::Result<()> {
        self.gen_pump_mut().on_readable(now)?;
        self.grant_pump_mut().on_readable(now)
    }
    /// Emits the delayed work whose deadline passed.
    fn on_gen_deadline(&mut self, now: Instant) -> anyhow::Result<()> {
        self.gen_pump_mut().on_deadline(now)?;
        self.grant_pump_mut().on_deadline(now)
    }
    /// Periodic: emits work whose announcement was lost.
    fn on_housekeeping(&mut self) -> anyhow::Result<()> {
        self.gen_pump_mut().housekeeping()?;
        self.grant_pump_mut().housekeeping()
    }
    /// One line of what the backend did, for the daemon's log when it stops.
    fn report(&self) -> String {
        let (g, h) = (self.gen_pump().stats(), self.grant_pump().stats());
        format!(
            "gen pump: {} sends, {} templates, {} on-demand wakeups; Homa's: {} sends, {} \
             templates, {} on-demand wakeups",
            g.calls, g.runs, g.wakeups, h.calls, h.runs, h.wakeups
        )
    }
}

/// The backend `etran up` is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// The best this kernel can do: native when it has etran's hooks, compat otherwise.
    Auto,
    /// Stock kernel: egress runs on a per-app veth port.
    Compat,
    /// A kernel with etran's series (patches/): apps' sockets on the NIC, egress and gen hooks
    /// linked to them.
    Native,
}

impl BackendChoice {
    /// The backend this kernel gets (the entrance's configuration value).
    pub fn resolve(self) -> anyhow::Result<etran_backend> {
        let missing = match self {
            BackendChoice::Native | BackendChoice::Auto => kernel::missing_native_hooks(),
            BackendChoice::Compat => Vec::new(),
        };
        self.choose(&missing).map_err(anyhow::Error::msg)
    }

    /// [`BackendChoice::resolve`] given what the kernel lacks of the native ABI
    /// ([`kernel::NATIVE_ABI`]); the error is one line.
    fn choose(self, missing: &[&str]) -> Result<etran_backend, String> {
        match self {
            BackendChoice::Compat => Ok(etran_backend::ETRAN_BACKEND_COMPAT),
            BackendChoice::Auto if !missing.is_empty() => Ok(etran_backend::ETRAN_BACKEND_COMPAT),
            BackendChoice::Native if !missing.is_empty() => Err(format!(
                "--backend native: this kernel lacks {} (etran's kernel series, patches/); use --backend compat",
                missing.join(", ")
            )),
            BackendChoice::Auto | BackendChoice::Native => Ok(etran_backend::ETRAN_BACKEND_NATIVE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BackendChoice::{self, *};
    use crate::bpf::entrance::types::etran_backend;

    fn chosen(choice: BackendChoice, missing: &[&str]) -> etran_backend {
        choice.choose(missing).unwrap()
    }

    #[test]
    fn compat_runs_anywhere_and_auto_takes_native_only_with_every_hook() {
        const COMPAT: etran_backend = etran_backend::ETRAN_BACKEND_COMPAT;
        const NATIVE: etran_backend = etran_backend::ETRAN_BACKEND_NATIVE;
        for missing in [&[][..], &["BPF_XSK_GEN"]] {
            assert_eq!(chosen(Compat, missing), COMPAT);
        }
        assert_eq!(chosen(Auto, &["BPF_XSK_GEN"]), COMPAT);
        assert_eq!(chosen(Auto, &[]), NATIVE);
        assert_eq!(chosen(Native, &[]), NATIVE);
    }

    #[test]
    fn pacing_runs_on_native_with_the_packet_queue_unless_turned_off() {
        use super::PacingChoice;
        use crate::bpf::entrance::types::etran_pacing;
        const NONE: etran_pacing = etran_pacing::ETRAN_PACING_NONE;
        const QUEUE: etran_pacing = etran_pacing::ETRAN_PACING_PACKET_QUEUE;
        let (compat, native) =
            (etran_backend::ETRAN_BACKEND_COMPAT, etran_backend::ETRAN_BACKEND_NATIVE);
        assert_eq!(PacingChoice::Auto.choose(native, true), QUEUE);
        assert_eq!(PacingChoice::Auto.choose(native, false), NONE);
        assert_eq!(PacingChoice::Auto.choose(compat, true), NONE);
        assert_eq!(PacingChoice::Off.choose(native, true), NONE);
        assert_eq!(super::Pacing::of("packet_queue"), super::Pacing::PacketQueue);
        assert_eq!(super::Pacing::of("none"), super::Pacing::None);
    }

    #[test]
    fn native_is_refused_in_one_line_naming_what_is_missing() {
        let e = Native.choose(&["BPF_XSK_EGRESS", "rx_any_queue"]).unwrap_err();
        assert!(e.contains("lacks BPF_XSK_EGRESS, rx_any_queue"), "{e}");
        assert!(!e.contains('\n'));
    }
}
