/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Bounds-checked header parsing for XDP programs. Each parser advances a cursor and returns
 * NULL when the frame is too short or the header is inconsistent, so callers never touch bytes
 * past data_end. */
#ifndef ETRAN_PARSE_H
#define ETRAN_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>

#include "homa/homa_wire.h"

/* A 16-bit network-order field in host order, in a form the verifier can bound. The verifiers
 * of 6.1 and 6.12 know nothing about the result of a byte swap, so a swapped length cannot be
 * added to a packet pointer; the mask restores the bound. clang knows the swap fits 16 bits and
 * would drop the mask as a no-op: the empty asm hides that from it. */
static __always_inline __u32 ntohs_bounded(__be16 v)
{
	__u32 x = bpf_ntohs(v);

	asm volatile("" : "+r"(x));
	return x & 0xffff;
}

struct cursor {
	void *pos;
	void *end;
};

static __always_inline struct ethhdr *parse_eth(struct cursor *c)
{
	struct ethhdr *eth = c->pos;

	if ((void *)(eth + 1) > c->end)
		return NULL;
	c->pos = eth + 1;
	return eth;
}

/* Validates version, header length and total length against the frame; options are skipped.
 * The cursor's end stays at data_end (the verifier only trusts bounds checked against it), so
 * payload lengths must come from tot_len: Ethernet may pad short datagrams. */
static __always_inline struct iphdr *parse_ipv4(struct cursor *c)
{
	struct iphdr *ip = c->pos;
	__u32 hlen, tot;

	if ((void *)(ip + 1) > c->end)
		return NULL;
	if (ip->version != 4 || ip->ihl < 5)
		return NULL;
	hlen = ip->ihl * 4;
	tot = ntohs_bounded(ip->tot_len);
	if (tot < hlen || (void *)ip + tot > c->end)
		return NULL;
	c->pos = (void *)ip + hlen;
	return ip;
}

/* True for every fragment but the first: those carry no transport header. */
static __always_inline int ipv4_is_later_fragment(const struct iphdr *ip)
{
	return (ip->frag_off & bpf_htons(0x1fff)) != 0;
}

static __always_inline struct tcphdr *parse_tcp(struct cursor *c)
{
	struct tcphdr *tcp = c->pos;

	if ((void *)(tcp + 1) > c->end)
		return NULL;
	if (tcp->doff < 5 || (void *)tcp + tcp->doff * 4 > c->end)
		return NULL;
	c->pos = (void *)tcp + tcp->doff * 4;
	return tcp;
}

/* The timestamp option in the layout RFC 7323 (appendix A) recommends and Linux always sends:
 * NOP, NOP, kind 8, length 10, TSval, TSecr, first among the options. Other layouts are not
 * searched for: a segment without it simply does not refresh ts_recent. */
struct tcp_ts_opt {
	__u8 nop[2];
	__u8 kind;
	__u8 len;
	__be32 val;
	__be32 ecr;
};

static __always_inline struct tcp_ts_opt *parse_tcp_ts(struct tcphdr *tcp, void *end)
{
	struct tcp_ts_opt *ts = (void *)(tcp + 1);

	if (tcp->doff * 4 < sizeof(*tcp) + sizeof(*ts) || (void *)(ts + 1) > end)
		return NULL;
	if (ts->nop[0] != 1 || ts->nop[1] != 1 || ts->kind != 8 || ts->len != 10)
		return NULL;
	return ts;
}

/* Homa's common header (homa/homa_wire.h); the transport checks the rest of each type. */
static __always_inline struct homa_common_hdr *parse_homa(struct cursor *c)
{
	struct homa_common_hdr *h = c->pos;

	if ((void *)(h + 1) > c->end)
		return NULL;
	c->pos = h + 1;
	return h;
}

#endif
