/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Internet checksum (RFC 1071) pieces for XDP programs. Sums are of 32-bit words loaded in host
 * order into a 64-bit accumulator; folded and complemented, the result is stored in host order
 * too, which makes the bytes on the wire right whatever the host's endianness (RFC 1071 2.(B)).
 * Every summed range starts at an even offset of the checksummed data. A received header
 * verifies when the sum over it, checksum field included, folds to 0xffff (either byte order). */
#ifndef ETRAN_CSUM_H
#define ETRAN_CSUM_H

#include <linux/types.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Folds a 64-bit sum of 32-bit words into 16 bits, end-around carries included. */
static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* Sum of `bytes` (a constant multiple of 4) bytes of memory read as 32-bit words: a header built
 * on the stack, or packet bytes (unaligned loads, which the verifier allows where the
 * architecture handles them efficiently: x86-64, etran's target). */
static __always_inline __u64 csum_words(const void *p, const __u32 bytes)
{
	const __u32 *w = p;
	__u64 sum = 0;

#pragma unroll
	for (__u32 i = 0; i < bytes / 4; i++)
		sum += w[i];
	return sum;
}

union csum_tail {
	__u8 b[4];
	__u32 w;
};

/* Sum of `len` (at most max_len, a constant) packet bytes from p; a last partial word is padded
 * with zeros. Returns 0 in *ok when the bytes are not all before end (callers have checked the
 * frame's length; the verifier needs it proven here).
 *
 * The whole words go to bpf_csum_diff, i.e. the kernel's csum_partial, which sums memory in the
 * same byte order as csum_words: its 32-bit result folds to the same 16 bits, so it is simply
 * added. Its sizes must be multiples of 4 and at most 512, and the verifier checks the packet
 * range against a size's upper bound, so each call gets a constant size: 512-byte chunks, then
 * one chunk per set bit of the rest. Chunks up to CSUM_INLINE_MAX bytes are summed inline
 * instead: a helper call costs more than a few loads (a header-only segment then needs none).
 *
 * Each chunk's address is computed from len (the bytes the bigger chunks took), not by moving a
 * pointer along: a pointer moved by each taken chunk would be a different constant offset for
 * each set of bits of len, and the verifier would check what follows once per set (472,000
 * instructions for TCP ingress on 6.18, half of its limit); computed, the paths with and without
 * a chunk end in the same state and the verifier prunes one of them. */
#define CSUM_INLINE_MAX 64

static __always_inline __u64 csum_packet(void *p, void *end, __u32 len, const __u32 max_len,
					 int *ok)
{
	union csum_tail tail = { .w = 0 };
	__u32 word_bytes, rest;
	__u64 sum = 0;
	void *q;

	*ok = 0;
	if (len > max_len)
		return 0;
	word_bytes = len & ~3U;
	rest = len & 3;
#pragma unroll
	for (__u32 i = 0; i < max_len / 512; i++) {
		if (word_bytes < (i + 1) * 512)
			break;
		q = p + i * 512;
		if (q + 512 > end)
			return 0;
		sum += (__u32)bpf_csum_diff(NULL, 0, q, 512, 0);
	}
#pragma unroll
	for (__u32 size = 256; size >= 4; size /= 2) {
		if (!(word_bytes & size))
			continue;
		q = p + (word_bytes & ~(2 * size - 1));
		if (q + size > end)
			return 0;
		if (size <= CSUM_INLINE_MAX)
			sum += csum_words(q, size);
		else
			sum += (__u32)bpf_csum_diff(NULL, 0, q, size, 0);
	}
#pragma unroll
	for (__u32 j = 0; j < 3; j++) {
		if (j >= rest)
			break;
		q = p + word_bytes + j;
		if (q + 1 > end)
			return 0;
		tail.b[j] = *(__u8 *)q;
	}
	sum += tail.w;
	*ok = 1;
	return sum;
}

/* The IPv4 pseudo-header of a TCP/UDP checksum (RFC 9293 3.1). */
struct csum_pseudo {
	__be32 saddr;
	__be32 daddr;
	__u8 zero;
	__u8 protocol;
	__be16 len;
};

/* Sum of the pseudo-header of len transport bytes (protocol `proto`) from saddr to daddr. */
static __always_inline __u64 csum_pseudo(__be32 saddr, __be32 daddr, __u8 proto, __u32 len)
{
	struct csum_pseudo p = {
		.saddr = saddr,
		.daddr = daddr,
		.protocol = proto,
		.len = bpf_htons(len),
	};

	return csum_words(&p, sizeof(p));
}

/* Whether a received IPv4 header's checksum verifies (options included: ihl words). */
static __always_inline int csum_ipv4_ok(struct iphdr *ip, void *end)
{
	int ok;
	__u64 sum = csum_packet(ip, end, ip->ihl * 4, 60, &ok);

	return ok && csum_fold(sum) == 0xffff;
}

/* Whether the TCP checksum of the len bytes at l4 (header and payload, Ethernet padding left
 * out: len comes from the IP total length) verifies. The caller checked len <= max_len. */
static __always_inline int csum_tcp_ok(const struct iphdr *ip, void *l4, void *end, __u32 len,
				       const __u32 max_len)
{
	int ok;
	__u64 sum = csum_packet(l4, end, len, max_len, &ok);

	sum += csum_pseudo(ip->saddr, ip->daddr, IPPROTO_TCP, len);
	return ok && csum_fold(sum) == 0xffff;
}

#endif
