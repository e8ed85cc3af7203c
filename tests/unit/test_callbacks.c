/*
 * test_callbacks.c — what a callback_url may reach (issue #15 item 11): the address
 * classification used at connect time, and the submit-time URL check.
 */
#include "tako/callbacks.h"
#include "tk_test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static bool global(const char *ip)
{
    if (strchr(ip, ':')) {
        struct sockaddr_in6 a = {.sin6_family = AF_INET6};
        TK_ASSERT_EQ(inet_pton(AF_INET6, ip, &a.sin6_addr), 1);
        return callbacks_addr_global((const struct sockaddr *)&a);
    }
    struct sockaddr_in a = {.sin_family = AF_INET};
    TK_ASSERT_EQ(inet_pton(AF_INET, ip, &a.sin_addr), 1);
    return callbacks_addr_global((const struct sockaddr *)&a);
}

TK_TEST(internal_addresses_are_not_global)
{
    static const char *const internal[] = {"0.0.0.0",
                                           "0.1.2.3",
                                           "10.0.0.1",
                                           "10.255.255.255",
                                           "100.64.0.1",
                                           "100.127.255.254",
                                           "127.0.0.1",
                                           "127.255.255.254",
                                           "169.254.169.254",
                                           "172.16.0.1",
                                           "172.31.255.255",
                                           "192.0.0.8",
                                           "192.0.2.1",
                                           "192.88.99.1",
                                           "192.168.1.1",
                                           "198.18.0.1",
                                           "198.19.255.255",
                                           "198.51.100.7",
                                           "203.0.113.9",
                                           "224.0.0.1",
                                           "239.255.255.250",
                                           "240.0.0.1",
                                           "255.255.255.255",
                                           "::",
                                           "::1",
                                           "::ffff:127.0.0.1",
                                           "::ffff:10.0.0.1",
                                           "::127.0.0.1",
                                           "64:ff9b::10.0.0.1",
                                           "2002:7f00:1::",
                                           "2002:a9fe:a9fe::1",
                                           "fc00::1",
                                           "fd12:3456::1",
                                           "fe80::1",
                                           "febf::1",
                                           "fec0::1",
                                           "ff02::1",
                                           "ff05::2",
                                           "2001:db8::1",
                                           "2001:0:4136:e378::1",
                                           "100::1",
                                           "::ffff:0.0.0.0",
                                           "4000::1"};
    for (size_t i = 0; i < sizeof internal / sizeof internal[0]; i++)
        if (global(internal[i]))
            TK_FAIL("%s counted as global", internal[i]);
}

TK_TEST(public_addresses_are_global)
{
    static const char *const public[] = {
        "1.1.1.1",         "8.8.8.8",      "93.184.216.34",  "100.63.255.255",   "100.128.0.1",
        "172.15.255.255",  "172.32.0.1",   "192.167.0.1",    "198.17.255.255",   "223.255.255.1",
        "2606:4700::1111", "2a00:1450::1", "::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1"};
    for (size_t i = 0; i < sizeof public / sizeof public[0]; i++)
        if (!global(public[i]))
            TK_FAIL("%s counted as internal", public[i]);
    struct sockaddr sa = {.sa_family = AF_UNIX};
    TK_ASSERT(!callbacks_addr_global(&sa));
}

TK_TEST(url_check_refuses_internal_literals_and_localhost_by_default)
{
    static const char *const refused[] = {"http://127.0.0.1/",
                                          "http://127.1/",
                                          "http://2130706433/",
                                          "http://0x7f.0.0.1:80/",
                                          "http://017700000001/",
                                          "http://0/",
                                          "http://localhost/",
                                          "http://LocalHost.:8080/",
                                          "http://a.b.localhost/",
                                          "http://ip6-localhost/",
                                          "http://[::1]:9/",
                                          "http://[::ffff:7f00:1]/",
                                          "http://[fe80::1%25eth0]/",
                                          "https://10.0.0.1/x?y",
                                          "http://user:pw@192.168.0.1/",
                                          "http://169.254.169.254/latest/meta-data/"};
    char why[512];
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        why[0] = '\0';
        if (callbacks_url_check(refused[i], false, why, sizeof why) != -EINVAL)
            TK_FAIL("%s accepted", refused[i]);
        TK_ASSERT(strstr(why, "callbacks.allow_private_addresses") != NULL);
        /* the operator's switch lets all of them through */
        if (callbacks_url_check(refused[i], true, why, sizeof why) != 0)
            TK_FAIL("%s refused with allow_private: %s", refused[i], why);
    }
}

TK_TEST(url_check_takes_public_urls_and_refuses_malformed_ones)
{
    char why[512];
    static const char *const ok[] = {
        "http://example.com/hook", "https://hooks.example.org:8443/a?b=c", "http://93.184.216.34/",
        "http://[2606:4700::1111]/x", "http://localhost.example.com/"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (callbacks_url_check(ok[i], false, why, sizeof why) != 0)
            TK_FAIL("%s refused: %s", ok[i], why);
    static const char *const bad[] = {"",        "ftp://x/y",   "not a url",
                                      "http://", "http://a b/", "HTTP://example.com/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (callbacks_url_check(bad[i], true, why, sizeof why) != -EINVAL)
            TK_FAIL("\"%s\" accepted", bad[i]);
    char long_url[2100] = "http://example.com/";
    memset(long_url + strlen(long_url), 'a', sizeof long_url - strlen(long_url) - 1);
    long_url[sizeof long_url - 1] = '\0';
    TK_ASSERT_EQ(callbacks_url_check(long_url, true, why, sizeof why), -EINVAL);
}

int main(int argc, char **argv)
{
    return tk_test_main(argc, argv);
}
