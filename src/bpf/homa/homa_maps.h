/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The maps of the Homa object, shared by its ingress and egress programs (where apps' frames go
 * and come from is the backend's: common/backend.h). */
#ifndef ETRAN_HOMA_MAPS_H
#define ETRAN_HOMA_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "common/backend.h"
#include "homa/homa.h"

/* Homa ports apps bound: port (network order) → struct homa_port. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __be16);
	__type(value, struct homa_port);
} etran_homa_ports SEC(".maps");

/* Peers' Ethernet addresses: IPv4 address → struct homa_peer. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __be32);
	__type(value, struct homa_peer);
} etran_homa_peers SEC(".maps");

/* Every RPC of this host's apps. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct homa_rpc_key);
	__type(value, struct homa_rpc);
} etran_homa_rpcs SEC(".maps");

/* The grant scheduler's state: one entry for the host (homa_sched.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct homa_sched);
} etran_homa_sched SEC(".maps");

/* RPCs a GRANT may be owed to, for gen to pop (homa_gen.h): each key at most once
 * (ETRAN_HOMA_GEN_QUEUED). */
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, ETRAN_HOMA_GEN_QUEUE_LEN);
	__type(value, struct homa_rpc_key);
} etran_homa_genq SEC(".maps");

/* Where ingress wakes the daemon's gen pump (struct etran_homa_gen_wake records, at most one per
 * ETRAN_HOMA_GEN_WAKE_US). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} etran_homa_genw SEC(".maps");

/* The gen path's clock: when the last wake record went. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct homa_gen_state);
} etran_homa_genc SEC(".maps");

/* The grant scheduler's parameters: HomaModule's defaults unless the loader sets others. */
const volatile struct homa_sched_config etran_homa_sched_config = {
	.max_incoming = 400000,
	.max_overcommit = 8,
	.window = 0,
	.fifo_fraction = 50,
	.fifo_increment = 50000,
	.max_sched_priority = 3,
};

/* Homa's pacer (homa_pace.h): the link's rate set by `etran up` when Homa paces (`--pacing
 * auto` on a kernel with the packet queue), else 0 and the pacer's code is dead. */
const volatile struct homa_pace_config etran_homa_pace = {
	.ps_per_byte = 0,
	.max_queue_ns = 2000,
};

/* The link clock of the NIC this object serves: one entry (homa_pace.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct homa_link);
} etran_homa_link SEC(".maps");

/* The cutoffs this host announces: HomaModule's defaults, levels 7, 6, 5 for messages up to
 * 200, 2800 and 15,000 bytes, 4 for any longer (INT_MAX), levels 3 to 0 left to scheduled
 * bytes; version 1. */
const volatile struct homa_cutoffs_config etran_homa_cutoffs = {
	.unsched_cutoffs = { 0x7fffffff, 0, 0, 0, 0x7fffffff, 15000, 2800, 200 },
	.version = 1,
};

/* The app-facing header of each packet type: how long it is (0: not a type etran takes). */
static __always_inline __u32 homa_hdr_len(__u8 type)
{
	switch (type) {
	case HOMA_DATA:
		return sizeof(struct homa_data_hdr);
	case HOMA_GRANT:
		return sizeof(struct homa_grant_hdr);
	case HOMA_RESEND:
		return sizeof(struct homa_resend_hdr);
	case HOMA_CUTOFFS:
		return sizeof(struct homa_cutoffs_hdr);
	case HOMA_ACK:
		return sizeof(struct homa_ack_hdr);
	case HOMA_RPC_UNKNOWN:
	case HOMA_BUSY:
	case HOMA_FREEZE:
	case HOMA_NEED_ACK:
		return sizeof(struct homa_common_hdr);
	default:
		return 0;
	}
}

#endif
