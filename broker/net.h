/* net.h: the client listener. Owns the listening TCP handle, accepts up to
 * max-connections sessions (closing the rest at once), and drives the
 * graceful drain on shutdown: stop accepting, let every session answer
 * what it has outstanding, close them, then report drained. */
#ifndef CLAWQ_NET_H
#define CLAWQ_NET_H

#include <stdint.h>
#include <uv.h>

#include "session.h"

typedef struct net net;

/* Parses host:port, [v6]:port or localhost:port into *out. Returns 0 or
 * CLAWQ_EINVALID. Shared by every listener (clients, HTTP, scaler). */
int net_addr_parse(const char *addr, struct sockaddr_storage *out);

/* Accepts one pending connection and closes it at once: the listener's
 * connection limit is reached (or it is closing). Logs, rate-limited,
 * "<what>.rejected" with the open count. */
void net_accept_reject(uv_stream_t *listener, const char *what, size_t open);

/* Listens on addr (host:port, [v6]:port, localhost:port) for clients of
 * srv. Returns 0, CLAWQ_EINVALID for a bad address, CLAWQ_EIO when the
 * address cannot be bound (logged). */
int net_listen(server *srv, const char *addr, uint32_t max_connections,
               net **out);

/* Stops accepting and drains every session; `drained` runs once the last
 * one closed (at once if none is open). Then the net is freed. */
void net_shutdown(net *n, void (*drained)(void *arg), void *arg);

#endif /* CLAWQ_NET_H */
