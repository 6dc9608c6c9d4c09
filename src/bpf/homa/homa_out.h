/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The headers of a Homa packet this host sends, for both programs: egress writes the app's
 * packets from an RPC's state, ingress answers a RESEND for an RPC this host does not have. */
#ifndef ETRAN_HOMA_OUT_H
#define ETRAN_HOMA_OUT_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>

#include "common/csum.h"
#include "homa/homa.h"

#define HOMA_TX_TTL 64
#define HOMA_IP_DF 0x4000

/* Ethernet and IPv4 (TOS priority << 5) in front of `l4_len` bytes of Homa. */
static __always_inline int homa_write_l3(void *data, void *data_end, const __u8 *src_mac,
					 const __u8 *dst_mac, __be32 saddr, __be32 daddr,
					 __u32 l4_len, __u8 priority)
{
	struct ethhdr eth = { .h_proto = bpf_htons(ETH_P_IP) };
	struct iphdr ip = {
		.version = 4,
		.ihl = 5,
		.tos = priority << 5,
		.tot_len = bpf_htons(sizeof(ip) + l4_len),
		.frag_off = bpf_htons(HOMA_IP_DF),
		.ttl = HOMA_TX_TTL,
		.protocol = IPPROTO_HOMA,
		.saddr = saddr,
		.daddr = daddr,
	};

	__builtin_memcpy(eth.h_dest, dst_mac, ETH_ALEN);
	__builtin_memcpy(eth.h_source, src_mac, ETH_ALEN);
	ip.check = ~csum_fold(csum_words(&ip, sizeof(ip)));
	if (data + sizeof(eth) + sizeof(ip) > data_end)
		return 0;
	__builtin_memcpy(data, &eth, sizeof(eth));
	__builtin_memcpy(data + sizeof(eth), &ip, sizeof(ip));
	return 1;
}

/* The common header of a packet about the RPC `key` (our port and id, the peer's port). */
static __always_inline void homa_tx_common(struct homa_common_hdr *c,
					   const struct homa_rpc_key *key, __u8 type, __u8 doff)
{
	c->sport = key->local_port;
	c->dport = key->peer_port;
	c->type = type;
	c->doff = doff;
	c->sender_id = bpf_cpu_to_be64(key->id);
}

/* Ethernet and IPv4 in front of `l4_len` bytes of Homa, from the RPC's fixed fields. */
static __always_inline int homa_tx_write_l3(void *data, void *data_end, const struct homa_rpc *rpc,
					    const struct homa_rpc_key *key, __u32 l4_len,
					    __u8 priority)
{
	return homa_write_l3(data, data_end, rpc->local_mac, rpc->peer_mac, rpc->local_ip,
			     key->peer_ip, l4_len, priority);
}

/* Ethernet and IPv4 for `l4_len` bytes of Homa, then the `hlen`-byte Homa header `hdr`; 0 when
 * the frame has no room for them. */
static __always_inline int homa_tx_put(void *data, void *data_end, const struct homa_rpc *rpc,
				       const struct homa_rpc_key *key, const void *hdr, __u32 hlen,
				       __u32 l4_len, __u8 priority)
{
	const __u32 l3 = sizeof(struct ethhdr) + sizeof(struct iphdr);

	if (!homa_tx_write_l3(data, data_end, rpc, key, l4_len, priority) ||
	    data + l3 + hlen > data_end)
		return 0;
	__builtin_memcpy(data + l3, hdr, hlen);
	return 1;
}

#endif
