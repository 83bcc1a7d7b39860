/* http.h: the node's HTTP/1.1 endpoint (--http): Prometheus /metrics,
 * /healthz, /readyz, and JSON queue stats under /v1/queues for KEDA's
 * metrics-api scaler. Owns its listener and connections; requests are
 * parsed with Debian's http-parser (libhttp-parser), kept alive, bounded
 * in size; anything else answers 404 or 405. Everything it serves comes
 * from memory and read transactions: nothing blocks the loop. */
#ifndef CLAWQ_HTTP_H
#define CLAWQ_HTTP_H

#include "session.h"

typedef struct http_srv http_srv;

/* Listens on addr for srv's node. Returns 0, CLAWQ_EINVALID for a bad
 * address, CLAWQ_EIO when it cannot be bound (logged). */
int http_listen(server *srv, const char *addr, http_srv **out);

/* Closes the listener and every connection; frees itself once closed. */
void http_close(http_srv *h);

#endif /* CLAWQ_HTTP_H */
