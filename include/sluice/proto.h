/*
 * memcached text and meta protocol: request parser.
 *
 * The parser knows nothing of storage. It takes a byte buffer that may hold
 * one or more requests and splits off the first: its command line and, for
 * storage commands, its data block. It tokenises the line exactly as
 * memcached 1.6 does (single spaces separate tokens, at most 23 tokens and
 * then "the rest", a NUL ends the line), converts numbers with memcached's
 * rules (strtol/strtoul then truncation to 32 bits, '-' refused for unsigned)
 * and decides every reply that does not need the store: ERROR,
 * CLIENT_ERROR ..., SERVER_ERROR object too large.
 *
 *   buffer: | line .............. \r\n | data (vlen bytes) \r\n | next ...
 *           ^ sl_req.line (line_len)     ^ sl_req.data
 *           <-------------- sl_req.consumed ------------------->
 *
 * The request points into the caller's buffer; nothing is copied except a
 * base64-decoded meta key, which lives in the request itself.
 */
#ifndef SLUICE_PROTO_H
#define SLUICE_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SL_KEY_MAX 250u
#define SL_MAX_TOKENS 24u       /* memcached's MAX_TOKENS, terminator included */
#define SL_LINE_MAX_NO_NL 2048u /* no newline after this many bytes: junk */
#define SL_META_MAX_TOKENS 20u  /* memcached's MFLAG_MAX_OPT_LENGTH */
#define SL_META_MAX_OPAQUE 32u

enum sl_cmd {
	SL_CMD_NONE = 0,
	SL_CMD_ERROR, /* fixed reply r->err, mostly an error (unless noreply) */
	SL_CMD_CLOSE, /* junk: close the connection (TCP) / drop (UDP) */
	SL_CMD_GET,
	SL_CMD_GETS,
	SL_CMD_GAT,
	SL_CMD_GATS,
	SL_CMD_SET,
	SL_CMD_ADD,
	SL_CMD_REPLACE,
	SL_CMD_APPEND,
	SL_CMD_PREPEND,
	SL_CMD_CAS,
	SL_CMD_DELETE,
	SL_CMD_INCR,
	SL_CMD_DECR,
	SL_CMD_TOUCH,
	SL_CMD_FLUSH_ALL,
	SL_CMD_VERSION,
	SL_CMD_STATS,
	SL_CMD_VERBOSITY,
	SL_CMD_QUIT,
	SL_CMD_MG,
	SL_CMD_MS,
	SL_CMD_MD,
	SL_CMD_MA,
	SL_CMD_MN,
	SL_CMD_ME,
	SL_CMD__COUNT
};

/** A span of the input buffer. */
struct sl_tok {
	const char *p;
	uint32_t len;
};

/* Meta flags seen on the line, one bit per ASCII letter. */
#define SL_MF(c) ((uint64_t)1 << ((c) - 'A'))

/** Values carried by meta flags (valid when the flag's bit is set). */
struct sl_meta {
	uint64_t seen;         /* SL_MF('x') bits */
	int32_t ttl;           /* T */
	int32_t vivify_ttl;    /* N */
	int32_t recache_ttl;   /* R */
	uint32_t client_flags; /* F */
	uint64_t cas;          /* C */
	uint64_t delta;        /* D (ma), default 1 */
	uint64_t initial;      /* J (ma), default 0 */
	char mode;             /* M */
	struct sl_tok opaque;  /* O..., the whole token */
	/* return flags in line order, for composing the reply */
	char ret[SL_META_MAX_TOKENS];
	uint8_t nret;
};

struct sl_req {
	uint8_t cmd;       /* enum sl_cmd */
	bool noreply;      /* text "noreply" or meta q */
	bool err_always;   /* error replies even under noreply (meta) */
	bool too_large;    /* storage command whose item can never fit: reply
	                      r->err, and set/ms drop the old value */
	const char *err;   /* SL_CMD_ERROR: reply line without CRLF */
	uint32_t consumed; /* bytes this request takes from the buffer */
	uint64_t swallow;  /* error replies: bytes still to discard after those */

	struct sl_tok line; /* the command line without CR LF */
	struct sl_tok key;  /* single-key commands; decoded for meta b */
	struct sl_tok keys; /* get family: the key list, still tokenised lazily */
	bool key_binary;    /* meta b: key was base64 */

	uint32_t flags;  /* storage: client flags */
	int32_t exptime; /* storage, touch, gat, flush_all delay */
	uint32_t vlen;   /* storage: data length without CRLF */
	uint64_t cas;    /* cas unique */
	uint64_t delta;  /* incr/decr */
	uint32_t verbosity;
	const char *data;   /* storage: vlen bytes */
	struct sl_tok args; /* stats: arguments after "stats" */

	struct sl_meta meta;
	char keybuf[SL_KEY_MAX + 1];
};

enum sl_parse_status {
	SL_PARSE_OK = 1,   /* *r is filled; r->consumed bytes used */
	SL_PARSE_MORE = 0, /* the request is incomplete: read more */
};

/**
 * Parse the first request in @p buf.
 *
 * @param max_item  largest item (header, key and value) the store accepts;
 *                  larger storage requests get "SERVER_ERROR object too large
 *                  for cache" and their data is swallowed, as memcached does.
 * @return SL_PARSE_OK with r filled (r->cmd may be SL_CMD_ERROR or
 *         SL_CMD_CLOSE), or SL_PARSE_MORE when the buffer ends mid-request.
 * Thread safety: pure function of its inputs.
 */
enum sl_parse_status sl_parse(const char *buf, size_t len, size_t max_item, struct sl_req *r);

/**
 * Iterate the keys of a get-family request: set *pos to 0 first; each call
 * returns the next key (len 0 when done). A key longer than SL_KEY_MAX is
 * returned as is; sl_parse has already refused such requests.
 */
struct sl_tok sl_next_key(const struct sl_req *r, uint32_t *pos);

/**
 * A glance at a datagram's request, far cheaper than sl_parse, for the
 * commonest ones: if @p buf starts "get " or "set " and a key, returns the
 * key's length (the key starts SL_PEEK_KEY_OFF bytes in), else 0. The key
 * ends where sl_parse's would: at a space, at the end of the line or at a
 * NUL. *@p only tells whether the whole buffer is exactly
 * "get <key>\r\n"; then sl_parse would read it as a get of that one key
 * and consume all @p len bytes. For a set nothing is promised but the
 * bytes: sl_parse may still refuse the line, so the key is a hint (to
 * prefetch, and a hash the executor takes only for a key at exactly that
 * place and length).
 */
#define SL_PEEK_KEY_OFF 4 /* after "get " or "set " */
size_t sl_peek_key(const char *buf, size_t len, bool *only);

/** Command name, for stats and logs. */
const char *sl_cmd_name(enum sl_cmd c);

/** memcached's number rules, exposed for tests. Return true on success. */
bool sl_strtol32(const char *s, size_t len, int32_t *out);
bool sl_strtoul32(const char *s, size_t len, uint32_t *out);
bool sl_strtoull(const char *s, size_t len, uint64_t *out);

/** Base64 (RFC 4648, padded). Return the output length, 0 on bad input. */
size_t sl_b64_decode(const char *in, size_t len, char *out, size_t cap);
size_t sl_b64_encode(const char *in, size_t len, char *out, size_t cap);

/** Per-item memory the store charges besides key and value (item header). */
#define SL_ITEM_OVERHEAD 56u

#endif
