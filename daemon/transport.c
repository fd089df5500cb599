/*
 * transport.c — one libcurl multi handle on a thread of its own.
 *
 * The transport has two sides. The owner side lives on the loop that
 * created it (the daemon's loop): lanes, their FIFO queues, the counters,
 * closing, and every completion callback. The worker side is a thread with
 * a libuv loop of its own that drives the multi handle with curl's multi-uv
 * pattern: libcurl's socket callback gets one uv_poll_t per socket
 * (remembered with curl_multi_assign(), closed on CURL_POLL_REMOVE), its
 * timer callback arms one uv_timer_t, and curl_multi_socket_action is only
 * ever called from those libuv callbacks, never re-entrantly.
 *
 * The two sides meet in two lists under one mutex. A transfer whose lane
 * has room goes into `inbox` and the worker is woken with uv_async_send;
 * it adds the easy handle to the multi handle. A finished transfer is
 * removed from the multi handle by the worker, put into `outbox`, and the
 * owner is woken the same way; the owner reads the response code, runs the
 * completion callback (which may start more transfers) and frees the
 * transfer. A transfer belongs to one side at a time, so its easy handle
 * and response buffers are never touched by both threads at once; the
 * mutex orders each hand-over. So libcurl's work and the kernel's loopback
 * TCP run beside the daemon's own work (decisions, SQLite, plugins) instead
 * of taking turns with it on one core.
 *
 * The response is collected by our own write and header callbacks, on the
 * worker: headers of the last response only (a 100 Continue or a proxy's
 * reply is dropped when the next status line arrives), the body up to
 * CAD_PLUGIN_BODY_MAX bytes.
 *
 * Closing is bounded: queued transfers are cancelled at once, in-flight ones
 * get a grace period, then the worker removes them from the multi handle and
 * hands them back as cancelled. Once nothing is in flight the worker cleans
 * up libcurl, closes its handles and ends; the owner joins it, closes its
 * own handles, and the last close callback frees the transport.
 */
#include "transport.h"

#include "log.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEADERS_MAX            (64 * 1024)
#define CONNECT_TIMEOUT_MAX_MS 10000

typedef struct lane {
    char name[64];
    uint32_t concurrency;
    uint32_t in_flight;
    cad_transfer_t *queue_head, *queue_tail;
} lane_t;

/* A singly linked FIFO of transfers. */
typedef struct xfer_list {
    cad_transfer_t *head, *tail;
} xfer_list_t;

struct cad_transport {
    /* owner side: only the owner's loop thread touches these */
    uv_loop_t *loop;
    uv_async_t done_async;  /* the worker handed transfers back, or ended */
    uv_timer_t grace_timer; /* closing: cancels what is still running */
    lane_t *lanes;
    int n_lanes;
    cad_transport_stats_t stats;
    bool closing, stop_sent, joined;
    int open_handles; /* owner handles not yet closed */
    void (*closed)(void *arg);
    void *closed_arg;

    /* shared, under `mu` */
    uv_mutex_t mu;
    xfer_list_t inbox;  /* owner -> worker: add to the multi handle */
    xfer_list_t outbox; /* worker -> owner: finished */
    long max_connects;  /* CURLMOPT_MAXCONNECTS wanted; applied by the worker */
    bool cancel_requested, stop_requested, worker_ended;

    /* worker side: only the worker thread touches these once it runs */
    uv_thread_t thread;
    uv_loop_t wloop;
    uv_async_t work_async; /* the owner handed transfers over, or asks to cancel/stop */
    uv_timer_t timer;      /* libcurl's timeout */
    CURLM *multi;
    cad_transfer_t *active; /* doubly linked list of transfers in the multi handle */
    long applied_connects;
};

struct cad_transfer {
    cad_transport_t *t;
    int lane;
    CURL *easy;
    cad_transfer_done_cb cb;
    void *arg;
    cad_transfer_t *next, *prev; /* one list at a time: lane queue, inbox, active, outbox */
    CURLcode result;             /* set by the worker when it hands the transfer back */
    const char *failure;         /* static text replacing curl's error, or NULL */
    char errbuf[CURL_ERROR_SIZE];
    char *body;
    size_t body_len, body_cap;
    bool body_truncated;
    char *headers;
    size_t headers_len, headers_cap;
};

typedef struct poll_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    cad_transport_t *t;
} poll_ctx_t;

static void list_push(xfer_list_t *l, cad_transfer_t *x)
{
    x->next = NULL;
    x->prev = NULL;
    if (l->tail)
        l->tail->next = x;
    else
        l->head = x;
    l->tail = x;
}

static void list_append(xfer_list_t *l, xfer_list_t *more)
{
    if (!more->head)
        return;
    if (l->tail)
        l->tail->next = more->head;
    else
        l->head = more->head;
    l->tail = more->tail;
    more->head = more->tail = NULL;
}

/* ---- response collection (worker) ------------------------------------------ */

static bool grow(char **data, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t c = *cap ? *cap : 1024;
    while (c < need)
        c *= 2;
    char *p = realloc(*data, c);
    if (!p)
        return false;
    *data = p;
    *cap = c;
    return true;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    cad_transfer_t *x = userdata;
    size_t n = size * nmemb;
    size_t room = CAD_PLUGIN_BODY_MAX - x->body_len;
    size_t take = n < room ? n : room;
    if (take < n)
        x->body_truncated = true;
    if (take > 0) {
        if (!grow(&x->body, &x->body_cap, x->body_len + take + 1))
            return 0; /* out of memory: libcurl fails the transfer with CURLE_WRITE_ERROR */
        memcpy(x->body + x->body_len, ptr, take);
        x->body_len += take;
        x->body[x->body_len] = '\0';
    }
    return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    cad_transfer_t *x = userdata;
    size_t n = size * nmemb;
    if (n >= 5 && (memcmp(ptr, "HTTP/", 5) == 0))
        x->headers_len = 0; /* a new response starts: keep only the last one's headers */
    if (x->headers_len + n > HEADERS_MAX)
        return n; /* drop what does not fit */
    if (!grow(&x->headers, &x->headers_cap, x->headers_len + n + 1))
        return 0;
    memcpy(x->headers + x->headers_len, ptr, n);
    x->headers_len += n;
    x->headers[x->headers_len] = '\0';
    return n;
}

/* ---- transfers (owner) -------------------------------------------------------- */

cad_transfer_t *cad_transfer_new(cad_transport_t *t, int lane, int64_t timeout_ms, char *err)
{
    if (lane < 0 || lane >= t->n_lanes) {
        cad_fail(err, CAD_EINVAL, "transport: no lane %d (%d lanes)", lane, t->n_lanes);
        return NULL;
    }
    cad_transfer_t *x = calloc(1, sizeof *x);
    if (!x || !(x->easy = curl_easy_init())) {
        free(x);
        cad_fail(err, CAD_ENOMEM, "transport: out of memory creating a transfer");
        return NULL;
    }
    x->t = t;
    x->lane = lane;
    if (timeout_ms <= 0)
        timeout_ms = 30000;
    long connect_ms =
        timeout_ms < CONNECT_TIMEOUT_MAX_MS ? (long)timeout_ms : CONNECT_TIMEOUT_MAX_MS;
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https,smtp,smtps");
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "cadenced/" CADENCE_VERSION);
    return x;
}

CURL *cad_transfer_easy(cad_transfer_t *xfer)
{
    return xfer->easy;
}

void cad_transfer_free(cad_transfer_t *x)
{
    if (!x)
        return;
    if (x->easy)
        curl_easy_cleanup(x->easy);
    free(x->body);
    free(x->headers);
    free(x);
}

/* Runs the completion callback of a transfer back from the worker (or never
 * handed to it) and frees the transfer. */
static void complete(cad_transfer_t *x)
{
    cad_transport_t *t = x->t;
    long code = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    CURLcode result = x->result;
    const char *error = x->failure;
    if (!error)
        error = x->errbuf[0] ? x->errbuf : (result ? curl_easy_strerror(result) : "");
    cad_plugin_response_t resp = {
        .struct_size = sizeof resp,
        .result = result,
        .error = error,
        .code = code,
        .headers = x->headers ? x->headers : "",
        .headers_len = x->headers_len,
        .body = x->body ? x->body : "",
        .body_len = x->body_len,
        .body_truncated = x->body_truncated,
    };
    t->stats.completed++;
    if (result != CURLE_OK)
        t->stats.failed++;
    if (x->cb)
        x->cb(x, &resp, x->arg);
    cad_transfer_free(x);
}

static void cancelled(cad_transfer_t *x)
{
    x->result = CURLE_ABORTED_BY_CALLBACK;
    x->failure = "cancelled: the daemon is shutting down";
}

/* Keeps the owner's loop alive while the worker holds transfers of ours or,
 * when closing, until the worker has ended. */
static void update_ref(cad_transport_t *t)
{
    if (t->stats.in_flight > 0 || (t->closing && !t->joined))
        uv_ref((uv_handle_t *)&t->done_async);
    else
        uv_unref((uv_handle_t *)&t->done_async);
}

/* Hands a transfer to the worker. */
static void hand_over(cad_transport_t *t, cad_transfer_t *x)
{
    t->lanes[x->lane].in_flight++;
    t->stats.in_flight++;
    update_ref(t);
    uv_mutex_lock(&t->mu);
    list_push(&t->inbox, x);
    uv_mutex_unlock(&t->mu);
    uv_async_send(&t->work_async);
}

/* Hands queued transfers of a lane to the worker while the lane has room. */
static void pump_lane(cad_transport_t *t, int lane)
{
    lane_t *l = &t->lanes[lane];
    while (!t->closing && l->queue_head && l->in_flight < l->concurrency) {
        cad_transfer_t *x = l->queue_head;
        l->queue_head = x->next;
        if (!l->queue_head)
            l->queue_tail = NULL;
        x->next = NULL;
        t->stats.queued--;
        hand_over(t, x);
    }
}

int cad_transport_start(cad_transport_t *t, cad_transfer_t *x, cad_transfer_done_cb cb, void *arg,
                        char *err)
{
    if (t->closing) {
        cad_transfer_free(x);
        return cad_fail(err, CAD_EBUSY, "transport: shutting down, transfer refused");
    }
    x->cb = cb;
    x->arg = arg;
    t->stats.started++;
    lane_t *l = &t->lanes[x->lane];
    if (l->in_flight < l->concurrency) {
        hand_over(t, x);
    } else {
        x->next = NULL;
        if (l->queue_tail)
            l->queue_tail->next = x;
        else
            l->queue_head = x;
        l->queue_tail = x;
        t->stats.queued++;
    }
    return 0;
}

/* ---- the worker: libuv <-> libcurl ----------------------------------------- */

static void unlink_active(cad_transport_t *t, cad_transfer_t *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        t->active = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->next = x->prev = NULL;
}

/* Gives finished transfers back to the owner and wakes it. */
static void hand_back(cad_transport_t *t, xfer_list_t *done)
{
    if (!done->head)
        return;
    uv_mutex_lock(&t->mu);
    list_append(&t->outbox, done);
    uv_mutex_unlock(&t->mu);
    uv_async_send(&t->done_async);
}

static void check_done(cad_transport_t *t)
{
    xfer_list_t done = {NULL, NULL};
    CURLMsg *msg;
    int pending;
    while ((msg = curl_multi_info_read(t->multi, &pending))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        cad_transfer_t *x = NULL;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(t->multi, easy);
        unlink_active(t, x);
        x->result = result;
        list_push(&done, x);
    }
    hand_back(t, &done);
}

static void on_poll_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    poll_ctx_t *p = h->data;
    cad_transport_t *t = p->t;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    curl_multi_socket_action(t->multi, p->fd, flags, &running);
    check_done(t);
}

static int on_socket(CURL *easy, curl_socket_t s, int action, void *userp, void *socketp)
{
    (void)easy;
    cad_transport_t *t = userp;
    poll_ctx_t *p = socketp;
    if (action == CURL_POLL_REMOVE) {
        if (p) {
            uv_poll_stop(&p->poll);
            curl_multi_assign(t->multi, s, NULL);
            uv_close((uv_handle_t *)&p->poll, on_poll_closed);
        }
        return 0;
    }
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p)
            return -1;
        p->fd = s;
        p->t = t;
        if (uv_poll_init_socket(&t->wloop, &p->poll, s) != 0) {
            free(p);
            return -1;
        }
        p->poll.data = p;
        curl_multi_assign(t->multi, s, p);
    }
    int events = 0;
    if (action == CURL_POLL_IN || action == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (action == CURL_POLL_OUT || action == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    uv_poll_start(&p->poll, events, on_poll);
    return 0;
}

static void on_timeout(uv_timer_t *h)
{
    cad_transport_t *t = h->data;
    int running;
    curl_multi_socket_action(t->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(t);
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    cad_transport_t *t = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&t->timer);
    else
        uv_timer_start(&t->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

/* The owner handed transfers over, or asks to cancel or to stop. */
static void on_work(uv_async_t *h)
{
    cad_transport_t *t = h->data;
    uv_mutex_lock(&t->mu);
    xfer_list_t in = t->inbox;
    t->inbox.head = t->inbox.tail = NULL;
    bool cancel = t->cancel_requested, stop = t->stop_requested;
    t->cancel_requested = false;
    long connects = t->max_connects;
    uv_mutex_unlock(&t->mu);

    if (connects != t->applied_connects) {
        curl_multi_setopt(t->multi, CURLMOPT_MAXCONNECTS, connects);
        t->applied_connects = connects;
    }
    xfer_list_t refused = {NULL, NULL};
    for (cad_transfer_t *x = in.head, *next; x; x = next) {
        next = x->next;
        x->next = x->prev = NULL;
        if (cancel) {
            cancelled(x);
            list_push(&refused, x);
            continue;
        }
        CURLMcode mc = curl_multi_add_handle(t->multi, x->easy);
        if (mc != CURLM_OK) {
            x->result = CURLE_FAILED_INIT;
            x->failure = curl_multi_strerror(mc); /* static text */
            list_push(&refused, x);
            continue;
        }
        x->next = t->active;
        if (t->active)
            t->active->prev = x;
        t->active = x;
    }
    while (cancel && t->active) {
        cad_transfer_t *x = t->active;
        curl_multi_remove_handle(t->multi, x->easy);
        unlink_active(t, x);
        cancelled(x);
        list_push(&refused, x);
    }
    hand_back(t, &refused);
    if (stop) {
        /* Nothing is in flight (the owner stops only then). Cleaning up may
         * report CURL_POLL_REMOVE for cached connections, closing their polls. */
        curl_multi_cleanup(t->multi);
        t->multi = NULL;
        uv_close((uv_handle_t *)&t->timer, NULL);
        uv_close((uv_handle_t *)&t->work_async, NULL);
    }
}

static void worker_main(void *arg)
{
    cad_transport_t *t = arg;
    /* Signals belong to the daemon's loop thread. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_setname_np(pthread_self(), "cad-transfers"); /* as ps -L and top -H show it */
    uv_run(&t->wloop, UV_RUN_DEFAULT);
    uv_loop_close(&t->wloop);
    uv_mutex_lock(&t->mu);
    t->worker_ended = true;
    uv_mutex_unlock(&t->mu);
    uv_async_send(&t->done_async);
}

/* ---- the owner: finished transfers, lifecycle ------------------------------- */

static void on_owner_handle_closed(uv_handle_t *h)
{
    cad_transport_t *t = h->data;
    if (--t->open_handles > 0)
        return;
    void (*closed)(void *) = t->closed;
    void *arg = t->closed_arg;
    uv_mutex_destroy(&t->mu);
    free(t->lanes);
    free(t);
    if (closed)
        closed(arg);
}

/* Closing: once nothing is in flight, asks the worker to end; once it has,
 * joins it and closes the owner's handles. */
static void advance_close(cad_transport_t *t, bool worker_ended)
{
    if (!t->closing)
        return;
    if (!t->stop_sent && t->stats.in_flight == 0) {
        t->stop_sent = true;
        uv_mutex_lock(&t->mu);
        t->stop_requested = true;
        uv_mutex_unlock(&t->mu);
        uv_async_send(&t->work_async);
    }
    if (worker_ended && !t->joined) {
        uv_thread_join(&t->thread);
        t->joined = true;
        uv_close((uv_handle_t *)&t->done_async, on_owner_handle_closed);
        uv_close((uv_handle_t *)&t->grace_timer, on_owner_handle_closed);
    }
}

static void on_done(uv_async_t *h)
{
    cad_transport_t *t = h->data;
    uv_mutex_lock(&t->mu);
    xfer_list_t done = t->outbox;
    t->outbox.head = t->outbox.tail = NULL;
    bool ended = t->worker_ended;
    uv_mutex_unlock(&t->mu);
    for (cad_transfer_t *x = done.head, *next; x; x = next) {
        next = x->next;
        x->next = NULL;
        int lane = x->lane;
        t->lanes[lane].in_flight--;
        t->stats.in_flight--;
        complete(x);
        pump_lane(t, lane);
    }
    if (!t->joined)
        update_ref(t);
    advance_close(t, ended);
}

int cad_transport_new(uv_loop_t *loop, cad_transport_t **out, char *err)
{
    *out = NULL;
    static bool curl_ready;
    if (!curl_ready) {
        CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
        if (rc != CURLE_OK)
            return cad_fail(err, CAD_EIO, "transport: libcurl initialisation failed: %s",
                            curl_easy_strerror(rc));
        curl_ready = true;
    }
    cad_transport_t *t = calloc(1, sizeof *t);
    if (!t)
        return cad_fail(err, CAD_ENOMEM, "transport: out of memory");
    int rc = uv_loop_init(&t->wloop);
    if (rc < 0) {
        free(t);
        return cad_fail(err, CAD_EIO, "transport: cannot create the transfer loop: %s",
                        uv_strerror(rc));
    }
    if (!(t->multi = curl_multi_init())) {
        uv_loop_close(&t->wloop);
        free(t);
        return cad_fail(err, CAD_ENOMEM, "transport: out of memory creating the multi handle");
    }
    uv_mutex_init(&t->mu);
    t->loop = loop;
    uv_async_init(loop, &t->done_async, on_done);
    uv_timer_init(loop, &t->grace_timer);
    t->done_async.data = t;
    t->grace_timer.data = t;
    t->open_handles = 2;
    uv_unref((uv_handle_t *)&t->done_async);
    uv_async_init(&t->wloop, &t->work_async, on_work);
    uv_timer_init(&t->wloop, &t->timer);
    t->work_async.data = t;
    t->timer.data = t;
    curl_multi_setopt(t->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(t->multi, CURLMOPT_SOCKETDATA, t);
    curl_multi_setopt(t->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(t->multi, CURLMOPT_TIMERDATA, t);
    rc = uv_thread_create(&t->thread, worker_main, t);
    if (rc < 0) {
        curl_multi_cleanup(t->multi);
        uv_close((uv_handle_t *)&t->work_async, NULL);
        uv_close((uv_handle_t *)&t->timer, NULL);
        uv_run(&t->wloop, UV_RUN_DEFAULT);
        uv_loop_close(&t->wloop);
        /* the owner's handles close through the loop, which frees t */
        t->joined = true;
        uv_close((uv_handle_t *)&t->done_async, on_owner_handle_closed);
        uv_close((uv_handle_t *)&t->grace_timer, on_owner_handle_closed);
        return cad_fail(err, CAD_EIO, "transport: cannot start the transfer thread: %s",
                        uv_strerror(rc));
    }
    *out = t;
    return 0;
}

int cad_transport_lane_add(cad_transport_t *t, const char *name, uint32_t concurrency, char *err)
{
    lane_t *l = realloc(t->lanes, (size_t)(t->n_lanes + 1) * sizeof *l);
    if (!l)
        return cad_fail(err, CAD_ENOMEM, "transport: out of memory adding lane %s", name);
    t->lanes = l;
    l = &t->lanes[t->n_lanes];
    memset(l, 0, sizeof *l);
    snprintf(l->name, sizeof l->name, "%s", name ? name : "");
    l->concurrency = concurrency ? concurrency : 1;
    /* Keep an idle connection for every transfer that may run at once.
     * libcurl's default cache is four per easy handle added, so it shrinks
     * whenever a lane drains and the next burst reconnects. */
    long connections = 0;
    for (int i = 0; i <= t->n_lanes; i++)
        connections += (long)t->lanes[i].concurrency;
    uv_mutex_lock(&t->mu);
    t->max_connects = connections;
    uv_mutex_unlock(&t->mu);
    uv_async_send(&t->work_async);
    return t->n_lanes++;
}

void cad_transport_stats(const cad_transport_t *t, cad_transport_stats_t *out)
{
    *out = t->stats;
}

static void on_grace_over(uv_timer_t *h)
{
    cad_transport_t *t = h->data;
    if (t->stats.in_flight > 0) {
        uv_mutex_lock(&t->mu);
        t->cancel_requested = true;
        uv_mutex_unlock(&t->mu);
        uv_async_send(&t->work_async);
    }
    advance_close(t, false);
}

void cad_transport_close(cad_transport_t *t, int64_t grace_ms, void (*closed)(void *arg), void *arg)
{
    if (t->closing)
        return;
    t->closing = true;
    t->closed = closed;
    t->closed_arg = arg;
    update_ref(t);
    for (int i = 0; i < t->n_lanes; i++) {
        lane_t *l = &t->lanes[i];
        while (l->queue_head) {
            cad_transfer_t *x = l->queue_head;
            l->queue_head = x->next;
            t->stats.queued--;
            cancelled(x);
            complete(x);
        }
        l->queue_tail = NULL;
    }
    /* Finish from the loop, not from the caller's stack (it may be a completion). */
    uint64_t grace = t->stats.in_flight > 0 && grace_ms > 0 ? (uint64_t)grace_ms : 0;
    uv_timer_start(&t->grace_timer, on_grace_over, grace, 0);
}
