/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The slots of the entrance's program array: which transport program handles a protocol. */
#ifndef ETRAN_TRANSPORT_H
#define ETRAN_TRANSPORT_H

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

#endif
