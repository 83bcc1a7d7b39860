/* aioreap.c: syscall() with io_destroy handed to a reaper thread. See
 * aioreap.h for why, and why the definition has seven arguments.
 *
 * This file must not see <unistd.h>'s variadic prototype of syscall().
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NEXT */
#endif
#include "aioreap.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>

#if !defined(__x86_64__) && !defined(__aarch64__)
#error "aioreap.c: syscall() forwarding is written for x86-64 and aarch64"
#endif

#define REAP_QUEUE 64 /* contexts waiting; beyond, io_destroy in place */

typedef long (*syscall_fn)(long, ...);

long syscall(long n, long a1, long a2, long a3, long a4, long a5, long a6);

static _Atomic(syscall_fn) libc_syscall;
static atomic_bool reap_on = true;
static atomic_uint_least64_t n_queued, n_destroyed, n_inline;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long queue[REAP_QUEUE];
static unsigned q_head, q_len;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static bool reaper_up;

static syscall_fn real_syscall(void)
{
    syscall_fn f = atomic_load(&libc_syscall);
    if (f == NULL) {
        /* Racing threads store the same pointer. */
        f = (syscall_fn)dlsym(RTLD_NEXT, "syscall");
        atomic_store(&libc_syscall, f);
    }
    return f;
}

static void *reaper(void *arg)
{
    long ctx;

    (void)arg;
    pthread_mutex_lock(&mu);
    for (;;) {
        while (q_len == 0)
            pthread_cond_wait(&cv, &mu);
        ctx = queue[q_head];
        q_head = (q_head + 1) % REAP_QUEUE;
        q_len--;
        pthread_mutex_unlock(&mu);
        real_syscall()(SYS_io_destroy, ctx);
        atomic_fetch_add(&n_destroyed, 1);
        pthread_mutex_lock(&mu);
    }
    return NULL;
}

static void reaper_start(void)
{
    pthread_attr_t attr;
    pthread_t t;

    if (pthread_attr_init(&attr) != 0)
        return;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    reaper_up = pthread_create(&t, &attr, reaper, NULL) == 0;
    pthread_attr_destroy(&attr);
}

/* Queues ctx for the reaper; false when it must be destroyed in place. */
static bool reap_later(long ctx)
{
    bool ok;

    if (pthread_once(&once, reaper_start) != 0 || !reaper_up)
        return false;
    pthread_mutex_lock(&mu);
    ok = q_len < REAP_QUEUE;
    if (ok) {
        queue[(q_head + q_len) % REAP_QUEUE] = ctx;
        q_len++;
        pthread_cond_signal(&cv);
    }
    pthread_mutex_unlock(&mu);
    return ok;
}

long syscall(long n, long a1, long a2, long a3, long a4, long a5, long a6)
{
    if (n == SYS_io_destroy && atomic_load(&reap_on)) {
        if (reap_later(a1)) {
            atomic_fetch_add(&n_queued, 1);
            return 0;
        }
        atomic_fetch_add(&n_inline, 1);
    }
    return real_syscall()(n, a1, a2, a3, a4, a5, a6);
}

void aioreap_set_enabled(bool on)
{
    atomic_store(&reap_on, on);
}

void aioreap_get_stats(aioreap_stats *out)
{
    out->queued = atomic_load(&n_queued);
    out->destroyed = atomic_load(&n_destroyed);
    out->inline_ = atomic_load(&n_inline);
}
