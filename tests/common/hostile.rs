//! A hostile app for the protection tests: registered with the daemon like any app (its own app
//! port, UMEM and AF_XDP socket, mapped by the app library's [`AppPort`]), with a connection of
//! its own through the daemon, it writes whatever frames it likes into its TX ring: other apps'
//! 4-tuples, forged positions and consumption reports, bogus intents, lying lengths, raw
//! Ethernet segments, random bytes. [`Forgery`] names each kind and the egress drop reason it
//! must meet. Its port must run at an MTU that carries a payload longer than any frame may
//! carry (`ETRAN_TCP_MAX_PAYLOAD`): the largest one.
use std::{net::SocketAddrV4, path::Path};

use etran::{
    app::{AppPort, DaemonLink, StreamInit},
    bpf::tcp::types::{etran_tcp_limit, etran_tcp_rx_meta, etran_tcp_tx_hdr, tcp_conn_key},
    proto::{ConnInit, Transport},
    transport::tcp::{
        segment::{Segment, ACK, RST, SYN},
        stream::{
            write_hdr, INTENT_ACK, INTENT_DATA, INTENT_FIN, INTENT_PROBE, INTENT_RETRANSMIT,
            INTENT_WINDOW_UPDATE, TX_HDR_LEN, TX_PUSH, TX_WINDOW_LIMITED,
        },
    },
};

use crate::fixture::Rng;

const MAX_PAYLOAD: usize = etran_tcp_limit::ETRAN_TCP_MAX_PAYLOAD.0 as usize;
/// How far past the port's longest frame random bytes surely stay away from egress. The veth
/// drops a frame longer than its MTU, an Ethernet header and a VLAN tag before its XDP program
/// (egress) runs (measured at MTU 1500: every frame of up to 1518 bytes reached egress, none of
/// 1519 to 2048 bytes filled with one byte value; random bytes 86 or more past 1514, rarely).
const BEYOND_MTU: usize = 86;

/// What a hostile app writes into its TX ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgery {
    /// Another app's 4-tuple with a well-formed frame of any intent, at that connection's own
    /// position, with a huge consumption report.
    OtherAppsConn,
    /// A 4-tuple no connection has.
    UnknownConn,
    /// Its own connection, an intent that does not exist.
    BogusIntent,
    /// Its own connection, a TX header flag bit no flag uses set.
    Reserved,
    /// Its own connection, a `len` that is not the frame's payload length.
    LyingLen,
    /// Its own connection, more payload than any frame may carry (the frame as long).
    Oversize,
    /// Random bytes longer than the port's MTU allows: the kernel drops them before egress
    /// (nearly always; egress drops the rest).
    LongerThanMtu,
    /// Its own connection, more payload than its MSS (within the largest frame).
    OverMss,
    /// An Ethernet-sized frame shorter than a TX header.
    Undersize,
    /// Its own connection, new data that does not start at its position.
    StalePosition,
    /// Its own connection, a retransmission of bytes never sent.
    RetransmitUnsent,
    /// A raw Ethernet/IPv4/TCP segment (RST or SYN, checksums right) aimed at the peer of
    /// another app's connection, as if the TX ring took wire frames.
    RawSegment,
    /// Random bytes of random length.
    Random,
}

impl Forgery {
    pub const ALL: [Forgery; 13] = [
        Forgery::OtherAppsConn,
        Forgery::UnknownConn,
        Forgery::BogusIntent,
        Forgery::Reserved,
        Forgery::LyingLen,
        Forgery::Oversize,
        Forgery::LongerThanMtu,
        Forgery::OverMss,
        Forgery::Undersize,
        Forgery::StalePosition,
        Forgery::RetransmitUnsent,
        Forgery::RawSegment,
        Forgery::Random,
    ];

    /// Whether the frame surely reaches egress.
    pub fn reaches_egress(self) -> bool {
        self != Forgery::LongerThanMtu
    }

    /// The egress drop reason the frame must meet (any `tcp_tx_*` one for random bytes, if they
    /// reach egress at all).
    pub fn reason(self) -> Option<&'static str> {
        Some(match self {
            Forgery::OtherAppsConn => "tcp_tx_wrong_owner",
            Forgery::UnknownConn => "tcp_tx_unknown_conn",
            Forgery::BogusIntent
            | Forgery::Reserved
            | Forgery::LyingLen
            | Forgery::Oversize
            | Forgery::RawSegment => "tcp_tx_bad_hdr",
            Forgery::OverMss => "tcp_tx_over_mss",
            Forgery::Undersize => "tcp_tx_short",
            Forgery::StalePosition => "tcp_tx_stale",
            Forgery::RetransmitUnsent => "tcp_tx_retx_range",
            Forgery::Random | Forgery::LongerThanMtu => return None,
        })
    }
}

/// What the hostile app knows of the connection it attacks (the 4-tuple is on the wire for
/// anyone on the path to see; the position is the honest app's own, the most plausible forgery).
#[derive(Debug, Clone, Copy)]
pub struct Victim {
    pub key: tcp_conn_key,
    pub tx_pos: u32,
    pub local_mac: [u8; 6],
    pub remote_mac: [u8; 6],
}

pub struct Hostile {
    /// Held: ending the link would tear its port and connection down.
    pub link: DaemonLink,
    pub port: AppPort,
    /// The longest frame that surely reaches the kernel side of its port: the MTU of the port's
    /// veths and an Ethernet header.
    pub max_frame: usize,
    /// Its own connection, as the daemon handed it over. It never sends new data on it, so
    /// its send position stays `init.tx_pos`.
    pub init: ConnInit,
}

impl Hostile {
    /// Registers with the daemon at `sock`, whose app ports' veths have MTU `veth_mtu`, and
    /// opens a connection to `remote`.
    pub fn connect(sock: &Path, veth_mtu: u32, remote: SocketAddrV4) -> Hostile {
        let max_frame = veth_mtu as usize + 14;
        assert!(
            max_frame - TX_HDR_LEN > MAX_PAYLOAD,
            "a port of MTU {veth_mtu} cannot carry an oversize payload to egress"
        );
        let mut link = DaemonLink::connect(sock).unwrap();
        let reg = link.register(Transport::Tcp, 1).unwrap();
        let port = AppPort::open(reg).unwrap();
        assert!(port.frame_size() as usize > max_frame + BEYOND_MTU, "room for LongerThanMtu");
        let (_, init) = link.connect_tcp(remote, None).expect("the hostile app connects");
        Hostile { link, port, max_frame, init }
    }

    pub fn key(&self) -> tcp_conn_key {
        StreamInit::from(&self.init).key
    }

    /// Writes `frame` into the TX ring as it is, waiting for a free TX frame if need be.
    pub fn send_raw(&mut self, frame: &[u8]) {
        assert!(!frame.is_empty() && frame.len() <= self.port.frame_size() as usize);
        while !self.port.can_send() {
            self.port.flush().unwrap();
        }
        let sent = self.port.send_with(|buf| {
            buf[..frame.len()].copy_from_slice(frame);
            Some(frame.len())
        });
        assert_eq!(sent.unwrap(), Some(frame.len()), "a TX frame was free");
    }

    /// Kicks the kernel and drops whatever arrived for it.
    pub fn flush(&mut self) {
        self.port.flush().unwrap();
        self.port.poll_rx(|_: &etran_tcp_rx_meta, _, _| {}).unwrap();
    }

    /// Kicks the kernel until every frame written came back on the completion ring: in copy
    /// mode each kick sends a batch, and a frame completes once the port's kernel side (egress)
    /// is done with it.
    pub fn drain(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.port.tx_frames().allocated() > 0 {
            assert!(std::time::Instant::now() < deadline, "TX frames never completed");
            self.flush();
        }
    }

    /// A TX header on its own connection.
    fn own(&self, intent: u8, tx_pos: u32, len: u16) -> etran_tcp_tx_hdr {
        etran_tcp_tx_hdr { key: self.key(), tx_pos, read_pos: 0, len, intent, flags: 0 }
    }

    /// A frame of kind `f` (see [`Forgery`]), aimed at `victim` where it names a connection.
    pub fn forge(&self, f: Forgery, victim: &Victim, rng: &mut Rng) -> Vec<u8> {
        let payload = |rng: &mut Rng, n: usize| (0..n).map(|_| rng.next_u64() as u8).collect();
        let frame = |h: etran_tcp_tx_hdr, body: Vec<u8>| {
            let mut f = vec![0u8; TX_HDR_LEN];
            write_hdr(&mut f, &h);
            f.extend_from_slice(&body);
            f
        };
        let any_len = |rng: &mut Rng| 1 + rng.below(MAX_PAYLOAD);
        match f {
            Forgery::OtherAppsConn => {
                let intent = [
                    INTENT_DATA,
                    INTENT_RETRANSMIT,
                    INTENT_ACK,
                    INTENT_WINDOW_UPDATE,
                    INTENT_FIN,
                    INTENT_PROBE,
                ][rng.below(6)];
                let len = if matches!(intent, INTENT_DATA | INTENT_RETRANSMIT) {
                    any_len(rng)
                } else {
                    0
                };
                let pos = if intent == INTENT_RETRANSMIT {
                    victim.tx_pos.wrapping_sub(len as u32)
                } else {
                    victim.tx_pos
                };
                let h = etran_tcp_tx_hdr {
                    key: victim.key,
                    tx_pos: pos,
                    read_pos: u32::MAX,
                    len: len as u16,
                    intent,
                    flags: 0,
                };
                frame(h, payload(rng, len))
            }
            Forgery::UnknownConn => {
                let mut h = self.own(INTENT_DATA, self.init.tx_pos, 10);
                h.key.remote_port = (1 + rng.below(1000) as u16).to_be();
                frame(h, payload(rng, 10))
            }
            Forgery::BogusIntent => {
                let mut h = self.own(0, self.init.tx_pos, 0);
                h.intent = [0, 7, 8, 0x80, 0xff][rng.below(5)];
                frame(h, Vec::new())
            }
            Forgery::Reserved => {
                let mut h = self.own(INTENT_ACK, self.init.tx_pos, 0);
                // Random bits, one of bits 2-7 among them: no flag uses those.
                const _: () = assert!(TX_WINDOW_LIMITED | TX_PUSH == 0b11);
                h.flags = rng.below(256) as u8 | 4 << rng.below(6);
                frame(h, Vec::new())
            }
            Forgery::LyingLen => {
                let real = 1 + rng.below(200);
                let len = [real + 1, real - 1, real + 1000, 0xffff][rng.below(4)];
                frame(self.own(INTENT_DATA, self.init.tx_pos, len as u16), payload(rng, real))
            }
            Forgery::Oversize => {
                let len = MAX_PAYLOAD + 1 + rng.below(self.max_frame - TX_HDR_LEN - MAX_PAYLOAD);
                frame(self.own(INTENT_DATA, self.init.tx_pos, len as u16), payload(rng, len))
            }
            Forgery::OverMss => {
                let mss = usize::from(self.init.mss);
                assert!(mss < MAX_PAYLOAD, "the connection's MSS leaves room to exceed it");
                let len = mss + 1 + rng.below(MAX_PAYLOAD - mss);
                frame(self.own(INTENT_DATA, self.init.tx_pos, len as u16), payload(rng, len))
            }
            Forgery::Undersize => {
                let len = 14 + rng.below(TX_HDR_LEN - 14);
                payload(rng, len)
            }
            Forgery::StalePosition => {
                let ahead = 1 + rng.below(1 << 20) as u32;
                let pos = self.init.tx_pos.wrapping_add(ahead);
                frame(self.own(INTENT_DATA, pos, 100), payload(rng, 100))
            }
            Forgery::RetransmitUnsent => {
                let pos = self.init.tx_pos.wrapping_sub(rng.below(1000) as u32);
                frame(self.own(INTENT_RETRANSMIT, pos, 100), payload(rng, 100))
            }
            Forgery::RawSegment => {
                let k = victim.key;
                let len = rng.below(100);
                let addr = |ip: u32, port: u16| {
                    SocketAddrV4::new(ip.to_ne_bytes().into(), u16::from_be(port))
                };
                Segment {
                    src_mac: victim.local_mac,
                    dst_mac: victim.remote_mac,
                    src: addr(k.local_ip, k.local_port),
                    dst: addr(k.remote_ip, k.remote_port),
                    seq: rng.next_u64() as u32,
                    ack: rng.next_u64() as u32,
                    flags: [RST, RST | ACK, SYN][rng.below(3)],
                    window: 65535,
                    payload: payload(rng, len),
                    ..Segment::default()
                }
                .build()
            }
            Forgery::LongerThanMtu => {
                let shortest = self.max_frame + BEYOND_MTU;
                let len = shortest + rng.below(self.port.frame_size() as usize - shortest + 1);
                payload(rng, len)
            }
            Forgery::Random => {
                let len = 14 + rng.below(self.max_frame - 14 + 1);
                payload(rng, len)
            }
        }
    }

    /// A valid frame of its own connection: a pure ACK or window update with a forged
    /// consumption report (any read position). Egress sends it: the connection is the app's to
    /// ruin.
    pub fn own_control(&self, rng: &mut Rng) -> Vec<u8> {
        let intent = [INTENT_ACK, INTENT_WINDOW_UPDATE][rng.below(2)];
        let mut h = self.own(intent, self.init.tx_pos, 0);
        h.read_pos = rng.next_u64() as u32;
        let mut f = vec![0u8; TX_HDR_LEN];
        write_hdr(&mut f, &h);
        f
    }
}
