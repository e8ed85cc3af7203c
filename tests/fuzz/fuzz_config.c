/*
 * fuzz_config — the configuration file parser and its -o overrides (common/config.c,
 * config_load: lines, sections, [job_type.NAME], values of every type, the cross-key
 * rules), then printing and copying what was accepted. Input: the file's text; after a
 * line "--" (if any), each further line is one -o override.
 */
#include "tako/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64]; /* the file config_load reads */

static void remove_path(void)
{
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/tako-fuzz-config.%d", (int)getpid());
        atexit(remove_path);
    }
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    size_t flen = size;
    char *ov[16];
    size_t nov = 0;
    char *sep = memmem(text, size, "\n--\n", 4);
    if (sep) {
        flen = (size_t)(sep - text) + 1;
        for (char *p = sep + 4; p && *p && nov < 16;) {
            ov[nov++] = p;
            p = strchr(p, '\n');
            if (p)
                *p++ = '\0';
        }
    }
    FILE *f = fopen(path, "we");
    if (!f) {
        free(text);
        return 0;
    }
    fwrite(text, 1, flen, f);
    fclose(f);
    struct tk_config cfg;
    char err[512];
    if (config_load(&cfg, path, ov, nov, err, sizeof err) == 0) {
        FILE *null = fopen("/dev/null", "we");
        if (null) {
            config_print(&cfg, null);
            fclose(null);
        }
        struct tk_config copy;
        if (config_copy(&copy, &cfg) == 0) {
            char diff[256];
            config_diff_noreload(&cfg, &copy, diff, sizeof diff);
            config_free(&copy);
        }
        config_free(&cfg);
    } else if (!err[0]) {
        __builtin_trap(); /* every refusal says why */
    }
    free(text);
    return 0;
}
