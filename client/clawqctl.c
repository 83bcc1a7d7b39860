/* clawqctl: the admin CLI of clawq, a thin shell over libclawq's public
 * API (clawq.h). Every argument is validated before any connection is
 * made, so usage errors (exit 2) never depend on a broker being up.
 *
 * Exit codes: 0 ok, 1 error from the broker or the connection (message on
 * stderr), 2 usage error, 3 nothing to pull. Output: tables and "key:
 * value" records for people; with --json one JSON document on stdout, with
 * the field names of DESIGN.md and proto/clawq.proto. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "clawq.h"
#include "text.h"

#define EXIT_BROKER 1
#define EXIT_USAGE 2
#define EXIT_EMPTY 3
#define DEFAULT_SERVER "127.0.0.1:7700"
#define MAX_STDIN_PAYLOAD (64u << 20)
#define MAX_HEADERS 64
#define MAX_POS 32

/* ---- command-line parsing ---- */

typedef struct opt_spec {
    const char *name;  /* "--priority" */
    const char *alias; /* "-n" or NULL */
    bool has_arg;
    bool repeat;
} opt_spec;

typedef struct args {
    const char *cmd; /* for messages: "put", "dlq list" */
    const char *val[16];
    bool seen[16];
    const char *multi[MAX_HEADERS]; /* values of the repeatable option */
    int n_multi;
    const char *pos[MAX_POS];
    int n_pos;
} args;

typedef struct ctl {
    const char *server;
    bool json;
    bool node; /* --node: stay on the node named, no leader following */
    uint32_t timeout_ms;
    clawq_client *c;
} ctl;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3), noreturn))
#endif
static void
usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fputs("clawqctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (cmd != NULL)
        fprintf(stderr, "\nTry 'clawqctl %s --help'.\n", cmd);
    else
        fputs("\nTry 'clawqctl --help'.\n", stderr);
    exit(EXIT_USAGE);
}

static const char usage_main[] =
    "usage: clawqctl [--server ADDR[,ADDR...]] [--node] [--json] "
    "[--timeout MS] COMMAND [ARGS]\n"
    "\n"
    "Administer a clawq broker (cluster).\n"
    "\n"
    "Global options (also accepted after COMMAND):\n"
    "  --server ADDR[,ADDR...]  broker endpoints, host:port (default "
    "$CLAWQ_SERVER,\n"
    "                           else " DEFAULT_SERVER "); the leader is "
    "followed\n"
    "  --node                   ask the node named by --server itself "
    "(its own\n"
    "                           view: no leader following; writes fail "
    "there\n"
    "                           with NOT_LEADER unless it leads)\n"
    "  --json                   print one JSON document on stdout\n"
    "  --timeout MS             per-request timeout, 1..3600000 (default "
    "30000)\n"
    "  -h, --help               this help; 'clawqctl COMMAND --help' for a "
    "command\n"
    "\n"
    "Commands:\n"
    "  queues                         list queues with their depths\n"
    "  stats QUEUE                    counters and settings of a queue\n"
    "  workers QUEUE                  workers reporting load, their capacity\n"
    "  peek QUEUE                     show tasks without leasing them\n"
    "  put QUEUE (DATA | -)           put a task ('-' reads stdin)\n"
    "  pull QUEUE                     lease tasks (optionally ack them)\n"
    "  ack ID LEASE_ID                mark a leased task done\n"
    "  nack ID LEASE_ID               return a leased task for retry\n"
    "  fail ID LEASE_ID               dead-letter a leased task\n"
    "  dlq list QUEUE                 list dead tasks\n"
    "  dlq show ID                    show one task in full\n"
    "  dlq replay QUEUE               return dead tasks to ready\n"
    "  dlq purge QUEUE                delete dead tasks\n"
    "  queue set QUEUE KEY=VALUE...   change queue settings\n"
    "  pause QUEUE | resume QUEUE     stop / restart deliveries\n"
    "  purge QUEUE                    delete ready and delayed tasks\n"
    "  cluster status [--digest]      members, roles, leader, term, lag\n"
    "  cluster add ID RAFT CLIENT     add a node (promoted once caught up)\n"
    "  cluster remove ID              remove a node\n"
    "  cluster transfer [ID]          hand leadership to a node\n"
    "\n"
    "Exit status: 0 ok, 1 broker or connection error (message on stderr),\n"
    "2 usage error, 3 nothing to pull.\n";

/* Per-command help, indexed by command name. */
typedef struct cmd_help {
    const char *name;
    const char *text;
} cmd_help;

static const cmd_help helps[] = {
    {"cluster",
     "usage: clawqctl cluster status [--digest]\n"
     "       clawqctl cluster add ID RAFT_ADDR CLIENT_ADDR\n"
     "       clawqctl cluster remove ID\n"
     "       clawqctl cluster transfer [ID]\n"
     "\n"
     "status: the members (id, Raft and client address, role), the\n"
     "leader, the term, the commit and applied index and, from the\n"
     "leader, each member's lag in log entries. It asks the leader\n"
     "unless --node is given. --digest adds a digest of the answering\n"
     "node's state: nodes at the same applied index must have equal\n"
     "digests. JSON: {\"node_id\", \"role\", \"leader\" (the leader's\n"
     "node id, 0 = none known), \"leader_addr\", \"term\",\n"
     "\"commit_index\", \"applied_index\", \"last_index\",\n"
     "\"leader_view\", [\"digest\" (16 hex digits), \"digest_index\"],\n"
     "\"members\": [{\"id\", \"raft_addr\", \"client_addr\", \"role\",\n"
     "\"match_index\", \"lag\"}]}.\n"
     "\n"
     "add: adds node ID as a non-voter, lets it catch up (snapshot and\n"
     "log), then promotes it to voter; returns once that is committed.\n"
     "Start the node first (clawqd --join does this by itself).\n"
     "remove: removes node ID (not the leader: transfer first).\n"
     "transfer: hands leadership to node ID, or to the most\n"
     "up-to-date voter. Each prints the status afterwards.\n"},
    {"queues", "usage: clawqctl queues\n"
               "\n"
               "Lists every queue: ready, delayed, leased and dead depths,\n"
               "reporting workers, whether paused, and the age of the "
               "oldest\n"
               "ready task. JSON: {\"queues\": [STATS...], \"node_id\": N}.\n"},
    {"stats", "usage: clawqctl stats QUEUE\n"
              "\n"
              "Shows a queue's depths, totals, worker load and settings.\n"
              "JSON: the stats object (ready, delayed, leased, dead,\n"
              "put_total, ..., settings {lease_ms, ...}, node_id).\n"
              "Exit 1 with NOT_FOUND for an unknown queue.\n"},
    {"workers", "usage: clawqctl workers QUEUE\n"
                "\n"
                "Lists the workers that reported load for QUEUE (to the\n"
                "answering node) within the last three report intervals:\n"
                "connection, name, capacity, tasks in flight, age of the\n"
                "last report. JSON: {\"workers\": [{\"conn_id\", \"name\",\n"
                "\"capacity\", \"inflight\", \"last_report_age_ms\"}]}.\n"},
    {"peek", "usage: clawqctl peek QUEUE [--state ready|delayed|leased|dead] "
             "[-n N]\n"
             "\n"
             "Shows up to N (1..1000, default 10) tasks in a state (default\n"
             "ready) without changing them. JSON: {\"tasks\": [TASK...]}.\n"},
    {"put", "usage: clawqctl put QUEUE [--priority P] [--delay MS] "
            "[--deadline MS]\n"
            "                    [--key K] [--header K=V]... "
            "[--max-attempts N] (DATA | -)\n"
            "\n"
            "Puts one task whose payload is DATA, or stdin when DATA is '-'\n"
            "(binary-safe, up to 64 MiB; the broker's limit is usually "
            "lower).\n"
            "  --priority P      0 (most urgent) .. 255, default 128\n"
            "  --delay MS        ready after MS milliseconds\n"
            "  --deadline MS     dead-letter as 'expired' if not done MS "
            "from now\n"
            "  --key K           idempotency key: a repeat within the dedup\n"
            "                    window returns the first id "
            "(\"duplicate\")\n"
            "  --header K=V      a header (repeatable, up to 64)\n"
            "  --max-attempts N  deliveries before dead-lettering (default: "
            "the queue's)\n"
            "Prints the task id. JSON: {\"id\": N, \"duplicate\": BOOL}.\n"},
    {"pull", "usage: clawqctl pull QUEUE [-n N] [--wait MS] [--lease MS] "
             "[--ack]\n"
             "\n"
             "Leases up to N (1..1024, default 1) ready tasks, waiting up to\n"
             "MS for the first (default 0: don't wait). --lease MS sets the\n"
             "lease (default: the queue's). --ack acks them after printing.\n"
             "Without --ack, finish each task with ack, nack or fail, using\n"
             "its id and lease_id. Exit 3 when there was nothing to pull.\n"
             "JSON: {\"tasks\": [TASK...]}; payload is a string when it is\n"
             "UTF-8, else base64 with \"payload_encoding\": \"base64\".\n"},
    {"ack", "usage: clawqctl ack ID LEASE_ID\n"
            "\n"
            "Marks a leased task done. LEASE_LOST (exit 1) when the lease\n"
            "expired or was re-issued.\n"},
    {"nack", "usage: clawqctl nack ID LEASE_ID [--delay MS] [--error TEXT]\n"
             "\n"
             "Returns a leased task as a failed attempt: ready after MS (0 =\n"
             "at once), or after the queue's backoff when --delay is not\n"
             "given. TEXT is kept with the task.\n"},
    {"fail", "usage: clawqctl fail ID LEASE_ID [--error TEXT]\n"
             "\n"
             "Moves a leased task straight to the dead-letter queue.\n"},
    {"dlq", "usage: clawqctl dlq list QUEUE [--error TEXT] [--from MS] "
            "[--to MS] [-n N]\n"
            "       clawqctl dlq show ID\n"
            "       clawqctl dlq replay QUEUE [--error TEXT] [--from MS --to "
            "MS] [-n N]\n"
            "       clawqctl dlq purge QUEUE [--error TEXT] [--from MS --to "
            "MS] [-n N]\n"
            "\n"
            "The dead-letter queue of QUEUE. Filters: --error TEXT matches a\n"
            "substring of the last error; --from/--to (unix ms) select\n"
            "from <= dead_at < to; -n caps the tasks touched (list: 1..1000,\n"
            "default 100; replay/purge: default 10000).\n"
            "show prints a task in full (any state) with its errors.\n"
            "replay returns tasks to ready with attempt reset; purge deletes\n"
            "them; both print how many. JSON: {\"tasks\": [...]} for list,\n"
            "the task for show, {\"count\": N} for replay/purge.\n"},
    {"queue", "usage: clawqctl queue set QUEUE KEY=VALUE...\n"
              "\n"
              "Changes queue settings (creating the queue if needed). Keys:\n"
              "  lease_ms         1..4294967295   default 30000\n"
              "  max_attempts     1..4294967295   default 5\n"
              "  backoff_base_ms  0..4294967295   default 1000\n"
              "  backoff_max_ms   0..4294967295   default 300000\n"
              "  max_depth        0..2^64-1       0 = unbounded\n"
              "  max_payload      1..4294967295   bytes, default 1048576\n"
              "  dedup_window_ms  0..2^64-1       default 600000\n"},
    {"pause", "usage: clawqctl pause QUEUE\n"
              "\n"
              "Pauses a queue: pulls lease nothing until it is resumed.\n"},
    {"resume", "usage: clawqctl resume QUEUE\n"
               "\n"
               "Resumes a paused queue.\n"},
    {"purge", "usage: clawqctl purge QUEUE\n"
              "\n"
              "Deletes every ready and delayed task of QUEUE (leased tasks\n"
              "finish normally) and prints how many. JSON: {\"count\": N}.\n"},
};

static void help_print(const char *cmd)
{
    for (size_t i = 0; i < sizeof(helps) / sizeof(helps[0]); i++) {
        if (strcmp(helps[i].name, cmd) == 0) {
            fputs(helps[i].text, stdout);
            fputs("\nGlobal options: --server ADDR[,ADDR...] --json "
                  "--timeout MS (see clawqctl --help).\n",
                  stdout);
            return;
        }
    }
    fputs(usage_main, stdout);
}

static uint32_t timeout_parse(const char *cmd, const char *v)
{
    uint64_t ms;

    if (!text_parse_u64(v, 1, 3600000, &ms))
        usage_error(cmd,
                    "--timeout: expected milliseconds in 1..3600000, "
                    "got '%s'",
                    v);
    return (uint32_t)ms;
}

/* Parses argv[0..argc) of a command against specs, accepting the global
 * options anywhere and --help. Exits 2 on anything unknown. help_name
 * names the help entry. */
static void args_parse(ctl *x, args *a, const char *help_name, int argc,
                       char **argv, const opt_spec *specs, size_t n_specs)
{
    bool opts_done = false;

    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        const char *eq;
        char name[64];
        const char *inline_val = NULL;
        size_t k;

        if (opts_done || arg[0] != '-' || strcmp(arg, "-") == 0) {
            if (a->n_pos == MAX_POS)
                usage_error(a->cmd, "too many arguments");
            a->pos[a->n_pos++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            opts_done = true;
            continue;
        }
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            help_print(help_name);
            exit(0);
        }
        eq = strncmp(arg, "--", 2) == 0 ? strchr(arg, '=') : NULL;
        if (eq != NULL) {
            size_t len = (size_t)(eq - arg);

            if (len >= sizeof(name))
                usage_error(a->cmd, "unknown option '%s'", arg);
            memcpy(name, arg, len);
            name[len] = '\0';
            inline_val = eq + 1;
        } else {
            snprintf(name, sizeof(name), "%s", arg);
        }
        if (strcmp(name, "--json") == 0 && inline_val == NULL) {
            x->json = true;
            continue;
        }
        if (strcmp(name, "--node") == 0 && inline_val == NULL) {
            x->node = true;
            continue;
        }
        if (strcmp(name, "--server") == 0 || strcmp(name, "--timeout") == 0) {
            const char *v = inline_val;

            if (v == NULL) {
                if (i + 1 >= argc)
                    usage_error(a->cmd, "%s needs a value", name);
                v = argv[++i];
            }
            if (name[2] == 's') {
                if (v[0] == '\0')
                    usage_error(a->cmd, "--server: empty address");
                x->server = v;
            } else {
                x->timeout_ms = timeout_parse(a->cmd, v);
            }
            continue;
        }
        for (k = 0; k < n_specs; k++)
            if (strcmp(specs[k].name, name) == 0 ||
                (specs[k].alias != NULL && strcmp(specs[k].alias, name) == 0))
                break;
        if (k == n_specs)
            usage_error(a->cmd, "unknown option '%s'", name);
        if (!specs[k].has_arg) {
            if (inline_val != NULL)
                usage_error(a->cmd, "%s takes no value", specs[k].name);
            a->seen[k] = true;
            continue;
        }
        if (inline_val == NULL) {
            if (i + 1 >= argc)
                usage_error(a->cmd, "%s needs a value", specs[k].name);
            inline_val = argv[++i];
        }
        if (specs[k].repeat) {
            if (a->n_multi == MAX_HEADERS)
                usage_error(a->cmd, "at most %d %s options", MAX_HEADERS,
                            specs[k].name);
            a->multi[a->n_multi++] = inline_val;
        } else if (a->seen[k]) {
            usage_error(a->cmd, "%s given twice", specs[k].name);
        }
        a->seen[k] = true;
        a->val[k] = inline_val;
    }
}

static void pos_count(const args *a, int min, int max, const char *what)
{
    if (a->n_pos < min)
        usage_error(a->cmd, "missing %s", what);
    if (a->n_pos > max)
        usage_error(a->cmd, "unexpected argument '%s'",
                    a->pos[max < MAX_POS ? max : MAX_POS - 1]);
}

static const char *queue_arg(const args *a, const char *q)
{
    if (!text_queue_name_ok(q))
        usage_error(a->cmd,
                    "bad queue name '%s': 1..128 bytes of "
                    "[A-Za-z0-9._:-]",
                    q);
    return q;
}

static uint64_t num_arg(const args *a, const char *opt, const char *v,
                        uint64_t min, uint64_t max)
{
    uint64_t n;

    if (!text_parse_u64(v, min, max, &n))
        usage_error(a->cmd, "%s: expected an integer in %llu..%llu, got '%s'",
                    opt, (unsigned long long)min, (unsigned long long)max, v);
    return n;
}

static uint64_t id_arg(const args *a, const char *what, const char *v)
{
    return num_arg(a, what, v, 1, UINT64_MAX);
}

/* ---- connection and errors ---- */

static void connect_or_die(ctl *x)
{
    clawq_options o;
    char err[512];
    int rc;

    clawq_options_init(&o);
    o.client_name = "clawqctl";
    o.no_follow = x->node;
    if (x->timeout_ms != 0) {
        o.request_timeout_ms = x->timeout_ms;
        o.connect_timeout_ms = x->timeout_ms < 5000 ? x->timeout_ms : 5000;
    }
    rc = clawq_connect2(x->server, &o, &x->c, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "clawqctl: cannot connect to %s: %s: %s\n", x->server,
                clawq_err_name(rc), err);
        exit(EXIT_BROKER);
    }
}

#if defined(__GNUC__)
__attribute__((noreturn))
#endif
static void
broker_error(ctl *x, int rc)
{
    const char *msg = clawq_errmsg(x->c);
    uint32_t retry = clawq_retry_after_ms(x->c);

    fprintf(stderr, "clawqctl: %s: %s", clawq_err_name(rc),
            msg[0] != '\0' ? msg : clawq_strerror(rc));
    if (retry > 0)
        fprintf(stderr, " (retry after %u ms)", retry);
    fputc('\n', stderr);
    clawq_close(x->c);
    exit(EXIT_BROKER);
}

/* ---- output ---- */

static uint64_t unix_ms(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

/* "2024-05-01 12:00:00.123Z", or "-" for 0. */
static const char *time_fmt(uint64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    if (ms == 0 || gmtime_r(&t, &tm) == NULL) {
        snprintf(buf, len, "-");
        return buf;
    }
    snprintf(buf, len, "%04d-%02d-%02d %02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (unsigned)(ms % 1000));
    return buf;
}

/* "1h02m", "3.4s", "120ms". */
static const char *dur_fmt(uint64_t ms, char *buf, size_t len)
{
    if (ms < 1000)
        snprintf(buf, len, "%llums", (unsigned long long)ms);
    else if (ms < 60000)
        snprintf(buf, len, "%.1fs", (double)ms / 1000.0);
    else if (ms < 3600000)
        snprintf(buf, len, "%llum%02llus", (unsigned long long)(ms / 60000),
                 (unsigned long long)(ms / 1000 % 60));
    else
        snprintf(buf, len, "%lluh%02llum", (unsigned long long)(ms / 3600000),
                 (unsigned long long)(ms / 60000 % 60));
    return buf;
}

/* A bytes field as JSON: "name": "text" when UTF-8, else base64 with
 * "name_encoding": "base64". */
static void json_bytes(FILE *f, const char *name, const uint8_t *p, size_t len)
{
    fprintf(f, "\"%s\":", name);
    if (text_utf8_valid(p, len)) {
        text_json_string(f, p, len);
        return;
    }
    {
        size_t blen = text_base64_len(len);
        char *b = blen != SIZE_MAX ? malloc(blen + 1) : NULL;

        if (b == NULL) {
            fputs("clawqctl: out of memory\n", stderr);
            exit(EXIT_BROKER);
        }
        text_base64_encode(p, len, b);
        fprintf(f, "\"%s\",\"%s_encoding\":\"base64\"", b, name);
        free(b);
    }
}

static void json_task(FILE *f, const clawq_task *t)
{
    fprintf(f, "{\"id\":%llu,\"queue\":", (unsigned long long)t->id);
    text_json_cstr(f, t->queue);
    fprintf(f,
            ",\"state\":\"%s\",\"priority\":%u,\"attempt\":%u,"
            "\"max_attempts\":%u,\"lease_id\":%llu,"
            "\"lease_expires_ms\":%llu,",
            clawq_task_state_name(t->state), t->priority, t->attempt,
            t->max_attempts, (unsigned long long)t->lease_id,
            (unsigned long long)t->lease_expires_ms);
    json_bytes(f, "payload", t->payload, t->payload_len);
    fputs(",\"headers\":{", f);
    for (size_t i = 0; i < t->n_headers; i++) {
        if (i > 0)
            fputc(',', f);
        text_json_cstr(f, t->headers[i].key);
        fputc(':', f);
        text_json_cstr(f, t->headers[i].value);
    }
    fprintf(f, "},\"progress\":%llu,", (unsigned long long)t->progress);
    if (t->has_checkpoint) {
        json_bytes(f, "checkpoint", t->checkpoint, t->checkpoint_len);
        fputc(',', f);
    }
    fprintf(f,
            "\"created_ms\":%llu,\"run_at_ms\":%llu,\"deadline_ms\":%llu,"
            "\"ready_at_ms\":%llu,\"dead_at_ms\":%llu,\"dead_reason\":",
            (unsigned long long)t->created_ms, (unsigned long long)t->run_at_ms,
            (unsigned long long)t->deadline_ms,
            (unsigned long long)t->ready_at_ms,
            (unsigned long long)t->dead_at_ms);
    text_json_cstr(f, t->dead_reason);
    fputs(",\"errors\":[", f);
    for (size_t i = 0; i < t->n_errors; i++) {
        fprintf(f, "%s{\"at_ms\":%llu,\"attempt\":%u,\"message\":",
                i > 0 ? "," : "", (unsigned long long)t->errors[i].at_ms,
                t->errors[i].attempt);
        text_json_cstr(f, t->errors[i].message);
        fputc('}', f);
    }
    fputs("],\"idempotency_key\":", f);
    text_json_cstr(f, t->idempotency_key);
    fputs(",\"worker\":", f);
    text_json_cstr(f, t->worker);
    fputc('}', f);
}

static void json_tasks(FILE *f, const clawq_task *t, size_t n)
{
    fputs("{\"tasks\":[", f);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            fputc(',', f);
        json_task(f, &t[i]);
    }
    fputs("]}\n", f);
}

static void json_stats(FILE *f, const clawq_queue_stats *s, bool node)
{
    const clawq_queue_settings *q = &s->settings;

    fputs("{\"name\":", f);
    text_json_cstr(f, s->name);
    fprintf(
        f,
        ",\"ready\":%llu,\"delayed\":%llu,\"leased\":%llu,\"dead\":%llu,"
        "\"put_total\":%llu,\"deduped_total\":%llu,"
        "\"leased_total\":%llu,\"acked_total\":%llu,"
        "\"nacked_total\":%llu,\"failed_total\":%llu,"
        "\"expired_total\":%llu,\"dead_total\":%llu,"
        "\"oldest_ready_ms\":%llu,\"oldest_ready_age_ms\":%llu,"
        "\"workers\":%u,\"worker_capacity\":%llu,"
        "\"worker_inflight\":%llu,\"created_ms\":%llu,"
        "\"settings\":{\"lease_ms\":%u,\"max_attempts\":%u,"
        "\"backoff_base_ms\":%u,\"backoff_max_ms\":%u,"
        "\"max_depth\":%llu,\"max_payload\":%u,"
        "\"dedup_window_ms\":%llu,\"paused\":%s}",
        (unsigned long long)s->ready, (unsigned long long)s->delayed,
        (unsigned long long)s->leased, (unsigned long long)s->dead,
        (unsigned long long)s->put_total, (unsigned long long)s->deduped_total,
        (unsigned long long)s->leased_total, (unsigned long long)s->acked_total,
        (unsigned long long)s->nacked_total,
        (unsigned long long)s->failed_total,
        (unsigned long long)s->expired_total, (unsigned long long)s->dead_total,
        (unsigned long long)s->oldest_ready_ms,
        (unsigned long long)s->oldest_ready_age_ms, s->workers,
        (unsigned long long)s->worker_capacity,
        (unsigned long long)s->worker_inflight,
        (unsigned long long)s->created_ms, q->lease_ms, q->max_attempts,
        q->backoff_base_ms, q->backoff_max_ms, (unsigned long long)q->max_depth,
        q->max_payload, (unsigned long long)q->dedup_window_ms,
        q->paused ? "true" : "false");
    if (node)
        fprintf(f, ",\"node_id\":%u", s->node_id);
    fputc('}', f);
}

/* A task as "key: value" lines, payload in full. */
static void human_task(FILE *f, const clawq_task *t)
{
    char b1[64], b2[64];

    fprintf(f, "id:               %llu\n", (unsigned long long)t->id);
    fprintf(f, "queue:            %s\n", t->queue);
    fprintf(f, "state:            %s\n", clawq_task_state_name(t->state));
    fprintf(f, "priority:         %u\n", t->priority);
    fprintf(f, "attempt:          %u of %u\n", t->attempt, t->max_attempts);
    if (t->state == CLAWQ_STATE_LEASED && t->lease_id != 0) {
        fprintf(f, "lease_id:         %llu\n", (unsigned long long)t->lease_id);
        fprintf(f, "lease_expires:    %s\n",
                time_fmt(t->lease_expires_ms, b1, sizeof(b1)));
    }
    if (t->worker[0] != '\0')
        fprintf(f, "worker:           %s\n", t->worker);
    fprintf(f, "created:          %s\n",
            time_fmt(t->created_ms, b1, sizeof(b1)));
    if (t->run_at_ms != 0)
        fprintf(f, "run_at:           %s\n",
                time_fmt(t->run_at_ms, b1, sizeof(b1)));
    if (t->deadline_ms != 0)
        fprintf(f, "deadline:         %s\n",
                time_fmt(t->deadline_ms, b1, sizeof(b1)));
    if (t->dead_at_ms != 0)
        fprintf(f, "dead_at:          %s (%s)\n",
                time_fmt(t->dead_at_ms, b2, sizeof(b2)), t->dead_reason);
    if (t->idempotency_key[0] != '\0')
        fprintf(f, "idempotency_key:  %s\n", t->idempotency_key);
    for (size_t i = 0; i < t->n_headers; i++)
        fprintf(f, "header:           %s=%s\n", t->headers[i].key,
                t->headers[i].value);
    if (t->progress != 0)
        fprintf(f, "progress:         %llu\n", (unsigned long long)t->progress);
    if (t->has_checkpoint) {
        fputs("checkpoint:       ", f);
        text_human(f, t->checkpoint, t->checkpoint_len, 0);
        fputc('\n', f);
    }
    for (size_t i = 0; i < t->n_errors; i++) {
        fprintf(f, "error:            %s attempt %u: ",
                time_fmt(t->errors[i].at_ms, b1, sizeof(b1)),
                t->errors[i].attempt);
        text_human(f, t->errors[i].message, strlen(t->errors[i].message), 0);
        fputc('\n', f);
    }
    fprintf(f, "payload:          (%zu bytes) ", t->payload_len);
    text_human(f, t->payload, t->payload_len, 0);
    fputc('\n', f);
}

static void human_task_table(FILE *f, const clawq_task *t, size_t n, bool dead)
{
    char b[64];

    if (dead)
        fprintf(f, "%-12s %-24s %-12s %-7s %-30s %s\n", "ID", "DEAD_AT",
                "REASON", "ATTEMPT", "LAST_ERROR", "PAYLOAD");
    else
        fprintf(f, "%-12s %-8s %-4s %-7s %-12s %-24s %s\n", "ID", "STATE",
                "PRI", "ATTEMPT", "LEASE_ID", "WORKER", "PAYLOAD");
    for (size_t i = 0; i < n; i++) {
        if (dead) {
            const char *e = t[i].n_errors > 0 ? t[i].errors[0].message : "";
            char err[31];

            snprintf(err, sizeof(err), "%s", e);
            for (char *p = err; *p != '\0'; p++)
                if ((unsigned char)*p < 0x20)
                    *p = ' ';
            if (!text_utf8_valid((const uint8_t *)err, strlen(err)))
                snprintf(err, sizeof(err), "%s", "<binary>");
            fprintf(f, "%-12llu %-24s %-12s %-7u %-30s ",
                    (unsigned long long)t[i].id,
                    time_fmt(t[i].dead_at_ms, b, sizeof(b)),
                    t[i].dead_reason[0] != '\0' ? t[i].dead_reason : "-",
                    t[i].attempt, err[0] != '\0' ? err : "-");
        } else {
            fprintf(f, "%-12llu %-8s %-4u %-7u %-12llu %-24s ",
                    (unsigned long long)t[i].id,
                    clawq_task_state_name(t[i].state), t[i].priority,
                    t[i].attempt, (unsigned long long)t[i].lease_id,
                    t[i].worker[0] != '\0' ? t[i].worker : "-");
        }
        text_human(f, t[i].payload, t[i].payload_len, 40);
        fputc('\n', f);
    }
}

/* ---- commands ---- */

static int cmd_queues(ctl *x, int argc, char **argv)
{
    args a = {.cmd = "queues"};
    clawq_queue_stats *qs;
    size_t n;
    int rc;

    args_parse(x, &a, "queues", argc, argv, NULL, 0);
    pos_count(&a, 0, 0, "");
    connect_or_die(x);
    rc = clawq_queues(x->c, &qs, &n);
    if (rc < 0)
        broker_error(x, rc);
    if (x->json) {
        printf("{\"queues\":[");
        for (size_t i = 0; i < n; i++) {
            if (i > 0)
                putchar(',');
            json_stats(stdout, &qs[i], false);
        }
        printf("],\"node_id\":%u}\n", n > 0 ? qs[0].node_id : 0);
    } else {
        printf("%-32s %10s %10s %10s %10s %7s %6s %s\n", "QUEUE", "READY",
               "DELAYED", "LEASED", "DEAD", "WORKERS", "PAUSED",
               "OLDEST_READY");
        for (size_t i = 0; i < n; i++) {
            char b[64];

            printf("%-32s %10llu %10llu %10llu %10llu %7u %6s %s\n", qs[i].name,
                   (unsigned long long)qs[i].ready,
                   (unsigned long long)qs[i].delayed,
                   (unsigned long long)qs[i].leased,
                   (unsigned long long)qs[i].dead, qs[i].workers,
                   qs[i].settings.paused ? "yes" : "no",
                   qs[i].ready > 0
                       ? dur_fmt(qs[i].oldest_ready_age_ms, b, sizeof(b))
                       : "-");
        }
    }
    clawq_queue_stats_free(qs);
    return 0;
}

static int cmd_workers(ctl *x, int argc, char **argv)
{
    args a = {.cmd = "workers"};
    clawq_worker *w = NULL;
    size_t n = 0, i;
    char b[64];
    int rc;

    args_parse(x, &a, "workers", argc, argv, NULL, 0);
    pos_count(&a, 1, 1, "QUEUE");
    queue_arg(&a, a.pos[0]);
    connect_or_die(x);
    rc = clawq_workers(x->c, a.pos[0], &w, &n);
    if (rc < 0)
        broker_error(x, rc);
    if (x->json) {
        fputs("{\"workers\":[", stdout);
        for (i = 0; i < n; i++) {
            printf("%s{\"conn_id\":%llu,\"name\":", i ? "," : "",
                   (unsigned long long)w[i].conn_id);
            text_json_cstr(stdout, w[i].name);
            printf(",\"capacity\":%u,\"inflight\":%u,"
                   "\"last_report_age_ms\":%llu}",
                   w[i].capacity, w[i].inflight,
                   (unsigned long long)w[i].last_report_age_ms);
        }
        fputs("]}\n", stdout);
    } else {
        printf("%-8s %-24s %9s %9s %s\n", "CONN", "NAME", "CAPACITY",
               "INFLIGHT", "LAST_REPORT");
        for (i = 0; i < n; i++)
            printf("%-8llu %-24s %9u %9u %s ago\n",
                   (unsigned long long)w[i].conn_id,
                   w[i].name[0] ? w[i].name : "-", w[i].capacity, w[i].inflight,
                   dur_fmt(w[i].last_report_age_ms, b, sizeof(b)));
    }
    clawq_workers_free(w);
    return 0;
}

static int cmd_stats(ctl *x, int argc, char **argv)
{
    args a = {.cmd = "stats"};
    clawq_queue_stats s;
    const clawq_queue_settings *q = &s.settings;
    char b[64];
    int rc;

    args_parse(x, &a, "stats", argc, argv, NULL, 0);
    pos_count(&a, 1, 1, "QUEUE");
    queue_arg(&a, a.pos[0]);
    connect_or_die(x);
    rc = clawq_queue_stats_get(x->c, a.pos[0], &s);
    if (rc < 0)
        broker_error(x, rc);
    if (x->json) {
        json_stats(stdout, &s, true);
        putchar('\n');
        return 0;
    }
    printf("queue:            %s%s\n", s.name, q->paused ? " (paused)" : "");
    printf("ready:            %llu\n", (unsigned long long)s.ready);
    printf("delayed:          %llu\n", (unsigned long long)s.delayed);
    printf("leased:           %llu\n", (unsigned long long)s.leased);
    printf("dead:             %llu\n", (unsigned long long)s.dead);
    printf("oldest ready age: %s\n",
           s.ready > 0 ? dur_fmt(s.oldest_ready_age_ms, b, sizeof(b)) : "-");
    printf("workers:          %u (capacity %llu, in flight %llu)\n", s.workers,
           (unsigned long long)s.worker_capacity,
           (unsigned long long)s.worker_inflight);
    printf(
        "totals:           put %llu, deduped %llu, leased %llu, acked "
        "%llu,\n"
        "                  nacked %llu, failed %llu, expired %llu, dead "
        "%llu\n",
        (unsigned long long)s.put_total, (unsigned long long)s.deduped_total,
        (unsigned long long)s.leased_total, (unsigned long long)s.acked_total,
        (unsigned long long)s.nacked_total, (unsigned long long)s.failed_total,
        (unsigned long long)s.expired_total, (unsigned long long)s.dead_total);
    printf("settings:         lease_ms=%u max_attempts=%u "
           "backoff_base_ms=%u backoff_max_ms=%u\n"
           "                  max_depth=%llu max_payload=%u "
           "dedup_window_ms=%llu\n",
           q->lease_ms, q->max_attempts, q->backoff_base_ms, q->backoff_max_ms,
           (unsigned long long)q->max_depth, q->max_payload,
           (unsigned long long)q->dedup_window_ms);
    printf("created:          %s\n", time_fmt(s.created_ms, b, sizeof(b)));
    printf("answered by node: %u\n", s.node_id);
    return 0;
}

static int cmd_peek(ctl *x, int argc, char **argv)
{
    static const opt_spec specs[] = {{"--state", NULL, true, false},
                                     {"-n", NULL, true, false}};
    args a = {.cmd = "peek"};
    clawq_task_state st = CLAWQ_STATE_READY;
    uint32_t max = 10;
    clawq_task *t;
    size_t n;
    int rc;

    args_parse(x, &a, "peek", argc, argv, specs, 2);
    pos_count(&a, 1, 1, "QUEUE");
    queue_arg(&a, a.pos[0]);
    if (a.seen[0]) {
        static const char *names[] = {"ready", "delayed", "leased", "dead"};
        bool ok = false;

        for (int i = 0; i < 4; i++)
            if (strcmp(a.val[0], names[i]) == 0) {
                st = (clawq_task_state)(i + 1);
                ok = true;
            }
        if (!ok)
            usage_error(a.cmd,
                        "--state: expected ready, delayed, leased or "
                        "dead, got '%s'",
                        a.val[0]);
    }
    if (a.seen[1])
        max = (uint32_t)num_arg(&a, "-n", a.val[1], 1, 1000);
    connect_or_die(x);
    rc = clawq_peek(x->c, a.pos[0], st, max, &t, &n);
    if (rc < 0)
        broker_error(x, rc);
    if (x->json)
        json_tasks(stdout, t, n);
    else
        human_task_table(stdout, t, n, st == CLAWQ_STATE_DEAD);
    clawq_tasks_free(t);
    return 0;
}

/* Reads all of stdin (binary-safe) into a malloc'd buffer. */
static uint8_t *stdin_read(const args *a, size_t *len)
{
    size_t cap = 65536, n = 0;
    uint8_t *buf = malloc(cap);

    if (buf == NULL)
        usage_error(a->cmd, "out of memory");
    for (;;) {
        size_t r;

        if (n == cap) {
            uint8_t *nb;

            if (cap >= MAX_STDIN_PAYLOAD)
                usage_error(a->cmd, "payload on stdin exceeds %u bytes",
                            MAX_STDIN_PAYLOAD);
            cap *= 2;
            nb = realloc(buf, cap);
            if (nb == NULL)
                usage_error(a->cmd, "out of memory");
            buf = nb;
        }
        r = fread(buf + n, 1, cap - n, stdin);
        n += r;
        if (r == 0) {
            if (ferror(stdin))
                usage_error(a->cmd, "cannot read stdin");
            break;
        }
    }
    *len = n;
    return buf;
}

static int cmd_put(ctl *x, int argc, char **argv)
{
    static const opt_spec specs[] = {
        {"--priority", NULL, true, false},
        {"--delay", NULL, true, false},
        {"--deadline", NULL, true, false},
        {"--key", NULL, true, false},
        {"--header", NULL, true, true},
        {"--max-attempts", NULL, true, false},
    };
    args a = {.cmd = "put"};
    clawq_put_task t;
    clawq_header hdr[MAX_HEADERS];
    char *hbuf[MAX_HEADERS];
    uint8_t *data = NULL;
    uint64_t id;
    bool dup;
    int rc;

    clawq_put_task_init(&t);
    args_parse(x, &a, "put", argc, argv, specs, 6);
    pos_count(&a, 2, 2, a.n_pos == 0 ? "QUEUE and DATA" : "DATA (or '-')");
    queue_arg(&a, a.pos[0]);
    if (a.seen[0])
        t.priority = (uint32_t)num_arg(&a, "--priority", a.val[0], 0, 255);
    if (a.seen[1])
        t.delay_ms = num_arg(&a, "--delay", a.val[1], 0,
                             (uint64_t)10 * 365 * 86400 * 1000);
    if (a.seen[2])
        t.deadline_ms = unix_ms() + num_arg(&a, "--deadline", a.val[2], 1,
                                            (uint64_t)10 * 365 * 86400 * 1000);
    if (a.seen[3]) {
        if (a.val[3][0] == '\0' || strlen(a.val[3]) > 1024)
            usage_error(a.cmd, "--key: expected 1..1024 bytes");
        t.idempotency_key = a.val[3];
    }
    if (a.seen[5])
        t.max_attempts =
            (uint32_t)num_arg(&a, "--max-attempts", a.val[5], 1, UINT32_MAX);
    for (int i = 0; i < a.n_multi; i++) {
        const char *eq = strchr(a.multi[i], '=');

        if (eq == NULL || eq == a.multi[i])
            usage_error(a.cmd, "--header: expected KEY=VALUE, got '%s'",
                        a.multi[i]);
        hbuf[i] = strndup(a.multi[i], (size_t)(eq - a.multi[i]));
        if (hbuf[i] == NULL)
            usage_error(a.cmd, "out of memory");
        hdr[i].key = hbuf[i];
        hdr[i].value = eq + 1;
    }
    t.headers = hdr;
    t.n_headers = (size_t)a.n_multi;
    if (strcmp(a.pos[1], "-") == 0) {
        data = stdin_read(&a, &t.payload_len);
        t.payload = data;
    } else {
        t.payload = a.pos[1];
        t.payload_len = strlen(a.pos[1]);
    }
    connect_or_die(x);
    rc = clawq_put(x->c, a.pos[0], &t, &id, &dup);
    if (rc < 0)
        broker_error(x, rc);
    if (x->json)
        printf("{\"id\":%llu,\"duplicate\":%s}\n", (unsigned long long)id,
               dup ? "true" : "false");
    else
        printf("%llu%s\n", (unsigned long long)id, dup ? " (duplicate)" : "");
    for (int i = 0; i < a.n_multi; i++)
        free(hbuf[i]);
    free(data);
    return 0;
}

static int cmd_pull(ctl *x, int argc, char **argv)
{
    static const opt_spec specs[] = {{"-n", NULL, true, false},
                                     {"--wait", NULL, true, false},
                                     {"--lease", NULL, true, false},
                                     {"--ack", NULL, false, false}};
    args a = {.cmd = "pull"};
    uint32_t max = 1, wait_ms = 0, lease_ms = 0;
    clawq_task *t;
    size_t n;
    int rc;

    args_parse(x, &a, "pull", argc, argv, specs, 4);
    pos_count(&a, 1, 1, "QUEUE");
    queue_arg(&a, a.pos[0]);
    if (a.seen[0])
        max = (uint32_t)num_arg(&a, "-n", a.val[0], 1, 1024);
    if (a.seen[1])
        wait_ms = (uint32_t)num_arg(&a, "--wait", a.val[1], 0, 3600000);
    if (a.seen[2])
        lease_ms = (uint32_t)num_arg(&a, "--lease", a.val[2], 1, UINT32_MAX);
    connect_or_die(x);
    rc = clawq_pull(x->c, a.pos[0], max, wait_ms, lease_ms, &t, &n);
    if (rc < 0)
        broker_error(x, rc);
    if (n == 0) {
        if (x->json)
            json_tasks(stdout, NULL, 0);
        else
            fprintf(stderr, "clawqctl: nothing to pull from %s\n", a.pos[0]);
        return EXIT_EMPTY;
    }
    if (x->json) {
        json_tasks(stdout, t, n);
    } else {
        for (size_t i = 0; i < n; i++) {
            if (i > 0)
                putchar('\n');
            human_task(stdout, &t[i]);
        }
    }
    fflush(stdout);
    if (a.seen[3]) {
        clawq_lease_ref refs[1024];
        int st[1024];

        for (size_t i = 0; i < n; i++) {
            refs[i].id = t[i].id;
            refs[i].lease_id = t[i].lease_id;
        }
        rc = clawq_ack_batch(x->c, refs, n, st);
        if (rc < 0) {
            clawq_tasks_free(t);
            broker_error(x, rc);
        }
        if (rc > 0) {
            /* The request was answered, but some tasks were not acked
             * (e.g. their lease expired meanwhile): say which, then fail
             * with the first one's status. */
            int first = 0;

            for (size_t i = 0; i < n; i++) {
                if (st[i] == 0)
                    continue;
                fprintf(stderr, "clawqctl: task %llu not acked: %s\n",
                        (unsigned long long)t[i].id, clawq_err_name(st[i]));
                if (first == 0)
                    first = st[i];
            }
            clawq_tasks_free(t);
            broker_error(x, first);
        }
    }
    clawq_tasks_free(t);
    return 0;
}

static void lease_args(args *a, uint64_t *id, uint64_t *lease)
{
    pos_count(a, 2, 2, a->n_pos == 0 ? "ID and LEASE_ID" : "LEASE_ID");
    *id = id_arg(a, "ID", a->pos[0]);
    *lease = id_arg(a, "LEASE_ID", a->pos[1]);
}

static void done_print(ctl *x, const char *what, uint64_t id)
{
    if (x->json)
        printf("{\"id\":%llu,\"ok\":true}\n", (unsigned long long)id);
    else
        printf("%s %llu\n", what, (unsigned long long)id);
}

static int cmd_ack(ctl *x, int argc, char **argv)
{
    args a = {.cmd = "ack"};
    uint64_t id, lease;
    int rc;

    args_parse(x, &a, "ack", argc, argv, NULL, 0);
    lease_args(&a, &id, &lease);
    connect_or_die(x);
    rc = clawq_ack(x->c, id, lease);
    if (rc < 0)
        broker_error(x, rc);
    done_print(x, "acked", id);
    return 0;
}

static const char *error_arg(const args *a, const char *v)
{
    if (v != NULL && strlen(v) > 65536)
        usage_error(a->cmd, "--error: at most 65536 bytes");
    return v;
}

static int cmd_nack(ctl *x, int argc, char **argv)
{
    static const opt_spec specs[] = {{"--delay", NULL, true, false},
                                     {"--error", NULL, true, false}};
    args a = {.cmd = "nack"};
    uint64_t id, lease;
    int64_t delay = CLAWQ_NACK_BACKOFF;
    int rc;

    args_parse(x, &a, "nack", argc, argv, specs, 2);
    lease_args(&a, &id, &lease);
    if (a.seen[0])
        delay = (int64_t)num_arg(&a, "--delay", a.val[0], 0,
                                 (uint64_t)10 * 365 * 86400 * 1000);
    connect_or_die(x);
    rc = clawq_nack(x->c, id, lease, delay, error_arg(&a, a.val[1]));
    if (rc < 0)
        broker_error(x, rc);
    done_print(x, "nacked", id);
    return 0;
}

static int cmd_fail(ctl *x, int argc, char **argv)
{
    static const opt_spec specs[] = {{"--error", NULL, true, false}};
    args a = {.cmd = "fail"};
    uint64_t id, lease;
    int rc;

    args_parse(x, &a, "fail", argc, argv, specs, 1);
    lease_args(&a, &id, &lease);
    connect_or_die(x);
    rc = clawq_fail(x->c, id, lease, error_arg(&a, a.val[0]));
    if (rc < 0)
        broker_error(x, rc);
    done_print(x, "failed", id);
    return 0;
}

static void count_print(ctl *x, const char *what, uint64_t count)
{
    if (x->json)
        printf("{\"count\":%llu}\n", (unsigned long long)count);
    else
        printf("%s %llu\n", what, (unsigned long long)count);
}

/* The filter options shared by dlq list / replay / purge. */
static const opt_spec dlq_specs[] = {{"--error", NULL, true, false},
                                     {"--from", NULL, true, false},
                                     {"--to", NULL, true, false},
                                     {"-n", NULL, true, false}};

static void dlq_filter_args(const args *a, clawq_dlq_filter *f, uint32_t max_n)
{
    memset(f, 0, sizeof(*f));
    if (a->seen[0]) {
        if (a->val[0][0] == '\0')
            usage_error(a->cmd, "--error: empty text");
        f->error_contains = a->val[0];
    }
    if (a->seen[1])
        f->from_ms = num_arg(a, "--from", a->val[1], 0, UINT64_MAX);
    if (a->seen[2])
        f->to_ms = num_arg(a, "--to", a->val[2], 1, UINT64_MAX);
    if (a->seen[1] && a->seen[2] && f->to_ms <= f->from_ms)
        usage_error(a->cmd, "--to (%llu) must be after --from (%llu)",
                    (unsigned long long)f->to_ms,
                    (unsigned long long)f->from_ms);
    if (a->seen[3])
        f->max = (uint32_t)num_arg(a, "-n", a->val[3], 1, max_n);
}

static int cmd_dlq(ctl *x, int argc, char **argv)
{
    args a = {0};
    const char *sub;
    char name[32];
    clawq_dlq_filter f;
    clawq_task *t;
    size_t n;
    uint64_t count;
    int rc;

    if (argc < 1)
        usage_error("dlq", "missing subcommand: list, show, replay or purge");
    sub = argv[0];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        help_print("dlq");
        exit(0);
    }
    snprintf(name, sizeof(name), "dlq %.20s", sub != NULL ? sub : "");
    a.cmd = "dlq";
    if (strcmp(sub, "show") == 0) {
        args_parse(x, &a, "dlq", argc - 1, argv + 1, NULL, 0);
        pos_count(&a, 1, 1, "ID");
        count = id_arg(&a, "ID", a.pos[0]);
        connect_or_die(x);
        rc = clawq_task_get(x->c, count, &t);
        if (rc < 0)
            broker_error(x, rc);
        if (x->json) {
            json_task(stdout, t);
            putchar('\n');
        } else {
            human_task(stdout, t);
        }
        clawq_tasks_free(t);
        return 0;
    }
    if (strcmp(sub, "list") != 0 && strcmp(sub, "replay") != 0 &&
        strcmp(sub, "purge") != 0)
        usage_error("dlq", "unknown dlq subcommand '%s'", sub);
    args_parse(x, &a, "dlq", argc - 1, argv + 1, dlq_specs, 4);
    pos_count(&a, 1, 1, "QUEUE");
    queue_arg(&a, a.pos[0]);
    dlq_filter_args(&a, &f, strcmp(sub, "list") == 0 ? 1000 : 1000000);
    connect_or_die(x);
    if (strcmp(sub, "list") == 0) {
        rc = clawq_dlq_list(x->c, a.pos[0], &f, 0, 0, &t, &n);
        if (rc < 0)
            broker_error(x, rc);
        if (x->json)
            json_tasks(stdout, t, n);
        else
            human_task_table(stdout, t, n, true);
        clawq_tasks_free(t);
        return 0;
    }
    if (strcmp(sub, "replay") == 0) {
        rc = clawq_dlq_replay(x->c, a.pos[0], &f, &count);
        if (rc < 0)
            broker_error(x, rc);
        count_print(x, "replayed", count);
    } else {
        rc = clawq_dlq_purge(x->c, a.pos[0], &f, &count);
        if (rc < 0)
            broker_error(x, rc);
        count_print(x, "purged", count);
    }
    return 0;
}

static int cmd_queue(ctl *x, int argc, char **argv)
{
    static const struct {
        const char *key;
        uint32_t bit;
        uint64_t min, max;
    } keys[] = {
        {"lease_ms", CLAWQ_SET_LEASE_MS, 1, UINT32_MAX},
        {"max_attempts", CLAWQ_SET_MAX_ATTEMPTS, 1, UINT32_MAX},
        {"backoff_base_ms", CLAWQ_SET_BACKOFF_BASE_MS, 0, UINT32_MAX},
        {"backoff_max_ms", CLAWQ_SET_BACKOFF_MAX_MS, 0, UINT32_MAX},
        {"max_depth", CLAWQ_SET_MAX_DEPTH, 0, UINT64_MAX},
        {"max_payload", CLAWQ_SET_MAX_PAYLOAD, 1, UINT32_MAX},
        {"dedup_window_ms", CLAWQ_SET_DEDUP_WINDOW_MS, 0, UINT64_MAX},
    };
    args a = {.cmd = "queue"};
    clawq_queue_settings s;
    int rc;

    if (argc < 1)
        usage_error("queue", "missing subcommand: set");
    if (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        help_print("queue");
        exit(0);
    }
    if (strcmp(argv[0], "set") != 0)
        usage_error("queue", "unknown queue subcommand '%s'", argv[0]);
    args_parse(x, &a, "queue", argc - 1, argv + 1, NULL, 0);
    pos_count(&a, 2, MAX_POS,
              a.n_pos == 0 ? "QUEUE and KEY=VALUE" : "KEY=VALUE");
    queue_arg(&a, a.pos[0]);
    memset(&s, 0, sizeof(s));
    for (int i = 1; i < a.n_pos; i++) {
        const char *eq = strchr(a.pos[i], '=');
        size_t k, klen;
        uint64_t v;

        if (eq == NULL)
            usage_error(a.cmd, "expected KEY=VALUE, got '%s'", a.pos[i]);
        klen = (size_t)(eq - a.pos[i]);
        for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
            if (strlen(keys[k].key) == klen &&
                memcmp(keys[k].key, a.pos[i], klen) == 0)
                break;
        if (k == sizeof(keys) / sizeof(keys[0]))
            usage_error(a.cmd,
                        "unknown setting '%.*s' (known: lease_ms, "
                        "max_attempts, backoff_base_ms, "
                        "backoff_max_ms, max_depth, max_payload, "
                        "dedup_window_ms)",
                        (int)klen, a.pos[i]);
        if (s.mask & keys[k].bit)
            usage_error(a.cmd, "%s given twice", keys[k].key);
        v = num_arg(&a, keys[k].key, eq + 1, keys[k].min, keys[k].max);
        s.mask |= keys[k].bit;
        switch (keys[k].bit) {
        case CLAWQ_SET_LEASE_MS:
            s.lease_ms = (uint32_t)v;
            break;
        case CLAWQ_SET_MAX_ATTEMPTS:
            s.max_attempts = (uint32_t)v;
            break;
        case CLAWQ_SET_BACKOFF_BASE_MS:
            s.backoff_base_ms = (uint32_t)v;
            break;
        case CLAWQ_SET_BACKOFF_MAX_MS:
            s.backoff_max_ms = (uint32_t)v;
            break;
        case CLAWQ_SET_MAX_DEPTH:
            s.max_depth = v;
            break;
        case CLAWQ_SET_MAX_PAYLOAD:
            s.max_payload = (uint32_t)v;
            break;
        default:
            s.dedup_window_ms = v;
            break;
        }
    }
    if ((s.mask & CLAWQ_SET_BACKOFF_BASE_MS) &&
        (s.mask & CLAWQ_SET_BACKOFF_MAX_MS) &&
        s.backoff_max_ms < s.backoff_base_ms)
        usage_error(a.cmd, "backoff_max_ms must be >= backoff_base_ms");
    connect_or_die(x);
    rc = clawq_queue_set(x->c, a.pos[0], &s);
    if (rc < 0)
        broker_error(x, rc);
    if (x->json)
        printf("{\"queue\":\"%s\",\"ok\":true}\n", a.pos[0]);
    else
        printf("ok\n");
    return 0;
}

static int cmd_queue_op(ctl *x, int argc, char **argv, const char *name)
{
    args a = {.cmd = name};
    uint64_t count = 0;
    int rc;

    args_parse(x, &a, name, argc, argv, NULL, 0);
    pos_count(&a, 1, 1, "QUEUE");
    queue_arg(&a, a.pos[0]);
    connect_or_die(x);
    if (strcmp(name, "pause") == 0)
        rc = clawq_pause(x->c, a.pos[0]);
    else if (strcmp(name, "resume") == 0)
        rc = clawq_resume(x->c, a.pos[0]);
    else
        rc = clawq_purge(x->c, a.pos[0], &count);
    if (rc < 0)
        broker_error(x, rc);
    if (strcmp(name, "purge") == 0)
        count_print(x, "purged", count);
    else if (x->json)
        printf("{\"queue\":\"%s\",\"ok\":true}\n", a.pos[0]);
    else
        printf("%s %s\n", strcmp(name, "pause") == 0 ? "paused" : "resumed",
               a.pos[0]);
    return 0;
}

static int cmd_pause(ctl *x, int argc, char **argv)
{
    return cmd_queue_op(x, argc, argv, "pause");
}

static int cmd_resume(ctl *x, int argc, char **argv)
{
    return cmd_queue_op(x, argc, argv, "resume");
}

static int cmd_purge(ctl *x, int argc, char **argv)
{
    return cmd_queue_op(x, argc, argv, "purge");
}

/* ---- cluster ---- */

static void cluster_print(ctl *x, const clawq_cluster_status *st)
{
    size_t i;

    if (x->json) {
        printf("{\"node_id\":%u,\"role\":", st->node_id);
        text_json_cstr(stdout, st->role);
        printf(",\"leader\":%u,\"leader_addr\":", st->leader_id);
        text_json_cstr(stdout, st->leader);
        printf(",\"term\":%llu,\"commit_index\":%llu,\"applied_index\":%llu,"
               "\"last_index\":%llu,\"leader_view\":%s",
               (unsigned long long)st->term,
               (unsigned long long)st->commit_index,
               (unsigned long long)st->applied_index,
               (unsigned long long)st->last_index,
               st->leader_view ? "true" : "false");
        if (st->has_digest)
            printf(",\"digest\":\"%016llx\",\"digest_index\":%llu",
                   (unsigned long long)st->digest,
                   (unsigned long long)st->digest_index);
        fputs(",\"members\":[", stdout);
        for (i = 0; i < st->n_members; i++) {
            const clawq_cluster_member *m = &st->members[i];

            printf("%s{\"id\":%u,\"raft_addr\":", i ? "," : "", m->id);
            text_json_cstr(stdout, m->raft_addr);
            fputs(",\"client_addr\":", stdout);
            text_json_cstr(stdout, m->client_addr);
            fputs(",\"role\":", stdout);
            text_json_cstr(stdout, m->role);
            if (st->leader_view)
                printf(",\"match_index\":%llu,\"lag\":%llu",
                       (unsigned long long)m->match_index,
                       (unsigned long long)m->lag);
            fputc('}', stdout);
        }
        fputs("]}\n", stdout);
        return;
    }
    printf("node %u (%s), term %llu, leader ", st->node_id, st->role,
           (unsigned long long)st->term);
    if (st->leader_id != 0)
        printf("%u (%s)\n", st->leader_id,
               st->leader[0] != '\0' ? st->leader : "address unknown");
    else
        fputs("unknown\n", stdout);
    printf("commit index %llu, applied index %llu, last index %llu\n",
           (unsigned long long)st->commit_index,
           (unsigned long long)st->applied_index,
           (unsigned long long)st->last_index);
    if (st->has_digest)
        printf("digest %016llx at index %llu\n", (unsigned long long)st->digest,
               (unsigned long long)st->digest_index);
    printf("%-6s %-8s %-24s %-24s %s\n", "ID", "ROLE", "RAFT", "CLIENT", "LAG");
    for (i = 0; i < st->n_members; i++) {
        const clawq_cluster_member *m = &st->members[i];
        char lag[32];

        if (st->leader_view)
            snprintf(lag, sizeof(lag), "%llu", (unsigned long long)m->lag);
        else
            snprintf(lag, sizeof(lag), "-");
        printf("%-6u %-8s %-24s %-24s %s%s\n", m->id,
               m->id == st->leader_id ? "leader" : m->role, m->raft_addr,
               m->client_addr[0] != '\0' ? m->client_addr : "-", lag,
               m->id == st->leader_id && strcmp(m->role, "voter") != 0
                   ? " (not a voter)"
                   : "");
    }
}

static uint32_t node_arg(const args *a, const char *v)
{
    return (uint32_t)num_arg(a, "ID", v, 1, UINT64_C(2147483648));
}

/* HOST:PORT with a port in 1..65535 ("[v6]:port" for IPv6). */
static void addr_arg(const args *a, const char *what, const char *v)
{
    const char *colon = strrchr(v, ':');
    uint64_t port;

    if (strlen(v) > CLAWQ_MAX_ADDR || colon == NULL || colon == v ||
        !text_parse_u64(colon + 1, 1, 65535, &port))
        usage_error(a->cmd, "%s: expected HOST:PORT, got '%s'", what, v);
}

static int cmd_cluster(ctl *x, int argc, char **argv)
{
    static const opt_spec status_specs[] = {{"--digest", NULL, false, false}};
    args a = {.cmd = "cluster"};
    clawq_cluster_status st;
    const char *sub;
    uint32_t node;
    int rc;

    if (argc < 1)
        usage_error("cluster",
                    "missing subcommand: status, add, remove or transfer");
    sub = argv[0];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        help_print("cluster");
        exit(0);
    }
    if (strcmp(sub, "status") == 0) {
        args_parse(x, &a, "cluster", argc - 1, argv + 1, status_specs, 1);
        pos_count(&a, 0, 0, "");
        connect_or_die(x);
        rc = clawq_cluster_status_get(
            x->c, a.seen[0] ? CLAWQ_CLUSTER_DIGEST : 0, &st);
    } else if (strcmp(sub, "add") == 0) {
        args_parse(x, &a, "cluster", argc - 1, argv + 1, NULL, 0);
        pos_count(&a, 3, 3, "ID RAFT_ADDR CLIENT_ADDR");
        node = node_arg(&a, a.pos[0]);
        addr_arg(&a, "RAFT_ADDR", a.pos[1]);
        addr_arg(&a, "CLIENT_ADDR", a.pos[2]);
        connect_or_die(x);
        rc = clawq_cluster_add(x->c, node, a.pos[1], a.pos[2], &st);
    } else if (strcmp(sub, "remove") == 0) {
        args_parse(x, &a, "cluster", argc - 1, argv + 1, NULL, 0);
        pos_count(&a, 1, 1, "ID");
        node = node_arg(&a, a.pos[0]);
        connect_or_die(x);
        rc = clawq_cluster_remove(x->c, node, &st);
    } else if (strcmp(sub, "transfer") == 0) {
        args_parse(x, &a, "cluster", argc - 1, argv + 1, NULL, 0);
        pos_count(&a, 0, 1, "ID");
        node = a.n_pos == 1 ? node_arg(&a, a.pos[0]) : 0;
        connect_or_die(x);
        rc = clawq_cluster_transfer(x->c, node, &st);
    } else {
        usage_error("cluster", "unknown cluster subcommand '%s'", sub);
    }
    if (rc < 0)
        broker_error(x, rc);
    cluster_print(x, &st);
    return 0;
}

static const struct {
    const char *name;
    int (*run)(ctl *x, int argc, char **argv);
} commands[] = {
    {"queues", cmd_queues}, {"stats", cmd_stats},     {"peek", cmd_peek},
    {"put", cmd_put},       {"pull", cmd_pull},       {"ack", cmd_ack},
    {"nack", cmd_nack},     {"fail", cmd_fail},       {"dlq", cmd_dlq},
    {"queue", cmd_queue},   {"pause", cmd_pause},     {"resume", cmd_resume},
    {"purge", cmd_purge},   {"workers", cmd_workers}, {"cluster", cmd_cluster},
};

int main(int argc, char **argv)
{
    ctl x = {0};
    const char *env = getenv("CLAWQ_SERVER");
    int i;

    x.server = env != NULL && env[0] != '\0' ? env : DEFAULT_SERVER;
    /* Global options before the command. */
    for (i = 1; i < argc; i++) {
        const char *arg = argv[i];

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(usage_main, stdout);
            return 0;
        }
        if (strcmp(arg, "--json") == 0) {
            x.json = true;
        } else if (strcmp(arg, "--node") == 0) {
            x.node = true;
        } else if (strcmp(arg, "--server") == 0 ||
                   strcmp(arg, "--timeout") == 0) {
            if (i + 1 >= argc)
                usage_error(NULL, "%s needs a value", arg);
            if (arg[2] == 's') {
                if (argv[i + 1][0] == '\0')
                    usage_error(NULL, "--server: empty address");
                x.server = argv[++i];
            } else {
                x.timeout_ms = timeout_parse(NULL, argv[++i]);
            }
        } else if (strncmp(arg, "--server=", 9) == 0) {
            if (arg[9] == '\0')
                usage_error(NULL, "--server: empty address");
            x.server = arg + 9;
        } else if (strncmp(arg, "--timeout=", 10) == 0) {
            x.timeout_ms = timeout_parse(NULL, arg + 10);
        } else if (arg[0] == '-') {
            usage_error(NULL, "unknown option '%s'", arg);
        } else {
            break;
        }
    }
    if (i == argc)
        usage_error(NULL, "missing COMMAND");
    if (strcmp(argv[i], "help") == 0) {
        if (i + 1 < argc)
            help_print(argv[i + 1]);
        else
            fputs(usage_main, stdout);
        return 0;
    }
    for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++) {
        if (strcmp(commands[k].name, argv[i]) == 0) {
            int rc = commands[k].run(&x, argc - i - 1, argv + i + 1);

            clawq_close(x.c);
            return rc;
        }
    }
    usage_error(NULL, "unknown command '%s'", argv[i]);
}
