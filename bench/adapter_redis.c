/* adapter_redis: Redis Streams with a consumer group, through hiredis.
 *
 *   setup    XGROUP CREATE KEY bench 0 MKSTREAM
 *   put      XADD KEY * p PAYLOAD; a batch is n XADDs pipelined
 *            (redisAppendCommand, then n redisGetReply)
 *   pull     XREADGROUP GROUP bench CONSUMER COUNT n BLOCK WAIT_MS
 *            STREAMS KEY >
 *   ack      XACK KEY bench ID...; a batch is one XACK with n ids
 *   teardown DEL KEY
 *
 * XACK removes the entry from the group's pending list; the entry stays
 * in the stream until the teardown (Redis' idiom; XDEL would cost another
 * command per task). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "adapter.h"

#define REDIS_GROUP "bench"

typedef struct redis_conn {
    bench_conn base;
    const bench_cfg *cfg;
    redisContext *rc;
    char consumer[64];
    redisReply *pulled; /* the last XREADGROUP reply */
    bench_msg *msgs;    /* cfg->batch */
    const char **argv;  /* XACK: 3 + cfg->batch */
    size_t *argvlen;
} redis_conn;

static redisContext *redis_dial(const bench_cfg *cfg, char *err, size_t err_len)
{
    struct timeval tv = {5, 0};
    /* A reply can take XREADGROUP's BLOCK, plus slack. */
    struct timeval rtv = {10 + (time_t)(cfg->wait_ms / 1000), 0};
    char host[64];
    int port;
    redisContext *rc;

    if (!bench_split_addr(cfg->addr, host, sizeof(host), &port)) {
        snprintf(err, err_len, "bad address %s", cfg->addr);
        return NULL;
    }
    rc = redisConnectWithTimeout(host, port, tv);
    if (rc == NULL || rc->err) {
        snprintf(err, err_len, "connect %s: %s", cfg->addr,
                 rc != NULL ? rc->errstr : "out of memory");
        redisFree(rc);
        return NULL;
    }
    redisSetTimeout(rc, rtv);
    return rc;
}

static int redis_setup(const bench_cfg *cfg, char *err, size_t err_len)
{
    redisContext *rc = redis_dial(cfg, err, err_len);
    redisReply *r;
    int ret = 0;

    if (rc == NULL)
        return BENCH_EFAIL;
    r = redisCommand(rc, "XGROUP CREATE %s %s 0 MKSTREAM", cfg->queue,
                     REDIS_GROUP);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        snprintf(err, err_len, "XGROUP CREATE: %s",
                 r != NULL ? r->str : rc->errstr);
        ret = BENCH_EFAIL;
    }
    freeReplyObject(r);
    redisFree(rc);
    return ret;
}

static void redis_teardown(const bench_cfg *cfg)
{
    char err[256];
    redisContext *rc = redis_dial(cfg, err, sizeof(err));

    if (rc == NULL)
        return;
    freeReplyObject(redisCommand(rc, "DEL %s", cfg->queue));
    redisFree(rc);
}

static void redis_close(bench_conn *bc)
{
    redis_conn *k = (redis_conn *)bc;

    if (k == NULL)
        return;
    freeReplyObject(k->pulled);
    redisFree(k->rc);
    free(k->msgs);
    free(k->argv);
    free(k->argvlen);
    free(k);
}

static int redis_connect(const bench_cfg *cfg, const char *role, uint32_t index,
                         bench_conn **out, char *err, size_t err_len)
{
    redis_conn *k = calloc(1, sizeof(*k));

    if (k == NULL)
        return BENCH_EFAIL;
    k->base.ad = &bench_redis;
    k->cfg = cfg;
    snprintf(k->consumer, sizeof(k->consumer), "%s-%u", role, index);
    k->msgs = calloc(cfg->batch, sizeof(*k->msgs));
    k->argv = calloc(3 + (size_t)cfg->batch, sizeof(*k->argv));
    k->argvlen = calloc(3 + (size_t)cfg->batch, sizeof(*k->argvlen));
    if (k->msgs == NULL || k->argv == NULL || k->argvlen == NULL) {
        snprintf(err, err_len, "out of memory");
        redis_close(&k->base);
        return BENCH_EFAIL;
    }
    k->rc = redis_dial(cfg, err, err_len);
    if (k->rc == NULL) {
        redis_close(&k->base);
        return BENCH_EFAIL;
    }
    *out = &k->base;
    return 0;
}

/* A reply of the wrong shape, or an error reply, as a task status. */
static int redis_status(redis_conn *k, const char *what, const redisReply *r,
                        int want_type)
{
    if (r->type == want_type)
        return 0;
    bench_fail(&k->base, 0, "%s: %s", what,
               r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    /* OOM under maxmemory: refused, nothing was added. */
    return r->type == REDIS_REPLY_ERROR && strncmp(r->str, "OOM", 3) == 0
               ? BENCH_EREFUSED
               : BENCH_EFAIL;
}

static int redis_put_batch(bench_conn *bc, const uint8_t *const *payloads,
                           size_t len, size_t n, int *status)
{
    redis_conn *k = (redis_conn *)bc;
    int failed = 0;

    for (size_t i = 0; i < n; i++)
        if (redisAppendCommand(k->rc, "XADD %s * p %b", k->cfg->queue,
                               payloads[i], len) != REDIS_OK)
            return bench_fail(bc, BENCH_EFAIL, "XADD: %s", k->rc->errstr);
    for (size_t i = 0; i < n; i++) {
        redisReply *r;

        if (redisGetReply(k->rc, (void **)&r) != REDIS_OK)
            return bench_fail(bc, BENCH_EFAIL, "XADD: %s", k->rc->errstr);
        status[i] = redis_status(k, "XADD", r, REDIS_REPLY_STRING);
        if (status[i] != 0)
            failed++;
        freeReplyObject(r);
    }
    return failed;
}

static int redis_put(bench_conn *bc, const uint8_t *payload, size_t len)
{
    redis_conn *k = (redis_conn *)bc;
    redisReply *r =
        redisCommand(k->rc, "XADD %s * p %b", k->cfg->queue, payload, len);
    int st;

    if (r == NULL)
        return bench_fail(bc, BENCH_EFAIL, "XADD: %s", k->rc->errstr);
    st = redis_status(k, "XADD", r, REDIS_REPLY_STRING);
    freeReplyObject(r);
    return st;
}

static int redis_pull(bench_conn *bc, uint32_t max, bench_msg **msgs, size_t *n)
{
    redis_conn *k = (redis_conn *)bc;
    const redisReply *entries;
    redisReply *r;
    size_t got = 0;

    freeReplyObject(k->pulled);
    k->pulled = NULL;
    if (max > k->cfg->batch)
        return BENCH_ETOO_MANY;
    /* BLOCK 0 would wait forever: a 0 ms wait is 1 ms. */
    r = redisCommand(k->rc,
                     "XREADGROUP GROUP %s %s COUNT %u BLOCK %u STREAMS %s >",
                     REDIS_GROUP, k->consumer, max,
                     k->cfg->wait_ms > 0 ? k->cfg->wait_ms : 1, k->cfg->queue);
    if (r == NULL)
        return bench_fail(bc, BENCH_EFAIL, "XREADGROUP: %s", k->rc->errstr);
    k->pulled = r;
    if (r->type == REDIS_REPLY_NIL) {
        *msgs = k->msgs;
        *n = 0;
        return 0;
    }
    /* [[KEY, [[ID, [FIELD, VALUE]], ...]]] */
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 ||
        r->element[0]->type != REDIS_REPLY_ARRAY ||
        r->element[0]->elements != 2 ||
        r->element[0]->element[1]->type != REDIS_REPLY_ARRAY)
        return redis_status(k, "XREADGROUP", r, -1); /* never that type */
    entries = r->element[0]->element[1];
    if (entries->elements > max)
        return bench_fail(bc, BENCH_EFAIL, "XREADGROUP: more than COUNT");
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        const redisReply *fields;

        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[0]->type != REDIS_REPLY_STRING ||
            e->element[1]->type != REDIS_REPLY_ARRAY ||
            e->element[1]->elements != 2)
            return bench_fail(bc, BENCH_EFAIL, "XREADGROUP: bad entry");
        fields = e->element[1];
        k->msgs[got] = (bench_msg){0};
        k->msgs[got].ref = e->element[0]->str;
        k->msgs[got].payload = (const uint8_t *)fields->element[1]->str;
        k->msgs[got].payload_len = fields->element[1]->len;
        got++;
    }
    *msgs = k->msgs;
    *n = got;
    return 0;
}

static int redis_ack_batch(bench_conn *bc, bench_msg *msgs, size_t n,
                           int *status)
{
    redis_conn *k = (redis_conn *)bc;
    redisReply *r;
    int st;

    if (n > k->cfg->batch)
        return BENCH_ETOO_MANY;
    k->argv[0] = "XACK";
    k->argv[1] = k->cfg->queue;
    k->argv[2] = REDIS_GROUP;
    for (size_t i = 0; i < n; i++)
        k->argv[3 + i] = msgs[i].ref;
    for (size_t i = 0; i < 3 + n; i++)
        k->argvlen[i] = strlen(k->argv[i]);
    r = redisCommandArgv(k->rc, (int)(3 + n), k->argv, k->argvlen);
    if (r == NULL)
        return bench_fail(bc, BENCH_EFAIL, "XACK: %s", k->rc->errstr);
    st = redis_status(k, "XACK", r, REDIS_REPLY_INTEGER);
    if (st == 0 && r->integer != (long long)n) {
        /* XACK counts what it removed but not which: every id of the
         * request counts as failed. */
        bench_fail(bc, 0, "XACK: %lld of %zu acknowledged", r->integer, n);
        st = BENCH_EFAIL;
    }
    freeReplyObject(r);
    if (st != 0)
        return BENCH_EFAIL;
    for (size_t i = 0; i < n; i++)
        status[i] = 0;
    return 0;
}

static int redis_ack(bench_conn *bc, bench_msg *m)
{
    int st;
    int rc = redis_ack_batch(bc, m, 1, &st);

    return rc < 0 ? rc : st;
}

const bench_adapter bench_redis = {
    .name = "redis",
    .default_addr = "127.0.0.1:6379",
    .setup = redis_setup,
    .teardown = redis_teardown,
    .connect = redis_connect,
    .close = redis_close,
    .put = redis_put,
    .put_batch = redis_put_batch,
    .pull = redis_pull,
    .ack = redis_ack,
    .ack_batch = redis_ack_batch,
};
