/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Homa's pacer: the NIC's transmit queue is kept short, so that what leaves next is chosen late
 * (the app's SRPT pick, a GRANT the kernel writes) instead of waiting behind a long message's
 * backlog. Only the native backend on a kernel with the packet queue (patches/0008) paces
 * (homa_pace_on(); elsewhere none of this runs and the clock stays zero).
 *
 * A link clock (etran_homa_link, one per NIC: the object serves one) says when the link will
 * have sent every DATA packet egress handed it: each DATA packet moves it on by the packet's
 * time on the wire at the link's rate (etran_homa_pace.ps_per_byte, from the NIC's speed or
 * `etran up --homa-link-mbps`), headers and the Ethernet overhead included. A packet leaves at
 * once while the clock is at most max_queue_ns ahead of now; further ahead it waits in the app
 * socket's packet queue until the clock is that close (its release time: the clock less the
 * bound), so the NIC never holds much more than the bound. Release times never go back (the
 * clock only moves on, and the kernel keeps equal times in the order they came), and a packet
 * that would wait is queued behind every packet due before it. A packet due now goes at once even
 * if the kernel's timer is late with one queued before it: Homa's receiver takes a message's
 * packets in any order.
 *
 * What never waits: GRANT, ACK, RESEND, BUSY, NEED_ACK, CUTOFFS (they do not move the clock
 * either: a few dozen bytes each), and DATA of a message that fits in one packet, the shortest
 * messages SRPT serves first (it moves the clock: it takes the link). What keeps SRPT across an
 * app's messages is the app's side (transport/homa/pace.rs): a queued frame completes only when it
 * leaves, and the app keeps few frames uncompleted, so its SRPT pick is made when the link is
 * nearly free. */
#ifndef ETRAN_HOMA_PACE_H
#define ETRAN_HOMA_PACE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "homa/homa.h"
#include "homa/homa_link.h"
#include "homa/homa_maps.h"

/* Whether this object paces: a rate set, on a kernel and backend where it can. */
static __always_inline int homa_pace_on(void)
{
	return etran_homa_pace.ps_per_byte && has_packet_queue();
}

/* Egress, for a DATA frame of `bytes` of a `length`-byte message handed on `now`: its release
 * time on the link clock (`now` when it goes at once, or when the clock is missing). */
static __always_inline __u64 homa_pace(__u64 now, __u32 bytes, __u32 length)
{
	const struct homa_pace_config cfg = {
		.ps_per_byte = etran_homa_pace.ps_per_byte,
		.max_queue_ns = etran_homa_pace.max_queue_ns,
	};
	__u32 zero = 0;
	struct homa_link *link = bpf_map_lookup_elem(&etran_homa_link, &zero);
	__u64 at;

	if (!link)
		return now;
	bpf_spin_lock(&link->lock);
	at = homa_pace_release(&link->idle, now, bytes, length <= ETRAN_HOMA_MAX_PAYLOAD, &cfg);
	bpf_spin_unlock(&link->lock);
	return at;
}

#endif
