/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* TCP arithmetic shared by ingress and egress: sequence-number (serial) comparisons, correct
 * across wrap-around, and window scaling. */
#ifndef ETRAN_TCP_SEQ_H
#define ETRAN_TCP_SEQ_H

#include <linux/types.h>

#define MAX_WSCALE 14 /* RFC 7323 2.3 */

static __always_inline int before(__u32 a, __u32 b)
{
	return (__s32)(a - b) < 0;
}

static __always_inline int after(__u32 a, __u32 b)
{
	return before(b, a);
}

/* A window-scale shift as used: larger ones are taken as 14 (RFC 7323 2.3). */
static __always_inline __u32 wscale(__u8 shift)
{
	return shift > MAX_WSCALE ? MAX_WSCALE : shift;
}

#endif
