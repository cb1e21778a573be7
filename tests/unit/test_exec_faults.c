/*
 * The command layer when memory runs out: built with -Dfaults=true, the
 * store's allocations and the reply buffer's growth fail on demand
 * (include/sluice/fault.h). Without that option every test here skips.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/exec.h"
#include "sluice/fault.h"

#define NOW 1700000000u

static struct sl_table map;
static struct sl_node node;
static struct sl_exec cores[3];
static struct sl_conv conv;

static void setup(void)
{
	if (!SL_FAULTS_BUILT)
		cr_skip_test("built without -Dfaults=true");
	memset(&node, 0, sizeof(node));
	sl_table_init_local(&map, 1, 0, 3);
	node.nworkers = 3;
	node.max_item = 1024 * 1024;
	node.mem_limit = 96u << 20;
	for (unsigned i = 0; i < 3; i++) {
		struct sl_store_conf c = {.mem_limit = 32u << 20,
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

static void teardown(void)
{
#if SL_FAULTS_BUILT
	sl_fault_configure(NULL);
#endif
	for (unsigned i = 0; i < node.nworkers; i++)
		sl_store_destroy(cores[i].store);
	sl_buf_release(&conv.out);
}

/* Run @p in across the cores as the workers do; the reply is conv.out. */
static void run(const char *in, size_t n)
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

TestSuite(faults, .init = setup, .fini = teardown);

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
		run(req, (size_t)n);
	}
	faults("bucket_alloc=1");
	unsigned ok = 0, oom = 0;
	for (unsigned i = 0; i < N; i++) {
		int n = snprintf(req, sizeof(req), "set key:%u 0 0 8\r\nv%07u\r\n", i, i);
		run(req, (size_t)n);
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
		run(req, (size_t)n);
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
		run(req, (size_t)n);
		cr_assert(conv.out.len > 2 && (memcmp(conv.out.p, "VA 0 s0 c", 9) == 0 ||
		                               memcmp(conv.out.p, "EN\r\n", 4) == 0),
		          "mg answered %.*s", (int)conv.out.len, conv.out.p);
		n = snprintf(req, sizeof(req), "ma cnt%u N0 J9 v\r\n", i);
		run(req, (size_t)n);
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
		run(full, (size_t)n + 10002);
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
		run(in, n);
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
