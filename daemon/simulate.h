/*
 * simulate.h — forecast the next N days of touches without sending anything.
 *
 * The simulator opens an in-memory copy of the store, rebuilds the calendar
 * from it and runs the very same engine with a virtual clock: each due
 * customer is evaluated at its due instant, decisions are recorded in the
 * copy, and every touch the engine chooses is taken as delivered at that
 * instant (so gaps, caps and value-before-ask see it). The live database and
 * the channels are never touched.
 */
#ifndef CADENCE_SIMULATE_H
#define CADENCE_SIMULATE_H

#include "common.h"
#include "config.h"

#include <stdio.h>

typedef struct cad_simulate_options {
    const char *db_path;     /* the live database (read through a copy) */
    cad_time_t start;        /* virtual clock start (usually now) */
    int days;                /* horizon, 1..3650 */
    const char *customer_id; /* only this customer, or NULL for all */
    bool json;               /* one JSON object per line instead of a table */
    bool quiet;              /* totals only, no per-touch lines (benchmarks) */
} cad_simulate_options_t;

typedef struct cad_simulate_result {
    int64_t customers;
    int64_t evaluations;
    int64_t touches;
} cad_simulate_result_t;

/* Runs the forecast and prints it to `out`: one line per touch (when, local
 * time, customer, rule, channel, contact, content), then per-rule totals of
 * touches sent and of customers suppressed or deferred by reason. Returns 0
 * or a negative code with err. */
int cad_simulate_run(const cad_config_t *cfg, const cad_simulate_options_t *opt, FILE *out,
                     cad_simulate_result_t *result, char *err);

#endif
