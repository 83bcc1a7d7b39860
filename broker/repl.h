/* repl.h: the Raft side of one node. The only module that includes raft.h.
 *
 * Owns the libraft instance with its uv I/O backend and TCP transport, the
 * FSM callbacks (apply = fsm_apply; snapshot / restore = the store's
 * snapshot functions) and the batching of proposals: every op submitted
 * during one loop turn goes into one command (one log entry), proposed
 * from a uv_check handle after the loop's I/O phase.
 *
 * A submission's callback fires exactly once, after its command was
 * committed and applied (status 0 with the op results), or when the
 * outcome is known to be a failure or unknown (status != 0). It runs on
 * the loop, possibly from inside libraft's own processing: it may call
 * repl_submit (which only buffers) but nothing else of this module.
 *
 * A single node is a one-voter cluster bootstrapped on first start.
 */
#ifndef CLAWQ_REPL_H
#define CLAWQ_REPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cmd.h"
#include "fsm.h"
#include "store.h"

typedef struct repl repl;

/* status 0: res->ops[first_op .. first_op + n_ops) are the results of the
 * submitted ops, in order (tasks they reference are in res->tasks); valid
 * only during the call. Otherwise: CLAWQ_ENOT_LEADER (nothing was
 * proposed), CLAWQ_EUNAVAILABLE (leadership lost: the command may or may
 * not have been applied), CLAWQ_ESHUTTING_DOWN. */
typedef void (*repl_cb)(void *arg, int status, const fsm_result *res,
                        size_t first_op, size_t n_ops);

#define REPL_MAX_MEMBERS 9
/* A restart replays the log after the last snapshot: keep it short. */
#define REPL_SNAPSHOT_MAX_ENTRIES (1u << 16)

typedef struct repl_member {
    uint32_t id;
    char raft_addr[64];
} repl_member;

typedef struct repl_opts {
    uint32_t node_id;
    const char *raft_addr; /* host:port this node's Raft listens on */
    const char *dir;       /* data directory: raft segments + LMDB */
    unsigned election_ms;
    unsigned heartbeat_ms;
    unsigned snapshot_threshold; /* entries between snapshots, at least */
    unsigned snapshot_trailing;
    /* Bytes of one log segment file (rounded up to 4 KiB); 0 = libraft's
     * default (8 MiB). 4 to 20 MiB: libraft 0.22 refuses proposals while
     * its free log space (the prepared segments and the rest of the open
     * one) is under 4 MiB, and reports that space in KiB in an unsigned
     * short, where a wrapped value reads as a full disk. */
    size_t segment_size;
    /* Log bytes between snapshots: the threshold follows the average
     * entry size up to this (at most REPL_SNAPSHOT_MAX_ENTRIES); 0 = off. */
    uint64_t snapshot_log_size;
    /* The voters a fresh directory is bootstrapped with (this node among
     * them); none = this node alone. */
    const repl_member *members;
    size_t n_members;
    /* A fresh directory is not bootstrapped: the node waits to be added
     * to an existing cluster (--join). */
    bool no_bootstrap;
} repl_opts;

typedef struct repl_hooks {
    void *arg;
    /* Entries were applied in this loop turn (leader or follower). */
    void (*applied)(void *arg);
    /* This node became leader (after a barrier: everything committed is
     * applied) or stopped being leader. */
    void (*role_changed)(void *arg, bool leader);
} repl_hooks;

typedef struct repl_info {
    const char *state; /* "leader", "follower", "candidate", "unavailable" */
    bool leader;
    uint32_t leader_id; /* 0 = unknown */
    uint64_t term;
    uint64_t commit_index;
    uint64_t applied_index;
    uint64_t last_index;
    uint64_t entries_proposed;
    uint64_t snapshots_taken;
    uint64_t last_snapshot_ms; /* how long the loop waited for the last
                                  snapshot's serialisation (a worker thread
                                  does it; the loop waits only to grow the
                                  map or to close) */
    uint64_t last_snapshot_serialize_ms; /* the worker's copy of the store
                                            for the last snapshot */
    uint64_t messages_held;    /* held behind a local snapshot write (the
                                  0.22.1 InstallSnapshot workaround) */
    uint64_t installs_dropped; /* InstallSnapshot resends dropped while one
                                  was being installed (0.22.1 leaks them) */
    uint64_t stale_commits;    /* AppendEntries whose leader commit would
                                  have moved the commit index back */
    uint64_t installs_unsent;  /* InstallSnapshot not sent: the node was
                                  removed while the snapshot loaded */
} repl_info;

/* Starts Raft on `loop` over store `s`: bootstraps a one-voter cluster in a
 * fresh directory, or restarts from it (snapshot restore, then replay of
 * the log, which fsm_apply skips up to the store's applied index). */
int repl_start(uv_loop_t *loop, store *s, const repl_opts *o,
               const repl_hooks *h, repl **out);

/* Buffers ops for this loop turn's command. While no leader is known
 * (starting, electing) the command is held for up to 4 election timeouts
 * + 500 ms, then fails with CLAWQ_EUNAVAILABLE. Returns 0 (cb will fire),
 * or CLAWQ_ENOT_LEADER (another node leads) / CLAWQ_ESHUTTING_DOWN /
 * CLAWQ_ETOO_LARGE / CLAWQ_ENOMEM at once (cb will not fire). */
int repl_submit(repl *r, const cmd_op *ops, size_t n, repl_cb cb, void *arg);

/* The leader's id (0 = none known). */
uint32_t repl_leader_id(repl *r);

/* Leader and caught up (the barrier of its term applied): serves reads
 * and runs the scheduler. */
bool repl_is_leader(repl *r);
/* Submissions are not refused at once: this node leads, or no node is
 * known to. */
bool repl_accepts_writes(repl *r);
/* Submissions of this loop turn wait to be proposed: one more rides in
 * their log entry, at no extra write. */
bool repl_batch_open(const repl *r);
void repl_get_info(repl *r, repl_info *out);

/* The leader's clock for commands: wall-clock ms, never below the now_ms
 * of any applied command. */
uint64_t repl_now_ms(repl *r);

/* Hands leadership to voter `to` (0: the most up-to-date voter), e.g.
 * before a graceful stop. Returns 0 and calls done(arg, moved) once
 * (moved: another node leads now), or an error at once when there is
 * nothing to do (not the leader, no other voter, `to` is no voter, a
 * transfer is under way): then done is not called. */
int repl_transfer(repl *r, uint32_t to, void (*done)(void *arg, bool moved),
                  void *arg);

/* ---- membership ---- */

typedef enum repl_role {
    REPL_VOTER,
    REPL_STANDBY, /* replicates the log, does not vote */
    REPL_SPARE    /* neither */
} repl_role;

typedef struct repl_member_info {
    uint32_t id;
    char raft_addr[64];
    repl_role role;
    uint64_t match_index; /* leader only: the last entry it has; else 0 */
} repl_member_info;

/* Copies the current configuration (committed or not) into out[0..max):
 * returns the number of members. *leader_view is set when this node leads
 * and the match indexes are its followers' (its own is its last index). */
size_t repl_members(repl *r, repl_member_info *out, size_t max,
                    bool *leader_view);

/* done(arg, 0) once the change is committed; else a clawq error:
 * CLAWQ_EUNAVAILABLE (leadership lost, catch-up failed: the outcome may
 * be unknown), CLAWQ_ESHUTTING_DOWN. */
typedef void (*repl_change_cb)(void *arg, int status);

/* Adds node id at raft_addr as a spare, then promotes it to voter; libraft
 * replicates the log (or a snapshot) to it first and appends the
 * promotion only once it has caught up. A node already in the
 * configuration with the same address is only promoted (nothing to do for
 * a voter). existing_only: change nothing, only check that id is a
 * member at raft_addr (CLAWQ_ENOT_FOUND otherwise). One change at a time.
 * Leader only. Callable from a submission callback: the raft calls happen in
 * the check handle. Returns 0 (done will fire), or at once: CLAWQ_ENOT_LEADER,
 * CLAWQ_EUNAVAILABLE (another change is under way), CLAWQ_EINVALID (id or
 * address used by another member), CLAWQ_ESHUTTING_DOWN. */
int repl_add(repl *r, uint32_t id, const char *raft_addr, bool existing_only,
             repl_change_cb done, void *arg);

/* Removes node id from the configuration. As repl_add; CLAWQ_ENOT_FOUND
 * when it is no member, CLAWQ_EINVALID for this node itself. */
int repl_remove(repl *r, uint32_t id, repl_change_cb done, void *arg);

/* Stops Raft. Pending submissions fail with CLAWQ_ESHUTTING_DOWN; `done`
 * runs once every handle is closed. The store stays open (the caller
 * closes it after done). */
void repl_close(repl *r, void (*done)(void *arg), void *arg);

#endif /* CLAWQ_REPL_H */
