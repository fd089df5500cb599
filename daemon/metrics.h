/*
 * metrics.h — Prometheus text exposition (format 0.0.4) built in memory.
 *
 * A cad_metrics_t is a growing text buffer. Each metric family is opened
 * once with its HELP and TYPE lines, then gets samples with optional labels;
 * label values are escaped (backslash, double quote, newline) as the format
 * demands, and names are checked against [a-zA-Z_:][a-zA-Z0-9_:]*. The
 * `metrics` control command fills one from the store counts, the scheduler,
 * the control server and the dispatcher, and returns the text.
 */
#ifndef CADENCE_METRICS_H
#define CADENCE_METRICS_H

#include "common.h"

#include <stddef.h>

typedef struct cad_metrics {
    char *text; /* owned, NUL-terminated */
    size_t len, cap;
    bool failed; /* out of memory or a bad name: the text is incomplete */
} cad_metrics_t;

/* Initialises an empty buffer (no allocation yet). */
void cad_metrics_init(cad_metrics_t *m);

/* Frees the text; the buffer is empty and reusable. */
void cad_metrics_free(cad_metrics_t *m);

/* Writes "# HELP name help" and "# TYPE name type" (type: counter, gauge,
 * histogram). */
void cad_metrics_family(cad_metrics_t *m, const char *name, const char *type, const char *help);

/* Writes one sample "name{k="v",...} value". `labels` is NULL or a
 * NULL-terminated list of alternating keys and values (borrowed). */
void cad_metrics_sample(cad_metrics_t *m, const char *name, const char *const *labels,
                        double value);

/* Writes a histogram's buckets (cumulative counts for each upper bound in
 * `bounds`, then +Inf), _sum and _count. `counts[i]` is the number of
 * observations in (bounds[i-1], bounds[i]]; counts[n] those above the last
 * bound. */
void cad_metrics_histogram(cad_metrics_t *m, const char *name, const double *bounds,
                           const int64_t *counts, int n, double sum);

/* True when `name` is a valid metric or label name. */
bool cad_metrics_name_valid(const char *name);

#endif
