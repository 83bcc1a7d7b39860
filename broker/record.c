/* record.c: task and queue records (msgpack maps with small integer keys)
 * and key layouts. See record.h.
 *
 * Encoders write only the fields that are not zero or empty, so records
 * stay small; decoders default absent fields to zero and skip unknown
 * keys. Byte fields are msgpack bin; the decoder also accepts str.
 */
#include "record.h"

/* Task record keys. Never renumber; append. */
enum {
    TK_ID = 0,
    TK_QID = 1,
    TK_STATE = 2,
    TK_PRIORITY = 3,
    TK_DEAD_REASON = 4,
    TK_ATTEMPT = 5,
    TK_MAX_ATTEMPTS = 6,
    TK_CREATED = 7,
    TK_RUN_AT = 8,
    TK_DEADLINE = 9,
    TK_SEQ = 10,
    TK_READY_AT = 11,
    TK_LEASE_ID = 12,
    TK_LEASE_EXPIRES = 13,
    TK_PROGRESS = 14,
    TK_DEAD_AT = 15,
    TK_WORKER = 16,
    TK_CHECKPOINT = 17,
    TK_IDEM_KEY = 18,
    TK_HEADERS = 19,
    TK_PAYLOAD = 20,
    TK_ERRORS = 21, /* array of [at_ms, attempt, msg], newest first */
    TK_LEASED_AT = 22,
};

/* Queue record keys. Never renumber; append. */
enum {
    QK_QID = 0,
    QK_CREATED = 1,
    QK_OLDEST_READY = 2,
    QK_LEASE_MS = 10,
    QK_MAX_ATTEMPTS = 11,
    QK_BACKOFF_BASE = 12,
    QK_BACKOFF_MAX = 13,
    QK_MAX_DEPTH = 14,
    QK_MAX_PAYLOAD = 15,
    QK_DEDUP_WINDOW = 16,
    QK_PAUSED = 17,
    QK_READY = 20,
    QK_DELAYED = 21,
    QK_LEASED = 22,
    QK_DEAD = 23,
    QK_PUT_TOTAL = 24,
    QK_DEDUPED_TOTAL = 25,
    QK_LEASED_TOTAL = 26,
    QK_ACKED_TOTAL = 27,
    QK_NACKED_TOTAL = 28,
    QK_FAILED_TOTAL = 29,
    QK_EXPIRED_TOTAL = 30,
    QK_DEAD_TOTAL = 31,
    QK_W_WORKERS = 40,
    QK_W_MEDIAN = 41,
    QK_W_CAPACITY = 42,
    QK_W_INFLIGHT = 43,
    QK_W_AT = 44,
};

const char *dead_reason_name(int reason)
{
    switch (reason) {
    case DEAD_FAILED:
        return "failed";
    case DEAD_MAX_ATTEMPTS:
        return "max_attempts";
    case DEAD_EXPIRED:
        return "expired";
    default:
        return "";
    }
}

const char *task_state_name(int state)
{
    switch (state) {
    case TASK_READY:
        return "ready";
    case TASK_DELAYED:
        return "delayed";
    case TASK_LEASED:
        return "leased";
    case TASK_DEAD:
        return "dead";
    default:
        return "";
    }
}

void queue_settings_default(queue_settings *s)
{
    memset(s, 0, sizeof(*s));
    s->lease_ms = 30000;
    s->max_attempts = 5;
    s->backoff_base_ms = 1000;
    s->backoff_max_ms = 300000;
    s->max_depth = 0;
    s->max_payload = 1024 * 1024;
    s->dedup_window_ms = 600000;
    s->paused = false;
}

bool queue_name_is_valid(cq_bytes name)
{
    size_t i;

    if (name.len == 0 || name.len > QUEUE_NAME_MAX)
        return false;
    for (i = 0; i < name.len; i++) {
        uint8_t c = name.ptr[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
              c == '-'))
            return false;
    }
    return true;
}

/* ---- encoding ---- */

static void enc_u64(mp_writer *w, unsigned key, uint64_t v)
{
    mp_write_uint(w, key);
    mp_write_uint(w, v);
}

static void enc_bin(mp_writer *w, unsigned key, cq_bytes b)
{
    mp_write_uint(w, key);
    mp_write_bin(w, b);
}

#define COUNT_U(v) ((v) != 0)
#define COUNT_B(b) ((b).len != 0)

int task_rec_encode(const task_rec *t, cq_buf *out)
{
    mp_writer w;
    uint32_t n = 0, i;

    n += 1 + COUNT_U(t->qid) + COUNT_U(t->state) + COUNT_U(t->priority) +
         COUNT_U(t->dead_reason) + COUNT_U(t->attempt) +
         COUNT_U(t->max_attempts) + COUNT_U(t->created_ms) +
         COUNT_U(t->run_at_ms) + COUNT_U(t->deadline_ms) + COUNT_U(t->seq) +
         COUNT_U(t->ready_at_ms) + COUNT_U(t->lease_id) +
         COUNT_U(t->lease_expires_ms) + COUNT_U(t->progress) +
         COUNT_U(t->dead_at_ms) + COUNT_B(t->worker) + COUNT_B(t->checkpoint) +
         COUNT_B(t->idem_key) + COUNT_B(t->headers) + COUNT_B(t->payload) +
         COUNT_U(t->n_errors) + COUNT_U(t->leased_at_ms);

    /* Room for all of it up front keeps the writer on its fast path. */
    (void)cq_buf_reserve(out, 320 + t->worker.len + t->checkpoint.len +
                                  t->idem_key.len + t->headers.len +
                                  t->payload.len +
                                  TASK_MAX_ERRORS * (TASK_ERROR_MAX + 24));
    mp_writer_init(&w, out);
    mp_write_map(&w, n);
    enc_u64(&w, TK_ID, t->id);
#define U(key, v)                                                              \
    if ((v) != 0)                                                              \
    enc_u64(&w, key, v)
#define B(key, b)                                                              \
    if ((b).len != 0)                                                          \
    enc_bin(&w, key, b)
    U(TK_QID, t->qid);
    U(TK_STATE, t->state);
    U(TK_PRIORITY, t->priority);
    U(TK_DEAD_REASON, t->dead_reason);
    U(TK_ATTEMPT, t->attempt);
    U(TK_MAX_ATTEMPTS, t->max_attempts);
    U(TK_CREATED, t->created_ms);
    U(TK_RUN_AT, t->run_at_ms);
    U(TK_DEADLINE, t->deadline_ms);
    U(TK_SEQ, t->seq);
    U(TK_READY_AT, t->ready_at_ms);
    U(TK_LEASE_ID, t->lease_id);
    U(TK_LEASE_EXPIRES, t->lease_expires_ms);
    U(TK_PROGRESS, t->progress);
    U(TK_DEAD_AT, t->dead_at_ms);
    U(TK_LEASED_AT, t->leased_at_ms);
    B(TK_WORKER, t->worker);
    B(TK_CHECKPOINT, t->checkpoint);
    B(TK_IDEM_KEY, t->idem_key);
    B(TK_HEADERS, t->headers);
    B(TK_PAYLOAD, t->payload);
    if (t->n_errors != 0) {
        CLAWQ_ASSERT(t->n_errors <= TASK_MAX_ERRORS);
        mp_write_uint(&w, TK_ERRORS);
        mp_write_array(&w, t->n_errors);
        for (i = 0; i < t->n_errors; i++) {
            const task_error *er = &t->errors[i];
            mp_write_array(&w, 3);
            mp_write_uint(&w, er->at_ms);
            mp_write_uint(&w, er->attempt);
            mp_write_bin(&w, er->msg);
        }
    }
    return w.err;
}

int queue_rec_encode(const queue_rec *q, cq_buf *out)
{
    const queue_settings *s = &q->settings;
    const queue_counters *c = &q->counters;
    mp_writer w;

    /* Settings are always written (a zero is a real value there). Room
     * for all of it up front keeps the writer on its fast path. */
    (void)cq_buf_reserve(out, 3 + 28 * 10);
    mp_writer_init(&w, out);
    mp_write_map(&w, 3 + 8 + 12 + (q->workers.at_ms != 0 ? 5 : 0));
    enc_u64(&w, QK_QID, q->qid);
    enc_u64(&w, QK_CREATED, q->created_ms);
    enc_u64(&w, QK_OLDEST_READY, q->oldest_ready_ms);
    enc_u64(&w, QK_LEASE_MS, s->lease_ms);
    enc_u64(&w, QK_MAX_ATTEMPTS, s->max_attempts);
    enc_u64(&w, QK_BACKOFF_BASE, s->backoff_base_ms);
    enc_u64(&w, QK_BACKOFF_MAX, s->backoff_max_ms);
    enc_u64(&w, QK_MAX_DEPTH, s->max_depth);
    enc_u64(&w, QK_MAX_PAYLOAD, s->max_payload);
    enc_u64(&w, QK_DEDUP_WINDOW, s->dedup_window_ms);
    enc_u64(&w, QK_PAUSED, s->paused);
    enc_u64(&w, QK_READY, c->ready);
    enc_u64(&w, QK_DELAYED, c->delayed);
    enc_u64(&w, QK_LEASED, c->leased);
    enc_u64(&w, QK_DEAD, c->dead);
    enc_u64(&w, QK_PUT_TOTAL, c->put_total);
    enc_u64(&w, QK_DEDUPED_TOTAL, c->deduped_total);
    enc_u64(&w, QK_LEASED_TOTAL, c->leased_total);
    enc_u64(&w, QK_ACKED_TOTAL, c->acked_total);
    enc_u64(&w, QK_NACKED_TOTAL, c->nacked_total);
    enc_u64(&w, QK_FAILED_TOTAL, c->failed_total);
    enc_u64(&w, QK_EXPIRED_TOTAL, c->expired_total);
    enc_u64(&w, QK_DEAD_TOTAL, c->dead_total);
    if (q->workers.at_ms != 0) {
        enc_u64(&w, QK_W_WORKERS, q->workers.workers);
        enc_u64(&w, QK_W_MEDIAN, q->workers.median_capacity);
        enc_u64(&w, QK_W_CAPACITY, q->workers.capacity);
        enc_u64(&w, QK_W_INFLIGHT, q->workers.inflight);
        enc_u64(&w, QK_W_AT, q->workers.at_ms);
    }
    return w.err;
}

/* ---- decoding ---- */

static bool get_u64(mp_reader *r, uint64_t max, uint64_t *out)
{
    return mp_read_uint(r, max, out);
}

static bool get_u32(mp_reader *r, uint32_t *out)
{
    uint64_t x;
    if (!mp_read_uint(r, UINT32_MAX, &x))
        return false;
    *out = (uint32_t)x;
    return true;
}

static bool get_u8(mp_reader *r, uint64_t max, uint8_t *out)
{
    uint64_t x;
    if (!mp_read_uint(r, max, &x))
        return false;
    *out = (uint8_t)x;
    return true;
}

static bool decode_errors(mp_reader *r, task_rec *t)
{
    uint32_t i, n, k;

    if (!mp_read_array(r, &n) || n > TASK_MAX_ERRORS)
        return false;
    for (i = 0; i < n; i++) {
        task_error *er = &t->errors[i];
        if (!mp_read_array(r, &k) || k != 3 ||
            !get_u64(r, UINT64_MAX, &er->at_ms) || !get_u32(r, &er->attempt) ||
            !mp_read_bytes(r, &er->msg))
            return false;
    }
    t->n_errors = n;
    return true;
}

static bool task_field(task_rec *t, uint64_t key, mp_reader *v)
{
    switch (key) {
    case TK_ID:
        return get_u64(v, UINT64_MAX, &t->id);
    case TK_QID:
        return get_u32(v, &t->qid);
    case TK_STATE:
        return get_u8(v, TASK_DEAD, &t->state);
    case TK_PRIORITY:
        return get_u8(v, 255, &t->priority);
    case TK_DEAD_REASON:
        return get_u8(v, 255, &t->dead_reason);
    case TK_ATTEMPT:
        return get_u32(v, &t->attempt);
    case TK_MAX_ATTEMPTS:
        return get_u32(v, &t->max_attempts);
    case TK_CREATED:
        return get_u64(v, UINT64_MAX, &t->created_ms);
    case TK_RUN_AT:
        return get_u64(v, UINT64_MAX, &t->run_at_ms);
    case TK_DEADLINE:
        return get_u64(v, UINT64_MAX, &t->deadline_ms);
    case TK_SEQ:
        return get_u64(v, UINT64_MAX, &t->seq);
    case TK_READY_AT:
        return get_u64(v, UINT64_MAX, &t->ready_at_ms);
    case TK_LEASE_ID:
        return get_u64(v, UINT64_MAX, &t->lease_id);
    case TK_LEASE_EXPIRES:
        return get_u64(v, UINT64_MAX, &t->lease_expires_ms);
    case TK_PROGRESS:
        return get_u64(v, UINT64_MAX, &t->progress);
    case TK_DEAD_AT:
        return get_u64(v, UINT64_MAX, &t->dead_at_ms);
    case TK_WORKER:
        return mp_read_bytes(v, &t->worker);
    case TK_CHECKPOINT:
        return mp_read_bytes(v, &t->checkpoint);
    case TK_IDEM_KEY:
        return mp_read_bytes(v, &t->idem_key);
    case TK_HEADERS:
        return mp_read_bytes(v, &t->headers);
    case TK_PAYLOAD:
        return mp_read_bytes(v, &t->payload);
    case TK_ERRORS:
        return decode_errors(v, t);
    case TK_LEASED_AT:
        return get_u64(v, UINT64_MAX, &t->leased_at_ms);
    default:
        return mp_skip(v, 3); /* a newer writer's field */
    }
}

/* Decodes a msgpack map with integer keys, handing each value to field()
 * to read. Records nest at most 4 containers deep. */
static int decode_map(const void *buf, size_t len, void *out,
                      bool (*field)(void *out, uint64_t key, mp_reader *r))
{
    mp_reader r;
    uint64_t key;
    uint32_t i, n;

    mp_reader_init(&r, buf, len);
    if (!mp_read_map(&r, &n))
        return CLAWQ_ECORRUPT;
    for (i = 0; i < n; i++) {
        if (!mp_read_uint(&r, UINT64_MAX, &key) || !field(out, key, &r))
            return CLAWQ_ECORRUPT;
    }
    return mp_reader_done(&r) ? 0 : CLAWQ_ECORRUPT;
}

static bool task_field_cb(void *out, uint64_t key, mp_reader *v)
{
    return task_field(out, key, v);
}

int task_rec_decode(const void *buf, size_t len, task_rec *out)
{
    memset(out, 0, sizeof(*out));
    return decode_map(buf, len, out, task_field_cb);
}

static bool queue_field(queue_rec *q, uint64_t key, mp_reader *v)
{
    queue_settings *s = &q->settings;
    queue_counters *c = &q->counters;
    uint64_t x;

    switch (key) {
    case QK_QID:
        return get_u32(v, &q->qid);
    case QK_CREATED:
        return get_u64(v, UINT64_MAX, &q->created_ms);
    case QK_OLDEST_READY:
        return get_u64(v, UINT64_MAX, &q->oldest_ready_ms);
    case QK_LEASE_MS:
        return get_u32(v, &s->lease_ms);
    case QK_MAX_ATTEMPTS:
        return get_u32(v, &s->max_attempts);
    case QK_BACKOFF_BASE:
        return get_u32(v, &s->backoff_base_ms);
    case QK_BACKOFF_MAX:
        return get_u32(v, &s->backoff_max_ms);
    case QK_MAX_DEPTH:
        return get_u64(v, UINT64_MAX, &s->max_depth);
    case QK_MAX_PAYLOAD:
        return get_u32(v, &s->max_payload);
    case QK_DEDUP_WINDOW:
        return get_u64(v, UINT64_MAX, &s->dedup_window_ms);
    case QK_PAUSED:
        if (!get_u64(v, 1, &x))
            return false;
        s->paused = x != 0;
        return true;
    case QK_READY:
        return get_u64(v, UINT64_MAX, &c->ready);
    case QK_DELAYED:
        return get_u64(v, UINT64_MAX, &c->delayed);
    case QK_LEASED:
        return get_u64(v, UINT64_MAX, &c->leased);
    case QK_DEAD:
        return get_u64(v, UINT64_MAX, &c->dead);
    case QK_PUT_TOTAL:
        return get_u64(v, UINT64_MAX, &c->put_total);
    case QK_DEDUPED_TOTAL:
        return get_u64(v, UINT64_MAX, &c->deduped_total);
    case QK_LEASED_TOTAL:
        return get_u64(v, UINT64_MAX, &c->leased_total);
    case QK_ACKED_TOTAL:
        return get_u64(v, UINT64_MAX, &c->acked_total);
    case QK_NACKED_TOTAL:
        return get_u64(v, UINT64_MAX, &c->nacked_total);
    case QK_FAILED_TOTAL:
        return get_u64(v, UINT64_MAX, &c->failed_total);
    case QK_EXPIRED_TOTAL:
        return get_u64(v, UINT64_MAX, &c->expired_total);
    case QK_DEAD_TOTAL:
        return get_u64(v, UINT64_MAX, &c->dead_total);
    case QK_W_WORKERS:
        return get_u32(v, &q->workers.workers);
    case QK_W_MEDIAN:
        return get_u32(v, &q->workers.median_capacity);
    case QK_W_CAPACITY:
        return get_u64(v, UINT64_MAX, &q->workers.capacity);
    case QK_W_INFLIGHT:
        return get_u64(v, UINT64_MAX, &q->workers.inflight);
    case QK_W_AT:
        return get_u64(v, UINT64_MAX, &q->workers.at_ms);
    default:
        return mp_skip(v, 3);
    }
}

static bool queue_field_cb(void *out, uint64_t key, mp_reader *v)
{
    return queue_field(out, key, v);
}

int queue_rec_decode(const void *buf, size_t len, queue_rec *out)
{
    memset(out, 0, sizeof(*out));
    queue_settings_default(&out->settings);
    return decode_map(buf, len, out, queue_field_cb);
}

/* ---- keys ---- */

size_t key_task(uint8_t *key, uint64_t id)
{
    cq_put_be64(key, id);
    return KEY_TASK_LEN;
}

size_t key_ready(uint8_t *key, uint32_t qid, uint8_t priority, uint64_t seq)
{
    cq_put_be32(key, qid);
    key[4] = priority;
    cq_put_be64(key + 5, seq);
    return KEY_READY_LEN;
}

size_t key_time_id(uint8_t *key, uint64_t at_ms, uint64_t id)
{
    cq_put_be64(key, at_ms);
    cq_put_be64(key + 8, id);
    return KEY_TIME_ID_LEN;
}

size_t key_dead(uint8_t *key, uint32_t qid, uint64_t dead_at_ms, uint64_t id)
{
    cq_put_be32(key, qid);
    cq_put_be64(key + 4, dead_at_ms);
    cq_put_be64(key + 12, id);
    return KEY_DEAD_LEN;
}

size_t key_idem(uint8_t *key, uint32_t qid, cq_bytes idem_key)
{
    CLAWQ_ASSERT(idem_key.len <= TASK_KEY_MAX);
    cq_put_be32(key, qid);
    if (idem_key.len > 0)
        memcpy(key + 4, idem_key.ptr, idem_key.len);
    return 4 + idem_key.len;
}

size_t key_idem_exp(uint8_t *key, uint64_t at_ms, uint32_t qid,
                    cq_bytes idem_key)
{
    CLAWQ_ASSERT(idem_key.len <= TASK_KEY_MAX);
    cq_put_be64(key, at_ms);
    cq_put_be32(key + 8, qid);
    if (idem_key.len > 0)
        memcpy(key + 12, idem_key.ptr, idem_key.len);
    return 12 + idem_key.len;
}
