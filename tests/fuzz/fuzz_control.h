/*
 * fuzz_control.h — the client side shared by the control-socket fuzz
 * targets (fuzz_control_request.c: the protocol layer with test commands;
 * fuzz_control_commands.c: a whole daemon with its real commands).
 *
 * fuzz_control_exchange() connects to the server's socket, writes the
 * input, shuts its side down and reads until the server closes, turning
 * the server's loop from this thread, then checks the protocol's promises:
 * one reply per request line in order (a line longer than max_line gets
 * exactly one line_too_long, a blank line none, a last line without newline
 * one), every reply a JSON object with a boolean "ok" and, when false, a
 * known error code and a message; all within 10 s, and the client is
 * forgotten afterwards.
 */
#ifndef CADENCE_FUZZ_CONTROL_H
#define CADENCE_FUZZ_CONTROL_H

#include "fuzz_common.h"

#include "control.h"

#include <errno.h>
#include <jansson.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* The number of replies the protocol promises for `data`. */
static size_t expected_replies(const uint8_t *data, size_t size, size_t max_line)
{
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i < size && data[i] != '\n')
            continue;
        size_t len = i - start;
        if (len > max_line) {
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
        static const char *const codes[] = {CAD_CONTROL_BAD_JSON,
                                            CAD_CONTROL_UNKNOWN_COMMAND,
                                            CAD_CONTROL_LINE_TOO_LONG,
                                            CAD_CONTROL_BAD_REQUEST,
                                            CAD_CONTROL_FORBIDDEN,
                                            CAD_CONTROL_INTERNAL,
                                            CAD_CONTROL_NOT_FOUND,
                                            CAD_CONTROL_BUSY,
                                            CAD_CONTROL_INVALID_CONFIG,
                                            "conflict",
                                            NULL};
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

static void fuzz_control_exchange(uv_loop_t *loop, cad_control_t *server, const char *path,
                                  const uint8_t *data, size_t size, size_t max_line)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    FUZZ_CHECK(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, path, strlen(path) + 1);
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
        uv_run(loop, UV_RUN_NOWAIT);
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
        uv_run(loop, UV_RUN_NOWAIT);
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
    size_t want = expected_replies(data, size, max_line);
    FUZZ_CHECK(lines == want, "%zu replies to %zu request lines", lines, want);
    free(replies);
}

#endif
