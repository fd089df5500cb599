/*
 * test_control.c — the control socket server on a private loop: binding
 * (stale, live, not-a-socket, long paths), the command table, replies and
 * errors, line limits, argument helpers and the access decision.
 *
 * The client side is a plain blocking socket; the test drives the loop with
 * UV_RUN_NOWAIT until the reply line has arrived, so no thread is needed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "control.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

typedef struct fixture {
    uv_loop_t loop;
    char dir[64];
    char path[128];
    cad_control_t *ctl;
    int handler_calls;
    bool closed;
    /* a fake group commit: "write" leaves a change uncommitted */
    bool group_open;
    int64_t changes;
    int commits;
    int rows_per_commit[8];
    int rows_in_group;
    int commit_rc;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    strcpy(f->dir, "/tmp/cad-ctl-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/control.sock", f->dir);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    *state = f;
    return 0;
}

static void on_closed(void *arg)
{
    ((fixture_t *)arg)->closed = true;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f->ctl) {
        cad_control_close(f->ctl, on_closed, f);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_true(f->closed);
    } else {
        uv_run(&f->loop, UV_RUN_DEFAULT);
    }
    assert_int_equal(uv_loop_close(&f->loop), 0);
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static int start(fixture_t *f, uint32_t max_line, char *err)
{
    cad_control_options_t o = {.socket_path = f->path, .max_line = max_line};
    return cad_control_new(&f->loop, &o, &f->ctl, err);
}

static int client(fixture_t *f)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, f->path);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* Sends `text` and returns the next reply line parsed (caller decrefs). */
static json_t *exchange(fixture_t *f, int fd, const char *text, size_t len)
{
    if (len)
        assert_int_equal(send(fd, text, len, MSG_NOSIGNAL), (ssize_t)len);
    static char buf[65536];
    size_t have = 0;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        ssize_t r = recv(fd, buf + have, 1, MSG_DONTWAIT); /* one byte: leave the rest queued */
        if (r == 1) {
            if (buf[have] == '\n') {
                buf[have] = '\0';
                json_error_t jerr;
                json_t *reply = json_loads(buf, 0, &jerr);
                assert_non_null(reply);
                return reply;
            }
            have++;
            assert_true(have < sizeof(buf));
            continue;
        }
        if (r == 0)
            return NULL; /* closed by the server */
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        assert_true(now.tv_sec - start.tv_sec < 5);
        usleep(1000);
    }
}

static json_t *call(fixture_t *f, int fd, const char *line)
{
    char buf[4096];
    int n = snprintf(buf, sizeof(buf), "%s\n", line);
    return exchange(f, fd, buf, (size_t)n);
}

static const char *error_code(json_t *reply)
{
    assert_true(json_is_false(json_object_get(reply, "ok")));
    return json_string_value(json_object_get(json_object_get(reply, "error"), "code"));
}

/* ---- handlers ------------------------------------------------------------ */

static json_t *echo_handler(json_t *request, const cad_control_peer_t *peer, void *arg,
                            cad_control_error_t *error)
{
    fixture_t *f = arg;
    f->handler_calls++;
    const char *text = NULL;
    int64_t n = 0;
    bool flag = false;
    if (cad_control_arg_string(request, "text", true, &text, error) != 0 ||
        cad_control_arg_int(request, "n", false, &n, error) != 0 ||
        cad_control_arg_bool(request, "flag", false, &flag, error) != 0)
        return NULL;
    return json_pack("{s:s, s:I, s:b, s:b}", "text", text, "n", (json_int_t)n, "flag", flag,
                     "admin", peer->admin);
}

static json_t *failing_handler(json_t *request, const cad_control_peer_t *peer, void *arg,
                               cad_control_error_t *error)
{
    error->details = json_pack("[s, s]", "first detail", "second detail");
    return cad_control_fail(error, CAD_CONTROL_NOT_FOUND, "customer \"%s\" does not exist", "c-9");
}

static json_t *silent_failure(json_t *request, const cad_control_peer_t *peer, void *arg,
                              cad_control_error_t *error)
{
    return NULL;
}

static json_t *write_handler(json_t *request, const cad_control_peer_t *peer, void *arg,
                             cad_control_error_t *error)
{
    fixture_t *f = arg;
    f->group_open = true;
    f->changes++;
    f->rows_in_group++;
    return json_pack("{s:I}", "row", (json_int_t)f->changes);
}

/* Grouped like "write" but writes nothing: it answers from what the open
 * group holds (an event.add finding a duplicate), or refuses a bad request. */
static json_t *peek_handler(json_t *request, const cad_control_peer_t *peer, void *arg,
                            cad_control_error_t *error)
{
    bool bad = false;
    if (cad_control_arg_bool(request, "bad", false, &bad, error) != 0)
        return NULL;
    if (bad)
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST, "field x: unknown");
    return json_pack("{s:b}", "duplicate", 1);
}

static int64_t fake_uncommitted(void *arg)
{
    fixture_t *f = arg;
    return f->group_open ? 1 + f->changes : 0;
}

static int fake_commit(void *arg, char *err)
{
    fixture_t *f = arg;
    if (!f->group_open)
        return 0;
    if (f->commits < 8)
        f->rows_per_commit[f->commits] = f->rows_in_group;
    f->commits++;
    f->group_open = false;
    f->rows_in_group = 0;
    if (f->commit_rc < 0)
        return cad_fail(err, -f->commit_rc, "database or disk is full");
    return 0;
}

static void start_with_group(fixture_t *f)
{
    char err[CAD_ERRBUF] = "";
    assert_int_equal(start(f, 0, err), 0);
    assert_int_equal(cad_control_register(f->ctl, "write", true, write_handler, f), 0);
    assert_int_equal(cad_control_register(f->ctl, "peek", false, peek_handler, f), 0);
    assert_int_equal(cad_control_register(f->ctl, "echo", false, echo_handler, f), 0);
    cad_control_set_group(
        f->ctl,
        &(cad_control_group_t){.uncommitted = fake_uncommitted, .commit = fake_commit, .arg = f});
    assert_int_equal(cad_control_set_grouped(f->ctl, "write"), 0);
    assert_int_equal(cad_control_set_grouped(f->ctl, "peek"), 0);
    assert_int_equal(cad_control_set_grouped(f->ctl, "nope"), -CAD_ENOTFOUND);
}

static void send_text(int fd, const char *text)
{
    assert_int_equal(send(fd, text, strlen(text), MSG_NOSIGNAL), (ssize_t)strlen(text));
}

/* Reads `n` reply lines (caller decrefs each). */
static void read_replies(fixture_t *f, int fd, json_t **out, int n)
{
    for (int i = 0; i < n; i++) {
        out[i] = exchange(f, fd, NULL, 0);
        assert_non_null(out[i]);
    }
}

/* ---- tests --------------------------------------------------------------- */

static void test_register_rejects_bad_and_duplicate_names(void **state)
{
    fixture_t *f = *state;
    char err[CAD_ERRBUF] = "";
    assert_int_equal(start(f, 0, err), 0);
    assert_int_equal(cad_control_register(f->ctl, "echo", false, echo_handler, f), 0);
    assert_int_equal(cad_control_register(f->ctl, "echo", true, echo_handler, f), -CAD_EEXIST);
    assert_int_equal(cad_control_register(f->ctl, "help", false, echo_handler, f), -CAD_EEXIST);
    assert_int_equal(cad_control_register(f->ctl, "", false, echo_handler, f), -CAD_EINVAL);
    assert_int_equal(cad_control_register(f->ctl, "Has Space", false, echo_handler, f),
                     -CAD_EINVAL);
    assert_int_equal(cad_control_register(f->ctl, "x", false, NULL, f), -CAD_EINVAL);
    char longname[CAD_CONTROL_NAME_MAX + 1];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(cad_control_register(f->ctl, longname, false, echo_handler, f), -CAD_EINVAL);
    /* many registrations grow the table */
    for (int i = 0; i < 40; i++) {
        char name[16];
        snprintf(name, sizeof(name), "cmd%d", i);
        assert_int_equal(cad_control_register(f->ctl, name, false, echo_handler, f), 0);
    }
}

static void test_handler_gets_arguments_and_id_is_echoed(void **state)
{
    fixture_t *f = *state;
    char err[CAD_ERRBUF] = "";
    assert_int_equal(start(f, 0, err), 0);
    assert_int_equal(cad_control_register(f->ctl, "echo", false, echo_handler, f), 0);
    int fd = client(f);
    json_t *r = call(f, fd,
                     "{\"cmd\":\"echo\",\"id\":{\"k\":[1]},\"text\":\"hi\",\"n\":5,"
                     "\"flag\":true}");
    assert_true(json_is_true(json_object_get(r, "ok")));
    json_t *id = json_pack("{s:[i]}", "k", 1);
    assert_true(json_equal(json_object_get(r, "id"), id));
    json_decref(id);
    json_t *res = json_object_get(r, "result");
    assert_string_equal(json_string_value(json_object_get(res, "text")), "hi");
    assert_int_equal(json_integer_value(json_object_get(res, "n")), 5);
    assert_true(json_is_true(json_object_get(res, "flag")));
    assert_true(json_is_true(json_object_get(res, "admin"))); /* same uid as the daemon */
    json_decref(r);
    assert_int_equal(f->handler_calls, 1);
    close(fd);
}

static void test_argument_helpers_name_the_field(void **state)
{
    fixture_t *f = *state;
    char err[CAD_ERRBUF] = "";
    assert_int_equal(start(f, 0, err), 0);
    assert_int_equal(cad_control_register(f->ctl, "echo", false, echo_handler, f), 0);
    int fd = client(f);
    struct {
        const char *line, *needle;
    } cases[] = {
        {"{\"cmd\":\"echo\"}", "missing required field \"text\""},
        {"{\"cmd\":\"echo\",\"text\":null}", "missing required field \"text\""},
        {"{\"cmd\":\"echo\",\"text\":3}", "field \"text\" must be a string"},
        {"{\"cmd\":\"echo\",\"text\":\"a\",\"n\":\"5\"}", "field \"n\" must be an integer"},
        {"{\"cmd\":\"echo\",\"text\":\"a\",\"n\":1.5}", "field \"n\" must be an integer"},
        {"{\"cmd\":\"echo\",\"text\":\"a\",\"flag\":1}", "field \"flag\" must be true or false"},
    };
    for (size_t i = 0; i < CAD_ARRAY_LEN(cases); i++) {
        json_t *r = call(f, fd, cases[i].line);
        assert_string_equal(error_code(r), CAD_CONTROL_BAD_REQUEST);
        const char *msg =
            json_string_value(json_object_get(json_object_get(r, "error"), "message"));
        assert_non_null(strstr(msg, cases[i].needle));
        json_decref(r);
    }
    close(fd);
}

static void test_handler_errors_and_details(void **state)
{
    fixture_t *f = *state;
    char err[CAD_ERRBUF] = "";
    assert_int_equal(start(f, 0, err), 0);
    assert_int_equal(cad_control_register(f->ctl, "fail", false, failing_handler, f), 0);
    assert_int_equal(cad_control_register(f->ctl, "silent", false, silent_failure, f), 0);
    int fd = client(f);
    json_t *r = call(f, fd, "{\"cmd\":\"fail\",\"id\":1}");
    assert_string_equal(error_code(r), CAD_CONTROL_NOT_FOUND);
    json_t *e = json_object_get(r, "error");
    assert_string_equal(json_string_value(json_object_get(e, "message")),
                        "customer \"c-9\" does not exist");
    assert_int_equal(json_array_size(json_object_get(e, "details")), 2);
    json_decref(r);
    r = call(f, fd, "{\"cmd\":\"silent\"}");
    assert_string_equal(error_code(r), CAD_CONTROL_INTERNAL);
    json_decref(r);
    close(fd);
}

static void test_protocol_errors_keep_the_connection(void **state)
{
    fixture_t *f = *state;
    char err[CAD_ERRBUF] = "";
    assert_int_equal(start(f, 1024, err), 0);
    int fd = client(f);
    json_t *r = call(f, fd, "{oops");
    assert_string_equal(error_code(r), CAD_CONTROL_BAD_JSON);
    json_decref(r);
    r = call(f, fd, "\"just a string\"");
    assert_string_equal(error_code(r), CAD_CONTROL_BAD_REQUEST);
    json_decref(r);
    r = call(f, fd, "{\"cmd\":\"nope\",\"id\":\"n\"}");
    assert_string_equal(error_code(r), CAD_CONTROL_UNKNOWN_COMMAND);
    assert_string_equal(json_string_value(json_object_get(r, "id")), "n");
    json_decref(r);
    char *big = malloc(3000);
    memset(big, 'x', 2999);
    big[2999] = '\n';
    r = exchange(f, fd, big, 3000);
    free(big);
    assert_string_equal(error_code(r), CAD_CONTROL_LINE_TOO_LONG);
    json_decref(r);
    r = call(f, fd, "{\"cmd\":\"help\",\"id\":2}");
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_int_equal(json_integer_value(json_object_get(r, "id")), 2);
    json_decref(r);
    int clients = 0;
    int64_t requests = 0;
    cad_control_stats(f->ctl, &clients, &requests);
    assert_int_equal(clients, 1);
    assert_int_equal(requests, 4); /* the over-long line never became a request */
    close(fd);
}

static void test_group_commit_shares_one_commit_and_keeps_order(void **state)
{
    fixture_t *f = *state;
    start_with_group(f);
    int fd = client(f);
    /* Pipelined in one send, read in one loop turn: the grouped writes
     * share a commit, and a command that is not grouped (echo) first
     * commits what is open, so it sees only committed data. */
    const char *lines = "{\"cmd\":\"write\",\"id\":1}\n"
                        "{\"cmd\":\"write\",\"id\":2}\n"
                        "{\"cmd\":\"echo\",\"id\":3,\"text\":\"between\"}\n"
                        "{bad json\n"
                        "{\"cmd\":\"write\",\"id\":5}\n"
                        "{\"cmd\":\"peek\",\"id\":6}\n"
                        "{\"cmd\":\"write\",\"id\":7}\n";
    send_text(fd, lines);
    json_t *r[7];
    read_replies(f, fd, r, 7);
    for (int i = 0; i < 7; i++) {
        if (i == 3) {
            assert_string_equal(error_code(r[i]), CAD_CONTROL_BAD_JSON);
        } else {
            assert_true(json_is_true(json_object_get(r[i], "ok")));
            assert_int_equal(json_integer_value(json_object_get(r[i], "id")), i + 1);
        }
        json_decref(r[i]);
    }
    assert_int_equal(f->commits, 2);
    assert_int_equal(f->rows_per_commit[0], 2);
    assert_int_equal(f->rows_per_commit[1], 2);
    /* A read alone is answered without a commit. */
    json_t *e = call(f, fd, "{\"cmd\":\"echo\",\"text\":\"x\"}");
    assert_true(json_is_true(json_object_get(e, "ok")));
    json_decref(e);
    assert_int_equal(f->commits, 2);
    close(fd);
}

static void test_group_commit_failure_turns_writes_into_errors(void **state)
{
    fixture_t *f = *state;
    start_with_group(f);
    f->commit_rc = -CAD_EFULL;
    int fd = client(f);
    int other = client(f);
    const char *lines = "{\"cmd\":\"write\",\"id\":1}\n"
                        "{\"cmd\":\"peek\",\"id\":2}\n"
                        "{\"cmd\":\"peek\",\"id\":3,\"bad\":true}\n"
                        "{\"cmd\":\"echo\",\"id\":4,\"text\":\"read\"}\n";
    send_text(fd, lines);
    json_t *r[4];
    read_replies(f, fd, r, 4);
    /* the write, and the answer read from it, were not kept */
    for (int i = 0; i < 2; i++) {
        assert_string_equal(error_code(r[i]), CAD_CONTROL_INTERNAL);
        assert_int_equal(json_integer_value(json_object_get(r[i], "id")), i + 1);
        const char *msg =
            json_string_value(json_object_get(json_object_get(r[i], "error"), "message"));
        assert_non_null(strstr(msg, "not stored"));
        assert_non_null(strstr(msg, "database or disk is full"));
    }
    /* a malformed request's refusal stays what it was */
    assert_string_equal(error_code(r[2]), CAD_CONTROL_BAD_REQUEST);
    /* the read after them ran on committed data only */
    assert_true(json_is_true(json_object_get(r[3], "ok")));
    for (int i = 0; i < 4; i++)
        json_decref(r[i]);
    /* The next turn commits again, for another client too. */
    f->commit_rc = 0;
    json_t *ok = call(f, other, "{\"cmd\":\"write\",\"id\":3}");
    assert_true(json_is_true(json_object_get(ok, "ok")));
    json_decref(ok);
    assert_int_equal(f->commits, 2);
    close(fd);
    close(other);
}

static void test_group_commit_replies_reach_a_client_that_finished(void **state)
{
    fixture_t *f = *state;
    start_with_group(f);
    int fd = client(f);
    /* The last line has no newline and the client shuts its side. */
    const char *lines = "{\"cmd\":\"write\",\"id\":1}\n{\"cmd\":\"write\",\"id\":2}";
    send_text(fd, lines);
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    json_t *r[2];
    read_replies(f, fd, r, 2);
    for (int i = 0; i < 2; i++) {
        assert_true(json_is_true(json_object_get(r[i], "ok")));
        json_decref(r[i]);
    }
    assert_null(exchange(f, fd, NULL, 0)); /* then the server closes */
    assert_false(f->group_open);           /* the EOF may come a turn later */
    close(fd);
}

static void test_group_commit_runs_when_the_server_closes(void **state)
{
    fixture_t *f = *state;
    start_with_group(f);
    int fd = client(f);
    const char *line = "{\"cmd\":\"write\",\"id\":1}\n";
    send_text(fd, line);
    /* Read the request, then close before the check phase: the open
     * group is committed, not left behind. */
    for (int i = 0; i < 1000 && f->rows_in_group == 0 && f->commits == 0; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    cad_control_close(f->ctl, on_closed, f);
    f->ctl = NULL;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(f->closed);
    assert_int_equal(f->commits, 1);
    assert_false(f->group_open);
    close(fd);
}

static void test_update_changes_the_line_limit(void **state)
{
    fixture_t *f = *state;
    char err[CAD_ERRBUF] = "";
    assert_int_equal(start(f, 1024, err), 0);
    int fd = client(f);
    char line[2100];
    int n = snprintf(line, sizeof(line), "{\"cmd\":\"help\",\"pad\":\"%01800d\"}\n", 0);
    json_t *r = exchange(f, fd, line, (size_t)n);
    assert_string_equal(error_code(r), CAD_CONTROL_LINE_TOO_LONG);
    json_decref(r);
    cad_control_options_t o = {.socket_path = f->path, .max_line = 4096};
    assert_int_equal(cad_control_update(f->ctl, &o, err), 0);
    r = exchange(f, fd, line, (size_t)n);
    assert_true(json_is_true(json_object_get(r, "ok")));
    json_decref(r);
    close(fd);
}

static void test_socket_mode_is_applied(void **state)
{
    fixture_t *f = *state;
    char err[CAD_ERRBUF] = "";
    cad_control_options_t o = {.socket_path = f->path, .socket_mode = 0600};
    assert_int_equal(cad_control_new(&f->loop, &o, &f->ctl, err), 0);
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    cad_control_stop_listening(f->ctl);
    assert_int_equal(stat(f->path, &st), -1);
    cad_control_stop_listening(f->ctl); /* idempotent */
}

static void test_stale_socket_is_replaced_live_one_refused(void **state)
{
    fixture_t *f = *state;
    char err[CAD_ERRBUF] = "";
    /* stale: bound, never listening, closed */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, f->path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    assert_int_equal(start(f, 0, err), 0);
    /* live: a second server on the same path is refused and leaves the first intact */
    cad_control_t *second = NULL;
    cad_control_options_t o = {.socket_path = f->path};
    assert_int_equal(cad_control_new(&f->loop, &o, &second, err), -CAD_EBUSY);
    assert_null(second);
    assert_non_null(strstr(err, "another cadenced is answering"));
    assert_non_null(strstr(err, f->path));
    int c = client(f);
    json_t *r = call(f, c, "{\"cmd\":\"help\"}");
    assert_true(json_is_true(json_object_get(r, "ok")));
    json_decref(r);
    close(c);
}

static void test_bad_paths_are_refused(void **state)
{
    fixture_t *f = *state;
    char err[CAD_ERRBUF] = "";
    FILE *file = fopen(f->path, "w");
    assert_non_null(file);
    fclose(file);
    assert_int_equal(start(f, 0, err), -CAD_EEXIST);
    assert_non_null(strstr(err, "is not a socket"));
    unlink(f->path);
    char longpath[200];
    memset(longpath, 'p', sizeof(longpath) - 1);
    longpath[0] = '/';
    longpath[sizeof(longpath) - 1] = '\0';
    cad_control_options_t o = {.socket_path = longpath};
    assert_int_equal(cad_control_new(&f->loop, &o, &f->ctl, err), -CAD_EINVAL);
    assert_non_null(strstr(err, "path longer than"));
    o.socket_path = "/nonexistent-dir-for-cadence/control.sock";
    assert_int_equal(cad_control_new(&f->loop, &o, &f->ctl, err), -CAD_EIO);
    assert_non_null(strstr(err, "cannot bind"));
    o.socket_path = "";
    assert_int_equal(cad_control_new(&f->loop, &o, &f->ctl, err), -CAD_EINVAL);
    assert_null(f->ctl);
}

static void test_access_decision(void **state)
{
    cad_access_rule_t rules[] = {
        {.is_group = false, .id = 1001, .admin = true},
        {.is_group = false, .id = 1002, .admin = false},
        {.is_group = true, .id = 50, .admin = true},
        {.is_group = true, .id = 60, .admin = false},
    };
    int n = (int)CAD_ARRAY_LEN(rules);
    gid_t none[1] = {0};
    gid_t sup[] = {70, 50};
    assert_true(cad_control_peer_is_admin(rules, n, 999, 0, 0, none, 0));       /* root */
    assert_true(cad_control_peer_is_admin(rules, n, 999, 999, 100, none, 0));   /* self */
    assert_true(cad_control_peer_is_admin(rules, n, 999, 1001, 100, none, 0));  /* uid rule */
    assert_false(cad_control_peer_is_admin(rules, n, 999, 1002, 100, none, 0)); /* read rule */
    assert_true(cad_control_peer_is_admin(rules, n, 999, 1003, 50, none, 0));   /* gid rule */
    assert_true(cad_control_peer_is_admin(rules, n, 999, 1003, 100, sup, 2));   /* supplementary */
    assert_false(cad_control_peer_is_admin(rules, n, 999, 1003, 60, none, 0));  /* read group */
    assert_false(cad_control_peer_is_admin(rules, n, 999, 1004, 100, none, 0)); /* no rule */
    assert_false(cad_control_peer_is_admin(NULL, 0, 999, 1001, 100, none, 0));
}

static void test_fail_helper_tolerates_null(void **state)
{
    assert_null(cad_control_fail(NULL, CAD_CONTROL_INTERNAL, "x"));
    cad_control_error_t e = {0};
    assert_null(cad_control_fail(&e, CAD_CONTROL_FORBIDDEN, "n=%d", 3));
    assert_string_equal(e.code, "forbidden");
    assert_string_equal(e.message, "n=3");
}

int main(void)
{
    int devnull = open("/dev/null", O_WRONLY);
    cad_log_set_output(devnull, false); /* the server's own log lines are not under test */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_register_rejects_bad_and_duplicate_names, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_handler_gets_arguments_and_id_is_echoed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_argument_helpers_name_the_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handler_errors_and_details, setup, teardown),
        cmocka_unit_test_setup_teardown(test_protocol_errors_keep_the_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_shares_one_commit_and_keeps_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_failure_turns_writes_into_errors, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_replies_reach_a_client_that_finished,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_runs_when_the_server_closes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_update_changes_the_line_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_socket_mode_is_applied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_socket_is_replaced_live_one_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_paths_are_refused, setup, teardown),
        cmocka_unit_test(test_access_decision),
        cmocka_unit_test(test_fail_helper_tolerates_null),
    };
    return cmocka_run_group_tests_name("control", tests, NULL, NULL);
}
