/*
 * UDP amplification guard: a node must not be usable as a reflector.
 *
 * A UDP request's source address is not proven (anyone can write any
 * address into a datagram), and a small get can fetch a large value: the
 * 2018 memcached reflection attacks reached 51,000x. So every UDP source
 * is one of:
 *
 *   trusted   in --udp-trust (default: the node's own prefix from --ip):
 *             answered without limit, and at no measurable cost
 *   allowed   in --udp-allow (default: none; "any" for every source):
 *             answered within a budget
 *   denied    in neither: dropped before parsing, counted, never answered
 *
 * The budget of allowed sources: every request earns its source
 * factor x its size in credit (IP datagram bytes; --udp-amp-factor, 10 by
 * default) and every reply datagram costs its size. A source may go at
 * most one largest reply (--udp-max-reply, 16 KiB by default) into debt,
 * so one ordinary multi-datagram reply goes out at once; its debt is
 * forgiven at that rate per second. Since a forged source costs nothing to
 * invent, the same accounts are kept for all allowed sources of a core
 * together, with no forgiveness: their replies in all never exceed factor
 * x their requests plus four largest replies (credit saved up is capped at
 * the same). A reply beyond the budget becomes one short error line if
 * that fits the budget, or nothing; a reply above --udp-max-reply becomes
 * "SERVER_ERROR object too large for UDP, use TCP", so a client knows to
 * ask again over TCP.
 *
 * Per-source state lives in a fixed table per core, 4-way set associative,
 * addressed by a keyed hash of the address (so forged sources cannot aim
 * at one set); a new source takes the least recently seen entry of its
 * set. A flood of forged sources neither grows it nor costs more than one
 * cache line a reply:
 *
 *   set (64 B):  | entry 0 | entry 1 | entry 2 | entry 3 |
 *   entry (16 B): | ip u32 | credit i32 | seen u32 (ms) | refused u16 | pad |
 *   totals per entry, for "stats udpsources", in a parallel array:
 *                 | bytes_out u64 | bytes_in u64 |
 *
 * Thread safety: a guard belongs to one worker core; the configuration is
 * read-only once workers run; sl_udpguard_top reads other cores' tables
 * racily, as every statistic.
 */
#ifndef SLUICE_UDPGUARD_H
#define SLUICE_UDPGUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SL_PREFIXES_MAX 16

struct sl_prefixes {
	bool any;
	unsigned n;
	uint32_t net[SL_PREFIXES_MAX];  /* network order, masked */
	uint32_t mask[SL_PREFIXES_MAX]; /* network order */
};

/**
 * Parse "A.B.C.D/N[,...]" (N 0-32; a bare address is /32), or "any" when
 * @p any_ok. @return 0, or -EINVAL (@p l unchanged).
 */
int sl_prefixes_parse(struct sl_prefixes *l, const char *s, bool any_ok);

/** Is @p ip (network order) in @p l? */
static inline bool sl_prefixes_match(const struct sl_prefixes *l, uint32_t ip)
{
	for (unsigned i = 0; i < l->n; i++)
		if ((ip & l->mask[i]) == l->net[i])
			return true;
	return l->any;
}

enum sl_udp_class { SL_UDP_TRUSTED = 0, SL_UDP_ALLOWED = 1, SL_UDP_DENIED = 2 };

struct sl_udpguard_conf {
	struct sl_prefixes trust;
	struct sl_prefixes allow;
	uint32_t factor;    /* bytes out per byte in */
	uint32_t max_reply; /* largest reply to an allowed source, bytes */
};

static inline enum sl_udp_class sl_udp_classify(const struct sl_udpguard_conf *c, uint32_t ip)
{
	if (sl_prefixes_match(&c->trust, ip))
		return SL_UDP_TRUSTED;
	return sl_prefixes_match(&c->allow, ip) ? SL_UDP_ALLOWED : SL_UDP_DENIED;
}

enum sl_udp_verdict {
	SL_UDP_SEND,      /* the reply goes out */
	SL_UDP_TOO_LARGE, /* send the too-large error line instead */
	SL_UDP_OVER,      /* send the over-budget error line instead */
	SL_UDP_SILENT,    /* send nothing */
};

#define SL_UDP_TOO_LARGE_LINE "SERVER_ERROR object too large for UDP, use TCP\r\n"
#define SL_UDP_OVER_LINE "SERVER_ERROR over UDP budget\r\n"

struct sl_udpguard_stats {
	uint64_t bytes_in;  /* requests of allowed sources, IP bytes */
	uint64_t bytes_out; /* replies to them, IP bytes */
	uint64_t too_large;
	uint64_t over_budget;
	uint64_t silent;
	uint64_t evictions; /* sources that took another's entry */
};

struct sl_udpguard;

/** A guard with @p entries source entries (rounded up to a power of two,
 *  at least 4). @return the guard, or NULL (ENOMEM). */
struct sl_udpguard *sl_udpguard_create(const struct sl_udpguard_conf *c, unsigned entries);
void sl_udpguard_destroy(struct sl_udpguard *g);

/**
 * An allowed source @p ip (network order) sent a request of @p in bytes
 * and its reply of @p len bytes would be @p out bytes on the wire (IP
 * datagrams); an error line instead would be @p err_out bytes. Credits the
 * request, decides, and charges what is sent. @p now_ms: a millisecond
 * clock.
 */
enum sl_udp_verdict sl_udpguard_charge(struct sl_udpguard *g, uint32_t ip, uint32_t in, size_t len,
                                       uint32_t out, uint32_t err_out, uint32_t now_ms);

const struct sl_udpguard_stats *sl_udpguard_stats(const struct sl_udpguard *g);

struct sl_udp_source {
	uint32_t ip; /* network order */
	uint64_t bytes_out;
	uint64_t bytes_in;
	uint64_t refused;
};

/**
 * The @p k sources with the most bytes sent to them over the guards of
 * @p n cores (a source seen by several cores summed), most first.
 * @return how many were written to @p out.
 */
unsigned sl_udpguard_top(struct sl_udpguard *const *g, unsigned n, struct sl_udp_source *out,
                         unsigned k);

#endif
