/* test_record.c: task and queue records (msgpack maps with integer keys)
 * and the big-endian key layouts of record.h. */
#include <check.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "record.h"

/* Deterministic PRNG for the robustness loops. */
static uint64_t rnd(uint64_t *s)
{
    return cq_mix64((*s)++);
}

/* Copies len bytes into a buffer of exactly that size so that AddressSanitizer
 * reports any read past len. */
static uint8_t *exact_copy(const void *src, size_t len)
{
    uint8_t *p = malloc(len > 0 ? len : 1);
    ck_assert_ptr_nonnull(p);
    if (len > 0)
        memcpy(p, src, len);
    return p;
}

static void assert_within(cq_bytes b, const void *buf, size_t len)
{
    const uint8_t *lo = buf;
    if (b.len == 0)
        return;
    ck_assert_ptr_nonnull(b.ptr);
    ck_assert(b.ptr >= lo);
    ck_assert_uint_le(b.len, len);
    ck_assert(b.ptr + b.len <= lo + len);
}

static void assert_bytes_eq(cq_bytes a, cq_bytes b)
{
    ck_assert_uint_eq(a.len, b.len);
    if (a.len > 0)
        ck_assert_mem_eq(a.ptr, b.ptr, a.len);
}

static void assert_task_eq(const task_rec *a, const task_rec *b)
{
    ck_assert_uint_eq(a->id, b->id);
    ck_assert_uint_eq(a->qid, b->qid);
    ck_assert_uint_eq(a->state, b->state);
    ck_assert_uint_eq(a->priority, b->priority);
    ck_assert_uint_eq(a->dead_reason, b->dead_reason);
    ck_assert_uint_eq(a->attempt, b->attempt);
    ck_assert_uint_eq(a->max_attempts, b->max_attempts);
    ck_assert_uint_eq(a->created_ms, b->created_ms);
    ck_assert_uint_eq(a->run_at_ms, b->run_at_ms);
    ck_assert_uint_eq(a->deadline_ms, b->deadline_ms);
    ck_assert_uint_eq(a->seq, b->seq);
    ck_assert_uint_eq(a->ready_at_ms, b->ready_at_ms);
    ck_assert_uint_eq(a->lease_id, b->lease_id);
    ck_assert_uint_eq(a->lease_expires_ms, b->lease_expires_ms);
    ck_assert_uint_eq(a->leased_at_ms, b->leased_at_ms);
    ck_assert_uint_eq(a->progress, b->progress);
    ck_assert_uint_eq(a->dead_at_ms, b->dead_at_ms);
    assert_bytes_eq(a->worker, b->worker);
    assert_bytes_eq(a->checkpoint, b->checkpoint);
    assert_bytes_eq(a->idem_key, b->idem_key);
    assert_bytes_eq(a->headers, b->headers);
    assert_bytes_eq(a->payload, b->payload);
    ck_assert_uint_eq(a->n_errors, b->n_errors);
    for (uint32_t i = 0; i < a->n_errors && i < TASK_MAX_ERRORS; i++) {
        ck_assert_uint_eq(a->errors[i].at_ms, b->errors[i].at_ms);
        ck_assert_uint_eq(a->errors[i].attempt, b->errors[i].attempt);
        assert_bytes_eq(a->errors[i].msg, b->errors[i].msg);
    }
}

static bool bytes_within(cq_bytes b, const void *buf, size_t len)
{
    const uint8_t *lo = buf;
    return b.len == 0 || (b.ptr != NULL && b.ptr >= lo && b.len <= len &&
                          b.ptr + b.len <= lo + len);
}

static bool task_within(const task_rec *t, const void *buf, size_t len)
{
    if (!bytes_within(t->worker, buf, len) ||
        !bytes_within(t->checkpoint, buf, len) ||
        !bytes_within(t->idem_key, buf, len) ||
        !bytes_within(t->headers, buf, len) ||
        !bytes_within(t->payload, buf, len) || t->n_errors > TASK_MAX_ERRORS)
        return false;
    for (uint32_t i = 0; i < t->n_errors; i++)
        if (!bytes_within(t->errors[i].msg, buf, len))
            return false;
    return true;
}

static void assert_task_within(const task_rec *t, const void *buf, size_t len)
{
    assert_within(t->worker, buf, len);
    assert_within(t->checkpoint, buf, len);
    assert_within(t->idem_key, buf, len);
    assert_within(t->headers, buf, len);
    assert_within(t->payload, buf, len);
    ck_assert_uint_le(t->n_errors, TASK_MAX_ERRORS);
    for (uint32_t i = 0; i < t->n_errors; i++)
        assert_within(t->errors[i].msg, buf, len);
}

static void assert_queue_eq(const queue_rec *a, const queue_rec *b)
{
    ck_assert_uint_eq(a->qid, b->qid);
    ck_assert_uint_eq(a->created_ms, b->created_ms);
    ck_assert_uint_eq(a->oldest_ready_ms, b->oldest_ready_ms);
    ck_assert_uint_eq(a->settings.lease_ms, b->settings.lease_ms);
    ck_assert_uint_eq(a->settings.max_attempts, b->settings.max_attempts);
    ck_assert_uint_eq(a->settings.backoff_base_ms, b->settings.backoff_base_ms);
    ck_assert_uint_eq(a->settings.backoff_max_ms, b->settings.backoff_max_ms);
    ck_assert_uint_eq(a->settings.max_depth, b->settings.max_depth);
    ck_assert_uint_eq(a->settings.max_payload, b->settings.max_payload);
    ck_assert_uint_eq(a->settings.dedup_window_ms, b->settings.dedup_window_ms);
    ck_assert_int_eq(a->settings.paused, b->settings.paused);
    ck_assert_uint_eq(a->counters.ready, b->counters.ready);
    ck_assert_uint_eq(a->counters.delayed, b->counters.delayed);
    ck_assert_uint_eq(a->counters.leased, b->counters.leased);
    ck_assert_uint_eq(a->counters.dead, b->counters.dead);
    ck_assert_uint_eq(a->counters.put_total, b->counters.put_total);
    ck_assert_uint_eq(a->counters.deduped_total, b->counters.deduped_total);
    ck_assert_uint_eq(a->counters.leased_total, b->counters.leased_total);
    ck_assert_uint_eq(a->counters.acked_total, b->counters.acked_total);
    ck_assert_uint_eq(a->counters.nacked_total, b->counters.nacked_total);
    ck_assert_uint_eq(a->counters.failed_total, b->counters.failed_total);
    ck_assert_uint_eq(a->counters.expired_total, b->counters.expired_total);
    ck_assert_uint_eq(a->counters.dead_total, b->counters.dead_total);
}

/* Storage for the byte fields of a full task record. */
typedef struct task_fixture {
    task_rec t;
    uint8_t *payload;
    uint8_t *checkpoint;
    char errors[TASK_MAX_ERRORS][TASK_ERROR_MAX];
    msgpack_sbuffer headers;
} task_fixture;

/* A task with every field set to a distinct, non-default value, a binary
 * payload of payload_len bytes (NULs and 0xff included) and all five
 * errors, the first one TASK_ERROR_MAX bytes long. */
static void fixture_init(task_fixture *f, size_t payload_len)
{
    msgpack_packer pk;
    task_rec *t = &f->t;

    memset(f, 0, sizeof(*f));
    msgpack_sbuffer_init(&f->headers);
    msgpack_packer_init(&pk, &f->headers, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_str_with_body(&pk, "trace-id", 8);
    msgpack_pack_str_with_body(&pk, "abc123", 6);
    msgpack_pack_str_with_body(&pk, "empty", 5);
    msgpack_pack_str_with_body(&pk, "", 0);

    f->payload = malloc(payload_len > 0 ? payload_len : 1);
    ck_assert_ptr_nonnull(f->payload);
    for (size_t i = 0; i < payload_len; i++)
        f->payload[i] = (uint8_t)(i * 7 + (i >> 8));
    if (payload_len > 2) {
        f->payload[0] = 0x00;
        f->payload[1] = 0xff;
    }
    f->checkpoint = malloc(3000);
    ck_assert_ptr_nonnull(f->checkpoint);
    for (size_t i = 0; i < 3000; i++)
        f->checkpoint[i] = (uint8_t)(255 - i % 251);

    t->id = UINT64_MAX - 1;
    t->qid = UINT32_MAX;
    t->state = TASK_DEAD;
    t->priority = 255;
    t->dead_reason = DEAD_MAX_ATTEMPTS;
    t->attempt = 7;
    t->max_attempts = 70000;
    t->created_ms = 1700000000123ULL;
    t->run_at_ms = 1700000000999ULL;
    t->deadline_ms = UINT64_MAX;
    t->seq = (1ULL << 40) + 3;
    t->ready_at_ms = 1700000000500ULL;
    t->lease_id = (1ULL << 33) + 9;
    t->lease_expires_ms = 1700000030000ULL;
    t->leased_at_ms = 1700000000500ULL;
    t->progress = 42;
    t->dead_at_ms = 1700000040000ULL;
    t->worker = cq_bytes_str("worker-7@host:1234");
    t->checkpoint = cq_bytes_of(f->checkpoint, 3000);
    t->idem_key = cq_bytes_of("idem\0key\xff", 9);
    t->headers = cq_bytes_of(f->headers.data, f->headers.size);
    t->payload = cq_bytes_of(f->payload, payload_len);
    t->n_errors = TASK_MAX_ERRORS;
    for (int i = 0; i < TASK_MAX_ERRORS; i++) {
        size_t n = i == 0 ? TASK_ERROR_MAX : (size_t)(10 + i);
        memset(f->errors[i], 'a' + i, n);
        t->errors[i].at_ms = 1700000040000ULL - (uint64_t)i * 1000;
        t->errors[i].attempt = (uint32_t)(TASK_MAX_ERRORS - i);
        t->errors[i].msg = cq_bytes_of(f->errors[i], n);
    }
}

static void fixture_fini(task_fixture *f)
{
    free(f->payload);
    free(f->checkpoint);
    msgpack_sbuffer_destroy(&f->headers);
}

static void full_queue(queue_rec *q, bool paused)
{
    memset(q, 0, sizeof(*q));
    q->qid = 0x01020304;
    q->created_ms = 1700000000001ULL;
    q->oldest_ready_ms = 1700000000002ULL;
    q->settings.lease_ms = 123456;
    q->settings.max_attempts = 9;
    q->settings.backoff_base_ms = 250;
    q->settings.backoff_max_ms = UINT32_MAX;
    q->settings.max_depth = UINT64_MAX;
    q->settings.max_payload = 5u << 20;
    q->settings.dedup_window_ms = 1ULL << 35;
    q->settings.paused = paused;
    q->counters.ready = 1;
    q->counters.delayed = 2;
    q->counters.leased = 3;
    q->counters.dead = 4;
    q->counters.put_total = 1ULL << 32;
    q->counters.deduped_total = 6;
    q->counters.leased_total = 7;
    q->counters.acked_total = 8;
    q->counters.nacked_total = 9;
    q->counters.failed_total = 10;
    q->counters.expired_total = 11;
    q->counters.dead_total = UINT64_MAX;
}

/* Encodes t, decodes it from an exact-size copy and compares. */
static void task_roundtrip(const task_rec *t)
{
    cq_buf b;
    task_rec d;
    uint8_t *copy;

    cq_buf_init(&b, 16u << 20);
    ck_assert_int_eq(task_rec_encode(t, &b), 0);
    ck_assert_uint_gt(b.len, 0);
    copy = exact_copy(b.ptr, b.len);
    memset(&d, 0xa5, sizeof(d));
    ck_assert_int_eq(task_rec_decode(copy, b.len, &d), 0);
    assert_task_eq(t, &d);
    assert_task_within(&d, copy, b.len);
    free(copy);
    cq_buf_fini(&b);
}

START_TEST(test_task_roundtrip_full)
{
    static const size_t sizes[] = {0, 1, 31, 32, 255, 256, 65535, 65536, 70001};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        task_fixture f;
        fixture_init(&f, sizes[i]);
        task_roundtrip(&f.t);
        fixture_fini(&f);
    }
}
END_TEST

START_TEST(test_task_roundtrip_minimal)
{
    task_rec t;
    int states[] = {TASK_READY, TASK_DELAYED, TASK_LEASED, TASK_DEAD};

    for (size_t i = 0; i < 4; i++) {
        memset(&t, 0, sizeof(t));
        t.id = 1 + i;
        t.qid = 1;
        t.state = (uint8_t)states[i];
        t.priority = 128;
        task_roundtrip(&t);
    }

    /* Empty-but-present byte fields and a single error with empty text. */
    memset(&t, 0, sizeof(t));
    t.id = 99;
    t.state = TASK_READY;
    t.payload = cq_bytes_of("", 0);
    t.worker = cq_bytes_of("", 0);
    t.n_errors = 1;
    t.errors[0].at_ms = 5;
    t.errors[0].attempt = 1;
    t.errors[0].msg = cq_bytes_of("", 0);
    task_roundtrip(&t);

    /* A full checkpoint. */
    {
        uint8_t *cp = malloc(TASK_CHECKPOINT_MAX);
        ck_assert_ptr_nonnull(cp);
        for (size_t i = 0; i < TASK_CHECKPOINT_MAX; i++)
            cp[i] = (uint8_t)(i ^ (i >> 9));
        memset(&t, 0, sizeof(t));
        t.id = 100;
        t.state = TASK_LEASED;
        t.checkpoint = cq_bytes_of(cp, TASK_CHECKPOINT_MAX);
        task_roundtrip(&t);
        free(cp);
    }
}
END_TEST

START_TEST(test_queue_roundtrip)
{
    for (int p = 0; p < 2; p++) {
        queue_rec q, d;
        cq_buf b;
        uint8_t *copy;

        full_queue(&q, p == 1);
        cq_buf_init(&b, 1u << 20);
        ck_assert_int_eq(queue_rec_encode(&q, &b), 0);
        copy = exact_copy(b.ptr, b.len);
        memset(&d, 0x5a, sizeof(d));
        ck_assert_int_eq(queue_rec_decode(copy, b.len, &d), 0);
        assert_queue_eq(&q, &d);
        free(copy);
        cq_buf_fini(&b);
    }

    /* All zero, defaults. */
    {
        queue_rec q, d;
        cq_buf b;

        memset(&q, 0, sizeof(q));
        q.qid = 1;
        queue_settings_default(&q.settings);
        cq_buf_init(&b, 1u << 20);
        ck_assert_int_eq(queue_rec_encode(&q, &b), 0);
        memset(&d, 0x5a, sizeof(d));
        ck_assert_int_eq(queue_rec_decode(b.ptr, b.len, &d), 0);
        assert_queue_eq(&q, &d);
        cq_buf_fini(&b);
    }
}
END_TEST

START_TEST(test_encode_appends)
{
    task_fixture f;
    queue_rec q, dq;
    task_rec dt;
    cq_buf b;
    size_t tlen;

    /* Encoders append: a prefix already in the buffer stays untouched. */
    fixture_init(&f, 100);
    full_queue(&q, true);
    cq_buf_init(&b, 1u << 20);
    ck_assert_int_eq(cq_buf_append(&b, "PREFIX", 6), 0);
    ck_assert_int_eq(task_rec_encode(&f.t, &b), 0);
    tlen = b.len - 6;
    ck_assert_int_eq(queue_rec_encode(&q, &b), 0);
    ck_assert_mem_eq(b.ptr, "PREFIX", 6);
    ck_assert_int_eq(task_rec_decode(b.ptr + 6, tlen, &dt), 0);
    assert_task_eq(&f.t, &dt);
    ck_assert_int_eq(queue_rec_decode(b.ptr + 6 + tlen, b.len - 6 - tlen, &dq),
                     0);
    assert_queue_eq(&q, &dq);
    cq_buf_fini(&b);

    /* A cap too small for the record: a cq_buf error, not a crash. */
    cq_buf_init(&b, 16);
    ck_assert_int_eq(task_rec_encode(&f.t, &b), CLAWQ_ETOO_LARGE);
    cq_buf_fini(&b);
    fixture_fini(&f);
}
END_TEST

START_TEST(test_decode_truncated)
{
    task_fixture f;
    queue_rec q;
    cq_buf tb, qb;

    fixture_init(&f, 300);
    full_queue(&q, true);
    cq_buf_init(&tb, 1u << 20);
    cq_buf_init(&qb, 1u << 20);
    ck_assert_int_eq(task_rec_encode(&f.t, &tb), 0);
    ck_assert_int_eq(queue_rec_encode(&q, &qb), 0);

    for (size_t n = 0; n < tb.len; n++) {
        task_rec d;
        uint8_t *copy = exact_copy(tb.ptr, n);
        ck_assert_int_eq(task_rec_decode(copy, n, &d), CLAWQ_ECORRUPT);
        free(copy);
    }
    for (size_t n = 0; n < qb.len; n++) {
        queue_rec d;
        uint8_t *copy = exact_copy(qb.ptr, n);
        ck_assert_int_eq(queue_rec_decode(copy, n, &d), CLAWQ_ECORRUPT);
        free(copy);
    }
    cq_buf_fini(&tb);
    cq_buf_fini(&qb);
    fixture_fini(&f);
}
END_TEST

static bool is_map_marker(uint8_t b)
{
    return (b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf;
}

START_TEST(test_decode_random_bytes)
{
    uint64_t seed = 0x7265636f7264ULL;
    uint8_t raw[512];
    size_t n_ok = 0;

    for (int iter = 0; iter < 20000; iter++) {
        size_t len = rnd(&seed) % sizeof(raw);
        uint8_t *copy;
        task_rec t;
        queue_rec q;
        int rc;

        for (size_t i = 0; i < len; i++)
            raw[i] = (uint8_t)rnd(&seed);
        /* Half the time start with a map header, to get past the first
         * check. */
        if (len > 0 && iter % 2 == 0)
            raw[0] = (uint8_t)(0x80 | (rnd(&seed) & 0x0f));
        copy = exact_copy(raw, len);

        rc = task_rec_decode(copy, len, &t);
        if (len == 0 || !is_map_marker(raw[0]))
            ck_assert_int_eq(rc, CLAWQ_ECORRUPT);
        else
            ck_assert(rc == 0 || rc == CLAWQ_ECORRUPT);
        if (rc == 0) {
            n_ok++;
            assert_task_within(&t, copy, len);
        }

        rc = queue_rec_decode(copy, len, &q);
        if (len == 0 || !is_map_marker(raw[0]))
            ck_assert_int_eq(rc, CLAWQ_ECORRUPT);
        else
            ck_assert(rc == 0 || rc == CLAWQ_ECORRUPT);
        free(copy);
    }
    (void)n_ok;
}
END_TEST

START_TEST(test_decode_mutated)
{
    uint64_t seed = 0x6d7574617465ULL;
    task_fixture f;
    cq_buf tb, qb;
    queue_rec q;

    fixture_init(&f, 200);
    f.t.checkpoint = cq_bytes_of(f.checkpoint, 40);
    f.t.errors[0].msg.len = 30;
    full_queue(&q, true);
    cq_buf_init(&tb, 1u << 20);
    cq_buf_init(&qb, 1u << 20);
    ck_assert_int_eq(task_rec_encode(&f.t, &tb), 0);
    ck_assert_int_eq(queue_rec_encode(&q, &qb), 0);

    for (int iter = 0; iter < 20000; iter++) {
        const cq_buf *src = iter % 3 == 0 ? &qb : &tb;
        size_t len = src->len;
        uint8_t *copy = exact_copy(src->ptr, len);
        int flips = 1 + (int)(rnd(&seed) % 4);
        task_rec t;
        queue_rec dq;
        int rc;

        for (int k = 0; k < flips; k++) {
            size_t bit = rnd(&seed) % (len * 8);
            copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        }
        if (rnd(&seed) % 4 == 0)
            len = rnd(&seed) % (len + 1);

        /* Quiet checks first: Check's asserts are slow in a long loop. */
        rc = task_rec_decode(copy, len, &t);
        if (rc != 0 && rc != CLAWQ_ECORRUPT)
            ck_abort_msg("task_rec_decode: rc %d", rc);
        if (rc == 0 && !task_within(&t, copy, len))
            assert_task_within(&t, copy, len);
        rc = queue_rec_decode(copy, len, &dq);
        if (rc != 0 && rc != CLAWQ_ECORRUPT)
            ck_abort_msg("queue_rec_decode: rc %d", rc);
        free(copy);
    }
    cq_buf_fini(&tb);
    cq_buf_fini(&qb);
    fixture_fini(&f);
}
END_TEST

/* Re-packs the map in `enc` with extra integer keys (values of every
 * msgpack type, nested) before, among and after the original pairs. */
static void add_unknown_keys(const cq_buf *enc, msgpack_sbuffer *out)
{
    static const uint64_t extra[] = {200, 60000, 0xffffffffULL,
                                     0x123456789abULL};
    msgpack_unpacked u;
    msgpack_packer pk;
    size_t off = 0;
    uint32_t n;

    msgpack_unpacked_init(&u);
    ck_assert_int_eq(
        msgpack_unpack_next(&u, (const char *)enc->ptr, enc->len, &off),
        MSGPACK_UNPACK_SUCCESS);
    ck_assert_uint_eq(off, enc->len);
    ck_assert_int_eq(u.data.type, MSGPACK_OBJECT_MAP);
    n = u.data.via.map.size;
    ck_assert_uint_gt(n, 2);
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *k = &u.data.via.map.ptr[i].key;
        ck_assert_int_eq(k->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
        for (size_t e = 0; e < 4; e++)
            ck_assert_uint_ne(k->via.u64, extra[e]);
    }

    msgpack_sbuffer_init(out);
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, n + 4);

    /* Before: a nested map with an array inside. */
    msgpack_pack_uint64(&pk, extra[0]);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_nil(&pk);
    msgpack_pack_true(&pk);
    msgpack_pack_int64(&pk, -5);
    msgpack_pack_str_with_body(&pk, "k", 1);
    msgpack_pack_double(&pk, 1.5);

    for (uint32_t i = 0; i < n; i++) {
        if (i == n / 2) {
            /* Among: binary and a long string. */
            char big[300];
            memset(big, 'x', sizeof(big));
            msgpack_pack_uint64(&pk, extra[1]);
            msgpack_pack_bin_with_body(&pk, "\x00\x01\x02", 3);
            msgpack_pack_uint64(&pk, extra[2]);
            msgpack_pack_str_with_body(&pk, big, sizeof(big));
        }
        msgpack_pack_object(&pk, u.data.via.map.ptr[i].key);
        msgpack_pack_object(&pk, u.data.via.map.ptr[i].val);
    }

    /* After: an array of maps. */
    msgpack_pack_uint64(&pk, extra[3]);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_map(&pk, 0);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_int64(&pk, -1);
    msgpack_pack_float(&pk, 2.0f);
    msgpack_unpacked_destroy(&u);
}

START_TEST(test_unknown_keys_skipped)
{
    task_fixture f;
    queue_rec q, dq;
    task_rec dt;
    cq_buf tb, qb;
    msgpack_sbuffer ts, qs;
    uint8_t *copy;

    fixture_init(&f, 77);
    full_queue(&q, true);
    cq_buf_init(&tb, 1u << 20);
    cq_buf_init(&qb, 1u << 20);
    ck_assert_int_eq(task_rec_encode(&f.t, &tb), 0);
    ck_assert_int_eq(queue_rec_encode(&q, &qb), 0);

    add_unknown_keys(&tb, &ts);
    copy = exact_copy(ts.data, ts.size);
    ck_assert_int_eq(task_rec_decode(copy, ts.size, &dt), 0);
    assert_task_eq(&f.t, &dt);
    assert_task_within(&dt, copy, ts.size);
    free(copy);

    add_unknown_keys(&qb, &qs);
    copy = exact_copy(qs.data, qs.size);
    ck_assert_int_eq(queue_rec_decode(copy, qs.size, &dq), 0);
    assert_queue_eq(&q, &dq);
    free(copy);

    msgpack_sbuffer_destroy(&ts);
    msgpack_sbuffer_destroy(&qs);
    cq_buf_fini(&tb);
    cq_buf_fini(&qb);
    fixture_fini(&f);
}
END_TEST

START_TEST(test_not_a_map)
{
    static const uint8_t cases[][4] = {
        {0x90, 0, 0, 0},                    /* empty array */
        {0xc0, 0, 0, 0},                    /* nil */
        {0x01, 0, 0, 0},                    /* fixint */
        {0xa1, 'x', 0, 0}, {0xc1, 0, 0, 0}, /* never used */
    };
    static const size_t lens[] = {1, 1, 1, 2, 1};
    for (size_t i = 0; i < 5; i++) {
        task_rec t;
        queue_rec q;
        uint8_t *copy = exact_copy(cases[i], lens[i]);
        ck_assert_int_eq(task_rec_decode(copy, lens[i], &t), CLAWQ_ECORRUPT);
        ck_assert_int_eq(queue_rec_decode(copy, lens[i], &q), CLAWQ_ECORRUPT);
        free(copy);
    }
    /* A map header claiming 2^32-1 pairs with nothing behind it. */
    {
        static const uint8_t huge[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
        task_rec t;
        queue_rec q;
        uint8_t *copy = exact_copy(huge, sizeof(huge));
        ck_assert_int_eq(task_rec_decode(copy, sizeof(huge), &t),
                         CLAWQ_ECORRUPT);
        ck_assert_int_eq(queue_rec_decode(copy, sizeof(huge), &q),
                         CLAWQ_ECORRUPT);
        free(copy);
    }
}
END_TEST

/* Values biased to the boundaries where byte order and numeric order
 * could disagree. */
static uint64_t edge_value(uint64_t *s, int bits)
{
    static const uint64_t edges[] = {0,
                                     1,
                                     0x7f,
                                     0x80,
                                     0xff,
                                     0x100,
                                     0xffff,
                                     0x10000,
                                     0x7fffffffULL,
                                     0x80000000ULL,
                                     0xffffffffULL,
                                     0x100000000ULL,
                                     0x7fffffffffffffffULL,
                                     0x8000000000000000ULL,
                                     UINT64_MAX};
    uint64_t mask = bits == 64 ? UINT64_MAX : ((1ULL << bits) - 1);
    uint64_t r = rnd(s);
    switch (r % 4) {
    case 0:
        return edges[rnd(s) % (sizeof(edges) / sizeof(edges[0]))] & mask;
    case 1:
        return (rnd(s) % 4) & mask;
    case 2:
        return (rnd(s) >> (rnd(s) % 64)) & mask;
    default:
        return rnd(s) & mask;
    }
}

static int cmp_u64(uint64_t a, uint64_t b)
{
    return a < b ? -1 : a > b;
}

static int sign(int x)
{
    return (x > 0) - (x < 0);
}

START_TEST(test_key_layouts)
{
    uint8_t k[KEY_IDEM_EXP_MAX];
    uint8_t idem[TASK_KEY_MAX];

    ck_assert_uint_eq(key_task(k, 0x0102030405060708ULL), KEY_TASK_LEN);
    ck_assert_mem_eq(k, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);

    ck_assert_uint_eq(key_ready(k, 0x0a0b0c0d, 0xee, 0x1112131415161718ULL),
                      KEY_READY_LEN);
    ck_assert_mem_eq(k, "\x0a\x0b\x0c\x0d\xee\x11\x12\x13\x14\x15\x16\x17\x18",
                     13);

    ck_assert_uint_eq(key_time_id(k, 0x0102030405060708ULL, 0xf0e0d0c0b0a09080),
                      KEY_TIME_ID_LEN);
    ck_assert_mem_eq(k,
                     "\x01\x02\x03\x04\x05\x06\x07\x08"
                     "\xf0\xe0\xd0\xc0\xb0\xa0\x90\x80",
                     16);

    ck_assert_uint_eq(key_dead(k, 0xa1a2a3a4, 0x0102030405060708ULL, 9),
                      KEY_DEAD_LEN);
    ck_assert_mem_eq(k,
                     "\xa1\xa2\xa3\xa4\x01\x02\x03\x04\x05\x06\x07\x08"
                     "\x00\x00\x00\x00\x00\x00\x00\x09",
                     20);

    ck_assert_uint_eq(key_idem(k, 0x01020304, cq_bytes_str("abc")), 7);
    ck_assert_mem_eq(k,
                     "\x01\x02\x03\x04"
                     "abc",
                     7);

    ck_assert_uint_eq(
        key_idem_exp(k, 0x1112131415161718ULL, 0x01020304, cq_bytes_str("k")),
        13);
    ck_assert_mem_eq(k,
                     "\x11\x12\x13\x14\x15\x16\x17\x18"
                     "\x01\x02\x03\x04"
                     "k",
                     13);

    /* The longest idempotency key fits the stated maxima. */
    memset(idem, 0xff, sizeof(idem));
    ck_assert_uint_eq(key_idem(k, 7, cq_bytes_of(idem, TASK_KEY_MAX)),
                      KEY_IDEM_MAX);
    ck_assert_uint_eq(
        key_idem_exp(k, 7, UINT32_MAX, cq_bytes_of(idem, TASK_KEY_MAX)),
        KEY_IDEM_EXP_MAX);
    ck_assert_mem_eq(k + 12, idem, TASK_KEY_MAX);
}
END_TEST

/* Byte order of two keys matches `want`; the typed assert runs only on a
 * mismatch (Check's asserts are slow in a 100k loop). */
#define CHECK_ORDER(ka, kb, len, want)                                         \
    do {                                                                       \
        int got_ = sign(memcmp((ka), (kb), (len)));                            \
        if (got_ != (want))                                                    \
            ck_assert_int_eq(got_, (want));                                    \
    } while (0)

START_TEST(test_key_order_numeric)
{
    uint64_t seed = 0x6b65796f72646572ULL;

    for (int iter = 0; iter < 100000; iter++) {
        uint8_t ka[KEY_DEAD_LEN], kb[KEY_DEAD_LEN];
        uint64_t a1 = edge_value(&seed, 32), b1 = edge_value(&seed, 32);
        uint64_t a2 = edge_value(&seed, 8), b2 = edge_value(&seed, 8);
        uint64_t a3 = edge_value(&seed, 64), b3 = edge_value(&seed, 64);
        uint64_t t1 = edge_value(&seed, 64), u1 = edge_value(&seed, 64);
        int want;

        /* Equal leading fields are common, so later fields decide often. */
        if (rnd(&seed) % 3 == 0)
            b1 = a1;
        if (rnd(&seed) % 3 == 0)
            b2 = a2;
        if (rnd(&seed) % 3 == 0)
            u1 = t1;

        /* task: id */
        key_task(ka, t1);
        key_task(kb, u1);
        CHECK_ORDER(ka, kb, KEY_TASK_LEN, cmp_u64(t1, u1));

        /* ready: qid, priority, seq */
        key_ready(ka, (uint32_t)a1, (uint8_t)a2, a3);
        key_ready(kb, (uint32_t)b1, (uint8_t)b2, b3);
        want = cmp_u64(a1, b1);
        if (want == 0)
            want = cmp_u64(a2, b2);
        if (want == 0)
            want = cmp_u64(a3, b3);
        CHECK_ORDER(ka, kb, KEY_READY_LEN, want);

        /* time, id: delayed, leases, deadlines */
        key_time_id(ka, t1, a3);
        key_time_id(kb, u1, b3);
        want = cmp_u64(t1, u1);
        if (want == 0)
            want = cmp_u64(a3, b3);
        CHECK_ORDER(ka, kb, KEY_TIME_ID_LEN, want);

        /* dead: qid, dead_at, id */
        key_dead(ka, (uint32_t)a1, t1, a3);
        key_dead(kb, (uint32_t)b1, u1, b3);
        want = cmp_u64(a1, b1);
        if (want == 0)
            want = cmp_u64(t1, u1);
        if (want == 0)
            want = cmp_u64(a3, b3);
        CHECK_ORDER(ka, kb, KEY_DEAD_LEN, want);
    }
}
END_TEST

START_TEST(test_key_idem_order)
{
    uint64_t seed = 0x6964656dULL;

    for (int iter = 0; iter < 20000; iter++) {
        uint8_t ka[KEY_IDEM_EXP_MAX], kb[KEY_IDEM_EXP_MAX];
        uint64_t at_a = edge_value(&seed, 64), at_b = edge_value(&seed, 64);
        uint32_t qa = (uint32_t)edge_value(&seed, 32);
        uint32_t qb = (uint32_t)edge_value(&seed, 32);
        size_t la, lb;
        char sa[8], sb[8];
        int want;

        if (rnd(&seed) % 2 == 0)
            at_b = at_a;
        if (rnd(&seed) % 2 == 0)
            qb = qa;
        /* Same-length keys: the suffix compares as bytes. */
        for (int i = 0; i < 8; i++) {
            sa[i] = (char)('a' + rnd(&seed) % 3);
            sb[i] = (char)('a' + rnd(&seed) % 3);
        }

        la = key_idem(ka, qa, cq_bytes_of(sa, 8));
        lb = key_idem(kb, qb, cq_bytes_of(sb, 8));
        ck_assert_uint_eq(la, 12);
        ck_assert_uint_eq(lb, 12);
        want = cmp_u64(qa, qb);
        if (want == 0)
            want = sign(memcmp(sa, sb, 8));
        CHECK_ORDER(ka, kb, 12, want);

        la = key_idem_exp(ka, at_a, qa, cq_bytes_of(sa, 8));
        lb = key_idem_exp(kb, at_b, qb, cq_bytes_of(sb, 8));
        ck_assert_uint_eq(la, 20);
        ck_assert_uint_eq(lb, 20);
        want = cmp_u64(at_a, at_b);
        if (want == 0)
            want = cmp_u64(qa, qb);
        if (want == 0)
            want = sign(memcmp(sa, sb, 8));
        CHECK_ORDER(ka, kb, 20, want);
    }
}
END_TEST

START_TEST(test_queue_name_valid)
{
    char name[QUEUE_NAME_MAX + 2];
    static const char *good[] = {
        "a",  "Z", "0", "orders", "a.b_c:d-e",
        "..", "-", ":", "_",      "Queue-42.v2:high_prio"};
    static const char *bad[] = {"",    " ",   "a b",  "a/b", "a*",
                                "q\n", "é",   "a\tb", "a,b", "a;b",
                                "a+b", "a@b", "[q]",  "q\\", "a#"};

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        ck_assert_msg(queue_name_is_valid(cq_bytes_str(good[i])),
                      "'%s' should be valid", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(!queue_name_is_valid(cq_bytes_str(bad[i])),
                      "'%s' should be invalid", bad[i]);

    /* Length bounds. */
    memset(name, 'q', sizeof(name));
    ck_assert(queue_name_is_valid(cq_bytes_of(name, QUEUE_NAME_MAX)));
    ck_assert(!queue_name_is_valid(cq_bytes_of(name, QUEUE_NAME_MAX + 1)));
    ck_assert(!queue_name_is_valid(cq_bytes_of(name, 0)));

    /* An embedded NUL counts as a byte and is not allowed. */
    ck_assert(!queue_name_is_valid(cq_bytes_of("ab\0c", 4)));
    ck_assert(!queue_name_is_valid(cq_bytes_of("\0", 1)));

    /* Every single byte outside the set. */
    for (int c = 0; c < 256; c++) {
        uint8_t b = (uint8_t)c;
        bool want = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                    c == ':' || c == '-';
        ck_assert_msg(queue_name_is_valid(cq_bytes_of(&b, 1)) == want,
                      "byte 0x%02x", c);
    }
}
END_TEST

START_TEST(test_names_and_defaults)
{
    queue_settings s;

    ck_assert_str_eq(dead_reason_name(DEAD_FAILED), "failed");
    ck_assert_str_eq(dead_reason_name(DEAD_MAX_ATTEMPTS), "max_attempts");
    ck_assert_str_eq(dead_reason_name(DEAD_EXPIRED), "expired");
    ck_assert_str_eq(dead_reason_name(DEAD_NONE), "");
    ck_assert_str_eq(dead_reason_name(99), "");
    ck_assert_str_eq(task_state_name(TASK_READY), "ready");
    ck_assert_str_eq(task_state_name(TASK_DELAYED), "delayed");
    ck_assert_str_eq(task_state_name(TASK_LEASED), "leased");
    ck_assert_str_eq(task_state_name(TASK_DEAD), "dead");
    ck_assert_str_eq(task_state_name(0), "");
    ck_assert_str_eq(task_state_name(-1), "");

    /* DESIGN.md section 2. */
    memset(&s, 0xff, sizeof(s));
    queue_settings_default(&s);
    ck_assert_uint_eq(s.lease_ms, 30000);
    ck_assert_uint_eq(s.max_attempts, 5);
    ck_assert_uint_eq(s.backoff_base_ms, 1000);
    ck_assert_uint_eq(s.backoff_max_ms, 300000);
    ck_assert_uint_eq(s.max_depth, 0);
    ck_assert_uint_eq(s.max_payload, 1u << 20);
    ck_assert_uint_eq(s.dedup_window_ms, 600000);
    ck_assert(!s.paused);
}
END_TEST

static Suite *record_suite(void)
{
    Suite *s = suite_create("record");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"task_roundtrip_full", test_task_roundtrip_full},
        {"task_roundtrip_minimal", test_task_roundtrip_minimal},
        {"queue_roundtrip", test_queue_roundtrip},
        {"encode_appends", test_encode_appends},
        {"decode_truncated", test_decode_truncated},
        {"decode_random_bytes", test_decode_random_bytes},
        {"decode_mutated", test_decode_mutated},
        {"decode_not_a_map", test_not_a_map},
        {"unknown_keys_skipped", test_unknown_keys_skipped},
        {"key_layouts", test_key_layouts},
        {"key_order_numeric", test_key_order_numeric},
        {"key_idem_order", test_key_idem_order},
        {"queue_name_valid", test_queue_name_valid},
        {"names_and_defaults", test_names_and_defaults},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(record_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
