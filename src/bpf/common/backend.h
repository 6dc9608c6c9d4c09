/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The backend seam on the BPF side: where a transport hands a frame to its app, how it tells
 * which app sent a frame, and how a frame egress wrote leaves for the NIC. `etran_native` is
 * set by the loader before the object loads (read-only data), so the verifier sees a constant
 * and prunes the other backend's branches; the transport code is the same for both.
 *
 * - compat (stock kernel, compat/app_ports.h): an app's frames reach it through its veth port
 *   (etran_app_ports), egress runs on the port's kernel side and knows the app by the port's
 *   ifindex (etran_port_ifindex), and redirects what it accepts to the NIC (etran_nic).
 * - native (patches/, native/xsk_ports.h): the app's socket is on the NIC (etran_app_xsks),
 *   egress runs in the socket's transmit path and knows the app by the socket's queue
 *   (etran_port_queue), and XDP_PASS sends the frame; with the packet queue (patch 0008) a
 *   frame may wait in the socket until a release time instead (to_nic_later). */
#ifndef ETRAN_COMMON_BACKEND_H
#define ETRAN_COMMON_BACKEND_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "compat/app_ports.h"
#include "native/xsk_ports.h"

/* Non-zero: the object serves the native backend. */
const volatile __u32 etran_native;

/* Whether the app whose receive budget is `b` can take one more frame. Compat also bounds the
 * frames in its port's veth ring; native has no ring between ingress and the socket. */
static __always_inline int app_has_room(const struct etran_port_rx *b)
{
	const volatile struct etran_port_rx *v = b;

	if (etran_native)
		return (__s64)(v->posted - v->taken) > 0;
	return port_has_room(b);
}

/* Prepares the redirect of the frame to the app in `slot`; XDP_REDIRECT when it will go there
 * (the program must then return XDP_REDIRECT). */
static __always_inline long to_app(__u32 slot)
{
	if (etran_native)
		return bpf_redirect_map(&etran_app_xsks, slot, XDP_DROP);
	return bpf_redirect_map(&etran_app_ports, slot, XDP_DROP);
}

/* The RX metadata a transport hands its app with a frame rides in front of it, inside the
 * packet: the frame grows `len` bytes at its head (bpf_xdp_adjust_head; XDP metadata proper,
 * bpf_xdp_adjust_meta, is refused to XDP programs by some kernels, such as a hardened 6.18
 * build). 0 on success; the frame then starts with that room, and packet pointers taken
 * before must be read again. */
static __always_inline long app_meta_grow(struct xdp_md *ctx, int len)
{
	return bpf_xdp_adjust_head(ctx, -len);
}

/* Gives back the room app_meta_grow made: cannot fail, the frame behind it being longer than
 * an Ethernet header. */
static __always_inline void app_meta_shrink(struct xdp_md *ctx, int len)
{
	bpf_xdp_adjust_head(ctx, len);
}

/* The room app_meta_grow made for `len` bytes of metadata; NULL if the frame is shorter. */
static __always_inline void *app_meta(const struct xdp_md *ctx, __u32 len)
{
	void *meta = (void *)(long)ctx->data;

	if (meta + len > (void *)(long)ctx->data_end)
		return NULL;
	return meta;
}

/* Whether the frame egress runs on was sent by the app in `slot`. */
static __always_inline int from_app(const struct xdp_md *ctx, __u32 slot)
{
	__u32 *v;

	if (etran_native) {
		v = bpf_map_lookup_elem(&etran_port_queue, &slot);
		return v && *v && *v == ctx->rx_queue_index + 1;
	}
	v = bpf_map_lookup_elem(&etran_port_ifindex, &slot);
	return v && *v && *v == ctx->ingress_ifindex;
}

/* Prepares egress's verdict for a frame bound for the NIC: 0 when it can go (compat: the
 * redirect to etran_nic, which takes effect only if the program returns to_nic_verdict()). */
static __always_inline int to_nic_prepare(void)
{
	if (etran_native)
		return 0;
	return bpf_redirect_map(&etran_nic, 0, XDP_DROP) != XDP_REDIRECT;
}

/* Egress's verdict for a frame that goes to the NIC. */
static __always_inline int to_nic_verdict(void)
{
	return etran_native ? XDP_PASS : XDP_REDIRECT;
}

/* Patch 0008's packet queue: a BPF_XSK_EGRESS program may leave its frame in the socket's queue
 * until a release time. Weak, so that the objects load on kernels without it (and in compat,
 * where the program never runs in a socket's path, the branches calling it are dead). */
extern int bpf_xsk_egress_queue(struct xdp_md *ctx, __u64 tstamp) __weak __ksym;

/* Whether egress may queue frames: native, on a kernel with the packet queue. */
static __always_inline int has_packet_queue(void)
{
	return etran_native && bpf_ksym_exists(bpf_xsk_egress_queue);
}

/* Queues the frame bound for the NIC until `at` (CLOCK_MONOTONIC ns) instead of sending it now:
 * XDP_REDIRECT when it will wait in the queue (the program must then return XDP_REDIRECT);
 * anything else when it cannot (the socket's queue is full: 256 frames; or the context is not a
 * socket's egress run, as in BPF_PROG_TEST_RUN; or no packet queue here), and the frame may
 * then go at once. */
static __always_inline int to_nic_later(struct xdp_md *ctx, __u64 at)
{
	if (!has_packet_queue())
		return XDP_DROP;
	return bpf_xsk_egress_queue(ctx, at);
}

#endif
