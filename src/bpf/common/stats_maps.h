/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The counter maps every datapath program writes, and the helpers that count into them.
 *
 * Included by each program object with identical definitions: the loader creates them once (with
 * the entrance) and hands the same maps to the transport objects (libbpf map fd reuse), so a frame
 * is counted in one place whichever program decides its fate.
 */
#ifndef ETRAN_STATS_MAPS_H
#define ETRAN_STATS_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "common/stats.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ETRAN_PROTO_MAX);
	__type(key, __u32); /* enum etran_proto */
	__type(value, struct etran_class_counts);
} etran_traffic SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ETRAN_DROP_REASON_MAX);
	__type(key, __u32); /* enum etran_drop_reason */
	__type(value, struct etran_count);
} etran_drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ETRAN_EVENT_MAX);
	__type(key, __u32); /* enum etran_event */
	__type(value, struct etran_count);
} etran_events SEC(".maps");

static __always_inline void add(struct etran_count *c, __u64 bytes)
{
	c->packets++;
	c->bytes += bytes;
}

/* Counts one frame of `bytes` under `what` (not under a spin lock: it calls a helper). */
static __always_inline void count_event(enum etran_event what, __u64 bytes)
{
	__u32 key = what;
	struct etran_count *c = bpf_map_lookup_elem(&etran_events, &key);

	if (c)
		add(c, bytes);
}

static __always_inline struct etran_class_counts *class_counts(enum etran_proto proto)
{
	__u32 key = proto;

	return bpf_map_lookup_elem(&etran_traffic, &key);
}

static __always_inline int pass(enum etran_proto proto, __u64 bytes)
{
	struct etran_class_counts *c = class_counts(proto);

	if (c)
		add(&c->pass, bytes);
	return XDP_PASS;
}

static __always_inline int drop(enum etran_proto proto, enum etran_drop_reason why, __u64 bytes)
{
	struct etran_class_counts *c = class_counts(proto);
	__u32 reason = why;
	struct etran_count *r = bpf_map_lookup_elem(&etran_drops, &reason);

	if (c)
		add(&c->drop, bytes);
	if (r)
		add(r, bytes);
	return XDP_DROP;
}

/* Counts a frame a transport program hands on (to an app); returns its verdict unchanged. */
static __always_inline int delivered(enum etran_proto proto, __u64 bytes, int verdict)
{
	struct etran_class_counts *c = class_counts(proto);

	if (c)
		add(&c->transport, bytes);
	return verdict;
}

#endif
