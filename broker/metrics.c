/* metrics.c: latency histograms and drain rates. See metrics.h.
 *
 * The drain rate is measured over windows of one second and smoothed
 * (new = 0.5 * old + 0.5 * window), so a queue that stops draining is seen
 * within a few seconds. A rate is read with the current window's partial
 * count folded in, so a fresh queue is not reported as stalled. */
#include "metrics.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define WINDOW_MS 1000

const double metrics_bounds[METRICS_BUCKETS] = {
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
};

void metrics_init(metrics *m)
{
    memset(m, 0, sizeof(*m));
}

void metrics_fini(metrics *m)
{
    free(m->queues);
    memset(m, 0, sizeof(*m));
}

void metrics_hist_observe(metrics_hist *h, double seconds)
{
    size_t i;

    if (seconds < 0)
        seconds = 0;
    for (i = 0; i < METRICS_BUCKETS && seconds > metrics_bounds[i]; i++)
        ;
    h->counts[i]++;
    h->count++;
    h->sum += seconds;
}

static size_t queue_index(const metrics *m, uint32_t qid)
{
    size_t i;
    for (i = 0; i < m->n_queues && m->queues[i].qid != qid; i++)
        ;
    return i;
}

const metrics_queue *metrics_queue_find(const metrics *m, uint32_t qid)
{
    size_t i = queue_index(m, qid);
    return i < m->n_queues ? &m->queues[i] : NULL;
}

static metrics_queue *queue_get(metrics *m, uint32_t qid)
{
    size_t i = queue_index(m, qid);
    metrics_queue *q;

    if (i < m->n_queues)
        return &m->queues[i];
    if (m->n_queues == m->cap_queues) {
        size_t cap = m->cap_queues ? m->cap_queues * 2 : 8;
        metrics_queue *p = realloc(m->queues, cap * sizeof(*p));
        if (p == NULL)
            return NULL;
        m->queues = p;
        m->cap_queues = cap;
    }
    q = &m->queues[m->n_queues++];
    memset(q, 0, sizeof(*q));
    q->qid = qid;
    return q;
}

/* Closes the windows that ended by now_ms. */
static void roll(metrics_queue *q, uint64_t now_ms)
{
    if (q->window_start_ms == 0) {
        q->window_start_ms = now_ms;
        return;
    }
    while (now_ms >= q->window_start_ms + WINDOW_MS) {
        double w = (double)q->window_settled * 1000.0 / WINDOW_MS;
        q->drain_rate = 0.5 * q->drain_rate + 0.5 * w;
        q->window_settled = 0;
        q->window_start_ms += WINDOW_MS;
        if (q->drain_rate < 1e-3 &&
            now_ms >= q->window_start_ms + 10 * WINDOW_MS) {
            q->drain_rate = 0;
            q->window_start_ms = now_ms; /* long idle: skip ahead */
        }
    }
}

void metrics_settled(metrics *m, uint32_t qid, bool ack, uint64_t now_ms,
                     uint64_t created_ms, uint64_t leased_at_ms)
{
    metrics_queue *q = queue_get(m, qid);

    if (q == NULL)
        return;
    if (ack && created_ms != 0 && now_ms >= created_ms)
        metrics_hist_observe(&q->put_to_ack,
                             (double)(now_ms - created_ms) / 1000.0);
    if (leased_at_ms != 0 && now_ms >= leased_at_ms)
        metrics_hist_observe(&q->lease_held,
                             (double)(now_ms - leased_at_ms) / 1000.0);
    roll(q, now_ms);
    q->window_settled++;
}

uint32_t metrics_retry_after_ms(const metrics *m, uint32_t qid, uint64_t now_ms)
{
    const metrics_queue *q = metrics_queue_find(m, qid);
    double rate, partial;
    uint64_t elapsed;

    if (q == NULL)
        return 1000;
    rate = q->drain_rate;
    elapsed = now_ms > q->window_start_ms ? now_ms - q->window_start_ms : 0;
    if (elapsed > 0 && elapsed < WINDOW_MS) {
        partial = (double)q->window_settled * 1000.0 / (double)elapsed;
        if (partial > rate)
            rate = partial;
    }
    if (rate <= 0)
        return 1000;
    if (1000.0 / rate < 10)
        return 10;
    if (1000.0 / rate > 5000)
        return 5000;
    return (uint32_t)(1000.0 / rate + 0.5);
}
