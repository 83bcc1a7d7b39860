/* fuzz.h: what every fuzz target defines. A target is built twice: with
 * libFuzzer (-Dfuzz=true, clang) for real fuzzing, and with replay.c as a
 * plain program that runs the target's built-in seeds and any corpus files
 * named on its command line, as part of scripts/dev test. */
#ifndef CLAWQ_FUZZ_H
#define CLAWQ_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Seed number i into a malloc'd *buf; returns 0 when there is no seed i. */
int fuzz_seed(int i, uint8_t **buf, size_t *len);

#endif
