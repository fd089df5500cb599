/*
 * transport.c — one libcurl multi handle driven by the libuv loop.
 *
 * This is curl's multi-uv pattern. libcurl tells us, through the socket
 * callback, which sockets to watch for what; each watched socket gets one
 * uv_poll_t, remembered with curl_multi_assign() and closed (then freed in
 * its close callback) on CURL_POLL_REMOVE. libcurl's timer callback arms one
 * uv_timer_t; a 0 ms timeout becomes a 0 ms timer, so curl_multi_socket_action
 * is only ever called from libuv callbacks, never re-entrantly from inside a
 * curl callback. After each action the finished transfers are drained with
 * curl_multi_info_read() and their completion callbacks run.
 *
 * Lanes give each channel its own concurrency limit: a transfer started on a
 * full lane waits in the lane's FIFO and is added to the multi handle when a
 * transfer of the same lane finishes. The response is collected by our own
 * write and header callbacks: headers of the last response only (a 100
 * Continue or a proxy's reply is dropped when the next status line arrives),
 * the body up to CAD_PLUGIN_BODY_MAX bytes.
 *
 * Closing is bounded: queued transfers are cancelled at once, in-flight ones
 * get a grace period, then are removed from the multi handle and reported as
 * cancelled; the handles close through their close callbacks and the last
 * one frees the transport.
 */
#include "transport.h"

#include "log.h"

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

struct cad_transport {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;       /* libcurl's timeout */
    uv_timer_t grace_timer; /* closing: cancels what is still running */
    lane_t *lanes;
    int n_lanes;
    cad_transfer_t *running; /* doubly linked list of transfers in the multi handle */
    cad_transport_stats_t stats;
    bool closing, finishing;
    int open_handles; /* uv handles not yet closed (timers + polls) */
    void (*closed)(void *arg);
    void *closed_arg;
};

struct cad_transfer {
    cad_transport_t *t;
    int lane;
    CURL *easy;
    cad_transfer_done_cb cb;
    void *arg;
    cad_transfer_t *next, *prev; /* lane queue (next) or running list (next, prev) */
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

static void finish_if_done(cad_transport_t *t);

/* ---- response collection ------------------------------------------------- */

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

/* ---- transfers ------------------------------------------------------------ */

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

static void complete(cad_transfer_t *x, CURLcode result, const char *error)
{
    cad_transport_t *t = x->t;
    long code = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    cad_plugin_response_t resp = {
        .struct_size = sizeof resp,
        .result = result,
        .error =
            error ? error : (x->errbuf[0] ? x->errbuf : (result ? curl_easy_strerror(result) : "")),
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

static void unlink_running(cad_transport_t *t, cad_transfer_t *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        t->running = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->next = x->prev = NULL;
    t->lanes[x->lane].in_flight--;
    t->stats.in_flight--;
}

static void add_to_multi(cad_transport_t *t, cad_transfer_t *x)
{
    lane_t *l = &t->lanes[x->lane];
    l->in_flight++;
    t->stats.in_flight++;
    x->prev = NULL;
    x->next = t->running;
    if (t->running)
        t->running->prev = x;
    t->running = x;
    CURLMcode mc = curl_multi_add_handle(t->multi, x->easy);
    if (mc != CURLM_OK) {
        cad_log_err("transport: cannot add a transfer lane=%s error=\"%s\"", l->name,
                    curl_multi_strerror(mc));
        unlink_running(t, x);
        complete(x, CURLE_FAILED_INIT, curl_multi_strerror(mc));
    }
}

/* Starts queued transfers of a lane while it has room. */
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
        add_to_multi(t, x);
    }
}

static void check_done(cad_transport_t *t)
{
    CURLMsg *msg;
    int pending;
    while (t->multi && (msg = curl_multi_info_read(t->multi, &pending))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        cad_transfer_t *x = NULL;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(t->multi, easy);
        int lane = x->lane;
        unlink_running(t, x);
        complete(x, result, NULL);
        pump_lane(t, lane);
    }
    finish_if_done(t);
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
        add_to_multi(t, x);
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

/* ---- libuv <-> libcurl ------------------------------------------------------ */

static void on_poll_closed(uv_handle_t *h)
{
    poll_ctx_t *p = h->data;
    cad_transport_t *t = p->t;
    free(p);
    t->open_handles--;
    finish_if_done(t);
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
        if (uv_poll_init_socket(t->loop, &p->poll, s) != 0) {
            free(p);
            return -1;
        }
        p->poll.data = p;
        t->open_handles++;
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
    if (!t->multi)
        return;
    curl_multi_socket_action(t->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(t);
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    cad_transport_t *t = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&t->timer);
    else
        uv_timer_start(&t->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- lifecycle -------------------------------------------------------------- */

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
    if (!t || !(t->multi = curl_multi_init())) {
        free(t);
        return cad_fail(err, CAD_ENOMEM, "transport: out of memory creating the multi handle");
    }
    t->loop = loop;
    uv_timer_init(loop, &t->timer);
    uv_timer_init(loop, &t->grace_timer);
    t->timer.data = t;
    t->grace_timer.data = t;
    t->open_handles = 2;
    curl_multi_setopt(t->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(t->multi, CURLMOPT_SOCKETDATA, t);
    curl_multi_setopt(t->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(t->multi, CURLMOPT_TIMERDATA, t);
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
    curl_multi_setopt(t->multi, CURLMOPT_MAXCONNECTS, connections);
    return t->n_lanes++;
}

void cad_transport_stats(const cad_transport_t *t, cad_transport_stats_t *out)
{
    *out = t->stats;
}

static void on_handle_closed(uv_handle_t *h)
{
    cad_transport_t *t = h->data;
    t->open_handles--;
    finish_if_done(t);
}

/* Closing, step 2: nothing runs any more; release libcurl and the handles. */
static void finish_if_done(cad_transport_t *t)
{
    if (!t->closing || t->stats.in_flight > 0)
        return;
    if (!t->finishing) {
        t->finishing = true;
        CURLM *m = t->multi;
        curl_multi_cleanup(m); /* may report CURL_POLL_REMOVE for cached connections */
        t->multi = NULL;
        uv_close((uv_handle_t *)&t->timer, on_handle_closed);
        uv_close((uv_handle_t *)&t->grace_timer, on_handle_closed);
        return;
    }
    if (t->open_handles > 0)
        return;
    void (*closed)(void *) = t->closed;
    void *arg = t->closed_arg;
    free(t->lanes);
    free(t);
    if (closed)
        closed(arg);
}

static void cancel_running(uv_timer_t *h)
{
    cad_transport_t *t = h->data;
    while (t->running) {
        cad_transfer_t *x = t->running;
        curl_multi_remove_handle(t->multi, x->easy);
        unlink_running(t, x);
        complete(x, CURLE_ABORTED_BY_CALLBACK, "cancelled: the daemon is shutting down");
    }
    finish_if_done(t);
}

void cad_transport_close(cad_transport_t *t, int64_t grace_ms, void (*closed)(void *arg), void *arg)
{
    if (t->closing)
        return;
    t->closing = true;
    t->closed = closed;
    t->closed_arg = arg;
    for (int i = 0; i < t->n_lanes; i++) {
        lane_t *l = &t->lanes[i];
        while (l->queue_head) {
            cad_transfer_t *x = l->queue_head;
            l->queue_head = x->next;
            t->stats.queued--;
            complete(x, CURLE_ABORTED_BY_CALLBACK, "cancelled: the daemon is shutting down");
        }
        l->queue_tail = NULL;
    }
    if (t->stats.in_flight > 0) {
        uv_timer_start(&t->grace_timer, cancel_running, grace_ms > 0 ? (uint64_t)grace_ms : 0, 0);
        return;
    }
    /* Finish from the loop, not from the caller's stack (it may be a completion). */
    uv_timer_start(&t->grace_timer, cancel_running, 0, 0);
}
