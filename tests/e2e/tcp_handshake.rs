//! The daemon's handshake logic (`etran::transport::tcp::handshake`) and frame builder
//! (`etran::transport::tcp::segment`) against real Linux TCP, both directions, over a private veth pair:
//! an AF_PACKET socket in namespace -a plays the daemon for an address no namespace owns (so
//! the kernel of -a stays out), Linux sockets in -b are the peer. Needs root.
use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use common::netns::{in_netns, sh, RawSocket, VethPair};
use etran::transport::tcp::{
    handshake::{Config, Established, Failure, Handshake, Outcome},
    segment::{Segment, SYN},
};

const ME: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 9);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const MY_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 1];
const PEER_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 2];

fn setup(name: &str) -> VethPair {
    let pair = VethPair::new(name);
    let (a, b) = (&pair.a, &pair.b);
    sh(&format!(
        "ip -n {a} link set va address 02:77:00:00:00:01 && \
         ip -n {b} link set vb address 02:77:00:00:00:02 && \
         ip -n {b} neigh replace {ME} lladdr 02:77:00:00:00:01 dev vb && \
         ip netns exec {b} sysctl -qw net.ipv4.tcp_ecn=1"
    ));
    pair
}

/// The daemon's configuration with ECN negotiation on (the code path kept for DCTCP).
fn ecn_on() -> Config {
    Config { ecn: true, ..Config::default() }
}

fn ts_ms() -> u32 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) }, 0);
    (ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000) as u32
}

/// The next TCP segment the peer sent to `to`, within 3 s.
fn next_from_peer(raw: &RawSocket, to: SocketAddrV4) -> Segment {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        assert!(Instant::now() < deadline, "nothing from the peer to {to}");
        let Some(f) = raw.recv(100) else { continue };
        if let Ok(s) = Segment::parse(&f) {
            if s.dst == to && *s.src.ip() == PEER {
                return s;
            }
        }
    }
}

/// Checks that the peer's next data segment continues exactly where the handshake left off.
fn expect_data(raw: &RawSocket, e: &Established, want: &[u8]) {
    let s = loop {
        let s = next_from_peer(raw, e.local);
        if !s.payload.is_empty() {
            break s;
        }
    };
    assert_eq!((s.seq, s.ack), (e.rcv_nxt(), e.snd_nxt()), "data at rcv_nxt, acking our SYN");
    assert_eq!(s.payload, want);
}

#[test]
fn active_open_to_a_linux_listener_then_refused_then_abort() {
    let Some(_root) = common::root::shared() else { return };
    let pair = setup("etran-hs-act");
    let listener = in_netns(&pair.b, || TcpListener::bind("10.77.0.2:5555").expect("listen"));
    listener.set_nonblocking(true).unwrap();
    let raw = in_netns(&pair.a, || RawSocket::open("va"));
    let local = SocketAddrV4::new(ME, 40001);
    let remote = SocketAddrV4::new(PEER, 5555);
    let (mut h, syn) =
        Handshake::active(ecn_on(), local, remote, MY_MAC, PEER_MAC, 0xffff_fff0, ts_ms());
    raw.send(&syn.build());
    let synack = next_from_peer(&raw, local);
    let step = h.on_segment(&synack, ts_ms());
    let Outcome::Established(e) = step.outcome else { panic!("{synack:?} → {step:?}") };
    raw.send(&step.send.expect("the final ACK").build());
    assert_eq!(e.irs, synack.seq);
    assert!(e.negotiated.timestamps && e.negotiated.sack, "Linux agrees to SACK: {e:?}");
    assert!(e.ecn, "Linux with tcp_ecn=1 accepts ECN (when asked: it is off by default)");
    assert!(e.negotiated.send_mss >= 1400 && e.negotiated.send_wscale > 0, "{e:?}");

    let deadline = Instant::now() + Duration::from_secs(3);
    let mut stream = loop {
        match listener.accept() {
            Ok((s, peer)) => {
                assert_eq!(peer, std::net::SocketAddr::V4(local));
                break s;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "Linux did not complete the handshake");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    stream.write_all(b"from linux").unwrap();
    expect_data(&raw, &e, b"from linux");

    // Abort: Linux takes our RST (the data it sent is unacknowledged: seq = snd_nxt is still
    // acceptable) and reports a reset.
    raw.send(&e.abort(e.snd_nxt(), e.rcv_nxt() + 10).build());
    stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 16];
    let err = stream.read(&mut buf).expect_err("reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);

    // Nobody listens on 5556: Linux answers RST|ACK and the handshake reports a refusal.
    let remote = SocketAddrV4::new(PEER, 5556);
    let (mut h, syn) =
        Handshake::active(Config::default(), local, remote, MY_MAC, PEER_MAC, 77, ts_ms());
    raw.send(&syn.build());
    let rst = next_from_peer(&raw, local);
    assert_eq!(h.on_segment(&rst, ts_ms()).outcome, Outcome::Failed(Failure::Refused));
}

#[test]
fn passive_open_from_a_linux_client() {
    let Some(_root) = common::root::shared() else { return };
    let pair = setup("etran-hs-pas");
    let raw = in_netns(&pair.a, || RawSocket::open("va"));
    let local = SocketAddrV4::new(ME, 7000);
    std::thread::scope(|s| {
        let b = pair.b.clone();
        let client = s.spawn(move || {
            in_netns(&b, || {
                let to = std::net::SocketAddr::V4(local);
                let mut c =
                    TcpStream::connect_timeout(&to, Duration::from_secs(3)).expect("connect");
                c.write_all(b"hello etran").unwrap();
                c
            })
        });
        let syn = next_from_peer(&raw, local);
        assert_eq!(syn.flags & SYN, SYN);
        let (mut h, synack) =
            Handshake::passive(ecn_on(), &syn, 0x7fff_0000, ts_ms()).expect("a SYN");
        raw.send(&synack.build());
        let e = loop {
            let seg = next_from_peer(&raw, local);
            let step = h.on_segment(&seg, ts_ms());
            if let Outcome::Established(e) = step.outcome {
                break e;
            }
            assert!(step.send.is_none(), "{seg:?} → {step:?}");
        };
        assert_eq!((e.local, e.remote), (local, syn.src));
        assert_eq!((e.local_mac, e.remote_mac), (MY_MAC, PEER_MAC));
        assert!(e.negotiated.timestamps && e.ecn, "{e:?}");
        let _c = client.join().expect("the client connected");
        expect_data(&raw, &e, b"hello etran");
    });
}
