//! `etran daemon`: the control path (issue #4, not built yet).
use crate::{cli::DaemonArgs, output::Output};

pub fn run(_args: DaemonArgs, _out: &Output) -> anyhow::Result<()> {
    anyhow::bail!("the etran daemon is not available in this build yet (the TCP control path is still being written)")
}
