/* endpoint.h: the endpoint list of libclawq ("host:port,host:port"). Owns
 * the parsed array; pure logic, no I/O. */
#ifndef CLAWQ_ENDPOINT_H
#define CLAWQ_ENDPOINT_H

#include <stddef.h>
#include <stdint.h>

#define CLAWQ__MAX_ENDPOINTS 64
#define CLAWQ__MAX_HOST 255

typedef struct clawq__endpoint {
    char host[CLAWQ__MAX_HOST + 1]; /* without IPv6 brackets */
    uint16_t port;
} clawq__endpoint;

/* Parses one "host[:port]" or "[v6]:port" of len bytes into *ep; a missing
 * port is default_port. Returns 0 or CLAWQ_EINVALID (empty host, host too
 * long, bad or zero port, unbalanced brackets, whitespace inside). */
int clawq__endpoint_parse(const char *s, size_t len, uint16_t default_port,
                          clawq__endpoint *ep);

/* Parses a comma-separated list (spaces around items ignored, empty items
 * rejected) of 1..CLAWQ__MAX_ENDPOINTS endpoints. On success *out is a
 * malloc'd array of *n entries the caller frees with free(). Returns 0,
 * CLAWQ_EINVALID or CLAWQ_ENOMEM. */
int clawq__endpoints_parse(const char *s, uint16_t default_port,
                           clawq__endpoint **out, size_t *n);

/* Formats ep as "host:port" ("[v6]:port" when the host has a colon) into
 * buf of len bytes (truncating). Returns buf. */
char *clawq__endpoint_format(const clawq__endpoint *ep, char *buf, size_t len);

#endif /* CLAWQ_ENDPOINT_H */
