/* store.h: the LMDB environment of one node, and nothing about tasks.
 *
 * The store owns the LMDB environment, its named databases, map growth,
 * the schema version and last applied Raft index in `meta`, and snapshot
 * and restore of the whole environment. It is the only module that includes
 * lmdb.h; LMDB's error codes are translated here into clawq_err codes
 * (MDB_NOTFOUND -> CLAWQ_ENOT_FOUND, MDB_MAP_FULL -> CLAWQ_ESTORAGE_FULL,
 * corruption -> CLAWQ_ECORRUPT, anything else -> CLAWQ_EIO).
 *
 * Threading: store_txn and store_cursor calls come from one thread (the
 * loop): closed read transactions and cursors are kept for the next read
 * to renew. Read transactions are not tied to a thread (MDB_NOTLS), so a
 * snapshot pinned on the loop may be serialised on a worker thread.
 *
 * Memory: values returned by store_get and cursors point into the map and
 * are valid until the transaction ends or the next write in it.
 */
#ifndef CLAWQ_STORE_H
#define CLAWQ_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* The on-disk format version, kept in meta under "schema". To change the
 * format: bump it, teach store_open to migrate from the previous value in
 * one write transaction, and add a test that opens a store written by the
 * old version. A store with an unknown version refuses to open. */
#define STORE_SCHEMA_VERSION 1

typedef enum store_db {
    STORE_DB_TASKS,     /* id -> task record */
    STORE_DB_READY,     /* qid, priority, seq -> id, ready_at */
    STORE_DB_DELAYED,   /* run_at, id -> "" */
    STORE_DB_LEASES,    /* expires_at, id -> "" */
    STORE_DB_DEAD,      /* qid, dead_at, id -> "" */
    STORE_DB_IDEM,      /* qid, key -> id, expires_at */
    STORE_DB_QUEUES,    /* name -> queue record */
    STORE_DB_META,      /* name -> value */
    STORE_DB_DEADLINES, /* deadline, id -> "" */
    STORE_DB_IDEM_EXP,  /* expires_at, qid, key -> "" */
    STORE_DB_COUNT
} store_db;

typedef struct store store;
typedef struct store_txn store_txn;
typedef struct store_cursor store_cursor;
typedef struct store_snap store_snap;

typedef struct store_opts {
    size_t map_size; /* initial map size in bytes; 0 = 64 MiB */
    size_t map_max;  /* the map never grows past this; 0 = 64 GiB */
    bool nosync;     /* MDB_NOSYNC: commits are not fsynced (log-backed) */
    bool writemap;   /* MDB_WRITEMAP: commits write into the map directly
                        instead of copying pages through write(2); the data
                        file is sized to the map (sparse). Survives a killed
                        process like the default; with nosync, a power loss
                        is covered by the Raft log, not by LMDB. */
    bool memory;     /* the environment lives in memory (memfds), is never
                        written to a disk and is gone after store_close:
                        the owner rebuilds it from its Raft snapshot and
                        log. `dir` then only hosts two symlinks while
                        store_open runs. */
} store_opts;

/* Opens (creating if needed) the environment in directory `dir`, which
 * must exist. Returns 0 and a store in *out, CLAWQ_ECORRUPT when the
 * schema version is unknown, CLAWQ_EIO otherwise, with a log line that
 * names the cause. */
int store_open(const char *dir, const store_opts *opts, store **out);

/* Closes the environment. No transaction may be open. NULL is a no-op. */
void store_close(store *s);

/* The current map size in bytes. */
size_t store_map_size(const store *s);

/* Doubles the map (capped at map_max). No transaction may be open.
 * Returns 0, CLAWQ_ESTORAGE_FULL when the map is at map_max already, or
 * CLAWQ_EUNAVAILABLE while a snapshot is pinned (remapping would pull the
 * map from under its reader; retry after store_snapshot_end). */
int store_map_grow(store *s);

/* Whether free space, counting the pages LMDB will reuse, is below the
 * reserve (1/16 of map_max) kept so that acks, fails and purges (which
 * need pages too: LMDB copies on write) can still drain a full store. */
int store_space_is_low(store *s, bool *low);

/* Begins a transaction; at most one write transaction at a time. */
int store_txn_begin(store *s, bool write, store_txn **out);
/* Commits and frees the transaction, also on failure. */
int store_txn_commit(store_txn *t);
/* Aborts and frees the transaction. NULL is a no-op. */
void store_txn_abort(store_txn *t);

/* Point operations. get/del return CLAWQ_ENOT_FOUND when the key is
 * absent; put returns CLAWQ_ESTORAGE_FULL when the map is full, after which
 * the transaction can only be aborted. */
int store_get(store_txn *t, store_db db, cq_bytes key, cq_bytes *val);
int store_put(store_txn *t, store_db db, cq_bytes key, cq_bytes val);
int store_del(store_txn *t, store_db db, cq_bytes key);

/* Cursors, closed before their transaction ends. seek positions at the
 * first key >= `key` (the first key overall when key.len is 0), next at the
 * following one; both return CLAWQ_ENOT_FOUND past the end. del deletes the
 * current entry; the following next returns the entry after it. */
int store_cursor_open(store_txn *t, store_db db, store_cursor **out);
void store_cursor_close(store_cursor *c);
int store_cursor_seek(store_cursor *c, cq_bytes key, cq_bytes *k, cq_bytes *v);
int store_cursor_next(store_cursor *c, cq_bytes *k, cq_bytes *v);
int store_cursor_del(store_cursor *c);

/* Number of entries in a database. */
int store_db_count(store_txn *t, store_db db, uint64_t *out);

/* The last applied Raft index kept in meta (0 for a new store). */
int store_applied_get(store_txn *t, uint64_t *index);
int store_applied_set(store_txn *t, uint64_t index);

/* Room for a few committed values a caller keeps beside the store so as
 * not to read them back in every transaction (the state machine's
 * counters). The store zeroes it when it opens and whenever its contents
 * change other than through the caller's own write transactions (a
 * restore); keeping it true across those is the caller's business. */
#define STORE_MEMO_WORDS 16
uint64_t *store_memo(store *s);

/* Snapshots, shaped for libraft (NOTES-RAFT.md):
 * - begin pins a read transaction at the current applied index (cheap,
 *   call it on the loop);
 * - serialize writes every key/value pair of every database plus that
 *   index into one buffer allocated with `alloc` (NULL = realloc/free) and
 *   owned by the caller; it touches only the pinned transaction, so it may
 *   run on another thread;
 * - end releases the pin. NULL is a no-op. */
int store_snapshot_begin(store *s, store_snap **out);
uint64_t store_snapshot_index(const store_snap *snap);
typedef struct store_alloc {
    void *(*realloc_fn)(void *, size_t);
    void (*free_fn)(void *);
} store_alloc;
int store_snapshot_serialize(store_snap *snap, const store_alloc *alloc,
                             void **buf, size_t *len);
void store_snapshot_end(store_snap *snap);

/* Restores a serialized snapshot. The whole buffer is validated first
 * (CLAWQ_ECORRUPT, store unchanged). When the snapshot's index is at or
 * below the store's applied index the store is kept and *replaced is
 * false; otherwise every database is replaced by the snapshot's contents in
 * one write transaction and *replaced is true. The buffer stays the
 * caller's. */
int store_restore(store *s, const void *buf, size_t len, bool *replaced);

/* A 64-bit digest (FNV-1a) over every key and value of every database, in
 * order. Replicas that applied the same commands have equal digests; tests
 * and the cluster checker compare them. */
int store_digest(store *s, uint64_t *digest);

#endif /* CLAWQ_STORE_H */
