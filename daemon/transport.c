/*
 * transport.c — one libcurl multi handle on a thread of its own.
 *
 * The transport has two sides. The owner side lives on the loop that
 * created it (the daemon's loop): the lanes' names and limits, the counters,
 * closing, spare transfers kept for reuse, and every completion callback.
 * The worker side is a thread with
 * a libuv loop of its own that drives the multi handle with curl's multi-uv
 * pattern: libcurl's socket callback gets one uv_poll_t per socket
 * (remembered with curl_multi_assign(), kept between transfers, see
 * poll_for), its timer callback arms one uv_timer_t, and
 * curl_multi_socket_action is only ever called from those libuv callbacks,
 * never re-entrantly.
 *
 * The two sides meet in two lists under one mutex. A started transfer goes
 * into `inbox` and the worker is woken with uv_async_send; the worker owns
 * the lanes: each lane's FIFO and its count of transfers in the multi
 * handle, so it starts a queued transfer the moment one of the same lane
 * finishes, whatever the owner's thread is doing (an fsync, a batch of
 * decisions), and holds the cap over all lanes (cad_transport_set_total).
 * The owner may ask it to hand back what waits in a lane, unstarted
 * (cad_transport_clear_lane). A finished transfer is removed from the multi
 * handle by the worker, put into `outbox`, and the owner is woken the same
 * way; the owner reads the response code, runs the completion callback
 * (which may start more transfers) and resets the transfer for reuse. A transfer belongs to
 * one side at a time, so its easy handle and response buffers are never
 * touched by both threads at once; the mutex orders each hand-over. So
 * libcurl's work and the kernel's loopback TCP run beside the daemon's own
 * work (decisions, SQLite, plugins) instead of taking turns with it.
 *
 * The response is collected by our own write and header callbacks, on the
 * worker: headers of the last response only (a 100 Continue or a proxy's
 * reply is dropped when the next status line arrives), the body up to
 * CAD_PLUGIN_BODY_MAX bytes.
 *
 * Closing is bounded: the worker hands queued transfers back as cancelled
 * at once; in-flight ones get a grace period, then the worker removes them
 * from the multi handle and hands them back as cancelled. Once the owner has
 * every transfer back, the worker cleans up libcurl, closes its handles and
 * ends; the owner joins it, closes its own handles, and the last close
 * callback frees the transport.
 */
#include "transport.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HEADERS_MAX            (64 * 1024)
#define CONNECT_TIMEOUT_MAX_MS 10000

/* A lane as both sides see it, under the mutex: the owner sets its limit
 * and asks for it to be cleared; the worker reports its counts. */
typedef struct lane {
    uint32_t concurrency;
    bool clear;           /* cancel what waits in it (cad_transport_clear_lane) */
    int running, waiting; /* as the worker last handed back */
} lane_t;

/* The worker's state of a lane. */
typedef struct wlane {
    uint32_t concurrency;
    uint32_t in_flight, waiting;
    cad_transfer_t *queue_head, *queue_tail;
} wlane_t;

/* A socket libcurl told us about, watched by the worker's loop. */
typedef struct poll_ctx poll_ctx_t;

/* A singly linked FIFO of transfers. */
typedef struct xfer_list {
    cad_transfer_t *head, *tail;
} xfer_list_t;

struct cad_transport {
    /* owner side: only the owner's loop thread touches these */
    uv_loop_t *loop;
    uv_async_t done_async;  /* the worker handed transfers back, or ended */
    uv_timer_t grace_timer; /* closing: cancels what is still running */
    int64_t started, completed, failed;
    int outstanding;      /* started, not yet back from the worker */
    int most_outstanding; /* its high-water mark */
    bool closing, stop_sent, joined;
    int open_handles;      /* owner handles not yet closed */
    cad_transfer_t *spare; /* finished transfers kept for reuse, easy handles reset */
    int n_spare;
    void (*closed)(void *arg);
    void *closed_arg;

    /* shared, under `mu` */
    uv_mutex_t mu;
    xfer_list_t inbox;  /* owner -> worker: started */
    xfer_list_t outbox; /* worker -> owner: finished */
    lane_t *lanes;      /* added by the owner only, so it reads n_lanes without the lock */
    int n_lanes;
    uint32_t total_limit; /* transfers in the multi handle over all lanes; 0 = no limit */
    long max_connects;    /* CURLMOPT_MAXCONNECTS wanted; applied by the worker */
    bool cancel_queued, cancel_running, stop_requested, worker_ended;

    /* worker side: only the worker thread touches these once it runs */
    uv_thread_t thread;
    uv_loop_t wloop;
    uv_async_t work_async; /* the owner handed transfers over, or asks to cancel/stop */
    uv_timer_t timer;      /* libcurl's timeout */
    CURLM *multi;
    wlane_t *wlanes;
    int n_wlanes;
    cad_transfer_t *active; /* doubly linked list of transfers in the multi handle */
    poll_ctx_t **polls;     /* by socket number: a poll handle kept between transfers */
    int n_polls;
    int in_flight;  /* over all lanes, against `total` */
    uint32_t total; /* total_limit as last seen */
    bool refusing;  /* closing: every transfer that arrives or waits is cancelled */
    long applied_connects;
};

struct cad_transfer {
    cad_transport_t *t;
    int lane;
    CURL *easy;
    cad_transfer_done_cb cb;
    void *arg;
    cad_transfer_t *next, *prev; /* one list at a time: inbox, lane queue, active, outbox */
    CURLcode result;             /* set by the worker when it hands the transfer back */
    bool cancelled;              /* cancelled before it finished (closing or on request) */
    const char *failure;         /* static text replacing curl's error, or NULL */
    char errbuf[CURL_ERROR_SIZE];
    char *body;
    size_t body_len, body_cap;
    bool body_truncated;
    char *headers;
    size_t headers_len, headers_cap;
};

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

/* Most finished transfers kept for reuse: as many as were ever started and
 * not yet finished at once (the owner's high-water mark), so a steady load
 * reuses its transfers without keeping more than it needed. */
static int spare_max(const cad_transport_t *t)
{
    return t->most_outstanding;
}

/* A transfer with a fresh easy handle: a spare one (its handle reset to
 * libcurl's defaults, its response buffers kept) or a new one. */
static cad_transfer_t *transfer_get(cad_transport_t *t)
{
    cad_transfer_t *x = t->spare;
    if (x) {
        t->spare = x->next;
        t->n_spare--;
        CURL *easy = x->easy;
        char *body = x->body, *headers = x->headers;
        size_t body_cap = x->body_cap, headers_cap = x->headers_cap;
        memset(x, 0, sizeof *x);
        x->easy = easy;
        x->body = body;
        x->body_cap = body_cap;
        x->headers = headers;
        x->headers_cap = headers_cap;
        return x;
    }
    x = calloc(1, sizeof *x);
    if (x && !(x->easy = curl_easy_init())) {
        free(x);
        x = NULL;
    }
    return x;
}

static void transfer_destroy(cad_transfer_t *x)
{
    curl_easy_cleanup(x->easy);
    free(x->body);
    free(x->headers);
    free(x);
}

cad_transfer_t *cad_transfer_new(cad_transport_t *t, int lane, int64_t timeout_ms, char *err)
{
    if (lane < 0 || lane >= t->n_lanes) {
        cad_fail(err, CAD_EINVAL, "transport: no lane %d (%d lanes)", lane, t->n_lanes);
        return NULL;
    }
    cad_transfer_t *x = transfer_get(t);
    if (!x) {
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
    cad_transport_t *t = x->t;
    if (t->closing || t->n_spare >= spare_max(t)) {
        transfer_destroy(x);
        return;
    }
    /* Back to libcurl's defaults: nothing of this request (URL, headers,
     * body, the plugin's callbacks) survives; connections stay in the
     * multi handle's cache. */
    curl_easy_reset(x->easy);
    x->next = t->spare;
    t->spare = x;
    t->n_spare++;
}

static void spares_free(cad_transport_t *t)
{
    while (t->spare) {
        cad_transfer_t *x = t->spare;
        t->spare = x->next;
        transfer_destroy(x);
    }
    t->n_spare = 0;
}

/* Runs the completion callback of a transfer the worker handed back and
 * keeps the transfer for reuse (or frees it). */
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
        .headers = x->headers_len ? x->headers : "", /* a reused buffer may hold old text */
        .headers_len = x->headers_len,
        .body = x->body_len ? x->body : "",
        .body_len = x->body_len,
        .body_truncated = x->body_truncated,
    };
    t->completed++;
    if (result != CURLE_OK)
        t->failed++;
    if (x->cb)
        x->cb(x, &resp, x->arg);
    cad_transfer_free(x);
}

static void cancel(cad_transfer_t *x, const char *why)
{
    x->result = CURLE_ABORTED_BY_CALLBACK;
    x->failure = why;
    x->cancelled = true;
}

#define CANCEL_CLOSING "cancelled: the daemon is shutting down"
#define CANCEL_WAITING "cancelled: taken back before it started"

bool cad_transfer_was_cancelled(const cad_transfer_t *xfer)
{
    return xfer->cancelled;
}

/* Keeps the owner's loop alive while the worker holds transfers of ours or,
 * when closing, until the worker has ended. */
static void update_ref(cad_transport_t *t)
{
    if (t->outstanding > 0 || (t->closing && !t->joined))
        uv_ref((uv_handle_t *)&t->done_async);
    else
        uv_unref((uv_handle_t *)&t->done_async);
}

/* Asks the worker, under the mutex, to cancel or stop; `flag` is one of the
 * shared request flags. */
static void ask_worker(cad_transport_t *t, bool *flag)
{
    uv_mutex_lock(&t->mu);
    *flag = true;
    uv_mutex_unlock(&t->mu);
    uv_async_send(&t->work_async);
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
    t->started++;
    if (++t->outstanding > t->most_outstanding)
        t->most_outstanding = t->outstanding;
    update_ref(t);
    uv_mutex_lock(&t->mu);
    list_push(&t->inbox, x);
    uv_mutex_unlock(&t->mu);
    uv_async_send(&t->work_async);
    return 0;
}

/* ---- the worker: lanes, libuv <-> libcurl ------------------------------------ */

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

/* Gives finished transfers back to the owner (waking it when there are any)
 * and shows the worker's counts. */
static void hand_back(cad_transport_t *t, xfer_list_t *done)
{
    bool wake = done->head != NULL;
    uv_mutex_lock(&t->mu);
    list_append(&t->outbox, done);
    for (int i = 0; i < t->n_wlanes; i++) {
        t->lanes[i].running = (int)t->wlanes[i].in_flight;
        t->lanes[i].waiting = (int)t->wlanes[i].waiting;
    }
    uv_mutex_unlock(&t->mu);
    if (wake)
        uv_async_send(&t->done_async);
}

static int on_socket_opened(void *userp, curl_socket_t s, curlsocktype purpose);
static int on_socket_closing(void *userp, curl_socket_t s);

/* Adds queued transfers of a lane to the multi handle while it has room. */
static void pump_lane(cad_transport_t *t, wlane_t *l, xfer_list_t *done)
{
    while (!t->refusing && l->queue_head && l->in_flight < l->concurrency &&
           (t->total == 0 || (uint32_t)t->in_flight < t->total)) {
        cad_transfer_t *x = l->queue_head;
        l->queue_head = x->next;
        if (!l->queue_head)
            l->queue_tail = NULL;
        l->waiting--;
        x->next = x->prev = NULL;
        /* Set here, after the plugin's options: the kept poll handles
         * depend on hearing of every connection's socket (poll_for). */
        curl_easy_setopt(x->easy, CURLOPT_SOCKOPTFUNCTION, on_socket_opened);
        curl_easy_setopt(x->easy, CURLOPT_SOCKOPTDATA, t);
        curl_easy_setopt(x->easy, CURLOPT_CLOSESOCKETFUNCTION, on_socket_closing);
        curl_easy_setopt(x->easy, CURLOPT_CLOSESOCKETDATA, t);
        CURLMcode mc = curl_multi_add_handle(t->multi, x->easy);
        if (mc != CURLM_OK) {
            x->result = CURLE_FAILED_INIT;
            x->failure = curl_multi_strerror(mc); /* static text */
            list_push(done, x);
            continue;
        }
        l->in_flight++;
        t->in_flight++;
        x->next = t->active;
        if (t->active)
            t->active->prev = x;
        t->active = x;
    }
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
        wlane_t *l = &t->wlanes[x->lane];
        l->in_flight--;
        t->in_flight--;
        x->result = result;
        list_push(&done, x);
        pump_lane(t, l, &done);
    }
    if (t->total) /* a slot over all lanes may have freed: any lane may take it */
        for (int i = 0; i < t->n_wlanes; i++)
            pump_lane(t, &t->wlanes[i], &done);
    hand_back(t, &done);
}

struct poll_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    cad_transport_t *t;
    int events;      /* UV_READABLE/UV_WRITABLE being watched; 0: stopped */
    bool connection; /* a connection's socket, opened and closed through us */
    bool idle;       /* kept watched after CURL_POLL_REMOVE, see poll_for */
};

static void on_poll_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Stops watching p's socket: libuv removes it from epoll. */
static void poll_stop(poll_ctx_t *p)
{
    if (p->events) {
        uv_poll_stop(&p->poll);
        p->events = 0;
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    poll_ctx_t *p = h->data;
    cad_transport_t *t = p->t;
    if (status < 0)
        p->events = 0; /* libuv stopped the handle itself */
    if (p->idle) {
        /* An idle connection in libcurl's cache became readable: the peer
         * closed it (or sent something unasked). libcurl finds out when it
         * next checks the connection; stop watching so the event, level-
         * triggered, does not come back on every turn. */
        poll_stop(p);
        return;
    }
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

/* The poll handle of socket s. Handles are kept by socket number and never
 * closed before the worker ends: a uv_poll_t holds nothing of a socket but
 * its number. Every uv_poll_start and uv_poll_stop costs epoll_ctl calls
 * (libuv removes the descriptor and adds it again on each start), and a
 * connection reused for the next transfer, the usual case, is watched for
 * reading again; so a connection's socket stays watched for reading
 * between transfers: CURL_POLL_REMOVE only marks it idle, the next
 * transfer's CURL_POLL_IN changes nothing, and an idle socket that becomes
 * readable (the peer closed it) is stopped then (on_poll). This needs to
 * know when such a socket is closed, as epoll forgets a closed descriptor
 * and a new socket may get its number: libcurl opens and closes the
 * sockets of its connections through on_socket_opened and
 * on_socket_closing (set on every transfer), which stop the handle. Any
 * other socket (the threaded resolver's wake-up pair, closed without
 * telling us) is stopped at CURL_POLL_REMOVE. */
static poll_ctx_t *poll_for(cad_transport_t *t, curl_socket_t s)
{
    if (s < 0)
        return NULL;
    if (s >= t->n_polls) {
        int n = t->n_polls ? t->n_polls : 64;
        while (n <= s)
            n *= 2;
        poll_ctx_t **polls = realloc(t->polls, (size_t)n * sizeof *polls);
        if (!polls)
            return NULL;
        memset(polls + t->n_polls, 0, (size_t)(n - t->n_polls) * sizeof *polls);
        t->polls = polls;
        t->n_polls = n;
    }
    poll_ctx_t *p = t->polls[s];
    if (p)
        return p;
    p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->fd = s;
    p->t = t;
    if (uv_poll_init_socket(&t->wloop, &p->poll, s) != 0) {
        free(p);
        return NULL;
    }
    p->poll.data = p;
    t->polls[s] = p;
    return p;
}

/* Closes every kept poll handle (the worker is ending). */
static void polls_close(cad_transport_t *t)
{
    for (int i = 0; i < t->n_polls; i++)
        if (t->polls[i]) {
            uv_close((uv_handle_t *)&t->polls[i]->poll, on_poll_closed);
            t->polls[i] = NULL;
        }
    free(t->polls);
    t->polls = NULL;
    t->n_polls = 0;
}

/* libcurl opened socket s for a connection (CURLOPT_SOCKOPTFUNCTION). A
 * handle kept with its number may have watched a socket closed without
 * telling us; it registers the new one afresh. */
static int on_socket_opened(void *userp, curl_socket_t s, curlsocktype purpose)
{
    (void)purpose;
    cad_transport_t *t = userp;
    poll_ctx_t *p = poll_for(t, s);
    if (p) { /* without one (out of memory) the socket is stopped at CURL_POLL_REMOVE */
        poll_stop(p);
        p->connection = true;
        p->idle = false;
    }
    return CURL_SOCKOPT_OK;
}

/* libcurl closes a connection's socket (CURLOPT_CLOSESOCKETFUNCTION): stop
 * watching it while the descriptor is still this socket, then close it. */
static int on_socket_closing(void *userp, curl_socket_t s)
{
    cad_transport_t *t = userp;
    if (s >= 0 && s < t->n_polls && t->polls[s]) {
        poll_ctx_t *p = t->polls[s];
        poll_stop(p);
        p->connection = false;
        p->idle = false;
    }
    return close(s);
}

static int on_socket(CURL *easy, curl_socket_t s, int action, void *userp, void *socketp)
{
    (void)easy;
    cad_transport_t *t = userp;
    poll_ctx_t *p = socketp;
    if (action == CURL_POLL_REMOVE) {
        if (p) {
            if (p->connection && p->events == UV_READABLE)
                p->idle = true; /* still watched, see poll_for */
            else
                poll_stop(p);
            curl_multi_assign(t->multi, s, NULL);
        }
        return 0;
    }
    if (!p) {
        if (!(p = poll_for(t, s)))
            return -1;
        curl_multi_assign(t->multi, s, p);
    }
    p->idle = false;
    int events = 0;
    if (action == CURL_POLL_IN || action == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (action == CURL_POLL_OUT || action == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    if (events != p->events) {
        uv_poll_start(&p->poll, events, on_poll);
        p->events = events;
    }
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

/* Takes the lanes added since the last look (called under the mutex). */
static void sync_lanes(cad_transport_t *t)
{
    if (t->n_lanes > t->n_wlanes) {
        wlane_t *w = realloc(t->wlanes, (size_t)t->n_lanes * sizeof *w);
        if (!w)
            return; /* tried again at the next wake-up; transfers wait in the inbox */
        memset(w + t->n_wlanes, 0, (size_t)(t->n_lanes - t->n_wlanes) * sizeof *w);
        t->wlanes = w;
        t->n_wlanes = t->n_lanes;
    }
    for (int i = 0; i < t->n_wlanes; i++)
        t->wlanes[i].concurrency = t->lanes[i].concurrency;
}

/* Cancels every transfer waiting in lane l. */
static void cancel_waiting(cad_transport_t *t, wlane_t *l, const char *why, xfer_list_t *done)
{
    while (l->queue_head) {
        cad_transfer_t *x = l->queue_head;
        l->queue_head = x->next;
        l->waiting--;
        cancel(x, why);
        list_push(done, x);
    }
    l->queue_tail = NULL;
}

/* The owner handed transfers over, or asks to cancel or to stop. */
static void on_work(uv_async_t *h)
{
    cad_transport_t *t = h->data;
    uv_mutex_lock(&t->mu);
    sync_lanes(t);
    xfer_list_t in = {NULL, NULL};
    if (t->n_wlanes == t->n_lanes) {
        in = t->inbox;
        t->inbox.head = t->inbox.tail = NULL;
    }
    if (t->cancel_queued)
        t->refusing = true;
    bool clear[t->n_wlanes > 0 ? t->n_wlanes : 1];
    for (int i = 0; i < t->n_wlanes; i++) {
        clear[i] = t->lanes[i].clear;
        t->lanes[i].clear = false;
    }
    t->total = t->total_limit;
    bool cancel_running = t->cancel_running, stop = t->stop_requested;
    t->cancel_running = false;
    long connects = t->max_connects;
    uv_mutex_unlock(&t->mu);

    if (connects != t->applied_connects) {
        curl_multi_setopt(t->multi, CURLMOPT_MAXCONNECTS, connects);
        t->applied_connects = connects;
    }
    for (cad_transfer_t *x = in.head, *next; x; x = next) {
        next = x->next;
        wlane_t *l = &t->wlanes[x->lane];
        x->next = NULL;
        if (l->queue_tail)
            l->queue_tail->next = x;
        else
            l->queue_head = x;
        l->queue_tail = x;
        l->waiting++;
    }
    xfer_list_t done = {NULL, NULL};
    for (int i = 0; i < t->n_wlanes; i++)
        if (t->refusing || clear[i])
            cancel_waiting(t, &t->wlanes[i], t->refusing ? CANCEL_CLOSING : CANCEL_WAITING, &done);
    for (int i = 0; i < t->n_wlanes; i++)
        pump_lane(t, &t->wlanes[i], &done);
    while (cancel_running && t->active) {
        cad_transfer_t *x = t->active;
        curl_multi_remove_handle(t->multi, x->easy);
        unlink_active(t, x);
        t->wlanes[x->lane].in_flight--;
        t->in_flight--;
        cancel(x, CANCEL_CLOSING);
        list_push(&done, x);
    }
    hand_back(t, &done);
    if (stop) {
        /* The owner has every transfer back (it stops only then). Cleaning
         * up may report CURL_POLL_REMOVE for cached connections, closing
         * their polls. */
        curl_multi_cleanup(t->multi);
        t->multi = NULL;
        polls_close(t);
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
    free(t->wlanes);
    t->wlanes = NULL;
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
    spares_free(t);
    uv_mutex_destroy(&t->mu);
    free(t->lanes);
    free(t);
    if (closed)
        closed(arg);
}

/* Closing: once every transfer is back, asks the worker to end; once it has,
 * joins it and closes the owner's handles. */
static void advance_close(cad_transport_t *t, bool worker_ended)
{
    if (!t->closing)
        return;
    if (!t->stop_sent && t->outstanding == 0) {
        t->stop_sent = true;
        ask_worker(t, &t->stop_requested);
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
        t->outstanding--;
        complete(x);
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
    uv_mutex_lock(&t->mu);
    lane_t *l = realloc(t->lanes, (size_t)(t->n_lanes + 1) * sizeof *l);
    if (l) {
        t->lanes = l;
        t->lanes[t->n_lanes] = (lane_t){.concurrency = concurrency ? concurrency : 1};
        /* Keep an idle connection for every transfer that may run at once.
         * libcurl's default cache is four per easy handle added, so it
         * shrinks whenever a lane drains and the next burst reconnects. */
        t->max_connects += (long)t->lanes[t->n_lanes].concurrency;
        t->n_lanes++;
    }
    uv_mutex_unlock(&t->mu);
    if (!l)
        return cad_fail(err, CAD_ENOMEM, "transport: out of memory adding lane %s", name);
    uv_async_send(&t->work_async);
    return t->n_lanes - 1;
}

void cad_transport_set_total(cad_transport_t *t, uint32_t total)
{
    uv_mutex_lock(&t->mu);
    t->total_limit = total;
    uv_mutex_unlock(&t->mu);
    uv_async_send(&t->work_async);
}

void cad_transport_clear_lane(cad_transport_t *t, int lane)
{
    if (t->closing || lane < 0 || lane >= t->n_lanes)
        return;
    uv_mutex_lock(&t->mu);
    t->lanes[lane].clear = true;
    uv_mutex_unlock(&t->mu);
    uv_async_send(&t->work_async);
}

void cad_transport_lane_counts(const cad_transport_t *t, int lane, int *running, int *waiting)
{
    *running = *waiting = 0;
    if (lane < 0 || lane >= t->n_lanes)
        return;
    cad_transport_t *mt = (cad_transport_t *)t; /* the mutex, not the transport, changes */
    uv_mutex_lock(&mt->mu);
    *running = t->lanes[lane].running;
    *waiting = t->lanes[lane].waiting;
    uv_mutex_unlock(&mt->mu);
}

void cad_transport_stats(const cad_transport_t *t, cad_transport_stats_t *out)
{
    cad_transport_t *mt = (cad_transport_t *)t; /* the mutex, not the transport, changes */
    out->started = t->started;
    out->completed = t->completed;
    out->failed = t->failed;
    uv_mutex_lock(&mt->mu);
    int in_flight = 0, queued = 0, in_inbox = 0;
    for (int i = 0; i < t->n_lanes; i++) {
        in_flight += t->lanes[i].running;
        queued += t->lanes[i].waiting;
    }
    for (const cad_transfer_t *x = t->inbox.head; x; x = x->next)
        in_inbox++;
    uv_mutex_unlock(&mt->mu);
    /* What the worker has not seen yet waits too; what it handed back and
     * the owner has not completed yet is still in flight for the caller. */
    int back = t->outstanding - in_flight - queued - in_inbox;
    out->in_flight = in_flight + (back > 0 ? back : 0);
    out->queued = queued + in_inbox;
}

static void on_grace_over(uv_timer_t *h)
{
    cad_transport_t *t = h->data;
    if (t->outstanding > 0)
        ask_worker(t, &t->cancel_running);
    advance_close(t, false);
}

void cad_transport_hurry(cad_transport_t *t)
{
    if (t && t->closing && uv_is_active((uv_handle_t *)&t->grace_timer))
        uv_timer_start(&t->grace_timer, on_grace_over, 0, 0);
}

void cad_transport_close(cad_transport_t *t, int64_t grace_ms, void (*closed)(void *arg), void *arg)
{
    if (t->closing)
        return;
    t->closing = true;
    t->closed = closed;
    t->closed_arg = arg;
    update_ref(t);
    spares_free(t);
    ask_worker(t, &t->cancel_queued); /* what waits in a lane is cancelled at once */
    /* Finish from the loop, not from the caller's stack (it may be a completion). */
    uint64_t grace = t->outstanding > 0 && grace_ms > 0 ? (uint64_t)grace_ms : 0;
    uv_timer_start(&t->grace_timer, on_grace_over, grace, 0);
}
