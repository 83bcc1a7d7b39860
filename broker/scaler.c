/* scaler.c: the KEDA external scaler. See scaler.h and docs/KEDA.md.
 *
 * gRPC is HTTP/2 with a few rules on top (../shared/KEDA.md section 4):
 * POST to /package.Service/Method with content-type application/grpc,
 * request and response bodies made of messages each prefixed by one flag
 * byte and a 4-byte big-endian length, and the status in trailers. nghttp2
 * does the HTTP/2 framing, flow control, SETTINGS and PINGs; this file
 * feeds it bytes from the loop and writes what it produces. With TLS,
 * OpenSSL works on two memory BIOs between the socket and nghttp2, so that
 * every byte still moves through libuv and nothing blocks.
 *
 * Every answer is computed at once from the queue's record in the store
 * (one read transaction) and the workers' live load reports (memory): a
 * request is answered in the loop turn that completes it. KEDA sets no
 * deadline on its calls, so an answer that never comes would stall that
 * ScaledObject: a request we cannot serve gets a grpc-status at once
 * (UNAVAILABLE while no leader is known or while shutting down).
 *
 * Lifetime: a connection owns its streams. nghttp2 reports each stream's
 * end (on_stream_close), which frees it; streams still open when the
 * session is deleted are freed with the connection. A connection is freed
 * once its two handles (socket, timer) are closed; the scaler once its
 * listener, its watch timer and every connection are.
 *
 * StreamIsActive streams are grouped by queue (a `watch`), so that each
 * check reads every watched queue once: after entries were applied, and
 * every SCALER_WATCH_MS (age and worker reports change without entries).
 * A stream sends `true` when its queue goes from inactive to active; KEDA
 * ignores `false`, so none is ever sent.
 */
#include "scaler.h"

#include <math.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "externalscaler.pb-c.h"
#include "fsm.h"
#include "log.h"
#include "net.h"
#include "util.h"

#define SCALER_MAX_CONNS 256 /* open connections */
/* Streams per connection: KEDA shares one connection among all its
 * ScaledObjects, each external-push trigger holding a stream for good, and
 * grpc-go queues calls beyond the limit: keep it above the watch cap. */
#define SCALER_MAX_STREAMS 5000
#define SCALER_MAX_STREAMS_ALL 20000 /* open streams, all connections */
#define SCALER_MAX_WATCHES 4096    /* StreamIsActive streams, all connections */
#define SCALER_MAX_MSG (64 * 1024) /* bytes of one request message */
#define SCALER_MAX_HEADERS 16384   /* bytes of one request's headers */
#define SCALER_WRITE_CAP (256 * 1024) /* unsent bytes before we stop */
#define SCALER_HANDSHAKE_MS 10000     /* TLS handshake + HTTP/2 preface */
#define SCALER_CLOSE_MS 2000          /* GOAWAY drain before a hard close */
#define SCALER_WATCH_MS 1000          /* periodic re-check of watched queues */
/* Streams the client resets per second per connection before it is cut
 * off (GOAWAY ENHANCE_YOUR_CALM): opening and resetting streams in a loop
 * ("rapid reset") evades the concurrency limit. KEDA resets a stream only
 * when a ScaledObject goes away. */
#define SCALER_RESET_RATE 1000
#define SCALER_READ_CHUNK 16384
#define SCALER_OUT_MAX 256   /* bytes of a stream's unsent messages */
#define SCALER_METRIC_MAX 63 /* a DNS label */
#define SCALER_DEFAULT_TARGET 10.0
#define SCALER_SATURATED 0.9 /* inflight / capacity: workers are saturated */

/* gRPC status codes (grpc/grpc:doc/statuscodes.md). */
enum grpc_status {
    GRPC_OK = 0,
    GRPC_INVALID_ARGUMENT = 3,
    GRPC_RESOURCE_EXHAUSTED = 8,
    GRPC_UNIMPLEMENTED = 12,
    GRPC_INTERNAL = 13,
    GRPC_UNAVAILABLE = 14,
};

enum method {
    M_UNKNOWN = 0,
    M_IS_ACTIVE,
    M_STREAM_IS_ACTIVE,
    M_GET_METRIC_SPEC,
    M_GET_METRICS,
};

static const struct {
    const char *path;
    int method;
} methods[] = {
    {"/externalscaler.ExternalScaler/IsActive", M_IS_ACTIVE},
    {"/externalscaler.ExternalScaler/StreamIsActive", M_STREAM_IS_ACTIVE},
    {"/externalscaler.ExternalScaler/GetMetricSpec", M_GET_METRIC_SPEC},
    {"/externalscaler.ExternalScaler/GetMetrics", M_GET_METRICS},
};

enum mode { MODE_BACKLOG, MODE_READY, MODE_AGE, MODE_WORKERS };

static const char *const mode_names[] = {"backlog", "ready", "age", "workers"};

/* A request's scalerMetadata, validated. */
typedef struct query {
    char queue[QUEUE_NAME_MAX + 1];
    int mode;
    double target;     /* targetPerReplica, > 0 */
    double activation; /* activationThreshold, >= 0 */
    bool include_delayed;
} query;

typedef struct sconn sconn;
typedef struct sstream sstream;
typedef struct watch watch;

struct sstream {
    int32_t id;
    sconn *c;
    sstream *prev, *next; /* the connection's streams */
    int method;
    bool is_post, ct_ok;
    int reject;     /* not gRPC: the HTTP status to answer once the body ends */
    bool responded; /* a response was submitted: input is ignored */
    bool has_body;  /* the response has a data provider */
    bool eof;       /* no more messages: trailers once out is sent */
    bool deferred;  /* the data provider waits for stream_resume */
    size_t hdr_bytes;
    uint8_t *in; /* request body so far */
    size_t in_len, in_cap;
    uint8_t out[SCALER_OUT_MAX]; /* framed messages not yet sent */
    size_t out_off, out_len;
    /* StreamIsActive */
    query q;
    watch *w;
    sstream *wprev, *wnext;
    bool was_active;
};

/* The StreamIsActive streams of one queue. */
struct watch {
    watch *next;
    char queue[QUEUE_NAME_MAX + 1];
    sstream *streams;
};

struct sconn {
    scaler *sc;
    uv_tcp_t tcp;
    uv_timer_t timer; /* handshake deadline, then drain deadline */
    sconn *prev, *next;
    uint64_t id;
    nghttp2_session *h2;
    SSL *ssl;         /* NULL for h2c */
    BIO *rbio;        /* network -> OpenSSL (owned by ssl) */
    BIO *wbio;        /* OpenSSL -> network (owned by ssl) */
    bool tls_ready;   /* handshake done (always, for h2c) */
    bool h2_ready;    /* the client's preface and first frame arrived */
    bool draining;    /* GOAWAY submitted: close once written */
    bool dead;        /* write what is buffered, then close */
    bool notify_sent; /* TLS close_notify written */
    bool closing;     /* uv_close called */
    bool need_flush;
    bool read_stopped;    /* writes piled up past SCALER_WRITE_CAP */
    int handles;          /* open uv handles */
    size_t write_pending; /* bytes handed to uv_write */
    sstream *streams;
    uint64_t rate_start_ms; /* the current second of resets */
    uint32_t rate_n;        /* RST_STREAMs received in it */
};

struct scaler {
    server *srv;
    uv_tcp_t tcp;
    uv_timer_t watch_timer;
    SSL_CTX *ctx; /* NULL for h2c */
    nghttp2_session_callbacks *cbs;
    sconn *conns;   /* open, not closing */
    size_t n_conns; /* not yet freed */
    watch *watches;
    size_t n_watching; /* streams in watches */
    bool closing;
    int handles;
    size_t n_streams; /* open, all connections */
    uint64_t next_conn_id;
    char addr[CONFIG_ADDR_MAX];
    uint8_t rbuf[SCALER_READ_CHUNK]; /* socket reads; one at a time */
    uint8_t tbuf[SCALER_READ_CHUNK]; /* decrypted bytes */
};

typedef struct wreq {
    uv_write_t req;
    sconn *c;
    size_t len;
    uint8_t data[];
} wreq;

static void conn_flush(sconn *c);
static void conn_close(sconn *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void scaler_maybe_free(scaler *sc);

/* ---- metadata and answers ---- */

/* The value of key (or of keyFromEnv, which KEDA resolves from the scale
 * target's environment without renaming it), or NULL. The last entry
 * wins, as in a protobuf map. */
static const char *meta_get(const Externalscaler__ScaledObjectRef *ref,
                            const char *key)
{
    const char *v = NULL, *env = NULL;
    size_t klen = strlen(key);

    for (size_t i = 0; i < ref->n_scalermetadata; i++) {
        const Externalscaler__ScaledObjectRef__ScalerMetadataEntry *e =
            ref->scalermetadata[i];
        if (e == NULL || e->key == NULL || e->value == NULL)
            continue;
        if (strcmp(e->key, key) == 0)
            v = e->value;
        else if (strncmp(e->key, key, klen) == 0 &&
                 strcmp(e->key + klen, "FromEnv") == 0)
            env = e->value;
    }
    return v != NULL ? v : env;
}

/* A finite number in [min, max] filling all of s. */
static bool parse_number(const char *s, double min, double max, double *out)
{
    char *end;
    double v;

    if (s == NULL || *s == '\0')
        return false;
    v = strtod(s, &end);
    while (*end == ' ')
        end++;
    if (*end != '\0' || !isfinite(v) || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};

    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* Fills q from the request's metadata. Returns 0, or -1 with the reason
 * (for grpc-message) in err. */
static int query_parse(const Externalscaler__ScaledObjectRef *ref, query *q,
                       char *err, size_t errlen)
{
    const char *v;

    memset(q, 0, sizeof(*q));
    q->mode = MODE_BACKLOG;
    q->target = SCALER_DEFAULT_TARGET;
    if (ref == NULL) {
        snprintf(err, errlen, "scaledObjectRef is required");
        return -1;
    }
    v = meta_get(ref, "queue");
    if (v == NULL || *v == '\0') {
        snprintf(err, errlen, "scalerMetadata.queue is required");
        return -1;
    }
    if (!queue_name_is_valid(cq_bytes_str(v))) {
        snprintf(err, errlen,
                 "scalerMetadata.queue: not a queue name (1..%d bytes of "
                 "A-Z a-z 0-9 . _ : -)",
                 QUEUE_NAME_MAX);
        return -1;
    }
    snprintf(q->queue, sizeof(q->queue), "%s", v);
    v = meta_get(ref, "mode");
    if (v != NULL && *v != '\0') {
        size_t i;
        for (i = 0; i < 4; i++)
            if (strcasecmp(v, mode_names[i]) == 0)
                break;
        if (i == 4) {
            snprintf(err, errlen,
                     "scalerMetadata.mode: expected backlog, ready, age or "
                     "workers");
            return -1;
        }
        q->mode = (int)i;
    }
    v = meta_get(ref, "targetPerReplica");
    if (v != NULL && *v != '\0' && !parse_number(v, 1e-3, 1e12, &q->target)) {
        snprintf(err, errlen,
                 "scalerMetadata.targetPerReplica: expected a number > 0");
        return -1;
    }
    v = meta_get(ref, "activationThreshold");
    if (v != NULL && *v != '\0' && !parse_number(v, 0, 1e18, &q->activation)) {
        snprintf(err, errlen,
                 "scalerMetadata.activationThreshold: expected a number >= 0");
        return -1;
    }
    v = meta_get(ref, "includeDelayed");
    if (v != NULL && *v != '\0' && !parse_bool(v, &q->include_delayed)) {
        snprintf(err, errlen,
                 "scalerMetadata.includeDelayed: expected true or false");
        return -1;
    }
    return 0;
}

/* "clawq-<queue>-<mode>", lower case, every other character than a-z 0-9
 * and '-' replaced by '-'; a name longer than a DNS label is cut and ends
 * with a hash of the whole. */
static void metric_name(const query *q, char *out, size_t outlen)
{
    char buf[QUEUE_NAME_MAX + 32];
    size_t n;

    CLAWQ_ASSERT(outlen > SCALER_METRIC_MAX);
    n = (size_t)snprintf(buf, sizeof(buf), "clawq-%s-%s", q->queue,
                         mode_names[q->mode]);
    for (size_t i = 0; i < n; i++) {
        char ch = buf[i];
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        else if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')))
            ch = '-';
        buf[i] = ch;
    }
    if (n <= SCALER_METRIC_MAX) {
        memcpy(out, buf, n + 1);
        return;
    }
    {
        uint32_t h = 2166136261u; /* FNV-1a of the queue name */
        for (const char *p = q->queue; *p != '\0'; p++)
            h = (h ^ (uint8_t)*p) * 16777619u;
        memcpy(out, buf, SCALER_METRIC_MAX - 9);
        snprintf(out + SCALER_METRIC_MAX - 9, outlen - (SCALER_METRIC_MAX - 9),
                 "-%08x", h);
    }
}

/* The metric value for q; st is the queue's stats, NULL when the queue
 * does not exist (yet): then everything is 0. */
static double query_value(scaler *sc, const query *q, const fsm_queue_stats *st)
{
    const queue_counters *k;
    uint64_t backlog, now;

    if (st == NULL)
        return 0;
    k = &st->rec.counters;
    switch (q->mode) {
    case MODE_READY:
        return (double)(k->ready + (q->include_delayed ? k->delayed : 0));
    case MODE_AGE:
        now = repl_now_ms(sc->srv->r);
        if (k->ready == 0 || st->rec.oldest_ready_ms == 0 ||
            now <= st->rec.oldest_ready_ms)
            return 0;
        return (double)(now - st->rec.oldest_ready_ms) / 1000.0;
    case MODE_WORKERS: {
        /* The workers as every node sees them: the leader's live reports,
         * or its replicated summary on a follower. */
        queue_workers wk;
        double per, desired;

        sess_workers_summary(sc->srv, st, &wk);
        per = wk.median_capacity > 0 ? (double)wk.median_capacity : q->target;
        backlog = k->ready + k->leased + (q->include_delayed ? k->delayed : 0);
        desired = ceil((double)backlog / per);
        if (wk.workers > 0 && wk.capacity > 0 &&
            (double)wk.inflight >= SCALER_SATURATED * (double)wk.capacity &&
            desired < (double)wk.workers + 1)
            desired = (double)wk.workers + 1;
        return desired;
    }
    default:
        return (double)(k->ready + k->leased +
                        (q->include_delayed ? k->delayed : 0));
    }
}

/* Reads the queue's stats: 0 with *found, or a negative code. */
static int stats_read(scaler *sc, const char *queue, fsm_queue_stats *st,
                      bool *found)
{
    int rc = fsm_queue_stats_get(sc->srv->s, cq_bytes_str(queue), st);

    *found = rc == 0;
    return rc == CLAWQ_ENOT_FOUND ? 0 : rc;
}

/* NaN, infinities and negatives become 0, as KEDA would make them. */
static double metric_clamp(double v)
{
    return isfinite(v) && v > 0 ? v : 0;
}

static int64_t metric_int(double v)
{
    v = metric_clamp(v);
    return v >= 9e18 ? INT64_C(9000000000000000000) : (int64_t)llround(v);
}

/* Whether this node can answer now; if not, why. */
static bool scaler_can_answer(scaler *sc, const char **why)
{
    repl_info info;

    if (sc->closing || sc->srv->shutting_down) {
        *why = "the broker is shutting down";
        return false;
    }
    if (sc->srv->r == NULL || sc->srv->s == NULL) {
        *why = "the broker is starting";
        return false;
    }
    repl_get_info(sc->srv->r, &info);
    if (info.leader_id == 0) {
        *why = "no leader is known: the queue counters may be stale";
        return false;
    }
    return true;
}

/* ---- streams: responses ---- */

/* Percent-encodes s for grpc-message (grpc/grpc:doc/PROTOCOL-HTTP2.md). */
static void percent_encode(const char *s, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    for (; *s != '\0' && o + 4 < outlen; s++) {
        uint8_t ch = (uint8_t)*s;
        if (ch >= 0x20 && ch <= 0x7e && ch != '%') {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
}

#define NV(n, v)                                                               \
    {                                                                          \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v),              \
            NGHTTP2_NV_FLAG_NONE                                               \
    }

/* A plain HTTP answer (405, 415) that ends the stream. */
static void respond_http(sstream *st, int code)
{
    nghttp2_nv nv[] = {NV(":status", "415")};

    if (code == 405)
        nv[0] = (nghttp2_nv)NV(":status", "405");
    st->responded = true;
    nghttp2_submit_response(st->c->h2, st->id, nv, 1, NULL);
}

/* Trailers-Only: one HEADERS frame with the status, ending the stream. */
static void respond_status(sstream *st, int code, const char *msg)
{
    char status[16], enc[512];

    snprintf(status, sizeof(status), "%d", code);
    percent_encode(msg, enc, sizeof(enc));
    nghttp2_nv nv[] = {NV(":status", "200"),
                       NV("content-type", "application/grpc"),
                       NV("grpc-status", status), NV("grpc-message", enc)};
    st->responded = true;
    nghttp2_submit_response(st->c->h2, st->id, nv, 4, NULL);
    LOG(LOG_DEBUG, "scaler.status", "conn=%llu stream=%d status=%d msg=\"%s\"",
        (unsigned long long)st->c->id, st->id, code, msg);
}

/* The data provider: sends st->out, then (after eof) the trailers. */
static ssize_t on_data_read(nghttp2_session *h2, int32_t id, uint8_t *buf,
                            size_t length, uint32_t *flags,
                            nghttp2_data_source *src, void *user)
{
    sstream *st = src->ptr;
    size_t n = st->out_len - st->out_off;
    (void)user;

    if (n > length)
        n = length;
    memcpy(buf, st->out + st->out_off, n);
    st->out_off += n;
    if (st->out_off < st->out_len)
        return (ssize_t)n;
    st->out_off = st->out_len = 0;
    if (st->eof) {
        nghttp2_nv nv[] = {NV("grpc-status", "0")};
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        if (nghttp2_submit_trailer(h2, id, nv, 1) != 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        return (ssize_t)n;
    }
    if (n == 0) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

/* Response headers; the body and trailers follow through on_data_read. */
static int respond_begin(sstream *st)
{
    nghttp2_nv nv[] = {NV(":status", "200"),
                       NV("content-type", "application/grpc")};
    nghttp2_data_provider dp;

    dp.source.ptr = st;
    dp.read_callback = on_data_read;
    st->responded = true;
    st->has_body = true;
    return nghttp2_submit_response(st->c->h2, st->id, nv, 2, &dp);
}

static void stream_resume(sstream *st)
{
    if (st->deferred) {
        st->deferred = false;
        nghttp2_session_resume_data(st->c->h2, st->id);
    }
    st->c->need_flush = true;
}

/* Appends one length-prefixed message to the stream's output. Our
 * messages are small and bounded (a name of at most 63 bytes and two
 * numbers): they always fit. */
static void stream_push(sstream *st, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);

    if (st->out_off > 0) {
        memmove(st->out, st->out + st->out_off, st->out_len - st->out_off);
        st->out_len -= st->out_off;
        st->out_off = 0;
    }
    CLAWQ_ASSERT(st->out_len + 5 + n <= sizeof(st->out));
    st->out[st->out_len] = 0;
    cq_put_be32(st->out + st->out_len + 1, (uint32_t)n);
    protobuf_c_message_pack(m, st->out + st->out_len + 5);
    st->out_len += 5 + n;
    stream_resume(st);
}

/* No more messages: trailers (grpc-status 0) once out is sent. */
static void stream_finish(sstream *st)
{
    if (st->eof || !st->has_body)
        return;
    st->eof = true;
    stream_resume(st);
}

/* A unary answer: headers, one message, trailers. */
static void respond_unary(sstream *st, const ProtobufCMessage *m)
{
    if (respond_begin(st) != 0)
        return;
    stream_push(st, m);
    stream_finish(st);
}

/* ---- watches (StreamIsActive) ---- */

static void watch_unlink(sstream *st)
{
    scaler *sc = st->c->sc;
    watch *w = st->w, **pp;

    if (w == NULL)
        return;
    if (st->wprev != NULL)
        st->wprev->wnext = st->wnext;
    else
        w->streams = st->wnext;
    if (st->wnext != NULL)
        st->wnext->wprev = st->wprev;
    st->w = NULL;
    st->wprev = st->wnext = NULL;
    sc->n_watching--;
    if (w->streams != NULL)
        return;
    for (pp = &sc->watches; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    free(w);
    if (sc->watches == NULL && !sc->closing)
        uv_timer_stop(&sc->watch_timer);
}

static void on_watch_timer(uv_timer_t *t);

static int watch_link(sstream *st)
{
    scaler *sc = st->c->sc;
    watch *w;

    for (w = sc->watches; w != NULL; w = w->next)
        if (strcmp(w->queue, st->q.queue) == 0)
            break;
    if (w == NULL) {
        w = calloc(1, sizeof(*w));
        if (w == NULL)
            return CLAWQ_ENOMEM;
        memcpy(w->queue, st->q.queue, sizeof(w->queue));
        if (sc->watches == NULL)
            uv_timer_start(&sc->watch_timer, on_watch_timer, SCALER_WATCH_MS,
                           SCALER_WATCH_MS);
        w->next = sc->watches;
        sc->watches = w;
    }
    st->w = w;
    st->wprev = NULL;
    st->wnext = w->streams;
    if (w->streams != NULL)
        w->streams->wprev = st;
    w->streams = st;
    sc->n_watching++;
    return 0;
}

/* Whether some stream of w last saw its queue inactive. */
static bool watch_has_idle(const watch *w)
{
    for (const sstream *st = w->streams; st != NULL; st = st->wnext)
        if (!st->was_active)
            return true;
    return false;
}

/* Sends `true` on every watching stream whose queue became active: one
 * stats read per watched queue. After applies (all = false) only queues
 * that some stream saw idle are read, so that a busy broker whose queues
 * stay active pays nothing; the periodic check (all = true) reads every
 * watched queue and notices when one goes idle again. */
static void watch_check(scaler *sc, bool all)
{
    fsm_queue_stats stats;

    for (watch *w = sc->watches; w != NULL; w = w->next) {
        bool found;
        if (!all && !watch_has_idle(w))
            continue;
        if (stats_read(sc, w->queue, &stats, &found) != 0)
            continue;
        for (sstream *st = w->streams; st != NULL; st = st->wnext) {
            double v = query_value(sc, &st->q, found ? &stats : NULL);
            bool active = v > st->q.activation;
            if (active && !st->was_active && !st->eof &&
                st->out_len == st->out_off) {
                Externalscaler__IsActiveResponse r;
                externalscaler__is_active_response__init(&r);
                r.result = 1;
                stream_push(st, &r.base);
                LOG(LOG_DEBUG, "scaler.push", "conn=%llu stream=%d queue=%s",
                    (unsigned long long)st->c->id, st->id, w->queue);
            }
            st->was_active = active;
        }
    }
    for (sconn *c = sc->conns, *next; c != NULL; c = next) {
        next = c->next; /* conn_flush may close c */
        if (c->need_flush)
            conn_flush(c);
    }
}

static void on_watch_timer(uv_timer_t *t)
{
    watch_check(t->data, true);
}

void scaler_on_applied(scaler *sc)
{
    if (sc == NULL || sc->watches == NULL || sc->closing)
        return;
    watch_check(sc, false);
}

/* ---- streams: requests ---- */

static void stream_free(sstream *st)
{
    sconn *c = st->c;

    watch_unlink(st);
    if (st->prev != NULL)
        st->prev->next = st->next;
    else
        c->streams = st->next;
    if (st->next != NULL)
        st->next->prev = st->prev;
    free(st->in);
    free(st);
    c->sc->n_streams--;
}

/* Answers a request whose body is complete. */
static void stream_dispatch(sstream *st)
{
    scaler *sc = st->c->sc;
    Externalscaler__ScaledObjectRef *ref = NULL;
    Externalscaler__GetMetricsRequest *gm = NULL;
    const uint8_t *msg;
    uint32_t len;
    char err[256], name[SCALER_METRIC_MAX + 1];
    const char *why;
    fsm_queue_stats stats;
    bool found;
    query q;
    double value;

    if (st->responded)
        return;
    if (st->reject != 0) {
        respond_http(st, st->reject);
        return;
    }
    if (st->in_len < 5) {
        respond_status(st, GRPC_INTERNAL, "expected one request message");
        return;
    }
    len = cq_get_be32(st->in + 1);
    if (st->in[0] != 0) {
        respond_status(st, GRPC_UNIMPLEMENTED,
                       "compressed messages are not supported");
        return;
    }
    if ((size_t)len + 5 != st->in_len) {
        respond_status(st, GRPC_INTERNAL, "expected one request message");
        return;
    }
    msg = st->in + 5;
    if (st->method == M_GET_METRICS) {
        gm = externalscaler__get_metrics_request__unpack(NULL, len, msg);
        if (gm == NULL) {
            respond_status(st, GRPC_INTERNAL,
                           "cannot decode GetMetricsRequest");
            return;
        }
        ref = gm->scaledobjectref;
    } else {
        ref = externalscaler__scaled_object_ref__unpack(NULL, len, msg);
        if (ref == NULL) {
            respond_status(st, GRPC_INTERNAL, "cannot decode ScaledObjectRef");
            return;
        }
    }
    if (query_parse(ref, &q, err, sizeof(err)) != 0) {
        respond_status(st, GRPC_INVALID_ARGUMENT, err);
        goto free_request;
    }
    if (!scaler_can_answer(sc, &why)) {
        respond_status(st, GRPC_UNAVAILABLE, why);
        goto free_request;
    }
    if (stats_read(sc, q.queue, &stats, &found) != 0) {
        respond_status(st, GRPC_UNAVAILABLE, "cannot read the queue's stats");
        goto free_request;
    }
    value = query_value(sc, &q, found ? &stats : NULL);
    metric_name(&q, name, sizeof(name));
    LOG(LOG_DEBUG, "scaler.request",
        "conn=%llu stream=%d method=%d queue=%s mode=%s value=%.3f",
        (unsigned long long)st->c->id, st->id, st->method, q.queue,
        mode_names[q.mode], value);

    switch (st->method) {
    case M_IS_ACTIVE: {
        Externalscaler__IsActiveResponse r;
        externalscaler__is_active_response__init(&r);
        r.result = value > q.activation;
        respond_unary(st, &r.base);
        break;
    }
    case M_STREAM_IS_ACTIVE: {
        Externalscaler__IsActiveResponse r;
        externalscaler__is_active_response__init(&r);
        if (sc->n_watching >= SCALER_MAX_WATCHES) {
            respond_status(st, GRPC_RESOURCE_EXHAUSTED,
                           "too many StreamIsActive streams");
            break;
        }
        st->q = q;
        if (watch_link(st) != 0) {
            respond_status(st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
        if (respond_begin(st) != 0) {
            watch_unlink(st);
            break;
        }
        st->was_active = value > q.activation;
        if (st->was_active) {
            r.result = 1;
            stream_push(st, &r.base);
        }
        break;
    }
    case M_GET_METRIC_SPEC: {
        Externalscaler__GetMetricSpecResponse r;
        Externalscaler__MetricSpec ms;
        Externalscaler__MetricSpec *list[1] = {&ms};
        double target = q.mode == MODE_WORKERS ? 1.0 : q.target;
        int64_t target_int = metric_int(target);

        externalscaler__get_metric_spec_response__init(&r);
        externalscaler__metric_spec__init(&ms);
        ms.metricname = name;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        ms.targetsize = target_int > 0 ? target_int : 1;
#pragma GCC diagnostic pop
        ms.targetsizefloat = target;
        r.n_metricspecs = 1;
        r.metricspecs = list;
        respond_unary(st, &r.base);
        break;
    }
    case M_GET_METRICS: {
        Externalscaler__GetMetricsResponse r;
        Externalscaler__MetricValue mv;
        Externalscaler__MetricValue *list[1] = {&mv};

        externalscaler__get_metrics_response__init(&r);
        externalscaler__metric_value__init(&mv);
        mv.metricname = name;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        mv.metricvalue = metric_int(value);
#pragma GCC diagnostic pop
        mv.metricvaluefloat = metric_clamp(value);
        r.n_metricvalues = 1;
        r.metricvalues = list;
        respond_unary(st, &r.base);
        break;
    }
    default:
        respond_status(st, GRPC_UNIMPLEMENTED, "unknown method");
        break;
    }

free_request:
    if (gm != NULL)
        externalscaler__get_metrics_request__free_unpacked(gm, NULL);
    else
        externalscaler__scaled_object_ref__free_unpacked(ref, NULL);
}

/* The request's headers are complete. An unknown method is refused at
 * once (gRPC clients take the RST_STREAM that follows an early answer in
 * their stride). What is not gRPC at all is answered with an HTTP status
 * when its body has ended, its body discarded: plain HTTP clients such as
 * curl 7.88 report an early RST_STREAM(NO_ERROR) as a failure. */
static void stream_headers_done(sstream *st)
{
    if (st->responded)
        return;
    if (!st->is_post)
        st->reject = 405;
    else if (!st->ct_ok)
        st->reject = 415;
    else if (st->method == M_UNKNOWN)
        respond_status(st, GRPC_UNIMPLEMENTED, "unknown method");
}

/* ---- nghttp2 callbacks ---- */

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *frame,
                            void *user)
{
    sconn *c = user;
    sstream *st;

    if (frame->hd.type != NGHTTP2_HEADERS ||
        frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (c->sc->n_streams >= SCALER_MAX_STREAMS_ALL) {
        /* Refused streams are retried by gRPC clients. */
        LOG_RATELIMITED(LOG_WARN, "scaler.rejected", 1000,
                        "reason=max_streams open=%zu", c->sc->n_streams);
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    c->sc->n_streams++;
    st->id = frame->hd.stream_id;
    st->c = c;
    st->next = c->streams;
    if (c->streams != NULL)
        c->streams->prev = st;
    c->streams = st;
    nghttp2_session_set_stream_user_data(h2, st->id, st);
    return 0;
}

static bool hdr_is(const uint8_t *p, size_t len, const char *s)
{
    size_t n = strlen(s);
    return len == n && memcmp(p, s, n) == 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame,
                     const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *user)
{
    sstream *st;
    (void)flags;
    (void)user;

    if (frame->hd.type != NGHTTP2_HEADERS ||
        frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    st = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (st == NULL)
        return 0;
    st->hdr_bytes += namelen + valuelen + 32;
    if (st->hdr_bytes > SCALER_MAX_HEADERS)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (hdr_is(name, namelen, ":method")) {
        st->is_post = hdr_is(value, valuelen, "POST");
    } else if (hdr_is(name, namelen, ":path")) {
        st->method = M_UNKNOWN;
        for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
            if (hdr_is(value, valuelen, methods[i].path))
                st->method = methods[i].method;
    } else if (hdr_is(name, namelen, "content-type")) {
        static const char grpc[] = "application/grpc";
        size_t n = sizeof(grpc) - 1;
        st->ct_ok =
            valuelen >= n && memcmp(value, grpc, n) == 0 &&
            (valuelen == n || hdr_is(value + n, valuelen - n, "+proto") ||
             value[n] == ';');
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t id,
                         const uint8_t *data, size_t len, void *user)
{
    sstream *st = nghttp2_session_get_stream_user_data(h2, id);
    (void)flags;
    (void)user;

    if (st == NULL || st->responded || st->reject != 0)
        return 0;
    if (len > SCALER_MAX_MSG + 5 - st->in_len) {
        free(st->in);
        st->in = NULL;
        st->in_len = st->in_cap = 0;
        respond_status(st, GRPC_RESOURCE_EXHAUSTED,
                       "request message larger than 64 KiB");
        return 0;
    }
    if (st->in_len + len > st->in_cap) {
        size_t cap = st->in_cap == 0 ? 256 : st->in_cap;
        uint8_t *p;
        while (cap < st->in_len + len)
            cap *= 2;
        if (cap > SCALER_MAX_MSG + 5)
            cap = SCALER_MAX_MSG + 5;
        p = realloc(st->in, cap);
        if (p == NULL)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        st->in = p;
        st->in_cap = cap;
    }
    memcpy(st->in + st->in_len, data, len);
    st->in_len += len;
    return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame,
                         void *user)
{
    sconn *c = user;
    sstream *st;

    c->h2_ready = true;
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
        uint64_t now = uv_now(c->sc->srv->loop);
        if (now - c->rate_start_ms >= 1000) {
            c->rate_start_ms = now;
            c->rate_n = 0;
        }
        if (++c->rate_n > SCALER_RESET_RATE) {
            LOG_RATELIMITED(LOG_WARN, "scaler.reset_flood", 1000, "conn=%llu",
                            (unsigned long long)c->id);
            nghttp2_session_terminate_session(h2, NGHTTP2_ENHANCE_YOUR_CALM);
        }
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    st = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (st == NULL)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS &&
        frame->headers.cat == NGHTTP2_HCAT_REQUEST)
        stream_headers_done(st);
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
        stream_dispatch(st);
    return 0;
}

/* After our last frame of a stream: if the client is still sending, tell
 * it to stop (RST_STREAM NO_ERROR, as gRPC servers do). */
static int on_frame_send(nghttp2_session *h2, const nghttp2_frame *frame,
                         void *user)
{
    (void)user;
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        nghttp2_session_get_stream_remote_close(h2, frame->hd.stream_id) == 0)
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t id, uint32_t code,
                           void *user)
{
    sstream *st = nghttp2_session_get_stream_user_data(h2, id);
    (void)code;
    (void)user;

    if (st != NULL) {
        nghttp2_session_set_stream_user_data(h2, id, NULL);
        stream_free(st);
    }
    return 0;
}

static nghttp2_session_callbacks *h2_callbacks(void)
{
    nghttp2_session_callbacks *cb;

    if (nghttp2_session_callbacks_new(&cb) != 0)
        return NULL;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb,
                                                            on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb,
                                                              on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    return cb;
}

/* ---- connections ---- */

static void on_conn_handle_closed(uv_handle_t *h)
{
    sconn *c = h->data;
    scaler *sc = c->sc;

    if (--c->handles > 0)
        return;
    /* nghttp2_session_del does not report the streams it drops. */
    nghttp2_session_del(c->h2);
    while (c->streams != NULL)
        stream_free(c->streams);
    if (c->ssl != NULL)
        SSL_free(c->ssl);
    free(c);
    sc->n_conns--;
    scaler_maybe_free(sc);
}

static void conn_close(sconn *c)
{
    scaler *sc = c->sc;

    if (c->closing)
        return;
    c->closing = true;
    for (sstream *st = c->streams; st != NULL; st = st->next)
        watch_unlink(st);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        sc->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    LOG(LOG_DEBUG, "scaler.close", "conn=%llu", (unsigned long long)c->id);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_written(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    sconn *c = w->c;

    c->write_pending -= w->len;
    free(w);
    if (status != 0) {
        conn_close(c);
        return;
    }
    conn_flush(c);
}

/* Hands buf[0..len) to the socket. */
static int conn_write(sconn *c, const uint8_t *buf, size_t len)
{
    wreq *w = malloc(sizeof(*w) + len);
    uv_buf_t b;

    if (w == NULL)
        return -1;
    memcpy(w->data, buf, len);
    w->c = c;
    w->len = len;
    b = uv_buf_init((char *)w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        free(w);
        return -1;
    }
    c->write_pending += len;
    return 0;
}

/* Writes what OpenSSL has produced (handshake, records, alerts). */
static int tls_write_out(sconn *c)
{
    size_t n = BIO_ctrl_pending(c->wbio);
    uint8_t *buf;
    int rc;

    if (n == 0)
        return 0;
    buf = malloc(n);
    if (buf == NULL)
        return -1;
    if (BIO_read(c->wbio, buf, (int)n) != (int)n) {
        free(buf);
        return -1;
    }
    rc = conn_write(c, buf, n);
    free(buf);
    return rc;
}

/* Whether the connection has nothing more to do: then close it (after a
 * TLS close_notify). */
static void conn_check_done(sconn *c)
{
    bool done;

    if (c->closing || c->write_pending > 0)
        return;
    if (c->dead)
        done = true;
    else if (c->draining)
        done = !nghttp2_session_want_write(c->h2) || !c->tls_ready;
    else
        done = !nghttp2_session_want_read(c->h2) &&
               !nghttp2_session_want_write(c->h2);
    if (!done)
        return;
    if (c->ssl != NULL && c->tls_ready && !c->notify_sent) {
        c->notify_sent = true;
        c->dead = true;
        SSL_shutdown(c->ssl);
        if (tls_write_out(c) == 0 && c->write_pending > 0)
            return; /* closes after the write */
    }
    conn_close(c);
}

/* Writes what nghttp2 has to send, up to the write cap. */
static void conn_flush(sconn *c)
{
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;

    if (c->closing)
        return;
    c->need_flush = false;
    while (c->tls_ready && !c->dead &&
           c->write_pending + len < SCALER_WRITE_CAP &&
           (c->ssl == NULL || BIO_ctrl_pending(c->wbio) < SCALER_WRITE_CAP)) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->h2, &data);

        if (n < 0) {
            LOG_RATELIMITED(LOG_WARN, "scaler.h2_send", 1000,
                            "conn=%llu error=\"%s\"", (unsigned long long)c->id,
                            nghttp2_strerror((int)n));
            free(buf);
            conn_close(c);
            return;
        }
        if (n == 0)
            break;
        if (c->ssl != NULL) {
            if (SSL_write(c->ssl, data, (int)n) != (int)n) {
                free(buf);
                conn_close(c);
                return;
            }
            continue;
        }
        if (len + (size_t)n > cap) {
            size_t ncap = cap == 0 ? 4096 : cap;
            uint8_t *p;
            while (ncap < len + (size_t)n)
                ncap *= 2;
            p = realloc(buf, ncap);
            if (p == NULL) {
                free(buf);
                conn_close(c);
                return;
            }
            buf = p;
            cap = ncap;
        }
        memcpy(buf + len, data, (size_t)n);
        len += (size_t)n;
    }
    if ((len > 0 && conn_write(c, buf, len) != 0) ||
        (c->ssl != NULL && tls_write_out(c) != 0)) {
        free(buf);
        conn_close(c);
        return;
    }
    free(buf);
    if (c->write_pending >= SCALER_WRITE_CAP && !c->read_stopped) {
        c->read_stopped = true;
        uv_read_stop((uv_stream_t *)&c->tcp);
    } else if (c->write_pending < SCALER_WRITE_CAP && c->read_stopped) {
        c->read_stopped = false;
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
    conn_check_done(c);
}

/* Plaintext HTTP/2 bytes in. Returns 0, or -1 after closing. */
static int h2_feed(sconn *c, const uint8_t *p, size_t n)
{
    ssize_t r = nghttp2_session_mem_recv(c->h2, p, n);

    if (r < 0) {
        LOG_RATELIMITED(LOG_INFO, "scaler.h2_error", 1000,
                        "conn=%llu error=\"%s\"", (unsigned long long)c->id,
                        nghttp2_strerror((int)r));
        conn_close(c);
        return -1;
    }
    return 0;
}

static void tls_log_failure(sconn *c, const char *what)
{
    char reason[256] = "unknown";
    unsigned long e = ERR_get_error();

    if (e != 0)
        ERR_error_string_n(e, reason, sizeof(reason));
    LOG_RATELIMITED(LOG_WARN, "scaler.tls_failed", 1000,
                    "conn=%llu during=%s reason=\"%s\"",
                    (unsigned long long)c->id, what, reason);
    ERR_clear_error();
}

/* TLS bytes in: the handshake, then records for nghttp2. */
static void tls_feed(sconn *c, const uint8_t *p, size_t n)
{
    scaler *sc = c->sc;

    if (BIO_write(c->rbio, p, (int)n) != (int)n) {
        conn_close(c);
        return;
    }
    if (!c->tls_ready) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;
            tls_log_failure(c, "handshake");
            c->dead = true; /* send the alert, then close */
            return;
        }
        c->tls_ready = true;
        {
            const unsigned char *alpn = NULL;
            unsigned alen = 0;
            SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
            LOG(LOG_DEBUG, "scaler.tls", "conn=%llu version=%s alpn=%.*s",
                (unsigned long long)c->id, SSL_get_version(c->ssl), (int)alen,
                alen > 0 ? (const char *)alpn : "");
        }
    }
    for (;;) {
        int r = SSL_read(c->ssl, sc->tbuf, sizeof(sc->tbuf));
        int e;

        if (r > 0) {
            if (h2_feed(c, sc->tbuf, (size_t)r) != 0)
                return;
            continue;
        }
        e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return;
        if (e == SSL_ERROR_ZERO_RETURN) {
            c->dead = true; /* the client's close_notify */
            return;
        }
        tls_log_failure(c, "read");
        c->dead = true;
        return;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    sconn *c = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)c->sc->rbuf, sizeof(c->sc->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sconn *c = s->data;

    if (nread == 0 || c->closing)
        return;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (c->dead)
        return;
    if (c->ssl != NULL)
        tls_feed(c, (const uint8_t *)buf->base, (size_t)nread);
    else if (h2_feed(c, (const uint8_t *)buf->base, (size_t)nread) != 0)
        return;
    conn_flush(c);
}

static void on_conn_timer(uv_timer_t *t)
{
    sconn *c = t->data;

    if (c->draining || c->dead) {
        conn_close(c);
        return;
    }
    if (!c->h2_ready) {
        LOG_RATELIMITED(LOG_INFO, "scaler.handshake_timeout", 1000,
                        "conn=%llu tls=%s", (unsigned long long)c->id,
                        c->ssl != NULL ? "true" : "false");
        conn_close(c);
    }
}

/* Submits GOAWAY after ending every stream; closes once written. */
static void conn_drain(sconn *c)
{
    if (c->closing || c->draining)
        return;
    c->draining = true;
    for (sstream *st = c->streams; st != NULL; st = st->next) {
        watch_unlink(st);
        stream_finish(st);
    }
    nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(c->h2),
                          NGHTTP2_NO_ERROR, NULL, 0);
    uv_timer_start(&c->timer, on_conn_timer, SCALER_CLOSE_MS, 0);
    conn_flush(c);
}

static int conn_start(scaler *sc, sconn *c)
{
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, SCALER_MAX_STREAMS},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, SCALER_MAX_HEADERS},
    };
    nghttp2_option *opt;
    int rc;

    if (nghttp2_option_new(&opt) != 0)
        return -1;
    nghttp2_option_set_max_settings(opt, 32);
    rc = nghttp2_session_server_new2(&c->h2, sc->cbs, c, opt);
    nghttp2_option_del(opt);
    if (rc != 0)
        return -1;
    if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, settings, 2) != 0)
        return -1;
    if (sc->ctx != NULL) {
        c->ssl = SSL_new(sc->ctx);
        c->rbio = BIO_new(BIO_s_mem());
        c->wbio = BIO_new(BIO_s_mem());
        if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
            BIO_free(c->rbio);
            BIO_free(c->wbio);
            return -1;
        }
        SSL_set_bio(c->ssl, c->rbio, c->wbio);
        SSL_set_accept_state(c->ssl);
    } else {
        c->tls_ready = true;
    }
    return 0;
}

static void on_connection(uv_stream_t *server_handle, int status)
{
    scaler *sc = server_handle->data;
    sconn *c;

    if (status != 0) {
        LOG_RATELIMITED(LOG_WARN, "scaler.accept_failed", 1000, "error=%s",
                        uv_strerror(status));
        return;
    }
    if (sc->n_conns >= SCALER_MAX_CONNS || sc->closing) {
        net_accept_reject(server_handle, "scaler", sc->n_conns);
        return;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->sc = sc;
    c->id = ++sc->next_conn_id;
    uv_tcp_init(sc->srv->loop, &c->tcp);
    uv_timer_init(sc->srv->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    sc->n_conns++;
    c->next = sc->conns;
    if (sc->conns != NULL)
        sc->conns->prev = c;
    sc->conns = c;
    if (uv_accept(server_handle, (uv_stream_t *)&c->tcp) != 0 ||
        conn_start(sc, c) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_timer_start(&c->timer, on_conn_timer, SCALER_HANDSHAKE_MS, 0);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        conn_close(c);
        return;
    }
    LOG(LOG_DEBUG, "scaler.accept", "conn=%llu open=%zu",
        (unsigned long long)c->id, sc->n_conns);
    conn_flush(c); /* h2c: our SETTINGS */
}

/* ---- TLS context ---- */

/* Selects "h2" from the client's ALPN list; a client that offers ALPN
 * without h2 gets the no_application_protocol alert. */
static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    for (unsigned i = 0; i < inlen; i += 1u + in[i]) {
        if (i + 1u + in[i] > inlen)
            break;
        if (in[i] == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
            *out = in + i + 1;
            *outlen = 2;
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static int tls_fail(const char *what, const char *path)
{
    char reason[256] = "unknown";
    unsigned long e = ERR_get_error();

    if (e != 0)
        ERR_error_string_n(e, reason, sizeof(reason));
    ERR_clear_error();
    LOG(LOG_ERROR, "scaler.tls_config", "what=%s path=\"%s\" reason=\"%s\"",
        what, path, reason);
    return CLAWQ_EINVALID;
}

static int tls_setup(scaler *sc, const scaler_opts *o)
{
    static const unsigned char sid[] = "clawq-scaler";
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (ctx == NULL)
        return tls_fail("context", "");
    sc->ctx = ctx;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* TLS 1.2 for HTTP/2: ephemeral key exchange and AEAD only (RFC 9113
     * section 9.2.2). TLS 1.3 suites are all acceptable. */
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1)
        return tls_fail("ciphers", "");
    if (SSL_CTX_use_certificate_chain_file(ctx, o->tls_cert) != 1)
        return tls_fail("certificate", o->tls_cert);
    if (SSL_CTX_use_PrivateKey_file(ctx, o->tls_key, SSL_FILETYPE_PEM) != 1)
        return tls_fail("key", o->tls_key);
    if (SSL_CTX_check_private_key(ctx) != 1)
        return tls_fail("key_mismatch", o->tls_key);
    if (o->tls_ca != NULL && o->tls_ca[0] != '\0') {
        STACK_OF(X509_NAME) * names;
        if (SSL_CTX_load_verify_locations(ctx, o->tls_ca, NULL) != 1)
            return tls_fail("ca", o->tls_ca);
        names = SSL_load_client_CA_file(o->tls_ca);
        if (names == NULL)
            return tls_fail("ca", o->tls_ca);
        SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(
            ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    return 0;
}

/* ---- the scaler ---- */

static void scaler_maybe_free(scaler *sc)
{
    if (!sc->closing || sc->handles > 0 || sc->n_conns > 0)
        return;
    CLAWQ_ASSERT(sc->watches == NULL);
    if (sc->ctx != NULL)
        SSL_CTX_free(sc->ctx);
    nghttp2_session_callbacks_del(sc->cbs);
    LOG(LOG_INFO, "scaler.closed", "addr=%s", sc->addr);
    free(sc);
}

static void on_scaler_handle_closed(uv_handle_t *h)
{
    scaler *sc = h->data;

    sc->handles--;
    scaler_maybe_free(sc);
}

int scaler_listen(server *srv, const scaler_opts *o, scaler **out)
{
    struct sockaddr_storage sa;
    scaler *sc;
    bool tls = o->tls_cert != NULL && o->tls_cert[0] != '\0';
    int rc;

    if (o->addr == NULL || net_addr_parse(o->addr, &sa) != 0) {
        LOG(LOG_ERROR, "scaler.listen_failed", "addr=\"%s\" error=\"%s\"",
            o->addr != NULL ? o->addr : "", "not an address");
        return CLAWQ_EINVALID;
    }
    if (tls != (o->tls_key != NULL && o->tls_key[0] != '\0') ||
        (!tls && o->tls_ca != NULL && o->tls_ca[0] != '\0')) {
        LOG(LOG_ERROR, "scaler.tls_config", "%s",
            "reason=\"the certificate, key and CA need a certificate and "
            "key together\"");
        return CLAWQ_EINVALID;
    }
    sc = calloc(1, sizeof(*sc));
    if (sc == NULL)
        return CLAWQ_ENOMEM;
    sc->srv = srv;
    snprintf(sc->addr, sizeof(sc->addr), "%s", o->addr);
    sc->cbs = h2_callbacks();
    if (sc->cbs == NULL) {
        free(sc);
        return CLAWQ_ENOMEM;
    }
    if (tls && tls_setup(sc, o) != 0) {
        if (sc->ctx != NULL)
            SSL_CTX_free(sc->ctx);
        nghttp2_session_callbacks_del(sc->cbs);
        free(sc);
        return CLAWQ_EINVALID;
    }
    uv_tcp_init(srv->loop, &sc->tcp);
    uv_timer_init(srv->loop, &sc->watch_timer);
    sc->tcp.data = sc->watch_timer.data = sc;
    sc->handles = 2;
    rc = uv_tcp_bind(&sc->tcp, (const struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&sc->tcp, 1024, on_connection);
    if (rc != 0) {
        LOG(LOG_ERROR, "scaler.listen_failed", "addr=%s error=\"%s\"", o->addr,
            uv_strerror(rc));
        sc->closing = true;
        uv_close((uv_handle_t *)&sc->tcp, on_scaler_handle_closed);
        uv_close((uv_handle_t *)&sc->watch_timer, on_scaler_handle_closed);
        return CLAWQ_EIO;
    }
    LOG(LOG_INFO, "scaler.listen", "addr=%s tls=%s client_certs=%s", o->addr,
        tls ? "true" : "false",
        tls && o->tls_ca != NULL && o->tls_ca[0] != '\0' ? "required" : "none");
    *out = sc;
    return 0;
}

void scaler_close(scaler *sc)
{
    sconn *c, *next;

    if (sc == NULL || sc->closing)
        return;
    sc->closing = true;
    uv_close((uv_handle_t *)&sc->tcp, on_scaler_handle_closed);
    uv_close((uv_handle_t *)&sc->watch_timer, on_scaler_handle_closed);
    for (c = sc->conns; c != NULL; c = next) {
        next = c->next;
        if (c->tls_ready && !c->dead)
            conn_drain(c);
        else
            conn_close(c);
    }
    scaler_maybe_free(sc);
}
