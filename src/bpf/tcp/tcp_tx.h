/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Writing a TCP segment's headers from connection state alone: shared by egress (segments apps
 * send) and the ACK generator (pure ACKs the kernel decided on).
 *
 * Options: the timestamp option when negotiated, then SACK blocks (RFC 2018) when the
 * connection has any to report: a D-SACK block first (RFC 2883), then the out-of-order
 * intervals, most recently changed first. The header's length must be known before the lock
 * (the frame is resized first, so that a failure leaves the connection untouched), so the
 * number of blocks is read without the lock (tx_sack_room); under the lock the plan takes the
 * blocks still there, at most that many, and NOPs fill the room of any that went away (a
 * segment arriving in between may have filled a gap). A data segment carries blocks only where
 * its payload leaves them room within the MSS.
 *
 * ECN (negotiated): segments with payload are ECT(0), pure ACKs are not ECN-capable; every
 * segment carries ECE while the connection's CE state is set, and egress sets CWR where
 * congestion control asks for it (tcp_cc.h). */
#ifndef ETRAN_TCP_TX_H
#define ETRAN_TCP_TX_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "common/csum.h"
#include "common/parse.h"
#include "tcp/tcp.h"
#include "tcp/tcp_cc.h"
#include "tcp/tcp_seq.h"

#define TX_TTL 64
#define IP_DF 0x4000
#define NSEC_PER_MSEC 1000000ULL

/* The TCP header written: the timestamp option follows when negotiated. */
struct tx_tcp {
	struct tcphdr tcp;
	struct tcp_ts_opt ts;
};

#define TCPOPT_NOP 1
#define TCPOPT_SACK 5
#define TCPOPT_NOP4 0x01010101U

/* The SACK option written after the fixed header (and the timestamp option): NOP, NOP, kind,
 * length, then the blocks the segment has room for. */
struct tx_sack_block {
	__be32 left;
	__be32 right;
};

struct tx_sack_opt {
	__u8 nop[2];
	__u8 kind;
	__u8 len;
	struct tx_sack_block block[TCP_SACK_MAX_BLOCKS];
};

/* The longest headers written (the ACK generator's template length, ETRAN_TCP_MAX_HEADERS):
 * the timestamp option and TCP_SACK_MAX_BLOCKS_TS blocks fill TCP's 40 bytes of options. */
_Static_assert(sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct tx_tcp) + 4 +
		       8 * TCP_SACK_MAX_BLOCKS_TS == ETRAN_TCP_MAX_HEADERS,
	       "ETRAN_TCP_MAX_HEADERS is the longest segment header tx_write_headers writes");

/* What the update under the lock decided, acted upon after it. */
struct tx_plan {
	__u32 seq;
	__u32 ack;
	__u32 ts_recent;
	__u32 reason; /* enum etran_drop_reason, when dropped */
	__u16 window; /* the window field, scaled */
	__u16 ip_id;
	__u8 dropped;
	__u8 bare;      /* sent without its payload: a refused frame's window update */
	__u8 fin;       /* set FIN */
	__u8 ece;       /* set ECE: echo the congestion marks we received */
	__u8 cwr;       /* set CWR: we cut the window for ECE */
	__u8 sack_room; /* SACK blocks the header has room for (decided before the lock) */
	__u8 sack_n;    /* blocks written, at most sack_room: NOPs fill the rest */
	struct tcp_seq_range sack[TCP_SACK_MAX_BLOCKS];
	/* What tx_write_headers needs of the connection beyond the plan (it cannot read the
	 * connection itself: see there), filled by tx_plan_frame after the lock. */
	__u8 timestamps; /* the timestamp option is on */
	__u8 ecn;        /* ECN was negotiated */
	__u8 local_mac[ETH_ALEN];
	__u8 remote_mac[ETH_ALEN];
	__u16 len;       /* payload bytes behind the headers */
	__u8 psh;        /* set PSH (egress, from the app's ETRAN_TCP_TX_PUSH) */
	__u32 ts_now;    /* TSval */
};

/* TSval: a monotonic 1 ms clock. */
static __always_inline __u32 tx_ts_now(void)
{
	return bpf_ktime_get_ns() / NSEC_PER_MSEC;
}

/* SACK blocks the connection has to report: a D-SACK block, then its out-of-order intervals. */
static __always_inline __u32 tx_sack_owed(const struct tcp_conn *c)
{
	__u32 max = (c->flags & TCP_CONN_TIMESTAMPS) ? TCP_SACK_MAX_BLOCKS_TS : TCP_SACK_MAX_BLOCKS;
	__u32 held = c->ooo_n < max ? c->ooo_n : max;
	__u32 n = held + (c->dsack.start != c->dsack.end);

	if (!(c->flags & TCP_CONN_SACK))
		return 0;
	return n < max ? n : max;
}

/* Before the lock: room for the SACK blocks owed now, in a segment of `payload` bytes (the
 * option takes 4 + 8 bytes a block, and payload plus options stay within the MSS). Read without
 * the lock: see the file comment. */
static __always_inline __u32 tx_sack_room(const struct tcp_conn *c, __u32 payload)
{
	__u32 owed = tx_sack_owed(c), fit;

	if (!owed || payload + 12 > c->mss)
		return 0;
	fit = (c->mss - payload - 4) / 8;
	return owed < fit ? owed : fit;
}

/* Bytes of Ethernet, IPv4 and TCP headers (with options) of a segment of the connection with
 * room for `sack_room` SACK blocks. */
static __always_inline __u32 tx_hdrs_len(const struct tcp_conn *c, __u32 sack_room)
{
	return sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct tcphdr) +
	       ((c->flags & TCP_CONN_TIMESTAMPS) ? sizeof(struct tcp_ts_opt) : 0) +
	       (sack_room ? 4 + 8 * sack_room : 0);
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

/* Under the connection lock: would a pure window update matter to the peer now? The rule of
 * the app library's `tcp::window::update_due` (receiver silly-window avoidance, Linux's rule),
 * here on exact state: the peer has rcv_adv - rcv_nxt; an update would announce the room less
 * the reserve; the advertisable buffer is 15 reserves (the reserve is a 16th of the buffer).
 * After the peer's FIN no update matters. tests/fixtures/conformance.rs holds the two to the
 * same answers. */
static __always_inline int tx_window_update_due(const struct tcp_conn *c)
{
	__u32 left = after(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv - c->rcv_nxt : 0;
	__u32 room = c->rcv_wnd > c->rcv_reserve ? c->rcv_wnd - c->rcv_reserve : 0;
	__u32 adv = 15 * c->rcv_reserve, step = c->mss < adv / 2 ? c->mss : adv / 2;

	if (c->fin & TCP_CONN_FIN_RCVD)
		return 0;
	return left <= adv / 2 && room >= 2 * left && room >= left + (step ? step : 1);
}

/* Under the connection lock: the SACK blocks of a segment with room for p->sack_room of them.
 * The D-SACK block is reported once. Then ooo[0], the latest segment's interval, and after it
 * the most recent others; but when more intervals changed since the last report (a burst
 * ACKed once) than the blocks left hold, the oldest of those instead, and the ones skipped
 * stay owed (tx_sack_unreported): every interval reaches the peer, whose scoreboard would
 * otherwise resend what we hold. */
static __always_inline void tx_plan_sack(struct tcp_conn *c, struct tx_plan *p)
{
	__u32 n = 0, room = p->sack_room, fresh = c->ooo_fresh, skip = 0, left;

	if (fresh > c->ooo_n)
		fresh = c->ooo_n; /* never so; a bound keeps a bad count from owing ACKs forever */
	if (!room)
		return;
	if (c->dsack.start != c->dsack.end) {
		p->sack[0] = c->dsack;
		c->dsack.end = c->dsack.start;
		n = 1;
	}
	left = room - n;
	if (fresh <= left) {
		c->ooo_fresh = 0;
	} else if (left >= 2) {
		skip = fresh - left; /* ooo[1, 1 + skip) wait for the next ACK */
		c->ooo_fresh = skip + 1;
	}
#pragma unroll
	for (__u32 j = 0; j < TCP_SACK_MAX_BLOCKS; j++) {
		__u32 i = j ? j + skip : 0;

		if (i >= c->ooo_n || n >= room)
			break;
		p->sack[n & (TCP_SACK_MAX_BLOCKS - 1)] = c->ooo[i & (TCP_OOO_MAX - 1)];
		n++;
	}
	p->sack_n = n;
}

/* Under the connection lock: intervals changed that no ACK has reported yet (beyond ooo[0],
 * which every ACK reports), so another ACK is owed. */
static __always_inline int tx_sack_unreported(const struct tcp_conn *c)
{
	return (c->flags & TCP_CONN_SACK) && c->ooo_fresh > 1;
}

/* Under the connection lock: the header fields of a segment sent now (before its payload, if
 * any, advances snd_nxt), which carries the ACK and so settles what was owed, unless it had
 * no room for SACK blocks an immediate ACK owes (news of out-of-order data) or left intervals
 * unreported: the generator then still sends pure ACKs with them. */
static __always_inline void tx_plan_segment(struct tcp_conn *c, struct tx_plan *p)
{
	__u32 owed = tx_sack_owed(c);

	p->seq = c->snd_nxt;
	p->ack = c->rcv_nxt;
	p->window = tx_window(c);
	p->ts_recent = c->ts_recent;
	p->ip_id = c->ip_id++;
	p->ece = !!(c->cc & TCP_CC_CE);
	tx_plan_sack(c, p);
	c->ack_pending = 0;
	c->ack_now = c->ack_now && (p->sack_n < owed || tx_sack_unreported(c));
}

/* After the lock: what tx_write_headers needs of the connection (fixed since its handshake, so
 * read without the lock), the payload's length and the TSval. */
static __always_inline void tx_plan_frame(const struct tcp_conn *c, struct tx_plan *p, __u16 len,
					  __u32 ts_now)
{
	p->timestamps = !!(c->flags & TCP_CONN_TIMESTAMPS);
	p->ecn = !!(c->flags & TCP_CONN_ECN);
	__builtin_memcpy(p->local_mac, c->local_mac, ETH_ALEN);
	__builtin_memcpy(p->remote_mac, c->remote_mac, ETH_ALEN);
	p->len = len;
	p->ts_now = ts_now;
}

/* tx_write_headers' work, on the frame [data, data_end). */
static __always_inline int tx_headers(void *data, void *data_end, const struct tcp_conn_key *key,
				      const struct tx_plan *p, __u64 payload_sum)
{
	int ts = p->timestamps;
	__u16 len = p->len;
	__u32 room = p->sack_room < TCP_SACK_MAX_BLOCKS ? p->sack_room : TCP_SACK_MAX_BLOCKS;
	__u32 tcp_len = sizeof(struct tcphdr) + (ts ? sizeof(struct tcp_ts_opt) : 0) +
			(room ? 4 + 8 * room : 0);
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
			.psh = p->psh,
			.fin = p->fin,
			.ece = p->ece,
			.cwr = p->cwr,
			.window = bpf_htons(p->window),
		},
		.ts = {
			.nop = { 1, 1 },
			.kind = 8,
			.len = 10,
			.val = bpf_htonl(p->ts_now),
			.ecr = bpf_htonl(p->ts_recent),
		},
	};
	struct tx_sack_opt sack = {
		.nop = { TCPOPT_NOP, TCPOPT_NOP },
		.kind = TCPOPT_SACK,
		.len = 2 + 8 * p->sack_n,
	};
	void *opt;
	__u64 sum;

#pragma unroll
	for (__u32 j = 0; j < TCP_SACK_MAX_BLOCKS; j++) {
		if (j < p->sack_n) {
			sack.block[j].left = bpf_htonl(p->sack[j].start);
			sack.block[j].right = bpf_htonl(p->sack[j].end);
		} else {
			sack.block[j].left = TCPOPT_NOP4;
			sack.block[j].right = TCPOPT_NOP4;
		}
	}
	if (!p->sack_n)
		*(__u32 *)&sack = TCPOPT_NOP4; /* blocks planned, none left: all NOPs */
	__builtin_memcpy(eth.h_dest, p->remote_mac, ETH_ALEN);
	__builtin_memcpy(eth.h_source, p->local_mac, ETH_ALEN);
	/* ECT(0) on data only: pure ACKs are not ECN-capable (RFC 3168 6.1.4). */
	if (p->ecn && len)
		ip.tos = IPTOS_ECN_ECT0;
	ip.check = ~csum_fold(csum_words(&ip, sizeof(ip)));

	sum = csum_pseudo(key->local_ip, key->remote_ip, IPPROTO_TCP, tcp_len + len) +
	      csum_words(&t.tcp, sizeof(t.tcp)) + payload_sum;
	if (ts)
		sum += csum_words(&t.ts, sizeof(t.ts));
	if (room)
		sum += csum_words(&sack, 4);
#pragma unroll
	for (__u32 j = 0; j < TCP_SACK_MAX_BLOCKS; j++)
		if (j < room)
			sum += csum_words(&sack.block[j], sizeof(sack.block[j]));
	t.tcp.check = ~csum_fold(sum);

	if (data + sizeof(eth) + sizeof(ip) + sizeof(t.tcp) > data_end)
		return 0;
	__builtin_memcpy(data, &eth, sizeof(eth));
	__builtin_memcpy(data + sizeof(eth), &ip, sizeof(ip));
	opt = data + sizeof(eth) + sizeof(ip) + sizeof(t.tcp);
	if (!ts) {
		__builtin_memcpy(data + sizeof(eth) + sizeof(ip), &t.tcp, sizeof(t.tcp));
	} else {
		if (data + sizeof(eth) + sizeof(ip) + sizeof(t) > data_end)
			return 0;
		__builtin_memcpy(data + sizeof(eth) + sizeof(ip), &t, sizeof(t));
		opt += sizeof(t.ts);
	}
	if (!room)
		return 1;
	if (opt + 4 > data_end)
		return 0;
	__builtin_memcpy(opt, &sack, 4);
#pragma unroll
	for (__u32 j = 0; j < TCP_SACK_MAX_BLOCKS; j++) {
		if (j >= room)
			break;
		if (opt + 4 + 8 * (j + 1) > data_end)
			return 0;
		__builtin_memcpy(opt + 4 + 8 * j, &sack.block[j], sizeof(sack.block[j]));
	}
	return 1;
}

/* Writes Ethernet, IPv4 and TCP headers at the start of ctx's frame, in front of p->len payload
 * bytes. payload_sum is the payload's csum_packet (0 for a pure ACK). Returns 0 if the frame is
 * too short for them (cannot happen: its length was checked; the verifier needs it proven).
 *
 * A global function, so that the verifier checks it once per program: inlined, it was checked
 * again for every way the update under the lock can end (TCP egress took 479,000 of the 6.1
 * verifier's million instructions). So it reads only its arguments, which the verifier makes it
 * check for NULL: a global function cannot be handed the connection, a map value holding a spin
 * lock. */
__noinline int tx_write_headers(struct xdp_md *ctx, const struct tcp_conn_key *key,
				const struct tx_plan *p, __u64 payload_sum)
{
	if (!ctx || !key || !p)
		return 0;
	return tx_headers((void *)(long)ctx->data, (void *)(long)ctx->data_end, key, p,
			  payload_sum);
}

#endif
