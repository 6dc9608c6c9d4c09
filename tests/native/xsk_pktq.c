// SPDX-License-Identifier: MIT
/*
 * The native series' packet queue (patches/0008), checked on the patched kernel (run by
 * scripts/native-test inside the qemu guest) on a veth pair of its own (xpq0, xpq1): a copy-mode
 * AF_XDP socket on xpq0 sends frames that each carry a delay; its BPF_XSK_EGRESS program trims
 * 4 bytes off each and queues it with bpf_xsk_egress_queue(ctx, now + delay) (a kfunc found in
 * the kernel's BTF), counting its verdicts (queued, and the drops of a full queue); a packet
 * socket on xpq1 receives what leaves. Checked: nothing leaves or completes before its time;
 * frames leave as the program left them, in the order of their release times, not of sending,
 * no earlier than asked and with the spacing asked (coarse
 * bounds: TCG is slow); each descriptor completes once, after its frame left; a full queue
 * (256 frames) drops the next frame, counted, and completes it at once; closing the socket with
 * frames queued completes them without sending them, also while its timer releases others (20
 * rounds, no crash; seen through a socket sharing the UMEM and completion ring), and so does
 * deleting its device; frames queued when the link closes still leave at their time; a plain
 * XDP program may not call the kfunc.
 *
 *   xsk_pktq   prints one "ok ..." line per check; exits 1 at the first failure
 */
#define NDESC 512

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <poll.h>
#include <time.h>

#include "common.h"

/* The app's frame length and type; the queue's bound (XSK_PKTQ_MAX in the patch). */
#define LEN 60
#define TRIM 4
#define TYPE 0x88b7
#define QUEUE_MAX 256
#define MS 1000000ull

static struct xsk x, owner;
static int pkt, map, prog, link_fd;
static uint32_t next, completed;

static uint64_t now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* The chunk of frame number I. */
static uint64_t addr_of(uint32_t i)
{
	return (uint64_t)(i % NDESC) * FRAME;
}

/* Puts frame NEXT on the Tx ring: broadcast, TYPE, DELAY (ns) at byte 14, its number at 22. */
static void put(uint64_t delay)
{
	unsigned char frame[LEN] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1,
				     TYPE >> 8, TYPE & 0xff };
	struct xdp_desc *d = (struct xdp_desc *)x.tx.descs + next % NDESC;

	memcpy(frame + 14, &delay, 8);
	memcpy(frame + 22, &next, 4);
	memcpy(x.umem + addr_of(next), frame, sizeof(frame));
	d->addr = addr_of(next);
	d->len = sizeof(frame);
	d->options = 0;
	next++;
	__atomic_store_n(x.tx.producer, next, __ATOMIC_RELEASE);
}

/* Kicks the socket until it took every descriptor put on its Tx ring. */
static void kick(void)
{
	for (int i = 0; i < 400; i++) {
		if (sendto(x.fd, NULL, 0, MSG_DONTWAIT, NULL, 0) && errno != EAGAIN &&
		    errno != EBUSY && errno != ENOBUFS)
			fail("sendto");
		if (__atomic_load_n(x.tx.consumer, __ATOMIC_ACQUIRE) == next)
			return;
		usleep(1000);
	}
	printf("FAIL the socket took %u of %u descriptors\n",
	       __atomic_load_n(x.tx.consumer, __ATOMIC_ACQUIRE), next);
	exit(1);
}

static uint32_t cq_prod(void)
{
	return __atomic_load_n(x.cq.producer, __ATOMIC_ACQUIRE);
}

/* Takes the next completion: it must return the address of frame NUM. */
static void take_completion(uint32_t num)
{
	uint64_t addr = ((uint64_t *)x.cq.descs)[completed % NDESC];

	if (completed == cq_prod()) {
		printf("FAIL no completion for frame %u\n", num);
		exit(1);
	}
	if (addr != addr_of(num)) {
		printf("FAIL completion %u returned address %llu, want frame %u's (%llu)\n",
		       completed, (unsigned long long)addr, num,
		       (unsigned long long)addr_of(num));
		exit(1);
	}
	completed++;
	__atomic_store_n(x.cq.consumer, completed, __ATOMIC_RELEASE);
}

/* Receives one of the frames sent within WAIT_MS; returns its number (-1: none came) and
 * when it came in *AT.
 */
static int64_t receive(int wait_ms, uint64_t *at)
{
	struct pollfd pfd = { .fd = pkt, .events = POLLIN };
	unsigned char buf[2048];
	uint64_t end = now() + wait_ms * MS;

	for (uint64_t t; (t = now()) < end;) {
		uint32_t num;
		ssize_t n;

		if (poll(&pfd, 1, (end - t) / MS + 1) != 1)
			continue;
		n = recv(pkt, buf, sizeof(buf), 0);
		if (n < 0)
			fail("recv");
		*at = now();
		if (n < 14 || buf[12] != TYPE >> 8 || buf[13] != (TYPE & 0xff))
			continue;
		if (n != LEN - TRIM) {
			printf("FAIL a frame of %zd bytes left, want %d: not as the program left it\n",
			       n, LEN - TRIM);
			exit(1);
		}
		memcpy(&num, buf + 22, 4);
		return num;
	}
	return -1;
}

/* Deletes the device IFINDEX (a veth pair goes as a whole) through rtnetlink. */
static void link_del(int ifindex)
{
	struct {
		struct nlmsghdr n;
		struct ifinfomsg i;
	} req = { .n = { .nlmsg_len = sizeof(req), .nlmsg_type = RTM_DELLINK,
			 .nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK },
		  .i = { .ifi_family = AF_UNSPEC, .ifi_index = ifindex } };
	struct {
		struct nlmsghdr n;
		struct nlmsgerr e;
	} ack;
	int fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);

	if (fd < 0 || send(fd, &req, sizeof(req), 0) < 0 ||
	    recv(fd, &ack, sizeof(ack), 0) < (ssize_t)sizeof(ack))
		fail("rtnetlink");
	close(fd);
	if (ack.n.nlmsg_type != NLMSG_ERROR || ack.e.error) {
		errno = -ack.e.error;
		fail("delete the veth pair");
	}
}

/* A socket on IFINDEX with the program linked. */
static void open_linked(int ifindex, uint32_t egress_type)
{
	x = xsk_open(ifindex, XDP_COPY, 0, 1);
	next = completed = 0;
	link_fd = link_create(prog, x.fd, egress_type, 0);
	if (link_fd < 0)
		fail("BPF_LINK_CREATE (egress)");
}

/* A socket on IFINDEX sharing OWNER's UMEM, and so its pool and completion ring, with the
 * program linked: the sender from now on.
 */
static void open_shared(struct xsk *owner, int ifindex, uint32_t egress_type)
{
	struct sockaddr_xdp sxdp = { .sxdp_family = AF_XDP, .sxdp_ifindex = ifindex,
				     .sxdp_flags = XDP_SHARED_UMEM,
				     .sxdp_shared_umem_fd = owner->fd };
	struct xdp_mmap_offsets off;
	socklen_t len = sizeof(off);
	int n = NDESC;

	memset(&x, 0, sizeof(x));
	x.fd = socket(AF_XDP, SOCK_RAW, 0);
	if (x.fd < 0 || setsockopt(x.fd, SOL_XDP, XDP_TX_RING, &n, sizeof(n)) ||
	    getsockopt(x.fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &len))
		fail("a socket sharing the UMEM");
	x.tx = xsk_ring(&x, &off.tx, sizeof(struct xdp_desc), XDP_PGOFF_TX_RING);
	if (bind(x.fd, (struct sockaddr *)&sxdp, sizeof(sxdp)))
		fail("bind a socket sharing the UMEM");
	/* The owner's UMEM and completion ring, which this one does not map itself. */
	x.umem = owner->umem;
	x.cq = owner->cq;
	x.cq.map = NULL;
	next = 0;
	link_fd = link_create(prog, x.fd, egress_type, 0);
	if (link_fd < 0)
		fail("BPF_LINK_CREATE (egress, shared UMEM)");
}

/* Closes the sender and its link, the link first when LINK_FIRST (the socket holds the frames
 * either way). The link holds the socket: the socket goes, and its pool with it unless shared,
 * when both are closed.
 */
static void close_sender(int link_first)
{
	if (link_first && close(link_fd))
		fail("close the link");
	xsk_close(&x);
	if (!link_first && close(link_fd))
		fail("close the link");
}

int main(void)
{
	/* Trims TRIM bytes off each frame's tail and queues it at now + the delay at byte 14
	 * (XDP_ABORTED when the frame is too short); returns the kfunc's verdict (XDP_REDIRECT: queued; XDP_DROP: the queue was
	 * full), counted in the map, an array indexed by verdict.
	 */
	struct bpf_insn queue[] = {
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0),			/* r6 = ctx */
		INSN(BPF_LDX | BPF_MEM | BPF_W, 2, 6, CTX(data), 0),
		INSN(BPF_LDX | BPF_MEM | BPF_W, 3, 6, CTX(data_end), 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 4, 2, 0, 0),
		INSN(BPF_ALU64 | BPF_ADD | BPF_K, 4, 0, 0, 22),
		INSN(BPF_JMP | BPF_JGT | BPF_X, 4, 3, 22, 0),			/* -> abort */
		INSN(BPF_LDX | BPF_MEM | BPF_DW, 7, 2, 14, 0),			/* the delay */
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 2, 0, 0, -TRIM),
		INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_xdp_adjust_tail),
		INSN(BPF_JMP | BPF_JNE | BPF_K, 0, 0, 17, 0),			/* -> abort */
		INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_ktime_get_ns),
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 2, 0, 0, 0),
		INSN(BPF_ALU64 | BPF_ADD | BPF_X, 2, 7, 0, 0),			/* now + delay */
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0),
		INSN(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_KFUNC_CALL, 0, 0),	/* 15: the kfunc */
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 7, 0, 0, 0),			/* r7 = verdict */
		COUNT_VERDICT_R7,						/* 17: the map at 18 */
		/* abort: */
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, XDP_ABORTED),
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
	};
	/* Release order: frame i (sent in order 0..5) is released RANK[i]-th, BASE + RANK[i] *
	 * SPACING after it was sent.
	 */
	static const uint32_t rank[] = { 3, 0, 5, 1, 4, 2 };
	const uint64_t base = 300 * MS, spacing = 100 * MS;
	uint64_t sent_at, at[6], prev = 0;
	uint32_t egress_type, order[6];
	int ifindex0, ifindex1;
	static char log[4096];
	union bpf_attr a;
	int64_t num;

	egress_type = btf_enum_value("BPF_XSK_EGRESS");
	queue[15].imm = btf_func_id("bpf_xsk_egress_queue");
	veth_pair("xpq0", "xpq1");
	ifindex0 = ifindex_of("xpq0");
	ifindex1 = ifindex_of("xpq1");
	pkt = packet_socket(ifindex1, "xpq1");
	ok("veth pair xpq0/xpq1 up, a packet socket on xpq1");

	map = counters(XDP_REDIRECT + 1);
	queue[18].imm = map;
	/* The kfunc is for egress programs only. */
	memset(&a, 0, sizeof(a));
	a.prog_type = BPF_PROG_TYPE_XDP;
	a.insns = (uintptr_t)queue;
	a.insn_cnt = sizeof(queue) / sizeof(queue[0]);
	a.license = (uintptr_t)"GPL";
	a.log_buf = (uintptr_t)log;
	a.log_size = sizeof(log);
	a.log_level = 1;
	if (sys_bpf(BPF_PROG_LOAD, &a) >= 0 || !strstr(log, "is not allowed")) {
		printf("%s\n", log);
		fail("a plain XDP program calling bpf_xsk_egress_queue was not refused for it");
	}
	ok("a plain XDP program calling bpf_xsk_egress_queue is refused");
	prog = load(queue, sizeof(queue) / sizeof(queue[0]), egress_type);
	open_linked(ifindex0, egress_type);
	ok("an egress program that queues each frame is linked to the socket");

	/* Six frames, released in another order than sent. */
	sent_at = now();
	for (int i = 0; i < 6; i++)
		put(base + rank[i] * spacing);
	kick();
	expect_eq("six frames queued: none completes at once", cq_prod(), 0);
	expect_eq("the program queued six", counter(map, XDP_REDIRECT), 6);
	num = receive(base / MS / 2, &at[0]);
	expect_eq("nothing leaves before its time", num == -1, 1);
	for (int i = 0; i < 6; i++)
		order[rank[i]] = i;
	for (int k = 0; k < 6; k++) {
		num = receive(2000, &at[k]);
		if (num != order[k]) {
			printf("FAIL the %dth frame released is frame %lld, want %u\n", k + 1,
			       (long long)num, order[k]);
			return 1;
		}
		if (at[k] < sent_at + base + k * spacing ||
		    at[k] > sent_at + base + k * spacing + 400 * MS) {
			printf("FAIL frame %u left %.1f ms after it was sent, want %llu to %llu\n",
			       order[k], (at[k] - sent_at) / 1e6,
			       (unsigned long long)((base + k * spacing) / MS),
			       (unsigned long long)((base + k * spacing) / MS + 400));
			return 1;
		}
		if (k && at[k] - prev < spacing / 2) {
			printf("FAIL frames %u and %u left %.1f ms apart, want about %llu\n",
			       order[k - 1], order[k], (at[k] - prev) / 1e6,
			       (unsigned long long)(spacing / MS));
			return 1;
		}
		printf("ok frame %u left %.1f ms after it was sent (asked: %llu)\n", order[k],
		       (at[k] - sent_at) / 1e6, (unsigned long long)((base + k * spacing) / MS));
		prev = at[k];
	}
	ok("the six left in the order of their release times, with the spacing asked");
	usleep(100000);
	expect_eq("each completed once", cq_prod(), 6);
	for (int k = 0; k < 6; k++)
		take_completion(order[k]);
	ok("the completions return the addresses, in the order the frames left");
	if (receive(300, &at[0]) != -1)
		fail("nothing more leaves: a frame left");
	ok("nothing more leaves (300 ms)");

	/* A full queue: QUEUE_MAX frames wait 10 s; the next is dropped, counted, completed. */
	for (int i = 0; i < QUEUE_MAX + 1; i++)
		put(10000 * MS);
	kick();
	expect_eq("with the queue full, a drop is counted", counter(map, XDP_DROP), 1);
	expect_eq("the program queued the others", counter(map, XDP_REDIRECT), 6 + QUEUE_MAX);
	usleep(50000);
	expect_eq("only the dropped frame completes", cq_prod(), 7);
	take_completion(6 + QUEUE_MAX);
	close_sender(0);
	ok("the socket and its pool closed with a full queue");
	if (receive(300, &at[0]) != -1)
		fail("and none of the queued frames leaves: a frame left");
	ok("and none of the queued frames leaves (300 ms)");

	/* Closing while the timer releases frames (half due at once, half within 2 ms), on a
	 * socket sharing the UMEM and completion ring of another: that one's ring shows each
	 * descriptor completed once, sent or purged.
	 */
	owner = xsk_open(ifindex0, XDP_COPY, 0, 1);
	completed = 0;
	for (int round = 0; round < 20; round++) {
		uint32_t put_n = 64, got = 0;

		open_shared(&owner, ifindex0, egress_type);
		for (uint32_t i = 0; i < put_n; i++)
			put(i % 2 ? 0 : (i % 8) * MS / 4);
		kick();
		usleep(round * 100);
		close_sender(round % 2);
		while (receive(100, &at[0]) >= 0)
			got++;
		x.cq = owner.cq;
		if (cq_prod() - completed != put_n || got > put_n) {
			printf("FAIL round %d: %u completions, %u frames left, want %u completions\n",
			       round, cq_prod() - completed, got, put_n);
			return 1;
		}
		for (uint32_t c = 0; c < put_n; c++) {
			uint64_t addr = ((uint64_t *)x.cq.descs)[(completed + c) % NDESC];

			for (uint32_t d = c + 1; d < put_n; d++)
				if (addr == ((uint64_t *)x.cq.descs)[(completed + d) % NDESC]) {
					printf("FAIL round %d: address %llu completed twice\n", round,
					       (unsigned long long)addr);
					return 1;
				}
			if (addr % FRAME || addr / FRAME >= put_n) {
				printf("FAIL round %d: completed address %llu was not sent\n", round,
				       (unsigned long long)addr);
				return 1;
			}
		}
		completed += put_n;
		__atomic_store_n(x.cq.consumer, completed, __ATOMIC_RELEASE);
		printf("ok round %d: closed with frames queued: %u sent, all %u completed once\n",
		       round, got, put_n);
	}
	/* The link goes with frames queued: they stay, and leave at their time. */
	open_shared(&owner, ifindex0, egress_type);
	put(200 * MS);
	put(250 * MS);
	kick();
	sent_at = now();
	if (close(link_fd))
		fail("close the link");
	for (int k = 0; k < 2; k++) {
		num = receive(2000, &at[k]);
		if (num != k || at[k] < sent_at + 150 * MS) {
			printf("FAIL after the link closed: frame %lld left %.1f ms later, want "
			       "frame %d after 200 ms\n", (long long)num, (at[k] - sent_at) / 1e6, k);
			return 1;
		}
	}
	usleep(50000);
	expect_eq("the link closed, the queued frames leave at their time and complete",
		  cq_prod() - completed, 2);
	completed += 2;
	__atomic_store_n(x.cq.consumer, completed, __ATOMIC_RELEASE);
	xsk_close(&x);

	/* The device goes with frames queued: the socket is unbound and its queue purged. */
	open_shared(&owner, ifindex0, egress_type);
	for (int i = 0; i < 64; i++)
		put(10000 * MS);
	kick();
	usleep(50000);
	expect_eq("64 frames queued for 10 s: none completes yet", cq_prod() - completed, 0);
	link_del(ifindex0);
	expect_eq("deleting the device completes them", cq_prod() - completed, 64);
	close_sender(0);
	xsk_close(&owner);
	ok("both sockets closed after their device went");
	printf("xsk_pktq: all checks passed\n");
	return 0;
}
