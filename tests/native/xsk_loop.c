// SPDX-License-Identifier: MIT
/*
 * The native series' loopback verdict (patches/0010), checked on the patched kernel (run by
 * scripts/native-test inside the qemu guest) on a veth pair of its own with two queues (xloop0,
 * xloop1): an egress program that redirects a frame with bpf_redirect_map() on an XSKMAP hands
 * it to that socket, bound to the same device (queue 1, XDP_RX_ANY_QUEUE), as the program left
 * it, instead of sending it; the sender's descriptor completes at once, once. Frames the program
 * passes still leave the device; a receiver without a free buffer drops the frame, counted in its
 * statistics, and the sender's descriptor still completes; a redirect to an empty slot drops it.
 *
 *   xsk_loop        prints one "ok ..." line per check; exits 1 at the first failure
 */
#include "common.h"

#ifndef XDP_RX_ANY_QUEUE
#define XDP_RX_ANY_QUEUE (1 << 5)
#endif

static const char *ifname = "xloop0";
static struct xsk tx, rx;
static uint32_t sent, done;

/* Sends one 60-byte frame per character of KINDS ('L': loop back to slot 0, 'E': to the empty
 * slot 1, anything else: pass), byte 15 numbering it; waits until each completes, in order.
 */
static void send_frames(const char *kinds)
{
	uint32_t n = strlen(kinds);

	for (uint32_t i = 0; i < n; i++, sent++) {
		unsigned char frame[60] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1,
					    0x88, 0xb5, (unsigned char)kinds[i], (unsigned char)sent };
		struct xdp_desc *d = (struct xdp_desc *)tx.tx.descs + (sent % NDESC);

		memcpy(tx.umem + (sent % NDESC) * FRAME, frame, sizeof(frame));
		d->addr = (sent % NDESC) * FRAME;
		d->len = sizeof(frame);
		d->options = 0;
	}
	__atomic_store_n(tx.tx.producer, sent, __ATOMIC_RELEASE);
	for (int i = 0; i < 1000 && __atomic_load_n(tx.cq.producer, __ATOMIC_ACQUIRE) != sent; i++) {
		xsk_kick(tx.fd);
		usleep(1000);
	}
	expect_eq("every descriptor sent completes", __atomic_load_n(tx.cq.producer,
							       __ATOMIC_ACQUIRE) - done, n);
	for (; done != sent; done++)
		if (((uint64_t *)tx.cq.descs)[done % NDESC] != (done % NDESC) * FRAME)
			fail("a completion out of order");
	__atomic_store_n(tx.cq.consumer, done, __ATOMIC_RELEASE);
}

/* The frames on the receiver's Rx ring since the last call: checks each is a looped frame as
 * sent (kind 'L'), in the order sent (their numbers increase), and gives its buffer back to the
 * fill ring.
 */
static uint32_t received(void)
{
	uint32_t cons = *rx.rx.consumer, prod = __atomic_load_n(rx.rx.producer, __ATOMIC_ACQUIRE);
	uint32_t fill = *rx.fill.producer, n = 0;
	int prev = -1;

	for (; cons != prod; cons++, n++) {
		struct xdp_desc *d = (struct xdp_desc *)rx.rx.descs + (cons % NDESC);
		unsigned char *f = (unsigned char *)rx.umem + d->addr;

		if (d->len != 60 || f[12] != 0x88 || f[13] != 0xb5 || f[14] != 'L')
			fail("a frame on the receiver that was not looped back as sent");
		if (f[15] <= prev)
			fail("looped frames out of order");
		prev = f[15];
		((uint64_t *)rx.fill.descs)[fill++ % NDESC] = d->addr & ~(uint64_t)(FRAME - 1);
	}
	__atomic_store_n(rx.rx.consumer, cons, __ATOMIC_RELEASE);
	__atomic_store_n(rx.fill.producer, fill, __ATOMIC_RELEASE);
	return n;
}

/* The receiver's drop count (XDP_STATISTICS). */
static uint64_t rx_dropped(void)
{
	struct xdp_statistics st;
	socklen_t len = sizeof(st);

	if (getsockopt(rx.fd, SOL_XDP, XDP_STATISTICS, &st, &len))
		fail("XDP_STATISTICS");
	return st.rx_dropped;
}

int main(void)
{
	/* Frames whose byte 14 is 'L' (or 'E') go to slot 0 (or 1) of the XSKMAP; others pass. */
	struct bpf_insn loop[] = {
		INSN(BPF_LDX | BPF_MEM | BPF_W, 2, 1, CTX(data), 0),
		INSN(BPF_LDX | BPF_MEM | BPF_W, 3, 1, CTX(data_end), 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 4, 2, 0, 0),
		INSN(BPF_ALU64 | BPF_ADD | BPF_K, 4, 0, 0, 15),
		INSN(BPF_JMP | BPF_JGT | BPF_X, 4, 3, 10, 0),		/* short: pass */
		INSN(BPF_LDX | BPF_MEM | BPF_B, 5, 2, 14, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 2, 0, 0, 0),		/* r2 = slot 0 */
		INSN(BPF_JMP | BPF_JEQ | BPF_K, 5, 0, 2, 'L'),
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 2, 0, 0, 1),		/* r2 = slot 1 */
		INSN(BPF_JMP | BPF_JNE | BPF_K, 5, 0, 5, 'E'),
		INSN(BPF_LD | BPF_IMM | BPF_DW, 1, BPF_PSEUDO_MAP_FD, 0, 0), /* imm: the XSKMAP */
		INSN(0, 0, 0, 0, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 3, 0, 0, 0),		/* flags: abort on a miss */
		INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_redirect_map),
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, XDP_PASS),	/* pass */
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
	};
	uint32_t attach_type;
	unsigned long before;
	uint64_t dropped;
	int ifindex, map, prog, link;

	veth_pair_queues(ifname, "xloop1", 2);
	ifindex = ifindex_of(ifname);
	attach_type = btf_enum_value("BPF_XSK_EGRESS");
	map = xskmap_new(2);
	loop[10].imm = map;
	prog = load(loop, sizeof(loop) / sizeof(loop[0]), attach_type);
	ok("an egress program redirecting to an XSKMAP loads");

	tx = xsk_open_queue(ifindex, 0, XDP_COPY, 0, 1);
	rx = xsk_open_queue(ifindex, 1, XDP_COPY | XDP_RX_ANY_QUEUE, 1, 0);
	for (uint32_t i = 0; i < NDESC; i++)
		((uint64_t *)rx.fill.descs)[i] = (uint64_t)i * FRAME;
	__atomic_store_n(rx.fill.producer, NDESC, __ATOMIC_RELEASE);
	xskmap_put(map, 0, rx.fd);
	link = link_create(prog, tx.fd, attach_type, 0);
	if (link < 0)
		fail("BPF_LINK_CREATE");

	before = tx_packets(ifname);
	send_frames("LLPLPL");
	expect_eq("looped frames reach the receiver as sent, in order", received(), 4);
	expect_eq("only the passed frames leave the device", tx_packets(ifname) - before, 2);

	/* Twice the receiver's buffers: the ones beyond its fill ring are dropped and counted. */
	before = tx_packets(ifname);
	dropped = rx_dropped();
	for (int i = 0; i < 4; i++) {
		char kinds[NDESC / 2 + 1];

		memset(kinds, 'L', NDESC / 2);
		kinds[NDESC / 2] = 0;
		send_frames(kinds);
	}
	expect_eq("a receiver without buffers: the frames it has room for arrive", received(),
		  NDESC);
	expect_eq("the others are dropped, counted in its statistics", rx_dropped() - dropped,
		  NDESC);
	expect_eq("and none leaves the device", tx_packets(ifname) - before, 0);

	before = tx_packets(ifname);
	send_frames("EP");
	expect_eq("a redirect to an empty slot sends nothing (of it and a passed frame, frames out)",
		  tx_packets(ifname) - before, 1);
	expect_eq("and reaches no socket", received(), 0);

	close(link);
	xsk_close(&tx);
	xsk_close(&rx);
	printf("xsk_loop: all checks passed\n");
	return 0;
}
