/* Fuzz target: the KEDA scaler's request messages (ScaledObjectRef for
 * IsActive / StreamIsActive / GetMetricSpec, GetMetricsRequest for
 * GetMetrics) as clawqd decodes them from a gRPC message body. What
 * decodes must re-encode. */
#include <stdlib.h>
#include <string.h>

#include "externalscaler.pb-c.h"
#include "fuzz.h"
#include "util.h"

static void repack(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);

    CLAWQ_ASSERT(buf != NULL);
    CLAWQ_ASSERT(protobuf_c_message_pack(m, buf) == n);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Externalscaler__ScaledObjectRef *ref;
    Externalscaler__GetMetricsRequest *req;

    ref = externalscaler__scaled_object_ref__unpack(NULL, size, data);
    if (ref != NULL) {
        repack(&ref->base);
        externalscaler__scaled_object_ref__free_unpacked(ref, NULL);
    }
    req = externalscaler__get_metrics_request__unpack(NULL, size, data);
    if (req != NULL) {
        repack(&req->base);
        externalscaler__get_metrics_request__free_unpacked(req, NULL);
    }
    return 0;
}

/* KEDA.md's test vector: ScaledObjectRef{"a", "b", {k: v}}, and a
 * GetMetricsRequest around it. */
int fuzz_seed(int i, uint8_t **buf, size_t *len)
{
    static const uint8_t ref[] = {0x0a, 0x01, 0x61, 0x12, 0x01, 0x62, 0x1a,
                                  0x06, 0x0a, 0x01, 0x6b, 0x12, 0x01, 0x76};
    size_t n = i == 0 ? sizeof(ref) : sizeof(ref) + 2 + 5;

    if (i > 1)
        return 0;
    *buf = malloc(n);
    if (*buf == NULL)
        return 0;
    if (i == 0) {
        memcpy(*buf, ref, sizeof(ref));
    } else {
        (*buf)[0] = 0x0a; /* scaledObjectRef = 1 */
        (*buf)[1] = sizeof(ref);
        memcpy(*buf + 2, ref, sizeof(ref));
        memcpy(*buf + 2 + sizeof(ref), "\x12\x03jqx", 5); /* metricName */
    }
    *len = n;
    return 1;
}
