/*
 * daemon.h — the running daemon: one libuv loop and everything hung on it.
 *
 * cad_daemon_new() loads the config, applies overrides (command-line flags
 * win over systemd's $STATE_DIRECTORY / $RUNTIME_DIRECTORY /
 * $CREDENTIALS_DIRECTORY, which win over the config file; --plugin-dir wins
 * over plugins.dir), binds the control
 * socket, opens the store and creates the scheduler. cad_daemon_run() sends
 * READY=1 and runs the loop until SIGTERM/SIGINT has drained everything.
 * SIGHUP (or the "reload" command) re-reads the config: a valid one is swapped
 * in, an invalid one is logged error by error and the old one keeps running.
 *
 * Other modules plug in between new and run: they register control commands
 * on cad_daemon_control(), ask to hear about reloads (cad_daemon_on_reload)
 * and, if they hold in-flight work, register as a service that is asked to
 * stop at shutdown and reports when it has (cad_daemon_add_service).
 */
#ifndef CADENCE_DAEMON_H
#define CADENCE_DAEMON_H

#include "common.h"
#include "config.h"
#include "control.h"
#include "dispatch.h"
#include "plugin_host.h"
#include "scheduler.h"
#include "store.h"

#include <uv.h>

typedef struct cad_daemon cad_daemon_t;

typedef struct cad_daemon_options {
    const char *config_path; /* required */
    const char *state_dir;   /* --state-dir or NULL */
    const char *socket_path; /* --socket or NULL */
    const char *plugin_dir;  /* --plugin-dir or NULL */
    int log_level;           /* --log-level (enum cad_log_level) or -1: the config's */
} cad_daemon_options_t;

/* Builds the daemon: config, overrides, state directory, control socket,
 * store (<state_dir>/cadence.db), scheduler, signal handlers. Strings in
 * `opts` are copied. On failure returns a negative code and `err` names what
 * failed (config errors are logged one per line); nothing is left open. */
int cad_daemon_new(const cad_daemon_options_t *opts, cad_daemon_t **out, char *err);

/* Loads the config exactly as cad_daemon_new would — overrides applied, the
 * state directory created — for the one-shot modes (--import, --simulate).
 * Config errors go to stderr one per line. The caller frees *out. */
int cad_daemon_prepare_config(const cad_daemon_options_t *opts, cad_config_t **out, char *err);

/* Notifies READY=1 and runs the loop until shutdown. Returns the process exit
 * status: 0 after an orderly shutdown. */
int cad_daemon_run(cad_daemon_t *d);

/* Frees what cad_daemon_run left (the store is closed, committing). NULL-safe. */
void cad_daemon_free(cad_daemon_t *d);

/* Re-reads the config file. Returns 0 when the new config is in force, or
 * -CAD_EINVAL / -CAD_EIO when it was rejected; then *errors (if not NULL)
 * receives a new JSON array of the "FILE:LINE: message" strings (caller
 * decrefs) and the running config is unchanged. */
int cad_daemon_reload(cad_daemon_t *d, json_t **errors);

/* Begins the orderly shutdown (what SIGTERM does). */
void cad_daemon_shutdown(cad_daemon_t *d);

/* True after cad_daemon_run when shutdown had to leave a plugin's send()
 * running on the thread pool (a plugin stuck past engine.shutdown_timeout).
 * The process must then end with _exit() once cad_daemon_free has closed
 * the store: exit() would wait for that thread in libuv's exit handler. */
bool cad_daemon_work_abandoned(const cad_daemon_t *d);

/* Borrowed accessors. The config pointer changes on reload: look it up per
 * use (or use cad_daemon_on_reload), never keep it across loop turns. */
uv_loop_t *cad_daemon_loop(cad_daemon_t *d);
cad_control_t *cad_daemon_control(cad_daemon_t *d);
cad_store_t *cad_daemon_store(cad_daemon_t *d);
cad_scheduler_t *cad_daemon_scheduler(cad_daemon_t *d);
const cad_config_t *cad_daemon_config(cad_daemon_t *d);
/* The outbox dispatcher and the plugin host (replaced on reload: look them
 * up per use). NULL once shutdown has stopped them. */
cad_dispatch_t *cad_daemon_dispatch(cad_daemon_t *d);
cad_plugin_host_t *cad_daemon_plugin_host(cad_daemon_t *d);

/* Called after a reload with the new config, before the old one is freed. */
typedef void (*cad_daemon_reload_fn)(const cad_config_t *cfg, void *arg);
int cad_daemon_on_reload(cad_daemon_t *d, cad_daemon_reload_fn fn, void *arg);

/* A module with in-flight work (the dispatcher). At shutdown, after the
 * listener is closed and the scheduler stopped, `stop` is called once; the
 * service finishes or abandons its work and then calls
 * cad_daemon_service_stopped(d, name). The daemon waits for every service at
 * most engine.shutdown_timeout before closing anyway. `name` is copied. */
typedef void (*cad_daemon_stop_fn)(cad_daemon_t *d, void *arg);
int cad_daemon_add_service(cad_daemon_t *d, const char *name, cad_daemon_stop_fn stop, void *arg);
void cad_daemon_service_stopped(cad_daemon_t *d, const char *name);

#endif
