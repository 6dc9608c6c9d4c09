use crate::{cli::TestbedCommand, output::Output};

pub fn run(_cmd: TestbedCommand, _out: &Output) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
