/* join.c: --join and client-address registration. See join.h. */
#include "join.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clawq.h"
#include "cmd.h"
#include "fsm.h"
#include "log.h"

#define TICK_MS 500
#define PAUSE_MAX_MS 8000
#define REQUEST_TIMEOUT_MS 5000

struct joiner {
    uv_loop_t *loop;
    store *s;
    repl *r;
    uv_timer_t timer;
    uv_work_t work;
    uint32_t node_id;
    char raft_addr[64];
    char client_addr[CMD_ADDR_MAX + 1];
    char join[1024];
    bool joining; /* a fresh node: join until admitted */
    bool busy;    /* a request is on the worker thread */
    bool closing; /* joiner_close ran */
    bool timer_closed;
    uint64_t next_ms; /* uv_now() before which no new attempt starts */
    uint32_t pause_ms;
    /* The request on the worker thread: inputs, then its outcome. */
    bool w_register;
    char w_endpoints[CMD_ADDR_MAX + 1 + 1024 + 1]; /* leader, then join */
    int w_rc;
    char w_err[256];
};

static void joiner_free_maybe(joiner *j)
{
    if (j->closing && j->timer_closed && !j->busy)
        free(j);
}

static bool in_configuration(joiner *j)
{
    repl_member_info m[REPL_MAX_MEMBERS];
    size_t n = repl_members(j->r, m, REPL_MAX_MEMBERS, NULL), i;

    for (i = 0; i < n; i++)
        if (m[i].id == j->node_id)
            return true;
    return false;
}

/* On the worker thread: one blocking libclawq call; touches only the
 * w_* fields and the immutable addresses. */
static void work_run(uv_work_t *w)
{
    joiner *j = w->data;
    clawq_options o;
    clawq_client *c = NULL;
    char name[48];
    int rc;

    clawq_options_init(&o);
    snprintf(name, sizeof(name), "clawqd-%u", j->node_id);
    o.client_name = name;
    o.connect_timeout_ms = 1000;
    o.request_timeout_ms = REQUEST_TIMEOUT_MS;
    j->w_err[0] = '\0';
    rc = clawq_connect2(j->w_endpoints, &o, &c, j->w_err, sizeof(j->w_err));
    if (rc == 0) {
        rc = j->w_register ? clawq_cluster_register(c, j->node_id, j->raft_addr,
                                                    j->client_addr)
                           : clawq_cluster_add(c, j->node_id, j->raft_addr,
                                               j->client_addr, NULL);
        if (rc != 0)
            snprintf(j->w_err, sizeof(j->w_err), "%s", clawq_errmsg(c));
        clawq_close(c);
    }
    j->w_rc = rc;
}

static void work_done(uv_work_t *w, int status)
{
    joiner *j = w->data;
    const char *what = j->w_register ? "register" : "join";

    j->busy = false;
    if (j->closing) {
        joiner_free_maybe(j);
        return;
    }
    if (status == 0 && j->w_rc == 0) {
        LOG(LOG_INFO, j->w_register ? "clawqd.registered" : "clawqd.joined",
            "node=%u via=%s", j->node_id, j->w_endpoints);
        j->joining = false;
        j->pause_ms = TICK_MS;
        return;
    }
    LOG(LOG_WARN, "clawqd.join_failed",
        "what=%s via=%s error=%s detail=\"%s\" retry_ms=%u", what,
        j->w_endpoints, clawq_err_name(status != 0 ? CLAWQ_EINTERNAL : j->w_rc),
        j->w_err, j->pause_ms);
    j->next_ms = uv_now(j->loop) + j->pause_ms;
    j->pause_ms =
        j->pause_ms * 2 > PAUSE_MAX_MS ? PAUSE_MAX_MS : j->pause_ms * 2;
}

static void on_tick(uv_timer_t *t)
{
    joiner *j = t->data;
    char known[CMD_ADDR_MAX + 1], leader[CMD_ADDR_MAX + 1];
    uint32_t lid;
    bool have_leader;

    if (j->busy || uv_now(j->loop) < j->next_ms)
        return;
    if (!j->joining && repl_is_leader(j->r))
        return; /* main.c records a leader's own address */
    lid = repl_leader_id(j->r);
    have_leader = lid != 0 && lid != j->node_id &&
                  fsm_member_addr(j->s, lid, leader, sizeof(leader)) == 0;
    if (j->joining) {
        if (in_configuration(j) && have_leader &&
            fsm_member_addr(j->s, j->node_id, known, sizeof(known)) == 0 &&
            strcmp(known, j->client_addr) == 0) {
            j->joining = false; /* admitted (the answer may have been lost) */
            LOG(LOG_INFO, "clawqd.joined", "node=%u via=replication",
                j->node_id);
            return;
        }
        snprintf(j->w_endpoints, sizeof(j->w_endpoints), "%s%s%s",
                 have_leader ? leader : "", have_leader ? "," : "", j->join);
        j->w_register = false;
    } else {
        /* A member whose client address the others do not know yet. */
        if (!have_leader || !in_configuration(j) ||
            (fsm_member_addr(j->s, j->node_id, known, sizeof(known)) == 0 &&
             strcmp(known, j->client_addr) == 0))
            return;
        snprintf(j->w_endpoints, sizeof(j->w_endpoints), "%s", leader);
        j->w_register = true;
    }
    j->busy = true;
    j->work.data = j;
    if (uv_queue_work(j->loop, &j->work, work_run, work_done) != 0) {
        j->busy = false;
        j->next_ms = uv_now(j->loop) + j->pause_ms;
    }
}

int joiner_start(uv_loop_t *loop, store *s, repl *r, const join_opts *o,
                 joiner **out)
{
    joiner *j = calloc(1, sizeof(*j));

    if (j == NULL)
        return CLAWQ_ENOMEM;
    if (strlen(o->raft_addr) >= sizeof(j->raft_addr) ||
        strlen(o->client_addr) >= sizeof(j->client_addr) ||
        strlen(o->join) >= sizeof(j->join)) {
        free(j);
        return CLAWQ_EINVALID;
    }
    j->loop = loop;
    j->s = s;
    j->r = r;
    j->node_id = o->node_id;
    snprintf(j->raft_addr, sizeof(j->raft_addr), "%s", o->raft_addr);
    snprintf(j->client_addr, sizeof(j->client_addr), "%s", o->client_addr);
    snprintf(j->join, sizeof(j->join), "%s", o->join);
    j->pause_ms = TICK_MS;
    j->joining = j->join[0] != '\0' && !in_configuration(j);
    if (j->joining)
        LOG(LOG_INFO, "clawqd.joining", "node=%u via=%s", j->node_id, j->join);
    else if (j->join[0] != '\0')
        LOG(LOG_INFO, "clawqd.join_ignored", "node=%u reason=%s", j->node_id,
            "already a member (the data directory holds Raft state)");
    uv_timer_init(loop, &j->timer);
    j->timer.data = j;
    uv_timer_start(&j->timer, on_tick, j->joining ? 0 : TICK_MS, TICK_MS);
    *out = j;
    return 0;
}

static void timer_closed(uv_handle_t *h)
{
    joiner *j = h->data;

    j->timer_closed = true;
    joiner_free_maybe(j);
}

void joiner_close(joiner *j)
{
    if (j == NULL || j->closing)
        return;
    j->closing = true;
    uv_close((uv_handle_t *)&j->timer, timer_closed);
}
