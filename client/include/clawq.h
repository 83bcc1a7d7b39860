/* clawq.h: the public interface of libclawq, the clawq client library.
 *
 * This is the only installed header. It owns the error table that the
 * broker, the client library, clawqctl and the wire protocol share: every
 * status has one name, one negative number and one message, generated from
 * CLAWQ_ERRNO_MAP below. Numbers are never renumbered or reused; new codes
 * are appended. The wire protocol carries the absolute value (0 = OK).
 *
 * Functions return 0 on success or a negative clawq_err. The client API
 * (connect, put, pull, ack, ...) follows the error table; its contract is
 * the comment that opens that part.
 */
#ifndef CLAWQ_H
#define CLAWQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CLAWQ_VERSION_MAJOR 0
#define CLAWQ_VERSION_MINOR 1
#define CLAWQ_VERSION_PATCH 0
#define CLAWQ_VERSION_HEX                                                      \
    ((CLAWQ_VERSION_MAJOR << 16) | (CLAWQ_VERSION_MINOR << 8) |                \
     CLAWQ_VERSION_PATCH)

#if defined(CLAWQ_BUILDING) && defined(__GNUC__)
#define CLAWQ_EXTERN __attribute__((visibility("default")))
#else
#define CLAWQ_EXTERN
#endif

/* X(name, number, message). The first thirteen are the wire statuses of
 * DESIGN.md section 5 in that order; the rest are the client's own or
 * local conditions. Append only. */
#define CLAWQ_ERRNO_MAP(X)                                                     \
    X(INVALID, -1, "invalid argument or request")                              \
    X(NOT_FOUND, -2, "not found")                                              \
    X(LEASE_LOST, -3, "lease lost: expired or re-issued")                      \
    X(NOT_LEADER, -4, "not the leader")                                        \
    X(QUEUE_FULL, -5, "queue full")                                            \
    X(UNAVAILABLE, -6, "unavailable")                                          \
    X(UNAUTHENTICATED, -7, "unauthenticated")                                  \
    X(FORBIDDEN, -8, "forbidden")                                              \
    X(TOO_LARGE, -9, "too large")                                              \
    X(TIMEOUT, -10, "timed out")                                               \
    X(SHUTTING_DOWN, -11, "shutting down")                                     \
    X(INTERNAL, -12, "internal error")                                         \
    X(CONN_LOST, -13, "connection lost")                                       \
    X(PROTOCOL, -14, "protocol error")                                         \
    X(NOMEM, -15, "out of memory")                                             \
    X(STORAGE_FULL, -16, "storage full")                                       \
    X(CORRUPT, -17, "corrupt data")                                            \
    X(IO, -18, "input/output error")

typedef enum clawq_err {
    CLAWQ_OK = 0,
#define CLAWQ__ERR_ENUM(name, num, msg) CLAWQ_E##name = (num),
    CLAWQ_ERRNO_MAP(CLAWQ__ERR_ENUM)
#undef CLAWQ__ERR_ENUM
} clawq_err;

/* The message of an error code: a static string, never NULL ("unknown
 * error" for a number outside the table). */
CLAWQ_EXTERN const char *clawq_strerror(int err);

/* The name of an error code without the prefix ("LEASE_LOST"), "OK" for 0,
 * or "UNKNOWN": a static string, never NULL. */
CLAWQ_EXTERN const char *clawq_err_name(int err);

/* ---- client API --------------------------------------------------------
 *
 * A blocking client for clawqd over TCP (proto/clawq.proto). A handle
 * (clawq_client) holds one connection at a time to one node of a cluster,
 * follows the leader (NOT_LEADER answers and Hello's leader hint), and
 * reconnects with capped exponential backoff when the connection drops.
 *
 * Threads: a handle is not thread-safe. Use one handle per thread (or
 * serialise every call on a handle yourself). Handles share nothing; the
 * library keeps no global state.
 *
 * Timeouts: every call is bounded by the handle's request_timeout_ms,
 * measured from the call's start and covering reconnects, leader
 * redirects and retries; clawq_pull adds its wait_ms on top. A call that
 * runs out of time returns CLAWQ_ETIMEOUT (the request may still be
 * applied by the broker; its late reply is discarded). A request that got
 * no answer in time also drops the connection (the node may be cut off by
 * a partition, which keeps TCP connections open), and the next call
 * connects starting from the next endpoint.
 *
 * Retries: a request is re-sent automatically on a new connection only
 * when doing so cannot apply it twice: reads (stats, queues, peek, task
 * get, DLQ list), idempotent admin calls (queue set, pause, resume),
 * report, and puts whose every task has an idempotency key. Any request
 * answered NOT_LEADER or SHUTTING_DOWN was refused, not applied, and is
 * re-sent to the leader (at most CLAWQ_MAX_REDIRECTS hops). Otherwise a
 * connection lost while a request was in flight returns CLAWQ_ECONN_LOST:
 * the outcome is unknown.
 *
 * Errors: functions return 0 (or a count, where documented) on success, or
 * a negative clawq_err. Wire status N is returned as -N. After an error,
 * clawq_errmsg() has the broker's or the library's detail and
 * clawq_retry_after_ms() the broker's hint. Out-parameters are written
 * only on success.
 *
 * Strings passed in are borrowed for the duration of the call. Strings in
 * returned structures are UTF-8 as the broker sent them, NUL-terminated,
 * never NULL ("" when absent).
 */

typedef struct clawq_client clawq_client;

#define CLAWQ_DEFAULT_PORT 7700
#define CLAWQ_DEFAULT_PRIORITY 128
#define CLAWQ_MAX_BATCH_TASKS 1024 /* tasks per put_batch, pull, ack_batch */
#define CLAWQ_MAX_QUEUE_NAME 128   /* bytes of [A-Za-z0-9._:-] */
#define CLAWQ_MAX_REDIRECTS                                                    \
    5 /* quick NOT_LEADER hops per call; then                                  \
         the call retries with a growing pause                                 \
         until its timeout */

/* Connection options. Initialise with clawq_options_init() and change the
 * fields you need; a zero field means "the default" as listed. */
typedef struct clawq_options {
    uint32_t connect_timeout_ms; /* per TCP connect + Hello; 0 = 5000 */
    uint32_t request_timeout_ms; /* per call, retries included; 0 = 30000 */
    const char *client_name;     /* sent in Hello and as the pull worker
                                    name; NULL = "libclawq" */
    const char *token;           /* bearer token; NULL = none */
    uint32_t max_frame;          /* cap on an incoming frame in bytes;
                                    0 = the broker's max_frame from Hello,
                                    within 16..256 MiB */
    uint32_t pipeline_window;    /* pipelined requests (clawq_put_async
                                    puts and tickets) in flight at once;
                                    0 = 256 */
    int no_follow;               /* nonzero: stay on the node connected to:
                                    do not move to the leader it names, and
                                    return CLAWQ_ENOT_LEADER to the caller
                                    instead of following it (to read one
                                    node's own view, e.g. its digest) */
} clawq_options;

/* Fills *opts with the defaults (all zero / NULL). Never fails. */
CLAWQ_EXTERN void clawq_options_init(clawq_options *opts);

/* Creates a handle for the comma-separated endpoints ("host:port,
 * host:port"; "[v6addr]:port" for IPv6 literals; a missing port means
 * CLAWQ_DEFAULT_PORT), connects to the first one that answers Hello and,
 * when that node names another node as leader, to the leader. opts may be
 * NULL for the defaults; its strings are copied. When the node knows no
 * leader yet (an election), asks it again for up to 1 s (at most
 * connect_timeout_ms) before settling for it.
 *
 * Blocks up to connect_timeout_ms per endpoint tried (each endpoint is
 * tried once). On success *out owns a new handle: free it with
 * clawq_close(). Errors: CLAWQ_EINVALID (bad endpoint list or options, out
 * NULL), CLAWQ_ENOMEM, CLAWQ_ECONN_LOST (no endpoint reachable),
 * CLAWQ_ETIMEOUT, CLAWQ_EUNAUTHENTICATED / CLAWQ_EFORBIDDEN (Hello refused),
 * CLAWQ_EPROTOCOL. On failure no handle exists, so there is no errmsg to
 * read: use clawq_connect2() to get the message. */
CLAWQ_EXTERN int clawq_connect(const char *endpoints, const clawq_options *opts,
                               clawq_client **out);

/* As clawq_connect(), and on failure copies a NUL-terminated detail
 * message (truncated to errbuf_len) into errbuf when errbuf is not NULL. */
CLAWQ_EXTERN int clawq_connect2(const char *endpoints,
                                const clawq_options *opts, clawq_client **out,
                                char *errbuf, size_t errbuf_len);

/* Closes the connection and frees the handle and everything it owns.
 * Pending clawq_put_async results and outstanding tickets are lost. c may
 * be NULL. */
CLAWQ_EXTERN void clawq_close(clawq_client *c);

/* The detail of the handle's last error: the broker's message, or the
 * library's (e.g. "connect 10.0.0.1:7700: Connection refused"); "" when
 * there is none. Borrowed: valid until the next call on c. */
CLAWQ_EXTERN const char *clawq_errmsg(const clawq_client *c);

/* The broker's retry hint (ms) that came with the last error
 * (QUEUE_FULL, UNAVAILABLE, SHUTTING_DOWN); 0 when none. */
CLAWQ_EXTERN uint32_t clawq_retry_after_ms(const clawq_client *c);

/* What the connected node said in its Hello answer. */
typedef struct clawq_server_info {
    uint32_t node_id;
    uint32_t leader_id; /* 0 = no leader known */
    const char *leader; /* the leader's client address, or "" */
    uint32_t max_frame; /* bytes per request frame */
    uint32_t max_batch; /* tasks per put / pull / ack */
    const char *server_version;
    const char *endpoint; /* "host:port" this handle is connected to */
} clawq_server_info;

/* Fills *info for the current connection, connecting first when the
 * handle is disconnected. The strings are borrowed from the handle and
 * valid until the next call on c. Errors as for a read request. */
CLAWQ_EXTERN int clawq_server_info_get(clawq_client *c,
                                       clawq_server_info *info);

/* ---- tasks ---- */

typedef enum clawq_task_state {
    CLAWQ_STATE_UNSPECIFIED = 0,
    CLAWQ_STATE_READY = 1,
    CLAWQ_STATE_DELAYED = 2,
    CLAWQ_STATE_LEASED = 3,
    CLAWQ_STATE_DEAD = 4
} clawq_task_state;

/* "ready", "delayed", "leased", "dead" or "unspecified": static. */
CLAWQ_EXTERN const char *clawq_task_state_name(clawq_task_state s);

typedef struct clawq_header {
    const char *key;
    const char *value;
} clawq_header;

typedef struct clawq_task_error {
    uint64_t at_ms; /* unix ms */
    uint32_t attempt;
    const char *message;
} clawq_task_error;

/* A task handed out by pull, or shown by peek, task get and DLQ list.
 * Everything it points to lives in the block returned with it. */
typedef struct clawq_task {
    uint64_t id;
    const char *queue;
    const uint8_t *payload; /* payload_len bytes; NUL-terminated as a
                               convenience (the NUL is not counted) */
    size_t payload_len;
    uint32_t priority;
    clawq_task_state state;
    uint64_t lease_id; /* fencing token for ack / nack / fail / extend */
    uint64_t lease_expires_ms;
    uint32_t attempt; /* deliveries so far, this one included */
    uint32_t max_attempts;
    bool has_checkpoint;
    const uint8_t *checkpoint; /* the last extend's checkpoint */
    size_t checkpoint_len;
    uint64_t progress;
    const clawq_header *headers;
    size_t n_headers;
    uint64_t created_ms;
    uint64_t run_at_ms;
    uint64_t deadline_ms; /* 0 = none */
    uint64_t ready_at_ms;
    uint64_t dead_at_ms;
    const char *dead_reason; /* "failed", "max_attempts", "expired" or "" */
    const clawq_task_error *errors; /* newest first */
    size_t n_errors;
    const char *idempotency_key;
    const char *worker;
} clawq_task;

/* Frees an array of tasks returned by this library (one allocation holds
 * the array and everything its tasks point to). NULL is a no-op. */
CLAWQ_EXTERN void clawq_tasks_free(clawq_task *tasks);

/* ---- put ---- */

/* One task to put. Initialise with clawq_put_task_init() (or
 * CLAWQ_PUT_TASK_INIT): a zeroed struct would mean priority 0, the most
 * urgent. */
typedef struct clawq_put_task {
    const void *payload; /* borrowed; may be NULL when payload_len is 0 */
    size_t payload_len;
    uint32_t priority;           /* 0 most urgent .. 255; default 128 */
    uint64_t delay_ms;           /* ready after now + delay_ms */
    uint64_t deadline_ms;        /* unix ms; 0 = none */
    const char *idempotency_key; /* NULL = none */
    const clawq_header *headers; /* n_headers entries, borrowed */
    size_t n_headers;
    uint32_t max_attempts; /* 0 = the queue's */
} clawq_put_task;

#define CLAWQ_PUT_TASK_INIT                                                    \
    {                                                                          \
        NULL, 0, CLAWQ_DEFAULT_PRIORITY, 0, 0, NULL, NULL, 0, 0                \
    }

/* Sets *t to CLAWQ_PUT_TASK_INIT. */
CLAWQ_EXTERN void clawq_put_task_init(clawq_put_task *t);

/* The outcome of one task of a batch. */
typedef struct clawq_put_result {
    int status;     /* 0 or a negative clawq_err for this task */
    uint64_t id;    /* the task's id when status is 0 */
    bool duplicate; /* answered by the idempotency key: id is the first
                       put's and nothing new was stored */
} clawq_put_result;

/* Puts one task on queue (created with default settings on first use).
 * On success writes the task's id to *id and, when duplicate is not
 * NULL, whether the idempotency key answered it. Blocks until the broker
 * has replicated the task. Errors: CLAWQ_EINVALID, CLAWQ_ETOO_LARGE,
 * CLAWQ_EQUEUE_FULL (see clawq_retry_after_ms), CLAWQ_EUNAVAILABLE,
 * CLAWQ_ECONN_LOST (outcome unknown: only without an idempotency key),
 * CLAWQ_ETIMEOUT, ... */
CLAWQ_EXTERN int clawq_put(clawq_client *c, const char *queue,
                           const clawq_put_task *task, uint64_t *id,
                           bool *duplicate);

/* Puts n tasks (1..CLAWQ_MAX_BATCH_TASKS) on queue in one request,
 * applied atomically in order. Returns:
 *   < 0  the request failed as a whole (not answered, refused, timed
 *        out, ...): results is unspecified;
 *     0  the broker answered and every task was stored (results[i], the
 *        caller's array of n, holds each task's id);
 *   > 0  the broker answered but that many tasks failed: results[i].status
 *        says which (clawq_errmsg names the first).
 * (Before 0.1 the status of the first failed task was returned, which
 * could not be told apart from a failed request.) */
CLAWQ_EXTERN int clawq_put_batch(clawq_client *c, const char *queue,
                                 const clawq_put_task *tasks, size_t n,
                                 clawq_put_result *results);

/* ---- pipelining ----
 *
 * clawq_put_async() sends a put without waiting for its answer;
 * clawq_flush() waits for the answers of every put_async since the last
 * flush. At most pipeline_window requests are in flight: put_async reads
 * answers (and keeps them) when the window is full, so it may block for
 * up to request_timeout_ms, but never waits for a reply to every request
 * it sent. Synchronous calls may be made between put_async and flush;
 * their replies are matched by request id.
 *
 * The handle keeps an encoded copy of each put until it is answered, so a
 * put answered NOT_LEADER / SHUTTING_DOWN, or one with an idempotency key
 * whose connection dropped, is re-sent; a put without a key whose
 * connection dropped completes with CLAWQ_ECONN_LOST. */

/* Queues a put of one task and sends it. Returns the put's sequence
 * number since the last flush (0, 1, ...) - its index in clawq_flush's
 * results - or a negative error: CLAWQ_EINVALID / CLAWQ_ETOO_LARGE for a bad
 * task (nothing queued), CLAWQ_ENOMEM, CLAWQ_ETIMEOUT (the window stayed
 * full), CLAWQ_ECONN_LOST (no connection could be made; nothing queued).
 * At most 1,048,576 puts may be pending between flushes. */
CLAWQ_EXTERN int clawq_put_async(clawq_client *c, const char *queue,
                                 const clawq_put_task *task);

/* The number of clawq_put_async calls since the last flush. */
CLAWQ_EXTERN size_t clawq_pending(const clawq_client *c);

/* Waits for the answers to every put_async since the last flush, up to
 * request_timeout_ms (restarted whenever an answer arrives). Writes the
 * outcome of the i-th put to results[i] for i < n_results (results may be
 * NULL), then forgets them all. Returns 0 when every put succeeded, else
 * the status of the first one that failed (puts not answered in time
 * complete with CLAWQ_ETIMEOUT). */
CLAWQ_EXTERN int clawq_flush(clawq_client *c, clawq_put_result *results,
                             size_t n_results);

/* ---- consume ---- */

/* Leases up to max (1..CLAWQ_MAX_BATCH_TASKS) ready tasks of queue in
 * (priority, FIFO) order, waiting up to wait_ms for the first one (long
 * poll, capped by the broker). lease_ms 0 = the queue's lease. On success
 * *tasks is a heap array of *n tasks (NULL when *n is 0: nothing to do)
 * that the caller frees with clawq_tasks_free(). Blocks up to wait_ms +
 * request_timeout_ms. An unknown or paused queue yields no tasks. Never
 * retried on connection loss (CLAWQ_ECONN_LOST: tasks it leased return
 * after lease expiry). */
CLAWQ_EXTERN int clawq_pull(clawq_client *c, const char *queue, uint32_t max,
                            uint32_t wait_ms, uint32_t lease_ms,
                            clawq_task **tasks, size_t *n);

/* A task and the lease that holds it. */
typedef struct clawq_lease_ref {
    uint64_t id;
    uint64_t lease_id;
} clawq_lease_ref;

/* Marks a task done (it is deleted). CLAWQ_ELEASE_LOST when the lease
 * expired or was re-issued; CLAWQ_ENOT_FOUND for an id never issued. */
CLAWQ_EXTERN int clawq_ack(clawq_client *c, uint64_t id, uint64_t lease_id);

/* Acks n tasks (1..CLAWQ_MAX_BATCH_TASKS) in one request. statuses (the
 * caller's array of n, may be NULL) receives each task's 0 or negative
 * status. Returns, as clawq_put_batch: < 0 for a failed request
 * (statuses unspecified), 0 when every task was acked, or the number
 * (> 0) of tasks that were not (clawq_errmsg names the first). */
CLAWQ_EXTERN int clawq_ack_batch(clawq_client *c, const clawq_lease_ref *refs,
                                 size_t n, int *statuses);

#define CLAWQ_NACK_BACKOFF (-1) /* delay_ms for clawq_nack: queue policy */

/* Returns a leased task to the queue as a failed attempt: ready after
 * delay_ms (0 = at once), or after the queue's backoff when delay_ms < 0
 * (CLAWQ_NACK_BACKOFF); dead-lettered with reason max_attempts when out
 * of attempts. error (may be NULL) is kept with the task (first 1 KiB). */
CLAWQ_EXTERN int clawq_nack(clawq_client *c, uint64_t id, uint64_t lease_id,
                            int64_t delay_ms, const char *error);

/* Moves a leased task straight to the dead-letter queue (reason
 * "failed"). error may be NULL. */
CLAWQ_EXTERN int clawq_fail(clawq_client *c, uint64_t id, uint64_t lease_id,
                            const char *error);

/* Heartbeat: extends the lease to now + lease_ms (0 = the queue's lease),
 * records progress and, when checkpoint is not NULL, replaces the stored
 * checkpoint with checkpoint_len bytes (handed to the next worker if this
 * one dies). On success writes the new expiry (unix ms) to *expires_ms
 * when it is not NULL. CLAWQ_ELEASE_LOST when the lease is gone. */
CLAWQ_EXTERN int clawq_extend(clawq_client *c, uint64_t id, uint64_t lease_id,
                              uint32_t lease_ms, uint64_t progress,
                              const void *checkpoint, size_t checkpoint_len,
                              uint64_t *expires_ms);

/* Reports this connection's worker load for queue: it holds inflight
 * tasks and can hold capacity; the broker then leases this connection at
 * most capacity - inflight at once. The report belongs to the connection:
 * after a reconnect the broker has forgotten it, so workers report on
 * every heartbeat rather than once. */
CLAWQ_EXTERN int clawq_report(clawq_client *c, const char *queue,
                              uint32_t inflight, uint32_t capacity);

/* ---- tickets: pipelined put batches, pulls and acks ----
 *
 * clawq_put_batch_async, clawq_pull_async and clawq_ack_batch_async send
 * a request without waiting for its answer and hand back a ticket (a
 * number > 0, unique per handle); clawq_wait / clawq_poll hand back the
 * result of a ticket once its answer has arrived. A worker keeps several
 * pulls, acks and puts in flight on one handle this way - e.g. acks the
 * tasks of one pull while the next pulls are outstanding - so a broker
 * that makes every write durable can group them.
 *
 * Inputs are encoded when submitted: tasks, refs and their strings may be
 * reused as soon as the submitting call returns. user is the caller's,
 * handed back untouched in the result.
 *
 * Window: tickets and clawq_put_async puts share the handle's
 * pipeline_window (requests in flight at once). A submission that finds
 * the window full reads answers (and keeps them) until there is room, so
 * it may block up to request_timeout_ms (CLAWQ_ETIMEOUT; nothing sent). At
 * most 65536 tickets may be outstanding (submitted and not collected by
 * clawq_wait); past that, submissions fail with CLAWQ_EINVALID. Memory is
 * bounded by those limits: the handle keeps each request's encoded body
 * until it is answered and each answer until it is collected.
 *
 * Ordering: requests go out in submission order; the broker may answer
 * them in any order (a long-polling pull does not hold back the acks
 * behind it) and answers are matched by request id. Completion order is
 * unspecified: to ack a pull's tasks, wait for the pull first. Synchronous
 * calls (clawq_put, clawq_queue_stats_get, ...) may be made while tickets are
 * in flight; answers that arrive meanwhile are kept for clawq_wait.
 *
 * Timeouts: a ticket times out request_timeout_ms (plus a pull's wait_ms)
 * after it was submitted: its result then has status CLAWQ_ETIMEOUT (the
 * request may still be applied; its late answer is dropped). It is
 * counted only while some call on the handle runs (wait, poll, submit).
 * A sent ticket that times out drops the connection as a timed-out call
 * does: the other tickets in flight on it are re-sent when that is safe,
 * else complete with CLAWQ_ECONN_LOST.
 *
 * Errors and reconnects: a ticket's result has status 0 when the broker
 * answered the request (items of a put or an ack may still have failed:
 * see n_failed and the per-item arrays), else a negative error for the
 * whole request. Answers NOT_LEADER / SHUTTING_DOWN are refused requests:
 * the ticket is re-sent to the leader, as for synchronous calls. When the
 * connection drops, tickets that are safe to re-send (put batches whose
 * every task has an idempotency key) are re-sent on the next connection;
 * every other ticket in flight completes with CLAWQ_ECONN_LOST - pulls
 * (tasks they leased return after lease expiry), acks and unkeyed puts -
 * because its outcome is unknown. The reconnect happens in the next call
 * that needs it (clawq_wait for an unsent ticket, a submission, any
 * synchronous call). A submission that cannot connect returns
 * CLAWQ_ECONN_LOST with nothing queued. clawq_close abandons outstanding
 * tickets and frees their results.
 */

typedef uint64_t clawq_ticket;

typedef enum clawq_op {
    CLAWQ_OP_PUT = 1,  /* clawq_put_batch_async */
    CLAWQ_OP_PULL = 2, /* clawq_pull_async */
    CLAWQ_OP_ACK = 3   /* clawq_ack_batch_async */
} clawq_op;

/* The result of a ticket. The arrays belong to the result: free them with
 * clawq_result_free() (or take tasks, set it to NULL and free it later
 * with clawq_tasks_free()). */
typedef struct clawq_result {
    clawq_ticket ticket;
    clawq_op op;
    void *user;      /* as passed when submitted */
    int status;      /* 0: answered; else a negative error for the request */
    size_t n;        /* put, ack: the request's item count; pull: tasks
                        leased (0 unless status is 0) */
    size_t n_failed; /* put, ack: items whose status is not 0 */
    clawq_put_result *puts; /* put, status 0: n per-task outcomes */
    int *statuses;          /* ack, status 0: n per-task statuses */
    clawq_task *tasks;      /* pull, status 0: n tasks (NULL when 0) */
} clawq_result;

/* Sends a put of n tasks (1..CLAWQ_MAX_BATCH_TASKS), as clawq_put_batch
 * does, without waiting; on success writes its ticket to *ticket. Errors
 * (nothing queued): CLAWQ_EINVALID (bad arguments, or 65536 tickets
 * outstanding), CLAWQ_ETOO_LARGE (over the frame limit), CLAWQ_ENOMEM,
 * CLAWQ_ETIMEOUT (the window stayed full), CLAWQ_ECONN_LOST (no connection
 * could be made). */
CLAWQ_EXTERN int clawq_put_batch_async(clawq_client *c, const char *queue,
                                       const clawq_put_task *tasks, size_t n,
                                       void *user, clawq_ticket *ticket);

/* Sends a pull, as clawq_pull does, without waiting; *ticket as above.
 * The ticket's timeout includes wait_ms. Errors as above. */
CLAWQ_EXTERN int clawq_pull_async(clawq_client *c, const char *queue,
                                  uint32_t max, uint32_t wait_ms,
                                  uint32_t lease_ms, void *user,
                                  clawq_ticket *ticket);

/* Sends an ack of n tasks (1..CLAWQ_MAX_BATCH_TASKS), as clawq_ack_batch
 * does, without waiting; *ticket as above. Errors as above. */
CLAWQ_EXTERN int clawq_ack_batch_async(clawq_client *c,
                                       const clawq_lease_ref *refs, size_t n,
                                       void *user, clawq_ticket *ticket);

/* Waits up to timeout_ms (< 0: until the ticket's own timeout; 0: only
 * what has already arrived) for the result of ticket, or of any ticket
 * when ticket is 0 (the earliest completed first). Returns 0 with *res
 * filled - the ticket is then forgotten and res->status says how it went
 * (clawq_errmsg and clawq_retry_after_ms then describe a failed request or
 * the first failed item) - or, with *res untouched: CLAWQ_ETIMEOUT (not
 * answered yet; the ticket stays outstanding), CLAWQ_ENOT_FOUND (an
 * unknown or already collected ticket; with ticket 0, none outstanding),
 * CLAWQ_EINVALID. */
CLAWQ_EXTERN int clawq_wait(clawq_client *c, clawq_ticket ticket,
                            int timeout_ms, clawq_result *res);

/* clawq_wait(c, 0, 0, res): the result of any ticket already answered.
 * Never blocks (and so never reconnects). */
CLAWQ_EXTERN int clawq_poll(clawq_client *c, clawq_result *res);

/* The number of tickets submitted and not yet collected. */
CLAWQ_EXTERN size_t clawq_outstanding(const clawq_client *c);

/* Frees what a result owns and sets its pointers to NULL. NULL is a
 * no-op. */
CLAWQ_EXTERN void clawq_result_free(clawq_result *res);

/* ---- queues ---- */

/* Which clawq_queue_settings fields clawq_queue_set changes. */
enum {
    CLAWQ_SET_LEASE_MS = 1u << 0,
    CLAWQ_SET_MAX_ATTEMPTS = 1u << 1,
    CLAWQ_SET_BACKOFF_BASE_MS = 1u << 2,
    CLAWQ_SET_BACKOFF_MAX_MS = 1u << 3,
    CLAWQ_SET_MAX_DEPTH = 1u << 4,
    CLAWQ_SET_MAX_PAYLOAD = 1u << 5,
    CLAWQ_SET_DEDUP_WINDOW_MS = 1u << 6
};

typedef struct clawq_queue_settings {
    uint32_t mask; /* CLAWQ_SET_* bits: the fields set (queue set) */
    uint32_t lease_ms;
    uint32_t max_attempts;
    uint32_t backoff_base_ms;
    uint32_t backoff_max_ms;
    uint64_t max_depth; /* 0 = unbounded */
    uint32_t max_payload;
    uint64_t dedup_window_ms;
    bool paused; /* read-only: use clawq_pause / clawq_resume */
} clawq_queue_settings;

typedef struct clawq_queue_stats {
    char name[CLAWQ_MAX_QUEUE_NAME + 1];
    uint64_t ready, delayed, leased, dead;
    uint64_t put_total, deduped_total, leased_total, acked_total;
    uint64_t nacked_total, failed_total, expired_total, dead_total;
    uint64_t oldest_ready_ms;     /* unix ms; 0 = nothing ready */
    uint64_t oldest_ready_age_ms; /* on the answering node */
    clawq_queue_settings settings;
    uint32_t workers; /* connections that reported load */
    uint64_t worker_capacity;
    uint64_t worker_inflight;
    uint64_t created_ms;
    uint32_t node_id; /* the node that answered */
} clawq_queue_stats;

/* Fills *stats for queue. CLAWQ_ENOT_FOUND for an unknown queue. */
CLAWQ_EXTERN int clawq_queue_stats_get(clawq_client *c, const char *queue,
                                       clawq_queue_stats *stats);

/* Lists every queue with its stats: *queues is a heap array of *n entries
 * (NULL when there are none) freed with clawq_queue_stats_free(). */
CLAWQ_EXTERN int clawq_queues(clawq_client *c, clawq_queue_stats **queues,
                              size_t *n);

/* Frees an array from clawq_queues(). NULL is a no-op. */
CLAWQ_EXTERN void clawq_queue_stats_free(clawq_queue_stats *queues);

/* Changes the settings of queue named by settings->mask (creating the
 * queue when it does not exist). CLAWQ_EINVALID for an empty mask. */
CLAWQ_EXTERN int clawq_queue_set(clawq_client *c, const char *queue,
                                 const clawq_queue_settings *settings);

/* A worker that reported load for a queue (clawq_report) to the answering
 * node within the last three report intervals. */
typedef struct clawq_worker {
    uint64_t conn_id; /* its connection on that node */
    char name[65];    /* its client_name */
    uint32_t capacity;
    uint32_t inflight; /* reported, plus leased to it since */
    uint64_t last_report_age_ms;
} clawq_worker;

/* The live workers of queue. Blocking. On success *workers is a malloc'd
 * array of *n entries (NULL when 0) the caller frees with
 * clawq_workers_free. */
CLAWQ_EXTERN int clawq_workers(clawq_client *c, const char *queue,
                               clawq_worker **workers, size_t *n);
CLAWQ_EXTERN void clawq_workers_free(clawq_worker *workers);

/* Pauses queue: pulls lease nothing until clawq_resume. */
CLAWQ_EXTERN int clawq_pause(clawq_client *c, const char *queue);

/* Resumes a paused queue. */
CLAWQ_EXTERN int clawq_resume(clawq_client *c, const char *queue);

/* Deletes every ready and delayed task of queue (leased tasks finish
 * normally) and writes how many went to *count when not NULL. */
CLAWQ_EXTERN int clawq_purge(clawq_client *c, const char *queue,
                             uint64_t *count);

/* Shows up to max (1..1000; 0 = 10) tasks of queue in state without
 * changing them. *tasks / *n as for clawq_pull. */
CLAWQ_EXTERN int clawq_peek(clawq_client *c, const char *queue,
                            clawq_task_state state, uint32_t max,
                            clawq_task **tasks, size_t *n);

/* Fetches one task by id in any state: *task is a heap array of one task
 * freed with clawq_tasks_free(). CLAWQ_ENOT_FOUND when it does not exist
 * (any more). */
CLAWQ_EXTERN int clawq_task_get(clawq_client *c, uint64_t id,
                                clawq_task **task);

/* ---- dead-letter queue ---- */

/* Which dead tasks of a queue a DLQ call touches. Zero-initialise. */
typedef struct clawq_dlq_filter {
    const char *error_contains; /* substring of the last error; NULL = any */
    uint64_t from_ms;           /* dead_at >= from_ms */
    uint64_t to_ms;             /* dead_at < to_ms; 0 = no bound */
    uint32_t max; /* 0 = the broker's default (list 100, replay/purge
                     10000); list at most 1000 */
} clawq_dlq_filter;

/* Lists dead tasks of queue matching filter (NULL = all), oldest first,
 * starting after (after_ms, after_id) - pass the last listed task's
 * dead_at_ms and id to page on, or 0, 0 for the start. *tasks / *n as for
 * clawq_pull. */
CLAWQ_EXTERN int clawq_dlq_list(clawq_client *c, const char *queue,
                                const clawq_dlq_filter *filter,
                                uint64_t after_ms, uint64_t after_id,
                                clawq_task **tasks, size_t *n);

/* Returns matching dead tasks to ready with attempt reset to 0; writes how
 * many to *count when not NULL. Not retried on connection loss. */
CLAWQ_EXTERN int clawq_dlq_replay(clawq_client *c, const char *queue,
                                  const clawq_dlq_filter *filter,
                                  uint64_t *count);

/* Deletes matching dead tasks; writes how many to *count when not NULL. */
CLAWQ_EXTERN int clawq_dlq_purge(clawq_client *c, const char *queue,
                                 const clawq_dlq_filter *filter,
                                 uint64_t *count);

/* ---- cluster administration ---- */

#define CLAWQ_MAX_MEMBERS 9
#define CLAWQ_MAX_ADDR 255

typedef struct clawq_cluster_member {
    uint32_t id;
    char raft_addr[CLAWQ_MAX_ADDR + 1];
    char client_addr[CLAWQ_MAX_ADDR + 1]; /* "" = not registered yet */
    char role[16];                        /* "voter", "standby", "spare" */
    uint64_t match_index; /* leader_view only: the last entry it has */
    uint64_t lag;         /* leader_view only: entries behind the leader */
} clawq_cluster_member;

/* One node's view of the cluster (the node in node_id). */
typedef struct clawq_cluster_status {
    uint32_t node_id;
    char role[16];      /* "leader", "follower", "candidate", "unavailable" */
    uint32_t leader_id; /* 0 = no leader known */
    char leader[CLAWQ_MAX_ADDR + 1]; /* the leader's client address */
    uint64_t term, commit_index, applied_index, last_index;
    int leader_view;       /* members' match_index / lag set */
    int has_digest;        /* CLAWQ_CLUSTER_DIGEST was asked */
    uint64_t digest;       /* FNV-1a over the node's store */
    uint64_t digest_index; /* the applied index it is of */
    size_t n_members;
    clawq_cluster_member members[CLAWQ_MAX_MEMBERS];
} clawq_cluster_status;

#define CLAWQ_CLUSTER_DIGEST 1u /* flags: add the state digest */

/* The connected node's view (any node answers: connect with no_follow to
 * ask a given node). */
CLAWQ_EXTERN int clawq_cluster_status_get(clawq_client *c, unsigned flags,
                                          clawq_cluster_status *out);

/* Adds node id as a non-voter and promotes it to voter once it caught up;
 * returns when the promotion is committed (or the call's timeout). The
 * leader's view afterwards goes to *out when not NULL. Idempotent for a
 * node already a voter with the same addresses; CLAWQ_EINVALID for an id
 * or address in use by another member. */
CLAWQ_EXTERN int clawq_cluster_add(clawq_client *c, uint32_t id,
                                   const char *raft_addr,
                                   const char *client_addr,
                                   clawq_cluster_status *out);

/* For broker nodes: records the client address of node id, which must be
 * in the configuration already with raft_addr (CLAWQ_ENOT_FOUND
 * otherwise), so that followers can send clients to it. */
CLAWQ_EXTERN int clawq_cluster_register(clawq_client *c, uint32_t id,
                                        const char *raft_addr,
                                        const char *client_addr);

/* Removes node id (not the leader: transfer first). CLAWQ_ENOT_FOUND when
 * it is not a member. */
CLAWQ_EXTERN int clawq_cluster_remove(clawq_client *c, uint32_t id,
                                      clawq_cluster_status *out);

/* Hands leadership to node id (0: the most up-to-date voter); returns once
 * another node leads (*out: the old leader's view). */
CLAWQ_EXTERN int clawq_cluster_transfer(clawq_client *c, uint32_t id,
                                        clawq_cluster_status *out);

#ifdef __cplusplus
}
#endif

#endif /* CLAWQ_H */
