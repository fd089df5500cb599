/*
 * control.c — the control socket server (see control.h for the protocol).
 *
 * One listening uv_pipe_t and one uv_pipe_t per client, all on the daemon's
 * loop. Bytes read are cut into lines in a per-client buffer that grows up to
 * max_line; a longer line is answered with line_too_long at once and the
 * rest of it is skipped up to its newline, so the next request is read in
 * sync. Each complete line is parsed, checked (object, "cmd" a string, known
 * command, role) and handed to the command's handler; the reply is queued
 * with uv_write (the replies held for a group commit go out as one write at
 * the end of the loop turn). libuv tracks the bytes it could not write yet
 * (write_queue_size): past a quarter of max_pending_output the client's
 * requests are no longer read until its replies drain to a sixteenth, so a
 * pipelining client goes at its own reading pace; a paused client that
 * takes no reply for STALL_MS, or one past max_pending_output at once, is
 * dropped, which is what keeps a client that never reads from growing the
 * daemon's memory.
 *
 * Lifetime follows libuv: every handle is released through its close
 * callback, and the server itself is freed when the last one has closed.
 */
#include "control.h"

#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define READ_CHUNK          16384
#define LINE_INITIAL_CAP    1024
#define DEFAULT_MAX_PENDING (1024 * 1024)
#define LISTEN_BACKLOG      64
#define MAX_PEER_GROUPS     64
#define STALL_MS            10000 /* a paused client that takes no reply for this long is dropped */
#define STALL_CHECK_MS      1000

typedef struct command {
    char name[CAD_CONTROL_NAME_MAX];
    bool admin_only;
    bool grouped; /* joins the loop turn's group commit (see cad_control_set_grouped) */
    cad_control_handler_fn fn;
    void *arg;
} command_t;

typedef struct client client_t;

/* A reply waiting for the loop turn's group commit, serialised once. */
typedef struct held_reply {
    char *text; /* the reply line, newline included (owned); NULL: could not be serialised */
    size_t len;
    json_t *reply; /* kept while it depends on the open group (a failed commit rewrites it) */
} held_reply_t;

struct client {
    uv_pipe_t pipe;
    cad_control_t *ctl;
    client_t *prev, *next;
    cad_control_peer_t peer;
    gid_t groups[MAX_PEER_GROUPS];
    int n_groups;
    char *line;
    size_t len, cap;
    bool discarding; /* skipping the rest of an over-long line */
    bool closing;
    bool rejected;               /* accepted only to be told the server is busy */
    bool finish_held;            /* the client finished while replies were held */
    bool finishing;              /* EOF or refused: no more requests are read */
    bool paused;                 /* reading stopped until its unsent replies drain */
    size_t stash_off, stash_len; /* requests read but not handled when it paused (in readbuf) */
    size_t held_bytes;           /* serialised size of the held replies */
    uint64_t progress_at; /* loop time of the last reply write that completed (or the pause) */
    held_reply_t *held;   /* replies in request order, sent after the group commit */
    int n_held, cap_held;
    uv_shutdown_t shutdown_req;
    char readbuf[READ_CHUNK];
};

typedef struct write_req {
    uv_write_t req;
    char *data;
} write_req_t;

struct cad_control {
    uv_loop_t *loop;
    uv_pipe_t listener;
    bool listening;
    char *path;
    dev_t dev;
    ino_t ino;
    cad_access_rule_t *access;
    int n_access;
    uint32_t max_line;
    uint32_t max_clients;
    size_t max_pending;
    command_t *commands;
    int n_commands, commands_cap;
    client_t *clients;
    int n_clients;
    int64_t requests;
    cad_control_group_t group; /* how handlers' writes are committed together */
    uv_check_t check;          /* runs the group commit at the end of a loop turn */
    bool check_active;
    bool reply_depends;     /* the reply being sent was given while the group was open */
    uv_timer_t stall_timer; /* drops paused clients that take no replies */
    bool stall_active;
    int handles_open;
    bool closing;
    void (*done)(void *arg);
    void *done_arg;
};

/* ---- helpers for handlers ------------------------------------------------ */

json_t *cad_control_fail(cad_control_error_t *error, const char *code, const char *fmt, ...)
{
    if (!error)
        return NULL;
    error->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error->message, sizeof(error->message), fmt, ap);
    va_end(ap);
    return NULL;
}

static json_t *arg_get(json_t *request, const char *key, bool required, cad_control_error_t *error,
                       bool *missing)
{
    json_t *v = json_is_object(request) ? json_object_get(request, key) : NULL;
    *missing = !v || json_is_null(v);
    if (*missing && required)
        cad_control_fail(error, CAD_CONTROL_BAD_REQUEST, "missing required field \"%s\"", key);
    return v;
}

int cad_control_arg_string(json_t *request, const char *key, bool required, const char **out,
                           cad_control_error_t *error)
{
    bool missing;
    json_t *v = arg_get(request, key, required, error, &missing);
    if (missing)
        return required ? -CAD_EINVAL : 0;
    if (!json_is_string(v)) {
        cad_control_fail(error, CAD_CONTROL_BAD_REQUEST, "field \"%s\" must be a string", key);
        return -CAD_EINVAL;
    }
    *out = json_string_value(v);
    return 0;
}

int cad_control_arg_int(json_t *request, const char *key, bool required, int64_t *out,
                        cad_control_error_t *error)
{
    bool missing;
    json_t *v = arg_get(request, key, required, error, &missing);
    if (missing)
        return required ? -CAD_EINVAL : 0;
    if (!json_is_integer(v)) {
        cad_control_fail(error, CAD_CONTROL_BAD_REQUEST, "field \"%s\" must be an integer", key);
        return -CAD_EINVAL;
    }
    *out = (int64_t)json_integer_value(v);
    return 0;
}

int cad_control_arg_bool(json_t *request, const char *key, bool required, bool *out,
                         cad_control_error_t *error)
{
    bool missing;
    json_t *v = arg_get(request, key, required, error, &missing);
    if (missing)
        return required ? -CAD_EINVAL : 0;
    if (!json_is_boolean(v)) {
        cad_control_fail(error, CAD_CONTROL_BAD_REQUEST, "field \"%s\" must be true or false", key);
        return -CAD_EINVAL;
    }
    *out = json_is_true(v);
    return 0;
}

/* ---- lifetime ------------------------------------------------------------ */

static void maybe_free(cad_control_t *c)
{
    if (!c->closing || c->handles_open > 0)
        return;
    void (*done)(void *) = c->done;
    void *arg = c->done_arg;
    free(c->path);
    free(c->access);
    free(c->commands);
    free(c);
    if (done)
        done(arg);
}

static void on_client_closed(uv_handle_t *h)
{
    client_t *cl = h->data;
    cad_control_t *c = cl->ctl;
    if (cl->prev)
        cl->prev->next = cl->next;
    else
        c->clients = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
    if (!cl->rejected)
        c->n_clients--;
    for (int i = 0; i < cl->n_held; i++) {
        json_decref(cl->held[i].reply);
        free(cl->held[i].text);
    }
    free(cl->held);
    free(cl->line);
    free(cl);
    c->handles_open--;
    maybe_free(c);
}

static void client_close(client_t *cl)
{
    if (cl->closing)
        return;
    cl->closing = true;
    uv_close((uv_handle_t *)&cl->pipe, on_client_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    client_close(req->data);
}

/* Closes after the queued replies have been written. */
static void client_finish(client_t *cl)
{
    if (cl->closing)
        return;
    cl->finishing = true;
    uv_read_stop((uv_stream_t *)&cl->pipe);
    if (cl->n_held > 0) { /* after the group commit has sent them */
        cl->finish_held = true;
        return;
    }
    cl->shutdown_req.data = cl;
    if (uv_shutdown(&cl->shutdown_req, (uv_stream_t *)&cl->pipe, on_shutdown) != 0)
        client_close(cl);
}

/* ---- replies ------------------------------------------------------------- */

/* Unsent replies past which a client's requests are no longer read, and
 * below which reading resumes: a client that pipelines is slowed to the
 * pace at which it takes its replies, not dropped. */
static size_t high_water(const cad_control_t *c)
{
    return c->max_pending / 4;
}

static size_t low_water(const cad_control_t *c)
{
    return c->max_pending / 16;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

static void on_stall_check(uv_timer_t *t)
{
    cad_control_t *c = t->data;
    uint64_t now = uv_now(c->loop);
    bool any = false;
    for (client_t *cl = c->clients; cl; cl = cl->next) {
        if (!cl->paused || cl->closing)
            continue;
        if (now - cl->progress_at >= STALL_MS) {
            cad_log_warning("control: client does not read its replies, disconnecting it "
                            "uid=%u pid=%d pending_bytes=%zu",
                            (unsigned)cl->peer.uid, (int)cl->peer.pid, cl->pipe.write_queue_size);
            client_close(cl);
        } else {
            any = true;
        }
    }
    if (!any) {
        uv_timer_stop(&c->stall_timer);
        c->stall_active = false;
    }
}

static void pause_reading(client_t *cl)
{
    cad_control_t *c = cl->ctl;
    cl->paused = true;
    cl->progress_at = uv_now(c->loop);
    uv_read_stop((uv_stream_t *)&cl->pipe);
    if (!c->stall_active && !c->closing) {
        uv_timer_start(&c->stall_timer, on_stall_check, STALL_CHECK_MS, STALL_CHECK_MS);
        c->stall_active = true;
    }
}

static void feed(client_t *cl, const char *p, size_t n);

/* Handles the requests read before the pause, then reads on. */
static void resume_reading(client_t *cl)
{
    cl->paused = false;
    if (cl->stash_len > 0) {
        size_t off = cl->stash_off, len = cl->stash_len;
        cl->stash_len = 0;
        feed(cl, cl->readbuf + off, len);
        if (cl->paused || cl->closing)
            return;
    }
    if (!cl->finishing && uv_read_start((uv_stream_t *)&cl->pipe, on_alloc, on_read) != 0)
        client_close(cl);
}

static void on_written(uv_write_t *req, int status)
{
    write_req_t *w = (write_req_t *)req;
    client_t *cl = req->handle->data;
    free(w->data);
    free(w);
    if (status != 0 || cl->closing)
        return;
    cl->progress_at = uv_now(cl->ctl->loop);
    if (cl->paused && cl->held_bytes + cl->pipe.write_queue_size <= low_water(cl->ctl))
        resume_reading(cl);
}

/* Queues `len` bytes of reply lines; takes ownership of `data` (malloc'd). */
static void queue_text(client_t *cl, char *data, size_t len)
{
    write_req_t *w = malloc(sizeof(*w));
    if (!w) {
        free(data);
        client_close(cl);
        return;
    }
    w->data = data;
    uv_buf_t buf = uv_buf_init(data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&cl->pipe, &buf, 1, on_written) != 0) {
        free(data);
        free(w);
        client_close(cl);
        return;
    }
    cad_control_t *c = cl->ctl;
    if (cl->pipe.write_queue_size > c->max_pending) {
        cad_log_warning("control: client does not read its replies, disconnecting it "
                        "uid=%u pid=%d pending_bytes=%zu",
                        (unsigned)cl->peer.uid, (int)cl->peer.pid, cl->pipe.write_queue_size);
        client_close(cl);
    } else if (!cl->paused && cl->pipe.write_queue_size > high_water(c)) {
        pause_reading(cl);
    }
}

/* The reply as one line, newline included (malloc'd; *len set), or NULL
 * when it cannot be serialised or memory runs out. `reply` stays the
 * caller's. */
static char *reply_line(json_t *reply, size_t *len)
{
    char *text = json_dumps(reply, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text)
        return NULL;
    size_t n = strlen(text);
    char *line = realloc(text, n + 1);
    if (!line) {
        free(text);
        return NULL;
    }
    line[n] = '\n';
    *len = n + 1;
    return line;
}

static void unserialisable(client_t *cl)
{
    cad_log_err("control: cannot serialise a reply, closing the connection uid=%u pid=%d",
                (unsigned)cl->peer.uid, (int)cl->peer.pid);
    client_close(cl);
}

/* Writes one reply line now; takes ownership of `reply`. */
static void write_reply(client_t *cl, json_t *reply)
{
    size_t len = 0;
    char *text = cl->closing ? NULL : reply_line(reply, &len);
    json_decref(reply);
    if (cl->closing)
        return;
    if (!text)
        unserialisable(cl);
    else
        queue_text(cl, text, len);
}

/* Writes the held replies as one buffer, releasing each. */
static void write_held(client_t *cl, held_reply_t *held, int n)
{
    size_t total = 0;
    bool whole = true;
    for (int i = 0; i < n; i++) {
        total += held[i].len;
        whole = whole && held[i].text;
    }
    char *data = whole && !cl->closing ? malloc(total) : NULL;
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        if (data) {
            memcpy(data + len, held[i].text, held[i].len);
            len += held[i].len;
        }
        free(held[i].text);
        json_decref(held[i].reply);
        held[i] = (held_reply_t){0};
    }
    if (cl->closing) {
        free(data);
        return;
    }
    if (!data) {
        unserialisable(cl);
        return;
    }
    queue_text(cl, data, len);
}

static void on_check(uv_check_t *h);

/* Queues one reply line; takes ownership of `reply`. A reply given while
 * the loop turn's group of writes was open (it may report or have read
 * them) waits for the group's commit, and every later reply to the same
 * client waits behind it, in order. */
static void send_reply(client_t *cl, json_t *reply)
{
    if (cl->closing) {
        json_decref(reply);
        return;
    }
    bool depends = cl->ctl->reply_depends;
    if (!depends && cl->n_held == 0) {
        write_reply(cl, reply);
        return;
    }
    if (cl->n_held == cl->cap_held) {
        int cap = cl->cap_held ? cl->cap_held * 2 : 16;
        held_reply_t *h = realloc(cl->held, (size_t)cap * sizeof(*h));
        if (!h) {
            /* Dropping one reply would shift every later one: close. */
            cad_log_err("control: out of memory holding a reply, closing the connection "
                        "uid=%u pid=%d",
                        (unsigned)cl->peer.uid, (int)cl->peer.pid);
            json_decref(reply);
            client_close(cl);
            return;
        }
        cl->held = h;
        cl->cap_held = cap;
    }
    held_reply_t *h = &cl->held[cl->n_held++];
    h->text = reply_line(reply, &h->len);
    if (depends) {
        h->reply = reply;
    } else {
        h->reply = NULL;
        json_decref(reply);
    }
    cad_control_t *c = cl->ctl;
    /* Held replies count as unsent: a client whose turn holds many large
     * replies stops being read before they pass the bound. */
    cl->held_bytes += h->len;
    if (!cl->paused && cl->held_bytes + cl->pipe.write_queue_size > high_water(c))
        pause_reading(cl);
    if (!c->check_active && !c->closing) {
        uv_check_start(&c->check, on_check);
        c->check_active = true;
    }
}

/* The group commit failed: a reply given while the group was open becomes an
 * error, since what it reported (or read) was not kept; the refusal of a
 * malformed request stays as it was. */
static json_t *not_kept(json_t *reply, const char *why)
{
    if (!json_is_true(json_object_get(reply, "ok"))) {
        const char *code =
            json_string_value(json_object_get(json_object_get(reply, "error"), "code"));
        static const char *const own[] = {CAD_CONTROL_BAD_JSON, CAD_CONTROL_BAD_REQUEST,
                                          CAD_CONTROL_UNKNOWN_COMMAND, CAD_CONTROL_FORBIDDEN,
                                          CAD_CONTROL_LINE_TOO_LONG};
        for (size_t i = 0; code && i < CAD_ARRAY_LEN(own); i++)
            if (strcmp(code, own[i]) == 0)
                return reply;
    }
    char msg[CAD_ERRBUF];
    snprintf(msg, sizeof(msg), "not stored, nothing of this request was kept: %s", why);
    json_t *id = json_object_get(reply, "id");
    json_t *err = json_pack("{s:b, s:O, s:{s:s, s:s}}", "ok", 0, "id", id ? id : json_null(),
                            "error", "code", CAD_CONTROL_INTERNAL, "message", msg);
    if (!err) /* `why` was not valid UTF-8 */
        err = json_pack("{s:b, s:O, s:{s:s, s:s}}", "ok", 0, "id", id ? id : json_null(), "error",
                        "code", CAD_CONTROL_INTERNAL, "message",
                        "not stored, nothing of this request was kept: the store failed");
    if (!err)
        return reply; /* out of memory: the connection is about to fail anyway */
    json_decref(reply);
    return err;
}

/* Commits the open group now; each held reply that depended on it is then
 * final (turned into an error if the commit failed). */
static void settle(cad_control_t *c)
{
    char err[CAD_ERRBUF] = "";
    int rc = c->group.commit ? c->group.commit(c->group.arg, err) : 0;
    if (rc < 0)
        cad_log_err("control: the writes of this loop turn were not stored, their requests are "
                    "answered with an error: %s",
                    err);
    for (client_t *cl = c->clients; cl; cl = cl->next)
        for (int i = 0; i < cl->n_held; i++) {
            held_reply_t *h = &cl->held[i];
            if (!h->reply)
                continue;
            json_t *final = rc < 0 ? not_kept(h->reply, err) : h->reply;
            if (final != h->reply) { /* not_kept released the old one */
                free(h->text);
                h->text = reply_line(final, &h->len);
            }
            json_decref(final);
            h->reply = NULL;
        }
}

/* Commits what the loop turn's handlers wrote, then sends every held reply. */
static void flush_held(cad_control_t *c)
{
    if (c->check_active) {
        uv_check_stop(&c->check);
        c->check_active = false;
    }
    settle(c);
    for (client_t *cl = c->clients; cl; cl = cl->next) {
        if (cl->n_held == 0)
            continue;
        int n = cl->n_held;
        cl->n_held = 0;
        cl->held_bytes = 0;
        write_held(cl, cl->held, n); /* one write for the turn's replies */
        if (cl->finish_held && !cl->closing) {
            cl->finish_held = false;
            client_finish(cl);
        }
    }
}

static void on_check(uv_check_t *h)
{
    flush_held(h->data);
}

static int64_t group_mark(cad_control_t *c)
{
    return c->group.uncommitted ? c->group.uncommitted(c->group.arg) : 0;
}

static json_t *id_of(json_t *request)
{
    json_t *id = json_is_object(request) ? json_object_get(request, "id") : NULL;
    return id ? json_incref(id) : json_null();
}

static void send_error_details(client_t *cl, json_t *request, const char *code, const char *message,
                               json_t *details)
{
    json_t *reply = json_pack("{s:b, s:o, s:{s:s, s:s}}", "ok", 0, "id", id_of(request), "error",
                              "code", code, "message", message);
    if (reply && details)
        json_object_set(json_object_get(reply, "error"), "details", details);
    json_decref(details);
    if (!reply) /* the message was not valid UTF-8: say so without echoing it */
        reply = json_pack("{s:b, s:o, s:{s:s, s:s}}", "ok", 0, "id", json_null(), "error", "code",
                          code, "message", "the error message could not be encoded");
    if (reply)
        send_reply(cl, reply);
    else
        client_close(cl);
}

static void send_error(client_t *cl, json_t *request, const char *code, const char *message)
{
    send_error_details(cl, request, code, message, NULL);
}

/* ---- requests ------------------------------------------------------------ */

static command_t *find_command(cad_control_t *c, const char *name)
{
    for (int i = 0; i < c->n_commands; i++)
        if (strcmp(c->commands[i].name, name) == 0)
            return &c->commands[i];
    return NULL;
}

static void handle_line(client_t *cl, const char *line, size_t len)
{
    cad_control_t *c = cl->ctl;
    c->requests++;
    json_error_t jerr;
    json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!req) {
        char msg[CAD_ERRBUF];
        snprintf(msg, sizeof(msg), "request is not valid JSON at column %d: %s", jerr.column,
                 jerr.text);
        send_error(cl, NULL, CAD_CONTROL_BAD_JSON, msg);
        return;
    }
    if (!json_is_object(req)) {
        send_error(cl, NULL, CAD_CONTROL_BAD_REQUEST,
                   "request must be a JSON object like {\"cmd\": \"status\"}");
        json_decref(req);
        return;
    }
    json_t *cmd = json_object_get(req, "cmd");
    if (!json_is_string(cmd)) {
        send_error(cl, req, CAD_CONTROL_BAD_REQUEST,
                   cmd ? "field \"cmd\" must be a string" : "missing required field \"cmd\"");
        json_decref(req);
        return;
    }
    const char *name = json_string_value(cmd);
    command_t *command = find_command(c, name);
    char msg[CAD_ERRBUF];
    if (!command) {
        snprintf(msg, sizeof(msg), "unknown command \"%.64s\" (\"help\" lists the commands)", name);
        send_error(cl, req, CAD_CONTROL_UNKNOWN_COMMAND, msg);
        json_decref(req);
        return;
    }
    if (command->admin_only && !cl->peer.admin) {
        snprintf(msg, sizeof(msg), "command \"%s\" needs the admin role; uid %u has read access",
                 command->name, (unsigned)cl->peer.uid);
        cad_log_notice("control: refused an admin command cmd=%s uid=%u pid=%d", command->name,
                       (unsigned)cl->peer.uid, (int)cl->peer.pid);
        send_error(cl, req, CAD_CONTROL_FORBIDDEN, msg);
        json_decref(req);
        return;
    }
    if (command->admin_only)
        cad_log_info("control: admin command cmd=%s uid=%u pid=%d", command->name,
                     (unsigned)cl->peer.uid, (int)cl->peer.pid);
    cad_control_error_t error = {.code = NULL, .message = "", .details = NULL};
    /* Any other command sees (and writes) only what is committed. */
    if (!command->grouped && group_mark(c) != 0)
        settle(c);
    json_t *result = command->fn(req, &cl->peer, command->arg, &error);
    bool depends = group_mark(c) != 0;
    if (depends && !c->check_active && !c->closing) { /* the group commits at the turn's end */
        uv_check_start(&c->check, on_check);
        c->check_active = true;
    }
    c->reply_depends = depends;
    if (!result) {
        if (!error.code) {
            error.code = CAD_CONTROL_INTERNAL;
            if (!error.message[0])
                snprintf(error.message, sizeof(error.message), "command \"%s\" failed",
                         command->name);
        }
        send_error_details(cl, req, error.code, error.message, error.details);
    } else {
        json_decref(error.details);
        json_t *reply = json_pack("{s:b, s:o, s:o}", "ok", 1, "id", id_of(req), "result", result);
        if (reply)
            send_reply(cl, reply);
        else
            send_error(cl, req, CAD_CONTROL_INTERNAL, "cannot build the reply");
    }
    c->reply_depends = false;
    json_decref(req);
}

static bool line_append(client_t *cl, const char *p, size_t n)
{
    if (n == 0)
        return true;
    if (cl->len + n > cl->cap) {
        size_t cap = cl->cap ? cl->cap : LINE_INITIAL_CAP;
        while (cap < cl->len + n)
            cap *= 2;
        char *line = realloc(cl->line, cap);
        if (!line)
            return false;
        cl->line = line;
        cl->cap = cap;
    }
    memcpy(cl->line + cl->len, p, n);
    cl->len += n;
    return true;
}

static void too_long(client_t *cl)
{
    char msg[CAD_ERRBUF];
    snprintf(msg, sizeof(msg),
             "request line longer than %u bytes; the rest of that line is discarded",
             (unsigned)cl->ctl->max_line);
    send_error(cl, NULL, CAD_CONTROL_LINE_TOO_LONG, msg);
    cl->discarding = true;
    cl->len = 0;
    if (cl->cap > LINE_INITIAL_CAP * 16) { /* give back a buffer an attacker grew */
        free(cl->line);
        cl->line = NULL;
        cl->cap = 0;
    }
}

static void feed(client_t *cl, const char *p, size_t n)
{
    while (n > 0 && !cl->closing) {
        const char *nl = memchr(p, '\n', n);
        size_t seg = nl ? (size_t)(nl - p) : n;
        if (!cl->discarding) {
            if (cl->len + seg > cl->ctl->max_line) {
                too_long(cl);
            } else if (!line_append(cl, p, seg)) {
                cad_log_err("control: out of memory reading a request uid=%u",
                            (unsigned)cl->peer.uid);
                client_close(cl);
                return;
            }
        }
        if (!nl)
            return;
        if (!cl->discarding) {
            size_t len = cl->len;
            if (len > 0 && cl->line[len - 1] == '\r')
                len--;
            bool blank = true;
            for (size_t i = 0; i < len && blank; i++)
                blank = cl->line[i] == ' ' || cl->line[i] == '\t';
            if (!blank)
                handle_line(cl, cl->line, len);
        }
        cl->discarding = false;
        cl->len = 0;
        p = nl + 1;
        n -= seg + 1;
        if (cl->paused && n > 0 && !cl->closing) {
            /* The rest waits in readbuf, which is not read into while
             * paused, until the replies drain. */
            cl->stash_off = (size_t)(p - cl->readbuf);
            cl->stash_len = n;
            return;
        }
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    client_t *cl = h->data;
    *buf = uv_buf_init(cl->readbuf, sizeof(cl->readbuf));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    client_t *cl = stream->data;
    if (nread > 0) {
        feed(cl, buf->base, (size_t)nread);
        return;
    }
    if (nread == UV_EOF) {
        if (cl->len > 0 && !cl->discarding && !cl->closing) /* a last line without newline */
            handle_line(cl, cl->line, cl->len);
        cl->len = 0;
        client_finish(cl);
    } else if (nread < 0) {
        client_close(cl);
    }
}

/* ---- connections --------------------------------------------------------- */

static void peer_credentials(client_t *cl)
{
    cad_control_t *c = cl->ctl;
    uv_os_fd_t fd;
    cl->peer.uid = (uid_t)-1;
    cl->peer.gid = (gid_t)-1;
    cl->peer.pid = 0;
    cl->peer.admin = false;
    if (uv_fileno((uv_handle_t *)&cl->pipe, &fd) != 0)
        return;
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return;
    cl->peer.uid = cred.uid;
    cl->peer.gid = cred.gid;
    cl->peer.pid = cred.pid;
#ifdef SO_PEERGROUPS
    socklen_t glen = sizeof(cl->groups);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, cl->groups, &glen) == 0)
        cl->n_groups = (int)(glen / sizeof(gid_t));
#endif
    cl->peer.admin = cad_control_peer_is_admin(c->access, c->n_access, geteuid(), cred.uid,
                                               cred.gid, cl->groups, cl->n_groups);
}

bool cad_control_peer_is_admin(const cad_access_rule_t *rules, int n_rules, uid_t self_uid,
                               uid_t uid, gid_t gid, const gid_t *groups, int n_groups)
{
    if (uid == 0 || uid == self_uid)
        return true;
    for (int i = 0; i < n_rules; i++) {
        const cad_access_rule_t *r = &rules[i];
        if (!r->admin)
            continue;
        if (!r->is_group) {
            if (r->id == (uint32_t)uid)
                return true;
            continue;
        }
        if (r->id == (uint32_t)gid)
            return true;
        for (int g = 0; g < n_groups; g++)
            if (r->id == (uint32_t)groups[g])
                return true;
    }
    return false;
}

static void on_connection(uv_stream_t *server, int status)
{
    cad_control_t *c = server->data;
    if (status < 0) {
        cad_log_warning("control: accept failed: %s", uv_strerror(status));
        return;
    }
    client_t *cl = calloc(1, sizeof(*cl));
    if (!cl) {
        cad_log_err("control: out of memory accepting a client");
        return;
    }
    cl->ctl = c;
    uv_pipe_init(c->loop, &cl->pipe, 0);
    cl->pipe.data = cl;
    c->handles_open++;
    cl->next = c->clients;
    if (c->clients)
        c->clients->prev = cl;
    c->clients = cl;
    if (uv_accept(server, (uv_stream_t *)&cl->pipe) != 0) {
        cl->rejected = true;
        client_close(cl);
        return;
    }
    peer_credentials(cl);
    if (c->n_clients >= (int)c->max_clients) {
        cl->rejected = true;
        cad_log_warning("control: too many clients, refusing one uid=%u pid=%d max_clients=%u",
                        (unsigned)cl->peer.uid, (int)cl->peer.pid, (unsigned)c->max_clients);
        char msg[CAD_ERRBUF];
        snprintf(msg, sizeof(msg), "too many clients connected (max_clients = %u); try again",
                 (unsigned)c->max_clients);
        send_error(cl, NULL, CAD_CONTROL_BUSY, msg);
        client_finish(cl);
        return;
    }
    c->n_clients++;
    cad_log_debug("control: client connected uid=%u pid=%d admin=%s", (unsigned)cl->peer.uid,
                  (int)cl->peer.pid, cl->peer.admin ? "yes" : "no");
    if (uv_read_start((uv_stream_t *)&cl->pipe, on_alloc, on_read) != 0)
        client_close(cl);
}

/* ---- the built-in help command ------------------------------------------- */

static json_t *cmd_help(json_t *request, const cad_control_peer_t *peer, void *arg,
                        cad_control_error_t *error)
{
    cad_control_t *c = arg;
    json_t *list = json_array();
    for (int i = 0; list && i < c->n_commands; i++)
        json_array_append_new(list, json_pack("{s:s, s:s}", "cmd", c->commands[i].name, "role",
                                              c->commands[i].admin_only ? "admin" : "read"));
    json_t *result = json_pack("{s:o, s:s}", "commands", list ? list : json_array(), "your_role",
                               peer->admin ? "admin" : "read");
    return result ? result : cad_control_fail(error, CAD_CONTROL_INTERNAL, "out of memory");
}

/* ---- the server ---------------------------------------------------------- */

static int apply_options(cad_control_t *c, const cad_control_options_t *opts, char *err)
{
    cad_access_rule_t *access = NULL;
    if (opts->n_access > 0) {
        access = malloc((size_t)opts->n_access * sizeof(*access));
        if (!access)
            return cad_fail(err, CAD_ENOMEM, "control: out of memory copying access rules");
        memcpy(access, opts->access, (size_t)opts->n_access * sizeof(*access));
    }
    free(c->access);
    c->access = access;
    c->n_access = opts->n_access > 0 ? opts->n_access : 0;
    c->max_line = opts->max_line ? opts->max_line : CAD_CONTROL_DEFAULT_MAX_LINE;
    c->max_clients = opts->max_clients ? opts->max_clients : CAD_CONTROL_DEFAULT_MAX_CLIENTS;
    c->max_pending = opts->max_pending_output ? opts->max_pending_output : DEFAULT_MAX_PENDING;
    if (c->max_pending < 4 * (size_t)c->max_line)
        c->max_pending = 4 * (size_t)c->max_line;
    return 0;
}

/* Refuses a path another daemon answers on; removes a stale socket file. */
static int clear_stale_socket(const char *path, char *err)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return 0;
        return cad_fail(err, CAD_EIO, "control socket %s: %s", path, strerror(errno));
    }
    if (!S_ISSOCK(st.st_mode))
        return cad_fail(err, CAD_EEXIST,
                        "control socket %s: the path exists and is not a socket; remove it or "
                        "choose another control.socket",
                        path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return cad_fail(err, CAD_EIO, "control socket %s: socket(): %s", path, strerror(errno));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    int saved = errno;
    close(fd);
    if (rc == 0)
        return cad_fail(err, CAD_EBUSY,
                        "control socket %s: another cadenced is answering there; stop it first "
                        "or choose another --socket",
                        path);
    if (saved != ECONNREFUSED)
        return cad_fail(err, CAD_EIO, "control socket %s: cannot probe the existing socket: %s",
                        path, strerror(saved));
    if (unlink(path) != 0 && errno != ENOENT)
        return cad_fail(err, CAD_EIO, "control socket %s: cannot remove the stale socket: %s", path,
                        strerror(errno));
    cad_log_notice("control: removed a stale socket file path=%s", path);
    return 0;
}

static void on_listener_closed(uv_handle_t *h)
{
    cad_control_t *c = h->data;
    c->handles_open--;
    maybe_free(c);
}

int cad_control_new(uv_loop_t *loop, const cad_control_options_t *opts, cad_control_t **out,
                    char *err)
{
    *out = NULL;
    const char *path = opts->socket_path;
    if (!path || !*path)
        return cad_fail(err, CAD_EINVAL, "control socket: no path configured");
    if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return cad_fail(err, CAD_EINVAL, "control socket %s: path longer than %zu bytes", path,
                        sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
    cad_control_t *c = calloc(1, sizeof(*c));
    if (!c || !(c->path = strdup(path))) {
        free(c);
        return cad_fail(err, CAD_ENOMEM, "control socket %s: out of memory", path);
    }
    c->loop = loop;
    int rc = apply_options(c, opts, err);
    if (rc == 0)
        rc = cad_control_register(c, "help", false, cmd_help, c);
    if (rc == 0)
        rc = clear_stale_socket(path, err);
    if (rc != 0) {
        free(c->access);
        free(c->commands);
        free(c->path);
        free(c);
        return rc;
    }
    uv_pipe_init(loop, &c->listener, 0);
    c->listener.data = c;
    c->handles_open = 1;
    uint32_t mode = opts->socket_mode ? opts->socket_mode : 0660;
    struct stat st;
    int uvrc = uv_pipe_bind(&c->listener, path);
    if (uvrc != 0) {
        rc = cad_fail(err, CAD_EIO, "control socket %s: cannot bind: %s", path, uv_strerror(uvrc));
    } else if (chmod(path, (mode_t)mode) != 0 || stat(path, &st) != 0) {
        rc = cad_fail(err, CAD_EIO, "control socket %s: cannot set mode %04o: %s", path,
                      (unsigned)mode, strerror(errno));
        unlink(path);
    } else if ((uvrc = uv_listen((uv_stream_t *)&c->listener, LISTEN_BACKLOG, on_connection)) !=
               0) {
        rc =
            cad_fail(err, CAD_EIO, "control socket %s: cannot listen: %s", path, uv_strerror(uvrc));
        unlink(path);
    }
    if (rc != 0) {
        /* The handle must still be closed through the loop; free afterwards. */
        c->closing = true;
        uv_close((uv_handle_t *)&c->listener, on_listener_closed);
        return rc;
    }
    c->dev = st.st_dev;
    c->ino = st.st_ino;
    c->listening = true;
    uv_check_init(loop, &c->check);
    c->check.data = c;
    c->handles_open++;
    uv_timer_init(loop, &c->stall_timer);
    c->stall_timer.data = c;
    c->handles_open++;
    *out = c;
    return 0;
}

int cad_control_register(cad_control_t *c, const char *name, bool admin_only,
                         cad_control_handler_fn fn, void *arg)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n >= CAD_CONTROL_NAME_MAX || !fn)
        return -CAD_EINVAL;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' ||
              ch == '.'))
            return -CAD_EINVAL;
    }
    if (find_command(c, name))
        return -CAD_EEXIST;
    if (c->n_commands == c->commands_cap) {
        int cap = c->commands_cap ? c->commands_cap * 2 : 16;
        command_t *t = realloc(c->commands, (size_t)cap * sizeof(*t));
        if (!t)
            return -CAD_ENOMEM;
        c->commands = t;
        c->commands_cap = cap;
    }
    command_t *cmd = &c->commands[c->n_commands++];
    memcpy(cmd->name, name, n + 1);
    cmd->admin_only = admin_only;
    cmd->grouped = false;
    cmd->fn = fn;
    cmd->arg = arg;
    return 0;
}

void cad_control_set_group(cad_control_t *c, const cad_control_group_t *group)
{
    c->group = *group;
}

int cad_control_set_grouped(cad_control_t *c, const char *name)
{
    command_t *command = name ? find_command(c, name) : NULL;
    if (!command)
        return -CAD_ENOTFOUND;
    command->grouped = true;
    return 0;
}

int cad_control_update(cad_control_t *c, const cad_control_options_t *opts, char *err)
{
    return apply_options(c, opts, err);
}

void cad_control_stop_listening(cad_control_t *c)
{
    if (!c || !c->listening)
        return;
    c->listening = false;
    struct stat st;
    if (stat(c->path, &st) == 0 && st.st_dev == c->dev && st.st_ino == c->ino)
        unlink(c->path);
    uv_close((uv_handle_t *)&c->listener, on_listener_closed);
}

void cad_control_close(cad_control_t *c, void (*done)(void *arg), void *arg)
{
    if (!c)
        return;
    c->done = done;
    c->done_arg = arg;
    flush_held(c); /* commits what was answered; the replies may not get out */
    cad_control_stop_listening(c);
    c->closing = true;
    uv_close((uv_handle_t *)&c->check, on_listener_closed);
    uv_close((uv_handle_t *)&c->stall_timer, on_listener_closed);
    for (client_t *cl = c->clients; cl; cl = cl->next)
        client_close(cl);
    maybe_free(c);
}

void cad_control_stats(const cad_control_t *c, int *clients, int64_t *requests)
{
    if (clients)
        *clients = c->n_clients;
    if (requests)
        *requests = c->requests;
}
