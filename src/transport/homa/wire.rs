//! Homa packets as HomaModule puts them on the wire (IP protocol 146): typed encode and decode
//! of every type. The layouts are `src/bpf/homa/homa_wire.h`'s, read from the skeleton's BTF
//! types: every offset and size below is taken from those structs, never written twice, and the
//! tests hold them against upstream's numbers.
//!
//! [`Packet::decode`] takes the bytes after the IP header (as many as the IP total length
//! says: Ethernet padding excluded) and refuses anything malformed with a [`Malformed`] reason;
//! it never panics, whatever the input. [`Packet::encode`] writes the header (and a DATA
//! packet's payload) as HomaModule would, so either side can talk to it.
use std::{
    fmt,
    mem::{offset_of, size_of},
};

use crate::bpf::homa::types::{
    homa_ack, homa_ack_hdr, homa_common_hdr, homa_cutoffs_hdr, homa_data_hdr, homa_grant_hdr,
    homa_packet_type, homa_resend_hdr, homa_seg_hdr, homa_wire_limit,
};

/// IP protocol number (IANA).
pub const IPPROTO_HOMA: u8 = 146;
/// Priority levels: 0 (lowest) to 7.
pub const PRIORITIES: usize = homa_wire_limit::HOMA_MAX_PRIORITIES.0 as usize;
/// Acks one ACK packet carries.
pub const MAX_ACKS: usize = homa_wire_limit::HOMA_MAX_ACKS_PER_PKT.0 as usize;
/// Bytes of the common header, which every packet starts with.
pub const COMMON_LEN: usize = size_of::<homa_common_hdr>();
/// Bytes of a DATA packet's header, in front of its payload.
pub const DATA_LEN: usize = size_of::<homa_data_hdr>();
/// The all-ones word of `seg.offset` saying "the offset is in `sequence`", and of a RESEND's
/// `length` saying "everything".
const ALL_ONES: u32 = u32::MAX;

/// The IPv4 TOS byte that carries a priority (DSCP's top three bits).
pub fn tos(priority: u8) -> u8 {
    priority << 5
}

/// Byte offsets of every field, from the C structs.
mod at {
    use super::*;

    const ACK_ID: usize = offset_of!(homa_ack, client_id);
    const ACK_PORT: usize = offset_of!(homa_ack, server_port);
    pub const ACK_LEN: usize = size_of::<homa_ack>();

    pub const SPORT: usize = offset_of!(homa_common_hdr, sport);
    pub const DPORT: usize = offset_of!(homa_common_hdr, dport);
    pub const SEQUENCE: usize = offset_of!(homa_common_hdr, sequence);
    pub const TYPE: usize = offset_of!(homa_common_hdr, r#type);
    pub const DOFF: usize = offset_of!(homa_common_hdr, doff);
    pub const SENDER_ID: usize = offset_of!(homa_common_hdr, sender_id);

    pub const DATA_MESSAGE_LENGTH: usize = offset_of!(homa_data_hdr, message_length);
    pub const DATA_INCOMING: usize = offset_of!(homa_data_hdr, incoming);
    pub const DATA_ACK_ID: usize = offset_of!(homa_data_hdr, ack) + ACK_ID;
    pub const DATA_ACK_PORT: usize = offset_of!(homa_data_hdr, ack) + ACK_PORT;
    pub const DATA_CUTOFF_VERSION: usize = offset_of!(homa_data_hdr, cutoff_version);
    pub const DATA_RETRANSMIT: usize = offset_of!(homa_data_hdr, retransmit);
    pub const DATA_SEG_OFFSET: usize =
        offset_of!(homa_data_hdr, seg) + offset_of!(homa_seg_hdr, offset);

    pub const GRANT_OFFSET: usize = offset_of!(homa_grant_hdr, offset);
    pub const GRANT_PRIORITY: usize = offset_of!(homa_grant_hdr, priority);

    pub const RESEND_OFFSET: usize = offset_of!(homa_resend_hdr, offset);
    pub const RESEND_LENGTH: usize = offset_of!(homa_resend_hdr, length);
    pub const RESEND_PRIORITY: usize = offset_of!(homa_resend_hdr, priority);

    pub const CUTOFFS: usize = offset_of!(homa_cutoffs_hdr, unsched_cutoffs);
    pub const CUTOFFS_VERSION: usize = offset_of!(homa_cutoffs_hdr, cutoff_version);

    pub const ACK_NUM: usize = offset_of!(homa_ack_hdr, num_acks);
    pub const ACK_ACKS: usize = offset_of!(homa_ack_hdr, acks);

    /// The `i`th ack of an ACK packet: (client id, server port).
    pub fn ack(i: usize) -> (usize, usize) {
        let base = ACK_ACKS + i * ACK_LEN;
        (base + ACK_ID, base + ACK_PORT)
    }
}

/// A packet's type (`homa_common_hdr.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Data,
    Grant,
    Resend,
    RpcUnknown,
    Busy,
    Cutoffs,
    /// Asks the peer to freeze its debugging trace; decoded so that it can be ignored.
    Freeze,
    NeedAck,
    Ack,
}

impl Type {
    const ALL: [Type; 9] = [
        Type::Data,
        Type::Grant,
        Type::Resend,
        Type::RpcUnknown,
        Type::Busy,
        Type::Cutoffs,
        Type::Freeze,
        Type::NeedAck,
        Type::Ack,
    ];

    /// The type byte.
    pub fn byte(self) -> u8 {
        let t = match self {
            Type::Data => homa_packet_type::HOMA_DATA,
            Type::Grant => homa_packet_type::HOMA_GRANT,
            Type::Resend => homa_packet_type::HOMA_RESEND,
            Type::RpcUnknown => homa_packet_type::HOMA_RPC_UNKNOWN,
            Type::Busy => homa_packet_type::HOMA_BUSY,
            Type::Cutoffs => homa_packet_type::HOMA_CUTOFFS,
            Type::Freeze => homa_packet_type::HOMA_FREEZE,
            Type::NeedAck => homa_packet_type::HOMA_NEED_ACK,
            Type::Ack => homa_packet_type::HOMA_ACK,
        };
        t.0 as u8
    }

    pub fn from_byte(b: u8) -> Option<Type> {
        Type::ALL.into_iter().find(|t| t.byte() == b)
    }

    /// Bytes of its header: a shorter packet is malformed.
    pub fn header_len(self) -> usize {
        match self {
            Type::Data => DATA_LEN,
            Type::Grant => size_of::<homa_grant_hdr>(),
            Type::Resend => size_of::<homa_resend_hdr>(),
            Type::Cutoffs => size_of::<homa_cutoffs_hdr>(),
            Type::Ack => size_of::<homa_ack_hdr>(),
            Type::RpcUnknown | Type::Busy | Type::Freeze | Type::NeedAck => COMMON_LEN,
        }
    }

    /// The doff byte HomaModule writes: DATA names its whole header (TSO replicates it),
    /// control packets a plain TCP header's length.
    fn doff(self) -> u8 {
        let d = match self {
            Type::Data => homa_wire_limit::HOMA_DOFF_DATA,
            _ => homa_wire_limit::HOMA_DOFF_CONTROL,
        };
        d.0 as u8
    }
}

/// A client's word that it holds the whole response of an RPC: its server may forget it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ack {
    pub client_id: u64,
    pub server_port: u16,
}

/// The acks of an ACK packet: at most [`MAX_ACKS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Acks {
    len: usize,
    acks: [Ack; MAX_ACKS],
}

impl Acks {
    /// `None` when there are more than [`MAX_ACKS`].
    pub fn new(acks: &[Ack]) -> Option<Acks> {
        let mut a = Acks { len: acks.len(), ..Acks::default() };
        a.acks.get_mut(..acks.len())?.copy_from_slice(acks);
        Some(a)
    }

    pub fn as_slice(&self) -> &[Ack] {
        &self.acks[..self.len]
    }
}

/// The fields every packet has that Homa uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Common {
    pub sport: u16,
    pub dport: u16,
    /// The RPC's id as its sender numbers it (see [`super::id`]).
    pub sender_id: u64,
}

/// A DATA packet: one segment of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data<'a> {
    pub message_length: u32,
    /// The sender sends at least the bytes below this without further grants.
    pub incoming: u32,
    /// An ack of another RPC riding along (client to server).
    pub ack: Option<Ack>,
    /// The version of the receiver's cutoffs the sender uses; 0: none yet.
    pub cutoff_version: u16,
    /// Sent again, in answer to a RESEND.
    pub retransmit: bool,
    /// Where `payload` starts in the message.
    pub offset: u32,
    pub payload: &'a [u8],
}

/// What a RESEND asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResendLength {
    Bytes(u32),
    /// Everything sent so far: the receiver got nothing of the message.
    All,
}

/// What follows the common header, by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    Data(Data<'a>),
    /// The sender may send up to `offset` (exclusive), at `priority`.
    Grant {
        offset: u32,
        priority: u8,
    },
    /// Send `[offset, offset + length)` again, at `priority`.
    Resend {
        offset: u32,
        length: ResendLength,
        priority: u8,
    },
    /// The sender knows nothing of this RPC.
    RpcUnknown,
    /// The sender is alive but chooses not to send this RPC's data now.
    Busy,
    /// Unscheduled priorities to use toward the sender: the highest `i` with
    /// `cutoffs[i] >= length`; `version` is to be echoed in DATA.
    Cutoffs {
        cutoffs: [u32; PRIORITIES],
        version: u16,
    },
    Freeze,
    /// A server asks whether the client got the whole response.
    NeedAck,
    Ack(Acks),
}

impl Body<'_> {
    pub fn kind(&self) -> Type {
        match self {
            Body::Data(_) => Type::Data,
            Body::Grant { .. } => Type::Grant,
            Body::Resend { .. } => Type::Resend,
            Body::RpcUnknown => Type::RpcUnknown,
            Body::Busy => Type::Busy,
            Body::Cutoffs { .. } => Type::Cutoffs,
            Body::Freeze => Type::Freeze,
            Body::NeedAck => Type::NeedAck,
            Body::Ack(_) => Type::Ack,
        }
    }
}

/// One Homa packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub common: Common,
    pub body: Body<'a>,
}

/// Why bytes are not a Homa packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than its header (the common header when `kind` is `None`).
    Short {
        kind: Option<Type>,
        need: usize,
        got: usize,
    },
    UnknownType(u8),
    /// A DATA segment that runs past the end of its message.
    PastMessageEnd {
        offset: u32,
        len: usize,
        message_length: u32,
    },
    /// A GRANT or RESEND naming a priority beyond the levels.
    Priority(u8),
    /// An ACK packet claiming more acks than it holds.
    TooManyAcks(u16),
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::Short { kind: None, need, got } => {
                write!(f, "{got} bytes, shorter than the {need}-byte common header")
            }
            Malformed::Short { kind: Some(t), need, got } => {
                write!(f, "{t:?} packet of {got} bytes, shorter than its {need}-byte header")
            }
            Malformed::UnknownType(t) => write!(f, "unknown packet type {t:#04x}"),
            Malformed::PastMessageEnd { offset, len, message_length } => write!(
                f,
                "DATA of {len} bytes at offset {offset} runs past the message's {message_length}"
            ),
            Malformed::Priority(p) => write!(f, "priority {p} beyond the {PRIORITIES} levels"),
            Malformed::TooManyAcks(n) => write!(f, "ACK claims {n} acks, at most {MAX_ACKS} fit"),
        }
    }
}

impl std::error::Error for Malformed {}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

fn priority(p: u8) -> Result<u8, Malformed> {
    if usize::from(p) < PRIORITIES {
        Ok(p)
    } else {
        Err(Malformed::Priority(p))
    }
}

impl<'a> Packet<'a> {
    /// Reads the packet in `b` (the IP payload, exactly). Bytes past a control packet's
    /// header are ignored (HomaModule pads to a minimum length); a DATA packet's are its
    /// payload.
    pub fn decode(b: &'a [u8]) -> Result<Packet<'a>, Malformed> {
        if b.len() < COMMON_LEN {
            return Err(Malformed::Short { kind: None, need: COMMON_LEN, got: b.len() });
        }
        let kind = Type::from_byte(b[at::TYPE]).ok_or(Malformed::UnknownType(b[at::TYPE]))?;
        if b.len() < kind.header_len() {
            return Err(Malformed::Short {
                kind: Some(kind),
                need: kind.header_len(),
                got: b.len(),
            });
        }
        let common = Common {
            sport: u16_at(b, at::SPORT),
            dport: u16_at(b, at::DPORT),
            sender_id: u64_at(b, at::SENDER_ID),
        };
        let body = match kind {
            Type::Data => Body::Data(Self::decode_data(b)?),
            Type::Grant => Body::Grant {
                offset: u32_at(b, at::GRANT_OFFSET),
                priority: priority(b[at::GRANT_PRIORITY])?,
            },
            Type::Resend => Body::Resend {
                offset: u32_at(b, at::RESEND_OFFSET),
                length: match u32_at(b, at::RESEND_LENGTH) {
                    ALL_ONES => ResendLength::All,
                    n => ResendLength::Bytes(n),
                },
                priority: priority(b[at::RESEND_PRIORITY])?,
            },
            Type::RpcUnknown => Body::RpcUnknown,
            Type::Busy => Body::Busy,
            Type::Cutoffs => Body::Cutoffs {
                cutoffs: std::array::from_fn(|i| u32_at(b, at::CUTOFFS + 4 * i)),
                version: u16_at(b, at::CUTOFFS_VERSION),
            },
            Type::Freeze => Body::Freeze,
            Type::NeedAck => Body::NeedAck,
            Type::Ack => {
                let n = u16_at(b, at::ACK_NUM);
                if usize::from(n) > MAX_ACKS {
                    return Err(Malformed::TooManyAcks(n));
                }
                let mut acks = Acks { len: n.into(), ..Acks::default() };
                for (i, a) in acks.acks[..n.into()].iter_mut().enumerate() {
                    let (id, port) = at::ack(i);
                    *a = Ack { client_id: u64_at(b, id), server_port: u16_at(b, port) };
                }
                Body::Ack(acks)
            }
        };
        Ok(Packet { common, body })
    }

    fn decode_data(b: &'a [u8]) -> Result<Data<'a>, Malformed> {
        let payload = &b[DATA_LEN..];
        let message_length = u32_at(b, at::DATA_MESSAGE_LENGTH);
        let offset = match u32_at(b, at::DATA_SEG_OFFSET) {
            ALL_ONES => u32_at(b, at::SEQUENCE),
            o => o,
        };
        if u64::from(offset) + payload.len() as u64 > u64::from(message_length) {
            return Err(Malformed::PastMessageEnd { offset, len: payload.len(), message_length });
        }
        let client_id = u64_at(b, at::DATA_ACK_ID);
        Ok(Data {
            message_length,
            incoming: u32_at(b, at::DATA_INCOMING),
            ack: (client_id != 0)
                .then(|| Ack { client_id, server_port: u16_at(b, at::DATA_ACK_PORT) }),
            cutoff_version: u16_at(b, at::DATA_CUTOFF_VERSION),
            retransmit: b[at::DATA_RETRANSMIT] != 0,
            offset,
            payload,
        })
    }

    /// Bytes [`Packet::encode`] writes.
    pub fn wire_len(&self) -> usize {
        match &self.body {
            Body::Data(d) => DATA_LEN + d.payload.len(),
            body => body.kind().header_len(),
        }
    }

    /// Appends the packet to `out`. Unused fields are zero; a DATA packet carries its offset
    /// both in `seg.offset` and in `sequence`, as TSO-free HomaModule does.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let kind = self.body.kind();
        let start = out.len();
        out.resize(start + kind.header_len(), 0);
        let b = &mut out[start..];
        put(b, at::SPORT, &self.common.sport.to_be_bytes());
        put(b, at::DPORT, &self.common.dport.to_be_bytes());
        b[at::TYPE] = kind.byte();
        b[at::DOFF] = kind.doff();
        put(b, at::SENDER_ID, &self.common.sender_id.to_be_bytes());
        match &self.body {
            Body::Data(d) => {
                put(b, at::SEQUENCE, &d.offset.to_be_bytes());
                put(b, at::DATA_MESSAGE_LENGTH, &d.message_length.to_be_bytes());
                put(b, at::DATA_INCOMING, &d.incoming.to_be_bytes());
                let ack = d.ack.unwrap_or_default();
                put(b, at::DATA_ACK_ID, &ack.client_id.to_be_bytes());
                put(b, at::DATA_ACK_PORT, &ack.server_port.to_be_bytes());
                put(b, at::DATA_CUTOFF_VERSION, &d.cutoff_version.to_be_bytes());
                b[at::DATA_RETRANSMIT] = d.retransmit.into();
                put(b, at::DATA_SEG_OFFSET, &d.offset.to_be_bytes());
                out.extend_from_slice(d.payload);
            }
            Body::Grant { offset, priority } => {
                put(b, at::GRANT_OFFSET, &offset.to_be_bytes());
                b[at::GRANT_PRIORITY] = *priority;
            }
            Body::Resend { offset, length, priority } => {
                let n = match length {
                    ResendLength::Bytes(n) => *n,
                    ResendLength::All => ALL_ONES,
                };
                put(b, at::RESEND_OFFSET, &offset.to_be_bytes());
                put(b, at::RESEND_LENGTH, &n.to_be_bytes());
                b[at::RESEND_PRIORITY] = *priority;
            }
            Body::Cutoffs { cutoffs, version } => {
                for (i, c) in cutoffs.iter().enumerate() {
                    put(b, at::CUTOFFS + 4 * i, &c.to_be_bytes());
                }
                put(b, at::CUTOFFS_VERSION, &version.to_be_bytes());
            }
            Body::Ack(acks) => {
                put(b, at::ACK_NUM, &(acks.len as u16).to_be_bytes());
                for (i, a) in acks.as_slice().iter().enumerate() {
                    let (id, port) = at::ack(i);
                    put(b, id, &a.client_id.to_be_bytes());
                    put(b, port, &a.server_port.to_be_bytes());
                }
            }
            Body::RpcUnknown | Body::Busy | Body::Freeze | Body::NeedAck => {}
        }
    }
}

#[cfg(test)]
mod tests;
