/* scheduler.c (module sched): the tick timer and the long-poll waiters. See
 * sched.h.
 *
 * Waiters sit in two structures: a FIFO line per queue (who is served
 * first) and one binary min-heap over all waiters by deadline (who times
 * out first; each waiter knows its heap index, so cancel is O(log n)). One
 * uv timer follows the heap's top.
 */
#include "scheduler.h"

#include <stdlib.h>
#include <string.h>

#include "fsm.h"
#include "log.h"

typedef struct sched_wq {
    char name[QUEUE_NAME_MAX];
    size_t name_len;
    sched_waiter *head, *tail;
    size_t n;
    struct sched_wq *next;
} sched_wq;

struct sched {
    uv_loop_t *loop;
    store *s;
    repl *r;
    uv_timer_t tick_timer;
    uv_timer_t wait_timer;
    bool leader;
    bool tick_in_flight;
    bool closing;
    uint64_t armed_due; /* wall ms the tick timer is armed for; 0 = none */
    sched_wq *queues;
    sched_waiter **heap;
    size_t heap_len, heap_cap;
    int handles_open;
    void (*close_done)(void *);
    void *close_arg;
};

/* ---- heap ---- */

static void heap_set(sched *sc, size_t i, sched_waiter *w)
{
    sc->heap[i] = w;
    w->heap_index = i;
}

static void heap_up(sched *sc, size_t i)
{
    sched_waiter *w = sc->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (sc->heap[parent]->deadline <= w->deadline)
            break;
        heap_set(sc, i, sc->heap[parent]);
        i = parent;
    }
    heap_set(sc, i, w);
}

static void heap_down(sched *sc, size_t i)
{
    sched_waiter *w = sc->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        uint64_t best = w->deadline;
        if (l < sc->heap_len && sc->heap[l]->deadline < best) {
            m = l;
            best = sc->heap[l]->deadline;
        }
        if (r < sc->heap_len && sc->heap[r]->deadline < best)
            m = r;
        if (m == i)
            break;
        heap_set(sc, i, sc->heap[m]);
        i = m;
    }
    heap_set(sc, i, w);
}

static int heap_push(sched *sc, sched_waiter *w)
{
    if (sc->heap_len == sc->heap_cap) {
        size_t cap = sc->heap_cap ? sc->heap_cap * 2 : 64;
        sched_waiter **p = realloc(sc->heap, cap * sizeof(*p));
        if (p == NULL)
            return CLAWQ_ENOMEM;
        sc->heap = p;
        sc->heap_cap = cap;
    }
    heap_set(sc, sc->heap_len++, w);
    heap_up(sc, sc->heap_len - 1);
    return 0;
}

static void heap_remove(sched *sc, sched_waiter *w)
{
    size_t i = w->heap_index;
    sched_waiter *last = sc->heap[--sc->heap_len];

    CLAWQ_ASSERT(i <= sc->heap_len && sc->heap[i] == w);
    if (i == sc->heap_len)
        return;
    heap_set(sc, i, last);
    if (i > 0 && sc->heap[(i - 1) / 2]->deadline > last->deadline)
        heap_up(sc, i);
    else
        heap_down(sc, i);
}

/* ---- waiters ---- */

static void on_wait_timer(uv_timer_t *t);
static void sweep_empty(sched *sc);

static void wait_timer_arm(sched *sc)
{
    uint64_t now = uv_now(sc->loop), top;

    if (sc->closing)
        return;
    if (sc->heap_len == 0) {
        uv_timer_stop(&sc->wait_timer);
        return;
    }
    top = sc->heap[0]->deadline;
    uv_timer_start(&sc->wait_timer, on_wait_timer, top > now ? top - now : 0,
                   0);
}

static void unlink_waiter(sched *sc, sched_waiter *w)
{
    sched_wq *q = w->wq;

    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
    q->n--;
    heap_remove(sc, w);
    w->registered = false;
    w->wq = NULL;
    w->prev = w->next = NULL;
}

int sched_wait(sched *sc, cq_bytes queue, sched_waiter *w, uint64_t wait_ms,
               bool front, sched_wake_cb wake)
{
    sched_wq *q;

    CLAWQ_ASSERT(!w->registered && queue.len <= QUEUE_NAME_MAX);
    for (q = sc->queues; q != NULL; q = q->next) {
        if (cq_bytes_eq(cq_bytes_of(q->name, q->name_len), queue))
            break;
    }
    if (q == NULL) {
        q = calloc(1, sizeof(*q));
        if (q == NULL)
            return CLAWQ_ENOMEM;
        memcpy(q->name, queue.ptr, queue.len);
        q->name_len = queue.len;
        q->next = sc->queues;
        sc->queues = q;
    }
    w->wake = wake;
    w->deadline = uv_now(sc->loop) + wait_ms;
    if (heap_push(sc, w) != 0)
        return CLAWQ_ENOMEM;
    w->wq = q;
    if (front) {
        w->prev = NULL;
        w->next = q->head;
        if (q->head != NULL)
            q->head->prev = w;
        else
            q->tail = w;
        q->head = w;
    } else {
        w->next = NULL;
        w->prev = q->tail;
        if (q->tail != NULL)
            q->tail->next = w;
        else
            q->head = w;
        q->tail = w;
    }
    q->n++;
    w->registered = true;
    wait_timer_arm(sc);
    return 0;
}

void sched_cancel(sched *sc, sched_waiter *w)
{
    if (!w->registered)
        return;
    unlink_waiter(sc, w);
    wait_timer_arm(sc);
}

size_t sched_waiting(const sched *sc)
{
    return sc->heap_len;
}

static void on_wait_timer(uv_timer_t *t)
{
    sched *sc = t->data;
    uint64_t now = uv_now(sc->loop);

    while (sc->heap_len > 0 && sc->heap[0]->deadline <= now) {
        sched_waiter *w = sc->heap[0];
        unlink_waiter(sc, w);
        w->wake(w, true);
    }
    sweep_empty(sc);
    wait_timer_arm(sc);
}

/* Wakes, FIFO, as many waiters of each queue as it has ready tasks. */
/* Frees the lines no waiter stands in: a client polling many names must
 * not grow the list for good. Only at the end of a pass, never while one
 * walks the list. */
static void sweep_empty(sched *sc)
{
    sched_wq **pp = &sc->queues, *q;

    while ((q = *pp) != NULL) {
        if (q->n == 0) {
            *pp = q->next;
            free(q);
        } else {
            pp = &q->next;
        }
    }
}

/* Wakes, FIFO, as many waiters of each queue as it has ready tasks, each
 * at most once per pass: a waiter that finds nothing (at its reported
 * capacity, or beaten to the tasks) lines up again behind the others and
 * waits for the next apply, instead of spinning here. */
static void wake_ready(sched *sc)
{
    sched_wq *q, *next;
    fsm_queue_stats st;
    sched_waiter **batch = NULL;
    size_t cap = 0, n, i;

    for (q = sc->queues; q != NULL; q = next) {
        next = q->next;
        if (q->n == 0)
            continue;
        if (fsm_queue_stats_get(sc->s, cq_bytes_of(q->name, q->name_len),
                                &st) != 0 ||
            st.rec.settings.paused || st.rec.counters.ready == 0)
            continue;
        n = st.rec.counters.ready < q->n ? (size_t)st.rec.counters.ready : q->n;
        if (n > cap) {
            sched_waiter **p = realloc(batch, n * sizeof(*p));
            if (p == NULL)
                break;
            batch = p;
            cap = n;
        }
        for (i = 0; i < n; i++) {
            batch[i] = q->head;
            unlink_waiter(sc, q->head);
        }
        for (i = 0; i < n; i++)
            batch[i]->wake(batch[i], false);
    }
    free(batch);
    sweep_empty(sc);
    wait_timer_arm(sc);
}

void sched_kick(sched *sc, cq_bytes queue, size_t n)
{
    sched_wq *q;

    if (!sc->leader || sc->closing)
        return;
    for (q = sc->queues; q != NULL; q = q->next)
        if (cq_bytes_eq(cq_bytes_of(q->name, q->name_len), queue))
            break;
    /* Unlink before waking: a woken waiter may line up again at once. */
    while (q != NULL && n > 0 && q->head != NULL) {
        sched_waiter *w = q->head;

        unlink_waiter(sc, w);
        n--;
        w->wake(w, false);
    }
    wait_timer_arm(sc);
}

/* Wakes every waiter: as timed out (closing), or to try again (leadership
 * lost: the retry finds out where the leader is and says so). */
static void wake_all(sched *sc, bool timed_out)
{
    while (sc->heap_len > 0) {
        sched_waiter *w = sc->heap[0];
        unlink_waiter(sc, w);
        w->wake(w, timed_out);
    }
}

/* ---- tick ---- */

static void tick_arm(sched *sc);

static void tick_done(void *arg, int status, const fsm_result *res,
                      size_t first, size_t n)
{
    sched *sc = arg;

    (void)n;
    sc->tick_in_flight = false;
    if (status != 0) {
        LOG(LOG_DEBUG, "sched.tick_failed", "status=%s",
            clawq_err_name(status));
        return;
    }
    if (res->ops[first].more)
        sc->armed_due = 0; /* more is due now: tick_arm proposes again */
    if (res->ops[first].value > 0)
        LOG(LOG_DEBUG, "sched.tick", "handled=%llu more=%d",
            (unsigned long long)res->ops[first].value, res->ops[first].more);
    tick_arm(sc);
}

static void tick_propose(sched *sc)
{
    cmd_op op;

    if (sc->tick_in_flight || !sc->leader || sc->closing)
        return;
    memset(&op, 0, sizeof(op));
    op.type = CMD_TICK;
    if (repl_submit(sc->r, &op, 1, tick_done, sc) == 0)
        sc->tick_in_flight = true;
}

static void on_tick_timer(uv_timer_t *t)
{
    sched *sc = t->data;
    sc->armed_due = 0;
    tick_propose(sc);
}

/* Arms the tick timer for the store's next due time. */
static void tick_arm(sched *sc)
{
    uint64_t due = 0, now;

    if (!sc->leader || sc->closing || sc->tick_in_flight)
        return;
    if (fsm_next_due(sc->s, &due) != 0 || due == 0) {
        uv_timer_stop(&sc->tick_timer);
        sc->armed_due = 0;
        return;
    }
    if (due == sc->armed_due)
        return;
    now = repl_now_ms(sc->r);
    if (due <= now) {
        uv_timer_stop(&sc->tick_timer);
        sc->armed_due = 0;
        tick_propose(sc);
        return;
    }
    sc->armed_due = due;
    uv_timer_start(&sc->tick_timer, on_tick_timer, due - now, 0);
}

void sched_on_applied(sched *sc)
{
    if (!sc->leader || sc->closing)
        return;
    tick_arm(sc);
    wake_ready(sc);
}

void sched_on_role(sched *sc, bool leader)
{
    sc->leader = leader;
    if (leader) {
        sc->armed_due = 0;
        tick_arm(sc);
        return;
    }
    uv_timer_stop(&sc->tick_timer);
    sc->armed_due = 0;
    wake_all(sc, false);
}

int sched_new(uv_loop_t *loop, store *s, repl *r, sched **out)
{
    sched *sc = calloc(1, sizeof(*sc));

    if (sc == NULL)
        return CLAWQ_ENOMEM;
    sc->loop = loop;
    sc->s = s;
    sc->r = r;
    uv_timer_init(loop, &sc->tick_timer);
    uv_timer_init(loop, &sc->wait_timer);
    sc->tick_timer.data = sc;
    sc->wait_timer.data = sc;
    sc->handles_open = 2;
    *out = sc;
    return 0;
}

static void sched_handle_closed(uv_handle_t *h)
{
    sched *sc = h->data;
    sched_wq *q, *next;

    if (--sc->handles_open > 0)
        return;
    for (q = sc->queues; q != NULL; q = next) {
        next = q->next;
        free(q);
    }
    free(sc->heap);
    if (sc->close_done != NULL)
        sc->close_done(sc->close_arg);
    free(sc);
}

void sched_close(sched *sc, void (*done)(void *arg), void *arg)
{
    sc->leader = false;
    wake_all(sc, true);
    sc->closing = true;
    sc->close_done = done;
    sc->close_arg = arg;
    uv_close((uv_handle_t *)&sc->tick_timer, sched_handle_closed);
    uv_close((uv_handle_t *)&sc->wait_timer, sched_handle_closed);
}
