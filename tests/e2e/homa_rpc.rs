//! Homa RPCs end to end: two etran hosts on a private testbed (`etran up` and a daemon on
//! each), a server [`RpcSocket`] answering every request, a client with many RPCs outstanding,
//! messages within the unscheduled bytes and granted ones up to 2 MB, every byte of requests
//! and responses checked; then a forging app on the client's host whose
//! frames egress drops, counted, with nothing reaching the wire. Needs root.
use std::{
    cell::RefCell,
    net::SocketAddrV4,
    rc::Rc,
    sync::{atomic::AtomicBool, atomic::Ordering, mpsc},
    time::{Duration, Instant},
};

use common::{
    daemon::EtranHosts,
    fixture::{as_bytes, class_row, drop_total, Rng},
    netns::in_netns,
};
use etran::{
    app::{rpc::RpcSocket, AppPort, DaemonLink},
    bpf::homa::types::{etran_homa_limit, etran_homa_tx_hdr, etran_homa_tx_intent, homa_rpc_key},
    loader::counters::Counters,
    proto::{errno_of, Transport},
    testbed::HOST_NIC,
};

/// The longest message that goes without a grant.
const UNSCHED: usize = etran_homa_limit::ETRAN_HOMA_UNSCHED_LIMIT.0 as usize;
const PORT: u16 = 7600;

/// What the server answers to `req`: another length (beyond the unscheduled bytes when the
/// request is), bytes that depend on every request byte's place.
fn answer(req: &[u8]) -> Vec<u8> {
    let len =
        if req.len() > UNSCHED { req.len() / 2 + 7 } else { (req.len() * 7919) % UNSCHED + 1 };
    let sum = req.iter().fold(0u8, |a, &b| a.wrapping_mul(31).wrapping_add(b));
    (0..len).map(|i| (i as u8).wrapping_mul(13) ^ sum ^ req[i % req.len()]).collect()
}

/// The responses of the RPCs that completed, by request index.
type Responses = Rc<RefCell<Vec<(usize, Vec<u8>)>>>;

fn counters(ns: &str) -> Counters {
    in_netns(ns, || etran::loader::find(HOST_NIC).unwrap().expect("etran is up").counters())
        .unwrap()
}

/// Homa frames host `ns`'s NIC saw, whatever became of them.
fn homa_frames(c: &Counters) -> u64 {
    let (t, p, d) = class_row(c, "homa");
    t + p + d
}

#[test]
fn rpcs_are_byte_exact_and_forgeries_never_leave() {
    let Some(_root) = common::root::shared() else { return };
    let hosts = EtranHosts::new("homa-rpc");
    let server_addr = SocketAddrV4::new(hosts.tb.host(2).ip, PORT);
    let stop = AtomicBool::new(false);
    let (bound_tx, bound_rx) = mpsc::channel();
    let server_sock = hosts.daemons[1].sock.clone();
    std::thread::scope(|s| {
        let server = s.spawn(|| {
            let mut srv = RpcSocket::open(&server_sock, PORT).unwrap();
            srv.set_request_handler(|s, req, bytes| {
                s.enqueue_response(req, answer(&bytes)).unwrap()
            });
            bound_tx.send(()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                srv.wait(Duration::from_millis(5)).unwrap();
            }
            assert_eq!(srv.stats().rx_refused, 0);
        });
        bound_rx.recv_timeout(Duration::from_secs(10)).expect("the server bound its port");

        let mut client = RpcSocket::open(&hosts.daemons[0].sock, 0).unwrap();
        let mut rng = Rng(0x4a4a_5eed_0012);
        const RPCS: usize = 300;
        const OUTSTANDING: usize = 32;
        let done: Responses = Rc::default();
        let mut sent = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while done.borrow().len() < RPCS {
            while sent.len() < RPCS && sent.len() - done.borrow().len() < OUTSTANDING {
                // Most within the unscheduled bytes; one in five up to 600 KB (granted), and one
                // of 2 MB.
                let len = match sent.len() {
                    0 => 1,
                    1 => UNSCHED,
                    2 => 2 << 20,
                    _ if rng.below(5) == 0 => UNSCHED + 1 + rng.below(600_000),
                    _ => 1 + rng.below(UNSCHED),
                };
                let req: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                let (i, done) = (sent.len(), done.clone());
                client
                    .enqueue_request(server_addr, req.clone(), move |_, r| {
                        done.borrow_mut().push((i, r.unwrap()))
                    })
                    .unwrap();
                sent.push(req);
            }
            client.run_once().unwrap();
            assert!(
                Instant::now() < deadline,
                "{} of {RPCS} RPCs done; client {:?} {:?}, host 1 {:?}, host 2 {:?}",
                done.borrow().len(),
                client.stats(),
                client.app_port().stats(),
                counters(&hosts.ns(1))
                    .drops
                    .iter()
                    .filter(|d| d.count.packets > 0)
                    .collect::<Vec<_>>(),
                counters(&hosts.ns(2))
                    .drops
                    .iter()
                    .filter(|d| d.count.packets > 0)
                    .collect::<Vec<_>>(),
            );
        }
        for (i, resp) in done.borrow().iter() {
            assert_eq!(resp, &answer(&sent[*i]), "RPC {i} ({} bytes)", sent[*i].len());
        }
        assert_eq!(client.in_progress(), 0);

        forgeries(&hosts, client.local_port(), server_addr);

        stop.store(true, Ordering::Relaxed);
        server.join().unwrap();
    });
}

/// A Homa app on the client's host writes frames egress must refuse: from the client app's
/// port (forged), from a port nobody bound, a response to an RPC it never received, DATA past
/// what the receiver allowed. Each is counted under its reason; the server's host sees none.
fn forgeries(hosts: &EtranHosts, victim_port: u16, server: SocketAddrV4) {
    let mut link = DaemonLink::connect(&hosts.daemons[0].sock).unwrap();
    let reg = link.register(Transport::Homa, 1).unwrap();
    let (own, _) = link.homa_bind(0).unwrap();
    link.homa_peer(*server.ip()).unwrap();
    let mut port = AppPort::open(reg).unwrap();
    let frame = |local_port: u16, id: u64, length: u32, offset: u32, len: u16| {
        let h = etran_homa_tx_hdr {
            key: homa_rpc_key {
                peer_ip: u32::from(*server.ip()).to_be(),
                local_port: local_port.to_be(),
                peer_port: server.port().to_be(),
                id,
            },
            message_length: length,
            offset,
            len,
            intent: etran_homa_tx_intent::ETRAN_HOMA_TX_DATA.0 as u8,
            priority: 0,
            reserved: 0,
        };
        let mut f = as_bytes(&h).to_vec();
        f.resize(f.len() + usize::from(len), 0xee);
        f
    };
    let forged = [
        ("homa_tx_wrong_owner", frame(victim_port, 1 << 40, 100, 0, 100)),
        ("homa_tx_wrong_owner", frame(own.wrapping_add(1000), 1 << 40, 100, 0, 100)),
        ("homa_tx_unknown_rpc", frame(own, (1 << 40) + 1, 100, 0, 100)),
        ("homa_tx_beyond_grant", frame(own, (1 << 40) + 2, 100_000, UNSCHED as u32, 1000)),
    ];
    let (c1, c2) = (counters(&hosts.ns(1)), counters(&hosts.ns(2)));
    for (_, f) in &forged {
        port.send_with(|buf| {
            buf[..f.len()].copy_from_slice(f);
            Some(f.len())
        })
        .unwrap()
        .expect("a TX frame");
    }
    port.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = counters(&hosts.ns(1));
        let seen: u64 = ["homa_tx_wrong_owner", "homa_tx_unknown_rpc", "homa_tx_beyond_grant"]
            .iter()
            .map(|r| drop_total(&now, r) - drop_total(&c1, r))
            .sum();
        if seen as usize >= forged.len() || Instant::now() > deadline {
            for reason in ["homa_tx_wrong_owner", "homa_tx_unknown_rpc", "homa_tx_beyond_grant"] {
                let want = forged.iter().filter(|(r, _)| *r == reason).count() as u64;
                let got = drop_total(&now, reason) - drop_total(&c1, reason);
                assert_eq!(got, want, "{reason}");
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(homa_frames(&counters(&hosts.ns(2))), homa_frames(&c2), "nothing reached the wire");
}

/// The Homa ports and RPCs of host `ns`'s datapath: (bound ports, RPCs).
fn homa_state(ns: &str) -> (Vec<u16>, usize) {
    use libbpf_rs::MapCore;
    in_netns(ns, || {
        let dp = etran::loader::find(HOST_NIC).unwrap().expect("etran is up");
        let h = etran::transport::homa::control::homa_handles(dp.summary.prog_id).unwrap();
        let ports = h.ports.keys().map(|k| u16::from_be_bytes([k[0], k[1]])).collect();
        (ports, h.rpcs.keys().count())
    })
}

/// A port is one app's (`EADDRINUSE` for the next), a TCP app cannot bind one, and when an app
/// goes its ports and RPCs go with it, an RPC still waiting for its response included.
#[test]
fn ports_are_exclusive_and_go_with_their_app() {
    let Some(_root) = common::root::shared() else { return };
    let hosts = EtranHosts::new("homa-teardown");
    let sock = &hosts.daemons[0].sock;
    let mut first = RpcSocket::open(sock, PORT).unwrap();
    let taken = RpcSocket::open(sock, PORT).err().expect("the port is taken");
    assert_eq!(errno_of(&taken), Some(libc::EADDRINUSE), "{taken}");
    let mut tcp = DaemonLink::connect(sock).unwrap();
    tcp.register(Transport::Tcp, 1).unwrap();
    let e = tcp.homa_bind(PORT + 1).expect_err("a TCP app binds no Homa port");
    assert_eq!(errno_of(&e), Some(libc::EPROTOTYPE), "{e}");

    // A request to a port nobody bound on host 2: it never gets a response.
    let nobody = SocketAddrV4::new(hosts.tb.host(2).ip, PORT + 7);
    first.enqueue_request(nobody, vec![1; 3000], |_, _| panic!("no response")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while homa_state(&hosts.ns(1)).1 == 0 {
        first.run_once().unwrap();
        assert!(Instant::now() < deadline, "the client RPC reached egress");
    }
    let other = RpcSocket::open(sock, 0).unwrap();
    let (mut ports, rpcs) = homa_state(&hosts.ns(1));
    ports.sort_unstable();
    assert_eq!((ports, rpcs), (vec![PORT, other.local_port()], 1));

    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    while homa_state(&hosts.ns(1)) != (vec![other.local_port()], 0) {
        assert!(Instant::now() < deadline, "teardown: {:?}", homa_state(&hosts.ns(1)));
        std::thread::sleep(Duration::from_millis(20));
    }
    // The port is free again.
    drop(RpcSocket::open(sock, PORT).unwrap());
}
