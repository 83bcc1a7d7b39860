/* client.c: libclawq's handle - one TCP connection to one broker node at a
 * time, the request/response machinery over it, and the public calls.
 *
 * Everything is blocking from the caller's point of view but the socket is
 * non-blocking: one poll() loop (io_step) writes what is queued in the
 * write buffer and reads whole frames, so a caller that pipelines many
 * requests never deadlocks against a broker that is itself blocked writing
 * replies. Each reply is matched by request id: the one synchronous call
 * in progress (sync_id) or one of the pipelined requests (pend[]: the
 * clawq_put_async puts, whose results wait in results[] for clawq_flush,
 * and tickets, whose results wait in done[] for clawq_wait); a reply to
 * nothing (a request abandoned after a timeout) is dropped.
 *
 * Requests are kept as their packed body (the Request's oneof member) and
 * wrapped into a Request frame only when sent: the wrapper is two
 * hand-encoded protobuf fields (id, body), so a request re-sent on a new
 * connection gets a fresh id without being re-encoded. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clawq.h"
#include "clawq.pb-c.h"
#include "endpoint.h"
#include "frame.h"
#include "task.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 5000u
#define DEFAULT_REQUEST_TIMEOUT_MS 30000u
#define DEFAULT_WINDOW 256u
#define MAX_WINDOW 65536u
#define MAX_PENDING_RESULTS (1u << 20)
#define MAX_TICKETS 65536u /* submitted and not yet collected */
#define BACKOFF_BASE_MS 50u
#define BACKOFF_MAX_MS 2000u
/* Between retries of a request that a node refused (NOT_LEADER, no leader
 * known): an election takes a few hundred ms, and asking costs the broker
 * one small frame, so the pause stays short: a client sees the new leader
 * within about this much of its election. */
#define REDIRECT_PAUSE_MAX_MS 200u
#define RBUF_MIN (64u << 10)
#define MAX_FRAME_CAP (256u << 20)

/* A pipelined request waiting for its answer: a clawq_put_async put (op
 * 0, answered into results[slot]) or a ticket (op a clawq_op, answered
 * into a done entry). */
typedef struct pending {
    uint64_t req_id;   /* 0: not sent on the current connection */
    uint64_t seq;      /* submission order; a ticket's number */
    uint64_t deadline; /* tickets: when it times out (monotonic ms) */
    uint32_t slot;     /* op 0: index into results */
    uint32_t hops;     /* NOT_LEADER / SHUTTING_DOWN answers so far */
    uint32_t field;    /* the Request oneof member of body */
    uint32_t n;        /* items (put, ack) or max (pull) */
    uint8_t op;        /* 0: put_async; else a clawq_op */
    bool retry_safe;   /* may be re-sent on a new connection */
    uint8_t *body;     /* packed request body, owned */
    size_t body_len;
    void *user;
} pending;

/* A ticket's result waiting for clawq_wait to collect it. */
typedef struct done_entry {
    clawq_result r;
    char *msg; /* detail for clawq_errmsg, or NULL */
    uint32_t retry_after_ms;
} done_entry;

struct clawq_client {
    clawq__endpoint *eps;
    size_t n_eps;
    size_t ep_idx;
    clawq__endpoint hint; /* leader named by the broker */
    bool has_hint;
    bool no_follow; /* clawq_options.no_follow */

    uint32_t connect_timeout_ms;
    uint32_t request_timeout_ms;
    uint32_t max_frame; /* incoming cap */
    bool max_frame_set; /* by the caller: never raised by Hello */
    uint32_t window;
    char *client_name;
    char *token;

    int fd;
    char cur_ep[CLAWQ__MAX_HOST + 16];
    uint32_t node_id, leader_id, srv_max_frame, srv_max_batch;
    char *leader;
    char *server_version;
    bool redirect_pending; /* drop the connection once nothing is in flight */

    uint64_t next_id;
    uint8_t *rbuf;
    size_t rlen, rcap;
    uint8_t *wbuf;
    size_t woff, wlen, wcap;
    uint8_t *sbody; /* the synchronous request's packed body */
    size_t sbody_cap;

    uint64_t sync_id;
    Clawq__Response *sync_resp;

    pending *pend;
    size_t n_pend, cap_pend;
    clawq_put_result *results;
    size_t n_results, cap_results;
    uint64_t next_seq; /* last seq / ticket handed out */
    done_entry *done;  /* completed tickets, in completion order */
    size_t n_done, cap_done;
    size_t n_tickets; /* tickets in pend[] plus done[] (cap_done >= it) */

    uint32_t round_failures; /* connect failures since the last success */
    uint32_t backoff_ms;
    uint32_t rng;

    char errmsg[512];
    uint32_t retry_after_ms;
};

/* ---- small helpers ---- */

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* poll()'s timeout until deadline, clamped to [0, 1 h]. */
static int poll_timeout(uint64_t deadline)
{
    uint64_t now = now_ms();

    if (deadline <= now)
        return 0;
    return deadline - now > 3600000u ? 3600000 : (int)(deadline - now);
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* protobuf-c's structs take non-const pointers for what it only reads. */
static char *unconst(const char *s)
{
    return (char *)(uintptr_t)s;
}

static uint8_t *unconst_bytes(const void *p)
{
    return (uint8_t *)(uintptr_t)p;
}

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static int
set_err(clawq_client *c, int rc, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
    va_end(ap);
    return rc;
}

static char *dup_str(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

static uint32_t rng_next(clawq_client *c)
{
    /* xorshift32: jitter only, per handle. */
    uint32_t x = c->rng;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c->rng = x != 0 ? x : 0x9e3779b9u;
    return c->rng;
}

static int status_to_err(int st)
{
    return st > 0 ? -st : (st < 0 ? CLAWQ_EPROTOCOL : 0);
}

static bool queue_name_ok(const char *q)
{
    size_t len;

    if (q == NULL)
        return false;
    len = strlen(q);
    if (len == 0 || len > CLAWQ_MAX_QUEUE_NAME)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = q[i];

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == ':' ||
              ch == '-'))
            return false;
    }
    return true;
}

static int check_queue(clawq_client *c, const char *q)
{
    if (!queue_name_ok(q))
        return set_err(c, CLAWQ_EINVALID,
                       "queue name must be 1..%d bytes of [A-Za-z0-9._:-]",
                       CLAWQ_MAX_QUEUE_NAME);
    return 0;
}

/* ---- connection ---- */

/* Appends a ticket's result to done[] (room is reserved at submission:
 * cap_done >= n_tickets) and takes ownership of d's allocations. */
static void done_push(clawq_client *c, const done_entry *d)
{
    c->done[c->n_done++] = *d;
}

/* Removes pend[i] (swapped with the last entry) and completes it with
 * err: a put_async's result slot, or a ticket's done entry carrying msg
 * (may be NULL). */
static void pending_fail(clawq_client *c, size_t i, int err, const char *msg)
{
    pending *p = &c->pend[i];

    if (p->op == 0) {
        c->results[p->slot].status = err;
    } else {
        done_entry d;

        memset(&d, 0, sizeof(d));
        d.r.ticket = p->seq;
        d.r.op = (clawq_op)p->op;
        d.r.user = p->user;
        d.r.status = err;
        d.r.n = p->op == CLAWQ_OP_PULL ? 0 : p->n;
        d.msg = msg != NULL ? strdup(msg) : NULL;
        done_push(c, &d);
    }
    free(p->body);
    c->pend[i] = c->pend[--c->n_pend];
}

/* Closes the connection. Pipelined requests in flight that are safe to
 * re-send are marked unsent; the others complete with CLAWQ_ECONN_LOST. */
static void conn_drop(clawq_client *c)
{
    char msg[sizeof(c->cur_ep) + 64];

    snprintf(msg, sizeof(msg), "connection to %s lost; outcome unknown",
             c->cur_ep[0] != '\0' ? c->cur_ep : "broker");
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->rlen = 0;
    c->woff = c->wlen = 0;
    c->sync_id = 0;
    c->redirect_pending = false;
    for (size_t i = 0; i < c->n_pend;) {
        if (c->pend[i].req_id == 0 || c->pend[i].retry_safe) {
            c->pend[i].req_id = 0;
            i++;
        } else {
            pending_fail(c, i, CLAWQ_ECONN_LOST, msg);
        }
    }
}

/* A sent request got no answer in time: the node may be cut off (a
 * partition drops packets, not connections). Drop the connection and
 * start the next one at the next endpoint, so the next call does not wait
 * on the same node again. */
static void conn_suspect(clawq_client *c)
{
    if (c->fd < 0)
        return;
    conn_drop(c);
    if (c->n_eps > 1)
        c->ep_idx = (c->ep_idx + 1) % c->n_eps;
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;

    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *varint_put(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Appends to the write buffer a Request frame with id and the packed body
 * as oneof member field. Returns 0, CLAWQ_ETOO_LARGE (over the broker's
 * max_frame) or CLAWQ_ENOMEM. */
static int frame_append(clawq_client *c, uint64_t id, uint32_t field,
                        const uint8_t *body, size_t body_len)
{
    uint64_t tag = ((uint64_t)field << 3) | 2;
    size_t msg_len =
        1 + varint_len(id) + varint_len(tag) + varint_len(body_len) + body_len;
    size_t limit =
        c->srv_max_frame != 0 ? c->srv_max_frame : CLAWQ_DEFAULT_MAX_FRAME;
    uint8_t *p;

    if (msg_len > limit || msg_len > UINT32_MAX)
        return set_err(c, CLAWQ_ETOO_LARGE,
                       "request of %zu bytes exceeds the frame limit %zu",
                       msg_len, limit);
    if (c->woff > 0 && c->woff == c->wlen)
        c->woff = c->wlen = 0;
    if (c->wcap - c->wlen < msg_len + CLAWQ_FRAME_HEADER_LEN) {
        size_t need, cap;
        uint8_t *nb;

        if (c->woff > 0) {
            memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
            c->wlen -= c->woff;
            c->woff = 0;
        }
        need = c->wlen + msg_len + CLAWQ_FRAME_HEADER_LEN;
        cap = c->wcap > 0 ? c->wcap : 4096;
        while (cap < need)
            cap *= 2;
        if (cap != c->wcap) {
            nb = realloc(c->wbuf, cap);
            if (nb == NULL)
                return set_err(c, CLAWQ_ENOMEM, "out of memory");
            c->wbuf = nb;
            c->wcap = cap;
        }
    }
    p = c->wbuf + c->wlen;
    clawq_frame_put_len(p, (uint32_t)msg_len);
    p += CLAWQ_FRAME_HEADER_LEN;
    *p++ = 0x08; /* field 1 (id), varint */
    p = varint_put(p, id);
    p = varint_put(p, tag);
    p = varint_put(p, body_len);
    if (body_len > 0)
        memcpy(p, body, body_len);
    c->wlen += CLAWQ_FRAME_HEADER_LEN + msg_len;
    return 0;
}

/* Fills d from a ticket's OK answer r: per-item results of a put or an
 * ack, the tasks of a pull. Returns 0 or the error that replaces the
 * request's status (CLAWQ_EPROTOCOL, CLAWQ_ENOMEM). */
static int ticket_answer(const pending *p, const Clawq__Response *r,
                         done_entry *d)
{
    const Clawq__ItemResult *const *items = NULL;
    size_t n_items = 0;
    int err = 0;

    switch (p->op) {
    case CLAWQ_OP_PULL:
        if (r->body_case != CLAWQ__RESPONSE__BODY_TASKS)
            return CLAWQ_EPROTOCOL;
        d->r.tasks =
            clawq__tasks_copy(r->tasks->tasks, r->tasks->n_tasks, &err);
        if (err < 0)
            return err;
        d->r.n = r->tasks->n_tasks;
        return 0;
    case CLAWQ_OP_PUT:
        if (r->body_case != CLAWQ__RESPONSE__BODY_PUT)
            return CLAWQ_EPROTOCOL;
        items = (const Clawq__ItemResult *const *)r->put->results;
        n_items = r->put->n_results;
        break;
    case CLAWQ_OP_ACK:
        if (r->body_case != CLAWQ__RESPONSE__BODY_ACK)
            return CLAWQ_EPROTOCOL;
        items = (const Clawq__ItemResult *const *)r->ack->results;
        n_items = r->ack->n_results;
        break;
    default:
        return CLAWQ_EPROTOCOL;
    }
    if (n_items != p->n)
        return CLAWQ_EPROTOCOL;
    if (p->op == CLAWQ_OP_PUT)
        d->r.puts = calloc(n_items, sizeof(*d->r.puts));
    else
        d->r.statuses = calloc(n_items, sizeof(*d->r.statuses));
    if (d->r.puts == NULL && d->r.statuses == NULL)
        return CLAWQ_ENOMEM;
    for (size_t k = 0; k < n_items; k++) {
        const Clawq__ItemResult *it = items[k];
        int st = it->has_status ? status_to_err((int)it->status) : 0;

        if (d->r.puts != NULL) {
            d->r.puts[k].status = st;
            d->r.puts[k].id = it->id;
            d->r.puts[k].duplicate = it->has_duplicate && it->duplicate;
        } else {
            d->r.statuses[k] = st;
        }
        if (st != 0 && d->r.n_failed++ == 0 && d->msg == NULL) {
            char buf[600];

            snprintf(buf, sizeof(buf), "item %zu: %s", k,
                     it->message != NULL && it->message[0] != '\0'
                         ? it->message
                         : clawq_strerror(st));
            d->msg = strdup(buf);
        }
    }
    d->r.n = n_items;
    return 0;
}

static void dispatch_pending(clawq_client *c, size_t i, Clawq__Response *r)
{
    pending *p = &c->pend[i];
    int st = r->has_status ? status_to_err((int)r->status) : 0;

    if ((st == CLAWQ_ENOT_LEADER || st == CLAWQ_ESHUTTING_DOWN) &&
        p->hops < CLAWQ_MAX_REDIRECTS && !c->no_follow) {
        clawq__endpoint ep;

        p->hops++;
        p->req_id = 0; /* refused, not applied: send again elsewhere */
        if (r->leader != NULL && r->leader[0] != '\0' &&
            clawq__endpoint_parse(r->leader, strlen(r->leader),
                                  CLAWQ_DEFAULT_PORT, &ep) == 0) {
            c->hint = ep;
            c->has_hint = true;
        }
        c->redirect_pending = true;
        return;
    }
    if (p->op != 0) {
        done_entry d;

        memset(&d, 0, sizeof(d));
        d.r.ticket = p->seq;
        d.r.op = (clawq_op)p->op;
        d.r.user = p->user;
        d.r.n = p->op == CLAWQ_OP_PULL ? 0 : p->n;
        if (st == 0) {
            st = ticket_answer(p, r, &d);
            if (st != 0) {
                free(d.r.puts);
                free(d.r.statuses);
                free(d.msg);
                d.r.puts = NULL;
                d.r.statuses = NULL;
                d.r.n_failed = 0;
                d.r.n = p->op == CLAWQ_OP_PULL ? 0 : p->n;
                d.msg = strdup(st == CLAWQ_ENOMEM ? "out of memory"
                                                  : "malformed answer");
            }
        } else {
            d.msg = strdup(r->message != NULL && r->message[0] != '\0'
                               ? r->message
                               : clawq_strerror(st));
            d.retry_after_ms = r->has_retry_after_ms ? r->retry_after_ms : 0;
        }
        d.r.status = st;
        done_push(c, &d);
        free(p->body);
        c->pend[i] = c->pend[--c->n_pend];
        return;
    }
    {
        clawq_put_result *res = &c->results[p->slot];

        if (st == 0) {
            if (r->body_case != CLAWQ__RESPONSE__BODY_PUT ||
                r->put->n_results != 1) {
                st = CLAWQ_EPROTOCOL;
            } else {
                const Clawq__ItemResult *it = r->put->results[0];

                st = it->has_status ? status_to_err((int)it->status) : 0;
                res->id = it->id;
                res->duplicate = it->has_duplicate && it->duplicate;
            }
        } else if (r->has_retry_after_ms) {
            c->retry_after_ms = r->retry_after_ms;
        }
        if (st != 0 && r->message != NULL)
            set_err(c, st, "%s", r->message);
        res->status = st;
    }
    free(p->body);
    c->pend[i] = c->pend[--c->n_pend];
}

/* Routes one decoded reply; takes ownership of r. */
static void dispatch(clawq_client *c, Clawq__Response *r)
{
    if (c->sync_id != 0 && r->id == c->sync_id && c->sync_resp == NULL) {
        c->sync_resp = r;
        return;
    }
    for (size_t i = 0; i < c->n_pend; i++) {
        if (c->pend[i].req_id != 0 && c->pend[i].req_id == r->id) {
            dispatch_pending(c, i, r);
            break;
        }
    }
    clawq__response__free_unpacked(r, NULL);
}

/* Decodes every whole frame in the read buffer. Returns 0 or
 * CLAWQ_EPROTOCOL (connection dropped). */
static int frames_process(clawq_client *c)
{
    size_t off = 0;
    int rc = 0;

    while (c->rlen - off >= CLAWQ_FRAME_HEADER_LEN) {
        uint32_t len = clawq_frame_get_len(c->rbuf + off);
        Clawq__Response *r;

        if (len > c->max_frame) {
            rc = set_err(c, CLAWQ_EPROTOCOL,
                         "frame of %u bytes from %s exceeds the limit %u", len,
                         c->cur_ep, c->max_frame);
            break;
        }
        if (c->rlen - off - CLAWQ_FRAME_HEADER_LEN < len)
            break;
        r = clawq__response__unpack(NULL, len,
                                    c->rbuf + off + CLAWQ_FRAME_HEADER_LEN);
        if (r == NULL) {
            rc = set_err(c, CLAWQ_EPROTOCOL, "undecodable response from %s",
                         c->cur_ep);
            break;
        }
        off += CLAWQ_FRAME_HEADER_LEN + len;
        dispatch(c, r);
    }
    if (rc != 0) {
        conn_drop(c);
        return rc;
    }
    if (off > 0) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
    return 0;
}

/* Makes room in the read buffer for the frame being received. */
static int rbuf_reserve(clawq_client *c)
{
    size_t need = RBUF_MIN;
    size_t cap;
    uint8_t *nb;

    if (c->rlen >= CLAWQ_FRAME_HEADER_LEN) {
        uint32_t len = clawq_frame_get_len(c->rbuf);

        if (len <= c->max_frame && (size_t)len + CLAWQ_FRAME_HEADER_LEN > need)
            need = (size_t)len + CLAWQ_FRAME_HEADER_LEN;
    }
    if (c->rcap >= need && c->rcap > c->rlen)
        return 0;
    cap = c->rcap > 0 ? c->rcap : RBUF_MIN;
    while (cap < need)
        cap *= 2;
    if (cap == c->rcap)
        cap *= 2;
    nb = realloc(c->rbuf, cap);
    if (nb == NULL)
        return set_err(c, CLAWQ_ENOMEM, "out of memory");
    c->rbuf = nb;
    c->rcap = cap;
    return 0;
}

/* Sends what is queued until the socket takes no more. Returns 0, or
 * CLAWQ_ECONN_LOST with the connection dropped. */
static int send_queued(clawq_client *c)
{
    while (c->woff < c->wlen) {
        ssize_t w =
            send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            set_err(c, CLAWQ_ECONN_LOST, "send to %s: %s", c->cur_ep,
                    strerror(errno));
            conn_drop(c);
            return CLAWQ_ECONN_LOST;
        }
        c->woff += (size_t)w;
    }
    if (c->woff == c->wlen)
        c->woff = c->wlen = 0;
    return 0;
}

/* One round of I/O: waits until deadline (monotonic ms) for the socket,
 * writes what it can, reads and dispatches whole frames. Returns 0 after
 * any progress, CLAWQ_ETIMEOUT when nothing happened by the deadline,
 * CLAWQ_ECONN_LOST / CLAWQ_EPROTOCOL (connection dropped) or
 * CLAWQ_ENOMEM. */
static int io_step(clawq_client *c, uint64_t deadline)
{
    struct pollfd pfd;
    int timeout = poll_timeout(deadline);
    int n;

    if (c->fd < 0)
        return CLAWQ_ECONN_LOST;
    pfd.fd = c->fd;
    pfd.events = POLLIN | (c->woff < c->wlen ? POLLOUT : 0);
    pfd.revents = 0;
    n = poll(&pfd, 1, timeout);
    if (n < 0) {
        if (errno == EINTR)
            return 0;
        conn_drop(c);
        return set_err(c, CLAWQ_ECONN_LOST, "poll: %s", strerror(errno));
    }
    if (n == 0)
        return CLAWQ_ETIMEOUT; /* the caller says what it waited for */
    if ((pfd.revents & POLLOUT) && send_queued(c) < 0)
        return CLAWQ_ECONN_LOST;
    if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
        for (;;) {
            ssize_t r;
            int rc = rbuf_reserve(c);

            if (rc < 0) {
                conn_drop(c);
                return rc;
            }
            r = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                set_err(c, CLAWQ_ECONN_LOST, "recv from %s: %s", c->cur_ep,
                        strerror(errno));
                frames_process(c);
                conn_drop(c);
                return CLAWQ_ECONN_LOST;
            }
            if (r == 0) {
                rc = frames_process(c);
                if (rc < 0)
                    return rc;
                set_err(c, CLAWQ_ECONN_LOST, "connection to %s closed",
                        c->cur_ep);
                conn_drop(c);
                return CLAWQ_ECONN_LOST;
            }
            c->rlen += (size_t)r;
            rc = frames_process(c);
            if (rc < 0)
                return rc;
            if (c->rlen < c->rcap)
                break;
        }
    }
    return 0;
}

/* Waits for the reply to the synchronous request c->sync_id. */
static int sync_wait(clawq_client *c, uint64_t deadline)
{
    /* The request just queued usually fits in the socket: send it now
     * rather than after a poll that would only say so. */
    if (c->fd >= 0 && c->woff < c->wlen && send_queued(c) < 0)
        return CLAWQ_ECONN_LOST;
    while (c->sync_resp == NULL) {
        int rc = io_step(c, deadline);

        if (rc < 0)
            return rc;
    }
    return 0;
}

static int tcp_open(clawq_client *c, const clawq__endpoint *ep,
                    uint64_t deadline)
{
    struct addrinfo hints, *res = NULL, *ai;
    char port[8];
    int rc, fd = -1, err = 0;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%u", (unsigned)ep->port);
    rc = getaddrinfo(ep->host, port, &hints, &res);
    if (rc != 0)
        return set_err(c, CLAWQ_ECONN_LOST, "resolve %s: %s", c->cur_ep,
                       gai_strerror(rc));
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        struct pollfd pfd;
        socklen_t elen = sizeof(err);
        int one = 1;

        fd = socket(ai->ai_family,
                    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        if (errno != EINPROGRESS) {
            err = errno;
            goto next;
        }
        pfd.fd = fd;
        pfd.events = POLLOUT;
        rc = poll(&pfd, 1, poll_timeout(deadline));
        if (rc == 0) {
            err = ETIMEDOUT;
            goto next;
        }
        if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
            err = errno;
        if (err == 0)
            break;
    next:
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return set_err(c, err == ETIMEDOUT ? CLAWQ_ETIMEOUT : CLAWQ_ECONN_LOST,
                       "connect %s: %s", c->cur_ep,
                       strerror(err != 0 ? err : ECONNREFUSED));
    c->fd = fd;
    return 0;
}

/* Connects to ep and exchanges Hello. Returns 0 or an error (the
 * connection closed). */
static int conn_open(clawq_client *c, const clawq__endpoint *ep)
{
    uint64_t deadline = now_ms() + c->connect_timeout_ms;
    Clawq__Hello hello = CLAWQ__HELLO__INIT;
    Clawq__Response *r;
    const Clawq__HelloResponse *h;
    size_t len;
    uint8_t buf[1024];
    int rc;

    clawq__endpoint_format(ep, c->cur_ep, sizeof(c->cur_ep));
    rc = tcp_open(c, ep, deadline);
    if (rc < 0)
        return rc;
    hello.has_protocol_version = true;
    hello.protocol_version = CLAWQ_PROTOCOL_VERSION;
    hello.client_name = c->client_name;
    hello.token = c->token;
    len = clawq__hello__get_packed_size(&hello);
    if (len > sizeof(buf)) {
        rc = set_err(c, CLAWQ_EINVALID, "client name or token too long");
        goto fail;
    }
    clawq__hello__pack(&hello, buf);
    c->sync_id = ++c->next_id;
    rc = frame_append(c, c->sync_id, 2, buf, len);
    if (rc < 0)
        goto fail;
    rc = sync_wait(c, deadline);
    if (rc < 0) {
        if (rc == CLAWQ_ETIMEOUT)
            set_err(c, rc, "no Hello answer from %s", c->cur_ep);
        goto fail;
    }
    r = c->sync_resp;
    c->sync_resp = NULL;
    c->sync_id = 0;
    if (r->has_status && r->status != CLAWQ__STATUS__OK) {
        rc = set_err(c, status_to_err((int)r->status), "%s: %s", c->cur_ep,
                     r->message != NULL ? r->message
                                        : clawq_strerror(-(int)r->status));
        clawq__response__free_unpacked(r, NULL);
        goto fail;
    }
    if (r->body_case != CLAWQ__RESPONSE__BODY_HELLO) {
        clawq__response__free_unpacked(r, NULL);
        rc = set_err(c, CLAWQ_EPROTOCOL, "%s answered Hello without hello",
                     c->cur_ep);
        goto fail;
    }
    h = r->hello;
    if (h->has_protocol_version &&
        h->protocol_version != CLAWQ_PROTOCOL_VERSION) {
        rc = set_err(c, CLAWQ_EPROTOCOL, "%s speaks protocol %u, not %u",
                     c->cur_ep, h->protocol_version, CLAWQ_PROTOCOL_VERSION);
        clawq__response__free_unpacked(r, NULL);
        goto fail;
    }
    c->node_id = h->node_id;
    c->leader_id = h->leader_id;
    c->srv_max_frame = h->has_max_frame ? h->max_frame : 0;
    /* Unless the caller chose a cap, accept the frames the broker says it
     * may send, within the protocol's sane range. */
    if (!c->max_frame_set)
        c->max_frame = c->srv_max_frame < CLAWQ_DEFAULT_MAX_FRAME
                           ? CLAWQ_DEFAULT_MAX_FRAME
                       : c->srv_max_frame > MAX_FRAME_CAP ? MAX_FRAME_CAP
                                                          : c->srv_max_frame;
    c->srv_max_batch = h->has_max_batch ? h->max_batch : 0;
    free(c->leader);
    free(c->server_version);
    c->leader = strdup(h->leader != NULL ? h->leader : "");
    c->server_version =
        strdup(h->server_version != NULL ? h->server_version : "");
    clawq__response__free_unpacked(r, NULL);
    if (c->leader == NULL || c->server_version == NULL) {
        rc = set_err(c, CLAWQ_ENOMEM, "out of memory");
        goto fail;
    }
    return 0;
fail:
    conn_drop(c);
    return rc;
}

static int pending_cmp(const void *a, const void *b)
{
    const pending *x = a, *y = b;

    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Re-sends the pipelined requests marked unsent, in the order they were
 * submitted (the array itself is unordered: answered entries are
 * swap-removed). */
static int pending_resend(clawq_client *c)
{
    bool any = false;

    for (size_t i = 0; i < c->n_pend && !any; i++)
        any = c->pend[i].req_id == 0;
    if (!any)
        return 0;
    qsort(c->pend, c->n_pend, sizeof(*c->pend), pending_cmp);
    for (size_t i = 0; i < c->n_pend; i++) {
        pending *p = &c->pend[i];
        int rc;

        if (p->req_id != 0)
            continue;
        rc = frame_append(c, c->next_id + 1, p->field, p->body, p->body_len);
        if (rc < 0)
            return rc;
        p->req_id = ++c->next_id;
    }
    return 0;
}

/* The pause before the k-th retry of a refused request. */
static uint64_t redirect_pause(uint32_t k)
{
    uint64_t sl = (uint64_t)BACKOFF_BASE_MS << (k < 5 ? k : 5);
    return sl < REDIRECT_PAUSE_MAX_MS ? sl : REDIRECT_PAUSE_MAX_MS;
}

/* When the connected node names another as leader, connect there instead
 * (once); a failure to do so keeps the current connection. */
static void leader_follow(clawq_client *c)
{
    clawq__endpoint ep;
    char cur[sizeof(c->cur_ep)];

    if (c->no_follow || c->leader_id == 0 || c->leader_id == c->node_id ||
        c->leader == NULL || c->leader[0] == '\0')
        return;
    if (clawq__endpoint_parse(c->leader, strlen(c->leader), CLAWQ_DEFAULT_PORT,
                              &ep) != 0)
        return;
    memcpy(cur, c->cur_ep, sizeof(cur));
    conn_drop(c);
    if (conn_open(c, &ep) == 0)
        return;
    /* Back to the node we had; the next NOT_LEADER will redirect. */
    for (size_t i = 0; i < c->n_eps; i++) {
        char name[sizeof(c->cur_ep)];

        clawq__endpoint_format(&c->eps[i], name, sizeof(name));
        if (strcmp(name, cur) == 0) {
            conn_open(c, &c->eps[i]);
            return;
        }
    }
}

/* Makes sure the handle is connected (Hello done, unsent pipelined puts
 * queued again), trying the leader hint first and then the endpoints in
 * turn, sleeping with capped exponential backoff (with jitter) after each
 * full round of failures, until deadline. */
static int conn_ensure(clawq_client *c, uint64_t deadline)
{
    int rc = 0;

    if (c->fd >= 0 && c->redirect_pending) {
        bool inflight = false;

        for (size_t i = 0; i < c->n_pend; i++)
            inflight = inflight || c->pend[i].req_id != 0;
        /* Requests refused by this node wait (unsent) until the others
         * in flight here are answered, then go to the leader. */
        if (inflight)
            return 0;
        conn_drop(c);
        if (!c->has_hint) {
            /* No leader known (an election): the next node, after a
             * pause that grows with the refused requests' hops. */
            uint32_t k = 0;
            uint64_t sl, now = now_ms();

            for (size_t i = 0; i < c->n_pend; i++)
                if (c->pend[i].hops > k)
                    k = c->pend[i].hops;
            sl = redirect_pause(k);
            c->ep_idx = (c->ep_idx + 1) % c->n_eps;
            sleep_ms(now + sl < deadline ? sl
                     : deadline > now    ? deadline - now
                                         : 0);
        }
    }
    while (c->fd < 0) {
        const clawq__endpoint *ep;
        uint64_t now = now_ms();

        if (c->round_failures >= c->n_eps) {
            uint32_t d = c->backoff_ms;
            uint64_t sl = d / 2 + rng_next(c) % (d / 2 + 1);

            if (now + sl >= deadline) {
                if (deadline > now)
                    sleep_ms(deadline - now);
                return rc != 0 ? rc
                               : set_err(c, CLAWQ_ECONN_LOST,
                                         "no broker reachable");
            }
            sleep_ms(sl);
            c->backoff_ms = d * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : d * 2;
            c->round_failures = 0;
        } else if (now >= deadline) {
            return rc != 0
                       ? rc
                       : set_err(c, CLAWQ_ECONN_LOST, "no broker reachable");
        }
        if (c->has_hint) {
            clawq__endpoint hint = c->hint;

            c->has_hint = false;
            rc = conn_open(c, &hint);
        } else {
            ep = &c->eps[c->ep_idx];
            rc = conn_open(c, ep);
            if (rc < 0) {
                c->ep_idx = (c->ep_idx + 1) % c->n_eps;
                c->round_failures++;
            }
        }
        if (rc == CLAWQ_EUNAUTHENTICATED || rc == CLAWQ_EFORBIDDEN ||
            rc == CLAWQ_ENOMEM || rc == CLAWQ_EINVALID)
            return rc;
        if (rc == 0) {
            leader_follow(c);
            if (c->fd < 0)
                continue;
            c->round_failures = 0;
            c->backoff_ms = BACKOFF_BASE_MS;
        }
    }
    return pending_resend(c);
}

/* Waits until no pipelined put is in flight on this connection. */
static int pending_drain(clawq_client *c, uint64_t deadline)
{
    for (;;) {
        bool inflight = false;
        int rc;

        for (size_t i = 0; i < c->n_pend; i++)
            inflight = inflight || c->pend[i].req_id != 0;
        if (!inflight || c->fd < 0)
            return 0;
        rc = io_step(c, deadline);
        if (rc == CLAWQ_ETIMEOUT || rc == CLAWQ_ENOMEM)
            return rc;
    }
}

static int body_pack(clawq_client *c, const ProtobufCMessage *m, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);

    if (n > c->sbody_cap) {
        uint8_t *nb = realloc(c->sbody, n);

        if (nb == NULL)
            return set_err(c, CLAWQ_ENOMEM, "out of memory");
        c->sbody = nb;
        c->sbody_cap = n;
    }
    *len = protobuf_c_message_pack(m, c->sbody);
    return 0;
}

/* Sends one synchronous request (field: the Request oneof member, m: its
 * message) and waits for its reply, reconnecting, following the leader
 * and re-sending as the contract at the top of the API in clawq.h says.
 * extra_ms lengthens the deadline (a pull's wait). On success *out owns
 * the reply (status OK, body expect unless expect is NOT_SET). */
static int call(clawq_client *c, uint32_t field, const ProtobufCMessage *m,
                bool retry_safe, uint32_t extra_ms,
                Clawq__Response__BodyCase expect, Clawq__Response **out)
{
    uint64_t deadline = now_ms() + c->request_timeout_ms + extra_ms;
    uint32_t hops = 0, losses = 0;
    size_t len = 0;
    int rc;

    rc = body_pack(c, m, &len);
    if (rc < 0)
        return rc;
    for (;;) {
        Clawq__Response *r;
        int st;

        rc = conn_ensure(c, deadline);
        if (rc < 0)
            return rc;
        c->sync_id = ++c->next_id;
        rc = frame_append(c, c->sync_id, field, c->sbody, len);
        if (rc < 0) {
            c->sync_id = 0;
            return rc;
        }
        rc = sync_wait(c, deadline);
        if (rc < 0) {
            c->sync_id = 0;
            if (rc == CLAWQ_ECONN_LOST && retry_safe) {
                /* A broker that drops us at once must not be hammered. */
                uint64_t sl = (uint64_t)BACKOFF_BASE_MS
                              << (losses < 5 ? losses : 5);
                uint64_t now = now_ms();

                losses++;
                if (now + sl < deadline) {
                    sleep_ms(sl);
                    continue;
                }
            }
            if (rc == CLAWQ_ECONN_LOST) {
                set_err(c, rc, "connection to %s lost; outcome unknown",
                        c->cur_ep[0] != '\0' ? c->cur_ep : "broker");
            } else if (rc == CLAWQ_ETIMEOUT) {
                set_err(c, rc, "no reply from %s within %u ms", c->cur_ep,
                        c->request_timeout_ms + extra_ms);
                conn_suspect(c);
            }
            return rc;
        }
        r = c->sync_resp;
        c->sync_resp = NULL;
        c->sync_id = 0;
        st = r->has_status ? status_to_err((int)r->status) : 0;
        c->retry_after_ms = r->has_retry_after_ms ? r->retry_after_ms : 0;
        if (st != 0)
            set_err(c, st, "%s",
                    r->message != NULL && r->message[0] != '\0'
                        ? r->message
                        : clawq_strerror(st));
        if ((st == CLAWQ_ENOT_LEADER || st == CLAWQ_ESHUTTING_DOWN) &&
            !c->no_follow) {
            clawq__endpoint ep;
            bool hinted = r->leader != NULL && r->leader[0] != '\0' &&
                          clawq__endpoint_parse(r->leader, strlen(r->leader),
                                                CLAWQ_DEFAULT_PORT, &ep) == 0;

            hops++;
            clawq__response__free_unpacked(r, NULL);
            rc = pending_drain(c, deadline);
            conn_drop(c);
            if (rc < 0)
                return rc;
            if (hinted) {
                c->hint = ep;
                c->has_hint = true;
            } else {
                c->ep_idx = (c->ep_idx + 1) % c->n_eps;
            }
            /* No leader known (an election), or past the quick hops (the
             * named leader may be dead while the others still name it):
             * retry after a pause that grows with each hop, until the
             * caller's deadline. */
            if (!hinted || hops > CLAWQ_MAX_REDIRECTS) {
                uint64_t sl = redirect_pause(hops);
                uint64_t now = now_ms();

                if (now + sl >= deadline)
                    return st;
                sleep_ms(sl);
            }
            continue;
        }
        if (st != 0) {
            clawq__response__free_unpacked(r, NULL);
            return st;
        }
        if (expect != CLAWQ__RESPONSE__BODY__NOT_SET &&
            r->body_case != expect) {
            clawq__response__free_unpacked(r, NULL);
            return set_err(c, CLAWQ_EPROTOCOL,
                           "unexpected response body %d from %s",
                           (int)r->body_case, c->cur_ep);
        }
        c->errmsg[0] = '\0';
        *out = r;
        return 0;
    }
}

static void err_reset(clawq_client *c)
{
    c->errmsg[0] = '\0';
    c->retry_after_ms = 0;
}

/* ---- handle ---- */

void clawq_options_init(clawq_options *opts)
{
    memset(opts, 0, sizeof(*opts));
}

int clawq_connect2(const char *endpoints, const clawq_options *opts,
                   clawq_client **out, char *errbuf, size_t errbuf_len)
{
    clawq_client *c;
    int rc;

    if (errbuf != NULL && errbuf_len > 0)
        errbuf[0] = '\0';
    if (out == NULL || endpoints == NULL) {
        if (errbuf != NULL && errbuf_len > 0)
            snprintf(errbuf, errbuf_len, "no endpoints or no out pointer");
        return CLAWQ_EINVALID;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return CLAWQ_ENOMEM;
    c->fd = -1;
    rc = clawq__endpoints_parse(endpoints, CLAWQ_DEFAULT_PORT, &c->eps,
                                &c->n_eps);
    if (rc < 0) {
        set_err(c, rc, "bad endpoint list \"%s\" (want host:port[,...])",
                endpoints);
        goto fail;
    }
    c->connect_timeout_ms = opts != NULL && opts->connect_timeout_ms != 0
                                ? opts->connect_timeout_ms
                                : DEFAULT_CONNECT_TIMEOUT_MS;
    c->request_timeout_ms = opts != NULL && opts->request_timeout_ms != 0
                                ? opts->request_timeout_ms
                                : DEFAULT_REQUEST_TIMEOUT_MS;
    c->no_follow = opts != NULL && opts->no_follow != 0;
    c->max_frame_set = opts != NULL && opts->max_frame != 0;
    c->max_frame = c->max_frame_set ? opts->max_frame : CLAWQ_DEFAULT_MAX_FRAME;
    c->window = opts != NULL && opts->pipeline_window != 0
                    ? opts->pipeline_window
                    : DEFAULT_WINDOW;
    if (c->window > MAX_WINDOW)
        c->window = MAX_WINDOW;
    c->client_name =
        strdup(opts != NULL && opts->client_name != NULL ? opts->client_name
                                                         : "libclawq");
    c->token = dup_str(opts != NULL ? opts->token : NULL);
    if (c->client_name == NULL ||
        (opts != NULL && opts->token != NULL && c->token == NULL)) {
        rc = set_err(c, CLAWQ_ENOMEM, "out of memory");
        goto fail;
    }
    c->backoff_ms = BACKOFF_BASE_MS;
    c->rng = (uint32_t)now_ms() ^ ((uint32_t)getpid() << 16) ^
             (uint32_t)(uintptr_t)c;
    if (c->rng == 0)
        c->rng = 1;
    /* Each endpoint once, no backoff: a CLI should fail fast. */
    rc = CLAWQ_ECONN_LOST;
    for (size_t i = 0; i < c->n_eps && rc < 0; i++) {
        rc = conn_open(c, &c->eps[i]);
        if (rc == 0)
            c->ep_idx = i;
        else if (rc == CLAWQ_EUNAUTHENTICATED || rc == CLAWQ_EFORBIDDEN)
            break;
    }
    if (rc < 0)
        goto fail;
    /* A node that knows no leader is most likely in an election (a fresh
     * cluster): ask again for a while, so that the caller's first writes
     * are not refused. After 1 s at most, go on with what we have
     * (reads still work on a node without a leader). */
    {
        uint64_t until =
            now_ms() +
            (c->connect_timeout_ms < 1000 ? c->connect_timeout_ms : 1000);
        uint32_t pause = 10;

        while (!c->no_follow && c->leader_id == 0 && now_ms() + pause < until) {
            clawq__endpoint ep = c->eps[c->ep_idx];

            sleep_ms(pause);
            pause = pause * 2 > 500 ? 500 : pause * 2;
            conn_drop(c);
            if (conn_open(c, &ep) < 0)
                break;
        }
        if (c->fd < 0) {
            rc = conn_open(c, &c->eps[c->ep_idx]);
            if (rc < 0)
                goto fail;
        }
    }
    leader_follow(c);
    if (c->fd < 0) {
        rc = CLAWQ_ECONN_LOST;
        goto fail;
    }
    *out = c;
    return 0;
fail:
    if (errbuf != NULL && errbuf_len > 0)
        snprintf(errbuf, errbuf_len, "%s",
                 c->errmsg[0] != '\0' ? c->errmsg : clawq_strerror(rc));
    clawq_close(c);
    return rc;
}

int clawq_connect(const char *endpoints, const clawq_options *opts,
                  clawq_client **out)
{
    return clawq_connect2(endpoints, opts, out, NULL, 0);
}

void clawq_close(clawq_client *c)
{
    if (c == NULL)
        return;
    if (c->fd >= 0)
        close(c->fd);
    for (size_t i = 0; i < c->n_pend; i++)
        free(c->pend[i].body);
    for (size_t i = 0; i < c->n_done; i++) {
        clawq_result_free(&c->done[i].r);
        free(c->done[i].msg);
    }
    free(c->done);
    if (c->sync_resp != NULL)
        clawq__response__free_unpacked(c->sync_resp, NULL);
    free(c->pend);
    free(c->results);
    free(c->eps);
    free(c->client_name);
    free(c->token);
    free(c->leader);
    free(c->server_version);
    free(c->rbuf);
    free(c->wbuf);
    free(c->sbody);
    free(c);
}

const char *clawq_errmsg(const clawq_client *c)
{
    return c != NULL ? c->errmsg : "";
}

uint32_t clawq_retry_after_ms(const clawq_client *c)
{
    return c != NULL ? c->retry_after_ms : 0;
}

int clawq_server_info_get(clawq_client *c, clawq_server_info *info)
{
    int rc;

    if (c == NULL || info == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    rc = conn_ensure(c, now_ms() + c->request_timeout_ms);
    if (rc < 0)
        return rc;
    info->node_id = c->node_id;
    info->leader_id = c->leader_id;
    info->leader = c->leader != NULL ? c->leader : "";
    info->max_frame = c->srv_max_frame;
    info->max_batch = c->srv_max_batch;
    info->server_version = c->server_version != NULL ? c->server_version : "";
    info->endpoint = c->cur_ep;
    return 0;
}

const char *clawq_task_state_name(clawq_task_state s)
{
    switch (s) {
    case CLAWQ_STATE_READY:
        return "ready";
    case CLAWQ_STATE_DELAYED:
        return "delayed";
    case CLAWQ_STATE_LEASED:
        return "leased";
    case CLAWQ_STATE_DEAD:
        return "dead";
    default:
        return "unspecified";
    }
}

void clawq_tasks_free(clawq_task *tasks)
{
    free(tasks);
}

void clawq_queue_stats_free(clawq_queue_stats *queues)
{
    free(queues);
}

void clawq_put_task_init(clawq_put_task *t)
{
    static const clawq_put_task init = CLAWQ_PUT_TASK_INIT;

    *t = init;
}

/* ---- put ---- */

/* Fills the protobuf form of tasks[0..n) into pt / ptp / hdr (caller
 * arrays; hdr has room for every header). Returns 0 or CLAWQ_EINVALID. */
static int put_tasks_build(clawq_client *c, const clawq_put_task *tasks,
                           size_t n, Clawq__PutTask *pt, Clawq__PutTask **ptp,
                           Clawq__Header *hdr, Clawq__Header **hdrp,
                           bool *all_keyed)
{
    size_t h = 0;

    *all_keyed = true;
    for (size_t i = 0; i < n; i++) {
        const clawq_put_task *t = &tasks[i];
        Clawq__PutTask init = CLAWQ__PUT_TASK__INIT;

        if (t->priority > 255)
            return set_err(c, CLAWQ_EINVALID, "priority %u out of range 0..255",
                           t->priority);
        if (t->payload == NULL && t->payload_len > 0)
            return set_err(c, CLAWQ_EINVALID, "payload NULL with length");
        if (t->n_headers > 0 && t->headers == NULL)
            return set_err(c, CLAWQ_EINVALID, "headers NULL with count");
        pt[i] = init;
        pt[i].has_payload = true;
        pt[i].payload.data = unconst_bytes(t->payload);
        pt[i].payload.len = t->payload_len;
        pt[i].has_priority = true;
        pt[i].priority = t->priority;
        if (t->delay_ms > 0) {
            pt[i].has_delay_ms = true;
            pt[i].delay_ms = t->delay_ms;
        }
        if (t->deadline_ms > 0) {
            pt[i].has_deadline_ms = true;
            pt[i].deadline_ms = t->deadline_ms;
        }
        if (t->max_attempts > 0) {
            pt[i].has_max_attempts = true;
            pt[i].max_attempts = t->max_attempts;
        }
        if (t->idempotency_key != NULL && t->idempotency_key[0] != '\0')
            pt[i].idempotency_key = unconst(t->idempotency_key);
        else
            *all_keyed = false;
        pt[i].n_headers = t->n_headers;
        pt[i].headers = t->n_headers > 0 ? &hdrp[h] : NULL;
        for (size_t j = 0; j < t->n_headers; j++, h++) {
            Clawq__Header hinit = CLAWQ__HEADER__INIT;

            if (t->headers[j].key == NULL || t->headers[j].value == NULL)
                return set_err(c, CLAWQ_EINVALID, "header key or value NULL");
            hdr[h] = hinit;
            hdr[h].key = unconst(t->headers[j].key);
            hdr[h].value = unconst(t->headers[j].value);
            hdrp[h] = &hdr[h];
        }
        ptp[i] = &pt[i];
    }
    return 0;
}

/* The arrays behind a PutRequest built by put_request_init. */
typedef struct put_bufs {
    Clawq__PutTask *pt, **ptp;
    Clawq__Header *hdr, **hdrp;
} put_bufs;

static void put_bufs_free(put_bufs *b)
{
    free(b->pt);
    free(b->ptp);
    free(b->hdr);
    free(b->hdrp);
}

/* Checks a put batch and builds its request into *req, the arrays behind
 * it in *b (freed with put_bufs_free, also on failure). */
static int put_request_init(clawq_client *c, const char *queue,
                            const clawq_put_task *tasks, size_t n,
                            Clawq__PutRequest *req, put_bufs *b, bool *keyed)
{
    size_t n_hdr = 0;
    int rc;

    memset(b, 0, sizeof(*b));
    rc = check_queue(c, queue);
    if (rc < 0)
        return rc;
    if (tasks == NULL || n == 0 || n > CLAWQ_MAX_BATCH_TASKS)
        return set_err(c, CLAWQ_EINVALID, "a put batch holds 1..%d tasks",
                       CLAWQ_MAX_BATCH_TASKS);
    for (size_t i = 0; i < n; i++) {
        if (tasks[i].n_headers > 4096)
            return set_err(c, CLAWQ_EINVALID, "too many headers");
        n_hdr += tasks[i].n_headers;
    }
    b->pt = calloc(n, sizeof(*b->pt));
    b->ptp = calloc(n, sizeof(*b->ptp));
    b->hdr = calloc(n_hdr + 1, sizeof(*b->hdr));
    b->hdrp = calloc(n_hdr + 1, sizeof(*b->hdrp));
    if (b->pt == NULL || b->ptp == NULL || b->hdr == NULL || b->hdrp == NULL)
        return set_err(c, CLAWQ_ENOMEM, "out of memory");
    rc = put_tasks_build(c, tasks, n, b->pt, b->ptp, b->hdr, b->hdrp, keyed);
    if (rc < 0)
        return rc;
    req->queue = unconst(queue);
    req->n_tasks = n;
    req->tasks = b->ptp;
    return 0;
}

int clawq_put_batch(clawq_client *c, const char *queue,
                    const clawq_put_task *tasks, size_t n,
                    clawq_put_result *results)
{
    Clawq__PutRequest req = CLAWQ__PUT_REQUEST__INIT;
    Clawq__Response *r = NULL;
    put_bufs b;
    bool keyed;
    int rc, failed = 0;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    if (results == NULL)
        return set_err(c, CLAWQ_EINVALID, "results is NULL");
    rc = put_request_init(c, queue, tasks, n, &req, &b, &keyed);
    if (rc < 0)
        goto out_free;
    rc = call(c, CLAWQ__REQUEST__BODY_PUT, &req.base, keyed, 0,
              CLAWQ__RESPONSE__BODY_PUT, &r);
    if (rc < 0)
        goto out_free;
    if (r->put->n_results != n) {
        rc = set_err(c, CLAWQ_EPROTOCOL, "put answered %zu results for %zu",
                     r->put->n_results, n);
        goto out_free;
    }
    for (size_t i = 0; i < n; i++) {
        const Clawq__ItemResult *it = r->put->results[i];
        int st = it->has_status ? status_to_err((int)it->status) : 0;

        results[i].status = st;
        results[i].id = it->id;
        results[i].duplicate = it->has_duplicate && it->duplicate;
        if (st != 0 && failed++ == 0) {
            const char *m = it->message != NULL && it->message[0] != '\0'
                                ? it->message
                                : clawq_strerror(st);

            if (n > 1)
                set_err(c, st, "task %zu: %s", i, m);
            else
                set_err(c, st, "%s", m);
        }
    }
    rc = failed;
out_free:
    if (r != NULL)
        clawq__response__free_unpacked(r, NULL);
    put_bufs_free(&b);
    return rc;
}

int clawq_put(clawq_client *c, const char *queue, const clawq_put_task *task,
              uint64_t *id, bool *duplicate)
{
    clawq_put_result res;
    int rc;

    if (c == NULL)
        return CLAWQ_EINVALID;
    if (task == NULL || id == NULL)
        return set_err(c, CLAWQ_EINVALID, "task and id are required");
    rc = clawq_put_batch(c, queue, task, 1, &res);
    if (rc < 0)
        return rc;
    if (rc > 0)
        return res.status;
    *id = res.id;
    if (duplicate != NULL)
        *duplicate = res.duplicate;
    return 0;
}

/* ---- pipelining ---- */

static size_t flush_count(const clawq_client *c)
{
    size_t k = 0;

    for (size_t i = 0; i < c->n_pend; i++)
        k += c->pend[i].op == 0;
    return k;
}

/* Queues the packed request body (owned: freed on failure) as a pipelined
 * request of kind op (0: put_async, with its result in results[slot])
 * and sends it, first waiting (up to request_timeout_ms) for room in the
 * window on a usable connection. Returns 0 with *seq set, or an error
 * with nothing queued. */
static int submit(clawq_client *c, uint8_t op, uint32_t field, uint8_t *body,
                  size_t body_len, bool retry_safe, uint32_t n,
                  uint32_t extra_ms, void *user, uint32_t slot, uint64_t *seq)
{
    uint64_t deadline = now_ms() + c->request_timeout_ms;
    pending *p;
    int rc;

    if (c->n_pend == c->cap_pend) {
        size_t cap = c->cap_pend > 0 ? c->cap_pend * 2 : 64;
        pending *np = realloc(c->pend, cap * sizeof(*np));

        if (np == NULL) {
            rc = set_err(c, CLAWQ_ENOMEM, "out of memory");
            goto fail;
        }
        c->pend = np;
        c->cap_pend = cap;
    }
    if (op != 0 && c->cap_done < c->n_tickets + 1) {
        size_t cap = c->cap_done > 0 ? c->cap_done * 2 : 64;
        done_entry *nd = realloc(c->done, cap * sizeof(*nd));

        if (nd == NULL) {
            rc = set_err(c, CLAWQ_ENOMEM, "out of memory");
            goto fail;
        }
        c->done = nd;
        c->cap_done = cap;
    }
    /* Room in the window, on a usable connection. */
    for (;;) {
        rc = conn_ensure(c, deadline);
        if (rc < 0)
            goto fail;
        /* Requests refused by a non-leader go out again before this. */
        if (c->n_pend < c->window && !c->redirect_pending)
            break;
        rc = io_step(c, deadline);
        if (rc == CLAWQ_ETIMEOUT || rc == CLAWQ_ENOMEM) {
            if (rc == CLAWQ_ETIMEOUT)
                set_err(c, rc, "the pipeline window (%u) stayed full",
                        c->window);
            goto fail;
        }
    }
    rc = frame_append(c, c->next_id + 1, field, body, body_len);
    if (rc < 0)
        goto fail;
    p = &c->pend[c->n_pend++];
    p->req_id = ++c->next_id;
    p->seq = ++c->next_seq;
    p->deadline = op != 0 ? now_ms() + c->request_timeout_ms + extra_ms : 0;
    p->slot = slot;
    p->hops = 0;
    p->field = field;
    p->n = n;
    p->op = op;
    p->retry_safe = retry_safe;
    p->body = body;
    p->body_len = body_len;
    p->user = user;
    if (op != 0)
        c->n_tickets++;
    *seq = p->seq;
    return 0;
fail:
    free(body);
    return rc;
}

/* Pushes what is queued out now if the socket takes it; never waits.
 * A connection lost here completes the requests as conn_drop says. */
static int push_now(clawq_client *c)
{
    return io_step(c, 0) == CLAWQ_ENOMEM ? CLAWQ_ENOMEM : 0;
}

/* Packs a PutRequest for tasks[0..n) into a new heap buffer. */
static int put_body(clawq_client *c, const char *queue,
                    const clawq_put_task *tasks, size_t n, uint8_t **body,
                    size_t *body_len, bool *keyed)
{
    Clawq__PutRequest req = CLAWQ__PUT_REQUEST__INIT;
    put_bufs b;
    int rc;

    rc = put_request_init(c, queue, tasks, n, &req, &b, keyed);
    if (rc < 0)
        goto out;
    *body_len = clawq__put_request__get_packed_size(&req);
    *body = malloc(*body_len > 0 ? *body_len : 1);
    if (*body == NULL) {
        rc = set_err(c, CLAWQ_ENOMEM, "out of memory");
        goto out;
    }
    clawq__put_request__pack(&req, *body);
out:
    put_bufs_free(&b);
    return rc;
}

int clawq_put_async(clawq_client *c, const char *queue,
                    const clawq_put_task *task)
{
    uint8_t *body = NULL;
    size_t body_len = 0;
    uint64_t seq;
    bool keyed;
    int rc;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    rc = check_queue(c, queue);
    if (rc < 0)
        return rc;
    if (task == NULL)
        return set_err(c, CLAWQ_EINVALID, "no task");
    if (c->n_results >= MAX_PENDING_RESULTS)
        return set_err(c, CLAWQ_EINVALID,
                       "%u puts pending: call clawq_flush first",
                       MAX_PENDING_RESULTS);
    if (c->n_results == c->cap_results) {
        size_t cap = c->cap_results > 0 ? c->cap_results * 2 : 256;
        clawq_put_result *nr = realloc(c->results, cap * sizeof(*nr));

        if (nr == NULL)
            return set_err(c, CLAWQ_ENOMEM, "out of memory");
        c->results = nr;
        c->cap_results = cap;
    }
    rc = put_body(c, queue, task, 1, &body, &body_len, &keyed);
    if (rc < 0)
        return rc;
    rc = submit(c, 0, CLAWQ__REQUEST__BODY_PUT, body, body_len, keyed, 1, 0,
                NULL, (uint32_t)c->n_results, &seq);
    if (rc < 0)
        return rc;
    c->results[c->n_results].status = 1; /* not answered yet */
    c->results[c->n_results].id = 0;
    c->results[c->n_results].duplicate = false;
    rc = (int)c->n_results++;
    return push_now(c) < 0 ? CLAWQ_ENOMEM : rc;
}

size_t clawq_pending(const clawq_client *c)
{
    return c != NULL ? c->n_results : 0;
}

int clawq_flush(clawq_client *c, clawq_put_result *results, size_t n_results)
{
    uint64_t deadline;
    int first = 0;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    deadline = now_ms() + c->request_timeout_ms;
    for (;;) {
        size_t before = flush_count(c);
        int rc;

        if (before == 0)
            break;
        rc = conn_ensure(c, deadline);
        if (rc == 0)
            rc = io_step(c, deadline);
        if (rc == CLAWQ_ETIMEOUT || rc == CLAWQ_ENOMEM ||
            (rc < 0 && rc != CLAWQ_ECONN_LOST && rc != CLAWQ_EPROTOCOL) ||
            (rc == CLAWQ_ECONN_LOST && now_ms() >= deadline)) {
            for (size_t i = 0; i < c->n_pend;) {
                if (c->pend[i].op == 0)
                    pending_fail(c, i, rc, NULL);
                else
                    i++;
            }
            break;
        }
        if (flush_count(c) < before)
            deadline = now_ms() + c->request_timeout_ms;
    }
    for (size_t i = 0; i < c->n_results; i++) {
        if (c->results[i].status > 0)
            c->results[i].status = CLAWQ_ETIMEOUT;
        if (c->results[i].status != 0 && first == 0)
            first = c->results[i].status;
        if (i < n_results && results != NULL)
            results[i] = c->results[i];
    }
    if (first != 0 && c->errmsg[0] == '\0')
        set_err(c, first, "%s", clawq_strerror(first));
    c->n_results = 0;
    return first;
}

/* ---- tickets ---- */

static int ticket_check(clawq_client *c)
{
    if (c->n_tickets >= MAX_TICKETS)
        return set_err(c, CLAWQ_EINVALID,
                       "%u tickets outstanding: collect results with "
                       "clawq_wait first",
                       MAX_TICKETS);
    return 0;
}

int clawq_put_batch_async(clawq_client *c, const char *queue,
                          const clawq_put_task *tasks, size_t n, void *user,
                          clawq_ticket *ticket)
{
    uint8_t *body = NULL;
    size_t body_len = 0;
    uint64_t seq;
    bool keyed;
    int rc;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    if (ticket == NULL)
        return set_err(c, CLAWQ_EINVALID, "ticket is NULL");
    rc = ticket_check(c);
    if (rc < 0)
        return rc;
    rc = put_body(c, queue, tasks, n, &body, &body_len, &keyed);
    if (rc < 0)
        return rc;
    rc = submit(c, CLAWQ_OP_PUT, CLAWQ__REQUEST__BODY_PUT, body, body_len,
                keyed, (uint32_t)n, 0, user, 0, &seq);
    if (rc < 0)
        return rc;
    *ticket = seq;
    return push_now(c);
}

int clawq_pull_async(clawq_client *c, const char *queue, uint32_t max,
                     uint32_t wait_ms, uint32_t lease_ms, void *user,
                     clawq_ticket *ticket)
{
    Clawq__PullRequest req = CLAWQ__PULL_REQUEST__INIT;
    uint8_t *body;
    size_t body_len;
    uint64_t seq;
    int rc;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    if (ticket == NULL)
        return set_err(c, CLAWQ_EINVALID, "ticket is NULL");
    rc = check_queue(c, queue);
    if (rc < 0)
        return rc;
    if (max == 0 || max > CLAWQ_MAX_BATCH_TASKS)
        return set_err(c, CLAWQ_EINVALID, "pull max must be 1..%d",
                       CLAWQ_MAX_BATCH_TASKS);
    rc = ticket_check(c);
    if (rc < 0)
        return rc;
    req.queue = unconst(queue);
    req.has_max = true;
    req.max = max;
    req.has_wait_ms = wait_ms > 0;
    req.wait_ms = wait_ms;
    req.has_lease_ms = lease_ms > 0;
    req.lease_ms = lease_ms;
    req.worker = c->client_name;
    body_len = clawq__pull_request__get_packed_size(&req);
    body = malloc(body_len > 0 ? body_len : 1);
    if (body == NULL)
        return set_err(c, CLAWQ_ENOMEM, "out of memory");
    clawq__pull_request__pack(&req, body);
    rc = submit(c, CLAWQ_OP_PULL, CLAWQ__REQUEST__BODY_PULL, body, body_len,
                false, max, wait_ms, user, 0, &seq);
    if (rc < 0)
        return rc;
    *ticket = seq;
    return push_now(c);
}

/* Fills req with the n lease references; the arrays behind it go to *lr
 * and *lrp, which the caller frees (also on failure). */
static int ack_request_fill(clawq_client *c, const clawq_lease_ref *refs,
                            size_t n, Clawq__AckRequest *req,
                            Clawq__LeaseRef **lr, Clawq__LeaseRef ***lrp)
{
    *lr = calloc(n, sizeof(**lr));
    *lrp = calloc(n, sizeof(**lrp));
    if (*lr == NULL || *lrp == NULL)
        return set_err(c, CLAWQ_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        Clawq__LeaseRef init = CLAWQ__LEASE_REF__INIT;

        (*lr)[i] = init;
        (*lr)[i].id = refs[i].id;
        (*lr)[i].lease_id = refs[i].lease_id;
        (*lrp)[i] = &(*lr)[i];
    }
    req->n_tasks = n;
    req->tasks = *lrp;
    return 0;
}

int clawq_ack_batch_async(clawq_client *c, const clawq_lease_ref *refs,
                          size_t n, void *user, clawq_ticket *ticket)
{
    Clawq__AckRequest req = CLAWQ__ACK_REQUEST__INIT;
    Clawq__LeaseRef *lr = NULL, **lrp = NULL;
    uint8_t *body = NULL;
    size_t body_len = 0;
    uint64_t seq;
    int rc;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    if (ticket == NULL)
        return set_err(c, CLAWQ_EINVALID, "ticket is NULL");
    if (refs == NULL || n == 0 || n > CLAWQ_MAX_BATCH_TASKS)
        return set_err(c, CLAWQ_EINVALID, "an ack batch holds 1..%d tasks",
                       CLAWQ_MAX_BATCH_TASKS);
    rc = ticket_check(c);
    if (rc < 0)
        return rc;
    rc = ack_request_fill(c, refs, n, &req, &lr, &lrp);
    if (rc < 0)
        goto out;
    body_len = clawq__ack_request__get_packed_size(&req);
    body = malloc(body_len > 0 ? body_len : 1);
    if (body == NULL) {
        rc = set_err(c, CLAWQ_ENOMEM, "out of memory");
        goto out;
    }
    clawq__ack_request__pack(&req, body);
    rc = submit(c, CLAWQ_OP_ACK, CLAWQ__REQUEST__BODY_ACK, body, body_len,
                false, (uint32_t)n, 0, user, 0, &seq);
    if (rc < 0)
        goto out;
    *ticket = seq;
    rc = push_now(c);
out:
    free(lr);
    free(lrp);
    return rc;
}

size_t clawq_outstanding(const clawq_client *c)
{
    return c != NULL ? c->n_tickets : 0;
}

/* Completes with status CLAWQ_ETIMEOUT every ticket whose deadline has
 * passed (a late answer finds no request and is dropped). */
static void tickets_expire(clawq_client *c, uint64_t now)
{
    bool sent = false;

    for (size_t i = 0; i < c->n_pend;) {
        pending *p = &c->pend[i];

        if (p->op != 0 && p->deadline <= now) {
            char msg[128];

            sent = sent || p->req_id != 0;
            snprintf(msg, sizeof(msg), "no reply to ticket %llu in time",
                     (unsigned long long)p->seq);
            pending_fail(c, i, CLAWQ_ETIMEOUT, msg);
        } else {
            i++;
        }
    }
    if (sent)
        conn_suspect(c);
}

/* Completes with err the unsent tickets (all, or those past their
 * deadline): no connection could be made for them. */
static void tickets_fail_unsent(clawq_client *c, int err, bool all,
                                uint64_t now)
{
    for (size_t i = 0; i < c->n_pend;) {
        pending *p = &c->pend[i];

        if (p->op != 0 && p->req_id == 0 && (all || p->deadline <= now))
            pending_fail(c, i, err, c->errmsg[0] != '\0' ? c->errmsg : NULL);
        else
            i++;
    }
}

/* Hands the done entry k to *res and forgets it. */
static void done_take(clawq_client *c, size_t k, clawq_result *res)
{
    done_entry *d = &c->done[k];

    *res = d->r;
    c->errmsg[0] = '\0';
    if (d->msg != NULL)
        set_err(c, d->r.status, "%s", d->msg);
    c->retry_after_ms = d->retry_after_ms;
    free(d->msg);
    memmove(&c->done[k], &c->done[k + 1], (c->n_done - k - 1) * sizeof(*d));
    c->n_done--;
    c->n_tickets--;
}

int clawq_wait(clawq_client *c, clawq_ticket ticket, int timeout_ms,
               clawq_result *res)
{
    uint64_t until;
    bool stepped = false;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    if (res == NULL)
        return set_err(c, CLAWQ_EINVALID, "res is NULL");
    until = timeout_ms < 0 ? UINT64_MAX : now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now = now_ms(), step = UINT64_MAX;
        bool pending_found = false, unsent = false;
        int rc;

        tickets_expire(c, now);
        for (size_t k = 0; k < c->n_done; k++) {
            if (ticket == 0 || c->done[k].r.ticket == ticket) {
                done_take(c, k, res);
                return 0;
            }
        }
        for (size_t i = 0; i < c->n_pend; i++) {
            const pending *p = &c->pend[i];

            if (p->op == 0)
                continue;
            unsent = unsent || p->req_id == 0;
            if (ticket == 0 || p->seq == ticket) {
                pending_found = true;
                if (p->deadline < step)
                    step = p->deadline;
            }
        }
        if (!pending_found)
            return ticket == 0
                       ? set_err(c, CLAWQ_ENOT_FOUND, "no ticket outstanding")
                       : set_err(c, CLAWQ_ENOT_FOUND,
                                 "ticket %llu unknown or already collected",
                                 (unsigned long long)ticket);
        if (stepped && now >= until)
            return set_err(c, CLAWQ_ETIMEOUT, "no answer within %d ms",
                           timeout_ms);
        if (step > until)
            step = until;
        stepped = true;
        if (c->fd < 0 || unsent || c->redirect_pending) {
            rc = conn_ensure(c, step);
            if (rc < 0) {
                bool fatal = rc != CLAWQ_ECONN_LOST && rc != CLAWQ_ETIMEOUT;

                tickets_fail_unsent(c, rc, fatal, now_ms());
                continue;
            }
        }
        io_step(c, step);
    }
}

int clawq_poll(clawq_client *c, clawq_result *res)
{
    return clawq_wait(c, 0, 0, res);
}

void clawq_result_free(clawq_result *res)
{
    if (res == NULL)
        return;
    free(res->puts);
    free(res->statuses);
    clawq_tasks_free(res->tasks);
    res->puts = NULL;
    res->statuses = NULL;
    res->tasks = NULL;
}

/* ---- consume ---- */

static int tasks_out(clawq_client *c, Clawq__Response *r, clawq_task **tasks,
                     size_t *n)
{
    int err;
    clawq_task *t = clawq__tasks_copy(r->tasks->tasks, r->tasks->n_tasks, &err);

    if (err < 0)
        return set_err(c, err, "out of memory");
    *tasks = t;
    *n = r->tasks->n_tasks;
    return 0;
}

int clawq_pull(clawq_client *c, const char *queue, uint32_t max,
               uint32_t wait_ms, uint32_t lease_ms, clawq_task **tasks,
               size_t *n)
{
    Clawq__PullRequest req = CLAWQ__PULL_REQUEST__INIT;
    Clawq__Response *r;
    int rc;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    rc = check_queue(c, queue);
    if (rc < 0)
        return rc;
    if (tasks == NULL || n == NULL || max == 0 || max > CLAWQ_MAX_BATCH_TASKS)
        return set_err(c, CLAWQ_EINVALID, "pull max must be 1..%d",
                       CLAWQ_MAX_BATCH_TASKS);
    req.queue = unconst(queue);
    req.has_max = true;
    req.max = max;
    req.has_wait_ms = wait_ms > 0;
    req.wait_ms = wait_ms;
    req.has_lease_ms = lease_ms > 0;
    req.lease_ms = lease_ms;
    req.worker = c->client_name;
    rc = call(c, CLAWQ__REQUEST__BODY_PULL, &req.base, false, wait_ms,
              CLAWQ__RESPONSE__BODY_TASKS, &r);
    if (rc < 0)
        return rc;
    rc = tasks_out(c, r, tasks, n);
    clawq__response__free_unpacked(r, NULL);
    return rc;
}

int clawq_ack_batch(clawq_client *c, const clawq_lease_ref *refs, size_t n,
                    int *statuses)
{
    Clawq__AckRequest req = CLAWQ__ACK_REQUEST__INIT;
    Clawq__LeaseRef *lr = NULL, **lrp = NULL;
    Clawq__Response *r = NULL;
    int rc, failed = 0;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    if (refs == NULL || n == 0 || n > CLAWQ_MAX_BATCH_TASKS)
        return set_err(c, CLAWQ_EINVALID, "an ack batch holds 1..%d tasks",
                       CLAWQ_MAX_BATCH_TASKS);
    rc = ack_request_fill(c, refs, n, &req, &lr, &lrp);
    if (rc < 0)
        goto out;
    rc = call(c, CLAWQ__REQUEST__BODY_ACK, &req.base, false, 0,
              CLAWQ__RESPONSE__BODY_ACK, &r);
    if (rc < 0)
        goto out;
    if (r->ack->n_results != n) {
        rc = set_err(c, CLAWQ_EPROTOCOL, "ack answered %zu results for %zu",
                     r->ack->n_results, n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const Clawq__ItemResult *it = r->ack->results[i];
        int st = it->has_status ? status_to_err((int)it->status) : 0;

        if (statuses != NULL)
            statuses[i] = st;
        if (st != 0 && failed++ == 0) {
            set_err(c, st, "task %llu: %s", (unsigned long long)refs[i].id,
                    it->message != NULL && it->message[0] != '\0'
                        ? it->message
                        : clawq_strerror(st));
        }
    }
    rc = failed;
out:
    if (r != NULL)
        clawq__response__free_unpacked(r, NULL);
    free(lr);
    free(lrp);
    return rc;
}

int clawq_ack(clawq_client *c, uint64_t id, uint64_t lease_id)
{
    clawq_lease_ref ref = {id, lease_id};
    int st = 0;
    int rc = clawq_ack_batch(c, &ref, 1, &st);

    return rc > 0 ? st : rc;
}

/* Sends a request whose answer carries no body and frees the reply. */
static int call_simple(clawq_client *c, uint32_t field,
                       const ProtobufCMessage *m, bool retry_safe)
{
    Clawq__Response *r;
    int rc =
        call(c, field, m, retry_safe, 0, CLAWQ__RESPONSE__BODY__NOT_SET, &r);

    if (rc == 0)
        clawq__response__free_unpacked(r, NULL);
    return rc;
}

int clawq_nack(clawq_client *c, uint64_t id, uint64_t lease_id,
               int64_t delay_ms, const char *error)
{
    Clawq__NackRequest req = CLAWQ__NACK_REQUEST__INIT;
    Clawq__LeaseRef ref = CLAWQ__LEASE_REF__INIT;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    ref.id = id;
    ref.lease_id = lease_id;
    req.task = &ref;
    req.has_delay_ms = true;
    req.delay_ms = delay_ms < 0 ? -1 : delay_ms;
    req.error = unconst(error);
    return call_simple(c, CLAWQ__REQUEST__BODY_NACK, &req.base, false);
}

int clawq_fail(clawq_client *c, uint64_t id, uint64_t lease_id,
               const char *error)
{
    Clawq__FailRequest req = CLAWQ__FAIL_REQUEST__INIT;
    Clawq__LeaseRef ref = CLAWQ__LEASE_REF__INIT;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    ref.id = id;
    ref.lease_id = lease_id;
    req.task = &ref;
    req.error = unconst(error);
    return call_simple(c, CLAWQ__REQUEST__BODY_FAIL, &req.base, false);
}

int clawq_extend(clawq_client *c, uint64_t id, uint64_t lease_id,
                 uint32_t lease_ms, uint64_t progress, const void *checkpoint,
                 size_t checkpoint_len, uint64_t *expires_ms)
{
    Clawq__ExtendRequest req = CLAWQ__EXTEND_REQUEST__INIT;
    Clawq__LeaseRef ref = CLAWQ__LEASE_REF__INIT;
    Clawq__Response *r;
    int rc;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    ref.id = id;
    ref.lease_id = lease_id;
    req.task = &ref;
    req.has_lease_ms = lease_ms > 0;
    req.lease_ms = lease_ms;
    req.has_progress = true;
    req.progress = progress;
    if (checkpoint != NULL) {
        req.has_checkpoint = true;
        req.checkpoint.data = unconst_bytes(checkpoint);
        req.checkpoint.len = checkpoint_len;
    }
    rc = call(c, CLAWQ__REQUEST__BODY_EXTEND, &req.base, false, 0,
              CLAWQ__RESPONSE__BODY_EXTEND, &r);
    if (rc < 0)
        return rc;
    if (expires_ms != NULL)
        *expires_ms = r->extend->lease_expires_ms;
    clawq__response__free_unpacked(r, NULL);
    return 0;
}

int clawq_report(clawq_client *c, const char *queue, uint32_t inflight,
                 uint32_t capacity)
{
    Clawq__ReportRequest req = CLAWQ__REPORT_REQUEST__INIT;
    int rc;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    rc = check_queue(c, queue);
    if (rc < 0)
        return rc;
    req.queue = unconst(queue);
    req.has_inflight = true;
    req.inflight = inflight;
    req.has_capacity = true;
    req.capacity = capacity;
    return call_simple(c, CLAWQ__REQUEST__BODY_REPORT, &req.base, true);
}

/* ---- queues ---- */

int clawq_queue_stats_get(clawq_client *c, const char *queue,
                          clawq_queue_stats *stats)
{
    Clawq__StatsRequest req = CLAWQ__STATS_REQUEST__INIT;
    Clawq__Response *r;
    int rc;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    rc = check_queue(c, queue);
    if (rc < 0)
        return rc;
    if (stats == NULL)
        return set_err(c, CLAWQ_EINVALID, "stats is NULL");
    req.queue = unconst(queue);
    rc = call(c, CLAWQ__REQUEST__BODY_STATS, &req.base, true, 0,
              CLAWQ__RESPONSE__BODY_STATS, &r);
    if (rc < 0)
        return rc;
    if (r->stats->stats == NULL) {
        clawq__response__free_unpacked(r, NULL);
        return set_err(c, CLAWQ_EPROTOCOL, "stats answer without stats");
    }
    clawq__queue_stats_copy(r->stats->stats, stats);
    stats->node_id = r->stats->node_id;
    clawq__response__free_unpacked(r, NULL);
    return 0;
}

int clawq_workers(clawq_client *c, const char *queue, clawq_worker **workers,
                  size_t *n)
{
    Clawq__WorkersRequest req = CLAWQ__WORKERS_REQUEST__INIT;
    Clawq__Response *r;
    clawq_worker *out = NULL;
    size_t i, count;
    int rc;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    rc = check_queue(c, queue);
    if (rc < 0)
        return rc;
    if (workers == NULL || n == NULL)
        return set_err(c, CLAWQ_EINVALID, "workers or n is NULL");
    req.queue = unconst(queue);
    rc = call(c, CLAWQ__REQUEST__BODY_WORKERS, &req.base, true, 0,
              CLAWQ__RESPONSE__BODY_WORKERS, &r);
    if (rc < 0)
        return rc;
    count = r->workers->n_workers;
    if (count > 0) {
        out = calloc(count, sizeof(*out));
        if (out == NULL) {
            clawq__response__free_unpacked(r, NULL);
            return set_err(c, CLAWQ_ENOMEM, "out of memory");
        }
    }
    for (i = 0; i < count; i++) {
        const Clawq__Worker *w = r->workers->workers[i];
        out[i].conn_id = w->conn_id;
        snprintf(out[i].name, sizeof(out[i].name), "%s",
                 w->name != NULL ? w->name : "");
        out[i].capacity = w->capacity;
        out[i].inflight = w->inflight;
        out[i].last_report_age_ms = w->last_report_age_ms;
    }
    clawq__response__free_unpacked(r, NULL);
    *workers = out;
    *n = count;
    return 0;
}

void clawq_workers_free(clawq_worker *workers)
{
    free(workers);
}

/* ---- cluster administration ---- */

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src != NULL ? src : "");
}

static void cluster_copy(const Clawq__ClusterStatusResponse *m,
                         clawq_cluster_status *out)
{
    size_t i;

    memset(out, 0, sizeof(*out));
    out->node_id = m->node_id;
    copy_str(out->role, sizeof(out->role), m->role);
    out->leader_id = m->leader_id;
    copy_str(out->leader, sizeof(out->leader), m->leader);
    out->term = m->term;
    out->commit_index = m->commit_index;
    out->applied_index = m->applied_index;
    out->last_index = m->last_index;
    out->leader_view = m->has_leader_view && m->leader_view;
    out->has_digest = m->has_digest;
    out->digest = m->digest;
    out->digest_index = m->digest_index;
    for (i = 0; i < m->n_members && i < CLAWQ_MAX_MEMBERS; i++) {
        const Clawq__ClusterMember *src = m->members[i];
        clawq_cluster_member *dst = &out->members[i];

        dst->id = src->id;
        copy_str(dst->raft_addr, sizeof(dst->raft_addr), src->raft_addr);
        copy_str(dst->client_addr, sizeof(dst->client_addr), src->client_addr);
        copy_str(dst->role, sizeof(dst->role), src->role);
        dst->match_index = src->match_index;
        dst->lag = src->lag;
    }
    out->n_members = i;
}

/* One cluster request answered with a ClusterStatusResponse. */
static int cluster_call(clawq_client *c, uint32_t field,
                        const ProtobufCMessage *m, bool retry_safe,
                        clawq_cluster_status *out)
{
    Clawq__Response *r;
    int rc =
        call(c, field, m, retry_safe, 0, CLAWQ__RESPONSE__BODY_CLUSTER, &r);

    if (rc < 0)
        return rc;
    if (out != NULL)
        cluster_copy(r->cluster, out);
    clawq__response__free_unpacked(r, NULL);
    return 0;
}

int clawq_cluster_status_get(clawq_client *c, unsigned flags,
                             clawq_cluster_status *out)
{
    Clawq__ClusterStatusRequest req = CLAWQ__CLUSTER_STATUS_REQUEST__INIT;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    if (out == NULL || (flags & ~CLAWQ_CLUSTER_DIGEST) != 0)
        return set_err(c, CLAWQ_EINVALID, "out is NULL or flags unknown");
    req.has_digest = 1;
    req.digest = (flags & CLAWQ_CLUSTER_DIGEST) != 0;
    return cluster_call(c, CLAWQ__REQUEST__BODY_CLUSTER_STATUS, &req.base, true,
                        out);
}

static bool addr_arg_ok(const char *a)
{
    clawq__endpoint ep;

    return a != NULL && a[0] != '\0' && strlen(a) <= CLAWQ_MAX_ADDR &&
           clawq__endpoint_parse(a, strlen(a), 0, &ep) == 0;
}

static int cluster_add(clawq_client *c, uint32_t id, const char *raft_addr,
                       const char *client_addr, bool register_only,
                       clawq_cluster_status *out)
{
    Clawq__ClusterAddRequest req = CLAWQ__CLUSTER_ADD_REQUEST__INIT;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    if (id == 0 || !addr_arg_ok(raft_addr) || !addr_arg_ok(client_addr))
        return set_err(c, CLAWQ_EINVALID,
                       "id must be > 0 and the addresses HOST:PORT");
    req.id = id;
    req.raft_addr = unconst(raft_addr);
    req.client_addr = unconst(client_addr);
    req.has_register_only = register_only;
    req.register_only = register_only;
    /* Idempotent on the broker: safe to send again. */
    return cluster_call(c, CLAWQ__REQUEST__BODY_CLUSTER_ADD, &req.base, true,
                        out);
}

int clawq_cluster_add(clawq_client *c, uint32_t id, const char *raft_addr,
                      const char *client_addr, clawq_cluster_status *out)
{
    return cluster_add(c, id, raft_addr, client_addr, false, out);
}

int clawq_cluster_register(clawq_client *c, uint32_t id, const char *raft_addr,
                           const char *client_addr)
{
    return cluster_add(c, id, raft_addr, client_addr, true, NULL);
}

int clawq_cluster_remove(clawq_client *c, uint32_t id,
                         clawq_cluster_status *out)
{
    Clawq__ClusterRemoveRequest req = CLAWQ__CLUSTER_REMOVE_REQUEST__INIT;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    if (id == 0)
        return set_err(c, CLAWQ_EINVALID, "id must be > 0");
    req.id = id;
    return cluster_call(c, CLAWQ__REQUEST__BODY_CLUSTER_REMOVE, &req.base,
                        false, out);
}

int clawq_cluster_transfer(clawq_client *c, uint32_t id,
                           clawq_cluster_status *out)
{
    Clawq__ClusterTransferRequest req = CLAWQ__CLUSTER_TRANSFER_REQUEST__INIT;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    req.has_id = id != 0;
    req.id = id;
    return cluster_call(c, CLAWQ__REQUEST__BODY_CLUSTER_TRANSFER, &req.base,
                        false, out);
}

int clawq_queues(clawq_client *c, clawq_queue_stats **queues, size_t *n)
{
    Clawq__QueuesRequest req = CLAWQ__QUEUES_REQUEST__INIT;
    Clawq__Response *r;
    clawq_queue_stats *qs = NULL;
    size_t count;
    int rc;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    if (queues == NULL || n == NULL)
        return set_err(c, CLAWQ_EINVALID, "queues and n are required");
    rc = call(c, CLAWQ__REQUEST__BODY_QUEUES, &req.base, true, 0,
              CLAWQ__RESPONSE__BODY_QUEUES, &r);
    if (rc < 0)
        return rc;
    count = r->queues->n_queues;
    if (count > 0) {
        qs = calloc(count, sizeof(*qs));
        if (qs == NULL) {
            clawq__response__free_unpacked(r, NULL);
            return set_err(c, CLAWQ_ENOMEM, "out of memory");
        }
        for (size_t i = 0; i < count; i++) {
            clawq__queue_stats_copy(r->queues->queues[i], &qs[i]);
            qs[i].node_id = r->queues->node_id;
        }
    }
    clawq__response__free_unpacked(r, NULL);
    *queues = qs;
    *n = count;
    return 0;
}

int clawq_queue_set(clawq_client *c, const char *queue,
                    const clawq_queue_settings *settings)
{
    Clawq__QueueSetRequest req = CLAWQ__QUEUE_SET_REQUEST__INIT;
    Clawq__QueueSettings qs = CLAWQ__QUEUE_SETTINGS__INIT;
    int rc;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    rc = check_queue(c, queue);
    if (rc < 0)
        return rc;
    if (settings == NULL || (settings->mask & 0x7fu) == 0)
        return set_err(c, CLAWQ_EINVALID, "no setting to change");
#define SET_FIELD(field, bit)                                                  \
    if (settings->mask & (bit)) {                                              \
        qs.has_##field = true;                                                 \
        qs.field = settings->field;                                            \
    }
    SET_FIELD(lease_ms, CLAWQ_SET_LEASE_MS)
    SET_FIELD(max_attempts, CLAWQ_SET_MAX_ATTEMPTS)
    SET_FIELD(backoff_base_ms, CLAWQ_SET_BACKOFF_BASE_MS)
    SET_FIELD(backoff_max_ms, CLAWQ_SET_BACKOFF_MAX_MS)
    SET_FIELD(max_depth, CLAWQ_SET_MAX_DEPTH)
    SET_FIELD(max_payload, CLAWQ_SET_MAX_PAYLOAD)
    SET_FIELD(dedup_window_ms, CLAWQ_SET_DEDUP_WINDOW_MS)
#undef SET_FIELD
    req.queue = unconst(queue);
    req.settings = &qs;
    return call_simple(c, CLAWQ__REQUEST__BODY_QUEUE_SET, &req.base, true);
}

static int queue_call(clawq_client *c, uint32_t field, const char *queue,
                      bool retry_safe, uint64_t *count)
{
    Clawq__QueueRequest req = CLAWQ__QUEUE_REQUEST__INIT;
    Clawq__Response *r;
    int rc;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    rc = check_queue(c, queue);
    if (rc < 0)
        return rc;
    req.queue = unconst(queue);
    rc = call(c, field, &req.base, retry_safe, 0,
              CLAWQ__RESPONSE__BODY__NOT_SET, &r);
    if (rc < 0)
        return rc;
    if (count != NULL)
        *count =
            r->body_case == CLAWQ__RESPONSE__BODY_COUNT ? r->count->count : 0;
    clawq__response__free_unpacked(r, NULL);
    return 0;
}

int clawq_pause(clawq_client *c, const char *queue)
{
    return queue_call(c, CLAWQ__REQUEST__BODY_PAUSE, queue, true, NULL);
}

int clawq_resume(clawq_client *c, const char *queue)
{
    return queue_call(c, CLAWQ__REQUEST__BODY_RESUME, queue, true, NULL);
}

int clawq_purge(clawq_client *c, const char *queue, uint64_t *count)
{
    return queue_call(c, CLAWQ__REQUEST__BODY_PURGE, queue, false, count);
}

int clawq_peek(clawq_client *c, const char *queue, clawq_task_state state,
               uint32_t max, clawq_task **tasks, size_t *n)
{
    Clawq__PeekRequest req = CLAWQ__PEEK_REQUEST__INIT;
    Clawq__Response *r;
    int rc;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    rc = check_queue(c, queue);
    if (rc < 0)
        return rc;
    if (tasks == NULL || n == NULL || max > 1000 || state < CLAWQ_STATE_READY ||
        state > CLAWQ_STATE_DEAD)
        return set_err(c, CLAWQ_EINVALID, "peek wants a state and max 1..1000");
    req.queue = unconst(queue);
    req.has_state = true;
    req.state = (Clawq__TaskState)state;
    req.has_max = true;
    req.max = max != 0 ? max : 10;
    rc = call(c, CLAWQ__REQUEST__BODY_PEEK, &req.base, true, 0,
              CLAWQ__RESPONSE__BODY_TASKS, &r);
    if (rc < 0)
        return rc;
    rc = tasks_out(c, r, tasks, n);
    clawq__response__free_unpacked(r, NULL);
    return rc;
}

int clawq_task_get(clawq_client *c, uint64_t id, clawq_task **task)
{
    Clawq__TaskGetRequest req = CLAWQ__TASK_GET_REQUEST__INIT;
    Clawq__Response *r;
    size_t n;
    int rc;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    if (task == NULL)
        return set_err(c, CLAWQ_EINVALID, "task is NULL");
    req.id = id;
    rc = call(c, CLAWQ__REQUEST__BODY_TASK_GET, &req.base, true, 0,
              CLAWQ__RESPONSE__BODY_TASKS, &r);
    if (rc < 0)
        return rc;
    if (r->tasks->n_tasks == 0) {
        clawq__response__free_unpacked(r, NULL);
        return set_err(c, CLAWQ_ENOT_FOUND, "task %llu not found",
                       (unsigned long long)id);
    }
    if (r->tasks->n_tasks > 1)
        r->tasks->n_tasks = 1;
    rc = tasks_out(c, r, task, &n);
    clawq__response__free_unpacked(r, NULL);
    return rc;
}

/* ---- dead-letter queue ---- */

static int dlq_filter_build(clawq_client *c, const char *queue,
                            const clawq_dlq_filter *f, Clawq__DlqFilter *out)
{
    Clawq__DlqFilter init = CLAWQ__DLQ_FILTER__INIT;
    int rc = check_queue(c, queue);

    if (rc < 0)
        return rc;
    *out = init;
    out->queue = unconst(queue);
    if (f == NULL)
        return 0;
    if (f->to_ms != 0 && f->to_ms <= f->from_ms)
        return set_err(c, CLAWQ_EINVALID, "dlq filter: to_ms <= from_ms");
    if (f->error_contains != NULL && f->error_contains[0] != '\0')
        out->error_contains = unconst(f->error_contains);
    out->has_from_ms = f->from_ms != 0;
    out->from_ms = f->from_ms;
    out->has_to_ms = f->to_ms != 0;
    out->to_ms = f->to_ms;
    out->has_max = f->max != 0;
    out->max = f->max;
    return 0;
}

int clawq_dlq_list(clawq_client *c, const char *queue,
                   const clawq_dlq_filter *filter, uint64_t after_ms,
                   uint64_t after_id, clawq_task **tasks, size_t *n)
{
    Clawq__DlqListRequest req = CLAWQ__DLQ_LIST_REQUEST__INIT;
    Clawq__DlqFilter f;
    Clawq__Response *r;
    int rc;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    if (tasks == NULL || n == NULL)
        return set_err(c, CLAWQ_EINVALID, "tasks and n are required");
    if (filter != NULL && filter->max > 1000)
        return set_err(c, CLAWQ_EINVALID, "dlq list max is 1000");
    rc = dlq_filter_build(c, queue, filter, &f);
    if (rc < 0)
        return rc;
    req.filter = &f;
    req.has_after_ms = after_ms != 0 || after_id != 0;
    req.after_ms = after_ms;
    req.has_after_id = after_id != 0;
    req.after_id = after_id;
    rc = call(c, CLAWQ__REQUEST__BODY_DLQ_LIST, &req.base, true, 0,
              CLAWQ__RESPONSE__BODY_TASKS, &r);
    if (rc < 0)
        return rc;
    rc = tasks_out(c, r, tasks, n);
    clawq__response__free_unpacked(r, NULL);
    return rc;
}

static int dlq_count_call(clawq_client *c, uint32_t field, const char *queue,
                          const clawq_dlq_filter *filter, uint64_t *count)
{
    Clawq__DlqFilter f;
    Clawq__Response *r;
    int rc;

    if (c == NULL)
        return CLAWQ_EINVALID;
    err_reset(c);
    rc = dlq_filter_build(c, queue, filter, &f);
    if (rc < 0)
        return rc;
    rc = call(c, field, &f.base, false, 0, CLAWQ__RESPONSE__BODY__NOT_SET, &r);
    if (rc < 0)
        return rc;
    if (count != NULL)
        *count =
            r->body_case == CLAWQ__RESPONSE__BODY_COUNT ? r->count->count : 0;
    clawq__response__free_unpacked(r, NULL);
    return 0;
}

int clawq_dlq_replay(clawq_client *c, const char *queue,
                     const clawq_dlq_filter *filter, uint64_t *count)
{
    return dlq_count_call(c, CLAWQ__REQUEST__BODY_DLQ_REPLAY, queue, filter,
                          count);
}

int clawq_dlq_purge(clawq_client *c, const char *queue,
                    const clawq_dlq_filter *filter, uint64_t *count)
{
    return dlq_count_call(c, CLAWQ__REQUEST__BODY_DLQ_PURGE, queue, filter,
                          count);
}
