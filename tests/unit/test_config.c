/* test_config.c: the settings table: defaults, flags in both forms, the
 * environment and its precedence, size and duration suffixes, every kind of
 * bad value (each message names the flag or variable), the relations
 * between settings, --help/--version, the usage text, address splitting and
 * config_describe. */
#include <check.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "util.h"

static char *no_env[] = {NULL};
static char err[512];

/* config_parse on "clawqd" plus the NULL-terminated arguments. */
static int run(config *c, char **env, ...)
{
    char *argv[40];
    int argc = 0;
    va_list ap;

    argv[argc++] = "clawqd";
    va_start(ap, env);
    for (char *a; (a = va_arg(ap, char *)) != NULL;) {
        ck_assert_int_lt(argc, 39);
        argv[argc++] = a;
    }
    va_end(ap);
    argv[argc] = NULL;
    return config_parse(c, argc, argv, env, err, sizeof(err));
}

/* Parsing fails with exactly `msg`, and leaves *c untouched. */
static void assert_fails(char **env, const char *msg, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;
    config c, before;

    memset(&c, 0x5a, sizeof(c));
    before = c;
    argv[argc++] = "clawqd";
    va_start(ap, msg);
    for (char *a; (a = va_arg(ap, char *)) != NULL;)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    ck_assert_int_eq(config_parse(&c, argc, argv, env, err, sizeof(err)), -1);
    ck_assert_str_eq(err, msg);
    ck_assert_mem_eq(&c, &before, sizeof(c));
}

/* ---- defaults ---------------------------------------------------------- */

START_TEST(defaults_values)
{
    config c, parsed;

    config_defaults(&c);
    ck_assert_str_eq(c.data, "./data");
    ck_assert_str_eq(c.listen, "127.0.0.1:7700");
    ck_assert_str_eq(c.raft, "127.0.0.1:7701");
    ck_assert_str_eq(c.http, "127.0.0.1:7780");
    ck_assert_uint_eq(c.node_id, 1);
    ck_assert_int_eq(c.log_level, LOG_INFO);
    ck_assert_int_eq(c.log_format, LOG_TEXT);
    ck_assert_uint_eq(c.max_frame, 16u << 20);
    ck_assert_uint_eq(c.max_connections, 10000);
    ck_assert_uint_eq(c.max_payload, 1u << 20);
    ck_assert_uint_eq(c.max_pending, 4096);
    ck_assert_uint_eq(c.max_wait_ms, 60000);
    ck_assert_uint_eq(c.idle_timeout_ms, 300000);
    ck_assert_uint_eq(c.write_buffer, 8u << 20);
    ck_assert_uint_eq(c.election_timeout_ms, 300);
    ck_assert_uint_eq(c.heartbeat_timeout_ms, 30);
    ck_assert_uint_eq(c.snapshot_threshold, 8192);
    ck_assert_uint_eq(c.snapshot_trailing, 16384);
    ck_assert_uint_eq(c.map_size, 1ULL << 30);
    ck_assert_uint_eq(c.map_max, 0); /* automatic: clawqd resolves it */
    ck_assert_int_eq(c.store_mode, CONFIG_STORE_MEMORY);

    /* No flags and no environment: the defaults. */
    memset(&parsed, 0x5a, sizeof(parsed));
    ck_assert_int_eq(run(&parsed, no_env, NULL), 0);
    ck_assert_mem_eq(&parsed, &c, sizeof(c));
    ck_assert_str_eq(err, "");
}
END_TEST

/* ---- flags ------------------------------------------------------------- */

START_TEST(flags_both_forms)
{
    config c;

    ck_assert_int_eq(
        run(&c, no_env, "--data", "/var/lib/clawq", "--listen=0.0.0.0:9000",
            "--raft", "[::1]:9001", "--http=localhost:9002", "--node-id", "3",
            "--log-level=debug", "--log-format", "JSON", "--max-frame=1M",
            "--max-connections", "5", "--max-payload=512K", "--max-pending",
            "10", "--max-wait=5s", "--idle-timeout", "0", "--write-buffer=64K",
            "--election-timeout", "1s", "--heartbeat-timeout=100",
            "--snapshot-threshold", "100", "--snapshot-trailing=1",
            "--map-size", "1M", "--map-max=2G", "--store", "Disk", NULL),
        0);
    ck_assert_str_eq(c.data, "/var/lib/clawq");
    ck_assert_str_eq(c.listen, "0.0.0.0:9000");
    ck_assert_str_eq(c.raft, "[::1]:9001");
    ck_assert_str_eq(c.http, "localhost:9002");
    ck_assert_uint_eq(c.node_id, 3);
    ck_assert_int_eq(c.log_level, LOG_DEBUG);
    ck_assert_int_eq(c.log_format, LOG_JSON);
    ck_assert_uint_eq(c.max_frame, 1u << 20);
    ck_assert_uint_eq(c.max_connections, 5);
    ck_assert_uint_eq(c.max_payload, 512u << 10);
    ck_assert_uint_eq(c.max_pending, 10);
    ck_assert_uint_eq(c.max_wait_ms, 5000);
    ck_assert_uint_eq(c.idle_timeout_ms, 0);
    ck_assert_uint_eq(c.write_buffer, 64u << 10);
    ck_assert_uint_eq(c.election_timeout_ms, 1000);
    ck_assert_uint_eq(c.heartbeat_timeout_ms, 100);
    ck_assert_uint_eq(c.snapshot_threshold, 100);
    ck_assert_uint_eq(c.snapshot_trailing, 1);
    ck_assert_uint_eq(c.map_size, 1u << 20);
    ck_assert_uint_eq(c.map_max, 2ULL << 30);
    ck_assert_int_eq(c.store_mode, CONFIG_STORE_DISK);

    /* A repeated flag: the last one wins. */
    ck_assert_int_eq(run(&c, no_env, "--node-id", "2", "--node-id=9", NULL), 0);
    ck_assert_uint_eq(c.node_id, 9);

    /* The bounds themselves are allowed. */
    ck_assert_int_eq(run(&c, no_env, "--node-id", "2147483648", "--max-wait",
                         "3600000", "--max-frame", "1K", "--max-payload", "1",
                         NULL),
                     0);
    ck_assert_uint_eq(c.node_id, 2147483648u);
    ck_assert_uint_eq(c.max_wait_ms, 3600000);
    ck_assert_uint_eq(c.max_frame, 1024);
    ck_assert_uint_eq(c.max_payload, 1);
}
END_TEST

/* ---- env --------------------------------------------------------------- */

START_TEST(env_values)
{
    char *env[] = {"PATH=/bin",
                   "CLAWQ_DATA=/srv/q",
                   "CLAWQ_NODE_ID=4",
                   "CLAWQ_MAX_FRAME=32M",
                   "CLAWQ_LOG_FORMAT=json",
                   "CLAWQ_IDLE_TIMEOUT=2m",
                   "CLAWQ_STORE=disk",
                   "CLAWQ_URL=whatever", /* a client's: ignored */
                   "CLAWQ_NODE=5",       /* a prefix of a name: ignored */
                   "clawq_listen=bad",   /* names are case-sensitive */
                   NULL};
    config c;

    ck_assert_int_eq(run(&c, env, NULL), 0);
    ck_assert_str_eq(c.data, "/srv/q");
    ck_assert_uint_eq(c.node_id, 4);
    ck_assert_uint_eq(c.max_frame, 32u << 20);
    ck_assert_int_eq(c.log_format, LOG_JSON);
    ck_assert_uint_eq(c.idle_timeout_ms, 120000);
    ck_assert_int_eq(c.store_mode, CONFIG_STORE_DISK);
    ck_assert_str_eq(c.listen, "127.0.0.1:7700");
}
END_TEST

START_TEST(env_process_environ)
{
    config c;
    char *argv[] = {"clawqd", NULL};

    ck_assert_int_eq(setenv("CLAWQ_MAX_PENDING", "77", 1), 0);
    ck_assert_int_eq(config_parse(&c, 1, argv, NULL, err, sizeof(err)), 0);
    ck_assert_uint_eq(c.max_pending, 77);
    unsetenv("CLAWQ_MAX_PENDING");
}
END_TEST

/* ---- precedence -------------------------------------------------------- */

START_TEST(flag_overrides_env)
{
    char *env[] = {"CLAWQ_NODE_ID=4", "CLAWQ_LISTEN=not an address",
                   "CLAWQ_MAX_WAIT=10s", NULL};
    config c;

    /* A flag wins, and the environment value it replaces is not read. */
    ck_assert_int_eq(
        run(&c, env, "--node-id", "8", "--listen", "[::]:7700", NULL), 0);
    ck_assert_uint_eq(c.node_id, 8);
    ck_assert_str_eq(c.listen, "[::]:7700");
    ck_assert_uint_eq(c.max_wait_ms, 10000);

    /* Without the flag, the bad value is an error naming the variable. */
    assert_fails(env,
                 "clawqd: CLAWQ_LISTEN: \"not an address\" is not an address "
                 "(examples: 127.0.0.1:7700, [::1]:7700, localhost:7700)",
                 NULL);
}
END_TEST

/* ---- suffixes ---------------------------------------------------------- */

START_TEST(suffixes)
{
    static const struct {
        const char *flag;
        const char *value;
        uint64_t want;
    } cases[] = {
        {"--write-buffer", "65536", 65536},
        {"--write-buffer", "64K", 64ULL << 10},
        {"--write-buffer", "64k", 64ULL << 10},
        {"--write-buffer", "3M", 3ULL << 20},
        {"--write-buffer", "1g", 1ULL << 30},
        {"--map-max", "16G", 16ULL << 30},
        {"--max-wait", "250", 250},
        {"--max-wait", "250ms", 250},
        {"--max-wait", "250MS", 250},
        {"--max-wait", "45s", 45000},
        {"--max-wait", "60m", 3600000},
        {"--max-wait", "0", 0},
    };
    config c;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ck_assert_int_eq(run(&c, no_env, cases[i].flag, cases[i].value, NULL),
                         0);
        if (strcmp(cases[i].flag, "--write-buffer") == 0)
            ck_assert_uint_eq(c.write_buffer, cases[i].want);
        else if (strcmp(cases[i].flag, "--map-max") == 0)
            ck_assert_uint_eq(c.map_max, cases[i].want);
        else
            ck_assert_uint_eq(c.max_wait_ms, cases[i].want);
    }
}
END_TEST

/* ---- bad values -------------------------------------------------------- */

START_TEST(bad_numbers)
{
    assert_fails(no_env,
                 "clawqd: --max-frame: \"abc\" is not a size (examples: "
                 "65536, 64K, 16M)",
                 "--max-frame", "abc", NULL);
    assert_fails(no_env,
                 "clawqd: --max-frame: \"16T\" is not a size (examples: "
                 "65536, 64K, 16M)",
                 "--max-frame", "16T", NULL);
    assert_fails(no_env,
                 "clawqd: --max-frame: \"-1\" is not a size (examples: "
                 "65536, 64K, 16M)",
                 "--max-frame=-1", NULL);
    assert_fails(no_env,
                 "clawqd: --max-frame: \"1.5M\" is not a size (examples: "
                 "65536, 64K, 16M)",
                 "--max-frame=1.5M", NULL);
    assert_fails(no_env,
                 "clawqd: --max-frame: \"\" is not a size (examples: "
                 "65536, 64K, 16M)",
                 "--max-frame=", NULL);
    assert_fails(no_env,
                 "clawqd: --max-frame: \"512\" is out of range (1K..256M "
                 "bytes)",
                 "--max-frame", "512", NULL);
    assert_fails(no_env,
                 "clawqd: --max-frame: \"99999999999999999999999\" is out "
                 "of range (1K..256M bytes)",
                 "--max-frame", "99999999999999999999999", NULL);
    assert_fails(no_env,
                 "clawqd: --max-frame: \"99999999999G\" is out of range "
                 "(1K..256M bytes)",
                 "--max-frame", "99999999999G", NULL);
    assert_fails(no_env,
                 "clawqd: --node-id: \"0\" is out of range (1..2147483648)",
                 "--node-id", "0", NULL);
    assert_fails(no_env,
                 "clawqd: --node-id: \"2147483649\" is out of range "
                 "(1..2147483648)",
                 "--node-id", "2147483649", NULL);
    assert_fails(no_env,
                 "clawqd: --node-id: \" 1\" is not a whole number (examples: "
                 "1, 4096)",
                 "--node-id", " 1", NULL);
    assert_fails(no_env,
                 "clawqd: --node-id: \"+1\" is not a whole number (examples: "
                 "1, 4096)",
                 "--node-id", "+1", NULL);
    assert_fails(no_env,
                 "clawqd: --max-connections: \"1e6\" is not a whole number "
                 "(examples: 1, 4096)",
                 "--max-connections", "1e6", NULL);
    assert_fails(no_env,
                 "clawqd: --max-wait: \"2h\" is not a duration (examples: "
                 "500, 500ms, 30s, 5m)",
                 "--max-wait", "2h", NULL);
    assert_fails(no_env, "clawqd: --max-wait: \"61m\" is out of range (0..60m)",
                 "--max-wait", "61m", NULL);
    assert_fails(no_env,
                 "clawqd: --election-timeout: \"5\" is out of range "
                 "(10ms..1m)",
                 "--election-timeout", "5", NULL);
}
END_TEST

START_TEST(bad_addresses)
{
    static const char *const bad[] = {
        "1.2.3:80",       "1.2.3.4",      "1.2.3.4:0",
        "1.2.3.4:65536",  "256.1.1.1:80", "01.2.3.4:80",
        "example.com:80", "[::1]80",      "[zz]:80",
        "[::1]:",         ":80",          "",
        "1.2.3.4:80x",    "::1:80",       "[]:80",
        "localhost:-1",   "1.2.3.4: 80",  "[::1:80",
    };
    char msg[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(msg, sizeof(msg),
                 "clawqd: --raft: \"%s\" is not an address (examples: "
                 "127.0.0.1:7700, [::1]:7700, localhost:7700)",
                 bad[i]);
        assert_fails(no_env, msg, "--raft", bad[i], NULL);
    }
}
END_TEST

START_TEST(bad_words)
{
    char longpath[CONFIG_PATH_MAX + 1];

    assert_fails(no_env,
                 "clawqd: --log-level: \"verbose\" is not one of "
                 "trace|debug|info|warn|error",
                 "--log-level", "verbose", NULL);
    assert_fails(no_env,
                 "clawqd: --log-format: \"xml\" is not one of text|json",
                 "--log-format=xml", NULL);
    assert_fails(no_env, "clawqd: --store: \"tmpfs\" is not one of memory|disk",
                 "--store=tmpfs", NULL);
    assert_fails(no_env, "clawqd: --data: must not be empty", "--data=", NULL);
    memset(longpath, 'd', CONFIG_PATH_MAX);
    longpath[CONFIG_PATH_MAX] = '\0';
    assert_fails(no_env,
                 "clawqd: --data: value is too long (at most 4095 bytes)",
                 "--data", longpath, NULL);
    longpath[CONFIG_PATH_MAX - 1] = '\0'; /* 4095 bytes fit */
    config c;
    ck_assert_int_eq(run(&c, no_env, "--data", longpath, NULL), 0);
    ck_assert_uint_eq(strlen(c.data), CONFIG_PATH_MAX - 1);
}
END_TEST

START_TEST(bad_flags)
{
    assert_fails(no_env, "clawqd: unknown flag --bogus (see --help)", "--bogus",
                 "1", NULL);
    assert_fails(no_env, "clawqd: unknown flag --max (see --help)", "--max=1",
                 NULL);
    assert_fails(no_env, "clawqd: unknown flag --Listen (see --help)",
                 "--Listen", "1.2.3.4:5", NULL);
    assert_fails(no_env, "clawqd: --listen needs a value", "--listen", NULL);
    assert_fails(no_env, "clawqd: --listen needs a value", "--listen", "--raft",
                 "1.2.3.4:5", NULL);
    assert_fails(no_env,
                 "clawqd: unexpected argument \"serve\" (settings are --name "
                 "VALUE; see --help)",
                 "serve", NULL);
    assert_fails(no_env,
                 "clawqd: unexpected argument \"-l\" (settings are --name "
                 "VALUE; see --help)",
                 "-l", "x", NULL);
    assert_fails(no_env,
                 "clawqd: unexpected argument \"--\" (settings are --name "
                 "VALUE; see --help)",
                 "--", NULL);
}
END_TEST

START_TEST(bad_env)
{
    char *frame[] = {"CLAWQ_MAX_FRAME=abc", NULL};
    char *level[] = {"CLAWQ_LOG_LEVEL=loud", NULL};
    char *empty[] = {"CLAWQ_NODE_ID=", NULL};

    assert_fails(frame,
                 "clawqd: CLAWQ_MAX_FRAME: \"abc\" is not a size (examples: "
                 "65536, 64K, 16M)",
                 NULL);
    assert_fails(level,
                 "clawqd: CLAWQ_LOG_LEVEL: \"loud\" is not one of "
                 "trace|debug|info|warn|error",
                 NULL);
    assert_fails(empty,
                 "clawqd: CLAWQ_NODE_ID: \"\" is not a whole number "
                 "(examples: 1, 4096)",
                 NULL);
}
END_TEST

START_TEST(bad_relations)
{
    char *env[] = {"CLAWQ_MAX_FRAME=64K", NULL};

    assert_fails(no_env,
                 "clawqd: --max-payload (2M) must not exceed --max-frame (1M)",
                 "--max-frame", "1M", "--max-payload", "2M", NULL);
    assert_fails(env,
                 "clawqd: --max-payload (1M) must not exceed --max-frame "
                 "(64K)",
                 NULL);
    assert_fails(no_env,
                 "clawqd: --heartbeat-timeout (300ms) must be less than "
                 "--election-timeout (300ms)",
                 "--heartbeat-timeout", "300", NULL);
    assert_fails(no_env,
                 "clawqd: --map-size (2G) must not exceed --map-max (1G)",
                 "--map-size", "2G", "--map-max", "1G", NULL);
    assert_fails(no_env,
                 "clawqd: --map-max: 0 (automatic) or at least 1M, not 4096 "
                 "bytes",
                 "--map-max", "4K", NULL);
    assert_fails(no_env,
                 "clawqd: --scaler-tls-cert and --scaler-tls-key go together",
                 "--scaler-tls-cert", "c.pem", NULL);
    assert_fails(no_env,
                 "clawqd: --scaler-tls-ca needs --scaler-tls-cert and "
                 "--scaler-tls-key",
                 "--scaler-tls-ca", "ca.pem", NULL);
}
END_TEST

START_TEST(err_buffer_small)
{
    char small[16];
    char *argv[] = {"clawqd", "--max-frame", "abc", NULL};
    config c;

    ck_assert_int_eq(config_parse(&c, 3, argv, no_env, small, sizeof(small)),
                     -1);
    ck_assert_str_eq(small, "clawqd: --max-f");
    ck_assert_int_eq(config_parse(&c, 3, argv, no_env, small, 0), -1);
}
END_TEST

/* ---- help -------------------------------------------------------------- */

/* Runs config_parse with stdout sent to a temporary file; returns what
 * was printed (static buffer). */
static const char *run_stdout(int *rc, char **env, char *a1, char *a2)
{
    static char buf[16384];
    char *argv[] = {"clawqd", a1, a2, NULL};
    int argc = a2 ? 3 : 2;
    FILE *tmp = tmpfile();
    int saved = dup(STDOUT_FILENO);
    config c;
    size_t n;

    ck_assert_ptr_nonnull(tmp);
    ck_assert_int_ge(saved, 0);
    fflush(stdout);
    ck_assert_int_ge(dup2(fileno(tmp), STDOUT_FILENO), 0);
    *rc = config_parse(&c, argc, argv, env, err, sizeof(err));
    fflush(stdout);
    ck_assert_int_ge(dup2(saved, STDOUT_FILENO), 0);
    close(saved);
    rewind(tmp);
    n = fread(buf, 1, sizeof(buf) - 1, tmp);
    buf[n] = '\0';
    fclose(tmp);
    return buf;
}

START_TEST(help_and_version)
{
    char *frame_env[] = {"CLAWQ_MAX_FRAME=abc", NULL};
    const char *out;
    int rc;

    out = run_stdout(&rc, no_env, "--help", NULL);
    ck_assert_int_eq(rc, 1);
    ck_assert_ptr_nonnull(strstr(out, "Usage: clawqd"));
    ck_assert_ptr_nonnull(strstr(out, "--max-frame SIZE"));

    out = run_stdout(&rc, no_env, "-h", NULL);
    ck_assert_int_eq(rc, 1);
    ck_assert_ptr_nonnull(strstr(out, "Usage: clawqd"));

    /* --help wins over a bad environment and later bad flags. */
    out = run_stdout(&rc, frame_env, "--help", "--bogus");
    ck_assert_int_eq(rc, 1);
    ck_assert_ptr_nonnull(strstr(out, "Usage: clawqd"));

    out = run_stdout(&rc, no_env, "--version", NULL);
    ck_assert_int_eq(rc, 1);
    ck_assert_str_eq(out, "clawqd 0.1.0\n");

    /* A bad flag before it is still an error. */
    out = run_stdout(&rc, no_env, "--bogus", "--help");
    ck_assert_int_eq(rc, -1);
    ck_assert_str_eq(out, "");
}
END_TEST

START_TEST(usage_lists_every_setting)
{
    static const char *const names[] = {
        "data",
        "listen",
        "raft",
        "http",
        "node-id",
        "log-level",
        "log-format",
        "max-frame",
        "max-connections",
        "max-payload",
        "max-pending",
        "max-wait",
        "idle-timeout",
        "write-buffer",
        "election-timeout",
        "heartbeat-timeout",
        "snapshot-threshold",
        "snapshot-trailing",
        "map-size",
        "map-max",
    };
    char buf[32768], want[128];
    FILE *f = tmpfile();
    size_t n;

    ck_assert_ptr_nonnull(f);
    config_usage(f);
    rewind(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char env[64];
        size_t k;

        snprintf(want, sizeof(want), "  --%s ", names[i]);
        ck_assert_msg(strstr(buf, want) != NULL, "no %s", want);
        snprintf(env, sizeof(env), "CLAWQ_%s", names[i]);
        for (k = 6; env[k] != '\0'; k++)
            env[k] = env[k] == '-' ? '_' : (char)(env[k] - 'a' + 'A');
        snprintf(want, sizeof(want), "env %s, default ", env);
        ck_assert_msg(strstr(buf, want) != NULL, "no %s", want);
    }
    ck_assert_ptr_nonnull(strstr(
        buf, "env CLAWQ_MAX_FRAME, default 16M, range 1K..256M (bytes)\n"));
    ck_assert_ptr_nonnull(
        strstr(buf, "env CLAWQ_NODE_ID, default 1, range 1..2147483648\n"));
    ck_assert_ptr_nonnull(
        strstr(buf, "--log-level trace|debug|info|warn|error\n"));
    ck_assert_ptr_nonnull(strstr(buf, "closes a connection idle this long"));
}
END_TEST

/* ---- addr -------------------------------------------------------------- */

START_TEST(addr_split)
{
    char host[64];
    int port = 0;

    ck_assert_int_eq(
        config_addr_split("10.0.0.1:7700", host, sizeof(host), &port), 0);
    ck_assert_str_eq(host, "10.0.0.1");
    ck_assert_int_eq(port, 7700);

    ck_assert_int_eq(
        config_addr_split("[fe80::1]:1", host, sizeof(host), &port), 0);
    ck_assert_str_eq(host, "fe80::1");
    ck_assert_int_eq(port, 1);

    ck_assert_int_eq(
        config_addr_split("localhost:65535", host, sizeof(host), &port), 0);
    ck_assert_str_eq(host, "localhost");
    ck_assert_int_eq(port, 65535);

    /* Failures write nothing. */
    strcpy(host, "keep");
    port = 42;
    ck_assert_int_eq(config_addr_split("localhost:65535", host, 9, &port),
                     CLAWQ_EINVALID);
    ck_assert_int_eq(config_addr_split("host:80", host, sizeof(host), &port),
                     CLAWQ_EINVALID);
    ck_assert_str_eq(host, "keep");
    ck_assert_int_eq(port, 42);
    ck_assert_int_eq(config_addr_split("localhost:80", host, 10, &port), 0);
}
END_TEST

/* ---- describe ---------------------------------------------------------- */

START_TEST(describe)
{
    char buf[8192];
    char small[64];
    config c;

    config_defaults(&c);
    ck_assert_int_eq(config_describe(&c, buf, sizeof(buf)), 0);
    ck_assert_ptr_eq(strstr(buf, "data=./data listen=127.0.0.1:7700 "), buf);
    ck_assert_ptr_nonnull(strstr(buf, " node-id=1 log-level=info "
                                      "log-format=text max-frame=16M "));
    ck_assert_ptr_nonnull(strstr(buf, " max-wait=1m idle-timeout=5m "));
    ck_assert_ptr_nonnull(strstr(buf, " heartbeat-timeout=30ms "));
    ck_assert_ptr_nonnull(strstr(buf, " map-max=0"));

    /* A value with a space or a quote is quoted as log.h reads it. */
    ck_assert_int_eq(run(&c, no_env, "--data", "/tmp/a \"b\"", "--max-payload",
                         "1000", "--log-level", "TRACE", NULL),
                     0);
    ck_assert_int_eq(config_describe(&c, buf, sizeof(buf)), 0);
    ck_assert_ptr_eq(strstr(buf, "data=\"/tmp/a \\\"b\\\"\" "), buf);
    ck_assert_ptr_nonnull(strstr(buf, " log-level=trace "));
    ck_assert_ptr_nonnull(strstr(buf, " max-payload=1000 "));

    ck_assert_int_eq(config_describe(&c, small, sizeof(small)),
                     CLAWQ_ETOO_LARGE);
    ck_assert_uint_lt(strlen(small), sizeof(small));
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"defaults", defaults_values},
        {"flags", flags_both_forms},
        {"env", env_values},
        {"env_environ", env_process_environ},
        {"precedence", flag_overrides_env},
        {"suffixes", suffixes},
        {"bad_numbers", bad_numbers},
        {"bad_addresses", bad_addresses},
        {"bad_words", bad_words},
        {"bad_flags", bad_flags},
        {"bad_env", bad_env},
        {"bad_relations", bad_relations},
        {"err_buffer", err_buffer_small},
        {"help", help_and_version},
        {"usage", usage_lists_every_setting},
        {"addr_split", addr_split},
        {"describe", describe},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
