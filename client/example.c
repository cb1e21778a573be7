/*
 * libsluice by example: write COUNT keys PREFIX:0 .. PREFIX:COUNT-1 (value
 * "value-" and the key) straight to their nodes, or read them back in
 * multi-gets of 100 and check every value.
 *
 *   sluice-example SEEDS set PREFIX COUNT
 *   sluice-example SEEDS check PREFIX COUNT     exit 0 when all are right
 *
 * SEEDS: one or more nodes, "IP:PORT[,IP:PORT...]"; the client learns the
 * rest of the cluster from them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/libsluice.h"

#define BATCH 100

int main(int argc, char **argv)
{
	if (argc != 5 || (strcmp(argv[2], "set") != 0 && strcmp(argv[2], "check") != 0)) {
		fprintf(stderr, "usage: %s SEEDS set|check PREFIX COUNT\n", argv[0]);
		return 2;
	}
	long count = strtol(argv[4], NULL, 10);
	struct sluice *c = sluice_open(argv[1], NULL);
	if (!c) {
		fprintf(stderr, "no node of %s answers: %s\n", argv[1], strerror(errno));
		return 1;
	}
	printf("table epoch %llu\n", (unsigned long long)sluice_epoch(c));
	static char keys[BATCH][300], want[BATCH][320];
	const char *kp[BATCH];
	size_t kl[BATCH];
	struct sluice_value v[BATCH];
	int found[BATCH];
	long done = 0, right = 0, failed = 0;
	for (long i = 0; i < count; i += BATCH) {
		int n = (int)(count - i < BATCH ? count - i : BATCH);
		for (int j = 0; j < n; j++) {
			kl[j] = (size_t)snprintf(keys[j], sizeof(keys[j]), "%s:%ld", argv[3], i + j);
			snprintf(want[j], sizeof(want[j]), "value-%s", keys[j]);
			kp[j] = keys[j];
		}
		if (argv[2][0] == 's') {
			for (int j = 0; j < n; j++) {
				int e = sluice_set(c, kp[j], kl[j], want[j], strlen(want[j]), 0, 0);
				if (e) {
					fprintf(stderr, "set %s: %s %s\n", kp[j], strerror(-e),
					        sluice_last_error(c));
					failed++;
				}
				done++;
			}
			continue;
		}
		int e = sluice_get_multi(c, (size_t)n, kp, kl, v, found);
		if (e < 0) {
			fprintf(stderr, "get: %s %s\n", strerror(-e), sluice_last_error(c));
			failed += n;
			continue;
		}
		for (int j = 0; j < n; j++) {
			done++;
			if (found[j]) {
				right += v[j].len == strlen(want[j]) && memcmp(v[j].data, want[j], v[j].len) == 0;
				sluice_value_free(&v[j]);
			}
		}
	}
	if (argv[2][0] == 's')
		printf("%ld set, %ld failed\n", done - failed, failed);
	else
		printf("%ld read, %ld right, %ld failed\n", done, right, failed);
	sluice_close(c);
	return failed || (argv[2][0] == 'c' && right != count) ? 1 : 0;
}
