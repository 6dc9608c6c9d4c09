// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The entrance: the one XDP program attached to the NIC. It classifies every frame, counts it,
 * and hands TCP and Homa to their transport programs through a program array. Everything else,
 * and etran protocols while no transport is loaded, goes to the kernel stack untouched, so ping,
 * ARP and ssh keep working on an interface under etran. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

#include "common/parse.h"
#include "common/stats.h"
#include "common/stats_maps.h"
#include "common/transport.h"

enum etran_backend {
	ETRAN_BACKEND_COMPAT, /* stock kernel: egress on per-app veth ports */
	ETRAN_BACKEND_NATIVE, /* patched kernel: XDP_EGRESS and XDP_GEN hooks */
};

/* How TCP paces what apps send (the TCP object's etran_tcp_pace, tcp/tcp_pace.h). */
enum etran_pacing {
	ETRAN_PACING_NONE,         /* not at all: the windows alone bound a burst */
	ETRAN_PACING_PACKET_QUEUE, /* native: segments wait in the socket's packet queue (0008) */
};

/* Set by `etran up` before load; read back by `etran stats`. */
struct etran_config {
	enum etran_backend backend;
	__u32 queues;  /* NIC queues served */
	enum etran_pacing pacing;
	__u32 homa_link_mbps; /* the link rate Homa's pacer uses (homa/homa_pace.h); 0: none */
};

const volatile struct etran_config etran_config;

/* Array maps take only plain integer keys, so the enums naming the counters reach the program's
 * BTF (where `etran stats` reads them) through this declaration. */
const volatile struct etran_stats_names etran_stats_names;

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, ETRAN_TRANSPORT_MAX);
	__type(key, __u32);
	__type(value, __u32);
} etran_transports SEC(".maps");

/* Hands the frame to its transport program, which counts its own verdict. Returns only when no
 * transport program is installed for the protocol, and then the kernel gets the frame. */
static __always_inline int to_transport(struct xdp_md *ctx, enum etran_proto proto,
					enum etran_transport t, __u64 bytes)
{
	bpf_tail_call(ctx, &etran_transports, t);
	return pass(proto, bytes);
}

SEC("xdp")
int etran_entrance(struct xdp_md *ctx)
{
	struct cursor c = { .pos = (void *)(long)ctx->data, .end = (void *)(long)ctx->data_end };
	__u64 bytes = ctx->data_end - ctx->data;
	struct ethhdr *eth;
	struct iphdr *ip;

	eth = parse_eth(&c);
	if (!eth)
		return drop(ETRAN_PROTO_OTHER, ETRAN_DROP_SHORT_FRAME, bytes);
	switch (bpf_ntohs(eth->h_proto)) {
	case ETH_P_IP:
		break;
	case ETH_P_IPV6:
		return pass(ETRAN_PROTO_IPV6, bytes);
	case ETH_P_ARP:
		return pass(ETRAN_PROTO_ARP, bytes);
	default:
		return pass(ETRAN_PROTO_OTHER, bytes);
	}

	ip = parse_ipv4(&c);
	if (!ip) {
		/* The kernel would drop it too; only its header is known to be IPv4. */
		return drop(ETRAN_PROTO_IPV4_OTHER, ETRAN_DROP_BAD_IPV4, bytes);
	}
	switch (ip->protocol) {
	case IPPROTO_TCP:
		if (ipv4_is_later_fragment(ip))
			return pass(ETRAN_PROTO_TCP, bytes);
		if (!parse_tcp(&c))
			return drop(ETRAN_PROTO_TCP, ETRAN_DROP_SHORT_L4, bytes);
		return to_transport(ctx, ETRAN_PROTO_TCP, ETRAN_TRANSPORT_TCP, bytes);
	case IPPROTO_HOMA:
		if (ipv4_is_later_fragment(ip))
			return pass(ETRAN_PROTO_HOMA, bytes);
		if (!parse_homa(&c))
			return drop(ETRAN_PROTO_HOMA, ETRAN_DROP_SHORT_L4, bytes);
		return to_transport(ctx, ETRAN_PROTO_HOMA, ETRAN_TRANSPORT_HOMA, bytes);
	default:
		return pass(ETRAN_PROTO_IPV4_OTHER, bytes);
	}
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
