/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Writing a TCP segment's headers from connection state alone: shared by egress (segments apps
 * send) and the ACK generator (pure ACKs the kernel decided on). */
#ifndef ETRAN_TCP_TX_H
#define ETRAN_TCP_TX_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "csum.h"
#include "parse.h"
#include "tcp.h"
#include "tcp_seq.h"

#define TX_TTL 64
#define IP_DF 0x4000
#define IPTOS_ECT0 0x02
#define NSEC_PER_MSEC 1000000ULL

/* The TCP header written: the timestamp option follows when negotiated. */
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
	__u8 fin; /* set FIN */
};

/* TSval: a monotonic 1 ms clock. */
static __always_inline __u32 tx_ts_now(void)
{
	return bpf_ktime_get_ns() / NSEC_PER_MSEC;
}

/* Bytes of Ethernet, IPv4 and TCP headers (with options) of the connection's segments. */
static __always_inline __u32 tx_hdrs_len(const struct tcp_conn *c)
{
	return sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct tcphdr) +
	       ((c->flags & TCP_CONN_TIMESTAMPS) ? sizeof(struct tcp_ts_opt) : 0);
}

/* Under the connection lock: the window field of a segment sent now, whose right edge
 * (rcv_nxt + field << rcv_wscale) it remembers in rcv_adv. The window is the app's free room
 * (rcv_wnd) less rcv_reserve, scaled down. But the edge never moves back (RFC 9293 3.8.6.2.1),
 * whoever writes the segment: where rounding down would put it before the highest edge advertised
 * (rcv_nxt moved by a non-multiple of the scale since), the field is rounded up instead, into the
 * reserve. Repeated round-ups carry the edge past the normal window by less than one scale unit
 * each; the reserve is room for them, so that every advertised byte has buffer behind it. Should
 * they ever use it up (the edge would pass rcv_nxt + rcv_wnd), the edge moves back to what the
 * buffer holds, counted in rcv_shrinks. */
static __always_inline __u16 tx_window(struct tcp_conn *c)
{
	__u32 shift = wscale(c->rcv_wscale), room = c->rcv_wnd;
	__u32 field = (room > c->rcv_reserve ? room - c->rcv_reserve : 0) >> shift;
	__u32 need, edge;
	int shrunk = 0;

	if (field > 0xffff)
		field = 0xffff;
	if (after(c->rcv_adv, c->rcv_nxt + (field << shift))) {
		need = c->rcv_adv - c->rcv_nxt; /* at most the largest window ever advertised */
		field = (need + (1U << shift) - 1) >> shift;
		if ((field << shift) > room || field > 0xffff) {
			field = room >> shift;
			if (field > 0xffff)
				field = 0xffff;
			shrunk = 1;
			c->rcv_shrinks++;
		}
	}
	edge = c->rcv_nxt + (field << shift);
	if (shrunk || after(edge, c->rcv_adv))
		c->rcv_adv = edge;
	return field;
}

/* Under the connection lock: the header fields of a segment sent now (before its payload, if
 * any, advances snd_nxt), which carries the ACK and so settles what was owed. */
static __always_inline void tx_plan_segment(struct tcp_conn *c, struct tx_plan *p)
{
	p->seq = c->snd_nxt;
	p->ack = c->rcv_nxt;
	p->window = tx_window(c);
	p->ts_recent = c->ts_recent;
	p->ip_id = c->ip_id++;
	c->ack_pending = 0;
	c->ack_now = 0;
}

/* Writes Ethernet, IPv4 and TCP headers in front of len payload bytes (data points at the
 * Ethernet header already). payload_sum is the payload's csum_packet (0 for a pure ACK). Returns
 * 0 if the frame is too short for them (cannot happen: its length was checked; the verifier needs
 * it proven). */
static __always_inline int tx_write_headers(void *data, void *data_end, const struct tcp_conn *c,
					    const struct tcp_conn_key *key, __u16 len,
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
		.saddr = key->local_ip,
		.daddr = key->remote_ip,
		.protocol = IPPROTO_TCP,
		.len = bpf_htons(tcp_len + len),
	};
	struct ethhdr eth = { .h_proto = bpf_htons(ETH_P_IP) };
	struct iphdr ip = {
		.version = 4,
		.ihl = 5,
		.tot_len = bpf_htons(sizeof(ip) + tcp_len + len),
		.id = bpf_htons(p->ip_id),
		.frag_off = bpf_htons(IP_DF),
		.ttl = TX_TTL,
		.protocol = IPPROTO_TCP,
		.saddr = key->local_ip,
		.daddr = key->remote_ip,
	};
	struct tx_tcp t = {
		.tcp = {
			.source = key->local_port,
			.dest = key->remote_port,
			.seq = bpf_htonl(p->seq),
			.ack_seq = bpf_htonl(p->ack),
			.doff = tcp_len / 4,
			.ack = 1,
			.psh = len > 0,
			.fin = p->fin,
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
	if ((c->flags & TCP_CONN_ECN) && len)
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

#endif
