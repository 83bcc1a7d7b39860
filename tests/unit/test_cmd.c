/* test_cmd.c: the command codec of cmd.h: every op type round-trips
 * through the writer and cmd_encode, limits hold, and the decoder survives
 * truncated, mutated and hostile input. */
#include <check.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "helpers.h"

static uint64_t rnd(uint64_t *s)
{
    return cq_mix64((*s)++);
}

/* A copy of exactly len bytes, so AddressSanitizer sees reads past len. */
static uint8_t *exact_copy(const void *src, size_t len)
{
    uint8_t *p = malloc(len > 0 ? len : 1);
    ck_assert_ptr_nonnull(p);
    if (len > 0)
        memcpy(p, src, len);
    return p;
}

static void assert_bytes_eq(cq_bytes a, cq_bytes b)
{
    ck_assert_uint_eq(a.len, b.len);
    if (a.len > 0)
        ck_assert_mem_eq(a.ptr, b.ptr, a.len);
}

static bool within(cq_bytes b, const void *buf, size_t len)
{
    const uint8_t *lo = buf;
    if (b.len == 0)
        return true;
    return b.ptr != NULL && b.ptr >= lo && b.len <= len &&
           b.ptr + b.len <= lo + len;
}

/* Every byte field of a decoded op points into the decoded buffer. */
static bool op_within(const cmd_op *op, const void *buf, size_t len)
{
    switch (op->type) {
    case CMD_PUT:
        return within(op->u.put.queue, buf, len) &&
               within(op->u.put.payload, buf, len) &&
               within(op->u.put.idem_key, buf, len) &&
               within(op->u.put.headers, buf, len);
    case CMD_LEASE:
        return within(op->u.lease.queue, buf, len) &&
               within(op->u.lease.worker, buf, len);
    case CMD_EXTEND:
        return !op->u.extend.has_checkpoint ||
               within(op->u.extend.checkpoint, buf, len);
    case CMD_NACK:
    case CMD_FAIL:
        return within(op->u.settle.error, buf, len);
    case CMD_QUEUE_SET:
        return within(op->u.queue_set.queue, buf, len);
    case CMD_QUEUE_PAUSE:
    case CMD_QUEUE_RESUME:
    case CMD_QUEUE_PURGE:
        return within(op->u.queue.queue, buf, len);
    case CMD_WORKERS:
        return within(op->u.workers.queue, buf, len);
    case CMD_MEMBER:
        return within(op->u.member.client_addr, buf, len);
    case CMD_DLQ_REPLAY:
    case CMD_DLQ_PURGE:
        return within(op->u.dlq.queue, buf, len) &&
               within(op->u.dlq.error_substr, buf, len);
    case CMD_ACK:
    case CMD_TICK:
        return true;
    default:
        return false;
    }
}

static void assert_op_within(const cmd_op *op, const void *buf, size_t len)
{
    if (op_within(op, buf, len))
        return;
    switch (op->type) {
    case CMD_PUT:
        ck_assert(within(op->u.put.queue, buf, len));
        ck_assert(within(op->u.put.payload, buf, len));
        ck_assert(within(op->u.put.idem_key, buf, len));
        ck_assert(within(op->u.put.headers, buf, len));
        break;
    case CMD_LEASE:
        ck_assert(within(op->u.lease.queue, buf, len));
        ck_assert(within(op->u.lease.worker, buf, len));
        break;
    case CMD_EXTEND:
        if (op->u.extend.has_checkpoint)
            ck_assert(within(op->u.extend.checkpoint, buf, len));
        break;
    case CMD_NACK:
    case CMD_FAIL:
        ck_assert(within(op->u.settle.error, buf, len));
        break;
    case CMD_QUEUE_SET:
        ck_assert(within(op->u.queue_set.queue, buf, len));
        break;
    case CMD_QUEUE_PAUSE:
    case CMD_QUEUE_RESUME:
    case CMD_QUEUE_PURGE:
        ck_assert(within(op->u.queue.queue, buf, len));
        break;
    case CMD_WORKERS:
        ck_assert(within(op->u.workers.queue, buf, len));
        break;
    case CMD_MEMBER:
        ck_assert(within(op->u.member.client_addr, buf, len));
        break;
    case CMD_DLQ_REPLAY:
    case CMD_DLQ_PURGE:
        ck_assert(within(op->u.dlq.queue, buf, len));
        ck_assert(within(op->u.dlq.error_substr, buf, len));
        break;
    case CMD_ACK:
    case CMD_TICK:
        break;
    default:
        ck_abort_msg("decoded an unknown op type %u", op->type);
    }
}

static bool bytes_eq(cq_bytes a, cq_bytes b)
{
    return cq_bytes_eq(a, b);
}

/* The fields an op of its type carries on the wire are equal. */
static bool op_eq(const cmd_op *a, const cmd_op *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case CMD_PUT:
        return bytes_eq(a->u.put.queue, b->u.put.queue) &&
               bytes_eq(a->u.put.payload, b->u.put.payload) &&
               bytes_eq(a->u.put.idem_key, b->u.put.idem_key) &&
               bytes_eq(a->u.put.headers, b->u.put.headers) &&
               a->u.put.run_at_ms == b->u.put.run_at_ms &&
               a->u.put.deadline_ms == b->u.put.deadline_ms &&
               a->u.put.max_attempts == b->u.put.max_attempts &&
               a->u.put.priority == b->u.put.priority;
    case CMD_LEASE:
        return bytes_eq(a->u.lease.queue, b->u.lease.queue) &&
               bytes_eq(a->u.lease.worker, b->u.lease.worker) &&
               a->u.lease.max == b->u.lease.max &&
               a->u.lease.lease_ms == b->u.lease.lease_ms &&
               a->u.lease.max_bytes == b->u.lease.max_bytes;
    case CMD_EXTEND:
        return a->u.extend.id == b->u.extend.id &&
               a->u.extend.lease_id == b->u.extend.lease_id &&
               a->u.extend.lease_ms == b->u.extend.lease_ms &&
               a->u.extend.has_progress == b->u.extend.has_progress &&
               (!a->u.extend.has_progress ||
                a->u.extend.progress == b->u.extend.progress) &&
               a->u.extend.has_checkpoint == b->u.extend.has_checkpoint &&
               (!a->u.extend.has_checkpoint ||
                bytes_eq(a->u.extend.checkpoint, b->u.extend.checkpoint));
    case CMD_NACK:
        if (a->u.settle.delay_ms != b->u.settle.delay_ms)
            return false;
        /* fall through */
    case CMD_FAIL:
        if (!bytes_eq(a->u.settle.error, b->u.settle.error))
            return false;
        /* fall through */
    case CMD_ACK:
        return a->u.settle.id == b->u.settle.id &&
               a->u.settle.lease_id == b->u.settle.lease_id;
    case CMD_TICK:
        return a->u.tick.max == b->u.tick.max;
    case CMD_QUEUE_SET: {
        const cmd_queue_set *x = &a->u.queue_set, *y = &b->u.queue_set;
        uint32_t f = x->fields;
        return bytes_eq(x->queue, y->queue) && x->fields == y->fields &&
               (!(f & QSET_LEASE_MS) ||
                x->settings.lease_ms == y->settings.lease_ms) &&
               (!(f & QSET_MAX_ATTEMPTS) ||
                x->settings.max_attempts == y->settings.max_attempts) &&
               (!(f & QSET_BACKOFF_BASE_MS) ||
                x->settings.backoff_base_ms == y->settings.backoff_base_ms) &&
               (!(f & QSET_BACKOFF_MAX_MS) ||
                x->settings.backoff_max_ms == y->settings.backoff_max_ms) &&
               (!(f & QSET_MAX_DEPTH) ||
                x->settings.max_depth == y->settings.max_depth) &&
               (!(f & QSET_MAX_PAYLOAD) ||
                x->settings.max_payload == y->settings.max_payload) &&
               (!(f & QSET_DEDUP_WINDOW_MS) ||
                x->settings.dedup_window_ms == y->settings.dedup_window_ms);
    }
    case CMD_QUEUE_PAUSE:
    case CMD_QUEUE_RESUME:
    case CMD_QUEUE_PURGE:
        return bytes_eq(a->u.queue.queue, b->u.queue.queue);
    case CMD_MEMBER:
        return a->u.member.node_id == b->u.member.node_id &&
               bytes_eq(a->u.member.client_addr, b->u.member.client_addr);
    case CMD_WORKERS:
        return bytes_eq(a->u.workers.queue, b->u.workers.queue) &&
               a->u.workers.workers == b->u.workers.workers &&
               a->u.workers.median_capacity == b->u.workers.median_capacity &&
               a->u.workers.capacity == b->u.workers.capacity &&
               a->u.workers.inflight == b->u.workers.inflight;
    case CMD_DLQ_REPLAY:
    case CMD_DLQ_PURGE:
        return bytes_eq(a->u.dlq.queue, b->u.dlq.queue) &&
               bytes_eq(a->u.dlq.error_substr, b->u.dlq.error_substr) &&
               a->u.dlq.from_ms == b->u.dlq.from_ms &&
               a->u.dlq.to_ms == b->u.dlq.to_ms && a->u.dlq.max == b->u.dlq.max;
    default:
        return false;
    }
}

/* Compares the fields an op of its type carries on the wire, printing the
 * first difference. */
static void assert_op_eq(const cmd_op *a, const cmd_op *b)
{
    ck_assert_uint_eq(a->type, b->type);
    switch (a->type) {
    case CMD_PUT:
        assert_bytes_eq(a->u.put.queue, b->u.put.queue);
        assert_bytes_eq(a->u.put.payload, b->u.put.payload);
        assert_bytes_eq(a->u.put.idem_key, b->u.put.idem_key);
        assert_bytes_eq(a->u.put.headers, b->u.put.headers);
        ck_assert_uint_eq(a->u.put.run_at_ms, b->u.put.run_at_ms);
        ck_assert_uint_eq(a->u.put.deadline_ms, b->u.put.deadline_ms);
        ck_assert_uint_eq(a->u.put.max_attempts, b->u.put.max_attempts);
        ck_assert_uint_eq(a->u.put.priority, b->u.put.priority);
        break;
    case CMD_LEASE:
        assert_bytes_eq(a->u.lease.queue, b->u.lease.queue);
        assert_bytes_eq(a->u.lease.worker, b->u.lease.worker);
        ck_assert_uint_eq(a->u.lease.max, b->u.lease.max);
        ck_assert_uint_eq(a->u.lease.lease_ms, b->u.lease.lease_ms);
        ck_assert_uint_eq(a->u.lease.max_bytes, b->u.lease.max_bytes);
        break;
    case CMD_EXTEND:
        ck_assert_uint_eq(a->u.extend.id, b->u.extend.id);
        ck_assert_uint_eq(a->u.extend.lease_id, b->u.extend.lease_id);
        ck_assert_uint_eq(a->u.extend.lease_ms, b->u.extend.lease_ms);
        ck_assert_int_eq(a->u.extend.has_progress, b->u.extend.has_progress);
        if (a->u.extend.has_progress)
            ck_assert_uint_eq(a->u.extend.progress, b->u.extend.progress);
        ck_assert_int_eq(a->u.extend.has_checkpoint,
                         b->u.extend.has_checkpoint);
        if (a->u.extend.has_checkpoint)
            assert_bytes_eq(a->u.extend.checkpoint, b->u.extend.checkpoint);
        break;
    case CMD_NACK:
        ck_assert_int_eq(a->u.settle.delay_ms, b->u.settle.delay_ms);
        /* fall through */
    case CMD_FAIL:
        assert_bytes_eq(a->u.settle.error, b->u.settle.error);
        /* fall through */
    case CMD_ACK:
        ck_assert_uint_eq(a->u.settle.id, b->u.settle.id);
        ck_assert_uint_eq(a->u.settle.lease_id, b->u.settle.lease_id);
        break;
    case CMD_TICK:
        ck_assert_uint_eq(a->u.tick.max, b->u.tick.max);
        break;
    case CMD_QUEUE_SET: {
        const cmd_queue_set *x = &a->u.queue_set, *y = &b->u.queue_set;
        assert_bytes_eq(x->queue, y->queue);
        ck_assert_uint_eq(x->fields, y->fields);
        if (x->fields & QSET_LEASE_MS)
            ck_assert_uint_eq(x->settings.lease_ms, y->settings.lease_ms);
        if (x->fields & QSET_MAX_ATTEMPTS)
            ck_assert_uint_eq(x->settings.max_attempts,
                              y->settings.max_attempts);
        if (x->fields & QSET_BACKOFF_BASE_MS)
            ck_assert_uint_eq(x->settings.backoff_base_ms,
                              y->settings.backoff_base_ms);
        if (x->fields & QSET_BACKOFF_MAX_MS)
            ck_assert_uint_eq(x->settings.backoff_max_ms,
                              y->settings.backoff_max_ms);
        if (x->fields & QSET_MAX_DEPTH)
            ck_assert_uint_eq(x->settings.max_depth, y->settings.max_depth);
        if (x->fields & QSET_MAX_PAYLOAD)
            ck_assert_uint_eq(x->settings.max_payload, y->settings.max_payload);
        if (x->fields & QSET_DEDUP_WINDOW_MS)
            ck_assert_uint_eq(x->settings.dedup_window_ms,
                              y->settings.dedup_window_ms);
        break;
    }
    case CMD_QUEUE_PAUSE:
    case CMD_QUEUE_RESUME:
    case CMD_QUEUE_PURGE:
        assert_bytes_eq(a->u.queue.queue, b->u.queue.queue);
        break;
    case CMD_MEMBER:
        ck_assert_uint_eq(a->u.member.node_id, b->u.member.node_id);
        assert_bytes_eq(a->u.member.client_addr, b->u.member.client_addr);
        break;
    case CMD_WORKERS:
        assert_bytes_eq(a->u.workers.queue, b->u.workers.queue);
        ck_assert_uint_eq(a->u.workers.workers, b->u.workers.workers);
        ck_assert_uint_eq(a->u.workers.median_capacity,
                          b->u.workers.median_capacity);
        ck_assert_uint_eq(a->u.workers.capacity, b->u.workers.capacity);
        ck_assert_uint_eq(a->u.workers.inflight, b->u.workers.inflight);
        break;
    case CMD_DLQ_REPLAY:
    case CMD_DLQ_PURGE:
        assert_bytes_eq(a->u.dlq.queue, b->u.dlq.queue);
        assert_bytes_eq(a->u.dlq.error_substr, b->u.dlq.error_substr);
        ck_assert_uint_eq(a->u.dlq.from_ms, b->u.dlq.from_ms);
        ck_assert_uint_eq(a->u.dlq.to_ms, b->u.dlq.to_ms);
        ck_assert_uint_eq(a->u.dlq.max, b->u.dlq.max);
        break;
    default:
        ck_abort_msg("unknown op type %u", a->type);
    }
}

/* Fixture: a set of ops covering every type with every field set,
 * extremes included. */
static uint8_t g_payload[70000];
static uint8_t g_checkpoint[300];
static msgpack_sbuffer g_headers;
static cmd_op g_ops[40];
static size_t g_n_ops;

static cmd_op *add(int type)
{
    cmd_op *op;
    ck_assert_uint_lt(g_n_ops, sizeof(g_ops) / sizeof(g_ops[0]));
    op = &g_ops[g_n_ops++];
    memset(op, 0, sizeof(*op));
    op->type = (uint8_t)type;
    return op;
}

static void fixture_setup(void)
{
    msgpack_packer pk;
    cmd_op *op;

    for (size_t i = 0; i < sizeof(g_payload); i++)
        g_payload[i] = (uint8_t)(i * 13 + (i >> 10));
    g_payload[0] = 0;
    for (size_t i = 0; i < sizeof(g_checkpoint); i++)
        g_checkpoint[i] = (uint8_t)~i;
    msgpack_sbuffer_init(&g_headers);
    msgpack_packer_init(&pk, &g_headers, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_str_with_body(&pk, "content-type", 12);
    msgpack_pack_str_with_body(&pk, "application/json", 16);
    g_n_ops = 0;

    /* put: every field, binary payloads of several sizes. */
    op = add(CMD_PUT);
    op->u.put.queue = cq_bytes_str("orders.eu:high_prio-1");
    op->u.put.payload = cq_bytes_of(g_payload, 1000);
    op->u.put.idem_key = cq_bytes_of("key\0with-nul", 12);
    op->u.put.headers = cq_bytes_of(g_headers.data, g_headers.size);
    op->u.put.run_at_ms = 1700000000123ULL;
    op->u.put.deadline_ms = UINT64_MAX;
    op->u.put.max_attempts = UINT32_MAX;
    op->u.put.priority = 255;
    op = add(CMD_PUT);
    op->u.put.queue = cq_bytes_str("q");
    op->u.put.payload = cq_bytes_of("", 0);
    op = add(CMD_PUT);
    op->u.put.queue = cq_bytes_str("big");
    op->u.put.payload = cq_bytes_of(g_payload, sizeof(g_payload));
    op->u.put.priority = 1;
    op->u.put.run_at_ms = 1;
    op = add(CMD_PUT);
    op->u.put.queue = cq_bytes_str("bad name / decodes anyway");
    op->u.put.payload = cq_bytes_of(g_payload, 300);

    /* lease */
    op = add(CMD_LEASE);
    op->u.lease.queue = cq_bytes_str("orders");
    op->u.lease.worker = cq_bytes_str("worker-9@10.0.0.1:4000");
    op->u.lease.max = CMD_LEASE_MAX;
    op->u.lease.lease_ms = UINT32_MAX;
    op->u.lease.max_bytes = 123456789;
    op = add(CMD_LEASE);
    op->u.lease.queue = cq_bytes_str("q");
    op->u.lease.worker = cq_bytes_of("", 0);
    op->u.lease.max = 1;

    /* extend: with and without the optional fields; an empty checkpoint
     * that is present differs from an absent one. */
    op = add(CMD_EXTEND);
    op->u.extend.id = UINT64_MAX;
    op->u.extend.lease_id = UINT64_MAX - 1;
    op->u.extend.lease_ms = 60000;
    op->u.extend.has_progress = true;
    op->u.extend.progress = 1ULL << 50;
    op->u.extend.has_checkpoint = true;
    op->u.extend.checkpoint = cq_bytes_of(g_checkpoint, sizeof(g_checkpoint));
    op = add(CMD_EXTEND);
    op->u.extend.id = 5;
    op->u.extend.lease_id = 6;
    op = add(CMD_EXTEND);
    op->u.extend.id = 7;
    op->u.extend.lease_id = 8;
    op->u.extend.has_progress = true;
    op->u.extend.progress = 0;
    op->u.extend.has_checkpoint = true;
    op->u.extend.checkpoint = cq_bytes_of("", 0);

    /* settle */
    op = add(CMD_ACK);
    op->u.settle.id = 0x0102030405060708ULL;
    op->u.settle.lease_id = 0x1112131415161718ULL;
    op = add(CMD_NACK);
    op->u.settle.id = 11;
    op->u.settle.lease_id = 12;
    op->u.settle.delay_ms = -1;
    op->u.settle.error = cq_bytes_str("timeout talking to upstream");
    op = add(CMD_NACK);
    op->u.settle.id = 13;
    op->u.settle.lease_id = 14;
    op->u.settle.delay_ms = INT64_MIN;
    op->u.settle.error = cq_bytes_of("", 0);
    op = add(CMD_NACK);
    op->u.settle.id = 15;
    op->u.settle.lease_id = 16;
    op->u.settle.delay_ms = INT64_MAX;
    op->u.settle.error = cq_bytes_of(g_payload, TASK_ERROR_MAX);
    op = add(CMD_NACK);
    op->u.settle.id = 17;
    op->u.settle.lease_id = 18;
    op->u.settle.delay_ms = 0;
    op->u.settle.error = cq_bytes_str("e");
    op = add(CMD_FAIL);
    op->u.settle.id = 19;
    op->u.settle.lease_id = 20;
    op->u.settle.error = cq_bytes_of("bin\0\xff", 5);

    /* tick */
    op = add(CMD_TICK);
    op = add(CMD_TICK);
    op->u.tick.max = UINT32_MAX;

    /* queue_set: all fields, one field, none. */
    op = add(CMD_QUEUE_SET);
    op->u.queue_set.queue = cq_bytes_str("orders");
    op->u.queue_set.fields = QSET_LEASE_MS | QSET_MAX_ATTEMPTS |
                             QSET_BACKOFF_BASE_MS | QSET_BACKOFF_MAX_MS |
                             QSET_MAX_DEPTH | QSET_MAX_PAYLOAD |
                             QSET_DEDUP_WINDOW_MS;
    op->u.queue_set.settings.lease_ms = 1;
    op->u.queue_set.settings.max_attempts = 2;
    op->u.queue_set.settings.backoff_base_ms = 3;
    op->u.queue_set.settings.backoff_max_ms = UINT32_MAX;
    op->u.queue_set.settings.max_depth = UINT64_MAX;
    op->u.queue_set.settings.max_payload = 6;
    op->u.queue_set.settings.dedup_window_ms = 1ULL << 40;
    op = add(CMD_QUEUE_SET);
    op->u.queue_set.queue = cq_bytes_str("q2");
    op->u.queue_set.fields = QSET_MAX_DEPTH;
    op->u.queue_set.settings.max_depth = 10;
    op = add(CMD_QUEUE_SET);
    op->u.queue_set.queue = cq_bytes_str("q3");

    /* queue ops */
    op = add(CMD_QUEUE_PAUSE);
    op->u.queue.queue = cq_bytes_str("paused.q");
    op = add(CMD_QUEUE_RESUME);
    op->u.queue.queue = cq_bytes_str("resumed.q");
    op = add(CMD_QUEUE_PURGE);
    op->u.queue.queue = cq_bytes_str("purged.q");
    op = add(CMD_MEMBER);
    op->u.member.node_id = 3;
    op->u.member.client_addr = cq_bytes_str("10.0.0.3:7700");
    op = add(CMD_WORKERS);
    op->u.workers.queue = cq_bytes_str("gpu");
    op->u.workers.workers = 3;
    op->u.workers.median_capacity = 8;
    op->u.workers.capacity = 1u << 20;
    op->u.workers.inflight = (1ull << 40) + 5;

    /* dlq */
    op = add(CMD_DLQ_REPLAY);
    op->u.dlq.queue = cq_bytes_str("orders");
    op->u.dlq.error_substr = cq_bytes_str("timeout");
    op->u.dlq.from_ms = 1700000000000ULL;
    op->u.dlq.to_ms = UINT64_MAX;
    op->u.dlq.max = UINT32_MAX;
    op = add(CMD_DLQ_REPLAY);
    op->u.dlq.queue = cq_bytes_str("q");
    op = add(CMD_DLQ_PURGE);
    op->u.dlq.queue = cq_bytes_str("orders");
    op->u.dlq.error_substr = cq_bytes_of("x\0y", 3);
    op->u.dlq.from_ms = 5;
    op->u.dlq.to_ms = 6;
    op->u.dlq.max = 7;
}

static void fixture_teardown(void)
{
    msgpack_sbuffer_destroy(&g_headers);
}

/* Decodes buf (copied to an exact-size buffer) and checks it against ops. */
static void check_decodes_to(const void *buf, size_t len, uint64_t now_ms,
                             const cmd_op *ops, size_t n)
{
    uint8_t *copy = exact_copy(buf, len);
    cmd_batch *b = NULL;

    ck_assert_int_eq(cmd_decode(copy, len, &b), 0);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(b->now_ms, now_ms);
    ck_assert_uint_eq(b->n_ops, n);
    for (size_t i = 0; i < n; i++) {
        assert_op_eq(&ops[i], &b->ops[i]);
        assert_op_within(&b->ops[i], copy, len);
    }
    cmd_batch_free(b);
    free(copy);
}

START_TEST(test_roundtrip_each_type)
{
    /* Each op alone, through cmd_encode and through the writer. */
    for (size_t i = 0; i < g_n_ops; i++) {
        void *buf = NULL;
        size_t len = 0;
        cmd_writer w;
        cq_bytes enc;
        uint64_t now = 1700000000000ULL + i;

        ck_assert_int_eq(cmd_encode(now, &g_ops[i], 1, &buf, &len), 0);
        ck_assert_ptr_nonnull(buf);
        check_decodes_to(buf, len, now, &g_ops[i], 1);
        free(buf);

        cmd_writer_init(&w);
        ck_assert_int_eq(cmd_writer_add(&w, &g_ops[i]), 0);
        ck_assert_uint_eq(w.n_ops, 1);
        enc = cmd_writer_finish(&w, now);
        check_decodes_to(enc.ptr, enc.len, now, &g_ops[i], 1);
        cmd_writer_fini(&w);
    }
}
END_TEST

START_TEST(test_roundtrip_every_type_named)
{
    /* The fixture covers all thirteen types and each has a name. */
    bool seen[CMD_MEMBER + 1] = {false};
    for (size_t i = 0; i < g_n_ops; i++)
        seen[g_ops[i].type] = true;
    for (int t = CMD_PUT; t <= CMD_MEMBER; t++) {
        ck_assert_msg(seen[t], "type %d not covered", t);
        ck_assert_str_ne(cmd_type_name(t), "");
    }
    ck_assert_str_eq(cmd_type_name(CMD_PUT), "put");
    ck_assert_str_eq(cmd_type_name(CMD_LEASE), "lease");
    ck_assert_str_eq(cmd_type_name(CMD_TICK), "tick");
    ck_assert_str_eq(cmd_type_name(0), "");
    ck_assert_str_eq(cmd_type_name(CMD_MEMBER + 1), "");
}
END_TEST

START_TEST(test_roundtrip_multi)
{
    void *buf = NULL;
    size_t len = 0;
    cmd_writer w;
    cq_bytes enc;

    ck_assert_int_eq(cmd_encode(UINT64_MAX, g_ops, g_n_ops, &buf, &len), 0);
    check_decodes_to(buf, len, UINT64_MAX, g_ops, g_n_ops);
    free(buf);

    ck_assert_int_eq(cmd_encode(0, g_ops, g_n_ops, &buf, &len), 0);
    check_decodes_to(buf, len, 0, g_ops, g_n_ops);
    free(buf);

    cmd_writer_init(&w);
    for (size_t i = 0; i < g_n_ops; i++)
        ck_assert_int_eq(cmd_writer_add(&w, &g_ops[i]), 0);
    ck_assert_uint_eq(w.n_ops, g_n_ops);
    enc = cmd_writer_finish(&w, 42);
    check_decodes_to(enc.ptr, enc.len, 42, g_ops, g_n_ops);

    /* Reset drops everything; the writer is reusable. */
    cmd_writer_reset(&w);
    ck_assert_uint_eq(w.n_ops, 0);
    ck_assert_int_eq(cmd_writer_add(&w, &g_ops[3]), 0);
    ck_assert_int_eq(cmd_writer_add(&w, &g_ops[9]), 0);
    enc = cmd_writer_finish(&w, 43);
    {
        cmd_op two[2];
        two[0] = g_ops[3];
        two[1] = g_ops[9];
        check_decodes_to(enc.ptr, enc.len, 43, two, 2);
    }
    cmd_writer_reset(&w);
    cmd_writer_fini(&w);
}
END_TEST

START_TEST(test_writer_rejects_unknown_type)
{
    cmd_writer w;
    cmd_op op;
    void *buf = NULL;
    size_t len = 0;

    memset(&op, 0, sizeof(op));
    cmd_writer_init(&w);
    op.type = 0;
    ck_assert_int_eq(cmd_writer_add(&w, &op), CLAWQ_EINVALID);
    op.type = CMD_MEMBER + 1;
    ck_assert_int_eq(cmd_writer_add(&w, &op), CLAWQ_EINVALID);
    op.type = 255;
    ck_assert_int_eq(cmd_writer_add(&w, &op), CLAWQ_EINVALID);
    ck_assert_uint_eq(w.n_ops, 0);

    /* A failed add leaves the command as it was. */
    ck_assert_int_eq(cmd_writer_add(&w, &g_ops[0]), 0);
    ck_assert_int_eq(cmd_writer_add(&w, &op), CLAWQ_EINVALID);
    ck_assert_uint_eq(w.n_ops, 1);
    {
        cq_bytes enc = cmd_writer_finish(&w, 7);
        check_decodes_to(enc.ptr, enc.len, 7, g_ops, 1);
    }
    cmd_writer_fini(&w);

    ck_assert_int_eq(cmd_encode(1, &op, 1, &buf, &len), CLAWQ_EINVALID);
}
END_TEST

START_TEST(test_max_ops)
{
    cmd_writer w;
    cmd_op tick, *ops;
    cq_bytes enc;
    cmd_batch *b = NULL;
    void *buf = NULL;
    size_t len = 0;

    memset(&tick, 0, sizeof(tick));
    tick.type = CMD_TICK;
    tick.u.tick.max = 3;

    cmd_writer_init(&w);
    for (uint32_t i = 0; i < CMD_MAX_OPS; i++)
        ck_assert_int_eq(cmd_writer_add(&w, &tick), 0);
    ck_assert_uint_eq(w.n_ops, CMD_MAX_OPS);
    ck_assert_int_eq(cmd_writer_add(&w, &tick), CLAWQ_ETOO_LARGE);
    ck_assert_uint_eq(w.n_ops, CMD_MAX_OPS);
    enc = cmd_writer_finish(&w, 99);
    ck_assert_int_eq(cmd_decode(enc.ptr, enc.len, &b), 0);
    ck_assert_uint_eq(b->n_ops, CMD_MAX_OPS);
    ck_assert_uint_eq(b->ops[CMD_MAX_OPS - 1].type, CMD_TICK);
    ck_assert_uint_eq(b->ops[CMD_MAX_OPS - 1].u.tick.max, 3);
    cmd_batch_free(b);
    cmd_writer_fini(&w);

    ops = calloc(CMD_MAX_OPS + 1, sizeof(*ops));
    ck_assert_ptr_nonnull(ops);
    for (size_t i = 0; i < CMD_MAX_OPS + 1; i++)
        ops[i] = tick;
    ck_assert_int_eq(cmd_encode(1, ops, CMD_MAX_OPS + 1, &buf, &len),
                     CLAWQ_ETOO_LARGE);
    ck_assert_int_eq(cmd_encode(1, ops, CMD_MAX_OPS, &buf, &len), 0);
    free(buf);
    free(ops);
}
END_TEST

/* Packs [version, now, [op x n]] where op is the msgpack object of the
 * first op of a command made by cmd_encode: independent of field layout. */
static void pack_repeated(const cmd_op *op, uint64_t version, size_t n,
                          msgpack_sbuffer *out)
{
    void *buf = NULL;
    size_t len = 0, off = 0;
    msgpack_unpacked u;
    msgpack_packer pk;

    ck_assert_int_eq(cmd_encode(5, op, 1, &buf, &len), 0);
    msgpack_unpacked_init(&u);
    ck_assert_int_eq(msgpack_unpack_next(&u, buf, len, &off),
                     MSGPACK_UNPACK_SUCCESS);
    ck_assert_int_eq(u.data.type, MSGPACK_OBJECT_ARRAY);
    ck_assert_uint_eq(u.data.via.array.size, 3);
    ck_assert_int_eq(u.data.via.array.ptr[2].type, MSGPACK_OBJECT_ARRAY);
    ck_assert_uint_eq(u.data.via.array.ptr[2].via.array.size, 1);

    msgpack_sbuffer_init(out);
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, version);
    msgpack_pack_uint64(&pk, 5);
    msgpack_pack_array(&pk, (size_t)n);
    for (size_t i = 0; i < n; i++)
        msgpack_pack_object(&pk, u.data.via.array.ptr[2].via.array.ptr[0]);
    msgpack_unpacked_destroy(&u);
    free(buf);
}

START_TEST(test_decode_rejects_too_many_ops)
{
    msgpack_sbuffer sb;
    cmd_batch *b = NULL;
    cmd_op tick;

    memset(&tick, 0, sizeof(tick));
    tick.type = CMD_TICK;

    pack_repeated(&tick, CMD_FORMAT_VERSION, CMD_MAX_OPS, &sb);
    ck_assert_int_eq(cmd_decode(sb.data, sb.size, &b), 0);
    ck_assert_uint_eq(b->n_ops, CMD_MAX_OPS);
    cmd_batch_free(b);
    msgpack_sbuffer_destroy(&sb);

    pack_repeated(&tick, CMD_FORMAT_VERSION, CMD_MAX_OPS + 1, &sb);
    b = NULL;
    ck_assert_int_eq(cmd_decode(sb.data, sb.size, &b), CLAWQ_ECORRUPT);
    msgpack_sbuffer_destroy(&sb);

    /* An unknown format version. */
    pack_repeated(&tick, CMD_FORMAT_VERSION + 1, 1, &sb);
    ck_assert_int_eq(cmd_decode(sb.data, sb.size, &b), CLAWQ_ECORRUPT);
    msgpack_sbuffer_destroy(&sb);
    pack_repeated(&tick, 0, 1, &sb);
    ck_assert_int_eq(cmd_decode(sb.data, sb.size, &b), CLAWQ_ECORRUPT);
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

static void expect_corrupt(const msgpack_sbuffer *sb, const char *what)
{
    uint8_t *copy = exact_copy(sb->data, sb->size);
    cmd_batch *b = NULL;
    int rc = cmd_decode(copy, sb->size, &b);
    if (rc == 0)
        cmd_batch_free(b);
    ck_assert_msg(rc == CLAWQ_ECORRUPT, "%s: got %d, want CLAWQ_ECORRUPT", what,
                  rc);
    free(copy);
}

START_TEST(test_decode_hostile)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;

#define BEGIN()                                                                \
    do {                                                                       \
        msgpack_sbuffer_init(&sb);                                             \
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);                  \
    } while (0)
#define END(what)                                                              \
    do {                                                                       \
        expect_corrupt(&sb, what);                                             \
        msgpack_sbuffer_destroy(&sb);                                          \
    } while (0)

    BEGIN();
    END("empty buffer");

    BEGIN();
    msgpack_pack_map(&pk, 0);
    END("map at top");

    BEGIN();
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint64(&pk, CMD_FORMAT_VERSION);
    msgpack_pack_uint64(&pk, 1);
    END("two elements");

    BEGIN();
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, CMD_FORMAT_VERSION);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_nil(&pk);
    END("ops nil");

    BEGIN();
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, CMD_FORMAT_VERSION);
    msgpack_pack_str_with_body(&pk, "now", 3);
    msgpack_pack_array(&pk, 0);
    END("now is a string");

    BEGIN();
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, CMD_FORMAT_VERSION);
    msgpack_pack_int64(&pk, -5);
    msgpack_pack_array(&pk, 0);
    END("now negative");

    /* An array header claiming 2^32-1 ops with nothing behind it: no
     * allocation of that size, just ECORRUPT. */
    BEGIN();
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, CMD_FORMAT_VERSION);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_array(&pk, 0xffffffffu);
    END("huge op count");

    BEGIN();
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, CMD_FORMAT_VERSION);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 0);
    END("empty op");

    BEGIN();
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, CMD_FORMAT_VERSION);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_uint64(&pk, 99);
    END("unknown op type");

    BEGIN();
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, CMD_FORMAT_VERSION);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_uint64(&pk, 0);
    END("op type 0");

    BEGIN();
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, CMD_FORMAT_VERSION);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint64(&pk, CMD_ACK);
    msgpack_pack_uint64(&pk, 1);
    END("ack without lease id");

    BEGIN();
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, CMD_FORMAT_VERSION);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, CMD_ACK);
    msgpack_pack_str_with_body(&pk, "1", 1);
    msgpack_pack_uint64(&pk, 2);
    END("ack id is a string");

    BEGIN();
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, CMD_FORMAT_VERSION);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint64(&pk, CMD_TICK);
    msgpack_pack_uint64(&pk, 1ULL << 40);
    END("tick max over 32 bits");

    /* A bin32 claiming 4 GiB inside a put. */
    BEGIN();
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, CMD_FORMAT_VERSION);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 9);
    msgpack_pack_uint64(&pk, CMD_PUT);
    msgpack_pack_str_with_body(&pk, "q", 1);
    msgpack_pack_bin(&pk, 0xfffffff0u);
    msgpack_pack_bin_body(&pk, "abc", 3);
    END("bin32 past the end");

    /* Deep nesting where a payload belongs must not blow the stack. */
    BEGIN();
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, CMD_FORMAT_VERSION);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 9);
    msgpack_pack_uint64(&pk, CMD_PUT);
    msgpack_pack_str_with_body(&pk, "q", 1);
    for (int i = 0; i < 200000; i++)
        msgpack_pack_array(&pk, 1);
    msgpack_pack_nil(&pk);
    END("deep nesting");

#undef BEGIN
#undef END
}
END_TEST

START_TEST(test_decode_every_truncation)
{
    void *buf = NULL;
    size_t len = 0;
    size_t n_ops = 0;
    cmd_op ops[40];

    /* Every type, small payloads so every prefix is cheap to try. */
    for (size_t i = 0; i < g_n_ops; i++) {
        if (g_ops[i].type == CMD_PUT && g_ops[i].u.put.payload.len > 1000)
            continue;
        ops[n_ops++] = g_ops[i];
    }
    ck_assert_int_eq(cmd_encode(1700000000000ULL, ops, n_ops, &buf, &len), 0);
    for (size_t n = 0; n < len; n++) {
        uint8_t *copy = exact_copy(buf, n);
        cmd_batch *b = NULL;
        int rc = cmd_decode(copy, n, &b);
        if (rc == 0)
            cmd_batch_free(b);
        ck_assert_msg(rc == CLAWQ_ECORRUPT, "prefix of %zu/%zu bytes: got %d",
                      n, len, rc);
        free(copy);
    }
    free(buf);
}
END_TEST

static const uint8_t interesting[] = {
    0x00, 0x01, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1,
    0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf,
    0xd0, 0xd3, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff};

/* One mutation of a valid command into out (capacity cap); returns the
 * new length. */
static size_t mutate(uint64_t *s, const uint8_t *src, size_t len,
                     const uint8_t *other, size_t other_len, uint8_t *out,
                     size_t cap)
{
    size_t n = len < cap ? len : cap;
    memcpy(out, src, n);
    switch (rnd(s) % 7) {
    case 0: { /* bit flips */
        int k = 1 + (int)(rnd(s) % 4);
        for (int i = 0; i < k && n > 0; i++) {
            size_t bit = rnd(s) % (n * 8);
            out[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        }
        break;
    }
    case 1: { /* interesting bytes */
        int k = 1 + (int)(rnd(s) % 3);
        for (int i = 0; i < k && n > 0; i++)
            out[rnd(s) % n] = interesting[rnd(s) % sizeof(interesting)];
        break;
    }
    case 2: /* truncate, then flip */
        n = n > 0 ? rnd(s) % n : 0;
        if (n > 0)
            out[rnd(s) % n] ^= (uint8_t)(1u << (rnd(s) % 8));
        break;
    case 3: /* insert a byte */
        if (n < cap) {
            size_t at = n > 0 ? rnd(s) % (n + 1) : 0;
            memmove(out + at + 1, out + at, n - at);
            out[at] = (uint8_t)rnd(s);
            n++;
        }
        break;
    case 4: /* delete a range */
        if (n > 0) {
            size_t at = rnd(s) % n;
            size_t k = 1 + rnd(s) % 8;
            if (k > n - at)
                k = n - at;
            memmove(out + at, out + at + k, n - at - k);
            n -= k;
        }
        break;
    case 5: /* random bytes */
        n = rnd(s) % 96;
        if (n > cap)
            n = cap;
        for (size_t i = 0; i < n; i++)
            out[i] = (uint8_t)rnd(s);
        if (n > 0 && rnd(s) % 2)
            out[0] = 0x93; /* fixarray of 3, like a command */
        break;
    default: { /* splice a prefix of src with a suffix of other */
        size_t a = n > 0 ? rnd(s) % n : 0;
        size_t b = other_len > 0 ? rnd(s) % other_len : 0;
        size_t k = other_len - b;
        if (a + k > cap)
            k = cap - a;
        memcpy(out + a, other + b, k);
        n = a + k;
        break;
    }
    }
    return n;
}

/* Checks a successful decode of mutated input and that re-encoding the
 * decoded ops gives the same ops back. */
static void check_valid_decode(const cmd_batch *b, const uint8_t *buf,
                               size_t len)
{
    void *enc = NULL;
    size_t enc_len = 0;
    cmd_batch *b2 = NULL;
    int rc;

    /* Quiet checks first: Check's asserts are slow in a 100k loop. */
    if (b->n_ops > CMD_MAX_OPS)
        ck_assert_uint_le(b->n_ops, CMD_MAX_OPS);
    for (size_t i = 0; i < b->n_ops; i++) {
        if (b->ops[i].type < CMD_PUT || b->ops[i].type > CMD_MEMBER)
            ck_abort_msg("decoded op type %u", b->ops[i].type);
        if (!op_within(&b->ops[i], buf, len))
            assert_op_within(&b->ops[i], buf, len);
    }
    rc = cmd_encode(b->now_ms, b->ops, b->n_ops, &enc, &enc_len);
    if (rc != 0)
        ck_assert_int_eq(rc, 0);
    rc = cmd_decode(enc, enc_len, &b2);
    if (rc != 0)
        ck_assert_int_eq(rc, 0);
    if (b2->now_ms != b->now_ms || b2->n_ops != b->n_ops) {
        ck_assert_uint_eq(b2->now_ms, b->now_ms);
        ck_assert_uint_eq(b2->n_ops, b->n_ops);
    }
    for (size_t i = 0; i < b->n_ops; i++)
        if (!op_eq(&b->ops[i], &b2->ops[i]))
            assert_op_eq(&b->ops[i], &b2->ops[i]);
    cmd_batch_free(b2);
    free(enc);
}

START_TEST(test_decode_fuzz)
{
    enum { N_BASE = 5, ITERS = 100000, CAP = 4096 };
    void *base[N_BASE];
    size_t base_len[N_BASE];
    cmd_op small[40];
    size_t n_small = 0;
    uint8_t *scratch = malloc(CAP);
    uint64_t seed = 0x636d64667a7aULL;
    size_t n_ok = 0, n_corrupt = 0;

    ck_assert_ptr_nonnull(scratch);
    for (size_t i = 0; i < g_n_ops; i++) {
        cmd_op op = g_ops[i];
        if (op.type == CMD_PUT && op.u.put.payload.len > 64)
            op.u.put.payload.len = 64;
        if ((op.type == CMD_NACK || op.type == CMD_FAIL) &&
            op.u.settle.error.len > 64)
            op.u.settle.error.len = 64;
        if (op.type == CMD_EXTEND && op.u.extend.checkpoint.len > 64)
            op.u.extend.checkpoint.len = 64;
        small[n_small++] = op;
    }
    /* The whole set, and a few shorter commands. */
    ck_assert_int_eq(
        cmd_encode(1700000000000ULL, small, n_small, &base[0], &base_len[0]),
        0);
    ck_assert_int_eq(cmd_encode(7, small, 4, &base[1], &base_len[1]), 0);
    ck_assert_int_eq(cmd_encode(8, small + 4, 6, &base[2], &base_len[2]), 0);
    ck_assert_int_eq(cmd_encode(9, small + 10, 8, &base[3], &base_len[3]), 0);
    ck_assert_int_eq(
        cmd_encode(10, small + 18, n_small - 18, &base[4], &base_len[4]), 0);
    for (int i = 0; i < N_BASE; i++)
        ck_assert_uint_le(base_len[i], CAP - 16);

    for (int iter = 0; iter < ITERS; iter++) {
        int which = (int)(rnd(&seed) % N_BASE);
        int other = (int)(rnd(&seed) % N_BASE);
        size_t n = mutate(&seed, base[which], base_len[which], base[other],
                          base_len[other], scratch, CAP);
        uint8_t *copy = exact_copy(scratch, n);
        cmd_batch *b = NULL;
        int rc = cmd_decode(copy, n, &b);

        ck_assert_msg(rc == 0 || rc == CLAWQ_ECORRUPT, "iteration %d: rc %d",
                      iter, rc);
        if (rc == 0) {
            n_ok++;
            ck_assert_ptr_nonnull(b);
            check_valid_decode(b, copy, n);
            cmd_batch_free(b);
        } else {
            n_corrupt++;
        }
        free(copy);
    }
    /* The mutations hit both sides. */
    ck_assert_uint_gt(n_ok, 100);
    ck_assert_uint_gt(n_corrupt, ITERS / 2);
    for (int i = 0; i < N_BASE; i++)
        free(base[i]);
    free(scratch);
}
END_TEST

static Suite *cmd_suite(void)
{
    Suite *s = suite_create("cmd");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"roundtrip_each_type", test_roundtrip_each_type},
        {"every_type_named", test_roundtrip_every_type_named},
        {"roundtrip_multi", test_roundtrip_multi},
        {"writer_rejects_unknown_type", test_writer_rejects_unknown_type},
        {"max_ops", test_max_ops},
        {"decode_rejects_too_many_ops", test_decode_rejects_too_many_ops},
        {"decode_hostile", test_decode_hostile},
        {"decode_every_truncation", test_decode_every_truncation},
        {"decode_fuzz", test_decode_fuzz},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 30);
        tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(cmd_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
