/*
 * sluicectl: the operator's command line.
 *
 *   sluicectl ring simulate --nodes N (--add K | --remove K) [--keys M]
 *             [--vnodes V] [--epsilon E] [--json] [--png FILE]
 *
 * ring simulate is the textbook experiment behind the choice of
 * consistent hashing: place M keys ("key:0" ...) on N nodes (n001 ...)
 * with every strategy of sluice/placement.h, then on N+K (or N-K, the last
 * K removed), and report for each strategy how many keys moved, how evenly
 * the keys spread after the change (min, max, mean keys per node, and
 * max/mean) and what a lookup costs. 3 -> 4 nodes over 100,000 keys:
 * modulo moves about 75%, consistent hashing about 25%.
 *
 *   sluicectl [--controller HOST:PORT] [--key-file FILE] status [--json]
 *   sluicectl [--controller HOST:PORT] [--key-file FILE] where KEY [--json]
 *
 * status and where ask sluice-control (default 127.0.0.1:7100, or
 * $SLUICE_CONTROLLER; the key from $SLUICE_KEY_FILE) over its own
 * authenticated frames (sluice/cmsg.h). status also lists every
 * replication stream (its state: streaming, resyncing, draining, down;
 * its lag in records and microseconds, as the nodes' heartbeats last
 * said) and exits 3 when one is down or lags past --lag-alert-us
 * (100000) or --lag-alert-records (10000).
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sluice/cmsg.h"
#include "sluice/libsluice.h"
#include "sluice/placement.h"
#include "sluice/slot.h"

struct result {
	size_t moved;
	double moved_fraction;
	size_t min, max;
	double mean, max_over_mean;
	double lookup_ns;
};

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static struct sl_placement *build(enum sl_place_strategy s, unsigned n,
                                  const struct sl_place_opts *o)
{
	struct sl_place_node *nodes = calloc(n, sizeof(*nodes));
	if (!nodes)
		return NULL;
	for (unsigned i = 0; i < n; i++) {
		snprintf(nodes[i].name, sizeof(nodes[i].name), "n%03u", i + 1);
		nodes[i].weight = 1;
	}
	struct sl_placement *p = sl_placement_build(s, nodes, n, o);
	free(nodes);
	return p;
}

static int simulate(enum sl_place_strategy s, unsigned n0, unsigned n1, size_t m,
                    const uint64_t *keys, const struct sl_place_opts *o, struct result *r)
{
	struct sl_placement *a = build(s, n0, o), *b = build(s, n1, o);
	uint16_t *pa = malloc(m * sizeof(*pa)), *pb = malloc(m * sizeof(*pb));
	size_t *count = calloc(n1, sizeof(*count));
	int rc = -ENOMEM;
	if (!a || !b || !pa || !pb || !count)
		goto out;
	if (sl_placement_assign(a, keys, m, pa, NULL) != 0)
		goto out;
	double t0 = now_ns();
	if (sl_placement_assign(b, keys, m, pb, NULL) != 0)
		goto out;
	r->lookup_ns = (now_ns() - t0) / (double)m;
	r->moved = 0;
	for (size_t i = 0; i < m; i++) {
		/* by name: index i of one placement need not be index i of
		 * the other */
		if (strcmp(sl_placement_name(a, pa[i]), sl_placement_name(b, pb[i])) != 0)
			r->moved++;
		count[pb[i]]++;
	}
	r->moved_fraction = (double)r->moved / (double)m;
	r->min = SIZE_MAX;
	r->max = 0;
	for (unsigned j = 0; j < n1; j++) {
		r->min = count[j] < r->min ? count[j] : r->min;
		r->max = count[j] > r->max ? count[j] : r->max;
	}
	r->mean = (double)m / n1;
	r->max_over_mean = (double)r->max / r->mean;
	rc = 0;
out:
	sl_placement_free(a);
	sl_placement_free(b);
	free(pa);
	free(pb);
	free(count);
	return rc;
}

static void bar(double v, double full)
{
	int w = (int)(v / full * 40 + 0.5);
	for (int i = 0; i < 40; i++)
		putchar(i < w ? '#' : '.');
}

static int png(const char *file, const struct result *r, unsigned n0, unsigned n1)
{
	FILE *g = popen("gnuplot", "w");
	if (!g)
		return -errno;
	fprintf(g, "set terminal pngcairo size 900,450\nset output '%s'\n", file);
	fprintf(g, "set title 'keys moved going from %u to %u nodes'\n", n0, n1);
	fprintf(g, "set style data histograms\nset style fill solid 0.8\nset yrange [0:*]\n"
	           "set ylabel 'fraction of keys'\nset y2label 'max/mean keys per node'\n"
	           "set y2tics\nset y2range [0:*]\nset boxwidth 0.8\nset key left top\n");
	fprintf(g, "plot '-' using 2:xtic(1) title 'moved fraction', '-' using 2 axes x1y2 "
	           "title 'max/mean'\n");
	for (int pass = 0; pass < 2; pass++) {
		for (int s = 0; s < SL_PLACE__COUNT; s++)
			fprintf(g, "%s %.6f\n", sl_place_names[s],
			        pass ? r[s].max_over_mean : r[s].moved_fraction);
		fprintf(g, "e\n");
	}
	int rc = pclose(g);
	return rc == 0 ? 0 : -EIO;
}

static int ring_simulate(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"nodes", required_argument, NULL, 'n'},
	    {"add", required_argument, NULL, 'a'},
	    {"remove", required_argument, NULL, 'r'},
	    {"keys", required_argument, NULL, 'k'},
	    {"vnodes", required_argument, NULL, 'v'},
	    {"epsilon", required_argument, NULL, 'e'},
	    {"json", no_argument, NULL, 'j'},
	    {"png", required_argument, NULL, 'p'},
	    {NULL, 0, NULL, 0},
	};
	long nodes = 0, add = 0, rem = 0, keys = 100000;
	struct sl_place_opts o = {.vnodes = 150, .epsilon = 0.25};
	bool json = false;
	const char *pngfile = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		char *end = NULL;
		long v = 0;
		double d = 0;
		if (c == 'e')
			d = strtod(optarg, &end);
		else if (c != 'j' && c != 'p')
			v = strtol(optarg, &end, 10);
		if (end && (*end || end == optarg)) {
			const char *name = "?";
			for (const struct option *x = opts; x->name; x++)
				if (x->val == c)
					name = x->name;
			fprintf(stderr, "sluicectl: --%s: '%s' is not a number\n", name, optarg);
			return 2;
		}
		switch (c) {
		case 'n':
			nodes = v;
			break;
		case 'a':
			add = v;
			break;
		case 'r':
			rem = v;
			break;
		case 'k':
			keys = v;
			break;
		case 'v':
			o.vnodes = (unsigned)(v > 0 && v < 100000 ? v : 0);
			if (!o.vnodes) {
				fprintf(stderr, "sluicectl: --vnodes: 1 to 99999\n");
				return 2;
			}
			break;
		case 'e':
			if (!(d > 0 && d < 100)) {
				fprintf(stderr, "sluicectl: --epsilon: above 0\n");
				return 2;
			}
			o.epsilon = d;
			break;
		case 'j':
			json = true;
			break;
		case 'p':
			pngfile = optarg;
			break;
		default:
			return 2;
		}
	}
	if (nodes < 1 || nodes > 10000 || (add > 0) == (rem > 0) || add < 0 || rem < 0 ||
	    rem >= nodes || add > 10000 || keys < 1 || keys > 100000000) {
		fprintf(stderr, "usage: sluicectl ring simulate --nodes N (--add K | --remove K) "
		                "[--keys M] [--vnodes V] [--epsilon E] [--json] [--png FILE]\n");
		return 2;
	}
	unsigned n0 = (unsigned)nodes, n1 = (unsigned)(add ? nodes + add : nodes - rem);
	uint64_t *h = malloc((size_t)keys * sizeof(*h));
	if (!h)
		return 1;
	for (long i = 0; i < keys; i++) {
		char k[32];
		int len = snprintf(k, sizeof(k), "key:%ld", i);
		h[i] = sl_key_hash(k, (size_t)len);
	}
	struct result r[SL_PLACE__COUNT];
	for (int s = 0; s < SL_PLACE__COUNT; s++)
		if (simulate((enum sl_place_strategy)s, n0, n1, (size_t)keys, h, &o, &r[s]) != 0) {
			fprintf(stderr, "sluicectl: out of memory\n");
			free(h);
			return 1;
		}
	free(h);
	if (json) {
		printf("{\"nodes_before\":%u,\"nodes_after\":%u,\"keys\":%ld,\"vnodes\":%u,"
		       "\"epsilon\":%g,\"strategies\":{",
		       n0, n1, keys, o.vnodes, o.epsilon);
		for (int s = 0; s < SL_PLACE__COUNT; s++)
			printf(
			    "%s\"%s\":{\"moved\":%zu,\"moved_fraction\":%.6f,\"min\":%zu,"
			    "\"max\":%zu,\"mean\":%.2f,\"max_over_mean\":%.4f,\"lookup_ns\":%.1f}",
			    s ? "," : "", sl_place_names[s], r[s].moved, r[s].moved_fraction,
			    r[s].min, r[s].max, r[s].mean, r[s].max_over_mean, r[s].lookup_ns);
		printf("}}\n");
	} else {
		printf("%u -> %u nodes, %ld keys, %u virtual nodes per node, epsilon %g\n\n", n0,
		       n1, keys, o.vnodes, o.epsilon);
		printf("%-11s %9s %7s  %8s %8s %10s %8s %9s\n", "strategy", "moved", "moved%",
		       "min", "max", "mean", "max/mean", "lookup");
		for (int s = 0; s < SL_PLACE__COUNT; s++)
			printf("%-11s %9zu %6.1f%%  %8zu %8zu %10.1f %8.3f %7.0fns\n",
			       sl_place_names[s], r[s].moved, 100 * r[s].moved_fraction, r[s].min,
			       r[s].max, r[s].mean, r[s].max_over_mean, r[s].lookup_ns);
		printf("\nkeys moved (|%s| = 100%%)\n", "........................................");
		for (int s = 0; s < SL_PLACE__COUNT; s++) {
			printf("%-11s |", sl_place_names[s]);
			bar(r[s].moved_fraction, 1.0);
			printf("| %5.1f%%\n", 100 * r[s].moved_fraction);
		}
		printf("\nbusiest node over the mean (|...| = 2x)\n");
		for (int s = 0; s < SL_PLACE__COUNT; s++) {
			printf("%-11s |", sl_place_names[s]);
			bar(r[s].max_over_mean, 2.0);
			printf("| %.3f\n", r[s].max_over_mean);
		}
	}
	if (pngfile && png(pngfile, r, n0, n1) != 0) {
		fprintf(stderr, "sluicectl: could not write %s with gnuplot\n", pngfile);
		return 1;
	}
	return 0;
}

/* ---- talking to sluice-control ------------------------------------------ */

static const char *controller = "127.0.0.1:7100";
static const char *keyfile;

/* One request frame, one answer frame of type @p want: its body, malloc'd
 * and NUL-terminated, in *out, its length in *len. */
static int ask_at(const char *controller, bool last, uint8_t type, uint8_t want, uint8_t **out,
                  uint32_t *len, uint64_t *epoch)
{
	uint8_t key[SL_CMSG_KEY];
	const char *why;
	if (!keyfile) {
		fprintf(stderr, "sluicectl: no cluster key (--key-file or SLUICE_KEY_FILE)\n");
		return -1;
	}
	if (sl_cmsg_read_key(keyfile, key, &why) != 0) {
		fprintf(stderr, "sluicectl: %s: %s\n", keyfile, why);
		return -1;
	}
	struct sockaddr_in sa;
	char bad[128];
	if (sl_hostport_parse(controller, &sa, bad, sizeof(bad)) != 0) {
		fprintf(stderr,
		        "sluicectl: --controller: '%s' is wrong in '%s' (want A.B.C.D:PORT)\n", bad,
		        controller);
		return -1;
	}
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct timeval tv = {5, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		if (last)
			fprintf(stderr, "sluicectl: cannot reach sluice-control at %s: %s\n",
			        controller, strerror(errno));
		close(fd);
		return -1;
	}
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint8_t req[SL_CMSG_HDR + SL_CMSG_MAC];
	struct sl_cmsg m = {.type = type,
	                    .sender = SL_CMSG_OPERATOR,
	                    .seq = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec};
	size_t n = sl_cmsg_encode(req, &m, key);
	uint8_t *buf = malloc(SL_CMSG_BODY_MAX + 64);
	size_t have = 0;
	int rc = -1;
	if (!buf || send(fd, req, n, MSG_NOSIGNAL) != (ssize_t)n)
		goto out;
	for (;;) {
		struct sl_cmsg a;
		size_t used;
		enum sl_cmsg_verdict v = sl_cmsg_decode(buf, have, key, &a, &used);
		if (v == SL_CMSG_OK && a.type == want && a.sender == SL_CMSG_CONTROLLER) {
			*out = malloc(a.body_len + 1);
			if (!*out)
				goto out;
			memcpy(*out, a.body, a.body_len);
			(*out)[a.body_len] = 0;
			*len = a.body_len;
			*epoch = a.epoch;
			rc = 0;
			goto out;
		}
		if (v != SL_CMSG_SHORT) {
			fprintf(stderr,
			        "sluicectl: the controller's answer was refused (wrong key?)\n");
			goto out;
		}
		ssize_t r = read(fd, buf + have, SL_CMSG_BODY_MAX + 64 - have);
		if (r <= 0) {
			/* a standby of an etcd-backed pair closes at once too */
			if (last)
				fprintf(stderr, "sluicectl: the controller closed the connection "
				                "(a wrong cluster key, or not the leader?)\n");
			goto out;
		}
		have += (size_t)r;
	}
out:
	free(buf);
	close(fd);
	return rc;
}

/* ask the controllers of the list (--controller A,B,...) in turn: the
 * leader answers */
static int ask(uint8_t type, uint8_t want, uint8_t **out, uint32_t *len, uint64_t *epoch)
{
	char list[512];
	snprintf(list, sizeof(list), "%s", controller);
	char *save = NULL, *tok = strtok_r(list, ",", &save);
	while (tok) {
		char *next = strtok_r(NULL, ",", &save);
		if (ask_at(tok, next == NULL, type, want, out, len, epoch) == 0)
			return 0;
		tok = next;
	}
	return -1;
}

/* status: a stream down, or lagging more than these, is an alert (exit 3) */
static unsigned alert_us = 100000, alert_records = 10000;

struct st_node {
	unsigned id, weight, primary, backup;
	char name[64], addr[64], alive[8];
};

/* The controller's status JSON, which it writes in exactly this layout. */
static unsigned parse_status(const char *js, struct st_node *nodes, unsigned max)
{
	unsigned n = 0;
	for (const char *p = strstr(js, "{\"id\":"); p && n < max; p = strstr(p + 1, "{\"id\":")) {
		struct st_node *x = &nodes[n];
		if (sscanf(
		        p,
		        "{\"id\":%u,\"name\":\"%63[^\"]\",\"addr\":\"%63[^\"]\",\"alive\":%7[a-z],"
		        "\"weight\":%u,\"primary_slots\":%u,\"backup_slots\":%u}",
		        &x->id, x->name, x->addr, x->alive, &x->weight, &x->primary,
		        &x->backup) == 7)
			n++;
	}
	return n;
}

static int status(bool json)
{
	uint8_t *body;
	uint32_t len;
	uint64_t epoch;
	if (ask(SL_CMSG_STATUS, SL_CMSG_STATUS, &body, &len, &epoch) != 0)
		return 1;
	if (json) {
		printf("%s\n", (char *)body);
		free(body);
		return 0;
	}
	static struct st_node nodes[1024];
	unsigned n = parse_status((const char *)body, nodes, 1024);
	printf("epoch %llu, %u node(s)\n\n", (unsigned long long)epoch, n);
	printf("%-4s %-16s %-22s %-6s %6s %8s %8s\n", "id", "name", "address", "alive", "weight",
	       "primary", "backup");
	for (unsigned i = 0; i < n; i++)
		printf("%-4u %-16s %-22s %-6s %6u %8u %8u\n", nodes[i].id, nodes[i].name,
		       nodes[i].addr, strcmp(nodes[i].alive, "true") == 0 ? "yes" : "no",
		       nodes[i].weight, nodes[i].primary, nodes[i].backup);
	/* the replication streams: state and lag, with the alert thresholds */
	const char *sp = strstr((const char *)body, "\"streams\":[");
	unsigned alerts = 0, ns = 0;
	for (const char *p = sp ? strstr(sp, "{\"from\":") : NULL; p;
	     p = strstr(p + 1, "{\"from\":")) {
		char from[64], to[64], state[16];
		unsigned core, to_core, lag_r, lag_us;
		if (sscanf(p,
		           "{\"from\":\"%63[^\"]\",\"core\":%u,\"to\":\"%63[^\"]\",\"to_core\":%u,"
		           "\"state\":\"%15[a-z]\",\"lag_records\":%u,\"lag_us\":%u}",
		           from, &core, to, &to_core, state, &lag_r, &lag_us) != 7)
			continue;
		if (!ns++)
			printf("\n%-22s %-22s %-10s %12s %12s\n", "stream", "to", "state",
			       "lag records", "lag us");
		bool alert = strcmp(state, "down") == 0 || lag_us > alert_us ||
		             lag_r > alert_records;
		alerts += alert;
		char a[80], b[80];
		snprintf(a, sizeof(a), "%s core %u", from, core);
		snprintf(b, sizeof(b), "%s core %u", to, to_core);
		printf("%-22s %-22s %-10s %12u %12u%s\n", a, b, state, lag_r, lag_us,
		       alert ? "  ALERT" : "");
	}
	if (alerts)
		printf("\n%u stream(s) down or lagging past --lag-alert-us %u / --lag-alert-records "
		       "%u\n",
		       alerts, alert_us, alert_records);
	free(body);
	return alerts ? 3 : 0;
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static int where(const char *key, bool json)
{
	uint8_t *st, *tb;
	uint32_t sl, tl;
	uint64_t e1, epoch;
	if (ask(SL_CMSG_STATUS, SL_CMSG_STATUS, &st, &sl, &e1) != 0)
		return 1;
	if (ask(SL_CMSG_TABLE_GET, SL_CMSG_TABLE, &tb, &tl, &epoch) != 0) {
		free(st);
		return 1;
	}
	static struct sl_cmsg_table t;
	static struct st_node nodes[1024];
	unsigned n = parse_status((const char *)st, nodes, 1024);
	if (sl_cmsg_table_decode(tb, tl, &t) != 0) {
		fprintf(stderr, "sluicectl: the controller has no slot table yet\n");
		free(st);
		free(tb);
		return 1;
	}
	uint16_t slot = sl_slot_of(sl_key_hash(key, strlen(key)));
	const char *pn = NULL, *bn = NULL;
	for (unsigned i = 0; i < n; i++) {
		if (nodes[i].id == t.primary[slot])
			pn = nodes[i].name;
		if (nodes[i].id == t.backup[slot])
			bn = nodes[i].name;
	}
	if (json) {
		printf("{\"key\":");
		json_str(key);
		printf(",\"slot\":%u,\"epoch\":%llu,\"primary\":", slot, (unsigned long long)epoch);
		if (pn)
			json_str(pn);
		else
			printf("null");
		printf(",\"backup\":");
		if (bn)
			json_str(bn);
		else
			printf("null");
		printf("}\n");
	} else {
		printf("key %s: slot %u, epoch %llu, primary %s, backup %s\n", key, slot,
		       (unsigned long long)epoch, pn ? pn : "-", bn ? bn : "-");
	}
	free(st);
	free(tb);
	return 0;
}

/* get|set|del through libsluice, straight to the key's node over UDP */
static const char *nodes_arg;

static int data_cmd(const char *cmd, const char *key, const char *val)
{
	if (!nodes_arg) {
		fprintf(stderr, "sluicectl: %s needs --nodes IP:PORT[,...] (or SLUICE_NODES)\n", cmd);
		return 2;
	}
	struct sluice *c = sluice_open(nodes_arg, NULL);
	if (!c) {
		fprintf(stderr, "sluicectl: no node of %s answers: %s\n", nodes_arg, strerror(errno));
		return 1;
	}
	int rc = 0, e;
	size_t klen = strlen(key);
	if (strcmp(cmd, "get") == 0) {
		struct sluice_value v;
		e = sluice_get(c, key, klen, &v);
		if (e == 1) {
			fwrite(v.data, 1, v.len, stdout);
			putchar('\n');
			sluice_value_free(&v);
		} else if (e == 0) {
			fprintf(stderr, "sluicectl: %s: not found\n", key);
			rc = 1;
		}
	} else if (strcmp(cmd, "set") == 0) {
		e = sluice_set(c, key, klen, val, strlen(val), 0, 0);
	} else {
		e = sluice_delete(c, key, klen);
		if (e == 0) {
			fprintf(stderr, "sluicectl: %s: not found\n", key);
			rc = 1;
		}
	}
	if (e < 0) {
		fprintf(stderr, "sluicectl: %s %s: %s%s%s\n", cmd, key, strerror(-e),
		        sluice_last_error(c)[0] ? ": " : "", sluice_last_error(c));
		rc = 1;
	}
	sluice_close(c);
	return rc;
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: sluicectl ring simulate --nodes N (--add K | --remove K) [--keys M]\n"
	        "                 [--vnodes V] [--epsilon E] [--json] [--png FILE]\n"
	        "       sluicectl [--controller HOST:PORT] [--key-file FILE] [--lag-alert-us N]\n"
	        "                 [--lag-alert-records N] status [--json]\n"
	        "       sluicectl [--controller HOST:PORT] [--key-file FILE] where KEY [--json]\n"
	        "       sluicectl --nodes IP:PORT[,...] get KEY | set KEY VALUE | del KEY\n");
}

int main(int argc, char **argv)
{
	if (getenv("SLUICE_CONTROLLER"))
		controller = getenv("SLUICE_CONTROLLER");
	keyfile = getenv("SLUICE_KEY_FILE");
	nodes_arg = getenv("SLUICE_NODES");
	int i = 1;
	while (i + 1 < argc && argv[i][0] == '-') {
		if (strcmp(argv[i], "--controller") == 0)
			controller = argv[i + 1];
		else if (strcmp(argv[i], "--key-file") == 0)
			keyfile = argv[i + 1];
		else if (strcmp(argv[i], "--nodes") == 0)
			nodes_arg = argv[i + 1];
		else if (strcmp(argv[i], "--lag-alert-us") == 0)
			alert_us = (unsigned)strtoul(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--lag-alert-records") == 0)
			alert_records = (unsigned)strtoul(argv[i + 1], NULL, 10);
		else
			break;
		i += 2;
	}
	argc -= i - 1;
	argv += i - 1;
	if (argc >= 3 && strcmp(argv[1], "ring") == 0 && strcmp(argv[2], "simulate") == 0)
		return ring_simulate(argc - 2, argv + 2);
	bool json = argc >= 3 && strcmp(argv[argc - 1], "--json") == 0;
	if (argc == 2 + json && strcmp(argv[1], "status") == 0)
		return status(json);
	if (argc == 3 + json && strcmp(argv[1], "where") == 0)
		return where(argv[2], json);
	if ((argc == 3 && (strcmp(argv[1], "get") == 0 || strcmp(argv[1], "del") == 0)) ||
	    (argc == 4 && strcmp(argv[1], "set") == 0))
		return data_cmd(argv[1], argv[2], argc == 4 ? argv[3] : NULL);
	usage();
	return 2;
}
