/*
 * dispatch.c — the outbox dispatcher (see dispatch.h).
 *
 * Everything happens in one place, pump(), run from a single 0..N ms timer:
 * it opens one store batch, writes the outcomes collected since the last
 * pump (group commit), claims due touches per channel as far as the
 * channel's free concurrency, its circuit and the token buckets (channel,
 * provider account, global) allow, commits — one fsync for all of it — and
 * only then hands the claimed touches to the plugin host. A touch is never
 * sent before its claim is durable, and an outcome is durable before
 * anything depends on it; a crash in between leaves the row in flight, and
 * the next start queues it again with the same idempotency key.
 *
 * Outcomes arrive from the plugin host one by one; each frees a concurrency
 * slot and is appended to `pending`. The pump runs commit_interval_ms later
 * (or at once when many are pending), so under load one transaction carries
 * hundreds of outcomes and claims.
 *
 * The per-domain limit is applied after the claim, when the recipient is
 * known: a touch whose mail domain has no token books its turn in the
 * domain's bucket and goes back to the outbox unsent (retry-wait, due at
 * its turn, the claim not counted); when it is claimed again at its turn
 * it is sent on the token it booked. So nothing waits in memory: a held
 * touch is visible, cancellable, checked again at its claim, and never
 * blocks touches to other domains.
 *
 * Channel state (circuit, buckets, counters) lives in chan_t records found
 * by channel name, so a reload that reorders or removes channels keeps the
 * state of the ones that stay, and attempts in flight keep a valid pointer.
 *
 * Debugging crash safety: CADENCE_CRASH_AT_STEP=n kills the process with
 * SIGKILL at the n-th dispatch step (a send accepted, an outcome received
 * before it is recorded, an outcome batch committed).
 */
#include "dispatch.h"

#include "backoff.h"
#include "log.h"
#include "ratelimit.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CLAIM_BATCH        512   /* most touches claimed per channel per pump */
#define CLAIM_AHEAD        8     /* touches claimed per channel: this times its concurrency */
#define COMMIT_ROWS        512   /* pending outcomes that trigger an immediate pump */
#define BOOKED_GRACE_S     60    /* a booked turn claimed later than this takes a token anew */
#define MAX_SLEEP_MS       60000 /* re-read the wall clock at least this often */
#define STORE_RETRY_MS     1000  /* after a failed batch */
#define CLOCK_STEP_MS      2000  /* a step back of the wall clock this large moves due times */
#define MAX_CHANS          (CAD_MAX_CHANNELS * 4)
#define DOMAIN_MAP_KEYS    4096
#define CIRCUIT_MAX_FACTOR 16 /* longest open interval: circuit_interval times this */
#define RESERVE_BYTES      (8 * 1024 * 1024) /* disk kept free for the outbox */
#define RESERVE_HEADROOM   (4 * 1024 * 1024) /* store growth allowed once it is released */
#define RESERVE_RETRY_MS   5000

typedef struct chan chan_t;

/* One claimed touch, from the claim to its outcome. Strings live in `buf`. */
typedef struct attempt {
    struct attempt *next;
    cad_dispatch_t *d;
    chan_t *ch;
    int64_t key, customer_key, contact_key;
    int number; /* 1 on the first attempt */
    cad_time_t decided_at, expires_at;
    const char *idempotency_key, *customer_id, *contact_id, *rule, *purpose, *content_id;
    const char *customer_name, *customer_attributes, *contact_name, *contact_first_name;
    const char *contact_email, *contact_phone;
    const char *withdrawn; /* static; why it must not be sent after all, or NULL */
    bool took_probe;       /* this attempt is the half-open probe */
    bool booked;           /* back at its turn under the domain limit: its token is taken */
    bool maybe_received;   /* it failed without an answer after the request left */
    bool live;             /* handed to the plugin host, in the dispatcher's `live` list */
    struct attempt *live_prev, *live_next;
    char buf[];
} attempt_t;

struct chan {
    char name[CAD_NAME_MAX];
    char plugin[CAD_NAME_MAX];
    int index; /* in the current config; -1 when the channel is gone */
    cad_channel_config_t cc;
    enum cad_address_kind address;
    cad_backoff_t backoff;
    cad_circuit_t circuit;
    cad_time_t circuit_since; /* wall clock */
    /* The endpoint answered that it is gone for good (webhook 410): nothing
     * more is claimed until the operator reloads the configuration. */
    bool disabled;
    cad_time_t disabled_since; /* wall clock */
    cad_bucket_t bucket;
    cad_bucket_map_t *domains; /* NULL when domain_per_minute is 0 */
    int account;               /* index into dispatch.accounts, -1 = none */
    int in_flight;
    int64_t claimed, delivered, retried, dead, expired, permanent, withdrawn, held;
    char last_error[CAD_PLUGIN_REASON_MAX];
};

typedef struct account {
    char key[2 * CAD_NAME_MAX + 2]; /* plugin/account */
    cad_bucket_t bucket;
} account_t;

enum record_kind { REC_DELIVERED, REC_RETRY, REC_DEAD, REC_RELEASE, REC_WITHDRAW };

/* An outcome waiting for the next group commit. */
typedef struct pending {
    enum record_kind kind;
    int64_t key, customer_key, contact_key;
    cad_time_t retry_at;
    bool unsent; /* a retry whose attempt never started: not counted */
    enum cad_outcome_effect effect;
    bool maybe_received; /* recorded with the touch: it may have reached the customer */
    cad_time_t ended_at; /* when the attempt's outcome came */
    chan_t *ch;
    char *contact_id; /* owned; set for CONSENT_REVOKED */
    char text[CAD_PLUGIN_REASON_MAX];
} pending_t;

struct cad_dispatch {
    uv_loop_t *loop;
    cad_store_t *store;
    cad_plugin_host_t *host;
    const cad_config_t *cfg;
    cad_scheduler_t *scheduler;
    uv_timer_t timer;
    uint64_t timer_due; /* uv_now() when the armed timer fires; 0 = not armed */
    chan_t *chans[MAX_CHANS];
    int n_chans;
    chan_t *by_index[CAD_MAX_CHANNELS];
    int n_channels;
    account_t accounts[CAD_MAX_CHANNELS];
    int n_accounts;
    cad_bucket_t global;
    int in_flight;
    attempt_t *live; /* handed to the plugin host, outcome pending */
    pending_t *pending;
    int n_pending, cap_pending;
    int64_t *changed; /* customers to re-evaluate after the commit */
    int n_changed, cap_changed;
    attempt_t *claimed_head, *claimed_tail; /* claimed in the open batch */
    uint64_t rng;
    int64_t clock_offset_ms; /* wall clock minus monotonic clock at the last pump */
    int last_claimer;        /* channel index that claimed last, to take turns */
    int64_t delivered, retried, dead, commits, committed_rows, max_commit_rows, store_errors;
    bool store_failing;
    bool stopping, stop_done, closing;
    int64_t cut_at_stop;      /* transfers cancelled by the shutdown */
    int64_t cut_sent_at_stop; /* of them, those whose request had left */
    void (*done)(void *arg);
    void *done_arg;
    long crash_at, steps;
    char *reserve_path;    /* <db>.reserve; NULL when it could not be made */
    bool reserve_released; /* disk full: released, the store capped */
    bool reserve_fresh;    /* released just now: retry the batch at once */
    uint64_t reserve_retry_at;
};

static void crash_step(cad_dispatch_t *d, const char *what)
{
    if (d->crash_at <= 0)
        return;
    if (++d->steps == d->crash_at) {
        cad_log_warning("dispatch: CADENCE_CRASH_AT_STEP reached, killing the process step=%ld "
                        "at=%s",
                        d->steps, what);
        raise(SIGKILL);
    }
}

/* ---- channels, accounts and configuration ------------------------------------ */

static chan_t *chan_find(cad_dispatch_t *d, const char *name)
{
    for (int i = 0; i < d->n_chans; i++)
        if (strcmp(d->chans[i]->name, name) == 0)
            return d->chans[i];
    return NULL;
}

/* True when channel `name` had another plugin or other plugin settings in
 * `old` (or was not there). */
static bool channel_changed(const cad_config_t *old, const char *name, const cad_channel_t *pc,
                            const cad_channel_config_t *cc)
{
    if (!old)
        return true;
    const cad_playbook_t *pb = &old->playbook;
    for (int c = 0; c < pb->n_channels; c++) {
        if (strcmp(pb->channels[c].name, name) != 0)
            continue;
        const cad_channel_config_t *was = &old->channel_config[c];
        if (strcmp(pb->channels[c].plugin, pc->plugin) != 0 || was->n_settings != cc->n_settings)
            return true;
        for (int k = 0; k < cc->n_settings; k++)
            if (strcmp(was->settings[k].name, cc->settings[k].name) != 0 ||
                strcmp(was->settings[k].value, cc->settings[k].value) != 0)
                return true;
        return false;
    }
    return true;
}

static void chan_configure(cad_dispatch_t *d, chan_t *ch, const cad_channel_t *pc,
                           const cad_channel_config_t *cc, int64_t now_ms, bool fresh)
{
    /* An operator who repoints a failing channel (another plugin, URL,
     * server) and reloads expects it to be tried now, not after the open
     * circuit's next probe, which may be minutes away. */
    bool reset_circuit = fresh;
    if (!fresh && ch->disabled)
        cad_log_notice("dispatch: channel enabled again by a reload channel=%s", ch->name);
    ch->disabled = false;
    if (!fresh && ch->circuit.state != CAD_CIRCUIT_CLOSED &&
        channel_changed(d->cfg, ch->name, pc, cc)) {
        cad_log_notice("dispatch: circuit reset, the channel's plugin or settings changed "
                       "channel=%s",
                       ch->name);
        reset_circuit = true;
    }
    snprintf(ch->plugin, sizeof ch->plugin, "%s", pc->plugin);
    ch->cc = *cc;
    ch->cc.settings = NULL;
    ch->cc.n_settings = 0;
    ch->address = pc->address;
    int kind = cc->retry_schedule;
    if (kind < 0)
        kind = strcmp(pc->plugin, "webhook") == 0 ? CAD_BACKOFF_STANDARD_WEBHOOKS
                                                  : CAD_BACKOFF_EXPONENTIAL;
    ch->backoff = (cad_backoff_t){.kind = (enum cad_backoff_kind)kind,
                                  .base_ms = cc->retry_base * 1000,
                                  .cap_ms = cc->retry_cap * 1000};
    int64_t interval = (cc->circuit_interval > 0 ? cc->circuit_interval : 30) * 1000;
    if (reset_circuit) {
        cad_circuit_init(&ch->circuit, cc->circuit_threshold, interval,
                         interval * CIRCUIT_MAX_FACTOR, now_ms);
        ch->circuit_since = cad_wall_now();
    } else {
        ch->circuit.threshold = cc->circuit_threshold;
        ch->circuit.base_interval_ms = interval;
        ch->circuit.max_interval_ms = interval * CIRCUIT_MAX_FACTOR;
        if (ch->circuit.interval_ms < interval || ch->circuit.interval_ms > interval * 16)
            ch->circuit.interval_ms = interval;
    }
    if (fresh)
        cad_bucket_init(&ch->bucket, cc->rate_per_second, cc->burst, now_ms);
    else
        cad_bucket_configure(&ch->bucket, cc->rate_per_second, cc->burst, now_ms);
    double per_second = cc->domain_per_minute / 60.0;
    if (cc->domain_per_minute == 0) {
        cad_bucket_map_free(ch->domains);
        ch->domains = NULL;
    } else if (ch->domains) {
        cad_bucket_map_configure(ch->domains, per_second, cc->domain_per_minute, now_ms);
    } else {
        ch->domains = cad_bucket_map_new(per_second, cc->domain_per_minute, DOMAIN_MAP_KEYS);
        if (!ch->domains)
            cad_log_err("dispatch: out of memory for the domain limit; not applied channel=%s",
                        ch->name);
    }
}

/* Builds the account buckets of `cfg`: one per distinct plugin/account
 * whose first channel (in config order) names a rate; tokens are kept by key. */
static void accounts_configure(cad_dispatch_t *d, const cad_config_t *cfg, int64_t now_ms)
{
    account_t old[CAD_MAX_CHANNELS];
    int n_old = d->n_accounts;
    memcpy(old, d->accounts, sizeof old);
    d->n_accounts = 0;
    const cad_playbook_t *pb = &cfg->playbook;
    for (int c = 0; c < pb->n_channels; c++) {
        const cad_channel_config_t *cc = &cfg->channel_config[c];
        chan_t *ch = d->by_index[c];
        ch->account = -1;
        if (!cc->account[0])
            continue;
        char key[sizeof old[0].key];
        snprintf(key, sizeof key, "%s/%s", pb->channels[c].plugin, cc->account);
        int a = -1;
        for (int i = 0; i < d->n_accounts; i++)
            if (strcmp(d->accounts[i].key, key) == 0)
                a = i;
        if (a < 0) {
            a = d->n_accounts++;
            account_t *acc = &d->accounts[a];
            snprintf(acc->key, sizeof acc->key, "%s", key);
            bool kept = false;
            for (int i = 0; i < n_old; i++)
                if (strcmp(old[i].key, key) == 0) {
                    acc->bucket = old[i].bucket;
                    cad_bucket_configure(&acc->bucket, cc->account_rate, cc->account_burst, now_ms);
                    kept = true;
                }
            if (!kept)
                cad_bucket_init(&acc->bucket, cc->account_rate, cc->account_burst, now_ms);
        } else if (cad_bucket_unlimited(&d->accounts[a].bucket) && cc->account_rate > 0) {
            cad_bucket_init(&d->accounts[a].bucket, cc->account_rate, cc->account_burst, now_ms);
        }
        ch->account = a;
    }
}

/* Maps the config's channels to chan_t records (by name), creating new ones. */
static int apply_config(cad_dispatch_t *d, const cad_config_t *cfg, char *err)
{
    int64_t now_ms = (int64_t)uv_now(d->loop);
    const cad_playbook_t *pb = &cfg->playbook;
    for (int i = 0; i < d->n_chans; i++)
        d->chans[i]->index = -1;
    for (int c = 0; c < pb->n_channels; c++) {
        chan_t *ch = chan_find(d, pb->channels[c].name);
        bool fresh = ch == NULL;
        if (!ch) {
            if (d->n_chans >= MAX_CHANS)
                return cad_fail(err, CAD_EFULL,
                                "dispatch: more than %d channel names since start; restart the "
                                "daemon",
                                MAX_CHANS);
            ch = calloc(1, sizeof *ch);
            if (!ch)
                return cad_fail(err, CAD_ENOMEM, "dispatch: out of memory");
            snprintf(ch->name, sizeof ch->name, "%s", pb->channels[c].name);
            d->chans[d->n_chans++] = ch;
        }
        ch->index = c;
        d->by_index[c] = ch;
        chan_configure(d, ch, &pb->channels[c], &cfg->channel_config[c], now_ms, fresh);
    }
    d->n_channels = pb->n_channels;
    accounts_configure(d, cfg, now_ms);
    if (d->global.last_ms == 0 && d->global.burst == 0)
        cad_bucket_init(&d->global, cfg->dispatch_rate, cfg->dispatch_burst, now_ms);
    else
        cad_bucket_configure(&d->global, cfg->dispatch_rate, cfg->dispatch_burst, now_ms);
    d->cfg = cfg;
    return 0;
}

/* ---- the timer ------------------------------------------------------------------ */

static void pump(cad_dispatch_t *d);

static void on_timer(uv_timer_t *t)
{
    cad_dispatch_t *d = t->data;
    d->timer_due = 0;
    pump(d);
}

/* Runs pump() in `delay_ms` unless it is due sooner already. */
static void pump_in(cad_dispatch_t *d, int64_t delay_ms)
{
    if (d->closing)
        return;
    if (delay_ms < 0)
        delay_ms = 0;
    if (delay_ms > MAX_SLEEP_MS)
        delay_ms = MAX_SLEEP_MS;
    uint64_t due = uv_now(d->loop) + (uint64_t)delay_ms;
    if (d->timer_due && d->timer_due <= due)
        return;
    d->timer_due = due;
    uv_timer_start(&d->timer, on_timer, (uint64_t)delay_ms, 0);
}

void cad_dispatch_kick(cad_dispatch_t *d)
{
    if (d && !d->stopping)
        pump_in(d, 0);
}

static void take_back(cad_dispatch_t *d, chan_t *ch);

void cad_dispatch_recheck(cad_dispatch_t *d, int64_t customer_key)
{
    if (!d || d->stopping || !d->host)
        return;
    bool hit[CAD_MAX_CHANNELS] = {false};
    for (attempt_t *a = d->live; a; a = a->live_next)
        if ((customer_key == 0 || a->customer_key == customer_key) && a->ch->index >= 0)
            hit[a->ch->index] = true;
    for (int c = 0; c < d->n_channels; c++)
        if (hit[c]) {
            cad_log_info("dispatch: touches not yet on the wire taken back to be checked again "
                         "channel=%s customer_key=%lld",
                         d->by_index[c]->name, (long long)customer_key);
            take_back(d, d->by_index[c]);
        }
}

/* ---- outcomes ----------------------------------------------------------------------- */

static pending_t *pending_add(cad_dispatch_t *d, enum record_kind kind, const attempt_t *a)
{
    if (d->n_pending == d->cap_pending) {
        int cap = d->cap_pending ? d->cap_pending * 2 : 256;
        pending_t *p = realloc(d->pending, (size_t)cap * sizeof *p);
        if (!p) {
            /* The row stays in flight and is sent again after a restart. */
            cad_log_err("dispatch: out of memory recording an outcome touch=%lld",
                        (long long)a->key);
            return NULL;
        }
        d->pending = p;
        d->cap_pending = cap;
    }
    pending_t *p = &d->pending[d->n_pending++];
    memset(p, 0, offsetof(pending_t, text) + 1);
    p->kind = kind;
    p->key = a->key;
    p->customer_key = a->customer_key;
    p->contact_key = a->contact_key;
    p->maybe_received = a->maybe_received;
    p->ended_at = cad_wall_now();
    p->ch = a->ch;
    return p;
}

static void attempt_free(attempt_t *a)
{
    if (a->live) {
        if (a->live_prev)
            a->live_prev->live_next = a->live_next;
        else
            a->d->live = a->live_next;
        if (a->live_next)
            a->live_next->live_prev = a->live_prev;
    }
    free(a);
}

static void live_add(cad_dispatch_t *d, attempt_t *a)
{
    a->live = true;
    a->live_prev = NULL;
    a->live_next = d->live;
    if (d->live)
        d->live->live_prev = a;
    d->live = a;
}

static void check_stopped(cad_dispatch_t *d);

/* Records the end of an attempt that never reached a verdict. */
static void record_release(cad_dispatch_t *d, attempt_t *a, const char *why)
{
    pending_t *p = pending_add(d, REC_RELEASE, a);
    if (p)
        snprintf(p->text, sizeof p->text, "%s", why);
}

static void record_dead(cad_dispatch_t *d, attempt_t *a, const char *fmt, const char *reason)
{
    chan_t *ch = a->ch;
    pending_t *p = pending_add(d, REC_DEAD, a);
    if (p)
        snprintf(p->text, sizeof p->text, fmt, reason);
    ch->dead++;
    d->dead++;
    char v[CAD_LOG_VALUE_MAX], r[CAD_LOG_VALUE_MAX];
    cad_log_warning("touch dead channel=%s touch=%lld customer=%s attempt=%d reason=%s", ch->name,
                    (long long)a->key, cad_log_value(a->customer_id, v), a->number,
                    cad_log_value(p ? p->text : reason, r));
}

/* A claimed touch dies before it is sent (its expiry, max_age, its turn
 * under the domain limit too late): no attempt is counted, and a probe of
 * the half-open circuit it carried is given back, or the circuit would
 * wait for that probe's answer for ever. */
static void record_dead_unsent(cad_dispatch_t *d, attempt_t *a, const char *fmt, const char *reason)
{
    if (a->took_probe)
        cad_circuit_abandon(&a->ch->circuit);
    a->number--;
    record_dead(d, a, fmt, reason);
    if (d->n_pending > 0 && d->pending[d->n_pending - 1].key == a->key)
        d->pending[d->n_pending - 1].unsent = true;
}

/* A transient failure: retry later or give up. */
static void handle_retry(cad_dispatch_t *d, attempt_t *a, const cad_plugin_outcome_t *o,
                         cad_time_t now)
{
    chan_t *ch = a->ch;
    snprintf(ch->last_error, sizeof ch->last_error, "%s", o->reason);
    uint32_t max_attempts = ch->cc.max_attempts ? ch->cc.max_attempts : 8;
    /* The host could not even start it (every slot stuck in the plugin):
     * backoff and the circuit apply, but it is no attempt; max_age ends it. */
    bool unsent = strncmp(o->reason, CAD_NOT_STARTED_PREFIX, strlen(CAD_NOT_STARTED_PREFIX)) == 0;
    if (!unsent && (uint32_t)a->number >= max_attempts) {
        char why[CAD_PLUGIN_REASON_MAX + 64];
        snprintf(why, sizeof why, "gave up after %d attempts: %s", a->number, o->reason);
        record_dead(d, a, "%s", why);
        return;
    }
    int64_t backoff = cad_backoff_delay_ms(&ch->backoff, a->number, &d->rng);
    int64_t delay = cad_backoff_with_retry_after(backoff, o->retry_after);
    if (delay < 0) {
        record_dead(d, a, "retry schedule exhausted: %s", o->reason);
        return;
    }
    /* Due times are whole seconds and the dispatcher wakes as one begins.
     * With a Retry-After the wait is rounded up from the current
     * millisecond, never shorter than asked; our own backoff alone to the
     * nearest second, so that a 5 s step of the schedule is 4.5-5.5 s, not
     * 5-6 s. */
    bool asked = o->retry_after > 0; /* never sooner than asked, whichever is longer */
    cad_time_t retry_at = delay > 0 ? (cad_wall_ms() + delay + (asked ? 999 : 500)) / 1000 : now;
    if (retry_at < now)
        retry_at = now; /* the clock stepped back since `now` was read */
    int64_t max_age = ch->cc.max_age > 0 ? ch->cc.max_age : 2 * CAD_DAY;
    if (retry_at - a->decided_at > max_age) {
        record_dead(d, a, "max_age reached before the next attempt: %s", o->reason);
        return;
    }
    if (retry_at >= a->expires_at) {
        ch->expired++;
        record_dead(d, a, "expired: the next attempt would be past the touch's expiry: %s",
                    o->reason);
        return;
    }
    pending_t *p = pending_add(d, REC_RETRY, a);
    if (p) {
        p->retry_at = retry_at;
        p->unsent = unsent;
        snprintf(p->text, sizeof p->text, "%s", o->reason);
    }
    ch->retried++;
    d->retried++;
    char r[CAD_LOG_VALUE_MAX];
    cad_log_info("touch retry channel=%s touch=%lld attempt=%d in_s=%lld reason=%s", ch->name,
                 (long long)a->key, a->number, (long long)(retry_at - now),
                 cad_log_value(o->reason, r));
}

static void handle_permanent(cad_dispatch_t *d, attempt_t *a, const cad_plugin_outcome_t *o)
{
    chan_t *ch = a->ch;
    snprintf(ch->last_error, sizeof ch->last_error, "%s", o->reason);
    ch->permanent++;
    record_dead(d, a, "permanent: %s", o->reason);
    /* A gone endpoint is no fault of the contact's: the channel stops, the
     * contact keeps it. */
    if (o->effect == CAD_EFFECT_NONE || o->effect == CAD_EFFECT_CHANNEL_DISABLED ||
        d->n_pending == 0)
        return;
    pending_t *p = &d->pending[d->n_pending - 1];
    if (p->key != a->key)
        return;
    p->effect = o->effect;
    if (o->effect == CAD_EFFECT_CONSENT_REVOKED)
        p->contact_id = strdup(a->contact_id);
}

/* The channel's circuit opened: what was claimed ahead and waits to be sent
 * comes back unsent (released to the queue, not an attempt), so the failing
 * endpoint gets no more than what was already on the wire. */
static void take_back(cad_dispatch_t *d, chan_t *ch)
{
    if (d->host && ch->index >= 0)
        cad_plugin_host_take_back(d->host, ch->index);
}

static void on_done(const cad_plugin_outcome_t *o, bool maybe_received, void *arg)
{
    attempt_t *a = arg;
    a->maybe_received = maybe_received;
    cad_dispatch_t *d = a->d;
    chan_t *ch = a->ch;
    ch->in_flight--;
    d->in_flight--;
    crash_step(d, "outcome received");
    int64_t now_ms = (int64_t)uv_now(d->loop);
    cad_time_t now = cad_wall_now();
    switch (o->kind) {
    case CAD_OUTCOME_DELIVERED: {
        if (a->took_probe || ch->circuit.state != CAD_CIRCUIT_CLOSED) {
            if (ch->circuit.state != CAD_CIRCUIT_CLOSED)
                cad_log_notice("dispatch: circuit closed, the channel answers again channel=%s",
                               ch->name);
            ch->circuit_since = now;
        }
        cad_circuit_success(&ch->circuit, now_ms);
        pending_t *p = pending_add(d, REC_DELIVERED, a);
        if (p)
            snprintf(p->text, sizeof p->text, "%s", o->provider_id);
        ch->delivered++;
        d->delivered++;
        break;
    }
    case CAD_OUTCOME_RETRY:
        if (strncmp(o->reason, CAD_CANCELLED_PREFIX, strlen(CAD_CANCELLED_PREFIX)) == 0) {
            /* The host closed (shutdown or reload) before a verdict. */
            if (a->took_probe)
                cad_circuit_abandon(&ch->circuit);
            if (d->stopping) {
                d->cut_at_stop++;
                d->cut_sent_at_stop += maybe_received;
            }
            record_release(d, a, o->reason);
            break;
        }
        if (cad_circuit_failure(&ch->circuit, now_ms)) {
            ch->circuit_since = now;
            char r[CAD_LOG_VALUE_MAX];
            cad_log_warning("dispatch: circuit open, the channel is failing; its touches stay "
                            "queued channel=%s failures=%u probe_in_ms=%lld last_error=%s",
                            ch->name, ch->circuit.consecutive_failures,
                            (long long)ch->circuit.interval_ms, cad_log_value(o->reason, r));
            take_back(d, ch);
        }
        handle_retry(d, a, o, now);
        break;
    case CAD_OUTCOME_PERMANENT:
        /* The provider answered: as far as the circuit goes, that is health,
         * except an endpoint gone for good (webhook 410): the channel stops
         * at once, its queue kept, until a reload (a fixed url) enables it. */
        if (o->effect == CAD_EFFECT_CHANNEL_DISABLED) {
            if (a->took_probe)
                cad_circuit_abandon(&ch->circuit);
            if (ch->disabled) {
                /* Already on the wire when the first Gone came back: it
                 * waits with the rest of the queue for the reload. */
                cad_log_info("touch back to the queue, its channel is disabled channel=%s "
                             "touch=%lld",
                             ch->name, (long long)a->key);
                record_release(d, a, o->reason);
                break;
            }
            ch->disabled = true;
            ch->disabled_since = now;
            char r[CAD_LOG_VALUE_MAX];
            cad_log_warning("dispatch: channel disabled, its endpoint is gone or refuses its "
                            "credentials; its touches stay "
                            "queued until the configuration is reloaded channel=%s reason=%s",
                            ch->name, cad_log_value(o->reason, r));
            take_back(d, ch);
        } else {
            if (ch->circuit.state != CAD_CIRCUIT_CLOSED)
                ch->circuit_since = now;
            cad_circuit_success(&ch->circuit, now_ms);
        }
        handle_permanent(d, a, o);
        break;
    }
    attempt_free(a);
    if (d->stopping) {
        pump_in(d, 0);
        return;
    }
    pump_in(d, d->n_pending >= COMMIT_ROWS ? 0 : d->cfg->commit_interval_ms);
}

/* ---- sending ------------------------------------------------------------------------- */

static const char *email_domain(const char *email)
{
    const char *at = strrchr(email, '@');
    return at && at[1] ? at + 1 : NULL;
}

static const cad_rule_t *find_rule(const cad_playbook_t *pb, const char *name)
{
    for (int i = 0; i < pb->n_rules; i++)
        if (strcmp(pb->rules[i].name, name) == 0)
            return &pb->rules[i];
    return NULL;
}

/* A claimed touch whose mail domain has no token: it books its turn in the
 * domain's bucket and goes back to the outbox unsent, due at that turn
 * (or dies now if its turn comes after its expiry or max_age). */
static void hold_for_domain(cad_dispatch_t *d, attempt_t *a, cad_bucket_t *b, const char *domain,
                            int64_t now_ms, cad_time_t now)
{
    chan_t *ch = a->ch;
    int64_t wait_ms = cad_bucket_book_ms(b, now_ms);
    cad_time_t turn = (cad_wall_ms() + wait_ms + 999) / 1000;
    if (turn < now)
        turn = now;
    int64_t max_age = ch->cc.max_age > 0 ? ch->cc.max_age : 2 * CAD_DAY;
    if (turn >= a->expires_at || turn - a->decided_at > max_age) {
        cad_bucket_give_back(b);
        if (turn >= a->expires_at)
            ch->expired++;
        record_dead_unsent(d, a, "%s",
                           turn >= a->expires_at
                               ? "expired: its turn under the mail domain's limit comes after the "
                                 "touch's expiry"
                               : "max_age reached before its turn under the mail domain's limit");
        return;
    }
    if (a->took_probe) /* the probe must get an answer: the next touch claimed is */
        cad_circuit_abandon(&ch->circuit);
    pending_t *p = pending_add(d, REC_RETRY, a);
    if (p) {
        p->retry_at = turn;
        p->unsent = true;
        snprintf(p->text, sizeof p->text,
                 CAD_DISPATCH_HELD_PREFIX " mail domain %s is at its limit of %u a minute "
                                          "(domain_per_minute); sent at its turn",
                 domain, ch->cc.domain_per_minute);
    }
    ch->held++;
    char v[CAD_LOG_VALUE_MAX];
    cad_log_info("touch held for its mail domain's limit channel=%s touch=%lld customer=%s "
                 "domain=%s in_s=%lld",
                 ch->name, (long long)a->key, cad_log_value(a->customer_id, v), domain,
                 (long long)(turn - now));
}

/* Hands one claimed touch to the plugin host (or holds it back for its
 * mail domain's limit). Returns false when it was held back. */
static bool send_attempt(cad_dispatch_t *d, attempt_t *a, int64_t now_ms, int64_t *wake_ms)
{
    chan_t *ch = a->ch;
    if (a->withdrawn) {
        pending_t *p = pending_add(d, REC_WITHDRAW, a);
        if (p)
            snprintf(p->text, sizeof p->text, "not sent: %s", a->withdrawn);
        ch->withdrawn++;
        char v[CAD_LOG_VALUE_MAX], w[CAD_LOG_VALUE_MAX], r[CAD_LOG_VALUE_MAX];
        cad_log_notice("touch withdrawn channel=%s touch=%lld customer=%s contact=%s reason=%s",
                       ch->name, (long long)a->key, cad_log_value(a->customer_id, v),
                       cad_log_value(a->contact_id, w), cad_log_value(a->withdrawn, r));
        attempt_free(a);
        return true;
    }
    cad_time_t now = cad_wall_now();
    /* Due times are whole seconds: sending in the expiry second itself could
     * reach the provider a moment after it ended. A touch is sendable while
     * now < expires_at. */
    if (now >= a->expires_at) {
        ch->expired++;
        record_dead_unsent(d, a, "expired: %s", "past the touch's expiry before it could be sent");
        attempt_free(a);
        return true;
    }
    int64_t max_age = ch->cc.max_age > 0 ? ch->cc.max_age : 2 * CAD_DAY;
    if (now - a->decided_at > max_age) {
        record_dead_unsent(d, a, "%s", "max_age reached before the touch could be sent");
        attempt_free(a);
        return true;
    }
    const char *domain = ch->domains && !a->booked ? email_domain(a->contact_email) : NULL;
    if (domain) {
        cad_bucket_t *b = cad_bucket_map_get(ch->domains, domain, now_ms);
        if (b && !cad_bucket_take(b, now_ms)) {
            hold_for_domain(d, a, b, domain, now_ms, now);
            attempt_free(a);
            return false;
        }
    }
    const cad_playbook_t *pb = &d->cfg->playbook;
    const cad_rule_t *rule = find_rule(pb, a->rule);
    int content = a->content_id[0] ? cad_playbook_content(pb, a->content_id) : -1;
    int tmpl_index = rule ? rule->template_index : CAD_NO_TEMPLATE;
    if (tmpl_index == CAD_NO_TEMPLATE && content >= 0)
        tmpl_index = pb->content[content].template_index;
    const cad_template_t *tmpl =
        tmpl_index >= 0 && tmpl_index < pb->n_templates ? &pb->templates[tmpl_index] : NULL;
    cad_plugin_touch_t touch = {
        .struct_size = sizeof touch,
        .idempotency_key = a->idempotency_key,
        .touch_id = a->key,
        .customer = {.id = a->customer_id,
                     .name = a->customer_name,
                     .attributes = a->customer_attributes},
        .contact = {.id = a->contact_id,
                    .name = a->contact_name,
                    .first_name = a->contact_first_name,
                    .email = a->contact_email,
                    .phone = a->contact_phone},
        .rule = a->rule,
        .purpose = a->purpose,
        .channel = ch->name,
        .content = {.id = a->content_id,
                    .title = content >= 0 && pb->content[content].title ? pb->content[content].title
                                                                        : "",
                    .url =
                        content >= 0 && pb->content[content].url ? pb->content[content].url : ""},
        .subject = "",
        .text = "",
        .html = "",
        .unsubscribe_url = "",
        .unsubscribe_mailto = "",
        .decided_at = a->decided_at,
        .attempt = a->number,
    };
    char err[CAD_ERRBUF];
    ch->in_flight++;
    d->in_flight++;
    int rc = d->host && ch->index >= 0
                 ? cad_plugin_host_send(d->host, ch->index, &touch, tmpl, on_done, a, err)
                 : cad_fail(err, CAD_ENOTFOUND, "channel %s is not configured", ch->name);
    if (rc != 0) {
        ch->in_flight--;
        d->in_flight--;
        if (a->took_probe)
            cad_circuit_abandon(&ch->circuit);
        char r[CAD_LOG_VALUE_MAX];
        cad_log_warning("dispatch: touch not handed to its plugin, queued again channel=%s "
                        "touch=%lld reason=%s",
                        ch->name, (long long)a->key, cad_log_value(err, r));
        record_release(d, a, err);
        attempt_free(a);
        return true;
    }
    live_add(d, a);
    ch->claimed++;
    crash_step(d, "send accepted");
    return true;
}

/* ---- claiming --------------------------------------------------------------------------- */

static char *copy_str(char **p, const char *s)
{
    size_t n = strlen(s) + 1;
    memcpy(*p, s, n);
    char *r = *p;
    *p += n;
    return r;
}

const char *cad_dispatch_withdraw_reason(enum cad_address_kind address, const cad_outbox_touch_t *t)
{
    if (t->unusable)
        return "the contact's channel was marked unusable after a permanent failure";
    switch (address) {
    case CAD_ADDRESS_EMAIL:
        if (!t->contact_email || !*t->contact_email)
            return "the contact has no email address any more";
        if (!t->email_consent)
            return "the contact has no email consent any more";
        if (t->email_suppressed)
            return "the contact's email address is on the suppression list";
        break;
    case CAD_ADDRESS_PHONE:
        if (!t->contact_phone || !*t->contact_phone)
            return "the contact has no phone number any more";
        if (!t->sms_consent)
            return "the contact has no SMS consent any more";
        if (t->phone_suppressed)
            return "the contact's phone number is on the suppression list";
        break;
    case CAD_ADDRESS_NONE: break;
    }
    return NULL;
}

typedef struct claim_ctx {
    cad_dispatch_t *d;
    chan_t *ch;
    cad_time_t now;
    int64_t now_ms;
    bool probe;
    int n;
} claim_ctx_t;

static void on_claimed(const cad_outbox_touch_t *t, void *arg)
{
    claim_ctx_t *c = arg;
    cad_dispatch_t *d = c->d;
    const char *strs[] = {
        t->idempotency_key, t->customer_id,        t->contact_id,    t->rule,
        t->purpose,         t->content_id,         t->customer_name, t->customer_attributes,
        t->contact_name,    t->contact_first_name, t->contact_email, t->contact_phone};
    size_t len = 0;
    for (size_t i = 0; i < CAD_ARRAY_LEN(strs); i++)
        len += strlen(strs[i] ? strs[i] : "") + 1;
    attempt_t *a = malloc(sizeof *a + len);
    if (!a) {
        /* The row is in flight in the store: it is queued again at the next start. */
        cad_log_err("dispatch: out of memory for a claimed touch touch=%lld", (long long)t->key);
        return;
    }
    memset(a, 0, sizeof *a);
    char *p = a->buf;
    const char **dst[] = {
        &a->idempotency_key, &a->customer_id,        &a->contact_id,    &a->rule,
        &a->purpose,         &a->content_id,         &a->customer_name, &a->customer_attributes,
        &a->contact_name,    &a->contact_first_name, &a->contact_email, &a->contact_phone};
    for (size_t i = 0; i < CAD_ARRAY_LEN(strs); i++)
        *dst[i] = copy_str(&p, strs[i] ? strs[i] : "");
    a->d = d;
    a->ch = c->ch;
    a->key = t->key;
    a->customer_key = t->customer_key;
    a->contact_key = t->contact_key;
    a->number = t->attempt + 1;
    a->decided_at = t->decided_at;
    a->expires_at = t->expires_at;
    a->withdrawn = cad_dispatch_withdraw_reason(c->ch->address, t);
    /* Back at its turn, it sends on the token it booked. Claimed long after
     * its turn (its customer was paused, its channel's circuit open), the
     * bucket has refilled meanwhile: it takes a token like any other. */
    a->booked =
        t->last_error &&
        strncmp(t->last_error, CAD_DISPATCH_HELD_PREFIX, strlen(CAD_DISPATCH_HELD_PREFIX)) == 0 &&
        c->now - t->due_at <= BOOKED_GRACE_S;
    a->next = NULL;
    if (d->claimed_tail)
        d->claimed_tail->next = a;
    else
        d->claimed_head = a;
    d->claimed_tail = a;
    if (a->withdrawn)
        return; /* recorded after the claim commits; no token, no probe */
    a->took_probe = c->probe && c->n == 0;
    /* Tokens are taken now; given back if the batch fails. */
    cad_bucket_take(&c->ch->bucket, c->now_ms);
    if (c->ch->account >= 0)
        cad_bucket_take(&d->accounts[c->ch->account].bucket, c->now_ms);
    cad_bucket_take(&d->global, c->now_ms);
    c->n++;
}

/* Touches a channel may hold claimed at once: CLAIM_AHEAD times its
 * concurrency. As many as the concurrency are on the wire; the rest wait in
 * the transport's lane, so its thread starts the next one the moment a
 * transfer finishes while this thread commits outcomes and claims the next
 * batch (an fsync and a few hundred claims take milliseconds). When the
 * channel's circuit opens, the waiting ones are taken back unsent. */
static int claim_limit(const chan_t *ch)
{
    return CLAIM_AHEAD * (int)(ch->cc.concurrency ? ch->cc.concurrency : 1);
}

/* `room` capped by the whole tokens of bucket `b`; 0 (and *wake_ms set for
 * the next token) when it has none. */
static int bucket_room(cad_bucket_t *b, int room, int64_t now_ms, int64_t *wake_ms)
{
    if (!b || cad_bucket_unlimited(b))
        return room;
    double tokens = cad_bucket_tokens(b, now_ms);
    if (tokens < 1.0) {
        int64_t w = cad_bucket_wait_ms(b, now_ms);
        if (w < *wake_ms)
            *wake_ms = w;
        return 0;
    }
    return tokens < room ? (int)floor(tokens) : room;
}

/* What the limits several channels share leave to channel `ch`: the global
 * claim room (CLAIM_AHEAD times dispatch_concurrency; the transport holds
 * the running transfers to dispatch_concurrency itself), the provider
 * account's bucket and the global bucket. `claimed_now` touches were
 * claimed by other channels in this pump and are not in flight yet; their
 * tokens are taken already. */
static int shared_room(cad_dispatch_t *d, const chan_t *ch, int claimed_now, int64_t now_ms,
                       int64_t *wake_ms)
{
    int room =
        CLAIM_AHEAD * (int)(d->cfg->dispatch_concurrency ? d->cfg->dispatch_concurrency : 1024) -
        d->in_flight - claimed_now;
    if (room <= 0)
        return 0;
    if (ch->account >= 0)
        room = bucket_room(&d->accounts[ch->account].bucket, room, now_ms, wake_ms);
    return room > 0 ? bucket_room(&d->global, room, now_ms, wake_ms) : 0;
}

/* How many touches channel `ch` may claim now; sets *wake_ms when it must
 * wait for a token or the circuit. *probe: the circuit is half-open. */
static int claim_room(cad_dispatch_t *d, chan_t *ch, int64_t now_ms, int64_t *wake_ms, bool *probe)
{
    *probe = false;
    if (ch->index < 0 || ch->disabled || !d->host || !cad_plugin_host_ready(d->host, ch->index))
        return 0;
    int room = claim_limit(ch) - ch->in_flight;
    if (room > CLAIM_BATCH)
        room = CLAIM_BATCH;
    if (room <= 0)
        return 0;
    int64_t w = cad_circuit_wait_ms(&ch->circuit, now_ms);
    if (w != 0) {
        if (w > 0 && w < *wake_ms)
            *wake_ms = w;
        return 0;
    }
    if (ch->circuit.state != CAD_CIRCUIT_CLOSED) {
        if (!cad_circuit_allow(&ch->circuit, now_ms))
            return 0;
        if (ch->circuit.state == CAD_CIRCUIT_HALF_OPEN)
            cad_log_notice("dispatch: circuit half-open, sending one probe channel=%s", ch->name);
        ch->circuit_since = cad_wall_now();
        *probe = true;
        room = 1;
    }
    room = bucket_room(&ch->bucket, room, now_ms, wake_ms);
    int shared = room > 0 ? shared_room(d, ch, 0, now_ms, wake_ms) : 0;
    if (shared < room)
        room = shared;
    if (room <= 0 && *probe)
        cad_circuit_abandon(&ch->circuit);
    return room;
}

/* Undoes the claims of a batch that did not commit. */
static void unclaim_all(cad_dispatch_t *d)
{
    attempt_t *a = d->claimed_head;
    d->claimed_head = d->claimed_tail = NULL;
    while (a) {
        attempt_t *next = a->next;
        if (a->withdrawn) { /* took no token */
            attempt_free(a);
            a = next;
            continue;
        }
        cad_bucket_give_back(&a->ch->bucket);
        if (a->ch->account >= 0)
            cad_bucket_give_back(&d->accounts[a->ch->account].bucket);
        cad_bucket_give_back(&d->global);
        if (a->took_probe)
            cad_circuit_abandon(&a->ch->circuit);
        attempt_free(a);
        a = next;
    }
}

/* ---- the disk reserve ----------------------------------------------------------------------
 *
 * On a full disk SQLite cannot append the outcomes of touches already sent
 * to its WAL. The dispatcher keeps RESERVE_BYTES allocated in a file next to
 * the database; when a batch fails with "disk full" it frees that space and
 * caps the database at its current page count, so writes that only change
 * existing rows (outcomes, claims) go through while anything that needs new
 * pages (decisions, imports) is refused. When the reserve can be allocated
 * again, the cap is lifted. */

static bool reserve_make(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return false;
    int rc = posix_fallocate(fd, 0, RESERVE_BYTES);
    if (rc == EOPNOTSUPP || rc == EINVAL) { /* file systems without fallocate */
        static const char zeros[65536];
        rc = 0;
        for (off_t off = 0; rc == 0 && off < RESERVE_BYTES; off += (off_t)sizeof zeros)
            if (pwrite(fd, zeros, sizeof zeros, off) != (ssize_t)sizeof zeros)
                rc = errno ? errno : EIO;
        if (rc == 0 && fsync(fd) != 0)
            rc = errno;
    }
    close(fd);
    if (rc != 0)
        unlink(path);
    return rc == 0;
}

/* A batch failed with "disk full": free the reserve and cap the store. */
static void reserve_release(cad_dispatch_t *d)
{
    if (!d->reserve_path || d->reserve_released)
        return;
    char err[CAD_ERRBUF];
    unlink(d->reserve_path);
    /* The cap: what the database and its WAL hold now, plus a little room
     * for index pages that outcome updates split. */
    int64_t bytes = RESERVE_HEADROOM;
    struct stat st;
    char wal[4200];
    const char *db = cad_store_path(d->store);
    snprintf(wal, sizeof wal, "%s-wal", db);
    if (stat(db, &st) == 0)
        bytes += st.st_size;
    if (stat(wal, &st) == 0)
        bytes += st.st_size;
    if (cad_store_limit_size(d->store, bytes, err) < 0)
        cad_log_err("dispatch: cannot cap the store on a full disk: %s", err);
    d->reserve_released = true;
    d->reserve_fresh = true;
    d->reserve_retry_at = uv_now(d->loop) + RESERVE_RETRY_MS;
    cad_log_err("dispatch: disk full: released the %d MiB reserve so outcomes of touches in "
                "flight are recorded and the outbox drains; new decisions and imports are refused "
                "until space is freed reserve=%s",
                RESERVE_BYTES >> 20, d->reserve_path);
}

/* While released: is there space again? Then restore the reserve and lift the cap. */
static void reserve_check(cad_dispatch_t *d)
{
    if (!d->reserve_released || uv_now(d->loop) < d->reserve_retry_at)
        return;
    d->reserve_retry_at = uv_now(d->loop) + RESERVE_RETRY_MS;
    if (!reserve_make(d->reserve_path))
        return;
    char err[CAD_ERRBUF];
    if (cad_store_limit_size(d->store, 0, err) < 0) {
        cad_log_err("dispatch: cannot lift the store's size cap: %s", err);
        return;
    }
    d->reserve_released = false;
    cad_log_notice("dispatch: disk space is back; reserve restored, decisions accepted again");
}

/* ---- the pump ------------------------------------------------------------------------------- */

static void changed_add(cad_dispatch_t *d, int64_t customer_key)
{
    if (d->n_changed == d->cap_changed) {
        int cap = d->cap_changed ? d->cap_changed * 2 : 64;
        int64_t *p = realloc(d->changed, (size_t)cap * sizeof *p);
        if (!p)
            return; /* the store scheduled the customer; the calendar finds it at next start */
        d->changed = p;
        d->cap_changed = cap;
    }
    d->changed[d->n_changed++] = customer_key;
}

/* Writes one pending outcome inside the open batch. A refusal (the row moved
 * on: an operator cancelled it, or it is gone) is logged and dropped; a store
 * failure is returned and fails the batch. */
static int apply_pending(cad_dispatch_t *d, pending_t *p, cad_time_t now)
{
    char err[CAD_ERRBUF];
    int rc = 0;
    switch (p->kind) {
    case REC_DELIVERED: rc = cad_store_outbox_delivered(d->store, p->key, p->text, now, err); break;
    case REC_RETRY:
        rc = p->unsent
                 ? cad_store_outbox_retry_unsent(d->store, p->key, p->retry_at, p->text, now, err)
                 : cad_store_outbox_retry(d->store, p->key, p->retry_at, p->text, now, err);
        break;
    case REC_DEAD:
        rc = p->unsent ? cad_store_outbox_dead_unsent(d->store, p->key, p->text, now, err)
                       : cad_store_outbox_dead(d->store, p->key, p->text, now, err);
        break;
    case REC_RELEASE: rc = cad_store_outbox_release(d->store, p->key, now, err); break;
    case REC_WITHDRAW: rc = cad_store_outbox_withdraw(d->store, p->key, p->text, now, err); break;
    }
    /* An attempt that may have reached the customer counts, for the
     * engine's spacing rules, even if the touch later dies (at-least-once:
     * better one touch too few than one too many). */
    if (rc == 0 && p->maybe_received && p->kind != REC_DELIVERED)
        rc = cad_store_outbox_maybe_delivered(d->store, p->key, p->ended_at, err);
    if (rc == -CAD_EINVAL || rc == -CAD_ENOTFOUND) {
        cad_log_warning("dispatch: outcome not recorded: %s touch=%lld", err, (long long)p->key);
        return 0;
    }
    if (rc < 0) {
        cad_log_err("dispatch: cannot record an outcome: %s touch=%lld", err, (long long)p->key);
        return rc;
    }
    /* The engine saw the rule covered by this touch: with it withdrawn, a
     * fallback channel or contact may serve it now. */
    if (p->kind == REC_WITHDRAW)
        changed_add(d, p->customer_key);
    if (p->kind != REC_DEAD || p->effect == CAD_EFFECT_NONE || p->contact_key == 0)
        return 0;
    const chan_t *ch = p->ch;
    char source[CAD_PLUGIN_REASON_MAX + 16];
    snprintf(source, sizeof source, "provider: %s", p->text);
    bool consent =
        p->effect == CAD_EFFECT_CONSENT_REVOKED && p->contact_id && ch->address != CAD_ADDRESS_NONE;
    if (consent) {
        cad_consent_input_t c = {
            .kind = ch->address == CAD_ADDRESS_PHONE ? "sms" : "email",
            .opted_in = false,
            .at = now,
            .source = source,
        };
        rc = cad_store_consent_set(d->store, p->contact_id, &c, err);
    } else {
        rc = cad_store_contact_mark_unusable(d->store, p->contact_key, ch->name, ch->address,
                                             source, now, err);
    }
    if (rc == -CAD_EINVAL || rc == -CAD_ENOTFOUND) {
        cad_log_warning("dispatch: permanent failure not fed back: %s touch=%lld", err,
                        (long long)p->key);
        return 0;
    }
    if (rc < 0)
        return rc;
    char r[CAD_LOG_VALUE_MAX];
    cad_log_notice("dispatch: %s after a permanent failure channel=%s touch=%lld reason=%s",
                   consent ? "consent revoked" : "contact's channel marked unusable", ch->name,
                   (long long)p->key, cad_log_value(p->text, r));
    changed_add(d, p->customer_key);
    return 0;
}

static void pending_clear(cad_dispatch_t *d)
{
    for (int i = 0; i < d->n_pending; i++)
        free(d->pending[i].contact_id);
    d->n_pending = 0;
}

/* Due times are wall-clock seconds; timers and token buckets run on the
 * monotonic clock. A step back of the wall clock (an NTP step, a wrong time
 * corrected) would make touches that were due wait until the clock catches
 * up again, and a retry wait its delay plus the step: the outbox's due
 * times are moved so that neither happens
 * (cad_store_outbox_clock_stepped_back). A step forward (or a suspend,
 * which the monotonic clock does not count) is time passed: what fell due
 * goes, and expiry holds; only touches waiting their turn under a domain
 * limit move with it, since their bucket did not see that time pass. */
static void clock_check(cad_dispatch_t *d)
{
    int64_t offset = cad_wall_ms() - (int64_t)(uv_hrtime() / 1000000);
    int64_t step_ms = d->clock_offset_ms - offset;
    if (step_ms < CLOCK_STEP_MS && step_ms > -CLOCK_STEP_MS) {
        d->clock_offset_ms = offset;
        return;
    }
    char err[CAD_ERRBUF];
    bool back = step_ms > 0;
    /* the two readings are a moment apart: the nearest second */
    int64_t seconds = ((back ? step_ms : -step_ms) + 500) / 1000;
    cad_time_t now = cad_wall_now();
    int n = back ? cad_store_outbox_clock_stepped_back(d->store, now, seconds, err)
                 : cad_store_outbox_clock_stepped_forward(d->store, now, seconds,
                                                          CAD_DISPATCH_HELD_PREFIX, err);
    if (n < 0) { /* tried again at the next pump */
        cad_log_err("dispatch: the wall clock stepped %s %lld s; cannot move due times yet: %s",
                    back ? "back" : "forward", (long long)seconds, err);
        return;
    }
    d->clock_offset_ms = offset;
    if (back)
        cad_log_warning("dispatch: the wall clock stepped back %lld s; touches due already stay "
                        "due and retries keep their wait moved=%d",
                        (long long)seconds, n);
    else
        cad_log_warning("dispatch: the wall clock stepped forward %lld s (or the system was "
                        "suspended); touches held for a domain limit keep their spacing moved=%d",
                        (long long)seconds, n);
}

static void pump(cad_dispatch_t *d)
{
    if (d->closing)
        return;
    clock_check(d);
    int64_t now_ms = (int64_t)uv_now(d->loop);
    cad_time_t now = cad_wall_now();
    int64_t wake_ms = MAX_SLEEP_MS;
    char err[CAD_ERRBUF];

    reserve_check(d);

    int room[CAD_MAX_CHANNELS] = {0};
    bool probe[CAD_MAX_CHANNELS] = {false};
    int total_room = 0;
    if (!d->stopping && !(d->store_failing && d->n_pending > 0))
        for (int c = 0; c < d->n_channels; c++) {
            room[c] = claim_room(d, d->by_index[c], now_ms, &wake_ms, &probe[c]);
            total_room += room[c];
        }
    if (d->n_pending == 0 && total_room == 0) {
        check_stopped(d);
        if (!d->stopping)
            goto rearm_idle;
        return;
    }

    int rc = cad_store_batch_begin(d->store, err);
    if (rc < 0) {
        for (int c = 0; c < d->n_channels; c++)
            if (probe[c])
                cad_circuit_abandon(&d->by_index[c]->circuit);
        cad_log_warning("dispatch: cannot open a batch, trying again: %s", err);
        /* Busy with a batch of our own: soon. Locked by another process:
         * like any store failure, so the loop is not spent waiting on it. */
        pump_in(d, rc == -CAD_EBUSY && cad_store_in_batch(d->store) ? 10 : STORE_RETRY_MS);
        return;
    }
    int rows = d->n_pending;
    d->n_changed = 0;
    for (int i = 0; rc == 0 && i < d->n_pending; i++)
        if ((rc = apply_pending(d, &d->pending[i], now)) < 0)
            cad_fail(err, -rc, "recording the outcome of touch %lld failed: %s",
                     (long long)d->pending[i].key, cad_strerror(rc));
    bool more[CAD_MAX_CHANNELS] = {false};
    int claimed_now = 0;
    /* The channel after the last one that claimed goes first, so that
     * channels sharing a scarce bucket take turns rather than the first
     * starving the others. */
    int first = d->n_channels > 0 ? (d->last_claimer + 1) % d->n_channels : 0;
    for (int k = 0; rc == 0 && k < d->n_channels; k++) {
        int c = (first + k) % d->n_channels;
        if (room[c] <= 0)
            continue;
        chan_t *ch = d->by_index[c];
        /* Channels claimed before this one took shared tokens. */
        int shared = shared_room(d, ch, claimed_now, now_ms, &wake_ms);
        if (shared < room[c])
            room[c] = shared;
        if (room[c] <= 0) {
            if (probe[c])
                cad_circuit_abandon(&ch->circuit);
            continue;
        }
        claim_ctx_t ctx = {.d = d, .ch = ch, .now = now, .now_ms = now_ms, .probe = probe[c]};
        int n =
            cad_store_outbox_claim_channel(d->store, ch->name, now, room[c], on_claimed, &ctx, err);
        if (n < 0) {
            cad_log_err("dispatch: cannot claim touches: %s channel=%s", err, ch->name);
            rc = n;
            break;
        }
        if (probe[c] && ctx.n == 0) /* nothing claimed, or all of it withdrawn */
            cad_circuit_abandon(&ch->circuit);
        more[c] = n >= room[c];
        claimed_now += ctx.n;
        if (ctx.n > 0)
            d->last_claimer = c;
    }
    if (rc == 0 && !cad_store_in_batch(d->store))
        rc = cad_fail(err, CAD_ESTORE, "the store rolled the batch back");
    if (rc == 0)
        rc = cad_store_batch_commit(d->store, err);
    if (rc < 0) {
        cad_store_batch_rollback(d->store);
        unclaim_all(d);
        d->store_errors++;
        if (rc == -CAD_EFULL)
            reserve_release(d);
        if (!d->store_failing)
            cad_log_err("dispatch: cannot record outcomes and claims; keeping them in memory and "
                        "trying again every %d ms: %s pending=%d",
                        STORE_RETRY_MS, err, d->n_pending);
        d->store_failing = true;
        pump_in(d, d->reserve_fresh ? 10 : STORE_RETRY_MS);
        d->reserve_fresh = false;
        return;
    }
    if (d->store_failing)
        cad_log_notice("dispatch: the store accepts writes again pending=%d", d->n_pending);
    d->store_failing = false;
    if (rows > 0) {
        d->commits++;
        d->committed_rows += rows;
        if (rows > d->max_commit_rows)
            d->max_commit_rows = rows;
        crash_step(d, "outcomes committed");
    }
    pending_clear(d);
    if (d->scheduler && !d->stopping) /* the scheduler is closing once we stop */
        for (int i = 0; i < d->n_changed; i++)
            cad_scheduler_customer_changed(d->scheduler, d->changed[i]);
    d->n_changed = 0;

    attempt_t *a = d->claimed_head;
    d->claimed_head = d->claimed_tail = NULL;
    while (a) {
        attempt_t *next = a->next;
        send_attempt(d, a, now_ms, &wake_ms);
        a = next;
    }
    if (d->stopping) {
        check_stopped(d);
        return;
    }
    if (d->n_pending > 0)
        pump_in(d, d->cfg->commit_interval_ms);
    for (int c = 0; c < d->n_channels; c++)
        if (more[c]) {
            pump_in(d, 0);
            return;
        }
rearm_idle:
    /* Sleep until the earliest due touch of a channel that has room. */
    for (int c = 0; c < d->n_channels; c++) {
        chan_t *ch = d->by_index[c];
        if (ch->index < 0 || ch->disabled || !d->host || !cad_plugin_host_ready(d->host, c))
            continue;
        if (ch->in_flight >= claim_limit(ch))
            continue; /* an outcome will pump */
        if (cad_circuit_wait_ms(&ch->circuit, now_ms) != 0)
            continue; /* wake_ms covers it */
        cad_time_t due = cad_store_outbox_next_due_channel(d->store, ch->name);
        if (due == CAD_TIME_NEVER)
            continue;
        int64_t w = due <= now ? 1000 : cad_ms_until(due);
        if (w < 1)
            w = 1; /* woken a hair early: the second begins in under 1 ms */
        if (w < wake_ms)
            wake_ms = w;
    }
    if (d->store_failing)
        wake_ms = STORE_RETRY_MS;
    if (d->reserve_released && wake_ms > RESERVE_RETRY_MS)
        wake_ms = RESERVE_RETRY_MS;
    pump_in(d, wake_ms);
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

int cad_dispatch_new(uv_loop_t *loop, cad_store_t *store, cad_plugin_host_t *host,
                     const cad_config_t *cfg, cad_scheduler_t *scheduler, cad_dispatch_t **out,
                     char *err)
{
    cad_dispatch_t *d = calloc(1, sizeof *d);
    if (!d)
        return cad_fail(err, CAD_ENOMEM, "dispatch: out of memory");
    d->loop = loop;
    d->store = store;
    d->host = host;
    d->scheduler = scheduler;
    d->clock_offset_ms = cad_wall_ms() - (int64_t)(uv_hrtime() / 1000000);
    d->rng = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ 0x5DEECE66Dull;
    const char *crash = getenv("CADENCE_CRASH_AT_STEP");
    if (crash && *crash)
        d->crash_at = strtol(crash, NULL, 10);
    int rc = apply_config(d, cfg, err);
    if (rc < 0) {
        for (int i = 0; i < d->n_chans; i++) {
            cad_bucket_map_free(d->chans[i]->domains);
            free(d->chans[i]);
        }
        free(d);
        return rc;
    }
    const char *db = cad_store_path(store);
    if (db && *db && strcmp(db, ":memory:") != 0) {
        size_t n = strlen(db) + sizeof ".reserve";
        d->reserve_path = malloc(n);
        if (d->reserve_path) {
            snprintf(d->reserve_path, n, "%s.reserve", db);
            if (!reserve_make(d->reserve_path)) {
                cad_log_warning("dispatch: cannot keep %d MiB free next to the store; on a full "
                                "disk the outbox stops until space is freed reserve=%s",
                                RESERVE_BYTES >> 20, d->reserve_path);
                free(d->reserve_path);
                d->reserve_path = NULL;
            }
        }
    }
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    *out = d;
    return 0;
}

void cad_dispatch_set_config(cad_dispatch_t *d, const cad_config_t *cfg)
{
    char err[CAD_ERRBUF];
    if (apply_config(d, cfg, err) < 0)
        cad_log_err("dispatch: the new configuration's channels are not all dispatched: %s", err);
    cad_dispatch_kick(d);
}

void cad_dispatch_set_host(cad_dispatch_t *d, cad_plugin_host_t *host)
{
    d->host = host;
    cad_dispatch_kick(d);
}

static void on_closed(uv_handle_t *h)
{
    cad_dispatch_t *d = h->data;
    void (*done)(void *) = d->done;
    void *arg = d->done_arg;
    for (int i = 0; i < d->n_chans; i++) {
        cad_bucket_map_free(d->chans[i]->domains);
        free(d->chans[i]);
    }
    pending_clear(d);
    free(d->pending);
    free(d->changed);
    free(d->reserve_path);
    free(d);
    if (done)
        done(arg);
}

/* At shutdown: once nothing is in flight, write what is pending and close. */
static void check_stopped(cad_dispatch_t *d)
{
    if (!d->stopping || d->stop_done || d->in_flight > 0)
        return;
    if (d->n_pending > 0 && !d->store_failing) {
        pump_in(d, 0);
        return;
    }
    if (d->n_pending > 0)
        cad_log_warning("dispatch: stopping with outcomes the store would not take; those "
                        "touches are sent again at the next start count=%d",
                        d->n_pending);
    d->stop_done = true;
    d->closing = true;
    uv_timer_stop(&d->timer);
    if (d->cut_at_stop > 0)
        cad_log_warning("dispatch: %lld touches had no answer when the shutdown grace ended; "
                        "queued again, not counted as attempts, they go out after the next start "
                        "with the same idempotency key (%lld of them had left: the receiver may "
                        "see those twice) cut=%lld maybe_received=%lld",
                        (long long)d->cut_at_stop, (long long)d->cut_sent_at_stop,
                        (long long)d->cut_at_stop, (long long)d->cut_sent_at_stop);
    cad_log_info("dispatch: stopped delivered=%lld retried=%lld dead=%lld commits=%lld",
                 (long long)d->delivered, (long long)d->retried, (long long)d->dead,
                 (long long)d->commits);
    uv_close((uv_handle_t *)&d->timer, on_closed);
}

void cad_dispatch_stop(cad_dispatch_t *d, void (*done)(void *arg), void *arg)
{
    if (d->stopping)
        return;
    d->stopping = true;
    d->store_failing = false; /* one last try */
    d->done = done;
    d->done_arg = arg;
    cad_log_info("dispatch: stopping; no new claims in_flight=%d pending=%d", d->in_flight,
                 d->n_pending);
    pump_in(d, 0);
}

void cad_dispatch_get_stats(const cad_dispatch_t *d, cad_dispatch_stats_t *st)
{
    memset(st, 0, sizeof *st);
    int64_t now_ms = (int64_t)uv_now(d->loop);
    for (int c = 0; c < d->n_channels; c++) {
        chan_t *ch = d->by_index[c];
        cad_dispatch_channel_stats_t *o = &st->channels[c];
        snprintf(o->channel, sizeof o->channel, "%s", ch->name);
        snprintf(o->plugin, sizeof o->plugin, "%s", ch->plugin);
        o->ready = d->host && cad_plugin_host_ready(d->host, c);
        o->in_flight = ch->in_flight;
        o->held = ch->held;
        o->claimed = ch->claimed;
        o->delivered = ch->delivered;
        o->retried = ch->retried;
        o->dead = ch->dead;
        o->expired = ch->expired;
        o->permanent = ch->permanent;
        o->withdrawn = ch->withdrawn;
        o->circuit = ch->circuit.state;
        if (o->circuit == CAD_CIRCUIT_OPEN && cad_circuit_wait_ms(&ch->circuit, now_ms) == 0)
            o->circuit = CAD_CIRCUIT_HALF_OPEN; /* a probe goes out at the next pump */
        o->circuit_since = ch->circuit_since;
        o->disabled = ch->disabled;
        o->disabled_since = ch->disabled_since;
        o->consecutive_failures = ch->circuit.consecutive_failures;
        o->circuit_opened = ch->circuit.opened_count;
        cad_bucket_t b = ch->bucket;
        o->tokens = cad_bucket_unlimited(&b) ? -1 : cad_bucket_tokens(&b, now_ms);
        o->rate_per_second = ch->cc.rate_per_second;
        o->concurrency = ch->cc.concurrency;
        snprintf(o->last_error, sizeof o->last_error, "%s", ch->last_error);
        st->in_flight += o->in_flight;
    }
    st->n_channels = d->n_channels;
    st->delivered = d->delivered;
    st->retried = d->retried;
    st->dead = d->dead;
    st->commits = d->commits;
    st->committed_rows = d->committed_rows;
    st->max_commit_rows = d->max_commit_rows;
    st->store_errors = d->store_errors;
    cad_bucket_t g = d->global;
    st->global_tokens = cad_bucket_unlimited(&g) ? -1 : cad_bucket_tokens(&g, now_ms);
    st->stopping = d->stopping;
}

int cad_dispatch_pending_outcomes(const cad_dispatch_t *d)
{
    return d->n_pending;
}
