//! The switch namespace's forwarding: BPF programs on its ports (src/bpf/testbed/switch.bpf.c), HTB for
//! a bottleneck rate. Everything here runs on a thread inside the switch namespace: devmap
//! entries and XDP/tc attachments name interfaces of the namespace they are made in.
use std::{mem::MaybeUninit, os::fd::AsFd};

use anyhow::Context;
use libbpf_rs::{
    skel::SkelBuilder, MapCore, MapFlags, OpenObject, TcHookBuilder, Xdp, XdpFlags, TC_EGRESS,
    TC_INGRESS,
};

use super::Spec;
use crate::{
    bpf::switch::{SwitchSkel, SwitchSkelBuilder},
    netlink::Netlink,
};

/// One switch port: the host it leads to (1-based), its ifindex and the host's MAC.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Port {
    pub host: u8,
    pub ifindex: u32,
    pub host_mac: [u8; 6],
}

/// What the switch dropped: in its bottleneck queues (HTB, with a rate) and at its ports'
/// receive rings (frames a host sent that found the ring full).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Drops {
    pub queues: u64,
    pub rings: u64,
}

impl std::ops::Sub for Drops {
    type Output = Drops;

    fn sub(self, before: Drops) -> Drops {
        Drops {
            queues: self.queues.saturating_sub(before.queues),
            rings: self.rings.saturating_sub(before.rings),
        }
    }
}

impl std::fmt::Display for Drops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} in the bottleneck queues, {} at the ports' receive rings",
            self.queues, self.rings
        )
    }
}

/// The drops so far of the ports named `ports`, through a netlink socket of the switch
/// namespace.
pub(crate) fn drops(nl: &mut Netlink, ports: &[String]) -> anyhow::Result<Drops> {
    let links = nl.links()?;
    let mut sum = Drops::default();
    for name in ports {
        let link = links
            .iter()
            .find(|l| &l.name == name)
            .with_context(|| format!("switch port {name} vanished"))?;
        sum.rings += link.rx_dropped;
        sum.queues += nl.root_qdisc_drops(link.index)?;
    }
    Ok(sum)
}

/// Packets per HTB leaf queue (HTB's default pfifo takes the port's txqueuelen, 1000): the ECN
/// virtual queue never grows past this many full-sized frames (and HTB's burst).
const QUEUE_PACKETS: u32 = 1000;

/// The switch configuration as the BPF programs see it (`struct sw_config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SwitchConfig {
    pub loss: u64,
    pub duplicate: u64,
    pub corrupt: u64,
    pub rate_bytes_per_sec: u64,
    pub redirect: bool,
    pub ecn_threshold: u32,
    pub queue_cap: u32,
    /// Bytes HTB passes at once without queueing (its bucket): the ECN marker's virtual queue
    /// holds them besides the real queue (see switch.bpf.c).
    pub burst: u32,
    /// The bottleneck's queue has priority bands, which the egress program picks by the TOS.
    pub prio: bool,
}

/// A probability as a threshold on a 32-bit random number: p * 2^32, 2^32 meaning always.
pub fn probability_threshold(p: f64) -> u64 {
    if p.is_nan() || p <= 0.0 {
        0
    } else if p >= 1.0 {
        1 << 32
    } else {
        (p * 4_294_967_296.0).round() as u64
    }
}

impl SwitchConfig {
    pub fn of(spec: &Spec) -> SwitchConfig {
        let threshold = spec.ecn_threshold.unwrap_or(0);
        let burst = spec.rate_bps.map_or(0, |r| crate::netlink::htb_params(r).burst_bytes);
        SwitchConfig {
            loss: probability_threshold(spec.loss),
            duplicate: probability_threshold(spec.duplicate),
            corrupt: probability_threshold(spec.corrupt),
            rate_bytes_per_sec: spec.rate_bps.map_or(0, |r| r / 8),
            redirect: !spec.kernel_forwarding(),
            ecn_threshold: threshold,
            queue_cap: (QUEUE_PACKETS * 1514)
                .max(threshold.saturating_mul(2))
                .saturating_add(burst),
            burst,
            prio: spec.prio,
        }
    }

    fn impaired(&self) -> bool {
        self.loss != 0 || self.duplicate != 0 || self.corrupt != 0
    }

    /// XDP goes on the ports when it forwards, or when it impairs.
    pub fn needs_xdp(&self) -> bool {
        self.redirect || self.impaired()
    }

    /// The egress program goes on the ports when it marks ECN or picks priority bands.
    pub fn needs_egress(&self) -> bool {
        self.ecn_threshold != 0 || self.prio
    }

    /// Whether any switch BPF program runs (XDP, or only the egress program).
    pub fn loads_programs(&self) -> bool {
        self.needs_xdp() || self.needs_egress()
    }
}

/// MAC as the key of sw_fdb (a __u64 holding the 6 bytes in frame order).
fn mac_key(mac: [u8; 6]) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..6].copy_from_slice(&mac);
    k
}

/// Loads the switch programs and attaches them to `ports`, and adds HTB when the spec has a
/// rate (with priority bands below it when the spec says `prio`). Must run inside the switch namespace. Attachments outlive this process (XDP through
/// netlink, tc through cls_bpf), and so do the maps they use.
pub(crate) fn install(spec: &Spec, ports: &[Port]) -> anyhow::Result<()> {
    let cfg = SwitchConfig::of(spec);
    let mut nl = Netlink::open()?;
    if let Some(rate) = spec.rate_bps {
        for p in ports {
            nl.add_htb(p.ifindex, rate, spec.prio)?;
            if spec.prio {
                nl.add_htb_prio(p.ifindex, rate)?;
            }
        }
    }
    if !cfg.loads_programs() {
        return Ok(());
    }

    let mut storage = MaybeUninit::uninit();
    let skel = load(&mut storage, &cfg)?;

    for (slot, p) in ports.iter().enumerate() {
        let slot = slot as u32;
        skel.maps
            .sw_ports
            .update(&slot.to_ne_bytes(), &p.ifindex.to_ne_bytes(), MapFlags::ANY)
            .context("filling the switch devmap")?;
        let mut value = [0u8; 8];
        value[..4].copy_from_slice(&slot.to_ne_bytes());
        value[4..].copy_from_slice(&p.ifindex.to_ne_bytes());
        skel.maps
            .sw_fdb
            .update(&mac_key(p.host_mac), &value, MapFlags::ANY)
            .context("filling the switch FDB map")?;
        if spec.ecn_threshold.is_some() {
            // struct sw_vq { bpf_spin_lock; pad; backlog; last_ns }: all zero.
            skel.maps
                .sw_vqs
                .update(&p.ifindex.to_ne_bytes(), &[0u8; 24], MapFlags::ANY)
                .context("filling the ECN queue map")?;
        }
    }

    for p in ports {
        let ifindex = p.ifindex as i32;
        if cfg.needs_xdp() {
            Xdp::new(skel.progs.sw_xdp.as_fd())
                .attach(ifindex, XdpFlags::DRV_MODE)
                .with_context(|| format!("attaching the switch XDP program to port {}", p.host))?;
        }
        if cfg.duplicate != 0 {
            let mut hook = TcHookBuilder::new(skel.progs.sw_dup.as_fd())
                .ifindex(ifindex)
                .replace(true)
                .handle(1)
                .priority(1)
                .hook(TC_INGRESS);
            hook.create().context("adding clsact to a switch port")?;
            hook.attach()
                .with_context(|| format!("attaching the duplicator to port {}", p.host))?;
        }
        if cfg.needs_egress() {
            let mut hook = TcHookBuilder::new(skel.progs.sw_egress.as_fd())
                .ifindex(ifindex)
                .replace(true)
                .handle(1)
                .priority(1)
                .hook(TC_EGRESS);
            hook.create().context("adding clsact to a switch port")?;
            hook.attach()
                .with_context(|| format!("attaching the egress program to port {}", p.host))?;
        }
    }
    Ok(())
}

/// Loads the switch programs configured with `cfg`, attached nowhere.
pub fn load<'a>(
    storage: &'a mut MaybeUninit<OpenObject>,
    cfg: &SwitchConfig,
) -> anyhow::Result<SwitchSkel<'a>> {
    let mut open =
        SwitchSkelBuilder::default().open(storage).context("opening the switch BPF object")?;
    let rodata =
        open.maps.rodata_data.as_deref_mut().context("switch BPF object has no .rodata")?;
    let c = &mut rodata.sw_config;
    c.loss = cfg.loss;
    c.duplicate = cfg.duplicate;
    c.corrupt = cfg.corrupt;
    c.rate_bytes_per_sec = cfg.rate_bytes_per_sec;
    c.redirect = cfg.redirect as u32;
    c.ecn_threshold = cfg.ecn_threshold;
    c.queue_cap = cfg.queue_cap;
    c.burst = cfg.burst;
    c.prio = cfg.prio as u32;
    crate::bpf::verifier::load(open, "the switch programs")
}

/// Switch counters, summed over CPUs, read from the XDP program attached to a port (or the
/// duplicator/ECN program when XDP is not attached).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub redirected: u64,
    pub passed: u64,
    pub lost: u64,
    pub corrupted: u64,
    pub duplicated: u64,
    pub ce_marked: u64,
}

/// The id of the switch's tc program on port `ifindex` (egress program, else ingress
/// duplicator), if one is attached. Must run inside the switch namespace.
pub(crate) fn tc_prog_id(ifindex: u32) -> Option<u32> {
    // bpf_tc_query ignores the program descriptor; TcHook just wants one to hold.
    let any = std::fs::File::open("/dev/null").ok()?;
    [TC_EGRESS, TC_INGRESS].into_iter().find_map(|point| {
        TcHookBuilder::new(any.as_fd())
            .ifindex(ifindex as i32)
            .handle(1)
            .priority(1)
            .hook(point)
            .query()
            .ok()
            .filter(|id| *id != 0)
    })
}

/// Reads the counters of the switch program `prog_id` (from its `sw_counters` map).
pub(crate) fn counters(prog_id: u32) -> anyhow::Result<Counters> {
    let fd = prog_fd_by_id(prog_id)?;
    let map_ids = prog_map_ids(fd.as_fd())?;
    for id in map_ids {
        let map = libbpf_rs::MapHandle::from_map_id(id).context("opening a switch map")?;
        if map.name().to_str() != Some("sw_counters") {
            continue;
        }
        let mut v = [0u64; 6];
        for (i, slot) in v.iter_mut().enumerate() {
            let per_cpu = map
                .lookup_percpu(&(i as u32).to_ne_bytes(), MapFlags::ANY)
                .context("reading switch counters")?
                .unwrap_or_default();
            *slot = per_cpu
                .iter()
                .map(|b| u64::from_ne_bytes(b[..8].try_into().unwrap_or([0; 8])))
                .sum();
        }
        return Ok(Counters {
            redirected: v[0],
            passed: v[1],
            lost: v[2],
            corrupted: v[3],
            duplicated: v[4],
            ce_marked: v[5],
        });
    }
    anyhow::bail!("program {prog_id} has no sw_counters map")
}

fn prog_fd_by_id(id: u32) -> anyhow::Result<std::os::fd::OwnedFd> {
    // SAFETY: plain libbpf call; a non-negative result is a new descriptor we own.
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        anyhow::bail!("opening BPF program {id}: {}", std::io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: fd is a fresh descriptor.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn prog_map_ids(fd: std::os::fd::BorrowedFd<'_>) -> anyhow::Result<Vec<u32>> {
    use std::os::fd::AsRawFd;
    let mut ids = [0u32; 16];
    // SAFETY: zeroed bpf_prog_info is valid; nr_map_ids/map_ids describe the `ids` buffer,
    // which outlives the call.
    let mut info: libbpf_rs::libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
    info.nr_map_ids = ids.len() as u32;
    info.map_ids = ids.as_mut_ptr() as u64;
    let mut len = std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_prog_info>() as u32;
    let r = unsafe {
        libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len)
    };
    if r < 0 {
        anyhow::bail!("querying a BPF program: {}", std::io::Error::from_raw_os_error(-r));
    }
    let n = (info.nr_map_ids as usize).min(ids.len());
    Ok(ids[..n].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_become_thresholds() {
        assert_eq!(probability_threshold(0.0), 0);
        assert_eq!(probability_threshold(1.0), 1 << 32);
        assert_eq!(probability_threshold(0.5), 1 << 31);
        assert_eq!(probability_threshold(f64::NAN), 0);
        assert_eq!(probability_threshold(0.2), 858_993_459);
    }

    #[test]
    fn config_follows_the_spec() {
        let mut spec = Spec::new("tb", 2);
        let c = SwitchConfig::of(&spec);
        assert!(c.redirect && c.needs_xdp());
        spec.rate_bps = Some(1_000_000_000);
        let c = SwitchConfig::of(&spec);
        assert!(!c.redirect && !c.needs_xdp());
        assert_eq!(c.rate_bytes_per_sec, 125_000_000);
        spec.loss = 0.1;
        spec.ecn_threshold = Some(30_000);
        let c = SwitchConfig::of(&spec);
        assert!(!c.redirect && c.needs_xdp());
        assert_eq!(c.ecn_threshold, 30_000);
        assert_eq!(c.burst, 126_600, "1 ms at 1 Gbit/s and a frame");
        assert_eq!(c.queue_cap, 1_514_000 + 126_600);
    }

    #[test]
    fn mac_keys_keep_frame_order() {
        assert_eq!(mac_key([2, 0x99, 0, 0, 0, 7]), [2, 0x99, 0, 0, 0, 7, 0, 0]);
    }
}
