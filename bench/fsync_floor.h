/* fsync_floor: the disk's fsync floor, shared by store-bench and
 * clawq-bench, so durable figures can be read against the physical limit. */
#ifndef CLAWQ_BENCH_FSYNC_FLOOR_H
#define CLAWQ_BENCH_FSYNC_FLOOR_H

/* Writes one 4 KiB block at offset 0 of a temporary file in dir and
 * fdatasyncs it, n times (the pattern of a preallocated log segment), and
 * returns the mean time of one write + fdatasync in ms; < 0 on an error
 * (printed to stderr with prog's name). The file is removed. */
double fsync_floor_ms(const char *prog, const char *dir, int n);

/* Measures with n = 500 and prints "fsync floor: ... in DIR" on stdout. */
void fsync_floor_print(const char *prog, const char *dir);

#endif
