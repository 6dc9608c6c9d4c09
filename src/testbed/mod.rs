//! The built-in testbed: N hosts, each a network namespace `NAME-hI` with one veth "NIC"
//! (`eth0`, 10.99.0.I/24, MAC 02:99:00:00:00:II, permanent ARP entries for every other host),
//! all plugged into a switch namespace `NAME-sw`; or, with `direct` (2 hosts only), h1's and
//! h2's eth0 are the two ends of one veth pair, with the same addresses, MACs and neighbours and
//! no switch (nothing between the hosts: the topology the raw AF_XDP ceiling is judged on).
//! Every veth (host NICs and switch ports) has `queues` real RX/TX queues (default 1), so traffic
//! can be spread over CPUs: on a veth, a frame the stack or AF_XDP sends on TX queue q arrives
//! on the peer's RX queue q, and one redirected by XDP (the switch, a host's etran) on the
//! queue of its CPU. A switch port has at least one RX queue per CPU, so hosts' frames sent
//! from different CPUs never contend for one ring.
//! Every veth has the same MTU, 1500 unless `mtu` says otherwise: at least [`MIN_MTU`], at most
//! what a veth carries to XDP programs without multi-buffer support
//! ([`crate::loader::kernel::veth_xdp_max_mtu`]: the switch's programs, and etran's on the
//! hosts' NICs, are such programs).
//!
//! The switch holds a Linux bridge `br0` with every port `pI` (the other end of host I's veth)
//! enslaved, with static FDB entries for the hosts' MACs. By default an XDP program on each port
//! redirects known unicast straight to the destination port through a devmap, so a frame crosses
//! the switch without ever becoming an skb; the bridge only sees broadcast and unknown frames.
//! With a bottleneck rate (HTB on every port towards a host) or ECN marking, the XDP redirect is
//! off and frames go through the bridge and the qdisc, so a real queue forms. Loss, duplication
//! and corruption are our own BPF (see src/bpf/testbed/switch.bpf.c), since this kernel has no netem.
//!
//! The hosts' eth0 get GRO rather than an XDP program (users run `etran up eth0` there), which
//! is what a veth needs to receive redirected frames; the switch ports get GRO too. Every veth
//! of a testbed (hosts' eth0 and switch ports) has TX checksum offload (and so TSO) off, so
//! every frame carries full checksums: with offload, a sending stack leaves the TCP/UDP
//! checksum for "hardware" to finish, and that partial checksum is what XDP sees — on a host
//! running etran, whose ingress verifies checksums and cannot tell it from corruption (in every
//! mode: the direct pair, the bridge, and segments the switch's GRO merged and its port split
//! again), and on the raw bytes an XDP switch forwards. The cost: host kernel TCP sends MTU-sized
//! segments with software checksums (etran's AF_XDP frames are unaffected).
//!
//! Impairments (all in src/bpf/testbed/switch.bpf.c, probabilities in .rodata): loss is XDP_DROP and
//! corruption flips one random byte of the Ethernet payload, both in the ports' XDP program;
//! duplication is a tc ingress program that clones a frame out of its destination port
//! (`bpf_clone_redirect`) and lets the original go on through the bridge (with XDP forwarding,
//! the XDP program passes up exactly the frames picked to duplicate, so every frame for a known
//! host that reaches tc is one). With --rate (kernel forwarding) the XDP program still impairs
//! but never redirects, so impaired traffic also crosses the bridge and the HTB queue. ECN
//! marking is a tc egress program on each port keeping a virtual queue drained at the HTB
//! rate; it marks while that queue, less the burst HTB passes at once, exceeds the threshold.
//! With --prio the HTB class
//! has 8 leaf classes served in strict priority order (this kernel has no prio qdisc), and the
//! same egress program puts each IPv4 frame in the class of its TOS's top 3 bits (Homa's
//! priorities; the bridge sets no priority itself).
//!
//! IPv6 is disabled in every testbed namespace (no router solicitation, DAD or MLD chatter in
//! measurements and counters).
//!
//! Every namespace of a testbed is marked: the alias of its `lo` reads
//! `etran-testbed v1 name=NAME role=sw|hI ...`, the switch's also holding the spec (a direct
//! testbed's hosts hold it instead; `queues=N` only when N > 1). [`down`],
//! [`status`] and stale-testbed removal only ever touch namespaces with the right mark.
use std::{
    net::Ipv4Addr,
    sync::{atomic::AtomicU32, Mutex},
};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::{
    cleanup,
    ethtool::{set_gro, set_tx_checksum},
    netlink::{Netlink, VethQueues},
    netns::NetNs,
};

pub mod switch;

pub use switch::Counters;

/// The NIC name inside every host namespace.
pub const HOST_NIC: &str = "eth0";
/// The bridge inside the switch namespace.
pub const BRIDGE: &str = "br0";
/// The largest testbed.
pub const MAX_HOSTS: u8 = 32;
/// The most RX/TX queues a testbed interface can have.
pub const MAX_QUEUES: u32 = 64;
/// TX queues of a switched testbed's host NICs unless asked otherwise, on a kernel with etran's
/// hooks ([`kernel_app_queues`]): apps per host on the native backend.
pub const NATIVE_APP_QUEUES: u32 = 8;
/// The MTU of testbed interfaces unless asked otherwise (Ethernet's).
pub const DEFAULT_MTU: u32 = 1500;
/// The smallest testbed MTU: IPv6's minimum link MTU (RFC 8200 5), so that a testbed stays valid
/// when etran speaks IPv6 (Linux turns IPv6 off on a smaller link); nothing smaller is of use for
/// measurements, and IPv4's 576 only matters for paths, not links we build.
pub const MIN_MTU: u32 = 1280;
const MARK: &str = "etran-testbed v1";

/// What to build.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spec {
    pub name: String,
    pub hosts: u8,
    /// Bottleneck rate of every switch port towards a host, bits/s (HTB; kernel forwarding).
    pub rate_bps: Option<u64>,
    /// Mark CE on ECT packets when a port's estimated backlog exceeds this many bytes (needs
    /// `rate_bps`).
    pub ecn_threshold: Option<u32>,
    /// Priority queues at the bottleneck (needs `rate_bps`): 8 strict priority classes below HTB, picked by the
    /// IPv4 TOS's top 3 bits (Homa's `priority << 5`), highest first.
    pub prio: bool,
    /// Fractions of frames (0..=1) the switch drops, duplicates, corrupts.
    pub loss: f64,
    pub duplicate: f64,
    pub corrupt: f64,
    /// No switch: the two hosts' NICs are one veth pair.
    pub direct: bool,
    /// Direct, over these two interfaces of the caller's namespace (joined outside etran, as a
    /// qemu guest's virtio-net NICs on one hub) instead of a veth pair: each moves into its
    /// host (renamed [`HOST_NIC`], given the host's Ethernet address) and back, under its own
    /// name, when the testbed goes down.
    pub nics: Option<[String; 2]>,
    /// RX/TX queues of every veth (host NICs and switch ports).
    pub queues: u32,
    /// TX queues of every host NIC (and RX queues of its switch port), at least `queues`: one
    /// per app the native backend binds to the NIC (each app's socket sends on a queue of its
    /// own); the NIC keeps `queues` RX queues. None: what the running kernel's backend wants
    /// ([`Spec::app_queues`]), which building the testbed settles.
    pub app_queues: Option<u32>,
    /// MTU of every veth (host NICs and switch ports).
    pub mtu: u32,
}

impl Spec {
    /// A testbed of `hosts` hosts with no impairments, forwarding with XDP.
    pub fn new(name: &str, hosts: u8) -> Spec {
        Spec {
            name: name.to_string(),
            hosts,
            rate_bps: None,
            ecn_threshold: None,
            prio: false,
            loss: 0.0,
            duplicate: 0.0,
            corrupt: 0.0,
            direct: false,
            nics: None,
            queues: 1,
            app_queues: None,
            mtu: DEFAULT_MTU,
        }
    }

    /// The host NICs' TX queues: as asked, else [`kernel_app_queues`] on a switched testbed
    /// and 1 on a direct one (whose NICs cannot have more, see [`Spec::validate`]).
    pub fn app_queues(&self) -> u32 {
        match self.app_queues {
            Some(q) => q,
            None if self.direct => 1,
            None => kernel_app_queues(),
        }
    }

    /// Whether the switch forwards through the kernel (bridge + qdisc) rather than XDP.
    pub fn kernel_forwarding(&self) -> bool {
        self.rate_bps.is_some() || self.ecn_threshold.is_some()
    }

    /// "xdp" or "kernel" (how the switch forwards), or "direct" (no switch).
    pub fn mode(&self) -> &'static str {
        if self.direct {
            "direct"
        } else if self.kernel_forwarding() {
            "kernel"
        } else {
            "xdp"
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        validate_name(&self.name)?;
        if !(2..=MAX_HOSTS).contains(&self.hosts) {
            bail!("a testbed has 2 to {MAX_HOSTS} hosts, not {}", self.hosts);
        }
        for (what, f) in
            [("loss", self.loss), ("duplicate", self.duplicate), ("corrupt", self.corrupt)]
        {
            if !(0.0..=1.0).contains(&f) {
                bail!("--{what} must be a fraction between 0 and 1, not {f}");
            }
        }
        if self.ecn_threshold.is_some() && self.rate_bps.is_none() {
            bail!("--ecn-threshold needs --rate (ECN marks against the bottleneck rate)");
        }
        if self.prio && self.rate_bps.is_none() {
            bail!("--prio needs --rate (the priority queue is the bottleneck's)");
        }
        if self.rate_bps == Some(0) {
            bail!("--rate must be above zero");
        }
        if !(1..=MAX_QUEUES).contains(&self.queues) {
            bail!("--queues must be 1 to {MAX_QUEUES}, not {}", self.queues);
        }
        let app_queues = self.app_queues.unwrap_or(1);
        if !(1..=MAX_QUEUES).contains(&app_queues) {
            bail!("--app-queues must be 1 to {MAX_QUEUES}, not {app_queues}");
        }
        if self.direct && app_queues > 1 {
            bail!("--app-queues needs the switch (not --direct): a host NIC's extra TX queues arrive on its switch port's RX queues");
        }
        check_mtu(self.mtu)?;
        if self.nics.is_some() && !self.direct {
            bail!("given NICs make a direct testbed (--direct)");
        }
        if self.direct && self.hosts != 2 {
            bail!("--direct joins exactly 2 hosts with one veth pair, not {}", self.hosts);
        }
        let impaired = self.loss != 0.0 || self.duplicate != 0.0 || self.corrupt != 0.0;
        if self.direct && (self.kernel_forwarding() || impaired) {
            bail!(
                "--direct has no switch, which --rate, --ecn-threshold, --loss, --duplicate and \
                 --corrupt need"
            );
        }
        Ok(())
    }

    /// The switch's mark, holding the spec (a direct testbed has no switch: its hosts' marks say
    /// so instead, see [`host_marker`]).
    fn marker(&self) -> String {
        let mut s = format!("{MARK} name={} role=sw hosts={}", self.name, self.hosts);
        if let Some(r) = self.rate_bps {
            s += &format!(" rate={r}");
        }
        if let Some(e) = self.ecn_threshold {
            s += &format!(" ecn={e}");
        }
        if self.prio {
            s += " prio=1";
        }
        for (k, v) in [("loss", self.loss), ("dup", self.duplicate), ("corrupt", self.corrupt)] {
            if v != 0.0 {
                s += &format!(" {k}={v}");
            }
        }
        s + &links_marker(self)
    }
}

/// TX queues a NIC that etran apps bind to gets unless asked otherwise: [`NATIVE_APP_QUEUES`]
/// where the kernel has etran's hooks (the native backend binds each app's socket to a TX queue
/// of its own; a NIC of one queue takes one app), 1 on a stock kernel (compat gives each app a
/// port of its own, and the NIC stays as it always was).
pub fn kernel_app_queues() -> u32 {
    if crate::loader::kernel::has_native_hooks() {
        NATIVE_APP_QUEUES
    } else {
        1
    }
}

/// Refuses an MTU a testbed cannot have (see [`MIN_MTU`] and
/// [`crate::loader::kernel::veth_xdp_max_mtu`]). The default needs no look at the kernel: every
/// kernel's veth carries it to XDP.
fn check_mtu(mtu: u32) -> anyhow::Result<()> {
    if mtu == DEFAULT_MTU {
        return Ok(());
    }
    let max = crate::loader::kernel::veth_xdp_max_mtu()?;
    if !(MIN_MTU..=max).contains(&mtu) {
        bail!(
            "--mtu must be {MIN_MTU} to {max} (the most a veth carries to XDP programs without \
             multi-buffer support on this kernel), not {mtu}"
        );
    }
    Ok(())
}

/// A parsed namespace mark.
#[derive(Debug, Clone, PartialEq)]
struct Mark {
    name: String,
    role: String,
    spec: Option<Spec>,
}

/// ` queues=N` when N > 1, ` mtu=N` when N is not 1500 and ` app_queues=N` when N > 1 (marks
/// without them mean 1 queue, MTU 1500 and 1 app queue).
fn links_marker(spec: &Spec) -> String {
    let mut s = String::new();
    if spec.queues > 1 {
        s += &format!(" queues={}", spec.queues);
    }
    if spec.mtu != DEFAULT_MTU {
        s += &format!(" mtu={}", spec.mtu);
    }
    if spec.app_queues() > 1 {
        s += &format!(" app_queues={}", spec.app_queues());
    }
    if let Some([a, b]) = &spec.nics {
        s += &format!(" nics={a},{b}");
    }
    s
}

fn host_marker(spec: &Spec, index: u8) -> String {
    let topology = if spec.direct { " topology=direct" } else { "" };
    // Only a direct testbed's host marks carry the spec (there is no switch to hold it).
    let links = if spec.direct { links_marker(spec) } else { String::new() };
    format!("{MARK} name={} role=h{index}{topology}{links}", spec.name)
}

fn parse_mark(alias: &str) -> Option<Mark> {
    let rest = alias.strip_prefix(MARK)?.strip_prefix(' ')?;
    let mut name = None;
    let mut role = None;
    let mut spec = Spec { app_queues: Some(1), ..Spec::new("", 0) };
    for kv in rest.split(' ') {
        let (k, v) = kv.split_once('=')?;
        match k {
            "name" => name = Some(v.to_string()),
            "role" => role = Some(v.to_string()),
            "hosts" => spec.hosts = v.parse().ok()?,
            "rate" => spec.rate_bps = Some(v.parse().ok()?),
            "ecn" => spec.ecn_threshold = Some(v.parse().ok()?),
            "prio" => spec.prio = v == "1",
            "loss" => spec.loss = v.parse().ok()?,
            "dup" => spec.duplicate = v.parse().ok()?,
            "corrupt" => spec.corrupt = v.parse().ok()?,
            "topology" => spec.direct = v == "direct",
            "queues" => spec.queues = v.parse().ok()?,
            "mtu" => spec.mtu = v.parse().ok()?,
            "app_queues" => spec.app_queues = Some(v.parse().ok()?),
            "nics" => {
                let (a, b) = v.split_once(',')?;
                spec.nics = Some([a.to_string(), b.to_string()]);
            }
            _ => {}
        }
    }
    let name = name?;
    let role = role?;
    spec.name = name.clone();
    if spec.direct {
        spec.hosts = 2;
    }
    let spec = (role == "sw" || spec.direct).then_some(spec);
    Some(Mark { name, role, spec })
}

/// Testbed names: 1 to 32 of A-Z a-z 0-9 _ - ., not starting with `-` or `.` (they prefix
/// namespace names).
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && !name.starts_with(['-', '.'])
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !ok {
        bail!(
            "bad testbed name {name:?}: use 1 to 32 of A-Z a-z 0-9 _ - . (not starting with - or .)"
        );
    }
    Ok(())
}

/// Which testbed role a namespace name would play in testbed `name` ("sw", "h3"), by name only.
fn role_by_name(testbed: &str, ns: &str) -> Option<String> {
    let rest = ns.strip_prefix(testbed)?.strip_prefix('-')?;
    if rest == "sw" {
        return Some(rest.to_string());
    }
    let n = rest.strip_prefix('h')?;
    if n.is_empty() || n.starts_with('0') || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(rest.to_string())
}

/// The address of host `index`.
pub fn host_ip(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, 0, index)
}

/// The MAC of host `index`'s NIC.
pub fn host_mac(index: u8) -> [u8; 6] {
    [0x02, 0x99, 0, 0, 0, index]
}

/// The MAC of the switch port towards host `index`.
pub fn port_mac(index: u8) -> [u8; 6] {
    [0x02, 0x99, 0, 0, 1, index]
}

/// The switch port towards host `index`.
pub fn port_name(index: u8) -> String {
    format!("p{index}")
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn serialize_mac<S: serde::Serializer>(mac: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_mac(mac))
}

/// One host of a testbed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    /// 1-based.
    pub index: u8,
    pub netns: String,
    pub nic: String,
    pub ip: Ipv4Addr,
    #[serde(serialize_with = "serialize_mac")]
    pub mac: [u8; 6],
}

impl Host {
    fn of(testbed: &str, index: u8) -> Host {
        Host {
            index,
            netns: format!("{testbed}-h{index}"),
            nic: HOST_NIC.to_string(),
            ip: host_ip(index),
            mac: host_mac(index),
        }
    }
}

/// A built testbed. One made by [`Testbed::up`] stays after the process exits; one made by
/// [`Testbed::private`] is removed when dropped or when the process is interrupted.
#[derive(Debug)]
pub struct Testbed {
    spec: Spec,
    hosts: Vec<Host>,
    private: bool,
}

/// Serializes building and interrupt-time removal: a Ctrl-C in the middle of a build waits for
/// the build (or its failure cleanup) to finish, then removes what it made.
static BUILD_LOCK: Mutex<()> = Mutex::new(());
static PRIVATE_SEQ: AtomicU32 = AtomicU32::new(0);

fn cleanup_key(name: &str) -> String {
    format!("testbed:{name}")
}

impl Testbed {
    /// Builds the testbed `spec` describes, first removing a stale testbed of the same name.
    /// It persists (nothing removes it on drop). Fails, leaving nothing behind, if a namespace
    /// it needs exists and is not part of an etran testbed of that name.
    pub fn up(spec: &Spec) -> anyhow::Result<Testbed> {
        Self::build(spec.clone(), false)
    }

    /// A private testbed of `hosts` hosts under a unique name (`etb<pid>_<n>`), removed when
    /// dropped and when the process gets Ctrl-C/SIGTERM. Private testbeds left by processes
    /// that died are removed first.
    pub fn private(hosts: u8) -> anyhow::Result<Testbed> {
        Self::private_with(Spec::new("", hosts))
    }

    /// Like [`Testbed::private`] with impairments; `spec.name` is ignored.
    pub fn private_with(mut spec: Spec) -> anyhow::Result<Testbed> {
        reap_dead_private();
        let n = PRIVATE_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        spec.name = format!("etb{}_{n}", std::process::id());
        Self::build(spec, true)
    }

    fn build(mut spec: Spec, private: bool) -> anyhow::Result<Testbed> {
        spec.app_queues = Some(spec.app_queues());
        spec.validate()?;
        check_names_free(&spec)?;
        let name = spec.name.clone();
        let key = cleanup_key(&name);
        {
            let n = name.clone();
            cleanup::register(
                key.clone(),
                Box::new(move || {
                    let _guard = BUILD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = down(&n);
                }),
            );
        }
        let guard = BUILD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let built = down(&name).and_then(|_| build_all(&spec));
        let hosts = match built {
            Ok(h) => h,
            Err(e) => {
                let _ = down(&name);
                drop(guard);
                cleanup::unregister(&key);
                return Err(e.context(format!("building testbed {name:?}")));
            }
        };
        drop(guard);
        if !private {
            cleanup::unregister(&key);
        }
        crate::log::info(format!(
            "testbed {name}: {} hosts, {} forwarding, {} queue(s) per interface, MTU {}",
            spec.hosts,
            spec.mode(),
            spec.queues,
            spec.mtu
        ));
        Ok(Testbed { spec, hosts, private })
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `index` (1-based). Panics when out of range.
    pub fn host(&self, index: u8) -> &Host {
        assert!(
            (1..=self.hosts.len()).contains(&(index as usize)),
            "testbed {} has no host {index}",
            self.name()
        );
        &self.hosts[index as usize - 1]
    }

    /// Host `index`'s namespace.
    pub fn netns(&self, index: u8) -> anyhow::Result<NetNs> {
        let host = self
            .hosts
            .get((index as usize).wrapping_sub(1))
            .with_context(|| format!("testbed {} has no host {index}", self.name()))?;
        NetNs::open(&host.netns)
    }

    /// The switch's namespace name.
    pub fn switch_netns_name(&self) -> String {
        format!("{}-sw", self.name())
    }

    /// The switch's namespace (an error for a direct testbed).
    pub fn switch_netns(&self) -> anyhow::Result<NetNs> {
        if self.spec.direct {
            bail!("testbed {} is direct: it has no switch", self.name());
        }
        NetNs::open(&self.switch_netns_name())
    }

    /// What the switch dropped so far (None for a direct testbed).
    pub fn switch_drops(&self) -> anyhow::Result<Option<switch::Drops>> {
        if self.spec.direct {
            return Ok(None);
        }
        let ports: Vec<String> = self.hosts.iter().map(|h| port_name(h.index)).collect();
        let mut nl = Netlink::open_in(&self.switch_netns()?)?;
        switch::drops(&mut nl, &ports).map(Some)
    }

    /// Frames the hosts' NICs dropped so far, either way (a veth: its peer's receive ring, or
    /// its own, was full; the kernel also counts there a frame no protocol took): losses the
    /// switch does not see, as a native host's frames reach the wire through its NIC's
    /// transmit path.
    pub fn nic_drops(&self) -> anyhow::Result<u64> {
        let mut sum = 0;
        for h in &self.hosts {
            let link = Netlink::open_in(&NetNs::open(&h.netns)?)?
                .link(HOST_NIC)?
                .with_context(|| format!("{} has no {HOST_NIC}", h.netns))?;
            sum += link.rx_dropped + link.tx_dropped;
        }
        Ok(sum)
    }

    /// Whether this testbed is removed on drop.
    pub fn is_private(&self) -> bool {
        self.private
    }

    /// The switch's counters (summed over ports and CPUs; zero when it runs no BPF program or
    /// there is no switch).
    pub fn counters(&self) -> anyhow::Result<Counters> {
        if self.spec.direct {
            return Ok(Counters::default());
        }
        read_counters(&self.switch_netns()?, self.hosts.len() as u8)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if self.private {
            let _guard = BUILD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = down(self.name()) {
                crate::log::warn(format!("removing testbed {}: {e:#}", self.name()));
            }
            cleanup::unregister(&cleanup_key(self.name()));
        }
    }
}

/// Runs inside every new namespace before it gets its name: marks it, brings lo up and turns
/// IPv6 off (no router solicitations, DAD or MLD chatter in measurements).
fn init_ns(mark: &str) -> anyhow::Result<()> {
    for path in
        ["/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/sys/net/ipv6/conf/default/disable_ipv6"]
    {
        if let Err(e) = std::fs::write(path, "1") {
            crate::log::debug(format!("{path}: {e}"));
        }
    }
    let mut nl = Netlink::open()?;
    let lo = nl.index("lo")?;
    nl.set_alias(lo, mark)?;
    nl.set_up(lo)?;
    Ok(())
}

/// The mark of namespace `ns`, or None when it has none (or is not a namespace at all).
fn read_mark(ns: &str) -> anyhow::Result<Option<Mark>> {
    let handle = match NetNs::open(ns) {
        Ok(h) => h,
        Err(_) => return Ok(None),
    };
    let alias = handle.run(|| -> anyhow::Result<Option<String>> {
        Ok(Netlink::open()?.link("lo")?.and_then(|l| l.alias))
    })??;
    Ok(alias.as_deref().and_then(parse_mark))
}

/// Whether the calling thread's network namespace is a testbed host (whose NIC's peer, a switch
/// port, sends with TX checksum offload off: see [`crate::ethtool::set_tx_checksum`]).
pub fn here_is_a_host() -> bool {
    let alias =
        Netlink::open().and_then(|mut nl| nl.link("lo")).ok().flatten().and_then(|l| l.alias);
    alias.as_deref().and_then(parse_mark).is_some_and(|m| m.role.starts_with('h'))
}

/// Namespaces (by name) that belong to testbed `name`: named like its parts and marked as such.
fn namespaces_of(name: &str) -> anyhow::Result<Vec<(String, Mark)>> {
    let mut out = Vec::new();
    for ns in NetNs::list()? {
        if role_by_name(name, &ns).is_none() {
            continue;
        }
        if let Some(mark) = read_mark(&ns)? {
            if mark.name == name && role_by_name(name, &ns).as_deref() == Some(mark.role.as_str()) {
                out.push((ns, mark));
            }
        }
    }
    Ok(out)
}

/// Refuses to build over a namespace that has one of our names but is not ours.
fn check_names_free(spec: &Spec) -> anyhow::Result<()> {
    let mut wanted: Vec<String> = (1..=spec.hosts).map(|i| format!("{}-h{i}", spec.name)).collect();
    if !spec.direct {
        wanted.push(format!("{}-sw", spec.name));
    }
    let existing = NetNs::list()?;
    for ns in wanted.iter().filter(|w| existing.contains(w)) {
        if NetNs::is_stale_file(ns) {
            continue; // an empty leftover file, removed by down()
        }
        match read_mark(ns)? {
            Some(m) if m.name == spec.name => {}
            _ => bail!(
                "network namespace {ns:?} exists and is not part of etran testbed {:?}; \
                 refusing to touch it (pick another --name)",
                spec.name
            ),
        }
    }
    Ok(())
}

/// Removes testbed `name`: every namespace marked as part of it (and empty leftover files under
/// its names). Returns whether anything was removed. Never touches unmarked namespaces.
pub fn down(name: &str) -> anyhow::Result<bool> {
    validate_name(name)?;
    let mut removed = false;
    for ns in NetNs::list()? {
        if role_by_name(name, &ns).is_some() && NetNs::is_stale_file(&ns) {
            NetNs::delete(&ns)?;
            removed = true;
        }
    }
    for (ns, mark) in namespaces_of(name)? {
        // A datapath a user put on a host NIC dies with the namespace, but its pins would keep
        // its maps alive: take it down first.
        if let Ok(handle) = NetNs::open(&ns) {
            if let Ok(Err(e)) = handle.run(|| crate::loader::down(HOST_NIC)) {
                crate::log::debug(format!("etran down {HOST_NIC} in {ns}: {e:#}"));
            }
            if let Some(nic) = given_nic(&mark) {
                // Deleting the namespace would return it too, but under the host's name.
                if let Err(e) = give_back(&handle, nic) {
                    crate::log::warn(format!("giving {nic} back from {ns}: {e:#}"));
                }
            }
        }
        NetNs::delete(&ns).with_context(|| format!("removing network namespace {ns}"))?;
        removed = true;
    }
    Ok(removed)
}

/// The interface of the caller's namespace a host of a testbed over given NICs holds.
fn given_nic(mark: &Mark) -> Option<&str> {
    let nics = mark.spec.as_ref()?.nics.as_ref()?;
    match mark.role.as_str() {
        "h1" => Some(&nics[0]),
        "h2" => Some(&nics[1]),
        _ => None,
    }
}

/// Moves `nic` (the host's [`HOST_NIC`] in `host`) back into the caller's namespace.
fn give_back(host: &NetNs, nic: &str) -> anyhow::Result<()> {
    let home = NetNs::current()?;
    let mut nl = Netlink::open_in(host)?;
    let index = nl.index(HOST_NIC)?;
    nl.move_link(index, &home, nic)
}

/// Removes private testbeds (`etb<pid>_<n>`) whose process is gone.
fn reap_dead_private() {
    let Ok(list) = NetNs::list() else { return };
    let mut dead: Vec<String> = Vec::new();
    for ns in list {
        let Some(rest) = ns.strip_prefix("etb") else {
            continue;
        };
        let Some((tb_rest, _role)) = rest.rsplit_once('-') else {
            continue;
        };
        let Some((pid, _n)) = tb_rest.split_once('_') else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks for existence.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        let tb = format!("etb{tb_rest}");
        if gone && !dead.contains(&tb) {
            dead.push(tb);
        }
    }
    for tb in dead {
        crate::log::info(format!("removing stale private testbed {tb}"));
        let _ = down(&tb);
    }
}

fn build_all(spec: &Spec) -> anyhow::Result<Vec<Host>> {
    let name = &spec.name;
    let hosts: Vec<Host> = (1..=spec.hosts).map(|i| Host::of(name, i)).collect();
    let sw = if spec.direct {
        None
    } else {
        let sw_mark = spec.marker();
        Some(NetNs::add_with(&format!("{name}-sw"), || init_ns(&sw_mark))?)
    };
    let mut host_ns = Vec::new();
    for h in &hosts {
        let mark = host_marker(spec, h.index);
        host_ns.push(NetNs::add_with(&h.netns, || init_ns(&mark))?);
    }
    match &sw {
        Some(sw) => build_switch(spec, sw, &hosts, &host_ns)?,
        None if spec.nics.is_some() => {
            let mut nl = Netlink::open()?;
            for ((h, ns), nic) in hosts.iter().zip(&host_ns).zip(spec.nics.iter().flatten()) {
                let index = nl.index(nic)?;
                nl.set_mac(index, h.mac)?;
                nl.move_link(index, ns, HOST_NIC)?;
            }
        }
        None => {
            // Created in h1, the peer end goes straight into h2 under the same name.
            let (a, b) = (&hosts[0], &hosts[1]);
            Netlink::open_in(&host_ns[0])?.add_veth(
                HOST_NIC,
                a.mac,
                HOST_NIC,
                b.mac,
                &host_ns[1],
                VethQueues::same(spec.queues),
            )?;
        }
    }

    for (h, ns) in hosts.iter().zip(&host_ns) {
        let mut hn = Netlink::open_in(ns)?;
        let nic = hn.index(HOST_NIC)?;
        // The switch port's XDP program caps this MTU at what XDP carries, which validate()
        // held the spec to; etran's programs come later (`etran up`).
        hn.set_mtu(nic, spec.mtu)?;
        hn.add_address_v4(nic, h.ip, 24)?;
        for other in hosts.iter().filter(|o| o.index != h.index) {
            hn.add_neighbour_v4(nic, other.ip, other.mac)?;
        }
        hn.set_up(nic)?;
        ns.run(|| -> anyhow::Result<()> {
            set_gro(HOST_NIC, true)?;
            set_tx_checksum(HOST_NIC, false)?;
            Ok(())
        })??;
    }
    Ok(hosts)
}

/// The switch namespace's bridge, one port per host (the peer of the host's NIC) and its
/// forwarding programs.
fn build_switch(spec: &Spec, sw: &NetNs, hosts: &[Host], host_ns: &[NetNs]) -> anyhow::Result<()> {
    let mut nl = Netlink::open_in(sw)?;
    nl.add_bridge(BRIDGE, [0x02, 0x99, 0, 0, 2, 0])?;
    let br = nl.index(BRIDGE)?;
    for (h, ns) in hosts.iter().zip(host_ns) {
        // The port's RX queues take what apps on the NIC's extra TX queues send, and at least
        // one per CPU: a frame a host's XDP redirects lands on the queue of the CPU that sent
        // it, so senders on different CPUs never share one 256-frame ring (with one queue, the
        // ring overflowed whenever the CPU draining it was busy with the other side's work:
        // drops a hardware port, taking frames at line rate, would not have).
        let app_queues = spec.queues.max(spec.app_queues());
        let port_rx = app_queues.max(crate::sys::online_cpus().min(MAX_QUEUES as usize) as u32);
        let queues =
            VethQueues { tx: spec.queues, rx: port_rx, peer_tx: app_queues, peer_rx: spec.queues };
        nl.add_veth(&port_name(h.index), port_mac(h.index), HOST_NIC, h.mac, ns, queues)?;
    }
    let links = nl.links()?;
    let mut ports = Vec::new();
    for h in hosts {
        let pname = port_name(h.index);
        let idx = links
            .iter()
            .find(|l| l.name == pname)
            .map(|l| l.index)
            .with_context(|| format!("port {pname} vanished"))?;
        nl.set_mtu(idx, spec.mtu)?;
        nl.set_master(idx, br)?;
        nl.add_bridge_fdb(idx, h.mac)?;
        ports.push(switch::Port { host: h.index, ifindex: idx, host_mac: h.mac });
    }
    let port_names: Vec<String> = hosts.iter().map(|h| port_name(h.index)).collect();
    sw.run(|| switch::install(spec, &ports))??;
    for p in &ports {
        nl.set_up(p.ifindex)?;
    }
    nl.set_up(br)?;
    // GRO after the link is up: a veth enables NAPI (which receiving redirected frames needs)
    // when GRO is switched on while it is up; switched on while down, it stays without.
    sw.run(|| -> anyhow::Result<()> {
        for p in &port_names {
            set_gro(p, true)?;
            set_tx_checksum(p, false)?;
        }
        if spec.rate_bps.is_some() && !std::path::Path::new(BRIDGE_NETFILTER).exists() {
            crate::log::warn(
                "br_netfilter is not loaded: frames queued at the switch's bottleneck stay \
                 charged to their Linux senders' sockets (a veth keeps a frame's owner across \
                 namespaces), so Linux senders feel that queue as their own (socket buffers, \
                 TCP small queues); `modprobe br_netfilter` releases them at the switch, as a \
                 real network does",
            );
        }
        Ok(())
    })??;
    Ok(())
}

/// Present in a namespace when br_netfilter is loaded. Bridged IPv4 frames then pass through
/// netfilter, which releases them from their sender's socket; without it a veth keeps a frame
/// charged to its sender across namespaces until the frame leaves the switch.
const BRIDGE_NETFILTER: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

fn read_counters(sw: &NetNs, hosts: u8) -> anyhow::Result<Counters> {
    sw.run(|| -> anyhow::Result<Counters> {
        let mut nl = Netlink::open()?;
        let links = nl.links()?;
        // Every port runs programs of the same object, so one port's program tells all.
        let port = (1..=hosts).find_map(|i| links.iter().find(|l| l.name == port_name(i)));
        let Some(port) = port else {
            return Ok(Counters::default());
        };
        match port.xdp_prog_id.or_else(|| switch::tc_prog_id(port.index)) {
            Some(id) => switch::counters(id),
            None => Ok(Counters::default()),
        }
    })?
}

/// What `etran testbed status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub name: String,
    /// None for a direct testbed.
    pub switch_netns: Option<String>,
    /// "xdp" or "kernel" (switch forwarding), "direct" (no switch), or "broken".
    pub mode: String,
    pub rate_bps: Option<u64>,
    pub ecn_threshold: Option<u32>,
    /// Priority queues at the bottleneck.
    pub prio: bool,
    pub loss: f64,
    pub duplicate: f64,
    pub corrupt: f64,
    /// RX/TX queues of every testbed interface.
    pub queues: u32,
    /// TX queues of every host NIC, for apps of the native backend.
    pub app_queues: u32,
    /// MTU of every testbed interface.
    pub mtu: u32,
    pub hosts: Vec<HostStatus>,
    /// Whether every namespace of the testbed is there.
    pub complete: bool,
    /// Switch program counters (absent when the switch runs no BPF program: a bare --rate).
    pub counters: Option<Counters>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    #[serde(flatten)]
    pub host: Host,
    pub present: bool,
}

/// The state of testbed `name`, or None when none of it exists.
pub fn status(name: &str) -> anyhow::Result<Option<Status>> {
    validate_name(name)?;
    let found = namespaces_of(name)?;
    if found.is_empty() {
        return Ok(None);
    }
    let sw_name = format!("{name}-sw");
    let spec = found.iter().find_map(|(_, m)| m.spec.clone());
    let host_count = match &spec {
        Some(s) => s.hosts,
        None => found
            .iter()
            .filter_map(|(_, m)| m.role.strip_prefix('h')?.parse::<u8>().ok())
            .max()
            .unwrap_or(0),
    };
    let hosts: Vec<HostStatus> = (1..=host_count)
        .map(|i| {
            let host = Host::of(name, i);
            let present = found.iter().any(|(ns, _)| *ns == host.netns);
            HostStatus { host, present }
        })
        .collect();
    let complete = spec.is_some() && hosts.iter().all(|h| h.present);
    let direct = spec.as_ref().is_some_and(|s| s.direct);
    let counters = match &spec {
        Some(s) if !direct => NetNs::open(&sw_name)
            .and_then(|sw| read_counters(&sw, s.hosts))
            .ok()
            .filter(|_| switch::SwitchConfig::of(s).loads_programs()),
        _ => None,
    };
    let spec = spec.unwrap_or_else(|| Spec::new(name, host_count));
    Ok(Some(Status {
        name: name.to_string(),
        switch_netns: (!direct).then_some(sw_name),
        mode: if complete { spec.mode().to_string() } else { "broken".to_string() },
        rate_bps: spec.rate_bps,
        ecn_threshold: spec.ecn_threshold,
        prio: spec.prio,
        loss: spec.loss,
        duplicate: spec.duplicate,
        corrupt: spec.corrupt,
        queues: spec.queues,
        app_queues: spec.app_queues(),
        mtu: spec.mtu,
        hosts,
        complete,
        counters,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_deterministic() {
        assert_eq!(host_ip(3), Ipv4Addr::new(10, 99, 0, 3));
        assert_eq!(format_mac(&host_mac(17)), "02:99:00:00:00:11");
        assert_eq!(format_mac(&port_mac(2)), "02:99:00:00:01:02");
        let h = Host::of("etran", 2);
        assert_eq!(h.netns, "etran-h2");
        assert_eq!(h.nic, "eth0");
        assert!(port_name(MAX_HOSTS).len() <= 15);
    }

    #[test]
    fn names_are_checked() {
        for ok in ["etran", "tb-1", "a.b_c", &"x".repeat(32)] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "-x", ".x", "a/b", "a b", &"x".repeat(33)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn roles_come_from_names() {
        assert_eq!(role_by_name("tb", "tb-sw").as_deref(), Some("sw"));
        assert_eq!(role_by_name("tb", "tb-h12").as_deref(), Some("h12"));
        assert_eq!(role_by_name("tb", "tb-x-h1"), None);
        assert_eq!(role_by_name("tb", "tb-h"), None);
        assert_eq!(role_by_name("tb", "tb-h01"), None);
        assert_eq!(role_by_name("tb", "tbx-sw"), None);
    }

    #[test]
    fn specs_are_validated() {
        Spec::new("t", 2).validate().unwrap();
        assert!(Spec::new("t", 1).validate().is_err());
        assert!(Spec::new("t", 33).validate().is_err());
        let mut s = Spec::new("t", 2);
        s.ecn_threshold = Some(1000);
        assert!(s.validate().is_err());
        s.rate_bps = Some(1_000_000);
        s.validate().unwrap();
        assert_eq!(s.mode(), "kernel");
        let e = Spec { prio: true, ..Spec::new("t", 2) }.validate().unwrap_err().to_string();
        assert!(e.contains("--prio needs --rate"), "{e}");
        Spec { prio: true, ..s.clone() }.validate().unwrap();
        s.loss = 1.5;
        assert!(s.validate().is_err());
        let mut d = Spec { direct: true, ..Spec::new("t", 2) };
        d.validate().unwrap();
        assert_eq!(d.mode(), "direct");
        d.loss = 0.1;
        assert!(d.validate().is_err());
        assert!(Spec { direct: true, ..Spec::new("t", 3) }.validate().is_err());
        assert_eq!(Spec::new("t", 2).queues, 1);
        for q in [1, 2, MAX_QUEUES] {
            Spec { queues: q, ..Spec::new("t", 2) }.validate().unwrap();
        }
        for q in [0, MAX_QUEUES + 1] {
            let e = Spec { queues: q, ..Spec::new("t", 2) }.validate().unwrap_err().to_string();
            assert!(e.contains("--queues") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn mtus_are_bounded_by_what_xdp_on_a_veth_carries() {
        assert_eq!(Spec::new("t", 2).mtu, DEFAULT_MTU);
        let max = crate::loader::kernel::veth_xdp_max_mtu().unwrap();
        for mtu in [MIN_MTU, DEFAULT_MTU, max] {
            Spec { mtu, ..Spec::new("t", 2) }.validate().unwrap();
            Spec { mtu, direct: true, ..Spec::new("t", 2) }.validate().unwrap();
        }
        for mtu in [0, MIN_MTU - 1, max + 1, 9000] {
            let e = Spec { mtu, ..Spec::new("t", 2) }.validate().unwrap_err().to_string();
            assert!(
                e.contains("--mtu") && e.contains(&max.to_string()) && !e.contains('\n'),
                "{e}"
            );
        }
    }

    #[test]
    fn host_nics_get_the_kernels_app_queues_unless_asked_or_direct() {
        let switched = Spec::new("tb", 2);
        assert_eq!(switched.app_queues, None);
        assert_eq!(switched.app_queues(), kernel_app_queues());
        assert_eq!(Spec { app_queues: Some(3), ..switched.clone() }.app_queues(), 3);
        assert_eq!(Spec { direct: true, ..switched.clone() }.app_queues(), 1);
        Spec { direct: true, ..switched }.validate().unwrap();
        let expected =
            if crate::loader::kernel::has_native_hooks() { NATIVE_APP_QUEUES } else { 1 };
        assert_eq!(kernel_app_queues(), expected);
    }

    #[test]
    fn marks_round_trip() {
        let mut s = Spec { app_queues: Some(1), ..Spec::new(&"n".repeat(32), 32) };
        s.rate_bps = Some(999_999_999_999);
        s.ecn_threshold = Some(u32::MAX);
        s.prio = true;
        s.loss = 0.123456789012345;
        s.duplicate = 1.0;
        s.corrupt = 0.000001;
        let m = s.marker();
        assert!(m.len() <= 255, "{} bytes", m.len());
        let parsed = parse_mark(&m).unwrap();
        assert_eq!(parsed.role, "sw");
        assert_eq!(parsed.spec.unwrap(), s);
        let h = parse_mark(&host_marker(&Spec::new("tb", 4), 4)).unwrap();
        assert_eq!((h.name.as_str(), h.role.as_str(), h.spec), ("tb", "h4", None));
        let direct = Spec { direct: true, app_queues: Some(1), ..Spec::new("tb", 2) };
        let h = parse_mark(&host_marker(&direct, 2)).unwrap();
        assert_eq!((h.role.as_str(), h.spec), ("h2", Some(direct.clone())));
        // Queues: written only when above 1, absent means 1.
        assert!(!Spec { app_queues: Some(1), ..Spec::new("tb", 2) }.marker().contains("queues"));
        assert!(!host_marker(&direct, 1).contains("queues"));
        let q = Spec { queues: MAX_QUEUES, ..s.clone() };
        let m = q.marker();
        assert!(m.len() <= 255, "{} bytes", m.len());
        assert_eq!(parse_mark(&m).unwrap().spec.unwrap(), q);
        let dq = Spec { queues: 4, ..direct.clone() };
        assert_eq!(parse_mark(&host_marker(&dq, 1)).unwrap().spec, Some(dq));
        // MTU: written only when not 1500, absent means 1500.
        assert!(!Spec::new("tb", 2).marker().contains("mtu"));
        let m = Spec { mtu: 3506, ..q.clone() };
        assert!(m.marker().len() <= 255, "{} bytes", m.marker().len());
        assert_eq!(parse_mark(&m.marker()).unwrap().spec.unwrap(), m);
        let dm = Spec { mtu: 1280, queues: 4, ..direct.clone() };
        assert_eq!(parse_mark(&host_marker(&dm, 2)).unwrap().spec, Some(dm));
        // App queues: written only when above 1, absent means 1; not with --direct.
        let aq = Spec { app_queues: Some(MAX_QUEUES), ..m.clone() };
        assert!(aq.marker().len() <= 255, "{} bytes", aq.marker().len());
        assert_eq!(parse_mark(&aq.marker()).unwrap().spec.unwrap(), aq);
        let e = Spec { app_queues: Some(2), ..direct.clone() }.validate().unwrap_err().to_string();
        assert!(e.contains("--app-queues") && !e.contains('\n'), "{e}");
        let old = "etran-testbed v1 name=tb role=sw hosts=3";
        assert_eq!(parse_mark(old).unwrap().spec.unwrap().queues, 1);
        assert_eq!(parse_mark(old).unwrap().spec.unwrap().mtu, DEFAULT_MTU);
        assert_eq!(parse_mark(old).unwrap().spec.unwrap().app_queues, Some(1));
        let h = parse_mark(&host_marker(&Spec { queues: 2, ..Spec::new("tb", 2) }, 1)).unwrap();
        assert_eq!(h.spec, None);
        assert_eq!(parse_mark("my own alias"), None);
        assert_eq!(parse_mark("etran-testbed v1 role=sw"), None);
    }

    /// A direct testbed over given NICs: each host's mark says which interface it holds (to
    /// give back under its name); given NICs without --direct are refused.
    #[test]
    fn hosts_over_given_nics_know_which_to_give_back() {
        let nics = Some(["eth0".to_string(), "eth1".to_string()]);
        let spec =
            Spec { direct: true, nics: nics.clone(), app_queues: Some(1), ..Spec::new("tb", 2) };
        spec.validate().unwrap();
        for (i, nic) in [(1, "eth0"), (2, "eth1")] {
            let h = parse_mark(&host_marker(&spec, i)).unwrap();
            assert_eq!(h.spec.as_ref(), Some(&spec));
            assert_eq!(given_nic(&h), Some(nic));
        }
        let veth = Spec { direct: true, ..Spec::new("tb", 2) };
        assert_eq!(given_nic(&parse_mark(&host_marker(&veth, 1)).unwrap()), None);
        let e = Spec { nics, ..Spec::new("tb", 2) }.validate().unwrap_err().to_string();
        assert!(e.contains("--direct"), "{e}");
    }
}
