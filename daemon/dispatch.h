/*
 * dispatch.h — the outbox dispatcher: from a decided touch to a delivered one.
 *
 * The dispatcher runs on the daemon's loop and is the only writer of outbox
 * state after a touch was decided. It claims due touches from the store in
 * batches, per channel, as far as the channel's concurrency, token buckets
 * (channel, provider account, recipient domain, global) and circuit allow;
 * builds each cad_plugin_touch_t from store data and hands it to the plugin
 * host with the rule's or content item's template; and records outcomes in
 * batched transactions (group commit: outcomes are collected for a few
 * milliseconds or N rows, then written in one transaction).
 *
 * Outcomes: delivered; retry (exponential backoff with full jitter, the
 * Standard Webhooks schedule for webhook channels, Retry-After honoured)
 * until the channel's max_attempts or max_age, then dead with the last
 * error; permanent (dead, and its effect fed back to the store: contact
 * channel unusable or consent revoked, the customer re-evaluated). A touch
 * past its expiry is never sent: it goes dead with reason "expired".
 *
 * Timers run on the loop's monotonic clock; due times are UTC seconds in the
 * store. No sleeps: a uv timer wakes the dispatcher when the next touch is
 * due, the next token arrives or an open circuit may be probed.
 *
 * Threading: loop thread only.
 */
#ifndef CADENCE_DISPATCH_H
#define CADENCE_DISPATCH_H

#include "circuit.h"
#include "common.h"
#include "config.h"
#include "plugin_host.h"
#include "scheduler.h"
#include "store.h"

#include <uv.h>

typedef struct cad_dispatch cad_dispatch_t;

/* Counters of one configured channel, for status, metrics and alerts. */
typedef struct cad_dispatch_channel_stats {
    char channel[CAD_NAME_MAX]; /* channel name from the config */
    char plugin[CAD_NAME_MAX];  /* plugin name */
    bool ready;                 /* the plugin is loaded */
    int in_flight;              /* handed to the plugin host, outcome pending */
    int64_t claimed;            /* attempts started since start */
    int64_t delivered;          /* outcomes since start */
    int64_t retried;            /* transient failures scheduled for retry */
    int64_t dead;               /* dead: attempts or age exhausted, permanent, expired */
    int64_t expired;            /* of dead: past expires_at, never sent */
    int64_t permanent;          /* of dead: permanent outcomes */
    int64_t withdrawn; /* claimed, then not sent: consent withdrawn, address suppressed... */
    int64_t held;      /* claimed, then back to the outbox for its mail domain's turn */
    enum cad_circuit_state circuit;
    cad_time_t circuit_since;      /* wall-clock UTC seconds of the last circuit change */
    bool disabled;                 /* its endpoint is gone (410): waits for a reload */
    cad_time_t disabled_since;     /* wall-clock UTC seconds, when disabled */
    uint32_t consecutive_failures; /* transient failures in a row */
    uint64_t circuit_opened;       /* times opened since start */
    double tokens;                 /* channel bucket tokens now; -1 = unlimited */
    double rate_per_second;        /* 0 = unlimited */
    uint32_t concurrency;
    char last_error[CAD_PLUGIN_REASON_MAX]; /* last retry/permanent reason, "" when none */
} cad_dispatch_channel_stats_t;

/* Counters of the whole dispatcher. */
typedef struct cad_dispatch_stats {
    int n_channels; /* entries used in channels[] */
    cad_dispatch_channel_stats_t channels[CAD_MAX_CHANNELS];
    int in_flight; /* over all channels */
    int64_t delivered, retried, dead;
    int64_t commits;         /* outcome transactions committed */
    int64_t committed_rows;  /* outcomes written by those transactions */
    int64_t max_commit_rows; /* largest outcome transaction */
    int64_t store_errors;    /* outcome transactions that failed (retried later) */
    double global_tokens;    /* -1 = unlimited */
    bool stopping;           /* shutdown began: no new claims */
} cad_dispatch_stats_t;

/* Creates the dispatcher on `loop`. `store`, `host`, `cfg` and `scheduler`
 * (may be NULL: then permanent-failure feedback does not re-evaluate the
 * customer at once) are borrowed and must outlive it, or be replaced with
 * cad_dispatch_set_config / cad_dispatch_set_host. Does not claim until the
 * first kick or timer. Returns 0 and *out, or a negative code with err. */
int cad_dispatch_new(uv_loop_t *loop, cad_store_t *store, cad_plugin_host_t *host,
                     const cad_config_t *cfg, cad_scheduler_t *scheduler, cad_dispatch_t **out,
                     char *err);

/* Claims due touches now (on the next loop turn; cheap to call often): the
 * scheduler calls it after a batch that decided touches, the control socket
 * after an operator retry. */
void cad_dispatch_kick(cad_dispatch_t *d);

/* How the last_error of a touch held for its mail domain's rate limit
 * starts: it is back in the outbox, retry-wait, due at its booked turn. */
#define CAD_DISPATCH_HELD_PREFIX "held:"

/* Something that can stop a touch changed for customer `customer_key` (0:
 * for any customer, an address was suppressed): consent, a suppression, a
 * pause, a contact's address or usable mark. A touch is checked at its
 * claim, but a claimed one may wait in its channel's lane for a slot; so
 * every channel holding a claimed touch of that customer hands back what
 * is not on the wire yet, unsent and not counted, to be claimed and checked
 * again at the next pump. What is on the wire finishes. */
void cad_dispatch_recheck(cad_dispatch_t *d, int64_t customer_key);

/* Reload: the new config (channel limits, rates, attempts) applies to new
 * claims; counters of channels keep their names. `cfg` is borrowed. */
void cad_dispatch_set_config(cad_dispatch_t *d, const cad_config_t *cfg);

/* Reload: new sends go to `host` (NULL: none; touches stay queued). Touches
 * in flight on the old host finish there (its close hands their outcomes
 * back). `host` is borrowed. */
void cad_dispatch_set_host(cad_dispatch_t *d, cad_plugin_host_t *host);

/* Shutdown drain: stops claiming, waits for in-flight outcomes (the caller
 * bounds the wait by closing the plugin host with a grace time: cancelled
 * transfers come back and are queued again), records each as delivered,
 * retry or back to queued, commits, closes its timer, frees itself and then
 * calls done(arg) on the loop. Do not use the dispatcher after this call. */
void cad_dispatch_stop(cad_dispatch_t *d, void (*done)(void *arg), void *arg);

/* Fills *stats with the current counters. */
void cad_dispatch_get_stats(const cad_dispatch_t *d, cad_dispatch_stats_t *stats);

/* Outcomes waiting for the next group commit (for tests and metrics). */
int cad_dispatch_pending_outcomes(const cad_dispatch_t *d);

/* Why a touch read with the claim's checks (cad_store_outbox_get, or a
 * claim) may not be sent to its contact over a channel of `address` kind,
 * or NULL. The engine checked consent and address when it decided; a touch
 * that waited (for a retry, a token, a circuit, an operator's retry) is
 * checked again as it is claimed, so an opt-out, a suppression or a hard
 * bounce since then stops it (R10). The sentence is static. */
const char *cad_dispatch_withdraw_reason(enum cad_address_kind address,
                                         const cad_outbox_touch_t *t);

#endif
