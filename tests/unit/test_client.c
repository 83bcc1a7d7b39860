/* test_client.c: libclawq and clawqctl without clawqd - endpoint parsing,
 * the text helpers (UTF-8, JSON escaping, base64, numbers), flattening of
 * decoded tasks, the request machinery against an in-process mock broker
 * (pipelined puts answered out of order, leader redirects, reconnects,
 * oversized frames, status mapping) and clawqctl's argument validation
 * (run as a program: $CLAWQCTL names the binary, else the one this build
 * made, CLAWQCTL_PATH). */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clawq.h"
#include "clawq.pb-c.h"
#include "endpoint.h"
#include "frame.h"
#include "task.h"
#include "text.h"

/* ---- endpoints --------------------------------------------------------- */

START_TEST(endpoints_valid)
{
    clawq__endpoint *eps;
    size_t n;

    ck_assert_int_eq(clawq__endpoints_parse(" a:1, b.example:7701 ,[::1]:9,"
                                            "c,[fe80::1]",
                                            7700, &eps, &n),
                     0);
    ck_assert_uint_eq(n, 5);
    ck_assert_str_eq(eps[0].host, "a");
    ck_assert_uint_eq(eps[0].port, 1);
    ck_assert_str_eq(eps[1].host, "b.example");
    ck_assert_uint_eq(eps[1].port, 7701);
    ck_assert_str_eq(eps[2].host, "::1");
    ck_assert_uint_eq(eps[2].port, 9);
    ck_assert_str_eq(eps[3].host, "c");
    ck_assert_uint_eq(eps[3].port, 7700);
    ck_assert_str_eq(eps[4].host, "fe80::1");
    ck_assert_uint_eq(eps[4].port, 7700);
    free(eps);
}
END_TEST

START_TEST(endpoints_invalid)
{
    static const char *bad[] = {
        "",       " ",       ",",        "a,,b",  "a,",   ":7700",   "a:",
        "a:0",    "a:65536", "a:123456", "a:-1",  "a:1x", "::1",     "[::1",
        "[::1]x", "[::1]:",  "[]:1",     "a b:1", "a]:1", "[a[b]:1",
    };
    clawq__endpoint *eps = NULL;
    size_t n = 0;
    char many[64 * 8 + 16] = "";

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(clawq__endpoints_parse(bad[i], 7700, &eps, &n) ==
                          CLAWQ_EINVALID,
                      "accepted \"%s\"", bad[i]);
    for (int i = 0; i < 65; i++)
        strcat(many, i == 0 ? "h:1" : ",h:1");
    ck_assert_int_eq(clawq__endpoints_parse(many, 7700, &eps, &n),
                     CLAWQ_EINVALID);
    many[strlen(many) - 4] = '\0'; /* 64 endpoints: the limit */
    ck_assert_int_eq(clawq__endpoints_parse(many, 7700, &eps, &n), 0);
    ck_assert_uint_eq(n, 64);
    free(eps);
}
END_TEST

START_TEST(endpoint_host_limit)
{
    char host[300];
    clawq__endpoint ep;
    char buf[300];

    memset(host, 'h', 255);
    host[255] = '\0';
    ck_assert_int_eq(clawq__endpoint_parse(host, 255, 1, &ep), 0);
    memset(host, 'h', 256);
    host[256] = '\0';
    ck_assert_int_eq(clawq__endpoint_parse(host, 256, 1, &ep), CLAWQ_EINVALID);
    ck_assert_int_eq(clawq__endpoint_parse("[::1]:80", 8, 1, &ep), 0);
    ck_assert_str_eq(clawq__endpoint_format(&ep, buf, sizeof(buf)), "[::1]:80");
}
END_TEST

/* ---- text helpers ------------------------------------------------------ */

static char *json_of(const void *p, size_t len)
{
    char *out = NULL;
    size_t olen = 0;
    FILE *f = open_memstream(&out, &olen);

    ck_assert_ptr_nonnull(f);
    text_json_string(f, p, len);
    fclose(f);
    return out;
}

START_TEST(json_escaping)
{
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        {"plain", 5, "\"plain\""},
        {"q\"b\\s/", 6, "\"q\\\"b\\\\s/\""},
        {"\n\r\t\b\f", 5, "\"\\n\\r\\t\\b\\f\""},
        {"\x01\x1f\x7f", 3, "\"\\u0001\\u001f\\u007f\""},
        {"a\0b", 3, "\"a\\u0000b\""},
        {"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9,
         "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""},
        {"\xff", 1, "\"\\ufffd\""},
        {"a\xc3", 2, "\"a\\ufffd\""},
        {"\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""},
        {"", 0, "\"\""},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *s = json_of(cases[i].in, cases[i].len);

        ck_assert_str_eq(s, cases[i].out);
        free(s);
    }
}
END_TEST

START_TEST(utf8_validation)
{
    ck_assert(text_utf8_valid((const uint8_t *)"", 0));
    ck_assert(text_utf8_valid((const uint8_t *)"abc\0", 4));
    ck_assert(text_utf8_valid((const uint8_t *)"\xc2\x80", 2));
    ck_assert(text_utf8_valid((const uint8_t *)"\xef\xbf\xbf", 3));
    ck_assert(text_utf8_valid((const uint8_t *)"\xf4\x8f\xbf\xbf", 4));
    ck_assert(!text_utf8_valid((const uint8_t *)"\xc0\x80", 2));
    ck_assert(!text_utf8_valid((const uint8_t *)"\xc1\xbf", 2));
    ck_assert(!text_utf8_valid((const uint8_t *)"\xe0\x9f\xbf", 3));
    ck_assert(!text_utf8_valid((const uint8_t *)"\xed\xa0\x80", 3));
    ck_assert(!text_utf8_valid((const uint8_t *)"\xf0\x8f\xbf\xbf", 4));
    ck_assert(!text_utf8_valid((const uint8_t *)"\xf4\x90\x80\x80", 4));
    ck_assert(!text_utf8_valid((const uint8_t *)"\xf5\x80\x80\x80", 4));
    ck_assert(!text_utf8_valid((const uint8_t *)"\x80", 1));
    ck_assert(!text_utf8_valid((const uint8_t *)"\xe2\x82", 2));
}
END_TEST

START_TEST(base64_vectors)
{
    static const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *out[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    char buf[32];
    const uint8_t bin[] = {0xff, 0x00, 0xfe};

    for (size_t i = 0; i < 7; i++) {
        ck_assert_uint_eq(text_base64_len(strlen(in[i])), strlen(out[i]));
        text_base64_encode(in[i], strlen(in[i]), buf);
        ck_assert_str_eq(buf, out[i]);
    }
    text_base64_encode(bin, 3, buf);
    ck_assert_str_eq(buf, "/wD+");
    ck_assert_uint_eq(text_base64_len(SIZE_MAX), SIZE_MAX);
}
END_TEST

START_TEST(number_parsing)
{
    uint64_t u;
    int64_t s;

    ck_assert(text_parse_u64("0", 0, 10, &u) && u == 0);
    ck_assert(text_parse_u64("255", 0, 255, &u) && u == 255);
    ck_assert(!text_parse_u64("256", 0, 255, &u));
    ck_assert(!text_parse_u64("", 0, 255, &u));
    ck_assert(!text_parse_u64("-1", 0, 255, &u));
    ck_assert(!text_parse_u64("+1", 0, 255, &u));
    ck_assert(!text_parse_u64(" 1", 0, 255, &u));
    ck_assert(!text_parse_u64("1 ", 0, 255, &u));
    ck_assert(!text_parse_u64("0x10", 0, 255, &u));
    ck_assert(!text_parse_u64("1e3", 0, 10000, &u));
    ck_assert(text_parse_u64("18446744073709551615", 0, UINT64_MAX, &u) &&
              u == UINT64_MAX);
    ck_assert(!text_parse_u64("18446744073709551616", 0, UINT64_MAX, &u));
    ck_assert(!text_parse_u64("0", 1, 10, &u));
    ck_assert(text_parse_i64("-5", -10, 10, &s) && s == -5);
    ck_assert(text_parse_i64("-9223372036854775808", INT64_MIN, 0, &s) &&
              s == INT64_MIN);
    ck_assert(!text_parse_i64("9223372036854775808", 0, INT64_MAX, &s));
    ck_assert(!text_parse_i64("-", -10, 10, &s));
    ck_assert(text_queue_name_ok("jobs.email:high-1_x"));
    ck_assert(!text_queue_name_ok(""));
    ck_assert(!text_queue_name_ok("a b"));
    ck_assert(!text_queue_name_ok("a/b"));
}
END_TEST

/* ---- task flattening --------------------------------------------------- */

START_TEST(tasks_copy_flattens)
{
    Clawq__Task t0 = CLAWQ__TASK__INIT, t1 = CLAWQ__TASK__INIT;
    Clawq__Header h = CLAWQ__HEADER__INIT, *hp = &h;
    Clawq__TaskError e = CLAWQ__TASK_ERROR__INIT, *ep = &e;
    Clawq__Task *src[2] = {&t0, &t1};
    uint8_t payload[] = {0xff, 0x00, 'a'};
    clawq_task *out;
    int err;

    t0.has_id = true;
    t0.id = 7;
    t0.queue = "q";
    t0.has_payload = true;
    t0.payload.data = payload;
    t0.payload.len = 3;
    t0.has_state = true;
    t0.state = CLAWQ__TASK_STATE__LEASED;
    t0.lease_id = 99;
    t0.has_checkpoint = true;
    t0.checkpoint.data = (uint8_t *)"cp";
    t0.checkpoint.len = 2;
    h.key = "k";
    h.value = "v";
    t0.n_headers = 1;
    t0.headers = &hp;
    e.at_ms = 5;
    e.attempt = 2;
    e.message = "boom";
    t0.n_errors = 1;
    t0.errors = &ep;
    t1.id = 8; /* everything else absent */

    ck_assert_ptr_null(clawq__tasks_copy(src, 0, &err));
    ck_assert_int_eq(err, 0);
    out = clawq__tasks_copy(src, 2, &err);
    ck_assert_ptr_nonnull(out);
    ck_assert_uint_eq(out[0].id, 7);
    ck_assert_str_eq(out[0].queue, "q");
    ck_assert_uint_eq(out[0].payload_len, 3);
    ck_assert_mem_eq(out[0].payload, payload, 3);
    ck_assert_int_eq(out[0].payload[3], 0);
    ck_assert_int_eq(out[0].state, CLAWQ_STATE_LEASED);
    ck_assert_uint_eq(out[0].lease_id, 99);
    ck_assert(out[0].has_checkpoint);
    ck_assert_mem_eq(out[0].checkpoint, "cp", 2);
    ck_assert_uint_eq(out[0].n_headers, 1);
    ck_assert_str_eq(out[0].headers[0].key, "k");
    ck_assert_str_eq(out[0].headers[0].value, "v");
    ck_assert_uint_eq(out[0].n_errors, 1);
    ck_assert_str_eq(out[0].errors[0].message, "boom");
    ck_assert_uint_eq(out[0].errors[0].attempt, 2);
    ck_assert_uint_eq(out[1].id, 8);
    ck_assert_str_eq(out[1].queue, "");
    ck_assert_str_eq(out[1].worker, "");
    ck_assert_str_eq(out[1].dead_reason, "");
    ck_assert_uint_eq(out[1].payload_len, 0);
    ck_assert_uint_eq(out[1].priority, CLAWQ_DEFAULT_PRIORITY);
    ck_assert(!out[1].has_checkpoint);
    clawq_tasks_free(out);
    clawq_tasks_free(NULL);
}
END_TEST

/* ---- mock broker ------------------------------------------------------- */

/* One listening socket served by one thread, one connection at a time. */
typedef struct mock {
    int lfd;
    uint16_t port;
    pthread_t th;
    atomic_bool stop;
    char redirect[64]; /* non-empty: answer NOT_LEADER naming this */
    bool hello_leader; /* Hello names `redirect` as leader (node 2) */
    int drop_on;       /* close when the drop_on-th request comes */
    bool reverse;      /* answer requests in reversed pairs */
    int hold;          /* > 1: gather up to hold requests (those that come
                          within 20 ms), answer them in reverse order */
    int silent_conn;   /* answer no request but Hello on this connection
                          (1 = the first) */
    atomic_bool down;  /* close new connections at once */
    bool oversize;     /* answer with a frame header over the cap */
    uint32_t status;   /* non-zero: answer non-Hello with it */
    atomic_int conns;
    atomic_int requests; /* non-Hello requests received */
} mock;

static bool read_full(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);

        if (r <= 0)
            return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

static void write_full(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static Clawq__Request *req_read(int fd)
{
    uint8_t hdr[4], *buf;
    uint32_t len;
    Clawq__Request *r;

    if (!read_full(fd, hdr, 4))
        return NULL;
    len = clawq_frame_get_len(hdr);
    if (len > (1u << 24))
        return NULL;
    buf = malloc(len + 1);
    if (buf == NULL || !read_full(fd, buf, len)) {
        free(buf);
        return NULL;
    }
    r = clawq__request__unpack(NULL, len, buf);
    free(buf);
    return r;
}

static void resp_write(int fd, const Clawq__Response *r)
{
    size_t len = clawq__response__get_packed_size(r);
    uint8_t *buf = malloc(len + 4);

    clawq_frame_put_len(buf, (uint32_t)len);
    clawq__response__pack(r, buf + 4);
    write_full(fd, buf, len + 4);
    free(buf);
}

/* Answers one request as a tiny, stateless broker would. */
static void mock_answer(mock *m, int fd, const Clawq__Request *q)
{
    Clawq__Response r = CLAWQ__RESPONSE__INIT;
    Clawq__HelloResponse h = CLAWQ__HELLO_RESPONSE__INIT;
    Clawq__PutResponse pr = CLAWQ__PUT_RESPONSE__INIT;
    Clawq__AckResponse ar = CLAWQ__ACK_RESPONSE__INIT;
    Clawq__ItemResult items[1024], *itemp[1024];
    Clawq__TasksResponse tr = CLAWQ__TASKS_RESPONSE__INIT;
    Clawq__Task task = CLAWQ__TASK__INIT, *taskp = &task;
    Clawq__StatsResponse sr = CLAWQ__STATS_RESPONSE__INIT;
    Clawq__QueueStats qs = CLAWQ__QUEUE_STATS__INIT;
    static uint8_t bin[] = {0xff, 0x00, 'x'};

    r.id = q->id;
    if (q->body_case == CLAWQ__REQUEST__BODY_HELLO) {
        h.has_node_id = true;
        h.node_id = 1;
        h.has_leader_id = true;
        h.leader_id = m->hello_leader ? 2 : 1;
        h.leader = m->hello_leader ? m->redirect : NULL;
        h.has_max_frame = true;
        h.max_frame = 1u << 20;
        r.body_case = CLAWQ__RESPONSE__BODY_HELLO;
        r.hello = &h;
        resp_write(fd, &r);
        return;
    }
    if (m->redirect[0] != '\0') {
        r.has_status = true;
        r.status = CLAWQ__STATUS__NOT_LEADER;
        r.leader = m->redirect;
        resp_write(fd, &r);
        return;
    }
    if (m->status != 0) {
        r.has_status = true;
        r.status = (Clawq__Status)m->status;
        r.message = "mock says no";
        r.has_retry_after_ms = true;
        r.retry_after_ms = 250;
        resp_write(fd, &r);
        return;
    }
    if (m->oversize) {
        uint8_t hdr[4];

        clawq_frame_put_len(hdr, 0x7fffffff);
        write_full(fd, hdr, 4);
        return;
    }
    switch (q->body_case) {
    case CLAWQ__REQUEST__BODY_PUT:
        for (size_t i = 0; i < q->put->n_tasks && i < 1024; i++) {
            const Clawq__PutTask *pt = q->put->tasks[i];
            Clawq__ItemResult init = CLAWQ__ITEM_RESULT__INIT;
            char num[32] = "";

            items[i] = init;
            items[i].has_id = true;
            /* The id echoes the payload's number, so the client's
             * matching of out-of-order replies can be checked. */
            if (pt->payload.len > 0)
                memcpy(num, pt->payload.data,
                       pt->payload.len < 31 ? pt->payload.len : 31);
            items[i].id = strtoull(num, NULL, 10) + 1000;
            items[i].has_duplicate = pt->idempotency_key != NULL &&
                                     strcmp(pt->idempotency_key, "dup") == 0;
            items[i].duplicate = items[i].has_duplicate;
            if (pt->priority == 255) { /* item-level failure */
                items[i].has_status = true;
                items[i].status = CLAWQ__STATUS__TOO_LARGE;
                items[i].message = "item too large";
            }
            itemp[i] = &items[i];
        }
        pr.n_results = q->put->n_tasks;
        pr.results = itemp;
        r.body_case = CLAWQ__RESPONSE__BODY_PUT;
        r.put = &pr;
        break;
    case CLAWQ__REQUEST__BODY_ACK:
        for (size_t i = 0; i < q->ack->n_tasks && i < 1024; i++) {
            Clawq__ItemResult init = CLAWQ__ITEM_RESULT__INIT;

            items[i] = init;
            if (q->ack->tasks[i]->lease_id == 0) {
                items[i].has_status = true;
                items[i].status = CLAWQ__STATUS__LEASE_LOST;
            }
            itemp[i] = &items[i];
        }
        ar.n_results = q->ack->n_tasks;
        ar.results = itemp;
        r.body_case = CLAWQ__RESPONSE__BODY_ACK;
        r.ack = &ar;
        break;
    case CLAWQ__REQUEST__BODY_PULL:
    case CLAWQ__REQUEST__BODY_TASK_GET:
        task.has_id = true;
        /* 42 for max 1; a pull's max shows in the id, so that pipelined
         * pulls answered out of order can be told apart. */
        task.id = q->body_case == CLAWQ__REQUEST__BODY_PULL
                      ? 41 + (uint64_t)q->pull->max
                      : 42;
        task.queue = "q";
        task.has_payload = true;
        task.payload.data = bin;
        task.payload.len = 3;
        task.has_lease_id = true;
        task.lease_id = 4242;
        task.has_state = true;
        task.state = CLAWQ__TASK_STATE__LEASED;
        tr.n_tasks = 1;
        tr.tasks = &taskp;
        r.body_case = CLAWQ__RESPONSE__BODY_TASKS;
        r.tasks = &tr;
        break;
    case CLAWQ__REQUEST__BODY_STATS:
        qs.name = q->stats->queue;
        qs.has_ready = true;
        qs.ready = 3;
        sr.stats = &qs;
        sr.has_node_id = true;
        sr.node_id = 1;
        r.body_case = CLAWQ__RESPONSE__BODY_STATS;
        r.stats = &sr;
        break;
    default:
        break;
    }
    resp_write(fd, &r);
}

static bool readable(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};

    return poll(&p, 1, ms) > 0;
}

static void *mock_run(void *arg)
{
    mock *m = arg;

    while (!atomic_load(&m->stop)) {
        int fd, conn_no;

        if (!readable(m->lfd, 50))
            continue;
        fd = accept(m->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        conn_no = atomic_fetch_add(&m->conns, 1) + 1;
        if (atomic_load(&m->down)) {
            close(fd);
            continue;
        }
        for (bool closed = false; !closed;) {
            Clawq__Request *qs[1024];
            int nq = 0, want = m->hold > 1 ? m->hold : m->reverse ? 2 : 1;

            if (want > 1024)
                want = 1024;
            do {
                Clawq__Request *q = req_read(fd);

                if (q == NULL) {
                    closed = true;
                    break;
                }
                if (q->body_case == CLAWQ__REQUEST__BODY_HELLO) {
                    mock_answer(m, fd, q);
                    clawq__request__free_unpacked(q, NULL);
                    break;
                }
                if (m->drop_on == atomic_fetch_add(&m->requests, 1) + 1) {
                    clawq__request__free_unpacked(q, NULL);
                    closed = true;
                    break;
                }
                if (conn_no == m->silent_conn) {
                    clawq__request__free_unpacked(q, NULL);
                    continue;
                }
                qs[nq++] = q;
            } while (nq < want && (nq == 0 || readable(fd, 20)));
            while (nq > 0) {
                Clawq__Request *q = qs[--nq];

                if (!closed)
                    mock_answer(m, fd, q);
                clawq__request__free_unpacked(q, NULL);
            }
        }
        close(fd);
    }
    return NULL;
}

static void mock_start(mock *m)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int one = 1;

    m->lfd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(m->lfd, 0);
    setsockopt(m->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(m->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(m->lfd, 16), 0);
    ck_assert_int_eq(getsockname(m->lfd, (struct sockaddr *)&sa, &len), 0);
    m->port = ntohs(sa.sin_port);
    atomic_store(&m->stop, false);
    ck_assert_int_eq(pthread_create(&m->th, NULL, mock_run, m), 0);
}

static void mock_stop(mock *m)
{
    atomic_store(&m->stop, true);
    pthread_join(m->th, NULL);
    close(m->lfd);
}

static clawq_client *mock_connect(const mock *m, uint32_t timeout_ms)
{
    char ep[64];
    clawq_options o;
    clawq_client *c = NULL;
    char err[256];

    clawq_options_init(&o);
    o.request_timeout_ms = timeout_ms;
    o.connect_timeout_ms = 2000;
    o.pipeline_window = 64;
    o.max_frame = 1u << 20;
    snprintf(ep, sizeof(ep), "127.0.0.1:%u", m->port);
    ck_assert_msg(clawq_connect2(ep, &o, &c, err, sizeof(err)) == 0, "%s", err);
    return c;
}

START_TEST(mock_put_pull_ack)
{
    mock m = {0};
    clawq_client *c;
    clawq_put_task t;
    clawq_put_result res[2];
    clawq_put_task ts[2];
    clawq_task *tasks;
    clawq_lease_ref refs[2] = {{1, 1}, {2, 0}};
    clawq_queue_stats st;
    int statuses[2];
    uint64_t id;
    bool dup;
    size_t n;

    mock_start(&m);
    c = mock_connect(&m, 2000);
    clawq_put_task_init(&t);
    ck_assert_uint_eq(t.priority, 128);
    t.payload = "5";
    t.payload_len = 1;
    t.idempotency_key = "dup";
    ck_assert_int_eq(clawq_put(c, "q", &t, &id, &dup), 0);
    ck_assert_uint_eq(id, 1005);
    ck_assert(dup);
    ck_assert_int_eq(clawq_put(c, "bad queue", &t, &id, &dup), CLAWQ_EINVALID);
    t.priority = 256;
    ck_assert_int_eq(clawq_put(c, "q", &t, &id, &dup), CLAWQ_EINVALID);
    ts[0] = t;
    ts[0].priority = 1;
    ts[1] = t;
    ts[1].priority = 255;
    /* Answered, one task failed: a count, not an error. */
    ck_assert_int_eq(clawq_put_batch(c, "q", ts, 2, res), 1);
    ck_assert_int_eq(res[0].status, 0);
    ck_assert_int_eq(res[1].status, CLAWQ_ETOO_LARGE);
    ck_assert_ptr_nonnull(strstr(clawq_errmsg(c), "item too large"));
    ck_assert_int_eq(clawq_pull(c, "q", 1, 0, 0, &tasks, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(tasks[0].id, 42);
    ck_assert_uint_eq(tasks[0].lease_id, 4242);
    ck_assert_uint_eq(tasks[0].payload_len, 3);
    clawq_tasks_free(tasks);
    ck_assert_int_eq(clawq_pull(c, "q", 0, 0, 0, &tasks, &n), CLAWQ_EINVALID);
    ck_assert_int_eq(clawq_pull(c, "q", 1025, 0, 0, &tasks, &n),
                     CLAWQ_EINVALID);
    ck_assert_int_eq(clawq_ack_batch(c, refs, 2, statuses), 1);
    ck_assert_int_eq(statuses[0], 0);
    ck_assert_int_eq(statuses[1], CLAWQ_ELEASE_LOST);
    ck_assert_int_eq(clawq_ack_batch(c, refs, 2, NULL), 1);
    ck_assert_int_eq(clawq_ack_batch(c, refs, 1, NULL), 0);
    ck_assert_int_eq(clawq_ack(c, 1, 1), 0);
    ck_assert_int_eq(clawq_ack(c, 2, 0), CLAWQ_ELEASE_LOST);
    /* A single put's item failure is still its status. */
    ck_assert_int_eq(clawq_put(c, "q", &ts[1], &id, NULL), CLAWQ_ETOO_LARGE);
    /* A failed request is negative. */
    m.status = CLAWQ__STATUS__UNAVAILABLE;
    ck_assert_int_eq(clawq_put_batch(c, "q", ts, 2, res), CLAWQ_EUNAVAILABLE);
    ck_assert_int_eq(clawq_ack_batch(c, refs, 2, statuses), CLAWQ_EUNAVAILABLE);
    m.status = 0;
    ck_assert_int_eq(clawq_queue_stats_get(c, "jobs", &st), 0);
    ck_assert_str_eq(st.name, "jobs");
    ck_assert_uint_eq(st.ready, 3);
    clawq_close(c);
    mock_stop(&m);
}
END_TEST

START_TEST(mock_pipeline_out_of_order)
{
    mock m = {.reverse = true};
    clawq_client *c;
    static clawq_put_result res[1000];
    char payload[1000][16];

    mock_start(&m);
    c = mock_connect(&m, 5000);
    for (int i = 0; i < 1000; i++) {
        clawq_put_task t;

        clawq_put_task_init(&t);
        snprintf(payload[i], sizeof(payload[i]), "%d", i);
        t.payload = payload[i];
        t.payload_len = strlen(payload[i]);
        ck_assert_int_eq(clawq_put_async(c, "q", &t), i);
    }
    ck_assert_uint_eq(clawq_pending(c), 1000);
    /* A synchronous call in the middle of the pipeline. */
    {
        clawq_queue_stats st;

        ck_assert_int_eq(clawq_queue_stats_get(c, "q", &st), 0);
    }
    ck_assert_int_eq(clawq_flush(c, res, 1000), 0);
    for (int i = 0; i < 1000; i++) {
        ck_assert_int_eq(res[i].status, 0);
        ck_assert_uint_eq(res[i].id, (uint64_t)i + 1000);
    }
    ck_assert_uint_eq(clawq_pending(c), 0);
    ck_assert_int_eq(clawq_flush(c, NULL, 0), 0);
    clawq_close(c);
    mock_stop(&m);
}
END_TEST

START_TEST(mock_redirect_to_leader)
{
    mock leader = {0}, follower = {0};
    clawq_client *c;
    clawq_server_info info;
    clawq_put_task t;
    uint64_t id;
    bool dup;

    mock_start(&leader);
    mock_start(&follower);
    snprintf(follower.redirect, sizeof(follower.redirect), "127.0.0.1:%u",
             leader.port);
    c = mock_connect(&follower, 3000);
    clawq_put_task_init(&t);
    t.payload = "1";
    t.payload_len = 1;
    ck_assert_int_eq(clawq_put(c, "q", &t, &id, &dup), 0);
    ck_assert_uint_eq(id, 1001);
    ck_assert_int_eq(atomic_load(&leader.requests), 1);
    ck_assert_int_eq(clawq_server_info_get(c, &info), 0);
    ck_assert_str_eq(info.endpoint, follower.redirect);
    clawq_close(c);
    /* Hello's leader hint: connect goes straight to the leader. */
    follower.hello_leader = true;
    c = mock_connect(&follower, 3000);
    ck_assert_int_eq(clawq_server_info_get(c, &info), 0);
    ck_assert_str_eq(info.endpoint, follower.redirect);
    clawq_close(c);
    mock_stop(&follower);
    mock_stop(&leader);
}
END_TEST

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

START_TEST(mock_redirect_bounded)
{
    mock a = {0};
    clawq_client *c;
    clawq_queue_stats st;
    uint64_t t0;

    mock_start(&a);
    /* A node that names itself leader yet refuses: quick hops, then
     * retries with a growing pause (capped at 200 ms), bounded by the
     * call's timeout. */
    snprintf(a.redirect, sizeof(a.redirect), "127.0.0.1:%u", a.port);
    c = mock_connect(&a, 3000);
    t0 = mono_ms();
    ck_assert_int_eq(clawq_queue_stats_get(c, "q", &st), CLAWQ_ENOT_LEADER);
    ck_assert_uint_le(mono_ms() - t0, 3500);
    ck_assert_int_gt(atomic_load(&a.requests), CLAWQ_MAX_REDIRECTS + 1);
    /* After the quick hops, one retry per pause (200 ms at most): no
     * busy loop. */
    ck_assert_int_le(atomic_load(&a.requests),
                     CLAWQ_MAX_REDIRECTS + 1 + 3000 / 200 + 2);
    clawq_close(c);
    mock_stop(&a);
}
END_TEST

START_TEST(mock_reconnect_rules)
{
    mock m = {.drop_on = 1};
    clawq_client *c;
    clawq_queue_stats st;
    clawq_put_task t;
    uint64_t id;

    mock_start(&m);
    c = mock_connect(&m, 3000);
    /* A read is re-sent on a new connection. */
    ck_assert_int_eq(clawq_queue_stats_get(c, "q", &st), 0);
    ck_assert_int_eq(atomic_load(&m.conns), 2);
    /* A put without a key is not: its outcome is unknown. */
    m.drop_on = 3;
    clawq_put_task_init(&t);
    t.payload = "1";
    t.payload_len = 1;
    ck_assert_int_eq(clawq_put(c, "q", &t, &id, NULL), CLAWQ_ECONN_LOST);
    /* With a key it is. */
    m.drop_on = 5;
    t.idempotency_key = "k1";
    ck_assert_int_eq(clawq_put(c, "q", &t, &id, NULL), 0);
    ck_assert_uint_eq(id, 1001);
    clawq_close(c);
    mock_stop(&m);
}
END_TEST

START_TEST(mock_errors_mapped)
{
    mock m = {.status = CLAWQ__STATUS__QUEUE_FULL};
    clawq_client *c;
    clawq_put_task t;
    uint64_t id;

    mock_start(&m);
    c = mock_connect(&m, 2000);
    clawq_put_task_init(&t);
    ck_assert_int_eq(clawq_put(c, "q", &t, &id, NULL), CLAWQ_EQUEUE_FULL);
    ck_assert_uint_eq(clawq_retry_after_ms(c), 250);
    ck_assert_str_eq(clawq_errmsg(c), "mock says no");
    m.status = 0;
    m.oversize = true;
    ck_assert_int_eq(clawq_put(c, "q", &t, &id, NULL), CLAWQ_EPROTOCOL);
    ck_assert_ptr_nonnull(strstr(clawq_errmsg(c), "exceeds"));
    clawq_close(c);
    mock_stop(&m);
}
END_TEST

/* ---- tickets ---- */

static void put_tasks_numbered(clawq_put_task *ts, char (*pl)[16], int n,
                               int first)
{
    for (int i = 0; i < n; i++) {
        clawq_put_task_init(&ts[i]);
        snprintf(pl[i], sizeof(pl[i]), "%d", first + i);
        ts[i].payload = pl[i];
        ts[i].payload_len = strlen(pl[i]);
    }
}

/* Several tickets of each kind in flight at once, answered in reverse
 * order of arrival, collected by ticket and by "any". */
START_TEST(mock_tickets_out_of_order)
{
    mock m = {.hold = 16};
    clawq_client *c;
    clawq_ticket put_t[4], pull_t[4], ack_t[4];
    clawq_put_task ts[4][8];
    char pl[4][8][16];
    clawq_lease_ref refs[4][3];
    clawq_result r;
    int user[12];
    int seen = 0, inversions = 0;
    clawq_ticket prev = 0;

    mock_start(&m);
    c = mock_connect(&m, 5000);
    for (int k = 0; k < 4; k++) {
        put_tasks_numbered(ts[k], pl[k], k + 1, 100 * k);
        if (k == 2)
            ts[k][1].priority = 255; /* its second item fails */
        user[k] = k;
        ck_assert_int_eq(clawq_put_batch_async(c, "q", ts[k], (size_t)k + 1,
                                               &user[k], &put_t[k]),
                         0);
        user[4 + k] = 4 + k;
        ck_assert_int_eq(clawq_pull_async(c, "q", (uint32_t)k + 1, 0, 0,
                                          &user[4 + k], &pull_t[k]),
                         0);
        for (int j = 0; j < 3; j++) {
            refs[k][j].id = (uint64_t)(10 * k + j);
            refs[k][j].lease_id = j == k ? 0 : 7; /* lease_id 0: LOST */
        }
        user[8 + k] = 8 + k;
        ck_assert_int_eq(
            clawq_ack_batch_async(c, refs[k], 3, &user[8 + k], &ack_t[k]), 0);
    }
    ck_assert_uint_eq(clawq_outstanding(c), 12);
    /* Tickets are distinct and not 0. */
    for (int k = 0; k < 4; k++)
        ck_assert(put_t[k] != 0 && pull_t[k] != 0 && ack_t[k] != 0 &&
                  put_t[k] != pull_t[k] && pull_t[k] != ack_t[k]);
    /* A synchronous call in the middle. */
    {
        clawq_queue_stats st;

        ck_assert_int_eq(clawq_queue_stats_get(c, "q", &st), 0);
        ck_assert_uint_eq(st.ready, 3);
    }
    /* The last pull by its ticket first. */
    ck_assert_int_eq(clawq_wait(c, pull_t[3], -1, &r), 0);
    ck_assert_uint_eq(r.ticket, pull_t[3]);
    ck_assert_int_eq(r.op, CLAWQ_OP_PULL);
    ck_assert_int_eq(r.status, 0);
    ck_assert_ptr_eq(r.user, &user[7]);
    ck_assert_uint_eq(r.n, 1);
    ck_assert_uint_eq(r.tasks[0].id, 45);
    ck_assert_uint_eq(r.tasks[0].lease_id, 4242);
    clawq_result_free(&r);
    ck_assert_ptr_null(r.tasks);
    seen++;
    /* A collected ticket is gone. */
    ck_assert_int_eq(clawq_wait(c, pull_t[3], 0, &r), CLAWQ_ENOT_FOUND);
    ck_assert_int_eq(clawq_wait(c, 999999, 0, &r), CLAWQ_ENOT_FOUND);
    while (clawq_outstanding(c) > 0) {
        int u, k;

        ck_assert_int_eq(clawq_wait(c, 0, -1, &r), 0);
        ck_assert_int_eq(r.status, 0);
        u = *(int *)r.user;
        k = u % 4;
        seen++;
        inversions += r.ticket < prev;
        prev = r.ticket;
        switch (u / 4) {
        case 0:
            ck_assert_int_eq(r.op, CLAWQ_OP_PUT);
            ck_assert_uint_eq(r.ticket, put_t[k]);
            ck_assert_uint_eq(r.n, (size_t)k + 1);
            ck_assert_ptr_nonnull(r.puts);
            ck_assert_uint_eq(r.n_failed, k == 2 ? 1 : 0);
            for (int i = 0; i <= k; i++) {
                if (k == 2 && i == 1) {
                    ck_assert_int_eq(r.puts[i].status, CLAWQ_ETOO_LARGE);
                    continue;
                }
                ck_assert_int_eq(r.puts[i].status, 0);
                ck_assert_uint_eq(r.puts[i].id, 1000u + 100u * k + i);
            }
            if (k == 2)
                ck_assert_ptr_nonnull(strstr(clawq_errmsg(c), "too large"));
            break;
        case 1:
            ck_assert_int_eq(r.op, CLAWQ_OP_PULL);
            ck_assert_uint_eq(r.ticket, pull_t[k]);
            ck_assert_uint_eq(r.n, 1);
            ck_assert_uint_eq(r.tasks[0].id, 42u + k);
            break;
        default:
            ck_assert_int_eq(r.op, CLAWQ_OP_ACK);
            ck_assert_uint_eq(r.ticket, ack_t[k]);
            ck_assert_uint_eq(r.n, 3);
            ck_assert_uint_eq(r.n_failed, k < 3 ? 1 : 0);
            for (int j = 0; j < 3; j++)
                ck_assert_int_eq(r.statuses[j], j == k ? CLAWQ_ELEASE_LOST : 0);
            break;
        }
        clawq_result_free(&r);
    }
    ck_assert_int_eq(seen, 12);
    ck_assert_int_gt(inversions, 0); /* they did complete out of order */
    ck_assert_int_eq(clawq_wait(c, 0, 0, &r), CLAWQ_ENOT_FOUND);
    ck_assert_int_eq(clawq_poll(c, &r), CLAWQ_ENOT_FOUND);
    clawq_close(c);
    mock_stop(&m);
}
END_TEST

/* More tickets than the window, mixed with put_async: submissions wait for
 * room and keep the answers; clawq_flush answers only the put_asyncs. */
START_TEST(mock_tickets_window_and_flush)
{
    mock m = {.hold = 7};
    clawq_client *c;
    static clawq_ticket t[300];
    static bool got[300];
    clawq_put_result res[50];
    clawq_put_task one;
    char pl[16];
    clawq_result r;
    size_t n = 0;

    mock_start(&m);
    c = mock_connect(&m, 5000); /* window 64 */
    clawq_put_task_init(&one);
    for (int i = 0; i < 300; i++) {
        if (i % 6 == 0 && i / 6 < 50) {
            snprintf(pl, sizeof(pl), "%d", i / 6);
            one.payload = pl;
            one.payload_len = strlen(pl);
            ck_assert_int_eq(clawq_put_async(c, "q", &one), i / 6);
        }
        ck_assert_int_eq(clawq_pull_async(c, "q", (uint32_t)(i % 1000) + 1, 0,
                                          0, (void *)(uintptr_t)i, &t[i]),
                         0);
    }
    ck_assert_uint_eq(clawq_outstanding(c), 300);
    ck_assert_uint_eq(clawq_pending(c), 50);
    ck_assert_int_eq(clawq_flush(c, res, 50), 0);
    for (int i = 0; i < 50; i++)
        ck_assert_uint_eq(res[i].id, 1000u + (unsigned)i);
    ck_assert_uint_eq(clawq_outstanding(c), 300);
    while (clawq_wait(c, 0, 2000, &r) == 0) {
        uintptr_t i = (uintptr_t)r.user;

        ck_assert_uint_lt(i, 300);
        ck_assert(!got[i]);
        got[i] = true;
        ck_assert_uint_eq(r.ticket, t[i]);
        ck_assert_int_eq(r.status, 0);
        ck_assert_uint_eq(r.tasks[0].id, 42u + i);
        clawq_result_free(&r);
        n++;
    }
    ck_assert_uint_eq(n, 300);
    ck_assert_uint_eq(clawq_outstanding(c), 0);
    clawq_close(c);
    mock_stop(&m);
}
END_TEST

/* The connection drops with tickets in flight: a keyed put is re-sent on
 * a new connection, everything else completes with CLAWQ_ECONN_LOST. */
START_TEST(mock_tickets_conn_lost)
{
    mock m = {.silent_conn = 1, .drop_on = 5};
    clawq_client *c;
    clawq_put_task tk, tu;
    clawq_lease_ref ref = {1, 1};
    clawq_ticket t_keyed, t_unkeyed, t_pull, t_ack;
    clawq_result r;
    int lost = 0;

    mock_start(&m);
    c = mock_connect(&m, 5000);
    clawq_put_task_init(&tk);
    tk.payload = "7";
    tk.payload_len = 1;
    tk.idempotency_key = "k7";
    tu = tk;
    tu.idempotency_key = NULL;
    ck_assert_int_eq(clawq_put_batch_async(c, "q", &tu, 1, NULL, &t_unkeyed),
                     0);
    ck_assert_int_eq(clawq_put_batch_async(c, "q", &tk, 1, NULL, &t_keyed), 0);
    ck_assert_int_eq(clawq_pull_async(c, "q", 5, 1000, 0, NULL, &t_pull), 0);
    ck_assert_int_eq(clawq_ack_batch_async(c, &ref, 1, NULL, &t_ack), 0);
    /* Nothing is answered on the first connection. */
    ck_assert_int_eq(clawq_wait(c, 0, 100, &r), CLAWQ_ETIMEOUT);
    ck_assert_uint_eq(clawq_outstanding(c), 4);
    /* The fifth request closes it. */
    {
        clawq_queue_stats st;

        ck_assert_int_eq(clawq_queue_stats_get(c, "q", &st), 0); /* re-sent */
    }
    ck_assert_int_eq(atomic_load(&m.conns), 2);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(clawq_wait(c, 0, 0, &r), 0);
        ck_assert(r.ticket == t_unkeyed || r.ticket == t_pull ||
                  r.ticket == t_ack);
        ck_assert_int_eq(r.status, CLAWQ_ECONN_LOST);
        ck_assert_ptr_null(r.puts);
        ck_assert_ptr_null(r.tasks);
        ck_assert_ptr_null(r.statuses);
        ck_assert_ptr_nonnull(strstr(clawq_errmsg(c), "outcome unknown"));
        clawq_result_free(&r);
        lost++;
    }
    ck_assert_int_eq(lost, 3);
    /* The keyed put went out again and is answered. */
    ck_assert_int_eq(clawq_wait(c, t_keyed, -1, &r), 0);
    ck_assert_int_eq(r.status, 0);
    ck_assert_uint_eq(r.n, 1);
    ck_assert_uint_eq(r.puts[0].id, 1007);
    clawq_result_free(&r);
    ck_assert_uint_eq(clawq_outstanding(c), 0);
    clawq_close(c);
    mock_stop(&m);
}
END_TEST

/* Lost while only tickets are in flight (noticed by clawq_wait itself),
 * a broker that stays down, a ticket's own timeout, refused requests. */
/* A node that keeps the connection but answers nothing (cut off by a
 * partition): the call times out, and the next call goes to the next
 * endpoint instead of waiting on the same node again. */
START_TEST(mock_timeout_moves_on)
{
    mock cut = {.silent_conn = 1}, ok = {0};
    clawq_options o;
    clawq_client *c = NULL;
    clawq_queue_stats st;
    char eps[96];

    mock_start(&cut);
    mock_start(&ok);
    snprintf(eps, sizeof(eps), "127.0.0.1:%u,127.0.0.1:%u", cut.port, ok.port);
    clawq_options_init(&o);
    o.request_timeout_ms = 300;
    ck_assert_int_eq(clawq_connect(eps, &o, &c), 0);
    ck_assert_int_eq(clawq_queue_stats_get(c, "q", &st), CLAWQ_ETIMEOUT);
    ck_assert_int_eq(clawq_queue_stats_get(c, "q", &st), 0);
    ck_assert_int_eq(atomic_load(&ok.requests), 1);
    clawq_close(c);
    mock_stop(&ok);
    mock_stop(&cut);
}
END_TEST

START_TEST(mock_tickets_timeout_and_down)
{
    mock m = {.silent_conn = 1};
    clawq_client *c;
    clawq_put_task tk;
    clawq_ticket t1, t2;
    clawq_result r;
    uint64_t t0;

    mock_start(&m);
    c = mock_connect(&m, 300);
    clawq_put_task_init(&tk);
    tk.payload = "3";
    tk.payload_len = 1;
    tk.idempotency_key = "k3";
    /* A ticket nobody answers completes with CLAWQ_ETIMEOUT after
     * request_timeout_ms (a pull: plus its wait). */
    ck_assert_int_eq(clawq_pull_async(c, "q", 1, 200, 0, NULL, &t1), 0);
    ck_assert_int_eq(clawq_put_batch_async(c, "q", &tk, 1, NULL, &t2), 0);
    t0 = (uint64_t)time(NULL);
    ck_assert_int_eq(clawq_wait(c, t2, -1, &r), 0);
    ck_assert_int_eq(r.status, CLAWQ_ETIMEOUT);
    ck_assert_int_eq(r.op, CLAWQ_OP_PUT);
    ck_assert_uint_eq(r.n, 1);
    ck_assert_ptr_null(r.puts);
    /* The put's timeout dropped the silent connection: the pull sent on
     * it (not safe to re-send) has an unknown outcome. */
    ck_assert_int_eq(clawq_wait(c, t1, -1, &r), 0);
    ck_assert_int_eq(r.status, CLAWQ_ECONN_LOST);
    ck_assert_uint_le((uint64_t)time(NULL) - t0, 2);
    ck_assert_int_eq(atomic_load(&m.requests), 2);
    /* Refused requests complete with the broker's status and hint. */
    m.silent_conn = 0;
    m.status = CLAWQ__STATUS__QUEUE_FULL;
    ck_assert_int_eq(clawq_put_batch_async(c, "q", &tk, 1, NULL, &t1), 0);
    ck_assert_int_eq(clawq_wait(c, t1, -1, &r), 0);
    ck_assert_int_eq(r.status, CLAWQ_EQUEUE_FULL);
    ck_assert_uint_eq(clawq_retry_after_ms(c), 250);
    ck_assert_str_eq(clawq_errmsg(c), "mock says no");
    m.status = 0;
    /* The broker goes away with a keyed put in flight: it is to be
     * re-sent, but no broker answers Hello any more, so it fails when its
     * time is up. */
    atomic_store(&m.down, true);
    m.drop_on = atomic_load(&m.requests) + 1;
    ck_assert_int_eq(clawq_put_batch_async(c, "q", &tk, 1, NULL, &t1), 0);
    ck_assert_int_eq(clawq_wait(c, t1, -1, &r), 0);
    ck_assert_int_eq(r.status, CLAWQ_ECONN_LOST);
    ck_assert_int_ge(atomic_load(&m.conns), 2);
    /* Submitting with no broker: an error, nothing queued. */
    ck_assert_int_eq(clawq_pull_async(c, "q", 1, 0, 0, NULL, &t2),
                     CLAWQ_ECONN_LOST);
    ck_assert_uint_eq(clawq_outstanding(c), 0);
    ck_assert_int_eq(clawq_put_batch_async(c, "q", &tk, 0, NULL, &t2),
                     CLAWQ_EINVALID);
    ck_assert_int_eq(clawq_pull_async(c, "q", 0, 0, 0, NULL, &t2),
                     CLAWQ_EINVALID);
    ck_assert_int_eq(clawq_ack_batch_async(c, NULL, 1, NULL, &t2),
                     CLAWQ_EINVALID);
    clawq_close(c);
    mock_stop(&m);
}
END_TEST

/* Tickets outstanding at close are freed (checked under ASan). */
START_TEST(mock_tickets_close_outstanding)
{
    mock m = {0};
    clawq_client *c;
    clawq_ticket t;
    clawq_put_task tk;

    mock_start(&m);
    c = mock_connect(&m, 2000);
    clawq_put_task_init(&tk);
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(clawq_pull_async(c, "q", 2, 0, 0, NULL, &t), 0);
        ck_assert_int_eq(clawq_put_batch_async(c, "q", &tk, 1, NULL, &t), 0);
    }
    {
        clawq_queue_stats st; /* lets some answers arrive */

        ck_assert_int_eq(clawq_queue_stats_get(c, "q", &st), 0);
    }
    ck_assert_uint_eq(clawq_outstanding(c), 20);
    clawq_close(c);
    clawq_result_free(NULL);
    mock_stop(&m);
}
END_TEST

START_TEST(connect_refused)
{
    clawq_client *c = (clawq_client *)0x1;
    char err[256];
    clawq_options o;

    clawq_options_init(&o);
    o.connect_timeout_ms = 500;
    ck_assert_int_eq(clawq_connect2("127.0.0.1:1", &o, &c, err, sizeof(err)),
                     CLAWQ_ECONN_LOST);
    ck_assert_ptr_eq(c, (clawq_client *)0x1); /* untouched on failure */
    ck_assert_ptr_nonnull(strstr(err, "127.0.0.1:1"));
    ck_assert_int_eq(clawq_connect2("nope:", NULL, &c, err, sizeof(err)),
                     CLAWQ_EINVALID);
    ck_assert_int_eq(clawq_connect(NULL, NULL, &c), CLAWQ_EINVALID);
    clawq_close(NULL);
}
END_TEST

/* ---- clawqctl ---------------------------------------------------------- */

static const char *ctl_path(void)
{
    const char *bin = getenv("CLAWQCTL");
    return bin != NULL && bin[0] != '\0' ? bin : CLAWQCTL_PATH;
}

/* Runs $CLAWQCTL with args (stdout and stderr to /dev/null unless out is
 * set, which receives stdout); returns its exit status. */
static int ctl_run(char *out, size_t out_len, const char *const *args)
{
    const char *bin = ctl_path();
    char *argv[32];
    int pfd[2], status, n = 0;
    pid_t pid;

    argv[n++] = (char *)(uintptr_t)bin;
    for (; args[n - 1] != NULL; n++)
        argv[n] = (char *)(uintptr_t)args[n - 1];
    argv[n] = NULL;
    ck_assert_int_eq(pipe(pfd), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);

        dup2(pfd[1], 1);
        dup2(devnull, 2);
        dup2(devnull, 0);
        close(pfd[0]);
        unsetenv("CLAWQ_SERVER");
        execv(bin, argv);
        _exit(127);
    }
    close(pfd[1]);
    {
        size_t got = 0;
        char buf[4096];
        ssize_t r;

        while ((r = read(pfd[0], buf, sizeof(buf))) > 0) {
            if (out != NULL && got + (size_t)r < out_len) {
                memcpy(out + got, buf, (size_t)r);
                got += (size_t)r;
            }
        }
        if (out != NULL)
            out[got] = '\0';
    }
    close(pfd[0]);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    return WEXITSTATUS(status);
}

#define CTL(...) ctl_run(NULL, 0, (const char *const[]){__VA_ARGS__, NULL})

START_TEST(ctl_usage_errors)
{
    ck_assert_int_eq(CTL("--help"), 0);
    ck_assert_int_eq(CTL("put", "--help"), 0);
    ck_assert_int_eq(CTL("dlq", "--help"), 0);
    ck_assert_int_eq(CTL("help", "queue"), 0);
    ck_assert_int_eq(CTL("--bogus"), 2);
    ck_assert_int_eq(ctl_run(NULL, 0, (const char *const[]){NULL}), 2);
    ck_assert_int_eq(CTL("frobnicate"), 2);
    ck_assert_int_eq(CTL("--timeout", "0", "queues"), 2);
    ck_assert_int_eq(CTL("--timeout", "x", "queues"), 2);
    ck_assert_int_eq(CTL("--server"), 2);
    ck_assert_int_eq(CTL("stats"), 2);
    ck_assert_int_eq(CTL("stats", "a", "b"), 2);
    ck_assert_int_eq(CTL("stats", "bad/name"), 2);
    ck_assert_int_eq(CTL("peek", "q", "--state", "gone"), 2);
    ck_assert_int_eq(CTL("peek", "q", "-n", "0"), 2);
    ck_assert_int_eq(CTL("peek", "q", "-n", "1001"), 2);
    ck_assert_int_eq(CTL("put", "q"), 2);
    ck_assert_int_eq(CTL("put", "q", "--priority", "256", "x"), 2);
    ck_assert_int_eq(CTL("put", "q", "--priority", "-1", "x"), 2);
    ck_assert_int_eq(CTL("put", "q", "--delay", "1.5", "x"), 2);
    ck_assert_int_eq(CTL("put", "q", "--header", "novalue", "x"), 2);
    ck_assert_int_eq(CTL("put", "q", "--header", "=v", "x"), 2);
    ck_assert_int_eq(CTL("put", "q", "--key", "", "x"), 2);
    ck_assert_int_eq(CTL("put", "q", "--priority", "1", "--priority", "2", "x"),
                     2);
    ck_assert_int_eq(CTL("pull", "q", "-n", "1025"), 2);
    ck_assert_int_eq(CTL("pull", "q", "--wait", "-5"), 2);
    ck_assert_int_eq(CTL("pull", "q", "--ack=yes"), 2);
    ck_assert_int_eq(CTL("ack", "1"), 2);
    ck_assert_int_eq(CTL("ack", "x", "1"), 2);
    ck_assert_int_eq(CTL("ack", "0", "1"), 2);
    ck_assert_int_eq(CTL("nack", "1", "2", "--delay", "soon"), 2);
    ck_assert_int_eq(CTL("fail", "1", "2", "3"), 2);
    ck_assert_int_eq(CTL("dlq"), 2);
    ck_assert_int_eq(CTL("dlq", "eat", "q"), 2);
    ck_assert_int_eq(CTL("dlq", "show"), 2);
    ck_assert_int_eq(CTL("dlq", "list", "q", "-n", "1001"), 2);
    ck_assert_int_eq(CTL("dlq", "replay", "q", "--from", "10", "--to", "5"), 2);
    ck_assert_int_eq(CTL("queue", "set", "q"), 2);
    ck_assert_int_eq(CTL("queue", "set", "q", "color=red"), 2);
    ck_assert_int_eq(CTL("queue", "set", "q", "lease_ms=0"), 2);
    ck_assert_int_eq(CTL("queue", "set", "q", "lease_ms=4294967296"), 2);
    ck_assert_int_eq(CTL("queue", "set", "q", "max_depth"), 2);
    ck_assert_int_eq(CTL("queue", "get", "q"), 2);
    ck_assert_int_eq(CTL("pause"), 2);
    /* Valid arguments, no broker: a connection error, exit 1. */
    ck_assert_int_eq(
        CTL("--server", "127.0.0.1:1", "--timeout", "500", "stats", "q"), 1);
    ck_assert_int_eq(CTL("--server", "bad:port:x", "queues"), 1);
}
END_TEST

START_TEST(ctl_against_mock)
{
    mock m = {0};
    char srv[64], out[8192];

    mock_start(&m);
    snprintf(srv, sizeof(srv), "127.0.0.1:%u", m.port);
    ck_assert_int_eq(
        ctl_run(out, sizeof(out),
                (const char *const[]){"--server", srv, "--json", "put", "q",
                                      "--key", "dup", "7", NULL}),
        0);
    ck_assert_str_eq(out, "{\"id\":1007,\"duplicate\":true}\n");
    ck_assert_int_eq(ctl_run(out, sizeof(out),
                             (const char *const[]){"--server", srv, "pull", "q",
                                                   "--json", NULL}),
                     0);
    ck_assert_ptr_nonnull(
        strstr(out, "\"payload\":\"/wB4\",\"payload_encoding\":\"base64\""));
    ck_assert_ptr_nonnull(strstr(out, "\"lease_id\":4242"));
    ck_assert_ptr_nonnull(strstr(out, "\"state\":\"leased\""));
    m.status = CLAWQ__STATUS__NOT_FOUND;
    ck_assert_int_eq(
        ctl_run(out, sizeof(out),
                (const char *const[]){"--server", srv, "stats", "q", NULL}),
        1);
    mock_stop(&m);
}
END_TEST

static Suite *client_suite(void)
{
    Suite *s = suite_create("client");
    TCase *tc;

    tc = tcase_create("endpoints");
    tcase_add_test(tc, endpoints_valid);
    tcase_add_test(tc, endpoints_invalid);
    tcase_add_test(tc, endpoint_host_limit);
    suite_add_tcase(s, tc);

    tc = tcase_create("text");
    tcase_add_test(tc, json_escaping);
    tcase_add_test(tc, utf8_validation);
    tcase_add_test(tc, base64_vectors);
    tcase_add_test(tc, number_parsing);
    suite_add_tcase(s, tc);

    tc = tcase_create("tasks");
    tcase_add_test(tc, tasks_copy_flattens);
    suite_add_tcase(s, tc);

    tc = tcase_create("mock_broker");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, mock_put_pull_ack);
    tcase_add_test(tc, mock_pipeline_out_of_order);
    tcase_add_test(tc, mock_redirect_to_leader);
    tcase_add_test(tc, mock_redirect_bounded);
    tcase_add_test(tc, mock_reconnect_rules);
    tcase_add_test(tc, mock_errors_mapped);
    tcase_add_test(tc, mock_tickets_out_of_order);
    tcase_add_test(tc, mock_tickets_window_and_flush);
    tcase_add_test(tc, mock_tickets_conn_lost);
    tcase_add_test(tc, mock_tickets_timeout_and_down);
    tcase_add_test(tc, mock_timeout_moves_on);
    tcase_add_test(tc, mock_tickets_close_outstanding);
    tcase_add_test(tc, connect_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("clawqctl");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, ctl_usage_errors);
    tcase_add_test(tc, ctl_against_mock);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(client_suite());
    int failed;

    signal(SIGPIPE, SIG_IGN);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
