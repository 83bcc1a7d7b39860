/* fsm.c: the state machine. See fsm.h for the contract and
 * docs/STATE-MACHINE.md for the rules, which this file implements.
 *
 * One apply is one write transaction. A context (struct ctx) carries the
 * transaction, the command's now_ms, the meta counters (read at the start,
 * written back at the end) and a small cache of the queue records the
 * command touches, flushed once at the end, so a batch of 64 puts to one
 * queue writes its record once.
 *
 * Every task read is copied into ctx->rec before decoding: LMDB may spill
 * or rewrite dirty pages while a large transaction goes on, so no decoded
 * field points into the map across a write.
 *
 * Op validation happens before an op writes anything, so an op that fails
 * fails alone. A store error (map full, I/O, corruption) fails the whole
 * command and the transaction is aborted.
 */
#include "fsm.h"

#include <string.h>

#define ARENA_BLOCK (64 * 1024)
#define MAX_LEASE_MS (24u * 3600 * 1000)
#define MAX_DELAY_MS (UINT64_C(365) * 24 * 3600 * 1000)
#define MAX_PAYLOAD_LIMIT (64u << 20)

/* ---- result arena: chunked, so pointers into it stay valid ---- */

struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    uint8_t data[];
};

struct fsm_arena {
    struct arena_block *head, *cur;
};

static void *arena_alloc(fsm_result *r, size_t n)
{
    struct fsm_arena *a = r->arena;
    struct arena_block *b;
    size_t cap;

    if (a == NULL) {
        a = calloc(1, sizeof(*a));
        if (a == NULL)
            return NULL;
        r->arena = a;
    }
    for (b = a->cur; b != NULL; b = b->next) {
        if (b->cap - b->used >= n) {
            void *p = b->data + b->used;
            b->used += n;
            a->cur = b;
            return p;
        }
        if (b->next == NULL || b->next->used != 0)
            break;
    }
    cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
    b = malloc(sizeof(*b) + cap);
    if (b == NULL)
        return NULL;
    b->used = n;
    b->cap = cap;
    if (a->cur == NULL) {
        b->next = NULL;
        a->head = b;
    } else {
        b->next = a->cur->next;
        a->cur->next = b;
    }
    a->cur = b;
    return b->data;
}

static int arena_copy(fsm_result *r, cq_bytes src, cq_bytes *dst)
{
    uint8_t *p;

    if (src.len == 0) {
        *dst = cq_bytes_of(NULL, 0);
        return 0;
    }
    p = arena_alloc(r, src.len);
    if (p == NULL)
        return CLAWQ_ENOMEM;
    memcpy(p, src.ptr, src.len);
    *dst = cq_bytes_of(p, src.len);
    return 0;
}

/* An apply's working buffers (the queues it touched, the record being
 * decoded and the encoder's output), kept in the result between calls:
 * each apply would otherwise allocate and grow them again. */
struct fsm_scratch {
    struct qentry *queues;
    size_t cap_queues;
    cq_buf rec, enc;
};

void fsm_result_init(fsm_result *r)
{
    memset(r, 0, sizeof(*r));
}

void fsm_result_reset(fsm_result *r)
{
    struct arena_block *b;

    r->index = 0;
    r->now_ms = 0;
    r->skipped = false;
    r->n_ops = 0;
    r->n_tasks = 0;
    r->detail[0] = '\0';
    if (r->arena != NULL) {
        for (b = r->arena->head; b != NULL; b = b->next)
            b->used = 0;
        r->arena->cur = r->arena->head;
    }
}

#define RESULT_KEEP 1024 /* ops and tasks a trimmed result keeps room for */

void fsm_result_trim(fsm_result *r)
{
    struct arena_block *b, *next;

    fsm_result_reset(r);
    if (r->arena != NULL && r->arena->head != NULL) {
        b = r->arena->head;
        if (b->cap > ARENA_BLOCK) { /* one large lease's: drop them all */
            next = b;
            r->arena->head = r->arena->cur = NULL;
        } else {
            next = b->next;
            b->next = NULL;
        }
        for (; next != NULL; next = b) {
            b = next->next;
            free(next);
        }
    }
    if (r->scratch != NULL) { /* records past 64 KiB are rare */
        if (r->scratch->rec.cap > ARENA_BLOCK)
            cq_buf_fini(&r->scratch->rec);
        if (r->scratch->enc.cap > ARENA_BLOCK)
            cq_buf_fini(&r->scratch->enc);
    }
    if (r->ops_cap > RESULT_KEEP) {
        free(r->ops);
        r->ops = NULL;
        r->ops_cap = 0;
    }
    if (r->tasks_cap > RESULT_KEEP) {
        free(r->tasks);
        r->tasks = NULL;
        r->tasks_cap = 0;
    }
}

void fsm_result_fini(fsm_result *r)
{
    struct arena_block *b, *next;

    if (r->arena != NULL) {
        for (b = r->arena->head; b != NULL; b = next) {
            next = b->next;
            free(b);
        }
        free(r->arena);
    }
    if (r->scratch != NULL) {
        free(r->scratch->queues);
        cq_buf_fini(&r->scratch->rec);
        cq_buf_fini(&r->scratch->enc);
        free(r->scratch);
    }
    free(r->ops);
    free(r->tasks);
    memset(r, 0, sizeof(*r));
}

static fsm_op_result *result_op(fsm_result *r, uint8_t type)
{
    fsm_op_result *op;

    if (r->n_ops == r->ops_cap) {
        size_t cap = r->ops_cap ? r->ops_cap * 2 : 16;
        fsm_op_result *p = realloc(r->ops, cap * sizeof(*p));
        if (p == NULL)
            return NULL;
        r->ops = p;
        r->ops_cap = cap;
    }
    op = &r->ops[r->n_ops++];
    memset(op, 0, sizeof(*op));
    op->type = type;
    op->first_task = r->n_tasks;
    return op;
}

static fsm_task *result_task(fsm_result *r)
{
    if (r->n_tasks == r->tasks_cap) {
        size_t cap = r->tasks_cap ? r->tasks_cap * 2 : 16;
        fsm_task *p = realloc(r->tasks, cap * sizeof(*p));
        if (p == NULL)
            return NULL;
        r->tasks = p;
        r->tasks_cap = cap;
    }
    return &r->tasks[r->n_tasks++];
}

/* ---- the apply context ---- */

typedef struct qentry {
    char name[QUEUE_NAME_MAX];
    size_t name_len;
    queue_rec rec;
    bool exists; /* in the store (or created by this command) */
    bool dirty;
    bool oldest_dirty; /* the oldest ready task may have left */
} qentry;

typedef struct ctx {
    store *s;
    store_txn *t;
    uint64_t now;
    uint64_t next_id, next_lease, next_seq, next_qid;
    uint64_t meta_stored[4]; /* as in the store; 0 = absent */
    uint64_t due_first[4];   /* the first time in each due_dbs index */
    unsigned due_known;      /* bit i: due_first[i] holds (0 = empty) */
    bool meta_dirty;
    bool space_low; /* puts are refused: see store_space_is_low */
    qentry *queues;
    size_t n_queues, cap_queues;
    cq_buf rec; /* the raw record being worked on */
    cq_buf enc; /* encoder output */
    fsm_result *res;
} ctx;

static const char *const meta_names[4] = {"next_id", "next_lease", "next_seq",
                                          "next_qid"};

static uint64_t *meta_slot(ctx *c, int i)
{
    uint64_t *slots[4] = {&c->next_id, &c->next_lease, &c->next_seq,
                          &c->next_qid};
    return slots[i];
}

/* The applied index and the counters as last committed, kept in the
 * store's memo so that an apply reads them back only after the store was
 * opened or restored: five gets of ~800 instructions per entry. */
enum {
    MEMO_VALID, /* MEMO_APPLIED and MEMO_META hold */
    MEMO_APPLIED,
    MEMO_META,
    MEMO_DUE_KNOWN = MEMO_META + 4, /* the bits of ctx.due_known */
    MEMO_DUE,                       /* ctx.due_first */
    MEMO_END = MEMO_DUE + 4
};
_Static_assert(MEMO_END <= STORE_MEMO_WORDS, "store_memo is too small");

/* The indexes a tick works through, keyed by time first; fsm_next_due
 * is the earliest first key among them, kept per index in the memo and
 * moved by every put and delete (index_put, index_del), so that the
 * scheduler's look after each entry seldom seeks. */
static const store_db due_dbs[4] = {STORE_DB_LEASES, STORE_DB_DEADLINES,
                                    STORE_DB_DELAYED, STORE_DB_IDEM_EXP};

static void memo_keep(ctx *c, uint64_t applied)
{
    uint64_t *m = store_memo(c->s);

    m[MEMO_APPLIED] = applied;
    memcpy(m + MEMO_META, c->meta_stored, sizeof(c->meta_stored));
    m[MEMO_DUE_KNOWN] = c->due_known;
    memcpy(m + MEMO_DUE, c->due_first, sizeof(c->due_first));
    m[MEMO_VALID] = 1;
}

static void memo_drop(store *s)
{
    store_memo(s)[MEMO_VALID] = 0;
    store_memo(s)[MEMO_DUE_KNOWN] = 0;
}

/* A write transaction starts from the due times the memo knows. */
static void due_load(ctx *c)
{
    const uint64_t *m = store_memo(c->s);

    c->due_known = (unsigned)m[MEMO_DUE_KNOWN];
    memcpy(c->due_first, m + MEMO_DUE, sizeof(c->due_first));
}

static int due_slot(store_db db)
{
    int i;

    for (i = 0; i < 4; i++)
        if (due_dbs[i] == db)
            return i;
    return -1;
}

/* Keeps due_first true as a key of db is put (put) or deleted. */
static void due_note(ctx *c, store_db db, const uint8_t *key, size_t len,
                     bool put)
{
    int i = due_slot(db);
    uint64_t at;

    if (i < 0 || !(c->due_known & (1u << i)))
        return;
    at = len >= 8 ? cq_get_be64(key) : 0;
    if (at == 0) /* not a time: let fsm_next_due look */
        c->due_known &= ~(1u << i);
    else if (put && (c->due_first[i] == 0 || at < c->due_first[i]))
        c->due_first[i] = at;
    else if (!put && at <= c->due_first[i]) /* maybe the first went */
        c->due_known &= ~(1u << i);
}

static int meta_load(ctx *c)
{
    const uint64_t *m = store_memo(c->s);
    cq_bytes v;
    int i, rc;

    if (m[MEMO_VALID]) {
        for (i = 0; i < 4; i++) {
            c->meta_stored[i] = m[MEMO_META + i];
            *meta_slot(c, i) = c->meta_stored[i] ? c->meta_stored[i] : 1;
        }
        return 0;
    }
    for (i = 0; i < 4; i++) {
        rc = store_get(c->t, STORE_DB_META, cq_bytes_str(meta_names[i]), &v);
        if (rc == CLAWQ_ENOT_FOUND) {
            *meta_slot(c, i) = 1;
            c->meta_stored[i] = 0;
            continue;
        }
        if (rc != 0)
            return rc;
        if (v.len != 8)
            return CLAWQ_ECORRUPT;
        *meta_slot(c, i) = c->meta_stored[i] = cq_get_be64(v.ptr);
    }
    return 0;
}

/* Writes the counters that changed (and, once, any still absent): a
 * command moves one or two of them, and each put is ~1,500 instructions. */
static int meta_flush(ctx *c)
{
    uint8_t v[8];
    int i, rc;

    if (!c->meta_dirty)
        return 0;
    for (i = 0; i < 4; i++) {
        if (*meta_slot(c, i) == c->meta_stored[i])
            continue;
        cq_put_be64(v, *meta_slot(c, i));
        rc = store_put(c->t, STORE_DB_META, cq_bytes_str(meta_names[i]),
                       cq_bytes_of(v, 8));
        if (rc != 0)
            return rc;
        c->meta_stored[i] = *meta_slot(c, i);
    }
    return 0;
}

/* With a result, the context takes over the buffers of its scratch (made
 * on first use; without memory for it the context starts empty). */
static void ctx_init(ctx *c, store *s, fsm_result *res)
{
    struct fsm_scratch *sc;

    memset(c, 0, sizeof(*c));
    c->s = s;
    c->res = res;
    cq_buf_init(&c->rec, SIZE_MAX / 2);
    cq_buf_init(&c->enc, SIZE_MAX / 2);
    if (res == NULL)
        return;
    if (res->scratch == NULL)
        res->scratch = calloc(1, sizeof(*res->scratch));
    sc = res->scratch;
    if (sc == NULL || sc->rec.max == 0)
        return; /* nothing kept yet */
    c->queues = sc->queues;
    c->cap_queues = sc->cap_queues;
    c->rec = sc->rec;
    c->enc = sc->enc;
    c->rec.len = c->enc.len = 0;
    memset(sc, 0, sizeof(*sc));
}

/* Hands the buffers back to the result's scratch, or frees them. */
static void ctx_fini(ctx *c)
{
    struct fsm_scratch *sc = c->res != NULL ? c->res->scratch : NULL;

    if (sc != NULL) {
        sc->queues = c->queues;
        sc->cap_queues = c->cap_queues;
        sc->rec = c->rec;
        sc->enc = c->enc;
        return;
    }
    free(c->queues);
    cq_buf_fini(&c->rec);
    cq_buf_fini(&c->enc);
}

/* Starts a transaction on a clean context (also for retries). */
static int ctx_begin(ctx *c, bool write)
{
    c->n_queues = 0;
    c->meta_dirty = false;
    return store_txn_begin(c->s, write, &c->t);
}

/* Records why an op failed and returns its status. */
static int fail_detail(ctx *c, int status, const char *why)
{
    snprintf(c->res->detail, sizeof(c->res->detail), "%s", why);
    return status;
}

/* ---- queues ---- */

static cq_bytes qname(const qentry *q)
{
    return cq_bytes_of(q->name, q->name_len);
}

/* Finds a queue by name: in the cache, else in the store. With create, a
 * missing queue is created with default settings. *out is NULL (and 0
 * returned) for a missing queue without create. The pointer is valid until
 * the next queue_get. */
static int queue_get(ctx *c, cq_bytes name, bool create, qentry **out)
{
    qentry *q = NULL;
    cq_bytes v;
    size_t i;
    int rc;

    *out = NULL;
    for (i = 0; i < c->n_queues; i++) {
        if (cq_bytes_eq(qname(&c->queues[i]), name)) {
            q = &c->queues[i];
            if (!q->exists && !create)
                return 0;
            break;
        }
    }
    if (i == c->n_queues) {
        if (c->n_queues == c->cap_queues) {
            size_t cap = c->cap_queues ? c->cap_queues * 2 : 8;
            qentry *p = realloc(c->queues, cap * sizeof(*p));
            if (p == NULL)
                return CLAWQ_ENOMEM;
            c->queues = p;
            c->cap_queues = cap;
        }
        q = &c->queues[c->n_queues];
        memset(q, 0, sizeof(*q));
        memcpy(q->name, name.ptr, name.len);
        q->name_len = name.len;
        rc = store_get(c->t, STORE_DB_QUEUES, name, &v);
        if (rc == 0) {
            rc = queue_rec_decode(v.ptr, v.len, &q->rec);
            if (rc != 0)
                return rc;
            q->exists = true;
        } else if (rc != CLAWQ_ENOT_FOUND) {
            return rc;
        }
        c->n_queues++;
        if (!q->exists && !create)
            return 0;
    }
    if (!q->exists) {
        uint8_t key[5];
        memset(&q->rec, 0, sizeof(q->rec));
        queue_settings_default(&q->rec.settings);
        q->rec.qid = (uint32_t)c->next_qid++;
        q->rec.created_ms = c->now;
        c->meta_dirty = true;
        q->exists = true;
        q->dirty = true;
        key[0] = 'q';
        cq_put_be32(key + 1, q->rec.qid);
        rc = store_put(c->t, STORE_DB_META, cq_bytes_of(key, 5), name);
        if (rc != 0)
            return rc;
    }
    *out = q;
    return 0;
}

static int queue_by_qid(ctx *c, uint32_t qid, qentry **out)
{
    uint8_t key[5];
    cq_bytes name;
    size_t i;
    int rc;

    for (i = 0; i < c->n_queues; i++) {
        if (c->queues[i].exists && c->queues[i].rec.qid == qid) {
            *out = &c->queues[i];
            return 0;
        }
    }
    key[0] = 'q';
    cq_put_be32(key + 1, qid);
    rc = store_get(c->t, STORE_DB_META, cq_bytes_of(key, 5), &name);
    if (rc != 0)
        return rc == CLAWQ_ENOT_FOUND ? CLAWQ_ECORRUPT : rc;
    if (name.len == 0 || name.len > QUEUE_NAME_MAX)
        return CLAWQ_ECORRUPT;
    rc = queue_get(c, name, false, out);
    if (rc == 0 && *out == NULL)
        rc = CLAWQ_ECORRUPT;
    return rc;
}

/* The ready_at of the first ready task of each priority in use, the least
 * of them: one cursor seek per priority present. */
static int oldest_ready(ctx *c, uint32_t qid, uint64_t *out)
{
    store_cursor *cur;
    uint8_t key[KEY_READY_LEN];
    cq_bytes k, v;
    int prio = 0, rc;

    *out = 0;
    rc = store_cursor_open(c->t, STORE_DB_READY, &cur);
    if (rc != 0)
        return rc;
    while (prio <= 255) {
        key_ready(key, qid, (uint8_t)prio, 0);
        rc = store_cursor_seek(cur, cq_bytes_of(key, sizeof(key)), &k, &v);
        if (rc == CLAWQ_ENOT_FOUND) {
            rc = 0;
            break;
        }
        if (rc != 0)
            break;
        if (k.len != KEY_READY_LEN || v.len != READY_VAL_LEN) {
            rc = CLAWQ_ECORRUPT;
            break;
        }
        if (cq_get_be32(k.ptr) != qid)
            break;
        if (*out == 0 || cq_get_be64(v.ptr + 8) < *out)
            *out = cq_get_be64(v.ptr + 8);
        prio = k.ptr[4] + 1;
    }
    store_cursor_close(cur);
    return rc;
}

static int queues_flush(ctx *c)
{
    size_t i;
    int rc;

    for (i = 0; i < c->n_queues; i++) {
        qentry *q = &c->queues[i];
        if (!q->dirty)
            continue;
        if (q->oldest_dirty) {
            rc = oldest_ready(c, q->rec.qid, &q->rec.oldest_ready_ms);
            if (rc != 0)
                return rc;
        }
        c->enc.len = 0;
        rc = queue_rec_encode(&q->rec, &c->enc);
        if (rc == 0)
            rc = store_put(c->t, STORE_DB_QUEUES, qname(q),
                           cq_bytes_of(c->enc.ptr, c->enc.len));
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- tasks ---- */

/* Loads task `id` into *t (copied into ctx->rec). Returns CLAWQ_ENOT_FOUND
 * when absent. */
static int task_load(ctx *c, uint64_t id, task_rec *t)
{
    uint8_t key[KEY_TASK_LEN];
    cq_bytes v;
    int rc;

    rc = store_get(c->t, STORE_DB_TASKS, cq_bytes_of(key, key_task(key, id)),
                   &v);
    if (rc != 0)
        return rc;
    c->rec.len = 0;
    rc = cq_buf_append(&c->rec, v.ptr, v.len);
    if (rc != 0)
        return rc;
    rc = task_rec_decode(c->rec.ptr, c->rec.len, t);
    if (rc == 0 && t->id != id)
        rc = CLAWQ_ECORRUPT;
    return rc;
}

static int task_save(ctx *c, const task_rec *t)
{
    uint8_t key[KEY_TASK_LEN];
    int rc;

    c->enc.len = 0;
    rc = task_rec_encode(t, &c->enc);
    if (rc != 0)
        return rc;
    return store_put(c->t, STORE_DB_TASKS,
                     cq_bytes_of(key, key_task(key, t->id)),
                     cq_bytes_of(c->enc.ptr, c->enc.len));
}

static int task_delete(ctx *c, uint64_t id)
{
    uint8_t key[KEY_TASK_LEN];
    return store_del(c->t, STORE_DB_TASKS, cq_bytes_of(key, key_task(key, id)));
}

static int index_put(ctx *c, store_db db, const uint8_t *key, size_t len,
                     cq_bytes val)
{
    int rc = store_put(c->t, db, cq_bytes_of(key, len), val);

    if (rc == 0)
        due_note(c, db, key, len, true);
    return rc;
}

static int index_del(ctx *c, store_db db, const uint8_t *key, size_t len)
{
    int rc = store_del(c->t, db, cq_bytes_of(key, len));

    if (rc == 0)
        due_note(c, db, key, len, false);
    /* An index entry the record says exists must exist. */
    return rc == CLAWQ_ENOT_FOUND ? CLAWQ_ECORRUPT : rc;
}

static uint64_t add_sat(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* Takes the task out of the index of its current state. */
static int leave_state(ctx *c, qentry *q, task_rec *t)
{
    uint8_t key[KEY_DEAD_LEN];
    queue_counters *n = &q->rec.counters;

    q->dirty = true;
    switch (t->state) {
    case TASK_READY:
        n->ready--;
        if (t->ready_at_ms <= q->rec.oldest_ready_ms)
            q->oldest_dirty = true;
        return index_del(c, STORE_DB_READY, key,
                         key_ready(key, t->qid, t->priority, t->seq));
    case TASK_DELAYED:
        n->delayed--;
        return index_del(c, STORE_DB_DELAYED, key,
                         key_time_id(key, t->run_at_ms, t->id));
    case TASK_LEASED:
        n->leased--;
        return index_del(c, STORE_DB_LEASES, key,
                         key_time_id(key, t->lease_expires_ms, t->id));
    case TASK_DEAD:
        n->dead--;
        return index_del(c, STORE_DB_DEAD, key,
                         key_dead(key, t->qid, t->dead_at_ms, t->id));
    default:
        return CLAWQ_ECORRUPT;
    }
}

static int enter_ready(ctx *c, qentry *q, task_rec *t)
{
    uint8_t key[KEY_READY_LEN], val[READY_VAL_LEN];

    t->state = TASK_READY;
    t->seq = c->next_seq++;
    t->ready_at_ms = c->now;
    c->meta_dirty = true;
    q->dirty = true;
    q->rec.counters.ready++;
    if (q->rec.oldest_ready_ms == 0 || c->now < q->rec.oldest_ready_ms)
        q->rec.oldest_ready_ms = c->now;
    cq_put_be64(val, t->id);
    cq_put_be64(val + 8, t->ready_at_ms);
    return index_put(c, STORE_DB_READY, key,
                     key_ready(key, t->qid, t->priority, t->seq),
                     cq_bytes_of(val, sizeof(val)));
}

static int enter_delayed(ctx *c, qentry *q, task_rec *t, uint64_t run_at)
{
    uint8_t key[KEY_TIME_ID_LEN];

    t->state = TASK_DELAYED;
    t->run_at_ms = run_at;
    q->dirty = true;
    q->rec.counters.delayed++;
    return index_put(c, STORE_DB_DELAYED, key, key_time_id(key, run_at, t->id),
                     cq_bytes_of(NULL, 0));
}

static int deadline_del(ctx *c, const task_rec *t)
{
    uint8_t key[KEY_TIME_ID_LEN];

    if (t->deadline_ms == 0)
        return 0;
    return index_del(c, STORE_DB_DEADLINES, key,
                     key_time_id(key, t->deadline_ms, t->id));
}

static int enter_dead(ctx *c, qentry *q, task_rec *t, int reason)
{
    uint8_t key[KEY_DEAD_LEN];
    int rc;

    rc = deadline_del(c, t);
    if (rc != 0)
        return rc;
    t->state = TASK_DEAD;
    t->dead_reason = (uint8_t)reason;
    t->dead_at_ms = c->now;
    q->dirty = true;
    q->rec.counters.dead++;
    q->rec.counters.dead_total++;
    return index_put(c, STORE_DB_DEAD, key,
                     key_dead(key, t->qid, t->dead_at_ms, t->id),
                     cq_bytes_of(NULL, 0));
}

static void push_error(ctx *c, task_rec *t, cq_bytes msg)
{
    uint32_t n =
        t->n_errors < TASK_MAX_ERRORS ? t->n_errors + 1 : TASK_MAX_ERRORS;

    memmove(&t->errors[1], &t->errors[0], (n - 1) * sizeof(t->errors[0]));
    if (msg.len > TASK_ERROR_MAX)
        msg.len = TASK_ERROR_MAX;
    t->errors[0].at_ms = c->now;
    t->errors[0].attempt = t->attempt;
    t->errors[0].msg = msg;
    t->n_errors = n;
}

uint64_t fsm_backoff_ms(const queue_settings *qs, uint32_t attempt, uint64_t id,
                        uint64_t lease_id)
{
    uint64_t d = qs->backoff_base_ms, cap = qs->backoff_max_ms, half;
    uint32_t i;

    for (i = 1; i < attempt && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    half = d / 2;
    return half + cq_mix64(id ^ (lease_id << 1)) % (half + 1);
}

static uint32_t max_attempts_of(const qentry *q, const task_rec *t)
{
    return t->max_attempts ? t->max_attempts : q->rec.settings.max_attempts;
}

/* A failed attempt (nack, lease expiry): to the dead-letter queue when the
 * attempts are used up, else back to ready after the delay (< 0: the
 * queue's backoff). The task has left its state already; saves it. */
static int retry_or_dead(ctx *c, qentry *q, task_rec *t, int64_t delay_ms)
{
    uint64_t delay;
    int rc;

    if (t->attempt >= max_attempts_of(q, t)) {
        rc = enter_dead(c, q, t, DEAD_MAX_ATTEMPTS);
    } else {
        delay = delay_ms >= 0 ? (uint64_t)delay_ms
                              : fsm_backoff_ms(&q->rec.settings, t->attempt,
                                               t->id, t->lease_id);
        if (delay > MAX_DELAY_MS)
            delay = MAX_DELAY_MS;
        rc = delay == 0 ? enter_ready(c, q, t)
                        : enter_delayed(c, q, t, add_sat(c->now, delay));
    }
    return rc != 0 ? rc : task_save(c, t);
}

/* Copies a task into the result. */
static int result_add_task(ctx *c, const qentry *q, const task_rec *t)
{
    fsm_result *r = c->res;
    fsm_task *o = result_task(r);
    uint32_t i;
    int rc = 0;

    if (o == NULL)
        return CLAWQ_ENOMEM;
    memset(o, 0, sizeof(*o));
    o->id = t->id;
    o->state = t->state;
    o->priority = t->priority;
    o->dead_reason = t->dead_reason;
    o->attempt = t->attempt;
    o->max_attempts = max_attempts_of(q, t);
    o->created_ms = t->created_ms;
    o->run_at_ms = t->run_at_ms;
    o->deadline_ms = t->deadline_ms;
    o->ready_at_ms = t->ready_at_ms;
    o->dead_at_ms = t->dead_at_ms;
    o->lease_id = t->lease_id;
    o->lease_expires_ms = t->lease_expires_ms;
    o->progress = t->progress;
    o->n_errors = t->n_errors;
    if ((rc = arena_copy(r, qname(q), &o->queue)) != 0 ||
        (rc = arena_copy(r, t->payload, &o->payload)) != 0 ||
        (rc = arena_copy(r, t->checkpoint, &o->checkpoint)) != 0 ||
        (rc = arena_copy(r, t->headers, &o->headers)) != 0 ||
        (rc = arena_copy(r, t->worker, &o->worker)) != 0 ||
        (rc = arena_copy(r, t->idem_key, &o->idem_key)) != 0)
        return rc;
    for (i = 0; i < t->n_errors; i++) {
        o->errors[i] = t->errors[i];
        rc = arena_copy(r, t->errors[i].msg, &o->errors[i].msg);
        if (rc != 0)
            return rc;
    }
    if (t->n_errors > 0)
        o->last_error = o->errors[0].msg;
    return 0;
}

/* Validates that the caller holds the task's current lease and loads the
 * task and its queue. */
static int lease_check(ctx *c, uint64_t id, uint64_t lease_id, task_rec *t,
                       qentry **q)
{
    int rc = task_load(c, id, t);

    if (rc == CLAWQ_ENOT_FOUND) {
        /* Ids are never reused: an issued id that is gone was settled. */
        if (id != 0 && id < c->next_id)
            return fail_detail(c, CLAWQ_ELEASE_LOST, "task is gone");
        return fail_detail(c, CLAWQ_ENOT_FOUND, "no such task");
    }
    if (rc != 0)
        return rc;
    if (t->state != TASK_LEASED || t->lease_id != lease_id)
        return fail_detail(c, CLAWQ_ELEASE_LOST,
                           t->state != TASK_LEASED ? "task is not leased"
                                                   : "lease was re-issued");
    return queue_by_qid(c, t->qid, q);
}

/* A put refused for the space reserve, before it wrote anything. Not
 * CLAWQ_ESTORAGE_FULL itself: that one, from LMDB, dooms the transaction. */
#define OP_SPACE_LOW 1

/* Whether rc is an op-level outcome (the op fails alone) rather than a
 * store failure that fails the command. */
static bool is_op_status(int rc)
{
    return rc == CLAWQ_EINVALID || rc == CLAWQ_ENOT_FOUND ||
           rc == CLAWQ_ELEASE_LOST || rc == CLAWQ_EQUEUE_FULL ||
           rc == CLAWQ_ETOO_LARGE || rc == OP_SPACE_LOW;
}

/* True when headers hold a msgpack array of an even number of strings. */
static bool headers_are_valid(cq_bytes h)
{
    mp_reader r;
    uint32_t n, i;
    cq_bytes str;

    if (h.len == 0)
        return true;
    if (h.len > TASK_HEADERS_MAX)
        return false;
    mp_reader_init(&r, h.ptr, h.len);
    if (!mp_read_array(&r, &n) || n % 2 != 0)
        return false;
    for (i = 0; i < n; i++) {
        if (!mp_read_str(&r, &str))
            return false;
    }
    return mp_reader_done(&r);
}

/* ---- ops ---- */

static int op_put(ctx *c, const cmd_put *p, fsm_op_result *out)
{
    uint8_t key[KEY_IDEM_EXP_MAX], val[IDEM_VAL_LEN];
    queue_counters *n;
    task_rec t;
    qentry *q;
    cq_bytes v;
    uint64_t expires, stale_expires;
    queue_settings qs;
    int rc;

    if (!queue_name_is_valid(p->queue))
        return fail_detail(c, CLAWQ_EINVALID, "invalid queue name");
    if (p->idem_key.len > TASK_KEY_MAX)
        return fail_detail(c, CLAWQ_EINVALID, "idempotency key too long");
    if (!headers_are_valid(p->headers))
        return fail_detail(c, CLAWQ_EINVALID, "invalid headers");
    /* Checks first (reads only), then writes: a failing put changes
     * nothing, not even by creating its queue. */
    rc = queue_get(c, p->queue, false, &q);
    if (rc != 0)
        return rc;
    if (q == NULL)
        queue_settings_default(&qs);
    else
        qs = q->rec.settings;
    if (p->payload.len > qs.max_payload)
        return fail_detail(c, CLAWQ_ETOO_LARGE,
                           "payload over the queue's max_payload");
    if (c->space_low)
        return fail_detail(c, OP_SPACE_LOW,
                           "storage nearly full: puts are refused until "
                           "acks or purges free space");
    stale_expires = 0;
    if (q != NULL && p->idem_key.len > 0) {
        rc = store_get(c->t, STORE_DB_IDEM,
                       cq_bytes_of(key, key_idem(key, q->rec.qid, p->idem_key)),
                       &v);
        if (rc == 0) {
            if (v.len != IDEM_VAL_LEN)
                return CLAWQ_ECORRUPT;
            expires = cq_get_be64(v.ptr + 8);
            if (expires > c->now) {
                out->id = cq_get_be64(v.ptr);
                out->duplicate = true;
                q->rec.counters.deduped_total++;
                q->dirty = true;
                return 0;
            }
            stale_expires = expires; /* the tick has not reached it yet */
        } else if (rc != CLAWQ_ENOT_FOUND) {
            return rc;
        }
    }
    if (q != NULL && qs.max_depth != 0 &&
        q->rec.counters.ready + q->rec.counters.delayed +
                q->rec.counters.leased >=
            qs.max_depth)
        return fail_detail(c, CLAWQ_EQUEUE_FULL, "queue at max_depth");
    if (q == NULL) {
        rc = queue_get(c, p->queue, true, &q);
        if (rc != 0)
            return rc;
    }
    n = &q->rec.counters;
    if (stale_expires != 0) {
        rc = index_del(
            c, STORE_DB_IDEM_EXP, key,
            key_idem_exp(key, stale_expires, q->rec.qid, p->idem_key));
        if (rc != 0)
            return rc;
    }

    memset(&t, 0, sizeof(t));
    t.id = c->next_id++;
    c->meta_dirty = true;
    t.qid = q->rec.qid;
    t.priority = p->priority;
    t.max_attempts = p->max_attempts;
    t.created_ms = c->now;
    t.deadline_ms = p->deadline_ms;
    t.idem_key = p->idem_key;
    t.headers = p->headers;
    t.payload = p->payload;
    n->put_total++;
    q->dirty = true;
    rc = p->run_at_ms > c->now ? enter_delayed(c, q, &t, p->run_at_ms)
                               : enter_ready(c, q, &t);
    if (rc != 0)
        return rc;
    if (t.deadline_ms != 0) {
        rc = index_put(c, STORE_DB_DEADLINES, key,
                       key_time_id(key, t.deadline_ms, t.id),
                       cq_bytes_of(NULL, 0));
        if (rc != 0)
            return rc;
    }
    if (p->idem_key.len > 0) {
        expires = add_sat(c->now, q->rec.settings.dedup_window_ms);
        if (expires == c->now)
            expires++; /* a zero window still dedups retries in this ms */
        cq_put_be64(val, t.id);
        cq_put_be64(val + 8, expires);
        rc = index_put(c, STORE_DB_IDEM, key,
                       key_idem(key, q->rec.qid, p->idem_key),
                       cq_bytes_of(val, sizeof(val)));
        if (rc == 0)
            rc = index_put(c, STORE_DB_IDEM_EXP, key,
                           key_idem_exp(key, expires, q->rec.qid, p->idem_key),
                           cq_bytes_of(NULL, 0));
        if (rc != 0)
            return rc;
    }
    out->id = t.id;
    return task_save(c, &t);
}

/* The first ready entry of queue qid, in lease order: returns 1 with the
 * task id, 0 when the queue has none ready, or an error. */
static int ready_first(store_cursor *cur, uint32_t qid, uint64_t *id)
{
    uint8_t key[KEY_READY_LEN];
    cq_bytes k, v;
    int rc;

    key_ready(key, qid, 0, 0);
    rc = store_cursor_seek(cur, cq_bytes_of(key, sizeof(key)), &k, &v);
    if (rc == CLAWQ_ENOT_FOUND)
        return 0;
    if (rc != 0)
        return rc;
    if (k.len != KEY_READY_LEN || v.len != READY_VAL_LEN)
        return CLAWQ_ECORRUPT;
    if (cq_get_be32(k.ptr) != qid)
        return 0;
    *id = cq_get_be64(v.ptr);
    return 1;
}

static int op_lease(ctx *c, const cmd_lease *l, fsm_op_result *out)
{
    uint64_t bytes = 0;
    store_cursor *cur;
    task_rec t;
    qentry *q;
    uint64_t lease_ms;
    int rc;

    if (!queue_name_is_valid(l->queue))
        return fail_detail(c, CLAWQ_EINVALID, "invalid queue name");
    if (l->max == 0 || l->max > CMD_LEASE_MAX)
        return fail_detail(c, CLAWQ_EINVALID, "lease max out of range");
    if (l->worker.len > TASK_WORKER_MAX)
        return fail_detail(c, CLAWQ_EINVALID, "worker name too long");
    if (l->lease_ms > MAX_LEASE_MS)
        return fail_detail(c, CLAWQ_EINVALID, "lease_ms out of range");
    rc = queue_get(c, l->queue, false, &q);
    if (rc != 0 || q == NULL || q->rec.settings.paused)
        return rc;
    lease_ms = l->lease_ms ? l->lease_ms : q->rec.settings.lease_ms;

    rc = store_cursor_open(c->t, STORE_DB_READY, &cur);
    if (rc != 0)
        return rc;
    while (out->n_tasks < l->max) {
        uint8_t lkey[KEY_TIME_ID_LEN];
        uint64_t id;

        rc = ready_first(cur, q->rec.qid, &id);
        if (rc <= 0)
            break;
        rc = task_load(c, id, &t);
        if (rc == 0 && l->max_bytes != 0 && out->n_tasks > 0 &&
            bytes + t.payload.len + t.checkpoint.len + t.headers.len >
                l->max_bytes)
            break; /* the reply would not fit: leave it ready */
        bytes += t.payload.len + t.checkpoint.len + t.headers.len;
        if (rc == 0 && t.state != TASK_READY)
            rc = CLAWQ_ECORRUPT;
        if (rc == 0)
            rc = leave_state(c, q, &t);
        if (rc != 0) {
            if (rc == CLAWQ_ENOT_FOUND)
                rc = CLAWQ_ECORRUPT;
            break;
        }
        t.state = TASK_LEASED;
        t.attempt++;
        t.lease_id = c->next_lease++;
        t.lease_expires_ms = add_sat(c->now, lease_ms);
        t.leased_at_ms = c->now;
        t.worker = l->worker;
        c->meta_dirty = true;
        q->rec.counters.leased++;
        q->rec.counters.leased_total++;
        rc = index_put(c, STORE_DB_LEASES, lkey,
                       key_time_id(lkey, t.lease_expires_ms, t.id),
                       cq_bytes_of(NULL, 0));
        if (rc == 0)
            rc = result_add_task(c, q, &t);
        if (rc == 0)
            rc = task_save(c, &t);
        if (rc != 0)
            break;
        out->n_tasks++;
    }
    store_cursor_close(cur);
    return rc;
}

static int op_extend(ctx *c, const cmd_extend *x, fsm_op_result *out)
{
    uint8_t key[KEY_TIME_ID_LEN];
    task_rec t;
    qentry *q;
    uint64_t lease_ms;
    int rc;

    if (x->lease_ms > MAX_LEASE_MS)
        return fail_detail(c, CLAWQ_EINVALID, "lease_ms out of range");
    if (x->has_checkpoint && x->checkpoint.len > TASK_CHECKPOINT_MAX)
        return fail_detail(c, CLAWQ_ETOO_LARGE, "checkpoint too large");
    rc = lease_check(c, x->id, x->lease_id, &t, &q);
    if (rc != 0)
        return rc;
    lease_ms = x->lease_ms ? x->lease_ms : q->rec.settings.lease_ms;
    rc = leave_state(c, q, &t);
    if (rc != 0)
        return rc;
    q->rec.counters.leased++;
    t.lease_expires_ms = add_sat(c->now, lease_ms);
    if (x->has_progress)
        t.progress = x->progress;
    if (x->has_checkpoint)
        t.checkpoint = x->checkpoint;
    rc = index_put(c, STORE_DB_LEASES, key,
                   key_time_id(key, t.lease_expires_ms, t.id),
                   cq_bytes_of(NULL, 0));
    if (rc != 0)
        return rc;
    out->id = t.id;
    out->value = t.lease_expires_ms;
    return task_save(c, &t);
}

static int op_settle(ctx *c, int type, const cmd_settle *s, fsm_op_result *out)
{
    task_rec t;
    qentry *q;
    int rc;

    rc = lease_check(c, s->id, s->lease_id, &t, &q);
    if (rc != 0)
        return rc;
    out->id = t.id;
    out->qid = t.qid;
    out->created_ms = t.created_ms;
    out->leased_at_ms = t.leased_at_ms;
    rc = leave_state(c, q, &t);
    if (rc != 0)
        return rc;
    switch (type) {
    case CMD_ACK:
        q->rec.counters.acked_total++;
        rc = deadline_del(c, &t);
        return rc != 0 ? rc : task_delete(c, t.id);
    case CMD_NACK:
        q->rec.counters.nacked_total++;
        push_error(c, &t, s->error);
        return retry_or_dead(c, q, &t, s->delay_ms);
    default: /* CMD_FAIL */
        q->rec.counters.failed_total++;
        push_error(c, &t, s->error);
        rc = enter_dead(c, q, &t, DEAD_FAILED);
        return rc != 0 ? rc : task_save(c, &t);
    }
}

/* The first entry of a time-ordered index (delayed, leases, deadlines) if
 * it is due at c->now: returns 1 with its time and id, 0 when nothing is
 * due. */
static int first_due(ctx *c, store_db db, uint64_t *at, uint64_t *id)
{
    store_cursor *cur;
    cq_bytes k, v;
    int rc;

    rc = store_cursor_open(c->t, db, &cur);
    if (rc != 0)
        return rc;
    rc = store_cursor_seek(cur, cq_bytes_of(NULL, 0), &k, &v);
    if (rc == 0) {
        if (k.len < 8) {
            rc = CLAWQ_ECORRUPT;
        } else if (cq_get_be64(k.ptr) > c->now) {
            rc = 0;
        } else {
            *at = cq_get_be64(k.ptr);
            /* idem_exp keys carry qid + key after the time: copy them. */
            if (db == STORE_DB_IDEM_EXP) {
                c->enc.len = 0;
                rc = cq_buf_append(&c->enc, k.ptr, k.len);
                rc = rc == 0 ? 1 : rc;
            } else if (k.len != KEY_TIME_ID_LEN) {
                rc = CLAWQ_ECORRUPT;
            } else {
                *id = cq_get_be64(k.ptr + 8);
                rc = 1;
            }
        }
    } else if (rc == CLAWQ_ENOT_FOUND) {
        rc = 0;
    }
    store_cursor_close(cur);
    return rc;
}

static int tick_lease(ctx *c, uint64_t at, uint64_t id)
{
    static const char msg[] = "lease expired";
    task_rec t;
    qentry *q;
    int rc;

    rc = task_load(c, id, &t);
    if (rc == 0 && (t.state != TASK_LEASED || t.lease_expires_ms != at))
        rc = CLAWQ_ECORRUPT;
    if (rc == 0)
        rc = queue_by_qid(c, t.qid, &q);
    if (rc == 0)
        rc = leave_state(c, q, &t);
    if (rc != 0)
        return rc == CLAWQ_ENOT_FOUND ? CLAWQ_ECORRUPT : rc;
    q->rec.counters.expired_total++;
    push_error(c, &t, cq_bytes_of(msg, sizeof(msg) - 1));
    return retry_or_dead(c, q, &t, -1);
}

static int tick_deadline(ctx *c, uint64_t at, uint64_t id)
{
    static const char msg[] = "deadline passed";
    task_rec t;
    qentry *q;
    int rc;

    rc = task_load(c, id, &t);
    if (rc == 0 && (t.state == TASK_DEAD || t.deadline_ms != at))
        rc = CLAWQ_ECORRUPT;
    if (rc == 0)
        rc = queue_by_qid(c, t.qid, &q);
    if (rc == 0)
        rc = leave_state(c, q, &t);
    if (rc != 0)
        return rc == CLAWQ_ENOT_FOUND ? CLAWQ_ECORRUPT : rc;
    push_error(c, &t, cq_bytes_of(msg, sizeof(msg) - 1));
    rc = enter_dead(c, q, &t, DEAD_EXPIRED);
    return rc != 0 ? rc : task_save(c, &t);
}

static int tick_delayed(ctx *c, uint64_t at, uint64_t id)
{
    task_rec t;
    qentry *q;
    int rc;

    rc = task_load(c, id, &t);
    if (rc == 0 && (t.state != TASK_DELAYED || t.run_at_ms != at))
        rc = CLAWQ_ECORRUPT;
    if (rc == 0)
        rc = queue_by_qid(c, t.qid, &q);
    if (rc == 0)
        rc = leave_state(c, q, &t);
    if (rc == 0)
        rc = enter_ready(c, q, &t);
    if (rc != 0)
        return rc == CLAWQ_ENOT_FOUND ? CLAWQ_ECORRUPT : rc;
    return task_save(c, &t);
}

/* c->enc holds the idem_exp key: at(8) qid(4) key. */
static int tick_idem(ctx *c, uint64_t at)
{
    uint8_t key[KEY_IDEM_MAX];
    uint8_t exp_key[KEY_IDEM_EXP_MAX];
    size_t exp_len = c->enc.len, klen;
    cq_bytes v;
    int rc;

    if (exp_len < 12 || exp_len > sizeof(exp_key))
        return CLAWQ_ECORRUPT;
    memcpy(exp_key, c->enc.ptr, exp_len);
    klen = exp_len - 8;
    memcpy(key, exp_key + 8, klen);
    rc = index_del(c, STORE_DB_IDEM_EXP, exp_key, exp_len);
    if (rc != 0)
        return rc;
    rc = store_get(c->t, STORE_DB_IDEM, cq_bytes_of(key, klen), &v);
    if (rc == CLAWQ_ENOT_FOUND)
        return CLAWQ_ECORRUPT;
    if (rc != 0)
        return rc;
    if (v.len != IDEM_VAL_LEN)
        return CLAWQ_ECORRUPT;
    if (cq_get_be64(v.ptr + 8) != at)
        return 0; /* renewed since: keep */
    return store_del(c->t, STORE_DB_IDEM, cq_bytes_of(key, klen));
}

static int op_tick(ctx *c, const cmd_tick *k, fsm_op_result *out)
{
    const store_db *kinds = due_dbs;
    uint32_t max = k->max ? k->max : CMD_TICK_DEFAULT, done;
    uint64_t at = 0, id = 0;
    int i, rc;

    for (i = 0; i < 4; i++) {
        for (done = 0;; done++) {
            rc = first_due(c, kinds[i], &at, &id);
            if (rc <= 0)
                break;
            if (done == max) {
                out->more = true;
                rc = 0;
                break;
            }
            switch (kinds[i]) {
            case STORE_DB_LEASES:
                rc = tick_lease(c, at, id);
                break;
            case STORE_DB_DEADLINES:
                rc = tick_deadline(c, at, id);
                break;
            case STORE_DB_DELAYED:
                rc = tick_delayed(c, at, id);
                break;
            default:
                rc = tick_idem(c, at);
                break;
            }
            if (rc != 0)
                break;
            out->value++;
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int op_queue_set(ctx *c, const cmd_queue_set *qs)
{
    const queue_settings *n = &qs->settings;
    queue_settings next;
    qentry *q;
    uint32_t f = qs->fields;
    int rc;

    if (!queue_name_is_valid(qs->queue))
        return fail_detail(c, CLAWQ_EINVALID, "invalid queue name");
    if (((f & QSET_LEASE_MS) &&
         (n->lease_ms == 0 || n->lease_ms > MAX_LEASE_MS)) ||
        ((f & QSET_MAX_ATTEMPTS) && n->max_attempts == 0) ||
        ((f & QSET_BACKOFF_BASE_MS) && n->backoff_base_ms > MAX_LEASE_MS) ||
        ((f & QSET_BACKOFF_MAX_MS) && n->backoff_max_ms > 7 * MAX_LEASE_MS) ||
        ((f & QSET_MAX_PAYLOAD) &&
         (n->max_payload == 0 || n->max_payload > MAX_PAYLOAD_LIMIT)) ||
        ((f & QSET_DEDUP_WINDOW_MS) &&
         n->dedup_window_ms > UINT64_C(7) * 24 * 3600 * 1000))
        return fail_detail(c, CLAWQ_EINVALID, "setting out of range");
    /* Settle the new settings before creating anything: a rejected op
     * changes nothing. */
    rc = queue_get(c, qs->queue, false, &q);
    if (rc != 0)
        return rc;
    if (q != NULL)
        next = q->rec.settings;
    else
        queue_settings_default(&next);
    if (f & QSET_LEASE_MS)
        next.lease_ms = n->lease_ms;
    if (f & QSET_MAX_ATTEMPTS)
        next.max_attempts = n->max_attempts;
    if (f & QSET_BACKOFF_BASE_MS)
        next.backoff_base_ms = n->backoff_base_ms;
    if (f & QSET_BACKOFF_MAX_MS)
        next.backoff_max_ms = n->backoff_max_ms;
    if (f & QSET_MAX_DEPTH)
        next.max_depth = n->max_depth;
    if (f & QSET_MAX_PAYLOAD)
        next.max_payload = n->max_payload;
    if (f & QSET_DEDUP_WINDOW_MS)
        next.dedup_window_ms = n->dedup_window_ms;
    if (next.backoff_max_ms < next.backoff_base_ms)
        return fail_detail(c, CLAWQ_EINVALID,
                           "backoff_max_ms below backoff_base_ms");
    if (q == NULL) {
        rc = queue_get(c, qs->queue, true, &q);
        if (rc != 0)
            return rc;
    }
    q->rec.settings = next;
    q->dirty = true;
    return 0;
}

static int op_pause(ctx *c, const cmd_queue *qo, bool paused)
{
    qentry *q;
    int rc;

    if (!queue_name_is_valid(qo->queue))
        return fail_detail(c, CLAWQ_EINVALID, "invalid queue name");
    rc = queue_get(c, qo->queue, paused, &q);
    if (rc != 0)
        return rc;
    if (q == NULL)
        return fail_detail(c, CLAWQ_ENOT_FOUND, "no such queue");
    q->rec.settings.paused = paused;
    q->dirty = true;
    return 0;
}

static bool error_matches(const task_rec *t, cq_bytes substr)
{
    if (substr.len == 0)
        return true;
    if (t->n_errors == 0)
        return false;
    return memmem(t->errors[0].msg.ptr, t->errors[0].msg.len, substr.ptr,
                  substr.len) != NULL;
}

/* An existing queue by name: CLAWQ_EINVALID for a bad name,
 * CLAWQ_ENOT_FOUND for an unknown one (with the detail set). */
static int queue_existing(ctx *c, cq_bytes name, qentry **q)
{
    int rc;

    if (!queue_name_is_valid(name))
        return fail_detail(c, CLAWQ_EINVALID, "invalid queue name");
    rc = queue_get(c, name, false, q);
    if (rc == 0 && *q == NULL)
        rc = fail_detail(c, CLAWQ_ENOT_FOUND, "no such queue");
    return rc;
}

static int op_dlq(ctx *c, int type, const cmd_dlq *d, fsm_op_result *out)
{
    uint8_t key[KEY_DEAD_LEN];
    uint32_t max = d->max ? d->max : CMD_DLQ_DEFAULT;
    store_cursor *cur;
    cq_bytes k, v;
    task_rec t;
    qentry *q;
    bool skip_equal = false;
    int rc;

    rc = queue_existing(c, d->queue, &q);
    if (rc != 0)
        return rc;
    rc = store_cursor_open(c->t, STORE_DB_DEAD, &cur);
    if (rc != 0)
        return rc;
    key_dead(key, q->rec.qid, d->from_ms, 0);
    while (out->value < max) {
        /* Re-seek after every change: the resume point is the last key. */
        rc = store_cursor_seek(cur, cq_bytes_of(key, sizeof(key)), &k, &v);
        if (rc == 0 && skip_equal && k.len == sizeof(key) &&
            memcmp(k.ptr, key, sizeof(key)) == 0)
            rc = store_cursor_next(cur, &k, &v);
        if (rc == CLAWQ_ENOT_FOUND) {
            rc = 0;
            break;
        }
        if (rc != 0)
            break;
        if (k.len != KEY_DEAD_LEN) {
            rc = CLAWQ_ECORRUPT;
            break;
        }
        if (cq_get_be32(k.ptr) != q->rec.qid ||
            (d->to_ms != 0 && cq_get_be64(k.ptr + 4) >= d->to_ms))
            break;
        memcpy(key, k.ptr, sizeof(key));
        skip_equal = true;
        rc = task_load(c, cq_get_be64(k.ptr + 12), &t);
        if (rc == 0 && t.state != TASK_DEAD)
            rc = CLAWQ_ECORRUPT;
        if (rc != 0) {
            if (rc == CLAWQ_ENOT_FOUND)
                rc = CLAWQ_ECORRUPT;
            break;
        }
        if (!error_matches(&t, d->error_substr))
            continue;
        rc = leave_state(c, q, &t);
        if (rc == 0 && type == CMD_DLQ_REPLAY) {
            t.attempt = 0;
            t.dead_reason = DEAD_NONE;
            t.dead_at_ms = 0;
            rc = enter_ready(c, q, &t);
            if (rc == 0 && t.deadline_ms != 0) {
                uint8_t dkey[KEY_TIME_ID_LEN];
                rc = index_put(c, STORE_DB_DEADLINES, dkey,
                               key_time_id(dkey, t.deadline_ms, t.id),
                               cq_bytes_of(NULL, 0));
            }
            if (rc == 0)
                rc = task_save(c, &t);
        } else if (rc == 0) {
            rc = task_delete(c, t.id);
        }
        if (rc != 0)
            break;
        out->value++;
    }
    store_cursor_close(cur);
    return rc;
}

/* Deletes the task (ready or delayed) and its deadline. */
static int purge_task(ctx *c, qentry *q, task_rec *t)
{
    int rc = leave_state(c, q, t);
    if (rc == 0)
        rc = deadline_del(c, t);
    if (rc == 0)
        rc = task_delete(c, t->id);
    return rc;
}

static int op_queue_purge(ctx *c, const cmd_queue *qo, fsm_op_result *out)
{
    uint8_t key[KEY_TIME_ID_LEN];
    store_cursor *cur;
    cq_bytes k, v;
    task_rec t;
    qentry *q;
    bool skip_equal = false;
    int rc;

    rc = queue_existing(c, qo->queue, &q);
    if (rc != 0)
        return rc;

    /* Ready: always the queue's first entry. */
    rc = store_cursor_open(c->t, STORE_DB_READY, &cur);
    if (rc != 0)
        return rc;
    for (;;) {
        uint64_t id;

        rc = ready_first(cur, q->rec.qid, &id);
        if (rc <= 0)
            break;
        rc = task_load(c, id, &t);
        if (rc == 0)
            rc = purge_task(c, q, &t);
        if (rc != 0)
            break;
        out->value++;
    }
    store_cursor_close(cur);
    if (rc != 0)
        return rc == CLAWQ_ENOT_FOUND ? CLAWQ_ECORRUPT : rc;

    /* Delayed: one index for all queues, so walk it and pick ours. */
    if (q->rec.counters.delayed == 0)
        return 0;
    rc = store_cursor_open(c->t, STORE_DB_DELAYED, &cur);
    if (rc != 0)
        return rc;
    memset(key, 0, sizeof(key));
    for (;;) {
        rc = store_cursor_seek(cur, cq_bytes_of(key, sizeof(key)), &k, &v);
        if (rc == 0 && skip_equal && k.len == sizeof(key) &&
            memcmp(k.ptr, key, sizeof(key)) == 0)
            rc = store_cursor_next(cur, &k, &v);
        if (rc == CLAWQ_ENOT_FOUND) {
            rc = 0;
            break;
        }
        if (rc != 0)
            break;
        if (k.len != KEY_TIME_ID_LEN) {
            rc = CLAWQ_ECORRUPT;
            break;
        }
        memcpy(key, k.ptr, sizeof(key));
        skip_equal = true;
        rc = task_load(c, cq_get_be64(k.ptr + 8), &t);
        if (rc != 0)
            break;
        if (t.qid != q->rec.qid)
            continue;
        rc = purge_task(c, q, &t);
        if (rc != 0)
            break;
        out->value++;
        if (q->rec.counters.delayed == 0)
            break;
    }
    store_cursor_close(cur);
    return rc == CLAWQ_ENOT_FOUND ? CLAWQ_ECORRUPT : rc;
}

/* The leader's worker summary: kept on an existing queue, as is. */
static int op_workers(ctx *c, const cmd_workers *w)
{
    qentry *q;
    int rc = queue_existing(c, w->queue, &q);

    if (rc != 0)
        return rc;
    q->rec.workers.workers = w->workers;
    q->rec.workers.median_capacity = w->median_capacity;
    q->rec.workers.capacity = w->capacity;
    q->rec.workers.inflight = w->inflight;
    q->rec.workers.at_ms = c->now;
    q->dirty = true;
    return 0;
}

/* meta "n" + node id -> client address. */
static size_t member_key(uint8_t *key, uint32_t node_id)
{
    key[0] = 'n';
    cq_put_be32(key + 1, node_id);
    return 5;
}

/* An empty address removes the node's entry (it left the cluster). */
static int op_member(ctx *c, const cmd_member *m)
{
    uint8_t key[5];
    cq_bytes k = cq_bytes_of(key, member_key(key, m->node_id));
    int rc;

    if (m->node_id == 0 || m->client_addr.len > CMD_ADDR_MAX)
        return fail_detail(c, CLAWQ_EINVALID, "invalid member");
    if (m->client_addr.len > 0)
        return store_put(c->t, STORE_DB_META, k, m->client_addr);
    rc = store_del(c->t, STORE_DB_META, k);
    return rc == CLAWQ_ENOT_FOUND ? 0 : rc;
}

static int apply_op(ctx *c, const cmd_op *op, fsm_op_result *out)
{
    switch (op->type) {
    case CMD_PUT:
        return op_put(c, &op->u.put, out);
    case CMD_LEASE:
        return op_lease(c, &op->u.lease, out);
    case CMD_EXTEND:
        return op_extend(c, &op->u.extend, out);
    case CMD_ACK:
    case CMD_NACK:
    case CMD_FAIL:
        return op_settle(c, op->type, &op->u.settle, out);
    case CMD_TICK:
        return op_tick(c, &op->u.tick, out);
    case CMD_QUEUE_SET:
        return op_queue_set(c, &op->u.queue_set);
    case CMD_QUEUE_PAUSE:
    case CMD_QUEUE_RESUME:
        return op_pause(c, &op->u.queue, op->type == CMD_QUEUE_PAUSE);
    case CMD_DLQ_REPLAY:
    case CMD_DLQ_PURGE:
        return op_dlq(c, op->type, &op->u.dlq, out);
    case CMD_QUEUE_PURGE:
        return op_queue_purge(c, &op->u.queue, out);
    case CMD_WORKERS:
        return op_workers(c, &op->u.workers);
    case CMD_MEMBER:
        return op_member(c, &op->u.member);
    default:
        return fail_detail(c, CLAWQ_EINVALID, "unknown op");
    }
}

/* One attempt at applying the batch in one transaction. Returns 0 with the
 * transaction committed, or a store error with it aborted. */
static int apply_once(ctx *c, uint64_t index, const cmd_batch *b)
{
    fsm_result *r = c->res;
    uint64_t applied;
    size_t i;
    int rc;

    fsm_result_reset(r);
    r->index = index;
    r->now_ms = b->now_ms;
    c->now = b->now_ms;
    rc = ctx_begin(c, true);
    if (rc != 0)
        return rc;
    if (store_memo(c->s)[MEMO_VALID])
        applied = store_memo(c->s)[MEMO_APPLIED];
    else if ((rc = store_applied_get(c->t, &applied)) != 0)
        goto abort;
    if (index <= applied) {
        r->skipped = true;
        store_txn_abort(c->t);
        return 0;
    }
    rc = meta_load(c);
    if (rc != 0)
        goto abort;
    due_load(c);
    for (i = 0; i < b->n_ops; i++) {
        size_t tasks_before = r->n_tasks;
        fsm_op_result *out = result_op(r, b->ops[i].type);
        if (out == NULL) {
            rc = CLAWQ_ENOMEM;
            goto abort;
        }
        rc = apply_op(c, &b->ops[i], out);
        if (rc != 0 && !is_op_status(rc))
            goto abort;
        if (rc == OP_SPACE_LOW)
            rc = CLAWQ_ESTORAGE_FULL;
        out->status = rc;
        if (rc != 0) {
            /* A failed op hands out nothing. */
            r->n_tasks = tasks_before;
            out->n_tasks = 0;
        }
    }
    if ((rc = queues_flush(c)) != 0 || (rc = meta_flush(c)) != 0 ||
        (rc = store_applied_set(c->t, index)) != 0)
        goto abort;
    rc = store_txn_commit(c->t);
    if (rc == 0)
        memo_keep(c, index);
    else
        memo_drop(c->s);
    return rc;
abort:
    store_txn_abort(c->t);
    return rc;
}

/* The map is full and cannot grow: record the index alone and fail every
 * op, so the log moves on and nothing half-applied is kept. */
static int apply_storage_full(ctx *c, uint64_t index, const cmd_batch *b)
{
    fsm_result *r = c->res;
    size_t i;
    int rc;

    fsm_result_reset(r);
    r->index = index;
    for (i = 0; i < b->n_ops; i++) {
        fsm_op_result *out = result_op(r, b->ops[i].type);
        if (out == NULL)
            return CLAWQ_ENOMEM;
        out->status = CLAWQ_ESTORAGE_FULL;
    }
    snprintf(r->detail, sizeof(r->detail),
             "storage full: the LMDB map is at its maximum of %zu bytes",
             store_map_size(c->s));
    rc = store_txn_begin(c->s, true, &c->t);
    if (rc != 0)
        return rc;
    memo_drop(c->s);
    rc = store_applied_set(c->t, index);
    if (rc != 0) {
        store_txn_abort(c->t);
        return rc;
    }
    return store_txn_commit(c->t);
}

int fsm_apply(store *s, uint64_t index, const void *buf, size_t len,
              fsm_result *res)
{
    cmd_batch *b;
    ctx c;
    int rc;

    if (index == 0)
        return CLAWQ_EINVALID;
    rc = cmd_decode(buf, len, &b);
    if (rc != 0)
        return rc;
    ctx_init(&c, s, res);
    rc = store_space_is_low(s, &c.space_low);
    for (; rc == 0;) {
        rc = apply_once(&c, index, b);
        if (rc != CLAWQ_ESTORAGE_FULL)
            break;
        rc = store_map_grow(s);
        if (rc == CLAWQ_ESTORAGE_FULL) {
            rc = apply_storage_full(&c, index, b);
            break;
        }
    }
    ctx_fini(&c);
    cmd_batch_free(b);
    return rc;
}

/* ---- reads ---- */

static int read_begin(ctx *c, store *s, fsm_result *res)
{
    ctx_init(c, s, res);
    if (res != NULL)
        fsm_result_reset(res);
    return ctx_begin(c, false);
}

static void read_end(ctx *c)
{
    store_txn_abort(c->t);
    ctx_fini(c);
}

static void stats_fill(const qentry *q, fsm_queue_stats *out)
{
    memset(out, 0, sizeof(*out));
    memcpy(out->name, q->name, q->name_len);
    out->rec = q->rec;
}

int fsm_queue_stats_get(store *s, cq_bytes queue, fsm_queue_stats *out)
{
    qentry *q;
    ctx c;
    int rc;

    if (!queue_name_is_valid(queue))
        return CLAWQ_EINVALID;
    rc = read_begin(&c, s, NULL);
    if (rc != 0) {
        ctx_fini(&c);
        return rc;
    }
    rc = queue_get(&c, queue, false, &q);
    if (rc == 0 && q == NULL)
        rc = CLAWQ_ENOT_FOUND;
    if (rc == 0)
        stats_fill(q, out);
    read_end(&c);
    return rc;
}

int fsm_queue_list(store *s, fsm_queue_stats **out, size_t *n)
{
    fsm_queue_stats *list = NULL, *p;
    store_cursor *cur = NULL;
    size_t count = 0, cap = 0;
    cq_bytes k, v;
    qentry q;
    ctx c;
    int rc;

    rc = read_begin(&c, s, NULL);
    if (rc == 0)
        rc = store_cursor_open(c.t, STORE_DB_QUEUES, &cur);
    if (rc == 0)
        rc = store_cursor_seek(cur, cq_bytes_of(NULL, 0), &k, &v);
    while (rc == 0) {
        if (k.len == 0 || k.len > QUEUE_NAME_MAX) {
            rc = CLAWQ_ECORRUPT;
            break;
        }
        memset(&q, 0, sizeof(q));
        memcpy(q.name, k.ptr, k.len);
        q.name_len = k.len;
        rc = queue_rec_decode(v.ptr, v.len, &q.rec);
        if (rc != 0)
            break;
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            p = realloc(list, cap * sizeof(*p));
            if (p == NULL) {
                rc = CLAWQ_ENOMEM;
                break;
            }
            list = p;
        }
        stats_fill(&q, &list[count++]);
        rc = store_cursor_next(cur, &k, &v);
    }
    if (rc == CLAWQ_ENOT_FOUND)
        rc = 0;
    store_cursor_close(cur);
    if (c.t != NULL)
        read_end(&c);
    else
        ctx_fini(&c);
    if (rc != 0) {
        free(list);
        return rc;
    }
    *out = list;
    *n = count;
    return 0;
}

/* Walks a database from `start`, handing each entry's task id to the
 * result when `want` accepts the task. */
static int peek_walk(ctx *c, qentry *q, store_db db, cq_bytes start, size_t max,
                     int state)
{
    store_cursor *cur;
    cq_bytes k, v;
    task_rec t;
    uint64_t id;
    int rc;

    rc = store_cursor_open(c->t, db, &cur);
    if (rc != 0)
        return rc;
    for (rc = store_cursor_seek(cur, start, &k, &v);
         rc == 0 && c->res->n_tasks < max;
         rc = store_cursor_next(cur, &k, &v)) {
        if (db == STORE_DB_READY) {
            if (k.len != KEY_READY_LEN || v.len != READY_VAL_LEN)
                break;
            if (cq_get_be32(k.ptr) != q->rec.qid)
                break;
            id = cq_get_be64(v.ptr);
        } else if (db == STORE_DB_DEAD) {
            if (k.len != KEY_DEAD_LEN || cq_get_be32(k.ptr) != q->rec.qid)
                break;
            id = cq_get_be64(k.ptr + 12);
        } else {
            if (k.len != KEY_TIME_ID_LEN)
                break;
            id = cq_get_be64(k.ptr + 8);
        }
        rc = task_load(c, id, &t);
        if (rc != 0)
            break;
        if (t.qid != q->rec.qid || t.state != state)
            continue;
        rc = result_add_task(c, q, &t);
        if (rc != 0)
            break;
    }
    store_cursor_close(cur);
    return rc == CLAWQ_ENOT_FOUND ? 0 : rc;
}

int fsm_peek(store *s, cq_bytes queue, int state, size_t max, fsm_result *res)
{
    uint8_t key[KEY_DEAD_LEN];
    size_t len = 0;
    store_db db;
    qentry *q;
    ctx c;
    int rc;

    switch (state) {
    case TASK_READY:
        db = STORE_DB_READY;
        len = key_ready(key, 0, 0, 0);
        break;
    case TASK_DELAYED:
        db = STORE_DB_DELAYED;
        break;
    case TASK_LEASED:
        db = STORE_DB_LEASES;
        break;
    case TASK_DEAD:
        db = STORE_DB_DEAD;
        len = key_dead(key, 0, 0, 0);
        break;
    default:
        return CLAWQ_EINVALID;
    }
    if (!queue_name_is_valid(queue))
        return CLAWQ_EINVALID;
    rc = read_begin(&c, s, res);
    if (rc != 0) {
        ctx_fini(&c);
        return rc;
    }
    rc = queue_get(&c, queue, false, &q);
    if (rc == 0 && q == NULL)
        rc = CLAWQ_ENOT_FOUND;
    if (rc == 0) {
        if (len > 0)
            cq_put_be32(key, q->rec.qid);
        rc = peek_walk(&c, q, db, cq_bytes_of(key, len), max, state);
    }
    read_end(&c);
    return rc;
}

int fsm_dlq_list(store *s, const cmd_dlq *f, uint64_t after_ms,
                 uint64_t after_id, fsm_result *res)
{
    uint8_t key[KEY_DEAD_LEN];
    uint32_t max = f->max ? f->max : CMD_DLQ_DEFAULT;
    store_cursor *cur = NULL;
    cq_bytes k, v;
    task_rec t;
    qentry *q;
    ctx c;
    int rc;

    if (!queue_name_is_valid(f->queue))
        return CLAWQ_EINVALID;
    rc = read_begin(&c, s, res);
    if (rc != 0) {
        ctx_fini(&c);
        return rc;
    }
    rc = queue_get(&c, f->queue, false, &q);
    if (rc == 0 && q == NULL)
        rc = CLAWQ_ENOT_FOUND;
    if (rc == 0)
        rc = store_cursor_open(c.t, STORE_DB_DEAD, &cur);
    if (rc == 0) {
        bool resume = after_ms != 0 || after_id != 0;
        uint64_t from = resume && after_ms > f->from_ms ? after_ms : f->from_ms;
        key_dead(key, q->rec.qid, from, resume ? after_id : 0);
        rc = store_cursor_seek(cur, cq_bytes_of(key, sizeof(key)), &k, &v);
        if (rc == 0 && resume && k.len == sizeof(key) &&
            memcmp(k.ptr, key, sizeof(key)) == 0)
            rc = store_cursor_next(cur, &k, &v);
    }
    while (rc == 0 && res->n_tasks < max) {
        if (k.len != KEY_DEAD_LEN || cq_get_be32(k.ptr) != q->rec.qid ||
            (f->to_ms != 0 && cq_get_be64(k.ptr + 4) >= f->to_ms))
            break;
        rc = task_load(&c, cq_get_be64(k.ptr + 12), &t);
        if (rc != 0)
            break;
        if (error_matches(&t, f->error_substr)) {
            rc = result_add_task(&c, q, &t);
            if (rc != 0)
                break;
        }
        rc = store_cursor_next(cur, &k, &v);
    }
    if (rc == CLAWQ_ENOT_FOUND)
        rc = 0;
    store_cursor_close(cur);
    read_end(&c);
    return rc;
}

int fsm_task_get(store *s, uint64_t id, fsm_result *res)
{
    task_rec t;
    qentry *q;
    ctx c;
    int rc;

    rc = read_begin(&c, s, res);
    if (rc != 0) {
        ctx_fini(&c);
        return rc;
    }
    rc = task_load(&c, id, &t);
    if (rc == 0)
        rc = queue_by_qid(&c, t.qid, &q);
    if (rc == 0)
        rc = result_add_task(&c, q, &t);
    read_end(&c);
    return rc;
}

int fsm_next_due(store *s, uint64_t *due_ms)
{
    uint64_t *m = store_memo(s);
    unsigned known = (unsigned)m[MEMO_DUE_KNOWN];
    store_cursor *cur;
    cq_bytes k, v;
    uint64_t due = 0, at;
    ctx c;
    int i, rc = 0;

    if ((known & 0xfu) != 0xfu) {
        /* Seek the indexes the memo does not know; the store holds no
         * write transaction here, so what this reads is committed. */
        rc = read_begin(&c, s, NULL);
        if (rc != 0) {
            ctx_fini(&c);
            return rc;
        }
        for (i = 0; i < 4 && rc == 0; i++) {
            if (known & (1u << i))
                continue;
            rc = store_cursor_open(c.t, due_dbs[i], &cur);
            if (rc != 0)
                break;
            rc = store_cursor_seek(cur, cq_bytes_of(NULL, 0), &k, &v);
            if (rc == CLAWQ_ENOT_FOUND) {
                m[MEMO_DUE + i] = 0;
                known |= 1u << i;
                rc = 0;
            } else if (rc == 0 && k.len >= 8 && cq_get_be64(k.ptr) != 0) {
                m[MEMO_DUE + i] = cq_get_be64(k.ptr);
                known |= 1u << i;
            }
            store_cursor_close(cur);
        }
        read_end(&c);
        m[MEMO_DUE_KNOWN] = known;
    }
    for (i = 0; i < 4; i++) {
        at = (known & (1u << i)) ? m[MEMO_DUE + i] : 0;
        if (at != 0 && (due == 0 || at < due))
            due = at;
    }
    if (rc == 0)
        *due_ms = due;
    return rc;
}

int fsm_member_addr(store *s, uint32_t node_id, char *buf, size_t len)
{
    uint8_t key[5];
    cq_bytes v;
    ctx c;
    int rc;

    rc = read_begin(&c, s, NULL);
    if (rc != 0) {
        ctx_fini(&c);
        return rc;
    }
    rc = store_get(c.t, STORE_DB_META,
                   cq_bytes_of(key, member_key(key, node_id)), &v);
    if (rc == 0 && v.len >= len)
        rc = CLAWQ_ETOO_LARGE;
    if (rc == 0) {
        memcpy(buf, v.ptr, v.len);
        buf[v.len] = '\0';
    }
    read_end(&c);
    return rc;
}
