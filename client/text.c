/* text.c: see text.h. Everything a broker sends is untrusted text: these
 * functions never assume it is UTF-8 or NUL-free. */
#include "text.h"

#include <stdlib.h>
#include <string.h>

bool text_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (s == NULL || *s == '\0')
        return false;
    for (const char *p = s; *p != '\0'; p++) {
        unsigned d;

        if (*p < '0' || *p > '9')
            return false;
        d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (v < min || v > max)
        return false;
    *out = v;
    return true;
}

bool text_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    uint64_t mag;
    bool neg = s != NULL && s[0] == '-';
    int64_t v;

    if (s == NULL)
        return false;
    if (!text_parse_u64(neg ? s + 1 : s, 0,
                        neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX,
                        &mag))
        return false;
    if (neg)
        v = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    else
        v = (int64_t)mag;
    if (v < min || v > max)
        return false;
    *out = v;
    return true;
}

bool text_queue_name_ok(const char *q)
{
    size_t len;

    if (q == NULL)
        return false;
    len = strlen(q);
    if (len == 0 || len > 128)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = q[i];

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == ':' ||
              ch == '-'))
            return false;
    }
    return true;
}

/* Length of the well-formed UTF-8 sequence at p[0..len), or 0. */
static size_t utf8_seq(const uint8_t *p, size_t len)
{
    uint8_t b = p[0];

    if (b < 0x80)
        return 1;
    if (b >= 0xc2 && b <= 0xdf) {
        if (len >= 2 && (p[1] & 0xc0) == 0x80)
            return 2;
        return 0;
    }
    if (b >= 0xe0 && b <= 0xef) {
        if (len < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
            return 0;
        if (b == 0xe0 && p[1] < 0xa0) /* overlong */
            return 0;
        if (b == 0xed && p[1] >= 0xa0) /* surrogates */
            return 0;
        return 3;
    }
    if (b >= 0xf0 && b <= 0xf4) {
        if (len < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 ||
            (p[3] & 0xc0) != 0x80)
            return 0;
        if (b == 0xf0 && p[1] < 0x90) /* overlong */
            return 0;
        if (b == 0xf4 && p[1] >= 0x90) /* above U+10FFFF */
            return 0;
        return 4;
    }
    return 0;
}

bool text_utf8_valid(const uint8_t *p, size_t len)
{
    size_t i = 0;

    while (i < len) {
        size_t n = utf8_seq(p + i, len - i);

        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

void text_json_string(FILE *f, const void *data, size_t len)
{
    const uint8_t *p = data;
    size_t i = 0;

    fputc('"', f);
    while (i < len) {
        uint8_t b = p[i];
        size_t n;

        switch (b) {
        case '"':
            fputs("\\\"", f);
            i++;
            continue;
        case '\\':
            fputs("\\\\", f);
            i++;
            continue;
        case '\n':
            fputs("\\n", f);
            i++;
            continue;
        case '\r':
            fputs("\\r", f);
            i++;
            continue;
        case '\t':
            fputs("\\t", f);
            i++;
            continue;
        case '\b':
            fputs("\\b", f);
            i++;
            continue;
        case '\f':
            fputs("\\f", f);
            i++;
            continue;
        default:
            break;
        }
        if (b < 0x20 || b == 0x7f) {
            fprintf(f, "\\u%04x", (unsigned)b);
            i++;
            continue;
        }
        n = utf8_seq(p + i, len - i);
        if (n == 0) {
            fputs("\\ufffd", f);
            i++;
            continue;
        }
        fwrite(p + i, 1, n, f);
        i += n;
    }
    fputc('"', f);
}

void text_json_cstr(FILE *f, const char *s)
{
    text_json_string(f, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}

size_t text_base64_len(size_t n)
{
    if (n / 3 >= SIZE_MAX / 4 - 1)
        return SIZE_MAX;
    return (n + 2) / 3 * 4;
}

void text_base64_encode(const void *data, size_t n, char *out)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const uint8_t *in = data;
    size_t i = 0;
    char *o = out;

    for (; i + 3 <= n; i += 3) {
        uint32_t v =
            ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];

        *o++ = tab[(v >> 18) & 63];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;

        *o++ = tab[(v >> 18) & 63];
        *o++ = tab[(v >> 12) & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8);

        *o++ = tab[(v >> 18) & 63];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = '=';
    }
    *o = '\0';
}

void text_human(FILE *f, const void *data, size_t len, size_t max_chars)
{
    const uint8_t *p = data;
    size_t i = 0, chars = 0;

    if (!text_utf8_valid(p, len)) {
        char *b = max_chars == 0 && len <= (1u << 20)
                      ? malloc(text_base64_len(len) + 1)
                      : NULL;

        if (b == NULL) {
            fprintf(f, "<%zu bytes, binary>", len);
            return;
        }
        text_base64_encode(p, len, b);
        fprintf(f, "<binary, base64> %s", b);
        free(b);
        return;
    }
    while (i < len) {
        size_t n;

        if (max_chars > 0 && chars == max_chars) {
            fputs("...", f);
            return;
        }
        if (p[i] == '\n')
            fputs("\\n", f);
        else if (p[i] == '\t')
            fputs("\\t", f);
        else if (p[i] == '\r')
            fputs("\\r", f);
        else if (p[i] == '\\')
            fputs("\\\\", f);
        else if (p[i] < 0x20 || p[i] == 0x7f)
            fprintf(f, "\\x%02x", (unsigned)p[i]);
        else {
            n = utf8_seq(p + i, len - i);
            fwrite(p + i, 1, n, f);
            i += n;
            chars++;
            continue;
        }
        i++;
        chars++;
    }
}
