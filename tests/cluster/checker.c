/* checker.c: the load generator and consistency checker of the cluster
 * suite (tests/cluster/README.md). Test code only.
 *
 *   checker load --servers EPS [options]   producers + consumers, then
 *                                           drain and verify
 *   checker leader --servers EPS           the node leading now
 *   checker put --servers EP --key K       one put; --no-follow stays on EP
 *   checker failover --servers EPS --pid P kill -9 P (the leader), time the
 *                                           first acknowledged put after it
 *   checker digest --servers EPS           every node's state digest, once
 *                                           they applied the same index
 *
 * load: P producer and C consumer threads, each with its own libclawq
 * handle on the comma-separated endpoints (handles follow the leader).
 * Every task's payload and idempotency key are "cq<run>-p<producer>-<seq>",
 * so a consumer knows which put a task came from. A put answered with an
 * error is retried with the same key (a retry cannot store a second task)
 * until it is acknowledged or --give-up-ms passes; a put that finally
 * failed is "not acknowledged": it may or may not exist and is counted
 * apart. Consumers pull (lease --lease-ms), record each delivery, and ack
 * the pulled tasks in one batch, re-sending the batch while its outcome is
 * unknown (a second ack of the same lease cannot delete anything else).
 *
 * The record, kept under one mutex, has per task: the id its put was
 * acknowledged with, the ids it was delivered with, its deliveries, and
 * when an ack of it was acknowledged OK. Violations, each a failure:
 *
 *   lost         a put acknowledged OK whose task was never delivered by
 *                the end of the drain;
 *   resurrected  a task delivered by a pull that started after an ack of
 *                that task had been acknowledged OK (or found ready or
 *                leased at the end);
 *   duplicates   one key stored under two task ids;
 *   foreign      a delivered task whose payload is not this run's (e.g. a
 *                put refused by a partitioned minority that got committed
 *                anyway);
 *   leftover     tasks still in the queue after the drain;
 *   max gap      with --max-gap-ms, a client thread that went longer than
 *                that between two acknowledged requests.
 *
 * Redeliveries of a task whose ack was not acknowledged are legal
 * (at-least-once) and only counted.
 *
 * While --pause-file exists, no thread sends a request (after finishing
 * the one it is in), so the nodes can settle on one applied index (the
 * status file then says phase=paused); the pause is not counted as a
 * gap. The run stops when --stop-file appears or after --duration; producers
 * stop first, then consumers drain until every acknowledged put was
 * delivered and the queue is empty (bounded by --drain-ms). While it runs,
 * --status-file is rewritten every 100 ms with key=value counters, so a
 * driver can wait for progress.
 *
 * Exit status: 0 pass, 1 a violation or error, 2 usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "clawq.h"

#define PULL_MAX 32
#define PULL_WAIT_MS 200
#define N_ERR 19      /* -rc for rc in CLAWQ_EIO..CLAWQ_EINVALID, 0 = other */
#define MAX_REPORT 10 /* problem keys listed in detail */

typedef struct opts {
    const char *mode;
    const char *servers;
    const char *queue;
    const char *stop_file;
    const char *pause_file;
    const char *status_file;
    const char *key;
    uint32_t producers, consumers;
    uint32_t lease_ms, request_timeout_ms, give_up_ms, drain_ms;
    uint32_t duration_s, max_gap_ms, timeout_ms, rate;
    long pid;
    bool no_follow;
} opts;

enum { PUT_NONE = 0, PUT_ACKED = 1, PUT_FAILED = 2 };

/* One task of the record, indexed by (producer, seq). */
typedef struct entry {
    uint64_t id;        /* the first id seen, from the put or a delivery */
    uint64_t other_id;  /* a second, different id: a duplicate task */
    uint64_t ack_ok_ms; /* when an ack was acknowledged OK; 0 = never */
    uint32_t deliveries;
    uint8_t put; /* PUT_* */
} entry;

typedef struct table {
    entry *e;
    size_t cap;
} table;

typedef struct thread_stats {
    uint64_t last_ok_ms;   /* the last acknowledged request */
    uint64_t first_err_ms; /* start of the current error streak; 0 none */
    uint64_t max_gap_ms, max_gap_end_ms;
    uint64_t max_streak_ms;
} thread_stats;

typedef struct checker checker;

typedef struct worker {
    checker *k;
    uint32_t index;
    bool producer;
    clawq_client *c;
    pthread_t thread;
    thread_stats st;
    uint64_t seq; /* producers: tasks put so far */
} worker;

struct checker {
    opts o;
    uint32_t run;
    uint64_t t0_ms;
    pthread_mutex_t mu; /* guards tables and the counters below */
    table *tables;      /* one per producer */
    uint64_t puts_acked, puts_failed, puts_retried, puts_dup_answers;
    uint64_t delivered, redelivered, acks_ok, acks_refused;
    uint64_t acks_refused_by[N_ERR]; /* by -status */
    uint64_t acks_given_up;
    uint64_t resurrected, duplicates, foreign;
    char problems[MAX_REPORT][160];
    int n_problems;
    _Atomic uint64_t errors[N_ERR];
    atomic_bool stop_put, stop_pull;
    atomic_bool paused;      /* --pause-file exists */
    _Atomic uint32_t n_idle; /* threads waiting out a pause */
    worker *workers;
};

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n > 0 ? n : 1, size > 0 ? size : 1);

    if (p == NULL) {
        fprintf(stderr, "checker: out of memory\n");
        exit(1);
    }
    return p;
}

/* Notes a problem for the report (the first MAX_REPORT). Caller holds mu. */
static void problem(checker *k, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void problem(checker *k, const char *fmt, ...)
{
    va_list ap;

    if (k->n_problems >= MAX_REPORT)
        return;
    va_start(ap, fmt);
    vsnprintf(k->problems[k->n_problems++], sizeof(k->problems[0]), fmt, ap);
    va_end(ap);
}

static void count_error(checker *k, int rc)
{
    int i = -rc;

    atomic_fetch_add(&k->errors[i > 0 && i < N_ERR ? i : 0], 1);
}

/* The entry of (p, seq), growing the table as needed. Caller holds mu. */
static entry *entry_at(checker *k, uint32_t p, uint64_t seq)
{
    table *t = &k->tables[p];

    if (seq >= t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        entry *e;

        while (cap <= seq)
            cap *= 2;
        e = realloc(t->e, cap * sizeof(*e));
        if (e == NULL) {
            fprintf(stderr, "checker: out of memory\n");
            exit(1);
        }
        memset(e + t->cap, 0, (cap - t->cap) * sizeof(*e));
        t->e = e;
        t->cap = cap;
    }
    return &t->e[seq];
}

/* Records that (p, seq) was seen with task id; a second id is a
 * duplicate. Caller holds mu. */
static void see_id(checker *k, entry *e, uint32_t p, uint64_t seq, uint64_t id)
{
    if (e->id == 0) {
        e->id = id;
    } else if (e->id != id && e->other_id != id) {
        e->other_id = id;
        k->duplicates++;
        problem(k,
                "duplicate: p%u-%" PRIu64 " stored as ids %" PRIu64
                " and %" PRIu64,
                p, seq, e->id, id);
    }
}

static void ok_at(thread_stats *s, uint64_t t)
{
    uint64_t gap = t - s->last_ok_ms;

    if (gap > s->max_gap_ms) {
        s->max_gap_ms = gap;
        s->max_gap_end_ms = t;
    }
    if (s->first_err_ms != 0 && t - s->first_err_ms > s->max_streak_ms)
        s->max_streak_ms = t - s->first_err_ms;
    s->first_err_ms = 0;
    s->last_ok_ms = t;
}

static void err_at(thread_stats *s, uint64_t t)
{
    if (s->first_err_ms == 0)
        s->first_err_ms = t;
}

/* Connects a handle to servers, retrying for up to for_ms (0: one try);
 * prints the reason on failure. */
static int connect_retry(const char *servers, bool no_follow,
                         uint32_t request_timeout_ms, uint32_t for_ms,
                         clawq_client **out)
{
    clawq_options o;
    uint64_t end = now_ms() + for_ms;
    char err[256] = "";
    int rc;

    clawq_options_init(&o);
    o.connect_timeout_ms = 2000;
    o.request_timeout_ms = request_timeout_ms;
    o.client_name = "checker";
    o.no_follow = no_follow;
    for (;;) {
        rc = clawq_connect2(servers, &o, out, err, sizeof(err));
        if (rc == 0 || now_ms() >= end)
            break;
        sleep_ms(100);
    }
    if (rc != 0)
        fprintf(stderr, "checker: connect %s: %s: %s\n", servers,
                clawq_err_name(rc), err);
    return rc;
}

/* ---- load ---- */

/* While the run is paused (--pause-file), waits; the time paused is not
 * a gap. */
static void wait_pause(worker *w)
{
    checker *k = w->k;

    if (!atomic_load(&k->paused))
        return;
    atomic_fetch_add(&k->n_idle, 1);
    while (atomic_load(&k->paused) && !atomic_load(&k->stop_pull))
        sleep_ms(10);
    atomic_fetch_sub(&k->n_idle, 1);
    w->st.last_ok_ms = now_ms();
}

/* A producer thread: puts keyed tasks one at a time until stop_put,
 * re-sending each with its key until acknowledged or give_up_ms. */
static void *producer_main(void *arg)
{
    worker *w = arg;
    checker *k = w->k;
    char key[64];
    clawq_put_task t;

    w->st.last_ok_ms = now_ms();
    while (!atomic_load(&k->stop_put)) {
        uint64_t seq = w->seq, id = 0, start = now_ms();
        bool dup = false, retried = false;
        int rc;

        wait_pause(w);
        if (atomic_load(&k->stop_put))
            break;
        start = now_ms();
        if (k->o.rate > 0) { /* tasks/s per producer */
            uint64_t due = k->t0_ms + seq * 1000 / k->o.rate;
            if (due > start)
                sleep_ms((uint32_t)(due - start));
        }
        snprintf(key, sizeof(key), "cq%u-p%u-%" PRIu64, k->run, w->index, seq);
        clawq_put_task_init(&t);
        t.payload = key;
        t.payload_len = strlen(key);
        t.idempotency_key = key;
        for (;;) {
            uint64_t now;

            rc = clawq_put(w->c, k->o.queue, &t, &id, &dup);
            now = now_ms();
            if (rc == 0) {
                ok_at(&w->st, now);
                break;
            }
            count_error(k, rc);
            err_at(&w->st, now);
            if (now - start >= k->o.give_up_ms)
                break;
            retried = true;
            sleep_ms(20);
        }
        pthread_mutex_lock(&k->mu);
        {
            entry *e = entry_at(k, w->index, seq);
            if (rc == 0) {
                e->put = PUT_ACKED;
                k->puts_acked++;
                k->puts_dup_answers += dup;
                see_id(k, e, w->index, seq, id);
            } else {
                e->put = PUT_FAILED;
                k->puts_failed++;
            }
            k->puts_retried += retried;
        }
        pthread_mutex_unlock(&k->mu);
        w->seq++;
    }
    return NULL;
}

/* Parses "cq<run>-p<p>-<seq>"; false for anything else or another run. */
static bool parse_key(const checker *k, const clawq_task *t, uint32_t *p,
                      uint64_t *seq)
{
    unsigned run, pp;
    unsigned long long s;
    char tail;

    if (t->payload_len == 0 || t->payload_len > 63)
        return false;
    if (sscanf((const char *)t->payload, "cq%u-p%u-%llu%c", &run, &pp, &s,
               &tail) != 3)
        return false;
    if (run != k->run || pp >= k->o.producers)
        return false;
    *p = pp;
    *seq = s;
    return true;
}

/* Records the deliveries of one pull that started at pull_ms. */
static void record_pull(checker *k, const clawq_task *tasks, size_t n,
                        uint64_t pull_ms)
{
    pthread_mutex_lock(&k->mu);
    for (size_t i = 0; i < n; i++) {
        uint32_t p;
        uint64_t seq;
        entry *e;

        if (!parse_key(k, &tasks[i], &p, &seq)) {
            k->foreign++;
            problem(k, "foreign task id %" PRIu64 " payload '%.60s'",
                    tasks[i].id, (const char *)tasks[i].payload);
            continue;
        }
        e = entry_at(k, p, seq);
        see_id(k, e, p, seq, tasks[i].id);
        if (e->deliveries++ == 0)
            k->delivered++;
        else
            k->redelivered++;
        if (e->ack_ok_ms != 0 && pull_ms > e->ack_ok_ms) {
            k->resurrected++;
            problem(k,
                    "resurrected: p%u-%" PRIu64 " id %" PRIu64
                    " delivered (attempt %u) by a pull at +%" PRIu64
                    " ms after its ack was acknowledged at +%" PRIu64 " ms",
                    p, seq, tasks[i].id, tasks[i].attempt, pull_ms - k->t0_ms,
                    e->ack_ok_ms - k->t0_ms);
        }
    }
    pthread_mutex_unlock(&k->mu);
}

/* Records the outcome of an ack of tasks[0..n): statuses NULL when the
 * request never got an answer. A refusal after a re-sent ack (NOT_FOUND:
 * the first one deleted the task) is counted, not judged. */
static void record_acks(checker *k, const clawq_task *tasks, size_t n,
                        const int *statuses, uint64_t at)
{
    pthread_mutex_lock(&k->mu);
    for (size_t j = 0; j < n; j++) {
        uint32_t p;
        uint64_t seq;

        if (!parse_key(k, &tasks[j], &p, &seq))
            continue;
        if (statuses == NULL) {
            k->acks_given_up++;
        } else if (statuses[j] == 0) {
            entry *e = entry_at(k, p, seq);
            k->acks_ok++;
            if (e->ack_ok_ms == 0)
                e->ack_ok_ms = at;
        } else {
            int code = -statuses[j];
            k->acks_refused++; /* LEASE_LOST / NOT_FOUND: may come back */
            k->acks_refused_by[code > 0 && code < N_ERR ? code : 0]++;
        }
    }
    pthread_mutex_unlock(&k->mu);
}

/* A consumer thread: pulls, records the deliveries and acks each pull in
 * one batch, until stop_pull. */
static void *consumer_main(void *arg)
{
    worker *w = arg;
    checker *k = w->k;
    clawq_lease_ref refs[PULL_MAX];
    int statuses[PULL_MAX];

    w->st.last_ok_ms = now_ms();
    while (!atomic_load(&k->stop_pull)) {
        clawq_task *tasks = NULL;
        size_t n = 0;
        uint64_t start, now;
        int rc;

        wait_pause(w);
        start = now_ms();
        rc = clawq_pull(w->c, k->o.queue, PULL_MAX, PULL_WAIT_MS, k->o.lease_ms,
                        &tasks, &n);

        now = now_ms();
        if (rc != 0) {
            count_error(k, rc);
            err_at(&w->st, now);
            sleep_ms(20);
            continue;
        }
        ok_at(&w->st, now);
        if (n == 0)
            continue;
        record_pull(k, tasks, n, start);
        for (size_t i = 0; i < n; i++) {
            refs[i].id = tasks[i].id;
            refs[i].lease_id = tasks[i].lease_id;
        }
        /* Re-send while the outcome is unknown: acking the same lease
         * again is harmless. */
        start = now_ms();
        for (;;) {
            rc = clawq_ack_batch(w->c, refs, n, statuses);
            now = now_ms();
            if (rc >= 0) {
                ok_at(&w->st, now);
                break;
            }
            count_error(k, rc);
            err_at(&w->st, now);
            if (now - start >= k->o.give_up_ms)
                break;
            sleep_ms(20);
        }
        record_acks(k, tasks, n, rc >= 0 ? statuses : NULL, now);
        clawq_tasks_free(tasks);
    }
    return NULL;
}

/* The longest gap between two acknowledged requests of any producer (or
 * consumer) thread; *who and *end say which thread and when it ended. */
static uint64_t max_gap(const checker *k, bool producers, int *who,
                        uint64_t *end)
{
    uint64_t m = 0;
    uint32_t n = k->o.producers + k->o.consumers;

    for (uint32_t i = 0; i < n; i++) {
        const worker *w = &k->workers[i];
        if (w->producer != producers || w->st.max_gap_ms < m)
            continue;
        m = w->st.max_gap_ms;
        *who = (int)w->index;
        *end = w->st.max_gap_end_ms;
    }
    return m;
}

/* Rewrites --status-file (atomically, by rename) with the counters. */
static void write_status(checker *k, const char *phase)
{
    char tmp[4096];
    FILE *f;
    uint64_t puts, failed, acks, errs = 0;
    int who = -1;
    uint64_t end = 0, gap;

    if (k->o.status_file == NULL)
        return;
    pthread_mutex_lock(&k->mu);
    puts = k->puts_acked;
    failed = k->puts_failed;
    acks = k->acks_ok;
    pthread_mutex_unlock(&k->mu);
    for (int i = 0; i < N_ERR; i++)
        errs += atomic_load(&k->errors[i]);
    gap = max_gap(k, true, &who, &end); /* racy read: progress only */
    snprintf(tmp, sizeof(tmp), "%s.tmp", k->o.status_file);
    f = fopen(tmp, "w");
    if (f == NULL)
        return;
    if (strcmp(phase, "load") == 0 && atomic_load(&k->paused))
        phase = atomic_load(&k->n_idle) == k->o.producers + k->o.consumers
                    ? "paused"
                    : "pausing";
    fprintf(f,
            "phase=%s elapsed_ms=%" PRIu64 " puts_acked=%" PRIu64
            " puts_failed=%" PRIu64 " acks_ok=%" PRIu64 " errors=%" PRIu64
            " max_put_gap_ms=%" PRIu64 "\n",
            phase, now_ms() - k->t0_ms, puts, failed, acks, errs, gap);
    fclose(f);
    rename(tmp, k->o.status_file);
}

/* Ready + delayed + leased of the queue as the leader sees it, or -1. */
static int64_t backlog(clawq_client *c, const char *queue, clawq_queue_stats *s)
{
    int rc = clawq_queue_stats_get(c, queue, s);

    if (rc == CLAWQ_ENOT_FOUND) {
        memset(s, 0, sizeof(*s));
        return 0;
    }
    if (rc != 0)
        return -1;
    return (int64_t)(s->ready + s->delayed + s->leased);
}

/* Acknowledged puts not delivered yet. Caller holds mu. */
static uint64_t undelivered(const checker *k)
{
    uint64_t n = 0;

    for (uint32_t p = 0; p < k->o.producers; p++)
        for (size_t s = 0; s < k->tables[p].cap; s++)
            n += k->tables[p].e[s].put == PUT_ACKED &&
                 k->tables[p].e[s].deliveries == 0;
    return n;
}

/* Lists what is left in the queue; counts resurrected acks among it. */
static void inspect_leftover(checker *k, clawq_client *mon)
{
    static const clawq_task_state states[] = {
        CLAWQ_STATE_READY, CLAWQ_STATE_LEASED, CLAWQ_STATE_DELAYED};

    for (size_t si = 0; si < 3; si++) {
        clawq_task *tasks = NULL;
        size_t n = 0;

        if (clawq_peek(mon, k->o.queue, states[si], 1000, &tasks, &n) != 0)
            continue;
        pthread_mutex_lock(&k->mu);
        for (size_t i = 0; i < n; i++) {
            uint32_t p;
            uint64_t seq;
            bool acked = false;

            if (parse_key(k, &tasks[i], &p, &seq))
                acked = entry_at(k, p, seq)->ack_ok_ms != 0;
            if (acked)
                k->resurrected++;
            problem(k, "left in the queue: id %" PRIu64 " '%.40s' %s%s",
                    tasks[i].id, (const char *)tasks[i].payload,
                    clawq_task_state_name(tasks[i].state),
                    acked ? " (its ack was acknowledged: resurrected)" : "");
        }
        pthread_mutex_unlock(&k->mu);
        clawq_tasks_free(tasks);
    }
}

/* For the lost tasks (up to MAX_REPORT), what the cluster says of them. */
static void report_lost(checker *k, clawq_client *mon)
{
    int shown = 0;

    for (uint32_t p = 0; p < k->o.producers; p++) {
        for (size_t s = 0; s < k->tables[p].cap && shown < MAX_REPORT; s++) {
            const entry *e = &k->tables[p].e[s];
            clawq_task *t = NULL;
            int rc;

            if (e->put != PUT_ACKED || e->deliveries != 0)
                continue;
            rc = clawq_task_get(mon, e->id, &t);
            fprintf(stderr,
                    "checker: LOST cq%u-p%u-%zu id %" PRIu64 ": task get: %s",
                    k->run, p, s, e->id, clawq_err_name(rc));
            if (rc == 0)
                fprintf(stderr, " state=%s attempt=%u",
                        clawq_task_state_name(t->state), t->attempt);
            fprintf(stderr, "\n");
            clawq_tasks_free(t);
            shown++;
        }
    }
}

static bool stop_requested(const checker *k, uint64_t start)
{
    struct stat st;

    if (k->o.stop_file != NULL && stat(k->o.stop_file, &st) == 0)
        return true;
    return now_ms() - start >= (uint64_t)k->o.duration_s * 1000;
}

/* The load mode: runs the threads until the stop file or --duration,
 * drains, verifies the record and prints the summary. 0 = pass. */
static int run_load(checker *k)
{
    uint32_t n = k->o.producers + k->o.consumers;
    clawq_client *mon = NULL;
    clawq_queue_stats qs;
    uint64_t drain_start, drain_end, gap_p, gap_c, gap_end_p = 0, gap_end_c = 0,
                                                   streak = 0, lost;
    int64_t left = -1;
    int who_p = -1, who_c = -1, fails = 0;

    k->tables = xcalloc(k->o.producers, sizeof(*k->tables));
    k->workers = xcalloc(n, sizeof(*k->workers));
    pthread_mutex_init(&k->mu, NULL);
    if (connect_retry(k->o.servers, false, k->o.request_timeout_ms, 30000,
                      &mon) != 0)
        return 1;
    for (uint32_t i = 0; i < n; i++) {
        worker *w = &k->workers[i];
        w->k = k;
        w->producer = i < k->o.producers;
        w->index = w->producer ? i : i - k->o.producers;
        if (connect_retry(k->o.servers, false, k->o.request_timeout_ms, 30000,
                          &w->c) != 0)
            goto close_handles;
    }
    k->t0_ms = now_ms();
    for (uint32_t i = 0; i < n; i++) {
        worker *w = &k->workers[i];
        if (pthread_create(&w->thread, NULL,
                           w->producer ? producer_main : consumer_main,
                           w) != 0) {
            fprintf(stderr, "checker: pthread_create failed\n");
            exit(1);
        }
    }
    while (!stop_requested(k, k->t0_ms)) {
        struct stat st;

        atomic_store(&k->paused, k->o.pause_file != NULL &&
                                     stat(k->o.pause_file, &st) == 0);
        write_status(k, "load");
        sleep_ms(100);
    }
    /* Producers first: each finishes the put it is in (retries
     * included). Then drain. */
    atomic_store(&k->stop_put, true);
    atomic_store(&k->paused, false);
    write_status(k, "stopping");
    for (uint32_t i = 0; i < k->o.producers; i++)
        pthread_join(k->workers[i].thread, NULL);
    drain_start = now_ms();
    drain_end = drain_start + k->o.drain_ms;
    for (int turn = 0;; turn++) {
        uint64_t u;

        write_status(k, "drain");
        pthread_mutex_lock(&k->mu);
        u = undelivered(k);
        pthread_mutex_unlock(&k->mu);
        left = backlog(mon, k->o.queue, &qs);
        if ((u == 0 && left == 0) || now_ms() >= drain_end)
            break;
        if (turn % 5 == 4)
            printf("checker: draining %" PRIu64 " ms: undelivered=%" PRIu64
                   " ready=%" PRIu64 " leased=%" PRIu64 " delayed=%" PRIu64
                   "\n",
                   now_ms() - drain_start, u, left >= 0 ? qs.ready : 0,
                   left >= 0 ? qs.leased : 0, left >= 0 ? qs.delayed : 0);
        sleep_ms(200);
    }
    printf("checker: drained in %" PRIu64 " ms\n", now_ms() - drain_start);
    atomic_store(&k->stop_pull, true);
    for (uint32_t i = k->o.producers; i < n; i++)
        pthread_join(k->workers[i].thread, NULL);
    write_status(k, "verify");

    left = backlog(mon, k->o.queue, &qs);
    if (left != 0)
        inspect_leftover(k, mon);
    lost = undelivered(k);
    if (lost > 0)
        report_lost(k, mon);
    gap_p = max_gap(k, true, &who_p, &gap_end_p);
    gap_c = max_gap(k, false, &who_c, &gap_end_c);
    for (uint32_t i = 0; i < n; i++)
        if (k->workers[i].st.max_streak_ms > streak)
            streak = k->workers[i].st.max_streak_ms;

    printf("checker: run=%u elapsed_ms=%" PRIu64 " producers=%u consumers=%u\n",
           k->run, now_ms() - k->t0_ms, k->o.producers, k->o.consumers);
    printf("checker: puts_acked=%" PRIu64 " puts_failed=%" PRIu64
           " puts_retried=%" PRIu64 " puts_answered_by_key=%" PRIu64 "\n",
           k->puts_acked, k->puts_failed, k->puts_retried, k->puts_dup_answers);
    printf("checker: delivered=%" PRIu64 " redelivered=%" PRIu64
           " acks_ok=%" PRIu64 " acks_refused=%" PRIu64 " acks_unknown=%" PRIu64
           "\n",
           k->delivered, k->redelivered, k->acks_ok, k->acks_refused,
           k->acks_given_up);
    printf("checker: acks refused by status:");
    for (int i = 0; i < N_ERR; i++)
        if (k->acks_refused_by[i] > 0)
            printf(" %s=%" PRIu64, i ? clawq_err_name(-i) : "OTHER",
                   k->acks_refused_by[i]);
    printf("\n");
    printf("checker: lost=%" PRIu64 " resurrected=%" PRIu64
           " duplicates=%" PRIu64 " foreign=%" PRIu64 " leftover=%" PRId64 "\n",
           lost, k->resurrected, k->duplicates, k->foreign, left);
    printf("checker: max_put_gap_ms=%" PRIu64
           " (producer %d, ended at +%" PRIu64 " ms) max_pull_gap_ms=%" PRIu64
           " (consumer %d, ended at +%" PRIu64
           " ms) max_error_streak_ms=%" PRIu64 "\n",
           gap_p, who_p, gap_end_p ? gap_end_p - k->t0_ms : 0, gap_c, who_c,
           gap_end_c ? gap_end_c - k->t0_ms : 0, streak);
    printf("checker: errors:");
    for (int i = 0; i < N_ERR; i++) {
        uint64_t e = atomic_load(&k->errors[i]);
        if (e > 0)
            printf(" %s=%" PRIu64, i ? clawq_err_name(-i) : "OTHER", e);
    }
    printf("\n");
    for (int i = 0; i < k->n_problems; i++)
        printf("checker: problem: %s\n", k->problems[i]);

    if (lost > 0 || k->resurrected > 0 || k->duplicates > 0 || k->foreign > 0 ||
        left != 0)
        fails++;
    if (k->puts_acked == 0) {
        printf("checker: FAIL: no put was acknowledged\n");
        fails++;
    }
    if (k->o.max_gap_ms > 0 &&
        (gap_p > k->o.max_gap_ms || gap_c > k->o.max_gap_ms)) {
        printf("checker: FAIL: a client went %" PRIu64
               " ms without an acknowledged request (limit %u ms)\n",
               gap_p > gap_c ? gap_p : gap_c, k->o.max_gap_ms);
        fails++;
    }
    for (uint32_t i = 0; i < n; i++)
        clawq_close(k->workers[i].c);
    clawq_close(mon);
    printf("checker: %s\n", fails ? "FAIL" : "PASS");
    return fails ? 1 : 0;

close_handles:
    for (uint32_t i = 0; i < n; i++)
        clawq_close(k->workers[i].c);
    clawq_close(mon);
    return 1;
}

/* ---- small modes ---- */

/* Prints the leader as the given endpoints see it (polls up to
 * --timeout-ms until one is known). */
static int run_leader(checker *k)
{
    uint64_t end = now_ms() + k->o.timeout_ms;
    clawq_options o;
    char err[256] = "";
    int rc;

    clawq_options_init(&o);
    o.connect_timeout_ms = 1000;
    o.request_timeout_ms = 2000;
    o.client_name = "checker";
    o.no_follow = k->o.no_follow;
    for (;;) {
        clawq_client *c = NULL;
        clawq_server_info info;

        rc = clawq_connect2(k->o.servers, &o, &c, err, sizeof(err));
        if (rc == 0)
            rc = clawq_server_info_get(c, &info);
        if (rc == 0 && info.leader_id != 0 &&
            (k->o.no_follow || info.node_id == info.leader_id)) {
            printf("leader_id=%u node_id=%u endpoint=%s leader=%s\n",
                   info.leader_id, info.node_id, info.endpoint, info.leader);
            clawq_close(c);
            return 0;
        }
        clawq_close(c);
        if (now_ms() >= end)
            break;
        sleep_ms(50);
    }
    fprintf(stderr, "checker: no leader via %s within %u ms: %s %s\n",
            k->o.servers, k->o.timeout_ms, clawq_err_name(rc), err);
    return 1;
}

/* One put of --key; prints its status. 0 only when acknowledged. */
static int run_put(checker *k)
{
    clawq_client *c = NULL;
    clawq_put_task t;
    uint64_t id = 0, start;
    int rc;

    rc = connect_retry(k->o.servers, k->o.no_follow, k->o.timeout_ms, 0, &c);
    if (rc != 0) {
        printf("status=%s ms=0\n", clawq_err_name(rc));
        return 1;
    }
    clawq_put_task_init(&t);
    t.payload = k->o.key;
    t.payload_len = strlen(k->o.key);
    t.idempotency_key = k->o.key;
    start = now_ms();
    rc = clawq_put(c, k->o.queue, &t, &id, NULL);
    printf("status=%s ms=%" PRIu64 " id=%" PRIu64 " msg=%s\n",
           clawq_err_name(rc), now_ms() - start, id, rc ? clawq_errmsg(c) : "");
    clawq_close(c);
    return rc == 0 ? 0 : 1;
}

/* Kills --pid (the leader the handle is connected to) and prints the
 * time until the next put is acknowledged. */
static int run_failover(checker *k)
{
    clawq_client *c = NULL;
    clawq_put_task t;
    clawq_server_info info;
    char key[64];
    uint64_t id, t0, end;
    int rc, attempts = 0, first_err = 0;

    if (connect_retry(k->o.servers, false, k->o.timeout_ms, 10000, &c))
        return 1;
    snprintf(key, sizeof(key), "fo%u-warm", k->run);
    clawq_put_task_init(&t);
    t.payload = key;
    t.payload_len = strlen(key);
    t.idempotency_key = key;
    rc = clawq_put(c, k->o.queue, &t, &id, NULL);
    if (rc == 0)
        rc = clawq_server_info_get(c, &info);
    if (rc != 0) {
        fprintf(stderr, "checker: warm-up put: %s %s\n", clawq_err_name(rc),
                clawq_errmsg(c));
        clawq_close(c);
        return 1;
    }
    snprintf(key, sizeof(key), "fo%u-after", k->run);
    t.payload_len = strlen(key);
    t0 = now_ms();
    if (kill((pid_t)k->o.pid, SIGKILL) != 0) {
        fprintf(stderr, "checker: kill %ld: %s\n", k->o.pid, strerror(errno));
        clawq_close(c);
        return 1;
    }
    end = t0 + k->o.timeout_ms;
    do {
        attempts++;
        rc = clawq_put(c, k->o.queue, &t, &id, NULL);
        if (rc != 0 && first_err == 0)
            first_err = rc;
    } while (rc != 0 && now_ms() < end);
    if (rc == 0) {
        uint64_t ms = now_ms() - t0;
        clawq_server_info_get(c, &info);
        printf("failover_ms=%" PRIu64 " attempts=%d first_error=%s "
               "new_leader=%u\n",
               ms, attempts, clawq_err_name(first_err), info.node_id);
    } else {
        printf("failover_ms=-1 attempts=%d error=%s msg=%s\n", attempts,
               clawq_err_name(rc), clawq_errmsg(c));
    }
    clawq_close(c);
    return rc == 0 ? 0 : 1;
}

#define MAX_NODES 9

/* Asks each endpoint (no leader following) for its status with the state
 * digest, until every node reports the same digest_index, one leader that
 * all agree on, and then compares the digests. */
static int run_digest(checker *k)
{
    char *list = strdup(k->o.servers), *save = NULL;
    const char *eps[MAX_NODES];
    clawq_client *cs[MAX_NODES] = {NULL};
    clawq_cluster_status st[MAX_NODES];
    int rcs[MAX_NODES];
    size_t n = 0;
    uint64_t end = now_ms() + k->o.timeout_ms;
    int result = 1;
    bool mismatch = false;

    for (char *t = strtok_r(list, ",", &save); t != NULL && n < MAX_NODES;
         t = strtok_r(NULL, ",", &save))
        eps[n++] = t;
    for (;;) {
        size_t leaders = 0;
        bool same = true;

        for (size_t i = 0; i < n; i++) {
            if (cs[i] == NULL &&
                connect_retry(eps[i], true, 2000, 0, &cs[i]) != 0) {
                rcs[i] = CLAWQ_ECONN_LOST;
                continue;
            }
            rcs[i] =
                clawq_cluster_status_get(cs[i], CLAWQ_CLUSTER_DIGEST, &st[i]);
            if (rcs[i] != 0) {
                clawq_close(cs[i]);
                cs[i] = NULL;
            }
        }
        for (size_t i = 0; i < n; i++) {
            if (rcs[i] != 0 || !st[i].has_digest ||
                st[i].digest_index != st[0].digest_index ||
                st[i].leader_id != st[0].leader_id || st[i].leader_id == 0) {
                same = false;
                continue;
            }
            leaders += strcmp(st[i].role, "leader") == 0;
        }
        if (same && leaders == 1) {
            mismatch = false;
            for (size_t i = 0; i < n; i++)
                mismatch = mismatch || st[i].digest != st[0].digest;
            if (!mismatch) {
                result = 0;
                break;
            }
            /* The same index must mean the same state; ask once more in
             * case a node answered between two applies of one index. */
        }
        if (now_ms() >= end)
            break;
        sleep_ms(100);
    }
    for (size_t i = 0; i < n; i++) {
        if (rcs[i] != 0)
            printf("digest: %s: %s\n", eps[i], clawq_err_name(rcs[i]));
        else
            printf("digest: %s node=%u role=%s leader=%u term=%" PRIu64
                   " commit=%" PRIu64 " applied=%" PRIu64
                   " digest_index=%" PRIu64 " digest=%016" PRIx64
                   " members=%zu\n",
                   eps[i], st[i].node_id, st[i].role, st[i].leader_id,
                   st[i].term, st[i].commit_index, st[i].applied_index,
                   st[i].digest_index, st[i].digest, st[i].n_members);
        clawq_close(cs[i]);
    }
    printf("digest: %s\n", result == 0 ? "EQUAL"
                           : mismatch  ? "MISMATCH at the same index"
                                       : "no common index and leader in time");
    free(list);
    return result;
}

/* ---- arguments ---- */

static void usage(void)
{
    fprintf(stderr,
            "usage: checker MODE --servers EPS [options]\n"
            "modes: load | leader | put | failover | digest\n"
            "load: --producers N (4) --consumers N (4) --queue Q (cluster)\n"
            "      --lease-ms MS (10000) --request-timeout-ms MS (5000)\n"
            "      --give-up-ms MS (30000) --drain-ms MS (lease + 20000)\n"
            "      --stop-file F --duration S (600) --status-file F\n"
            "      --pause-file F (no requests while F exists)\n"
            "      --max-gap-ms MS (0 = no limit) --rate N (per producer/s)\n"
            "leader: --timeout-ms MS (10000) [--no-follow]\n"
            "put: --key K [--no-follow] --timeout-ms MS\n"
            "failover: --pid PID --timeout-ms MS\n"
            "digest: --timeout-ms MS (every endpoint asked alone)\n");
    exit(2);
}

static uint32_t u32_arg(const char *s)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno != 0 || *end != '\0' || end == s || v > UINT32_MAX)
        usage();
    return (uint32_t)v;
}

static void parse_args(opts *o, int argc, char **argv)
{
    bool drain_set = false;

    memset(o, 0, sizeof(*o));
    o->queue = "cluster";
    o->producers = 4;
    o->consumers = 4;
    o->lease_ms = 10000;
    o->request_timeout_ms = 5000;
    o->give_up_ms = 30000;
    o->duration_s = 600;
    o->timeout_ms = 10000;
    o->key = "probe";
    if (argc < 2)
        usage();
    o->mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--no-follow") == 0) {
            o->no_follow = true;
            continue;
        }
        if (v == NULL)
            usage();
        i++;
        if (strcmp(a, "--servers") == 0)
            o->servers = v;
        else if (strcmp(a, "--queue") == 0)
            o->queue = v;
        else if (strcmp(a, "--stop-file") == 0)
            o->stop_file = v;
        else if (strcmp(a, "--pause-file") == 0)
            o->pause_file = v;
        else if (strcmp(a, "--status-file") == 0)
            o->status_file = v;
        else if (strcmp(a, "--key") == 0)
            o->key = v;
        else if (strcmp(a, "--producers") == 0)
            o->producers = u32_arg(v);
        else if (strcmp(a, "--consumers") == 0)
            o->consumers = u32_arg(v);
        else if (strcmp(a, "--lease-ms") == 0)
            o->lease_ms = u32_arg(v);
        else if (strcmp(a, "--request-timeout-ms") == 0)
            o->request_timeout_ms = u32_arg(v);
        else if (strcmp(a, "--give-up-ms") == 0)
            o->give_up_ms = u32_arg(v);
        else if (strcmp(a, "--drain-ms") == 0) {
            o->drain_ms = u32_arg(v);
            drain_set = true;
        } else if (strcmp(a, "--duration") == 0)
            o->duration_s = u32_arg(v);
        else if (strcmp(a, "--max-gap-ms") == 0)
            o->max_gap_ms = u32_arg(v);
        else if (strcmp(a, "--timeout-ms") == 0)
            o->timeout_ms = u32_arg(v);
        else if (strcmp(a, "--rate") == 0)
            o->rate = u32_arg(v);
        else if (strcmp(a, "--pid") == 0)
            o->pid = (long)u32_arg(v);
        else
            usage();
    }
    if (o->servers == NULL || o->producers == 0 || o->consumers == 0 ||
        o->producers > 64 || o->consumers > 64)
        usage();
    if (!drain_set)
        o->drain_ms = o->lease_ms + 20000;
}

/* Frees k and what run_load made (handles are closed by their users). */
static void checker_free(checker *k)
{
    if (k->tables != NULL) {
        for (uint32_t p = 0; p < k->o.producers; p++)
            free(k->tables[p].e);
        free(k->tables);
        pthread_mutex_destroy(&k->mu);
    }
    free(k->workers);
    free(k);
}

int main(int argc, char **argv)
{
    checker *k = xcalloc(1, sizeof(*k));
    int rc;

    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    parse_args(&k->o, argc, argv);
    k->run = (uint32_t)((uint64_t)time(NULL) * 1000 + (uint64_t)getpid()) %
             1000000000u;
    if (strcmp(k->o.mode, "load") == 0)
        rc = run_load(k);
    else if (strcmp(k->o.mode, "leader") == 0)
        rc = run_leader(k);
    else if (strcmp(k->o.mode, "put") == 0)
        rc = run_put(k);
    else if (strcmp(k->o.mode, "failover") == 0)
        rc = run_failover(k);
    else if (strcmp(k->o.mode, "digest") == 0)
        rc = run_digest(k);
    else
        usage();
    checker_free(k);
    return rc;
}
