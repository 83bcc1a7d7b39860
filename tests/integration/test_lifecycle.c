/* test_lifecycle.c: a task's life through a real clawqd and libclawq:
 * put, pull, ack with the counters at each step; nack and redelivery;
 * fail, the dead-letter queue and replay; lease expiry handing the
 * checkpoint to the next delivery; stale leases fenced off; long polls
 * woken by a put and timing out; pipelined puts; QUEUE_FULL; priorities;
 * delays; worker capacity reports; pause and resume; purge; and clawqctl's
 * exit codes and JSON. Each test gets its own broker. */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

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

/* ---- helpers ---- */

static uint64_t put_full(clawq_client *c, const char *queue,
                         const char *payload, uint32_t priority,
                         uint64_t delay_ms)
{
    clawq_put_task t;
    uint64_t id = 0;

    clawq_put_task_init(&t);
    t.payload = payload;
    t.payload_len = strlen(payload);
    t.priority = priority;
    t.delay_ms = delay_ms;
    th_assert_ok(c, clawq_put(c, queue, &t, &id, NULL));
    ck_assert_uint_gt(id, 0);
    return id;
}

static uint64_t put(clawq_client *c, const char *queue, const char *payload)
{
    return put_full(c, queue, payload, CLAWQ_DEFAULT_PRIORITY, 0);
}

/* Pulls up to max tasks; *n gets the count. */
static clawq_task *pull(clawq_client *c, const char *queue, uint32_t max,
                        uint32_t wait_ms, size_t *n)
{
    clawq_task *tasks = NULL;

    *n = 99999;
    th_assert_ok(c, clawq_pull(c, queue, max, wait_ms, 0, &tasks, n));
    ck_assert_uint_le(*n, max);
    return tasks;
}

/* Pulls exactly one task (waiting up to wait_ms for it). */
static clawq_task *pull_one(clawq_client *c, const char *queue,
                            uint32_t wait_ms)
{
    size_t n;
    clawq_task *t = pull(c, queue, 1, wait_ms, &n);

    ck_assert_uint_eq(n, 1);
    ck_assert_ptr_nonnull(t);
    return t;
}

static void pull_none(clawq_client *c, const char *queue)
{
    size_t n;
    clawq_task *t = pull(c, queue, 10, 0, &n);

    ck_assert_uint_eq(n, 0);
    clawq_tasks_free(t);
}

static clawq_queue_stats stats(clawq_client *c, const char *queue)
{
    clawq_queue_stats s;

    memset(&s, 0, sizeof(s));
    th_assert_ok(c, clawq_queue_stats_get(c, queue, &s));
    ck_assert_str_eq(s.name, queue);
    return s;
}

static void assert_depths(clawq_client *c, const char *queue, uint64_t ready,
                          uint64_t delayed, uint64_t leased, uint64_t dead)
{
    clawq_queue_stats s = stats(c, queue);

    ck_assert_uint_eq(s.ready, ready);
    ck_assert_uint_eq(s.delayed, delayed);
    ck_assert_uint_eq(s.leased, leased);
    ck_assert_uint_eq(s.dead, dead);
}

static void queue_set(clawq_client *c, const char *queue, uint32_t mask,
                      uint32_t lease_ms, uint32_t backoff_base_ms,
                      uint64_t max_depth)
{
    clawq_queue_settings qs;

    memset(&qs, 0, sizeof(qs));
    qs.mask = mask;
    qs.lease_ms = lease_ms;
    qs.backoff_base_ms = backoff_base_ms;
    qs.max_depth = max_depth;
    th_assert_ok(c, clawq_queue_set(c, queue, &qs));
}

/* ---- put, pull, ack ---- */

START_TEST(test_put_pull_ack)
{
    clawq_queue_stats s;
    clawq_task *t;
    uint64_t id = put(C, "jobs", "hello");

    s = stats(C, "jobs");
    ck_assert_uint_eq(s.ready, 1);
    ck_assert_uint_eq(s.leased, 0);
    ck_assert_uint_eq(s.put_total, 1);
    ck_assert_uint_gt(s.oldest_ready_ms, 0);

    t = pull_one(C, "jobs", 0);
    ck_assert_uint_eq(t[0].id, id);
    ck_assert_str_eq(t[0].queue, "jobs");
    ck_assert_uint_eq(t[0].payload_len, 5);
    ck_assert_mem_eq(t[0].payload, "hello", 5);
    ck_assert_uint_eq(t[0].attempt, 1);
    ck_assert_int_eq(t[0].state, CLAWQ_STATE_LEASED);
    ck_assert_uint_gt(t[0].lease_id, 0);
    ck_assert_uint_gt(t[0].lease_expires_ms, 0);
    s = stats(C, "jobs");
    ck_assert_uint_eq(s.ready, 0);
    ck_assert_uint_eq(s.leased, 1);
    ck_assert_uint_eq(s.leased_total, 1);
    ck_assert_uint_eq(s.oldest_ready_ms, 0);
    pull_none(C, "jobs");

    th_assert_ok(C, clawq_ack(C, id, t[0].lease_id));
    s = stats(C, "jobs");
    ck_assert_uint_eq(s.ready, 0);
    ck_assert_uint_eq(s.leased, 0);
    ck_assert_uint_eq(s.acked_total, 1);
    ck_assert_uint_eq(s.put_total, 1);
    /* Done means gone: a second ack is fenced, the task is not found. */
    ck_assert_int_eq(clawq_ack(C, id, t[0].lease_id), CLAWQ_ELEASE_LOST);
    {
        clawq_task *g = NULL;
        ck_assert_int_eq(clawq_task_get(C, id, &g), CLAWQ_ENOT_FOUND);
    }
    pull_none(C, "jobs");
    clawq_tasks_free(t);
}
END_TEST

/* Headers go through the broker as put: keys and values of every string
 * length format (up to 31 bytes, up to 255, longer), empty ones, in order;
 * headers past the broker's limit are refused and nothing is put. */
START_TEST(test_headers_round_trip)
{
    static char mid[200], big[1000], huge[9000];
    clawq_header h[4];
    clawq_put_task pt;
    clawq_put_result res;
    clawq_queue_stats s;
    clawq_task *t;
    size_t i;
    int rc;

    memset(mid, 'm', sizeof(mid) - 1);
    memset(big, 'b', sizeof(big) - 1);
    memset(huge, 'h', sizeof(huge) - 1);
    h[0] = (clawq_header){"trace-id", "abc123"};
    h[1] = (clawq_header){mid, big};
    h[2] = (clawq_header){"empty", ""};
    h[3] = (clawq_header){"", "no key"};
    clawq_put_task_init(&pt);
    pt.payload = "x";
    pt.payload_len = 1;
    pt.headers = h;
    pt.n_headers = 4;
    th_assert_ok(C, clawq_put_batch(C, "hdr", &pt, 1, &res));
    t = pull_one(C, "hdr", 0);
    ck_assert_uint_eq(t[0].n_headers, 4);
    for (i = 0; i < 4; i++) {
        ck_assert_str_eq(t[0].headers[i].key, h[i].key);
        ck_assert_str_eq(t[0].headers[i].value, h[i].value);
    }
    th_assert_ok(C, clawq_ack(C, t[0].id, t[0].lease_id));
    clawq_tasks_free(t);

    h[1].value = huge; /* past the 8 KiB of encoded headers */
    rc = clawq_put_batch(C, "hdr", &pt, 1, &res);
    ck_assert_int_ne(rc, 0);
    if (rc > 0)
        ck_assert_int_lt(res.status, 0);
    s = stats(C, "hdr");
    ck_assert_uint_eq(s.put_total, 1);
    ck_assert_uint_eq(s.ready, 0);
}
END_TEST

/* ---- nack ---- */

START_TEST(test_nack_redelivers)
{
    clawq_task *t1, *t2;
    clawq_queue_stats s;
    uint64_t id = put(C, "jobs", "again");

    t1 = pull_one(C, "jobs", 0);
    th_assert_ok(C, clawq_nack(C, id, t1[0].lease_id, 0, "transient"));
    s = stats(C, "jobs");
    ck_assert_uint_eq(s.ready, 1);
    ck_assert_uint_eq(s.leased, 0);
    ck_assert_uint_eq(s.nacked_total, 1);

    t2 = pull_one(C, "jobs", 0);
    ck_assert_uint_eq(t2[0].id, id);
    ck_assert_uint_eq(t2[0].attempt, 2);
    ck_assert_uint_gt(t2[0].lease_id, t1[0].lease_id);
    ck_assert_mem_eq(t2[0].payload, "again", 5);
    ck_assert_uint_ge(t2[0].n_errors, 1);
    ck_assert_str_eq(t2[0].errors[0].message, "transient");
    ck_assert_uint_eq(t2[0].errors[0].attempt, 1);
    /* The first lease is fenced off. */
    ck_assert_int_eq(clawq_ack(C, id, t1[0].lease_id), CLAWQ_ELEASE_LOST);
    th_assert_ok(C, clawq_ack(C, id, t2[0].lease_id));
    clawq_tasks_free(t1);
    clawq_tasks_free(t2);
}
END_TEST

/* ---- fail, dead-letter queue, replay ---- */

START_TEST(test_fail_dlq_replay)
{
    clawq_task *t, *dead = NULL, *shown = NULL, *again;
    clawq_queue_stats s;
    clawq_dlq_filter f;
    uint64_t id = put(C, "jobs", "poison"), count = 0;
    size_t n = 0;

    put(C, "other", "unrelated");
    t = pull_one(C, "jobs", 0);
    th_assert_ok(C, clawq_fail(C, id, t[0].lease_id, "bad input: x"));
    s = stats(C, "jobs");
    ck_assert_uint_eq(s.ready, 0);
    ck_assert_uint_eq(s.leased, 0);
    ck_assert_uint_eq(s.dead, 1);
    ck_assert_uint_eq(s.failed_total, 1);
    ck_assert_uint_eq(s.dead_total, 1);
    pull_none(C, "jobs");

    /* list */
    th_assert_ok(C, clawq_dlq_list(C, "jobs", NULL, 0, 0, &dead, &n));
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(dead[0].id, id);
    ck_assert_int_eq(dead[0].state, CLAWQ_STATE_DEAD);
    ck_assert_str_eq(dead[0].dead_reason, "failed");
    ck_assert_uint_gt(dead[0].dead_at_ms, 0);
    ck_assert_uint_ge(dead[0].n_errors, 1);
    ck_assert_str_eq(dead[0].errors[0].message, "bad input: x");
    ck_assert_mem_eq(dead[0].payload, "poison", 6);
    clawq_tasks_free(dead);
    dead = NULL;
    /* a filter that matches nothing */
    memset(&f, 0, sizeof(f));
    f.error_contains = "no such text";
    th_assert_ok(C, clawq_dlq_list(C, "jobs", &f, 0, 0, &dead, &n));
    ck_assert_uint_eq(n, 0);
    clawq_tasks_free(dead);
    /* the other queue's DLQ is empty */
    dead = NULL;
    th_assert_ok(C, clawq_dlq_list(C, "other", NULL, 0, 0, &dead, &n));
    ck_assert_uint_eq(n, 0);
    clawq_tasks_free(dead);

    /* show */
    th_assert_ok(C, clawq_task_get(C, id, &shown));
    ck_assert_uint_eq(shown[0].id, id);
    ck_assert_int_eq(shown[0].state, CLAWQ_STATE_DEAD);
    ck_assert_str_eq(shown[0].dead_reason, "failed");
    ck_assert_uint_eq(shown[0].attempt, 1);
    clawq_tasks_free(shown);

    /* replay, by error text */
    memset(&f, 0, sizeof(f));
    f.error_contains = "bad input";
    th_assert_ok(C, clawq_dlq_replay(C, "jobs", &f, &count));
    ck_assert_uint_eq(count, 1);
    assert_depths(C, "jobs", 1, 0, 0, 0);
    again = pull_one(C, "jobs", 0);
    ck_assert_uint_eq(again[0].id, id);
    ck_assert_uint_eq(again[0].attempt, 1); /* reset to 0, then delivered */
    th_assert_ok(C, clawq_ack(C, id, again[0].lease_id));
    assert_depths(C, "jobs", 0, 0, 0, 0);
    clawq_tasks_free(again);
    clawq_tasks_free(t);
}
END_TEST

/* ---- lease expiry, checkpoint ---- */

START_TEST(test_lease_expiry_checkpoint)
{
    clawq_task *t1, *t2;
    clawq_queue_stats s;
    uint64_t id, exp1 = 0, t0;

    queue_set(C, "agents", CLAWQ_SET_LEASE_MS | CLAWQ_SET_BACKOFF_BASE_MS, 400,
              0, 0);
    id = put(C, "agents", "long job");
    t1 = pull_one(C, "agents", 0);
    ck_assert_uint_eq(t1[0].attempt, 1);
    ck_assert_int_eq(t1[0].has_checkpoint, false);

    /* Heartbeat with a checkpoint: the lease is extended. */
    th_sleep_ms(200);
    th_assert_ok(
        C, clawq_extend(C, id, t1[0].lease_id, 1000, 3, "step-3", 6, &exp1));
    ck_assert_uint_gt(exp1, t1[0].lease_expires_ms);
    th_sleep_ms(400); /* past the first expiry, well within the new one */
    s = stats(C, "agents");
    ck_assert_uint_eq(s.leased, 1);
    ck_assert_uint_eq(s.expired_total, 0);

    /* The worker dies: the lease runs out and the next worker resumes. */
    t0 = th_now_ms();
    t2 = pull_one(C, "agents", 5000);
    fprintf(stderr, "lease_expiry: redelivered after %llu ms\n",
            (unsigned long long)(th_now_ms() - t0));
    ck_assert_uint_eq(t2[0].id, id);
    ck_assert_uint_eq(t2[0].attempt, 2);
    ck_assert_uint_gt(t2[0].lease_id, t1[0].lease_id);
    ck_assert_int_eq(t2[0].has_checkpoint, true);
    ck_assert_uint_eq(t2[0].checkpoint_len, 6);
    ck_assert_mem_eq(t2[0].checkpoint, "step-3", 6);
    ck_assert_uint_eq(t2[0].progress, 3);
    s = stats(C, "agents");
    ck_assert_uint_eq(s.expired_total, 1);
    ck_assert_uint_eq(s.leased, 1);
    th_assert_ok(C, clawq_ack(C, id, t2[0].lease_id));
    clawq_tasks_free(t1);
    clawq_tasks_free(t2);
}
END_TEST

START_TEST(test_stale_lease_rejected)
{
    clawq_task *t1, *t2, *g = NULL;
    uint64_t id;

    queue_set(C, "agents", CLAWQ_SET_LEASE_MS | CLAWQ_SET_BACKOFF_BASE_MS, 200,
              0, 0);
    id = put(C, "agents", "x");
    t1 = pull_one(C, "agents", 0);
    t2 = pull_one(C, "agents", 5000); /* after the first lease expired */
    ck_assert_uint_eq(t2[0].id, id);
    ck_assert_uint_eq(t2[0].attempt, 2);

    ck_assert_int_eq(clawq_ack(C, id, t1[0].lease_id), CLAWQ_ELEASE_LOST);
    ck_assert_int_eq(clawq_extend(C, id, t1[0].lease_id, 0, 1, "z", 1, NULL),
                     CLAWQ_ELEASE_LOST);
    ck_assert_int_eq(clawq_nack(C, id, t1[0].lease_id, 0, "stale"),
                     CLAWQ_ELEASE_LOST);
    ck_assert_int_eq(clawq_fail(C, id, t1[0].lease_id, "stale"),
                     CLAWQ_ELEASE_LOST);
    /* The task stays with its new holder, unchanged. */
    th_assert_ok(C, clawq_task_get(C, id, &g));
    ck_assert_int_eq(g[0].state, CLAWQ_STATE_LEASED);
    ck_assert_uint_eq(g[0].lease_id, t2[0].lease_id);
    ck_assert_int_eq(g[0].has_checkpoint, false);
    clawq_tasks_free(g);
    /* A lease id never issued for a task id never issued. */
    ck_assert_int_eq(clawq_ack(C, id + 1000, 1), CLAWQ_ENOT_FOUND);
    th_assert_ok(C,
                 clawq_extend(C, id, t2[0].lease_id, 10000, 0, NULL, 0, NULL));
    th_assert_ok(C, clawq_ack(C, id, t2[0].lease_id));
    clawq_tasks_free(t1);
    clawq_tasks_free(t2);
}
END_TEST

/* ---- long poll ---- */

struct producer {
    const th_broker *b;
    uint32_t delay_ms;
    uint64_t put_start_ms, put_done_ms;
    int rc;
    uint64_t applied_before; /* the broker's applied index before the put */
};

static void *producer_main(void *arg)
{
    struct producer *p = arg;
    clawq_client *c = NULL;
    clawq_options o;
    clawq_put_task t;
    uint64_t id;

    clawq_options_init(&o);
    o.request_timeout_ms = 10000;
    p->rc = clawq_connect(p->b->endpoint, &o, &c);
    if (p->rc != 0)
        return NULL;
    th_sleep_ms(p->delay_ms);
    {
        clawq_cluster_status st;
        if (clawq_cluster_status_get(c, 0, &st) == 0)
            p->applied_before = st.applied_index;
    }
    clawq_put_task_init(&t);
    t.payload = "wake";
    t.payload_len = 4;
    p->put_start_ms = th_now_ms();
    p->rc = clawq_put(c, "poll", &t, &id, NULL);
    p->put_done_ms = th_now_ms();
    clawq_close(c);
    return NULL;
}

START_TEST(test_long_poll_wakes_on_put)
{
    struct producer p = {B, 300, 0, 0, -1, 0};
    clawq_cluster_status st;
    pthread_t th;
    clawq_task *t = NULL;
    size_t n = 0;
    uint64_t t0, t1, latency;

    /* The queue exists and is empty. */
    put(C, "poll", "first");
    clawq_tasks_free(pull_one(C, "poll", 0));

    ck_assert_int_eq(pthread_create(&th, NULL, producer_main, &p), 0);
    t0 = th_now_ms();
    th_assert_ok(C, clawq_pull(C, "poll", 1, 2000, 0, &t, &n));
    t1 = th_now_ms();
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(p.rc, 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_mem_eq(t[0].payload, "wake", 4);
    latency = t1 - p.put_start_ms;
    fprintf(stderr,
            "long_poll: pull returned %llu ms after the put started "
            "(put took %llu ms, pull waited %llu ms)\n",
            (unsigned long long)latency,
            (unsigned long long)(p.put_done_ms - p.put_start_ms),
            (unsigned long long)(t1 - t0));
    ck_assert_uint_ge(t1, p.put_start_ms);
    ck_assert_uint_lt(latency, 200);
    clawq_tasks_free(t);
    /* The waiter's lease went into the put's own log entry (one entry,
     * one fsync), not into an entry after the put's apply. */
    th_assert_ok(C, clawq_cluster_status_get(C, 0, &st));
    ck_assert_uint_ne(p.applied_before, 0);
    ck_assert_uint_eq(st.applied_index, p.applied_before + 1);
}
END_TEST

/* A puller that disconnects while it waits is dropped: the next task goes
 * to a live worker, not to the dead connection. */
START_TEST(test_long_poll_disconnect)
{
    clawq_task *t = NULL;
    size_t n = 0;
    pid_t child;

    put(C, "gone", "first");
    clawq_tasks_free(pull_one(C, "gone", 0));
    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        clawq_client *c2 = NULL;
        if (clawq_connect(B->endpoint, NULL, &c2) != 0)
            _exit(2);
        clawq_pull(c2, "gone", 1, 20000, 0, &t, &n);
        _exit(0);
    }
    th_sleep_ms(300); /* the child waits in its long poll */
    ck_assert_int_eq(kill(child, SIGKILL), 0);
    ck_assert_int_eq(waitpid(child, NULL, 0), child);
    th_sleep_ms(100); /* the broker sees the close */
    put(C, "gone", "after");
    th_assert_ok(C, clawq_pull(C, "gone", 1, 0, 0, &t, &n));
    ck_assert_uint_eq(n, 1);
    ck_assert_mem_eq(t[0].payload, "after", 5);
    clawq_tasks_free(t);
    ck_assert(th_broker_alive(B));
}
END_TEST

/* A pull whose tasks would not fit in one reply frame leases only what
 * fits; the rest stays ready (it used to lease them all and answer
 * TOO_LARGE, so the tasks sat leased to nobody). */
START_TEST(test_pull_reply_fits_frame)
{
    static char big[1000 * 1000];
    clawq_put_task t;
    clawq_queue_stats s;
    clawq_task *got = NULL;
    size_t n = 0;
    uint64_t id;

    memset(big, 'b', sizeof(big));
    clawq_put_task_init(&t);
    t.payload = big;
    t.payload_len = sizeof(big);
    for (int i = 0; i < 20; i++)
        th_assert_ok(C, clawq_put(C, "big", &t, &id, NULL));
    th_assert_ok(C, clawq_pull(C, "big", 20, 0, 0, &got, &n));
    fprintf(stderr, "pull of 20 x 1 MB: %zu tasks in one reply\n", n);
    ck_assert_uint_ge(n, 1);
    ck_assert_uint_lt(n, 20);
    s = stats(C, "big");
    ck_assert_uint_eq(s.leased, n);
    ck_assert_uint_eq(s.ready, 20 - n);
    clawq_tasks_free(got);
}
END_TEST

/* Many large pipelined batches in one loop turn (here 300 acks of 1024
 * ids: over the 65536 ops one log entry holds) are split into several
 * entries; none fails as a whole (they used to get TOO_LARGE). */
START_TEST(test_many_big_batches_in_one_turn)
{
    static clawq_lease_ref refs[1024];
    clawq_ticket tk;
    clawq_result r;
    size_t done = 0;

    for (size_t i = 0; i < 1024; i++) {
        refs[i].id = 1000000 + i; /* never issued: NOT_FOUND per item */
        refs[i].lease_id = 1;
    }
    for (int i = 0; i < 300; i++)
        th_assert_ok(C, clawq_ack_batch_async(C, refs, 1024, NULL, &tk));
    while (clawq_outstanding(C) > 0) {
        th_assert_ok(C, clawq_wait(C, 0, -1, &r));
        ck_assert_int_eq(r.status, 0);
        ck_assert_uint_eq(r.n, 1024);
        ck_assert_uint_eq(r.n_failed, 1024);
        ck_assert_int_eq(r.statuses[0], CLAWQ_ENOT_FOUND);
        clawq_result_free(&r);
        done++;
    }
    ck_assert_uint_eq(done, 300);
}
END_TEST

/* A worker that stops reporting for three report intervals no longer
 * counts (its connection stays open). */
START_TEST(test_silent_worker_stops_counting)
{
    th_broker *b2 = th_broker_start("--report-interval", "100ms", NULL);
    clawq_client *c = th_connect(b2);
    clawq_queue_stats s;

    put(c, "quiet", "x");
    th_assert_ok(c, clawq_report(c, "quiet", 0, 4));
    s = stats(c, "quiet");
    ck_assert_uint_eq(s.workers, 1);
    ck_assert_uint_eq(s.worker_capacity, 4);
    th_sleep_ms(450); /* > 3 intervals without a report */
    s = stats(c, "quiet");
    ck_assert_uint_eq(s.workers, 0);
    ck_assert_uint_eq(s.worker_capacity, 0);
    th_assert_ok(c, clawq_report(c, "quiet", 1, 4)); /* back again */
    s = stats(c, "quiet");
    ck_assert_uint_eq(s.workers, 1);
    clawq_close(c);
    ck_assert_int_eq(th_broker_stop(b2, 10000), 0);
    th_broker_free(b2);
}
END_TEST

/* A long-poller at its reported capacity waits without cost: applies stay
 * fast with 50,000 tasks ready. (Each apply used to wake it once per
 * ready task: puts were 12-15x slower.) */
START_TEST(test_capacity_waiter_costs_nothing)
{
    clawq_client *w = th_connect(B);
    clawq_ticket tk;
    clawq_put_task t;
    clawq_result r;
    uint64_t t0, elapsed, base, id;
    char one[] = "x";

    clawq_put_task_init(&t);
    t.payload = one;
    t.payload_len = 1;
    for (int i = 0; i < 50000; i++)
        ck_assert_int_ge(clawq_put_async(C, "deep", &t), 0);
    th_assert_ok(C, clawq_flush(C, NULL, 0));
    t0 = th_now_ms();
    for (int i = 0; i < 200; i++)
        th_assert_ok(C, clawq_put(C, "deep", &t, &id, NULL));
    base = th_now_ms() - t0;
    /* This worker holds all it can: its pull waits. */
    th_assert_ok(w, clawq_report(w, "deep", 0, 0));
    th_assert_ok(w, clawq_pull_async(w, "deep", 1, 20000, 0, NULL, &tk));
    th_sleep_ms(200);
    t0 = th_now_ms();
    for (int i = 0; i < 200; i++)
        th_assert_ok(C, clawq_put(C, "deep", &t, &id, NULL));
    elapsed = th_now_ms() - t0;
    fprintf(stderr,
            "200 puts with 50k ready: %llu ms alone, %llu ms with a waiter "
            "at capacity\n",
            (unsigned long long)base, (unsigned long long)elapsed);
    ck_assert_uint_lt(elapsed, 3 * base + 100);
    /* The waiter still gets its answer (empty, at capacity). */
    th_assert_ok(w, clawq_report(w, "deep", 0, 1));
    th_assert_ok(w, clawq_wait(w, tk, 30000, &r));
    ck_assert_int_eq(r.status, 0);
    clawq_result_free(&r);
    clawq_close(w);
}
END_TEST

START_TEST(test_long_poll_times_out)
{
    clawq_task *t = NULL;
    size_t n = 99;
    uint64_t t0, elapsed;

    put(C, "poll", "first");
    clawq_tasks_free(pull_one(C, "poll", 0));
    t0 = th_now_ms();
    th_assert_ok(C, clawq_pull(C, "poll", 5, 600, 0, &t, &n));
    elapsed = th_now_ms() - t0;
    fprintf(stderr, "long_poll timeout: empty after %llu ms (wait 600)\n",
            (unsigned long long)elapsed);
    ck_assert_uint_eq(n, 0);
    ck_assert_ptr_null(t);
    ck_assert_uint_ge(elapsed, 550);
    ck_assert_uint_lt(elapsed, 2000);
    /* The handle is still usable. */
    put(C, "poll", "after");
    clawq_tasks_free(pull_one(C, "poll", 0));
}
END_TEST

/* ---- pipelining ---- */

#define N_PIPELINED 1000

START_TEST(test_pipelined_puts)
{
    static clawq_put_result res[N_PIPELINED];
    char payload[32];
    clawq_put_task t;
    clawq_queue_stats s;

    clawq_put_task_init(&t);
    for (int i = 0; i < N_PIPELINED; i++) {
        int seq;
        snprintf(payload, sizeof(payload), "p%d", i);
        t.payload = payload;
        t.payload_len = strlen(payload);
        seq = clawq_put_async(C, "pipe", &t);
        ck_assert_msg(seq == i, "put_async %d returned %d (%s): %s", i, seq,
                      clawq_err_name(seq), clawq_errmsg(C));
    }
    ck_assert_uint_eq(clawq_pending(C), N_PIPELINED);
    memset(res, 0xff, sizeof(res));
    th_assert_ok(C, clawq_flush(C, res, N_PIPELINED));
    ck_assert_uint_eq(clawq_pending(C), 0);
    s = stats(C, "pipe");
    ck_assert_uint_eq(s.ready, N_PIPELINED);
    ck_assert_uint_eq(s.put_total, N_PIPELINED);
    /* Each result's id is the task with that put's payload, and the
     * tasks come out in the order they were put (FIFO). */
    for (int round = 0, next = 0; round < 10 && next < N_PIPELINED; round++) {
        size_t n = 0;
        clawq_task *p = pull(C, "pipe", 1000, 0, &n);
        for (size_t j = 0; j < n; j++, next++) {
            int k = atoi((const char *)p[j].payload + 1);
            ck_assert_msg(res[k].id == p[j].id,
                          "task %llu has payload p%d, whose put returned "
                          "id %llu",
                          (unsigned long long)p[j].id, k,
                          (unsigned long long)res[k].id);
            ck_assert_msg(k == next, "pull #%d is p%d (id %llu)", next, k,
                          (unsigned long long)p[j].id);
        }
        clawq_tasks_free(p);
    }
    /* On a mismatch, show where the ids jump. */
    for (int i = 1; i < N_PIPELINED; i++)
        if (res[i].id != res[i - 1].id + 1)
            fprintf(stderr, "pipelined: res[%d].id = %llu after %llu\n", i,
                    (unsigned long long)res[i].id,
                    (unsigned long long)res[i - 1].id);
    for (int i = 0; i < N_PIPELINED; i++) {
        ck_assert_int_eq(res[i].status, 0);
        ck_assert_uint_gt(res[i].id, 0);
        ck_assert_int_eq(res[i].duplicate, false);
        /* ids are assigned in apply order, which is send order here */
        if (i > 0)
            ck_assert_uint_gt(res[i].id, res[i - 1].id);
    }
    assert_depths(C, "pipe", 0, 0, N_PIPELINED, 0);
}
END_TEST

/* A client that connects as soon as Hello names a leader (right after a
 * start) gets its writes accepted, and a pipeline keeps its order. */
START_TEST(test_writes_right_after_start)
{
    static clawq_put_result res[50];
    char payload[32];
    clawq_put_task t;

    clawq_close(C);
    C = NULL;
    clawq_put_task_init(&t);
    for (int round = 0; round < 10; round++) {
        clawq_client *c;
        int rc;

        th_broker_kill(B);
        th_broker_restart_hello(B);
        c = th_connect(B);
        for (int i = 0; i < 50; i++) {
            snprintf(payload, sizeof(payload), "r%d-%d", round, i);
            t.payload = payload;
            t.payload_len = strlen(payload);
            ck_assert_int_eq(clawq_put_async(c, "early", &t), i);
        }
        rc = clawq_flush(c, res, 50);
        ck_assert_msg(rc == 0, "round %d: flush = %s: %s", round,
                      clawq_err_name(rc), clawq_errmsg(c));
        for (int i = 1; i < 50; i++)
            ck_assert_msg(res[i].id > res[i - 1].id,
                          "round %d: put %d got id %llu, put %d id %llu", round,
                          i - 1, (unsigned long long)res[i - 1].id, i,
                          (unsigned long long)res[i].id);
        clawq_close(c);
    }
}
END_TEST

/* ---- backpressure ---- */

START_TEST(test_queue_full)
{
    clawq_put_task t;
    uint64_t id = 0;
    int rc;

    queue_set(C, "small", CLAWQ_SET_MAX_DEPTH, 0, 0, 5);
    for (int i = 0; i < 5; i++)
        put(C, "small", "fits");
    clawq_put_task_init(&t);
    t.payload = "one too many";
    t.payload_len = 12;
    rc = clawq_put(C, "small", &t, &id, NULL);
    ck_assert_msg(rc == CLAWQ_EQUEUE_FULL, "6th put: %d (%s): %s", rc,
                  clawq_err_name(rc), clawq_errmsg(C));
    ck_assert_uint_eq(id, 0); /* out-params untouched on error */
    ck_assert_uint_gt(clawq_retry_after_ms(C), 0);
    assert_depths(C, "small", 5, 0, 0, 0);
    ck_assert_uint_eq(stats(C, "small").put_total, 5);
    /* Room again after one is done. */
    {
        clawq_task *p = pull_one(C, "small", 0);
        th_assert_ok(C, clawq_ack(C, p[0].id, p[0].lease_id));
        clawq_tasks_free(p);
    }
    put(C, "small", "fits again");
}
END_TEST

START_TEST(test_report_capacity)
{
    clawq_client *other;
    clawq_queue_stats s;
    clawq_task *t;
    size_t n, n2;

    for (int i = 0; i < 10; i++)
        put(C, "work", "w");
    th_assert_ok(C, clawq_report(C, "work", 0, 2));
    s = stats(C, "work");
    ck_assert_uint_eq(s.workers, 1);
    ck_assert_uint_eq(s.worker_capacity, 2);
    ck_assert_uint_eq(s.worker_inflight, 0);

    t = pull(C, "work", 10, 0, &n);
    fprintf(stderr, "report: capacity 2, pull max 10 leased %zu\n", n);
    ck_assert_uint_le(n, 2);
    ck_assert_uint_ge(n, 1);
    clawq_tasks_free(t);
    /* Still holding them: no more for this worker. */
    t = pull(C, "work", 10, 0, &n2);
    ck_assert_uint_le(n + n2, 2);
    clawq_tasks_free(t);

    /* The worker list shows it, with what it holds now. */
    {
        clawq_worker *w = NULL;
        size_t nw = 0;
        th_assert_ok(C, clawq_workers(C, "work", &w, &nw));
        ck_assert_uint_eq(nw, 1);
        ck_assert_uint_eq(w[0].capacity, 2);
        ck_assert_uint_eq(w[0].inflight, n);
        ck_assert_uint_lt(w[0].last_report_age_ms, 10000);
        clawq_workers_free(w);
    }

    /* Another connection, with no report, is not limited. */
    other = th_connect(B);
    t = pull(other, "work", 10, 0, &n2);
    ck_assert_uint_eq(n2, 10 - n);
    clawq_tasks_free(t);
    clawq_close(other);
}
END_TEST

/* ---- priorities and delays ---- */

START_TEST(test_priorities)
{
    uint64_t low = put_full(C, "prio", "low", 200, 0);
    uint64_t mid1 = put_full(C, "prio", "mid1", 128, 0);
    uint64_t urgent = put_full(C, "prio", "urgent", 0, 0);
    uint64_t mid2 = put_full(C, "prio", "mid2", 128, 0);
    uint64_t want[] = {urgent, mid1, mid2, low};
    clawq_task *t;
    size_t n;

    (void)low;
    for (int i = 0; i < 4; i++) {
        t = pull_one(C, "prio", 0);
        ck_assert_uint_eq(t[0].id, want[i]);
        clawq_tasks_free(t);
    }
    pull_none(C, "prio");

    /* The same order within one batch. */
    want[0] = put_full(C, "prio2", "c", 9, 0);
    want[1] = put_full(C, "prio2", "a", 1, 0);
    want[2] = put_full(C, "prio2", "b", 5, 0);
    t = pull(C, "prio2", 10, 0, &n);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(t[0].id, want[1]);
    ck_assert_uint_eq(t[1].id, want[2]);
    ck_assert_uint_eq(t[2].id, want[0]);
    ck_assert_uint_eq(t[0].priority, 1);
    clawq_tasks_free(t);
}
END_TEST

START_TEST(test_delay)
{
    clawq_task *t;
    uint64_t t0, id, waited;

    t0 = th_now_ms();
    id = put_full(C, "later", "delayed", CLAWQ_DEFAULT_PRIORITY, 300);
    assert_depths(C, "later", 0, 1, 0, 0);
    pull_none(C, "later");
    th_sleep_ms(100);
    if (th_now_ms() - t0 < 250) /* too slow a machine to tell otherwise */
        pull_none(C, "later");
    t = pull_one(C, "later", 3000);
    waited = th_now_ms() - t0;
    fprintf(stderr, "delay: 300 ms task pulled after %llu ms\n",
            (unsigned long long)waited);
    ck_assert_uint_eq(t[0].id, id);
    ck_assert_uint_ge(waited, 280);
    ck_assert_uint_lt(waited, 3000);
    assert_depths(C, "later", 0, 0, 1, 0);
    clawq_tasks_free(t);
}
END_TEST

/* ---- pause, resume, purge ---- */

START_TEST(test_pause_resume)
{
    clawq_task *t;
    uint64_t id = put(C, "pq", "x");

    th_assert_ok(C, clawq_pause(C, "pq"));
    ck_assert_int_eq(stats(C, "pq").settings.paused, true);
    pull_none(C, "pq");
    put(C, "pq", "y"); /* puts still land */
    assert_depths(C, "pq", 2, 0, 0, 0);
    th_assert_ok(C, clawq_resume(C, "pq"));
    ck_assert_int_eq(stats(C, "pq").settings.paused, false);
    t = pull_one(C, "pq", 0);
    ck_assert_uint_eq(t[0].id, id);
    clawq_tasks_free(t);
}
END_TEST

START_TEST(test_purge)
{
    clawq_task *t;
    uint64_t count = 0;

    put(C, "pg", "leased");
    t = pull_one(C, "pg", 0);
    put(C, "pg", "a");
    put(C, "pg", "b");
    put(C, "pg", "c");
    put_full(C, "pg", "d", CLAWQ_DEFAULT_PRIORITY, 60000);
    assert_depths(C, "pg", 3, 1, 1, 0);
    th_assert_ok(C, clawq_purge(C, "pg", &count));
    ck_assert_uint_eq(count, 4);
    assert_depths(C, "pg", 0, 0, 1, 0);
    pull_none(C, "pg");
    /* The leased task finishes normally. */
    th_assert_ok(C, clawq_ack(C, t[0].id, t[0].lease_id));
    assert_depths(C, "pg", 0, 0, 0, 0);
    clawq_tasks_free(t);
}
END_TEST

/* ---- clawqctl ---- */

/* True when JSON text has "key": followed by value (after optional
 * spaces). A string search, enough for flat fields. */
static bool json_has(const char *json, const char *key, const char *value)
{
    char k[128];
    const char *p = json;

    snprintf(k, sizeof(k), "\"%s\":", key);
    while ((p = strstr(p, k)) != NULL) {
        const char *v = p + strlen(k);
        while (*v == ' ')
            v++;
        if (strncmp(v, value, strlen(value)) == 0)
            return true;
        p++;
    }
    return false;
}

START_TEST(test_clawqctl)
{
    char out[16384], id_s[32], lease_s[32];
    unsigned long long id = 0, lease = 0;
    const char *p;

    /* usage errors: 2 */
    ck_assert_int_eq(th_ctl(B, NULL, 0, "no-such-command", NULL), 2);
    ck_assert_int_eq(th_ctl(B, NULL, 0, "stats", NULL), 2);
    ck_assert_int_eq(
        th_ctl(B, NULL, 0, "put", "q", "--priority", "999", "x", NULL), 2);
    /* broker errors: 1 */
    ck_assert_int_eq(th_ctl(B, NULL, 0, "stats", "no-such-queue", NULL), 1);
    /* nothing to pull: 3 */
    ck_assert_int_eq(th_ctl(B, NULL, 0, "pull", "empty", NULL), 3);

    /* put prints the id; --json {"id": N, "duplicate": false} */
    ck_assert_int_eq(th_ctl(B, out, sizeof(out), "put", "cq", "one", NULL), 0);
    ck_assert_uint_gt(strtoull(out, NULL, 10), 0);
    ck_assert_int_eq(
        th_ctl(B, out, sizeof(out), "--json", "put", "cq", "two", NULL), 0);
    ck_assert_msg(json_has(out, "duplicate", "false"), "put json: %s", out);
    ck_assert_msg(json_has(out, "id", ""), "put json: %s", out);

    ck_assert_int_eq(th_ctl(B, out, sizeof(out), "--json", "stats", "cq", NULL),
                     0);
    ck_assert_msg(json_has(out, "name", "\"cq\""), "stats json: %s", out);
    ck_assert_msg(json_has(out, "ready", "2"), "stats json: %s", out);
    ck_assert_msg(json_has(out, "put_total", "2"), "stats json: %s", out);
    ck_assert_msg(json_has(out, "paused", "false"), "stats json: %s", out);
    ck_assert_int_eq(th_ctl(B, out, sizeof(out), "--json", "queues", NULL), 0);
    ck_assert_msg(json_has(out, "name", "\"cq\""), "queues json: %s", out);

    /* pull --json, then fail the task by its id and lease_id */
    ck_assert_int_eq(th_ctl(B, out, sizeof(out), "--json", "pull", "cq", NULL),
                     0);
    ck_assert_msg(json_has(out, "payload", "\"one\""), "pull json: %s", out);
    ck_assert_msg(json_has(out, "attempt", "1"), "pull json: %s", out);
    p = strstr(out, "\"id\":");
    ck_assert_ptr_nonnull(p);
    id = strtoull(p + 5 + strspn(p + 5, " "), NULL, 10);
    p = strstr(out, "\"lease_id\":");
    ck_assert_ptr_nonnull(p);
    lease = strtoull(p + 11 + strspn(p + 11, " "), NULL, 10);
    ck_assert_uint_gt(id, 0);
    ck_assert_uint_gt(lease, 0);
    snprintf(id_s, sizeof(id_s), "%llu", id);
    snprintf(lease_s, sizeof(lease_s), "%llu", lease);
    ck_assert_int_eq(th_ctl(B, NULL, 0, "fail", id_s, lease_s, NULL), 0);
    /* the same lease again: LEASE_LOST is a broker error */
    ck_assert_int_eq(th_ctl(B, NULL, 0, "ack", id_s, lease_s, NULL), 1);

    /* the dead-letter queue */
    ck_assert_int_eq(
        th_ctl(B, out, sizeof(out), "--json", "dlq", "list", "cq", NULL), 0);
    ck_assert_msg(json_has(out, "dead_reason", "\"failed\""),
                  "dlq list json: %s", out);
    ck_assert_int_eq(
        th_ctl(B, out, sizeof(out), "--json", "dlq", "show", id_s, NULL), 0);
    ck_assert_msg(json_has(out, "state", "\"dead\""), "dlq show json: %s", out);
    ck_assert_int_eq(th_ctl(B, NULL, 0, "dlq", "show", "999999", NULL), 1);
    ck_assert_int_eq(
        th_ctl(B, out, sizeof(out), "--json", "dlq", "replay", "cq", NULL), 0);
    ck_assert_msg(json_has(out, "count", "1"), "dlq replay json: %s", out);

    /* queue set, pause: pull finds nothing (3), resume */
    ck_assert_int_eq(
        th_ctl(B, NULL, 0, "queue", "set", "cq", "max_depth=7", NULL), 0);
    ck_assert_int_eq(th_ctl(B, NULL, 0, "queue", "set", "cq", "bogus=1", NULL),
                     2);
    ck_assert_uint_eq(stats(C, "cq").settings.max_depth, 7);
    ck_assert_int_eq(th_ctl(B, NULL, 0, "pause", "cq", NULL), 0);
    ck_assert_int_eq(th_ctl(B, NULL, 0, "pull", "cq", NULL), 3);
    ck_assert_int_eq(th_ctl(B, NULL, 0, "resume", "cq", NULL), 0);
    ck_assert_int_eq(th_ctl(B, NULL, 0, "pull", "cq", "-n", "5", "--ack", NULL),
                     0);
    assert_depths(C, "cq", 0, 0, 0, 0);
    ck_assert_uint_eq(stats(C, "cq").acked_total, 2);
}
END_TEST

static Suite *lifecycle_suite(void)
{
    Suite *s = suite_create("lifecycle");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"put_pull_ack", test_put_pull_ack},
        {"headers_round_trip", test_headers_round_trip},
        {"nack_redelivers", test_nack_redelivers},
        {"fail_dlq_replay", test_fail_dlq_replay},
        {"lease_expiry_checkpoint", test_lease_expiry_checkpoint},
        {"stale_lease_rejected", test_stale_lease_rejected},
        {"long_poll_wakes_on_put", test_long_poll_wakes_on_put},
        {"long_poll_times_out", test_long_poll_times_out},
        {"pull_reply_fits_frame", test_pull_reply_fits_frame},
        {"capacity_waiter_costs_nothing", test_capacity_waiter_costs_nothing},
        {"silent_worker_stops_counting", test_silent_worker_stops_counting},
        {"many_big_batches_in_one_turn", test_many_big_batches_in_one_turn},
        {"long_poll_disconnect", test_long_poll_disconnect},
        {"pipelined_puts", test_pipelined_puts},
        {"writes_right_after_start", test_writes_right_after_start},
        {"queue_full", test_queue_full},
        {"report_capacity", test_report_capacity},
        {"priorities", test_priorities},
        {"delay", test_delay},
        {"pause_resume", test_pause_resume},
        {"purge", test_purge},
        {"clawqctl", test_clawqctl},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = th_tcase_new(cases[i].name, 30);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    return th_run_suite(lifecycle_suite());
}
