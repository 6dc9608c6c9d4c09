// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The Homa object. Today it carries only Homa's layouts and limits (homa_wire.h, homa.h) into
 * BTF, hence into the skeleton's Rust types (transport/homa/wire.rs encodes and decodes with
 * them); its ingress, egress and grant programs come next (ARCHITECTURE.md, "Homa"). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "homa/homa.h"

/* Never read: declared so that the layouts reach the object's BTF. */
const volatile struct etran_homa_layouts etran_homa_layouts;

char LICENSE[] SEC("license") = "Dual BSD/GPL";
