/*
 * util.h — small helpers shared by every process: clocks, ids, files, hashing, text.
 * Functions return 0 or -errno unless they say otherwise.
 */
#ifndef TAKO_UTIL_H
#define TAKO_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TK_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Monotonic and wall clocks, in microseconds / milliseconds. */
uint64_t now_mono_us(void);
uint64_t now_mono_ms(void);
uint64_t now_real_us(void);

/* A random UUID v4 in its 36-character text form (buf ≥ 37 bytes). */
void uuid_v4(char *buf);
/* True when s is 36 chars of lowercase/uppercase hex in 8-4-4-4-12 form. */
bool uuid_valid(const char *s);

/* mkdir -p with `mode` for created directories. */
int mkdir_p(const char *path, mode_t mode);
/*
 * rm -rf that never follows symlinks (unlinkat on the link itself) and never crosses onto
 * another filesystem. Iterative: O(1) descriptors and memory at any depth or width. It
 * always finishes: the first entry it cannot remove ends it with that error. Absent is 0.
 */
int rm_rf(const char *path);
/*
 * rm_rf, and when that fails, log it and rename what is left to aside_dir/<name>.<time>
 * (quarantine; beside it, <path>.quarantined.<time>, when aside_dir is NULL or "")
 * so that the name is free and the leftovers are never handed to anyone.
 * Returns rm_rf's result.
 */
int rm_rf_aside(const char *path, const char *aside_dir);
/* Write a whole file: tmp + fsync-less rename for atomic replace. */
int write_file(const char *path, const void *data, size_t len, mode_t mode);
/*
 * Read at most `max` bytes of a regular file without following a final symlink
 * (O_NOFOLLOW). *out is malloc'd and NUL-terminated; *len its length. A larger file is
 * -EFBIG.
 */
int read_file(const char *path, size_t max, char **out, size_t *len);

/* SHA-256 of data as 64 lowercase hex chars (hex ≥ 65 bytes). */
void sha256_hex(const void *data, size_t len, char *hex);
/* FNV-1a of a string, never 0 (tables use 0 for an entry never used): for shm tables keyed
 * by a client address or key (the rate limit, the per-client connection counts). */
uint64_t str_hash(const char *s);

/* n bytes as 2n lowercase hex chars and a NUL (out ≥ 2n + 1 bytes). */
void hex_encode(const unsigned char *p, size_t n, char *out);

/*
 * Copy `in` into a new NUL-terminated valid-UTF-8 string: invalid sequences and NUL
 * bytes become U+FFFD. Never fails except on malloc (NULL).
 */
char *utf8_sanitize(const char *in, size_t len, size_t *out_len);
/* Job text into a fixed buffer as valid UTF-8: invalid bytes become U+FFFD, and a cut
 * falls on a character boundary. NUL-terminated; returns the bytes written (< size). */
size_t utf8_copy(char *dst, size_t size, const char *src, size_t len);

/* Drop terminal colour sequences (ESC [ params final-byte) from s, in place: docker build
 * paints RUN steps' stderr red even into a pipe, and pip and apt colour theirs. */
void strip_ansi(char *s);

#endif
