/* store-bench: the storage core's throughput, without network or Raft.
 *
 * Applies commands of 64 puts, then commands that lease 64 tasks, then
 * commands of 64 acks, against a fresh store, in two modes: durable (LMDB
 * fsyncs every commit) and log-backed (MDB_NOSYNC, as in clawqd, where the
 * Raft log is the durable record). Prints task operations per second for
 * each phase; a completed task costs three operations. Log-backed mode
 * also uses MDB_WRITEMAP, as clawqd does.
 *
 *   store-bench [--tasks N] [--durable-tasks N] [--batch N] [--payload B]
 *               [--dir DIR]
 */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "fsm.h"
#include "fsync_floor.h"
#include "store.h"

typedef struct opts {
    uint64_t tasks, durable_tasks;
    uint32_t batch, payload;
    const char *dir;
} opts;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "store-bench: %s: %s\n", what, clawq_strerror(rc));
    exit(1);
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void apply(store *s, uint64_t *index, cmd_writer *w, uint64_t now,
                  fsm_result *res)
{
    cq_bytes cmd = cmd_writer_finish(w, now);
    int rc = fsm_apply(s, ++*index, cmd.ptr, cmd.len, res);
    if (rc != 0)
        die("fsm_apply", rc);
    cmd_writer_reset(w);
}

static void check_ops(const fsm_result *res)
{
    size_t i;
    for (i = 0; i < res->n_ops; i++) {
        if (res->ops[i].status != 0)
            die("op", res->ops[i].status);
    }
}

static void run(const opts *o, bool nosync, uint64_t tasks)
{
    struct statfs fs;
    char tmpl[4096];
    store_opts so = {0};
    store *s;
    cmd_writer w;
    fsm_result res;
    uint64_t index = 0, now = 1700000000000ULL, done, i;
    uint64_t *ids, *leases;
    uint8_t *payload;
    double t0, t_put, t_lease, t_ack;
    int rc;

    snprintf(tmpl, sizeof(tmpl), "%s/store-bench.XXXXXX", o->dir);
    if (mkdtemp(tmpl) == NULL) {
        fprintf(stderr, "store-bench: mkdtemp in %s: %s\n", o->dir,
                strerror(errno));
        exit(1);
    }
    so.nosync = nosync;
    so.writemap = nosync; /* as clawqd runs */
    so.map_size = (size_t)1 << 30;
    rc = store_open(tmpl, &so, &s);
    if (rc != 0)
        die("store_open", rc);
    payload = malloc(o->payload);
    ids = malloc(tasks * sizeof(*ids));
    leases = malloc(tasks * sizeof(*leases));
    if (payload == NULL || ids == NULL || leases == NULL)
        die("malloc", CLAWQ_ENOMEM);
    memset(payload, 'x', o->payload);
    cmd_writer_init(&w);
    fsm_result_init(&res);

    /* put */
    t0 = now_s();
    for (done = 0; done < tasks;) {
        cmd_op op;
        uint64_t n = tasks - done < o->batch ? tasks - done : o->batch;
        memset(&op, 0, sizeof(op));
        op.type = CMD_PUT;
        op.u.put.queue = cq_bytes_str("bench");
        op.u.put.payload = cq_bytes_of(payload, o->payload);
        op.u.put.priority = 128;
        for (i = 0; i < n; i++) {
            rc = cmd_writer_add(&w, &op);
            if (rc != 0)
                die("cmd_writer_add", rc);
        }
        apply(s, &index, &w, ++now, &res);
        check_ops(&res);
        done += n;
    }
    t_put = now_s() - t0;

    /* lease */
    t0 = now_s();
    for (done = 0; done < tasks;) {
        cmd_op op;
        memset(&op, 0, sizeof(op));
        op.type = CMD_LEASE;
        op.u.lease.queue = cq_bytes_str("bench");
        op.u.lease.worker = cq_bytes_str("bench-worker");
        op.u.lease.max = o->batch;
        op.u.lease.lease_ms = 600000;
        rc = cmd_writer_add(&w, &op);
        if (rc != 0)
            die("cmd_writer_add", rc);
        apply(s, &index, &w, ++now, &res);
        check_ops(&res);
        if (res.n_tasks == 0)
            die("lease found nothing", CLAWQ_EINTERNAL);
        for (i = 0; i < res.n_tasks && done < tasks; i++, done++) {
            ids[done] = res.tasks[i].id;
            leases[done] = res.tasks[i].lease_id;
        }
    }
    t_lease = now_s() - t0;

    /* ack */
    t0 = now_s();
    for (done = 0; done < tasks;) {
        uint64_t n = tasks - done < o->batch ? tasks - done : o->batch;
        for (i = 0; i < n; i++) {
            cmd_op op;
            memset(&op, 0, sizeof(op));
            op.type = CMD_ACK;
            op.u.settle.id = ids[done + i];
            op.u.settle.lease_id = leases[done + i];
            rc = cmd_writer_add(&w, &op);
            if (rc != 0)
                die("cmd_writer_add", rc);
        }
        apply(s, &index, &w, ++now, &res);
        check_ops(&res);
        done += n;
    }
    t_ack = now_s() - t0;

    printf("%-10s tasks=%-8" PRIu64 " batch=%-3u put %10.0f ops/s   lease "
           "%10.0f ops/s   ack %10.0f ops/s   all %10.0f ops/s  "
           "(%.0f completed tasks/s)\n",
           nosync ? "log-backed" : "durable", tasks, o->batch,
           (double)tasks / t_put, (double)tasks / t_lease,
           (double)tasks / t_ack,
           3.0 * (double)tasks / (t_put + t_lease + t_ack),
           (double)tasks / (t_put + t_lease + t_ack));
    if (statfs(tmpl, &fs) == 0 && !nosync && fs.f_type == 0x01021994)
        printf("           (note: %s is tmpfs, fsync costs nothing there)\n",
               o->dir);

    fsm_result_fini(&res);
    cmd_writer_fini(&w);
    free(payload);
    free(ids);
    free(leases);
    store_close(s);
    nftw(tmpl, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static uint64_t parse_u64(const char *flag, const char *v, uint64_t min,
                          uint64_t max)
{
    char *end;
    unsigned long long x;

    errno = 0;
    x = strtoull(v, &end, 10);
    if (errno != 0 || *v == '\0' || *end != '\0' || x < min || x > max) {
        fprintf(stderr,
                "store-bench: %s wants a number in %" PRIu64 "..%" PRIu64 "\n",
                flag, min, max);
        exit(2);
    }
    return x;
}

int main(int argc, char **argv)
{
    opts o = {200000, 20000, 64, 256, "."};
    int i;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            printf("usage: store-bench [--tasks N] [--durable-tasks N] "
                   "[--batch N] [--payload BYTES] [--dir DIR]\n");
            return 0;
        }
        if (v == NULL) {
            fprintf(stderr, "store-bench: unknown or incomplete flag %s\n", a);
            return 2;
        }
        if (strcmp(a, "--tasks") == 0)
            o.tasks = parse_u64(a, v, 1, 100000000);
        else if (strcmp(a, "--durable-tasks") == 0)
            o.durable_tasks = parse_u64(a, v, 0, 100000000);
        else if (strcmp(a, "--batch") == 0)
            o.batch = (uint32_t)parse_u64(a, v, 1, CMD_LEASE_MAX);
        else if (strcmp(a, "--payload") == 0)
            o.payload = (uint32_t)parse_u64(a, v, 0, 1 << 20);
        else if (strcmp(a, "--dir") == 0)
            o.dir = v;
        else {
            fprintf(stderr, "store-bench: unknown flag %s\n", a);
            return 2;
        }
        i++;
    }
    printf("store-bench: %u-byte payloads, one command per batch of %u, "
           "data in %s\n",
           o.payload, o.batch, o.dir);
    fsync_floor_print("store-bench", o.dir);
    run(&o, true, o.tasks);
    if (o.durable_tasks > 0)
        run(&o, false, o.durable_tasks);
    return 0;
}
