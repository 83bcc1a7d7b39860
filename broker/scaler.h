/* scaler.h: the KEDA external scaler (--scaler): the gRPC service
 * externalscaler.ExternalScaler (proto/externalscaler.proto) over HTTP/2
 * with nghttp2 on the broker's loop, plaintext h2c with prior knowledge or
 * TLS with ALPN h2 (OpenSSL), optionally verifying client certificates.
 * IsActive, StreamIsActive, GetMetricSpec and GetMetrics answer from the
 * queues' counters and the workers' load reports; every other method
 * answers grpc-status 12. See ../shared/KEDA.md and the README. */
#ifndef CLAWQ_SCALER_H
#define CLAWQ_SCALER_H

#include "session.h"

typedef struct scaler scaler;

typedef struct scaler_opts {
    const char *addr;
    const char *tls_cert; /* "" = plaintext h2c */
    const char *tls_key;
    const char *tls_ca; /* "" = no client certificates asked */
} scaler_opts;

/* Listens for srv's node. Returns 0, CLAWQ_EINVALID for a bad address or
 * unusable TLS files (logged), CLAWQ_EIO when it cannot bind. */
int scaler_listen(server *srv, const scaler_opts *o, scaler **out);

/* Entries were applied: StreamIsActive streams whose queue went from idle
 * to having work get `true` now. */
void scaler_on_applied(scaler *sc);

/* Ends the streams (grpc-status 0), sends GOAWAY, closes; frees itself
 * once closed. */
void scaler_close(scaler *sc);

#endif /* CLAWQ_SCALER_H */
