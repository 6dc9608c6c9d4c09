//! `etran stats [IFACE] [--watch DURATION]`: the entrance counters of each interface, and the
//! app ports of the daemon serving it with their AF_XDP mode ([`ports`]).
use std::time::Instant;

use serde::Serialize;

use crate::{
    backend::ports::{self, Served},
    cli::StatsArgs,
    loader::{self, counters::Counters, Datapath, Summary},
    output::{Output, Table},
};

#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    datapath: Summary,
    #[serde(flatten)]
    counters: Counters,
    /// The daemon serving the datapath and its apps' ports (`null`: no daemon serves it).
    daemon: Option<Served>,
}

fn collect(args: &StatsArgs) -> anyhow::Result<Vec<Datapath>> {
    match &args.iface {
        Some(iface) => match loader::find(iface)? {
            Some(dp) => Ok(vec![dp]),
            None => anyhow::bail!("etran is not up on {iface} (run `etran up {iface}`)"),
        },
        None => loader::find_all(),
    }
}

fn snapshot(dps: &[Datapath]) -> anyhow::Result<Vec<Report>> {
    dps.iter()
        .map(|dp| {
            Ok(Report {
                datapath: dp.summary.clone(),
                counters: dp.counters()?,
                daemon: ports::served(dp.summary.prog_id)?,
            })
        })
        .collect()
}

fn render(reports: &[Report], previous: Option<(&[Report], f64)>) -> String {
    if reports.is_empty() {
        return "etran is not up on any interface in this network namespace\n".into();
    }
    let mut text = String::new();
    for (i, r) in reports.iter().enumerate() {
        let d = &r.datapath;
        text += &format!(
            "{} (ifindex {}): {} backend, {} XDP, {} queue(s), program id {}, pacing: {}\n",
            d.iface,
            d.ifindex,
            d.backend,
            d.xdp_mode,
            d.queues,
            d.prog_id,
            d.pacing_shown()
        );
        let before = previous.and_then(|(p, secs)| p.get(i).map(|p| (p, secs)));
        // Packets by verdict; bytes and the rate count every verdict.
        let mut t =
            Table::new(["class", "transport", "pass", "drop", "total bytes", "total pkt/s"]);
        for (j, c) in r.counters.traffic.iter().enumerate() {
            let packets = c.transport.packets + c.pass.packets + c.drop.packets;
            let rate = before.map_or("-".to_string(), |(p, secs)| {
                let old = &p.counters.traffic[j];
                let old = old.transport.packets + old.pass.packets + old.drop.packets;
                format!("{:.0}", packets.saturating_sub(old) as f64 / secs)
            });
            let bytes = c.transport.bytes + c.pass.bytes + c.drop.bytes;
            t.row([
                c.class.clone(),
                c.transport.packets.to_string(),
                c.pass.packets.to_string(),
                c.drop.packets.to_string(),
                bytes.to_string(),
                rate,
            ]);
        }
        text += &t.render();
        // Only the reasons that happened (JSON lists them all).
        let mut drops = Table::new(["drop reason", "packets", "bytes"]);
        for d in r.counters.drops.iter().filter(|d| d.count.packets > 0) {
            drops.row([d.reason.clone(), d.count.packets.to_string(), d.count.bytes.to_string()]);
        }
        if drops.is_empty() {
            text += "no drops\n";
        } else {
            text += &drops.render();
        }
        // Only the events that happened (JSON lists them all).
        let mut events = Table::new(["event", "packets", "bytes"]);
        for e in r.counters.events.iter().filter(|e| e.count.packets > 0) {
            events.row([e.event.clone(), e.count.packets.to_string(), e.count.bytes.to_string()]);
        }
        if !events.is_empty() {
            text += &events.render();
        }
        text += &render_ports(&d.iface, r.daemon.as_ref());
        text.push('\n');
    }
    text
}

/// The daemon's line and its apps' ports, each with its AF_XDP mode.
fn render_ports(iface: &str, daemon: Option<&Served>) -> String {
    let Some(daemon) = daemon else {
        return format!("no daemon serves {iface}\n");
    };
    if daemon.ports.is_empty() {
        return format!("daemon (pid {}): no app ports\n", daemon.pid);
    }
    let mut t = Table::new(["app port", "slot", "transport", "app pid", "mode"]);
    for p in &daemon.ports {
        let pid = if p.pid == 0 { "-".to_string() } else { p.pid.to_string() };
        let transport = match p.transport {
            crate::proto::Transport::Tcp => "tcp",
            crate::proto::Transport::Homa => "homa",
        };
        t.row([
            p.port.clone(),
            p.slot.to_string(),
            transport.into(),
            pid,
            if p.batching {
                format!("{}, batching", p.mode.describe())
            } else {
                p.mode.describe().into()
            },
        ]);
    }
    format!("daemon (pid {}): {} app port(s)\n{}", daemon.pid, daemon.ports.len(), t.render())
}

pub fn run(args: StatsArgs, out: &Output) -> anyhow::Result<()> {
    let dps = collect(&args)?;
    let Some(every) = args.watch else {
        let reports = snapshot(&dps)?;
        if out.json() {
            return out.print_json(&reports);
        }
        crate::out!("{}", render(&reports, None));
        return Ok(());
    };
    // --watch: one JSON document per line, or a redrawn table with rates, until interrupted.
    let mut previous: Option<(Vec<Report>, Instant)> = None;
    loop {
        let reports = snapshot(&dps)?;
        let now = Instant::now();
        if out.json() {
            out.print_json(&reports)?;
        } else {
            let prev = previous
                .as_ref()
                .map(|(p, at)| (p.as_slice(), now.duration_since(*at).as_secs_f64().max(1e-9)));
            crate::out!("\x1b[2J\x1b[H{}", render(&reports, prev));
        }
        previous = Some((reports, now));
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        backend::ports::{PortMode, PortRow},
        proto::Transport,
    };

    fn port(slot: u32, pid: u32, transport: Transport, name: &str, mode: PortMode) -> PortRow {
        PortRow { slot, pid, transport, port: name.into(), queue: 0, mode, batching: false }
    }

    #[test]
    fn each_app_port_is_shown_with_its_mode() {
        let served = Served {
            pid: 10,
            ports: vec![
                port(1, 100, Transport::Tcp, "eth0 queue 0", PortMode::ZeroCopy),
                port(2, 0, Transport::Homa, "eth0 queue 1", PortMode::Copy),
            ],
        };
        assert_eq!(
            render_ports("eth0", Some(&served)),
            "daemon (pid 10): 2 app port(s)\n\
             app port      slot  transport  app pid       mode\n\
             eth0 queue 0     1        tcp      100  zero copy\n\
             eth0 queue 1     2       homa        -  copy mode\n"
        );
        let compat = Served {
            pid: 7,
            ports: vec![port(3, 55, Transport::Tcp, "etp3a", PortMode::VethPort)],
        };
        assert!(render_ports("va", Some(&compat))
            .contains("etp3a        3        tcp       55  veth port (copy mode)"));
        let streaming = Served {
            pid: 7,
            ports: vec![PortRow {
                batching: true,
                ..port(3, 55, Transport::Tcp, "etp3a", PortMode::VethPort)
            }],
        };
        assert!(render_ports("va", Some(&streaming)).contains("veth port (copy mode), batching"));
        let v = serde_json::to_value(Some(&streaming)).unwrap();
        assert_eq!(v["ports"][0]["batching"], true);
    }

    #[test]
    fn no_daemon_and_no_apps_are_told_apart() {
        assert_eq!(render_ports("va", None), "no daemon serves va\n");
        assert_eq!(
            render_ports("va", Some(&Served { pid: 7, ports: vec![] })),
            "daemon (pid 7): no app ports\n"
        );
    }

    #[test]
    fn json_names_the_modes_and_null_is_no_daemon() {
        let served = Served {
            pid: 7,
            ports: vec![port(3, 55, Transport::Tcp, "etp3a", PortMode::VethPort)],
        };
        let v = serde_json::to_value(Some(&served)).unwrap();
        assert_eq!(v["ports"][0]["mode"], "veth_port");
        assert_eq!(v["ports"][0]["transport"], "tcp");
        assert_eq!(v["ports"][0]["port"], "etp3a");
        assert_eq!(serde_json::to_value(None::<Served>).unwrap(), serde_json::Value::Null);
    }
}
