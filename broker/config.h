/* config.h: clawqd's settings, from one table in config.c that gives each
 * one its flag name, environment variable, type, default, bounds, unit and
 * help.
 *
 * The config module owns that table and everything generated from it: the
 * defaults, the parsing of flags and environment into a `config`, the
 * error messages and --help. It does no I/O beyond printing --help and
 * --version, and opens nothing: addresses and paths are checked for form
 * only.
 *
 * Every setting `name` is a flag `--name VALUE` or `--name=VALUE` and an
 * environment variable CLAWQ_NAME (upper case, dashes as underscores).
 * Precedence: flag, then environment, then default. Value forms:
 *   size      bytes, or with a K, M or G suffix (powers of 1024): 64K, 16M
 *   duration  milliseconds, or with an ms, s or m suffix: 300, 30s, 5m
 *   address   a.b.c.d:port, [ipv6]:port or localhost:port, port 1..65535
 *   enum      one of the listed words, any case
 *   bool      true/false, yes/no, on/off, 1/0; a bare --name is true
 */
#ifndef CLAWQ_CONFIG_H
#define CLAWQ_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_PATH_MAX 4096 /* bytes of --data, NUL included */
#define CONFIG_ADDR_MAX 64   /* bytes of an address, NUL included */

/* Settings, in their base units (bytes, milliseconds). Strings are
 * NUL-terminated and owned by the struct: a config is a plain value that
 * can be copied and needs no cleanup. */
typedef struct config {
    char data[CONFIG_PATH_MAX];   /* data directory */
    char listen[CONFIG_ADDR_MAX]; /* client protocol address */
    char raft[CONFIG_ADDR_MAX];   /* Raft peer address */
    char http[CONFIG_ADDR_MAX];   /* HTTP (metrics, health) address */
    char scaler[CONFIG_ADDR_MAX]; /* KEDA external scaler (gRPC) address */
    char cluster[1024]; /* "1=RAFTADDR,2=RAFTADDR,...": the voters a new
                           cluster starts with; "" = this node alone */
    char join[1024];    /* "HOST:PORT,...": members' client addresses to
                           ask for admission (a fresh node) */
    char scaler_tls_cert[CONFIG_PATH_MAX]; /* PEM; "" = plaintext h2c */
    char scaler_tls_key[CONFIG_PATH_MAX];
    char scaler_tls_ca[CONFIG_PATH_MAX]; /* verify client certificates */
    uint64_t report_interval_ms;         /* expected worker report period */
    uint64_t shutdown_grace_ms;          /* SIGTERM: how long to answer what is
                                            outstanding before cutting clients off */
    uint32_t node_id;                    /* 1..2^31 */
    int log_level;                       /* enum log_level */
    int log_format;                      /* enum log_format */
    size_t max_frame;                    /* bytes of one protocol frame */
    uint32_t max_connections;            /* open client connections */
    size_t max_payload;                  /* bytes of one task payload */
    uint32_t max_pending;         /* outstanding requests per connection */
    uint64_t max_wait_ms;         /* cap on a long-poll's wait */
    uint64_t idle_timeout_ms;     /* 0 = connections never time out */
    size_t write_buffer;          /* unsent reply bytes per connection before
                                     the broker stops reading from it */
    uint64_t election_timeout_ms; /* Raft */
    uint64_t heartbeat_timeout_ms;
    uint32_t snapshot_threshold; /* Raft entries between snapshots, min */
    size_t snapshot_log_size;    /* log bytes between snapshots, target */
    uint32_t snapshot_trailing;  /* Raft entries kept after a snapshot */
    bool log_prezero;            /* zero-fill new Raft log segments */
    size_t raft_segment_size;    /* bytes of one Raft log segment file */
    int store_mode;              /* enum config_store */
    size_t map_size;             /* initial LMDB map bytes */
    size_t map_max;              /* the LMDB map never grows past this */
} config;

/* Where the LMDB store lives (--store). */
enum config_store {
    CONFIG_STORE_MEMORY, /* memfds: rebuilt from the Raft snapshot and log
                            at every start */
    CONFIG_STORE_DISK,   /* DATA/store: kept across restarts */
};

/* Fills *c with every setting's default. */
void config_defaults(config *c);

/* Fills *c from defaults, then the environment, then the flags in
 * argv[1..argc) (argv[0] is the program name). `environ_like` is a
 * NULL-terminated array of "NAME=value" strings; NULL means the process
 * environment. Environment variables starting with CLAWQ_ that name no
 * setting are ignored (clients share the prefix).
 *
 * Returns 0 with *c filled; 1 when --help (-h) or --version was found and
 * printed to stdout (the caller exits 0); or -1 with a one-line message in
 * err, such as
 *   clawqd: --max-frame: "abc" is not a size (examples: 65536, 64K, 16M)
 * (the caller prints it and exits 2). On 1 and -1, *c is untouched. err is
 * always NUL-terminated when errlen > 0, and cut to fit. */
int config_parse(config *c, int argc, char **argv, char **environ_like,
                 char *err, size_t errlen);

/* Prints the usage text: every setting with its environment variable,
 * default, range and help, generated from the table. */
void config_usage(FILE *out);

/* Writes every setting of c as space-separated name=value pairs, values in
 * the flag syntax and quoted when they contain a space, for one log line
 * at start. Returns 0, or CLAWQ_ETOO_LARGE when buf was too short (buf then
 * holds as much as fitted, NUL-terminated). */
int config_describe(const config *c, char *buf, size_t len);

/* Splits a valid address (see above) into its host, without brackets for
 * IPv6, and port. Returns 0, or CLAWQ_EINVALID when addr is not a valid
 * address or its host does not fit in hostlen bytes; host and *port are
 * written only on success. */
int config_addr_split(const char *addr, char *host, size_t hostlen, int *port);

#endif /* CLAWQ_CONFIG_H */
