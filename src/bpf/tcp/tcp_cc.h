/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Congestion control, kept in the kernel next to the state it reads and computed per segment
 * under the connection lock, in integer arithmetic (no daemon round trip per RTT, no floats):
 * ingress runs it on every ACK, egress on the signals only it sees.
 *
 * Sender (RFC 5681, RFC 8257):
 * - The window starts at TCP_CC_INIT_SEGMENTS segments. Slow start adds the bytes each ACK
 *   acknowledges (at most TCP_CC_SS_MAX_SEGMENTS segments per ACK) while cwnd < ssthresh;
 *   congestion avoidance then adds one MSS per window of bytes acknowledged. The window grows
 *   only while it is used (at least half of it was in flight: RFC 7661's concern, so an
 *   app-limited connection does not build a window it never tried), and never past what the
 *   peer's window field can announce. "In flight" is the most in flight over the round
 *   (cc_used, as Linux's tcp_is_cwnd_limited judges it), not as the ACK arrives: an app
 *   writing in turns over several connections may see each one's whole flight acknowledged
 *   between its turns, and one whose window is what limits it must still grow.
 * - DCTCP (ECN negotiated): alpha, the fraction of bytes marked, is updated once per
 *   observation window (it ends when snd_una reaches the snd_nxt recorded at its start):
 *   alpha = alpha * (1 - g) + g * marked / acked. An ACK with ECE that acknowledges new
 *   data cuts cwnd to
 *   cwnd * (1 - alpha / 2), at most once per window of data, and has CWR set on the next
 *   segment with payload (a classic RFC 3168 receiver echoes ECE until it sees CWR).
 * - Losses are found by the app (SACK scoreboard, RACK timing, duplicate ACKs), which resends
 *   lost bytes with the RETRANSMIT intent: egress takes that as the loss signal and halves
 *   cwnd, once per window of data. After a retransmission timeout the app resends from
 *   snd_una as DATA, which egress recognises: cwnd drops to one segment, ssthresh to half. (A
 *   tail-loss probe resending the only segment in flight looks the same and counts as one:
 *   rare, it waits 2 SRTT plus the peer's delayed ACK.) Floor: two segments, one after a
 *   timeout.
 * - Every duplicate ACK (or one with SACK blocks and no new cumulative data) lets one more
 *   segment into the network: a segment left it, delivered out of order (RFC 3042's limited
 *   transmit before a loss is found, RFC 5681's window inflation in fast recovery). Without it nothing new would go out until the hole is filled
 *   (egress counts every byte in flight, SACKed ones too), and a lost retransmission, which
 *   only segments sent after it can reveal, would wait for a retransmission timeout.
 * Without ECN the same rules run without the DCTCP part: loss-based, NewReno-like.
 *
 * The window the app sees. Egress refuses new data beyond the window, and a refused frame
 * costs the app a retransmission timeout, so the app must never send beyond it. It learns the
 * window from RX metadata, which it reads some time after ingress wrote it: a cut made in the
 * meantime (ECE on a later ACK, a loss signal in egress) would make a window it already holds
 * too large. So the right edge of the congestion window, cwnd_edge, never moves back: every
 * ACK moves it to snd_una + cwnd if that is further, a cut leaves it where it is, and egress
 * admits new data up to it. A cut then takes effect as acknowledgements catch up with the
 * edge (what a cut does to a full window anyway); the room it no longer grants is what the
 * app may already have been told. RX metadata's send_wnd is min(peer window, edge - snd_una).
 *
 * Receiver (DCTCP, RFC 8257 3.2, as far as an asynchronous ACK generator can): CE on a data
 * segment sets the connection's CE state, a data segment without it clears it; every ACK we
 * send (the generator's and those riding on the app's data) carries ECE while it is set, and a
 * change of state makes the ACK due at once, so the marks are echoed close to the bytes they
 * belong to. Pure ACKs are not ECN-capable. */
#ifndef ETRAN_TCP_CC_H
#define ETRAN_TCP_CC_H

#include <linux/types.h>

#include "tcp/tcp.h"
#include "tcp/tcp_seq.h"

#define TCP_DCTCP_ALPHA_ONE (1U << TCP_DCTCP_ALPHA_SHIFT)

/* The ECN field of the IPv4 TOS byte (RFC 3168 5). */
#define IPTOS_ECN_MASK 0x03
#define IPTOS_ECN_ECT0 0x02
#define IPTOS_ECN_CE 0x03

static __always_inline __u32 cc_min(__u32 a, __u32 b)
{
	return a < b ? a : b;
}

static __always_inline __u32 cc_max(__u32 a, __u32 b)
{
	return a > b ? a : b;
}

/* Bytes from snd_una that new data may fill as far as the congestion window goes. */
static __always_inline __u32 cc_room(const struct tcp_conn *c)
{
	return after(c->cwnd_edge, c->snd_una) ? c->cwnd_edge - c->snd_una : 0;
}

/* The send window RX metadata tells the app. */
static __always_inline __u32 cc_send_wnd(const struct tcp_conn *c)
{
	return cc_min(c->snd_wnd, cc_room(c));
}

/* A cut (ECE or loss) to `cwnd` bytes, unless one was made for the data in flight already. */
static __always_inline void cc_cut(struct tcp_conn *c, __u32 cwnd)
{
	if (c->cc & (TCP_CC_REDUCED | TCP_CC_TIMEOUT))
		return;
	c->cwnd = cc_max(cwnd, 2 * (__u32)c->mss);
	c->ssthresh = c->cwnd;
	c->ca_acked = 0;
	c->cc_recover = c->snd_nxt;
	c->cc |= TCP_CC_REDUCED;
	if (c->flags & TCP_CONN_ECN)
		c->cc |= TCP_CC_CWR;
}

/* Egress: the app resent bytes it found lost (RETRANSMIT). */
static __always_inline void cc_on_loss(struct tcp_conn *c)
{
	cc_cut(c, c->cwnd / 2);
	c->cc |= TCP_CC_LOSS;
}

/* Egress: the app resends from snd_una after a retransmission timeout. A timeout during the
 * recovery of a cut keeps the ssthresh that cut set. */
static __always_inline void cc_on_timeout(struct tcp_conn *c)
{
	if (c->cc & TCP_CC_TIMEOUT)
		return;
	if (!(c->cc & TCP_CC_REDUCED))
		c->ssthresh = cc_max(c->cwnd / 2, 2 * (__u32)c->mss);
	c->cwnd = c->mss;
	c->ca_acked = 0;
	c->cc_recover = c->snd_nxt;
	c->cc = (c->cc & ~TCP_CC_REDUCED) | TCP_CC_TIMEOUT | TCP_CC_LOSS;
	if (c->flags & TCP_CONN_ECN)
		c->cc |= TCP_CC_CWR;
}

/* Egress, admitting `fresh` new bytes: records the most bytes in flight in the current round
 * (a new round begins with the first send after snd_una passed the last one's end), which
 * tells whether the window limited the sender (cc_grow). An app that says its send window
 * holds bytes back (`limited`) uses all of the room the congestion window gives it, if that
 * window, not the peer's, is the smaller: it counts as the whole room in flight. The flight
 * egress sees does not show it: the app sends up to the edge the ACKs it had read gave, and
 * ACKs it had not read may have taken most of those bytes by the time egress sees a frame (on
 * a busy CPU, most of the time); on a stock kernel each frame of a send call crosses the whole
 * path, the peer's ACK included, before the next one leaves, so a pass that fills the window
 * never has more than a segment or two in flight (with only a pass's last segment marked, a
 * 10 MB send to Linux kept 11 segments of window for up to 3.5 ms, then grew by 2 to 5
 * segments per 0.5 ms in slow start). (An app claiming it falsely gains no more than sending
 * whole windows would.) */
static __always_inline void cc_on_send(struct tcp_conn *c, __u32 fresh, int limited)
{
	__u32 flight = c->snd_nxt + fresh - c->snd_una, room = cc_room(c);

	if (limited && room <= c->snd_wnd && flight < room)
		flight = room;

	if (!before(c->snd_una, c->cc_round_end) || flight > c->cc_used) {
		c->cc_used = flight;
		c->cc_round_end = c->snd_nxt + fresh;
	}
}

/* Egress, planning a segment with payload: the CWR a cut asked for goes on it. */
static __always_inline int cc_take_cwr(struct tcp_conn *c)
{
	if (!(c->cc & TCP_CC_CWR))
		return 0;
	c->cc &= ~TCP_CC_CWR;
	return 1;
}

/* Slow start or congestion avoidance for `acked` new bytes, `flight` having been in flight. */
static __always_inline void cc_grow(struct tcp_conn *c, __u32 acked, __u32 flight)
{
	__u32 mss = c->mss, max = 0xffffU << wscale(c->snd_wscale);

	if (2 * cc_max(flight, c->cc_used) < c->cwnd)
		return; /* not limited by the window: growing it would build an untried burst */
	if (c->cwnd < c->ssthresh) {
		c->cwnd = cc_min(c->cwnd + cc_min(acked, TCP_CC_SS_MAX_SEGMENTS * mss), c->ssthresh);
	} else {
		c->ca_acked += acked;
		if (c->ca_acked >= c->cwnd) {
			c->ca_acked -= c->cwnd;
			c->cwnd += mss;
		}
		if (c->ca_acked >= c->cwnd) /* one step per ACK: a huge one does not carry over */
			c->ca_acked = 0;
	}
	c->cwnd = cc_min(c->cwnd, max);
}

/* DCTCP's estimator: counts the bytes an ACK acknowledged (with ECE: marked) and, at the end
 * of an observation window, folds the window's fraction into alpha (RFC 8257 3.3). */
static __always_inline void dctcp_observe(struct tcp_conn *c, __u32 acked, int ece)
{
	__u32 gain;

	c->dctcp_acked += acked;
	if (ece)
		c->dctcp_marked += acked;
	if (before(c->snd_una, c->dctcp_end))
		return;
	if (c->dctcp_acked) {
		/* g * marked / acked in alpha's units: marked <= acked, so at most ONE >> G. */
		gain = ((__u64)c->dctcp_marked << (TCP_DCTCP_ALPHA_SHIFT - TCP_DCTCP_G_SHIFT)) /
		       c->dctcp_acked;
		c->alpha = c->alpha - (c->alpha >> TCP_DCTCP_G_SHIFT) + gain;
	}
	c->dctcp_end = c->snd_nxt;
	c->dctcp_acked = 0;
	c->dctcp_marked = 0;
}

/* Ingress, for an acceptable ACK (not an old one) after snd_una moved by `acked` bytes, with
 * `flight` stream bytes having been in flight before it; `left`: the ACK says a segment left the
 * network out of order (a duplicate ACK, or SACK blocks without new cumulative data). */
static __always_inline void cc_on_ack(struct tcp_conn *c, __u32 acked, __u32 flight, int ece,
				      int left)
{
	/* An ACK that acknowledges nothing new brings no news of marks: a classic receiver repeats
	 * ECE on every segment until it sees our CWR (on our next data), a DCTCP receiver keeps the
	 * last data's CE state. While nothing of ours is in flight, the cut's window of data is
	 * over at once, and each such segment would cut again (in the fixture, five segments of a
	 * response took a 10-segment window to its floor). */
	ece = ece && (c->flags & TCP_CONN_ECN) && acked;
	if ((c->cc & (TCP_CC_REDUCED | TCP_CC_TIMEOUT | TCP_CC_LOSS)) &&
	    !before(c->snd_una, c->cc_recover))
		c->cc &= ~(TCP_CC_REDUCED | TCP_CC_TIMEOUT | TCP_CC_LOSS);
	if (c->flags & TCP_CONN_ECN)
		dctcp_observe(c, acked, ece);
	if (ece)
		cc_cut(c, c->cwnd - (__u32)(((__u64)c->cwnd * c->alpha) >>
					     (TCP_DCTCP_ALPHA_SHIFT + 1)));
	else if (acked && !(c->cc & TCP_CC_REDUCED))
		cc_grow(c, acked, flight);
	if (after(c->snd_una + c->cwnd, c->cwnd_edge))
		c->cwnd_edge = c->snd_una + c->cwnd;
	if (left)
		c->cwnd_edge += c->mss;
}

/* Ingress, for every data segment of an ECN connection: the CE state follows the segment's
 * mark; a change makes the ACK due at once. */
static __always_inline void cc_on_data(struct tcp_conn *c, int ce)
{
	if (!(c->flags & TCP_CONN_ECN) || !ce == !(c->cc & TCP_CC_CE))
		return;
	c->cc ^= TCP_CC_CE;
	c->ack_now = 1;
}

#endif
