/* http.c: the HTTP/1.1 endpoint. See http.h.
 *
 * One request at a time per connection: the parser (http-parser, driven
 * by callbacks) is paused when a request is complete, the answer is built
 * in memory and written, and only once that write is done does the
 * connection read and parse again. So a client that pipelines requests
 * gets its answers in order, and an open connection holds at most one
 * request head (HEAD_MAX) and one answer (BODY_MAX) in memory.
 *
 * Every answer is computed from memory (metrics, sessions, Raft state) and
 * from one LMDB read transaction (fsm_queue_list): no step waits.
 *
 * Closing: after an answer that ends the connection (Connection: close,
 * HTTP/1.0, an error), the connection shuts its write side down and keeps
 * reading and discarding for up to LINGER_MS (LINGER_MAX bytes) before it
 * closes. Closing a socket that still has unread input sends a reset,
 * which can make the client lose the answer it was sent (a 431 to a
 * client still sending its oversized head, say).
 */
#include "http.h"

#include <errno.h>
#include <http_parser.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "fsm.h"
#include "aioreap.h"
#include "log.h"
#include "logzero.h"
#include "net.h"
#include "util.h"

#define HTTP_MAX_CONNECTIONS 256
#define HEAD_MAX (8 * 1024)      /* request line + headers, bytes */
#define URL_MAX 2048             /* request target, bytes */
#define IN_MAX (16 * 1024)       /* read buffer per connection */
#define BODY_MAX (64u << 20)     /* one answer's body */
#define HEAD_TIMEOUT_MS 10000    /* first byte of a request to its end */
#define IDLE_TIMEOUT_MS 60000    /* between requests on a kept-alive conn */
#define LINGER_MS 2000           /* reading after our FIN, before close */
#define LINGER_MAX (1024 * 1024) /* bytes discarded while lingering */
#define READY_MAX_LAG 64         /* applied may trail commit by this much */

#define CT_TEXT "text/plain; charset=utf-8"
#define CT_PROM "text/plain; version=0.0.4; charset=utf-8"
#define CT_JSON "application/json"

typedef struct http_conn http_conn;

struct http_srv {
    uv_tcp_t tcp;
    server *srv;
    http_conn *conns; /* every open connection */
    size_t n_conns;
    uint64_t next_id;
    bool closing;         /* http_close was called */
    bool listener_closed; /* its close callback ran */
};

struct http_conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* head, idle or linger deadline */
    uv_shutdown_t shutdown_req;
    http_srv *h;
    http_conn *prev, *next;
    uint64_t id;
    int open_handles; /* tcp and timer until both are closed */
    http_parser parser;

    /* The request being parsed. */
    char url[URL_MAX + 1];
    size_t url_len;
    int reject;      /* a status decided by a callback, or 0 */
    bool in_request; /* between on_message_begin and its completion */
    bool complete;   /* on_message_complete ran: answer it */
    bool keep_alive; /* the complete request's */
    unsigned method;
    unsigned short http_minor;

    /* Input not parsed yet (what follows a request paused on). */
    char in[IN_MAX];
    size_t in_len;

    bool writing;   /* an answer's write is outstanding */
    bool reading;   /* uv_read_start is in effect */
    bool eof;       /* the client sent FIN */
    bool lingering; /* our FIN is out: discard input until EOF */
    bool closing;   /* uv_close was called */
    size_t lingered;
};

/* An answer in flight: head and body, freed by the write callback. */
typedef struct http_write {
    uv_write_t req;
    http_conn *c;
    cq_buf body;
    char head[512];
} http_write;

/* ---- small helpers ---- */

/* A body being built: appends stop at the first failure, which is kept. */
typedef struct obuf {
    cq_buf b;
    int err;
} obuf;

static void out_init(obuf *o)
{
    cq_buf_init(&o->b, BODY_MAX);
    o->err = 0;
}

static void out_mem(obuf *o, const void *p, size_t n)
{
    if (o->err == 0)
        o->err = cq_buf_append(&o->b, p, n);
}

static void out_str(obuf *o, const char *s)
{
    out_mem(o, s, strlen(s));
}

static void out_printf(obuf *o, const char *fmt, ...) LOG_PRINTF(2, 3);
static void out_printf(obuf *o, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    int n;

    if (o->err != 0)
        return;
    va_start(ap, fmt);
    n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        o->err = CLAWQ_EINVALID;
        return;
    }
    if ((size_t)n < sizeof(small)) {
        out_mem(o, small, (size_t)n);
        return;
    }
    o->err = cq_buf_reserve(&o->b, (size_t)n + 1);
    if (o->err != 0)
        return;
    va_start(ap, fmt);
    vsnprintf((char *)o->b.ptr + o->b.len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    o->b.len += (size_t)n;
}

/* A double in Go ParseFloat syntax, shortest of %.15g / %.17g that reads
 * back exactly. */
static void out_double(obuf *o, double v)
{
    char buf[64];

    snprintf(buf, sizeof(buf), "%.15g", v);
    if (strtod(buf, NULL) != v)
        snprintf(buf, sizeof(buf), "%.17g", v);
    out_str(o, buf);
}

/* A Prometheus label value: \ " and newline escaped. */
static void out_label(obuf *o, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\')
            out_str(o, "\\\\");
        else if (*s == '"')
            out_str(o, "\\\"");
        else if (*s == '\n')
            out_str(o, "\\n");
        else
            out_mem(o, s, 1);
    }
}

/* A JSON string, quotes included: ", \ and control characters escaped;
 * other bytes as they are (queue names are ASCII). */
static void out_json_str(obuf *o, const char *s)
{
    out_str(o, "\"");
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"')
            out_str(o, "\\\"");
        else if (ch == '\\')
            out_str(o, "\\\\");
        else if (ch == '\n')
            out_str(o, "\\n");
        else if (ch == '\r')
            out_str(o, "\\r");
        else if (ch == '\t')
            out_str(o, "\\t");
        else if (ch < 0x20 || ch == 0x7f)
            out_printf(o, "\\u%04x", ch);
        else
            out_mem(o, s, 1);
    }
    out_str(o, "\"");
}

static const char *status_text(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

/* ---- connection lifetime ---- */

static void srv_maybe_free(http_srv *h)
{
    if (h->closing && h->listener_closed && h->n_conns == 0) {
        LOG(LOG_INFO, "http.closed", "%s", "");
        free(h);
    }
}

static void on_conn_handle_closed(uv_handle_t *handle)
{
    http_conn *c = handle->data;
    http_srv *h = c->h;

    if (--c->open_handles > 0)
        return;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    h->n_conns--;
    free(c);
    srv_maybe_free(h);
}

static void conn_close(http_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    LOG(LOG_DEBUG, "http.close", "conn=%" PRIu64, c->id);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

static void on_timer(uv_timer_t *t)
{
    http_conn *c = t->data;

    if (!c->lingering)
        LOG(LOG_DEBUG, "http.timeout", "conn=%" PRIu64 " in_request=%d", c->id,
            c->in_request);
    conn_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    http_conn *c = req->data;

    if (status != 0 && status != UV_ECANCELED)
        conn_close(c);
}

static void conn_update_reading(http_conn *c);

/* Ends the connection once the last answer is written: FIN, then read
 * and discard until the client closes too (bounded in time and bytes). */
static void conn_linger(http_conn *c)
{
    if (c->closing || c->lingering)
        return;
    c->lingering = true;
    if (c->eof) {
        conn_close(c);
        return;
    }
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) !=
        0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timer, LINGER_MS, 0);
    conn_update_reading(c);
}

/* ---- parser callbacks ---- */

static int on_message_begin(http_parser *p)
{
    http_conn *c = p->data;

    c->url_len = 0;
    c->reject = 0;
    c->in_request = true;
    c->complete = false;
    uv_timer_start(&c->timer, on_timer, HEAD_TIMEOUT_MS, 0);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    http_conn *c = p->data;

    if (len > URL_MAX - c->url_len) {
        c->reject = 414;
        return -1;
    }
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    c->url[c->url_len] = '\0';
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    http_conn *c = p->data;
    bool get = p->method == HTTP_GET || p->method == HTTP_HEAD;
    bool body = (p->flags & F_CHUNKED) != 0 ||
                (p->content_length > 0 && p->content_length != ULLONG_MAX);

    /* No request has a body; one with a body is answered and the
     * connection closed, as its body is not read. */
    if (body) {
        c->reject = get ? 413 : 405;
        return -1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    http_conn *c = p->data;

    (void)at;
    (void)len;
    c->reject = 413;
    return -1;
}

static int on_message_complete(http_parser *p)
{
    http_conn *c = p->data;

    c->in_request = false;
    c->complete = true;
    c->keep_alive = http_should_keep_alive(p) && !p->upgrade;
    c->method = p->method;
    c->http_minor = p->http_minor;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- writing answers ---- */

static void conn_process(http_conn *c);

static void on_written(uv_write_t *req, int status)
{
    http_write *w = req->data;
    http_conn *c = w->c;

    cq_buf_fini(&w->body);
    free(w);
    c->writing = false;
    if (c->closing)
        return;
    if (status != 0) {
        LOG(LOG_DEBUG, "http.write_failed", "conn=%" PRIu64 " error=\"%s\"",
            c->id, uv_strerror(status));
        conn_close(c);
        return;
    }
    if (!c->keep_alive) {
        conn_linger(c);
        return;
    }
    uv_timer_start(&c->timer, on_timer, IDLE_TIMEOUT_MS, 0);
    conn_process(c);
}

/* Sends an answer (takes the body). keep_alive false ends the connection
 * after it; head_only leaves the body out (HEAD) but keeps its length. */
static void send_answer(http_conn *c, int status, const char *content_type,
                        obuf *body, bool head_only, const char *extra)
{
    http_write *w = calloc(1, sizeof(*w));
    uv_buf_t bufs[2];
    int n, rc;

    if (w == NULL) {
        cq_buf_fini(&body->b);
        conn_close(c);
        return;
    }
    w->c = c;
    w->body = body->b;
    cq_buf_init(&body->b, 0);
    n = snprintf(w->head, sizeof(w->head),
                 "HTTP/1.1 %d %s\r\n"
                 "Content-Type: %s\r\n"
                 "Content-Length: %zu\r\n"
                 "Cache-Control: no-store\r\n"
                 "%s%s\r\n",
                 status, status_text(status), content_type, w->body.len,
                 extra != NULL ? extra : "",
                 !c->keep_alive       ? "Connection: close\r\n"
                 : c->http_minor == 0 ? "Connection: keep-alive\r\n"
                                      : "");
    CLAWQ_ASSERT(n > 0 && (size_t)n < sizeof(w->head));
    bufs[0] = uv_buf_init(w->head, (unsigned)n);
    bufs[1] = uv_buf_init((char *)w->body.ptr, (unsigned)w->body.len);
    w->req.data = w;
    c->writing = true;
    rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs,
                  head_only || w->body.len == 0 ? 1 : 2, on_written);
    if (rc != 0) {
        c->writing = false;
        cq_buf_fini(&w->body);
        free(w);
        conn_close(c);
    }
}

static void send_text(http_conn *c, int status, const char *text,
                      bool head_only, const char *extra)
{
    obuf o;

    out_init(&o);
    out_str(&o, text);
    send_answer(c, status, CT_TEXT, &o, head_only, extra);
}

static void send_json_error(http_conn *c, int status, const char *code,
                            const char *msg, bool head_only)
{
    obuf o;

    out_init(&o);
    out_str(&o, "{\"error\":");
    out_json_str(&o, code);
    out_str(&o, ",\"message\":");
    out_json_str(&o, msg);
    out_str(&o, "}\n");
    send_answer(c, status, CT_JSON, &o, head_only, NULL);
}

/* ---- /readyz ---- */

static void serve_readyz(http_conn *c, bool head_only)
{
    server *srv = c->h->srv;
    repl_info ri;
    char msg[160];

    repl_get_info(srv->r, &ri);
    if (srv->shutting_down) {
        send_text(c, 503, "not ready: shutting down\n", head_only, NULL);
        return;
    }
    if (repl_is_leader(srv->r)) {
        send_text(c, 200, "ready: leader\n", head_only, NULL);
        return;
    }
    if (ri.leader_id == 0) {
        send_text(c, 503, "not ready: no known leader\n", head_only, NULL);
        return;
    }
    if (ri.commit_index > ri.applied_index &&
        ri.commit_index - ri.applied_index > READY_MAX_LAG) {
        snprintf(msg, sizeof(msg),
                 "not ready: applied index %" PRIu64
                 " trails commit index %" PRIu64 "\n",
                 ri.applied_index, ri.commit_index);
        send_text(c, 503, msg, head_only, NULL);
        return;
    }
    snprintf(msg, sizeof(msg), "ready: follower of node %u\n", ri.leader_id);
    send_text(c, 200, msg, head_only, NULL);
}

/* ---- /metrics ---- */

static void family(obuf *o, const char *name, const char *type,
                   const char *help)
{
    out_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One sample of a per-queue family. */
static void queue_sample(obuf *o, const char *name, const char *queue,
                         const char *fmt, ...) LOG_PRINTF(4, 5);
static void queue_sample(obuf *o, const char *name, const char *queue,
                         const char *fmt, ...)
{
    char val[64];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(val, sizeof(val), fmt, ap);
    va_end(ap);
    out_printf(o, "%s{queue=\"", name);
    out_label(o, queue);
    out_printf(o, "\"} %s\n", val);
}

enum counter_field {
    CF_READY,
    CF_DELAYED,
    CF_LEASED,
    CF_DEAD,
    CF_PUT,
    CF_ACKED,
    CF_NACKED,
    CF_FAILED,
    CF_EXPIRED,
    CF_DEAD_LETTERED,
    CF_DEDUPED,
    CF_DELIVERED
};

static uint64_t counter_get(const queue_counters *n, int f)
{
    switch (f) {
    case CF_READY:
        return n->ready;
    case CF_DELAYED:
        return n->delayed;
    case CF_LEASED:
        return n->leased;
    case CF_DEAD:
        return n->dead;
    case CF_PUT:
        return n->put_total;
    case CF_ACKED:
        return n->acked_total;
    case CF_NACKED:
        return n->nacked_total;
    case CF_FAILED:
        return n->failed_total;
    case CF_EXPIRED:
        return n->expired_total;
    case CF_DEAD_LETTERED:
        return n->dead_total;
    case CF_DEDUPED:
        return n->deduped_total;
    default:
        return n->leased_total;
    }
}

/* The per-queue families taken from the store's counters. */
static const struct {
    const char *name, *type, *help;
    int field;
} counter_families[] = {
    {"clawq_queue_ready_tasks", "gauge", "Tasks ready to be leased.", CF_READY},
    {"clawq_queue_delayed_tasks", "gauge",
     "Tasks waiting for their run time or retry backoff.", CF_DELAYED},
    {"clawq_queue_leased_tasks", "gauge", "Tasks leased to workers.",
     CF_LEASED},
    {"clawq_queue_dead_tasks", "gauge", "Tasks in the dead-letter queue.",
     CF_DEAD},
    {"clawq_queue_put_total", "counter",
     "Tasks stored by put (idempotent duplicates not counted).", CF_PUT},
    {"clawq_queue_acked_total", "counter", "Tasks acknowledged as done.",
     CF_ACKED},
    {"clawq_queue_nacked_total", "counter",
     "Leases returned by nack as failed attempts.", CF_NACKED},
    {"clawq_queue_failed_total", "counter",
     "Tasks failed explicitly (moved to the dead-letter queue).", CF_FAILED},
    {"clawq_queue_expired_total", "counter", "Leases that ran out.",
     CF_EXPIRED},
    {"clawq_queue_dead_lettered_total", "counter",
     "Tasks moved to the dead-letter queue, for any reason.", CF_DEAD_LETTERED},
    {"clawq_queue_deduplicated_total", "counter",
     "Puts answered by an idempotency key without storing a task.", CF_DEDUPED},
    {"clawq_queue_delivered_total", "counter",
     "Deliveries: tasks handed to workers by lease.", CF_DELIVERED},
};

static void histogram_family(obuf *o, const char *name, const char *help,
                             const fsm_queue_stats *qs, size_t n,
                             const metrics *m, bool put_to_ack)
{
    static const metrics_hist zero;
    size_t i, b;

    family(o, name, "histogram", help);
    for (i = 0; i < n; i++) {
        const metrics_queue *mq = metrics_queue_find(m, qs[i].rec.qid);
        const metrics_hist *hh = mq == NULL   ? &zero
                                 : put_to_ack ? &mq->put_to_ack
                                              : &mq->lease_held;
        uint64_t cum = 0;

        for (b = 0; b < METRICS_BUCKETS; b++) {
            cum += hh->counts[b];
            out_printf(o, "%s_bucket{queue=\"", name);
            out_label(o, qs[i].name);
            out_printf(o, "\",le=\"%g\"} %" PRIu64 "\n", metrics_bounds[b],
                       cum);
        }
        out_printf(o, "%s_bucket{queue=\"", name);
        out_label(o, qs[i].name);
        out_printf(o, "\",le=\"+Inf\"} %" PRIu64 "\n", hh->count);
        out_printf(o, "%s_sum{queue=\"", name);
        out_label(o, qs[i].name);
        out_str(o, "\"} ");
        out_double(o, hh->sum);
        out_printf(o, "\n%s_count{queue=\"", name);
        out_label(o, qs[i].name);
        out_printf(o, "\"} %" PRIu64 "\n", hh->count);
    }
}

/* Resident set size from /proc/self/statm, or -1. */
static long long resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "re");
    unsigned long long size, rss;
    long page = sysconf(_SC_PAGESIZE);
    int n;

    if (f == NULL)
        return -1;
    n = fscanf(f, "%llu %llu", &size, &rss);
    fclose(f);
    if (n != 2 || page <= 0)
        return -1;
    return (long long)(rss * (unsigned long long)page);
}

static uint64_t age_ms(uint64_t now_ms, uint64_t since_ms)
{
    return since_ms != 0 && now_ms > since_ms ? now_ms - since_ms : 0;
}

static void serve_metrics(http_conn *c, bool head_only)
{
    server *srv = c->h->srv;
    fsm_queue_stats *qs = NULL;
    size_t n = 0, i, f;
    repl_info ri;
    logzero_stats lz;
    aioreap_stats ar;
    uint64_t now = repl_now_ms(srv->r);
    long long rss;
    obuf o;
    int rc;

    rc = fsm_queue_list(srv->s, &qs, &n);
    if (rc != 0) {
        LOG_RATELIMITED(LOG_WARN, "http.metrics_failed", 10000, "error=\"%s\"",
                        clawq_strerror(rc));
        send_text(c, 500, "cannot read the store\n", head_only, NULL);
        return;
    }
    out_init(&o);

    for (f = 0; f < sizeof(counter_families) / sizeof(counter_families[0]);
         f++) {
        family(&o, counter_families[f].name, counter_families[f].type,
               counter_families[f].help);
        for (i = 0; i < n; i++)
            queue_sample(
                &o, counter_families[f].name, qs[i].name, "%" PRIu64,
                counter_get(&qs[i].rec.counters, counter_families[f].field));
    }
    family(&o, "clawq_queue_oldest_ready_age_seconds", "gauge",
           "Age of the oldest ready task (0 when none is ready).");
    for (i = 0; i < n; i++)
        queue_sample(&o, "clawq_queue_oldest_ready_age_seconds", qs[i].name,
                     "%.3f",
                     (double)age_ms(now, qs[i].rec.oldest_ready_ms) / 1000.0);
    family(&o, "clawq_queue_paused", "gauge",
           "1 while the queue is paused (leases nothing), else 0.");
    for (i = 0; i < n; i++)
        queue_sample(&o, "clawq_queue_paused", qs[i].name, "%d",
                     qs[i].rec.settings.paused ? 1 : 0);

    {
        static const char *const names[4] = {
            "clawq_queue_workers", "clawq_queue_worker_capacity_tasks",
            "clawq_queue_worker_median_capacity_tasks",
            "clawq_queue_worker_inflight_tasks"};
        static const char *const helps[4] = {
            "Worker connections with a live load report for the queue.",
            "Tasks the reporting workers can hold at once, summed.",
            "Median capacity among the reporting workers.",
            "Tasks the reporting workers hold, summed."};
        queue_workers *wk = calloc(n + 1, sizeof(*wk));

        if (wk == NULL) {
            o.err = CLAWQ_ENOMEM;
        } else {
            for (i = 0; i < n; i++)
                sess_workers_summary(srv, &qs[i], &wk[i]);
            for (f = 0; f < 4; f++) {
                family(&o, names[f], "gauge", helps[f]);
                for (i = 0; i < n; i++)
                    queue_sample(&o, names[f], qs[i].name, "%" PRIu64,
                                 f == 0   ? (uint64_t)wk[i].workers
                                 : f == 1 ? wk[i].capacity
                                 : f == 2 ? (uint64_t)wk[i].median_capacity
                                          : wk[i].inflight);
            }
        }
        free(wk);
    }

    histogram_family(&o, "clawq_task_put_to_ack_seconds",
                     "Time from put to ack of tasks acked through this node.",
                     qs, n, &srv->metrics, true);
    histogram_family(&o, "clawq_task_lease_held_seconds",
                     "Time from lease to ack, nack or fail, through this "
                     "node.",
                     qs, n, &srv->metrics, false);

    family(&o, "clawq_connections", "gauge", "Open client connections.");
    out_printf(&o, "clawq_connections %zu\n", srv->n_sessions);

    repl_get_info(srv->r, &ri);
    family(&o, "clawq_raft_leader", "gauge",
           "1 while this node is the Raft leader, else 0.");
    out_printf(&o, "clawq_raft_leader %d\n", repl_is_leader(srv->r) ? 1 : 0);
    family(&o, "clawq_raft_term", "gauge", "Current Raft term.");
    out_printf(&o, "clawq_raft_term %" PRIu64 "\n", ri.term);
    family(&o, "clawq_raft_commit_index", "gauge",
           "Highest Raft log index known to be committed.");
    out_printf(&o, "clawq_raft_commit_index %" PRIu64 "\n", ri.commit_index);
    family(&o, "clawq_raft_applied_index", "gauge",
           "Highest Raft log index applied to the store.");
    out_printf(&o, "clawq_raft_applied_index %" PRIu64 "\n", ri.applied_index);
    {
        repl_member_info mi[REPL_MAX_MEMBERS];
        bool view = false;
        size_t nm = repl_members(srv->r, mi, REPL_MAX_MEMBERS, &view), k;
        static const char *const roles[] = {"voter", "standby", "spare"};
        unsigned count[3] = {0, 0, 0};

        for (k = 0; k < nm; k++)
            count[mi[k].role]++;
        family(&o, "clawq_cluster_members", "gauge",
               "Members of the Raft configuration this node knows, by role.");
        for (k = 0; k < 3; k++)
            out_printf(&o, "clawq_cluster_members{role=\"%s\"} %u\n", roles[k],
                       count[k]);
        family(&o, "clawq_cluster_member_lag_entries", "gauge",
               "On the leader: log entries each member is behind it.");
        for (k = 0; view && k < nm; k++)
            out_printf(&o,
                       "clawq_cluster_member_lag_entries{node=\"%u\"} %" PRIu64
                       "\n",
                       mi[k].id,
                       ri.last_index > mi[k].match_index
                           ? ri.last_index - mi[k].match_index
                           : 0);
    }
    family(&o, "clawq_raft_snapshots_total", "counter",
           "Snapshots this node has taken since it started.");
    out_printf(&o, "clawq_raft_snapshots_total %" PRIu64 "\n",
               ri.snapshots_taken);
    family(&o, "clawq_raft_snapshot_pause_seconds", "gauge",
           "How long the loop waited for the last snapshot's "
           "serialisation (done on a worker thread; the loop waits only "
           "to grow the map).");
    out_printf(&o, "clawq_raft_snapshot_pause_seconds %.3f\n",
               (double)ri.last_snapshot_ms / 1000.0);
    family(&o, "clawq_raft_snapshot_serialize_seconds", "gauge",
           "How long the last snapshot's copy of the store took on its "
           "worker thread.");
    out_printf(&o, "clawq_raft_snapshot_serialize_seconds %.3f\n",
               (double)ri.last_snapshot_serialize_ms / 1000.0);
    family(&o, "clawq_raft_messages_held_total", "counter",
           "Raft messages held behind a local snapshot write (the "
           "InstallSnapshot workaround).");
    out_printf(&o, "clawq_raft_messages_held_total %" PRIu64 "\n",
               ri.messages_held);
    family(&o, "clawq_raft_installs_dropped_total", "counter",
           "InstallSnapshot resends dropped while a snapshot was being "
           "installed.");
    out_printf(&o, "clawq_raft_installs_dropped_total %" PRIu64 "\n",
               ri.installs_dropped);
    family(&o, "clawq_raft_stale_commits_total", "counter",
           "AppendEntries from a leader's stale view whose commit index "
           "was not taken (it would have moved this follower's back).");
    out_printf(&o, "clawq_raft_stale_commits_total %" PRIu64 "\n",
               ri.stale_commits);
    family(&o, "clawq_raft_installs_unsent_total", "counter",
           "InstallSnapshot messages not sent because their node left the "
           "configuration while the snapshot was being loaded.");
    out_printf(&o, "clawq_raft_installs_unsent_total %" PRIu64 "\n",
               ri.installs_unsent);
    aioreap_get_stats(&ar);
    family(&o, "clawq_raft_aio_contexts_reaped_total", "counter",
           "libraft's AIO contexts (one per log segment) destroyed on the "
           "reaper thread instead of stalling the loop.");
    out_printf(&o, "clawq_raft_aio_contexts_reaped_total %" PRIu64 "\n",
               ar.destroyed);
    logzero_get_stats(&lz);
    family(&o, "clawq_raft_log_prezeroed_segments_total", "counter",
           "Raft log files zero-filled when created (--log-prezero).");
    out_printf(&o, "clawq_raft_log_prezeroed_segments_total %" PRIu64 "\n",
               lz.files);
    family(&o, "clawq_raft_log_prezero_skipped_total", "counter",
           "Raft log files left as allocated: the file system refused "
           "direct I/O, so log writes go through a thread.");
    out_printf(&o, "clawq_raft_log_prezero_skipped_total %" PRIu64 "\n",
               lz.skipped);

    rss = resident_bytes();
    if (rss >= 0) {
        family(&o, "clawq_process_resident_memory_bytes", "gauge",
               "Resident memory size of clawqd.");
        out_printf(&o, "clawq_process_resident_memory_bytes %lld\n", rss);
    }
    family(&o, "clawq_build_info", "gauge",
           "Always 1; the version of clawqd in a label.");
    out_printf(&o, "clawq_build_info{version=\"%d.%d.%d\"} 1\n",
               CLAWQ_VERSION_MAJOR, CLAWQ_VERSION_MINOR, CLAWQ_VERSION_PATCH);

    free(qs);
    if (o.err != 0) {
        LOG_RATELIMITED(LOG_WARN, "http.metrics_failed", 10000,
                        "queues=%zu error=\"%s\"", n, clawq_strerror(o.err));
        cq_buf_fini(&o.b);
        send_text(c, 500, "cannot build the metrics\n", head_only, NULL);
        return;
    }
    send_answer(c, 200, CT_PROM, &o, head_only, NULL);
}

/* ---- /v1/queues ---- */

static void queue_json(obuf *o, server *srv, const fsm_queue_stats *q,
                       uint64_t now)
{
    const queue_counters *n = &q->rec.counters;
    uint64_t age = age_ms(now, q->rec.oldest_ready_ms);
    queue_workers wk;

    sess_workers_summary(srv, q, &wk);
    out_printf(o,
               "{\"ready\":%" PRIu64 ",\"delayed\":%" PRIu64
               ",\"leased\":%" PRIu64 ",\"dead\":%" PRIu64
               ",\"backlog\":%" PRIu64 ",\"oldest_ready_age_seconds\":%.3f",
               n->ready, n->delayed, n->leased, n->dead, n->ready + n->leased,
               (double)age / 1000.0);
    out_printf(o,
               ",\"put_total\":%" PRIu64 ",\"acked_total\":%" PRIu64
               ",\"nacked_total\":%" PRIu64 ",\"failed_total\":%" PRIu64
               ",\"expired_total\":%" PRIu64,
               n->put_total, n->acked_total, n->nacked_total, n->failed_total,
               n->expired_total);
    out_printf(o,
               ",\"dead_lettered_total\":%" PRIu64
               ",\"deduplicated_total\":%" PRIu64
               ",\"delivered_total\":%" PRIu64,
               n->dead_total, n->deduped_total, n->leased_total);
    out_printf(o,
               ",\"workers\":%u,\"worker_capacity\":%" PRIu64
               ",\"worker_median_capacity\":%u,\"worker_inflight\":%" PRIu64
               ",\"paused\":%s}",
               wk.workers, wk.capacity, wk.median_capacity, wk.inflight,
               q->rec.settings.paused ? "true" : "false");
}

static void serve_queues(http_conn *c, bool head_only)
{
    server *srv = c->h->srv;
    fsm_queue_stats *qs = NULL;
    size_t n = 0, i;
    uint64_t now = repl_now_ms(srv->r);
    obuf o;
    int rc;

    rc = fsm_queue_list(srv->s, &qs, &n);
    if (rc != 0) {
        send_json_error(c, 500, "internal", clawq_strerror(rc), head_only);
        return;
    }
    out_init(&o);
    out_printf(&o, "{\"node_id\":%u,\"queues\":{", srv->node_id);
    for (i = 0; i < n; i++) {
        if (i > 0)
            out_str(&o, ",");
        out_json_str(&o, qs[i].name);
        out_str(&o, ":");
        queue_json(&o, srv, &qs[i], now);
    }
    out_str(&o, "}}\n");
    free(qs);
    if (o.err != 0) {
        cq_buf_fini(&o.b);
        send_json_error(c, 500, "internal", clawq_strerror(o.err), head_only);
        return;
    }
    send_answer(c, 200, CT_JSON, &o, head_only, NULL);
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static void serve_queue(http_conn *c, const char *enc, size_t enc_len,
                        bool head_only)
{
    server *srv = c->h->srv;
    char name[QUEUE_NAME_MAX + 1];
    size_t len = 0, i;
    fsm_queue_stats st;
    obuf o;
    int rc;

    /* Percent-decoded; then it must be a valid queue name. */
    for (i = 0; i < enc_len; i++) {
        char ch = enc[i];
        if (ch == '%') {
            int hi = i + 2 < enc_len ? hexval(enc[i + 1]) : -1;
            int lo = i + 2 < enc_len ? hexval(enc[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                goto invalid;
            ch = (char)(hi * 16 + lo);
            i += 2;
        }
        if (len == QUEUE_NAME_MAX)
            goto invalid;
        name[len++] = ch;
    }
    name[len] = '\0';
    if (!queue_name_is_valid(cq_bytes_of(name, len)))
        goto invalid;
    rc = fsm_queue_stats_get(srv->s, cq_bytes_of(name, len), &st);
    if (rc == CLAWQ_ENOT_FOUND) {
        send_json_error(c, 404, "not_found", "no such queue", head_only);
        return;
    }
    if (rc != 0) {
        send_json_error(c, 500, "internal", clawq_strerror(rc), head_only);
        return;
    }
    out_init(&o);
    queue_json(&o, srv, &st, repl_now_ms(srv->r));
    out_str(&o, "\n");
    send_answer(c, 200, CT_JSON, &o, head_only, NULL);
    return;

invalid:
    send_json_error(c, 400, "invalid",
                    "a queue name is 1..128 bytes of [A-Za-z0-9._:-]",
                    head_only);
}

/* ---- dispatch ---- */

static bool path_is(const char *path, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(path, want, len) == 0;
}

static void serve(http_conn *c)
{
    struct http_parser_url u;
    const char *path;
    size_t len;
    bool head_only = c->method == HTTP_HEAD;
    static const char qprefix[] = "/v1/queues/";

    if (log_enabled(LOG_DEBUG)) {
        char shown[128];
        size_t i;
        /* The logger keeps control bytes on one line; " and \ would end
         * the quoted value early. */
        for (i = 0; i < sizeof(shown) - 1 && i < c->url_len; i++)
            shown[i] = c->url[i] == '"' || c->url[i] == '\\' ? '?' : c->url[i];
        shown[i] = '\0';
        LOG(LOG_DEBUG, "http.request", "conn=%" PRIu64 " method=%s url=\"%s\"",
            c->id, http_method_str((enum http_method)c->method), shown);
    }
    http_parser_url_init(&u);
    if (http_parser_parse_url(c->url, c->url_len, c->method == HTTP_CONNECT,
                              &u) != 0 ||
        (u.field_set & (1 << UF_PATH)) == 0) {
        c->keep_alive = false;
        send_text(c, 400, "bad request target\n", head_only, NULL);
        return;
    }
    path = c->url + u.field_data[UF_PATH].off;
    len = u.field_data[UF_PATH].len;

    if (c->method != HTTP_GET && c->method != HTTP_HEAD) {
        send_text(c, 405, "method not allowed\n", false,
                  "Allow: GET, HEAD\r\n");
        return;
    }
    if (path_is(path, len, "/healthz"))
        send_text(c, 200, "ok\n", head_only, NULL);
    else if (path_is(path, len, "/readyz"))
        serve_readyz(c, head_only);
    else if (path_is(path, len, "/metrics"))
        serve_metrics(c, head_only);
    else if (path_is(path, len, "/v1/queues") ||
             path_is(path, len, "/v1/queues/"))
        serve_queues(c, head_only);
    else if (len > sizeof(qprefix) - 1 &&
             memcmp(path, qprefix, sizeof(qprefix) - 1) == 0)
        serve_queue(c, path + sizeof(qprefix) - 1, len - (sizeof(qprefix) - 1),
                    head_only);
    else
        send_text(c, 404, "not found\n", head_only, NULL);
}

static const char *error_text(int status)
{
    switch (status) {
    case 405:
        return "method not allowed: GET and HEAD only\n";
    case 413:
        return "requests carry no body\n";
    case 414:
        return "request target too long\n";
    case 431:
        return "request head too large\n";
    default:
        return "bad request\n";
    }
}

/* Parses what is buffered, answering one complete request at a time. */
static void conn_process(http_conn *c)
{
    while (!c->writing && !c->closing && !c->lingering && c->in_len > 0) {
        size_t used =
            http_parser_execute(&c->parser, &parser_settings, c->in, c->in_len);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);

        if (used > c->in_len)
            used = c->in_len;
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
        if (c->complete) {
            c->complete = false;
            if (e == HPE_PAUSED)
                http_parser_pause(&c->parser, 0);
            if (c->parser.upgrade)
                c->in_len = 0; /* not HTTP any more: we close after this */
            serve(c);
            continue;
        }
        if (e != HPE_OK) {
            int status = c->reject != 0             ? c->reject
                         : e == HPE_HEADER_OVERFLOW ? 431
                                                    : 400;
            LOG_RATELIMITED(LOG_INFO, "http.bad_request", 1000,
                            "conn=%" PRIu64 " status=%d error=%s", c->id,
                            status, http_errno_name(e));
            c->in_len = 0;
            c->keep_alive = false;
            c->http_minor = 1;
            send_text(c, status, error_text(status), false,
                      status == 405 ? "Allow: GET, HEAD\r\n" : NULL);
            return;
        }
    }
    if (c->eof && !c->writing && !c->closing && !c->lingering)
        conn_close(c);
    else
        conn_update_reading(c);
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    http_conn *c = handle->data;
    static char discard[16 * 1024];

    (void)suggested;
    if (c->lingering) {
        *buf = uv_buf_init(discard, sizeof(discard));
        return;
    }
    *buf = uv_buf_init(c->in + c->in_len, (unsigned)(IN_MAX - c->in_len));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    http_conn *c = stream->data;

    (void)buf;
    if (nread == 0 || c->closing)
        return;
    if (nread < 0) {
        if (nread != UV_EOF || c->lingering) {
            conn_close(c);
            return;
        }
        c->eof = true;
        conn_process(c);
        return;
    }
    if (c->lingering) {
        c->lingered += (size_t)nread;
        if (c->lingered > LINGER_MAX)
            conn_close(c);
        return;
    }
    c->in_len += (size_t)nread;
    conn_process(c);
}

/* Reads while there is room and nothing is being answered (or while
 * lingering). */
static void conn_update_reading(http_conn *c)
{
    bool want = !c->closing && !c->eof &&
                (c->lingering || (!c->writing && c->in_len < IN_MAX));

    if (want == c->reading)
        return;
    if (want) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
            conn_close(c);
            return;
        }
    } else {
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
    c->reading = want;
}

/* ---- listener ---- */

static void on_listener_failed(uv_handle_t *h)
{
    free(h->data); /* the owner: its handle is not alone in it */
}

static void on_connection(uv_stream_t *listener, int status)
{
    http_srv *h = listener->data;
    http_conn *c;

    if (status != 0) {
        LOG_RATELIMITED(LOG_WARN, "http.accept_failed", 1000, "error=%s",
                        uv_strerror(status));
        return;
    }
    if (h->n_conns >= HTTP_MAX_CONNECTIONS || h->closing) {
        net_accept_reject(listener, "http", h->n_conns);
        return;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->h = h;
    c->id = ++h->next_id;
    uv_tcp_init(h->srv->loop, &c->tcp);
    uv_timer_init(h->srv->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    c->next = h->conns;
    if (h->conns != NULL)
        h->conns->prev = c;
    h->conns = c;
    h->n_conns++;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->keep_alive = true;
    c->http_minor = 1;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    LOG(LOG_DEBUG, "http.accept", "conn=%" PRIu64 " open=%zu", c->id,
        h->n_conns);
    uv_timer_start(&c->timer, on_timer, IDLE_TIMEOUT_MS, 0);
    conn_update_reading(c);
}

int http_listen(server *srv, const char *addr, http_srv **out)
{
    struct sockaddr_storage sa;
    http_srv *h;
    int rc;

    if (net_addr_parse(addr, &sa) != 0)
        return CLAWQ_EINVALID;
    h = calloc(1, sizeof(*h));
    if (h == NULL)
        return CLAWQ_ENOMEM;
    h->srv = srv;
    /* The parser's own count of head bytes (request line and headers,
     * whitespace included): past it, HPE_HEADER_OVERFLOW and a 431. The
     * setting is process-wide; this module is clawqd's only parser user. */
    http_parser_set_max_header_size(HEAD_MAX);
    uv_tcp_init(srv->loop, &h->tcp);
    h->tcp.data = h;
    rc = uv_tcp_bind(&h->tcp, (const struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&h->tcp, 128, on_connection);
    if (rc != 0) {
        LOG(LOG_ERROR, "http.listen_failed", "addr=%s error=\"%s\"", addr,
            uv_strerror(rc));
        uv_close((uv_handle_t *)&h->tcp, on_listener_failed);
        return CLAWQ_EIO;
    }
    LOG(LOG_INFO, "http.listen", "addr=%s", addr);
    *out = h;
    return 0;
}

static void on_listener_closed(uv_handle_t *handle)
{
    http_srv *h = handle->data;

    h->listener_closed = true;
    srv_maybe_free(h);
}

void http_close(http_srv *h)
{
    http_conn *c;

    if (h == NULL || h->closing)
        return;
    h->closing = true;
    uv_close((uv_handle_t *)&h->tcp, on_listener_closed);
    for (c = h->conns; c != NULL; c = c->next)
        conn_close(c);
}
