/*
 * callbacks.c — see callbacks.h. What a callback URL may reach; the delivery itself is
 * the callbacks process's (workers/deliverer.c).
 */
#include "tako/callbacks.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static bool v4_global(uint32_t a) /* host byte order */
{
    static const struct {
        uint32_t net;
        int bits;
    } deny[] = {
        {0x00000000u, 8},  /* 0.0.0.0/8 "this network", unspecified */
        {0x0a000000u, 8},  /* 10/8 private */
        {0x64400000u, 10}, /* 100.64/10 carrier-grade NAT */
        {0x7f000000u, 8},  /* 127/8 loopback */
        {0xa9fe0000u, 16}, /* 169.254/16 link-local (cloud metadata) */
        {0xac100000u, 12}, /* 172.16/12 private */
        {0xc0000000u, 24}, /* 192.0.0/24 protocol assignments */
        {0xc0000200u, 24}, /* 192.0.2/24 documentation */
        {0xc0586300u, 24}, /* 192.88.99/24 6to4 relay anycast */
        {0xc0a80000u, 16}, /* 192.168/16 private */
        {0xc6120000u, 15}, /* 198.18/15 benchmarking */
        {0xc6336400u, 24}, /* 198.51.100/24 documentation */
        {0xcb007100u, 24}, /* 203.0.113/24 documentation */
        {0xe0000000u, 4},  /* 224/4 multicast */
        {0xf0000000u, 4},  /* 240/4 reserved, and the broadcast address */
    };
    for (size_t i = 0; i < sizeof deny / sizeof deny[0]; i++) {
        uint32_t mask = deny[i].bits ? ~0u << (32 - deny[i].bits) : 0;
        if ((a & mask) == deny[i].net)
            return false;
    }
    return true;
}

static uint32_t be32_at(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static bool v6_global(const uint8_t a[16])
{
    static const uint8_t zero[12];
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b};
    if (!memcmp(a, zero, 12)) /* ::, ::1, and IPv4-compatible ::a.b.c.d */
        return be32_at(a + 12) > 1 && v4_global(be32_at(a + 12));
    if (!memcmp(a, mapped, 12) || !memcmp(a, nat64, 12)) /* ::ffff:a.b.c.d, 64:ff9b::a.b.c.d */
        return v4_global(be32_at(a + 12));
    if (a[0] == 0x20 && a[1] == 0x02) /* 6to4 2002:AABB:CCDD::/48 */
        return v4_global(be32_at(a + 2));
    if (a[0] == 0xff) /* multicast */
        return false;
    if ((a[0] & 0xfe) == 0xfc) /* fc00::/7 unique-local */
        return false;
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) /* fe80::/10 link-local */
        return false;
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0) /* fec0::/10 site-local (deprecated) */
        return false;
    if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8) /* 2001:db8::/32 */
        return false;
    if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0 && a[3] == 0) /* 2001::/32 Teredo */
        return false;
    if (a[0] == 0x01 && a[1] == 0 && !a[2] && !a[3] && !a[4] && !a[5] && !a[6] && !a[7])
        return false;          /* 100::/64 discard */
    if ((a[0] & 0xe0) != 0x20) /* outside 2000::/3, the global unicast space */
        return false;
    return true;
}

bool callbacks_addr_global(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        return v4_global(ntohl(in->sin_addr.s_addr));
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        return v6_global(in6->sin6_addr.s6_addr);
    }
    return false; /* unix sockets and the rest: never */
}

/* A host that names this machine or its loopback by convention (RFC 6761). */
static bool localhost_name(const char *host)
{
    char h[256];
    size_t n = strlen(host);
    if (n >= sizeof h)
        return false;
    for (size_t i = 0; i <= n; i++)
        h[i] = (char)tolower((unsigned char)host[i]);
    while (n > 0 && h[n - 1] == '.')
        h[--n] = '\0';
    if (n == 0)
        return true;
    static const char *const names[] = {"localhost", "localhost.localdomain", "ip6-localhost",
                                        "ip6-loopback"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(h, names[i]))
            return true;
    return n > 10 && !strcmp(h + n - 10, ".localhost");
}

/* Is host (as libcurl's URL parser returns it) a literal address that is not global? */
static bool literal_internal(const char *host, char *norm, size_t normlen)
{
    snprintf(norm, normlen, "%s", host);
    if (host[0] == '[') { /* [v6] or [v6%zone] */
        char a[128];
        size_t n = strcspn(host + 1, "]%");
        if (n == 0 || n >= sizeof a)
            return true; /* not an address we can judge: refuse */
        memcpy(a, host + 1, n);
        a[n] = '\0';
        struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
        if (inet_pton(AF_INET6, a, &in6.sin6_addr) != 1)
            return true;
        return !callbacks_addr_global((const struct sockaddr *)&in6);
    }
    /* inet_aton takes the historic forms too (127.1, 0x7f.0.0.1, 2130706433), which
     * resolvers also map to addresses */
    struct sockaddr_in in = {.sin_family = AF_INET};
    if (inet_aton(host, &in.sin_addr)) {
        inet_ntop(AF_INET, &in.sin_addr, norm, (socklen_t)normlen);
        return !callbacks_addr_global((const struct sockaddr *)&in);
    }
    return false;
}

int callbacks_url_check(const char *url, bool allow_private, char *why, size_t whylen)
{
    size_t n = strlen(url);
    if (n == 0 || n > 2048 || (strncmp(url, "http://", 7) && strncmp(url, "https://", 8))) {
        snprintf(why, whylen,
                 "callback_url must be an http:// or https:// URL of at most 2048 "
                 "bytes");
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)url[i] <= ' ' || url[i] == 0x7f) {
            snprintf(why, whylen, "callback_url must not contain blanks or control characters");
            return -EINVAL;
        }
    CURLU *u = curl_url();
    char *host = NULL;
    int rc = 0;
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !host[0]) {
        snprintf(why, whylen, "callback_url is not a valid http(s) URL with a host");
        rc = -EINVAL;
    } else if (!allow_private) {
        char norm[256];
        if (localhost_name(host) || literal_internal(host, norm, sizeof norm)) {
            snprintf(why, whylen,
                     "callback_url's host %.200s is a loopback, link-local, private or other "
                     "non-global address; callbacks may only reach public addresses "
                     "(callbacks.allow_private_addresses)",
                     host);
            rc = -EINVAL;
        }
    }
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}
