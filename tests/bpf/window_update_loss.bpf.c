// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test-only (never embedded in etran): the network loses a Linux receiver's window update, and
 * everything else it sends, until the sender probes the window. Attached with tc to the Linux
 * end of a veth pair: wu_egress sees what Linux sends from TCP port wu_port, wu_ingress what
 * reaches that port. States (wu_status.state):
 *   WU_OPEN:   pass; a segment from Linux announcing a zero window closes it.
 *   WU_CLOSED: pass, until Linux announces a window again: that update is dropped (lost).
 *   WU_LOST:   every segment from Linux is dropped, until a zero-window probe reaches Linux
 *              (no payload, seq one below the ACK Linux sent last).
 *   WU_PROBED: pass: the answer to the probe tells the sender the window.
 * A sender without a persist timer waits forever in WU_LOST; tests/e2e/tcp_zero_window.rs
 * checks that etran's transfer completes. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "common/parse.h"

enum wu_state {
	WU_OPEN,
	WU_CLOSED,
	WU_LOST,
	WU_PROBED,
};

struct wu_status {
	__u32 state;        /* enum wu_state */
	__u32 last_ack;     /* the ACK field of Linux's latest segment */
	__u32 zero_windows; /* Linux's segments announcing a zero window */
	__u32 lost;         /* Linux's segments dropped */
	__u32 probes;       /* zero-window probes that reached Linux while its update was lost */
};

/* Linux's TCP port, host order: set before loading. */
const volatile __u16 wu_port;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct wu_status);
} wu_status SEC(".maps");

/* Never read: declared so that the layouts reach BTF, hence the skeleton's Rust types. */
struct wu_layouts {
	struct wu_status status;
	enum wu_state state;
};

const volatile struct wu_layouts wu_layouts;

/* The TCP header of an IPv4 frame, and its payload length; NULL for anything else. */
static __always_inline struct tcphdr *tcp_of(struct __sk_buff *skb, __u32 *payload)
{
	struct cursor c = { (void *)(long)skb->data, (void *)(long)skb->data_end };
	struct ethhdr *eth = parse_eth(&c);
	struct tcphdr *tcp;
	struct iphdr *ip;

	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP) || !(ip = parse_ipv4(&c)) ||
	    ip->protocol != IPPROTO_TCP || !(tcp = parse_tcp(&c)))
		return NULL;
	*payload = bpf_ntohs(ip->tot_len) - ip->ihl * 4 - tcp->doff * 4;
	return tcp;
}

static __always_inline struct wu_status *status(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&wu_status, &zero);
}

SEC("tc")
int wu_egress(struct __sk_buff *skb)
{
	struct wu_status *st = status();
	__u32 payload;
	struct tcphdr *tcp = tcp_of(skb, &payload);

	if (!st || !tcp || tcp->source != bpf_htons(wu_port) || tcp->syn || tcp->rst)
		return TC_ACT_OK;
	st->last_ack = bpf_ntohl(tcp->ack_seq);
	if (!tcp->window)
		st->zero_windows++;
	if (st->state == WU_OPEN && !tcp->window)
		st->state = WU_CLOSED;
	else if (st->state == WU_CLOSED && tcp->window)
		st->state = WU_LOST;
	if (st->state != WU_LOST)
		return TC_ACT_OK;
	st->lost++;
	return TC_ACT_SHOT;
}

SEC("tc")
int wu_ingress(struct __sk_buff *skb)
{
	struct wu_status *st = status();
	__u32 payload;
	struct tcphdr *tcp = tcp_of(skb, &payload);

	if (!st || !tcp || tcp->dest != bpf_htons(wu_port) || st->state != WU_LOST)
		return TC_ACT_OK;
	if (!payload && !tcp->syn && !tcp->fin && !tcp->rst &&
	    bpf_ntohl(tcp->seq) == st->last_ack - 1) {
		st->probes++;
		st->state = WU_PROBED;
	}
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
