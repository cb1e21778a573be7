/*
 * Command execution over the per-core store; see include/sluice/exec.h.
 *
 * Replies follow memcached 1.6 byte for byte where a client can observe
 * them (tests/e2e/differential.py holds us to that).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "sluice/bytes.h"
#include "sluice/exec.h"
#include "sluice/fault.h"

const char *const sl_drop_names[SL_DROP__COUNT] = {
#define X(n) #n,
    SL_DROP_REASONS(X)
#undef X
};

/* ---- buffer ------------------------------------------------------------- */

static int buf_grow(struct sl_buf *b, size_t need)
{
	size_t cap = b->cap ? b->cap : 2048;
	while (cap < need)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

int sl_buf_reserve(struct sl_buf *b, size_t extra)
{
	size_t need = b->len + extra + SL_BUF_SPARE;
	if (need <= b->cap)
		return 0;
	if (sl_fault(SL_FAULT_buf_grow) || buf_grow(b, need) != 0) {
		b->err = true;
		return -ENOMEM;
	}
	return 0;
}

int sl_buf_fail(struct sl_buf *b, size_t mark, const char *line)
{
	size_t n = strlen(line);
	if (mark > b->len || n + 2 > SL_BUF_SPARE)
		return -EINVAL;
	b->len = mark;
	b->err = false;
	/* the spare room is there in any buffer that was ever allocated */
	if (b->len + n + 2 > b->cap && buf_grow(b, b->len + n + 2 + SL_BUF_SPARE) != 0)
		return -ENOMEM;
	memcpy(b->p + b->len, line, n);
	memcpy(b->p + b->len + n, "\r\n", 2);
	b->len += n + 2;
	return 0;
}

int sl_buf_put(struct sl_buf *b, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	if (sl_buf_reserve(b, n))
		return -ENOMEM;
	memcpy(b->p + b->len, p, n);
	b->len += n;
	return 0;
}

void sl_buf_release(struct sl_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
	b->err = false;
}

static void put_str(struct sl_buf *b, const char *s)
{
	sl_buf_put(b, s, strlen(s));
}

static void put_line(struct sl_buf *b, const char *s)
{
	put_str(b, s);
	sl_buf_put(b, "\r\n", 2);
}

/* Decimal digits of v at p (no terminator); returns the count. printf
 * costs about 300 instructions a number, this about 10 a digit, and a GET
 * reply has two or three numbers. */
static size_t fmt_u64(char *p, uint64_t v)
{
	/* flags are mostly 0 and small values common: skip the loops */
	if (v < 10) {
		p[0] = (char)('0' + v);
		return 1;
	}
	if (v < 100) {
		p[0] = (char)('0' + v / 10);
		p[1] = (char)('0' + v % 10);
		return 2;
	}
	char t[20];
	size_t n = 0;
	do {
		t[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (size_t i = 0; i < n; i++)
		p[i] = t[n - 1 - i];
	return n;
}

static void put_u64(struct sl_buf *b, uint64_t v)
{
	if (sl_buf_reserve(b, 20))
		return;
	b->len += fmt_u64(b->p + b->len, v);
}

static void put_i64(struct sl_buf *b, int64_t v)
{
	char t[24];
	int n = snprintf(t, sizeof(t), "%" PRId64, v);
	sl_buf_put(b, t, (size_t)n);
}

/* ---- conversation -------------------------------------------------------- */

void sl_conv_reset(struct sl_conv *c, const char *in, uint32_t len, bool udp)
{
	struct sl_buf keep = c->out;
	memset(c, 0, sizeof(*c));
	c->out = keep;
	c->out.len = 0;
	c->out.err = false;
	c->in = in;
	c->in_len = len;
	c->udp = udp;
}

/* Hash of the key at @p k, using the hint left by the previous core. */
static uint64_t key_hash(struct sl_conv *c, struct sl_tok k)
{
	uint32_t off = (uint32_t)(k.p - c->in) + 1;
	if (c->hint_off == off && c->hint_len == k.len && k.p >= c->in && k.p < c->in + c->in_len)
		return c->hint_hash;
	return sl_key_hash(k.p, k.len);
}

/* Is the key this core's? If not, *to names its core here, or (with
 * c->remote set) its node, and the conversation records the epoch of the
 * table it was routed by. */
static bool is_mine(struct sl_exec *ex, struct sl_conv *c, struct sl_tok k, uint64_t h,
                    unsigned *to)
{
	unsigned o = sl_slot_owner(ex->table, h);
	if (o == ex->core)
		return true;
	c->epoch = ex->table->epoch;
	c->remote = o == SL_CORE_ELSEWHERE;
	if (c->remote)
		o = ex->table->node[sl_slot_of(h)];
	/* keys that live outside the input (a decoded base64 key) are hashed
	 * again by the owner: rare, and cheaper than carrying the bytes */
	if (k.p >= c->in && k.p < c->in + c->in_len) {
		sl_conv_hint(c, (uint32_t)(k.p - c->in), k.len, h);
	}
	*to = o;
	return false;
}

#define HOLD_LINE(ex)                                                                              \
	((ex)->stale ? "SERVER_ERROR slot table out of date, try again"                           \
	             : "SERVER_ERROR key's slot is moving, try again")

/* ---- helpers over items ---------------------------------------------------- */

static struct sl_class_stats *cls_of(struct sl_exec *ex, const struct sl_item *it)
{
	return sl_store_class(ex->store, sl_item_class(it));
}

static struct sl_class_stats *cls_for(struct sl_exec *ex, size_t klen, size_t vlen)
{
	return sl_store_class(ex->store, sl_class_of(sl_mc_ntotal(klen, vlen)));
}

static void mark_fetched(struct sl_item *it, uint32_t now)
{
	it->bits |= SL_IT_FETCHED;
	sl_store_touch_access(it, now);
}

/*
 * Store a new item with memcached's do_store_item() rules.
 * Returns one of the STORE_* outcomes; *cas_out gets the stored CAS.
 */
enum store_res { ST_STORED, ST_NOT_STORED, ST_EXISTS, ST_NOT_FOUND, ST_TOO_LARGE, ST_NO_MEM };

struct store_args {
	enum sl_cmd mode; /* SET ADD REPLACE APPEND PREPEND CAS */
	struct sl_tok key;
	uint64_t hash;
	uint32_t flags;
	uint32_t exptime;
	const char *data;
	uint32_t vlen;
	uint64_t cas;   /* compare value; 0 = none */
	bool set_stale; /* meta I with CAS: allow an older CAS, mark stale */
	bool binkey;
};

static enum store_res do_store(struct sl_exec *ex, const struct store_args *a, uint32_t now,
                               uint64_t *cas_out)
{
	struct sl_store *s = ex->store;
	struct sl_item *old = sl_store_get(s, a->hash, a->key.p, a->key.len, now);
	enum { CAS_NONE, CAS_MATCH, CAS_BADVAL, CAS_STALE } cr = CAS_NONE;
	*cas_out = 0;
	cls_for(ex, a->key.len, a->vlen)->cmd_set++;

	if (old) {
		if (a->cas == 0)
			cr = CAS_NONE;
		else if (a->cas == old->cas)
			cr = CAS_MATCH;
		else if (a->set_stale && a->cas < old->cas)
			cr = CAS_STALE;
		else
			cr = CAS_BADVAL;
	}
	switch (a->mode) {
	case SL_CMD_ADD:
		if (old) {
			sl_store_touch_access(old, now);
			return ST_NOT_STORED;
		}
		break;
	case SL_CMD_CAS:
		if (!old)
			return ST_NOT_FOUND;
		if (cr != CAS_MATCH && cr != CAS_STALE) {
			cls_of(ex, old)->cas_badval++;
			return ST_EXISTS;
		}
		cls_of(ex, old)->cas_hits++;
		break;
	case SL_CMD_REPLACE:
		if (!old)
			return ST_NOT_STORED;
		break;
	case SL_CMD_APPEND:
	case SL_CMD_PREPEND:
		if (!old)
			return ST_NOT_STORED;
		if (cr != CAS_NONE && cr != CAS_MATCH)
			return ST_EXISTS;
		break;
	default:
		break;
	}

	bool concat = a->mode == SL_CMD_APPEND || a->mode == SL_CMD_PREPEND;
	size_t vlen = a->vlen + (concat ? old->vlen : 0);
	sl_store_pin(s, old);
	struct sl_item *it = sl_store_alloc(s, a->key.p, a->key.len, vlen, now);
	sl_store_pin(s, NULL);
	if (!it) {
		bool big = errno == E2BIG;
		/* memcached drops the old value of a failed set rather than
		 * leave stale data behind */
		if (a->mode == SL_CMD_SET && old)
			sl_store_delete(s, old, a->hash);
		return big ? ST_TOO_LARGE : ST_NO_MEM;
	}
	char *v = sl_item_value(it);
	if (a->mode == SL_CMD_APPEND) {
		memcpy(v, sl_item_value(old), old->vlen);
		memcpy(v + old->vlen, a->data, a->vlen);
	} else if (a->mode == SL_CMD_PREPEND) {
		memcpy(v, a->data, a->vlen);
		memcpy(v + a->vlen, sl_item_value(old), old->vlen);
	} else {
		sl_copy(v, a->data, a->vlen);
	}
	it->flags = concat ? old->flags : a->flags;
	it->exptime = concat ? old->exptime : a->exptime;
	if (a->binkey)
		it->bits |= SL_IT_BINKEY;
	if (cr == CAS_STALE) {
		it->exptime = old->exptime;
		it->bits |= SL_IT_STALE | (old->bits & SL_IT_TOKEN);
	}
	if (sl_store_link(s, it, old, a->hash) != 0) {
		sl_store_free(s, it);
		return ST_NO_MEM;
	}
	sl_store_note(s, SL_CHANGE_SET, it, a->hash);
	*cas_out = it->cas;
	return ST_STORED;
}

/* incr/decr core shared by text and meta. */
enum delta_res { D_OK, D_NON_NUMERIC, D_NO_MEM, D_NOT_FOUND, D_CAS_MISMATCH };

static enum delta_res do_delta(struct sl_exec *ex, struct sl_tok key, uint64_t h, bool incr,
                               uint64_t delta, uint64_t cas, uint32_t now, char *buf,
                               struct sl_item **out)
{
	struct sl_store *s = ex->store;
	struct sl_item *it = sl_store_get(s, h, key.p, key.len, now);
	uint64_t v;
	*out = NULL;
	if (!it)
		return D_NOT_FOUND;
	if (it->vlen == 0)
		return D_NON_NUMERIC;
	if (cas && it->cas != cas)
		return D_CAS_MISMATCH;
	if (!sl_strtoull(sl_item_value(it), it->vlen, &v))
		return D_NON_NUMERIC;
	if (incr) {
		v += delta;
		cls_of(ex, it)->incr_hits++;
	} else {
		v = delta > v ? 0 : v - delta;
		cls_of(ex, it)->decr_hits++;
	}
	int n = snprintf(buf, 24, "%" PRIu64, v);
	if ((uint32_t)n <= it->vlen) {
		/* in place, padded with spaces, as memcached does */
		memcpy(sl_item_value(it), buf, (size_t)n);
		memset(sl_item_value(it) + n, ' ', it->vlen - (uint32_t)n);
		it->cas = sl_store_next_cas(s);
		sl_store_touch_access(it, now);
		*out = it;
		return D_OK;
	}
	sl_store_pin(s, it);
	struct sl_item *ni = sl_store_alloc(s, key.p, key.len, (size_t)n, now);
	sl_store_pin(s, NULL);
	if (!ni)
		return D_NO_MEM;
	memcpy(sl_item_value(ni), buf, (size_t)n);
	ni->flags = it->flags;
	ni->exptime = it->exptime;
	ni->bits = it->bits & (SL_IT_BINKEY | SL_IT_FETCHED);
	if (sl_store_link(s, ni, it, h) != 0) {
		sl_store_free(s, ni);
		return D_NO_MEM;
	}
	*out = ni;
	return D_OK;
}

/* ---- text commands ------------------------------------------------------- */

static void reply(struct sl_conv *c, const struct sl_req *r, const char *line)
{
	if (!r->noreply)
		put_line(&c->out, line);
}

/* Most bytes "VALUE key flags bytes [cas]\r\n" data "\r\n" can take: three
 * numbers of up to 20 digits, each after a space. */
static size_t value_max(const struct sl_item *it)
{
	return 6 + it->klen + 3 * 21 + 2 + it->vlen + 2;
}

/* Write "VALUE key flags bytes [cas]\r\n" data "\r\n" at @p p in one go (at
 * most value_max bytes); returns its length. */
static size_t fmt_value(char *p, const struct sl_item *it, bool with_cas)
{
	char *start = p;
	memcpy(p, "VALUE ", 6);
	p += 6;
	sl_copy(p, it->data, it->klen);
	p += it->klen;
	*p++ = ' ';
	p += fmt_u64(p, it->flags);
	*p++ = ' ';
	p += fmt_u64(p, it->vlen);
	if (with_cas) {
		*p++ = ' ';
		p += fmt_u64(p, it->cas);
	}
	*p++ = '\r';
	*p++ = '\n';
	sl_copy(p, it->data + it->klen, it->vlen);
	p += it->vlen;
	*p++ = '\r';
	*p++ = '\n';
	return (size_t)(p - start);
}

static void value_line(struct sl_buf *o, struct sl_item *it, bool with_cas)
{
	if (sl_buf_reserve(o, value_max(it)))
		return;
	o->len += fmt_value(o->p + o->len, it, with_cas);
}

/* One key of a get-family request. */
static void get_one(struct sl_exec *ex, struct sl_conv *c, const struct sl_req *r, struct sl_tok k,
                    uint64_t h, uint32_t now)
{
	bool touch = r->cmd == SL_CMD_GAT || r->cmd == SL_CMD_GATS;
	bool with_cas = r->cmd == SL_CMD_GETS || r->cmd == SL_CMD_GATS;
	struct sl_item *it = sl_store_get(ex->store, h, k.p, k.len, now);
	if (touch) {
		ex->st.cmd_touch++;
		if (it)
			ex->st.touch_hits++;
		else
			ex->st.touch_misses++;
	} else {
		ex->st.cmd_get++;
		if (it)
			ex->st.get_hits++;
		else
			ex->st.get_misses++;
	}
	if (!it)
		return;
	if (touch) {
		it->exptime = sl_exptime_abs(r->exptime, now);
		cls_of(ex, it)->touch_hits++;
		sl_store_note(ex->store, SL_CHANGE_TTL, it, h);
	} else {
		cls_of(ex, it)->get_hits++;
	}
	value_line(&c->out, it, with_cas);
	mark_fetched(it, now);
}

int sl_exec_get1(struct sl_exec *ex, const char *key, size_t klen, uint64_t ih, unsigned hint,
                 uint32_t req_len, uint32_t now, char *out, size_t cap)
{
	struct sl_item *it = sl_store_get_ih(ex->store, ih, hint, key, klen, now);
	/* a live item is not changed by looking it up, so giving up here
	 * leaves the request whole for the general path */
	if ((it ? value_max(it) : 0) + 5 > cap)
		return -1;
	/* what sl_exec_run and get_one count for the same request */
	ex->st.requests++;
	ex->st.bytes_read += req_len;
	ex->st.cmd_get++;
	size_t n = 0;
	if (it) {
		ex->st.get_hits++;
		cls_of(ex, it)->get_hits++;
		n = fmt_value(out, it, false);
		mark_fetched(it, now);
	} else {
		ex->st.get_misses++;
	}
	memcpy(out + n, "END\r\n", 5);
	return (int)(n + 5);
}

static void text_store(struct sl_exec *ex, struct sl_conv *c, const struct sl_req *r, uint64_t h,
                       uint32_t now)
{
	struct store_args a = {
	    .mode = (enum sl_cmd)r->cmd,
	    .key = r->key,
	    .hash = h,
	    .flags = r->flags,
	    .exptime = sl_exptime_abs(r->exptime, now),
	    .data = r->data,
	    .vlen = r->vlen,
	    .cas = r->cmd == SL_CMD_CAS ? r->cas : 0,
	};
	uint64_t cas;
	ex->st.cmd_set++;
	enum store_res res = do_store(ex, &a, now, &cas);
	if (r->cmd == SL_CMD_CAS) {
		if (res == ST_STORED)
			ex->st.cas_hits++;
		else if (res == ST_EXISTS)
			ex->st.cas_badval++;
		else if (res == ST_NOT_FOUND)
			ex->st.cas_misses++;
	}
	switch (res) {
	case ST_STORED:
		reply(c, r, "STORED");
		break;
	case ST_NOT_STORED:
		reply(c, r, "NOT_STORED");
		break;
	case ST_EXISTS:
		reply(c, r, "EXISTS");
		break;
	case ST_NOT_FOUND:
		reply(c, r, "NOT_FOUND");
		break;
	case ST_TOO_LARGE:
		ex->st.store_too_large++;
		reply(c, r, "SERVER_ERROR object too large for cache");
		break;
	case ST_NO_MEM:
		ex->st.store_no_memory++;
		reply(c, r, "SERVER_ERROR out of memory storing object");
		break;
	}
}

static void text_delta(struct sl_exec *ex, struct sl_conv *c, const struct sl_req *r, uint64_t h,
                       uint32_t now)
{
	char buf[24];
	struct sl_item *it;
	bool incr = r->cmd == SL_CMD_INCR;
	switch (do_delta(ex, r->key, h, incr, r->delta, 0, now, buf, &it)) {
	case D_OK:
		sl_store_note(ex->store, SL_CHANGE_SET, it, h);
		if (incr)
			ex->st.incr_hits++;
		else
			ex->st.decr_hits++;
		reply(c, r, buf);
		break;
	case D_NON_NUMERIC:
		reply(c, r, "CLIENT_ERROR cannot increment or decrement non-numeric value");
		break;
	case D_NO_MEM:
		reply(c, r, "SERVER_ERROR out of memory");
		break;
	case D_NOT_FOUND:
		if (incr)
			ex->st.incr_misses++;
		else
			ex->st.decr_misses++;
		reply(c, r, "NOT_FOUND");
		break;
	case D_CAS_MISMATCH:
		break;
	}
}

/* ---- meta commands ------------------------------------------------------- */

static void meta_key(struct sl_buf *o, const char *key, size_t klen, bool bin)
{
	sl_buf_put(o, " k", 2);
	if (!bin) {
		sl_buf_put(o, key, klen);
		return;
	}
	char enc[SL_KEY_MAX * 2];
	size_t n = sl_b64_encode(key, klen, enc, sizeof(enc));
	sl_buf_put(o, enc, n);
	sl_buf_put(o, " b", 2);
}

/* The O and k flags, which every meta reply echoes. */
static void meta_echo(struct sl_buf *o, const struct sl_req *r, char f, const char *key,
                      size_t klen, bool bin)
{
	if (f == 'O') {
		sl_buf_put(o, " ", 1);
		sl_buf_put(o, r->meta.opaque.p, r->meta.opaque.len);
	} else if (f == 'k') {
		meta_key(o, key, klen, bin);
	}
}

/* A status-only meta reply: the two-letter code, the flags the request asked
 * to have echoed (O, k; c when @p cas is given), CRLF. */
static void meta_status(struct sl_buf *o, const struct sl_req *r, const char *code,
                        const uint64_t *cas)
{
	sl_buf_put(o, code, 2);
	for (unsigned i = 0; i < r->meta.nret; i++) {
		if (cas && r->meta.ret[i] == 'c') {
			sl_buf_put(o, " c", 2);
			put_u64(o, *cas);
		} else {
			meta_echo(o, r, r->meta.ret[i], r->key.p, r->key.len, r->key_binary);
		}
	}
	sl_buf_put(o, "\r\n", 2);
}

static void meta_ttl(struct sl_buf *o, const struct sl_item *it, uint32_t now)
{
	sl_buf_put(o, " t", 2);
	if (it->exptime == 0)
		sl_buf_put(o, "-1", 2);
	else
		put_i64(o, (int64_t)(int32_t)(it->exptime - now));
}

static void meta_get(struct sl_exec *ex, struct sl_conv *c, const struct sl_req *r, uint64_t h,
                     uint32_t now)
{
	const struct sl_meta *m = &r->meta;
	struct sl_buf *o = &c->out;
	struct sl_item *it = sl_store_get(ex->store, h, r->key.p, r->key.len, now);
	bool created = false, won = false, ttl_set = false;
	bool has = (m->seen & SL_MF('T')) != 0;

	ex->st.cmd_meta++;
	if (!it && (m->seen & SL_MF('N'))) {
		it = sl_store_alloc(ex->store, r->key.p, r->key.len, 0, now);
		if (it) {
			if (r->key_binary)
				it->bits |= SL_IT_BINKEY;
			if (sl_store_link(ex->store, it, NULL, h) == 0) {
				created = true;
			} else {
				sl_store_free(ex->store, it);
				it = NULL;
			}
		}
	}
	if (!it) {
		if (has) {
			ex->st.cmd_touch++;
			ex->st.touch_misses++;
		} else {
			ex->st.cmd_get++;
			ex->st.get_misses++;
		}
		if (!r->noreply)
			meta_status(o, r, "EN", NULL);
		return;
	}

	bool value = (m->seen & SL_MF('v')) != 0;
	if (value) {
		sl_buf_put(o, "VA ", 3);
		put_u64(o, it->vlen);
	} else {
		sl_buf_put(o, "HD", 2);
	}
	for (unsigned i = 0; i < m->nret; i++) {
		switch (m->ret[i]) {
		case 'T':
			ttl_set = true;
			it->exptime = sl_exptime_abs(m->ttl, now);
			break;
		case 'N':
			if (created) {
				it->exptime = sl_exptime_abs(m->vivify_ttl, now);
				won = true;
			}
			break;
		case 'R':
			if (!(it->bits & SL_IT_TOKEN) && !created && it->exptime != 0 &&
			    it->exptime < sl_exptime_abs(m->recache_ttl, now))
				won = true;
			break;
		case 's':
			sl_buf_put(o, " s", 2);
			put_u64(o, it->vlen);
			break;
		case 't':
			meta_ttl(o, it, now);
			break;
		case 'c':
			sl_buf_put(o, " c", 2);
			put_u64(o, it->cas);
			break;
		case 'f':
			sl_buf_put(o, " f", 2);
			put_u64(o, it->flags);
			break;
		case 'l':
			sl_buf_put(o, " l", 2);
			put_u64(o, (uint32_t)(now - it->atime));
			break;
		case 'h':
			sl_buf_put(o, (it->bits & SL_IT_FETCHED) ? " h1" : " h0", 3);
			break;
		default:
			meta_echo(o, r, m->ret[i], sl_item_key(it), it->klen,
			          (it->bits & SL_IT_BINKEY) != 0);
			break;
		}
	}
	if (it->bits & SL_IT_TOKEN)
		sl_buf_put(o, " Z", 2);
	if (it->bits & SL_IT_STALE) {
		sl_buf_put(o, " X", 2);
		if (!(it->bits & SL_IT_TOKEN))
			won = true;
	}
	if (won) {
		sl_buf_put(o, " W", 2);
		it->bits |= SL_IT_TOKEN;
	}
	sl_buf_put(o, "\r\n", 2);
	if (value) {
		sl_buf_put(o, sl_item_value(it), it->vlen);
		sl_buf_put(o, "\r\n", 2);
	}
	/* one report, of the final state: a vivified item with its TTL and
	 * token, a recache token handed out, or a new TTL alone */
	if (created || won)
		sl_store_note(ex->store, SL_CHANGE_SET, it, h);
	else if (ttl_set)
		sl_store_note(ex->store, SL_CHANGE_TTL, it, h);
	if (!(m->seen & SL_MF('u')))
		mark_fetched(it, now);
	if (ttl_set) {
		ex->st.cmd_touch++;
		ex->st.touch_hits++;
		cls_of(ex, it)->touch_hits++;
	} else {
		ex->st.cmd_get++;
		ex->st.get_hits++;
		cls_of(ex, it)->get_hits++;
	}
}

static void meta_set(struct sl_exec *ex, struct sl_conv *c, const struct sl_req *r, uint64_t h,
                     uint32_t now)
{
	const struct sl_meta *m = &r->meta;
	struct sl_buf *o = &c->out;
	enum sl_cmd mode = SL_CMD_SET;
	switch (m->mode) {
	case 'E':
		mode = SL_CMD_ADD;
		break;
	case 'A':
		mode = SL_CMD_APPEND;
		break;
	case 'P':
		mode = SL_CMD_PREPEND;
		break;
	case 'R':
		mode = SL_CMD_REPLACE;
		break;
	default:
		break;
	}
	bool has_cas = (m->seen & SL_MF('C')) != 0;
	if (has_cas && (mode == SL_CMD_SET || mode == SL_CMD_REPLACE))
		mode = SL_CMD_CAS;
	struct store_args a = {
	    .mode = mode,
	    .key = r->key,
	    .hash = h,
	    .flags = m->client_flags,
	    .exptime = (m->seen & SL_MF('T')) ? sl_exptime_abs(m->ttl, now) : 0,
	    .data = r->data,
	    .vlen = r->vlen,
	    .cas = m->cas,
	    .set_stale = mode == SL_CMD_CAS && (m->seen & SL_MF('I')),
	    .binkey = r->key_binary,
	};
	uint64_t cas;
	ex->st.cmd_meta++;
	ex->st.cmd_set++;
	enum store_res res = do_store(ex, &a, now, &cas);
	const char *code;
	switch (res) {
	case ST_STORED:
		if (r->noreply)
			return;
		code = "HD";
		break;
	case ST_EXISTS:
		code = "EX";
		break;
	case ST_NOT_FOUND:
		code = "NF";
		break;
	case ST_NOT_STORED:
		code = "NS";
		break;
	case ST_TOO_LARGE:
		ex->st.store_too_large++;
		put_line(o, "SERVER_ERROR object too large for cache");
		return;
	default:
		ex->st.store_no_memory++;
		put_line(o, "SERVER_ERROR out of memory storing object");
		return;
	}
	meta_status(o, r, code, &cas);
}

static void meta_delete(struct sl_exec *ex, struct sl_conv *c, const struct sl_req *r, uint64_t h,
                        uint32_t now)
{
	const struct sl_meta *m = &r->meta;
	struct sl_buf *o = &c->out;
	struct sl_item *it = sl_store_get(ex->store, h, r->key.p, r->key.len, now);
	const char *code;
	ex->st.cmd_meta++;
	if (!it) {
		ex->st.delete_misses++;
		code = "NF";
	} else if ((m->seen & SL_MF('C')) && it->cas != m->cas) {
		code = "EX";
	} else if (m->seen & SL_MF('I')) {
		if (m->seen & SL_MF('T'))
			it->exptime = sl_exptime_abs(m->ttl, now);
		it->bits |= SL_IT_STALE;
		it->bits &= (uint8_t)~SL_IT_TOKEN;
		it->cas = sl_store_next_cas(ex->store);
		sl_store_note(ex->store, SL_CHANGE_SET, it, h);
		ex->st.delete_hits++;
		code = "HD";
	} else {
		cls_of(ex, it)->delete_hits++;
		sl_store_delete(ex->store, it, h);
		ex->st.delete_hits++;
		code = "HD";
	}
	if (code[0] == 'H' && r->noreply)
		return;
	meta_status(o, r, code, NULL);
}

/* What ma's T and N flags do to the item's TTL, in flag order: with noreply
 * there is no reply loop to do it in. */
static void meta_arith_ttl(const struct sl_meta *m, struct sl_item *it, bool created, uint32_t now)
{
	for (unsigned i = 0; i < m->nret; i++)
		if (m->ret[i] == 'T')
			it->exptime = sl_exptime_abs(m->ttl, now);
		else if (m->ret[i] == 'N' && created)
			it->exptime = sl_exptime_abs(m->vivify_ttl, now);
}

static void meta_arith(struct sl_exec *ex, struct sl_conv *c, const struct sl_req *r, uint64_t h,
                       uint32_t now)
{
	const struct sl_meta *m = &r->meta;
	struct sl_buf *o = &c->out;
	bool incr = !(m->mode == 'D' || m->mode == '-');
	char buf[24];
	struct sl_item *it = NULL;
	bool created = false;
	const char *code = NULL;

	ex->st.cmd_meta++;
	switch (do_delta(ex, r->key, h, incr, m->delta, m->cas, now, buf, &it)) {
	case D_OK:
		if (incr)
			ex->st.incr_hits++;
		else
			ex->st.decr_hits++;
		break;
	case D_NON_NUMERIC:
		put_line(o, "CLIENT_ERROR cannot increment or decrement non-numeric value");
		return;
	case D_NO_MEM:
		put_line(o, "SERVER_ERROR out of memory");
		return;
	case D_CAS_MISMATCH:
		code = "EX";
		break;
	case D_NOT_FOUND:
		if (incr)
			ex->st.incr_misses++;
		else
			ex->st.decr_misses++;
		if (!(m->seen & SL_MF('N'))) {
			code = "NF";
			break;
		}
		snprintf(buf, sizeof(buf), "%" PRIu64, m->initial);
		it = sl_store_alloc(ex->store, r->key.p, r->key.len, strlen(buf), now);
		if (!it) {
			put_line(o, "SERVER_ERROR Out of memory allocating new item");
			return;
		}
		memcpy(sl_item_value(it), buf, strlen(buf));
		if (r->key_binary)
			it->bits |= SL_IT_BINKEY;
		if (sl_store_link(ex->store, it, NULL, h) != 0) {
			sl_store_free(ex->store, it);
			put_line(o, "SERVER_ERROR Out of memory allocating new item");
			return;
		}
		created = true;
		break;
	}
	if (!it) {
		meta_status(o, r, code, NULL);
		return;
	}
	if (r->noreply) {
		meta_arith_ttl(m, it, created, now);
		sl_store_note(ex->store, SL_CHANGE_SET, it, h);
		return;
	}
	size_t vlen = strlen(buf);
	bool value = (m->seen & SL_MF('v')) != 0;
	if (value) {
		sl_buf_put(o, "VA ", 3);
		put_u64(o, vlen);
	} else {
		sl_buf_put(o, "HD", 2);
	}
	for (unsigned i = 0; i < m->nret; i++) {
		switch (m->ret[i]) {
		case 'c':
			sl_buf_put(o, " c", 2);
			put_u64(o, it->cas);
			break;
		case 't':
			meta_ttl(o, it, now);
			break;
		case 'T':
			it->exptime = sl_exptime_abs(m->ttl, now);
			break;
		case 'N':
			if (created)
				it->exptime = sl_exptime_abs(m->vivify_ttl, now);
			break;
		default:
			meta_echo(o, r, m->ret[i], r->key.p, r->key.len, r->key_binary);
			break;
		}
	}
	sl_buf_put(o, "\r\n", 2);
	if (value) {
		sl_buf_put(o, buf, vlen);
		sl_buf_put(o, "\r\n", 2);
	}
	sl_store_note(ex->store, SL_CHANGE_SET, it, h);
}

static void meta_debug(struct sl_exec *ex, struct sl_conv *c, const struct sl_req *r, uint64_t h,
                       uint32_t now)
{
	struct sl_buf *o = &c->out;
	struct sl_item *it = sl_store_get(ex->store, h, r->key.p, r->key.len, now);
	if (!it) {
		put_line(o, "EN");
		return;
	}
	char t[160];
	sl_buf_put(o, "ME ", 3);
	if (it->bits & SL_IT_BINKEY) {
		char enc[SL_KEY_MAX * 2];
		sl_buf_put(o, enc, sl_b64_encode(sl_item_key(it), it->klen, enc, sizeof(enc)));
	} else {
		sl_buf_put(o, sl_item_key(it), it->klen);
	}
	int n = snprintf(t, sizeof(t), " exp=%d la=%u cas=%" PRIu64 " fetch=%s cls=1 size=%u\r\n",
	                 it->exptime == 0 ? -1 : (int)(now - it->exptime), now - it->atime, it->cas,
	                 (it->bits & SL_IT_FETCHED) ? "yes" : "no",
	                 (unsigned)(SL_ITEM_OVERHEAD + it->klen + it->vlen + 2));
	sl_buf_put(o, t, (size_t)n);
}

/* ---- stats --------------------------------------------------------------- */

static void add_stats(struct sl_core_stats *sum, const volatile struct sl_core_stats *s)
{
#define X(f) sum->f += s->f;
	SL_CORE_COUNTERS(X)
#undef X
	for (int d = 0; d < SL_DROP__COUNT; d++)
		sum->drops[d] += s->drops[d];
}

void sl_node_sum(const struct sl_node *n, struct sl_core_stats *sum)
{
	memset(sum, 0, sizeof(*sum));
	for (unsigned i = 0; i < n->nworkers; i++)
		add_stats(sum, &n->cores[i]->st);
	if (n->main_st)
		add_stats(sum, n->main_st);
}

void sl_stat_line(struct sl_buf *o, const char *name, const char *fmt, ...)
{
	char v[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(v, sizeof(v), fmt, ap);
	va_end(ap);
	put_str(o, "STAT ");
	put_str(o, name);
	put_str(o, " ");
	put_line(o, v);
}

static void stat_u(struct sl_buf *o, const char *name, uint64_t v)
{
	put_str(o, "STAT ");
	put_str(o, name);
	sl_buf_put(o, " ", 1);
	put_u64(o, v);
	sl_buf_put(o, "\r\n", 2);
}

static void stat_s(struct sl_buf *o, const char *name, const char *v)
{
	put_str(o, "STAT ");
	put_str(o, name);
	sl_buf_put(o, " ", 1);
	put_line(o, v);
}

static void stats_general(struct sl_exec *ex, struct sl_buf *o, uint32_t now)
{
	const struct sl_node *n = ex->node;
	struct sl_core_stats s;
	struct rusage ru;
	char t[64];
	uint64_t items = 0, total = 0, bytes = 0, evictions = 0, reclaimed = 0, eu = 0, xu = 0;
	uint64_t hash_bytes = 0;

	sl_node_sum(n, &s);
	for (unsigned i = 0; i < n->nworkers; i++) {
		const struct sl_store_stats *ss = sl_store_stats(n->cores[i]->store);
		items += ss->curr_items;
		total += ss->total_items;
		bytes += ss->bytes;
		evictions += ss->evictions;
		reclaimed += ss->reclaimed;
		eu += ss->evicted_unfetched;
		xu += ss->expired_unfetched;
		hash_bytes += sl_store_index_bytes(n->cores[i]->store);
	}
	getrusage(RUSAGE_SELF, &ru);
	stat_u(o, "pid", (uint64_t)getpid());
	stat_u(o, "uptime", now - n->started);
	stat_u(o, "time", now);
	stat_s(o, "version", SL_VERSION_STRING);
	stat_u(o, "pointer_size", sizeof(void *) * 8);
	snprintf(t, sizeof(t), "%ld.%06ld", (long)ru.ru_utime.tv_sec, (long)ru.ru_utime.tv_usec);
	stat_s(o, "rusage_user", t);
	snprintf(t, sizeof(t), "%ld.%06ld", (long)ru.ru_stime.tv_sec, (long)ru.ru_stime.tv_usec);
	stat_s(o, "rusage_system", t);
	stat_u(o, "curr_connections", n->curr_connections);
	stat_u(o, "total_connections", n->total_connections);
	stat_u(o, "cmd_get", s.cmd_get);
	stat_u(o, "cmd_set", s.cmd_set);
	stat_u(o, "cmd_flush", s.cmd_flush);
	stat_u(o, "cmd_touch", s.cmd_touch);
	stat_u(o, "cmd_meta", s.cmd_meta);
	stat_u(o, "get_hits", s.get_hits);
	stat_u(o, "get_misses", s.get_misses);
	stat_u(o, "get_expired", s.get_expired);
	stat_u(o, "get_flushed", s.get_flushed);
	stat_u(o, "delete_misses", s.delete_misses);
	stat_u(o, "delete_hits", s.delete_hits);
	stat_u(o, "incr_misses", s.incr_misses);
	stat_u(o, "incr_hits", s.incr_hits);
	stat_u(o, "decr_misses", s.decr_misses);
	stat_u(o, "decr_hits", s.decr_hits);
	stat_u(o, "cas_misses", s.cas_misses);
	stat_u(o, "cas_hits", s.cas_hits);
	stat_u(o, "cas_badval", s.cas_badval);
	stat_u(o, "touch_hits", s.touch_hits);
	stat_u(o, "touch_misses", s.touch_misses);
	stat_u(o, "store_too_large", s.store_too_large);
	stat_u(o, "store_no_memory", s.store_no_memory);
	stat_u(o, "bytes_read", s.bytes_read);
	stat_u(o, "bytes_written", s.bytes_written);
	stat_u(o, "limit_maxbytes", n->mem_limit);
	stat_u(o, "threads", n->nworkers);
	stat_u(o, "hash_bytes", hash_bytes);
	stat_u(o, "bytes", bytes);
	stat_u(o, "curr_items", items);
	stat_u(o, "total_items", total);
	stat_u(o, "expired_unfetched", xu);
	stat_u(o, "evicted_unfetched", eu);
	stat_u(o, "evictions", evictions);
	stat_u(o, "reclaimed", reclaimed);
	/* Sluice's own: per-core work, handoffs and drops by reason */
	for (unsigned i = 0; i < n->nworkers; i++) {
		const struct sl_exec *e = n->cores[i];
		char name[64];
#define CORE_STAT(f, v)                                                                            \
	do {                                                                                       \
		snprintf(name, sizeof(name), "core%u:%s", i, f);                                   \
		stat_u(o, name, v);                                                                \
	} while (0)
		CORE_STAT("requests", e->st.requests);
		CORE_STAT("rx_packets", e->st.rx_packets);
		CORE_STAT("tx_packets", e->st.tx_packets);
		CORE_STAT("handoffs_in", e->st.handoffs_in);
		CORE_STAT("handoffs_out", e->st.handoffs_out);
		CORE_STAT("evictions", sl_store_stats(e->store)->evictions);
		CORE_STAT("curr_items", sl_store_stats(e->store)->curr_items);
		CORE_STAT("bytes", sl_store_stats(e->store)->bytes);
		CORE_STAT("idle_sleeps", e->st.idle_sleeps);
		CORE_STAT("epoch", e->table_epoch);
#undef CORE_STAT
	}
	stat_u(o, "slot_table_epoch", n->epoch);
	stat_u(o, "not_served", s.not_served);
	stat_u(o, "forwarded_out", s.fwd_out);
	stat_u(o, "forwarded_in", s.fwd_in);
	stat_u(o, "forward_timeouts", s.fwd_timeouts);
	stat_u(o, "forward_refused", s.fwd_refused);
	stat_u(o, "forwarded_in_stale_epoch", s.fwd_stale);
	stat_u(o, "reply_oom", s.reply_oom);
	stat_u(o, "backlog_waits", s.backlog_waits);
	stat_u(o, "tcp_admission_waits", s.tcp_admission_waits);
	stat_u(o, "tcp_inflight", n->tcp_inflight);
	struct sl_udpguard_stats us = {0};
	for (unsigned i = 0; i < n->nworkers; i++) {
		if (!n->cores[i]->udp)
			continue;
		const struct sl_udpguard_stats *g = sl_udpguard_stats(n->cores[i]->udp);
		us.bytes_in += g->bytes_in;
		us.bytes_out += g->bytes_out;
		us.too_large += g->too_large;
		us.over_budget += g->over_budget;
		us.silent += g->silent;
		us.evictions += g->evictions;
	}
	stat_u(o, "udp_untrusted_bytes_in", us.bytes_in);
	stat_u(o, "udp_untrusted_bytes_out", us.bytes_out);
	stat_u(o, "udp_reply_too_large", us.too_large);
	stat_u(o, "udp_over_budget", us.over_budget);
	stat_u(o, "udp_over_budget_silent", us.silent);
	stat_u(o, "udp_source_evictions", us.evictions);
	stat_u(o, "arp_replies", s.arp_replies);
	stat_u(o, "icmp_replies", s.icmp_replies);
	stat_u(o, "exception_pkts", s.exception_pkts);
	for (int d = 0; d < SL_DROP__COUNT; d++) {
		char name[64];
		snprintf(name, sizeof(name), "drop_%s", sl_drop_names[d]);
		stat_u(o, name, s.drops[d]);
	}
	put_line(o, "END");
}

/* The node's place in its cluster: what sluicectl status shows per node. */
static void stats_cluster(struct sl_exec *ex, struct sl_buf *o)
{
	const struct sl_node *n = ex->node;
	struct sl_core_stats s;
	sl_node_sum(n, &s);
	stat_u(o, "cluster_enabled", n->cluster.on);
	stat_u(o, "node_id", n->cluster.id);
	stat_u(o, "connected", n->cluster.connected);
	stat_u(o, "epoch", n->epoch);
	stat_u(o, "slots_owned", n->cluster.on ? n->cluster.slots : SL_SLOTS);
	stat_u(o, "tables_installed", n->cluster.tables_installed);
	stat_u(o, "table_installed_us", n->cluster.installed_us);
	stat_u(o, "tables_refused", n->cluster.tables_refused);
	stat_u(o, "messages_refused", n->cluster.msgs_refused);
	stat_u(o, "controller_connects", n->cluster.connects);
	stat_u(o, "controller_silent", n->cluster.controller_silent);
	stat_u(o, "not_served", s.not_served);
	stat_u(o, "forwarded_out", s.fwd_out);
	stat_u(o, "forwarded_in", s.fwd_in);
	stat_u(o, "forward_timeouts", s.fwd_timeouts);
	stat_u(o, "forward_refused", s.fwd_refused);
	stat_u(o, "forwarded_in_stale_epoch", s.fwd_stale);
	stat_u(o, "writes_fenced", s.writes_fenced);
	stat_u(o, "held_refused", s.held_refused);
	stat_u(o, "replication_refused", s.repl_refused);
	stat_u(o, "replication_stale_epoch", s.repl_stale);
	put_line(o, "END");
}

/*
 * The slot table as a smart client needs it (libsluice): the epoch, the
 * nodes with their client addresses, and each slot's node as an index into
 * that list, two hex digits per slot in slot order ("ff": none listed):
 *
 *   STAT epoch 7
 *   STAT nodes 3
 *   STAT node 0 1 198.18.0.11:11211      (index, node id, address)
 *   ...
 *   STAT slots 0102000201...              (16384 x 2 hex digits)
 *   END
 *
 * A node that runs alone lists no nodes and every slot "ff": the client
 * then sends everything to the node it asked.
 */
static void stats_table(struct sl_exec *ex, struct sl_buf *o)
{
	const struct sl_table *t = ex->table;
	stat_u(o, "epoch", t->epoch);
	unsigned n = t->npeers < 255 ? t->npeers : 255;
	stat_u(o, "nodes", n);
	for (unsigned i = 0; i < n; i++) {
		char line[96];
		uint32_t ip = __builtin_bswap32(t->peer[i].ip);
		int k = snprintf(line, sizeof(line), "STAT node %u %u %u.%u.%u.%u:%u\r\n", i,
		                 t->peer[i].id, ip >> 24, (ip >> 16) & 255, (ip >> 8) & 255, ip & 255,
		                 t->peer[i].port);
		sl_buf_put(o, line, (size_t)k);
	}
	uint8_t idx[SL_SLOTS];
	for (unsigned s = 0; s < SL_SLOTS; s++) {
		idx[s] = 0xff;
		for (unsigned i = 0; i < n; i++)
			if (t->peer[i].id == t->node[s]) {
				idx[s] = (uint8_t)i;
				break;
			}
	}
	static const char hex[] = "0123456789abcdef";
	sl_buf_put(o, "STAT slots ", 11);
	if (sl_buf_reserve(o, 2 * SL_SLOTS) == 0) {
		for (unsigned s = 0; s < SL_SLOTS; s++) {
			o->p[o->len++] = hex[idx[s] >> 4];
			o->p[o->len++] = hex[idx[s] & 15];
		}
	}
	sl_buf_put(o, "\r\n", 2);
	put_line(o, "END");
}

/* The untrusted UDP sources sent the most bytes, over every core, most
 * first: what an operator looks at during an attack. */
static void stats_udpsources(struct sl_exec *ex, struct sl_buf *o)
{
	const struct sl_node *n = ex->node;
	struct sl_udpguard *g[SL_MAX_WORKERS];
	struct sl_udp_source top[20];
	for (unsigned i = 0; i < n->nworkers; i++)
		g[i] = n->cores[i]->udp;
	unsigned k = sl_udpguard_top(g, n->nworkers, top, 20);
	for (unsigned i = 0; i < k; i++) {
		char name[64];
		uint32_t h = __builtin_bswap32(top[i].ip);
		int l = snprintf(name, sizeof(name), "%u.%u.%u.%u:", h >> 24, (h >> 16) & 255,
		                 (h >> 8) & 255, h & 255);
		snprintf(name + l, sizeof(name) - (size_t)l, "bytes_out");
		stat_u(o, name, top[i].bytes_out);
		snprintf(name + l, sizeof(name) - (size_t)l, "bytes_in");
		stat_u(o, name, top[i].bytes_in);
		snprintf(name + l, sizeof(name) - (size_t)l, "refused");
		stat_u(o, name, top[i].refused);
	}
	put_line(o, "END");
}

/* Per size class sums over all cores (racy reads, like every stat). */
static void class_sum(const struct sl_node *n, unsigned cls, struct sl_class_stats *sum)
{
	memset(sum, 0, sizeof(*sum));
	for (unsigned i = 0; i < n->nworkers; i++) {
		const volatile struct sl_class_stats *c = sl_store_class(n->cores[i]->store, cls);
#define X(f) sum->f += c->f;
		SL_CLASS_COUNTERS(X)
#undef X
	}
}

static void stat_cls(struct sl_buf *o, const char *prefix, unsigned cls, const char *name,
                     uint64_t v)
{
	char t[96];
	snprintf(t, sizeof(t), "%s%u:%s", prefix, cls, name);
	stat_u(o, t, v);
}

/*
 * "stats slabs": memcached's fields per size class. Sluice has no slab
 * pages: pages are what the class's items would fill, at least one for a
 * class that was ever used.
 */
static void stats_slabs(struct sl_exec *ex, struct sl_buf *o)
{
	unsigned active = 0;
	uint64_t malloced = 0;
	for (unsigned c = 1; c <= sl_class_count(); c++) {
		struct sl_class_stats s;
		class_sum(ex->node, c, &s);
		if (s.number == 0 && s.cmd_set == 0)
			continue;
		uint64_t per = sl_class_perslab(c);
		uint64_t pages = s.number ? (s.number + per - 1) / per : 1;
		active++;
		malloced += pages * SL_SLAB_PAGE;
		stat_cls(o, "", c, "chunk_size", sl_class_chunk(c));
		stat_cls(o, "", c, "chunks_per_page", per);
		stat_cls(o, "", c, "total_pages", pages);
		stat_cls(o, "", c, "total_chunks", pages * per);
		stat_cls(o, "", c, "used_chunks", s.number);
		stat_cls(o, "", c, "free_chunks", pages * per - s.number);
		stat_cls(o, "", c, "free_chunks_end", 0);
		stat_cls(o, "", c, "get_hits", s.get_hits);
		stat_cls(o, "", c, "cmd_set", s.cmd_set);
		stat_cls(o, "", c, "delete_hits", s.delete_hits);
		stat_cls(o, "", c, "incr_hits", s.incr_hits);
		stat_cls(o, "", c, "decr_hits", s.decr_hits);
		stat_cls(o, "", c, "cas_hits", s.cas_hits);
		stat_cls(o, "", c, "cas_badval", s.cas_badval);
		stat_cls(o, "", c, "touch_hits", s.touch_hits);
	}
	stat_u(o, "active_slabs", active);
	stat_u(o, "total_malloced", malloced);
	put_line(o, "END");
}

/* "stats items": classes holding items. CLOCK has no hot/warm/cold
 * segments, so every item counts as hot and the segment moves are 0. */
static void stats_items(struct sl_exec *ex, struct sl_buf *o)
{
	for (unsigned c = 1; c <= sl_class_count(); c++) {
		struct sl_class_stats s;
		class_sum(ex->node, c, &s);
		if (s.number == 0)
			continue;
		const char *p = "items:";
		stat_cls(o, p, c, "number", s.number);
		stat_cls(o, p, c, "number_hot", s.number);
		stat_cls(o, p, c, "number_warm", 0);
		stat_cls(o, p, c, "number_cold", 0);
		stat_cls(o, p, c, "age_hot", 0);
		stat_cls(o, p, c, "age_warm", 0);
		stat_cls(o, p, c, "age", 0);
		stat_cls(o, p, c, "mem_requested", s.mem_requested);
		stat_cls(o, p, c, "evicted", s.evicted);
		stat_cls(o, p, c, "evicted_nonzero", 0);
		stat_cls(o, p, c, "evicted_time", 0);
		stat_cls(o, p, c, "outofmemory", s.outofmemory);
		stat_cls(o, p, c, "tailrepairs", 0);
		stat_cls(o, p, c, "reclaimed", s.reclaimed);
		stat_cls(o, p, c, "expired_unfetched", s.expired_unfetched);
		stat_cls(o, p, c, "evicted_unfetched", s.evicted_unfetched);
		stat_cls(o, p, c, "evicted_active", 0);
		stat_cls(o, p, c, "crawler_reclaimed", 0);
		stat_cls(o, p, c, "crawler_items_checked", 0);
		stat_cls(o, p, c, "lrutail_reflocked", 0);
		stat_cls(o, p, c, "moves_to_cold", 0);
		stat_cls(o, p, c, "moves_to_warm", 0);
		stat_cls(o, p, c, "moves_within_lru", 0);
		stat_cls(o, p, c, "direct_reclaims", 0);
		stat_cls(o, p, c, "hits_to_hot", s.get_hits);
		stat_cls(o, p, c, "hits_to_warm", 0);
		stat_cls(o, p, c, "hits_to_cold", 0);
		stat_cls(o, p, c, "hits_to_temp", 0);
	}
	put_line(o, "END");
}

static void stats_settings(struct sl_exec *ex, struct sl_buf *o)
{
	const struct sl_node *n = ex->node;
	stat_u(o, "maxbytes", n->mem_limit);
	stat_u(o, "tcpport", n->tcp_port);
	stat_u(o, "udpport", n->udp_port);
	stat_u(o, "verbosity", n->verbosity);
	stat_u(o, "num_threads", n->nworkers);
	stat_s(o, "evictions", "on");
	stat_u(o, "item_size_max", n->max_item);
	stat_s(o, "cas_enabled", "yes");
	stat_s(o, "flush_enabled", "yes");
	stat_s(o, "binding_protocol", "ascii");
	stat_s(o, "eviction_policy", "clock");
	stat_u(o, "slots", SL_SLOTS);
	put_line(o, "END");
}

/* ---- the run loop ---------------------------------------------------------- */

static bool is_keyed(uint8_t cmd)
{
	switch (cmd) {
	case SL_CMD_SET:
	case SL_CMD_ADD:
	case SL_CMD_REPLACE:
	case SL_CMD_APPEND:
	case SL_CMD_PREPEND:
	case SL_CMD_CAS:
	case SL_CMD_DELETE:
	case SL_CMD_INCR:
	case SL_CMD_DECR:
	case SL_CMD_TOUCH:
	case SL_CMD_MG:
	case SL_CMD_MS:
	case SL_CMD_MD:
	case SL_CMD_MA:
	case SL_CMD_ME:
		return true;
	default:
		return false;
	}
}

static void run_keyed(struct sl_exec *ex, struct sl_conv *c, const struct sl_req *r, uint64_t h,
                      uint32_t now)
{
	struct sl_item *it;
	if (r->too_large) {
		ex->st.store_too_large++;
		if (r->cmd == SL_CMD_SET || r->cmd == SL_CMD_MS) {
			it = sl_store_get(ex->store, h, r->key.p, r->key.len, now);
			if (it)
				sl_store_delete(ex->store, it, h);
		}
		reply(c, r, r->err);
		return;
	}
	if (ex->fence_on && r->cmd != SL_CMD_MG && r->cmd != SL_CMD_ME) {
		const char *why = ex->fence(ex, h);
		if (why) {
			/* a fenced primary takes no write: nothing it would
			 * acknowledge could be lost to a promotion */
			ex->st.writes_fenced++;
			if (!r->noreply || r->err_always)
				put_line(&c->out, why);
			return;
		}
	}
	switch (r->cmd) {
	case SL_CMD_SET:
	case SL_CMD_ADD:
	case SL_CMD_REPLACE:
	case SL_CMD_APPEND:
	case SL_CMD_PREPEND:
	case SL_CMD_CAS:
		text_store(ex, c, r, h, now);
		break;
	case SL_CMD_DELETE:
		it = sl_store_get(ex->store, h, r->key.p, r->key.len, now);
		if (it) {
			cls_of(ex, it)->delete_hits++;
			sl_store_delete(ex->store, it, h);
			ex->st.delete_hits++;
			reply(c, r, "DELETED");
		} else {
			ex->st.delete_misses++;
			reply(c, r, "NOT_FOUND");
		}
		break;
	case SL_CMD_INCR:
	case SL_CMD_DECR:
		text_delta(ex, c, r, h, now);
		break;
	case SL_CMD_TOUCH:
		ex->st.cmd_touch++;
		it = sl_store_get(ex->store, h, r->key.p, r->key.len, now);
		if (it) {
			it->exptime = sl_exptime_abs(r->exptime, now);
			sl_store_note(ex->store, SL_CHANGE_TTL, it, h);
			mark_fetched(it, now);
			cls_of(ex, it)->touch_hits++;
			ex->st.touch_hits++;
			reply(c, r, "TOUCHED");
		} else {
			ex->st.touch_misses++;
			reply(c, r, "NOT_FOUND");
		}
		break;
	case SL_CMD_MG:
		meta_get(ex, c, r, h, now);
		break;
	case SL_CMD_MS:
		meta_set(ex, c, r, h, now);
		break;
	case SL_CMD_MD:
		meta_delete(ex, c, r, h, now);
		break;
	case SL_CMD_MA:
		meta_arith(ex, c, r, h, now);
		break;
	case SL_CMD_ME:
		meta_debug(ex, c, r, h, now);
		break;
	}
}

/* Commands that every core must see, visited in core order. */
static bool run_broadcast(struct sl_exec *ex, struct sl_conv *c, const struct sl_req *r,
                          uint32_t now, unsigned *to)
{
	unsigned n = ex->node->nworkers;
	if (!c->in_request) {
		c->in_request = true;
		c->bcast_next = 0;
	}
	while (c->bcast_next < n) {
		if (c->bcast_next != ex->core) {
			*to = c->bcast_next;
			return false;
		}
		if (r->cmd == SL_CMD_FLUSH_ALL) {
			sl_store_flush(ex->store, now, r->exptime);
		} else {
			/* counters restart; item counts and sizes are state */
			memset(&ex->st, 0, sizeof(ex->st));
			for (unsigned k = 1; k <= sl_class_count(); k++) {
				struct sl_class_stats *cs = sl_store_class(ex->store, k);
				cs->get_hits = cs->cmd_set = cs->delete_hits = 0;
				cs->incr_hits = cs->decr_hits = cs->cas_hits = 0;
				cs->cas_badval = cs->touch_hits = 0;
				cs->evicted = cs->outofmemory = cs->reclaimed = 0;
				cs->expired_unfetched = cs->evicted_unfetched = 0;
			}
		}
		c->bcast_next++;
	}
	if (r->cmd == SL_CMD_FLUSH_ALL) {
		ex->st.cmd_flush++;
		reply(c, r, "OK");
	} else {
		put_line(&c->out, "RESET");
	}
	return true;
}

static bool run_get(struct sl_exec *ex, struct sl_conv *c, const struct sl_req *r, uint32_t now,
                    unsigned *to)
{
	uint32_t pos = c->in_request ? c->key_pos : 0;
	c->in_request = true;
	for (;;) {
		uint32_t here = pos;
		struct sl_tok k = sl_next_key(r, &pos);
		if (k.len == 0)
			break;
		uint64_t h = key_hash(c, k);
		if (!is_mine(ex, c, k, h, to)) {
			c->key_pos = here;
			return false;
		}
		if (ex->hold_on && ex->hold(ex, h)) {
			/* the whole request, values other cores added included */
			ex->st.held_refused++;
			if (sl_buf_fail(&c->out, c->mark, HOLD_LINE(ex)) != 0)
				c->close = true;
			return true;
		}
		get_one(ex, c, r, k, h, now);
	}
	sl_buf_put(&c->out, "END\r\n", 5);
	return true;
}

/* What replaces a reply that could not be written whole (memcached's
 * wording where it has one). */
static const char *oom_line(uint8_t cmd)
{
	switch (cmd) {
	case SL_CMD_GET:
	case SL_CMD_GETS:
	case SL_CMD_GAT:
	case SL_CMD_GATS:
	case SL_CMD_MG:
		return "SERVER_ERROR out of memory writing get response";
	case SL_CMD_STATS:
		return "SERVER_ERROR out of memory writing stats";
	default:
		return "SERVER_ERROR out of memory";
	}
}

enum sl_exec_status sl_exec_run(struct sl_exec *ex, struct sl_conv *c, uint32_t now,
                                unsigned *to_core)
{
	struct sl_req r;
	while (c->off < c->in_len && !c->close) {
		const char *p = c->in + c->off;
		uint32_t avail = c->in_len - c->off;
		if (sl_parse(p, avail, ex->node->max_item, &r) == SL_PARSE_MORE) {
			/* a datagram that ends mid-request gets no reply */
			ex->st.drops[SL_DROP_incomplete_request]++;
			c->off = c->in_len;
			break;
		}
		if (!c->in_request) {
			ex->st.requests++;
			c->mark = (uint32_t)c->out.len;
		}
		bool done = true;
		switch (r.cmd) {
		case SL_CMD_ERROR:
			reply(c, &r, r.err);
			break;
		case SL_CMD_CLOSE:
			ex->st.drops[SL_DROP_junk_request]++;
			c->close = true;
			break;
		case SL_CMD_QUIT:
			c->close = true;
			break;
		case SL_CMD_GET:
		case SL_CMD_GETS:
		case SL_CMD_GAT:
		case SL_CMD_GATS:
			done = run_get(ex, c, &r, now, to_core);
			break;
		case SL_CMD_FLUSH_ALL:
			done = run_broadcast(ex, c, &r, now, to_core);
			break;
		case SL_CMD_STATS:
			if (r.args.len == 0) {
				stats_general(ex, &c->out, now);
			} else if (r.args.len == 5 && memcmp(r.args.p, "reset", 5) == 0) {
				done = run_broadcast(ex, c, &r, now, to_core);
			} else if (r.args.len == 8 && memcmp(r.args.p, "settings", 8) == 0) {
				stats_settings(ex, &c->out);
			} else if (r.args.len == 5 && memcmp(r.args.p, "slabs", 5) == 0) {
				stats_slabs(ex, &c->out);
			} else if (r.args.len == 5 && memcmp(r.args.p, "items", 5) == 0) {
				stats_items(ex, &c->out);
			} else if (r.args.len == 5 && memcmp(r.args.p, "sizes", 5) == 0) {
				put_line(&c->out, "STAT sizes_status disabled");
				put_line(&c->out, "END");
			} else if (r.args.len == 7 && memcmp(r.args.p, "cluster", 7) == 0) {
				stats_cluster(ex, &c->out);
			} else if (r.args.len == 5 && memcmp(r.args.p, "table", 5) == 0) {
				stats_table(ex, &c->out);
			} else if (r.args.len == 11 && memcmp(r.args.p, "replication", 11) == 0) {
				if (ex->node->repl_stats)
					ex->node->repl_stats(ex->node, &c->out);
				put_line(&c->out, "END");
			} else if (r.args.len == 10 && memcmp(r.args.p, "udpsources", 10) == 0) {
				stats_udpsources(ex, &c->out);
			} else if (r.args.len == 5 && memcmp(r.args.p, "conns", 5) == 0) {
				put_line(&c->out, "END");
			} else {
				put_line(&c->out, "ERROR");
			}
			break;
		case SL_CMD_VERSION:
			put_line(&c->out, "VERSION " SL_VERSION_STRING);
			break;
		case SL_CMD_VERBOSITY:
			ex->node->verbosity = r.verbosity;
			reply(c, &r, "OK");
			break;
		case SL_CMD_MN:
			put_line(&c->out, "MN");
			break;
		default:
			if (is_keyed(r.cmd)) {
				uint64_t h = key_hash(c, r.key);
				if (!is_mine(ex, c, r.key, h, to_core)) {
					c->in_request = true; /* counted here already */
					return c->remote ? SL_EXEC_REMOTE : SL_EXEC_FORWARD;
				}
				if (ex->hold_on && ex->hold(ex, h)) {
					ex->st.held_refused++;
					put_line(&c->out, HOLD_LINE(ex));
					break;
				}
				run_keyed(ex, c, &r, h, now);
				if ((r.cmd == SL_CMD_MS || r.cmd == SL_CMD_MD || r.cmd == SL_CMD_MA) &&
				    (r.meta.seen & SL_MF('B'))) {
					/* answered once its backup has it (the worker) */
					c->durable = true;
					c->durable_hash = h;
					c->durable_mark = c->mark;
				}
			}
			break;
		}
		if (!done)
			return c->remote ? SL_EXEC_REMOTE : SL_EXEC_FORWARD;
		if (c->out.err) {
			ex->st.reply_oom++;
			if (sl_buf_fail(&c->out, c->mark, oom_line(r.cmd)) != 0)
				c->close = true; /* not even an error line: end the connection */
		}
		c->in_request = false;
		c->hint_off = 0;
		c->off += r.consumed;
		ex->st.bytes_read += r.consumed;
		if (c->durable)
			return SL_EXEC_WAIT;
	}
	return SL_EXEC_DONE;
}

void sl_exec_durable_fail(struct sl_conv *c, const char *line)
{
	if (sl_buf_fail(&c->out, c->durable_mark, line) != 0)
		c->close = true;
}

/* Keys of one get line forwarded in one message at most: the owner's
 * reply stays bounded, and the line well below any line limit. */
#define REMOTE_RUN_KEYS 64
#define REMOTE_RUN_BYTES 1800

int sl_exec_remote_req(struct sl_exec *ex, struct sl_conv *c, unsigned node, struct sl_buf *fwd)
{
	struct sl_req r;
	fwd->len = 0;
	fwd->err = false;
	sl_parse(c->in + c->off, c->in_len - c->off, ex->node->max_item, &r);
	if (r.cmd == SL_CMD_GET || r.cmd == SL_CMD_GETS || r.cmd == SL_CMD_GAT ||
	    r.cmd == SL_CMD_GATS) {
		/* the verb (and gat's exptime), then the keys from where the
		 * conversation stopped that the same node owns */
		sl_buf_put(fwd, r.line.p, (size_t)(r.keys.p - r.line.p));
		uint32_t pos = c->key_pos, end = pos;
		unsigned n = 0;
		for (;;) {
			struct sl_tok k = sl_next_key(&r, &pos);
			if (!k.len || n == REMOTE_RUN_KEYS || (n && fwd->len + k.len > REMOTE_RUN_BYTES))
				break;
			/* the first key is the one routed there; the others go
			 * along while the same node owns them */
			uint64_t h = n ? sl_key_hash(k.p, k.len) : 0;
			if (n && (sl_slot_owner(ex->table, h) != SL_CORE_ELSEWHERE ||
			          ex->table->node[sl_slot_of(h)] != node))
				break;
			if (n++)
				sl_buf_put(fwd, " ", 1);
			sl_buf_put(fwd, k.p, k.len);
			end = pos;
		}
		c->fwd_pos = end;
		sl_buf_put(fwd, "\r\n", 2);
	} else {
		sl_buf_put(fwd, c->in + c->off, r.consumed);
	}
	sl_buf_put(fwd, "mn\r\n", 4);
	return fwd->err ? -ENOMEM : 0;
}

static bool ends_with(const char *p, size_t len, const char *tail, size_t n)
{
	return len >= n && memcmp(p + len - n, tail, n) == 0;
}

int sl_exec_remote_done(struct sl_exec *ex, struct sl_conv *c, const char *rep, size_t len)
{
	if (!ends_with(rep, len, "MN\r\n", 4)) {
		sl_exec_skip(ex, c, "SERVER_ERROR bad reply from the slot's node");
		return -EPROTO;
	}
	len -= 4;
	struct sl_req r;
	sl_parse(c->in + c->off, c->in_len - c->off, ex->node->max_item, &r);
	bool get = r.cmd == SL_CMD_GET || r.cmd == SL_CMD_GETS || r.cmd == SL_CMD_GAT ||
	           r.cmd == SL_CMD_GATS;
	if (get && ends_with(rep, len, "END\r\n", 5))
		len -= 5;
	sl_buf_put(&c->out, rep, len);
	c->remote = false;
	c->hint_off = 0;
	if (get) {
		/* the rest of the key list is run here as usual */
		c->key_pos = c->fwd_pos;
		return 0;
	}
	if (c->out.err) {
		ex->st.reply_oom++;
		if (sl_buf_fail(&c->out, c->mark, oom_line(r.cmd)) != 0)
			c->close = true;
	}
	c->in_request = false;
	c->off += r.consumed;
	ex->st.bytes_read += r.consumed;
	return 0;
}

void sl_exec_skip(struct sl_exec *ex, struct sl_conv *c, const char *line)
{
	struct sl_req r;
	if (c->off >= c->in_len)
		return;
	/* the request parsed whole before (that is how it got routed) */
	sl_parse(c->in + c->off, c->in_len - c->off, ex->node->max_item, &r);
	if (sl_buf_fail(&c->out, c->mark, line) != 0)
		c->close = true;
	c->in_request = false;
	c->remote = false;
	c->hint_off = 0;
	c->off += r.consumed;
	ex->st.bytes_read += r.consumed;
}
