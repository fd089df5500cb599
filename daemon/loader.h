/*
 * loader.h — bulk import of customers, contacts and events into the store.
 *
 * Reads a stream of JSON Lines (one object per line) or CSV (RFC 4180, a
 * header row naming the columns, list cells separated by ';') and writes the
 * rows through the store's upsert/add functions, committing every
 * `batch_rows` rows in one transaction. Each row is validated against the
 * playbook (stage, roles, event types), the time-zone database and the time
 * syntax; a bad row is reported with its line number and field and skipped,
 * and every good row is kept. Re-imported events (same id) count as
 * duplicates, not errors (R13).
 *
 * Times are ISO 8601 ("2026-03-08T09:30:00Z", "2026-03-08") or relative to
 * the import's `now` ("now", "now-40d", "now+2h"), so demo data stays fresh.
 *
 * JSON shapes:
 *   customer {"id","name","timezone","stage","segment","interests":[..],
 *             "attributes":{..},"created_at","paused":false}
 *   contact  {"id","customer","name","first_name","roles":[..],"email","phone",
 *             "consent":{"email":{"opted_in":true,"at":"..","source":".."},"sms":{..}}}
 *   event    {"id","customer","type","at","data":{..}}
 * CSV columns carry the same names; contacts' consent is spread over
 * email_opted_in, email_consent_at, email_consent_source and the sms_ ones;
 * attributes and data are JSON object text in one cell.
 */
#ifndef CADENCE_LOADER_H
#define CADENCE_LOADER_H

#include "common.h"
#include "playbook.h"
#include "store.h"

#include <stdio.h>

#define CAD_IMPORT_MAX_LINE (64 * 1024) /* longest JSONL line or CSV record, bytes */
/* Default rows per transaction. Events of many customers land on random
 * index pages, and every commit rewrites the pages it dirtied into the WAL:
 * measured on 100k customers, batches of 1,000 import ~70k events/s, 10,000
 * ~100-120k/s, 50,000 ~140k/s. 10,000 rows hold the write lock ~0.1 s. */
#define CAD_IMPORT_BATCH_ROWS 10000

enum cad_import_kind {
    CAD_IMPORT_CUSTOMERS = 0,
    CAD_IMPORT_CONTACTS,
    CAD_IMPORT_EVENTS,
};

enum cad_import_format {
    CAD_IMPORT_JSONL = 0,
    CAD_IMPORT_CSV,
};

typedef struct cad_import_options {
    enum cad_import_kind kind;
    enum cad_import_format format;
    const char *source; /* name used in messages ("customers.csv"); NULL = "input" */
    cad_time_t now;     /* the import's clock: defaults and relative times; 0 = wall clock */
    int batch_rows;     /* rows per transaction; 0 = CAD_IMPORT_BATCH_ROWS */
    /* Called once per rejected row with "SOURCE:LINE: field F: problem";
     * the message is only valid during the call. May be NULL. */
    void (*on_reject)(const char *message, void *arg);
    void *arg;
} cad_import_options_t;

typedef struct cad_import_report {
    int64_t records;              /* data rows read (blank lines and the CSV header not counted) */
    int64_t accepted;             /* rows written and committed */
    int64_t rejected;             /* rows refused for bad input */
    int64_t duplicates;           /* events already recorded (same id) */
    char first_error[CAD_ERRBUF]; /* the first rejection, "" when none */
} cad_import_report_t;

/* Imports every row of `in` into `st`. Returns 0 when the whole stream was
 * read (rejected rows are counted in *rep, not an error), or a negative code
 * with err for what stops an import: unreadable input, a bad CSV header, a
 * store failure (disk full, I/O). Rows of batches committed before a failure
 * stay; the failing batch is rolled back and not counted as accepted. When
 * the store is already inside a batch, rows join it and the caller commits.
 * Nothing is allocated that outlives the call. */
int cad_import(cad_store_t *st, const cad_playbook_t *pb, FILE *in, const cad_import_options_t *opt,
               cad_import_report_t *rep, char *err);

/* Parses an import time: ISO 8601 or "now", "now-40d", "now+1d12h" relative
 * to `now`. Returns 0 or -CAD_EINVAL with err. */
int cad_import_time_parse(const char *text, cad_time_t now, cad_time_t *out, char *err);

/* "customers", "contacts", "events" -> kind; -1 when unknown. */
int cad_import_kind_parse(const char *name);
/* The kind's name; static. */
const char *cad_import_kind_name(enum cad_import_kind kind);
/* "jsonl" (also "json", "ndjson") or "csv" -> format; -1 when unknown. */
int cad_import_format_parse(const char *name);
/* Guesses the format from a file name's extension; -1 when it cannot. */
int cad_import_format_from_path(const char *path);

#endif
