//! The harness of the TCP program fixtures: the datapath loaded as `etran up` links it, with lo
//! standing in for the app port and the NIC (a test run never transmits), the map state
//! (connections, the ACK generator's queues, the slow-path ring), a run of each program, the
//! fixture connection and the frames of it both ways; and helpers for the end-to-end tests.
use std::{
    cell::RefCell,
    net::SocketAddrV4,
    os::fd::{AsFd, AsRawFd, FromRawFd},
    rc::Rc,
};

use etran::{
    backend::socket::rx_budget_map,
    bpf::{
        entrance::types::{etran_backend, etran_pacing},
        tcp::types::{etran_port_rx, etran_tcp_rx_meta, etran_tcp_tx_hdr, tcp_conn, tcp_conn_key},
    },
    loader::{self, counters::Counters, ObjectStorage, Objects},
};
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapMut, ProgramMut, RingBuffer, RingBufferBuilder};

pub use crate::fixture::{as_bytes, from_bytes, RawRun, XDP_DROP, XDP_PASS, XDP_REDIRECT};
use crate::{
    fixture::{class_row, test_run, Bench, CounterMaps, Outcome},
    packet::*,
};
/// The segment fields the fixtures' frames are built from (see [`frame`]).
pub use etran::transport::tcp::segment::Segment;

/// ifindex of lo, which stands in for app port 0 and for the NIC.
pub const LO: u32 = 1;

/// Serial `a <= b`.
pub fn not_after(a: u32, b: u32) -> bool {
    !etran::transport::tcp::seq::after(a, b)
}

pub struct Harness<'a> {
    pub objs: Objects<'a>,
    counters: CounterMaps,
    /// App port 0's receive budget (compat/app_ports.h).
    budget: MapHandle,
    /// Native: app 0's socket, in `etran_app_xsks`.
    _xsk: Option<std::os::fd::OwnedFd>,
}

/// Gives port `slot` of the datapath's `etran_port_budget` (`outer`) a receive budget with
/// room for any number of frames, as an app that keeps its fill ring full and reads at once
/// would; returns it.
pub fn roomy_port_budget(outer: &impl MapCore, slot: u32) -> MapHandle {
    let budget = rx_budget_map().expect("a receive budget map");
    let fd = (budget.as_fd().as_raw_fd() as u32).to_ne_bytes();
    outer.update(&slot.to_ne_bytes(), &fd, MapFlags::ANY).expect("port budget");
    let b = etran_port_rx { posted: u64::MAX / 2, ..Default::default() };
    budget.update(&0u32.to_ne_bytes(), as_bytes(&b), MapFlags::ANY).expect("budget value");
    budget
}

/// A root test's [`Harness`], held with the test's root guard (dropped after it); derefs to the
/// harness.
pub struct RootHarness {
    harness: Harness<'static>,
    _root: crate::root::Guard,
}

impl std::ops::Deref for RootHarness {
    type Target = Harness<'static>;

    fn deref(&self) -> &Harness<'static> {
        &self.harness
    }
}

impl Harness<'static> {
    /// For a root test: the harness over storage of its own, or None (after saying so) where
    /// root tests cannot run (see [`crate::root`]).
    pub fn for_root_test() -> Option<RootHarness> {
        Harness::for_root_test_as(false)
    }

    /// [`Harness::for_root_test`] over the native datapath ([`Harness::native`]) when `native`.
    pub fn for_root_test_as(native: bool) -> Option<RootHarness> {
        Harness::for_root_test_with(native, etran_pacing::ETRAN_PACING_NONE)
    }

    /// [`Harness::for_root_test_as`] loaded with TCP's `pacing` (`etran_tcp_pace`: where the
    /// kernel lacks the packet queue's kfunc, a stock kernel, the pacing branches are dead).
    pub fn for_root_test_with(native: bool, pacing: etran_pacing) -> Option<RootHarness> {
        Harness::for_root_test_homa(native, pacing, Default::default())
    }

    /// [`Harness::for_root_test_with`], the Homa object loaded with `homa` (its pacer's link
    /// rate, taken with `pacing` through the packet queue).
    pub fn for_root_test_homa(
        native: bool,
        pacing: etran_pacing,
        homa: loader::HomaSched,
    ) -> Option<RootHarness> {
        let root = crate::root::shared()?;
        // Leaked: the loaded objects borrow it for the harness's life (a few hundred bytes).
        let storage = Box::leak(Box::new(ObjectStorage::default()));
        let harness = Harness::with_backend(storage, native, pacing, homa);
        Some(RootHarness { harness, _root: root })
    }
}

/// What TCP ingress did with a frame (run through the entrance).
pub struct IngressRun {
    pub verdict: u32,
    /// The RX metadata, when the frame went to the app.
    pub meta: Option<etran_tcp_rx_meta>,
    /// The frame behind the metadata.
    pub frame: Vec<u8>,
}

impl Harness<'_> {
    /// The compat datapath.
    pub fn new(storage: &mut ObjectStorage) -> Harness<'_> {
        Harness::with_backend(storage, false, etran_pacing::ETRAN_PACING_NONE, Default::default())
    }

    /// The native datapath's logic in plain XDP programs ([`loader::ObjectBackend::NativeUnhooked`]:
    /// test runs refuse the hooks' attach types, and a stock kernel has none), with app 0's
    /// socket on queue 0 (`etran_port_queue`) and an AF_XDP socket in its `etran_app_xsks` slot.
    pub fn native(storage: &mut ObjectStorage) -> Harness<'_> {
        Harness::with_backend(storage, true, etran_pacing::ETRAN_PACING_NONE, Default::default())
    }

    fn with_backend(
        storage: &mut ObjectStorage,
        native: bool,
        pacing: etran_pacing,
        homa: loader::HomaSched,
    ) -> Harness<'_> {
        let (backend, tcp) = if native {
            (etran_backend::ETRAN_BACKEND_NATIVE, loader::ObjectBackend::NativeUnhooked)
        } else {
            (etran_backend::ETRAN_BACKEND_COMPAT, loader::ObjectBackend::Compat)
        };
        let objs = loader::load_as(storage, backend, tcp, pacing, 1, homa)
            .expect("the verifier accepts every program");
        let e = &objs.entrance;
        let (traffic, drops) = (&e.maps.etran_traffic, &e.maps.etran_drops);
        let counters =
            CounterMaps::new(&e.progs.etran_entrance, traffic, drops, Some(&e.maps.etran_events));
        let (slot, lo) = (0u32.to_ne_bytes(), LO.to_ne_bytes());
        let maps = &objs.tcp.maps;
        maps.etran_app_ports.update(&slot, &lo, MapFlags::ANY).expect("app port 0: lo");
        maps.etran_port_ifindex.update(&slot, &lo, MapFlags::ANY).expect("port 0 ifindex: lo");
        maps.etran_nic.update(&slot, &lo, MapFlags::ANY).expect("NIC: lo");
        let budget = roomy_port_budget(&maps.etran_port_budget, 0);
        let xsk = native.then(|| {
            maps.etran_port_queue.update(&slot, &1u32.to_ne_bytes(), MapFlags::ANY).unwrap();
            // SAFETY: plain socket(2); the descriptor is owned at once.
            let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            assert!(fd >= 0, "an AF_XDP socket: {}", std::io::Error::last_os_error());
            // SAFETY: a fresh descriptor.
            let xsk = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
            let v = (fd as u32).to_ne_bytes();
            maps.etran_app_xsks.update(&slot, &v, MapFlags::ANY).expect("app 0's socket");
            xsk
        });
        Harness { objs, counters, budget, _xsk: xsk }
    }

    /// App port 0's receive budget.
    pub fn port_budget(&self) -> etran_port_rx {
        let v = self.budget.lookup(&0u32.to_ne_bytes(), MapFlags::ANY);
        from_bytes(&v.unwrap().expect("the budget's one entry"))
    }

    pub fn set_port_budget(&self, b: &etran_port_rx) {
        self.budget.update(&0u32.to_ne_bytes(), as_bytes(b), MapFlags::ANY).expect("set budget");
    }

    pub fn counters(&self) -> Counters {
        self.counters.read()
    }

    pub fn set_conn(&self, key: &tcp_conn_key, c: &tcp_conn) {
        let conns = &self.objs.tcp.maps.etran_tcp_conns;
        conns.update(as_bytes(key), as_bytes(c), MapFlags::ANY).expect("insert conn");
    }

    pub fn conn(&self, key: &tcp_conn_key) -> tcp_conn {
        let v = self.objs.tcp.maps.etran_tcp_conns.lookup(as_bytes(key), MapFlags::ANY);
        from_bytes(&v.unwrap().expect("conn present"))
    }

    /// Runs `prog` on `frame` as if it arrived on `ingress_ifindex`; the app of port 0 then
    /// takes whatever ingress handed it (its budget's `arrived` catches up, as the port's
    /// app-side program would count).
    pub fn run(&self, prog: &ProgramMut<'_>, frame: &[u8], ingress_ifindex: u32) -> RawRun {
        let run = test_run(prog, frame, ingress_ifindex);
        let b = self.port_budget();
        if b.arrived != b.taken {
            self.set_port_budget(&etran_port_rx { arrived: b.taken, ..b });
        }
        run
    }

    /// A frame from the NIC through the entrance, which tail-calls TCP ingress.
    pub fn ingress(&self, frame: &[u8]) -> IngressRun {
        let run = self.run(&self.objs.entrance.progs.etran_entrance, frame, LO);
        let (meta, frame) = run.split::<etran_tcp_rx_meta>();
        IngressRun { verdict: run.verdict, meta, frame: frame.to_vec() }
    }

    /// An app's TX frame through egress (from port 0).
    pub fn egress(&self, frame: &[u8]) -> RawRun {
        self.run(&self.objs.tcp.progs.etran_tcp_egress, frame, LO)
    }

    /// One run of the native gen hook's program on the zeroed frame the hook gives it.
    pub fn xsk_gen(&self) -> RawRun {
        self.run(&self.objs.tcp.progs.etran_tcp_xsk_gen, &[0u8; 256], LO)
    }

    /// One generator run popping queue `q`.
    pub fn gen(&self, q: u8) -> RawRun {
        self.run(&self.objs.tcp.progs.etran_tcp_gen, &gen_template(q), LO)
    }

    /// The generator queue named by an `etran_tcp_ack_queued` bit.
    pub fn queue(&self, q: u8) -> &MapMut<'_> {
        match q {
            queued::IMMEDIATE => &self.objs.tcp.maps.etran_tcp_ack_queue,
            queued::DELAYED => &self.objs.tcp.maps.etran_tcp_dack_queue,
            _ => panic!("no queue {q}"),
        }
    }

    /// Pops every key of queue `q`.
    pub fn drain_queue(&self, q: u8) -> Vec<tcp_conn_key> {
        let q = self.queue(q);
        std::iter::from_fn(|| q.lookup_and_delete(&[]).unwrap().map(|v| from_bytes(&v))).collect()
    }

    /// Empties both generator queues.
    pub fn drain_queues(&self) {
        self.drain_queue(queued::IMMEDIATE);
        self.drain_queue(queued::DELAYED);
    }

    pub fn push_key(&self, q: u8, k: &tcp_conn_key) {
        self.queue(q).update(&[], as_bytes(k), MapFlags::ANY).unwrap();
    }

    /// The TCP object's maps and programs as the daemon finds them (by name, from the entrance).
    pub fn handles(&self) -> etran::transport::tcp::TcpHandles {
        let id = libbpf_rs::Program::id_from_fd(self.objs.entrance.progs.etran_entrance.as_fd());
        etran::transport::tcp::tcp_handles(id.unwrap()).expect("TCP handles")
    }

    /// The records ingress writes to the slow-path ring buffer from now on.
    pub fn slow_records(&self) -> Records {
        Records::new(&self.objs.tcp.maps.etran_tcp_slow)
    }
}

/// A TCP program on the fixture connection ([`key`]) as a fixture table's [`Bench`]: a row's
/// state is the connection, `V` what of it the program may change, `S` what a row says the
/// program sent. Derefs to the harness.
pub struct OnConn<V: ConnView, S> {
    h: RootHarness,
    base: tcp_conn,
    install: fn(&Harness<'_>, &tcp_conn),
    run: fn(&Harness<'_>, &[u8]) -> RawRun,
    check: Check<V, S>,
}

/// What of the fixture connection a table compares: made from it.
pub trait ConnView: for<'a> From<&'a tcp_conn> + PartialEq + std::fmt::Debug {}

impl<V: for<'a> From<&'a tcp_conn> + PartialEq + std::fmt::Debug> ConnView for V {}

/// A program's own checks of a row (see [`Bench::check`]).
pub type Check<V, S> = fn(&Harness<'_>, &Outcome<'_, OnConn<V, S>>);

impl<V: ConnView, S> OnConn<V, S> {
    /// Rows start from `base`, put into the connection map; their frames go through `run`.
    pub fn new(
        h: RootHarness,
        base: tcp_conn,
        run: fn(&Harness<'_>, &[u8]) -> RawRun,
        check: Check<V, S>,
    ) -> OnConn<V, S> {
        OnConn { h, base, install: |h, c| h.set_conn(&key(), c), run, check }
    }

    /// Puts a row's connection into the maps with `install` (and what goes with it).
    pub fn installing(self, install: fn(&Harness<'_>, &tcp_conn)) -> OnConn<V, S> {
        OnConn { install, ..self }
    }
}

impl<V: ConnView, S> std::ops::Deref for OnConn<V, S> {
    type Target = Harness<'static>;

    fn deref(&self) -> &Harness<'static> {
        &self.h
    }
}

impl<V: ConnView, S> Bench for OnConn<V, S> {
    type State = tcp_conn;
    type View = V;
    type Sent = S;
    const CLASS: &'static str = "tcp";

    fn base(&self) -> tcp_conn {
        self.base
    }

    fn install(&self, c: &tcp_conn) {
        (self.install)(&self.h, c)
    }

    fn view(&self, c: &tcp_conn) -> V {
        V::from(c)
    }

    fn after(&self) -> V {
        V::from(&self.h.conn(&key()))
    }

    fn run(&self, frame: &[u8]) -> RawRun {
        (self.run)(&self.h, frame)
    }

    fn counters(&self) -> Counters {
        self.h.counters()
    }

    fn check(&self, o: &Outcome<'_, Self>) {
        (self.check)(&self.h, o)
    }
}

/// The frame the gen pump sends the generator to pop queue `q`.
pub fn gen_template(q: u8) -> Vec<u8> {
    etran::backend::pump::template(q).to_vec()
}

/// The records of a ring buffer, as they come.
pub struct Records {
    ring: RingBuffer<'static>,
    got: Rc<RefCell<Vec<Vec<u8>>>>,
}

impl Records {
    pub fn new(map: &MapMut<'_>) -> Records {
        let got: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
        let sink = got.clone();
        let mut b = RingBufferBuilder::new();
        b.add(map, move |rec: &[u8]| {
            sink.borrow_mut().push(rec.to_vec());
            0
        })
        .unwrap();
        Records { ring: b.build().unwrap(), got }
    }

    /// The records written since the last call.
    pub fn take(&self) -> Vec<Vec<u8>> {
        self.ring.consume().unwrap();
        std::mem::take(&mut *self.got.borrow_mut())
    }
}

/// `c` with congestion control as the daemon starts it (slow start, DCTCP's alpha at 1, nothing
/// cut: see tcp_cc.h), its window `cwnd` bytes from snd_una.
pub fn with_cwnd(c: tcp_conn, cwnd: u32) -> tcp_conn {
    tcp_conn {
        cwnd,
        ssthresh: u32::MAX,
        cwnd_edge: c.snd_una.wrapping_add(cwnd),
        cc_recover: c.snd_nxt,
        alpha: 1 << 16,
        dctcp_end: c.snd_nxt,
        cc: 0,
        ..c
    }
}

/// (transport, pass, drop) packets of class tcp.
pub fn tcp_row(c: &Counters) -> (u64, u64, u64) {
    class_row(c, "tcp")
}

/// The connection the egress and generator fixtures use: the peer (SRC_IP) talks to us.
pub const PEER_PORT: u16 = 40000;
pub const LOCAL_PORT: u16 = 80;
pub const LOCAL_IP: [u8; 4] = crate::packet::DST_IP;
pub const PEER_IP: [u8; 4] = crate::packet::SRC_IP;
pub const LOCAL_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x0a];
pub const PEER_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x0b];

pub fn key() -> tcp_conn_key {
    tcp_conn_key {
        local_ip: u32::from_ne_bytes(LOCAL_IP),
        remote_ip: u32::from_ne_bytes(PEER_IP),
        local_port: LOCAL_PORT.to_be(),
        remote_port: PEER_PORT.to_be(),
    }
}

/// A segment of the fixture connection ([`key`]) from the peer: a base for
/// `Segment { seq, .., ..from_peer() }` (addresses, ports, MACs; everything else zero).
pub fn from_peer() -> Segment {
    segment((PEER_IP, PEER_PORT, PEER_MAC), (LOCAL_IP, LOCAL_PORT, LOCAL_MAC))
}

/// The same from us to the peer.
pub fn to_peer() -> Segment {
    segment((LOCAL_IP, LOCAL_PORT, LOCAL_MAC), (PEER_IP, PEER_PORT, PEER_MAC))
}

/// A segment (from, to) as (address, port, MAC).
fn segment(from: ([u8; 4], u16, [u8; 6]), to: ([u8; 4], u16, [u8; 6])) -> Segment {
    let at = |(ip, port, _): ([u8; 4], u16, [u8; 6])| SocketAddrV4::new(ip.into(), port);
    Segment { src_mac: from.2, dst_mac: to.2, src: at(from), dst: at(to), ..Segment::default() }
}

/// The frame of `s`, built here byte by byte ([`crate::packet`]'s builders, RFC 1071
/// checksums) rather than by `Segment::build`: what the fixtures expect stays independent of
/// the code under test. Options must be a multiple of 4 bytes.
pub fn frame(s: &Segment) -> Vec<u8> {
    let (src, dst) = (s.src.ip().octets(), s.dst.ip().octets());
    let (sport, dport) = (s.src.port(), s.dst.port());
    let tcp = tcp_segment(sport, dport, s.seq, s.ack, s.flags, s.window, &s.options, &s.payload);
    let ip = Ipv4 { tos: s.tos, id: s.ip_id, src, dst, ..Ipv4::default() };
    eth_with(s.dst_mac, s.src_mac, ETH_P_IP, &ipv4_with(&ip, &with_tcp_checksum(src, dst, tcp)))
}

/// Options as Linux lays them out: the timestamp option, then SACK blocks (sequence numbers)
/// if any.
pub fn ts_sack_options(tsval: u32, tsecr: u32, blocks: &[(u32, u32)]) -> Vec<u8> {
    let mut o = tcp_ts_option(tsval, tsecr);
    if !blocks.is_empty() {
        o.extend_from_slice(&[1, 1, 5, 2 + 8 * blocks.len() as u8]);
        for (l, r) in blocks {
            o.extend_from_slice(&l.to_be_bytes());
            o.extend_from_slice(&r.to_be_bytes());
        }
    }
    o
}

/// The TSval of a segment we sent (`seg`: its TCP header on), 0 without timestamps (`ts`),
/// checked to be the ms clock some time within `clock` (before and after the run).
pub fn tsval_sent(seg: &[u8], ts: bool, clock: (u32, u32)) -> u32 {
    if !ts {
        return 0;
    }
    assert_eq!(seg[20..24], [1, 1, 8, 10], "the timestamp option first");
    let v = u32::from_be_bytes(seg[24..28].try_into().unwrap());
    let (t0, t1) = clock;
    assert!(not_after(t0, v) && not_after(v, t1), "TSval {v} is the ms clock ({t0}..={t1})");
    v
}

/// A TX header on the fixture connection, reporting the app's read position `read_pos` (the
/// fixture connections' last report is at 0, so it is also the bytes read since).
pub fn tx_hdr(intent: u8, tx_pos: u32, len: u16, read_pos: u32) -> etran_tcp_tx_hdr {
    etran_tcp_tx_hdr { key: key(), tx_pos, read_pos, len, intent, flags: 0 }
}

/// The payload of a TX frame of `len` bytes.
pub fn tx_payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// An app's TX frame: the header (laid out by the C definition) and its `len` payload bytes of
/// [`tx_payload`].
pub fn tx_frame(h: &etran_tcp_tx_hdr) -> Vec<u8> {
    let mut f = as_bytes(h).to_vec();
    f.extend_from_slice(&tx_payload(h.len.into()));
    f
}

// ---- End to end: an etran app against Linux TCP (see daemon::etran_up_pair) ----

/// Deterministic bytes for byte-exact checks.
pub fn pattern(seed: usize, n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i + seed) * 31 % 251) as u8).collect()
}

/// The TCP maps of `etran up va` in the calling thread's namespace.
fn va_handles() -> etran::transport::tcp::TcpHandles {
    let dp = loader::find("va").unwrap().expect("etran is up on va");
    etran::transport::tcp::tcp_handles(dp.summary.prog_id).unwrap()
}

/// Whether `key` is in etran_tcp_conns of `va` in namespace `ns`.
pub fn conn_present(ns: &str, key: &tcp_conn_key) -> bool {
    crate::netns::in_netns(ns, || {
        let tcp = va_handles();
        tcp.conns.lookup(as_bytes(key), MapFlags::ANY).unwrap().is_some()
    })
}

/// Whether `key` is in etran_tcp_pending (a handshake or TIME_WAIT) in namespace `ns`.
pub fn pending_present(ns: &str, key: &tcp_conn_key) -> bool {
    crate::netns::in_netns(ns, || {
        let tcp = va_handles();
        tcp.pending.lookup(as_bytes(key), MapFlags::ANY).unwrap().is_some()
    })
}

/// Entries of (etran_tcp_conns, etran_tcp_pending) in namespace `ns`.
pub fn map_entries(ns: &str) -> (usize, usize) {
    crate::netns::in_netns(ns, || {
        let tcp = va_handles();
        (tcp.conns.keys().count(), tcp.pending.keys().count())
    })
}

/// Polls `cond` every 10 ms for up to `secs` seconds; panics with `what` if it never holds.
pub fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A neighbour entry for vb (10.77.0.2) on va, which active opens need.
pub fn add_neighbour_of_b(net: &crate::netns::VethPair) {
    let mac = crate::netns::mac_of(&net.b, "vb").map(|b| format!("{b:02x}")).join(":");
    crate::netns::sh(&format!("ip -n {} neigh replace 10.77.0.2 lladdr {mac} dev va", net.a));
}

/// tcp_conn bit values as the fixtures write them (tcp.h's enums, one definition).
pub mod flag {
    use etran::bpf::tcp::types::{tcp_cc_flag, tcp_conn_fin, tcp_conn_flag};

    pub const TS: u8 = tcp_conn_flag::TCP_CONN_TIMESTAMPS.0 as u8;
    pub const ECN: u8 = tcp_conn_flag::TCP_CONN_ECN.0 as u8;
    pub const SACK: u8 = tcp_conn_flag::TCP_CONN_SACK.0 as u8;
    pub const FIN_SENT: u8 = tcp_conn_fin::TCP_CONN_FIN_SENT.0 as u8;
    pub const FIN_RCVD: u8 = tcp_conn_fin::TCP_CONN_FIN_RCVD.0 as u8;
    pub const FIN_HELD: u8 = tcp_conn_fin::TCP_CONN_FIN_HELD.0 as u8;
    pub const REDUCED: u8 = tcp_cc_flag::TCP_CC_REDUCED.0 as u8;
    pub const TIMEOUT: u8 = tcp_cc_flag::TCP_CC_TIMEOUT.0 as u8;
    pub const CWR: u8 = tcp_cc_flag::TCP_CC_CWR.0 as u8;
    pub const CE: u8 = tcp_cc_flag::TCP_CC_CE.0 as u8;
    pub const LOSS: u8 = tcp_cc_flag::TCP_CC_LOSS.0 as u8;
}

/// tcp_conn.ack_queued values: the ACK generator's queues a key is in.
pub mod queued {
    use etran::bpf::tcp::types::etran_tcp_ack_queued;

    pub const NOT_QUEUED: u8 = etran_tcp_ack_queued::ETRAN_TCP_ACK_NOT_QUEUED.0 as u8;
    pub const DELAYED: u8 = etran_tcp_ack_queued::ETRAN_TCP_ACK_DELAYED.0 as u8;
    pub const IMMEDIATE: u8 = etran_tcp_ack_queued::ETRAN_TCP_ACK_IMMEDIATE.0 as u8;
}

/// TX intents (the app library's names for tcp.h's enum), as the fixtures write them.
pub mod intent {
    pub use etran::transport::tcp::stream::{
        INTENT_ACK as ACK, INTENT_ACK_DUE as ACK_DUE, INTENT_DATA as DATA, INTENT_FIN as FIN,
        INTENT_PROBE as PROBE, INTENT_RETRANSMIT as RETRANSMIT,
        INTENT_WINDOW_UPDATE as WINDOW_UPDATE,
    };
}
