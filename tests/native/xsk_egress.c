// SPDX-License-Identifier: MIT
/*
 * The native series' egress hook (patches/0001), checked on the patched kernel (run by
 * scripts/native-test inside the qemu guest, in a testbed host's network namespace):
 * BPF_XSK_EGRESS programs attached through a bpf_link to a copy-mode AF_XDP socket see every
 * frame it sends, XDP_PASS sends, XDP_DROP completes without sending, detaching restores
 * plain sending, one link per socket, CAP_NET_ADMIN needed, device attach refused.
 * The new UAPI values are read from the kernel's BTF, as etran will.
 *
 *   xsk_egress IFNAME      prints one "ok ..." line per check; exits 1 at the first failure
 *
 * Plain syscalls only (no libbpf): it is built with gcc -static for the initramfs.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef AF_XDP
#define AF_XDP 44
#endif
#ifndef SOL_XDP
#define SOL_XDP 283
#endif

#define NDESC 64
#define FRAME 2048

static const char *ifname;
static int ifindex;

static void fail(const char *what)
{
	printf("FAIL %s (errno %d: %s)\n", what, errno, strerror(errno));
	exit(1);
}

static void ok(const char *what)
{
	printf("ok %s\n", what);
}

static long sys_bpf(int cmd, union bpf_attr *attr)
{
	return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

/* The value of enumerator NAME in the kernel's BTF (/sys/kernel/btf/vmlinux), or -1. */
static long btf_enum_value(const char *name)
{
	struct { uint16_t magic; uint8_t ver, flags; uint32_t hdr_len, type_off, type_len,
		 str_off, str_len; } *hdr;
	static char buf[32 << 20];
	long value = -1;
	ssize_t n, got = 0;
	char *t, *end, *strs;
	int fd;

	fd = open("/sys/kernel/btf/vmlinux", O_RDONLY);
	if (fd < 0)
		fail("open /sys/kernel/btf/vmlinux");
	while ((n = read(fd, buf + got, sizeof(buf) - got)) > 0)
		got += n;
	close(fd);
	hdr = (void *)buf;
	if (got < (ssize_t)sizeof(*hdr) || hdr->magic != 0xeb9f)
		fail("read BTF");
	t = buf + hdr->hdr_len + hdr->type_off;
	end = t + hdr->type_len;
	strs = buf + hdr->hdr_len + hdr->str_off;
	while (t < end && value < 0) {
		uint32_t *ty = (uint32_t *)t, kind = (ty[1] >> 24) & 0x1f, vlen = ty[1] & 0xffff;
		size_t extra = 0;

		switch (kind) {
		case 1: case 14: case 17: extra = 4; break; /* int, var, decl_tag */
		case 3: extra = 12; break; /* array */
		case 4: case 5: case 15: case 19: extra = 12 * vlen; break; /* members, enum64 */
		case 6: case 13: extra = 8 * vlen; break; /* enum, func_proto */
		}
		if (kind == 6)
			for (uint32_t i = 0; i < vlen; i++)
				if (!strcmp(strs + ty[3 + 2 * i], name))
					value = (int32_t)ty[4 + 2 * i];
		t += 12 + extra;
	}
	return value;
}

static uint32_t attach_type;

/* Loads an XDP program for the egress hook: INSNS, N instructions. */
static int load(const struct bpf_insn *insns, int n)
{
	static char log[4096];
	union bpf_attr a;
	int fd;

	memset(&a, 0, sizeof(a));
	a.prog_type = BPF_PROG_TYPE_XDP;
	a.expected_attach_type = attach_type;
	a.insns = (uintptr_t)insns;
	a.insn_cnt = n;
	a.license = (uintptr_t)"GPL";
	a.log_buf = (uintptr_t)log;
	a.log_size = sizeof(log);
	a.log_level = 1;
	fd = sys_bpf(BPF_PROG_LOAD, &a);
	if (fd < 0) {
		printf("%s\n", log);
		fail("BPF_PROG_LOAD");
	}
	return fd;
}

static int link_create(int prog, int target, uint32_t type)
{
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.link_create.prog_fd = prog;
	a.link_create.target_fd = target;
	a.link_create.attach_type = type;
	return sys_bpf(BPF_LINK_CREATE, &a);
}

struct ring {
	uint32_t *producer, *consumer;
	void *descs;
};

static int xsk;
static char *umem;
static struct ring tx, cq;

static void xsk_open(void)
{
	struct xdp_umem_reg reg = { .len = NDESC * FRAME, .chunk_size = FRAME };
	struct sockaddr_xdp sxdp = { .sxdp_family = AF_XDP, .sxdp_ifindex = ifindex,
				     .sxdp_flags = XDP_COPY };
	struct xdp_mmap_offsets off;
	socklen_t len = sizeof(off);
	int n = NDESC;
	char *m;

	xsk = socket(AF_XDP, SOCK_RAW, 0);
	umem = mmap(NULL, NDESC * FRAME, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		    -1, 0);
	if (xsk < 0 || umem == MAP_FAILED)
		fail("AF_XDP socket");
	reg.addr = (uintptr_t)umem;
	if (setsockopt(xsk, SOL_XDP, XDP_UMEM_REG, &reg, sizeof(reg)) ||
	    setsockopt(xsk, SOL_XDP, XDP_UMEM_FILL_RING, &n, sizeof(n)) ||
	    setsockopt(xsk, SOL_XDP, XDP_UMEM_COMPLETION_RING, &n, sizeof(n)) ||
	    setsockopt(xsk, SOL_XDP, XDP_TX_RING, &n, sizeof(n)) ||
	    getsockopt(xsk, SOL_XDP, XDP_MMAP_OFFSETS, &off, &len))
		fail("AF_XDP rings");
	m = mmap(NULL, off.tx.desc + NDESC * sizeof(struct xdp_desc), PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_POPULATE, xsk, XDP_PGOFF_TX_RING);
	if (m == MAP_FAILED)
		fail("mmap Tx ring");
	tx = (struct ring){ (void *)(m + off.tx.producer), (void *)(m + off.tx.consumer),
			    m + off.tx.desc };
	m = mmap(NULL, off.cr.desc + NDESC * sizeof(uint64_t), PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_POPULATE, xsk, XDP_UMEM_PGOFF_COMPLETION_RING);
	if (m == MAP_FAILED)
		fail("mmap completion ring");
	cq = (struct ring){ (void *)(m + off.cr.producer), (void *)(m + off.cr.consumer),
			    m + off.cr.desc };
	if (bind(xsk, (struct sockaddr *)&sxdp, sizeof(sxdp)))
		fail("bind (copy mode)");
}

/* This namespace's Tx packet count of IFNAME (/proc/net/dev follows the reader's netns). */
static unsigned long tx_packets(void)
{
	unsigned long v[10];
	char line[512], name[IFNAMSIZ + 2];
	FILE *f = fopen("/proc/net/dev", "r");

	snprintf(name, sizeof(name), "%s:", ifname);
	while (f && fgets(line, sizeof(line), f)) {
		char *p = strstr(line, name);

		if (p && sscanf(p + strlen(name), "%lu %lu %lu %lu %lu %lu %lu %lu %lu %lu", &v[0],
				&v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) == 10) {
			fclose(f);
			return v[9];
		}
	}
	fail("no Tx count in /proc/net/dev");
	return 0;
}

/* Sends one frame through the socket; checks it completed and whether it left (SENT). */
static void send_one(const char *what, int sent)
{
	static uint32_t next;
	unsigned char frame[60] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1,
				    0x88, 0xb5 };
	struct xdp_desc *d = (struct xdp_desc *)tx.descs + (next % NDESC);
	unsigned long before = tx_packets();
	uint32_t done;

	memcpy(umem + (next % NDESC) * FRAME, frame, sizeof(frame));
	d->addr = (next % NDESC) * FRAME;
	d->len = sizeof(frame);
	d->options = 0;
	next++;
	__atomic_store_n(tx.producer, next, __ATOMIC_RELEASE);
	if (sendto(xsk, NULL, 0, MSG_DONTWAIT, NULL, 0) && errno != EAGAIN && errno != EBUSY)
		fail("sendto");
	for (int i = 0; i < 1000; i++) {
		done = __atomic_load_n(cq.producer, __ATOMIC_ACQUIRE);
		if (done == next)
			break;
		usleep(1000);
	}
	if (done != next || ((uint64_t *)cq.descs)[(next - 1) % NDESC] != d->addr) {
		printf("FAIL %s: %u of %u completions\n", what, done, next);
		exit(1);
	}
	__atomic_store_n(cq.consumer, done, __ATOMIC_RELEASE);
	if ((tx_packets() - before) != (unsigned long)sent) {
		printf("FAIL %s: %lu frames left, want %d\n", what, tx_packets() - before, sent);
		exit(1);
	}
	ok(what);
}

int main(int argc, char **argv)
{
	const struct bpf_insn drop[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = XDP_DROP },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	/* XDP_PASS when the context names our device as egress_ifindex, else XDP_DROP. */
	struct bpf_insn by_ifindex[] = {
		{ .code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = 2, .src_reg = 1,
		  .off = offsetof(struct xdp_md, egress_ifindex) },
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = XDP_PASS },
		{ .code = BPF_JMP | BPF_JEQ | BPF_K, .dst_reg = 2, .off = 1, .imm = 0 },
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = XDP_DROP },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	long at, lt;
	int p_drop, p_if, link, status;
	pid_t child;

	if (argc != 2)
		return 2;
	ifname = argv[1];
	ifindex = if_nametoindex(ifname);
	if (!ifindex)
		fail("if_nametoindex");
	at = btf_enum_value("BPF_XSK_EGRESS");
	lt = btf_enum_value("BPF_LINK_TYPE_XSK");
	if (at < 0 || lt < 0) {
		printf("FAIL no BPF_XSK_EGRESS/BPF_LINK_TYPE_XSK in the kernel's BTF\n");
		return 1;
	}
	attach_type = at;
	printf("ok BTF: BPF_XSK_EGRESS = %ld, BPF_LINK_TYPE_XSK = %ld\n", at, lt);
	by_ifindex[2].imm = ifindex;
	p_drop = load(drop, 2);
	p_if = load(by_ifindex, 5);
	ok("egress programs load (egress_ifindex readable)");

	xsk_open();
	send_one("no program: the frame leaves", 1);

	link = link_create(p_drop, xsk, attach_type);
	if (link < 0)
		fail("BPF_LINK_CREATE (drop)");
	send_one("XDP_DROP: completed, not sent", 0);
	send_one("XDP_DROP again", 0);
	if (link_create(p_if, xsk, attach_type) >= 0 || errno != EBUSY)
		fail("a second link on the socket is refused with EBUSY");
	ok("a second link on the socket is refused (EBUSY)");
	close(link);
	send_one("link closed: the frame leaves", 1);

	link = link_create(p_if, xsk, attach_type);
	if (link < 0)
		fail("BPF_LINK_CREATE (by ifindex)");
	send_one("XDP_PASS on egress_ifindex match: sent", 1);
	close(link);

	{
		union bpf_attr a;

		memset(&a, 0, sizeof(a));
		a.link_create.prog_fd = p_drop;
		a.link_create.target_ifindex = ifindex;
		a.link_create.attach_type = BPF_XDP;
		if (sys_bpf(BPF_LINK_CREATE, &a) >= 0 || errno != EINVAL)
			fail("an egress program attached to a device is refused");
		ok("an egress program cannot be attached to a device (EINVAL)");
	}

	child = fork();
	if (child == 0) {
		struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
		struct __user_cap_data_struct c[2];

		if (syscall(SYS_capget, &h, c))
			fail("capget");
		c[0].effective &= ~(1u << CAP_NET_ADMIN);
		if (syscall(SYS_capset, &h, c))
			fail("capset");
		_exit(link_create(p_drop, xsk, attach_type) < 0 && errno == EPERM ? 0 : 1);
	}
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status))
		fail("attaching without CAP_NET_ADMIN is refused with EPERM");
	ok("attaching without CAP_NET_ADMIN is refused (EPERM)");
	printf("xsk_egress: all checks passed\n");
	return 0;
}
