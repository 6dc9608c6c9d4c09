// SPDX-License-Identifier: MIT
/*
 * The native series' rbtree walk (patches/0011 and 0012: bpf_rbtree_root, bpf_rbtree_left and
 * bpf_rbtree_right, upstream's kfuncs of 6.16), checked on the patched kernel (run by
 * scripts/native-test inside the qemu guest). An XDP program, run with BPF_PROG_TEST_RUN, keeps
 * an rbtree of keyed nodes (bpf_obj_new, bpf_rbtree_add with a less() callback) in the value of
 * an array map, under the bpf_spin_lock beside its root; the types the verifier needs (the
 * value, the node, the "contains:" tag) are in a BTF this check writes. User space asks, through
 * a second map, to insert a key, or for the lower bound of a probe key (the least key in the
 * tree not below it), which the program finds by walking the tree from its root, left or right
 * by comparing keys, in a loop bounded by a count. Checked: the lower bound on an empty tree
 * (none), then, with 500 distinct keys inserted in a scrambled order, of keys present, absent,
 * below all and above all, each against the answer user space computes; the root node has
 * both children, and none when asked for them with another root that the same lock guards (the
 * kfuncs check the node's owner); and the verifier,
 * which loads a program reading a node and walking from it under the lock, refuses one reading
 * it after the unlock, walking from it after the unlock (the lock not held) or in a later
 * locked section (the node no longer valid), taking the root without the lock, and walking
 * from a node the program owns (bpf_obj_new) rather than one in the tree.
 *
 *   rbtree_search   prints one "ok ..." line per check; exits 1 at the first failure
 */
#include <linux/btf.h>

#include "common.h"

#define KEYS 500
#define NONE UINT64_MAX /* no lower bound */
#define MAX_DEPTH 64	/* the walk's bound: an rbtree of 2^32 nodes is at most 64 deep */

/* What user space asks of the program (the io map's value). */
enum { OP_INSERT = 1, OP_LOWER_BOUND, OP_CHILDREN };
struct io {
	uint64_t op, key, result;
};

/* The BTF the tree map and the programs share: its type ids, in the order btf_load() adds them. */
enum {
	T_U64 = 1, T_INT, T_LOCK, T_ROOT, T_NODE, T_NODE_DATA, T_TREE, T_TAG_ROOT, T_TAG_OTHER,
	T_PROTO, T_FUNC_MAIN, T_FUNC_LESS,
};
/* The map value (struct tree) and the node (struct node_data), as T_TREE and T_NODE_DATA. */
#define TREE_LOCK 0
#define TREE_ROOT 8
#define TREE_OTHER 24
#define TREE_SIZE 40
#define NODE_KEY 0
#define NODE_RB 8
#define NODE_SIZE 40

static char btf_buf[1024];
static uint32_t btf_types_len, btf_strs_len = 1;
static char btf_strs[512];

static uint32_t btf_str(const char *s)
{
	uint32_t off = btf_strs_len;

	strcpy(btf_strs + off, s);
	btf_strs_len += strlen(s) + 1;
	return off;
}

static void btf_word(uint32_t w)
{
	memcpy(btf_buf + sizeof(struct btf_header) + btf_types_len, &w, 4);
	btf_types_len += 4;
}

static void btf_type(const char *name, uint32_t kind, uint32_t vlen, uint32_t size_or_type)
{
	btf_word(name ? btf_str(name) : 0);
	btf_word(kind << 24 | vlen);
	btf_word(size_or_type);
}

static void btf_member(const char *name, uint32_t type, uint32_t bit_offset)
{
	btf_word(btf_str(name));
	btf_word(type);
	btf_word(bit_offset);
}

/* Loads the BTF: u64, int, the three kernel structs by name and size (the verifier knows them
 * so), struct node_data { u64 key; struct bpf_rb_node node; }, struct tree { struct
 * bpf_spin_lock lock; struct bpf_rb_root root, other; } with both roots tagged
 * "contains:node_data:node", and the functions func_info names (int main(void), the callback).
 */
static int btf_load(void)
{
	struct btf_header *h = (void *)btf_buf;
	static char log[4096];
	union bpf_attr a;
	int fd;

	btf_type("u64", BTF_KIND_INT, 0, 8);
	btf_word(64);
	btf_type("int", BTF_KIND_INT, 0, 4);
	btf_word(BTF_INT_SIGNED << 24 | 32);
	btf_type("bpf_spin_lock", BTF_KIND_STRUCT, 1, 4);
	btf_member("val", T_INT, 0);
	btf_type("bpf_rb_root", BTF_KIND_STRUCT, 0, 16);
	btf_type("bpf_rb_node", BTF_KIND_STRUCT, 0, 32);
	btf_type("node_data", BTF_KIND_STRUCT, 2, NODE_SIZE);
	btf_member("key", T_U64, NODE_KEY * 8);
	btf_member("node", T_NODE, NODE_RB * 8);
	btf_type("tree", BTF_KIND_STRUCT, 3, TREE_SIZE);
	btf_member("lock", T_LOCK, TREE_LOCK * 8);
	btf_member("root", T_ROOT, TREE_ROOT * 8);
	btf_member("other", T_ROOT, TREE_OTHER * 8);
	btf_type("contains:node_data:node", BTF_KIND_DECL_TAG, 0, T_TREE);
	btf_word(1); /* the member: root */
	btf_type("contains:node_data:node", BTF_KIND_DECL_TAG, 0, T_TREE);
	btf_word(2); /* other */
	btf_type(NULL, BTF_KIND_FUNC_PROTO, 0, T_INT);
	btf_type("rbtree_search", BTF_KIND_FUNC, BTF_FUNC_STATIC, T_PROTO);
	btf_type("less", BTF_KIND_FUNC, BTF_FUNC_STATIC, T_PROTO);

	*h = (struct btf_header){ .magic = BTF_MAGIC, .version = BTF_VERSION,
				  .hdr_len = sizeof(*h), .type_len = btf_types_len,
				  .str_off = btf_types_len, .str_len = btf_strs_len };
	memcpy(btf_buf + sizeof(*h) + btf_types_len, btf_strs, btf_strs_len);
	a = (union bpf_attr){ .btf = (uintptr_t)btf_buf,
			      .btf_size = sizeof(*h) + btf_types_len + btf_strs_len,
			      .btf_log_buf = (uintptr_t)log, .btf_log_size = sizeof(log),
			      .btf_log_level = 1 };
	fd = sys_bpf(BPF_BTF_LOAD, &a);
	if (fd < 0) {
		printf("%s\n", log);
		fail("BPF_BTF_LOAD");
	}
	return fd;
}

/* An array map of one VALUE_SIZE value, typed by BTF when BTF_FD is not negative. */
static int map_new(uint32_t value_size, int btf_fd, uint32_t value_type)
{
	union bpf_attr a;
	int fd;

	memset(&a, 0, sizeof(a));
	a.map_type = BPF_MAP_TYPE_ARRAY;
	a.key_size = 4;
	a.value_size = value_size;
	a.max_entries = 1;
	if (btf_fd >= 0) {
		a.btf_fd = btf_fd;
		a.btf_key_type_id = T_INT;
		a.btf_value_type_id = value_type;
	}
	fd = sys_bpf(BPF_MAP_CREATE, &a);
	if (fd < 0)
		fail("BPF_MAP_CREATE");
	return fd;
}

/* A program under construction: its instructions, the kfuncs' BTF ids, the maps it uses. */
static struct bpf_insn p[160];
static int n, tree, io, btf;
static uint32_t kf_obj_new, kf_add, kf_root, kf_left, kf_right;

static int emit(struct bpf_insn i)
{
	p[n] = i;
	return n++;
}

/* Points the jump at AT to the next instruction emitted. */
static void land(int at)
{
	p[at].off = n - at - 1;
}

#define MOV_K(d, k) emit((struct bpf_insn)INSN(BPF_ALU64 | BPF_MOV | BPF_K, d, 0, 0, k))
#define MOV_X(d, s) emit((struct bpf_insn)INSN(BPF_ALU64 | BPF_MOV | BPF_X, d, s, 0, 0))
#define ADD_K(d, k) emit((struct bpf_insn)INSN(BPF_ALU64 | BPF_ADD | BPF_K, d, 0, 0, k))
#define LDX(d, s, o) emit((struct bpf_insn)INSN(BPF_LDX | BPF_MEM | BPF_DW, d, s, o, 0))
#define STX(d, o, s) emit((struct bpf_insn)INSN(BPF_STX | BPF_MEM | BPF_DW, d, s, o, 0))
#define JMP_K(op, d, k) emit((struct bpf_insn)INSN(BPF_JMP | (op) | BPF_K, d, 0, 0, k))
#define JMP_X(op, d, s) emit((struct bpf_insn)INSN(BPF_JMP | (op) | BPF_X, d, s, 0, 0))
#define JA() emit((struct bpf_insn)INSN(BPF_JMP | BPF_JA, 0, 0, 0, 0))
#define HELPER(f) emit((struct bpf_insn)INSN(BPF_JMP | BPF_CALL, 0, 0, 0, f))
#define KFUNC(id) emit((struct bpf_insn)INSN(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_KFUNC_CALL, 0, id))
#define EXIT() emit((struct bpf_insn)INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0))

/* dst = &value(MAP) + OFF. */
static void map_value(int dst, int map, int off)
{
	emit((struct bpf_insn)INSN(BPF_LD | BPF_IMM | BPF_DW, dst, BPF_PSEUDO_MAP_VALUE, 0, map));
	emit((struct bpf_insn)INSN(0, 0, 0, 0, off));
}

static void lock(void)
{
	map_value(1, tree, TREE_LOCK);
	HELPER(BPF_FUNC_spin_lock);
}

static void unlock(void)
{
	map_value(1, tree, TREE_LOCK);
	HELPER(BPF_FUNC_spin_unlock);
}

/* The program's end: io.result = r9; return XDP_PASS. */
static void store_r9_exit(void)
{
	map_value(6, io, 0);
	STX(6, offsetof(struct io, result), 9);
	MOV_K(0, XDP_PASS);
	EXIT();
}

/* OP_INSERT: a node_data of io.key added to the tree; io.result = bpf_rbtree_add's return,
 * or -2 when bpf_obj_new failed. Returns the index of the instruction loading the less()
 * callback, whose offset is set when the callback is emitted.
 */
static int emit_insert(void)
{
	int alloc_ok, less;

	MOV_K(1, T_NODE_DATA);
	MOV_K(2, 0);
	KFUNC(kf_obj_new);
	alloc_ok = JMP_K(BPF_JNE, 0, 0);
	MOV_K(9, -2);
	store_r9_exit();
	land(alloc_ok);
	STX(0, NODE_KEY, 8);
	MOV_X(9, 0);
	lock();
	map_value(1, tree, TREE_ROOT);
	MOV_X(2, 9);
	ADD_K(2, NODE_RB);
	less = emit((struct bpf_insn)INSN(BPF_LD | BPF_IMM | BPF_DW, 3, BPF_PSEUDO_FUNC, 0, 0));
	emit((struct bpf_insn)INSN(0, 0, 0, 0, 0));
	MOV_K(4, 0);
	MOV_K(5, 0);
	KFUNC(kf_add);
	MOV_X(9, 0);
	unlock();
	store_r9_exit();
	return less;
}

/* OP_LOWER_BOUND: io.result = the least key not below io.key, NONE when there is none. From
 * the root: a node whose key is below the probe sends the walk right; any other is a candidate
 * and sends it left, unless its key is the probe's.
 */
static void emit_lower_bound(void)
{
	int loop, end, deep, right, exact, back;

	lock();
	MOV_K(9, -1); /* NONE */
	MOV_K(7, 0);  /* depth */
	map_value(1, tree, TREE_ROOT);
	KFUNC(kf_root);
	loop = n;
	end = JMP_K(BPF_JEQ, 0, 0); /* no node: done */
	ADD_K(7, 1);
	deep = JMP_K(BPF_JGT, 7, MAX_DEPTH);
	MOV_X(2, 0);
	ADD_K(2, NODE_KEY - NODE_RB);
	LDX(3, 2, 0);		/* the node's key */
	MOV_X(2, 0);
	map_value(1, tree, TREE_ROOT);
	right = JMP_X(BPF_JLT, 3, 8);
	MOV_X(9, 3);
	exact = JMP_X(BPF_JEQ, 3, 8);
	KFUNC(kf_left);
	back = JA();
	p[back].off = loop - back - 1;
	land(right);
	KFUNC(kf_right);
	back = JA();
	p[back].off = loop - back - 1;
	land(end);
	land(exact);
	land(deep);
	unlock();
	store_r9_exit();
}

/* OP_CHILDREN: io.result = which of the root node's children bpf_rbtree_left and
 * bpf_rbtree_right return (bit 0, left; bit 1, right) when asked with its own root (io.key 0)
 * or with the other one (1), guarded by the same lock; -1 for an empty tree.
 */
static void emit_children(void)
{
	int empty, own, none;

	lock();
	MOV_K(9, -1);
	map_value(1, tree, TREE_ROOT);
	KFUNC(kf_root);
	empty = JMP_K(BPF_JEQ, 0, 0);
	MOV_X(6, 0);
	MOV_K(9, 0);
	map_value(7, tree, TREE_ROOT);
	own = JMP_K(BPF_JEQ, 8, 0);
	map_value(7, tree, TREE_OTHER);
	land(own);
	MOV_X(1, 7);
	MOV_X(2, 6);
	KFUNC(kf_left);
	none = JMP_K(BPF_JEQ, 0, 0);
	MOV_K(9, 1);
	land(none);
	MOV_X(1, 7);
	MOV_X(2, 6);
	KFUNC(kf_right);
	none = JMP_K(BPF_JEQ, 0, 0);
	emit((struct bpf_insn)INSN(BPF_ALU64 | BPF_OR | BPF_K, 9, 0, 0, 2));
	land(none);
	land(empty);
	unlock();
	store_r9_exit();
}

/* Loads the N instructions in p (with BTF and func_info: main at 0, less() at LESS_AT when it
 * is not 0) into LOG; the program's fd, or -1.
 */
static int load_prog(int less_at, char *log, size_t log_size)
{
	struct bpf_func_info fi[] = { { 0, T_FUNC_MAIN }, { less_at, T_FUNC_LESS } };
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.prog_type = BPF_PROG_TYPE_XDP;
	a.insns = (uintptr_t)p;
	a.insn_cnt = n;
	a.license = (uintptr_t)"GPL";
	a.prog_btf_fd = btf;
	a.func_info_rec_size = sizeof(fi[0]);
	a.func_info = (uintptr_t)fi;
	a.func_info_cnt = less_at ? 2 : 1;
	a.log_buf = (uintptr_t)log;
	a.log_size = log_size;
	a.log_level = 1;
	log[0] = 0;
	return sys_bpf(BPF_PROG_LOAD, &a);
}

/* The program: dispatch on io.op, then each op; less(a, b) = a's key < b's. */
static int load_search(void)
{
	static char log[1 << 16];
	int insert, lower_bound, children, less_ld, less_at, fd;

	n = 0;
	map_value(6, io, 0);
	LDX(7, 6, offsetof(struct io, op));
	LDX(8, 6, offsetof(struct io, key));
	insert = JMP_K(BPF_JEQ, 7, OP_INSERT);
	lower_bound = JMP_K(BPF_JEQ, 7, OP_LOWER_BOUND);
	children = JMP_K(BPF_JEQ, 7, OP_CHILDREN);
	MOV_K(0, XDP_ABORTED);
	EXIT();
	land(insert);
	less_ld = emit_insert();
	land(lower_bound);
	emit_lower_bound();
	land(children);
	emit_children();
	less_at = n;
	p[less_ld].imm = less_at - less_ld - 1;
	ADD_K(1, NODE_KEY - NODE_RB);
	LDX(3, 1, 0);
	ADD_K(2, NODE_KEY - NODE_RB);
	LDX(4, 2, 0);
	MOV_K(0, 1);
	p[JMP_X(BPF_JLT, 3, 4)].off = 1;
	MOV_K(0, 0);
	EXIT();
	fd = load_prog(less_at, log, sizeof(log));
	if (fd < 0) {
		printf("%s\n", log);
		fail("load the rbtree program");
	}
	return fd;
}

/* Runs the program once for OP on KEY; its result. */
static uint64_t run(int prog, uint64_t op, uint64_t key)
{
	struct io in = { op, key, 0xdead }, out;
	uint8_t frame[64] = { 0 };
	union bpf_attr a;

	map_write(io, 0, &in);
	memset(&a, 0, sizeof(a));
	a.test.prog_fd = prog;
	a.test.data_in = (uintptr_t)frame;
	a.test.data_size_in = sizeof(frame);
	a.test.repeat = 1;
	if (sys_bpf(BPF_PROG_TEST_RUN, &a))
		fail("BPF_PROG_TEST_RUN");
	if (a.test.retval != XDP_PASS) {
		printf("FAIL the program returned %u for op %llu\n", a.test.retval,
		       (unsigned long long)op);
		exit(1);
	}
	map_read(io, 0, &out);
	return out.result;
}

static uint64_t keys[KEYS];

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The least of the sorted keys not below PROBE; NONE when there is none. */
static uint64_t lower_bound(uint64_t probe)
{
	for (int i = 0; i < KEYS; i++)
		if (keys[i] >= probe)
			return keys[i];
	return NONE;
}

/* Checks the program's lower bound of PROBE against user space's; WHAT names the kind. */
static void check_probe(int prog, const char *what, uint64_t probe)
{
	char msg[128];

	snprintf(msg, sizeof(msg), "lower bound of %llu (%s)", (unsigned long long)probe, what);
	expect_eq(msg, run(prog, OP_LOWER_BOUND, probe), lower_bound(probe));
}

/* The verifier refuses the program in p, saying WANT in its log; WHAT names the misuse. */
static void expect_refused(const char *what, const char *want)
{
	static char log[1 << 16];
	int fd = load_prog(0, log, sizeof(log));

	if (fd >= 0 || !strstr(log, want)) {
		printf("%s\n", log);
		printf("FAIL %s: %s, want a refusal saying \"%s\"\n", what,
		       fd >= 0 ? "loaded" : "refused otherwise", want);
		exit(1);
	}
	printf("ok refused: %s (\"%s\")\n", what, want);
}

/* A program that takes the root node under the lock and, after the unlock when AFTER is set
 * (with the lock taken again when RELOCK is), before it otherwise, reads its key (WALK 0) or
 * asks for its left child (WALK 1).
 */
static void emit_node_use(int walk, int after, int relock)
{
	int empty;

	n = 0;
	lock();
	map_value(1, tree, TREE_ROOT);
	KFUNC(kf_root);
	MOV_X(6, 0);
	if (after)
		unlock();
	if (relock)
		lock();
	empty = JMP_K(BPF_JEQ, 6, 0);
	if (walk) {
		map_value(1, tree, TREE_ROOT);
		MOV_X(2, 6);
		KFUNC(kf_left);
	} else {
		MOV_X(2, 6);
		ADD_K(2, NODE_KEY - NODE_RB);
		LDX(0, 2, 0);
	}
	land(empty);
	if (!after || relock)
		unlock();
	MOV_K(0, XDP_PASS);
	EXIT();
}

static void check_misuse(void)
{
	static char log[1 << 16];
	int empty, fd;

	for (int walk = 0; walk < 2; walk++) {
		emit_node_use(walk, 0, 0);
		fd = load_prog(0, log, sizeof(log));
		if (fd < 0) {
			printf("%s\n", log);
			fail("the control program (the node used under the lock) was refused");
		}
		close(fd);
	}
	ok("reading a node and bpf_rbtree_left from it under the lock load");
	emit_node_use(0, 1, 0);
	expect_refused("reading a node after the unlock", "invalid mem access 'scalar'");
	emit_node_use(1, 1, 0);
	expect_refused("bpf_rbtree_left from a node after the unlock",
		       "must be held for bpf_rb_root");
	emit_node_use(1, 1, 1);
	expect_refused("bpf_rbtree_left from a node of an earlier locked section",
		       "bpf_rbtree_left node input must be non-owning ref");

	/* bpf_rbtree_root without the lock. */
	n = 0;
	map_value(1, tree, TREE_ROOT);
	KFUNC(kf_root);
	MOV_K(0, XDP_PASS);
	EXIT();
	expect_refused("bpf_rbtree_root without the lock", "must be held for bpf_rb_root");

	/* bpf_rbtree_left from a node the program owns (fresh from bpf_obj_new), not in the tree. */
	n = 0;
	MOV_K(1, T_NODE_DATA);
	MOV_K(2, 0);
	KFUNC(kf_obj_new);
	empty = JMP_K(BPF_JEQ, 0, 0);
	MOV_X(6, 0);
	lock();
	map_value(1, tree, TREE_ROOT);
	MOV_X(2, 6);
	ADD_K(2, NODE_RB);
	KFUNC(kf_left);
	unlock();
	MOV_X(1, 6);
	MOV_K(2, 0);
	KFUNC(btf_func_id("bpf_obj_drop_impl"));
	land(empty);
	MOV_K(0, XDP_PASS);
	EXIT();
	expect_refused("bpf_rbtree_left from a node the program owns",
		       "bpf_rbtree_left node input must be non-owning ref");
}

int main(void)
{
	int prog;

	kf_root = btf_func_id("bpf_rbtree_root");
	kf_left = btf_func_id("bpf_rbtree_left");
	kf_right = btf_func_id("bpf_rbtree_right");
	kf_obj_new = btf_func_id("bpf_obj_new_impl");
	kf_add = btf_func_id("bpf_rbtree_add_impl");
	btf = btf_load();
	tree = map_new(TREE_SIZE, btf, T_TREE);
	io = map_new(sizeof(struct io), -1, 0);
	prog = load_search();
	ok("an XDP program walking the rbtree with bpf_rbtree_root/left/right loads");

	expect_eq("lower bound on the empty tree (none)", run(prog, OP_LOWER_BOUND, 42), NONE);
	expect_eq("children of the empty tree's root (none: -1)", run(prog, OP_CHILDREN, 0), NONE);

	/* 500 distinct keys 1000 + 10 * i (1000 .. 5990), inserted in a scrambled order. */
	for (int i = 0; i < KEYS; i++)
		keys[i] = 1000 + 10 * (uint64_t)((i * 211) % KEYS);
	for (int i = 0; i < KEYS; i++)
		if (run(prog, OP_INSERT, keys[i])) {
			printf("FAIL bpf_rbtree_add of key %llu\n", (unsigned long long)keys[i]);
			exit(1);
		}
	ok("500 keys inserted with bpf_rbtree_add");
	qsort(keys, KEYS, sizeof(keys[0]), cmp_u64);
	if (keys[0] != 1000 || keys[KEYS - 1] != 5990)
		fail("the keys are not 1000 .. 5990");

	check_probe(prog, "present, the least", 1000);
	check_probe(prog, "present", 3210);
	check_probe(prog, "present, the greatest", 5990);
	check_probe(prog, "absent", 3215);
	check_probe(prog, "absent", 1001);
	check_probe(prog, "below all", 0);
	check_probe(prog, "below all", 999);
	check_probe(prog, "above all", 5991);
	check_probe(prog, "above all", UINT64_MAX - 1);
	for (uint64_t probe = 0; probe <= 6100; probe += 7)
		if (run(prog, OP_LOWER_BOUND, probe) != lower_bound(probe))
			check_probe(prog, "every 7th probe", probe);
	ok("lower bounds of 872 probes (0, 7, .. 6097) match user space's");

	expect_eq("children of the root node (both: 3)", run(prog, OP_CHILDREN, 0), 3);
	expect_eq("children of the root node asked in the other tree under the same lock (none)",
		  run(prog, OP_CHILDREN, 1), 0);

	check_misuse();
	printf("rbtree_search: all checks passed\n");
	return 0;
}
