/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The maps of the TCP object, shared by its ingress, egress and gen programs (the apps' ports
 * or sockets and the NIC slot are the backends': common/backend.h). */
#ifndef ETRAN_TCP_MAPS_H
#define ETRAN_TCP_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "common/backend.h"
#include "tcp/tcp.h"

#define MAX_CONNS 65536

/* Non-zero: egress paces each connection through the packet queue (tcp_pace.h). Set before load
 * by `etran up --pacing auto` (native, with the packet queue in the kernel; off by default). */
const volatile __u32 etran_tcp_pace;

/* Whether this object paces: the setting, on a kernel and backend where it can. */
static __always_inline int pace_on(void)
{
	return etran_tcp_pace && has_packet_queue();
}

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CONNS);
	__type(key, struct tcp_conn_key);
	__type(value, struct tcp_conn);
} etran_tcp_conns SEC(".maps");

/* Connections owing an ACK, in the order they came to owe it: ingress pushes, the ACK generator
 * (etran_tcp_gen) pops. Two queues, so that flushing the ACKs due at once never flushes the
 * delayed ones with them (data from the app would still carry those). A connection is in each at
 * most once (the bits of tcp_conn.ack_queued). */
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, MAX_CONNS);
	__type(value, struct tcp_conn_key);
} etran_tcp_ack_queue SEC(".maps"); /* due at once */

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, MAX_CONNS);
	__type(value, struct tcp_conn_key);
} etran_tcp_dack_queue SEC(".maps"); /* delayed: flushed at the pump's deadline */

/* Native gen on demand: [0] is set (1) by the daemon at the delayed-ACK deadline while it wakes
 * an app's socket (patches/0005); the gen hook (etran_tcp_xsk_gen) then pops the delayed queue
 * once the one of ACKs due at once is empty. 0 otherwise: delayed ACKs wait for the deadline. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} etran_tcp_gen_flush SEC(".maps");

/* Wakes the gen pump: one struct etran_tcp_gen_wake per change of a connection's ack_queued. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} etran_tcp_gen_wake SEC(".maps");

/* Ports etran apps listen on: TCP port (network order) → the owner's port slot. A SYN (without
 * ACK) to one of them goes to the daemon's slow path instead of the kernel. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __be16);
	__type(value, __u32);
} etran_tcp_listen SEC(".maps");

/* Flows the daemon handles itself: handshakes (SYN sent or SYN-ACK sent) and closed
 * connections in TIME_WAIT. Every segment of them goes to the slow path. The value is the
 * owner's port slot (0 in TIME_WAIT). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct tcp_conn_key);
	__type(value, __u32);
} etran_tcp_pending SEC(".maps");

/* Slow-path segments for the daemon: struct etran_tcp_slow_seg records (room for ~590 whole
 * frames: the data of a few handshakes' worth of initial windows). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 * 1024 * 1024);
} etran_tcp_slow SEC(".maps");

#endif
