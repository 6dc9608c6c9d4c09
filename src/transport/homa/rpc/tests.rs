use super::*;
use crate::transport::homa::{
    acks,
    id::{HostIds, IdBlock},
    wire::{Acks, Common, Data},
};
use etran_testkit::fixture::Rng;

const A: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 1000);
const B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 2000);
/// The longest message that goes without a grant.
const UNSCHED: u32 = crate::bpf::homa::types::etran_homa_limit::ETRAN_HOMA_UNSCHED_LIMIT.0;

fn read_hdr(frame: &[u8]) -> etran_homa_tx_hdr {
    // SAFETY: plain data read from at least its size.
    unsafe { std::ptr::read_unaligned(frame.as_ptr().cast()) }
}

/// What egress and then the peer's ingress make of a TX frame `from` sent: the RX metadata,
/// the payload and the whole frame (Ethernet, IPv4, Homa).
fn wire(from: SocketAddrV4, tx: &[u8]) -> (etran_homa_rx_meta, Vec<u8>, Vec<u8>) {
    let h = read_hdr(tx);
    let payload = &tx[TX_HDR_LEN..];
    assert_eq!(usize::from(h.len), payload.len());
    assert_eq!(u16::from_be(h.key.local_port), from.port());
    let common =
        Common { sport: from.port(), dport: u16::from_be(h.key.peer_port), sender_id: h.key.id };
    let body = if h.intent == etran_homa_tx_intent::ETRAN_HOMA_TX_DATA.0 as u8 {
        Body::Data(Data {
            message_length: h.message_length,
            incoming: h.message_length,
            ack: (h.ack_id != 0)
                .then_some(Ack { client_id: h.ack_id, server_port: u16::from_be(h.key.peer_port) }),
            cutoff_version: 0,
            retransmit: false,
            offset: h.offset,
            payload,
        })
    } else if h.intent == etran_homa_tx_intent::ETRAN_HOMA_TX_ACK.0 as u8 {
        let ack = Ack { client_id: h.key.id, server_port: u16::from_be(h.key.peer_port) };
        Body::Ack(Acks::new(&[ack]).unwrap())
    } else if h.intent == etran_homa_tx_intent::ETRAN_HOMA_TX_RESEND.0 as u8 {
        let length = match h.message_length {
            u32::MAX => ResendLength::All,
            n => ResendLength::Bytes(n),
        };
        Body::Resend { offset: h.offset, length, priority: h.priority }
    } else if h.intent == etran_homa_tx_intent::ETRAN_HOMA_TX_BUSY.0 as u8 {
        Body::Busy
    } else if h.intent == etran_homa_tx_intent::ETRAN_HOMA_TX_NEED_ACK.0 as u8 {
        Body::NeedAck
    } else if h.intent == etran_homa_tx_intent::ETRAN_HOMA_TX_CUTOFFS.0 as u8 {
        // Egress writes the host's cutoffs (etran_homa_cutoffs).
        let Cutoffs { cutoffs, version } = Cutoffs::RECEIVER;
        Body::Cutoffs { cutoffs, version }
    } else {
        // Egress writes the offset from the RPC's state.
        Body::Grant { offset: 0, priority: 0 }
    };
    let packet = Packet { common, body };
    let mut frame = vec![0u8; 14];
    frame.extend_from_slice(&[0x45; 20]);
    packet.encode(&mut frame);
    let meta = etran_homa_rx_meta {
        id: h.key.id ^ 1,
        peer_ip: u32::from(*from.ip()).to_be(),
        local_port: h.key.peer_port,
        peer_port: from.port().to_be(),
        offset: h.offset,
        message_length: h.message_length,
        payload_off: (14 + 20 + 56) * u16::from(!payload.is_empty()),
        payload_len: h.len,
        r#type: packet.body.kind().byte(),
        // This wire's ingress grants every message whole.
        grant_packets: h.message_length.div_ceil(MAX_PAYLOAD) as u16,
        ..Default::default()
    };
    (meta, payload.to_vec(), frame)
}

/// Every frame `e` has to send, through the wire.
fn drain(e: &mut Endpoint, from: SocketAddrV4) -> Vec<(etran_homa_rx_meta, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2048];
    while let Some(n) = e.next_frame(&mut buf) {
        out.push(wire(from, &buf[..n]));
    }
    assert!(!e.tx_ready());
    out
}

/// Shuffles the frames and repeats some of them.
fn mess<T: Clone>(rng: &mut Rng, mut v: Vec<T>) -> Vec<T> {
    for _ in 0..v.len() / 4 {
        let j = rng.below(v.len());
        v.push(v[j].clone());
    }
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
}

fn message(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

#[test]
fn rpcs_complete_byte_exact_through_reordering_and_duplicates() {
    let mut ids = HostIds::default();
    let (mut a, mut b) =
        (Endpoint::new(A.port(), ids.block()), Endpoint::new(B.port(), ids.block()));
    let mut rng = Rng(0x5eed_1234);
    let mut sent = HashMap::new();
    for i in 0..40 {
        let len = match i {
            0 => 1,
            1 => UNSCHED as usize,
            2 => MAX_PAYLOAD as usize,
            _ => 1 + rng.below(UNSCHED as usize),
        };
        let req = message(&mut rng, len);
        let rpc = a.start_request(B, req.clone()).unwrap();
        assert!(rpc.id.is_client());
        sent.insert(rpc, req);
    }
    // Requests reach the server in any order, some twice; it answers each with its reverse.
    let mut answered = 0;
    for (meta, payload, frame) in mess(&mut rng, drain(&mut a, A)) {
        if let Some(ev) = b.on_rx(&meta, &payload, &frame) {
            let Event::Request { rpc, bytes } = ev else { panic!("{ev:?}") };
            assert_eq!(rpc.peer, A);
            assert_eq!(bytes, sent[&RpcKey { peer: B, id: RpcId::from_wire(rpc.id.wire()) }]);
            b.respond(rpc, bytes.iter().rev().copied().collect()).unwrap();
            assert_eq!(b.respond(rpc, vec![1]), Err(Refused::NotServing));
            answered += 1;
        }
    }
    assert_eq!(answered, sent.len());
    assert_eq!(b.stats().rx_refused, 0);
    // Responses come back the same way; each completes its RPC once and an ACK follows.
    let mut done = 0;
    for (meta, payload, frame) in mess(&mut rng, drain(&mut b, B)) {
        if let Some(ev) = a.on_rx(&meta, &payload, &frame) {
            let Event::Response { rpc, bytes } = ev else { panic!("{ev:?}") };
            let want: Vec<u8> = sent[&rpc].iter().rev().copied().collect();
            assert_eq!(bytes, want);
            done += 1;
        }
    }
    assert_eq!(done, sent.len());
    assert_eq!(a.in_progress(), 0);
    assert_eq!(b.in_progress(), sent.len(), "the server holds responses until the ACKs");
    // No request follows for the acks to ride on: they go alone after the hold.
    assert!(drain(&mut a, A).is_empty() && a.ticking());
    ticks(&mut a, acks::HOLD_TICKS - 1);
    assert!(drain(&mut a, A).is_empty());
    ticks(&mut a, 1);
    let acks = drain(&mut a, A);
    assert!(!a.ticking());
    assert_eq!(acks.len(), sent.len());
    for (meta, payload, frame) in acks {
        assert_eq!(b.on_rx(&meta, &payload, &frame), None);
    }
    assert_eq!(b.in_progress(), 0);
    assert!(!b.tx_ready());
}

#[test]
fn a_long_message_waits_for_grants() {
    let mut ids = HostIds::default();
    let mut a = Endpoint::new(A.port(), ids.block());
    let rpc = a.start_request(B, vec![7; 100_000]).unwrap();
    let first: u32 = drain(&mut a, A).iter().map(|f| f.0.payload_len as u32).sum();
    assert_eq!(first, UNSCHED, "the unscheduled bytes, then nothing");
    let grant = Body::Grant { offset: UNSCHED + 2 * MAX_PAYLOAD, priority: 0 };
    let (meta, frame) = control(B, A, rpc, grant);
    assert_eq!(a.on_rx(&meta, &[], &frame), None);
    let more: Vec<u32> = drain(&mut a, A).iter().map(|f| f.0.offset).collect();
    assert_eq!(more, [UNSCHED, UNSCHED + MAX_PAYLOAD]);
}

/// A client outlives its id block: once it is used up requests are refused (the app library
/// then asks the daemon for another) until a new block comes, and numbering goes on from it.
#[test]
fn a_used_up_id_block_refuses_until_renewed() {
    let mut a = Endpoint::new(A.port(), IdBlock::of(2, 2));
    assert!(!a.ids_used_up());
    let first = a.start_request(B, vec![1]).unwrap();
    let second = a.start_request(B, vec![2]).unwrap();
    assert_eq!((first.id.wire(), second.id.wire()), (2, 4));
    assert!(a.ids_used_up());
    assert_eq!(a.start_request(B, vec![3]), Err(Refused::NoIds));
    a.renew_ids(IdBlock::of(1 << 20, 1));
    assert!(!a.ids_used_up());
    assert_eq!(a.start_request(B, vec![3]).unwrap().id.wire(), 1 << 20);
}

#[test]
fn refusals() {
    let mut a = Endpoint::new(A.port(), HostIds::default().block());
    assert_eq!(a.start_request(B, vec![]), Err(Refused::Length(0)));
    let rpc = RpcKey { peer: B, id: RpcId::from_wire(2) };
    assert_eq!(a.respond(rpc, vec![1]), Err(Refused::NotServing));
    // DATA of an RPC we never started.
    let (meta, payload, frame) = wire(B, &{
        let mut e = Endpoint::new(B.port(), HostIds::default().block());
        e.serving.insert(RpcKey { peer: A, id: RpcId::from_wire(2) });
        e.respond(RpcKey { peer: A, id: RpcId::from_wire(2) }, vec![1, 2, 3]).unwrap();
        let mut buf = vec![0u8; 2048];
        let n = e.next_frame(&mut buf).unwrap();
        buf.truncate(n);
        buf
    });
    assert_eq!(a.on_rx(&meta, &payload, &frame), None);
    assert_eq!(a.stats().rx_stale, 1);
}

/// The TX headers of every frame `e` has to send.
fn drain_tx(e: &mut Endpoint) -> Vec<etran_homa_tx_hdr> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2048];
    while let Some(n) = e.next_frame(&mut buf) {
        out.push(read_hdr(&buf[..n]));
    }
    out
}

const GEN: u8 = etran_homa_tx_intent::ETRAN_HOMA_TX_GEN.0 as u8;

/// The app never writes a GRANT: for each RPC ingress says it queued for gen, it sends one gen
/// template naming no RPC (the kernel chooses what it becomes), duplicates included (each is
/// ingress's count).
#[test]
fn gen_templates_go_as_ingress_queued_them() {
    let mut ids = HostIds::default();
    let (mut a, mut b) =
        (Endpoint::new(A.port(), ids.block()), Endpoint::new(B.port(), ids.block()));
    a.start_request(B, vec![3; 100_000]).unwrap();
    let mut frames = drain(&mut a, A).into_iter();
    let (mut meta, payload, frame) = frames.next().unwrap();
    meta.flags = 2 * GEN_ONE;
    assert_eq!(b.on_rx(&meta, &payload, &frame), None);
    meta.flags = GEN_ONE;
    assert_eq!(b.on_rx(&meta, &payload, &frame), None);
    let out = drain_tx(&mut b);
    assert_eq!(out.len(), 3);
    for h in out {
        assert_eq!((h.intent, h.key.id, h.key.peer_ip, h.key.peer_port), (GEN, 0, 0, 0));
        assert_eq!(u16::from_be(h.key.local_port), B.port(), "from its own port");
        assert_ne!(h.intent, etran_homa_tx_intent::ETRAN_HOMA_TX_GRANT.0 as u8);
    }
}

/// Requests of `sizes` bytes from A to B, whose unscheduled bytes reach B with no grant past
/// them: A, B, and A's keys of the requests.
fn requests_waiting_for_grants(sizes: &[usize]) -> (Endpoint, Endpoint, Vec<RpcKey>) {
    let mut ids = HostIds::default();
    let (mut a, mut b) =
        (Endpoint::new(A.port(), ids.block()), Endpoint::new(B.port(), ids.block()));
    let rpcs: Vec<RpcKey> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| a.start_request(B, vec![i as u8; n]).unwrap())
        .collect();
    let frames = drain(&mut a, A);
    let sent = frames.iter().map(|f| u32::from(f.0.payload_len)).sum::<u32>();
    assert_eq!(sent, sizes.len() as u32 * UNSCHED);
    let unsched_packets = UNSCHED.div_ceil(MAX_PAYLOAD) as u16;
    for (mut meta, payload, frame) in frames {
        // The scheduler gave nothing past the unscheduled bytes.
        meta.grant_packets = unsched_packets;
        assert_eq!(b.on_rx(&meta, &payload, &frame), None);
    }
    (a, b, rpcs)
}

/// Messages whose granted bytes all arrived wait for the scheduler: nothing is missing, so no
/// RESEND; once silent for GRANT_PROBE_TICKS they probe their peer (a template naming one of
/// them), one probe per peer per resend interval however many wait; the timeout still runs.
#[test]
fn messages_waiting_for_their_grants_probe_once_per_peer_and_never_resend() {
    let (_, mut b, _) = requests_waiting_for_grants(&[200_000, 300_000]);
    assert!(!b.tx_ready());
    let mut probes = Vec::new();
    for t in 1..=20u32 {
        ticks(&mut b, 1);
        for h in drain_tx(&mut b) {
            assert_eq!(h.intent, GEN, "tick {t}: only probes, no RESEND");
            assert_ne!(h.key.id, 0, "a probe names its RPC");
            probes.push(t);
        }
    }
    // After GRANT_PROBE_TICKS (2) silent ticks, and every resend interval (5) after.
    assert_eq!(probes, [2, 7, 12, 17]);
    // Silence past the timeout still ends them (a peer gone while we waited).
    b.set_loss_config(LossConfig { timeout_ticks: 50, ..LOSS });
    ticks(&mut b, 50);
    assert_eq!(b.stats().timeouts, 2);
}

/// A message waiting for our own grant stays while its peer is heard from, however long our
/// scheduler makes it wait: here its client's probes (RESENDs naming it, answered with BUSY),
/// which alone end no RPC's silence. Before, it was given up after the timeout of its own
/// silence: on a loaded host a long request that SRPT kept waiting for a second was forgotten
/// by its server, whose client, hearing the server through its other RPCs, waited for the
/// response for ever. A peer silent for the timeout still ends it.
#[test]
fn a_message_waiting_for_its_grant_stays_while_its_peer_lives() {
    let (_, mut b, rpcs) = requests_waiting_for_grants(&[200_000]);
    let rpc = rpcs[0];
    b.set_loss_config(LossConfig { timeout_ticks: 50, ..LOSS });
    let waiting = RpcKey { peer: A, id: RpcId::from_wire(rpc.id.wire()) };
    let probe = Body::Resend { offset: 0, length: ResendLength::Bytes(MAX_PAYLOAD), priority: 7 };
    for round in 0..100 {
        assert_eq!(ticks(&mut b, 5), [], "round {round}");
        let (meta, frame) = control(A, B, waiting, probe);
        assert_eq!(b.on_rx(&meta, &[], &frame), None);
        let tx = drain_tx(&mut b);
        assert!(tx.iter().any(|h| h.intent == etran_homa_tx_intent::ETRAN_HOMA_TX_BUSY.0 as u8));
    }
    assert_eq!((b.stats().timeouts, b.in_progress()), (0, 1), "10 timeouts long, it stays");
    ticks(&mut b, 50);
    assert_eq!((b.stats().timeouts, b.in_progress()), (1, 0), "its peer silent for the timeout");
}

/// A control packet from `from` about `rpc` (the receiver's key) as ingress hands it over.
fn control(
    from: SocketAddrV4,
    to: SocketAddrV4,
    rpc: RpcKey,
    body: Body<'_>,
) -> (etran_homa_rx_meta, Vec<u8>) {
    let packet = Packet {
        common: Common { sport: from.port(), dport: to.port(), sender_id: rpc.id.wire() ^ 1 },
        body,
    };
    let mut frame = vec![0u8; 14];
    frame.extend_from_slice(&[0x45; 20]);
    packet.encode(&mut frame);
    let meta = etran_homa_rx_meta {
        id: rpc.id.wire(),
        peer_ip: u32::from(*from.ip()).to_be(),
        local_port: to.port().to_be(),
        peer_port: from.port().to_be(),
        r#type: packet.body.kind().byte(),
        ..Default::default()
    };
    (meta, frame)
}

/// Ticks `e` `n` times; returns the events.
fn ticks(e: &mut Endpoint, n: u32) -> Vec<Event> {
    (0..n).flat_map(|_| e.tick()).collect()
}

/// The RESENDs among `frames`: (offset, length asked, all ones for all).
fn resends(frames: &[(etran_homa_rx_meta, Vec<u8>, Vec<u8>)]) -> Vec<(u32, u32)> {
    frames
        .iter()
        .filter(|f| f.0.r#type == Type::Resend.byte())
        .map(|f| (f.0.offset, f.0.message_length))
        .collect()
}

#[test]
fn a_lost_request_packet_is_asked_for_and_sent_again() {
    let mut ids = HostIds::default();
    let (mut a, mut b) =
        (Endpoint::new(A.port(), ids.block()), Endpoint::new(B.port(), ids.block()));
    let req = message(&mut Rng(9), 5000);
    a.start_request(B, req.clone()).unwrap();
    let frames = drain(&mut a, A);
    assert_eq!(frames.len(), 4);
    // The second packet is lost.
    for (i, (meta, payload, frame)) in frames.iter().enumerate() {
        if i != 1 {
            assert_eq!(b.on_rx(meta, payload, frame), None);
        }
    }
    assert_eq!(ticks(&mut b, 4), []);
    assert!(!b.tx_ready(), "silent for less than the resend ticks");
    assert_eq!(ticks(&mut b, 1), []);
    let asked = drain(&mut b, B);
    assert_eq!(resends(&asked), [(MAX_PAYLOAD, MAX_PAYLOAD)], "the gap, nothing past the end");
    // The client's own timer ran meanwhile (it asks for the response): its packets are old.
    ticks(&mut a, 5);
    assert_eq!(resends(&drain(&mut a, A)).len(), 1);
    let (meta, payload, frame) = &asked[0];
    assert_eq!(a.on_rx(meta, payload, frame), None);
    let again = drain(&mut a, A);
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].0.offset, again[0].0.payload_len), (MAX_PAYLOAD, MAX_PAYLOAD as u16));
    let (meta, payload, frame) = &again[0];
    let Some(Event::Request { bytes, .. }) = b.on_rx(meta, payload, frame) else { panic!() };
    assert_eq!(bytes, req);
    assert_eq!((a.stats().rx_resend, b.stats().tx_resend), (1, 1));
}

#[test]
fn a_lost_tail_is_asked_for_to_the_end() {
    let mut ids = HostIds::default();
    let (mut a, mut b) =
        (Endpoint::new(A.port(), ids.block()), Endpoint::new(B.port(), ids.block()));
    a.start_request(B, vec![5; 5000]).unwrap();
    let frames = drain(&mut a, A);
    for (meta, payload, frame) in &frames[..2] {
        assert_eq!(b.on_rx(meta, payload, frame), None);
    }
    ticks(&mut b, 5);
    // From the furthest byte to the message's end: egress cuts it at the grant.
    assert_eq!(resends(&drain(&mut b, B)), [(2 * MAX_PAYLOAD, 5000 - 2 * MAX_PAYLOAD)]);
    ticks(&mut b, 4);
    assert!(!b.tx_ready());
    ticks(&mut b, 1);
    assert_eq!(resends(&drain(&mut b, B)).len(), 1, "again every resend interval");
}

#[test]
fn a_lost_request_brings_rpc_unknown_and_goes_again_whole() {
    let mut ids = HostIds::default();
    let (mut a, mut b) =
        (Endpoint::new(A.port(), ids.block()), Endpoint::new(B.port(), ids.block()));
    let rpc = a.start_request(B, vec![1; 100]).unwrap();
    assert_eq!(drain(&mut a, A).len(), 1, "lost on the way");
    ticks(&mut a, 5);
    let asked = drain(&mut a, A);
    assert_eq!(resends(&asked), [(0, MAX_PAYLOAD)], "the response's first packet");
    // The server's ingress knows no such RPC and answers for it.
    let (meta, frame) = control(B, A, rpc, Body::RpcUnknown);
    assert_eq!(a.on_rx(&meta, &[], &frame), None);
    let again = drain(&mut a, A);
    assert_eq!(again.len(), 1);
    let (meta, payload, frame) = &again[0];
    assert!(matches!(b.on_rx(meta, payload, frame), Some(Event::Request { .. })));
    assert_eq!(a.stats().restarts, 1);
}

#[test]
fn a_server_answers_busy_while_it_has_nothing_to_send() {
    let mut ids = HostIds::default();
    let (mut a, mut b) =
        (Endpoint::new(A.port(), ids.block()), Endpoint::new(B.port(), ids.block()));
    let rpc = a.start_request(B, vec![1; 100]).unwrap();
    let (meta, payload, frame) = &drain(&mut a, A)[0];
    let Some(Event::Request { rpc: srv, .. }) = b.on_rx(meta, payload, frame) else { panic!() };
    // The app holds the request for long: each RESEND gets a BUSY, which keeps the client
    // from giving up.
    for _ in 0..300 {
        ticks(&mut a, 5);
        for (meta, payload, frame) in drain(&mut a, A) {
            assert_eq!(b.on_rx(&meta, &payload, &frame), None);
        }
        let busy = drain(&mut b, B);
        assert_eq!(busy.iter().map(|f| f.0.r#type).collect::<Vec<_>>(), [Type::Busy.byte()]);
        for (meta, payload, frame) in busy {
            assert_eq!(a.on_rx(&meta, &payload, &frame), None);
        }
    }
    b.respond(srv, vec![2; 10]).unwrap();
    let (meta, payload, frame) = &drain(&mut b, B)[0];
    assert_eq!(a.on_rx(meta, payload, frame), Some(Event::Response { rpc, bytes: vec![2; 10] }));
}

#[test]
fn a_lost_response_is_sent_again_from_what_was_sent() {
    let mut ids = HostIds::default();
    let (mut a, mut b) =
        (Endpoint::new(A.port(), ids.block()), Endpoint::new(B.port(), ids.block()));
    let rpc = a.start_request(B, vec![1; 100]).unwrap();
    let (meta, payload, frame) = &drain(&mut a, A)[0];
    let Some(Event::Request { rpc: srv, .. }) = b.on_rx(meta, payload, frame) else { panic!() };
    b.respond(srv, vec![3; 3000]).unwrap();
    assert_eq!(drain(&mut b, B).len(), 3, "all lost");
    ticks(&mut b, 5);
    ticks(&mut a, 5);
    let (meta, payload, frame) = &drain(&mut a, A)[0];
    assert_eq!(b.on_rx(meta, payload, frame), None);
    // Its response all sent, the server asked for the ACK meanwhile (NEED_ACK).
    let first: Vec<_> =
        drain(&mut b, B).into_iter().filter(|f| f.0.r#type == Type::Data.byte()).collect();
    assert_eq!(first.iter().map(|f| f.0.offset).collect::<Vec<_>>(), [0], "the first packet");
    assert_eq!(a.on_rx(&first[0].0, &first[0].1, &first[0].2), None);
    // It names the length: the rest is asked for as a gap.
    ticks(&mut a, 5);
    let asked = drain(&mut a, A);
    assert_eq!(resends(&asked), [(MAX_PAYLOAD, 3000 - MAX_PAYLOAD)]);
    assert_eq!(b.on_rx(&asked[0].0, &asked[0].1, &asked[0].2), None);
    let again = drain(&mut b, B);
    assert_eq!(again.iter().map(|f| f.0.offset).collect::<Vec<_>>(), [1424, 2848]);
    let events: Vec<_> = again.iter().filter_map(|f| a.on_rx(&f.0, &f.1, &f.2)).collect();
    assert_eq!(events, [Event::Response { rpc, bytes: vec![3; 3000] }]);
}

/// One RPC from `a` (at [`A`]) to `b` (at [`B`]): a 100-byte request, a 10-byte response, which
/// `a` receives whole (its ack held from then on).
fn one_rpc(a: &mut Endpoint, b: &mut Endpoint) -> RpcKey {
    let rpc = a.start_request(B, vec![1; 100]).unwrap();
    let (meta, payload, frame) = &drain(a, A)[0];
    let Some(Event::Request { rpc: srv, .. }) = b.on_rx(meta, payload, frame) else { panic!() };
    b.respond(srv, vec![2; 10]).unwrap();
    let (meta, payload, frame) = &drain(b, B)[0];
    assert_eq!(a.on_rx(meta, payload, frame), Some(Event::Response { rpc, bytes: vec![2; 10] }));
    rpc
}

/// The client's ACK is lost: the server, its response all sent, asks for it (NEED_ACK, two ticks
/// on, then every five), and the ACK that answers it (from the client's ingress) ends the RPC.
#[test]
fn a_server_asks_for_the_ack_of_its_response() {
    let mut ids = HostIds::default();
    let (mut a, mut b) =
        (Endpoint::new(A.port(), ids.block()), Endpoint::new(B.port(), ids.block()));
    one_rpc(&mut a, &mut b);
    ticks(&mut a, acks::HOLD_TICKS);
    let ack = drain(&mut a, A);
    assert_eq!(ack.iter().map(|f| f.0.r#type).collect::<Vec<_>>(), [Type::Ack.byte()]);
    let types = |e: &mut Endpoint| drain(e, B).iter().map(|f| f.0.r#type).collect::<Vec<_>>();
    // The first tick finds the response all sent; the client then has 2 whole ticks
    // (HomaModule's `request_ack_ticks`) before the server asks.
    ticks(&mut b, 2);
    assert!(types(&mut b).is_empty());
    ticks(&mut b, 1);
    assert_eq!(types(&mut b), [Type::NeedAck.byte()]);
    ticks(&mut b, 4);
    assert!(types(&mut b).is_empty());
    ticks(&mut b, 1);
    assert_eq!(types(&mut b), [Type::NeedAck.byte()], "again every resend interval");
    assert_eq!(b.in_progress(), 1);
    let (meta, payload, frame) = &ack[0];
    assert_eq!(b.on_rx(meta, payload, frame), None);
    assert_eq!(b.in_progress(), 0);
    ticks(&mut b, 20);
    assert!(types(&mut b).is_empty());
}

/// Back-to-back RPCs to one server: each request carries the ack of the RPC before it, so no
/// ACK packet goes, and the server forgets each RPC as the next request arrives; the last ack
/// goes alone once held [`acks::HOLD_TICKS`](super::acks::HOLD_TICKS), or at once when the server asks (NEED_ACK).
#[test]
fn acks_ride_on_the_next_request_to_the_same_server() {
    let mut ids = HostIds::default();
    let (mut a, mut b) =
        (Endpoint::new(A.port(), ids.block()), Endpoint::new(B.port(), ids.block()));
    let other = SocketAddrV4::new(*B.ip(), B.port() + 1);
    let mut last = None;
    for i in 0..5u8 {
        let rpc = a.start_request(B, vec![i; 100]).unwrap();
        let req = drain(&mut a, A);
        assert_eq!(req.len(), 1, "the request alone: no ACK packet");
        let acked = data_ack(&req[0].2).map(|a| (a.client_id, a.server_port));
        let want = last.map(|prev: RpcId| (prev.wire(), B.port()));
        assert_eq!(acked, want, "request {i} carries the last RPC's ack");
        let (meta, payload, frame) = &req[0];
        let Some(Event::Request { rpc: srv, .. }) = b.on_rx(meta, payload, frame) else { panic!() };
        assert_eq!(b.in_progress(), 1, "the acked RPC is over on the server");
        b.respond(srv, vec![i; 10]).unwrap();
        let (meta, payload, frame) = &drain(&mut b, B)[0];
        assert!(a.on_rx(meta, payload, frame).is_some());
        ticks(&mut a, acks::HOLD_TICKS - 1);
        last = Some(rpc.id);
    }
    // A request to another server port carries none of them.
    a.start_request(other, vec![9; 10]).unwrap();
    let req = drain(&mut a, A);
    assert_eq!(data_ack(&req[0].2), None);
    // The server asks: the ack goes at once.
    let rpc = RpcKey { peer: B, id: last.unwrap() };
    let (meta, frame) = control(B, A, rpc, Body::NeedAck);
    assert_eq!(a.stats().acks_asked, 0, "every ack before rode on a request");
    assert_eq!(a.on_rx(&meta, &[], &frame), None);
    assert_eq!(a.stats().acks_asked, 1, "counted: the server asked");
    let out = drain(&mut a, A);
    assert_eq!(out.iter().map(|f| f.0.r#type).collect::<Vec<_>>(), [Type::Ack.byte()]);
    assert_eq!(b.on_rx(&out[0].0, &out[0].1, &out[0].2), None);
    assert_eq!(b.in_progress(), 0);
    ticks(&mut a, 10);
    assert!(drain(&mut a, A).iter().all(|f| f.0.r#type != Type::Ack.byte()), "it went once");
}

/// A pass slower than the hold (an emulated CPU, an app the host left unscheduled): the response
/// arrives, the hold's ticks pass before the next request is built, and the tick of the pass
/// that sends it comes first. The request still carries the ack, and no ACK packet goes.
#[test]
fn a_request_after_a_slow_pass_still_carries_the_ack() {
    let mut ids = HostIds::default();
    let (mut a, mut b) =
        (Endpoint::new(A.port(), ids.block()), Endpoint::new(B.port(), ids.block()));
    let rpc = one_rpc(&mut a, &mut b);
    ticks(&mut a, acks::HOLD_TICKS - 1);
    a.start_request(B, vec![3; 100]).unwrap();
    ticks(&mut a, 1);
    let out = drain(&mut a, A);
    assert_eq!(out.iter().map(|f| f.0.r#type).collect::<Vec<_>>(), [Type::Data.byte()]);
    let acked = data_ack(&out[0].2).map(|a| (a.client_id, a.server_port));
    assert_eq!(acked, Some((rpc.id.wire(), B.port())));
}

#[test]
fn a_silent_server_fails_the_rpc_with_a_timeout() {
    let mut a = Endpoint::new(A.port(), HostIds::default().block());
    a.set_loss_config(LossConfig { timeout_ticks: 50, ..LOSS });
    let rpc = a.start_request(B, vec![1; 100]).unwrap();
    drain(&mut a, A);
    assert_eq!(ticks(&mut a, 49), []);
    assert_eq!(resends(&drain(&mut a, A)).len(), 9, "ticks 5, 10, .. 45");
    assert_eq!(ticks(&mut a, 1), [Event::TimedOut { rpc }]);
    assert_eq!(a.in_progress(), 0);
    // The ACK frees the client's RPC in egress; nothing else goes.
    let out = drain(&mut a, A);
    assert_eq!(out.iter().map(|f| f.0.r#type).collect::<Vec<_>>(), [Type::Ack.byte()]);
    assert_eq!(ticks(&mut a, 100), []);
    assert_eq!(a.stats().timeouts, 1);
}

/// The server misses the end of a request while the client waits for the response: both ask
/// (the client for the response, the server for the request's tail), and the client's RESENDs,
/// answered with BUSY, must not keep the server from asking.
#[test]
fn a_resend_does_not_silence_the_other_sides_timer() {
    let mut ids = HostIds::default();
    let (mut a, mut b) =
        (Endpoint::new(A.port(), ids.block()), Endpoint::new(B.port(), ids.block()));
    a.start_request(B, vec![4; 3000]).unwrap();
    let frames = drain(&mut a, A);
    assert_eq!(b.on_rx(&frames[0].0, &frames[0].1, &frames[0].2), None, "the rest is lost");
    let (mut asked, mut requests) = (Vec::new(), 0);
    for _ in 0..20 {
        ticks(&mut a, 1);
        for (meta, payload, frame) in drain(&mut a, A) {
            requests += usize::from(b.on_rx(&meta, &payload, &frame).is_some());
        }
        ticks(&mut b, 1);
        for f in drain(&mut b, B) {
            if f.0.r#type == Type::Resend.byte() {
                asked.push((f.0.offset, f.0.message_length));
            }
            a.on_rx(&f.0, &f.1, &f.2);
        }
    }
    assert_eq!(asked[0], (MAX_PAYLOAD, 3000 - MAX_PAYLOAD), "the server asked for the rest");
    assert_eq!(requests, 1, "and got it");
}

/// The TX headers of every frame `e` has to send.
fn headers(e: &mut Endpoint) -> Vec<etran_homa_tx_hdr> {
    let mut buf = vec![0u8; 2048];
    std::iter::from_fn(|| e.next_frame(&mut buf).map(|_| read_hdr(&buf))).collect()
}

/// A DATA whose sender echoed stale cutoffs (ingress's flag) brings one CUTOFFS a tick to its
/// host; the CUTOFFS sets the priorities of that sender's unscheduled bytes by message size
/// (HomaModule's cutoffs), where before it sent every message at level 6.
#[test]
fn stale_cutoffs_are_announced_once_a_tick_and_taken() {
    let mut ids = HostIds::default();
    let (mut a, mut b) =
        (Endpoint::new(A.port(), ids.block()), Endpoint::new(B.port(), ids.block()));
    let cutoffs = etran_homa_tx_intent::ETRAN_HOMA_TX_CUTOFFS.0 as u8;
    // Requests from A reach B flagged stale; B's CUTOFFS intents.
    let stale = |a: &mut Endpoint, b: &mut Endpoint| -> Vec<etran_homa_tx_hdr> {
        for (mut meta, payload, frame) in drain(a, A) {
            meta.flags |= CUTOFFS_DUE;
            b.on_rx(&meta, &payload, &frame);
        }
        headers(b).into_iter().filter(|h| h.intent == cutoffs).collect()
    };
    // The priority of the first packet of a request of each size from A to B.
    let levels = |a: &mut Endpoint| -> Vec<u8> {
        [100, 2800, 15_000, 100_000]
            .iter()
            .map(|&len| {
                a.start_request(B, vec![2; len]).unwrap();
                headers(a)[0].priority
            })
            .collect()
    };
    for len in [100, 1000] {
        a.start_request(B, vec![1; len]).unwrap();
    }
    let sent = stale(&mut a, &mut b);
    assert_eq!(sent.len(), 1, "two stale DATA in one tick: one CUTOFFS");
    assert_eq!(u16::from_be(sent[0].key.peer_port), A.port());
    a.start_request(B, vec![3; 10]).unwrap();
    assert!(stale(&mut a, &mut b).is_empty(), "the same tick");
    b.tick();
    a.start_request(B, vec![3; 10]).unwrap();
    assert_eq!(stale(&mut a, &mut b).len(), 1, "the next tick: again");
    assert_eq!(levels(&mut a), [6, 6, 6, 6], "no cutoffs from B yet");
    // B's CUTOFFS reaches A.
    let mut t = vec![0u8; TX_HDR_LEN];
    write_hdr(&mut t, &sent[0]);
    let (meta, payload, frame) = wire(B, &t);
    assert_eq!(meta.r#type, Type::Cutoffs.byte());
    assert_eq!(a.on_rx(&meta, &payload, &frame), None);
    assert_eq!(levels(&mut a), [7, 6, 5, 4], "HomaModule's cutoffs");
    assert_eq!(a.stats().rx_ignored, 0);
}

/// A client whose request went as far as it was granted waits for the server's scheduler: while
/// the server is heard from (DATA, GRANT or BUSY of any RPC, each tick), it sends no RESEND;
/// once the server falls silent, it asks again (a dead server must still be found out).
#[test]
fn a_request_waiting_for_a_live_servers_grant_sends_no_resend() {
    let mut a = Endpoint::new(A.port(), HostIds::default().block());
    a.start_request(B, vec![4; 200_000]).unwrap();
    let other = a.start_request(B, vec![5; 10]).unwrap();
    let sent = drain(&mut a, A);
    assert_eq!(sent.iter().map(|f| u32::from(f.0.payload_len)).sum::<u32>(), UNSCHED + 10);
    // The server answers the short request only when asked, with BUSYs meanwhile.
    let (busy, busy_frame) = control(B, A, other, Body::Busy);
    for _ in 0..40 {
        ticks(&mut a, 1);
        assert_eq!(a.on_rx(&busy, &[], &busy_frame), None);
        assert_eq!(resends(&drain(&mut a, A)), [], "the server is alive");
    }
    // Silent now: the long request's RESEND comes after the resend ticks, and the short one's.
    ticks(&mut a, LOSS.resend_ticks);
    assert_eq!(resends(&drain(&mut a, A)).len(), 2);
}

/// Requests waiting for their grants from a silent server ask whether it lives once per resend
/// interval between them, not each of them.
#[test]
fn requests_waiting_for_grants_probe_their_server_once_between_them() {
    let mut ids = HostIds::default();
    let mut a = Endpoint::new(A.port(), ids.block());
    for _ in 0..10 {
        a.start_request(B, vec![4; 200_000]).unwrap();
    }
    drain(&mut a, A);
    let mut asked = 0;
    for _ in 0..50 {
        ticks(&mut a, 1);
        asked += resends(&drain(&mut a, A)).len();
    }
    // Silent from tick 5 on: a probe at 5, 10, ... 50.
    assert_eq!(asked, 10, "one probe per resend interval for the 10 requests");
}
