/* Fault injection for test builds; see include/sluice/fault.h. */
#include "sluice/fault.h"

#ifdef SL_FAULTS
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[SL_FAULT__COUNT] = {
#define X(n) #n,
    SL_FAULT_POINTS(X)
#undef X
};

enum mode { OFF, PROB, NTH, EVERY };

struct point {
	enum mode mode;
	uint64_t n;         /* NTH, EVERY */
	uint32_t threshold; /* PROB: fail when a 32-bit draw is below it */
	_Atomic uint64_t calls;
	_Atomic uint64_t injected;
};

static struct point pts[SL_FAULT__COUNT];

static uint32_t draw(void)
{
	static _Thread_local uint64_t x;
	static _Atomic uint64_t seeds = 0x9e3779b97f4a7c15u;
	if (!x)
		x = atomic_fetch_add(&seeds, 0x9e3779b97f4a7c15u) | 1;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return (uint32_t)(x >> 32);
}

bool sl_fault(enum sl_fault_point p)
{
	struct point *pt = &pts[p];
	bool fail = false;
	switch (pt->mode) {
	case OFF:
		return false;
	case PROB:
		fail = draw() < pt->threshold || pt->threshold == UINT32_MAX;
		break;
	case NTH:
		fail = atomic_fetch_add(&pt->calls, 1) + 1 == pt->n;
		break;
	case EVERY:
		fail = (atomic_fetch_add(&pt->calls, 1) + 1) % pt->n == 0;
		break;
	}
	if (fail)
		atomic_fetch_add(&pt->injected, 1);
	return fail;
}

static int parse_one(const char *s, size_t len, struct point *out, int *which)
{
	const char *eq = memchr(s, '=', len);
	if (!eq)
		return -EINVAL;
	size_t nl = (size_t)(eq - s);
	*which = -1;
	for (int i = 0; i < SL_FAULT__COUNT; i++)
		if (strlen(names[i]) == nl && memcmp(names[i], s, nl) == 0)
			*which = i;
	char v[32];
	size_t vl = len - nl - 1;
	if (*which < 0 || vl == 0 || vl >= sizeof(v))
		return -EINVAL;
	memcpy(v, eq + 1, vl);
	v[vl] = 0;
	char *end;
	if (v[0] == '@' || v[0] == '*') {
		unsigned long long n = strtoull(v + 1, &end, 10);
		if (*end || end == v + 1 || n == 0)
			return -EINVAL;
		out->mode = v[0] == '@' ? NTH : EVERY;
		out->n = n;
		return 0;
	}
	double f = strtod(v, &end);
	if (*end || end == v || !(f > 0) || f > 1)
		return -EINVAL;
	out->mode = PROB;
	out->threshold = f >= 1 ? UINT32_MAX : (uint32_t)(f * 4294967296.0);
	return 0;
}

int sl_fault_configure(const char *spec)
{
	struct point next[SL_FAULT__COUNT] = {0};
	while (spec && *spec) {
		const char *comma = strchr(spec, ',');
		size_t len = comma ? (size_t)(comma - spec) : strlen(spec);
		struct point p = {0};
		int which;
		if (len && parse_one(spec, len, &p, &which) != 0)
			return -EINVAL;
		if (len)
			next[which] = p;
		spec += len + (comma ? 1 : 0);
	}
	for (int i = 0; i < SL_FAULT__COUNT; i++) {
		pts[i].mode = next[i].mode;
		pts[i].n = next[i].n;
		pts[i].threshold = next[i].threshold;
		atomic_store(&pts[i].calls, 0);
		atomic_store(&pts[i].injected, 0);
	}
	return 0;
}

uint64_t sl_fault_injected(enum sl_fault_point p)
{
	return atomic_load(&pts[p].injected);
}

__attribute__((constructor)) static void from_env(void)
{
	const char *e = getenv("SLUICE_FAULTS");
	if (e && sl_fault_configure(e) != 0) {
		fprintf(stderr, "SLUICE_FAULTS: cannot parse '%s'\n", e);
		abort();
	}
}
#endif
