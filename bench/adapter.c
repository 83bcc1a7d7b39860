/* adapter: the table of compiled-in targets and the helpers they share. */
#include "adapter.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const bench_adapter *const adapters[] = {
    &bench_clawq,
    &bench_beanstalkd,
#ifdef BENCH_HAVE_REDIS
    &bench_redis,
#endif
#ifdef BENCH_HAVE_NATS
    &bench_nats,
#endif
};

const bench_adapter *bench_adapter_find(const char *name)
{
    for (size_t i = 0; i < sizeof(adapters) / sizeof(adapters[0]); i++)
        if (strcmp(adapters[i]->name, name) == 0)
            return adapters[i];
    return NULL;
}

const char *bench_adapter_names(void)
{
    static char names[128];

    if (names[0] == '\0') {
        size_t off = 0;
        for (size_t i = 0; i < sizeof(adapters) / sizeof(adapters[0]); i++)
            off += (size_t)snprintf(names + off, sizeof(names) - off, "%s%s",
                                    i > 0 ? " " : "", adapters[i]->name);
    }
    return names;
}

int bench_fail(bench_conn *c, int rc, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
    return rc;
}

bool bench_split_addr(const char *addr, char *host, size_t host_len, int *port)
{
    const char *colon = strrchr(addr, ':');
    char *end;
    long p;

    if (colon == NULL || colon == addr || (size_t)(colon - addr) >= host_len)
        return false;
    p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || p <= 0 || p > 65535)
        return false;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    *port = (int)p;
    return true;
}
