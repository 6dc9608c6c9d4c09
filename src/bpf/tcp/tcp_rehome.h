/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Moving a connection between apps (a forked child adopting one its parent accepted): the
 * daemon runs etran_tcp_rehome with BPF_PROG_RUN over a struct etran_tcp_rehome, which changes
 * the connection's owner under its lock (a map update from user space would overwrite what
 * ingress changes meanwhile) and reads back where the stream stands.
 *
 * A move is two runs. The first sets ETRAN_TCP_OWNER_MOVING: ingress and egress, which check the
 * owner again under the lock, drop the connection's segments (`tcp_moving`) while the old owner
 * hands its stream over; the peer's retransmissions, and the new owner's, bring them again. It
 * also drops the out-of-order intervals held (a renege, RFC 2018 8: the peer resends them), since
 * frames of them still on their way to the old owner would be missing from what it hands over.
 * The second run sets the new owner's slot and reports the positions it resumes from. */
#ifndef ETRAN_TCP_REHOME_H
#define ETRAN_TCP_REHOME_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "tcp/tcp.h"
#include "tcp/tcp_cc.h"
#include "tcp/tcp_maps.h"
#include "tcp/tcp_seq.h"

/* The rehome program's body; see tcp.bpf.c. XDP_TX hands the filled request back (the test
 * run's data_out); a frame too short to be a request is dropped. */
static __always_inline int tcp_rehome(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct etran_tcp_rehome *r = data, req;
	struct tcp_conn *c;

	if ((void *)(r + 1) > data_end)
		return XDP_DROP;
	req = *r;
	req.found = 0;
	c = bpf_map_lookup_elem(&etran_tcp_conns, &req.key);
	if (c) {
		req.found = 1;
		bpf_spin_lock(&c->lock);
		c->owner_port = req.owner;
		if (req.owner == ETRAN_TCP_OWNER_MOVING) {
			c->ooo_n = 0;
			c->ooo_fresh = 0;
			c->fin &= ~TCP_CONN_FIN_HELD; /* it lay beyond the intervals */
			c->dsack.start = c->dsack.end;
		}
		req.rx_pos = c->rx_pos;
		req.tx_pos = c->tx_pos;
		req.una_pos = una_pos(c);
		req.send_wnd = cc_send_wnd(c);
		req.rcv_wnd = c->rcv_wnd;
		req.fin = c->fin;
		bpf_spin_unlock(&c->lock);
	}
	*r = req;
	return XDP_TX;
}

#endif
