/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The slots of the entrance's program array: which transport program handles a protocol. */
#ifndef ETRAN_TRANSPORT_H
#define ETRAN_TRANSPORT_H

#include <linux/types.h>

enum etran_transport {
	ETRAN_TRANSPORT_TCP,
	ETRAN_TRANSPORT_HOMA,
	ETRAN_TRANSPORT_MAX,
};

/* App ports (compat backend), shared by every transport: slots of etran_app_ports and
 * etran_port_ifindex (compat/app_ports.h). Slot 0 is never given out. (An enum so that it reaches BTF, hence Rust.) */
enum etran_app_port_limit {
	ETRAN_APP_PORTS = 64,
};

/* Frames handed to an app port and not yet out of its veth ring, at most (compat/app_ports.h):
 * below the ring's 256 frames, less one per CPU that may pass the check at once. */
enum etran_port_rx_limit {
	ETRAN_PORT_IN_FLIGHT = 224,
};

/* An app port's receive budget, a map of its own (see compat/app_ports.h). */
struct etran_port_rx {
	__u64 posted;  /* app: descriptors put on the fill ring, ever */
	__u8 pad[56];  /* the kernel's counters on a cache line of their own: app and kernel write apart */
	__u64 taken;   /* ingress: frames handed to the port, ever */
	__u64 arrived; /* the port's app-side XDP program: frames out of the veth ring, ever */
};


#endif
