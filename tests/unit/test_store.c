/* test_store.c: the LMDB store of store.h: point operations, cursors,
 * schema and applied index, snapshot and restore, map growth and a full
 * map, the store in memory. */
#include <check.h>
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsm.h"
#include "helpers.h"
#include "record.h"
#include "store.h"

#define MiB ((size_t)1 << 20)

/* A log-backed store (nosync); in memory (with writemap, as clawqd runs
 * it) or on disk. */
static store *open_mode(const char *dir, size_t map_size, size_t map_max,
                        bool memory)
{
    store_opts o;
    store *s = NULL;

    memset(&o, 0, sizeof(o));
    o.map_size = map_size;
    o.map_max = map_max;
    o.nosync = true;
    o.writemap = memory;
    o.memory = memory;
    ck_assert_int_eq(store_open(dir, &o, &s), 0);
    ck_assert_ptr_nonnull(s);
    return s;
}

static store *open_with(const char *dir, size_t map_size, size_t map_max)
{
    return open_mode(dir, map_size, map_max, false);
}

static uint64_t digest_of(store *s)
{
    uint64_t d = 0;
    ck_assert_int_eq(store_digest(s, &d), 0);
    return d;
}

static uint64_t applied_of(store *s)
{
    store_txn *t = NULL;
    uint64_t idx = UINT64_MAX;

    ck_assert_int_eq(store_txn_begin(s, false, &t), 0);
    ck_assert_int_eq(store_applied_get(t, &idx), 0);
    store_txn_abort(t);
    return idx;
}

static uint64_t count_of(store *s, store_db db)
{
    store_txn *t = NULL;
    uint64_t n = UINT64_MAX;

    ck_assert_int_eq(store_txn_begin(s, false, &t), 0);
    ck_assert_int_eq(store_db_count(t, db, &n), 0);
    store_txn_abort(t);
    return n;
}

static void raw_put(store *s, store_db db, const char *key, const char *val)
{
    store_txn *t = NULL;
    ck_assert_int_eq(store_txn_begin(s, true, &t), 0);
    ck_assert_int_eq(store_put(t, db, cq_bytes_str(key), cq_bytes_str(val)), 0);
    ck_assert_int_eq(store_txn_commit(t), 0);
}

/* store_get in a read transaction: 0 and the value copied into out, or the
 * error. */
static int raw_get(store *s, store_db db, cq_bytes key, char *out, size_t cap)
{
    store_txn *t = NULL;
    cq_bytes v = {NULL, 0};
    int rc;

    ck_assert_int_eq(store_txn_begin(s, false, &t), 0);
    rc = store_get(t, db, key, &v);
    if (rc == 0 && out != NULL) {
        ck_assert_uint_lt(v.len, cap);
        memcpy(out, v.ptr, v.len);
        out[v.len] = '\0';
    }
    store_txn_abort(t);
    return rc;
}

/* Every database of a and b holds the same keys and values, byte for
 * byte. */
static void assert_stores_equal(store *a, store *b)
{
    store_txn *ta = NULL, *tb = NULL;

    ck_assert_int_eq(store_txn_begin(a, false, &ta), 0);
    ck_assert_int_eq(store_txn_begin(b, false, &tb), 0);
    for (int db = 0; db < STORE_DB_COUNT; db++) {
        store_cursor *ca = NULL, *cb = NULL;
        cq_bytes ka, va, kb, vb;
        int ra, rb;
        size_t n = 0;

        ck_assert_int_eq(store_cursor_open(ta, (store_db)db, &ca), 0);
        ck_assert_int_eq(store_cursor_open(tb, (store_db)db, &cb), 0);
        ra = store_cursor_seek(ca, cq_bytes_of(NULL, 0), &ka, &va);
        rb = store_cursor_seek(cb, cq_bytes_of(NULL, 0), &kb, &vb);
        for (;;) {
            ck_assert_msg(ra == rb, "db %d entry %zu: %d vs %d", db, n, ra, rb);
            if (ra != 0) {
                ck_assert_int_eq(ra, CLAWQ_ENOT_FOUND);
                break;
            }
            ck_assert_msg(cq_bytes_eq(ka, kb), "db %d entry %zu: keys differ",
                          db, n);
            ck_assert_msg(cq_bytes_eq(va, vb), "db %d entry %zu: values differ",
                          db, n);
            n++;
            ra = store_cursor_next(ca, &ka, &va);
            rb = store_cursor_next(cb, &kb, &vb);
        }
        store_cursor_close(ca);
        store_cursor_close(cb);
    }
    store_txn_abort(ta);
    store_txn_abort(tb);
}

/* Fills a store through the state machine so that most databases hold
 * something: puts (delayed, with deadlines and idempotency keys), leases,
 * acks, nacks, fails, queue settings. Advances *index and *now. */
static void populate(store *s, uint64_t *index, uint64_t *now, int rounds,
                     const char *prefix)
{
    fsm_result res;
    char q[2][64], payload[64], key[32];

    fsm_result_init(&res);
    snprintf(q[0], sizeof(q[0]), "%s.a", prefix);
    snprintf(q[1], sizeof(q[1]), "%s.b", prefix);
    for (int r = 0; r < rounds; r++) {
        cmd_op ops[8];
        size_t n = 0;

        snprintf(payload, sizeof(payload), "%s payload %d", prefix, r);
        snprintf(key, sizeof(key), "k%d", r);
        ops[n++] = th_put(q[r % 2], payload, (uint8_t)(r % 3));
        ops[n] = th_put(q[0], payload, 7);
        ops[n].u.put.run_at_ms = *now + 100000;
        ops[n].u.put.deadline_ms = *now + 500000;
        ops[n].u.put.idem_key = cq_bytes_str(key);
        n++;
        ops[n++] = th_put(q[1], "", 200);
        ops[n++] = th_lease(q[r % 2], 2, 60000);
        ops[n++] = th_tick();
        th_apply(s, index, *now, ops, n, &res);
        for (size_t i = 0; i < res.n_ops; i++)
            ck_assert_int_eq(res.ops[i].status, 0);

        /* Settle what was leased: ack, nack or fail in turn. */
        n = 0;
        for (size_t i = 0; i < res.n_tasks && n < 8; i++) {
            const fsm_task *t = &res.tasks[i];
            switch ((r + (int)i) % 3) {
            case 0:
                ops[n++] = th_ack(t->id, t->lease_id);
                break;
            case 1:
                ops[n++] = th_nack(t->id, t->lease_id, 10, "nacked");
                break;
            default:
                ops[n++] = th_fail(t->id, t->lease_id, "failed hard");
                break;
            }
        }
        if (r % 5 == 0) {
            memset(&ops[n], 0, sizeof(ops[n]));
            ops[n].type = CMD_QUEUE_SET;
            ops[n].u.queue_set.queue = cq_bytes_str(q[1]);
            ops[n].u.queue_set.fields = QSET_MAX_ATTEMPTS | QSET_LEASE_MS;
            ops[n].u.queue_set.settings.max_attempts = 3;
            ops[n].u.queue_set.settings.lease_ms = 5000;
            n++;
        }
        *now += 17;
        if (n > 0)
            th_apply(s, index, *now, ops, n, &res);
        *now += 3;
    }
    fsm_result_fini(&res);
}

/* Serializes a snapshot of s with the default allocator. */
static void snapshot_of(store *s, void **buf, size_t *len, uint64_t *index)
{
    store_snap *snap = NULL;

    ck_assert_int_eq(store_snapshot_begin(s, &snap), 0);
    ck_assert_ptr_nonnull(snap);
    if (index != NULL)
        *index = store_snapshot_index(snap);
    *buf = NULL;
    *len = 0;
    ck_assert_int_eq(store_snapshot_serialize(snap, NULL, buf, len), 0);
    ck_assert_ptr_nonnull(*buf);
    ck_assert_uint_gt(*len, 0);
    store_snapshot_end(snap);
}

/* ---- raw API ---- */

START_TEST(test_put_get_del)
{
    char *dir = th_tmpdir();
    store *s = th_store_open(dir, true);
    store_txn *t = NULL;
    cq_bytes v;
    char out[64];
    static const uint8_t bin_key[] = {0, 1, 0, 0xff};

    /* Every database accepts point operations. */
    ck_assert_int_eq(store_txn_begin(s, true, &t), 0);
    for (int db = 0; db < STORE_DB_COUNT; db++) {
        char val[32];
        snprintf(val, sizeof(val), "value-%d", db);
        ck_assert_int_eq(store_put(t, (store_db)db, cq_bytes_str("zz-test"),
                                   cq_bytes_str(val)),
                         0);
    }
    ck_assert_int_eq(store_put(t, STORE_DB_TASKS,
                               cq_bytes_of(bin_key, sizeof(bin_key)),
                               cq_bytes_of("", 0)),
                     0);
    /* Visible inside the write transaction. */
    ck_assert_int_eq(store_get(t, STORE_DB_QUEUES, cq_bytes_str("zz-test"), &v),
                     0);
    ck_assert(cq_bytes_eq(v, cq_bytes_str("value-6")));
    ck_assert_int_eq(store_txn_commit(t), 0);

    for (int db = 0; db < STORE_DB_COUNT; db++) {
        char want[32];
        snprintf(want, sizeof(want), "value-%d", db);
        ck_assert_int_eq(
            raw_get(s, (store_db)db, cq_bytes_str("zz-test"), out, sizeof(out)),
            0);
        ck_assert_str_eq(out, want);
    }
    ck_assert_int_eq(raw_get(s, STORE_DB_TASKS,
                             cq_bytes_of(bin_key, sizeof(bin_key)), out,
                             sizeof(out)),
                     0);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(raw_get(s, STORE_DB_TASKS,
                             cq_bytes_of(bin_key, sizeof(bin_key) - 1), NULL,
                             0),
                     CLAWQ_ENOT_FOUND);

    /* Overwrite, delete, delete again. */
    raw_put(s, STORE_DB_TASKS, "zz-test", "second");
    ck_assert_int_eq(
        raw_get(s, STORE_DB_TASKS, cq_bytes_str("zz-test"), out, sizeof(out)),
        0);
    ck_assert_str_eq(out, "second");
    ck_assert_int_eq(store_txn_begin(s, true, &t), 0);
    ck_assert_int_eq(store_del(t, STORE_DB_TASKS, cq_bytes_str("zz-test")), 0);
    ck_assert_int_eq(store_get(t, STORE_DB_TASKS, cq_bytes_str("zz-test"), &v),
                     CLAWQ_ENOT_FOUND);
    ck_assert_int_eq(store_del(t, STORE_DB_TASKS, cq_bytes_str("zz-test")),
                     CLAWQ_ENOT_FOUND);
    ck_assert_int_eq(store_txn_commit(t), 0);
    ck_assert_int_eq(
        raw_get(s, STORE_DB_TASKS, cq_bytes_str("zz-test"), NULL, 0),
        CLAWQ_ENOT_FOUND);
    /* The same key in another database is untouched. */
    ck_assert_int_eq(
        raw_get(s, STORE_DB_READY, cq_bytes_str("zz-test"), out, sizeof(out)),
        0);
    ck_assert_str_eq(out, "value-1");

    /* An aborted write transaction leaves nothing behind. */
    ck_assert_int_eq(store_txn_begin(s, true, &t), 0);
    ck_assert_int_eq(
        store_put(t, STORE_DB_DEAD, cq_bytes_str("aborted"), cq_bytes_str("x")),
        0);
    ck_assert_int_eq(store_del(t, STORE_DB_READY, cq_bytes_str("zz-test")), 0);
    store_txn_abort(t);
    ck_assert_int_eq(
        raw_get(s, STORE_DB_DEAD, cq_bytes_str("aborted"), NULL, 0),
        CLAWQ_ENOT_FOUND);
    ck_assert_int_eq(
        raw_get(s, STORE_DB_READY, cq_bytes_str("zz-test"), NULL, 0), 0);

    /* Data survives close and reopen. */
    store_close(s);
    s = th_store_open(dir, true);
    ck_assert_int_eq(raw_get(s, STORE_DB_IDEM_EXP, cq_bytes_str("zz-test"), out,
                             sizeof(out)),
                     0);
    ck_assert_str_eq(out, "value-9");
    store_close(s);
    th_rmdir(dir);
}
END_TEST

START_TEST(test_null_noops)
{
    store_close(NULL);
    store_txn_abort(NULL);
    store_snapshot_end(NULL);
}
END_TEST

START_TEST(test_cursor)
{
    char *dir = th_tmpdir();
    store *s = th_store_open(dir, true);
    store_txn *t = NULL;
    store_cursor *c = NULL;
    cq_bytes k, v;
    uint8_t key[8];
    uint64_t n;

    ck_assert_uint_eq(count_of(s, STORE_DB_LEASES), 0);

    /* Keys 0, 10, 20, ... 990 big-endian, inserted out of order; values
     * carry the number. */
    ck_assert_int_eq(store_txn_begin(s, true, &t), 0);
    for (uint64_t i = 0; i < 100; i++) {
        uint64_t x = ((i * 37) % 100) * 10;
        uint8_t val[8];
        cq_put_be64(key, x);
        cq_put_be64(val, x + 1);
        ck_assert_int_eq(store_put(t, STORE_DB_LEASES, cq_bytes_of(key, 8),
                                   cq_bytes_of(val, 8)),
                         0);
    }
    ck_assert_int_eq(store_db_count(t, STORE_DB_LEASES, &n), 0);
    ck_assert_uint_eq(n, 100);
    ck_assert_int_eq(store_txn_commit(t), 0);
    ck_assert_uint_eq(count_of(s, STORE_DB_LEASES), 100);
    ck_assert_uint_eq(count_of(s, STORE_DB_DELAYED), 0);

    /* Full scan in order. */
    ck_assert_int_eq(store_txn_begin(s, false, &t), 0);
    ck_assert_int_eq(store_cursor_open(t, STORE_DB_LEASES, &c), 0);
    ck_assert_int_eq(store_cursor_seek(c, cq_bytes_of(NULL, 0), &k, &v), 0);
    for (uint64_t i = 0;; i++) {
        ck_assert_uint_eq(k.len, 8);
        ck_assert_uint_eq(v.len, 8);
        ck_assert_uint_eq(cq_get_be64(k.ptr), i * 10);
        ck_assert_uint_eq(cq_get_be64(v.ptr), i * 10 + 1);
        if (i == 99) {
            ck_assert_int_eq(store_cursor_next(c, &k, &v), CLAWQ_ENOT_FOUND);
            break;
        }
        ck_assert_int_eq(store_cursor_next(c, &k, &v), 0);
    }
    /* Seek to an exact key, between keys, past the end. */
    cq_put_be64(key, 500);
    ck_assert_int_eq(store_cursor_seek(c, cq_bytes_of(key, 8), &k, &v), 0);
    ck_assert_uint_eq(cq_get_be64(k.ptr), 500);
    cq_put_be64(key, 501);
    ck_assert_int_eq(store_cursor_seek(c, cq_bytes_of(key, 8), &k, &v), 0);
    ck_assert_uint_eq(cq_get_be64(k.ptr), 510);
    ck_assert_int_eq(store_cursor_next(c, &k, &v), 0);
    ck_assert_uint_eq(cq_get_be64(k.ptr), 520);
    /* A shorter key is a prefix: seeks to the first key after it. */
    ck_assert_int_eq(store_cursor_seek(c, cq_bytes_of("\x00\x00", 2), &k, &v),
                     0);
    ck_assert_uint_eq(cq_get_be64(k.ptr), 0);
    cq_put_be64(key, 991);
    ck_assert_int_eq(store_cursor_seek(c, cq_bytes_of(key, 8), &k, &v),
                     CLAWQ_ENOT_FOUND);
    store_cursor_close(c);
    store_txn_abort(t);

    /* Delete every key divisible by 20 while scanning; next after a delete
     * returns the entry after the deleted one. */
    ck_assert_int_eq(store_txn_begin(s, true, &t), 0);
    ck_assert_int_eq(store_cursor_open(t, STORE_DB_LEASES, &c), 0);
    ck_assert_int_eq(store_cursor_seek(c, cq_bytes_of(NULL, 0), &k, &v), 0);
    {
        uint64_t expect = 0;
        int rc = 0;
        while (rc == 0) {
            uint64_t x = cq_get_be64(k.ptr);
            ck_assert_uint_eq(x, expect);
            if (x % 20 == 0)
                ck_assert_int_eq(store_cursor_del(c), 0);
            expect += 10;
            rc = store_cursor_next(c, &k, &v);
        }
        ck_assert_int_eq(rc, CLAWQ_ENOT_FOUND);
        ck_assert_uint_eq(expect, 1000);
    }
    /* Deleting the last entries, including the final one. */
    cq_put_be64(key, 970);
    ck_assert_int_eq(store_cursor_seek(c, cq_bytes_of(key, 8), &k, &v), 0);
    ck_assert_uint_eq(cq_get_be64(k.ptr), 970);
    ck_assert_int_eq(store_cursor_del(c), 0);
    ck_assert_int_eq(store_cursor_next(c, &k, &v), 0);
    ck_assert_uint_eq(cq_get_be64(k.ptr), 990);
    ck_assert_int_eq(store_cursor_del(c), 0);
    ck_assert_int_eq(store_cursor_next(c, &k, &v), CLAWQ_ENOT_FOUND);
    store_cursor_close(c);
    ck_assert_int_eq(store_db_count(t, STORE_DB_LEASES, &n), 0);
    ck_assert_uint_eq(n, 48);
    ck_assert_int_eq(store_txn_commit(t), 0);

    ck_assert_uint_eq(count_of(s, STORE_DB_LEASES), 48);
    ck_assert_int_eq(store_txn_begin(s, false, &t), 0);
    ck_assert_int_eq(store_cursor_open(t, STORE_DB_LEASES, &c), 0);
    ck_assert_int_eq(store_cursor_seek(c, cq_bytes_of(NULL, 0), &k, &v), 0);
    ck_assert_uint_eq(cq_get_be64(k.ptr), 10);
    store_cursor_close(c);
    /* An empty database: seek finds nothing. */
    ck_assert_int_eq(store_cursor_open(t, STORE_DB_DEAD, &c), 0);
    ck_assert_int_eq(store_cursor_seek(c, cq_bytes_of(NULL, 0), &k, &v),
                     CLAWQ_ENOT_FOUND);
    store_cursor_close(c);
    store_txn_abort(t);

    store_close(s);
    th_rmdir(dir);
}
END_TEST

/* Closed read transactions and read-only cursors are kept and renewed by
 * the next read: each renewal must see the latest commit, reads may
 * overlap (one spare each is kept, the rest freed), and a cursor may be
 * closed after its transaction. */
START_TEST(test_read_handles_reused)
{
    char *dir = th_tmpdir();
    store *s = th_store_open(dir, true);
    store_txn *t = NULL, *r1 = NULL, *r2 = NULL;
    store_cursor *c1 = NULL, *c2 = NULL;
    cq_bytes k, v;
    uint8_t key[8];

    for (uint64_t i = 1; i <= 50; i++) {
        ck_assert_int_eq(store_txn_begin(s, true, &t), 0);
        cq_put_be64(key, i);
        ck_assert_int_eq(store_put(t, STORE_DB_LEASES, cq_bytes_of(key, 8),
                                   cq_bytes_of(key, 8)),
                         0);
        ck_assert_int_eq(store_txn_commit(t), 0);

        /* Two reads at once, each with a cursor on the same database. */
        ck_assert_int_eq(store_txn_begin(s, false, &r1), 0);
        ck_assert_int_eq(store_txn_begin(s, false, &r2), 0);
        ck_assert_ptr_ne(r1, r2);
        ck_assert_int_eq(store_cursor_open(r1, STORE_DB_LEASES, &c1), 0);
        ck_assert_int_eq(store_cursor_open(r2, STORE_DB_LEASES, &c2), 0);
        ck_assert_ptr_ne(c1, c2);
        /* The newest key is the last one: seek past the previous. */
        ck_assert_int_eq(store_cursor_seek(c1, cq_bytes_of(key, 8), &k, &v), 0);
        ck_assert_uint_eq(cq_get_be64(k.ptr), i);
        ck_assert_int_eq(store_cursor_seek(c2, cq_bytes_of(NULL, 0), &k, &v),
                         0);
        ck_assert_uint_eq(cq_get_be64(k.ptr), 1);
        ck_assert_int_eq(
            store_get(r2, STORE_DB_LEASES, cq_bytes_of(key, 8), &v), 0);
        ck_assert_int_eq(store_cursor_next(c1, &k, &v), CLAWQ_ENOT_FOUND);
        /* One cursor closed before its transaction ends, one after. */
        store_cursor_close(c1);
        if (i % 2 == 0) {
            store_txn_abort(r1);
            ck_assert_int_eq(store_txn_commit(r2), 0);
        } else {
            ck_assert_int_eq(store_txn_commit(r2), 0);
            store_txn_abort(r1);
        }
        store_cursor_close(c2);
    }
    /* A write transaction's cursors are never kept: they end with it. */
    ck_assert_int_eq(store_txn_begin(s, true, &t), 0);
    ck_assert_int_eq(store_cursor_open(t, STORE_DB_LEASES, &c1), 0);
    ck_assert_int_eq(store_cursor_seek(c1, cq_bytes_of(NULL, 0), &k, &v), 0);
    ck_assert_int_eq(store_cursor_del(c1), 0);
    store_cursor_close(c1);
    ck_assert_int_eq(store_txn_commit(t), 0);
    ck_assert_uint_eq(count_of(s, STORE_DB_LEASES), 49);
    store_close(s);
    th_rmdir(dir);
}
END_TEST

START_TEST(test_schema_and_reopen)
{
    char *dir = th_tmpdir();
    char missing[4096];
    store *s = th_store_open(dir, false);
    store_txn *t = NULL;
    store_opts o;
    cq_bytes v;
    uint8_t bad[8];
    size_t vlen;
    uint64_t version = 0;

    /* A new store: schema written, applied index 0. */
    ck_assert_uint_eq(applied_of(s), 0);
    ck_assert_int_eq(store_txn_begin(s, false, &t), 0);
    ck_assert_int_eq(store_get(t, STORE_DB_META, cq_bytes_str("schema"), &v),
                     0);
    vlen = v.len;
    ck_assert_uint_ge(vlen, 1);
    ck_assert_uint_le(vlen, 8);
    for (size_t i = 0; i < vlen; i++)
        version = version << 8 | v.ptr[i];
    ck_assert_uint_eq(version, STORE_SCHEMA_VERSION);
    store_txn_abort(t);

    ck_assert_int_eq(store_txn_begin(s, true, &t), 0);
    ck_assert_int_eq(store_applied_set(t, 42), 0);
    ck_assert_int_eq(
        store_put(t, STORE_DB_TASKS, cq_bytes_str("k"), cq_bytes_str("v")), 0);
    ck_assert_int_eq(store_txn_commit(t), 0);
    ck_assert_uint_eq(applied_of(s), 42);
    store_close(s);

    /* Reopen: same schema, data and index. */
    s = th_store_open(dir, false);
    ck_assert_uint_eq(applied_of(s), 42);
    ck_assert_int_eq(raw_get(s, STORE_DB_TASKS, cq_bytes_str("k"), NULL, 0), 0);
    ck_assert_int_eq(raw_get(s, STORE_DB_META, cq_bytes_str("schema"), NULL, 0),
                     0);

    /* An unknown schema version refuses to open. */
    memset(bad, 0, sizeof(bad));
    bad[vlen - 1] = 99;
    ck_assert_int_eq(store_txn_begin(s, true, &t), 0);
    ck_assert_int_eq(store_put(t, STORE_DB_META, cq_bytes_str("schema"),
                               cq_bytes_of(bad, vlen)),
                     0);
    ck_assert_int_eq(store_txn_commit(t), 0);
    store_close(s);
    memset(&o, 0, sizeof(o));
    s = NULL;
    ck_assert_int_eq(store_open(dir, &o, &s), CLAWQ_ECORRUPT);
    ck_assert_ptr_null(s);

    /* A directory that does not exist. */
    snprintf(missing, sizeof(missing), "%s/does/not/exist", dir);
    ck_assert_int_eq(store_open(missing, &o, &s), CLAWQ_EIO);
    ck_assert_ptr_null(s);
    th_rmdir(dir);
}
END_TEST

START_TEST(test_map_grow_direct)
{
    char *dir = th_tmpdir();
    store *s = open_with(dir, 1 * MiB, 4 * MiB);

    ck_assert_uint_eq(store_map_size(s), 1 * MiB);
    ck_assert_int_eq(store_map_grow(s), 0);
    ck_assert_uint_eq(store_map_size(s), 2 * MiB);
    ck_assert_int_eq(store_map_grow(s), 0);
    ck_assert_uint_eq(store_map_size(s), 4 * MiB);
    ck_assert_int_eq(store_map_grow(s), CLAWQ_ESTORAGE_FULL);
    ck_assert_uint_eq(store_map_size(s), 4 * MiB);
    raw_put(s, STORE_DB_TASKS, "still", "works");
    store_close(s);

    /* Growth caps at map_max even when doubling would pass it. */
    s = open_with(dir, 4 * MiB, 6 * MiB);
    ck_assert_int_eq(store_map_grow(s), 0);
    ck_assert_uint_eq(store_map_size(s), 6 * MiB);
    ck_assert_int_eq(store_map_grow(s), CLAWQ_ESTORAGE_FULL);
    ck_assert_int_eq(raw_get(s, STORE_DB_TASKS, cq_bytes_str("still"), NULL, 0),
                     0);
    store_close(s);
    th_rmdir(dir);
}
END_TEST

/* ---- snapshots ---- */

START_TEST(test_snapshot_roundtrip)
{
    char *src_dir = th_tmpdir(), *dst_dir = th_tmpdir();
    store *src = th_store_open(src_dir, true);
    store *dst = th_store_open(dst_dir, true);
    uint64_t index = 0, now = 1700000000000ULL, snap_index;
    void *buf;
    size_t len;
    bool replaced = false;
    fsm_result res;

    populate(src, &index, &now, 40, "snap");
    ck_assert_uint_gt(count_of(src, STORE_DB_TASKS), 0);
    ck_assert_uint_gt(count_of(src, STORE_DB_DEAD), 0);
    ck_assert_uint_gt(count_of(src, STORE_DB_IDEM), 0);
    snapshot_of(src, &buf, &len, &snap_index);
    ck_assert_uint_eq(snap_index, index);
    ck_assert_uint_eq(applied_of(src), index);

    ck_assert_int_eq(store_restore(dst, buf, len, &replaced), 0);
    ck_assert(replaced);
    ck_assert_uint_eq(applied_of(dst), index);
    ck_assert_uint_eq(digest_of(dst), digest_of(src));
    assert_stores_equal(src, dst);

    /* The restored store carries on exactly like the source (ids, lease
     * counters and sequence numbers came along). */
    fsm_result_init(&res);
    {
        uint64_t i_src = index, i_dst = index;
        cmd_op ops[3];
        ops[0] = th_put("snap.a", "after", 0);
        ops[1] = th_lease("snap.a", 3, 1000);
        ops[2] = th_tick();
        th_apply(src, &i_src, now, ops, 3, &res);
        th_apply(dst, &i_dst, now, ops, 3, &res);
    }
    ck_assert_uint_eq(digest_of(dst), digest_of(src));
    assert_stores_equal(src, dst);
    fsm_result_fini(&res);

    /* Survives a reopen. */
    store_close(dst);
    dst = th_store_open(dst_dir, true);
    ck_assert_uint_eq(digest_of(dst), digest_of(src));

    free(buf);
    store_close(src);
    store_close(dst);
    th_rmdir(src_dir);
    th_rmdir(dst_dir);
}
END_TEST

static size_t g_realloc_calls, g_free_calls;

static void *counting_realloc(void *p, size_t n)
{
    g_realloc_calls++;
    return realloc(p, n);
}

static void counting_free(void *p)
{
    g_free_calls++;
    free(p);
}

START_TEST(test_snapshot_custom_allocator)
{
    char *src_dir = th_tmpdir(), *dst_dir = th_tmpdir();
    store *src = th_store_open(src_dir, true);
    store *dst = th_store_open(dst_dir, true);
    uint64_t index = 0, now = 1000;
    store_snap *snap = NULL;
    void *buf = NULL;
    size_t len = 0;
    bool replaced = false;
    const store_alloc alloc = {counting_realloc, counting_free};

    populate(src, &index, &now, 10, "alloc");
    g_realloc_calls = g_free_calls = 0;
    ck_assert_int_eq(store_snapshot_begin(src, &snap), 0);
    ck_assert_int_eq(store_snapshot_serialize(snap, &alloc, &buf, &len), 0);
    store_snapshot_end(snap);
    ck_assert_uint_gt(g_realloc_calls, 0);
    ck_assert_int_eq(store_restore(dst, buf, len, &replaced), 0);
    ck_assert(replaced);
    ck_assert_uint_eq(digest_of(dst), digest_of(src));
    counting_free(buf);

    /* An empty store snapshots and restores too (index 0 onto a fresh
     * store is not newer: kept). */
    store_close(dst);
    th_rmdir(dst_dir);
    dst_dir = th_tmpdir();
    dst = th_store_open(dst_dir, true);
    {
        char *e_dir = th_tmpdir();
        store *e = th_store_open(e_dir, true);
        uint64_t si = 99, d_before = digest_of(dst);
        snapshot_of(e, &buf, &len, &si);
        ck_assert_uint_eq(si, 0);
        replaced = true;
        ck_assert_int_eq(store_restore(dst, buf, len, &replaced), 0);
        ck_assert(!replaced);
        ck_assert_uint_eq(digest_of(dst), d_before);
        free(buf);
        store_close(e);
        th_rmdir(e_dir);
    }
    store_close(src);
    store_close(dst);
    th_rmdir(src_dir);
    th_rmdir(dst_dir);
}
END_TEST

START_TEST(test_restore_replaces_older)
{
    char *src_dir = th_tmpdir(), *dst_dir = th_tmpdir();
    store *src = th_store_open(src_dir, true);
    store *dst = th_store_open(dst_dir, true);
    uint64_t si = 0, di = 0, now = 5000;
    void *buf;
    size_t len;
    bool replaced = false;
    uint64_t d_src;

    populate(src, &si, &now, 30, "src");
    /* The target: other queues, fewer commands, plus keys only it has in
     * several databases. */
    now = 5000;
    populate(dst, &di, &now, 5, "dst");
    ck_assert_uint_lt(di, si);
    raw_put(dst, STORE_DB_TASKS, "old-only", "1");
    raw_put(dst, STORE_DB_IDEM_EXP, "old-only", "2");
    raw_put(dst, STORE_DB_META, "old-only", "3");
    raw_put(dst, STORE_DB_DEADLINES, "old-only", "4");
    ck_assert_uint_ne(digest_of(dst), digest_of(src));

    snapshot_of(src, &buf, &len, NULL);
    d_src = digest_of(src);
    ck_assert_int_eq(store_restore(dst, buf, len, &replaced), 0);
    ck_assert(replaced);
    ck_assert_uint_eq(digest_of(dst), d_src);
    ck_assert_uint_eq(applied_of(dst), si);
    ck_assert_int_eq(
        raw_get(dst, STORE_DB_TASKS, cq_bytes_str("old-only"), NULL, 0),
        CLAWQ_ENOT_FOUND);
    ck_assert_int_eq(
        raw_get(dst, STORE_DB_IDEM_EXP, cq_bytes_str("old-only"), NULL, 0),
        CLAWQ_ENOT_FOUND);
    ck_assert_int_eq(
        raw_get(dst, STORE_DB_META, cq_bytes_str("old-only"), NULL, 0),
        CLAWQ_ENOT_FOUND);
    ck_assert_int_eq(
        raw_get(dst, STORE_DB_DEADLINES, cq_bytes_str("old-only"), NULL, 0),
        CLAWQ_ENOT_FOUND);
    {
        fsm_queue_stats st;
        ck_assert_int_eq(fsm_queue_stats_get(dst, cq_bytes_str("dst.a"), &st),
                         CLAWQ_ENOT_FOUND);
        ck_assert_int_eq(fsm_queue_stats_get(dst, cq_bytes_str("src.a"), &st),
                         0);
    }
    assert_stores_equal(src, dst);

    /* The same snapshot again is not newer now: kept. */
    replaced = true;
    ck_assert_int_eq(store_restore(dst, buf, len, &replaced), 0);
    ck_assert(!replaced);
    ck_assert_uint_eq(digest_of(dst), d_src);

    free(buf);
    store_close(src);
    store_close(dst);
    th_rmdir(src_dir);
    th_rmdir(dst_dir);
}
END_TEST

START_TEST(test_restore_keeps_newer)
{
    char *src_dir = th_tmpdir(), *dst_dir = th_tmpdir();
    store *src = th_store_open(src_dir, true);
    store *dst = th_store_open(dst_dir, true);
    uint64_t si = 0, di = 0, now = 5000, d_dst;
    void *buf;
    size_t len;
    bool replaced = true;

    populate(src, &si, &now, 10, "src");
    now = 5000;
    populate(dst, &di, &now, 10, "dst");
    /* Bring both to the same applied index. */
    {
        fsm_result res;
        cmd_op tick = th_tick();
        fsm_result_init(&res);
        while (di < si)
            th_apply(dst, &di, now, &tick, 1, &res);
        while (si < di)
            th_apply(src, &si, now, &tick, 1, &res);
        fsm_result_fini(&res);
    }
    ck_assert_uint_eq(si, di);
    snapshot_of(src, &buf, &len, NULL);

    /* Equal index: kept. */
    d_dst = digest_of(dst);
    ck_assert_int_eq(store_restore(dst, buf, len, &replaced), 0);
    ck_assert(!replaced);
    ck_assert_uint_eq(digest_of(dst), d_dst);
    ck_assert_uint_eq(applied_of(dst), di);

    /* Higher index: kept. */
    populate(dst, &di, &now, 3, "dst");
    ck_assert_uint_gt(di, si);
    d_dst = digest_of(dst);
    replaced = true;
    ck_assert_int_eq(store_restore(dst, buf, len, &replaced), 0);
    ck_assert(!replaced);
    ck_assert_uint_eq(digest_of(dst), d_dst);
    ck_assert_uint_eq(applied_of(dst), di);

    free(buf);
    store_close(src);
    store_close(dst);
    th_rmdir(src_dir);
    th_rmdir(dst_dir);
}
END_TEST

START_TEST(test_restore_corrupt)
{
    char *src_dir = th_tmpdir(), *dst_dir = th_tmpdir();
    store *src = th_store_open(src_dir, true);
    store *dst = th_store_open(dst_dir, true);
    uint64_t si = 0, di = 0, now = 5000, d_dst, seed = 0x736e6170ULL;
    void *buf;
    size_t len, step;
    bool replaced;
    uint8_t *copy;
    size_t n_flip_corrupt = 0;

    populate(src, &si, &now, 8, "src");
    now = 5000;
    populate(dst, &di, &now, 2, "dst");
    ck_assert_uint_lt(di, si);
    snapshot_of(src, &buf, &len, NULL);
    d_dst = digest_of(dst);

    /* Every truncation (sampled when the snapshot is large). */
    step = len / 2000 + 1;
    for (size_t n = 0; n < len; n += (n < 64 || len - n < 64) ? 1 : step) {
        int rc;
        copy = malloc(n > 0 ? n : 1);
        ck_assert_ptr_nonnull(copy);
        memcpy(copy, buf, n);
        replaced = true;
        rc = store_restore(dst, copy, n, &replaced);
        ck_assert_msg(rc == CLAWQ_ECORRUPT, "prefix %zu/%zu: rc %d", n, len,
                      rc);
        free(copy);
    }
    ck_assert_uint_eq(digest_of(dst), d_dst);
    ck_assert_uint_eq(applied_of(dst), di);

    /* Random bytes of the same length. */
    copy = malloc(len);
    ck_assert_ptr_nonnull(copy);
    for (size_t i = 0; i < len; i++)
        copy[i] = (uint8_t)cq_mix64(seed++);
    ck_assert_int_eq(store_restore(dst, copy, len, &replaced), CLAWQ_ECORRUPT);
    ck_assert_uint_eq(digest_of(dst), d_dst);

    /* Trailing garbage after a valid snapshot. */
    free(copy);
    copy = malloc(len + 3);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, buf, len);
    memcpy(copy + len, "xyz", 3);
    ck_assert_int_eq(store_restore(dst, copy, len + 3, &replaced),
                     CLAWQ_ECORRUPT);
    ck_assert_uint_eq(digest_of(dst), d_dst);
    free(copy);

    /* Bit flips: a flip the format cannot detect (inside a value) may be
     * accepted; a rejected one leaves the store unchanged. The store is
     * rebuilt after an accepted one. */
    copy = malloc(len);
    ck_assert_ptr_nonnull(copy);
    for (int i = 0; i < 200; i++) {
        size_t bit = cq_mix64(seed++) % (len * 8);
        int rc;
        memcpy(copy, buf, len);
        copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        replaced = false;
        rc = store_restore(dst, copy, len, &replaced);
        ck_assert_msg(rc == 0 || rc == CLAWQ_ECORRUPT, "flip %zu: rc %d", bit,
                      rc);
        if (rc == CLAWQ_ECORRUPT || !replaced) {
            n_flip_corrupt += rc == CLAWQ_ECORRUPT;
            ck_assert_uint_eq(digest_of(dst), d_dst);
        } else {
            store_close(dst);
            th_rmdir(dst_dir);
            dst_dir = th_tmpdir();
            dst = th_store_open(dst_dir, true);
            di = 0;
            now = 5000;
            populate(dst, &di, &now, 2, "dst");
            ck_assert_uint_eq(digest_of(dst), d_dst);
        }
    }
    ck_assert_uint_gt(n_flip_corrupt, 0);
    free(copy);

    /* The genuine snapshot still restores. */
    ck_assert_int_eq(store_restore(dst, buf, len, &replaced), 0);
    ck_assert(replaced);
    ck_assert_uint_eq(digest_of(dst), digest_of(src));

    free(buf);
    store_close(src);
    store_close(dst);
    th_rmdir(src_dir);
    th_rmdir(dst_dir);
}
END_TEST

START_TEST(test_snapshot_pinned)
{
    char *src_dir = th_tmpdir(), *dst_dir = th_tmpdir();
    store *src = th_store_open(src_dir, true);
    store *dst = th_store_open(dst_dir, true);
    uint64_t index = 0, now = 1000, pinned_digest, pinned_index;
    store_snap *snap = NULL;
    void *buf = NULL;
    size_t len = 0;
    bool replaced = false;

    populate(src, &index, &now, 20, "pin");
    pinned_digest = digest_of(src);
    pinned_index = index;
    ck_assert_int_eq(store_snapshot_begin(src, &snap), 0);
    ck_assert_uint_eq(store_snapshot_index(snap), pinned_index);

    /* Writes after begin: through the state machine and raw. */
    populate(src, &index, &now, 20, "pin");
    populate(src, &index, &now, 5, "later");
    raw_put(src, STORE_DB_TASKS, "raw-after", "x");
    ck_assert_uint_gt(index, pinned_index);
    ck_assert_uint_ne(digest_of(src), pinned_digest);
    ck_assert_uint_eq(store_snapshot_index(snap), pinned_index);

    ck_assert_int_eq(store_snapshot_serialize(snap, NULL, &buf, &len), 0);
    store_snapshot_end(snap);
    ck_assert_int_eq(store_restore(dst, buf, len, &replaced), 0);
    ck_assert(replaced);
    ck_assert_uint_eq(applied_of(dst), pinned_index);
    ck_assert_uint_eq(digest_of(dst), pinned_digest);
    ck_assert_int_eq(
        raw_get(dst, STORE_DB_TASKS, cq_bytes_str("raw-after"), NULL, 0),
        CLAWQ_ENOT_FOUND);
    free(buf);

    /* The source kept its later state. */
    ck_assert_uint_eq(applied_of(src), index);
    store_close(src);
    store_close(dst);
    th_rmdir(src_dir);
    th_rmdir(dst_dir);
}
END_TEST

typedef struct ser_job {
    store_snap *snap;
    void *buf;
    size_t len;
    int rc;
} ser_job;

static void *serialize_thread(void *arg)
{
    ser_job *j = arg;
    j->rc = store_snapshot_serialize(j->snap, NULL, &j->buf, &j->len);
    return NULL;
}

START_TEST(test_snapshot_other_thread)
{
    char *src_dir = th_tmpdir(), *dst_dir = th_tmpdir();
    store *src = th_store_open(src_dir, true);
    store *dst = th_store_open(dst_dir, true);
    uint64_t index = 0, now = 1000, pinned_digest, pinned_index;
    ser_job job;
    pthread_t th;
    bool replaced = false;

    populate(src, &index, &now, 60, "thr");
    pinned_digest = digest_of(src);
    pinned_index = index;
    memset(&job, 0, sizeof(job));
    ck_assert_int_eq(store_snapshot_begin(src, &job.snap), 0);
    job.rc = -1;
    ck_assert_int_eq(pthread_create(&th, NULL, serialize_thread, &job), 0);
    /* The loop keeps applying while the worker serialises. */
    populate(src, &index, &now, 30, "thr");
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(job.rc, 0);
    store_snapshot_end(job.snap);

    ck_assert_int_eq(store_restore(dst, job.buf, job.len, &replaced), 0);
    ck_assert(replaced);
    ck_assert_uint_eq(applied_of(dst), pinned_index);
    ck_assert_uint_eq(digest_of(dst), pinned_digest);
    free(job.buf);
    store_close(src);
    store_close(dst);
    th_rmdir(src_dir);
    th_rmdir(dst_dir);
}
END_TEST

/* ---- map growth and a full map ---- */

static void fill_payload(char *p, size_t len, uint64_t n)
{
    int k = snprintf(p, len, "task-%08llu-", (unsigned long long)n);
    for (size_t i = (size_t)k; i < len; i++)
        p[i] = (char)('a' + (n + i) % 26);
}

START_TEST(test_map_growth)
{
    enum { PER_CMD = 20, TOTAL = 3000, PLEN = 1024 };
    char *dir = th_tmpdir();
    store *s = open_with(dir, 1 * MiB, 64 * MiB);
    uint64_t index = 0, now = 1000;
    uint64_t *ids = calloc(TOTAL, sizeof(*ids));
    char(*payloads)[PLEN] = malloc((size_t)PER_CMD * PLEN);
    char check[PLEN];
    fsm_result res;
    size_t initial = store_map_size(s);

    ck_assert_ptr_nonnull(ids);
    ck_assert_ptr_nonnull(payloads);
    ck_assert_uint_eq(initial, 1 * MiB);
    fsm_result_init(&res);
    for (int c = 0; c < TOTAL / PER_CMD; c++) {
        cmd_op ops[PER_CMD];
        for (int i = 0; i < PER_CMD; i++) {
            fill_payload(payloads[i], PLEN, (uint64_t)(c * PER_CMD + i));
            ops[i] = th_put("grow", "", 128);
            ops[i].u.put.payload = cq_bytes_of(payloads[i], PLEN);
        }
        th_apply(s, &index, now++, ops, PER_CMD, &res);
        for (int i = 0; i < PER_CMD; i++) {
            ck_assert_int_eq(res.ops[i].status, 0);
            ids[c * PER_CMD + i] = res.ops[i].id;
        }
    }
    ck_assert_uint_gt(store_map_size(s), initial);
    ck_assert_uint_le(store_map_size(s), 64 * MiB);
    ck_assert_uint_eq(applied_of(s), TOTAL / PER_CMD);
    ck_assert_uint_eq(count_of(s, STORE_DB_TASKS), TOTAL);
    {
        fsm_queue_stats st;
        ck_assert_int_eq(fsm_queue_stats_get(s, cq_bytes_str("grow"), &st), 0);
        ck_assert_uint_eq(st.rec.counters.ready, TOTAL);
        ck_assert_uint_eq(st.rec.counters.put_total, TOTAL);
    }
    for (int n = 0; n < TOTAL; n++) {
        ck_assert_int_eq(fsm_task_get(s, ids[n], &res), 0);
        ck_assert_uint_eq(res.n_tasks, 1);
        fill_payload(check, PLEN, (uint64_t)n);
        ck_assert_uint_eq(res.tasks[0].payload.len, PLEN);
        ck_assert_mem_eq(res.tasks[0].payload.ptr, check, PLEN);
    }
    /* Reopen with the small initial size: the data is all there. */
    store_close(s);
    s = open_with(dir, 1 * MiB, 64 * MiB);
    ck_assert_uint_eq(count_of(s, STORE_DB_TASKS), TOTAL);
    ck_assert_int_eq(fsm_task_get(s, ids[TOTAL - 1], &res), 0);

    fsm_result_fini(&res);
    free(ids);
    free(payloads);
    store_close(s);
    th_rmdir(dir);
}
END_TEST

/* A pinned snapshot must not change what the state machine decides: a
 * replica that happens to be serialising a snapshot when its map needs to
 * grow has to end up like one that is not (fsm.h: replicas that apply the
 * same commands hold byte-identical stores). */
/* A pinned snapshot holds the map in place: a command that needs the map
 * to grow then applies nothing and answers CLAWQ_EUNAVAILABLE; once the
 * pin is released the same command at the same index applies, and the
 * store ends up identical to one that never had a pin. */
START_TEST(test_snapshot_pinned_map_growth)
{
    enum { PER_CMD = 16, CMDS = 120, PLEN = 1024 };
    char *da = th_tmpdir(), *db = th_tmpdir();
    store *a = open_with(da, 1 * MiB, 64 * MiB);
    store *b = open_with(db, 1 * MiB, 64 * MiB);
    uint64_t ia = 0, ib = 0;
    char(*payloads)[PLEN] = malloc((size_t)PER_CMD * PLEN);
    fsm_result ra, rb;
    store_snap *snap = NULL;
    bool refused = false;
    uint64_t before;

    ck_assert_ptr_nonnull(payloads);
    fsm_result_init(&ra);
    fsm_result_init(&rb);
    ck_assert_int_eq(store_snapshot_begin(a, &snap), 0);
    for (int c = 0; c < CMDS; c++) {
        cmd_op ops[PER_CMD];
        for (int i = 0; i < PER_CMD; i++) {
            fill_payload(payloads[i], PLEN, (uint64_t)(c * PER_CMD + i));
            ops[i] = th_put("pinned", "", 128);
            ops[i].u.put.payload = cq_bytes_of(payloads[i], PLEN);
        }
        void *buf = NULL;
        size_t len = 0;
        int rc_a, rc_b;

        ck_assert_int_eq(
            cmd_encode(1000 + (uint64_t)c, ops, PER_CMD, &buf, &len), 0);
        rc_b = fsm_apply(b, ++ib, buf, len, &rb);
        ck_assert_int_eq(rc_b, 0);
        ++ia;
        before = digest_of(a);
        rc_a = fsm_apply(a, ia, buf, len, &ra);
        if (rc_a == CLAWQ_EUNAVAILABLE) {
            /* Nothing applied; release the pin and apply again. */
            ck_assert_ptr_nonnull(snap);
            ck_assert_uint_eq(digest_of(a), before);
            refused = true;
            store_snapshot_end(snap);
            snap = NULL;
            rc_a = fsm_apply(a, ia, buf, len, &ra);
        }
        ck_assert_int_eq(rc_a, 0);
        free(buf);
        for (int i = 0; i < PER_CMD; i++)
            ck_assert_int_eq(ra.ops[i].status, rb.ops[i].status);
    }
    ck_assert_msg(refused, "the map never needed to grow under the pin");
    ck_assert_ptr_null(snap);
    ck_assert_uint_gt(store_map_size(a), 1 * MiB);
    ck_assert_uint_eq(digest_of(a), digest_of(b));

    fsm_result_fini(&ra);
    fsm_result_fini(&rb);
    free(payloads);
    store_close(a);
    store_close(b);
    th_rmdir(da);
    th_rmdir(db);
}
END_TEST

START_TEST(test_map_full)
{
    enum { PER_CMD = 8, PLEN = 1000, MAX_TASKS = 20000 };
    char *dir = th_tmpdir();
    store *s = open_with(dir, 1 * MiB, 2 * MiB);
    uint64_t index = 0, now = 1000;
    uint64_t *ids = calloc(MAX_TASKS, sizeof(*ids));
    uint64_t *nums = calloc(MAX_TASKS, sizeof(*nums));
    char(*payloads)[PLEN] = malloc((size_t)PER_CMD * PLEN);
    char check[PLEN];
    size_t n_acked = 0, n_full_cmds = 0;
    uint64_t put_no = 0;
    fsm_result res;

    ck_assert_ptr_nonnull(ids);
    ck_assert_ptr_nonnull(nums);
    ck_assert_ptr_nonnull(payloads);
    fsm_result_init(&res);

    /* Put until the map is full, then a few more commands. */
    while (n_full_cmds < 4) {
        cmd_op ops[PER_CMD];
        void *buf = NULL;
        size_t len = 0;
        int n_full = 0;

        ck_assert_uint_lt(n_acked + PER_CMD, MAX_TASKS);
        for (int i = 0; i < PER_CMD; i++) {
            fill_payload(payloads[i], PLEN, put_no + (uint64_t)i);
            ops[i] = th_put("full", "", 128);
            ops[i].u.put.payload = cq_bytes_of(payloads[i], PLEN);
        }
        ck_assert_int_eq(cmd_encode(now, ops, PER_CMD, &buf, &len), 0);
        index++;
        ck_assert_int_eq(fsm_apply(s, index, buf, len, &res), 0);
        free(buf);
        ck_assert_uint_eq(res.index, index);
        ck_assert(!res.skipped);
        ck_assert_uint_eq(res.n_ops, PER_CMD);
        ck_assert_uint_eq(applied_of(s), index);
        for (int i = 0; i < PER_CMD; i++) {
            int st = res.ops[i].status;
            ck_assert_msg(st == 0 || st == CLAWQ_ESTORAGE_FULL,
                          "index %llu op %d: status %d",
                          (unsigned long long)index, i, st);
            if (st == 0) {
                ids[n_acked] = res.ops[i].id;
                nums[n_acked] = put_no + (uint64_t)i;
                n_acked++;
            } else {
                n_full++;
            }
        }
        if (n_full > 0) {
            /* The whole command failed, with a reason. */
            ck_assert_int_eq(n_full, PER_CMD);
            ck_assert_str_ne(res.detail, "");
            n_full_cmds++;
        }
        put_no += PER_CMD;
        now++;
    }
    ck_assert_uint_gt(n_acked, 100);
    ck_assert_uint_eq(store_map_size(s), 2 * MiB);

    /* Every acknowledged task is there with its payload. */
    for (size_t n = 0; n < n_acked; n++) {
        ck_assert_int_eq(fsm_task_get(s, ids[n], &res), 0);
        fill_payload(check, PLEN, nums[n]);
        ck_assert_uint_eq(res.tasks[0].payload.len, PLEN);
        ck_assert_mem_eq(res.tasks[0].payload.ptr, check, PLEN);
    }
    {
        fsm_queue_stats st;
        ck_assert_int_eq(fsm_queue_stats_get(s, cq_bytes_str("full"), &st), 0);
        ck_assert_uint_eq(st.rec.counters.ready, n_acked);
        ck_assert_uint_eq(st.rec.counters.put_total, n_acked);
    }
    ck_assert_uint_eq(count_of(s, STORE_DB_TASKS), n_acked);

    /* Draining still works: lease and ack. */
    {
        cmd_op op = th_lease("full", 4, 60000);
        cmd_op acks[4];
        uint64_t acked[4];
        size_t n;

        ck_assert_int_eq(th_apply(s, &index, now++, &op, 1, &res), 0);
        ck_assert_uint_ge(res.n_tasks, 1);
        n = res.n_tasks;
        for (size_t i = 0; i < n; i++) {
            acks[i] = th_ack(res.tasks[i].id, res.tasks[i].lease_id);
            acked[i] = res.tasks[i].id;
        }
        th_apply(s, &index, now++, acks, n, &res);
        for (size_t i = 0; i < n; i++)
            ck_assert_int_eq(res.ops[i].status, 0);
        for (size_t i = 0; i < n; i++)
            ck_assert_int_eq(fsm_task_get(s, acked[i], &res), CLAWQ_ENOT_FOUND);
        ck_assert_uint_eq(count_of(s, STORE_DB_TASKS), n_acked - n);
        ck_assert_uint_eq(applied_of(s), index);
    }

    /* Nothing lost across a reopen either. */
    store_close(s);
    s = open_with(dir, 1 * MiB, 2 * MiB);
    ck_assert_uint_eq(applied_of(s), index);
    ck_assert_int_eq(fsm_task_get(s, ids[n_acked - 1], &res), 0);

    fsm_result_fini(&res);
    free(ids);
    free(nums);
    free(payloads);
    store_close(s);
    th_rmdir(dir);
}
END_TEST

/* Entries of a directory, or of /proc/self/fd, not counting . and .. */
static int dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* Memory mode: nothing is left in the directory (leftover links of a
 * crashed process are replaced), the map grows, a snapshot restores into
 * a disk store and back, no descriptor leaks, and a reopen starts empty. */
START_TEST(test_memory_mode)
{
    char *dir = th_tmpdir(), *disk_dir = th_tmpdir();
    char path[512];
    int fds = dir_entries("/proc/self/fd");
    store *s, *disk;
    uint64_t index = 0, now = 1700000000000ULL, snap_index;
    void *buf;
    size_t len;
    bool replaced = false;
    fsm_result res;

    snprintf(path, sizeof(path), "%s/memory.mdb", dir);
    ck_assert_int_eq(symlink("/proc/self/fd/999", path), 0);
    snprintf(path, sizeof(path), "%s/memory.mdb-lock", dir);
    ck_assert_int_eq(symlink("/nonexistent", path), 0);

    s = open_mode(dir, 1 * MiB, 64 * MiB, true);
    ck_assert_int_eq(dir_entries(dir), 0);
    ck_assert_uint_eq(applied_of(s), 0);
    populate(s, &index, &now, 40, "mem");
    fsm_result_init(&res);
    {
        enum { N = 2000, PLEN = 1024 };
        static char payload[PLEN];
        cmd_op ops[20];
        memset(payload, 'm', sizeof(payload));
        for (int c = 0; c < N / 20; c++) {
            for (int i = 0; i < 20; i++) {
                ops[i] = th_put("mem.big", "", 0);
                ops[i].u.put.payload = cq_bytes_of(payload, PLEN);
            }
            th_apply(s, &index, now, ops, 20, &res);
            ck_assert_int_eq(res.ops[19].status, 0);
        }
    }
    fsm_result_fini(&res);
    ck_assert_uint_gt(store_map_size(s), 1 * MiB);
    ck_assert_uint_eq(applied_of(s), index);
    ck_assert_int_eq(dir_entries(dir), 0);

    /* memory -> disk -> memory keeps every byte */
    snapshot_of(s, &buf, &len, &snap_index);
    ck_assert_uint_eq(snap_index, index);
    disk = th_store_open(disk_dir, true);
    ck_assert_int_eq(store_restore(disk, buf, len, &replaced), 0);
    ck_assert(replaced);
    assert_stores_equal(s, disk);
    store_close(s);
    s = open_mode(dir, 1 * MiB, 64 * MiB, true);
    ck_assert_uint_eq(applied_of(s), 0);
    ck_assert_uint_eq(count_of(s, STORE_DB_TASKS), 0);
    ck_assert_int_eq(store_restore(s, buf, len, &replaced), 0);
    ck_assert(replaced);
    ck_assert_uint_eq(applied_of(s), index);
    ck_assert_uint_eq(digest_of(s), digest_of(disk));
    free(buf);

    store_close(s);
    store_close(disk);
    ck_assert_int_eq(dir_entries(dir), 0);
    ck_assert_int_eq(dir_entries("/proc/self/fd"), fds);
    th_rmdir(dir);
    th_rmdir(disk_dir);
}
END_TEST

/* A memory store needs a directory it can write its links into. */
START_TEST(test_memory_mode_bad_dir)
{
    store_opts o;
    store *s = NULL;

    memset(&o, 0, sizeof(o));
    o.memory = true;
    o.writemap = true;
    ck_assert_int_eq(store_open("/nonexistent/clawq", &o, &s), CLAWQ_EIO);
    ck_assert_ptr_null(s);
}
END_TEST

static Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"put_get_del", test_put_get_del},
        {"null_noops", test_null_noops},
        {"cursor", test_cursor},
        {"read_handles_reused", test_read_handles_reused},
        {"schema_and_reopen", test_schema_and_reopen},
        {"map_grow_direct", test_map_grow_direct},
        {"snapshot_roundtrip", test_snapshot_roundtrip},
        {"snapshot_custom_allocator", test_snapshot_custom_allocator},
        {"restore_replaces_older", test_restore_replaces_older},
        {"restore_keeps_newer", test_restore_keeps_newer},
        {"restore_corrupt", test_restore_corrupt},
        {"snapshot_pinned", test_snapshot_pinned},
        {"snapshot_other_thread", test_snapshot_other_thread},
        {"map_growth", test_map_growth},
        {"map_full", test_map_full},
        {"snapshot_pinned_map_growth", test_snapshot_pinned_map_growth},
        {"memory_mode", test_memory_mode},
        {"memory_mode_bad_dir", test_memory_mode_bad_dir},
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
    SRunner *sr = srunner_create(store_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
