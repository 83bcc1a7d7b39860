/* Fuzz target: what clawqd does with bytes from a client before any
 * request logic runs: split the stream into frames (4-byte big-endian
 * length, capped), decode each as a protobuf Request, and re-encode what
 * decodes. Frames over the cap end the stream, as they close a
 * connection. */
#include <stdlib.h>
#include <string.h>

#include "clawq.pb-c.h"
#include "frame.h"
#include "fuzz.h"
#include "util.h"

#define FUZZ_MAX_FRAME (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;

    while (size - off >= CLAWQ_FRAME_HEADER_LEN) {
        uint32_t len = clawq_frame_get_len(data + off);
        Clawq__Request *rq;

        if (len > FUZZ_MAX_FRAME || size - off - CLAWQ_FRAME_HEADER_LEN < len)
            break;
        rq = clawq__request__unpack(NULL, len,
                                    data + off + CLAWQ_FRAME_HEADER_LEN);
        off += CLAWQ_FRAME_HEADER_LEN + len;
        if (rq == NULL)
            continue;
        {
            size_t n = clawq__request__get_packed_size(rq);
            uint8_t *buf = malloc(n ? n : 1);
            CLAWQ_ASSERT(buf != NULL);
            CLAWQ_ASSERT(clawq__request__pack(rq, buf) == n);
            free(buf);
        }
        clawq__request__free_unpacked(rq, NULL);
    }
    return 0;
}

/* Frames of a few valid requests, built with the generated code. */
int fuzz_seed(int i, uint8_t **buf, size_t *len)
{
    Clawq__Request rq = CLAWQ__REQUEST__INIT;
    Clawq__Hello hello = CLAWQ__HELLO__INIT;
    Clawq__PutRequest put = CLAWQ__PUT_REQUEST__INIT;
    Clawq__PutTask task = CLAWQ__PUT_TASK__INIT;
    Clawq__PutTask *tasks[1] = {&task};
    Clawq__PullRequest pull = CLAWQ__PULL_REQUEST__INIT;
    size_t n;

    rq.id = (uint64_t)i + 1;
    switch (i) {
    case 0:
        hello.has_protocol_version = 1;
        hello.protocol_version = 1;
        hello.client_name = "seed";
        rq.body_case = CLAWQ__REQUEST__BODY_HELLO;
        rq.hello = &hello;
        break;
    case 1:
        task.has_payload = 1;
        task.payload.data = (uint8_t *)(uintptr_t) "payload";
        task.payload.len = 7;
        task.idempotency_key = "k1";
        put.queue = "jobs";
        put.n_tasks = 1;
        put.tasks = tasks;
        rq.body_case = CLAWQ__REQUEST__BODY_PUT;
        rq.put = &put;
        break;
    case 2:
        pull.queue = "jobs";
        pull.max = 8;
        pull.wait_ms = 100;
        rq.body_case = CLAWQ__REQUEST__BODY_PULL;
        rq.pull = &pull;
        break;
    default:
        return 0;
    }
    n = clawq__request__get_packed_size(&rq);
    *buf = malloc(CLAWQ_FRAME_HEADER_LEN + n);
    if (*buf == NULL)
        return 0;
    clawq_frame_put_len(*buf, (uint32_t)n);
    clawq__request__pack(&rq, *buf + CLAWQ_FRAME_HEADER_LEN);
    *len = CLAWQ_FRAME_HEADER_LEN + n;
    return 1;
}
