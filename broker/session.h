/* session.h: one client connection, and the server context they share.
 *
 * A session owns its TCP handle, its read buffer (capped at the frame
 * limit), the accounting of replies not yet written, its worker load
 * reports and its outstanding requests. Frames in (proto/frame.h), Hello
 * first, every request answered by id, possibly out of order; writes are
 * proposed through repl and answered once applied; reads are served from
 * the store at once. When replies pile up past the write-buffer limit, or
 * too many requests are outstanding, the session stops reading until they
 * drain.
 */
#ifndef CLAWQ_SESSION_H
#define CLAWQ_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "fsm.h"
#include "metrics.h"
#include "repl.h"
#include "scheduler.h"
#include "store.h"

typedef struct sess sess;

typedef struct sess_limits {
    uint32_t max_frame;          /* bytes of one frame */
    uint32_t max_payload;        /* bytes of one task payload */
    uint32_t max_pending;        /* outstanding requests per connection */
    uint32_t max_wait_ms;        /* long-poll cap */
    uint32_t idle_timeout_ms;    /* 0 = none */
    size_t write_buffer;         /* unsent reply bytes before reading stops */
    uint64_t report_interval_ms; /* workers silent 3x this stop counting */
} sess_limits;

/* What every session shares. Owned by net (created in main). */
typedef struct server {
    uv_loop_t *loop;
    store *s;
    repl *r;
    sched *sc;
    sess_limits limits;
    metrics metrics; /* latency histograms, drain rates */
    uint32_t node_id;
    const char *listen_addr; /* this node's client address */
    bool shutting_down;
    sess *sessions; /* all open sessions */
    size_t n_sessions;
    uint64_t next_conn_id;
    sess *dirty;                /* sessions with replies to flush this turn */
    uv_prepare_t flush_prepare; /* flushes them before the loop polls */
    uv_timer_t report_timer;    /* the leader replicates worker summaries */
    void (*on_session_closed)(struct server *srv); /* net's drain check */
    void *drain_ctx;                               /* net's, for that */
} server;

/* Starts / stops the per-turn reply flush (once per server). Replies of
 * one loop turn go out in one write per connection. */
void sess_server_init(server *srv);
void sess_server_close(server *srv);

/* Takes an accepted TCP handle's place: initialises the session's own
 * handle on the loop (the caller accepts into sess_tcp()). */
int sess_new(server *srv, sess **out);
uv_tcp_t *sess_tcp(sess *c);
/* Starts reading after a successful accept. */
void sess_start(sess *c);
/* Closes the connection; outstanding requests finish silently. */
void sess_close(sess *c);
/* Shutdown: close once nothing is outstanding (now, if idle). */
void sess_drain(sess *c);
bool sess_is_idle(const sess *c);
/* The next session in srv->sessions (drain walks the list). */
sess *sess_next(sess *c);

#define SESS_NAME_MAX 64

/* A connection's live load report for one queue. */
typedef struct sess_worker {
    uint64_t conn_id;
    char name[SESS_NAME_MAX + 1]; /* the client's Hello name */
    uint32_t capacity;
    uint32_t inflight; /* reported, plus leased to it since */
    uint64_t age_ms;   /* since its last report */
} sess_worker;

/* The live reports for a queue (reported within three report intervals),
 * up to max into out; returns how many there are. */
size_t sess_workers_list(server *srv, cq_bytes queue, sess_worker *out,
                         size_t max);

/* The workers of a queue as every node should see them: on the leader,
 * its live reports (the median capacity among them); on a follower, the
 * leader's replicated summary (sent each report interval) while fresh. */
void sess_workers_summary(server *srv, const fsm_queue_stats *st,
                          queue_workers *out);

/* Sum of the live worker reports for a queue over all sessions. */
void sess_reports_sum(server *srv, cq_bytes queue, uint32_t *workers,
                      uint64_t *capacity, uint64_t *inflight);

#endif /* CLAWQ_SESSION_H */
