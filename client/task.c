/* task.c: flattening of decoded tasks into one allocation. A caller of
 * clawq_pull gets an array it can free with one call, and the decoded
 * protobuf message is freed at once, so nothing in the public structures
 * points into protobuf-c's memory. */
#include "task.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

static const char empty_str[] = "";

#define ALIGN_UP(x)                                                            \
    (((x) + alignof(max_align_t) - 1) & ~(size_t)(alignof(max_align_t) - 1))

static size_t str_size(const char *s)
{
    return s != NULL ? strlen(s) + 1 : 0;
}

/* Bump allocator over the byte area of the block. */
typedef struct arena {
    uint8_t *p;
} arena;

static const char *arena_str(arena *a, const char *s)
{
    size_t len;
    char *d;

    if (s == NULL || s[0] == '\0')
        return empty_str;
    len = strlen(s) + 1;
    d = (char *)a->p;
    memcpy(d, s, len);
    a->p += len;
    return d;
}

static const uint8_t *arena_bytes(arena *a, const ProtobufCBinaryData *b)
{
    uint8_t *d = a->p;

    if (b->len > 0)
        memcpy(d, b->data, b->len);
    d[b->len] = 0;
    a->p += b->len + 1;
    return d;
}

clawq_task *clawq__tasks_copy(Clawq__Task *const *src, size_t n, int *err)
{
    size_t n_headers = 0, n_errors = 0, bytes = 0, off_h, off_e, off_b;
    size_t total;
    uint8_t *block;
    clawq_task *dst;
    clawq_header *hdr;
    clawq_task_error *errs;
    arena a;

    *err = 0;
    if (n == 0)
        return NULL;
    /* Everything here came out of one frame of at most max_frame bytes,
     * so these sums cannot overflow a size_t: each counted byte is at
     * least one input byte, and each pointer-sized entry at least two. */
    for (size_t i = 0; i < n; i++) {
        const Clawq__Task *t = src[i];

        n_headers += t->n_headers;
        n_errors += t->n_errors;
        bytes += str_size(t->queue) + str_size(t->dead_reason) +
                 str_size(t->idempotency_key) + str_size(t->worker);
        bytes += t->payload.len + 1 + t->checkpoint.len + 1;
        for (size_t j = 0; j < t->n_headers; j++)
            bytes +=
                str_size(t->headers[j]->key) + str_size(t->headers[j]->value);
        for (size_t j = 0; j < t->n_errors; j++)
            bytes += str_size(t->errors[j]->message);
    }
    off_h = ALIGN_UP(n * sizeof(clawq_task));
    off_e = ALIGN_UP(off_h + n_headers * sizeof(clawq_header));
    off_b = ALIGN_UP(off_e + n_errors * sizeof(clawq_task_error));
    total = off_b + bytes;
    block = calloc(1, total);
    if (block == NULL) {
        *err = CLAWQ_ENOMEM;
        return NULL;
    }
    dst = (clawq_task *)block;
    hdr = (clawq_header *)(block + off_h);
    errs = (clawq_task_error *)(block + off_e);
    a.p = block + off_b;
    for (size_t i = 0; i < n; i++) {
        const Clawq__Task *t = src[i];
        clawq_task *d = &dst[i];

        d->id = t->id;
        d->queue = arena_str(&a, t->queue);
        d->payload = arena_bytes(&a, &t->payload);
        d->payload_len = t->payload.len;
        d->priority = t->has_priority ? t->priority : CLAWQ_DEFAULT_PRIORITY;
        d->state = t->has_state && t->state >= 0 && t->state <= 4
                       ? (clawq_task_state)t->state
                       : CLAWQ_STATE_UNSPECIFIED;
        d->lease_id = t->lease_id;
        d->lease_expires_ms = t->lease_expires_ms;
        d->attempt = t->attempt;
        d->max_attempts = t->max_attempts;
        d->has_checkpoint = t->has_checkpoint;
        d->checkpoint = arena_bytes(&a, &t->checkpoint);
        d->checkpoint_len = t->checkpoint.len;
        d->progress = t->progress;
        d->headers = hdr;
        d->n_headers = t->n_headers;
        for (size_t j = 0; j < t->n_headers; j++) {
            hdr->key = arena_str(&a, t->headers[j]->key);
            hdr->value = arena_str(&a, t->headers[j]->value);
            hdr++;
        }
        d->created_ms = t->created_ms;
        d->run_at_ms = t->run_at_ms;
        d->deadline_ms = t->deadline_ms;
        d->ready_at_ms = t->ready_at_ms;
        d->dead_at_ms = t->dead_at_ms;
        d->dead_reason = arena_str(&a, t->dead_reason);
        d->errors = errs;
        d->n_errors = t->n_errors;
        for (size_t j = 0; j < t->n_errors; j++) {
            errs->at_ms = t->errors[j]->at_ms;
            errs->attempt = t->errors[j]->attempt;
            errs->message = arena_str(&a, t->errors[j]->message);
            errs++;
        }
        d->idempotency_key = arena_str(&a, t->idempotency_key);
        d->worker = arena_str(&a, t->worker);
    }
    return dst;
}

void clawq__queue_stats_copy(const Clawq__QueueStats *src,
                             clawq_queue_stats *dst)
{
    const Clawq__QueueSettings *qs = src->settings;

    memset(dst, 0, sizeof(*dst));
    if (src->name != NULL) {
        size_t len = strlen(src->name);

        if (len > CLAWQ_MAX_QUEUE_NAME)
            len = CLAWQ_MAX_QUEUE_NAME;
        memcpy(dst->name, src->name, len);
        dst->name[len] = '\0';
    }
    dst->ready = src->ready;
    dst->delayed = src->delayed;
    dst->leased = src->leased;
    dst->dead = src->dead;
    dst->put_total = src->put_total;
    dst->deduped_total = src->deduped_total;
    dst->leased_total = src->leased_total;
    dst->acked_total = src->acked_total;
    dst->nacked_total = src->nacked_total;
    dst->failed_total = src->failed_total;
    dst->expired_total = src->expired_total;
    dst->dead_total = src->dead_total;
    dst->oldest_ready_ms = src->oldest_ready_ms;
    dst->oldest_ready_age_ms = src->oldest_ready_age_ms;
    dst->workers = src->workers;
    dst->worker_capacity = src->worker_capacity;
    dst->worker_inflight = src->worker_inflight;
    dst->created_ms = src->created_ms;
    if (qs != NULL) {
        clawq_queue_settings *s = &dst->settings;

#define COPY_SETTING(field, bit)                                               \
    if (qs->has_##field) {                                                     \
        s->field = qs->field;                                                  \
        s->mask |= (bit);                                                      \
    }
        COPY_SETTING(lease_ms, CLAWQ_SET_LEASE_MS)
        COPY_SETTING(max_attempts, CLAWQ_SET_MAX_ATTEMPTS)
        COPY_SETTING(backoff_base_ms, CLAWQ_SET_BACKOFF_BASE_MS)
        COPY_SETTING(backoff_max_ms, CLAWQ_SET_BACKOFF_MAX_MS)
        COPY_SETTING(max_depth, CLAWQ_SET_MAX_DEPTH)
        COPY_SETTING(max_payload, CLAWQ_SET_MAX_PAYLOAD)
        COPY_SETTING(dedup_window_ms, CLAWQ_SET_DEDUP_WINDOW_MS)
#undef COPY_SETTING
        s->paused = qs->has_paused && qs->paused;
    }
}
