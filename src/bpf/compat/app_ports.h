/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The compat backend's maps, which every transport object includes: where frames for an app go
 * (its veth port) and where frames from an app go (the NIC). */
#ifndef ETRAN_COMPAT_APP_PORTS_H
#define ETRAN_COMPAT_APP_PORTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "common/transport.h"

/* App ports: slot → ifindex of the kernel side of the app's veth, where ingress redirects the
 * app's frames. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, ETRAN_APP_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} etran_app_ports SEC(".maps");

/* The same slots, readable: a devmap's values cannot be read from BPF, and egress needs the
 * ifindex to check that a frame comes from its connection's owner. The daemon fills both
 * together; 0 is an empty slot. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ETRAN_APP_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} etran_port_ifindex SEC(".maps");

/* An app port's receive budget (struct etran_port_rx, common/transport.h). Ingress updates
 * connection state (and acknowledges data) before the frame reaches the app's AF_XDP socket, and
 * a frame lost after that point is data the peer will never resend. On its way a frame can be
 * lost twice: the port's veth ring (256 frames) overruns while the app side's softirq lags, or
 * the socket's fill ring is empty (the app stopped reading). So ingress hands a port a frame
 * only if both have room, and otherwise drops it before touching any state (the peer resends
 * it, as after a loss on the wire): fewer frames handed over than the app has put on its fill
 * ring (`posted`, written by the app through its mmapped copy of this map: no system call), and
 * fewer than ETRAN_PORT_IN_FLIGHT handed over and not yet out of the veth ring (`taken`, counted
 * here; `arrived`, counted by the app side's XDP program, xsk/xsk_redirect.bpf.c). The RX ring
 * cannot overrun: it holds as many descriptors as the fill ring lends. Each app has a map of its
 * own, so an app that lies about `posted` only starves or floods itself. */
struct etran_port_rx_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	/* Sizes, not types: libbpf cannot size a type in an inner map's definition. */
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct etran_port_rx));
};

/* Port slot → the app's etran_port_rx map (the daemon fills it with the port's). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, ETRAN_APP_PORTS);
	__type(key, __u32);
	__array(values, struct etran_port_rx_map);
} etran_port_budget SEC(".maps");

/* The port's budget counters, or NULL for a slot without any (no frame may go there). */
static __always_inline struct etran_port_rx *port_rx(__u32 slot)
{
	__u32 zero = 0;
	void *inner = bpf_map_lookup_elem(&etran_port_budget, &slot);

	return inner ? bpf_map_lookup_elem(inner, &zero) : NULL;
}

/* Whether the port can take one more frame (see struct etran_port_rx). */
static __always_inline int port_has_room(const struct etran_port_rx *b)
{
	/* Volatile: the app writes these at any time. */
	const volatile struct etran_port_rx *v = b;
	__u64 taken = v->taken;

	/* Signed differences: a frame the kernel side of the port sends itself arrives untaken, so
	 * `arrived` may run ahead of `taken`. */
	return (__s64)(v->posted - taken) > 0 &&
	       (__s64)(taken - v->arrived) < ETRAN_PORT_IN_FLIGHT;
}

/* Counts a frame handed to the port (right before XDP_REDIRECT is returned). */
static __always_inline void port_take(struct etran_port_rx *b)
{
	__sync_fetch_and_add(&b->taken, 1);
}

/* Where egress sends: slot 0 is the NIC (filled by `etran up`). */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} etran_nic SEC(".maps");

#endif
