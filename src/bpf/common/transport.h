/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The slots of the entrance's program array: which transport program handles a protocol. */
#ifndef ETRAN_TRANSPORT_H
#define ETRAN_TRANSPORT_H

enum etran_transport {
	ETRAN_TRANSPORT_TCP,
	ETRAN_TRANSPORT_HOMA,
	ETRAN_TRANSPORT_MAX,
};

#endif
