/* adapter: one benchmark target (clawq, beanstalkd, Redis Streams, NATS
 * JetStream) behind one small interface, so that clawq-bench's workload
 * code - producers, consumers, the exactly-once bitmaps, the latency
 * histogram - drives every target the same way.
 *
 * A connection belongs to one thread. Every call blocks until the target
 * has answered: a batch is one round trip (one request, or the target's
 * pipelined commands written at once and their replies read back), so
 * each connection has one batch in flight. Results are 0 or a negative
 * BENCH_E* code; the detail of the last error is in conn->err.
 */
#ifndef CLAWQ_BENCH_ADAPTER_H
#define CLAWQ_BENCH_ADAPTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Errors of an adapter call. */
enum {
    BENCH_EFAIL = -1,    /* failed; a put's outcome is unknown */
    BENCH_EREFUSED = -2, /* refused before it was applied: retry after
                            conn->retry_after_ms */
    BENCH_ETOO_MANY = -3 /* more than the target's batch limit */
};

/* What every target's connection is set up from. Strings are borrowed
 * for the life of the run. */
typedef struct bench_cfg {
    const char *addr;  /* "127.0.0.1:PORT", or clawq's endpoint list */
    const char *queue; /* queue, tube, stream key or stream name */
    uint32_t lease_ms; /* how long a pulled task stays invisible */
    uint32_t wait_ms;  /* long-poll wait of an empty pull */
    uint32_t batch;    /* the largest put_batch, pull and ack_batch */
    uint32_t inflight; /* clawq: requests pipelined per connection */
    bool durable;      /* the durable mode (see docs/BENCHMARKS.md); only
                          NATS acts on it (AckSync instead of Ack) */
} bench_cfg;

/* The part every adapter's connection starts with. */
typedef struct bench_conn {
    const struct bench_adapter *ad;
    uint32_t retry_after_ms; /* after BENCH_EREFUSED: the target's hint */
    char err[256];           /* the last error's detail */
} bench_conn;

/* A pulled task. payload and the fields an ack needs live in the
 * connection until its next pull or close. */
typedef struct bench_msg {
    const uint8_t *payload;
    size_t payload_len;
    uint64_t id;       /* clawq task id, beanstalkd job id */
    uint64_t lease_id; /* clawq lease id */
    const char *ref;   /* Redis entry id (NUL-terminated) */
    void *handle;      /* NATS message */
} bench_msg;

typedef struct bench_adapter {
    const char *name;
    const char *default_addr;
    /* Creates what the run needs on the target (a stream, a consumer
     * group) before any connection. May be NULL. */
    int (*setup)(const bench_cfg *cfg, char *err, size_t err_len);
    /* Removes it again after the run. May be NULL. */
    void (*teardown)(const bench_cfg *cfg);
    /* Opens a connection as a producer or a consumer (role "producer" or
     * "consumer", index among them). On success *out is the caller's to
     * close. */
    int (*connect)(const bench_cfg *cfg, const char *role, uint32_t index,
                   bench_conn **out, char *err, size_t err_len);
    void (*close)(bench_conn *c);
    /* Puts one task and waits until the target has stored it. */
    int (*put)(bench_conn *c, const uint8_t *payload, size_t len);
    /* Puts n (1..cfg->batch) tasks of len bytes each. Returns < 0 when
     * the whole batch failed (status unspecified), else the number of
     * tasks that failed, status[i] saying which (0 = stored). */
    int (*put_batch)(bench_conn *c, const uint8_t *const *payloads, size_t len,
                     size_t n, int *status);
    /* Leases up to max tasks, waiting up to cfg->wait_ms for the first.
     * *msgs points into the connection (valid until the next pull). */
    int (*pull)(bench_conn *c, uint32_t max, bench_msg **msgs, size_t *n);
    /* Acks one pulled task. */
    int (*ack)(bench_conn *c, bench_msg *m);
    /* Acks n pulled tasks; returns as put_batch. */
    int (*ack_batch)(bench_conn *c, bench_msg *msgs, size_t n, int *status);
} bench_adapter;

extern const bench_adapter bench_clawq;
extern const bench_adapter bench_beanstalkd;
#ifdef BENCH_HAVE_REDIS
extern const bench_adapter bench_redis;
#endif
#ifdef BENCH_HAVE_NATS
extern const bench_adapter bench_nats;
#endif

/* The libclawq handle of a clawq connection, for clawq-bench's pipelined
 * (ticket) mode and queue settings. Borrowed: closed with c. */
struct clawq_client *bench_clawq_client(bench_conn *c);

/* The adapter called name ("clawq", "beanstalkd", "redis", "nats"), or
 * NULL when it is unknown or was not compiled in. */
const bench_adapter *bench_adapter_find(const char *name);

/* The names of the adapters compiled in, space-separated. */
const char *bench_adapter_names(void);

/* Writes a formatted detail into c->err; returns rc. */
int bench_fail(bench_conn *c, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Splits "HOST:PORT" into host (NUL-terminated, host_len bytes at most)
 * and port; false when it is not of that form. */
bool bench_split_addr(const char *addr, char *host, size_t host_len, int *port);

#endif
