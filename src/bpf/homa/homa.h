/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* etran's Homa: what the BPF programs and Rust must agree on beyond the wire format
 * (homa_wire.h): limits, the fast-path state (port bindings, RPCs, peers), the RX metadata in
 * front of every frame ingress hands an app and the TX header in front of every frame an app
 * sends. Addresses and ports stay in network order, as on the wire; ids, lengths and offsets are
 * host order. */
#ifndef ETRAN_HOMA_H
#define ETRAN_HOMA_H

#include <linux/bpf.h>
#include <linux/types.h>

#include "common/transport.h"
#include "homa/homa_wire.h"

/* Limits on Homa traffic (an enum so that they reach BTF, hence Rust). */
enum etran_homa_limit {
	/* The most payload one DATA packet carries: an Ethernet MTU less IPv4 and the DATA
	 * header. Senders cut messages into packets of this size from offset 0, and grants
	 * end on these boundaries, so no packet but a message's last is short. */
	ETRAN_HOMA_MAX_PAYLOAD = 1500 - 20 - 56,
	/* The longest message (64 MiB). HomaModule stops at 1,000,000 bytes; its users ask for
	 * more, and etran carries at least 16 MB. */
	ETRAN_HOMA_MAX_MESSAGE = 1 << 26,
	/* Bytes of a message a sender may send before any grant: HomaModule's unsched_bytes
	 * (homa_utils.c; the original eTran used 60,000). Egress rounds it up to whole packets. */
	ETRAN_HOMA_UNSCHED_BYTES = 40000,
	/* The unscheduled bytes of a message at least this long: ETRAN_HOMA_UNSCHED_BYTES
	 * rounded up to whole packets. Shorter messages go whole. */
	ETRAN_HOMA_UNSCHED_LIMIT = (ETRAN_HOMA_UNSCHED_BYTES + ETRAN_HOMA_MAX_PAYLOAD - 1) /
				   ETRAN_HOMA_MAX_PAYLOAD * ETRAN_HOMA_MAX_PAYLOAD,
	/* A grant moves by at least this much (or to the message's end, or from a message whose
	 * granted bytes all arrived), so that a GRANT is owed every few DATA packets, not after
	 * each: 8 packets. */
	ETRAN_HOMA_GRANT_STEP = 8 * ETRAN_HOMA_MAX_PAYLOAD,
	/* Messages the grant scheduler (homa_sched.h) holds at once: a bounded array, scanned
	 * whole, because the rbtree kfuncs are missing on 6.1. A message finding it full waits
	 * (its app asks again) until one leaves. */
	ETRAN_HOMA_SCHED_SLOTS = 32,
	/* The most messages granted to at once (max_overcommit is at most this). */
	ETRAN_HOMA_SCHED_MAX_ACTIVE = 8,
	/* The most the FIFO share grows to, per mille, however many messages SRPT bypassed
	 * (homa_sched.h; transport/homa/grant.rs's FIFO_FRACTION_MAX). */
	ETRAN_HOMA_FIFO_FRACTION_MAX = 500,
	/* A scheduled message neither DATA nor gen touched for this long is
	 * gone (its RPC ended without completing it: a timeout, an app that went): its entry and
	 * its incoming bytes are freed. Live messages are touched every few milliseconds. */
	ETRAN_HOMA_SCHED_STALE_MS = 100,
};

_Static_assert(ETRAN_HOMA_MAX_PAYLOAD == 1500 - 20 - sizeof(struct homa_data_hdr), "payload");

/* Value of etran_homa_ports (key: the Homa port, network order): the app that bound it. The
 * daemon fills it; ingress hands the port's packets to the slot, egress takes packets from that
 * port only from the slot's app (common/backend.h: its port, or its socket's queue). */
struct homa_port {
	__u32 slot;       /* the owner's app slot (common/backend.h) */
	__be32 local_ip;  /* the NIC's address: the source of the client RPCs egress creates */
	__u8 local_mac[6]; /* the NIC's Ethernet address */
	__u8 pad[2];
};

/* Value of etran_homa_peers (key: the peer's IPv4 address): where frames to it go. The daemon
 * fills it from the neighbour table when an app asks (a client's first RPC to the peer);
 * ingress learns it from a request's frame. */
struct homa_peer {
	__u8 mac[6]; /* Ethernet destination: the peer or the next hop */
	__u16 cutoff_version; /* of the last CUTOFFS the peer sent (ingress): our DATA to it echo
			       * it (egress); 0 until one came */
};

/* Key of etran_homa_rpcs: one RPC as this host sees it. Ports are part of it (several apps share
 * a host); the id is ours: even on the client's side, the client's + 1 on the server's. */
struct homa_rpc_key {
	__be32 peer_ip;
	__be16 local_port;
	__be16 peer_port;
	__u64 id;
};

/* Value of etran_homa_rpcs. A client's RPC is created by egress at its request's first DATA, a
 * server's by ingress at the request's first DATA; a client's goes when its app sends the ACK
 * (egress), a server's when that ACK arrives (ingress), and all of an app's when it goes
 * (the daemon). Fields marked "fixed" never change after creation (read without the lock). */
struct homa_rpc {
	struct bpf_spin_lock lock;
	__u32 owner_slot;  /* fixed: the owner's app port slot */
	__be32 local_ip;   /* fixed */
	__u8 local_mac[6]; /* fixed */
	__u8 peer_mac[6];  /* fixed */
	/* Our message (the request on the client's side, the response on the server's). */
	__u32 out_length;  /* its length; 0 until its first DATA (a server's response) */
	__u32 out_granted; /* egress sends no byte at or past this: the unscheduled bytes, then
			    * what GRANTs (or RESENDs: a lost GRANT) raised it to (at most
			    * out_length) */
	__u32 out_sent;    /* the furthest byte egress sent: DATA starting below it is a
			    * retransmission (marked so on the wire) */
	/* The peer's message, as its first DATA announced it (0: none seen yet). */
	__u32 in_length;
	__u32 in_end;        /* the furthest byte of it that arrived (exclusive) */
	__u32 in_granted;    /* the peer may send below this: the unscheduled bytes, then what
			      * the grant scheduler gave (homa_sched.h) */
	__u32 in_grant_sent; /* the offset of the last GRANT egress sent */
	__u8 in_grant_prio;  /* the priority the scheduler gave the grant */
	__u8 in_sched_idx;   /* its entry in the grant scheduler + 1, as the last ranking left
			      * it (0: none): DATA between rankings counts its bytes there */
	__u8 in_gen;         /* enum etran_homa_gen_mark: its key is on the gen queue */
	__u8 pad2;
	__u32 in_sched_at;   /* in_end when the scheduler last ranked the message */
};

/* The grant scheduler's parameters (homa_sched.h; transport/homa/grant.rs's GrantConfig,
 * HomaModule's homa_grant.c defaults), read-only data of the Homa object that the loader may set
 * before loading it. */
struct homa_sched_config {
	__u32 max_incoming;       /* bytes granted and not received, over all messages: 400,000 */
	__u32 max_overcommit;     /* messages granted to at once: 8 (one per peer) */
	__u32 window;             /* bytes granted past what arrived; 0: max_incoming / (active + 1) */
	__u32 fifo_fraction;      /* per mille of granted bytes that go to the oldest message: 50 */
	__u32 fifo_increment;     /* bytes of one such FIFO grant: 50,000 */
	__u32 max_sched_priority; /* the highest priority of a grant by rank: 3 */
};

/* Homa's pacer (homa_pace.h), read-only data of the Homa object that the loader sets before
 * loading it: the link's rate, as the time one byte takes on it, and how much work the NIC's
 * transmit queue may hold before a DATA packet waits. */
struct homa_pace_config {
	__u32 ps_per_byte;  /* picoseconds a byte takes on the link (8,000,000 / Mbit/s); 0: Homa
			     * does not pace */
	__u32 max_queue_ns; /* how far the link clock may run ahead of now before a DATA packet waits
			     * in the packet queue (2,000 ns: HomaModule's max_nic_queue_ns idea) */
};

/* The link clock (etran_homa_link): when the NIC will have sent every DATA packet egress handed
 * it, as far as the pacer knows (CLOCK_MONOTONIC ns). */
struct homa_link {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 idle;
};

/* The unscheduled priority cutoffs this host announces to its peers (CUTOFFS), read-only data
 * of the Homa object: HomaModule's defaults (homa_utils.c), which transport/homa/prio.rs's
 * Cutoffs::RECEIVER models. A peer sends the unscheduled bytes of a message to us at the
 * highest level i with unsched_cutoffs[i] >= its length; a DATA echoing another version makes
 * ingress flag that a CUTOFFS is due (ETRAN_HOMA_RX_CUTOFFS_DUE). */
struct homa_cutoffs_config {
	__u32 unsched_cutoffs[8];
	__u32 version; /* 1..65535 */
};

/* One message the grant scheduler holds (length 0: a free entry). */
struct homa_sched_msg {
	struct homa_rpc_key key; /* its RPC */
	__u32 slot;              /* the RPC's owner */
	__u32 length;
	__u32 received;          /* its furthest byte that arrived */
	__u32 granted;
	__u64 birth;             /* when it was scheduled (a count): ties and the FIFO share */
	__u64 touched;           /* ns of the last DATA or gen run about it */
};

/* The scheduler's state: one entry of etran_homa_sched, for the whole host (as HomaModule's). */
struct homa_sched {
	struct bpf_spin_lock lock;
	__u32 incoming;   /* granted and not received, over the entries (unscheduled bytes too) */
	__u64 births;
	__u64 since_fifo; /* bytes granted by rank since the last FIFO grant */
	struct homa_sched_msg msgs[ETRAN_HOMA_SCHED_SLOTS];
};

/* RX metadata in front of every frame Homa ingress hands an app (common/backend.h,
 * app_meta_grow). The frame behind it is the packet as received, headers included. */
struct etran_homa_rx_meta {
	__u64 id;              /* our id of the RPC the packet names (sender_id ^ 1) */
	__be32 peer_ip;
	__be16 local_port;
	__be16 peer_port;
	__u32 offset;          /* DATA: the payload's offset in its message */
	__u32 message_length;  /* DATA: the whole message */
	__u16 payload_off;     /* DATA: the payload's offset from the start of the frame */
	__u16 payload_len;     /* DATA: payload bytes (0 for other types) */
	__u8 type;             /* enum homa_packet_type */
	__u8 flags;            /* enum etran_homa_rx_flag */
	__u16 grant_packets;   /* DATA: the message's grant, in whole packets from offset 0
				* (a grant ends on a packet boundary or at the message's end) */
};

/* What an ingress packet told the app (etran_homa_rx_meta.flags). */
enum etran_homa_rx_flag {
	/* The DATA echoed a cutoff_version other than this host's (struct homa_cutoffs_config):
	 * its sender uses stale cutoffs, and the app has egress send a CUTOFFS (at most once a
	 * tick per peer). */
	ETRAN_HOMA_RX_CUTOFFS_DUE = 1 << 2,
	/* The high nibble counts the RPCs this packet put on the gen queue (homa_gen.h: a grant
	 * moved, or a waiting message may get one now), up to 15: the app may send as many gen
	 * templates (ETRAN_HOMA_TX_GEN) with its next frames, so that the GRANTs leave at its
	 * pass rather than at the daemon's pump's wakeup. Nothing is lost if it does not. */
	ETRAN_HOMA_RX_GEN_ONE = 1 << 4,
};

/* etran_homa_rpcs' in_gen bits. */
enum etran_homa_gen_mark {
	ETRAN_HOMA_GEN_QUEUED = 1, /* the key is on etran_homa_genq (pushed once until popped) */
	ETRAN_HOMA_GEN_RESEND = 2, /* a probe asked: gen sends the grant again if DATA has not
				    * answered it yet (the GRANT may have been lost) */
};

/* The gen path of Homa (homa_gen.h): what the daemon's pump and the programs agree on. */
enum etran_homa_gen {
	/* The Ethernet type of the pump's template frames (local experimental, TCP's + 1). */
	ETRAN_HOMA_GEN_ETHERTYPE = 0x88b6,
	/* A template's length: Ethernet, IPv4 and a GRANT, the frame gen turns it into. */
	ETRAN_HOMA_GEN_TEMPLATE_LEN = 14 + 20 + sizeof(struct homa_grant_hdr),
	/* Ingress writes a wake record to etran_homa_genw at most once per this many µs; the
	 * pump, woken, drains the queue and looks again after as long (so every key is seen
	 * within about twice this, whether or not its app sent a template). */
	ETRAN_HOMA_GEN_WAKE_US = 1000,
	/* Keys the gen queue holds. */
	ETRAN_HOMA_GEN_QUEUE_LEN = 4096,
};

/* A record of etran_homa_genw: keys were pushed on etran_homa_genq. */
struct etran_homa_gen_wake {
	__u32 queued;
};

/* The gen path's clock (one entry of etran_homa_genc). */
struct homa_gen_state {
	__u64 woke; /* ns of the last wake record */
};

/* What a TX frame asks egress to send (etran_homa_tx_hdr.intent). Zero is no intent, so a
 * zeroed header is refused. */
enum etran_homa_tx_intent {
	ETRAN_HOMA_TX_DATA = 1, /* payload at `offset` of a `message_length`-byte message */
	ETRAN_HOMA_TX_ACK = 2,  /* the client got the whole response: the RPC goes, and an ACK tells
				 * the server it may forget it too */
	ETRAN_HOMA_TX_GRANT = 3, /* an app-written GRANT: always refused
				  * (ETRAN_DROP_HOMA_TX_APP_GRANT). GRANTs are the kernel's: gen
				  * writes them (ETRAN_HOMA_TX_GEN, homa_gen.h) */
	ETRAN_HOMA_TX_RESEND = 4, /* a RESEND of the RPC's incoming message: `offset`, and in
				   * `message_length` the bytes asked for (all ones: to the
				   * grant, or everything sent when nothing arrived yet);
				   * `priority` is the RESEND's, for the resent DATA. Egress
				   * cuts the range at what ingress granted (in_granted) */
	ETRAN_HOMA_TX_BUSY = 5,   /* a BUSY: the app is alive but sends nothing of the RPC now */
	ETRAN_HOMA_TX_NEED_ACK = 6, /* a server's NEED_ACK: its response is out, the client's ACK
				     * would let both sides forget the RPC */
	ETRAN_HOMA_TX_CUTOFFS = 7, /* a CUTOFFS to the RPC's peer: this host's cutoffs, written by
				    * egress from struct homa_cutoffs_config (the app chooses
				    * nothing in it) */
	ETRAN_HOMA_TX_GEN = 8, /* a gen template: egress runs gen on it (homa_gen.h), which turns
				* it into the GRANT of the RPC at the head of the gen queue, or
				* drops it if nothing is owed. The app names no RPC (a zero id),
				* or, as a probe for a message of its own waiting for a grant,
				* that RPC: gen first queues it and every scheduled message from
				* its peer, to be ranked again or their grants sent again if
				* DATA has not answered them (a lost GRANT) */
};

/* In front of the payload of every frame an app transmits (compat backend: on its port). Egress
 * checks it against the port bindings and the RPC, strips it and writes Ethernet, IPv4 and the
 * Homa header from the RPC's state: nothing here reaches the wire but the payload and what the
 * RPC's state allows. A multiple of 4 bytes. */
struct etran_homa_tx_hdr {
	struct homa_rpc_key key; /* the RPC: our port and id, the peer's address and port */
	__u64 ack_id;            /* DATA: 0, or our client RPC `ack_id` with the same peer
				  * address and port, whose response arrived whole: the DATA
				  * carries its ack (HomaModule's piggy-backed ack) and the RPC
				  * goes, as at an ACK intent */
	__u32 message_length;    /* DATA: the whole message */
	__u32 offset;            /* DATA: where the payload sits in it */
	__u16 len;               /* payload bytes after this header (the rest of the frame) */
	__u8 intent;             /* enum etran_homa_tx_intent */
	__u8 priority;           /* 0..7, on the wire as TOS priority << 5 */
	__u32 reserved;          /* zero */
};

_Static_assert(sizeof(struct etran_homa_rx_meta) % 4 == 0, "RX metadata");
_Static_assert(sizeof(struct etran_homa_tx_hdr) % 4 == 0, "TX header");

/* Carries the layouts no map names into BTF, hence into the Rust skeleton types: see
 * etran_homa_layouts in homa.bpf.c. */
struct etran_homa_layouts {
	struct homa_wire_layouts wire;
	enum etran_homa_limit limit;
	struct etran_homa_rx_meta rx_meta;
	struct etran_homa_tx_hdr tx_hdr;
	enum etran_homa_tx_intent tx_intent;
	enum etran_homa_rx_flag rx_flag;
	enum etran_homa_gen_mark gen_mark;
	enum etran_homa_gen gen;
	struct etran_homa_gen_wake gen_wake;
	struct homa_port port;
	struct homa_peer peer;
	struct homa_sched_config sched_config;
	struct homa_pace_config pace_config;
	struct homa_cutoffs_config cutoffs_config;
	enum etran_app_port_limit app_port_limit;
};

#endif
