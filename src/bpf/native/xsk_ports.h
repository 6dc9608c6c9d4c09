/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The native backend's maps, which every transport object includes (common/backend.h; the
 * loader has Homa's share TCP's): apps' AF_XDP sockets are bound to
 * the NIC itself (copy mode, XDP_RX_ANY_QUEUE, one NIC queue each, patches/0003), so ingress
 * hands an app its frames straight into its socket, and egress (BPF_XSK_EGRESS, linked to the
 * socket by the daemon) learns whose frame it runs on from the socket's queue. */
#ifndef ETRAN_NATIVE_XSK_PORTS_H
#define ETRAN_NATIVE_XSK_PORTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "common/transport.h"

/* App slot → the app's AF_XDP socket on the NIC (the daemon inserts it after binding it). */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, ETRAN_APP_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} etran_app_xsks SEC(".maps");

/* App slot → the NIC queue its socket is bound to, plus one (0: an empty slot). The daemon
 * binds the socket, so the queue an egress program sees (rx_queue_index) is the app's identity:
 * it cannot be forged. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ETRAN_APP_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} etran_port_queue SEC(".maps");

#endif
