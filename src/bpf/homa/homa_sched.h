/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The receiver's grant scheduler, across every message this host receives: the policy of
 * HomaModule's homa_grant.c, whose model is transport/homa/grant.rs.
 * - SRPT: messages rank by bytes not yet received (the furthest byte that arrived), fewest
 *   first, then by age;
 * - overcommit: only the first max_overcommit messages in that order are active, one per peer
 *   (a sender sends one message at a time: a second grant to it would idle the link);
 * - window: an active message is granted up to `window` bytes past what arrived, less what
 *   the other messages of its peer have granted and not received (a FIFO grant's, unscheduled
 *   bytes: the peer's bytes on the way stay within a window, as with one message), by default
 *   max_incoming / (active + 1);
 * - cap: grants stop where the bytes granted and not received, over every scheduled message,
 *   would pass max_incoming; a message leaves the headroom its betters would take first;
 * - priorities by rank (homa_grant_priority());
 * - FIFO share: fifo_fraction per mille of the granted bytes goes, fifo_increment at a time, to
 *   the oldest message not fully granted, so that the longest never starves.
 * Only messages longer than the unscheduled bytes are scheduled.
 *
 * Where it parts from grant.rs: a message's grant is decided when something happens to it, not
 * for every message at every change: at its DATA (ingress) and when gen pops it (homa_gen.h).
 * A message whose granted bytes all arrived (no DATA of it will come) is woken by a run that
 * finds it active and waiting, whoever's app it is (the scratch's `wake`): the caller puts it
 * on the gen queue, and gen ranks it again. The messages are a bounded array (ETRAN_HOMA_SCHED_SLOTS), not an rbtree: Linux 6.1 has
 * no rbtree kfuncs. A run copies them under the scheduler's lock, ranks the copy without it
 * (bpf_loop: the verifier checks one entry's visit, not 32), and takes the lock again to apply
 * the grant, checking the cap anew: a grant never takes the incoming bytes past max_incoming,
 * though two runs at once may rank on copies a packet apart. */
#ifndef ETRAN_HOMA_SCHED_H
#define ETRAN_HOMA_SCHED_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "common/stats_maps.h"
#include "homa/homa.h"
#include "homa/homa_maps.h"

#define HOMA_SCHED_STALE_NS ((__u64)ETRAN_HOMA_SCHED_STALE_MS * 1000000)

/* What the scheduler decided about one message. */
struct homa_sched_out {
	__u32 granted;  /* its grant now (0: not scheduled) */
	__u8 priority;  /* of a grant that moved */
	__u8 moved;     /* the grant moved */
	__u8 idx;       /* its entry + 1 after the run (0: none, or it left) */
};

static __always_inline __u32 homa_sched_outstanding(const struct homa_sched_msg *m)
{
	return m->granted > m->received ? m->granted - m->received : 0;
}

/* Whether the entry `e` holds the message of `key`. */
static __always_inline int homa_sched_is(const struct homa_sched_msg *e,
					 const struct homa_rpc_key *key)
{
	return e->length && e->key.id == key->id && e->key.peer_ip == key->peer_ip &&
	       e->key.local_port == key->local_port && e->key.peer_port == key->peer_port;
}

/* Counts into the entry `e` (under the scheduler's lock) a grant and the furthest byte that
 * arrived, and the incoming bytes with them. */
static __always_inline void homa_sched_take(struct homa_sched *s, struct homa_sched_msg *e,
					    __u32 granted, __u32 received)
{
	if (granted > e->granted || received > e->received) {
		s->incoming -= homa_sched_outstanding(e);
		if (granted > e->granted)
			e->granted = granted;
		if (received > e->received)
			e->received = received < e->length ? received : e->length;
		s->incoming += homa_sched_outstanding(e);
	}
}

/* Whether (rem_a, birth_a) ranks before (rem_b, birth_b). */
static __always_inline int homa_sched_before(__u32 rem_a, __u64 birth_a, __u32 rem_b,
					     __u64 birth_b)
{
	return rem_a < rem_b || (rem_a == rem_b && birth_a < birth_b);
}

/* `offset` cut back to a packet boundary, unless it is the message's end. */
static __always_inline __u32 homa_sched_align(__u32 offset, __u32 length)
{
	return offset >= length ? length : offset - offset % ETRAN_HOMA_MAX_PAYLOAD;
}

/* One scheduled message as a run copies it. */
struct homa_sched_snap {
	__be32 peer;
	__u32 length; /* 0: a free entry */
	__u32 received;
	__u32 granted;
	__u64 birth;
};

/* Working memory of one run, in a per-CPU map rather than on the stack (BPF's 512 bytes would
 * not hold it):
 * - the copy of the scheduled messages;
 * - the best message of each of the best `k` peers among those ranked before the message
 *   asking (`n`, `idx`, `peer`, `rem`, `birth`): the active messages that come first. A peer's
 *   worse message never displaces its better one, and the worst member only improves, so a
 *   peer dropped once cannot come back with a worse message;
 * - the distinct peers of all scheduled messages (at most `k`): how many are active;
 * - the oldest message not fully granted that does not ignore grants (FIFO). */
struct homa_sched_scratch {
	struct homa_sched_snap snap[ETRAN_HOMA_SCHED_SLOTS];
	struct homa_rpc_key key[ETRAN_HOMA_SCHED_SLOTS]; /* the entries' RPCs, for gen */
	/* Entries (bits) for gen to queue (homa_gen_queue_entries): after a run, the other
	 * messages that wait for a grant they may now get, with none of their DATA on the way
	 * to say so; after homa_sched_of_peer, the peer's. Kept here, not in a register: the
	 * verifier would follow each combination of bits as a state of its own. */
	__u32 wake;
	__u32 n;
	__u32 same, worst; /* homa_sched_top_add's finds */
	__u32 idx[ETRAN_HOMA_SCHED_MAX_ACTIVE];
	__be32 peer[ETRAN_HOMA_SCHED_MAX_ACTIVE];
	__u32 rem[ETRAN_HOMA_SCHED_MAX_ACTIVE];
	__u64 birth[ETRAN_HOMA_SCHED_MAX_ACTIVE];
	__u32 peers_n;
	__be32 peers[ETRAN_HOMA_SCHED_MAX_ACTIVE];
	__u32 x;            /* the entry of the message asking, and a free one, found under the
			     * lock (kept here, the verifier need not follow each value) */
	__u32 free;
	__u32 stale;        /* entries found stale and freed (event homa_sched_stale) */
	__u32 blocked;      /* a message of the same peer ranks before the one asking */
	__u32 oldest_is_x;
	__u32 oldest_idx;
	__u32 oldest_waits; /* its granted bytes all arrived */
	__u64 oldest_birth;
	/* The message SRPT serves first (fewest bytes not received, then oldest), over every
	 * entry, and how many of its peer's are older and not fully granted (it bypassed them:
	 * each adds its own FIFO share). */
	__u32 first_rem;
	__be32 first_peer;
	__u64 first_birth;
	__u32 bypassed;
	__u32 peer_out; /* bytes granted and not received of the other messages of its peer */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct homa_sched_scratch);
} etran_homa_sched_scratch SEC(".maps");

static __always_inline void homa_sched_top_add(struct homa_sched_scratch *w, __u32 k, __u32 i,
					       __be32 peer, __u32 rem, __u64 birth)
{
	const __u32 M = ETRAN_HOMA_SCHED_MAX_ACTIVE;
	__u32 n = w->n, worst, same;

	/* The member of the same peer and the worst member are found in the scratch, not in
	 * registers, and the compiler made to read them back (the empty asm): a verifier that
	 * follows bpf_loop's callback iteration by iteration would otherwise carry each
	 * combination of the two indices as a state of its own (6.18 gives up). */
	w->same = M;
	w->worst = M;
#pragma unroll
	for (__u32 j = 0; j < M; j++) {
		asm volatile("" ::: "memory");
		if (j < n) {
			if (w->peer[j] == peer) {
				w->same = j;
			} else if (w->worst >= M ||
				   homa_sched_before(w->rem[w->worst & (M - 1)],
						     w->birth[w->worst & (M - 1)], w->rem[j],
						     w->birth[j])) {
				w->worst = j;
			}
		}
	}
	asm volatile("" ::: "memory");
	same = w->same;
	if (same < M) {
		same &= M - 1;
		if (homa_sched_before(rem, birth, w->rem[same], w->birth[same])) {
			w->idx[same] = i;
			w->rem[same] = rem;
			w->birth[same] = birth;
		}
		return;
	}
	worst = w->worst;
	if (n < k) {
		worst = n;
		w->n = n + 1;
	} else if (worst >= M ||
		   !homa_sched_before(rem, birth, w->rem[worst & (M - 1)], w->birth[worst & (M - 1)])) {
		return;
	}
	worst &= M - 1;
	w->idx[worst] = i;
	w->peer[worst] = peer;
	w->rem[worst] = rem;
	w->birth[worst] = birth;
}

/* Counts `peer` among the distinct peers (at most `k`). */
static __always_inline void homa_sched_peer_add(struct homa_sched_scratch *w, __u32 k, __be32 peer)
{
	__u32 n = w->peers_n;

#pragma unroll
	for (__u32 j = 0; j < ETRAN_HOMA_SCHED_MAX_ACTIVE; j++)
		if (j < n && w->peers[j] == peer)
			return;
	if (n >= k)
		return;
#pragma unroll
	for (__u32 j = 0; j < ETRAN_HOMA_SCHED_MAX_ACTIVE; j++)
		if (j == n)
			w->peers[j] = peer;
	w->peers_n = n + 1;
}

/* homa_grant_priority(): rank 0 highest; with fewer messages active than scheduled levels,
 * they use the lowest ones. */
static __always_inline __u8 homa_sched_priority(__u32 rank, __u32 active, __u32 max)
{
	__s32 p = (__s32)max - (__s32)rank;
	__s32 extra = (__s32)max + 1 - (__s32)active;

	if (extra > 0)
		p -= extra;
	return p > 0 ? p : 0;
}

/* Applies a run's decision to the RPC, whose message had `received` bytes when ranked: its
 * grant moves (never back; a GRANT is owed), and where its entry is. */
static __always_inline void homa_sched_apply(struct homa_rpc *rpc, const struct homa_sched_out *o,
					     __u32 received)
{
	bpf_spin_lock(&rpc->lock);
	if (o->moved && o->granted > rpc->in_granted && o->granted <= rpc->in_length) {
		rpc->in_granted = o->granted;
		rpc->in_grant_prio = o->priority;
	}
	rpc->in_sched_idx = o->idx;
	if (received > rpc->in_sched_at)
		rpc->in_sched_at = received;
	bpf_spin_unlock(&rpc->lock);
}

/* Whether a DATA that brought the `length`-byte message to `received` bytes (less than its
 * whole, `granted` granted, `at` when last ranked) can leave its grant where it is: it is
 * granted whole, or, since a grant moves by whole steps, ranking it again before another step
 * arrived, or before it is in the last step of its grant, finds nothing to give it. */
static __always_inline int homa_sched_idle(__u32 length, __u32 received, __u32 granted, __u32 at)
{
	return granted >= length || ((__u64)received < (__u64)at + ETRAN_HOMA_GRANT_STEP &&
				     (__u64)received + ETRAN_HOMA_GRANT_STEP <= granted);
}

/* Between rankings: counts what arrived of the message of `key` in its entry `idx` (+ 1, as
 * homa_sched_out says), so that the incoming bytes stay exact. 0 when the entry no longer holds
 * it (it went stale, the slot was reused): the caller ranks instead. */
static __always_inline int homa_sched_count(const struct homa_rpc_key *key, __u32 idx,
					    __u32 received, __u64 now)
{
	struct homa_sched_msg *e;
	struct homa_sched *s;
	__u32 zero = 0;
	int found = 0;

	if (!idx || idx > ETRAN_HOMA_SCHED_SLOTS)
		return 0;
	s = bpf_map_lookup_elem(&etran_homa_sched, &zero);
	if (!s)
		return 0;
	idx--;
	/* The mask after the comparison, kept by the empty asm (see homa_sched_run). */
	asm volatile("" : "+r"(idx));
	bpf_spin_lock(&s->lock);
	e = &s->msgs[idx & (ETRAN_HOMA_SCHED_SLOTS - 1)];
	if (homa_sched_is(e, key)) {
		e->touched = now;
		homa_sched_take(s, e, 0, received);
		found = 1;
	}
	bpf_spin_unlock(&s->lock);
	return found;
}

/* The entries (bits) holding messages from `peer`, their keys copied to the scratch's `key`:
 * what a probe queues for gen. */
static __always_inline void homa_sched_of_peer(__be32 peer)
{
	struct homa_sched_scratch *w;
	struct homa_sched *s;
	__u32 zero = 0;

	s = bpf_map_lookup_elem(&etran_homa_sched, &zero);
	w = bpf_map_lookup_elem(&etran_homa_sched_scratch, &zero);
	if (!s || !w)
		return;
	w->wake = 0;
	bpf_spin_lock(&s->lock);
	for (__u32 i = 0; i < ETRAN_HOMA_SCHED_SLOTS; i++) {
		struct homa_sched_msg *e = &s->msgs[i];

		if (e->length && e->key.peer_ip == peer) {
			w->key[i] = e->key;
			w->wake |= 1u << i;
		}
	}
	bpf_spin_unlock(&s->lock);
}

/* Counts the entries a run found stale and freed (after the lock: no helper calls under it). */
static __always_inline void homa_sched_count_stale(const struct homa_sched_scratch *w)
{
	if (w->stale)
		count_event(ETRAN_EVENT_HOMA_SCHED_STALE, w->stale);
}

/* What a run's walk over the copy knows of the message asking. */
struct homa_sched_walk {
	struct homa_sched_scratch *w;
	__u32 k;
	__u32 x;     /* its entry (ETRAN_HOMA_SCHED_SLOTS: it left, complete) */
	__u32 stuck; /* bytes on the way past which a message ignores grants (FIFO) */
	__u32 xrem;
	__be32 xpeer;
	__u64 xbirth;
};

/* bpf_loop's visit of entry `i` of the copy: the distinct peers and the active ones ranked
 * before the message asking (all of them once it left). */
static long homa_sched_visit(__u32 i, void *ctx)
{
	struct homa_sched_walk *c = ctx;
	struct homa_sched_scratch *w = c->w;
	struct homa_sched_snap *m;
	__u32 rem;

	if (!w || i == c->x)
		return 0;
	/* A mask, not a comparison, which the compiler would take as proof and drop. */
	m = &w->snap[i & (ETRAN_HOMA_SCHED_SLOTS - 1)];
	if (!m->length)
		return 0;
	homa_sched_peer_add(w, c->k, m->peer);
	if (m->peer == c->xpeer && m->granted > m->received)
		w->peer_out += m->granted - m->received;
	rem = m->length - m->received;
	if (homa_sched_before(rem, m->birth, w->first_rem, w->first_birth)) {
		w->first_rem = rem;
		w->first_peer = m->peer;
		w->first_birth = m->birth;
	}
	if (c->x >= ETRAN_HOMA_SCHED_SLOTS || homa_sched_before(rem, m->birth, c->xrem, c->xbirth)) {
		if (m->peer == c->xpeer)
			w->blocked = 1;
		homa_sched_top_add(w, c->k, i, m->peer, rem, m->birth);
	}
	return 0;
}

/* bpf_loop's second visit of entry `i` of the copy, for the FIFO share: counts it if the first
 * message bypassed it (its peer's, older, not fully granted), and finds the oldest message not
 * fully granted that does not ignore grants (fewer than `stuck` bytes on the way: a peer that
 * does not answer FIFO grants does not hold the share, homa_grant_find_oldest()). */
static long homa_sched_visit_fifo(__u32 i, void *ctx)
{
	struct homa_sched_walk *c = ctx;
	struct homa_sched_scratch *w = c->w;
	struct homa_sched_snap *m;

	if (!w || i == c->x)
		return 0;
	m = &w->snap[i & (ETRAN_HOMA_SCHED_SLOTS - 1)];
	if (!m->length || m->granted >= m->length)
		return 0;
	if (m->peer == w->first_peer && m->birth < w->first_birth)
		w->bypassed++;
	if (m->birth < w->oldest_birth &&
	    (m->granted > m->received ? m->granted - m->received : 0) < c->stuck) {
		w->oldest_is_x = 0;
		w->oldest_idx = i;
		w->oldest_waits = m->granted <= m->received;
		w->oldest_birth = m->birth;
	}
	return 0;
}

/* The FIFO share, per mille: `fraction` for each of the `bypassed` messages (at least one), at
 * most ETRAN_HOMA_FIFO_FRACTION_MAX (or `fraction` itself, if that is more): grant.rs's
 * fifo_share. */
static __always_inline __u32 homa_sched_fifo_share(__u32 fraction, __u32 bypassed)
{
	__u32 max = fraction > ETRAN_HOMA_FIFO_FRACTION_MAX ? fraction : ETRAN_HOMA_FIFO_FRACTION_MAX;

	if (!bypassed)
		bypassed = 1;
	if (bypassed > ETRAN_HOMA_SCHED_SLOTS)
		bypassed = ETRAN_HOMA_SCHED_SLOTS;
	return fraction * bypassed < max ? fraction * bypassed : max;
}

/* The message `key` of `slot` (`length` bytes, the furthest that arrived `received`, granted
 * `granted` so far) asks the scheduler: it enters it if new (while there is room), counts what
 * arrived, leaves it once complete, and takes the grant its rank and the cap allow. `now`: ns. */
static __always_inline void homa_sched_run(const struct homa_rpc_key *key, __u32 slot,
					   __u32 length, __u32 received, __u32 granted, __u64 now,
					   struct homa_sched_out *out)
{
	const volatile struct homa_sched_config *cfg = &etran_homa_sched_config;
	const __u32 N = ETRAN_HOMA_SCHED_SLOTS;
	__u32 k = cfg->max_overcommit, max_incoming = cfg->max_incoming;
	__u32 i, x, window, peers_n, incoming, target = 0, fifo = 0, gave = 0;
	__u32 xlength, xreceived, xgranted, fresh;
	struct homa_sched_walk c = {};
	struct homa_sched_scratch *w;
	struct homa_sched_msg *e;
	struct homa_sched *s;
	__u64 since_fifo, due = 0;
	__u32 zero = 0, share, idle_fifo = 0;
	__s64 headroom;

	if (k > ETRAN_HOMA_SCHED_MAX_ACTIVE)
		k = ETRAN_HOMA_SCHED_MAX_ACTIVE;
	if (!k)
		k = 1;
	s = bpf_map_lookup_elem(&etran_homa_sched, &zero);
	w = bpf_map_lookup_elem(&etran_homa_sched_scratch, &zero);
	if (!s || !w)
		return;
	w->wake = 0;

	/* Under the lock: find (or make) the entry, count what arrived, free what is stale or
	 * complete, copy the rest. */
	w->x = N;
	w->free = N;
	w->stale = 0;
	bpf_spin_lock(&s->lock);
	for (i = 0; i < N; i++) {
		e = &s->msgs[i];
		if (e->length && (__s64)(now - e->touched) > (__s64)HOMA_SCHED_STALE_NS) {
			s->incoming -= homa_sched_outstanding(e);
			e->length = 0;
			w->stale++;
		}
		w->snap[i].length = e->length;
		if (!e->length) {
			if (w->free >= N)
				w->free = i;
			continue;
		}
		if (homa_sched_is(e, key))
			w->x = i;
		w->snap[i].peer = e->key.peer_ip;
		w->key[i] = e->key;
		w->snap[i].received = e->received;
		w->snap[i].granted = e->granted;
		w->snap[i].birth = e->birth;
	}
	x = w->x;
	fresh = x >= N;
	if (fresh) {
		x = w->free;
		if (received >= length || x >= N) {
			bpf_spin_unlock(&s->lock);
			homa_sched_count_stale(w);
			return;
		}
	}
	/* x, read back from the scratch map, is below N; 6.1's verifier loses that bound on the
	 * way, and clang would drop a mask after the comparison: the empty asm keeps it. */
	asm volatile("" : "+r"(x));
	x &= N - 1;
	if (fresh) {
		e = &s->msgs[x];
		e->key = *key;
		e->slot = slot;
		e->length = length;
		e->received = received;
		e->granted = granted;
		e->birth = ++s->births;
		s->incoming += homa_sched_outstanding(e);
	}
	e = &s->msgs[x];
	e->touched = now;
	homa_sched_take(s, e, granted, received);
	xlength = e->length;
	xreceived = e->received;
	xgranted = e->granted;
	c.xbirth = e->birth;
	if (xreceived >= xlength) {
		/* Complete: it leaves, and the rest rank as if it never was. */
		s->incoming -= homa_sched_outstanding(e);
		e->length = 0;
	}
	incoming = s->incoming;
	since_fifo = s->since_fifo;
	bpf_spin_unlock(&s->lock);
	count_event(ETRAN_EVENT_HOMA_SCHED_RANK, 0);
	homa_sched_count_stale(w);
	out->idx = xreceived >= xlength ? 0 : x + 1;

	/* Without it: rank the copy. */
	out->granted = xgranted;
	w->n = 0;
	w->peers_n = 0;
	w->blocked = 0;
	w->oldest_is_x = 0;
	w->oldest_idx = 0;
	w->oldest_waits = 0;
	w->oldest_birth = ~0ULL;
	w->first_rem = ~0U;
	w->first_peer = 0;
	w->first_birth = ~0ULL;
	w->bypassed = 0;
	w->peer_out = 0;
	c.w = w;
	c.k = k;
	c.x = xreceived >= xlength ? N : x;
	c.xrem = xlength - xreceived;
	c.xpeer = key->peer_ip;
	if (c.x < N) {
		homa_sched_peer_add(w, k, key->peer_ip);
		w->first_rem = c.xrem;
		w->first_peer = c.xpeer;
		w->first_birth = c.xbirth;
	}
	bpf_loop(N, homa_sched_visit, &c, 0);
	peers_n = w->peers_n;
	window = cfg->window ? cfg->window : max_incoming / (peers_n + 1);
	if (cfg->fifo_fraction && cfg->fifo_fraction < 1000 && cfg->fifo_increment) {
		c.stuck = window + 2 * cfg->fifo_increment;
		/* What of its grant is on the way: none when more arrived than it was granted (a
		 * peer whose unscheduled bytes are more than ours). */
		if (c.x < N && xgranted < xlength &&
		    (xgranted > xreceived ? xgranted - xreceived : 0) < c.stuck) {
			w->oldest_is_x = 1;
			w->oldest_birth = c.xbirth;
		}
		bpf_loop(N, homa_sched_visit_fifo, &c, 0);
		if (c.x < N && xgranted < xlength && c.xpeer == w->first_peer &&
		    c.xbirth < w->first_birth)
			w->bypassed++;
		share = homa_sched_fifo_share(cfg->fifo_fraction, w->bypassed);
		due = (__u64)cfg->fifo_increment * (1000 - share) / share;
	}

	headroom = (__s64)max_incoming - incoming;
	/* What the active messages ranked before this one would take first; and which of them
	 * wait for a grant with nothing on the way to say so. */
#pragma unroll
	for (__u32 j = 0; j < ETRAN_HOMA_SCHED_MAX_ACTIVE; j++) {
		struct homa_sched_snap *m;
		__u32 want;

		if (j >= w->n)
			break;
		m = &w->snap[w->idx[j] & (N - 1)];
		want = m->received + window < m->length ? m->received + window : m->length;
		if (want > m->granted) {
			headroom -= want - m->granted;
			if (m->granted <= m->received &&
			    incoming + ETRAN_HOMA_MAX_PAYLOAD <= max_incoming)
				w->wake |= 1u << (w->idx[j] & (N - 1));
		}
	}
	if (c.x >= N) {
		out->granted = length;
		return;
	}

	if (!w->blocked && w->n < k) {
		/* The peer's window, less what its other messages have on the way (FIFO grants,
		 * unscheduled bytes). */
		__u32 own = window > w->peer_out ? window - w->peer_out : 0;
		__u32 want = xreceived + own < xlength ? xreceived + own : xlength;

		target = want;
		if (headroom < 0)
			headroom = 0;
		if ((__u64)xgranted + headroom < target)
			target = xgranted + headroom;
		target = homa_sched_align(target, xlength);
		if (target <= xgranted ||
		    (target - xgranted < ETRAN_HOMA_GRANT_STEP && target != xlength &&
		     xgranted > xreceived))
			target = 0;
		else
			out->priority = homa_sched_priority(w->n, peers_n, cfg->max_sched_priority);
	}
	/* The FIFO share: due after (1000 - share) / share bytes granted by rank for each
	 * fifo_increment, to the oldest message not fully granted that is not ignoring grants
	 * already (more than a window and two increments outstanding). It goes to this message
	 * if it is that one (and got nothing by rank); another waiting with nothing on the way is
	 * woken, whatever this one got; with no message to take it, it stays due without piling
	 * up. */
	if (due && since_fifo >= due) {
		if (w->oldest_is_x) {
			if (!target) {
				target = homa_sched_align(xgranted + cfg->fifo_increment, xlength);
				fifo = 1;
				out->priority = HOMA_MAX_PRIORITIES - 2;
			}
		} else if (w->oldest_birth == ~0ULL) {
			idle_fifo = 1;
		} else if (w->oldest_waits) {
			w->wake |= 1u << (w->oldest_idx & (N - 1));
		}
	}
	if (idle_fifo) {
		bpf_spin_lock(&s->lock);
		if (s->since_fifo > due)
			s->since_fifo = due;
		bpf_spin_unlock(&s->lock);
	}
	if (!target)
		return;

	/* Under the lock again: the grant, within the cap as it stands now. */
	bpf_spin_lock(&s->lock);
	e = &s->msgs[x];
	if (homa_sched_is(e, key)) {
		__u32 room = max_incoming > s->incoming ? max_incoming - s->incoming : 0;

		if ((__u64)e->granted + room < target)
			target = homa_sched_align(e->granted + room, e->length);
		if (target > e->granted) {
			gave = target - e->granted;
			if (fifo)
				s->since_fifo -= s->since_fifo < due ? s->since_fifo : due;
			else
				s->since_fifo += gave;
			/* The incoming bytes grow by what of the grant is not here yet (less than
			 * `gave` when more arrived than the message was granted). */
			s->incoming -= homa_sched_outstanding(e);
			e->granted = target;
			s->incoming += homa_sched_outstanding(e);
			out->granted = target;
			out->moved = 1;
		}
	}
	bpf_spin_unlock(&s->lock);
	if (gave)
		count_event(fifo ? ETRAN_EVENT_HOMA_SCHED_FIFO : ETRAN_EVENT_HOMA_SCHED_GRANT, gave);
}

#endif
