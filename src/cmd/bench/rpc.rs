//! `etran bench rpc`: Homa RPCs in cp_node's dialect (not built yet).
use crate::{cli::RpcArgs, output::Output};

pub fn run(_args: RpcArgs, _out: &Output) -> anyhow::Result<()> {
    anyhow::bail!("bench rpc needs the eTran Homa transport, which is not in this build yet")
}
