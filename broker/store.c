/* store.c: the LMDB environment. See store.h for the contract.
 *
 * Map growth: LMDB cannot grow the map inside a transaction, and remapping
 * while a read transaction of this process is reading would pull the map
 * from under it. So growth happens between transactions (fsm_apply aborts,
 * grows, retries) and only while no snapshot is pinned.
 *
 * Snapshot layout (all integers big-endian):
 *   "CLAWQSNP" | u32 format | u64 applied index | u32 database count |
 *   per database: u32 db | u64 entries | (u32 klen, key, u32 vlen, val)* |
 *   u64 FNV-1a of every byte before it.
 * store_restore validates all of it (bounds, order, checksum) before it
 * touches the environment.
 *
 * Memory mode: LMDB 0.9 opens its files by path only, so the data and lock
 * files are memfds reached through two symlinks ("memory.mdb" and
 * "memory.mdb-lock" in the store directory) that exist only while
 * mdb_env_open runs. LMDB keeps its own descriptors, so the memory lives
 * until mdb_env_close and nothing of it is ever written to a disk.
 */
#include "store.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define STORE_PATH_MAX 4096 /* the memory mode's link paths */
#define SNAP_MAGIC "CLAWQSNP"
#define SNAP_FORMAT 1u
#define SNAP_HEADER_LEN (8 + 4 + 8 + 4)

static const char *const db_names[STORE_DB_COUNT] = {
    "tasks", "ready",  "delayed", "leases",    "dead",
    "idem",  "queues", "meta",    "deadlines", "idem_exp",
};

struct store_txn {
    store *s;
    MDB_txn *txn;
    bool write;
};

struct store_cursor {
    MDB_cursor *cur;
    store *s;
    store_db db;
    bool read; /* of a read-only transaction: kept for reuse when closed */
};

/* Every applied entry reads the store again (the scheduler's next due time,
 * the stats of a pull's queue): a read transaction and a few cursors each
 * time, ~4,000 instructions in malloc, free and LMDB's setup. One closed
 * read transaction is kept reset, and one closed read-only cursor per
 * database kept open; the next read renews them. */
struct store {
    MDB_env *env;
    MDB_dbi dbi[STORE_DB_COUNT];
    size_t map_size;
    size_t map_max;
    int pins; /* pinned snapshots: the map may not move */
    struct store_txn wtxn;
    store_txn *read_spare;                      /* reset, or NULL */
    store_cursor *cursor_spare[STORE_DB_COUNT]; /* open, unbound, or NULL */
    uint64_t memo[STORE_MEMO_WORDS];            /* see store_memo */
};

struct store_snap {
    store *s;
    MDB_txn *txn;
    uint64_t index;
};

static int err_from_mdb(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return 0;
    case MDB_NOTFOUND:
        return CLAWQ_ENOT_FOUND;
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
        return CLAWQ_ESTORAGE_FULL;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
        return CLAWQ_ECORRUPT;
    case ENOMEM:
        return CLAWQ_ENOMEM;
    case MDB_KEYEXIST:
    case EINVAL:
    case MDB_BAD_VALSIZE:
        return CLAWQ_EINVALID;
    default:
        return CLAWQ_EIO;
    }
}

static MDB_val mval(cq_bytes b)
{
    MDB_val v;
    v.mv_size = b.len;
    v.mv_data = (void *)(uintptr_t)b.ptr;
    return v;
}

static cq_bytes bval(MDB_val v)
{
    return cq_bytes_of(v.mv_data, v.mv_size);
}

static const cq_bytes meta_schema = {(const uint8_t *)"schema", 6};
static const cq_bytes meta_applied = {(const uint8_t *)"applied", 7};

static int open_dbs(store *s)
{
    MDB_txn *txn;
    MDB_val k, v;
    uint8_t ver[4];
    int rc, i;

    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0)
        return rc;
    for (i = 0; i < STORE_DB_COUNT; i++) {
        rc = mdb_dbi_open(txn, db_names[i], MDB_CREATE, &s->dbi[i]);
        if (rc != 0)
            goto abort;
    }
    k = mval(meta_schema);
    rc = mdb_get(txn, s->dbi[STORE_DB_META], &k, &v);
    if (rc == MDB_NOTFOUND) {
        cq_put_be32(ver, STORE_SCHEMA_VERSION);
        v.mv_data = ver;
        v.mv_size = sizeof(ver);
        rc = mdb_put(txn, s->dbi[STORE_DB_META], &k, &v, 0);
        if (rc != 0)
            goto abort;
    } else if (rc != 0) {
        goto abort;
    } else if (v.mv_size != 4 ||
               cq_get_be32(v.mv_data) != STORE_SCHEMA_VERSION) {
        fprintf(stderr,
                "store: unsupported schema version (this build reads %d)\n",
                STORE_SCHEMA_VERSION);
        mdb_txn_abort(txn);
        return MDB_VERSION_MISMATCH;
    }
    return mdb_txn_commit(txn);
abort:
    mdb_txn_abort(txn);
    return rc;
}

/* Removes the links and closes the descriptors memory_link made (those it
 * got to: fds[i] < 0 is skipped). After mdb_env_open, LMDB holds
 * descriptors of its own, or failed and holds none. */
static void memory_unlink(const char *const links[2], const int fds[2])
{
    for (int i = 0; i < 2; i++) {
        if (fds[i] < 0)
            continue;
        (void)unlink(links[i]);
        close(fds[i]);
    }
}

/* Memory mode: links[0] and links[1] (the data and lock paths LMDB will
 * open) become symlinks to two new memfds, whose descriptors go to fds[].
 * Leftovers of a process that died in between are replaced. Returns 0, or
 * -1 and errno with nothing left behind. */
static int memory_link(const char *const links[2], int fds[2])
{
    char target[40];
    int e;

    fds[0] = fds[1] = -1;
    for (int i = 0; i < 2; i++) {
        fds[i] = memfd_create(i == 0 ? "clawq-store" : "clawq-store-lock",
                              MFD_CLOEXEC);
        if (fds[i] < 0)
            goto fail;
        snprintf(target, sizeof(target), "/proc/self/fd/%d", fds[i]);
        (void)unlink(links[i]);
        if (symlink(target, links[i]) != 0)
            goto fail;
    }
    return 0;
fail:
    e = errno;
    memory_unlink(links, fds);
    errno = e;
    return -1;
}

/* mdb_env_open on two memfds under `dir`; an LMDB error code. */
static int open_memory(MDB_env *env, const char *dir, unsigned flags)
{
    char path[STORE_PATH_MAX], lock[STORE_PATH_MAX + 8];
    const char *links[2] = {path, lock};
    int fds[2], rc;

    if ((size_t)snprintf(path, sizeof(path), "%s/memory.mdb", dir) >=
        sizeof(path))
        return ENAMETOOLONG;
    /* LMDB's name for the lock file with MDB_NOSUBDIR */
    snprintf(lock, sizeof(lock), "%s-lock", path);
    if (memory_link(links, fds) != 0)
        return errno;
    rc = mdb_env_open(env, path, flags | MDB_NOSUBDIR, 0600);
    memory_unlink(links, fds);
    return rc;
}

int store_open(const char *dir, const store_opts *opts, store **out)
{
    store_opts def = {0};
    unsigned flags = MDB_NOTLS;
    store *s;
    int rc;

    if (opts == NULL)
        opts = &def;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return CLAWQ_ENOMEM;
    s->map_size = opts->map_size ? opts->map_size : (size_t)64 << 20;
    s->map_max = opts->map_max ? opts->map_max : (size_t)64 << 30;
    if (s->map_max < s->map_size)
        s->map_max = s->map_size;
    if (opts->nosync)
        flags |= MDB_NOSYNC;
    if (opts->writemap)
        flags |= MDB_WRITEMAP;

    rc = mdb_env_create(&s->env);
    if (rc != 0)
        goto fail;
    if ((rc = mdb_env_set_maxdbs(s->env, STORE_DB_COUNT)) != 0 ||
        (rc = mdb_env_set_maxreaders(s->env, 126)) != 0 ||
        (rc = mdb_env_set_mapsize(s->env, s->map_size)) != 0)
        goto fail_env;
    if (opts->memory)
        rc = open_memory(s->env, dir, flags);
    else
        rc = mdb_env_open(s->env, dir, flags, 0644);
    if (rc != 0) {
        fprintf(stderr, "store: cannot open LMDB %sin %s: %s\n",
                opts->memory ? "(memory) " : "", dir, mdb_strerror(rc));
        goto fail_env;
    }
    /* An existing environment may be larger than asked for. */
    {
        MDB_envinfo info;
        mdb_env_info(s->env, &info);
        if (info.me_mapsize > s->map_size)
            s->map_size = info.me_mapsize;
        if (s->map_max < s->map_size)
            s->map_max = s->map_size;
    }
    rc = open_dbs(s);
    if (rc != 0) {
        if (rc != MDB_VERSION_MISMATCH)
            fprintf(stderr, "store: cannot open databases in %s: %s\n", dir,
                    mdb_strerror(rc));
        goto fail_env;
    }
    *out = s;
    return 0;
fail_env:
    mdb_env_close(s->env);
fail:
    free(s);
    rc = err_from_mdb(rc);
    return rc == CLAWQ_EINVALID ? CLAWQ_EIO : rc;
}

void store_close(store *s)
{
    int db;

    if (s == NULL)
        return;
    CLAWQ_ASSERT(s->pins == 0 && s->wtxn.txn == NULL);
    for (db = 0; db < STORE_DB_COUNT; db++) {
        if (s->cursor_spare[db] != NULL) {
            mdb_cursor_close(s->cursor_spare[db]->cur);
            free(s->cursor_spare[db]);
        }
    }
    if (s->read_spare != NULL) {
        mdb_txn_abort(s->read_spare->txn);
        free(s->read_spare);
    }
    mdb_env_close(s->env);
    free(s);
}

size_t store_map_size(const store *s)
{
    return s->map_size;
}

int store_map_grow(store *s)
{
    size_t next;
    int rc;

    if (s->pins > 0)
        return CLAWQ_EUNAVAILABLE;
    if (s->map_size >= s->map_max || s->wtxn.txn != NULL)
        return CLAWQ_ESTORAGE_FULL;
    next = s->map_size > s->map_max / 2 ? s->map_max : s->map_size * 2;
    rc = mdb_env_set_mapsize(s->env, next);
    if (rc != 0)
        return err_from_mdb(rc);
    s->map_size = next;
    return 0;
}

int store_space_is_low(store *s, bool *low)
{
    MDB_envinfo info;
    MDB_stat st;
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t psize, used, reserve, free_pages = 0;
    int rc;

    *low = false;
    mdb_env_info(s->env, &info);
    rc = mdb_env_stat(s->env, &st);
    if (rc != 0)
        return err_from_mdb(rc);
    psize = st.ms_psize;
    used = ((uint64_t)info.me_last_pgno + 1) * psize;
    reserve = s->map_max / 16;
    if (used < s->map_max && s->map_max - used >= reserve)
        return 0; /* the common case: no freelist walk */
    /* Pages freed by earlier transactions are reused before the map grows:
     * count them (the free database holds page lists, count first). */
    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return err_from_mdb(rc);
    rc = mdb_cursor_open(txn, 0, &cur);
    if (rc == 0) {
        for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            if (v.mv_size >= sizeof(size_t)) {
                size_t n;
                memcpy(&n, v.mv_data, sizeof(n));
                free_pages += n;
            }
        }
        mdb_cursor_close(cur);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    mdb_txn_abort(txn);
    if (rc != 0)
        return err_from_mdb(rc);
    *low = (used < s->map_max ? s->map_max - used : 0) + free_pages * psize <
           reserve;
    return 0;
}

int store_txn_begin(store *s, bool write, store_txn **out)
{
    store_txn *t;
    int rc;

    if (write) {
        CLAWQ_ASSERT(s->wtxn.txn == NULL);
        t = &s->wtxn;
    } else if (s->read_spare != NULL) {
        t = s->read_spare;
        s->read_spare = NULL;
        rc = mdb_txn_renew(t->txn);
        if (rc == 0) {
            *out = t;
            return 0;
        }
        mdb_txn_abort(t->txn); /* start over with a new one */
    } else {
        t = malloc(sizeof(*t));
        if (t == NULL)
            return CLAWQ_ENOMEM;
    }
    t->s = s;
    t->write = write;
    rc = mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, &t->txn);
    if (rc != 0) {
        t->txn = NULL;
        if (!write)
            free(t);
        return err_from_mdb(rc);
    }
    *out = t;
    return 0;
}

int store_txn_commit(store_txn *t)
{
    int rc;

    if (!t->write) { /* nothing to commit: the same as an abort */
        store_txn_abort(t);
        return 0;
    }
    rc = mdb_txn_commit(t->txn);
    t->txn = NULL;
    return err_from_mdb(rc);
}

void store_txn_abort(store_txn *t)
{
    store *s;

    if (t == NULL)
        return;
    s = t->s;
    if (t->write) {
        mdb_txn_abort(t->txn);
        t->txn = NULL;
    } else if (s->read_spare == NULL) {
        mdb_txn_reset(t->txn);
        s->read_spare = t;
    } else {
        mdb_txn_abort(t->txn);
        free(t);
    }
}

int store_get(store_txn *t, store_db db, cq_bytes key, cq_bytes *val)
{
    MDB_val k = mval(key), v;
    int rc = mdb_get(t->txn, t->s->dbi[db], &k, &v);
    if (rc != 0)
        return err_from_mdb(rc);
    *val = bval(v);
    return 0;
}

int store_put(store_txn *t, store_db db, cq_bytes key, cq_bytes val)
{
    MDB_val k = mval(key), v = mval(val);
    return err_from_mdb(mdb_put(t->txn, t->s->dbi[db], &k, &v, 0));
}

int store_del(store_txn *t, store_db db, cq_bytes key)
{
    MDB_val k = mval(key);
    return err_from_mdb(mdb_del(t->txn, t->s->dbi[db], &k, NULL));
}

int store_cursor_open(store_txn *t, store_db db, store_cursor **out)
{
    store *s = t->s;
    store_cursor *c;
    int rc;

    if (!t->write && s->cursor_spare[db] != NULL) {
        c = s->cursor_spare[db];
        s->cursor_spare[db] = NULL;
        rc = mdb_cursor_renew(t->txn, c->cur);
        if (rc == 0) {
            *out = c;
            return 0;
        }
        mdb_cursor_close(c->cur); /* start over with a new one */
    } else {
        c = malloc(sizeof(*c));
        if (c == NULL)
            return CLAWQ_ENOMEM;
    }
    c->s = s;
    c->db = db;
    c->read = !t->write;
    rc = mdb_cursor_open(t->txn, s->dbi[db], &c->cur);
    if (rc != 0) {
        free(c);
        return err_from_mdb(rc);
    }
    *out = c;
    return 0;
}

void store_cursor_close(store_cursor *c)
{
    if (c == NULL)
        return;
    if (c->read && c->s->cursor_spare[c->db] == NULL) {
        c->s->cursor_spare[c->db] = c; /* renewed by the next read */
        return;
    }
    mdb_cursor_close(c->cur);
    free(c);
}

static int cursor_get(store_cursor *c, MDB_val *k, MDB_cursor_op op,
                      cq_bytes *kout, cq_bytes *vout)
{
    MDB_val v;
    int rc = mdb_cursor_get(c->cur, k, &v, op);
    if (rc != 0)
        return err_from_mdb(rc);
    if (kout != NULL)
        *kout = bval(*k);
    if (vout != NULL)
        *vout = bval(v);
    return 0;
}

int store_cursor_seek(store_cursor *c, cq_bytes key, cq_bytes *k, cq_bytes *v)
{
    MDB_val mk = mval(key);
    return cursor_get(c, &mk, key.len ? MDB_SET_RANGE : MDB_FIRST, k, v);
}

int store_cursor_next(store_cursor *c, cq_bytes *k, cq_bytes *v)
{
    MDB_val mk = {0, NULL};
    return cursor_get(c, &mk, MDB_NEXT, k, v);
}

int store_cursor_del(store_cursor *c)
{
    /* LMDB marks the cursor so that the next MDB_NEXT returns the entry
     * that followed the deleted one. */
    return err_from_mdb(mdb_cursor_del(c->cur, 0));
}

int store_db_count(store_txn *t, store_db db, uint64_t *out)
{
    MDB_stat st;
    int rc = mdb_stat(t->txn, t->s->dbi[db], &st);
    if (rc != 0)
        return err_from_mdb(rc);
    *out = st.ms_entries;
    return 0;
}

static int applied_get(MDB_txn *txn, MDB_dbi meta, uint64_t *index)
{
    MDB_val k = mval(meta_applied), v;
    int rc = mdb_get(txn, meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        *index = 0;
        return 0;
    }
    if (rc != 0)
        return err_from_mdb(rc);
    if (v.mv_size != 8)
        return CLAWQ_ECORRUPT;
    *index = cq_get_be64(v.mv_data);
    return 0;
}

int store_applied_get(store_txn *t, uint64_t *index)
{
    return applied_get(t->txn, t->s->dbi[STORE_DB_META], index);
}

uint64_t *store_memo(store *s)
{
    return s->memo;
}

int store_applied_set(store_txn *t, uint64_t index)
{
    uint8_t v[8];
    cq_put_be64(v, index);
    return store_put(t, STORE_DB_META, meta_applied, cq_bytes_of(v, 8));
}

/* ---- snapshots ---- */

static uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
    const uint8_t *p = data;
    size_t i;
    for (i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}
#define FNV_INIT 0xcbf29ce484222325ULL

int store_snapshot_begin(store *s, store_snap **out)
{
    store_snap *snap = calloc(1, sizeof(*snap));
    int rc;

    if (snap == NULL)
        return CLAWQ_ENOMEM;
    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &snap->txn);
    if (rc != 0) {
        free(snap);
        return err_from_mdb(rc);
    }
    rc = applied_get(snap->txn, s->dbi[STORE_DB_META], &snap->index);
    if (rc != 0) {
        mdb_txn_abort(snap->txn);
        free(snap);
        return rc;
    }
    snap->s = s;
    s->pins++;
    *out = snap;
    return 0;
}

uint64_t store_snapshot_index(const store_snap *snap)
{
    return snap->index;
}

typedef struct snap_out {
    void *(*realloc_fn)(void *, size_t);
    uint8_t *p;
    size_t len, cap;
} snap_out;

static int out_append(snap_out *o, const void *data, size_t n)
{
    if (o->cap - o->len < n) {
        size_t cap = o->cap ? o->cap : 64 * 1024;
        uint8_t *p;
        while (cap - o->len < n)
            cap *= 2;
        p = o->realloc_fn(o->p, cap);
        if (p == NULL)
            return CLAWQ_ENOMEM;
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->len, data, n);
    o->len += n;
    return 0;
}

static int out_u32(snap_out *o, uint32_t v)
{
    uint8_t b[4];
    cq_put_be32(b, v);
    return out_append(o, b, 4);
}

static int out_u64(snap_out *o, uint64_t v)
{
    uint8_t b[8];
    cq_put_be64(b, v);
    return out_append(o, b, 8);
}

static int serialize_db(store_snap *snap, int db, snap_out *o)
{
    MDB_cursor *cur;
    MDB_val k, v;
    size_t count_at;
    uint64_t n = 0;
    int rc;

    rc = mdb_cursor_open(snap->txn, snap->s->dbi[db], &cur);
    if (rc != 0)
        return err_from_mdb(rc);
    if ((rc = out_u32(o, (uint32_t)db)) != 0)
        goto done;
    count_at = o->len;
    if ((rc = out_u64(o, 0)) != 0)
        goto done;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size > UINT32_MAX || v.mv_size > UINT32_MAX) {
            rc = CLAWQ_ETOO_LARGE;
            goto done;
        }
        if ((rc = out_u32(o, (uint32_t)k.mv_size)) != 0 ||
            (rc = out_append(o, k.mv_data, k.mv_size)) != 0 ||
            (rc = out_u32(o, (uint32_t)v.mv_size)) != 0 ||
            (rc = out_append(o, v.mv_data, v.mv_size)) != 0)
            goto done;
        n++;
    }
    rc = rc == MDB_NOTFOUND ? 0 : err_from_mdb(rc);
    if (rc == 0)
        cq_put_be64(o->p + count_at, n);
done:
    mdb_cursor_close(cur);
    return rc;
}

int store_snapshot_serialize(store_snap *snap, const store_alloc *alloc,
                             void **buf, size_t *len)
{
    snap_out o = {alloc ? alloc->realloc_fn : realloc, NULL, 0, 0};
    int rc, db;

    if ((rc = out_append(&o, SNAP_MAGIC, 8)) != 0 ||
        (rc = out_u32(&o, SNAP_FORMAT)) != 0 ||
        (rc = out_u64(&o, snap->index)) != 0 ||
        (rc = out_u32(&o, STORE_DB_COUNT)) != 0)
        goto fail;
    for (db = 0; db < STORE_DB_COUNT; db++) {
        if ((rc = serialize_db(snap, db, &o)) != 0)
            goto fail;
    }
    if ((rc = out_u64(&o, fnv1a(FNV_INIT, o.p, o.len))) != 0)
        goto fail;
    *buf = o.p;
    *len = o.len;
    return 0;
fail:
    if (alloc != NULL)
        alloc->free_fn(o.p);
    else
        free(o.p);
    return rc;
}

void store_snapshot_end(store_snap *snap)
{
    if (snap == NULL)
        return;
    mdb_txn_abort(snap->txn);
    snap->s->pins--;
    free(snap);
}

/* A bounds-checked reader over a snapshot buffer. */
typedef struct snap_in {
    const uint8_t *p;
    size_t len, off;
} snap_in;

static bool in_take(snap_in *in, size_t n, const uint8_t **out)
{
    if (in->len - in->off < n)
        return false;
    *out = in->p + in->off;
    in->off += n;
    return true;
}

static bool in_u32(snap_in *in, uint32_t *v)
{
    const uint8_t *p;
    if (!in_take(in, 4, &p))
        return false;
    *v = cq_get_be32(p);
    return true;
}

static bool in_u64(snap_in *in, uint64_t *v)
{
    const uint8_t *p;
    if (!in_take(in, 8, &p))
        return false;
    *v = cq_get_be64(p);
    return true;
}

/* Walks the snapshot; with txn == NULL only validates (sizes, key order,
 * database numbers), otherwise also loads every entry with MDB_APPEND. */
static int snap_walk(store *s, const uint8_t *buf, size_t len, MDB_txn *txn,
                     uint64_t *index)
{
    snap_in in = {buf, len - 8, 0};
    const uint8_t *magic, *key, *val, *prev;
    uint32_t format, ndb, db, klen, vlen, prev_len;
    uint64_t n, i;
    int rc, expect;

    if (!in_take(&in, 8, &magic) || memcmp(magic, SNAP_MAGIC, 8) != 0 ||
        !in_u32(&in, &format) || format != SNAP_FORMAT || !in_u64(&in, index) ||
        !in_u32(&in, &ndb) || ndb != STORE_DB_COUNT)
        return CLAWQ_ECORRUPT;
    for (expect = 0; expect < STORE_DB_COUNT; expect++) {
        if (!in_u32(&in, &db) || db != (uint32_t)expect || !in_u64(&in, &n))
            return CLAWQ_ECORRUPT;
        prev = NULL;
        prev_len = 0;
        for (i = 0; i < n; i++) {
            if (!in_u32(&in, &klen) || klen == 0 || klen > 511 ||
                !in_take(&in, klen, &key) || !in_u32(&in, &vlen) ||
                !in_take(&in, vlen, &val))
                return CLAWQ_ECORRUPT;
            if (prev != NULL) {
                size_t m = prev_len < klen ? prev_len : klen;
                int c = memcmp(prev, key, m);
                if (c > 0 || (c == 0 && prev_len >= klen))
                    return CLAWQ_ECORRUPT;
            }
            prev = key;
            prev_len = klen;
            if (txn != NULL) {
                MDB_val k = {klen, (void *)(uintptr_t)key};
                MDB_val v = {vlen, (void *)(uintptr_t)val};
                rc = mdb_put(txn, s->dbi[db], &k, &v, MDB_APPEND);
                if (rc != 0)
                    return err_from_mdb(rc);
            }
        }
    }
    return in.off == in.len ? 0 : CLAWQ_ECORRUPT;
}

static int restore_once(store *s, const uint8_t *buf, size_t len)
{
    MDB_txn *txn;
    int rc, db;
    uint64_t index;

    memset(s->memo, 0, sizeof(s->memo)); /* the contents change under it */
    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0)
        return err_from_mdb(rc);
    for (db = 0; db < STORE_DB_COUNT; db++) {
        rc = mdb_drop(txn, s->dbi[db], 0);
        if (rc != 0) {
            mdb_txn_abort(txn);
            return err_from_mdb(rc);
        }
    }
    rc = snap_walk(s, buf, len, txn, &index);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return err_from_mdb(mdb_txn_commit(txn));
}

int store_restore(store *s, const void *buf, size_t len, bool *replaced)
{
    const uint8_t *p = buf;
    uint64_t snap_index, applied;
    MDB_txn *txn;
    int rc;

    *replaced = false;
    if (len < SNAP_HEADER_LEN + 8 ||
        fnv1a(FNV_INIT, p, len - 8) != cq_get_be64(p + len - 8))
        return CLAWQ_ECORRUPT;
    rc = snap_walk(s, p, len, NULL, &snap_index);
    if (rc != 0)
        return rc;

    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return err_from_mdb(rc);
    rc = applied_get(txn, s->dbi[STORE_DB_META], &applied);
    mdb_txn_abort(txn);
    if (rc != 0)
        return rc;
    if (snap_index <= applied)
        return 0;

    while ((rc = restore_once(s, p, len)) == CLAWQ_ESTORAGE_FULL) {
        if (store_map_grow(s) != 0)
            return CLAWQ_ESTORAGE_FULL;
    }
    if (rc == 0)
        *replaced = true;
    return rc;
}

int store_digest(store *s, uint64_t *digest)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t h = FNV_INIT;
    uint8_t len4[4];
    int rc, db;

    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return err_from_mdb(rc);
    for (db = 0; db < STORE_DB_COUNT; db++) {
        rc = mdb_cursor_open(txn, s->dbi[db], &cur);
        if (rc != 0)
            break;
        cq_put_be32(len4, (uint32_t)db);
        h = fnv1a(h, len4, 4);
        for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            cq_put_be32(len4, (uint32_t)k.mv_size);
            h = fnv1a(h, len4, 4);
            h = fnv1a(h, k.mv_data, k.mv_size);
            cq_put_be32(len4, (uint32_t)v.mv_size);
            h = fnv1a(h, len4, 4);
            h = fnv1a(h, v.mv_data, v.mv_size);
        }
        mdb_cursor_close(cur);
        if (rc != MDB_NOTFOUND)
            break;
        rc = 0;
    }
    mdb_txn_abort(txn);
    if (rc != 0)
        return err_from_mdb(rc);
    *digest = h;
    return 0;
}
