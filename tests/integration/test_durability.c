/* test_durability.c: what a broker acknowledged survives its process:
 * 10,000 acknowledged puts come back exactly once after kill -9; acks and
 * leases made before a kill -9 hold after the restart; SIGTERM exits 0 and
 * the restart sees everything. Each test restarts its broker on the same
 * data directory, and runs three times: with the store in memory (rebuilt
 * from the Raft log at the restart), in memory with a snapshot every few
 * entries (rebuilt from a snapshot plus the log after it), and on disk
 * (kept; only the log after its applied index is replayed). */
#include <check.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define N_TASKS 10000
#define BATCH 1000

static th_broker *B;
static bool Snapshots; /* the mode snapshots every few entries */

/* Lines of B's log (every start appends to it) that contain both a and b. */
static int log_count(const char *a, const char *b)
{
    char line[1024];
    int n = 0;
    FILE *f = fopen(B->log_path, "r");

    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof(line), f) != NULL)
        if (strstr(line, a) != NULL && strstr(line, b) != NULL)
            n++;
    fclose(f);
    return n;
}

/* Whether B's Raft directory holds a whole snapshot of Raft index `min`
 * or later: libraft renames its metadata file ("snapshot-TERM-INDEX-
 * MS.meta") into place first, then the data file. */
static bool snapshot_on_disk(unsigned long long min)
{
    char pattern[400];
    glob_t g;
    bool found = false;

    snprintf(pattern, sizeof(pattern), "%s/raft/snapshot-*.meta", B->data);
    if (glob(pattern, 0, NULL, &g) != 0)
        return false;
    for (size_t i = 0; i < g.gl_pathc && !found; i++) {
        char *data = strdup(g.gl_pathv[i]);
        const char *base;
        unsigned long long term, index;

        ck_assert_ptr_nonnull(data);
        base = strrchr(data, '/') + 1;
        data[strlen(data) - strlen(".meta")] = '\0';
        found = sscanf(base, "snapshot-%llu-%llu-", &term, &index) == 2 &&
                index >= min && access(data, F_OK) == 0;
        free(data);
    }
    globfree(&g);
    return found;
}

/* Before a kill or stop: with frequent snapshots, waits (bounded) until
 * one that holds some of the test's commands is on disk (index 1 is the
 * bootstrap configuration, 2 or 3 the leader recording its address: each
 * test makes more than 4 entries), as libraft writes snapshots after the
 * entries they cover. */
static void wait_snapshot(void)
{
    for (int i = 0; Snapshots && i < 500; i++) {
        if (snapshot_on_disk(5))
            return;
        th_sleep_ms(10);
    }
    ck_assert_msg(!Snapshots, "no snapshot was written");
}

/* After a restart: with frequent snapshots, the restarted store was
 * rebuilt from one (and the log after it), so what the test checks next
 * went through a snapshot restore. */
static void check_restart(void)
{
    if (Snapshots)
        ck_assert_int_ge(log_count("repl.restore ", "replaced=yes"), 1);
    else
        ck_assert_int_eq(log_count("repl.restore ", "replaced=yes"), 0);
}

/* The "clawqd.map" line of B's first start: with --map-max left at 0,
 * half of the memory the node may use in memory mode, 64 GiB on disk. */
static void check_map(bool memory)
{
    char line[1024];
    unsigned long long size = 0, max = 0, mem = 0;
    bool found = false;
    FILE *f = fopen(B->log_path, "r");

    ck_assert_ptr_nonnull(f);
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        const char *p = strstr(line, "clawqd.map ");
        found = p != NULL && sscanf(p,
                                    "clawqd.map map_size=%llu map_max=%llu "
                                    "memory=%llu",
                                    &size, &max, &mem) == 3;
    }
    fclose(f);
    ck_assert_msg(found, "no clawqd.map line");
    ck_assert_uint_le(size, max);
    if (memory) {
        ck_assert_uint_le(max, mem / 2);
        ck_assert_uint_gt(max, mem / 2 - (1ull << 20));
    } else {
        ck_assert_uint_eq(max, 64ull << 30);
    }
}

static void setup_memory(void)
{
    Snapshots = false;
    B = th_broker_start(NULL);
    ck_assert_int_eq(log_count("clawqd.store ", "mode=memory"), 1);
    check_map(true);
}

static void setup_memory_snapshots(void)
{
    /* A snapshot every 2 entries, 1 kept after it: a restart restores a
     * snapshot, then replays at most a few entries. Each snapshot starts
     * a new log segment, faster than zero-filling can prepare them, so the
     * segments are preallocated instead. */
    Snapshots = true;
    B = th_broker_start("--snapshot-threshold=2", "--snapshot-log-size=0",
                        "--snapshot-trailing=1", "--log-prezero=false", NULL);
}

static void setup_disk(void)
{
    Snapshots = false;
    B = th_broker_start("--store=disk", NULL);
    ck_assert_int_eq(log_count("clawqd.store ", "mode=disk"), 1);
    check_map(false);
}

static void teardown(void)
{
    th_broker_free(B);
    B = NULL;
}

/* Puts n tasks "<prefix>-<i>" in batches of BATCH; ids[i] gets task i's
 * id. */
static void put_many(clawq_client *c, const char *queue, const char *prefix,
                     int n, uint64_t *ids)
{
    static clawq_put_task tasks[BATCH];
    static clawq_put_result res[BATCH];
    static char payloads[BATCH][32];

    for (int base = 0; base < n; base += BATCH) {
        int k = n - base < BATCH ? n - base : BATCH;
        for (int i = 0; i < k; i++) {
            snprintf(payloads[i], sizeof(payloads[i]), "%s-%d", prefix,
                     base + i);
            clawq_put_task_init(&tasks[i]);
            tasks[i].payload = payloads[i];
            tasks[i].payload_len = strlen(payloads[i]);
        }
        th_assert_ok(c, clawq_put_batch(c, queue, tasks, (size_t)k, res));
        for (int i = 0; i < k; i++) {
            ck_assert_int_eq(res[i].status, 0);
            ck_assert_uint_gt(res[i].id, 0);
            ids[base + i] = res[i].id;
        }
    }
}

/* Index of id in ids[0..n) (any order), or -1. */
static int find_id(const uint64_t *ids, int n, uint64_t id)
{
    for (int i = 0; i < n; i++)
        if (ids[i] == id)
            return i;
    return -1;
}

/* Pulls everything ready on queue (bounded), checking that every task is
 * one of ids[0..n) with payload "<prefix>-<base + index>", delivered once.
 * Returns the number pulled; the leases are kept. */
static int pull_all_once(clawq_client *c, const char *queue, const char *prefix,
                         int base, const uint64_t *ids, int n)
{
    char *seen = calloc((size_t)n, 1);
    char want[32];
    int got = 0;

    ck_assert_ptr_nonnull(seen);
    /* ids are assigned in order, so a sorted copy is not needed: check
     * they ascend and look tasks up by offset from the first. */
    for (int i = 1; i < n; i++)
        ck_assert_uint_gt(ids[i], ids[i - 1]);
    for (int round = 0; round < n / 100 + 20; round++) {
        clawq_task *t = NULL;
        size_t k = 0;

        th_assert_ok(c, clawq_pull(c, queue, 1024, 0, 600000, &t, &k));
        if (k == 0)
            break;
        for (size_t j = 0; j < k; j++) {
            int i = -1;
            uint64_t off = t[j].id - ids[0];
            if (t[j].id >= ids[0] && off < (uint64_t)n && ids[off] == t[j].id)
                i = (int)off;
            else
                i = find_id(ids, n, t[j].id);
            ck_assert_msg(i >= 0, "task %llu was never put",
                          (unsigned long long)t[j].id);
            ck_assert_msg(!seen[i], "task %llu delivered twice",
                          (unsigned long long)t[j].id);
            seen[i] = 1;
            snprintf(want, sizeof(want), "%s-%d", prefix, base + i);
            ck_assert_uint_eq(t[j].payload_len, strlen(want));
            ck_assert_str_eq((const char *)t[j].payload, want);
            ck_assert_uint_eq(t[j].attempt, 1);
            got++;
        }
        clawq_tasks_free(t);
    }
    free(seen);
    return got;
}

START_TEST(test_kill9_keeps_acknowledged_puts)
{
    uint64_t *ids = calloc(N_TASKS, sizeof(*ids));
    clawq_client *c = th_connect(B);
    clawq_queue_stats s;
    uint64_t t0 = th_now_ms();

    ck_assert_ptr_nonnull(ids);
    put_many(c, "durable", "task", N_TASKS, ids);
    fprintf(stderr, "durability: %d puts acknowledged in %llu ms\n", N_TASKS,
            (unsigned long long)(th_now_ms() - t0));
    clawq_close(c);

    wait_snapshot();
    th_broker_kill(B);
    t0 = th_now_ms();
    th_broker_restart(B);
    check_restart();
    fprintf(stderr, "durability: restart after kill -9 ready in %llu ms\n",
            (unsigned long long)(th_now_ms() - t0));

    c = th_connect(B);
    memset(&s, 0, sizeof(s));
    th_assert_ok(c, clawq_queue_stats_get(c, "durable", &s));
    ck_assert_uint_eq(s.ready, N_TASKS);
    ck_assert_uint_eq(s.put_total, N_TASKS);
    ck_assert_uint_eq(s.leased, 0);
    ck_assert_int_eq(pull_all_once(c, "durable", "task", 0, ids, N_TASKS),
                     N_TASKS);
    th_assert_ok(c, clawq_queue_stats_get(c, "durable", &s));
    ck_assert_uint_eq(s.ready, 0);
    ck_assert_uint_eq(s.leased, N_TASKS);
    /* New ids continue after the old ones: never reused. */
    {
        clawq_put_task t;
        uint64_t id = 0;
        clawq_put_task_init(&t);
        th_assert_ok(c, clawq_put(c, "durable", &t, &id, NULL));
        ck_assert_uint_gt(id, ids[N_TASKS - 1]);
    }
    clawq_close(c);
    free(ids);
}
END_TEST

START_TEST(test_kill9_keeps_acks_and_leases)
{
    uint64_t ids[300];
    clawq_lease_ref acked[100], held[100];
    int statuses[100];
    clawq_client *c = th_connect(B);
    clawq_queue_stats s;
    clawq_task *t = NULL, *g = NULL;
    size_t n = 0;

    put_many(c, "held", "h", 300, ids);
    /* 100 acked */
    th_assert_ok(c, clawq_pull(c, "held", 100, 0, 600000, &t, &n));
    ck_assert_uint_eq(n, 100);
    for (int i = 0; i < 100; i++) {
        ck_assert_uint_eq(t[i].id, ids[i]);
        acked[i].id = t[i].id;
        acked[i].lease_id = t[i].lease_id;
    }
    clawq_tasks_free(t);
    th_assert_ok(c, clawq_ack_batch(c, acked, 100, statuses));
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(statuses[i], 0);
    /* 100 leased for ten minutes */
    th_assert_ok(c, clawq_pull(c, "held", 100, 0, 600000, &t, &n));
    ck_assert_uint_eq(n, 100);
    for (int i = 0; i < 100; i++) {
        ck_assert_uint_eq(t[i].id, ids[100 + i]);
        held[i].id = t[i].id;
        held[i].lease_id = t[i].lease_id;
    }
    clawq_tasks_free(t);
    clawq_close(c);

    wait_snapshot();
    th_broker_kill(B);
    th_broker_restart(B);
    check_restart();
    c = th_connect(B);

    memset(&s, 0, sizeof(s));
    th_assert_ok(c, clawq_queue_stats_get(c, "held", &s));
    ck_assert_uint_eq(s.ready, 100);
    ck_assert_uint_eq(s.leased, 100);
    ck_assert_uint_eq(s.acked_total, 100);
    ck_assert_uint_eq(s.leased_total, 200);
    ck_assert_uint_eq(s.put_total, 300);
    /* acked: gone for good */
    for (int i = 0; i < 100; i += 33) {
        ck_assert_int_eq(clawq_task_get(c, acked[i].id, &g), CLAWQ_ENOT_FOUND);
    }
    /* leased: still with the same lease */
    th_assert_ok(c, clawq_task_get(c, held[0].id, &g));
    ck_assert_int_eq(g[0].state, CLAWQ_STATE_LEASED);
    ck_assert_uint_eq(g[0].lease_id, held[0].lease_id);
    clawq_tasks_free(g);
    /* only the 100 never pulled are delivered, once each */
    ck_assert_int_eq(pull_all_once(c, "held", "h", 0, ids, 300), 100);
    th_assert_ok(c, clawq_queue_stats_get(c, "held", &s));
    ck_assert_uint_eq(s.leased, 200);
    /* the leases from before the kill are still good: ack them */
    th_assert_ok(c, clawq_ack_batch(c, held, 100, statuses));
    /* and the acks from before the kill stay acked */
    ck_assert_int_eq(clawq_ack(c, acked[0].id, acked[0].lease_id),
                     CLAWQ_ELEASE_LOST);
    th_assert_ok(c, clawq_queue_stats_get(c, "held", &s));
    ck_assert_uint_eq(s.leased, 100);
    ck_assert_uint_eq(s.acked_total, 200);
    clawq_close(c);
}
END_TEST

START_TEST(test_sigterm_exits_0_and_keeps_all)
{
    uint64_t ids[2000];
    clawq_lease_ref acked[500];
    clawq_client *c = th_connect(B), *idle;
    clawq_queue_stats s;
    clawq_task *t = NULL;
    size_t n = 0;
    int st;
    uint64_t t0;

    put_many(c, "term", "t", 2000, ids);
    th_assert_ok(c, clawq_pull(c, "term", 500, 0, 600000, &t, &n));
    ck_assert_uint_eq(n, 500);
    for (size_t i = 0; i < n; i++) {
        acked[i].id = t[i].id;
        acked[i].lease_id = t[i].lease_id;
    }
    clawq_tasks_free(t);
    th_assert_ok(c, clawq_ack_batch(c, acked, 500, NULL));
    clawq_close(c);

    /* A client that stays connected does not hold the shutdown up. */
    idle = th_connect(B);
    wait_snapshot();
    t0 = th_now_ms();
    st = th_broker_stop(B, 20000);
    fprintf(stderr, "durability: SIGTERM exit %d after %llu ms\n", st,
            (unsigned long long)(th_now_ms() - t0));
    ck_assert_int_eq(st, 0);
    clawq_close(idle);

    th_broker_restart(B);
    check_restart();
    c = th_connect(B);
    memset(&s, 0, sizeof(s));
    th_assert_ok(c, clawq_queue_stats_get(c, "term", &s));
    ck_assert_uint_eq(s.ready, 1500);
    ck_assert_uint_eq(s.leased, 0);
    ck_assert_uint_eq(s.acked_total, 500);
    ck_assert_int_eq(pull_all_once(c, "term", "t", 500, ids + 500, 1500), 1500);
    clawq_close(c);
    /* and a second clean stop */
    ck_assert_int_eq(th_broker_stop(B, 20000), 0);
}
END_TEST

/* ---- snapshots serialised off the loop ---- */

static void put_one(clawq_client *c, const char *queue, const void *payload,
                    size_t len)
{
    clawq_put_task t;
    uint64_t id = 0;

    clawq_put_task_init(&t);
    t.payload = payload;
    t.payload_len = len;
    th_assert_ok(c, clawq_put(c, queue, &t, &id, NULL));
    ck_assert_uint_gt(id, 0);
}

/* Puts one small task at a time (one log entry each) until the node logs
 * that a snapshot's serialisation began. */
static int put_until_snapshot_begins(clawq_client *c, const char *queue)
{
    uint64_t t0 = th_now_ms();
    int n = 0;

    while (log_count("repl.snapshot_begin ", "index=") == 0) {
        put_one(c, queue, "x", 1);
        n++;
        ck_assert_msg(th_now_ms() - t0 < 30000,
                      "no snapshot began after %d puts", n);
    }
    return n;
}

/* A snapshot's serialisation, slowed to 3 s by fault injection, runs on a
 * worker thread: puts are answered meanwhile. (libraft 0.22 calls
 * snapshot_async on the loop; serialising there held every request for as
 * long as the store took to copy: 245 ms for 128 MB.) */
START_TEST(test_snapshot_serialised_off_the_loop)
{
    clawq_client *c;
    uint64_t worst = 0, t0;
    int before, during = 0;

    setenv("CLAWQ_TEST_SNAPSHOT_SERIALIZE_DELAY_MS", "3000", 1);
    B = th_broker_start("--snapshot-threshold=64", "--snapshot-log-size=0",
                        "--log-level=debug", NULL);
    unsetenv("CLAWQ_TEST_SNAPSHOT_SERIALIZE_DELAY_MS");
    c = th_connect(B);
    before = put_until_snapshot_begins(c, "off");
    t0 = th_now_ms();
    while (log_count("repl.snapshot ", "serialize_ms=") == 0) {
        uint64_t a = th_now_ms();
        put_one(c, "off", "y", 1);
        if (th_now_ms() - a > worst)
            worst = th_now_ms() - a;
        during++;
        ck_assert_msg(th_now_ms() - t0 < 30000, "the snapshot never ended");
    }
    fprintf(stderr,
            "snapshot off the loop: %d puts before, %d during the 3 s "
            "serialisation, slowest %llu ms\n",
            before, during, (unsigned long long)worst);
    ck_assert_int_ge(during, 10);
    ck_assert_uint_lt(worst, 1500);
    ck_assert_int_eq(log_count("repl.snapshot ", "pause_ms=0"), 1);
    clawq_close(c);
    /* The snapshot's files come into place (the write follows the log
     * line), and a restart loses nothing. */
    for (int k = 0; !snapshot_on_disk(64); k++) {
        ck_assert_msg(k < 100, "the snapshot was not written");
        th_sleep_ms(50);
    }
    ck_assert_int_eq(th_broker_stop(B, 20000), 0);
    th_broker_restart(B);
    c = th_connect(B);
    {
        clawq_queue_stats st;
        memset(&st, 0, sizeof(st));
        th_assert_ok(c, clawq_queue_stats_get(c, "off", &st));
        ck_assert_uint_eq(st.ready, (uint64_t)(before + during));
    }
    clawq_close(c);
    th_broker_free(B);
    B = NULL;
}
END_TEST

/* While a snapshot pins the store, the map cannot grow: an apply that needs
 * more room waits for the serialisation to end, then goes on. A 1 MiB map,
 * a serialisation slowed to 1.5 s and 8 MiB of puts inside it: every put
 * is answered, nothing is lost, and the node logs that the loop waited. */
START_TEST(test_snapshot_pin_waits_for_map_growth)
{
    static char big[32 * 1024];
    clawq_client *c;
    clawq_queue_stats st;
    int before, i;

    setenv("CLAWQ_TEST_SNAPSHOT_SERIALIZE_DELAY_MS", "1500", 1);
    B = th_broker_start("--snapshot-threshold=64", "--snapshot-log-size=0",
                        "--map-size=1M", "--log-level=debug", NULL);
    unsetenv("CLAWQ_TEST_SNAPSHOT_SERIALIZE_DELAY_MS");
    c = th_connect(B);
    before = put_until_snapshot_begins(c, "grow");
    memset(big, 'g', sizeof(big));
    for (i = 0; i < 256; i++)
        put_one(c, "grow", big, sizeof(big));
    for (int k = 0; log_count("repl.snapshot ", "serialize_ms=") == 0; k++) {
        ck_assert_msg(k < 300, "the snapshot never ended");
        th_sleep_ms(100);
    }
    /* The first put that needed a bigger map waited for the first
     * snapshot: its pause_ms is the wait (later ones may need none). */
    {
        char line[1024];
        const char *p = NULL;
        unsigned long long pause = 0;
        FILE *f = fopen(B->log_path, "r");

        ck_assert_ptr_nonnull(f);
        while (p == NULL && fgets(line, sizeof(line), f) != NULL)
            if (strstr(line, "repl.snapshot ") != NULL)
                p = strstr(line, "pause_ms=");
        fclose(f);
        ck_assert_ptr_nonnull(p);
        ck_assert_int_eq(sscanf(p, "pause_ms=%llu", &pause), 1);
        fprintf(stderr,
                "snapshot pin: the loop waited %llu ms to grow the "
                "map\n",
                pause);
        ck_assert_uint_gt(pause, 0);
    }
    memset(&st, 0, sizeof(st));
    th_assert_ok(c, clawq_queue_stats_get(c, "grow", &st));
    ck_assert_uint_eq(st.ready, (uint64_t)(before + 256));
    clawq_close(c);
    ck_assert_int_eq(th_broker_stop(B, 20000), 0);
    th_broker_restart(B);
    c = th_connect(B);
    memset(&st, 0, sizeof(st));
    th_assert_ok(c, clawq_queue_stats_get(c, "grow", &st));
    ck_assert_uint_eq(st.ready, (uint64_t)(before + 256));
    clawq_close(c);
    th_broker_free(B);
    B = NULL;
}
END_TEST

static Suite *durability_suite(void)
{
    Suite *s = suite_create("durability");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"kill9_keeps_acknowledged_puts", test_kill9_keeps_acknowledged_puts},
        {"kill9_keeps_acks_and_leases", test_kill9_keeps_acks_and_leases},
        {"sigterm_exits_0_and_keeps_all", test_sigterm_exits_0_and_keeps_all},
    };

    struct {
        const char *name;
        void (*setup)(void);
    } modes[] = {
        {"memory", setup_memory},
        {"memory_snapshots", setup_memory_snapshots},
        {"disk", setup_disk},
    };

    /* Check keeps the name pointer: one buffer per case and mode */
    static char names[3][3][64];

    for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            char *name = names[m][i];
            snprintf(name, sizeof(names[m][i]), "%s_%s", cases[i].name,
                     modes[m].name);
            TCase *tc = th_tcase_new(name, 50);
            tcase_add_checked_fixture(tc, modes[m].setup, teardown);
            tcase_add_test(tc, cases[i].fn);
            suite_add_tcase(s, tc);
        }
    }
    {
        TCase *tc = th_tcase_new("snapshot_serialised_off_the_loop", 60);
        tcase_add_test(tc, test_snapshot_serialised_off_the_loop);
        suite_add_tcase(s, tc);
        tc = th_tcase_new("snapshot_pin_waits_for_map_growth", 60);
        tcase_add_test(tc, test_snapshot_pin_waits_for_map_growth);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    return th_run_suite(durability_suite());
}
