/* adapter_clawq: clawq through libclawq's blocking calls - one put_batch,
 * pull or ack_batch request per batch. (clawq-bench's pipelined ticket
 * mode uses the handle directly: bench_clawq_client.) */
#include <stdio.h>
#include <stdlib.h>

#include "adapter.h"
#include "clawq.h"

typedef struct clawq_conn {
    bench_conn base;
    clawq_client *c;
    const bench_cfg *cfg;
    clawq_put_task *tasks; /* cfg->batch */
    clawq_put_result *res; /* cfg->batch */
    clawq_lease_ref *refs; /* cfg->batch */
    clawq_task *pulled;    /* the last pull's block */
    bench_msg *msgs;       /* cfg->batch */
} clawq_conn;

static bool is_refusal(int rc)
{
    return rc == CLAWQ_EQUEUE_FULL || rc == CLAWQ_ENOT_LEADER ||
           rc == CLAWQ_ESHUTTING_DOWN;
}

/* Translates a libclawq error for the workload code. */
static int cq_fail(clawq_conn *k, const char *what, int rc)
{
    if (is_refusal(rc)) {
        k->base.retry_after_ms = clawq_retry_after_ms(k->c);
        bench_fail(&k->base, 0, "%s: %s", what, clawq_err_name(rc));
        return BENCH_EREFUSED;
    }
    return bench_fail(&k->base, BENCH_EFAIL, "%s: %s (%s)", what,
                      clawq_err_name(rc), clawq_errmsg(k->c));
}

static void clawq_conn_close(bench_conn *bc)
{
    clawq_conn *k = (clawq_conn *)bc;

    if (k == NULL)
        return;
    clawq_tasks_free(k->pulled);
    clawq_close(k->c);
    free(k->tasks);
    free(k->res);
    free(k->refs);
    free(k->msgs);
    free(k);
}

static int clawq_conn_connect(const bench_cfg *cfg, const char *role,
                              uint32_t index, bench_conn **out, char *err,
                              size_t err_len)
{
    clawq_conn *k = calloc(1, sizeof(*k));
    clawq_options co;
    char name[64];
    int rc;

    if (k == NULL)
        return BENCH_EFAIL;
    k->base.ad = &bench_clawq;
    k->cfg = cfg;
    k->tasks = calloc(cfg->batch, sizeof(*k->tasks));
    k->res = calloc(cfg->batch, sizeof(*k->res));
    k->refs = calloc(cfg->batch, sizeof(*k->refs));
    k->msgs = calloc(cfg->batch, sizeof(*k->msgs));
    if (k->tasks == NULL || k->res == NULL || k->refs == NULL ||
        k->msgs == NULL) {
        clawq_conn_close(&k->base);
        return BENCH_EFAIL;
    }
    for (uint32_t i = 0; i < cfg->batch; i++)
        clawq_put_task_init(&k->tasks[i]);
    snprintf(name, sizeof(name), "clawq-bench-%s-%u", role, index);
    clawq_options_init(&co);
    co.client_name = name;
    co.connect_timeout_ms = 5000;
    co.request_timeout_ms = 10000;
    /* Room for the pulls or puts and the acks behind them. */
    co.pipeline_window = 2 * cfg->inflight + 2;
    rc = clawq_connect2(cfg->addr, &co, &k->c, err, err_len);
    if (rc < 0) {
        clawq_conn_close(&k->base);
        return BENCH_EFAIL;
    }
    *out = &k->base;
    return 0;
}

static int clawq_conn_put(bench_conn *bc, const uint8_t *payload, size_t len)
{
    clawq_conn *k = (clawq_conn *)bc;
    clawq_put_task t = CLAWQ_PUT_TASK_INIT;
    uint64_t id;
    int rc;

    t.payload = payload;
    t.payload_len = len;
    rc = clawq_put(k->c, k->cfg->queue, &t, &id, NULL);
    return rc < 0 ? cq_fail(k, "put", rc) : 0;
}

static int clawq_conn_put_batch(bench_conn *bc, const uint8_t *const *payloads,
                                size_t len, size_t n, int *status)
{
    clawq_conn *k = (clawq_conn *)bc;
    int rc, failed = 0;

    if (n > k->cfg->batch)
        return BENCH_ETOO_MANY;
    for (size_t i = 0; i < n; i++) {
        k->tasks[i].payload = payloads[i];
        k->tasks[i].payload_len = len;
    }
    rc = clawq_put_batch(k->c, k->cfg->queue, k->tasks, n, k->res);
    if (rc < 0)
        return cq_fail(k, "put", rc);
    for (size_t i = 0; i < n; i++) {
        int st = k->res[i].status;

        status[i] = st == 0 ? 0 : is_refusal(st) ? BENCH_EREFUSED : BENCH_EFAIL;
        if (st != 0) {
            failed++;
            cq_fail(k, "put task", st);
        }
    }
    return failed;
}

static int clawq_conn_pull(bench_conn *bc, uint32_t max, bench_msg **msgs,
                           size_t *n)
{
    clawq_conn *k = (clawq_conn *)bc;
    size_t got = 0;
    int rc;

    clawq_tasks_free(k->pulled);
    k->pulled = NULL;
    if (max > k->cfg->batch)
        return BENCH_ETOO_MANY;
    rc = clawq_pull(k->c, k->cfg->queue, max, k->cfg->wait_ms, k->cfg->lease_ms,
                    &k->pulled, &got);
    if (rc < 0)
        return cq_fail(k, "pull", rc);
    for (size_t i = 0; i < got; i++) {
        k->msgs[i] = (bench_msg){0};
        k->msgs[i].payload = k->pulled[i].payload;
        k->msgs[i].payload_len = k->pulled[i].payload_len;
        k->msgs[i].id = k->pulled[i].id;
        k->msgs[i].lease_id = k->pulled[i].lease_id;
    }
    *msgs = k->msgs;
    *n = got;
    return 0;
}

static int clawq_conn_ack(bench_conn *bc, bench_msg *m)
{
    clawq_conn *k = (clawq_conn *)bc;
    int rc = clawq_ack(k->c, m->id, m->lease_id);

    return rc < 0 ? cq_fail(k, "ack", rc) : 0;
}

static int clawq_conn_ack_batch(bench_conn *bc, bench_msg *msgs, size_t n,
                                int *status)
{
    clawq_conn *k = (clawq_conn *)bc;
    int rc, failed = 0;

    if (n > k->cfg->batch)
        return BENCH_ETOO_MANY;
    for (size_t i = 0; i < n; i++) {
        k->refs[i].id = msgs[i].id;
        k->refs[i].lease_id = msgs[i].lease_id;
    }
    rc = clawq_ack_batch(k->c, k->refs, n, status);
    if (rc < 0)
        return cq_fail(k, "ack", rc);
    for (size_t i = 0; i < n; i++) {
        if (status[i] != 0) {
            cq_fail(k, "ack task", status[i]);
            status[i] = BENCH_EFAIL;
            failed++;
        }
    }
    return failed;
}

struct clawq_client *bench_clawq_client(bench_conn *bc)
{
    return ((clawq_conn *)bc)->c;
}

const bench_adapter bench_clawq = {
    .name = "clawq",
    .default_addr = "127.0.0.1:7700",
    .setup = NULL,
    .teardown = NULL,
    .connect = clawq_conn_connect,
    .close = clawq_conn_close,
    .put = clawq_conn_put,
    .put_batch = clawq_conn_put_batch,
    .pull = clawq_conn_pull,
    .ack = clawq_conn_ack,
    .ack_batch = clawq_conn_ack_batch,
};
