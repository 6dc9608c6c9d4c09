//! `etran up IFACE`: load, attach and pin the datapath; `etran up --check`: what this kernel
//! offers etran, attaching nothing.
mod check;

use crate::{
    cli::UpArgs,
    ethtool,
    loader::{self, kernel, UpOptions, UpOutcome},
    output::Output,
    testbed,
};

pub fn run(args: UpArgs, out: &Output) -> anyhow::Result<()> {
    if args.check {
        return check::run(out);
    }
    // clap requires IFACE unless --check.
    let iface = args.iface.expect("IFACE is required without --check");
    let backend = args.backend.resolve()?;
    let opts = UpOptions {
        backend,
        pacing: args.pacing.resolve(backend),
        mode: args.mode,
        queues: args.queues,
        force: args.force,
        homa: args.homa.sched(),
    };
    let (summary, already) = match loader::up(&iface, &opts)? {
        UpOutcome::Attached(s) => (s, false),
        UpOutcome::AlreadyUp(s) => (s, true),
    };
    // Ingress drops what fails its checksums, and it cannot tell a checksum left for "hardware"
    // to finish from a corrupted one. The testbed turns offload off on its hosts' peers.
    if !already && ethtool::driver(&iface).is_ok_and(|d| d == "veth") && !testbed::here_is_a_host()
    {
        crate::log::warn(format!(
            "{iface} is a veth: segments its peer sends with TX checksum offload on (the veth \
             default) arrive with unfinished checksums, and etran drops them (tcp_bad_csum); \
             turn it off on the peer: ethtool -K PEER tx off"
        ));
    }
    // The datapath runs, but it is of no use without apps: say so now rather than at
    // `etran daemon`.
    if let Err(e) = kernel::require(kernel::TCP_DAEMON, "the etran daemon (its apps' ports)") {
        crate::log::warn(format!("{e:#}"));
    }
    if out.json() {
        return out.print_json(&serde_json::json!({ "already_up": already, "datapath": summary }));
    }
    let verb = if already { "already up on" } else { "up on" };
    crate::outln!(
        "etran {verb} {} (ifindex {}): {} backend, {} XDP, {} queue(s), program id {}, \
         pacing: {}",
        summary.iface,
        summary.ifindex,
        summary.backend,
        summary.xdp_mode,
        summary.queues,
        summary.prog_id,
        summary.pacing_shown()
    );
    Ok(())
}
