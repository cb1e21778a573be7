/*
 * Replication records and batches: what a primary core ships to the core
 * of the backup node that keeps a copy of its slots, over the cluster port
 * (sluice/cport.h, message types SL_CPORT_REPL and SL_CPORT_RACK).
 *
 * A stream runs from one core of the primary to one core of the backup
 * (the backup keeps slot s on its core s % workers, the core that serves
 * s once the backup is promoted). It is a sequence of records numbered
 * 1, 2, 3, ... within a generation: a primary that (re)starts a stream
 * picks a new, larger generation and begins it with a RESET record, then
 * the items of every slot the stream carries (the snapshot, SET records
 * like any other), then SNAP_END; live changes are records of the same
 * sequence, interleaved with the snapshot's, so the backup applying the
 * sequence in order always ends with the newest state of every key: a
 * snapshot record is read from the store when it is appended, after every
 * change appended before it. (So the textbook race of a log record at or
 * below the snapshot's position arriving after it cannot happen: there is
 * one position, the sequence.)
 *
 * Records travel in batches: a message whose body is a batch header and
 * records back to back. The backup applies a batch whose first record is
 * the one it expects next, skips records it has already applied (a
 * retransmitted batch), and acknowledges cumulatively: "everything up to
 * seq". A batch beyond the next expected record (one was lost) is
 * answered with a NACK of what it has, and the primary goes back to the
 * first unacknowledged record (go-back-N). All integers are big-endian.
 *
 *   batch (SL_CPORT_REPL body):
 *   0            8               16          20       21   22     24
 *   +------------+---------------+-----------+--------+----+------+--------
 *   | gen u64    | first seq u64 | count u32 | core u8| 0  | 0 u16| records
 *   +------------+---------------+-----------+--------+----+------+--------
 *     core: the sending (primary) core; the cport header's worker field
 *     names the receiving (backup) core
 *
 *   record:
 *   0      1      2      3    4           8             12         20         24
 *   +------+------+------+----+-----------+-------------+----------+----------+-----+-------+
 *   | kind | klen | bits | 0  | flags u32 | exptime u32 | cas u64  | vlen u32 | key | value |
 *   +------+------+------+----+-----------+-------------+----------+----------+-----+-------+
 *     SET    the item's whole new state (set family, incr/decr: the new
 *            value, never the delta; meta state bits)
 *     TTL    only exptime changed (klen, key; vlen 0)
 *     DEL    deleted or evicted (klen, key; vlen 0)
 *     RESET  a stream begins: drop every item of the slots this primary
 *            owns (klen 0; cas: the epoch it was started under)
 *     FLUSH  flush_all on the primary: the same drop (klen 0)
 *     SNAP_END  the snapshot is whole (cas: the epoch of its RESET)
 *     HANDOVER  the primary installed the table of epoch cas: every
 *            change it made to a slot that table gives to another node
 *            came before this record (the backup that takes the slot
 *            over serves it once it has applied this far)
 *
 *   ack (SL_CPORT_RACK body, backup -> primary):
 *   0          8             16         17        18     20
 *   +----------+-------------+----------+---------+------+
 *   | gen u64  | acked u64   | flags u8 | core u8 | 0 u16|
 *   +----------+-------------+----------+---------+------+
 *     acked: every record up to this one is applied; flags: NACK (a gap:
 *     send again from acked + 1 now), RESYNC (this generation is unknown
 *     here: start the stream again); core: the backup core that sends it
 */
#ifndef SLUICE_REPL_H
#define SLUICE_REPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SL_REPL_BATCH_HDR 24
#define SL_REPL_REC_HDR 24
#define SL_REPL_ACK_LEN 20

enum sl_rec_kind {
	SL_REC_SET = 1,
	SL_REC_TTL = 2,
	SL_REC_DEL = 3,
	SL_REC_RESET = 4,
	SL_REC_FLUSH = 5,
	SL_REC_SNAP_END = 6,
	SL_REC_HANDOVER = 7,
};

#define SL_RACK_NACK 0x01
#define SL_RACK_RESYNC 0x02

struct sl_rec {
	uint8_t kind;
	uint8_t klen;
	uint8_t bits;
	uint32_t flags;
	uint32_t exptime;
	uint64_t cas;
	uint32_t vlen;
	const char *key;
	const char *value;
};

struct sl_repl_batch {
	uint64_t gen;
	uint64_t first;
	uint32_t count;
	uint8_t core;
};

struct sl_repl_ack {
	uint64_t gen;
	uint64_t acked;
	uint8_t flags;
	uint8_t core;
};

static inline size_t sl_rec_size(size_t klen, size_t vlen)
{
	return SL_REPL_REC_HDR + klen + vlen;
}

/** Write @p r at @p out (room for sl_rec_size). @return the bytes written. */
size_t sl_rec_put(uint8_t *out, const struct sl_rec *r);
/** Write the record header of @p r only (key and value follow it, the
 *  caller's to copy). */
void sl_rec_put_hdr(uint8_t *out, const struct sl_rec *r);

/**
 * Read the record at @p in (@p len bytes left in the batch): its fields
 * checked (a known kind; a key of 1..250 bytes exactly for SET, TTL and
 * DEL, none otherwise; a value only for SET; all inside @p len), key and
 * value pointing into @p in. @return its size, or 0 when it is not valid.
 */
size_t sl_rec_get(const uint8_t *in, size_t len, struct sl_rec *r);

void sl_repl_batch_put(uint8_t *out, const struct sl_repl_batch *b);
/** @return 0, or -1 for a body too short to hold a batch header. */
int sl_repl_batch_get(const uint8_t *in, size_t len, struct sl_repl_batch *b);

void sl_repl_ack_put(uint8_t *out, const struct sl_repl_ack *a);
/** @return 0, or -1 unless @p len is exactly SL_REPL_ACK_LEN. */
int sl_repl_ack_get(const uint8_t *in, size_t len, struct sl_repl_ack *a);

#endif
