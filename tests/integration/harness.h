/* harness.h: what the integration suites share: real clawqd processes on
 * free 127.0.0.1 ports with temporary data directories, started, stopped
 * (SIGTERM) and killed (SIGKILL) by PID, plus small helpers (clocks,
 * clawqctl runs, /proc readings). Test code only.
 *
 * Every broker lives in its own directory under a per-TCase root that the
 * parent Check process makes (th_tcase_new's unchecked fixture): the data
 * directory, clawqd's stderr (clawqd.log) and its PID (clawqd.pid). A test
 * that passes removes its brokers (th_broker_free). A test that fails ends
 * its process at the failed assert, so its directories stay behind: the
 * parent's teardown then prints each leftover clawqd.log, kills a clawqd
 * still running and removes the root. clawqd also gets SIGKILL when the
 * test process that started it dies (PR_SET_PDEATHSIG).
 *
 * The clawqd and clawqctl binaries are the ones of the build directory that
 * built the suite (CLAWQD_PATH, CLAWQCTL_PATH), so the sanitizer build tests
 * the sanitizer daemon; the environment variables CLAWQ_IT_CLAWQD and
 * CLAWQ_IT_CLAWQCTL override them. */
#ifndef CLAWQ_IT_HARNESS_H
#define CLAWQ_IT_HARNESS_H

#include <check.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "clawq.h"

#define TH_MAX_ARGS 16

typedef struct th_broker {
    pid_t pid; /* 0 when not running */
    char dir[320];
    char data[352];
    char log_path[352];
    uint16_t port, raft_port, http_port, scaler_port;
    char endpoint[32];       /* "127.0.0.1:port" for clients */
    char *args[TH_MAX_ARGS]; /* extra clawqd flags, owned */
    int n_args;
} th_broker;

/* A TCase named name with the harness's unchecked fixture (the root
 * directory, the leftover report) and a timeout of timeout_s seconds. */
TCase *th_tcase_new(const char *name, double timeout_s);

/* Runs suite s in the usual way (CK_ENV output) and returns the process
 * exit status: 0 when every test passed. */
int th_run_suite(Suite *s);

/* Starts clawqd on a fresh data directory with free ports, plus the extra
 * flags given as a NULL-terminated list, and waits (bounded) until it
 * answers Hello naming a leader and accepts writes. Asserts on failure. */
th_broker *th_broker_start(const char *arg, ...);

/* Starts clawqd again on b's data directory and ports (new ports if the old
 * ones were taken) and waits until it is ready. b must be stopped. */
void th_broker_restart(th_broker *b);

/* As th_broker_restart, but returns as soon as Hello names a leader,
 * without waiting for writes to be accepted: what a client that connects
 * right after a start sees. */
void th_broker_restart_hello(th_broker *b);

/* SIGTERM, then waits up to timeout_ms for the exit. Returns the exit code,
 * or 128 + signal when it died by a signal; -1 when it did not exit in time
 * (it is then killed with SIGKILL). */
int th_broker_stop(th_broker *b, uint32_t timeout_ms);

/* SIGKILL and reap. */
void th_broker_kill(th_broker *b);

/* True while clawqd is running (not exited, not a zombie). */
bool th_broker_alive(th_broker *b);

/* Kills clawqd when it still runs, removes its directory and frees b.
 * NULL is a no-op. */
void th_broker_free(th_broker *b);

/* A libclawq handle connected to b (asserting success), request timeout
 * 20 s. */
clawq_client *th_connect(const th_broker *b);

/* Resident set size of pid in KiB (VmRSS), or -1. */
long th_rss_kb(pid_t pid);

/* Monotonic milliseconds. */
uint64_t th_now_ms(void);

/* A free TCP port on 127.0.0.1, none of avoid[0..n_avoid). */
uint16_t th_free_port(const uint16_t *avoid, int n_avoid);

/* The clawqd binary the tests run. */
const char *th_clawqd_path(void);

/* Sleeps ms milliseconds. */
void th_sleep_ms(uint32_t ms);

/* Runs clawqctl --server <b> with the NULL-terminated arguments, bounded to
 * 30 s. Writes stdout (NUL-terminated, truncated to out_len) to out when it
 * is not NULL and returns the exit code (128 + signal when killed). */
int th_ctl(const th_broker *b, char *out, size_t out_len, const char *arg, ...);

/* ck_assert_int_eq for libclawq calls that prints the error's name and the
 * handle's message as well. */
#define th_assert_ok(c, expr)                                                  \
    do {                                                                       \
        int th_rc_ = (expr);                                                   \
        ck_assert_msg(th_rc_ == 0, "%s = %d (%s): %s", #expr, th_rc_,          \
                      clawq_err_name(th_rc_), clawq_errmsg(c));                \
    } while (0)

#endif
