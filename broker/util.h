/* util.h: small helpers every broker module uses: byte spans, big-endian
 * key packing, the always-on assert and a bounded growable buffer.
 * Header-only; owns nothing. */
#ifndef CLAWQ_UTIL_H
#define CLAWQ_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clawq.h"

/* A borrowed byte span; its lifetime is documented by whoever returns it. */
typedef struct cq_bytes {
    const uint8_t *ptr;
    size_t len;
} cq_bytes;

static inline cq_bytes cq_bytes_of(const void *ptr, size_t len)
{
    cq_bytes b = {(const uint8_t *)ptr, len};
    return b;
}

static inline cq_bytes cq_bytes_str(const char *s)
{
    return cq_bytes_of(s, strlen(s));
}

static inline bool cq_bytes_eq(cq_bytes a, cq_bytes b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* Always on, in release builds too: for invariants, never for input. */
#define CLAWQ_ASSERT(expr)                                                     \
    do {                                                                       \
        if (!(expr)) {                                                         \
            fprintf(stderr, "clawq: assertion failed: %s (%s:%d)\n", #expr,    \
                    __FILE__, __LINE__);                                       \
            abort();                                                           \
        }                                                                      \
    } while (0)

static inline void cq_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void cq_put_be64(uint8_t *p, uint64_t v)
{
    cq_put_be32(p, (uint32_t)(v >> 32));
    cq_put_be32(p + 4, (uint32_t)v);
}

static inline uint32_t cq_get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline uint64_t cq_get_be64(const uint8_t *p)
{
    return ((uint64_t)cq_get_be32(p) << 32) | cq_get_be32(p + 4);
}

/* splitmix64: the deterministic mixer used wherever the state machine needs
 * "randomness" (backoff jitter) that every replica must draw alike. */
static inline uint64_t cq_mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* A growable byte buffer with a hard cap. */
typedef struct cq_buf {
    uint8_t *ptr;
    size_t len;
    size_t cap;
    size_t max; /* never grows past this */
} cq_buf;

static inline void cq_buf_init(cq_buf *b, size_t max)
{
    b->ptr = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

static inline void cq_buf_fini(cq_buf *b)
{
    free(b->ptr);
    b->ptr = NULL;
    b->len = b->cap = 0;
}

/* Makes room for n more bytes. Returns 0, CLAWQ_ETOO_LARGE past the cap or
 * CLAWQ_ENOMEM. */
static inline int cq_buf_reserve(cq_buf *b, size_t n)
{
    size_t want, cap;
    uint8_t *p;

    if (n > b->max || b->len > b->max - n)
        return CLAWQ_ETOO_LARGE;
    want = b->len + n;
    if (want <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 256;
    while (cap < want)
        cap = cap > SIZE_MAX / 2 ? want : cap * 2;
    if (cap > b->max)
        cap = b->max;
    p = realloc(b->ptr, cap);
    if (p == NULL)
        return CLAWQ_ENOMEM;
    b->ptr = p;
    b->cap = cap;
    return 0;
}

static inline int cq_buf_append(cq_buf *b, const void *data, size_t n)
{
    int rc = cq_buf_reserve(b, n);
    if (rc != 0)
        return rc;
    if (n > 0)
        memcpy(b->ptr + b->len, data, n);
    b->len += n;
    return 0;
}

#endif /* CLAWQ_UTIL_H */
