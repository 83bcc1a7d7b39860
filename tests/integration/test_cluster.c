/* test_cluster.c: a three-node cluster from --cluster on 127.0.0.1: it
 * elects a leader, every node accepts clients (followers send them to the
 * leader, whose client address is replicated), and every node sees the
 * same queue. (Failover, membership and partitions: issue 4.) */
#include <check.h>
#include <pthread.h>
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
static char dir[64];

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

/* Picks free ports, fills `cluster` with the --cluster list and starts
 * every node in a new temp dir. */
static void cluster_up(char *cluster, size_t len)
{
    uint16_t used[NODES * 4];
    int n_used = 0;

    snprintf(dir, sizeof(dir), "/tmp/clawq-cluster.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    cluster[0] = '\0';
    for (int i = 0; i < NODES; i++) {
        uint16_t *p[4] = {&nodes[i].port, &nodes[i].raft, &nodes[i].http,
                          &nodes[i].scaler};
        for (int k = 0; k < 4; k++) {
            *p[k] = th_free_port(used, n_used);
            used[n_used++] = *p[k];
        }
        snprintf(nodes[i].endpoint, sizeof(nodes[i].endpoint), "127.0.0.1:%u",
                 nodes[i].port);
        snprintf(cluster + strlen(cluster), len - strlen(cluster),
                 "%s%d=127.0.0.1:%u", i ? "," : "", i + 1, nodes[i].raft);
    }
    for (int i = 0; i < NODES; i++)
        spawn(i, cluster);
}

/* SIGTERM to every live node; each must exit 0. */
static void cluster_down(void)
{
    for (int i = 0; i < NODES; i++) {
        int st;
        if (nodes[i].pid == 0)
            continue;
        ck_assert_int_eq(kill(nodes[i].pid, SIGTERM), 0);
        ck_assert_int_eq(waitpid(nodes[i].pid, &st, 0), nodes[i].pid);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        nodes[i].pid = 0;
    }
    remove_dir(dir);
}

START_TEST(test_three_nodes_serve_clients)
{
    char cluster[256];
    uint64_t end;
    clawq_queue_stats s;
    clawq_client *c;
    uint64_t id;
    int rc = -1;

    cluster_up(cluster, sizeof(cluster));

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
    cluster_down();
}
END_TEST

/* A handle on exactly node i (no leader following), or NULL. */
static clawq_client *node_try(int i)
{
    clawq_options o;
    clawq_client *c = NULL;

    clawq_options_init(&o);
    o.no_follow = 1;
    o.request_timeout_ms = 3000;
    return clawq_connect(nodes[i].endpoint, &o, &c) == 0 ? c : NULL;
}

static clawq_client *node_client(int i)
{
    clawq_client *c = node_try(i);

    ck_assert_msg(c != NULL, "connect to node %d", i + 1);
    return c;
}

/* Polls node i's view until every member has a client address and a
 * leader is known. */
static void status_settled(int i, clawq_cluster_status *st)
{
    uint64_t end = th_now_ms() + 15000;
    bool ok = false;

    while (!ok && th_now_ms() < end) {
        clawq_client *c = node_try(i);
        int rc =
            c != NULL ? clawq_cluster_status_get(c, 0, st) : CLAWQ_ECONN_LOST;

        clawq_close(c);
        ok = rc == 0 && st->leader_id != 0 && st->n_members == NODES;
        for (size_t k = 0; ok && k < st->n_members; k++)
            ok = st->members[k].client_addr[0] != '\0';
        if (!ok)
            th_sleep_ms(100);
    }
    ck_assert_msg(ok, "node %d: no settled cluster view", i + 1);
}

/* cluster status from every node, a follower refusing a no_follow write,
 * transfer to a chosen node, the refused changes, equal digests. */
START_TEST(test_cluster_admin)
{
    char cluster[256];
    clawq_cluster_status st, st2;
    clawq_put_task t;
    clawq_client *c;
    uint32_t leader, target;
    uint64_t id, end;
    int rc, follower;

    cluster_up(cluster, sizeof(cluster));
    /* Every node names the same leader and knows every client address
     * (followers register theirs through the leader). */
    status_settled(0, &st);
    leader = st.leader_id;
    for (int i = 0; i < NODES; i++) {
        status_settled(i, &st);
        ck_assert_uint_eq(st.node_id, (uint32_t)(i + 1));
        ck_assert_uint_eq(st.leader_id, leader);
        ck_assert_str_eq(st.leader, nodes[leader - 1].endpoint);
        ck_assert_str_eq(st.role,
                         (uint32_t)(i + 1) == leader ? "leader" : "follower");
        ck_assert_int_eq(st.leader_view, (uint32_t)(i + 1) == leader);
        for (size_t k = 0; k < st.n_members; k++) {
            uint32_t m = st.members[k].id;
            char raft[32];

            ck_assert_str_eq(st.members[k].role, "voter");
            ck_assert_str_eq(st.members[k].client_addr, nodes[m - 1].endpoint);
            snprintf(raft, sizeof(raft), "127.0.0.1:%u", nodes[m - 1].raft);
            ck_assert_str_eq(st.members[k].raft_addr, raft);
        }
    }
    /* A follower asked without leader following refuses a write and
     * names the leader. */
    follower = leader == 1 ? 1 : 0;
    c = node_client(follower);
    clawq_put_task_init(&t);
    t.payload = "x";
    t.payload_len = 1;
    ck_assert_int_eq(clawq_put(c, "adm", &t, &id, NULL), CLAWQ_ENOT_LEADER);
    clawq_close(c);

    /* Refused changes, on the leader. */
    c = node_client((int)leader - 1);
    ck_assert_int_eq(clawq_cluster_remove(c, leader, NULL), CLAWQ_EINVALID);
    ck_assert_int_eq(clawq_cluster_remove(c, 9, NULL), CLAWQ_ENOT_FOUND);
    ck_assert_int_eq(clawq_cluster_add(c, leader % NODES + 1, "127.0.0.1:1",
                                       "127.0.0.1:2", NULL),
                     CLAWQ_EINVALID); /* the id is another node's */
    ck_assert_int_eq(
        clawq_cluster_add(c, 0, "127.0.0.1:1", "127.0.0.1:2", NULL),
        CLAWQ_EINVALID);
    ck_assert_int_eq(clawq_cluster_add(c, 7, "nohost", "127.0.0.1:2", NULL),
                     CLAWQ_EINVALID);
    ck_assert_int_eq(clawq_cluster_register(c, 8, "127.0.0.1:1", "127.0.0.1:2"),
                     CLAWQ_ENOT_FOUND);
    /* Adding a member again with its own addresses changes nothing. */
    {
        char raft[32];
        snprintf(raft, sizeof(raft), "127.0.0.1:%u", nodes[leader - 1].raft);
        ck_assert_int_eq(
            clawq_cluster_add(c, leader, raft, nodes[leader - 1].endpoint, &st),
            0);
        ck_assert_uint_eq(st.n_members, NODES);
    }
    /* Transfer to a chosen follower. */
    target = leader % NODES + 1;
    rc = clawq_cluster_transfer(c, target, &st);
    ck_assert_msg(rc == 0, "transfer: %s", clawq_errmsg(c));
    clawq_close(c);
    end = th_now_ms() + 5000;
    do {
        c = node_client((int)target - 1);
        rc = clawq_cluster_status_get(c, 0, &st);
        clawq_close(c);
        if (rc != 0 || strcmp(st.role, "leader") != 0)
            th_sleep_ms(50);
    } while ((rc != 0 || strcmp(st.role, "leader") != 0) && th_now_ms() < end);
    ck_assert_str_eq(st.role, "leader");
    ck_assert_int_eq(st.leader_view, 1);

    /* A write through the new leader, then equal digests once every node
     * has applied the same index. */
    c = node_client((int)target - 1);
    ck_assert_int_eq(clawq_put(c, "adm", &t, &id, NULL), 0);
    clawq_close(c);
    end = th_now_ms() + 10000;
    for (;;) {
        bool same = true;

        c = node_client(0);
        ck_assert_int_eq(clawq_cluster_status_get(c, CLAWQ_CLUSTER_DIGEST, &st),
                         0);
        clawq_close(c);
        ck_assert_int_eq(st.has_digest, 1);
        for (int i = 1; i < NODES && same; i++) {
            c = node_client(i);
            ck_assert_int_eq(
                clawq_cluster_status_get(c, CLAWQ_CLUSTER_DIGEST, &st2), 0);
            clawq_close(c);
            same = st2.digest_index == st.digest_index;
            if (same)
                ck_assert_msg(st2.digest == st.digest,
                              "node %d digest %016llx != node 1 %016llx at "
                              "index %llu",
                              i + 1, (unsigned long long)st2.digest,
                              (unsigned long long)st.digest,
                              (unsigned long long)st.digest_index);
        }
        if (same)
            break;
        ck_assert_msg(th_now_ms() < end, "applied indexes never met");
        th_sleep_ms(50);
    }
    cluster_down();
}
END_TEST

typedef struct waiter_arg {
    clawq_client *c;
    int rc;
    size_t n;
    uint64_t id;
} waiter_arg;

/* One long poll of up to 8 s on queue "mv". */
static void *waiter_run(void *p)
{
    waiter_arg *a = p;
    clawq_task *tasks = NULL;

    a->rc = clawq_pull(a->c, "mv", 1, 8000, 30000, &tasks, &a->n);
    if (a->rc == 0 && a->n == 1)
        a->id = tasks[0].id;
    clawq_tasks_free(tasks);
    return NULL;
}

/* A lease taken on one leader expires on the next, and a puller waiting
 * when the leader dies is served by the new one: the new leader rebuilds
 * its timers and waiter lists from the replicated state. */
START_TEST(test_leases_move_with_leadership)
{
    char cluster[256], all[128];
    clawq_cluster_status st;
    clawq_put_task t;
    clawq_options o;
    clawq_client *c, *w;
    clawq_task *tasks = NULL;
    size_t n = 0;
    uint64_t id, t0, lease_id;
    int leader, rc;

    cluster_up(cluster, sizeof(cluster));
    status_settled(0, &st);
    leader = (int)st.leader_id - 1;
    snprintf(all, sizeof(all), "%s,%s,%s", nodes[0].endpoint, nodes[1].endpoint,
             nodes[2].endpoint);
    clawq_options_init(&o);
    o.request_timeout_ms = 10000;
    ck_assert_int_eq(clawq_connect(all, &o, &c), 0);
    ck_assert_int_eq(clawq_connect(all, &o, &w), 0);
    clawq_put_task_init(&t);
    t.payload = "lease-me";
    t.payload_len = 8;
    ck_assert_int_eq(clawq_put(c, "mv", &t, &id, NULL), 0);
    ck_assert_int_eq(clawq_pull(c, "mv", 1, 0, 1500, &tasks, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(tasks[0].id, id);
    lease_id = tasks[0].lease_id;
    clawq_tasks_free(tasks);

    /* The leader dies holding the lease; its successor must expire it. */
    ck_assert_int_eq(kill(nodes[leader].pid, SIGKILL), 0);
    ck_assert_int_eq(waitpid(nodes[leader].pid, NULL, 0), nodes[leader].pid);
    nodes[leader].pid = 0;
    t0 = th_now_ms();
    tasks = NULL;
    n = 0;
    do { /* one long poll; retried only across the failover */
        rc = clawq_pull(w, "mv", 1, 5000, 30000, &tasks, &n);
    } while ((rc != 0 || n == 0) && th_now_ms() - t0 < 9000);
    ck_assert_msg(rc == 0 && n == 1, "pull after failover: %s (n=%zu)",
                  clawq_strerror(rc), n);
    ck_assert_uint_eq(tasks[0].id, id);
    ck_assert_uint_eq(tasks[0].attempt, 2);
    ck_assert_uint_ne(tasks[0].lease_id, lease_id);
    fprintf(stderr, "lease of the dead leader redelivered after %llu ms\n",
            (unsigned long long)(th_now_ms() - t0));
    /* The old lease is fenced off. */
    {
        /* c's connection died with the leader: the first call may say
         * so (an ack is not re-sent blindly), the next reconnects. */
        rc = clawq_ack(c, id, lease_id);
        if (rc == CLAWQ_ECONN_LOST)
            rc = clawq_ack(c, id, lease_id);
        ck_assert_int_eq(rc, CLAWQ_ELEASE_LOST);
        ck_assert_int_eq(clawq_ack(w, id, tasks[0].lease_id), 0);
    }
    clawq_tasks_free(tasks);

    /* A puller already waiting when the leader hands over (SIGTERM) is
     * sent on to the new leader inside its call, and gets the task put
     * there afterwards. */
    {
        waiter_arg wa = {w, 0, 0, 0};
        pthread_t th;
        int st_exit;

        spawn(leader, cluster); /* back to three nodes */
        status_settled(leader, &st);
        leader = (int)st.leader_id - 1;
        ck_assert_int_eq(pthread_create(&th, NULL, waiter_run, &wa), 0);
        th_sleep_ms(300); /* the pull is waiting on the leader now */
        ck_assert_int_eq(kill(nodes[leader].pid, SIGTERM), 0);
        ck_assert_int_eq(waitpid(nodes[leader].pid, &st_exit, 0),
                         nodes[leader].pid);
        ck_assert(WIFEXITED(st_exit) && WEXITSTATUS(st_exit) == 0);
        nodes[leader].pid = 0;
        t.payload = "after-handover";
        t.payload_len = strlen(t.payload);
        t.idempotency_key = "after-handover";
        ck_assert_int_eq(clawq_put(c, "mv", &t, &id, NULL), 0);
        ck_assert_int_eq(pthread_join(th, NULL), 0);
        ck_assert_msg(wa.rc == 0 && wa.n == 1, "waiting pull: %s (n=%zu)",
                      clawq_strerror(wa.rc), wa.n);
        ck_assert_uint_eq(wa.id, id);
    }
    clawq_close(c);
    clawq_close(w);
    cluster_down();
}
END_TEST

/* A bad --cluster is a usage error (exit 2): malformed, duplicate ids, a
 * list without this node, or given with --join. */
START_TEST(test_bad_cluster_flag)
{
    static const char *const bad[] = {"x", "1=127.0.0.1:1,1=127.0.0.1:2",
                                      "2=127.0.0.1:1", "1=nohost",
                                      "1=127.0.0.1:1 with --join"};
    const size_t n_bad = sizeof(bad) / sizeof(bad[0]);

    for (size_t i = 0; i < n_bad; i++) {
        pid_t pid = fork();
        int st;

        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            FILE *f = freopen("/dev/null", "w", stderr);
            (void)f;
            if (i == n_bad - 1)
                execl(th_clawqd_path(), th_clawqd_path(), "--data",
                      "/nonexistent", "--cluster", "1=127.0.0.1:1", "--join",
                      "127.0.0.1:2", (char *)NULL);
            else
                execl(th_clawqd_path(), th_clawqd_path(), "--data",
                      "/nonexistent", "--cluster", bad[i], (char *)NULL);
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
    tc = tcase_create("cluster_admin");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_cluster_admin);
    suite_add_tcase(s, tc);
    tc = tcase_create("leases_move_with_leadership");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_leases_move_with_leadership);
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
