/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The arithmetic of Homa's link clock (homa_pace.h), apart from its maps so that the
 * conformance test's program (tests/bpf/conformance.bpf.c) runs the same code. */
#ifndef ETRAN_HOMA_LINK_H
#define ETRAN_HOMA_LINK_H

#include <linux/types.h>

#include "homa/homa.h"

/* What a frame costs on the wire beyond its bytes: the preamble and start delimiter (8), the
 * frame check sequence (4) and the gap between frames (12). */
#define HOMA_PACE_WIRE_OVERHEAD 24

/* A DATA frame of `bytes` (Ethernet header on) handed on at `now` with the link free at `*idle`:
 * its release time (`now`: it goes at once), and *idle moved past it by its time on the wire.
 * `urgent` frames go at once whatever the clock says; the others wait until the clock is at most
 * cfg->max_queue_ns ahead. */
static __always_inline __u64 homa_pace_release(__u64 *idle, __u64 now, __u32 bytes, int urgent,
					       const struct homa_pace_config *cfg)
{
	__u64 start = *idle > now ? *idle : now;
	__u64 at = now;

	if (!urgent && start - now > cfg->max_queue_ns)
		at = start - cfg->max_queue_ns;
	*idle = start + (__u64)(bytes + HOMA_PACE_WIRE_OVERHEAD) * cfg->ps_per_byte / 1000;
	return at;
}

#endif
