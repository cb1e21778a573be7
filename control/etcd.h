/*
 * A small etcd v3 client for sluice-control, over etcd's HTTP/JSON gateway
 * (POST /v3/kv/..., /v3/lease/..., /v3/election/...; keys and values in
 * base64, 64-bit numbers as JSON strings), with libcurl and jansson.
 *
 * The gateway rather than gRPC: Debian packages libcurl and jansson for C,
 * while a gRPC client in C would need the protobuf-c and grpc C++ stacks;
 * the controller makes a few requests per second, where a JSON round trip
 * on loopback (~0.5 ms) costs nothing that matters.
 *
 * Every call blocks (with a timeout) and returns 0 or a negative errno:
 * -EIO for no answer, -EPROTO for an answer that is not what etcd says.
 * One handle per thread.
 */
#ifndef SLUICE_CONTROL_ETCD_H
#define SLUICE_CONTROL_ETCD_H

#include <stddef.h>
#include <stdint.h>

struct sl_etcd;

/** A handle on the etcd at @p url ("http://127.0.0.1:2379"); NULL: no memory. */
struct sl_etcd *sl_etcd_open(const char *url, long timeout_ms);
void sl_etcd_close(struct sl_etcd *e);

int sl_etcd_lease_grant(struct sl_etcd *e, int ttl_s, int64_t *id);
/** @return 0 (renewed), -ENOENT (the lease is gone: expired or revoked). */
int sl_etcd_lease_keepalive(struct sl_etcd *e, int64_t id);
int sl_etcd_lease_revoke(struct sl_etcd *e, int64_t id);

/** @return 1 (found: *val malloc'd, NUL-terminated), 0 (no such key). */
int sl_etcd_get(struct sl_etcd *e, const char *key, char **val, size_t *len);
/** Keys under @p prefix, for each @p cb(key, value). @return how many. */
int sl_etcd_list(struct sl_etcd *e, const char *prefix,
                 void (*cb)(void *arg, const char *key, const char *val), void *arg);
int sl_etcd_put(struct sl_etcd *e, const char *key, const void *val, size_t len, int64_t lease);
int sl_etcd_delete(struct sl_etcd *e, const char *key);

/**
 * Put only while the election key @p leader_key still exists with create
 * revision @p leader_rev: a controller that lost its leadership can write
 * nothing. @return 0, or -EPERM (not the leader any more).
 */
int sl_etcd_put_as_leader(struct sl_etcd *e, const char *leader_key, int64_t leader_rev,
                          const char *key, const void *val, size_t len);

/**
 * Campaign in election @p name with @p lease, announcing @p value: blocks
 * until this campaign leads, without a timeout (-EIO: etcd went away).
 * On 0, *leader_key (malloc'd) and *rev name this leadership.
 */
int sl_etcd_campaign(struct sl_etcd *e, const char *name, int64_t lease, const char *value,
                     char **leader_key, int64_t *rev);

#endif
