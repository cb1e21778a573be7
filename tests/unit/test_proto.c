#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "sluice/proto.h"

#define MAXI (1024 * 1024)

static struct sl_req R;

static enum sl_parse_status P(const char *s)
{
	return sl_parse(s, strlen(s), MAXI, &R);
}

static void assert_err(const char *in, const char *err)
{
	cr_assert_eq(P(in), SL_PARSE_OK, "%s", in);
	cr_assert_eq(R.cmd, SL_CMD_ERROR, "%s: cmd %d", in, R.cmd);
	cr_assert_str_eq(R.err, err, "%s", in);
}

Test(proto, numbers_follow_memcached)
{
	int32_t i;
	uint32_t u;
	uint64_t ull;
	cr_assert(sl_strtol32("123", 3, &i) && i == 123);
	cr_assert(sl_strtol32("-5", 2, &i) && i == -5);
	cr_assert(sl_strtol32("+7", 2, &i) && i == 7);
	cr_assert(!sl_strtol32("12a", 3, &i));
	cr_assert(!sl_strtol32("", 0, &i));
	cr_assert(!sl_strtol32("-", 1, &i));
	cr_assert(sl_strtol32("7\t", 2, &i) && i == 7);
	/* strtol's long is 64 bits; memcached then truncates to 32 */
	cr_assert(sl_strtol32("4294967296", 10, &i) && i == 0);
	cr_assert(!sl_strtol32("9223372036854775808", 19, &i));
	cr_assert(sl_strtoul32("4294967295", 10, &u) && u == 4294967295u);
	cr_assert(sl_strtoul32("4294967296", 10, &u) && u == 0);
	cr_assert(!sl_strtoul32("-1", 2, &u));
	cr_assert(sl_strtoull("18446744073709551615", 20, &ull) && ull == UINT64_MAX);
	cr_assert(!sl_strtoull("18446744073709551616", 20, &ull));
	cr_assert(!sl_strtoull("-1", 2, &ull));
	cr_assert(sl_strtoull("  42", 4, &ull) && ull == 42);
}

Test(proto, get_family)
{
	cr_assert_eq(P("get a bb ccc\r\n"), SL_PARSE_OK);
	cr_assert_eq(R.cmd, SL_CMD_GET);
	cr_assert_eq(R.consumed, 14);
	uint32_t pos = 0;
	struct sl_tok k = sl_next_key(&R, &pos);
	cr_assert_eq(k.len, 1);
	k = sl_next_key(&R, &pos);
	cr_assert_eq(k.len, 2);
	cr_assert(memcmp(k.p, "bb", 2) == 0);
	k = sl_next_key(&R, &pos);
	cr_assert_eq(k.len, 3);
	k = sl_next_key(&R, &pos);
	cr_assert_eq(k.len, 0);

	cr_assert_eq(P("gats 100 x\n"), SL_PARSE_OK);
	cr_assert_eq(R.cmd, SL_CMD_GATS);
	cr_assert_eq(R.exptime, 100);
	assert_err("gat abc x\r\n", "CLIENT_ERROR invalid exptime argument");
	assert_err("get\r\n", "ERROR");
	assert_err("gets\r\n", "ERROR");
	assert_err("gxt a\r\n", "ERROR");

	char line[400];
	memset(line, 'k', sizeof(line));
	memcpy(line, "get a ", 6);
	strcpy(line + 6 + 251, "\r\n");
	assert_err(line, "CLIENT_ERROR bad command line format");
}

Test(proto, more_than_23_tokens_in_get)
{
	char line[4096] = "get";
	for (int i = 0; i < 100; i++)
		sprintf(line + strlen(line), " k%d", i);
	strcat(line, "\r\n");
	cr_assert_eq(P(line), SL_PARSE_OK);
	uint32_t pos = 0, n = 0;
	for (struct sl_tok k = sl_next_key(&R, &pos); k.len; k = sl_next_key(&R, &pos))
		n++;
	cr_assert_eq(n, 100);
}

Test(proto, storage)
{
	cr_assert_eq(P("set foo 5 10 3\r\nbar\r\nget foo\r\n"), SL_PARSE_OK);
	cr_assert_eq(R.cmd, SL_CMD_SET);
	cr_assert_eq(R.flags, 5);
	cr_assert_eq(R.exptime, 10);
	cr_assert_eq(R.vlen, 3);
	cr_assert(memcmp(R.data, "bar", 3) == 0);
	cr_assert_eq(R.consumed, 21);
	cr_assert(!R.noreply);

	cr_assert_eq(P("set foo 0 0 3 noreply\r\nbar\r\n"), SL_PARSE_OK);
	cr_assert(R.noreply);
	cr_assert_eq(P("cas foo 0 0 3 99\r\nbar\r\n"), SL_PARSE_OK);
	cr_assert_eq(R.cmd, SL_CMD_CAS);
	cr_assert_eq(R.cas, 99);

	/* incomplete: wait for more */
	cr_assert_eq(P("set foo 0 0 10\r\nabc"), SL_PARSE_MORE);
	cr_assert_eq(P("set foo 0 0"), SL_PARSE_MORE);

	assert_err("set foo 0 0 3\r\nbarXY", "CLIENT_ERROR bad data chunk");
	cr_assert_eq(R.consumed, 20);
	assert_err("set foo bar 0 3\r\nabc\r\n", "CLIENT_ERROR bad command line format");
	cr_assert_eq(R.consumed, 17); /* data is not swallowed */
	assert_err("set foo 0 0 -1\r\n", "CLIENT_ERROR bad command line format");
	assert_err("set foo 0 0\r\n", "ERROR");
	assert_err("cas foo 0 0 1\r\n", "ERROR");
	assert_err("cas foo 0 0 1 x\r\n", "CLIENT_ERROR bad command line format");
}

/* The tokenizer looks at sixteen bytes a step, then at the line's last
 * sixteen, then byte by byte: spaces anywhere in a line, at or across
 * every step's edge, must split it where memcached splits it. */
Test(proto, tokens_wherever_the_spaces_fall)
{
	char line[256], want_key[64];
	unsigned seed = 12345, n = 0;
	for (unsigned klen = 1; klen <= 40; klen++) {
		for (unsigned trial = 0; trial < 40; trial++) {
			unsigned gap[6];
			for (unsigned g = 0; g < 6; g++) {
				seed = seed * 1103515245u + 12345u;
				gap[g] = 1 + (seed >> 16) % (g == 0 ? 20 : 18);
			}
			size_t o = (size_t)sprintf(line, "%*sset", (int)gap[0] - 1, "");
			memset(want_key, 'a' + (int)(trial % 26), klen);
			want_key[klen] = 0;
			bool nr = trial & 1;
			sprintf(line + o, "%*s%s%*s%u%*s%d%*s5%*s%s\r\nhello\r\n", (int)gap[1], "",
			        want_key, (int)gap[2], "", klen * 7, (int)gap[3], "", -(int)trial,
			        (int)gap[4], "", nr ? (int)gap[5] : 0, "", nr ? "noreply" : "");
			cr_assert_eq(P(line), SL_PARSE_OK, "%s", line);
			cr_assert_eq(R.cmd, SL_CMD_SET, "%s", line);
			cr_assert_eq(R.key.len, klen, "%s", line);
			cr_assert(memcmp(R.key.p, want_key, klen) == 0, "%s", line);
			cr_assert_eq(R.flags, klen * 7, "%s", line);
			cr_assert_eq(R.exptime, -(int)trial, "%s", line);
			cr_assert_eq(R.vlen, 5, "%s", line);
			cr_assert_eq(R.noreply, nr, "%s", line);
			cr_assert(memcmp(R.data, "hello", 5) == 0, "%s", line);
			n++;
		}
	}
	cr_assert_eq(n, 1600);
	/* trailing spaces are not a token; a space-only tail is nothing */
	cr_assert_eq(P("touch abcdefghijklmnop 10                  \r\n"), SL_PARSE_OK);
	cr_assert_eq(R.cmd, SL_CMD_TOUCH);
	cr_assert_eq(R.exptime, 10);
	/* memcached takes 23 tokens and leaves the rest (asked of memcached
	 * 1.6.18): "noreply" counts as the 23rd token, not as the 24th */
	for (int extra = 19; extra <= 20; extra++) {
		char many[200] = "slabs automove 1";
		for (int i = 0; i < extra; i++)
			strcat(many, " x");
		strcat(many, " noreply\r\n");
		assert_err(many, "OK");
		cr_assert_eq(R.noreply, extra == 19, "%s", many);
	}
}

Test(proto, too_large_is_swallowed)
{
	static char buf[MAXI + 100];
	int n = sprintf(buf, "set big 0 0 %d\r\n", MAXI);
	memset(buf + n, 'x', MAXI);
	memcpy(buf + n + MAXI, "\r\nget a\r\n", 9);
	cr_assert_eq(sl_parse(buf, (size_t)n + MAXI + 9, MAXI, &R), SL_PARSE_OK);
	cr_assert_eq(R.cmd, SL_CMD_SET); /* still a set: the old value must go */
	cr_assert(R.too_large);
	cr_assert_str_eq(R.err, "SERVER_ERROR object too large for cache");
	cr_assert_eq(R.consumed, (uint32_t)n + MAXI + 2);
	cr_assert_eq(R.swallow, 0);
	/* the reply does not wait for the data: the rest is left to swallow */
	cr_assert_eq(sl_parse(buf, (size_t)n + 10, MAXI, &R), SL_PARSE_OK);
	cr_assert_str_eq(R.err, "SERVER_ERROR object too large for cache");
	cr_assert_eq(R.consumed, (uint32_t)n + 10);
	cr_assert_eq(R.swallow, MAXI + 2 - 10);
}

Test(proto, other_text_commands)
{
	cr_assert_eq(P("delete k\r\n"), SL_PARSE_OK);
	cr_assert_eq(R.cmd, SL_CMD_DELETE);
	cr_assert_eq(P("delete k 0 noreply\r\n"), SL_PARSE_OK);
	cr_assert(R.noreply);
	assert_err("delete k 10\r\n",
	           "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]");
	cr_assert_eq(P("incr k 18446744073709551615\r\n"), SL_PARSE_OK);
	cr_assert_eq(R.delta, UINT64_MAX);
	assert_err("incr k -1\r\n", "CLIENT_ERROR invalid numeric delta argument");
	assert_err("incr k\r\n", "ERROR");
	cr_assert_eq(P("touch k 10 noreply\r\n"), SL_PARSE_OK);
	cr_assert_eq(R.cmd, SL_CMD_TOUCH);
	cr_assert(R.noreply);
	cr_assert_eq(P("flush_all\r\n"), SL_PARSE_OK);
	cr_assert_eq(R.cmd, SL_CMD_FLUSH_ALL);
	cr_assert_eq(P("flush_all 10 noreply\r\n"), SL_PARSE_OK);
	cr_assert_eq(R.exptime, 10);
	assert_err("flush_all x\r\n", "CLIENT_ERROR invalid exptime argument");
	cr_assert_eq(P("version\r\n"), SL_PARSE_OK);
	cr_assert_eq(R.cmd, SL_CMD_VERSION);
	cr_assert_eq(P("verbosity 1\r\n"), SL_PARSE_OK);
	cr_assert_eq(R.cmd, SL_CMD_VERBOSITY);
	cr_assert_eq(P("quit\r\n"), SL_PARSE_OK);
	cr_assert_eq(R.cmd, SL_CMD_QUIT);
	assert_err("\r\n", "ERROR");
	assert_err("x\r\n", "ERROR");
	assert_err("bogus command\r\n", "ERROR");
	cr_assert_eq(P("GET / HTTP/1.1\r\n"), SL_PARSE_OK);
	cr_assert_eq(R.cmd, SL_CMD_CLOSE);
}

Test(proto, long_lines)
{
	static char buf[3000];
	memset(buf, 'a', sizeof(buf));
	cr_assert_eq(sl_parse(buf, 2000, MAXI, &R), SL_PARSE_MORE);
	cr_assert_eq(sl_parse(buf, sizeof(buf), MAXI, &R), SL_PARSE_OK);
	cr_assert_eq(R.cmd, SL_CMD_CLOSE);
	memcpy(buf, "get ", 4);
	cr_assert_eq(sl_parse(buf, sizeof(buf), MAXI, &R), SL_PARSE_MORE);
}

Test(proto, nul_ends_the_line)
{
	const char in[] = "version\0junk\r\n";
	cr_assert_eq(sl_parse(in, sizeof(in) - 1, MAXI, &R), SL_PARSE_OK);
	cr_assert_eq(R.cmd, SL_CMD_VERSION);
	cr_assert_eq(R.consumed, sizeof(in) - 1);
}

Test(proto, meta)
{
	cr_assert_eq(P("mg foo v c f O123 k\r\n"), SL_PARSE_OK);
	cr_assert_eq(R.cmd, SL_CMD_MG);
	cr_assert(R.meta.seen & SL_MF('v'));
	cr_assert_eq(R.meta.nret, 5);
	cr_assert_eq(R.meta.ret[3], 'O');
	cr_assert_eq(R.meta.opaque.len, 4);

	cr_assert_eq(P("ms foo 2 T30 F7 MA\r\nhi\r\n"), SL_PARSE_OK);
	cr_assert_eq(R.cmd, SL_CMD_MS);
	cr_assert_eq(R.vlen, 2);
	cr_assert_eq(R.meta.ttl, 30);
	cr_assert_eq(R.meta.client_flags, 7);
	cr_assert_eq(R.meta.mode, 'A');

	cr_assert_eq(P("ma foo N0 J13 D2 MD\r\n"), SL_PARSE_OK);
	cr_assert_eq(R.meta.initial, 13);
	cr_assert_eq(R.meta.delta, 2);

	cr_assert_eq(P("mg Zm9v b k\r\n"), SL_PARSE_OK);
	cr_assert(R.key_binary);
	cr_assert_eq(R.key.len, 3);
	cr_assert(memcmp(R.key.p, "foo", 3) == 0);

	cr_assert_eq(P("mn\r\n"), SL_PARSE_OK);
	cr_assert_eq(R.cmd, SL_CMD_MN);

	assert_err("mg foo v v\r\n", "CLIENT_ERROR duplicate flag");
	assert_err("mg foo !\r\n", "CLIENT_ERROR invalid flag");
	assert_err("mg foo Tx\r\n", "CLIENT_ERROR bad token in command line format");
	assert_err("md foo !\r\n", "CLIENT_ERROR invalid or duplicate flag");
	assert_err("ma foo MX\r\n", "CLIENT_ERROR invalid mode for ma M token");
	assert_err("mg foo O123456789012345678901234567890123\r\n",
	           "CLIENT_ERROR opaque token too long");
	assert_err("mg\r\n", "ERROR");
	assert_err("mz foo\r\n", "ERROR");
	assert_err("ms foo\r\n", "CLIENT_ERROR bad command line format");
	assert_err("ms foo 2 MZ\r\nhi\r\n", "CLIENT_ERROR invalid mode for ms M token");
	cr_assert_eq(R.consumed, 17); /* ms errors swallow the data */
	assert_err("mg !!!! b\r\n", "CLIENT_ERROR error decoding key");
	/* q never hides an error */
	assert_err("ms foo 2 q\r\nhiXX", "CLIENT_ERROR bad data chunk");
	cr_assert(!R.noreply);
}

Test(proto, base64)
{
	char out[64];
	cr_assert_eq(sl_b64_encode("foo", 3, out, sizeof(out)), 4);
	cr_assert(memcmp(out, "Zm9v", 4) == 0);
	cr_assert_eq(sl_b64_encode("fo", 2, out, sizeof(out)), 4);
	cr_assert(memcmp(out, "Zm8=", 4) == 0);
	cr_assert_eq(sl_b64_decode("Zm8=", 4, out, sizeof(out)), 2);
	cr_assert_eq(sl_b64_decode("Zm8", 3, out, sizeof(out)), 0);
	cr_assert_eq(sl_b64_decode("Z=8=", 4, out, sizeof(out)), 0);
}

/* sl_peek_key sees the key sl_parse would, and says "only" exactly when the
 * buffer is one get of one key that sl_parse consumes whole. */
static void peek_agrees(const char *in, size_t len, size_t want_klen, bool want_only)
{
	bool only = true;
	size_t k = sl_peek_key(in, len, &only);
	cr_assert_eq(k, want_klen, "%.*s: klen %zu", (int)len, in, k);
	cr_assert_eq(only, want_only, "%.*s: only %d", (int)len, in, only);
	if (!k)
		return;
	if (in[0] == 's') {
		/* a set's key is a hint: it must be sl_parse's key whenever
		 * sl_parse reads the line as a set */
		cr_assert_eq(sl_parse(in, len, MAXI, &R), SL_PARSE_OK);
		if (R.cmd == SL_CMD_SET) {
			cr_assert_eq(R.key.p, in + SL_PEEK_KEY_OFF);
			cr_assert_eq(R.key.len, k);
		}
		return;
	}
	cr_assert_eq(sl_parse(in, len, MAXI, &R), SL_PARSE_OK);
	cr_assert_eq(R.cmd, SL_CMD_GET, "%.*s", (int)len, in);
	uint32_t pos = 0;
	struct sl_tok t = sl_next_key(&R, &pos);
	cr_assert_eq(t.len, k);
	cr_assert_eq(t.p, in + SL_PEEK_KEY_OFF);
	if (only) {
		cr_assert_eq(R.consumed, len);
		cr_assert_eq(sl_next_key(&R, &pos).len, 0);
	}
}

Test(proto, peek_key_matches_parse)
{
#define PEEK(s, k, o) peek_agrees(s, sizeof(s) - 1, k, o)
	PEEK("get foo\r\n", 3, true);
	PEEK("get foo\n", 3, false);       /* bare LF: left to sl_parse */
	PEEK("get foo bar\r\n", 3, false); /* a multi-get */
	PEEK("get foo\r\nget bar\r\n", 3, false);
	PEEK("get foo\r\n ", 3, false);
	PEEK("get f\0o\r\n", 1, false); /* a NUL ends memcached's line */
	PEEK("get f\ro\r\n", 3, true);  /* a lone CR is part of the key */
	PEEK("get f\r o\r\n", 2, false);
	PEEK("get  foo\r\n", 0, false); /* keys after two spaces: sl_parse */
	PEEK("get \r\n", 0, false);
	PEEK("gets foo\r\n", 0, false);
	PEEK("gat 0 foo\r\n", 0, false);
	PEEK("GET foo\r\n", 0, false);
	PEEK("get", 0, false);
	/* incomplete: sl_parse waits for the rest */
	PEEK("get foo\r", 0, false);
	PEEK("get foo", 0, false);
	cr_assert_eq(P("get foo\r"), SL_PARSE_MORE);
	/* sets: the key, for the pre-pass to prefetch; never "only" */
	PEEK("set foo 0 0 3\r\nbar\r\n", 3, false);
	cr_assert_eq(R.cmd, SL_CMD_SET); /* so the key was compared */
	PEEK("set f\ro 5 0 1 noreply\r\nx\r\n", 3, false);
	cr_assert_eq(R.cmd, SL_CMD_SET);
	PEEK("set foo\r\n", 3, false); /* an error to sl_parse; a hint only */
	cr_assert_eq(P("set foo\r\n"), SL_PARSE_OK);
	cr_assert_eq(R.cmd, SL_CMD_ERROR);
	PEEK("set  foo 0 0 1\r\nx\r\n", 0, false);
	PEEK("setx foo 0 0 1\r\nx\r\n", 0, false);
	PEEK("SET foo 0 0 1\r\nx\r\n", 0, false);
#undef PEEK
	char big[300];
	memcpy(big, "get ", 4);
	memset(big + 4, 'k', 250);
	memcpy(big + 254, "\r\n", 2);
	peek_agrees(big, 256, 250, true);
	memset(big + 4, 'k', 251);
	memcpy(big + 255, "\r\n", 2);
	peek_agrees(big, 257, 0, false); /* too long a key: sl_parse refuses it */
}
