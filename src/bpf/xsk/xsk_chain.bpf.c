// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* `etran bench raw --chain`: the hops of eTran's compat datapath with no transport work, so a
 * transport's rates can be stated as a fraction of what its chain carries. The maps are the
 * compat backend's own (compat/app_ports.h), filled by the same port code the daemon uses;
 * the programs keep only what every frame of a transport pays besides the transport:
 * - xsk_chain_egress, on the kernel side of the app's port: the owner check (the frame came
 *   from the port of slot chain_slot, as TCP egress checks a connection's owner), then the
 *   redirect to the NIC;
 * - xsk_chain_ingress, on the NIC: the redirect to the port of slot chain_slot (whose app side
 *   puts it in the app's socket with xsk_redirect). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "compat/app_ports.h"

const volatile __u32 chain_slot = 1;

SEC("xdp")
int xsk_chain_egress(struct xdp_md *ctx)
{
	__u32 slot = chain_slot;
	__u32 *owner = bpf_map_lookup_elem(&etran_port_ifindex, &slot);

	if (!owner || *owner != ctx->ingress_ifindex)
		return XDP_DROP;
	return bpf_redirect_map(&etran_nic, 0, 0);
}

SEC("xdp")
int xsk_chain_ingress(struct xdp_md *ctx)
{
	return bpf_redirect_map(&etran_app_ports, chain_slot, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
