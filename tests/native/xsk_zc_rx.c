// SPDX-License-Identifier: MIT
/*
 * virtio-net's zero-copy receive (patches/0013), checked on the patched kernel inside the qemu
 * guest, whose two virtio-net NICs eth0 and eth1 are joined by a qemu hub (scripts/kernel-matrix):
 * a socket bound to eth0 with XDP_ZEROCOPY, to which eth0's native XDP program redirects the
 * frames of a local experimental EtherType through an XSKMAP (other frames pass), receives every
 * frame a packet socket on eth1 sends, once and intact, in its own UMEM, and its buffers go round
 * the fill ring again. Without 0013 none arrives: the driver handed the vring DMA addresses its
 * receive queue does not take, and dropped every frame before the program ran.
 *
 *   xsk_zc_rx   prints one "ok ..." line per check; exits 1 at the first failure
 */
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>

#include "common.h"

#define TYPE 0x88b6
/* Frames sent, more than the socket's buffers: they must come back through the fill ring. */
#define FRAMES (3 * NDESC)
#define LEN 300

/* Byte I of frame SEQ's payload. */
static unsigned char pattern(uint32_t seq, int i)
{
	return (unsigned char)(seq * 7 + i);
}

int main(void)
{
	/* Frames of TYPE: bpf_redirect_map(xskmap, 0, XDP_PASS); the rest: XDP_PASS. */
	struct bpf_insn redirect[] = {
		ETHERTYPE_R4(14, 8),						/* short: pass */
		INSN(BPF_JMP | BPF_JNE | BPF_K, 4, 0, 6, htons(TYPE)),		/* -> pass */
		REDIRECT_SLOT0_ELSE_PASS,					/* 7: the XSKMAP */
	};
	unsigned char frame[LEN] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 2,
				     TYPE >> 8, TYPE & 0xff };
	struct xdp_options opts;
	socklen_t optlen = sizeof(opts);
	int ifindex0, ifindex1, map, tx_fd, seen[FRAMES] = { 0 };
	uint32_t got = 0, fill = NDESC, rx = 0;
	struct xsk x;

	if (!is_virtio_net("eth0") || !is_virtio_net("eth1"))
		fail("eth0 and eth1 are virtio-net devices (scripts/kernel-matrix's qemu hub)");
	if_up_quiet("eth0");
	if_up_quiet("eth1");
	ifindex0 = ifindex_of("eth0");
	ifindex1 = ifindex_of("eth1");

	map = xskmap_new(1);
	redirect[7].imm = map;
	if (link_create(load(redirect, sizeof(redirect) / sizeof(redirect[0]), BPF_XDP), ifindex0,
			BPF_XDP, XDP_FLAGS_DRV_MODE) < 0)
		fail("attach the native XDP program to eth0");
	x = xsk_open(ifindex0, XDP_ZEROCOPY, 1, 0);
	if (getsockopt(x.fd, SOL_XDP, XDP_OPTIONS, &opts, &optlen) ||
	    !(opts.flags & XDP_OPTIONS_ZEROCOPY))
		fail("the socket on eth0 runs in zero copy (XDP_OPTIONS)");
	for (uint32_t i = 0; i < NDESC; i++)
		((uint64_t *)x.fill.descs)[i] = (uint64_t)i * FRAME;
	__atomic_store_n(x.fill.producer, fill, __ATOMIC_RELEASE);
	xskmap_put(map, 0, x.fd);
	ok("an AF_XDP socket on virtio-net eth0 in zero copy, eth0's XDP program redirecting to it");

	tx_fd = packet_socket(ifindex1, "eth1");
	for (uint32_t seq = 0; seq < FRAMES; seq++) {
		frame[14] = seq >> 8;
		frame[15] = seq & 0xff;
		for (int i = 16; i < LEN; i++)
			frame[i] = pattern(seq, i);
		if (send(tx_fd, frame, LEN, 0) != LEN)
			fail("send on eth1");
		/* Take what arrived and give its buffers back (2 s at most per frame). */
		for (int wait = 0; wait < 2000 && got < seq + 1; wait++) {
			uint32_t prod = __atomic_load_n(x.rx.producer, __ATOMIC_ACQUIRE);

			if (prod == rx) {
				usleep(1000);
				continue;
			}
			for (; rx != prod; rx++) {
				struct xdp_desc *d = (struct xdp_desc *)x.rx.descs + rx % NDESC;
				unsigned char *f = (unsigned char *)x.umem + d->addr;
				uint32_t s = f[14] << 8 | f[15];

				if (d->len != LEN || d->addr / FRAME >= NDESC || s >= FRAMES ||
				    memcmp(f, frame, 14) || seen[s]++)
					goto corrupt;
				for (int i = 16; i < LEN; i++)
					if (f[i] != pattern(s, i))
						goto corrupt;
				got++;
				((uint64_t *)x.fill.descs)[fill++ % NDESC] = d->addr / FRAME * FRAME;
			}
			__atomic_store_n(x.rx.consumer, rx, __ATOMIC_RELEASE);
			__atomic_store_n(x.fill.producer, fill, __ATOMIC_RELEASE);
		}
		if (got < seq + 1)
			break; /* lost: counted below */
	}
	expect_eq("frames eth0's zero-copy socket received from eth1", got, FRAMES);
	ok("every frame arrived once and intact, its buffer back on the fill ring after it");
	return 0;
corrupt:
	printf("FAIL a frame arrived corrupted, twice or out of the UMEM\n");
	return 1;
}
