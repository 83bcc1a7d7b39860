/* adapter_beanstalkd: beanstalkd's text protocol, hand-written over a TCP
 * socket (docs/BENCHMARKS.md has the batch mapping).
 *
 * beanstalkd has no batch command, so a batch of n is n commands written
 * at once on the connection and their n replies read back:
 *
 *   put      "put PRI 0 TTR LEN\r\nDATA\r\n"    -> "INSERTED ID\r\n"
 *   pull     n x "reserve-with-timeout 0\r\n"  -> "RESERVED ID LEN\r\nDATA\r\n"
 *            or "TIMED_OUT\r\n"; when all n time out, one blocking
 *            "reserve-with-timeout S\r\n" (S: the wait in whole seconds)
 *   ack      n x "delete ID\r\n"               -> "DELETED\r\n"
 *
 * Producers "use" the tube named after the queue; consumers "watch" it and
 * "ignore" the default tube. TTR is the bench's lease. */
#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "adapter.h"

#define BS_LINE_MAX 256       /* longest reply line we accept */
#define BS_JOB_MAX (1u << 20) /* beanstalkd's -z cap is 65535 by default */
#define BS_RBUF (64u * 1024)
#define BS_EIO (-10) /* the connection broke: internal */

typedef struct bs_conn {
    bench_conn base;
    const bench_cfg *cfg;
    int fd;
    uint8_t rbuf[BS_RBUF];
    size_t r_off, r_len;
    char *wbuf; /* one batch of commands */
    size_t w_len, w_cap;
    uint8_t *arena; /* pulled payloads */
    size_t arena_cap;
    bench_msg *msgs; /* cfg->batch */
} bs_conn;

static int bs_wreserve(bs_conn *k, size_t more)
{
    if (k->w_len + more > k->w_cap) {
        size_t cap = (k->w_len + more) * 2;
        char *p = realloc(k->wbuf, cap);
        if (p == NULL)
            return bench_fail(&k->base, BENCH_EFAIL, "out of memory");
        k->wbuf = p;
        k->w_cap = cap;
    }
    return 0;
}

static int bs_append(bs_conn *k, const void *p, size_t n)
{
    if (bs_wreserve(k, n) != 0)
        return BENCH_EFAIL;
    memcpy(k->wbuf + k->w_len, p, n);
    k->w_len += n;
    return 0;
}

static int bs_appendf(bs_conn *k, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int bs_appendf(bs_conn *k, const char *fmt, ...)
{
    char line[BS_LINE_MAX];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line))
        return bench_fail(&k->base, BENCH_EFAIL, "command too long");
    return bs_append(k, line, (size_t)n);
}

/* Writes the batch of commands and empties the buffer. */
static int bs_flush(bs_conn *k)
{
    size_t off = 0;

    while (off < k->w_len) {
        ssize_t w = send(k->fd, k->wbuf + off, k->w_len - off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return bench_fail(&k->base, BENCH_EFAIL, "send: %s",
                              strerror(errno));
        }
        off += (size_t)w;
    }
    k->w_len = 0;
    return 0;
}

static int bs_fill(bs_conn *k)
{
    ssize_t r;

    if (k->r_off > 0) {
        memmove(k->rbuf, k->rbuf + k->r_off, k->r_len - k->r_off);
        k->r_len -= k->r_off;
        k->r_off = 0;
    }
    if (k->r_len == sizeof(k->rbuf))
        return bench_fail(&k->base, BENCH_EFAIL, "reply line too long");
    do {
        r = recv(k->fd, k->rbuf + k->r_len, sizeof(k->rbuf) - k->r_len, 0);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return bench_fail(&k->base, BENCH_EFAIL, "recv: %s",
                          errno == EAGAIN ? "timed out" : strerror(errno));
    if (r == 0)
        return bench_fail(&k->base, BENCH_EFAIL, "connection closed");
    k->r_len += (size_t)r;
    return 0;
}

/* Reads one reply line (without its CRLF) into line. */
static int bs_line(bs_conn *k, char *line, size_t cap)
{
    for (;;) {
        uint8_t *start = k->rbuf + k->r_off;
        size_t avail = k->r_len - k->r_off;
        uint8_t *nl = avail > 0 ? memchr(start, '\n', avail) : NULL;

        if (nl != NULL) {
            size_t n = (size_t)(nl - start);
            if (n == 0 || start[n - 1] != '\r' || n > cap)
                return bench_fail(&k->base, BENCH_EFAIL, "bad reply line");
            memcpy(line, start, n - 1);
            line[n - 1] = '\0';
            k->r_off += n + 1;
            return 0;
        }
        if (avail > BS_LINE_MAX)
            return bench_fail(&k->base, BENCH_EFAIL, "reply line too long");
        if (bs_fill(k) != 0)
            return BENCH_EFAIL;
    }
}

/* Reads exactly n bytes into dst. */
static int bs_read(bs_conn *k, uint8_t *dst, size_t n)
{
    while (n > 0) {
        size_t avail = k->r_len - k->r_off, take;

        if (avail == 0) {
            if (bs_fill(k) != 0)
                return BENCH_EFAIL;
            continue;
        }
        take = avail < n ? avail : n;
        memcpy(dst, k->rbuf + k->r_off, take);
        k->r_off += take;
        dst += take;
        n -= take;
    }
    return 0;
}

/* Sends one command and checks that its reply starts with want. */
static int bs_simple(bs_conn *k, const char *cmd, const char *want)
{
    char line[BS_LINE_MAX];

    if (bs_appendf(k, "%s\r\n", cmd) != 0 || bs_flush(k) != 0 ||
        bs_line(k, line, sizeof(line)) != 0)
        return BENCH_EFAIL;
    if (strncmp(line, want, strlen(want)) != 0)
        return bench_fail(&k->base, BENCH_EFAIL, "%s: %s", cmd, line);
    return 0;
}

static void bs_close(bench_conn *bc)
{
    bs_conn *k = (bs_conn *)bc;

    if (k == NULL)
        return;
    if (k->fd >= 0)
        close(k->fd);
    free(k->wbuf);
    free(k->arena);
    free(k->msgs);
    free(k);
}

static int bs_connect(const bench_cfg *cfg, const char *role, uint32_t index,
                      bench_conn **out, char *err, size_t err_len)
{
    bs_conn *k = calloc(1, sizeof(*k));
    struct sockaddr_in sa = {0};
    /* A reply can take the blocking reserve's wait, plus slack. */
    struct timeval tv = {10 + (time_t)(cfg->wait_ms / 1000) + 1, 0};
    char host[64], cmd[BS_LINE_MAX];
    int port, one = 1;

    (void)index;
    if (k == NULL)
        return BENCH_EFAIL;
    k->base.ad = &bench_beanstalkd;
    k->cfg = cfg;
    k->fd = -1;
    k->msgs = calloc(cfg->batch, sizeof(*k->msgs));
    if (k->msgs == NULL)
        goto fail;
    if (!bench_split_addr(cfg->addr, host, sizeof(host), &port) ||
        inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        bench_fail(&k->base, BENCH_EFAIL, "bad address %s", cfg->addr);
        goto fail;
    }
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    k->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (k->fd < 0 || connect(k->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        bench_fail(&k->base, BENCH_EFAIL, "connect %s: %s", cfg->addr,
                   strerror(errno));
        goto fail;
    }
    setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(k->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(k->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (strcmp(role, "producer") == 0) {
        snprintf(cmd, sizeof(cmd), "use %s", cfg->queue);
        if (bs_simple(k, cmd, "USING ") != 0)
            goto fail;
    } else {
        snprintf(cmd, sizeof(cmd), "watch %s", cfg->queue);
        if (bs_simple(k, cmd, "WATCHING ") != 0 ||
            bs_simple(k, "ignore default", "WATCHING ") != 0)
            goto fail;
    }
    *out = &k->base;
    return 0;
fail:
    snprintf(err, err_len, "%s", k->base.err);
    bs_close(&k->base);
    return BENCH_EFAIL;
}

static unsigned bs_ttr(const bs_conn *k)
{
    return k->cfg->lease_ms / 1000 > 0 ? k->cfg->lease_ms / 1000 : 1;
}

/* Reads one put's reply: 0 for INSERTED, BS_EIO when the connection
 * broke, else the task's error. */
static int bs_put_reply(bs_conn *k)
{
    char line[BS_LINE_MAX];

    if (bs_line(k, line, sizeof(line)) != 0)
        return BS_EIO;
    if (strncmp(line, "INSERTED ", 9) == 0)
        return 0;
    bench_fail(&k->base, 0, "put: %s", line);
    return strcmp(line, "DRAINING") == 0 || strcmp(line, "OUT_OF_MEMORY") == 0
               ? BENCH_EREFUSED
               : BENCH_EFAIL;
}

static int bs_put_batch(bench_conn *bc, const uint8_t *const *payloads,
                        size_t len, size_t n, int *status)
{
    bs_conn *k = (bs_conn *)bc;
    int failed = 0;

    for (size_t i = 0; i < n; i++) {
        if (bs_appendf(k, "put 128 0 %u %zu\r\n", bs_ttr(k), len) != 0 ||
            bs_append(k, payloads[i], len) != 0 || bs_append(k, "\r\n", 2))
            return BENCH_EFAIL;
    }
    if (bs_flush(k) != 0)
        return BENCH_EFAIL;
    for (size_t i = 0; i < n; i++) {
        status[i] = bs_put_reply(k);
        if (status[i] == BS_EIO)
            return BENCH_EFAIL;
        if (status[i] != 0)
            failed++;
    }
    return failed;
}

static int bs_put(bench_conn *bc, const uint8_t *payload, size_t len)
{
    int st;
    int rc = bs_put_batch(bc, &payload, len, 1, &st);

    return rc < 0 ? rc : st;
}

/* Reads one reserve's reply: 1 with a job in k->msgs[*got] (payload in
 * the arena at *arena_off), 0 for TIMED_OUT, < 0 for an error. */
static int bs_reserve_reply(bs_conn *k, size_t *got, size_t *arena_off)
{
    char line[BS_LINE_MAX];
    unsigned long long id, len;
    bench_msg *m;

    if (bs_line(k, line, sizeof(line)) != 0)
        return BENCH_EFAIL;
    if (strcmp(line, "TIMED_OUT") == 0)
        return 0;
    if (sscanf(line, "RESERVED %llu %llu", &id, &len) != 2)
        return bench_fail(&k->base, BENCH_EFAIL, "reserve: %s", line);
    if (len > BS_JOB_MAX)
        return bench_fail(&k->base, BENCH_EFAIL, "reserve: job too big");
    if (*arena_off + len + 2 > k->arena_cap) {
        /* Payloads are referred to by offset until the pull ends, so the
         * arena may move. */
        size_t cap = (*arena_off + len + 2) * 2;
        uint8_t *p = realloc(k->arena, cap);
        if (p == NULL)
            return bench_fail(&k->base, BENCH_EFAIL, "out of memory");
        k->arena = p;
        k->arena_cap = cap;
    }
    if (bs_read(k, k->arena + *arena_off, len + 2) != 0)
        return BENCH_EFAIL;
    m = &k->msgs[*got];
    *m = (bench_msg){0};
    m->id = id;
    m->payload_len = len;
    /* The arena may still move: keep the payload's offset in lease_id
     * (unused by beanstalkd) until bs_pull points payload at it. */
    m->lease_id = *arena_off;
    *arena_off += len + 2;
    (*got)++;
    return 1;
}

static int bs_pull(bench_conn *bc, uint32_t max, bench_msg **msgs, size_t *n)
{
    bs_conn *k = (bs_conn *)bc;
    size_t got = 0, arena_off = 0;
    unsigned wait_s = (k->cfg->wait_ms + 999) / 1000;

    if (max > k->cfg->batch)
        return BENCH_ETOO_MANY;
    for (uint32_t i = 0; i < max; i++)
        if (bs_appendf(k, "reserve-with-timeout 0\r\n") != 0)
            return BENCH_EFAIL;
    if (bs_flush(k) != 0)
        return BENCH_EFAIL;
    for (uint32_t i = 0; i < max; i++)
        if (bs_reserve_reply(k, &got, &arena_off) < 0)
            return BENCH_EFAIL;
    if (got == 0 && wait_s > 0) {
        if (bs_appendf(k, "reserve-with-timeout %u\r\n", wait_s) != 0 ||
            bs_flush(k) != 0 || bs_reserve_reply(k, &got, &arena_off) < 0)
            return BENCH_EFAIL;
    }
    for (size_t i = 0; i < got; i++) {
        k->msgs[i].payload = k->arena + k->msgs[i].lease_id;
        k->msgs[i].lease_id = 0;
    }
    *msgs = k->msgs;
    *n = got;
    return 0;
}

static int bs_ack_batch(bench_conn *bc, bench_msg *msgs, size_t n, int *status)
{
    bs_conn *k = (bs_conn *)bc;
    char line[BS_LINE_MAX];
    int failed = 0;

    for (size_t i = 0; i < n; i++)
        if (bs_appendf(k, "delete %llu\r\n", (unsigned long long)msgs[i].id))
            return BENCH_EFAIL;
    if (bs_flush(k) != 0)
        return BENCH_EFAIL;
    for (size_t i = 0; i < n; i++) {
        if (bs_line(k, line, sizeof(line)) != 0)
            return BENCH_EFAIL;
        status[i] = strcmp(line, "DELETED") == 0 ? 0 : BENCH_EFAIL;
        if (status[i] != 0) {
            bench_fail(&k->base, 0, "delete: %s", line);
            failed++;
        }
    }
    return failed;
}

static int bs_ack(bench_conn *bc, bench_msg *m)
{
    int st;
    int rc = bs_ack_batch(bc, m, 1, &st);

    return rc < 0 ? rc : st;
}

const bench_adapter bench_beanstalkd = {
    .name = "beanstalkd",
    .default_addr = "127.0.0.1:11300",
    .setup = NULL,
    .teardown = NULL,
    .connect = bs_connect,
    .close = bs_close,
    .put = bs_put,
    .put_batch = bs_put_batch,
    .pull = bs_pull,
    .ack = bs_ack,
    .ack_batch = bs_ack_batch,
};
