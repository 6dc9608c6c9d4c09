use crate::{cli::*, output::Output};

pub fn run(_args: DownArgs, _out: &Output) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
