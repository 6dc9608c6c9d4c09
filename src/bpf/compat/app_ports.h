/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The compat backend's maps, which every transport object includes: where frames for an app go
 * (its veth port) and where frames from an app go (the NIC). */
#ifndef ETRAN_COMPAT_APP_PORTS_H
#define ETRAN_COMPAT_APP_PORTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "common/transport.h"

/* App ports: slot → ifindex of the kernel side of the app's veth, where ingress redirects the
 * app's frames. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, ETRAN_APP_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} etran_app_ports SEC(".maps");

/* The same slots, readable: a devmap's values cannot be read from BPF, and egress needs the
 * ifindex to check that a frame comes from its connection's owner. The daemon fills both
 * together; 0 is an empty slot. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ETRAN_APP_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} etran_port_ifindex SEC(".maps");

/* Where egress sends: slot 0 is the NIC (filled by `etran up`). */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} etran_nic SEC(".maps");

#endif
