/* log.c: one line per event, built on the stack and written with one
 * write(2).
 *
 * The configuration lives in relaxed atomics: it is written once at start
 * and read on every call, from the loop and from worker threads. A line is
 * built in a LOG_LINE_MAX buffer by a bounded writer (lbuf) that appends a
 * piece whole or not at all, so that truncation never splits an escape
 * sequence or a UTF-8 character; the last bytes of the buffer are reserved
 * for the tail (closing quote, suppressed=, truncated=, the newline), which
 * therefore always fits.
 */
#include "log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

typedef uint64_t (*log_clock_fn)(void);

static _Atomic int log_min_level = LOG_INFO;
static _Atomic int log_fmt = LOG_TEXT;
static _Atomic int log_fd = 2;
static _Atomic(log_clock_fn) log_clock; /* NULL: CLOCK_MONOTONIC */

static const char *const level_names[] = {"trace", "debug", "info", "warn",
                                          "error"};
static const char *const level_upper[] = {"TRACE", "DEBUG", "INFO", "WARN",
                                          "ERROR"};
static const char *const format_names[] = {"text", "json"};

/* Room kept at the end of the line for the tail: `"` closing a cut JSON
 * value, ,"suppressed":"<20 digits>", ,"truncated":"true", "}" and "\n"
 * (the text tail is shorter). */
#define LOG_TAIL_RESERVE 64

_Static_assert(LOG_LINE_MAX > 2 * LOG_TAIL_RESERVE, "line too short");

int log_level_parse(const char *s, int *out)
{
    for (int i = LOG_TRACE; i <= LOG_ERROR; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    return CLAWQ_EINVALID;
}

int log_format_parse(const char *s, int *out)
{
    for (int i = LOG_TEXT; i <= LOG_JSON; i++) {
        if (strcasecmp(s, format_names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    return CLAWQ_EINVALID;
}

const char *log_level_name(int level)
{
    if (level < LOG_TRACE || level > LOG_ERROR)
        return "?";
    return level_names[level];
}

void log_init(int level, int format, int fd)
{
    CLAWQ_ASSERT(level >= LOG_TRACE && level <= LOG_ERROR);
    CLAWQ_ASSERT(format == LOG_TEXT || format == LOG_JSON);
    CLAWQ_ASSERT(fd >= 0);
    atomic_store_explicit(&log_min_level, level, memory_order_relaxed);
    atomic_store_explicit(&log_fmt, format, memory_order_relaxed);
    atomic_store_explicit(&log_fd, fd, memory_order_relaxed);
}

bool log_enabled(int level)
{
    return level >= atomic_load_explicit(&log_min_level, memory_order_relaxed);
}

void log_set_clock(uint64_t (*now_ms)(void))
{
    atomic_store_explicit(&log_clock, now_ms, memory_order_relaxed);
}

static uint64_t log_now_ms(void)
{
    log_clock_fn fn = atomic_load_explicit(&log_clock, memory_order_relaxed);
    struct timespec ts;

    if (fn != NULL)
        return fn();
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Lock-free: the thread whose compare-exchange moves next_ms forward writes
 * the line; everyone else counts. A count that races with the reset is
 * reported by the following line instead, never lost. */
bool log_ratelimit_pass(log_ratelimit *rl, uint64_t interval_ms,
                        uint64_t *suppressed)
{
    uint64_t now = log_now_ms();
    uint64_t next = __atomic_load_n(&rl->next_ms, __ATOMIC_ACQUIRE);

    if (now >= next && __atomic_compare_exchange_n(
                           &rl->next_ms, &next, now + interval_ms, false,
                           __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        *suppressed = __atomic_exchange_n(&rl->suppressed, 0, __ATOMIC_ACQ_REL);
        return true;
    }
    __atomic_add_fetch(&rl->suppressed, 1, __ATOMIC_RELAXED);
    return false;
}

/* ---- the bounded line writer ------------------------------------------ */

typedef struct lbuf {
    char *p;
    size_t len;
    size_t cap;
    bool full; /* a piece did not fit; later pieces are refused too */
} lbuf;

/* Appends n bytes whole, or nothing and marks the buffer full. */
static bool lb_put(lbuf *b, const void *s, size_t n)
{
    if (b->full || n > b->cap - b->len) {
        b->full = true;
        return false;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return true;
}

static bool lb_str(lbuf *b, const char *s)
{
    return lb_put(b, s, strlen(s));
}

/* The length of the valid UTF-8 sequence at s (1 to 4), or 0 when the
 * bytes there are not one (overlong forms and surrogates included). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    size_t len;
    uint32_t cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;
        cp = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3;
        cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
        return 0;
    return len;
}

/* Copies s for the text format: control characters and invalid UTF-8
 * bytes become \n, \r, \t or \xNN. */
static bool text_put(lbuf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, k;
    char esc[8];

    while (i < n) {
        k = u[i] < 0x20 || u[i] == 0x7f ? 0 : utf8_seq(u + i, n - i);
        if (k > 0) {
            if (!lb_put(b, u + i, k))
                return false;
            i += k;
            continue;
        }
        if (u[i] == '\n')
            memcpy(esc, "\\n", 3);
        else if (u[i] == '\r')
            memcpy(esc, "\\r", 3);
        else if (u[i] == '\t')
            memcpy(esc, "\\t", 3);
        else
            snprintf(esc, sizeof(esc), "\\x%02x", u[i]);
        if (!lb_str(b, esc))
            return false;
        i++;
    }
    return true;
}

/* Writes s as the inside of a JSON string. With `unquote`, \" and \\ in s
 * stand for " and \ (a value that was written in quotes). Invalid UTF-8
 * bytes become U+FFFD. */
static bool json_put(lbuf *b, const char *s, size_t n, bool unquote)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, k;
    char esc[8];
    unsigned char c;

    while (i < n) {
        c = u[i];
        if (unquote && c == '\\' && i + 1 < n &&
            (u[i + 1] == '"' || u[i + 1] == '\\')) {
            c = u[++i];
        }
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            esc[2] = '\0';
        } else if (c < 0x20) {
            switch (c) {
            case '\n':
                memcpy(esc, "\\n", 3);
                break;
            case '\r':
                memcpy(esc, "\\r", 3);
                break;
            case '\t':
                memcpy(esc, "\\t", 3);
                break;
            case '\b':
                memcpy(esc, "\\b", 3);
                break;
            case '\f':
                memcpy(esc, "\\f", 3);
                break;
            default:
                snprintf(esc, sizeof(esc), "\\u%04x", c);
            }
        } else {
            k = utf8_seq(u + i, n - i);
            if (k > 0) {
                if (!lb_put(b, u + i, k))
                    return false;
                i += k;
                continue;
            }
            memcpy(esc, "\\ufffd", 7);
        }
        if (!lb_str(b, esc))
            return false;
        i++;
    }
    return true;
}

/* Splits the next key=value pair off ctx[*pos..n). Returns false at the
 * end. The value of a quoted pair excludes the quotes and *quoted is set;
 * an unterminated quote runs to the end. */
static bool next_pair(const char *ctx, size_t n, size_t *pos, const char **key,
                      size_t *key_len, const char **val, size_t *val_len,
                      bool *quoted)
{
    size_t i = *pos, start;

    while (i < n && ctx[i] == ' ')
        i++;
    if (i >= n)
        return false;
    start = i;
    while (i < n && ctx[i] != ' ' && ctx[i] != '=')
        i++;
    *key = ctx + start;
    *key_len = i - start;
    *val = ctx + i;
    *val_len = 0;
    *quoted = false;
    if (i < n && ctx[i] == '=') {
        i++;
        if (i < n && ctx[i] == '"') {
            *quoted = true;
            start = ++i;
            while (i < n && ctx[i] != '"')
                i += ctx[i] == '\\' && i + 1 < n ? 2 : 1;
            *val = ctx + start;
            *val_len = i - start;
            if (i < n)
                i++; /* the closing quote */
        } else {
            start = i;
            while (i < n && ctx[i] != ' ')
                i++;
            *val = ctx + start;
            *val_len = i - start;
        }
    }
    *pos = i;
    return true;
}

static void format_ts(char *out, size_t len)
{
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    {
        size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(out + n, len - n, ".%03dZ", (int)(ts.tv_nsec / 1000000));
    }
}

/* The text line, without its tail. */
static void build_text(lbuf *b, const char *ts, int level, const char *event,
                       const char *ctx, size_t ctx_len)
{
    lb_str(b, ts);
    lb_str(b, " ");
    lb_str(b, level_upper[level]);
    lb_str(b, " ");
    text_put(b, event, strlen(event));
    if (ctx_len > 0) {
        lb_str(b, " ");
        text_put(b, ctx, ctx_len);
    }
}

/* The JSON object without its tail. When the buffer fills in the middle
 * of a field, the field is dropped if its key did not fit, and its value
 * is cut (and its string closed) if the value did not. */
static void build_json(lbuf *b, const char *ts, int level, const char *event,
                       const char *ctx, size_t ctx_len)
{
    const char *key, *val;
    size_t key_len, val_len, pos = 0, mark;
    bool quoted;

    lb_str(b, "{\"ts\":\"");
    lb_str(b, ts);
    lb_str(b, "\",\"level\":\"");
    lb_str(b, level_names[level]);
    lb_str(b, "\",\"event\":\"");
    if (!json_put(b, event, strlen(event), false)) {
        b->full = false;
        b->cap = LOG_LINE_MAX;
        lb_str(b, "\"");
        b->full = true;
        return;
    }
    lb_str(b, "\"");
    while (!b->full && next_pair(ctx, ctx_len, &pos, &key, &key_len, &val,
                                 &val_len, &quoted)) {
        mark = b->len;
        if (!lb_str(b, ",\"") || !json_put(b, key, key_len, false) ||
            !lb_str(b, "\":\"")) {
            b->len = mark;
            return;
        }
        if (!json_put(b, val, val_len, quoted)) {
            b->full = false;
            b->cap = LOG_LINE_MAX;
            lb_str(b, "\"");
            b->full = true;
            return;
        }
        lb_str(b, "\"");
    }
}

static void write_all(int fd, const char *p, size_t n)
{
    ssize_t w;

    while (n > 0) {
        w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* nowhere to report a failing log fd */
        p += w;
        n -= (size_t)w;
    }
}

void log_vemit(int level, const char *event, uint64_t suppressed,
               const char *fmt, va_list ap)
{
    char ctx[LOG_LINE_MAX];
    char line[LOG_LINE_MAX];
    char ts[32];
    char num[48];
    lbuf b = {line, 0, LOG_LINE_MAX - LOG_TAIL_RESERVE, false};
    int format = atomic_load_explicit(&log_fmt, memory_order_relaxed);
    int n;
    size_t ctx_len;
    bool truncated;

    if (!log_enabled(level))
        return;
    if (level > LOG_ERROR)
        level = LOG_ERROR;
    n = vsnprintf(ctx, sizeof(ctx), fmt, ap);
    if (n < 0)
        n = 0;
    /* A context cut by vsnprintf may end in half a character, but the
     * line fills up before its end is reached: ctx holds more bytes than
     * the body of a line. */
    ctx_len = (size_t)n < sizeof(ctx) ? (size_t)n : sizeof(ctx) - 1;
    format_ts(ts, sizeof(ts));

    if (format == LOG_JSON)
        build_json(&b, ts, level, event, ctx, ctx_len);
    else
        build_text(&b, ts, level, event, ctx, ctx_len);
    truncated = b.full || (size_t)n > ctx_len;
    b.full = false;
    b.cap = LOG_LINE_MAX;

    if (format == LOG_JSON) {
        if (suppressed > 0) {
            snprintf(num, sizeof(num), ",\"suppressed\":\"%llu\"",
                     (unsigned long long)suppressed);
            lb_str(&b, num);
        }
        if (truncated)
            lb_str(&b, ",\"truncated\":\"true\"");
        lb_str(&b, "}\n");
    } else {
        if (suppressed > 0) {
            snprintf(num, sizeof(num), " suppressed=%llu",
                     (unsigned long long)suppressed);
            lb_str(&b, num);
        }
        if (truncated)
            lb_str(&b, " truncated=true");
        lb_str(&b, "\n");
    }
    CLAWQ_ASSERT(!b.full);
    write_all(atomic_load_explicit(&log_fd, memory_order_relaxed), line, b.len);
}

void log_emit(int level, const char *event, uint64_t suppressed,
              const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vemit(level, event, suppressed, fmt, ap);
    va_end(ap);
}
