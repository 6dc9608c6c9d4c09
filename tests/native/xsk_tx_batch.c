// SPDX-License-Identifier: MIT
/*
 * The native series' batched copy-mode transmit (patches/0009), checked on the patched kernel
 * (run by scripts/native-test inside the qemu guest) on a veth pair of its own (xbat0, xbat1):
 * the segments of one TCP flow that a copy-mode AF_XDP socket with an egress program sends in one
 * sendto() reach the peer in one NAPI poll, where GRO merges them (seen by a packet socket on the
 * peer as fewer, longer packets carrying every byte); the same batch from a socket without an
 * egress program still reaches the peer frame by frame, as before the series.
 *
 *   xsk_tx_batch    prints one "ok ..." line per check; exits 1 at the first failure
 */
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <poll.h>

#include "common.h"

#define SEGS 16
#define PAYLOAD 1000
#define HDRS (14 + 20 + 20)

static const char *ifname = "xbat0", *peername = "xbat1";

/* An ethtool "set value" command (ETHTOOL_SGRO, ETHTOOL_STXCSUM...) on device NAME. */
static void ethtool_set(const char *name, uint32_t cmd, uint32_t value)
{
	struct ethtool_value v = { .cmd = cmd, .data = value };
	struct ifreq ifr = { 0 };
	int s = socket(AF_INET, SOCK_DGRAM, 0);

	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	ifr.ifr_data = (void *)&v;
	if (s < 0 || ioctl(s, SIOCETHTOOL, &ifr))
		fail("SIOCETHTOOL");
	close(s);
}

/* The Internet checksum of LEN bytes at P, added to SUM (folded, not complemented). */
static uint32_t csum_add(uint32_t sum, const void *p, size_t len)
{
	const uint8_t *b = p;

	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)b[i] << 8 | b[i + 1];
	if (len & 1)
		sum += (uint32_t)b[len - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return sum;
}

/* Segment I of the flow 10.98.0.1:4000 -> 10.98.0.2:5000 into FRAME: ACK, DF, consecutive
 * sequence numbers and IP IDs, PAYLOAD bytes of I, both checksums right (GRO checks them).
 */
static void put_segment(char *frame, uint32_t i)
{
	uint8_t *f = (uint8_t *)frame;
	struct iphdr *ip = (struct iphdr *)(f + 14);
	struct tcphdr *tcp = (struct tcphdr *)(f + 34);
	uint8_t pseudo[12] = { 10, 98, 0, 1, 10, 98, 0, 2, 0, IPPROTO_TCP, (20 + PAYLOAD) >> 8,
			       (20 + PAYLOAD) & 0xff };
	uint32_t sum;

	memset(f, 0, HDRS);
	memset(f, 0x02, 6);	/* to 02:02:02:02:02:02, from 02:00:00:00:00:01 */
	f[6] = 0x02;
	f[11] = 1;
	f[12] = 0x08;		/* IPv4 */
	ip->version = 4;
	ip->ihl = 5;
	ip->tot_len = htons(20 + 20 + PAYLOAD);
	ip->id = htons(100 + i);
	ip->frag_off = htons(IP_DF);
	ip->ttl = 64;
	ip->protocol = IPPROTO_TCP;
	memcpy(&ip->saddr, pseudo, 4);
	memcpy(&ip->daddr, pseudo + 4, 4);
	ip->check = htons(~csum_add(0, ip, 20) & 0xffff);
	tcp->source = htons(4000);
	tcp->dest = htons(5000);
	tcp->seq = htonl(1000 + i * PAYLOAD);
	tcp->ack_seq = htonl(1);
	tcp->doff = 5;
	tcp->ack = 1;
	tcp->window = htons(1000);
	memset(f + HDRS, 'a' + i, PAYLOAD);
	sum = csum_add(csum_add(0, pseudo, sizeof(pseudo)), tcp, 20 + PAYLOAD);
	tcp->check = htons(~sum & 0xffff);
}

/* Sends the flow's SEGS segments from X in one sendto() and waits for their completions; then
 * reads the tap until every payload byte arrived. Returns the packets that carried them.
 */
static int send_flow(struct xsk *x, int tap)
{
	static uint32_t next;
	static char buf[1 << 16];
	uint32_t first = next;
	int packets = 0, bytes = 0;

	for (uint32_t i = 0; i < SEGS; i++, next++) {
		struct xdp_desc *d = (struct xdp_desc *)x->tx.descs + (next % NDESC);

		put_segment(x->umem + (next % NDESC) * FRAME, i);
		d->addr = (next % NDESC) * FRAME;
		d->len = HDRS + PAYLOAD;
		d->options = 0;
	}
	__atomic_store_n(x->tx.producer, next, __ATOMIC_RELEASE);
	/* One sendto takes the whole batch; the kicks after it only serve a batch cut short (a
	 * busy device, an allocation that failed).
	 */
	for (int i = 0; i < 1000 && __atomic_load_n(x->cq.producer, __ATOMIC_ACQUIRE) != next; i++) {
		xsk_kick(x->fd);
		usleep(1000);
	}
	if (__atomic_load_n(x->cq.producer, __ATOMIC_ACQUIRE) != next) {
		printf("FAIL %u of %u completions\n",
		       __atomic_load_n(x->cq.producer, __ATOMIC_ACQUIRE) - first, SEGS);
		exit(1);
	}
	__atomic_store_n(x->cq.consumer, next, __ATOMIC_RELEASE);
	while (bytes < SEGS * PAYLOAD) {
		struct pollfd p = { .fd = tap, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 2000) != 1) {
			printf("FAIL %d of %d payload bytes reached the peer\n", bytes,
			       SEGS * PAYLOAD);
			exit(1);
		}
		n = recv(tap, buf, sizeof(buf), 0);
		if (n < HDRS)
			fail("recv on the packet socket");
		packets++;
		bytes += n - HDRS;
	}
	if (bytes != SEGS * PAYLOAD) {
		printf("FAIL %d payload bytes reached the peer, want %d\n", bytes, SEGS * PAYLOAD);
		exit(1);
	}
	return packets;
}

int main(void)
{
	const struct bpf_insn pass[] = {
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, XDP_PASS),
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
	};
	uint32_t attach_type;
	int ifindex, prog, link, tap, got;
	struct xsk x;

	veth_pair(ifname, peername);
	ifindex = ifindex_of(ifname);
	/* The sender without checksum offload (so without TSO): veth hands such a device's frames
	 * to its peer's NAPI; the peer with GRO on (NAPI: set while it is up).
	 */
	ethtool_set(ifname, ETHTOOL_STXCSUM, 0);
	ethtool_set(peername, ETHTOOL_SGRO, 1);
	attach_type = btf_enum_value("BPF_XSK_EGRESS");
	prog = load(pass, sizeof(pass) / sizeof(pass[0]), attach_type);
	tap = packet_socket(ifindex_of(peername), peername);

	x = xsk_open(ifindex, XDP_COPY, 0, 1);
	got = send_flow(&x, tap);
	if (got != SEGS) {
		printf("FAIL without an egress program: %d packets, want %d (frame by frame)\n", got,
		       SEGS);
		exit(1);
	}
	printf("ok without an egress program: %d segments sent in one sendto reach the peer as %d "
	       "packets (frame by frame, as before)\n", SEGS, got);

	link = link_create(prog, x.fd, attach_type, 0);
	if (link < 0)
		fail("BPF_LINK_CREATE");
	got = send_flow(&x, tap);
	if (got >= SEGS / 2) {
		printf("FAIL with an egress program: %d packets, want fewer than %d (GRO)\n", got,
		       SEGS / 2);
		exit(1);
	}
	printf("ok with an egress program: %d segments sent in one sendto reach the peer in one "
	       "NAPI poll, merged by GRO into %d packet(s), every byte there\n", SEGS, got);
	close(link);
	close(x.fd);
	printf("xsk_tx_batch: all checks passed\n");
	return 0;
}
