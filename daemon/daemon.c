/*
 * daemon.c — the running daemon's context (see daemon.h).
 *
 * Start: config → overrides → state directory → control socket (bound first,
 * so a second daemon is refused before it touches the database) → store →
 * scheduler → signal handlers and timers. READY=1 goes out when the loop
 * starts, by which time the socket is bound and the store open.
 *
 * Shutdown is a small state machine driven by the loop: STOPPING=1, close
 * the listening socket, stop the scheduler (its pending writes commit), ask
 * every registered service to stop, and wait for them at most
 * engine.shutdown_timeout. Then every handle is closed through its close
 * callback, uv_run returns, and the store is closed last, committing. A
 * second SIGTERM skips the wait. A last-resort timer stops the loop should a
 * module leave a handle open, so the process always exits.
 */
#include "daemon.h"

#include "log.h"
#include "notify.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STATUS_INTERVAL_MS  15000
#define LAST_RESORT_MS      3000
#define DEFAULT_SHUTDOWN_MS 10000

#define DAEMON_BUSY_TIMEOUT_MS 250 /* a write waiting for another process's lock */

typedef struct reload_hook {
    cad_daemon_reload_fn fn;
    void *arg;
} reload_hook_t;

typedef struct service {
    char *name;
    cad_daemon_stop_fn stop;
    void *arg;
    bool stopped;
} service_t;

#define MAX_CLOSING_HOSTS 8 /* reloads in a row; beyond, an old host closes at once */

struct closing_host {
    cad_daemon_t *d;
    cad_plugin_host_t *host;
};

struct cad_daemon {
    uv_loop_t loop;
    char *config_path;
    char *state_dir_flag;
    char *socket_flag;
    char *plugin_dir_flag;
    int log_level_flag;
    cad_config_t *cfg;
    cad_store_t *store;
    cad_scheduler_t *scheduler;
    cad_control_t *control;
    cad_plugin_host_t *host;      /* the channel plugins, rebuilt on reload */
    cad_plugin_host_t *next_host; /* a reload's new host, checked before the swap */
    /* Hosts a reload replaced, finishing their transfers in flight. */
    struct closing_host *closing[MAX_CLOSING_HOSTS];
    int n_closing;
    cad_dispatch_t *dispatch; /* the outbox dispatcher */
    bool dispatch_stopping;   /* stop asked; host and dispatcher finishing */
    uv_signal_t sig_hup, sig_term, sig_int;
    uv_timer_t watchdog, status_timer, shutdown_timer, last_resort;
    uint64_t watchdog_usec;
    uint64_t started_hr;
    time_t started_at;
    int64_t reloads, reload_failures;
    time_t last_reload_at;
    bool last_reload_ok;
    reload_hook_t *hooks;
    int n_hooks;
    service_t *services;
    int n_services;
    bool stopping, finishing, loop_forced, loop_open;
    bool work_abandoned; /* shutdown left a plugin's send() running (close_loop) */
    int exit_code;
};

/* ---- paths and overrides ------------------------------------------------- */

/* The first entry of a colon-separated systemd directory list, or NULL. */
static char *first_dir(const char *list)
{
    if (!list || !*list)
        return NULL;
    size_t n = strcspn(list, ":");
    return n ? strndup(list, n) : NULL;
}

static int replace(char **field, char *value, const char *what, char *err)
{
    if (!value)
        return cad_fail(err, CAD_ENOMEM, "out of memory setting %s", what);
    free(*field);
    *field = value;
    return 0;
}

/* Flags win over the environment systemd sets, which wins over the file. */
static int apply_overrides(const cad_daemon_t *d, cad_config_t *cfg, char *err)
{
    int rc = 0;
    char *env;
    if (d->state_dir_flag)
        rc = replace(&cfg->state_dir, strdup(d->state_dir_flag), "the state directory", err);
    else if ((env = first_dir(getenv("STATE_DIRECTORY"))))
        rc = replace(&cfg->state_dir, env, "the state directory", err);
    if (rc != 0)
        return rc;
    if (d->socket_flag) {
        rc = replace(&cfg->socket_path, strdup(d->socket_flag), "the socket path", err);
    } else if ((env = first_dir(getenv("RUNTIME_DIRECTORY")))) {
        size_t n = strlen(env) + sizeof("/control.sock");
        char *p = malloc(n);
        if (p)
            snprintf(p, n, "%s/control.sock", env);
        free(env);
        rc = replace(&cfg->socket_path, p, "the socket path", err);
    }
    if (rc != 0)
        return rc;
    if (d->plugin_dir_flag)
        rc = replace(&cfg->plugin_dir, strdup(d->plugin_dir_flag), "the plugin directory", err);
    if (rc != 0)
        return rc;
    const char *creds = getenv("CREDENTIALS_DIRECTORY");
    if (creds && *creds)
        rc = replace(&cfg->credentials_dir, strdup(creds), "the credentials directory", err);
    if (rc != 0)
        return rc;
    if (!cfg->state_dir || !*cfg->state_dir)
        return cad_fail(err, CAD_EINVAL,
                        "%s: no state directory: set store.state_dir or pass --state-dir",
                        d->config_path);
    if (!cfg->socket_path || !*cfg->socket_path)
        return cad_fail(err, CAD_EINVAL,
                        "%s: no control socket path: set control.socket or pass --socket",
                        d->config_path);
    return 0;
}

/* mkdir -p with mode 0750 for the directories it creates. */
static int make_dirs(const char *path, char *err)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(buf))
        return cad_fail(err, CAD_EINVAL, "state directory \"%s\": bad length", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0750) != 0 && errno != EEXIST)
            return cad_fail(err, CAD_EIO, "state directory %s: cannot create %s: %s", path, buf,
                            strerror(errno));
        buf[i] = saved;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return cad_fail(err, CAD_EIO, "state directory %s: not a directory", path);
    return 0;
}

/* Loads the config, logging each error line; *errors gets them as JSON. */
static int load_config(cad_daemon_t *d, cad_config_t **out, json_t **errors, char *err)
{
    char *text = NULL;
    size_t len = 0;
    char empty[1] = "";
    FILE *mem = open_memstream(&text, &len);
    if (!mem)
        return cad_fail(err, CAD_ENOMEM, "out of memory loading %s", d->config_path);
    int rc = cad_config_load(d->config_path, out, mem);
    fclose(mem);
    if (rc != 0) {
        json_t *list = errors ? json_array() : NULL;
        int count = 0;
        for (char *line = strtok(text ? text : empty, "\n"); line; line = strtok(NULL, "\n")) {
            cad_log_err("config: %s", line);
            if (list)
                json_array_append_new(list, json_string(line));
            count++;
        }
        if (count == 0) {
            cad_log_err("config: %s: cannot be loaded (%s)", d->config_path, cad_strerror(rc));
            if (list)
                json_array_append_new(list, json_sprintf("%s: cannot be loaded (%s)",
                                                         d->config_path, cad_strerror(rc)));
        }
        if (errors)
            *errors = list;
        cad_fail(err, -rc, "%s: %d error%s in the configuration", d->config_path, count ? count : 1,
                 count == 1 ? "" : "s");
        *out = NULL;
    }
    free(text);
    return rc;
}

static cad_control_options_t control_options(const cad_config_t *cfg)
{
    cad_control_options_t o = {
        .socket_path = cfg->socket_path,
        .socket_mode = cfg->socket_mode,
        .access = cfg->access,
        .n_access = cfg->n_access,
        .max_line = cfg->max_line,
        .max_clients = cfg->max_clients,
    };
    return o;
}

/* ---- status -------------------------------------------------------------- */

/* The service's STATUS= line, every STATUS_INTERVAL_MS: only figures that
 * cost no scan of the history (a full count of a store with millions of
 * touches would stall the loop each time). */
static void refresh_status(cad_daemon_t *d)
{
    int64_t queued = 0, alerts = 0;
    char err[CAD_ERRBUF];
    if (!d->store || cad_store_backlog(d->store, &queued, &alerts, err) != 0) {
        cad_notify_status("%s", d->stopping ? "stopping" : "running");
        return;
    }
    cad_scheduler_stats_t ss = {0};
    if (d->scheduler)
        cad_scheduler_get_stats(d->scheduler, &ss);
    cad_dispatch_stats_t ds = {0};
    if (d->dispatch)
        cad_dispatch_get_stats(d->dispatch, &ds);
    cad_notify_status("%s: %lld customers scheduled, %lld touches queued, %lld delivered and "
                      "%lld dead since start, %lld open alerts",
                      d->stopping ? "stopping" : "running", (long long)ss.customers,
                      (long long)queued, (long long)ds.delivered, (long long)ds.dead,
                      (long long)alerts);
}

static void on_status_timer(uv_timer_t *t)
{
    refresh_status(t->data);
}

static void on_watchdog(uv_timer_t *t)
{
    cad_notify_watchdog();
}

/* The channels whose plugin is not loaded, as [{channel, error}]: their
 * touches wait in the outbox. */
static json_t *channels_not_loaded(const cad_daemon_t *d)
{
    json_t *down = json_array();
    if (!d->host && d->dispatch) { /* a reload could not start the plugin host at all */
        for (int i = 0; down && i < d->cfg->playbook.n_channels; i++)
            json_array_append_new(down, json_pack("{s:s, s:s}", "channel",
                                                  d->cfg->playbook.channels[i].name, "error",
                                                  "the channel plugins could not be loaded; "
                                                  "see the log"));
        return down;
    }
    cad_plugin_info_t info[CAD_MAX_CHANNELS];
    int n = d->host ? cad_plugin_host_list(d->host, info, CAD_MAX_CHANNELS) : 0;
    for (int i = 0; down && i < n && i < CAD_MAX_CHANNELS; i++)
        if (!info[i].loaded)
            json_array_append_new(down, json_pack("{s:s, s:s}", "channel", info[i].channel, "error",
                                                  info[i].error ? info[i].error : ""));
    return down;
}

/* The channels the dispatcher does not send on: disabled because their
 * endpoint is gone or credentials refused (`disabled`: they wait for a reload), or with their
 * circuit open; as [{channel, since, error}], "circuit" too for the latter. */
static json_t *channels_held(const cad_daemon_t *d, bool disabled)
{
    json_t *off = json_array();
    if (!d->dispatch || !off)
        return off;
    cad_dispatch_stats_t *ds = malloc(sizeof *ds);
    if (!ds)
        return off;
    cad_dispatch_get_stats(d->dispatch, ds);
    for (int i = 0; i < ds->n_channels; i++) {
        const cad_dispatch_channel_stats_t *ch = &ds->channels[i];
        if (disabled && ch->disabled)
            json_array_append_new(off, json_pack("{s:s, s:I, s:s}", "channel", ch->channel, "since",
                                                 (json_int_t)ch->disabled_since, "error",
                                                 ch->last_error));
        else if (!disabled && !ch->disabled && ch->circuit != CAD_CIRCUIT_CLOSED)
            json_array_append_new(off, json_pack("{s:s, s:s, s:I, s:s}", "channel", ch->channel,
                                                 "circuit", cad_circuit_state_name(ch->circuit),
                                                 "since", (json_int_t)ch->circuit_since, "error",
                                                 ch->last_error));
    }
    free(ds);
    return off;
}

static json_t *cmd_status(json_t *request, const cad_control_peer_t *peer, void *arg,
                          cad_control_error_t *error)
{
    cad_daemon_t *d = arg;
    json_t *r = json_object();
    if (!r)
        return cad_control_fail(error, CAD_CONTROL_INTERNAL, "out of memory");
    uint64_t uptime = (uv_hrtime() - d->started_hr) / 1000000000u;
    json_object_set_new(r, "version", json_string(CADENCE_VERSION));
    json_object_set_new(r, "pid", json_integer(getpid()));
    json_object_set_new(r, "uptime", json_integer((json_int_t)uptime));
    json_object_set_new(r, "started_at", json_integer((json_int_t)d->started_at));
    json_object_set_new(r, "state", json_string(d->stopping ? "stopping" : "running"));
    json_object_set_new(r, "config", json_string(d->config_path));
    json_object_set_new(r, "state_dir", json_string(d->cfg->state_dir));
    json_object_set_new(r, "socket", json_string(d->cfg->socket_path));
    json_object_set_new(r, "plugin_dir",
                        d->cfg->plugin_dir ? json_string(d->cfg->plugin_dir) : json_null());
    json_object_set_new(r, "credentials_dir",
                        d->cfg->credentials_dir ? json_string(d->cfg->credentials_dir)
                                                : json_null());
    json_object_set_new(r, "log_level", json_string(cad_log_level_name(cad_log_get_level())));
    json_object_set_new(r, "playbook",
                        json_pack("{s:i, s:i}", "rules", d->cfg->playbook.n_rules, "channels",
                                  d->cfg->playbook.n_channels));
    json_object_set_new(r, "channels_not_loaded", channels_not_loaded(d));
    json_object_set_new(r, "channels_disabled", channels_held(d, true));
    json_object_set_new(r, "circuits_open", channels_held(d, false));
    json_object_set_new(r, "store",
                        json_pack("{s:s, s:i, s:i}", "path", cad_store_path(d->store),
                                  "schema_version", cad_store_user_version(d->store),
                                  "schema_version_supported", cad_store_schema_version()));

    cad_store_counts_t counts;
    char err[CAD_ERRBUF];
    if (cad_store_counts(d->store, &counts, err) == 0) {
        json_t *touches = json_object();
        for (int s = CAD_OUTBOX_QUEUED; s <= CAD_OUTBOX_CANCELLED; s++)
            json_object_set_new(touches, cad_outbox_state_name((enum cad_outbox_state)s),
                                json_integer(counts.outbox[s]));
        json_object_set_new(
            r, "counts",
            json_pack("{s:I, s:I, s:I, s:I, s:o, s:I}", "customers", (json_int_t)counts.customers,
                      "contacts", (json_int_t)counts.contacts, "events", (json_int_t)counts.events,
                      "decisions", (json_int_t)counts.decisions, "touches", touches, "alerts_open",
                      (json_int_t)counts.alerts_open));
    } else {
        cad_log_err("status: cannot count the store: %s", err);
        json_object_set_new(r, "counts", json_null());
        json_object_set_new(r, "counts_error", json_string(err));
    }

    cad_scheduler_stats_t st;
    cad_scheduler_get_stats(d->scheduler, &st);
    json_object_set_new(
        r, "scheduler",
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "customers", (json_int_t)st.customers,
                  "evaluations", (json_int_t)st.evaluations, "touches_decided",
                  (json_int_t)st.touches_decided, "suppressed", (json_int_t)st.suppressed,
                  "deferred", (json_int_t)st.deferred, "errors", (json_int_t)st.errors, "next_due",
                  st.next_due == CAD_TIME_NEVER ? json_null() : json_integer(st.next_due)));

    int clients = 0;
    int64_t requests = 0;
    cad_control_stats(d->control, &clients, &requests);
    json_object_set_new(r, "control",
                        json_pack("{s:i, s:I, s:s}", "clients", clients, "requests",
                                  (json_int_t)requests, "your_role",
                                  peer->admin ? "admin" : "read"));
    json_object_set_new(
        r, "reloads",
        json_pack("{s:I, s:I, s:o, s:o}", "count", (json_int_t)d->reloads, "failed",
                  (json_int_t)d->reload_failures, "last_at",
                  d->last_reload_at ? json_integer(d->last_reload_at) : json_null(), "last_ok",
                  d->last_reload_at ? json_boolean(d->last_reload_ok) : json_null()));
    return r;
}

static json_t *cmd_reload(json_t *request, const cad_control_peer_t *peer, void *arg,
                          cad_control_error_t *error)
{
    cad_daemon_t *d = arg;
    json_t *errors = NULL;
    if (cad_daemon_reload(d, &errors) != 0) {
        size_t n = errors ? json_array_size(errors) : 0;
        const char *first = n ? json_string_value(json_array_get(errors, 0)) : "unknown error";
        cad_control_fail(error, CAD_CONTROL_INVALID_CONFIG,
                         "the configuration was not reloaded (%zu error%s; the running one is "
                         "kept): %s",
                         n, n == 1 ? "" : "s", first ? first : "unknown error");
        error->details = errors;
        return NULL;
    }
    return json_pack("{s:b, s:s, s:o}", "reloaded", 1, "config", d->config_path,
                     "channels_not_loaded", channels_not_loaded(d));
}

/* ---- reload -------------------------------------------------------------- */

/* Settings that need a restart keep their running values. */
static int keep_restart_only(cad_daemon_t *d, cad_config_t *ncfg, char *err)
{
    const cad_config_t *old = d->cfg;
    if (strcmp(ncfg->state_dir, old->state_dir) != 0) {
        cad_log_warning("reload: a new state directory needs a restart; keeping the running one "
                        "state_dir=%s",
                        old->state_dir);
        if (replace(&ncfg->state_dir, strdup(old->state_dir), "the state directory", err) != 0)
            return -CAD_ENOMEM;
    }
    if (strcmp(ncfg->socket_path, old->socket_path) != 0 || ncfg->socket_mode != old->socket_mode) {
        cad_log_warning("reload: a new control socket path or mode needs a restart; keeping the "
                        "running one socket=%s",
                        old->socket_path);
        if (replace(&ncfg->socket_path, strdup(old->socket_path), "the socket path", err) != 0)
            return -CAD_ENOMEM;
        ncfg->socket_mode = old->socket_mode;
    }
    if (ncfg->sync != old->sync)
        cad_log_warning("reload: a new store.sync level takes effect at the next restart");
    return 0;
}

/* Builds the plugin host of a new configuration before it is applied, into
 * d->next_host. A channel running now whose plugin would not start under
 * the new settings (a wrong url, a missing secret) rejects the reload: it
 * keeps running as it is. One line per such channel ("FILE:LINE: ...") is
 * appended to *errors. A channel that was not running, or is new, may
 * fail: it is reported as not loaded, as at start. */
static int build_next_host(cad_daemon_t *d, const cad_config_t *ncfg, json_t **errors, char *err)
{
    if (!d->dispatch || d->dispatch_stopping)
        return 0;
    int rc = cad_plugin_host_new(&d->loop, ncfg, &d->next_host, err);
    if (rc != 0 && !d->host)
        return 0; /* nothing runs now: the reload goes on without plugins */
    if (rc != 0)
        return rc;
    cad_plugin_info_t *now = calloc(2 * CAD_MAX_CHANNELS, sizeof *now);
    if (!now)
        return cad_fail(err, CAD_ENOMEM, "out of memory");
    cad_plugin_info_t *next = now + CAD_MAX_CHANNELS;
    int n_now = d->host ? cad_plugin_host_list(d->host, now, CAD_MAX_CHANNELS) : 0;
    int n_next = cad_plugin_host_list(d->next_host, next, CAD_MAX_CHANNELS);
    int refused = 0;
    for (int i = 0; i < n_next; i++) {
        if (next[i].loaded)
            continue;
        bool running = false;
        for (int k = 0; k < n_now && !running; k++)
            running = now[k].loaded && strcmp(now[k].channel, next[i].channel) == 0;
        if (!running)
            continue;
        int c = cad_playbook_channel(&ncfg->playbook, next[i].channel);
        char line[CAD_ERRBUF + 256];
        snprintf(line, sizeof line,
                 "%s:%d: channel \"%s\": kept running as it is; with the new configuration: %s",
                 ncfg->path ? ncfg->path : d->config_path,
                 c >= 0 ? ncfg->playbook.channels[c].line : 0, next[i].channel,
                 next[i].error ? next[i].error : "its plugin did not start");
        cad_log_err("reload: %s", line);
        if (refused++ == 0)
            snprintf(err, CAD_ERRBUF, "%.*s", CAD_ERRBUF - 1, line);
        if (errors) {
            if (!*errors)
                *errors = json_array();
            json_array_append_new(*errors, json_string(line));
        }
    }
    free(now);
    if (refused == 0)
        return 0;
    cad_plugin_host_close(d->next_host, 0, NULL, NULL);
    d->next_host = NULL;
    return -CAD_EINVAL;
}

int cad_daemon_reload(cad_daemon_t *d, json_t **errors)
{
    if (errors)
        *errors = NULL;
    cad_notify_reloading();
    cad_log_notice("reload: re-reading the configuration config=%s", d->config_path);
    d->reloads++;
    d->last_reload_at = time(NULL);
    char err[CAD_ERRBUF];
    cad_config_t *ncfg = NULL;
    int rc = load_config(d, &ncfg, errors, err);
    if (rc == 0 && (rc = apply_overrides(d, ncfg, err)) == 0)
        rc = keep_restart_only(d, ncfg, err);
    bool reported = false;
    if (rc == 0 && (rc = build_next_host(d, ncfg, errors, err)) == -CAD_EINVAL)
        reported = true; /* one line per channel kept */
    if (rc == 0) {
        cad_control_options_t co = control_options(ncfg);
        rc = cad_control_update(d->control, &co, err);
    }
    if (rc != 0) {
        if (d->next_host) {
            cad_plugin_host_close(d->next_host, 0, NULL, NULL);
            d->next_host = NULL;
        }
        if (ncfg && !reported) { /* loaded but not applicable: report the reason */
            cad_log_err("reload: %s", err);
            if (errors) {
                *errors = json_array();
                json_array_append_new(*errors, json_string(err));
            }
        }
        cad_config_free(ncfg);
        d->reload_failures++;
        d->last_reload_ok = false;
        cad_log_err("reload: the new configuration was rejected; still running on the previous "
                    "one config=%s",
                    d->config_path);
        cad_notify_ready();
        return rc;
    }
    if (d->log_level_flag < 0)
        cad_log_set_level(ncfg->log_level);
    cad_scheduler_set_config(d->scheduler, ncfg);
    for (int i = 0; i < d->n_hooks; i++)
        d->hooks[i].fn(ncfg, d->hooks[i].arg);
    cad_config_t *old = d->cfg;
    d->cfg = ncfg;
    cad_config_free(old);
    d->last_reload_ok = true;
    cad_log_notice("reload: the new configuration is in force config=%s rules=%d", d->config_path,
                   ncfg->playbook.n_rules);
    cad_notify_ready();
    refresh_status(d);
    return 0;
}

/* ---- the dispatcher and the plugin host ----------------------------------- */

static void on_dispatch_part_stopped(cad_daemon_t *d)
{
    if (!d->dispatch && !d->host && d->n_services > 0)
        cad_daemon_service_stopped(d, "dispatch");
}

static void on_dispatch_stopped(void *arg)
{
    cad_daemon_t *d = arg;
    d->dispatch = NULL;
    on_dispatch_part_stopped(d);
}

static void on_host_closed(void *arg)
{
    cad_daemon_t *d = arg;
    d->host = NULL;
    on_dispatch_part_stopped(d);
}

/* Shutdown service: no new claims; transfers in flight get most of
 * engine.shutdown_timeout, then are cancelled and queued again. */
static void stop_dispatch(cad_daemon_t *d, void *arg)
{
    if (d->dispatch_stopping)
        return;
    d->dispatch_stopping = true;
    int64_t grace = d->finishing ? 0 : d->cfg->shutdown_timeout_ms * 3 / 4;
    if (d->dispatch)
        cad_dispatch_stop(d->dispatch, on_dispatch_stopped, d);
    if (d->host)
        cad_plugin_host_close(d->host, grace, on_host_closed, d);
}

static void on_old_host_closed(void *arg)
{
    struct closing_host *c = arg;
    if (c) {
        cad_daemon_t *d = c->d;
        for (int i = 0; i < d->n_closing; i++)
            if (d->closing[i] == c) {
                d->closing[i] = d->closing[--d->n_closing];
                break;
            }
        free(c);
    }
    cad_log_info("reload: the previous plugin host is closed");
}

/* Reload: a new host for the new channels; the old one finishes what it has. */
static void reload_dispatch(const cad_config_t *cfg, void *arg)
{
    cad_daemon_t *d = arg;
    if (!d->dispatch || d->dispatch_stopping)
        return;
    /* Built and checked by cad_daemon_reload before the swap. */
    cad_plugin_host_t *host = d->next_host;
    d->next_host = NULL;
    if (!host)
        cad_log_err("reload: the channel plugins could not be loaded, touches stay queued");
    cad_dispatch_set_host(d->dispatch, host);
    cad_dispatch_set_config(d->dispatch, cfg);
    /* The old host finishes the transfers on the wire (as at shutdown: three
     * quarters of engine.shutdown_timeout), so that a reload does not send
     * them a second time; what waited in its lanes comes back unsent and
     * goes out through the new host. It keeps nothing of the old config. */
    if (d->host) {
        struct closing_host *c = d->n_closing < MAX_CLOSING_HOSTS ? malloc(sizeof *c) : NULL;
        if (c) {
            *c = (struct closing_host){.d = d, .host = d->host};
            d->closing[d->n_closing++] = c;
        }
        cad_plugin_host_close(d->host, c ? cfg->shutdown_timeout_ms * 3 / 4 : 0, on_old_host_closed,
                              c);
    }
    d->host = host;
}

static void on_touches_decided(void *arg)
{
    cad_daemon_t *d = arg;
    cad_dispatch_kick(d->dispatch);
}

static int start_dispatch(cad_daemon_t *d, char *err)
{
    int rc = cad_plugin_host_new(&d->loop, d->cfg, &d->host, err);
    if (rc == 0)
        rc = cad_dispatch_new(&d->loop, d->store, d->host, d->cfg, d->scheduler, &d->dispatch, err);
    if (rc == 0)
        rc = cad_daemon_add_service(d, "dispatch", stop_dispatch, NULL);
    if (rc == 0)
        rc = cad_daemon_on_reload(d, reload_dispatch, d);
    if (rc != 0)
        return err && !err[0] ? cad_fail(err, -rc, "cannot start the dispatcher") : rc;
    cad_scheduler_on_decided(d->scheduler, on_touches_decided, d);
    cad_dispatch_kick(d->dispatch);
    return 0;
}

/* ---- shutdown ------------------------------------------------------------ */

static void on_handle_closed(uv_handle_t *h)
{
}

/* What is still open when the last-resort timer fires: the type of every
 * handle but that timer, for the log line, and how many are not yet being
 * closed. */
struct open_handles {
    const uv_handle_t *skip;
    int handles, not_closing;
    char list[256];
    size_t len;
};

static void name_open_handle(uv_handle_t *h, void *arg)
{
    struct open_handles *o = arg;
    if (h == o->skip)
        return;
    bool closing = uv_is_closing(h) != 0;
    o->handles++;
    o->not_closing += !closing;
    if (o->len >= sizeof o->list - 1)
        return;
    int n = snprintf(o->list + o->len, sizeof o->list - o->len, "%s%s%s", o->len ? "," : "",
                     uv_handle_type_name(uv_handle_get_type(h)), closing ? " (closing)" : "");
    if (n > 0)
        o->len = o->len + (size_t)n < sizeof o->list ? o->len + (size_t)n : sizeof o->list - 1;
}

/* Fires LAST_RESORT_MS after finish(). Handles already closing are
 * released in this loop turn's closing phase, which runs after the timers:
 * when only such handles are left (a slow turn, or a clock sped up in a
 * test, made the timer fire first) it waits another round, by which time
 * they are gone. Anything else still open (a handle nobody closed, a
 * thread-pool request stuck in a plugin) stops the loop, with the list in
 * the log. */
static void on_last_resort(uv_timer_t *t)
{
    cad_daemon_t *d = t->data;
    struct open_handles open = {.skip = (const uv_handle_t *)t};
    uv_walk(&d->loop, name_open_handle, &open);
    if (open.handles > 0 && open.not_closing == 0) {
        uv_timer_start(&d->last_resort, on_last_resort, LAST_RESORT_MS, 0);
        return;
    }
    cad_log_err("shutdown: handles still open %d ms after closing; stopping the loop anyway "
                "open=\"%s\"",
                LAST_RESORT_MS, open.handles ? open.list : "thread-pool requests");
    d->exit_code = 1;
    d->loop_forced = true;
    uv_stop(&d->loop);
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, on_handle_closed);
}

static void close_any(uv_handle_t *h, void *arg)
{
    close_handle(h);
}

static void stop_dispatch(cad_daemon_t *d, void *arg);

/* Closes every handle we own; uv_run returns when the last one is released. */
static void finish(cad_daemon_t *d)
{
    if (d->finishing)
        return;
    d->finishing = true;
    if (!d->dispatch_stopping)
        stop_dispatch(d, NULL); /* never ran, or no service wait: stop with no grace */
    if (d->scheduler) {
        cad_scheduler_close(d->scheduler, NULL, NULL);
        d->scheduler = NULL;
    }
    if (d->control) {
        cad_control_close(d->control, NULL, NULL);
        d->control = NULL;
    }
    close_handle((uv_handle_t *)&d->sig_hup);
    close_handle((uv_handle_t *)&d->sig_term);
    close_handle((uv_handle_t *)&d->sig_int);
    close_handle((uv_handle_t *)&d->watchdog);
    close_handle((uv_handle_t *)&d->status_timer);
    close_handle((uv_handle_t *)&d->shutdown_timer);
    uv_timer_start(&d->last_resort, on_last_resort, LAST_RESORT_MS, 0);
    uv_unref((uv_handle_t *)&d->last_resort);
}

static int services_running(const cad_daemon_t *d)
{
    int n = 0;
    for (int i = 0; i < d->n_services; i++)
        n += !d->services[i].stopped;
    return n;
}

static void on_shutdown_timeout(uv_timer_t *t)
{
    cad_daemon_t *d = t->data;
    for (int i = 0; i < d->n_services; i++)
        if (!d->services[i].stopped)
            cad_log_warning("shutdown: service still busy after the shutdown timeout, closing "
                            "anyway service=%s",
                            d->services[i].name);
    finish(d);
}

void cad_daemon_service_stopped(cad_daemon_t *d, const char *name)
{
    for (int i = 0; i < d->n_services; i++)
        if (strcmp(d->services[i].name, name) == 0 && !d->services[i].stopped) {
            d->services[i].stopped = true;
            cad_log_info("shutdown: service stopped service=%s", name);
        }
    if (d->stopping && services_running(d) == 0)
        finish(d);
}

bool cad_daemon_work_abandoned(const cad_daemon_t *d)
{
    return d && d->work_abandoned;
}

void cad_daemon_shutdown(cad_daemon_t *d)
{
    if (d->stopping) {
        cad_log_notice("shutdown: second stop signal, not waiting for in-flight work");
        cad_plugin_host_hurry(d->host);
        for (int i = 0; i < d->n_closing; i++)
            cad_plugin_host_hurry(d->closing[i]->host);
        finish(d);
        return;
    }
    d->stopping = true;
    cad_notify_stopping();
    cad_log_notice("shutdown: stopping; no new work is taken");
    cad_control_stop_listening(d->control);
    cad_scheduler_stop(d->scheduler);
    uv_timer_stop(&d->status_timer);
    if (d->n_services == 0) {
        finish(d);
        return;
    }
    int64_t ms =
        d->cfg->shutdown_timeout_ms > 0 ? d->cfg->shutdown_timeout_ms : DEFAULT_SHUTDOWN_MS;
    uv_timer_start(&d->shutdown_timer, on_shutdown_timeout, (uint64_t)ms, 0);
    for (int i = 0; i < d->n_services; i++)
        d->services[i].stop(d, d->services[i].arg);
}

static void on_signal(uv_signal_t *h, int signum)
{
    cad_daemon_t *d = h->data;
    if (signum == SIGHUP) {
        if (!d->stopping)
            cad_daemon_reload(d, NULL);
        return;
    }
    cad_log_notice("shutdown: received %s", signum == SIGINT ? "SIGINT" : "SIGTERM");
    cad_daemon_shutdown(d);
}

/* ---- construction -------------------------------------------------------- */

static void drain_loop(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
}

static void close_loop(cad_daemon_t *d);

void cad_daemon_free(cad_daemon_t *d)
{
    if (!d)
        return;
    if (d->loop_open) { /* built but never run: close what cad_daemon_new opened */
        d->stopping = true;
        cad_control_stop_listening(d->control);
        finish(d);
        uv_run(&d->loop, UV_RUN_DEFAULT);
        close_loop(d);
    }
    if (d->store) {
        cad_store_close(d->store);
        d->store = NULL;
    }
    cad_config_free(d->cfg);
    for (int i = 0; i < d->n_services; i++)
        free(d->services[i].name);
    free(d->services);
    free(d->hooks);
    free(d->config_path);
    free(d->state_dir_flag);
    free(d->socket_flag);
    free(d->plugin_dir_flag);
    free(d);
}

int cad_daemon_prepare_config(const cad_daemon_options_t *opts, cad_config_t **out, char *err)
{
    *out = NULL;
    if (!opts->config_path)
        return cad_fail(err, CAD_EINVAL, "no configuration file given (--config FILE)");
    cad_daemon_t tmp = {
        .config_path = (char *)opts->config_path,
        .state_dir_flag = (char *)opts->state_dir,
        .socket_flag = (char *)opts->socket_path,
        .plugin_dir_flag = (char *)opts->plugin_dir,
    };
    cad_config_t *cfg = NULL;
    int rc = cad_config_load(opts->config_path, &cfg, stderr);
    if (rc != 0)
        return cad_fail(err, -rc, "%s: the configuration is not valid", opts->config_path);
    if ((rc = apply_overrides(&tmp, cfg, err)) == 0)
        rc = make_dirs(cfg->state_dir, err);
    if (rc != 0) {
        cad_config_free(cfg);
        return rc;
    }
    *out = cfg;
    return 0;
}

int cad_daemon_new(const cad_daemon_options_t *opts, cad_daemon_t **out, char *err)
{
    *out = NULL;
    if (!opts->config_path)
        return cad_fail(err, CAD_EINVAL, "no configuration file given (--config FILE)");
    cad_daemon_t *d = calloc(1, sizeof(*d));
    if (!d)
        return cad_fail(err, CAD_ENOMEM, "out of memory");
    d->log_level_flag = opts->log_level;
    /* Absolute, so a reload finds the same file whatever the working directory. */
    d->config_path = realpath(opts->config_path, NULL);
    if (!d->config_path)
        d->config_path = strdup(opts->config_path);
    d->state_dir_flag = opts->state_dir ? strdup(opts->state_dir) : NULL;
    d->socket_flag = opts->socket_path ? strdup(opts->socket_path) : NULL;
    d->plugin_dir_flag = opts->plugin_dir ? strdup(opts->plugin_dir) : NULL;
    if (!d->config_path || (opts->state_dir && !d->state_dir_flag) ||
        (opts->socket_path && !d->socket_flag) || (opts->plugin_dir && !d->plugin_dir_flag)) {
        cad_daemon_free(d);
        return cad_fail(err, CAD_ENOMEM, "out of memory");
    }
    int rc = load_config(d, &d->cfg, NULL, err);
    if (rc == 0)
        rc = apply_overrides(d, d->cfg, err);
    if (rc != 0) {
        cad_daemon_free(d);
        return rc;
    }
    if (d->log_level_flag < 0)
        cad_log_set_level(d->cfg->log_level);
    if ((rc = make_dirs(d->cfg->state_dir, err)) != 0) {
        cad_daemon_free(d);
        return rc;
    }
    int uvrc = uv_loop_init(&d->loop);
    if (uvrc != 0) {
        cad_daemon_free(d);
        return cad_fail(err, CAD_EIO, "cannot create the event loop: %s", uv_strerror(uvrc));
    }

    cad_control_options_t co = control_options(d->cfg);
    rc = cad_control_new(&d->loop, &co, &d->control, err);
    if (rc != 0) {
        drain_loop(&d->loop);
        cad_daemon_free(d);
        return rc;
    }
    char db[4200];
    snprintf(db, sizeof(db), "%s/cadence.db", d->cfg->state_dir);
    rc = cad_store_open(db, d->cfg->sync, &d->store, err);
    if (rc == 0) {
        /* Another process holding the write lock must not stall the loop
         * for seconds: a write waits this long, then fails busy and its
         * module tries again later. Longer than a --import batch holds it. */
        cad_store_set_busy_timeout(d->store, DAEMON_BUSY_TIMEOUT_MS);
        char rqerr[CAD_ERRBUF];
        int n = cad_store_outbox_requeue_in_flight(d->store, (cad_time_t)time(NULL), rqerr);
        if (n > 0)
            cad_log_notice("store: touches in flight at the last stop are queued again "
                           "(same idempotency keys) count=%d",
                           n);
        else if (n < 0)
            cad_log_err("store: cannot requeue in-flight touches: %s", rqerr);
        rc = cad_scheduler_new(&d->loop, d->store, d->cfg, NULL, &d->scheduler, err);
    }
    if (rc == 0 && (rc = cad_control_register(d->control, "status", false, cmd_status, d)) == 0)
        rc = cad_control_register(d->control, "reload", true, cmd_reload, d);
    if (rc != 0) {
        if (err && !err[0])
            cad_fail(err, -rc, "cannot register the built-in commands: %s", cad_strerror(rc));
        if (d->dispatch || d->host)
            stop_dispatch(d, NULL);
        if (d->scheduler)
            cad_scheduler_close(d->scheduler, NULL, NULL);
        cad_control_close(d->control, NULL, NULL);
        drain_loop(&d->loop);
        cad_daemon_free(d);
        return rc;
    }

    uv_signal_init(&d->loop, &d->sig_hup);
    uv_signal_init(&d->loop, &d->sig_term);
    uv_signal_init(&d->loop, &d->sig_int);
    d->sig_hup.data = d->sig_term.data = d->sig_int.data = d;
    uv_signal_start(&d->sig_hup, on_signal, SIGHUP);
    uv_signal_start(&d->sig_term, on_signal, SIGTERM);
    uv_signal_start(&d->sig_int, on_signal, SIGINT);
    signal(SIGPIPE, SIG_IGN);

    uv_timer_init(&d->loop, &d->watchdog);
    uv_timer_init(&d->loop, &d->status_timer);
    uv_timer_init(&d->loop, &d->shutdown_timer);
    uv_timer_init(&d->loop, &d->last_resort);
    d->watchdog.data = d->status_timer.data = d->shutdown_timer.data = d->last_resort.data = d;
    d->watchdog_usec = cad_notify_watchdog_usec();
    d->loop_open = true;
    *out = d;
    return 0;
}

/* After uv_run returned: release the last handles and close the loop. */
static void close_loop(cad_daemon_t *d)
{
    close_handle((uv_handle_t *)&d->last_resort);
    if (d->loop_forced) { /* a module left handles open: release them so the loop closes */
        uv_walk(&d->loop, close_any, NULL);
        /* A plugin's send() that never returns keeps its thread-pool job,
         * and so the loop, alive for good: the close callbacks run, the job
         * is abandoned (its touch stays in flight in the store and is sent
         * again at the next start, with the same idempotency key). */
        for (int i = 0; i < 16 && uv_loop_alive(&d->loop); i++)
            uv_run(&d->loop, UV_RUN_NOWAIT);
        if (uv_loop_alive(&d->loop)) {
            cad_log_err("shutdown: a plugin is still inside send(); exiting without it, its "
                        "touch is sent again at the next start");
            d->work_abandoned = true;
            d->loop_open = false;
            return;
        }
    }
    uv_run(&d->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&d->loop) != 0)
        cad_log_warning("shutdown: the event loop still had open handles");
    d->loop_open = false;
}

int cad_daemon_run(cad_daemon_t *d)
{
    d->started_hr = uv_hrtime();
    d->started_at = time(NULL);
    char err[CAD_ERRBUF];
    if (cad_scheduler_start(d->scheduler) != 0) {
        cad_log_err("start: the scheduler did not start");
        d->exit_code = 1;
        d->stopping = true;
        finish(d);
    } else {
        if (d->watchdog_usec > 0) {
            uint64_t ms = d->watchdog_usec / 2000;
            uv_timer_start(&d->watchdog, on_watchdog, 0, ms ? ms : 1);
        }
        uv_timer_start(&d->status_timer, on_status_timer, STATUS_INTERVAL_MS, STATUS_INTERVAL_MS);
        cad_store_counts_t counts = {0};
        if (cad_store_counts(d->store, &counts, err) != 0)
            cad_log_warning("start: cannot count the store: %s", err);
        cad_log_notice("cadenced %s running pid=%d config=%s store=%s socket=%s customers=%lld "
                       "rules=%d watchdog_ms=%llu",
                       CADENCE_VERSION, (int)getpid(), d->config_path, cad_store_path(d->store),
                       d->cfg->socket_path, (long long)counts.customers, d->cfg->playbook.n_rules,
                       (unsigned long long)(d->watchdog_usec / 1000));
        cad_notify_ready();
        refresh_status(d);
        /* After the "running" line: loading plugins logs per channel. */
        if (start_dispatch(d, err) != 0) {
            cad_log_err("start: the dispatcher did not start: %s", err);
            d->exit_code = 1;
            cad_daemon_shutdown(d);
        }
    }
    uv_run(&d->loop, UV_RUN_DEFAULT);
    close_loop(d);
    if (d->store) {
        cad_store_close(d->store);
        d->store = NULL;
    }
    cad_log_notice("cadenced stopped exit_code=%d", d->exit_code);
    return d->exit_code;
}

/* ---- accessors and hooks ------------------------------------------------- */

uv_loop_t *cad_daemon_loop(cad_daemon_t *d)
{
    return &d->loop;
}

cad_control_t *cad_daemon_control(cad_daemon_t *d)
{
    return d->control;
}

cad_store_t *cad_daemon_store(cad_daemon_t *d)
{
    return d->store;
}

cad_scheduler_t *cad_daemon_scheduler(cad_daemon_t *d)
{
    return d->scheduler;
}

const cad_config_t *cad_daemon_config(cad_daemon_t *d)
{
    return d->cfg;
}

cad_dispatch_t *cad_daemon_dispatch(cad_daemon_t *d)
{
    return d->dispatch;
}

cad_plugin_host_t *cad_daemon_plugin_host(cad_daemon_t *d)
{
    return d->host;
}

int cad_daemon_on_reload(cad_daemon_t *d, cad_daemon_reload_fn fn, void *arg)
{
    reload_hook_t *h = realloc(d->hooks, (size_t)(d->n_hooks + 1) * sizeof(*h));
    if (!h)
        return -CAD_ENOMEM;
    d->hooks = h;
    h[d->n_hooks].fn = fn;
    h[d->n_hooks].arg = arg;
    d->n_hooks++;
    return 0;
}

int cad_daemon_add_service(cad_daemon_t *d, const char *name, cad_daemon_stop_fn stop, void *arg)
{
    if (!name || !stop)
        return -CAD_EINVAL;
    service_t *s = realloc(d->services, (size_t)(d->n_services + 1) * sizeof(*s));
    if (!s)
        return -CAD_ENOMEM;
    d->services = s;
    char *copy = strdup(name);
    if (!copy)
        return -CAD_ENOMEM;
    s[d->n_services] = (service_t){.name = copy, .stop = stop, .arg = arg, .stopped = false};
    d->n_services++;
    return 0;
}
