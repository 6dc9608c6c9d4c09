//! Either backend, chosen as the daemon starts: [`AnyBackend`] runs the one the datapath was
//! loaded for, and [`AnyPort`] is an app's port of it.
use std::os::fd::BorrowedFd;

use super::{
    compat::{port::VethPort, Compat},
    native::{Native, XskPort},
    ports::PortMode,
    pump::{GenPump, GrantPump},
    AppPort, Backend, Pacing,
};
use crate::{
    proto::{Reply, Transport},
    transport::tcp::{control::Replay, TcpHandles},
};

/// The backend a daemon runs: the one its datapath was loaded for (one per daemon, so the
/// variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
pub enum AnyBackend {
    Compat(Compat),
    Native(Native),
}

/// An app's port of either backend (one per app session, so the variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
pub enum AnyPort {
    Compat(VethPort),
    Native(XskPort),
}

impl AnyBackend {
    /// The backend's name, as `--backend` spells it.
    pub fn name(&self) -> &'static str {
        match self {
            AnyBackend::Compat(_) => "compat",
            AnyBackend::Native(_) => "native",
        }
    }
}

/// Both backends' ports: what [`AppPort`] asks, of whichever it is.
macro_rules! either {
    ($value:expr, $v:ident => $body:expr) => {
        match $value {
            AnyPort::Compat($v) => $body,
            AnyPort::Native($v) => $body,
        }
    };
}

impl AppPort for AnyPort {
    fn slot(&self) -> u32 {
        either!(self, p => p.slot())
    }

    fn name(&self) -> &str {
        either!(self, p => p.name())
    }

    fn mode(&self) -> PortMode {
        either!(self, p => p.mode())
    }

    fn queue(&self) -> u32 {
        either!(self, p => p.queue())
    }

    fn registered(&self, iface: &str, version: u32) -> (Reply, Vec<BorrowedFd<'_>>) {
        either!(self, p => p.registered(iface, version))
    }

    fn batch_sends(&mut self, on: bool) {
        either!(self, p => p.batch_sends(on))
    }

    fn batching(&self) -> bool {
        either!(self, p => p.batching())
    }
}

/// Both backends: what [`Backend`] asks, of whichever the daemon runs.
macro_rules! backend {
    ($value:expr, $b:ident => $body:expr) => {
        match $value {
            AnyBackend::Compat($b) => $body,
            AnyBackend::Native($b) => $body,
        }
    };
}

impl Backend for AnyBackend {
    type AppPort = AnyPort;
    const SLOTS: u32 = {
        assert!(Compat::SLOTS == Native::SLOTS);
        Compat::SLOTS
    };

    fn pacing(&self) -> Pacing {
        backend!(self, b => b.pacing())
    }

    fn mtu(&self) -> u32 {
        backend!(self, b => b.mtu())
    }

    fn open_port(&mut self, slot: u32, transport: Transport) -> anyhow::Result<AnyPort> {
        match self {
            AnyBackend::Compat(b) => b.open_port(slot, transport).map(AnyPort::Compat),
            AnyBackend::Native(b) => b.open_port(slot, transport).map(AnyPort::Native),
        }
    }

    fn close_port(&mut self, port: &mut AnyPort) {
        match (self, port) {
            (AnyBackend::Compat(b), AnyPort::Compat(p)) => b.close_port(p),
            (AnyBackend::Native(b), AnyPort::Native(p)) => b.close_port(p),
            _ => unreachable!("a port is closed by the backend that opened it"),
        }
    }

    fn slot_in_use(&self, slot: u32) -> bool {
        backend!(self, b => b.slot_in_use(slot))
    }

    fn remove_stale(&mut self) -> anyhow::Result<()> {
        backend!(self, b => b.remove_stale())
    }

    fn replay(&self, tcp: &TcpHandles, name: &str) -> anyhow::Result<Box<dyn Replay>> {
        backend!(self, b => b.replay(tcp, name))
    }

    fn gen_pump(&self) -> &GenPump {
        backend!(self, b => b.gen_pump())
    }

    fn gen_pump_mut(&mut self) -> &mut GenPump {
        backend!(self, b => b.gen_pump_mut())
    }

    fn grant_pump(&self) -> &GrantPump {
        backend!(self, b => b.grant_pump())
    }

    fn grant_pump_mut(&mut self) -> &mut GrantPump {
        backend!(self, b => b.grant_pump_mut())
    }
}
