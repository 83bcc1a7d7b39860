/* task.h: conversion of decoded protocol messages (clawq.pb-c.h) into the
 * public structures of clawq.h. Owns nothing beyond what it returns. */
#ifndef CLAWQ_TASK_H
#define CLAWQ_TASK_H

#include <stddef.h>

#include "clawq.h"
#include "clawq.pb-c.h"

/* Copies n decoded tasks into one malloc'd block: the clawq_task array
 * followed by everything its tasks point to, so that clawq_tasks_free()
 * (free) releases it all. Returns the block, or NULL when n is 0 (then
 * *err is 0) or on failure (*err CLAWQ_ENOMEM). */
clawq_task *clawq__tasks_copy(Clawq__Task *const *src, size_t n, int *err);

/* Copies a decoded QueueStats into *dst (zeroing absent fields; a name
 * longer than CLAWQ_MAX_QUEUE_NAME is truncated). */
void clawq__queue_stats_copy(const Clawq__QueueStats *src,
                             clawq_queue_stats *dst);

#endif /* CLAWQ_TASK_H */
