/* harness.c: real clawqd processes for the integration suites. See
 * harness.h. */
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CLAWQD_PATH
#define CLAWQD_PATH "clawqd"
#endif
#ifndef CLAWQCTL_PATH
#define CLAWQCTL_PATH "clawqctl"
#endif

#define START_TRIES 5          /* port conflicts tolerated per start */
#define READY_TIMEOUT_MS 30000 /* start (or replay) until Hello + leader */
#define LOG_TAIL_BYTES 16384   /* of each leftover clawqd.log */

/* The per-TCase root, made by the parent and inherited by each test. */
static char root[256];

const char *th_clawqd_path(void)
{
    const char *p = getenv("CLAWQ_IT_CLAWQD");
    return p != NULL && *p != '\0' ? p : CLAWQD_PATH;
}

static const char *clawqctl_path(void)
{
    const char *p = getenv("CLAWQ_IT_CLAWQCTL");
    return p != NULL && *p != '\0' ? p : CLAWQCTL_PATH;
}

uint64_t th_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void th_sleep_ms(uint32_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    ck_assert_ptr_nonnull(d);
    return d;
}

/* ---- the per-TCase root and the leftover report ---- */

static void root_setup(void)
{
    const char *tmp = getenv("TMPDIR");

    signal(SIGPIPE, SIG_IGN);
    if (tmp == NULL || *tmp == '\0' || strlen(tmp) > 200)
        tmp = "/tmp";
    snprintf(root, sizeof(root), "%s/clawq-it.XXXXXX", tmp);
    if (mkdtemp(root) == NULL) {
        fprintf(stderr, "harness: mkdtemp %s: %s\n", root, strerror(errno));
        abort();
    }
}

/* Prints the last LOG_TAIL_BYTES of path to stderr. */
static void print_tail(const char *path)
{
    FILE *f = fopen(path, "r");
    char buf[4096];
    long size;
    size_t n;

    if (f == NULL)
        return;
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    if (size > LOG_TAIL_BYTES) {
        fseek(f, size - LOG_TAIL_BYTES, SEEK_SET);
        fprintf(stderr, "[... %ld bytes before ...]\n", size - LOG_TAIL_BYTES);
    } else {
        fseek(f, 0, SEEK_SET);
    }
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        fwrite(buf, 1, n, stderr);
    fclose(f);
}

/* Kills the clawqd whose PID a leftover directory recorded, when that PID
 * is still a clawqd. */
static void kill_leftover(const char *dir)
{
    char path[700], comm[64] = "";
    FILE *f;
    long pid = 0;

    snprintf(path, sizeof(path), "%s/clawqd.pid", dir);
    f = fopen(path, "r");
    if (f == NULL)
        return;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = 0;
    fclose(f);
    if (pid <= 0)
        return;
    snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
    f = fopen(path, "r");
    if (f == NULL)
        return;
    if (fgets(comm, sizeof(comm), f) == NULL)
        comm[0] = '\0';
    fclose(f);
    if (strncmp(comm, "clawqd", 6) == 0)
        kill((pid_t)pid, SIGKILL);
}

static void root_teardown(void)
{
    DIR *d = opendir(root);
    struct dirent *e;
    char path[600];

    if (d != NULL) {
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof(path), "%s/%s", root, e->d_name);
            kill_leftover(path);
            fprintf(stderr,
                    "==== harness: a test failed; clawqd stderr (%s) ====\n",
                    path);
            snprintf(path, sizeof(path), "%s/%s/clawqd.log", root, e->d_name);
            print_tail(path);
            fprintf(stderr, "==== end of clawqd stderr ====\n");
        }
        closedir(d);
    }
    rm_tree(root);
}

TCase *th_tcase_new(const char *name, double timeout_s)
{
    TCase *tc = tcase_create(name);
    tcase_add_unchecked_fixture(tc, root_setup, root_teardown);
    tcase_set_timeout(tc, timeout_s);
    return tc;
}

int th_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}

/* ---- ports ---- */

/* A port that was free on 127.0.0.1 a moment ago, distinct from the
 * n_avoid ports in avoid. */
uint16_t th_free_port(const uint16_t *avoid, int n_avoid)
{
    for (int tries = 0; tries < 100; tries++) {
        struct sockaddr_in a;
        socklen_t len = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        uint16_t port = 0;
        bool dup = false;

        ck_assert_int_ge(fd, 0);
        memset(&a, 0, sizeof(a));
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
            getsockname(fd, (struct sockaddr *)&a, &len) == 0)
            port = ntohs(a.sin_port);
        close(fd);
        for (int i = 0; i < n_avoid; i++)
            dup = dup || avoid[i] == port;
        if (port != 0 && !dup)
            return port;
    }
    ck_abort_msg("no free port on 127.0.0.1");
    return 0;
}

static void pick_ports(th_broker *b)
{
    uint16_t p[4];

    p[0] = th_free_port(p, 0);
    p[1] = th_free_port(p, 1);
    p[2] = th_free_port(p, 2);
    p[3] = th_free_port(p, 3);
    b->port = p[0];
    b->raft_port = p[1];
    b->http_port = p[2];
    b->scaler_port = p[3];
    snprintf(b->endpoint, sizeof(b->endpoint), "127.0.0.1:%u", b->port);
}

/* ---- processes ---- */

/* Waits up to timeout_ms for pid to exit; returns the exit code (128 +
 * signal when killed by one) or -1 when it is still running. */
static int wait_exit(pid_t pid, uint32_t timeout_ms)
{
    uint64_t end = th_now_ms() + timeout_ms;
    int st;

    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (r < 0 && errno != EINTR)
            return -2; /* not our child: cannot happen */
        if (th_now_ms() >= end)
            return -1;
        th_sleep_ms(5);
    }
}

/* clawqd path, then --data, --listen, --raft, --http, --scaler with their
 * values. */
#define N_FIXED_ARGS 11

static void spawn(th_broker *b)
{
    char listen[32], raft[32], http[32], scaler[32];
    char *argv[TH_MAX_ARGS + 16];
    int argc = 0, fd;
    pid_t parent = getpid(), pid;
    FILE *f;
    char path[400];

    snprintf(listen, sizeof(listen), "127.0.0.1:%u", b->port);
    snprintf(raft, sizeof(raft), "127.0.0.1:%u", b->raft_port);
    snprintf(http, sizeof(http), "127.0.0.1:%u", b->http_port);
    snprintf(scaler, sizeof(scaler), "127.0.0.1:%u", b->scaler_port);
    argv[argc++] = xstrdup(th_clawqd_path());
    argv[argc++] = xstrdup("--data");
    argv[argc++] = b->data;
    argv[argc++] = xstrdup("--listen");
    argv[argc++] = listen;
    argv[argc++] = xstrdup("--raft");
    argv[argc++] = raft;
    argv[argc++] = xstrdup("--http");
    argv[argc++] = http;
    argv[argc++] = xstrdup("--scaler");
    argv[argc++] = scaler;
    for (int i = 0; i < b->n_args; i++)
        argv[argc++] = b->args[i];
    argv[argc] = NULL;

    fd = open(b->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    dprintf(fd, "==== harness: exec");
    for (int i = 0; i < argc; i++)
        dprintf(fd, " %s", argv[i]);
    dprintf(fd, " ====\n");

    fflush(NULL);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(126);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        signal(SIGPIPE, SIG_DFL);
        execv(argv[0], argv);
        dprintf(2, "harness: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fd);
    /* The program and the flag names were xstrdup'd (0, 1, 3, ...);
     * the values and the extra args are owned elsewhere. */
    for (int i = 0; i < N_FIXED_ARGS; i++)
        if (i == 0 || i % 2 == 1)
            free(argv[i]);
    b->pid = pid;
    snprintf(path, sizeof(path), "%s/clawqd.pid", b->dir);
    f = fopen(path, "w");
    if (f != NULL) {
        fprintf(f, "%ld\n", (long)pid);
        fclose(f);
    }
}

/* True when the log mentions a port already in use. */
static bool log_says_in_use(const th_broker *b)
{
    FILE *f = fopen(b->log_path, "r");
    char line[1024];
    bool found = false;

    if (f == NULL)
        return false;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "==== harness: exec", 18) == 0)
            found = false; /* only the last start counts */
        else if (strstr(line, "in use") != NULL)
            found = true;
    }
    fclose(f);
    return found;
}

/* Waits until b answers Hello naming a leader and, when writable, also
 * accepts a write: an ack of a task id never issued answered NOT_FOUND
 * (it changes nothing). Returns 0, or the exit code when clawqd exited
 * first. Asserts when it takes too long. */
static int wait_ready(th_broker *b, bool writable)
{
    uint64_t end = th_now_ms() + READY_TIMEOUT_MS;
    clawq_options o;
    char last[256] = "";

    clawq_options_init(&o);
    o.connect_timeout_ms = 1000;
    o.request_timeout_ms = 2000;
    o.client_name = "harness";
    while (th_now_ms() < end) {
        clawq_client *c = NULL;
        int st = wait_exit(b->pid, 0);

        if (st >= 0) {
            b->pid = 0;
            return st == 0 ? 1000 : st;
        }
        if (clawq_connect2(b->endpoint, &o, &c, last, sizeof(last)) == 0) {
            clawq_server_info info;
            int rc = clawq_server_info_get(c, &info);
            bool ready = rc == 0 && info.leader_id != 0;
            if (rc != 0)
                snprintf(last, sizeof(last), "server_info: %s",
                         clawq_err_name(rc));
            if (ready && writable) {
                rc = clawq_ack(c, UINT64_C(1) << 62, 1);
                ready = rc == CLAWQ_ENOT_FOUND;
                snprintf(last, sizeof(last), "probe ack: %s: %s",
                         clawq_err_name(rc), clawq_errmsg(c));
            }
            clawq_close(c);
            if (ready)
                return 0;
        }
        th_sleep_ms(20);
    }
    ck_abort_msg("clawqd (pid %ld, %s) not ready after %d ms: %s", (long)b->pid,
                 b->endpoint, READY_TIMEOUT_MS, last);
    return -1;
}

/* Starts b's process, retrying with new ports on a port conflict. */
static void launch(th_broker *b, bool fresh_ports, bool writable)
{
    for (int tries = 0; tries < START_TRIES; tries++) {
        int rc;

        if (fresh_ports || tries > 0)
            pick_ports(b);
        spawn(b);
        rc = wait_ready(b, writable);
        if (rc == 0)
            return;
        ck_assert_msg(log_says_in_use(b),
                      "clawqd exited with %d while starting (see its log)", rc);
    }
    ck_abort_msg("clawqd: ports taken %d times in a row", START_TRIES);
}

th_broker *th_broker_start(const char *arg, ...)
{
    th_broker *b = calloc(1, sizeof(*b));
    va_list ap;

    ck_assert_ptr_nonnull(b);
    ck_assert_msg(root[0] != '\0', "th_tcase_new's fixture did not run");
    snprintf(b->dir, sizeof(b->dir), "%s/b.XXXXXX", root);
    ck_assert_ptr_nonnull(mkdtemp(b->dir));
    snprintf(b->data, sizeof(b->data), "%s/data", b->dir);
    snprintf(b->log_path, sizeof(b->log_path), "%s/clawqd.log", b->dir);
    va_start(ap, arg);
    for (const char *a = arg; a != NULL; a = va_arg(ap, const char *)) {
        ck_assert_int_lt(b->n_args, TH_MAX_ARGS);
        b->args[b->n_args++] = strdup(a);
    }
    va_end(ap);
    launch(b, true, true);
    return b;
}

void th_broker_restart(th_broker *b)
{
    ck_assert_int_eq(b->pid, 0);
    launch(b, false, true);
}

void th_broker_restart_hello(th_broker *b)
{
    ck_assert_int_eq(b->pid, 0);
    launch(b, false, false);
}

int th_broker_stop(th_broker *b, uint32_t timeout_ms)
{
    int st;

    ck_assert_int_gt(b->pid, 0);
    ck_assert_int_eq(kill(b->pid, SIGTERM), 0);
    st = wait_exit(b->pid, timeout_ms);
    if (st < 0) {
        kill(b->pid, SIGKILL);
        wait_exit(b->pid, 10000);
    }
    b->pid = 0;
    return st;
}

void th_broker_kill(th_broker *b)
{
    ck_assert_int_gt(b->pid, 0);
    ck_assert_int_eq(kill(b->pid, SIGKILL), 0);
    ck_assert_int_ge(wait_exit(b->pid, 10000), 0);
    b->pid = 0;
}

bool th_broker_alive(th_broker *b)
{
    int st;

    if (b->pid <= 0)
        return false;
    st = wait_exit(b->pid, 0);
    if (st >= 0) {
        fprintf(stderr, "harness: clawqd pid %ld exited with %d\n",
                (long)b->pid, st);
        b->pid = 0;
        return false;
    }
    return true;
}

void th_broker_free(th_broker *b)
{
    if (b == NULL)
        return;
    if (b->pid > 0) {
        kill(b->pid, SIGKILL);
        wait_exit(b->pid, 10000);
    }
    rm_tree(b->dir);
    for (int i = 0; i < b->n_args; i++)
        free(b->args[i]);
    free(b);
}

clawq_client *th_connect(const th_broker *b)
{
    clawq_options o;
    clawq_client *c = NULL;
    char err[256] = "";
    int rc;

    clawq_options_init(&o);
    o.connect_timeout_ms = 5000;
    o.request_timeout_ms = 20000;
    o.client_name = "it";
    rc = clawq_connect2(b->endpoint, &o, &c, err, sizeof(err));
    ck_assert_msg(rc == 0, "connect %s: %s: %s", b->endpoint,
                  clawq_err_name(rc), err);
    return c;
}

long th_rss_kb(pid_t pid)
{
    char path[64], line[256];
    FILE *f;
    long kb = -1;

    snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

int th_ctl(const th_broker *b, char *out, size_t out_len, const char *arg, ...)
{
    char *argv[40];
    int argc = 0, pfd[2], st;
    size_t used = 0;
    va_list ap;
    pid_t pid;
    uint64_t end;

    argv[argc++] = xstrdup(clawqctl_path());
    argv[argc++] = xstrdup("--server");
    argv[argc++] = xstrdup(b->endpoint);
    va_start(ap, arg);
    for (const char *a = arg; a != NULL; a = va_arg(ap, const char *)) {
        ck_assert_int_lt(argc, 39);
        argv[argc++] = xstrdup(a);
    }
    va_end(ap);
    argv[argc] = NULL;

    ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
    fflush(NULL);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(pfd[1], 1);
        signal(SIGPIPE, SIG_DFL);
        execv(argv[0], argv);
        dprintf(2, "harness: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    for (int i = 0; i < argc; i++)
        free(argv[i]);
    end = th_now_ms() + 30000;
    for (;;) {
        struct pollfd p = {pfd[0], POLLIN, 0};
        char buf[4096];
        ssize_t n;
        uint64_t now = th_now_ms();

        if (now >= end)
            break;
        if (poll(&p, 1, (int)(end - now)) <= 0)
            continue;
        n = read(pfd[0], buf, sizeof(buf));
        if (n <= 0)
            break;
        if (out != NULL && used + 1 < out_len) {
            size_t k =
                (size_t)n < out_len - 1 - used ? (size_t)n : out_len - 1 - used;
            memcpy(out + used, buf, k);
            used += k;
        }
    }
    close(pfd[0]);
    if (out != NULL && out_len > 0)
        out[used] = '\0';
    st = wait_exit(pid, th_now_ms() < end ? (uint32_t)(end - th_now_ms()) : 0);
    if (st < 0) {
        kill(pid, SIGKILL);
        wait_exit(pid, 5000);
        ck_abort_msg("clawqctl %s did not finish in 30 s", arg);
    }
    return st;
}
