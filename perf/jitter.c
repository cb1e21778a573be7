/*
 * jitter: how often, and for how long, this machine takes the CPU away from
 * a thread that never sleeps. A tail latency measured here (p99 at half
 * load, say) is only as good as the CPU it ran on, and on a shared host a
 * polling core loses tens of microseconds at a time to other tenants.
 *
 *   jitter SECONDS [MIB]
 *
 * Spins reading the TSC and counts every gap of over 10 us between two
 * reads. With MIB > 0 each turn of the loop also reads 4 random bytes of a
 * MIB-sized buffer, as a server walking its store does: on the VMs this
 * ran on that lengthens the gaps (measured on two hosts: 10-20 and 20-40 us
 * without, 20-40 and 40-160 us with 256 MiB).
 * Prints one JSON object: gaps per second by length and the fraction of
 * time lost in them.
 *
 *   gap length (us):  [10,20) [20,40) [40,80) [80,160) [160,320) [320,...)
 *   "per_s":          [  a,      b,      c,      d,       e,        f   ]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: jitter SECONDS [MIB]\n");
		return 2;
	}
	double dur = atof(argv[1]);
	size_t n = argc > 2 ? (size_t)atol(argv[2]) << 20 : 0;
	volatile char *buf = NULL;
	if (n) {
		char *b = malloc(n);
		if (!b)
			return 1;
		memset(b, 1, n); /* resident before the clock starts */
		buf = b;
	}
	/* TSC rate against the monotonic clock */
	double t0 = now_s();
	uint64_t c0 = __rdtsc();
	while (now_s() - t0 < 0.1)
		;
	double hz = (double)(__rdtsc() - c0) / (now_s() - t0);

	uint64_t thr = (uint64_t)(hz * 10e-6), per[6] = {0}, lost = 0;
	uint64_t start = __rdtsc(), last = start, end = start + (uint64_t)(dur * hz);
	uint64_t x = 0x9e3779b97f4a7c15u, sum = 0;
	for (;;) {
		uint64_t t = __rdtsc();
		if (t >= end)
			break;
		uint64_t d = t - last;
		last = t;
		if (d >= thr) {
			lost += d;
			unsigned b = 0;
			for (uint64_t q = d; q >= 2 * thr && b < 5; q /= 2)
				b++;
			per[b]++;
		}
		for (int k = 0; buf && k < 4; k++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			sum += (uint64_t)buf[x % n];
		}
	}
	double el = (double)(last - start) / hz;
	printf("{\"seconds\":%.1f,\"mib\":%zu,\"per_s\":[", el, n >> 20);
	for (int b = 0; b < 6; b++)
		printf("%s%.0f", b ? "," : "", (double)per[b] / el);
	printf("],\"lost_fraction\":%.4f,\"checksum\":%lu}\n", (double)lost / hz / el,
	       (unsigned long)(sum & 1));
	return 0;
}
