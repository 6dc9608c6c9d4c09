//! The slow path in the TCP ingress program (BPF_PROG_TEST_RUN through the entrance, as `etran
//! up` links it): SYNs to listening ports and segments of handshakes the daemon runs are copied
//! to the etran_tcp_slow ring buffer and dropped, so the kernel never answers them with RST —
//! whole when they carry payload or a FIN (the daemon replays those), else their head;
//! everything else etran does not own still reaches the kernel. Needs root (CAP_BPF).
mod common;

use std::{
    cell::RefCell,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsFd,
    rc::Rc,
};

use common::tcp::*;
use etran::{
    bpf::tcp::types::{etran_tcp_slow_limit, etran_tcp_slow_seg, tcp_conn, tcp_conn_key},
    loader::ObjectStorage,
    transport::tcp::{
        segment::{Segment, ACK, FIN, RST, SYN},
        tcp_handles,
    },
};
use libbpf_rs::{MapCore, MapFlags, RingBufferBuilder};

const LISTEN_PORT: u16 = 8080;
const CAPTURE: usize = etran_tcp_slow_limit::ETRAN_TCP_SLOW_CAPTURE.0 as usize;
const FRAME: usize = etran_tcp_slow_limit::ETRAN_TCP_SLOW_FRAME.0 as usize;

fn local() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 2), LISTEN_PORT)
}

fn remote() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 1), 40000)
}

fn key_of(local: SocketAddrV4, remote: SocketAddrV4) -> tcp_conn_key {
    tcp_conn_key {
        local_ip: u32::from_ne_bytes(local.ip().octets()),
        remote_ip: u32::from_ne_bytes(remote.ip().octets()),
        local_port: local.port().to_be(),
        remote_port: remote.port().to_be(),
    }
}

/// A segment from the peer to `dst`.
fn from_peer(dst: SocketAddrV4, flags: u8, payload: &[u8]) -> Vec<u8> {
    Segment {
        src_mac: [2, 0x99, 0, 0, 0, 1],
        dst_mac: [2, 0x99, 0, 0, 0, 2],
        src: remote(),
        dst,
        seq: 1000,
        ack: if flags & ACK != 0 { 5001 } else { 0 },
        flags,
        window: 64240,
        options: if flags & SYN != 0 { vec![2, 4, 5, 180] } else { vec![] },
        payload: payload.to_vec(),
        ..Segment::default()
    }
    .build()
}

#[test]
fn handshake_segments_reach_the_daemon_and_nothing_else_does() {
    let mut storage = ObjectStorage::default();
    let h = Harness::new(&mut storage);
    // The daemon's view of the same maps (found by name from the entrance, as `etran daemon`
    // does): the test drives the listen and pending maps through it.
    let id = libbpf_rs::Program::id_from_fd(h.objs.entrance.progs.etran_entrance.as_fd());
    let handles = tcp_handles(id.unwrap()).expect("TCP handles");
    let got: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
    let sink = got.clone();
    let mut builder = RingBufferBuilder::new();
    builder
        .add(&handles.slow, move |rec: &[u8]| {
            // len, wire_len, then the frame: a whole-frame record or a head record.
            let (len, wire_len): (u32, u32) = (from_bytes(rec), from_bytes(&rec[4..]));
            let whole = std::mem::size_of::<etran_tcp_slow_seg>();
            let cap = rec.len() + FRAME - whole;
            assert!(cap == FRAME || cap == CAPTURE, "a record of {} bytes", rec.len());
            assert!(len as usize <= cap && len <= wire_len);
            sink.borrow_mut().push(rec[8..8 + len as usize].to_vec());
            0
        })
        .unwrap();
    let ring = builder.build().unwrap();
    let take = || {
        ring.consume().unwrap();
        std::mem::take(&mut *got.borrow_mut())
    };
    let entrance = &h.objs.entrance.progs.etran_entrance;
    let run = |frame: &[u8]| h.run(entrance, frame, LO).verdict;

    // Nobody listens: the kernel answers (RST), etran stays out of the way.
    let syn = from_peer(local(), SYN, &[]);
    assert_eq!(run(&syn), XDP_PASS);
    assert!(take().is_empty());

    // A listening port: the SYN is the daemon's, byte-exact, and the kernel never sees it.
    let port = LISTEN_PORT.to_be_bytes();
    handles.listen.update(&port, &0u32.to_ne_bytes(), MapFlags::ANY).unwrap();
    assert_eq!(run(&syn), XDP_DROP);
    assert_eq!(take(), vec![syn.clone()]);
    let parsed = Segment::parse(&syn).unwrap();
    assert_eq!((parsed.src, parsed.dst, parsed.flags), (remote(), local(), SYN));
    // Other ports and non-SYN segments of unknown flows still go to the kernel.
    let other = SocketAddrV4::new(*local().ip(), LISTEN_PORT + 1);
    assert_eq!(run(&from_peer(other, SYN, &[])), XDP_PASS);
    assert_eq!(run(&from_peer(local(), ACK, b"x")), XDP_PASS);
    assert_eq!(run(&from_peer(local(), SYN | ACK, &[])), XDP_PASS);
    assert!(take().is_empty());

    // A handshake the daemon runs: SYN-ACK, RST, the final ACK, early data and FIN are its.
    let key = key_of(local(), remote());
    handles.pending.update(as_bytes(&key), &0u32.to_ne_bytes(), MapFlags::ANY).unwrap();
    let frames = [
        from_peer(local(), SYN | ACK, &[]),
        from_peer(local(), RST | ACK, &[]),
        from_peer(local(), ACK, &[]),
        from_peer(local(), ACK, b"early data"),
        from_peer(local(), ACK | FIN, &[]),
    ];
    for f in &frames {
        assert_eq!(run(f), XDP_DROP);
    }
    assert_eq!(take(), frames.to_vec());
    handles.pending.delete(as_bytes(&key)).unwrap();
    handles.listen.delete(&port).unwrap();

    // Data is copied whole, up to a full-sized frame (the daemon replays it once the
    // connection is established); a control segment only up to the head limit. The whole
    // length is reported. A segment longer than our MSS allows is dropped before (tcp_oversize).
    handles.pending.update(as_bytes(&key), &0u32.to_ne_bytes(), MapFlags::ANY).unwrap();
    let full = from_peer(local(), ACK | FIN, &[7; 1460]);
    assert_eq!(full.len(), FRAME);
    let long_rst = from_peer(local(), RST | ACK, &[7; 1000]);
    let jumbo = from_peer(local(), ACK, &[7; 2000]);
    for f in [&full, &long_rst, &jumbo] {
        assert_eq!(run(f), XDP_DROP);
    }
    assert_eq!(take(), vec![full, long_rst[..CAPTURE].to_vec()]);
    handles.pending.delete(as_bytes(&key)).unwrap();

    // An established connection: its SYN and RST are the daemon's too (the kernel has no
    // socket for it and would RST the SYN).
    h.set_conn(&key, &tcp_conn::default());
    let (syn2, rst) = (from_peer(local(), SYN, &[]), from_peer(local(), RST, &[]));
    assert_eq!(run(&syn2), XDP_DROP);
    assert_eq!(run(&rst), XDP_DROP);
    assert_eq!(take(), vec![syn2, rst]);
}

/// Segments corrupted on the way never reach the daemon (it gets only their head and could not
/// check them): a SYN to a listening port, a handshake's final ACK with data, a SYN and a RST of
/// an established connection, each with one byte changed, are dropped and counted by reason,
/// and the ring stays empty. The intact frames still get through.
#[test]
fn corrupted_segments_never_reach_the_daemon() {
    use common::fixture::drop_total;

    let mut storage = ObjectStorage::default();
    let h = Harness::new(&mut storage);
    let id = libbpf_rs::Program::id_from_fd(h.objs.entrance.progs.etran_entrance.as_fd());
    let handles = tcp_handles(id.unwrap()).expect("TCP handles");
    let got: Rc<RefCell<usize>> = Rc::default();
    let sink = got.clone();
    let mut builder = RingBufferBuilder::new();
    builder
        .add(&handles.slow, move |_: &[u8]| {
            *sink.borrow_mut() += 1;
            0
        })
        .unwrap();
    let ring = builder.build().unwrap();
    let records = || {
        ring.consume().unwrap();
        std::mem::take(&mut *got.borrow_mut())
    };
    let entrance = &h.objs.entrance.progs.etran_entrance;
    handles.listen.update(&LISTEN_PORT.to_be_bytes(), &0u32.to_ne_bytes(), MapFlags::ANY).unwrap();
    let pending = key_of(local(), SocketAddrV4::new(*remote().ip(), 40001));
    handles.pending.update(as_bytes(&pending), &0u32.to_ne_bytes(), MapFlags::ANY).unwrap();
    let established = key_of(local(), SocketAddrV4::new(*remote().ip(), 40002));
    h.set_conn(&established, &tcp_conn::default());
    let from = |port: u16, flags: u8, payload: &[u8]| {
        let seg = Segment::parse(&from_peer(local(), flags, payload)).unwrap();
        Segment { src: SocketAddrV4::new(*remote().ip(), port), ..seg }.build()
    };
    // (frame, byte to corrupt, the reason it is dropped for)
    let cases = [
        (from(40000, SYN, &[]), 14 + 20 + 4, "tcp_bad_csum"), // the sequence number
        (from(40000, SYN, &[]), 14 + 8, "bad_ip_csum"),       // the TTL
        (from(40001, ACK, b"early data"), 14 + 20 + 20 + 3, "tcp_bad_csum"),
        (from(40001, ACK, &[]), 14 + 20 + 13, "tcp_bad_csum"), // a FIN appears
        (from(40002, SYN, &[]), 14 + 20 + 14, "tcp_bad_csum"), // the window
        (from(40002, RST, &[]), 14 + 20 + 9, "tcp_bad_csum"),  // the ACK number
    ];
    for (frame, at, reason) in cases {
        assert!(Segment::checksums_ok(&frame), "the intact frame verifies");
        let mut bad = frame.clone();
        bad[at] ^= 0x01;
        let before = h.counters();
        assert_eq!(h.run(entrance, &bad, LO).verdict, XDP_DROP, "{reason} at {at}");
        let after = h.counters();
        assert_eq!(drop_total(&after, reason) - drop_total(&before, reason), 1, "{reason} at {at}");
        assert_eq!(records(), 0, "a corrupted frame reached the daemon ({reason} at {at})");
        assert_eq!(h.run(entrance, &frame, LO).verdict, XDP_DROP);
        assert_eq!(records(), 1, "the intact frame reaches the daemon");
    }
}
