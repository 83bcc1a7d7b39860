/* logzero.h: the Raft log's preallocated segments, filled with written
 * zeros, so that every log write is an overwrite the kernel can do
 * without blocking.
 *
 * Why: libraft 0.22.1's uv backend preallocates each open segment with
 * posix_fallocate (unwritten extents on ext4 and xfs) and writes entries
 * with direct I/O, first as a non-blocking kernel AIO (RWF_NOWAIT |
 * RWF_DSYNC). Every write rewrites the last, partly filled block of the
 * previous one, so it spans written and unwritten blocks, which the kernel
 * refuses under RWF_NOWAIT (EAGAIN). libraft then runs the write again on
 * its thread pool: a failed submission, a loop turn to see the failure, a
 * thread hand-off each way. Measured on ext4 (docs/BENCHMARKS.md): 1.3 ms
 * from proposal to apply instead of 0.7 ms.
 *
 * How: clawqd defines posix_fallocate, which the dynamic linker binds
 * libraft's calls to (a symbol of the executable comes before libc's).
 * It calls libc's posix_fallocate, then, for a file inside the directory
 * given to logzero_enable, writes zeros over the allocated range with
 * direct I/O and fdatasync()s them, before libraft writes its first entry
 * there. The fdatasync is what keeps a write durable: a later RWF_DSYNC
 * overwrite flushes data only, so the extents must already be recorded as
 * written. Files elsewhere, and file systems without direct I/O (tmpfs
 * before Linux 6.6, some FUSE), get libc's behaviour alone.
 *
 * Cost: one sequential write of each segment (--raft-segment-size), in
 * 256 KiB direct writes, on libraft's thread pool, when the segment is
 * prepared (ahead of use).
 *
 * Threads: posix_fallocate runs on libuv's thread pool. logzero_enable is
 * called once, before Raft starts; the counters are atomic.
 */
#ifndef CLAWQ_LOGZERO_H
#define CLAWQ_LOGZERO_H

#include <stdint.h>

/* Zero-fills what posix_fallocate allocates in files under dir (made
 * absolute; its symbolic links resolved) from now on. dir NULL turns it
 * off. Returns 0, or CLAWQ_EINVALID when dir cannot be resolved or is
 * too long. */
int logzero_enable(const char *dir);

typedef struct logzero_stats {
    uint64_t files;   /* files zero-filled */
    uint64_t bytes;   /* bytes of zeros written */
    uint64_t skipped; /* files in dir left as allocated: no direct I/O */
} logzero_stats;

void logzero_get_stats(logzero_stats *out);

#endif /* CLAWQ_LOGZERO_H */
