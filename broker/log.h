/* log.h: the broker's one logger: level, format, output fd, the line
 * builder and the per-call-site rate limiter.
 *
 * The logger is global and configured once at start (log_init); until then
 * it writes INFO and above as text to fd 2. Every event is one line:
 *
 *   text: 2026-11-24T02:10:33.123Z INFO raft.leader node=1 term=4
 *   json: {"ts":"2026-11-24T02:10:33.123Z","level":"info",
 *          "event":"raft.leader","node":"1","term":"4"}
 *
 * The context is printf-formatted `key=value` pairs separated by spaces. A
 * value with spaces is written in double quotes (msg="no such queue"), and
 * inside the quotes \" and \\ stand for " and \. A word without `=` is a
 * key with an empty value. The JSON format turns each pair into a string
 * field (keys ts, level, event, suppressed and truncated are the logger's:
 * do not use them as context keys). The text format prints the context as
 * given, except that control characters and invalid UTF-8 bytes are written
 * as \n, \r, \t or \xNN, so that a line never spans two lines.
 *
 * A line is at most LOG_LINE_MAX bytes, newline included. A longer one is
 * cut at a character boundary and ends with truncated=true (a JSON line
 * stays valid JSON).
 *
 * Threads: the daemon logs from its loop, but any thread may log: a line is
 * built in a buffer on the caller's stack and written with one write(2),
 * so lines from different threads never interleave (LOG_LINE_MAX is
 * PIPE_BUF, the size up to which a write to a pipe is atomic).
 *
 * Cost: LOG and LOG_RATELIMITED test the level before their arguments are
 * evaluated, so a disabled per-request trace line costs one call and a
 * compare.
 *
 * <syslog.h> defines LOG_INFO and LOG_DEBUG too: a file cannot include
 * both.
 */
#ifndef CLAWQ_LOG_H
#define CLAWQ_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#if defined(LOG_INFO) || defined(LOG_DEBUG)
#error "log.h and <syslog.h> both define LOG_INFO and LOG_DEBUG"
#endif

/* Bytes per line, newline included. */
#define LOG_LINE_MAX 4096

enum log_level { LOG_TRACE, LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

enum log_format { LOG_TEXT, LOG_JSON };

#if defined(__GNUC__)
#define LOG_PRINTF(fmt_idx, args_idx)                                          \
    __attribute__((format(printf, fmt_idx, args_idx)))
#else
#define LOG_PRINTF(fmt_idx, args_idx)
#endif

/* Parses "trace", "debug", "info", "warn" or "error" (any case) into *out.
 * Returns 0, or CLAWQ_EINVALID with *out untouched. */
int log_level_parse(const char *s, int *out);

/* Parses "text" or "json" (any case) into *out. Returns 0, or
 * CLAWQ_EINVALID with *out untouched. */
int log_format_parse(const char *s, int *out);

/* The lower-case name of a level ("info"), or "?" outside the enum. A
 * static string. */
const char *log_level_name(int level);

/* Configures the logger: lines below `level` are dropped, the rest are
 * written in `format` to `fd` (usually 2; the logger never closes it).
 * Call once at start, before other threads log. Invalid values abort: they
 * come from log_level_parse / log_format_parse. */
void log_init(int level, int format, int fd);

/* Whether a line at `level` would be written. */
bool log_enabled(int level);

/* The clock the rate limiter reads, in milliseconds (only differences
 * matter); NULL restores the default, CLOCK_MONOTONIC. For tests. The
 * timestamps on lines always come from CLOCK_REALTIME. */
void log_set_clock(uint64_t (*now_ms)(void));

/* LOG(level, event, fmt, ...): writes one line for `event` (a short dotted
 * name such as "conn.accept") with the printf-formatted key=value context.
 * The arguments are not evaluated when the level is off:
 *
 *   LOG(LOG_INFO, "raft.leader", "node=%u term=%llu", id, term);
 *
 * A line without context passes "%s", "". */
#define LOG(level, event, ...)                                                 \
    do {                                                                       \
        int log_lvl_ = (level);                                                \
        if (log_enabled(log_lvl_))                                             \
            log_emit(log_lvl_, (event), 0, __VA_ARGS__);                       \
    } while (0)

/* LOG_RATELIMITED(level, event, interval_ms, fmt, ...): like LOG, but this
 * call site writes at most one line per interval_ms; the others are
 * counted, and the next line written ends with suppressed=N. Lines dropped
 * by the level are not counted. */
#define LOG_RATELIMITED(level, event, interval_ms, ...)                        \
    do {                                                                       \
        static log_ratelimit log_rl_site_;                                     \
        int log_lvl_ = (level);                                                \
        uint64_t log_rl_n_;                                                    \
        if (log_enabled(log_lvl_) &&                                           \
            log_ratelimit_pass(&log_rl_site_, (interval_ms), &log_rl_n_))      \
            log_emit(log_lvl_, (event), log_rl_n_, __VA_ARGS__);               \
    } while (0)

/* The state of one rate-limited call site; zero-initialised. */
typedef struct log_ratelimit {
    uint64_t next_ms;    /* the first time a line may be written again */
    uint64_t suppressed; /* lines dropped since the last one written */
} log_ratelimit;

/* Whether a rate-limited line may be written now; if so, *suppressed gets
 * the number dropped since the last one written and the count restarts.
 * Safe to call from several threads on one site. */
bool log_ratelimit_pass(log_ratelimit *rl, uint64_t interval_ms,
                        uint64_t *suppressed);

/* Writes one line if `level` is enabled, with suppressed=N appended when
 * `suppressed` is not 0. What LOG and LOG_RATELIMITED expand to; call it
 * through them. log_vemit takes a va_list, for forwarding from other
 * libraries' log callbacks. */
void log_emit(int level, const char *event, uint64_t suppressed,
              const char *fmt, ...) LOG_PRINTF(4, 5);
void log_vemit(int level, const char *event, uint64_t suppressed,
               const char *fmt, va_list ap) LOG_PRINTF(4, 0);

#endif /* CLAWQ_LOG_H */
