//! A small synchronous rtnetlink client: just what etran needs to build and inspect the testbed
//! (veth pairs, a bridge, addresses, neighbours, HTB) without `ip` or `tc`.
//!
//! A [`Netlink`] socket acts on the network namespace of the thread that opened it; use
//! [`Netlink::open_in`] to get one for another namespace. Requests are sent with NLM_F_ACK and
//! wait for the kernel's answer, so errors come back as one-line `anyhow` errors naming the
//! operation.
use std::{net::Ipv4Addr, os::fd::AsRawFd};

use anyhow::{bail, Context};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{
        InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType,
        LinkMessage, LinkXdp,
    },
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
    },
    tc::{TcAttribute, TcHandle, TcMessage},
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::netns::NetNs;

const RTM_NEWQDISC: u16 = 36;
const RTM_NEWTCLASS: u16 = 40;

/// The queues of a veth pair's two ends (a frame sent on an end's TX queue q arrives on its
/// peer's RX queue q, which must exist for the peer's XDP program to see it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VethQueues {
    pub tx: u32,
    pub rx: u32,
    pub peer_tx: u32,
    pub peer_rx: u32,
}

impl VethQueues {
    /// `n` queues each way on both ends.
    pub fn same(n: u32) -> VethQueues {
        VethQueues { tx: n, rx: n, peer_tx: n, peer_rx: n }
    }
}

/// An rtnetlink socket bound to one network namespace.
pub struct Netlink {
    sock: Socket,
    seq: u32,
}

/// One interface as listed by [`Netlink::links`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub up: bool,
    pub mac: Option<[u8; 6]>,
    pub alias: Option<String>,
    pub master: Option<u32>,
    pub mtu: u32,
    /// Id of the attached XDP program, if any.
    pub xdp_prog_id: Option<u32>,
    /// An Ethernet interface (not loopback, a tunnel, ...).
    pub ethernet: bool,
    /// Frames dropped on receive (a veth: the receive ring was full, or XDP could not take it).
    pub rx_dropped: u64,
    /// Frames dropped on transmit (a veth: its peer's receive ring was full).
    pub tx_dropped: u64,
}

impl Netlink {
    /// A socket for the calling thread's namespace.
    pub fn open() -> anyhow::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE).context("opening an rtnetlink socket")?;
        sock.bind_auto().context("binding the rtnetlink socket")?;
        sock.connect(&SocketAddr::new(0, 0)).context("connecting the rtnetlink socket")?;
        let _ = sock.set_ext_ack(true);
        Ok(Netlink { sock, seq: 1 })
    }

    /// A socket that acts on `ns` (it stays in that namespace whatever thread uses it).
    pub fn open_in(ns: &NetNs) -> anyhow::Result<Netlink> {
        ns.run(Netlink::open)?
    }

    /// Sends one request (NLM_F_REQUEST | NLM_F_ACK | `flags`) given as message type and
    /// payload bytes, and collects every reply until the ACK or NLMSG_DONE.
    fn request_raw(
        &mut self,
        msg_type: u16,
        flags: u16,
        payload: &[u8],
    ) -> anyhow::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = 16 + payload.len();
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(&(len as u32).to_ne_bytes());
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(payload);
        self.sock.send(&buf, 0).context("sending to rtnetlink")?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full().context("receiving from rtnetlink")?;
            let mut off = 0;
            while off + 16 <= data.len() {
                let mlen =
                    u32::from_ne_bytes(data[off..off + 4].try_into().expect("4 bytes")) as usize;
                if mlen < 16 || off + mlen > data.len() {
                    bail!("truncated rtnetlink reply");
                }
                let rseq = u32::from_ne_bytes(data[off + 8..off + 12].try_into().expect("4"));
                let msg =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..off + mlen]);
                off += (mlen + 3) & !3;
                if rseq != seq {
                    continue;
                }
                match msg {
                    Ok(m) => match m.payload {
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                None => Ok(replies),
                                Some(_) => Err(e.to_io().into()),
                            };
                        }
                        NetlinkPayload::Done(_) => return Ok(replies),
                        NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                        _ => {}
                    },
                    // Messages this crate version cannot parse are skipped, not fatal.
                    Err(_) if dump => {}
                    Err(e) => bail!("unparsable rtnetlink reply: {e}"),
                }
            }
        }
    }

    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> anyhow::Result<Vec<RouteNetlinkMessage>> {
        let mut nl = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        nl.finalize();
        let mut buf = vec![0; nl.buffer_len()];
        nl.serialize(&mut buf);
        let msg_type = nl.header.message_type;
        self.request_raw(msg_type, flags, &buf[16..])
    }

    /// Every interface in the namespace.
    pub fn links(&mut self) -> anyhow::Result<Vec<Link>> {
        let replies = self
            .request(RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP)
            .context("listing interfaces")?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_of(l)),
                _ => None,
            })
            .collect())
    }

    /// The interface called `name`, if any.
    pub fn link(&mut self, name: &str) -> anyhow::Result<Option<Link>> {
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }

    /// The index of interface `name`, or an error naming it.
    pub fn index(&mut self, name: &str) -> anyhow::Result<u32> {
        self.link(name)?.map(|l| l.index).with_context(|| format!("no interface named {name:?}"))
    }

    fn new_link(&mut self, msg: LinkMessage, what: &str) -> anyhow::Result<()> {
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .with_context(|| format!("creating {what}"))?;
        Ok(())
    }

    fn set_link(&mut self, msg: LinkMessage, what: &str) -> anyhow::Result<()> {
        self.request(RouteNetlinkMessage::SetLink(msg), 0).with_context(|| what.to_string())?;
        Ok(())
    }

    /// Creates a veth pair: `name` (with `mac`) in this socket's namespace and `peer` (with
    /// `peer_mac`) directly inside `peer_ns`, so the peer's name never exists anywhere else.
    /// The ends get the real RX and TX queues `queues` says (a frame the stack or AF_XDP sends
    /// on TX queue q arrives on the peer's RX queue q; one redirected by XDP, on the queue of
    /// the sending CPU).
    pub fn add_veth(
        &mut self,
        name: &str,
        mac: [u8; 6],
        peer: &str,
        peer_mac: [u8; 6],
        peer_ns: &NetNs,
        queues: VethQueues,
    ) -> anyhow::Result<()> {
        if [queues.tx, queues.rx, queues.peer_tx, queues.peer_rx].contains(&0) {
            bail!("a veth needs at least one queue each way");
        }
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes = vec![
            LinkAttribute::IfName(peer.to_string()),
            LinkAttribute::Address(peer_mac.to_vec()),
            LinkAttribute::NetNsFd(peer_ns.as_raw_fd()),
            LinkAttribute::NumTxQueues(queues.peer_tx),
            LinkAttribute::NumRxQueues(queues.peer_rx),
        ];
        let mut msg = LinkMessage::default();
        msg.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::Address(mac.to_vec()),
            LinkAttribute::NumTxQueues(queues.tx),
            LinkAttribute::NumRxQueues(queues.rx),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
            ]),
        ];
        self.new_link(msg, &format!("veth pair {name}/{peer}"))
    }

    /// Creates a Linux bridge (STP off, the kernel default).
    pub fn add_bridge(&mut self, name: &str, mac: [u8; 6]) -> anyhow::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::Address(mac.to_vec()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
        ];
        self.new_link(msg, &format!("bridge {name}"))
    }

    /// Deletes interface `index` (for a veth, its peer goes too).
    pub fn delete_link(&mut self, index: u32) -> anyhow::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(msg), 0)
            .with_context(|| format!("deleting interface {index}"))?;
        Ok(())
    }

    /// Brings interface `index` up.
    pub fn set_up(&mut self, index: u32) -> anyhow::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.set_link(msg, &format!("bringing interface {index} up"))
    }

    /// Sets the MTU of interface `index`. A veth refuses an XDP program while its peer's MTU is
    /// above what XDP carries (see [`crate::loader::kernel::veth_xdp_max_mtu`]), and one with a
    /// program caps its peer's MTU: set both ends before attaching.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> anyhow::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes = vec![LinkAttribute::Mtu(mtu)];
        self.set_link(msg, &format!("setting the MTU of interface {index} to {mtu}"))
    }

    /// Sets the Ethernet address of interface `index`.
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> anyhow::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes = vec![LinkAttribute::Address(mac.to_vec())];
        self.set_link(msg, &format!("setting the Ethernet address of interface {index}"))
    }

    /// Moves interface `index` into namespace `ns`, named `name` there.
    pub fn move_link(&mut self, index: u32, ns: &NetNs, name: &str) -> anyhow::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes =
            vec![LinkAttribute::NetNsFd(ns.as_raw_fd()), LinkAttribute::IfName(name.to_string())];
        self.set_link(msg, &format!("moving interface {index} to another namespace as {name}"))
    }

    /// Enslaves `index` to the bridge (or bond) `master`.
    pub fn set_master(&mut self, index: u32, master: u32) -> anyhow::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes = vec![LinkAttribute::Controller(master)];
        self.set_link(msg, &format!("enslaving interface {index} to {master}"))
    }

    /// Sets the interface alias (`ip link set ... alias`).
    pub fn set_alias(&mut self, index: u32, alias: &str) -> anyhow::Result<()> {
        if alias.len() > 255 {
            bail!("interface alias longer than 255 bytes");
        }
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes = vec![LinkAttribute::IfAlias(alias.to_string())];
        self.set_link(msg, &format!("setting the alias of interface {index}"))
    }

    /// Adds `ip/prefix` on `index` (with the subnet's broadcast address).
    pub fn add_address_v4(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> anyhow::Result<()> {
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        let brd = Ipv4Addr::from(u32::from(ip) | !mask);
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes = vec![
            AddressAttribute::Local(ip.into()),
            AddressAttribute::Address(ip.into()),
            AddressAttribute::Broadcast(brd),
        ];
        self.request(RouteNetlinkMessage::NewAddress(msg), NLM_F_CREATE | NLM_F_EXCL)
            .with_context(|| format!("adding address {ip}/{prefix}"))?;
        Ok(())
    }

    /// Adds a permanent ARP entry `ip` → `mac` on `index`.
    pub fn add_neighbour_v4(
        &mut self,
        index: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
    ) -> anyhow::Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)),
            NeighbourAttribute::LinkLocalAddress(mac.to_vec()),
        ];
        self.request(RouteNetlinkMessage::NewNeighbour(msg), NLM_F_CREATE | NLM_F_EXCL)
            .with_context(|| format!("adding a neighbour entry for {ip}"))?;
        Ok(())
    }

    /// Adds a static FDB entry `mac` → bridge port `port` (`bridge fdb add MAC dev PORT master
    /// static`).
    pub fn add_bridge_fdb(&mut self, port: u32, mac: [u8; 6]) -> anyhow::Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = port;
        msg.header.state = NeighbourState::Noarp;
        msg.header.flags = NeighbourFlags::Controller;
        msg.attributes = vec![NeighbourAttribute::LinkLocalAddress(mac.to_vec())];
        self.request(RouteNetlinkMessage::NewNeighbour(msg), NLM_F_CREATE | NLM_F_EXCL)
            .with_context(|| format!("adding a bridge FDB entry on interface {port}"))?;
        Ok(())
    }

    /// The qdiscs on `index`.
    fn qdisc_dump(&mut self, index: u32) -> anyhow::Result<Vec<TcMessage>> {
        let replies = self
            .request(RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()), NLM_F_DUMP)
            .context("listing qdiscs")?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewQueueDiscipline(q) if q.header.index == index as i32 => {
                    Some(q)
                }
                _ => None,
            })
            .collect())
    }

    /// The kinds of the qdiscs on `index` (e.g. `["htb", "pfifo"]`).
    pub fn qdiscs(&mut self, index: u32) -> anyhow::Result<Vec<String>> {
        Ok(self
            .qdisc_dump(index)?
            .into_iter()
            .filter_map(|q| {
                q.attributes.into_iter().find_map(|a| match a {
                    TcAttribute::Kind(k) => Some(k),
                    _ => None,
                })
            })
            .collect())
    }

    /// Packets the root qdisc of `index` dropped (with HTB: its classes' queues' drops too).
    pub fn root_qdisc_drops(&mut self, index: u32) -> anyhow::Result<u64> {
        Ok(self
            .qdisc_dump(index)?
            .into_iter()
            .filter(|q| q.header.parent == TcHandle::ROOT)
            .flat_map(|q| q.attributes)
            .map(|a| match a {
                TcAttribute::Stats(st) => u64::from(st.drops),
                _ => 0,
            })
            .sum())
    }

    /// Shapes egress of `index` to `rate_bps` bits/s with HTB: root qdisc 1: (default class
    /// 1:1) and one class 1:1 with rate = ceil; its leaf is HTB's default pfifo (txqueuelen
    /// packets).
    pub fn add_htb(&mut self, index: u32, rate_bps: u64, prio: bool) -> anyhow::Result<()> {
        let default = if prio { prio_class(PRIO_BANDS - 1) } else { HTB_CLASS };
        let qdisc = htb_qdisc_payload(index, default);
        self.request_raw(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, &qdisc)
            .with_context(|| format!("adding an HTB qdisc on interface {index}"))?;
        let class = htb_class_payload(index, HTB_CLASS, rate_bps, None);
        self.request_raw(RTM_NEWTCLASS, NLM_F_CREATE | NLM_F_EXCL, &class)
            .with_context(|| format!("adding an HTB class on interface {index}"))?;
        Ok(())
    }

    /// Splits [`Netlink::add_htb`]'s class into [`PRIO_BANDS`] leaf classes, `1:10` (band 0)
    /// to `1:17`, each guaranteed next to nothing and allowed the whole rate, at HTB priority
    /// `band`: HTB lends the rate to the lowest priority value first, so band 0 goes first,
    /// strictly (this kernel has no `prio` qdisc). A frame's class is its `skb->priority`
    /// ([`prio_class`]); what names none goes to the last band (the qdisc's default, see
    /// [`Netlink::add_htb`]). Each leaf queues txqueuelen packets.
    pub fn add_htb_prio(&mut self, index: u32, rate_bps: u64) -> anyhow::Result<()> {
        for band in 0..PRIO_BANDS {
            let class = htb_class_payload(index, prio_class(band), rate_bps, Some(band));
            self.request_raw(RTM_NEWTCLASS, NLM_F_CREATE | NLM_F_EXCL, &class).with_context(
                || format!("adding HTB priority class {band} on interface {index}"),
            )?;
        }
        Ok(())
    }
}

fn link_of(l: LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        up: l.header.flags.contains(LinkFlags::Up),
        mac: None,
        alias: None,
        master: None,
        mtu: 0,
        xdp_prog_id: None,
        ethernet: l.header.link_layer_type == LinkLayerType::Ether,
        rx_dropped: 0,
        tx_dropped: 0,
    };
    for a in l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Address(m) if m.len() == 6 => {
                link.mac = Some(m.try_into().expect("6 bytes"));
            }
            LinkAttribute::IfAlias(s) => link.alias = Some(s),
            LinkAttribute::Controller(m) => link.master = Some(m),
            LinkAttribute::Mtu(m) => link.mtu = m,
            LinkAttribute::Stats64(st) => {
                link.rx_dropped = st.rx_dropped;
                link.tx_dropped = st.tx_dropped;
            }
            LinkAttribute::Xdp(x) => {
                link.xdp_prog_id = x.into_iter().find_map(|x| match x {
                    LinkXdp::ProgId(id) if id != 0 => Some(id),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    link
}

/// Appends one netlink attribute (header, value, padding to 4 bytes).
fn put_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

fn tcmsg(index: u32, handle: u32, parent: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    b.extend_from_slice(&(index as i32).to_ne_bytes());
    b.extend_from_slice(&handle.to_ne_bytes());
    b.extend_from_slice(&parent.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b
}

const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const NLA_F_NESTED: u16 = 1 << 15;
const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
const TC_H_ROOT: u32 = 0xFFFF_FFFF;
const TC_LINKLAYER_ETHERNET: u8 = 1;
/// The rate a priority leaf is guaranteed (HTB's least, 8 kbit/s): everything else it borrows.
const PRIO_LEAF_RATE: u64 = 8_000;
/// HTB handle 1: and class 1:1.
const HTB_HANDLE: u32 = 0x0001_0000;
const HTB_CLASS: u32 = 0x0001_0001;

fn htb_qdisc_payload(index: u32, default: u32) -> Vec<u8> {
    let mut b = tcmsg(index, HTB_HANDLE, TC_H_ROOT);
    put_attr(&mut b, TCA_KIND, b"htb\0");
    // struct tc_htb_glob { version, rate2quantum, defcls, debug, direct_pkts }
    let mut glob = Vec::new();
    for v in [3u32, 10, default & 0xffff, 0, 0] {
        glob.extend_from_slice(&v.to_ne_bytes());
    }
    let mut opts = Vec::new();
    put_attr(&mut opts, TCA_HTB_INIT, &glob);
    put_attr(&mut b, TCA_OPTIONS | NLA_F_NESTED, &opts);
    b
}

/// Bands of the priority classes [`Netlink::add_htb_prio`] builds: one per Homa priority level.
pub const PRIO_BANDS: u8 = 8;

/// The HTB class of priority band `band` (0 first): `1:10` + band, what `skb->priority` must
/// say for HTB to put a frame there (the switch's egress program sets it).
pub fn prio_class(band: u8) -> u32 {
    HTB_HANDLE | (0x10 + u32::from(band))
}

/// HTB class parameters derived from a rate, in the units the kernel wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HtbParams {
    /// Bytes per second (saturated to u32; the full value goes in TCA_HTB_RATE64).
    pub rate32: u32,
    pub rate64: u64,
    /// Burst as transmission time at `rate`, in psched ticks (64 ns).
    pub buffer_ticks: u32,
    /// The same burst in bytes: what passes at once after an idle period, without queueing.
    pub burst_bytes: u32,
    pub quantum: u32,
}

/// Burst: 1 ms worth of bytes plus one MTU-sized frame (tc's default with HZ=1000), quantum:
/// rate/10 clamped to [1600, 200000] (HTB's own bounds, without its warning).
pub fn htb_params(rate_bps: u64) -> HtbParams {
    let bytes = (rate_bps / 8).max(1);
    let burst = bytes / 1000 + 1600;
    let burst_ns = burst as u128 * 1_000_000_000 / bytes as u128;
    let ticks = (burst_ns / 64).min(u32::MAX as u128) as u32;
    HtbParams {
        rate32: bytes.min(u32::MAX as u64) as u32,
        rate64: bytes,
        buffer_ticks: ticks,
        burst_bytes: burst.min(u32::MAX as u64) as u32,
        quantum: (bytes / 10).clamp(1600, 200_000) as u32,
    }
}

fn ratespec(rate: u32) -> [u8; 12] {
    // struct tc_ratespec { u8 cell_log; u8 linklayer; u16 overhead; i16 cell_align; u16 mpu;
    // u32 rate } with an Ethernet link layer, so no rate table is needed.
    let mut r = [0u8; 12];
    r[1] = TC_LINKLAYER_ETHERNET;
    r[8..12].copy_from_slice(&rate.to_ne_bytes());
    r
}

/// The class `classid`: the root class (rate = ceil = `rate_bps`, under the qdisc), or with a
/// `band` a priority leaf under it (the least rate HTB takes, ceil `rate_bps`, HTB priority
/// `band`).
fn htb_class_payload(index: u32, classid: u32, rate_bps: u64, band: Option<u8>) -> Vec<u8> {
    let p = htb_params(rate_bps);
    let (parent, own) = match band {
        Some(_) => (HTB_CLASS, htb_params(PRIO_LEAF_RATE)),
        None => (HTB_HANDLE, p),
    };
    let mut b = tcmsg(index, classid, parent);
    put_attr(&mut b, TCA_KIND, b"htb\0");
    // struct tc_htb_opt { rate, ceil, buffer, cbuffer, quantum, level, prio }
    let mut opt = Vec::new();
    opt.extend_from_slice(&ratespec(own.rate32));
    opt.extend_from_slice(&ratespec(p.rate32));
    let prio = u32::from(band.unwrap_or(0));
    for v in [own.buffer_ticks, p.buffer_ticks, p.quantum, 0, prio] {
        opt.extend_from_slice(&v.to_ne_bytes());
    }
    let mut opts = Vec::new();
    put_attr(&mut opts, TCA_HTB_PARMS, &opt);
    if p.rate64 > u32::MAX as u64 {
        put_attr(&mut opts, TCA_HTB_RATE64, &p.rate64.to_ne_bytes());
        put_attr(&mut opts, TCA_HTB_CEIL64, &p.rate64.to_ne_bytes());
    }
    put_attr(&mut b, TCA_OPTIONS | NLA_F_NESTED, &opts);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htb_params_follow_the_rate() {
        let p = htb_params(1_000_000_000);
        assert_eq!(p.rate32, 125_000_000);
        assert_eq!(p.rate64, 125_000_000);
        // 125000 + 1600 bytes at 125 MB/s = 1.0128 ms = 15825 ticks of 64 ns.
        assert_eq!(p.buffer_ticks, 15_825);
        assert_eq!(p.burst_bytes, 126_600);
        assert_eq!(p.quantum, 200_000);
        let slow = htb_params(8_000);
        assert_eq!(slow.rate32, 1000);
        assert_eq!(slow.quantum, 1600);
        let fast = htb_params(100_000_000_000);
        assert_eq!(fast.rate32, u32::MAX);
        assert_eq!(fast.rate64, 12_500_000_000);
    }

    #[test]
    fn attributes_are_padded() {
        let mut b = Vec::new();
        put_attr(&mut b, TCA_KIND, b"htb\0");
        assert_eq!(b, [8, 0, 1, 0, b'h', b't', b'b', 0]);
        let mut b = Vec::new();
        put_attr(&mut b, 9, &[1]);
        assert_eq!(b.len(), 8);
        assert_eq!(&b[..2], &5u16.to_ne_bytes());
    }

    #[test]
    fn prio_classes_are_htb_leaves_by_band() {
        assert_eq!(prio_class(0), 0x0001_0010);
        assert_eq!(prio_class(7), 0x0001_0017);
        let b = htb_class_payload(7, prio_class(3), 8_000_000, Some(3));
        assert_eq!(&b[8..12], &prio_class(3).to_ne_bytes());
        assert_eq!(&b[12..16], &HTB_CLASS.to_ne_bytes(), "under the root class");
        // tcmsg, TCA_KIND, then TCA_OPTIONS { TCA_HTB_PARMS { rate, ceil, .., prio } }.
        let opt = &b[20 + 8 + 4 + 4..];
        assert_eq!(&opt[8..12], &1000u32.to_ne_bytes(), "8 kbit/s guaranteed");
        assert_eq!(&opt[20..24], &1_000_000u32.to_ne_bytes(), "the port's rate to borrow");
        assert_eq!(&opt[40..44], &3u32.to_ne_bytes(), "HTB priority: the band");
        // The qdisc's default: the root class, or with priorities the last band.
        let q = htb_qdisc_payload(7, prio_class(7));
        assert_eq!(&q[q.len() - 12..q.len() - 8], &0x17u32.to_ne_bytes());
    }

    #[test]
    fn htb_class_message_layout() {
        let b = htb_class_payload(7, HTB_CLASS, 8_000_000, None);
        assert_eq!(&b[4..8], &7i32.to_ne_bytes());
        assert_eq!(&b[8..12], &HTB_CLASS.to_ne_bytes());
        assert_eq!(&b[12..16], &HTB_HANDLE.to_ne_bytes());
        // no 64-bit rate attributes below 4 GB/s
        assert_eq!(b.len(), 20 + 8 + 4 + 4 + 44);
    }
}
