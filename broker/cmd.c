/* cmd.c: the command codec. See cmd.h for the layout.
 *
 * The writer emits a fixed-width envelope header (array of 3, version,
 * uint64 now_ms, array32 of ops) so that now_ms and the op count can be
 * patched in place at finish; the decoder accepts any valid msgpack
 * encoding of the same structure.
 */
#include "cmd.h"

#define ENVELOPE_LEN 16 /* 0x93 0x01 0xcf u64 0xdd u32 */
#define NOW_OFF 3
#define COUNT_OFF 12

static const uint8_t envelope[ENVELOPE_LEN] = {0x93, CMD_FORMAT_VERSION, 0xcf,
                                               [COUNT_OFF - 1] = 0xdd};

const char *cmd_type_name(int type)
{
    static const char *const names[] = {
        "",          "put",         "lease",        "extend",
        "ack",       "nack",        "fail",         "tick",
        "queue_set", "queue_pause", "queue_resume", "dlq_replay",
        "dlq_purge", "queue_purge", "workers",      "member",
    };
    if (type < 0 || (size_t)type >= sizeof(names) / sizeof(names[0]))
        return "";
    return names[type];
}

/* ---- writer ---- */

static void pack_opt_bytes(mp_writer *w, bool present, cq_bytes b)
{
    if (present)
        mp_write_bin(w, b);
    else
        mp_write_nil(w);
}

static int pack_op(mp_writer *w, const cmd_op *op)
{
    const cmd_put *p;
    const cmd_lease *l;
    const cmd_extend *x;
    const cmd_settle *s;
    const cmd_queue_set *qs;
    const cmd_dlq *d;

    switch (op->type) {
    case CMD_PUT:
        p = &op->u.put;
        mp_write_array(w, 9);
        mp_write_uint(w, op->type);
        mp_write_bin(w, p->queue);
        mp_write_bin(w, p->payload);
        mp_write_uint(w, p->priority);
        mp_write_uint(w, p->run_at_ms);
        mp_write_uint(w, p->deadline_ms);
        mp_write_uint(w, p->max_attempts);
        pack_opt_bytes(w, p->idem_key.len > 0, p->idem_key);
        pack_opt_bytes(w, p->headers.len > 0, p->headers);
        return 0;
    case CMD_LEASE:
        l = &op->u.lease;
        mp_write_array(w, 6);
        mp_write_uint(w, op->type);
        mp_write_bin(w, l->queue);
        mp_write_bin(w, l->worker);
        mp_write_uint(w, l->max);
        mp_write_uint(w, l->lease_ms);
        mp_write_uint(w, l->max_bytes);
        return 0;
    case CMD_EXTEND:
        x = &op->u.extend;
        mp_write_array(w, 6);
        mp_write_uint(w, op->type);
        mp_write_uint(w, x->id);
        mp_write_uint(w, x->lease_id);
        mp_write_uint(w, x->lease_ms);
        if (x->has_progress)
            mp_write_uint(w, x->progress);
        else
            mp_write_nil(w);
        pack_opt_bytes(w, x->has_checkpoint, x->checkpoint);
        return 0;
    case CMD_ACK:
        s = &op->u.settle;
        mp_write_array(w, 3);
        mp_write_uint(w, op->type);
        mp_write_uint(w, s->id);
        mp_write_uint(w, s->lease_id);
        return 0;
    case CMD_NACK:
    case CMD_FAIL:
        s = &op->u.settle;
        mp_write_array(w, op->type == CMD_NACK ? 5 : 4);
        mp_write_uint(w, op->type);
        mp_write_uint(w, s->id);
        mp_write_uint(w, s->lease_id);
        if (op->type == CMD_NACK)
            mp_write_int(w, s->delay_ms);
        mp_write_bin(w, s->error);
        return 0;
    case CMD_TICK:
        mp_write_array(w, 2);
        mp_write_uint(w, op->type);
        mp_write_uint(w, op->u.tick.max);
        return 0;
    case CMD_QUEUE_SET:
        qs = &op->u.queue_set;
        mp_write_array(w, 10);
        mp_write_uint(w, op->type);
        mp_write_bin(w, qs->queue);
        mp_write_uint(w, qs->fields);
        mp_write_uint(w, qs->settings.lease_ms);
        mp_write_uint(w, qs->settings.max_attempts);
        mp_write_uint(w, qs->settings.backoff_base_ms);
        mp_write_uint(w, qs->settings.backoff_max_ms);
        mp_write_uint(w, qs->settings.max_depth);
        mp_write_uint(w, qs->settings.max_payload);
        mp_write_uint(w, qs->settings.dedup_window_ms);
        return 0;
    case CMD_QUEUE_PAUSE:
    case CMD_QUEUE_RESUME:
    case CMD_QUEUE_PURGE:
        mp_write_array(w, 2);
        mp_write_uint(w, op->type);
        mp_write_bin(w, op->u.queue.queue);
        return 0;
    case CMD_DLQ_REPLAY:
    case CMD_DLQ_PURGE:
        d = &op->u.dlq;
        mp_write_array(w, 6);
        mp_write_uint(w, op->type);
        mp_write_bin(w, d->queue);
        mp_write_bin(w, d->error_substr);
        mp_write_uint(w, d->from_ms);
        mp_write_uint(w, d->to_ms);
        mp_write_uint(w, d->max);
        return 0;
    case CMD_MEMBER:
        mp_write_array(w, 3);
        mp_write_uint(w, op->type);
        mp_write_uint(w, op->u.member.node_id);
        mp_write_bin(w, op->u.member.client_addr);
        return 0;
    case CMD_WORKERS:
        mp_write_array(w, 6);
        mp_write_uint(w, op->type);
        mp_write_bin(w, op->u.workers.queue);
        mp_write_uint(w, op->u.workers.workers);
        mp_write_uint(w, op->u.workers.median_capacity);
        mp_write_uint(w, op->u.workers.capacity);
        mp_write_uint(w, op->u.workers.inflight);
        return 0;
    default:
        return CLAWQ_EINVALID;
    }
}

void cmd_writer_init(cmd_writer *w)
{
    cq_buf_init(&w->buf, CMD_MAX_BYTES);
    w->n_ops = 0;
}

void cmd_writer_fini(cmd_writer *w)
{
    cq_buf_fini(&w->buf);
    w->n_ops = 0;
}

void cmd_writer_reset(cmd_writer *w)
{
    w->buf.len = 0;
    w->n_ops = 0;
}

int cmd_writer_add(cmd_writer *w, const cmd_op *op)
{
    size_t mark;
    mp_writer out;
    int rc;

    if (w->n_ops >= CMD_MAX_OPS)
        return CLAWQ_ETOO_LARGE;
    if (w->buf.len == 0) {
        rc = cq_buf_append(&w->buf, envelope, sizeof(envelope));
        if (rc != 0)
            return rc;
    }
    mark = w->buf.len;
    mp_writer_init(&out, &w->buf);
    rc = pack_op(&out, op);
    if (rc == 0)
        rc = out.err;
    if (rc != 0) {
        w->buf.len = mark; /* drop the partial op */
        return rc;
    }
    w->n_ops++;
    return 0;
}

cq_bytes cmd_writer_finish(cmd_writer *w, uint64_t now_ms)
{
    if (w->buf.len == 0) { /* no ops: an empty command is still valid */
        int rc = cq_buf_append(&w->buf, envelope, sizeof(envelope));
        CLAWQ_ASSERT(rc == 0);
    }
    cq_put_be64(w->buf.ptr + NOW_OFF, now_ms);
    cq_put_be32(w->buf.ptr + COUNT_OFF, w->n_ops);
    return cq_bytes_of(w->buf.ptr, w->buf.len);
}

int cmd_encode(uint64_t now_ms, const cmd_op *ops, size_t n, void **buf,
               size_t *len)
{
    cmd_writer w;
    size_t i;
    int rc;

    cmd_writer_init(&w);
    for (i = 0; i < n; i++) {
        rc = cmd_writer_add(&w, &ops[i]);
        if (rc != 0) {
            cmd_writer_fini(&w);
            return rc;
        }
    }
    *len = cmd_writer_finish(&w, now_ms).len;
    *buf = w.buf.ptr; /* ownership moves to the caller */
    return 0;
}

/* ---- decoder ---- */

static bool d_u64(mp_reader *r, uint64_t max, uint64_t *out)
{
    return mp_read_uint(r, max, out);
}

static bool d_u32(mp_reader *r, uint32_t *out)
{
    uint64_t v;
    if (!mp_read_uint(r, UINT32_MAX, &v))
        return false;
    *out = (uint32_t)v;
    return true;
}

/* nil or bytes; *present says which. */
static bool d_opt_bytes(mp_reader *r, bool *present, cq_bytes *out)
{
    if (mp_read_nil(r)) {
        *present = false;
        *out = cq_bytes_of(NULL, 0);
        return true;
    }
    *present = true;
    return mp_read_bytes(r, out);
}

static int decode_op(mp_reader *f, cmd_op *op)
{
    uint32_t n;
    uint64_t t, v;
    bool present;

    if (!mp_read_array(f, &n) || n < 1 || !d_u64(f, 255, &t))
        return CLAWQ_ECORRUPT;
    memset(op, 0, sizeof(*op));
    op->type = (uint8_t)t;

#define NEED(count)                                                            \
    if (n != (count))                                                          \
    return CLAWQ_ECORRUPT
    switch (t) {
    case CMD_PUT: {
        cmd_put *p = &op->u.put;
        NEED(9);
        if (!mp_read_bytes(f, &p->queue) || !mp_read_bytes(f, &p->payload) ||
            !d_u64(f, 255, &v) || !d_u64(f, UINT64_MAX, &p->run_at_ms) ||
            !d_u64(f, UINT64_MAX, &p->deadline_ms) ||
            !d_u32(f, &p->max_attempts) ||
            !d_opt_bytes(f, &present, &p->idem_key) ||
            !d_opt_bytes(f, &present, &p->headers))
            return CLAWQ_ECORRUPT;
        p->priority = (uint8_t)v;
        return 0;
    }
    case CMD_LEASE: {
        cmd_lease *l = &op->u.lease;
        NEED(6);
        if (!mp_read_bytes(f, &l->queue) || !mp_read_bytes(f, &l->worker) ||
            !d_u32(f, &l->max) || !d_u32(f, &l->lease_ms) ||
            !d_u32(f, &l->max_bytes))
            return CLAWQ_ECORRUPT;
        return 0;
    }
    case CMD_EXTEND: {
        cmd_extend *x = &op->u.extend;
        NEED(6);
        if (!d_u64(f, UINT64_MAX, &x->id) ||
            !d_u64(f, UINT64_MAX, &x->lease_id) || !d_u32(f, &x->lease_ms))
            return CLAWQ_ECORRUPT;
        if (mp_read_nil(f))
            x->has_progress = false;
        else if (d_u64(f, UINT64_MAX, &x->progress))
            x->has_progress = true;
        else
            return CLAWQ_ECORRUPT;
        if (!d_opt_bytes(f, &x->has_checkpoint, &x->checkpoint))
            return CLAWQ_ECORRUPT;
        return 0;
    }
    case CMD_ACK: {
        cmd_settle *s = &op->u.settle;
        NEED(3);
        if (!d_u64(f, UINT64_MAX, &s->id) ||
            !d_u64(f, UINT64_MAX, &s->lease_id))
            return CLAWQ_ECORRUPT;
        s->delay_ms = -1;
        return 0;
    }
    case CMD_NACK:
    case CMD_FAIL: {
        cmd_settle *s = &op->u.settle;
        NEED(t == CMD_NACK ? 5u : 4u);
        if (!d_u64(f, UINT64_MAX, &s->id) ||
            !d_u64(f, UINT64_MAX, &s->lease_id))
            return CLAWQ_ECORRUPT;
        s->delay_ms = -1;
        if (t == CMD_NACK && !mp_read_int(f, &s->delay_ms))
            return CLAWQ_ECORRUPT;
        if (!mp_read_bytes(f, &s->error))
            return CLAWQ_ECORRUPT;
        return 0;
    }
    case CMD_TICK:
        NEED(2);
        return d_u32(f, &op->u.tick.max) ? 0 : CLAWQ_ECORRUPT;
    case CMD_QUEUE_SET: {
        cmd_queue_set *qs = &op->u.queue_set;
        NEED(10);
        if (!mp_read_bytes(f, &qs->queue) || !d_u32(f, &qs->fields) ||
            !d_u32(f, &qs->settings.lease_ms) ||
            !d_u32(f, &qs->settings.max_attempts) ||
            !d_u32(f, &qs->settings.backoff_base_ms) ||
            !d_u32(f, &qs->settings.backoff_max_ms) ||
            !d_u64(f, UINT64_MAX, &qs->settings.max_depth) ||
            !d_u32(f, &qs->settings.max_payload) ||
            !d_u64(f, UINT64_MAX, &qs->settings.dedup_window_ms))
            return CLAWQ_ECORRUPT;
        return 0;
    }
    case CMD_QUEUE_PAUSE:
    case CMD_QUEUE_RESUME:
    case CMD_QUEUE_PURGE:
        NEED(2);
        return mp_read_bytes(f, &op->u.queue.queue) ? 0 : CLAWQ_ECORRUPT;
    case CMD_DLQ_REPLAY:
    case CMD_DLQ_PURGE: {
        cmd_dlq *d = &op->u.dlq;
        NEED(6);
        if (!mp_read_bytes(f, &d->queue) ||
            !mp_read_bytes(f, &d->error_substr) ||
            !d_u64(f, UINT64_MAX, &d->from_ms) ||
            !d_u64(f, UINT64_MAX, &d->to_ms) || !d_u32(f, &d->max))
            return CLAWQ_ECORRUPT;
        return 0;
    }
    case CMD_MEMBER:
        NEED(3);
        return d_u32(f, &op->u.member.node_id) &&
                       mp_read_bytes(f, &op->u.member.client_addr)
                   ? 0
                   : CLAWQ_ECORRUPT;
    case CMD_WORKERS: {
        cmd_workers *w = &op->u.workers;
        NEED(6);
        if (!mp_read_bytes(f, &w->queue) || !d_u32(f, &w->workers) ||
            !d_u32(f, &w->median_capacity) ||
            !d_u64(f, UINT64_MAX, &w->capacity) ||
            !d_u64(f, UINT64_MAX, &w->inflight))
            return CLAWQ_ECORRUPT;
        return 0;
    }
    default:
        return CLAWQ_ECORRUPT;
    }
#undef NEED
}

_Static_assert(sizeof(cmd_batch) % _Alignof(cmd_op) == 0,
               "ops follow the batch in one allocation");

int cmd_decode(const void *buf, size_t len, cmd_batch **out)
{
    const uint8_t *p = buf;
    cmd_batch *b;
    mp_reader r;
    uint64_t version, now_ms;
    uint32_t n, n_ops, i;
    size_t off;
    int rc;

    if (len == 0 || len > CMD_MAX_BYTES)
        return CLAWQ_ECORRUPT;
    mp_reader_init(&r, buf, len);
    /* Every op takes at least a byte: a count past the bytes left is a lie
     * that must not size an allocation. */
    if (!mp_read_array(&r, &n) || n != 3 || !d_u64(&r, UINT64_MAX, &version) ||
        version != CMD_FORMAT_VERSION || !d_u64(&r, UINT64_MAX, &now_ms) ||
        !mp_read_array(&r, &n_ops) || n_ops > CMD_MAX_OPS ||
        n_ops > len - r.off)
        return CLAWQ_ECORRUPT;
    /* The batch and its ops in one allocation. */
    b = calloc(1, sizeof(*b) + (size_t)n_ops * sizeof(cmd_op));
    if (b == NULL)
        return CLAWQ_ENOMEM;
    b->now_ms = now_ms;
    b->n_ops = n_ops;
    b->ops = n_ops > 0 ? (cmd_op *)(b + 1) : NULL;
    for (i = 0; i < n_ops; i++) {
        rc = decode_op(&r, &b->ops[i]);
        if (rc != 0)
            goto fail;
    }
    /* What follows the command is its padding: fewer than CMD_ALIGN zeros. */
    rc = CLAWQ_ECORRUPT;
    if (len - r.off >= CMD_ALIGN)
        goto fail;
    for (off = r.off; off < len; off++) {
        if (p[off] != 0)
            goto fail;
    }
    *out = b;
    return 0;
fail:
    free(b);
    return rc;
}

void cmd_batch_free(cmd_batch *b)
{
    free(b);
}
