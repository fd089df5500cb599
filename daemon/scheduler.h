/*
 * scheduler.h — the live cadence calendar: when each customer is evaluated.
 *
 * The scheduler keeps every customer's next evaluation time in an in-memory
 * calendar (calendar.h) rebuilt from the store at start, and drives it with a
 * single libuv timer on the monotonic clock. When customers fall due it
 * evaluates them in bounded batches per loop turn (config engine.batch_size),
 * so a million customers due at 09:00 never stall the loop: each batch loads
 * snapshots, runs the engine and records decisions, traces, next evaluation
 * times and outbox rows in one store transaction.
 *
 * The scheduler borrows the loop, the store and the config; the caller keeps
 * them alive until cad_scheduler_close's callback has run.
 */
#ifndef CADENCE_SCHEDULER_H
#define CADENCE_SCHEDULER_H

#include "common.h"
#include "config.h"
#include "store.h"

#include <uv.h>

typedef struct cad_scheduler cad_scheduler_t;

/* Counters for status lines and metrics. */
typedef struct cad_scheduler_stats {
    int64_t customers;       /* in the calendar */
    int64_t evaluations;     /* since start */
    int64_t touches_decided; /* SEND verdicts recorded since start */
    int64_t suppressed;      /* SUPPRESS verdicts recorded since start */
    int64_t deferred;        /* DEFER verdicts recorded since start */
    int64_t errors;          /* evaluations that failed (store errors) */
    cad_time_t next_due;     /* earliest next evaluation, CAD_TIME_NEVER if none */
} cad_scheduler_stats_t;

/* Creates a scheduler on `loop`, rebuilding the calendar from the store.
 * The clock is `clock_fn` (wall clock, UTC seconds) or NULL for time(). */
int cad_scheduler_new(uv_loop_t *loop, cad_store_t *store, const cad_config_t *cfg,
                      cad_time_t (*clock_fn)(void), cad_scheduler_t **out, char *err);

/* Starts evaluating due customers. */
int cad_scheduler_start(cad_scheduler_t *s);

/* Swaps in a reloaded config (the old one may be freed after this returns);
 * every customer is re-evaluated soon, spread over batches. */
void cad_scheduler_set_config(cad_scheduler_t *s, const cad_config_t *cfg);

/* A customer changed (event, import, pause): evaluate it on the next turn. */
void cad_scheduler_customer_changed(cad_scheduler_t *s, int64_t key);

/* Calls fn(arg) after every committed batch that decided at least one touch
 * (the dispatcher claims them at once). One hook; NULL removes it. */
void cad_scheduler_on_decided(cad_scheduler_t *s, void (*fn)(void *arg), void *arg);

/* Stops taking new work (no further evaluations); pending writes are committed. */
void cad_scheduler_stop(cad_scheduler_t *s);

/* Closes the timer handles and frees the scheduler; `done` (may be NULL) runs
 * from the close callback. */
void cad_scheduler_close(cad_scheduler_t *s, void (*done)(void *arg), void *arg);

void cad_scheduler_get_stats(const cad_scheduler_t *s, cad_scheduler_stats_t *out);

#endif
