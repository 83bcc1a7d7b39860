/* test_cluster.c: a three-node cluster from --cluster on 127.0.0.1: it
 * elects a leader, every node accepts clients (followers send them to the
 * leader, whose client address is replicated), and every node sees the
 * same queue. (Failover, membership and partitions: issue 4.) */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define NODES 3

typedef struct node {
    pid_t pid;
    uint16_t port, raft, http, scaler;
    char endpoint[32];
} node;

static node nodes[NODES];
static char dir[] = "/tmp/clawq-cluster.XXXXXX";

static void remove_dir(const char *path)
{
    char cmd[256];
    int rc;

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    rc = system(cmd);
    (void)rc;
}

static void spawn(int i, const char *cluster)
{
    char id[16], listen[32], raft[32], http[32], scaler[32], data[128],
        log[160];
    pid_t pid;

    snprintf(id, sizeof(id), "%d", i + 1);
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", nodes[i].port);
    snprintf(raft, sizeof(raft), "127.0.0.1:%u", nodes[i].raft);
    snprintf(http, sizeof(http), "127.0.0.1:%u", nodes[i].http);
    snprintf(scaler, sizeof(scaler), "127.0.0.1:%u", nodes[i].scaler);
    snprintf(data, sizeof(data), "%s/n%d", dir, i + 1);
    snprintf(log, sizeof(log), "%s/n%d.log", dir, i + 1);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        FILE *f = freopen(log, "w", stderr);
        (void)f;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl(th_clawqd_path(), th_clawqd_path(), "--node-id", id, "--data",
              data, "--listen", listen, "--raft", raft, "--http", http,
              "--scaler", scaler, "--cluster", cluster, (char *)NULL);
        _exit(127);
    }
    nodes[i].pid = pid;
}

/* Puts one task through a client given every node's address, then reads
 * the queue's stats (from whichever node answers). */
static int put_via_all(const char *payload, clawq_queue_stats *s)
{
    char all[128];
    clawq_options o;
    clawq_put_task t;
    clawq_client *c;
    uint64_t id;
    int rc;

    snprintf(all, sizeof(all), "%s,%s,%s", nodes[0].endpoint, nodes[1].endpoint,
             nodes[2].endpoint);
    clawq_options_init(&o);
    o.request_timeout_ms = 8000;
    rc = clawq_connect(all, &o, &c);
    if (rc != 0)
        return rc;
    clawq_put_task_init(&t);
    t.payload = payload;
    t.payload_len = strlen(payload);
    t.idempotency_key = payload; /* a retry after UNAVAILABLE is safe */
    for (int tries = 0; tries < 20; tries++) {
        rc = clawq_put(c, "cq", &t, &id, NULL);
        if (rc != CLAWQ_EUNAVAILABLE)
            break; /* leadership moved mid-put: outcome unknown, retry */
        th_sleep_ms(100);
    }
    if (rc == 0)
        rc = clawq_queue_stats_get(c, "cq", s);
    clawq_close(c);
    return rc;
}

START_TEST(test_three_nodes_serve_clients)
{
    uint16_t used[NODES * 4];
    char cluster[256] = "";
    int n_used = 0;
    uint64_t end;
    clawq_queue_stats s;
    clawq_client *c;
    uint64_t id;
    int rc = -1;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    for (int i = 0; i < NODES; i++) {
        uint16_t *p[4] = {&nodes[i].port, &nodes[i].raft, &nodes[i].http,
                          &nodes[i].scaler};
        for (int k = 0; k < 4; k++) {
            *p[k] = th_free_port(used, n_used);
            used[n_used++] = *p[k];
        }
        snprintf(nodes[i].endpoint, sizeof(nodes[i].endpoint), "127.0.0.1:%u",
                 nodes[i].port);
        snprintf(cluster + strlen(cluster), sizeof(cluster) - strlen(cluster),
                 "%s%d=127.0.0.1:%u", i ? "," : "", i + 1, nodes[i].raft);
    }
    for (int i = 0; i < NODES; i++)
        spawn(i, cluster);

    /* Each node takes a put: a follower sends the client to the leader. */
    for (int i = 0; i < NODES; i++) {
        clawq_put_task t;
        clawq_options o;
        char payload[16];

        clawq_options_init(&o);
        o.request_timeout_ms = 2000;
        end = th_now_ms() + 15000;
        do { /* until the cluster has elected and the node listens */
            c = NULL;
            rc = clawq_connect(nodes[i].endpoint, &o, &c);
            if (rc == 0) {
                clawq_put_task_init(&t);
                snprintf(payload, sizeof(payload), "via-%d", i + 1);
                t.payload = payload;
                t.payload_len = strlen(payload);
                rc = clawq_put(c, "cq", &t, &id, NULL);
                clawq_close(c);
            }
            if (rc != 0)
                th_sleep_ms(100);
        } while (rc != 0 && th_now_ms() < end);
        ck_assert_msg(rc == 0, "put via node %d: %s", i + 1,
                      clawq_strerror(rc));
    }
    /* The three tasks are there, asked through every node. */
    for (int i = 0; i < NODES; i++) {
        end = th_now_ms() + 5000;
        memset(&s, 0, sizeof(s));
        do {
            ck_assert_int_eq(clawq_connect(nodes[i].endpoint, NULL, &c), 0);
            rc = clawq_queue_stats_get(c, "cq", &s);
            clawq_close(c);
            if (rc != 0 || s.ready != NODES)
                th_sleep_ms(50);
        } while ((rc != 0 || s.ready != NODES) && th_now_ms() < end);
        ck_assert_int_eq(rc, 0);
        ck_assert_uint_eq(s.ready, NODES);
        /* libclawq follows Hello's leader hint, so the leader answers. */
        ck_assert_uint_ge(s.node_id, 1);
        ck_assert_uint_le(s.node_id, NODES);
    }
    /* SIGTERM on the leader hands leadership over first: the next put
     * through any node finds a leader at once; the node then comes
     * back and rejoins. */
    {
        int leader = (int)s.node_id - 1, st;
        uint64_t t0;

        ck_assert_int_eq(kill(nodes[leader].pid, SIGTERM), 0);
        ck_assert_int_eq(waitpid(nodes[leader].pid, &st, 0), nodes[leader].pid);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        t0 = th_now_ms();
        rc = put_via_all("after-sigterm", &s);
        fprintf(stderr,
                "put after SIGTERM of leader node %d: %s in %llu ms, "
                "answered by node %u\n",
                leader + 1, clawq_strerror(rc),
                (unsigned long long)(th_now_ms() - t0), s.node_id);
        ck_assert_int_eq(rc, 0);
        ck_assert_uint_ne(s.node_id, (uint32_t)(leader + 1));
        spawn(leader, cluster); /* restart: rejoins with its data */
    }
    /* The leader dies (kill -9): a client given every node's address
     * reaches the new leader; nothing acknowledged is lost. */
    {
        int leader = (int)s.node_id - 1;
        uint64_t t0;

        ck_assert_int_eq(kill(nodes[leader].pid, SIGKILL), 0);
        ck_assert_int_eq(waitpid(nodes[leader].pid, NULL, 0),
                         nodes[leader].pid);
        nodes[leader].pid = 0;
        t0 = th_now_ms();
        rc = put_via_all("after-kill", &s);
        fprintf(stderr, "put after killing leader node %d: %s in %llu ms\n",
                leader + 1, clawq_strerror(rc),
                (unsigned long long)(th_now_ms() - t0));
        ck_assert_int_eq(rc, 0);
        ck_assert_uint_eq(s.ready, NODES + 2);
        ck_assert_uint_ne(s.node_id, (uint32_t)(leader + 1));
    }
    for (int i = 0; i < NODES; i++) {
        int st;
        if (nodes[i].pid == 0)
            continue;
        ck_assert_int_eq(kill(nodes[i].pid, SIGTERM), 0);
        ck_assert_int_eq(waitpid(nodes[i].pid, &st, 0), nodes[i].pid);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    remove_dir(dir);
}
END_TEST

/* A bad --cluster is a usage error (exit 2): malformed, duplicate ids, or
 * a list without this node. */
START_TEST(test_bad_cluster_flag)
{
    static const char *const bad[] = {"x", "1=127.0.0.1:1,1=127.0.0.1:2",
                                      "2=127.0.0.1:1", "1=nohost"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pid_t pid = fork();
        int st;

        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            FILE *f = freopen("/dev/null", "w", stderr);
            (void)f;
            execl(th_clawqd_path(), th_clawqd_path(), "--data", "/nonexistent",
                  "--cluster", bad[i], (char *)NULL);
            _exit(127);
        }
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2,
                      "--cluster %s: status %d", bad[i], st);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster");
    TCase *tc = tcase_create("three_nodes_serve_clients");
    SRunner *sr;
    int failed;

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_three_nodes_serve_clients);
    suite_add_tcase(s, tc);
    tc = tcase_create("bad_cluster_flag");
    tcase_add_test(tc, test_bad_cluster_flag);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
