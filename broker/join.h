/* join.h: a node's own membership errands, done as a client of the
 * leader (through libclawq, on a libuv worker thread so the loop never
 * blocks):
 *
 *   - join: a node started with --join on a fresh data directory asks the
 *     cluster (any of the --join addresses; libclawq follows the leader)
 *     to add it. The leader adds it as a non-voter and promotes it once it
 *     has caught up. Retried until it succeeds.
 *   - register: a follower whose client address is missing from the
 *     replicated member table (the voters of a --cluster bootstrap, a node
 *     restarted on another address) asks the leader to record it, so that
 *     every member can send clients to every other.
 *
 * A leader records its own address itself (main.c). One errand runs at a
 * time; failures are retried with a growing pause (0.5 s .. 8 s).
 */
#ifndef CLAWQ_JOIN_H
#define CLAWQ_JOIN_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "repl.h"
#include "store.h"

typedef struct joiner joiner;

typedef struct join_opts {
    uint32_t node_id;
    const char *raft_addr;   /* this node's */
    const char *client_addr; /* this node's --listen */
    const char *join;        /* --join list; "" = none */
} join_opts;

/* Starts the errand timer. Whether to join is decided now: only when
 * o->join is set and this node is in no configuration yet (a fresh data
 * directory). The strings are copied. */
int joiner_start(uv_loop_t *loop, store *s, repl *r, const join_opts *o,
                 joiner **out);

/* Stops the errands. A request in flight on the worker thread finishes
 * (bounded by its timeout, 5 s) before the loop can end; its result is
 * dropped. Frees j then. */
void joiner_close(joiner *j);

#endif /* CLAWQ_JOIN_H */
