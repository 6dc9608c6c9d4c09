/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Counter layouts shared by every etran program and by `etran stats`.
 *
 * The enums below are the single source of counter names: `etran stats` reads them (names and
 * values) from the BTF of the loaded program, so adding a class or a reason here is all it takes
 * to have it reported.
 */
#ifndef ETRAN_STATS_H
#define ETRAN_STATS_H

#include <linux/types.h>

/* What the entrance program classified a frame as. */
enum etran_proto {
	ETRAN_PROTO_TCP,
	ETRAN_PROTO_HOMA,
	ETRAN_PROTO_IPV4_OTHER,
	ETRAN_PROTO_IPV6,
	ETRAN_PROTO_ARP,
	ETRAN_PROTO_OTHER,
	ETRAN_PROTO_MAX,
};

/* Why a frame was dropped. */
enum etran_drop_reason {
	ETRAN_DROP_SHORT_FRAME,   /* shorter than an Ethernet header */
	ETRAN_DROP_BAD_IPV4,      /* IPv4 header truncated or inconsistent */
	ETRAN_DROP_BAD_IP_CSUM,   /* IPv4 header checksum wrong (frames a transport consumes) */
	ETRAN_DROP_SHORT_L4,      /* TCP/Homa header truncated */
	ETRAN_DROP_TCP_BAD_CSUM,  /* TCP checksum wrong: corrupted on the way */
	ETRAN_DROP_TCP_OVERSIZE,  /* segment longer than our MSS allows: not verifiable */
	ETRAN_DROP_TCP_ACK_UNSENT,    /* acknowledges bytes never sent (beyond snd_nxt) */
	ETRAN_DROP_TCP_DUPLICATE,     /* payload entirely received before: only re-ACKed */
	ETRAN_DROP_TCP_BEYOND_WINDOW, /* payload starts past the receive window */
	ETRAN_DROP_TCP_OOO_GAP,       /* out of order, no interval free to hold it, nothing else new */
	ETRAN_DROP_TCP_CONSUMED,      /* valid but nothing for the app (e.g. 1st/2nd duplicate ACK) */
	ETRAN_DROP_TCP_PROBE,         /* keepalive or zero-window probe: answered with an ACK */
	ETRAN_DROP_TCP_NO_OWNER,      /* the connection's app port slot is empty */
	ETRAN_DROP_PORT_FULL,         /* the app port has no room (compat/app_ports.h): dropped
				       * before any state changed, so the peer resends it */
	ETRAN_DROP_TCP_NO_HEADROOM,   /* no room in front of the frame for the RX metadata */
	ETRAN_DROP_TCP_TX_SHORT,      /* TX frame shorter than its TX header */
	ETRAN_DROP_TCP_TX_BAD_HDR,    /* TX header inconsistent: intent, length, unknown flags */
	ETRAN_DROP_TCP_TX_OVER_MSS,   /* TX payload longer than the connection's MSS */
	ETRAN_DROP_TCP_TX_UNKNOWN_CONN, /* TX header names no connection */
	ETRAN_DROP_TCP_TX_WRONG_OWNER,  /* sent from a port other than the connection owner's */
	ETRAN_DROP_TCP_TX_STALE,      /* DATA before snd_una's position or past the conn's tx_pos */
	ETRAN_DROP_TCP_TX_PEER_WINDOW, /* payload would exceed the peer's receive window */
	ETRAN_DROP_TCP_TX_CWND,       /* payload would exceed the congestion window */
	ETRAN_DROP_TCP_TX_NO_HEADROOM, /* no room in front of the frame for the protocol headers */
	ETRAN_DROP_TCP_TX_NO_NIC,     /* the NIC slot of etran_nic is empty */
	ETRAN_DROP_TCP_GEN_NO_CONN,   /* ACK generator: the queued connection is gone */
	ETRAN_DROP_TCP_GEN_SETTLED,   /* ACK generator: nothing owed any more (data carried the ACK) */
	ETRAN_DROP_TCP_TX_RETX_RANGE, /* retransmit not starting within the bytes in flight */
	ETRAN_DROP_TCP_TX_RETX_UNSENT, /* retransmit running past the bytes sent (the conn's tx_pos) */
	ETRAN_DROP_TCP_TX_FIN_EARLY,  /* FIN before every byte up to the app's tx_pos was sent */
	ETRAN_DROP_TCP_TX_FIN_ACKED,   /* our FIN again after the peer acknowledged it (a closed peer
					 * would answer RST) */
	ETRAN_DROP_TCP_TX_AFTER_FIN,  /* new data after our FIN */
	ETRAN_DROP_TCP_AFTER_FIN,     /* payload past the peer's FIN */
	ETRAN_DROP_TCP_TX_WND_AFTER_FIN, /* a pure window update after the peer's FIN: no news for
					  * a peer that sends nothing more (a closed Linux peer
					  * would answer RST); the consumption report still counts */
	ETRAN_DROP_TCP_TX_ACK_SETTLED, /* an app's ACK_DUE with nothing owed any more (the
					* generator or data carried it): it would be a duplicate */
	ETRAN_DROP_TCP_TX_PROBE_OPEN, /* a zero-window probe while the peer's window has room:
				       * the app has data to send instead */
	ETRAN_DROP_HOMA_MALFORMED,    /* a Homa packet inconsistent with its type (header cut,
				       * unknown type, segment past its message) */
	ETRAN_DROP_HOMA_UNBOUND_PORT, /* to a Homa port no app bound */
	ETRAN_DROP_HOMA_UNKNOWN_RPC,  /* names an RPC this host does not have (a response,
				       * GRANT, RESEND, ... that no request of ours asked for) */
	ETRAN_DROP_HOMA_NO_OWNER,     /* the owner's app port slot is empty */
	ETRAN_DROP_HOMA_NO_ROOM,      /* no room for a new RPC (the RPC map is full) or in front
				       * of the frame for metadata or headers */
	ETRAN_DROP_HOMA_TX_BAD_HDR,   /* TX frame shorter than its header, or the header
				       * inconsistent: intent, length, a DATA segment past its
				       * message or a message length the RPC does not have */
	ETRAN_DROP_HOMA_TX_WRONG_OWNER, /* for a Homa port (or RPC) the sending app does not own:
					 * a forged sender port */
	ETRAN_DROP_HOMA_TX_UNKNOWN_RPC, /* a server's packet, or an ACK, for an RPC it does not have */
	ETRAN_DROP_HOMA_TX_BEYOND_GRANT, /* DATA past what the receiver allowed (unscheduled bytes,
					  * then GRANTs), or a RESEND of bytes we never granted */
	ETRAN_DROP_HOMA_TX_NO_PEER,   /* a new RPC to a peer of unknown Ethernet address (the app
				       * asks the daemon first) */
	ETRAN_DROP_HOMA_TX_NO_NIC,    /* the NIC slot of etran_nic is empty */
	ETRAN_DROP_TCP_MOVING,        /* a segment of a connection moving between apps (a forked
				       * child adopting it): the peer's retransmission, or the
				       * app's, brings it again once the new owner has it */
	ETRAN_DROP_HOMA_TX_APP_GRANT, /* a GRANT an app wrote (intent GRANT): GRANTs are the
				       * kernel's, written by gen (homa_gen.h) */
	ETRAN_DROP_REASON_MAX,
};

/* What the transport programs did with the frames they let through: the counters behind a cost
 * breakdown (frames of each kind per message, ACKs per data frame). Counted once per frame, by
 * the program that decided it; a frame may count under more than one event (a retransmission is
 * also data). */
enum etran_event {
	ETRAN_EVENT_TCP_TX_DATA,         /* egress: a segment with payload left for the NIC */
	ETRAN_EVENT_TCP_TX_RETRANSMIT,   /* egress: ... of bytes sent before (the app's RETRANSMIT) */
	ETRAN_EVENT_TCP_TX_PURE_ACK,     /* egress: an app's segment without payload (ACK, window
					  * update, FIN, or data cut to a window update) */
	ETRAN_EVENT_TCP_GEN_ACK,         /* generator: a pure ACK left for the NIC */
	ETRAN_EVENT_TCP_RX_DATA,         /* ingress: a segment with payload handed to its app */
	ETRAN_EVENT_TCP_RX_NO_DATA,      /* ingress: a segment without payload handed to its app */
	ETRAN_EVENT_TCP_RX_ACK_KEPT,     /* ingress: a pure ACK that only moved snd_una, taken in the
					  * kernel without a frame to its app (tcp_ingress.h) */
	ETRAN_EVENT_TCP_RX_DUP_ACK,      /* ingress: a duplicate ACK (RFC 5681), handed on or not */
	ETRAN_EVENT_TCP_RX_CE,           /* ingress: a segment the network marked CE */
	ETRAN_EVENT_TCP_ACK_QUEUED_NOW,  /* ingress: a connection queued for an ACK at once */
	ETRAN_EVENT_TCP_ACK_QUEUED_LATER, /* ingress: ... for a delayed ACK */
	ETRAN_EVENT_HOMA_RX_DATA,        /* ingress: a Homa DATA packet handed to its app */
	ETRAN_EVENT_HOMA_RX_CONTROL,     /* ingress: any other Homa packet handed to its app */
	ETRAN_EVENT_HOMA_TX_DATA,        /* egress: a Homa DATA packet left for the NIC */
	ETRAN_EVENT_HOMA_TX_ACK,         /* egress: a Homa ACK left for the NIC */
	ETRAN_EVENT_HOMA_TX_ACK_ON_DATA, /* egress: a Homa DATA left carrying an ack (its RPC went) */
	ETRAN_EVENT_HOMA_TX_GRANT,       /* gen: a Homa GRANT left for the NIC (from a template
					  * of the daemon's pump or of an app) */
	ETRAN_EVENT_HOMA_TX_RETRANSMIT,  /* egress: a Homa DATA packet of bytes sent before */
	ETRAN_EVENT_HOMA_TX_RESEND,      /* egress: a Homa RESEND left for the NIC */
	ETRAN_EVENT_HOMA_TX_BUSY,        /* egress: a Homa BUSY left for the NIC */
	ETRAN_EVENT_HOMA_RX_UNKNOWN,     /* ingress: a RESEND for an RPC this host does not have,
					  * answered with RPC_UNKNOWN */
	ETRAN_EVENT_HOMA_TX_NEED_ACK,    /* egress: a Homa NEED_ACK left for the NIC */
	ETRAN_EVENT_HOMA_RX_ACK_ANSWER,  /* ingress: a NEED_ACK for a client RPC this host no longer
					  * has (its response arrived whole), answered with an ACK */
	ETRAN_EVENT_HOMA_SCHED_RANK,     /* the grant scheduler ranked the messages it holds (a
					  * message's DATA in the last step of its grant, a grant
					  * step after the last ranking, or complete; gen popping it) */
	ETRAN_EVENT_HOMA_TX_CUTOFFS,     /* egress: a Homa CUTOFFS left for the NIC (a peer's DATA
					  * echoed stale cutoffs) */
	ETRAN_EVENT_HOMA_GEN_QUEUED,     /* an RPC went on the gen queue (its grant moved, it may
					  * get one now, or a probe asked) */
	ETRAN_EVENT_HOMA_GEN_IDLE,       /* gen: a template found nothing owed (the queue empty,
					  * the RPC gone, its grant settled) and was dropped */
	ETRAN_EVENT_HOMA_GEN_FULL,       /* the gen queue was full: the RPC's next DATA or probe
					  * queues it again */
	ETRAN_EVENT_HOMA_GEN_PROBE,      /* a probe (an app's template naming its RPC) queued
					  * the scheduled messages of the RPC's peer again */
	ETRAN_EVENT_HOMA_RX_BUSY,        /* ingress: a RESEND for a server RPC whose app holds the
					  * request (no response begun), answered with BUSY */
	ETRAN_EVENT_HOMA_SCHED_GRANT,    /* the grant scheduler moved a message's grant by rank
					  * (bytes: the bytes granted) */
	ETRAN_EVENT_HOMA_SCHED_FIFO,     /* ... from the FIFO share, to the oldest message (bytes:
					  * the bytes granted) */
	ETRAN_EVENT_HOMA_SCHED_STALE,    /* the grant scheduler let a message go that nothing
					  * touched for ETRAN_HOMA_SCHED_STALE_MS */
	ETRAN_EVENT_TCP_TX_PACED,        /* egress: a TCP segment queued until its release time
					  * (pacing through the packet queue, tcp_pace.h) */
	ETRAN_EVENT_TCP_TX_PACE_REFUSED, /* egress: ... the socket's queue refused (full): sent at
					  * once instead */
	ETRAN_EVENT_HOMA_TX_PACED,       /* egress: a Homa DATA packet queued until the link
					  * clock let it go (homa/homa_pace.h) */
	ETRAN_EVENT_HOMA_TX_PACE_REFUSED, /* egress: ... the socket's queue refused (full): sent
					   * at once instead */
	ETRAN_EVENT_MAX,
};

struct etran_count {
	__u64 packets;
	__u64 bytes;
};

/* Per-CPU traffic of one class (value of etran_traffic, keyed by enum etran_proto). */
struct etran_class_counts {
	struct etran_count transport; /* handed to a transport program (counted by it) */
	struct etran_count pass;      /* given to the kernel stack untouched */
	struct etran_count drop;      /* dropped; the reason is counted in etran_drops */
};

/* Carries the enums above into BTF (see etran_stats_names in entrance.bpf.c). */
struct etran_stats_names {
	enum etran_proto proto;
	enum etran_drop_reason reason;
	enum etran_event event;
};

#endif
