/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Homa egress (compat: XDP on the kernel side of an app's port; native: linked to the app's
 * socket as BPF_XSK_EGRESS; common/backend.h says where it sends). An app's TX frame is a
 * struct etran_homa_tx_hdr followed by payload. Egress checks that the frame comes from the app
 * that bound the header's Homa port (else homa_tx_wrong_owner: a forged sender port) and that
 * the RPC is the app's: a client's RPC is created here at its request's first DATA, a server's
 * must exist (ingress created it from the request; else homa_tx_unknown_rpc). DATA must lie
 * within its message and below the RPC's granted offset (homa_tx_beyond_grant): the unscheduled
 * bytes, then what GRANTs allowed. Egress then replaces the TX header with Ethernet, IPv4 (TOS
 * priority << 5) and the Homa header written from the RPC's state and sends the packet to the
 * NIC. DATA starting below the furthest byte sent is a retransmission (in answer to a RESEND,
 * within the same grant) and says so on the wire. An ACK intent ends a client's RPC: the RPC
 * goes, and an ACK packet tells the server; so does a DATA naming (ack_id) a client RPC of the
 * app's with the same peer, whose ack it then carries. An app never writes a GRANT (the intent
 * is refused, homa_tx_app_grant): a gen template (intent GEN) runs gen on the frame
 * (homa_gen.h), which writes the GRANT at the head of the gen queue, the kernel's choice; a
 * template naming an RPC (the app's own) probes its peer's scheduled messages first. A RESEND
 * intent asks the peer again for bytes of the
 * incoming message, cut at what ingress granted (nothing granted there: homa_tx_beyond_grant);
 * a BUSY says the app is alive, a server's NEED_ACK asks the client for the ACK of a response
 * all sent, a CUTOFFS tells the peer this host's cutoffs (homa_cutoffs_config; DATA echo the
 * version the peer announced, from etran_homa_peers). Each only for an RPC the app owns. With
 * Homa's pacer on (homa_pace.h) a DATA packet the link clock puts too far ahead waits in the app
 * socket's packet queue until its release time (homa_tx_paced; homa_tx_pace_refused when the
 * queue is full and it goes at once). */
#ifndef ETRAN_HOMA_EGRESS_H
#define ETRAN_HOMA_EGRESS_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "common/csum.h"
#include "common/stats_maps.h"
#include "homa/homa.h"
#include "homa/homa_maps.h"
#include "homa/homa_gen.h"
#include "homa/homa_out.h"
#include "homa/homa_pace.h"
#include "homa/homa_sched.h"

/* The unscheduled bytes of a `length`-byte message (see ETRAN_HOMA_UNSCHED_LIMIT). */
static __always_inline __u32 homa_unscheduled(__u32 length)
{
	return length < ETRAN_HOMA_UNSCHED_LIMIT ? length : ETRAN_HOMA_UNSCHED_LIMIT;
}

/* The header checks that need no state. */
static __always_inline int homa_tx_hdr_valid(const struct etran_homa_tx_hdr *h, __u64 frame_len)
{
	if (h->reserved || frame_len != sizeof(*h) + h->len || h->priority >= HOMA_MAX_PRIORITIES)
		return 0;
	if (h->ack_id && (h->intent != ETRAN_HOMA_TX_DATA || (h->ack_id & 1) || h->ack_id == h->key.id))
		return 0;
	switch (h->intent) {
	case ETRAN_HOMA_TX_DATA:
		return h->len > 0 && h->len <= ETRAN_HOMA_MAX_PAYLOAD && h->message_length &&
		       h->message_length <= ETRAN_HOMA_MAX_MESSAGE &&
		       h->offset <= h->message_length && h->len <= h->message_length - h->offset;
	case ETRAN_HOMA_TX_ACK:
		return h->len == 0 && !(h->key.id & 1);
	case ETRAN_HOMA_TX_GRANT:
	case ETRAN_HOMA_TX_GEN:
	case ETRAN_HOMA_TX_BUSY:
	case ETRAN_HOMA_TX_CUTOFFS:
		return h->len == 0;
	case ETRAN_HOMA_TX_NEED_ACK:
		return h->len == 0 && (h->key.id & 1);
	case ETRAN_HOMA_TX_RESEND:
		return h->len == 0 && h->message_length;
	default:
		return 0;
	}
}

/* A client's new RPC (its request's first DATA), owned by `slot`. NULL when the peer's Ethernet
 * address is unknown (*why says so) or the map is full. */
static __always_inline struct homa_rpc *homa_tx_new_rpc(const struct etran_homa_tx_hdr *h,
							const struct homa_port *port, __u32 slot,
							enum etran_drop_reason *why)
{
	struct homa_rpc rpc = {
		.owner_slot = slot,
		.local_ip = port->local_ip,
		.out_length = h->message_length,
		.out_granted = homa_unscheduled(h->message_length),
	};
	struct homa_peer *peer = bpf_map_lookup_elem(&etran_homa_peers, &h->key.peer_ip);

	*why = ETRAN_DROP_HOMA_TX_NO_PEER;
	if (!peer)
		return NULL;
	__builtin_memcpy(rpc.local_mac, port->local_mac, ETH_ALEN);
	__builtin_memcpy(rpc.peer_mac, peer->mac, ETH_ALEN);
	*why = ETRAN_DROP_HOMA_NO_ROOM;
	bpf_map_update_elem(&etran_homa_rpcs, &h->key, &rpc, BPF_NOEXIST);
	return bpf_map_lookup_elem(&etran_homa_rpcs, &h->key);
}

/* A RESEND intent (the frame's head already holds room for Ethernet, IPv4 and the RESEND): the
 * range asked for, cut at what ingress granted of the incoming message. Before any byte of it
 * arrived, only a RESEND from offset 0 makes sense (a client asking for its response). */
static __always_inline int homa_tx_resend(struct xdp_md *ctx, struct homa_rpc *rpc,
					  const struct etran_homa_tx_hdr *h)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	__u32 offset = h->offset, length = h->message_length, limit;
	struct homa_resend_hdr r = {};
	__u64 bytes = data_end - data;
	int refused = -1;

	bpf_spin_lock(&rpc->lock);
	limit = rpc->in_granted;
	if (!rpc->in_length) {
		if (offset)
			refused = ETRAN_DROP_HOMA_TX_BEYOND_GRANT;
	} else if (offset >= limit) {
		refused = ETRAN_DROP_HOMA_TX_BEYOND_GRANT;
	} else if (length > limit - offset) {
		length = limit - offset;
	}
	bpf_spin_unlock(&rpc->lock);
	if (refused >= 0)
		return drop(ETRAN_PROTO_HOMA, refused, bytes);
	homa_tx_common(&r.common, &h->key, HOMA_RESEND, HOMA_DOFF_CONTROL);
	r.offset = bpf_htonl(offset);
	r.length = bpf_htonl(length);
	r.priority = h->priority;
	if (!homa_tx_put(data, data_end, rpc, &h->key, &r, sizeof(r), sizeof(r),
			 HOMA_MAX_PRIORITIES - 1))
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_NO_ROOM, bytes);
	count_event(ETRAN_EVENT_HOMA_TX_RESEND, bytes);
	return delivered(ETRAN_PROTO_HOMA, bytes, to_nic_verdict());
}

/* A gen template (intent GEN) from the app of `slot`: the frame becomes the GRANT at the head of
 * the gen queue (homa_gen.h), or is dropped when nothing is owed. A template naming an RPC is a
 * probe: the RPC must be the app's; it and every scheduled message from its peer are queued
 * first (homa_gen_queue_entries), to be ranked again (entering the scheduler if it had no room
 * for the RPC before) or their GRANTs sent again. */
static __always_inline int homa_tx_gen(struct xdp_md *ctx, const struct etran_homa_tx_hdr *h,
				       __u32 slot)
{
	const __u32 len = ETRAN_HOMA_GEN_TEMPLATE_LEN;
	void *data, *data_end;
	__u64 bytes = ctx->data_end - ctx->data;

	if (h->key.id) {
		struct homa_rpc *rpc = bpf_map_lookup_elem(&etran_homa_rpcs, &h->key);

		if (!rpc)
			return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_TX_UNKNOWN_RPC, bytes);
		if (rpc->owner_slot != slot)
			return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_TX_WRONG_OWNER, bytes);
		/* The RPC itself too: the scheduler may have had no room for it yet. */
		homa_gen_queue(rpc, &h->key, ETRAN_HOMA_GEN_RESEND);
		homa_sched_of_peer(h->key.peer_ip);
		homa_gen_queue_entries(ETRAN_HOMA_GEN_RESEND);
		count_event(ETRAN_EVENT_HOMA_GEN_PROBE, bytes);
	}
	if (bpf_xdp_adjust_head(ctx, (int)sizeof(*h) - (int)len))
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_NO_ROOM, bytes);
	if (to_nic_prepare())
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_TX_NO_NIC, bytes);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	return homa_gen_done(homa_gen_grant(data, data_end) > 0, data_end - data,
			     to_nic_verdict());
}

/* The egress program's body; see homa.bpf.c. */
static __always_inline int homa_egress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	const __u32 l3 = sizeof(struct ethhdr) + sizeof(struct iphdr);
	enum etran_drop_reason why = ETRAN_DROP_HOMA_TX_BAD_HDR;
	struct etran_homa_tx_hdr *th = data, h;
	__u64 bytes = data_end - data;
	struct homa_port *port;
	struct homa_rpc *rpc;
	__u32 slot, hlen, granted;
	__u8 retransmit = 0;
	int refused = -1;

	if ((void *)(th + 1) > data_end)
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_TX_BAD_HDR, bytes);
	h = *th;
	if (!homa_tx_hdr_valid(&h, bytes))
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_TX_BAD_HDR, bytes);
	/* The port a frame arrives on (compat), or the queue of the socket that sends it (native),
	 * is the app's identity: it cannot be forged. */
	port = bpf_map_lookup_elem(&etran_homa_ports, &h.key.local_port);
	if (!port)
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_TX_WRONG_OWNER, bytes);
	slot = port->slot;
	if (!from_app(ctx, slot))
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_TX_WRONG_OWNER, bytes);
	if (h.intent == ETRAN_HOMA_TX_GRANT)
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_TX_APP_GRANT, bytes);
	if (h.intent == ETRAN_HOMA_TX_GEN)
		return homa_tx_gen(ctx, &h, slot);
	rpc = bpf_map_lookup_elem(&etran_homa_rpcs, &h.key);
	if (!rpc) {
		if (h.intent != ETRAN_HOMA_TX_DATA || (h.key.id & 1))
			return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_TX_UNKNOWN_RPC, bytes);
		rpc = homa_tx_new_rpc(&h, port, slot, &why);
		if (!rpc)
			return drop(ETRAN_PROTO_HOMA, why, bytes);
	}
	if (rpc->owner_slot != slot)
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_TX_WRONG_OWNER, bytes);

	hlen = h.intent == ETRAN_HOMA_TX_DATA	? sizeof(struct homa_data_hdr) :
	       h.intent == ETRAN_HOMA_TX_ACK	? sizeof(struct homa_ack_hdr) :
	       h.intent == ETRAN_HOMA_TX_RESEND ? sizeof(struct homa_resend_hdr) :
	       h.intent == ETRAN_HOMA_TX_CUTOFFS ? sizeof(struct homa_cutoffs_hdr) :
						  sizeof(struct homa_common_hdr);
	/* Both can fail; they go first so that a failure leaves the RPC untouched. A redirect
	 * (compat) takes effect only if the program returns XDP_REDIRECT. */
	if (bpf_xdp_adjust_head(ctx, (int)sizeof(h) - (int)(l3 + hlen)))
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_NO_ROOM, bytes);
	if (to_nic_prepare())
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_TX_NO_NIC, bytes);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	bytes = data_end - data;

	if (h.intent == ETRAN_HOMA_TX_ACK) {
		struct homa_ack_hdr a = {};

		homa_tx_common(&a.common, &h.key, HOMA_ACK, HOMA_DOFF_CONTROL);
		a.num_acks = bpf_htons(1);
		a.acks[0].client_id = bpf_cpu_to_be64(h.key.id);
		a.acks[0].server_port = h.key.peer_port;
		if (!homa_tx_put(data, data_end, rpc, &h.key, &a, sizeof(a), sizeof(a), 0))
			return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_NO_ROOM, bytes);
		/* After the headers, which read the RPC's addresses. */
		bpf_map_delete_elem(&etran_homa_rpcs, &h.key);
		count_event(ETRAN_EVENT_HOMA_TX_ACK, bytes);
		return delivered(ETRAN_PROTO_HOMA, bytes, to_nic_verdict());
	}

	if (h.intent == ETRAN_HOMA_TX_RESEND)
		return homa_tx_resend(ctx, rpc, &h);
	if (h.intent == ETRAN_HOMA_TX_CUTOFFS) {
		struct homa_cutoffs_hdr c = {};

		homa_tx_common(&c.common, &h.key, HOMA_CUTOFFS, HOMA_DOFF_CONTROL);
#pragma unroll
		for (int i = 0; i < HOMA_MAX_PRIORITIES; i++)
			c.unsched_cutoffs[i] = bpf_htonl(etran_homa_cutoffs.unsched_cutoffs[i]);
		c.cutoff_version = bpf_htons(etran_homa_cutoffs.version);
		if (!homa_tx_put(data, data_end, rpc, &h.key, &c, sizeof(c), sizeof(c),
				 HOMA_MAX_PRIORITIES - 1))
			return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_NO_ROOM, bytes);
		count_event(ETRAN_EVENT_HOMA_TX_CUTOFFS, bytes);
		return delivered(ETRAN_PROTO_HOMA, bytes, to_nic_verdict());
	}
	if (h.intent == ETRAN_HOMA_TX_BUSY || h.intent == ETRAN_HOMA_TX_NEED_ACK) {
		const int busy = h.intent == ETRAN_HOMA_TX_BUSY;
		struct homa_common_hdr b = {};

		homa_tx_common(&b, &h.key, busy ? HOMA_BUSY : HOMA_NEED_ACK, HOMA_DOFF_CONTROL);
		if (!homa_tx_put(data, data_end, rpc, &h.key, &b, sizeof(b), sizeof(b),
				 HOMA_MAX_PRIORITIES - 1))
			return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_NO_ROOM, bytes);
		count_event(busy ? ETRAN_EVENT_HOMA_TX_BUSY : ETRAN_EVENT_HOMA_TX_NEED_ACK, bytes);
		return delivered(ETRAN_PROTO_HOMA, bytes, to_nic_verdict());
	}

	bpf_spin_lock(&rpc->lock);
	if (!rpc->out_length) {
		/* A server's response: its first DATA fixes its length. */
		rpc->out_length = h.message_length;
		rpc->out_granted = homa_unscheduled(h.message_length);
	}
	if (rpc->out_length != h.message_length)
		refused = ETRAN_DROP_HOMA_TX_BAD_HDR;
	else if (h.offset + h.len > rpc->out_granted)
		refused = ETRAN_DROP_HOMA_TX_BEYOND_GRANT;
	granted = rpc->out_granted;
	if (refused < 0) {
		retransmit = h.offset < rpc->out_sent;
		if (h.offset + h.len > rpc->out_sent)
			rpc->out_sent = h.offset + h.len;
	}
	bpf_spin_unlock(&rpc->lock);
	if (refused >= 0)
		return drop(ETRAN_PROTO_HOMA, refused, bytes);

	{
		struct homa_data_hdr d = {};
		struct homa_rpc_key acked = h.key;
		struct homa_peer *peer = bpf_map_lookup_elem(&etran_homa_peers, &h.key.peer_ip);
		struct homa_rpc *a = NULL;

		d.retransmit = retransmit;
		/* The version of the cutoffs the peer announced: a stale one brings a CUTOFFS. */
		if (peer)
			d.cutoff_version = bpf_htons(peer->cutoff_version);
		/* The ack it carries names our client RPC with the same peer (address and port: the
		 * app that must forget the server's side), if it is still here and ours. */
		if (h.ack_id) {
			acked.id = h.ack_id;
			a = bpf_map_lookup_elem(&etran_homa_rpcs, &acked);
			if (a && a->owner_slot == slot) {
				d.ack.client_id = bpf_cpu_to_be64(h.ack_id);
				d.ack.server_port = h.key.peer_port;
			} else {
				a = NULL;
			}
		}

		homa_tx_common(&d.common, &h.key, HOMA_DATA, HOMA_DOFF_DATA);
		d.common.sequence = bpf_htonl(h.offset);
		d.message_length = bpf_htonl(h.message_length);
		d.incoming = bpf_htonl(granted);
		d.seg.offset = bpf_htonl(h.offset);
		if (!homa_tx_put(data, data_end, rpc, &h.key, &d, sizeof(d), sizeof(d) + h.len,
				 h.priority))
			return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_NO_ROOM, bytes);
		if (a) {
			bpf_map_delete_elem(&etran_homa_rpcs, &acked);
			count_event(ETRAN_EVENT_HOMA_TX_ACK_ON_DATA, bytes);
		}
	}
	count_event(ETRAN_EVENT_HOMA_TX_DATA, bytes);
	if (retransmit)
		count_event(ETRAN_EVENT_HOMA_TX_RETRANSMIT, bytes);
	if (homa_pace_on()) {
		__u64 now = bpf_ktime_get_ns();
		__u64 at = homa_pace(now, bytes, h.message_length);

		if (at > now) {
			if (to_nic_later(ctx, at) == XDP_REDIRECT) {
				count_event(ETRAN_EVENT_HOMA_TX_PACED, bytes);
				return delivered(ETRAN_PROTO_HOMA, bytes, XDP_REDIRECT);
			}
			/* The socket's queue is full: sent now rather than lost. */
			count_event(ETRAN_EVENT_HOMA_TX_PACE_REFUSED, bytes);
		}
	}
	return delivered(ETRAN_PROTO_HOMA, bytes, to_nic_verdict());
}

#endif
