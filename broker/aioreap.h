/* aioreap.h: libraft's kernel AIO contexts are destroyed on a thread of
 * ours instead of on the event loop.
 *
 * Why: libraft 0.22.1 gives every open log segment its own kernel AIO
 * context and destroys it with io_destroy(2), on the loop, when it moves
 * to the next segment and when a snapshot closes the open one. The kernel
 * makes io_destroy wait for an RCU grace period: `perf trace` on clawqd
 * measured 30-52 ms each, during which the broker answers nobody
 * (docs/BENCHMARKS.md).
 *
 * How: clawqd defines syscall(), which the dynamic linker binds libraft's
 * (and libuv's) calls to. Every call goes on to libc's syscall() with its
 * arguments unchanged, except io_destroy: its context is queued for a
 * reaper thread, and the call returns 0 at once. libraft has finished
 * every request on the context by then (it closes a writer only when
 * idle), so nothing can use the context in between. When the queue is
 * full or the thread cannot be started, io_destroy runs in place, as
 * before.
 *
 * The definition takes seven integer arguments, which is what libc's own
 * syscall() reads on x86-64 and aarch64 (the number, then six argument
 * registers or stack slots), so a variadic caller is served exactly as by
 * libc.
 *
 * Threads: syscall() may be called from any thread; the counters are
 * atomic.
 */
#ifndef CLAWQ_AIOREAP_H
#define CLAWQ_AIOREAP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct aioreap_stats {
    uint64_t queued;    /* io_destroy calls handed to the reaper */
    uint64_t destroyed; /* of those, contexts the reaper has destroyed */
    uint64_t inline_;   /* io_destroy calls run in place (queue full) */
} aioreap_stats;

/* Whether io_destroy is handed to the reaper (default on). */
void aioreap_set_enabled(bool on);

void aioreap_get_stats(aioreap_stats *out);

#endif /* CLAWQ_AIOREAP_H */
