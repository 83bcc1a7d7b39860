/* helpers.h: what the unit suites share: temporary store directories,
 * op builders and a one-call apply. Test code only. */
#ifndef CLAWQ_TEST_HELPERS_H
#define CLAWQ_TEST_HELPERS_H

#include <check.h>

#include "cmd.h"
#include "fsm.h"
#include "store.h"

/* A fresh directory under $TMPDIR (or /tmp); malloc'd path. */
char *th_tmpdir(void);
/* Removes a directory tree made by th_tmpdir and frees the path. */
void th_rmdir(char *path);

/* Opens a store in dir (asserting success); nosync as MDB_NOSYNC. */
store *th_store_open(const char *dir, bool nosync);

/* Encodes ops as one command stamped now_ms, applies it at ++*index and
 * asserts fsm_apply returned 0. Returns res->ops[0].status for
 * convenience. */
int th_apply(store *s, uint64_t *index, uint64_t now_ms, const cmd_op *ops,
             size_t n, fsm_result *res);

/* Op builders (strings are borrowed and must outlive the apply). */
cmd_op th_put(const char *queue, const char *payload, uint8_t priority);
cmd_op th_lease(const char *queue, uint32_t max, uint32_t lease_ms);
cmd_op th_ack(uint64_t id, uint64_t lease_id);
cmd_op th_nack(uint64_t id, uint64_t lease_id, int64_t delay_ms,
               const char *error);
cmd_op th_fail(uint64_t id, uint64_t lease_id, const char *error);
cmd_op th_tick(void);
cmd_op th_queue(int type, const char *queue);

#endif
