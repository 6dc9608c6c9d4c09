// SPDX-License-Identifier: MIT
/*
 * The egress hook in zero copy (patches/0006) on virtio-net's zero-copy AF_XDP transmit
 * (patches/0007), checked on the patched kernel inside the qemu guest, whose two virtio-net NICs
 * eth0 and eth1 are joined by a qemu hub (scripts/kernel-matrix): a socket bound to eth0 with
 * XDP_ZEROCOPY sends, a packet socket on eth1 receives. Without a program every frame arrives;
 * with a BPF_XSK_EGRESS program (XDP_PASS for 'P' in the first payload byte when the context names
 * eth0 and queue 0, XDP_DROP otherwise; verdicts counted in a map) only the passed frames arrive,
 * each once and intact; every descriptor comes back on the completion ring exactly once, and a
 * drop behind frames in flight comes back ahead of them (out of order); a batch of drops alone
 * completes and frees its Tx ring slots; a moved frame (bpf_xdp_adjust_head) leaves as the
 * program wrote it and completes with the application's address.
 *
 *   xsk_zc      prints one "ok ..." line per check; exits 1 at the first failure
 */
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <sys/time.h>

#include "common.h"

#define ETHERTYPE 0x88b5
#define LEN 60

static struct xsk x;
static int rx_fd;
static uint32_t next;
/* Where the frames start in their UMEM chunks. */
static uint32_t headroom;

/* Frame SEQ in UMEM chunk SEQ % NDESC: broadcast, a local experimental EtherType, KIND as the
 * first payload byte and SEQ in the next two.
 */
static void put_frame(uint32_t seq, char kind)
{
	unsigned char *f = (unsigned char *)x.umem + (seq % NDESC) * FRAME + headroom;
	struct xdp_desc *d = (struct xdp_desc *)x.tx.descs + (seq % NDESC);
	const unsigned char head[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1,
				       ETHERTYPE >> 8, ETHERTYPE & 0xff };

	memset(f, 0, LEN);
	memcpy(f, head, sizeof(head));
	f[14] = kind;
	f[15] = seq >> 8;
	f[16] = seq & 0xff;
	for (int i = 17; i < LEN; i++)
		f[i] = (unsigned char)(seq + i);
	d->addr = (seq % NDESC) * FRAME + headroom;
	d->len = LEN;
	d->options = 0;
}

/* The frames eth1 received until 300 ms of silence: their sequence numbers in SEQS (N at
 * most), each checked intact (its bytes as put_frame wrote them, after SHIFT bytes the program
 * put in front; those must be a copy of the Ethernet header). Returns how many.
 */
static int receive(uint32_t *seqs, int n, int shift)
{
	unsigned char buf[2048];
	int got = 0;
	ssize_t len;

	while ((len = recv(rx_fd, buf, sizeof(buf), 0)) > 0) {
		unsigned char *f = buf + shift;
		uint32_t seq = f[15] << 8 | f[16];

		if (len != LEN + shift || (shift && memcmp(buf, f, 14)))
			goto corrupt;
		for (int i = 17; i < LEN; i++)
			if (f[i] != (unsigned char)(seq + i))
				goto corrupt;
		if (got == n) {
			printf("FAIL more than %d frames arrived\n", n);
			exit(1);
		}
		seqs[got++] = seq;
		continue;
corrupt:
		printf("FAIL a frame of %zd bytes arrived corrupted\n", len);
		exit(1);
	}
	if (errno != EAGAIN && errno != EWOULDBLOCK)
		fail("recv on eth1");
	return got;
}

/* Kicks the socket until the completion ring's producer is WANT (2 s at most); returns it. */
static uint32_t kick_until(uint32_t want)
{
	uint32_t done = __atomic_load_n(x.cq.producer, __ATOMIC_ACQUIRE);

	for (int i = 0; i < 2000 && done != want; i++) {
		xsk_kick(x.fd);
		usleep(1000);
		done = __atomic_load_n(x.cq.producer, __ATOMIC_ACQUIRE);
	}
	return done;
}

/* Sends one frame per character of KINDS in one batch through the zero-copy socket: 'P' and 'D'
 * (the program's pass and drop), 'd' a 'D' sent without a program. Checks that every descriptor
 * comes back on the completion ring exactly once (in the order ORDER, when given: the
 * completions' sequence numbers as characters 'a' + seq - first), that the frames marked 'P' or
 * 'd' and no others arrive on eth1, once each and intact (moved by SHIFT bytes).
 */
static void send_batch(const char *what, const char *kinds, const char *order, int shift)
{
	uint32_t first = next, n = strlen(kinds), done;
	uint32_t cq_first = __atomic_load_n(x.cq.producer, __ATOMIC_ACQUIRE), seqs[NDESC], want = 0;
	int seen[NDESC] = { 0 }, got;
	char got_order[NDESC + 1] = { 0 };

	for (uint32_t i = 0; i < n; i++)
		put_frame(next++, kinds[i] == 'd' ? 'D' : kinds[i]);
	__atomic_store_n(x.tx.producer, next, __ATOMIC_RELEASE);
	done = kick_until(cq_first + n);
	if (done - cq_first != n) {
		printf("FAIL %s: %u of %u completions\n", what, done - cq_first, n);
		exit(1);
	}
	for (uint32_t i = cq_first; i != done; i++) {
		uint64_t addr = ((uint64_t *)x.cq.descs)[i % NDESC];
		uint32_t k = addr / FRAME, seq = first + ((k - first % NDESC + NDESC) % NDESC);

		if (addr % FRAME != headroom || k >= NDESC || seq - first >= n ||
		    seen[seq - first]++) {
			printf("FAIL %s: completion %u (address %llu) is none of the batch's or a "
			       "duplicate\n", what, i - cq_first, (unsigned long long)addr);
			exit(1);
		}
		got_order[i - cq_first] = 'a' + (seq - first);
	}
	__atomic_store_n(x.cq.consumer, done, __ATOMIC_RELEASE);
	if (order && strcmp(order, got_order)) {
		printf("FAIL %s: completions in the order %s, want %s\n", what, got_order, order);
		exit(1);
	}
	got = receive(seqs, NDESC, shift);
	for (uint32_t i = 0; i < n; i++)
		want += kinds[i] == 'P' || kinds[i] == 'd';
	for (int i = 0; i < got; i++) {
		uint32_t k = seqs[i] - first;

		if (k >= n || (kinds[k] != 'P' && kinds[k] != 'd') || seen[k]++ != 1) {
			printf("FAIL %s: frame %u arrived (kind %c)\n", what, k,
			       k < n ? kinds[k] : '?');
			exit(1);
		}
	}
	if ((uint32_t)got != want) {
		printf("FAIL %s: %d frames arrived, want %u\n", what, got, want);
		exit(1);
	}
	printf("ok %s: %u descriptors completed once each%s, the %u passed frames arrived\n", what,
	       n, order ? " in the order wanted" : "", want);
}

static int counts_map;

/* With the completion ring full, the driver leaves the descriptors behind on the Tx ring: the
 * counting program sees each once however often the socket is kicked, and they leave (or
 * complete dropped) once the ring has room. 40 passes complete without being consumed; of 40
 * more (pass, drop, ...) the 24 the ring has room for go, the rest wait through 50 kicks. PASS
 * and DROP: the program's tally before.
 */
static void send_held(uint64_t pass, uint64_t drop)
{
	uint32_t first = next, cq_first = __atomic_load_n(x.cq.producer, __ATOMIC_ACQUIRE);
	uint32_t seqs[2 * NDESC], done;
	int seen[80] = { 0 }, got;

	for (int i = 0; i < 40; i++)
		put_frame(next++, 'P');
	__atomic_store_n(x.tx.producer, next, __ATOMIC_RELEASE);
	if (kick_until(cq_first + 40) != cq_first + 40)
		fail("40 frames complete");
	for (int i = 0; i < 40; i++)
		put_frame(next++, i % 2 ? 'D' : 'P');
	__atomic_store_n(x.tx.producer, next, __ATOMIC_RELEASE);
	for (int i = 0; i < 50; i++) {
		xsk_kick(x.fd);
		usleep(1000);
	}
	done = __atomic_load_n(x.cq.producer, __ATOMIC_ACQUIRE);
	if (done != cq_first + NDESC) {
		printf("FAIL completion ring full: %u completions, want %u\n", done - cq_first,
		       NDESC);
		exit(1);
	}
	check_counts(counts_map, "completion ring full through 50 kicks: 64 descriptors seen once",
		     pass + 52, drop + 12);
	__atomic_store_n(x.cq.consumer, done, __ATOMIC_RELEASE);
	done = kick_until(cq_first + 80);
	if (done != cq_first + 80) {
		printf("FAIL room again: %u of 80 completions\n", done - cq_first);
		exit(1);
	}
	__atomic_store_n(x.cq.consumer, done, __ATOMIC_RELEASE);
	check_counts(counts_map, "room again: the 16 held back seen once each", pass + 60,
		     drop + 20);
	got = receive(seqs, 2 * NDESC, 0);
	for (int i = 0; i < got; i++) {
		uint32_t k = seqs[i] - first;

		if (k >= 80 || (k >= 40 && k % 2) || seen[k]++) {
			printf("FAIL completion ring full: frame %u arrived\n", k);
			exit(1);
		}
	}
	if (got != 60) {
		printf("FAIL completion ring full: %d frames arrived, want 60\n", got);
		exit(1);
	}
	ok("completion ring full: the 60 passed frames arrived once each");
}

int main(void)
{
	/* Grows the frame by 14 bytes in front (bpf_xdp_adjust_head) and writes a copy of its
	 * Ethernet header there; XDP_PASS.
	 */
	const struct bpf_insn move[] = {
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 2, 0, 0, -14),
		INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_xdp_adjust_head),
		INSN(BPF_JMP | BPF_JNE | BPF_K, 0, 0, 13, 0),		/* refused: drop */
		INSN(BPF_LDX | BPF_MEM | BPF_W, 2, 6, CTX(data), 0),
		INSN(BPF_LDX | BPF_MEM | BPF_W, 3, 6, CTX(data_end), 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 4, 2, 0, 0),
		INSN(BPF_ALU64 | BPF_ADD | BPF_K, 4, 0, 0, 28),
		INSN(BPF_JMP | BPF_JGT | BPF_X, 4, 3, 8, 0),		/* short: drop */
		INSN(BPF_LDX | BPF_MEM | BPF_DW, 5, 2, 14, 0),		/* bytes 0..7 */
		INSN(BPF_STX | BPF_MEM | BPF_DW, 2, 5, 0, 0),
		INSN(BPF_LDX | BPF_MEM | BPF_W, 5, 2, 22, 0),		/* bytes 8..11 */
		INSN(BPF_STX | BPF_MEM | BPF_W, 2, 5, 8, 0),
		INSN(BPF_LDX | BPF_MEM | BPF_H, 5, 2, 26, 0),		/* bytes 12..13 */
		INSN(BPF_STX | BPF_MEM | BPF_H, 2, 5, 12, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, XDP_PASS),
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, XDP_DROP),
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
	};
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETHERTYPE) };
	struct timeval tv = { .tv_usec = 300000 };
	uint32_t attach_type;
	int ifindex, p_count, p_move, link;

	if (!is_virtio_net("eth0") || !is_virtio_net("eth1"))
		fail("eth0 and eth1 are virtio-net devices (scripts/kernel-matrix's qemu hub)");
	if_up_quiet("eth0");
	if_up_quiet("eth1");
	ifindex = if_nametoindex("eth0");
	sll.sll_ifindex = if_nametoindex("eth1");
	rx_fd = socket(AF_PACKET, SOCK_RAW, htons(ETHERTYPE));
	if (!ifindex || rx_fd < 0 || bind(rx_fd, (struct sockaddr *)&sll, sizeof(sll)) ||
	    setsockopt(rx_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)))
		fail("a packet socket on eth1");
	attach_type = btf_enum_value("BPF_XSK_EGRESS");

	counts_map = counters(XDP_REDIRECT + 1);
	p_count = load_counting(attach_type, ifindex, counts_map);
	p_move = load(move, sizeof(move) / sizeof(move[0]), attach_type);

	x = xsk_open(ifindex, XDP_ZEROCOPY, 0, 1);
	ok("an AF_XDP socket binds to virtio-net eth0 in zero copy");
	send_batch("zero copy, no program: every frame arrives", "dPdP", NULL, 0);

	link = link_create(p_count, x.fd, attach_type, 0);
	if (link < 0)
		fail("BPF_LINK_CREATE on a zero-copy socket");
	ok("an egress program links to the zero-copy socket");
	send_batch("XDP_PASS", "P", "a", 0);
	check_counts(counts_map, "one frame passed", 1, 0);
	send_batch("XDP_DROP", "D", "a", 0);
	check_counts(counts_map, "one frame dropped", 1, 1);
	/* The driver takes the batch's descriptors before it sends any: each drop is taken behind
	 * the passes in front of it, still in flight, and completes ahead of them.
	 */
	send_batch("drops behind frames in flight complete first", "PPDPDDP", "cefabdg", 0);
	check_counts(counts_map, "each frame of the batch seen once", 5, 4);
	send_batch("a batch of drops alone",
		   "DDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDD", NULL, 0);
	check_counts(counts_map, "48 more drops", 5, 52);
	send_batch("a batch of 40, every third dropped",
		   "PPDPPDPPDPPDPPDPPDPPDPPDPPDPPDPPDPPDPPDP", NULL, 0);
	check_counts(counts_map, "the batch of 40", 32, 65);
	send_held(32, 65);
	close(link);
	send_batch("link closed: every frame arrives", "dPd", NULL, 0);
	check_counts(counts_map, "no program ran after the link closed", 92, 85);

	link = link_create(p_move, x.fd, attach_type, 0);
	if (link < 0)
		fail("BPF_LINK_CREATE (moving program)");
	headroom = 128;
	send_batch("frames moved 14 bytes into the headroom", "PPPP", NULL, 14);
	close(link);
	close(x.fd);
	printf("xsk_zc: all checks passed\n");
	return 0;
}
