/* Fuzz target: the task and queue record decoders, which read every LMDB
 * value. A record that decodes must re-encode and decode again. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    task_rec t, t2;
    queue_rec q, q2;
    cq_buf out;

    cq_buf_init(&out, 1u << 26);
    if (task_rec_decode(data, size, &t) == 0 &&
        task_rec_encode(&t, &out) == 0) {
        CLAWQ_ASSERT(task_rec_decode(out.ptr, out.len, &t2) == 0);
        CLAWQ_ASSERT(t2.id == t.id && t2.payload.len == t.payload.len &&
                     t2.n_errors == t.n_errors);
    }
    out.len = 0;
    if (queue_rec_decode(data, size, &q) == 0 &&
        queue_rec_encode(&q, &out) == 0) {
        CLAWQ_ASSERT(queue_rec_decode(out.ptr, out.len, &q2) == 0);
        CLAWQ_ASSERT(memcmp(&q.counters, &q2.counters, sizeof(q.counters)) ==
                     0);
    }
    cq_buf_fini(&out);
    return 0;
}

int fuzz_seed(int i, uint8_t **buf, size_t *len)
{
    cq_buf out;
    task_rec t;
    queue_rec q;
    int rc;

    cq_buf_init(&out, 1u << 20);
    memset(&t, 0, sizeof(t));
    switch (i) {
    case 0:
        t.id = 42;
        t.qid = 1;
        t.state = TASK_DEAD;
        t.attempt = 3;
        t.payload = cq_bytes_str("hello");
        t.checkpoint = cq_bytes_str("ck");
        t.n_errors = 2;
        t.errors[0].msg = cq_bytes_str("late");
        t.errors[1].msg = cq_bytes_str("early");
        rc = task_rec_encode(&t, &out);
        break;
    case 1:
        memset(&q, 0, sizeof(q));
        queue_settings_default(&q.settings);
        q.qid = 3;
        q.counters.ready = 10;
        rc = queue_rec_encode(&q, &out);
        break;
    default:
        return 0;
    }
    if (rc != 0) {
        cq_buf_fini(&out);
        return 0;
    }
    *buf = out.ptr;
    *len = out.len;
    return 1;
}
