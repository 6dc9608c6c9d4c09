//! Ethernet + IPv4 + TCP frames the daemon's slow path parses (SYN, SYN-ACK, RST, the final ACK
//! of a handshake) and builds itself (SYN, SYN-ACK, ACK, RST), with correct IPv4 and TCP
//! checksums. Only what the slow path needs: no IP options on build, no fragments. The fast path
//! writes headers with its own code (tcp_tx.h); tests/fixtures/tcp_gen.rs pins the two to the
//! same bytes for a pure ACK.
use crate::checksum::{checksum, sum16};
use std::{fmt, net::SocketAddrV4};

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const TCP_LEN: usize = 20;
const ETHERTYPE_IPV4: u16 = 0x0800;
const IPPROTO_TCP: u8 = 6;
/// (local, remote) of a connection: the addresses a segment's flow is known by.
pub type FlowKey = (SocketAddrV4, SocketAddrV4);

/// Largest TCP option block (data offset 15 words).
pub const MAX_OPTIONS: usize = 40;

/// One TCP segment with the Ethernet and IPv4 fields the slow path cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// IPv4 source address and TCP source port.
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// IPv4 TOS byte (DSCP and ECN bits).
    pub tos: u8,
    pub ip_id: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Raw option bytes; `build` pads them with EOL to a multiple of 4.
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Default for Segment {
    /// Zero addresses, ports, flags and MACs: a base for `..Segment::default()`.
    fn default() -> Self {
        let zero = SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0);
        Segment {
            src_mac: [0; 6],
            dst_mac: [0; 6],
            src: zero,
            dst: zero,
            tos: 0,
            ip_id: 0,
            seq: 0,
            ack: 0,
            flags: 0,
            window: 0,
            options: Vec::new(),
            payload: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    Truncated,
    NotIpv4,
    NotTcp,
    /// Header lengths or the IPv4 total length do not fit the frame.
    BadLength,
    /// A fragment: the slow path does not reassemble.
    Fragment,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Truncated => "frame too short",
            ParseError::NotIpv4 => "not IPv4",
            ParseError::NotTcp => "not TCP",
            ParseError::BadLength => "inconsistent header lengths",
            ParseError::Fragment => "IPv4 fragment",
        })
    }
}

impl std::error::Error for ParseError {}

fn pseudo_sum(src: SocketAddrV4, dst: SocketAddrV4, tcp_len: usize) -> u32 {
    let mut p = [0u8; 12];
    p[0..4].copy_from_slice(&src.ip().octets());
    p[4..8].copy_from_slice(&dst.ip().octets());
    p[9] = IPPROTO_TCP;
    p[10..12].copy_from_slice(&(tcp_len as u16).to_be_bytes());
    sum16(0, &p)
}

impl Segment {
    /// Sequence space the segment occupies: payload plus one each for SYN and FIN.
    pub fn seq_len(&self) -> u32 {
        self.payload.len() as u32
            + u32::from(self.flags & SYN != 0)
            + u32::from(self.flags & FIN != 0)
    }

    pub fn has(&self, flags: u8) -> bool {
        self.flags & flags == flags
    }

    /// The whole Ethernet frame, checksums filled in.
    pub fn build(&self) -> Vec<u8> {
        assert!(self.options.len() <= MAX_OPTIONS, "TCP options longer than 40 bytes");
        let opt_len = self.options.len().div_ceil(4) * 4;
        let tcp_len = TCP_LEN + opt_len + self.payload.len();
        let ip_len = IPV4_LEN + tcp_len;
        let mut f = vec![0u8; ETH_LEN + ip_len];
        f[0..6].copy_from_slice(&self.dst_mac);
        f[6..12].copy_from_slice(&self.src_mac);
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());

        let ip = &mut f[ETH_LEN..ETH_LEN + IPV4_LEN];
        ip[0] = 0x45;
        ip[1] = self.tos;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&self.ip_id.to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = IPPROTO_TCP;
        ip[12..16].copy_from_slice(&self.src.ip().octets());
        ip[16..20].copy_from_slice(&self.dst.ip().octets());
        let csum = checksum(ip);
        ip[10..12].copy_from_slice(&csum.to_be_bytes());

        let tcp = &mut f[ETH_LEN + IPV4_LEN..];
        tcp[0..2].copy_from_slice(&self.src.port().to_be_bytes());
        tcp[2..4].copy_from_slice(&self.dst.port().to_be_bytes());
        tcp[4..8].copy_from_slice(&self.seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&self.ack.to_be_bytes());
        tcp[12] = (((TCP_LEN + opt_len) / 4) as u8) << 4;
        tcp[13] = self.flags;
        tcp[14..16].copy_from_slice(&self.window.to_be_bytes());
        tcp[TCP_LEN..TCP_LEN + self.options.len()].copy_from_slice(&self.options);
        tcp[TCP_LEN + opt_len..].copy_from_slice(&self.payload);
        let csum = !(sum16(pseudo_sum(self.src, self.dst, tcp_len), tcp) as u16);
        tcp[16..18].copy_from_slice(&csum.to_be_bytes());
        f
    }

    /// Parses an Ethernet frame (a prefix is enough as long as the IPv4 total length fits).
    pub fn parse(frame: &[u8]) -> Result<Segment, ParseError> {
        if frame.len() < ETH_LEN + IPV4_LEN {
            return Err(ParseError::Truncated);
        }
        if u16::from_be_bytes([frame[12], frame[13]]) != ETHERTYPE_IPV4 || frame[14] >> 4 != 4 {
            return Err(ParseError::NotIpv4);
        }
        let ip = &frame[ETH_LEN..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if ihl < IPV4_LEN || total < ihl + TCP_LEN || total > ip.len() {
            return Err(ParseError::BadLength);
        }
        if ip[9] != IPPROTO_TCP {
            return Err(ParseError::NotTcp);
        }
        if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
            return Err(ParseError::Fragment);
        }
        let addr = |o: usize| std::net::Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3]);
        let tcp = &ip[ihl..total];
        let doff = usize::from(tcp[12] >> 4) * 4;
        if doff < TCP_LEN || doff > tcp.len() {
            return Err(ParseError::BadLength);
        }
        let be16 = |o: usize| u16::from_be_bytes([tcp[o], tcp[o + 1]]);
        let be32 = |o: usize| u32::from_be_bytes([tcp[o], tcp[o + 1], tcp[o + 2], tcp[o + 3]]);
        Ok(Segment {
            dst_mac: frame[0..6].try_into().expect("6 bytes"),
            src_mac: frame[6..12].try_into().expect("6 bytes"),
            src: SocketAddrV4::new(addr(12), be16(0)),
            dst: SocketAddrV4::new(addr(16), be16(2)),
            tos: ip[1],
            ip_id: u16::from_be_bytes([ip[4], ip[5]]),
            seq: be32(4),
            ack: be32(8),
            flags: tcp[13],
            window: be16(14),
            options: tcp[TCP_LEN..doff].to_vec(),
            payload: tcp[doff..].to_vec(),
        })
    }

    /// Whether the IPv4 header and TCP checksums of `frame` verify.
    pub fn checksums_ok(frame: &[u8]) -> bool {
        let Ok(seg) = Segment::parse(frame) else { return false };
        let ip = &frame[ETH_LEN..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let tcp = &ip[ihl..total];
        sum16(0, &ip[..ihl]) == 0xffff
            && sum16(pseudo_sum(seg.src, seg.dst, tcp.len()), tcp) == 0xffff
    }

    /// The RST that answers `seg` when no connection takes it (RFC 9293 3.10.7.1): none for
    /// a RST; `seq = seg.ack` when it carries an ACK; otherwise RST|ACK acknowledging it.
    pub fn reset_for(seg: &Segment) -> Option<Segment> {
        if seg.flags & RST != 0 {
            return None;
        }
        let mut rst = Segment {
            src_mac: seg.dst_mac,
            dst_mac: seg.src_mac,
            src: seg.dst,
            dst: seg.src,
            ..Segment::default()
        };
        if seg.flags & ACK != 0 {
            rst.seq = seg.ack;
            rst.flags = RST;
        } else {
            rst.ack = seg.seq.wrapping_add(seg.seq_len());
            rst.flags = RST | ACK;
        }
        Some(rst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tcp::options::SynOptions;

    fn sample() -> Segment {
        Segment {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: "10.99.0.1:40000".parse().unwrap(),
            dst: "10.99.0.2:80".parse().unwrap(),
            tos: 0x02,
            ip_id: 7,
            seq: 0xfffffff0,
            ack: 5,
            flags: SYN | ECE | CWR,
            window: 64240,
            options: SynOptions { mss: Some(1460), wscale: Some(7), ..SynOptions::default() }
                .encode(),
            payload: b"hi!".to_vec(),
        }
    }

    #[test]
    fn build_parse_round_trip_with_valid_checksums() {
        let s = sample();
        let f = s.build();
        assert_eq!(f.len(), 14 + 20 + 20 + 8 + 3);
        assert!(Segment::checksums_ok(&f));
        assert_eq!(Segment::parse(&f).unwrap(), s);
        // Trailing Ethernet padding is ignored.
        let mut padded = f.clone();
        padded.extend_from_slice(&[0; 10]);
        assert_eq!(Segment::parse(&padded).unwrap(), s);
        // Any flipped bit in the IP or TCP part breaks a checksum.
        for i in 14..f.len() {
            let mut bad = f.clone();
            bad[i] ^= 0x10;
            if Segment::parse(&bad).is_ok() {
                assert!(!Segment::checksums_ok(&bad), "byte {i}");
            }
        }
    }

    #[test]
    fn checksum_matches_a_known_linux_syn() {
        // A SYN captured from Linux (10.0.0.1:33000 -> 10.0.0.2:5201, no options).
        let s = Segment {
            src: "10.0.0.1:33000".parse().unwrap(),
            dst: "10.0.0.2:5201".parse().unwrap(),
            seq: 1,
            flags: SYN,
            window: 1024,
            ..Segment::default()
        };
        let f = s.build();
        // Recompute independently: ones' complement of everything must verify to 0xffff.
        assert!(Segment::checksums_ok(&f));
        assert_eq!(&f[14 + 12..14 + 20], &[10, 0, 0, 1, 10, 0, 0, 2]);
    }

    #[test]
    fn odd_option_lengths_are_padded() {
        let s = Segment { options: vec![1, 1, 1], ..sample() };
        let f = s.build();
        let p = Segment::parse(&f).unwrap();
        assert_eq!(p.options, vec![1, 1, 1, 0]);
        assert!(Segment::checksums_ok(&f));
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let f = sample().build();
        for n in 0..f.len() {
            let _ = Segment::parse(&f[..n]);
        }
        assert_eq!(Segment::parse(&f[..20]), Err(ParseError::Truncated));
        let mut udp = f.clone();
        udp[14 + 9] = 17;
        assert_eq!(Segment::parse(&udp), Err(ParseError::NotTcp));
        let mut frag = f.clone();
        frag[14 + 6] = 0x20; // MF
        assert_eq!(Segment::parse(&frag), Err(ParseError::Fragment));
        let mut doff = f.clone();
        doff[14 + 20 + 12] = 0xf0;
        assert_eq!(Segment::parse(&doff), Err(ParseError::BadLength));
        let mut v6 = f;
        v6[12] = 0x86;
        assert_eq!(Segment::parse(&v6), Err(ParseError::NotIpv4));
    }

    #[test]
    fn reset_for_follows_rfc_9293() {
        let syn = Segment { flags: SYN, payload: vec![], ..sample() };
        let r = Segment::reset_for(&syn).unwrap();
        assert_eq!((r.flags, r.seq, r.ack), (RST | ACK, 0, syn.seq.wrapping_add(1)));
        assert_eq!((r.src, r.dst, r.src_mac), (syn.dst, syn.src, syn.dst_mac));
        let ack = Segment { flags: ACK, ack: 1234, ..sample() };
        let r = Segment::reset_for(&ack).unwrap();
        assert_eq!((r.flags, r.seq), (RST, 1234));
        assert!(Segment::reset_for(&Segment { flags: RST, ..sample() }).is_none());
    }
}
