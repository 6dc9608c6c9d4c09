// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The Homa object: the fast path of Homa RPCs, in programs sharing the port, peer and RPC maps
 * (homa_maps.h).
 * - etran_homa_ingress: tail-called by the entrance for every Homa frame from the NIC
 *   (homa_ingress.h).
 * - etran_homa_egress: XDP on the kernel side of a Homa app's port (compat backend), or linked
 *   to the app's socket as BPF_XSK_EGRESS (native: the loader sets the attach type); turns the
 *   app's TX frames into Homa packets for the NIC (homa_egress.h).
 * - etran_homa_gen: XDP on the far side of the daemon's Homa gen port (both backends); turns
 *   the pump's template frames into the GRANTs the kernel decided (homa_gen.h);
 *   etran_homa_xsk_gen, the same linked to Homa apps' sockets as BPF_XSK_GEN (native only: not
 *   loaded in compat).
 * Which backend the object serves is etran_native (common/backend.h), set before load.
 * It also carries Homa's layouts and limits (homa_wire.h, homa.h) into BTF, hence into the
 * skeleton's Rust types. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "common/transport.h"
#include "homa/homa.h"
#include "homa/homa_egress.h"
#include "homa/homa_gen.h"
#include "homa/homa_ingress.h"

/* The slot of etran_transports this program fills; read by the loader. */
const volatile enum etran_transport etran_transport_slot = ETRAN_TRANSPORT_HOMA;

/* Never read: declared so that the layouts reach the object's BTF. */
const volatile struct etran_homa_layouts etran_homa_layouts;

SEC("xdp")
int etran_homa_ingress(struct xdp_md *ctx)
{
	return homa_ingress(ctx);
}

SEC("xdp")
int etran_homa_egress(struct xdp_md *ctx)
{
	return homa_egress(ctx);
}

SEC("xdp")
int etran_homa_gen(struct xdp_md *ctx)
{
	return homa_gen(ctx, 0);
}

SEC("xdp")
int etran_homa_xsk_gen(struct xdp_md *ctx)
{
	return homa_gen(ctx, 1);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
