/* mp.h: the msgpack subset of clawq's records, commands and task headers,
 * read and written in place.
 *
 * Records and commands are msgpack (DESIGN.md section 3), and every applied
 * entry decodes and re-encodes several of them. msgpack-c's object API
 * allocates a zone for each decode and its packer calls back once per
 * token; for records of a few dozen small fields that was 13 % of
 * clawqd's instructions per task (callgrind, W1 batch 1). This reader
 * walks the bytes where they lie and the writer appends to a cq_buf,
 * neither allocating (beyond the buffer's growth).
 *
 * The reader never reads past its buffer: every call checks the bytes it
 * needs and returns false on a short buffer or an unexpected type, after
 * which the reader's position is unspecified (callers give up on the
 * object). A claimed container count is never trusted for allocation:
 * elements are read one by one and run out with the bytes.
 */
#ifndef CLAWQ_MP_H
#define CLAWQ_MP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

typedef struct mp_reader {
    const uint8_t *p;
    size_t len;
    size_t off;
} mp_reader;

static inline void mp_reader_init(mp_reader *r, const void *buf, size_t len)
{
    r->p = buf;
    r->len = len;
    r->off = 0;
}

/* True when every byte has been read. */
static inline bool mp_reader_done(const mp_reader *r)
{
    return r->off == r->len;
}

/* A map or array header: its count of pairs or elements. */
bool mp_read_map(mp_reader *r, uint32_t *n);
bool mp_read_array(mp_reader *r, uint32_t *n);
/* A non-negative integer (in any integer encoding) of at most max. (The
 * _slow functions are the inline fast paths' fallbacks: call the others.) */
bool mp_read_uint_slow(mp_reader *r, uint64_t max, uint64_t *v);
static inline bool mp_read_uint(mp_reader *r, uint64_t max, uint64_t *v)
{
    /* A positive fixint: every record key and most counters. */
    if (r->off < r->len && r->p[r->off] <= 0x7f && r->p[r->off] <= max) {
        *v = r->p[r->off++];
        return true;
    }
    return mp_read_uint_slow(r, max, v);
}
/* Any integer that fits int64_t. */
bool mp_read_int(mp_reader *r, int64_t *v);
/* A bin or str, borrowed from the buffer. */
bool mp_read_bytes(mp_reader *r, cq_bytes *v);
/* A str only. */
bool mp_read_str(mp_reader *r, cq_bytes *v);
/* Consumes a nil and returns true; returns false (consuming nothing) for
 * anything else. */
bool mp_read_nil(mp_reader *r);
/* Skips one object, nested at most max_depth containers deep. */
bool mp_skip(mp_reader *r, unsigned max_depth);

/* Appends to a cq_buf; the first error sticks in err and later writes do
 * nothing. Integers take their shortest encoding, as msgpack-c writes
 * them. */
typedef struct mp_writer {
    cq_buf *out;
    int err;
} mp_writer;

static inline void mp_writer_init(mp_writer *w, cq_buf *out)
{
    w->out = out;
    w->err = 0;
}

void mp_write_map(mp_writer *w, uint32_t n);
void mp_write_array(mp_writer *w, uint32_t n);
void mp_write_uint_slow(mp_writer *w, uint64_t v);
static inline void mp_write_uint(mp_writer *w, uint64_t v)
{
    cq_buf *b = w->out;

    if (v <= 0x7f && w->err == 0 && b->len < b->cap) {
        b->ptr[b->len++] = (uint8_t)v;
        return;
    }
    mp_write_uint_slow(w, v);
}
void mp_write_int(mp_writer *w, int64_t v);
void mp_write_nil(mp_writer *w);
void mp_write_bin(mp_writer *w, cq_bytes b);
void mp_write_str(mp_writer *w, cq_bytes s);

/* True when buf starts with one well-formed msgpack object, nested at most
 * max_depth (<= 32) containers deep, whose container counts fit in the
 * bytes that remain: its length in *used. What mp_skip walks with. */
bool mp_span(const void *buf, size_t len, unsigned max_depth, size_t *used);

#endif
