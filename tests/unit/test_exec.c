#include <criterion/criterion.h>
#include <stdio.h>
#include <errno.h>
#include <string.h>

#include "sluice/exec.h"
#include "sluice/fault.h"

#define NOW 1700000000u

static struct sl_table map;
static struct sl_node node;
static struct sl_exec cores[4];
static struct sl_conv conv;

static void make_sized(unsigned n, size_t per_core);

static void make(unsigned n)
{
	make_sized(n, 2u << 20);
}

static void make_sized(unsigned n, size_t per_core)
{
	memset(&node, 0, sizeof(node));
	sl_table_init_local(&map, 1, 0, n);
	node.nworkers = n;
	node.max_item = 1024 * 1024;
	node.mem_limit = n * per_core;
	for (unsigned i = 0; i < n; i++) {
		struct sl_store_conf c = {.mem_limit = per_core,
		                          .max_item_size = node.max_item,
		                          .arena = SL_STORE_NEW_ARENA};
		memset(&cores[i], 0, sizeof(cores[i]));
		cores[i].core = i;
		cores[i].node = &node;
		cores[i].store = sl_store_create(&c);
		cr_assert_not_null(cores[i].store);
		cores[i].table = &map;
		node.cores[i] = &cores[i];
	}
}

static void setup1(void)
{
	make(1);
}

static void setup3(void)
{
	make(3);
}

static void teardown(void)
{
	for (unsigned i = 0; i < node.nworkers; i++)
		sl_store_destroy(cores[i].store);
	sl_buf_release(&conv.out);
}

static unsigned hops;

/* Run the input to completion the way the workers do: start on core 0 and
 * hand the conversation to whichever core it names. Returns the reply. */
static const char *run_at(const char *in, uint32_t now)
{
	static char copy[2 << 20];
	static char outs[1 << 16];
	size_t n = strlen(in);
	memcpy(copy, in, n);
	sl_conv_reset(&conv, copy, (uint32_t)n, false);
	unsigned at = 0, to = 0;
	hops = 0;
	while (sl_exec_run(&cores[at], &conv, now, &to) == SL_EXEC_FORWARD) {
		cr_assert_neq(to, at);
		at = to;
		hops++;
		cr_assert_lt(hops, 10000);
	}
	cr_assert_lt(conv.out.len, sizeof(outs));
	memcpy(outs, conv.out.p, conv.out.len);
	outs[conv.out.len] = 0;
	return outs;
}

static const char *run(const char *in)
{
	return run_at(in, NOW);
}

#define EXPECT(in, out) cr_assert_str_eq(run(in), out, "request: %s", in)

TestSuite(exec, .init = setup1, .fini = teardown);

Test(exec, set_get_delete)
{
	EXPECT("set foo 3 0 3\r\nbar\r\n", "STORED\r\n");
	EXPECT("get foo\r\n", "VALUE foo 3 3\r\nbar\r\nEND\r\n");
	EXPECT("get nope\r\n", "END\r\n");
	EXPECT("delete foo\r\n", "DELETED\r\n");
	EXPECT("delete foo\r\n", "NOT_FOUND\r\n");
	EXPECT("get foo\r\n", "END\r\n");
}

Test(exec, noreply_and_pipelining)
{
	EXPECT("set a 0 0 1 noreply\r\n1\r\nset b 0 0 1\r\n2\r\nget a b\r\n",
	       "STORED\r\nVALUE a 0 1\r\n1\r\nVALUE b 0 1\r\n2\r\nEND\r\n");
	EXPECT("delete a noreply\r\nget a\r\n", "END\r\n");
	/* noreply hides the text command's own error, but the stray "\n" left
	 * after the short data block is then read as an (empty) command */
	EXPECT("set a 0 0 1 noreply\r\nXY\r\n", "ERROR\r\n");
}

Test(exec, add_replace_append_prepend)
{
	EXPECT("add k 0 0 1\r\na\r\n", "STORED\r\n");
	EXPECT("add k 0 0 1\r\nb\r\n", "NOT_STORED\r\n");
	EXPECT("replace x 0 0 1\r\nb\r\n", "NOT_STORED\r\n");
	EXPECT("replace k 5 0 1\r\nc\r\n", "STORED\r\n");
	EXPECT("append k 9 0 2\r\nde\r\n", "STORED\r\n");
	EXPECT("prepend k 9 0 2\r\nzy\r\n", "STORED\r\n");
	EXPECT("get k\r\n", "VALUE k 5 5\r\nzycde\r\nEND\r\n");
	EXPECT("append none 0 0 1\r\na\r\n", "NOT_STORED\r\n");
}

Test(exec, cas)
{
	EXPECT("cas k 0 0 1 1\r\na\r\n", "NOT_FOUND\r\n");
	EXPECT("set k 0 0 1\r\na\r\n", "STORED\r\n");
	const char *g = run("gets k\r\n");
	unsigned long long cas = 0;
	cr_assert_eq(sscanf(g, "VALUE k 0 1 %llu", &cas), 1);
	char req[64];
	snprintf(req, sizeof(req), "cas k 0 0 1 %llu\r\nb\r\n", cas + 1);
	EXPECT(req, "EXISTS\r\n");
	snprintf(req, sizeof(req), "cas k 0 0 1 %llu\r\nb\r\n", cas);
	EXPECT(req, "STORED\r\n");
	EXPECT(req, "EXISTS\r\n");
}

Test(exec, incr_decr_like_memcached)
{
	EXPECT("incr n 1\r\n", "NOT_FOUND\r\n");
	EXPECT("set n 0 0 2\r\n10\r\n", "STORED\r\n");
	EXPECT("incr n 5\r\n", "15\r\n");
	EXPECT("decr n 100\r\n", "0\r\n");
	/* shorter result is padded in place with spaces */
	EXPECT("get n\r\n", "VALUE n 0 2\r\n0 \r\nEND\r\n");
	EXPECT("set n 0 0 20\r\n18446744073709551615\r\n", "STORED\r\n");
	EXPECT("incr n 2\r\n", "1\r\n");
	EXPECT("set n 0 0 1\r\n9\r\n", "STORED\r\n");
	EXPECT("incr n 1\r\n", "10\r\n");
	EXPECT("get n\r\n", "VALUE n 0 2\r\n10\r\nEND\r\n");
	EXPECT("set s 0 0 3\r\nabc\r\n", "STORED\r\n");
	EXPECT("incr s 1\r\n", "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
}

Test(exec, ttl_touch_gat)
{
	EXPECT("set t 0 10 1\r\nx\r\n", "STORED\r\n");
	cr_assert_str_eq(run_at("get t\r\n", NOW + 9), "VALUE t 0 1\r\nx\r\nEND\r\n");
	cr_assert_str_eq(run_at("get t\r\n", NOW + 10), "END\r\n");
	EXPECT("set t 0 10 1\r\nx\r\n", "STORED\r\n");
	EXPECT("touch t 100\r\n", "TOUCHED\r\n");
	cr_assert_str_eq(run_at("get t\r\n", NOW + 50), "VALUE t 0 1\r\nx\r\nEND\r\n");
	EXPECT("gat 0 t\r\n", "VALUE t 0 1\r\nx\r\nEND\r\n");
	cr_assert_str_eq(run_at("get t\r\n", NOW + 5000), "VALUE t 0 1\r\nx\r\nEND\r\n");
	EXPECT("touch none 1\r\n", "NOT_FOUND\r\n");
	EXPECT("set neg 0 -1 1\r\nx\r\n", "STORED\r\n");
	EXPECT("get neg\r\n", "END\r\n");
}

Test(exec, flush_all)
{
	EXPECT("set a 0 0 1\r\n1\r\n", "STORED\r\n");
	EXPECT("flush_all\r\n", "OK\r\n");
	EXPECT("get a\r\n", "END\r\n");
	EXPECT("set a 0 0 1\r\n1\r\n", "STORED\r\n");
	EXPECT("get a\r\n", "VALUE a 0 1\r\n1\r\nEND\r\n");
	EXPECT("flush_all noreply\r\n", "");
	EXPECT("get a\r\n", "END\r\n");
}

/* sl_exec_get1 on core 0 as the worker calls it: index hash and the item
 * prefetch step's hint */
static int get1(const char *key, size_t kl, uint32_t req_len, uint32_t now, char *out, size_t cap)
{
	uint64_t ih = sl_store_index_hash(cores[0].store, sl_key_hash(key, kl));
	unsigned hint = sl_store_prefetch_items(cores[0].store, ih);
	return sl_exec_get1(&cores[0], key, kl, ih, hint, req_len, now, out, cap);
}

/* sl_exec_get1 answers "get <key>\r\n" as sl_exec_run does, byte for byte
 * and counter for counter. */
static void get1_agrees(const char *key, uint32_t now)
{
	char req[300], out[2048];
	int rl = snprintf(req, sizeof(req), "get %s\r\n", key);
	size_t kl = strlen(key);
	struct sl_core_stats before = cores[0].st;
	int n = get1(req + 4, kl, (uint32_t)rl, now, out, sizeof(out));
	cr_assert_geq(n, 5, "%s", key);
	struct sl_core_stats fast = cores[0].st;
	cr_assert_eq(fast.requests - before.requests, 1);
	cr_assert_eq(fast.cmd_get - before.cmd_get, 1);
	cr_assert_eq(fast.bytes_read - before.bytes_read, (uint64_t)rl);
	const char *slow = run_at(req, now);
	cr_assert_eq(strlen(slow), (size_t)n, "%s: %.*s vs %s", key, n, out, slow);
	cr_assert(memcmp(slow, out, (size_t)n) == 0, "%s: %.*s vs %s", key, n, out, slow);
	/* the general path counted the same things once more */
	cr_assert_eq(cores[0].st.requests - fast.requests, 1);
	cr_assert_eq(cores[0].st.get_hits - fast.get_hits, fast.get_hits - before.get_hits);
	cr_assert_eq(cores[0].st.get_misses - fast.get_misses, fast.get_misses - before.get_misses);
	cr_assert_eq(cores[0].st.bytes_read - fast.bytes_read, (uint64_t)rl);
}

Test(exec, get1_answers_as_the_general_path)
{
	EXPECT("set foo 4294967295 0 3\r\nbar\r\n", "STORED\r\n");
	EXPECT("set ttl 7 10 2\r\nhi\r\n", "STORED\r\n");
	EXPECT("set empty 0 0 0\r\n\r\n", "STORED\r\n");
	get1_agrees("foo", NOW);
	get1_agrees("empty", NOW);
	get1_agrees("nope", NOW);
	get1_agrees("ttl", NOW + 9);
	/* expired: the fast path reclaims it and answers a miss */
	uint64_t misses = cores[0].st.get_misses;
	char out[128];
	cr_assert_eq(get1("ttl", 3, 9, NOW + 10, out, sizeof(out)), 5);
	cr_assert_eq(cores[0].st.get_misses, misses + 1);
	get1_agrees("ttl", NOW + 10);
	EXPECT("flush_all\r\n", "OK\r\n");
	get1_agrees("foo", NOW);
	/* a get marks the item fetched, as the general path does */
	EXPECT("set f 0 0 1\r\nx\r\n", "STORED\r\n");
	cr_assert_eq(get1("f", 1, 7, NOW, out, sizeof(out)),
	             (int)strlen("VALUE f 0 1\r\nx\r\nEND\r\n"));
	cr_assert_str_eq(run("mg f h\r\n"), "HD h1\r\n");
}

/* A hash hint counts only for the key it was made for: same offset, same
 * length (a hint for "a" must not be taken for "ab"). */
Test(exec, hash_hint_is_for_one_key_only)
{
	EXPECT("set ab 0 0 1\r\nx\r\n", "STORED\r\n");
	char in[] = "get ab\r\n";
	unsigned to;
	sl_conv_reset(&conv, in, sizeof(in) - 1, true);
	sl_conv_hint(&conv, 4, 1, sl_key_hash("a", 1));
	cr_assert_eq(sl_exec_run(&cores[0], &conv, NOW, &to), SL_EXEC_DONE);
	cr_assert_eq(conv.out.len, strlen("VALUE ab 0 1\r\nx\r\nEND\r\n"));
	/* the right hint is taken: a wrong hash with the right length shows it */
	sl_conv_reset(&conv, in, sizeof(in) - 1, true);
	sl_conv_hint(&conv, 4, 2, sl_key_hash("zz", 2));
	cr_assert_eq(sl_exec_run(&cores[0], &conv, NOW, &to), SL_EXEC_DONE);
	cr_assert_eq(conv.out.len, strlen("END\r\n"));
}

Test(exec, get1_gives_up_on_what_does_not_fit_and_changes_nothing)
{
	char big[1500 + 64];
	int l = snprintf(big, sizeof(big), "set big 0 0 1500\r\n");
	memset(big + l, 'v', 1500);
	memcpy(big + l + 1500, "\r\n", 3);
	EXPECT(big, "STORED\r\n");
	struct sl_core_stats before = cores[0].st;
	char out[1392];
	cr_assert_eq(get1("big", 3, 9, NOW, out, sizeof(out)), -1);
	cr_assert(memcmp(&before, &cores[0].st, sizeof(before)) == 0);
	cr_assert_str_eq(run("mg big h\r\n"), "HD h0\r\n"); /* not marked fetched */
}

Test(exec, too_large_set_drops_the_old_value)
{
	static char req[1100 * 1024];
	EXPECT("set big 0 0 3\r\nMOO\r\n", "STORED\r\n");
	int n = snprintf(req, sizeof(req), "set big 0 0 %d\r\n", 1024 * 1024);
	memset(req + n, 'B', 1024 * 1024);
	strcpy(req + n + 1024 * 1024, "\r\nget big\r\n");
	EXPECT(req, "SERVER_ERROR object too large for cache\r\nEND\r\n");
	/* add does not remove anything */
	EXPECT("set big 0 0 3\r\nMOO\r\n", "STORED\r\n");
	memcpy(req, "add", 3);
	EXPECT(req, "SERVER_ERROR object too large for cache\r\nVALUE big 0 3\r\nMOO\r\nEND\r\n");
}

Test(exec, errors)
{
	EXPECT("bogus\r\n", "ERROR\r\n");
	EXPECT("set a 0 0 1\r\nXY\r\n", "CLIENT_ERROR bad data chunk\r\nERROR\r\n");
	EXPECT("version\r\n", "VERSION " SL_VERSION_STRING "\r\n");
	EXPECT("verbosity 1\r\n", "OK\r\n");
	EXPECT("slabs automove invalid\r\n", "CLIENT_ERROR bad command line format\r\n");
	EXPECT("slabs automove 1\r\n", "OK\r\n");
	EXPECT("slabs reassign 1 2\r\n", "BADCLASS invalid src or dst class id\r\n");
	EXPECT("quit\r\nversion\r\n", "");
	cr_assert(conv.close);
}

Test(exec, meta_basics)
{
	EXPECT("ms foo 3 T0 F5\r\nbar\r\n", "HD\r\n");
	EXPECT("mg foo v f s\r\n", "VA 3 f5 s3\r\nbar\r\n");
	EXPECT("mg foo k O42 t\r\n", "HD kfoo O42 t-1\r\n");
	EXPECT("mg miss v\r\n", "EN\r\n");
	EXPECT("mg miss v q\r\nmn\r\n", "MN\r\n");
	EXPECT("mg miss k O9\r\n", "EN kmiss O9\r\n");
	EXPECT("md foo q\r\nmg foo\r\n", "EN\r\n");
	EXPECT("md foo\r\n", "NF\r\n");
	EXPECT("ma cnt\r\n", "NF\r\n");
	EXPECT("ma cnt N0 J10 v\r\n", "VA 2\r\n10\r\n");
	EXPECT("ma cnt D5 v\r\n", "VA 2\r\n15\r\n");
	EXPECT("ma cnt MD D20 v\r\n", "VA 1\r\n0\r\n");
	EXPECT("ms foo 2 MA\r\nxy\r\n", "NS\r\n");
	EXPECT("ms foo 2 ME\r\nxy\r\n", "HD\r\n");
	EXPECT("ms foo 2 MA\r\nzz\r\n", "HD\r\n");
	EXPECT("mg foo v\r\n", "VA 4\r\nxyzz\r\n");
	EXPECT("mg foo h\r\n", "HD h1\r\n");
}

Test(exec, meta_cas_and_base64_keys)
	/* CAS values: a counter above a 16-bit tag of the store (0 here) */
{
	EXPECT("ms k 1 c\r\na\r\n", "HD c65536\r\n");
	EXPECT("ms k 1 C99\r\nb\r\n", "EX\r\n");
	EXPECT("ms k 1 C65536 c\r\nb\r\n", "HD c131072\r\n");
	EXPECT("ms Zm9v 1 b k\r\nz\r\n", "HD kZm9v b\r\n");
	EXPECT("get foo\r\n", "VALUE foo 0 1\r\nz\r\nEND\r\n");
	EXPECT("me foo\r\n", "ME Zm9v exp=-1 la=0 cas=196608 fetch=yes cls=1 size=62\r\n");
}

Test(exec, meta_vivify_and_stale)
{
	/* first miss wins the right to recache; the next sees Z */
	EXPECT("mg v N30 s t v\r\n", "VA 0 s0 t30 W\r\n\r\n");
	EXPECT("mg v N30 s\r\n", "HD s0 Z\r\n");
	EXPECT("ms v 3 T60\r\nnew\r\n", "HD\r\n");
	EXPECT("mg v v\r\n", "VA 3\r\nnew\r\n");
	/* invalidate: value stays, marked stale, next reader wins */
	EXPECT("md v I T30\r\n", "HD\r\n");
	EXPECT("mg v v c\r\n", "VA 3 c196608 X W\r\nnew\r\n");
	EXPECT("mg v v\r\n", "VA 3 Z X\r\nnew\r\n");
	/* a stale set with an older CAS is kept but remains stale */
	EXPECT("ms v 3 I C131072\r\nold\r\n", "HD\r\n");
	EXPECT("mg v v\r\n", "VA 3 Z X\r\nold\r\n");
	/* the winner's set with the current CAS makes it fresh again */
	EXPECT("ms v 3 C196608\r\nnew\r\n", "EX\r\n");
	EXPECT("mg v c\r\n", "HD c262144 Z X\r\n");
	EXPECT("ms v 3 I C262144\r\nfin\r\n", "HD\r\n");
	EXPECT("mg v v\r\n", "VA 3\r\nfin\r\n");
	/* recache: R wins when the TTL left is below the threshold */
	EXPECT("ms r 1 T10\r\nx\r\n", "HD\r\n");
	EXPECT("mg r R30 v\r\n", "VA 1 W\r\nx\r\n");
	EXPECT("mg r R30 v\r\n", "VA 1 Z\r\nx\r\n");
}

Test(exec, stats_fields)
{
	EXPECT("set a 0 0 1\r\n1\r\n", "STORED\r\n");
	run("get a b\r\n");
	const char *s = run("stats\r\n");
	cr_assert(strstr(s, "STAT cmd_get 2\r\n"), "%s", s);
	cr_assert(strstr(s, "STAT get_hits 1\r\n"));
	cr_assert(strstr(s, "STAT get_misses 1\r\n"));
	cr_assert(strstr(s, "STAT curr_items 1\r\n"));
	cr_assert(strstr(s, "STAT core0:requests"));
	cr_assert(strstr(s, "STAT drop_junk_request 0\r\n"));
	cr_assert(strstr(s, "END\r\n"));
	EXPECT("stats reset\r\n", "RESET\r\n");
	s = run("stats\r\n");
	cr_assert(strstr(s, "STAT cmd_get 0\r\n"), "%s", s);
	EXPECT("stats nonsense\r\n", "ERROR\r\n");
}

Test(exec, stats_slabs_and_items_per_size_class)
{
	EXPECT("set a 0 0 1\r\n1\r\n", "STORED\r\n");
	EXPECT("set b 0 0 0\r\n\r\n", "STORED\r\n");
	run("get a\r\n");
	/* the same numbers a default memcached shows for these two items */
	const char *s = run("stats slabs\r\n");
	cr_assert(strstr(s, "STAT 1:chunk_size 96\r\n"), "%s", s);
	cr_assert(strstr(s, "STAT 1:used_chunks 2\r\n"), "%s", s);
	cr_assert(strstr(s, "STAT 1:cmd_set 2\r\n"), "%s", s);
	cr_assert(strstr(s, "STAT 1:get_hits 1\r\n"), "%s", s);
	cr_assert(strstr(s, "STAT active_slabs 1\r\n"), "%s", s);
	s = run("stats items\r\n");
	cr_assert(strstr(s, "STAT items:1:number 2\r\n"), "%s", s);
	cr_assert(strstr(s, "STAT items:1:mem_requested 121\r\n"), "%s", s);
	EXPECT("delete a\r\n", "DELETED\r\n");
	s = run("stats items\r\n");
	cr_assert(strstr(s, "STAT items:1:number 1\r\n"), "%s", s);
	cr_assert(strstr(s, "STAT items:1:mem_requested 60\r\n"), "%s", s);
}

/* ---- several cores: ownership and handoff ---- */

TestSuite(handoff, .init = setup3, .fini = teardown);

Test(handoff, keys_live_only_on_their_owner)
{
	char req[128];
	for (int i = 0; i < 300; i++) {
		snprintf(req, sizeof(req), "set key%d 0 0 3\r\nv%02d\r\n", i, i % 100);
		cr_assert_str_eq(run(req), "STORED\r\n");
	}
	unsigned total = 0;
	for (unsigned c = 0; c < 3; c++) {
		unsigned n = (unsigned)sl_store_stats(cores[c].store)->curr_items;
		cr_assert_gt(n, 50, "core %u owns %u", c, n);
		total += n;
	}
	cr_assert_eq(total, 300);
	for (int i = 0; i < 300; i++) {
		char k[16];
		int kl = snprintf(k, sizeof(k), "key%d", i);
		uint64_t h = sl_key_hash(k, (size_t)kl);
		unsigned owner = sl_slot_owner(&map, h);
		for (unsigned c = 0; c < 3; c++) {
			struct sl_item *it = sl_store_get(cores[c].store, h, k, (size_t)kl, NOW);
			cr_assert_eq(it != NULL, c == owner);
		}
	}
}

Test(handoff, multiget_keeps_order_across_cores)
{
	char req[4096] = "get", want[8192] = "";
	for (int i = 0; i < 40; i++) {
		char s[64];
		snprintf(s, sizeof(s), "set k%d %d 0 2\r\n%02d\r\n", i, i, i);
		cr_assert_str_eq(run(s), "STORED\r\n");
		if (i % 3 == 0)
			continue; /* leave some misses in the middle */
		sprintf(req + strlen(req), " k%d", i);
		sprintf(want + strlen(want), "VALUE k%d %d 2\r\n%02d\r\n", i, i, i);
	}
	strcat(req, " missing\r\n");
	strcat(want, "END\r\n");
	cr_assert_str_eq(run(req), want);
	cr_assert_gt(hops, 5); /* it really travelled */
}

Test(handoff, flush_all_reaches_every_core)
{
	char req[64];
	for (int i = 0; i < 60; i++) {
		snprintf(req, sizeof(req), "set f%d 0 0 1\r\nx\r\n", i);
		run(req);
	}
	EXPECT("flush_all\r\n", "OK\r\n");
	cr_assert_eq(hops, 2);
	for (int i = 0; i < 60; i++) {
		snprintf(req, sizeof(req), "get f%d\r\n", i);
		cr_assert_str_eq(run(req), "END\r\n");
	}
}

Test(handoff, stats_sum_all_cores)
{
	char req[64];
	for (int i = 0; i < 30; i++) {
		snprintf(req, sizeof(req), "set s%d 0 0 1\r\nx\r\n", i);
		run(req);
	}
	const char *s = run("stats\r\n");
	cr_assert(strstr(s, "STAT curr_items 30\r\n"), "%s", s);
	cr_assert(strstr(s, "STAT cmd_set 30\r\n"));
	cr_assert(strstr(s, "STAT core2:curr_items"));
}

/* ---- the change observer ---------------------------------------------- */

struct seen {
	unsigned n;
	enum sl_change_kind kind;
	char key[256];
	char value[64];
	uint32_t exptime;
	uint64_t cas;
	uint64_t hash;
	unsigned by_kind[SL_CHANGE_FLUSH + 1];
};
static struct seen seen;

static void on_change(void *ctx, const struct sl_change *c)
{
	struct seen *s = ctx;
	s->n++;
	s->kind = c->kind;
	s->by_kind[c->kind]++;
	s->hash = c->hash;
	s->key[0] = s->value[0] = 0;
	if (c->item) {
		struct sl_item *it = (struct sl_item *)c->item;
		snprintf(s->key, sizeof(s->key), "%.*s", it->klen, sl_item_key(it));
		snprintf(s->value, sizeof(s->value), "%.*s", (int)it->vlen, sl_item_value(it));
		s->exptime = it->exptime;
		s->cas = it->cas;
	}
}

static void observe_all(void)
{
	struct sl_store_observer o = {.fn = on_change, .ctx = &seen};
	for (unsigned i = 0; i < node.nworkers; i++)
		sl_store_observe(cores[i].store, &o);
	memset(&seen, 0, sizeof(seen));
}

/* @p in changes exactly one item, to @p kind, with key @p key and value
 * @p value (NULL: not checked). */
#define CHANGES(in, k, key_, value_)                                                               \
	do {                                                                                       \
		seen.n = 0;                                                                        \
		run(in);                                                                           \
		cr_assert_eq(seen.n, 1, "%s: %u changes", in, seen.n);                             \
		cr_assert_eq(seen.kind, k, "%s: kind %d", in, seen.kind);                          \
		cr_assert_str_eq(seen.key, key_, "%s", in);                                        \
		if (value_)                                                                        \
			cr_assert_str_eq(seen.value, (const char *)(value_), "%s", in);            \
		cr_assert_eq(seen.hash, sl_key_hash(key_, strlen(key_)), "%s", in);                \
	} while (0)

#define NO_CHANGE(in)                                                                              \
	do {                                                                                       \
		seen.n = 0;                                                                        \
		run(in);                                                                           \
		cr_assert_eq(seen.n, 0, "%s: %u changes", in, seen.n);                             \
	} while (0)

Test(handoff, every_mutation_reports_one_change_with_the_new_state)
{
	observe_all();
	CHANGES("set k 1 0 1\r\na\r\n", SL_CHANGE_SET, "k", "a");
	CHANGES("add n 0 0 1\r\nb\r\n", SL_CHANGE_SET, "n", "b");
	NO_CHANGE("add n 0 0 1\r\nc\r\n");
	CHANGES("replace k 0 0 1\r\nc\r\n", SL_CHANGE_SET, "k", "c");
	NO_CHANGE("replace zz 0 0 1\r\nc\r\n");
	CHANGES("append k 0 0 2\r\nde\r\n", SL_CHANGE_SET, "k", "cde");
	CHANGES("prepend k 0 0 1\r\nz\r\n", SL_CHANGE_SET, "k", "zcde");
	uint64_t cas = seen.cas;
	char req[96];
	snprintf(req, sizeof(req), "cas k 0 0 1 %llu\r\nq\r\n", (unsigned long long)cas);
	CHANGES(req, SL_CHANGE_SET, "k", "q");
	NO_CHANGE(req); /* EXISTS */
	CHANGES("set num 0 0 2\r\n10\r\n", SL_CHANGE_SET, "num", "10");
	CHANGES("incr num 5\r\n", SL_CHANGE_SET, "num", "15");      /* in place */
	CHANGES("decr num 6\r\n", SL_CHANGE_SET, "num", "9 ");      /* memcached pads */
	CHANGES("incr num 1000\r\n", SL_CHANGE_SET, "num", "1009"); /* grown */
	NO_CHANGE("incr nothere 1\r\n");
	CHANGES("touch k 100\r\n", SL_CHANGE_TTL, "k", "q");
	cr_assert_eq(seen.exptime, NOW + 100);
	CHANGES("gat 200 k\r\n", SL_CHANGE_TTL, "k", "q");
	cr_assert_eq(seen.exptime, NOW + 200);
	NO_CHANGE("get k num\r\n");
	NO_CHANGE("gets k\r\n");
	CHANGES("delete k\r\n", SL_CHANGE_DELETE, "k", NULL);
	NO_CHANGE("delete k\r\n");
	/* meta */
	CHANGES("ms m 2 T50\r\nhi\r\n", SL_CHANGE_SET, "m", "hi");
	cr_assert_eq(seen.exptime, NOW + 50);
	NO_CHANGE("mg m v\r\n");
	CHANGES("mg m T70\r\n", SL_CHANGE_TTL, "m", "hi");
	cr_assert_eq(seen.exptime, NOW + 70);
	CHANGES("mg viv N30 s\r\n", SL_CHANGE_SET, "viv", "");
	cr_assert_eq(seen.exptime, NOW + 30, "the vivified item's TTL, in the one report");
	CHANGES("md m I T30\r\n", SL_CHANGE_SET, "m", "hi"); /* marked stale */
	CHANGES("md m\r\n", SL_CHANGE_DELETE, "m", NULL);
	CHANGES("ma ctr N0 J7 T40\r\n", SL_CHANGE_SET, "ctr", "7");
	cr_assert_eq(seen.exptime, NOW + 40);
	CHANGES("ma ctr MD D10 q\r\n", SL_CHANGE_SET, "ctr", "0");
	NO_CHANGE("ma absent\r\n");
	/* a set too large drops the old value, as memcached does */
	run("set big 0 0 1\r\nx\r\n");
	seen.n = 0;
	static char huge[(1 << 20) + 64];
	int n = snprintf(huge, sizeof(huge), "set big 0 0 %u\r\n", 1 << 20);
	memset(huge + n, 'y', 1 << 20);
	memcpy(huge + n + (1 << 20), "\r\n", 3);
	run(huge);
	cr_assert_eq(seen.n, 1);
	cr_assert_eq(seen.kind, SL_CHANGE_DELETE);
	/* flush_all: one report per core */
	seen.n = 0;
	run("flush_all\r\n");
	cr_assert_eq(seen.n, node.nworkers);
	cr_assert_eq(seen.kind, SL_CHANGE_FLUSH);
}

Test(handoff, expiry_and_eviction_report_once_each)
{
	observe_all();
	CHANGES("set e 0 10 1\r\nx\r\n", SL_CHANGE_SET, "e", "x");
	seen.n = 0;
	cr_assert_str_eq(run_at("get e\r\n", NOW + 11), "END\r\n");
	cr_assert_eq(seen.n, 1);
	cr_assert_eq(seen.kind, SL_CHANGE_EXPIRE);
	cr_assert_str_eq(seen.key, "e");
	cr_assert_str_eq(run_at("get e\r\n", NOW + 12), "END\r\n");
	cr_assert_eq(seen.n, 1, "reported once");
	/* fill the 2 MiB stores well past their limit: every eviction counted
	 * by the store is reported, once */
	memset(&seen, 0, sizeof(seen));
	static char req[2200];
	for (unsigned i = 0; i < 20000; i++) {
		int n = snprintf(req, sizeof(req), "set fill%u 0 0 1000\r\n", i);
		memset(req + n, 'f', 1000);
		memcpy(req + n + 1000, "\r\n", 3);
		run(req);
	}
	uint64_t evicted = 0;
	for (unsigned i = 0; i < node.nworkers; i++)
		evicted += sl_store_stats(cores[i].store)->evictions;
	cr_assert_gt(evicted, 1000);
	cr_assert_eq(seen.by_kind[SL_CHANGE_EVICT], evicted);
	cr_assert_eq(seen.by_kind[SL_CHANGE_SET], 20000);
	/* the sweep frees expired items: each reported once */
	memset(&seen, 0, sizeof(seen));
	run("set s1 0 5 1\r\na\r\nset s2 0 5 1\r\nb\r\n");
	seen.n = 0;
	uint64_t before = 0, after = 0;
	for (unsigned i = 0; i < node.nworkers; i++)
		before += sl_store_stats(cores[i].store)->reclaimed;
	for (unsigned round = 0; round < 200; round++)
		for (unsigned i = 0; i < node.nworkers; i++)
			sl_store_sweep(cores[i].store, NOW + 6, 4096);
	for (unsigned i = 0; i < node.nworkers; i++)
		after += sl_store_stats(cores[i].store)->reclaimed;
	cr_assert_eq(after - before, 2);
	cr_assert_eq(seen.n, 2);
	cr_assert_eq(seen.by_kind[SL_CHANGE_EXPIRE], 2);
}

/* A key whose slot is another node's stops the conversation with
 * SL_EXEC_REMOTE, naming that node and the epoch it was routed by; skipped,
 * the request gets the error line and the next request runs. */
Test(handoff, remote_slot_stops_with_its_node_and_epoch)
{
	static struct sl_table t;
	cr_assert_eq(sl_table_init_local(&t, 42, 0, node.nworkers), 0);
	uint64_t h = sl_key_hash("far", 3);
	t.state[sl_slot_of(h)] = SL_SLOT_REMOTE;
	t.node[sl_slot_of(h)] = 5;
	cr_assert_eq(sl_table_seal(&t), 0);
	for (unsigned i = 0; i < node.nworkers; i++)
		cores[i].table = &t;
	static char in[] = "set near 0 0 1\r\na\r\nget near far\r\nmn\r\n";
	sl_conv_reset(&conv, in, (uint32_t)strlen(in), false);
	unsigned at = 0, to = 0, remote = 0;
	enum sl_exec_status st;
	while ((st = sl_exec_run(&cores[at], &conv, NOW, &to)) != SL_EXEC_DONE) {
		if (st == SL_EXEC_REMOTE) {
			cr_assert_eq(to, 5);
			cr_assert_eq(conv.epoch, 42);
			remote++;
			sl_exec_skip(&cores[at], &conv, "SERVER_ERROR not served here");
			continue;
		}
		at = to;
	}
	cr_assert_eq(remote, 1);
	cr_assert_eq(conv.out.len, strlen("STORED\r\nSERVER_ERROR not served here\r\nMN\r\n"));
	cr_assert(memcmp(conv.out.p, "STORED\r\nSERVER_ERROR not served here\r\nMN\r\n",
	                 conv.out.len) == 0,
	          "%.*s", (int)conv.out.len, conv.out.p);
	for (unsigned i = 0; i < node.nworkers; i++)
		cores[i].table = &map;
}

/* Run @p in on a node whose table @p t marks some slots another node's,
 * forwarding each remote request as fwd.c does: its text (from
 * sl_exec_remote_req) run on a node that owns everything (the `map`
 * table, over the same stores), and the reply handed back. Returns the
 * reply; *nfwd counts the forwards and @p first_fwd gets the first text. */
static struct sl_conv conv2;
static const char *run_forwarding(const struct sl_table *t, const char *in, unsigned *nfwd,
                                  char *first_fwd, size_t cap)
{
	static struct sl_buf fwd;
	sl_conv_reset(&conv, in, (uint32_t)strlen(in), false);
	for (unsigned i = 0; i < node.nworkers; i++)
		cores[i].table = t;
	unsigned at = 0, to = 0;
	enum sl_exec_status st;
	*nfwd = 0;
	while ((st = sl_exec_run(&cores[at], &conv, NOW, &to)) != SL_EXEC_DONE) {
		if (st == SL_EXEC_FORWARD) {
			at = to;
			continue;
		}
		cr_assert_eq(sl_exec_remote_req(&cores[at], &conv, to, &fwd), 0);
		if ((*nfwd)++ == 0)
			snprintf(first_fwd, cap, "%.*s", (int)fwd.len, fwd.p);
		/* the owner node */
		for (unsigned i = 0; i < node.nworkers; i++)
			cores[i].table = &map;
		sl_conv_reset(&conv2, fwd.p, (uint32_t)fwd.len, true);
		unsigned at2 = 0, to2 = 0;
		while (sl_exec_run(&cores[at2], &conv2, NOW, &to2) == SL_EXEC_FORWARD)
			at2 = to2;
		for (unsigned i = 0; i < node.nworkers; i++)
			cores[i].table = t;
		cr_assert_eq(sl_exec_remote_done(&cores[at], &conv, conv2.out.p, conv2.out.len), 0);
	}
	for (unsigned i = 0; i < node.nworkers; i++)
		cores[i].table = &map;
	sl_buf_put(&conv.out, "", 1);
	return conv.out.p;
}

/* A request forwarded to its key's node gets the very answer it would get
 * where the key lives: multi-gets keep their order (a run of keys of one
 * node goes in one message), noreply and quiet modes stay silent. */
Test(handoff, forwarded_requests_answer_as_the_owner_would)
{
	static struct sl_table t;
	cr_assert_eq(sl_table_init_local(&t, 7, 0, node.nworkers), 0);
	const char *far[] = {"far1", "far2", "far3"};
	for (unsigned i = 0; i < 3; i++) {
		uint64_t h = sl_key_hash(far[i], strlen(far[i]));
		t.state[sl_slot_of(h)] = SL_SLOT_REMOTE;
		t.node[sl_slot_of(h)] = 5;
	}
	cr_assert_eq(sl_table_seal(&t), 0);
	static const char *const inputs[] = {
	    "set far1 0 0 2\r\nv1\r\nset near 0 0 2\r\nnn\r\nset far2 5 0 2 noreply\r\nv2\r\n"
	    "get near far1 far2 near far3\r\n",
	    "set far1 0 0 1\r\na\r\ngat 100 far1 near far2\r\ntouch far1 10\r\n",
	    "mg far1 v q\r\nmg far3 v q\r\nmg far2 v k\r\nmn\r\n",
	    "incr far1 1\r\nset far3 0 0 1\r\n7\r\nincr far3 5\r\ndelete far2\r\nget far2 far3\r\n",
	    "ms far1 2 T0\r\nhi\r\nma far3 D3\r\nmg far1 s v\r\nmd far1 q\r\nmg far1 v\r\nmn\r\n",
	};
	char first[256], want[4096];
	for (unsigned i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
		/* the same requests twice on fresh stores: once on a node that
		 * owns every key, once through forwarding */
		run("flush_all\r\n");
		snprintf(want, sizeof(want), "%s", run(inputs[i]));
		run("flush_all\r\n");
		unsigned n;
		const char *got = run_forwarding(&t, inputs[i], &n, first, sizeof(first));
		cr_assert_gt(n, 0);
		cr_assert_str_eq(got, want, "input %u", i);
	}
	/* far1 and far2 follow each other in the key list: one forward */
	run("flush_all\r\n");
	unsigned n;
	run_forwarding(&t, "get near far1 far2 near far3\r\n", &n, first, sizeof(first));
	cr_assert_eq(n, 2);
	cr_assert_str_eq(first, "get far1 far2\r\nmn\r\n");
	/* a reply that does not end where it must is an error, not data */
	static char in[] = "get far1\r\n";
	sl_conv_reset(&conv, in, (uint32_t)strlen(in), false);
	for (unsigned i = 0; i < node.nworkers; i++)
		cores[i].table = &t;
	unsigned to = 0, at = 0;
	enum sl_exec_status st;
	while ((st = sl_exec_run(&cores[at], &conv, NOW, &to)) == SL_EXEC_FORWARD)
		at = to;
	cr_assert_eq(st, SL_EXEC_REMOTE);
	static struct sl_buf fwd;
	sl_exec_remote_req(&cores[at], &conv, to, &fwd);
	cr_assert_eq(sl_exec_remote_done(&cores[at], &conv, "VALUE far1 0 1\r\nx", 17), -EPROTO);
	while ((st = sl_exec_run(&cores[at], &conv, NOW, &to)) == SL_EXEC_FORWARD)
		at = to;
	for (unsigned i = 0; i < node.nworkers; i++)
		cores[i].table = &map;
	sl_buf_put(&conv.out, "", 1);
	cr_assert_str_eq(conv.out.p, "SERVER_ERROR bad reply from the slot's node\r\n");
}

/* ---- when memory runs out ------------------------------------------------
 * With -Dfaults=true the store's allocations and the reply buffer's growth
 * fail on demand (include/sluice/fault.h); without it these tests skip. */

/* Run @p in across the cores as the workers do; the reply is conv.out. */
static void run_n(const char *in, size_t n)
{
	sl_conv_reset(&conv, in, (uint32_t)n, false);
	unsigned at = 0, to = 0;
	while (sl_exec_run(&cores[at], &conv, NOW, &to) == SL_EXEC_FORWARD)
		at = to;
}

static void faults(const char *spec)
{
#if SL_FAULTS_BUILT
	cr_assert_eq(sl_fault_configure(spec), 0);
#else
	(void)spec;
#endif
}

static void setup_faults(void)
{
	if (!SL_FAULTS_BUILT)
		cr_skip_test("built without -Dfaults=true");
	make_sized(3, 32u << 20);
}

static void teardown_faults(void)
{
#if SL_FAULTS_BUILT
	sl_fault_configure(NULL);
#endif
	teardown();
}

TestSuite(faults, .init = setup_faults, .fini = teardown_faults);

/*
 * Sets while index buckets cannot be had: each answer is STORED or
 * memcached's out-of-memory error, and every key answered STORED reads
 * back with its own value. (When linking could fail, the item was freed
 * and then read to answer STORED: a use after free, and a key lost.)
 */
Test(faults, sets_without_index_memory_answer_and_keep_what_they_stored)
{
	enum { N = 60000 };
	static bool stored[N];
	char req[128], want[128];
	/* a store that has grown normally for a while, then index buckets
	 * cannot be had: the spare ones run out as chains grow */
	for (unsigned i = N; i < N + 20000; i++) {
		int n = snprintf(req, sizeof(req), "set warm:%u 0 0 1\r\nw\r\n", i);
		run_n(req, (size_t)n);
	}
	faults("bucket_alloc=1");
	unsigned ok = 0, oom = 0;
	for (unsigned i = 0; i < N; i++) {
		int n = snprintf(req, sizeof(req), "set key:%u 0 0 8\r\nv%07u\r\n", i, i);
		run_n(req, (size_t)n);
		if (conv.out.len == 8 && memcmp(conv.out.p, "STORED\r\n", 8) == 0) {
			stored[i] = true;
			ok++;
		} else {
			cr_assert(conv.out.len == 43 &&
			              memcmp(conv.out.p,
			                     "SERVER_ERROR out of memory storing object\r\n",
			                     43) == 0,
			          "set %u answered %.*s", i, (int)conv.out.len, conv.out.p);
			oom++;
		}
	}
	cr_assert_gt(oom, 0, "no set ever needed a new bucket");
	cr_assert_gt(ok, 0);
	faults(NULL);
	for (unsigned i = 0; i < N; i++) {
		int n = snprintf(req, sizeof(req), "get key:%u\r\n", i);
		run_n(req, (size_t)n);
		if (stored[i]) {
			int w = snprintf(want, sizeof(want), "VALUE key:%u 0 8\r\nv%07u\r\nEND\r\n",
			                 i, i);
			cr_assert(conv.out.len == (size_t)w &&
			              memcmp(conv.out.p, want, (size_t)w) == 0,
			          "key %u lost", i);
		} else {
			cr_assert(conv.out.len == 5 && memcmp(conv.out.p, "END\r\n", 5) == 0);
		}
	}
}

/* The same for the commands that create items of their own (mg N, ma N)
 * and incr growing a value: no answer ever names an item that is gone. */
Test(faults, vivify_and_incr_without_item_memory)
{
	faults("item_alloc=0.5");
	char req[128];
	for (unsigned i = 0; i < 2000; i++) {
		int n = snprintf(req, sizeof(req), "mg viv%u s c v N30\r\n", i);
		run_n(req, (size_t)n);
		cr_assert(conv.out.len > 2 && (memcmp(conv.out.p, "VA 0 s0 c", 9) == 0 ||
		                               memcmp(conv.out.p, "EN\r\n", 4) == 0),
		          "mg answered %.*s", (int)conv.out.len, conv.out.p);
		n = snprintf(req, sizeof(req), "ma cnt%u N0 J9 v\r\n", i);
		run_n(req, (size_t)n);
		cr_assert(conv.out.len > 2 &&
		              (memcmp(conv.out.p, "VA 1\r\n9\r\n", 9) == 0 ||
		               strncmp(conv.out.p, "SERVER_ERROR Out of memory", 26) == 0),
		          "ma answered %.*s", (int)conv.out.len, conv.out.p);
	}
}

/*
 * A multi-get whose reply cannot grow: the reply of that request is the
 * one error line memcached sends, never a VALUE line without its data or a
 * torn line, and the requests around it are answered whole.
 */
Test(faults, reply_that_cannot_grow_is_one_error_line)
{
	/* 40 values of 10 KB over three cores: the reply grows many times */
	static char val[10000 + 3];
	memset(val, 'x', 10000);
	char req[128];
	for (unsigned i = 0; i < 40; i++) {
		int n = snprintf(req, sizeof(req), "set big%u 0 0 10000\r\n", i);
		static char full[10200];
		memcpy(full, req, (size_t)n);
		memcpy(full + n, val, 10000);
		memcpy(full + n + 10000, "\r\n", 2);
		run_n(full, (size_t)n + 10002);
		cr_assert(conv.out.len == 8);
	}
	static char in[4096];
	size_t n = 0;
	n += (size_t)sprintf(in + n, "mn\r\nget");
	for (unsigned i = 0; i < 40; i++)
		n += (size_t)sprintf(in + n, " big%u", i);
	n += (size_t)sprintf(in + n, "\r\nmn\r\n");
	const char *err = "SERVER_ERROR out of memory writing get response\r\n";
	unsigned failed = 0, whole = 0;
	for (unsigned round = 0; round < 200; round++) {
		sl_buf_release(&conv.out); /* every round grows from nothing */
		faults(round % 2 ? "buf_grow=0.3" : "buf_grow=*3");
		run_n(in, n);
		faults(NULL);
		/* mn's own reply may be the error line too */
		const char *mn_err = "SERVER_ERROR out of memory\r\n";
		const char *p = conv.out.p;
		size_t len = conv.out.len;
		size_t head = len >= 4 && memcmp(p, "MN\r\n", 4) == 0 ? 4 : strlen(mn_err);
		cr_assert(len >= head && memcmp(p, head == 4 ? "MN\r\n" : mn_err, head) == 0,
		          "round %u", round);
		size_t tail =
		    len >= 4 && memcmp(p + len - 4, "MN\r\n", 4) == 0 ? 4 : strlen(mn_err);
		cr_assert(len >= head + tail &&
		              memcmp(p + len - tail, tail == 4 ? "MN\r\n" : mn_err, tail) == 0,
		          "round %u", round);
		const char *mid = p + head;
		size_t mlen = len - head - tail;
		if (mlen == strlen(err) && memcmp(mid, err, mlen) == 0) {
			failed++;
			continue;
		}
		/* otherwise the whole reply: 40 values and END */
		cr_assert_eq(mlen, 40 * (strlen("VALUE big00 0 10000\r\n") + 10002) - 10 + 5,
		             "round %u: a torn reply of %zu bytes", round, mlen);
		whole++;
	}
	cr_assert_gt(failed, 0);
}
