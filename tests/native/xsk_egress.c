// SPDX-License-Identifier: MIT
/*
 * The native series' egress hook (patches/0001), checked on the patched kernel (run by
 * scripts/native-test inside the qemu guest) on a veth pair of its own (xegr0, xegr1):
 * BPF_XSK_EGRESS programs attached through a bpf_link to a copy-mode AF_XDP socket see every
 * frame it sends, once each (their verdicts counted in a map), with the frame's bytes and the
 * socket's device and queue in the context; XDP_PASS sends, XDP_DROP completes without sending
 * (in order, also behind frames still in flight); detaching restores plain sending; one link per
 * socket; CAP_NET_ADMIN needed; device attach refused; a socket closed before its link.
 * The new UAPI values are read from the kernel's BTF, as etran will.
 *
 *   xsk_egress      prints one "ok ..." line per check; exits 1 at the first failure
 */
#include <linux/capability.h>
#include <sys/wait.h>

#include "common.h"

static const char *ifname = "xegr0";
static uint32_t attach_type;
static struct xsk x;

/* Frame I of a batch: broadcast, a local experimental EtherType, KIND ('P' or 'D') as the first
 * payload byte, for the counting program's verdict.
 */
static void put_frame(uint32_t i, char kind)
{
	unsigned char frame[60] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1,
				    0x88, 0xb5, kind };
	struct xdp_desc *d = (struct xdp_desc *)x.tx.descs + (i % NDESC);

	memcpy(x.umem + (i % NDESC) * FRAME, frame, sizeof(frame));
	d->addr = (i % NDESC) * FRAME;
	d->len = sizeof(frame);
	d->options = 0;
}

/* Sends one frame per character of KINDS in one batch; checks that all complete, in order, and
 * that SENT of them left the device. The socket is kicked until then: a dropped frame behind
 * frames still in flight completes on a later kick.
 */
static void send_batch(const char *what, const char *kinds, unsigned long sent)
{
	static uint32_t next;
	uint32_t first = next, done = first, n = strlen(kinds);
	unsigned long before = tx_packets(ifname), left;

	for (uint32_t i = 0; i < n; i++)
		put_frame(next++, kinds[i]);
	__atomic_store_n(x.tx.producer, next, __ATOMIC_RELEASE);
	for (int i = 0; i < 1000 && done != next; i++) {
		xsk_kick(x.fd);
		usleep(1000);
		done = __atomic_load_n(x.cq.producer, __ATOMIC_ACQUIRE);
	}
	if (done != next) {
		printf("FAIL %s: %u of %u completions\n", what, done - first, n);
		exit(1);
	}
	for (uint32_t i = first; i != next; i++)
		if (((uint64_t *)x.cq.descs)[i % NDESC] != (i % NDESC) * FRAME) {
			printf("FAIL %s: completion %u out of order\n", what, i - first);
			exit(1);
		}
	__atomic_store_n(x.cq.consumer, done, __ATOMIC_RELEASE);
	left = tx_packets(ifname) - before;
	if (left != sent) {
		printf("FAIL %s: %lu frames left, want %lu\n", what, left, sent);
		exit(1);
	}
	printf("ok %s: %u completed in order, %lu left the device\n", what, n, left);
}

static int counts_map;

int main(void)
{
	const struct bpf_insn drop[] = {
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, XDP_DROP),
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
	};
	union bpf_attr a;
	int ifindex, p_drop, p_count, link, status;
	pid_t child;

	veth_pair(ifname, "xegr1");
	ifindex = if_nametoindex(ifname);
	if (!ifindex)
		fail("if_nametoindex");
	attach_type = btf_enum_value("BPF_XSK_EGRESS");
	btf_enum_value("BPF_LINK_TYPE_XSK");

	counts_map = counters(XDP_REDIRECT + 1);
	p_drop = load(drop, sizeof(drop) / sizeof(drop[0]), attach_type);
	p_count = load_counting(attach_type, ifindex, counts_map);
	ok("egress programs load (frame bytes, egress/ingress ifindex, queue, a map)");

	x = xsk_open(ifindex, XDP_COPY, 0, 1);
	send_batch("no program: the frame leaves", "D", 1);

	link = link_create(p_count, x.fd, attach_type, 0);
	if (link < 0)
		fail("BPF_LINK_CREATE (counting program)");
	send_batch("XDP_PASS: sent", "P", 1);
	check_counts(counts_map, "one frame passed", 1, 0);
	send_batch("XDP_DROP: completed, not sent", "D", 0);
	check_counts(counts_map, "one frame dropped", 1, 1);
	send_batch("a mixed batch", "PDPDDPPD", 4);
	check_counts(counts_map, "each frame of the batch seen once", 5, 5);
	if (link_create(p_drop, x.fd, attach_type, 0) >= 0 || errno != EBUSY)
		fail("a second link on the socket is refused with EBUSY");
	ok("a second link on the socket is refused (EBUSY)");
	close(link);
	send_batch("link closed: the frame leaves", "D", 1);
	check_counts(counts_map, "no program ran after the link closed", 5, 5);

	link = link_create(p_drop, x.fd, attach_type, 0);
	if (link < 0)
		fail("BPF_LINK_CREATE (drop)");
	send_batch("another program after the first link: dropped", "PP", 0);
	close(link);

	memset(&a, 0, sizeof(a));
	a.link_create.prog_fd = p_drop;
	a.link_create.target_ifindex = ifindex;
	a.link_create.attach_type = BPF_XDP;
	if (sys_bpf(BPF_LINK_CREATE, &a) >= 0 || errno != EINVAL)
		fail("an egress program attached to a device is refused");
	ok("an egress program cannot be attached to a device (EINVAL)");

	child = fork();
	if (child == 0) {
		struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
		struct __user_cap_data_struct c[2];

		if (syscall(SYS_capget, &h, c))
			fail("capget");
		c[0].effective &= ~(1u << CAP_NET_ADMIN);
		if (syscall(SYS_capset, &h, c))
			fail("capset");
		_exit(link_create(p_drop, x.fd, attach_type, 0) < 0 && errno == EPERM ? 0 : 1);
	}
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status))
		fail("attaching without CAP_NET_ADMIN is refused with EPERM");
	ok("attaching without CAP_NET_ADMIN is refused (EPERM)");

	/* The link outlives the socket, defunct; closing it afterwards must be harmless. */
	link = link_create(p_count, x.fd, attach_type, 0);
	if (link < 0)
		fail("BPF_LINK_CREATE (before closing the socket)");
	close(x.fd);
	close(link);
	ok("a socket closed before its link, then the link");
	printf("xsk_egress: all checks passed\n");
	return 0;
}
