//! Backends: how the datapath meets the kernel it runs on. `compat` is the stock-kernel one.
use anyhow::bail;
use clap::ValueEnum;

use crate::{bpf::entrance::types::etran_backend, loader::kernel};

pub mod compat;

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
