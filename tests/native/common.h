/* SPDX-License-Identifier: MIT */
/*
 * What the series' checks (the .c files beside it) share: reporting, the bpf() syscall, the
 * new UAPI values read from the kernel's BTF (as etran will), program loading, bpf_links, BPF
 * map counters, the counting egress program, interfaces set up, veth pairs and AF_XDP sockets
 * with their Tx wakeup. Plain syscalls only (no libbpf): the checks are built with gcc -static
 * for the qemu guest's initramfs.
 */
#ifndef NATIVE_COMMON_H
#define NATIVE_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>
#include <linux/if_xdp.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef AF_XDP
#define AF_XDP 44
#endif
#ifndef SOL_XDP
#define SOL_XDP 283
#endif

/* Descriptors per ring and UMEM frames (a check may define more before including this); the
 * frame size.
 */
#ifndef NDESC
#define NDESC 64
#endif
#define FRAME 2048

#define INSN(c, d, s, o, i) { .code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i) }
#define CTX(field) offsetof(struct xdp_md, field)

/* The start of an XDP program that looks at a frame's EtherType: r2 = data, r3 = data_end,
 * r4 = the EtherType (network order), for frames of at least LEN bytes; a shorter one jumps
 * SHORT instructions ahead of the check.
 */
#define ETHERTYPE_R4(len, short) \
	INSN(BPF_LDX | BPF_MEM | BPF_W, 2, 1, CTX(data), 0), \
	INSN(BPF_LDX | BPF_MEM | BPF_W, 3, 1, CTX(data_end), 0), \
	INSN(BPF_ALU64 | BPF_MOV | BPF_X, 4, 2, 0, 0), \
	INSN(BPF_ALU64 | BPF_ADD | BPF_K, 4, 0, 0, (len)), \
	INSN(BPF_JMP | BPF_JGT | BPF_X, 4, 3, (short), 0), \
	INSN(BPF_LDX | BPF_MEM | BPF_H, 4, 2, 12, 0)

/* The end of an XDP program: bpf_redirect_map(the XSKMAP, 0, XDP_PASS), the map's fd in the imm
 * of this sequence's first instruction; then, 5 instructions in, XDP_PASS for frames that jump
 * there.
 */
#define REDIRECT_SLOT0_ELSE_PASS \
	INSN(BPF_LD | BPF_IMM | BPF_DW, 1, BPF_PSEUDO_MAP_FD, 0, 0), \
	INSN(0, 0, 0, 0, 0), \
	INSN(BPF_ALU64 | BPF_MOV | BPF_K, 2, 0, 0, 0), \
	INSN(BPF_ALU64 | BPF_MOV | BPF_K, 3, 0, 0, XDP_PASS), \
	INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_redirect_map), \
	INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0), \
	INSN(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, XDP_PASS), \
	INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)

/* The end of a program whose verdict is in r7: counts it (an array map of u64 counters indexed
 * by verdict, whose fd goes in the imm of this sequence's second instruction) and returns it.
 */
#define COUNT_VERDICT_R7 \
	INSN(BPF_STX | BPF_MEM | BPF_W, 10, 7, -4, 0), \
	INSN(BPF_LD | BPF_IMM | BPF_DW, 1, BPF_PSEUDO_MAP_FD, 0, 0), \
	INSN(0, 0, 0, 0, 0), \
	INSN(BPF_ALU64 | BPF_MOV | BPF_X, 2, 10, 0, 0), \
	INSN(BPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, -4), \
	INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem), \
	INSN(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 2, 0), \
	INSN(BPF_ALU64 | BPF_MOV | BPF_K, 1, 0, 0, 1), \
	INSN(BPF_STX | BPF_ATOMIC | BPF_DW, 0, 1, 0, BPF_ADD), \
	INSN(BPF_ALU64 | BPF_MOV | BPF_X, 0, 7, 0, 0), \
	INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)

static inline void fail(const char *what)
{
	printf("FAIL %s (errno %d: %s)\n", what, errno, strerror(errno));
	exit(1);
}

static inline void ok(const char *what)
{
	printf("ok %s\n", what);
}

/* "ok WHAT: GOT" when GOT is WANT; a failure otherwise. */
static inline void expect_eq(const char *what, uint64_t got, uint64_t want)
{
	if (got != want) {
		printf("FAIL %s: %llu, want %llu\n", what, (unsigned long long)got,
		       (unsigned long long)want);
		exit(1);
	}
	printf("ok %s: %llu\n", what, (unsigned long long)got);
}

static inline long sys_bpf(int cmd, union bpf_attr *attr)
{
	return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

/* The kernel's BTF (/sys/kernel/btf/vmlinux), read once; fails without. */
struct btf_types {
	char *start, *end, *strs;
};

static inline struct btf_types btf_types(void)
{
	struct { uint16_t magic; uint8_t ver, flags; uint32_t hdr_len, type_off, type_len,
		 str_off, str_len; } *hdr;
	static char buf[32 << 20];
	static ssize_t got;
	ssize_t n;
	int fd;

	if (!got) {
		fd = open("/sys/kernel/btf/vmlinux", O_RDONLY);
		if (fd < 0)
			fail("open /sys/kernel/btf/vmlinux");
		while ((n = read(fd, buf + got, sizeof(buf) - got)) > 0)
			got += n;
		close(fd);
	}
	hdr = (void *)buf;
	if (got < (ssize_t)sizeof(*hdr) || hdr->magic != 0xeb9f)
		fail("read BTF");
	return (struct btf_types){ buf + hdr->hdr_len + hdr->type_off,
				   buf + hdr->hdr_len + hdr->type_off + hdr->type_len,
				   buf + hdr->hdr_len + hdr->str_off };
}

/* The BTF type after the one at T. */
static inline char *btf_next(char *t)
{
	uint32_t *ty = (uint32_t *)t, kind = (ty[1] >> 24) & 0x1f, vlen = ty[1] & 0xffff;
	size_t extra = 0;

	switch (kind) {
	case 1: case 14: case 17: extra = 4; break; /* int, var, decl_tag */
	case 3: extra = 12; break; /* array */
	case 4: case 5: case 15: case 19: extra = 12 * vlen; break; /* members, enum64 */
	case 6: case 13: extra = 8 * vlen; break; /* enum, func_proto */
	}
	return t + 12 + extra;
}

/* The value of enumerator NAME in the kernel's BTF; fails without. */
static inline uint32_t btf_enum_value(const char *name)
{
	struct btf_types b = btf_types();

	for (char *t = b.start; t < b.end; t = btf_next(t)) {
		uint32_t *ty = (uint32_t *)t, vlen = ty[1] & 0xffff;

		if (((ty[1] >> 24) & 0x1f) == 6)
			for (uint32_t i = 0; i < vlen; i++)
				if (!strcmp(b.strs + ty[3 + 2 * i], name)) {
					printf("ok BTF: %s = %u\n", name, ty[4 + 2 * i]);
					return ty[4 + 2 * i];
				}
	}
	printf("FAIL no %s in the kernel's BTF\n", name);
	exit(1);
}

/* The BTF id of the function NAME (a kfunc, for a call with BPF_PSEUDO_KFUNC_CALL); fails
 * without.
 */
static inline uint32_t btf_func_id(const char *name)
{
	struct btf_types b = btf_types();
	uint32_t id = 1;

	for (char *t = b.start; t < b.end; t = btf_next(t), id++) {
		uint32_t *ty = (uint32_t *)t;

		if (((ty[1] >> 24) & 0x1f) == 12 && !strcmp(b.strs + ty[0], name)) {
			printf("ok BTF: function %s\n", name);
			return id;
		}
	}
	printf("FAIL no function %s in the kernel's BTF\n", name);
	exit(1);
}

/* Loads an XDP program of N instructions expecting ATTACH_TYPE; prints the verifier's log when
 * it is refused.
 */
static inline int load(const struct bpf_insn *insns, int n, uint32_t attach_type)
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

/* A bpf_link of PROG to TARGET (a socket or an ifindex) as TYPE, with FLAGS. */
static inline int link_create(int prog, int target, uint32_t type, uint32_t flags)
{
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.link_create.prog_fd = prog;
	a.link_create.target_fd = target;
	a.link_create.attach_type = type;
	a.link_create.flags = flags;
	return sys_bpf(BPF_LINK_CREATE, &a);
}

/* An array map of N u64 counters (or any 4-byte-keyed array of u64). */
static inline int counters(uint32_t n)
{
	union bpf_attr a;
	int fd;

	memset(&a, 0, sizeof(a));
	a.map_type = BPF_MAP_TYPE_ARRAY;
	a.key_size = 4;
	a.value_size = 8;
	a.max_entries = n;
	fd = sys_bpf(BPF_MAP_CREATE, &a);
	if (fd < 0)
		fail("BPF_MAP_CREATE");
	return fd;
}

/* Reads the value at KEY of MAP into VALUE (of the map's value size). */
static inline void map_read(int map, uint32_t key, void *value)
{
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.map_fd = map;
	a.key = (uintptr_t)&key;
	a.value = (uintptr_t)value;
	if (sys_bpf(BPF_MAP_LOOKUP_ELEM, &a))
		fail("BPF_MAP_LOOKUP_ELEM");
}

/* Writes VALUE (of the map's value size) at KEY of MAP. */
static inline void map_write(int map, uint32_t key, const void *value)
{
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.map_fd = map;
	a.key = (uintptr_t)&key;
	a.value = (uintptr_t)value;
	if (sys_bpf(BPF_MAP_UPDATE_ELEM, &a))
		fail("BPF_MAP_UPDATE_ELEM");
}

static inline uint64_t counter(int map, uint32_t key)
{
	uint64_t v;

	map_read(map, key, &v);
	return v;
}

static inline void set_counter(int map, uint32_t key, uint64_t v)
{
	map_write(map, key, &v);
}

/* The Tx packet count of device NAME in this network namespace (/proc/net/dev follows the
 * reader).
 */
static inline unsigned long tx_packets(const char *name)
{
	unsigned long v[10];
	char line[512], key[IFNAMSIZ + 2];
	FILE *f = fopen("/proc/net/dev", "r");

	snprintf(key, sizeof(key), "%s:", name);
	while (f && fgets(line, sizeof(line), f)) {
		char *p = strstr(line, key);

		if (p && sscanf(p + strlen(key), "%lu %lu %lu %lu %lu %lu %lu %lu %lu %lu", &v[0],
				&v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) == 10) {
			fclose(f);
			return v[9];
		}
	}
	fail("no Tx count in /proc/net/dev");
	return 0;
}

/* A Tx wakeup of the AF_XDP socket FD (sendto without data); a busy or full ring is no error. */
static inline void xsk_kick(int fd)
{
	if (sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0) && errno != EAGAIN && errno != EBUSY &&
	    errno != ENOBUFS)
		fail("sendto");
}

/* Loads the counting egress program for ATTACH_TYPE: XDP_PASS for a frame whose first payload
 * byte (after the Ethernet header) is 'P' when the context names IFINDEX (egress_ifindex,
 * ingress_ifindex) and queue 0; XDP_DROP otherwise. Each verdict is counted in MAP, an array
 * of counters() indexed by verdict.
 */
static inline int load_counting(uint32_t attach_type, int ifindex, int map)
{
	struct bpf_insn count[] = {
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0),		/* r6 = ctx */
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 7, 0, 0, XDP_DROP),	/* r7 = verdict */
		INSN(BPF_LDX | BPF_MEM | BPF_W, 2, 6, CTX(data), 0),
		INSN(BPF_LDX | BPF_MEM | BPF_W, 3, 6, CTX(data_end), 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, 4, 2, 0, 0),
		INSN(BPF_ALU64 | BPF_ADD | BPF_K, 4, 0, 0, 15),
		INSN(BPF_JMP | BPF_JGT | BPF_X, 4, 3, 9, 0),		/* short: count */
		INSN(BPF_LDX | BPF_MEM | BPF_B, 5, 2, 14, 0),
		INSN(BPF_JMP | BPF_JNE | BPF_K, 5, 0, 7, 'P'),
		INSN(BPF_LDX | BPF_MEM | BPF_W, 5, 6, CTX(egress_ifindex), 0),
		INSN(BPF_JMP | BPF_JNE | BPF_K, 5, 0, 5, 0),		/* imm: ifindex */
		INSN(BPF_LDX | BPF_MEM | BPF_W, 5, 6, CTX(ingress_ifindex), 0),
		INSN(BPF_JMP | BPF_JNE | BPF_K, 5, 0, 3, 0),		/* imm: ifindex */
		INSN(BPF_LDX | BPF_MEM | BPF_W, 5, 6, CTX(rx_queue_index), 0),
		INSN(BPF_JMP | BPF_JNE | BPF_K, 5, 0, 1, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 7, 0, 0, XDP_PASS),
		/* count: counts_map[r7] += 1 */
		COUNT_VERDICT_R7,				/* 16: the map at 17 */
	};
	count[10].imm = ifindex;
	count[12].imm = ifindex;
	count[17].imm = map;
	return load(count, sizeof(count) / sizeof(count[0]), attach_type);
}

/* Checks the counting program's tally in MAP: PASS times XDP_PASS and DROP times XDP_DROP in
 * all.
 */
static inline void check_counts(int map, const char *what, uint64_t pass, uint64_t drop)
{
	uint64_t got_pass = counter(map, XDP_PASS), got_drop = counter(map, XDP_DROP);

	if (got_pass != pass || got_drop != drop) {
		printf("FAIL %s: the program counted %llu passes and %llu drops, want %llu and "
		       "%llu\n", what, (unsigned long long)got_pass, (unsigned long long)got_drop,
		       (unsigned long long)pass, (unsigned long long)drop);
		exit(1);
	}
	printf("ok %s: the program counted %llu passes and %llu drops\n", what,
	       (unsigned long long)pass, (unsigned long long)drop);
}

/* An XSKMAP of N sockets. */
static inline int xskmap_new(uint32_t n)
{
	union bpf_attr a;
	int fd;

	memset(&a, 0, sizeof(a));
	a.map_type = BPF_MAP_TYPE_XSKMAP;
	a.key_size = 4;
	a.value_size = 4;
	a.max_entries = n;
	fd = sys_bpf(BPF_MAP_CREATE, &a);
	if (fd < 0)
		fail("BPF_MAP_CREATE (XSKMAP)");
	return fd;
}

/* Puts the socket XSK in MAP at KEY. */
static inline void xskmap_put(int map, uint32_t key, int xsk)
{
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.map_fd = map;
	a.key = (uintptr_t)&key;
	a.value = (uintptr_t)&xsk;
	if (sys_bpf(BPF_MAP_UPDATE_ELEM, &a))
		fail("put the socket in the XSKMAP");
}

/* Sets the interface NAME up, without IPv6: no autoconfiguration frames among the ones the
 * checks count.
 */
static inline void if_up_quiet(const char *name)
{
	int s = socket(AF_INET, SOCK_DGRAM, 0), v6;
	struct ifreq ifr;
	char path[96];

	snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", name);
	v6 = open(path, O_WRONLY);
	if (v6 >= 0 && (write(v6, "1", 1) != 1 || close(v6)))
		fail("disable IPv6");
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr))
		fail("SIOCGIFFLAGS");
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr))
		fail("SIOCSIFFLAGS");
	close(s);
}

static inline struct rtattr *rta_add(struct nlmsghdr *n, int type, const void *data, int len)
{
	struct rtattr *rta = (struct rtattr *)((char *)n + NLMSG_ALIGN(n->nlmsg_len));

	rta->rta_type = type;
	rta->rta_len = RTA_LENGTH(len);
	if (len)
		memcpy(RTA_DATA(rta), data, len);
	n->nlmsg_len = NLMSG_ALIGN(n->nlmsg_len) + RTA_ALIGN(rta->rta_len);
	return rta;
}

static inline void rta_end(struct nlmsghdr *n, struct rtattr *nest)
{
	nest->rta_len = (char *)n + n->nlmsg_len - (char *)nest;
}

/* Creates the veth pair NAME/PEER with QUEUES Rx and Tx queues each (veth's default is one)
 * through rtnetlink and sets both up, without IPv6.
 */
static inline void veth_pair_queues(const char *name, const char *peer, uint32_t queues)
{
	struct {
		struct nlmsghdr n;
		struct ifinfomsg i;
		char buf[512];
	} req = { .n = { .nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg)),
			 .nlmsg_type = RTM_NEWLINK,
			 .nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK } };
	struct {
		struct nlmsghdr n;
		struct nlmsgerr e;
	} ack;
	struct ifinfomsg peer_info = { 0 };
	struct rtattr *info, *data, *p;
	int fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);

	rta_add(&req.n, IFLA_IFNAME, name, strlen(name) + 1);
	rta_add(&req.n, IFLA_NUM_TX_QUEUES, &queues, 4);
	rta_add(&req.n, IFLA_NUM_RX_QUEUES, &queues, 4);
	info = rta_add(&req.n, IFLA_LINKINFO, NULL, 0);
	rta_add(&req.n, IFLA_INFO_KIND, "veth", 4);
	data = rta_add(&req.n, IFLA_INFO_DATA, NULL, 0);
	p = rta_add(&req.n, VETH_INFO_PEER, &peer_info, sizeof(peer_info));
	rta_add(&req.n, IFLA_IFNAME, peer, strlen(peer) + 1);
	rta_add(&req.n, IFLA_NUM_TX_QUEUES, &queues, 4);
	rta_add(&req.n, IFLA_NUM_RX_QUEUES, &queues, 4);
	rta_end(&req.n, p);
	rta_end(&req.n, data);
	rta_end(&req.n, info);
	if (fd < 0 || send(fd, &req, req.n.nlmsg_len, 0) < 0 ||
	    recv(fd, &ack, sizeof(ack), 0) < (ssize_t)sizeof(ack))
		fail("rtnetlink");
	close(fd);
	if (ack.n.nlmsg_type != NLMSG_ERROR || ack.e.error) {
		errno = -ack.e.error;
		fail("create the veth pair");
	}
	if_up_quiet(name);
	if_up_quiet(peer);
}

/* The ifindex of device NAME; fails without. */
static inline int ifindex_of(const char *name)
{
	int ifindex = if_nametoindex(name);

	if (!ifindex)
		fail("if_nametoindex");
	return ifindex;
}

/* Whether IFNAME is a virtio-net device (its driver's name in sysfs). */
static inline int is_virtio_net(const char *ifname)
{
	char path[128], target[256];
	ssize_t n;

	snprintf(path, sizeof(path), "/sys/class/net/%s/device/driver", ifname);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return 0;
	target[n] = 0;
	return strstr(target, "virtio_net") != NULL;
}

/* A packet socket that receives every frame device IFINDEX (NAME, for messages) gets, with a
 * receive buffer of 4 MiB: a batch's frames arrive in one NAPI poll, each an skb of a page, and
 * the default buffer holds about 45 of them.
 */
static inline int packet_socket(int ifindex, const char *name)
{
	struct sockaddr_ll bind_to = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
				       .sll_ifindex = ifindex };
	int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));

	if (fd < 0 || bind(fd, (struct sockaddr *)&bind_to, sizeof(bind_to)) ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &(int){ 4 << 20 }, sizeof(int))) {
		printf("FAIL packet socket on %s\n", name);
		exit(1);
	}
	return fd;
}

/* veth_pair_queues with one queue each. */
static inline void veth_pair(const char *name, const char *peer)
{
	veth_pair_queues(name, peer, 1);
}

struct ring {
	uint32_t *producer, *consumer;
	void *descs;
	void *map;	/* the mapping, for munmap */
	size_t len;
};

/* An AF_XDP socket, its UMEM and rings (rx and tx only when asked for). */
struct xsk {
	int fd;
	char *umem;
	struct ring fill, cq, rx, tx;
};

/* Maps one of X's rings, whose size was set, at PGOFF. */
static inline struct ring xsk_ring(struct xsk *x, const struct xdp_ring_offset *off,
				   size_t desc_size, off_t pgoff)
{
	size_t len = off->desc + NDESC * desc_size;
	char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, x->fd, pgoff);

	if (m == MAP_FAILED)
		fail("mmap an AF_XDP ring");
	return (struct ring){ (void *)(m + off->producer), (void *)(m + off->consumer),
			      m + off->desc, m, len };
}

/* Unmaps X's rings and closes it: the socket is released (a mapping holds it open). */
static inline void xsk_close(struct xsk *x)
{
	struct ring *rings[] = { &x->fill, &x->cq, &x->rx, &x->tx };

	for (size_t i = 0; i < sizeof(rings) / sizeof(rings[0]); i++)
		if (rings[i]->map && munmap(rings[i]->map, rings[i]->len))
			fail("munmap an AF_XDP ring");
	if (close(x->fd))
		fail("close the AF_XDP socket");
}

/* Opens an AF_XDP socket with a UMEM of NDESC frames, its fill and completion rings and, when
 * asked, Rx and Tx rings; binds it to IFINDEX's QUEUE with BIND_FLAGS unless IFINDEX is 0.
 */
static inline struct xsk xsk_open_queue(int ifindex, uint32_t queue, uint16_t bind_flags, int rx,
					int tx)
{
	struct xdp_umem_reg reg = { .len = NDESC * FRAME, .chunk_size = FRAME };
	struct sockaddr_xdp sxdp = { .sxdp_family = AF_XDP, .sxdp_ifindex = ifindex,
				     .sxdp_queue_id = queue, .sxdp_flags = bind_flags };
	struct xdp_mmap_offsets off;
	socklen_t len = sizeof(off);
	struct xsk x = { 0 };
	int n = NDESC;

	x.fd = socket(AF_XDP, SOCK_RAW, 0);
	x.umem = mmap(NULL, NDESC * FRAME, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		      -1, 0);
	if (x.fd < 0 || x.umem == MAP_FAILED)
		fail("AF_XDP socket");
	reg.addr = (uintptr_t)x.umem;
	if (setsockopt(x.fd, SOL_XDP, XDP_UMEM_REG, &reg, sizeof(reg)) ||
	    setsockopt(x.fd, SOL_XDP, XDP_UMEM_FILL_RING, &n, sizeof(n)) ||
	    setsockopt(x.fd, SOL_XDP, XDP_UMEM_COMPLETION_RING, &n, sizeof(n)) ||
	    (rx && setsockopt(x.fd, SOL_XDP, XDP_RX_RING, &n, sizeof(n))) ||
	    (tx && setsockopt(x.fd, SOL_XDP, XDP_TX_RING, &n, sizeof(n))) ||
	    getsockopt(x.fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &len))
		fail("AF_XDP rings");
	x.fill = xsk_ring(&x, &off.fr, sizeof(uint64_t), XDP_UMEM_PGOFF_FILL_RING);
	x.cq = xsk_ring(&x, &off.cr, sizeof(uint64_t), XDP_UMEM_PGOFF_COMPLETION_RING);
	if (rx)
		x.rx = xsk_ring(&x, &off.rx, sizeof(struct xdp_desc), XDP_PGOFF_RX_RING);
	if (tx)
		x.tx = xsk_ring(&x, &off.tx, sizeof(struct xdp_desc), XDP_PGOFF_TX_RING);
	if (ifindex && bind(x.fd, (struct sockaddr *)&sxdp, sizeof(sxdp)))
		fail("bind the AF_XDP socket");
	return x;
}

/* xsk_open_queue on queue 0. */
static inline struct xsk xsk_open(int ifindex, uint16_t bind_flags, int rx, int tx)
{
	return xsk_open_queue(ifindex, 0, bind_flags, rx, tx);
}

#endif
