/* frame.h: the frame layout of the wire protocol (proto/clawq.proto), shared
 * by clawqd and libclawq: a 4-byte big-endian length, then that many bytes
 * of one protobuf message. Header-only; owns nothing. */
#ifndef CLAWQ_FRAME_H
#define CLAWQ_FRAME_H

#include <stdint.h>

#define CLAWQ_FRAME_HEADER_LEN 4
#define CLAWQ_PROTOCOL_VERSION 1
#define CLAWQ_DEFAULT_MAX_FRAME (16u << 20)
#define CLAWQ_MAX_BATCH 1024 /* tasks per put, pull or ack request */

static inline void clawq_frame_put_len(uint8_t *p, uint32_t len)
{
    p[0] = (uint8_t)(len >> 24);
    p[1] = (uint8_t)(len >> 16);
    p[2] = (uint8_t)(len >> 8);
    p[3] = (uint8_t)len;
}

static inline uint32_t clawq_frame_get_len(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

#endif /* CLAWQ_FRAME_H */
