/* http.h: the node's HTTP/1.1 endpoint (--http): Prometheus /metrics,
 * /healthz, /readyz, and JSON queue stats under /v1/queues for KEDA's
 * metrics-api scaler. Owns its listener and connections; requests are
 * parsed with Debian's http-parser (libhttp-parser), kept alive, bounded
 * in size; anything else answers 404 or 405. Everything it serves comes
 * from memory and read transactions: nothing blocks the loop.
 *
 * Paths: /healthz (200 while running), /readyz (200 when leader, or when a
 * leader is known and applied is within 64 entries of commit; else 503
 * with a one-line reason), /metrics (Prometheus text 0.0.4), /v1/queues
 * and /v1/queues/NAME (JSON). docs/METRICS.md lists every metric and field.
 *
 * Bounds: GET and HEAD only (405 with Allow); no request bodies (413);
 * request line and headers up to 8 KiB (431); 256 connections; 10 s for a
 * request to arrive, 60 s idle between kept-alive requests. A connection
 * answers one request at a time, so pipelined requests are answered in
 * order. Errors and Connection: close end the connection after the
 * answer. */
#ifndef CLAWQ_HTTP_H
#define CLAWQ_HTTP_H

#include "session.h"

typedef struct http_srv http_srv;

/* Listens on addr (host:port, [v6]:port, localhost:port, as net_listen)
 * for srv's node. srv, its store and its repl must outlive the http_srv
 * (until http_close). Returns 0, CLAWQ_EINVALID for a bad address,
 * CLAWQ_EIO when it cannot be bound (logged). Sets http-parser's
 * process-wide header size limit. */
int http_listen(server *srv, const char *addr, http_srv **out);

/* Closes the listener and every connection (answers being written are
 * dropped); frees itself once every handle is closed. NULL is a no-op. */
void http_close(http_srv *h);

#endif /* CLAWQ_HTTP_H */
