/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* etran's Homa: what the BPF programs and Rust must agree on beyond the wire format
 * (homa_wire.h). The fast-path state layouts join it with the programs. */
#ifndef ETRAN_HOMA_H
#define ETRAN_HOMA_H

#include "homa/homa_wire.h"

/* Limits on Homa traffic (an enum so that they reach BTF, hence Rust). */
enum etran_homa_limit {
	/* The most payload one DATA packet carries: an Ethernet MTU less IPv4 and the DATA
	 * header. Senders cut messages into packets of this size from offset 0, and grants
	 * end on these boundaries, so no packet but a message's last is short. */
	ETRAN_HOMA_MAX_PAYLOAD = 1500 - 20 - 56,
	/* The longest message (64 MiB). HomaModule stops at 1,000,000 bytes; its users ask for
	 * more, and etran carries at least 16 MB. */
	ETRAN_HOMA_MAX_MESSAGE = 1 << 26,
};

_Static_assert(ETRAN_HOMA_MAX_PAYLOAD == 1500 - 20 - sizeof(struct homa_data_hdr), "payload");

/* Carries the layouts no map names into BTF, hence into the Rust skeleton types: see
 * etran_homa_layouts in homa.bpf.c. */
struct etran_homa_layouts {
	struct homa_wire_layouts wire;
	enum etran_homa_limit limit;
};

#endif
