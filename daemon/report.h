/*
 * report.h — the per-rule report (R12) and the holdout comparison, built
 * from the store's aggregate rows.
 *
 * The store answers with one row per (rule, outcome, reason) over a period;
 * this module folds them into what a customer-success lead reads: per rule,
 * how often it applied (eligible: each trigger or period that reached a final
 * outcome), how many touches went out, were delivered or failed, how many
 * were suppressed and why, and the executed share (delivered / eligible), so
 * a playbook step that happens only 20% of the time stands out. Every rule
 * of the playbook gets a line, even one that never applied. It also carries
 * the give/ask ratio, customers silent past max_silence and the holdout
 * groups. Pure: no store, no clock; the caller feeds rows in.
 */
#ifndef CADENCE_REPORT_H
#define CADENCE_REPORT_H

#include "common.h"
#include "playbook.h"
#include "store.h"

#include <jansson.h>

typedef struct cad_report cad_report_t;

/* How many silent customers the report names (it counts them all). */
#define CAD_REPORT_SILENT_LISTED 20

/* A new, empty report over [from, to) with one line per rule of `pb` (copied
 * names; `pb` is not kept). NULL when out of memory. Free with
 * cad_report_free. */
cad_report_t *cad_report_new(const cad_playbook_t *pb, cad_time_t from, cad_time_t to);

/* Frees the report. NULL-safe. */
void cad_report_free(cad_report_t *r);

/* Adds one aggregate row (cad_store_report_foreach's callback shape; `arg`
 * is the report). Rows of rules no longer in the playbook get their own
 * line. Out of memory is remembered and reported by cad_report_json. */
void cad_report_add_row(const cad_report_row_t *row, void *arg);

/* Counts one customer silent past max_silence (an open "silent" alert); the
 * first CAD_REPORT_SILENT_LISTED are named. `arg` is the report. */
void cad_report_add_silent(const char *customer_id, void *arg);

/* Adds one holdout row (cad_store_holdout_foreach's callback shape). */
void cad_report_add_holdout(const cad_holdout_row_t *row, void *arg);

/* The report as a new JSON object (see docs/control-protocol.md, "report"),
 * or NULL when out of memory. The caller owns the reference. */
json_t *cad_report_json(const cad_report_t *r);

/* The holdout part only, with each rule's configured share: a new JSON
 * object {"from","to","rules":[...]}, or NULL when out of memory. */
json_t *cad_report_holdout_json(const cad_report_t *r, const cad_playbook_t *pb);

#endif
