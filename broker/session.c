/* session.c: one client connection. See session.h.
 *
 * Lifetime: a session holds one reference for its TCP handle, one for its
 * idle timer, one per outstanding request and one per write in flight; it
 * is freed when the last goes. A request whose connection closed still
 * completes (its command may already be in the log) but writes nothing.
 *
 * Every message from the network is validated here before it becomes an
 * op: sizes against the limits, counts against CLAWQ_MAX_BATCH, queue
 * names, priorities; the state machine validates again (it must, for
 * entries from any leader).
 */
#include "session.h"

#include <stdlib.h>
#include <string.h>

#include "clawq.pb-c.h"
#include "config.h"
#include "fsm.h"
#include "frame.h"
#include "log.h"

#define READ_CHUNK (64 * 1024)
#define PEEK_MAX 1000
#define DLQ_LIST_DEFAULT 100
#define DLQ_LIST_MAX 1000
#define MAX_DELAY_MS (UINT64_C(365) * 24 * 3600 * 1000)
#define TASK_REPLY_OVERHEAD 8192u /* bytes of a task reply beyond its data */
#define QUEUE_FULL_RETRY_MS 1000  /* when the queue's drain is unknown */

enum req_kind {
    REQ_PUT = 1,
    REQ_PULL,
    REQ_ACK,
    REQ_NACK,
    REQ_FAIL,
    REQ_EXTEND,
    REQ_COUNT, /* dlq_replay, dlq_purge, purge: answer with a count */
    REQ_PLAIN, /* queue_set, pause, resume: answer with a status */
};

typedef struct report {
    char queue[QUEUE_NAME_MAX];
    size_t queue_len;
    uint32_t inflight, capacity;
    uint64_t at_ms;   /* uv_now() of the report */
    uint64_t *leased; /* task ids handed out since the report */
    size_t n_leased, cap_leased;
} report;

typedef struct req {
    sess *c;
    uint64_t id;
    int kind;
    struct req *prev, *next;
    /* pull */
    sched_waiter waiter;
    char queue[QUEUE_NAME_MAX];
    size_t queue_len;
    char worker[TASK_WORKER_MAX];
    size_t worker_len;
    uint32_t max, lease_ms;
    uint64_t wait_until; /* uv_now() ms; 0 = no waiting */
} req;

struct sess {
    uv_tcp_t tcp;
    uv_timer_t idle;
    server *srv;
    uint64_t id;
    uint8_t *rbuf;
    size_t rlen, rcap;
    size_t wbytes; /* replies queued (in out) or being written */
    cq_buf out;    /* replies of this loop turn, not yet written */
    bool dirty;    /* on srv->dirty: out is flushed at the turn's end */
    sess *dirty_next;
    uint32_t pending;
    int refs;
    bool hello;
    bool closing;
    bool draining;
    bool reading;
    bool processing; /* inside process_frames: do not re-enter */
    report *reports;
    size_t n_reports;
    char name[SESS_NAME_MAX + 1]; /* Hello's client_name */
    req *reqs;
    sess *prev, *next;
};

/* One write of a connection's coalesced replies; owns the bytes. */
typedef struct wreq {
    uv_write_t w;
    sess *c;
    size_t len;
    uint8_t *data;
} wreq;

/* ---- a scratch arena for building one response ---- */

typedef struct tmp_block {
    struct tmp_block *next;
    size_t used, cap;
    max_align_t data[];
} tmp_block;

typedef struct tmp {
    tmp_block *head;
    bool failed;
} tmp;

static void *tmp_alloc(tmp *t, size_t n)
{
    tmp_block *b = t->head;
    size_t need = (n + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
    void *p;

    if (b == NULL || b->cap - b->used < need) {
        size_t cap = need > 16384 ? need : 16384;
        b = malloc(sizeof(*b) + cap);
        if (b == NULL) {
            t->failed = true;
            return NULL;
        }
        b->used = 0;
        b->cap = cap;
        b->next = t->head;
        t->head = b;
    }
    p = (uint8_t *)b->data + b->used;
    b->used += need;
    memset(p, 0, n);
    return p;
}

static char *tmp_str(tmp *t, cq_bytes b)
{
    char *s = tmp_alloc(t, b.len + 1);
    if (s == NULL)
        return NULL;
    if (b.len > 0)
        memcpy(s, b.ptr, b.len);
    s[b.len] = '\0';
    return s;
}

static void tmp_free(tmp *t)
{
    tmp_block *b, *next;
    for (b = t->head; b != NULL; b = next) {
        next = b->next;
        free(b);
    }
    t->head = NULL;
}

/* ---- lifetime ---- */

static void req_free(req *q);

static void sess_unref(sess *c)
{
    size_t i;
    server *srv;

    if (--c->refs > 0)
        return;
    srv = c->srv;
    for (i = 0; i < c->n_reports; i++)
        free(c->reports[i].leased);
    free(c->reports);
    free(c->rbuf);
    cq_buf_fini(&c->out);
    free(c);
    if (srv->on_session_closed != NULL)
        srv->on_session_closed(srv);
}

static void on_handle_closed(uv_handle_t *h)
{
    sess_unref(h->data);
}

void sess_close(sess *c)
{
    req *q, *next;

    if (c->closing)
        return;
    c->closing = true;
    /* Waiting pullers go now; requests in Raft finish silently. The
     * handles' references keep c alive through this loop. */
    for (q = c->reqs; q != NULL; q = next) {
        next = q->next;
        if (q->waiter.registered) {
            sched_cancel(c->srv->sc, &q->waiter);
            req_free(q);
        }
    }
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        c->srv->sessions = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->srv->n_sessions--;
    LOG(LOG_DEBUG, "conn.close", "conn=%llu pending=%u",
        (unsigned long long)c->id, c->pending);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->idle, on_handle_closed);
}

bool sess_is_idle(const sess *c)
{
    return c->pending == 0 && c->wbytes == 0;
}

void sess_drain(sess *c)
{
    c->draining = true;
    if (sess_is_idle(c))
        sess_close(c);
}

/* ---- writing ---- */

static void read_resume_maybe(sess *c);
static void start_reading(sess *c);
static void on_report_timer(uv_timer_t *t);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static bool process_frames(sess *c);
static bool over_limits(const sess *c);

static void on_write(uv_write_t *w, int status)
{
    wreq *wr = (wreq *)w;
    sess *c = wr->c;

    c->wbytes -= wr->len;
    if (status != 0 && status != UV_ECANCELED)
        LOG(LOG_DEBUG, "conn.write_failed", "conn=%llu error=%s",
            (unsigned long long)c->id, uv_strerror(status));
    free(wr->data);
    free(wr);
    if (!c->closing) {
        if (status != 0)
            sess_close(c);
        else if (c->draining && sess_is_idle(c))
            sess_close(c);
        else
            read_resume_maybe(c);
    }
    sess_unref(c);
}

static void send_response(sess *c, Clawq__Response *resp)
{
    size_t n = clawq__response__get_packed_size(resp);

    if (c->closing)
        return;
    if (n > c->srv->limits.max_frame) {
        /* A reply the client could not accept: say so instead. */
        Clawq__Response small = CLAWQ__RESPONSE__INIT;
        small.id = resp->id;
        small.has_status = 1;
        small.status = CLAWQ__STATUS__TOO_LARGE;
        small.message = "reply over max-frame: ask for fewer tasks";
        send_response(c, &small);
        return;
    }
    if (cq_buf_reserve(&c->out, CLAWQ_FRAME_HEADER_LEN + n) != 0) {
        LOG(LOG_ERROR, "conn.nomem", "conn=%llu bytes=%zu",
            (unsigned long long)c->id, n);
        sess_close(c);
        return;
    }
    clawq_frame_put_len(c->out.ptr + c->out.len, (uint32_t)n);
    clawq__response__pack(resp,
                          c->out.ptr + c->out.len + CLAWQ_FRAME_HEADER_LEN);
    c->out.len += CLAWQ_FRAME_HEADER_LEN + n;
    c->wbytes += CLAWQ_FRAME_HEADER_LEN + n;
    if (!c->dirty) {
        server *srv = c->srv;
        c->dirty = true;
        c->refs++; /* held by the dirty list */
        c->dirty_next = srv->dirty;
        srv->dirty = c;
    }
    if (c->wbytes > c->srv->limits.write_buffer && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

/* Writes one session's coalesced replies. */
static void sess_flush(sess *c)
{
    uv_buf_t buf;
    wreq *wr;
    int rc;

    if (c->closing || c->out.len == 0)
        return;
    wr = malloc(sizeof(*wr));
    if (wr == NULL) {
        sess_close(c);
        return;
    }
    wr->c = c;
    wr->len = c->out.len;
    wr->data = c->out.ptr; /* the write owns the bytes now */
    cq_buf_init(&c->out, c->out.max);
    buf = uv_buf_init((char *)wr->data, (unsigned)wr->len);
    rc = uv_write(&wr->w, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
    if (rc != 0) {
        c->wbytes -= wr->len;
        free(wr->data);
        free(wr);
        sess_close(c);
        return;
    }
    c->refs++;
}

/* End of a loop turn, before the loop polls (and may sleep): write every
 * dirty session's replies, those of the turn's I/O and those of the
 * entries the check phase applied, in one write per session. */
static void on_flush_prepare(uv_prepare_t *h)
{
    server *srv = h->data;
    sess *c;

    while ((c = srv->dirty) != NULL) {
        srv->dirty = c->dirty_next;
        c->dirty = false;
        c->dirty_next = NULL;
        sess_flush(c);
        sess_unref(c);
    }
}

void sess_server_init(server *srv)
{
    uv_timer_init(srv->loop, &srv->report_timer);
    srv->report_timer.data = srv;
    uv_timer_start(&srv->report_timer, on_report_timer,
                   srv->limits.report_interval_ms,
                   srv->limits.report_interval_ms);
    uv_prepare_init(srv->loop, &srv->flush_prepare);
    srv->flush_prepare.data = srv;
    uv_prepare_start(&srv->flush_prepare, on_flush_prepare);
}

void sess_server_close(server *srv)
{
    uv_close((uv_handle_t *)&srv->report_timer, NULL);
    uv_close((uv_handle_t *)&srv->flush_prepare, NULL);
}

static Clawq__Status wire_status(int err)
{
    return (Clawq__Status)(err < 0 ? -err : err);
}

static void reply_status(sess *c, uint64_t id, int err, const char *msg)
{
    Clawq__Response resp = CLAWQ__RESPONSE__INIT;
    char leader[CMD_ADDR_MAX + 1];
    uint32_t lid;

    /* Send the client to the leader, when this node knows where it is. */
    if (err == CLAWQ_ENOT_LEADER && (lid = repl_leader_id(c->srv->r)) != 0 &&
        fsm_member_addr(c->srv->s, lid, leader, sizeof(leader)) == 0)
        resp.leader = leader;

    resp.id = id;
    resp.has_status = 1;
    resp.status = wire_status(err);
    resp.message = (char *)(uintptr_t)(msg ? msg : clawq_strerror(err));
    if (err == CLAWQ_EQUEUE_FULL || err == CLAWQ_EUNAVAILABLE ||
        err == CLAWQ_ESHUTTING_DOWN) {
        resp.has_retry_after_ms = 1;
        resp.retry_after_ms = QUEUE_FULL_RETRY_MS;
    }
    send_response(c, &resp);
}

/* ---- requests ---- */

static req *req_new(sess *c, uint64_t id, int kind)
{
    req *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    q->c = c;
    q->id = id;
    q->kind = kind;
    q->next = c->reqs;
    if (c->reqs != NULL)
        c->reqs->prev = q;
    c->reqs = q;
    c->pending++;
    c->refs++;
    return q;
}

static void req_free(req *q)
{
    sess *c = q->c;

    if (q->prev != NULL)
        q->prev->next = q->next;
    else
        c->reqs = q->next;
    if (q->next != NULL)
        q->next->prev = q->prev;
    c->pending--;
    free(q);
    if (!c->closing) {
        if (c->draining && sess_is_idle(c))
            sess_close(c);
        else
            read_resume_maybe(c);
    }
    sess_unref(c);
}

static report *report_find(sess *c, cq_bytes queue)
{
    size_t i;
    for (i = 0; i < c->n_reports; i++) {
        if (cq_bytes_eq(
                cq_bytes_of(c->reports[i].queue, c->reports[i].queue_len),
                queue))
            return &c->reports[i];
    }
    return NULL;
}

/* Tasks this connection may still lease on the queue: unlimited (max)
 * without a report, else capacity - inflight - leased since the report. */
static uint32_t report_free(sess *c, cq_bytes queue, uint32_t max)
{
    report *r = report_find(c, queue);
    uint64_t used;

    if (r == NULL)
        return max;
    used = (uint64_t)r->inflight + r->n_leased;
    if (used >= r->capacity)
        return 0;
    return r->capacity - used < max ? (uint32_t)(r->capacity - used) : max;
}

static void report_leased(sess *c, cq_bytes queue, uint64_t task_id)
{
    report *r = report_find(c, queue);

    if (r == NULL)
        return;
    if (r->n_leased == r->cap_leased) {
        size_t cap = r->cap_leased ? r->cap_leased * 2 : 16;
        uint64_t *p = realloc(r->leased, cap * sizeof(*p));
        if (p == NULL)
            return; /* counts as not leased: errs toward more work */
        r->leased = p;
        r->cap_leased = cap;
    }
    r->leased[r->n_leased++] = task_id;
}

static void report_settled(sess *c, uint64_t task_id)
{
    size_t i, j;

    for (i = 0; i < c->n_reports; i++) {
        report *r = &c->reports[i];
        for (j = 0; j < r->n_leased; j++) {
            if (r->leased[j] == task_id) {
                r->leased[j] = r->leased[--r->n_leased];
                return;
            }
        }
    }
}

/* A live report: sent within the last three report intervals. (A stale
 * one still limits its connection's leases; it no longer counts as a
 * worker.) */
static report *report_live(sess *c, cq_bytes queue, uint64_t now)
{
    report *r = report_find(c, queue);

    if (r == NULL || c->closing ||
        now - r->at_ms > 3 * c->srv->limits.report_interval_ms)
        return NULL;
    return r;
}

size_t sess_workers_list(server *srv, cq_bytes queue, sess_worker *out,
                         size_t max)
{
    uint64_t now = uv_now(srv->loop);
    size_t n = 0;
    sess *c;

    for (c = srv->sessions; c != NULL; c = c->next) {
        report *r = report_live(c, queue, now);
        if (r == NULL)
            continue;
        if (n < max) {
            sess_worker *w = &out[n];
            memset(w, 0, sizeof(*w));
            w->conn_id = c->id;
            memcpy(w->name, c->name, sizeof(w->name));
            w->capacity = r->capacity;
            w->inflight = r->inflight + (uint32_t)r->n_leased;
            w->age_ms = now - r->at_ms;
        }
        n++;
    }
    return n;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* The live reports of a queue on this node, summed, with the median
 * capacity. */
static void workers_live(server *srv, cq_bytes queue, queue_workers *out)
{
    uint64_t now = uv_now(srv->loop);
    uint32_t caps[256];
    size_t n = 0;
    sess *c;

    memset(out, 0, sizeof(*out));
    for (c = srv->sessions; c != NULL; c = c->next) {
        report *r = report_live(c, queue, now);
        if (r == NULL)
            continue;
        out->workers++;
        out->capacity += r->capacity;
        out->inflight += (uint64_t)r->inflight + r->n_leased;
        if (n < sizeof(caps) / sizeof(caps[0]))
            caps[n++] = r->capacity;
    }
    if (n > 0) {
        qsort(caps, n, sizeof(caps[0]), cmp_u32);
        out->median_capacity = caps[n / 2];
    }
    out->at_ms = repl_now_ms(srv->r);
}

void sess_workers_summary(server *srv, const fsm_queue_stats *st,
                          queue_workers *out)
{
    uint64_t now;

    if (repl_is_leader(srv->r)) {
        workers_live(srv, cq_bytes_str(st->name), out);
        return;
    }
    /* A follower: the leader's replicated summary, while it is fresh. */
    now = repl_now_ms(srv->r);
    *out = st->rec.workers;
    if (out->at_ms == 0 ||
        now > out->at_ms + 3 * srv->limits.report_interval_ms)
        memset(out, 0, sizeof(*out));
}

static void summary_done(void *arg, int status, const fsm_result *res,
                         size_t first, size_t n)
{
    (void)arg;
    (void)res;
    (void)first;
    (void)n;
    if (status != 0)
        LOG(LOG_DEBUG, "sess.summary_failed", "status=%s",
            clawq_err_name(status));
}

/* Every report interval the leader replicates the queues' worker
 * summaries that changed (or would look stale to followers). */
static void on_report_timer(uv_timer_t *t)
{
    server *srv = t->data;
    fsm_queue_stats *list = NULL;
    cmd_op *ops = NULL;
    size_t n = 0, n_ops = 0, i;
    uint64_t now;

    if (!repl_is_leader(srv->r) || srv->shutting_down ||
        fsm_queue_list(srv->s, &list, &n) != 0 || n == 0)
        goto done;
    ops = calloc(n, sizeof(*ops));
    if (ops == NULL)
        goto done;
    now = repl_now_ms(srv->r);
    for (i = 0; i < n; i++) {
        const queue_workers *old = &list[i].rec.workers;
        queue_workers w;

        workers_live(srv, cq_bytes_str(list[i].name), &w);
        if (w.workers == 0 && old->workers == 0)
            continue; /* nothing to say, nothing to take back */
        if (w.workers == old->workers && w.capacity == old->capacity &&
            w.inflight == old->inflight &&
            w.median_capacity == old->median_capacity &&
            now < old->at_ms + srv->limits.report_interval_ms)
            continue;
        ops[n_ops].type = CMD_WORKERS;
        ops[n_ops].u.workers.queue = cq_bytes_str(list[i].name);
        ops[n_ops].u.workers.workers = w.workers;
        ops[n_ops].u.workers.median_capacity = w.median_capacity;
        ops[n_ops].u.workers.capacity = w.capacity;
        ops[n_ops].u.workers.inflight = w.inflight;
        n_ops++;
    }
    if (n_ops > 0)
        repl_submit(srv->r, ops, n_ops, summary_done, NULL);
done:
    free(ops);
    free(list);
}

void sess_reports_sum(server *srv, cq_bytes queue, uint32_t *workers,
                      uint64_t *capacity, uint64_t *inflight)
{
    uint64_t now = uv_now(srv->loop);
    sess *c;

    *workers = 0;
    *capacity = *inflight = 0;
    for (c = srv->sessions; c != NULL; c = c->next) {
        report *r = report_live(c, queue, now);
        if (r == NULL)
            continue;
        (*workers)++;
        *capacity += r->capacity;
        *inflight += (uint64_t)r->inflight + r->n_leased;
    }
}

/* Proposes ops for request q; on failure answers at once, frees q and
 * returns the error. */
static int submit(req *q, const cmd_op *ops, size_t n, repl_cb cb)
{
    int rc = repl_submit(q->c->srv->r, ops, n, cb, q);
    if (rc != 0) {
        reply_status(q->c, q->id, rc, NULL);
        req_free(q);
    }
    return rc;
}

/* Common start of a write request. */
static req *write_begin(sess *c, uint64_t id, int kind)
{
    req *q;

    if (c->srv->shutting_down) {
        reply_status(c, id, CLAWQ_ESHUTTING_DOWN, NULL);
        return NULL;
    }
    if (!repl_accepts_writes(c->srv->r)) {
        reply_status(c, id, CLAWQ_ENOT_LEADER, "this node is not the leader");
        return NULL;
    }
    q = req_new(c, id, kind);
    if (q == NULL)
        reply_status(c, id, CLAWQ_ENOMEM, NULL);
    return q;
}

static bool name_ok(const char *s)
{
    return s != NULL && queue_name_is_valid(cq_bytes_str(s));
}

/* ---- headers: protobuf pairs <-> msgpack array of strings ---- */

static int headers_encode(Clawq__Header **h, size_t n, cq_buf *out)
{
    mp_writer w;
    size_t i;

    mp_writer_init(&w, out);
    mp_write_array(&w, (uint32_t)(n * 2));
    for (i = 0; i < n; i++) {
        mp_write_str(&w, cq_bytes_str(h[i]->key ? h[i]->key : ""));
        mp_write_str(&w, cq_bytes_str(h[i]->value ? h[i]->value : ""));
    }
    return w.err;
}

/* Headers were checked at put time (fsm.c): anything else stops here. */
static void headers_decode(tmp *t, cq_bytes h, Clawq__Task *out)
{
    mp_reader r;
    uint32_t n, i;
    cq_bytes k, v;

    if (h.len == 0)
        return;
    mp_reader_init(&r, h.ptr, h.len);
    if (!mp_read_array(&r, &n) || n / 2 > h.len)
        return;
    n /= 2;
    out->headers = tmp_alloc(t, n * sizeof(*out->headers));
    if (out->headers == NULL)
        return;
    for (i = 0; i < n; i++) {
        Clawq__Header *hd;
        if (!mp_read_str(&r, &k) || !mp_read_str(&r, &v))
            break;
        hd = tmp_alloc(t, sizeof(*hd));
        if (hd == NULL)
            break;
        clawq__header__init(hd);
        hd->key = tmp_str(t, k);
        hd->value = tmp_str(t, v);
        out->headers[out->n_headers++] = hd;
    }
}

/* ---- responses from results ---- */

static Clawq__Task *task_msg(tmp *t, const fsm_task *ft)
{
    Clawq__Task *m = tmp_alloc(t, sizeof(*m));
    uint32_t i;

    if (m == NULL)
        return NULL;
    clawq__task__init(m);
#define SET(field, v)                                                          \
    do {                                                                       \
        m->has_##field = 1;                                                    \
        m->field = (v);                                                        \
    } while (0)
    SET(id, ft->id);
    m->queue = tmp_str(t, ft->queue);
    SET(payload, ((ProtobufCBinaryData){
                     ft->payload.len, (uint8_t *)(uintptr_t)ft->payload.ptr}));
    SET(priority, ft->priority);
    SET(state, (Clawq__TaskState)ft->state);
    SET(attempt, ft->attempt);
    SET(max_attempts, ft->max_attempts);
    SET(created_ms, ft->created_ms);
    if (ft->lease_id != 0) {
        SET(lease_id, ft->lease_id);
        SET(lease_expires_ms, ft->lease_expires_ms);
    }
    if (ft->checkpoint.len > 0)
        SET(checkpoint,
            ((ProtobufCBinaryData){ft->checkpoint.len,
                                   (uint8_t *)(uintptr_t)ft->checkpoint.ptr}));
    if (ft->progress != 0)
        SET(progress, ft->progress);
    if (ft->run_at_ms != 0)
        SET(run_at_ms, ft->run_at_ms);
    if (ft->deadline_ms != 0)
        SET(deadline_ms, ft->deadline_ms);
    if (ft->ready_at_ms != 0)
        SET(ready_at_ms, ft->ready_at_ms);
    if (ft->dead_at_ms != 0) {
        SET(dead_at_ms, ft->dead_at_ms);
        m->dead_reason = (char *)(uintptr_t)dead_reason_name(ft->dead_reason);
    }
#undef SET
    if (ft->idem_key.len > 0)
        m->idempotency_key = tmp_str(t, ft->idem_key);
    if (ft->worker.len > 0)
        m->worker = tmp_str(t, ft->worker);
    headers_decode(t, ft->headers, m);
    if (ft->n_errors > 0) {
        m->errors = tmp_alloc(t, ft->n_errors * sizeof(*m->errors));
        if (m->errors == NULL)
            return NULL;
        for (i = 0; i < ft->n_errors; i++) {
            Clawq__TaskError *e = tmp_alloc(t, sizeof(*e));
            if (e == NULL)
                return NULL;
            clawq__task_error__init(e);
            e->has_at_ms = 1;
            e->at_ms = ft->errors[i].at_ms;
            e->has_attempt = 1;
            e->attempt = ft->errors[i].attempt;
            e->message = tmp_str(t, ft->errors[i].msg);
            m->errors[m->n_errors++] = e;
        }
    }
    return m;
}

/* Answers with tasks[first .. first + n) of a result. */
static void reply_tasks(sess *c, uint64_t id, const fsm_task *tasks, size_t n)
{
    Clawq__Response resp = CLAWQ__RESPONSE__INIT;
    Clawq__TasksResponse tr = CLAWQ__TASKS_RESPONSE__INIT;
    tmp t = {NULL, false};
    size_t i;

    resp.id = id;
    resp.body_case = CLAWQ__RESPONSE__BODY_TASKS;
    resp.tasks = &tr;
    if (n > 0) {
        tr.tasks = tmp_alloc(&t, n * sizeof(*tr.tasks));
        for (i = 0; tr.tasks != NULL && i < n; i++) {
            tr.tasks[i] = task_msg(&t, &tasks[i]);
            if (tr.tasks[i] == NULL)
                break;
            tr.n_tasks++;
        }
    }
    if (t.failed)
        reply_status(c, id, CLAWQ_ENOMEM, NULL);
    else
        send_response(c, &resp);
    tmp_free(&t);
}

static void fill_stats(tmp *t, server *srv, const fsm_queue_stats *st,
                       Clawq__QueueStats *m)
{
    const queue_counters *n = &st->rec.counters;
    const queue_settings *s = &st->rec.settings;
    Clawq__QueueSettings *qs = tmp_alloc(t, sizeof(*qs));
    uint64_t now = repl_now_ms(srv->r);
    queue_workers wk;

    clawq__queue_stats__init(m);
#define SET(field, v)                                                          \
    do {                                                                       \
        m->has_##field = 1;                                                    \
        m->field = (v);                                                        \
    } while (0)
    m->name = tmp_str(t, cq_bytes_str(st->name));
    SET(ready, n->ready);
    SET(delayed, n->delayed);
    SET(leased, n->leased);
    SET(dead, n->dead);
    SET(put_total, n->put_total);
    SET(deduped_total, n->deduped_total);
    SET(leased_total, n->leased_total);
    SET(acked_total, n->acked_total);
    SET(nacked_total, n->nacked_total);
    SET(failed_total, n->failed_total);
    SET(expired_total, n->expired_total);
    SET(dead_total, n->dead_total);
    SET(oldest_ready_ms, st->rec.oldest_ready_ms);
    SET(oldest_ready_age_ms,
        st->rec.oldest_ready_ms != 0 && now > st->rec.oldest_ready_ms
            ? now - st->rec.oldest_ready_ms
            : 0);
    SET(created_ms, st->rec.created_ms);
    sess_workers_summary(srv, st, &wk);
    SET(workers, wk.workers);
    SET(worker_capacity, wk.capacity);
    SET(worker_inflight, wk.inflight);
#undef SET
    if (qs == NULL)
        return;
    clawq__queue_settings__init(qs);
#define SETQ(field, v)                                                         \
    do {                                                                       \
        qs->has_##field = 1;                                                   \
        qs->field = (v);                                                       \
    } while (0)
    SETQ(lease_ms, s->lease_ms);
    SETQ(max_attempts, s->max_attempts);
    SETQ(backoff_base_ms, s->backoff_base_ms);
    SETQ(backoff_max_ms, s->backoff_max_ms);
    SETQ(max_depth, s->max_depth);
    SETQ(max_payload, s->max_payload);
    SETQ(dedup_window_ms, s->dedup_window_ms);
    SETQ(paused, s->paused);
#undef SETQ
    m->settings = qs;
}

/* ---- write requests: completion ---- */

/* QUEUE_FULL's hint: how long one task takes to drain from the queue. */
static uint32_t queue_retry_after(server *srv, cq_bytes queue)
{
    fsm_queue_stats st;

    if (fsm_queue_stats_get(srv->s, queue, &st) != 0)
        return QUEUE_FULL_RETRY_MS;
    return metrics_retry_after_ms(&srv->metrics, st.rec.qid,
                                  repl_now_ms(srv->r));
}

/* The per-item results of a batch (put or ack), in a tmp array; *full
 * tells whether an item met a full queue. NULL when out of memory. */
static Clawq__ItemResult **item_results(tmp *t, req *q, const fsm_result *res,
                                        size_t first, size_t n, bool *full)
{
    Clawq__ItemResult **items = tmp_alloc(t, (n ? n : 1) * sizeof(*items));
    uint64_t now = repl_now_ms(q->c->srv->r);
    size_t i;

    *full = false;
    for (i = 0; items != NULL && i < n; i++) {
        const fsm_op_result *o = &res->ops[first + i];
        Clawq__ItemResult *ir = tmp_alloc(t, sizeof(*ir));
        if (ir == NULL)
            return NULL;
        clawq__item_result__init(ir);
        ir->has_status = 1;
        ir->status = wire_status(o->status);
        if (o->status == 0 || q->kind == REQ_ACK) {
            ir->has_id = 1;
            ir->id = o->id;
        }
        if (o->status != 0) {
            ir->message = (char *)(uintptr_t)clawq_strerror(o->status);
            *full = *full || o->status == CLAWQ_EQUEUE_FULL;
        } else if (o->duplicate) {
            ir->has_duplicate = 1;
            ir->duplicate = 1;
        } else if (q->kind == REQ_ACK) {
            report_settled(q->c, o->id);
            metrics_settled(&q->c->srv->metrics, o->qid, true, now,
                            o->created_ms, o->leased_at_ms);
        }
        items[i] = ir;
    }
    return items;
}

/* put and ack: one result per item. */
static void batch_done(void *arg, int status, const fsm_result *res,
                       size_t first, size_t n)
{
    req *q = arg;
    Clawq__Response resp = CLAWQ__RESPONSE__INIT;
    Clawq__PutResponse pr = CLAWQ__PUT_RESPONSE__INIT;
    Clawq__AckResponse ar = CLAWQ__ACK_RESPONSE__INIT;
    Clawq__ItemResult **items;
    tmp t = {NULL, false};
    bool full = false;

    if (status != 0) {
        reply_status(q->c, q->id, status, NULL);
        req_free(q);
        return;
    }
    items = item_results(&t, q, res, first, n, &full);
    resp.id = q->id;
    if (q->kind == REQ_PUT) {
        pr.results = items;
        pr.n_results = n;
        resp.body_case = CLAWQ__RESPONSE__BODY_PUT;
        resp.put = &pr;
    } else {
        ar.results = items;
        ar.n_results = n;
        resp.body_case = CLAWQ__RESPONSE__BODY_ACK;
        resp.ack = &ar;
    }
    if (full) {
        resp.has_retry_after_ms = 1;
        resp.retry_after_ms =
            queue_retry_after(q->c->srv, cq_bytes_of(q->queue, q->queue_len));
    }
    if (items == NULL || t.failed)
        reply_status(q->c, q->id, CLAWQ_ENOMEM, NULL);
    else
        send_response(q->c, &resp);
    tmp_free(&t);
    req_free(q);
}

/* The result of a request's single op, or NULL when the request or the op
 * failed: then the failure is answered and q freed. */
static const fsm_op_result *op_result(req *q, int status, const fsm_result *res,
                                      size_t first)
{
    const fsm_op_result *o;

    if (status != 0) {
        reply_status(q->c, q->id, status, NULL);
        req_free(q);
        return NULL;
    }
    o = &res->ops[first];
    if (o->status != 0) {
        reply_status(q->c, q->id, o->status,
                     res->detail[0] ? res->detail : NULL);
        req_free(q);
        return NULL;
    }
    return o;
}

/* nack, fail, extend, queue_set, pause, resume, dlq_*, purge. */
static void single_done(void *arg, int status, const fsm_result *res,
                        size_t first, size_t n)
{
    req *q = arg;
    Clawq__Response resp = CLAWQ__RESPONSE__INIT;
    Clawq__ExtendResponse er = CLAWQ__EXTEND_RESPONSE__INIT;
    Clawq__CountResponse cr = CLAWQ__COUNT_RESPONSE__INIT;
    const fsm_op_result *o;

    (void)n;
    o = op_result(q, status, res, first);
    if (o == NULL)
        return;
    resp.id = q->id;
    switch (q->kind) {
    case REQ_EXTEND:
        er.has_lease_expires_ms = 1;
        er.lease_expires_ms = o->value;
        resp.body_case = CLAWQ__RESPONSE__BODY_EXTEND;
        resp.extend = &er;
        break;
    case REQ_COUNT:
        cr.has_count = 1;
        cr.count = o->value;
        resp.body_case = CLAWQ__RESPONSE__BODY_COUNT;
        resp.count = &cr;
        break;
    case REQ_NACK:
    case REQ_FAIL:
        report_settled(q->c, o->id);
        metrics_settled(&q->c->srv->metrics, o->qid, false,
                        repl_now_ms(q->c->srv->r), o->created_ms,
                        o->leased_at_ms);
        break;
    default:
        break;
    }
    send_response(q->c, &resp);
    req_free(q);
}

/* ---- pull ---- */

static void pull_submit(req *q);

static void pull_wake(sched_waiter *w, bool timed_out)
{
    req *q = (req *)((uint8_t *)w - offsetof(req, waiter));
    server *srv = q->c->srv;
    uint32_t lid;

    /* Stopping after a handover: send the puller on to the new leader,
     * where its call goes on waiting. */
    if (!timed_out && !q->c->closing && srv->shutting_down &&
        (lid = repl_leader_id(srv->r)) != 0 && lid != srv->node_id) {
        reply_status(q->c, q->id, CLAWQ_ENOT_LEADER,
                     "this node is stopping; another leads");
        req_free(q);
        return;
    }
    if (timed_out || q->c->closing || srv->shutting_down) {
        reply_tasks(q->c, q->id, NULL, 0);
        req_free(q);
        return;
    }
    pull_submit(q);
}

/* Nothing for the puller now: wait in line (front after losing a race). */
static void pull_wait(req *q, bool front)
{
    uint64_t now = uv_now(q->c->srv->loop);
    int rc;

    if (q->wait_until <= now || q->c->closing) {
        reply_tasks(q->c, q->id, NULL, 0);
        req_free(q);
        return;
    }
    rc = sched_wait(q->c->srv->sc, cq_bytes_of(q->queue, q->queue_len),
                    &q->waiter, q->wait_until - now, front, pull_wake);
    if (rc != 0) {
        reply_status(q->c, q->id, rc, NULL);
        req_free(q);
    }
}

static void pull_done(void *arg, int status, const fsm_result *res,
                      size_t first, size_t n)
{
    req *q = arg;
    const fsm_op_result *o;
    size_t i;

    (void)n;
    o = op_result(q, status, res, first);
    if (o == NULL)
        return;
    if (o->n_tasks == 0) {
        pull_wait(q, true);
        return;
    }
    for (i = 0; i < o->n_tasks; i++)
        report_leased(q->c, cq_bytes_of(q->queue, q->queue_len),
                      res->tasks[o->first_task + i].id);
    reply_tasks(q->c, q->id, &res->tasks[o->first_task], o->n_tasks);
    req_free(q);
}

/* Whether to propose a lease now. Not when this node leads, caught up,
 * and its applied state has the queue paused, without ready tasks, or not
 * at all: the lease (it takes ready tasks only) would come back empty, and
 * cost a log entry and its fsync. The puller waits instead; an entry that
 * makes tasks ready wakes it once applied (sched_on_applied). Yes when an
 * entry of this loop turn is still open: the lease rides in it for free,
 * and finds what a put before it in the same entry added. Yes on a node
 * not (yet) serving as leader: the submission is held or refused there,
 * and the client follows the leader. A failed read says yes: the lease
 * decides. */
static bool pull_may_find(server *srv, cq_bytes queue)
{
    fsm_queue_stats st;
    int rc;

    if (repl_batch_open(srv->r) || !repl_is_leader(srv->r))
        return true;
    rc = fsm_queue_stats_get(srv->s, queue, &st);
    if (rc == CLAWQ_ENOT_FOUND)
        return false;
    return rc != 0 || (!st.rec.settings.paused && st.rec.counters.ready > 0);
}

static void pull_submit(req *q)
{
    cmd_op op;
    uint32_t max;
    int rc;

    if (!repl_accepts_writes(q->c->srv->r)) {
        reply_status(q->c, q->id, CLAWQ_ENOT_LEADER, NULL);
        req_free(q);
        return;
    }
    max = report_free(q->c, cq_bytes_of(q->queue, q->queue_len), q->max);
    if (max == 0) {
        /* At its reported capacity: wait as if the queue were empty. */
        pull_wait(q, false);
        return;
    }
    if (!pull_may_find(q->c->srv, cq_bytes_of(q->queue, q->queue_len))) {
        pull_wait(q, false);
        return;
    }
    memset(&op, 0, sizeof(op));
    op.type = CMD_LEASE;
    op.u.lease.queue = cq_bytes_of(q->queue, q->queue_len);
    op.u.lease.worker = cq_bytes_of(q->worker, q->worker_len);
    /* The reply must fit in a frame: each task's fields other than its
     * payload, checkpoint and headers take at most TASK_REPLY_OVERHEAD
     * (queue, worker, key, five errors); the rest of the frame is the
     * budget the state machine fills with task bytes. */
    if ((uint64_t)max * TASK_REPLY_OVERHEAD * 2 > q->c->srv->limits.max_frame)
        max = q->c->srv->limits.max_frame / (TASK_REPLY_OVERHEAD * 2);
    if (max == 0)
        max = 1;
    op.u.lease.max = max;
    op.u.lease.lease_ms = q->lease_ms;
    op.u.lease.max_bytes =
        q->c->srv->limits.max_frame > max * TASK_REPLY_OVERHEAD
            ? q->c->srv->limits.max_frame - max * TASK_REPLY_OVERHEAD
            : 1; /* a tiny frame: one task at a time */
    rc = repl_submit(q->c->srv->r, &op, 1, pull_done, q);
    if (rc != 0) {
        reply_status(q->c, q->id, rc, NULL);
        req_free(q);
    }
}

static void on_pull(sess *c, uint64_t id, const Clawq__PullRequest *p)
{
    req *q;
    uint32_t wait;

    if (!name_ok(p->queue) || p->max == 0 || p->max > CLAWQ_MAX_BATCH ||
        p->lease_ms > 24u * 3600 * 1000 ||
        (p->worker != NULL && strlen(p->worker) > TASK_WORKER_MAX)) {
        reply_status(c, id, CLAWQ_EINVALID,
                     "pull wants a valid queue, max 1..1024, lease_ms <= "
                     "24h, worker <= 128 bytes");
        return;
    }
    q = write_begin(c, id, REQ_PULL);
    if (q == NULL)
        return;
    q->queue_len = strlen(p->queue);
    memcpy(q->queue, p->queue, q->queue_len);
    if (p->worker != NULL && p->worker[0] != '\0') {
        q->worker_len = strlen(p->worker);
        memcpy(q->worker, p->worker, q->worker_len);
    } else {
        q->worker_len =
            (size_t)snprintf(q->worker, sizeof(q->worker), "conn-%llu",
                             (unsigned long long)c->id);
    }
    q->max = p->max;
    q->lease_ms = p->lease_ms;
    wait = p->wait_ms < c->srv->limits.max_wait_ms ? p->wait_ms
                                                   : c->srv->limits.max_wait_ms;
    q->wait_until = uv_now(c->srv->loop) + wait;
    pull_submit(q);
}

/* ---- other requests ---- */

static void on_put(sess *c, uint64_t id, const Clawq__PutRequest *p)
{
    cmd_op *ops;
    cq_buf hdr;
    size_t *hdr_off, *hdr_len, i, ready = 0;
    uint64_t now;
    req *q;
    int rc = 0;

    if (!name_ok(p->queue) || p->n_tasks == 0 || p->n_tasks > CLAWQ_MAX_BATCH) {
        reply_status(c, id, CLAWQ_EINVALID,
                     "put wants a valid queue name and 1..1024 tasks");
        return;
    }
    for (i = 0; i < p->n_tasks; i++) {
        const Clawq__PutTask *t = p->tasks[i];
        if (t->payload.len > c->srv->limits.max_payload) {
            reply_status(c, id, CLAWQ_ETOO_LARGE,
                         "a payload is over max-payload");
            return;
        }
        if (t->delay_ms > MAX_DELAY_MS) {
            reply_status(c, id, CLAWQ_EINVALID,
                         "delay_ms is at most a year (31536000000)");
            return;
        }
        if (t->priority > 255 || (t->idempotency_key != NULL &&
                                  strlen(t->idempotency_key) > TASK_KEY_MAX)) {
            reply_status(c, id, CLAWQ_EINVALID,
                         "priority is 0..255 and an idempotency key at most "
                         "256 bytes");
            return;
        }
    }
    q = write_begin(c, id, REQ_PUT);
    if (q == NULL)
        return;
    q->queue_len = strlen(p->queue);
    memcpy(q->queue, p->queue, q->queue_len);
    ops = calloc(p->n_tasks, sizeof(*ops));
    hdr_off = calloc(p->n_tasks, sizeof(*hdr_off));
    hdr_len = calloc(p->n_tasks, sizeof(*hdr_len));
    cq_buf_init(&hdr, (size_t)TASK_HEADERS_MAX * CLAWQ_MAX_BATCH);
    if (ops == NULL || hdr_off == NULL || hdr_len == NULL)
        rc = CLAWQ_ENOMEM;
    for (i = 0; rc == 0 && i < p->n_tasks; i++) {
        if (p->tasks[i]->n_headers == 0)
            continue;
        hdr_off[i] = hdr.len;
        rc = headers_encode(p->tasks[i]->headers, p->tasks[i]->n_headers, &hdr);
        hdr_len[i] = hdr.len - hdr_off[i];
    }
    if (rc != 0) {
        reply_status(c, id, rc == CLAWQ_ETOO_LARGE ? CLAWQ_EINVALID : rc,
                     rc == CLAWQ_ETOO_LARGE ? "headers too large" : NULL);
        req_free(q);
        goto done;
    }
    now = repl_now_ms(c->srv->r);
    for (i = 0; i < p->n_tasks; i++) {
        const Clawq__PutTask *t = p->tasks[i];
        cmd_put *o = &ops[i].u.put;
        ops[i].type = CMD_PUT;
        o->queue = cq_bytes_str(p->queue);
        o->payload = cq_bytes_of(t->payload.data, t->payload.len);
        o->priority = (uint8_t)t->priority;
        o->run_at_ms = t->delay_ms > 0 ? now + t->delay_ms : 0;
        o->deadline_ms = t->deadline_ms;
        o->max_attempts = t->max_attempts;
        if (t->idempotency_key != NULL)
            o->idem_key = cq_bytes_str(t->idempotency_key);
        if (hdr_len[i] > 0)
            o->headers = cq_bytes_of(hdr.ptr + hdr_off[i], hdr_len[i]);
        if (o->run_at_ms == 0)
            ready++;
    }
    if (submit(q, ops, p->n_tasks, batch_done) == 0 && ready > 0)
        sched_kick(c->srv->sc, cq_bytes_str(p->queue), ready);
done:
    cq_buf_fini(&hdr);
    free(ops);
    free(hdr_off);
    free(hdr_len);
}

static void on_ack(sess *c, uint64_t id, const Clawq__AckRequest *a)
{
    cmd_op *ops;
    size_t i;
    req *q;

    if (a->n_tasks == 0 || a->n_tasks > CLAWQ_MAX_BATCH) {
        reply_status(c, id, CLAWQ_EINVALID, "ack wants 1..1024 tasks");
        return;
    }
    q = write_begin(c, id, REQ_ACK);
    if (q == NULL)
        return;
    ops = calloc(a->n_tasks, sizeof(*ops));
    if (ops == NULL) {
        reply_status(c, id, CLAWQ_ENOMEM, NULL);
        req_free(q);
        return;
    }
    for (i = 0; i < a->n_tasks; i++) {
        ops[i].type = CMD_ACK;
        ops[i].u.settle.id = a->tasks[i]->id;
        ops[i].u.settle.lease_id = a->tasks[i]->lease_id;
        ops[i].u.settle.delay_ms = -1;
    }
    submit(q, ops, a->n_tasks, batch_done);
    free(ops);
}

static cq_bytes opt_str(const char *s)
{
    return s != NULL ? cq_bytes_str(s) : cq_bytes_of(NULL, 0);
}

static void on_settle(sess *c, uint64_t id, int type, const Clawq__LeaseRef *t,
                      int64_t delay_ms, const char *error)
{
    cmd_op op;
    req *q;

    if (t == NULL) {
        reply_status(c, id, CLAWQ_EINVALID, "missing task");
        return;
    }
    q = write_begin(c, id, type == CMD_NACK ? REQ_NACK : REQ_FAIL);
    if (q == NULL)
        return;
    memset(&op, 0, sizeof(op));
    op.type = (uint8_t)type;
    op.u.settle.id = t->id;
    op.u.settle.lease_id = t->lease_id;
    op.u.settle.delay_ms = delay_ms;
    op.u.settle.error = opt_str(error);
    submit(q, &op, 1, single_done);
}

static void on_extend(sess *c, uint64_t id, const Clawq__ExtendRequest *x)
{
    cmd_op op;
    req *q;

    if (x->task == NULL || x->lease_ms > 24u * 3600 * 1000 ||
        (x->has_checkpoint && x->checkpoint.len > TASK_CHECKPOINT_MAX)) {
        reply_status(c, id, CLAWQ_EINVALID,
                     "extend wants a task, lease_ms <= 24h and a checkpoint "
                     "<= 1 MiB");
        return;
    }
    q = write_begin(c, id, REQ_EXTEND);
    if (q == NULL)
        return;
    memset(&op, 0, sizeof(op));
    op.type = CMD_EXTEND;
    op.u.extend.id = x->task->id;
    op.u.extend.lease_id = x->task->lease_id;
    op.u.extend.lease_ms = x->lease_ms;
    op.u.extend.has_progress = x->has_progress;
    op.u.extend.progress = x->progress;
    op.u.extend.has_checkpoint = x->has_checkpoint;
    op.u.extend.checkpoint = cq_bytes_of(x->checkpoint.data, x->checkpoint.len);
    submit(q, &op, 1, single_done);
}

static void on_report(sess *c, uint64_t id, const Clawq__ReportRequest *rp)
{
    report *r;

    if (!name_ok(rp->queue)) {
        reply_status(c, id, CLAWQ_EINVALID, "invalid queue name");
        return;
    }
    r = report_find(c, cq_bytes_str(rp->queue));
    if (r == NULL) {
        report *p;
        if (c->n_reports >= 64) {
            reply_status(c, id, CLAWQ_EINVALID,
                         "at most 64 reported queues per connection");
            return;
        }
        p = realloc(c->reports, (c->n_reports + 1) * sizeof(*p));
        if (p == NULL) {
            reply_status(c, id, CLAWQ_ENOMEM, NULL);
            return;
        }
        c->reports = p;
        r = &c->reports[c->n_reports++];
        memset(r, 0, sizeof(*r));
        r->queue_len = strlen(rp->queue);
        memcpy(r->queue, rp->queue, r->queue_len);
    }
    r->inflight = rp->inflight;
    r->capacity = rp->capacity;
    r->at_ms = uv_now(c->srv->loop);
    r->n_leased = 0; /* the report counts what the worker holds now */
    reply_status(c, id, 0, "");
}

static void on_stats(sess *c, uint64_t id, const char *queue)
{
    Clawq__Response resp = CLAWQ__RESPONSE__INIT;
    Clawq__StatsResponse sr = CLAWQ__STATS_RESPONSE__INIT;
    Clawq__QueueStats qs;
    fsm_queue_stats st;
    tmp t = {NULL, false};
    int rc;

    if (!name_ok(queue)) {
        reply_status(c, id, CLAWQ_EINVALID, "invalid queue name");
        return;
    }
    rc = fsm_queue_stats_get(c->srv->s, cq_bytes_str(queue), &st);
    if (rc != 0) {
        reply_status(c, id, rc,
                     rc == CLAWQ_ENOT_FOUND ? "no such queue" : NULL);
        return;
    }
    fill_stats(&t, c->srv, &st, &qs);
    sr.stats = &qs;
    sr.has_node_id = 1;
    sr.node_id = c->srv->node_id;
    resp.id = id;
    resp.body_case = CLAWQ__RESPONSE__BODY_STATS;
    resp.stats = &sr;
    send_response(c, &resp);
    tmp_free(&t);
}

static void on_queues(sess *c, uint64_t id)
{
    Clawq__Response resp = CLAWQ__RESPONSE__INIT;
    Clawq__QueuesResponse qr = CLAWQ__QUEUES_RESPONSE__INIT;
    fsm_queue_stats *list = NULL;
    tmp t = {NULL, false};
    size_t n = 0, i;
    int rc;

    rc = fsm_queue_list(c->srv->s, &list, &n);
    if (rc != 0) {
        reply_status(c, id, rc, NULL);
        return;
    }
    qr.queues = tmp_alloc(&t, (n ? n : 1) * sizeof(*qr.queues));
    for (i = 0; qr.queues != NULL && i < n; i++) {
        Clawq__QueueStats *qs = tmp_alloc(&t, sizeof(*qs));
        if (qs == NULL)
            break;
        fill_stats(&t, c->srv, &list[i], qs);
        qr.queues[qr.n_queues++] = qs;
    }
    qr.has_node_id = 1;
    qr.node_id = c->srv->node_id;
    resp.id = id;
    resp.body_case = CLAWQ__RESPONSE__BODY_QUEUES;
    resp.queues = &qr;
    if (t.failed)
        reply_status(c, id, CLAWQ_ENOMEM, NULL);
    else
        send_response(c, &resp);
    tmp_free(&t);
    free(list);
}

static void on_read_tasks(sess *c, uint64_t id, int rc, fsm_result *res,
                          const char *not_found)
{
    if (rc != 0)
        reply_status(c, id, rc, rc == CLAWQ_ENOT_FOUND ? not_found : NULL);
    else
        reply_tasks(c, id, res->tasks, res->n_tasks);
}

static bool dlq_filter(const Clawq__DlqFilter *f, uint32_t def_max,
                       uint32_t cap, cmd_dlq *out)
{
    if (f == NULL || !name_ok(f->queue) || f->max > cap)
        return false;
    memset(out, 0, sizeof(*out));
    out->queue = cq_bytes_str(f->queue);
    out->error_substr = opt_str(f->error_contains);
    out->from_ms = f->from_ms;
    out->to_ms = f->to_ms;
    out->max = f->max ? f->max : def_max;
    return true;
}

static void on_peek(sess *c, uint64_t id, const Clawq__PeekRequest *p)
{
    fsm_result res;
    int rc;

    if (!name_ok(p->queue) || p->max == 0 || p->max > PEEK_MAX ||
        p->state < CLAWQ__TASK_STATE__READY ||
        p->state > CLAWQ__TASK_STATE__DEAD) {
        reply_status(c, id, CLAWQ_EINVALID,
                     "peek wants a valid queue, a state and max 1..1000");
        return;
    }
    fsm_result_init(&res);
    rc = fsm_peek(c->srv->s, cq_bytes_str(p->queue), (int)p->state, p->max,
                  &res);
    on_read_tasks(c, id, rc, &res, "no such queue");
    fsm_result_fini(&res);
}

static void on_dlq_list(sess *c, uint64_t id, const Clawq__DlqListRequest *l)
{
    fsm_result res;
    cmd_dlq f;
    int rc;

    if (!dlq_filter(l->filter, DLQ_LIST_DEFAULT, DLQ_LIST_MAX, &f)) {
        reply_status(c, id, CLAWQ_EINVALID,
                     "dlq list wants a valid queue and max <= 1000");
        return;
    }
    fsm_result_init(&res);
    rc = fsm_dlq_list(c->srv->s, &f, l->after_ms, l->after_id, &res);
    on_read_tasks(c, id, rc, &res, "no such queue");
    fsm_result_fini(&res);
}

static void on_task_get(sess *c, uint64_t id, uint64_t task_id)
{
    fsm_result res;
    int rc;

    fsm_result_init(&res);
    rc = fsm_task_get(c->srv->s, task_id, &res);
    on_read_tasks(c, id, rc, &res, "no such task");
    fsm_result_fini(&res);
}

static void on_dlq_action(sess *c, uint64_t id, int type,
                          const Clawq__DlqFilter *f)
{
    cmd_op op;
    req *q;

    memset(&op, 0, sizeof(op));
    if (!dlq_filter(f, CMD_DLQ_DEFAULT, CMD_DLQ_DEFAULT, &op.u.dlq)) {
        reply_status(c, id, CLAWQ_EINVALID,
                     "a valid queue name, and max at most 10000 a request");
        return;
    }
    q = write_begin(c, id, REQ_COUNT);
    if (q == NULL)
        return;
    op.type = (uint8_t)type;
    submit(q, &op, 1, single_done);
}

static void on_queue_op(sess *c, uint64_t id, int type, const char *queue)
{
    cmd_op op;
    req *q;

    if (!name_ok(queue)) {
        reply_status(c, id, CLAWQ_EINVALID, "invalid queue name");
        return;
    }
    q = write_begin(c, id, type == CMD_QUEUE_PURGE ? REQ_COUNT : REQ_PLAIN);
    if (q == NULL)
        return;
    memset(&op, 0, sizeof(op));
    op.type = (uint8_t)type;
    op.u.queue.queue = cq_bytes_str(queue);
    submit(q, &op, 1, single_done);
}

static void on_queue_set(sess *c, uint64_t id, const Clawq__QueueSetRequest *r)
{
    const Clawq__QueueSettings *s = r->settings;
    cmd_op op;
    cmd_queue_set *qs = &op.u.queue_set;
    req *q;

    if (!name_ok(r->queue) || s == NULL) {
        reply_status(c, id, CLAWQ_EINVALID, "invalid queue name");
        return;
    }
    if (s->has_paused) {
        reply_status(c, id, CLAWQ_EINVALID,
                     "paused is read-only here: use pause / resume");
        return;
    }
    memset(&op, 0, sizeof(op));
    op.type = CMD_QUEUE_SET;
    qs->queue = cq_bytes_str(r->queue);
#define F(flag, field)                                                         \
    if (s->has_##field) {                                                      \
        qs->fields |= (flag);                                                  \
        qs->settings.field = s->field;                                         \
    }
    F(QSET_LEASE_MS, lease_ms);
    F(QSET_MAX_ATTEMPTS, max_attempts);
    F(QSET_BACKOFF_BASE_MS, backoff_base_ms);
    F(QSET_BACKOFF_MAX_MS, backoff_max_ms);
    F(QSET_MAX_DEPTH, max_depth);
    F(QSET_MAX_PAYLOAD, max_payload);
    F(QSET_DEDUP_WINDOW_MS, dedup_window_ms);
#undef F
    q = write_begin(c, id, REQ_PLAIN);
    if (q == NULL)
        return;
    submit(q, &op, 1, single_done);
}

#define WORKERS_MAX 1000

static void on_workers(sess *c, uint64_t id, const char *queue)
{
    Clawq__Response resp = CLAWQ__RESPONSE__INIT;
    Clawq__WorkersResponse wr = CLAWQ__WORKERS_RESPONSE__INIT;
    sess_worker *list;
    tmp t = {NULL, false};
    size_t n, i;

    if (!name_ok(queue)) {
        reply_status(c, id, CLAWQ_EINVALID, "invalid queue name");
        return;
    }
    list = tmp_alloc(&t, WORKERS_MAX * sizeof(*list));
    n = list != NULL
            ? sess_workers_list(c->srv, cq_bytes_str(queue), list, WORKERS_MAX)
            : 0;
    if (n > WORKERS_MAX)
        n = WORKERS_MAX;
    wr.workers = tmp_alloc(&t, (n ? n : 1) * sizeof(*wr.workers));
    for (i = 0; wr.workers != NULL && i < n; i++) {
        Clawq__Worker *w = tmp_alloc(&t, sizeof(*w));
        if (w == NULL)
            break;
        clawq__worker__init(w);
        w->has_conn_id = w->has_capacity = w->has_inflight = 1;
        w->has_last_report_age_ms = 1;
        w->conn_id = list[i].conn_id;
        w->name = list[i].name;
        w->capacity = list[i].capacity;
        w->inflight = list[i].inflight;
        w->last_report_age_ms = list[i].age_ms;
        wr.workers[wr.n_workers++] = w;
    }
    wr.has_node_id = 1;
    wr.node_id = c->srv->node_id;
    resp.id = id;
    resp.body_case = CLAWQ__RESPONSE__BODY_WORKERS;
    resp.workers = &wr;
    if (t.failed)
        reply_status(c, id, CLAWQ_ENOMEM, NULL);
    else
        send_response(c, &resp);
    tmp_free(&t);
}

static void on_hello(sess *c, uint64_t id, const Clawq__Hello *h)
{
    Clawq__Response resp = CLAWQ__RESPONSE__INIT;
    Clawq__HelloResponse hr = CLAWQ__HELLO_RESPONSE__INIT;
    char leader[CMD_ADDR_MAX + 1];
    repl_info info;

    if (h->has_protocol_version &&
        h->protocol_version != CLAWQ_PROTOCOL_VERSION) {
        reply_status(c, id, CLAWQ_EINVALID, "unsupported protocol version");
        return;
    }
    c->hello = true;
    if (h->client_name != NULL)
        snprintf(c->name, sizeof(c->name), "%s", h->client_name);
    repl_get_info(c->srv->r, &info);
    hr.has_protocol_version = 1;
    hr.protocol_version = CLAWQ_PROTOCOL_VERSION;
    hr.has_node_id = 1;
    hr.node_id = c->srv->node_id;
    hr.has_leader_id = 1;
    hr.leader_id = info.leader_id;
    if (info.leader_id == c->srv->node_id)
        hr.leader = (char *)(uintptr_t)c->srv->listen_addr;
    else if (info.leader_id != 0 &&
             fsm_member_addr(c->srv->s, info.leader_id, leader,
                             sizeof(leader)) == 0)
        hr.leader = leader;
    hr.has_max_frame = 1;
    hr.max_frame = c->srv->limits.max_frame;
    hr.has_max_batch = 1;
    hr.max_batch = CLAWQ_MAX_BATCH;
    hr.server_version = "clawqd 0.1.0";
    resp.id = id;
    resp.body_case = CLAWQ__RESPONSE__BODY_HELLO;
    resp.hello = &hr;
    send_response(c, &resp);
}

/* ---- cluster administration ---- */

/* One cluster change in progress: add (then register the client
 * address), remove (then drop it) or transfer. */
typedef struct cluster_op {
    req *q;
    uint32_t node;
    char client_addr[CMD_ADDR_MAX + 1];
} cluster_op;

static const char *role_name(repl_role role)
{
    return role == REPL_VOTER     ? "voter"
           : role == REPL_STANDBY ? "standby"
                                  : "spare";
}

/* Answers with this node's view of the cluster (and its digest). */
static void reply_cluster(sess *c, uint64_t id, bool digest)
{
    Clawq__Response resp = CLAWQ__RESPONSE__INIT;
    Clawq__ClusterStatusResponse cs = CLAWQ__CLUSTER_STATUS_RESPONSE__INIT;
    Clawq__ClusterMember ms[REPL_MAX_MEMBERS], *mp[REPL_MAX_MEMBERS];
    char addrs[REPL_MAX_MEMBERS][CMD_ADDR_MAX + 1], leader[CMD_ADDR_MAX + 1];
    repl_member_info mi[REPL_MAX_MEMBERS];
    server *srv = c->srv;
    bool view = false;
    repl_info info;
    size_t n, i;

    repl_get_info(srv->r, &info);
    n = repl_members(srv->r, mi, REPL_MAX_MEMBERS, &view);
    cs.has_node_id = cs.has_leader_id = cs.has_term = 1;
    cs.node_id = srv->node_id;
    cs.role = (char *)(uintptr_t)info.state;
    cs.leader_id = info.leader_id;
    leader[0] = '\0';
    if (info.leader_id != 0 &&
        fsm_member_addr(srv->s, info.leader_id, leader, sizeof(leader)) != 0)
        leader[0] = '\0';
    cs.leader = leader;
    cs.term = info.term;
    cs.has_commit_index = cs.has_applied_index = cs.has_last_index = 1;
    cs.commit_index = info.commit_index;
    cs.applied_index = info.applied_index;
    cs.last_index = info.last_index;
    cs.has_leader_view = 1;
    cs.leader_view = view;
    for (i = 0; i < n; i++) {
        Clawq__ClusterMember *m = &ms[i];

        clawq__cluster_member__init(m);
        m->has_id = 1;
        m->id = mi[i].id;
        m->raft_addr = mi[i].raft_addr;
        if (fsm_member_addr(srv->s, mi[i].id, addrs[i], sizeof(addrs[i])) != 0)
            addrs[i][0] = '\0';
        m->client_addr = addrs[i];
        m->role = (char *)(uintptr_t)role_name(mi[i].role);
        if (view) {
            m->has_match_index = m->has_lag = 1;
            m->match_index = mi[i].match_index;
            m->lag = info.last_index > mi[i].match_index
                         ? info.last_index - mi[i].match_index
                         : 0;
        }
        mp[i] = m;
    }
    cs.n_members = n;
    cs.members = mp;
    if (digest) {
        uint64_t d = 0;
        int rc = store_digest(srv->s, &d);

        if (rc != 0) {
            reply_status(c, id, rc, "digest failed");
            return;
        }
        cs.has_digest = cs.has_digest_index = 1;
        cs.digest = d;
        cs.digest_index = info.applied_index;
    }
    resp.id = id;
    resp.body_case = CLAWQ__RESPONSE__BODY_CLUSTER;
    resp.cluster = &cs;
    send_response(c, &resp);
}

static cluster_op *cluster_begin(sess *c, uint64_t id, uint32_t node)
{
    cluster_op *op;
    req *q;

    if (c->srv->shutting_down) {
        reply_status(c, id, CLAWQ_ESHUTTING_DOWN, NULL);
        return NULL;
    }
    if (!repl_is_leader(c->srv->r)) {
        reply_status(c, id, CLAWQ_ENOT_LEADER, "this node is not the leader");
        return NULL;
    }
    op = calloc(1, sizeof(*op));
    q = op != NULL ? req_new(c, id, REQ_PLAIN) : NULL;
    if (q == NULL) {
        free(op);
        reply_status(c, id, CLAWQ_ENOMEM, NULL);
        return NULL;
    }
    op->q = q;
    op->node = node;
    return op;
}

static void cluster_end(cluster_op *op, int status, const char *msg)
{
    if (status == 0)
        reply_cluster(op->q->c, op->q->id, false);
    else
        reply_status(op->q->c, op->q->id, status, msg);
    req_free(op->q);
    free(op);
}

static void cluster_member_done(void *arg, int status, const fsm_result *res,
                                size_t first, size_t n)
{
    (void)n;
    if (status == 0)
        status = res->ops[first].status;
    cluster_end(arg, status, NULL);
}

/* After a change: the member table follows (the client address of an added
 * node, none for a removed one). */
static void cluster_changed(void *arg, int status)
{
    cluster_op *op = arg;
    cmd_op mop;
    int rc;

    if (status != 0) {
        cluster_end(op, status,
                    status == CLAWQ_EUNAVAILABLE
                        ? "the configuration change did not complete (is "
                          "the node running and reachable?); retry"
                        : NULL);
        return;
    }
    LOG(LOG_INFO, "cluster.changed", "node=%u client=%s", op->node,
        op->client_addr[0] != '\0' ? op->client_addr : "(removed)");
    memset(&mop, 0, sizeof(mop));
    mop.type = CMD_MEMBER;
    mop.u.member.node_id = op->node;
    mop.u.member.client_addr = cq_bytes_str(op->client_addr);
    rc = repl_submit(op->q->c->srv->r, &mop, 1, cluster_member_done, op);
    if (rc != 0)
        cluster_end(op, rc, NULL);
}

static bool addr_ok(const char *a, size_t max)
{
    char host[256];
    int port;

    return a != NULL && strlen(a) < max &&
           config_addr_split(a, host, sizeof(host), &port) == 0;
}

static void on_cluster_add(sess *c, uint64_t id,
                           const Clawq__ClusterAddRequest *a)
{
    cluster_op *op;
    int rc;

    if (a->id == 0 || a->id > (1u << 31)) {
        reply_status(c, id, CLAWQ_EINVALID, "node id must be 1..2147483648");
        return;
    }
    if (!addr_ok(a->raft_addr, sizeof(((repl_member_info *)0)->raft_addr)) ||
        !addr_ok(a->client_addr, CMD_ADDR_MAX + 1)) {
        reply_status(c, id, CLAWQ_EINVALID,
                     "raft_addr and client_addr must be HOST:PORT");
        return;
    }
    op = cluster_begin(c, id, a->id);
    if (op == NULL)
        return;
    snprintf(op->client_addr, sizeof(op->client_addr), "%s", a->client_addr);
    rc =
        repl_add(c->srv->r, a->id, a->raft_addr,
                 a->has_register_only && a->register_only, cluster_changed, op);
    if (rc != 0)
        cluster_end(op, rc,
                    rc == CLAWQ_EINVALID
                        ? "the id or the raft address belongs to another "
                          "member"
                    : rc == CLAWQ_ENOT_FOUND ? "no such member"
                    : rc == CLAWQ_EUNAVAILABLE
                        ? "another configuration change is under way"
                        : NULL);
}

static void on_cluster_remove(sess *c, uint64_t id, uint32_t node)
{
    cluster_op *op;
    int rc;

    if (node == c->srv->node_id) {
        reply_status(c, id, CLAWQ_EINVALID,
                     "this node is the leader: transfer leadership first");
        return;
    }
    op = cluster_begin(c, id, node);
    if (op == NULL)
        return;
    rc = repl_remove(c->srv->r, node, cluster_changed, op);
    if (rc != 0)
        cluster_end(op, rc,
                    rc == CLAWQ_ENOT_FOUND ? "no such member"
                    : rc == CLAWQ_EUNAVAILABLE
                        ? "another configuration change is under way"
                        : NULL);
}

static void cluster_transferred(void *arg, bool moved)
{
    cluster_end(arg, moved ? 0 : CLAWQ_EUNAVAILABLE,
                moved ? NULL : "leadership did not move; retry");
}

static void on_cluster_transfer(sess *c, uint64_t id, uint32_t node)
{
    cluster_op *op;
    int rc;

    if (node != 0 && node == c->srv->node_id && repl_is_leader(c->srv->r)) {
        reply_cluster(c, id, false); /* it leads already */
        return;
    }
    op = cluster_begin(c, id, node);
    if (op == NULL)
        return;
    rc = repl_transfer(c->srv->r, node, cluster_transferred, op);
    if (rc != 0)
        cluster_end(op, rc == CLAWQ_EINVALID ? CLAWQ_EINVALID : rc,
                    rc == CLAWQ_EINVALID
                        ? "no such voter, or a change or transfer is "
                          "under way"
                        : NULL);
}

/* Handles one decoded request. Returns false when the connection must
 * close (the reply, if any, is queued first). */
static bool dispatch(sess *c, const Clawq__Request *rq)
{
    uint64_t id = rq->id;

    if (!c->hello && rq->body_case != CLAWQ__REQUEST__BODY_HELLO) {
        reply_status(c, id, CLAWQ_EINVALID, "the first request must be Hello");
        return false;
    }
    switch (rq->body_case) {
    case CLAWQ__REQUEST__BODY_HELLO:
        on_hello(c, id, rq->hello);
        return c->hello;
    case CLAWQ__REQUEST__BODY_PUT:
        on_put(c, id, rq->put);
        break;
    case CLAWQ__REQUEST__BODY_PULL:
        on_pull(c, id, rq->pull);
        break;
    case CLAWQ__REQUEST__BODY_ACK:
        on_ack(c, id, rq->ack);
        break;
    case CLAWQ__REQUEST__BODY_NACK:
        on_settle(c, id, CMD_NACK, rq->nack->task, rq->nack->delay_ms,
                  rq->nack->error);
        break;
    case CLAWQ__REQUEST__BODY_FAIL:
        on_settle(c, id, CMD_FAIL, rq->fail->task, -1, rq->fail->error);
        break;
    case CLAWQ__REQUEST__BODY_EXTEND:
        on_extend(c, id, rq->extend);
        break;
    case CLAWQ__REQUEST__BODY_REPORT:
        on_report(c, id, rq->report);
        break;
    case CLAWQ__REQUEST__BODY_STATS:
        on_stats(c, id, rq->stats->queue);
        break;
    case CLAWQ__REQUEST__BODY_QUEUES:
        on_queues(c, id);
        break;
    case CLAWQ__REQUEST__BODY_PEEK:
        on_peek(c, id, rq->peek);
        break;
    case CLAWQ__REQUEST__BODY_DLQ_LIST:
        on_dlq_list(c, id, rq->dlq_list);
        break;
    case CLAWQ__REQUEST__BODY_DLQ_REPLAY:
        on_dlq_action(c, id, CMD_DLQ_REPLAY, rq->dlq_replay);
        break;
    case CLAWQ__REQUEST__BODY_DLQ_PURGE:
        on_dlq_action(c, id, CMD_DLQ_PURGE, rq->dlq_purge);
        break;
    case CLAWQ__REQUEST__BODY_QUEUE_SET:
        on_queue_set(c, id, rq->queue_set);
        break;
    case CLAWQ__REQUEST__BODY_PAUSE:
        on_queue_op(c, id, CMD_QUEUE_PAUSE, rq->pause->queue);
        break;
    case CLAWQ__REQUEST__BODY_RESUME:
        on_queue_op(c, id, CMD_QUEUE_RESUME, rq->resume->queue);
        break;
    case CLAWQ__REQUEST__BODY_PURGE:
        on_queue_op(c, id, CMD_QUEUE_PURGE, rq->purge->queue);
        break;
    case CLAWQ__REQUEST__BODY_TASK_GET:
        on_task_get(c, id, rq->task_get->id);
        break;
    case CLAWQ__REQUEST__BODY_WORKERS:
        on_workers(c, id, rq->workers->queue);
        break;
    case CLAWQ__REQUEST__BODY_CLUSTER_STATUS:
        reply_cluster(c, id,
                      rq->cluster_status->has_digest &&
                          rq->cluster_status->digest);
        break;
    case CLAWQ__REQUEST__BODY_CLUSTER_ADD:
        on_cluster_add(c, id, rq->cluster_add);
        break;
    case CLAWQ__REQUEST__BODY_CLUSTER_REMOVE:
        on_cluster_remove(c, id, rq->cluster_remove->id);
        break;
    case CLAWQ__REQUEST__BODY_CLUSTER_TRANSFER:
        on_cluster_transfer(
            c, id, rq->cluster_transfer->has_id ? rq->cluster_transfer->id : 0);
        break;
    default:
        reply_status(c, id, CLAWQ_EINVALID, "unknown request");
        break;
    }
    return true;
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    sess *c = h->data;
    size_t limit = (size_t)c->srv->limits.max_frame + CLAWQ_FRAME_HEADER_LEN;
    size_t want = c->rlen + READ_CHUNK;

    (void)hint;
    if (want > limit)
        want = limit;
    if (c->rcap < want) {
        uint8_t *p = realloc(c->rbuf, want);
        if (p != NULL) {
            c->rbuf = p;
            c->rcap = want;
        }
    }
    *buf =
        uv_buf_init((char *)c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen));
}

static void read_resume_maybe(sess *c)
{
    if (c->reading || c->closing || c->draining || c->srv->shutting_down)
        return;
    if (c->wbytes > c->srv->limits.write_buffer / 2 ||
        c->pending >= c->srv->limits.max_pending)
        return;
    /* Frames read before the stop go first; they may stop us again. */
    if (!process_frames(c) || over_limits(c))
        return;
    start_reading(c);
}

static void start_reading(sess *c)
{
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = true;
}

static void protocol_error(sess *c, int err, const char *why)
{
    LOG_RATELIMITED(LOG_WARN, "conn.protocol_error", 1000,
                    "conn=%llu error=%s msg=\"%s\"", (unsigned long long)c->id,
                    clawq_err_name(err), why);
    reply_status(c, 0, err, why);
    /* Close once the error reply is written. */
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    sess_drain(c);
}

static bool over_limits(const sess *c)
{
    return c->pending >= c->srv->limits.max_pending ||
           c->wbytes > c->srv->limits.write_buffer;
}

/* Dispatches the complete frames in the read buffer, stopping as soon as
 * the connection is over its limits: one 64 KiB read can hold thousands
 * of requests, each answered with up to a frame. What is left waits in the
 * buffer until the replies drain (read_resume_maybe). Returns false when
 * the connection is going away. */
static bool process_frames(sess *c)
{
    size_t off = 0;
    bool alive = true;

    if (c->processing)
        return true; /* the outer call goes on with the buffer */
    c->processing = true;
    while (c->rlen - off >= CLAWQ_FRAME_HEADER_LEN && !c->closing &&
           !c->draining && !over_limits(c)) {
        uint32_t len = clawq_frame_get_len(c->rbuf + off);
        Clawq__Request *rq;
        bool keep;

        if (len > c->srv->limits.max_frame) {
            protocol_error(c, CLAWQ_ETOO_LARGE, "frame over max-frame");
            alive = false;
            break;
        }
        if (c->rlen - off - CLAWQ_FRAME_HEADER_LEN < len)
            break;
        rq = clawq__request__unpack(NULL, len,
                                    c->rbuf + off + CLAWQ_FRAME_HEADER_LEN);
        off += CLAWQ_FRAME_HEADER_LEN + len;
        if (rq == NULL) {
            protocol_error(c, CLAWQ_EINVALID, "undecodable request");
            alive = false;
            break;
        }
        keep = dispatch(c, rq);
        clawq__request__free_unpacked(rq, NULL);
        if (!keep) {
            /* dispatch answered already: close once that is written. */
            if (c->reading) {
                uv_read_stop((uv_stream_t *)&c->tcp);
                c->reading = false;
            }
            sess_drain(c);
            alive = false;
            break;
        }
    }
    if (off > 0) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
    c->processing = false;
    /* Backpressure: too many outstanding or unsent replies. */
    if (alive && c->reading && !c->closing && over_limits(c)) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    return alive;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sess *c = s->data;

    (void)buf;
    if (nread < 0) {
        if (nread != UV_EOF)
            LOG(LOG_DEBUG, "conn.read_failed", "conn=%llu error=%s",
                (unsigned long long)c->id, uv_strerror((int)nread));
        sess_close(c);
        return;
    }
    if (nread == 0)
        return;
    c->rlen += (size_t)nread;
    if (c->srv->limits.idle_timeout_ms > 0)
        uv_timer_again(&c->idle);
    process_frames(c);
}

static void on_idle_timeout(uv_timer_t *t)
{
    sess *c = t->data;

    if (c->pending > 0)
        return; /* a long poll counts as activity */
    LOG(LOG_DEBUG, "conn.idle_timeout", "conn=%llu", (unsigned long long)c->id);
    sess_close(c);
}

int sess_new(server *srv, sess **out)
{
    sess *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return CLAWQ_ENOMEM;
    c->srv = srv;
    c->id = ++srv->next_conn_id;
    cq_buf_init(&c->out, SIZE_MAX / 2); /* bounded by write_buffer */
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->idle);
    c->tcp.data = c;
    c->idle.data = c;
    c->refs = 2;
    c->next = srv->sessions;
    if (srv->sessions != NULL)
        srv->sessions->prev = c;
    srv->sessions = c;
    srv->n_sessions++;
    *out = c;
    return 0;
}

sess *sess_next(sess *c)
{
    return c->next;
}

uv_tcp_t *sess_tcp(sess *c)
{
    return &c->tcp;
}

void sess_start(sess *c)
{
    uv_tcp_nodelay(&c->tcp, 1);
    if (c->srv->limits.idle_timeout_ms > 0)
        uv_timer_start(&c->idle, on_idle_timeout,
                       c->srv->limits.idle_timeout_ms,
                       c->srv->limits.idle_timeout_ms);
    start_reading(c);
}
