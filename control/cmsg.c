/* Cluster message frames and the slot-table push; see include/sluice/cmsg.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "sluice/be.h"
#include "sluice/cmsg.h"

static const uint8_t MAGIC[4] = {'S', 'L', 'C', '1'};
#define VERSION 1
#define NODE_ENTRY 20
#define SLOT_ENTRY 4

static void mac(uint8_t out[SL_CMSG_MAC], const uint8_t *p, size_t n,
                const uint8_t key[SL_CMSG_KEY])
{
	crypto_generichash(out, SL_CMSG_MAC, p, n, key, SL_CMSG_KEY);
}

size_t sl_cmsg_encode(uint8_t *out, const struct sl_cmsg *m, const uint8_t key[SL_CMSG_KEY])
{
	if (m->body_len > SL_CMSG_BODY_MAX)
		return 0;
	memcpy(out, MAGIC, 4);
	out[4] = VERSION;
	out[5] = m->type;
	sl_put16(out + 6, 0);
	sl_put32(out + 8, m->body_len);
	sl_put32(out + 12, m->sender);
	sl_put64(out + 16, m->epoch);
	sl_put64(out + 24, m->seq);
	if (m->body_len)
		memmove(out + SL_CMSG_HDR, m->body, m->body_len);
	mac(out + SL_CMSG_HDR + m->body_len, out, SL_CMSG_HDR + m->body_len, key);
	return sl_cmsg_size(m->body_len);
}

enum sl_cmsg_verdict sl_cmsg_decode(const uint8_t *in, size_t len, const uint8_t key[SL_CMSG_KEY],
                                    struct sl_cmsg *m, size_t *used)
{
	/* judge what is there as soon as it can be judged, so that junk is
	 * refused without waiting for a length it claims */
	size_t have = len < 4 ? len : 4;
	if (memcmp(in, MAGIC, have) != 0 || (len > 4 && in[4] != VERSION))
		return SL_CMSG_BAD;
	if (len < SL_CMSG_HDR)
		return SL_CMSG_SHORT;
	uint32_t body = sl_get32(in + 8);
	if (body > SL_CMSG_BODY_MAX || sl_get16(in + 6) != 0)
		return SL_CMSG_BAD;
	if (len < sl_cmsg_size(body))
		return SL_CMSG_SHORT;
	uint8_t want[SL_CMSG_MAC];
	mac(want, in, SL_CMSG_HDR + body, key);
	if (sodium_memcmp(want, in + SL_CMSG_HDR + body, SL_CMSG_MAC) != 0)
		return SL_CMSG_FORGED;
	m->type = in[5];
	m->sender = sl_get32(in + 12);
	m->epoch = sl_get64(in + 16);
	m->seq = sl_get64(in + 24);
	m->body = in + SL_CMSG_HDR;
	m->body_len = body;
	*used = sl_cmsg_size(body);
	return SL_CMSG_OK;
}

size_t sl_cmsg_table_size(unsigned n)
{
	return 2 + (size_t)n * NODE_ENTRY + (size_t)SL_SLOTS * SLOT_ENTRY;
}

size_t sl_cmsg_table_encode(uint8_t *out, const struct sl_cmsg_table *t)
{
	uint8_t *p = out;
	sl_put16(p, (uint16_t)t->n);
	p += 2;
	for (unsigned i = 0; i < t->n; i++, p += NODE_ENTRY) {
		const struct sl_cmsg_node *nd = &t->node[i];
		sl_put16(p, nd->id);
		memcpy(p + 2, &nd->ip, 4); /* already network order */
		sl_put16(p + 6, nd->port);
		sl_put16(p + 8, nd->cport);
		memcpy(p + 10, nd->mac, 6);
		p[16] = nd->workers;
		p[17] = nd->weight;
		sl_put16(p + 18, 0);
	}
	for (unsigned s = 0; s < SL_SLOTS; s++, p += SLOT_ENTRY) {
		sl_put16(p, t->primary[s]);
		sl_put16(p + 2, t->backup[s]);
	}
	return (size_t)(p - out);
}

static int node_index(const struct sl_cmsg_table *t, uint16_t id)
{
	for (unsigned i = 0; i < t->n; i++)
		if (t->node[i].id == id)
			return (int)i;
	return -1;
}

int sl_cmsg_table_decode(const uint8_t *body, uint32_t len, struct sl_cmsg_table *t)
{
	if (len < 2)
		return -EINVAL;
	unsigned n = sl_get16(body);
	if (n == 0 || n > SL_CMSG_NODES_MAX || len != sl_cmsg_table_size(n))
		return -EINVAL;
	t->n = n;
	const uint8_t *p = body + 2;
	/* ids index a bitmap while checking: 65536 bits */
	static _Thread_local uint8_t seen[65536 / 8];
	memset(seen, 0, sizeof(seen));
	for (unsigned i = 0; i < n; i++, p += NODE_ENTRY) {
		struct sl_cmsg_node *nd = &t->node[i];
		nd->id = sl_get16(p);
		memcpy(&nd->ip, p + 2, 4);
		nd->port = sl_get16(p + 6);
		nd->cport = sl_get16(p + 8);
		memcpy(nd->mac, p + 10, 6);
		nd->workers = p[16];
		nd->weight = p[17];
		if (nd->id == SL_CMSG_NO_NODE || (seen[nd->id / 8] & (1u << (nd->id % 8))) ||
		    sl_get16(p + 18) != 0 || nd->workers == 0)
			return -EINVAL;
		seen[nd->id / 8] |= (uint8_t)(1u << (nd->id % 8));
	}
	for (unsigned s = 0; s < SL_SLOTS; s++, p += SLOT_ENTRY) {
		uint16_t pr = sl_get16(p), bk = sl_get16(p + 2);
		if (pr == SL_CMSG_NO_NODE || !(seen[pr / 8] & (1u << (pr % 8))))
			return -EINVAL;
		if (bk != SL_CMSG_NO_NODE && (bk == pr || !(seen[bk / 8] & (1u << (bk % 8)))))
			return -EINVAL;
		t->primary[s] = pr;
		t->backup[s] = bk;
	}
	return 0;
}

int sl_cmsg_table_apply(const struct sl_cmsg_table *t, uint64_t epoch, uint16_t self,
                        unsigned nworkers, struct sl_table *out)
{
	if (node_index(t, self) < 0 || nworkers == 0 || nworkers > SL_MAX_WORKERS)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	out->epoch = epoch;
	out->self = self;
	out->nworkers = (uint16_t)nworkers;
	for (unsigned s = 0; s < SL_SLOTS; s++) {
		out->node[s] = t->primary[s];
		out->backup[s] = t->backup[s];
		if (t->primary[s] == self) {
			out->state[s] = SL_SLOT_SERVING;
			/* slot s is core s % workers's on every node, so a
			 * backup keeps it on the core that serves it once it is
			 * promoted */
			out->core[s] = (uint8_t)(s % nworkers);
		} else {
			out->state[s] = SL_SLOT_REMOTE;
		}
	}
	for (unsigned i = 0; i < t->n && out->npeers < SL_PEERS_MAX; i++) {
		const struct sl_cmsg_node *nd = &t->node[i];
		struct sl_peer *p = &out->peer[out->npeers++];
		p->id = nd->id;
		p->ip = nd->ip;
		p->port = nd->port;
		p->cport = (uint16_t)(nd->cport >> 8 | nd->cport << 8); /* network order */
		memcpy(p->mac, nd->mac, 6);
		p->workers = nd->workers;
	}
	return sl_table_seal(out);
}

size_t sl_cmsg_register_encode(uint8_t *out, const struct sl_cmsg_register *r)
{
	size_t n = strnlen(r->name, sizeof(r->name) - 1);
	memcpy(out, &r->ip, 4);
	sl_put16(out + 4, r->port);
	sl_put16(out + 6, r->cport);
	memcpy(out + 8, r->mac, 6);
	out[14] = r->workers;
	out[15] = r->weight;
	out[16] = (uint8_t)n;
	memcpy(out + 17, r->name, n);
	return 17 + n;
}

int sl_cmsg_register_decode(const uint8_t *body, uint32_t len, struct sl_cmsg_register *r)
{
	if (len < 18 || len != 17u + body[16] || body[16] >= sizeof(r->name) || !body[14] ||
	    !body[15])
		return -EINVAL;
	memcpy(&r->ip, body, 4);
	r->port = sl_get16(body + 4);
	r->cport = sl_get16(body + 6);
	memcpy(r->mac, body + 8, 6);
	r->workers = body[14];
	r->weight = body[15];
	for (unsigned i = 0; i < body[16]; i++) {
		char c = (char)body[17 + i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return -EINVAL;
		r->name[i] = c;
	}
	r->name[body[16]] = 0;
	return 0;
}

/* libsodium's own set-up, before any thread could race to do it */
__attribute__((constructor)) static void sodium_setup(void)
{
	if (sodium_init() < 0)
		abort();
}
