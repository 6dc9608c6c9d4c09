/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* TCP egress (compat backend: XDP on the kernel side of an app's port; native: BPF_XSK_EGRESS,
 * linked to the app's socket). An app's TX frame is a
 * struct etran_tcp_tx_hdr followed by payload. Egress checks that the frame comes from the
 * connection's owner, that its payload lies in the stream where it may (new data at tx_pos
 * fitting the peer's and the congestion window, or bytes in flight resent: see tx_update); it
 * applies the app's consumption report to the receive window, replaces the TX header with
 * Ethernet, IPv4 and TCP headers written from the connection state alone (the app writes no
 * header field), and sends the segment to the NIC (compat: a redirect; native: XDP_PASS, the
 * kernel sends what the program left between data and data_end, patches/0004; or, pacing, the
 * segment waits in the socket's packet queue until its release time: tcp_pace.h). */
#ifndef ETRAN_TCP_EGRESS_H
#define ETRAN_TCP_EGRESS_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "common/csum.h"
#include "common/parse.h"
#include "common/stats_maps.h"
#include "tcp/tcp.h"
#include "tcp/tcp_cc.h"
#include "tcp/tcp_maps.h"
#include "tcp/tcp_pace.h"
#include "tcp/tcp_seq.h"
#include "tcp/tcp_tx.h"

/* The header checks that need no connection. */
static __always_inline int tx_hdr_valid(const struct etran_tcp_tx_hdr *h, __u64 frame_len)
{
	if ((h->flags & ~(ETRAN_TCP_TX_WINDOW_LIMITED | ETRAN_TCP_TX_PUSH)) ||
	    frame_len != sizeof(*h) + h->len)
		return 0;
	switch (h->intent) {
	case ETRAN_TCP_TX_DATA:
	case ETRAN_TCP_TX_RETRANSMIT:
		return h->len > 0 && h->len <= ETRAN_TCP_MAX_PAYLOAD;
	case ETRAN_TCP_TX_ACK:
	case ETRAN_TCP_TX_ACK_DUE:
	case ETRAN_TCP_TX_WINDOW_UPDATE:
	case ETRAN_TCP_TX_FIN:
	case ETRAN_TCP_TX_PROBE:
		return h->len == 0;
	default:
		return 0;
	}
}

/* The consumption report reopens the receive window by what the app read since the report
 * applied last, up to the largest window the field can announce (more could never reach the
 * peer). It is a position, not a count: a frame lost before egress (a compat port's veth full:
 * AF_XDP completes the frame all the same) takes no bytes of window with it, since the next
 * frame's report covers them too; counts were lost for good, and a window closed that way stayed
 * closed. A report behind the last one (frames taken out of order) changes nothing. It counts
 * even when the frame's data is refused below. */
static __always_inline void tx_reopen(struct tcp_conn *c, __u32 read_pos)
{
	__u32 max = 0xffffU << wscale(c->rcv_wscale);
	__u32 read = read_pos - c->app_read;

	if (read == 0 || read >= 0x80000000U)
		return;
	c->app_read = read_pos;
	if (c->rcv_wnd >= max)
		return;
	if (read > max - c->rcv_wnd)
		read = max - c->rcv_wnd;
	c->rcv_wnd += read;
}

static __always_inline void tx_refuse(struct tx_plan *p, enum etran_drop_reason why)
{
	p->dropped = 1;
	p->reason = why;
}

/* Our FIN (under the lock). The first one goes out at snd_nxt once the app's stream up to its
 * tx_pos was all sent, and takes one sequence number; any later one is the same FIN resent at
 * snd_nxt - 1, until the peer acknowledged it. The windows do not limit it. */
static __always_inline void tx_fin(struct tcp_conn *c, const struct etran_tcp_tx_hdr *h,
				   struct tx_plan *p)
{
	if (!(c->fin & TCP_CONN_FIN_SENT)) {
		if (h->tx_pos != c->tx_pos) {
			tx_refuse(p, ETRAN_DROP_TCP_TX_FIN_EARLY);
			return;
		}
		c->snd_nxt++;
		c->fin |= TCP_CONN_FIN_SENT;
	} else if (c->snd_una == c->snd_nxt) {
		/* Acknowledged already: the app's timer fired before it saw the ACK. A peer that
		 * closed meanwhile would answer the FIN with RST. */
		tx_refuse(p, ETRAN_DROP_TCP_TX_FIN_ACKED);
		return;
	}
	tx_plan_segment(c, p);
	p->seq = c->snd_nxt - 1;
	p->fin = 1;
}

/* A zero-window probe (RFC 9293 3.8.6.1), as Linux sends one: no payload, at snd_una - 1, an
 * old sequence number the peer answers with an ACK carrying its window. Else a window update
 * the network lost would leave both sides waiting for good. Only while the peer's window leaves
 * no room for new data (otherwise the app has data to send instead); it carries no byte, so
 * no data passes the window through it. The peer drops the probe unread, so the ACK it carries
 * settles nothing that was owed. */
static __always_inline void tx_probe(struct tcp_conn *c, struct tx_plan *p)
{
	__u32 ack_pending = c->ack_pending;
	__u8 ack_now = c->ack_now;

	if (c->snd_wnd > flight_bytes(c)) {
		tx_refuse(p, ETRAN_DROP_TCP_TX_PROBE_OPEN);
		return;
	}
	tx_plan_segment(c, p);
	p->seq = c->snd_una - 1;
	c->ack_pending = ack_pending;
	c->ack_now = ack_now;
}

/* Does a frame at `off` (from snd_una's position, wrapped) start before snd_una, but not
 * before snd_una as the app last heard it (app_una)? Ingress keeps pure ACKs from the app while
 * it lags by less than TCP_ACK_KEEP_SEGMENTS segments (tcp_ingress.h, ack_kept); should the
 * segments after such an ACK be lost, nothing else tells the app, and its timer resends from
 * where it thinks snd_una is. Refused, that resend would leave both ends waiting until the app
 * gives up; sent, the peer drops what it has and answers with an ACK, which reaches the app (a
 * duplicate) and tells it where snd_una is. Nothing before what the app was told goes out. */
static __always_inline int tx_lagging(const struct tcp_conn *c, __u32 off)
{
	__u32 lag = -off;

	/* Bounded by the keep limit too: an offset into the flight, however large, is never a
	 * lag (its negation is close to 2^32), whatever app_una holds. */
	return off && lag <= c->snd_una - c->app_una &&
	       lag <= TCP_ACK_KEEP_SEGMENTS * (__u32)c->mss;
}

/* Everything done under the connection lock: no helper calls, only the state and the copied
 * TX header.
 *
 * Payload is placed by stream position. The bytes in flight, [snd_una, snd_nxt) less a FIN
 * not yet acknowledged, sit at positions [una_pos, tx_pos) with una_pos = tx_pos - flight, so
 * a payload at position `pos` has sequence number snd_una + (pos - una_pos), wrap-around
 * included.
 * - RETRANSMIT must lie wholly within the bytes in flight: it is resent at its own sequence
 *   number and changes neither snd_nxt nor tx_pos. The windows do not limit it (its bytes are
 *   already counted in the flight). It is the loss signal of congestion control (tcp_cc.h).
 * - DATA or RETRANSMIT starting before una_pos, but not before what the app last heard it was
 *   (see tx_lagging), and ending before tx_pos is resent as it is, at its own sequence number.
 * - DATA may start anywhere in [una_pos, tx_pos]: the part before tx_pos is a retransmission,
 *   the rest is new data, which alone advances snd_nxt/tx_pos and must fit both windows (the
 *   peer's, and the congestion window up to its edge; else the whole frame is refused and
 *   nothing moves). So an app that lost track of which of its frames were refused may resend
 *   from its last acknowledged position and no byte is ever counted twice as new. After our
 *   FIN no new data is taken. DATA from snd_una while bytes are in flight is the resend after
 *   a retransmission timeout: congestion control's timeout signal.
 * - ACK_DUE: only while an ACK is owed (ack_pending or ack_now), as for the generator.
 * - FIN: see tx_fin.
 * - PROBE: see tx_probe.
 * - WINDOW_UPDATE: refused after the peer's FIN unless an ACK is owed (see tx_window for the
 *   window itself).
 * A segment with payload carries the CWR a window cut asked for. */
static __always_inline void tx_decide(struct tcp_conn *c, const struct etran_tcp_tx_hdr *h,
				      struct tx_plan *p)
{
	__u32 flight = flight_bytes(c);
	__u32 off = h->tx_pos - una_pos(c); /* from snd_una's position */
	__u32 fresh = 0, seq = c->snd_nxt;

	/* After the peer's FIN a segment that would only announce the window is not sent. */
	if (h->intent == ETRAN_TCP_TX_WINDOW_UPDATE && (c->fin & TCP_CONN_FIN_RCVD) &&
	    !c->ack_now && !c->ack_pending) {
		tx_refuse(p, ETRAN_DROP_TCP_TX_WND_AFTER_FIN);
		return;
	}
	if (h->intent == ETRAN_TCP_TX_ACK_DUE && !c->ack_pending && !c->ack_now) {
		tx_refuse(p, ETRAN_DROP_TCP_TX_ACK_SETTLED);
		return;
	}
	if (h->intent == ETRAN_TCP_TX_FIN) {
		tx_fin(c, h, p);
		return;
	}
	if (h->intent == ETRAN_TCP_TX_PROBE) {
		tx_probe(c, p);
		return;
	}
	if ((h->intent == ETRAN_TCP_TX_RETRANSMIT || h->intent == ETRAN_TCP_TX_DATA) &&
	    tx_lagging(c, off)) {
		/* Behind snd_una: resent as it is, no window or congestion signal. */
		if (h->len > flight - off) {
			tx_refuse(p, ETRAN_DROP_TCP_TX_STALE);
			return;
		}
		seq = c->snd_una + off;
	} else if (h->intent == ETRAN_TCP_TX_RETRANSMIT) {
		if (off >= flight) {
			tx_refuse(p, ETRAN_DROP_TCP_TX_RETX_RANGE);
			return;
		}
		if (h->len > flight - off) {
			tx_refuse(p, ETRAN_DROP_TCP_TX_RETX_UNSENT);
			return;
		}
		seq = c->snd_una + off;
		cc_on_loss(c);
	} else if (h->intent == ETRAN_TCP_TX_DATA) {
		if (off > flight) {
			tx_refuse(p, ETRAN_DROP_TCP_TX_STALE);
			return;
		}
		if (h->len > flight - off)
			fresh = h->len - (flight - off);
		if (fresh && (c->fin & TCP_CONN_FIN_SENT)) {
			tx_refuse(p, ETRAN_DROP_TCP_TX_AFTER_FIN);
			return;
		}
		/* Bytes in flight once the new part is sent. */
		if (fresh && flight + fresh > c->snd_wnd) {
			tx_refuse(p, ETRAN_DROP_TCP_TX_PEER_WINDOW);
			return;
		}
		if (fresh && flight + fresh > cc_room(c)) {
			tx_refuse(p, ETRAN_DROP_TCP_TX_CWND);
			return;
		}
		seq = c->snd_una + off;
		/* Bytes in flight resent from snd_una: the app's retransmission timeout fired. */
		if (off == 0 && flight)
			cc_on_timeout(c);
		if (fresh)
			cc_on_send(c, fresh, h->flags & ETRAN_TCP_TX_WINDOW_LIMITED);
	}
	tx_plan_segment(c, p);
	p->seq = seq;
	p->cwr = h->len && cc_take_cwr(c);
	c->snd_nxt += fresh;
	c->tx_pos += fresh;
}

/* Applies the frame's consumption report, then decides the frame (tx_decide). A refused frame
 * whose report made a window update due goes out all the same, as that update: a pure ACK
 * (its payload, if any, cut off). Else the report would be taken without the peer ever hearing
 * of it, and the app, which cannot tell, would wait for data the peer cannot send (a zero
 * window that never reopens). */
static __always_inline void tx_update(struct tcp_conn *c, const struct etran_tcp_tx_hdr *h,
				      struct tx_plan *p)
{
	tx_reopen(c, h->read_pos);
	tx_decide(c, h, p);
	if (!p->dropped || !tx_window_update_due(c))
		return;
	p->dropped = 0;
	p->bare = 1;
	p->fin = 0;
	p->cwr = 0;
	tx_plan_segment(c, p);
}

/* Pacing (tcp_pace.h), under the lock, for a frame egress sends: a segment with payload or a FIN
 * gets its release time (*at) and starts or cancels an RTT sample; returns 1 when it must wait
 * in the packet queue. Pure ACKs, window updates and probes go at once. `len`: the frame's
 * bytes; `snd_nxt_before`: snd_nxt before tx_update. */
static __always_inline int tx_pace(struct tcp_conn *c, const struct etran_tcp_tx_hdr *h,
				   const struct tx_plan *p, __u64 now, __u32 snd_nxt_before,
				   __u32 len, __u64 *at)
{
	int queue;

	if (!p->fin && (!h->len || p->bare))
		return 0;
	*at = pace_release(c, now, len, p->seq + h->len + p->fin, &queue);
	pace_rtt_sent(c, *at, snd_nxt_before, p->seq != snd_nxt_before);
	return queue;
}

/* The egress program's body; see tcp.bpf.c. */
static __always_inline int tcp_egress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct etran_tcp_tx_hdr *th = data, h;
	__u64 bytes = data_end - data, payload_sum;
	struct tx_plan plan = {};
	__u32 slot, hdrs, ts_now, snd_nxt;
	__u64 now = 0, at = 0;
	struct tcp_conn *c;
	int ok, later = 0;

	if ((void *)(th + 1) > data_end)
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_TX_SHORT, bytes);
	h = *th;
	if (!tx_hdr_valid(&h, bytes))
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_TX_BAD_HDR, bytes);
	c = bpf_map_lookup_elem(&etran_tcp_conns, &h.key);
	if (!c)
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_TX_UNKNOWN_CONN, bytes);
	/* The port a frame arrives on (compat), or the queue of the socket that sends it (native),
	 * is the app's identity: it cannot be forged. */
	slot = c->owner_port;
	if (slot == ETRAN_TCP_OWNER_MOVING)
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_MOVING, bytes);
	if (!from_app(ctx, slot))
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_TX_WRONG_OWNER, bytes);
	if (h.len > c->mss)
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_TX_OVER_MSS, bytes);

	/* Work that needs no state, or helpers, goes before the lock. */
	payload_sum = csum_packet(th + 1, data_end, h.len, ETRAN_TCP_MAX_PAYLOAD, &ok);
	if (!ok)
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_TX_SHORT, bytes);
	ts_now = tx_ts_now();
	/* A probe reports no SACK blocks: the peer drops it unread (see tx_probe). */
	plan.sack_room = h.intent == ETRAN_TCP_TX_PROBE ? 0 : tx_sack_room(c, h.len);
	hdrs = tx_hdrs_len(c, plan.sack_room);
	/* Both can fail; they go first so that a failure leaves the connection untouched. A
	 * redirect takes effect only if the program returns XDP_REDIRECT. */
	if (bpf_xdp_adjust_head(ctx, (int)sizeof(h) - (int)hdrs))
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_TX_NO_HEADROOM, bytes);
	if (to_nic_prepare())
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_TX_NO_NIC, bytes);
	if (pace_on())
		now = bpf_ktime_get_ns();

	bpf_spin_lock(&c->lock);
	/* Checked again under the lock: the connection may have begun to move (tcp_rehome.h). */
	if (c->owner_port != slot) {
		tx_refuse(&plan, ETRAN_DROP_TCP_MOVING);
	} else {
		snd_nxt = c->snd_nxt;
		tx_update(c, &h, &plan);
		if (pace_on() && !plan.dropped)
			later = tx_pace(c, &h, &plan, now, snd_nxt, hdrs + h.len, &at);
	}
	bpf_spin_unlock(&c->lock);
	if (plan.dropped)
		return drop(ETRAN_PROTO_TCP, plan.reason, bytes);

	if (plan.bare && h.len) {
		/* Shrinking within the frame cannot fail; the headers stay where they are. */
		if (bpf_xdp_adjust_tail(ctx, -(int)h.len))
			return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_TX_NO_HEADROOM, bytes);
		h.len = 0;
		payload_sum = 0;
	}
	tx_plan_frame(c, &plan, h.len, ts_now);
	plan.psh = h.len && (h.flags & ETRAN_TCP_TX_PUSH);
	if (!tx_write_headers(ctx, &h.key, &plan, payload_sum))
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_TX_NO_HEADROOM, bytes);
	bytes = ctx->data_end - ctx->data;
	count_event(h.len ? ETRAN_EVENT_TCP_TX_DATA : ETRAN_EVENT_TCP_TX_PURE_ACK, bytes);
	if (h.len && h.intent == ETRAN_TCP_TX_RETRANSMIT)
		count_event(ETRAN_EVENT_TCP_TX_RETRANSMIT, bytes);
	if (later) {
		if (to_nic_later(ctx, at) == XDP_REDIRECT) {
			count_event(ETRAN_EVENT_TCP_TX_PACED, bytes);
			return delivered(ETRAN_PROTO_TCP, bytes, XDP_REDIRECT);
		}
		/* The socket's queue is full: sent now rather than lost. */
		count_event(ETRAN_EVENT_TCP_TX_PACE_REFUSED, bytes);
	}
	return delivered(ETRAN_PROTO_TCP, bytes, to_nic_verdict());
}

#endif
