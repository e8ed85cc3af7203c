/*
 * outputs.c — collect result.json and artifacts safely (see outputs.h).
 *
 * The output directory is writable by untrusted code, so everything here assumes a
 * hostile tree: names are checked, the directory is opened once and every file is opened
 * relative to it with O_NOFOLLOW|O_NONBLOCK, fstat must say "regular file", and reads are
 * bounded. A symlink to /etc/passwd is skipped, never read.
 */
#include "tako/outputs.h"
#include "tako/util.h"

#include <ctype.h>
#include <stdbool.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int outputs_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 255 || name[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!(isalnum(c) || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

const char *outputs_content_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".json", "application/json"}, {".txt", "text/plain"},
        {".csv", "text/csv"},          {".html", "text/html"},
        {".md", "text/markdown"},      {".png", "image/png"},
        {".jpg", "image/jpeg"},        {".jpeg", "image/jpeg"},
        {".gif", "image/gif"},         {".svg", "image/svg+xml"},
        {".pdf", "application/pdf"},   {".xml", "application/xml"},
        {".zip", "application/zip"},   {".gz", "application/gzip"},
        {".log", "text/plain"},        {".parquet", "application/vnd.apache.parquet"},
        {".py", "text/x-python"},
    };
    const char *dot = strrchr(name, '.');
    if (dot)
        for (size_t i = 0; i < TK_ARRAY_LEN(types); i++)
            if (!strcasecmp(dot, types[i].ext))
                return types[i].type;
    return "application/octet-stream";
}

/* Open name under dirfd as a regular file without following links. */
static int open_regular(int dirfd, const char *name, struct stat *st)
{
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
        close(fd);
        return -EINVAL;
    }
    return fd;
}

static int read_fd(int fd, size_t size, char **out)
{
    char *buf = malloc(size + 1);
    if (!buf)
        return -ENOMEM;
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    *out = buf;
    return (int)got;
}

static void collect_result(int dirfd, size_t max_each, struct tk_outputs *out)
{
    struct stat st;
    int fd = open_regular(dirfd, "result.json", &st);
    if (fd == -ENOENT)
        return;
    if (fd < 0) {
        snprintf(out->output_err, sizeof out->output_err,
                 "/output/result.json is not a regular file");
        return;
    }
    if ((size_t)st.st_size > max_each) {
        snprintf(out->output_err, sizeof out->output_err,
                 "/output/result.json is larger than %zu bytes", max_each);
        close(fd);
        return;
    }
    char *buf = NULL;
    int n = read_fd(fd, (size_t)st.st_size, &buf);
    close(fd);
    if (n < 0)
        return;
    json_error_t jerr;
    out->output = json_loadb(buf, (size_t)n, JSON_DECODE_ANY, &jerr);
    if (!out->output)
        snprintf(out->output_err, sizeof out->output_err,
                 "/output/result.json is not valid JSON: %s (line %d)", jerr.text, jerr.line);
    free(buf);
}

int outputs_collect(const char *dir, size_t max_each, size_t max_total, size_t max_count,
                    struct tk_outputs *out)
{
    memset(out, 0, sizeof *out);
    out->artifacts = json_array();
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dirfd < 0)
        return -errno;
    collect_result(dirfd, max_each, out);
    DIR *d = fdopendir(dup(dirfd));
    if (!d) {
        int e = errno;
        close(dirfd);
        return -e;
    }
    size_t total = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        if (!strcmp(name, ".") || !strcmp(name, "..") || !strcmp(name, "result.json"))
            continue;
        if (!outputs_name_ok(name)) {
            out->artifacts_skipped++;
            continue;
        }
        if (out->n_files >= max_count) { /* counted, not opened: bounded work per entry */
            out->artifacts_skipped++;
            out->artifacts_over_limit++;
            continue;
        }
        struct stat st;
        int fd = open_regular(dirfd, name, &st);
        if (fd < 0) { /* symlink, directory, fifo, device: skipped */
            out->artifacts_skipped++;
            continue;
        }
        size_t size = (size_t)st.st_size;
        if (size > max_each || total + size > max_total) {
            out->artifacts_skipped++;
            out->artifacts_over_limit++;
            close(fd);
            continue;
        }
        char *buf = NULL;
        int n = read_fd(fd, size, &buf);
        close(fd);
        if (n < 0) {
            out->artifacts_skipped++;
            continue;
        }
        char hex[65];
        sha256_hex(buf, (size_t)n, hex);
        struct tk_artifact *grown = realloc(out->files, (out->n_files + 1) * sizeof *grown);
        if (!grown) {
            free(buf);
            out->artifacts_skipped++;
            continue;
        }
        out->files = grown;
        struct tk_artifact *a = &out->files[out->n_files++];
        snprintf(a->name, sizeof a->name, "%s", name);
        a->data = buf;
        a->len = (size_t)n;
        total += (size_t)n;
        json_array_append_new(out->artifacts,
                              json_pack("{s:s, s:I, s:s, s:s}", "name", name, "size_bytes",
                                        (json_int_t)n, "sha256", hex, "content_type",
                                        outputs_content_type(name)));
    }
    closedir(d);
    close(dirfd);
    return 0;
}

void outputs_free(struct tk_outputs *out)
{
    for (size_t i = 0; i < out->n_files; i++)
        free(out->files[i].data);
    free(out->files);
    out->files = NULL;
    out->n_files = 0;
    json_decref(out->output);
    json_decref(out->artifacts);
    out->output = out->artifacts = NULL;
}

/* "ZeroDivisionError" → "zero_division_error" */
static void snake_case(const char *in, size_t n, char *out, size_t olen)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 2 < olen; i++) {
        char c = in[i];
        if (isupper((unsigned char)c)) {
            if (i > 0 && o > 0 && out[o - 1] != '_')
                out[o++] = '_';
            out[o++] = (char)tolower((unsigned char)c);
        } else if (c == '.') {
            o = 0; /* keep the last dotted component: "json.decoder.JSONDecodeError" */
        } else {
            out[o++] = c;
        }
    }
    out[o] = '\0';
}

int outputs_python_error(const char *text, char *type, size_t tlen, char *msg, size_t mlen)
{
    if (!text)
        return 0;
    /* the last non-empty line carries the exception: "pkg.mod.SomeError: message" */
    const char *end = text + strlen(text);
    while (end > text && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' '))
        end--;
    const char *start = end;
    while (start > text && start[-1] != '\n')
        start--;
    const char *p = start;
    while (p < end && (isalnum((unsigned char)*p) || *p == '_' || *p == '.'))
        p++;
    if (p == start || (p < end && *p != ':'))
        return 0;
    const char *cls = start;
    size_t cls_len = (size_t)(p - start);
    const char *dot = memrchr(cls, '.', cls_len);
    if (dot) {
        cls_len -= (size_t)(dot + 1 - cls);
        cls = dot + 1;
    }
    if (cls_len == 0 || !isupper((unsigned char)cls[0]))
        return 0;
    /* A compile error prints "  File ..., line N" without the Traceback header. */
    bool compile_err = (cls_len == 11 && !strncmp(cls, "SyntaxError", 11)) ||
                       (cls_len == 16 && !strncmp(cls, "IndentationError", 16)) ||
                       (cls_len == 8 && !strncmp(cls, "TabError", 8));
    if (!compile_err && !strstr(text, "Traceback (most recent call last)"))
        return 0;
    if (compile_err)
        snprintf(type, tlen, "syntax_error");
    else if (cls_len == 19 && !strncmp(cls, "ModuleNotFoundError", 19))
        snprintf(type, tlen, "import_error");
    else
        snake_case(cls, cls_len, type, tlen);
    utf8_copy(msg, mlen, start, (size_t)(end - start));
    return 1;
}
