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
#include "fuzz_control.h"

#include "log.h"

#define MAX_LINE 512

static uv_loop_t loop;
static cad_control_t *server;
static char sock_path[300];

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
    snprintf(sock_path, sizeof(sock_path), "%s/control.sock", fuzz_make_tmpdir("control"));
    FUZZ_CHECK(uv_loop_init(&loop) == 0, "uv_loop_init failed");
    cad_control_options_t o = {.socket_path = sock_path, .max_line = MAX_LINE};
    char err[CAD_ERRBUF] = "";
    FUZZ_CHECK(cad_control_new(&loop, &o, &server, err) == 0, "control: %s", err);
    FUZZ_CHECK(cad_control_register(server, "echo", false, cmd_echo, NULL) == 0, "register");
    FUZZ_CHECK(cad_control_register(server, "fail", true, cmd_fail, NULL) == 0, "register");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!server)
        LLVMFuzzerInitialize(NULL, NULL);
    fuzz_control_exchange(&loop, server, sock_path, data, size, MAX_LINE);
    return 0;
}
