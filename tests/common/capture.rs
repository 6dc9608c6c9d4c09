//! Packet captures for interop tests: every frame an interface of a namespace sends and
//! receives, taken with an AF_PACKET socket on a thread, written as a pcap file for Wireshark
//! (`tshark -z expert`), and checked by our own reading of the TCP streams in it.
//!
//! Where to capture: frames etran's XDP programs redirect never become skbs, so no packet tap
//! sees them on an etran host; a host whose TCP is Linux's sees every frame of its own flows (its
//! received frames were XDP_PASSed, its sent ones went through the stack).
use std::{
    collections::{HashMap, HashSet},
    io::Write,
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::netns::{in_netns, RawSocket};
use crate::packet::checksum;

/// One captured frame and when it was seen.
pub struct Frame {
    pub at: Duration,
    pub data: Vec<u8>,
}

/// A capture running on a thread until [`Capture::stop`].
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Frame>>>,
}

impl Capture {
    /// Starts capturing on `iface` of namespace `ns`; returns once the socket is open, so no
    /// frame sent after this call is missed.
    pub fn start(ns: &str, iface: &str) -> Capture {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (ns, iface, flag) = (ns.to_string(), iface.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            in_netns(&ns, || {
                let sock = RawSocket::open(&iface);
                // Bulk transfers come in bursts faster than this thread reads.
                sock.set_rcvbuf(64 << 20);
                ready_tx.send(()).unwrap();
                let mut frames = Vec::new();
                while !flag.load(Ordering::Relaxed) {
                    while let Some(data) = sock.recv(50) {
                        let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
                        frames.push(Frame { at, data });
                    }
                }
                frames
            })
        });
        ready_rx.recv().expect("capture thread started");
        Capture { stop, thread: Some(thread) }
    }

    /// Stops the capture and returns its frames.
    pub fn stop(mut self) -> Vec<Frame> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("capture thread")
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes `frames` as a pcap file (Ethernet link type, microsecond timestamps).
pub fn write_pcap(path: &Path, frames: &[Frame]) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create pcap"));
    let mut head = Vec::new();
    head.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    head.extend_from_slice(&2u16.to_le_bytes());
    head.extend_from_slice(&4u16.to_le_bytes());
    head.extend_from_slice(&[0; 8]); // thiszone, sigfigs
    head.extend_from_slice(&65535u32.to_le_bytes());
    head.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    out.write_all(&head).unwrap();
    for f in frames {
        let mut rec = Vec::with_capacity(16);
        rec.extend_from_slice(&(f.at.as_secs() as u32).to_le_bytes());
        rec.extend_from_slice(&f.at.subsec_micros().to_le_bytes());
        rec.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
        rec.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
        out.write_all(&rec).unwrap();
        out.write_all(&f.data).unwrap();
    }
    out.flush().unwrap();
}

/// Wireshark's expert information for a capture (`tshark -z expert`, checksums validated):
/// summary → count, e.g. "This frame is a (suspected) retransmission" → 12. None when tshark is
/// not installed.
pub fn tshark_expert(pcap: &Path) -> Option<HashMap<String, u64>> {
    let out = std::process::Command::new("tshark")
        .args(["-n", "-q", "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE"])
        .args(["-z", "expert", "-r"])
        .arg(pcap)
        .output()
        .ok()?;
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    Some(parse_expert(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses the tables of `tshark -z expert`: rows of "Frequency  Group  Protocol  Summary"
/// under each severity heading. Counts of the same summary under different groups add up.
pub fn parse_expert(text: &str) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(n) = fields.next().and_then(|f| f.parse::<u64>().ok()) else { continue };
        let rest: Vec<&str> = fields.collect();
        // Group and protocol are one word each; the summary is the rest.
        if rest.len() < 3 {
            continue;
        }
        // A summary's bracketed detail ("Bad checksum [should be 0x1234]") differs per frame:
        // counted under the summary alone, as one line.
        let summary = rest[2..].join(" ");
        let summary = summary.split(" [").next().unwrap_or_default().to_owned();
        *counts.entry(summary).or_default() += n;
    }
    counts
}

/// One direction of a TCP connection, by its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Direction {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
}

/// What our own reading of a capture found in one direction.
#[derive(Debug, Default, Clone)]
pub struct DirectionReport {
    pub frames: u64,
    /// Frames with a wrong IPv4 or TCP checksum (corrupted on the way, or sent so).
    pub bad_checksum: u64,
    /// Exact copies of a frame seen before (same IP id and bytes): the switch's duplicates.
    pub duplicates: u64,
    pub data_segments: u64,
    /// Data segments whose bytes had all been seen before in a frame with valid checksums:
    /// retransmissions the receiver did not need, unless that frame was dropped later on the
    /// way (a capture on the receiving host sees frames after the switch).
    pub resent_seen: u64,
    /// Data segments covering some bytes not seen before after a gap: the first copy was lost
    /// before the capture point.
    pub resent_after_gap: u64,
    /// ACK-bearing frames whose advertised right edge (ack + window << scale) lies before one
    /// advertised earlier: window shrinks (RFC 9293 3.8.6.2.1).
    pub window_shrinks: u64,
    pub largest_shrink: u32,
    /// Frames that arrived after a frame the sender sent later (IP ids count up per
    /// connection): a copy the switch duplicated through its slower path, its original lost.
    /// Their windows are stale, so they are not judged for shrinking.
    pub reordered: u64,
    pub resets: u64,
    /// The MSS option of the direction's SYN (or SYN-ACK).
    pub mss: Option<u16>,
    /// The longest IPv4 packet (total length) with valid checksums: at most the path's MTU.
    pub largest_packet: u32,
    /// Packets the receiver's GRO merged from several segments (payload beyond every MSS),
    /// read for their bytes only.
    pub gro_merged: u64,
}

struct Parsed<'a> {
    dir: Direction,
    ip_id: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: &'a [u8],
    payload_len: u32,
    ip_len: u32,
    checksums_ok: bool,
}

fn parse(frame: &[u8]) -> Option<Parsed<'_>> {
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[0] >> 4 != 4 || ip[9] != 6 || ihl < 20 || tot < ihl + 20 || tot > ip.len() {
        return None;
    }
    let tcp = &ip[ihl..tot];
    let doff = usize::from(tcp[12] >> 4) * 4;
    if doff < 20 || doff > tcp.len() {
        return None;
    }
    let addr = |o: usize| Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3]);
    let port = |o: usize| u16::from_be_bytes([tcp[o], tcp[o + 1]]);
    let mut pseudo = Vec::with_capacity(12 + tcp.len());
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(tcp);
    Some(Parsed {
        dir: Direction {
            src: SocketAddrV4::new(addr(12), port(0)),
            dst: SocketAddrV4::new(addr(16), port(2)),
        },
        ip_id: u16::from_be_bytes([ip[4], ip[5]]),
        seq: u32::from_be_bytes(tcp[4..8].try_into().unwrap()),
        ack: u32::from_be_bytes(tcp[8..12].try_into().unwrap()),
        flags: tcp[13],
        window: u16::from_be_bytes([tcp[14], tcp[15]]),
        options: &tcp[20..doff],
        payload_len: (tcp.len() - doff) as u32,
        ip_len: tot as u32,
        checksums_ok: checksum(&ip[..ihl]) == 0 && checksum(&pseudo) == 0,
    })
}

/// The value of option `kind` whose whole length is `len` among a SYN's options.
fn option_of(options: &[u8], want: u8, want_len: u8) -> Option<&[u8]> {
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = *options.get(i + 1)?;
                if len < 2 {
                    break;
                }
                if kind == want && len == want_len {
                    return options.get(i + 2..i + usize::from(len));
                }
                i += usize::from(len);
            }
        }
    }
    None
}

/// The window scale a SYN's options announce (0 when absent).
fn wscale_of(options: &[u8]) -> u8 {
    option_of(options, 3, 3).map_or(0, |v| v[0].min(14))
}

/// The MSS a SYN's options announce.
fn mss_of(options: &[u8]) -> Option<u16> {
    option_of(options, 2, 4).map(|v| u16::from_be_bytes([v[0], v[1]]))
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// Byte ranges seen, as offsets from the stream's first sequence number: sorted, disjoint.
#[derive(Default)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    /// Bytes of [start, end) already covered.
    pub fn covered(&self, start: u64, end: u64) -> u64 {
        self.0.iter().map(|&(a, b)| b.min(end).saturating_sub(a.max(start))).sum()
    }

    pub fn insert(&mut self, start: u64, end: u64) {
        let (mut start, mut end) = (start, end);
        self.0.retain(|&(a, b)| {
            let touches = a <= end && start <= b;
            if touches {
                start = start.min(a);
                end = end.max(b);
            }
            !touches
        });
        let at = self.0.partition_point(|&(a, _)| a < start);
        self.0.insert(at, (start, end));
    }

    fn high(&self) -> u64 {
        self.0.last().map_or(0, |r| r.1)
    }
}

#[derive(Default)]
struct DirectionState {
    report: DirectionReport,
    wscale: u8,
    /// The sequence number offsets count from (the SYN's, else the first one seen).
    base: Option<u32>,
    /// The highest offset seen, unwrapped: sequence numbers wrap, a capture's offsets do not.
    last: u64,
    ranges: Ranges,
    right_edge: Option<u32>,
    seen: HashSet<(u16, u32, u32)>,
    last_ip_id: Option<u16>,
}

impl DirectionState {
    /// The offset of `seq`, unwrapped near the last one seen.
    fn offset(&mut self, seq: u32) -> u64 {
        let base = *self.base.get_or_insert(seq);
        let low = seq.wrapping_sub(base);
        let mut off = (self.last & !0xffff_ffff) | u64::from(low);
        if off + (1 << 31) < self.last {
            off += 1 << 32;
        } else if off > self.last + (1 << 31) && off >= 1 << 32 {
            off -= 1 << 32;
        }
        self.last = self.last.max(off);
        off
    }
}

/// Reads the TCP streams of a capture, per direction.
pub fn analyse(frames: &[Frame]) -> HashMap<Direction, DirectionReport> {
    let mut dirs: HashMap<Direction, DirectionState> = HashMap::new();
    let mut largest_mss: Option<u32> = None; // of the SYNs seen, either way
    for f in frames {
        let Some(p) = parse(&f.data) else { continue };
        let d = dirs.entry(p.dir).or_default();
        d.report.frames += 1;
        if !d.seen.insert((p.ip_id, p.seq, p.ack)) {
            d.report.duplicates += 1;
            continue;
        }
        // More payload than any MSS allows: the receiver's GRO merged segments it had verified
        // (a capture on the receiving host sees packets after GRO), and the merged packet keeps
        // the first one's TCP checksum. Its bytes count; its checksum and length are no one's.
        let merged = p.payload_len > largest_mss.unwrap_or(1460);
        if merged {
            d.report.gro_merged += 1;
        } else if !p.checksums_ok {
            d.report.bad_checksum += 1;
            continue;
        } else {
            d.report.largest_packet = d.report.largest_packet.max(p.ip_len);
        }
        if p.flags & RST != 0 {
            d.report.resets += 1;
            continue;
        }
        if p.flags & SYN != 0 {
            d.wscale = wscale_of(p.options);
            d.report.mss = mss_of(p.options);
            largest_mss = largest_mss.max(d.report.mss.map(u32::from));
            d.base = Some(p.seq.wrapping_add(1));
            continue;
        }
        let len = u64::from(p.payload_len) + u64::from(p.flags & FIN != 0);
        if p.payload_len > 0 {
            d.report.data_segments += 1;
        }
        if len > 0 {
            let start = d.offset(p.seq);
            let end = start + len;
            let covered = d.ranges.covered(start, end);
            if covered == len {
                d.report.resent_seen += 1;
            } else if start < d.ranges.high() {
                d.report.resent_after_gap += 1;
            }
            d.ranges.insert(start, end);
        }
        let late = d.last_ip_id.is_some_and(|last| (p.ip_id.wrapping_sub(last) as i16) < 0);
        if late {
            d.report.reordered += 1;
        } else {
            d.last_ip_id = Some(p.ip_id);
        }
        if p.flags & ACK != 0 && !late {
            let edge = p.ack.wrapping_add(u32::from(p.window) << d.wscale);
            match d.right_edge {
                Some(old) if etran::transport::tcp::seq::before(edge, old) => {
                    d.report.window_shrinks += 1;
                    d.report.largest_shrink = d.report.largest_shrink.max(old.wrapping_sub(edge));
                }
                _ => d.right_edge = Some(edge),
            }
        }
    }
    dirs.into_iter().map(|(k, v)| (k, v.report)).collect()
}
