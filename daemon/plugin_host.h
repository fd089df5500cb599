/*
 * plugin_host.h — loads the channel plugins and runs their deliveries.
 *
 * For every channel of the playbook the host dlopen()s
 * `<plugin_dir>/<plugin>.so` (plugin_dir from the config, else the
 * compiled-in CADENCE_PLUGIN_DIR), checks the exported descriptor
 * (cadence/channel.h: ABI major, struct size, callbacks), validates the
 * channel's settings against the plugin's option table (an unknown key or a
 * mistyped value names the config file:line) and calls the plugin's init. A
 * channel whose plugin fails any step is logged and left unloaded: the
 * daemon keeps running and that channel's touches stay queued.
 *
 * cad_plugin_host_send() renders the touch's template, then runs the
 * plugin: a libcurl transfer on the shared transport (transport.h) for
 * transfer plugins, a thread-pool job for blocking ones; both obey the
 * channel's concurrency limit. The completion callback gets one outcome:
 * delivered, retry or permanent (cadence/channel.h). Retrying is the
 * caller's job (the dispatcher's).
 *
 * Threading: loop thread only (blocking plugins' send() runs on the libuv
 * thread pool, but callbacks come back on the loop).
 */
#ifndef CADENCE_PLUGIN_HOST_H
#define CADENCE_PLUGIN_HOST_H

#include "common.h"
#include "config.h"
#include "playbook.h"

#include <cadence/channel.h>
#include <stdio.h>
#include <uv.h>

typedef struct cad_plugin_host cad_plugin_host_t;

/* Called once per accepted send, from the loop, never before
 * cad_plugin_host_send returned. `outcome` is valid during the call only.
 * `maybe_received`: the transfer failed without an answer after (part of)
 * the request had left — a timeout or a dropped connection — so the
 * provider may have accepted it even though the outcome is not DELIVERED. */
typedef void (*cad_plugin_done_cb)(const cad_plugin_outcome_t *outcome, bool maybe_received,
                                   void *arg);

/* What `cadencectl plugins` shows about one configured channel. Strings are
 * owned by the host and valid until it closes. */
typedef struct cad_plugin_info {
    const char *channel;     /* channel name from the config */
    const char *plugin;      /* plugin name */
    const char *path;        /* the shared object's path */
    bool loaded;             /* false: see error */
    const char *error;       /* why it is not loaded; "" when loaded */
    const char *description; /* from the descriptor; "" when not loaded */
    const char *version;
    uint32_t abi_major, abi_minor;
    bool blocking;                      /* send() on the thread pool rather than libcurl */
    const cad_plugin_option_t *options; /* the plugin's table; NULL when not loaded */
    uint32_t concurrency;
    int in_flight; /* being sent now (a transfer channel: as its transport lane last said) */
    int queued;    /* handed over, waiting for a slot: a pool thread or the transport's lane */
    int stuck;     /* of in_flight, blocking sends past their timeout that have not returned */
    int64_t delivered, retried, failed; /* outcomes since start */
} cad_plugin_info_t;

/* Creates the host on `loop` and loads a plugin for every channel of
 * cfg->playbook. `cfg` is borrowed and must outlive the host (a reload builds
 * a new host with the new config and closes the old one). A channel that
 * fails to load is logged and reported by cad_plugin_host_list, not an error
 * here. Returns 0 and *out, or a negative code with err (out of memory, the
 * transport could not start). */
int cad_plugin_host_new(uv_loop_t *loop, const cad_config_t *cfg, cad_plugin_host_t **out,
                        char *err);

/* Checks every channel's plugin as cad_plugin_host_new would — the file,
 * the descriptor, the settings against the option table, then the plugin's
 * own init (which reads its secret files and validates its settings, told
 * by api->checking to create nothing and connect nowhere) followed at once
 * by its shutdown. Writes one line per problem to `errors`
 * ("FILE:LINE: ...") and returns the number of channels that would not
 * load; a channel whose secret file cannot be read here is not a problem
 * but a line on `notes` (secrets may exist only where the daemon runs).
 * For a config test mode. */
int cad_plugin_host_check(const cad_config_t *cfg, FILE *errors, FILE *notes);

/* Is channel `channel` (playbook index) loaded and able to send? */
bool cad_plugin_host_ready(const cad_plugin_host_t *host, int channel);

/* Takes back the touches of `channel` that were handed over but have not
 * started (waiting in the channel's transport lane or for a pool thread):
 * each one's callback runs soon with a RETRY outcome whose reason starts
 * with "cancelled:"; touches already being sent are left alone. The
 * dispatcher calls it when a channel's circuit opens. */
void cad_plugin_host_take_back(cad_plugin_host_t *host, int channel);

/* Sends one touch on `channel`. The host copies `touch` (the caller's memory
 * may go away after the call). When `tmpl` is not NULL its subject, text and
 * html parts are rendered against the touch and replace the touch's
 * subject/text/html; a render error (a customer lacking an attribute) is a
 * PERMANENT outcome naming the variable. Returns 0 when accepted (cb runs
 * exactly once, later), or -CAD_ENOTFOUND when the channel has no loaded
 * plugin, -CAD_EBUSY when the host is closing, -CAD_EINVAL for a bad channel
 * index; cb is then never called. */
int cad_plugin_host_send(cad_plugin_host_t *host, int channel, const cad_plugin_touch_t *touch,
                         const cad_template_t *tmpl, cad_plugin_done_cb cb, void *arg, char *err);

/* Fills up to `max` entries of `out`, one per configured channel in
 * playbook order; returns the number of channels. */
int cad_plugin_host_list(const cad_plugin_host_t *host, cad_plugin_info_t *out, int max);

/* Closes the host: new sends are refused; queued sends complete at once
 * with RETRY ("cancelled at shutdown"); running ones get up to `grace_ms`,
 * then transfers are cancelled (RETRY as well; a blocking send() already
 * running is waited for). Then every plugin's shutdown runs, the objects are
 * unloaded, the host is freed and `closed` (may be NULL) runs on the loop. */
void cad_plugin_host_close(cad_plugin_host_t *host, int64_t grace_ms, void (*closed)(void *arg),
                           void *arg);

/* A closing host ends its grace period now: running transfers are cancelled
 * (RETRY) at once. Blocking send() calls already running are still waited
 * for. No-op when the host is not closing. */
void cad_plugin_host_hurry(cad_plugin_host_t *host);

/* The reason of a RETRY the host reports for a send it could not start
 * (every slot of the channel stuck inside the plugin, or no pool thread
 * within the timeout) begins with this: the dispatcher does not count it as
 * an attempt. */
#define CAD_NOT_STARTED_PREFIX "not started"
/* ... and the reason of one cancelled before a verdict (shutdown, reload,
 * taken back) with this: the touch goes back to the queue unsent. */
#define CAD_CANCELLED_PREFIX "cancelled:"

/* Name of an outcome kind: "delivered", "retry", "permanent". */
const char *cad_outcome_kind_name(enum cad_outcome_kind kind);
/* Name of an outcome effect: "none", "contact_unusable", "consent_revoked",
 * "channel_disabled". */
const char *cad_outcome_effect_name(enum cad_outcome_effect effect);

#endif
