// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The TCP object: the fast path of established connections, in programs sharing the connection
 * map (the ACK generator, etran_tcp_gen, is tcp_gen.h).
 * - etran_tcp_ingress: tail-called by the entrance for every valid TCP frame from the NIC
 *   (tcp_ingress.h).
 * - etran_tcp_egress: XDP on the kernel side of an app's port (compat backend), or linked to the
 *   app's socket as BPF_XSK_EGRESS (native: the loader sets the attach type); turns the app's
 *   TX frames into TCP segments for the NIC (tcp_egress.h).
 * - etran_tcp_gen: the ACK generator the gen pump runs (tcp_gen.h); etran_tcp_xsk_gen, the same
 *   linked to apps' sockets as BPF_XSK_GEN (native only: not loaded in compat).
 * - etran_tcp_rehome: run by the daemon (BPF_PROG_RUN) to move a connection between apps
 *   (tcp_rehome.h).
 * Which backend the object serves is etran_native (common/backend.h), set before load. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "tcp/tcp.h"
#include "tcp/tcp_egress.h"
#include "tcp/tcp_gen.h"
#include "tcp/tcp_ingress.h"
#include "tcp/tcp_rehome.h"
#include "common/transport.h"

/* The slot of etran_transports this program fills; read by the loader. */
const volatile enum etran_transport etran_transport_slot = ETRAN_TRANSPORT_TCP;

/* Never read: declared so that the metadata layout and flag values reach the program's BTF. */
const volatile struct etran_tcp_layouts etran_tcp_layouts;

SEC("xdp")
int etran_tcp_ingress(struct xdp_md *ctx)
{
	return tcp_ingress(ctx);
}

SEC("xdp")
int etran_tcp_egress(struct xdp_md *ctx)
{
	return tcp_egress(ctx);
}

SEC("xdp")
int etran_tcp_gen(struct xdp_md *ctx)
{
	return tcp_gen(ctx, 0);
}

SEC("xdp")
int etran_tcp_xsk_gen(struct xdp_md *ctx)
{
	return tcp_gen(ctx, 1);
}

SEC("xdp")
int etran_tcp_rehome(struct xdp_md *ctx)
{
	return tcp_rehome(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
