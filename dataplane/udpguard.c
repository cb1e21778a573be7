/* UDP amplification guard; see include/sluice/udpguard.h for the rules. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <arpa/inet.h>

#include "sluice/udpguard.h"

#define WAYS 4

struct entry {
	uint32_t ip; /* network order; 0: free */
	int32_t credit;
	uint32_t seen; /* ms */
	uint16_t refused;
	uint16_t pad;
};

struct totals {
	uint64_t bytes_out;
	uint64_t bytes_in;
};

struct sl_udpguard {
	struct sl_udpguard_conf c;
	struct entry *e; /* sets of WAYS, 64-byte aligned */
	struct totals *t;
	uint32_t mask; /* sets - 1 */
	uint64_t secret;
	int64_t agg; /* all allowed sources together: credit, bytes */
	struct sl_udpguard_stats st;
};

_Static_assert(sizeof(struct entry) * WAYS == 64, "a set is one cache line");

int sl_prefixes_parse(struct sl_prefixes *l, const char *s, bool any_ok)
{
	struct sl_prefixes out = {0};
	if (any_ok && strcmp(s, "any") == 0) {
		out.any = true;
		*l = out;
		return 0;
	}
	while (*s) {
		const char *comma = strchr(s, ',');
		size_t len = comma ? (size_t)(comma - s) : strlen(s);
		char buf[32];
		if (len == 0 || len >= sizeof(buf) || out.n == SL_PREFIXES_MAX)
			return -EINVAL;
		memcpy(buf, s, len);
		buf[len] = 0;
		unsigned bits = 32;
		char *slash = strchr(buf, '/');
		if (slash) {
			char *end;
			*slash = 0;
			unsigned long b = strtoul(slash + 1, &end, 10);
			if (!slash[1] || *end || b > 32 || slash[1] == '-' || slash[1] == '+')
				return -EINVAL;
			bits = (unsigned)b;
		}
		struct in_addr ia;
		if (inet_pton(AF_INET, buf, &ia) != 1)
			return -EINVAL;
		uint32_t mask = bits ? ~UINT32_C(0) << (32 - bits) : 0;
		/* kept in network order: a packet's address is matched as it is */
		out.mask[out.n] = htonl(mask);
		out.net[out.n++] = ia.s_addr & htonl(mask);
		s += len;
		if (comma)
			s++;
		if (comma && !*s)
			return -EINVAL;
	}
	if (out.n == 0)
		return -EINVAL;
	*l = out;
	return 0;
}

struct sl_udpguard *sl_udpguard_create(const struct sl_udpguard_conf *c, unsigned entries)
{
	unsigned sets = 1;
	while (sets * WAYS < entries)
		sets *= 2;
	struct sl_udpguard *g = calloc(1, sizeof(*g));
	if (!g)
		return NULL;
	g->c = *c;
	g->mask = sets - 1;
	g->e = aligned_alloc(64, sets * WAYS * sizeof(*g->e));
	g->t = calloc((size_t)sets * WAYS, sizeof(*g->t));
	if (!g->e || !g->t) {
		sl_udpguard_destroy(g);
		errno = ENOMEM;
		return NULL;
	}
	memset(g->e, 0, sets * WAYS * sizeof(*g->e));
	if (getrandom(&g->secret, sizeof(g->secret), 0) != sizeof(g->secret))
		g->secret = (uint64_t)(uintptr_t)g ^ (uint64_t)time(NULL);
	return g;
}

void sl_udpguard_destroy(struct sl_udpguard *g)
{
	if (!g)
		return;
	free(g->e);
	free(g->t);
	free(g);
}

static uint32_t set_of(const struct sl_udpguard *g, uint32_t ip)
{
	uint64_t x = (ip ^ g->secret) * UINT64_C(0x9e3779b97f4a7c15);
	x ^= x >> 29;
	return (uint32_t)(x >> 32) & g->mask;
}

/* The entry of @p ip, made (taking the set's least recently seen one)
 * if it has none. */
static struct entry *lookup(struct sl_udpguard *g, uint32_t ip, uint32_t now, size_t *idx)
{
	size_t base = (size_t)set_of(g, ip) * WAYS, victim = base;
	for (size_t i = base; i < base + WAYS; i++) {
		if (g->e[i].ip == ip) {
			*idx = i;
			return &g->e[i];
		}
		if (g->e[i].ip == 0 ||
		    (g->e[victim].ip != 0 && (int32_t)(g->e[i].seen - g->e[victim].seen) < 0))
			victim = i;
	}
	if (g->e[victim].ip)
		g->st.evictions++;
	g->e[victim] = (struct entry){.ip = ip, .credit = 0, .seen = now};
	g->t[victim] = (struct totals){0};
	*idx = victim;
	return &g->e[victim];
}

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

enum sl_udp_verdict sl_udpguard_charge(struct sl_udpguard *g, uint32_t ip, uint32_t in, size_t len,
                                       uint32_t out, uint32_t err_out, uint32_t now)
{
	size_t i;
	struct entry *e = lookup(g, ip, now, &i);
	int64_t burst = g->c.max_reply, agg_burst = 4 * (int64_t)g->c.max_reply;
	int64_t earned = (int64_t)g->c.factor * in;
	/* debt is forgiven at one largest reply a second; it never becomes
	 * credit, and credit saved up is capped at one largest reply */
	int64_t credit = e->credit;
	uint32_t idle = now - e->seen;
	if (credit < 0 && idle)
		credit = min64(0, credit + (int64_t)idle * burst / 1000);
	credit = min64(credit + earned, burst);
	g->agg = min64(g->agg + earned, agg_burst);
	e->seen = now;
	g->st.bytes_in += in;
	g->t[i].bytes_in += in;

	enum sl_udp_verdict v = SL_UDP_SEND;
	uint32_t cost = out;
	if (len > g->c.max_reply) {
		v = SL_UDP_TOO_LARGE;
		cost = err_out;
	}
	if (credit + burst < cost || g->agg + agg_burst < cost) {
		if (v == SL_UDP_SEND) {
			v = SL_UDP_OVER;
			cost = err_out;
		}
		if (credit + burst < cost || g->agg + agg_burst < cost) {
			v = SL_UDP_SILENT;
			cost = 0;
		}
	}
	switch (v) {
	case SL_UDP_TOO_LARGE:
		g->st.too_large++;
		break;
	case SL_UDP_OVER:
		g->st.over_budget++;
		break;
	case SL_UDP_SILENT:
		g->st.silent++;
		break;
	default:
		break;
	}
	if (v != SL_UDP_SEND && e->refused < UINT16_MAX)
		e->refused++;
	credit -= cost;
	g->agg -= cost;
	e->credit = (int32_t)(credit < INT32_MIN ? INT32_MIN : credit);
	g->st.bytes_out += cost;
	g->t[i].bytes_out += cost;
	return v;
}

const struct sl_udpguard_stats *sl_udpguard_stats(const struct sl_udpguard *g)
{
	return &g->st;
}

unsigned sl_udpguard_top(struct sl_udpguard *const *g, unsigned n, struct sl_udp_source *out,
                         unsigned k)
{
	unsigned have = 0;
	for (unsigned c = 0; c < n; c++) {
		if (!g[c])
			continue;
		size_t entries = ((size_t)g[c]->mask + 1) * WAYS;
		for (size_t i = 0; i < entries; i++) {
			struct entry e = g[c]->e[i];
			struct totals t = g[c]->t[i];
			if (!e.ip || !t.bytes_out)
				continue;
			struct sl_udp_source s = {e.ip, t.bytes_out, t.bytes_in, e.refused};
			unsigned j;
			for (j = 0; j < have && out[j].ip != s.ip; j++)
				;
			if (j < have) { /* the same source on another core */
				s.bytes_out += out[j].bytes_out;
				s.bytes_in += out[j].bytes_in;
				s.refused += out[j].refused;
				memmove(out + j, out + j + 1, (have - j - 1) * sizeof(*out));
				have--;
			}
			/* insert in order, most bytes sent first; the smallest
			 * falls off the end */
			unsigned at = have;
			while (at > 0 && out[at - 1].bytes_out < s.bytes_out)
				at--;
			if (at >= k)
				continue;
			unsigned move = have < k ? have - at : k - 1 - at;
			memmove(out + at + 1, out + at, move * sizeof(*out));
			out[at] = s;
			if (have < k)
				have++;
		}
	}
	return have;
}
