/* Fuzz target: the command decoder (cmd_decode), which reads every Raft
 * entry. A command that decodes must re-encode to bytes that decode to the
 * same ops. */
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "fuzz.h"

static void check_same(const cmd_batch *a, const cmd_batch *b)
{
    size_t i;

    CLAWQ_ASSERT(a->now_ms == b->now_ms && a->n_ops == b->n_ops);
    for (i = 0; i < a->n_ops; i++)
        CLAWQ_ASSERT(a->ops[i].type == b->ops[i].type);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cmd_batch *b, *again;
    void *buf;
    size_t len;

    if (cmd_decode(data, size, &b) != 0)
        return 0;
    if (cmd_encode(b->now_ms, b->ops, b->n_ops, &buf, &len) == 0) {
        CLAWQ_ASSERT(cmd_decode(buf, len, &again) == 0);
        check_same(b, again);
        cmd_batch_free(again);
        free(buf);
    }
    cmd_batch_free(b);
    return 0;
}

int fuzz_seed(int i, uint8_t **buf, size_t *len)
{
    static const char hdr[] = "\x92\xa1k\xa1v";
    cmd_op ops[4];
    void *out;
    int rc;

    memset(ops, 0, sizeof(ops));
    switch (i) {
    case 0:
        ops[0].type = CMD_PUT;
        ops[0].u.put.queue = cq_bytes_str("q");
        ops[0].u.put.payload = cq_bytes_str("payload");
        ops[0].u.put.idem_key = cq_bytes_str("key-1");
        ops[0].u.put.headers = cq_bytes_of(hdr, sizeof(hdr) - 1);
        ops[0].u.put.deadline_ms = 5000;
        ops[1].type = CMD_LEASE;
        ops[1].u.lease.queue = cq_bytes_str("q");
        ops[1].u.lease.worker = cq_bytes_str("w");
        ops[1].u.lease.max = 8;
        ops[2].type = CMD_ACK;
        ops[2].u.settle.id = 1;
        ops[2].u.settle.lease_id = 1;
        ops[3].type = CMD_TICK;
        rc = cmd_encode(1000, ops, 4, &out, len);
        break;
    case 1:
        ops[0].type = CMD_EXTEND;
        ops[0].u.extend.id = 7;
        ops[0].u.extend.lease_id = 9;
        ops[0].u.extend.has_checkpoint = true;
        ops[0].u.extend.checkpoint = cq_bytes_str("step-3");
        ops[1].type = CMD_NACK;
        ops[1].u.settle.delay_ms = -1;
        ops[1].u.settle.error = cq_bytes_str("boom");
        ops[2].type = CMD_FAIL;
        ops[2].u.settle.error = cq_bytes_str("fatal");
        ops[3].type = CMD_DLQ_REPLAY;
        ops[3].u.dlq.queue = cq_bytes_str("q");
        ops[3].u.dlq.error_substr = cq_bytes_str("boom");
        rc = cmd_encode(2000, ops, 4, &out, len);
        break;
    case 2:
        ops[0].type = CMD_QUEUE_SET;
        ops[0].u.queue_set.queue = cq_bytes_str("q");
        ops[0].u.queue_set.fields = QSET_MAX_DEPTH | QSET_LEASE_MS;
        ops[0].u.queue_set.settings.max_depth = 10;
        ops[0].u.queue_set.settings.lease_ms = 100;
        ops[1].type = CMD_QUEUE_PAUSE;
        ops[1].u.queue.queue = cq_bytes_str("q");
        ops[2].type = CMD_QUEUE_PURGE;
        ops[2].u.queue.queue = cq_bytes_str("q");
        ops[3].type = CMD_DLQ_PURGE;
        ops[3].u.dlq.queue = cq_bytes_str("q");
        rc = cmd_encode(3000, ops, 4, &out, len);
        break;
    default:
        return 0;
    }
    if (rc != 0)
        return 0;
    *buf = out;
    return 1;
}
