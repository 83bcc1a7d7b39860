/* test_badinput.c: what clawqd does with clients that speak the protocol
 * badly, over raw TCP sockets: random bytes, a length prefix over
 * max-frame, truncated frames, a request before Hello, an undecodable
 * body, and a client that pipelines requests without ever reading the
 * replies (the broker must stop reading from it rather than buffer without
 * bound). During and after each, a well-behaved libclawq client still puts
 * and pulls, and the broker still runs; at the end it stops cleanly. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clawq.pb-c.h"
#include "frame.h"
#include "harness.h"

static th_broker *B;

static void setup(void)
{
    B = th_broker_start(NULL);
}

static void teardown(void)
{
    th_broker_free(B);
    B = NULL;
}

/* ---- raw sockets ---- */

static int raw_connect(const th_broker *b)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons(b->port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

/* Writes all of buf (blocking). Returns false when the peer closed. */
static bool send_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* Encodes rq as one frame into a malloc'd buffer. */
static uint8_t *encode(const Clawq__Request *rq, size_t *len)
{
    size_t body = clawq__request__get_packed_size(rq);
    uint8_t *buf = malloc(CLAWQ_FRAME_HEADER_LEN + body);

    ck_assert_ptr_nonnull(buf);
    clawq_frame_put_len(buf, (uint32_t)body);
    clawq__request__pack(rq, buf + CLAWQ_FRAME_HEADER_LEN);
    *len = CLAWQ_FRAME_HEADER_LEN + body;
    return buf;
}

static bool send_request(int fd, const Clawq__Request *rq)
{
    size_t len;
    uint8_t *buf = encode(rq, &len);
    bool ok = send_all(fd, buf, len);

    free(buf);
    return ok;
}

/* Reads exactly len bytes within timeout_ms. Returns 1, 0 on EOF or reset,
 * -1 on timeout. */
static int recv_exact(int fd, uint8_t *buf, size_t len, uint32_t timeout_ms)
{
    uint64_t end = th_now_ms() + timeout_ms;
    size_t got = 0;

    while (got < len) {
        struct pollfd p = {fd, POLLIN, 0};
        uint64_t now = th_now_ms();
        ssize_t n;

        if (now >= end)
            return -1;
        if (poll(&p, 1, (int)(end - now)) <= 0)
            continue;
        n = recv(fd, buf + got, len - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        got += (size_t)n;
    }
    return 1;
}

/* Reads one response frame within timeout_ms; NULL on EOF or timeout. */
static Clawq__Response *recv_response(int fd, uint32_t timeout_ms)
{
    uint8_t hdr[CLAWQ_FRAME_HEADER_LEN], *body;
    Clawq__Response *r;
    uint32_t len;

    if (recv_exact(fd, hdr, sizeof(hdr), timeout_ms) != 1)
        return NULL;
    len = clawq_frame_get_len(hdr);
    ck_assert_uint_le(len, 64u << 20);
    body = malloc(len > 0 ? len : 1);
    ck_assert_ptr_nonnull(body);
    if (recv_exact(fd, body, len, timeout_ms) != 1) {
        free(body);
        return NULL;
    }
    r = clawq__response__unpack(NULL, len, body);
    free(body);
    ck_assert_ptr_nonnull(r);
    return r;
}

/* True when the broker closes fd (EOF or reset) within timeout_ms,
 * discarding whatever else it sends first. */
static bool closed_by_peer(int fd, uint32_t timeout_ms)
{
    uint64_t end = th_now_ms() + timeout_ms;
    uint8_t buf[4096];

    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        uint64_t now = th_now_ms();
        ssize_t n;

        if (now >= end)
            return false;
        if (poll(&p, 1, (int)(end - now)) <= 0)
            continue;
        n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
            return true;
    }
}

static void hello_request(Clawq__Request *rq, Clawq__Hello *h, uint64_t id)
{
    clawq__request__init(rq);
    clawq__hello__init(h);
    h->has_protocol_version = 1;
    h->protocol_version = CLAWQ_PROTOCOL_VERSION;
    h->client_name = "badinput";
    rq->id = id;
    rq->body_case = CLAWQ__REQUEST__BODY_HELLO;
    rq->hello = h;
}

/* Connects and says Hello; returns the fd and, in *max_frame, the limit
 * the broker announced. */
static int raw_hello(const th_broker *b, uint32_t *max_frame)
{
    Clawq__Request rq;
    Clawq__Hello h;
    Clawq__Response *r;
    int fd = raw_connect(b);

    hello_request(&rq, &h, 1);
    ck_assert(send_request(fd, &rq));
    r = recv_response(fd, 10000);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(r->id, 1);
    ck_assert_int_eq(r->status, CLAWQ__STATUS__OK);
    ck_assert_int_eq(r->body_case, CLAWQ__RESPONSE__BODY_HELLO);
    ck_assert_uint_gt(r->hello->max_frame, 0);
    if (max_frame != NULL)
        *max_frame = r->hello->max_frame;
    clawq__response__free_unpacked(r, NULL);
    return fd;
}

/* A well-behaved client still puts, pulls and acks; the broker runs. */
static void assert_healthy(const th_broker *b)
{
    clawq_client *c;
    clawq_put_task t;
    clawq_task *got = NULL;
    uint64_t id = 0;
    size_t n = 0;

    ck_assert_msg(th_broker_alive(B), "clawqd is not running");
    c = th_connect(b);
    clawq_put_task_init(&t);
    t.payload = "ok";
    t.payload_len = 2;
    th_assert_ok(c, clawq_put(c, "health", &t, &id, NULL));
    th_assert_ok(c, clawq_pull(c, "health", 1, 0, 0, &got, &n));
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(got[0].id, id);
    th_assert_ok(c, clawq_ack(c, id, got[0].lease_id));
    clawq_tasks_free(got);
    clawq_close(c);
}

/* The end of every test: healthy, then a clean SIGTERM. */
static void assert_healthy_and_stops(void)
{
    assert_healthy(B);
    ck_assert_int_eq(th_broker_stop(B, 20000), 0);
}

/* ---- tests ---- */

START_TEST(test_random_bytes)
{
    uint8_t buf[4096];
    unsigned seed = 12345;
    int closed = 0;

    for (int conn = 0; conn < 16; conn++) {
        int fd;

        /* Half before Hello, half after it. */
        fd = conn % 2 == 0 ? raw_connect(B) : raw_hello(B, NULL);
        for (size_t i = 0; i < sizeof(buf); i++)
            buf[i] = (uint8_t)rand_r(&seed);
        /* Small length prefixes sometimes, so some frames get decoded. */
        if (conn % 4 == 3) {
            buf[0] = 0;
            buf[1] = 0;
            buf[2] = 0;
        }
        send_all(fd, buf, sizeof(buf));
        if (closed_by_peer(fd, 300))
            closed++;
        close(fd);
        if (conn % 4 == 0)
            assert_healthy(B);
    }
    fprintf(stderr, "random_bytes: broker closed %d of 16 connections\n",
            closed);
    assert_healthy_and_stops();
}
END_TEST

START_TEST(test_oversized_length)
{
    uint32_t max_frame = 0;
    uint8_t hdr[CLAWQ_FRAME_HEADER_LEN];
    Clawq__Response *r;
    int fd = raw_hello(B, &max_frame);

    /* One byte over the limit: TOO_LARGE, then close. */
    clawq_frame_put_len(hdr, max_frame + 1);
    ck_assert(send_all(fd, hdr, sizeof(hdr)));
    r = recv_response(fd, 5000);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->status, CLAWQ__STATUS__TOO_LARGE);
    clawq__response__free_unpacked(r, NULL);
    ck_assert(closed_by_peer(fd, 5000));
    close(fd);

    /* 4 GiB - 1 before Hello: closed too, with nothing allocated. */
    fd = raw_connect(B);
    memset(hdr, 0xff, sizeof(hdr));
    ck_assert(send_all(fd, hdr, sizeof(hdr)));
    ck_assert(closed_by_peer(fd, 5000));
    close(fd);
    ck_assert_int_lt(th_rss_kb(B->pid), 200 * 1024);
    assert_healthy_and_stops();
}
END_TEST

START_TEST(test_truncated_frames)
{
    Clawq__Request rq;
    Clawq__Hello h;
    uint8_t *frame, hdr[CLAWQ_FRAME_HEADER_LEN];
    size_t len;
    int held;

    hello_request(&rq, &h, 7);
    frame = encode(&rq, &len);
    /* Every prefix of a valid Hello frame, then close. */
    for (size_t cut = 1; cut < len; cut++) {
        int fd = raw_connect(B);
        ck_assert(send_all(fd, frame, cut));
        close(fd);
    }
    /* A header announcing 1000 bytes, 10 sent, then close. */
    {
        int fd = raw_hello(B, NULL);
        uint8_t junk[10] = {0};
        clawq_frame_put_len(hdr, 1000);
        ck_assert(send_all(fd, hdr, sizeof(hdr)));
        ck_assert(send_all(fd, junk, sizeof(junk)));
        close(fd);
    }
    /* One left half-sent and open while others work. */
    held = raw_hello(B, NULL);
    clawq_frame_put_len(hdr, 100);
    ck_assert(send_all(held, hdr, sizeof(hdr)));
    ck_assert(send_all(held, "abc", 3));
    assert_healthy(B);
    close(held);
    free(frame);
    assert_healthy_and_stops();
}
END_TEST

START_TEST(test_request_before_hello)
{
    Clawq__Request rq;
    Clawq__StatsRequest st;
    Clawq__Response *r;
    int fd = raw_connect(B);

    clawq__request__init(&rq);
    clawq__stats_request__init(&st);
    st.queue = "jobs";
    rq.id = 42;
    rq.body_case = CLAWQ__REQUEST__BODY_STATS;
    rq.stats = &st;
    ck_assert(send_request(fd, &rq));
    r = recv_response(fd, 5000);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(r->id, 42);
    ck_assert_int_eq(r->status, CLAWQ__STATUS__INVALID);
    ck_assert_ptr_nonnull(r->message);
    ck_assert_str_ne(r->message, "");
    clawq__response__free_unpacked(r, NULL);
    ck_assert(closed_by_peer(fd, 5000));
    close(fd);
    assert_healthy_and_stops();
}
END_TEST

START_TEST(test_undecodable_body)
{
    /* Field 1 as a length-delimited field claiming 127 bytes, then 3;
     * then a wire type 7 (invalid). */
    static const uint8_t bodies[][8] = {
        {0x0a, 0x7f, 0x01, 0x02, 0x03, 0, 0, 0},
        {0x0f, 0x01, 0, 0, 0, 0, 0, 0},
        {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        uint8_t frame[CLAWQ_FRAME_HEADER_LEN + 8];
        Clawq__Response *r;
        int fd = raw_hello(B, NULL);

        clawq_frame_put_len(frame, 8);
        memcpy(frame + CLAWQ_FRAME_HEADER_LEN, bodies[i], 8);
        ck_assert(send_all(fd, frame, sizeof(frame)));
        r = recv_response(fd, 5000);
        ck_assert_msg(r != NULL, "body %zu: no error response", i);
        ck_assert_int_eq(r->status, CLAWQ__STATUS__INVALID);
        clawq__response__free_unpacked(r, NULL);
        ck_assert(closed_by_peer(fd, 5000));
        close(fd);
    }
    /* A message missing its required id is undecodable too. */
    {
        uint8_t frame[CLAWQ_FRAME_HEADER_LEN + 2] = {0, 0, 0, 2, 0x12, 0x00};
        Clawq__Response *r;
        int fd = raw_hello(B, NULL);

        ck_assert(send_all(fd, frame, sizeof(frame)));
        r = recv_response(fd, 5000);
        ck_assert_ptr_nonnull(r);
        ck_assert_int_ne(r->status, CLAWQ__STATUS__OK);
        clawq__response__free_unpacked(r, NULL);
        close(fd);
    }
    assert_healthy_and_stops();
}
END_TEST

#define BIG_TASKS 1000
#define BIG_PAYLOAD 1024

/* SIGTERM while a client neither reads its replies nor closes: after
 * --shutdown-grace the broker cuts it off and exits 0 (it used to wait for
 * the client, or for --idle-timeout, for ever with 0). */
START_TEST(test_sigterm_cuts_off_a_stuck_client)
{
    th_broker *b2 =
        th_broker_start("--shutdown-grace", "1s", "--idle-timeout", "0", NULL);
    static char payload[BIG_PAYLOAD];
    clawq_client *c = th_connect(b2);
    clawq_put_task t;
    Clawq__Request rq;
    Clawq__PeekRequest pk;
    uint8_t *frame;
    size_t len;
    uint64_t t0;
    int fd, rc, rcvbuf = 4096;

    memset(payload, 'x', sizeof(payload));
    clawq_put_task_init(&t);
    t.payload = payload;
    t.payload_len = sizeof(payload);
    for (int i = 0; i < 200; i++)
        ck_assert_int_ge(clawq_put_async(c, "big", &t), 0);
    th_assert_ok(c, clawq_flush(c, NULL, 0));
    clawq_close(c);

    fd = raw_hello(b2, NULL);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    clawq__request__init(&rq);
    clawq__peek_request__init(&pk);
    pk.queue = "big";
    pk.has_max = 1;
    pk.max = 200;
    rq.body_case = CLAWQ__REQUEST__BODY_PEEK;
    rq.peek = &pk;
    for (int i = 0; i < 100; i++) {
        rq.id = 1000 + (uint64_t)i;
        frame = encode(&rq, &len);
        if (send(fd, frame, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
            free(frame);
            break;
        }
        free(frame);
    }
    th_sleep_ms(300); /* replies pile up unread */
    t0 = th_now_ms();
    rc = th_broker_stop(b2, 8000);
    fprintf(stderr, "sigterm with a stuck client: exit %d after %llu ms\n", rc,
            (unsigned long long)(th_now_ms() - t0));
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_lt(th_now_ms() - t0, 5000);
    close(fd);
    th_broker_free(b2);
}
END_TEST

START_TEST(test_unread_replies_bounded)
{
    static char payload[BIG_PAYLOAD];
    clawq_client *c = th_connect(B);
    clawq_put_task t;
    Clawq__Request rq;
    Clawq__PeekRequest pk;
    uint8_t *frame;
    size_t len, sent = 0, n_sent = 0;
    long rss0, rss, rss_max = 0;
    uint64_t end, start, blocked_since = 0;
    bool stopped;
    int fd, fl;

    /* A queue whose peek answers ~1 MiB to a 20-byte request. */
    memset(payload, 'x', sizeof(payload));
    clawq_put_task_init(&t);
    t.payload = payload;
    t.payload_len = sizeof(payload);
    for (int i = 0; i < BIG_TASKS; i++)
        ck_assert_int_ge(clawq_put_async(c, "big", &t), 0);
    th_assert_ok(c, clawq_flush(c, NULL, 0));
    clawq_close(c);
    rss0 = th_rss_kb(B->pid);

    fd = raw_hello(B, NULL);
    clawq__request__init(&rq);
    clawq__peek_request__init(&pk);
    pk.queue = "big";
    pk.has_max = 1;
    pk.max = 1000;
    rq.id = 100;
    rq.body_case = CLAWQ__REQUEST__BODY_PEEK;
    rq.peek = &pk;
    frame = encode(&rq, &len);
    start = th_now_ms();
    fl = fcntl(fd, F_GETFL);
    ck_assert_int_eq(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);

    /* Send peeks, never reading, until the broker stops reading (our
     * sends stay blocked for 1.5 s), for at most 8 s and 1,000,000
     * requests (1 TiB of replies if it answered them all). */
    end = th_now_ms() + 8000;
    while (th_now_ms() < end && n_sent < 1000000) {
        ssize_t n = send(fd, frame + sent, len - sent, MSG_NOSIGNAL);
        if (n > 0) {
            sent += (size_t)n;
            if (sent == len) {
                sent = 0;
                n_sent++;
            }
            blocked_since = 0;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            rss = th_rss_kb(B->pid);
            if (rss > rss_max)
                rss_max = rss;
            if (blocked_since == 0)
                blocked_since = th_now_ms();
            else if (th_now_ms() - blocked_since >= 1500)
                break;
            th_sleep_ms(10);
            continue;
        }
        break; /* closed by the broker: also bounded */
    }
    stopped = blocked_since != 0 && th_now_ms() - blocked_since >= 1500;
    rss = th_rss_kb(B->pid);
    if (rss > rss_max)
        rss_max = rss;
    fprintf(stderr,
            "unread_replies: %zu requests sent in %llu ms (%s), clawqd RSS "
            "%ld kB before, %ld kB max\n",
            n_sent, (unsigned long long)(th_now_ms() - start),
            stopped ? "then the broker stopped reading" : "still reading", rss0,
            rss_max);
    ck_assert_msg(th_broker_alive(B), "clawqd died");
    ck_assert_int_lt(rss_max, 200 * 1024);

    /* Others are served meanwhile. */
    assert_healthy(B);
    rss = th_rss_kb(B->pid);
    ck_assert_int_lt(rss, 200 * 1024);
    close(fd);
    free(frame);
    th_sleep_ms(200);
    assert_healthy_and_stops();
}
END_TEST

static Suite *badinput_suite(void)
{
    Suite *s = suite_create("badinput");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"random_bytes", test_random_bytes},
        {"oversized_length", test_oversized_length},
        {"truncated_frames", test_truncated_frames},
        {"request_before_hello", test_request_before_hello},
        {"undecodable_body", test_undecodable_body},
        {"unread_replies_bounded", test_unread_replies_bounded},
        {"sigterm_cuts_off_a_stuck_client",
         test_sigterm_cuts_off_a_stuck_client},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = th_tcase_new(cases[i].name, 40);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    return th_run_suite(badinput_suite());
}
