#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>

#include "sluice/udpguard.h"

static uint32_t ip(const char *s)
{
	struct in_addr a;
	cr_assert_eq(inet_pton(AF_INET, s, &a), 1);
	return a.s_addr;
}

Test(udpguard, prefixes_parse_and_match)
{
	struct sl_prefixes l;
	cr_assert_eq(sl_prefixes_parse(&l, "198.18.1.0/24,198.19.0.7", false), 0);
	cr_assert_eq(l.n, 2);
	cr_assert(sl_prefixes_match(&l, ip("198.18.1.200")));
	cr_assert(!sl_prefixes_match(&l, ip("198.18.2.1")));
	cr_assert(sl_prefixes_match(&l, ip("198.19.0.7")));
	cr_assert(!sl_prefixes_match(&l, ip("198.19.0.8")));
	/* bits beyond the prefix length are ignored, as routers do */
	cr_assert_eq(sl_prefixes_parse(&l, "198.19.77.77/16", false), 0);
	cr_assert(sl_prefixes_match(&l, ip("198.19.1.1")));
	cr_assert_eq(sl_prefixes_parse(&l, "0.0.0.0/0", false), 0);
	cr_assert(sl_prefixes_match(&l, ip("198.19.250.9")));
	cr_assert_eq(sl_prefixes_parse(&l, "any", true), 0);
	cr_assert(l.any && sl_prefixes_match(&l, ip("198.19.250.9")));
	const char *bad[] = {"any",        "",         "1.2.3.4/33", "1.2.3",      "1.2.3.4/",
	                     "1.2.3.4/-1", "1.2.3.4,", ",1.2.3.4",   "1.2.3.4//8", "x.2.3.4/8"};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(*bad); i++)
		cr_assert_eq(sl_prefixes_parse(&l, bad[i], false), -EINVAL, "%s", bad[i]);
}

static struct sl_udpguard_conf conf(void)
{
	struct sl_udpguard_conf c = {.factor = 10, .max_reply = 16384};
	cr_assert_eq(sl_prefixes_parse(&c.trust, "198.18.1.0/24", false), 0);
	cr_assert_eq(sl_prefixes_parse(&c.allow, "198.19.0.0/16", false), 0);
	return c;
}

Test(udpguard, classify_trusted_allowed_denied)
{
	struct sl_udpguard_conf c = conf();
	cr_assert_eq(sl_udp_classify(&c, ip("198.18.1.2")), SL_UDP_TRUSTED);
	cr_assert_eq(sl_udp_classify(&c, ip("198.19.200.2")), SL_UDP_ALLOWED);
	cr_assert_eq(sl_udp_classify(&c, ip("198.18.2.2")), SL_UDP_DENIED);
	cr_assert_eq(sl_udp_classify(&c, ip("198.18.200.1")), SL_UDP_DENIED);
}

/* One allowed source asking again and again for a 10 KB value with 45-byte
 * requests: its first reply goes out (the burst allowance), and over the
 * flood it gets at most factor x what it sent. */
Test(udpguard, one_source_is_held_to_the_factor)
{
	struct sl_udpguard_conf c = conf();
	struct sl_udpguard *g = sl_udpguard_create(&c, 4096);
	uint32_t src = ip("198.19.0.5");
	uint64_t in = 0, out = 0;
	unsigned sent = 0;
	cr_assert_eq(sl_udpguard_charge(g, src, 45, 10000, 10300, 70, 0), SL_UDP_SEND);
	in += 45;
	out += 10300;
	for (unsigned i = 0; i < 10000; i++) {
		enum sl_udp_verdict v = sl_udpguard_charge(g, src, 45, 10000, 10300, 70, 0);
		in += 45;
		out += v == SL_UDP_SEND ? 10300 : v == SL_UDP_SILENT ? 0 : 70;
		sent += v == SL_UDP_SEND;
	}
	cr_assert_gt(sent, 0);
	cr_assert_leq(out, 10 * in + 16384, "%lu out for %lu in", (unsigned long)out,
	              (unsigned long)in);
	cr_assert_eq(sl_udpguard_stats(g)->bytes_out, out);
	cr_assert_eq(sl_udpguard_stats(g)->bytes_in, in);
	/* a second later its debt is forgiven: one more reply goes out */
	cr_assert_eq(sl_udpguard_charge(g, src, 45, 10000, 10300, 70, 1500), SL_UDP_SEND);
	sl_udpguard_destroy(g);
}

Test(udpguard, too_large_for_udp_gets_the_error_line)
{
	struct sl_udpguard_conf c = conf();
	struct sl_udpguard *g = sl_udpguard_create(&c, 64);
	cr_assert_eq(sl_udpguard_charge(g, ip("198.19.0.9"), 45, 500000, 510000, 84, 0),
	             SL_UDP_TOO_LARGE);
	cr_assert_eq(sl_udpguard_stats(g)->too_large, 1);
	cr_assert_eq(sl_udpguard_stats(g)->bytes_out, 84);
	sl_udpguard_destroy(g);
}

/* Forged sources cost nothing to invent, so each new one's burst must not
 * add up: over a flood of one request each, all replies together stay
 * within factor x all requests (plus four largest replies), and the table
 * does not grow. */
Test(udpguard, forged_sources_are_held_together)
{
	struct sl_udpguard_conf c = conf();
	c.allow.any = true;
	struct sl_udpguard *g = sl_udpguard_create(&c, 4096);
	uint64_t in = 0, out = 0, x = 88172645463325252u;
	for (unsigned i = 0; i < 200000; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		enum sl_udp_verdict v =
		    sl_udpguard_charge(g, (uint32_t)x | 1, 45, 10000, 10300, 70, i / 100);
		in += 45;
		out += v == SL_UDP_SEND ? 10300 : v == SL_UDP_SILENT ? 0 : 70;
	}
	cr_assert_leq(out, 10 * in + 4 * 16384, "%lu out for %lu in", (unsigned long)out,
	              (unsigned long)in);
	cr_assert_gt(sl_udpguard_stats(g)->evictions, 190000);
	sl_udpguard_destroy(g);
}

Test(udpguard, top_sources_most_bytes_first_summed_over_cores)
{
	struct sl_udpguard_conf c = conf();
	struct sl_udpguard *g[2] = {sl_udpguard_create(&c, 64), sl_udpguard_create(&c, 64)};
	/* .1 gets 3 small replies on core 0 and 2 on core 1; .2 one larger */
	for (int i = 0; i < 3; i++)
		sl_udpguard_charge(g[0], ip("198.19.0.1"), 100, 300, 400, 70, 0);
	for (int i = 0; i < 2; i++)
		sl_udpguard_charge(g[1], ip("198.19.0.1"), 100, 300, 400, 70, 0);
	sl_udpguard_charge(g[1], ip("198.19.0.2"), 100, 1800, 1900, 70, 0);
	sl_udpguard_charge(g[0], ip("198.19.0.3"), 100, 100, 200, 70, 0);
	struct sl_udp_source top[2];
	cr_assert_eq(sl_udpguard_top(g, 2, top, 2), 2);
	cr_assert_eq(top[0].ip, ip("198.19.0.1"));
	cr_assert_eq(top[0].bytes_out, 2000);
	cr_assert_eq(top[0].bytes_in, 500);
	cr_assert_eq(top[1].ip, ip("198.19.0.2"));
	cr_assert_eq(top[1].bytes_out, 1900);
	sl_udpguard_destroy(g[0]);
	sl_udpguard_destroy(g[1]);
}
