// SPDX-License-Identifier: MIT
/*
 * The native series' any-queue receive (patches/0003), checked on the patched kernel (run by
 * scripts/native-test inside the qemu guest) on a veth pair of its own (xanyq0, xanyq1, two
 * queues each): copy-mode AF_XDP senders bound to xanyq1's queues 0 and 1 send frames that
 * arrive on the same queue of xanyq0, whose native XDP program writes the queue it saw into each
 * frame and redirects it to one socket. Checked: a plain socket (queue 0) takes only its queue's
 * frames; an XDP_RX_ANY_QUEUE socket (queue 1) takes both queues', intact; both queues' NAPI polls
 * filling it at once from two CPUs lose, duplicate and corrupt nothing; its gen program
 * (patches/0002) runs after frames from the other queue; the flag is refused without XDP_COPY,
 * and sharing such a socket's UMEM is refused where sharing a plain one's works.
 *
 *   xsk_anyq       prints one "ok ..." line per check; exits 1 at the first failure
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <poll.h>
#include <sched.h>
#include <sys/wait.h>

#include "common.h"

/* A bind flag, not an enum: its value is UAPI (include/uapi/linux/if_xdp.h), not in BTF. */
#ifndef XDP_RX_ANY_QUEUE
#define XDP_RX_ANY_QUEUE (1 << 5)
#endif

#define TYPE 0x88b5
/* Frames per sender in each round of the concurrent run (both fill the receiver's NDESC
 * buffers), and the rounds: a kernel built without the lock failed within 2000 (a frame
 * delivered twice, a crash in the flush list), where 20 and 300 passed.
 */
#define BURST (NDESC / 2)
#define ROUNDS 2000

static int map;
static struct xsk senders[2];

/* Writes N frames with sequence numbers FIRST.. into sender Q's UMEM and Tx ring (not yet
 * published): broadcast, TYPE, the sender's queue at byte 22, the sequence number at 18.
 */
static uint32_t stage(int q, uint32_t first, uint32_t n)
{
	struct xsk *s = &senders[q];
	uint32_t prod = *s->tx.producer;

	for (uint32_t i = 0; i < n; i++) {
		unsigned char frame[60] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1,
					    TYPE >> 8, TYPE & 0xff };
		uint32_t seq = first + i, slot = (prod + i) % NDESC;
		struct xdp_desc *d = (struct xdp_desc *)s->tx.descs + slot;

		memcpy(frame + 18, &seq, 4);
		frame[22] = q;
		memcpy(s->umem + slot * FRAME, frame, sizeof(frame));
		d->addr = (uint64_t)slot * FRAME;
		d->len = sizeof(frame);
		d->options = 0;
	}
	return prod + n;
}

/* Publishes sender Q's Tx ring up to PROD and kicks it until all completed. */
static void flush(int q, uint32_t prod)
{
	struct xsk *s = &senders[q];

	__atomic_store_n(s->tx.producer, prod, __ATOMIC_RELEASE);
	for (int i = 0; i < 2000 && __atomic_load_n(s->cq.producer, __ATOMIC_ACQUIRE) != prod; i++) {
		xsk_kick(s->fd);
		usleep(500);
	}
	if (__atomic_load_n(s->cq.producer, __ATOMIC_ACQUIRE) != prod)
		fail("the sender's frames did not complete");
	*s->cq.consumer = prod;
}

/* Takes what reached R until WANT frames came or none for 300 ms, puts their buffers back on the
 * fill ring, checks each frame (the queue the XDP program saw is the sender's; no sequence number
 * twice) and counts them by queue in GOT.
 */
static void drain(struct xsk *r, const char *what, uint32_t got[2], uint32_t want)
{
	static unsigned char seen[1024];
	struct pollfd pfd = { .fd = r->fd, .events = POLLIN };

	memset(seen, 0, sizeof(seen));
	got[0] = got[1] = 0;
	while (got[0] + got[1] < want && poll(&pfd, 1, 300) == 1) {
		uint32_t prod = __atomic_load_n(r->rx.producer, __ATOMIC_ACQUIRE);
		uint32_t cons = *r->rx.consumer, fill = *r->fill.producer;

		for (; cons != prod; cons++) {
			struct xdp_desc *d = (struct xdp_desc *)r->rx.descs + cons % NDESC;
			unsigned char *f = (unsigned char *)r->umem + d->addr;
			uint32_t queue, seq;

			memcpy(&queue, f + 14, 4);
			memcpy(&seq, f + 18, 4);
			if (d->len != 60 || f[12] != TYPE >> 8 || queue > 1 || f[22] != queue ||
			    seq >= sizeof(seen) || seen[seq]++) {
				printf("FAIL %s: a frame of %u bytes, queue %u, sender's queue %u, "
				       "sequence number %u\n", what, d->len, queue, f[22], seq);
				exit(1);
			}
			got[queue]++;
			((uint64_t *)r->fill.descs)[fill++ % NDESC] = d->addr & ~(uint64_t)(FRAME - 1);
		}
		__atomic_store_n(r->rx.consumer, cons, __ATOMIC_RELEASE);
		__atomic_store_n(r->fill.producer, fill, __ATOMIC_RELEASE);
	}
}

/* Sends N frames from each sender, one after the other; checks what R got from each queue. */
static void run(struct xsk *r, const char *what, uint32_t n, uint32_t want0, uint32_t want1)
{
	uint32_t got[2];

	flush(0, stage(0, 0, n));
	flush(1, stage(1, 100, n));
	drain(r, what, got, UINT32_MAX);
	if (got[0] != want0 || got[1] != want1) {
		printf("FAIL %s: %u frames from queue 0 and %u from queue 1, want %u and %u\n", what,
		       got[0], got[1], want0, want1);
		exit(1);
	}
	printf("ok %s: %u frames from queue 0, %u from queue 1\n", what, got[0], got[1]);
}

static void pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		fail("sched_setaffinity");
}

/* A receiving socket on IFINDEX's QUEUE with buffers on its fill ring, in the XSKMAP. */
static struct xsk receiver(int ifindex, uint32_t queue, uint16_t flags)
{
	struct xsk r = xsk_open_queue(ifindex, queue, flags, 1, 0);

	for (uint32_t i = 0; i < NDESC; i++)
		((uint64_t *)r.fill.descs)[i] = (uint64_t)i * FRAME;
	__atomic_store_n(r.fill.producer, NDESC, __ATOMIC_RELEASE);
	xskmap_put(map, 0, r.fd);
	return r;
}

/* Binds a fresh socket with only an Rx ring to IFINDEX's QUEUE with FLAGS, sharing the UMEM of
 * SHARED if it is not -1, and closes it; returns bind's result (errno kept).
 */
static int bind_bare(int ifindex, uint32_t queue, uint16_t flags, int shared)
{
	struct sockaddr_xdp sxdp = { .sxdp_family = AF_XDP, .sxdp_ifindex = ifindex,
				     .sxdp_queue_id = queue, .sxdp_flags = flags,
				     .sxdp_shared_umem_fd = shared };
	int fd = socket(AF_XDP, SOCK_RAW, 0), n = NDESC, ret, err;

	if (fd < 0 || setsockopt(fd, SOL_XDP, XDP_RX_RING, &n, sizeof(n)))
		fail("a bare AF_XDP socket");
	ret = bind(fd, (struct sockaddr *)&sxdp, sizeof(sxdp));
	err = errno;
	close(fd);
	errno = err;
	return ret;
}

int main(void)
{
	/* Frames of TYPE: write rx_queue_index at byte 14, then bpf_redirect_map(xskmap, 0,
	 * XDP_PASS); the rest: XDP_PASS.
	 */
	struct bpf_insn redirect[] = {
		INSN(BPF_LDX | BPF_MEM | BPF_W, 2, 1, CTX(data), 0),
		INSN(BPF_LDX | BPF_MEM | BPF_W, 3, 1, CTX(data_end), 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 4, 2, 0, 0),
		INSN(BPF_ALU64 | BPF_ADD | BPF_K, 4, 0, 0, 26),
		INSN(BPF_JMP | BPF_JGT | BPF_X, 4, 3, 10, 0),			/* -> pass */
		INSN(BPF_LDX | BPF_MEM | BPF_H, 4, 2, 12, 0),
		INSN(BPF_JMP | BPF_JNE | BPF_K, 4, 0, 8, htons(TYPE)),		/* -> pass */
		INSN(BPF_LDX | BPF_MEM | BPF_W, 5, 1, CTX(rx_queue_index), 0),
		INSN(BPF_STX | BPF_MEM | BPF_W, 2, 5, 14, 0),
		INSN(BPF_LD | BPF_IMM | BPF_DW, 1, BPF_PSEUDO_MAP_FD, 0, 0),	/* 9: the XSKMAP */
		INSN(0, 0, 0, 0, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 2, 0, 0, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 3, 0, 0, XDP_PASS),
		INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_redirect_map),
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
		/* pass: */
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, XDP_PASS),
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
	};
	/* A gen program that counts its runs in map[0] and sends nothing. */
	struct bpf_insn count[] = {
		INSN(BPF_ST | BPF_MEM | BPF_W, 10, 0, -4, 0),
		INSN(BPF_LD | BPF_IMM | BPF_DW, 1, BPF_PSEUDO_MAP_FD, 0, 0),	/* 1: the map */
		INSN(0, 0, 0, 0, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 2, 10, 0, 0),
		INSN(BPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, -4),
		INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem),
		INSN(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 2, 0),			/* -> out */
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 1, 0, 0, 1),
		INSN(BPF_STX | BPF_ATOMIC | BPF_DW, 0, 1, 0, BPF_ADD),
		/* out: */
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, XDP_DROP),
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
	};
	int ifindex0, ifindex1, sync[2], status, runs;
	uint32_t gen_type = btf_enum_value("BPF_XSK_GEN");
	struct xsk plain, anyq;
	uint32_t got[2];
	pid_t child;

	veth_pair_queues("xanyq0", "xanyq1", 2);
	ifindex0 = if_nametoindex("xanyq0");
	ifindex1 = if_nametoindex("xanyq1");
	if (!ifindex0 || !ifindex1)
		fail("if_nametoindex");
	if (access("/sys/class/net/xanyq0/queues/rx-1", F_OK))
		fail("xanyq0 has no second queue");
	ok("veth pair xanyq0/xanyq1 up, two queues each");

	map = xskmap_new(1);
	redirect[9].imm = map;
	if (link_create(load(redirect, sizeof(redirect) / sizeof(redirect[0]), BPF_XDP), ifindex0,
			BPF_XDP, XDP_FLAGS_DRV_MODE) < 0)
		fail("attach the native XDP program to xanyq0");
	/* A copy-mode socket's frames leave through its queue, and veth hands them to the same
	 * queue of its peer.
	 */
	senders[0] = xsk_open_queue(ifindex1, 0, XDP_COPY, 0, 1);
	senders[1] = xsk_open_queue(ifindex1, 1, XDP_COPY, 0, 1);

	plain = receiver(ifindex0, 0, XDP_COPY);
	run(&plain, "a plain socket on queue 0", 8, 8, 0);
	if (bind_bare(ifindex0, 0, XDP_SHARED_UMEM, plain.fd))
		fail("sharing a plain socket's UMEM");
	ok("a plain socket's UMEM can be shared");
	close(plain.fd);

	if (bind_bare(ifindex0, 1, XDP_RX_ANY_QUEUE, -1) == 0 || errno != EINVAL)
		fail("XDP_RX_ANY_QUEUE without XDP_COPY is refused with EINVAL");
	ok("XDP_RX_ANY_QUEUE without XDP_COPY is refused (EINVAL)");

	/* Queue 1: the plain socket's pool leaves queue 0 after a deferred release. */
	anyq = receiver(ifindex0, 1, XDP_COPY | XDP_RX_ANY_QUEUE);
	run(&anyq, "an any-queue socket on queue 1", 8, 8, 8);
	if (bind_bare(ifindex0, 1, XDP_SHARED_UMEM, anyq.fd) == 0 || errno != EINVAL)
		fail("sharing an any-queue socket's UMEM is refused with EINVAL");
	ok("sharing an any-queue socket's UMEM is refused (EINVAL)");

	/* Both senders at once from two CPUs: each CPU's softirq polls its own queue of xanyq0,
	 * both filling the one socket. The frames are written before the fork (the UMEM is
	 * private memory: the child's writes would go to its own copy).
	 */
	for (int round = 0; round < ROUNDS; round++) {
		uint32_t prod0 = stage(0, 0, BURST), prod1 = stage(1, 100, BURST);
		char go;

		if (pipe(sync))
			fail("pipe");
		child = fork();
		if (child < 0)
			fail("fork");
		if (!child) {
			pin(1);
			if (read(sync[0], &go, 1) != 1)
				_exit(1);
			flush(1, prod1);
			_exit(0);
		}
		pin(0);
		if (write(sync[1], "g", 1) != 1)
			fail("write");
		flush(0, prod0);
		if (waitpid(child, &status, 0) != child || !WIFEXITED(status) ||
		    WEXITSTATUS(status))
			fail("the sender on CPU 1");
		/* The child's producer and completions are in shared ring memory. */
		*senders[1].cq.consumer = prod1;
		close(sync[0]);
		close(sync[1]);
		drain(&anyq, "two CPUs at once", got, 2 * BURST);
		if (got[0] != BURST || got[1] != BURST) {
			printf("FAIL two CPUs at once, round %d: %u and %u frames, want %u each\n",
			       round, got[0], got[1], BURST);
			return 1;
		}
	}
	printf("ok two CPUs at once: %d rounds of %u frames from each queue, each intact, once\n",
	       ROUNDS, BURST);

	runs = counters(1);
	count[1].imm = runs;
	if (link_create(load(count, sizeof(count) / sizeof(count[0]), gen_type), anyq.fd, gen_type,
			0) < 0)
		fail("BPF_LINK_CREATE (gen)");
	flush(0, stage(0, 0, 8));
	drain(&anyq, "the gen hook", got, UINT32_MAX);
	if (got[0] != 8 || !counter(runs, 0)) {
		printf("FAIL the gen hook: %u frames from queue 0, %llu runs\n", got[0],
		       (unsigned long long)counter(runs, 0));
		return 1;
	}
	printf("ok the gen hook runs after frames from another queue: %llu runs for 8 frames\n",
	       (unsigned long long)counter(runs, 0));
	printf("xsk_anyq: all checks passed\n");
	return 0;
}
