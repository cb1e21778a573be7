/*
 * memcached's UDP frame header.
 *
 * Every UDP datagram, request or response, opens with eight bytes, all
 * big-endian. A request must fit one datagram (seq 0 of 1); a response may
 * span n datagrams that all carry the request's id, numbered 0..n-1:
 *
 *     byte  0      2      4      6      8
 *           +------+------+------+------+---------------------------+
 *           | id   | seq  | count| rsvd | memcached text / meta ... |
 *           +------+------+------+------+---------------------------+
 *
 * memcached answers nothing for a request whose seq != 0 or count != 1
 * (multi-datagram requests were never implemented); we drop and count those.
 * A response datagram's UDP payload, header included, is at most 1400 bytes
 * (1392 of reply), memcached's figure: clients size their receive buffer
 * for it (php-memcache reads 1401 bytes and refuses anything longer).
 */
#ifndef SLUICE_FRAME_H
#define SLUICE_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define SL_FRAME_LEN 8u
#define SL_UDP_PAYLOAD_MAX 1400u /* header included, as memcached's UDP_MAX_PAYLOAD_SIZE */
#define SL_UDP_CHUNK (SL_UDP_PAYLOAD_MAX - SL_FRAME_LEN)

struct sl_frame {
	uint16_t id;
	uint16_t seq;
	uint16_t count;
	uint16_t reserved;
};

enum sl_frame_verdict {
	SL_FRAME_OK = 0,
	SL_FRAME_SHORT, /* fewer than 8 bytes */
	SL_FRAME_MULTI, /* seq != 0 or count != 1: a multi-datagram request */
};

/** Decode the header at @p p (len bytes available). */
enum sl_frame_verdict sl_frame_decode(const uint8_t *p, size_t len, struct sl_frame *f);

/** Encode @p f into 8 bytes at @p p. */
void sl_frame_encode(uint8_t *p, const struct sl_frame *f);

/** Number of datagrams needed to carry @p len response bytes (at least 1). */
static inline uint32_t sl_frame_count(size_t len)
{
	return len == 0 ? 1 : (uint32_t)((len + SL_UDP_CHUNK - 1) / SL_UDP_CHUNK);
}

#endif
