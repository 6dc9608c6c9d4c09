//! Builds test frames: Ethernet, IPv4 (with a correct header checksum) and TCP/UDP/ICMP
//! headers, byte by byte, so fixtures say exactly what is on the wire; Homa packets through
//! etran's own encoder (`transport::homa::wire`), whose layouts are tested against upstream's.
pub use etran::transport::homa::wire::IPPROTO_HOMA;
use etran::transport::homa::wire::{Body, Common, Data, Packet};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

pub const SRC_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 1];
pub const DST_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 2];
pub const SRC_IP: [u8; 4] = [10, 99, 0, 1];
pub const DST_IP: [u8; 4] = [10, 99, 0, 2];

pub fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    eth_with(DST_MAC, SRC_MAC, ethertype, payload)
}

pub fn eth_with(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// RFC 1071 ones' complement sum. A plain loop over 32-bit words: the mutation fuzzers checksum
/// every frame, in debug builds, where iterator adapters cost ten times as much.
pub fn checksum(data: &[u8]) -> u16 {
    let (mut sum, mut i) = (0u64, 0);
    while i + 4 <= data.len() {
        sum += u64::from(u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]));
        i += 4;
    }
    let mut tail = [0u8; 4];
    tail[..data.len() - i].copy_from_slice(&data[i..]);
    sum += u64::from(u32::from_be_bytes(tail));
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A 20-byte IPv4 header followed by `payload`.
pub fn ipv4(protocol: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_with(&Ipv4 { protocol, ..Ipv4::default() }, payload)
}

/// The IPv4 header fields a test may choose (the flags are always DF).
#[derive(Clone, Copy, Debug)]
pub struct Ipv4 {
    pub tos: u8,
    pub id: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

impl Default for Ipv4 {
    fn default() -> Ipv4 {
        Ipv4 { tos: 0, id: 0x1234, ttl: 64, protocol: IPPROTO_TCP, src: SRC_IP, dst: DST_IP }
    }
}

pub fn ipv4_with(ip: &Ipv4, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut h = vec![0x45, ip.tos, 0, 0, 0, 0, 0x40, 0, ip.ttl, ip.protocol, 0, 0];
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&ip.id.to_be_bytes());
    h.extend_from_slice(&ip.src);
    h.extend_from_slice(&ip.dst);
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// A TCP header without options (checksum left zero: the entrance does not verify it, TCP
/// ingress does for frames it takes: see [`tcp_frame`]).
pub fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    tcp_segment(sport, dport, 1000, 0, flags, 0xffff, &[], payload)
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_ECE: u8 = 0x40;
pub const TCP_CWR: u8 = 0x80;

/// A TCP segment with every header field given; `options` must be a multiple of 4 bytes.
/// Checksum left zero (see [`with_tcp_checksum`], [`tcp_frame`]).
#[allow(clippy::too_many_arguments)]
pub fn tcp_segment(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0, "TCP options come in 4-byte words");
    let doff = (20 + options.len()) / 4;
    let mut h = Vec::with_capacity(20 + options.len() + payload.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&ack.to_be_bytes());
    h.extend_from_slice(&[(doff as u8) << 4, flags]);
    h.extend_from_slice(&window.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0]);
    h.extend_from_slice(options);
    h.extend_from_slice(payload);
    h
}

/// The TCP checksum of `segment` (its checksum field included: 0 when that field is right)
/// between `src` and `dst`: RFC 1071 over the pseudo-header (RFC 9293 3.1) and the segment.
pub fn tcp_checksum(src: [u8; 4], dst: [u8; 4], segment: &[u8]) -> u16 {
    let mut data = Vec::with_capacity(12 + segment.len());
    data.extend_from_slice(&src);
    data.extend_from_slice(&dst);
    data.extend_from_slice(&[0, IPPROTO_TCP]);
    data.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    data.extend_from_slice(segment);
    checksum(&data)
}

/// Fills the checksum field of a TCP segment built with a zero one.
pub fn with_tcp_checksum(src: [u8; 4], dst: [u8; 4], mut segment: Vec<u8>) -> Vec<u8> {
    let sum = tcp_checksum(src, dst, &segment);
    segment[16..18].copy_from_slice(&sum.to_be_bytes());
    segment
}

/// An Ethernet frame (SRC_MAC → DST_MAC) carrying `segment` from SRC_IP to DST_IP, with both
/// checksums filled in, as TCP ingress requires of every frame it takes.
pub fn tcp_frame(segment: Vec<u8>) -> Vec<u8> {
    eth(ETH_P_IP, &ipv4(IPPROTO_TCP, &with_tcp_checksum(SRC_IP, DST_IP, segment)))
}

/// Recomputes the IPv4 header checksum (over `ihl` words) and the TCP checksum (over what
/// `tot_len` says follows the IP header) of an Ethernet frame, whatever lies those fields tell:
/// a mutated frame then reaches the protocol checks instead of failing its checksums. Leaves a
/// checksum alone when the frame is too short for what it covers.
pub fn fix_checksums(frame: &mut [u8]) {
    if frame.len() < 14 + 20 {
        return;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    if ihl < 20 || 14 + ihl > frame.len() {
        return;
    }
    frame[24..26].fill(0);
    let sum = checksum(&frame[14..14 + ihl]);
    frame[24..26].copy_from_slice(&sum.to_be_bytes());
    let tot = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    if tot < ihl + 18 || 14 + tot > frame.len() {
        return;
    }
    let (src, dst) = (frame[26..30].try_into().unwrap(), frame[30..34].try_into().unwrap());
    let tcp = &mut frame[14 + ihl..14 + tot];
    tcp[16..18].fill(0);
    let sum = tcp_checksum(src, dst, tcp);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
}

/// Whether both checksums of an Ethernet/IPv4/TCP frame verify, judged as TCP ingress judges
/// them: the IPv4 header over its `ihl` words, the TCP checksum over what `tot_len` says follows
/// the IP header (trailing Ethernet padding left out). False for a frame whose headers do not
/// parse as ingress parses them (parse.h).
pub fn checksums_verify(frame: &[u8]) -> bool {
    if frame.len() < 14 + 20 || frame[12..14] != ETH_P_IP.to_be_bytes() || frame[14] >> 4 != 4 {
        return false;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let tot = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    if ihl < 20 || tot < ihl || 14 + tot > frame.len() || 14 + ihl + 20 > frame.len() {
        return false;
    }
    let doff = usize::from(frame[14 + ihl + 12] >> 4) * 4;
    if doff < 20 || 14 + ihl + doff > frame.len() {
        return false;
    }
    let (src, dst) = (frame[26..30].try_into().unwrap(), frame[30..34].try_into().unwrap());
    checksum(&frame[14..14 + ihl]) == 0 && tcp_checksum(src, dst, &frame[14 + ihl..14 + tot]) == 0
}

/// Checks a frame's checksums on their own (RFC 1071: IPv4 header, TCP over the pseudo-header)
/// and that tot_len covers it; returns its TCP segment.
pub fn checked_tcp_segment(frame: &[u8]) -> &[u8] {
    assert!(frame.len() >= 14 + 20 + 20, "a whole header stack: {frame:02x?}");
    let ip = &frame[14..34];
    assert_eq!(checksum(ip), 0, "IPv4 header checksum");
    let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    assert_eq!(tot, frame.len() - 14, "tot_len covers the frame");
    let seg = &frame[34..];
    let (src, dst) = (ip[12..16].try_into().unwrap(), ip[16..20].try_into().unwrap());
    assert_eq!(tcp_checksum(src, dst, seg), 0, "TCP checksum");
    seg
}

/// The timestamp option as Linux lays it out: NOP, NOP, kind 8, length 10, TSval, TSecr.
pub fn tcp_ts_option(val: u32, ecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&val.to_be_bytes());
    o.extend_from_slice(&ecr.to_be_bytes());
    o
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(8 + payload.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

/// A Homa DATA packet holding a whole message, `payload`.
pub fn homa_data(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let data = Data {
        message_length: len,
        incoming: len,
        ack: None,
        cutoff_version: 0,
        retransmit: false,
        offset: 0,
        payload,
    };
    let mut b = Vec::new();
    Packet { common: Common { sport, dport, sender_id: 42 }, body: Body::Data(data) }
        .encode(&mut b);
    b
}

pub fn icmp_echo() -> Vec<u8> {
    let mut h = vec![8, 0, 0, 0, 0, 1, 0, 1];
    let sum = checksum(&h);
    h[2..4].copy_from_slice(&sum.to_be_bytes());
    h
}

pub fn arp_request() -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&SRC_MAC);
    a.extend_from_slice(&SRC_IP);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&DST_IP);
    a
}

/// A minimal IPv6 header (next header: no next header) with no payload.
pub fn ipv6() -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0, 0, 0, 59, 64];
    h.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    h.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    h
}
