use crate::{cli::*, output::Output};

pub fn run(_args: UpArgs, _out: &Output) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
