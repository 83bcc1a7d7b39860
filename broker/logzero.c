/* logzero.c: posix_fallocate for the Raft log directory, zero-filled.
 * See logzero.h for why, and for the durability argument.
 *
 * The definitions below replace libc's posix_fallocate for the whole
 * process (libraft is the only caller in clawqd). Outside the enabled
 * directory, and for any file system that refuses direct I/O, they do
 * exactly what libc does. Only bytes past the file's size before the call
 * are zeroed, so no data can ever be overwritten, whoever the caller is.
 *
 * This file is compiled without _FILE_OFFSET_BITS=64, which would rename
 * the definition to posix_fallocate64: libraft imports the plain name.
 * Both names are defined; off_t is 64 bits on the platforms we build for.
 */
#undef _FILE_OFFSET_BITS
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* O_DIRECT, RTLD_NEXT, off64_t */
#endif
#include "logzero.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clawq.h"

_Static_assert(sizeof(off_t) == 8, "logzero needs a 64-bit off_t");

/* Bytes per direct write. The zero-fill runs while libraft keeps writing
 * the open segment, and on this project's VM a 1 MiB write held the log's
 * flushes behind it: a loop of 8 KiB O_DSYNC writes had p99 0.57-0.73 ms
 * during a fill in 1 MiB writes, 0.31-0.34 ms (as with no fill) in 256 or
 * 128 KiB writes. 256 KiB fills 16 MiB as fast as 1 MiB (9.5 ms against
 * 10); 128 KiB took 12.5 ms, and libraft, which refuses writes while under
 * 4 MiB of log space is prepared, then refused proposals in a cluster test
 * that snapshots every 64 entries (each snapshot starts a new segment). */
#define ZERO_CHUNK (256u << 10)
#define ZERO_ALIGN 4096u /* direct I/O offset and length alignment */

typedef int (*fallocate_fn)(int, off_t, off_t);

static char zero_dir[PATH_MAX];
static atomic_bool zero_on;
static _Atomic(fallocate_fn) libc_fallocate;
static atomic_uint_least64_t n_files, n_bytes, n_skipped;

static fallocate_fn real_fallocate(void)
{
    fallocate_fn f = atomic_load(&libc_fallocate);
    if (f == NULL) {
        /* Several threads may race here; they store the same pointer. */
        f = (fallocate_fn)dlsym(RTLD_NEXT, "posix_fallocate");
        atomic_store(&libc_fallocate, f);
    }
    return f;
}

int logzero_enable(const char *dir)
{
    char resolved[PATH_MAX];

    if (dir == NULL) {
        atomic_store(&zero_on, false);
        return 0;
    }
    if (realpath(dir, resolved) == NULL ||
        strlen(resolved) + 2 > sizeof(zero_dir))
        return CLAWQ_EINVALID;
    if (real_fallocate() == NULL)
        return CLAWQ_EINVALID;
    memcpy(zero_dir, resolved, strlen(resolved) + 1);
    atomic_store(&zero_on, true);
    return 0;
}

void logzero_get_stats(logzero_stats *out)
{
    out->files = atomic_load(&n_files);
    out->bytes = atomic_load(&n_bytes);
    out->skipped = atomic_load(&n_skipped);
}

/* Whether fd is a file under zero_dir. */
static bool in_zero_dir(int fd)
{
    char link[64], path[PATH_MAX];
    size_t n = strlen(zero_dir);
    ssize_t len;

    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    len = readlink(link, path, sizeof(path) - 1);
    if (len <= 0)
        return false;
    path[len] = '\0';
    return strncmp(path, zero_dir, n) == 0 &&
           (path[n] == '/' || zero_dir[n - 1] == '/');
}

/* Writes zeros over [from, to) of fd's file with direct I/O and
 * fdatasync()s what was written. A file system that refuses direct I/O
 * (EINVAL) leaves the file as libc allocated it. Returns 0 (done,
 * or refused), or the errno of a failed write or fdatasync. */
static int zero_fill(int fd, off_t from, off_t to)
{
    char link[64];
    void *zeros = NULL;
    off_t at = from;
    int dfd, err = 0;

    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    dfd = open(link, O_WRONLY | O_DIRECT | O_CLOEXEC);
    if (dfd < 0 || posix_memalign(&zeros, ZERO_ALIGN, ZERO_CHUNK) != 0) {
        if (dfd >= 0)
            close(dfd);
        atomic_fetch_add(&n_skipped, 1);
        return 0;
    }
    memset(zeros, 0, ZERO_CHUNK);
    while (at < to) {
        size_t n =
            (size_t)(to - at) < ZERO_CHUNK ? (size_t)(to - at) : ZERO_CHUNK;
        ssize_t w = pwrite(dfd, zeros, n, at);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            err = w == 0 ? EIO : errno;
            break;
        }
        at += w;
    }
    free(zeros);
    /* What was written must be on record as written before libraft's
     * data-only RWF_DSYNC writes land there (logzero.h). */
    if (at > from && fdatasync(dfd) != 0)
        err = errno;
    else if (err == EINVAL)
        err = 0; /* refused (alignment, no direct I/O): nothing to undo */
    close(dfd);
    if (err == 0) {
        atomic_fetch_add(&n_bytes, (uint64_t)(at - from));
        atomic_fetch_add(at == to ? &n_files : &n_skipped, 1);
    }
    return err;
}

static int fallocate_zeroed(int fd, off_t offset, off_t len)
{
    fallocate_fn f = real_fallocate();
    struct stat st;
    off_t from, to;
    int rc;

    if (f == NULL)
        return ENOSYS;
    if (!atomic_load(&zero_on) || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        offset < 0 || len <= 0 || offset > INT64_MAX - len || !in_zero_dir(fd))
        return f(fd, offset, len);
    rc = f(fd, offset, len);
    if (rc != 0)
        return rc;
    /* Only what lay past the end of the file: never anyone's data. */
    from = offset > st.st_size ? offset : st.st_size;
    from = (from + ZERO_ALIGN - 1) / ZERO_ALIGN * ZERO_ALIGN;
    to = (offset + len) / ZERO_ALIGN * ZERO_ALIGN;
    if (from >= to)
        return 0;
    return zero_fill(fd, from, to);
}

/* posix_fallocate returns its error and leaves errno alone; so do we,
 * though the zero-fill makes calls that may set it. */
int posix_fallocate(int fd, off_t offset, off_t len)
{
    int saved = errno, rc = fallocate_zeroed(fd, offset, len);
    errno = saved;
    return rc;
}

int posix_fallocate64(int fd, off64_t offset, off64_t len)
{
    int saved = errno, rc = fallocate_zeroed(fd, offset, len);
    errno = saved;
    return rc;
}
