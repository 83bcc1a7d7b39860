/* main.c: clawqd, one broker node. Reads the configuration (config.h),
 * opens the store, starts Raft, the scheduler and the client listener on
 * one libuv loop, and shuts down gracefully on SIGTERM / SIGINT: hand
 * leadership over (a cluster's leader), stop accepting, answer everything
 * outstanding, close Raft, close the store, exit 0. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "config.h"
#include "http.h"
#include "join.h"
#include "log.h"
#include "logzero.h"
#include "net.h"
#include "repl.h"
#include "scaler.h"
#include "scheduler.h"
#include "session.h"
#include "store.h"

typedef struct daemon_ctx {
    uv_loop_t *loop;
    config cfg;
    store *s;
    repl *r;
    sched *sc;
    net *n;
    http_srv *http;
    scaler *scaler;
    joiner *join;
    server srv;
    uv_signal_t sigterm, sigint;
    uv_timer_t grace;
    bool stopping;
    bool core_stopping; /* stop_core ran */
    bool draining;      /* begin_drain ran */
    uv_timer_t transfer_wait;
    uv_timer_t transfer_retry;
    int transfer_tries;
    int exit_code;
} daemon_ctx;

static void hook_applied(void *arg)
{
    daemon_ctx *d = arg;
    if (d->sc != NULL)
        sched_on_applied(d->sc);
    scaler_on_applied(d->scaler);
}

static void member_done(void *arg, int status, const fsm_result *res,
                        size_t first, size_t n)
{
    (void)arg;
    (void)n;
    if (status != 0 || res->ops[first].status != 0)
        LOG(LOG_WARN, "clawqd.member_failed", "status=%s",
            clawq_err_name(status ? status : res->ops[first].status));
}

/* A new leader makes sure every node can send clients to it: its client
 * address goes into the replicated member table (once per change). */
static void register_self(daemon_ctx *d)
{
    char known[CMD_ADDR_MAX + 1];
    cmd_op op;

    if (fsm_member_addr(d->s, d->cfg.node_id, known, sizeof(known)) == 0 &&
        strcmp(known, d->cfg.listen) == 0)
        return;
    memset(&op, 0, sizeof(op));
    op.type = CMD_MEMBER;
    op.u.member.node_id = d->cfg.node_id;
    op.u.member.client_addr = cq_bytes_str(d->cfg.listen);
    repl_submit(d->r, &op, 1, member_done, d);
}

static void hook_role(void *arg, bool leader)
{
    daemon_ctx *d = arg;
    if (d->sc != NULL)
        sched_on_role(d->sc, leader);
    if (leader && d->r != NULL)
        register_self(d);
}

/* --cluster "1=ADDR,2=ADDR": the voters of a new cluster. Returns the
 * count, or -1 with a message. */
static int cluster_parse(const config *c, repl_member *out, char *err,
                         size_t errlen)
{
    char buf[sizeof(c->cluster)], *save = NULL, *item;
    bool self = false;
    int n = 0;

    if (c->cluster[0] == '\0')
        return 0;
    snprintf(buf, sizeof(buf), "%s", c->cluster);
    for (item = strtok_r(buf, ",", &save); item != NULL;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '='), *end, host[256];
        unsigned long id;
        int port;

        if (n == REPL_MAX_MEMBERS) {
            snprintf(err, errlen, "clawqd: --cluster: at most %d members",
                     REPL_MAX_MEMBERS);
            return -1;
        }
        id = eq != NULL ? strtoul(item, &end, 10) : 0;
        if (eq == NULL || end != eq || id == 0 || id > (1ul << 31) ||
            config_addr_split(eq + 1, host, sizeof(host), &port) != 0 ||
            strlen(eq + 1) >= sizeof(out[n].raft_addr)) {
            snprintf(err, errlen,
                     "clawqd: --cluster: \"%s\" is not ID=HOST:PORT", item);
            return -1;
        }
        for (int i = 0; i < n; i++) {
            if (out[i].id == id) {
                snprintf(err, errlen, "clawqd: --cluster: id %lu twice", id);
                return -1;
            }
        }
        out[n].id = (uint32_t)id;
        snprintf(out[n].raft_addr, sizeof(out[n].raft_addr), "%s", eq + 1);
        self = self || id == c->node_id;
        n++;
    }
    if (!self) {
        snprintf(err, errlen, "clawqd: --cluster does not name --node-id %u",
                 c->node_id);
        return -1;
    }
    return n;
}

static int mkdir_p(const char *path)
{
    char buf[CONFIG_PATH_MAX + 16];
    size_t i, len = strlen(path);

    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, path, len + 1);
    for (i = 1; i <= len; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return -1;
            buf[i] = c;
        }
    }
    return 0;
}

/* Whether the comma-separated list holds word. */
static bool has_word(const char *list, const char *word)
{
    size_t n = strlen(word);

    for (const char *p = list; p != NULL; p = strchr(p, ',')) {
        if (*p == ',')
            p++;
        if (strncmp(p, word, n) == 0 && (p[n] == ',' || p[n] == '\0'))
            return true;
    }
    return false;
}

/* The lowest memory limit set on the cgroup of this process or on one of
 * its ancestors (v2 memory.max, v1 memory.limit_in_bytes), from the paths
 * in /proc/self/cgroup; UINT64_MAX if there is none. In a container with
 * its own cgroup namespace the path is "/", its own limit. */
static uint64_t cgroup_memory_limit(void)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    char line[2048], file[2400];
    uint64_t limit = UINT64_MAX;

    if (f == NULL)
        return limit;
    while (fgets(line, sizeof(line), f) != NULL) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        const char *base, *name;
        char *path;
        size_t n;

        if (c2 == NULL)
            continue;
        *c2 = '\0';
        if (strcmp(line, "0:") == 0) { /* v2: "0::/path" */
            base = "/sys/fs/cgroup";
            name = "memory.max";
        } else if (has_word(c1 + 1, "memory")) { /* "N:a,memory,b:/path" */
            base = "/sys/fs/cgroup/memory";      /* v1 */
            name = "memory.limit_in_bytes";
        } else {
            continue;
        }
        path = c2 + 1;
        n = strcspn(path, "\n");
        path[n] = '\0';
        for (;;) { /* this cgroup, then each ancestor up to the root */
            unsigned long long v;
            FILE *m;

            snprintf(file, sizeof(file), "%s%s/%s", base,
                     strcmp(path, "/") == 0 ? "" : path, name);
            m = fopen(file, "re");
            if (m != NULL) {
                /* "max" (v2, no limit) does not scan */
                if (fscanf(m, "%llu", &v) == 1 && v > 0 && v < limit)
                    limit = v;
                fclose(m);
            }
            char *slash = strrchr(path, '/');
            if (slash == NULL || strcmp(path, "/") == 0)
                break;
            if (slash == path)
                slash[1] = '\0'; /* up to the root, "/" */
            else
                *slash = '\0';
        }
    }
    fclose(f);
    return limit;
}

/* The memory this process may use: the machine's, or its cgroup's limit
 * when lower. */
static uint64_t memory_budget(void)
{
    uint64_t total = uv_get_total_memory(), limit = cgroup_memory_limit();

    return limit < total ? limit : total;
}

/* --map-max 0 (the default) resolves to half of memory_budget with
 * --store=memory (the other half for snapshots, which are serialized into
 * one buffer, and everything else), so that puts to a growing backlog
 * are refused with STORAGE_FULL (store_space_is_low) before the OOM killer
 * comes; and to 64 GiB with --store=disk. An explicit value over that half is
 * kept, with a warning. */
static void resolve_map_max(config *c)
{
    uint64_t budget = memory_budget();
    uint64_t cap = (budget / 2) & ~((UINT64_C(1) << 20) - 1);

    if (cap < (UINT64_C(1) << 20))
        cap = UINT64_C(1) << 20;
    if (c->map_max == 0)
        c->map_max = c->store_mode == CONFIG_STORE_MEMORY ? (size_t)cap
                                                          : (size_t)64 << 30;
    else if (c->store_mode == CONFIG_STORE_MEMORY && c->map_max > cap)
        LOG(LOG_WARN, "clawqd.map_max_large",
            "map_max=%zu memory=%llu hint=\"with --store=memory the store "
            "lives in RAM: a map over half of this process's memory can end "
            "in the OOM killer instead of STORAGE_FULL\"",
            c->map_max, (unsigned long long)budget);
    if (c->map_size > c->map_max)
        c->map_size = c->map_max;
    LOG(LOG_INFO, "clawqd.map", "map_size=%zu map_max=%zu memory=%llu",
        c->map_size, c->map_max, (unsigned long long)budget);
}

static void on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void repl_closed(void *arg)
{
    daemon_ctx *d = arg;

    d->r = NULL;
    sess_server_close(&d->srv);
    uv_close((uv_handle_t *)&d->grace, on_handle_closed);
    uv_close((uv_handle_t *)&d->transfer_wait, on_handle_closed);
    uv_close((uv_handle_t *)&d->transfer_retry, on_handle_closed);
    uv_close((uv_handle_t *)&d->sigterm, on_handle_closed);
    uv_close((uv_handle_t *)&d->sigint, on_handle_closed);
    LOG(LOG_INFO, "clawqd.stopped", "node=%u", d->cfg.node_id);
}

static void sched_closed(void *arg)
{
    daemon_ctx *d = arg;
    d->sc = NULL;
    repl_close(d->r, repl_closed, d);
}

/* Sessions are closed (or the grace period ran out): stop the rest. */
static void stop_core(void *arg)
{
    daemon_ctx *d = arg;

    if (d->core_stopping)
        return; /* the grace timer and the drain can both get here */
    d->core_stopping = true;
    uv_timer_stop(&d->grace);
    joiner_close(d->join);
    d->join = NULL;
    if (d->http != NULL) {
        http_close(d->http);
        d->http = NULL;
    }
    if (d->sc != NULL)
        sched_close(d->sc, sched_closed, d);
}

static void on_grace(uv_timer_t *t)
{
    daemon_ctx *d = t->data;
    LOG(LOG_WARN, "clawqd.grace_expired", "open=%zu", d->srv.n_sessions);
    /* Whoever still holds a connection (a client that does not read its
     * replies) is cut off: the loop must end. */
    while (d->srv.sessions != NULL)
        sess_close(d->srv.sessions);
    stop_core(d);
}

/* Stop accepting, answer what is outstanding, then stop the core. */
static void begin_drain(daemon_ctx *d)
{
    if (d->draining)
        return; /* the transfer's end, or its timeout, came first */
    d->draining = true;
    uv_timer_stop(&d->transfer_wait);
    uv_timer_stop(&d->transfer_retry);
    /* Waiting pullers are answered now (sent to the new leader when
     * there is one, else empty); then the drain. */
    d->srv.shutting_down = true;
    sched_on_role(d->sc, false);
    if (d->scaler != NULL) {
        scaler_close(d->scaler); /* ends streams, GOAWAY */
        d->scaler = NULL;
    }
    if (d->n != NULL) {
        net *n = d->n;
        d->n = NULL;
        net_shutdown(n, stop_core, d);
    } else {
        stop_core(d);
    }
}

static void transferred(void *arg, bool moved);

static void on_transfer_retry(uv_timer_t *t)
{
    daemon_ctx *d = t->data;

    if (d->draining || d->core_stopping)
        return;
    if (repl_transfer(d->r, 0, transferred, d) != 0)
        begin_drain(d);
}

/* Runs from inside libraft: a retry goes through a timer. */
static void transferred(void *arg, bool moved)
{
    daemon_ctx *d = arg;

    if (d->core_stopping) /* the grace ran out meanwhile */
        return;
    /* Under load a transfer can end with this node still leading
     * (NOTES-RAFT.md): try again, within transfer_wait's bound. */
    if (!moved && ++d->transfer_tries < 3 && repl_is_leader(d->r)) {
        uv_timer_start(&d->transfer_retry, on_transfer_retry, 10, 0);
        return;
    }
    begin_drain(d);
}

static void on_transfer_wait(uv_timer_t *t)
{
    daemon_ctx *d = t->data;

    LOG(LOG_WARN, "clawqd.transfer_timeout", "%s", "");
    if (!d->core_stopping)
        begin_drain(d);
}

static void on_signal(uv_signal_t *h, int signum)
{
    daemon_ctx *d = h->data;

    if (d->stopping)
        return;
    d->stopping = true;
    LOG(LOG_INFO, "clawqd.stopping", "signal=%d open=%zu", signum,
        d->srv.n_sessions);
    uv_timer_start(&d->grace, on_grace, d->cfg.shutdown_grace_ms, 0);
    /* A leader of a cluster hands over first (a few ms), so clients find
     * the next leader without waiting out an election. */
    if (repl_transfer(d->r, 0, transferred, d) != 0)
        begin_drain(d);
    else /* normally a few ms; never longer than an election or two */
        uv_timer_start(&d->transfer_wait, on_transfer_wait,
                       2 * d->cfg.election_timeout_ms + 200, 0);
}

int main(int argc, char **argv)
{
    static daemon_ctx d;
    char err[512], path[CONFIG_PATH_MAX + 16];
    store_opts so;
    repl_opts ro;
    repl_hooks hooks;
    repl_member members[REPL_MAX_MEMBERS];
    int rc, n_members;

    rc = config_parse(&d.cfg, argc, argv, NULL, err, sizeof(err));
    if (rc == 1)
        return 0;
    if (rc != 0) {
        fprintf(stderr, "%s\n", err);
        fprintf(stderr, "clawqd: see clawqd --help\n");
        return 2;
    }
    n_members = cluster_parse(&d.cfg, members, err, sizeof(err));
    if (n_members < 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    if (n_members > 0 && d.cfg.join[0] != '\0') {
        fprintf(stderr, "clawqd: --cluster (a new cluster) and --join (an "
                        "existing one) exclude each other\n");
        return 2;
    }
    log_init(d.cfg.log_level, d.cfg.log_format, 2);
    signal(SIGPIPE, SIG_IGN);

    snprintf(path, sizeof(path), "%s/raft", d.cfg.data);
    if (mkdir_p(path) != 0) {
        LOG(LOG_ERROR, "clawqd.data_dir", "dir=%s error=\"%s\"", path,
            strerror(errno));
        return 1;
    }
    snprintf(path, sizeof(path), "%s/store", d.cfg.data);
    if (mkdir_p(path) != 0) {
        LOG(LOG_ERROR, "clawqd.data_dir", "dir=%s error=\"%s\"", path,
            strerror(errno));
        return 1;
    }
    resolve_map_max(&d.cfg);
    memset(&so, 0, sizeof(so));
    so.map_size = d.cfg.map_size;
    so.map_max = d.cfg.map_max;
    so.nosync = true; /* the Raft log is the durable record */
    so.writemap = true;
    so.memory = d.cfg.store_mode == CONFIG_STORE_MEMORY;
    rc = store_open(path, &so, &d.s);
    if (rc != 0) {
        LOG(LOG_ERROR, "clawqd.store", "dir=%s error=\"%s\"", path,
            clawq_strerror(rc));
        return 1;
    }
    LOG(LOG_INFO, "clawqd.store", "mode=%s dir=%s",
        so.memory ? "memory" : "disk", path);

    d.loop = uv_default_loop();
    snprintf(path, sizeof(path), "%s/raft", d.cfg.data);
    if (d.cfg.log_prezero && logzero_enable(path) != 0) {
        LOG(LOG_ERROR, "clawqd.log_prezero", "dir=%s error=\"%s\"", path,
            strerror(errno));
        return 1;
    }
    memset(&ro, 0, sizeof(ro));
    ro.node_id = d.cfg.node_id;
    ro.raft_addr = d.cfg.raft;
    ro.dir = path;
    ro.election_ms = (unsigned)d.cfg.election_timeout_ms;
    ro.heartbeat_ms = (unsigned)d.cfg.heartbeat_timeout_ms;
    ro.snapshot_threshold = d.cfg.snapshot_threshold;
    ro.snapshot_log_size = d.cfg.snapshot_log_size;
    ro.snapshot_trailing = d.cfg.snapshot_trailing;
    ro.segment_size = d.cfg.raft_segment_size;
    ro.members = members;
    ro.n_members = (size_t)n_members;
    ro.no_bootstrap = d.cfg.join[0] != '\0';
    hooks.arg = &d;
    hooks.applied = hook_applied;
    hooks.role_changed = hook_role;
    rc = repl_start(d.loop, d.s, &ro, &hooks, &d.r);
    if (rc != 0) {
        LOG(LOG_ERROR, "clawqd.raft", "error=\"%s\"", clawq_strerror(rc));
        return 1;
    }
    rc = sched_new(d.loop, d.s, d.r, &d.sc);
    if (rc != 0)
        return 1;

    d.srv.loop = d.loop;
    d.srv.s = d.s;
    d.srv.r = d.r;
    d.srv.sc = d.sc;
    d.srv.node_id = d.cfg.node_id;
    d.srv.listen_addr = d.cfg.listen;
    d.srv.limits.max_frame = (uint32_t)d.cfg.max_frame;
    d.srv.limits.max_payload = (uint32_t)d.cfg.max_payload;
    d.srv.limits.max_pending = d.cfg.max_pending;
    d.srv.limits.max_wait_ms = (uint32_t)d.cfg.max_wait_ms;
    d.srv.limits.idle_timeout_ms = (uint32_t)d.cfg.idle_timeout_ms;
    d.srv.limits.write_buffer = d.cfg.write_buffer;
    d.srv.limits.report_interval_ms = d.cfg.report_interval_ms;
    metrics_init(&d.srv.metrics);
    sess_server_init(&d.srv);
    rc = net_listen(&d.srv, d.cfg.listen, d.cfg.max_connections, &d.n);
    if (rc != 0) {
        LOG(LOG_ERROR, "clawqd.listen", "addr=%s error=\"%s\"", d.cfg.listen,
            clawq_strerror(rc));
        return 1;
    }
    rc = http_listen(&d.srv, d.cfg.http, &d.http);
    if (rc != 0) {
        LOG(LOG_ERROR, "clawqd.http", "addr=%s error=\"%s\"", d.cfg.http,
            clawq_strerror(rc));
        return 1;
    }
    {
        scaler_opts so_sc = {d.cfg.scaler, d.cfg.scaler_tls_cert,
                             d.cfg.scaler_tls_key, d.cfg.scaler_tls_ca};
        rc = scaler_listen(&d.srv, &so_sc, &d.scaler);
        if (rc != 0) {
            LOG(LOG_ERROR, "clawqd.scaler", "addr=%s error=\"%s\"",
                d.cfg.scaler, clawq_strerror(rc));
            return 1;
        }
    }

    {
        join_opts jo = {d.cfg.node_id, d.cfg.raft, d.cfg.listen, d.cfg.join};
        rc = joiner_start(d.loop, d.s, d.r, &jo, &d.join);
        if (rc != 0) {
            LOG(LOG_ERROR, "clawqd.join", "error=\"%s\"", clawq_strerror(rc));
            return 1;
        }
    }

    uv_timer_init(d.loop, &d.grace);
    d.grace.data = &d;
    uv_timer_init(d.loop, &d.transfer_wait);
    d.transfer_wait.data = &d;
    uv_timer_init(d.loop, &d.transfer_retry);
    d.transfer_retry.data = &d;
    uv_signal_init(d.loop, &d.sigterm);
    uv_signal_init(d.loop, &d.sigint);
    d.sigterm.data = d.sigint.data = &d;
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    LOG(LOG_INFO, "clawqd.started", "node=%u listen=%s raft=%s data=%s",
        d.cfg.node_id, d.cfg.listen, d.cfg.raft, d.cfg.data);

    uv_run(d.loop, UV_RUN_DEFAULT);
    metrics_fini(&d.srv.metrics);
    store_close(d.s);
    uv_loop_close(d.loop);
    return d.exit_code;
}
