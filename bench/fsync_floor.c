/* fsync_floor: 4 KiB pwrite + fdatasync in a loop. */
#include "fsync_floor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double fsync_floor_ms(const char *prog, const char *dir, int n)
{
    char path[4096], block[4096];
    double t0, per;
    int fd, i;

    snprintf(path, sizeof(path), "%s/fsync-floor.XXXXXX", dir);
    fd = mkstemp(path);
    if (fd < 0) {
        fprintf(stderr, "%s: fsync floor in %s: %s\n", prog, dir,
                strerror(errno));
        return -1;
    }
    memset(block, 'f', sizeof(block));
    t0 = now_s();
    for (i = 0; i < n; i++) {
        if (pwrite(fd, block, sizeof(block), 0) != (ssize_t)sizeof(block) ||
            fdatasync(fd) != 0) {
            fprintf(stderr, "%s: fsync floor: %s\n", prog, strerror(errno));
            break;
        }
    }
    per = (now_s() - t0) / (i > 0 ? i : 1);
    close(fd);
    unlink(path);
    return i > 0 ? per * 1000 : -1;
}

void fsync_floor_print(const char *prog, const char *dir)
{
    double ms = fsync_floor_ms(prog, dir, 500);

    if (ms > 0)
        printf("fsync floor: %.3f ms per 4 KiB write + fdatasync (%.0f/s) in "
               "%s\n",
               ms, 1000 / ms, dir);
}
