/* record.h: the records and keys of the task model (DESIGN.md sections 2
 * and 3): task and queue records as msgpack maps with small integer keys
 * (unknown keys are skipped, so new fields never break old readers), and
 * the big-endian key layouts of every database. No LMDB, no policy.
 *
 * Decoded records borrow: every cq_bytes in a decoded record points into
 * the buffer it was decoded from.
 */
#ifndef CLAWQ_RECORD_H
#define CLAWQ_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mp.h"
#include "util.h"

enum task_state {
    TASK_READY = 1,
    TASK_DELAYED = 2,
    TASK_LEASED = 3,
    TASK_DEAD = 4,
};

enum dead_reason {
    DEAD_NONE = 0,
    DEAD_FAILED = 1,       /* the worker called fail */
    DEAD_MAX_ATTEMPTS = 2, /* nack or lease expiry with attempts used up */
    DEAD_EXPIRED = 3,      /* past its deadline */
};

/* "failed", "max_attempts", "expired" or "" */
const char *dead_reason_name(int reason);
/* "ready", "delayed", "leased", "dead" or "" */
const char *task_state_name(int state);

#define TASK_MAX_ERRORS 5     /* a task keeps its last errors, newest first */
#define QUEUE_NAME_MAX 128    /* bytes */
#define TASK_ERROR_MAX 1024   /* bytes of one error text kept */
#define TASK_WORKER_MAX 128   /* bytes of a worker name */
#define TASK_HEADERS_MAX 8192 /* bytes of encoded headers */
#define TASK_KEY_MAX 256      /* bytes of an idempotency key */
#define TASK_CHECKPOINT_MAX (1024 * 1024)

typedef struct task_error {
    uint64_t at_ms;
    uint32_t attempt;
    cq_bytes msg;
} task_error;

typedef struct task_rec {
    uint64_t id;
    uint32_t qid;
    uint8_t state;    /* enum task_state */
    uint8_t priority; /* 0 most urgent .. 255 */
    uint8_t dead_reason;
    uint32_t attempt;      /* deliveries so far */
    uint32_t max_attempts; /* 0 = the queue's */
    uint64_t created_ms;
    uint64_t run_at_ms;   /* delayed until; 0 = not delayed */
    uint64_t deadline_ms; /* 0 = none */
    uint64_t seq;         /* position in `ready` while ready */
    uint64_t ready_at_ms; /* when it last became ready */
    uint64_t lease_id;    /* the last lease's fencing token; 0 = never */
    uint64_t lease_expires_ms;
    uint64_t leased_at_ms; /* when the current lease began */
    uint64_t progress;
    uint64_t dead_at_ms;
    cq_bytes worker;
    cq_bytes checkpoint;
    cq_bytes idem_key;
    cq_bytes headers; /* msgpack array of strings k1, v1, k2, v2, ... */
    cq_bytes payload;
    uint32_t n_errors;
    task_error errors[TASK_MAX_ERRORS];
} task_rec;

typedef struct queue_settings {
    uint32_t lease_ms;
    uint32_t max_attempts;
    uint32_t backoff_base_ms;
    uint32_t backoff_max_ms;
    uint64_t max_depth; /* ready + delayed + leased; 0 = unbounded */
    uint32_t max_payload;
    uint64_t dedup_window_ms;
    bool paused;
} queue_settings;

typedef struct queue_counters {
    uint64_t ready, delayed, leased, dead;
    uint64_t put_total;     /* tasks stored (duplicates not counted) */
    uint64_t deduped_total; /* puts answered by an idempotency key */
    uint64_t leased_total;  /* deliveries */
    uint64_t acked_total;
    uint64_t nacked_total;
    uint64_t failed_total;  /* explicit fail calls */
    uint64_t expired_total; /* leases that ran out */
    uint64_t dead_total;    /* tasks moved to the dead-letter queue */
} queue_counters;

/* The leader's periodic summary of the workers' load reports for a queue,
 * replicated so every node answers the autoscaler alike. */
typedef struct queue_workers {
    uint32_t workers;
    uint32_t median_capacity;
    uint64_t capacity;
    uint64_t inflight;
    uint64_t at_ms; /* when the leader made it; 0 = never */
} queue_workers;

typedef struct queue_rec {
    uint32_t qid;
    uint64_t created_ms;
    uint64_t oldest_ready_ms; /* ready_at of the oldest ready task; 0 = none */
    queue_settings settings;
    queue_counters counters;
    queue_workers workers;
} queue_rec;

/* Queue settings defaults (DESIGN.md section 2). */
void queue_settings_default(queue_settings *s);

/* A queue name is 1..QUEUE_NAME_MAX bytes of [A-Za-z0-9._:-]. */
bool queue_name_is_valid(cq_bytes name);

/* Encoders append to `out`; they return 0 or a cq_buf error. */
int task_rec_encode(const task_rec *t, cq_buf *out);
int queue_rec_encode(const queue_rec *q, cq_buf *out);

/* Decoders return 0 or CLAWQ_ECORRUPT; they never read past len. */
int task_rec_decode(const void *buf, size_t len, task_rec *out);
int queue_rec_decode(const void *buf, size_t len, queue_rec *out);

/* Key layouts (big-endian, so byte order is numeric order). Each writes
 * into `key`, which must hold the stated size, and returns the length. */
#define KEY_TASK_LEN 8     /* id */
#define KEY_READY_LEN 13   /* qid(4) priority(1) seq(8) */
#define KEY_TIME_ID_LEN 16 /* at_ms(8) id(8): delayed, leases, deadlines */
#define KEY_DEAD_LEN 20    /* qid(4) dead_at(8) id(8) */
#define KEY_IDEM_MAX (4 + TASK_KEY_MAX)      /* qid(4) key */
#define KEY_IDEM_EXP_MAX (12 + TASK_KEY_MAX) /* at_ms(8) qid(4) key */
#define READY_VAL_LEN 16                     /* id(8) ready_at(8) */
#define IDEM_VAL_LEN 16                      /* id(8) expires_at(8) */

size_t key_task(uint8_t *key, uint64_t id);
size_t key_ready(uint8_t *key, uint32_t qid, uint8_t priority, uint64_t seq);
size_t key_time_id(uint8_t *key, uint64_t at_ms, uint64_t id);
size_t key_dead(uint8_t *key, uint32_t qid, uint64_t dead_at_ms, uint64_t id);
size_t key_idem(uint8_t *key, uint32_t qid, cq_bytes idem_key);
size_t key_idem_exp(uint8_t *key, uint64_t at_ms, uint32_t qid,
                    cq_bytes idem_key);

#endif /* CLAWQ_RECORD_H */
