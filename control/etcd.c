/* etcd over its HTTP/JSON gateway; see control/etcd.h. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>

#include "etcd.h"

struct sl_etcd {
	CURL *curl;
	char url[256];
	long timeout_ms;
	char *buf;
	size_t len, cap;
};

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
	struct sl_etcd *e = arg;
	size_t k = size * n;
	if (e->len + k + 1 > e->cap) {
		size_t cap = (e->len + k + 1) * 2;
		char *b = realloc(e->buf, cap);
		if (!b)
			return 0;
		e->buf = b;
		e->cap = cap;
	}
	memcpy(e->buf + e->len, p, k);
	e->len += k;
	e->buf[e->len] = 0;
	return k;
}

struct sl_etcd *sl_etcd_open(const char *url, long timeout_ms)
{
	static bool once;
	if (!once) {
		curl_global_init(CURL_GLOBAL_DEFAULT);
		once = true;
	}
	struct sl_etcd *e = calloc(1, sizeof(*e));
	if (!e || !(e->curl = curl_easy_init())) {
		free(e);
		return NULL;
	}
	snprintf(e->url, sizeof(e->url), "%s", url);
	size_t l = strlen(e->url);
	if (l && e->url[l - 1] == '/')
		e->url[l - 1] = 0;
	e->timeout_ms = timeout_ms;
	return e;
}

void sl_etcd_close(struct sl_etcd *e)
{
	if (!e)
		return;
	curl_easy_cleanup(e->curl);
	free(e->buf);
	free(e);
}

/* POST @p req (consumed) to @p path; *out: the answer's JSON. */
static int call(struct sl_etcd *e, const char *path, json_t *req, json_t **out, long timeout_ms)
{
	char *body = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (!body)
		return -ENOMEM;
	char url[512];
	snprintf(url, sizeof(url), "%s%s", e->url, path);
	e->len = 0;
	curl_easy_reset(e->curl);
	curl_easy_setopt(e->curl, CURLOPT_URL, url);
	curl_easy_setopt(e->curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(e->curl, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(e->curl, CURLOPT_WRITEDATA, e);
	curl_easy_setopt(e->curl, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(e->curl, CURLOPT_NOSIGNAL, 1L);
	CURLcode rc = curl_easy_perform(e->curl);
	free(body);
	long status = 0;
	curl_easy_getinfo(e->curl, CURLINFO_RESPONSE_CODE, &status);
	if (rc != CURLE_OK || status != 200 || !e->buf)
		return -EIO;
	*out = json_loads(e->buf, 0, NULL);
	return *out ? 0 : -EPROTO;
}

static char *b64(const void *p, size_t n)
{
	size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
	char *s = malloc(cap);
	if (s)
		sodium_bin2base64(s, cap, p, n, sodium_base64_VARIANT_ORIGINAL);
	return s;
}

/* A base64 field of @p o, decoded and NUL-terminated (malloc'd). */
static char *unb64(json_t *o, const char *field, size_t *len)
{
	const char *s = json_string_value(json_object_get(o, field));
	if (!s)
		s = ""; /* etcd leaves empty values out */
	size_t n = strlen(s);
	char *out = malloc(n + 1);
	size_t got = 0;
	if (!out || sodium_base642bin((unsigned char *)out, n, s, n, NULL, &got, NULL,
	                              sodium_base64_VARIANT_ORIGINAL) != 0) {
		free(out);
		return NULL;
	}
	out[got] = 0;
	if (len)
		*len = got;
	return out;
}

static int64_t num(json_t *o, const char *field)
{
	json_t *v = json_object_get(o, field);
	if (json_is_string(v))
		return strtoll(json_string_value(v), NULL, 10);
	return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

static json_t *keyobj(const char *field, const void *p, size_t n)
{
	char *s = b64(p, n);
	json_t *o = json_object();
	json_object_set_new(o, field, json_string(s ? s : ""));
	free(s);
	return o;
}

static void set_b64(json_t *o, const char *field, const void *p, size_t n)
{
	char *s = b64(p, n);
	json_object_set_new(o, field, json_string(s ? s : ""));
	free(s);
}

static void set_i64(json_t *o, const char *field, int64_t v)
{
	char s[32];
	snprintf(s, sizeof(s), "%lld", (long long)v);
	json_object_set_new(o, field, json_string(s));
}

int sl_etcd_lease_grant(struct sl_etcd *e, int ttl_s, int64_t *id)
{
	json_t *r = json_object(), *out;
	json_object_set_new(r, "TTL", json_integer(ttl_s));
	int rc = call(e, "/v3/lease/grant", r, &out, e->timeout_ms);
	if (rc)
		return rc;
	*id = num(out, "ID");
	json_decref(out);
	return *id ? 0 : -EPROTO;
}

int sl_etcd_lease_keepalive(struct sl_etcd *e, int64_t id)
{
	json_t *r = json_object(), *out;
	set_i64(r, "ID", id);
	int rc = call(e, "/v3/lease/keepalive", r, &out, e->timeout_ms);
	if (rc)
		return rc;
	/* a lease that is gone comes back without a TTL */
	int64_t ttl = num(json_object_get(out, "result"), "TTL");
	json_decref(out);
	return ttl > 0 ? 0 : -ENOENT;
}

int sl_etcd_lease_revoke(struct sl_etcd *e, int64_t id)
{
	json_t *r = json_object(), *out;
	set_i64(r, "ID", id);
	int rc = call(e, "/v3/lease/revoke", r, &out, e->timeout_ms);
	if (!rc)
		json_decref(out);
	return rc;
}

int sl_etcd_get(struct sl_etcd *e, const char *key, char **val, size_t *len)
{
	json_t *out;
	int rc = call(e, "/v3/kv/range", keyobj("key", key, strlen(key)), &out, e->timeout_ms);
	if (rc)
		return rc;
	json_t *kvs = json_object_get(out, "kvs");
	if (!json_array_size(kvs)) {
		json_decref(out);
		return 0;
	}
	*val = unb64(json_array_get(kvs, 0), "value", len);
	json_decref(out);
	return *val ? 1 : -EPROTO;
}

int sl_etcd_list(struct sl_etcd *e, const char *prefix,
                 void (*cb)(void *arg, const char *key, const char *val), void *arg)
{
	/* the range [prefix, prefix with its last byte + 1) */
	size_t n = strlen(prefix);
	char end[256];
	if (!n || n >= sizeof(end))
		return -EINVAL;
	memcpy(end, prefix, n);
	end[n - 1]++;
	json_t *r = keyobj("key", prefix, n), *out;
	set_b64(r, "range_end", end, n);
	int rc = call(e, "/v3/kv/range", r, &out, e->timeout_ms);
	if (rc)
		return rc;
	json_t *kvs = json_object_get(out, "kvs");
	size_t i;
	json_t *kv;
	int count = 0;
	json_array_foreach(kvs, i, kv)
	{
		char *k = unb64(kv, "key", NULL), *v = unb64(kv, "value", NULL);
		if (k && v) {
			cb(arg, k, v);
			count++;
		}
		free(k);
		free(v);
	}
	json_decref(out);
	return count;
}

int sl_etcd_put(struct sl_etcd *e, const char *key, const void *val, size_t len, int64_t lease)
{
	json_t *r = keyobj("key", key, strlen(key)), *out;
	set_b64(r, "value", val, len);
	if (lease)
		set_i64(r, "lease", lease);
	int rc = call(e, "/v3/kv/put", r, &out, e->timeout_ms);
	if (!rc)
		json_decref(out);
	return rc;
}

int sl_etcd_delete(struct sl_etcd *e, const char *key)
{
	json_t *out;
	int rc = call(e, "/v3/kv/deleterange", keyobj("key", key, strlen(key)), &out,
	              e->timeout_ms);
	if (!rc)
		json_decref(out);
	return rc;
}

int sl_etcd_put_as_leader(struct sl_etcd *e, const char *leader_key, int64_t leader_rev,
                          const char *key, const void *val, size_t len)
{
	json_t *cmp = keyobj("key", leader_key, strlen(leader_key));
	json_object_set_new(cmp, "target", json_string("CREATE"));
	json_object_set_new(cmp, "result", json_string("EQUAL"));
	set_i64(cmp, "create_revision", leader_rev);
	json_t *put = keyobj("key", key, strlen(key));
	set_b64(put, "value", val, len);
	json_t *op = json_object();
	json_object_set_new(op, "request_put", put);
	json_t *r = json_object(), *out;
	json_object_set_new(r, "compare", json_pack("[o]", cmp));
	json_object_set_new(r, "success", json_pack("[o]", op));
	int rc = call(e, "/v3/kv/txn", r, &out, e->timeout_ms);
	if (rc)
		return rc;
	bool ok = json_is_true(json_object_get(out, "succeeded"));
	json_decref(out);
	return ok ? 0 : -EPERM;
}

int sl_etcd_campaign(struct sl_etcd *e, const char *name, int64_t lease, const char *value,
                     char **leader_key, int64_t *rev)
{
	json_t *r = keyobj("name", name, strlen(name)), *out;
	set_i64(r, "lease", lease);
	set_b64(r, "value", value, strlen(value));
	/* blocks while another leads, for as long as that takes: etcd resigns
	 * a campaign whose request is given up, and that resignation could
	 * land after a new campaign with the same lease took its key */
	int rc = call(e, "/v3/election/campaign", r, &out, 0);
	if (rc)
		return rc;
	json_t *l = json_object_get(out, "leader");
	*leader_key = l ? unb64(l, "key", NULL) : NULL;
	*rev = l ? num(l, "rev") : 0;
	json_decref(out);
	return *leader_key && *rev ? 0 : -EPROTO;
}
