//! `etran testbed up|down|status`: the built-in network of namespaces (see crate::testbed).
use std::path::Path;

use crate::{
    cli::{TestbedCommand, TestbedUpArgs},
    loader::pins,
    output::{Output, Table},
    sys::require_root,
    testbed::{self, format_mac, Spec, Status, Testbed},
};

pub fn run(cmd: TestbedCommand, out: &Output) -> anyhow::Result<()> {
    match cmd {
        TestbedCommand::Up(args) => up(args, out),
        TestbedCommand::Down(args) => {
            require_root("etran testbed down")?;
            let removed = testbed::down(&args.name)?;
            if out.json() {
                out.print_json(&serde_json::json!({ "name": args.name, "removed": removed }))
            } else {
                if removed {
                    crate::outln!("testbed {} removed", args.name);
                } else {
                    crate::outln!("no testbed named {}", args.name);
                }
                Ok(())
            }
        }
        TestbedCommand::Status(args) => {
            require_root("etran testbed status")?;
            match testbed::status(&args.name)? {
                Some(st) => print_status(&st, out),
                None => anyhow::bail!(
                    "no testbed named {} (`etran testbed up --name {}` builds one)",
                    args.name,
                    args.name
                ),
            }
        }
    }
}

fn up(args: TestbedUpArgs, out: &Output) -> anyhow::Result<()> {
    require_root("etran testbed up")?;
    let spec = Spec {
        rate_bps: args.rate,
        ecn_threshold: args.ecn_threshold,
        prio: args.prio,
        loss: args.loss,
        duplicate: args.duplicate,
        corrupt: args.corrupt,
        direct: args.direct,
        queues: args.queues,
        app_queues: args.app_queues,
        mtu: args.mtu,
        ..Spec::new(&args.name.name, args.hosts)
    };
    spec.validate()?;
    pins::ensure_bpffs(Path::new(pins::BPFFS_ROOT))?;
    let tb = Testbed::up(&spec)?;
    match testbed::status(tb.name())? {
        Some(st) => print_status(&st, out),
        None => anyhow::bail!("testbed {} vanished right after being built", tb.name()),
    }
}

fn fmt_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn print_status(st: &Status, out: &Output) -> anyhow::Result<()> {
    if out.json() {
        return out.print_json(st);
    }
    let topology = match &st.switch_netns {
        Some(sw) => format!("switch {sw} forwarding {}", st.mode),
        None => "direct veth pair (no switch)".to_string(),
    };
    crate::outln!(
        "testbed {}: {} hosts, {topology}, {} queue{} per interface{}{}, MTU {}{}",
        st.name,
        st.hosts.len(),
        st.queues,
        if st.queues == 1 { "" } else { "s" },
        if st.app_queues > st.queues {
            format!(" ({} app queues per host NIC)", st.app_queues)
        } else {
            String::new()
        },
        if st.switch_netns.is_some() {
            " (switch ports: an RX queue per CPU at least)"
        } else {
            ""
        },
        st.mtu,
        if st.complete { "" } else { " (incomplete: run `etran testbed up` again)" }
    );
    if st.switch_netns.is_some() {
        crate::outln!(
            "rate {}  ecn-threshold {}  prio {}  loss {}  duplicate {}  corrupt {}",
            st.rate_bps.map_or_else(|| "-".to_string(), |r| format!("{}bit", fmt_rate(r))),
            fmt_opt(st.ecn_threshold),
            if st.prio { "8 classes" } else { "-" },
            st.loss,
            st.duplicate,
            st.corrupt
        );
    }
    let mut t = Table::new(["host", "netns", "nic", "address", "mac", "present"]);
    for h in &st.hosts {
        t.row([
            h.host.index.to_string(),
            h.host.netns.clone(),
            h.host.nic.clone(),
            format!("{}/24", h.host.ip),
            format_mac(&h.host.mac),
            if h.present { "yes" } else { "no" }.to_string(),
        ]);
    }
    crate::out!("{}", t.render());
    if let Some(c) = &st.counters {
        crate::outln!(
            "switch: {} redirected, {} passed, {} lost, {} corrupted, {} duplicated, {} CE-marked",
            c.redirected,
            c.passed,
            c.lost,
            c.corrupted,
            c.duplicated,
            c.ce_marked
        );
    }
    Ok(())
}

/// 1500000000 → "1.5g", 100000 → "100k".
fn fmt_rate(bps: u64) -> String {
    for (div, unit) in [(1_000_000_000u64, "g"), (1_000_000, "m"), (1_000, "k")] {
        if bps >= div {
            let v = bps as f64 / div as f64;
            return format!("{}{unit}", (v * 1000.0).round() / 1000.0);
        }
    }
    bps.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_print_in_tc_spelling() {
        assert_eq!(super::fmt_rate(1_500_000_000), "1.5g");
        assert_eq!(super::fmt_rate(100_000), "100k");
        assert_eq!(super::fmt_rate(999), "999");
    }
}
