/*
 * libsluice: a smart client for a Sluice cluster.
 *
 * It fetches the slot table from any node (`stats table`), hashes each key
 * as the nodes do (XXH3-64, slot = hash % 16384) and sends the request
 * straight to the UDP fast path of the node that owns it, so no request
 * takes the extra hop a stock client's may (a node forwards what is not
 * its own). Multi-gets are split by owner, sent to all owners at once and
 * put back in the caller's order. A request with no answer in time is sent
 * again (reads and writes alike: set and delete are idempotent; use TCP
 * through a stock client for incr/decr where a retry could count twice);
 * an error from a node, or an answer that took a retry, makes the client
 * fetch the table again, as does its age (refresh_ms).
 *
 *   struct sluice *c = sluice_open("198.18.0.11:11211,198.18.0.12:11211", NULL);
 *   sluice_set(c, "k", 1, "v", 1, 0, 0);
 *   struct sluice_value v;
 *   if (sluice_get(c, "k", 1, &v) == 1) { ... v.data, v.len ...; sluice_value_free(&v); }
 *   sluice_close(c);
 *
 * One struct sluice per thread: it holds one socket and no locks.
 * A complete program: client/example.c.
 */
#ifndef SLUICE_LIBSLUICE_H
#define SLUICE_LIBSLUICE_H

#include <stddef.h>
#include <stdint.h>

struct sluice;

struct sluice_opts {
	unsigned timeout_ms; /* per try (default 200) */
	unsigned tries;      /* sends of one request before giving up (default 3) */
	unsigned refresh_ms; /* fetch the table again after this long (default 1000) */
};

struct sluice_value {
	char *data; /* malloc'd, NUL after len bytes; free with sluice_value_free */
	size_t len;
	uint32_t flags;
};

/**
 * A client of the cluster that any of @p seeds ("A.B.C.D:PORT[,...]")
 * belongs to; @p o may be NULL for the defaults. The table is fetched at
 * once. @return NULL (errno set) when no seed answers.
 */
struct sluice *sluice_open(const char *seeds, const struct sluice_opts *o);
void sluice_close(struct sluice *c);

/** Fetch the slot table again. @return 0, or -errno. */
int sluice_refresh(struct sluice *c);
/** The epoch of the table the client routes by. */
uint64_t sluice_epoch(const struct sluice *c);

/** @return 1 (found, *v filled), 0 (not found), or -errno. */
int sluice_get(struct sluice *c, const char *key, size_t klen, struct sluice_value *v);
/** @return 0 (stored), or -errno (-ENOSPC: the node could not store it;
 *  -EMSGSIZE: over ~11 KB, which one UDP request cannot carry: use TCP). */
int sluice_set(struct sluice *c, const char *key, size_t klen, const void *val, size_t vlen,
               uint32_t flags, int32_t exptime);
/** @return 1 (deleted), 0 (there was none), or -errno. */
int sluice_delete(struct sluice *c, const char *key, size_t klen);

/**
 * Get @p n keys: v[i] is keys[i]'s value, found[i] 1 or 0. The keys go to
 * their owners in one request per owner (several when they do not fit one
 * datagram), all sent before any answer is awaited.
 * @return how many were found, or -errno (then nothing is in v).
 */
int sluice_get_multi(struct sluice *c, size_t n, const char *const *keys, const size_t *klens,
                     struct sluice_value *v, int *found);

void sluice_value_free(struct sluice_value *v);

/** The error text of the last failure a node answered (SERVER_ERROR ...). */
const char *sluice_last_error(const struct sluice *c);

#endif
