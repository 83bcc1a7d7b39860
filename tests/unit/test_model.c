/* test_model.c: the state machine against a small in-memory reference model
 * of docs/STATE-MACHINE.md, driven by a seeded PRNG.
 *
 * Each step builds one command of random ops, applies it to a store through
 * fsm_apply and, op by op, to the model, and compares every op's outcome
 * (status, ids, leased tasks in order) and every queue's counters. Every
 * CHECK_EVERY steps the lease order (fsm_peek), a few tasks (fsm_task_get)
 * and fsm_next_due are compared too. At the end the command log is replayed
 * into a fresh store, which must come out with the same digest.
 *
 * Time only moves in a command whose first op is a tick, so every due item
 * (lease expiry, deadline, delayed task, idempotency key) is handled before
 * any other op sees the new time; the model never has to guess what an op
 * does with an item that is due but not yet ticked.
 *
 * The seed is in every failure message; CLAWQ_MODEL_SEED and
 * CLAWQ_MODEL_STEPS override the defaults to replay or stretch a run. */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm.h"
#include "helpers.h"

#define N_QUEUES 3
#define N_KEYS 6
#define DEFAULT_SEED 20261124ULL
#define DEFAULT_STEPS 20000
#define CHECK_EVERY 100
#define PEEK_MAX 64
#define T0 1000000ULL

enum {
    M_READY = TASK_READY,
    M_DELAYED = TASK_DELAYED,
    M_LEASED = TASK_LEASED,
    M_DEAD = TASK_DEAD,
    M_GONE = 5
};

typedef struct mtask {
    uint64_t id;
    uint64_t seq, ready_at, run_at, deadline, expires;
    uint64_t lease_id, prev_lease_id;
    uint64_t checkpoint; /* 0 = none, else the text "cp<n>" */
    uint32_t attempt, max_attempts;
    int q, state;
    size_t live_pos; /* index in g_m.live while ready/delayed/leased */
    uint8_t prio, dead_reason;
} mtask;

typedef struct mqueue {
    const char *name;
    queue_settings qs;
    bool paused;
    queue_counters c; /* the totals; current counts come from the tasks */
} mqueue;

typedef struct midem {
    bool live;
    uint64_t id, expires;
} midem;

typedef struct model {
    uint64_t seed, rng;
    int step;
    uint64_t now, seq;
    uint64_t max_id, max_lease_id, next_cp;
    mtask *tasks;
    size_t n_tasks, cap_tasks;
    size_t *live;
    size_t n_live;
    mqueue q[N_QUEUES];
    midem idem[N_QUEUES][N_KEYS];
} model;

/* Every command applied, to replay into a second store at the end. */
typedef struct cmd_log {
    void **buf;
    size_t *len;
    size_t n, cap;
} cmd_log;

static model g_m;
static cmd_log g_log;
static char *g_dir;
static store *g_store;
static uint64_t g_index;
static fsm_result g_res, g_rd;

static const char *const queue_names[N_QUEUES] = {"q0", "q1", "q2"};
static const char *const key_names[N_KEYS] = {"k0", "k1", "k2",
                                              "k3", "k4", "k5"};

#define MEQ(a, b)                                                              \
    do {                                                                       \
        uint64_t a_ = (uint64_t)(a), b_ = (uint64_t)(b);                       \
        ck_assert_msg(a_ == b_,                                                \
                      "seed=%" PRIu64 " step=%d: %s == %s: %" PRIu64           \
                      " != %" PRIu64,                                          \
                      g_m.seed, g_m.step, #a, #b, a_, b_);                     \
    } while (0)

#define MSTATUS(got, want)                                                     \
    do {                                                                       \
        int g_ = (got), w_ = (want);                                           \
        ck_assert_msg(g_ == w_,                                                \
                      "seed=%" PRIu64 " step=%d: status %s, model %s (%s)",    \
                      g_m.seed, g_m.step, clawq_err_name(g_),                  \
                      clawq_err_name(w_), g_res.detail);                       \
    } while (0)

static uint64_t rnd(void)
{
    return cq_mix64(g_m.seed ^ (g_m.rng++ * 0x2545f4914f6cdd1dULL));
}

static uint64_t rnd_below(uint64_t n)
{
    return n == 0 ? 0 : rnd() % n;
}

static bool chance(unsigned percent)
{
    return rnd_below(100) < percent;
}

/* ---- model bookkeeping ---- */

static mtask *task_by_id(uint64_t id)
{
    size_t lo = 0, hi = g_m.n_tasks;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (g_m.tasks[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < g_m.n_tasks && g_m.tasks[lo].id == id ? &g_m.tasks[lo] : NULL;
}

static void live_add(mtask *t)
{
    t->live_pos = g_m.n_live;
    g_m.live[g_m.n_live++] = (size_t)(t - g_m.tasks);
}

static void live_del(mtask *t)
{
    size_t last = g_m.live[--g_m.n_live];

    g_m.live[t->live_pos] = last;
    g_m.tasks[last].live_pos = t->live_pos;
}

static void make_ready(mtask *t)
{
    t->state = M_READY;
    t->seq = ++g_m.seq;
    t->ready_at = g_m.now;
}

static void make_dead(mtask *t, uint8_t reason)
{
    t->state = M_DEAD;
    t->dead_reason = reason;
    g_m.q[t->q].c.dead_total++;
    live_del(t);
}

/* A failed attempt (nack or lease expiry); delay < 0 = the backoff. */
static void retry_or_dead(mtask *t, int64_t delay_ms)
{
    uint64_t d;

    if (t->attempt >= t->max_attempts) {
        make_dead(t, DEAD_MAX_ATTEMPTS);
        return;
    }
    d = delay_ms >= 0
            ? (uint64_t)delay_ms
            : fsm_backoff_ms(&g_m.q[t->q].qs, t->attempt, t->id, t->lease_id);
    if (d == 0) {
        make_ready(t);
    } else {
        t->state = M_DELAYED;
        t->run_at = g_m.now + d;
    }
}

static int queue_index(cq_bytes name)
{
    int i;

    for (i = 0; i < N_QUEUES; i++)
        if (cq_bytes_eq(name, cq_bytes_str(queue_names[i])))
            return i;
    return -1;
}

/* The ready task of queue qi that leases next, or NULL. */
static mtask *next_ready(int qi)
{
    mtask *best = NULL;
    size_t i;

    for (i = 0; i < g_m.n_live; i++) {
        mtask *t = &g_m.tasks[g_m.live[i]];
        if (t->q != qi || t->state != M_READY)
            continue;
        if (best == NULL || t->prio < best->prio ||
            (t->prio == best->prio && t->seq < best->seq))
            best = t;
    }
    return best;
}

/* ---- ops on the model, each compared with the store's outcome ---- */

static void model_put(const cmd_put *p, const fsm_op_result *r)
{
    int qi = queue_index(p->queue), k = -1, i;
    mqueue *q;
    mtask *t;

    if (qi < 0) {
        MSTATUS(r->status, CLAWQ_EINVALID);
        return;
    }
    q = &g_m.q[qi];
    for (i = 0; p->idem_key.len > 0 && i < N_KEYS; i++)
        if (cq_bytes_eq(p->idem_key, cq_bytes_str(key_names[i])))
            k = i;
    MSTATUS(r->status, 0);
    if (k >= 0 && g_m.idem[qi][k].live) {
        MEQ(r->duplicate, 1);
        MEQ(r->id, g_m.idem[qi][k].id);
        q->c.deduped_total++;
        return;
    }
    MEQ(r->duplicate, 0);
    ck_assert_msg(r->id > g_m.max_id,
                  "seed=%" PRIu64 " step=%d: new id %" PRIu64
                  " not above %" PRIu64,
                  g_m.seed, g_m.step, r->id, g_m.max_id);
    g_m.max_id = r->id;
    CLAWQ_ASSERT(g_m.n_tasks < g_m.cap_tasks);
    t = &g_m.tasks[g_m.n_tasks++];
    memset(t, 0, sizeof(*t));
    t->id = r->id;
    t->q = qi;
    t->prio = p->priority;
    t->deadline = p->deadline_ms;
    t->max_attempts = p->max_attempts ? p->max_attempts : q->qs.max_attempts;
    if (p->run_at_ms > g_m.now) {
        t->state = M_DELAYED;
        t->run_at = p->run_at_ms;
    } else {
        make_ready(t);
    }
    live_add(t);
    q->c.put_total++;
    if (k >= 0) {
        g_m.idem[qi][k].live = true;
        g_m.idem[qi][k].id = r->id;
        g_m.idem[qi][k].expires = g_m.now + q->qs.dedup_window_ms;
    }
}

static void model_lease(const cmd_lease *l, const fsm_op_result *r)
{
    int qi = queue_index(l->queue);
    size_t n = 0;
    char cp[32];

    MSTATUS(r->status, 0);
    while (qi >= 0 && !g_m.q[qi].paused && n < l->max) {
        mtask *t = next_ready(qi);
        const fsm_task *got;
        uint64_t lease_ms;

        if (t == NULL)
            break;
        ck_assert_msg(n < r->n_tasks,
                      "seed=%" PRIu64 " step=%d: lease gave %zu tasks, model "
                      "has task %" PRIu64 " next",
                      g_m.seed, g_m.step, r->n_tasks, t->id);
        got = &g_res.tasks[r->first_task + n];
        MEQ(got->id, t->id);
        ck_assert_msg(got->lease_id > g_m.max_lease_id,
                      "seed=%" PRIu64 " step=%d: lease id %" PRIu64
                      " not above %" PRIu64,
                      g_m.seed, g_m.step, got->lease_id, g_m.max_lease_id);
        g_m.max_lease_id = got->lease_id;
        t->prev_lease_id = t->lease_id;
        t->lease_id = got->lease_id;
        t->attempt++;
        lease_ms = l->lease_ms ? l->lease_ms : g_m.q[qi].qs.lease_ms;
        t->expires = g_m.now + lease_ms;
        t->state = M_LEASED;
        MEQ(got->attempt, t->attempt);
        MEQ(got->lease_expires_ms, t->expires);
        MEQ(got->state, TASK_LEASED);
        MEQ(got->priority, t->prio);
        if (t->checkpoint == 0) {
            MEQ(got->checkpoint.len, 0);
        } else {
            snprintf(cp, sizeof(cp), "cp%" PRIu64, t->checkpoint);
            ck_assert_msg(cq_bytes_eq(got->checkpoint, cq_bytes_str(cp)),
                          "seed=%" PRIu64 " step=%d: task %" PRIu64
                          " leased without checkpoint %s",
                          g_m.seed, g_m.step, t->id, cp);
        }
        g_m.q[qi].c.leased_total++;
        n++;
    }
    MEQ(r->n_tasks, n);
}

/* The status a settle or extend of (id, lease_id) must get; the task when
 * it applies. */
static mtask *settle_target(uint64_t id, uint64_t lease_id,
                            const fsm_op_result *r)
{
    mtask *t = task_by_id(id);

    if (t == NULL) {
        CLAWQ_ASSERT(id > g_m.max_id);
        MSTATUS(r->status, CLAWQ_ENOT_FOUND);
        return NULL;
    }
    if (t->state != M_LEASED || t->lease_id != lease_id) {
        MSTATUS(r->status, CLAWQ_ELEASE_LOST);
        return NULL;
    }
    MSTATUS(r->status, 0);
    MEQ(r->id, id);
    return t;
}

static void model_settle(int type, const cmd_settle *s, const fsm_op_result *r)
{
    mtask *t = settle_target(s->id, s->lease_id, r);
    mqueue *q;

    if (t == NULL)
        return;
    q = &g_m.q[t->q];
    switch (type) {
    case CMD_ACK:
        t->state = M_GONE;
        live_del(t);
        q->c.acked_total++;
        break;
    case CMD_NACK:
        q->c.nacked_total++;
        retry_or_dead(t, s->delay_ms);
        break;
    case CMD_FAIL:
        q->c.failed_total++;
        make_dead(t, DEAD_FAILED);
        break;
    default:
        CLAWQ_ASSERT(0);
    }
}

static void model_extend(const cmd_extend *e, uint64_t cp,
                         const fsm_op_result *r)
{
    mtask *t = settle_target(e->id, e->lease_id, r);

    if (t == NULL)
        return;
    t->expires =
        g_m.now + (e->lease_ms ? e->lease_ms : g_m.q[t->q].qs.lease_ms);
    MEQ(r->value, t->expires);
    if (e->has_checkpoint)
        t->checkpoint = cp;
}

/* The three time-ordered indexes a tick walks, each keyed (time, id). */
enum due_kind { DUE_LEASE, DUE_DEADLINE, DUE_DELAYED };

static enum due_kind g_sort_kind; /* what cmp_due compares */

static uint64_t due_at(const mtask *t, enum due_kind kind)
{
    switch (kind) {
    case DUE_LEASE:
        return t->state == M_LEASED ? t->expires : 0;
    case DUE_DELAYED:
        return t->state == M_DELAYED ? t->run_at : 0;
    default:
        return t->deadline;
    }
}

static int cmp_due(const void *a, const void *b)
{
    const mtask *x = &g_m.tasks[*(const size_t *)a];
    const mtask *y = &g_m.tasks[*(const size_t *)b];
    uint64_t ax = due_at(x, g_sort_kind), ay = due_at(y, g_sort_kind);

    if (ax != ay)
        return ax < ay ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The live tasks with an item of `kind` due at g_m.now, in due order. */
static size_t collect_due(enum due_kind kind, size_t *out)
{
    size_t i, n = 0;

    for (i = 0; i < g_m.n_live; i++) {
        uint64_t at = due_at(&g_m.tasks[g_m.live[i]], kind);
        if (at != 0 && at <= g_m.now)
            out[n++] = g_m.live[i];
    }
    g_sort_kind = kind;
    qsort(out, n, sizeof(*out), cmp_due);
    return n;
}

static void model_tick(const cmd_tick *tk, const fsm_op_result *r)
{
    size_t *due = malloc((g_m.n_live + 1) * sizeof(*due));
    uint64_t handled = 0;
    size_t i, n;
    int qi, k;

    CLAWQ_ASSERT(due != NULL);
    CLAWQ_ASSERT(tk->max == 0);
    MSTATUS(r->status, 0);

    n = collect_due(DUE_LEASE, due);
    for (i = 0; i < n; i++) {
        mtask *t = &g_m.tasks[due[i]];
        g_m.q[t->q].c.expired_total++;
        retry_or_dead(t, -1);
    }
    handled += n;

    /* Dead tasks have left the live list: a deadline spares them. */
    n = collect_due(DUE_DEADLINE, due);
    for (i = 0; i < n; i++)
        make_dead(&g_m.tasks[due[i]], DEAD_EXPIRED);
    handled += n;

    n = collect_due(DUE_DELAYED, due);
    for (i = 0; i < n; i++)
        make_ready(&g_m.tasks[due[i]]);
    handled += n;

    for (qi = 0; qi < N_QUEUES; qi++)
        for (k = 0; k < N_KEYS; k++)
            if (g_m.idem[qi][k].live && g_m.idem[qi][k].expires <= g_m.now) {
                g_m.idem[qi][k].live = false;
                handled++;
            }
    free(due);

    MEQ(r->more, 0);
    MEQ(r->value, handled);
}

static void model_pause(int type, const cmd_queue *c, const fsm_op_result *r)
{
    int qi = queue_index(c->queue);

    CLAWQ_ASSERT(qi >= 0);
    MSTATUS(r->status, 0);
    g_m.q[qi].paused = type == CMD_QUEUE_PAUSE;
}

/* ---- comparisons of whole state ---- */

static void check_counters(void)
{
    queue_counters want[N_QUEUES];
    uint64_t oldest[N_QUEUES];
    size_t i;
    int qi;

    memset(want, 0, sizeof(want));
    memset(oldest, 0, sizeof(oldest));
    for (i = 0; i < g_m.n_tasks; i++) {
        const mtask *t = &g_m.tasks[i];
        queue_counters *c = &want[t->q];
        switch (t->state) {
        case M_READY:
            c->ready++;
            if (oldest[t->q] == 0 || t->ready_at < oldest[t->q])
                oldest[t->q] = t->ready_at;
            break;
        case M_DELAYED:
            c->delayed++;
            break;
        case M_LEASED:
            c->leased++;
            break;
        case M_DEAD:
            c->dead++;
            break;
        default:
            break;
        }
    }
    for (qi = 0; qi < N_QUEUES; qi++) {
        const queue_counters *m = &g_m.q[qi].c;
        fsm_queue_stats st;
        const queue_counters *c = &st.rec.counters;

        ck_assert_int_eq(
            fsm_queue_stats_get(g_store, cq_bytes_str(queue_names[qi]), &st),
            0);
        MEQ(c->ready, want[qi].ready);
        MEQ(c->delayed, want[qi].delayed);
        MEQ(c->leased, want[qi].leased);
        MEQ(c->dead, want[qi].dead);
        MEQ(st.rec.oldest_ready_ms, oldest[qi]);
        MEQ(c->put_total, m->put_total);
        MEQ(c->deduped_total, m->deduped_total);
        MEQ(c->leased_total, m->leased_total);
        MEQ(c->acked_total, m->acked_total);
        MEQ(c->nacked_total, m->nacked_total);
        MEQ(c->failed_total, m->failed_total);
        MEQ(c->expired_total, m->expired_total);
        MEQ(c->dead_total, m->dead_total);
        MEQ(st.rec.settings.paused, g_m.q[qi].paused);
    }
}

static int cmp_ready(const void *a, const void *b)
{
    const mtask *x = *(const mtask *const *)a;
    const mtask *y = *(const mtask *const *)b;

    if (x->prio != y->prio)
        return x->prio < y->prio ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The lease order: fsm_peek of ready tasks against the model's. */
static void check_ready_order(void)
{
    mtask **ready = malloc((g_m.n_live + 1) * sizeof(*ready));
    size_t i, n;
    int qi;

    CLAWQ_ASSERT(ready != NULL);
    for (qi = 0; qi < N_QUEUES; qi++) {
        cq_bytes name = cq_bytes_str(queue_names[qi]);
        mtask *next = next_ready(qi);

        ck_assert_int_eq(fsm_peek(g_store, name, TASK_READY, 1, &g_rd), 0);
        MEQ(g_rd.n_tasks, next != NULL);
        if (next != NULL)
            MEQ(g_rd.tasks[0].id, next->id);

        for (i = n = 0; i < g_m.n_live; i++) {
            mtask *t = &g_m.tasks[g_m.live[i]];
            if (t->q == qi && t->state == M_READY)
                ready[n++] = t;
        }
        qsort(ready, n, sizeof(*ready), cmp_ready);
        ck_assert_int_eq(fsm_peek(g_store, name, TASK_READY, PEEK_MAX, &g_rd),
                         0);
        MEQ(g_rd.n_tasks, n < PEEK_MAX ? n : PEEK_MAX);
        for (i = 0; i < g_rd.n_tasks; i++) {
            MEQ(g_rd.tasks[i].id, ready[i]->id);
            MEQ(g_rd.tasks[i].state, TASK_READY);
        }
    }
    free(ready);
}

static void check_tasks(void)
{
    int i;

    for (i = 0; i < 8 && g_m.n_tasks > 0; i++) {
        const mtask *t = &g_m.tasks[rnd_below(g_m.n_tasks)];
        const fsm_task *got;
        int rc = fsm_task_get(g_store, t->id, &g_rd);

        if (t->state == M_GONE) {
            MSTATUS(rc, CLAWQ_ENOT_FOUND);
            continue;
        }
        MSTATUS(rc, 0);
        got = &g_rd.tasks[0];
        MEQ(got->id, t->id);
        MEQ(got->state, t->state);
        MEQ(got->attempt, t->attempt);
        MEQ(got->max_attempts, t->max_attempts);
        MEQ(got->lease_id, t->lease_id);
        MEQ(got->priority, t->prio);
        MEQ(got->deadline_ms, t->deadline);
        ck_assert_msg(cq_bytes_eq(got->queue, cq_bytes_str(queue_names[t->q])),
                      "seed=%" PRIu64 " step=%d: task %" PRIu64
                      " in the wrong queue",
                      g_m.seed, g_m.step, t->id);
        if (t->state == M_DELAYED)
            MEQ(got->run_at_ms, t->run_at);
        if (t->state == M_LEASED)
            MEQ(got->lease_expires_ms, t->expires);
        if (t->state == M_DEAD)
            MEQ(got->dead_reason, t->dead_reason);
    }
}

static void check_next_due(void)
{
    uint64_t want = 0, got = 1;
    size_t i;
    int qi, k;

#define CONSIDER(at)                                                           \
    do {                                                                       \
        uint64_t at_ = (at);                                                   \
        if (at_ != 0 && (want == 0 || at_ < want))                             \
            want = at_;                                                        \
    } while (0)
    for (i = 0; i < g_m.n_live; i++) {
        const mtask *t = &g_m.tasks[g_m.live[i]];
        CONSIDER(t->deadline);
        if (t->state == M_LEASED)
            CONSIDER(t->expires);
        if (t->state == M_DELAYED)
            CONSIDER(t->run_at);
    }
    for (qi = 0; qi < N_QUEUES; qi++)
        for (k = 0; k < N_KEYS; k++)
            if (g_m.idem[qi][k].live)
                CONSIDER(g_m.idem[qi][k].expires);
#undef CONSIDER
    ck_assert_int_eq(fsm_next_due(g_store, &got), 0);
    MEQ(got, want);
}

/* Encodes ops as one command at g_m.now, applies it at the next index and
 * keeps it in the log. */
static void apply_logged(const cmd_op *ops, size_t n)
{
    void *buf = NULL;
    size_t len = 0;

    ck_assert_int_eq(cmd_encode(g_m.now, ops, n, &buf, &len), 0);
    ck_assert_int_eq(fsm_apply(g_store, ++g_index, buf, len, &g_res), 0);
    ck_assert_msg(!g_res.skipped, "seed=%" PRIu64 " step=%d: skipped", g_m.seed,
                  g_m.step);
    MEQ(g_res.n_ops, n);
    CLAWQ_ASSERT(g_log.n < g_log.cap);
    g_log.buf[g_log.n] = buf;
    g_log.len[g_log.n++] = len;
}

/* Replicas that apply the same log hold identical stores, and applying the
 * log again is skipped entry by entry. */
static void check_replay(void)
{
    char *dir = th_tmpdir();
    store *other = th_store_open(dir, true);
    uint64_t want, got;
    size_t i;

    ck_assert_int_eq(store_digest(g_store, &want), 0);
    for (i = 0; i < g_log.n; i++) {
        ck_assert_int_eq(
            fsm_apply(other, i + 1, g_log.buf[i], g_log.len[i], &g_rd), 0);
        ck_assert(!g_rd.skipped);
    }
    ck_assert_int_eq(store_digest(other, &got), 0);
    ck_assert_msg(want == got,
                  "seed=%" PRIu64 ": replica digest %016" PRIx64
                  " != %016" PRIx64,
                  g_m.seed, got, want);
    store_close(other);
    th_rmdir(dir);

    for (i = 0; i < g_log.n; i++) {
        ck_assert_int_eq(
            fsm_apply(g_store, i + 1, g_log.buf[i], g_log.len[i], &g_rd), 0);
        ck_assert(g_rd.skipped);
    }
    ck_assert_int_eq(store_digest(g_store, &got), 0);
    MEQ(got, want);
}

/* ---- random ops ---- */

/* Strings the ops of one command borrow until it is encoded. */
typedef struct scratch {
    char payload[8][32];
    char checkpoint[8][32];
    uint64_t cp[8];
} scratch;

static const mtask *random_leased(void)
{
    size_t i, n = 0, pick;

    for (i = 0; i < g_m.n_live; i++)
        n += g_m.tasks[g_m.live[i]].state == M_LEASED;
    if (n == 0)
        return NULL;
    pick = rnd_below(n);
    for (i = 0; i < g_m.n_live; i++)
        if (g_m.tasks[g_m.live[i]].state == M_LEASED && pick-- == 0)
            return &g_m.tasks[g_m.live[i]];
    return NULL;
}

/* A (task, lease) pair for ack/nack/fail/extend: mostly a held lease,
 * sometimes stale (an older lease, another task's, a finished task) or a
 * task id never issued. */
static void random_target(uint64_t *id, uint64_t *lease_id)
{
    unsigned r = (unsigned)rnd_below(100);
    const mtask *t = random_leased();

    if (r < 65 && t != NULL) {
        *id = t->id;
        *lease_id = t->lease_id;
    } else if (r < 78 && t != NULL) {
        *id = t->id;
        *lease_id = t->prev_lease_id;
        if (chance(50) && g_m.n_tasks > 0)
            *lease_id = g_m.tasks[rnd_below(g_m.n_tasks)].lease_id;
    } else if (r < 96 && g_m.n_tasks > 0) {
        t = &g_m.tasks[rnd_below(g_m.n_tasks)];
        *id = t->id;
        *lease_id = chance(80) ? t->lease_id : t->prev_lease_id;
    } else {
        *id = (1ULL << 62) + rnd_below(1000);
        *lease_id = g_m.max_lease_id;
    }
}

static cmd_op random_op(scratch *sc, size_t i)
{
    unsigned r = (unsigned)rnd_below(100);
    unsigned put_pct = g_m.n_live < 300 ? 32 : 12;
    cmd_op op;

    memset(&op, 0, sizeof(op));
    sc->cp[i] = 0;
    if (r < put_pct) {
        const char *queue = queue_names[rnd_below(N_QUEUES)];
        snprintf(sc->payload[i], sizeof(sc->payload[i]), "p%d", g_m.step);
        if (chance(1))
            queue = chance(50) ? "bad queue" : "";
        op = th_put(queue, sc->payload[i],
                    (uint8_t)(chance(90) ? rnd_below(4) : rnd_below(256)));
        r = (unsigned)rnd_below(100);
        if (r < 30)
            op.u.put.run_at_ms = g_m.now + 1 + rnd_below(3000);
        else if (r < 40)
            op.u.put.run_at_ms = g_m.now - rnd_below(2);
        if (chance(10))
            op.u.put.deadline_ms = g_m.now + 1 + rnd_below(8000);
        if (chance(50))
            op.u.put.max_attempts = 1 + (uint32_t)rnd_below(4);
        if (chance(15))
            op.u.put.idem_key = cq_bytes_str(key_names[rnd_below(N_KEYS)]);
        return op;
    }
    r -= put_pct;
    if (r < 22) {
        const char *queue =
            chance(2) ? "q-unknown" : queue_names[rnd_below(N_QUEUES)];
        uint32_t max = chance(90) ? 1 + (uint32_t)rnd_below(4)
                                  : 1 + (uint32_t)rnd_below(16);
        uint32_t lease_ms = chance(20) ? 0 : 100 + (uint32_t)rnd_below(2900);
        return th_lease(queue, max, lease_ms);
    }
    r -= 22;
    if (r < 44) {
        uint64_t id, lease_id;

        random_target(&id, &lease_id);
        snprintf(sc->payload[i], sizeof(sc->payload[i]), "e%d", g_m.step);
        if (r < 16)
            return th_ack(id, lease_id);
        if (r < 28) {
            int64_t delay = chance(35)   ? -1
                            : chance(50) ? 0
                                         : 1 + (int64_t)rnd_below(2000);
            return th_nack(id, lease_id, delay, sc->payload[i]);
        }
        if (r < 32)
            return th_fail(id, lease_id, sc->payload[i]);
        op.type = CMD_EXTEND;
        op.u.extend.id = id;
        op.u.extend.lease_id = lease_id;
        op.u.extend.lease_ms = chance(20) ? 0 : 50 + (uint32_t)rnd_below(3000);
        op.u.extend.has_progress = chance(50);
        op.u.extend.progress = rnd_below(100);
        if (chance(40)) {
            sc->cp[i] = ++g_m.next_cp;
            snprintf(sc->checkpoint[i], sizeof(sc->checkpoint[i]), "cp%" PRIu64,
                     sc->cp[i]);
            op.u.extend.has_checkpoint = true;
            op.u.extend.checkpoint = cq_bytes_str(sc->checkpoint[i]);
        }
        return op;
    }
    /* The rest: pause or resume, rarely pause so leases keep flowing. */
    if (chance(50))
        return th_queue(chance(25) ? CMD_QUEUE_PAUSE : CMD_QUEUE_RESUME,
                        queue_names[rnd_below(N_QUEUES)]);
    return th_lease(queue_names[rnd_below(N_QUEUES)], 2, 0);
}

static void model_apply(const cmd_op *op, const scratch *sc, size_t i,
                        const fsm_op_result *r)
{
    MEQ(r->type, op->type);
    switch (op->type) {
    case CMD_PUT:
        model_put(&op->u.put, r);
        break;
    case CMD_LEASE:
        model_lease(&op->u.lease, r);
        break;
    case CMD_ACK:
    case CMD_NACK:
    case CMD_FAIL:
        model_settle(op->type, &op->u.settle, r);
        break;
    case CMD_EXTEND:
        model_extend(&op->u.extend, sc->cp[i], r);
        break;
    case CMD_TICK:
        model_tick(&op->u.tick, r);
        break;
    case CMD_QUEUE_PAUSE:
    case CMD_QUEUE_RESUME:
        model_pause(op->type, &op->u.queue, r);
        break;
    default:
        CLAWQ_ASSERT(0);
    }
}

static uint64_t advance(void)
{
    unsigned r = (unsigned)rnd_below(100);

    if (r < 20)
        return 0;
    if (r < 75)
        return 1 + rnd_below(200);
    if (r < 95)
        return 200 + rnd_below(2000);
    return 2000 + rnd_below(20000);
}

/* One random command: sometimes a tick that moves the clock first, then
 * one to three ops at that time. */
static void step(void)
{
    cmd_op ops[8];
    scratch sc;
    size_t n = 0, k, i;

    k = chance(80) ? 1 : 2 + rnd_below(2);
    if (chance(25)) {
        g_m.now += advance();
        ops[n] = th_tick();
        sc.cp[n++] = 0;
        if (chance(50))
            k = 0;
    }
    for (i = 0; i < k; i++, n++)
        ops[n] = random_op(&sc, n);
    apply_logged(ops, n);
    for (i = 0; i < n; i++)
        model_apply(&ops[i], &sc, i, &g_res.ops[i]);
    check_counters();
}

/* Creates the queues with settings the run can exercise: short leases and
 * backoff, few attempts, short idempotency windows. */
static void setup_queues(void)
{
    static const struct {
        uint32_t lease_ms, max_attempts, base_ms, max_ms;
        uint64_t dedup_ms;
    } cfg[N_QUEUES] = {
        {1000, 3, 50, 2000, 3000},
        {500, 5, 100, 5000, 1500},
        {0, 0, 0, 0, 8000}, /* the defaults, but for the window */
    };
    const uint32_t all = QSET_LEASE_MS | QSET_MAX_ATTEMPTS |
                         QSET_BACKOFF_BASE_MS | QSET_BACKOFF_MAX_MS;
    int qi;

    for (qi = 0; qi < N_QUEUES; qi++) {
        cmd_op ops[2];
        queue_settings qs;
        fsm_queue_stats st;

        queue_settings_default(&qs);
        ops[0] = th_put(queue_names[qi], "seed", 7);
        ops[0].u.put.max_attempts = 3;
        memset(&ops[1], 0, sizeof(ops[1]));
        ops[1].type = CMD_QUEUE_SET;
        ops[1].u.queue_set.queue = cq_bytes_str(queue_names[qi]);
        ops[1].u.queue_set.fields =
            QSET_DEDUP_WINDOW_MS | (cfg[qi].lease_ms ? all : 0);
        if (cfg[qi].lease_ms) {
            qs.lease_ms = cfg[qi].lease_ms;
            qs.max_attempts = cfg[qi].max_attempts;
            qs.backoff_base_ms = cfg[qi].base_ms;
            qs.backoff_max_ms = cfg[qi].max_ms;
        }
        qs.dedup_window_ms = cfg[qi].dedup_ms;
        ops[1].u.queue_set.settings = qs;
        apply_logged(ops, 2);
        MSTATUS(g_res.ops[1].status, 0);

        ck_assert_int_eq(
            fsm_queue_stats_get(g_store, cq_bytes_str(queue_names[qi]), &st),
            0);
        MEQ(st.rec.settings.lease_ms, qs.lease_ms);
        MEQ(st.rec.settings.max_attempts, qs.max_attempts);
        MEQ(st.rec.settings.backoff_base_ms, qs.backoff_base_ms);
        MEQ(st.rec.settings.backoff_max_ms, qs.backoff_max_ms);
        MEQ(st.rec.settings.dedup_window_ms, qs.dedup_window_ms);
        MEQ(st.rec.settings.max_depth, 0);
        g_m.q[qi].name = queue_names[qi];
        g_m.q[qi].qs = st.rec.settings;
        model_put(&ops[0].u.put, &g_res.ops[0]);
    }
    check_counters();
}

static void setup(void)
{
    const char *seed = getenv("CLAWQ_MODEL_SEED");

    memset(&g_m, 0, sizeof(g_m));
    memset(&g_log, 0, sizeof(g_log));
    g_m.seed =
        seed != NULL && *seed != '\0' ? strtoull(seed, NULL, 0) : DEFAULT_SEED;
    g_m.now = T0;
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
    free(g_m.tasks);
    free(g_m.live);
    while (g_log.n > 0)
        free(g_log.buf[--g_log.n]);
    free(g_log.buf);
    free(g_log.len);
}

START_TEST(test_random_ops_match_model)
{
    const char *env = getenv("CLAWQ_MODEL_STEPS");
    int steps = env != NULL && *env != '\0' ? atoi(env) : DEFAULT_STEPS;
    int qi;

    /* At most 4 ops per step and a few setup puts: room for every task. */
    g_m.cap_tasks = (size_t)steps * 4 + 16;
    g_m.tasks = calloc(g_m.cap_tasks, sizeof(*g_m.tasks));
    g_m.live = calloc(g_m.cap_tasks, sizeof(*g_m.live));
    g_log.cap = (size_t)steps + N_QUEUES;
    g_log.buf = calloc(g_log.cap, sizeof(*g_log.buf));
    g_log.len = calloc(g_log.cap, sizeof(*g_log.len));
    ck_assert_ptr_nonnull(g_m.tasks);
    ck_assert_ptr_nonnull(g_m.live);
    ck_assert_ptr_nonnull(g_log.buf);
    ck_assert_ptr_nonnull(g_log.len);

    setup_queues();
    for (g_m.step = 1; g_m.step <= steps; g_m.step++) {
        step();
        if (g_m.step % CHECK_EVERY == 0) {
            check_ready_order();
            check_tasks();
            check_next_due();
        }
    }
    check_ready_order();
    check_next_due();
    check_replay();
    /* A full run reaches every interesting path, in every queue. */
    for (qi = 0; steps >= DEFAULT_STEPS && qi < N_QUEUES; qi++) {
        const queue_counters *c = &g_m.q[qi].c;
        ck_assert_uint_gt(c->acked_total, 0);
        ck_assert_uint_gt(c->nacked_total, 0);
        ck_assert_uint_gt(c->failed_total, 0);
        ck_assert_uint_gt(c->expired_total, 0);
        ck_assert_uint_gt(c->deduped_total, 0);
        ck_assert_uint_gt(c->dead_total, c->failed_total);
    }
}
END_TEST

static Suite *model_suite(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("random_ops_match_model");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_random_ops_match_model);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(model_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
