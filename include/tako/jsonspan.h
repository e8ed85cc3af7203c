/*
 * jsonspan.h — where a member's value sits in the text of a JSON object, byte for byte.
 *
 * jansson gives values, not their text: dumping a parsed value changes key order, spacing
 * and number spelling. A job's input_data is kept as the client sent it (/input/data.json,
 * the record, a rerun), so its bytes are cut out of the request body with this scanner.
 * It reads at most `len` bytes, never allocates, and is bounded by the input whatever it
 * holds; callers still validate the text with a real parser first (it assumes well-formed
 * JSON and answers -EINVAL on anything it cannot follow).
 */
#ifndef TAKO_JSONSPAN_H
#define TAKO_JSONSPAN_H

#include <stddef.h>

/* The value of the top-level member `key` of the JSON object in text[0..len): its first
 * byte at *off, its length in *vlen (whitespace around it excluded). Keys are compared
 * after decoding their escapes. When a key appears more than once the last one counts (as
 * in jansson without JSON_REJECT_DUPLICATES). 0, -ENOENT (no such member) or -EINVAL (not
 * a JSON object this scanner can follow). */
int json_member_span(const char *text, size_t len, const char *key, size_t *off, size_t *vlen);

#endif
