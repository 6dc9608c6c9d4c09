//! `etran bench echo`: TCP echo over eTran against Linux TCP (issue #4, not built yet).
use crate::{cli::EchoArgs, output::Output};

pub fn run(_args: EchoArgs, _out: &Output) -> anyhow::Result<()> {
    anyhow::bail!("bench echo needs the eTran TCP transport, which is not in this build yet; `etran bench raw` measures the AF_XDP path")
}
