#include "sluice/frame.h"

static inline uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static inline void wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

enum sl_frame_verdict sl_frame_decode(const uint8_t *p, size_t len, struct sl_frame *f)
{
	if (len < SL_FRAME_LEN)
		return SL_FRAME_SHORT;
	f->id = rd16(p);
	f->seq = rd16(p + 2);
	f->count = rd16(p + 4);
	f->reserved = rd16(p + 6);
	if (f->seq != 0 || f->count != 1)
		return SL_FRAME_MULTI;
	return SL_FRAME_OK;
}

void sl_frame_encode(uint8_t *p, const struct sl_frame *f)
{
	wr16(p, f->id);
	wr16(p + 2, f->seq);
	wr16(p + 4, f->count);
	wr16(p + 6, f->reserved);
}
