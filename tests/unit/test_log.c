/* test_log.c: the logger: level parsing and filtering (arguments of a
 * disabled line are not evaluated), the text and JSON line formats, JSON
 * escaping, truncation at LOG_LINE_MAX, rate limiting with an injected
 * clock, and whole lines from concurrent threads. Output goes to a pipe
 * (or a temporary file for the thread test) and is read back. */
#include <check.h>
#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

static int pipe_fds[2] = {-1, -1};
static char out[64 * 1024];

static void setup(void)
{
    ck_assert_int_eq(pipe(pipe_fds), 0);
    ck_assert_int_eq(fcntl(pipe_fds[0], F_SETFL, O_NONBLOCK), 0);
}

static void teardown(void)
{
    log_init(LOG_INFO, LOG_TEXT, 2);
    log_set_clock(NULL);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
}

/* Everything written to the pipe since the last call, NUL-terminated. */
static const char *drain(void)
{
    size_t len = 0;
    ssize_t n;

    while ((n = read(pipe_fds[0], out + len, sizeof(out) - 1 - len)) > 0)
        len += (size_t)n;
    out[len] = '\0';
    return out;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;

    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

static bool matches(const char *s, const char *pattern)
{
    regex_t re;
    bool ok;

    ck_assert_int_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    ok = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

/* A JSON line with its "ts" value replaced by TS, after checking it. */
static const char *json_no_ts(const char *line)
{
    static char buf[LOG_LINE_MAX + 1];
    const char *prefix = "{\"ts\":\"";
    size_t plen = strlen(prefix);

    ck_assert_uint_gt(strlen(line), plen + 24);
    ck_assert_int_eq(strncmp(line, prefix, plen), 0);
    ck_assert_msg(matches(line + plen, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:"
                                       "[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z\""),
                  "bad ts in %s", line);
    snprintf(buf, sizeof(buf), "%sTS%s", prefix, line + plen + 24);
    return buf;
}

static int calls;

static int counted(void)
{
    return ++calls;
}

/* ---- parse ------------------------------------------------------------- */

START_TEST(parse_names)
{
    int v = -1;

    ck_assert_int_eq(log_level_parse("trace", &v), 0);
    ck_assert_int_eq(v, LOG_TRACE);
    ck_assert_int_eq(log_level_parse("debug", &v), 0);
    ck_assert_int_eq(v, LOG_DEBUG);
    ck_assert_int_eq(log_level_parse("INFO", &v), 0);
    ck_assert_int_eq(v, LOG_INFO);
    ck_assert_int_eq(log_level_parse("Warn", &v), 0);
    ck_assert_int_eq(v, LOG_WARN);
    ck_assert_int_eq(log_level_parse("error", &v), 0);
    ck_assert_int_eq(v, LOG_ERROR);

    v = 42;
    ck_assert_int_eq(log_level_parse("warning", &v), CLAWQ_EINVALID);
    ck_assert_int_eq(log_level_parse("", &v), CLAWQ_EINVALID);
    ck_assert_int_eq(v, 42);

    ck_assert_int_eq(log_format_parse("text", &v), 0);
    ck_assert_int_eq(v, LOG_TEXT);
    ck_assert_int_eq(log_format_parse("JSON", &v), 0);
    ck_assert_int_eq(v, LOG_JSON);
    v = 42;
    ck_assert_int_eq(log_format_parse("xml", &v), CLAWQ_EINVALID);
    ck_assert_int_eq(v, 42);

    ck_assert_str_eq(log_level_name(LOG_WARN), "warn");
    ck_assert_str_eq(log_level_name(99), "?");
}
END_TEST

/* ---- filter ------------------------------------------------------------ */

START_TEST(filter_skips_arguments)
{
    log_init(LOG_INFO, LOG_TEXT, pipe_fds[1]);
    calls = 0;

    ck_assert(!log_enabled(LOG_DEBUG));
    ck_assert(log_enabled(LOG_INFO));
    ck_assert(log_enabled(LOG_ERROR));

    LOG(LOG_TRACE, "t.off", "n=%d", counted());
    LOG(LOG_DEBUG, "t.off", "n=%d", counted());
    LOG_RATELIMITED(LOG_DEBUG, "t.off", 1000, "n=%d", counted());
    ck_assert_int_eq(calls, 0);
    ck_assert_str_eq(drain(), "");

    LOG(LOG_INFO, "t.on", "n=%d", counted());
    LOG(LOG_ERROR, "t.on", "n=%d", counted());
    ck_assert_int_eq(calls, 2);
    ck_assert_uint_eq(count_lines(drain()), 2);

    log_init(LOG_ERROR, LOG_TEXT, pipe_fds[1]);
    LOG(LOG_WARN, "t.off", "n=%d", counted());
    ck_assert_int_eq(calls, 2);
    ck_assert_str_eq(drain(), "");
}
END_TEST

/* ---- text -------------------------------------------------------------- */

START_TEST(text_format)
{
    log_init(LOG_TRACE, LOG_TEXT, pipe_fds[1]);

    LOG(LOG_INFO, "raft.leader", "node=%u term=%llu", 1u, 4ULL);
    ck_assert_msg(matches(drain(), "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:"
                                   "[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z INFO "
                                   "raft\\.leader node=1 term=4\n$"),
                  "got %s", out);

    LOG(LOG_TRACE, "conn.read", "%s", "");
    ck_assert_msg(matches(drain(), "Z TRACE conn\\.read\n$"), "got %s", out);

    /* A value from the network cannot start a new line. */
    LOG(LOG_WARN, "queue.bad", "name=%s", "a\nb\tc\x01\xff");
    ck_assert_msg(matches(drain(), "Z WARN queue\\.bad "
                                   "name=a\\\\nb\\\\tc\\\\x01\\\\xff\n$"),
                  "got %s", out);
    ck_assert_uint_eq(count_lines(out), 1);
}
END_TEST

/* ---- json -------------------------------------------------------------- */

START_TEST(json_fields)
{
    log_init(LOG_TRACE, LOG_JSON, pipe_fds[1]);

    LOG(LOG_INFO, "raft.leader", "node=%u term=%llu", 1u, 4ULL);
    ck_assert_str_eq(json_no_ts(drain()),
                     "{\"ts\":\"TS\",\"level\":\"info\",\"event\":"
                     "\"raft.leader\",\"node\":\"1\",\"term\":\"4\"}\n");

    LOG(LOG_ERROR, "req.fail", "conn=%d msg=\"%s\"  code=%d", 7,
        "no such queue", -2);
    ck_assert_str_eq(json_no_ts(drain()),
                     "{\"ts\":\"TS\",\"level\":\"error\",\"event\":"
                     "\"req.fail\",\"conn\":\"7\",\"msg\":\"no such queue\","
                     "\"code\":\"-2\"}\n");

    /* A bare word is a key with an empty value; an empty value stays. */
    LOG(LOG_DEBUG, "x", "paused a= b=\"\"");
    ck_assert_str_eq(json_no_ts(drain()),
                     "{\"ts\":\"TS\",\"level\":\"debug\",\"event\":\"x\","
                     "\"paused\":\"\",\"a\":\"\",\"b\":\"\"}\n");

    LOG(LOG_WARN, "x", "%s", "");
    ck_assert_str_eq(json_no_ts(drain()),
                     "{\"ts\":\"TS\",\"level\":\"warn\",\"event\":\"x\"}\n");
}
END_TEST

START_TEST(json_escaping)
{
    log_init(LOG_TRACE, LOG_JSON, pipe_fds[1]);

    /* Quotes and backslashes in a quoted value: \" and \\ are escapes
     * of the context syntax; another backslash is kept. */
    LOG(LOG_INFO, "x", "msg=\"say \\\"hi\\\" c:\\\\d \\n\"");
    ck_assert_str_eq(json_no_ts(drain()),
                     "{\"ts\":\"TS\",\"level\":\"info\",\"event\":\"x\","
                     "\"msg\":\"say \\\"hi\\\" c:\\\\d \\\\n\"}\n");

    /* Unquoted: every byte is data. */
    LOG(LOG_INFO, "x", "path=%s", "a\"b\\c");
    ck_assert_str_eq(json_no_ts(drain()),
                     "{\"ts\":\"TS\",\"level\":\"info\",\"event\":\"x\","
                     "\"path\":\"a\\\"b\\\\c\"}\n");

    /* Control characters. */
    LOG(LOG_INFO, "x", "v=%s", "\x01\n\r\t\b\f\x1f\x7f");
    ck_assert_str_eq(json_no_ts(drain()),
                     "{\"ts\":\"TS\",\"level\":\"info\",\"event\":\"x\","
                     "\"v\":\"\\u0001\\n\\r\\t\\b\\f\\u001f\x7f\"}\n");

    /* UTF-8 passes; invalid bytes become U+FFFD. */
    LOG(LOG_INFO, "x", "v=%s",
        "caf\xc3\xa9 \xe2\x82\xac|\xc3|\xff|\xed\xa0\x80");
    ck_assert_str_eq(json_no_ts(drain()),
                     "{\"ts\":\"TS\",\"level\":\"info\",\"event\":\"x\","
                     "\"v\":\"caf\xc3\xa9\"," /* the space ends the value */
                     "\"\xe2\x82\xac|\\ufffd|\\ufffd|\\ufffd\\ufffd\\ufffd\":"
                     "\"\"}\n");

    /* Keys and the event are escaped too. */
    LOG(LOG_INFO, "e\"v", "k\"ey=1");
    ck_assert_str_eq(json_no_ts(drain()),
                     "{\"ts\":\"TS\",\"level\":\"info\",\"event\":\"e\\\"v\","
                     "\"k\\\"ey\":\"1\"}\n");
}
END_TEST

/* ---- truncate ---------------------------------------------------------- */

static char big[3 * LOG_LINE_MAX];

static void fill_big(const char *unit)
{
    size_t n = strlen(unit), len = 0;

    while (len + n < sizeof(big)) {
        memcpy(big + len, unit, n);
        len += n;
    }
    big[len] = '\0';
}

/* Every 0xc3 is followed by 0xa9: no "é" was cut in two. */
static void assert_whole_e_acute(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s == 0xc3)
            ck_assert_uint_eq((unsigned char)s[1], 0xa9);
        if ((unsigned char)*s == 0xa9)
            ck_assert_uint_eq((unsigned char)s[-1], 0xc3);
    }
}

START_TEST(truncate_text)
{
    const char *tail = " truncated=true\n";
    size_t len;

    log_init(LOG_TRACE, LOG_TEXT, pipe_fds[1]);
    fill_big("\xc3\xa9");
    LOG(LOG_INFO, "big", "v=%s", big);
    len = strlen(drain());
    ck_assert_uint_le(len, LOG_LINE_MAX);
    ck_assert_uint_gt(len, LOG_LINE_MAX - 100);
    ck_assert_uint_eq(count_lines(out), 1);
    ck_assert_str_eq(out + len - strlen(tail), tail);
    assert_whole_e_acute(out);

    /* Control characters escape to four bytes: never cut inside one. */
    fill_big("\x01");
    LOG(LOG_INFO, "big", "v=%s", big);
    len = strlen(drain());
    ck_assert_uint_le(len, LOG_LINE_MAX);
    ck_assert_msg(matches(out, "v=(\\\\x01)+ truncated=true\n$"), "got %s",
                  out);
}
END_TEST

START_TEST(truncate_json)
{
    const char *tail = "\",\"truncated\":\"true\"}\n";
    size_t len, slashes;

    log_init(LOG_TRACE, LOG_JSON, pipe_fds[1]);
    fill_big("\xc3\xa9");
    LOG(LOG_INFO, "big", "a=1 v=%s", big);
    len = strlen(drain());
    ck_assert_uint_le(len, LOG_LINE_MAX);
    ck_assert_uint_gt(len, LOG_LINE_MAX - 100);
    ck_assert_str_eq(out + len - strlen(tail), tail);
    ck_assert_ptr_nonnull(strstr(out, "\"a\":\"1\",\"v\":\"\xc3\xa9"));
    assert_whole_e_acute(out);

    /* Quotes escape to two bytes: the cut value ends after a whole \",
     * i.e. an even run of backslashes precedes the closing quote. */
    fill_big("\"");
    LOG(LOG_INFO, "big", "v=x%s", big);
    len = strlen(drain());
    ck_assert_uint_le(len, LOG_LINE_MAX);
    ck_assert_str_eq(out + len - strlen(tail), tail);
    slashes = 0;
    for (const char *p = out + len - strlen(tail) - 1; *p == '\\'; p--)
        slashes++;
    ck_assert_uint_eq(slashes % 2, 0);

    /* A field whose key does not fit is dropped whole. */
    memset(big, 'k', LOG_LINE_MAX - 50);
    big[LOG_LINE_MAX - 50] = '\0';
    LOG(LOG_INFO, "big", "a=1 %s=2 b=3", big);
    ck_assert_str_eq(json_no_ts(drain()),
                     "{\"ts\":\"TS\",\"level\":\"info\",\"event\":\"big\","
                     "\"a\":\"1\",\"truncated\":\"true\"}\n");
}
END_TEST

/* ---- ratelimit --------------------------------------------------------- */

static uint64_t fake_now;

static uint64_t fake_clock(void)
{
    return fake_now;
}

/* One call site, hit n times. */
static void hit(int n)
{
    for (int i = 0; i < n; i++)
        LOG_RATELIMITED(LOG_WARN, "disk.slow", 1000, "i=%d", i);
}

START_TEST(ratelimit_counts)
{
    log_init(LOG_TRACE, LOG_TEXT, pipe_fds[1]);
    log_set_clock(fake_clock);
    fake_now = 5000;

    hit(5);
    ck_assert_msg(matches(drain(), "^[^\n]* WARN disk\\.slow i=0\n$"), "got %s",
                  out);

    fake_now += 999;
    hit(3);
    ck_assert_str_eq(drain(), "");

    fake_now += 1;
    hit(1);
    ck_assert_msg(matches(drain(), "^[^\n]* WARN disk\\.slow i=0 "
                                   "suppressed=7\n$"),
                  "got %s", out);

    /* Nothing was dropped since: no count on the next line. */
    fake_now += 5000;
    hit(1);
    ck_assert_msg(matches(drain(), "^[^\n]* disk\\.slow i=0\n$"), "got %s",
                  out);

    /* Another call site has its own budget. */
    LOG_RATELIMITED(LOG_WARN, "other", 1000, "%s", "");
    ck_assert_uint_eq(count_lines(drain()), 1);

    /* JSON carries the count as a field. */
    log_init(LOG_TRACE, LOG_JSON, pipe_fds[1]);
    hit(4);
    fake_now += 1000;
    hit(1);
    ck_assert_str_eq(json_no_ts(drain()),
                     "{\"ts\":\"TS\",\"level\":\"warn\",\"event\":"
                     "\"disk.slow\",\"i\":\"0\",\"suppressed\":\"4\"}\n");
}
END_TEST

/* ---- threads ----------------------------------------------------------- */

#define N_THREADS 4
#define N_LINES 500

static void *log_lines(void *arg)
{
    int t = (int)(intptr_t)arg;
    char pad[301];

    memset(pad, 'a' + t, sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    for (int i = 0; i < N_LINES; i++)
        LOG(LOG_INFO, "t", "thread=%d i=%d pad=%s", t, i, pad);
    return NULL;
}

START_TEST(threads_whole_lines)
{
    char path[] = "/tmp/clawq-test-log-XXXXXX";
    int fd = mkstemp(path);
    pthread_t th[N_THREADS];
    FILE *f;
    char line[LOG_LINE_MAX + 2];
    int seen[N_THREADS] = {0};
    size_t n = 0;

    ck_assert_int_ge(fd, 0);
    unlink(path);
    ck_assert_int_eq(fcntl(fd, F_SETFL, O_APPEND), 0);
    log_init(LOG_INFO, LOG_TEXT, fd);
    for (int t = 0; t < N_THREADS; t++)
        ck_assert_int_eq(
            pthread_create(&th[t], NULL, log_lines, (void *)(intptr_t)t), 0);
    for (int t = 0; t < N_THREADS; t++)
        ck_assert_int_eq(pthread_join(th[t], NULL), 0);

    ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
    f = fdopen(fd, "r");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        int t, i, off = 0;
        char *pad;

        ck_assert_ptr_nonnull(strstr(line, "thread="));
        ck_assert_msg(sscanf(strstr(line, "thread="), "thread=%d i=%d pad=%n",
                             &t, &i, &off) == 2 &&
                          off > 0,
                      "mangled line %s", line);
        ck_assert_int_ge(t, 0);
        ck_assert_int_lt(t, N_THREADS);
        ck_assert_int_eq(i, seen[t]); /* in order within a thread */
        seen[t]++;
        pad = strstr(line, "pad=") + 4;
        ck_assert_uint_eq(strspn(pad, (char[]){(char)('a' + t), 0}), 300);
        ck_assert_str_eq(pad + 300, "\n");
        n++;
    }
    fclose(f);
    ck_assert_uint_eq(n, N_THREADS * N_LINES);
}
END_TEST

static Suite *log_suite(void)
{
    Suite *s = suite_create("log");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"parse", parse_names},
        {"filter", filter_skips_arguments},
        {"text", text_format},
        {"json", json_fields},
        {"json_escape", json_escaping},
        {"truncate_text", truncate_text},
        {"truncate_json", truncate_json},
        {"ratelimit", ratelimit_counts},
        {"threads", threads_whole_lines},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(log_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
