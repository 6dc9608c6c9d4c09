//! `etran down IFACE`: detach the datapath and remove its pins.
use crate::{cli::DownArgs, loader, output::Output};

pub fn run(args: DownArgs, out: &Output) -> anyhow::Result<()> {
    let was_up = loader::down(&args.iface)?;
    if out.json() {
        return out.print_json(&serde_json::json!({ "iface": args.iface, "was_up": was_up }));
    }
    if was_up {
        crate::outln!("etran down on {}", args.iface);
    } else {
        crate::outln!("etran was not up on {}; nothing to do", args.iface);
    }
    Ok(())
}
