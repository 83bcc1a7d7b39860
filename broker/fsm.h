/* fsm.h: the deterministic state machine of the task model.
 *
 * fsm_apply applies one command (cmd.h) to the store in one LMDB write
 * transaction, together with the Raft index it came from; a command at or
 * below the recorded index is skipped, so replaying the log after a
 * restart is harmless. All time comes from the command's now_ms: replicas
 * that apply the same commands hold byte-identical stores.
 *
 * The module also owns the read side (stats, peek, dead-letter listing),
 * each in one read transaction, and the next due time the scheduler waits
 * for.
 *
 * Results are copied out of LMDB into the fsm_result, which owns them
 * until the next reset; no pointer into the map escapes.
 */
#ifndef CLAWQ_FSM_H
#define CLAWQ_FSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmd.h"
#include "record.h"
#include "store.h"

/* A task as handed to a worker (lease), an operator (peek, dlq) or a test.
 * Byte fields point into the owning fsm_result's arena. */
typedef struct fsm_task {
    uint64_t id;
    uint8_t state; /* enum task_state */
    uint8_t priority;
    uint8_t dead_reason;
    uint32_t attempt;
    uint32_t max_attempts; /* effective: the task's or the queue's */
    uint64_t created_ms, run_at_ms, deadline_ms, ready_at_ms, dead_at_ms;
    uint64_t lease_id, lease_expires_ms, progress;
    cq_bytes queue;
    cq_bytes payload;
    cq_bytes checkpoint;
    cq_bytes headers;
    cq_bytes worker;
    cq_bytes idem_key;
    cq_bytes last_error;
    uint32_t n_errors;
    task_error errors[TASK_MAX_ERRORS];
} fsm_task;

/* The outcome of one op. */
typedef struct fsm_op_result {
    int status;     /* 0 or a negative clawq_err */
    uint8_t type;   /* enum cmd_type */
    bool duplicate; /* put: answered by the idempotency key */
    uint64_t id;    /* put: the task id; settle/extend: the task */
    uint64_t value; /* extend: new expiry; replay/purge: tasks affected;
                       tick: items handled */
    bool more;      /* tick: more items were due than `max` */
    uint32_t qid;   /* settle (ack, nack, fail): the task's queue */
    uint64_t created_ms, leased_at_ms; /* settle: for latency metrics */
    size_t first_task, n_tasks;        /* lease: the tasks in result->tasks */
} fsm_op_result;

/* What one fsm_apply (or a read) produced. Reused across calls. */
typedef struct fsm_result {
    uint64_t index;  /* the Raft index applied */
    uint64_t now_ms; /* the command's clock */
    bool skipped;    /* at or below the applied index: nothing done */
    size_t n_ops;
    fsm_op_result *ops;
    size_t n_tasks;
    fsm_task *tasks;
    char detail[160]; /* a human reason for the last failing op, or "" */
    /* private */
    size_t ops_cap, tasks_cap;
    struct fsm_arena *arena;
    struct fsm_scratch *scratch;
} fsm_result;

void fsm_result_init(fsm_result *r);
/* Forgets the contents, keeping the memory for reuse. */
void fsm_result_reset(fsm_result *r);
/* Like fsm_result_reset, but keeps no more memory than a typical result
 * needs (one 64 KiB arena block, ops and tasks for a batch of 1,024,
 * working buffers up to 64 KiB): for a result kept idle for reuse. */
void fsm_result_trim(fsm_result *r);
void fsm_result_fini(fsm_result *r);

/* Applies the command in buf (cmd.h layout) at Raft index `index` (> 0).
 * Returns 0 when the command was applied or skipped, with per-op outcomes
 * in *res; CLAWQ_ECORRUPT when the command does not decode (for a
 * committed entry that is fatal); CLAWQ_ESTORAGE_FULL when not even the
 * applied index could be recorded; another negative code on I/O failure.
 *
 * When the map fills, the map grows and the command is retried; when it
 * cannot grow, every op fails with CLAWQ_ESTORAGE_FULL (detail says why),
 * only the applied index advances, and the store stays consistent. Puts
 * fail with CLAWQ_ESTORAGE_FULL earlier, while free space is below the
 * store's reserve, so that acks and purges can still drain it. While a
 * snapshot is pinned the map cannot grow: a command that needs more room
 * then returns CLAWQ_EUNAVAILABLE with nothing applied (retry it after
 * store_snapshot_end; clawqd never pins across an apply). */
int fsm_apply(store *s, uint64_t index, const void *buf, size_t len,
              fsm_result *res);

/* The queue's retry delay after failed attempt number `attempt` (>= 1):
 * d = min(backoff_max_ms, backoff_base_ms * 2^(attempt - 1)), then "equal
 * jitter": d/2 + (cq_mix64(id ^ (lease_id << 1)) % (d/2 + 1)). Pure, so
 * every replica draws the same delay; exposed for tests. */
uint64_t fsm_backoff_ms(const queue_settings *qs, uint32_t attempt, uint64_t id,
                        uint64_t lease_id);

/* Read side. */

typedef struct fsm_queue_stats {
    char name[QUEUE_NAME_MAX + 1];
    queue_rec rec;
} fsm_queue_stats;

/* Stats of one queue: CLAWQ_ENOT_FOUND for an unknown queue. */
int fsm_queue_stats_get(store *s, cq_bytes queue, fsm_queue_stats *out);

/* Every queue in name order, as a malloc'd array the caller frees. */
int fsm_queue_list(store *s, fsm_queue_stats **out, size_t *n);

/* Up to `max` tasks of a queue in one state, without changing them, into
 * res->tasks (reset first): ready in lease order, delayed by run_at, leased
 * by expiry, dead by dead_at. CLAWQ_ENOT_FOUND for an unknown queue. */
int fsm_peek(store *s, cq_bytes queue, int state, size_t max, fsm_result *res);

/* Dead tasks of a queue that match the filter (the fields of cmd_dlq;
 * max 0 = CMD_DLQ_DEFAULT), oldest first, starting after task `after_id`
 * at time `after_ms` (both 0 = from the start), into res->tasks. */
int fsm_dlq_list(store *s, const cmd_dlq *filter, uint64_t after_ms,
                 uint64_t after_id, fsm_result *res);

/* One task by id into res->tasks[0]; CLAWQ_ENOT_FOUND if absent. */
int fsm_task_get(store *s, uint64_t id, fsm_result *res);

/* The client address node_id registered (a leader registers its own when
 * elected), into buf (NUL-terminated): CLAWQ_ENOT_FOUND when unknown. */
int fsm_member_addr(store *s, uint32_t node_id, char *buf, size_t len);

/* The earliest time a tick has work (a delayed task due, a lease or
 * deadline running out, an idempotency key expiring), or 0 when nothing is
 * scheduled. */
int fsm_next_due(store *s, uint64_t *due_ms);

#endif /* CLAWQ_FSM_H */
