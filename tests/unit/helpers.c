#include "helpers.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *th_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char *path;

    if (base == NULL || *base == '\0')
        base = "/tmp";
    ck_assert_int_ne(asprintf(&path, "%s/clawq-test.XXXXXX", base), -1);
    ck_assert_ptr_nonnull(mkdtemp(path));
    return path;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void th_rmdir(char *path)
{
    if (path == NULL)
        return;
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(path);
}

store *th_store_open(const char *dir, bool nosync)
{
    store_opts opts = {0};
    store *s = NULL;

    opts.nosync = nosync;
    ck_assert_int_eq(store_open(dir, &opts, &s), 0);
    ck_assert_ptr_nonnull(s);
    return s;
}

int th_apply(store *s, uint64_t *index, uint64_t now_ms, const cmd_op *ops,
             size_t n, fsm_result *res)
{
    void *buf = NULL;
    size_t len = 0;

    ck_assert_int_eq(cmd_encode(now_ms, ops, n, &buf, &len), 0);
    ck_assert_int_eq(fsm_apply(s, ++*index, buf, len, res), 0);
    free(buf);
    ck_assert_uint_eq(res->n_ops, n);
    return n > 0 ? res->ops[0].status : 0;
}

cmd_op th_put(const char *queue, const char *payload, uint8_t priority)
{
    cmd_op op;
    memset(&op, 0, sizeof(op));
    op.type = CMD_PUT;
    op.u.put.queue = cq_bytes_str(queue);
    op.u.put.payload = cq_bytes_str(payload);
    op.u.put.priority = priority;
    return op;
}

cmd_op th_lease(const char *queue, uint32_t max, uint32_t lease_ms)
{
    cmd_op op;
    memset(&op, 0, sizeof(op));
    op.type = CMD_LEASE;
    op.u.lease.queue = cq_bytes_str(queue);
    op.u.lease.worker = cq_bytes_str("worker-1");
    op.u.lease.max = max;
    op.u.lease.lease_ms = lease_ms;
    return op;
}

static cmd_op settle(int type, uint64_t id, uint64_t lease_id)
{
    cmd_op op;
    memset(&op, 0, sizeof(op));
    op.type = (uint8_t)type;
    op.u.settle.id = id;
    op.u.settle.lease_id = lease_id;
    op.u.settle.delay_ms = -1;
    return op;
}

cmd_op th_ack(uint64_t id, uint64_t lease_id)
{
    return settle(CMD_ACK, id, lease_id);
}

cmd_op th_nack(uint64_t id, uint64_t lease_id, int64_t delay_ms,
               const char *error)
{
    cmd_op op = settle(CMD_NACK, id, lease_id);
    op.u.settle.delay_ms = delay_ms;
    op.u.settle.error = cq_bytes_str(error ? error : "");
    return op;
}

cmd_op th_fail(uint64_t id, uint64_t lease_id, const char *error)
{
    cmd_op op = settle(CMD_FAIL, id, lease_id);
    op.u.settle.error = cq_bytes_str(error ? error : "");
    return op;
}

cmd_op th_tick(void)
{
    cmd_op op;
    memset(&op, 0, sizeof(op));
    op.type = CMD_TICK;
    return op;
}

cmd_op th_queue(int type, const char *queue)
{
    cmd_op op;
    memset(&op, 0, sizeof(op));
    op.type = (uint8_t)type;
    op.u.queue.queue = cq_bytes_str(queue);
    return op;
}
