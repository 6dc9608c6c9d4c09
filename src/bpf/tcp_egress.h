/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* TCP egress (compat backend: XDP on the kernel side of an app's port). An app's TX frame is a
 * struct etran_tcp_tx_hdr followed by payload. Egress checks that the frame comes from the
 * connection's owner, that the payload continues the stream at snd_nxt and fits the peer's and
 * the congestion window; it applies the app's consumption report to the receive window, replaces
 * the TX header with Ethernet, IPv4 and TCP headers written from the connection state alone (the
 * app writes no header field), and sends the segment to the NIC. */
#ifndef ETRAN_TCP_EGRESS_H
#define ETRAN_TCP_EGRESS_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "csum.h"
#include "parse.h"
#include "stats_maps.h"
#include "tcp.h"
#include "tcp_maps.h"
#include "tcp_seq.h"

#define TX_TTL 64
#define IP_DF 0x4000
#define IPTOS_ECT0 0x02
#define NSEC_PER_MSEC 1000000ULL

/* The TCP header egress writes: the timestamp option follows when negotiated. */
struct tx_tcp {
	struct tcphdr tcp;
	struct tcp_ts_opt ts;
};

/* What the update under the lock decided, acted upon after it. */
struct tx_plan {
	__u32 seq;
	__u32 ack;
	__u32 ts_recent;
	__u32 reason; /* enum etran_drop_reason, when dropped */
	__u16 window; /* the window field, scaled */
	__u16 ip_id;
	__u8 dropped;
};

/* The header checks that need no connection. */
static __always_inline int tx_hdr_valid(const struct etran_tcp_tx_hdr *h, __u64 frame_len)
{
	if (h->reserved || frame_len != sizeof(*h) + h->len)
		return 0;
	switch (h->intent) {
	case ETRAN_TCP_TX_DATA:
		return h->len > 0 && h->len <= ETRAN_TCP_MAX_PAYLOAD;
	case ETRAN_TCP_TX_ACK:
	case ETRAN_TCP_TX_WINDOW_UPDATE:
		return h->len == 0;
	default:
		return 0;
	}
}

/* The window field announcing rcv_wnd: scaled down, at most 65535. */
static __always_inline __u16 tx_window(const struct tcp_conn *c)
{
	__u32 wnd = c->rcv_wnd >> wscale(c->rcv_wscale);

	return wnd > 0xffff ? 0xffff : wnd;
}

/* The consumption report reopens the receive window, up to the largest window the field can
 * announce: more could never reach the peer. It counts even when the frame's data is refused
 * below (the app cannot tell a dropped frame from a sent one, so a lost report would shrink its
 * window for good). */
static __always_inline void tx_reopen(struct tcp_conn *c, __u32 consumed)
{
	__u32 max = 0xffffU << wscale(c->rcv_wscale);

	if (c->rcv_wnd >= max)
		return;
	if (consumed > max - c->rcv_wnd)
		consumed = max - c->rcv_wnd;
	c->rcv_wnd += consumed;
}

static __always_inline void tx_refuse(struct tx_plan *p, enum etran_drop_reason why)
{
	p->dropped = 1;
	p->reason = why;
}

/* Everything done under the connection lock: no helper calls, only the state and the copied
 * TX header. */
static __always_inline void tx_update(struct tcp_conn *c, const struct etran_tcp_tx_hdr *h,
				      struct tx_plan *p)
{
	__u32 flight;

	tx_reopen(c, h->consumed);
	if (h->intent == ETRAN_TCP_TX_DATA) {
		if (h->tx_pos != c->tx_pos) {
			tx_refuse(p, ETRAN_DROP_TCP_TX_STALE);
			return;
		}
		/* Bytes in flight once this payload is sent; snd_una never passes snd_nxt. */
		flight = c->snd_nxt - c->snd_una + h->len;
		if (flight > c->snd_wnd) {
			tx_refuse(p, ETRAN_DROP_TCP_TX_PEER_WINDOW);
			return;
		}
		if (c->cwnd && flight > c->cwnd) {
			tx_refuse(p, ETRAN_DROP_TCP_TX_CWND);
			return;
		}
	}
	p->seq = c->snd_nxt;
	c->snd_nxt += h->len;
	c->tx_pos += h->len;
	p->ack = c->rcv_nxt;
	p->window = tx_window(c);
	p->ts_recent = c->ts_recent;
	p->ip_id = c->ip_id++;
	/* This segment carries the ACK. */
	c->ack_pending = 0;
	c->ack_now = 0;
}

/* Writes Ethernet, IPv4 and TCP headers in front of the payload (data points at the Ethernet
 * header already). payload_sum is the payload's csum_packet. Returns 0 if the frame is too short
 * for them (cannot happen: its length was checked; the verifier needs it proven). */
static __always_inline int tx_write_headers(void *data, void *data_end, const struct tcp_conn *c,
					    const struct etran_tcp_tx_hdr *h,
					    const struct tx_plan *p, __u64 payload_sum,
					    __u32 ts_now)
{
	int ts = c->flags & TCP_CONN_TIMESTAMPS;
	__u32 tcp_len = sizeof(struct tcphdr) + (ts ? sizeof(struct tcp_ts_opt) : 0);
	struct {
		__be32 saddr;
		__be32 daddr;
		__u8 zero;
		__u8 protocol;
		__be16 len;
	} pseudo = {
		.saddr = h->key.local_ip,
		.daddr = h->key.remote_ip,
		.protocol = IPPROTO_TCP,
		.len = bpf_htons(tcp_len + h->len),
	};
	struct ethhdr eth = { .h_proto = bpf_htons(ETH_P_IP) };
	struct iphdr ip = {
		.version = 4,
		.ihl = 5,
		.tot_len = bpf_htons(sizeof(ip) + tcp_len + h->len),
		.id = bpf_htons(p->ip_id),
		.frag_off = bpf_htons(IP_DF),
		.ttl = TX_TTL,
		.protocol = IPPROTO_TCP,
		.saddr = h->key.local_ip,
		.daddr = h->key.remote_ip,
	};
	struct tx_tcp t = {
		.tcp = {
			.source = h->key.local_port,
			.dest = h->key.remote_port,
			.seq = bpf_htonl(p->seq),
			.ack_seq = bpf_htonl(p->ack),
			.doff = tcp_len / 4,
			.ack = 1,
			.psh = h->len > 0,
			.window = bpf_htons(p->window),
		},
		.ts = {
			.nop = { 1, 1 },
			.kind = 8,
			.len = 10,
			.val = bpf_htonl(ts_now),
			.ecr = bpf_htonl(p->ts_recent),
		},
	};
	__u64 sum;

	__builtin_memcpy(eth.h_dest, c->remote_mac, ETH_ALEN);
	__builtin_memcpy(eth.h_source, c->local_mac, ETH_ALEN);
	/* ECT(0) on data only: pure ACKs are not ECN-capable (RFC 3168 6.1.4). */
	if ((c->flags & TCP_CONN_ECN) && h->len)
		ip.tos = IPTOS_ECT0;
	ip.check = ~csum_fold(csum_words(&ip, sizeof(ip)));

	sum = csum_words(&pseudo, sizeof(pseudo)) + csum_words(&t.tcp, sizeof(t.tcp)) + payload_sum;
	if (ts)
		sum += csum_words(&t.ts, sizeof(t.ts));
	t.tcp.check = ~csum_fold(sum);

	if (data + sizeof(eth) + sizeof(ip) + sizeof(t.tcp) > data_end)
		return 0;
	__builtin_memcpy(data, &eth, sizeof(eth));
	__builtin_memcpy(data + sizeof(eth), &ip, sizeof(ip));
	if (!ts) {
		__builtin_memcpy(data + sizeof(eth) + sizeof(ip), &t.tcp, sizeof(t.tcp));
		return 1;
	}
	if (data + sizeof(eth) + sizeof(ip) + sizeof(t) > data_end)
		return 0;
	__builtin_memcpy(data + sizeof(eth) + sizeof(ip), &t, sizeof(t));
	return 1;
}

/* The egress program's body; see tcp.bpf.c. */
static __always_inline int tcp_egress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct etran_tcp_tx_hdr *th = data, h;
	__u64 bytes = data_end - data, payload_sum;
	struct tx_plan plan = {};
	__u32 slot, *owner, hdrs, ts_now;
	struct tcp_conn *c;
	int ok;

	if ((void *)(th + 1) > data_end)
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_TX_SHORT, bytes);
	h = *th;
	if (!tx_hdr_valid(&h, bytes))
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_TX_BAD_HDR, bytes);
	c = bpf_map_lookup_elem(&etran_tcp_conns, &h.key);
	if (!c)
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_TX_UNKNOWN_CONN, bytes);
	/* The port a frame arrives on is the app's identity: it cannot be forged. */
	slot = c->owner_port;
	owner = bpf_map_lookup_elem(&etran_port_ifindex, &slot);
	if (!owner || !*owner || *owner != ctx->ingress_ifindex)
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_TX_WRONG_OWNER, bytes);
	if (h.len > c->mss)
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_TX_OVER_MSS, bytes);

	/* Work that needs no state, or helpers, goes before the lock. */
	payload_sum = csum_packet(th + 1, data_end, h.len, ETRAN_TCP_MAX_PAYLOAD, &ok);
	if (!ok)
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_TX_SHORT, bytes);
	ts_now = bpf_ktime_get_ns() / NSEC_PER_MSEC; /* TSval: a monotonic 1 ms clock */
	hdrs = sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct tcphdr) +
	       ((c->flags & TCP_CONN_TIMESTAMPS) ? sizeof(struct tcp_ts_opt) : 0);
	/* Both can fail; they go first so that a failure leaves the connection untouched. A
	 * redirect takes effect only if the program returns XDP_REDIRECT. */
	if (bpf_xdp_adjust_head(ctx, (int)sizeof(h) - (int)hdrs))
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_TX_NO_HEADROOM, bytes);
	if (bpf_redirect_map(&etran_nic, 0, XDP_DROP) != XDP_REDIRECT)
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_TX_NO_NIC, bytes);

	bpf_spin_lock(&c->lock);
	tx_update(c, &h, &plan);
	bpf_spin_unlock(&c->lock);
	if (plan.dropped)
		return drop(ETRAN_PROTO_TCP, plan.reason, bytes);

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (!tx_write_headers(data, data_end, c, &h, &plan, payload_sum, ts_now))
		return drop(ETRAN_PROTO_TCP, ETRAN_DROP_TCP_TX_NO_HEADROOM, bytes);
	return delivered(ETRAN_PROTO_TCP, data_end - data, XDP_REDIRECT);
}

#endif
