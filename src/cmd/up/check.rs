//! `etran up --check`: what the running kernel offers etran. Probes every kernel feature etran uses
//! and loads every embedded BPF program (attached nowhere), so a kernel's verifier is tried on
//! all of them at once; fails when the TCP datapath could not run here.
use std::mem::MaybeUninit;

use serde::Serialize;

use libbpf_rs::skel::Skel;

use crate::{
    bpf::{
        entrance::types::{etran_backend, etran_pacing},
        verifier,
    },
    loader::{
        self,
        kernel::{self, Feature},
    },
    output::{Output, Table},
    testbed::switch::{self, SwitchConfig},
    xsk::XskProgram,
};

#[derive(Serialize)]
struct FeatureRow {
    feature: Feature,
    name: &'static str,
    since: &'static str,
    needed_by: &'static str,
    present: bool,
}

#[derive(Serialize)]
struct ProgramRow {
    object: &'static str,
    /// Why it did not load (the verifier's rejection, for one); none when it loaded.
    error: Option<String>,
    /// Its program the verifier worked hardest on, and the instructions that took (of
    /// `verifier_limit`): the margin this kernel leaves it.
    heaviest: Option<String>,
    verified_insns: Option<u32>,
    verifier_limit: u32,
}

#[derive(Serialize)]
struct Report {
    kernel: String,
    features: Vec<FeatureRow>,
    programs: Vec<ProgramRow>,
    /// Whether the TCP transport (compat backend: `etran up`, the daemon, apps) can run here.
    tcp_compat: bool,
}

/// Loads each program object on its own and says whether the kernel took it. Each object is
/// configured so that the verifier sees all of its code (read-only settings that would leave
/// branches dead are turned on).
fn load_all() -> Vec<ProgramRow> {
    fn row(object: &'static str, r: anyhow::Result<Option<(String, u32)>>) -> ProgramRow {
        let (error, heaviest) = match r {
            Ok(h) => (None, h),
            Err(e) => (Some(format!("{e:#}")), None),
        };
        let (heaviest, verified_insns) = heaviest.unzip();
        ProgramRow { object, error, heaviest, verified_insns, verifier_limit: verifier::INSN_LIMIT }
    }
    fn weigh<'a, S: Skel<'a>>(skel: anyhow::Result<S>) -> anyhow::Result<Option<(String, u32)>> {
        skel.map(|s| verifier::heaviest(s.object()))
    }
    const NONE: etran_pacing = etran_pacing::ETRAN_PACING_NONE;
    let mut storage = MaybeUninit::uninit();
    let entrance =
        loader::load_entrance(&mut storage, etran_backend::ETRAN_BACKEND_COMPAT, NONE, 1, 0);
    // Each transport object twice: for compat, and with the native backend's branches and its
    // gen-hook programs (as plain XDP programs: any kernel verifies those).
    let (compat, native) = (loader::ObjectBackend::Compat, loader::ObjectBackend::NativeUnhooked);
    let mut storage = MaybeUninit::uninit();
    let tcp = loader::load_tcp(&mut storage, None, compat, false);
    let mut storage = MaybeUninit::uninit();
    let homa = loader::load_homa(&mut storage, None, compat, Default::default());
    let mut storage = MaybeUninit::uninit();
    // Not pacing: plain XDP programs may not call the packet queue's kfunc.
    let tcp_native = loader::load_tcp(&mut storage, None, native, false);
    let mut storage = MaybeUninit::uninit();
    let homa_native = loader::load_homa(&mut storage, None, native, Default::default());
    let mut storage = MaybeUninit::uninit();
    let every_path = SwitchConfig {
        loss: 1,
        duplicate: 1,
        corrupt: 1,
        rate_bytes_per_sec: 125_000_000,
        redirect: true,
        ecn_threshold: 30_000,
        queue_cap: 1_640_600,
        burst: 126_600,
        prio: true,
    };
    let switch = switch::load(&mut storage, &every_path);
    vec![
        row("entrance", weigh(entrance)),
        row("tcp", weigh(tcp)),
        row("homa", weigh(homa)),
        row("tcp_native", weigh(tcp_native)),
        row("homa_native", weigh(homa_native)),
        row("switch", weigh(switch)),
        row("xsk_redirect", XskProgram::load(1).map(|p| p.heaviest())),
    ]
}

const NATIVE: &str = "native backend";

fn needed_by(f: Feature) -> &'static str {
    if kernel::TCP_DATAPATH.contains(&f) {
        "etran up"
    } else if kernel::TCP_DAEMON.contains(&f) {
        "etran daemon"
    } else {
        NATIVE
    }
}

pub fn run(out: &Output) -> anyhow::Result<()> {
    crate::sys::require_root("etran check (probing BPF features loads programs)")?;
    let features: Vec<FeatureRow> = kernel::ALL
        .iter()
        .map(|&f| FeatureRow {
            feature: f,
            name: f.name(),
            since: f.since(),
            needed_by: needed_by(f),
            present: f.probe(),
        })
        .collect();
    let programs = load_all();
    let tcp_compat = features.iter().all(|f| f.present || f.needed_by == NATIVE)
        && programs.iter().all(|p| p.error.is_none());
    let report = Report { kernel: kernel::kernel_release()?, features, programs, tcp_compat };

    if out.json() {
        out.print_json(&report)?;
    } else {
        crate::outln!("kernel {}", report.kernel);
        let mut t = Table::new(["feature", "since Linux", "needed by", "present"]);
        for f in &report.features {
            t.row([f.name, f.since, f.needed_by, if f.present { "yes" } else { "NO" }]);
        }
        crate::out!("{}", t.render());
        let mut t = Table::new(["BPF object", "loads", "heaviest program", "verifier insns"]);
        for p in &report.programs {
            let insns = p.verified_insns.map_or_else(
                || "-".to_string(),
                |n| {
                    format!(
                        "{n} ({:.1} % of {})",
                        100.0 * f64::from(n) / f64::from(p.verifier_limit),
                        p.verifier_limit
                    )
                },
            );
            t.row([
                p.object,
                if p.error.is_none() { "yes" } else { "NO" },
                p.heaviest.as_deref().unwrap_or("-"),
                insns.as_str(),
            ]);
        }
        crate::out!("{}", t.render());
        for p in &report.programs {
            if let Some(e) = &p.error {
                crate::outln!("{}: {e}", p.object);
            }
        }
    }
    if !report.tcp_compat {
        kernel::require(kernel::TCP_DATAPATH, "the TCP datapath (etran up)")?;
        kernel::require(kernel::TCP_DAEMON, "the etran daemon (its apps' ports)")?;
        let failed: Vec<&str> =
            report.programs.iter().filter(|p| p.error.is_some()).map(|p| p.object).collect();
        anyhow::bail!("BPF objects the kernel refused: {}", failed.join(", "));
    }
    Ok(())
}
