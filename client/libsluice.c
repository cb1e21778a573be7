/*
 * libsluice (include/sluice/libsluice.h): the slot table, routing by it,
 * and memcached over UDP.
 *
 * A request is one datagram with memcached's 8-byte frame (request id,
 * sequence 0, count 1); its answer may come in many, each naming its
 * sequence number and the count. Requests of one call are all sent, then
 * answers are gathered by request id until each is whole or the try's
 * time is up; the missing are sent again (a new request id, so a late
 * answer to the old one is not mistaken for the new).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sluice/frame.h"
#include "sluice/libsluice.h"
#include "sluice/proto.h" /* SL_KEY_MAX */
#include "sluice/slot.h"

#define MAX_SEEDS 16
#define MAX_NODES 255
#define DGRAM_MAX 1400 /* a request's datagram, frame included */
/* a set travels in one datagram, which the kernel fragments over the MTU
 * and DPDK 22.11 reassembles from at most 8 fragments */
#define SET_MAX (8 * 1480 - 8 - SL_FRAME_LEN - 300)

struct sluice {
	int fd;
	struct sluice_opts o;
	struct sockaddr_in seed[MAX_SEEDS];
	unsigned nseeds;
	uint64_t epoch;
	unsigned nnodes; /* 0: one node alone, everything to the seed */
	struct sockaddr_in node[MAX_NODES];
	uint8_t slot[SL_SLOTS]; /* index into node[], 0xff: none */
	uint64_t fetched_ms;
	uint16_t rid;
	char err[128];
};

/* One request and its answer being put together. */
struct req {
	struct sockaddr_in to;
	char *text;
	size_t len;
	uint16_t rid;
	uint16_t count, got;
	char **part;
	size_t *plen;
	bool done;
	char *reply; /* the whole answer, NUL-terminated */
	size_t rlen;
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void req_reset(struct req *r)
{
	for (unsigned i = 0; i < r->count && r->part; i++)
		free(r->part[i]);
	free(r->part);
	free(r->plen);
	r->part = NULL;
	r->plen = NULL;
	r->count = r->got = 0;
}

static void req_free(struct req *r)
{
	req_reset(r);
	free(r->reply);
	free(r->text);
	memset(r, 0, sizeof(*r));
}

static int send_req(struct sluice *c, struct req *r)
{
	uint8_t buf[SL_FRAME_LEN + 65536];
	if (r->len > sizeof(buf) - SL_FRAME_LEN)
		return -EMSGSIZE;
	req_reset(r);
	r->rid = ++c->rid;
	struct sl_frame f = {.id = r->rid, .seq = 0, .count = 1};
	sl_frame_encode(buf, &f);
	memcpy(buf + SL_FRAME_LEN, r->text, r->len);
	ssize_t n = sendto(c->fd, buf, SL_FRAME_LEN + r->len, 0, (struct sockaddr *)&r->to,
	                   sizeof(r->to));
	return n < 0 ? -errno : 0;
}

/* A datagram of an answer: its place in its request. */
static void take(struct req *rs, size_t n, const uint8_t *d, size_t len)
{
	if (len < SL_FRAME_LEN)
		return;
	uint16_t id = (uint16_t)(d[0] << 8 | d[1]), seq = (uint16_t)(d[2] << 8 | d[3]);
	uint16_t cnt = (uint16_t)(d[4] << 8 | d[5]);
	for (size_t i = 0; i < n; i++) {
		struct req *r = &rs[i];
		if (r->done || r->rid != id || !cnt || seq >= cnt)
			continue;
		if (!r->part) {
			r->count = cnt;
			r->part = calloc(cnt, sizeof(char *));
			r->plen = calloc(cnt, sizeof(size_t));
			if (!r->part || !r->plen) {
				req_reset(r);
				return;
			}
		}
		if (cnt != r->count || r->part[seq])
			return;
		r->part[seq] = malloc(len - SL_FRAME_LEN + 1);
		if (!r->part[seq])
			return;
		memcpy(r->part[seq], d + SL_FRAME_LEN, len - SL_FRAME_LEN);
		r->plen[seq] = len - SL_FRAME_LEN;
		if (++r->got < r->count)
			return;
		size_t total = 0;
		for (unsigned k = 0; k < r->count; k++)
			total += r->plen[k];
		r->reply = malloc(total + 1);
		if (!r->reply) {
			req_reset(r);
			return;
		}
		r->rlen = 0;
		for (unsigned k = 0; k < r->count; k++) {
			memcpy(r->reply + r->rlen, r->part[k], r->plen[k]);
			r->rlen += r->plen[k];
		}
		r->reply[r->rlen] = 0;
		r->done = true;
		req_reset(r);
		return;
	}
}

/* Send every request and gather the answers, sending again what is
 * missing after each try's timeout. @return 0 when all are answered. */
static int exchange(struct sluice *c, struct req *rs, size_t n, bool *retried)
{
	static uint8_t buf[65536];
	for (unsigned t = 0; t < c->o.tries; t++) {
		size_t left = 0;
		for (size_t i = 0; i < n; i++)
			if (!rs[i].done) {
				int e = send_req(c, &rs[i]);
				if (e)
					return e;
				left++;
			}
		if (!left)
			return 0;
		if (t && retried)
			*retried = true;
		uint64_t end = now_ms() + c->o.timeout_ms;
		while (left) {
			uint64_t now = now_ms();
			if (now >= end)
				break;
			struct pollfd p = {.fd = c->fd, .events = POLLIN};
			if (poll(&p, 1, (int)(end - now)) <= 0)
				continue;
			ssize_t k;
			while ((k = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
				take(rs, n, buf, (size_t)k);
				left = 0;
				for (size_t i = 0; i < n; i++)
					left += !rs[i].done;
			}
		}
		if (!left)
			return 0;
	}
	return -ETIMEDOUT;
}

static int parse_addr(const char *s, size_t len, struct sockaddr_in *a)
{
	char tmp[64];
	if (len >= sizeof(tmp))
		return -EINVAL;
	memcpy(tmp, s, len);
	tmp[len] = 0;
	char *colon = strrchr(tmp, ':');
	if (!colon)
		return -EINVAL;
	*colon = 0;
	char *end;
	long port = strtol(colon + 1, &end, 10);
	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	if (*end || port < 1 || port > 65535 || inet_pton(AF_INET, tmp, &a->sin_addr) != 1)
		return -EINVAL;
	a->sin_port = htons((uint16_t)port);
	return 0;
}

static int hexval(char ch)
{
	return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Read a `stats table` answer into the client's table. */
static int load_table(struct sluice *c, const char *rep)
{
	uint64_t epoch = 0;
	unsigned nodes = 0;
	static struct sockaddr_in node[MAX_NODES];
	const char *p = rep;
	bool slots = false;
	uint8_t slot[SL_SLOTS];
	while (*p) {
		const char *eol = strstr(p, "\r\n");
		if (!eol)
			return -EPROTO;
		unsigned long long e;
		unsigned i, id;
		char addr[64];
		if (sscanf(p, "STAT epoch %llu", &e) == 1) {
			epoch = e;
		} else if (sscanf(p, "STAT node %u %u %63s", &i, &id, addr) == 3) {
			if (i >= MAX_NODES || i != nodes || parse_addr(addr, strlen(addr), &node[i]))
				return -EPROTO;
			nodes++;
		} else if (strncmp(p, "STAT slots ", 11) == 0) {
			if (eol - (p + 11) != 2 * SL_SLOTS)
				return -EPROTO;
			for (unsigned s = 0; s < SL_SLOTS; s++) {
				int hi = hexval(p[11 + 2 * s]), lo = hexval(p[12 + 2 * s]);
				if (hi < 0 || lo < 0)
					return -EPROTO;
				slot[s] = (uint8_t)(hi << 4 | lo);
				if (slot[s] != 0xff && slot[s] >= nodes)
					return -EPROTO;
			}
			slots = true;
		} else if (strncmp(p, "END", 3) == 0) {
			break;
		}
		p = eol + 2;
	}
	if (!slots)
		return -EPROTO;
	c->epoch = epoch;
	c->nnodes = nodes;
	memcpy(c->node, node, sizeof(node[0]) * nodes);
	memcpy(c->slot, slot, sizeof(slot));
	c->fetched_ms = now_ms();
	return 0;
}

int sluice_refresh(struct sluice *c)
{
	int err = -EHOSTUNREACH;
	/* the seeds in turn, then the nodes the last table named */
	for (unsigned i = 0; i < c->nseeds + c->nnodes; i++) {
		struct req r = {.to = i < c->nseeds ? c->seed[i] : c->node[i - c->nseeds]};
		r.text = strdup("stats table\r\n");
		r.len = r.text ? strlen(r.text) : 0;
		err = r.text ? exchange(c, &r, 1, NULL) : -ENOMEM;
		if (!err)
			err = load_table(c, r.reply);
		req_free(&r);
		if (!err)
			return 0;
	}
	return err;
}

uint64_t sluice_epoch(const struct sluice *c)
{
	return c->epoch;
}

struct sluice *sluice_open(const char *seeds, const struct sluice_opts *o)
{
	struct sluice *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->o = o ? *o : (struct sluice_opts){0};
	if (!c->o.timeout_ms)
		c->o.timeout_ms = 200;
	if (!c->o.tries)
		c->o.tries = 3;
	if (!c->o.refresh_ms)
		c->o.refresh_ms = 1000;
	for (const char *p = seeds; p && *p && c->nseeds < MAX_SEEDS;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		if (parse_addr(p, len, &c->seed[c->nseeds]) != 0) {
			free(c);
			errno = EINVAL;
			return NULL;
		}
		c->nseeds++;
		p = comma ? comma + 1 : p + len;
	}
	c->fd = c->nseeds ? socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0) : -1;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	c->rid = (uint16_t)(ts.tv_nsec ^ getpid());
	int e = c->fd < 0 ? -EINVAL : sluice_refresh(c);
	if (e) {
		if (c->fd >= 0)
			close(c->fd);
		free(c);
		errno = -e;
		return NULL;
	}
	return c;
}

void sluice_close(struct sluice *c)
{
	if (!c)
		return;
	close(c->fd);
	free(c);
}

const char *sluice_last_error(const struct sluice *c)
{
	return c->err;
}

void sluice_value_free(struct sluice_value *v)
{
	free(v->data);
	v->data = NULL;
	v->len = 0;
}

/* The node a key goes to. */
static struct sockaddr_in route(struct sluice *c, const char *key, size_t klen)
{
	if (c->nnodes) {
		uint8_t i = c->slot[sl_slot_of(sl_key_hash(key, klen))];
		if (i != 0xff)
			return c->node[i];
	}
	return c->seed[0];
}

static bool valid_key(const char *key, size_t klen)
{
	if (!klen || klen > SL_KEY_MAX)
		return false;
	for (size_t i = 0; i < klen; i++)
		if ((unsigned char)key[i] <= ' ' || key[i] == 0x7f)
			return false;
	return true;
}

/* The table is old, or a node said something was wrong: fetch it again
 * before the next request (errors there are the next request's). */
static void maybe_refresh(struct sluice *c, bool now)
{
	if (now || now_ms() - c->fetched_ms >= c->o.refresh_ms)
		(void)sluice_refresh(c);
}

/* One request to the key's node; *rep is its answer (the caller frees).
 * An answer that is a SERVER_ERROR has the table fetched again and the
 * request sent once more, to the node the new table names. */
static int one(struct sluice *c, const char *key, size_t klen, char *text, size_t len, char **rep,
               size_t *rlen)
{
	maybe_refresh(c, false);
	for (int attempt = 0;; attempt++) {
		struct req r = {.to = route(c, key, klen), .text = text, .len = len};
		bool retried = false;
		int e = exchange(c, &r, 1, &retried);
		r.text = NULL;
		if (e) {
			req_free(&r);
			maybe_refresh(c, true);
			return e;
		}
		if (retried)
			maybe_refresh(c, true);
		if (strncmp(r.reply, "SERVER_ERROR", 12) == 0) {
			snprintf(c->err, sizeof(c->err), "%.*s", (int)strcspn(r.reply, "\r\n"), r.reply);
			req_free(&r);
			maybe_refresh(c, true);
			if (attempt == 0)
				continue;
			return -EIO;
		}
		*rep = r.reply;
		*rlen = r.rlen;
		r.reply = NULL;
		req_free(&r);
		return 0;
	}
}

/* Parse the VALUE entries of a get answer at @p p; for each, call back
 * with its key. @return 0 when the answer ends in END. */
static int values(char *p, size_t len, void (*cb)(void *arg, const char *key, size_t klen,
                                                  struct sluice_value *v),
                  void *arg)
{
	char *end = p + len;
	while (p < end) {
		if (end - p >= 5 && memcmp(p, "END\r\n", 5) == 0)
			return 0;
		char key[SL_KEY_MAX + 1];
		unsigned flags;
		unsigned long bytes;
		int used = 0;
		if (sscanf(p, "VALUE %250s %u %lu%n", key, &flags, &bytes, &used) != 3)
			return -EPROTO;
		char *eol = memchr(p, '\n', (size_t)(end - p));
		if (!eol || (size_t)(end - eol - 1) < bytes + 2)
			return -EPROTO;
		struct sluice_value v = {.data = malloc(bytes + 1), .len = bytes, .flags = flags};
		if (!v.data)
			return -ENOMEM;
		memcpy(v.data, eol + 1, bytes);
		v.data[bytes] = 0;
		cb(arg, key, strlen(key), &v);
		free(v.data);
		p = eol + 1 + bytes + 2;
	}
	return -EPROTO;
}

struct one_get {
	const char *key;
	size_t klen;
	struct sluice_value *out;
	int found;
};

static void one_value(void *arg, const char *key, size_t klen, struct sluice_value *v)
{
	struct one_get *g = arg;
	if (klen == g->klen && memcmp(key, g->key, klen) == 0 && !g->found) {
		*g->out = *v;
		v->data = NULL;
		g->found = 1;
	}
}

int sluice_get(struct sluice *c, const char *key, size_t klen, struct sluice_value *v)
{
	if (!valid_key(key, klen))
		return -EINVAL;
	char text[SL_KEY_MAX + 8];
	int n = snprintf(text, sizeof(text), "get %.*s\r\n", (int)klen, key);
	char *rep;
	size_t rlen;
	int e = one(c, key, klen, text, (size_t)n, &rep, &rlen);
	if (e)
		return e;
	struct one_get g = {.key = key, .klen = klen, .out = v};
	e = values(rep, rlen, one_value, &g);
	free(rep);
	if (e) {
		if (g.found)
			sluice_value_free(v);
		return e;
	}
	return g.found;
}

int sluice_set(struct sluice *c, const char *key, size_t klen, const void *val, size_t vlen,
               uint32_t flags, int32_t exptime)
{
	if (!valid_key(key, klen))
		return -EINVAL;
	if (vlen > SET_MAX)
		return -EMSGSIZE;
	size_t cap = klen + vlen + 64;
	char *text = malloc(cap);
	if (!text)
		return -ENOMEM;
	int h = snprintf(text, cap, "set %.*s %u %d %zu\r\n", (int)klen, key, flags, exptime, vlen);
	memcpy(text + h, val, vlen);
	memcpy(text + h + vlen, "\r\n", 2);
	char *rep;
	size_t rlen;
	int e = one(c, key, klen, text, (size_t)h + vlen + 2, &rep, &rlen);
	free(text);
	if (e)
		return e;
	e = strcmp(rep, "STORED\r\n") == 0 ? 0 : -ENOSPC;
	if (e)
		snprintf(c->err, sizeof(c->err), "%.*s", (int)strcspn(rep, "\r\n"), rep);
	free(rep);
	return e;
}

int sluice_delete(struct sluice *c, const char *key, size_t klen)
{
	if (!valid_key(key, klen))
		return -EINVAL;
	char text[SL_KEY_MAX + 16];
	int n = snprintf(text, sizeof(text), "delete %.*s\r\n", (int)klen, key);
	char *rep;
	size_t rlen;
	int e = one(c, key, klen, text, (size_t)n, &rep, &rlen);
	if (e)
		return e;
	e = strcmp(rep, "DELETED\r\n") == 0 ? 1 : strcmp(rep, "NOT_FOUND\r\n") == 0 ? 0 : -EPROTO;
	free(rep);
	return e;
}

/* sluice_get_multi: which of the caller's keys a request carries */
struct multi {
	size_t n;
	const char *const *keys;
	const size_t *klens;
	struct sluice_value *v;
	int *found;
	size_t *idx; /* the keys of the request being read, in its order */
	size_t nidx, next;
};

static void multi_value(void *arg, const char *key, size_t klen, struct sluice_value *v)
{
	struct multi *m = arg;
	/* answers come in the request's order, misses left out */
	while (m->next < m->nidx) {
		size_t i = m->idx[m->next++];
		if (m->klens[i] == klen && memcmp(m->keys[i], key, klen) == 0) {
			if (!m->found[i]) {
				m->v[i] = *v;
				v->data = NULL;
				m->found[i] = 1;
			}
			return;
		}
	}
}

int sluice_get_multi(struct sluice *c, size_t n, const char *const *keys, const size_t *klens,
                     struct sluice_value *v, int *found)
{
	for (size_t i = 0; i < n; i++) {
		found[i] = 0;
		if (!valid_key(keys[i], klens[i]))
			return -EINVAL;
	}
	maybe_refresh(c, false);
	/* one request per owner, cut where a datagram is full */
	size_t *owner = malloc(n * sizeof(*owner) + 1), *idx = malloc(n * sizeof(*idx) + 1);
	struct req *rs = calloc(n + 1, sizeof(*rs));
	int e = owner && idx && rs ? 0 : -ENOMEM;
	size_t nreq = 0, ni = 0;
	for (size_t i = 0; i < n && !e; i++) {
		struct sockaddr_in to = route(c, keys[i], klens[i]);
		/* this owner's request, or a new one when it is full */
		size_t r;
		for (r = 0; r < nreq; r++)
			if (rs[r].to.sin_addr.s_addr == to.sin_addr.s_addr &&
			    rs[r].to.sin_port == to.sin_port &&
			    rs[r].len + klens[i] + 3 <= DGRAM_MAX - SL_FRAME_LEN)
				break;
		if (r == nreq) {
			rs[r].to = to;
			rs[r].text = malloc(DGRAM_MAX);
			if (!rs[r].text) {
				e = -ENOMEM;
				break;
			}
			memcpy(rs[r].text, "get", 3);
			rs[r].len = 3;
			nreq++;
		}
		rs[r].text[rs[r].len++] = ' ';
		memcpy(rs[r].text + rs[r].len, keys[i], klens[i]);
		rs[r].len += klens[i];
		owner[i] = r;
	}
	for (size_t r = 0; r < nreq && !e; r++) {
		memcpy(rs[r].text + rs[r].len, "\r\n", 2);
		rs[r].len += 2;
	}
	bool retried = false;
	if (!e)
		e = exchange(c, rs, nreq, &retried);
	int hits = 0;
	for (size_t r = 0; r < nreq && !e; r++) {
		if (strncmp(rs[r].reply, "SERVER_ERROR", 12) == 0) {
			snprintf(c->err, sizeof(c->err), "%.*s", (int)strcspn(rs[r].reply, "\r\n"),
			         rs[r].reply);
			e = -EIO;
			break;
		}
		ni = 0;
		for (size_t i = 0; i < n; i++)
			if (owner[i] == r)
				idx[ni++] = i;
		struct multi m = {n, keys, klens, v, found, idx, ni, 0};
		e = values(rs[r].reply, rs[r].rlen, multi_value, &m);
	}
	for (size_t i = 0; i < n; i++) {
		if (e && found[i]) {
			sluice_value_free(&v[i]);
			found[i] = 0;
		}
		hits += found[i];
	}
	for (size_t r = 0; r < nreq; r++)
		req_free(&rs[r]);
	free(rs);
	free(owner);
	free(idx);
	if (e || retried)
		maybe_refresh(c, true);
	return e ? e : hits;
}
