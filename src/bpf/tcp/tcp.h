/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* TCP fast-path layouts shared by the TCP programs, the daemon and the app library (Rust reads
 * them from the skeleton's generated types). Sequence numbers are host order; addresses and
 * ports stay in network order, as on the wire, so keys are built without byte swapping. */
#ifndef ETRAN_TCP_H
#define ETRAN_TCP_H

#include <linux/bpf.h>
#include <linux/types.h>

#include "common/transport.h"

/* Key of etran_tcp_conns. Local = this host: the IP destination of an ingress segment. */
struct tcp_conn_key {
	__be32 local_ip;
	__be32 remote_ip;
	__be16 local_port;
	__be16 remote_port;
};

/* Options negotiated at the handshake (tcp_conn.flags). */
enum tcp_conn_flag {
	TCP_CONN_TIMESTAMPS = 1 << 0, /* the timestamp option is in use: keep ts_recent */
	TCP_CONN_ECN = 1 << 1,        /* ECN negotiated (DCTCP) */
	TCP_CONN_SACK = 1 << 2,       /* SACK permitted both ways (RFC 2018): our ACKs carry blocks */
};

/* Selective acknowledgement on the receive side (RFC 2018, 2883). */
enum tcp_sack_limit {
	TCP_OOO_MAX = 16, /* out-of-order intervals ingress holds per connection */
	/* SACK blocks one segment carries: 40 bytes of options hold 4, or 3 next to the
	 * timestamp option (each block 8 bytes, plus 2 NOPs, kind and length). */
	TCP_SACK_MAX_BLOCKS = 4,
	TCP_SACK_MAX_BLOCKS_TS = 3,
	/* Duplicate ACKs, or segments delivered after one, before it is deemed lost (RFC 5681's
	 * third duplicate ACK, RFC 6675's DupThresh). */
	TCP_DUP_THRESH = 3,
};

/* Pure ACKs the app need not see (tcp_ingress.h, ack_kept): acknowledged bytes the app has not
 * heard of may reach this many segments' worth, and an eighth of the send window, before an ACK
 * goes to it. */
enum tcp_ack_keep_limit {
	TCP_ACK_KEEP_SEGMENTS = 8,
	TCP_ACK_KEEP_WND_SHIFT = 3,
};

/* Sequence numbers [start, end). */
struct tcp_seq_range {
	__u32 start;
	__u32 end;
};

/* How far the connection's close went (tcp_conn.fin). Our FIN is acknowledged once it is sent
 * and snd_una reached snd_nxt (the FIN is the last sequence number sent). */
enum tcp_conn_fin {
	TCP_CONN_FIN_SENT = 1 << 0, /* our FIN went out at snd_nxt - 1: no new data after it */
	TCP_CONN_FIN_RCVD = 1 << 1, /* the peer's FIN is in order: no data after it */
	TCP_CONN_FIN_HELD = 1 << 2, /* the peer's FIN came beyond a hole, at fin_seq: taken once
				     * everything before it is in order */
};

/* Duplicate ACKs a connection may owe beyond the first (ack_repeats): more out-of-order
 * segments than this between two runs of the generator add nothing a peer counts. */
#define TCP_ACK_REPEATS_MAX 32

/* Value of etran_tcp_conns: an established connection's fast-path state. The daemon inserts it
 * after the handshake; the programs change it only under the lock. Fields marked "fixed" are set
 * at insertion and never change, so they may be read without the lock. */
struct tcp_conn {
	struct bpf_spin_lock lock;
	__u32 owner_port; /* the owner's port slot (etran_app_ports, etran_port_ifindex), or
			   * ETRAN_TCP_OWNER_MOVING; changed only by etran_tcp_rehome, under the lock:
			   * read before it, it is checked again under it */
	__u64 handle;     /* fixed: the app's opaque handle, echoed in RX metadata */

	/* Receive side */
	__u32 rcv_nxt;   /* next sequence number expected */
	__u32 rcv_wnd;   /* bytes from rcv_nxt on the app can still take (its free buffer) */
	__u32 rx_pos;    /* stream position of rcv_nxt (the app's buffer offset, wrapping) */
	__u32 rcv_adv;     /* the highest right edge advertised (rcv_nxt + window): never moves back */
	__u32 rcv_reserve; /* fixed: bytes of rcv_wnd never advertised, room for rounded-up edges */
	__u32 rcv_shrinks; /* segments whose edge moved back all the same (reserve used up) */

	/* Send side */
	__u32 snd_una;   /* oldest unacknowledged sequence number */
	__u32 snd_nxt;   /* next sequence number to send */
	__u32 snd_wnd;   /* the peer's receive window in bytes (already scaled) */
	__u32 ts_recent; /* latest in-order TSval from the peer, echoed as TSecr */
	__u32 tx_pos;    /* stream position of snd_nxt (the app's send buffer offset, wrapping) */
	__u32 app_una;   /* snd_una as of the last frame handed to the app (its RX metadata) */

	/* Towards the ACK generator */
	__u32 ack_pending; /* bytes received since the last ACK we sent */
	__u16 dupacks;     /* consecutive duplicate ACKs seen */
	__u8 snd_wscale;   /* fixed: shift for the peer's window field */
	__u8 flags;        /* fixed: enum tcp_conn_flag */
	__u8 ack_now;      /* send an ACK without waiting (duplicate, out of order, gap filled, FIN) */
	__u8 rcv_wscale;   /* fixed: shift for our window field (what we announced in our SYN) */
	__u16 mss;         /* fixed: largest payload egress sends (<= ETRAN_TCP_MAX_PAYLOAD) */

	/* Headers egress writes */
	__u8 local_mac[6];  /* fixed: Ethernet source (the NIC's address) */
	__u8 remote_mac[6]; /* fixed: Ethernet destination (the peer or the next hop) */
	__u16 ip_id;        /* IPv4 identification of the next segment sent */
	__u8 ack_queued;    /* enum etran_tcp_ack_queued bits: the queues the key is in */
	__u8 fin;           /* enum tcp_conn_fin */
	__u8 ack_repeats;   /* without SACK: more duplicate ACKs owed after the one ack_now asks
			     * for, one per out-of-order segment (tcp_ingress.h, rx_payload), at
			     * most TCP_ACK_REPEATS_MAX */

	/* Out-of-order data the app holds, and what our next ACK reports of it (SACK). The
	 * intervals lie within the receive window past rcv_nxt, are disjoint and never touch
	 * (adjacent ones are merged), and are kept most recently changed first (RFC 2018 4: the
	 * first SACK block holds the latest segment). Without TCP_CONN_SACK they are held all the
	 * same. */
	struct tcp_seq_range ooo[TCP_OOO_MAX]; /* ooo[0, ooo_n) are in use */
	struct tcp_seq_range dsack; /* a duplicate to report first in the next ACK (RFC 2883);
				     * empty (start == end) when there is none */
	__u8 ooo_n;                 /* intervals in use */
	__u8 ooo_fresh;             /* ooo[0, ooo_fresh) hold every interval that changed since
				     * an ACK last reported it (changed ones move to the front);
				     * tx_plan_sack reports the oldest of them after ooo[0] */
	__u32 fin_seq;              /* with TCP_CONN_FIN_HELD: the held FIN's sequence number */

	/* Congestion control (tcp_cc.h): NewReno-style windows, DCTCP's reaction to ECN marks. */
	__u8 cc;            /* enum tcp_cc_flag */
	__u32 cwnd;         /* congestion window, bytes */
	__u32 ssthresh;     /* slow start while cwnd is below it */
	__u32 cwnd_edge;    /* new data may reach this sequence number: snd_una + cwnd as of the
			     * latest ACK, never moved back (the app may hold a window it read
			     * before a cut: see tcp_cc.h) */
	__u32 cc_recover;   /* with REDUCED or TIMEOUT: snd_nxt when it began; over once snd_una
			     * reaches it */
	__u32 ca_acked;     /* bytes acknowledged towards the next congestion-avoidance step */
	__u32 alpha;        /* DCTCP's estimate of the fraction of bytes marked, in units of
			     * 2^-TCP_DCTCP_ALPHA_SHIFT */
	__u32 dctcp_end;    /* DCTCP's observation window ends when snd_una reaches it */
	__u32 dctcp_acked;  /* bytes acknowledged in the observation window */
	__u32 dctcp_marked; /* of those, bytes acknowledged with ECE */
	__u32 cc_used;      /* the most bytes in flight since the round began (egress) */
	__u32 cc_round_end; /* cc_used's round ends when snd_una reaches it (snd_nxt then) */

	/* Pacing through the packet queue (tcp_pace.h; native, on a kernel with patch 0008, and
	 * only then: elsewhere these stay zero). */
	__u32 rtt_seq;   /* the RTT sample under way ends when snd_una reaches it */
	__u32 srtt_us;   /* smoothed RTT in microseconds; 0: no sample yet, so no pacing */
	__u64 rtt_start; /* CLOCK_MONOTONIC ns the sample's segment left at; 0: none under way */
	__u64 pace_next; /* ns: the earliest release time of the next paced segment */
	__u64 pace_tail; /* ns: the release time of the last segment queued; 0: none ever was */
	__u32 pace_seq;  /* the end (sequence number) of the furthest segment queued: one may still
			  * wait in the kernel until snd_una reaches it */

	/* Receive side, last: it fills the tail's padding, so the struct keeps its size and every
	 * other field its offset (6.1's verifier counted the ingress program's stack over its
	 * 512 bytes when this field sat beside rx_pos). */
	__u32 app_read; /* stream position up to which the app reported reading (tcp_egress.h) */
};

/* tcp_conn.cc: congestion state. */
enum tcp_cc_flag {
	/* The window was cut (a loss, or ECE) for the data in flight: no other cut until snd_una
	 * reaches cc_recover, and no growth either (RFC 5681, RFC 3168 6.1.2). */
	TCP_CC_REDUCED = 1 << 0,
	/* Recovering from a retransmission timeout until snd_una reaches cc_recover: DATA from
	 * snd_una is the app's resend, not another timeout. Slow start goes on meanwhile. */
	TCP_CC_TIMEOUT = 1 << 1,
	TCP_CC_CWR = 1 << 2, /* ECN: set CWR on the next segment with payload (RFC 3168 6.1.2) */
	TCP_CC_CE = 1 << 3,  /* ECN receiver: the latest data segment came with CE, so our ACKs
			      * carry ECE (DCTCP, RFC 8257 3.2) */
	/* The app is recovering lost bytes (a RETRANSMIT, or the resend after a timeout) until
	 * snd_una reaches cc_recover: every ACK reaches it (tcp_ingress.h, ack_kept), the partial
	 * ones above all, which tell NewReno the next hole. */
	TCP_CC_LOSS = 1 << 4,
};

/* Congestion control's constants (an enum so that they reach BTF, hence Rust). */
enum tcp_cc_limit {
	TCP_CC_INIT_SEGMENTS = 10,  /* initial window (RFC 6928) */
	/* Slow start grows by at most this many segments per ACK (RFC 3465's L; 8 rather than 2:
	 * a receiver with GRO, and ours, acknowledge 8 segments at a time). */
	TCP_CC_SS_MAX_SEGMENTS = 8,
	TCP_DCTCP_ALPHA_SHIFT = 16, /* alpha == 1 << 16 is 1 */
	TCP_DCTCP_G_SHIFT = 4,      /* the estimator's gain g = 1/16 (RFC 8257 4.2) */
};

/* Pacing's constants (tcp_pace.h), as Linux paces (tcp_update_pacing_rate): the rate is
 * cwnd / srtt, times 2 in slow start and 1.2 after. */
enum tcp_pace_limit {
	TCP_PACE_SS_PERCENT = 200, /* the factor in slow start (cwnd < ssthresh), in percent */
	TCP_PACE_CA_PERCENT = 120, /* ... in congestion avoidance */
	TCP_RTT_SHIFT = 3,         /* srtt += (sample - srtt) / 8 (RFC 6298's alpha) */
};

/* tcp_conn.ack_queued: bits, the generator queues a connection's key is in. Ingress sets one
 * when it pushes the key, the generator clears it when it pops the key from that queue. */
enum etran_tcp_ack_queued {
	ETRAN_TCP_ACK_NOT_QUEUED = 0,
	ETRAN_TCP_ACK_DELAYED = 1,   /* in etran_tcp_dack_queue: flushed at the delayed-ACK deadline */
	ETRAN_TCP_ACK_IMMEDIATE = 2, /* in etran_tcp_ack_queue: the gen pump flushes it at once */
};

/* The gen pump's template frame (what the generator turns into a pure ACK): its first byte names
 * the queue to pop (enum etran_tcp_ack_queued), its Ethernet type is this local experimental
 * one (IEEE 802 "Local Experimental Ethertype 1"), so a frame the stack itself sends where the
 * generator is attached passes untouched. */
enum etran_tcp_gen_template {
	ETRAN_TCP_GEN_ETHERTYPE = 0x88b5,
};

/* A record of etran_tcp_gen_wake: ingress pushed one connection key on the queue of `kind`. */
struct etran_tcp_gen_wake {
	__u32 kind; /* enum etran_tcp_ack_queued: DELAYED or IMMEDIATE */
};

/* tcp_conn.owner_port while a connection moves between apps (tcp_rehome.h): no app's port. */
enum etran_tcp_owner {
	ETRAN_TCP_OWNER_MOVING = 0xffffffff,
};

/* What the daemon asks of etran_tcp_rehome: the frame BPF_PROG_RUN hands it (and hands back,
 * with `found` and the positions filled in). At least an Ethernet header long, as XDP's test
 * runs require. */
struct etran_tcp_rehome {
	struct tcp_conn_key key;
	__u32 owner;    /* the new owner_port: a port slot, or ETRAN_TCP_OWNER_MOVING */
	__u32 found;    /* out: 1 when the connection exists (and was rehomed) */
	/* out, read under the lock as the change was made: where the new owner resumes */
	__u32 rx_pos;   /* stream position of rcv_nxt */
	__u32 tx_pos;   /* stream position of snd_nxt */
	__u32 una_pos;  /* stream position of snd_una */
	__u32 send_wnd; /* what new data may fill from snd_una (as RX metadata says it) */
	__u32 rcv_wnd;  /* the receive window the kernel holds (the app's reports so far) */
	__u32 fin;      /* enum tcp_conn_fin */
};

/* Limits apps must know (an enum so that they reach BTF, hence Rust). */
enum etran_tcp_limit {
	/* The longest frame (Ethernet header included) the datapath handles: the most a veth
	 * hands a program without multi-buffer (frags) support, with 4 KiB pages. The kernel keeps
	 * an XDP frame in one page: PAGE_SIZE - XDP_PACKET_HEADROOM (256) -
	 * SKB_DATA_ALIGN(sizeof(struct skb_shared_info)) (320 on x86-64: 6.1 to 6.18), which is
	 * also what veth_xdp_set allows a peer's MTU plus its Ethernet header and what
	 * BPF_PROG_TEST_RUN takes. loader::kernel::veth_xdp_max_mtu computes the running
	 * kernel's figure; a unit test holds it to this one. */
	ETRAN_TCP_MAX_FRAME = 4096 - 256 - 320,
	/* The most payload one TX frame may carry: the longest frame less Ethernet, IPv4 and TCP
	 * headers (its MTU less 40: the largest MSS we announce). Bounds the egress checksum
	 * loop. */
	ETRAN_TCP_MAX_PAYLOAD = ETRAN_TCP_MAX_FRAME - 14 - 20 - 20,
	/* The largest window-scale shift (RFC 7323 2.3): larger ones are taken as this. */
	ETRAN_TCP_MAX_WSCALE = 14,
	/* The longest headers of a segment: Ethernet, IPv4 without options, TCP with 40 bytes of
	 * options (the timestamp option and three SACK blocks). The ACK generator's template is
	 * this long; it trims it to the ACK it writes. */
	ETRAN_TCP_MAX_HEADERS = 14 + 20 + 20 + 40,
};

/* What an ingress segment told the app (etran_tcp_rx_meta.flags). */
enum etran_tcp_rx_flag {
	ETRAN_TCP_RX_FAST_RETRANSMIT = 1 << 0, /* third duplicate ACK: resend from snd_una */
	ETRAN_TCP_RX_FIN = 1 << 1, /* the peer's stream ends after this payload (then on every
				    * frame: a lost one is healed by the next) */
	ETRAN_TCP_RX_OUT_OF_ORDER = 1 << 2, /* the payload lies past rcv_nxt, held out of order */
	ETRAN_TCP_RX_MERGED = 1 << 3, /* in-order data reached held out-of-order intervals: they
				       * are in order now (`merged` bytes past this payload) */
	ETRAN_TCP_RX_FIN_ACKED = 1 << 4, /* the segment acknowledges our FIN (which has no stream
					  * position), the first time or again */
	ETRAN_TCP_RX_SACK = 1 << 5, /* the segment carries options past the timestamp (SACK
				     * blocks): the app reads them from the TCP header */
};

/* RX metadata in front of every frame handed to an app (common/backend.h, app_meta_grow). */
struct etran_tcp_rx_meta {
	__u64 handle;      /* the connection's app handle */
	__u32 rx_pos;      /* stream position of the first payload byte */
	__u16 payload_off; /* payload offset from the start of the frame */
	__u16 payload_len; /* payload bytes for the app; 0 when there are none */
	__u32 una_pos;     /* stream position of snd_una: absolute, so a lost frame costs nothing */
	__u32 send_wnd;    /* bytes from snd_una that new data may fill: the peer's window and the
			    * congestion window (its edge: see tcp_conn.cwnd_edge), the less */
	__u32 merged;      /* with MERGED: bytes beyond this payload now in order */
	__u32 flags;       /* enum etran_tcp_rx_flag */
};

/* What a TX frame asks egress to send (etran_tcp_tx_hdr.intent). Zero is no intent, so a
 * zeroed header is refused. */
enum etran_tcp_tx_intent {
	ETRAN_TCP_TX_DATA = 1,          /* payload at tx_pos, with the ACK and window piggybacked */
	ETRAN_TCP_TX_ACK = 2,           /* a pure ACK (no payload) */
	ETRAN_TCP_TX_WINDOW_UPDATE = 3, /* a pure ACK announcing the window `consumed` reopened */
	ETRAN_TCP_TX_RETRANSMIT = 4,    /* payload already sent, within [snd_una, snd_nxt): resent at
					 * its own sequence number, outside the windows */
	ETRAN_TCP_TX_FIN = 5, /* no payload: our FIN once every byte up to tx_pos was sent (the
			       * first one), else the FIN resent at its own sequence number */
	ETRAN_TCP_TX_ACK_DUE = 6, /* a pure ACK only while one is owed (ack_pending, ack_now), as
				   * the generator sends them: an app acknowledging what it
				   * received without repeating an ACK (a duplicate ACK to the
				   * peer's loss detection) */
	ETRAN_TCP_TX_PROBE = 7, /* no payload: a zero-window probe (RFC 9293 3.8.6.1) while the
				 * peer's window leaves no room for new data, sent at snd_una - 1
				 * (see tcp_egress.h) */
};

/* In front of the payload of every frame an app transmits (compat backend: on its port). Egress
 * validates it, strips it and writes every protocol header from the connection state: nothing
 * here reaches the wire except the payload. A multiple of 4 bytes. */
struct etran_tcp_tx_hdr {
	struct tcp_conn_key key; /* the connection, as in etran_tcp_conns */
	__u32 tx_pos;   /* DATA, RETRANSMIT: stream position of the first payload byte; FIN: the
			 * end of the app's stream */
	__u32 read_pos; /* stream position up to which the app has read: reopens rcv_wnd by what
			 * it read since the last report egress applied */
	__u16 len;      /* payload bytes after this header (the rest of the frame, exactly) */
	__u8 intent;    /* enum etran_tcp_tx_intent */
	__u8 flags;     /* enum etran_tcp_tx_flag; the other bits zero */
};

/* Bits of etran_tcp_tx_hdr.flags. */
enum etran_tcp_tx_flag {
	/* DATA: the app's send window (as the RX metadata it had read told it), not its data,
	 * limits it: bytes wait beyond what the window admits. Egress cannot tell that from the
	 * bytes in flight: by the time the frame leaves, ACKs the app has not read yet may have
	 * taken most of them, and on a stock kernel the ACKs of a pass's first segments are often
	 * back before its last one leaves (tcp_cc.h, cc_on_send). */
	ETRAN_TCP_TX_WINDOW_LIMITED = 1 << 0,
	/* DATA, RETRANSMIT: the payload ends the bytes the app has written (nothing waits behind
	 * it): the segment carries PSH, as Linux sets it at the end of a write. Segments in the
	 * middle go without, so a receiver's GRO merges a burst of them (PSH ends a merge). */
	ETRAN_TCP_TX_PUSH = 1 << 1,
};

/* The slow path: SYNs to listening ports, segments of flows the daemon handles itself
 * (etran_tcp_pending: handshakes, TIME_WAIT) and SYN/RST of established connections reach the
 * daemon as copies in etran_tcp_slow (ingress drops the frame, so the kernel never answers).
 * Control segments are copied up to ETRAN_TCP_SLOW_CAPTURE bytes (a record of that much frame[]);
 * segments carrying payload or a FIN are copied whole (up to ETRAN_TCP_SLOW_FRAME), so that the
 * daemon can replay them through the ingress program once the connection is established: what
 * rides right behind a handshake is never lost. */
enum etran_tcp_slow_limit {
	ETRAN_TCP_SLOW_CAPTURE = 160, /* Ethernet + IPv4 with options + TCP with options */
	ETRAN_TCP_SLOW_FRAME = ETRAN_TCP_MAX_FRAME, /* a whole frame, the longest one */
};

/* A record of etran_tcp_slow: the header and len bytes of frame[] (the record may end there). */
struct etran_tcp_slow_seg {
	__u32 len;      /* bytes of frame[] filled */
	__u32 wire_len; /* the whole frame's length: len == wire_len when it was copied whole */
	__u8 frame[ETRAN_TCP_SLOW_FRAME];
};

/* Carries into BTF, hence into the Rust skeleton types, the layouts no map names: see
 * etran_tcp_layouts in tcp.bpf.c. */
struct etran_tcp_layouts {
	struct etran_tcp_rx_meta rx_meta;
	struct etran_tcp_rehome rehome;
	enum etran_tcp_owner owner;
	enum etran_tcp_rx_flag rx_flag;
	enum tcp_conn_flag conn_flag;
	enum tcp_conn_fin conn_fin;
	enum tcp_cc_flag cc_flag;
	enum tcp_cc_limit cc_limit;
	enum tcp_pace_limit pace_limit;
	enum tcp_sack_limit sack_limit;
	struct etran_tcp_tx_hdr tx_hdr;
	enum etran_tcp_tx_intent tx_intent;
	enum etran_tcp_tx_flag tx_flag;
	enum etran_tcp_limit limit;
	enum etran_tcp_ack_queued ack_queued;
	enum etran_tcp_gen_template gen_template;
	struct etran_tcp_gen_wake gen_wake;
	struct etran_tcp_slow_seg slow_seg;
	enum etran_tcp_slow_limit slow_limit;
	enum etran_app_port_limit app_port_limit;
	enum etran_port_rx_limit port_rx_limit;
	struct etran_port_rx port_rx;
};

#endif
