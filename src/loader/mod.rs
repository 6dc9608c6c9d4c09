//! The datapath on one interface: load the entrance and transport programs, attach the entrance,
//! pin their objects, find them again from another process, and remove them.
//!
//! The program attached to the interface is the source of truth: `find` starts from it (netlink
//! query → program id → its maps by id), so `stats` and `down` work from any process in the
//! network namespace, whatever its mount namespace. Pins (see [`pins`]) keep the objects
//! reachable by name for other tools and across daemon restarts.
use std::{
    mem::MaybeUninit,
    os::fd::{AsFd, AsRawFd},
};

use anyhow::{bail, Context};
use libbpf_rs::{skel::SkelBuilder, Btf, MapCore, MapFlags, MapHandle, OpenObject};
use serde::Serialize;

use crate::{
    bpf::{
        entrance::{types, EntranceSkel, EntranceSkelBuilder},
        homa::{HomaSkel, HomaSkelBuilder},
        tcp::{TcpSkel, TcpSkelBuilder},
    },
    log,
};

pub mod counters;
pub mod kernel;
pub mod pins;

pub use kernel::AttachMode;

/// Name of the entrance program as the kernel reports it (BPF names are cut at 15 bytes).
pub const ENTRANCE_PROG: &str = "etran_entrance";

/// The pin of the event counters in an interface's pin directory.
const EVENTS_PIN: &str = "events";

pub struct UpOptions {
    /// The backend, resolved against this kernel ([`crate::backend::BackendChoice::resolve`]).
    pub backend: types::etran_backend,
    /// TCP's pacing, resolved against this kernel and backend
    /// ([`crate::backend::PacingChoice::resolve`]).
    pub pacing: types::etran_pacing,
    pub mode: AttachMode,
    pub queues: Option<u32>,
    pub force: bool,
    pub homa: HomaSched,
}

/// Parameters of Homa's grant scheduler other than HomaModule's defaults (the Homa object's
/// read-only `etran_homa_sched_config`, set before it loads; `None`: the default there), and
/// its pacer's link rate (`etran_homa_pace`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HomaSched {
    /// Bytes granted and not received, over every message (400,000).
    pub max_incoming: Option<u32>,
    /// Messages granted to at once (8; at most `ETRAN_HOMA_SCHED_MAX_ACTIVE`).
    pub max_overcommit: Option<u32>,
    /// The link rate Homa's pacer uses, in Mbit/s (`etran_homa_pace`, homa_pace.h): given
    /// (`--homa-link-mbps`), else the NIC's speed when `etran up` paces; `None`: Homa does not
    /// pace. Taken only with pacing through the packet queue.
    pub link_mbps: Option<u32>,
}

/// How a transport object (TCP's, Homa's) is loaded for its backend (`etran_native` in
/// common/backend.h, and the attach types of its egress and gen-hook programs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectBackend {
    /// Compat: egress and gen are plain XDP programs on veths; the gen-hook twins
    /// (`etran_tcp_xsk_gen`, `etran_homa_xsk_gen`) are not loaded.
    Compat,
    /// Native: egress and the gen-hook twin loaded with the hooks' attach types
    /// (`BPF_XSK_EGRESS`, `BPF_XSK_GEN`: the kernel's values, from its BTF), for the daemon to
    /// link to apps' sockets.
    Native { egress: u32, gen: u32 },
    /// The native logic in plain XDP programs: what `BPF_PROG_TEST_RUN` runs (it refuses the
    /// hooks' attach types), on any kernel (the fixtures).
    NativeUnhooked,
}

impl ObjectBackend {
    /// How the datapath of `backend` loads its transport objects on this kernel.
    pub fn of(backend: types::etran_backend) -> anyhow::Result<ObjectBackend> {
        if backend == types::etran_backend::ETRAN_BACKEND_NATIVE {
            Ok(ObjectBackend::Native {
                egress: kernel::attach_type("BPF_XSK_EGRESS")?,
                gen: kernel::attach_type("BPF_XSK_GEN")?,
            })
        } else {
            Ok(ObjectBackend::Compat)
        }
    }

    /// The value of `etran_native` (common/backend.h).
    fn native(self) -> u32 {
        u32::from(self != ObjectBackend::Compat)
    }

    /// Prepares a transport object's `egress` and gen-hook twin `xsk_gen` for this backend:
    /// the twin is loaded only for native, and the hooks' attach types set on both when hooked.
    fn prepare<'a>(
        self,
        what: &str,
        egress: &mut libbpf_rs::OpenProgramMut<'a>,
        xsk_gen: &mut libbpf_rs::OpenProgramMut<'a>,
    ) -> anyhow::Result<()> {
        use libbpf_rs::{AsRawLibbpf, ProgramType};
        let (egress_type, gen_type) = match self {
            ObjectBackend::Compat => {
                xsk_gen.set_autoload(false);
                return Ok(());
            }
            ObjectBackend::NativeUnhooked => return Ok(()),
            ObjectBackend::Native { egress, gen } => (egress, gen),
        };
        for (prog, ty) in [(egress, egress_type), (xsk_gen, gen_type)] {
            // A program's SEC("xdp") handler lets libbpf drop its expected attach type on a
            // kernel where libbpf's probe for attach types fails, which it does without
            // CONFIG_CGROUP_BPF (the probe loads a cgroup program), as on the native kernel's
            // config: changing the type forgets the handler.
            prog.set_prog_type(ProgramType::SocketFilter);
            prog.set_prog_type(ProgramType::Xdp);
            let prog = prog.as_libbpf_object();
            // SAFETY: a program of the open object; the attach type is the kernel's value of one
            // of the series' names (not in libbpf's enum, hence the raw call).
            let err = unsafe {
                libbpf_rs::libbpf_sys::bpf_program__set_expected_attach_type(prog.as_ptr(), ty)
            };
            if err != 0 {
                bail!("setting a {what} program's attach type to {ty}: error {err}");
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub iface: String,
    pub ifindex: u32,
    pub prog_id: u32,
    pub xdp_mode: &'static str,
    pub backend: String,
    pub queues: u32,
    /// TCP's pacing: `none` or `packet_queue`.
    pub pacing: String,
    /// The link rate Homa's pacer uses, in Mbit/s; 0: Homa does not pace.
    pub homa_link_mbps: u32,
}

impl Summary {
    /// The pacing as `etran up` and `etran stats` show it: TCP's, and the link rate of Homa's.
    pub fn pacing_shown(&self) -> String {
        match self.homa_link_mbps {
            0 if self.pacing == "packet_queue" => format!("{} (Homa: none)", self.pacing),
            0 => self.pacing.clone(),
            mbps => format!("{} (Homa at {mbps} Mbit/s)", self.pacing),
        }
    }
}

pub enum UpOutcome {
    Attached(Summary),
    AlreadyUp(Summary),
}

/// An interface carrying the etran datapath, found through its attached program.
pub struct Datapath {
    pub summary: Summary,
    btf: Btf<'static>,
    traffic: MapHandle,
    drops: MapHandle,
    events: Option<MapHandle>,
}

impl Datapath {
    pub fn counters(&self) -> anyhow::Result<counters::Counters> {
        counters::read(&self.btf, &self.traffic, &self.drops, self.events.as_ref())
    }
}

/// Finds the etran datapath on `iface`; `None` when none is attached.
pub fn find(iface: &str) -> anyhow::Result<Option<Datapath>> {
    let ifindex = crate::sys::ifindex(iface)?;
    let Some((prog_id, mode)) = kernel::attached(ifindex)? else {
        return Ok(None);
    };
    let info = kernel::prog_info(prog_id)?;
    if info.name != ENTRANCE_PROG {
        return Ok(None);
    }
    let (mut traffic, mut drops, mut config) = (None, None, None);
    for id in info.map_ids {
        let map = MapHandle::from_map_id(id).with_context(|| format!("opening map {id}"))?;
        let name = map.name().to_string_lossy().into_owned();
        match name.as_str() {
            "etran_traffic" => traffic = Some(map),
            "etran_drops" => drops = Some(map),
            n if n.ends_with(".rodata") => config = Some(map),
            _ => {}
        }
    }
    let missing = || anyhow::anyhow!("program {prog_id} on {iface} lacks the etran maps");
    let (traffic, drops, config) =
        (traffic.ok_or_else(missing)?, drops.ok_or_else(missing)?, config.ok_or_else(missing)?);
    let btf = Btf::from_prog_id(prog_id).context("reading the program's BTF")?;
    let rodata = config.lookup(&0u32.to_ne_bytes(), MapFlags::ANY)?.unwrap_or_default();
    if rodata.len() < std::mem::size_of::<types::rodata>() {
        bail!("program {prog_id} on {iface} has an unexpected configuration layout");
    }
    // SAFETY: rodata is the program's .rodata section, of the generated type `types::rodata`.
    let rodata: types::rodata = unsafe { std::ptr::read_unaligned(rodata.as_ptr().cast()) };
    let backend = counters::enum_members(&btf, "etran_backend", "ETRAN_BACKEND_")?
        .into_iter()
        .find(|(v, _)| *v == rodata.etran_config.backend.0)
        .map_or_else(|| "unknown".to_string(), |(_, n)| n);
    let pacing = counters::enum_members(&btf, "etran_pacing", "ETRAN_PACING_")?
        .into_iter()
        .find(|(v, _)| *v == rodata.etran_config.pacing.0)
        .map_or_else(|| "unknown".to_string(), |(_, n)| n);
    let summary = Summary {
        iface: iface.to_string(),
        ifindex,
        prog_id,
        xdp_mode: mode.name(),
        backend,
        queues: rodata.etran_config.queues,
        pacing,
        homa_link_mbps: rodata.etran_config.homa_link_mbps,
    };
    // No program of the entrance's uses the event counters (the transports count them), so
    // they are found by their pin; a datapath pinned by an older etran has none.
    let events = pins::iface_dir(iface)
        .ok()
        .and_then(|dir| MapHandle::from_pinned_path(dir.join(EVENTS_PIN)).ok());
    Ok(Some(Datapath { summary, btf, traffic, drops, events }))
}

/// Every interface of this network namespace that carries the etran datapath.
pub fn find_all() -> anyhow::Result<Vec<Datapath>> {
    let mut found = Vec::new();
    for name in interface_names()? {
        if let Some(dp) = find(&name)? {
            found.push(dp);
        }
    }
    Ok(found)
}

fn interface_names() -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(std::io::Error::last_os_error()).context("listing interfaces");
    }
    let mut p = list;
    unsafe {
        while (*p).if_index != 0 {
            names.push(std::ffi::CStr::from_ptr((*p).if_name).to_string_lossy().into_owned());
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    Ok(names)
}

/// Memory the loaded objects live in: libbpf skeletons borrow caller-provided storage.
pub struct ObjectStorage {
    entrance: MaybeUninit<OpenObject>,
    tcp: MaybeUninit<OpenObject>,
    homa: MaybeUninit<OpenObject>,
}

impl Default for ObjectStorage {
    fn default() -> Self {
        ObjectStorage {
            entrance: MaybeUninit::uninit(),
            tcp: MaybeUninit::uninit(),
            homa: MaybeUninit::uninit(),
        }
    }
}

/// The datapath's program objects, loaded and linked to one another but attached nowhere.
pub struct Objects<'a> {
    pub entrance: EntranceSkel<'a>,
    pub tcp: TcpSkel<'a>,
    pub homa: HomaSkel<'a>,
}

/// Loads the entrance and the transport objects. Each transport object gets the entrance's
/// counter maps (declared identically by all, created once) and is installed in the entrance's
/// program array, so a frame the entrance hands to a transport is counted in the same place
/// either way. Homa shares TCP's app ports and NIC slot (the compat backend's maps), so an app
/// port is one slot whichever transport's frames it carries.
pub fn load(
    storage: &mut ObjectStorage,
    backend: types::etran_backend,
    pacing: types::etran_pacing,
    queues: u32,
    sched: HomaSched,
) -> anyhow::Result<Objects<'_>> {
    load_as(storage, backend, ObjectBackend::of(backend)?, pacing, queues, sched)
}

/// [`load`], with the transport objects loaded as `objects` says.
pub fn load_as(
    storage: &mut ObjectStorage,
    backend: types::etran_backend,
    objects: ObjectBackend,
    pacing: types::etran_pacing,
    queues: u32,
    sched: HomaSched,
) -> anyhow::Result<Objects<'_>> {
    let pace = pacing == types::etran_pacing::ETRAN_PACING_PACKET_QUEUE;
    // Homa paces only where TCP may, at a known rate.
    let sched = HomaSched { link_mbps: sched.link_mbps.filter(|_| pace), ..sched };
    let link_mbps = sched.link_mbps.unwrap_or(0);
    let entrance = load_entrance(&mut storage.entrance, backend, pacing, queues, link_mbps)?;
    let tcp = load_tcp(&mut storage.tcp, Some(&entrance), objects, pace)?;
    let homa = load_homa(&mut storage.homa, Some((&entrance, &tcp)), objects, sched)?;
    let tcp_slot =
        tcp.maps.rodata_data.context("TCP object has no .rodata")?.etran_transport_slot.0;
    let homa_slot =
        homa.maps.rodata_data.context("Homa object has no .rodata")?.etran_transport_slot.0;
    for (name, slot, prog) in [
        ("TCP", tcp_slot, tcp.progs.etran_tcp_ingress.as_fd()),
        ("Homa", homa_slot, homa.progs.etran_homa_ingress.as_fd()),
    ] {
        let fd = prog.as_raw_fd();
        entrance
            .maps
            .etran_transports
            .update(&slot.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .with_context(|| {
                format!("installing the {name} program in the entrance's program array")
            })?;
    }
    Ok(Objects { entrance, tcp, homa })
}

/// Loads the entrance object alone.
pub fn load_entrance(
    storage: &mut MaybeUninit<OpenObject>,
    backend: types::etran_backend,
    pacing: types::etran_pacing,
    queues: u32,
    homa_link_mbps: u32,
) -> anyhow::Result<EntranceSkel<'_>> {
    let mut open = EntranceSkelBuilder::default()
        .open(storage)
        .context("opening the embedded entrance object")?;
    let config = open.maps.rodata_data.as_deref_mut().context("entrance object has no .rodata")?;
    config.etran_config.backend = backend;
    config.etran_config.queues = queues;
    config.etran_config.pacing = pacing;
    config.etran_config.homa_link_mbps = homa_link_mbps;
    crate::bpf::verifier::load(open, "the entrance program")
}

/// Loads the TCP object for `backend`, sharing `entrance`'s counter maps when given (else it
/// has its own), pacing through the packet queue when `pace` (`etran_tcp_pace`: its egress
/// then paces where the kernel has the queue, tcp_pace.h).
pub fn load_tcp<'a>(
    storage: &'a mut MaybeUninit<OpenObject>,
    entrance: Option<&EntranceSkel<'_>>,
    backend: ObjectBackend,
    pace: bool,
) -> anyhow::Result<TcpSkel<'a>> {
    let mut open =
        TcpSkelBuilder::default().open(storage).context("opening the embedded TCP object")?;
    let rodata = open.maps.rodata_data.as_deref_mut().context("TCP object has no .rodata")?;
    rodata.etran_native = backend.native();
    rodata.etran_tcp_pace = u32::from(pace);
    backend.prepare("TCP", &mut open.progs.etran_tcp_egress, &mut open.progs.etran_tcp_xsk_gen)?;
    if let Some(entrance) = entrance {
        open.maps.etran_traffic.reuse_fd(entrance.maps.etran_traffic.as_fd())?;
        open.maps.etran_drops.reuse_fd(entrance.maps.etran_drops.as_fd())?;
        open.maps.etran_events.reuse_fd(entrance.maps.etran_events.as_fd())?;
    }
    crate::bpf::verifier::load(open, "the TCP programs")
}

/// The time a byte takes on a link of `mbps` Mbit/s, in picoseconds (Homa's pacer's rate), at
/// least 1.
pub fn ps_per_byte(mbps: u32) -> u32 {
    (8_000_000 / mbps.max(1)).max(1)
}

/// Loads the Homa object for `backend`, sharing the entrance's counter maps and the TCP object's
/// app-slot maps (both backends') when given (else it has its own), its grant scheduler's
/// parameters changed as `sched` says, and pacing at `sched.link_mbps` when given (where the
/// kernel has the packet queue, homa_pace.h).
pub fn load_homa<'a>(
    storage: &'a mut MaybeUninit<OpenObject>,
    shared: Option<(&EntranceSkel<'_>, &TcpSkel<'_>)>,
    backend: ObjectBackend,
    sched: HomaSched,
) -> anyhow::Result<HomaSkel<'a>> {
    let mut open =
        HomaSkelBuilder::default().open(storage).context("opening the embedded Homa object")?;
    let rodata = open.maps.rodata_data.as_deref_mut().context("Homa object has no .rodata")?;
    rodata.etran_native = backend.native();
    let cfg = &mut rodata.etran_homa_sched_config;
    if let Some(n) = sched.max_incoming {
        cfg.max_incoming = n;
    }
    if let Some(n) = sched.max_overcommit {
        cfg.max_overcommit = n;
    }
    if let Some(mbps) = sched.link_mbps {
        rodata.etran_homa_pace.ps_per_byte = ps_per_byte(mbps);
    }
    let progs = &mut open.progs;
    backend.prepare("Homa", &mut progs.etran_homa_egress, &mut progs.etran_homa_xsk_gen)?;
    if let Some((entrance, tcp)) = shared {
        open.maps.etran_traffic.reuse_fd(entrance.maps.etran_traffic.as_fd())?;
        open.maps.etran_drops.reuse_fd(entrance.maps.etran_drops.as_fd())?;
        open.maps.etran_events.reuse_fd(entrance.maps.etran_events.as_fd())?;
        open.maps.etran_app_ports.reuse_fd(tcp.maps.etran_app_ports.as_fd())?;
        open.maps.etran_port_ifindex.reuse_fd(tcp.maps.etran_port_ifindex.as_fd())?;
        open.maps.etran_port_budget.reuse_fd(tcp.maps.etran_port_budget.as_fd())?;
        open.maps.etran_nic.reuse_fd(tcp.maps.etran_nic.as_fd())?;
        open.maps.etran_app_xsks.reuse_fd(tcp.maps.etran_app_xsks.as_fd())?;
        open.maps.etran_port_queue.reuse_fd(tcp.maps.etran_port_queue.as_fd())?;
    }
    crate::bpf::verifier::load(open, "the Homa programs")
}

/// `etran up`: loads, attaches and pins the datapath on `iface`. Idempotent; on any failure
/// nothing is left attached or pinned.
pub fn up(iface: &str, opts: &UpOptions) -> anyhow::Result<UpOutcome> {
    crate::sys::require_root("etran up")?;
    kernel::require(kernel::TCP_DATAPATH, "the TCP datapath")?;
    let ifindex = crate::sys::ifindex(iface)?;
    // The programs parse Ethernet frames: loopback, tunnels and the like carry none.
    let link = crate::netlink::Netlink::open()?.link(iface)?;
    if link.is_some_and(|l| !l.ethernet) {
        bail!("{iface} is not an Ethernet interface (loopback, a tunnel, ...): etran needs one");
    }
    let backend = opts.backend;
    let available = crate::ethtool::rx_queues(iface)?.unwrap_or(1);
    let queues = opts.queues.unwrap_or(available);
    if queues > available {
        bail!("{iface} has {available} RX queue(s); --queues {queues} is more than that");
    }
    // A NIC's RSS keeps each connection on one RX queue, so ingress sees its frames in order.
    // A veth picks the queue by the sending CPU: frames of one connection would be accepted
    // on two CPUs at once and reach the app out of order.
    if available > 1 && crate::ethtool::driver(iface)? == "veth" {
        bail!(
            "{iface} is a veth with {available} RX queues, which spreads a connection's frames \
             over them by sending CPU; the TCP datapath needs one queue on a veth"
        );
    }

    if let Some((prog_id, mode)) = kernel::attached(ifindex)? {
        let info = kernel::prog_info(prog_id)?;
        if info.name == ENTRANCE_PROG {
            if !transports_lost(prog_id)? {
                let dp = find(iface)?.context("etran program vanished while checking it")?;
                return Ok(UpOutcome::AlreadyUp(dp.summary));
            }
            // The kernel empties a program array once no descriptor or pin refers to it: the
            // pins went with the bpffs that held them (a stopped container's, or one mounted
            // by an `ip netns exec` command), and the entrance hands every segment to the
            // kernel stack. The connections went with the transports; what is left is rebuilt.
            log::warn(format!(
                "the datapath on {iface} had lost its transports (its pins went away with the \
                 bpffs that held them): replacing it"
            ));
            kernel::detach(ifindex, mode)?;
        } else if !opts.force {
            bail!(
                "{iface} already carries XDP program {:?} (id {prog_id}); use --force to replace it",
                info.name
            );
        } else {
            log::warn(format!("replacing XDP program {:?} (id {prog_id}) on {iface}", info.name));
            kernel::detach(ifindex, mode)?;
        }
    }

    let mut storage = ObjectStorage::default();
    let homa = HomaSched { link_mbps: homa_link_mbps(iface, opts)?, ..opts.homa };
    let Objects { mut entrance, mut tcp, mut homa } =
        load(&mut storage, backend, opts.pacing, queues, homa)?;
    tcp.maps
        .etran_nic
        .update(&0u32.to_ne_bytes(), &ifindex.to_ne_bytes(), MapFlags::ANY)
        .with_context(|| format!("making {iface} the TCP egress destination"))?;
    let prog_fd = entrance.progs.etran_entrance.as_fd().as_raw_fd();

    let mode = attach_with_fallback(iface, ifindex, prog_fd, opts.mode)?;
    let pinned = (|| -> anyhow::Result<()> {
        pins::ensure_bpffs(std::path::Path::new(pins::BPFFS_ROOT))?;
        if pins::remove_stale()? > 0 {
            log::info("removed the pins of network namespaces that no longer exist");
        }
        let dir = pins::iface_dir(iface)?;
        pins::remove_dir(&dir)?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        entrance.progs.etran_entrance.pin(dir.join("entrance"))?;
        entrance.maps.etran_traffic.pin(dir.join("traffic"))?;
        entrance.maps.etran_drops.pin(dir.join("drops"))?;
        entrance.maps.etran_events.pin(dir.join(EVENTS_PIN))?;
        entrance.maps.etran_transports.pin(dir.join("transports"))?;
        entrance.maps.rodata.pin(dir.join("config"))?;
        tcp.progs.etran_tcp_ingress.pin(dir.join("tcp"))?;
        tcp.maps.etran_tcp_conns.pin(dir.join("tcp_conns"))?;
        tcp.maps.etran_app_ports.pin(dir.join("app_ports"))?;
        tcp.maps.etran_port_ifindex.pin(dir.join("port_ifindex"))?;
        tcp.maps.etran_port_budget.pin(dir.join("port_budget"))?;
        tcp.progs.etran_tcp_egress.pin(dir.join("tcp_egress"))?;
        tcp.maps.etran_nic.pin(dir.join("nic"))?;
        tcp.progs.etran_tcp_gen.pin(dir.join("tcp_gen"))?;
        tcp.progs.etran_tcp_rehome.pin(dir.join("tcp_rehome"))?;
        tcp.maps.etran_tcp_ack_queue.pin(dir.join("tcp_ack_queue"))?;
        tcp.maps.etran_tcp_dack_queue.pin(dir.join("tcp_dack_queue"))?;
        tcp.maps.etran_tcp_gen_wake.pin(dir.join("tcp_gen_wake"))?;
        homa.progs.etran_homa_ingress.pin(dir.join("homa"))?;
        homa.progs.etran_homa_egress.pin(dir.join("homa_egress"))?;
        homa.progs.etran_homa_gen.pin(dir.join("homa_gen"))?;
        homa.maps.etran_homa_genq.pin(dir.join("homa_gen_queue"))?;
        homa.maps.etran_homa_genw.pin(dir.join("homa_gen_wake"))?;
        homa.maps.etran_homa_ports.pin(dir.join("homa_ports"))?;
        homa.maps.etran_homa_peers.pin(dir.join("homa_peers"))?;
        homa.maps.etran_homa_rpcs.pin(dir.join("homa_rpcs"))?;
        if backend == types::etran_backend::ETRAN_BACKEND_NATIVE {
            tcp.maps.etran_app_xsks.pin(dir.join("app_xsks"))?;
            tcp.maps.etran_port_queue.pin(dir.join("port_queue"))?;
            tcp.progs.etran_tcp_xsk_gen.pin(dir.join("tcp_xsk_gen"))?;
            homa.progs.etran_homa_xsk_gen.pin(dir.join("homa_xsk_gen"))?;
        }
        Ok(())
    })();
    if let Err(err) = pinned {
        let _ = kernel::detach(ifindex, mode);
        if let Ok(dir) = pins::iface_dir(iface) {
            let _ = pins::remove_dir(&dir);
        }
        return Err(err.context("pinning the datapath (nothing was left attached)"));
    }
    let dp = find(iface)?.context("the entrance program is not attached after attaching it")?;
    Ok(UpOutcome::Attached(dp.summary))
}

/// The link rate Homa's pacer uses on `iface`: none unless the datapath paces through the
/// packet queue; then the one given, else the NIC's speed (ethtool), else none (and a warning).
fn homa_link_mbps(iface: &str, opts: &UpOptions) -> anyhow::Result<Option<u32>> {
    if opts.pacing != types::etran_pacing::ETRAN_PACING_PACKET_QUEUE {
        return Ok(None);
    }
    if let Some(mbps) = opts.homa.link_mbps {
        return Ok(Some(mbps));
    }
    let speed = crate::ethtool::speed_mbps(iface)?;
    if speed.is_none() {
        log::warn(format!(
            "{iface} does not say its speed: Homa does not pace (give --homa-link-mbps)"
        ));
    }
    Ok(speed)
}

/// Attaches a transport's egress to the kernel side of an app's port (drv mode, skb when the
/// driver lacks XDP). It goes away with the port.
pub fn attach_egress(egress: impl AsFd, port_ifindex: u32) -> anyhow::Result<AttachMode> {
    attach_with_fallback(
        &format!("port ifindex {port_ifindex}"),
        port_ifindex,
        egress.as_fd().as_raw_fd(),
        AttachMode::Drv,
    )
}

fn attach_with_fallback(
    iface: &str,
    ifindex: u32,
    prog_fd: i32,
    mode: AttachMode,
) -> anyhow::Result<AttachMode> {
    if mode == AttachMode::Drv {
        match kernel::attach(ifindex, prog_fd, AttachMode::Drv) {
            Ok(()) => return Ok(AttachMode::Drv),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                log::warn(format!("{iface} has no driver-mode XDP; attaching in skb mode"))
            }
            Err(e) => return Err(e).with_context(|| format!("attaching to {iface}")),
        }
    }
    kernel::attach(ifindex, prog_fd, AttachMode::Skb)
        .with_context(|| format!("attaching to {iface} in skb mode"))?;
    Ok(AttachMode::Skb)
}

/// `etran down`: detaches and unpins. Returns false when etran was not up on `iface`.
pub fn down(iface: &str) -> anyhow::Result<bool> {
    crate::sys::require_root("etran down")?;
    let ifindex = crate::sys::ifindex(iface)?;
    let dir = pins::iface_dir(iface)?;
    let had_pins = dir.exists();
    let mut was_up = false;
    if let Some((prog_id, mode)) = kernel::attached(ifindex)? {
        if kernel::prog_info(prog_id)?.name == ENTRANCE_PROG {
            kernel::detach(ifindex, mode)?;
            was_up = true;
        }
    }
    pins::remove_dir(&dir)?;
    Ok(was_up || had_pins)
}

/// The program the entrance's program array holds under the (kernel, 15-byte) name `name`: a
/// transport's ingress. `None` when no such transport is loaded.
pub fn transport_prog(entrance_prog_id: u32, name: &str) -> anyhow::Result<Option<u32>> {
    Ok(transport_progs(entrance_prog_id)?
        .into_iter()
        .find(|id| kernel::prog_info(*id).is_ok_and(|i| i.name == name)))
}

/// Whether the entrance's program array holds no transport at all (see [`up`]).
fn transports_lost(entrance_prog_id: u32) -> anyhow::Result<bool> {
    Ok(transport_progs(entrance_prog_id)?.is_empty())
}

/// The ids of the programs in the entrance's program array (the transports' ingresses).
fn transport_progs(entrance_prog_id: u32) -> anyhow::Result<Vec<u32>> {
    let Some(transports) = kernel::prog_info(entrance_prog_id)?
        .map_ids
        .into_iter()
        .filter_map(|id| MapHandle::from_map_id(id).ok())
        .find(|m| m.name() == "etran_transport")
    else {
        return Ok(Vec::new());
    };
    Ok((0..transports.max_entries())
        .filter_map(|k| transports.lookup(&k.to_ne_bytes(), MapFlags::ANY).ok().flatten())
        .filter_map(|v| <[u8; 4]>::try_from(v.as_slice()).ok().map(u32::from_ne_bytes))
        .collect())
}

/// The map of program `prog` named (kernel name, 15 bytes) `name`, with its id.
pub fn prog_map(prog: u32, name: &str) -> anyhow::Result<Option<(u32, MapHandle)>> {
    for id in kernel::prog_info(prog)?.map_ids {
        let map = MapHandle::from_map_id(id).with_context(|| format!("opening map {id}"))?;
        if map.name() == name {
            return Ok(Some((id, map)));
        }
    }
    Ok(None)
}

/// The program named (kernel name) `name` that uses the map of id `map_id`: a transport's
/// programs besides its ingress, found by a map they share with it. A program freed while we
/// look (another process's) is skipped.
pub fn prog_sharing(map_id: u32, name: &str) -> Option<u32> {
    kernel::prog_ids().into_iter().find(|&id| {
        kernel::prog_info(id).is_ok_and(|info| info.name == name && info.map_ids.contains(&map_id))
    })
}

/// Reads every record of `ring`. libbpf stores its consumer position and then reads the
/// producer's without a full barrier, while the kernel wakes the reader only if the consumer
/// had caught up: a record committed in that window is neither read nor announced, and the
/// ring stays silent. A fence and a second pass close the window.
pub fn drain_ring(ring: &libbpf_rs::RingBuffer<'_>) -> libbpf_rs::Result<()> {
    ring.consume()?;
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    ring.consume()?;
    Ok(())
}
