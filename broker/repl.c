/* repl.c: libraft wiring. See repl.h for the contract and
 * ../shared/NOTES-RAFT.md for the library facts this file relies on.
 *
 * Batching: repl_submit appends ops to the open batch (a cmd_writer) and
 * starts an idle handle so the loop does not block in poll before the
 * check handle runs; the check handle proposes every open batch with
 * raft_apply(n = 1) (n > 1 is broken in 0.22). raft_apply appends to the
 * in-memory log at once, so raft_last_index() is the entry's index.
 *
 * Deferred apply: libraft 0.22 calls the FSM's apply from inside the
 * callback of the log write that committed the entry, and starts the next
 * log write only after that callback returns, so the disk would idle
 * while LMDB applies. The FSM apply callback therefore only copies the
 * entry into a queue; the check handle applies the queue to the store
 * (drain) after libraft has submitted the next write, and the two overlap.
 * Whatever reads the store through libraft's eyes drains first: snapshot,
 * restore, the leader barrier, closing. Nobody can have been answered for
 * a queued entry, so a read that does not see it is still linearizable.
 *
 * Results: each in-flight entry owns its fsm_result. The drain finds the
 * entry by index (entries are kept in index order) and applies into it;
 * entries this node did not propose go to a scratch result. An entry is
 * answered once it is both committed (libraft's apply callback) and
 * applied (the drain), whichever comes last.
 *
 * No raft_* call is made from inside a raft callback: proposals, barriers
 * and role checks happen in the check handle.
 */
#include "repl.h"

#include <raft.h>
#include <raft/uv.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define BATCH_SPLIT_BYTES (4u << 20) /* start a new entry past this */
#define DEFER_MAX_BYTES (64u << 20)  /* queued entry bytes; past this, drain */

/* A configuration change walks these steps; every raft call is made from
 * the check handle, never from the raft callback that ends a step. */
typedef enum change_step {
    CHANGE_NONE,
    CHANGE_ADD,     /* raft_add to make */
    CHANGE_ASSIGN,  /* raft_assign(VOTER) to make */
    CHANGE_REMOVE,  /* raft_remove to make */
    CHANGE_WAITING, /* a raft request is in flight */
    CHANGE_DONE     /* done to call with status */
} change_step;

typedef struct change {
    struct raft_change req;
    change_step step, next; /* next: the step after the request in flight */
    uint32_t id;
    char raft_addr[64];
    int status;
    bool promoting; /* the request in flight is raft_assign(VOTER) */
    repl_change_cb done;
    void *arg;
} change;

typedef struct sub {
    repl_cb cb;
    void *arg;
    uint32_t first_op, n_ops;
} sub;

typedef struct entry {
    struct raft_apply req;
    repl *r;
    uint64_t created; /* uv_now() when its first op came */
    uint64_t index;   /* 0 until proposed */
    bool committed;   /* libraft's apply callback came */
    bool applied;     /* the drain applied it to the store */
    cmd_writer w;
    sub *subs;
    size_t n_subs, cap_subs;
    fsm_result res;
    struct entry *next;
} entry;

struct repl {
    uv_loop_t *loop;
    store *s;
    struct raft raft;
    struct raft_io io;
    struct raft_uv_transport transport;
    struct raft_fsm fsm;
    repl_hooks hooks;
    uv_check_t check;
    uv_idle_t idle;
    struct raft_barrier barrier;
    bool barrier_pending;
    struct raft_transfer transfer;
    void (*transfer_done)(void *arg, bool moved);
    void *transfer_arg;
    change chg;

    entry *open_head, *open_tail;     /* batches not proposed yet */
    entry *flight_head, *flight_tail; /* proposed, in index order */
    entry *pool;                      /* answered, kept for reuse */
    unsigned n_pool;
    fsm_result scratch; /* results nobody waits for */
    /* Committed entries not applied to the store yet (deferred apply):
     * their bytes back to back in defer_bytes, index order. */
    struct deferred {
        uint64_t index;
        size_t off, len;
    } * defer;
    size_t n_defer, cap_defer, drained;
    cq_buf defer_bytes;
    bool applied_dirty;
    bool leader;      /* as reported to hooks (after the barrier) */
    bool raft_leader; /* raft_state() seen at the last check */
    bool closing;
    uint64_t hold_ms;  /* how long submissions wait for a leader */
    uint64_t last_now; /* now_ms of the last applied command */
    store_snap *snap;
    uint64_t proposed, snapshots, last_snapshot_ms, last_serialize_ms;
    void (*close_done)(void *);
    void *close_arg;
    int handles_open;

    /* The InstallSnapshot hold (see "io wrapper" below). */
    int (*io_start)(struct raft_io *, unsigned, raft_io_tick_cb,
                    raft_io_recv_cb);
    int (*io_snapshot_put)(struct raft_io *, unsigned,
                           struct raft_io_snapshot_put *,
                           const struct raft_snapshot *,
                           raft_io_snapshot_put_cb);
    int (*io_send)(struct raft_io *, struct raft_io_send *,
                   const struct raft_message *, raft_io_send_cb);
    int (*io_snapshot_get)(struct raft_io *, struct raft_io_snapshot_get *,
                           raft_io_snapshot_get_cb);
    uint64_t snapshot_get_delay_ms; /* CLAWQ_TEST_SNAPSHOT_GET_DELAY_MS */
    struct get_wrap *gets;          /* its loads held back */
    uint64_t installs_unsent;       /* InstallSnapshot to a removed node */
    raft_io_recv_cb recv;
    /* The transport wrapper (TCP_NODELAY, see below). */
    int (*tr_listen)(struct raft_uv_transport *, raft_uv_accept_cb);
    int (*tr_connect)(struct raft_uv_transport *, struct raft_uv_connect *,
                      raft_id, const char *, raft_uv_connect_cb);
    raft_uv_accept_cb accept_cb;
    struct put_wrap *puts; /* local snapshot writes in flight */
    unsigned installs;     /* received snapshots being written */
    uint64_t dropped_installs;
    struct held_msg *held_head, *held_tail;
    uv_timer_t release;
    uint64_t held_total;
    uint64_t stale_commits;     /* AppendEntries whose commit was not used */
    uint64_t snapshot_delay_ms; /* CLAWQ_TEST_SNAPSHOT_DELAY_MS (tests) */
    /* Snapshots serialised off the loop (see "snapshots off the loop"). */
    struct raft_buffer *snap_buf; /* the placeholder libraft holds */
    struct snap_job *snap_job;    /* serialising on a worker thread */
    uint64_t snap_pause_ns;       /* the loop's waits for it */
    uint64_t serialize_delay_ms;  /* CLAWQ_TEST_SNAPSHOT_SERIALIZE_DELAY_MS */
    /* CLAWQ_TEST_REFUSE_PROMOTION: refuse one promotion's entry (tests of
     * change_lost); refusing: the capacity threshold is raised for it. */
    bool refuse_promotion, refusing;
    /* Snapshot spacing (snapshot_tune): threshold in entries, its floor,
     * the log bytes wanted between snapshots, the mean entry size. */
    unsigned snap_threshold, snap_min;
    uint64_t snap_log_size;
    double entry_mean;
};

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t repl_now_ms(repl *r)
{
    uint64_t now = wall_ms();
    return now > r->last_now ? now : r->last_now;
}

/* ---- entries ---- */

/* Answered entries kept for the next batches, with their buffers: a
 * batch's writer, results and result arena (64 KiB, and more for large
 * leases) would otherwise be allocated and freed again each time. */
#define ENTRY_POOL_MAX 16
#define ENTRY_POOL_BUF_MAX (1u << 20) /* a larger writer buffer is freed */

static entry *entry_new(repl *r)
{
    entry *e = r->pool;

    if (e != NULL) {
        r->pool = e->next;
        r->n_pool--;
    } else {
        e = calloc(1, sizeof(*e));
        if (e == NULL)
            return NULL;
        cmd_writer_init(&e->w);
        fsm_result_init(&e->res);
    }
    memset(&e->req, 0, sizeof(e->req));
    e->req.data = e;
    e->r = r;
    e->created = e->index = 0;
    e->committed = e->applied = false;
    e->n_subs = 0;
    e->next = NULL;
    return e;
}

static void entry_destroy(entry *e)
{
    cmd_writer_fini(&e->w);
    fsm_result_fini(&e->res);
    free(e->subs);
    free(e);
}

/* Keeps the entry for reuse, or destroys it. */
static void entry_free(entry *e)
{
    repl *r = e->r;

    if (r->n_pool < ENTRY_POOL_MAX && e->w.buf.cap <= ENTRY_POOL_BUF_MAX) {
        cmd_writer_reset(&e->w);
        fsm_result_trim(&e->res);
        e->next = r->pool;
        r->pool = e;
        r->n_pool++;
        return;
    }
    entry_destroy(e);
}

static void pool_free(repl *r)
{
    entry *e;

    while ((e = r->pool) != NULL) {
        r->pool = e->next;
        entry_destroy(e);
    }
    r->n_pool = 0;
}

/* Fails every submission of the entry with `status` and frees it. */
static void entry_fail(entry *e, int status)
{
    size_t i;
    for (i = 0; i < e->n_subs; i++)
        e->subs[i].cb(e->subs[i].arg, status, NULL, 0, 0);
    entry_free(e);
}

static void flight_remove(repl *r, entry *e)
{
    entry **pp, *prev = NULL;

    for (pp = &r->flight_head; *pp != NULL; prev = *pp, pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            if (r->flight_tail == e)
                r->flight_tail = prev;
            return;
        }
    }
}

/* Answers an entry that is committed and applied, and frees it. */
static void entry_answer(entry *e)
{
    size_t i;

    flight_remove(e->r, e);
    for (i = 0; i < e->n_subs; i++) {
        const sub *s = &e->subs[i];
        s->cb(s->arg, 0, &e->res, s->first_op, s->n_ops);
    }
    entry_free(e);
}

static void apply_done(struct raft_apply *req, int status, void *result)
{
    entry *e = req->data;
    repl *r = e->r;

    (void)result;
    if (status != 0) {
        flight_remove(r, e);
        LOG(LOG_WARN, "repl.apply_failed", "index=%llu status=%s",
            (unsigned long long)e->index, raft_strerror(status));
        entry_fail(e, r->closing ? CLAWQ_ESHUTTING_DOWN : CLAWQ_EUNAVAILABLE);
        return;
    }
    e->committed = true;
    if (e->applied)
        entry_answer(e);
}

/* Another node is the known leader (so waiting here helps nobody). */
static bool leader_elsewhere(repl *r)
{
    raft_id id = 0;
    const char *addr = NULL;

    raft_leader(&r->raft, &id, &addr);
    return id != 0 && id != r->raft.id;
}

static void on_idle(uv_idle_t *h)
{
    (void)h; /* stopped by on_check once the batches are proposed */
}

int repl_submit(repl *r, const cmd_op *ops, size_t n, repl_cb cb, void *arg)
{
    entry *e = r->open_tail;
    size_t i, first, mark;
    int rc;

    if (r->closing)
        return CLAWQ_ESHUTTING_DOWN;
    if (!r->raft_leader && leader_elsewhere(r))
        return CLAWQ_ENOT_LEADER;
    if (n == 0)
        return CLAWQ_EINVALID;
    if (n > CMD_MAX_OPS)
        return CLAWQ_ETOO_LARGE;
    if (e == NULL || e->w.buf.len > BATCH_SPLIT_BYTES ||
        e->w.n_ops + n > CMD_MAX_OPS) {
        e = entry_new(r);
        if (e == NULL)
            return CLAWQ_ENOMEM;
        e->created = uv_now(r->loop);
        if (r->open_tail != NULL)
            r->open_tail->next = e;
        else
            r->open_head = e;
        r->open_tail = e;
    }
    if (e->n_subs == e->cap_subs) {
        size_t cap = e->cap_subs ? e->cap_subs * 2 : 16;
        sub *p = realloc(e->subs, cap * sizeof(*p));
        if (p == NULL)
            return CLAWQ_ENOMEM;
        e->subs = p;
        e->cap_subs = cap;
    }
    first = e->w.n_ops;
    mark = e->w.buf.len;
    for (i = 0; i < n; i++) {
        rc = cmd_writer_add(&e->w, &ops[i]);
        if (rc != 0) {
            /* Drop the ops of this submission that made it in. */
            e->w.buf.len = mark;
            e->w.n_ops = (uint32_t)first;
            return rc;
        }
    }
    e->subs[e->n_subs].cb = cb;
    e->subs[e->n_subs].arg = arg;
    e->subs[e->n_subs].first_op = (uint32_t)first;
    e->subs[e->n_subs].n_ops = (uint32_t)n;
    e->n_subs++;
    /* An active idle handle keeps the loop from blocking in poll before
     * the check handle proposes this batch. */
    if (!uv_is_active((uv_handle_t *)&r->idle))
        uv_idle_start(&r->idle, on_idle);
    return 0;
}

/* Proposes every open batch. Runs in the check handle. */
static void flush(repl *r)
{
    entry *e;
    struct raft_buffer buf;
    cq_bytes cmd;
    int rc;

    while ((e = r->open_head) != NULL) {
        if (!r->raft_leader && !r->closing && !leader_elsewhere(r) &&
            uv_now(r->loop) - e->created < r->hold_ms)
            return; /* no leader yet (starting, electing): keep it */
        if (r->raft_leader && !r->closing && raft_transferee(&r->raft) != 0 &&
            uv_now(r->loop) - e->created < r->hold_ms)
            return; /* handing over (a few ms): then here or there */
        r->open_head = e->next;
        if (r->open_head == NULL)
            r->open_tail = NULL;
        e->next = NULL;
        if (!r->raft_leader || r->closing) {
            entry_fail(e, r->closing            ? CLAWQ_ESHUTTING_DOWN
                          : leader_elsewhere(r) ? CLAWQ_ENOT_LEADER
                                                : CLAWQ_EUNAVAILABLE);
            continue;
        }
        cmd = cmd_writer_finish(&e->w, repl_now_ms(r));
        /* The uv backend wants 8-byte aligned entries: pad with zeros,
         * which cmd_decode ignores. */
        buf.len = (cmd.len + CMD_ALIGN - 1) / CMD_ALIGN * CMD_ALIGN;
        buf.base = raft_malloc(buf.len);
        if (buf.base == NULL) {
            entry_fail(e, CLAWQ_ENOMEM);
            continue;
        }
        memcpy(buf.base, cmd.ptr, cmd.len);
        memset((uint8_t *)buf.base + cmd.len, 0, buf.len - cmd.len);
        /* The writer's bytes are not needed any more. */
        cmd_writer_fini(&e->w);
        rc = raft_apply(&r->raft, &e->req, &buf, 1, apply_done);
        if (rc != 0) {
            /* 0.22.1 refuses NOTLEADER (a transfer began) and NOSPACE
             * before it takes the buffer (ClientSubmit); after that point
             * ownership is unclear: leak it rather than risk a double
             * free (a bug or a dying node). */
            if (rc == RAFT_NOTLEADER || rc == RAFT_NOSPACE)
                raft_free(buf.base);
            LOG(LOG_WARN, "repl.propose_failed", "status=%s errmsg=\"%s\"",
                raft_strerror(rc), raft_errmsg(&r->raft));
            entry_fail(e, rc == RAFT_NOTLEADER ? CLAWQ_ENOT_LEADER
                                               : CLAWQ_EUNAVAILABLE);
            continue;
        }
        e->index = raft_last_index(&r->raft);
        if (r->flight_tail != NULL)
            r->flight_tail->next = e;
        else
            r->flight_head = e;
        r->flight_tail = e;
        r->proposed++;
    }
}

/* ---- io wrapper: hold InstallSnapshot during a local snapshot write ----
 *
 * libraft 0.22.1 crashes a node that receives InstallSnapshot(Y) while its
 * own snapshot write at X < Y is in flight (NOTES-RAFT.md): it resets its
 * log to Y, and when the local write completes it looks X up in a log
 * that no longer has it. We wrap the uv io with the public API only: while
 * a local snapshot write (snapshot_put with trailing != 0) is in flight, an
 * incoming InstallSnapshot, and every message after it to keep the stream
 * in order, is held; once the write's callback has returned, the held
 * messages are handed on in order from a 0 ms timer.
 *
 * The same wrapper counts installs (snapshot_put with trailing == 0) in
 * flight: an InstallSnapshot resend that comes during one, which 0.22.1
 * would ignore and leak, is dropped and freed (install_dropped). */

typedef struct put_wrap {
    repl *r;
    raft_io_snapshot_put_cb cb;
    void *data; /* libraft's req->data while we borrow it */
    struct raft_io_snapshot_put *req;
    int status;
    uv_timer_t delay; /* CLAWQ_TEST_SNAPSHOT_DELAY_MS: completes late */
    bool delaying;
    struct put_wrap *next;
} put_wrap;

typedef struct held_msg {
    struct raft_message m;
    char *address;
    struct held_msg *next;
} held_msg;

static repl *repl_of_io(struct raft_io *io)
{
    struct raft *raft = io->data;
    return raft->data;
}

static bool install_dropped(repl *r, struct raft_message *m);

/* Hands a received message to libraft, keeping the follower's commit
 * index from going back. libraft 0.22.1 (replication.c, and upstream
 * still) applies the paper's rule "if leaderCommit > commitIndex, set
 * commitIndex = min(leaderCommit, index of last new entry)" literally,
 * and the last entry of a heartbeat the leader built from a stale view
 * of this follower (prev_log_index behind what it already has, as after
 * a restart) can be below commitIndex: the commit index went back, below
 * the last applied entry. A build with asserts aborts there (legacy.c
 * legacyApply, `last_applied <= commit_index`: 3 of 5 slow-snapshot
 * runs); Debian's, built without, gets over it at the next heartbeat.
 * Such a message's leader_commit is lowered to the commit index, so
 * libraft leaves it alone: the monotonic form of the rule, as etcd and
 * hashicorp/raft implement it. A commit index that goes back anyway is
 * logged (repl.commit_regressed); the cluster suite fails on that line. */
static void deliver(repl *r, struct raft_io *io, struct raft_message *m)
{
    raft_index commit = raft_commit_index(&r->raft);

    if (m->type == RAFT_APPEND_ENTRIES) {
        struct raft_append_entries *ae = &m->append_entries;

        if (ae->leader_commit > commit &&
            ae->prev_log_index + ae->n_entries < commit) {
            LOG(LOG_DEBUG, "repl.stale_commit",
                "prev=%llu n=%u leader_commit=%llu commit=%llu",
                (unsigned long long)ae->prev_log_index, ae->n_entries,
                (unsigned long long)ae->leader_commit,
                (unsigned long long)commit);
            ae->leader_commit = commit;
            r->stale_commits++;
        }
    }
    r->recv(io, m);
    if (raft_commit_index(&r->raft) < commit)
        LOG(LOG_ERROR, "repl.commit_regressed", "from=%llu to=%llu",
            (unsigned long long)commit,
            (unsigned long long)raft_commit_index(&r->raft));
}

static void release_held(uv_timer_t *t)
{
    repl *r = t->data;
    held_msg *h;

    while ((h = r->held_head) != NULL && r->puts == NULL) {
        r->held_head = h->next;
        if (r->held_head == NULL)
            r->held_tail = NULL;
        /* The first held InstallSnapshot may start an install: the
         * resends held behind it are dropped then. */
        if (!install_dropped(r, &h->m))
            deliver(r, &r->io, &h->m);
        free(h->address);
        free(h);
    }
}

/* Frees what a received message owns, as libraft does for messages it
 * drops (legacy.c recvCb while closing). */
static void message_free(struct raft_message *m)
{
    size_t i;
    void *batch = NULL;

    switch (m->type) {
    case RAFT_APPEND_ENTRIES:
        for (i = 0; i < m->append_entries.n_entries; i++) {
            if (m->append_entries.entries[i].batch != batch) {
                batch = m->append_entries.entries[i].batch;
                raft_free(batch);
            }
        }
        raft_free(m->append_entries.entries);
        break;
    case RAFT_INSTALL_SNAPSHOT:
        raft_configuration_close(&m->install_snapshot.conf);
        raft_free(m->install_snapshot.data.base);
        break;
    default:
        break;
    }
}

/* 0.22.1 ignores an InstallSnapshot that comes while it installs one
 * (the leader resends after install_snapshot_timeout) but never frees it:
 * one leaked snapshot per resend (replication.c, "already taking or
 * installing snapshot"). Such a message is dropped here, and freed. The
 * test is libraft's own (snapshot.installing, in raft.h) or-ed with our
 * count of install writes in flight. Returns true when m was dropped. */
static bool install_dropped(repl *r, struct raft_message *m)
{
    if (m->type != RAFT_INSTALL_SNAPSHOT ||
        (r->installs == 0 && !r->raft.snapshot.installing))
        return false;
    r->dropped_installs++;
    LOG(LOG_INFO, "repl.install_dropped", "from=%llu index=%llu",
        (unsigned long long)m->server_id,
        (unsigned long long)m->install_snapshot.last_index);
    message_free(m);
    return true;
}

static void io_recv(struct raft_io *io, struct raft_message *m)
{
    repl *r = repl_of_io(io);
    held_msg *h;

    if (install_dropped(r, m))
        return;

    /* Hand on only when nothing is held (order!) and either no local
     * snapshot write is in flight or this is not an InstallSnapshot. */
    if (r->held_head == NULL &&
        (r->puts == NULL || m->type != RAFT_INSTALL_SNAPSHOT)) {
        deliver(r, io, m);
        return;
    }
    h = calloc(1, sizeof(*h));
    if (h != NULL && m->server_address != NULL)
        h->address = strdup(m->server_address);
    if (h == NULL || (m->server_address != NULL && h->address == NULL)) {
        /* Cannot hold it: drop it; the leader resends after its
         * timeout. */
        free(h);
        LOG(LOG_WARN, "repl.hold_dropped", "type=%d", (int)m->type);
        return;
    }
    h->m = *m;
    h->m.server_address = h->address;
    if (r->held_tail != NULL)
        r->held_tail->next = h;
    else
        r->held_head = h;
    r->held_tail = h;
    r->held_total++;
    LOG(LOG_INFO, "repl.hold", "type=%d from=%llu", (int)m->type,
        (unsigned long long)m->server_id);
}

static void put_wrap_free(uv_handle_t *h)
{
    free(h->data);
}

/* The write finished: hand libraft its request back, then release what
 * was held once no local write is left. req->data was borrowed for the
 * wrap (the uv io does not use it) and is restored first. */
static void put_complete(put_wrap *w)
{
    repl *r = w->r;
    struct raft_io_snapshot_put *req = w->req;
    put_wrap **pp;

    req->data = w->data;
    for (pp = &r->puts; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    w->cb(req, w->status);
    if (w->delaying)
        uv_close((uv_handle_t *)&w->delay, put_wrap_free);
    else
        free(w);
    if (r->puts == NULL && r->held_head != NULL && !r->closing)
        uv_timer_start(&r->release, release_held, 0, 0);
}

static void put_delayed(uv_timer_t *t)
{
    put_complete(t->data);
}

static void io_put_done(struct raft_io_snapshot_put *req, int status)
{
    put_wrap *w = req->data;
    repl *r = w->r;

    w->req = req;
    w->status = status;
    if (r->snapshot_delay_ms > 0 && !r->closing) {
        /* Fault injection: a slow disk, so that InstallSnapshot can
         * arrive while this write is "in flight". */
        uv_timer_init(r->loop, &w->delay);
        w->delay.data = w;
        w->delaying = true;
        uv_timer_start(&w->delay, put_delayed, r->snapshot_delay_ms, 0);
        return;
    }
    put_complete(w);
}

/* An install (a received snapshot) was written: libraft's callback
 * first, which ends its install, then the count. */
static void io_install_done(struct raft_io_snapshot_put *req, int status)
{
    put_wrap *w = req->data;
    repl *r = w->r;

    req->data = w->data;
    w->cb(req, status);
    r->installs--;
    free(w);
}

/* ---- snapshots off the loop ----
 *
 * libraft 0.22 calls the FSM's snapshot_async on the loop, right after
 * snapshot (legacy.c), so serialising the store there held the loop: 245
 * ms for a 128 MB store, longer than a heartbeat interval on a leader.
 * Instead snapshot_async hands libraft a placeholder buffer and keeps the
 * read transaction pinned; the snapshot_put wrapper below serialises that
 * transaction on a libuv worker thread, puts the result in place of the
 * placeholder (libraft's bufs array is ours: snapshot_async allocated it)
 * and only then passes the write on to the uv io. The put is registered
 * at once, so the InstallSnapshot hold covers the serialisation too.
 *
 * The loop goes on applying meanwhile: an LMDB reader does not block the
 * writer. What a pinned reader forbids is growing the map. An apply that
 * needs more room (fsm_apply returns CLAWQ_EUNAVAILABLE, with nothing
 * applied) waits for the serialisation to finish, ends the pin and is
 * retried (snap_wait): the old stall, only then. Closing waits the same
 * way. The job holds a reference on r (handles_open) until its after-work
 * callback has run. */
static const store_alloc raft_alloc = {raft_realloc, raft_free};

typedef struct snap_job {
    uv_work_t work;
    repl *r;
    store_snap *snap;
    put_wrap *w; /* the put to pass on, registered in r->puts */
    struct raft_io *io;
    unsigned trailing;
    struct raft_io_snapshot_put *req;
    const struct raft_snapshot *snapshot;
    struct raft_buffer *buf; /* libraft's bufs[0], the placeholder */
    uint64_t delay_ms;       /* CLAWQ_TEST_SNAPSHOT_SERIALIZE_DELAY_MS */
    /* Written by the worker, read once done is set (under mu). */
    void *data;
    size_t len;
    int rc;
    uint64_t serialize_ns;
    uv_mutex_t mu;
    uv_cond_t cv;
    bool done;
    bool continued; /* passed on (by snap_after or snap_wait) */
} snap_job;

static void repl_release(repl *r);

static void snap_work(uv_work_t *work)
{
    snap_job *j = work->data;
    uint64_t t0;

    if (j->delay_ms > 0)
        uv_sleep((unsigned)j->delay_ms); /* fault injection: a big store */
    t0 = uv_hrtime();
    j->rc = store_snapshot_serialize(j->snap, &raft_alloc, &j->data, &j->len);
    j->serialize_ns = uv_hrtime() - t0;
    uv_mutex_lock(&j->mu);
    j->done = true;
    uv_cond_signal(&j->cv);
    uv_mutex_unlock(&j->mu);
}

/* On the loop, once per job: waits for the worker if it has not finished,
 * ends the pin, and passes the write on with the real buffer (or fails the
 * put when serialising failed). */
static void snap_continue(snap_job *j)
{
    repl *r = j->r;
    put_wrap *w = j->w;
    uint64_t t0 = uv_hrtime(), index = store_snapshot_index(j->snap);
    int rc;

    uv_mutex_lock(&j->mu);
    while (!j->done)
        uv_cond_wait(&j->cv, &j->mu);
    uv_mutex_unlock(&j->mu);
    r->snap_pause_ns += uv_hrtime() - t0;
    j->continued = true;
    store_snapshot_end(j->snap);
    r->snap = NULL;
    r->snap_buf = NULL;
    r->snap_job = NULL;
    r->last_snapshot_ms = r->snap_pause_ns / 1000000;
    /* A failed put reaches libraft as a write error would (libraft 0.22
     * asserts that only a closing node sees one; Debian builds it without
     * asserts, NOTES-RAFT.md, and it drops the snapshot and tries again
     * at a later commit). */
    if (j->rc != 0) {
        LOG(LOG_ERROR, "repl.snapshot_failed", "index=%llu error=%s",
            (unsigned long long)index, clawq_strerror(j->rc));
        w->req = j->req;
        w->status = j->rc == CLAWQ_ENOMEM ? RAFT_NOMEM : RAFT_IOERR;
        put_complete(w);
        return;
    }
    raft_free(j->buf->base);
    j->buf->base = j->data;
    j->buf->len = j->len;
    r->snapshots++;
    r->last_serialize_ms = j->serialize_ns / 1000000;
    LOG(LOG_INFO, "repl.snapshot",
        "index=%llu bytes=%zu serialize_ms=%llu pause_ms=%llu",
        (unsigned long long)index, j->len,
        (unsigned long long)(j->serialize_ns / 1000000),
        (unsigned long long)r->last_snapshot_ms);
    rc = r->io_snapshot_put(j->io, j->trailing, j->req, j->snapshot,
                            io_put_done);
    if (rc != 0) {
        /* The uv io did not take it: its buffers stay libraft's to free
         * (snapshot_finalize), as for any failed put. */
        LOG(LOG_ERROR, "repl.snapshot_failed", "index=%llu error=\"%s\"",
            (unsigned long long)index, raft_strerror(rc));
        w->req = j->req;
        w->status = rc;
        put_complete(w);
    }
}

static void snap_after(uv_work_t *work, int status)
{
    snap_job *j = work->data;
    repl *r = j->r;

    (void)status; /* never cancelled: the work is not cancellable here */
    if (!j->continued)
        snap_continue(j);
    uv_mutex_destroy(&j->mu);
    uv_cond_destroy(&j->cv);
    free(j);
    repl_release(r);
}

/* The loop needs the pin gone now (to grow the map, or to close): waits
 * for a serialisation in flight and passes its write on. */
static void snap_wait(repl *r)
{
    if (r->snap_job != NULL)
        snap_continue(r->snap_job);
}

/* Starts serialising the pinned snapshot for the put w. Returns 0, or a
 * raft error with nothing started (the caller fails the put). */
static int snap_start(repl *r, put_wrap *w, struct raft_io *io,
                      unsigned trailing, struct raft_io_snapshot_put *req,
                      const struct raft_snapshot *snapshot)
{
    snap_job *j = calloc(1, sizeof(*j));

    if (j == NULL)
        return RAFT_NOMEM;
    if (uv_mutex_init(&j->mu) != 0) {
        free(j);
        return RAFT_NOMEM;
    }
    if (uv_cond_init(&j->cv) != 0) {
        uv_mutex_destroy(&j->mu);
        free(j);
        return RAFT_NOMEM;
    }
    j->r = r;
    j->snap = r->snap;
    j->w = w;
    j->io = io;
    j->trailing = trailing;
    j->req = req;
    j->snapshot = snapshot;
    j->buf = r->snap_buf;
    j->delay_ms = r->serialize_delay_ms;
    j->work.data = j;
    if (uv_queue_work(r->loop, &j->work, snap_work, snap_after) != 0) {
        uv_cond_destroy(&j->cv);
        uv_mutex_destroy(&j->mu);
        free(j);
        return RAFT_IOERR;
    }
    r->snap_job = j;
    r->handles_open++;
    LOG(LOG_DEBUG, "repl.snapshot_begin", "index=%llu",
        (unsigned long long)store_snapshot_index(j->snap));
    return 0;
}

static int io_snapshot_put(struct raft_io *io, unsigned trailing,
                           struct raft_io_snapshot_put *req,
                           const struct raft_snapshot *snapshot,
                           raft_io_snapshot_put_cb cb)
{
    repl *r = repl_of_io(io);
    /* trailing == 0: installing a received snapshot; else our own. */
    raft_io_snapshot_put_cb done =
        trailing == 0 ? io_install_done : io_put_done;
    put_wrap *w = calloc(1, sizeof(*w));
    int rc;

    if (w == NULL)
        return RAFT_NOMEM;
    w->r = r;
    w->cb = cb;
    w->data = req->data;
    req->data = w;
    /* Our own snapshot, still to serialise (snapshot_async left it
     * pinned): the write is passed on once a worker has serialised it. */
    if (trailing != 0 && r->snap_buf != NULL && r->snap_job == NULL &&
        snapshot->n_bufs == 1 && snapshot->bufs == r->snap_buf)
        rc = snap_start(r, w, io, trailing, req, snapshot);
    else
        rc = r->io_snapshot_put(io, trailing, req, snapshot, done);
    if (rc != 0) {
        req->data = w->data;
        free(w);
        return rc;
    }
    if (trailing == 0) {
        r->installs++;
        return 0;
    }
    w->next = r->puts;
    r->puts = w;
    return 0;
}

static int io_start(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                    raft_io_recv_cb recv)
{
    repl *r = repl_of_io(io);
    r->recv = recv;
    return r->io_start(io, msecs, tick, io_recv);
}

static const struct raft_server *conf_find(repl *r, uint32_t id);

/* A leader sends InstallSnapshot only once the snapshot is loaded, from
 * the load's callback (legacy.c legacyLoadSnapshotCb), with the target's
 * address as it was when the load began: a pointer into the
 * configuration of that moment. Any configuration change meanwhile frees
 * it (raft_remove of that very node, as when a dead follower is removed,
 * or of another one, or an add), and the send read freed memory (ASan,
 * 1 of 19 wipe-rejoin runs). The address is taken from the current
 * configuration instead; a node no longer in it is not sent to
 * (RAFT_NOCONNECTION: libraft frees the message). */
static int io_send(struct raft_io *io, struct raft_io_send *req,
                   const struct raft_message *m, raft_io_send_cb cb)
{
    repl *r = repl_of_io(io);
    const struct raft_server *srv;
    struct raft_message copy;

    if (m->type != RAFT_INSTALL_SNAPSHOT)
        return r->io_send(io, req, m, cb);
    srv = conf_find(r, (uint32_t)m->server_id);
    if (srv == NULL) {
        r->installs_unsent++;
        LOG(LOG_INFO, "repl.install_unsent", "to=%llu index=%llu",
            (unsigned long long)m->server_id,
            (unsigned long long)m->install_snapshot.last_index);
        return RAFT_NOCONNECTION;
    }
    copy = *m;
    copy.server_address = srv->address;
    return r->io_send(io, req, &copy, cb); /* encoded before it returns */
}

/* CLAWQ_TEST_SNAPSHOT_GET_DELAY_MS: a slow snapshot load, so that a
 * configuration change can come while one is in flight (io_send). */
typedef struct get_wrap {
    repl *r;
    struct raft_io_snapshot_get *req;
    raft_io_snapshot_get_cb cb;
    void *data; /* libraft's req->data while we borrow it */
    struct raft_snapshot *snapshot;
    int status;
    uv_timer_t delay;
    struct get_wrap *next;
} get_wrap;

static void get_wrap_free(uv_handle_t *h)
{
    free(h->data);
}

static void get_delayed(uv_timer_t *t)
{
    get_wrap *w = t->data;
    get_wrap **pp;

    for (pp = &w->r->gets; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    w->req->data = w->data;
    w->cb(w->req, w->snapshot, w->status);
    uv_close((uv_handle_t *)&w->delay, get_wrap_free);
}

static void io_get_done(struct raft_io_snapshot_get *req,
                        struct raft_snapshot *snapshot, int status)
{
    get_wrap *w = req->data;

    w->snapshot = snapshot;
    w->status = status;
    if (w->r->closing) {
        get_delayed(&w->delay);
        return;
    }
    w->next = w->r->gets;
    w->r->gets = w;
    LOG(LOG_INFO, "repl.snapshot_get_held", "ms=%llu",
        (unsigned long long)w->r->snapshot_get_delay_ms);
    uv_timer_start(&w->delay, get_delayed, w->r->snapshot_get_delay_ms, 0);
}

static int io_snapshot_get(struct raft_io *io, struct raft_io_snapshot_get *req,
                           raft_io_snapshot_get_cb cb)
{
    repl *r = repl_of_io(io);
    get_wrap *w;
    int rc;

    if (r->snapshot_get_delay_ms == 0)
        return r->io_snapshot_get(io, req, cb);
    w = calloc(1, sizeof(*w));
    if (w == NULL)
        return RAFT_NOMEM;
    w->r = r;
    w->req = req;
    w->cb = cb;
    w->data = req->data;
    uv_timer_init(r->loop, &w->delay);
    w->delay.data = w;
    req->data = w;
    rc = r->io_snapshot_get(io, req, io_get_done);
    if (rc != 0) {
        req->data = w->data;
        uv_close((uv_handle_t *)&w->delay, get_wrap_free);
    }
    return rc;
}

/* ---- transport wrapper: TCP_NODELAY on every Raft connection ----
 *
 * libraft 0.22's TCP transport leaves Nagle's algorithm on, and each of
 * its connections carries one direction only: a node's messages to a peer
 * go over its own connection, the peer's answers over the peer's. The
 * receiving end never writes, so it has no data to carry an ACK and delays
 * it (40 ms on Linux); meanwhile Nagle holds back the sender's next small
 * AppendEntries until that ACK. In a 3-node cluster under load 1-2 % of
 * the entries took 40-44 ms to commit. Both ends of each Raft connection
 * (the one we dial and the one we accept) get TCP_NODELAY, through the
 * transport's public interface. */

static repl *repl_of_transport(struct raft_uv_transport *t)
{
    return (repl *)(void *)((char *)t - offsetof(repl, transport));
}

static void raft_conn_nodelay(struct uv_stream_s *stream)
{
    int rc = stream->type == UV_TCP ? uv_tcp_nodelay((uv_tcp_t *)stream, 1)
                                    : UV_EINVAL;

    if (rc != 0)
        LOG_RATELIMITED(LOG_WARN, "repl.nodelay_failed", 10000, "error=%s",
                        uv_strerror(rc));
}

typedef struct connect_wrap {
    struct raft_uv_connect inner; /* first: the request libraft's tcp sees */
    struct raft_uv_connect *outer;
    raft_uv_connect_cb cb;
} connect_wrap;

static void tr_connect_done(struct raft_uv_connect *req,
                            struct uv_stream_s *stream, int status)
{
    connect_wrap *w = (connect_wrap *)req;
    struct raft_uv_connect *outer = w->outer;
    raft_uv_connect_cb cb = w->cb;

    free(w);
    if (status == 0 && stream != NULL)
        raft_conn_nodelay(stream);
    cb(outer, stream, status);
}

static int tr_connect(struct raft_uv_transport *t, struct raft_uv_connect *req,
                      raft_id id, const char *address, raft_uv_connect_cb cb)
{
    repl *r = repl_of_transport(t);
    connect_wrap *w = malloc(sizeof(*w));
    int rc;

    if (w == NULL)
        return RAFT_NOMEM;
    w->inner.data = NULL;
    w->outer = req;
    w->cb = cb;
    rc = r->tr_connect(t, &w->inner, id, address, tr_connect_done);
    if (rc != 0)
        free(w);
    return rc;
}

static void tr_accepted(struct raft_uv_transport *t, raft_id id,
                        const char *address, struct uv_stream_s *stream)
{
    raft_conn_nodelay(stream);
    repl_of_transport(t)->accept_cb(t, id, address, stream);
}

static int tr_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    repl *r = repl_of_transport(t);

    r->accept_cb = cb;
    return r->tr_listen(t, tr_accepted);
}

/* ---- FSM callbacks ---- */

/* Applies committed entry `index` to the store, into its entry's result
 * when this node proposed it (answered here if already committed). */
static void apply_one(repl *r, uint64_t index, const void *buf, size_t len)
{
    fsm_result *res = &r->scratch;
    entry *e;
    int rc;

    for (e = r->flight_head; e != NULL && e->index < index; e = e->next)
        ;
    if (e != NULL && e->index != index)
        e = NULL;
    if (e != NULL)
        res = &e->res;
    rc = fsm_apply(r->s, index, buf, len, res);
    if (rc == CLAWQ_EUNAVAILABLE && r->snap_job != NULL) {
        /* The map must grow, and a snapshot being serialised pins it:
         * wait for that, then apply (nothing was applied). */
        snap_wait(r);
        rc = fsm_apply(r->s, index, buf, len, res);
    }
    if (rc != 0) {
        /* A committed entry that cannot be applied: replicas would
         * diverge. The one fatal case (STYLE.md). */
        LOG(LOG_ERROR, "repl.apply_fatal", "index=%llu error=%s",
            (unsigned long long)index, clawq_strerror(rc));
        abort();
    }
    if (res->now_ms > r->last_now)
        r->last_now = res->now_ms;
    /* A moving mean over the last few hundred entries. */
    r->entry_mean = r->entry_mean == 0
                        ? (double)len
                        : r->entry_mean + ((double)len - r->entry_mean) / 256.0;
    r->applied_dirty = true;
    if (e != NULL) {
        e->applied = true;
        if (e->committed)
            entry_answer(e);
    }
}

/* Applies every queued entry to the store (see "Deferred apply"). The
 * position is kept in r, so a drain reached again from an answer's
 * callback goes on where the outer one was. */
static void drain(repl *r)
{
    while (r->drained < r->n_defer) {
        const struct deferred *d = &r->defer[r->drained++];
        apply_one(r, d->index, r->defer_bytes.ptr + d->off, d->len);
    }
    r->n_defer = r->drained = 0;
    r->defer_bytes.len = 0;
}

/* libraft's apply: queue a copy for the drain (or, when the queue is full
 * or cannot grow, drain and apply now). */
static int fsm_cb_apply(struct raft_fsm *f, const struct raft_buffer *buf,
                        void **result)
{
    repl *r = f->data;
    uint64_t index = raft_last_applied(&r->raft) + 1;
    size_t off = r->defer_bytes.len;

    *result = NULL;
    if (r->n_defer == r->cap_defer) {
        size_t cap = r->cap_defer ? r->cap_defer * 2 : 64;
        struct deferred *p = realloc(r->defer, cap * sizeof(*p));
        if (p != NULL) {
            r->defer = p;
            r->cap_defer = cap;
        }
    }
    if (r->n_defer == r->cap_defer ||
        cq_buf_append(&r->defer_bytes, buf->base, buf->len) != 0) {
        drain(r);
        apply_one(r, index, buf->base, buf->len);
        return 0;
    }
    r->defer[r->n_defer].index = index;
    r->defer[r->n_defer].off = off;
    r->defer[r->n_defer].len = buf->len;
    r->n_defer++;
    r->applied_dirty = true;
    return 0;
}

/* Each snapshot closes the open log segment and briefly stalls appends
 * (tens of ms with the uv backend), so with small entries (one task each
 * at light load) a fixed entry count would snapshot every few seconds for
 * a few MB of log. The threshold follows the mean entry size so that a
 * snapshot comes every snap_log_size bytes of log, never below the
 * configured entry count. Runs in the check handle; libraft reads the
 * threshold on every commit. */
static void snapshot_tune(repl *r)
{
    double want;
    unsigned n;

    if (r->snap_log_size == 0 || r->entry_mean < 1)
        return;
    want = (double)r->snap_log_size / r->entry_mean;
    n = want < r->snap_min                 ? r->snap_min
        : want > REPL_SNAPSHOT_MAX_ENTRIES ? REPL_SNAPSHOT_MAX_ENTRIES
                                           : (unsigned)want;
    if (n < r->snap_min)
        n = r->snap_min;
    /* Only a change by half or double, or onto a bound: no churn. */
    if ((uint64_t)n * 2 <= r->snap_threshold ||
        (uint64_t)n >= (uint64_t)r->snap_threshold * 2 ||
        ((n == r->snap_min || n == REPL_SNAPSHOT_MAX_ENTRIES) &&
         r->snap_threshold != n)) {
        raft_set_snapshot_threshold(&r->raft, n);
        LOG(LOG_DEBUG, "repl.snapshot_threshold",
            "entries=%u mean_entry_bytes=%.0f", n, r->entry_mean);
        r->snap_threshold = n;
    }
}

static int fsm_cb_snapshot(struct raft_fsm *f, struct raft_buffer *bufs[],
                           unsigned *n_bufs)
{
    repl *r = f->data;
    int rc;

    CLAWQ_ASSERT(r->snap == NULL);
    drain(r); /* the snapshot is of the state at libraft's last_applied */
    rc = store_snapshot_begin(r->s, &r->snap);
    if (rc != 0) {
        LOG(LOG_ERROR, "repl.snapshot_failed", "error=%s", clawq_strerror(rc));
        return RAFT_IOERR;
    }
    *bufs = NULL;
    *n_bufs = 0;
    return 0;
}

/* 0.22 runs this on the loop right after fsm_cb_snapshot. The pin stays;
 * libraft gets a one-buffer placeholder, which the snapshot_put wrapper
 * replaces with the store serialised on a worker thread (see "snapshots
 * off the loop"). */
static int fsm_cb_snapshot_async(struct raft_fsm *f, struct raft_buffer *bufs[],
                                 unsigned *n_bufs)
{
    repl *r = f->data;
    struct raft_buffer *b = raft_malloc(sizeof(*b));

    if (b != NULL && (b->base = raft_malloc(8)) == NULL) {
        raft_free(b);
        b = NULL;
    }
    if (b == NULL) {
        store_snapshot_end(r->snap);
        r->snap = NULL;
        LOG(LOG_ERROR, "repl.snapshot_failed", "error=%s",
            clawq_strerror(CLAWQ_ENOMEM));
        return RAFT_NOMEM;
    }
    b->len = 0;
    r->snap_buf = b;
    r->snap_pause_ns = 0;
    *bufs = b;
    *n_bufs = 1;
    return 0;
}

static int fsm_cb_snapshot_finalize(struct raft_fsm *f,
                                    struct raft_buffer *bufs[],
                                    unsigned *n_bufs)
{
    repl *r = f->data;
    unsigned i;

    /* No serialisation took the pin (the put failed before it began). */
    if (r->snap != NULL && r->snap_job == NULL) {
        store_snapshot_end(r->snap);
        r->snap = NULL;
        r->snap_buf = NULL;
    }
    for (i = 0; i < *n_bufs; i++)
        raft_free((*bufs)[i].base);
    raft_free(*bufs);
    *bufs = NULL;
    *n_bufs = 0;
    return 0;
}

static int fsm_cb_restore(struct raft_fsm *f, struct raft_buffer *buf)
{
    repl *r = f->data;
    bool replaced = false;
    int rc;

    drain(r);
    rc = store_restore(r->s, buf->base, buf->len, &replaced);
    if (rc != 0) {
        LOG(LOG_ERROR, "repl.restore_failed", "bytes=%zu error=%s", buf->len,
            clawq_strerror(rc));
        return RAFT_CORRUPT;
    }
    LOG(LOG_INFO, "repl.restore", "bytes=%zu replaced=%s", buf->len,
        replaced ? "yes" : "no");
    raft_free(buf->base);
    r->applied_dirty = true;
    return 0;
}

/* ---- the loop side ---- */

static void barrier_done(struct raft_barrier *req, int status)
{
    repl *r = req->data;

    r->barrier_pending = false;
    if (status != 0 || r->closing)
        return;
    drain(r);
    /* Everything committed before our term is applied: serve. */
    r->leader = true;
    LOG(LOG_INFO, "repl.leader", "term=%llu",
        (unsigned long long)raft_current_term(&r->raft));
    if (r->hooks.role_changed != NULL)
        r->hooks.role_changed(r->hooks.arg, true);
}

/* ---- configuration changes ---- */

/* libraft's default capacity threshold (raft.c): proposals are refused
 * while a majority of voters has less log space than this prepared. */
#define RAFT_CAPACITY_THRESHOLD_KIB (4 * 1024)

static void change_cb(struct raft_change *req, int status)
{
    repl *r = req->data;
    change *c = &r->chg;

    if (status != 0) {
        LOG(LOG_WARN, "repl.change_failed", "node=%u status=%s", c->id,
            raft_strerror(status));
        c->status = r->closing ? CLAWQ_ESHUTTING_DOWN : CLAWQ_EUNAVAILABLE;
        c->step = CHANGE_DONE;
    } else {
        c->step = c->next;
    }
    /* The next step runs from the check handle; make sure it runs soon. */
    if (!r->closing && !uv_is_active((uv_handle_t *)&r->idle))
        uv_idle_start(&r->idle, on_idle);
}

static void change_finish(repl *r)
{
    change *c = &r->chg;
    repl_change_cb done = c->done;

    if (r->refusing) { /* CLAWQ_TEST_REFUSE_PROMOTION is done */
        r->refusing = false;
        raft_set_capacity_threshold(&r->raft, RAFT_CAPACITY_THRESHOLD_KIB);
    }
    c->step = CHANGE_NONE;
    c->done = NULL;
    if (done != NULL)
        done(c->arg, c->status);
}

static const struct raft_server *conf_find(repl *r, uint32_t id)
{
    unsigned i;

    for (i = 0; i < r->raft.configuration.n; i++)
        if (r->raft.configuration.servers[i].id == id)
            return &r->raft.configuration.servers[i];
    return NULL;
}

/* libraft 0.22.1 can lose a promotion. raft_assign(VOTER) of a node that
 * is behind starts catch-up rounds (req->catch_up_id set); when they end,
 * libraft clears catch_up_id and submits the configuration entry that
 * makes the node a voter. If that submission is refused (RAFT_NOSPACE:
 * under 4 MiB of log space prepared, as on a full or stalled disk or with
 * snapshots every few dozen entries), libraft drops the error (legacy.c
 * recvCb; a build with asserts aborts) and keeps the request as its
 * pending change without ever calling back: the change would never end,
 * clawqd would refuse every later one ("another configuration change is
 * under way") and a joining node would wait until the leader changed. The
 * state is exact: our request is libraft's pending change, catch-up is
 * over, and the node is not a voter, which it would be (uncommitted)
 * had the entry been appended. The change is then taken back from
 * libraft and ends UNAVAILABLE; the caller retries (a joining node does
 * by itself). CLAWQ_TEST_REFUSE_PROMOTION makes it happen once: the
 * capacity threshold is raised while the node catches up (so every
 * proposal is refused meanwhile, the promotion's entry too). */
static bool change_lost(repl *r)
{
    change *c = &r->chg;
    const struct raft_server *srv;

    if (!c->promoting || r->raft.legacy.change != &c->req)
        return false;
    if (c->req.catch_up_id != 0) {
        if (r->refuse_promotion) {
            r->refuse_promotion = false;
            r->refusing = true;
            raft_set_capacity_threshold(&r->raft, UINT16_MAX);
        }
        return false;
    }
    srv = conf_find(r, c->id);
    if (srv == NULL || srv->role == RAFT_VOTER)
        return false;
    LOG(LOG_WARN, "repl.change_lost", "node=%u errmsg=\"%s\"", c->id,
        raft_errmsg(&r->raft));
    r->raft.legacy.change = NULL;
    c->status = CLAWQ_EUNAVAILABLE;
    c->step = CHANGE_DONE;
    return true;
}

/* Makes the raft call of the current step. Runs in the check handle. */
static void change_drive(repl *r)
{
    change *c = &r->chg;
    int rc = 0;

    if (c->step == CHANGE_WAITING && change_lost(r))
        change_finish(r);
    switch (c->step) {
    case CHANGE_NONE:
    case CHANGE_WAITING:
        return;
    case CHANGE_DONE:
        change_finish(r);
        return;
    case CHANGE_ADD:
        c->next = CHANGE_ASSIGN;
        rc = raft_add(&r->raft, &c->req, c->id, c->raft_addr, change_cb);
        break;
    case CHANGE_ASSIGN:
        c->next = CHANGE_DONE;
        c->promoting = true;
        rc = raft_assign(&r->raft, &c->req, c->id, RAFT_VOTER, change_cb);
        break;
    case CHANGE_REMOVE:
        c->next = CHANGE_DONE;
        rc = raft_remove(&r->raft, &c->req, c->id, change_cb);
        break;
    }
    LOG(LOG_INFO, "repl.change", "node=%u step=%s rc=%s", c->id,
        c->next == CHANGE_ASSIGN   ? "add"
        : c->step == CHANGE_ASSIGN ? "promote"
                                   : "remove",
        rc == 0 ? "ok" : raft_strerror(rc));
    if (rc != 0) {
        /* raft_assign names the request libraft's pending change before
         * it submits, and leaves it so when the submission fails. */
        if (r->raft.legacy.change == &c->req)
            r->raft.legacy.change = NULL;
        c->status =
            rc == RAFT_NOTLEADER ? CLAWQ_ENOT_LEADER : CLAWQ_EUNAVAILABLE;
        change_finish(r);
        return;
    }
    c->step = CHANGE_WAITING;
}

static int change_begin(repl *r, uint32_t id, change_step step,
                        repl_change_cb done, void *arg)
{
    change *c = &r->chg;

    if (r->closing)
        return CLAWQ_ESHUTTING_DOWN;
    if (!r->leader)
        return CLAWQ_ENOT_LEADER;
    if (c->step != CHANGE_NONE || r->transfer_done != NULL)
        return CLAWQ_EUNAVAILABLE;
    memset(c, 0, sizeof(*c));
    c->req.data = r;
    c->id = id;
    c->step = step;
    c->done = done;
    c->arg = arg;
    if (!uv_is_active((uv_handle_t *)&r->idle))
        uv_idle_start(&r->idle, on_idle);
    return 0;
}

int repl_add(repl *r, uint32_t id, const char *raft_addr, bool existing_only,
             repl_change_cb done, void *arg)
{
    const struct raft_server *srv;
    change_step step = CHANGE_ADD;
    unsigned i;
    int rc;

    if (id == 0 || raft_addr == NULL || raft_addr[0] == '\0' ||
        strlen(raft_addr) >= sizeof(r->chg.raft_addr))
        return CLAWQ_EINVALID;
    for (i = 0; i < r->raft.configuration.n; i++) {
        srv = &r->raft.configuration.servers[i];
        if (srv->id != id && strcmp(srv->address, raft_addr) == 0)
            return CLAWQ_EINVALID; /* the address is another node's */
    }
    srv = conf_find(r, id);
    if (srv == NULL && existing_only)
        return CLAWQ_ENOT_FOUND;
    if (existing_only)
        step = CHANGE_DONE;
    else if (srv != NULL) {
        if (strcmp(srv->address, raft_addr) != 0)
            return CLAWQ_EINVALID; /* the id is taken */
        step = srv->role == RAFT_VOTER ? CHANGE_DONE : CHANGE_ASSIGN;
    }
    rc = change_begin(r, id, step, done, arg);
    if (rc == 0)
        snprintf(r->chg.raft_addr, sizeof(r->chg.raft_addr), "%s", raft_addr);
    return rc;
}

int repl_remove(repl *r, uint32_t id, repl_change_cb done, void *arg)
{
    if (id == r->raft.id)
        return CLAWQ_EINVALID;
    if (conf_find(r, id) == NULL)
        return CLAWQ_ENOT_FOUND;
    return change_begin(r, id, CHANGE_REMOVE, done, arg);
}

size_t repl_members(repl *r, repl_member_info *out, size_t max,
                    bool *leader_view)
{
    const struct raft_configuration *conf = &r->raft.configuration;
    bool lead = raft_state(&r->raft) == RAFT_LEADER;
    size_t n = 0;
    unsigned i;

    for (i = 0; i < conf->n && n < max; i++) {
        const struct raft_server *srv = &conf->servers[i];
        repl_member_info *m = &out[n++];
        raft_index match = 0;

        memset(m, 0, sizeof(*m));
        m->id = (uint32_t)srv->id;
        snprintf(m->raft_addr, sizeof(m->raft_addr), "%s", srv->address);
        m->role = srv->role == RAFT_VOTER     ? REPL_VOTER
                  : srv->role == RAFT_STANDBY ? REPL_STANDBY
                                              : REPL_SPARE;
        if (lead && srv->id == r->raft.id)
            m->match_index = raft_last_index(&r->raft);
        else if (lead && raft_match_index(&r->raft, srv->id, &match) == 0)
            m->match_index = match;
    }
    if (leader_view != NULL)
        *leader_view = lead;
    return n;
}

static void on_check(uv_check_t *h)
{
    repl *r = h->data;
    bool is_leader;

    if (r->closing)
        return;
    /* libraft has started the next log write by now: apply meanwhile. */
    drain(r);
    is_leader = raft_state(&r->raft) == RAFT_LEADER;
    if (is_leader && !r->leader && !r->barrier_pending) {
        r->barrier.data = r;
        if (raft_barrier(&r->raft, &r->barrier, barrier_done) == 0)
            r->barrier_pending = true;
    }
    r->raft_leader = is_leader;
    if (!is_leader && r->leader) {
        r->leader = false;
        LOG(LOG_INFO, "repl.follower", "term=%llu",
            (unsigned long long)raft_current_term(&r->raft));
        if (r->hooks.role_changed != NULL)
            r->hooks.role_changed(r->hooks.arg, false);
    }
    change_drive(r);
    flush(r);
    if (r->applied_dirty) {
        r->applied_dirty = false;
        snapshot_tune(r);
        if (r->hooks.applied != NULL)
            r->hooks.applied(r->hooks.arg);
        /* The hook may have submitted more (a tick, a woken puller). */
        flush(r);
    }
    /* Nothing proposable left (or held: no leader, a transfer): let the
     * loop sleep; Raft's own timers and messages wake it to retry. */
    if ((r->open_head == NULL || !r->raft_leader ||
         raft_transferee(&r->raft) != 0) &&
        uv_is_active((uv_handle_t *)&r->idle))
        uv_idle_stop(&r->idle);
}

int repl_start(uv_loop_t *loop, store *s, const repl_opts *o,
               const repl_hooks *h, repl **out)
{
    struct raft_configuration conf;
    repl *r;
    int rc;

    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return CLAWQ_ENOMEM;
    r->loop = loop;
    r->s = s;
    r->hooks = *h;
    r->raft.data = r;
    /* Long enough for an election or two; then UNAVAILABLE. */
    r->hold_ms = 4 * (uint64_t)o->election_ms + 500;
    {
        const char *delay = getenv("CLAWQ_TEST_SNAPSHOT_DELAY_MS");
        if (delay != NULL && *delay != '\0')
            r->snapshot_delay_ms = strtoull(delay, NULL, 10);
        delay = getenv("CLAWQ_TEST_SNAPSHOT_SERIALIZE_DELAY_MS");
        if (delay != NULL && *delay != '\0')
            r->serialize_delay_ms = strtoull(delay, NULL, 10);
        r->refuse_promotion = getenv("CLAWQ_TEST_REFUSE_PROMOTION") != NULL;
        delay = getenv("CLAWQ_TEST_SNAPSHOT_GET_DELAY_MS");
        if (delay != NULL && *delay != '\0')
            r->snapshot_get_delay_ms = strtoull(delay, NULL, 10);
    }
    fsm_result_init(&r->scratch);
    cq_buf_init(&r->defer_bytes, DEFER_MAX_BYTES);

    r->fsm.version = 3;
    r->fsm.data = r;
    r->fsm.apply = fsm_cb_apply;
    r->fsm.snapshot = fsm_cb_snapshot;
    r->fsm.snapshot_async = fsm_cb_snapshot_async;
    r->fsm.snapshot_finalize = fsm_cb_snapshot_finalize;
    r->fsm.restore = fsm_cb_restore;

    r->transport.version = 1;
    rc = raft_uv_tcp_init(&r->transport, loop);
    if (rc != 0)
        goto fail;
    r->tr_listen = r->transport.listen;
    r->transport.listen = tr_listen;
    r->tr_connect = r->transport.connect;
    r->transport.connect = tr_connect;
    rc = raft_uv_init(&r->io, loop, o->dir, &r->transport);
    if (rc != 0) {
        LOG(LOG_ERROR, "repl.init_failed", "dir=%s error=\"%s\"", o->dir,
            r->io.errmsg);
        raft_uv_tcp_close(&r->transport);
        goto fail;
    }
    /* Each segment change costs a new segment (zero-filled, logzero.h)
     * and the old one's AIO context (io_destroy(2) waits for an RCU grace
     * period, tens of ms: aioreap.h moves it off the loop). Larger
     * segments change less often. */
    if (o->segment_size > 0)
        raft_uv_set_segment_size(&r->io,
                                 (o->segment_size + 4095) / 4096 * 4096);
    rc = raft_init(&r->raft, &r->io, &r->fsm, o->node_id, o->raft_addr);
    r->raft.data = r;
    if (rc != 0) {
        LOG(LOG_ERROR, "repl.init_failed", "error=\"%s\"",
            raft_errmsg(&r->raft));
        goto fail_io;
    }
    /* libraft formats every trace message with snprintf before its tracer
     * decides to drop it: a dozen per log entry, 8 % of clawqd's
     * instructions per task.
     * Without a tracer it formats nothing; LIBRAFT_TRACE keeps them. */
    if (getenv("LIBRAFT_TRACE") == NULL) {
        r->raft.tracer = NULL;
        raft_uv_set_tracer(&r->io, NULL);
    }
    raft_set_election_timeout(&r->raft, o->election_ms);
    raft_set_heartbeat_timeout(&r->raft, o->heartbeat_ms);
    raft_set_pre_vote(&r->raft, true);
    raft_set_install_snapshot_timeout(&r->raft, 5000);
    raft_set_snapshot_threshold(&r->raft, o->snapshot_threshold);
    r->snap_threshold = r->snap_min = o->snapshot_threshold;
    r->snap_log_size = o->snapshot_log_size;
    raft_set_snapshot_trailing(&r->raft, o->snapshot_trailing);
    raft_set_max_inflight_entries(&r->raft, 1024);

    raft_configuration_init(&conf);
    if (o->n_members == 0) {
        rc =
            raft_configuration_add(&conf, o->node_id, o->raft_addr, RAFT_VOTER);
    } else {
        size_t i;
        for (i = 0, rc = 0; i < o->n_members && rc == 0; i++)
            rc = raft_configuration_add(&conf, o->members[i].id,
                                        o->members[i].raft_addr, RAFT_VOTER);
    }
    if (rc == 0 && !o->no_bootstrap) {
        rc = raft_bootstrap(&r->raft, &conf);
        if (rc == RAFT_CANTBOOTSTRAP)
            rc = 0; /* a restart: the directory holds state already */
    }
    raft_configuration_close(&conf);
    if (rc != 0) {
        LOG(LOG_ERROR, "repl.bootstrap_failed", "error=\"%s\"",
            raft_errmsg(&r->raft));
        goto fail_raft;
    }

    uv_check_init(loop, &r->check);
    r->check.data = r;
    uv_check_start(&r->check, on_check);
    uv_idle_init(loop, &r->idle);
    r->idle.data = r;
    uv_timer_init(loop, &r->release);
    r->release.data = r;
    r->handles_open = 3;

    /* The InstallSnapshot hold: wrap the io before raft_start uses it. */
    r->io_start = r->io.start;
    r->io.start = io_start;
    r->io_snapshot_put = r->io.snapshot_put;
    r->io.snapshot_put = io_snapshot_put;
    r->io_send = r->io.send;
    r->io.send = io_send;
    r->io_snapshot_get = r->io.snapshot_get;
    r->io.snapshot_get = io_snapshot_get;

    rc = raft_start(&r->raft);
    if (rc != 0) {
        LOG(LOG_ERROR, "repl.start_failed", "error=\"%s\"",
            raft_errmsg(&r->raft));
        /* Handles are live now: the caller must go through repl_close. */
        *out = r;
        return CLAWQ_EIO;
    }
    LOG(LOG_INFO, "repl.started", "node=%u raft=%s dir=%s", o->node_id,
        o->raft_addr, o->dir);
    *out = r;
    return 0;

fail_raft:
    /* raft_init succeeded: the only way out is raft_close, asynchronous;
     * the process is about to exit on this error anyway. */
    *out = NULL;
    return CLAWQ_EIO;
fail_io:
    raft_uv_close(&r->io);
    raft_uv_tcp_close(&r->transport);
fail:
    fsm_result_fini(&r->scratch);
    free(r);
    return CLAWQ_EIO;
}

bool repl_is_leader(repl *r)
{
    return r->leader;
}

static void transfer_cb(struct raft_transfer *req)
{
    repl *r = req->data;
    raft_id id = 0;
    const char *addr = NULL;
    void (*done)(void *, bool) = r->transfer_done;

    raft_leader(&r->raft, &id, &addr);
    r->transfer_done = NULL;
    LOG(LOG_INFO, "repl.transfer", "leader=%llu moved=%s",
        (unsigned long long)id, id != 0 && id != r->raft.id ? "yes" : "no");
    if (done != NULL)
        done(r->transfer_arg, id != 0 && id != r->raft.id);
}

int repl_transfer(repl *r, uint32_t to, void (*done)(void *arg, bool moved),
                  void *arg)
{
    const struct raft_server *srv;
    int rc;

    if (r->closing || !r->raft_leader || r->transfer_done != NULL ||
        r->chg.step != CHANGE_NONE)
        return CLAWQ_EINVALID;
    if (to != 0 && (to == r->raft.id || (srv = conf_find(r, to)) == NULL ||
                    srv->role != RAFT_VOTER))
        return CLAWQ_EINVALID;
    r->transfer.data = r;
    r->transfer_done = done;
    r->transfer_arg = arg;
    rc = raft_transfer(&r->raft, &r->transfer, to, transfer_cb);
    if (rc != 0) {
        r->transfer_done = NULL;
        return rc == RAFT_NOTFOUND ? CLAWQ_ENOT_FOUND : CLAWQ_EUNAVAILABLE;
    }
    return 0;
}

uint32_t repl_leader_id(repl *r)
{
    raft_id id = 0;
    const char *addr = NULL;

    raft_leader(&r->raft, &id, &addr);
    return (uint32_t)id;
}

bool repl_accepts_writes(repl *r)
{
    return !r->closing && (r->raft_leader || !leader_elsewhere(r));
}

bool repl_batch_open(const repl *r)
{
    return r->open_head != NULL;
}

void repl_get_info(repl *r, repl_info *out)
{
    raft_id id = 0;
    const char *addr = NULL;

    memset(out, 0, sizeof(*out));
    raft_leader(&r->raft, &id, &addr);
    switch (raft_state(&r->raft)) {
    case RAFT_LEADER:
        out->state = "leader";
        break;
    case RAFT_FOLLOWER:
        out->state = "follower";
        break;
    case RAFT_CANDIDATE:
        out->state = "candidate";
        break;
    default:
        out->state = "unavailable";
        break;
    }
    out->leader = r->leader;
    out->leader_id = (uint32_t)id;
    out->term = raft_current_term(&r->raft);
    out->commit_index = raft_commit_index(&r->raft);
    /* The queued entries are the last ones libraft counts as applied. */
    out->applied_index =
        raft_last_applied(&r->raft) - (r->n_defer - r->drained);
    out->last_index = raft_last_index(&r->raft);
    out->entries_proposed = r->proposed;
    out->snapshots_taken = r->snapshots;
    out->last_snapshot_ms = r->last_snapshot_ms;
    out->last_snapshot_serialize_ms = r->last_serialize_ms;
    out->messages_held = r->held_total;
    out->installs_dropped = r->dropped_installs;
    out->stale_commits = r->stale_commits;
    out->installs_unsent = r->installs_unsent;
}

/* Drops one of the references the closing waits for (the three handles
 * and a snapshot job in flight); the last one frees r. */
static void repl_release(repl *r)
{
    if (--r->handles_open > 0)
        return;
    raft_uv_close(&r->io);
    raft_uv_tcp_close(&r->transport);
    fsm_result_fini(&r->scratch);
    pool_free(r);
    free(r->defer);
    cq_buf_fini(&r->defer_bytes);
    if (r->close_done != NULL)
        r->close_done(r->close_arg);
    free(r);
}

static void handle_closed(uv_handle_t *h)
{
    repl_release(h->data);
}

static void raft_closed(struct raft *raft)
{
    repl *r = raft->data;
    entry *e;

    /* What was committed is applied (and answered, when committed). */
    drain(r);
    /* Anything still open or in flight will never complete now. */
    while ((e = r->open_head) != NULL) {
        r->open_head = e->next;
        entry_fail(e, CLAWQ_ESHUTTING_DOWN);
    }
    r->open_tail = NULL;
    while ((e = r->flight_head) != NULL) {
        r->flight_head = e->next;
        entry_fail(e, CLAWQ_ESHUTTING_DOWN);
    }
    r->flight_tail = NULL;
    /* Messages still held are dropped, with what they own. */
    while (r->held_head != NULL) {
        held_msg *h = r->held_head;
        r->held_head = h->next;
        message_free(&h->m);
        free(h->address);
        free(h);
    }
    r->held_tail = NULL;
    if (r->chg.step != CHANGE_NONE) {
        r->chg.status = CLAWQ_ESHUTTING_DOWN;
        change_finish(r);
    }
    uv_close((uv_handle_t *)&r->check, handle_closed);
    uv_close((uv_handle_t *)&r->idle, handle_closed);
    uv_close((uv_handle_t *)&r->release, handle_closed);
}

void repl_close(repl *r, void (*done)(void *arg), void *arg)
{
    put_wrap *w, *next;

    /* Delayed snapshot loads (fault injection) complete now. */
    while (r->gets != NULL) {
        uv_timer_stop(&r->gets->delay);
        get_delayed(&r->gets->delay);
    }

    /* Delayed snapshot writes (fault injection) complete now, while
     * libraft can still take their callbacks; one may start the next
     * snapshot. Then a snapshot being serialised is passed on to the uv
     * io, which completes or cancels it while closing (passing it on
     * starts nothing new at once). */
    for (w = r->puts; w != NULL; w = next) {
        next = w->next;
        if (w->delaying && uv_is_active((uv_handle_t *)&w->delay)) {
            uv_timer_stop(&w->delay);
            put_complete(w);
        }
    }
    snap_wait(r);
    drain(r);
    r->closing = true;
    r->leader = false;
    r->close_done = done;
    r->close_arg = arg;
    raft_close(&r->raft, raft_closed);
}
