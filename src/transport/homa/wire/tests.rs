use super::*;
use etran_testkit::fixture::{fuzz_seed, Rng};

/// Every field's offset and every header's size, as upstream's homa_wire.h lays them out
/// (PlatformLab/HomaModule 9edb95896ba8), against our C structs as Rust sees them.
#[test]
fn layouts_match_upstream() {
    let ours_vs_upstream: &[(&str, usize, usize)] = &[
        ("common.sport", offset_of!(homa_common_hdr, sport), 0),
        ("common.dport", offset_of!(homa_common_hdr, dport), 2),
        ("common.sequence", offset_of!(homa_common_hdr, sequence), 4),
        ("common.ack", offset_of!(homa_common_hdr, ack), 8),
        ("common.type", offset_of!(homa_common_hdr, r#type), 11),
        ("common.doff", offset_of!(homa_common_hdr, doff), 12),
        ("common.flags", offset_of!(homa_common_hdr, flags), 13),
        ("common.window", offset_of!(homa_common_hdr, window), 14),
        ("common.checksum", offset_of!(homa_common_hdr, checksum), 16),
        ("common.urgent", offset_of!(homa_common_hdr, urgent), 18),
        ("common.sender_id", offset_of!(homa_common_hdr, sender_id), 20),
        ("sizeof common", size_of::<homa_common_hdr>(), 28),
        ("ack.client_id", offset_of!(homa_ack, client_id), 0),
        ("ack.server_port", offset_of!(homa_ack, server_port), 8),
        ("sizeof ack", size_of::<homa_ack>(), 10),
        ("data.message_length", offset_of!(homa_data_hdr, message_length), 28),
        ("data.incoming", offset_of!(homa_data_hdr, incoming), 32),
        ("data.ack", offset_of!(homa_data_hdr, ack), 36),
        ("data.cutoff_version", offset_of!(homa_data_hdr, cutoff_version), 46),
        ("data.retransmit", offset_of!(homa_data_hdr, retransmit), 48),
        ("data.pad", offset_of!(homa_data_hdr, pad), 49),
        ("data.seg", offset_of!(homa_data_hdr, seg), 52),
        ("sizeof data", size_of::<homa_data_hdr>(), 56),
        ("grant.offset", offset_of!(homa_grant_hdr, offset), 28),
        ("grant.priority", offset_of!(homa_grant_hdr, priority), 32),
        ("sizeof grant", size_of::<homa_grant_hdr>(), 33),
        ("resend.offset", offset_of!(homa_resend_hdr, offset), 28),
        ("resend.length", offset_of!(homa_resend_hdr, length), 32),
        ("resend.priority", offset_of!(homa_resend_hdr, priority), 36),
        ("sizeof resend", size_of::<homa_resend_hdr>(), 37),
        ("cutoffs.unsched_cutoffs", offset_of!(homa_cutoffs_hdr, unsched_cutoffs), 28),
        ("cutoffs.cutoff_version", offset_of!(homa_cutoffs_hdr, cutoff_version), 60),
        ("sizeof cutoffs", size_of::<homa_cutoffs_hdr>(), 62),
        ("ack_hdr.num_acks", offset_of!(homa_ack_hdr, num_acks), 28),
        ("ack_hdr.acks", offset_of!(homa_ack_hdr, acks), 30),
        ("sizeof ack_hdr", size_of::<homa_ack_hdr>(), 80),
    ];
    for (name, ours, upstream) in ours_vs_upstream {
        assert_eq!(ours, upstream, "{name}");
    }
    let types = [
        (Type::Data, 0x10),
        (Type::Grant, 0x11),
        (Type::Resend, 0x12),
        (Type::RpcUnknown, 0x13),
        (Type::Busy, 0x14),
        (Type::Cutoffs, 0x15),
        (Type::Freeze, 0x16),
        (Type::NeedAck, 0x17),
        (Type::Ack, 0x18),
    ];
    for (t, byte) in types {
        assert_eq!(t.byte(), byte, "{t:?}");
        assert_eq!(Type::from_byte(byte), Some(t));
    }
    for t in [Type::RpcUnknown, Type::Busy, Type::Freeze, Type::NeedAck] {
        assert_eq!(t.header_len(), 28, "{t:?} is the common header alone");
    }
    assert_eq!((PRIORITIES, MAX_ACKS, IPPROTO_HOMA), (8, 5, 146));
    assert_eq!(tos(7), 0xe0, "priority in the TOS's top 3 bits");
}

const COMMON: Common = Common { sport: 40_000, dport: 99, sender_id: 0x0102_0304_0506_0708 };

/// A DATA packet byte by byte as HomaModule sends one without TSO: the offset in `sequence`
/// and `seg.offset` all ones, doff 14 words.
#[test]
fn decodes_homamodule_data() {
    let mut b = vec![
        0x9c, 0x40, 0x00, 0x63, // sport 40000, dport 99
        0x00, 0x00, 0x05, 0x90, // sequence: offset 1424
        0, 0, 0, 0x10, 0xe0, 0, 0, 0, // ack[3], type DATA, doff, flags, window
        0, 0, 0, 0, // checksum, urgent
        1, 2, 3, 4, 5, 6, 7, 8, // sender id
        0x00, 0x00, 0x27, 0x10, // message_length 10000
        0x00, 0x00, 0x9c, 0x40, // incoming 40000
        0, 0, 0, 0, 0, 0, 0, 42, 0x1f, 0x90, // ack: client 42, server port 8080
        0x00, 0x03, 1, 0, 0, 0, // cutoff_version 3, retransmit, pad
        0xff, 0xff, 0xff, 0xff, // seg.offset: see sequence
    ];
    b.extend_from_slice(b"payload");
    let p = Packet::decode(&b).expect("valid");
    assert_eq!(p.common, COMMON);
    assert_eq!(
        p.body,
        Body::Data(Data {
            message_length: 10_000,
            incoming: 40_000,
            ack: Some(Ack { client_id: 42, server_port: 8080 }),
            cutoff_version: 3,
            retransmit: true,
            offset: 1424,
            payload: b"payload",
        })
    );
    // We write the offset in both places; HomaModule reads seg.offset when it is not all ones.
    let mut ours = Vec::new();
    p.encode(&mut ours);
    assert_eq!(ours[..52], b[..52]);
    assert_eq!(ours[52..56], 1424u32.to_be_bytes());
    assert_eq!(ours[56..], *b"payload");
}

/// A GRANT byte by byte, and the control doff.
#[test]
fn encodes_a_grant_as_homamodule() {
    let p = Packet { common: COMMON, body: Body::Grant { offset: 0x0001_0000, priority: 3 } };
    let mut b = Vec::new();
    p.encode(&mut b);
    assert_eq!(b.len(), 33);
    assert_eq!(b[11], 0x11, "type");
    assert_eq!(b[12], 0x50, "doff: 5 words");
    assert_eq!(b[20..28], COMMON.sender_id.to_be_bytes());
    assert_eq!(b[28..33], [0, 1, 0, 0, 3]);
    assert_eq!(Packet::decode(&b), Ok(p));
}

fn one_of_each() -> Vec<Packet<'static>> {
    let acks = [
        Ack { client_id: 2, server_port: 1 },
        Ack { client_id: u64::MAX - 1, server_port: 65_535 },
    ];
    let mut cutoffs = [0u32; PRIORITIES];
    cutoffs[7] = 200;
    cutoffs[0] = i32::MAX as u32;
    let bodies = [
        Body::Data(Data {
            message_length: 5,
            incoming: 5,
            ack: None,
            cutoff_version: 0,
            retransmit: false,
            offset: 0,
            payload: b"hello",
        }),
        Body::Grant { offset: 60_000, priority: 0 },
        Body::Resend { offset: 1, length: ResendLength::Bytes(1424), priority: 7 },
        Body::Resend { offset: 0, length: ResendLength::All, priority: 7 },
        Body::RpcUnknown,
        Body::Busy,
        Body::Cutoffs { cutoffs, version: 9 },
        Body::Freeze,
        Body::NeedAck,
        Body::Ack(Acks::new(&acks).expect("fits")),
        Body::Ack(Acks::new(&[]).expect("fits")),
    ];
    bodies.into_iter().map(|body| Packet { common: COMMON, body }).collect()
}

#[test]
fn every_type_round_trips() {
    for p in one_of_each() {
        let mut b = Vec::new();
        p.encode(&mut b);
        assert_eq!(b.len(), p.wire_len(), "{p:?}");
        assert_eq!(Packet::decode(&b), Ok(p));
        // Padding after a control header is ignored.
        if p.body.kind() != Type::Data {
            b.extend_from_slice(&[0; 8]);
            assert_eq!(Packet::decode(&b), Ok(p), "padded {p:?}");
        }
    }
}

#[test]
fn short_packets_are_refused_with_their_reason() {
    for p in one_of_each() {
        let mut b = Vec::new();
        p.encode(&mut b);
        let kind = p.body.kind();
        for cut in 0..kind.header_len() {
            let want = if cut < COMMON_LEN {
                Malformed::Short { kind: None, need: COMMON_LEN, got: cut }
            } else {
                Malformed::Short { kind: Some(kind), need: kind.header_len(), got: cut }
            };
            assert_eq!(Packet::decode(&b[..cut]), Err(want), "{kind:?} cut at {cut}");
        }
    }
}

#[test]
fn inconsistent_packets_are_refused_with_their_reason() {
    let mut b = Vec::new();
    Packet { common: COMMON, body: Body::Busy }.encode(&mut b);
    b[11] = 0x19;
    assert_eq!(Packet::decode(&b), Err(Malformed::UnknownType(0x19)));
    b[11] = 0x0f;
    assert_eq!(Packet::decode(&b), Err(Malformed::UnknownType(0x0f)));

    let mut b = Vec::new();
    Packet { common: COMMON, body: Body::Grant { offset: 1, priority: 1 } }.encode(&mut b);
    b[32] = 8;
    assert_eq!(Packet::decode(&b), Err(Malformed::Priority(8)));

    let mut b = Vec::new();
    Packet {
        common: COMMON,
        body: Body::Resend { offset: 1, length: ResendLength::All, priority: 1 },
    }
    .encode(&mut b);
    b[36] = 200;
    assert_eq!(Packet::decode(&b), Err(Malformed::Priority(200)));

    let mut b = Vec::new();
    Packet { common: COMMON, body: Body::Ack(Acks::default()) }.encode(&mut b);
    b[28..30].copy_from_slice(&6u16.to_be_bytes());
    assert_eq!(Packet::decode(&b), Err(Malformed::TooManyAcks(6)));

    let data = |offset, payload| Data {
        message_length: 10,
        incoming: 10,
        ack: None,
        cutoff_version: 1,
        retransmit: false,
        offset,
        payload,
    };
    let mut b = Vec::new();
    Packet { common: COMMON, body: Body::Data(data(8, b"abc")) }.encode(&mut b);
    assert_eq!(
        Packet::decode(&b),
        Err(Malformed::PastMessageEnd { offset: 8, len: 3, message_length: 10 })
    );
    // The offset is near u32::MAX: the check must not wrap.
    let mut b = Vec::new();
    Packet { common: COMMON, body: Body::Data(data(u32::MAX - 1, b"abc")) }.encode(&mut b);
    assert!(matches!(Packet::decode(&b), Err(Malformed::PastMessageEnd { .. })));
    // Exactly up to the end is fine.
    let mut b = Vec::new();
    let p = Packet { common: COMMON, body: Body::Data(data(7, b"abc")) };
    p.encode(&mut b);
    assert_eq!(Packet::decode(&b), Ok(p));
    assert!(Malformed::TooManyAcks(6).to_string().contains("6 acks"));
}

fn random_packet<'a>(rng: &mut Rng, payload: &'a [u8]) -> Packet<'a> {
    let common = Common {
        sport: rng.next_u64() as u16,
        dport: rng.next_u64() as u16,
        sender_id: rng.next_u64(),
    };
    let prio = rng.below(PRIORITIES) as u8;
    let body = match rng.below(9) {
        0 => {
            let payload = &payload[..rng.below(payload.len() + 1)];
            let offset = rng.below(1 << 25) as u32;
            let message_length = offset + payload.len() as u32 + rng.below(1000) as u32;
            let ack = (rng.below(2) == 0)
                .then(|| Ack { client_id: rng.next_u64() | 1, server_port: rng.next_u64() as u16 });
            Body::Data(Data {
                message_length,
                incoming: rng.next_u64() as u32,
                ack,
                cutoff_version: rng.next_u64() as u16,
                retransmit: rng.below(2) == 0,
                offset,
                payload,
            })
        }
        1 => Body::Grant { offset: rng.next_u64() as u32, priority: prio },
        2 => Body::Resend {
            offset: rng.next_u64() as u32,
            length: match rng.below(4) {
                0 => ResendLength::All,
                _ => ResendLength::Bytes(rng.below(u32::MAX as usize) as u32),
            },
            priority: prio,
        },
        3 => Body::RpcUnknown,
        4 => Body::Busy,
        5 => Body::Cutoffs {
            cutoffs: std::array::from_fn(|_| rng.next_u64() as u32),
            version: rng.next_u64() as u16,
        },
        6 => Body::Freeze,
        7 => Body::NeedAck,
        _ => {
            let acks: Vec<Ack> = (0..rng.below(MAX_ACKS + 1))
                .map(|_| Ack { client_id: rng.next_u64(), server_port: rng.next_u64() as u16 })
                .collect();
            Body::Ack(Acks::new(&acks).expect("fits"))
        }
    };
    Packet { common, body }
}

/// Random valid packets round trip; random damage to them (truncation, changed bytes) and
/// random bytes never panic the decoder, and whatever it accepts encodes to bytes it decodes
/// the same way again.
#[test]
fn randomized_packets_round_trip_and_damage_never_panics() {
    let mut rng = Rng(fuzz_seed("homa wire", 0x5eed_f00d));
    let payload: Vec<u8> = (0..1500).map(|_| rng.next_u64() as u8).collect();
    for _ in 0..20_000 {
        let p = random_packet(&mut rng, &payload);
        let mut b = Vec::new();
        p.encode(&mut b);
        assert_eq!(Packet::decode(&b), Ok(p));

        match rng.below(3) {
            0 => b.truncate(rng.below(b.len())),
            1 => {
                for _ in 0..=rng.below(4) {
                    let i = rng.below(b.len());
                    b[i] = rng.next_u64() as u8;
                }
            }
            _ => b = (0..rng.below(120)).map(|_| rng.next_u64() as u8).collect(),
        }
        if let Ok(q) = Packet::decode(&b) {
            let mut again = Vec::new();
            q.encode(&mut again);
            assert_eq!(Packet::decode(&again), Ok(q), "from {b:02x?}");
        }
    }
}
