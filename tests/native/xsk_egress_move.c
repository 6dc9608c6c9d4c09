// SPDX-License-Identifier: MIT
/*
 * The native series' egress program moving the frame within its UMEM chunk (patches/0004),
 * checked on the patched kernel (run by scripts/native-test inside the qemu guest) on a veth pair
 * of its own (xmov0, xmov1): a copy-mode AF_XDP socket on xmov0 sends frames placed 256 bytes
 * into their chunks; its BPF_XSK_EGRESS program grows each by 16 bytes in front
 * (bpf_xdp_adjust_head, as a transport replacing the app's header with the packet's would),
 * writes a new Ethernet header there and trims 8 bytes off the tail (bpf_xdp_adjust_tail); a
 * packet socket on xmov1 receives what was sent. Checked: the moved frame is what leaves; the
 * completion returns the address the app gave; a descriptor held back by a full completion ring
 * is not run through the program again (it would move twice); a move past the chunk's start is
 * refused by the helper, and the frame dropped.
 *
 *   xsk_egress_move   prints one "ok ..." line per check; exits 1 at the first failure
 */
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <poll.h>

#include "common.h"

/* Where the app puts each frame in its chunk, the app's frame length, the program's move. */
#define OFFSET 256
#define LEN 60
#define GROW 16
#define TRIM 8
#define APP_TYPE 0x88b5
#define MOVED_TYPE 0x88b6

static struct xsk x;
static int pkt, runs;
static uint32_t next, completed;

/* Puts frames NEXT.. (N of them) on the Tx ring, each in chunk (its number % NDESC) at OFFSET:
 * broadcast, APP_TYPE, its number at byte 14.
 */
static void put(uint32_t n)
{
	for (uint32_t i = 0; i < n; i++, next++) {
		unsigned char frame[LEN] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1,
					     APP_TYPE >> 8, APP_TYPE & 0xff };
		struct xdp_desc *d = (struct xdp_desc *)x.tx.descs + next % NDESC;
		uint64_t addr = (uint64_t)(next % NDESC) * FRAME + OFFSET;

		memcpy(frame + 14, &next, 4);
		memcpy(x.umem + addr, frame, sizeof(frame));
		d->addr = addr;
		d->len = sizeof(frame);
		d->options = 0;
	}
	__atomic_store_n(x.tx.producer, next, __ATOMIC_RELEASE);
}

/* Kicks the socket until the completion ring's producer reaches WANT (or stops moving);
 * returns where it got.
 */
static uint32_t kick(uint32_t want)
{
	uint32_t prod = 0;

	for (int i = 0; i < 200; i++) {
		xsk_kick(x.fd);
		usleep(1000);
		prod = __atomic_load_n(x.cq.producer, __ATOMIC_ACQUIRE);
		if (prod == want)
			break;
	}
	return prod;
}

/* Takes the completions up to the producer; each returns the address the app gave. */
static void take_completions(void)
{
	uint32_t prod = __atomic_load_n(x.cq.producer, __ATOMIC_ACQUIRE);

	for (; completed != prod; completed++) {
		uint64_t addr = ((uint64_t *)x.cq.descs)[completed % NDESC];

		if (addr != (uint64_t)(completed % NDESC) * FRAME + OFFSET) {
			printf("FAIL completion %u returned address %llu, want %llu\n", completed,
			       (unsigned long long)addr,
			       (unsigned long long)(completed % NDESC) * FRAME + OFFSET);
			exit(1);
		}
	}
	__atomic_store_n(x.cq.consumer, completed, __ATOMIC_RELEASE);
}

/* Receives what xmov1 got until none comes for 300 ms; checks that the frames are FIRST..
 * in order, each moved once; returns how many came.
 */
static uint32_t receive(uint32_t first)
{
	struct pollfd pfd = { .fd = pkt, .events = POLLIN };
	unsigned char buf[2048];
	uint32_t got = 0;

	while (poll(&pfd, 1, 300) == 1) {
		ssize_t n = recv(pkt, buf, sizeof(buf), 0);
		uint32_t num;

		if (n < 0)
			fail("recv");
		if (n < 14 || buf[12] != MOVED_TYPE >> 8 || buf[13] != (MOVED_TYPE & 0xff))
			continue;
		memcpy(&num, buf + GROW + 14, 4);
		if (n != LEN + GROW - TRIM || buf[14] != 'M' || buf[15] != 'V' ||
		    buf[GROW + 12] != APP_TYPE >> 8 || num != first + got) {
			printf("FAIL a sent frame: %zd bytes (want %d), marker %c%c, app's type "
			       "%02x%02x, number %u (want %u)\n", n, LEN + GROW - TRIM, buf[14],
			       buf[15], buf[GROW + 12], buf[GROW + 13], num, first + got);
			exit(1);
		}
		got++;
	}
	return got;
}

int main(void)
{
	/* Counts its runs in map[0]; grows the frame by map[1] bytes in front (XDP_ABORTED when
	 * the helper refuses), writes broadcast, MOVED_TYPE, "MV" there, trims TRIM bytes off the
	 * tail: XDP_PASS.
	 */
	struct bpf_insn move[] = {
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0),			/* r6 = ctx */
		INSN(BPF_ST | BPF_MEM | BPF_W, 10, 0, -4, 0),			/* key 0 */
		INSN(BPF_LD | BPF_IMM | BPF_DW, 1, BPF_PSEUDO_MAP_FD, 0, 0),	/* 2: the map */
		INSN(0, 0, 0, 0, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 2, 10, 0, 0),
		INSN(BPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, -4),
		INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem),
		INSN(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 32, 0),			/* -> abort */
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 1, 0, 0, 1),
		INSN(BPF_STX | BPF_ATOMIC | BPF_DW, 0, 1, 0, BPF_ADD),		/* runs++ */
		INSN(BPF_ST | BPF_MEM | BPF_W, 10, 0, -4, 1),			/* key 1 */
		INSN(BPF_LD | BPF_IMM | BPF_DW, 1, BPF_PSEUDO_MAP_FD, 0, 0),	/* 11: the map */
		INSN(0, 0, 0, 0, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 2, 10, 0, 0),
		INSN(BPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, -4),
		INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem),
		INSN(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 23, 0),			/* -> abort */
		INSN(BPF_LDX | BPF_MEM | BPF_DW, 2, 0, 0, 0),			/* the growth */
		INSN(BPF_ALU64 | BPF_NEG, 2, 0, 0, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0),
		INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_xdp_adjust_head),
		INSN(BPF_JMP | BPF_JNE | BPF_K, 0, 0, 18, 0),			/* -> abort */
		INSN(BPF_LDX | BPF_MEM | BPF_W, 2, 6, CTX(data), 0),
		INSN(BPF_LDX | BPF_MEM | BPF_W, 3, 6, CTX(data_end), 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 4, 2, 0, 0),
		INSN(BPF_ALU64 | BPF_ADD | BPF_K, 4, 0, 0, 16),
		INSN(BPF_JMP | BPF_JGT | BPF_X, 4, 3, 13, 0),			/* -> abort */
		INSN(BPF_ST | BPF_MEM | BPF_W, 2, 0, 0, -1),			/* ff:ff:ff:ff */
		INSN(BPF_ST | BPF_MEM | BPF_H, 2, 0, 4, 0xffff),		/* ff:ff */
		INSN(BPF_ST | BPF_MEM | BPF_W, 2, 0, 6, 0x02),			/* 02:00:00:00 */
		INSN(BPF_ST | BPF_MEM | BPF_H, 2, 0, 10, 0x0200),		/* 00:02 */
		INSN(BPF_ST | BPF_MEM | BPF_H, 2, 0, 12, htons(MOVED_TYPE)),
		INSN(BPF_ST | BPF_MEM | BPF_B, 2, 0, 14, 'M'),
		INSN(BPF_ST | BPF_MEM | BPF_B, 2, 0, 15, 'V'),
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 2, 0, 0, -TRIM),
		INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_xdp_adjust_tail),
		INSN(BPF_JMP | BPF_JNE | BPF_K, 0, 0, 2, 0),			/* -> abort */
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, XDP_PASS),
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
		/* abort: */
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, XDP_ABORTED),
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
	};
	uint32_t egress_type, n;
	int map, ifindex0, ifindex1;

	egress_type = btf_enum_value("BPF_XSK_EGRESS");
	veth_pair("xmov0", "xmov1");
	ifindex0 = ifindex_of("xmov0");
	ifindex1 = ifindex_of("xmov1");
	pkt = packet_socket(ifindex1, "xmov1");
	ok("veth pair xmov0/xmov1 up, a packet socket on xmov1");

	map = counters(2);
	set_counter(map, 1, GROW);
	move[2].imm = map;
	move[11].imm = map;
	x = xsk_open(ifindex0, XDP_COPY, 0, 1);
	if (link_create(load(move, sizeof(move) / sizeof(move[0]), egress_type), x.fd, egress_type,
			0) < 0)
		fail("BPF_LINK_CREATE (egress)");
	ok("an egress program that moves the frame is linked to the socket");

	put(4);
	expect_eq("four frames complete", kick(4), 4);
	take_completions();
	ok("the completions return the addresses the app gave");
	expect_eq("four moved frames leave, each written once", receive(0), 4);
	expect_eq("the program ran once per frame", counter(map, 0), 4);

	/* The completion ring holds NDESC: with NDESC - 4 left unread, 4 of 8 more fit; the
	 * fifth waits with its verdict through 200 kicks, and goes once the ring is read, not
	 * moved again.
	 */
	put(NDESC - 4);
	n = kick(NDESC);
	expect_eq("with the completion ring left unread, it fills", n, NDESC);
	receive(4);
	put(8);
	expect_eq("four more fit, then the ring is full", kick(NDESC + 5) - n, 4);
	runs = counter(map, 0);
	take_completions();
	expect_eq("the rest go once the ring is read", kick(NDESC + 8) - n, 8);
	take_completions();
	expect_eq("the held-back frames leave moved once", receive(NDESC), 8);
	expect_eq("the program ran once per frame, the held-back one included",
		  counter(map, 0), NDESC + 8);
	if (runs != NDESC + 5) {
		printf("FAIL while held back: %d runs, want %d\n", runs, NDESC + 5);
		return 1;
	}
	ok("the held-back frame was run once, not at every kick while the ring was full");

	/* OFFSET bytes of headroom, less the room the helper keeps for struct xdp_frame: a move
	 * of OFFSET is refused, and the frame dropped (completed, not sent).
	 */
	set_counter(map, 1, OFFSET);
	put(1);
	expect_eq("a move past the chunk's start: completes", kick(NDESC + 9), NDESC + 9);
	take_completions();
	expect_eq("and nothing leaves", receive(NDESC + 8), 0);
	printf("xsk_egress_move: all checks passed\n");
	return 0;
}
