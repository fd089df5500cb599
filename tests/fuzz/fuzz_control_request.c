/*
 * fuzz_control_request.c — the control socket's request path, end to end:
 * bytes on a real Unix socket, cut into lines, over-long lines refused,
 * each line parsed as a request, checked (object, "cmd", known command,
 * role), its arguments read by the cad_control_arg_* helpers, the reply
 * encoded and written back (control.c).
 *
 * Once: a control server on a private loop and socket, max_line 512 so
 * over-long lines are cheap to reach, with two commands besides "help":
 * "echo" (reads "name" as a string, "count" as an integer and "flag" as a
 * boolean and returns them) and "fail" (an error with details). Per input:
 * a client connects, writes the input, shuts its side down and reads until
 * the server closes, driving the loop from this thread. Properties:
 *   - one reply line per request line, in order: a line longer than
 *     max_line gets exactly one line_too_long, a blank line none, a last
 *     line without newline one;
 *   - every reply is a JSON object with a boolean "ok", an error reply has
 *     a known code and a message;
 *   - the server answers within 10 s and forgets the client afterwards.
 */
#include "fuzz_common.h"

#include "control.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE 512

static uv_loop_t loop;
static cad_control_t *server;
static char sock_path[128];

static json_t *cmd_echo(json_t *request, const cad_control_peer_t *peer, void *arg,
                        cad_control_error_t *error)
{
    const char *name = "";
    int64_t count = 0;
    bool flag = false;
    if (cad_control_arg_string(request, "name", true, &name, error) < 0 ||
        cad_control_arg_int(request, "count", false, &count, error) < 0 ||
        cad_control_arg_bool(request, "flag", false, &flag, error) < 0)
        return NULL;
    return json_pack("{s:s, s:I, s:b}", "name", name, "count", (json_int_t)count, "flag", flag);
}

static json_t *cmd_fail(json_t *request, const cad_control_peer_t *peer, void *arg,
                        cad_control_error_t *error)
{
    const char *what = json_string_value(json_object_get(request, "what"));
    error->details = json_pack("[s]", "fuzz.conf:1: a detail");
    return cad_control_fail(error, CAD_CONTROL_NOT_FOUND, "nothing here: %s", what ? what : "?");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    cad_log_set_level(CAD_LOG_ERR);
    char dir[] = "/tmp/cadence-fuzz-control-XXXXXX";
    FUZZ_CHECK(mkdtemp(dir) != NULL, "mkdtemp failed");
    snprintf(sock_path, sizeof(sock_path), "%s/control.sock", dir);
    FUZZ_CHECK(uv_loop_init(&loop) == 0, "uv_loop_init failed");
    cad_control_options_t o = {.socket_path = sock_path, .max_line = MAX_LINE};
    char err[CAD_ERRBUF] = "";
    FUZZ_CHECK(cad_control_new(&loop, &o, &server, err) == 0, "control: %s", err);
    FUZZ_CHECK(cad_control_register(server, "echo", false, cmd_echo, NULL) == 0, "register");
    FUZZ_CHECK(cad_control_register(server, "fail", true, cmd_fail, NULL) == 0, "register");
    return 0;
}

/* The number of replies the protocol promises for `data`. */
static size_t expected_replies(const uint8_t *data, size_t size)
{
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i < size && data[i] != '\n')
            continue;
        size_t len = i - start;
        if (len > MAX_LINE) {
            n++; /* line_too_long, the rest is discarded */
        } else if (i == size) {
            n += len > 0; /* a last line without newline is handled as it is */
        } else {
            if (len > 0 && data[i - 1] == '\r')
                len--;
            bool blank = true;
            for (size_t k = start; k < start + len && blank; k++)
                blank = data[k] == ' ' || data[k] == '\t';
            n += !blank;
        }
        start = i + 1;
    }
    return n;
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void check_reply(const char *line, size_t len)
{
    json_error_t jerr;
    json_t *r = json_loadb(line, len, 0, &jerr);
    FUZZ_CHECK(json_is_object(r), "a reply that is not a JSON object: %.*s", (int)len, line);
    json_t *ok = json_object_get(r, "ok");
    FUZZ_CHECK(json_is_boolean(ok), "a reply without a boolean ok: %.*s", (int)len, line);
    if (json_is_false(ok)) {
        static const char *const codes[] = {CAD_CONTROL_BAD_JSON,      CAD_CONTROL_UNKNOWN_COMMAND,
                                            CAD_CONTROL_LINE_TOO_LONG, CAD_CONTROL_BAD_REQUEST,
                                            CAD_CONTROL_FORBIDDEN,     CAD_CONTROL_INTERNAL,
                                            CAD_CONTROL_NOT_FOUND,     NULL};
        const char *code = json_string_value(json_object_get(json_object_get(r, "error"), "code"));
        const char *msg =
            json_string_value(json_object_get(json_object_get(r, "error"), "message"));
        FUZZ_CHECK(code && msg && msg[0], "an error reply without code or message");
        bool known = false;
        for (int i = 0; codes[i] && !known; i++)
            known = strcmp(code, codes[i]) == 0;
        FUZZ_CHECK(known, "an unknown error code %s", code);
    } else {
        FUZZ_CHECK(json_object_get(r, "result") != NULL, "an ok reply without a result");
    }
    json_decref(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!server)
        LLVMFuzzerInitialize(NULL, NULL);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    FUZZ_CHECK(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    FUZZ_CHECK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect: %s",
               strerror(errno));

    size_t sent = 0, got = 0, cap = 4096;
    char *replies = malloc(cap);
    bool shut = false, eof = false;
    double deadline = seconds() + 10;
    while (!eof) {
        FUZZ_CHECK(seconds() < deadline, "no end of replies after 10 s (%zu of %zu bytes sent)",
                   sent, size);
        if (sent < size) {
            ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
            if (n > 0)
                sent += (size_t)n;
            else
                FUZZ_CHECK(errno == EAGAIN, "send: %s", strerror(errno));
        } else if (!shut) {
            shutdown(fd, SHUT_WR);
            shut = true;
        }
        uv_run(&loop, UV_RUN_NOWAIT);
        for (;;) {
            if (got + 4096 > cap) {
                cap *= 2;
                replies = realloc(replies, cap);
                FUZZ_CHECK(replies != NULL, "out of memory");
            }
            ssize_t n = recv(fd, replies + got, cap - got, 0);
            if (n > 0) {
                got += (size_t)n;
                continue;
            }
            if (n == 0)
                eof = true;
            else
                FUZZ_CHECK(errno == EAGAIN, "recv: %s", strerror(errno));
            break;
        }
    }
    close(fd);
    int clients = 1;
    while (clients > 0) {
        FUZZ_CHECK(seconds() < deadline, "the server still holds the client after 10 s");
        uv_run(&loop, UV_RUN_NOWAIT);
        cad_control_stats(server, &clients, NULL);
    }

    size_t lines = 0, start = 0;
    for (size_t i = 0; i < got; i++) {
        if (replies[i] != '\n')
            continue;
        check_reply(replies + start, i - start);
        lines++;
        start = i + 1;
    }
    FUZZ_CHECK(start == got, "the last reply has no newline");
    size_t want = expected_replies(data, size);
    FUZZ_CHECK(lines == want, "%zu replies to %zu request lines", lines, want);
    free(replies);
    return 0;
}
