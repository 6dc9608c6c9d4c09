//! Homa incast end to end: an 8-host testbed whose switch limits every port towards a host to
//! `RATE` (HTB, kernel forwarding), etran on every host, one server on host 1 and a client on
//! each of the other 7, all sending long and short requests to it at once. Every RPC completes
//! byte-exact; the receiver's grant scheduler keeps the bytes granted and not yet received
//! within its cap (sampled from its map while the incast runs: beyond `max_incoming` only by
//! unscheduled bytes, which no grant controls), so the switch's queue towards the server
//! never overflows (no drop). Short requests' slowdown against an unloaded run is printed: this
//! testbed's queues are FIFO, so they wait behind granted bytes (HomaModule relies on switch
//! priority queues here). Needs root.
use std::{
    cell::RefCell,
    net::SocketAddrV4,
    rc::Rc,
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use common::{daemon::EtranHosts, fixture::Rng, netns::in_netns};

use super::homa_rpc::digest;
use etran::{
    app::rpc::RpcSocket,
    bpf::homa::types::{etran_homa_limit, homa_sched},
    testbed::{Spec, HOST_NIC},
    transport::homa::loss::LossConfig,
};
use libbpf_rs::{MapCore, MapFlags};

/// Hosts: the server's and 7 clients'.
const HOSTS: u8 = 8;
/// The bottleneck towards every host: low enough that 7 debug-build senders overrun it.
const RATE: u64 = 100_000_000;
const PORT: u16 = 7650;
/// Loss timers for this fabric. HomaModule's (RESEND after 5 ms of silence) assume queues of
/// microseconds; here the port's queue holds up to the cap plus every sender's unscheduled
/// bytes, about 0.8 MB or 65 ms at `RATE`, so a request still queued would be asked for, found
/// unknown and sent again whole, and the copies would fill the queue (measured: 25 Mbit/s of
/// goodput, 27,000 drops, 26-100 restarts per client). Timers longer than the queue's delay
/// are what an operator sets for such a fabric (HomaModule's resend_ticks sysctl).
const LOSS: LossConfig = LossConfig {
    resend_ticks: 100,
    resend_interval: 100,
    timeout_ticks: 2000,
    request_ack_ticks: 2,
};
/// The receiver's cap on bytes granted and not received (homa_maps.h's default).
const MAX_INCOMING: u64 = 400_000;
/// The longest message that goes without a grant.
const UNSCHED: u64 = etran_homa_limit::ETRAN_HOMA_UNSCHED_LIMIT.0 as u64;
/// What each client sends: `LONGS` requests of `LONG` bytes and `SHORTS` of `SHORT`, with at
/// most `OUTSTANDING` at once, the long ones first.
const LONGS: usize = 3;
const LONG: usize = 300_000;
const SHORTS: usize = 30;
const SHORT: usize = 100;
const OUTSTANDING: usize = 4;

/// The receiver's scheduler state: bytes granted and not received, over its messages.
fn incoming(ns: &str) -> u32 {
    in_netns(ns, || {
        let dp = etran::loader::find(HOST_NIC).unwrap().expect("etran is up");
        let ingress = etran::loader::transport_prog(dp.summary.prog_id, "etran_homa_ingr")
            .unwrap()
            .expect("Homa is loaded");
        let (_, sched) = etran::loader::prog_map(ingress, "etran_homa_sche").unwrap().unwrap();
        let v = sched.lookup(&0u32.to_ne_bytes(), MapFlags::ANY).unwrap().unwrap();
        assert!(v.len() >= std::mem::size_of::<homa_sched>());
        // SAFETY: the map's value is a struct homa_sched (its generated type).
        let s: homa_sched = unsafe { std::ptr::read_unaligned(v.as_ptr().cast()) };
        s.incoming
    })
}

/// Runs `rpcs` requests (sizes in order) from a socket on the daemon at `sock` to `server`,
/// `OUTSTANDING` at once; checks every answer and returns each short request's round trip.
fn client(
    sock: &std::path::Path,
    server: SocketAddrV4,
    sizes: &[usize],
    seed: u64,
) -> Vec<Duration> {
    let mut c = RpcSocket::open(sock, 0).unwrap();
    c.set_loss_config(LOSS);
    let mut rng = Rng(seed);
    type Done = Rc<RefCell<Vec<(usize, Vec<u8>, Duration)>>>;
    let done: Done = Rc::default();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while done.borrow().len() < sizes.len() {
        while sent.len() < sizes.len() && sent.len() - done.borrow().len() < OUTSTANDING {
            let req: Vec<u8> = (0..sizes[sent.len()]).map(|_| rng.next_u64() as u8).collect();
            let (i, d, t0) = (sent.len(), done.clone(), Instant::now());
            c.enqueue_request(server, req.clone(), move |_, r| {
                d.borrow_mut().push((i, r.expect("the RPC completes"), t0.elapsed()))
            })
            .unwrap();
            sent.push(req);
        }
        c.wait(Duration::from_millis(5)).unwrap();
        assert!(
            Instant::now() < deadline,
            "{} of {} RPCs done: {:?}",
            done.borrow().len(),
            sizes.len(),
            c.stats()
        );
    }
    let done = done.borrow();
    for (i, resp, _) in done.iter() {
        assert_eq!(resp, &digest(&sent[*i]), "RPC {i} ({} bytes)", sent[*i].len());
    }
    println!("client {seed}: {:?}", c.stats());
    done.iter().filter(|(i, ..)| sent[*i].len() == SHORT).map(|d| d.2).collect()
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn seven_senders_to_one_receiver_stay_within_its_cap_and_every_rpc_completes() {
    // Eight hosts with a daemon each and eight busy apps: the machine to itself, so that
    // neither it nor a timing test beside it is starved.
    let Some(_root) = common::root::alone() else { return };
    let mut spec = Spec::new("", HOSTS);
    spec.rate_bps = Some(RATE);
    let hosts = EtranHosts::every("homa-incast", spec);
    let server = SocketAddrV4::new(hosts.tb.host(1).ip, PORT);
    let (stop, sampling, peak) = (AtomicBool::new(false), AtomicBool::new(true), AtomicU32::new(0));
    let (bound_tx, bound_rx) = mpsc::channel();
    let server_sock = hosts.daemons[0].sock.clone();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut srv = RpcSocket::open(&server_sock, PORT).unwrap();
            srv.set_loss_config(LOSS);
            srv.set_request_handler(|s, req, bytes| {
                s.enqueue_response(req, digest(&bytes)).unwrap()
            });
            bound_tx.send(()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                srv.wait(Duration::from_millis(5)).unwrap();
            }
            println!("server: {:?}", srv.stats());
        });
        let _stop = common::StopOnDrop(&stop);
        bound_rx.recv_timeout(Duration::from_secs(10)).expect("the server bound its port");

        // Unloaded: host 2 alone, one short request at a time.
        let mut unloaded = client(&hosts.daemons[1].sock, server, &[SHORT; 20], 1);
        let base = percentile(&mut unloaded, 0.5);

        let sampler = s.spawn(|| {
            let ns = hosts.ns(1);
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(incoming(&ns), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let drops0 = hosts.switch_drops();
        let sizes: Vec<usize> =
            std::iter::repeat_n(LONG, LONGS).chain(std::iter::repeat_n(SHORT, SHORTS)).collect();
        let t0 = Instant::now();
        let clients: Vec<_> = (2..=HOSTS)
            .map(|h| {
                let (sock, sizes) = (hosts.daemons[h as usize - 1].sock.clone(), sizes.clone());
                s.spawn(move || client(&sock, server, &sizes, u64::from(h)))
            })
            .collect();
        let mut shorts: Vec<Duration> =
            clients.into_iter().flat_map(|c| c.join().expect("a client")).collect();
        let took = t0.elapsed();
        sampling.store(false, Ordering::Relaxed);
        sampler.join().unwrap();

        let peak = u64::from(peak.load(Ordering::Relaxed));
        let drops = hosts.switch_drops() - drops0;
        let (p50, p99) = (percentile(&mut shorts, 0.5), percentile(&mut shorts, 0.99));
        let bytes = (HOSTS as usize - 1) * (LONGS * LONG + SHORTS * SHORT);
        println!(
            "incast: {} RPCs, {bytes} bytes in {took:?} ({:.0} Mbit/s into a {} Mbit/s port); \
             peak incoming {peak} bytes (cap {MAX_INCOMING}); switch drops {drops}; short \
             requests p50 {p50:?} p99 {p99:?}, unloaded p50 {base:?}: slowdown p50 {:.1}, \
             p99 {:.1}",
            (HOSTS as usize - 1) * sizes.len(),
            bytes as f64 * 8.0 / took.as_secs_f64() / 1e6,
            RATE / 1_000_000,
            p50.as_secs_f64() / base.as_secs_f64(),
            p99.as_secs_f64() / base.as_secs_f64(),
        );
        // The long messages are granted: the scheduler was in play.
        assert!(peak > UNSCHED, "peak incoming {peak}: no message was ever scheduled");
        // Grants stop at the cap; unscheduled bytes (at most one message per sender at the
        // head of its queue, plus what was granted before) are what may lie beyond it.
        let limit = MAX_INCOMING + u64::from(HOSTS - 1) * UNSCHED;
        assert!(peak <= limit, "peak incoming {peak} past the cap and the unscheduled bytes");
        assert_eq!(drops, 0, "the switch dropped frames towards the receiver");
    });
}
