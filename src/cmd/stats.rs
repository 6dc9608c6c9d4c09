use crate::{cli::*, output::Output};

pub fn run(_args: StatsArgs, _out: &Output) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
