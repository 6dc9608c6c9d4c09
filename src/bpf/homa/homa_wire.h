/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Homa's packets on the wire, as today's HomaModule sends them (IP protocol 146; the layout its
 * homa_wire.h has had since mid-2024). Followed at PlatformLab/HomaModule commit
 * 9edb95896ba874dcb64064a51099ae4b38c84617 (homa_wire.h last changed in 40891f01b290).
 *
 * Defined once, here: the BPF programs parse and write packets with these structs; Rust takes
 * every offset and size from them through the skeleton's BTF types (transport/homa/wire.rs),
 * and a Rust test holds them against a table of upstream's offsets. Every multi-byte field is
 * big-endian.
 *
 * The common header mirrors TCP's so that NICs can segment and checksum Homa as if it were TCP:
 * ports and sequence where TCP has them, the type in the low byte of TCP's ack field, doff where
 * TCP's data offset is. Homa itself uses only the ports, type, doff and sender id. */
#ifndef ETRAN_HOMA_WIRE_H
#define ETRAN_HOMA_WIRE_H

#include <linux/types.h>

#define IPPROTO_HOMA 146

/* homa_common_hdr.type. FREEZE only asks the peer to freeze its debugging trace. */
enum homa_packet_type {
	HOMA_DATA = 0x10,
	HOMA_GRANT = 0x11,
	HOMA_RESEND = 0x12,
	HOMA_RPC_UNKNOWN = 0x13,
	HOMA_BUSY = 0x14,
	HOMA_CUTOFFS = 0x15,
	HOMA_FREEZE = 0x16,
	HOMA_NEED_ACK = 0x17,
	HOMA_ACK = 0x18,
};

/* Counts and values the layouts below are built from. */
enum homa_wire_limit {
	HOMA_MAX_PRIORITIES = 8,   /* priority levels: 0 lowest .. 7; on the wire as TOS prio << 5 */
	HOMA_MAX_ACKS_PER_PKT = 5, /* acks one ACK packet carries */
	HOMA_MAX_HEADER = 90,      /* the largest header (upstream's bound; ACK is 80 today) */
	/* doff (the high nibble is TCP's data offset in 4-byte words): a DATA packet names its
	 * whole header, which TSO copies into every segment; control packets say 20, a plain TCP
	 * header, because some NICs drop other values. */
	HOMA_DOFF_DATA = (56 / 4) << 4,
	HOMA_DOFF_CONTROL = (20 / 4) << 4,
};

/* Starts every packet (28 bytes). */
struct homa_common_hdr {
	__be16 sport;
	__be16 dport;
	__be32 sequence; /* DATA: the segment's offset when seg.offset says so; else unused */
	__u8 ack[3];     /* unused (the high bytes of TCP's ack field) */
	__u8 type;       /* enum homa_packet_type */
	__u8 doff;       /* HOMA_DOFF_DATA or HOMA_DOFF_CONTROL */
	__u8 flags;      /* unused (TCP's flags) */
	__be16 window;   /* unused */
	__be16 checksum; /* unused: Homa does not checksum its packets */
	__be16 urgent;   /* unused */
	/* The RPC as its sender numbers it: clients number their RPCs with even ids, and the
	 * server uses the client's id + 1, so the low bit says the packet comes from the server,
	 * and the receiver's own id for the RPC is sender_id ^ 1. */
	__be64 sender_id;
} __attribute__((packed));

/* Tells a server it may forget an RPC: the client got the whole response. */
struct homa_ack {
	__be64 client_id; /* 0: no ack */
	__be16 server_port;
} __attribute__((packed));

/* Where a DATA packet's payload sits in its message. */
struct homa_seg_hdr {
	/* All ones: the offset is in common.sequence (a segment of a TSO frame that the NIC
	 * renumbered). */
	__be32 offset;
} __attribute__((packed));

/* DATA (56 bytes), then the payload: the bytes of the message from seg.offset to the end of
 * the packet (there is no length field). */
struct homa_data_hdr {
	struct homa_common_hdr common;
	__be32 message_length; /* the whole message */
	/* The sender will send at least the bytes below this offset without further grants:
	 * what the receiver learns of the unscheduled bytes. */
	__be32 incoming;
	struct homa_ack ack; /* piggy-backed ack of another RPC (client to server) */
	__be16 cutoff_version; /* of the latest CUTOFFS from the receiver; 0: none yet */
	__u8 retransmit;       /* 1: sent again, in answer to a RESEND */
	__u8 pad[3];
	struct homa_seg_hdr seg;
} __attribute__((packed));

/* GRANT (33 bytes): the receiver lets the sender send up to offset (exclusive). */
struct homa_grant_hdr {
	struct homa_common_hdr common;
	__be32 offset;
	__u8 priority; /* for the DATA the grant lets out */
} __attribute__((packed));

/* RESEND (37 bytes): the receiver asks for [offset, offset + length) again. */
struct homa_resend_hdr {
	struct homa_common_hdr common;
	__be32 offset;
	__be32 length; /* all ones: everything sent so far (nothing arrived yet) */
	__u8 priority; /* for the resent DATA */
} __attribute__((packed));

/* CUTOFFS (62 bytes): which unscheduled priority the recipient should use for messages to the
 * sender of this packet: the highest level i with unsched_cutoffs[i] >= the message length. */
struct homa_cutoffs_hdr {
	struct homa_common_hdr common;
	__be32 unsched_cutoffs[HOMA_MAX_PRIORITIES];
	__be16 cutoff_version; /* to be echoed in the recipient's DATA */
} __attribute__((packed));

/* ACK (80 bytes): a client's acks, answering NEED_ACK or when it holds too many. */
struct homa_ack_hdr {
	struct homa_common_hdr common;
	__be16 num_acks; /* the leading valid entries of acks */
	struct homa_ack acks[HOMA_MAX_ACKS_PER_PKT];
} __attribute__((packed));

/* RPC_UNKNOWN, BUSY, FREEZE and NEED_ACK are the common header alone. */

/* The layouts, checked where they are defined; upstream's numbers, field by field, are held
 * against the Rust view of these structs in transport/homa/wire.rs. */
#define HOMA_WIRE_AT(type, field, off) \
	_Static_assert(__builtin_offsetof(struct type, field) == (off), #type "." #field)
#define HOMA_WIRE_SIZE(type, size) _Static_assert(sizeof(struct type) == (size), #type)

HOMA_WIRE_SIZE(homa_common_hdr, 28);
HOMA_WIRE_AT(homa_common_hdr, sequence, 4);
HOMA_WIRE_AT(homa_common_hdr, type, 11);
HOMA_WIRE_AT(homa_common_hdr, doff, 12);
HOMA_WIRE_AT(homa_common_hdr, checksum, 16);
HOMA_WIRE_AT(homa_common_hdr, sender_id, 20);
HOMA_WIRE_SIZE(homa_ack, 10);
HOMA_WIRE_SIZE(homa_data_hdr, 56);
HOMA_WIRE_AT(homa_data_hdr, message_length, 28);
HOMA_WIRE_AT(homa_data_hdr, incoming, 32);
HOMA_WIRE_AT(homa_data_hdr, ack, 36);
HOMA_WIRE_AT(homa_data_hdr, cutoff_version, 46);
HOMA_WIRE_AT(homa_data_hdr, retransmit, 48);
HOMA_WIRE_AT(homa_data_hdr, seg, 52);
HOMA_WIRE_SIZE(homa_grant_hdr, 33);
HOMA_WIRE_SIZE(homa_resend_hdr, 37);
HOMA_WIRE_SIZE(homa_cutoffs_hdr, 62);
HOMA_WIRE_AT(homa_cutoffs_hdr, cutoff_version, 60);
HOMA_WIRE_SIZE(homa_ack_hdr, 80);
_Static_assert(sizeof(struct homa_ack_hdr) <= HOMA_MAX_HEADER, "largest header");
_Static_assert(HOMA_DOFF_DATA == (sizeof(struct homa_data_hdr) / 4) << 4, "DATA doff");

#undef HOMA_WIRE_AT
#undef HOMA_WIRE_SIZE

/* The wire's share of etran_homa_layouts (homa.h), which carries them into BTF. */
struct homa_wire_layouts {
	enum homa_packet_type type;
	enum homa_wire_limit limit;
	struct homa_data_hdr data;
	struct homa_grant_hdr grant;
	struct homa_resend_hdr resend;
	struct homa_cutoffs_hdr cutoffs;
	struct homa_ack_hdr ack;
};

#endif
