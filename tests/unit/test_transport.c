/*
 * test_transport.c — transport.c against a loopback HTTP server that runs on
 * the same libuv loop: many concurrent transfers complete while a timer keeps
 * ticking (nothing blocks the loop), lanes cap concurrency, timeouts fire,
 * the last response's headers and a bounded body are collected, connections
 * are reused, and closing cancels what is queued or still running.
 *
 * The server understands a few paths: /ok answers 200 at once, /slow answers
 * after 50 ms, /hang never answers, /retry answers 503 with Retry-After,
 * /big answers 200 with a 100 KiB body, /continue sends a 100 Continue first,
 * /close answers 200 with "Connection: close" and closes the connection.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmocka.h>

#include "transport.h"

/* ---- the loopback server -------------------------------------------------- */

typedef struct client client_t;

typedef struct server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_pipe_t unix_listener; /* the same server on a Unix socket */
    char unix_path[64];
    int port;
    int open_requests; /* received, not yet answered */
    int max_open_requests;
    int requests;
    int connections;
    char last_method[16];
    client_t *clients;
} server_t;

struct client {
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h; /* as the listener it came from */
    uv_timer_t delay;
    server_t *srv;
    char buf[16384];
    size_t len;
    int pending_closes;
    bool closing;
    client_t *next;
};

static void on_client_handle_closed(uv_handle_t *h)
{
    client_t *c = h->data;
    if (--c->pending_closes == 0)
        free(c);
}

static void close_client(client_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    server_t *s = c->srv;
    for (client_t **p = &s->clients; *p; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    if (uv_is_active((uv_handle_t *)&c->delay))
        s->open_requests--;
    c->pending_closes = 2;
    uv_close((uv_handle_t *)&c->delay, on_client_handle_closed);
    uv_close((uv_handle_t *)&c->h.tcp, on_client_handle_closed);
}

static void on_written(uv_write_t *req, int status)
{
    free(req->data);
    free(req);
}

static void send_text(client_t *c, const char *text, size_t len)
{
    uv_write_t *req = malloc(sizeof *req);
    char *copy = malloc(len);
    memcpy(copy, text, len);
    req->data = copy;
    uv_buf_t b = uv_buf_init(copy, (unsigned)len);
    uv_write(req, (uv_stream_t *)&c->h.tcp, &b, 1, on_written);
}

static void respond(client_t *c, int code, const char *extra_headers, const char *body,
                    size_t body_len)
{
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nX-Request: %d\r\n%s\r\n", code,
                     body_len, c->srv->requests, extra_headers);
    send_text(c, head, (size_t)n);
    if (body_len)
        send_text(c, body, body_len);
    c->srv->open_requests--;
}

static void on_close_written(uv_write_t *req, int status)
{
    client_t *c = req->handle->data;
    on_written(req, status);
    close_client(c);
}

static void on_delay(uv_timer_t *t)
{
    client_t *c = t->data;
    respond(c, 200, "", "slow", 4);
}

static void handle_request(client_t *c, const char *path)
{
    server_t *s = c->srv;
    s->requests++;
    s->open_requests++;
    if (s->open_requests > s->max_open_requests)
        s->max_open_requests = s->open_requests;
    if (strcmp(path, "/ok") == 0) {
        respond(c, 200, "", "hello", 5);
    } else if (strcmp(path, "/slow") == 0) {
        uv_timer_start(&c->delay, on_delay, 50, 0);
    } else if (strcmp(path, "/hang") == 0) {
        /* never answers; counted open until the client goes away */
        uv_timer_start(&c->delay, on_delay, 3600 * 1000, 0);
    } else if (strcmp(path, "/retry") == 0) {
        respond(c, 503, "Retry-After: 7\r\n", "busy", 4);
    } else if (strcmp(path, "/big") == 0) {
        size_t n = 100 * 1024;
        char *body = malloc(n);
        memset(body, 'b', n);
        respond(c, 200, "", body, n);
        free(body);
    } else if (strcmp(path, "/close") == 0) {
        static const char answer[] =
            "HTTP/1.1 200 X\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbye!\n";
        uv_write_t *req = malloc(sizeof *req);
        req->data = NULL;
        uv_buf_t b = uv_buf_init((char *)answer, sizeof answer - 1);
        uv_write(req, (uv_stream_t *)&c->h.tcp, &b, 1, on_close_written);
        s->open_requests--;
    } else if (strcmp(path, "/continue") == 0) {
        const char *interim = "HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n";
        send_text(c, interim, strlen(interim));
        respond(c, 201, "X-Final: yes\r\n", "made", 4);
    } else {
        respond(c, 404, "", "", 0);
    }
}

/* Parses every complete request in the buffer (keep-alive). */
static void parse(client_t *c)
{
    for (;;) {
        c->buf[c->len] = '\0';
        char *end = strstr(c->buf, "\r\n\r\n");
        if (!end)
            return;
        size_t head_len = (size_t)(end - c->buf) + 4;
        size_t body_len = 0;
        char *cl = strcasestr(c->buf, "\r\nContent-Length:");
        if (cl && cl < end)
            body_len = strtoul(cl + 17, NULL, 10);
        if (c->len < head_len + body_len)
            return;
        char path[256] = "";
        sscanf(c->buf, "%15s %255s", c->srv->last_method, path);
        memmove(c->buf, c->buf + head_len + body_len, c->len - head_len - body_len);
        c->len -= head_len + body_len;
        handle_request(c, path);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    client_t *c = h->data;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof c->buf - 1 - c->len));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    client_t *c = st->data;
    if (n < 0) {
        close_client(c);
        return;
    }
    c->len += (size_t)n;
    parse(c);
}

static void on_connection(uv_stream_t *l, int status)
{
    server_t *s = l->data;
    client_t *c = calloc(1, sizeof *c);
    c->srv = s;
    if (l->type == UV_NAMED_PIPE)
        uv_pipe_init(s->loop, &c->h.pipe, 0);
    else
        uv_tcp_init(s->loop, &c->h.tcp);
    uv_timer_init(s->loop, &c->delay);
    c->h.tcp.data = c;
    c->delay.data = c;
    uv_accept(l, (uv_stream_t *)&c->h.tcp);
    c->next = s->clients;
    s->clients = c;
    s->connections++;
    uv_read_start((uv_stream_t *)&c->h.tcp, on_alloc, on_read);
}

static void server_start(server_t *s, uv_loop_t *loop)
{
    memset(s, 0, sizeof *s);
    s->loop = loop;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    assert_int_equal(uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 128, on_connection), 0);
    struct sockaddr_in bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len);
    s->port = ntohs(bound.sin_port);
    snprintf(s->unix_path, sizeof s->unix_path, "/tmp/cadence-test-transport-%d.sock",
             (int)getpid());
    unlink(s->unix_path);
    uv_pipe_init(loop, &s->unix_listener, 0);
    s->unix_listener.data = s;
    assert_int_equal(uv_pipe_bind(&s->unix_listener, s->unix_path), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->unix_listener, 128, on_connection), 0);
}

static void server_stop(server_t *s)
{
    while (s->clients)
        close_client(s->clients);
    uv_close((uv_handle_t *)&s->listener, NULL);
    uv_close((uv_handle_t *)&s->unix_listener, NULL);
    unlink(s->unix_path);
}

/* ---- fixtures --------------------------------------------------------------- */

typedef struct result {
    int calls;
    CURLcode result;
    long code;
    char headers[2048];
    size_t body_len;
    bool truncated;
    char body[16];
    char error[256];
} result_t;

typedef struct fixture {
    uv_loop_t loop;
    server_t srv;
    cad_transport_t *t;
    uv_timer_t ticker;
    int ticks;
    int done;
    int expected;
    bool closed;
    bool over_unix; /* start() connects to the server's Unix socket */
} fixture_t;

static fixture_t *fx_current;

static void on_tick(uv_timer_t *h)
{
    fixture_t *fx = h->data;
    fx->ticks++;
}

static void on_done(cad_transfer_t *xfer, const cad_plugin_response_t *resp, void *arg)
{
    result_t *r = arg;
    r->calls++;
    r->result = resp->result;
    r->code = resp->code;
    snprintf(r->headers, sizeof r->headers, "%s", resp->headers);
    r->body_len = resp->body_len;
    r->truncated = resp->body_truncated;
    snprintf(r->body, sizeof r->body, "%s", resp->body);
    snprintf(r->error, sizeof r->error, "%s", resp->error);
    fx_current->done++;
    if (fx_current->done == fx_current->expected)
        uv_stop(&fx_current->loop);
}

static void on_closed(void *arg)
{
    fixture_t *fx = arg;
    fx->closed = true;
}

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    uv_loop_init(&fx->loop);
    server_start(&fx->srv, &fx->loop);
    char err[CAD_ERRBUF] = "";
    assert_int_equal(cad_transport_new(&fx->loop, &fx->t, err), 0);
    uv_timer_init(&fx->loop, &fx->ticker);
    fx->ticker.data = fx;
    uv_timer_start(&fx->ticker, on_tick, 5, 5);
    fx_current = fx;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    if (!fx->closed)
        cad_transport_close(fx->t, 0, on_closed, fx);
    uv_close((uv_handle_t *)&fx->ticker, NULL);
    server_stop(&fx->srv);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_true(fx->closed);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    free(fx);
    return 0;
}

static void start(fixture_t *fx, int lane, const char *path, int64_t timeout_ms, result_t *r)
{
    char err[CAD_ERRBUF] = "";
    cad_transfer_t *x = cad_transfer_new(fx->t, lane, timeout_ms, err);
    assert_non_null(x);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", fx->srv.port, path);
    curl_easy_setopt(cad_transfer_easy(x), CURLOPT_URL, url);
    if (fx->over_unix)
        curl_easy_setopt(cad_transfer_easy(x), CURLOPT_UNIX_SOCKET_PATH, fx->srv.unix_path);
    assert_int_equal(cad_transport_start(fx->t, x, on_done, r, err), 0);
}

/* Runs the loop until `n` completions, or fails after 10 s. */
static void run_until(fixture_t *fx, int n)
{
    fx->expected = n;
    uint64_t t0 = uv_now(&fx->loop);
    while (fx->done < n) {
        uv_run(&fx->loop, UV_RUN_ONCE);
        if (uv_now(&fx->loop) - t0 > 10000)
            fail_msg("only %d of %d transfers finished in 10 s", fx->done, n);
    }
}

/* Closes the transport (results still in scope) and runs until it is gone. */
static void close_and_wait(fixture_t *fx, int64_t grace_ms)
{
    cad_transport_close(fx->t, grace_ms, on_closed, fx);
    uint64_t t0 = uv_now(&fx->loop);
    while (!fx->closed && uv_now(&fx->loop) - t0 < 5000)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_true(fx->closed);
}

/* ---- tests ------------------------------------------------------------------- */

static void test_transport_single_transfer_collects_the_response(void **state)
{
    fixture_t *fx = *state;
    char err[CAD_ERRBUF];
    int lane = cad_transport_lane_add(fx->t, "web", 4, err);
    result_t r = {0};
    start(fx, lane, "/ok", 5000, &r);
    run_until(fx, 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.result, CURLE_OK);
    assert_int_equal(r.code, 200);
    assert_string_equal(r.body, "hello");
    assert_non_null(strstr(r.headers, "Content-Length: 5"));
}

/* A finished transfer's easy handle is reset and reused for the next one:
 * nothing of an earlier request (a POST) or response (body, headers) may
 * show in a later one. */
static void test_transport_reused_transfer_carries_nothing_over(void **state)
{
    fixture_t *fx = *state;
    char err[CAD_ERRBUF];
    int lane = cad_transport_lane_add(fx->t, "web", 1, err);
    result_t first = {0}, post = {0}, missing = {0};
    start(fx, lane, "/continue", 5000, &first);
    run_until(fx, 1);
    assert_string_equal(first.body, "made");
    assert_non_null(strstr(first.headers, "X-Final: yes"));

    cad_transfer_t *x = cad_transfer_new(fx->t, lane, 5000, err);
    assert_non_null(x);
    CURL *reused = cad_transfer_easy(x);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/ok", fx->srv.port);
    curl_easy_setopt(reused, CURLOPT_URL, url);
    curl_easy_setopt(reused, CURLOPT_POSTFIELDS, "a=1");
    assert_int_equal(cad_transport_start(fx->t, x, on_done, &post, err), 0);
    run_until(fx, 2);
    assert_int_equal(post.code, 200);
    assert_string_equal(fx->srv.last_method, "POST");
    assert_string_equal(post.body, "hello");
    assert_null(strstr(post.headers, "X-Final"));

    result_t get = {0};
    start(fx, lane, "/ok", 5000, &get); /* a GET again: the POST did not stay */
    run_until(fx, 3);
    assert_int_equal(get.code, 200);
    assert_string_equal(fx->srv.last_method, "GET");
    assert_string_equal(get.body, "hello");

    x = cad_transfer_new(fx->t, lane, 5000, err);
    assert_ptr_equal(cad_transfer_easy(x), reused); /* one handle, reset each time */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/missing", fx->srv.port);
    curl_easy_setopt(cad_transfer_easy(x), CURLOPT_URL, url);
    assert_int_equal(cad_transport_start(fx->t, x, on_done, &missing, err), 0);
    run_until(fx, 4);
    assert_int_equal(missing.code, 404);
    assert_int_equal(missing.body_len, 0);
    assert_string_equal(missing.body, "");
    assert_null(strstr(missing.headers, "X-Final"));
    assert_null(strstr(missing.headers, "Content-Length: 5"));
}

static void test_transport_many_concurrent_transfers_never_block_the_loop(void **state)
{
    fixture_t *fx = *state;
    char err[CAD_ERRBUF];
    int lane = cad_transport_lane_add(fx->t, "web", 8, err);
    enum { N = 64 };
    result_t r[N];
    memset(r, 0, sizeof r);
    uint64_t t0 = uv_now(&fx->loop);
    for (int i = 0; i < N; i++)
        start(fx, lane, "/slow", 5000, &r[i]);
    /* The transfer thread takes them over at once; the lane runs 8, the
     * rest wait (counts as the owner sees them, in well under 50 ms). */
    cad_transport_stats_t st;
    int running = 0, waiting = 0;
    for (int i = 0; i < 200; i++) {
        cad_transport_stats(fx->t, &st);
        cad_transport_lane_counts(fx->t, lane, &running, &waiting);
        if (st.in_flight == 8 && st.queued == N - 8 && waiting == N - 8)
            break;
        uv_sleep(1);
    }
    assert_int_equal(st.in_flight, 8);
    assert_int_equal(st.queued, N - 8);
    assert_int_equal(running, 8);
    assert_int_equal(waiting, N - 8);
    run_until(fx, N);
    uint64_t elapsed = uv_now(&fx->loop) - t0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].code, 200);
        assert_string_equal(r[i].body, "slow");
    }
    /* 64 transfers of 50 ms, 8 at a time: ~400 ms; a 5 ms timer kept ticking */
    assert_true(elapsed >= 350);
    assert_true(fx->ticks >= (int)(elapsed / 5) / 3);
    assert_true(fx->srv.max_open_requests <= 8);
    assert_true(fx->srv.max_open_requests >= 4);
    /* connections are reused: far fewer than one per transfer */
    assert_true(fx->srv.connections <= 16);
    cad_transport_stats(fx->t, &st);
    assert_int_equal(st.started, N);
    assert_int_equal(st.completed, N);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.queued, 0);
}

/* Runs the loop for `ms` milliseconds. */
static void run_for(fixture_t *fx, uint64_t ms)
{
    uint64_t t0 = uv_now(&fx->loop);
    while (uv_now(&fx->loop) - t0 < ms)
        uv_run(&fx->loop, UV_RUN_ONCE); /* the 5 ms ticker wakes it */
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* The transfer thread keeps watching an idle connection between transfers.
 * Connections ended by the server, while idle (a keep-alive timeout) or
 * with "Connection: close", are replaced by new ones, whose sockets often
 * get the closed ones' numbers, and every transfer still completes; an
 * idle connection the server closed does not keep the transfer thread
 * busy. Over a Unix socket, where a connection is made at once and its
 * first wait is for reading, a new socket with a closed one's number must
 * still be registered anew. */
static void closed_connections_are_replaced(fixture_t *fx, bool over_unix)
{
    char err[CAD_ERRBUF];
    fx->over_unix = over_unix;
    int lane = cad_transport_lane_add(fx->t, "web", 2, err);
    enum { ROUNDS = 12 };
    result_t r[ROUNDS][3];
    memset(r, 0, sizeof r);
    int done = 0;
    for (int i = 0; i < ROUNDS; i++) {
        start(fx, lane, "/ok", 5000, &r[i][0]);
        start(fx, lane, "/ok", 5000, &r[i][1]);
        run_until(fx, done += 2);
        start(fx, lane, i % 2 ? "/close" : "/ok", 5000, &r[i][2]);
        run_until(fx, done += 1);
        if (i % 3 == 0) {
            /* the server drops its idle connections: readable on our side */
            while (fx->srv.clients)
                close_client(fx->srv.clients);
            run_for(fx, 20);
        }
    }
    for (int i = 0; i < ROUNDS; i++)
        for (int k = 0; k < 3; k++) {
            assert_int_equal(r[i][k].calls, 1);
            assert_int_equal(r[i][k].result, CURLE_OK);
            assert_int_equal(r[i][k].code, 200);
            assert_string_equal(r[i][k].body, k == 2 && i % 2 ? "bye!\n" : "hello");
        }
    /* a new connection after each drop or "Connection: close" followed by
     * another round, at most two (the lane's concurrency); reused otherwise */
    int breaks = 0;
    for (int i = 0; i < ROUNDS - 1; i++)
        breaks += i % 2 || i % 3 == 0;
    assert_true(fx->srv.connections >= 1 + breaks);
    assert_true(fx->srv.connections <= 2 * (1 + breaks));

    /* idle connections the server closed: watched until readable, then
     * not again; a transfer thread spinning on them would use the whole
     * half second */
    start(fx, lane, "/ok", 5000, &r[0][0]);
    start(fx, lane, "/ok", 5000, &r[0][1]);
    run_until(fx, done += 2);
    while (fx->srv.clients)
        close_client(fx->srv.clients);
    double cpu0 = cpu_seconds();
    run_for(fx, 500);
    assert_true(cpu_seconds() - cpu0 < 0.2);
    result_t last = {0};
    start(fx, lane, "/ok", 5000, &last);
    run_until(fx, done + 1);
    assert_int_equal(last.code, 200);
}

static void test_transport_connections_closed_by_either_side_are_replaced(void **state)
{
    closed_connections_are_replaced(*state, false);
}

static void test_transport_unix_socket_connections_closed_are_replaced(void **state)
{
    closed_connections_are_replaced(*state, true);
}

static void test_transport_lanes_are_independent(void **state)
{
    fixture_t *fx = *state;
    char err[CAD_ERRBUF];
    int slow = cad_transport_lane_add(fx->t, "slow", 1, err);
    int fast = cad_transport_lane_add(fx->t, "fast", 1, err);
    result_t hang = {0}, queued = {0}, ok = {0};
    start(fx, slow, "/hang", 3000, &hang);
    start(fx, slow, "/ok", 3000, &queued);
    start(fx, fast, "/ok", 3000, &ok);
    run_until(fx, 1);
    /* the fast lane finished while the slow lane's only slot hangs */
    assert_int_equal(ok.calls, 1);
    assert_int_equal(ok.code, 200);
    assert_int_equal(hang.calls, 0);
    assert_int_equal(queued.calls, 0);
    close_and_wait(fx, 0);
    assert_int_equal(hang.result, CURLE_ABORTED_BY_CALLBACK);
    assert_int_equal(queued.result, CURLE_ABORTED_BY_CALLBACK);
}

/* Clearing a lane cancels what waits in it and leaves the running ones. */
static void test_transport_clear_lane_takes_back_only_waiting_transfers(void **state)
{
    fixture_t *fx = *state;
    char err[CAD_ERRBUF];
    int lane = cad_transport_lane_add(fx->t, "web", 2, err);
    int other = cad_transport_lane_add(fx->t, "other", 1, err);
    result_t r[5], o[2];
    memset(r, 0, sizeof r);
    memset(o, 0, sizeof o);
    for (int i = 0; i < 5; i++)
        start(fx, lane, "/hang", 60000, &r[i]);
    start(fx, other, "/ok", 5000, &o[0]);
    start(fx, other, "/ok", 5000, &o[1]);
    run_until(fx, 2); /* the other lane's two */
    uint64_t t0 = uv_now(&fx->loop);
    while (fx->srv.open_requests < 2 && uv_now(&fx->loop) - t0 < 5000)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_int_equal(fx->srv.open_requests, 2);
    cad_transport_clear_lane(fx->t, lane);
    run_until(fx, 5);
    int taken_back = 0;
    for (int i = 0; i < 5; i++)
        if (r[i].calls == 1) {
            assert_int_equal(r[i].result, CURLE_ABORTED_BY_CALLBACK);
            assert_string_equal(r[i].error, "cancelled: taken back before it started");
            taken_back++;
        }
    assert_int_equal(taken_back, 3);
    assert_int_equal(o[0].code, 200); /* the other lane is untouched */
    assert_int_equal(o[1].code, 200);
    assert_int_equal(fx->srv.open_requests, 2); /* the running two still run */
    close_and_wait(fx, 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(r[i].calls, 1);
    assert_int_equal(fx->srv.requests, 4);
}

/* The total cap holds running transfers over all lanes below it. */
static void test_transport_total_caps_every_lane_together(void **state)
{
    fixture_t *fx = *state;
    char err[CAD_ERRBUF];
    int a = cad_transport_lane_add(fx->t, "a", 8, err);
    int b = cad_transport_lane_add(fx->t, "b", 8, err);
    cad_transport_set_total(fx->t, 3);
    result_t r[12];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 12; i++)
        start(fx, i % 2 ? a : b, "/slow", 5000, &r[i]);
    run_until(fx, 12);
    for (int i = 0; i < 12; i++)
        assert_int_equal(r[i].code, 200);
    assert_int_equal(fx->srv.max_open_requests, 3);
}

static void test_transport_timeout_fires(void **state)
{
    fixture_t *fx = *state;
    char err[CAD_ERRBUF];
    int lane = cad_transport_lane_add(fx->t, "web", 2, err);
    result_t r = {0};
    uint64_t t0 = uv_now(&fx->loop);
    start(fx, lane, "/hang", 300, &r);
    run_until(fx, 1);
    uint64_t elapsed = uv_now(&fx->loop) - t0;
    assert_int_equal(r.result, CURLE_OPERATION_TIMEDOUT);
    assert_true(strlen(r.error) > 0);
    assert_true(elapsed >= 250 && elapsed < 3000);
    assert_true(fx->ticks > 20);
}

static void test_transport_keeps_last_response_headers_and_bounds_the_body(void **state)
{
    fixture_t *fx = *state;
    char err[CAD_ERRBUF];
    int lane = cad_transport_lane_add(fx->t, "web", 2, err);
    result_t cont = {0}, big = {0}, retry = {0};
    start(fx, lane, "/continue", 3000, &cont);
    start(fx, lane, "/big", 3000, &big);
    start(fx, lane, "/retry", 3000, &retry);
    run_until(fx, 3);
    assert_int_equal(cont.code, 201);
    assert_non_null(strstr(cont.headers, "X-Final: yes"));
    assert_null(strstr(cont.headers, "X-Interim"));
    assert_int_equal(big.code, 200);
    assert_int_equal(big.body_len, CAD_PLUGIN_BODY_MAX);
    assert_true(big.truncated);
    assert_int_equal(retry.code, 503);
    assert_non_null(strstr(retry.headers, "Retry-After: 7"));
}

static void test_transport_connection_refused_is_reported(void **state)
{
    fixture_t *fx = *state;
    char err[CAD_ERRBUF];
    int lane = cad_transport_lane_add(fx->t, "web", 1, err);
    /* a port nobody listens on: bind one, close it, use its number */
    uv_tcp_t tmp;
    uv_tcp_init(&fx->loop, &tmp);
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_bind(&tmp, (const struct sockaddr *)&addr, 0);
    struct sockaddr_in bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&tmp, (struct sockaddr *)&bound, &len);
    uv_close((uv_handle_t *)&tmp, NULL);
    result_t r = {0};
    cad_transfer_t *x = cad_transfer_new(fx->t, lane, 2000, err);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", ntohs(bound.sin_port));
    curl_easy_setopt(cad_transfer_easy(x), CURLOPT_URL, url);
    assert_int_equal(cad_transport_start(fx->t, x, on_done, &r, err), 0);
    run_until(fx, 1);
    assert_int_equal(r.result, CURLE_COULDNT_CONNECT);
    assert_int_equal(r.code, 0);
    cad_transport_stats_t st;
    cad_transport_stats(fx->t, &st);
    assert_int_equal(st.failed, 1);
}

static void test_transport_refuses_unknown_lane_and_other_protocols(void **state)
{
    fixture_t *fx = *state;
    char err[CAD_ERRBUF] = "";
    assert_null(cad_transfer_new(fx->t, 3, 1000, err));
    assert_non_null(strstr(err, "no lane 3"));
    int lane = cad_transport_lane_add(fx->t, "web", 1, err);
    result_t r = {0};
    cad_transfer_t *x = cad_transfer_new(fx->t, lane, 1000, err);
    curl_easy_setopt(cad_transfer_easy(x), CURLOPT_URL, "file:///etc/passwd");
    assert_int_equal(cad_transport_start(fx->t, x, on_done, &r, err), 0);
    run_until(fx, 1);
    assert_int_equal(r.result, CURLE_UNSUPPORTED_PROTOCOL);
}

static void test_transport_close_cancels_queued_and_running_after_grace(void **state)
{
    fixture_t *fx = *state;
    char err[CAD_ERRBUF];
    int lane = cad_transport_lane_add(fx->t, "web", 2, err);
    result_t r[5];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 5; i++)
        start(fx, lane, "/hang", 60000, &r[i]);
    /* let the two running ones reach the server */
    uint64_t t0 = uv_now(&fx->loop);
    while (fx->srv.open_requests < 2 && uv_now(&fx->loop) - t0 < 5000)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_int_equal(fx->srv.open_requests, 2);
    t0 = uv_now(&fx->loop);
    cad_transport_close(fx->t, 100, on_closed, fx);
    /* the three queued ones are cancelled at once, long before the grace ends */
    int cancelled = 0;
    while (cancelled < 3 && uv_now(&fx->loop) - t0 < 50) {
        uv_run(&fx->loop, UV_RUN_ONCE);
        cancelled = 0;
        for (int i = 0; i < 5; i++)
            cancelled += r[i].calls;
    }
    assert_int_equal(cancelled, 3);
    while (!fx->closed && uv_now(&fx->loop) - t0 < 5000)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_true(fx->closed);
    assert_true(uv_now(&fx->loop) - t0 >= 90);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].result, CURLE_ABORTED_BY_CALLBACK);
        assert_non_null(strstr(r[i].error, "shutting down"));
    }
}

static void test_transport_close_waits_for_running_within_grace(void **state)
{
    fixture_t *fx = *state;
    char err[CAD_ERRBUF];
    int lane = cad_transport_lane_add(fx->t, "web", 4, err);
    result_t r[3];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 3; i++)
        start(fx, lane, "/slow", 5000, &r[i]);
    uint64_t t0 = uv_now(&fx->loop);
    while (fx->srv.open_requests < 3 && uv_now(&fx->loop) - t0 < 5000)
        uv_run(&fx->loop, UV_RUN_ONCE);
    cad_transport_close(fx->t, 5000, on_closed, fx);
    result_t late = {0};
    cad_transfer_t *x = cad_transfer_new(fx->t, lane, 1000, err);
    assert_int_equal(cad_transport_start(fx->t, x, on_done, &late, err), -CAD_EBUSY);
    t0 = uv_now(&fx->loop);
    while (!fx->closed && uv_now(&fx->loop) - t0 < 5000)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_true(fx->closed);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].result, CURLE_OK);
        assert_int_equal(r[i].code, 200);
    }
    assert_int_equal(late.calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_transport_single_transfer_collects_the_response, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_transport_many_concurrent_transfers_never_block_the_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport_reused_transfer_carries_nothing_over, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_transport_lanes_are_independent, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_transport_connections_closed_by_either_side_are_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport_unix_socket_connections_closed_are_replaced,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport_clear_lane_takes_back_only_waiting_transfers,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport_total_caps_every_lane_together, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_transport_timeout_fires, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_transport_keeps_last_response_headers_and_bounds_the_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport_connection_refused_is_reported, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_transport_refuses_unknown_lane_and_other_protocols,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport_close_cancels_queued_and_running_after_grace,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport_close_waits_for_running_within_grace, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("transport", tests, NULL, NULL);
}
