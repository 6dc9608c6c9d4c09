use crate::{cli::RawArgs, output::Output};

pub fn run(_args: RawArgs, _out: &Output) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
