// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The smallest path into AF_XDP: every frame received on queue q goes to the socket in
 * xsks[q]; without a socket there, to the kernel stack. `etran bench raw` attaches it to the
 * receiving NIC.
 *
 * xsk_pktgen is the frame generator of `bench raw --mode rxdrop`: run with BPF_PROG_RUN and
 * BPF_F_TEST_XDP_LIVE_FRAMES, it sends its input frame out of pktgen_ifindex with XDP_TX. It must
 * also be attached somewhere (the bench attaches it to lo) so that test runs with repeat > 1 do
 * not wait for an RCU grace period each; frames that really arrive there pass untouched.
 *
 * xsk_port_redirect is xsk_redirect on the app side of a compat app port: it also counts each
 * frame out of the port's veth ring in the port's receive budget (compat/app_ports.h), which
 * the loader points port_rx at. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "common/transport.h"

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* The port's receive budget (xsk_port_redirect only). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct etran_port_rx);
} port_rx SEC(".maps");

const volatile __u32 pktgen_ifindex;

SEC("xdp")
int xsk_redirect(struct xdp_md *ctx)
{
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

SEC("xdp")
int xsk_port_redirect(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct etran_port_rx *b = bpf_map_lookup_elem(&port_rx, &zero);

	if (b)
		__sync_fetch_and_add(&b->arrived, 1);
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

SEC("xdp")
int xsk_pktgen(struct xdp_md *ctx)
{
	if (pktgen_ifindex && ctx->ingress_ifindex == pktgen_ifindex)
		return XDP_TX;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
