/*
 * The header checksum of an IPv4 header without options, summed from the
 * field values instead of read back from memory. Both sluiced (replies,
 * dataplane/net.c) and sluice-bench (requests, perf/bench.c) write a header
 * field by field and need its checksum at once; rte_ipv4_cksum's wide loads
 * of words just stored narrow wait on store forwarding (7% of the worker's
 * samples before this was used).
 *
 *   bytes 0-1 version/IHL 0x45, TOS 0   2-3 total length   4-5 id
 *   6-7 fragment 0                       8 TTL  9 protocol  10-11 checksum
 *   12-15 source                         16-19 destination
 *
 * One's complement sums do not care about byte order, so the words are
 * summed as they sit in memory (network order), as rte_ipv4_cksum does, and
 * the result is stored as it is. As rte_ipv4_cksum, a sum of 0xffff is
 * written as 0xffff, not 0 (both are valid), so the bytes are the same.
 */
#ifndef SLUICE_IPSUM_H
#define SLUICE_IPSUM_H

#include <rte_byteorder.h>
#include <rte_ip.h>

static inline uint16_t sl_ipv4_cksum(rte_be16_t total_length, rte_be16_t packet_id, uint8_t ttl,
                                     uint8_t proto, rte_be32_t src, rte_be32_t dst)
{
	uint32_t sum = (uint32_t)rte_cpu_to_be_16(RTE_IPV4_VHL_DEF << 8) + total_length +
	               packet_id + rte_cpu_to_be_16((uint16_t)(ttl << 8 | proto)) + (src & 0xffff) +
	               (src >> 16) + (dst & 0xffff) + (dst >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum == 0xffff ? (uint16_t)sum : (uint16_t)~sum;
}

#endif
