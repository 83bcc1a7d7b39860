/* mp.c: the msgpack subset of records and commands. See mp.h. */
#include "mp.h"

#include <string.h>

/* ---- reader ---- */

static bool need(const mp_reader *r, size_t n)
{
    return r->len - r->off >= n;
}

static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)(((unsigned)p[0] << 8) | p[1]);
}

/* Reads a container header: fix (fix_lo..fix_lo+15), 16- or 32-bit. */
static bool read_count(mp_reader *r, uint8_t fix_lo, uint8_t b16, uint8_t b32,
                       uint32_t *n)
{
    uint8_t b;

    if (!need(r, 1))
        return false;
    b = r->p[r->off];
    if (b >= fix_lo && b <= fix_lo + 0x0f) {
        *n = b & 0x0f;
        r->off += 1;
    } else if (b == b16 && need(r, 3)) {
        *n = be16(r->p + r->off + 1);
        r->off += 3;
    } else if (b == b32 && need(r, 5)) {
        *n = cq_get_be32(r->p + r->off + 1);
        r->off += 5;
    } else {
        return false;
    }
    return true;
}

bool mp_read_map(mp_reader *r, uint32_t *n)
{
    return read_count(r, 0x80, 0xde, 0xdf, n);
}

bool mp_read_array(mp_reader *r, uint32_t *n)
{
    return read_count(r, 0x90, 0xdc, 0xdd, n);
}

/* Any integer: *neg tells which of *u (>= 0) or *s (< 0) holds it. */
static bool read_integer(mp_reader *r, bool *neg, uint64_t *u, int64_t *s)
{
    const uint8_t *p;
    uint8_t b;
    size_t n;

    if (!need(r, 1))
        return false;
    p = r->p + r->off;
    b = p[0];
    *neg = false;
    if (b <= 0x7f) {
        *u = b;
        r->off += 1;
        return true;
    }
    if (b >= 0xe0) {
        *neg = true;
        *s = (int8_t)b;
        r->off += 1;
        return true;
    }
    switch (b) {
    case 0xcc:
    case 0xd0:
        n = 1;
        break;
    case 0xcd:
    case 0xd1:
        n = 2;
        break;
    case 0xce:
    case 0xd2:
        n = 4;
        break;
    case 0xcf:
    case 0xd3:
        n = 8;
        break;
    default:
        return false;
    }
    if (!need(r, 1 + n))
        return false;
    r->off += 1 + n;
    p++;
    switch (b) {
    case 0xcc:
        *u = p[0];
        return true;
    case 0xcd:
        *u = be16(p);
        return true;
    case 0xce:
        *u = cq_get_be32(p);
        return true;
    case 0xcf:
        *u = cq_get_be64(p);
        return true;
    case 0xd0:
        *s = (int8_t)p[0];
        break;
    case 0xd1:
        *s = (int16_t)be16(p);
        break;
    case 0xd2:
        *s = (int32_t)cq_get_be32(p);
        break;
    default:
        *s = (int64_t)cq_get_be64(p);
        break;
    }
    if (*s >= 0) {
        *u = (uint64_t)*s;
        return true;
    }
    *neg = true;
    return true;
}

bool mp_read_uint_slow(mp_reader *r, uint64_t max, uint64_t *v)
{
    uint64_t u;
    int64_t s;
    bool neg;

    if (!read_integer(r, &neg, &u, &s) || neg || u > max)
        return false;
    *v = u;
    return true;
}

bool mp_read_int(mp_reader *r, int64_t *v)
{
    uint64_t u;
    int64_t s;
    bool neg;

    if (!read_integer(r, &neg, &u, &s))
        return false;
    if (neg) {
        *v = s;
        return true;
    }
    if (u > INT64_MAX)
        return false;
    *v = (int64_t)u;
    return true;
}

bool mp_read_bytes(mp_reader *r, cq_bytes *v)
{
    const uint8_t *p;
    size_t n, hdr;
    uint8_t b;

    if (!need(r, 1))
        return false;
    p = r->p + r->off;
    b = p[0];
    if (b >= 0xa0 && b <= 0xbf) {
        n = b & 0x1f;
        hdr = 1;
    } else if ((b == 0xc4 || b == 0xd9) && need(r, 2)) {
        n = p[1];
        hdr = 2;
    } else if ((b == 0xc5 || b == 0xda) && need(r, 3)) {
        n = be16(p + 1);
        hdr = 3;
    } else if ((b == 0xc6 || b == 0xdb) && need(r, 5)) {
        n = cq_get_be32(p + 1);
        hdr = 5;
    } else {
        return false;
    }
    if (!need(r, hdr + n))
        return false;
    *v = cq_bytes_of(p + hdr, n);
    r->off += hdr + n;
    return true;
}

bool mp_read_str(mp_reader *r, cq_bytes *v)
{
    uint8_t b;

    if (!need(r, 1))
        return false;
    b = r->p[r->off];
    if ((b >= 0xa0 && b <= 0xbf) || b == 0xd9 || b == 0xda || b == 0xdb)
        return mp_read_bytes(r, v);
    return false;
}

bool mp_read_nil(mp_reader *r)
{
    if (!need(r, 1) || r->p[r->off] != 0xc0)
        return false;
    r->off += 1;
    return true;
}

bool mp_skip(mp_reader *r, unsigned max_depth)
{
    size_t used;

    if (!mp_span(r->p + r->off, r->len - r->off, max_depth, &used))
        return false;
    r->off += used;
    return true;
}

/* ---- writer ---- */

/* Room for n more bytes, or NULL with the error kept. */
static uint8_t *room(mp_writer *w, size_t n)
{
    cq_buf *b = w->out;
    int rc;

    if (w->err == 0 && b->cap - b->len >= n)
        return b->ptr + b->len;
    if (w->err != 0)
        return NULL;
    rc = cq_buf_reserve(b, n);
    if (rc != 0) {
        w->err = rc;
        return NULL;
    }
    return b->ptr + b->len;
}

/* A 1-byte tag followed by n (0, 1, 2, 4 or 8) big-endian bytes of v. */
static void put_tagged(mp_writer *w, uint8_t tag, uint64_t v, size_t n)
{
    uint8_t *p = room(w, 1 + n);

    if (p == NULL)
        return;
    p[0] = tag;
    switch (n) {
    case 0:
        break;
    case 1:
        p[1] = (uint8_t)v;
        break;
    case 2:
        p[1] = (uint8_t)(v >> 8);
        p[2] = (uint8_t)v;
        break;
    case 4:
        cq_put_be32(p + 1, (uint32_t)v);
        break;
    default:
        CLAWQ_ASSERT(n == 8);
        cq_put_be64(p + 1, v);
        break;
    }
    w->out->len += 1 + n;
}

static void write_count(mp_writer *w, uint8_t fix_lo, uint8_t b16, uint8_t b32,
                        uint32_t n)
{
    if (n <= 0x0f)
        put_tagged(w, (uint8_t)(fix_lo | n), 0, 0);
    else if (n <= UINT16_MAX)
        put_tagged(w, b16, n, 2);
    else
        put_tagged(w, b32, n, 4);
}

void mp_write_map(mp_writer *w, uint32_t n)
{
    write_count(w, 0x80, 0xde, 0xdf, n);
}

void mp_write_array(mp_writer *w, uint32_t n)
{
    write_count(w, 0x90, 0xdc, 0xdd, n);
}

void mp_write_uint_slow(mp_writer *w, uint64_t v)
{
    if (v <= 0x7f)
        put_tagged(w, (uint8_t)v, 0, 0);
    else if (v <= UINT8_MAX)
        put_tagged(w, 0xcc, v, 1);
    else if (v <= UINT16_MAX)
        put_tagged(w, 0xcd, v, 2);
    else if (v <= UINT32_MAX)
        put_tagged(w, 0xce, v, 4);
    else
        put_tagged(w, 0xcf, v, 8);
}

void mp_write_int(mp_writer *w, int64_t v)
{
    if (v >= 0)
        mp_write_uint_slow(w, (uint64_t)v);
    else if (v >= -32)
        put_tagged(w, (uint8_t)v, 0, 0);
    else if (v >= INT8_MIN)
        put_tagged(w, 0xd0, (uint64_t)v, 1);
    else if (v >= INT16_MIN)
        put_tagged(w, 0xd1, (uint64_t)v, 2);
    else if (v >= INT32_MIN)
        put_tagged(w, 0xd2, (uint64_t)v, 4);
    else
        put_tagged(w, 0xd3, (uint64_t)v, 8);
}

void mp_write_nil(mp_writer *w)
{
    put_tagged(w, 0xc0, 0, 0);
}

static void write_body(mp_writer *w, cq_bytes b)
{
    uint8_t *p;

    if (b.len == 0)
        return;
    p = room(w, b.len);
    if (p == NULL)
        return;
    memcpy(p, b.ptr, b.len);
    w->out->len += b.len;
}

void mp_write_bin(mp_writer *w, cq_bytes b)
{
    if (b.len > UINT32_MAX) {
        if (w->err == 0)
            w->err = CLAWQ_ETOO_LARGE;
        return;
    }
    if (b.len <= UINT8_MAX)
        put_tagged(w, 0xc4, b.len, 1);
    else if (b.len <= UINT16_MAX)
        put_tagged(w, 0xc5, b.len, 2);
    else
        put_tagged(w, 0xc6, b.len, 4);
    write_body(w, b);
}

void mp_write_str(mp_writer *w, cq_bytes s)
{
    if (s.len > UINT32_MAX) {
        if (w->err == 0)
            w->err = CLAWQ_ETOO_LARGE;
        return;
    }
    if (s.len <= 0x1f)
        put_tagged(w, (uint8_t)(0xa0 | s.len), 0, 0);
    else if (s.len <= UINT8_MAX)
        put_tagged(w, 0xd9, s.len, 1);
    else if (s.len <= UINT16_MAX)
        put_tagged(w, 0xda, s.len, 2);
    else
        put_tagged(w, 0xdb, s.len, 4);
    write_body(w, s);
}

/* ---- validation ---- */

bool mp_span(const void *buf, size_t len, unsigned max_depth, size_t *used)
{
    const uint8_t *p = buf;
    size_t off = 0;
    /* Objects still to read at each open depth. */
    uint64_t todo[33];
    unsigned depth = 0;

    if (max_depth > 32)
        max_depth = 32;
    todo[0] = 1;
    while (depth > 0 || todo[0] > 0) {
        uint64_t n = 0, skip = 0;
        unsigned mult = 0; /* 1 array, 2 map */
        uint8_t b;

        if (todo[depth] == 0) {
            depth--;
            continue;
        }
        todo[depth]--;
        if (off >= len)
            return false;
        b = p[off++];
#define NEED(k)                                                                \
    if (len - off < (k))                                                       \
    return false
        if (b <= 0x7f || b >= 0xe0 || (b >= 0xc0 && b <= 0xc3)) {
            if (b == 0xc1)
                return false;
        } else if (b >= 0x80 && b <= 0x8f) {
            n = b & 0x0f, mult = 2;
        } else if (b >= 0x90 && b <= 0x9f) {
            n = b & 0x0f, mult = 1;
        } else if (b >= 0xa0 && b <= 0xbf) {
            skip = b & 0x1f;
        } else {
            switch (b) {
            case 0xc4:
            case 0xd9:
                NEED(1);
                skip = p[off];
                off += 1;
                break;
            case 0xc5:
            case 0xda:
                NEED(2);
                skip = ((uint64_t)p[off] << 8) | p[off + 1];
                off += 2;
                break;
            case 0xc6:
            case 0xdb:
                NEED(4);
                skip = cq_get_be32(p + off);
                off += 4;
                break;
            case 0xc7:
                NEED(1);
                skip = 1 + (uint64_t)p[off];
                off += 1;
                break;
            case 0xc8:
                NEED(2);
                skip = 1 + (((uint64_t)p[off] << 8) | p[off + 1]);
                off += 2;
                break;
            case 0xc9:
                NEED(4);
                skip = 1 + (uint64_t)cq_get_be32(p + off);
                off += 4;
                break;
            case 0xca:
                skip = 4;
                break;
            case 0xcb:
                skip = 8;
                break;
            case 0xcc:
            case 0xd0:
                skip = 1;
                break;
            case 0xcd:
            case 0xd1:
                skip = 2;
                break;
            case 0xce:
            case 0xd2:
                skip = 4;
                break;
            case 0xcf:
            case 0xd3:
                skip = 8;
                break;
            case 0xd4:
                skip = 2;
                break;
            case 0xd5:
                skip = 3;
                break;
            case 0xd6:
                skip = 5;
                break;
            case 0xd7:
                skip = 9;
                break;
            case 0xd8:
                skip = 17;
                break;
            case 0xdc:
                NEED(2);
                n = ((uint64_t)p[off] << 8) | p[off + 1];
                off += 2;
                mult = 1;
                break;
            case 0xdd:
                NEED(4);
                n = cq_get_be32(p + off);
                off += 4;
                mult = 1;
                break;
            case 0xde:
                NEED(2);
                n = ((uint64_t)p[off] << 8) | p[off + 1];
                off += 2;
                mult = 2;
                break;
            case 0xdf:
                NEED(4);
                n = cq_get_be32(p + off);
                off += 4;
                mult = 2;
                break;
            default:
                return false;
            }
        }
#undef NEED
        if (skip > len - off)
            return false;
        off += skip;
        if (mult != 0 && n > 0) {
            n *= mult;
            /* Every element takes at least one byte. */
            if (n > len - off || depth + 1 > max_depth)
                return false;
            todo[++depth] = n;
        }
    }
    *used = off;
    return true;
}
