/*
 * Request parser for the memcached text and meta protocols.
 *
 * The rules here follow memcached 1.6 behaviour as observed on the wire
 * (Debian's memcached is the reference; tests/e2e/differential.py runs the
 * same requests against both). Where memcached's reply depends only on the
 * request line, it is decided here, so that it can be fuzzed without a
 * store. The data-path caller then only ever sees well-formed requests or a
 * ready error string.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "sluice/proto.h"

#define E_BADFMT "CLIENT_ERROR bad command line format"
#define E_BADTOK "CLIENT_ERROR bad token in command line format"
#define E_EXPTIME "CLIENT_ERROR invalid exptime argument"
#define E_TOOLARGE "SERVER_ERROR object too large for cache"
#define E_CHUNK "CLIENT_ERROR bad data chunk"

/* ---- number conversion with memcached's rules ------------------------- */

/*
 * strtol()/strtoul() over a token that is not NUL-terminated. memcached
 * calls the libc functions on a NUL-terminated token and accepts the result
 * when at least one digit was read and the first unread character is
 * whitespace or the end. We reproduce that, including ERANGE on 64-bit
 * overflow and the later truncation to 32 bits.
 */
struct num {
	bool ok;
	bool neg;
	uint64_t mag;  /* magnitude, saturated */
	bool overflow; /* magnitude exceeded 2^64-1 */
};

/* isspace() in the C locale, without a call through the locale table */
static inline bool is_space(char c)
{
	return c == ' ' || (c >= '\t' && c <= '\r');
}

static struct num scan_num(const char *s, size_t len)
{
	struct num n = {0};
	/* the common case, up to 19 plain digits, which cannot overflow:
	 * without the checks below (~60 instructions a number, three of them
	 * in every SET, down to ~35); anything else takes the full rules */
	if (len - 1 < 19) {
		uint64_t v = 0;
		size_t k = 0;
		for (; k < len && (unsigned char)(s[k] - '0') < 10; k++)
			v = v * 10 + (uint64_t)(s[k] - '0');
		if (k == len) {
			n.ok = true;
			n.mag = v;
			return n;
		}
	}
	size_t i = 0;
	while (i < len && is_space(s[i]))
		i++;
	if (i < len && (s[i] == '+' || s[i] == '-')) {
		n.neg = s[i] == '-';
		i++;
	}
	size_t d0 = i;
	while (i < len && s[i] >= '0' && s[i] <= '9') {
		uint64_t dig = (uint64_t)(s[i] - '0');
		if (n.mag > (UINT64_MAX - dig) / 10)
			n.overflow = true;
		else
			n.mag = n.mag * 10 + dig;
		i++;
	}
	if (i == d0)
		return n; /* no digits: endptr == str */
	if (i < len && !is_space(s[i]))
		return n;
	n.ok = true;
	return n;
}

bool sl_strtoull(const char *s, size_t len, uint64_t *out)
{
	struct num n = scan_num(s, len);
	*out = 0;
	if (!n.ok || n.overflow)
		return false;
	uint64_t v = n.neg ? (uint64_t)0 - n.mag : n.mag;
	/* memcached's strchr for a '-' anywhere in the token, asked only of
	 * a value that reads negative: every number of every request would
	 * otherwise pay a scan (about 30 instructions each, 3 in a SET) */
	if ((int64_t)v < 0 && memchr(s, '-', len) != NULL)
		return false;
	*out = v;
	return true;
}

bool sl_strtoul32(const char *s, size_t len, uint32_t *out)
{
	uint64_t v;
	if (!sl_strtoull(s, len, &v)) {
		*out = 0;
		return false;
	}
	*out = (uint32_t)v; /* memcached truncates unsigned long to 32 bits */
	return true;
}

bool sl_strtol32(const char *s, size_t len, int32_t *out)
{
	struct num n = scan_num(s, len);
	*out = 0;
	if (!n.ok || n.overflow)
		return false;
	/* strtol's range is [LONG_MIN, LONG_MAX]; beyond it is ERANGE */
	if (!n.neg && n.mag > (uint64_t)INT64_MAX)
		return false;
	if (n.neg && n.mag > (uint64_t)INT64_MAX + 1)
		return false;
	int64_t v = n.neg ? (int64_t)(0 - n.mag) : (int64_t)n.mag;
	*out = (int32_t)(uint32_t)(uint64_t)v; /* truncation, as memcached */
	return true;
}

/* ---- base64 ------------------------------------------------------------- */

static const char b64_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

size_t sl_b64_decode(const char *in, size_t len, char *out, size_t cap)
{
	size_t o = 0;
	if (len == 0 || len % 4 != 0)
		return 0;
	for (size_t i = 0; i < len; i += 4) {
		int v[4];
		int pad = 0;
		for (int j = 0; j < 4; j++) {
			unsigned char c = (unsigned char)in[i + j];
			if (c == '=' && i + 4 == len && j >= 2) {
				v[j] = 0;
				pad++;
				continue;
			}
			if (pad)
				return 0; /* data after padding */
			v[j] = b64_val(c);
			if (v[j] < 0)
				return 0;
		}
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
		             (uint32_t)v[3];
		size_t n = 3 - (size_t)pad;
		if (o + n > cap)
			return 0;
		out[o++] = (char)(w >> 16);
		if (n > 1)
			out[o++] = (char)(w >> 8);
		if (n > 2)
			out[o++] = (char)w;
	}
	return o;
}

size_t sl_b64_encode(const char *in, size_t len, char *out, size_t cap)
{
	size_t need = (len + 2) / 3 * 4;
	if (need > cap)
		return 0;
	size_t o = 0;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t w = (uint32_t)(unsigned char)in[i] << 16;
		if (i + 1 < len)
			w |= (uint32_t)(unsigned char)in[i + 1] << 8;
		if (i + 2 < len)
			w |= (uint32_t)(unsigned char)in[i + 2];
		out[o++] = b64_alpha[(w >> 18) & 63];
		out[o++] = b64_alpha[(w >> 12) & 63];
		out[o++] = i + 1 < len ? b64_alpha[(w >> 6) & 63] : '=';
		out[o++] = i + 2 < len ? b64_alpha[w & 63] : '=';
	}
	return o;
}

/* ---- tokeniser ---------------------------------------------------------- */

/*
 * Tokens as memcached's tokenize_command() makes them: runs of non-space
 * bytes, at most SL_MAX_TOKENS-1 of them; what follows the last one taken is
 * the "rest" (NULL when the line was used up). ntok excludes memcached's
 * terminating empty token, so memcached's ntokens == ntok + 1.
 */
struct tokens {
	struct sl_tok t[SL_MAX_TOKENS];
	unsigned ntok;
	const char *rest;
	const char *end;
};

/* Record the token s[start, e) unless it is empty; false once memcached's
 * token limit is reached, rest then set to what follows the space at e. */
static inline bool tok_push(const char *s, size_t len, size_t start, size_t e, struct tokens *tk)
{
	if (start == e)
		return true;
	tk->t[tk->ntok].p = s + start;
	tk->t[tk->ntok].len = (uint32_t)(e - start);
	if (++tk->ntok < SL_MAX_TOKENS - 1)
		return true;
	tk->rest = e + 1 < len ? s + e + 1 : NULL;
	return false;
}

/* Record the tokens that end at the spaces marked in @p bits (bit k: the
 * byte at base + k), from *start on; false once the token limit is hit. */
static inline bool tok_spaces(const char *s, size_t len, size_t base, unsigned bits, size_t *start,
                              struct tokens *tk)
{
	for (; bits; bits &= bits - 1) {
		size_t e = base + (size_t)__builtin_ctz(bits);
		if (!tok_push(s, len, *start, e, tk))
			return false;
		*start = e + 1;
	}
	return true;
}

/* Sixteen bytes a step where SSE2 is there: a byte loop cost ~6
 * instructions a byte of the line, ~200 of the ~740 a SET spent parsing. */
static void tokenize(const char *s, size_t len, struct tokens *tk)
{
	size_t i = 0, start = 0;
	tk->ntok = 0;
	tk->rest = NULL;
	tk->end = s + len;
#ifdef __SSE2__
	const __m128i sp = _mm_set1_epi8(' ');
	for (; i + 16 <= len; i += 16) {
		__m128i x = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
		unsigned bits = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, sp));
		if (!tok_spaces(s, len, i, bits, &start, tk))
			return;
	}
	if (i < len && len >= 16) {
		/* the tail: the last sixteen bytes of the line, less the ones
		 * the steps above have seen */
		__m128i x = _mm_loadu_si128((const __m128i *)(const void *)(s + len - 16));
		unsigned bits = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, sp));
		if (!tok_spaces(s, len, i, bits >> (i - (len - 16)), &start, tk))
			return;
		i = len;
	}
#endif
	for (; i < len; i++) {
		if (s[i] != ' ')
			continue;
		if (!tok_push(s, len, start, i, tk))
			return;
		start = i + 1;
	}
	tok_push(s, len, start, len, tk);
}

static inline bool tok_is_n(const struct sl_tok *t, const char *s, size_t n)
{
	return t->len == n && memcmp(t->p, s, n) == 0;
}

/* compare with a string literal; its length is known at compile time */
#define tok_is(t, lit) tok_is_n((t), lit, sizeof(lit) - 1)

/* ---- helpers ------------------------------------------------------------ */

static enum sl_parse_status fail(struct sl_req *r, const char *err)
{
	r->cmd = SL_CMD_ERROR;
	r->err = err;
	return SL_PARSE_OK;
}

/* memcached's set_noreply_maybe(): the last real token is "noreply". */
static void noreply_maybe(struct sl_req *r, const struct tokens *tk)
{
	if (tk->ntok >= 1 && tok_is(&tk->t[tk->ntok - 1], "noreply"))
		r->noreply = true;
}

static bool item_fits(size_t max_item, size_t klen, uint64_t vlen)
{
	return SL_ITEM_OVERHEAD + klen + vlen + 2 <= max_item;
}

/*
 * Storage commands carry a data block. Whether or not the line was good,
 * memcached's reply to a bad block or an oversize item consumes the block
 * ("swallow"); a bad line does not, and the block is then read as commands.
 */
static enum sl_parse_status need_data(const char *buf, size_t len, size_t line_used,
                                      struct sl_req *r)
{
	size_t total = line_used + (size_t)r->vlen + 2;
	if (len < total)
		return SL_PARSE_MORE;
	r->data = buf + line_used;
	r->consumed = (uint32_t)total;
	if (r->data[r->vlen] != '\r' || r->data[r->vlen + 1] != '\n') {
		r->cmd = SL_CMD_ERROR;
		r->err = E_CHUNK;
		/* meta set always reports errors */
		if (r->err_always)
			r->noreply = false;
	}
	return SL_PARSE_OK;
}

/*
 * Swallow vlen+2 bytes after the line. The reply does not depend on the
 * data, so it is given at once; what the buffer does not hold yet is left
 * in r->swallow for a stream transport to discard as it arrives.
 */
static enum sl_parse_status swallow(size_t len, size_t line_used, struct sl_req *r, uint64_t vlen,
                                    const char *err)
{
	uint64_t want = line_used + vlen + 2;
	if (len >= want) {
		r->consumed = (uint32_t)want;
	} else {
		r->consumed = (uint32_t)len;
		r->swallow = want - len;
	}
	return fail(r, err);
}

/*
 * An item that can never fit: the reply is an error, but the request stays
 * a storage command, because set (and ms) must still remove the key's old
 * value on its owner core, as memcached does, so no stale data outlives a
 * failed write.
 */
static enum sl_parse_status too_large(size_t len, size_t line_used, struct sl_req *r)
{
	uint8_t cmd = r->cmd;
	swallow(len, line_used, r, r->vlen, E_TOOLARGE);
	r->cmd = cmd;
	r->too_large = true;
	return SL_PARSE_OK;
}

/* ---- meta flags ---------------------------------------------------------- */

/*
 * Check and record the flags of a meta command, tokens [first, ntok).
 * Returns NULL, or the error reply. Mirrors memcached's preparse: a repeated
 * or non-ASCII flag and an unknown flag stop at once; bad values are noted
 * and reported after all flags were seen.
 */
static const char *meta_flags(struct sl_req *r, const struct tokens *tk, unsigned first,
                              const char *dflt_err, bool *fatal)
{
	struct sl_meta *m = &r->meta;
	uint8_t seen[128] = {0};
	const char *err = NULL;
	bool has_error = false;
	*fatal = false;
	m->delta = 1;
	for (unsigned i = first; i < tk->ntok; i++) {
		const struct sl_tok *t = &tk->t[i];
		unsigned char o = (unsigned char)t->p[0];
		const char *v = t->p + 1;
		size_t vl = t->len - 1;
		if (o >= 127 || seen[o]) {
			*fatal = true;
			return "CLIENT_ERROR duplicate flag";
		}
		seen[o] = 1;
		if (o >= 'A' && o <= 'z')
			m->seen |= SL_MF(o);
		switch (o) {
		case 'b': {
			size_t n = sl_b64_decode(r->key.p, r->key.len, r->keybuf, SL_KEY_MAX);
			if (n == 0) {
				err = "CLIENT_ERROR error decoding key";
				has_error = true;
			}
			r->key.p = r->keybuf;
			r->key.len = (uint32_t)n;
			r->key_binary = true;
			break;
		}
		case 'N':
		case 'T':
		case 'R': {
			int32_t *dst = o == 'N'   ? &m->vivify_ttl
			               : o == 'T' ? &m->ttl
			                          : &m->recache_ttl;
			if (!sl_strtol32(v, vl, dst)) {
				err = E_BADTOK;
				has_error = true;
			}
			break;
		}
		case 'O':
			if (t->len > SL_META_MAX_OPAQUE) {
				err = "CLIENT_ERROR opaque token too long";
				has_error = true;
			}
			m->opaque = *t;
			break;
		case 'P':
		case 'L':
		case 'k':
		case 's':
		case 't':
		case 'c':
		case 'f':
		case 'v':
		case 'h':
		case 'l':
		case 'u':
		case 'I':
		case 'B': /* Sluice: answer once the backup has the write */
			break;
		case 'q':
			r->noreply = true;
			break;
		case 'F':
			if (!sl_strtoul32(v, vl, &m->client_flags))
				has_error = true;
			break;
		case 'C':
			if (!sl_strtoull(v, vl, &m->cas)) {
				err = E_BADTOK;
				has_error = true;
			}
			break;
		case 'M':
			if (t->len != 2) {
				err = "CLIENT_ERROR incorrect length for M token";
				has_error = true;
			} else {
				m->mode = t->p[1];
			}
			break;
		case 'J':
			if (!sl_strtoull(v, vl, &m->initial)) {
				err = "CLIENT_ERROR invalid numeric initial value";
				has_error = true;
			}
			break;
		case 'D':
			if (!sl_strtoull(v, vl, &m->delta)) {
				err = "CLIENT_ERROR invalid numeric delta value";
				has_error = true;
			}
			break;
		default:
			*fatal = true;
			return "CLIENT_ERROR invalid flag";
		}
		if (m->nret < SL_META_MAX_TOKENS)
			m->ret[m->nret++] = (char)o;
	}
	if (has_error)
		return err ? err : dflt_err;
	return NULL;
}

static enum sl_parse_status parse_meta(const char *buf, size_t len, size_t line_used,
                                       size_t max_item, const struct tokens *tk, struct sl_req *r)
{
	char c = tk->t[0].p[1];
	unsigned ntokens = tk->ntok + 1;
	const char *err;
	bool fatal;

	switch (c) {
	case 'n':
		r->cmd = SL_CMD_MN;
		return SL_PARSE_OK;
	case 'e':
		r->cmd = SL_CMD_ME;
		r->err_always = true;
		if (ntokens < 3 || tk->t[1].len > SL_KEY_MAX)
			return fail(r, E_BADFMT);
		r->key = tk->t[1];
		if (ntokens >= 4 && tk->t[2].len == 1 && tk->t[2].p[0] == 'b') {
			size_t n = sl_b64_decode(r->key.p, r->key.len, r->keybuf, SL_KEY_MAX);
			if (n == 0)
				return fail(r, E_BADFMT);
			r->key.p = r->keybuf;
			r->key.len = (uint32_t)n;
			r->key_binary = true;
		}
		return SL_PARSE_OK;
	case 'g':
	case 'd':
	case 'a':
	case 's':
		break;
	default:
		return fail(r, "ERROR");
	}
	if (ntokens < 3)
		return fail(r, "ERROR");
	r->err_always = true;
	r->key = tk->t[1];
	if (r->key.len > SL_KEY_MAX)
		return fail(r, E_BADFMT);

	if (c == 's') {
		int32_t vlen;
		r->cmd = SL_CMD_MS;
		if (ntokens == 3)
			return fail(r, E_BADFMT);
		if (ntokens > SL_META_MAX_TOKENS)
			return fail(r, "CLIENT_ERROR options flags too long");
		if (!sl_strtol32(tk->t[2].p, tk->t[2].len, &vlen) || vlen < 0 ||
		    vlen > INT32_MAX - 2)
			return fail(r, E_BADFMT);
		r->vlen = (uint32_t)vlen;
		err = meta_flags(r, tk, 3, E_BADFMT, &fatal);
		if (!err && r->meta.mode != 0 && !strchr("EAPRS", r->meta.mode))
			err = "CLIENT_ERROR invalid mode for ms M token";
		if (!err && !item_fits(max_item, r->key.len, r->vlen)) {
			r->noreply = false;
			return too_large(len, line_used, r);
		}
		if (err) {
			r->noreply = false;
			return swallow(len, line_used, r, r->vlen, err);
		}
		r->flags = r->meta.client_flags;
		return need_data(buf, len, line_used, r);
	}

	r->cmd = c == 'g' ? SL_CMD_MG : c == 'd' ? SL_CMD_MD : SL_CMD_MA;
	if (ntokens > SL_META_MAX_TOKENS)
		return fail(r, c == 'g' ? "CLIENT_ERROR options flags are too long"
		                        : "CLIENT_ERROR options flags too long");
	err = meta_flags(r, tk, 2, E_BADFMT, &fatal);
	if (err) {
		r->noreply = false;
		return fail(r, c == 'g' ? err : "CLIENT_ERROR invalid or duplicate flag");
	}
	if (c == 'a' && r->meta.mode != 0 && !strchr("ID+-", r->meta.mode)) {
		r->noreply = false;
		return fail(r, "CLIENT_ERROR invalid mode for ma M token");
	}
	return SL_PARSE_OK;
}

/* ---- text commands ------------------------------------------------------- */

static enum sl_parse_status parse_storage(const char *buf, size_t len, size_t line_used,
                                          size_t max_item, const struct tokens *tk,
                                          struct sl_req *r, enum sl_cmd cmd)
{
	unsigned ntokens = tk->ntok + 1;
	bool is_cas = cmd == SL_CMD_CAS;
	int32_t vlen;

	if (is_cas ? (ntokens != 7 && ntokens != 8) : (ntokens != 6 && ntokens != 7))
		return fail(r, "ERROR");
	r->cmd = (uint8_t)cmd;
	noreply_maybe(r, tk);
	r->key = tk->t[1];
	if (r->key.len > SL_KEY_MAX)
		return fail(r, E_BADFMT);
	if (!sl_strtoul32(tk->t[2].p, tk->t[2].len, &r->flags) ||
	    !sl_strtol32(tk->t[3].p, tk->t[3].len, &r->exptime) ||
	    !sl_strtol32(tk->t[4].p, tk->t[4].len, &vlen))
		return fail(r, E_BADFMT);
	if (is_cas && !sl_strtoull(tk->t[5].p, tk->t[5].len, &r->cas))
		return fail(r, E_BADFMT);
	if (vlen < 0 || vlen > INT32_MAX - 2)
		return fail(r, E_BADFMT);
	r->vlen = (uint32_t)vlen;
	if (!item_fits(max_item, r->key.len, r->vlen))
		return too_large(len, line_used, r);
	return need_data(buf, len, line_used, r);
}

/* memcached refuses a whole get when any key is too long (a list no longer
 * than one key cannot hold a long one, so most lists need no walk) */
static enum sl_parse_status check_keys(struct sl_req *r)
{
	if (r->keys.len <= SL_KEY_MAX)
		return SL_PARSE_OK;
	uint32_t pos = 0;
	for (struct sl_tok k = sl_next_key(r, &pos); k.len; k = sl_next_key(r, &pos))
		if (k.len > SL_KEY_MAX)
			return fail(r, E_BADFMT);
	return SL_PARSE_OK;
}

static enum sl_parse_status parse_get(const struct tokens *tk, struct sl_req *r, enum sl_cmd cmd)
{
	unsigned first = 1;
	r->cmd = (uint8_t)cmd;
	if (cmd == SL_CMD_GAT || cmd == SL_CMD_GATS) {
		if (!sl_strtol32(tk->t[1].p, tk->t[1].len, &r->exptime))
			return fail(r, E_EXPTIME);
		first = 2;
	}
	if (first >= tk->ntok) {
		r->keys.p = tk->end;
		r->keys.len = 0;
	} else {
		r->keys.p = tk->t[first].p;
		r->keys.len = (uint32_t)(tk->end - tk->t[first].p);
	}
	return check_keys(r);
}

struct sl_tok sl_next_key(const struct sl_req *r, uint32_t *pos)
{
	struct sl_tok k = {NULL, 0};
	uint32_t i = *pos, n = r->keys.len;
	while (i < n && r->keys.p[i] == ' ')
		i++;
	if (i < n) {
		const char *sp = memchr(r->keys.p + i, ' ', n - i);
		uint32_t e = sp ? (uint32_t)(sp - r->keys.p) : n;
		k.p = r->keys.p + i;
		k.len = e - i;
		i = e;
	}
	*pos = i;
	return k;
}

static enum sl_parse_status dispatch(const char *buf, size_t len, size_t line_used, size_t max_item,
                                     const struct tokens *tk, struct sl_req *r)
{
	unsigned ntokens = tk->ntok + 1;
	const struct sl_tok *c0 = &tk->t[0];

	if (tk->ntok == 0 || c0->len < 2)
		return fail(r, "ERROR");
	if (c0->p[0] == 'm' && c0->len == 2)
		return parse_meta(buf, len, line_used, max_item, tk, r);

	if (c0->p[0] == 'g') {
		if (ntokens < 3)
			return fail(r, "ERROR");
		if (tok_is(c0, "get"))
			return parse_get(tk, r, SL_CMD_GET);
		if (tok_is(c0, "gets"))
			return parse_get(tk, r, SL_CMD_GETS);
		if (tok_is(c0, "gat"))
			return parse_get(tk, r, SL_CMD_GAT);
		if (tok_is(c0, "gats"))
			return parse_get(tk, r, SL_CMD_GATS);
		return fail(r, "ERROR");
	}
	if (tok_is(c0, "set"))
		return parse_storage(buf, len, line_used, max_item, tk, r, SL_CMD_SET);
	if (tok_is(c0, "add"))
		return parse_storage(buf, len, line_used, max_item, tk, r, SL_CMD_ADD);
	if (tok_is(c0, "replace"))
		return parse_storage(buf, len, line_used, max_item, tk, r, SL_CMD_REPLACE);
	if (tok_is(c0, "append"))
		return parse_storage(buf, len, line_used, max_item, tk, r, SL_CMD_APPEND);
	if (tok_is(c0, "prepend"))
		return parse_storage(buf, len, line_used, max_item, tk, r, SL_CMD_PREPEND);
	if (tok_is(c0, "cas"))
		return parse_storage(buf, len, line_used, max_item, tk, r, SL_CMD_CAS);
	if (tok_is(c0, "bget")) {
		if (ntokens < 3)
			return fail(r, "ERROR");
		return parse_get(tk, r, SL_CMD_GET);
	}
	if (tok_is(c0, "stats")) {
		r->cmd = SL_CMD_STATS;
		if (tk->ntok > 1) {
			r->args.p = tk->t[1].p;
			r->args.len = (uint32_t)(tk->end - tk->t[1].p);
		}
		return SL_PARSE_OK;
	}
	if (tok_is(c0, "slabs")) {
		/* no slab classes here; answer what memcached answers */
		if (ntokens == 5 && tok_is(&tk->t[1], "reassign")) {
			int32_t src, dst;
			if (!sl_strtol32(tk->t[2].p, tk->t[2].len, &src) ||
			    !sl_strtol32(tk->t[3].p, tk->t[3].len, &dst))
				return fail(r, E_BADFMT);
			return fail(r, "BADCLASS invalid src or dst class id");
		}
		if (ntokens >= 4 && tok_is(&tk->t[1], "automove")) {
			uint32_t level;
			noreply_maybe(r, tk);
			if (tok_is(&tk->t[2], "ratio"))
				return fail(r, ntokens < 5 ? "ERROR" : "OK");
			if (!sl_strtoul32(tk->t[2].p, tk->t[2].len, &level))
				return fail(r, E_BADFMT);
			return fail(r, level <= 2 ? "OK" : "ERROR");
		}
		return fail(r, "ERROR");
	}
	if (tok_is(c0, "shutdown"))
		return fail(r, "ERROR: shutdown not enabled");
	if (tok_is(c0, "incr") || tok_is(c0, "decr")) {
		if (ntokens != 4 && ntokens != 5)
			return fail(r, "ERROR");
		r->cmd = c0->p[0] == 'i' ? SL_CMD_INCR : SL_CMD_DECR;
		noreply_maybe(r, tk);
		r->key = tk->t[1];
		if (r->key.len > SL_KEY_MAX)
			return fail(r, E_BADFMT);
		if (!sl_strtoull(tk->t[2].p, tk->t[2].len, &r->delta))
			return fail(r, "CLIENT_ERROR invalid numeric delta argument");
		return SL_PARSE_OK;
	}
	if (tok_is(c0, "delete")) {
		if (ntokens < 3 || ntokens > 5)
			return fail(r, "ERROR");
		r->cmd = SL_CMD_DELETE;
		if (ntokens > 3) {
			bool hold0 = tok_is(&tk->t[2], "0");
			noreply_maybe(r, tk);
			bool ok = (ntokens == 4 && (hold0 || r->noreply)) ||
			          (ntokens == 5 && hold0 && r->noreply);
			if (!ok)
				return fail(r, "CLIENT_ERROR bad command line format.  "
				               "Usage: delete <key> [noreply]");
		}
		r->key = tk->t[1];
		if (r->key.len > SL_KEY_MAX)
			return fail(r, E_BADFMT);
		return SL_PARSE_OK;
	}
	if (tok_is(c0, "touch")) {
		if (ntokens != 4 && ntokens != 5)
			return fail(r, "ERROR");
		r->cmd = SL_CMD_TOUCH;
		noreply_maybe(r, tk);
		r->key = tk->t[1];
		if (r->key.len > SL_KEY_MAX)
			return fail(r, E_BADFMT);
		if (!sl_strtol32(tk->t[2].p, tk->t[2].len, &r->exptime))
			return fail(r, E_EXPTIME);
		return SL_PARSE_OK;
	}
	if (tok_is(c0, "flush_all")) {
		if (ntokens < 2 || ntokens > 4)
			return fail(r, "ERROR");
		r->cmd = SL_CMD_FLUSH_ALL;
		noreply_maybe(r, tk);
		r->exptime = 0;
		if (ntokens != (r->noreply ? 3u : 2u) &&
		    !sl_strtol32(tk->t[1].p, tk->t[1].len, &r->exptime))
			return fail(r, E_EXPTIME);
		return SL_PARSE_OK;
	}
	if (tok_is(c0, "version")) {
		r->cmd = SL_CMD_VERSION;
		return SL_PARSE_OK;
	}
	if (tok_is(c0, "quit")) {
		r->cmd = SL_CMD_QUIT;
		return SL_PARSE_OK;
	}
	if (tok_is(c0, "verbosity")) {
		if (ntokens != 3 && ntokens != 4)
			return fail(r, "ERROR");
		r->cmd = SL_CMD_VERBOSITY;
		noreply_maybe(r, tk);
		if (!sl_strtoul32(tk->t[1].p, tk->t[1].len, &r->verbosity))
			return fail(r, E_BADFMT);
		return SL_PARSE_OK;
	}
	/* memcached hangs up on what looks like an HTTP request */
	const struct sl_tok *last = &tk->t[tk->ntok - 1];
	if (last->len >= 5 && memcmp(last->p, "HTTP/", 5) == 0) {
		r->cmd = SL_CMD_CLOSE;
		return SL_PARSE_OK;
	}
	return fail(r, "ERROR");
}

enum sl_parse_status sl_parse(const char *buf, size_t len, size_t max_item, struct sl_req *r)
{
	memset(r, 0, offsetof(struct sl_req, keybuf));
	if (len == 0)
		return SL_PARSE_MORE;
	const char *nl = memchr(buf, '\n', len);
	if (!nl) {
		if (len <= SL_LINE_MAX_NO_NL)
			return SL_PARSE_MORE;
		/* Only a huge multi-get may have a line this long. */
		size_t i = 0;
		while (i < len && buf[i] == ' ')
			i++;
		if (i <= 100 && ((len - i >= 4 && memcmp(buf + i, "get ", 4) == 0) ||
		                 (len - i >= 5 && memcmp(buf + i, "gets ", 5) == 0)))
			return SL_PARSE_MORE;
		r->cmd = SL_CMD_CLOSE;
		r->consumed = (uint32_t)len;
		return SL_PARSE_OK;
	}
	size_t line_used = (size_t)(nl - buf) + 1;
	size_t el = (size_t)(nl - buf);
	if (el > 1 && buf[el - 1] == '\r')
		el--;
	/* memcached handles the line as a C string: a NUL ends it */
	const char *z = memchr(buf, '\0', el);
	if (z)
		el = (size_t)(z - buf);
	r->line.p = buf;
	r->line.len = (uint32_t)el;
	r->consumed = (uint32_t)line_used;

	/* Fast path for the most common request. Same result as the general
	 * path: "get"/"gets", one space, then keys (at least one, else ERROR). */
	if (el > 4 && buf[0] == 'g' && buf[1] == 'e' && buf[2] == 't' &&
	    (buf[3] == ' ' || (buf[3] == 's' && el > 5 && buf[4] == ' '))) {
		size_t k = buf[3] == ' ' ? 4 : 5;
		while (k < el && buf[k] == ' ')
			k++;
		if (k == el)
			return fail(r, "ERROR");
		r->cmd = buf[3] == ' ' ? SL_CMD_GET : SL_CMD_GETS;
		r->keys.p = buf + k;
		r->keys.len = (uint32_t)(el - k);
		return check_keys(r);
	}

	struct tokens tk;
	tokenize(buf, el, &tk);
	return dispatch(buf, len, line_used, max_item, &tk, r);
}

/* Index of the first byte of buf[i..len) that may end a key (space, LF, CR,
 * NUL), or len: sixteen bytes a step where SSE2 is there (every x86-64),
 * as a byte loop costs ~13 instructions a key byte. */
static size_t key_stop(const char *buf, size_t i, size_t len)
{
#ifdef __SSE2__
	const __m128i sp = _mm_set1_epi8(' '), lf = _mm_set1_epi8('\n'), cr = _mm_set1_epi8('\r'),
	              nul = _mm_setzero_si128();
	for (; i + 16 <= len; i += 16) {
		__m128i x = _mm_loadu_si128((const __m128i *)(const void *)(buf + i));
		__m128i m =
		    _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, sp), _mm_cmpeq_epi8(x, lf)),
		                 _mm_or_si128(_mm_cmpeq_epi8(x, cr), _mm_cmpeq_epi8(x, nul)));
		unsigned bits = (unsigned)_mm_movemask_epi8(m);
		if (bits)
			return i + (size_t)__builtin_ctz(bits);
	}
#endif
	while (i < len && buf[i] != ' ' && buf[i] != '\n' && buf[i] != '\r' && buf[i] != '\0')
		i++;
	return i;
}

size_t sl_peek_key(const char *buf, size_t len, bool *only)
{
	*only = false;
	if (len < SL_PEEK_KEY_OFF + 1)
		return 0;
	bool get = memcmp(buf, "get ", SL_PEEK_KEY_OFF) == 0;
	if (!get && memcmp(buf, "set ", SL_PEEK_KEY_OFF) != 0)
		return 0;
	/* where sl_parse's key ends: a space, a NUL, the end of the line
	 * ("\n" or "\r\n"; a lone "\r" is part of the key) */
	size_t e = key_stop(buf, SL_PEEK_KEY_OFF, len);
	while (e + 1 < len && buf[e] == '\r' && buf[e + 1] != '\n')
		e = key_stop(buf, e + 1, len);
	size_t klen = e - SL_PEEK_KEY_OFF;
	if (e == len || (buf[e] == '\r' && e + 1 == len) || klen == 0 || klen > SL_KEY_MAX)
		return 0; /* the key's end is not in sight yet */
	*only = get && e + 2 == len && buf[e] == '\r' && buf[e + 1] == '\n';
	return klen;
}

static const char *const cmd_names[SL_CMD__COUNT] = {
    [SL_CMD_NONE] = "none",       [SL_CMD_ERROR] = "error",   [SL_CMD_CLOSE] = "close",
    [SL_CMD_GET] = "get",         [SL_CMD_GETS] = "gets",     [SL_CMD_GAT] = "gat",
    [SL_CMD_GATS] = "gats",       [SL_CMD_SET] = "set",       [SL_CMD_ADD] = "add",
    [SL_CMD_REPLACE] = "replace", [SL_CMD_APPEND] = "append", [SL_CMD_PREPEND] = "prepend",
    [SL_CMD_CAS] = "cas",         [SL_CMD_DELETE] = "delete", [SL_CMD_INCR] = "incr",
    [SL_CMD_DECR] = "decr",       [SL_CMD_TOUCH] = "touch",   [SL_CMD_FLUSH_ALL] = "flush_all",
    [SL_CMD_VERSION] = "version", [SL_CMD_STATS] = "stats",   [SL_CMD_VERBOSITY] = "verbosity",
    [SL_CMD_QUIT] = "quit",       [SL_CMD_MG] = "mg",         [SL_CMD_MS] = "ms",
    [SL_CMD_MD] = "md",           [SL_CMD_MA] = "ma",         [SL_CMD_MN] = "mn",
    [SL_CMD_ME] = "me",
};

const char *sl_cmd_name(enum sl_cmd c)
{
	return (unsigned)c < SL_CMD__COUNT && cmd_names[c] ? cmd_names[c] : "?";
}
