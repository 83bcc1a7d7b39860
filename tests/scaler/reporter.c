/* reporter: a stand-in worker for the scaler test. Connects as
 * "reporter", sends report(QUEUE, INFLIGHT, CAPACITY) every 200 ms for
 * SECONDS, then exits 0 (1 on any error).
 *
 *   reporter SERVER QUEUE INFLIGHT CAPACITY SECONDS */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "clawq.h"

int main(int argc, char **argv)
{
    clawq_options o;
    clawq_client *c;
    struct timespec pause = {0, 200 * 1000 * 1000};
    long rounds;
    int rc;

    if (argc != 6) {
        fprintf(stderr,
                "usage: reporter SERVER QUEUE INFLIGHT CAPACITY SECONDS\n");
        return 2;
    }
    clawq_options_init(&o);
    o.client_name = "reporter";
    rc = clawq_connect(argv[1], &o, &c);
    if (rc != 0) {
        fprintf(stderr, "reporter: connect: %s\n", clawq_strerror(rc));
        return 1;
    }
    for (rounds = strtol(argv[5], NULL, 10) * 5; rounds > 0; rounds--) {
        rc = clawq_report(c, argv[2], (uint32_t)strtoul(argv[3], NULL, 10),
                          (uint32_t)strtoul(argv[4], NULL, 10));
        if (rc != 0) {
            fprintf(stderr, "reporter: report: %s\n", clawq_errmsg(c));
            clawq_close(c);
            return 1;
        }
        nanosleep(&pause, NULL);
    }
    clawq_close(c);
    return 0;
}
