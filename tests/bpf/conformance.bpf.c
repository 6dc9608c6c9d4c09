// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test-only (never embedded in etran): the fast path's arithmetic that Rust also carries
 * (tcp_seq.h's serial comparisons, window scale and flight, tcp_tx.h's window field and its
 * window-update rule; tcp_pace.h's pacing and homa_link.h's link clock, which the test
 * models), run on
 * inputs from the test with BPF_PROG_TEST_RUN. tests/fixtures/conformance.rs runs the Rust
 * helpers on the same inputs and asserts equal results. The frame holds one struct
 * conformance_in; the program overwrites its head with a struct conformance_out. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "homa/homa_link.h"
#include "tcp/tcp.h"
#include "tcp/tcp_pace.h"
#include "tcp/tcp_seq.h"
#include "tcp/tcp_tx.h"

enum conformance_op {
	CONFORMANCE_BEFORE = 1, /* value = before(a, b) */
	CONFORMANCE_AFTER,      /* value = after(a, b) */
	CONFORMANCE_WSCALE,     /* value = wscale(a) */
	CONFORMANCE_FLIGHT,     /* value = flight_bytes(&conn) */
	CONFORMANCE_UNA_POS,    /* value = una_pos(&conn) */
	CONFORMANCE_WINDOW,     /* value = tx_window(&conn); rcv_adv, rcv_shrinks after it */
	CONFORMANCE_WINDOW_UPDATE_DUE, /* value = tx_window_update_due(&conn) */
	CONFORMANCE_PACE_DELAY,   /* wide = pace_delay_ns(&conn, a) */
	CONFORMANCE_PACE_RELEASE, /* wide = pace_release(&conn, now, a, b, &value); conn after it */
	CONFORMANCE_RTT_SENT,     /* pace_rtt_sent(&conn, now, a, b); conn after it */
	CONFORMANCE_RTT_ACKED,    /* pace_rtt_acked(&conn, now); conn after it */
};

struct conformance_in {
	__u32 op; /* enum conformance_op */
	__u32 a;
	__u32 b;
	__u32 reserved;
	__u64 now;
	struct tcp_conn conn;
};

/* As long as conformance_in: the program writes it over the frame. */
struct conformance_out {
	__u32 value;
	__u32 rcv_adv;
	__u32 rcv_shrinks;
	__u32 reserved;
	__u64 wide;
	struct tcp_conn conn;
};

/* Homa's link clock (homa_link.h): the frame holds one; the program writes `at` and the clock
 * after the frame in place. */
struct conformance_link {
	__u64 idle; /* in: the clock; out: the clock after */
	__u64 now;
	__u64 at;   /* out: the release time */
	__u32 bytes;
	__u32 urgent;
	struct homa_pace_config cfg;
};

struct conformance_layouts {
	struct conformance_in in;
	struct conformance_out out;
	enum conformance_op op;
	struct conformance_link link;
};

/* Never read: declared so that the layouts reach BTF, hence the skeleton's Rust types. */
const volatile struct conformance_layouts conformance_layouts;

SEC("xdp")
int conformance(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct conformance_out *out = data;
	struct conformance_in in;
	__u32 value = 0;
	__u64 wide = 0;
	int queue = 0;

	_Static_assert(sizeof(struct conformance_out) == sizeof(struct conformance_in), "lengths");
	if (data + sizeof(in) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(&in, data, sizeof(in));
	switch (in.op) {
	case CONFORMANCE_BEFORE:
		value = before(in.a, in.b);
		break;
	case CONFORMANCE_AFTER:
		value = after(in.a, in.b);
		break;
	case CONFORMANCE_WSCALE:
		value = wscale(in.a);
		break;
	case CONFORMANCE_FLIGHT:
		value = flight_bytes(&in.conn);
		break;
	case CONFORMANCE_UNA_POS:
		value = una_pos(&in.conn);
		break;
	case CONFORMANCE_WINDOW:
		value = tx_window(&in.conn);
		break;
	case CONFORMANCE_WINDOW_UPDATE_DUE:
		value = tx_window_update_due(&in.conn);
		break;
	case CONFORMANCE_PACE_DELAY:
		wide = pace_delay_ns(&in.conn, in.a);
		break;
	case CONFORMANCE_PACE_RELEASE:
		wide = pace_release(&in.conn, in.now, in.a, in.b, &queue);
		value = queue;
		break;
	case CONFORMANCE_RTT_SENT:
		pace_rtt_sent(&in.conn, in.now, in.a, in.b);
		break;
	case CONFORMANCE_RTT_ACKED:
		pace_rtt_acked(&in.conn, in.now);
		break;
	default:
		return XDP_ABORTED;
	}
	out->value = value;
	out->rcv_adv = in.conn.rcv_adv;
	out->rcv_shrinks = in.conn.rcv_shrinks;
	out->reserved = 0;
	out->wide = wide;
	__builtin_memcpy(&out->conn, &in.conn, sizeof(in.conn));
	return XDP_PASS;
}

SEC("xdp")
int conformance_link(struct xdp_md *ctx)
{
	struct conformance_link *l = (void *)(long)ctx->data;
	struct homa_pace_config cfg;
	__u64 idle;

	if ((void *)(l + 1) > (void *)(long)ctx->data_end)
		return XDP_ABORTED;
	cfg = l->cfg;
	idle = l->idle;
	l->at = homa_pace_release(&idle, l->now, l->bytes, l->urgent, &cfg);
	l->idle = idle;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
