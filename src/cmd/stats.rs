//! `etran stats [IFACE] [--watch DURATION]`: the entrance counters of each interface.
use std::time::Instant;

use serde::Serialize;

use crate::{
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
        .map(|dp| Ok(Report { datapath: dp.summary.clone(), counters: dp.counters()? }))
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
        text.push('\n');
    }
    text
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
