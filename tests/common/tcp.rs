//! The harness of the TCP program fixtures (ingress and egress): the datapath loaded as
//! `etran up` links it, with lo standing in for the app port and the NIC (a test run never
//! transmits), connection-map access, BPF_PROG_TEST_RUN with an xdp_md context, counters.
use std::{mem::size_of, os::fd::AsFd};

use etran::{
    bpf::{
        entrance::types::etran_backend,
        tcp::types::{tcp_conn, tcp_conn_key, xdp_md},
    },
    loader::{
        self,
        counters::{self, Counters},
        ObjectStorage, Objects,
    },
};
use libbpf_rs::{Btf, MapCore, MapFlags, MapHandle, ProgramInput, ProgramMut};

use crate::fixture::class;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_REDIRECT: u32 = 4;

/// ifindex of lo, which stands in for app port 0 and for the NIC.
pub const LO: u32 = 1;

pub fn as_bytes<T>(v: &T) -> &[u8] {
    // SAFETY: T is a plain #[repr(C)] type generated from the BPF object's BTF.
    unsafe { std::slice::from_raw_parts((v as *const T).cast(), size_of::<T>()) }
}

pub fn from_bytes<T: Copy>(b: &[u8]) -> T {
    assert!(b.len() >= size_of::<T>());
    // SAFETY: as above; the length was checked.
    unsafe { std::ptr::read_unaligned(b.as_ptr().cast()) }
}

/// Serial `a <= b`.
pub fn not_after(a: u32, b: u32) -> bool {
    !etran::transport::tcp::seq::after(a, b)
}

pub struct Harness<'a> {
    pub objs: Objects<'a>,
    btf: Btf<'static>,
    traffic: MapHandle,
    drops: MapHandle,
    events: MapHandle,
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

/// What one test run returned: the verdict, the context after the run and the data (from
/// data_meta on: the kernel copies out any metadata in front of the frame).
pub struct RawRun {
    pub verdict: u32,
    pub ctx: xdp_md,
    pub data: Vec<u8>,
}

impl Harness<'static> {
    /// For a root test: the harness over storage of its own, or None (after saying so) where
    /// root tests cannot run (see [`crate::root`]).
    pub fn for_root_test() -> Option<RootHarness> {
        let root = crate::root::shared()?;
        // Leaked: the loaded objects borrow it for the harness's life (a few hundred bytes).
        let storage = Box::leak(Box::new(ObjectStorage::default()));
        Some(RootHarness { harness: Harness::new(storage), _root: root })
    }
}

impl Harness<'_> {
    pub fn new(storage: &mut ObjectStorage) -> Harness<'_> {
        let objs = loader::load(storage, etran_backend::ETRAN_BACKEND_COMPAT, 1)
            .expect("the verifier accepts every program");
        let id =
            libbpf_rs::Program::id_from_fd(objs.entrance.progs.etran_entrance.as_fd()).unwrap();
        let btf = Btf::from_prog_id(id).unwrap();
        let traffic = MapHandle::try_from(&objs.entrance.maps.etran_traffic).unwrap();
        let drops = MapHandle::try_from(&objs.entrance.maps.etran_drops).unwrap();
        let events = MapHandle::try_from(&objs.entrance.maps.etran_events).unwrap();
        let (slot, lo) = (0u32.to_ne_bytes(), LO.to_ne_bytes());
        let maps = &objs.tcp.maps;
        maps.etran_app_ports.update(&slot, &lo, MapFlags::ANY).expect("app port 0: lo");
        maps.etran_port_ifindex.update(&slot, &lo, MapFlags::ANY).expect("port 0 ifindex: lo");
        maps.etran_nic.update(&slot, &lo, MapFlags::ANY).expect("NIC: lo");
        Harness { objs, btf, traffic, drops, events }
    }

    pub fn counters(&self) -> Counters {
        counters::read(&self.btf, &self.traffic, &self.drops, Some(&self.events)).unwrap()
    }

    pub fn set_conn(&self, key: &tcp_conn_key, c: &tcp_conn) {
        let conns = &self.objs.tcp.maps.etran_tcp_conns;
        conns.update(as_bytes(key), as_bytes(c), MapFlags::ANY).expect("insert conn");
    }

    pub fn conn(&self, key: &tcp_conn_key) -> tcp_conn {
        let v = self.objs.tcp.maps.etran_tcp_conns.lookup(as_bytes(key), MapFlags::ANY);
        from_bytes(&v.unwrap().expect("conn present"))
    }

    /// Runs `prog` on `frame` as if it arrived on `ingress_ifindex`.
    pub fn run(&self, prog: &ProgramMut<'_>, frame: &[u8], ingress_ifindex: u32) -> RawRun {
        let md = xdp_md { data_end: frame.len() as u32, ingress_ifindex, ..Default::default() };
        let mut ctx_in = as_bytes(&md).to_vec();
        let mut ctx_out = vec![0u8; size_of::<xdp_md>()];
        // Room for the headers egress puts in front of the frame.
        let mut out = vec![0u8; frame.len() + 128];
        let input = ProgramInput {
            context_in: Some(&mut ctx_in),
            context_out: Some(&mut ctx_out),
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        };
        let output = prog.test_run(input).expect("test run");
        let verdict = output.return_value;
        let len = output.data.as_ref().map_or(0, |d| d.len());
        out.truncate(len);
        RawRun { verdict, ctx: from_bytes(&ctx_out), data: out }
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
    let row = class(c, "tcp");
    (row.transport.packets, row.pass.packets, row.drop.packets)
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
    pub const REDUCED: u8 = tcp_cc_flag::TCP_CC_REDUCED.0 as u8;
    pub const TIMEOUT: u8 = tcp_cc_flag::TCP_CC_TIMEOUT.0 as u8;
    pub const CWR: u8 = tcp_cc_flag::TCP_CC_CWR.0 as u8;
    pub const CE: u8 = tcp_cc_flag::TCP_CC_CE.0 as u8;
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
        INTENT_RETRANSMIT as RETRANSMIT, INTENT_WINDOW_UPDATE as WINDOW_UPDATE,
    };
}
