/* clawq-bench: the same workloads against clawq and its peers.
 *
 * P producer threads put tasks and C consumer threads pull and ack them,
 * each thread with its own connection. The target - clawq (libclawq),
 * beanstalkd, Redis Streams or NATS JetStream - sits behind one small
 * interface (adapter.h: connect, put, put_batch, pull, ack, ack_batch),
 * so the workload code below is the same for all of them. Every payload
 * starts with a 32-byte header - magic, run id, producer, sequence, send
 * time - so that consumers can
 *
 *   - measure the latency from put to ack (CLOCK_MONOTONIC, one process),
 *   - check that every task put was completed exactly once: one bitmap of
 *     tasks put and one of tasks acked per producer. "duplicates" counts
 *     second completions (legal at-least-once only after a lease expired,
 *     so the bench leases for --lease-ms, long enough that none expire),
 *     "missing" counts tasks put but never acked, "unexpected" tasks acked
 *     that no put reported (a put whose answer was lost).
 *
 * Modes: mixed (default; producers and consumers run together) and
 * --fill-drain (put everything first, then drain it). Counts are bounded by
 * --tasks, time by --duration (producers only) and always by --timeout.
 * --rate paces the producers (open loop), their requests evenly spaced;
 * latency then counts from when a put was due, not when it was sent.
 *
 * Through the adapter (every target; clawq with --sync) each thread has
 * one batch in flight: a producer puts --batch tasks and waits for the
 * answer, a consumer pulls up to --batch tasks and acks them. For clawq a
 * batch is one request; for the peers it is their pipelined commands
 * (docs/BENCHMARKS.md lists each mapping).
 *
 * clawq without --sync runs its pipelined mode on the libclawq handle:
 * producers keep up to --inflight K put requests in flight
 * (clawq_put_batch_async tickets), consumers keep K pulls in flight and
 * ack each pulled batch with one clawq_ack_batch_async while the next
 * pulls are outstanding. --cluster A,B,C runs against a cluster (libclawq
 * follows the leader).
 *
 * Exit status: 0 when every task put was completed and no request failed,
 * 1 when tasks are missing or requests failed, 2 for a usage error.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "adapter.h"
#include "clawq.h"
#include "fsync_floor.h"

#define BENCH_MAGIC 0x31425143u /* "CQB1" */
#define HDR_LEN 32              /* magic, run, producer, pad, seq, sent_ns */
#define MAX_ERR_STREAK 20       /* consecutive failed requests: give up */
#define HIST_SUB_BITS 8         /* 256 sub-buckets per power of two (0.4 %) */
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_N (HIST_SUB * (64 - HIST_SUB_BITS))

typedef struct opts {
    const char *server; /* clawq: one address, or --cluster's list */
    const char *addr;   /* the target's address (--addr, --server) */
    const bench_adapter *target;
    bool durable; /* --durability durable (default) or fast */
    char queue[CLAWQ_MAX_QUEUE_NAME + 1];
    uint32_t producers, consumers, batch, payload, inflight;
    uint32_t wait_ms, lease_ms, timeout_s;
    uint64_t tasks; /* total to put; with --duration, the cap */
    bool tasks_set;
    double duration_s;  /* 0: put exactly --tasks */
    uint64_t rate;      /* tasks/s over all producers; 0 = as fast as they go */
    uint64_t max_depth; /* set on the queue first; 0 = leave it */
    bool fill_drain, json, sync;
} opts;

/* Latency histogram in ns: exact below 2 * HIST_SUB, then HIST_SUB
 * log-linear sub-buckets per power of two. */
typedef struct hist {
    uint64_t n, max_ns;
    uint64_t count[HIST_N];
} hist;

typedef struct counters {
    uint64_t put_ok, put_failed, put_unknown, put_requests;
    uint64_t pulled, pulls, empty_pulls, pull_errors;
    uint64_t acked, ack_failed, ack_requests;
    uint64_t completed, duplicates, foreign, corrupt;
    uint64_t queue_full, backoff_ms; /* tasks refused, time waited */
} counters;

typedef struct bench bench;

typedef struct worker {
    bench *b;
    uint32_t index;
    bench_conn *conn;
    clawq_client *c; /* clawq's ticket mode: conn's libclawq handle */
    pthread_t thread;
    counters k;
    hist *h;
    uint64_t end_ns;       /* when the thread finished its last request */
    uint64_t last_done_ns; /* consumers: last successful ack */
    char err[256];         /* the first request error, for the report */
} worker;

struct bench {
    opts o;
    bench_cfg cfg; /* what the adapters are set up from */
    uint32_t run_id;
    uint64_t t0_ns;
    uint64_t put_deadline_ns;     /* producers stop here (set before start) */
    _Atomic uint64_t deadline_ns; /* every thread stops here */
    uint64_t per_producer;        /* bits in each producer's bitmaps */
    uint64_t **put_map;           /* written by its producer only */
    uint64_t **done_map;          /* set by consumers with __atomic_fetch_or */
    _Atomic uint64_t put_ok_total;
    _Atomic uint64_t completed_total;
    _Atomic uint32_t producers_left;
    _Atomic uint32_t threads_left;
    atomic_bool stop;
};

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* With --rate, sleeps until a producer that has put `done` tasks is due
 * for the next one, and returns the time it was due: latency counts from
 * there, so a put that falls behind the schedule is charged for the delay
 * (no coordinated omission). Each producer takes rate / producers, its
 * schedule shifted by its index, so that requests arrive evenly spaced
 * (one batch every batch / rate seconds) rather than all producers' at
 * the same instant. Without --rate, returns now. */
static uint64_t pace(const worker *w, uint64_t done)
{
    const bench *b = w->b;
    uint64_t due, now = now_ns();
    struct timespec ts;

    if (b->o.rate == 0)
        return now;
    due = b->t0_ns + (uint64_t)(((double)done * b->o.producers +
                                 (double)w->index * b->o.batch) *
                                1e9 / (double)b->o.rate);
    if (due <= now)
        return due;
    ts.tv_sec = (time_t)((due - now) / 1000000000u);
    ts.tv_nsec = (long)((due - now) % 1000000000u);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    return due;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n > 0 ? n : 1, size > 0 ? size : 1);

    if (p == NULL) {
        fprintf(stderr, "clawq-bench: out of memory\n");
        exit(1);
    }
    return p;
}

/* ---- histogram ---- */

static size_t hist_index(uint64_t v)
{
    unsigned msb, shift;

    if (v < 2 * HIST_SUB)
        return (size_t)v;
    msb = 63u - (unsigned)__builtin_clzll(v);
    shift = msb - HIST_SUB_BITS; /* v >> shift in [HIST_SUB, 2 * HIST_SUB) */
    return (size_t)HIST_SUB * shift + (size_t)(v >> shift);
}

/* The middle of bucket i, in ns. */
static uint64_t hist_value(size_t i)
{
    uint64_t shift, m;

    if (i < 2 * HIST_SUB)
        return i;
    shift = i / HIST_SUB - 1;
    m = i - HIST_SUB * shift;
    return (m << shift) + ((1ull << shift) >> 1);
}

static void hist_add(hist *h, uint64_t v)
{
    size_t i = hist_index(v);

    h->count[i < HIST_N ? i : HIST_N - 1]++;
    h->n++;
    if (v > h->max_ns)
        h->max_ns = v;
}

static void hist_merge(hist *into, const hist *from)
{
    for (size_t i = 0; i < HIST_N; i++)
        into->count[i] += from->count[i];
    into->n += from->n;
    if (from->max_ns > into->max_ns)
        into->max_ns = from->max_ns;
}

/* The q-quantile (0..1) in ms; 0 for an empty histogram. */
static double hist_quantile_ms(const hist *h, double q)
{
    uint64_t rank, seen = 0;

    if (h->n == 0)
        return 0;
    rank = (uint64_t)(q * (double)h->n);
    if (rank >= h->n)
        rank = h->n - 1;
    for (size_t i = 0; i < HIST_N; i++) {
        seen += h->count[i];
        if (seen > rank) {
            uint64_t v = hist_value(i);
            return (double)(v < h->max_ns ? v : h->max_ns) / 1e6;
        }
    }
    return (double)h->max_ns / 1e6;
}

/* ---- payload header ---- */

static void hdr_write(uint8_t *p, uint32_t run, uint32_t producer, uint64_t seq,
                      uint64_t sent_ns)
{
    uint32_t magic = BENCH_MAGIC, pad = 0;

    memcpy(p, &magic, 4);
    memcpy(p + 4, &run, 4);
    memcpy(p + 8, &producer, 4);
    memcpy(p + 12, &pad, 4);
    memcpy(p + 16, &seq, 8);
    memcpy(p + 24, &sent_ns, 8);
}

static void hdr_stamp(uint8_t *p, uint64_t seq, uint64_t sent_ns)
{
    memcpy(p + 16, &seq, 8);
    memcpy(p + 24, &sent_ns, 8);
}

/* ---- producers ---- */

/* Notes the first error of a worker: a libclawq code (ticket mode). */
static void note_err(worker *w, const char *what, int rc)
{
    if (w->err[0] == '\0')
        snprintf(w->err, sizeof(w->err), "%s: %s (%s)", what,
                 clawq_err_name(rc), clawq_errmsg(w->c));
}

/* Notes the first error of a worker: the adapter's detail. */
static void note_conn_err(worker *w, const char *what)
{
    if (w->err[0] == '\0')
        snprintf(w->err, sizeof(w->err), "%s: %.200s", what,
                 w->conn->err[0] != '\0' ? w->conn->err : "failed");
}

static bool time_is_up(const bench *b)
{
    uint64_t now = now_ns();

    return atomic_load_explicit(&b->stop, memory_order_relaxed) ||
           now >= b->put_deadline_ns || now >= atomic_load(&b->deadline_ns);
}

static uint64_t producer_quota(const bench *b, uint32_t i)
{
    uint64_t q = b->o.tasks / b->o.producers;

    return q + (i < b->o.tasks % b->o.producers ? 1 : 0);
}

/* Sleeps for the target's retry hint after a refusal (10 ms without one)
 * and counts the time. */
static void back_off(worker *w)
{
    uint32_t ms = w->conn->retry_after_ms;

    ms = ms > 0 && ms <= 5000 ? ms : 10;
    w->k.backoff_ms += ms;
    sleep_ms(ms);
}

/* Any target, one batch in flight: put --batch tasks at a time through
 * the adapter (put for batch 1, put_batch otherwise) and wait for the
 * answer. Tasks refused before they were applied (clawq's QUEUE_FULL,
 * NOT_LEADER) are put again with the same sequence numbers; a failed
 * request leaves its tasks' outcome unknown (not in put_map). */
static void producer_adapter(worker *w)
{
    bench *b = w->b;
    const opts *o = &b->o;
    const bench_adapter *ad = w->conn->ad;
    uint64_t quota = producer_quota(b, w->index), seq = 0;
    uint64_t *map = b->put_map[w->index];
    uint8_t *buf = xcalloc(o->batch, o->payload);
    const uint8_t **ptrs = xcalloc(o->batch, sizeof(*ptrs));
    uint64_t *seqs = xcalloc(o->batch, sizeof(*seqs));
    uint64_t *again = xcalloc(o->batch, sizeof(*again)); /* refused */
    int *st = xcalloc(o->batch, sizeof(*st));
    uint32_t streak = 0, n_again = 0;

    for (uint32_t i = 0; i < o->batch; i++) {
        uint8_t *p = buf + (size_t)i * o->payload;
        memset(p, 'x', o->payload);
        hdr_write(p, b->run_id, w->index, 0, 0);
        ptrs[i] = p;
    }
    while (!atomic_load_explicit(&b->stop, memory_order_relaxed)) {
        uint32_t n = 0, refused = 0;
        uint64_t sent, ok = 0;
        int rc;

        while (n_again > 0) /* refused tasks first, with fresh stamps */
            seqs[n++] = again[--n_again];
        if (n > 0) {
            sent = now_ns();
        } else {
            if (seq >= quota || time_is_up(b))
                break;
            n = quota - seq < o->batch ? (uint32_t)(quota - seq) : o->batch;
            for (uint32_t i = 0; i < n; i++)
                seqs[i] = seq + i;
            sent = pace(w, seq);
            seq += n;
        }
        for (uint32_t i = 0; i < n; i++)
            hdr_stamp(buf + (size_t)i * o->payload, seqs[i], sent);
        if (o->batch == 1) {
            rc = ad->put(w->conn, ptrs[0], o->payload);
            st[0] = 0;
        } else {
            /* < 0: the request failed; >= 0: answered, that many tasks
             * failed (st[i] says which). */
            rc = ad->put_batch(w->conn, ptrs, o->payload, n, st);
        }
        w->k.put_requests++;
        if (rc < 0) {
            if (rc == BENCH_EREFUSED && ++streak < MAX_ERR_STREAK) {
                for (uint32_t i = 0; i < n; i++)
                    again[n_again++] = seqs[i];
                w->k.queue_full += n;
                back_off(w);
                continue;
            }
            note_conn_err(w, "put");
            w->k.put_unknown += n; /* outcome unknown: not in put_map */
            if (rc == BENCH_EREFUSED || ++streak >= MAX_ERR_STREAK)
                atomic_store(&b->stop, true);
            continue;
        }
        streak = 0;
        for (uint32_t i = 0; i < n; i++) {
            uint64_t s = seqs[i];

            if (st[i] == 0) {
                map[s >> 6] |= 1ull << (s & 63);
                ok++;
            } else if (st[i] == BENCH_EREFUSED) {
                /* Back-pressure: not an error; put it again. */
                w->k.queue_full++;
                again[n_again++] = s;
                refused++;
            } else {
                w->k.put_failed++;
                note_conn_err(w, "put task");
            }
        }
        if (refused > 0)
            back_off(w);
        w->k.put_ok += ok;
        atomic_fetch_add_explicit(&b->put_ok_total, ok, memory_order_relaxed);
    }
    free(buf);
    free(ptrs);
    free(seqs);
    free(again);
    free(st);
}

/* Up to --inflight put batches in flight: each ticket's user is the
 * sequence number of its first task. A batch refused before it was
 * applied (QUEUE_FULL, NOT_LEADER, SHUTTING_DOWN) is put again, with the
 * same sequence numbers. */
static void producer_tickets(worker *w)
{
    bench *b = w->b;
    const opts *o = &b->o;
    uint64_t quota = producer_quota(b, w->index), seq = 0;
    uint64_t *map = b->put_map[w->index];
    uint8_t *buf = xcalloc(o->batch, o->payload);
    clawq_put_task *tasks = xcalloc(o->batch, sizeof(*tasks));
    /* Refused tasks to put again: runs of (first sequence, count). A
     * batch refused whole is one run; one that met max_depth part way
     * leaves a run of its refused tail. */
    struct run {
        uint64_t base;
        uint32_t n;
    } *retry = xcalloc((size_t)o->inflight * 2 + o->batch, sizeof(*retry));
    size_t n_retry = 0;
    uint32_t inflight = 0, streak = 0;

    for (uint32_t i = 0; i < o->batch; i++) {
        uint8_t *p = buf + (size_t)i * o->payload;
        memset(p, 'x', o->payload);
        hdr_write(p, b->run_id, w->index, 0, 0);
        clawq_put_task_init(&tasks[i]);
        tasks[i].payload = p;
        tasks[i].payload_len = o->payload;
    }
    for (;;) {
        bool stopping = atomic_load(&b->stop);
        clawq_result r;
        uint64_t base, ok = 0;
        int rc;

        /* Fill the window: refused batches first, then new ones. */
        while (inflight < o->inflight && !stopping) {
            clawq_ticket t;
            uint64_t sent;
            uint32_t n;
            bool fresh = n_retry == 0;

            if (!fresh) {
                n_retry--;
                base = retry[n_retry].base;
                n = retry[n_retry].n;
            } else if (seq < quota && !time_is_up(b)) {
                base = seq;
                n = quota - base < o->batch ? (uint32_t)(quota - base)
                                            : o->batch;
            } else {
                break;
            }
            sent = pace(w, base);
            for (uint32_t i = 0; i < n; i++)
                hdr_stamp(buf + (size_t)i * o->payload, base + i, sent);
            rc = clawq_put_batch_async(w->c, o->queue, tasks, n,
                                       (void *)(uintptr_t)base, &t);
            if (rc < 0) { /* nothing sent: try the same batch again */
                if (!fresh)
                    retry[n_retry++] = (struct run){base, n};
                if (++streak >= MAX_ERR_STREAK) {
                    note_err(w, "put", rc);
                    atomic_store(&b->stop, true);
                }
                sleep_ms(10);
                break;
            }
            w->k.put_requests++;
            if (fresh)
                seq += n;
            inflight++;
        }
        if (inflight == 0) {
            if (stopping || (n_retry == 0 && (seq >= quota || time_is_up(b))))
                break;
            continue;
        }
        rc = clawq_wait(w->c, 0, -1, &r);
        if (rc < 0) { /* cannot happen with tickets outstanding */
            note_err(w, "wait", rc);
            atomic_store(&b->stop, true);
            break;
        }
        inflight--;
        base = (uintptr_t)r.user;
        if (r.status != 0) {
            bool refused = r.status == CLAWQ_EQUEUE_FULL ||
                           r.status == CLAWQ_ENOT_LEADER ||
                           r.status == CLAWQ_ESHUTTING_DOWN;

            if (refused && ++streak < MAX_ERR_STREAK) {
                uint32_t ms = clawq_retry_after_ms(w->c);
                sleep_ms(ms > 0 && ms < 1000 ? ms : 10);
                retry[n_retry++] = (struct run){base, (uint32_t)r.n};
            } else {
                note_err(w, "put", r.status);
                w->k.put_unknown += r.n; /* outcome unknown */
                if (refused || ++streak >= MAX_ERR_STREAK)
                    atomic_store(&b->stop, true);
            }
            clawq_result_free(&r);
            continue;
        }
        streak = 0;
        for (size_t i = 0; i < r.n; i++) {
            uint64_t s = base + i;

            if (r.puts[i].status == 0) {
                map[s >> 6] |= 1ull << (s & 63);
                ok++;
            } else if (r.puts[i].status == CLAWQ_EQUEUE_FULL) {
                /* Back-pressure: not an error. Put it again after the
                 * broker's hint (runs of refused tasks stay together). */
                w->k.queue_full++;
                if (n_retry > 0 &&
                    retry[n_retry - 1].base + retry[n_retry - 1].n == s)
                    retry[n_retry - 1].n++;
                else
                    retry[n_retry++] = (struct run){s, 1};
            } else {
                w->k.put_failed++;
                note_err(w, "put task", r.puts[i].status);
            }
        }
        if (r.n_failed > 0 && n_retry > 0) {
            uint32_t ms = clawq_retry_after_ms(w->c);
            ms = ms > 0 && ms <= 5000 ? ms : 10;
            w->k.backoff_ms += ms;
            sleep_ms(ms);
        }
        w->k.put_ok += ok;
        atomic_fetch_add_explicit(&b->put_ok_total, ok, memory_order_relaxed);
        clawq_result_free(&r);
    }
    free(buf);
    free(tasks);
    free(retry);
}

static void *producer_main(void *arg)
{
    worker *w = arg;

    if (w->c == NULL)
        producer_adapter(w);
    else
        producer_tickets(w);
    w->end_ns = now_ns();
    atomic_fetch_sub(&w->b->producers_left, 1);
    atomic_fetch_sub(&w->b->threads_left, 1);
    return NULL;
}

/* ---- consumers ---- */

/* Checks a delivered payload; on success writes its producer and
 * sequence. Counts foreign (another run's) and corrupt payloads. */
static bool task_decode(worker *w, const uint8_t *payload, size_t len,
                        uint32_t *producer, uint64_t *seq, uint64_t *sent_ns)
{
    const bench *b = w->b;
    uint32_t magic, run;

    if (len < HDR_LEN) {
        w->k.foreign++;
        return false;
    }
    memcpy(&magic, payload, 4);
    memcpy(&run, payload + 4, 4);
    if (magic != BENCH_MAGIC || run != b->run_id) {
        w->k.foreign++;
        return false;
    }
    memcpy(producer, payload + 8, 4);
    memcpy(seq, payload + 16, 8);
    memcpy(sent_ns, payload + 24, 8);
    if (len != b->o.payload || *producer >= b->o.producers ||
        *seq >= b->per_producer) {
        w->k.corrupt++;
        return false;
    }
    return true;
}

/* Records the answered ack of n tasks (statuses st) at done_ns: marks
 * them completed, counts duplicates and latencies. */
static void acks_record(worker *w, size_t n, const int *st, const bool *valid,
                        const uint32_t *prod, const uint64_t *seqs,
                        const uint64_t *sent, uint64_t done_ns)
{
    bench *b = w->b;
    size_t fresh = 0;

    for (size_t i = 0; i < n; i++) {
        uint64_t bit, old;

        if (st[i] != 0) {
            w->k.ack_failed++;
            if (w->c != NULL) /* ticket mode: st[i] is libclawq's */
                note_err(w, "ack task", st[i]);
            continue;
        }
        w->k.acked++;
        if (!valid[i])
            continue;
        bit = 1ull << (seqs[i] & 63);
        old = __atomic_fetch_or(&b->done_map[prod[i]][seqs[i] >> 6], bit,
                                __ATOMIC_RELAXED);
        if (old & bit) {
            w->k.duplicates++;
            continue;
        }
        fresh++;
        hist_add(w->h, done_ns > sent[i] ? done_ns - sent[i] : 0);
    }
    if (fresh > 0) {
        w->k.completed += fresh;
        w->last_done_ns = done_ns;
        atomic_fetch_add_explicit(&b->completed_total, fresh,
                                  memory_order_relaxed);
    }
}

/* Any target, one request in flight: pull up to --batch tasks through the
 * adapter, then ack what it leased (ack for batch 1, ack_batch
 * otherwise) and wait for the answer. */
static void consumer_adapter(worker *w)
{
    bench *b = w->b;
    const opts *o = &b->o;
    const bench_adapter *ad = w->conn->ad;
    int *st = xcalloc(o->batch, sizeof(*st));
    uint32_t *prod = xcalloc(o->batch, sizeof(*prod));
    uint64_t *seqs = xcalloc(o->batch, sizeof(*seqs));
    uint64_t *sent = xcalloc(o->batch, sizeof(*sent));
    bool *valid = xcalloc(o->batch, sizeof(*valid));
    uint32_t streak = 0;

    while (!atomic_load_explicit(&b->stop, memory_order_relaxed) &&
           now_ns() < atomic_load(&b->deadline_ns)) {
        bool producers_done =
            atomic_load(&b->producers_left) == 0; /* before the pull */
        bench_msg *m = NULL;
        size_t n = 0;
        uint64_t done_ns;
        int rc;

        if (producers_done &&
            atomic_load(&b->completed_total) >= atomic_load(&b->put_ok_total))
            break;
        rc = ad->pull(w->conn, o->batch, &m, &n);
        w->k.pulls++;
        if (rc < 0) {
            w->k.pull_errors++;
            note_conn_err(w, "pull");
            if (++streak >= MAX_ERR_STREAK)
                break;
            sleep_ms(10);
            continue;
        }
        if (n == 0) {
            w->k.empty_pulls++;
            if (producers_done)
                break; /* nothing ready after the last put: drained */
            continue;
        }
        w->k.pulled += n;
        for (size_t i = 0; i < n; i++)
            valid[i] = task_decode(w, m[i].payload, m[i].payload_len, &prod[i],
                                   &seqs[i], &sent[i]);
        if (n == 1 && o->batch == 1) {
            rc = ad->ack(w->conn, &m[0]);
            st[0] = 0;
        } else {
            rc = ad->ack_batch(w->conn, m, n, st);
        }
        done_ns = now_ns();
        w->k.ack_requests++;
        if (rc < 0) {
            /* The whole request failed: the leases stay until expiry. */
            w->k.ack_failed += n;
            note_conn_err(w, "ack");
            if (++streak >= MAX_ERR_STREAK)
                break;
            continue;
        }
        if (rc > 0)
            note_conn_err(w, "ack task");
        streak = 0;
        acks_record(w, n, st, valid, prod, seqs, sent, done_ns);
    }
    free(st);
    free(prod);
    free(seqs);
    free(sent);
    free(valid);
}

/* What an ack ticket needs to record its tasks once answered. */
typedef struct ack_ctx {
    size_t n;
    uint32_t *prod;
    uint64_t *seqs, *sent;
    bool *valid;
} ack_ctx;

static ack_ctx *ack_ctx_new(size_t n)
{
    /* One block: the header, then the arrays, widest first. */
    size_t sz = sizeof(ack_ctx) +
                n * (2 * sizeof(uint64_t) + sizeof(uint32_t) + sizeof(bool));
    ack_ctx *a = xcalloc(1, sz);

    a->n = n;
    a->seqs = (uint64_t *)(a + 1);
    a->sent = a->seqs + n;
    a->prod = (uint32_t *)(a->sent + n);
    a->valid = (bool *)(a->prod + n);
    return a;
}

/* Pulls of a ticket consumer carry, as their user pointer, whether every
 * producer had finished when the pull was sent. */
#define PULL_AFTER_PUTS ((void *)(uintptr_t)1)
#define PULL_DURING_PUTS ((void *)(uintptr_t)2)

/* Keeps --inflight pulls outstanding; acks each pulled batch with an ack
 * ticket while the other pulls are in flight. Stops sending pulls once
 * drained (every task put is completed, or a pull sent after the last put
 * came back empty) and then collects what is still outstanding. */
static void consumer_tickets(worker *w)
{
    bench *b = w->b;
    const opts *o = &b->o;
    clawq_lease_ref *refs = xcalloc(o->batch, sizeof(*refs));
    uint32_t pulls_out = 0, acks_out = 0, streak = 0;
    bool drained = false;

    for (;;) {
        bool stopping = atomic_load_explicit(&b->stop, memory_order_relaxed) ||
                        now_ns() >= atomic_load(&b->deadline_ns);
        clawq_result r;
        int rc;

        if (!drained && atomic_load(&b->producers_left) == 0 &&
            atomic_load(&b->completed_total) >= atomic_load(&b->put_ok_total))
            drained = true;
        while (!stopping && !drained && pulls_out < o->inflight) {
            void *when = atomic_load(&b->producers_left) == 0
                             ? PULL_AFTER_PUTS
                             : PULL_DURING_PUTS;
            clawq_ticket t;

            rc = clawq_pull_async(w->c, o->queue, o->batch, o->wait_ms,
                                  o->lease_ms, when, &t);
            w->k.pulls++;
            if (rc < 0) {
                w->k.pull_errors++;
                note_err(w, "pull", rc);
                if (++streak >= MAX_ERR_STREAK)
                    stopping = true;
                sleep_ms(10);
                break;
            }
            pulls_out++;
        }
        if (pulls_out + acks_out == 0) {
            if (stopping || drained)
                break;
            continue;
        }
        rc = clawq_wait(w->c, 0, -1, &r);
        if (rc < 0) { /* cannot happen with tickets outstanding */
            note_err(w, "wait", rc);
            break;
        }
        if (r.op == CLAWQ_OP_PULL) {
            ack_ctx *a;
            clawq_ticket t;

            pulls_out--;
            if (r.status != 0) {
                w->k.pull_errors++;
                note_err(w, "pull", r.status);
                if (++streak >= MAX_ERR_STREAK)
                    atomic_store(&b->stop, true);
                sleep_ms(10);
                continue;
            }
            if (r.n == 0) {
                w->k.empty_pulls++;
                if (r.user == PULL_AFTER_PUTS)
                    drained = true; /* nothing ready after the last put */
                continue;
            }
            w->k.pulled += r.n;
            a = ack_ctx_new(r.n);
            for (size_t i = 0; i < r.n; i++) {
                refs[i].id = r.tasks[i].id;
                refs[i].lease_id = r.tasks[i].lease_id;
                a->valid[i] =
                    task_decode(w, r.tasks[i].payload, r.tasks[i].payload_len,
                                &a->prod[i], &a->seqs[i], &a->sent[i]);
            }
            clawq_result_free(&r);
            rc = clawq_ack_batch_async(w->c, refs, a->n, a, &t);
            w->k.ack_requests++;
            if (rc < 0) {
                /* Not sent: the leases stay until expiry. */
                w->k.ack_failed += a->n;
                note_err(w, "ack", rc);
                free(a);
                if (++streak >= MAX_ERR_STREAK)
                    atomic_store(&b->stop, true);
                continue;
            }
            acks_out++;
        } else {
            ack_ctx *a = r.user;
            uint64_t done_ns = now_ns();

            acks_out--;
            if (r.status != 0) {
                /* The whole request failed: the leases stay until expiry. */
                w->k.ack_failed += a->n;
                note_err(w, "ack", r.status);
                if (++streak >= MAX_ERR_STREAK)
                    atomic_store(&b->stop, true);
            } else {
                streak = 0;
                acks_record(w, a->n, r.statuses, a->valid, a->prod, a->seqs,
                            a->sent, done_ns);
            }
            free(a);
            clawq_result_free(&r);
        }
    }
    free(refs);
}

static void *consumer_main(void *arg)
{
    worker *w = arg;

    if (w->c == NULL)
        consumer_adapter(w);
    else
        consumer_tickets(w);
    w->end_ns = now_ns();
    atomic_fetch_sub(&w->b->threads_left, 1);
    return NULL;
}

/* ---- running ---- */

/* Connects worker w through the target's adapter. clawq without --sync
 * runs the pipelined ticket mode on the libclawq handle (w->c). */
static void connect_one(bench *b, worker *w, const char *role, uint32_t i)
{
    const opts *o = &b->o;
    char err[256] = "";
    int rc;

    rc = o->target->connect(&b->cfg, role, i, &w->conn, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "clawq-bench: connect %s %s: %s\n", o->target->name,
                o->addr, err);
        exit(1);
    }
    w->c = o->target == &bench_clawq && !o->sync ? bench_clawq_client(w->conn)
                                                 : NULL;
}

static void start(worker *w, void *(*fn)(void *))
{
    int rc = pthread_create(&w->thread, NULL, fn, w);

    if (rc != 0) {
        fprintf(stderr, "clawq-bench: pthread_create: %s\n", strerror(rc));
        exit(1);
    }
}

/* Waits for every started thread, up to the run's deadline plus the time
 * a blocked call can take; past that the run is abandoned. */
static void wait_threads(bench *b, worker *ws, size_t n)
{
    /* 15 s: more than a call's request timeout (10 s). */
    uint64_t hard = atomic_load(&b->deadline_ns) + 15ull * 1000000000u;

    while (atomic_load(&b->threads_left) > 0) {
        if (now_ns() >= atomic_load(&b->deadline_ns))
            atomic_store(&b->stop, true);
        if (now_ns() >= hard) {
            fprintf(stderr,
                    "clawq-bench: threads still blocked %u s after "
                    "the deadline; giving up\n",
                    15u);
            _exit(1);
        }
        sleep_ms(5);
    }
    for (size_t i = 0; i < n; i++)
        pthread_join(ws[i].thread, NULL);
}

static void counters_add(counters *a, const counters *k)
{
    a->put_ok += k->put_ok;
    a->put_failed += k->put_failed;
    a->put_unknown += k->put_unknown;
    a->queue_full += k->queue_full;
    a->backoff_ms += k->backoff_ms;
    a->put_requests += k->put_requests;
    a->pulled += k->pulled;
    a->pulls += k->pulls;
    a->empty_pulls += k->empty_pulls;
    a->pull_errors += k->pull_errors;
    a->acked += k->acked;
    a->ack_failed += k->ack_failed;
    a->ack_requests += k->ack_requests;
    a->completed += k->completed;
    a->duplicates += k->duplicates;
    a->foreign += k->foreign;
    a->corrupt += k->corrupt;
}

static double rate(uint64_t n, uint64_t ns)
{
    return ns > 0 ? (double)n * 1e9 / (double)ns : 0;
}

static int run(bench *b)
{
    const opts *o = &b->o;
    worker *ws = xcalloc(o->producers + o->consumers, sizeof(*ws));
    worker *prod = ws, *cons = ws + o->producers;
    counters k = {0};
    hist *h = xcalloc(1, sizeof(*h));
    uint64_t put_end = 0, last_done = 0, cons_start, missing = 0;
    uint64_t unexpected = 0, put_ns, drain_ns, total_ns;
    uint64_t timeout_ns = (uint64_t)o->timeout_s * 1000000000u;
    uint64_t put_ns_max =
        o->duration_s > 0 ? (uint64_t)(o->duration_s * 1e9) : timeout_ns;
    const char *first_err = "";
    bool ok;

    if (o->target->setup != NULL) {
        char err[256] = "";

        if (o->target->setup(&b->cfg, err, sizeof(err)) < 0) {
            fprintf(stderr, "clawq-bench: set up %s on %s: %s\n",
                    o->target->name, o->addr, err);
            exit(1);
        }
    }
    for (uint32_t i = 0; i < o->producers; i++) {
        prod[i].b = b;
        prod[i].index = i;
        connect_one(b, &prod[i], "producer", i);
    }
    for (uint32_t i = 0; i < o->consumers; i++) {
        cons[i].b = b;
        cons[i].index = i;
        connect_one(b, &cons[i], "consumer", i);
        cons[i].h = xcalloc(1, sizeof(hist));
    }
    if (o->max_depth > 0) {
        clawq_queue_settings qs = {0};
        int rc;

        qs.mask = CLAWQ_SET_MAX_DEPTH;
        qs.max_depth = o->max_depth;
        rc = clawq_queue_set(bench_clawq_client(prod[0].conn), o->queue, &qs);
        if (rc != 0) {
            fprintf(stderr, "clawq-bench: queue set max_depth: %s\n",
                    clawq_errmsg(bench_clawq_client(prod[0].conn)));
            exit(1);
        }
    }
    atomic_store(&b->producers_left, o->producers);
    atomic_store(&b->threads_left, o->producers);
    b->t0_ns = now_ns();
    /* --duration bounds the puts; --timeout bounds the run after them
     * (the whole run without --duration) and again the drain. */
    b->put_deadline_ns = b->t0_ns + put_ns_max;
    atomic_store(&b->deadline_ns,
                 b->t0_ns + (o->duration_s > 0 ? put_ns_max : 0) + timeout_ns);
    if (!o->fill_drain)
        atomic_fetch_add(&b->threads_left, o->consumers);
    for (uint32_t i = 0; i < o->producers; i++)
        start(&prod[i], producer_main);
    if (!o->fill_drain) {
        for (uint32_t i = 0; i < o->consumers; i++)
            start(&cons[i], consumer_main);
    }
    if (o->fill_drain) {
        wait_threads(b, prod, o->producers);
        atomic_store(&b->threads_left, o->consumers);
        if (!atomic_load(&b->stop))
            atomic_store(&b->deadline_ns, now_ns() + timeout_ns);
        cons_start = now_ns();
        for (uint32_t i = 0; i < o->consumers; i++)
            start(&cons[i], consumer_main);
        wait_threads(b, cons, o->consumers);
    } else {
        cons_start = b->t0_ns;
        wait_threads(b, ws, o->producers + o->consumers);
    }

    for (uint32_t i = 0; i < o->producers + o->consumers; i++) {
        counters_add(&k, &ws[i].k);
        if (ws[i].err[0] != '\0' && first_err[0] == '\0')
            first_err = ws[i].err;
        o->target->close(ws[i].conn);
    }
    for (uint32_t i = 0; i < o->producers; i++)
        if (prod[i].end_ns > put_end)
            put_end = prod[i].end_ns;
    for (uint32_t i = 0; i < o->consumers; i++) {
        if (cons[i].last_done_ns > last_done)
            last_done = cons[i].last_done_ns;
        hist_merge(h, cons[i].h);
        free(cons[i].h);
    }
    for (uint32_t p = 0; p < o->producers; p++) {
        for (uint64_t wd = 0; wd < (b->per_producer + 63) / 64; wd++) {
            uint64_t put = b->put_map[p][wd];
            uint64_t done = b->done_map[p][wd]; /* threads joined */
            missing += (uint64_t)__builtin_popcountll(put & ~done);
            unexpected += (uint64_t)__builtin_popcountll(done & ~put);
        }
    }
    put_ns = put_end - b->t0_ns;
    drain_ns = last_done > cons_start ? last_done - cons_start : 0;
    total_ns = last_done > b->t0_ns ? last_done - b->t0_ns : 0;
    ok = missing == 0 && k.duplicates == 0 && k.put_failed == 0 &&
         k.put_unknown == 0 && k.ack_failed == 0 && k.pull_errors == 0 &&
         k.corrupt == 0 && k.put_ok > 0;

    if (o->target->teardown != NULL)
        o->target->teardown(&b->cfg);
    printf("clawq-bench: target=%s server=%s queue=%s mode=%s producers=%u "
           "consumers=%u batch=%u payload=%u inflight=%u%s durability=%s\n",
           o->target->name, o->addr, o->queue,
           o->fill_drain ? "fill-drain" : "mixed", o->producers, o->consumers,
           o->batch, o->payload, o->inflight, o->sync ? " sync" : "",
           o->durable ? "durable" : "fast");
    if (o->rate > 0)
        printf("  rate         %10" PRIu64 " tasks/s offered (--rate)\n",
               o->rate);
    if (o->duration_s > 0)
        printf("  run          %.1f s of puts (cap %" PRIu64 " tasks)\n",
               o->duration_s, o->tasks);
    else
        printf("  run          %" PRIu64 " tasks\n", o->tasks);
    printf("  put          %10.0f tasks/s   (%" PRIu64 " tasks in %" PRIu64
           " requests, %.3f s)\n",
           rate(k.put_ok, put_ns), k.put_ok, k.put_requests,
           (double)put_ns / 1e9);
    printf("  pull+ack     %10.0f tasks/s   (%" PRIu64 " acked in %" PRIu64
           " pulls (%" PRIu64 " empty) + %" PRIu64 " acks, %.3f s%s)\n",
           rate(k.acked, drain_ns), k.acked, k.pulls, k.empty_pulls,
           k.ack_requests, (double)drain_ns / 1e9,
           o->fill_drain ? ", drain phase" : "");
    printf("  completed    %10.0f tasks/s   (%" PRIu64 " tasks, first put to "
           "last ack %.3f s)\n",
           rate(k.completed, total_ns), k.completed, (double)total_ns / 1e9);
    printf("  latency p50  %10.3f ms      (put to ack)\n",
           hist_quantile_ms(h, 0.50));
    printf("  latency p99  %10.3f ms\n", hist_quantile_ms(h, 0.99));
    printf("  latency p99.9%10.3f ms\n", hist_quantile_ms(h, 0.999));
    printf("  latency max  %10.3f ms\n", (double)h->max_ns / 1e6);
    printf("  duplicates   %10" PRIu64 "\n", k.duplicates);
    printf("  missing      %10" PRIu64 "\n", missing);
    printf("  unexpected   %10" PRIu64 "      (acked, but no put answer "
           "said so)\n",
           unexpected);
    if (k.queue_full > 0 || o->max_depth > 0)
        printf("  backpressure %10" PRIu64 " tasks refused QUEUE_FULL and put "
               "again; producers waited %" PRIu64 " ms in all\n",
               k.queue_full, k.backoff_ms);
    printf("  errors       put_failed=%" PRIu64 " put_unknown=%" PRIu64
           " pull=%" PRIu64 " ack=%" PRIu64 " foreign=%" PRIu64
           " corrupt=%" PRIu64 "\n",
           k.put_failed, k.put_unknown, k.pull_errors, k.ack_failed, k.foreign,
           k.corrupt);
    if (first_err[0] != '\0')
        printf("  first error  %s\n", first_err);
    if (atomic_load(&b->stop) && !ok)
        printf("  stopped      early (timeout or repeated errors)\n");
    printf("  result       %s\n",
           ok ? "OK: every task completed exactly once" : "FAILED");
    if (o->json) {
        printf(
            "{\"bench\":\"clawq\",\"target\":\"%s\",\"durability\":\"%s\","
            "\"mode\":\"%s\",\"rate\":%" PRIu64 ",\"producers\":%u,"
            "\"consumers\":%u,\"batch\":%u,\"payload\":%u,\"inflight\":%u,"
            "\"sync\":%s,"
            "\"put\":%" PRIu64 ",\"put_per_s\":%.0f,\"acked\":%" PRIu64
            ",\"pull_ack_per_s\":%.0f,\"completed\":%" PRIu64
            ",\"completed_per_s\":%.0f,\"latency_ms\":{\"p50\":%.3f,"
            "\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f},\"duplicates\":%" PRIu64
            ",\"missing\":%" PRIu64 ",\"unexpected\":%" PRIu64
            ",\"errors\":{\"put_failed\":%" PRIu64 ",\"put_unknown\":%" PRIu64
            ",\"pull\":%" PRIu64 ",\"ack\":%" PRIu64 ",\"foreign\":%" PRIu64
            ",\"corrupt\":%" PRIu64 "},\"ok\":%s}\n",
            o->target->name, o->durable ? "durable" : "fast",
            o->fill_drain ? "fill-drain" : "mixed", o->rate, o->producers,
            o->consumers, o->batch, o->payload, o->inflight,
            o->sync ? "true" : "false", k.put_ok, rate(k.put_ok, put_ns),
            k.acked, rate(k.acked, drain_ns), k.completed,
            rate(k.completed, total_ns), hist_quantile_ms(h, 0.50),
            hist_quantile_ms(h, 0.99), hist_quantile_ms(h, 0.999),
            (double)h->max_ns / 1e6, k.duplicates, missing, unexpected,
            k.put_failed, k.put_unknown, k.pull_errors, k.ack_failed, k.foreign,
            k.corrupt, ok ? "true" : "false");
    }
    fflush(stdout);
    free(h);
    free(ws);
    return ok ? 0 : 1;
}

/* ---- options ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: clawq-bench [--target T] [--server 127.0.0.1:PORT | "
            "--cluster A,B,C |\n"
            "         --addr 127.0.0.1:PORT] [--producers P] [--consumers C]\n"
            "         [--batch N] [--payload BYTES] [--tasks N | --duration "
            "SEC]\n"
            "         [--rate N] [--queue NAME] [--inflight N] [--fill-drain] "
            "[--json]\n"
            "         [--wait-ms MS] [--lease-ms MS] [--timeout SEC]\n"
            "         [--max-depth N] [--durability durable|fast]\n"
            "       clawq-bench --fsync-floor DIR | --list-targets\n"
            "\n"
            "  --target T        clawq (default), beanstalkd, redis or nats "
            "(those compiled\n"
            "                    in: --list-targets); every target runs the "
            "same workload\n"
            "  --server ADDR     clawqd client address; 127.0.0.1 only "
            "(default 127.0.0.1:7700)\n"
            "  --cluster A,B,C   clawq: the client addresses of a cluster's "
            "nodes (libclawq\n"
            "                    follows the leader)\n"
            "  --addr ADDR       the target's address, 127.0.0.1:PORT "
            "(defaults: beanstalkd\n"
            "                    11300, redis 6379, nats 4222; clawq as "
            "--server)\n"
            "  --durability D    durable (default) or fast: the servers' "
            "setting, recorded\n"
            "                    in the output; nats acks with AckSync when "
            "durable\n"
            "  --producers P     producer threads, one connection each "
            "(default 4)\n"
            "  --consumers C     consumer threads, one connection each "
            "(default 4)\n"
            "  --batch N         tasks per put, pull and ack request, "
            "1..1024 (default 64)\n"
            "  --payload BYTES   payload size, %u..1048576 (default 64)\n"
            "  --tasks N         tasks to put (default 200000); with "
            "--duration, the cap\n"
            "                    (default 50000000)\n"
            "  --duration SEC    put for SEC seconds instead of a count, "
            "then drain\n"
            "  --rate N          offer N tasks/s in all, one request every "
            "batch / N s,\n"
            "                    the producers taking turns (default: as fast "
            "as they go;\n"
            "                    latency is then mostly queueing)\n"
            "  --queue NAME      queue (default bench-PID-RUN, a fresh one)\n"
            "  --inflight K      put requests in flight per producer, "
            "pulls in flight per\n"
            "                    consumer (each pulled batch is acked "
            "while the next\n"
            "                    pulls are outstanding); default 1\n"
            "  --sync            blocking calls instead: one request in "
            "flight per thread\n"
            "                    (clawq; the other targets always run so, "
            "a batch being\n"
            "                    their pipelined commands)\n"
            "  --fill-drain      put every task first, then drain them\n"
            "  --json            also print one JSON summary line\n"
            "  --wait-ms MS      long-poll wait of a pull (default 100)\n"
            "  --max-depth N     set the queue's max_depth first: producers "
            "back off on\n"
            "                    QUEUE_FULL by the broker's retry_after_ms "
            "and put again\n"
            "  --lease-ms MS     lease per pull, long enough that none "
            "expire (default 600000)\n"
            "  --timeout SEC     bound on the run, and again on the drain "
            "(default 600)\n"
            "  --fsync-floor DIR print the disk's fsync floor in DIR and "
            "exit\n"
            "  --list-targets    print the targets compiled in and exit\n",
            HDR_LEN);
}

static uint64_t parse_u64(const char *flag, const char *v, uint64_t min,
                          uint64_t max)
{
    char *end;
    unsigned long long x;

    errno = 0;
    x = strtoull(v, &end, 10);
    if (errno != 0 || *v == '\0' || *v == '-' || *end != '\0' || x < min ||
        x > max) {
        fprintf(stderr,
                "clawq-bench: %s wants a number in %" PRIu64 "..%" PRIu64 "\n",
                flag, min, max);
        exit(2);
    }
    return x;
}

static double parse_seconds(const char *flag, const char *v)
{
    char *end;
    double x;

    errno = 0;
    x = strtod(v, &end);
    if (errno != 0 || *v == '\0' || *end != '\0' || !(x > 0) || x > 86400) {
        fprintf(stderr, "clawq-bench: %s wants seconds in (0, 86400]\n", flag);
        exit(2);
    }
    return x;
}

/* The bench talks to 127.0.0.1 only: "127.0.0.1:PORT", or with list a
 * comma-separated list of them. */
static bool server_ok(const char *s, bool list)
{
    const char *p = "127.0.0.1:";
    char *end;
    unsigned long port;

    for (;;) {
        if (strncmp(s, p, strlen(p)) != 0)
            return false;
        errno = 0;
        port = strtoul(s + strlen(p), &end, 10);
        if (errno != 0 || port == 0 || port > 65535)
            return false;
        if (*end == '\0')
            return true;
        if (*end != ',' || !list)
            return false;
        s = end + 1;
    }
}

int main(int argc, char **argv)
{
    bench *b = xcalloc(1, sizeof(*b));
    opts *o = &b->o;
    int rc;

    o->server = NULL;
    o->target = &bench_clawq;
    o->durable = true;
    o->producers = 4;
    o->consumers = 4;
    o->batch = 64;
    o->payload = 64;
    o->inflight = 1;
    o->wait_ms = 100;
    o->lease_ms = 600000;
    o->timeout_s = 600;
    o->tasks = 200000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--fill-drain") == 0) {
            o->fill_drain = true;
            continue;
        }
        if (strcmp(a, "--json") == 0) {
            o->json = true;
            continue;
        }
        if (strcmp(a, "--sync") == 0) {
            o->sync = true;
            continue;
        }
        if (strcmp(a, "--list-targets") == 0) {
            printf("%s\n", bench_adapter_names());
            return 0;
        }
        if (v == NULL) {
            fprintf(stderr, "clawq-bench: unknown or incomplete flag %s\n", a);
            usage(stderr);
            return 2;
        }
        if (strcmp(a, "--server") == 0 || strcmp(a, "--cluster") == 0) {
            if (!server_ok(v, strcmp(a, "--cluster") == 0)) {
                fprintf(stderr, "clawq-bench: %s wants 127.0.0.1:PORT%s\n", a,
                        strcmp(a, "--cluster") == 0 ? ",..." : "");
                return 2;
            }
            o->server = v;
        } else if (strcmp(a, "--addr") == 0) {
            if (!server_ok(v, false)) {
                fprintf(stderr, "clawq-bench: --addr wants 127.0.0.1:PORT\n");
                return 2;
            }
            o->addr = v;
        } else if (strcmp(a, "--target") == 0) {
            o->target = bench_adapter_find(v);
            if (o->target == NULL) {
                fprintf(stderr,
                        "clawq-bench: --target %s is not compiled in "
                        "(have: %s)\n",
                        v, bench_adapter_names());
                return 2;
            }
        } else if (strcmp(a, "--durability") == 0) {
            if (strcmp(v, "durable") != 0 && strcmp(v, "fast") != 0) {
                fprintf(stderr, "clawq-bench: --durability wants durable or "
                                "fast\n");
                return 2;
            }
            o->durable = strcmp(v, "durable") == 0;
        } else if (strcmp(a, "--fsync-floor") == 0) {
            fsync_floor_print("clawq-bench", v);
            return 0;
        } else if (strcmp(a, "--producers") == 0)
            o->producers = (uint32_t)parse_u64(a, v, 1, 256);
        else if (strcmp(a, "--consumers") == 0)
            o->consumers = (uint32_t)parse_u64(a, v, 1, 256);
        else if (strcmp(a, "--batch") == 0)
            o->batch = (uint32_t)parse_u64(a, v, 1, CLAWQ_MAX_BATCH_TASKS);
        else if (strcmp(a, "--payload") == 0)
            o->payload = (uint32_t)parse_u64(a, v, HDR_LEN, 1 << 20);
        else if (strcmp(a, "--tasks") == 0) {
            o->tasks = parse_u64(a, v, 1, 1000000000);
            o->tasks_set = true;
        } else if (strcmp(a, "--rate") == 0)
            o->rate = parse_u64(a, v, 1, 100000000);
        else if (strcmp(a, "--duration") == 0)
            o->duration_s = parse_seconds(a, v);
        else if (strcmp(a, "--queue") == 0) {
            if (strlen(v) == 0 || strlen(v) > CLAWQ_MAX_QUEUE_NAME) {
                fprintf(stderr, "clawq-bench: --queue wants 1..%d bytes\n",
                        CLAWQ_MAX_QUEUE_NAME);
                return 2;
            }
            snprintf(o->queue, sizeof(o->queue), "%s", v);
        } else if (strcmp(a, "--inflight") == 0)
            o->inflight = (uint32_t)parse_u64(a, v, 1, 1024);
        else if (strcmp(a, "--wait-ms") == 0)
            o->wait_ms = (uint32_t)parse_u64(a, v, 0, 60000);
        else if (strcmp(a, "--max-depth") == 0)
            o->max_depth = parse_u64(a, v, 1, UINT64_C(1) << 40);
        else if (strcmp(a, "--lease-ms") == 0)
            o->lease_ms = (uint32_t)parse_u64(a, v, 1, 86400000);
        else if (strcmp(a, "--timeout") == 0)
            o->timeout_s = (uint32_t)parse_u64(a, v, 1, 86400);
        else {
            fprintf(stderr, "clawq-bench: unknown flag %s\n", a);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (o->target != &bench_clawq) {
        if (o->server != NULL || o->max_depth > 0 || o->inflight > 1) {
            fprintf(stderr, "clawq-bench: --server, --cluster, --max-depth "
                            "and --inflight are clawq's\n");
            return 2;
        }
        o->sync = true; /* one batch of pipelined commands in flight */
        if (o->addr == NULL)
            o->addr = o->target->default_addr;
    } else {
        if (o->server == NULL)
            o->server = o->addr != NULL ? o->addr : o->target->default_addr;
        o->addr = o->server;
    }
    if (o->sync && o->inflight > 1) {
        fprintf(stderr, "clawq-bench: --sync keeps one request in flight; "
                        "drop --inflight\n");
        return 2;
    }
    if (o->duration_s > 0 && !o->tasks_set)
        o->tasks = 50000000;
    if (o->tasks < o->producers)
        o->producers = (uint32_t)o->tasks;

    b->run_id = (uint32_t)getpid() ^ (uint32_t)now_ns();
    if (o->queue[0] == '\0')
        snprintf(o->queue, sizeof(o->queue), "bench-%ld-%08x", (long)getpid(),
                 b->run_id);
    b->cfg.addr = o->addr;
    b->cfg.queue = o->queue;
    b->cfg.lease_ms = o->lease_ms;
    b->cfg.wait_ms = o->wait_ms;
    b->cfg.batch = o->batch;
    b->cfg.inflight = o->inflight;
    b->cfg.durable = o->durable;
    b->per_producer = o->tasks / o->producers + 1;
    b->put_map = xcalloc(o->producers, sizeof(*b->put_map));
    b->done_map = xcalloc(o->producers, sizeof(*b->done_map));
    for (uint32_t i = 0; i < o->producers; i++) {
        size_t words = (size_t)((b->per_producer + 63) / 64);
        b->put_map[i] = xcalloc(words, sizeof(uint64_t));
        b->done_map[i] = xcalloc(words, sizeof(uint64_t));
    }
    rc = run(b);
    for (uint32_t i = 0; i < o->producers; i++) {
        free(b->put_map[i]);
        free(b->done_map[i]);
    }
    free(b->put_map);
    free(b->done_map);
    free(b);
    return rc;
}
