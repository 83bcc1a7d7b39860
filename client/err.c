/* err.c: clawq_strerror() and clawq_err_name(), generated from the one
 * error table in clawq.h. */
#include "clawq.h"

const char *clawq_strerror(int err)
{
    switch (err) {
    case CLAWQ_OK:
        return "success";
#define CLAWQ__ERR_MSG(name, num, msg)                                         \
    case (num):                                                                \
        return (msg);
        CLAWQ_ERRNO_MAP(CLAWQ__ERR_MSG)
#undef CLAWQ__ERR_MSG
    default:
        return "unknown error";
    }
}

const char *clawq_err_name(int err)
{
    switch (err) {
    case CLAWQ_OK:
        return "OK";
#define CLAWQ__ERR_NAME(name, num, msg)                                        \
    case (num):                                                                \
        return #name;
        CLAWQ_ERRNO_MAP(CLAWQ__ERR_NAME)
#undef CLAWQ__ERR_NAME
    default:
        return "UNKNOWN";
    }
}
