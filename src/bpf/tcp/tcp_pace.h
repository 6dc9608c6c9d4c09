/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Pacing, as Linux paces a TCP socket (tcp_update_pacing_rate, with its internal pacing): each
 * connection sends at a rate of cwnd / srtt, times 2 in slow start and 1.2 after, so that a
 * window leaves spread over the round trip instead of in one burst. Only the native backend on a
 * kernel with the packet queue (patches/0008) paces (tcp_maps.h's pace_on(); elsewhere none of
 * this runs and the fields stay zero): egress gives each segment with payload or a FIN a release
 * time, and a segment whose time is in the future waits in the app's socket's packet queue
 * (common/backend.h, to_nic_later). All of it runs under the connection lock, in integer
 * arithmetic.
 *
 * - The RTT (Linux's, sampled once per round trip as without timestamps, Karn's rule): egress
 *   starts a sample at a segment of new data when none is under way (at its release time, so
 *   the wait in the queue is not counted), a resend cancels it, and the ACK that reaches the
 *   sample's end takes it: srtt += (sample - srtt) / 8, the first sample as it is. Before the
 *   first sample nothing is paced.
 * - The release time: the later of now and pace_next, which each paced segment moves on by its
 *   length at the rate (an idle connection builds no credit: its next segment goes now). Queued
 *   segments of one connection leave in order: their times never go back (the queue keeps equal
 *   times in the order they came), and a segment due now is queued too while a queued one may
 *   still be waiting in the kernel (snd_una has not reached the end of the furthest one queued,
 *   pace_seq: the kernel's timer and work item may be late, and a segment sent at once would
 *   overtake it), so a paced bulk flow goes through the queue as a whole. */
#ifndef ETRAN_TCP_PACE_H
#define ETRAN_TCP_PACE_H

#include <linux/types.h>

#include "tcp/tcp.h"
#include "tcp/tcp_seq.h"

/* The time a segment of `len` bytes takes at the connection's pacing rate, in ns: len * srtt /
 * (factor * cwnd). 0 without an RTT sample. */
static __always_inline __u64 pace_delay_ns(const struct tcp_conn *c, __u32 len)
{
	__u64 percent = c->cwnd < c->ssthresh ? TCP_PACE_SS_PERCENT : TCP_PACE_CA_PERCENT;

	if (!c->srtt_us || !c->cwnd)
		return 0;
	return (__u64)len * c->srtt_us * 1000 * 100 / (percent * c->cwnd);
}

/* A segment of `len` bytes ending at sequence number `end`, sent `now`: its release time, and
 * whether it must wait in the packet queue (*queue) rather than go at once. Moves pace_next on,
 * and pace_tail and pace_seq when queued. */
static __always_inline __u64 pace_release(struct tcp_conn *c, __u64 now, __u32 len, __u32 end,
					  int *queue)
{
	__u64 at = c->pace_next > now ? c->pace_next : now;

	*queue = 0;
	if (!c->srtt_us)
		return now;
	if (at > now || (c->pace_tail && after(c->pace_seq, c->snd_una))) {
		*queue = 1;
		if (at < c->pace_tail)
			at = c->pace_tail;
		if (!c->pace_tail || after(end, c->pace_seq))
			c->pace_seq = end;
		c->pace_tail = at;
	}
	c->pace_next = at + pace_delay_ns(c, len);
	return at;
}

/* Egress, for a segment with payload or a FIN leaving at `at`: a resend cancels the RTT sample
 * under way (Karn), new data starts one when none is (snd_nxt moved past `snd_nxt_before`). */
static __always_inline void pace_rtt_sent(struct tcp_conn *c, __u64 at, __u32 snd_nxt_before,
					  int resend)
{
	if (resend) {
		c->rtt_start = 0;
		return;
	}
	if (!c->rtt_start && after(c->snd_nxt, snd_nxt_before)) {
		c->rtt_start = at;
		c->rtt_seq = c->snd_nxt;
	}
}

/* Ingress, after an ACK moved snd_una, `now`: the sample under way ends when snd_una reached its
 * end. */
static __always_inline void pace_rtt_acked(struct tcp_conn *c, __u64 now)
{
	__u64 us;

	if (!c->rtt_start || before(c->snd_una, c->rtt_seq))
		return;
	us = now > c->rtt_start ? (now - c->rtt_start) / 1000 : 0;
	if (!us)
		us = 1;
	if (us > 0xffffffffULL)
		us = 0xffffffffULL;
	c->rtt_start = 0;
	if (!c->srtt_us)
		c->srtt_us = us;
	else
		c->srtt_us = c->srtt_us - (c->srtt_us >> TCP_RTT_SHIFT) + (us >> TCP_RTT_SHIFT);
}

#endif
