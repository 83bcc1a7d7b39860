/* metrics.h: what the broker measures in memory, beyond the store's exact
 * counters: per queue (by qid) latency histograms — put to ack, and how
 * long leases are held until settled — and the recent drain rate (settled
 * tasks per second), which gives QUEUE_FULL its retry_after_ms hint. Fed
 * by session as replies go out; read by http (/metrics) and the scaler.
 * Not replicated: each node measures what it serves. */
#ifndef CLAWQ_METRICS_H
#define CLAWQ_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Histogram upper bounds in seconds (Prometheus `le`), then +Inf. */
#define METRICS_BUCKETS 14
extern const double metrics_bounds[METRICS_BUCKETS];

typedef struct metrics_hist {
    uint64_t counts[METRICS_BUCKETS + 1]; /* per bucket, last = +Inf */
    uint64_t count;
    double sum; /* seconds */
} metrics_hist;

typedef struct metrics_queue {
    uint32_t qid;
    metrics_hist put_to_ack; /* created -> acked */
    metrics_hist lease_held; /* leased -> settled (ack, nack, fail) */
    double drain_rate;       /* settled tasks/s, smoothed */
    uint64_t window_start_ms;
    uint64_t window_settled;
} metrics_queue;

typedef struct metrics {
    metrics_queue *queues;
    size_t n_queues, cap_queues;
} metrics;

void metrics_init(metrics *m);
void metrics_fini(metrics *m);

void metrics_hist_observe(metrics_hist *h, double seconds);

/* A task of queue qid was settled at now_ms: acked (ack = true, counts in
 * both histograms) or nacked / failed (lease_held only). Times of 0 are
 * not observed. */
void metrics_settled(metrics *m, uint32_t qid, bool ack, uint64_t now_ms,
                     uint64_t created_ms, uint64_t leased_at_ms);

/* The queue's entry, or NULL when nothing was measured for it. */
const metrics_queue *metrics_queue_find(const metrics *m, uint32_t qid);

/* How long a producer facing a full queue should wait: the time one task
 * takes to drain at the recent rate, 10 ms .. 5 s; 1 s when nothing
 * drains. */
uint32_t metrics_retry_after_ms(const metrics *m, uint32_t qid,
                                uint64_t now_ms);

#endif /* CLAWQ_METRICS_H */
