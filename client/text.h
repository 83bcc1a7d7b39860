/* text.h: clawqctl's pure text helpers - strict number parsing, queue
 * name checks, UTF-8 validation, JSON string escaping and base64. No I/O
 * beyond the FILE * a caller passes; owns nothing. Kept out of clawqctl.c
 * so that unit tests can call them. */
#ifndef CLAWQ_TEXT_H
#define CLAWQ_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Parses s as a plain decimal integer (digits only: no sign, spaces or
 * suffix) in [min, max]. Returns true and writes *out on success. */
bool text_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Like text_parse_u64 for a signed decimal ("-5" allowed). */
bool text_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);

/* True when q is 1..128 bytes of [A-Za-z0-9._:-], the broker's rule. */
bool text_queue_name_ok(const char *q);

/* True when p[0..len) is well-formed UTF-8 (no overlong forms, no
 * surrogates, nothing above U+10FFFF). NUL bytes are allowed. */
bool text_utf8_valid(const uint8_t *p, size_t len);

/* Writes p[0..len) to f as a JSON string with its quotes: '"', '\\' and
 * control characters escaped (\n \t \r \b \f, else \u00XX, DEL too);
 * invalid UTF-8 bytes become U+FFFD. */
void text_json_string(FILE *f, const void *p, size_t len);

/* The same for a NUL-terminated string (NULL is written as ""). */
void text_json_cstr(FILE *f, const char *s);

/* Length of the base64 (RFC 4648, padded) text of n bytes, without NUL;
 * SIZE_MAX when it would overflow. */
size_t text_base64_len(size_t n);

/* Writes the base64 text of in[0..n) and a NUL to out, which has room for
 * text_base64_len(n) + 1 bytes. */
void text_base64_encode(const void *in, size_t n, char *out);

/* Writes p[0..len) to f for a terminal: valid UTF-8 as is with control
 * characters escaped C-style (\n, \x01); at most max_chars characters
 * (0 = all), then "...". Invalid UTF-8 is written as "<N bytes, binary>",
 * or with max_chars 0 (and at most 1 MiB) as "<binary, base64> TEXT". */
void text_human(FILE *f, const void *p, size_t len, size_t max_chars);

#endif /* CLAWQ_TEXT_H */
