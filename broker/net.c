/* net.c: the client listener and the drain on shutdown. See net.h. */
#include "net.h"

#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"

struct net {
    uv_tcp_t tcp;
    server *srv;
    uint32_t max_connections;
    bool closed; /* the listener is closed */
    void (*drained)(void *);
    void *drained_arg;
};

int net_addr_parse(const char *addr, struct sockaddr_storage *out)
{
    char host[256];
    int port;

    if (config_addr_split(addr, host, sizeof(host), &port) != 0)
        return CLAWQ_EINVALID;
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)out) == 0)
        return 0;
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)out) == 0)
        return 0;
    return CLAWQ_EINVALID;
}

static void check_drained(server *srv)
{
    net *n = srv->on_session_closed != NULL ? (net *)srv->drain_ctx : NULL;

    if (n == NULL || !n->closed || srv->n_sessions > 0 || n->drained == NULL)
        return;
    {
        void (*cb)(void *) = n->drained;
        void *arg = n->drained_arg;
        n->drained = NULL;
        srv->on_session_closed = NULL;
        srv->drain_ctx = NULL;
        free(n);
        cb(arg);
    }
}

static void on_reject_closed(uv_handle_t *h)
{
    free(h);
}

void net_accept_reject(uv_stream_t *listener, const char *what, size_t open)
{
    uv_tcp_t *t = malloc(sizeof(*t));

    if (t == NULL)
        return;
    uv_tcp_init(listener->loop, t);
    if (uv_accept(listener, (uv_stream_t *)t) == 0)
        LOG_RATELIMITED(LOG_WARN, "net.rejected", 1000,
                        "listener=%s reason=max_connections open=%zu", what,
                        open);
    uv_close((uv_handle_t *)t, on_reject_closed);
}

static void on_listener_failed(uv_handle_t *h)
{
    free(h->data); /* the owner: its handle is not alone in it */
}

static void on_connection(uv_stream_t *server_handle, int status)
{
    net *n = server_handle->data;
    server *srv = n->srv;
    sess *c;

    if (status != 0) {
        LOG_RATELIMITED(LOG_WARN, "net.accept_failed", 1000, "error=%s",
                        uv_strerror(status));
        return;
    }
    if (srv->n_sessions >= n->max_connections || srv->shutting_down) {
        net_accept_reject(server_handle, "clients", srv->n_sessions);
        return;
    }
    if (sess_new(srv, &c) != 0)
        return;
    if (uv_accept(server_handle, (uv_stream_t *)sess_tcp(c)) != 0) {
        sess_close(c);
        return;
    }
    LOG(LOG_DEBUG, "conn.accept", "open=%zu", srv->n_sessions);
    sess_start(c);
}

int net_listen(server *srv, const char *addr, uint32_t max_connections,
               net **out)
{
    struct sockaddr_storage sa;
    net *n;
    int rc;

    if (net_addr_parse(addr, &sa) != 0)
        return CLAWQ_EINVALID;
    n = calloc(1, sizeof(*n));
    if (n == NULL)
        return CLAWQ_ENOMEM;
    n->srv = srv;
    n->max_connections = max_connections;
    uv_tcp_init(srv->loop, &n->tcp);
    n->tcp.data = n;
    rc = uv_tcp_bind(&n->tcp, (const struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&n->tcp, 1024, on_connection);
    if (rc != 0) {
        LOG(LOG_ERROR, "net.listen_failed", "addr=%s error=\"%s\"", addr,
            uv_strerror(rc));
        n->closed = true;
        uv_close((uv_handle_t *)&n->tcp, on_listener_failed);
        return CLAWQ_EIO;
    }
    LOG(LOG_INFO, "net.listen", "addr=%s", addr);
    *out = n;
    return 0;
}

static void on_listener_closed(uv_handle_t *h)
{
    net *n = h->data;
    n->closed = true;
    check_drained(n->srv);
}

void net_shutdown(net *n, void (*drained)(void *arg), void *arg)
{
    server *srv = n->srv;
    sess *c, *next;

    srv->shutting_down = true;
    n->drained = drained;
    n->drained_arg = arg;
    srv->drain_ctx = n;
    srv->on_session_closed = check_drained;
    uv_close((uv_handle_t *)&n->tcp, on_listener_closed);
    for (c = srv->sessions; c != NULL; c = next) {
        next = sess_next(c);
        sess_drain(c);
    }
}
