/* scheduler.h (module sched): time-driven work on the leader.
 *
 * Owns one timer that proposes a `tick` command when the earliest due time
 * of the store passes (a delayed task due, a lease or deadline running
 * out, an idempotency key expiring) — no polling: an idle broker arms no
 * timer at all — and the long-poll waiters: pullers that found nothing,
 * kept FIFO per queue and woken when the queue has ready tasks after an
 * apply, or when their wait runs out (one timer over a heap of deadlines).
 */
#ifndef CLAWQ_SCHED_H
#define CLAWQ_SCHED_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "repl.h"
#include "store.h"

typedef struct sched sched;
typedef struct sched_waiter sched_waiter;

/* Called once per wait: timed_out false when the waiter should try again
 * (the queue has ready tasks, or this node lost leadership: the retry is
 * refused with the new leader's address and the client follows it), true
 * when the wait ran out or the scheduler closes. The waiter is no longer
 * registered when this runs. */
typedef void (*sched_wake_cb)(sched_waiter *w, bool timed_out);

/* Embedded in the caller's request; the caller keeps it alive while it is
 * registered (sched_cancel before freeing). */
struct sched_waiter {
    sched_wake_cb wake;
    /* private */
    struct sched_wq *wq;
    sched_waiter *prev, *next;
    uint64_t deadline; /* uv_now() ms */
    size_t heap_index;
    bool registered;
};

int sched_new(uv_loop_t *loop, store *s, repl *r, sched **out);

/* Registers a waiter on `queue` for up to wait_ms, at the back of the
 * queue's line, or at the front when it was just woken and lost the race
 * for the tasks. Returns 0 or CLAWQ_ENOMEM. */
int sched_wait(sched *sc, cq_bytes queue, sched_waiter *w, uint64_t wait_ms,
               bool front, sched_wake_cb wake);

/* Unregisters a waiter without calling it. A no-op if not registered. */
void sched_cancel(sched *sc, sched_waiter *w);

/* On the leader: wakes up to n waiters of queue now (FIFO), because tasks
 * for them were just submitted in this loop turn. Their leases are then
 * submitted in the same turn, so they go into the same log entry as the
 * put and share its fsync, instead of waiting for the put's apply and
 * costing an entry of their own. A waiter that finds nothing lines up
 * again at the front. */
void sched_kick(sched *sc, cq_bytes queue, size_t n);

/* repl hooks: entries were applied; leadership changed. */
void sched_on_applied(sched *sc);
void sched_on_role(sched *sc, bool leader);

/* Number of registered waiters (for metrics and tests). */
size_t sched_waiting(const sched *sc);

/* Wakes every waiter with timed_out, stops and closes the timers. `done`
 * runs when the handles are closed; then the sched is freed. */
void sched_close(sched *sc, void (*done)(void *arg), void *arg);

#endif /* CLAWQ_SCHED_H */
