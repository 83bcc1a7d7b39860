/* cmd.c: the command codec. See cmd.h for the layout.
 *
 * The writer emits a fixed-width envelope header (array of 3, version,
 * uint64 now_ms, array32 of ops) so that now_ms and the op count can be
 * patched in place at finish; the decoder accepts any valid msgpack
 * encoding of the same structure.
 */
#include "cmd.h"

#include <msgpack.h>

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

typedef struct wr {
    msgpack_packer pk;
    cq_buf *buf;
    int err;
} wr;

static int wr_write(void *data, const char *p, size_t len)
{
    wr *w = data;
    int rc;

    if (w->err != 0)
        return -1;
    rc = cq_buf_append(w->buf, p, len);
    if (rc != 0) {
        w->err = rc;
        return -1;
    }
    return 0;
}

static void pack_bytes(msgpack_packer *pk, cq_bytes b)
{
    msgpack_pack_bin(pk, b.len);
    msgpack_pack_bin_body(pk, b.ptr, b.len);
}

static void pack_opt_bytes(msgpack_packer *pk, bool present, cq_bytes b)
{
    if (present)
        pack_bytes(pk, b);
    else
        msgpack_pack_nil(pk);
}

static int pack_op(msgpack_packer *pk, const cmd_op *op)
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
        msgpack_pack_array(pk, 9);
        msgpack_pack_uint8(pk, op->type);
        pack_bytes(pk, p->queue);
        pack_bytes(pk, p->payload);
        msgpack_pack_uint8(pk, p->priority);
        msgpack_pack_uint64(pk, p->run_at_ms);
        msgpack_pack_uint64(pk, p->deadline_ms);
        msgpack_pack_uint32(pk, p->max_attempts);
        pack_opt_bytes(pk, p->idem_key.len > 0, p->idem_key);
        pack_opt_bytes(pk, p->headers.len > 0, p->headers);
        return 0;
    case CMD_LEASE:
        l = &op->u.lease;
        msgpack_pack_array(pk, 6);
        msgpack_pack_uint8(pk, op->type);
        pack_bytes(pk, l->queue);
        pack_bytes(pk, l->worker);
        msgpack_pack_uint32(pk, l->max);
        msgpack_pack_uint32(pk, l->lease_ms);
        msgpack_pack_uint32(pk, l->max_bytes);
        return 0;
    case CMD_EXTEND:
        x = &op->u.extend;
        msgpack_pack_array(pk, 6);
        msgpack_pack_uint8(pk, op->type);
        msgpack_pack_uint64(pk, x->id);
        msgpack_pack_uint64(pk, x->lease_id);
        msgpack_pack_uint32(pk, x->lease_ms);
        if (x->has_progress)
            msgpack_pack_uint64(pk, x->progress);
        else
            msgpack_pack_nil(pk);
        pack_opt_bytes(pk, x->has_checkpoint, x->checkpoint);
        return 0;
    case CMD_ACK:
        s = &op->u.settle;
        msgpack_pack_array(pk, 3);
        msgpack_pack_uint8(pk, op->type);
        msgpack_pack_uint64(pk, s->id);
        msgpack_pack_uint64(pk, s->lease_id);
        return 0;
    case CMD_NACK:
    case CMD_FAIL:
        s = &op->u.settle;
        msgpack_pack_array(pk, op->type == CMD_NACK ? 5 : 4);
        msgpack_pack_uint8(pk, op->type);
        msgpack_pack_uint64(pk, s->id);
        msgpack_pack_uint64(pk, s->lease_id);
        if (op->type == CMD_NACK)
            msgpack_pack_int64(pk, s->delay_ms);
        pack_bytes(pk, s->error);
        return 0;
    case CMD_TICK:
        msgpack_pack_array(pk, 2);
        msgpack_pack_uint8(pk, op->type);
        msgpack_pack_uint32(pk, op->u.tick.max);
        return 0;
    case CMD_QUEUE_SET:
        qs = &op->u.queue_set;
        msgpack_pack_array(pk, 10);
        msgpack_pack_uint8(pk, op->type);
        pack_bytes(pk, qs->queue);
        msgpack_pack_uint32(pk, qs->fields);
        msgpack_pack_uint32(pk, qs->settings.lease_ms);
        msgpack_pack_uint32(pk, qs->settings.max_attempts);
        msgpack_pack_uint32(pk, qs->settings.backoff_base_ms);
        msgpack_pack_uint32(pk, qs->settings.backoff_max_ms);
        msgpack_pack_uint64(pk, qs->settings.max_depth);
        msgpack_pack_uint32(pk, qs->settings.max_payload);
        msgpack_pack_uint64(pk, qs->settings.dedup_window_ms);
        return 0;
    case CMD_QUEUE_PAUSE:
    case CMD_QUEUE_RESUME:
    case CMD_QUEUE_PURGE:
        msgpack_pack_array(pk, 2);
        msgpack_pack_uint8(pk, op->type);
        pack_bytes(pk, op->u.queue.queue);
        return 0;
    case CMD_DLQ_REPLAY:
    case CMD_DLQ_PURGE:
        d = &op->u.dlq;
        msgpack_pack_array(pk, 6);
        msgpack_pack_uint8(pk, op->type);
        pack_bytes(pk, d->queue);
        pack_bytes(pk, d->error_substr);
        msgpack_pack_uint64(pk, d->from_ms);
        msgpack_pack_uint64(pk, d->to_ms);
        msgpack_pack_uint32(pk, d->max);
        return 0;
    case CMD_MEMBER:
        msgpack_pack_array(pk, 3);
        msgpack_pack_uint8(pk, op->type);
        msgpack_pack_uint32(pk, op->u.member.node_id);
        pack_bytes(pk, op->u.member.client_addr);
        return 0;
    case CMD_WORKERS:
        msgpack_pack_array(pk, 6);
        msgpack_pack_uint8(pk, op->type);
        pack_bytes(pk, op->u.workers.queue);
        msgpack_pack_uint32(pk, op->u.workers.workers);
        msgpack_pack_uint32(pk, op->u.workers.median_capacity);
        msgpack_pack_uint64(pk, op->u.workers.capacity);
        msgpack_pack_uint64(pk, op->u.workers.inflight);
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
    wr out;
    int rc;

    if (w->n_ops >= CMD_MAX_OPS)
        return CLAWQ_ETOO_LARGE;
    if (w->buf.len == 0) {
        rc = cq_buf_append(&w->buf, envelope, sizeof(envelope));
        if (rc != 0)
            return rc;
    }
    mark = w->buf.len;
    out.buf = &w->buf;
    out.err = 0;
    msgpack_packer_init(&out.pk, &out, wr_write);
    rc = pack_op(&out.pk, op);
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

struct cmd_batch_priv {
    cmd_batch pub;
    msgpack_zone zone;
};

static bool d_u64(const msgpack_object *o, uint64_t max, uint64_t *out)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > max)
        return false;
    *out = o->via.u64;
    return true;
}

static bool d_u32(const msgpack_object *o, uint32_t *out)
{
    uint64_t v;
    if (!d_u64(o, UINT32_MAX, &v))
        return false;
    *out = (uint32_t)v;
    return true;
}

static bool d_i64(const msgpack_object *o, int64_t *out)
{
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
        o->via.u64 <= (uint64_t)INT64_MAX) {
        *out = (int64_t)o->via.u64;
        return true;
    }
    return false;
}

static bool d_bytes(const msgpack_object *o, cq_bytes *out)
{
    if (o->type == MSGPACK_OBJECT_BIN) {
        *out = cq_bytes_of(o->via.bin.ptr, o->via.bin.size);
        return true;
    }
    if (o->type == MSGPACK_OBJECT_STR) {
        *out = cq_bytes_of(o->via.str.ptr, o->via.str.size);
        return true;
    }
    return false;
}

/* nil or bytes; *present says which. */
static bool d_opt_bytes(const msgpack_object *o, bool *present, cq_bytes *out)
{
    if (o->type == MSGPACK_OBJECT_NIL) {
        *present = false;
        *out = cq_bytes_of(NULL, 0);
        return true;
    }
    *present = true;
    return d_bytes(o, out);
}

static int decode_op(const msgpack_object *o, cmd_op *op)
{
    const msgpack_object *f;
    uint32_t n;
    uint64_t t, v;
    bool present;

    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 1)
        return CLAWQ_ECORRUPT;
    f = o->via.array.ptr;
    n = o->via.array.size;
    if (!d_u64(&f[0], 255, &t))
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
        if (!d_bytes(&f[1], &p->queue) || !d_bytes(&f[2], &p->payload) ||
            !d_u64(&f[3], 255, &v) ||
            !d_u64(&f[4], UINT64_MAX, &p->run_at_ms) ||
            !d_u64(&f[5], UINT64_MAX, &p->deadline_ms) ||
            !d_u32(&f[6], &p->max_attempts) ||
            !d_opt_bytes(&f[7], &present, &p->idem_key) ||
            !d_opt_bytes(&f[8], &present, &p->headers))
            return CLAWQ_ECORRUPT;
        p->priority = (uint8_t)v;
        return 0;
    }
    case CMD_LEASE: {
        cmd_lease *l = &op->u.lease;
        NEED(6);
        if (!d_bytes(&f[1], &l->queue) || !d_bytes(&f[2], &l->worker) ||
            !d_u32(&f[3], &l->max) || !d_u32(&f[4], &l->lease_ms) ||
            !d_u32(&f[5], &l->max_bytes))
            return CLAWQ_ECORRUPT;
        return 0;
    }
    case CMD_EXTEND: {
        cmd_extend *x = &op->u.extend;
        NEED(6);
        if (!d_u64(&f[1], UINT64_MAX, &x->id) ||
            !d_u64(&f[2], UINT64_MAX, &x->lease_id) ||
            !d_u32(&f[3], &x->lease_ms))
            return CLAWQ_ECORRUPT;
        if (f[4].type == MSGPACK_OBJECT_NIL)
            x->has_progress = false;
        else if (d_u64(&f[4], UINT64_MAX, &x->progress))
            x->has_progress = true;
        else
            return CLAWQ_ECORRUPT;
        if (!d_opt_bytes(&f[5], &x->has_checkpoint, &x->checkpoint))
            return CLAWQ_ECORRUPT;
        return 0;
    }
    case CMD_ACK: {
        cmd_settle *s = &op->u.settle;
        NEED(3);
        if (!d_u64(&f[1], UINT64_MAX, &s->id) ||
            !d_u64(&f[2], UINT64_MAX, &s->lease_id))
            return CLAWQ_ECORRUPT;
        s->delay_ms = -1;
        return 0;
    }
    case CMD_NACK:
    case CMD_FAIL: {
        cmd_settle *s = &op->u.settle;
        NEED(t == CMD_NACK ? 5u : 4u);
        if (!d_u64(&f[1], UINT64_MAX, &s->id) ||
            !d_u64(&f[2], UINT64_MAX, &s->lease_id))
            return CLAWQ_ECORRUPT;
        s->delay_ms = -1;
        if (t == CMD_NACK && !d_i64(&f[3], &s->delay_ms))
            return CLAWQ_ECORRUPT;
        if (!d_bytes(&f[n - 1], &s->error))
            return CLAWQ_ECORRUPT;
        return 0;
    }
    case CMD_TICK:
        NEED(2);
        return d_u32(&f[1], &op->u.tick.max) ? 0 : CLAWQ_ECORRUPT;
    case CMD_QUEUE_SET: {
        cmd_queue_set *qs = &op->u.queue_set;
        NEED(10);
        if (!d_bytes(&f[1], &qs->queue) || !d_u32(&f[2], &qs->fields) ||
            !d_u32(&f[3], &qs->settings.lease_ms) ||
            !d_u32(&f[4], &qs->settings.max_attempts) ||
            !d_u32(&f[5], &qs->settings.backoff_base_ms) ||
            !d_u32(&f[6], &qs->settings.backoff_max_ms) ||
            !d_u64(&f[7], UINT64_MAX, &qs->settings.max_depth) ||
            !d_u32(&f[8], &qs->settings.max_payload) ||
            !d_u64(&f[9], UINT64_MAX, &qs->settings.dedup_window_ms))
            return CLAWQ_ECORRUPT;
        return 0;
    }
    case CMD_QUEUE_PAUSE:
    case CMD_QUEUE_RESUME:
    case CMD_QUEUE_PURGE:
        NEED(2);
        return d_bytes(&f[1], &op->u.queue.queue) ? 0 : CLAWQ_ECORRUPT;
    case CMD_DLQ_REPLAY:
    case CMD_DLQ_PURGE: {
        cmd_dlq *d = &op->u.dlq;
        NEED(6);
        if (!d_bytes(&f[1], &d->queue) || !d_bytes(&f[2], &d->error_substr) ||
            !d_u64(&f[3], UINT64_MAX, &d->from_ms) ||
            !d_u64(&f[4], UINT64_MAX, &d->to_ms) || !d_u32(&f[5], &d->max))
            return CLAWQ_ECORRUPT;
        return 0;
    }
    case CMD_MEMBER:
        NEED(3);
        return d_u32(&f[1], &op->u.member.node_id) &&
                       d_bytes(&f[2], &op->u.member.client_addr)
                   ? 0
                   : CLAWQ_ECORRUPT;
    case CMD_WORKERS: {
        cmd_workers *w = &op->u.workers;
        NEED(6);
        if (!d_bytes(&f[1], &w->queue) || !d_u32(&f[2], &w->workers) ||
            !d_u32(&f[3], &w->median_capacity) ||
            !d_u64(&f[4], UINT64_MAX, &w->capacity) ||
            !d_u64(&f[5], UINT64_MAX, &w->inflight))
            return CLAWQ_ECORRUPT;
        return 0;
    }
    default:
        return CLAWQ_ECORRUPT;
    }
#undef NEED
}

int cmd_decode(const void *buf, size_t len, cmd_batch **out)
{
    struct cmd_batch_priv *b;
    msgpack_object obj;
    const msgpack_object *f, *ops;
    msgpack_unpack_return r;
    size_t off = 0, used, i;
    uint64_t version;
    int rc;

    if (len == 0 || len > CMD_MAX_BYTES || !mp_span(buf, len, 8, &used) ||
        len - used >= CMD_ALIGN)
        return CLAWQ_ECORRUPT;
    for (off = used; off < len; off++) {
        if (((const uint8_t *)buf)[off] != 0)
            return CLAWQ_ECORRUPT;
    }
    len = used;
    off = 0;
    b = calloc(1, sizeof(*b));
    if (b == NULL)
        return CLAWQ_ENOMEM;
    if (!msgpack_zone_init(&b->zone, 4096)) {
        free(b);
        return CLAWQ_ENOMEM;
    }
    r = msgpack_unpack(buf, len, &off, &b->zone, &obj);
    rc = r == MSGPACK_UNPACK_NOMEM_ERROR ? CLAWQ_ENOMEM : CLAWQ_ECORRUPT;
    if (r != MSGPACK_UNPACK_SUCCESS || off != len)
        goto fail;
    rc = CLAWQ_ECORRUPT;
    if (obj.type != MSGPACK_OBJECT_ARRAY || obj.via.array.size != 3)
        goto fail;
    f = obj.via.array.ptr;
    if (!d_u64(&f[0], UINT64_MAX, &version) || version != CMD_FORMAT_VERSION ||
        !d_u64(&f[1], UINT64_MAX, &b->pub.now_ms) ||
        f[2].type != MSGPACK_OBJECT_ARRAY || f[2].via.array.size > CMD_MAX_OPS)
        goto fail;
    ops = f[2].via.array.ptr;
    b->pub.n_ops = f[2].via.array.size;
    if (b->pub.n_ops > 0) {
        b->pub.ops = calloc(b->pub.n_ops, sizeof(cmd_op));
        if (b->pub.ops == NULL) {
            rc = CLAWQ_ENOMEM;
            goto fail;
        }
    }
    for (i = 0; i < b->pub.n_ops; i++) {
        rc = decode_op(&ops[i], &b->pub.ops[i]);
        if (rc != 0)
            goto fail;
    }
    *out = &b->pub;
    return 0;
fail:
    free(b->pub.ops);
    msgpack_zone_destroy(&b->zone);
    free(b);
    return rc;
}

void cmd_batch_free(cmd_batch *pub)
{
    struct cmd_batch_priv *b = (struct cmd_batch_priv *)pub;

    if (pub == NULL)
        return;
    free(b->pub.ops);
    msgpack_zone_destroy(&b->zone);
    free(b);
}
