/* test_crash.c: crash safety and determinism of the store and the state
 * machine under a random command stream of every op type.
 *
 * - crash: a child applies the stream to a durable store and is killed with
 *   SIGKILL at a random point; the reopened store must equal a reference
 *   that applied exactly as many commands as the store says it applied.
 * - determinism: two stores (different map sizes) that apply the same
 *   stream hold byte-identical databases and give identical results.
 */
#include <check.h>
#include <errno.h>
#include <msgpack.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fsm.h"
#include "helpers.h"
#include "store.h"

static uint64_t rnd(uint64_t *s)
{
    return cq_mix64((*s)++);
}

/* ---- the workload: a random command stream that follows the results ---- */

#define WL_MAX_OPS 8
#define WL_HELD_MAX 512

typedef struct held_lease {
    uint64_t id, lease_id;
} held_lease;

typedef struct workload {
    uint64_t seed;
    uint64_t now_ms;
    uint64_t max_id;    /* largest task id seen */
    uint64_t max_lease; /* largest lease id seen */
    held_lease held[WL_HELD_MAX];
    size_t n_held;
    uint8_t pool[32768]; /* byte fields of the command being built */
    size_t pool_len;
    msgpack_sbuffer headers;
    size_t n_by_type[CMD_QUEUE_PURGE + 1];
    size_t ok_by_type[CMD_QUEUE_PURGE + 1];
    size_t n_leased_tasks;
} workload;

static const char *const wl_queues[] = {"q0", "q1", "q2", "q3"};

static void wl_init(workload *w, uint64_t seed)
{
    msgpack_packer pk;

    memset(w, 0, sizeof(*w));
    w->seed = seed;
    w->now_ms = 1700000000000ULL;
    msgpack_sbuffer_init(&w->headers);
    msgpack_packer_init(&pk, &w->headers, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_str_with_body(&pk, "trace", 5);
    msgpack_pack_str_with_body(&pk, "t-1", 3);
}

static void wl_fini(workload *w)
{
    msgpack_sbuffer_destroy(&w->headers);
}

static uint64_t wr(workload *w, uint64_t n)
{
    return rnd(&w->seed) % n;
}

static cq_bytes wl_random_bytes(workload *w, size_t len)
{
    uint8_t *p;
    ck_assert_uint_le(w->pool_len + len, sizeof(w->pool));
    p = w->pool + w->pool_len;
    w->pool_len += len;
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)rnd(&w->seed);
    return cq_bytes_of(p, len);
}

static cq_bytes wl_text(workload *w, const char *prefix, uint64_t n)
{
    char *p = (char *)w->pool + w->pool_len;
    size_t room = sizeof(w->pool) - w->pool_len;
    int k = snprintf(p, room, "%s-%llu", prefix, (unsigned long long)n);
    ck_assert(k > 0 && (size_t)k < room);
    w->pool_len += (size_t)k;
    return cq_bytes_of(p, (size_t)k);
}

/* A lease to settle: usually one the workload holds, sometimes a stale or
 * unknown one. `consume` forgets the held lease. */
static void wl_pick(workload *w, uint64_t *id, uint64_t *lease_id, bool consume)
{
    uint64_t r = wr(w, 100);
    size_t i;

    if (w->n_held == 0 || r < 8) {
        *id = r < 4 ? w->max_id + 1 + wr(w, 100) : 1 + wr(w, w->max_id + 1);
        *lease_id = 1 + wr(w, w->max_lease + 2);
        return;
    }
    i = (size_t)wr(w, w->n_held);
    *id = w->held[i].id;
    *lease_id = w->held[i].lease_id + (r < 12 ? 1 : 0);
    if (consume)
        w->held[i] = w->held[--w->n_held];
}

static void wl_gen_op(workload *w, cmd_op *op)
{
    uint64_t r = wr(w, 100);
    cq_bytes q = cq_bytes_str(wl_queues[wr(w, 4)]);

    memset(op, 0, sizeof(*op));
    if (r < 35 || r >= 99) {
        cmd_put *p = &op->u.put;
        uint64_t t = wr(w, 10);
        op->type = CMD_PUT;
        p->queue = r >= 99 ? cq_bytes_str("bad name") : q;
        p->payload =
            wl_random_bytes(w, wr(w, 64) == 0 ? 1500 : (size_t)wr(w, 200));
        p->priority = (uint8_t)(wr(w, 4) == 0 ? wr(w, 256) : wr(w, 3) * 64);
        if (t >= 6 && t < 8)
            p->run_at_ms = w->now_ms + 1 + wr(w, 3000);
        else if (t >= 8)
            p->run_at_ms = w->now_ms - wr(w, 1000);
        if (wr(w, 6) == 0)
            p->deadline_ms = w->now_ms + 200 + wr(w, 10000);
        if (wr(w, 3) == 0)
            p->max_attempts = (uint32_t)(1 + wr(w, 4));
        if (wr(w, 4) == 0)
            p->idem_key = wl_text(w, "idem", wr(w, 30));
        if (wr(w, 5) == 0)
            p->headers = cq_bytes_of(w->headers.data, w->headers.size);
    } else if (r < 50) {
        op->type = CMD_LEASE;
        op->u.lease.queue = q;
        op->u.lease.worker = wl_text(w, "w", wr(w, 3));
        op->u.lease.max = (uint32_t)(1 + wr(w, 6));
        op->u.lease.lease_ms = wr(w, 3) == 0 ? 0 : (uint32_t)(50 + wr(w, 2000));
    } else if (r < 60) {
        op->type = CMD_ACK;
        wl_pick(w, &op->u.settle.id, &op->u.settle.lease_id, true);
    } else if (r < 66) {
        uint64_t d = wr(w, 3);
        op->type = CMD_NACK;
        wl_pick(w, &op->u.settle.id, &op->u.settle.lease_id, true);
        op->u.settle.delay_ms = d == 0 ? -1 : d == 1 ? 0 : (int64_t)wr(w, 1000);
        op->u.settle.error = wl_text(w, "err", wr(w, 5));
    } else if (r < 70) {
        op->type = CMD_FAIL;
        wl_pick(w, &op->u.settle.id, &op->u.settle.lease_id, true);
        op->u.settle.error = wl_text(w, "fatal", wr(w, 3));
    } else if (r < 78) {
        cmd_extend *e = &op->u.extend;
        op->type = CMD_EXTEND;
        wl_pick(w, &e->id, &e->lease_id, false);
        e->lease_ms = wr(w, 3) == 0 ? 0 : (uint32_t)(100 + wr(w, 3000));
        e->has_progress = wr(w, 2) == 0;
        e->progress = wr(w, 100);
        e->has_checkpoint = wr(w, 3) == 0;
        if (e->has_checkpoint)
            e->checkpoint = wl_random_bytes(w, (size_t)wr(w, 80));
    } else if (r < 86) {
        op->type = CMD_TICK;
        op->u.tick.max = wr(w, 2) == 0 ? 0 : (uint32_t)(1 + wr(w, 8));
    } else if (r < 89) {
        queue_settings *s = &op->u.queue_set.settings;
        op->type = CMD_QUEUE_SET;
        op->u.queue_set.queue = q;
        op->u.queue_set.fields = (uint32_t)wr(w, 128);
        s->lease_ms = (uint32_t)(200 + wr(w, 3000));
        s->max_attempts = (uint32_t)(1 + wr(w, 6));
        s->backoff_base_ms = (uint32_t)(1 + wr(w, 200));
        s->backoff_max_ms = (uint32_t)(100 + wr(w, 5000));
        s->max_depth = wr(w, 3) == 0 ? 0 : 20 + wr(w, 200);
        s->max_payload =
            wr(w, 4) == 0 ? (uint32_t)(100 + wr(w, 1000)) : 1u << 20;
        s->dedup_window_ms = 100 + wr(w, 10000);
    } else if (r < 91) {
        op->type = CMD_QUEUE_PAUSE;
        op->u.queue.queue = q;
    } else if (r < 94) {
        op->type = CMD_QUEUE_RESUME;
        op->u.queue.queue = q;
    } else if (r < 98) {
        cmd_dlq *d = &op->u.dlq;
        op->type = r < 96 ? CMD_DLQ_REPLAY : CMD_DLQ_PURGE;
        d->queue = q;
        d->error_substr =
            wr(w, 2) == 0 ? cq_bytes_of("", 0) : cq_bytes_str("err-1");
        d->from_ms = wr(w, 3) == 0 ? w->now_ms - wr(w, 5000) : 0;
        d->to_ms = wr(w, 3) == 0 ? w->now_ms : 0;
        d->max = wr(w, 2) == 0 ? 0 : (uint32_t)(1 + wr(w, 5));
    } else {
        op->type = CMD_QUEUE_PURGE;
        op->u.queue.queue = q;
    }
}

/* The next command, encoded into a malloc'd buffer. Time moves forward. */
static void wl_next(workload *w, void **buf, size_t *len, uint64_t *now_ms)
{
    cmd_op ops[WL_MAX_OPS];
    size_t n = 1 + (size_t)wr(w, WL_MAX_OPS);

    w->pool_len = 0;
    w->now_ms += wr(w, 200);
    for (size_t i = 0; i < n; i++) {
        wl_gen_op(w, &ops[i]);
        w->n_by_type[ops[i].type]++;
    }
    ck_assert_int_eq(cmd_encode(w->now_ms, ops, n, buf, len), 0);
    *now_ms = w->now_ms;
}

/* Learns ids and leases from the results of the last command. */
static void wl_observe(workload *w, const fsm_result *res)
{
    for (size_t i = 0; i < res->n_ops; i++) {
        const fsm_op_result *o = &res->ops[i];
        if (o->status == 0 && o->type <= CMD_QUEUE_PURGE)
            w->ok_by_type[o->type]++;
        if (o->type == CMD_PUT && o->status == 0 && o->id > w->max_id)
            w->max_id = o->id;
        if (o->type != CMD_LEASE || o->status != 0)
            continue;
        for (size_t j = o->first_task; j < o->first_task + o->n_tasks; j++) {
            const fsm_task *t = &res->tasks[j];
            held_lease h = {t->id, t->lease_id};
            if (t->lease_id > w->max_lease)
                w->max_lease = t->lease_id;
            if (t->id > w->max_id)
                w->max_id = t->id;
            w->n_leased_tasks++;
            if (w->n_held < WL_HELD_MAX)
                w->held[w->n_held++] = h;
            else
                w->held[wr(w, WL_HELD_MAX)] = h;
        }
    }
}

/* ---- helpers ---- */

static uint64_t digest_of(store *s)
{
    uint64_t d = 0;
    ck_assert_int_eq(store_digest(s, &d), 0);
    return d;
}

static uint64_t applied_of(store *s)
{
    store_txn *t = NULL;
    uint64_t idx = UINT64_MAX;

    ck_assert_int_eq(store_txn_begin(s, false, &t), 0);
    ck_assert_int_eq(store_applied_get(t, &idx), 0);
    store_txn_abort(t);
    return idx;
}

static void assert_stores_equal(store *a, store *b)
{
    store_txn *ta = NULL, *tb = NULL;

    ck_assert_int_eq(store_txn_begin(a, false, &ta), 0);
    ck_assert_int_eq(store_txn_begin(b, false, &tb), 0);
    for (int db = 0; db < STORE_DB_COUNT; db++) {
        store_cursor *ca = NULL, *cb = NULL;
        cq_bytes ka, va, kb, vb;
        int ra, rb;
        size_t n = 0;

        ck_assert_int_eq(store_cursor_open(ta, (store_db)db, &ca), 0);
        ck_assert_int_eq(store_cursor_open(tb, (store_db)db, &cb), 0);
        ra = store_cursor_seek(ca, cq_bytes_of(NULL, 0), &ka, &va);
        rb = store_cursor_seek(cb, cq_bytes_of(NULL, 0), &kb, &vb);
        for (;;) {
            ck_assert_msg(ra == rb, "db %d entry %zu: %d vs %d", db, n, ra, rb);
            if (ra != 0) {
                ck_assert_int_eq(ra, CLAWQ_ENOT_FOUND);
                break;
            }
            ck_assert_msg(cq_bytes_eq(ka, kb), "db %d entry %zu: keys differ",
                          db, n);
            ck_assert_msg(cq_bytes_eq(va, vb), "db %d entry %zu: values differ",
                          db, n);
            n++;
            ra = store_cursor_next(ca, &ka, &va);
            rb = store_cursor_next(cb, &kb, &vb);
        }
        store_cursor_close(ca);
        store_cursor_close(cb);
    }
    store_txn_abort(ta);
    store_txn_abort(tb);
}

static void assert_results_equal(const fsm_result *a, const fsm_result *b,
                                 uint64_t index)
{
    ck_assert_uint_eq(a->index, b->index);
    ck_assert_int_eq(a->skipped, b->skipped);
    ck_assert_uint_eq(a->n_ops, b->n_ops);
    ck_assert_uint_eq(a->n_tasks, b->n_tasks);
    for (size_t i = 0; i < a->n_ops; i++) {
        const fsm_op_result *x = &a->ops[i], *y = &b->ops[i];
        ck_assert_msg(x->status == y->status,
                      "index %llu op %zu: status %d vs %d",
                      (unsigned long long)index, i, x->status, y->status);
        ck_assert_uint_eq(x->type, y->type);
        ck_assert_int_eq(x->duplicate, y->duplicate);
        ck_assert_uint_eq(x->id, y->id);
        ck_assert_uint_eq(x->value, y->value);
        ck_assert_int_eq(x->more, y->more);
        ck_assert_uint_eq(x->first_task, y->first_task);
        ck_assert_uint_eq(x->n_tasks, y->n_tasks);
    }
    for (size_t i = 0; i < a->n_tasks; i++) {
        const fsm_task *x = &a->tasks[i], *y = &b->tasks[i];
        ck_assert_uint_eq(x->id, y->id);
        ck_assert_uint_eq(x->lease_id, y->lease_id);
        ck_assert_uint_eq(x->attempt, y->attempt);
        ck_assert_uint_eq(x->lease_expires_ms, y->lease_expires_ms);
        ck_assert(cq_bytes_eq(x->payload, y->payload));
        ck_assert(cq_bytes_eq(x->checkpoint, y->checkpoint));
    }
}

/* ---- crash safety ---- */

#define CRASH_CMDS_MAX 2000
#define CRASH_TRIALS 5

typedef struct stream {
    uint64_t n;                    /* commands */
    void *buf[CRASH_CMDS_MAX + 1]; /* buf[k]: the command at index k */
    size_t len[CRASH_CMDS_MAX + 1];
    uint64_t digest[CRASH_CMDS_MAX + 1]; /* after exactly k commands */
} stream;

/* Builds the command stream by applying it to a reference store, and
 * records the reference digest after every prefix. */
static void stream_build(stream *st, uint64_t seed, uint64_t n)
{
    char *dir = th_tmpdir();
    store *ref = th_store_open(dir, true);
    workload w;
    fsm_result res;

    wl_init(&w, seed);
    fsm_result_init(&res);
    ck_assert_uint_le(n, CRASH_CMDS_MAX);
    st->n = n;
    st->buf[0] = NULL;
    st->len[0] = 0;
    st->digest[0] = digest_of(ref);
    for (uint64_t k = 1; k <= n; k++) {
        uint64_t now;
        wl_next(&w, &st->buf[k], &st->len[k], &now);
        ck_assert_int_eq(fsm_apply(ref, k, st->buf[k], st->len[k], &res), 0);
        ck_assert(!res.skipped);
        wl_observe(&w, &res);
        st->digest[k] = digest_of(ref);
    }
    /* The stream does real work. */
    ck_assert_uint_gt(w.n_leased_tasks, 0);
    ck_assert_uint_gt(w.ok_by_type[CMD_ACK], 0);
    fsm_result_fini(&res);
    wl_fini(&w);
    store_close(ref);
    th_rmdir(dir);
}

static void stream_free(stream *st)
{
    for (uint64_t k = 1; k <= st->n; k++)
        free(st->buf[k]);
}

/* The child: applies the whole stream from index 1 to a durable store
 * (indices already applied are skipped) and reports each index on fd.
 * Never returns; no Check calls here. */
static void crash_child(const char *dir, const stream *st, const store_opts *o,
                        int fd)
{
    store *s = NULL;
    fsm_result res;

    if (store_open(dir, o, &s) != 0)
        _exit(3);
    fsm_result_init(&res);
    for (uint64_t k = 1; k <= st->n; k++) {
        if (fsm_apply(s, k, st->buf[k], st->len[k], &res) != 0)
            _exit(4);
        if (write(fd, &k, sizeof(k)) != (ssize_t)sizeof(k))
            _exit(5);
    }
    fsm_result_fini(&res);
    store_close(s);
    _exit(0);
}

/* Runs the child until it reported `target` (0 = to the end), waits
 * delay_us more so the kill lands at a random point of a later command,
 * then kills it. Returns the last index the child reported as applied. */
static uint64_t crash_run(const char *dir, const stream *st,
                          const store_opts *o, uint64_t target,
                          unsigned delay_us, bool *finished)
{
    int fds[2];
    pid_t pid;
    uint64_t last = 0, k;
    int status = 0;

    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_int_ne(pid, -1);
    if (pid == 0) {
        close(fds[0]);
        crash_child(dir, st, o, fds[1]);
    }
    close(fds[1]);
    for (;;) {
        ssize_t n = read(fds[0], &k, sizeof(k));
        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof(k))
            break;
        last = k;
        if (target != 0 && k >= target)
            break;
    }
    /* The one wait in the unit tests: the point of the test is to kill the
     * child at an arbitrary moment, not to wait for a condition. */
    if (target != 0 && delay_us > 0) {
        struct timespec ts = {0, (long)delay_us * 1000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    if (target != 0)
        kill(pid, SIGKILL);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    close(fds[0]);
    if (WIFEXITED(status)) {
        ck_assert_msg(WEXITSTATUS(status) == 0, "child failed with %d",
                      WEXITSTATUS(status));
        *finished = true;
    } else {
        ck_assert(WIFSIGNALED(status));
        ck_assert_int_eq(WTERMSIG(status), SIGKILL);
        ck_assert(target != 0);
        *finished = false;
    }
    return last;
}

static void crash_trials(const store_opts *o, uint64_t seed, uint64_t n_cmds,
                         unsigned max_delay_us)
{
    static stream st;
    char *dir = th_tmpdir();
    uint64_t prev = 0;

    stream_build(&st, 0x7374726561ULL, n_cmds);
    for (int trial = 0; trial <= CRASH_TRIALS; trial++) {
        bool last_trial = trial == CRASH_TRIALS, finished = false;
        uint64_t target = 0, reported, k;
        store *s;

        if (!last_trial) {
            target = prev + 1 + rnd(&seed) % (n_cmds / 6);
            if (target > n_cmds)
                target = n_cmds;
        }
        reported = crash_run(dir, &st, o, target,
                             (unsigned)(rnd(&seed) % max_delay_us), &finished);

        /* Reopen: it opens, holds at least what the child saw committed,
         * and equals the reference after exactly that many commands. */
        ck_assert_int_eq(store_open(dir, o, &s), 0);
        k = applied_of(s);
        ck_assert_uint_ge(k, reported);
        ck_assert_uint_le(k, n_cmds);
        ck_assert_msg(digest_of(s) == st.digest[k],
                      "trial %d: applied %llu but state differs from the "
                      "reference",
                      trial, (unsigned long long)k);
        if (finished)
            ck_assert_uint_eq(k, n_cmds);
        if (last_trial)
            ck_assert(finished);
        store_close(s);
        prev = k;
    }
    stream_free(&st);
    th_rmdir(dir);
}

/* Durable: every commit fsynced. */
START_TEST(test_crash_kill9_durable)
{
    store_opts o;
    memset(&o, 0, sizeof(o));
    crash_trials(&o, 0x637261736821ULL, 400, 8000);
}
END_TEST

/* The broker's log-backed mode: no fsync, commits written into the map.
 * A killed process (not a power loss) must still leave a consistent
 * store. */
START_TEST(test_crash_kill9_writemap_nosync)
{
    store_opts o;
    memset(&o, 0, sizeof(o));
    o.nosync = true;
    o.writemap = true;
    crash_trials(&o, 0x6e6f73796e63ULL, 2000, 400);
}
END_TEST

/* ---- determinism ---- */

START_TEST(test_determinism)
{
    enum { CMDS = 900 };
    char *da = th_tmpdir(), *db = th_tmpdir();
    store *a = th_store_open(da, true);
    store *b;
    store_opts o;
    workload w;
    fsm_result ra, rb;
    size_t n_ops = 0;
    void *first = NULL;
    size_t first_len = 0;

    /* b starts with a tiny map and grows along the way: map size must not
     * change the state. */
    memset(&o, 0, sizeof(o));
    o.map_size = 128u << 10;
    o.map_max = (size_t)1 << 30;
    o.nosync = true;
    ck_assert_int_eq(store_open(db, &o, &b), 0);

    wl_init(&w, 0x64657465726dULL);
    fsm_result_init(&ra);
    fsm_result_init(&rb);
    for (uint64_t k = 1; k <= CMDS; k++) {
        void *buf = NULL;
        size_t len = 0;
        uint64_t now;

        wl_next(&w, &buf, &len, &now);
        ck_assert_int_eq(fsm_apply(a, k, buf, len, &ra), 0);
        ck_assert_int_eq(fsm_apply(b, k, buf, len, &rb), 0);
        ck_assert(!ra.skipped);
        assert_results_equal(&ra, &rb, k);
        n_ops += ra.n_ops;
        wl_observe(&w, &ra);
        if (k % 100 == 0)
            ck_assert_msg(digest_of(a) == digest_of(b),
                          "digests differ after %llu commands",
                          (unsigned long long)k);
        if (k == 1) {
            first = buf;
            first_len = len;
        } else {
            free(buf);
        }
    }
    ck_assert_uint_ge(n_ops, 3000);
    ck_assert_uint_eq(applied_of(a), CMDS);
    ck_assert_uint_eq(applied_of(b), CMDS);
    ck_assert_uint_eq(digest_of(a), digest_of(b));
    assert_stores_equal(a, b);
    ck_assert_uint_gt(store_map_size(b), 128u << 10);

    /* Every op type was issued, and the main ones also succeeded. */
    for (int t = CMD_PUT; t <= CMD_QUEUE_PURGE; t++)
        ck_assert_msg(w.n_by_type[t] > 0, "no op of type %s", cmd_type_name(t));
    ck_assert_uint_gt(w.ok_by_type[CMD_PUT], 0);
    ck_assert_uint_gt(w.ok_by_type[CMD_ACK], 0);
    ck_assert_uint_gt(w.ok_by_type[CMD_NACK], 0);
    ck_assert_uint_gt(w.ok_by_type[CMD_FAIL], 0);
    ck_assert_uint_gt(w.ok_by_type[CMD_EXTEND], 0);
    ck_assert_uint_gt(w.n_leased_tasks, 0);

    /* Replaying an old entry is skipped and changes nothing. */
    {
        uint64_t d = digest_of(a);
        ck_assert_int_eq(fsm_apply(a, 1, first, first_len, &ra), 0);
        ck_assert(ra.skipped);
        ck_assert_int_eq(fsm_apply(a, CMDS, first, first_len, &ra), 0);
        ck_assert(ra.skipped);
        ck_assert_uint_eq(digest_of(a), d);
        ck_assert_uint_eq(applied_of(a), CMDS);
    }

    /* Reopened stores still agree. */
    store_close(a);
    store_close(b);
    a = th_store_open(da, true);
    b = th_store_open(db, true);
    ck_assert_uint_eq(digest_of(a), digest_of(b));
    assert_stores_equal(a, b);

    free(first);
    fsm_result_fini(&ra);
    fsm_result_fini(&rb);
    wl_fini(&w);
    store_close(a);
    store_close(b);
    th_rmdir(da);
    th_rmdir(db);
}
END_TEST

static Suite *crash_suite(void)
{
    Suite *s = suite_create("crash");
    TCase *tc;

    tc = tcase_create("kill9_durable");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_crash_kill9_durable);
    suite_add_tcase(s, tc);

    tc = tcase_create("kill9_writemap_nosync");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_crash_kill9_writemap_nosync);
    suite_add_tcase(s, tc);

    tc = tcase_create("determinism");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_determinism);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(crash_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
