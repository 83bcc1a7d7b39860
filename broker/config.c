/* config.c: the settings table and what is generated from it.
 *
 * Every setting is one row of `opts` below, in the order --help lists
 * them. A default is written in flag syntax and goes through the same
 * parser as user input, so a default outside its own bounds aborts the
 * first config_defaults (and the unit tests). To add a setting: add the
 * field to `config`, a row here, and a test line in test_config.c; the
 * flag, environment variable, --help entry, error messages and
 * config_describe follow.
 *
 * Bounds that tie two settings together are checked after all of them are
 * read (check_relations), with a message naming both.
 */
#include "config.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

typedef enum opt_type {
    OPT_STRING,   /* max = longest value in bytes */
    OPT_ADDR,     /* see config_addr_split */
    OPT_UINT,     /* plain decimal */
    OPT_SIZE,     /* bytes, K/M/G suffixes */
    OPT_DURATION, /* milliseconds, ms/s/m suffixes */
    OPT_ENUM,     /* the index of the word in `choices` */
    OPT_BOOL
} opt_type;

typedef struct opt {
    const char *name;    /* flag without dashes; the env name derives */
    opt_type type;       /* from it (opt_env_name) */
    size_t offset;       /* of the field in config */
    size_t width;        /* sizeof the field */
    const char *def;     /* default, in flag syntax */
    uint64_t min, max;   /* bounds of numeric types, in base units */
    const char *unit;    /* what a number counts, for messages; NULL for
                            durations (always ms) */
    const char *choices; /* OPT_ENUM: "a|b|c", index = stored value;
                            OPT_STRING: the --help placeholder (NULL =
                            PATH) */
    const char *help;
} opt;

#define FIELD(f) offsetof(config, f), sizeof(((config *)0)->f)
#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)
#define TiB (UINT64_C(1) << 40)

/* The enum rows store the index of the word; these keep the words in the
 * order of the enums they stand for. */
_Static_assert(LOG_TRACE == 0 && LOG_DEBUG == 1 && LOG_INFO == 2 &&
                   LOG_WARN == 3 && LOG_ERROR == 4,
               "log-level choices follow enum log_level");
_Static_assert(LOG_TEXT == 0 && LOG_JSON == 1,
               "log-format choices follow enum log_format");
_Static_assert(CONFIG_STORE_MEMORY == 0 && CONFIG_STORE_DISK == 1,
               "store choices follow enum config_store");

static const opt opts[] = {
    {"data", OPT_STRING, FIELD(data), "./data", 1, CONFIG_PATH_MAX - 1, NULL,
     NULL,
     "data directory: the node's Raft log (and, with --store=disk, its "
     "LMDB store)"},
    {"listen", OPT_ADDR, FIELD(listen), "127.0.0.1:7700", 0, 0, NULL, NULL,
     "address for clients (the clawq protocol)"},
    {"raft", OPT_ADDR, FIELD(raft), "127.0.0.1:7701", 0, 0, NULL, NULL,
     "address for Raft traffic between nodes"},
    {"http", OPT_ADDR, FIELD(http), "127.0.0.1:7780", 0, 0, NULL, NULL,
     "address for HTTP: metrics and health"},
    {"cluster", OPT_STRING, FIELD(cluster), "", 0, 1023, NULL,
     "ID=HOST:PORT,...",
     "the voters of a new cluster with their Raft addresses (every node "
     "given the same list); empty = a one-node cluster. Ignored on a "
     "restart"},
    {"join", OPT_STRING, FIELD(join), "", 0, 1023, NULL, "HOST:PORT,...",
     "client addresses of members of an existing cluster: a node with a "
     "fresh data directory asks to be added (a non-voter until it has "
     "caught up, then a voter). Ignored on a restart"},
    {"scaler", OPT_ADDR, FIELD(scaler), "127.0.0.1:7790", 0, 0, NULL, NULL,
     "address for the KEDA external scaler (gRPC over HTTP/2)"},
    {"scaler-tls-cert", OPT_STRING, FIELD(scaler_tls_cert), "", 0,
     CONFIG_PATH_MAX - 1, NULL, NULL,
     "PEM certificate for the scaler: serve TLS with ALPN h2 (with "
     "--scaler-tls-key); empty = plaintext h2c"},
    {"scaler-tls-key", OPT_STRING, FIELD(scaler_tls_key), "", 0,
     CONFIG_PATH_MAX - 1, NULL, NULL, "PEM private key for the scaler"},
    {"scaler-tls-ca", OPT_STRING, FIELD(scaler_tls_ca), "", 0,
     CONFIG_PATH_MAX - 1, NULL, NULL,
     "PEM CA bundle: require and verify scaler client certificates"},
    {"report-interval", OPT_DURATION, FIELD(report_interval_ms), "5s", 100,
     3600000, NULL, NULL,
     "how often workers report their load; a worker silent for three "
     "intervals no longer counts"},
    {"shutdown-grace", OPT_DURATION, FIELD(shutdown_grace_ms), "10s", 0,
     3600000, NULL, NULL,
     "on SIGTERM, how long outstanding requests may take before the "
     "remaining connections are closed"},
    {"node-id", OPT_UINT, FIELD(node_id), "1", 1, UINT64_C(1) << 31, NULL, NULL,
     "this node's Raft id, unique in the cluster"},
    {"log-level", OPT_ENUM, FIELD(log_level), "info", 0, 0, NULL,
     "trace|debug|info|warn|error", "lowest level of log lines written"},
    {"log-format", OPT_ENUM, FIELD(log_format), "text", 0, 0, NULL, "text|json",
     "log line format, on stderr"},
    {"max-frame", OPT_SIZE, FIELD(max_frame), "16M", KiB, 256 * MiB, "bytes",
     NULL, "largest protocol frame accepted or sent"},
    {"max-connections", OPT_UINT, FIELD(max_connections), "10000", 1, 1000000,
     "connections", NULL, "client connections open at once"},
    {"max-payload", OPT_SIZE, FIELD(max_payload), "1M", 1, 64 * MiB, "bytes",
     NULL, "largest task payload; at most --max-frame"},
    {"max-pending", OPT_UINT, FIELD(max_pending), "4096", 1, 1000000,
     "requests", NULL, "outstanding requests per connection"},
    {"max-wait", OPT_DURATION, FIELD(max_wait_ms), "60s", 0, 3600000, NULL,
     NULL, "longest wait of a long-polling pull"},
    {"idle-timeout", OPT_DURATION, FIELD(idle_timeout_ms), "5m", 0, 86400000,
     NULL, NULL, "closes a connection idle this long; 0 = never"},
    {"write-buffer", OPT_SIZE, FIELD(write_buffer), "8M", 64 * KiB, GiB,
     "bytes", NULL,
     "unsent reply bytes per connection before the broker stops reading "
     "from it"},
    {"election-timeout", OPT_DURATION, FIELD(election_timeout_ms), "300ms", 10,
     60000, NULL, NULL, "Raft election timeout"},
    {"heartbeat-timeout", OPT_DURATION, FIELD(heartbeat_timeout_ms), "30ms", 1,
     10000, NULL, NULL,
     "Raft heartbeat interval; less than --election-timeout"},
    {"snapshot-threshold", OPT_UINT, FIELD(snapshot_threshold), "8192", 1,
     UINT64_C(1) << 30, "entries", NULL,
     "Raft log entries between two snapshots, at least (see "
     "--snapshot-log-size)"},
    {"snapshot-log-size", OPT_SIZE, FIELD(snapshot_log_size), "64M", 0,
     16 * GiB, "bytes", NULL,
     "when log entries are small, snapshot only every this many bytes of "
     "log (the threshold grows up to 65536 entries, which bounds the replay "
     "at a restart; each snapshot briefly "
     "stalls appends); 0 = every --snapshot-threshold entries"},
    {"snapshot-trailing", OPT_UINT, FIELD(snapshot_trailing), "16384", 1,
     UINT64_C(1) << 30, "entries", NULL,
     "Raft log entries kept after a snapshot, for slow followers"},
    {"raft-segment-size", OPT_SIZE, FIELD(raft_segment_size), "16M", 4 * MiB,
     20 * MiB, "bytes", NULL,
     "size of one Raft log segment file (rounded up to 4K; three are "
     "preallocated). Each change of segment (also at every snapshot) "
     "prepares a new one, zero-filled with --log-prezero, so larger "
     "segments mean fewer changes. 4M to 20M: libraft 0.22 refuses writes "
     "below 4M of free log space and counts it in a 16-bit number of KiB"},
    {"log-prezero", OPT_BOOL, FIELD(log_prezero), "true", 0, 1, NULL, NULL,
     "write zeros over each Raft log segment when it is created, so that "
     "log writes are direct, non-blocking overwrites (each segment once, "
     "ahead of use); false = unwritten preallocation, and each log write "
     "takes a detour through a thread"},
    {"store", OPT_ENUM, FIELD(store_mode), "memory", 0, 0, NULL, "memory|disk",
     "where the LMDB task store lives. memory: in RAM (swappable), never "
     "written to a disk, rebuilt from the Raft snapshot and log at each "
     "start; the Raft log alone carries durability, and the disk sees only "
     "log and snapshot writes. disk: in DATA/store, kept across restarts "
     "(only the log after it is replayed), at the cost of the kernel "
     "writing LMDB's copied-on-write pages back in bursts"},
    {"map-size", OPT_SIZE, FIELD(map_size), "1G", MiB, TiB, "bytes", NULL,
     "initial LMDB map size; the map doubles when full"},
    {"map-max", OPT_SIZE, FIELD(map_max), "0", 0, 16 * TiB, "bytes", NULL,
     "largest LMDB map, at least --map-size; 0 = automatic: with "
     "--store=memory half of the memory this process may use (its cgroup's "
     "limit when lower), so that puts are refused with "
     "STORAGE_FULL before the OOM killer comes; with --store=disk 64G"},
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

/* ---- messages ---------------------------------------------------------- */

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes "clawqd: " and the message into err; returns -1. */
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (errlen == 0)
        return -1;
    n = snprintf(err, errlen, "clawqd: ");
    if (n < 0 || (size_t)n >= errlen)
        return -1;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* CLAWQ_ plus the name in upper case, dashes as underscores. */
static void opt_env_name(const opt *o, char *buf, size_t len)
{
    size_t i, n = strlen("CLAWQ_");

    CLAWQ_ASSERT(len > n + strlen(o->name));
    memcpy(buf, "CLAWQ_", n);
    for (i = 0; o->name[i] != '\0'; i++) {
        char ch = o->name[i];
        buf[n + i] = ch == '-' ? '_' : (ch >= 'a' && ch <= 'z') ? ch - 32 : ch;
    }
    buf[n + i] = '\0';
}

/* ---- value syntax ------------------------------------------------------ */

/* Parses the leading decimal digits of s (at least one) into *v,
 * saturating at UINT64_MAX so that a huge number fails the range check
 * rather than the syntax; *end gets the first byte after them. Returns -1
 * without digits. */
static int parse_digits(const char *s, uint64_t *v, const char **end)
{
    uint64_t x = 0;
    const char *p = s;

    for (; *p >= '0' && *p <= '9'; p++) {
        uint64_t d = (uint64_t)(*p - '0');
        x = x > (UINT64_MAX - d) / 10 ? UINT64_MAX : x * 10 + d;
    }
    if (p == s)
        return -1;
    *v = x;
    *end = p;
    return 0;
}

static int parse_uint(const char *s, uint64_t *v)
{
    const char *end;

    if (parse_digits(s, v, &end) != 0 || *end != '\0')
        return -1;
    return 0;
}

/* x * mult, saturating like parse_digits. */
static uint64_t scaled(uint64_t x, uint64_t mult)
{
    return x > UINT64_MAX / mult ? UINT64_MAX : x * mult;
}

static int parse_size(const char *s, uint64_t *v)
{
    const char *end;
    uint64_t x, mult = 1;

    if (parse_digits(s, &x, &end) != 0)
        return -1;
    if (*end != '\0') {
        switch (*end) {
        case 'K':
        case 'k':
            mult = KiB;
            break;
        case 'M':
        case 'm':
            mult = MiB;
            break;
        case 'G':
        case 'g':
            mult = GiB;
            break;
        default:
            return -1;
        }
        if (end[1] != '\0')
            return -1;
    }
    *v = scaled(x, mult);
    return 0;
}

static int parse_duration(const char *s, uint64_t *v)
{
    const char *end;
    uint64_t x, mult;

    if (parse_digits(s, &x, &end) != 0)
        return -1;
    if (*end == '\0' || strcasecmp(end, "ms") == 0)
        mult = 1;
    else if (strcasecmp(end, "s") == 0)
        mult = 1000;
    else if (strcasecmp(end, "m") == 0)
        mult = 60000;
    else
        return -1;
    *v = scaled(x, mult);
    return 0;
}

static int parse_bool(const char *s, uint64_t *v)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *v = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *v = 0;
            return 0;
        }
    }
    return -1;
}

/* The index of s among the |-separated words of choices, any case. */
static int parse_enum(const char *choices, const char *s, uint64_t *v)
{
    const char *p = choices, *bar;
    size_t n = strlen(s);
    uint64_t i = 0;

    for (;; i++) {
        bar = strchr(p, '|');
        size_t wlen = bar ? (size_t)(bar - p) : strlen(p);
        if (wlen == n && n > 0 && strncasecmp(p, s, n) == 0) {
            *v = i;
            return 0;
        }
        if (bar == NULL)
            return -1;
        p = bar + 1;
    }
}

int config_addr_split(const char *addr, char *host, size_t hostlen, int *port)
{
    char h[CONFIG_ADDR_MAX];
    const char *colon, *hs;
    size_t hlen;
    uint64_t p;
    unsigned char bin[16];

    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (close == NULL || close[1] != ':')
            return CLAWQ_EINVALID;
        hs = addr + 1;
        hlen = (size_t)(close - hs);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL)
            return CLAWQ_EINVALID;
        hs = addr;
        hlen = (size_t)(colon - addr);
    }
    if (hlen == 0 || hlen >= sizeof(h))
        return CLAWQ_EINVALID;
    memcpy(h, hs, hlen);
    h[hlen] = '\0';
    if (addr[0] == '[') {
        if (inet_pton(AF_INET6, h, bin) != 1)
            return CLAWQ_EINVALID;
    } else if (strcmp(h, "localhost") != 0 && inet_pton(AF_INET, h, bin) != 1) {
        return CLAWQ_EINVALID;
    }
    if (parse_uint(colon + 1, &p) != 0 || p < 1 || p > 65535)
        return CLAWQ_EINVALID;
    if (hlen >= hostlen)
        return CLAWQ_EINVALID;
    memcpy(host, h, hlen + 1);
    *port = (int)p;
    return 0;
}

/* ---- values in and out ------------------------------------------------- */

static void store_uint(config *c, const opt *o, uint64_t v)
{
    char *field = (char *)c + o->offset;

    if (o->width == sizeof(uint64_t)) {
        memcpy(field, &v, sizeof(uint64_t));
    } else if (o->width == sizeof(uint32_t)) {
        uint32_t v32 = (uint32_t)v;
        CLAWQ_ASSERT(v <= UINT32_MAX);
        memcpy(field, &v32, sizeof(v32));
    } else {
        CLAWQ_ASSERT(o->width == sizeof(bool));
        bool b = v != 0;
        memcpy(field, &b, sizeof(b));
    }
}

static uint64_t load_uint(const config *c, const opt *o)
{
    const char *field = (const char *)c + o->offset;
    uint64_t v64;
    uint32_t v32;
    bool b;

    if (o->width == sizeof(uint64_t)) {
        memcpy(&v64, field, sizeof(v64));
        return v64;
    }
    if (o->width == sizeof(uint32_t)) {
        memcpy(&v32, field, sizeof(v32));
        return v32;
    }
    memcpy(&b, field, sizeof(b));
    return b;
}

/* A number in the syntax of its type, shortest form: 16M, 30s, 5m. */
static void format_number(opt_type type, uint64_t v, char *buf, size_t len)
{
    static const struct {
        uint64_t mult;
        const char *suffix;
    } sizes[] = {{GiB, "G"}, {MiB, "M"}, {KiB, "K"}},
      durations[] = {{60000, "m"}, {1000, "s"}, {1, "ms"}};
    const char *suffix = "";
    uint64_t mult = 1;

    for (size_t i = 0; i < 3 && v != 0; i++) {
        if (type == OPT_SIZE && v % sizes[i].mult == 0) {
            mult = sizes[i].mult;
            suffix = sizes[i].suffix;
            break;
        }
        if (type == OPT_DURATION && v % durations[i].mult == 0) {
            mult = durations[i].mult;
            suffix = durations[i].suffix;
            break;
        }
    }
    snprintf(buf, len, "%llu%s", (unsigned long long)(v / mult), suffix);
}

static const char *type_error(const opt *o)
{
    switch (o->type) {
    case OPT_ADDR:
        return "is not an address (examples: 127.0.0.1:7700, [::1]:7700, "
               "localhost:7700)";
    case OPT_UINT:
        return "is not a whole number (examples: 1, 4096)";
    case OPT_SIZE:
        return "is not a size (examples: 65536, 64K, 16M)";
    case OPT_DURATION:
        return "is not a duration (examples: 500, 500ms, 30s, 5m)";
    case OPT_BOOL:
        return "is not a boolean (true or false)";
    default:
        return "is not valid";
    }
}

/* Parses s as o's value into c. `src` names where s came from (--flag or
 * CLAWQ_ENV) for the message. Returns 0 or -1 with err written. */
static int set_value(config *c, const opt *o, const char *s, const char *src,
                     char *err, size_t errlen)
{
    char lo[32], hi[32];
    uint64_t v = 0;
    int rc = -1;
    size_t n;
    char *field = (char *)c + o->offset;

    switch (o->type) {
    case OPT_STRING:
        n = strlen(s);
        if (n < o->min)
            return fail(err, errlen, "%s: must not be empty", src);
        if (n > o->max || n >= o->width)
            return fail(err, errlen,
                        "%s: value is too long (at most %llu "
                        "bytes)",
                        src, (unsigned long long)o->max);
        memcpy(field, s, n + 1);
        return 0;
    case OPT_ADDR: {
        char host[CONFIG_ADDR_MAX];
        int port;
        if (strlen(s) >= o->width ||
            config_addr_split(s, host, sizeof(host), &port) != 0)
            return fail(err, errlen, "%s: \"%.80s\" %s", src, s, type_error(o));
        memcpy(field, s, strlen(s) + 1);
        return 0;
    }
    case OPT_ENUM:
        if (parse_enum(o->choices, s, &v) != 0)
            return fail(err, errlen, "%s: \"%.80s\" is not one of %s", src, s,
                        o->choices);
        store_uint(c, o, v);
        return 0;
    case OPT_UINT:
        rc = parse_uint(s, &v);
        break;
    case OPT_SIZE:
        rc = parse_size(s, &v);
        break;
    case OPT_DURATION:
        rc = parse_duration(s, &v);
        break;
    case OPT_BOOL:
        rc = parse_bool(s, &v);
        if (rc == 0) {
            store_uint(c, o, v);
            return 0;
        }
        break;
    }
    if (rc != 0)
        return fail(err, errlen, "%s: \"%.80s\" %s", src, s, type_error(o));
    if (v < o->min || v > o->max) {
        format_number(o->type, o->min, lo, sizeof(lo));
        format_number(o->type, o->max, hi, sizeof(hi));
        return fail(err, errlen, "%s: \"%.80s\" is out of range (%s..%s%s%s)",
                    src, s, lo, hi, o->unit ? " " : "", o->unit ? o->unit : "");
    }
    store_uint(c, o, v);
    return 0;
}

/* Formats o's value in c in flag syntax. */
static void format_value(const config *c, const opt *o, char *buf, size_t len)
{
    const char *field = (const char *)c + o->offset;
    uint64_t v;

    switch (o->type) {
    case OPT_STRING:
    case OPT_ADDR:
        snprintf(buf, len, "%s", field);
        return;
    case OPT_ENUM: {
        const char *p = o->choices, *bar;
        v = load_uint(c, o);
        for (uint64_t i = 0; i < v && p != NULL; i++) {
            bar = strchr(p, '|');
            p = bar ? bar + 1 : NULL;
        }
        CLAWQ_ASSERT(p != NULL);
        bar = strchr(p, '|');
        snprintf(buf, len, "%.*s", (int)(bar ? (size_t)(bar - p) : strlen(p)),
                 p);
        return;
    }
    case OPT_BOOL:
        snprintf(buf, len, "%s", load_uint(c, o) ? "true" : "false");
        return;
    default:
        format_number(o->type, load_uint(c, o), buf, len);
    }
}

static const opt *opt_find(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        if (strlen(opts[i].name) == len && memcmp(opts[i].name, name, len) == 0)
            return &opts[i];
    }
    return NULL;
}

static const char *env_lookup(char **env, const char *name)
{
    size_t n = strlen(name);

    for (; *env != NULL; env++) {
        if (strncmp(*env, name, n) == 0 && (*env)[n] == '=')
            return *env + n + 1;
    }
    return NULL;
}

/* Bounds between settings. */
static int check_relations(const config *c, char *err, size_t errlen)
{
    char a[32], b[32];

    if (c->max_payload > c->max_frame) {
        format_number(OPT_SIZE, c->max_payload, a, sizeof(a));
        format_number(OPT_SIZE, c->max_frame, b, sizeof(b));
        return fail(err, errlen,
                    "--max-payload (%s) must not exceed --max-frame (%s)", a,
                    b);
    }
    if (c->heartbeat_timeout_ms >= c->election_timeout_ms) {
        format_number(OPT_DURATION, c->heartbeat_timeout_ms, a, sizeof(a));
        format_number(OPT_DURATION, c->election_timeout_ms, b, sizeof(b));
        return fail(err, errlen,
                    "--heartbeat-timeout (%s) must be less than "
                    "--election-timeout (%s)",
                    a, b);
    }
    if (c->map_max != 0 && c->map_max < MiB)
        return fail(err, errlen,
                    "--map-max: 0 (automatic) or at least 1M, not %zu bytes",
                    c->map_max);
    if (c->map_max != 0 && c->map_size > c->map_max) {
        format_number(OPT_SIZE, c->map_size, a, sizeof(a));
        format_number(OPT_SIZE, c->map_max, b, sizeof(b));
        return fail(err, errlen,
                    "--map-size (%s) must not exceed --map-max (%s)", a, b);
    }
    if (c->scaler_tls_ca[0] != '\0' && c->scaler_tls_cert[0] == '\0' &&
        c->scaler_tls_key[0] == '\0')
        return fail(err, errlen,
                    "--scaler-tls-ca needs --scaler-tls-cert and "
                    "--scaler-tls-key");
    if ((c->scaler_tls_cert[0] == '\0') != (c->scaler_tls_key[0] == '\0'))
        return fail(err, errlen,
                    "--scaler-tls-cert and --scaler-tls-key go together");
    return 0;
}

void config_defaults(config *c)
{
    char err[256];

    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt *o = &opts[i];
        CLAWQ_ASSERT(o->type == OPT_STRING || o->type == OPT_ADDR ||
                     o->type == OPT_ENUM || o->max <= UINT32_MAX ||
                     o->width == sizeof(uint64_t));
        if (set_value(c, o, o->def, o->name, err, sizeof(err)) != 0) {
            fprintf(stderr, "%s (default of the config table)\n", err);
            CLAWQ_ASSERT(!"config table default out of its bounds");
        }
    }
    CLAWQ_ASSERT(check_relations(c, err, sizeof(err)) == 0);
}

int config_parse(config *c, int argc, char **argv, char **environ_like,
                 char *err, size_t errlen)
{
    config tmp;
    bool set[N_OPTS] = {false};
    char src[64];
    int i;

    if (errlen > 0)
        err[0] = '\0';
    config_defaults(&tmp);
    for (i = 1; i < argc; i++) {
        const char *arg = argv[i], *name, *eq, *value;
        const opt *o;
        size_t len;

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            config_usage(stdout);
            return 1;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("clawqd %d.%d.%d\n", CLAWQ_VERSION_MAJOR,
                   CLAWQ_VERSION_MINOR, CLAWQ_VERSION_PATCH);
            return 1;
        }
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
            return fail(err, errlen,
                        "unexpected argument \"%.80s\" (settings are "
                        "--name VALUE; see --help)",
                        arg);
        name = arg + 2;
        eq = strchr(name, '=');
        len = eq ? (size_t)(eq - name) : strlen(name);
        o = opt_find(name, len);
        if (o == NULL)
            return fail(err, errlen, "unknown flag --%.*s (see --help)",
                        (int)(len > 80 ? 80 : len), name);
        snprintf(src, sizeof(src), "--%s", o->name);
        if (eq != NULL)
            value = eq + 1;
        else if (o->type == OPT_BOOL)
            value = "true";
        else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
            value = argv[++i];
        else
            return fail(err, errlen, "%s needs a value", src);
        if (set_value(&tmp, o, value, src, err, errlen) != 0)
            return -1;
        set[o - opts] = true;
    }

    if (environ_like == NULL)
        environ_like = environ;
    for (size_t k = 0; k < N_OPTS; k++) {
        const char *value;

        if (set[k])
            continue;
        opt_env_name(&opts[k], src, sizeof(src));
        value = env_lookup(environ_like, src);
        if (value != NULL &&
            set_value(&tmp, &opts[k], value, src, err, errlen) != 0)
            return -1;
    }

    if (check_relations(&tmp, err, errlen) != 0)
        return -1;
    *c = tmp;
    return 0;
}

/* The placeholder for a setting's value in --help. */
static const char *opt_metavar(const opt *o)
{
    switch (o->type) {
    case OPT_STRING:
        return o->choices != NULL ? o->choices : "PATH";
    case OPT_ADDR:
        return "HOST:PORT";
    case OPT_UINT:
        return "N";
    case OPT_SIZE:
        return "SIZE";
    case OPT_DURATION:
        return "DURATION";
    case OPT_ENUM:
        return o->choices;
    case OPT_BOOL:
        return "[=BOOL]";
    }
    return "VALUE";
}

void config_usage(FILE *out)
{
    char env[64], lo[32], hi[32];

    fprintf(out,
            "Usage: clawqd [--name VALUE | --name=VALUE]...\n"
            "\n"
            "Runs one node of a clawq broker. Every setting can also come "
            "from the\n"
            "environment variable shown; a flag overrides it.\n"
            "Sizes are bytes or take a K, M or G suffix (powers of 1024).\n"
            "Durations are milliseconds or take an ms, s or m suffix.\n"
            "Addresses are a.b.c.d:port, [ipv6]:port or localhost:port.\n"
            "\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt *o = &opts[i];

        opt_env_name(o, env, sizeof(env));
        fprintf(out, "  --%s%s%s\n      %s\n      env %s, default %s", o->name,
                o->type == OPT_BOOL ? "" : " ", opt_metavar(o), o->help, env,
                o->def);
        if (o->type == OPT_UINT || o->type == OPT_SIZE ||
            o->type == OPT_DURATION) {
            format_number(o->type, o->min, lo, sizeof(lo));
            format_number(o->type, o->max, hi, sizeof(hi));
            fprintf(out, ", range %s..%s", lo, hi);
        }
        if (o->unit != NULL)
            fprintf(out, " (%s)", o->unit);
        fprintf(out, "\n");
    }
    fprintf(out, "  -h, --help\n      print this text and exit\n"
                 "  --version\n      print the version and exit\n");
}

int config_describe(const config *c, char *buf, size_t len)
{
    char val[CONFIG_PATH_MAX], item[CONFIG_PATH_MAX * 2 + 64];
    size_t used = 0;

    CLAWQ_ASSERT(len > 0);
    buf[0] = '\0';
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt *o = &opts[i];
        size_t n;

        format_value(c, o, val, sizeof(val));
        if (strpbrk(val, " \"\\") != NULL || val[0] == '\0') {
            /* Quoted, with \" and \\ as log.h reads them. */
            char *q = item;
            q += sprintf(q, "%s%s=\"", used ? " " : "", o->name);
            for (const char *p = val; *p != '\0'; p++) {
                if (*p == '"' || *p == '\\')
                    *q++ = '\\';
                *q++ = *p;
            }
            *q++ = '"';
            *q = '\0';
        } else {
            snprintf(item, sizeof(item), "%s%s=%s", used ? " " : "", o->name,
                     val);
        }
        n = strlen(item);
        if (n >= len - used)
            return CLAWQ_ETOO_LARGE;
        memcpy(buf + used, item, n + 1);
        used += n;
    }
    return 0;
}
