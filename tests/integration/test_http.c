/* test_http.c: clawqd's HTTP endpoint (--http) through plain sockets:
 * /healthz, /readyz, /metrics after traffic on three queues (checked by
 * `promtool check metrics` and against clawq_queue_stats_get), /v1/queues
 * and /v1/queues/NAME against the same stats, 404 / 405 / 400, an
 * oversized head answered and survived, keep-alive and Connection: close,
 * and a clean SIGTERM with an idle HTTP connection open; snapshot
 * spacing, the zero-filled log segments and the segment size as /metrics
 * and the files show them. Each test gets its own broker. */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define PROMTOOL "/usr/bin/promtool"
#define RESP_MAX (4u << 20)

static th_broker *B;
static clawq_client *C;

static void setup(void)
{
    B = th_broker_start(NULL);
    C = th_connect(B);
}

static void teardown(void)
{
    clawq_close(C);
    C = NULL;
    th_broker_free(B);
    B = NULL;
}

/* ---- a tiny HTTP/1.1 client ---- */

/* A connection to b's HTTP port, send and receive bounded to 5 s. */
static int http_connect(const th_broker *b)
{
    struct sockaddr_in sa;
    struct timeval tv = {5, 0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons(b->http_port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0,
                  "connect to http port %u: %s", b->http_port, strerror(errno));
    return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        ck_assert_msg(w > 0, "send: %s", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
}

typedef struct resp {
    int status;
    char head[4096]; /* status line and headers, NUL-terminated */
    char *body;      /* NUL-terminated, malloc'd */
    size_t body_len;
} resp;

/* The value of header name in r (case-insensitive), copied into out, or
 * false. */
static bool resp_header(const resp *r, const char *name, char *out,
                        size_t out_len)
{
    size_t nl = strlen(name);
    const char *p = strstr(r->head, "\r\n");

    while (p != NULL && p[2] != '\0') {
        const char *line = p + 2, *end = strstr(line, "\r\n");
        if (end == NULL)
            break;
        if ((size_t)(end - line) > nl && line[nl] == ':' &&
            strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1;
            size_t len;
            while (*v == ' ')
                v++;
            len = (size_t)(end - v);
            if (len >= out_len)
                len = out_len - 1;
            memcpy(out, v, len);
            out[len] = '\0';
            return true;
        }
        p = end;
    }
    return false;
}

/* A connection's bytes received but not yet consumed: pipelined answers
 * may arrive in one read. */
typedef struct hconn {
    int fd;
    char buf[8192];
    size_t have;
} hconn;

static void hconn_open(const th_broker *b, hconn *h)
{
    h->fd = http_connect(b);
    h->have = 0;
}

/* Reads one response from h (its body unless head_only). Asserts on a
 * malformed or truncated one. */
static void read_resp(hconn *h, bool head_only, resp *r)
{
    char cl[32];
    size_t head_len, want, from_buf;
    char *end;

    memset(r, 0, sizeof(*r));
    for (;;) {
        ssize_t n;
        h->buf[h->have] = '\0';
        end = strstr(h->buf, "\r\n\r\n");
        if (end != NULL)
            break;
        ck_assert_uint_lt(h->have, sizeof(h->buf) - 1);
        n = recv(h->fd, h->buf + h->have, sizeof(h->buf) - 1 - h->have, 0);
        if (n < 0 && errno == EINTR)
            continue;
        ck_assert_msg(n > 0, "response head: %s (got %zu bytes)",
                      n == 0 ? "EOF" : strerror(errno), h->have);
        h->have += (size_t)n;
    }
    head_len = (size_t)(end - h->buf) + 4;
    ck_assert_uint_lt(head_len, sizeof(r->head));
    memcpy(r->head, h->buf, head_len);
    r->head[head_len] = '\0';
    ck_assert_msg(sscanf(r->head, "HTTP/1.1 %d ", &r->status) == 1,
                  "status line: %s", r->head);
    if (!resp_header(r, "Content-Length", cl, sizeof(cl)))
        ck_abort_msg("no Content-Length: %s", r->head);
    want = head_only ? 0 : strtoull(cl, NULL, 10);
    ck_assert_uint_le(want, RESP_MAX);
    r->body = malloc(want + 1);
    ck_assert_ptr_nonnull(r->body);
    from_buf = h->have - head_len < want ? h->have - head_len : want;
    memcpy(r->body, h->buf + head_len, from_buf);
    r->body_len = from_buf;
    memmove(h->buf, h->buf + head_len + from_buf,
            h->have - head_len - from_buf);
    h->have -= head_len + from_buf;
    while (r->body_len < want) {
        ssize_t n = recv(h->fd, r->body + r->body_len, want - r->body_len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        ck_assert_msg(n > 0, "response body: %s at %zu of %zu",
                      n == 0 ? "EOF" : strerror(errno), r->body_len, want);
        r->body_len += (size_t)n;
    }
    r->body[r->body_len] = '\0';
}

/* Asserts that the server closed h with nothing more sent, and closes. */
static void hconn_expect_closed(hconn *h)
{
    char tail[16];

    ck_assert_uint_eq(h->have, 0);
    ck_assert_int_eq(recv(h->fd, tail, sizeof(tail), 0), 0);
    close(h->fd);
}

static void resp_fini(resp *r)
{
    free(r->body);
    r->body = NULL;
}

/* One request on a fresh connection with Connection: close; the server
 * must close after the answer. */
static void http_req(const th_broker *b, const char *method, const char *path,
                     resp *r)
{
    char req[512];
    hconn h;
    int n;

    hconn_open(b, &h);
    n = snprintf(req, sizeof(req),
                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Connection: close\r\n\r\n",
                 method, path);
    send_all(h.fd, req, (size_t)n);
    read_resp(&h, strcmp(method, "HEAD") == 0, r);
    hconn_expect_closed(&h);
}

static void http_get(const th_broker *b, const char *path, resp *r)
{
    http_req(b, "GET", path, r);
}

/* ---- tiny value lookups ---- */

/* The number after "key": inside the JSON object that starts at obj (no
 * nested objects in it). Asserts that it is there. */
static double json_num(const char *obj, const char *key)
{
    char pat[160];
    const char *end = strchr(obj, '}'), *p;
    char *stop;
    double v;

    ck_assert_ptr_nonnull(end);
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    p = strstr(obj, pat);
    ck_assert_msg(p != NULL && p < end, "no %s in %.*s", key,
                  (int)(end - obj + 1), obj);
    v = strtod(p + strlen(pat), &stop);
    ck_assert_msg(stop != p + strlen(pat), "%s is not a number", key);
    return v;
}

/* The object of queue name in a /v1/queues body. */
static const char *json_queue(const char *body, const char *name)
{
    char pat[160];
    const char *p;

    snprintf(pat, sizeof(pat), "\"%s\":{", name);
    p = strstr(body, pat);
    ck_assert_msg(p != NULL, "queue %s not in %s", name, body);
    return p + strlen(pat) - 1;
}

/* The value of the sample `series` (name and labels exactly as written)
 * in a /metrics body; asserts that it is there. */
static double prom_value(const char *body, const char *series)
{
    size_t len = strlen(series);
    const char *p = body;

    for (;;) {
        if (strncmp(p, series, len) == 0 && p[len] == ' ')
            return strtod(p + len + 1, NULL);
        p = strchr(p, '\n');
        ck_assert_msg(p != NULL, "no sample %s", series);
        p++;
    }
}

/* ---- traffic ---- */

static uint64_t put(const char *queue, const char *payload)
{
    clawq_put_task t;
    uint64_t id = 0;

    clawq_put_task_init(&t);
    t.payload = payload;
    t.payload_len = strlen(payload);
    th_assert_ok(C, clawq_put(C, queue, &t, &id, NULL));
    return id;
}

static clawq_task *pull_one(const char *queue)
{
    clawq_task *t = NULL;
    size_t n = 0;

    th_assert_ok(C, clawq_pull(C, queue, 1, 1000, 0, &t, &n));
    ck_assert_uint_eq(n, 1);
    return t;
}

/* a: 3 puts, one acked, one nacked back to ready, one leased;
 * b: 2 puts, one failed to the DLQ, a worker report (1 of 4);
 * "c.x:y-z": 1 put, paused. */
static void make_traffic(void)
{
    clawq_task *t;

    put("a", "1");
    put("a", "2");
    put("a", "3");
    t = pull_one("a");
    th_assert_ok(C, clawq_ack(C, t->id, t->lease_id));
    clawq_tasks_free(t);
    t = pull_one("a");
    th_assert_ok(C, clawq_nack(C, t->id, t->lease_id, 0, "again"));
    clawq_tasks_free(t);
    t = pull_one("a");
    clawq_tasks_free(t); /* stays leased */

    put("b", "1");
    put("b", "2");
    t = pull_one("b");
    th_assert_ok(C, clawq_fail(C, t->id, t->lease_id, "broken"));
    clawq_tasks_free(t);
    th_assert_ok(C, clawq_report(C, "b", 1, 4));

    put("c.x:y-z", "1");
    ck_assert_int_eq(th_ctl(B, NULL, 0, "pause", "c.x:y-z", NULL), 0);
}

static clawq_queue_stats stats(const char *queue)
{
    clawq_queue_stats s;

    th_assert_ok(C, clawq_queue_stats_get(C, queue, &s));
    return s;
}

static const char *const QUEUES[3] = {"a", "b", "c.x:y-z"};

/* ---- tests ---- */

START_TEST(test_healthz_readyz)
{
    resp r;
    char ct[128];

    http_get(B, "/healthz", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "ok\n");
    resp_fini(&r);

    http_get(B, "/readyz", &r);
    ck_assert_msg(r.status == 200, "readyz %d: %s", r.status, r.body);
    ck_assert_msg(resp_header(&r, "Content-Type", ct, sizeof(ct)), "%s",
                  r.head);
    resp_fini(&r);

    http_req(B, "HEAD", "/healthz", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_uint_eq(r.body_len, 0);
    resp_fini(&r);
}
END_TEST

START_TEST(test_metrics_promtool)
{
    char path[400], cmd[512], line[512], ct[128], series[128], out[4096];
    size_t out_len = 0;
    resp r;
    FILE *f, *p;
    int st;

    if (access(PROMTOOL, X_OK) != 0)
        ck_abort_msg(PROMTOOL " is missing: install it (scripts/dev deps)");
    make_traffic();

    http_get(B, "/metrics", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(resp_header(&r, "Content-Type", ct, sizeof(ct)));
    ck_assert_str_eq(ct, "text/plain; version=0.0.4; charset=utf-8");
    ck_assert_uint_gt(r.body_len, 0);
    ck_assert_int_eq(r.body[r.body_len - 1], '\n');

    snprintf(path, sizeof(path), "%s/metrics.txt", B->dir);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(r.body, 1, r.body_len, f), r.body_len);
    ck_assert_int_eq(fclose(f), 0);
    snprintf(cmd, sizeof(cmd), PROMTOOL " check metrics < '%s' 2>&1", path);
    p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    while (fgets(line, sizeof(line), p) != NULL) {
        size_t n = strlen(line);
        if (out_len + n < sizeof(out)) {
            memcpy(out + out_len, line, n);
            out_len += n;
        }
    }
    out[out_len] = '\0';
    st = pclose(p);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "promtool check metrics exit %d:\n%s", WEXITSTATUS(st), out);
    ck_assert_msg(out_len == 0, "promtool check metrics reported:\n%s", out);

    for (int i = 0; i < 3; i++) {
        clawq_queue_stats s = stats(QUEUES[i]);
#define CHECK(family, v)                                                       \
    do {                                                                       \
        snprintf(series, sizeof(series), "%s{queue=\"%s\"}", family,           \
                 QUEUES[i]);                                                   \
        ck_assert_msg(prom_value(r.body, series) == (double)(v),               \
                      "%s = %g, stats say %llu", series,                       \
                      prom_value(r.body, series), (unsigned long long)(v));    \
    } while (0)
        CHECK("clawq_queue_ready_tasks", s.ready);
        CHECK("clawq_queue_delayed_tasks", s.delayed);
        CHECK("clawq_queue_leased_tasks", s.leased);
        CHECK("clawq_queue_dead_tasks", s.dead);
        CHECK("clawq_queue_put_total", s.put_total);
        CHECK("clawq_queue_acked_total", s.acked_total);
        CHECK("clawq_queue_nacked_total", s.nacked_total);
        CHECK("clawq_queue_failed_total", s.failed_total);
        CHECK("clawq_queue_dead_lettered_total", s.dead_total);
        CHECK("clawq_queue_delivered_total", s.leased_total);
        CHECK("clawq_queue_paused", s.settings.paused ? 1 : 0);
        CHECK("clawq_queue_workers", s.workers);
        CHECK("clawq_queue_worker_capacity_tasks", s.worker_capacity);
        CHECK("clawq_queue_worker_inflight_tasks", s.worker_inflight);
#undef CHECK
    }
    /* The traffic itself, so the comparison above is not 0 == 0. */
    ck_assert_double_eq(
        prom_value(r.body, "clawq_queue_ready_tasks{queue=\"a\"}"), 1);
    ck_assert_double_eq(
        prom_value(r.body, "clawq_queue_leased_tasks{queue=\"a\"}"), 1);
    ck_assert_double_eq(
        prom_value(r.body, "clawq_queue_nacked_total{queue=\"a\"}"), 1);
    ck_assert_double_eq(
        prom_value(r.body, "clawq_queue_failed_total{queue=\"b\"}"), 1);
    ck_assert_double_eq(
        prom_value(r.body, "clawq_queue_paused{queue=\"c.x:y-z\"}"), 1);
    ck_assert_double_eq(prom_value(r.body, "clawq_queue_workers{queue=\"b\"}"),
                        1);
    ck_assert_double_eq(
        prom_value(r.body, "clawq_queue_worker_capacity_tasks{queue=\"b\"}"),
        4);
    ck_assert_double_eq(
        prom_value(r.body, "clawq_task_put_to_ack_seconds_count{queue=\"a\"}"),
        1);
    ck_assert_double_eq(
        prom_value(
            r.body,
            "clawq_task_put_to_ack_seconds_bucket{queue=\"a\",le=\"+Inf\"}"),
        1);
    ck_assert_double_eq(
        prom_value(r.body, "clawq_task_lease_held_seconds_count{queue=\"a\"}"),
        2); /* the ack and the nack */
    ck_assert_double_eq(
        prom_value(r.body, "clawq_task_lease_held_seconds_count{queue=\"b\"}"),
        1);
    ck_assert_double_ge(prom_value(r.body, "clawq_connections"), 1);
    ck_assert_double_eq(prom_value(r.body, "clawq_raft_leader"), 1);
    ck_assert_double_ge(prom_value(r.body, "clawq_raft_term"), 1);
    ck_assert_double_ge(prom_value(r.body, "clawq_raft_applied_index"), 1);
    ck_assert_double_gt(
        prom_value(r.body, "clawq_process_resident_memory_bytes"), 0);
    ck_assert_ptr_nonnull(strstr(r.body, "\nclawq_build_info{version=\""));
    resp_fini(&r);
}
END_TEST

START_TEST(test_queues_json)
{
    resp r, one;

    make_traffic();
    http_get(B, "/v1/queues", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.head, "application/json"));
    ck_assert_msg(strncmp(r.body, "{\"node_id\":1,\"queues\":{", 23) == 0, "%s",
                  r.body);
    for (int i = 0; i < 3; i++) {
        clawq_queue_stats s = stats(QUEUES[i]);
        const char *q = json_queue(r.body, QUEUES[i]);
        char path[200];

        ck_assert_double_eq(json_num(q, "ready"), s.ready);
        ck_assert_double_eq(json_num(q, "delayed"), s.delayed);
        ck_assert_double_eq(json_num(q, "leased"), s.leased);
        ck_assert_double_eq(json_num(q, "dead"), s.dead);
        ck_assert_double_eq(json_num(q, "backlog"), s.ready + s.leased);
        ck_assert_double_eq(json_num(q, "put_total"), s.put_total);
        ck_assert_double_eq(json_num(q, "acked_total"), s.acked_total);
        ck_assert_double_eq(json_num(q, "nacked_total"), s.nacked_total);
        ck_assert_double_eq(json_num(q, "failed_total"), s.failed_total);
        ck_assert_double_eq(json_num(q, "dead_lettered_total"), s.dead_total);
        ck_assert_double_eq(json_num(q, "delivered_total"), s.leased_total);
        ck_assert_double_eq(json_num(q, "deduplicated_total"), s.deduped_total);
        ck_assert_double_ge(json_num(q, "oldest_ready_age_seconds"), 0);
        ck_assert_double_eq(json_num(q, "workers"), s.workers);
        ck_assert_double_eq(json_num(q, "worker_capacity"), s.worker_capacity);
        ck_assert_double_eq(json_num(q, "worker_inflight"), s.worker_inflight);

        /* The single-queue object is the same one. */
        snprintf(path, sizeof(path), "/v1/queues/%s", QUEUES[i]);
        http_get(B, path, &one);
        ck_assert_int_eq(one.status, 200);
        ck_assert_int_eq(one.body[0], '{');
        ck_assert_double_eq(json_num(one.body, "ready"), s.ready);
        ck_assert_double_eq(json_num(one.body, "dead"), s.dead);
        ck_assert_double_eq(json_num(one.body, "acked_total"), s.acked_total);
        ck_assert_ptr_nonnull(strstr(one.body, s.settings.paused
                                                   ? "\"paused\":true"
                                                   : "\"paused\":false"));
        resp_fini(&one);
    }
    ck_assert_double_eq(json_num(json_queue(r.body, "a"), "ready"), 1);
    ck_assert_double_eq(json_num(json_queue(r.body, "b"), "dead"), 1);
    ck_assert_double_eq(json_num(json_queue(r.body, "b"), "workers"), 1);
    ck_assert_double_eq(
        json_num(json_queue(r.body, "b"), "worker_median_capacity"), 4);
    resp_fini(&r);
}
END_TEST

START_TEST(test_errors)
{
    resp r;

    http_get(B, "/v1/queues/unknown", &r);
    ck_assert_int_eq(r.status, 404);
    ck_assert_ptr_nonnull(strstr(r.body, "\"error\""));
    resp_fini(&r);

    http_get(B, "/v1/queues/bad%20name", &r);
    ck_assert_int_eq(r.status, 400);
    resp_fini(&r);

    http_get(B, "/nope", &r);
    ck_assert_int_eq(r.status, 404);
    resp_fini(&r);

    http_req(B, "POST", "/metrics", &r);
    ck_assert_int_eq(r.status, 405);
    ck_assert_ptr_nonnull(strstr(r.head, "\r\nAllow: GET, HEAD\r\n"));
    resp_fini(&r);

    http_req(B, "DELETE", "/v1/queues/a", &r);
    ck_assert_int_eq(r.status, 405);
    resp_fini(&r);
}
END_TEST

START_TEST(test_oversized_head)
{
    static const char with_body[] =
        "GET /healthz HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
    static const char garbage[] = "\x01\x02 nonsense\r\n\r\n";
    size_t big = 100 * 1024;
    char *req = malloc(big + 128);
    hconn h;
    int n;
    resp r;

    ck_assert_ptr_nonnull(req);
    n = sprintf(req, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(req + n, 'a', big);
    memcpy(req + n + big, "\r\n\r\n", 4);
    hconn_open(B, &h);
    send_all(h.fd, req, (size_t)n + big + 4);
    free(req);
    read_resp(&h, false, &r);
    ck_assert_msg(r.status == 431 || r.status == 400, "status %d", r.status);
    resp_fini(&r);
    hconn_expect_closed(&h);

    /* Garbage gets 400. */
    hconn_open(B, &h);
    send_all(h.fd, garbage, sizeof(garbage) - 1);
    read_resp(&h, false, &r);
    ck_assert_int_eq(r.status, 400);
    resp_fini(&r);
    hconn_expect_closed(&h);

    /* A body gets 413. */
    hconn_open(B, &h);
    send_all(h.fd, with_body, sizeof(with_body) - 1);
    read_resp(&h, false, &r);
    ck_assert_int_eq(r.status, 413);
    resp_fini(&r);
    hconn_expect_closed(&h);

    /* Still serving. */
    http_get(B, "/healthz", &r);
    ck_assert_int_eq(r.status, 200);
    resp_fini(&r);
    ck_assert(th_broker_alive(B));
}
END_TEST

START_TEST(test_keep_alive)
{
    static const char get_health[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    static const char get_ready[] = "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n";
    static const char get_close[] =
        "GET /v1/queues HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    hconn h;
    resp r;

    hconn_open(B, &h);
    send_all(h.fd, get_health, sizeof(get_health) - 1);
    read_resp(&h, false, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_null(strstr(r.head, "Connection: close"));
    resp_fini(&r);

    send_all(h.fd, get_ready, sizeof(get_ready) - 1);
    read_resp(&h, false, &r);
    ck_assert_int_eq(r.status, 200);
    resp_fini(&r);

    /* Pipelined: two requests in one write, answered in order. */
    {
        char two[sizeof(get_health) * 2];
        snprintf(two, sizeof(two), "%s%s", get_health, get_health);
        send_all(h.fd, two, strlen(two));
        read_resp(&h, false, &r);
        ck_assert_int_eq(r.status, 200);
        ck_assert_str_eq(r.body, "ok\n");
        resp_fini(&r);
        read_resp(&h, false, &r);
        ck_assert_int_eq(r.status, 200);
        ck_assert_str_eq(r.body, "ok\n");
        resp_fini(&r);
    }

    /* Connection: close is honoured. */
    send_all(h.fd, get_close, sizeof(get_close) - 1);
    read_resp(&h, false, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.head, "Connection: close"));
    resp_fini(&r);
    hconn_expect_closed(&h);
}
END_TEST

START_TEST(test_sigterm_with_idle_connection)
{
    static const char get[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    char tail[16];
    hconn h;
    int idle;
    resp r;

    hconn_open(B, &h);
    idle = http_connect(B);
    send_all(h.fd, get, sizeof(get) - 1);
    read_resp(&h, false, &r);
    ck_assert_int_eq(r.status, 200);
    resp_fini(&r);
    clawq_close(C);
    C = NULL;
    ck_assert_int_eq(th_broker_stop(B, 8000), 0);
    ck_assert_int_le(recv(h.fd, tail, sizeof(tail), 0), 0);
    close(h.fd);
    close(idle);
}
END_TEST

/* Snapshot spacing follows the entry size: with --snapshot-threshold 64,
 * 200 one-task entries take snapshots when the log-size target is off
 * (--snapshot-log-size 0) and none with the default 64M (the threshold
 * grows to 64M of log). */
START_TEST(test_snapshot_spacing)
{
    static const char *const sizes[] = {"0", "64M"};

    for (size_t k = 0; k < 2; k++) {
        th_broker *b = th_broker_start("--snapshot-threshold", "64",
                                       "--snapshot-log-size", sizes[k], NULL);
        clawq_client *c = th_connect(b);
        clawq_put_task t;
        uint64_t id;
        double snaps;
        resp r;

        clawq_put_task_init(&t);
        t.payload = "x";
        t.payload_len = 1;
        for (int i = 0; i < 200; i++)
            th_assert_ok(c, clawq_put(c, "snap", &t, &id, NULL));
        http_get(b, "/metrics", &r);
        snaps = prom_value(r.body, "clawq_raft_snapshots_total");
        /* Present from the start. A store of a few KB copies in
         * milliseconds, and the loop never waits for it. */
        {
            double ser =
                prom_value(r.body, "clawq_raft_snapshot_serialize_seconds");
            double pause =
                prom_value(r.body, "clawq_raft_snapshot_pause_seconds");
            ck_assert_msg(ser >= 0 && ser < 5, "serialize %.3f s", ser);
            ck_assert_msg(pause == 0, "pause %.3f s", pause);
        }
        if (k == 0)
            ck_assert_msg(snaps >= 2, "log size off: %.0f snapshots", snaps);
        else
            ck_assert_msg(snaps == 0, "log size 64M: %.0f snapshots", snaps);
        resp_fini(&r);
        clawq_close(c);
        th_broker_free(b);
    }
}
END_TEST

static double commit_index(void)
{
    double v;
    resp r;

    http_get(B, "/metrics", &r);
    v = prom_value(r.body, "clawq_raft_commit_index");
    resp_fini(&r);
    return v;
}

/* A pull that can find nothing (queue empty, paused or unknown) writes no
 * Raft entry, and a waiting puller still gets the next put: its lease
 * rides in the put's own entry. */
START_TEST(test_empty_pull_no_entry)
{
    clawq_client *c2 = th_connect(B);
    clawq_task *t = NULL;
    clawq_ticket tk = 0;
    clawq_result r;
    double before;
    size_t n;

    put("q", "1");
    t = pull_one("q");
    th_assert_ok(C, clawq_ack(C, t->id, t->lease_id));
    clawq_tasks_free(t);
    put("p", "1");
    th_assert_ok(C, clawq_pause(C, "p"));

    before = commit_index();
    th_assert_ok(C, clawq_pull(C, "q", 1, 100, 0, &t, &n));
    ck_assert_uint_eq(n, 0);
    th_assert_ok(C, clawq_pull(C, "p", 1, 50, 0, &t, &n));
    ck_assert_uint_eq(n, 0);
    th_assert_ok(C, clawq_pull(C, "nosuch", 4, 0, 0, &t, &n));
    ck_assert_uint_eq(n, 0);

    th_assert_ok(c2, clawq_pull_async(c2, "q", 1, 10000, 0, NULL, &tk));
    ck_assert_int_eq(clawq_wait(c2, tk, 200, &r), CLAWQ_ETIMEOUT);
    ck_assert_msg(commit_index() == before, "empty pulls wrote %.0f entries",
                  commit_index() - before);

    put("q", "2");
    th_assert_ok(c2, clawq_wait(c2, tk, -1, &r));
    ck_assert_int_eq(r.status, 0);
    ck_assert_uint_eq(r.n, 1);
    ck_assert_uint_eq(r.tasks[0].payload_len, 1);
    ck_assert_int_eq(((const char *)r.tasks[0].payload)[0], '2');
    ck_assert_msg(commit_index() == before + 1,
                  "put and lease took %.0f entries", commit_index() - before);
    clawq_result_free(&r);
    clawq_close(c2);
}
END_TEST

/* Unwritten extents of the files named open-* in dir (FIEMAP), and how
 * many such files there are. */
static unsigned unwritten_open_segments(const char *dir, unsigned *files)
{
    struct {
        struct fiemap fm;
        struct fiemap_extent ext[64];
    } q;
    struct dirent *de;
    unsigned n = 0, i;
    char path[PATH_MAX + 256];
    DIR *d = opendir(dir);
    int fd;

    ck_assert_ptr_nonnull(d);
    *files = 0;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "open-", 5) != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        fd = open(path, O_RDONLY);
        if (fd < 0)
            continue; /* closed and renamed meanwhile */
        memset(&q, 0, sizeof(q));
        q.fm.fm_length = FIEMAP_MAX_OFFSET;
        q.fm.fm_extent_count = 64;
        ck_assert_int_eq(ioctl(fd, FS_IOC_FIEMAP, &q.fm), 0);
        for (i = 0; i < q.fm.fm_mapped_extents; i++)
            if (q.fm.fm_extents[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN)
                n++;
        close(fd);
        (*files)++;
    }
    closedir(d);
    return n;
}

/* --log-prezero (default on): libraft's open log segments are written
 * zeros, not unwritten extents, so its non-blocking direct writes succeed
 * (broker/logzero.h); off, they stay unwritten. On ext4, as CI runs. */
START_TEST(test_log_prezero)
{
    static const char *const flag[] = {"--log-prezero=true",
                                       "--log-prezero=false"};

    for (size_t k = 0; k < 2; k++) {
        th_broker *b = th_broker_start(flag[k], NULL);
        clawq_client *c = th_connect(b);
        char raft_dir[PATH_MAX];
        clawq_put_task t;
        unsigned files, unwritten;
        uint64_t id;
        double zeroed;
        resp r;

        clawq_put_task_init(&t);
        t.payload = "x";
        t.payload_len = 1;
        for (int i = 0; i < 20; i++)
            th_assert_ok(c, clawq_put(c, "lz", &t, &id, NULL));
        snprintf(raft_dir, sizeof(raft_dir), "%s/raft", b->data);
        /* libraft prepares segments ahead, on its thread pool: one may be
         * half filled when we look (it is used only once filled). On,
         * wait up to 5 s for every open segment to be filled; off, the
         * first look decides. */
        for (int tries = 0;; tries++) {
            http_get(b, "/metrics", &r);
            zeroed =
                prom_value(r.body, "clawq_raft_log_prezeroed_segments_total");
            unwritten = unwritten_open_segments(raft_dir, &files);
            if (k == 1 || (unwritten == 0 && zeroed >= files) || tries == 100)
                break;
            resp_fini(&r);
            th_sleep_ms(50);
        }
        ck_assert_uint_gt(files, 0);
        if (k == 0) {
            ck_assert_msg(zeroed >= files, "%.0f zeroed, %u open segments",
                          zeroed, files);
            ck_assert_uint_eq(unwritten, 0);
        } else {
            ck_assert_msg(zeroed == 0, "off: %.0f zeroed", zeroed);
            ck_assert_uint_gt(unwritten, 0);
        }
        resp_fini(&r);
        clawq_close(c);
        th_broker_free(b);
    }
}
END_TEST

/* --raft-segment-size: with 4M segments (the least), 12.5 MB of puts
 * close at least two segments (files named FIRST-LAST, not open-N), and
 * their AIO contexts are reaped off the loop. */
START_TEST(test_raft_segment_size)
{
    th_broker *b = th_broker_start("--raft-segment-size", "4M", NULL);
    clawq_client *c = th_connect(b);
    static char payload[64 * 1024];
    char raft_dir[PATH_MAX];
    clawq_put_task t;
    struct dirent *de;
    unsigned closed = 0;
    double reaped = 0;
    uint64_t id;
    resp r;
    DIR *d;

    memset(payload, 'p', sizeof(payload));
    clawq_put_task_init(&t);
    t.payload = payload;
    t.payload_len = sizeof(payload);
    for (int i = 0; i < 200; i++)
        th_assert_ok(c, clawq_put(c, "seg", &t, &id, NULL));
    snprintf(raft_dir, sizeof(raft_dir), "%s/raft", b->data);
    d = opendir(raft_dir);
    ck_assert_ptr_nonnull(d);
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] >= '0' && de->d_name[0] <= '9' &&
            strchr(de->d_name, '-') != NULL)
            closed++;
    closedir(d);
    /* The bootstrap segment, then at least two full 4M ones. */
    ck_assert_msg(closed >= 3, "%u closed segments", closed);
    /* Each closed segment's AIO context went to the reaper thread
     * (broker/aioreap.h), not io_destroy on the loop. */
    for (int i = 0; i < 100; i++) {
        http_get(b, "/metrics", &r);
        reaped = prom_value(r.body, "clawq_raft_aio_contexts_reaped_total");
        resp_fini(&r);
        if (reaped >= 2)
            break;
        usleep(20000);
    }
    ck_assert_msg(reaped >= 2, "%.0f AIO contexts reaped", reaped);
    clawq_close(c);
    th_broker_free(b);
}
END_TEST

static Suite *http_suite(void)
{
    Suite *s = suite_create("http");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"healthz_readyz", test_healthz_readyz},
        {"metrics_promtool", test_metrics_promtool},
        {"queues_json", test_queues_json},
        {"errors", test_errors},
        {"oversized_head", test_oversized_head},
        {"keep_alive", test_keep_alive},
        {"sigterm_with_idle_connection", test_sigterm_with_idle_connection},
        {"snapshot_spacing", test_snapshot_spacing},
        {"log_prezero", test_log_prezero},
        {"raft_segment_size", test_raft_segment_size},
        {"empty_pull_no_entry", test_empty_pull_no_entry},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = th_tcase_new(cases[i].name, 20);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    return th_run_suite(http_suite());
}
