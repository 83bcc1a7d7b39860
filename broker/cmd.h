/* cmd.h: the commands of the state machine and their msgpack codec.
 *
 * A command is what one Raft log entry carries and one fsm_apply applies
 * in one LMDB transaction: the leader's clock (now_ms) and a batch of ops,
 * each one client operation (put one task, lease up to N, ack one, ...).
 * The broker packs the ops of one loop turn into one command.
 *
 * Wire layout (msgpack): [CMD_FORMAT_VERSION, now_ms, [op, op, ...]], each
 * op an array [type, fields...] in the order of the structs below; strings
 * and byte fields are msgpack bin or str, optional ones nil.
 *
 * The Raft log wants entries of a multiple of 8 bytes (CMD_ALIGN): the
 * decoder ignores up to 7 zero bytes of padding after the command.
 *
 * The decoder checks structure and types and rejects anything malformed
 * with CLAWQ_ECORRUPT without crashing; it does not judge meaning (a bad
 * queue name decodes and fails at apply time with CLAWQ_EINVALID).
 */
#ifndef CLAWQ_CMD_H
#define CLAWQ_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "record.h"
#include "util.h"

#define CMD_FORMAT_VERSION 1
#define CMD_MAX_OPS 65536         /* ops in one command */
#define CMD_MAX_BYTES (64u << 20) /* bytes of one encoded command */
#define CMD_LEASE_MAX 1024        /* tasks one lease op may take */
#define CMD_ALIGN 8               /* entries are padded to a multiple of this */

enum cmd_type {
    CMD_PUT = 1,
    CMD_LEASE = 2,
    CMD_EXTEND = 3,
    CMD_ACK = 4,
    CMD_NACK = 5,
    CMD_FAIL = 6,
    CMD_TICK = 7,
    CMD_QUEUE_SET = 8,
    CMD_QUEUE_PAUSE = 9,
    CMD_QUEUE_RESUME = 10,
    CMD_DLQ_REPLAY = 11,
    CMD_DLQ_PURGE = 12,
    CMD_QUEUE_PURGE = 13,
    CMD_WORKERS = 14,
    CMD_MEMBER = 15,
};

/* "put", "lease", ... or "" */
const char *cmd_type_name(int type);

typedef struct cmd_put {
    cq_bytes queue;
    cq_bytes payload;
    cq_bytes idem_key;     /* len 0 = none */
    cq_bytes headers;      /* msgpack array of strings; len 0 = none */
    uint64_t run_at_ms;    /* absolute; <= now means ready now */
    uint64_t deadline_ms;  /* absolute; 0 = none */
    uint32_t max_attempts; /* 0 = the queue's */
    uint8_t priority;
} cmd_put;

typedef struct cmd_lease {
    cq_bytes queue;
    cq_bytes worker;    /* who holds the leases (connection / worker name) */
    uint32_t max;       /* 1..CMD_LEASE_MAX */
    uint32_t lease_ms;  /* 0 = the queue's */
    uint32_t max_bytes; /* stop before the leased tasks' payloads,
                           checkpoints and headers pass this (at least one
                           task is always taken); 0 = no limit */
} cmd_lease;

typedef struct cmd_extend {
    uint64_t id;
    uint64_t lease_id;
    uint32_t lease_ms; /* new lease from now; 0 = the queue's */
    bool has_progress;
    uint64_t progress;
    bool has_checkpoint; /* false keeps the stored checkpoint */
    cq_bytes checkpoint;
} cmd_extend;

typedef struct cmd_settle { /* ack, nack, fail */
    uint64_t id;
    uint64_t lease_id;
    int64_t delay_ms; /* nack: < 0 = the queue's backoff policy */
    cq_bytes error;   /* nack, fail */
} cmd_settle;

typedef struct cmd_tick {
    uint32_t max; /* due items handled per kind; 0 = CMD_TICK_DEFAULT */
} cmd_tick;
#define CMD_TICK_DEFAULT 4096

enum queue_set_field {
    QSET_LEASE_MS = 1u << 0,
    QSET_MAX_ATTEMPTS = 1u << 1,
    QSET_BACKOFF_BASE_MS = 1u << 2,
    QSET_BACKOFF_MAX_MS = 1u << 3,
    QSET_MAX_DEPTH = 1u << 4,
    QSET_MAX_PAYLOAD = 1u << 5,
    QSET_DEDUP_WINDOW_MS = 1u << 6,
};

typedef struct cmd_queue_set {
    cq_bytes queue;
    uint32_t fields; /* enum queue_set_field: which of `settings` to set */
    queue_settings settings;
} cmd_queue_set;

typedef struct cmd_queue { /* pause, resume, queue_purge */
    cq_bytes queue;
} cmd_queue;

typedef struct cmd_dlq { /* dlq_replay, dlq_purge */
    cq_bytes queue;
    cq_bytes error_substr; /* only tasks whose last error contains it */
    uint64_t from_ms;      /* dead_at >= from_ms */
    uint64_t to_ms;        /* dead_at < to_ms; 0 = no bound */
    uint32_t max;          /* 0 = CMD_DLQ_DEFAULT */
} cmd_dlq;
#define CMD_DLQ_DEFAULT 10000

typedef struct cmd_workers { /* the leader's worker summary for a queue */
    cq_bytes queue;
    uint32_t workers;
    uint32_t median_capacity;
    uint64_t capacity;
    uint64_t inflight;
} cmd_workers;

typedef struct cmd_member { /* a node's client address, for redirects */
    uint32_t node_id;
    cq_bytes client_addr; /* 0..CMD_ADDR_MAX bytes; empty: it left */
} cmd_member;
#define CMD_ADDR_MAX 255

typedef struct cmd_op {
    uint8_t type; /* enum cmd_type */
    union {
        cmd_put put;
        cmd_lease lease;
        cmd_extend extend;
        cmd_settle settle;
        cmd_tick tick;
        cmd_queue_set queue_set;
        cmd_queue queue;
        cmd_dlq dlq;
        cmd_workers workers;
        cmd_member member;
    } u;
} cmd_op;

/* Builds one command op by op. The result stays in w->buf (ptr, len)
 * until cmd_writer_fini. */
typedef struct cmd_writer {
    cq_buf buf;
    uint32_t n_ops;
} cmd_writer;

void cmd_writer_init(cmd_writer *w);
void cmd_writer_fini(cmd_writer *w);
/* Starts a new command, dropping what the writer held. */
void cmd_writer_reset(cmd_writer *w);
/* Appends one op. Returns 0, CLAWQ_EINVALID for an unknown type,
 * CLAWQ_ETOO_LARGE past CMD_MAX_OPS / CMD_MAX_BYTES, or CLAWQ_ENOMEM. */
int cmd_writer_add(cmd_writer *w, const cmd_op *op);
/* Stamps now_ms and returns the encoded command, borrowed from the writer
 * until the next reset. */
cq_bytes cmd_writer_finish(cmd_writer *w, uint64_t now_ms);

/* Encodes one command of n ops into a fresh malloc'd buffer. */
int cmd_encode(uint64_t now_ms, const cmd_op *ops, size_t n, void **buf,
               size_t *len);

/* A decoded command. Its ops borrow from the decoded buffer, which must
 * outlive it. */
typedef struct cmd_batch {
    uint64_t now_ms;
    size_t n_ops;
    cmd_op *ops;
} cmd_batch;

/* Decodes a command. Returns 0 and a batch the caller frees with
 * cmd_batch_free, CLAWQ_ECORRUPT for malformed input, CLAWQ_ENOMEM. */
int cmd_decode(const void *buf, size_t len, cmd_batch **out);
void cmd_batch_free(cmd_batch *b);

#endif /* CLAWQ_CMD_H */
