// SPDX-License-Identifier: MIT
/*
 * The native series' gen hook (patches/0002), checked on the patched kernel (run by
 * scripts/native-test inside the qemu guest): on a veth pair of its own (xgen0, xgen1), a
 * native XDP program on xgen0 redirects what arrives to a copy-mode AF_XDP socket; a
 * BPF_XSK_GEN program linked to that socket then runs after each Rx batch and emits frames
 * through xgen0's XDP transmit path, which a packet socket on xgen1 receives. Checked: one run
 * per emitted frame plus the one that says "nothing more", the 64-frame budget per batch, the
 * frames' bytes and context (egress_ifindex, rx_queue_index) as written, nothing after the link
 * closes, one gen link per socket beside an egress link, an unbound socket and a device without
 * an XDP transmit path refused. On demand (patches/0005): a recvfrom on the socket (its Rx
 * wakeup) runs the program once with the same budget, receiving nothing; not without a link,
 * not after it closed, not for a blocking recvfrom (refused).
 *
 *   xsk_gen       prints one "ok ..." line per check; exits 1 at the first failure
 */
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <poll.h>

#include "common.h"

/* The trigger's EtherType and the generated frames' (both local experimental ones). */
#define TRIGGER_TYPE 0x88b5
#define GEN_TYPE 0x88b6

static uint32_t gen_type;
static int gen_map, pkt, ifindex0, ifindex1;
static struct xsk x;

/* Counts the generated frames xgen1 receives until none comes for 300 ms; checks each one's
 * bytes. Returns how many came.
 */
static unsigned int collect(void)
{
	struct pollfd pfd = { .fd = pkt, .events = POLLIN };
	unsigned char buf[2048];
	unsigned int got = 0;

	while (poll(&pfd, 1, 300) == 1) {
		struct sockaddr_ll from;
		socklen_t len = sizeof(from);
		ssize_t n = recvfrom(pkt, buf, sizeof(buf), 0, (struct sockaddr *)&from, &len);
		uint32_t dev, queue;

		if (n < 0)
			fail("recvfrom");
		if (from.sll_pkttype == PACKET_OUTGOING || n < 14 ||
		    buf[12] != GEN_TYPE >> 8 || buf[13] != (GEN_TYPE & 0xff))
			continue;
		memcpy(&dev, buf + 16, 4);
		memcpy(&queue, buf + 20, 4);
		if (n != 60 || buf[14] != 'G' || dev != (uint32_t)ifindex0 || queue) {
			printf("FAIL a generated frame: %zd bytes, marker %c, device %u, queue %u\n",
			       n, buf[14], dev, queue);
			exit(1);
		}
		got++;
	}
	return got;
}

/* Sends a trigger frame from xgen1 (it arrives on xgen0, where it is redirected to the socket);
 * returns how many generated frames came (collect).
 */
static unsigned int trigger(void)
{
	unsigned char frame[60] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1,
				    TRIGGER_TYPE >> 8, TRIGGER_TYPE & 0xff };
	struct sockaddr_ll to = { .sll_family = AF_PACKET, .sll_ifindex = ifindex1,
				  .sll_halen = ETH_ALEN };

	if (sendto(pkt, frame, sizeof(frame), 0, (struct sockaddr *)&to, sizeof(to)) < 0)
		fail("send the trigger frame");
	return collect();
}

/* Checks SENT frames came and the program ran RUNS times since RUNS_BEFORE (WHAT, for the
 * report), with GOT frames collected.
 */
static void expect(const char *what, unsigned int got, unsigned int sent, uint64_t runs_before,
		   uint64_t runs)
{
	if (got != sent || counter(gen_map, 0) - runs_before != runs) {
		printf("FAIL %s: %u frames came, want %u; %llu runs, want %llu\n", what, got, sent,
		       (unsigned long long)(counter(gen_map, 0) - runs_before),
		       (unsigned long long)runs);
		exit(1);
	}
	printf("ok %s: %u frames, %llu runs\n", what, got, (unsigned long long)runs);
}

/* On demand (patches/0005): with LEFT frames for the program to send, one recvfrom on the
 * socket (the Rx wakeup, no frame received); checks that SENT frames came, that the program ran
 * RUNS times and that the socket received nothing.
 */
static void wakeup(const char *what, uint64_t left, unsigned int sent, uint64_t runs)
{
	uint64_t runs_before = counter(gen_map, 0), rx_before = *x.rx.producer;

	set_counter(gen_map, 1, left);
	if (recvfrom(x.fd, NULL, 0, MSG_DONTWAIT, NULL, NULL) < 0)
		fail("recvfrom on the socket (the Rx wakeup)");
	if (*x.rx.producer != rx_before)
		fail("the Rx wakeup received nothing");
	expect(what, collect(), sent, runs_before, runs);
}

/* Triggers one Rx batch with LEFT frames for the program to send; checks that SENT frames came
 * and that the program ran RUNS times in that batch.
 */
static void batch(const char *what, uint64_t left, unsigned int sent, uint64_t runs)
{
	uint64_t runs_before = counter(gen_map, 0), rx_before = *x.rx.producer;
	unsigned int got;

	set_counter(gen_map, 1, left);
	got = trigger();
	if (*x.rx.producer != rx_before + 1) {
		printf("FAIL %s: the socket received %llu frames, want 1\n", what,
		       (unsigned long long)(*x.rx.producer - rx_before));
		exit(1);
	}
	*x.rx.consumer = *x.rx.producer;
	expect(what, got, sent, runs_before, runs);
}

int main(void)
{
	const struct bpf_insn pass[] = {
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, XDP_PASS),
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
	};
	/* Trigger frames: bpf_redirect_map(xskmap, rx_queue_index, XDP_PASS); the rest (the
	 * stack's own, if any): XDP_PASS, so that only triggers start the gen program.
	 */
	struct bpf_insn redirect[] = {
		INSN(BPF_LDX | BPF_MEM | BPF_W, 2, 1, CTX(data), 0),
		INSN(BPF_LDX | BPF_MEM | BPF_W, 3, 1, CTX(data_end), 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 4, 2, 0, 0),
		INSN(BPF_ALU64 | BPF_ADD | BPF_K, 4, 0, 0, 14),
		INSN(BPF_JMP | BPF_JGT | BPF_X, 4, 3, 8, 0),			/* -> pass */
		INSN(BPF_LDX | BPF_MEM | BPF_H, 4, 2, 12, 0),
		INSN(BPF_JMP | BPF_JNE | BPF_K, 4, 0, 6, htons(TRIGGER_TYPE)),	/* -> pass */
		INSN(BPF_LDX | BPF_MEM | BPF_W, 2, 1, CTX(rx_queue_index), 0),
		INSN(BPF_LD | BPF_IMM | BPF_DW, 1, BPF_PSEUDO_MAP_FD, 0, 0),	/* 8: the XSKMAP */
		INSN(0, 0, 0, 0, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 3, 0, 0, XDP_PASS),
		INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_redirect_map),
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
		/* pass: */
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, XDP_PASS),
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
	};
	/* Counts its runs in gen_map[0]; while gen_map[1] (frames left) is not 0, decrements it,
	 * trims the frame to 60 bytes and writes a broadcast frame of GEN_TYPE with 'G',
	 * egress_ifindex and rx_queue_index as payload: XDP_TX. Otherwise XDP_DROP.
	 */
	struct bpf_insn gen[] = {
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0),			/* r6 = ctx */
		INSN(BPF_ST | BPF_MEM | BPF_W, 10, 0, -4, 0),			/* key 0 */
		INSN(BPF_LD | BPF_IMM | BPF_DW, 1, BPF_PSEUDO_MAP_FD, 0, 0),	/* 2: gen_map */
		INSN(0, 0, 0, 0, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 2, 10, 0, 0),
		INSN(BPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, -4),
		INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem),
		INSN(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 35, 0),			/* -> drop */
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 1, 0, 0, 1),
		INSN(BPF_STX | BPF_ATOMIC | BPF_DW, 0, 1, 0, BPF_ADD),		/* runs++ */
		INSN(BPF_ST | BPF_MEM | BPF_W, 10, 0, -4, 1),			/* key 1 */
		INSN(BPF_LD | BPF_IMM | BPF_DW, 1, BPF_PSEUDO_MAP_FD, 0, 0),	/* 11: gen_map */
		INSN(0, 0, 0, 0, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 2, 10, 0, 0),
		INSN(BPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, -4),
		INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem),
		INSN(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 26, 0),			/* -> drop */
		INSN(BPF_LDX | BPF_MEM | BPF_DW, 7, 0, 0, 0),
		INSN(BPF_JMP | BPF_JEQ | BPF_K, 7, 0, 24, 0),			/* -> drop */
		INSN(BPF_ALU64 | BPF_SUB | BPF_K, 7, 0, 0, 1),
		INSN(BPF_STX | BPF_MEM | BPF_DW, 0, 7, 0, 0),			/* left-- */
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 2, 0, 0, 60 - 256),
		INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_xdp_adjust_tail),
		INSN(BPF_JMP | BPF_JNE | BPF_K, 0, 0, 20, 0),			/* -> abort */
		INSN(BPF_LDX | BPF_MEM | BPF_W, 2, 6, CTX(data), 0),
		INSN(BPF_LDX | BPF_MEM | BPF_W, 3, 6, CTX(data_end), 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 4, 2, 0, 0),
		INSN(BPF_ALU64 | BPF_ADD | BPF_K, 4, 0, 0, 24),
		INSN(BPF_JMP | BPF_JGT | BPF_X, 4, 3, 15, 0),			/* -> abort */
		INSN(BPF_ST | BPF_MEM | BPF_W, 2, 0, 0, -1),			/* ff:ff:ff:ff */
		INSN(BPF_ST | BPF_MEM | BPF_H, 2, 0, 4, 0xffff),		/* ff:ff */
		INSN(BPF_ST | BPF_MEM | BPF_B, 2, 0, 6, 0x02),			/* 02:00:... */
		INSN(BPF_ST | BPF_MEM | BPF_B, 2, 0, 11, 0x02),			/* ...:02 */
		INSN(BPF_ST | BPF_MEM | BPF_B, 2, 0, 12, GEN_TYPE >> 8),
		INSN(BPF_ST | BPF_MEM | BPF_B, 2, 0, 13, GEN_TYPE & 0xff),
		INSN(BPF_ST | BPF_MEM | BPF_B, 2, 0, 14, 'G'),
		INSN(BPF_LDX | BPF_MEM | BPF_W, 5, 6, CTX(egress_ifindex), 0),
		INSN(BPF_STX | BPF_MEM | BPF_W, 2, 5, 16, 0),
		INSN(BPF_LDX | BPF_MEM | BPF_W, 5, 6, CTX(rx_queue_index), 0),
		INSN(BPF_STX | BPF_MEM | BPF_W, 2, 5, 20, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, XDP_TX),
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
		/* drop: */
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, XDP_DROP),
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
		/* abort: */
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, XDP_ABORTED),
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
	};
	uint32_t egress_type;
	int xskmap, p_pass, p_redirect, p_gen, p_egress, link, egress_link, lo_index;
	struct xsk unbound, on_lo;

	gen_type = btf_enum_value("BPF_XSK_GEN");
	egress_type = btf_enum_value("BPF_XSK_EGRESS");
	veth_pair("xgen0", "xgen1");
	ifindex0 = if_nametoindex("xgen0");
	ifindex1 = if_nametoindex("xgen1");
	lo_index = if_nametoindex("lo");
	if (!ifindex0 || !ifindex1 || !lo_index)
		fail("if_nametoindex");
	ok("veth pair xgen0/xgen1 up");

	/* The socket on xgen0's queue 0, with buffers on its fill ring, in the XSKMAP. */
	x = xsk_open(ifindex0, XDP_COPY, 1, 0);
	for (uint32_t i = 0; i < NDESC; i++)
		((uint64_t *)x.fill.descs)[i] = (uint64_t)i * FRAME;
	__atomic_store_n(x.fill.producer, NDESC, __ATOMIC_RELEASE);
	xskmap = xskmap_new(1);
	xskmap_put(xskmap, 0, x.fd);

	/* Native XDP on both ends: xgen0 redirects to the socket; xgen1 needs a program to
	 * receive what xgen0's XDP transmit path sends it.
	 */
	redirect[8].imm = xskmap;
	p_redirect = load(redirect, sizeof(redirect) / sizeof(redirect[0]), BPF_XDP);
	p_pass = load(pass, sizeof(pass) / sizeof(pass[0]), BPF_XDP);
	if (link_create(p_redirect, ifindex0, BPF_XDP, XDP_FLAGS_DRV_MODE) < 0 ||
	    link_create(p_pass, ifindex1, BPF_XDP, XDP_FLAGS_DRV_MODE) < 0)
		fail("attach native XDP programs to the veth pair");
	pkt = packet_socket(ifindex1, "xgen1");

	gen_map = counters(2);
	gen[2].imm = gen_map;
	gen[11].imm = gen_map;
	p_gen = load(gen, sizeof(gen) / sizeof(gen[0]), gen_type);
	ok("gen program loads (frame writes, bpf_xdp_adjust_tail, egress_ifindex, a map)");

	batch("no gen link: nothing generated", 3, 0, 0);
	wakeup("no gen link: the Rx wakeup generates nothing", 3, 0, 0);
	link = link_create(p_gen, x.fd, gen_type, 0);
	if (link < 0)
		fail("BPF_LINK_CREATE (gen)");
	batch("three frames to send", 3, 3, 4);
	batch("nothing to send", 0, 0, 1);
	batch("more than the budget", 100, 64, 64);
	if (counter(gen_map, 1) != 36) {
		printf("FAIL the budget: %llu frames left, want 36\n",
		       (unsigned long long)counter(gen_map, 1));
		return 1;
	}
	ok("the budget: 36 frames left for the next batch");

	if (link_create(p_gen, x.fd, gen_type, 0) >= 0 || errno != EBUSY)
		fail("a second gen link on the socket is refused with EBUSY");
	ok("a second gen link on the socket is refused (EBUSY)");
	p_egress = load(pass, sizeof(pass) / sizeof(pass[0]), egress_type);
	egress_link = link_create(p_egress, x.fd, egress_type, 0);
	if (egress_link < 0)
		fail("an egress link beside the gen link");
	batch("with an egress link beside it", 2, 2, 3);
	close(egress_link);
	batch("after the egress link closed", 1, 1, 2);

	/* On demand: the Rx wakeup runs the program once, with the budget of an Rx batch. */
	wakeup("on demand: three frames to send", 3, 3, 4);
	wakeup("on demand: nothing to send", 0, 0, 1);
	wakeup("on demand: more than the budget", 100, 64, 64);
	wakeup("on demand: the rest on the next wakeup", 36, 36, 37);
	{
		uint64_t runs_before = counter(gen_map, 0);

		set_counter(gen_map, 1, 2);
		if (recvfrom(x.fd, NULL, 0, 0, NULL, NULL) >= 0 || errno != EOPNOTSUPP)
			fail("a blocking recvfrom is refused with EOPNOTSUPP");
		expect("a blocking recvfrom (refused) runs nothing", collect(), 0, runs_before, 0);
	}
	batch("an Rx batch after on-demand runs", 2, 2, 3);

	close(link);
	batch("gen link closed: nothing generated", 5, 0, 0);
	wakeup("gen link closed: the Rx wakeup generates nothing", 5, 0, 0);

	unbound = xsk_open(0, 0, 1, 0);
	if (link_create(p_gen, unbound.fd, gen_type, 0) >= 0 || errno != ENXIO)
		fail("a gen link on an unbound socket is refused with ENXIO");
	ok("a gen link on an unbound socket is refused (ENXIO)");
	on_lo = xsk_open(lo_index, XDP_COPY, 1, 0);
	if (link_create(p_gen, on_lo.fd, gen_type, 0) >= 0 || errno != EOPNOTSUPP)
		fail("a gen link on a device without ndo_xdp_xmit (lo) is refused with EOPNOTSUPP");
	ok("a gen link on a device without an XDP transmit path (lo) is refused (EOPNOTSUPP)");
	printf("xsk_gen: all checks passed\n");
	return 0;
}
