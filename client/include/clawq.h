/* clawq.h: the public interface of libclawq, the clawq client library.
 *
 * This is the only installed header. It owns the error table that the
 * broker, the client library, clawqctl and the wire protocol share: every
 * status has one name, one negative number and one message, generated from
 * CLAWQ_ERRNO_MAP below. Numbers are never renumbered or reused; new codes
 * are appended. The wire protocol carries the absolute value (0 = OK).
 *
 * Functions return 0 on success or a negative clawq_err. The client API
 * (connect, put, pull, ack, ...) arrives with the server issue.
 */
#ifndef CLAWQ_H
#define CLAWQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CLAWQ_VERSION_MAJOR 0
#define CLAWQ_VERSION_MINOR 1
#define CLAWQ_VERSION_PATCH 0
#define CLAWQ_VERSION_HEX                                                      \
    ((CLAWQ_VERSION_MAJOR << 16) | (CLAWQ_VERSION_MINOR << 8) |                \
     CLAWQ_VERSION_PATCH)

#if defined(CLAWQ_BUILDING) && defined(__GNUC__)
#define CLAWQ_EXTERN __attribute__((visibility("default")))
#else
#define CLAWQ_EXTERN
#endif

/* X(name, number, message). The first thirteen are the wire statuses of
 * DESIGN.md section 5 in that order; the rest are the client's own or
 * local conditions. Append only. */
#define CLAWQ_ERRNO_MAP(X)                                                     \
    X(INVALID, -1, "invalid argument or request")                              \
    X(NOT_FOUND, -2, "not found")                                              \
    X(LEASE_LOST, -3, "lease lost: expired or re-issued")                      \
    X(NOT_LEADER, -4, "not the leader")                                        \
    X(QUEUE_FULL, -5, "queue full")                                            \
    X(UNAVAILABLE, -6, "unavailable")                                          \
    X(UNAUTHENTICATED, -7, "unauthenticated")                                  \
    X(FORBIDDEN, -8, "forbidden")                                              \
    X(TOO_LARGE, -9, "too large")                                              \
    X(TIMEOUT, -10, "timed out")                                               \
    X(SHUTTING_DOWN, -11, "shutting down")                                     \
    X(INTERNAL, -12, "internal error")                                         \
    X(CONN_LOST, -13, "connection lost")                                       \
    X(PROTOCOL, -14, "protocol error")                                         \
    X(NOMEM, -15, "out of memory")                                             \
    X(STORAGE_FULL, -16, "storage full")                                       \
    X(CORRUPT, -17, "corrupt data")                                            \
    X(IO, -18, "input/output error")

typedef enum clawq_err {
    CLAWQ_OK = 0,
#define CLAWQ__ERR_ENUM(name, num, msg) CLAWQ_E##name = (num),
    CLAWQ_ERRNO_MAP(CLAWQ__ERR_ENUM)
#undef CLAWQ__ERR_ENUM
} clawq_err;

/* The message of an error code: a static string, never NULL ("unknown
 * error" for a number outside the table). */
CLAWQ_EXTERN const char *clawq_strerror(int err);

/* The name of an error code without the prefix ("LEASE_LOST"), "OK" for 0,
 * or "UNKNOWN": a static string, never NULL. */
CLAWQ_EXTERN const char *clawq_err_name(int err);

#ifdef __cplusplus
}
#endif

#endif /* CLAWQ_H */
