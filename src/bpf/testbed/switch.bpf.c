// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The testbed switch: programs attached to the switch namespace's ports (p1..pN, the switch ends
 * of the veth pairs whose other ends are the hosts' eth0). The ports are also enslaved to a Linux
 * bridge, which handles whatever these programs pass up.
 *
 * sw_xdp (XDP, every port, when forwarding with XDP or when an impairment is set)
 *   Random loss (XDP_DROP) and corruption (one byte of the Ethernet payload flipped), then
 *   in XDP mode (sw_config.redirect) picks frames to duplicate: those are XDP_PASSed for sw_dup,
 *   and every other unicast frame whose destination MAC is a known host is redirected straight
 *   to that host's port through the sw_ports devmap; the rest (broadcast, unknown, hairpin)
 *   goes to the bridge. Without XDP mode every frame goes to the bridge.
 *
 * sw_dup (tc clsact ingress, every port, when --duplicate is set)
 *   Duplicates a frame for a known host on another port: in XDP mode every such frame (sw_xdp
 *   passed it up for this; no mark is needed, and XDP metadata is refused to XDP programs on
 *   some kernels), else one picked at random. Sends a clone out of the destination host's port
 *   (through its qdisc) and lets the original continue to the bridge, which forwards it by its
 *   static FDB.
 *
 * sw_egress (tc clsact egress, every port, with --prio or --ecn-threshold; it runs before the
 *   port's qdisc)
 *   With --prio: the port's HTB class has 8 leaf classes 1:10 (band 0) to 1:17, served in strict
 *   priority order (src/netlink.rs), and skb->priority names the frame's class, which HTB takes
 *   as it is: band 7 less the IPv4 TOS's top 3 bits (Homa's priority, `prio << 5`), so
 *   priority 7 goes first and TOS 0 (TCP, say) last; other frames go in band 0 (ARP and the
 *   like are rare). Linux sets no priority from the TOS on a bridged frame, hence the program.
 *   With --ecn-threshold: keeps a virtual queue per port drained at the configured rate (the HTB rate) and sets CE on
 *   ECT IPv4 packets while the queue it estimates is above the threshold. HTB is a token bucket:
 *   after an idle period it lets a burst through at once (sw_config.burst bytes), and the
 *   virtual queue then holds the bucket's deficit as well as the packets really queued. So the
 *   queue is the virtual backlog less that burst: the bytes beyond what HTB passes without
 *   queueing. (Compared against the backlog itself, the threshold would be crossed with an
 *   empty queue whenever the link is busy, since the burst alone exceeds a DCTCP-sized one.)
 *   Each packet counts as HTB charges it: its wire length (skb->wire_len, which the stack sets
 *   before this hook), not skb->len. The two differ for an aggregate (GRO on the switch's
 *   ingress port merges a flow's segments): the wire length counts every segment's headers,
 *   66 bytes in 1514. Counting skb->len, the virtual queue drained about 4 % faster than HTB,
 *   so a queue that grew by less than that never showed: at 200 Mbit/s HTB held up to 230 KB
 *   (9 ms) while the marker saw almost none.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "common/parse.h"

#define SW_MAX_PORTS 64
/* The HTB class of priority band b (netlink.rs's prio_class): 1:10 + b. */
#define SW_PRIO_CLASS(b) (0x00010010u + (b))

/* Probabilities are thresholds on a 32-bit random number: p * 2^32 (2^32 means always). */
struct sw_config {
	__u64 loss;
	__u64 duplicate;
	__u64 corrupt;
	__u64 rate_bytes_per_sec;
	__u32 redirect; /* 1: XDP forwarding; 0: everything goes through the bridge */
	__u32 ecn_threshold; /* bytes */
	__u32 queue_cap; /* bytes: the virtual queue never grows past what the real one holds */
	__u32 burst;     /* bytes HTB lets through at once (its bucket) */
	__u32 prio;      /* 1: the port's queue has priority bands (skb->priority from the TOS) */
	__u32 pad;
};

const volatile struct sw_config sw_config;

/* Where a host lives: devmap slot (for XDP) and ifindex (for tc). Filled by the testbed. */
struct sw_port {
	__u32 slot;
	__u32 ifindex;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SW_MAX_PORTS);
	__type(key, __u64); /* destination MAC in the low 6 bytes, in frame order */
	__type(value, struct sw_port);
} sw_fdb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, SW_MAX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} sw_ports SEC(".maps");

struct sw_vq {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 backlog;
	__u64 last_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SW_MAX_PORTS);
	__type(key, __u32); /* egress ifindex */
	__type(value, struct sw_vq);
} sw_vqs SEC(".maps");

enum sw_counter {
	SW_CNT_REDIRECTED,
	SW_CNT_PASSED,
	SW_CNT_LOST,
	SW_CNT_CORRUPTED,
	SW_CNT_DUPLICATED,
	SW_CNT_CE_MARKED,
	SW_CNT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SW_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} sw_counters SEC(".maps");

static __always_inline void sw_count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&sw_counters, &which);

	if (c)
		(*c)++;
}

static __always_inline int chance(__u64 threshold)
{
	return threshold && (__u64)bpf_get_prandom_u32() < threshold;
}

static __always_inline __u64 mac_key(const unsigned char *mac)
{
	__u64 key = 0;

	__builtin_memcpy(&key, mac, ETH_ALEN);
	return key;
}

/* Flips one random byte of the Ethernet payload (IP header included: IP or transport checksums
 * then catch it). */
static __always_inline void corrupt(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 len, off;
	__u8 *byte;

	if (data + ETH_HLEN >= end)
		return;
	len = end - (data + ETH_HLEN);
	off = bpf_get_prandom_u32() % len;
	off &= 0xfff; /* bounded for the verifier; frames here are < 4 KiB */
	byte = data + ETH_HLEN + off;
	if ((void *)(byte + 1) > end)
		return;
	*byte ^= (__u8)(1 + bpf_get_prandom_u32() % 255);
	sw_count(SW_CNT_CORRUPTED);
}

SEC("xdp")
int sw_xdp(struct xdp_md *ctx)
{
	struct cursor c = { (void *)(long)ctx->data, (void *)(long)ctx->data_end };
	struct ethhdr *eth = parse_eth(&c);
	struct sw_port *port;
	__u64 key;

	if (!eth)
		return XDP_PASS;
	if (chance(sw_config.loss)) {
		sw_count(SW_CNT_LOST);
		return XDP_DROP;
	}
	if (chance(sw_config.corrupt))
		corrupt(ctx);
	/* Without XDP forwarding every frame goes up to sw_dup, which picks duplicates itself. */
	if (!sw_config.redirect)
		goto pass;
	if (chance(sw_config.duplicate))
		goto pass;

	/* Reload: corrupt() may have changed nothing we parsed, but the verifier wants fresh
	 * bounds after a helper that can touch packet data. */
	c.pos = (void *)(long)ctx->data;
	c.end = (void *)(long)ctx->data_end;
	eth = parse_eth(&c);
	if (!eth)
		return XDP_PASS;
	key = mac_key(eth->h_dest);
	port = bpf_map_lookup_elem(&sw_fdb, &key);
	if (!port || port->ifindex == ctx->ingress_ifindex)
		goto pass;
	sw_count(SW_CNT_REDIRECTED);
	return bpf_redirect_map(&sw_ports, port->slot, XDP_PASS);
pass:
	sw_count(SW_CNT_PASSED);
	return XDP_PASS;
}

SEC("tc")
int sw_dup(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct cursor c = { data, end };
	struct ethhdr *eth;
	struct sw_port *port;
	__u64 key;

	if (!sw_config.redirect && !chance(sw_config.duplicate))
		return TC_ACT_OK;
	eth = parse_eth(&c);
	if (!eth)
		return TC_ACT_OK;
	key = mac_key(eth->h_dest);
	port = bpf_map_lookup_elem(&sw_fdb, &key);
	if (!port || port->ifindex == skb->ingress_ifindex)
		return TC_ACT_OK;
	if (bpf_clone_redirect(skb, port->ifindex, 0) == 0)
		sw_count(SW_CNT_DUPLICATED);
	return TC_ACT_OK;
}

/* One's complement update of a 16-bit checksum for a 16-bit word changing from old to new
 * (RFC 1624, eqn. 3). Byte order does not matter as long as all three agree. */
static __always_inline __u16 csum_replace2(__u16 check, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~check + (__u16)~old + (__u32)new;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* The IPv4 header of the frame, NULL if it has none. */
static __always_inline struct iphdr *sw_ipv4(struct __sk_buff *skb)
{
	struct cursor c = { (void *)(long)skb->data, (void *)(long)skb->data_end };
	struct ethhdr *eth = parse_eth(&c);
	struct iphdr *ip = c.pos;

	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP) || (void *)(ip + 1) > c.end ||
	    ip->version != 4)
		return NULL;
	return ip;
}

SEC("tc")
int sw_egress(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct sw_vq *vq;
	__u64 now, elapsed, drained, backlog;
	struct iphdr *ip;
	__u16 old, new;
	int mark;

	if (sw_config.prio) {
		ip = sw_ipv4(skb);
		skb->priority = SW_PRIO_CLASS(ip ? 7 - (ip->tos >> 5) : 0);
	}
	vq = bpf_map_lookup_elem(&sw_vqs, &ifindex);
	if (!vq)
		return TC_ACT_OK;
	now = bpf_ktime_get_ns();
	bpf_spin_lock(&vq->lock);
	elapsed = now > vq->last_ns ? now - vq->last_ns : 0;
	/* Past 100 ms any queue we model has drained; capping also keeps the product in range. */
	if (elapsed > 100000000ULL)
		drained = ~0ULL;
	else
		drained = elapsed * sw_config.rate_bytes_per_sec / 1000000000ULL;
	backlog = vq->backlog > drained ? vq->backlog - drained : 0;
	mark = backlog > sw_config.burst && backlog - sw_config.burst > sw_config.ecn_threshold;
	backlog += skb->wire_len ? skb->wire_len : skb->len;
	if (backlog > sw_config.queue_cap)
		backlog = sw_config.queue_cap;
	vq->backlog = backlog;
	vq->last_ns = now;
	bpf_spin_unlock(&vq->lock);
	if (!mark)
		return TC_ACT_OK;

	ip = sw_ipv4(skb);
	if (!ip)
		return TC_ACT_OK;
	if ((ip->tos & 3) == 0 || (ip->tos & 3) == 3)
		return TC_ACT_OK; /* not ECN-capable, or already CE */
	old = *(__u16 *)ip;
	ip->tos |= 3;
	new = *(__u16 *)ip;
	ip->check = csum_replace2(ip->check, old, new);
	sw_count(SW_CNT_CE_MARKED);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
