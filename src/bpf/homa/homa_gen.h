/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Homa's gen path: the GRANTs this host sends are the kernel's, decided by the grant scheduler
 * (homa_sched.h) and written here, never by an app.
 * - Ingress (and a probe) put the RPCs a GRANT may be owed to on etran_homa_genq, each key
 *   once until popped (ETRAN_HOMA_GEN_QUEUED in the RPC): a DATA whose ranking moved its
 *   message's grant, and the messages that ranking found waiting for a grant they may now get
 *   (no DATA of theirs will come to say so). It wakes the daemon's gen pump through
 *   etran_homa_genw, at most once per ETRAN_HOMA_GEN_WAKE_US (the pump drains the queue
 *   when woken and looks again that long after), and tells the app in the frame's metadata how
 *   many keys it queued (ETRAN_HOMA_RX_GEN_ONE).
 * - A template frame runs gen: one from the pump's gen port (etran_homa_gen, Ethernet type
 *   ETRAN_HOMA_GEN_ETHERTYPE), or an app's (intent ETRAN_HOMA_TX_GEN through its egress, sent
 *   with its next frames: the GRANT then leaves at the receiving app's pass, as early as an
 *   app-written one did, and the pump is the fallback for an app that does not), or, with the
 *   native backend, the gen hook's zeroed frame after each RX batch that reached a Homa app's
 *   socket (etran_homa_xsk_gen, BPF_XSK_GEN: the GRANT leaves in the NAPI poll that brought the
 *   DATA in; the pump, woken as in compat, finds the keys gone). Gen pops one
 *   key, ranks a message whose grant has not moved since its last GRANT again (a woken one),
 *   and turns the template into the GRANT of the grant not sent yet (or, once a probe asked,
 *   of one DATA has not answered: the GRANT may have been lost), at the control priority, with
 *   the priority the scheduler chose for the DATA. Anything else drops the template
 *   (homa_gen_idle).
 * - A probe: an app's template naming its own RPC, whose message waits for a grant (the app
 *   sends one per peer per resend interval, naming its waiting messages in turn): the RPC and
 *   every scheduled message from that peer are queued again with ETRAN_HOMA_GEN_RESEND (the
 *   RPC may not be in the scheduler yet: it was full). So a lost GRANT, or a turn no DATA announced, costs a
 *   resend interval, not the RPC. */
#ifndef ETRAN_HOMA_GEN_H
#define ETRAN_HOMA_GEN_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "common/stats_maps.h"
#include "homa/homa.h"
#include "homa/homa_maps.h"
#include "homa/homa_out.h"
#include "homa/homa_sched.h"

#define HOMA_GEN_WAKE_NS ((__u64)ETRAN_HOMA_GEN_WAKE_US * 1000)

/* Wakes the pump, unless a wake record went within ETRAN_HOMA_GEN_WAKE_US: the pump looks at
 * the queue again that long after a wake. */
static __always_inline void homa_gen_wake(void)
{
	struct etran_homa_gen_wake w = { .queued = 1 };
	struct homa_gen_state *st;
	__u64 now = bpf_ktime_get_ns();
	__u32 zero = 0;

	st = bpf_map_lookup_elem(&etran_homa_genc, &zero);
	if (st) {
		if (now - st->woke < HOMA_GEN_WAKE_NS)
			return;
		st->woke = now;
	}
	bpf_ringbuf_output(&etran_homa_genw, &w, sizeof(w), 0);
}

/* Puts the RPC `key` on the gen queue unless it is there already, with `mark` (a probe's
 * ETRAN_HOMA_GEN_RESEND) kept until gen pops it. Returns 1 when it pushed the key. */
static __always_inline int homa_gen_queue(struct homa_rpc *rpc, const struct homa_rpc_key *key,
					  __u8 mark)
{
	__u8 was;

	bpf_spin_lock(&rpc->lock);
	was = rpc->in_gen;
	rpc->in_gen = was | mark | ETRAN_HOMA_GEN_QUEUED;
	bpf_spin_unlock(&rpc->lock);
	if (was & ETRAN_HOMA_GEN_QUEUED)
		return 0;
	if (bpf_map_push_elem(&etran_homa_genq, key, 0)) {
		bpf_spin_lock(&rpc->lock);
		rpc->in_gen = 0;
		bpf_spin_unlock(&rpc->lock);
		count_event(ETRAN_EVENT_HOMA_GEN_FULL, 0);
		return 0;
	}
	count_event(ETRAN_EVENT_HOMA_GEN_QUEUED, 0);
	homa_gen_wake();
	return 1;
}

/* What homa_gen_queue_entries' walk carries. */
struct homa_gen_walk {
	struct homa_sched_scratch *w;
	__u32 n;
	__u8 mark;
};

/* bpf_loop's visit of entry `i`: queues its RPC if the mask names it (one visit verified, not
 * 32 unrolled). */
static long homa_gen_visit(__u32 i, void *ctx)
{
	struct homa_gen_walk *c = ctx;
	struct homa_rpc_key key;
	struct homa_rpc *rpc;

	if (!(c->w->wake & (1u << (i & 31))))
		return 0;
	key = c->w->key[i & (ETRAN_HOMA_SCHED_SLOTS - 1)];
	rpc = bpf_map_lookup_elem(&etran_homa_rpcs, &key);
	if (rpc)
		c->n += homa_gen_queue(rpc, &key, c->mark);
	return 0;
}

/* Queues the scheduler's entries the scratch names (`wake`, their keys beside it, as
 * homa_sched_run or homa_sched_of_peer left them) with `mark`; returns how many went on the
 * queue. */
static __always_inline __u32 homa_gen_queue_entries(__u8 mark)
{
	struct homa_gen_walk c = { .mark = mark };
	__u32 zero = 0;

	c.w = bpf_map_lookup_elem(&etran_homa_sched_scratch, &zero);
	if (!c.w || !c.w->wake)
		return 0;
	bpf_loop(ETRAN_HOMA_SCHED_SLOTS, homa_gen_visit, &c, 0);
	return c.n;
}

/* Pops one RPC off the gen queue and writes its GRANT into data..data_end, which holds exactly
 * Ethernet, IPv4 and a GRANT. Returns 1 when it wrote one, 0 when nothing was owed, -1 when the
 * queue was empty. */
static __always_inline int homa_gen_grant(void *data, void *data_end)
{
	struct homa_sched_out o = {};
	struct homa_grant_hdr g = {};
	struct homa_rpc_key key;
	struct homa_rpc *rpc;
	__u32 length, end, granted, sent;
	__u8 mark, prio;
	int send = 0;

	if (bpf_map_pop_elem(&etran_homa_genq, &key))
		return -1;
	rpc = bpf_map_lookup_elem(&etran_homa_rpcs, &key);
	if (!rpc)
		return 0;
	bpf_spin_lock(&rpc->lock);
	mark = rpc->in_gen;
	rpc->in_gen = 0;
	length = rpc->in_length;
	end = rpc->in_end;
	granted = rpc->in_granted;
	sent = rpc->in_grant_sent;
	bpf_spin_unlock(&rpc->lock);
	/* Woken (or probed) with no grant to send: its turn may have come. */
	if (granted <= sent && end < length && length > ETRAN_HOMA_UNSCHED_LIMIT) {
		homa_sched_run(&key, rpc->owner_slot, length, end, granted, bpf_ktime_get_ns(), &o);
		homa_sched_apply(rpc, &o, end);
	}
	bpf_spin_lock(&rpc->lock);
	granted = rpc->in_granted;
	prio = rpc->in_grant_prio;
	if (granted > rpc->in_grant_sent ||
	    ((mark & ETRAN_HOMA_GEN_RESEND) && granted > rpc->in_end)) {
		rpc->in_grant_sent = granted;
		send = 1;
	}
	bpf_spin_unlock(&rpc->lock);
	if (!send)
		return 0;
	homa_tx_common(&g.common, &key, HOMA_GRANT, HOMA_DOFF_CONTROL);
	g.offset = bpf_htonl(granted);
	g.priority = prio;
	return homa_tx_put(data, data_end, rpc, &key, &g, sizeof(g), sizeof(g),
			   HOMA_MAX_PRIORITIES - 1);
}

/* The end of a template's run: the GRANT sent with `verdict`, or the template taken and dropped
 * (counted as the transport's frame: an app's template is one of its frames). */
static __always_inline int homa_gen_done(int sent, __u64 bytes, int verdict)
{
	if (!sent) {
		count_event(ETRAN_EVENT_HOMA_GEN_IDLE, bytes);
		return delivered(ETRAN_PROTO_HOMA, bytes, XDP_DROP);
	}
	count_event(ETRAN_EVENT_HOMA_TX_GRANT, bytes);
	return delivered(ETRAN_PROTO_HOMA, bytes, verdict);
}

/* The gen program's body; see homa.bpf.c. `xsk`: run by the native gen hook (BPF_XSK_GEN,
 * after an RX batch reached an app's socket) on a zeroed frame, where XDP_TX sends the GRANT out
 * of the NIC and XDP_DROP ends the run (an empty queue, or a key owed nothing: the pump, woken
 * by ingress as in compat, finds what is left); else run on the pump's templates, the GRANT
 * redirected to the NIC, and frames that are no template (the stack's own on the gen port)
 * pass. */
static __always_inline int homa_gen(struct xdp_md *ctx, const int xsk)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	const __u32 len = ETRAN_HOMA_GEN_TEMPLATE_LEN;
	struct ethhdr *eth = data;
	__u32 tpl_len;
	int sent;

	if (!xsk &&
	    ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETRAN_HOMA_GEN_ETHERTYPE)))
		return XDP_PASS;
	/* Computed apart: folded into the sum, the compiler would subtract the packet end
	 * pointer from a scalar, which the verifier refuses. */
	tpl_len = ctx->data_end - ctx->data;
	barrier_var(tpl_len);
	if (bpf_xdp_adjust_tail(ctx, (int)len - (int)tpl_len))
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_NO_ROOM, tpl_len);
	if (!xsk && bpf_redirect_map(&etran_nic, 0, XDP_DROP) != XDP_REDIRECT)
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_TX_NO_NIC, tpl_len);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	sent = homa_gen_grant(data, data_end);
	/* The hook's run ends cheaply on an empty queue; nothing to count. */
	if (xsk && sent < 0)
		return XDP_DROP;
	return homa_gen_done(sent > 0, data_end - data, xsk ? XDP_TX : XDP_REDIRECT);
}

#endif
