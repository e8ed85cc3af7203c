/*
 * auth.c — who is asking, and may they: API keys, the shared rate limit, job ownership.
 *
 * Keys come from auth.api_keys (and auth.admin_key) and are sent as "X-API-Key: K" or
 * "Authorization: Bearer K". A presented key is hashed and the hash compared in constant
 * time with every configured key's hash, so neither timing nor length says anything. A
 * key's id — the first 16 hex digits of its SHA-256 — is what the job records store,
 * never the key.
 *
 * The rate limit is checked before authentication can fail: a request with a valid key
 * spends that key's tokens; any other request spends its client IP's, so guessing keys
 * is metered like everything else.
 */
#include "acceptor.h"
#include "tako/log.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <event2/keyvalq_struct.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct key {
    unsigned char hash[32];
    char id[17];
    bool admin;
};

static struct key *keys;
static size_t n_keys;

struct request_auth current_auth;

static void key_hash(const char *k, size_t n, unsigned char out[32])
{
    unsigned int len = 0;
    EVP_Digest(k, n, out, &len, EVP_sha256(), NULL);
}

static void add_key(const char *k, size_t n, bool admin)
{
    struct key *grown = realloc(keys, (n_keys + 1) * sizeof *keys);
    if (!grown)
        return;
    keys = grown;
    struct key *e = &keys[n_keys++];
    key_hash(k, n, e->hash);
    hex_encode(e->hash, 8, e->id);
    e->admin = admin;
}

void auth_init(void)
{
    for (const char *k = tk.cfg.auth_api_keys; *k;) {
        size_t n = strcspn(k, ",");
        size_t lead = strspn(k, " "), len = n - lead;
        while (len > 0 && k[lead + len - 1] == ' ')
            len--;
        if (len)
            add_key(k + lead, len, false);
        k += n + (k[n] == ',');
    }
    if (tk.cfg.auth_admin_key[0])
        add_key(tk.cfg.auth_admin_key, strlen(tk.cfg.auth_admin_key), true);
}

bool auth_enabled(void)
{
    return n_keys > 0;
}

const char *auth_owner(void)
{
    return auth_enabled() && !current_auth.admin ? current_auth.key_id : NULL;
}

/* The presented key, if any. */
static const char *presented_key(struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    const char *k = evhttp_find_header(h, "X-API-Key");
    if (k && *k)
        return k;
    const char *a = evhttp_find_header(h, "Authorization");
    if (a && !strncasecmp(a, "Bearer ", 7)) {
        a += 7;
        while (*a == ' ')
            a++;
        return *a ? a : NULL;
    }
    return NULL;
}

/* Constant time over every configured key, whatever matches. */
static const struct key *match_key(const char *k)
{
    unsigned char h[32];
    key_hash(k, strlen(k), h);
    const struct key *found = NULL;
    for (size_t i = 0; i < n_keys; i++)
        if (CRYPTO_memcmp(h, keys[i].hash, 32) == 0)
            found = &keys[i];
    return found;
}

bool auth_gate(struct evhttp_request *req, const char *corr, bool open_route)
{
    memset(&current_auth, 0, sizeof current_auth);
    const char *k = presented_key(req);
    const struct key *key = k && auth_enabled() ? match_key(k) : NULL;
    if (key) {
        current_auth.ok = true;
        current_auth.admin = key->admin;
        snprintf(current_auth.key_id, sizeof current_auth.key_id, "%s", key->id);
    }
    if (open_route)
        return true;
    long per_minute = (long)tk.cfg.auth_rate_limit_per_minute;
    if (per_minute > 0) {
        char who[96];
        if (key) {
            snprintf(who, sizeof who, "key:%s", key->id);
        } else {
            char *host = NULL;
            ev_uint16_t port;
            evhttp_connection_get_peer(evhttp_request_get_connection(req), &host, &port);
            snprintf(who, sizeof who, "ip:%s", host ? host : "?");
        }
        long burst = (long)tk.cfg.auth_rate_limit_burst;
        uint32_t nodes = tk.cfg.cluster_enabled ? atomic_load(&tk.shm->live_nodes) : 1;
        if (nodes > 1) {
            /* the limit is the cluster's: each of the live nodes (the settler counts them)
             * allows its share, so a client spread over them gets the whole rate, and one
             * pinned to a node its share (docs/OPERATIONS.md, "Several nodes") */
            per_minute = per_minute / nodes > 0 ? per_minute / nodes : 1;
            burst = burst / nodes > 0 ? burst / (long)nodes : 1;
        }
        struct rl_verdict v;
        ratelimit_take(shm_ratelimit(tk.shm), who, per_minute, burst, &v);
        struct evkeyvalq *out = evhttp_request_get_output_headers(req);
        char num[32];
        /* Limit: the bucket (what may be sent at once); it refills at per_minute */
        snprintf(num, sizeof num, "%ld", burst);
        evhttp_add_header(out, "X-RateLimit-Limit", num);
        snprintf(num, sizeof num, "%ld;w=60", per_minute);
        evhttp_add_header(out, "X-RateLimit-Policy", num);
        snprintf(num, sizeof num, "%ld", v.remaining);
        evhttp_add_header(out, "X-RateLimit-Remaining", num);
        snprintf(num, sizeof num, "%ld", v.reset_s);
        evhttp_add_header(out, "X-RateLimit-Reset", num);
        if (!v.allowed) {
            snprintf(num, sizeof num, "%ld", v.retry_after_s);
            evhttp_add_header(out, "Retry-After", num);
            reply_error(req, 429, corr, "Rate limit exceeded; slow down");
            return false;
        }
    }
    if (auth_enabled() && !key) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                          "Bearer realm=\"takod\"");
        reply_error(req, 401, corr,
                    k ? "Invalid API key" : "Missing API key (X-API-Key or Authorization: Bearer)");
        return false;
    }
    return true;
}
