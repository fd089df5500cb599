/*
 * scheduler.c — drives the calendar with one libuv timer (see scheduler.h).
 *
 * The timer is always armed for the earliest entry of the calendar, at most
 * CAD_SCHEDULER_MAX_SLEEP_MS ahead: libuv timers run on the monotonic clock,
 * while due times are UTC instants, so re-reading the wall clock at least
 * once a minute keeps a wall-clock jump (NTP step, faketime) from either
 * firing a day of work at once or stalling the calendar.
 *
 * When it fires, one batch of at most engine.batch_size due customers is
 * evaluated inside one store transaction (group commit). While more are due,
 * an idle handle runs one further batch per loop iteration: libuv polls for
 * I/O between idle callbacks (a 0 ms timer would not do: libuv runs a timer
 * re-armed from its own callback again in the same pass), so sockets and
 * signals are served between batches. A failed batch is rolled back and its customers are
 * retried a minute later: decisions are re-derived, never half-recorded.
 */
#include "scheduler.h"

#include "calendar.h"
#include "engine.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CAD_SCHEDULER_MAX_SLEEP_MS 60000
#define CAD_SCHEDULER_RETRY_DELAY  60
#define CAD_SCHEDULER_BUSY_DELAY   5 /* another process holds the write lock */

struct cad_scheduler {
    uv_loop_t *loop;
    uv_timer_t timer;
    uv_idle_t idle; /* active while due customers remain after a batch */
    cad_store_t *store;
    const cad_config_t *cfg;
    cad_time_t (*clock_fn)(void);
    cad_calendar_t cal;
    cad_snapshot_buf_t buf;
    cad_verdict_t *verdicts;
    int verdicts_cap;
    int64_t *batch_keys; /* keys of the batch in progress, to retry on failure */
    size_t batch_cap;
    bool started, stopped;
    cad_time_t backoff_until; /* after a failed batch, no batch before this */
    cad_scheduler_stats_t stats;
    cad_scheduler_stats_t batch; /* counted in the open batch, added on commit */
    void (*done)(void *arg);
    void *done_arg;
    int open_handles; /* timer and idle until both are closed */
    void (*on_decided)(void *arg);
    void *on_decided_arg;
};

static void on_load(int64_t key, cad_time_t next_eval, void *arg)
{
    cad_scheduler_t *s = arg;
    if (cad_calendar_set(&s->cal, key, next_eval) != 0)
        s->stats.errors++;
}

static int ensure_verdicts(cad_scheduler_t *s)
{
    int need = s->cfg->playbook.n_rules > 0 ? s->cfg->playbook.n_rules : 1;
    if (need <= s->verdicts_cap)
        return 0;
    cad_verdict_t *v = realloc(s->verdicts, (size_t)need * sizeof(*v));
    if (!v)
        return -CAD_ENOMEM;
    s->verdicts = v;
    s->verdicts_cap = need;
    return 0;
}

int cad_scheduler_new(uv_loop_t *loop, cad_store_t *store, const cad_config_t *cfg,
                      cad_time_t (*clock_fn)(void), cad_scheduler_t **out, char *err)
{
    cad_scheduler_t *s = calloc(1, sizeof(*s));
    if (!s)
        return cad_fail(err, CAD_ENOMEM, "scheduler: out of memory");
    s->loop = loop;
    s->store = store;
    s->cfg = cfg;
    s->clock_fn = clock_fn ? clock_fn : cad_wall_now;
    cad_calendar_init(&s->cal);
    s->batch_cap = cfg->batch_size ? cfg->batch_size : 1000;
    s->batch_keys = calloc(s->batch_cap, sizeof(*s->batch_keys));
    if (!s->batch_keys || ensure_verdicts(s) != 0) {
        free(s->batch_keys);
        free(s);
        return cad_fail(err, CAD_ENOMEM, "scheduler: out of memory");
    }
    char cerr[CAD_ERRBUF];
    if (cad_store_content_sync(store, &cfg->playbook, s->clock_fn(), cerr) < 0)
        cad_log_warning("cannot record the content library: %s", cerr);
    int n = cad_store_schedule_foreach(store, on_load, s, err);
    if (n < 0) {
        cad_calendar_free(&s->cal);
        free(s->batch_keys);
        free(s->verdicts);
        free(s);
        return n;
    }
    uv_timer_init(loop, &s->timer);
    uv_idle_init(loop, &s->idle);
    s->timer.data = s;
    s->idle.data = s;
    *out = s;
    return 0;
}

static void on_timer(uv_timer_t *timer);
static void on_idle(uv_idle_t *idle);

/* Milliseconds until the UTC second `when` (later than `now`): with the
 * wall clock, from the current millisecond (cad_ms_until), so a customer due
 * at a second is evaluated as that second starts; an injected clock has
 * whole seconds only. At least 1 ms: a timer that fires early finds nobody
 * due yet and re-arms. */
static int64_t delay_ms(const cad_scheduler_t *s, cad_time_t when, cad_time_t now)
{
    if (when - now > CAD_SCHEDULER_MAX_SLEEP_MS / 1000)
        return CAD_SCHEDULER_MAX_SLEEP_MS; /* also keeps CAD_TIME_NEVER from overflowing */
    if (s->clock_fn != cad_wall_now)
        return (when - now) * 1000;
    int64_t ms = cad_ms_until(when);
    return ms > 0 ? ms : 1;
}

/* Arms the timer for the earliest entry, or the idle handle when some
 * customer is due already. */
static void arm(cad_scheduler_t *s)
{
    if (!s->started || s->stopped)
        return;
    const cad_calendar_entry_t *next = cad_calendar_peek(&s->cal);
    if (!next) {
        uv_timer_stop(&s->timer);
        uv_idle_stop(&s->idle);
        return;
    }
    cad_time_t now = s->clock_fn();
    cad_time_t when = next->when > s->backoff_until ? next->when : s->backoff_until;
    if (when <= now) {
        uv_timer_stop(&s->timer);
        uv_idle_start(&s->idle, on_idle);
        return;
    }
    uv_idle_stop(&s->idle);
    int64_t delay = delay_ms(s, when, now);
    if (delay > CAD_SCHEDULER_MAX_SLEEP_MS)
        delay = CAD_SCHEDULER_MAX_SLEEP_MS;
    uv_update_time(s->loop); /* the delay counts from now, not from the loop's last turn */
    uv_timer_start(&s->timer, on_timer, (uint64_t)delay, 0);
}

/* Evaluates one customer inside the open batch. Returns 0, or a negative
 * code when the store failed (the batch must then be rolled back). */
static int evaluate(cad_scheduler_t *s, int64_t key, cad_time_t now)
{
    char err[CAD_ERRBUF];
    const cad_playbook_t *pb = &s->cfg->playbook;
    cad_snapshot_t snap;
    int rc = cad_store_load_snapshot(s->store, pb, key, &s->buf, &snap, err);
    if (rc == -CAD_ENOTFOUND)
        return 0; /* deleted since it was scheduled */
    if (rc < 0) {
        cad_log_err("cannot load customer for evaluation: %s customer_key=%lld", err,
                    (long long)key);
        return rc;
    }
    cad_decision_t dec = {.verdicts = s->verdicts};
    rc = cad_engine_decide(pb, &snap, now, &dec);
    if (rc < 0) {
        /* The snapshot does not fit the playbook: a bug, not a store failure.
         * Retry later rather than stop the calendar. */
        char v[CAD_LOG_VALUE_MAX];
        cad_log_err("engine refused a snapshot customer=%s", cad_log_value(snap.customer.id, v));
        s->stats.errors++;
        cad_calendar_set(&s->cal, key, now + CAD_SCHEDULER_RETRY_DELAY);
        return 0;
    }
    rc = cad_store_record_decision(s->store, pb, &snap, &dec, now, err);
    if (rc == -CAD_EINVAL) {
        /* Refused before anything was written: this customer only. */
        char v[CAD_LOG_VALUE_MAX];
        cad_log_err("decision refused, customer retried in %d s: %s customer=%s",
                    CAD_SCHEDULER_RETRY_DELAY, err, cad_log_value(snap.customer.id, v));
        s->stats.errors++;
        cad_calendar_set(&s->cal, key, now + CAD_SCHEDULER_RETRY_DELAY);
        return 0;
    }
    if (rc < 0) {
        char v[CAD_LOG_VALUE_MAX];
        cad_log_err("cannot record decision: %s customer=%s", err,
                    cad_log_value(snap.customer.id, v));
        return rc;
    }
    s->batch.evaluations++;
    for (int i = 0; i < dec.n_verdicts; i++) {
        switch (dec.verdicts[i].kind) {
        case CAD_VERDICT_SEND: s->batch.touches_decided++; break;
        case CAD_VERDICT_SUPPRESS: s->batch.suppressed++; break;
        case CAD_VERDICT_DEFER: s->batch.deferred++; break;
        default: break;
        }
    }
    if (dec.chosen >= 0) {
        const cad_verdict_t *v = &dec.verdicts[dec.chosen];
        char id[CAD_LOG_VALUE_MAX];
        cad_log_info("touch decided customer=%s rule=%s channel=%s",
                     cad_log_value(snap.customer.id, id), pb->rules[v->rule].name,
                     v->channel >= 0 ? pb->channels[v->channel].name : "-");
    }
    cad_time_t next = dec.next_eval;
    if (next == CAD_TIME_NEVER) {
        cad_calendar_remove(&s->cal, key);
        return 0;
    }
    if (next <= now)
        next = now + 1;
    cad_calendar_set(&s->cal, key, next);
    return 0;
}

static void run_batch(cad_scheduler_t *s)
{
    char err[CAD_ERRBUF];
    cad_time_t now = s->clock_fn();
    if (now < s->backoff_until)
        return;
    /* A batch that cannot even start (out of memory, another process
     * holding the write lock) pauses evaluations like a failed one, so the
     * loop does not retry it on every iteration. */
    if (ensure_verdicts(s) != 0) {
        s->stats.errors++;
        s->backoff_until = now + CAD_SCHEDULER_RETRY_DELAY;
        cad_log_err("scheduler: out of memory for verdicts; evaluations pause for %d s",
                    CAD_SCHEDULER_RETRY_DELAY);
        return;
    }
    int begun = cad_store_batch_begin(s->store, err);
    if (begun < 0) {
        int pause = begun == -CAD_EBUSY ? CAD_SCHEDULER_BUSY_DELAY : CAD_SCHEDULER_RETRY_DELAY;
        s->stats.errors++;
        s->backoff_until = now + pause;
        cad_log_err("cannot start a decision batch: %s; evaluations pause for %d s", err, pause);
        return;
    }
    size_t n = 0;
    int failed = 0;
    memset(&s->batch, 0, sizeof(s->batch));
    cad_log_hold(); /* "touch decided" lines appear once the batch is committed */
    int64_t decided_before = s->stats.touches_decided;
    cad_calendar_entry_t e;
    while (n < s->batch_cap && cad_calendar_pop_due(&s->cal, now, &e)) {
        s->batch_keys[n++] = e.key;
        if (evaluate(s, e.key, now) < 0) {
            failed = 1;
            break;
        }
    }
    if (!failed && cad_store_batch_commit(s->store, err) < 0) {
        cad_log_err("cannot commit a decision batch: %s customers=%zu", err, n);
        failed = 1;
    }
    cad_log_release(!failed);
    if (!failed) {
        s->stats.evaluations += s->batch.evaluations;
        s->stats.touches_decided += s->batch.touches_decided;
        s->stats.suppressed += s->batch.suppressed;
        s->stats.deferred += s->batch.deferred;
    } else {
        cad_store_batch_rollback(s->store);
        s->stats.errors++;
        /* The store is failing (disk full, I/O): pause every evaluation
         * rather than fail through the whole calendar. */
        s->backoff_until = now + CAD_SCHEDULER_RETRY_DELAY;
        cad_log_warning("decision batch rolled back; evaluations pause for %d s "
                        "customers=%zu",
                        CAD_SCHEDULER_RETRY_DELAY, n);
        for (size_t i = 0; i < n; i++)
            cad_calendar_set(&s->cal, s->batch_keys[i], now + CAD_SCHEDULER_RETRY_DELAY);
        return;
    }
    if (s->stats.touches_decided > decided_before && s->on_decided)
        s->on_decided(s->on_decided_arg);
}

void cad_scheduler_on_decided(cad_scheduler_t *s, void (*fn)(void *arg), void *arg)
{
    s->on_decided = fn;
    s->on_decided_arg = arg;
}

static void on_timer(uv_timer_t *timer)
{
    cad_scheduler_t *s = timer->data;
    if (s->stopped)
        return;
    run_batch(s);
    arm(s);
}

static void on_idle(uv_idle_t *idle)
{
    on_timer(&((cad_scheduler_t *)idle->data)->timer);
}

int cad_scheduler_start(cad_scheduler_t *s)
{
    s->started = true;
    arm(s);
    return 0;
}

void cad_scheduler_set_config(cad_scheduler_t *s, const cad_config_t *cfg)
{
    s->cfg = cfg;
    char err[CAD_ERRBUF];
    if (cad_store_content_sync(s->store, &cfg->playbook, s->clock_fn(), err) < 0)
        cad_log_warning("cannot record the content library: %s", err);
    /* Every customer is due now: rules or policies may have changed. All
     * entries get the same time, so the heap order stays valid. */
    cad_time_t now = s->clock_fn();
    for (size_t i = 0; i < s->cal.size; i++)
        if (s->cal.heap[i].when > now)
            s->cal.heap[i].when = now;
    arm(s);
}

void cad_scheduler_customer_changed(cad_scheduler_t *s, int64_t key)
{
    cad_calendar_set_earlier(&s->cal, key, s->clock_fn());
    arm(s);
}

void cad_scheduler_stop(cad_scheduler_t *s)
{
    s->stopped = true;
    uv_timer_stop(&s->timer);
    uv_idle_stop(&s->idle);
}

static void on_close(uv_handle_t *handle)
{
    cad_scheduler_t *s = handle->data;
    if (--s->open_handles > 0)
        return;
    void (*done)(void *) = s->done;
    void *arg = s->done_arg;
    cad_calendar_free(&s->cal);
    cad_snapshot_buf_free(&s->buf);
    free(s->verdicts);
    free(s->batch_keys);
    free(s);
    if (done)
        done(arg);
}

void cad_scheduler_close(cad_scheduler_t *s, void (*done)(void *arg), void *arg)
{
    cad_scheduler_stop(s);
    s->done = done;
    s->done_arg = arg;
    /* Both at once, so both are released in the same loop turn. */
    s->open_handles = 2;
    uv_close((uv_handle_t *)&s->timer, on_close);
    uv_close((uv_handle_t *)&s->idle, on_close);
}

void cad_scheduler_get_stats(const cad_scheduler_t *s, cad_scheduler_stats_t *out)
{
    *out = s->stats;
    out->customers = (int64_t)s->cal.size;
    const cad_calendar_entry_t *next = cad_calendar_peek(&s->cal);
    out->next_due = next ? next->when : CAD_TIME_NEVER;
}
