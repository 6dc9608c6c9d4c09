//! The app-side engine of Homa RPCs: one bound Homa port of an app, with its outgoing messages
//! ([`super::msgout::Sender`]: SRPT, never beyond the grant), its incoming ones
//! ([`super::msgin::MessageIn`]: segments in any order, duplicated or overlapping) and the RPCs in
//! between. Pure: RX frames come in as Homa ingress's metadata and payload ([`Endpoint::on_rx`]),
//! TX frames go out as Homa egress's TX header and payload ([`Endpoint::next_frame`]); the app
//! library drives it (`crate::app::rpc`).
//!
//! An RPC's life on each side:
//! - client: [`Endpoint::start_request`] takes an even id from the app's block and queues the
//!   request; the response's last missing byte completes it ([`Event::Response`]), and its ack
//!   is held ([`PendingAcks`]): the next DATA to the same server carries it (`ack_id`), or,
//!   with none to ride on within [`HOLD_TICKS`](super::acks::HOLD_TICKS) or when the server asks (NEED_ACK), an
//!   ACK intent; either ends the RPC in egress and tells the server.
//! - server: a request's last missing byte completes it ([`Event::Request`]);
//!   [`Endpoint::respond`] queues the response, held (for RESENDs to come) until the client's
//!   ACK arrives.
//!
//! Messages longer than the unscheduled bytes go as far as they are granted: the kernel's grant
//! scheduler decides the receiver's grants across every message of the host (SRPT, the
//! overcommit, the incoming cap: `src/bpf/homa/homa_sched.h`) and the kernel writes the GRANTs
//! (gen, `src/bpf/homa/homa_gen.h`); an app never writes one. Ingress tells each DATA's grant
//! and how many RPCs it queued for gen; the engine sends as many gen templates
//! (`ETRAN_HOMA_TX_GEN`, naming no RPC) with its next frames, so that the GRANTs leave at this
//! pass rather than at the daemon's pump's wakeup (which sends them if the app does not). A
//! message whose granted bytes all arrived waits for its turn, which the kernel announces
//! itself; one silent for `GRANT_PROBE_TICKS` probes its peer, one probe per peer per resend
//! interval (a template naming the RPC: gen queues every scheduled message from the peer again,
//! and sends a GRANT DATA has not answered again: a lost GRANT). GRANTs that arrive raise the
//! sender's limit here as ingress raises egress's.
//!
//! Loss: the app drives each RPC's [`RpcTimer`] ([`Endpoint::tick`], every millisecond). A
//! message coming in that goes silent with bytes missing gets RESENDs for them (every gap, and
//! the tail, which egress cuts at what ingress granted: a lost GRANT heals the same way); a
//! client whose request is out and whose response has not started asks for the response's
//! first packet. A RESEND is answered with the bytes again (only bytes sent, within the grant), with
//! BUSY while the app has nothing to send (a request still arriving or in service, or bytes not
//! sent yet), and by ingress with RPC_UNKNOWN when the RPC is unknown there, on which a client
//! sends its whole request again. DATA, GRANT and BUSY end a silence (a RESEND does not). A
//! message waiting for our own grant is silent by our choice: only its peer sending nothing at
//! all (any packet, about any RPC) for the timeout ends it.
//! Silence past the timeout fails a client's RPC
//! ([`Event::TimedOut`]) and makes a server forget its part. A server whose response is all
//! sent asks the client for its ACK (NEED_ACK, 2 ticks after the tick that found it all sent
//! and every 5 after, HomaModule's rule); ingress on the client's host answers it with an ACK
//! once the client's RPC is over there, which frees the RPC on the server's host and in its
//! engine.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::{Ipv4Addr, SocketAddrV4},
};

use super::{
    acks::PendingAcks,
    id::{IdBlock, RpcId},
    loss::{resend_requests, Action, LossConfig, Phase, RpcTimer},
    msgin::MessageIn,
    msgout::{ResendReply, Sender, UNSCHED_BYTES},
    prio::{Announced, Cutoffs, HIGH_PRIORITY},
    wire::{Ack, Body, Packet, ResendLength, Type},
    MAX_MESSAGE, MAX_PAYLOAD,
};
use crate::{
    bpf::homa::types::{
        etran_homa_rx_flag, etran_homa_rx_meta, etran_homa_tx_hdr, etran_homa_tx_intent,
        homa_rpc_key,
    },
    transport::RxMeta,
};

/// Homa ingress's RX metadata, in front of every frame it hands an app.
impl RxMeta for etran_homa_rx_meta {
    fn payload(&self) -> (usize, usize) {
        (usize::from(self.payload_off), usize::from(self.payload_len))
    }
}

/// Ingress's count of the RPCs a frame queued for gen, in units of this
/// (`ETRAN_HOMA_RX_GEN_ONE`: the flags' high nibble).
const GEN_ONE: u8 = etran_homa_rx_flag::ETRAN_HOMA_RX_GEN_ONE.0 as u8;
/// Ingress's word that the DATA's sender echoed stale cutoffs (`ETRAN_HOMA_RX_CUTOFFS_DUE`).
const CUTOFFS_DUE: u8 = etran_homa_rx_flag::ETRAN_HOMA_RX_CUTOFFS_DUE.0 as u8;

/// Bytes of the TX header in front of every frame's payload.
pub const TX_HDR_LEN: usize = std::mem::size_of::<etran_homa_tx_hdr>();

/// One RPC, as this app knows it: the peer's address and port, and our id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RpcKey {
    pub peer: SocketAddrV4,
    pub id: RpcId,
}

/// What a received frame completed.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A request arrived whole; answer it with [`Endpoint::respond`].
    Request { rpc: RpcKey, bytes: Vec<u8> },
    /// The response to our request `rpc` arrived whole; the RPC is over.
    Response { rpc: RpcKey, bytes: Vec<u8> },
    /// The server stayed silent past the loss timeout: our request `rpc` failed (ETIMEDOUT).
    TimedOut { rpc: RpcKey },
}

/// The loss timer the engine runs by default: HomaModule's (a RESEND after 5 silent ticks of
/// 1 ms, then every 5), except that an RPC is given up after 1 s of silence rather than 100 ms:
/// both ends here are apps, which a loaded host may leave unscheduled longer than a kernel
/// timer, and only the peer's silence, never our own, counts (a tick is a pass of the app).
pub const LOSS: LossConfig =
    LossConfig { resend_ticks: 5, resend_interval: 5, timeout_ticks: 1000, request_ack_ticks: 2 };

/// A control packet to send about an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    /// Ask the peer again for bytes of its message.
    Resend { offset: u32, length: ResendLength },
    /// Tell the peer we are alive but have nothing of the RPC to send yet.
    Busy,
    /// Ask the client for the ACK of our response, all sent.
    NeedAck,
    /// Tell the peer this host's cutoffs (egress writes them).
    Cutoffs,
}

/// Why a request or response was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Empty, or longer than [`MAX_MESSAGE`].
    Length(usize),
    /// The id block is used up (the app asks the daemon for another).
    NoIds,
    /// No request of this RPC is waiting for a response.
    NotServing,
}

/// The counters of what the engine refused or ignored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EndpointStats {
    /// DATA of an RPC that no longer wants it (completed, or never ours).
    pub rx_stale: u64,
    /// Segments `MessageIn` refused (inconsistent with what arrived before).
    pub rx_refused: u64,
    /// Packets of types the engine does not act on (FREEZE, a NEED_ACK for no held ack, ...).
    pub rx_ignored: u64,
    /// RESENDs received, and sent.
    pub rx_resend: u64,
    pub tx_resend: u64,
    /// Requests sent again whole (the server knew nothing of them: RPC_UNKNOWN).
    pub restarts: u64,
    /// RPCs given up after the loss timeout.
    pub timeouts: u64,
    /// Acks sent alone because the server asked for one we held (NEED_ACK: it heard nothing
    /// from us for its request-ack ticks after its response went).
    pub acks_asked: u64,
}

/// One bound Homa port of an app.
pub struct Endpoint {
    local_port: u16,
    ids: IdBlock,
    sender: Sender<RpcKey>,
    /// The messages being sent (requests, responses), by RPC.
    out: HashMap<RpcKey, Vec<u8>>,
    /// The messages being received.
    incoming: HashMap<RpcKey, MessageIn>,
    /// How far each was granted, as ingress last said.
    granted: HashMap<RpcKey, u32>,
    /// Ticks run (the probes' and held acks' clock).
    ticks: u32,
    /// Our client RPCs waiting for their response.
    waiting: HashSet<RpcKey>,
    /// Server RPCs whose request arrived whole and whose client has not acknowledged the
    /// response.
    serving: HashSet<RpcKey>,
    /// Client RPCs whose ACK intent is to go out.
    acks: VecDeque<RpcKey>,
    /// Client RPCs whose ack waits for a DATA to ride on.
    held_acks: PendingAcks,
    /// Gen templates owed: the RPCs ingress queued for gen (their GRANTs leave with our next
    /// frames).
    gen_due: u32,
    /// Messages waiting for a grant whose peer is probed: a template naming each.
    grant_probes: VecDeque<RpcKey>,
    /// The tick at which each peer was last probed for a message of ours waiting for a grant,
    /// and each such message last named in a probe (they take turns).
    grant_probed: HashMap<SocketAddrV4, u32>,
    rpc_probed: HashMap<RpcKey, u32>,
    /// RESENDs and BUSYs to send.
    control: VecDeque<(RpcKey, Control)>,
    /// The loss timer of each RPC in progress (made at its first tick).
    timers: HashMap<RpcKey, RpcTimer>,
    /// The tick at which each peer (address and port) last sent DATA, GRANT or BUSY, and at
    /// which a request of ours waiting for its grant last asked it whether it lives.
    peers_heard: HashMap<SocketAddrV4, u32>,
    peers_probed: HashMap<SocketAddrV4, u32>,
    /// The tick at which each peer last sent anything (any packet, a RESEND too): whether it
    /// lives, for messages waiting for our own grants.
    peers_alive: HashMap<SocketAddrV4, u32>,
    loss: LossConfig,
    /// The cutoffs each peer host announced (CUTOFFS): the priorities of our unscheduled bytes
    /// to it.
    peer_cutoffs: HashMap<Ipv4Addr, Cutoffs>,
    /// When we last told each peer host our cutoffs.
    announced: HashMap<Ipv4Addr, Announced>,
    stats: EndpointStats,
}

impl Endpoint {
    pub fn new(local_port: u16, ids: IdBlock) -> Endpoint {
        Endpoint {
            local_port,
            ids,
            sender: Sender::new(UNSCHED_BYTES),
            out: HashMap::new(),
            incoming: HashMap::new(),
            granted: HashMap::new(),
            ticks: 0,
            waiting: HashSet::new(),
            serving: HashSet::new(),
            acks: VecDeque::new(),
            held_acks: PendingAcks::default(),
            gen_due: 0,
            grant_probes: VecDeque::new(),
            grant_probed: HashMap::new(),
            rpc_probed: HashMap::new(),
            control: VecDeque::new(),
            timers: HashMap::new(),
            peers_heard: HashMap::new(),
            peers_probed: HashMap::new(),
            peers_alive: HashMap::new(),
            loss: LOSS,
            peer_cutoffs: HashMap::new(),
            announced: HashMap::new(),
            stats: EndpointStats::default(),
        }
    }

    pub fn local_port(&self) -> u16 {
        self.local_port
    }

    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// Replaces the loss timer's parameters ([`LOSS`] by default).
    pub fn set_loss_config(&mut self, cfg: LossConfig) {
        self.loss = cfg;
    }

    /// RPCs in progress: ours waiting for a response, requests arriving or being answered.
    pub fn in_progress(&self) -> usize {
        let arriving = self.incoming.keys().filter(|k| !k.id.is_client()).count();
        self.waiting.len() + self.serving.len() + arriving
    }

    /// Whether the engine needs its ticks: RPCs in progress, or acks held.
    pub fn ticking(&self) -> bool {
        self.in_progress() > 0 || !self.held_acks.is_empty()
    }

    fn check_length(len: usize) -> Result<u32, Refused> {
        u32::try_from(len).ok().filter(|&n| n > 0 && n <= MAX_MESSAGE).ok_or(Refused::Length(len))
    }

    fn queue(&mut self, rpc: RpcKey, buf: Vec<u8>, length: u32) {
        let cutoffs = self.peer_cutoffs.get(rpc.peer.ip()).unwrap_or(&Cutoffs::UNKNOWN_PEER);
        let priority = cutoffs.unsched_priority(length);
        self.sender.add(rpc, length, priority);
        self.out.insert(rpc, buf);
    }

    /// Whether the client ids are used up: [`Endpoint::start_request`] refuses until
    /// [`Endpoint::renew_ids`].
    pub fn ids_used_up(&self) -> bool {
        self.ids.used_up()
    }

    /// The block client ids come from from now on (the daemon's answer to a used-up one).
    pub fn renew_ids(&mut self, ids: IdBlock) {
        self.ids = ids;
    }

    /// Queues a request to `dest`; its response comes as [`Event::Response`] for the key
    /// returned.
    pub fn start_request(&mut self, dest: SocketAddrV4, buf: Vec<u8>) -> Result<RpcKey, Refused> {
        let length = Self::check_length(buf.len())?;
        let id = self.ids.next_id().ok_or(Refused::NoIds)?;
        let rpc = RpcKey { peer: dest, id };
        self.waiting.insert(rpc);
        self.queue(rpc, buf, length);
        Ok(rpc)
    }

    /// Queues the response to the request of `rpc` (one [`Event::Request`] gave).
    pub fn respond(&mut self, rpc: RpcKey, buf: Vec<u8>) -> Result<(), Refused> {
        let length = Self::check_length(buf.len())?;
        if !self.serving.contains(&rpc) || self.out.contains_key(&rpc) {
            return Err(Refused::NotServing);
        }
        self.queue(rpc, buf, length);
        Ok(())
    }

    /// Takes one frame ingress handed us.
    pub fn on_rx(
        &mut self,
        meta: &etran_homa_rx_meta,
        payload: &[u8],
        frame: &[u8],
    ) -> Option<Event> {
        let peer = SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(meta.peer_ip)),
            u16::from_be(meta.peer_port),
        );
        let rpc = RpcKey { peer, id: RpcId::from_wire(meta.id ^ 1) };
        let ty = Type::from_byte(meta.r#type);
        self.gen_due += u32::from(meta.flags / GEN_ONE);
        self.peers_alive.insert(peer, self.ticks);
        // What the peer sends of its own accord shows it alive (HomaModule's rule): not a
        // RESEND, which a peer waiting on us keeps sending, or two sides each waiting for the
        // other would keep each other from ever asking.
        if matches!(ty, Some(Type::Data | Type::Grant | Type::Busy)) {
            if let Some(t) = self.timers.get_mut(&rpc) {
                t.heard();
            }
            self.peers_heard.insert(peer, self.ticks);
        }
        match ty {
            Some(Type::Data) => {
                // A request may carry the ack of an earlier RPC of its client.
                if !rpc.id.is_client() {
                    if let Some(a) = data_ack(frame) {
                        self.on_ack(peer, a);
                    }
                }
                self.on_data(rpc, meta, payload)
            }
            Some(Type::Grant) => {
                let (offset, priority) = grant_of(frame)?;
                self.sender.on_grant(rpc, offset, priority);
                None
            }
            Some(Type::Resend) => {
                let (offset, length, priority) = resend_of(frame)?;
                self.on_resend(rpc, offset, length, priority);
                None
            }
            Some(Type::RpcUnknown) => {
                self.on_unknown(rpc);
                None
            }
            Some(Type::Busy) => None,
            Some(Type::Cutoffs) => {
                let c = cutoffs_of(frame)?;
                self.peer_cutoffs.insert(*peer.ip(), c);
                None
            }
            Some(Type::Ack) => {
                for a in acks_of(frame) {
                    self.on_ack(peer, a);
                }
                None
            }
            // The server asks for an ack we hold: it goes alone, now.
            Some(Type::NeedAck) if self.held_acks.take(rpc.peer, rpc.id) => {
                self.stats.acks_asked += 1;
                self.acks.push_back(rpc);
                None
            }
            _ => {
                self.stats.rx_ignored += 1;
                None
            }
        }
    }

    /// The client `peer` acknowledged a response of ours: the server RPC is over.
    fn on_ack(&mut self, peer: SocketAddrV4, a: Ack) {
        if a.server_port == self.local_port {
            self.end(RpcKey { peer, id: RpcId::from_wire(a.client_id) });
        }
    }

    fn on_data(&mut self, rpc: RpcKey, meta: &etran_homa_rx_meta, payload: &[u8]) -> Option<Event> {
        let client = rpc.id.is_client();
        // The sender uses stale cutoffs: tell its host ours, once a tick at most.
        if meta.flags & CUTOFFS_DUE != 0
            && self.announced.entry(*rpc.peer.ip()).or_default().due(u64::from(self.ticks))
        {
            self.control.push_front((rpc, Control::Cutoffs));
        }
        // A request's DATA after it arrived whole, or a response's after it did (or for an RPC
        // we never started): nothing more to take.
        if (client && !self.waiting.contains(&rpc)) || (!client && self.serving.contains(&rpc)) {
            self.stats.rx_stale += 1;
            return None;
        }
        let granted = (u32::from(meta.grant_packets) * MAX_PAYLOAD).min(meta.message_length);
        let g = self.granted.entry(rpc).or_default();
        *g = (*g).max(granted);
        let msg = match self.incoming.entry(rpc) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                match MessageIn::new(meta.message_length) {
                    Ok(m) => e.insert(m),
                    Err(_) => {
                        self.stats.rx_refused += 1;
                        return None;
                    }
                }
            }
        };
        if msg.length() != meta.message_length || msg.add(meta.offset, payload).is_err() {
            self.stats.rx_refused += 1;
            return None;
        }
        if !msg.is_complete() {
            return None;
        }
        self.granted.remove(&rpc);
        let bytes = self.incoming.remove(&rpc)?.into_bytes()?;
        if client {
            self.end(rpc);
            self.held_acks.push(rpc.peer, rpc.id, self.ticks);
            Some(Event::Response { rpc, bytes })
        } else {
            self.serving.insert(rpc);
            Some(Event::Request { rpc, bytes })
        }
    }

    /// Whether every byte granted of the incoming message `rpc` arrived and more are to come:
    /// it waits for the scheduler.
    fn awaits_grant(&self, rpc: RpcKey) -> bool {
        let (Some(m), Some(&g)) = (self.incoming.get(&rpc), self.granted.get(&rpc)) else {
            return false;
        };
        m.received() >= g && g < m.length()
    }

    /// A RESEND from the peer: the bytes again (those sent, within the grant), or BUSY while
    /// we have nothing of the RPC to send (HomaModule's answers). Ingress answered it already
    /// when the RPC is unknown there, and with BUSY when it is a server RPC whose whole request
    /// arrived and none of whose response was sent (this app may not be running).
    fn on_resend(&mut self, rpc: RpcKey, offset: u32, length: ResendLength, priority: u8) {
        self.stats.rx_resend += 1;
        let reply = if self.out.contains_key(&rpc) {
            self.sender.on_resend(rpc, offset, length, priority)
        } else {
            self.known(rpc).then_some(ResendReply::Busy)
        };
        match reply {
            Some(ResendReply::Busy) => self.control.push_back((rpc, Control::Busy)),
            Some(ResendReply::Resending) => {}
            None => self.stats.rx_stale += 1,
        }
    }

    /// The peer knows nothing of the RPC: a server lost our request (none of it arrived), so
    /// it goes again whole; a client is done with our response (ingress freed the RPC).
    fn on_unknown(&mut self, rpc: RpcKey) {
        if !rpc.id.is_client() {
            self.end(rpc);
        } else if self.waiting.contains(&rpc) {
            self.incoming.remove(&rpc);
            self.granted.remove(&rpc);
            self.sender.restart(rpc);
            self.stats.restarts += 1;
        }
    }

    /// Whether the RPC is in progress here.
    fn known(&self, rpc: RpcKey) -> bool {
        self.waiting.contains(&rpc)
            || self.serving.contains(&rpc)
            || self.incoming.contains_key(&rpc)
    }

    /// Whether our request `rpc` went as far as it was granted and waits for the server's
    /// next GRANT. Nothing of ours is missing then (the server asks for what it misses of the
    /// request, and its RESEND past the grant heals a lost GRANT): the wait is the server's
    /// scheduler's choice, and a RESEND only asks whether the server lives.
    fn awaits_grant_out(&self, rpc: RpcKey) -> bool {
        let length = self.out.get(&rpc).map_or(0, |b| b.len() as u32);
        rpc.id.is_client()
            && self
                .sender
                .progress(rpc)
                .is_some_and(|(sent, limit)| sent >= limit && limit < length)
    }

    /// Where the RPC stands, for its timer.
    fn phase(&self, rpc: RpcKey) -> Phase {
        if self.awaits_grant(rpc) {
            let heard = self.peers_alive.get(&rpc.peer).copied().unwrap_or(self.ticks);
            return Phase::AwaitingGrant { peer_silent: self.ticks.wrapping_sub(heard) };
        }
        if let Some(m) = self.incoming.get(&rpc) {
            // Every byte missing counts: egress cuts a RESEND at what was granted.
            return Phase::Receiving { received: m.received(), granted: m.length() };
        }
        match (rpc.id.is_client(), self.sender.progress(rpc)) {
            (true, Some((sent, granted))) => Phase::ClientSending { sent, granted },
            (false, Some((sent, _))) => Phase::ServerSending {
                sent,
                length: self.out.get(&rpc).map_or(0, |b| b.len() as u32),
            },
            (_, None) => Phase::InService,
        }
    }

    /// One tick of every RPC's loss timer (the app calls it every millisecond while RPCs are in
    /// progress): RESENDs for what went silent, and the RPCs given up, as events.
    pub fn tick(&mut self) -> Vec<Event> {
        let mut rpcs: Vec<RpcKey> =
            self.waiting.iter().chain(&self.serving).chain(self.incoming.keys()).copied().collect();
        rpcs.sort_unstable();
        rpcs.dedup();
        self.sender.tick(self.loss.resend_ticks as usize);
        self.ticks = self.ticks.wrapping_add(1);
        let sender = &self.sender;
        for (peer, id) in self.held_acks.due(self.ticks, |s| sender.ready_for(|k| k.peer == s)) {
            self.acks.push_back(RpcKey { peer, id });
        }
        let mut failed = Vec::new();
        let mut probes: Vec<RpcKey> = Vec::new();
        for rpc in rpcs {
            let phase = self.phase(rpc);
            // A request waiting for its grant hears its server through any RPC with it, and
            // asks whether it lives (a RESEND, which a live one answers with BUSY) only if no
            // other waiting request asked within the resend interval: one probe per server, not
            // one per request. HomaModule asks for each RPC every 5 ticks; with many requests
            // from one client (one granted at a time per peer) waiting on a server app that a
            // loaded host leaves unscheduled for tens of milliseconds, that was most of the
            // RESENDs on a clean link, each answered with a BUSY by the same starved app.
            let (waits, heard, probed) = (
                self.awaits_grant_out(rpc),
                self.peers_heard.get(&rpc.peer).is_some_and(|&t| t.wrapping_add(1) >= self.ticks),
                self.peers_probed.get(&rpc.peer).is_some_and(|&t| {
                    self.ticks.wrapping_sub(t) < self.loss.resend_interval.max(1)
                }),
            );
            let timer = self.timers.entry(rpc).or_default();
            if waits && heard {
                timer.heard();
            }
            let action = match timer.tick(phase, &self.loss) {
                Action::Resend if waits && probed => Action::None,
                Action::Resend if waits => {
                    self.peers_probed.insert(rpc.peer, self.ticks);
                    Action::Resend
                }
                a => a,
            };
            match action {
                Action::None => {}
                Action::Probe => probes.push(rpc),
                Action::NeedAck => self.control.push_back((rpc, Control::NeedAck)),
                Action::Resend => {
                    for (offset, length) in resend_requests(self.incoming.get(&rpc), u32::MAX) {
                        self.control.push_back((rpc, Control::Resend { offset, length }));
                    }
                }
                Action::Abort => {
                    self.stats.timeouts += 1;
                    self.end(rpc);
                    if rpc.id.is_client() {
                        // The ACK frees the RPC in egress (and tells the server, if it lives).
                        self.acks.push_back(rpc);
                        failed.push(Event::TimedOut { rpc });
                    }
                }
            }
        }
        self.probe(probes);
        failed
    }

    /// Messages waiting for their grants, silent long enough, probe their peers (a template
    /// naming one: the kernel looks at it and every message from its peer again): one probe
    /// per peer per resend interval, naming the one that waited longest since its last probe.
    fn probe(&mut self, mut due: Vec<RpcKey>) {
        due.sort_by_key(|rpc| self.rpc_probed.get(rpc).map_or(0, |&t| t.wrapping_add(1)));
        for rpc in due {
            let recent = self
                .grant_probed
                .get(&rpc.peer)
                .is_some_and(|&t| self.ticks.wrapping_sub(t) < self.loss.resend_interval.max(1));
            if !recent {
                self.grant_probed.insert(rpc.peer, self.ticks);
                self.rpc_probed.insert(rpc, self.ticks);
                self.grant_probes.push_back(rpc);
            }
        }
    }

    /// The RPC is over on our side: nothing more goes out for it.
    fn end(&mut self, rpc: RpcKey) {
        self.sender.remove(rpc);
        self.out.remove(&rpc);
        self.incoming.remove(&rpc);
        self.granted.remove(&rpc);
        self.waiting.remove(&rpc);
        self.serving.remove(&rpc);
        self.timers.remove(&rpc);
        self.rpc_probed.remove(&rpc);
    }

    /// Whether a frame waits to go out.
    pub fn tx_ready(&self) -> bool {
        self.control_ready() || self.sender.has_ready()
    }

    /// Whether a frame other than DATA waits to go out (ACK, gen template, probe, RESEND, BUSY,
    /// NEED_ACK, CUTOFFS): those go even while DATA is held back ([`super::pace::Backlog`]).
    pub fn control_ready(&self) -> bool {
        !self.acks.is_empty()
            || self.gen_due > 0
            || !self.grant_probes.is_empty()
            || !self.control.is_empty()
    }

    /// Writes the next frame to send into `frame` (TX header, then payload); returns its
    /// length, or `None` when nothing may go now (or `frame` is too short).
    pub fn next_frame(&mut self, frame: &mut [u8]) -> Option<usize> {
        self.next_frame_as(frame, true)
    }

    /// [`Endpoint::next_frame`], DATA only when `data` (else only what
    /// [`Endpoint::control_ready`] counts): the SRPT pick of the next segment is made only once
    /// the sender may send it.
    pub fn next_frame_as(&mut self, frame: &mut [u8], data: bool) -> Option<usize> {
        if frame.len() < TX_HDR_LEN {
            return None;
        }
        if let Some(rpc) = self.acks.pop_front() {
            let h = self.tx_hdr(rpc, etran_homa_tx_intent::ETRAN_HOMA_TX_ACK, 0, 0, 0, 0);
            write_hdr(frame, &h);
            return Some(TX_HDR_LEN);
        }
        // A probe only while its message still waits.
        while let Some(rpc) = self.grant_probes.pop_front() {
            if self.awaits_grant(rpc) {
                let h = self.tx_hdr(rpc, etran_homa_tx_intent::ETRAN_HOMA_TX_GEN, 0, 0, 0, 0);
                write_hdr(frame, &h);
                return Some(TX_HDR_LEN);
            }
        }
        if self.gen_due > 0 {
            self.gen_due -= 1;
            // A template names no RPC (id 0 on the wire): gen chooses.
            let none = RpcKey {
                peer: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                id: RpcId::from_wire(1),
            };
            let h = self.tx_hdr(none, etran_homa_tx_intent::ETRAN_HOMA_TX_GEN, 0, 0, 0, 0);
            write_hdr(frame, &h);
            return Some(TX_HDR_LEN);
        }
        // A RESEND, BUSY or NEED_ACK only while its RPC is in progress; a CUTOFFS while egress
        // still has the RPC (a client's until its ack goes: it rides on a later DATA).
        while let Some((rpc, c)) = self.control.pop_front() {
            if c != Control::Cutoffs && !self.known(rpc) {
                continue;
            }
            let h = match c {
                Control::Resend { offset, length } => {
                    self.stats.tx_resend += 1;
                    let n = match length {
                        ResendLength::Bytes(n) => n,
                        ResendLength::All => u32::MAX,
                    };
                    let intent = etran_homa_tx_intent::ETRAN_HOMA_TX_RESEND;
                    self.tx_hdr(rpc, intent, n, offset, 0, HIGH_PRIORITY)
                }
                Control::Busy => {
                    self.tx_hdr(rpc, etran_homa_tx_intent::ETRAN_HOMA_TX_BUSY, 0, 0, 0, 0)
                }
                Control::NeedAck => {
                    self.tx_hdr(rpc, etran_homa_tx_intent::ETRAN_HOMA_TX_NEED_ACK, 0, 0, 0, 0)
                }
                Control::Cutoffs => {
                    self.tx_hdr(rpc, etran_homa_tx_intent::ETRAN_HOMA_TX_CUTOFFS, 0, 0, 0, 0)
                }
            };
            write_hdr(frame, &h);
            return Some(TX_HDR_LEN);
        }
        if !data || frame.len() < TX_HDR_LEN + MAX_PAYLOAD as usize {
            return None;
        }
        let seg = self.sender.next_segment()?;
        let ack = self.held_acks.take_one(seg.key.peer);
        let buf = &self.out[&seg.key];
        let (start, end) = (seg.offset as usize, (seg.offset + seg.len) as usize);
        frame[TX_HDR_LEN..TX_HDR_LEN + (end - start)].copy_from_slice(&buf[start..end]);
        let mut h = self.tx_hdr(
            seg.key,
            etran_homa_tx_intent::ETRAN_HOMA_TX_DATA,
            buf.len() as u32,
            seg.offset,
            seg.len as u16,
            seg.priority,
        );
        h.ack_id = ack.map_or(0, RpcId::wire);
        write_hdr(frame, &h);
        Some(TX_HDR_LEN + seg.len as usize)
    }

    fn tx_hdr(
        &self,
        rpc: RpcKey,
        intent: etran_homa_tx_intent,
        message_length: u32,
        offset: u32,
        len: u16,
        priority: u8,
    ) -> etran_homa_tx_hdr {
        etran_homa_tx_hdr {
            key: homa_rpc_key {
                peer_ip: u32::from(*rpc.peer.ip()).to_be(),
                local_port: self.local_port.to_be(),
                peer_port: rpc.peer.port().to_be(),
                id: rpc.id.wire(),
            },
            ack_id: 0,
            message_length,
            offset,
            len,
            intent: intent.0 as u8,
            priority,
            reserved: 0,
        }
    }
}

fn write_hdr(frame: &mut [u8], h: &etran_homa_tx_hdr) {
    assert!(frame.len() >= TX_HDR_LEN);
    // SAFETY: plain data written without alignment into at least its size.
    unsafe { std::ptr::write_unaligned(frame.as_mut_ptr().cast::<etran_homa_tx_hdr>(), *h) }
}

/// The Homa packet of a frame ingress checked (Ethernet, IPv4 of any header length).
fn packet(frame: &[u8]) -> Option<Packet<'_>> {
    let ihl = usize::from(frame.get(14)? & 0x0f) * 4;
    Packet::decode(frame.get(14 + ihl..)?).ok()
}

/// A GRANT's offset and priority.
fn grant_of(frame: &[u8]) -> Option<(u32, u8)> {
    match packet(frame)?.body {
        Body::Grant { offset, priority, .. } => Some((offset, priority)),
        _ => None,
    }
}

/// A RESEND's range and priority.
fn resend_of(frame: &[u8]) -> Option<(u32, ResendLength, u8)> {
    match packet(frame)?.body {
        Body::Resend { offset, length, priority } => Some((offset, length, priority)),
        _ => None,
    }
}

/// A CUTOFFS packet's cutoffs.
fn cutoffs_of(frame: &[u8]) -> Option<Cutoffs> {
    match packet(frame)?.body {
        Body::Cutoffs { cutoffs, version } => Some(Cutoffs { cutoffs, version }),
        _ => None,
    }
}

/// An ACK packet's acks.
fn acks_of(frame: &[u8]) -> Vec<Ack> {
    match packet(frame).map(|p| p.body) {
        Some(Body::Ack(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    }
}

/// The ack a DATA packet carries, if any.
fn data_ack(frame: &[u8]) -> Option<Ack> {
    match packet(frame)?.body {
        Body::Data(d) => d.ack,
        _ => None,
    }
}

#[cfg(test)]
mod tests;
