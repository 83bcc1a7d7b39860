/* test_fsm.c: the rules of the state machine (docs/STATE-MACHINE.md), one
 * behaviour per test case. Time comes only from each command's now_ms. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm.h"
#include "helpers.h"

#define T0 1000000ULL /* the first command's clock */

static char *g_dir;
static store *g_store;
static uint64_t g_index;
static fsm_result g_res; /* what the last apply produced */
static fsm_result g_rd;  /* what the last read produced */

static void setup(void)
{
    g_dir = th_tmpdir();
    g_store = th_store_open(g_dir, true);
    g_index = 0;
    fsm_result_init(&g_res);
    fsm_result_init(&g_rd);
}

static void teardown(void)
{
    fsm_result_fini(&g_rd);
    fsm_result_fini(&g_res);
    store_close(g_store);
    th_rmdir(g_dir);
}

/* Op builders for the fields helpers.h leaves at zero. */

static cmd_op put_op(const char *queue, const char *payload, uint8_t priority,
                     uint64_t run_at_ms, uint64_t deadline_ms,
                     uint32_t max_attempts, const char *idem_key)
{
    cmd_op op = th_put(queue, payload, priority);
    op.u.put.run_at_ms = run_at_ms;
    op.u.put.deadline_ms = deadline_ms;
    op.u.put.max_attempts = max_attempts;
    if (idem_key != NULL)
        op.u.put.idem_key = cq_bytes_str(idem_key);
    return op;
}

static cmd_op extend_op(uint64_t id, uint64_t lease_id, uint32_t lease_ms,
                        const char *checkpoint, bool has_progress,
                        uint64_t progress)
{
    cmd_op op;
    memset(&op, 0, sizeof(op));
    op.type = CMD_EXTEND;
    op.u.extend.id = id;
    op.u.extend.lease_id = lease_id;
    op.u.extend.lease_ms = lease_ms;
    op.u.extend.has_progress = has_progress;
    op.u.extend.progress = progress;
    if (checkpoint != NULL) {
        op.u.extend.has_checkpoint = true;
        op.u.extend.checkpoint = cq_bytes_str(checkpoint);
    }
    return op;
}

static cmd_op dlq_op(int type, const char *queue, const char *error_substr,
                     uint64_t from_ms, uint64_t to_ms, uint32_t max)
{
    cmd_op op;
    memset(&op, 0, sizeof(op));
    op.type = (uint8_t)type;
    op.u.dlq.queue = cq_bytes_str(queue);
    if (error_substr != NULL)
        op.u.dlq.error_substr = cq_bytes_str(error_substr);
    op.u.dlq.from_ms = from_ms;
    op.u.dlq.to_ms = to_ms;
    op.u.dlq.max = max;
    return op;
}

static cmd_op qset_op(const char *queue, uint32_t fields,
                      const queue_settings *qs)
{
    cmd_op op;
    memset(&op, 0, sizeof(op));
    op.type = CMD_QUEUE_SET;
    op.u.queue_set.queue = cq_bytes_str(queue);
    op.u.queue_set.fields = fields;
    op.u.queue_set.settings = *qs;
    return op;
}

static cmd_op tick_max(uint32_t max)
{
    cmd_op op = th_tick();
    op.u.tick.max = max;
    return op;
}

/* When set, every apply1 is applied to this store too, with its memo
 * cleared first (so that it reads everything back from LMDB), and must
 * answer the same. */
static store *g_shadow;
static uint64_t g_shadow_index;

/* Applies one op at `now` and returns its status. */
static int apply1(uint64_t now, cmd_op op)
{
    int rc = th_apply(g_store, &g_index, now, &op, 1, &g_res);

    if (g_shadow != NULL) {
        fsm_result r;

        fsm_result_init(&r);
        memset(store_memo(g_shadow), 0, STORE_MEMO_WORDS * sizeof(uint64_t));
        ck_assert_int_eq(th_apply(g_shadow, &g_shadow_index, now, &op, 1, &r),
                         rc);
        ck_assert_uint_eq(r.n_tasks, g_res.n_tasks);
        ck_assert_uint_eq(r.ops[0].id, g_res.ops[0].id);
        fsm_result_fini(&r);
    }
    return rc;
}

/* Puts one task that must be accepted and returns its id. */
static uint64_t put_ok(uint64_t now, cmd_op op)
{
    ck_assert_int_eq(apply1(now, op), 0);
    ck_assert(!g_res.ops[0].duplicate);
    ck_assert_uint_ne(g_res.ops[0].id, 0);
    return g_res.ops[0].id;
}

/* Leases up to max from queue; returns how many, with ids / lease ids. */
static size_t lease_n(uint64_t now, const char *queue, uint32_t max,
                      uint32_t lease_ms, uint64_t *ids, uint64_t *lease_ids)
{
    const fsm_op_result *r;
    size_t i;

    ck_assert_int_eq(apply1(now, th_lease(queue, max, lease_ms)), 0);
    r = &g_res.ops[0];
    ck_assert_uint_le(r->n_tasks, max);
    for (i = 0; i < r->n_tasks; i++) {
        const fsm_task *t = &g_res.tasks[r->first_task + i];
        ck_assert_int_eq(t->state, TASK_LEASED);
        ck_assert_uint_eq(t->lease_expires_ms, now + lease_ms);
        if (ids != NULL)
            ids[i] = t->id;
        if (lease_ids != NULL)
            lease_ids[i] = t->lease_id;
    }
    return r->n_tasks;
}

/* Leases exactly one task (asserting so); returns its lease id. */
static uint64_t lease_one(uint64_t now, const char *queue, uint32_t lease_ms,
                          uint64_t want_id)
{
    uint64_t id = 0, lid = 0;

    ck_assert_uint_eq(lease_n(now, queue, 1, lease_ms, &id, &lid), 1);
    ck_assert_uint_eq(id, want_id);
    ck_assert_uint_ne(lid, 0);
    return lid;
}

static const fsm_task *task_get(uint64_t id)
{
    ck_assert_int_eq(fsm_task_get(g_store, id, &g_rd), 0);
    ck_assert_uint_ge(g_rd.n_tasks, 1);
    ck_assert_uint_eq(g_rd.tasks[0].id, id);
    return &g_rd.tasks[0];
}

static queue_rec stats(const char *queue)
{
    fsm_queue_stats st;

    memset(&st, 0, sizeof(st));
    ck_assert_int_eq(fsm_queue_stats_get(g_store, cq_bytes_str(queue), &st), 0);
    ck_assert_str_eq(st.name, queue);
    return st.rec;
}

#define ASSERT_BYTES_STR(b, s)                                                 \
    do {                                                                       \
        cq_bytes b_ = (b);                                                     \
        const char *s_ = (s);                                                  \
        ck_assert_uint_eq(b_.len, strlen(s_));                                 \
        if (b_.len > 0)                                                        \
            ck_assert_mem_eq(b_.ptr, s_, b_.len);                              \
    } while (0)

#define ASSERT_COUNTS(rec, r, d, l, x)                                         \
    do {                                                                       \
        ck_assert_uint_eq((rec).counters.ready, (r));                          \
        ck_assert_uint_eq((rec).counters.delayed, (d));                        \
        ck_assert_uint_eq((rec).counters.leased, (l));                         \
        ck_assert_uint_eq((rec).counters.dead, (x));                           \
    } while (0)

/* Creates `queue` by putting a seed task (priority 200) and sets the given
 * settings in the same command, so the test does not depend on whether
 * queue_set creates queues. Returns the seed's id. */
static uint64_t create_with(uint64_t now, const char *queue, uint32_t fields,
                            const queue_settings *qs)
{
    cmd_op ops[2];

    ops[0] = th_put(queue, "seed", 200);
    ops[1] = qset_op(queue, fields, qs);
    ck_assert_int_eq(th_apply(g_store, &g_index, now, ops, 2, &g_res), 0);
    ck_assert_int_eq(g_res.ops[1].status, 0);
    return g_res.ops[0].id;
}

/* ---- lease order ---- */

START_TEST(test_priority_then_fifo)
{
    uint64_t a, b, c, d, e, ids[8], lids[8];
    size_t i;

    a = put_ok(T0, th_put("q", "a", 5));
    b = put_ok(T0 + 1, th_put("q", "b", 1));
    c = put_ok(T0 + 2, th_put("q", "c", 5));
    d = put_ok(T0 + 3, th_put("q", "d", 1));
    e = put_ok(T0 + 4, th_put("q", "e", 0));
    ck_assert_uint_lt(a, b); /* ids only grow */
    ck_assert_uint_lt(d, e);

    ck_assert_uint_eq(lease_n(T0 + 10, "q", 8, 1000, ids, lids), 5);
    ck_assert_uint_eq(ids[0], e);
    ck_assert_uint_eq(ids[1], b);
    ck_assert_uint_eq(ids[2], d);
    ck_assert_uint_eq(ids[3], a);
    ck_assert_uint_eq(ids[4], c);
    for (i = 1; i < 5; i++)
        ck_assert_uint_gt(lids[i], lids[i - 1]);
    /* The payloads come along with the lease. */
    ASSERT_BYTES_STR(g_res.tasks[g_res.ops[0].first_task].payload, "e");
    ASSERT_BYTES_STR(g_res.tasks[g_res.ops[0].first_task + 4].payload, "c");

    /* Nothing left; an unknown queue leases nothing, status OK. */
    ck_assert_uint_eq(lease_n(T0 + 11, "q", 8, 1000, NULL, NULL), 0);
    ck_assert_uint_eq(lease_n(T0 + 11, "nosuch", 8, 1000, NULL, NULL), 0);
}
END_TEST

START_TEST(test_fifo_holds_for_retried_tasks)
{
    uint64_t a, b, c, ids[4], lid;

    a = put_ok(T0, put_op("q", "a", 1, 0, 0, 10, NULL));
    b = put_ok(T0, put_op("q", "b", 1, 0, 0, 10, NULL));
    c = put_ok(T0, put_op("q", "c", 1, 0, 0, 10, NULL));

    lid = lease_one(T0 + 1, "q", 1000, a);
    /* A nack with delay 0 puts a behind the tasks already ready. */
    ck_assert_int_eq(apply1(T0 + 2, th_nack(a, lid, 0, "again")), 0);
    ck_assert_uint_eq(lease_n(T0 + 3, "q", 4, 1000, ids, NULL), 3);
    ck_assert_uint_eq(ids[0], b);
    ck_assert_uint_eq(ids[1], c);
    ck_assert_uint_eq(ids[2], a);
}
END_TEST

START_TEST(test_put_fields_round_trip)
{
    static const uint8_t headers[] = {0x92, 0xa1, 'k', 0xa2, 'v', '1'};
    static const uint8_t odd[] = {0x91, 0xa1, 'k'};
    const fsm_task *t;
    cmd_op op;
    uint64_t id;

    op = put_op("q", "payload", 42, 0, T0 + 99999, 0, "key-1");
    op.u.put.headers = cq_bytes_of(headers, sizeof(headers));
    id = put_ok(T0, op);
    op.u.put.headers = cq_bytes_of(odd, sizeof(odd));
    op.u.put.idem_key = cq_bytes_str("key-2");
    ck_assert_int_eq(apply1(T0, op), CLAWQ_EINVALID);

    ck_assert_uint_eq(lease_n(T0 + 5, "q", 1, 1000, NULL, NULL), 1);
    t = &g_res.tasks[g_res.ops[0].first_task];
    ck_assert_uint_eq(t->id, id);
    ck_assert_uint_eq(t->priority, 42);
    ck_assert_uint_eq(t->created_ms, T0);
    ck_assert_uint_eq(t->deadline_ms, T0 + 99999);
    ck_assert_uint_eq(t->max_attempts, stats("q").settings.max_attempts);
    ASSERT_BYTES_STR(t->queue, "q");
    ASSERT_BYTES_STR(t->payload, "payload");
    ASSERT_BYTES_STR(t->idem_key, "key-1");
    ASSERT_BYTES_STR(t->worker, "worker-1");
    ck_assert_uint_eq(t->headers.len, sizeof(headers));
    ck_assert_mem_eq(t->headers.ptr, headers, sizeof(headers));
    ck_assert_uint_eq(t->n_errors, 0);
    ck_assert_uint_eq(t->last_error.len, 0);
    ck_assert_uint_eq(stats("q").counters.put_total, 1);
}
END_TEST

/* ---- delayed tasks ---- */

START_TEST(test_delayed_promotion)
{
    uint64_t id, other, lid;
    const fsm_task *t;
    queue_rec q;

    id = put_ok(T0, put_op("q", "later", 1, T0 + 1000, 0, 0, NULL));
    /* run_at <= now is ready at once. */
    other = put_ok(T0, put_op("q", "now", 1, T0, 0, 0, NULL));

    t = task_get(id);
    ck_assert_int_eq(t->state, TASK_DELAYED);
    ck_assert_uint_eq(t->run_at_ms, T0 + 1000);
    ck_assert_int_eq(task_get(other)->state, TASK_READY);
    q = stats("q");
    ASSERT_COUNTS(q, 1, 1, 0, 0);

    ck_assert_uint_eq(lease_n(T0 + 1, "q", 8, 1000, NULL, NULL), 1);
    ck_assert_int_eq(apply1(T0 + 999, th_tick()), 0);
    ck_assert_int_eq(task_get(id)->state, TASK_DELAYED);
    ck_assert_uint_eq(lease_n(T0 + 999, "q", 8, 1000, NULL, NULL), 0);

    ck_assert_int_eq(apply1(T0 + 1000, th_tick()), 0);
    ck_assert_uint_eq(g_res.ops[0].value, 1);
    ck_assert(!g_res.ops[0].more);
    t = task_get(id);
    ck_assert_int_eq(t->state, TASK_READY);
    ck_assert_uint_eq(t->attempt, 0);
    q = stats("q");
    ASSERT_COUNTS(q, 1, 0, 1, 0);

    lid = lease_one(T0 + 1000, "q", 1000, id);
    ck_assert_uint_eq(task_get(id)->lease_id, lid);
    ck_assert_uint_eq(task_get(id)->attempt, 1);
}
END_TEST

START_TEST(test_tick_more)
{
    uint64_t now = T0 + 500;
    int i;

    for (i = 0; i < 5; i++)
        put_ok(T0, put_op("q", "x", 1, T0 + 100 + (uint64_t)i, 0, 0, NULL));

    ck_assert_int_eq(apply1(now, tick_max(2)), 0);
    ck_assert_uint_eq(g_res.ops[0].value, 2);
    ck_assert(g_res.ops[0].more);
    ck_assert_int_eq(apply1(now, tick_max(2)), 0);
    ck_assert_uint_eq(g_res.ops[0].value, 2);
    ck_assert(g_res.ops[0].more);
    ck_assert_int_eq(apply1(now, tick_max(2)), 0);
    ck_assert_uint_eq(g_res.ops[0].value, 1);
    ck_assert(!g_res.ops[0].more);
    ck_assert_uint_eq(stats("q").counters.ready, 5);
    ck_assert_uint_eq(stats("q").counters.delayed, 0);
}
END_TEST

/* ---- retries ---- */

START_TEST(test_backoff_formula)
{
    queue_settings qs;
    uint32_t a;

    queue_settings_default(&qs);
    qs.backoff_base_ms = 1000;
    qs.backoff_max_ms = 5000;
    for (a = 1; a <= 70; a++) {
        uint64_t id = 7 + a, lid = 1000 + 3 * a;
        uint64_t d = a >= 4 ? 5000 : 1000ULL << (a - 1);
        uint64_t want = d / 2 + cq_mix64(id ^ (lid << 1)) % (d / 2 + 1);
        uint64_t got = fsm_backoff_ms(&qs, a, id, lid);

        ck_assert_uint_eq(got, want);
        ck_assert_uint_ge(got, d / 2);
        ck_assert_uint_le(got, d);
        ck_assert_uint_eq(fsm_backoff_ms(&qs, a, id, lid), got);
    }
}
END_TEST

START_TEST(test_lease_expiry_retries_then_dead)
{
    queue_settings set, qs;
    uint64_t id, now = T0, prev_lid = 0;
    uint32_t a;
    queue_rec q;

    queue_settings_default(&set);
    set.backoff_base_ms = 1000;
    set.backoff_max_ms = 60000;
    create_with(now, "q", QSET_BACKOFF_BASE_MS | QSET_BACKOFF_MAX_MS, &set);
    qs = stats("q").settings;
    ck_assert_uint_eq(qs.backoff_base_ms, 1000);
    ck_assert_uint_eq(qs.backoff_max_ms, 60000);
    /* Leave only the task under test in the queue. */
    ck_assert_uint_eq(lease_n(now, "q", 1, 1000000, NULL, NULL), 1);

    id = put_ok(now, put_op("q", "job", 1, 0, 0, 3, NULL));
    ck_assert_uint_eq(task_get(id)->max_attempts, 3);

    for (a = 1; a <= 3; a++) {
        const fsm_task *t;
        uint64_t lid = lease_one(now, "q", 100, id);
        uint64_t delay;

        ck_assert_uint_gt(lid, prev_lid);
        prev_lid = lid;
        t = task_get(id);
        ck_assert_int_eq(t->state, TASK_LEASED);
        ck_assert_uint_eq(t->attempt, a);
        ck_assert_uint_eq(t->lease_expires_ms, now + 100);

        ck_assert_int_eq(apply1(now + 99, th_tick()), 0);
        ck_assert_int_eq(task_get(id)->state, TASK_LEASED);

        now += 100;
        ck_assert_int_eq(apply1(now, th_tick()), 0);
        q = stats("q");
        ck_assert_uint_eq(q.counters.expired_total, a);
        t = task_get(id);
        if (a == 3) {
            ck_assert_int_eq(t->state, TASK_DEAD);
            ck_assert_int_eq(t->dead_reason, DEAD_MAX_ATTEMPTS);
            ck_assert_uint_eq(t->dead_at_ms, now);
            ck_assert_uint_eq(t->attempt, 3);
            ASSERT_COUNTS(q, 0, 0, 1, 1);
            ck_assert_uint_eq(q.counters.dead_total, 1);
            break;
        }
        delay = fsm_backoff_ms(&qs, a, id, lid);
        ck_assert_uint_gt(delay, 0);
        ck_assert_int_eq(t->state, TASK_DELAYED);
        ck_assert_uint_eq(t->run_at_ms, now + delay);
        ck_assert_uint_eq(t->attempt, a);
        ASSERT_COUNTS(q, 0, 1, 1, 0);

        ck_assert_int_eq(apply1(now + delay - 1, th_tick()), 0);
        ck_assert_int_eq(task_get(id)->state, TASK_DELAYED);
        now += delay;
        ck_assert_int_eq(apply1(now, th_tick()), 0);
        ck_assert_int_eq(task_get(id)->state, TASK_READY);
    }
}
END_TEST

START_TEST(test_nack_delay)
{
    queue_settings qs;
    uint64_t id, lid, d;
    const fsm_task *t;
    queue_rec q;

    id = put_ok(T0, put_op("q", "job", 1, 0, 0, 10, NULL));
    qs = stats("q").settings;

    /* delay 0: ready at once, leasable in the same millisecond. */
    lid = lease_one(T0, "q", 1000, id);
    ck_assert_int_eq(apply1(T0 + 10, th_nack(id, lid, 0, "e1")), 0);
    ck_assert_uint_eq(g_res.ops[0].id, id);
    t = task_get(id);
    ck_assert_int_eq(t->state, TASK_READY);
    ck_assert_uint_eq(t->attempt, 1);
    q = stats("q");
    ASSERT_COUNTS(q, 1, 0, 0, 0);
    ck_assert_uint_eq(q.counters.nacked_total, 1);

    /* delay > 0: delayed until now + delay. */
    lid = lease_one(T0 + 10, "q", 1000, id);
    ck_assert_uint_eq(task_get(id)->attempt, 2);
    ck_assert_int_eq(apply1(T0 + 20, th_nack(id, lid, 500, "e2")), 0);
    t = task_get(id);
    ck_assert_int_eq(t->state, TASK_DELAYED);
    ck_assert_uint_eq(t->run_at_ms, T0 + 520);
    q = stats("q");
    ASSERT_COUNTS(q, 0, 1, 0, 0);
    ck_assert_uint_eq(lease_n(T0 + 20, "q", 1, 1000, NULL, NULL), 0);
    ck_assert_int_eq(apply1(T0 + 519, th_tick()), 0);
    ck_assert_int_eq(task_get(id)->state, TASK_DELAYED);
    ck_assert_int_eq(apply1(T0 + 520, th_tick()), 0);
    ck_assert_int_eq(task_get(id)->state, TASK_READY);

    /* delay < 0: the queue's backoff for this attempt and lease. */
    lid = lease_one(T0 + 600, "q", 1000, id);
    ck_assert_uint_eq(task_get(id)->attempt, 3);
    ck_assert_int_eq(apply1(T0 + 700, th_nack(id, lid, -1, "e3")), 0);
    d = fsm_backoff_ms(&qs, 3, id, lid);
    t = task_get(id);
    if (d == 0) {
        ck_assert_int_eq(t->state, TASK_READY);
    } else {
        ck_assert_int_eq(t->state, TASK_DELAYED);
        ck_assert_uint_eq(t->run_at_ms, T0 + 700 + d);
    }
    q = stats("q");
    ck_assert_uint_eq(q.counters.nacked_total, 3);
    ck_assert_uint_eq(q.counters.dead_total, 0);
}
END_TEST

START_TEST(test_nack_at_max_attempts_is_dead)
{
    uint64_t id, lid;
    const fsm_task *t;
    queue_rec q;

    id = put_ok(T0, put_op("q", "job", 1, 0, 0, 2, NULL));
    lid = lease_one(T0, "q", 1000, id);
    ck_assert_int_eq(apply1(T0 + 1, th_nack(id, lid, 0, "first")), 0);
    ck_assert_int_eq(task_get(id)->state, TASK_READY);
    lid = lease_one(T0 + 2, "q", 1000, id);
    ck_assert_int_eq(apply1(T0 + 3, th_nack(id, lid, 0, "second")), 0);
    t = task_get(id);
    ck_assert_int_eq(t->state, TASK_DEAD);
    ck_assert_int_eq(t->dead_reason, DEAD_MAX_ATTEMPTS);
    ck_assert_uint_eq(t->dead_at_ms, T0 + 3);
    ASSERT_BYTES_STR(t->last_error, "second");
    q = stats("q");
    ASSERT_COUNTS(q, 0, 0, 0, 1);
    ck_assert_uint_eq(q.counters.nacked_total, 2);
    ck_assert_uint_eq(q.counters.dead_total, 1);
    ck_assert_uint_eq(q.counters.failed_total, 0);
}
END_TEST

/* ---- deadlines ---- */

START_TEST(test_deadline_ready_and_delayed)
{
    uint64_t r, d, keep;
    const fsm_task *t;
    queue_rec q;

    r = put_ok(T0, put_op("q", "r", 1, 0, T0 + 5000, 0, NULL));
    d = put_ok(T0, put_op("q", "d", 1, T0 + 10000, T0 + 5000, 0, NULL));
    keep = put_ok(T0, put_op("q", "k", 1, 0, T0 + 5001, 0, NULL));
    ck_assert_uint_eq(task_get(r)->deadline_ms, T0 + 5000);

    ck_assert_int_eq(apply1(T0 + 4999, th_tick()), 0);
    ck_assert_int_eq(task_get(r)->state, TASK_READY);
    ck_assert_int_eq(task_get(d)->state, TASK_DELAYED);

    ck_assert_int_eq(apply1(T0 + 5000, th_tick()), 0);
    t = task_get(r);
    ck_assert_int_eq(t->state, TASK_DEAD);
    ck_assert_int_eq(t->dead_reason, DEAD_EXPIRED);
    ck_assert_uint_eq(t->dead_at_ms, T0 + 5000);
    t = task_get(d);
    ck_assert_int_eq(t->state, TASK_DEAD);
    ck_assert_int_eq(t->dead_reason, DEAD_EXPIRED);
    ck_assert_int_eq(task_get(keep)->state, TASK_READY);
    q = stats("q");
    ASSERT_COUNTS(q, 1, 0, 0, 2);
    ck_assert_uint_eq(q.counters.dead_total, 2);
    lease_one(T0 + 5000, "q", 1000, keep);
}
END_TEST

START_TEST(test_deadline_leased_loses_lease)
{
    uint64_t id, lid;
    const fsm_task *t;
    queue_rec q;

    id = put_ok(T0, put_op("q", "job", 1, 0, T0 + 5000, 0, NULL));
    lid = lease_one(T0, "q", 60000, id);
    ck_assert_int_eq(apply1(T0 + 5000, th_tick()), 0);
    t = task_get(id);
    ck_assert_int_eq(t->state, TASK_DEAD);
    ck_assert_int_eq(t->dead_reason, DEAD_EXPIRED);
    q = stats("q");
    ASSERT_COUNTS(q, 0, 0, 0, 1);

    ck_assert_int_eq(apply1(T0 + 5001, th_ack(id, lid)), CLAWQ_ELEASE_LOST);
    ck_assert_int_eq(
        apply1(T0 + 5001, extend_op(id, lid, 1000, NULL, false, 0)),
        CLAWQ_ELEASE_LOST);
    ck_assert_int_eq(apply1(T0 + 5001, th_fail(id, lid, "late")),
                     CLAWQ_ELEASE_LOST);
    t = task_get(id);
    ck_assert_int_eq(t->state, TASK_DEAD);
    ck_assert_int_eq(t->dead_reason, DEAD_EXPIRED);
    q = stats("q");
    ASSERT_COUNTS(q, 0, 0, 0, 1);
    ck_assert_uint_eq(q.counters.acked_total, 0);
    ck_assert_uint_eq(q.counters.failed_total, 0);
    ck_assert_uint_eq(q.counters.dead_total, 1);
    /* The old lease's expiry does not touch the dead task. */
    ck_assert_int_eq(apply1(T0 + 60000, th_tick()), 0);
    ck_assert_int_eq(task_get(id)->dead_reason, DEAD_EXPIRED);
    ck_assert_uint_eq(stats("q").counters.dead_total, 1);
}
END_TEST

/* ---- fail and errors ---- */

START_TEST(test_fail_keeps_error)
{
    uint64_t id, lid;
    const fsm_task *t;
    queue_rec q;

    id = put_ok(T0, put_op("q", "job", 1, 0, 0, 10, NULL));
    lid = lease_one(T0, "q", 1000, id);
    ck_assert_int_eq(apply1(T0 + 1, th_nack(id, lid, 0, "first error")), 0);
    lid = lease_one(T0 + 1, "q", 1000, id);
    ck_assert_int_eq(apply1(T0 + 2, th_fail(id, lid, "boom")), 0);
    ck_assert_uint_eq(g_res.ops[0].id, id);

    t = task_get(id);
    ck_assert_int_eq(t->state, TASK_DEAD);
    ck_assert_int_eq(t->dead_reason, DEAD_FAILED);
    ck_assert_uint_eq(t->dead_at_ms, T0 + 2);
    ck_assert_uint_eq(t->attempt, 2);
    ASSERT_BYTES_STR(t->payload, "job");
    ASSERT_BYTES_STR(t->last_error, "boom");
    ck_assert_uint_eq(t->n_errors, 2);
    ASSERT_BYTES_STR(t->errors[0].msg, "boom");
    ck_assert_uint_eq(t->errors[0].at_ms, T0 + 2);
    ck_assert_uint_eq(t->errors[0].attempt, 2);
    ASSERT_BYTES_STR(t->errors[1].msg, "first error");
    ck_assert_uint_eq(t->errors[1].at_ms, T0 + 1);
    ck_assert_uint_eq(t->errors[1].attempt, 1);

    q = stats("q");
    ASSERT_COUNTS(q, 0, 0, 0, 1);
    ck_assert_uint_eq(q.counters.failed_total, 1);
    ck_assert_uint_eq(q.counters.dead_total, 1);
    ck_assert_uint_eq(q.counters.nacked_total, 1);
}
END_TEST

START_TEST(test_errors_last_five_capped)
{
    char big[2000 + 1], msg[32];
    uint64_t id, lid;
    const fsm_task *t;
    uint32_t i;

    id = put_ok(T0, put_op("q", "job", 1, 0, 0, 100, NULL));
    for (i = 1; i <= 7; i++) {
        snprintf(msg, sizeof(msg), "err-%u", i);
        lid = lease_one(T0 + i, "q", 1000, id);
        ck_assert_int_eq(apply1(T0 + i, th_nack(id, lid, 0, msg)), 0);
    }
    t = task_get(id);
    ck_assert_uint_eq(t->n_errors, TASK_MAX_ERRORS);
    for (i = 0; i < TASK_MAX_ERRORS; i++) {
        snprintf(msg, sizeof(msg), "err-%u", 7 - i);
        ASSERT_BYTES_STR(t->errors[i].msg, msg);
        ck_assert_uint_eq(t->errors[i].attempt, 7 - i);
        ck_assert_uint_eq(t->errors[i].at_ms, T0 + 7 - i);
    }
    ASSERT_BYTES_STR(t->last_error, "err-7");

    /* Up to 1 KiB of one error text is kept. */
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    big[0] = 'B';
    lid = lease_one(T0 + 10, "q", 1000, id);
    ck_assert_int_eq(apply1(T0 + 10, th_fail(id, lid, big)), 0);
    t = task_get(id);
    ck_assert_int_eq(t->state, TASK_DEAD);
    ck_assert_uint_eq(t->errors[0].msg.len, TASK_ERROR_MAX);
    ck_assert_mem_eq(t->errors[0].msg.ptr, big, TASK_ERROR_MAX);
}
END_TEST

/* ---- fencing ---- */

START_TEST(test_stale_lease_id)
{
    uint64_t id, l1, l2, done, ldone, run_at;
    uint32_t n_errors;
    const fsm_task *t;

    id = put_ok(T0, put_op("q", "job", 1, 0, 0, 10, NULL));
    l1 = lease_one(T0, "q", 100, id);
    ck_assert_int_eq(apply1(T0 + 100, th_tick()), 0);
    run_at = task_get(id)->run_at_ms;
    if (task_get(id)->state == TASK_DELAYED)
        ck_assert_int_eq(apply1(run_at, th_tick()), 0);
    else
        run_at = T0 + 100;
    l2 = lease_one(run_at, "q", 10000, id);
    ck_assert_uint_gt(l2, l1);
    n_errors = task_get(id)->n_errors;

    /* The old holder is fenced off, and changes nothing. */
    ck_assert_int_eq(apply1(run_at + 1, th_ack(id, l1)), CLAWQ_ELEASE_LOST);
    ck_assert_int_eq(apply1(run_at + 1, th_nack(id, l1, 0, "x")),
                     CLAWQ_ELEASE_LOST);
    ck_assert_int_eq(apply1(run_at + 1, th_fail(id, l1, "x")),
                     CLAWQ_ELEASE_LOST);
    ck_assert_int_eq(
        apply1(run_at + 1, extend_op(id, l1, 99999, "cp", false, 0)),
        CLAWQ_ELEASE_LOST);
    t = task_get(id);
    ck_assert_int_eq(t->state, TASK_LEASED);
    ck_assert_uint_eq(t->lease_id, l2);
    ck_assert_uint_eq(t->lease_expires_ms, run_at + 10000);
    ck_assert_uint_eq(t->checkpoint.len, 0);
    ck_assert_uint_eq(t->n_errors, n_errors);
    ck_assert_uint_eq(stats("q").counters.leased, 1);

    /* A task id never issued is NOT_FOUND. */
    ck_assert_int_eq(apply1(run_at + 1, th_ack(id + 1000000, l2)),
                     CLAWQ_ENOT_FOUND);
    ck_assert_int_eq(apply1(run_at + 1, th_fail(id + 1000000, l2, "x")),
                     CLAWQ_ENOT_FOUND);

    /* The new holder's ack works; a second ack finds the task gone. */
    ck_assert_int_eq(apply1(run_at + 2, th_ack(id, l2)), 0);
    ck_assert_int_eq(fsm_task_get(g_store, id, &g_rd), CLAWQ_ENOT_FOUND);
    ck_assert_int_eq(apply1(run_at + 3, th_ack(id, l2)), CLAWQ_ELEASE_LOST);

    /* A ready task never leased: any lease id is stale. */
    done = put_ok(run_at + 4, th_put("q", "r", 1));
    ck_assert_int_eq(apply1(run_at + 4, th_ack(done, l2)), CLAWQ_ELEASE_LOST);
    ck_assert_int_eq(task_get(done)->state, TASK_READY);
    ldone = lease_one(run_at + 5, "q", 1000, done);
    ck_assert_uint_gt(ldone, l2);
    ck_assert_uint_eq(stats("q").counters.acked_total, 1);
}
END_TEST

START_TEST(test_extend_and_checkpoint)
{
    uint64_t id, lid, l2, now;
    const fsm_task *t, *lt;

    id = put_ok(T0, put_op("q", "job", 1, 0, 0, 10, NULL));
    lid = lease_one(T0, "q", 100, id);

    ck_assert_int_eq(apply1(T0 + 50, extend_op(id, lid, 200, "cp1", true, 42)),
                     0);
    ck_assert_uint_eq(g_res.ops[0].id, id);
    ck_assert_uint_eq(g_res.ops[0].value, T0 + 250);
    ck_assert_int_eq(apply1(T0 + 100, th_tick()), 0);
    t = task_get(id);
    ck_assert_int_eq(t->state, TASK_LEASED);
    ck_assert_uint_eq(t->lease_id, lid);
    ck_assert_uint_eq(t->lease_expires_ms, T0 + 250);
    ck_assert_uint_eq(t->progress, 42);
    ASSERT_BYTES_STR(t->checkpoint, "cp1");
    ck_assert_uint_eq(stats("q").counters.expired_total, 0);

    /* No checkpoint given: the stored one stays. lease_ms 0 = queue's. */
    ck_assert_int_eq(apply1(T0 + 200, extend_op(id, lid, 0, NULL, true, 43)),
                     0);
    ck_assert_uint_eq(g_res.ops[0].value,
                      T0 + 200 + stats("q").settings.lease_ms);
    ck_assert_int_eq(apply1(T0 + 250, th_tick()), 0);
    ck_assert_int_eq(task_get(id)->state, TASK_LEASED);
    ck_assert_int_eq(apply1(T0 + 300, extend_op(id, lid, 100, NULL, false, 0)),
                     0);
    ck_assert_uint_eq(g_res.ops[0].value, T0 + 400);
    t = task_get(id);
    ASSERT_BYTES_STR(t->checkpoint, "cp1");
    ck_assert_uint_eq(t->progress, 43);

    /* Expiry; the next lease hands the checkpoint on. */
    ck_assert_int_eq(apply1(T0 + 400, th_tick()), 0);
    ck_assert_uint_eq(stats("q").counters.expired_total, 1);
    t = task_get(id);
    now = t->state == TASK_DELAYED ? t->run_at_ms : T0 + 400;
    ck_assert_int_eq(apply1(now, th_tick()), 0);
    ck_assert_uint_eq(lease_n(now, "q", 1, 1000, NULL, NULL), 1);
    lt = &g_res.tasks[g_res.ops[0].first_task];
    ck_assert_uint_eq(lt->id, id);
    ck_assert_uint_eq(lt->attempt, 2);
    ASSERT_BYTES_STR(lt->checkpoint, "cp1");
    l2 = lt->lease_id;
    ck_assert_uint_gt(l2, lid);

    /* The new holder can replace it. */
    ck_assert_int_eq(apply1(now + 1, extend_op(id, l2, 100, "cp2", false, 0)),
                     0);
    ASSERT_BYTES_STR(task_get(id)->checkpoint, "cp2");
}
END_TEST

/* ---- idempotency ---- */

START_TEST(test_idempotency_window)
{
    queue_settings set;
    uint64_t first, id2, other, lid, due = 0;
    queue_rec q;

    queue_settings_default(&set);
    set.dedup_window_ms = 1000;
    create_with(T0 - 10, "q", QSET_DEDUP_WINDOW_MS, &set);
    ck_assert_uint_eq(stats("q").settings.dedup_window_ms, 1000);
    /* Drain the seed task. */
    ck_assert_uint_eq(lease_n(T0 - 10, "q", 1, 100000, NULL, NULL), 1);

    first = put_ok(T0, put_op("q", "p1", 1, 0, 0, 0, "k"));
    ck_assert_int_eq(apply1(T0 + 500, put_op("q", "p2", 1, 0, 0, 0, "k")), 0);
    ck_assert(g_res.ops[0].duplicate);
    ck_assert_uint_eq(g_res.ops[0].id, first);
    q = stats("q");
    ASSERT_COUNTS(q, 1, 0, 1, 0);
    ck_assert_uint_eq(q.counters.put_total, 2); /* seed + first */
    ck_assert_uint_eq(q.counters.deduped_total, 1);
    ASSERT_BYTES_STR(task_get(first)->payload, "p1");

    /* The key is per queue. */
    other = put_ok(T0 + 500, put_op("other", "p", 1, 0, 0, 0, "k"));
    ck_assert_uint_ne(other, first);

    /* Still a duplicate after the task is done. */
    lid = lease_one(T0 + 600, "q", 1000, first);
    ck_assert_int_eq(apply1(T0 + 600, th_ack(first, lid)), 0);
    ck_assert_int_eq(apply1(T0 + 700, put_op("q", "p3", 1, 0, 0, 0, "k")), 0);
    ck_assert(g_res.ops[0].duplicate);
    ck_assert_uint_eq(g_res.ops[0].id, first);
    q = stats("q");
    ASSERT_COUNTS(q, 0, 0, 1, 0);
    ck_assert_uint_eq(q.counters.deduped_total, 2);
    ck_assert_int_eq(fsm_task_get(g_store, first, &g_rd), CLAWQ_ENOT_FOUND);

    /* The key's expiry is a due time; a tick then forgets it. */
    ck_assert_int_eq(apply1(T0 + 999, th_tick()), 0);
    ck_assert_int_eq(apply1(T0 + 999, put_op("q", "p", 1, 0, 0, 0, "k")), 0);
    ck_assert(g_res.ops[0].duplicate);
    ck_assert_int_eq(fsm_next_due(g_store, &due), 0);
    ck_assert_uint_eq(due, T0 + 1000);
    ck_assert_int_eq(apply1(T0 + 1000, th_tick()), 0);
    ck_assert_uint_eq(g_res.ops[0].value, 1);
    id2 = put_ok(T0 + 1000, put_op("q", "p4", 1, 0, 0, 0, "k"));
    ck_assert_uint_ne(id2, first);
    q = stats("q");
    ASSERT_COUNTS(q, 1, 0, 1, 0);
    ck_assert_uint_eq(q.counters.put_total, 3);
    ck_assert_uint_eq(q.counters.deduped_total, 3);
    /* And the new put starts a new window. */
    ck_assert_int_eq(apply1(T0 + 1500, put_op("q", "p5", 1, 0, 0, 0, "k")), 0);
    ck_assert(g_res.ops[0].duplicate);
    ck_assert_uint_eq(g_res.ops[0].id, id2);
}
END_TEST

/* ---- dead-letter queue ---- */

/* Puts n tasks, leases them all at T0 and fails task i at T0 + 1000 * (i+1)
 * with errs[i]. */
static void make_dead(const char *queue, size_t n, const char *const *errs,
                      uint64_t *ids, uint64_t *lids)
{
    uint64_t got[16];
    size_t i;

    ck_assert_uint_le(n, 16);
    for (i = 0; i < n; i++)
        ids[i] = put_ok(T0, put_op(queue, errs[i], 1, 0, 0, 10, NULL));
    ck_assert_uint_eq(lease_n(T0, queue, (uint32_t)n, 1000000, got, lids), n);
    for (i = 0; i < n; i++)
        ck_assert_uint_eq(got[i], ids[i]);
    for (i = 0; i < n; i++)
        ck_assert_int_eq(
            apply1(T0 + 1000 * (i + 1), th_fail(ids[i], lids[i], errs[i])), 0);
}

START_TEST(test_dlq_replay_filters)
{
    static const char *const errs[] = {"timeout connecting", "bad input",
                                       "timeout reading", "timeout writing"};
    uint64_t ids[4], lids[4], got[4];
    const fsm_task *t;
    queue_rec q;
    cmd_dlq f;

    make_dead("q", 4, errs, ids, lids);
    q = stats("q");
    ASSERT_COUNTS(q, 0, 0, 0, 4);

    /* Listing: oldest first. */
    memset(&f, 0, sizeof(f));
    f.queue = cq_bytes_str("q");
    ck_assert_int_eq(fsm_dlq_list(g_store, &f, 0, 0, &g_rd), 0);
    ck_assert_uint_eq(g_rd.n_tasks, 4);
    ck_assert_uint_eq(g_rd.tasks[0].id, ids[0]);
    ck_assert_uint_eq(g_rd.tasks[3].id, ids[3]);

    /* Substring and [from, to): only task 2 (dead at T0 + 3000). */
    ck_assert_int_eq(apply1(T0 + 10000, dlq_op(CMD_DLQ_REPLAY, "q", "timeout",
                                               T0 + 1500, T0 + 4000, 0)),
                     0);
    ck_assert_uint_eq(g_res.ops[0].value, 1);
    t = task_get(ids[2]);
    ck_assert_int_eq(t->state, TASK_READY);
    ck_assert_uint_eq(t->attempt, 0);
    ASSERT_BYTES_STR(t->payload, errs[2]);
    q = stats("q");
    ASSERT_COUNTS(q, 1, 0, 0, 3);

    /* The `to` bound is exclusive, `from` inclusive. */
    ck_assert_int_eq(apply1(T0 + 10000, dlq_op(CMD_DLQ_REPLAY, "q", "timeout",
                                               T0 + 4000, T0 + 4000, 0)),
                     0);
    ck_assert_uint_eq(g_res.ops[0].value, 0);

    /* max: the oldest match only. */
    ck_assert_int_eq(
        apply1(T0 + 10001, dlq_op(CMD_DLQ_REPLAY, "q", "timeout", 0, 0, 1)), 0);
    ck_assert_uint_eq(g_res.ops[0].value, 1);
    ck_assert_int_eq(task_get(ids[0])->state, TASK_READY);
    ck_assert_int_eq(task_get(ids[3])->state, TASK_DEAD);
    ck_assert_int_eq(task_get(ids[1])->state, TASK_DEAD);

    /* No filter: the rest. */
    ck_assert_int_eq(
        apply1(T0 + 10002, dlq_op(CMD_DLQ_REPLAY, "q", NULL, 0, 0, 0)), 0);
    ck_assert_uint_eq(g_res.ops[0].value, 2);
    q = stats("q");
    ASSERT_COUNTS(q, 4, 0, 0, 0);
    ck_assert_uint_eq(q.counters.dead_total, 4);

    /* Replayed tasks are leased in the order they became ready again,
     * starting over at attempt 1. */
    ck_assert_uint_eq(lease_n(T0 + 10003, "q", 4, 1000, got, NULL), 4);
    ck_assert_uint_eq(got[0], ids[2]);
    ck_assert_uint_eq(got[1], ids[0]);
    ck_assert_uint_eq(got[2], ids[1]);
    ck_assert_uint_eq(got[3], ids[3]);
    ck_assert_uint_eq(g_res.tasks[g_res.ops[0].first_task].attempt, 1);
}
END_TEST

START_TEST(test_dlq_purge)
{
    static const char *const errs[] = {"a-one", "b-two", "a-three"};
    uint64_t ids[3], lids[3];
    queue_rec q;

    make_dead("q", 3, errs, ids, lids);
    ck_assert_int_eq(
        apply1(T0 + 10000, dlq_op(CMD_DLQ_PURGE, "q", "a-", 0, 0, 0)), 0);
    ck_assert_uint_eq(g_res.ops[0].value, 2);
    ck_assert_int_eq(fsm_task_get(g_store, ids[0], &g_rd), CLAWQ_ENOT_FOUND);
    ck_assert_int_eq(fsm_task_get(g_store, ids[2], &g_rd), CLAWQ_ENOT_FOUND);
    ck_assert_int_eq(task_get(ids[1])->state, TASK_DEAD);
    q = stats("q");
    ASSERT_COUNTS(q, 0, 0, 0, 1);

    /* A purged task is gone, not unknown. */
    ck_assert_int_eq(apply1(T0 + 10001, th_ack(ids[0], lids[0])),
                     CLAWQ_ELEASE_LOST);

    ck_assert_int_eq(
        apply1(T0 + 10002, dlq_op(CMD_DLQ_PURGE, "q", NULL, 0, 0, 0)), 0);
    ck_assert_uint_eq(g_res.ops[0].value, 1);
    q = stats("q");
    ASSERT_COUNTS(q, 0, 0, 0, 0);
    ck_assert_uint_eq(q.counters.dead_total, 3);
}
END_TEST

/* ---- queue admin ---- */

START_TEST(test_queue_purge)
{
    uint64_t leased, r1, r2, dl, other, lid;
    queue_rec q;

    leased = put_ok(T0, th_put("q", "l", 0));
    lid = lease_one(T0, "q", 10000, leased);
    r1 = put_ok(T0 + 1, th_put("q", "r1", 1));
    r2 = put_ok(T0 + 1, th_put("q", "r2", 2));
    dl = put_ok(T0 + 1, put_op("q", "d", 1, T0 + 5000, 0, 0, NULL));
    other = put_ok(T0 + 1, th_put("other", "o", 1));

    ck_assert_int_eq(apply1(T0 + 2, th_queue(CMD_QUEUE_PURGE, "q")), 0);
    ck_assert_uint_eq(g_res.ops[0].value, 3);
    ck_assert_int_eq(fsm_task_get(g_store, r1, &g_rd), CLAWQ_ENOT_FOUND);
    ck_assert_int_eq(fsm_task_get(g_store, r2, &g_rd), CLAWQ_ENOT_FOUND);
    ck_assert_int_eq(fsm_task_get(g_store, dl, &g_rd), CLAWQ_ENOT_FOUND);
    ck_assert_int_eq(task_get(leased)->state, TASK_LEASED);
    ck_assert_int_eq(task_get(other)->state, TASK_READY);
    q = stats("q");
    ASSERT_COUNTS(q, 0, 0, 1, 0);
    ck_assert_uint_eq(q.oldest_ready_ms, 0);

    /* The purged delayed task never comes back. */
    ck_assert_int_eq(apply1(T0 + 5000, th_tick()), 0);
    q = stats("q");
    ASSERT_COUNTS(q, 0, 0, 1, 0);
    /* The leased task finishes normally. */
    ck_assert_int_eq(apply1(T0 + 5001, th_ack(leased, lid)), 0);
    q = stats("q");
    ASSERT_COUNTS(q, 0, 0, 0, 0);
    ck_assert_uint_eq(q.counters.acked_total, 1);
    ck_assert_uint_eq(stats("other").counters.ready, 1);
}
END_TEST

START_TEST(test_pause_resume)
{
    uint64_t a, b, ids[4];
    queue_rec q;

    a = put_ok(T0, th_put("q", "a", 1));
    ck_assert_int_eq(apply1(T0 + 1, th_queue(CMD_QUEUE_PAUSE, "q")), 0);
    ck_assert(stats("q").settings.paused);

    ck_assert_uint_eq(lease_n(T0 + 2, "q", 4, 1000, NULL, NULL), 0);
    b = put_ok(T0 + 3, th_put("q", "b", 1));
    q = stats("q");
    ASSERT_COUNTS(q, 2, 0, 0, 0);
    ck_assert_uint_eq(q.counters.leased_total, 0);

    ck_assert_int_eq(apply1(T0 + 4, th_queue(CMD_QUEUE_RESUME, "q")), 0);
    ck_assert(!stats("q").settings.paused);
    ck_assert_uint_eq(lease_n(T0 + 5, "q", 4, 1000, ids, NULL), 2);
    ck_assert_uint_eq(ids[0], a);
    ck_assert_uint_eq(ids[1], b);
}
END_TEST

START_TEST(test_queue_set_max_depth)
{
    queue_settings set;
    uint64_t a, lid, b, d;
    queue_rec q;

    queue_settings_default(&set);
    set.max_depth = 3;
    create_with(T0, "q", QSET_MAX_DEPTH, &set);
    q = stats("q");
    ck_assert_uint_eq(q.settings.max_depth, 3);

    a = put_ok(T0 + 1, th_put("q", "a", 1));
    d = put_ok(T0 + 1, put_op("q", "d", 1, T0 + 9999, 0, 0, NULL));
    ck_assert_int_eq(apply1(T0 + 2, th_put("q", "c", 1)), CLAWQ_EQUEUE_FULL);
    /* Leased tasks count towards the depth. */
    lid = lease_one(T0 + 3, "q", 10000, a);
    ck_assert_int_eq(apply1(T0 + 4, th_put("q", "c", 1)), CLAWQ_EQUEUE_FULL);
    q = stats("q");
    ASSERT_COUNTS(q, 1, 1, 1, 0);
    ck_assert_uint_eq(q.counters.put_total, 3);

    ck_assert_int_eq(apply1(T0 + 5, th_ack(a, lid)), 0);
    b = put_ok(T0 + 6, th_put("q", "b", 1));
    ck_assert_uint_gt(b, d);
    ck_assert_int_eq(apply1(T0 + 7, th_put("q", "c", 1)), CLAWQ_EQUEUE_FULL);
    q = stats("q");
    ASSERT_COUNTS(q, 2, 1, 0, 0);
}
END_TEST

START_TEST(test_queue_set_max_payload)
{
    queue_settings set, def;
    queue_rec q;

    queue_settings_default(&def);
    set = def;
    set.max_payload = 4;
    set.max_depth = def.max_depth + 77; /* not named in `fields` */
    create_with(T0, "q", QSET_MAX_PAYLOAD, &set);
    q = stats("q");
    ck_assert_uint_eq(q.settings.max_payload, 4);
    ck_assert_uint_eq(q.settings.max_depth, def.max_depth);

    ck_assert_int_eq(apply1(T0 + 1, th_put("q", "12345", 1)), CLAWQ_ETOO_LARGE);
    put_ok(T0 + 1, th_put("q", "1234", 1));
    q = stats("q");
    ASSERT_COUNTS(q, 2, 0, 0, 0);
    ck_assert_uint_eq(q.counters.put_total, 2);
}
END_TEST

/* Regression: a put that fails its checks must not create its queue (it
 * once did, because the queue was created before the payload check). */
START_TEST(test_failed_put_creates_nothing)
{
    static char big[1024 * 1024 + 2];
    fsm_queue_stats st, *list = NULL;
    size_t n = 99;
    cmd_op op;
    uint64_t digest_before, digest_after;

    memset(big, 'x', sizeof(big) - 1);
    ck_assert_int_eq(store_digest(g_store, &digest_before), 0);
    op = th_put("fresh", big, 1);
    ck_assert_int_eq(apply1(T0, op), CLAWQ_ETOO_LARGE);
    ck_assert_int_eq(fsm_queue_stats_get(g_store, cq_bytes_str("fresh"), &st),
                     CLAWQ_ENOT_FOUND);
    ck_assert_int_eq(store_digest(g_store, &digest_after), 0);
    /* Only the applied index moved. */
    ck_assert_uint_ne(digest_before, digest_after);
    ck_assert_int_eq(fsm_queue_list(g_store, &list, &n), 0);
    ck_assert_uint_eq(n, 0);
    free(list);

    /* Nor does a rejected queue_set (backoff_max below backoff_base). */
    memset(&op, 0, sizeof(op));
    op.type = CMD_QUEUE_SET;
    op.u.queue_set.queue = cq_bytes_str("fresh");
    op.u.queue_set.fields = QSET_BACKOFF_MAX_MS;
    op.u.queue_set.settings.backoff_max_ms = 1;
    ck_assert_int_eq(apply1(T0, op), CLAWQ_EINVALID);
    ck_assert_int_eq(fsm_queue_stats_get(g_store, cq_bytes_str("fresh"), &st),
                     CLAWQ_ENOT_FOUND);
}
END_TEST

/* The leader's worker summary is kept on the queue record (so followers
 * can answer the autoscaler alike) and stamped with the command's time. */
START_TEST(test_workers_summary)
{
    fsm_queue_stats st;
    cmd_op op;

    memset(&op, 0, sizeof(op));
    op.type = CMD_WORKERS;
    op.u.workers.queue = cq_bytes_str("w");
    op.u.workers.workers = 3;
    op.u.workers.median_capacity = 4;
    op.u.workers.capacity = 12;
    op.u.workers.inflight = 7;
    /* Unknown queue: not created. */
    ck_assert_int_eq(apply1(T0, op), CLAWQ_ENOT_FOUND);
    ck_assert_int_eq(fsm_queue_stats_get(g_store, cq_bytes_str("w"), &st),
                     CLAWQ_ENOT_FOUND);
    put_ok(T0, th_put("w", "x", 1));
    ck_assert_int_eq(apply1(T0 + 5, op), 0);
    ck_assert_int_eq(fsm_queue_stats_get(g_store, cq_bytes_str("w"), &st), 0);
    ck_assert_uint_eq(st.rec.workers.workers, 3);
    ck_assert_uint_eq(st.rec.workers.median_capacity, 4);
    ck_assert_uint_eq(st.rec.workers.capacity, 12);
    ck_assert_uint_eq(st.rec.workers.inflight, 7);
    ck_assert_uint_eq(st.rec.workers.at_ms, T0 + 5);
    ck_assert_uint_eq(st.rec.counters.ready, 1); /* nothing else moved */
}
END_TEST

START_TEST(test_invalid_queue_name)
{
    char long_name[QUEUE_NAME_MAX + 2], max_name[QUEUE_NAME_MAX + 1];
    cmd_op ops[7];
    fsm_queue_stats st;

    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    memset(max_name, 'b', sizeof(max_name) - 1);
    max_name[sizeof(max_name) - 1] = '\0';

    ops[0] = th_put("bad name", "x", 1);
    ops[1] = th_put("ok", "x", 1);
    ops[2] = th_put("", "x", 1);
    ops[3] = th_put(long_name, "x", 1);
    ops[4] = th_put(max_name, "x", 1);
    ops[5] = th_put("a.b_c:d-E9", "x", 1);
    ops[6] = th_put("bad/name", "x", 1);
    ck_assert_int_eq(th_apply(g_store, &g_index, T0, ops, 7, &g_res),
                     CLAWQ_EINVALID);
    ck_assert_int_eq(g_res.ops[1].status, 0);
    ck_assert_int_eq(g_res.ops[2].status, CLAWQ_EINVALID);
    ck_assert_int_eq(g_res.ops[3].status, CLAWQ_EINVALID);
    ck_assert_int_eq(g_res.ops[4].status, 0);
    ck_assert_int_eq(g_res.ops[5].status, 0);
    ck_assert_int_eq(g_res.ops[6].status, CLAWQ_EINVALID);

    ck_assert_uint_eq(stats("ok").counters.ready, 1);
    ck_assert_uint_eq(stats(max_name).counters.ready, 1);
    ck_assert_uint_eq(stats("a.b_c:d-E9").counters.ready, 1);
    ck_assert_int_ne(
        fsm_queue_stats_get(g_store, cq_bytes_str("bad name"), &st), 0);
}
END_TEST

/* ---- counters ---- */

START_TEST(test_counters_scripted)
{
    uint64_t a, b, c, d, ids[2], lids[2], lc;
    queue_rec q;

    a = put_ok(T0, th_put("q", "a", 1));
    b = put_ok(T0, put_op("q", "b", 1, 0, 0, 10, NULL));
    c = put_ok(T0 + 10, th_put("q", "c", 1));
    d = put_ok(T0 + 10, put_op("q", "d", 1, T0 + 50000, 0, 0, NULL));
    q = stats("q");
    ASSERT_COUNTS(q, 3, 1, 0, 0);
    ck_assert_uint_eq(q.counters.put_total, 4);
    ck_assert_uint_eq(q.oldest_ready_ms, T0);

    ck_assert_uint_eq(lease_n(T0 + 2000, "q", 2, 10000, ids, lids), 2);
    ck_assert_uint_eq(ids[0], a);
    ck_assert_uint_eq(ids[1], b);
    q = stats("q");
    ASSERT_COUNTS(q, 1, 1, 2, 0);
    ck_assert_uint_eq(q.oldest_ready_ms, T0 + 10);

    ck_assert_int_eq(apply1(T0 + 2050, th_ack(a, lids[0])), 0);
    ck_assert_int_eq(apply1(T0 + 2100, th_nack(b, lids[1], 0, "retry")), 0);
    q = stats("q");
    ASSERT_COUNTS(q, 2, 1, 0, 0);
    ck_assert_uint_eq(q.oldest_ready_ms, T0 + 10);

    /* c has waited longer than b. */
    lc = lease_one(T0 + 2200, "q", 10000, c);
    q = stats("q");
    ASSERT_COUNTS(q, 1, 1, 1, 0);
    ck_assert_uint_eq(q.oldest_ready_ms, T0 + 2100);
    ck_assert_int_eq(apply1(T0 + 2300, th_fail(c, lc, "bad")), 0);
    /* A stale settle counts nothing. */
    ck_assert_int_eq(apply1(T0 + 2400, th_ack(a, lids[0])), CLAWQ_ELEASE_LOST);

    q = stats("q");
    ASSERT_COUNTS(q, 1, 1, 0, 1);
    ck_assert_uint_eq(q.counters.put_total, 4);
    ck_assert_uint_eq(q.counters.deduped_total, 0);
    ck_assert_uint_eq(q.counters.leased_total, 3);
    ck_assert_uint_eq(q.counters.acked_total, 1);
    ck_assert_uint_eq(q.counters.nacked_total, 1);
    ck_assert_uint_eq(q.counters.failed_total, 1);
    ck_assert_uint_eq(q.counters.expired_total, 0);
    ck_assert_uint_eq(q.counters.dead_total, 1);
    ck_assert_uint_eq(q.oldest_ready_ms, T0 + 2100);
    ck_assert_int_eq(task_get(d)->state, TASK_DELAYED);

    /* Lease the last ready task: no ready task, oldest_ready_ms 0. */
    lease_one(T0 + 2500, "q", 10000, b);
    q = stats("q");
    ASSERT_COUNTS(q, 0, 1, 1, 1);
    ck_assert_uint_eq(q.oldest_ready_ms, 0);
    ck_assert_uint_eq(q.counters.leased_total, 4);
}
END_TEST

START_TEST(test_oldest_ready_ignores_priority)
{
    uint64_t a;

    a = put_ok(T0, th_put("q", "a", 0));
    put_ok(T0 + 500, th_put("q", "b", 9));
    put_ok(T0 + 700, th_put("q", "c", 0));
    ck_assert_uint_eq(stats("q").oldest_ready_ms, T0);
    lease_one(T0 + 800, "q", 1000, a);
    ck_assert_uint_eq(stats("q").oldest_ready_ms, T0 + 500);
}
END_TEST

/* ---- replay safety ---- */

START_TEST(test_same_index_skipped)
{
    cmd_op op = th_put("q", "a", 1);
    uint64_t d1, d2, idx;
    void *buf = NULL;
    size_t len = 0;

    ck_assert_int_eq(cmd_encode(T0, &op, 1, &buf, &len), 0);
    ck_assert_int_eq(fsm_apply(g_store, 5, buf, len, &g_res), 0);
    ck_assert(!g_res.skipped);
    ck_assert_uint_eq(g_res.index, 5);
    ck_assert_uint_eq(g_res.n_ops, 1);
    ck_assert_int_eq(g_res.ops[0].status, 0);
    ck_assert_int_eq(store_digest(g_store, &d1), 0);

    /* The same entry again, and an older one: nothing happens. */
    ck_assert_int_eq(fsm_apply(g_store, 5, buf, len, &g_res), 0);
    ck_assert(g_res.skipped);
    ck_assert_int_eq(fsm_apply(g_store, 3, buf, len, &g_res), 0);
    ck_assert(g_res.skipped);
    ck_assert_int_eq(store_digest(g_store, &d2), 0);
    ck_assert_uint_eq(d1, d2);
    ck_assert_uint_eq(stats("q").counters.ready, 1);
    ck_assert_uint_eq(stats("q").counters.put_total, 1);

    /* The next index applies. */
    ck_assert_int_eq(fsm_apply(g_store, 6, buf, len, &g_res), 0);
    ck_assert(!g_res.skipped);
    ck_assert_uint_eq(stats("q").counters.ready, 2);
    free(buf);

    {
        store_txn *t = NULL;
        ck_assert_int_eq(store_txn_begin(g_store, false, &t), 0);
        ck_assert_int_eq(store_applied_get(t, &idx), 0);
        store_txn_abort(t);
    }
    ck_assert_uint_eq(idx, 6);
}
END_TEST

/* An apply keeps the applied index and the id counters in the store's
 * memo. A restore replaces the store's contents under it: the next put
 * must carry on from the snapshot's counters, not from the ones this store
 * had before. */
START_TEST(test_restore_resets_memo)
{
    char *src_dir = th_tmpdir();
    store *src = th_store_open(src_dir, true);
    uint64_t src_index = 0, src_ids[3], id, applied;
    store_snap *snap = NULL;
    store_txn *t = NULL;
    void *buf = NULL;
    size_t len = 0;
    bool replaced = false;
    fsm_result res;
    cmd_op op = th_put("q", "a", 1);
    int i;

    fsm_result_init(&res);
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(th_apply(src, &src_index, T0, &op, 1, &res), 0);
        src_ids[i] = res.ops[0].id;
    }
    /* This store applies a put of its own first: its memo holds its
     * counters, one task in. */
    id = put_ok(T0, th_put("q", "b", 1));
    ck_assert_uint_eq(id, src_ids[0]);

    ck_assert_int_eq(store_snapshot_begin(src, &snap), 0);
    ck_assert_int_eq(store_snapshot_serialize(snap, NULL, &buf, &len), 0);
    store_snapshot_end(snap);
    ck_assert_int_eq(store_restore(g_store, buf, len, &replaced), 0);
    ck_assert(replaced);
    free(buf);

    /* An entry the snapshot covers is skipped... */
    ck_assert_int_eq(cmd_encode(T0, &op, 1, &buf, &len), 0);
    ck_assert_int_eq(fsm_apply(g_store, src_index, buf, len, &g_res), 0);
    ck_assert(g_res.skipped);
    free(buf);
    /* ...and the next one applies with the snapshot's counters. */
    g_index = src_index;
    id = put_ok(T0, th_put("q", "c", 1));
    ck_assert_uint_gt(id, src_ids[2]);
    ck_assert_uint_eq(stats("q").counters.ready, 4);
    ck_assert_int_eq(store_txn_begin(g_store, false, &t), 0);
    ck_assert_int_eq(store_applied_get(t, &applied), 0);
    store_txn_abort(t);
    ck_assert_uint_eq(applied, src_index + 1);

    fsm_result_fini(&res);
    store_close(src);
    th_rmdir(src_dir);
}
END_TEST

/* What an apply keeps in the store's memo (the applied index, the id
 * counters, the first time of each due index) must leave the state and the
 * next due time exactly as reading them back from LMDB would. A mixed
 * script (delayed puts, deadlines, idempotency keys, leases, acks, nacks
 * with delay, ticks) runs against this store and a shadow whose memo is
 * cleared before every command: after each command the two digests, and
 * the memo's next due time and a fresh look at the indexes, must agree. */
START_TEST(test_next_due_memo)
{
    char *shadow_dir = th_tmpdir();
    uint64_t now = T0, cached, fresh, saved[STORE_MEMO_WORDS], d1, d2;
    uint64_t ids[256], lids[256], id, lid;
    size_t n_leased = 0, got;
    uint32_t rnd = 12345, x;
    char key[32];
    int step, seen = 0;

    g_shadow = th_store_open(shadow_dir, true);
    g_shadow_index = 0;
    for (step = 0; step < 600; step++) {
        rnd = rnd * 1103515245u + 12345u;
        x = rnd >> 8;
        snprintf(key, sizeof(key), "k%d", step);
        switch (x % 8) {
        case 0:
            apply1(now, put_op("q", "d", 1, now + 1 + x % 5000, 0, 0, NULL));
            break;
        case 1:
            apply1(now, put_op("q", "e", 1, 0, now + 1 + x % 9000, 0, NULL));
            break;
        case 2:
            apply1(now, put_op("q", "i", 1, 0, 0, 0, key));
            break;
        case 3:
            apply1(now, th_put("q", "p", 1));
            break;
        case 4:
            if (n_leased + 2 <= 256) {
                got = lease_n(now, "q", 2, 100 + x % 3000, ids + n_leased,
                              lids + n_leased);
                n_leased += got;
            }
            break;
        case 5:
        case 6:
            if (n_leased > 0) {
                size_t i = x % n_leased;
                id = ids[i];
                lid = lids[i];
                ids[i] = ids[--n_leased];
                lids[i] = lids[n_leased];
                /* A lease a tick took back answers STALE: fine here. */
                if (x % 8 == 5)
                    apply1(now, th_ack(id, lid));
                else
                    apply1(now, th_nack(id, lid, (int64_t)(x % 4000), "x"));
            }
            break;
        default:
            apply1(now, th_tick());
            break;
        }
        now += x % 700;
        ck_assert_int_eq(fsm_next_due(g_store, &cached), 0);
        memcpy(saved, store_memo(g_store), sizeof(saved));
        memset(store_memo(g_store), 0, sizeof(saved));
        ck_assert_int_eq(fsm_next_due(g_store, &fresh), 0);
        memcpy(store_memo(g_store), saved, sizeof(saved));
        ck_assert_uint_eq(cached, fresh);
        seen += cached != 0;
        ck_assert_int_eq(store_digest(g_store, &d1), 0);
        ck_assert_int_eq(store_digest(g_shadow, &d2), 0);
        ck_assert_uint_eq(d1, d2);
    }
    ck_assert_int_gt(seen, 300); /* the script kept times scheduled */
    store_close(g_shadow);
    g_shadow = NULL;
    th_rmdir(shadow_dir);
}
END_TEST

/* member: set, replace, delete (an empty address), delete again. */
START_TEST(test_member_table)
{
    cmd_op op;
    char buf[64];

    memset(&op, 0, sizeof(op));
    op.type = CMD_MEMBER;
    op.u.member.node_id = 4;
    op.u.member.client_addr = cq_bytes_str("10.0.0.4:7700");
    ck_assert_int_eq(apply1(T0, op), 0);
    ck_assert_int_eq(fsm_member_addr(g_store, 4, buf, sizeof(buf)), 0);
    ck_assert_str_eq(buf, "10.0.0.4:7700");
    ck_assert_int_eq(fsm_member_addr(g_store, 4, buf, 5), CLAWQ_ETOO_LARGE);
    op.u.member.client_addr = cq_bytes_str("10.0.0.44:7700");
    ck_assert_int_eq(apply1(T0, op), 0);
    ck_assert_int_eq(fsm_member_addr(g_store, 4, buf, sizeof(buf)), 0);
    ck_assert_str_eq(buf, "10.0.0.44:7700");
    op.u.member.client_addr = cq_bytes_str("");
    ck_assert_int_eq(apply1(T0, op), 0);
    ck_assert_int_eq(fsm_member_addr(g_store, 4, buf, sizeof(buf)),
                     CLAWQ_ENOT_FOUND);
    ck_assert_int_eq(apply1(T0, op), 0); /* gone already: still fine */
    op.u.member.node_id = 0;
    ck_assert_int_eq(apply1(T0, op), CLAWQ_EINVALID);
}
END_TEST

/* ---- scheduling ---- */

START_TEST(test_next_due)
{
    queue_settings set;
    uint64_t due = 1, dl, lid;

    ck_assert_int_eq(fsm_next_due(g_store, &due), 0);
    ck_assert_uint_eq(due, 0);

    /* A ready task without deadline is nothing to wake for. */
    put_ok(T0, th_put("q", "r", 1));
    ck_assert_int_eq(fsm_next_due(g_store, &due), 0);
    ck_assert_uint_eq(due, 0);

    put_ok(T0, put_op("q", "d", 1, T0 + 5000, 0, 0, NULL));
    ck_assert_int_eq(fsm_next_due(g_store, &due), 0);
    ck_assert_uint_eq(due, T0 + 5000);

    dl = put_ok(T0, put_op("q", "dl", 0, 0, T0 + 4000, 0, NULL));
    ck_assert_int_eq(fsm_next_due(g_store, &due), 0);
    ck_assert_uint_eq(due, T0 + 4000);

    lid = lease_one(T0 + 1000, "q", 2000, dl);
    ck_assert_int_eq(fsm_next_due(g_store, &due), 0);
    ck_assert_uint_eq(due, T0 + 3000);

    queue_settings_default(&set);
    set.dedup_window_ms = 500;
    create_with(T0 + 1000, "idem", QSET_DEDUP_WINDOW_MS, &set);
    put_ok(T0 + 1000, put_op("idem", "k", 1, 0, 0, 0, "key"));
    ck_assert_int_eq(fsm_next_due(g_store, &due), 0);
    ck_assert_uint_eq(due, T0 + 1500);

    /* The key forgotten, the lease gone: the deadline is next. */
    ck_assert_int_eq(apply1(T0 + 1500, th_tick()), 0);
    ck_assert_int_eq(fsm_next_due(g_store, &due), 0);
    ck_assert_uint_eq(due, T0 + 3000);
    ck_assert_int_eq(apply1(T0 + 1600, th_ack(dl, lid)), 0);
    ck_assert_int_eq(fsm_next_due(g_store, &due), 0);
    ck_assert_uint_eq(due, T0 + 5000);

    ck_assert_int_eq(apply1(T0 + 5000, th_tick()), 0);
    ck_assert_int_eq(fsm_next_due(g_store, &due), 0);
    ck_assert_uint_eq(due, 0);
}
END_TEST

/* A result trimmed for reuse (clawqd keeps answered entries' results)
 * drops what a large lease grew (arena blocks, task arrays, working
 * buffers) and still produces correct results afterwards. */
START_TEST(test_result_trim_reuse)
{
    static char big[100 * 1024];
    static cmd_op acks[1503];
    char small[32];
    size_t i, round;

    for (round = 0; round < 3; round++) {
        cmd_op leases[2] = {th_lease("trim", CMD_LEASE_MAX, 30000),
                            th_lease("trim", CMD_LEASE_MAX, 30000)};
        memset(big, 'a' + (int)round, sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        /* Big payloads first (the arena's first block is a large one)
         * or last (they get blocks after a standard one). */
        for (i = 0; i < 1503; i++) {
            bool is_big = round % 2 == 0 ? i < 3 : i >= 1500;
            snprintf(small, sizeof(small), "r%zu-%zu", round, i);
            put_ok(T0, th_put("trim", is_big ? big : small, 0));
        }
        ck_assert_int_eq(th_apply(g_store, &g_index, T0, leases, 2, &g_res), 0);
        ck_assert_uint_eq(g_res.n_tasks, 1503);
        for (i = 0; i < 1503; i++) {
            const fsm_task *t = &g_res.tasks[i];
            bool is_big = round % 2 == 0 ? i < 3 : i >= 1500;
            snprintf(small, sizeof(small), "r%zu-%zu", round, i);
            if (is_big) {
                ck_assert_uint_eq(t->payload.len, sizeof(big) - 1);
                ck_assert_int_eq(memcmp(t->payload.ptr, big, sizeof(big) - 1),
                                 0);
            } else {
                ck_assert_uint_eq(t->payload.len, strlen(small));
                ck_assert_int_eq(memcmp(t->payload.ptr, small, t->payload.len),
                                 0);
            }
        }
        for (i = 0; i < 1503; i++) {
            const fsm_task *t = &g_res.tasks[i];
            acks[i] = th_ack(t->id, t->lease_id);
        }
        fsm_result_trim(&g_res);
        ck_assert_uint_le(g_res.tasks_cap, 1024);
        ck_assert_uint_le(g_res.ops_cap, 1024);
        ck_assert_uint_eq(g_res.n_tasks, 0);
        /* One command of 1,503 acks into the trimmed result. */
        ck_assert_int_eq(th_apply(g_store, &g_index, T0, acks, 1503, &g_res),
                         0);
        for (i = 0; i < 1503; i++)
            ck_assert_int_eq(g_res.ops[i].status, 0);
        fsm_result_trim(&g_res);
    }
}
END_TEST

static Suite *fsm_suite(void)
{
    const struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"priority_then_fifo", test_priority_then_fifo},
        {"result_trim_reuse", test_result_trim_reuse},
        {"fifo_holds_for_retried_tasks", test_fifo_holds_for_retried_tasks},
        {"put_fields_round_trip", test_put_fields_round_trip},
        {"delayed_promotion", test_delayed_promotion},
        {"tick_more", test_tick_more},
        {"backoff_formula", test_backoff_formula},
        {"lease_expiry_retries_then_dead", test_lease_expiry_retries_then_dead},
        {"nack_delay", test_nack_delay},
        {"nack_at_max_attempts_is_dead", test_nack_at_max_attempts_is_dead},
        {"deadline_ready_and_delayed", test_deadline_ready_and_delayed},
        {"deadline_leased_loses_lease", test_deadline_leased_loses_lease},
        {"fail_keeps_error", test_fail_keeps_error},
        {"errors_last_five_capped", test_errors_last_five_capped},
        {"stale_lease_id", test_stale_lease_id},
        {"extend_and_checkpoint", test_extend_and_checkpoint},
        {"idempotency_window", test_idempotency_window},
        {"dlq_replay_filters", test_dlq_replay_filters},
        {"dlq_purge", test_dlq_purge},
        {"queue_purge", test_queue_purge},
        {"pause_resume", test_pause_resume},
        {"queue_set_max_depth", test_queue_set_max_depth},
        {"queue_set_max_payload", test_queue_set_max_payload},
        {"failed_put_creates_nothing", test_failed_put_creates_nothing},
        {"workers_summary", test_workers_summary},
        {"invalid_queue_name", test_invalid_queue_name},
        {"counters_scripted", test_counters_scripted},
        {"oldest_ready_ignores_priority", test_oldest_ready_ignores_priority},
        {"same_index_skipped", test_same_index_skipped},
        {"next_due", test_next_due},
        {"restore_resets_memo", test_restore_resets_memo},
        {"next_due_memo", test_next_due_memo},
        {"member_table", test_member_table},
    };
    Suite *s = suite_create("fsm");
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(fsm_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
