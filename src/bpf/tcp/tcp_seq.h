/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* TCP arithmetic shared by ingress and egress: sequence-number (serial) comparisons, correct
 * across wrap-around, window scaling, and where the bytes in flight sit in the stream. */
#ifndef ETRAN_TCP_SEQ_H
#define ETRAN_TCP_SEQ_H

#include <linux/types.h>

#include "tcp/tcp.h"

static __always_inline int before(__u32 a, __u32 b)
{
	return (__s32)(a - b) < 0;
}

static __always_inline int after(__u32 a, __u32 b)
{
	return before(b, a);
}

/* A window-scale shift as used: larger ones are taken as 14 (RFC 7323 2.3). */
static __always_inline __u32 wscale(__u8 shift)
{
	return shift > ETRAN_TCP_MAX_WSCALE ? ETRAN_TCP_MAX_WSCALE : shift;
}

/* Stream bytes in flight: [snd_una, snd_nxt) less our FIN while it is unacknowledged (the last
 * sequence number, no stream byte). Under the connection lock. */
static __always_inline __u32 flight_bytes(const struct tcp_conn *c)
{
	return c->snd_nxt - c->snd_una - ((c->fin & TCP_CONN_FIN_SENT) && c->snd_una != c->snd_nxt);
}

/* Stream position of snd_una: the bytes in flight sit at [una_pos, tx_pos). */
static __always_inline __u32 una_pos(const struct tcp_conn *c)
{
	return c->tx_pos - flight_bytes(c);
}

#endif
