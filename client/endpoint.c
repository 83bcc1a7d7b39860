/* endpoint.c: parsing of the endpoint list given to clawq_connect and of
 * the leader addresses the broker names in Hello and NOT_LEADER answers.
 * Both come through the same parser, so a broker's address is held to the
 * same rules as the user's. */
#include "endpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clawq.h"

static int is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

static int port_parse(const char *s, size_t len, uint16_t *port)
{
    uint32_t v = 0;

    if (len == 0 || len > 5)
        return CLAWQ_EINVALID;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return CLAWQ_EINVALID;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v == 0 || v > 65535)
        return CLAWQ_EINVALID;
    *port = (uint16_t)v;
    return 0;
}

int clawq__endpoint_parse(const char *s, size_t len, uint16_t default_port,
                          clawq__endpoint *ep)
{
    const char *host;
    size_t host_len;
    uint16_t port = default_port;

    if (s == NULL || len == 0)
        return CLAWQ_EINVALID;
    for (size_t i = 0; i < len; i++)
        if (is_space(s[i]) || s[i] == '\0' || s[i] == ',')
            return CLAWQ_EINVALID;
    if (s[0] == '[') {
        const char *close = memchr(s, ']', len);
        size_t rest;

        if (close == NULL)
            return CLAWQ_EINVALID;
        host = s + 1;
        host_len = (size_t)(close - host);
        rest = len - (size_t)(close - s) - 1;
        if (rest > 0) {
            if (close[1] != ':' || port_parse(close + 2, rest - 1, &port) != 0)
                return CLAWQ_EINVALID;
        }
        if (memchr(host, '[', host_len) != NULL)
            return CLAWQ_EINVALID;
    } else {
        const char *colon = memchr(s, ':', len);

        if (memchr(s, ']', len) != NULL)
            return CLAWQ_EINVALID;
        if (colon != NULL) {
            /* A second colon without brackets is an unbracketed IPv6
             * literal: ambiguous with a port, so refused. */
            size_t after = len - (size_t)(colon - s) - 1;

            if (memchr(colon + 1, ':', after) != NULL)
                return CLAWQ_EINVALID;
            if (port_parse(colon + 1, after, &port) != 0)
                return CLAWQ_EINVALID;
            host_len = (size_t)(colon - s);
        } else {
            host_len = len;
        }
        host = s;
    }
    if (host_len == 0 || host_len > CLAWQ__MAX_HOST || port == 0)
        return CLAWQ_EINVALID;
    memcpy(ep->host, host, host_len);
    ep->host[host_len] = '\0';
    ep->port = port;
    return 0;
}

int clawq__endpoints_parse(const char *s, uint16_t default_port,
                           clawq__endpoint **out, size_t *n)
{
    clawq__endpoint tmp[CLAWQ__MAX_ENDPOINTS];
    size_t count = 0;
    const char *p = s;

    if (s == NULL || out == NULL || n == NULL)
        return CLAWQ_EINVALID;
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *end = comma != NULL ? comma : p + strlen(p);
        const char *b = p;
        const char *e = end;

        while (b < e && is_space(*b))
            b++;
        while (e > b && is_space(e[-1]))
            e--;
        if (count == CLAWQ__MAX_ENDPOINTS)
            return CLAWQ_EINVALID;
        if (clawq__endpoint_parse(b, (size_t)(e - b), default_port,
                                  &tmp[count]) != 0)
            return CLAWQ_EINVALID;
        count++;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    *out = malloc(count * sizeof(**out));
    if (*out == NULL)
        return CLAWQ_ENOMEM;
    memcpy(*out, tmp, count * sizeof(**out));
    *n = count;
    return 0;
}

char *clawq__endpoint_format(const clawq__endpoint *ep, char *buf, size_t len)
{
    if (strchr(ep->host, ':') != NULL)
        snprintf(buf, len, "[%s]:%u", ep->host, (unsigned)ep->port);
    else
        snprintf(buf, len, "%s:%u", ep->host, (unsigned)ep->port);
    return buf;
}
