//! The command line, defined once with clap derive. main.rs dispatches on it; the man pages in
//! man/ and the completions in completions/ are generated from it (tests/docs.rs keeps them in
//! step).
use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::{
    backend::{native::ZeroCopy, BackendChoice, PacingChoice},
    loader::AttachMode,
};

/// Extensible kernel transports (TCP/DCTCP, Homa) in eBPF, driven through AF_XDP.
#[derive(Debug, Parser)]
#[command(name = "etran", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Print machine-readable JSON instead of tables.
    #[arg(short = 'j', long, global = true)]
    pub json: bool,
    /// Pretty-print JSON (implies --json).
    #[arg(short = 'p', long, global = true)]
    pub pretty: bool,
    /// More log output (repeat for more).
    #[arg(short = 'v', long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load and attach the etran datapath on an interface.
    Up(UpArgs),
    /// Detach the etran datapath from an interface and remove its pinned state.
    Down(DownArgs),
    /// Run the control path: app registration, handshakes, timers.
    Daemon(DaemonArgs),
    /// Show datapath counters read from the pinned maps.
    ///
    /// Packets per class and verdict (handed to a transport, passed to the kernel, dropped), then
    /// the drop reasons that occurred, then the events the transport programs counted on the
    /// frames they let through (data and pure ACKs sent by apps, ACKs from the generator,
    /// retransmissions, data and duplicate ACKs received, CE marks, ACKs queued at once or
    /// delayed): the counters behind a per-message cost breakdown; last, the app ports of the
    /// daemon serving the interface (`etran daemon`), each with its slot, transport, app's pid
    /// and AF_XDP mode: zero copy, copy mode, or a compat veth port (copy mode), which says
    /// "batching" while its app streams and the port batches its frames. `--json` lists
    /// every reason and event, zeros included, and the ports under `daemon` (`null`: no daemon
    /// serves the interface).
    Stats(StatsArgs),
    /// Benchmarks, each run side by side with Linux.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The built-in network of namespaces used by benches and tests.
    #[command(subcommand)]
    Testbed(TestbedCommand),
    /// Run an unmodified program with its TCP sockets over eTran.
    ///
    /// Runs CMD with etran's POSIX shim preloaded (LD_PRELOAD; the shim is carried inside this
    /// binary and written to a private directory: $XDG_RUNTIME_DIR/etran, or /tmp/etran-UID).
    /// CMD's TCP/IPv4 sockets whose route leaves through the interface the daemon serves (its
    /// connects, and its listens on that interface's address or on any address) go through
    /// eTran; everything else (Unix sockets, UDP, loopback, other interfaces, files) stays the
    /// kernel's. A statically linked or setuid CMD cannot be interposed: etran run says so and
    /// runs nothing. Served: socket, bind, listen, accept, accept4, connect, close, shutdown,
    /// read, write, readv, writev, send, recv, sendto, recvfrom, sendmsg, recvmsg, sendfile,
    /// getsockname, getpeername, getsockopt, setsockopt, fcntl, ioctl (FIONBIO, FIONREAD),
    /// poll, ppoll, select and epoll over eTran and kernel descriptors together (EPOLLET and
    /// EPOLLONESHOT honoured), dup, dup2, dup3, fork (listeners and connections work in the
    /// children and their children; a connect in progress finishes first, one racing the
    /// fork is the child's too, one the parent starts after it is waited for by the child; a
    /// holder killed leaves the connection to the others, and the last one's death closes it
    /// with a FIN), vfork (served as fork), connections, connects
    /// in progress (finished first) and listeners passed over Unix sockets (SCM_RIGHTS, to a
    /// receiver under etran run). IPv6 sockets stay the kernel's. Not yet: MSG_PEEK and
    /// MSG_OOB (EOPNOTSUPP).
    /// ETRAN_BUSY_POLL_US (default 50) sets how long a blocking call spins before it sleeps.
    /// ETRAN_TX_COALESCE=0 kicks every send at once; by default, the sends a thread makes
    /// between two of its waits (poll, select, epoll) are kicked together before it waits
    /// again, sleeps or blocks in the shim's calls.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The daemon's Unix socket (its --socket).
    #[arg(long, value_name = "PATH", default_value = "/run/etran/etran.sock")]
    pub daemon_socket: PathBuf,
    /// The program to run, and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub cmd: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Interface to attach to.
    #[arg(required_unless_present = "check")]
    pub iface: Option<String>,
    /// Check this kernel instead: list the features each transport needs (with the first Linux
    /// release that has each) and load every BPF program, attached nowhere, with the share of
    /// the verifier's instruction limit each object's heaviest program took. Changes nothing;
    /// fails when the TCP datapath could not run here.
    #[arg(
        long,
        conflicts_with_all = ["iface", "backend", "pacing", "mode", "queues", "force",
                              "homa_max_incoming", "homa_overcommit", "homa_link_mbps"]
    )]
    pub check: bool,
    /// Datapath backend.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Pacing: auto paces each TCP connection at its congestion window per round trip (twice
    /// that in slow start, 1.2 times after, as Linux) and keeps the NIC's queue of Homa DATA
    /// short at the link rate (--homa-link-mbps), through the socket's packet queue, on the
    /// native backend of a kernel that has it (`etran up --check`'s packet-queue); elsewhere
    /// nothing paces. Off (the default) sends every packet at once.
    #[arg(long, value_enum, default_value_t = PacingChoice::Off)]
    pub pacing: PacingChoice,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = AttachMode::Drv)]
    pub mode: AttachMode,
    /// Number of NIC queues etran serves (default: all RX queues of the interface).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub queues: Option<u32>,
    /// Replace an XDP program that etran did not attach.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub homa: HomaSchedArgs,
}

/// The Homa grant scheduler's parameters (HomaModule's defaults unless given).
#[derive(Debug, Args, Clone, Copy)]
pub struct HomaSchedArgs {
    /// Homa: the most bytes granted and not yet received over all incoming messages
    /// (HomaModule's max_incoming; default 400000). Smaller keeps the receiver's queues, hence
    /// short messages' waits, shorter, at long messages' cost.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1424..=64 << 20))]
    pub homa_max_incoming: Option<u32>,
    /// Homa: the most incoming messages granted to at once, one per sender (HomaModule's
    /// max_overcommit; default 8).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=8))]
    pub homa_overcommit: Option<u32>,
    /// Homa: the link rate its pacer keeps the NIC's queue short at, in Mbit/s, when pacing
    /// (`--pacing auto` on a kernel with the packet queue); default: the NIC's speed (ethtool),
    /// without which Homa does not pace.
    #[arg(long, value_name = "MBIT/S", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub homa_link_mbps: Option<u32>,
}

impl HomaSchedArgs {
    pub fn sched(&self) -> crate::loader::HomaSched {
        crate::loader::HomaSched {
            max_incoming: self.homa_max_incoming,
            max_overcommit: self.homa_overcommit,
            link_mbps: self.homa_link_mbps,
        }
    }
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// Interface to detach from.
    pub iface: String,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Interface carrying the etran datapath (`etran up IFACE` first).
    #[arg(long)]
    pub iface: String,
    /// Unix socket that apps connect to.
    #[arg(long, default_value = "/run/etran/etran.sock")]
    pub socket: PathBuf,
    /// How long a connection closed by our side first holds its 4-tuple (TIME_WAIT). Short by
    /// default: datacenter RTTs are microseconds, and timestamps guard against old duplicates.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1s")]
    pub time_wait: Duration,
    /// Do not negotiate ECN. By default connections offer and accept it, and congestion
    /// control reacts to the network's marks as DCTCP does; without it only losses cut the
    /// window.
    #[arg(long)]
    pub no_ecn: bool,
    /// Native backend: `auto` binds the app on queue 0 of a NIC with one RX queue (where every
    /// frame arrives) in zero copy when the driver supports it, the others in copy mode; `off`:
    /// every app in copy mode.
    #[arg(long, value_enum, default_value_t = ZeroCopy::Auto)]
    pub zero_copy: ZeroCopy,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Interface to report on (default: every interface under etran in this network namespace).
    pub iface: Option<String>,
    /// Refresh every DURATION (e.g. 1s, 500ms) until interrupted.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub watch: Option<Duration>,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// TCP echo: eTran against Linux TCP (blocking and busy-polling).
    ///
    /// Every row: round trips per second, payload throughput each way, round-trip time
    /// percentiles, CPU time per round trip (both hosts together: apps, daemons, gen pumps, the
    /// softirq work in their context, the ksoftirqd threads and the ports' NAPI threads;
    /// busy-polling counts as used, so compare rows at --wait block for the cost of the work)
    /// and the bytes checked.
    Echo(EchoArgs),
    /// Closed-loop RPCs: eTran Homa against the same RPCs over Linux TCP.
    ///
    /// Clients on testbed host 1 keep --depth RPCs outstanding each against an echo-style
    /// server on host 2 (the response as long as the request, or --response-size). Every row:
    /// RPCs per second, round-trip time percentiles (overall and, for w1..w5, per request-size
    /// decile), CPU time per RPC (both hosts together, as bench echo counts it), the
    /// response bytes checked (every request and response is checked byte for byte) and what
    /// the switch dropped (in its bottleneck queues, at its ports' receive rings).
    Rpc(RpcArgs),
    /// Raw AF_XDP frame rate: the ceiling of the path.
    Raw(RawArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EchoTransport {
    /// eTran apps on both hosts.
    Etran,
    /// eTran client apps against Linux TCP servers (interoperation).
    EtranLinux,
    /// Linux TCP on both hosts.
    Linux,
    /// Every row above.
    All,
}

/// How every side of `etran bench echo` waits for its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EchoWait {
    /// Spin without sleeping: eTran apps poll their port in a loop, Linux sockets are polled
    /// with a zero epoll timeout (busy-polling).
    Busy,
    /// Sleep when idle: eTran apps wait in the library (busy-poll budget, then sleep on the
    /// AF_XDP socket), Linux sockets block in epoll_wait.
    Block,
}

#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Interface to run on instead of the built-in testbed.
    #[arg(long)]
    pub iface: Option<String>,
    /// Address of a remote echo server (with --iface).
    #[arg(long, requires = "iface")]
    pub server: Option<std::net::Ipv4Addr>,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    /// Connections.
    #[arg(long, default_value_t = 1)]
    pub conns: u32,
    /// Outstanding messages per connection.
    #[arg(long, default_value_t = 1)]
    pub depth: u32,
    /// Client threads, each with its own server thread (and, for eTran, one App on each side).
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// How long to measure.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Which transports to measure.
    #[arg(long, value_enum, default_value_t = EchoTransport::All)]
    pub transport: EchoTransport,
    /// How the apps and sockets wait: busy-poll, or sleep when idle.
    #[arg(long, value_enum, default_value_t = EchoWait::Busy)]
    pub wait: EchoWait,
    /// Connection churn: close each connection after this many round trips and open a new one
    /// in its place; reports opens and closes per second and the eTran leak check.
    #[arg(long, value_name = "MESSAGES", value_parser = clap::value_parser!(u32).range(1..))]
    pub churn: Option<u32>,
    /// MTU of the private testbed's interfaces (see `etran testbed up --mtu`).
    #[arg(long, default_value_t = crate::testbed::DEFAULT_MTU, conflicts_with = "iface")]
    pub mtu: u32,
    /// No switch: the hosts' NICs are one veth pair, and the Linux row keeps TX checksum
    /// offload and with it TSO (see `etran testbed up --direct`).
    #[arg(long, conflicts_with = "iface")]
    pub direct: bool,
    /// With --direct: the hosts' NICs are these two interfaces, joined outside etran (a qemu
    /// guest's virtio-net pair on one hub), instead of a veth pair. Each is moved into its
    /// host for the run (renamed eth0, with the host's Ethernet address) and back after it.
    #[arg(long, value_name = "NIC1,NIC2", value_parser = parse_nic_pair, requires = "direct")]
    pub nics: Option<[String; 2]>,
    /// The eTran rows' datapath backend (see `etran up --backend`): native binds each app to a
    /// queue of the host's NIC (the private testbed's NICs get one TX queue per thread).
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// The eTran rows' TCP pacing (see `etran up --pacing`).
    #[arg(long, value_enum, default_value_t = PacingChoice::Off)]
    pub pacing: PacingChoice,
    /// Paced: let each connection hand over all its windows allow, without TCP small queues
    /// (by default a connection keeps about 1 ms at its rate, at least 4 segments, in the
    /// kernel's packet queue, and an app fewer than 224 frames; beyond the queue's 256 frames
    /// egress sends a segment at once, out of its turn). For measuring what the cap does.
    #[arg(long, requires = "pacing")]
    pub no_small_queues: bool,
    /// Never batch the eTran apps' frames (by default a compat port runs its kernel side as a
    /// NAPI thread while its app streams: a connection with 16 segments or more in flight or
    /// unsent). For measuring what batching does.
    #[arg(long)]
    pub no_batching: bool,
    /// The eTran rows' daemons' zero copy on native (see `etran daemon --zero-copy`).
    #[arg(long, value_enum, default_value_t = ZeroCopy::Auto)]
    pub zero_copy: ZeroCopy,
}

/// `NIC1,NIC2`: two different interface names.
fn parse_nic_pair(s: &str) -> Result<[String; 2], String> {
    match s.split_once(',') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() && a != b && !b.contains(',') => {
            Ok([a.to_string(), b.to_string()])
        }
        _ => Err(format!("want two different interfaces as NIC1,NIC2, not {s:?}")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RpcTransport {
    /// eTran Homa RPC sockets on both hosts.
    EtranHoma,
    /// The same RPCs over eTran TCP apps on both hosts (one connection per outstanding RPC).
    EtranTcp,
    /// The same RPCs over Linux TCP sockets (one connection per outstanding RPC).
    LinuxTcp,
    /// Every row above.
    All,
}

#[derive(Debug, Args)]
pub struct RpcArgs {
    /// Request sizes: w1..w5 (the Homa paper's workloads, truncated at --max-size; requests
    /// shorter than the 16-byte RPC header grow to it) or a fixed size in bytes (16 to
    /// --max-size).
    #[arg(long, default_value = "100")]
    pub workload: String,
    /// The largest request: w1..w5 are cut there (their tables end at 1 MB, as cp_node's at
    /// HomaModule's longest message), fixed sizes may go up to it (at most 64 MiB, the longest
    /// Homa message etran carries).
    #[arg(long, value_name = "BYTES", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u32).range(16..=1 << 26))]
    pub max_size: u32,
    /// Response size in bytes, at most --max-size (default: the request's size, an echo).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1..=1 << 26))]
    pub response_size: Option<u32>,
    /// Responses of 100 bytes (as long as the request if it is shorter), as cp_node's
    /// --one-way: the requests carry the load.
    #[arg(long, conflicts_with = "response_size")]
    pub one_way: bool,
    /// Clients on each client host, each keeping --depth RPCs outstanding (closed loop) or at
    /// most --depth (with --gbps).
    #[arg(long, visible_alias = "conns", default_value_t = 1)]
    pub clients: u32,
    /// Outstanding RPCs per client: always (closed loop), or at most (with --gbps, like
    /// cp_node's --client-max).
    #[arg(long, default_value_t = 1)]
    pub depth: u32,
    /// Open loop: offer this many Gbit/s of requests (request bytes only) from each client
    /// host as Poisson arrivals spread over its client threads, as cp_node --gbps does; 0 is
    /// closed loop. An arrival that finds all of its thread's RPCs outstanding waits and is
    /// counted as late.
    #[arg(long, value_name = "GBIT/S", default_value_t = 0.0, value_parser = parse_gbps)]
    pub gbps: f64,
    /// Client threads on each client host (thread i of host h on CPU i+h-1 modulo the CPU
    /// count), for eTran one RPC socket each.
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// Server ports (cp_node's --ports), 1 to 64, default --threads: each is its own socket
    /// (an RPC socket for Homa, a listener for the TCP rows) served by its own thread (port j
    /// on CPU j+1 modulo the CPU count); every client spreads its RPCs over all of them (its RPC slots take
    /// the ports in turn), so --ports may not exceed --clients × --depth.
    #[arg(long, value_name = "N")]
    pub ports: Option<u32>,
    /// Testbed hosts, 2 to 32: the servers on host N, on each of hosts 1..N-1 the client side
    /// the other flags describe (--clients, --depth, --threads and --gbps per client host, as
    /// each client node runs its own cp_node): N-1 hosts fanning in to one.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub hosts: u32,
    /// How long to measure.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Which transports to measure.
    #[arg(long, value_enum, default_value_t = RpcTransport::All)]
    pub transport: RpcTransport,
    /// How the sockets wait: busy-poll, or sleep when idle.
    #[arg(long, value_enum, default_value_t = EchoWait::Busy)]
    pub wait: EchoWait,
    /// An RPC still without its response after this long fails the run.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub rpc_timeout: Duration,
    /// Fraction of frames the testbed's switch drops, 0..1 (see `etran testbed up --loss`).
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub loss: f64,
    /// Bottleneck rate of the switch's ports towards the hosts, e.g. 500mbit (see `etran
    /// testbed up --rate`): the queues form in the switch, not in the hosts.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<u64>,
    /// Priority queues at the bottleneck (needs --rate; see `etran testbed up --prio`).
    #[arg(long, requires = "rate")]
    pub prio: bool,
    /// Write every measured RPC's request length and RTT to FILE.<transport> (cp_node's
    /// --dump-times format: a line per RPC, length in bytes and RTT in microseconds).
    #[arg(long, value_name = "FILE")]
    pub dump_times: Option<std::path::PathBuf>,
    /// The testbed hosts' datapaths (as `etran up` brings them up).
    #[command(flatten)]
    pub homa: HomaSchedArgs,
    /// The eTran rows' datapath backend (see `etran up --backend`): native binds each socket
    /// and app to a queue of the host's NIC (the private testbed's NICs get one TX queue per
    /// thread).
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// The eTran rows' pacing, TCP's and Homa's (see `etran up --pacing`; Homa's link rate:
    /// --homa-link-mbps).
    #[arg(long, value_enum, default_value_t = PacingChoice::Off)]
    pub pacing: PacingChoice,
    /// The eTran rows' daemons' zero copy on native (see `etran daemon --zero-copy`).
    #[arg(long, value_enum, default_value_t = ZeroCopy::Auto)]
    pub zero_copy: ZeroCopy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RawMode {
    /// One host transmits as fast as it can; the peer counts.
    Txonly,
    /// The peer transmits; one host receives and drops.
    Rxdrop,
    /// One host sends, the peer reflects every frame back.
    Echo,
}

#[derive(Debug, Args)]
pub struct RawArgs {
    /// Interface to run on instead of the built-in testbed (one-sided: sends or receives only).
    #[arg(long)]
    pub iface: Option<String>,
    /// Traffic pattern.
    #[arg(long, value_enum, default_value_t = RawMode::Txonly)]
    pub mode: RawMode,
    /// Frame size in bytes (Ethernet header included, FCS excluded): at most the testbed's MTU
    /// plus 14.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(60..))]
    pub size: u32,
    /// Frames per ring operation.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=2048))]
    pub batch: u32,
    /// How long to measure.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Put the testbed's switch namespace (one more XDP hop) between the hosts instead of
    /// joining them with one veth pair.
    #[arg(long, conflicts_with = "iface")]
    pub switch: bool,
    /// Queues to use, one lane (socket pair, thread) per queue and CPU; with more than one, each
    /// lane runs both ends of its queue on its own CPU.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub queues: u32,
    /// MTU of the private testbed's interfaces (see `etran testbed up --mtu`); --size may be
    /// at most the MTU plus the Ethernet header.
    #[arg(long, default_value_t = crate::testbed::DEFAULT_MTU, conflicts_with = "iface")]
    pub mtu: u32,
    /// Measure the chain eTran's TCP runs on (compat backend): from an app port's AF_XDP
    /// socket through the egress hook, the NIC, the testbed (with --switch: the switch), the
    /// peer's NIC and ingress hook into the peer's app port and socket, with the transport's
    /// own work left out; txonly (one-way) and echo. The ceiling of a transport's frame rate.
    #[arg(long, conflicts_with = "iface")]
    pub chain: bool,
}

#[derive(Debug, Subcommand)]
pub enum TestbedCommand {
    /// Build the testbed (removing a stale one of the same name first).
    Up(TestbedUpArgs),
    /// Remove the testbed.
    Down(TestbedNameArgs),
    /// Show the testbed's hosts, addresses and switch mode.
    Status(TestbedNameArgs),
}

#[derive(Debug, Args)]
pub struct TestbedNameArgs {
    /// Name of the testbed: namespaces are NAME-h1..NAME-hN and NAME-sw.
    #[arg(long, default_value = "etran")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct TestbedUpArgs {
    #[command(flatten)]
    pub name: TestbedNameArgs,
    /// Number of hosts.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=32))]
    pub hosts: u8,
    /// Bottleneck rate of every switch port towards a host, e.g. 1gbit, 500mbit (kernel forwarding).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<u64>,
    /// Mark ECN CE when the estimated queue of a port exceeds BYTES (needs --rate). The queue
    /// is what arrived beyond the rate and beyond the burst HTB lets through at once.
    #[arg(long, value_name = "BYTES", requires = "rate")]
    pub ecn_threshold: Option<u32>,
    /// Priority queues at the bottleneck (needs --rate): 8 HTB classes served in strict
    /// priority order, each IPv4 frame in the one of its TOS's top 3 bits (Homa's priority),
    /// the highest first.
    #[arg(long, requires = "rate")]
    pub prio: bool,
    /// Fraction of frames the switch drops, 0..1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub loss: f64,
    /// Fraction of frames the switch duplicates, 0..1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub duplicate: f64,
    /// Fraction of frames the switch corrupts (one flipped payload byte), 0..1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub corrupt: f64,
    /// No switch: the 2 hosts' eth0 are the two ends of one veth pair (same addresses).
    #[arg(long)]
    pub direct: bool,
    /// RX/TX queues of every testbed interface (veth), so traffic can be spread over CPUs. For
    /// AF_XDP measurements: `etran up` refuses a veth with more than one queue.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub queues: u32,
    /// TX queues of every host's NIC: one per app the native backend binds to it (each app's
    /// AF_XDP socket sends on a queue of its own). Its RX queues stay `--queues`. Default: 8 on
    /// a kernel with etran's hooks (patches/), 1 on a stock kernel or with --direct.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub app_queues: Option<u32>,
    /// MTU of every testbed interface (veth): 1280 up to the most a veth carries to XDP programs
    /// without multi-buffer support (3506 on x86-64 with 4 KiB pages). eTran's TCP and Linux's
    /// both announce an MSS of the MTU less 40.
    #[arg(long, default_value_t = crate::testbed::DEFAULT_MTU)]
    pub mtu: u32,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 10s, 500ms, 1m)"))?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err("expected a fraction between 0 and 1, e.g. 0.01".into()),
    }
}

fn parse_gbps(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(g) if (0.0..=100.0).contains(&g) => Ok(g),
        _ => Err("expected Gbit/s between 0 (closed loop) and 100, e.g. 0.5".into()),
    }
}

/// Parses a rate in bits per second: `1gbit`, `500mbit`, `10kbit`, `123bit` (tc's spelling).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let lower = s.to_ascii_lowercase();
    let (num, mult) = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)]
        .iter()
        .find_map(|(suffix, m)| lower.strip_suffix(suffix).map(|n| (n, *m)))
        .ok_or("expected a rate such as 1gbit, 500mbit or 100kbit")?;
    match num.trim().parse::<f64>() {
        Ok(n) if n > 0.0 && (n * mult) >= 8000.0 && (n * mult) < 1e12 => Ok((n * mult) as u64),
        _ => Err("rate must be between 8kbit and 1000gbit".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rates_parse_in_tc_spelling() {
        assert_eq!(parse_rate("1gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("2.5Mbit"), Ok(2_500_000));
        assert!(parse_rate("10").is_err());
        assert!(parse_rate("0mbit").is_err());
        assert!(parse_rate("-1gbit").is_err());
    }

    #[test]
    fn durations_reject_zero_and_garbage() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn fractions_are_bounded() {
        assert_eq!(parse_fraction("0.25"), Ok(0.25));
        assert!(parse_fraction("1.5").is_err());
        assert!(parse_fraction("nan").is_err());
    }
}
