//! The app library's TCP data path end to end: `etran up` and `etran daemon` in a private
//! namespace, an app registered through the client, a connection inserted by hand into
//! `etran_tcp_conns` (the daemon's handshake does not exist yet), then bytes sent with
//! [`etran::app::App`] through its port → egress → NIC → the peer namespace (captured there),
//! and segments injected from the peer received by the app with their metadata (in order, out
//! of order + merge, acknowledgement freeing the send buffer). Needs root.
use std::time::{Duration, Instant};

use common::{
    daemon::DaemonPair,
    netns::{in_netns, mac_of, RawSocket},
    packet::*,
    tcp::{as_bytes, pattern, with_cwnd},
};
use etran::{
    app::{App, DaemonLink, StreamInit},
    bpf::tcp::types::{tcp_conn, tcp_conn_key},
    proto::Transport,
};
use libbpf_rs::{MapCore, MapFlags};

const LOCAL: [u8; 4] = [10, 77, 0, 1]; // va's address
const REMOTE: [u8; 4] = [10, 77, 0, 9]; // nobody's: the kernel of -b stays out
const LPORT: u16 = 7000;
const RPORT: u16 = 8000;
const HANDLE: u64 = 0x00e7_4a11;
const SND_ISN: u32 = 0xffff_f000; // sequence numbers wrap during the test
const RCV_ISN: u32 = 0x1234_5678;
const TX_POS: u32 = 0xffff_fc00; // and so do stream positions
/// Small, so that reading 520 bytes makes a window update due: the peer is down to 440 of the
/// 960 advertisable bytes (less than half) and the update more than doubles that.
const RCV_BUF: u32 = 1024;

fn key() -> tcp_conn_key {
    tcp_conn_key {
        local_ip: u32::from_ne_bytes(LOCAL),
        remote_ip: u32::from_ne_bytes(REMOTE),
        local_port: LPORT.to_be(),
        remote_port: RPORT.to_be(),
    }
}

/// A segment from the peer, as it would arrive at va.
fn peer_segment(va_mac: [u8; 6], vb_mac: [u8; 6], seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let seg = tcp_segment(RPORT, LPORT, seq, ack, TCP_ACK | TCP_PSH, 0xffff, &[], payload);
    let seg = with_tcp_checksum(REMOTE, LOCAL, seg);
    let ip = Ipv4 { src: REMOTE, dst: LOCAL, ..Ipv4::default() };
    eth_with(va_mac, vb_mac, ETH_P_IP, &ipv4_with(&ip, &seg))
}

/// Polls the app until `f` holds (or fails after 3 s).
fn poll_until(app: &mut App, what: &str, mut f: impl FnMut(&mut App) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        app.poll().unwrap();
        if f(app) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} (port {:?}, app {:?}, stream {:?})",
            app.port().stats(),
            app.stats(),
            app.stream(etran::app::ConnId(HANDLE)).map(|s| (
                s.stats(),
                s.readable(),
                s.in_flight()
            ))
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn app_sends_and_receives_through_its_port() {
    let Some(_root) = common::root::alone() else { return };
    let DaemonPair { net, daemon } = DaemonPair::new("appdp");
    let (a, b) = (net.a.clone(), net.b.clone());
    let (va_mac, vb_mac) = (mac_of(&a, "va"), mac_of(&b, "vb"));

    let mut link = DaemonLink::connect(&daemon.sock).unwrap();
    let reg = link.register(Transport::Tcp, 1).unwrap();
    let slot = reg.slot;

    // The connection, as the daemon will insert it after a handshake.
    let conn = tcp_conn {
        owner_port: slot,
        handle: HANDLE,
        rcv_nxt: RCV_ISN,
        rcv_wnd: RCV_BUF,
        rx_pos: 0,
        snd_una: SND_ISN,
        snd_nxt: SND_ISN,
        snd_wnd: 0xffff,
        tx_pos: TX_POS,
        mss: 1460,
        local_mac: va_mac,
        remote_mac: vb_mac,
        ..Default::default()
    };
    let conn = with_cwnd(conn, 1 << 20);
    in_netns(&a, || {
        let dp = etran::loader::find("va").unwrap().expect("etran is up on va");
        let tcp = etran::transport::tcp::tcp_handles(dp.summary.prog_id).unwrap();
        tcp.conns.update(as_bytes(&key()), as_bytes(&conn), MapFlags::ANY).unwrap();
    });

    let mut app = App::with_link(link, reg).unwrap();
    let id = app.add_connection(
        HANDLE,
        StreamInit {
            key: key(),
            rx_pos: 0,
            tx_pos: TX_POS,
            send_wnd: 0xffff,
            mss: 1460,
            sack: false,
            snd_seq: SND_ISN,
            rcv_buf: RCV_BUF,
            snd_buf: 1 << 20,
            rcv_wscale: 0,
        },
    );
    let raw = in_netns(&b, || RawSocket::open("vb"));

    // ---- App → peer ----
    let msg = pattern(0, 5000);
    assert_eq!(app.send(id, &msg).unwrap(), msg.len());
    let mut got = Vec::new();
    let mut seqs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while got.len() < msg.len() {
        assert!(
            Instant::now() < deadline,
            "only {} of {} bytes reached the peer (port {:?}, app {:?}); daemon log:\n{}",
            got.len(),
            msg.len(),
            app.port().stats(),
            app.stats(),
            daemon.log()
        );
        app.poll().unwrap();
        let Some(f) = raw.recv(20) else { continue };
        if f.len() < 54 || f[12..14] != [8, 0] || f[23] != IPPROTO_TCP || f[26..30] != LOCAL {
            continue;
        }
        let ihl = usize::from(f[14] & 0xf) * 4;
        let seg = &f[14 + ihl..];
        assert_eq!(tcp_checksum(LOCAL, REMOTE, seg), 0, "egress writes a valid checksum");
        assert_eq!(&seg[0..4], &[(LPORT >> 8) as u8, LPORT as u8, (RPORT >> 8) as u8, RPORT as u8]);
        let doff = usize::from(seg[12] >> 4) * 4;
        seqs.push(u32::from_be_bytes(seg[4..8].try_into().unwrap()));
        got.extend_from_slice(&seg[doff..]);
    }
    assert_eq!(got, msg, "the peer sees the app's bytes, in order");
    let expect: Vec<u32> =
        [0u32, 1460, 2920, 4380].iter().map(|o| SND_ISN.wrapping_add(*o)).collect();
    assert_eq!(seqs, expect, "segments of at most the MSS, sequence numbers from the kernel");
    assert_eq!(app.stream(id).unwrap().in_flight(), 5000);

    // ---- Peer → app: in order, acknowledging everything ----
    let ack_all = SND_ISN.wrapping_add(5000);
    let data = pattern(100, 300);
    raw.send(&peer_segment(va_mac, vb_mac, RCV_ISN, ack_all, &data));
    let mut buf = vec![0u8; 4096];
    let mut rx = Vec::new();
    poll_until(&mut app, "the peer's in-order data", |app| {
        if let Ok(n) = app.recv(id, &mut buf) {
            rx.extend_from_slice(&buf[..n]);
        }
        rx.len() >= data.len()
    });
    assert_eq!(rx, data);
    let s = app.stream(id).unwrap();
    assert_eq!(s.in_flight(), 0, "the ACK freed the send buffer");
    assert_eq!(s.send_positions().0, TX_POS.wrapping_add(5000));

    // ---- Out of order, then the gap: merged ----
    let (first, second) = (pattern(400, 100), pattern(500, 120));
    raw.send(&peer_segment(va_mac, vb_mac, RCV_ISN.wrapping_add(400), ack_all, &second));
    poll_until(&mut app, "the out-of-order segment", |app| app.port().stats().rx_frames >= 2);
    assert!(matches!(app.recv(id, &mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
    raw.send(&peer_segment(va_mac, vb_mac, RCV_ISN.wrapping_add(300), ack_all, &first));
    let mut rx = Vec::new();
    poll_until(&mut app, "the merged bytes", |app| {
        if let Ok(n) = app.recv(id, &mut buf) {
            rx.extend_from_slice(&buf[..n]);
        }
        rx.len() >= 220
    });
    assert_eq!(rx, [first, second].concat());

    // ---- Readiness through mio ----
    let mut poll = mio::Poll::new().unwrap();
    poll.registry().register(&mut app, mio::Token(7), mio::Interest::READABLE).unwrap();
    let more = pattern(620, 50);
    raw.send(&peer_segment(va_mac, vb_mac, RCV_ISN.wrapping_add(520), ack_all, &more));
    let mut events = mio::Events::with_capacity(4);
    poll.poll(&mut events, Some(Duration::from_secs(3))).unwrap();
    assert!(events.iter().any(|e| e.token() == mio::Token(7) && e.is_readable()));
    let mut rx = Vec::new();
    poll_until(&mut app, "the data that woke the poll", |app| {
        if let Ok(n) = app.recv(id, &mut buf) {
            rx.extend_from_slice(&buf[..n]);
        }
        rx.len() >= more.len()
    });
    assert_eq!(rx, more);

    // ---- Consumption feedback ----
    // Reading 520 of 1024 bytes left the peer less than half the window: recv sent a
    // WINDOW_UPDATE (egress reopened the window); the 50 read since wait for the next frame.
    let conn_now = || {
        in_netns(&a, || {
            let dp = etran::loader::find("va").unwrap().unwrap();
            let tcp = etran::transport::tcp::tcp_handles(dp.summary.prog_id).unwrap();
            let v = tcp.conns.lookup(as_bytes(&key()), MapFlags::ANY).unwrap().unwrap();
            common::tcp::from_bytes::<tcp_conn>(&v)
        })
    };
    assert_eq!(app.stats().window_updates, 1);
    poll_until(&mut app, "egress to apply the window update", |_| {
        conn_now().rcv_wnd == RCV_BUF - 50
    });
    assert_eq!(app.send(id, b"bye").unwrap(), 3);
    poll_until(&mut app, "egress to apply the report", |_| conn_now().rcv_wnd == RCV_BUF);
    assert_eq!(conn_now().tx_pos, TX_POS.wrapping_add(5003));
    assert_eq!(app.port().stats().rx_malformed, 0);
    // rx_unknown is not asserted: the kernel side of the port sends its own IPv6 frames
    // (MLD reports), which xsk_redirect hands the app without metadata (see the report).
    app.close_app().unwrap();
}
