/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Homa ingress: every Homa packet to a port an app bound goes to that app with RX metadata in
 * front (struct etran_homa_rx_meta), after the checks the kernel cannot leave to the app:
 * - the packet is consistent with its type: its header is whole, a DATA segment lies within a
 *   message of at most ETRAN_HOMA_MAX_MESSAGE bytes (else dropped, homa_malformed; the IPv4
 *   header checksum too: Homa checksums nothing else);
 * - its port is bound (else homa_unbound_port) and its RPC exists: a request's first DATA
 *   creates the server's RPC, owned by the port's app; every other packet about an RPC needs one
 *   (else homa_unknown_rpc). CUTOFFS, FREEZE and ACK name no RPC of ours;
 * - state: DATA counts toward the RPC's incoming message and asks the grant scheduler about it
 *   (homa_rx_grant, homa_sched.h; a grant that moved, and the messages that may now get one,
 *   go on the gen queue, whose GRANTs gen writes: homa_gen.h; the metadata tells the app the
 *   grant and how many keys went on the queue), and a DATA
 *   echoing cutoffs other than this host's flags a CUTOFFS due; a CUTOFFS sets the
 *   cutoff_version our DATA to its sender echo (etran_homa_peers); a GRANT
 *   raises what egress lets our message send (out_granted); an ACK (the packet, or the one a
 *   DATA carries) frees the server RPCs it names; a RESEND past what our message was granted
 *   stands for a lost GRANT and raises it; an RPC_UNKNOWN ends a server RPC;
 * - a RESEND for an RPC this host does not have is answered here with RPC_UNKNOWN
 *   (homa_rx_resend_answer), one for a server RPC whose app holds the request with BUSY
 *   (the same), a NEED_ACK for a client RPC it no longer has with an ACK
 *   (homa_rx_ack_answer);
 * - the owner's port can take the frame (its receive budget, common/backend.h; else
 *   port_full, before any state changes); it goes there as the backend says (to_app).
 * Frames of other ports are not the kernel's either: etran owns IP protocol 146 on its NIC. */
#ifndef ETRAN_HOMA_INGRESS_H
#define ETRAN_HOMA_INGRESS_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "common/csum.h"
#include "common/parse.h"
#include "common/stats_maps.h"
#include "homa/homa.h"
#include "homa/homa_gen.h"
#include "homa/homa_maps.h"
#include "homa/homa_out.h"
#include "homa/homa_sched.h"

/* The server's RPC an ack names (the client's id + 1 on our port `server_port`). */
static __always_inline void homa_rx_ack(__be32 peer_ip, __be16 peer_port, const struct homa_ack *a)
{
	struct homa_rpc_key key = {
		.peer_ip = peer_ip,
		.local_port = a->server_port,
		.peer_port = peer_port,
		.id = bpf_be64_to_cpu(a->client_id) | 1,
	};

	if (a->client_id)
		bpf_map_delete_elem(&etran_homa_rpcs, &key);
}

/* Counts a DATA segment ending at `end` of a `len`-byte message into the RPC's incoming state
 * and, if the message is longer than the unscheduled bytes, into the grant scheduler
 * (homa_sched.h), which ranks it again only where its grant can move (homa_sched_idle: not for
 * each DATA); the message's first DATA sets its length and its unscheduled bytes need no
 * GRANT. A grant that moved past the last GRANT sent queues the RPC for gen, and so does each
 * message the ranking found waiting for a grant it may now get (homa_gen.h). Returns the RX
 * flags for the app (the keys queued, ETRAN_HOMA_RX_GEN_ONE each) and sets the grant, in
 * packets, in *packets. The furthest byte, not a count, is what arrived: a duplicate moves
 * nothing. */
static __always_inline __u8 homa_rx_grant(struct homa_rpc *rpc, const struct homa_rpc_key *key,
					  __u32 slot, __u32 len, __u32 end, __u16 *packets)
{
	struct homa_sched_out o = {};
	__u32 length, received, granted, idx, at, queued = 0;
	__u64 now = bpf_ktime_get_ns();
	int due;

	bpf_spin_lock(&rpc->lock);
	if (!rpc->in_length) {
		rpc->in_length = len;
		rpc->in_granted = len < ETRAN_HOMA_UNSCHED_LIMIT ? len : ETRAN_HOMA_UNSCHED_LIMIT;
		rpc->in_grant_sent = rpc->in_granted;
	}
	if (end > rpc->in_length)
		end = rpc->in_length;
	if (end > rpc->in_end)
		rpc->in_end = end;
	length = rpc->in_length;
	received = rpc->in_end;
	granted = rpc->in_granted;
	idx = rpc->in_sched_idx;
	at = rpc->in_sched_at;
	bpf_spin_unlock(&rpc->lock);

	if (length > ETRAN_HOMA_UNSCHED_LIMIT &&
	    !(received < length && homa_sched_idle(length, received, granted, at) &&
	      homa_sched_count(key, idx, received, now))) {
		homa_sched_run(key, slot, length, received, granted, now, &o);
		homa_sched_apply(rpc, &o, received);
		queued = homa_gen_queue_entries(0);
	}
	bpf_spin_lock(&rpc->lock);
	granted = rpc->in_granted;
	due = granted > rpc->in_grant_sent;
	bpf_spin_unlock(&rpc->lock);
	if (due)
		queued += homa_gen_queue(rpc, key, 0);
	*packets = (granted + ETRAN_HOMA_MAX_PAYLOAD - 1) / ETRAN_HOMA_MAX_PAYLOAD;
	return (queued < 15 ? queued : 15) * ETRAN_HOMA_RX_GEN_ONE;
}

/* A request's first DATA: the server's RPC, owned by the port's app, and the peer's Ethernet
 * address (learnt from the frame, for the response). NULL when the map is full. */
static __always_inline struct homa_rpc *homa_rx_new_rpc(const struct homa_rpc_key *key,
							const struct ethhdr *eth,
							const struct iphdr *ip, __u32 slot)
{
	struct homa_rpc rpc = { .owner_slot = slot, .local_ip = ip->daddr };
	struct homa_peer peer = {};

	__builtin_memcpy(rpc.local_mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(rpc.peer_mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(peer.mac, eth->h_source, ETH_ALEN);
	bpf_map_update_elem(&etran_homa_peers, &key->peer_ip, &peer, BPF_NOEXIST);
	/* A copy of the same request racing on another CPU may have created it first. */
	bpf_map_update_elem(&etran_homa_rpcs, key, &rpc, BPF_NOEXIST);
	return bpf_map_lookup_elem(&etran_homa_rpcs, key);
}

/* The frame becomes `hdr` (`hlen` bytes of Homa) back to its sender, out of the NIC: how ingress
 * answers, as HomaModule's kernel does, a packet about an RPC this host does not have. */
static __always_inline int homa_rx_answer(struct xdp_md *ctx, const struct ethhdr *eth,
					  const struct iphdr *ip, const struct homa_rpc_key *key,
					  __u64 bytes, const void *hdr, const __u32 hlen,
					  __u8 priority, enum etran_event event)
{
	const __u32 len = sizeof(struct ethhdr) + sizeof(struct iphdr) + hlen;
	__u8 local_mac[ETH_ALEN], peer_mac[ETH_ALEN];
	__be32 local_ip = ip->daddr;
	void *data, *data_end;

	__builtin_memcpy(local_mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(peer_mac, eth->h_source, ETH_ALEN);
	if (bpf_redirect_map(&etran_nic, 0, XDP_DROP) != XDP_REDIRECT)
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_TX_NO_NIC, bytes);
	if (bpf_xdp_adjust_tail(ctx, (int)len - (int)bytes))
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_NO_ROOM, bytes);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (!homa_write_l3(data, data_end, local_mac, peer_mac, local_ip, key->peer_ip, hlen,
			   priority) ||
	    data + len > data_end)
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_NO_ROOM, bytes);
	__builtin_memcpy(data + len - hlen, hdr, hlen);
	count_event(event, bytes);
	return delivered(ETRAN_PROTO_HOMA, bytes, XDP_REDIRECT);
}

/* A RESEND answered here with a bare control packet of `type` (HOMA_RPC_UNKNOWN, HOMA_BUSY), at
 * the highest priority, counted as `event`. */
static __always_inline int homa_rx_resend_answer(struct xdp_md *ctx, const struct ethhdr *eth,
						 const struct iphdr *ip,
						 const struct homa_rpc_key *key, __u64 bytes,
						 __u8 type, enum etran_event event)
{
	struct homa_common_hdr c = {};

	homa_tx_common(&c, key, type, HOMA_DOFF_CONTROL);
	return homa_rx_answer(ctx, eth, ip, key, bytes, &c, sizeof(c), HOMA_MAX_PRIORITIES - 1,
			      event);
}

/* Does a RESEND find a server RPC whose app holds the request: all of it arrived and none of the
 * response was sent? Read without the lock: a response begun since is the app's to resend. */
static __always_inline int homa_rx_in_service(const struct homa_rpc *rpc,
					      const struct homa_rpc_key *key)
{
	return (key->id & 1) && !rpc->out_length && rpc->in_length && rpc->in_end >= rpc->in_length;
}

/* A server's NEED_ACK for a client RPC this host no longer has: its response arrived whole (the
 * RPC goes when its app sends the ACK, which was lost, or which the server asked for first):
 * an ACK answers it, and the server forgets the RPC. */
static __always_inline int homa_rx_ack_answer(struct xdp_md *ctx, const struct ethhdr *eth,
					      const struct iphdr *ip,
					      const struct homa_rpc_key *key, __u64 bytes)
{
	struct homa_ack_hdr a = {};

	homa_tx_common(&a.common, key, HOMA_ACK, HOMA_DOFF_CONTROL);
	a.num_acks = bpf_htons(1);
	a.acks[0].client_id = bpf_cpu_to_be64(key->id);
	a.acks[0].server_port = key->peer_port;
	return homa_rx_answer(ctx, eth, ip, key, bytes, &a, sizeof(a), 0,
			      ETRAN_EVENT_HOMA_RX_ACK_ANSWER);
}

/* The ingress program's body; see homa.bpf.c. */
static __always_inline int homa_ingress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct cursor cur = { .pos = data, .end = data_end };
	struct etran_homa_rx_meta m = {}, *meta;
	struct etran_port_rx *budget;
	__u64 bytes = data_end - data;
	struct homa_common_hdr *h;
	struct homa_rpc_key key;
	struct homa_rpc *rpc = NULL;
	struct homa_port *port;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 l4_len, hlen, slot;

	/* The entrance checked all this already; the verifier needs it proven here too. */
	if (!(eth = parse_eth(&cur)) || !(ip = parse_ipv4(&cur)) || !(h = parse_homa(&cur)))
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_SHORT_L4, bytes);
	if (!csum_ipv4_ok(ip, data_end))
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_BAD_IP_CSUM, bytes);
	l4_len = ntohs_bounded(ip->tot_len) - ip->ihl * 4;
	hlen = homa_hdr_len(h->type);
	if (!hlen || l4_len < hlen || (void *)h + hlen > data_end)
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_MALFORMED, bytes);
	port = bpf_map_lookup_elem(&etran_homa_ports, &h->dport);
	if (!port)
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_UNBOUND_PORT, bytes);
	slot = port->slot;
	key.peer_ip = ip->saddr;
	key.local_port = h->dport;
	key.peer_port = h->sport;
	key.id = bpf_be64_to_cpu(h->sender_id) ^ 1;
	m.id = key.id;
	m.peer_ip = key.peer_ip;
	m.local_port = key.local_port;
	m.peer_port = key.peer_port;
	m.type = h->type;

	if (h->type == HOMA_DATA) {
		struct homa_data_hdr *d = (void *)h;
		__u32 off, len;

		if ((void *)(d + 1) > data_end)
			return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_MALFORMED, bytes);
		len = bpf_ntohl(d->message_length);
		/* All ones: a segment of a TSO frame, whose offset is its sequence number. */
		off = d->seg.offset == 0xffffffff ? bpf_ntohl(h->sequence) : bpf_ntohl(d->seg.offset);
		m.payload_len = l4_len - hlen;
		if (!m.payload_len || l4_len - hlen > ETRAN_HOMA_MAX_PAYLOAD ||
		    len > ETRAN_HOMA_MAX_MESSAGE || off > len || m.payload_len > len - off)
			return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_MALFORMED, bytes);
		m.offset = off;
		m.message_length = len;
		m.payload_off = (void *)(d + 1) - data;
		rpc = bpf_map_lookup_elem(&etran_homa_rpcs, &key);
		if (!rpc && !(key.id & 1))
			return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_UNKNOWN_RPC, bytes);
	} else if (h->type != HOMA_CUTOFFS && h->type != HOMA_FREEZE && h->type != HOMA_ACK) {
		rpc = bpf_map_lookup_elem(&etran_homa_rpcs, &key);
		/* A RESEND for an RPC this host does not have (none of the request arrived, or
		 * the RPC is over): RPC_UNKNOWN answers it; a client then sends its request
		 * again, a server forgets the RPC. */
		if (!rpc && h->type == HOMA_RESEND)
			return homa_rx_resend_answer(ctx, eth, ip, &key, bytes, HOMA_RPC_UNKNOWN,
						     ETRAN_EVENT_HOMA_RX_UNKNOWN);
		if (!rpc && h->type == HOMA_NEED_ACK && !(key.id & 1))
			return homa_rx_ack_answer(ctx, eth, ip, &key, bytes);
		if (!rpc)
			return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_UNKNOWN_RPC, bytes);
	}
	if (rpc && rpc->owner_slot != slot)
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_NO_OWNER, bytes);
	/* A RESEND for a server RPC whose app holds the request: BUSY answers it here, as
	 * HomaModule's kernel does, so the client's timer hears from us even while the app is busy
	 * elsewhere or not scheduled at all (a silent server fails the RPC after the loss timeout,
	 * transport/homa/loss.rs). */
	if (rpc && h->type == HOMA_RESEND && homa_rx_in_service(rpc, &key))
		return homa_rx_resend_answer(ctx, eth, ip, &key, bytes, HOMA_BUSY,
					     ETRAN_EVENT_HOMA_RX_BUSY);
	/* A frame the port cannot take is dropped before it moves a grant or frees an RPC. */
	budget = port_rx(slot);
	if (!budget)
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_NO_OWNER, bytes);
	if (!app_has_room(budget))
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_PORT_FULL, bytes);

	/* Both can fail; they go first so that a failure leaves the state untouched. A redirect
	 * takes effect only if the program returns XDP_REDIRECT. */
	if (app_meta_grow(ctx, sizeof(*meta)))
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_NO_ROOM, bytes);
	if (to_app(slot) != XDP_REDIRECT)
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_NO_OWNER, bytes);

	/* The frame moved behind the metadata's room: everything is read again from the new
	 * pointers. */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	cur.pos = data + sizeof(*meta);
	cur.end = data_end;
	if (!(eth = parse_eth(&cur)) || !(ip = parse_ipv4(&cur)) || !(h = parse_homa(&cur)))
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_SHORT_L4, bytes);
	if (h->type == HOMA_DATA) {
		struct homa_data_hdr *d = (void *)h;

		if ((void *)(d + 1) > data_end)
			return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_MALFORMED, bytes);
		homa_rx_ack(key.peer_ip, key.peer_port, &d->ack);
		if (!rpc) {
			rpc = homa_rx_new_rpc(&key, eth, ip, slot);
			if (!rpc)
				return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_NO_ROOM, bytes);
		}
		m.flags = homa_rx_grant(rpc, &key, slot, m.message_length,
					m.offset + m.payload_len, &m.grant_packets);
		if (bpf_ntohs(d->cutoff_version) != etran_homa_cutoffs.version)
			m.flags |= ETRAN_HOMA_RX_CUTOFFS_DUE;
	} else if (h->type == HOMA_GRANT && rpc) {
		struct homa_grant_hdr *g = (void *)h;
		__u32 offset;

		if ((void *)(g + 1) > data_end)
			return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_MALFORMED, bytes);
		offset = bpf_ntohl(g->offset);
		bpf_spin_lock(&rpc->lock);
		if (offset > rpc->out_length)
			offset = rpc->out_length;
		if (offset > rpc->out_granted)
			rpc->out_granted = offset;
		bpf_spin_unlock(&rpc->lock);
	} else if (h->type == HOMA_RESEND && rpc) {
		struct homa_resend_hdr *r = (void *)h;
		__u64 end;

		if ((void *)(r + 1) > data_end)
			return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_MALFORMED, bytes);
		/* Bytes asked for past the grant mean a GRANT was lost: the RESEND grants them
		 * (HomaModule's rule). All ones asks only for what was sent. */
		end = (__u64)bpf_ntohl(r->offset) + bpf_ntohl(r->length);
		bpf_spin_lock(&rpc->lock);
		if (r->length != 0xffffffff && end > rpc->out_granted)
			rpc->out_granted = end < rpc->out_length ? end : rpc->out_length;
		bpf_spin_unlock(&rpc->lock);
	} else if (h->type == HOMA_RPC_UNKNOWN && (key.id & 1)) {
		/* The client knows nothing of our server RPC: it is over. */
		bpf_map_delete_elem(&etran_homa_rpcs, &key);
	} else if (h->type == HOMA_CUTOFFS) {
		struct homa_cutoffs_hdr *c = (void *)h;
		struct homa_peer *peer;

		if ((void *)(c + 1) > data_end)
			return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_MALFORMED, bytes);
		/* Our DATA to the peer echo its version from now on; the app takes the cutoffs
		 * themselves from the packet, for the priorities it sends at. */
		peer = bpf_map_lookup_elem(&etran_homa_peers, &key.peer_ip);
		if (peer)
			peer->cutoff_version = bpf_ntohs(c->cutoff_version);
	} else if (h->type == HOMA_ACK) {
		struct homa_ack_hdr *a = (void *)h;
		__u32 n;

		if ((void *)(a + 1) > data_end)
			return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_MALFORMED, bytes);
		n = bpf_ntohs(a->num_acks);
#pragma unroll
		for (__u32 i = 0; i < HOMA_MAX_ACKS_PER_PKT; i++)
			if (i < n)
				homa_rx_ack(key.peer_ip, key.peer_port, &a->acks[i]);
	}

	meta = app_meta(ctx, sizeof(*meta));
	if (!meta)
		return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_HOMA_NO_ROOM, bytes);
	*meta = m;
	count_event(m.payload_len ? ETRAN_EVENT_HOMA_RX_DATA : ETRAN_EVENT_HOMA_RX_CONTROL, bytes);
	port_take(budget);
	return delivered(ETRAN_PROTO_HOMA, bytes, XDP_REDIRECT);
}

#endif
