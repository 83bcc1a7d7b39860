/* adapter_nats: a NATS JetStream work-queue stream with a pull consumer,
 * through the NATS C client (libnats).
 *
 *   setup    stream QUEUE (subject QUEUE, work-queue retention, file
 *            storage) and its durable pull consumer "bench" (explicit
 *            acks, AckWait = the lease)
 *   put      js_Publish (waits for the stream's PubAck); a batch is n
 *            js_PublishAsync, then js_PublishAsyncComplete; each message's
 *            PubAck or error comes to an ack handler
 *   pull     natsSubscription_Fetch(sub, n, WAIT_MS)
 *   ack      natsMsg_Ack per message (fast), natsMsg_AckSync (durable);
 *            JetStream has no multi-message ack for explicit acks
 *   teardown js_DeleteStream
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>

#include "adapter.h"

#define NATS_CONSUMER "bench"
#define NATS_WAIT_MS 10000 /* PubAck, AckSync and API requests */

typedef struct nats_conn {
    bench_conn base;
    const bench_cfg *cfg;
    natsConnection *nc;
    jsCtx *js;
    natsSubscription *sub; /* consumers */
    natsMsgList pulled;    /* the last fetch */
    bench_msg *msgs;       /* cfg->batch */
    /* The batch being published; the ack handler runs on the client's
     * own thread and matches each PubAck to its task by payload. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const uint8_t *const *pub;
    size_t pub_len, pub_n, pub_done, pub_next;
    int *pub_status;
} nats_conn;

static int nats_dial(const bench_cfg *cfg, natsConnection **nc, char *err,
                     size_t err_len)
{
    char url[160];
    natsStatus s;

    snprintf(url, sizeof(url), "nats://%s", cfg->addr);
    s = natsConnection_ConnectTo(nc, url);
    if (s != NATS_OK) {
        snprintf(err, err_len, "connect %s: %s", cfg->addr,
                 natsStatus_GetText(s));
        return BENCH_EFAIL;
    }
    return 0;
}

static int nats_setup(const bench_cfg *cfg, char *err, size_t err_len)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsStreamConfig sc;
    jsConsumerConfig cc;
    jsStreamInfo *si = NULL;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    const char *subjects[1] = {cfg->queue};
    natsStatus s;
    int rc = BENCH_EFAIL;

    if (nats_dial(cfg, &nc, err, err_len) != 0)
        return BENCH_EFAIL;
    s = natsConnection_JetStream(&js, nc, NULL);
    if (s != NATS_OK) {
        snprintf(err, err_len, "JetStream: %s", natsStatus_GetText(s));
        goto close_nc;
    }
    jsStreamConfig_Init(&sc);
    sc.Name = cfg->queue;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Retention = js_WorkQueuePolicy;
    sc.Storage = js_FileStorage;
    s = js_AddStream(&si, js, &sc, NULL, &jerr);
    if (s != NATS_OK) {
        snprintf(err, err_len, "add stream: %s (%d)", natsStatus_GetText(s),
                 (int)jerr);
        goto destroy_js;
    }
    jsConsumerConfig_Init(&cc);
    cc.Durable = NATS_CONSUMER;
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = (int64_t)cfg->lease_ms * 1000000;
    cc.MaxAckPending = 1 << 20;
    s = js_AddConsumer(&ci, js, cfg->queue, &cc, NULL, &jerr);
    if (s != NATS_OK) {
        snprintf(err, err_len, "add consumer: %s (%d)", natsStatus_GetText(s),
                 (int)jerr);
        goto destroy_js;
    }
    rc = 0;
destroy_js:
    jsStreamInfo_Destroy(si);
    jsConsumerInfo_Destroy(ci);
    jsCtx_Destroy(js);
close_nc:
    natsConnection_Destroy(nc);
    return rc;
}

static void nats_teardown(const bench_cfg *cfg)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    char err[256];

    if (nats_dial(cfg, &nc, err, sizeof(err)) != 0)
        return;
    if (natsConnection_JetStream(&js, nc, NULL) == NATS_OK)
        js_DeleteStream(js, cfg->queue, NULL, NULL);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
}

/* Called on the client's thread for every asynchronously published
 * message, with its PubAck (pa) or its error (pae). */
static void nats_on_pub_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa,
                            jsPubAckErr *pae, void *closure)
{
    nats_conn *k = closure;
    const char *data = natsMsg_GetData(msg);
    size_t len = (size_t)natsMsg_GetDataLength(msg);

    (void)js;
    pthread_mutex_lock(&k->mu);
    /* PubAcks come in order, so the next unanswered task is the likely
     * match; a late answer from an earlier batch matches nothing. */
    for (size_t tried = 0; tried < k->pub_n; tried++) {
        size_t i = (k->pub_next + tried) % k->pub_n;

        if (len == k->pub_len && memcmp(data, k->pub[i], len) == 0) {
            if (pa != NULL) {
                k->pub_status[i] = 0;
            } else {
                k->pub_status[i] = BENCH_EFAIL;
                bench_fail(&k->base, 0, "publish: %s (%d)",
                           pae != NULL && pae->ErrText != NULL ? pae->ErrText
                                                               : "failed",
                           pae != NULL ? (int)pae->ErrCode : 0);
            }
            k->pub_done++;
            k->pub_next = i + 1;
            break;
        }
    }
    if (k->pub_done == k->pub_n)
        pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
    natsMsg_Destroy(msg);
}

static void nats_close(bench_conn *bc)
{
    nats_conn *k = (nats_conn *)bc;

    if (k == NULL)
        return;
    natsMsgList_Destroy(&k->pulled);
    natsSubscription_Destroy(k->sub);
    jsCtx_Destroy(k->js);
    natsConnection_Destroy(k->nc);
    pthread_mutex_destroy(&k->mu);
    pthread_cond_destroy(&k->cv);
    free(k->msgs);
    free(k);
}

static int nats_connect(const bench_cfg *cfg, const char *role, uint32_t index,
                        bench_conn **out, char *err, size_t err_len)
{
    nats_conn *k = calloc(1, sizeof(*k));
    jsOptions jo;
    jsSubOptions so;
    jsErrCode jerr = 0;
    natsStatus s;

    (void)index;
    if (k == NULL)
        return BENCH_EFAIL;
    k->base.ad = &bench_nats;
    k->cfg = cfg;
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    k->msgs = calloc(cfg->batch, sizeof(*k->msgs));
    if (k->msgs == NULL) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    if (nats_dial(cfg, &k->nc, err, err_len) != 0)
        goto fail;
    jsOptions_Init(&jo);
    jo.Wait = NATS_WAIT_MS;
    jo.PublishAsync.MaxPending = (int64_t)cfg->batch * 2;
    jo.PublishAsync.AckHandler = nats_on_pub_ack;
    jo.PublishAsync.AckHandlerClosure = k;
    s = natsConnection_JetStream(&k->js, k->nc, &jo);
    if (s != NATS_OK) {
        snprintf(err, err_len, "JetStream: %s", natsStatus_GetText(s));
        goto fail;
    }
    if (strcmp(role, "consumer") == 0) {
        jsSubOptions_Init(&so);
        so.Stream = cfg->queue;
        so.Consumer = NATS_CONSUMER;
        s = js_PullSubscribe(&k->sub, k->js, cfg->queue, NATS_CONSUMER, NULL,
                             &so, &jerr);
        if (s != NATS_OK) {
            snprintf(err, err_len, "pull subscribe: %s (%d)",
                     natsStatus_GetText(s), (int)jerr);
            goto fail;
        }
    }
    *out = &k->base;
    return 0;
fail:
    nats_close(&k->base);
    return BENCH_EFAIL;
}

static int nats_put(bench_conn *bc, const uint8_t *payload, size_t len)
{
    nats_conn *k = (nats_conn *)bc;
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    natsStatus s;

    s = js_Publish(&pa, k->js, k->cfg->queue, payload, (int)len, NULL, &jerr);
    jsPubAck_Destroy(pa);
    if (s != NATS_OK)
        return bench_fail(bc, BENCH_EFAIL, "publish: %s (%d)",
                          natsStatus_GetText(s), (int)jerr);
    return 0;
}

static int nats_put_batch(bench_conn *bc, const uint8_t *const *payloads,
                          size_t len, size_t n, int *status)
{
    nats_conn *k = (nats_conn *)bc;
    jsPubOptions po;
    struct timespec until;
    natsStatus s;
    int failed = 0, rc = 0;

    if (n > k->cfg->batch)
        return BENCH_ETOO_MANY;
    pthread_mutex_lock(&k->mu);
    for (size_t i = 0; i < n; i++)
        status[i] = BENCH_EFAIL; /* until its PubAck says otherwise */
    k->pub = payloads;
    k->pub_len = len;
    k->pub_n = n;
    k->pub_done = 0;
    k->pub_next = 0;
    k->pub_status = status;
    pthread_mutex_unlock(&k->mu);
    for (size_t i = 0; i < n; i++) {
        s = js_PublishAsync(k->js, k->cfg->queue, payloads[i], (int)len, NULL);
        if (s != NATS_OK) {
            rc = bench_fail(bc, BENCH_EFAIL, "publish async: %s",
                            natsStatus_GetText(s));
            break;
        }
    }
    jsPubOptions_Init(&po);
    po.MaxWait = NATS_WAIT_MS;
    s = js_PublishAsyncComplete(k->js, &po);
    if (s != NATS_OK && rc == 0)
        rc = bench_fail(bc, BENCH_EFAIL, "publish async complete: %s",
                        natsStatus_GetText(s));
    /* The handler of the last PubAck may still be running. */
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 1;
    pthread_mutex_lock(&k->mu);
    while (rc == 0 && k->pub_done < k->pub_n)
        if (pthread_cond_timedwait(&k->cv, &k->mu, &until) != 0)
            break;
    for (size_t i = 0; i < n; i++)
        if (status[i] != 0)
            failed++;
    k->pub_n = 0; /* late answers match nothing */
    pthread_mutex_unlock(&k->mu);
    return rc < 0 ? rc : failed;
}

static int nats_pull(bench_conn *bc, uint32_t max, bench_msg **msgs, size_t *n)
{
    nats_conn *k = (nats_conn *)bc;
    jsErrCode jerr = 0;
    natsStatus s;

    natsMsgList_Destroy(&k->pulled);
    memset(&k->pulled, 0, sizeof(k->pulled));
    if (max > k->cfg->batch)
        return BENCH_ETOO_MANY;
    s = natsSubscription_Fetch(&k->pulled, k->sub, (int)max,
                               k->cfg->wait_ms > 0 ? k->cfg->wait_ms : 1,
                               &jerr);
    if (s == NATS_TIMEOUT) {
        *msgs = k->msgs;
        *n = 0;
        return 0;
    }
    if (s != NATS_OK)
        return bench_fail(bc, BENCH_EFAIL, "fetch: %s (%d)",
                          natsStatus_GetText(s), (int)jerr);
    for (int i = 0; i < k->pulled.Count; i++) {
        natsMsg *m = k->pulled.Msgs[i];

        k->msgs[i] = (bench_msg){0};
        k->msgs[i].payload = (const uint8_t *)natsMsg_GetData(m);
        k->msgs[i].payload_len = (size_t)natsMsg_GetDataLength(m);
        k->msgs[i].handle = m;
    }
    *msgs = k->msgs;
    *n = (size_t)k->pulled.Count;
    return 0;
}

static int nats_ack(bench_conn *bc, bench_msg *m)
{
    nats_conn *k = (nats_conn *)bc;
    jsErrCode jerr = 0;
    natsStatus s;

    if (k->cfg->durable)
        s = natsMsg_AckSync(m->handle, NULL, &jerr);
    else
        s = natsMsg_Ack(m->handle, NULL);
    if (s != NATS_OK)
        return bench_fail(bc, BENCH_EFAIL, "ack: %s (%d)",
                          natsStatus_GetText(s), (int)jerr);
    return 0;
}

static int nats_ack_batch(bench_conn *bc, bench_msg *msgs, size_t n,
                          int *status)
{
    int failed = 0;

    for (size_t i = 0; i < n; i++) {
        status[i] = nats_ack(bc, &msgs[i]);
        if (status[i] != 0)
            failed++;
    }
    return failed;
}

const bench_adapter bench_nats = {
    .name = "nats",
    .default_addr = "127.0.0.1:4222",
    .setup = nats_setup,
    .teardown = nats_teardown,
    .connect = nats_connect,
    .close = nats_close,
    .put = nats_put,
    .put_batch = nats_put_batch,
    .pull = nats_pull,
    .ack = nats_ack,
    .ack_batch = nats_ack_batch,
};
