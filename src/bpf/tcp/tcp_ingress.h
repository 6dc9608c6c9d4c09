/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* TCP ingress: the fast path of established connections. Segments of connections in
 * etran_tcp_conns are checked against and applied to the connection state, then handed to the
 * owning app's port with RX metadata in front. The slow path (see slow_path below) goes to the
 * daemon through a ring buffer; anything else (no connection, nothing etran owns) goes to the
 * kernel.
 *
 * Out-of-order data: up to TCP_OOO_MAX intervals past rcv_nxt, held by the app at their stream
 * positions, reported in our ACKs' SACK blocks (tcp_tx.h) and merged when in-order data reaches
 * them. Segments carrying SACK blocks reach the app even as duplicate ACKs: its scoreboard needs
 * them.
 *
 * Every frame etran consumes (fast or slow path) must first pass the checks the kernel would
 * have made: the IPv4 header checksum and the TCP checksum (see rx_corruption). So a segment
 * corrupted on the way changes no state, reaches no app and never reaches the daemon, which
 * gets only the head of a frame and could not check it. Frames left to the kernel are its to
 * check.
 *
 * Congestion control (tcp_cc.h) runs on every acceptable ACK, under the lock with the rest: the
 * window grows or is cut (ECE), and RX metadata carries the send window it leaves. A data
 * segment's CE mark sets the connection's CE state, which our ACKs echo. */
#ifndef ETRAN_TCP_INGRESS_H
#define ETRAN_TCP_INGRESS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "common/csum.h"
#include "common/parse.h"
#include "common/stats_maps.h"
#include "tcp/tcp.h"
#include "tcp/tcp_cc.h"
#include "tcp/tcp_gen.h"
#include "tcp/tcp_maps.h"
#include "tcp/tcp_pace.h"
#include "tcp/tcp_seq.h"

/* The fields of a segment, copied out of the frame before the lock is taken. */
struct segment {
	__u32 seq;
	__u32 ack;
	__u32 len;   /* payload bytes, from the IP total length (Ethernet may pad) */
	__u32 wnd;   /* the window field, unscaled */
	__u32 tsval; /* valid with has_ts */
	__u16 payload_off;
	__u8 has_ack;
	__u8 fin;
	__u8 has_ts;
	__u8 sack; /* options past the timestamp on a SACK connection: SACK blocks for the app */
	__u8 ece;  /* the ECE flag: the peer echoes congestion marks */
	__u8 ce;   /* the IP header's ECN field is CE: the network marked this segment */
	__u8 psh;  /* the PSH flag: the sender's write (or its window) ends here */
	__u64 now; /* pacing (tcp_pace.h): when it arrived, CLOCK_MONOTONIC ns; else 0 */
};

/* What the update under the lock decided, acted upon after it. */
struct verdict {
	struct etran_tcp_rx_meta meta;
	__u32 reason;     /* enum etran_drop_reason, when dropped */
	__u8 dropped;     /* drop the frame instead of delivering it */
	__u8 wnd_changed; /* the peer's window is news for the app */
	__u8 acked;       /* snd_una moved: news for the app */
	__u8 duplicate;   /* the payload was held already (reported by D-SACK) */
	__u8 dup_ack;     /* a duplicate ACK (RFC 5681): counted after the lock */
	__u8 kept;        /* a pure ACK taken in the kernel (ack_kept): consumed, not dropped */
};

static __always_inline void set_drop(struct verdict *v, enum etran_drop_reason why)
{
	v->dropped = 1;
	v->reason = why;
}

/* Moves the in-order frontier by n bytes the app now holds. */
static __always_inline void advance(struct tcp_conn *c, __u32 n)
{
	c->rcv_nxt += n;
	c->rx_pos += n;
	c->rcv_wnd -= n;
	c->ack_pending += n;
	c->ack_repeats = 0; /* they would repeat the new ACK: duplicates of nothing lost */
}

/* 1 when an out-of-order segment owes a duplicate ACK of its own beyond the one ack_now asks
 * for: without SACK, while one is owed already and fewer than TCP_ACK_REPEATS_MAX (a power of
 * two, which ack_repeats never exceeds) are. */
static __always_inline __u8 tcp_ack_repeat_owed(const struct tcp_conn *c)
{
	_Static_assert(TCP_CONN_SACK == 1 << 2 && TCP_ACK_REPEATS_MAX == 1 << 5, "bit positions");
	return (~c->flags >> 2) & c->ack_now & (~c->ack_repeats >> 5) & 1;
}

/* Remembers [start, end), received before, for the D-SACK block (RFC 2883) of an ACK sent at
 * once: it tells the peer that its retransmission was not needed. */
static __always_inline void note_dsack(struct tcp_conn *c, __u32 start, __u32 end)
{
	if (!(c->flags & TCP_CONN_SACK))
		return;
	c->dsack.start = start;
	c->dsack.end = end;
	c->ack_now = 1;
}

/* The interval code below has no branch per interval: with TCP_OOO_MAX intervals, a branch
 * each would multiply the paths the verifier walks (2^TCP_OOO_MAX). Each interval instead
 * yields 0/1 flags and all-ones/zero masks (hidden from the compiler, which would turn a
 * masked merge back into a branch), the loops stay loops (unrolled, they would spill past the
 * stack's 512 bytes), and the intervals kept are compacted in place, each written at the next
 * free index whether kept or not (a slot past the ones kept holds garbage until the count says
 * it is in use). */

/* 1 when sequence number a is before b, else 0 (before(), as a number). */
static __always_inline __u32 ooo_before(__u32 a, __u32 b)
{
	__u32 d = a - b;

	barrier_var(d);
	return d >> 31;
}

/* 1 when a == b, else 0 (also for the held FIN, whose tests run on every segment). */
static __always_inline __u32 ooo_same(__u32 a, __u32 b)
{
	__u32 d = a ^ b;

	barrier_var(d);
	return ((d | -d) >> 31) ^ 1;
}

/* All ones when flag (0 or 1) is set, else 0; opaque to the compiler. */
static __always_inline __u32 ooo_mask(__u32 flag)
{
	__u32 m = -flag;

	barrier_var(m);
	return m;
}

/* b where m is all ones, else a. */
static __always_inline __u32 ooo_pick(__u32 a, __u32 b, __u32 m)
{
	return (a & ~m) | (b & m);
}

/* In-order data advanced rcv_nxt: every interval it reached is in order now, and the bytes
 * past the new frontier that they held are too. Intervals never touch, so the ones reached
 * are those starting at or before rcv_nxt, and the frontier moves to the furthest end. */
static __always_inline void merge_ooo(struct tcp_conn *c, struct verdict *v)
{
	__u32 from = c->rcv_nxt, front = from, n = c->ooo_n, kept = 0, reached = 0;
	__u32 fresh = c->ooo_fresh, fresh_reached = 0;

#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < TCP_OOO_MAX; i++) {
		struct tcp_seq_range r = c->ooo[i];
		__u32 used = ooo_before(i, n); /* i < n (both small) */
		__u32 ahead = ooo_before(from, r.start);
		__u32 reach = used & (ahead ^ 1);

		c->ooo[kept & (TCP_OOO_MAX - 1)] = r;
		kept += used & ahead;
		reached |= reach;
		fresh_reached += reach & ooo_before(i, fresh);
		front = ooo_pick(front, r.end, ooo_mask(reach & ooo_before(front, r.end)));
	}
	if (!reached)
		return;
	n = front - from;
	/* Intervals lie within the window; the clamp keeps a bad insert harmless. */
	if (n > c->rcv_wnd)
		n = c->rcv_wnd;
	advance(c, n);
	c->ooo_n = kept;
	c->ooo_fresh = fresh - fresh_reached; /* the cumulative ACK reports those reached */
	c->ack_now = 1; /* a filled gap is ACKed at once (RFC 5681 4.2) */
	v->meta.merged = c->rcv_nxt - from;
	v->meta.flags |= ETRAN_TCP_RX_MERGED;
}

/* What hold_ooo did with out-of-order payload. */
enum ooo_verdict {
	OOO_HELD,      /* held: it started an interval or grew one (possibly joining several) */
	OOO_DUPLICATE, /* an interval held all of it already */
	OOO_FULL,      /* apart from every interval, and no room for another: left out */
};

/* Out-of-order payload [seq, end) inside the window: the intervals it touches (overlapping or
 * adjacent) and it become one interval, which moves to the front (it holds the most recently
 * received segment, so its SACK block goes first); the others keep their order behind it. */
static __always_inline enum ooo_verdict hold_ooo(struct tcp_conn *c, __u32 seq, __u32 end)
{
	__u32 lo = seq, hi = end, n = c->ooo_n, kept = 0, touched = 0, dup = 0;
	__u32 fresh = c->ooo_fresh, fresh_joined = 0;

#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < TCP_OOO_MAX; i++) {
		struct tcp_seq_range r = c->ooo[i];
		__u32 used = ooo_before(i, n); /* i < n (both small) */
		__u32 apart = ooo_before(end, r.start) | ooo_before(r.end, seq);
		__u32 join = used & (apart ^ 1);

		c->ooo[kept & (TCP_OOO_MAX - 1)] = r;
		kept += used & apart;
		touched |= join;
		fresh_joined += join & ooo_before(i, fresh);
		/* All of it held already: still moved to the front, so that the block holding
		 * the D-SACK'd bytes follows the D-SACK block (RFC 2883 4). */
		dup |= join & (ooo_before(seq, r.start) ^ 1) & (ooo_before(r.end, end) ^ 1);
		lo = ooo_pick(lo, r.start, ooo_mask(join & ooo_before(r.start, lo)));
		hi = ooo_pick(hi, r.end, ooo_mask(join & ooo_before(hi, r.end)));
	}
	if (!touched && kept >= TCP_OOO_MAX)
		return OOO_FULL; /* every interval was written back where it was */
	/* The intervals kept move one back (when the new one joined others, kept < n and the
	 * last slot moved holds garbage), the joined one goes in front. */
#pragma unroll
	for (__u32 i = TCP_OOO_MAX - 1; i > 0; i--)
		c->ooo[i] = c->ooo[i - 1];
	c->ooo[0].start = lo;
	c->ooo[0].end = hi;
	c->ooo_n = kept + 1;
	/* The fresh ones it did not join stay in front, behind it (the kept keep their order). */
	c->ooo_fresh = fresh - fresh_joined + 1;
	if (dup) {
		note_dsack(c, seq, end);
		return OOO_DUPLICATE;
	}
	return OOO_HELD;
}

/* The ACK field, the window, and congestion control (tcp_cc.h). Returns 0 when the segment
 * must be dropped. */
static __always_inline int rx_ack(struct tcp_conn *c, const struct segment *s, struct verdict *v)
{
	__u32 wnd = s->wnd << wscale(c->snd_wscale), flight = flight_bytes(c), acked = 0;
	__u32 send_wnd = cc_send_wnd(c);
	int left = 0;

	if (!s->has_ack)
		return 1;
	if (after(s->ack, c->snd_nxt)) {
		c->ack_now = 1; /* RFC 9293 3.10.7.4: ACK it and drop it */
		set_drop(v, ETRAN_DROP_TCP_ACK_UNSENT);
		return 0;
	}
	if (before(s->ack, c->snd_una))
		return 1; /* an old ACK, reordered: neither its ack nor its window is news */
	/* Said by every segment that acknowledges our FIN, not just the first: if the app lost
	 * that frame, the next one (the answer to our resent FIN, say) tells it. */
	if ((c->fin & TCP_CONN_FIN_SENT) && s->ack == c->snd_nxt)
		v->meta.flags |= ETRAN_TCP_RX_FIN_ACKED;
	if (after(s->ack, c->snd_una)) {
		v->acked = 1;
		acked = s->ack - c->snd_una;
		c->snd_una = s->ack;
		c->dupacks = 0;
		if (pace_on())
			pace_rtt_acked(c, s->now);
	} else if (!s->len && !s->fin && c->snd_una != c->snd_nxt) {
		/* The peer got a segment out of order: one left the network. A duplicate ACK as
		 * RFC 5681 defines it has the window unchanged (the third triggers fast retransmit);
		 * SACK blocks say it even when the window moved, as a Linux receiver's does. */
		left = wnd == c->snd_wnd || s->sack;
		v->dup_ack = wnd == c->snd_wnd;
		if (v->dup_ack && ++c->dupacks == TCP_DUP_THRESH)
			v->meta.flags |= ETRAN_TCP_RX_FAST_RETRANSMIT;
	}
	if (wnd != c->snd_wnd) {
		c->snd_wnd = wnd;
		v->wnd_changed = 1;
	}
	cc_on_ack(c, acked, flight, s->ece, left);
	/* A segment that left let another into the network: news if it opened the app's window. */
	if (left && cc_send_wnd(c) != send_wnd)
		v->wnd_changed = 1;
	return 1;
}

/* Is the segment acceptable (RFC 9293 3.10.7.4)? Returns 0 when it must be dropped: entirely
 * old, or starting past the window. Checked before rx_ack changes anything. */
static __always_inline int rx_check_seq(struct tcp_conn *c, const struct segment *s,
					struct verdict *v)
{
	__u32 start, off;

	if (!s->len) {
		/* A keepalive (RFC 9293 3.8.4) or Linux's zero-window probe: no data at rcv_nxt - 1,
		 * sent to draw an ACK. Unanswered, the peer ends the connection (or never learns
		 * that the window reopened). Its old seq makes it unacceptable, as for Linux: the
		 * ACK it carries is not news (a duplicate ACK would count towards a fast
		 * retransmit). */
		if (s->seq == c->rcv_nxt - 1 && !s->fin) {
			c->ack_now = 1;
			set_drop(v, ETRAN_DROP_TCP_PROBE);
			return 0;
		}
		/* A bare ACK is checked against the right edge only, as Linux does: one sent before
		 * data that is still in flight, or reordered behind it, carries an older seq. */
		if (after(s->seq, c->rcv_nxt + c->rcv_wnd)) {
			c->ack_now = 1;
			set_drop(v, ETRAN_DROP_TCP_BEYOND_WINDOW);
			return 0;
		}
		return 1;
	}
	/* A FIN not yet received counts in the segment's length (RFC 9293 3.10.7.4): old data
	 * carrying a new FIN is not a duplicate. */
	if (!after(s->seq + s->len + (s->fin && !(c->fin & TCP_CONN_FIN_RCVD)), c->rcv_nxt)) {
		c->ack_now = 1; /* the peer missed our ACK: repeat it */
		if (s->len)
			note_dsack(c, s->seq, s->seq + s->len);
		set_drop(v, ETRAN_DROP_TCP_DUPLICATE);
		return 0;
	}
	/* Not all old, so past the FIN, which ended the peer's stream (RFC 9293 3.10.7.4). */
	if (c->fin & TCP_CONN_FIN_RCVD) {
		set_drop(v, ETRAN_DROP_TCP_AFTER_FIN);
		return 0;
	}
	start = before(s->seq, c->rcv_nxt) ? c->rcv_nxt : s->seq;
	off = start - c->rcv_nxt;
	if (off >= c->rcv_wnd) {
		c->ack_now = 1; /* tells the peer the window (a zero-window probe lands here) */
		set_drop(v, ETRAN_DROP_TCP_BEYOND_WINDOW);
		return 0;
	}
	return 1;
}

/* With `hold` (0 or 1): the peer's FIN at `seq` came beyond a hole. It is kept until everything
 * before it is in order (as Linux keeps it in its out-of-order queue); else a FIN right behind
 * data that overtook it (a segment replayed from the daemon, say) waits for the peer's
 * retransmission timeout. Without a branch, like the interval code. */
static __always_inline void hold_fin(struct tcp_conn *c, __u32 hold, __u32 seq)
{
	_Static_assert(TCP_CONN_FIN_HELD == 1 << 2, "bit position");
	c->fin |= hold << 2;
	c->fin_seq = ooo_pick(c->fin_seq, seq, ooo_mask(hold));
}

/* An acceptable segment's payload and FIN: the in-order part advances the stream (and may reach
 * out-of-order intervals), a later part is held in an interval or, without room for one, left
 * out. */
static __always_inline void rx_payload(struct tcp_conn *c, const struct segment *s,
				       struct verdict *v)
{
	__u32 skip = 0, off, len, fin = 0;
	enum ooo_verdict held;

	v->meta.rx_pos = c->rx_pos;
	v->meta.payload_off = s->payload_off;
	if (!s->len) {
		fin = s->fin && s->seq == c->rcv_nxt && !c->ooo_n;
		/* Beyond a hole (acceptable: within the window; not their FIN again, before). */
		hold_fin(c, s->fin & ooo_before(c->rcv_nxt, s->seq), s->seq);
		goto out;
	}
	if (before(s->seq, c->rcv_nxt)) {
		skip = c->rcv_nxt - s->seq; /* overlapping prefix the app already has */
		note_dsack(c, s->seq, c->rcv_nxt);
	}
	off = s->seq + skip - c->rcv_nxt;
	len = s->len - skip;
	if (len > c->rcv_wnd - off)
		len = c->rcv_wnd - off; /* the rest does not fit the app's buffer: dropped */
	v->meta.rx_pos = c->rx_pos + off;
	v->meta.payload_off = s->payload_off + skip;
	v->meta.payload_len = len;
	if (off == 0) {
		/* A FIN counts only once everything before it is in order and kept. */
		fin = s->fin && len == s->len - skip && !c->ooo_n;
		advance(c, len);
		if (c->ooo_n)
			merge_ooo(c, v);
		goto out;
	}
	/* Duplicate ACKs drive the peer's recovery. With SACK one ACK tells all (its blocks);
	 * without, the peer counts them (three make a fast retransmit, RFC 5681 3.2), so each
	 * out-of-order segment gets one of its own (4.2), even when the generator has not sent the
	 * last one yet (it sends them, tcp_gen.h). Counted without a branch: a branch here
	 * doubles the verifier's states for the rest of the program. */
	c->ack_repeats += tcp_ack_repeat_owed(c);
	c->ack_now = 1;
	held = hold_ooo(c, c->rcv_nxt + off, c->rcv_nxt + off + len);
	hold_fin(c, s->fin & (ooo_same(held, OOO_FULL) ^ 1) & ooo_same(len, s->len - skip),
		 c->rcv_nxt + off + len);
	if (held == OOO_HELD) {
		v->meta.flags |= ETRAN_TCP_RX_OUT_OF_ORDER;
	} else {
		v->duplicate = held == OOO_DUPLICATE;
		/* Left out (or had already): without payload the frame is in order, at rx_pos
		 * (else the app would see a hole). */
		v->meta.rx_pos = c->rx_pos;
		v->meta.payload_off = s->payload_off;
		v->meta.payload_len = 0;
	}
out:
	/* A FIN held beyond a hole counts once the hole filled and nothing is out of order. */
	fin |= (c->fin >> 2) & 1 & ooo_same(c->fin_seq, c->rcv_nxt) & ooo_same(c->ooo_n, 0);
	if (fin && !(c->fin & TCP_CONN_FIN_RCVD)) {
		c->rcv_nxt++; /* the FIN takes one sequence number, no stream byte */
		c->fin |= TCP_CONN_FIN_RCVD;
		c->ack_now = 1;
	} else if (s->fin && (c->fin & TCP_CONN_FIN_RCVD)) {
		c->ack_now = 1; /* the FIN again: our ACK of it was lost */
	}
	/* Said by every frame after the peer's FIN, not just the first: if the app lost that
	 * frame, the next one tells it. */
	if (c->fin & TCP_CONN_FIN_RCVD)
		v->meta.flags |= ETRAN_TCP_RX_FIN;
}


/* Does a pure ACK stay in the kernel? Its news is snd_una moving (and the peer's window), which
 * ingress has applied; the next frame the app gets carries the absolute una_pos and send window,
 * so the app misses nothing, and a bulk sender wakes for a fraction of the ACKs (a Linux receiver
 * acknowledges every other segment) instead of taking each through its port. Handed on all the
 * same: a duplicate ACK, anything flagged (SACK blocks, our FIN acknowledged, a fast retransmit),
 * every ACK while the app recovers lost bytes (TCP_CC_LOSS),
 * an ACK that moves only the window, one that leaves under two full segments in flight (the
 * app's timers stop, or the peer's next ACK may be delayed), and one that finds the app's view
 * of snd_una behind by the keep limit (tcp_ack_keep_limit): the app's window lags by at most
 * that, and the two segments still in flight draw the peer's next ACK at once, so an ACK the
 * app needs is never held back for long. */
static __always_inline int ack_kept(const struct tcp_conn *c, const struct segment *s,
				    const struct verdict *v)
{
	__u32 limit = cc_min(TCP_ACK_KEEP_SEGMENTS * (__u32)c->mss,
			     v->meta.send_wnd >> TCP_ACK_KEEP_WND_SHIFT);

	if (s->len || s->fin || !v->acked || v->dup_ack || v->meta.flags || (c->cc & TCP_CC_LOSS))
		return 0;
	/* Under two full segments still in flight the peer may hold its next ACK back (a delayed
	 * ACK, up to 40 ms for Linux) while the app waits for the room this one opened. */
	if (flight_bytes(c) < 2 * (__u32)c->mss)
		return 0;
	return c->snd_una - c->app_una < limit;
}

/* Everything done under the connection lock: no helper calls, only the state and the copied
 * segment. */
static __always_inline void rx_update(struct tcp_conn *c, const struct segment *s,
				      struct verdict *v)
{
	__u32 rcv_nxt = c->rcv_nxt;

	/* The mark is news of the path whether or not the payload is taken. */
	if (s->len)
		cc_on_data(c, s->ce);
	if (!rx_check_seq(c, s, v) || !rx_ack(c, s, v))
		return;
	rx_payload(c, s, v);
	/* RFC 7323 4.3: remember the TSval of a segment that covers rcv_nxt. */
	if ((c->flags & TCP_CONN_TIMESTAMPS) && s->has_ts && !after(s->seq, rcv_nxt) &&
	    !before(s->tsval, c->ts_recent))
		c->ts_recent = s->tsval;
	v->meta.handle = c->handle;
	v->meta.send_wnd = cc_send_wnd(c);
	v->meta.una_pos = una_pos(c);
	/* SACK blocks are news for the app's scoreboard even on a duplicate ACK. */
	if (s->sack)
		v->meta.flags |= ETRAN_TCP_RX_SACK;
	if (!v->meta.payload_len && !v->acked && !v->meta.flags && !v->wnd_changed)
		set_drop(v, !s->len	    ? ETRAN_DROP_TCP_CONSUMED
			    : v->duplicate ? ETRAN_DROP_TCP_DUPLICATE
					   : ETRAN_DROP_TCP_OOO_GAP);
	else if (ack_kept(c, s, v))
		v->kept = 1;
	if (!v->dropped && !v->kept)
		c->app_una = c->snd_una;
}

/* Is this segment the daemon's? A SYN (no ACK) to a listening port; any segment of a handshake
 * the daemon runs; a SYN or RST of an established connection (the kernel knows no socket for it
 * and would answer a SYN with RST). */
static __always_inline int for_slow_path(const struct tcphdr *tcp, const struct tcp_conn_key *key,
					 int established)
{
	__be16 port = key->local_port;

	if (tcp->syn && !tcp->ack && bpf_map_lookup_elem(&etran_tcp_listen, &port))
		return 1;
	if (bpf_map_lookup_elem(&etran_tcp_pending, key))
		return 1;
	return established && (tcp->syn || tcp->rst);
}

/* The longest TCP segment (header and payload) ingress takes: what the longest frame holds
 * after Ethernet and IPv4 headers (a peer keeps payload and options within our MSS, RFC 6691).
 * It bounds the checksum loop. */
#define RX_MAX_SEGMENT (ETRAN_TCP_MAX_FRAME - 14 - 20)

/* What rx_corruption returns for a frame that arrived intact. */
#define RX_INTACT -1

/* Whether a frame etran consumes arrived intact: its IPv4 header checksum and TCP checksum
 * verify (RFC 1122 3.2.1.2, RFC 9293 3.1). Returns RX_INTACT, else the drop reason.
 *
 * A global function, so that the verifier checks it once on its own: inlined, the branches of
 * its chunked checksum loop would multiply the states of everything after it.
 *
 * A sender on a local veth with TX checksum offload leaves only the pseudo-header sum in the TCP
 * checksum, for "hardware" to finish: such frames fail here (XDP cannot tell them from corrupted
 * ones), so peers on a veth must send full checksums (see README). */
__noinline int rx_corruption(struct xdp_md *ctx)
{
	struct cursor cur = { .pos = (void *)(long)ctx->data, .end = (void *)(long)ctx->data_end };
	struct tcphdr *tcp;
	struct iphdr *ip;
	__u32 len;

	if (!parse_eth(&cur) || !(ip = parse_ipv4(&cur)) || !(tcp = parse_tcp(&cur)))
		return ETRAN_DROP_SHORT_L4;
	if (!csum_ipv4_ok(ip, cur.end))
		return ETRAN_DROP_BAD_IP_CSUM;
	len = bpf_ntohs(ip->tot_len) - ip->ihl * 4; /* parse_ipv4: tot_len >= ihl * 4 */
	if (len > RX_MAX_SEGMENT)
		return ETRAN_DROP_TCP_OVERSIZE;
	if (!csum_tcp_ok(ip, tcp, cur.end, len, RX_MAX_SEGMENT))
		return ETRAN_DROP_TCP_BAD_CSUM;
	return RX_INTACT;
}

/* Does the segment carry something of the peer's stream, payload or a FIN? Then the daemon
 * gets all of it (see etran_tcp_slow_seg); a SYN or RST never (the daemon never replays those). */
static __always_inline int carries_stream(const struct iphdr *ip, const struct tcphdr *tcp)
{
	__u32 hdrs = ip->ihl * 4 + tcp->doff * 4;

	if (tcp->syn || tcp->rst)
		return 0;
	return tcp->fin || bpf_ntohs(ip->tot_len) > hdrs;
}

/* Copies the frame to etran_tcp_slow, whole or its head (see etran_tcp_slow_seg), and drops it
 * (counted as handed to the transport). With the ring full the copy is lost too: the peer
 * retransmits. A record is as long as what it may hold. */
static __always_inline int slow_path(struct xdp_md *ctx, __u64 bytes, int whole)
{
	/* The frame holds at least the headers parsed before. The copy's length is bounded from
	 * below by a comparison with that minimum, a form the verifiers of 6.1 and 6.12 follow
	 * (they learn nothing from a length compared unequal to 0, which is what `n < 1` compiles
	 * to). */
	const __u32 min = sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct tcphdr);
	struct etran_tcp_slow_seg *rec;
	__u64 n = bytes;
	__u32 cap;

	if (whole && bytes <= ETRAN_TCP_SLOW_FRAME) {
		cap = ETRAN_TCP_SLOW_FRAME;
		rec = bpf_ringbuf_reserve(&etran_tcp_slow, sizeof(*rec), 0);
	} else {
		cap = ETRAN_TCP_SLOW_CAPTURE;
		rec = bpf_ringbuf_reserve(&etran_tcp_slow,
					  sizeof(*rec) - ETRAN_TCP_SLOW_FRAME + ETRAN_TCP_SLOW_CAPTURE, 0);
	}
	if (!rec)
		return delivered(ETRAN_PROTO_TCP, bytes, XDP_DROP);
	if (n > cap)
		n = cap;
	if (n < min || bpf_xdp_load_bytes(ctx, 0, rec->frame, n)) {
		bpf_ringbuf_discard(rec, 0);
		return delivered(ETRAN_PROTO_TCP, bytes, XDP_DROP);
	}
	rec->len = n;
	rec->wire_len = bytes;
	bpf_ringbuf_submit(rec, 0);
	return delivered(ETRAN_PROTO_TCP, bytes, XDP_DROP);
}

/* The ingress program's body; see tcp.bpf.c. */
static __always_inline int tcp_ingress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct cursor cur = { .pos = data, .end = data_end };
	struct etran_tcp_rx_meta *meta;
	struct etran_port_rx *budget;
	struct gen_mark mark;
	struct verdict v = {};
	struct segment s = {};
	struct tcp_conn_key key;
	struct tcp_ts_opt *ts;
	struct tcp_conn *c;
	__u32 owner;
	int corrupt;
	__u64 bytes = data_end - data;
	__u32 hdrs, tot;
	struct iphdr *ip;
	struct tcphdr *tcp;

	/* The entrance checked all this already; the verifier needs it proven here too. */
	if (!parse_eth(&cur) || !(ip = parse_ipv4(&cur)) || !(tcp = parse_tcp(&cur)))
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_SHORT_L4, bytes);
	key.local_ip = ip->daddr;
	key.remote_ip = ip->saddr;
	key.local_port = tcp->dest;
	key.remote_port = tcp->source;
	c = bpf_map_lookup_elem(&etran_tcp_conns, &key);
	if (tcp->syn || tcp->rst || !c) {
		if (!for_slow_path(tcp, &key, c != NULL))
			return pass(ETRAN_PROTO_TCP, bytes);
		c = NULL; /* the daemon's, even if established */
	}
	/* etran consumes the frame from here on: nothing before this line changed any state. */
	corrupt = rx_corruption(ctx);
	if (corrupt != RX_INTACT)
		return drop(ETRAN_PROTO_TCP, corrupt, bytes);
	if (!c)
		return slow_path(ctx, bytes, carries_stream(ip, tcp));

	hdrs = ip->ihl * 4 + tcp->doff * 4;
	tot = bpf_ntohs(ip->tot_len);
	if (tot < hdrs)
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_SHORT_L4, bytes);
	s.seq = bpf_ntohl(tcp->seq);
	s.ack = bpf_ntohl(tcp->ack_seq);
	s.len = tot - hdrs;
	s.wnd = bpf_ntohs(tcp->window);
	s.payload_off = (void *)tcp + tcp->doff * 4 - data;
	s.has_ack = tcp->ack;
	s.fin = tcp->fin;
	s.ece = tcp->ece;
	s.ce = (ip->tos & IPTOS_ECN_MASK) == IPTOS_ECN_CE;
	s.psh = tcp->psh;
	ts = parse_tcp_ts(tcp, data_end);
	if (ts) {
		s.has_ts = 1;
		s.tsval = bpf_ntohl(ts->val);
	}
	/* Linux puts the timestamp option first and SACK blocks after it: any more option bytes
	 * are (most likely) SACK blocks, which the app parses. Flags are fixed: no lock needed. */
	s.sack = (c->flags & TCP_CONN_SACK) &&
		 tcp->doff * 4 > sizeof(*tcp) + (ts ? sizeof(*ts) : 0);
	if (pace_on())
		s.now = bpf_ktime_get_ns();

	/* These can fail; they go first so that a failure leaves the connection untouched: the
	 * app's room (common/backend.h), the metadata's room, the redirect (which takes effect
	 * only if the program returns XDP_REDIRECT). */
	owner = c->owner_port;
	if (owner == ETRAN_TCP_OWNER_MOVING)
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_MOVING, bytes);
	budget = port_rx(owner);
	if (!budget)
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_NO_OWNER, bytes);
	if (!app_has_room(budget))
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_PORT_FULL, bytes);
	if (app_meta_grow(ctx, sizeof(*meta)))
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_NO_HEADROOM, bytes);
	if (to_app(owner) != XDP_REDIRECT)
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_NO_OWNER, bytes);

	bpf_spin_lock(&c->lock);
	/* The owner read above may have changed since (tcp_rehome.h): a segment applied for an
	 * app that no longer holds the stream would be acknowledged and lost. */
	if (c->owner_port != owner) {
		bpf_spin_unlock(&c->lock);
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_MOVING, bytes);
	}
	rx_update(c, &s, &v);
	mark = gen_mark(c, s.psh);
	bpf_spin_unlock(&c->lock);
	/* The ACK this segment made due goes out without the app (even if the frame is dropped). */
	gen_queue(c, &key, mark);
	if (v.dup_ack)
		count_event(ETRAN_EVENT_TCP_RX_DUP_ACK, bytes);
	if (s.ce)
		count_event(ETRAN_EVENT_TCP_RX_CE, bytes);
	if (v.dropped)
		return drop(ETRAN_PROTO_TCP, v.reason, bytes);
	if (v.kept) {
		/* Giving back the metadata's room cannot fail. */
		app_meta_shrink(ctx, sizeof(*meta));
		count_event(ETRAN_EVENT_TCP_RX_ACK_KEPT, bytes);
		return delivered(ETRAN_PROTO_TCP, bytes, XDP_DROP);
	}

	meta = app_meta(ctx, sizeof(*meta));
	if (!meta)
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_NO_HEADROOM, bytes);
	*meta = v.meta;
	count_event(v.meta.payload_len ? ETRAN_EVENT_TCP_RX_DATA : ETRAN_EVENT_TCP_RX_NO_DATA, bytes);
	port_take(budget);
	return delivered(ETRAN_PROTO_TCP, bytes, XDP_REDIRECT);
}

#endif
