/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The ACK generator: attached to the kernel side of the daemon's gen port, a veth pair, the gen
 * pump sends template frames through it from its own AF_XDP socket (both backends); with the
 * native backend its twin is also linked to every app's socket as BPF_XSK_GEN, and emits the
 * ACKs due at once at the end of each RX batch that reached the app, in the NAPI poll that
 * brought the data in (the pump, woken as in compat, then finds their keys gone), and, woken on
 * demand by the daemon (patches/0005), what is left of them and the delayed ACKs at their
 * deadline. ACKs are decided in the kernel: ingress marks a connection that owes one (ack_now,
 * ack_pending) and queues its key once (gen_mark/gen_queue below); each run of etran_tcp_gen
 * pops one key and turns the template into that connection's pure ACK, its headers written from
 * the connection state by the same code egress uses (tcp_tx.h), for the NIC.
 *
 * Policy: an ACK is due at once on ack_now (duplicate, out of order, gap filled, FIN, window
 * probe, a change of the CE marks to echo: tcp_cc.h; without SACK, one per out-of-order segment:
 * ack_repeats; with it, as many as report every interval a burst changed: tcp_tx.h), once
 * GEN_STRETCH_SEGMENTS full segments are unacknowledged, when the unacknowledged bytes reach
 * what is left of the receive window, or when a segment with PSH brings them past one full
 * segment (gen_mark); any other owed ACK is delayed: queued on the
 * delayed queue, which the pump flushes only at its delayed-ACK deadline. Data an app sends
 * carries the ACK and settles it (egress clears ack_pending and ack_now); the generator then
 * skips the connection. */
#ifndef ETRAN_TCP_GEN_H
#define ETRAN_TCP_GEN_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "common/stats_maps.h"
#include "tcp/tcp.h"
#include "tcp/tcp_maps.h"
#include "tcp/tcp_tx.h"

/* Full segments one ACK may cover before it is due at once. RFC 5681 asks for an ACK every
 * second segment; a Linux receiver with GRO acknowledges whole aggregates. Every pure ACK here
 * costs a frame through each hop of the path, while data the app sends carries it for free. */
#define GEN_STRETCH_SEGMENTS 8

/* What ingress does about the ACK a connection owes, decided under the lock. */
struct gen_mark {
	__u8 queue; /* enum etran_tcp_ack_queued: the queue to push the key on; 0: none */
};

/* Under the connection lock, after ingress updated it with a segment (`push`: its PSH flag): the
 * queue the owed ACK needs, unless the key is in it already. So ingress pushes at most once per
 * queue until the generator pops.
 *
 * PSH ends the sender's write, or its window (an etran sender sets it on the last segment its
 * window admits: it waits for this ACK), and a Linux receiver's GRO ends a merge there and
 * acknowledges at once a merge longer than one segment. So do we: more than one full segment
 * owed at a PSH is ACKed at once. Otherwise a flight shorter than GEN_STRETCH_SEGMENTS (DCTCP
 * at a shallow queue: windows of 3-25 segments on the testbed at 1 Gbit/s) waited for the
 * pump's delayed-ACK deadline, 1 ms, four round trips there: the flow with the smaller window
 * got the longer round trip and kept falling behind (two flows' shares 16-79 %, 39-56 % with
 * this). A one-segment request still waits for the response to carry its ACK. */
static __always_inline struct gen_mark gen_mark(struct tcp_conn *c, __u8 push)
{
	struct gen_mark m = {};
	__u8 want = ETRAN_TCP_ACK_NOT_QUEUED;

	if (!c->ack_now && !c->ack_pending)
		return m;
	if (c->ack_now || c->ack_pending >= GEN_STRETCH_SEGMENTS * (__u32)c->mss ||
	    c->ack_pending >= c->rcv_wnd || (push && c->ack_pending > c->mss))
		want = ETRAN_TCP_ACK_IMMEDIATE;
	else
		want = ETRAN_TCP_ACK_DELAYED;
	if (want && !(c->ack_queued & want)) {
		m.queue = want;
		c->ack_queued |= want;
	}
	return m;
}

/* After the lock: queues the key and wakes the pump. A full queue undoes the mark, so the next
 * segment tries again. */
static __always_inline void gen_queue(struct tcp_conn *c, const struct tcp_conn_key *key,
				      struct gen_mark m)
{
	struct etran_tcp_gen_wake w = { .kind = m.queue };
	int err;

	if (!m.queue)
		return;
	if (m.queue == ETRAN_TCP_ACK_IMMEDIATE)
		err = bpf_map_push_elem(&etran_tcp_ack_queue, key, 0);
	else
		err = bpf_map_push_elem(&etran_tcp_dack_queue, key, 0);
	if (err) {
		bpf_spin_lock(&c->lock);
		c->ack_queued &= ~m.queue;
		bpf_spin_unlock(&c->lock);
		return;
	}
	bpf_ringbuf_output(&etran_tcp_gen_wake, &w, sizeof(w), 0);
	count_event(m.queue == ETRAN_TCP_ACK_IMMEDIATE ? ETRAN_EVENT_TCP_ACK_QUEUED_NOW
						       : ETRAN_EVENT_TCP_ACK_QUEUED_LATER,
		    0);
}

/* What the generator found under the lock. */
enum gen_outcome {
	GEN_SEND,
	GEN_SETTLED, /* nothing owed any more: data carried the ACK */
	GEN_REQUEUE, /* could not send: ACK still owed, the next segment queues it again */
};

/* The generator's body; see tcp.bpf.c. `xsk`: run by the native gen hook (BPF_XSK_GEN, after
 * an RX batch reached an app's socket, or on demand) on a zeroed frame, where XDP_TX sends the
 * ACK out of the NIC and XDP_DROP ends the run; else run on the gen pump's templates, the ACK
 * redirected to the NIC. */
static __always_inline int tcp_gen(struct xdp_md *ctx, const int xsk)
{
	void *data;
	struct tx_plan plan = {};
	struct tcp_conn_key key;
	struct ethhdr *eth;
	enum gen_outcome out = GEN_SEND;
	struct gen_mark again = {};
	__u32 hdrs, ts_now, tpl_len;
	struct tcp_conn *c;
	__u8 queue;
	int room;

	/* The gen hook pops the ACKs due at once, then the delayed ones while the daemon flushes
	 * them on demand (etran_tcp_gen_flush). Else only the pump's templates: whatever else
	 * arrives on the gen port (the stack's own frames) passes. The first byte names the queue
	 * this run pops (the pump's choice). An empty queue ends the batch cheaply; nothing to
	 * count. */
	data = (void *)(long)ctx->data;
	eth = data;
	if (xsk) {
		__u32 zero = 0, *flush;

		queue = ETRAN_TCP_ACK_IMMEDIATE;
		if (bpf_map_pop_elem(&etran_tcp_ack_queue, &key)) {
			flush = bpf_map_lookup_elem(&etran_tcp_gen_flush, &zero);
			if (!flush || !*flush || bpf_map_pop_elem(&etran_tcp_dack_queue, &key))
				return XDP_DROP;
			queue = ETRAN_TCP_ACK_DELAYED;
		}
	} else {
		if ((void *)(eth + 1) > (void *)(long)ctx->data_end ||
		    eth->h_proto != bpf_htons(ETRAN_TCP_GEN_ETHERTYPE))
			return XDP_PASS;
		queue = *(__u8 *)data == ETRAN_TCP_ACK_DELAYED ? ETRAN_TCP_ACK_DELAYED
							       : ETRAN_TCP_ACK_IMMEDIATE;
		if (queue == ETRAN_TCP_ACK_DELAYED ? bpf_map_pop_elem(&etran_tcp_dack_queue, &key)
						   : bpf_map_pop_elem(&etran_tcp_ack_queue, &key))
			return XDP_DROP;
	}
	c = bpf_map_lookup_elem(&etran_tcp_conns, &key);
	if (!c)
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_GEN_NO_CONN, 0);

	ts_now = tx_ts_now();
	plan.sack_room = tx_sack_room(c, 0);
	hdrs = tx_hdrs_len(c, plan.sack_room);
	/* Both can fail; a redirect takes effect only if the program returns XDP_REDIRECT. */
	/* The template's length, computed apart: folded into the sum below, the compiler would
	 * subtract the packet end pointer from a scalar, which the verifier refuses. */
	tpl_len = ctx->data_end - ctx->data;
	barrier_var(tpl_len);
	room = bpf_xdp_adjust_tail(ctx, (int)hdrs - (int)tpl_len) == 0;
	if (room && !xsk && bpf_redirect_map(&etran_nic, 0, XDP_DROP) != XDP_REDIRECT)
		room = -1;

	bpf_spin_lock(&c->lock);
	c->ack_queued &= ~queue;
	if (room != 1)
		out = GEN_REQUEUE;
	else if (c->ack_now || c->ack_pending)
		tx_plan_segment(c, &plan);
	else if (c->ack_repeats && queue == ETRAN_TCP_ACK_IMMEDIATE) {
		c->ack_repeats--; /* the same ACK again: one more duplicate for the peer to count */
		tx_plan_segment(c, &plan);
	} else
		out = GEN_SETTLED;
	/* More duplicates owed, or intervals this ACK had no room to report: the key goes back
	 * on the queue, one ACK per run. */
	if (out == GEN_SEND && (c->ack_repeats || c->ack_now) &&
	    !(c->ack_queued & ETRAN_TCP_ACK_IMMEDIATE)) {
		again.queue = ETRAN_TCP_ACK_IMMEDIATE;
		c->ack_queued |= ETRAN_TCP_ACK_IMMEDIATE;
	}
	bpf_spin_unlock(&c->lock);
	if (out == GEN_SETTLED)
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_GEN_SETTLED, 0);
	if (out == GEN_REQUEUE)
		return drop(ETRAN_PROTO_TCP,
			    room ? ETRAN_DROP_TCP_TX_NO_NIC : ETRAN_DROP_TCP_TX_NO_HEADROOM, 0);

	gen_queue(c, &key, again);
	tx_plan_frame(c, &plan, 0, ts_now);
	if (!tx_write_headers(ctx, &key, &plan, 0))
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_TX_NO_HEADROOM, 0);
	count_event(ETRAN_EVENT_TCP_GEN_ACK, ctx->data_end - ctx->data);
	return delivered(ETRAN_PROTO_TCP, ctx->data_end - ctx->data, xsk ? XDP_TX : XDP_REDIRECT);
}

#endif
