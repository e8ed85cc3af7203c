/*
 * config.c — parse, validate, print and diff takod's configuration.
 *
 * Everything derives from TK_CONFIG_TABLE (config.h). The X-macro is expanded once into
 * cf_keys[], one descriptor per key (name, type, default text, bounds, field offset), and
 * the code below only walks that array. A value is always text first (the table default,
 * a file line, an -o override) and goes through the same cf_set(), so all three are
 * validated the same way.
 *
 * Loading is: defaults, then the file, then the overrides in order, then the cross-key
 * rules and the derived fields (listen_host/port, pidfile_path). The first error stops
 * it, with a one-line reason that says where the bad value came from:
 *   FILE:LINE: reason      a line of the file
 *   -o section.key: reason an override
 *   FILE: reason           a cross-key rule over values from the file
 *
 * File syntax (INI-like): [section] headers, `key = value`, '#' or ';' comments on their
 * own line or after whitespace at the end of a line, values optionally double-quoted
 * ("..." with \" and \\ escapes) to keep surrounding spaces or a '#'.
 */
#include "tako/config.h"
#include "tako/jobtypes.h"
#include "tako/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

enum cf_type { CF_T_STR, CF_T_INT, CF_T_SIZE, CF_T_DOUBLE, CF_T_BOOL, CF_T_ENUM };

struct cf_key {
    const char *section;
    const char *key;
    const char *name; /* "section.key" */
    enum cf_type type;
    const char *def;     /* default, as text */
    int64_t imin, imax;  /* INT, SIZE bounds */
    double dmin, dmax;   /* DOUBLE bounds */
    const char *choices; /* ENUM: "a|b|c" */
    unsigned flags;
    const char *help;
    size_t off; /* of the field in struct tk_config */
};

/* The min/max columns mean different things per type: pick what each type uses. */
#define CF_I_STR(v)    0
#define CF_I_INT(v)    (v)
#define CF_I_SIZE(v)   (v)
#define CF_I_DOUBLE(v) 0
#define CF_I_BOOL(v)   0
#define CF_I_ENUM(v)   0
#define CF_D_STR(v)    0.0
#define CF_D_INT(v)    0.0
#define CF_D_SIZE(v)   0.0
#define CF_D_DOUBLE(v) (v)
#define CF_D_BOOL(v)   0.0
#define CF_D_ENUM(v)   0.0
#define CF_C_STR(v)    NULL
#define CF_C_INT(v)    NULL
#define CF_C_SIZE(v)   NULL
#define CF_C_DOUBLE(v) NULL
#define CF_C_BOOL(v)   NULL
#define CF_C_ENUM(v)   (v)

/* One descriptor; the two tables below differ in section, flags and the struct. */
#define CF_DESC(sec, k, name, type, def, min, max, flags, help, off)                               \
    {                                                                                              \
        sec, k, name, CF_T_##type, def, CF_I_##type(min), CF_I_##type(max), CF_D_##type(min),      \
            CF_D_##type(max), CF_C_##type(min), flags, help, off                                   \
    }

static const struct cf_key cf_keys[] = {
#define CF_ROW(sec, k, type, def, min, max, flags, help)                                           \
    CF_DESC(#sec, #k, #sec "." #k, type, def, min, max, flags, help,                               \
            offsetof(struct tk_config, sec##_##k)),
    TK_CONFIG_TABLE(CF_ROW)
#undef CF_ROW
};

/* The keys of a [job_type.NAME] section: the same descriptors, offsets into the type. */
static const struct cf_key cf_jt_keys[] = {
#define CF_JT_ROW(k, type, def, min, max, help)                                                    \
    CF_DESC("job_type", #k, "job_type." #k, type, def, min, max, CF_RELOAD, help,                  \
            offsetof(struct tk_job_type, k)),
    TK_JOB_TYPE_TABLE(CF_JT_ROW)
#undef CF_JT_ROW
};
#define CF_JT_NKEYS (sizeof cf_jt_keys / sizeof cf_jt_keys[0])

/* Tako VM's built-in job types, over the table defaults. `default` is cf_finish's. */
static const struct {
    const char *name, *requirements, *preload, *memory, *cpus, *timeout;
} cf_builtin_types[] = {
    {"data-processing", "pandas, numpy", "pandas, numpy", "1g", "2", "60"},
    {"ml-inference", "numpy, scikit-learn", "numpy, sklearn", "2g", "2", "120"},
};

/* Index of every key, for the cross-key rules: CF_server_listen, ... */
enum {
#define CF_IDX(sec, k, ...) CF_##sec##_##k,
    TK_CONFIG_TABLE(CF_IDX)
#undef CF_IDX
        CF_NKEYS
};

/* Where each key's value came from, to say where a cross-key error is. */
#define CF_FROM_DEFAULT  0
#define CF_FROM_OVERRIDE (-1) /* > 0: line of the file */

struct cf_ctx {
    const char *path; /* NULL: no file */
    struct tk_config *cfg;
    int from[CF_NKEYS];
    int jt;                            /* the [job_type.NAME] being read, or -1 */
    uint32_t jt_set[TK_MAX_JOB_TYPES]; /* keys the file set, per type: duplicates */
    int jt_line[TK_MAX_JOB_TYPES];     /* its header's line (0: not in the file) */
    char *err;
    size_t errlen;
};

static void cf_err(struct cf_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cf_err(struct cf_ctx *c, const char *fmt, ...)
{
    if (!c->err || !c->errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
}

static void *cf_field(struct tk_config *cfg, const struct cf_key *k)
{
    return (char *)cfg + k->off;
}

static const void *cf_cfield(const struct tk_config *cfg, const struct cf_key *k)
{
    return (const char *)cfg + k->off;
}

static const struct cf_key *cf_find(const char *section, size_t seclen, const char *key,
                                    size_t keylen)
{
    for (size_t i = 0; i < CF_NKEYS; i++) {
        const struct cf_key *k = &cf_keys[i];
        if (strlen(k->section) == seclen && !memcmp(k->section, section, seclen) &&
            strlen(k->key) == keylen && !memcmp(k->key, key, keylen))
            return k;
    }
    return NULL;
}

/* The table's own copy of a section name, or NULL if there is no such section. */
static const char *cf_section(const char *name, size_t len)
{
    for (size_t i = 0; i < CF_NKEYS; i++)
        if (strlen(cf_keys[i].section) == len && !memcmp(cf_keys[i].section, name, len))
            return cf_keys[i].section;
    return NULL;
}

static bool cf_is_job_type(const char *section, size_t len)
{
    return len >= 8 && !memcmp(section, "job_type", 8) && (len == 8 || section[8] == '.');
}

/* What `*section` points at while a [job_type.NAME] section is read (c->jt says which). */
static const char cf_jt_section[] = "job_type";

static const struct cf_key *cf_jt_find(const char *key, size_t keylen)
{
    for (size_t i = 0; i < CF_JT_NKEYS; i++)
        if (strlen(cf_jt_keys[i].key) == keylen && !memcmp(cf_jt_keys[i].key, key, keylen))
            return &cf_jt_keys[i];
    return NULL;
}

/* ---- Scalar parsers: text -> value, or -EINVAL (malformed) / -ERANGE (overflow). ---- */

static int cf_parse_int(const char *s, int64_t *out)
{
    const char *d = (*s == '+' || *s == '-') ? s + 1 : s;
    if (!isdigit((unsigned char)*d)) /* strtoll would skip spaces and accept "" */
        return -EINVAL;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end)
        return -EINVAL;
    if (errno == ERANGE)
        return -ERANGE;
    *out = v;
    return 0;
}

/* Digits, then an optional k/m/g/t (powers of 1024), then an optional b: 512, 64k, 64kb. */
static int cf_parse_size(const char *s, int64_t *out)
{
    const char *p = s;
    uint64_t v = 0;
    if (!isdigit((unsigned char)*p))
        return -EINVAL;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > ((uint64_t)INT64_MAX - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    static const char units[] = "kmgt";
    const char *u = *p ? strchr(units, tolower((unsigned char)*p)) : NULL;
    int shift = u ? 10 * (int)(u - units + 1) : 0;
    if (u)
        p++;
    if (*p == 'b' || *p == 'B')
        p++;
    if (*p)
        return -EINVAL;
    if (v > ((uint64_t)INT64_MAX >> shift))
        return -ERANGE;
    *out = (int64_t)(v << shift);
    return 0;
}

static int cf_parse_double(const char *s, double *out)
{
    if (!*s || isspace((unsigned char)*s))
        return -EINVAL;
    char *end;
    double v = strtod(s, &end);
    if (*end || !isfinite(v))
        return -EINVAL;
    *out = v;
    return 0;
}

static int cf_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (!strcasecmp(s, yes[i]) || !strcasecmp(s, no[i])) {
            *out = !strcasecmp(s, yes[i]);
            return 0;
        }
    }
    return -EINVAL;
}

static int cf_parse_enum(const char *choices, const char *s, int *out)
{
    size_t n = strlen(s);
    const char *p = choices;
    for (int i = 0;; i++) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncasecmp(p, s, n)) {
            *out = i;
            return 0;
        }
        if (!bar)
            return -EINVAL;
        p = bar + 1;
    }
}

/* Name of choice `idx` of "a|b|c" into buf, or NULL if there is no such choice. */
static const char *cf_enum_name(const char *choices, int idx, char *buf, size_t len)
{
    const char *p = choices;
    for (int i = 0; i < idx && p; i++)
        p = strchr(p, '|') ? strchr(p, '|') + 1 : NULL;
    if (!p || idx < 0)
        return NULL;
    const char *bar = strchr(p, '|');
    snprintf(buf, len, "%.*s", (int)(bar ? (size_t)(bar - p) : strlen(p)), p);
    return buf;
}

/* A value's C storage, as big as the largest field type. */
union cf_value {
    char *s;
    int64_t i;
    double d;
    bool b;
    int e;
};

/*
 * Parse `text` for key `k` into `v` (a heap copy for STR) and check its bounds. On error
 * writes the reason, without the key's name, into `why`: the caller says where it was.
 */
static int cf_parse(const struct cf_key *k, const char *text, union cf_value *v, char *why,
                    size_t wl)
{
    int rc;
    switch (k->type) {
    case CF_T_STR:
        /* Control characters could not be printed back into a one-line value. */
        for (const char *p = text; *p; p++)
            if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f) {
                snprintf(why, wl, "\"%.80s\" contains a control character", text);
                return -EINVAL;
            }
        if (!(v->s = strdup(text))) {
            snprintf(why, wl, "out of memory");
            return -ENOMEM;
        }
        return 0;
    case CF_T_INT:
    case CF_T_SIZE:
        rc = k->type == CF_T_INT ? cf_parse_int(text, &v->i) : cf_parse_size(text, &v->i);
        if (rc == -ERANGE) {
            snprintf(why, wl, "%.80s is out of range", text);
            return -EINVAL;
        }
        if (rc) {
            if (k->type == CF_T_INT)
                snprintf(why, wl, "\"%.80s\" is not an integer", text);
            else
                snprintf(why, wl, "\"%.80s\" is not a size (bytes, or with a k/m/g/t suffix)",
                         text);
            return -EINVAL;
        }
        if (v->i < k->imin) {
            snprintf(why, wl, "%.80s is below the minimum %" PRId64, text, k->imin);
            return -EINVAL;
        }
        if (v->i > k->imax) {
            snprintf(why, wl, "%.80s is above the maximum %" PRId64, text, k->imax);
            return -EINVAL;
        }
        return 0;
    case CF_T_DOUBLE:
        if (cf_parse_double(text, &v->d)) {
            snprintf(why, wl, "\"%.80s\" is not a finite number", text);
            return -EINVAL;
        }
        if (v->d < k->dmin) {
            snprintf(why, wl, "%.80s is below the minimum %g", text, k->dmin);
            return -EINVAL;
        }
        if (v->d > k->dmax) {
            snprintf(why, wl, "%.80s is above the maximum %g", text, k->dmax);
            return -EINVAL;
        }
        return 0;
    case CF_T_BOOL:
        if (cf_parse_bool(text, &v->b)) {
            snprintf(why, wl, "\"%.80s\" is not a boolean (true/false, yes/no, on/off, 1/0)", text);
            return -EINVAL;
        }
        return 0;
    case CF_T_ENUM:
        if (cf_parse_enum(k->choices, text, &v->e)) {
            snprintf(why, wl, "\"%.80s\" is not one of %s", text, k->choices);
            return -EINVAL;
        }
        return 0;
    }
    snprintf(why, wl, "bad type");
    return -EINVAL;
}

/* Parse and store into the struct at `base` (a tk_config, or a tk_job_type for the
 * job_type keys): the old value is replaced only if the new one is valid. */
static int cf_set_at(void *base, const struct cf_key *k, const char *text, char *why, size_t wl)
{
    union cf_value v;
    int rc = cf_parse(k, text, &v, why, wl);
    if (rc)
        return rc;
    void *f = (char *)base + k->off;
    switch (k->type) {
    case CF_T_STR:
        free(*(char **)f);
        *(char **)f = v.s;
        break;
    case CF_T_INT:
    case CF_T_SIZE:
        *(int64_t *)f = v.i;
        break;
    case CF_T_DOUBLE:
        *(double *)f = v.d;
        break;
    case CF_T_BOOL:
        *(bool *)f = v.b;
        break;
    case CF_T_ENUM:
        *(int *)f = v.e;
        break;
    }
    return 0;
}

static int cf_set(struct tk_config *cfg, const struct cf_key *k, const char *text, char *why,
                  size_t wl)
{
    return cf_set_at(cfg, k, text, why, wl);
}

/* ---- Job types. ---- */

static void cf_jt_free(struct tk_job_type *t)
{
    for (size_t i = 0; i < CF_JT_NKEYS; i++)
        if (cf_jt_keys[i].type == CF_T_STR)
            free(*(char **)((char *)t + cf_jt_keys[i].off));
    memset(t, 0, sizeof *t);
}

/* A job type name: [a-z0-9][a-z0-9_-]*, at most TK_JOB_TYPE_NAME_MAX (a Docker repository
 * name once prefixed with tako-vm-). */
static bool cf_jt_name_ok(const char *name, size_t len)
{
    if (!len || len > TK_JOB_TYPE_NAME_MAX ||
        !(islower((unsigned char)name[0]) || isdigit((unsigned char)name[0])))
        return false;
    for (size_t i = 0; i < len; i++)
        if (!islower((unsigned char)name[i]) && !isdigit((unsigned char)name[i]) &&
            name[i] != '-' && name[i] != '_')
            return false;
    return true;
}

/* Append a job type with the table defaults. Its index, or -errno with `why`. */
static int cf_jt_add(struct tk_config *cfg, const char *name, size_t len, char *why, size_t wl)
{
    if (cfg->n_job_types >= TK_MAX_JOB_TYPES) {
        snprintf(why, wl, "more than %d job types", TK_MAX_JOB_TYPES);
        return -ENOSPC;
    }
    struct tk_job_type *t = &cfg->job_types[cfg->n_job_types];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%.*s", (int)len, name);
    for (size_t i = 0; i < CF_JT_NKEYS; i++) {
        int rc = cf_set_at(t, &cf_jt_keys[i], cf_jt_keys[i].def, why, wl);
        if (rc) {
            cf_jt_free(t);
            return rc;
        }
    }
    return (int)cfg->n_job_types++;
}

/* The index of job type `name` (created when new), or -errno with `why`. */
static int cf_jt_get(struct tk_config *cfg, const char *name, size_t len, char *why, size_t wl)
{
    if (len == 7 && !memcmp(name, "default", 7)) {
        snprintf(why, wl,
                 "the default job type is not configured here: it is docker.image "
                 "with the [limits] section");
        return -EINVAL;
    }
    if (!cf_jt_name_ok(name, len)) {
        snprintf(why, wl,
                 "job type name \"%.*s\" must be 1 to %d of [a-z0-9_-], starting "
                 "with a letter or digit",
                 (int)(len > 80 ? 80 : len), name, TK_JOB_TYPE_NAME_MAX);
        return -EINVAL;
    }
    for (size_t i = 0; i < cfg->n_job_types; i++)
        if (strlen(cfg->job_types[i].name) == len && !memcmp(cfg->job_types[i].name, name, len))
            return (int)i;
    return cf_jt_add(cfg, name, len, why, wl);
}

/* `default` (filled in by cf_finish) and Tako VM's other built-ins. */
static int cf_jt_builtins(struct tk_config *cfg, char *why, size_t wl)
{
    int rc = cf_jt_add(cfg, "default", 7, why, wl);
    if (rc < 0)
        return rc;
    cfg->job_types[rc].builtin = true;
    for (size_t b = 0; b < TK_ARRAY_LEN(cf_builtin_types); b++) {
        int i = cf_jt_add(cfg, cf_builtin_types[b].name, strlen(cf_builtin_types[b].name), why, wl);
        if (i < 0)
            return i;
        struct tk_job_type *t = &cfg->job_types[i];
        t->builtin = true;
        const char *vals[][2] = {{"requirements", cf_builtin_types[b].requirements},
                                 {"preload", cf_builtin_types[b].preload},
                                 {"memory_limit", cf_builtin_types[b].memory},
                                 {"cpu_limit", cf_builtin_types[b].cpus},
                                 {"timeout", cf_builtin_types[b].timeout}};
        for (size_t v = 0; v < TK_ARRAY_LEN(vals); v++)
            if ((rc =
                     cf_set_at(t, cf_jt_find(vals[v][0], strlen(vals[v][0])), vals[v][1], why, wl)))
                return rc;
    }
    return 0;
}

const struct tk_job_type *config_job_type(const struct tk_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_job_types; i++)
        if (!strcmp(cfg->job_types[i].name, name))
            return &cfg->job_types[i];
    return NULL;
}

/* ---- The file. ---- */

static char *cf_trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static bool cf_comment_or_end(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return !*p || *p == '#' || *p == ';';
}

/* "[name]" at s: set *section, or explain. */
static int cf_line_section(struct cf_ctx *c, char *s, int line, const char **section)
{
    char *close = strchr(s, ']');
    if (!close) {
        cf_err(c, "%s:%d: missing ']' in section header \"%.80s\"", c->path, line, s);
        return -EINVAL;
    }
    *close = '\0';
    char *name = cf_trim(s + 1);
    if (!cf_comment_or_end(close + 1)) {
        cf_err(c, "%s:%d: unexpected text after [%.80s]", c->path, line, name);
        return -EINVAL;
    }
    c->jt = -1;
    if (cf_is_job_type(name, strlen(name))) {
        char why[256];
        int i = strlen(name) > 9 ? cf_jt_get(c->cfg, name + 9, strlen(name + 9), why, sizeof why)
                                 : (snprintf(why, sizeof why, "expected [job_type.NAME]"), -EINVAL);
        if (i < 0) {
            cf_err(c, "%s:%d: [%.80s]: %s", c->path, line, name, why);
            return i;
        }
        if (c->jt_line[i]) {
            cf_err(c, "%s:%d: duplicate section [%.80s] (first on line %d)", c->path, line, name,
                   c->jt_line[i]);
            return -EINVAL;
        }
        c->jt_line[i] = line;
        c->jt = i;
        *section = cf_jt_section;
        return 0;
    }
    if (!(*section = cf_section(name, strlen(name)))) {
        cf_err(c, "%s:%d: [%.80s] is not a known section", c->path, line, name);
        return -EINVAL;
    }
    return 0;
}

/*
 * The value after '=' (leading blanks skipped), unquoted in place. Quoted: \" and \\ are
 * the only escapes, and only a comment may follow. Bare: a '#' or ';' that starts the
 * value or follows a blank begins a comment; trailing blanks are dropped.
 */
static const char *cf_value(char *v, char *why, size_t wl)
{
    if (*v == '"') {
        char *r = v + 1, *w = v;
        for (;; r++) {
            if (!*r) {
                snprintf(why, wl, "unterminated quoted string");
                return NULL;
            }
            if (*r == '"')
                break;
            if (*r == '\\') {
                if (r[1] != '"' && r[1] != '\\') {
                    snprintf(why, wl, "unknown escape \\%c in quoted string (only \\\" and \\\\)",
                             r[1] ? r[1] : ' ');
                    return NULL;
                }
                r++;
            }
            *w++ = *r;
        }
        *w = '\0';
        if (!cf_comment_or_end(r + 1)) {
            snprintf(why, wl, "unexpected text after the closing quote");
            return NULL;
        }
        return v;
    }
    for (char *p = v; *p; p++)
        if ((*p == '#' || *p == ';') && (p == v || p[-1] == ' ' || p[-1] == '\t')) {
            *p = '\0';
            break;
        }
    return cf_trim(v);
}

static int cf_line(struct cf_ctx *c, struct tk_config *cfg, char *s, int line, const char **section)
{
    char why[256];
    if (line == 1 && !memcmp(s, "\xef\xbb\xbf", 3)) /* UTF-8 byte order mark */
        s += 3;
    s = cf_trim(s);
    if (!*s || *s == '#' || *s == ';')
        return 0;
    if (*s == '[')
        return cf_line_section(c, s, line, section);

    char *eq = strchr(s, '=');
    if (!eq) {
        cf_err(c, "%s:%d: missing '=' in \"%.80s\" (expected key = value)", c->path, line, s);
        return -EINVAL;
    }
    *eq = '\0';
    char *key = cf_trim(s);
    if (!*key) {
        cf_err(c, "%s:%d: missing key before '='", c->path, line);
        return -EINVAL;
    }
    if (!*section) {
        cf_err(c, "%s:%d: key %.80s is outside any [section]", c->path, line, key);
        return -EINVAL;
    }
    if (*section == cf_jt_section) {
        const struct cf_key *k = cf_jt_find(key, strlen(key));
        struct tk_job_type *t = &cfg->job_types[c->jt];
        if (!k) {
            cf_err(c, "%s:%d: unknown key job_type.%s.%.80s", c->path, line, t->name, key);
            return -EINVAL;
        }
        uint32_t bit = 1u << (k - cf_jt_keys);
        if (c->jt_set[c->jt] & bit) {
            cf_err(c, "%s:%d: duplicate key job_type.%s.%s", c->path, line, t->name, k->key);
            return -EINVAL;
        }
        const char *v = cf_value(eq + 1 + strspn(eq + 1, " \t"), why, sizeof why);
        int rc = v ? cf_set_at(t, k, v, why, sizeof why) : -EINVAL;
        if (rc) {
            cf_err(c, "%s:%d: job_type.%s.%s: %s", c->path, line, t->name, k->key, why);
            return rc;
        }
        c->jt_set[c->jt] |= bit;
        return 0;
    }
    const struct cf_key *k = cf_find(*section, strlen(*section), key, strlen(key));
    if (!k) {
        cf_err(c, "%s:%d: unknown key %s.%.80s", c->path, line, *section, key);
        return -EINVAL;
    }
    int idx = (int)(k - cf_keys);
    if (c->from[idx] > 0) {
        cf_err(c, "%s:%d: duplicate key %s (first set on line %d)", c->path, line, k->name,
               c->from[idx]);
        return -EINVAL;
    }
    const char *v = cf_value(eq + 1 + strspn(eq + 1, " \t"), why, sizeof why);
    int rc = v ? cf_set(cfg, k, v, why, sizeof why) : -EINVAL;
    if (rc) {
        cf_err(c, "%s:%d: %s: %s", c->path, line, k->name, why);
        return rc;
    }
    c->from[idx] = line;
    return 0;
}

static int cf_load_file(struct cf_ctx *c, struct tk_config *cfg)
{
    FILE *f = fopen(c->path, "re");
    if (!f) {
        int e = errno;
        cf_err(c, "%s: %s", c->path, strerror(e));
        return -e;
    }
    const char *section = NULL; /* points into cf_keys */
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n;
    int line = 0, rc = 0;
    while ((errno = 0, n = getline(&buf, &cap, f)) >= 0) {
        line++;
        if (strlen(buf) != (size_t)n) {
            cf_err(c, "%s:%d: NUL byte in line", c->path, line);
            rc = -EINVAL;
            break;
        }
        if ((rc = cf_line(c, cfg, buf, line, &section)))
            break;
    }
    if (!rc && (ferror(f) || errno == ENOMEM)) {
        rc = ferror(f) ? -EIO : -ENOMEM;
        cf_err(c, "%s:%d: %s", c->path, line + 1, strerror(-rc));
    }
    free(buf);
    fclose(f);
    return rc;
}

/* ---- Overrides: "section.key=value", the value taken verbatim. ---- */

static int cf_override(struct cf_ctx *c, struct tk_config *cfg, const char *o)
{
    char why[256];
    const char *eq = strchr(o, '=');
    const char *name = o, *end = eq ? eq : o + strlen(o);
    while (name < end && isspace((unsigned char)*name))
        name++;
    while (end > name && isspace((unsigned char)end[-1]))
        end--;
    int nlen = (int)(end - name);
    const char *dot = NULL;
    for (const char *p = name; p < end; p++)
        if (*p == '.')
            dot = p; /* the last one: a section may contain dots (job_type.NAME) */
    if (!eq || !dot || dot == name || dot + 1 == end) {
        cf_err(c, "-o %.80s: expected section.key=value", o);
        return -EINVAL;
    }
    if (cf_is_job_type(name, (size_t)(dot - name))) {
        /* -o job_type.NAME.key=value */
        int i = dot - name > 9 ? cf_jt_get(cfg, name + 9, (size_t)(dot - name - 9), why, sizeof why)
                               : (snprintf(why, sizeof why, "expected job_type.NAME.key"), -EINVAL);
        const struct cf_key *k = i < 0 ? NULL : cf_jt_find(dot + 1, (size_t)(end - dot - 1));
        if (i >= 0 && !k)
            snprintf(why, sizeof why, "unknown key %.*s", nlen, name);
        int rc = k ? cf_set_at(&cfg->job_types[i], k, eq + 1, why, sizeof why) : -EINVAL;
        if (rc)
            cf_err(c, "-o %.*s: %s", nlen, name, why);
        return rc;
    }
    if (!cf_section(name, (size_t)(dot - name))) {
        cf_err(c, "-o %.*s: [%.*s] is not a known section", nlen, name, (int)(dot - name), name);
        return -EINVAL;
    }
    const struct cf_key *k = cf_find(name, (size_t)(dot - name), dot + 1, (size_t)(end - dot - 1));
    if (!k) {
        cf_err(c, "-o %.*s: unknown key %.*s", nlen, name, nlen, name);
        return -EINVAL;
    }
    int rc = cf_set(cfg, k, eq + 1, why, sizeof why);
    if (rc) {
        cf_err(c, "-o %s: %s", k->name, why);
        return rc;
    }
    c->from[k - cf_keys] = CF_FROM_OVERRIDE;
    return 0;
}

/* ---- Cross-key rules and derived fields. ---- */

/*
 * Report a cross-key rule over keys a and b (a == b: a rule on one key, whose name is
 * then prepended to the reason). Point at an override if one set them, else at the file.
 */
static void cf_rule_err(struct cf_ctx *c, int a, int b, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void cf_rule_err(struct cf_ctx *c, int a, int b, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (c->from[b] == CF_FROM_OVERRIDE)
        cf_err(c, "-o %s: %s", cf_keys[b].name, why);
    else if (c->from[a] == CF_FROM_OVERRIDE)
        cf_err(c, "-o %s: %s", cf_keys[a].name, why);
    else if (a == b)
        cf_err(c, "%s: %s: %s", c->path ? c->path : "(defaults)", cf_keys[a].name, why);
    else
        cf_err(c, "%s: %s", c->path ? c->path : "(defaults)", why);
}

/* A hostname: dot-separated labels of letters, digits, '-' and '_', none starting or
 * ending with '-'. */
static bool cf_hostname_ok(const char *h)
{
    size_t n = strlen(h), label = 0;
    if (!n || n > 253)
        return false;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || h[i] == '.') {
            if (!label || label > 63 || h[i - 1] == '-' || h[i - label] == '-')
                return false;
            label = 0;
        } else if (isalnum((unsigned char)h[i]) || h[i] == '-' || h[i] == '_') {
            label++;
        } else {
            return false;
        }
    }
    return true;
}

/* HOST:PORT, HOST an IPv4 literal, a hostname or a [bracketed IPv6 literal]. */
static int cf_parse_listen(const char *s, char *host, size_t hostlen, int *port, char *why,
                           size_t wl)
{
    const char *h, *hend, *p;
    if (*s == '[') {
        h = s + 1;
        if (!(hend = strchr(h, ']'))) {
            snprintf(why, wl, "\"%.80s\": missing ']' after the IPv6 address", s);
            return -EINVAL;
        }
        if (hend[1] != ':') {
            snprintf(why, wl, "\"%.80s\" has no :PORT", s);
            return -EINVAL;
        }
        p = hend + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon) {
            snprintf(why, wl, "\"%.80s\" has no :PORT", s);
            return -EINVAL;
        }
        if (memchr(s, ':', (size_t)(colon - s))) {
            snprintf(why, wl, "\"%.80s\": put an IPv6 address in brackets, e.g. [::1]:8000", s);
            return -EINVAL;
        }
        h = s;
        hend = colon;
        p = colon + 1;
    }
    size_t hl = (size_t)(hend - h);
    if (!hl || hl >= hostlen) {
        snprintf(why, wl, "\"%.80s\": %s host (use 0.0.0.0 or [::] for every address)", s,
                 hl ? "too long a" : "missing");
        return -EINVAL;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';

    unsigned char addr[16];
    if (*s == '[') {
        if (inet_pton(AF_INET6, host, addr) != 1) {
            snprintf(why, wl, "\"%.80s\" is not a valid IPv6 address", host);
            return -EINVAL;
        }
    } else if (strspn(host, "0123456789.") == hl) { /* looks numeric: must be IPv4 */
        if (inet_pton(AF_INET, host, addr) != 1) {
            snprintf(why, wl, "\"%.80s\" is not a valid IPv4 address", host);
            return -EINVAL;
        }
    } else if (!cf_hostname_ok(host)) {
        snprintf(why, wl, "\"%.80s\" is not a valid hostname", host);
        return -EINVAL;
    }

    size_t pl = strlen(p);
    if (!pl || strspn(p, "0123456789") != pl) {
        snprintf(why, wl, "\"%.80s\": port \"%.16s\" is not a number", s, p);
        return -EINVAL;
    }
    long v = pl > 5 ? 0 : strtol(p, NULL, 10);
    if (v < 1 || v > 65535) {
        snprintf(why, wl, "\"%.80s\": port %.16s is not in 1..65535", s, p);
        return -EINVAL;
    }
    *port = (int)v;
    return 0;
}

/* A decimal uid or gid: (uid_t)-1 is not one. */
static bool cf_parse_id(const char *s, size_t n, uint32_t *out)
{
    uint64_t v = 0;
    if (!n || n > 10)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v >= UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

/* `default` follows docker.image and [limits]; every type is checked. */
static int cf_finish_job_types(struct cf_ctx *c, struct tk_config *cfg)
{
    char why[256];
    struct tk_job_type *d = &cfg->job_types[0];
    d->memory_limit = cfg->limits_memory;
    d->cpu_limit = cfg->limits_cpus;
    d->timeout = cfg->limits_timeout;
    for (size_t i = 0; i < cfg->n_job_types; i++) {
        const struct tk_job_type *t = &cfg->job_types[i];
        int rc = 0;
        const struct cf_key *tk_timeout = cf_jt_find("timeout", 7);
        if (t->builtin && t->timeout > cfg->limits_max_timeout &&
            !(c->jt_set[i] & (1u << (tk_timeout - cf_jt_keys))))
            cfg->job_types[i].timeout = cfg->limits_max_timeout; /* a built-in's own default */
        if (t->timeout > cfg->limits_max_timeout) {
            snprintf(why, sizeof why, "timeout %" PRId64 " is above limits.max_timeout %" PRId64,
                     t->timeout, cfg->limits_max_timeout);
            rc = -EINVAL;
        } else {
            rc = jobtype_check(t, why, sizeof why);
        }
        if (rc) {
            if (c->jt_line[i])
                cf_err(c, "%s: [job_type.%s] (line %d): %s", c->path, t->name, c->jt_line[i], why);
            else
                cf_err(c, "job_type.%s: %s", t->name, why);
            return rc;
        }
    }
    return 0;
}

/* environments.pip_index_url goes into a generated Dockerfile's RUN line: an http(s) URL
 * of plain characters only (no blanks, quotes, $, backquote or backslash). */
static bool cf_index_url_ok(const char *u)
{
    if (!*u)
        return true;
    if (strncmp(u, "http://", 7) && strncmp(u, "https://", 8))
        return false;
    for (const char *p = u; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f || strchr("'\"$`\\", *p))
            return false;
    return strlen(u) <= 2048;
}

static int cf_finish(struct cf_ctx *c, struct tk_config *cfg)
{
    char why[256];
    int rc;
    if (!cf_index_url_ok(cfg->environments_pip_index_url)) {
        cf_rule_err(c, CF_environments_pip_index_url, CF_environments_pip_index_url,
                    "\"%.80s\" is not an http:// or https:// URL of plain characters",
                    cfg->environments_pip_index_url);
        return -EINVAL;
    }
    if (cfg->environments_wheelhouse[0] && cfg->environments_wheelhouse[0] != '/') {
        cf_rule_err(c, CF_environments_wheelhouse, CF_environments_wheelhouse,
                    "\"%.80s\" is not an absolute path", cfg->environments_wheelhouse);
        return -EINVAL;
    }
    if (cfg->limits_timeout > cfg->limits_max_timeout) {
        cf_rule_err(c, CF_limits_timeout, CF_limits_max_timeout,
                    "limits.timeout %" PRId64 " is above limits.max_timeout %" PRId64,
                    cfg->limits_timeout, cfg->limits_max_timeout);
        return -EINVAL;
    }
    if (cf_parse_listen(cfg->server_listen, cfg->listen_host, sizeof cfg->listen_host,
                        &cfg->listen_port, why, sizeof why)) {
        cf_rule_err(c, CF_server_listen, CF_server_listen, "%s", why);
        return -EINVAL;
    }
    if (cfg->server_data_dir[0] != '/') {
        cf_rule_err(c, CF_server_data_dir, CF_server_data_dir, "\"%.80s\" is not an absolute path",
                    cfg->server_data_dir);
        return -EINVAL;
    }
    const char *u = cfg->docker_user, *colon = strchr(u, ':');
    uint32_t uid, gid;
    if (!colon || !cf_parse_id(u, (size_t)(colon - u), &uid) ||
        !cf_parse_id(colon + 1, strlen(colon + 1), &gid)) {
        cf_rule_err(c, CF_docker_user, CF_docker_user,
                    "\"%.80s\" is not UID:GID (numbers, e.g. 1000:1000)", u);
        return -EINVAL;
    }
    if (uid == 0) {
        cf_rule_err(c, CF_docker_user, CF_docker_user, "uid 0 (root) is not allowed for jobs");
        return -EINVAL;
    }
    /* API keys: each at least 16 characters, no blanks */
    for (const char *k = cfg->auth_api_keys; *k;) {
        size_t n = strcspn(k, ",");
        size_t lead = strspn(k, " "), trail = 0;
        while (trail < n - lead && k[n - 1 - trail] == ' ')
            trail++;
        size_t len = n - lead - trail;
        if (len < 16 || memchr(k + lead, ' ', len)) {
            cf_rule_err(c, CF_auth_api_keys, CF_auth_api_keys,
                        "each key must be at least 16 characters without blanks");
            return -EINVAL;
        }
        k += n + (k[n] == ',');
    }
    if (cfg->auth_admin_key[0] && strlen(cfg->auth_admin_key) < 16) {
        cf_rule_err(c, CF_auth_admin_key, CF_auth_admin_key, "must be at least 16 characters");
        return -EINVAL;
    }
    if ((rc = cf_finish_job_types(c, cfg)))
        return rc;
    free(cfg->pidfile_path);
    if (cfg->server_pidfile[0]) {
        cfg->pidfile_path = strdup(cfg->server_pidfile);
    } else {
        size_t n = strlen(cfg->server_data_dir);
        while (n > 1 && cfg->server_data_dir[n - 1] == '/') /* "/var/lib/takod/" */
            n--;
        if (asprintf(&cfg->pidfile_path, "%.*s/takod.pid", n == 1 ? 0 : (int)n,
                     cfg->server_data_dir) < 0)
            cfg->pidfile_path = NULL;
    }
    if (!cfg->pidfile_path) {
        cf_err(c, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

/* ---- Public API. ---- */

/*
 * `cfg` is written, not read: pass an unused struct (load into a fresh one and swap to
 * reload). The defaults are parsed from the table's text like any other value.
 */
int config_load(struct tk_config *cfg, const char *path, char *const *overrides, size_t n,
                char *err, size_t errlen)
{
    struct tk_config tmp;
    struct cf_ctx c = {.path = path, .cfg = &tmp, .jt = -1, .err = err, .errlen = errlen};
    char why[256];
    int rc = 0;

    memset(&tmp, 0, sizeof tmp);
    if (err && errlen)
        err[0] = '\0';
    for (size_t i = 0; i < CF_NKEYS && !rc; i++)
        if ((rc = cf_set(&tmp, &cf_keys[i], cf_keys[i].def, why, sizeof why)))
            cf_err(&c, "default of %s: %s", cf_keys[i].name, why);
    if (!rc && (rc = cf_jt_builtins(&tmp, why, sizeof why)))
        cf_err(&c, "built-in job types: %s", why);
    if (!rc && path)
        rc = cf_load_file(&c, &tmp);
    for (size_t i = 0; i < n && !rc; i++)
        rc = cf_override(&c, &tmp, overrides[i]);
    if (!rc)
        rc = cf_finish(&c, &tmp);
    if (rc) {
        config_free(&tmp);
        memset(cfg, 0, sizeof *cfg);
        return rc;
    }
    *cfg = tmp;
    return 0;
}

/* The defaults always validate (the unit tests check it), so failing here is a bug or OOM. */
void config_defaults(struct tk_config *cfg)
{
    char err[256];
    if (config_load(cfg, NULL, NULL, 0, err, sizeof err)) {
        fprintf(stderr, "takod: config defaults: %s\n", err);
        abort();
    }
}

void config_free(struct tk_config *cfg)
{
    for (size_t i = 0; i < CF_NKEYS; i++)
        if (cf_keys[i].type == CF_T_STR)
            free(*(char **)cf_field(cfg, &cf_keys[i]));
    free(cfg->pidfile_path);
    for (size_t i = 0; i < cfg->n_job_types; i++)
        cf_jt_free(&cfg->job_types[i]);
    memset(cfg, 0, sizeof *cfg);
}

int config_copy(struct tk_config *dst, const struct tk_config *src)
{
    *dst = *src;
    for (size_t i = 0; i < CF_NKEYS; i++) /* nothing shared with src before the dups */
        if (cf_keys[i].type == CF_T_STR)
            *(char **)cf_field(dst, &cf_keys[i]) = NULL;
    dst->pidfile_path = NULL;
    for (size_t t = 0; t < src->n_job_types; t++)
        for (size_t i = 0; i < CF_JT_NKEYS; i++)
            if (cf_jt_keys[i].type == CF_T_STR)
                *(char **)((char *)&dst->job_types[t] + cf_jt_keys[i].off) = NULL;
    for (size_t t = 0; t < src->n_job_types; t++)
        for (size_t i = 0; i < CF_JT_NKEYS; i++) {
            const struct cf_key *k = &cf_jt_keys[i];
            const char *str = k->type == CF_T_STR
                                  ? *(char *const *)((const char *)&src->job_types[t] + k->off)
                                  : NULL;
            if (str && !(*(char **)((char *)&dst->job_types[t] + k->off) = strdup(str)))
                goto oom;
        }
    for (size_t i = 0; i < CF_NKEYS; i++) {
        const struct cf_key *k = &cf_keys[i];
        const char *s = k->type == CF_T_STR ? *(char *const *)cf_cfield(src, k) : NULL;
        if (s && !(*(char **)cf_field(dst, k) = strdup(s)))
            goto oom;
    }
    if (src->pidfile_path && !(dst->pidfile_path = strdup(src->pidfile_path)))
        goto oom;
    return 0;
oom:
    config_free(dst);
    return -ENOMEM;
}

static void cf_print_value(const void *base, const struct cf_key *k, FILE *out)
{
    const void *f = (const char *)base + k->off;
    char buf[64];
    switch (k->type) {
    case CF_T_STR:
        fputc('"', out);
        for (const char *p = *(char *const *)f; p && *p; p++) {
            if (*p == '"' || *p == '\\')
                fputc('\\', out);
            fputc(*p, out);
        }
        fputc('"', out);
        break;
    case CF_T_INT:
    case CF_T_SIZE:
        fprintf(out, "%" PRId64, *(const int64_t *)f);
        break;
    case CF_T_DOUBLE: {
        /* %g, with as many digits as it takes to read back the same double. */
        double d = *(const double *)f;
        for (int prec = 6; prec <= 17; prec++) {
            snprintf(buf, sizeof buf, "%.*g", prec, d);
            if (strtod(buf, NULL) == d)
                break;
        }
        fputs(buf, out);
        break;
    }
    case CF_T_BOOL:
        fputs(*(const bool *)f ? "true" : "false", out);
        break;
    case CF_T_ENUM: {
        const char *name = cf_enum_name(k->choices, *(const int *)f, buf, sizeof buf);
        fputs(name ? name : "?", out);
        break;
    }
    }
}

void config_print(const struct tk_config *cfg, FILE *out)
{
    const char *section = NULL;
    for (size_t i = 0; i < CF_NKEYS; i++) {
        const struct cf_key *k = &cf_keys[i];
        if (!section || strcmp(section, k->section)) {
            fprintf(out, "%s[%s]\n", section ? "\n" : "", k->section);
            section = k->section;
        } else {
            fputc('\n', out);
        }
        fprintf(out, "# %s\n", k->help);
        if (k->flags & CF_NORELOAD)
            fputs("# (needs a restart to change)\n", out);
        fprintf(out, "%s = ", k->key);
        cf_print_value(cfg, k, out);
        fputc('\n', out);
    }
    /* job types after `default` (which is docker.image and [limits]) */
    for (size_t t = 1; t < cfg->n_job_types; t++) {
        fprintf(out, "\n[job_type.%s]\n", cfg->job_types[t].name);
        if (cfg->job_types[t].builtin)
            fputs("# (built in, as in Tako VM)\n", out);
        for (size_t i = 0; i < CF_JT_NKEYS; i++) {
            fprintf(out, "%s# %s\n%s = ", i ? "\n" : "", cf_jt_keys[i].help, cf_jt_keys[i].key);
            cf_print_value(&cfg->job_types[t], &cf_jt_keys[i], out);
            fputc('\n', out);
        }
    }
}

static bool cf_equal(const struct cf_key *k, const struct tk_config *a, const struct tk_config *b)
{
    const void *fa = cf_cfield(a, k), *fb = cf_cfield(b, k);
    switch (k->type) {
    case CF_T_STR: {
        const char *sa = *(char *const *)fa, *sb = *(char *const *)fb;
        return sa == sb || (sa && sb && !strcmp(sa, sb));
    }
    case CF_T_INT:
    case CF_T_SIZE:
        return *(const int64_t *)fa == *(const int64_t *)fb;
    case CF_T_DOUBLE:
        return *(const double *)fa == *(const double *)fb;
    case CF_T_BOOL:
        return *(const bool *)fa == *(const bool *)fb;
    case CF_T_ENUM:
        return *(const int *)fa == *(const int *)fb;
    }
    return false;
}

int config_diff_noreload(const struct tk_config *a, const struct tk_config *b, char *buf,
                         size_t len)
{
    int count = 0;
    size_t used = 0;
    if (buf && len)
        buf[0] = '\0';
    for (size_t i = 0; i < CF_NKEYS; i++) {
        const struct cf_key *k = &cf_keys[i];
        if (!(k->flags & CF_NORELOAD) || cf_equal(k, a, b))
            continue;
        if (buf && used < len) {
            int w = snprintf(buf + used, len - used, "%s%s", count ? ", " : "", k->name);
            used += w > 0 ? (size_t)w : 0;
        }
        count++;
    }
    return count;
}

const char *config_enum_name(const char *name, int idx, char *buf, size_t len)
{
    for (size_t i = 0; i < CF_NKEYS; i++)
        if (cf_keys[i].type == CF_T_ENUM && !strcmp(cf_keys[i].name, name))
            return cf_enum_name(cf_keys[i].choices, idx, buf, len);
    return NULL;
}

/* Must match the choices of server.log_level (the unit tests check it). */
const char *config_log_level_name(int idx)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    if (idx < 0 || idx >= (int)(sizeof names / sizeof names[0]))
        return "unknown";
    return names[idx];
}

int config_keep_noreload(struct tk_config *dst, const struct tk_config *old)
{
    for (size_t i = 0; i < CF_NKEYS; i++) {
        const struct cf_key *k = &cf_keys[i];
        if (!(k->flags & CF_NORELOAD) || cf_equal(k, dst, old))
            continue;
        void *fd = cf_field(dst, k);
        const void *fo = cf_cfield(old, k);
        if (k->type == CF_T_STR) {
            char *copy = strdup(*(char *const *)fo ? *(char *const *)fo : "");
            if (!copy)
                return -ENOMEM;
            free(*(char **)fd);
            *(char **)fd = copy;
        } else { /* a plain value: copy its bytes */
            size_t size = k->type == CF_T_BOOL   ? sizeof(bool)
                          : k->type == CF_T_ENUM ? sizeof(int)
                                                 : sizeof(int64_t); /* INT, SIZE, DOUBLE */
            memcpy(fd, fo, size);
        }
    }
    /* derived fields follow the kept keys */
    memcpy(dst->listen_host, old->listen_host, sizeof dst->listen_host);
    dst->listen_port = old->listen_port;
    char *pid = strdup(old->pidfile_path ? old->pidfile_path : "");
    if (!pid)
        return -ENOMEM;
    free(dst->pidfile_path);
    dst->pidfile_path = pid;
    return 0;
}
