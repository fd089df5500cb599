/*
 * control.h — the control socket: newline-delimited JSON over a Unix stream.
 *
 * Each request is one line holding a JSON object {"cmd": "...", "id": any,
 * ...}; each reply is one line, {"ok":true,"id":...,"result":{...}} or
 * {"ok":false,"id":...,"error":{"code":"...","message":"..."}}. Commands live
 * in a table filled with cad_control_register(), so a module adds its
 * commands (customer, event, report, ...) without touching control.c.
 *
 * Peers are identified by SO_PEERCRED. uid 0 and the daemon's own uid are
 * admin; otherwise the access rules decide (a uid or any of the peer's groups
 * matching an admin rule makes it admin); a peer no rule names gets the read
 * role, because reaching the socket already required its file mode (0660 by
 * default: the daemon's user and group). Admin-only commands answer
 * "forbidden" to read peers.
 *
 * Bad input never costs the connection: bad JSON, an unknown command or a
 * line longer than max_line each get an error reply and the next line is
 * read as usual. A client whose replies pile up unread is no longer read
 * until they drain, and is disconnected when it takes none for a while or
 * its unsent output passes a bound; the loop never waits for a client.
 */
#ifndef CADENCE_CONTROL_H
#define CADENCE_CONTROL_H

#include "common.h"
#include "config.h"

#include <jansson.h>
#include <sys/types.h>
#include <uv.h>

typedef struct cad_control cad_control_t;

/* Error codes of the protocol (error.code in a reply). */
#define CAD_CONTROL_BAD_JSON        "bad_json"
#define CAD_CONTROL_UNKNOWN_COMMAND "unknown_command"
#define CAD_CONTROL_LINE_TOO_LONG   "line_too_long"
#define CAD_CONTROL_BAD_REQUEST     "bad_request"
#define CAD_CONTROL_FORBIDDEN       "forbidden"
#define CAD_CONTROL_INTERNAL        "internal"
#define CAD_CONTROL_NOT_FOUND       "not_found"
#define CAD_CONTROL_BUSY            "busy"
#define CAD_CONTROL_INVALID_CONFIG  "invalid_config"

#define CAD_CONTROL_NAME_MAX            32
#define CAD_CONTROL_DEFAULT_MAX_LINE    65536
#define CAD_CONTROL_DEFAULT_MAX_CLIENTS 64

typedef struct cad_control_options {
    const char *socket_path;         /* required; at most 107 bytes */
    uint32_t socket_mode;            /* 0 = 0660 */
    const cad_access_rule_t *access; /* copied */
    int n_access;
    uint32_t max_line;         /* 0 = CAD_CONTROL_DEFAULT_MAX_LINE */
    uint32_t max_clients;      /* 0 = CAD_CONTROL_DEFAULT_MAX_CLIENTS */
    size_t max_pending_output; /* bytes of unsent replies per client; 0 = default */
} cad_control_options_t;

/* Who is asking, from the connection's peer credentials. */
typedef struct cad_control_peer {
    pid_t pid;
    uid_t uid;
    gid_t gid;
    bool admin;
} cad_control_peer_t;

/* Filled by a handler that fails: code is one of the CAD_CONTROL_* strings. */
typedef struct cad_control_error {
    const char *code;
    char message[CAD_ERRBUF];
    json_t *details; /* optional new reference, sent as error.details (e.g. every config error) */
} cad_control_error_t;

/* A command. `request` is the parsed request object (borrowed; fields other
 * than "cmd" and "id" are the command's arguments). Returns a new reference
 * to the result (any JSON value, usually an object), which the control
 * server owns from then on, or NULL after filling `error` (see
 * cad_control_fail). Runs on the loop thread and must not block. */
typedef json_t *(*cad_control_handler_fn)(json_t *request, const cad_control_peer_t *peer,
                                          void *arg, cad_control_error_t *error);

/* Binds and listens on opts->socket_path: a stale socket file (no one
 * answering) is replaced; a live one (another daemon answers) is refused with
 * -CAD_EBUSY; a path that is not a socket is refused with -CAD_EEXIST. The
 * built-in "help" command lists the table. Free with cad_control_close. */
int cad_control_new(uv_loop_t *loop, const cad_control_options_t *opts, cad_control_t **out,
                    char *err);

/* Adds a command. `name` is copied; `arg` is borrowed and handed to fn.
 * -CAD_EEXIST when the name is taken, -CAD_EINVAL for a bad name. */
int cad_control_register(cad_control_t *c, const char *name, bool admin_only,
                         cad_control_handler_fn fn, void *arg);

/* Group commit of the handlers' writes. A grouped command (see
 * cad_control_set_grouped) may leave its writes uncommitted (in an open
 * store batch); while they are, every reply is held, with every later reply
 * to the same client, until the group is committed: at the end of the loop
 * turn, or before any command that is not grouped runs (so it sees and
 * writes only committed data). `commit` runs once for the whole group. When
 * it fails, each reply given while the group was open becomes an `internal`
 * error saying nothing of that request was kept (refusals of malformed
 * requests stay as they were). */
typedef struct cad_control_group {
    /* 0 when nothing waits for a commit; otherwise a value that moves with
     * every uncommitted write (compared before and after each handler). */
    int64_t (*uncommitted)(void *arg);
    /* Commits what waits: 0, or a negative code after filling `err`. */
    int (*commit)(void *arg, char *err);
    void *arg; /* borrowed */
} cad_control_group_t;

/* Installs the group commit hooks (copied); without them every reply is sent
 * at once. */
void cad_control_set_group(cad_control_t *c, const cad_control_group_t *group);
/* Marks a registered command as one that joins the group (its handler may
 * leave writes for the group commit). -CAD_ENOTFOUND for an unknown name. */
int cad_control_set_grouped(cad_control_t *c, const char *name);

/* Applies reloaded limits and access rules (path and mode stay as bound). */
int cad_control_update(cad_control_t *c, const cad_control_options_t *opts, char *err);

/* Closes the listening socket and removes its file; connected clients are
 * still served until cad_control_close. Idempotent. */
void cad_control_stop_listening(cad_control_t *c);

/* Closes the listener and every client, then frees `c` once libuv has
 * released every handle; `done` (may be NULL) runs then. */
void cad_control_close(cad_control_t *c, void (*done)(void *arg), void *arg);

/* Number of connected clients and requests answered since start. */
void cad_control_stats(const cad_control_t *c, int *clients, int64_t *requests);

/* The access decision for a peer: true (admin) for uid 0 and `self_uid`, or
 * when the uid, the gid or one of `groups` matches an admin rule; false
 * (read role) otherwise. */
bool cad_control_peer_is_admin(const cad_access_rule_t *rules, int n_rules, uid_t self_uid,
                               uid_t uid, gid_t gid, const gid_t *groups, int n_groups);

/* Fills `error` and returns NULL, so a handler can `return cad_control_fail(...)`. */
json_t *cad_control_fail(cad_control_error_t *error, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Argument helpers for handlers. Each returns 0 and sets *out (left untouched
 * when the key is absent and not required), or -CAD_EINVAL after filling
 * `error` with bad_request naming the field. Strings are borrowed from the
 * request. */
int cad_control_arg_string(json_t *request, const char *key, bool required, const char **out,
                           cad_control_error_t *error);
int cad_control_arg_int(json_t *request, const char *key, bool required, int64_t *out,
                        cad_control_error_t *error);
int cad_control_arg_bool(json_t *request, const char *key, bool required, bool *out,
                         cad_control_error_t *error);

#endif
