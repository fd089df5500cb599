/*
 * store.h — the durable state of cadenced, shaped around what the daemon does.
 *
 * The default backend is SQLite in WAL mode (store_sqlite.c); nothing else
 * in the daemon touches SQL. The API speaks of customers, events, decisions
 * and touches, not of tables, so another backend (PostgreSQL, when a user
 * outgrows one machine) can implement the same functions.
 *
 * Threading: one cad_store_t belongs to one thread (the loop thread).
 * Writes happen inside a batch (cad_store_batch_begin/commit): the daemon
 * groups many decisions and outcomes into one transaction so the fsync cost
 * is shared (group commit). Every write function called outside a batch runs
 * in its own transaction.
 *
 * Strings returned through structs point into memory owned by the store or by
 * the caller-supplied buffer named in each function; copy what you keep.
 */
#ifndef CADENCE_STORE_H
#define CADENCE_STORE_H

#include "common.h"
#include "config.h"
#include "engine.h"
#include "model.h"
#include "playbook.h"
#include "store_checkpoint.h"

typedef struct cad_store cad_store_t;

/* ---- opening ------------------------------------------------------------ */

/* Opens (creating if needed) the database at `path`, sets WAL mode and the
 * synchronous level, and migrates the schema forward to the current version
 * using PRAGMA user_version. Returns 0 and *out, or a negative code with err. */
int cad_store_open(const char *path, enum cad_store_sync sync, cad_store_t **out, char *err);

/* Opens read-only (reports, simulate over a copy). */
int cad_store_open_readonly(const char *path, cad_store_t **out, char *err);

/* Opens an in-memory copy of the database at `path` (SQLite backup API), for
 * the simulator: every write goes to the copy, the file is only read. */
int cad_store_open_copy(const char *path, cad_store_t **out, char *err);

/* Commits any open batch, finalizes statements, closes. NULL-safe. */
void cad_store_close(cad_store_t *st);

/* Records the playbook's content library (id, purpose, title, url, topics,
 * stages, validity) so touches and reports can name content items; items no
 * longer in the library stay, marked retired. Called at start and after each
 * reload. Returns 0 or an error. */
int cad_store_content_sync(cad_store_t *st, const cad_playbook_t *pb, cad_time_t now, char *err);

/* Turns the recording of decision traces and alerts on (the default) or
 * off. The simulator turns them off on its in-memory copy: it needs the
 * touches a decision writes, not the explanations. */
void cad_store_set_traces(cad_store_t *st, bool on);

/* Caps the database at about `max_bytes` (PRAGMA max_page_count); a write
 * that would grow it further fails with -CAD_EFULL and is rolled back, as on
 * a full disk. 0 lifts the cap. Returns 0 or an error. */
int cad_store_limit_size(cad_store_t *st, int64_t max_bytes, char *err);

/* How long a write waits for a lock another process holds (an operator's
 * sqlite3 shell, a one-shot `cadenced --import`) before failing with
 * -CAD_EBUSY; 5000 ms after open. The daemon's loop thread sets a short
 * wait: the loop serves nothing while SQLite waits. */
void cad_store_set_busy_timeout(cad_store_t *st, int ms);

/* The WAL checkpoints since open (store_checkpoint.h: runs by place and
 * result, the WAL as the last one left it) into *out; all 0 when the store
 * runs no checkpoint thread (read-only, an in-memory copy, or a thread that
 * could not start: SQLite's automatic checkpoint is used then). */
void cad_store_checkpoint_counts(cad_store_t *st, cad_store_checkpoint_stats_t *out);

/* The schema version this build writes. */
int cad_store_schema_version(void);
/* The schema version of the open database. */
int cad_store_user_version(cad_store_t *st);
/* The database file path; owned by the store. */
const char *cad_store_path(const cad_store_t *st);

/* ---- batches (group commit) --------------------------------------------- */

/* Opens a batch (BEGIN IMMEDIATE); -CAD_EBUSY when one is open already. */
int cad_store_batch_begin(cad_store_t *st, char *err);
/* Commits the batch with one fsync (under sync FULL); on failure the batch is
 * rolled back and the error says why. */
int cad_store_batch_commit(cad_store_t *st, char *err);
/* Discards everything written since batch_begin. No-op without a batch. */
void cad_store_batch_rollback(cad_store_t *st);
/* True while a batch is open. A store failure (disk full, I/O) inside a
 * batch may roll the whole batch back: check this before committing. */
bool cad_store_in_batch(const cad_store_t *st);
/* How many batches were begun since open: with cad_store_in_batch, tells a
 * caller whether the batch open now is still the one it began. */
uint64_t cad_store_batch_serial(const cad_store_t *st);
/* Rows inserted, updated or deleted since open, committed or not (SQLite's
 * total_changes): it moves whenever a write changed something. */
int64_t cad_store_changes(const cad_store_t *st);

/* ---- customers, contacts, events (imports, control socket) -------------- */

/* A customer as given by an operator or an import; all strings borrowed. */
typedef struct cad_customer_input {
    const char *id;         /* required, <= CAD_ID_MAX bytes */
    const char *name;       /* NULL keeps the old value on update */
    const char *timezone;   /* IANA; NULL keeps / defaults to UTC */
    const char *stage;      /* stage name; NULL keeps / defaults to prospect */
    const char *segment;    /* NULL keeps / defaults to "default" */
    const char *interests;  /* comma-separated tags; NULL keeps */
    const char *attributes; /* JSON object text for templates; NULL keeps */
    cad_time_t created_at;  /* 0 = now */
} cad_customer_input_t;

/* Inserts or updates a customer (by id). Returns 0 (and *key) or an error
 * naming the bad field. The customer is due for evaluation at once. */
int cad_store_customer_upsert(cad_store_t *st, const cad_customer_input_t *in, cad_time_t now,
                              int64_t *key, char *err);

/* Consent of one contact for one kind of channel ("email", "sms"). */
typedef struct cad_consent_input {
    const char *kind; /* "email" or "sms" */
    bool opted_in;
    cad_time_t at;      /* 0 = now */
    const char *source; /* where the consent came from ("signup form", "import") */
} cad_consent_input_t;

typedef struct cad_contact_input {
    const char *id;          /* required */
    const char *customer_id; /* required, must exist */
    const char *name;
    const char *first_name;
    const char *roles; /* comma-separated role names */
    const char *email;
    const char *phone;              /* E.164 */
    cad_consent_input_t consent[2]; /* email, sms; kind == NULL when not given */
} cad_contact_input_t;

/* Inserts or updates a contact (by id) and the consents given; NULL fields
 * keep their old values, an empty email or phone removes the address. Its customer must exist
 * (-CAD_ENOTFOUND) and is due for evaluation at once. */
int cad_store_contact_upsert(cad_store_t *st, const cad_contact_input_t *in, cad_time_t now,
                             char *err);
/* Records one consent (opt-in or opt-out) of an existing contact. */
int cad_store_consent_set(cad_store_t *st, const char *contact_id, const cad_consent_input_t *c,
                          char *err);
/* A permanent failure (hard bounce, invalid number) makes a contact's
 * channel unusable, for the address the contact has now on the channel's
 * `address` kind: once the contact's address changes, the mark no longer
 * holds. The customer is scheduled for re-evaluation. */
int cad_store_contact_mark_unusable(cad_store_t *st, int64_t contact_key, const char *channel,
                                    enum cad_address_kind address, const char *reason,
                                    cad_time_t now, char *err);
/* An operator clears such a mark (the provider was wrong, the mailbox is
 * back). -CAD_ENOTFOUND when the contact or the mark does not exist. */
int cad_store_contact_mark_usable(cad_store_t *st, const char *contact_id, const char *channel,
                                  cad_time_t now, char *err);
/* Global suppression list: an address (email, stored lower-cased, or E.164
 * phone) never contacted (R10). Adding one again updates its reason. */
int cad_store_suppress_address(cad_store_t *st, const char *address, const char *reason,
                               cad_time_t now, char *err);
/* The stored form of a suppressed address into `norm`: a mailto: prefix
 * dropped, an email lower-cased, a phone as given (E.164). -CAD_EINVAL with a
 * sentence for anything else. */
int cad_store_suppression_address(const char *address, char norm[256], char *err);
/* Takes an address off the list; -CAD_ENOTFOUND when it is not on it. The
 * customers with a contact at that address are scheduled for evaluation
 * now, and fn (may be NULL) is called with each one's key. */
int cad_store_unsuppress_address(cad_store_t *st, const char *address, cad_time_t now,
                                 void (*fn)(int64_t customer_key, void *arg), void *arg, char *err);
/* Calls fn for each suppressed address, newest first, at most `limit`
 * (<= 0: all); strings are valid during the call. Returns the count. */
int cad_store_suppression_foreach(cad_store_t *st, int limit,
                                  void (*fn)(const char *address, const char *reason, cad_time_t at,
                                             void *arg),
                                  void *arg, char *err);

typedef struct cad_event_input {
    const char *id;          /* required: idempotency key */
    const char *customer_id; /* required, must exist */
    const char *type;        /* event type name, known to the playbook */
    cad_time_t at;
    const char *data; /* JSON object text, may be NULL */
} cad_event_input_t;

/* Records an event. Returns 0 when new, -CAD_EEXIST when the id was seen
 * before (nothing changes: R13), or another error. The customer is due for
 * evaluation at once. */
int cad_store_event_add(cad_store_t *st, const cad_event_input_t *in, cad_time_t now, char *err);

/* R14: pauses (or resumes) a customer; due for evaluation at once. */
int cad_store_customer_pause(cad_store_t *st, const char *customer_id, bool paused, cad_time_t now,
                             char *err);

/* ---- the calendar and the engine ---------------------------------------- */

/* Calls fn(key, next_eval, arg) for every customer, for rebuilding the
 * in-memory calendar at start. Returns the count or an error. */
int cad_store_schedule_foreach(cad_store_t *st,
                               void (*fn)(int64_t key, cad_time_t next_eval, void *arg), void *arg,
                               char *err);

/* Looks a customer's store key up by external id. */
int cad_store_customer_key(cad_store_t *st, const char *customer_id, int64_t *key, char *err);

/* Reusable memory for loading snapshots; zero-initialise, free with
 * cad_snapshot_buf_free. Owns every array and string a snapshot points to. */
typedef struct cad_snapshot_buf {
    cad_contact_t *contacts;
    int contacts_cap;
    cad_event_t *events;
    int events_cap;
    cad_history_t *history;
    int history_cap;
    char *strings;
    size_t strings_len, strings_cap;
} cad_snapshot_buf_t;

void cad_snapshot_buf_free(cad_snapshot_buf_t *buf);

/* Loads customer `key` into `snap` (arrays in `buf`), resolving names with
 * the playbook: segment -> policy, interests -> topics, roles, event types,
 * consent and address -> reachable bits per channel, touches -> history.
 * Events of types the playbook does not know are skipped. */
int cad_store_load_snapshot(cad_store_t *st, const cad_playbook_t *pb, int64_t key,
                            cad_snapshot_buf_t *buf, cad_snapshot_t *snap, char *err);

/* Records one evaluation in the current batch: the trace (every verdict that
 * is not SKIP, with reason), the customer's next evaluation time, a dropped
 * history row for each final suppression, and — when the decision chose a
 * touch — the touch with its idempotency key in the outbox (state queued,
 * due now, expiring at the verdict's expires_at). Alerts are upserted.
 * -CAD_EINVAL means refused before anything was written (a verdict naming
 * no rule, a chosen touch without channel or contact, an idempotency key
 * that cannot be formed); inside a batch the batch stays open. Any other
 * error inside a batch has rolled the whole batch back. */
int cad_store_record_decision(cad_store_t *st, const cad_playbook_t *pb, const cad_snapshot_t *snap,
                              const cad_decision_t *dec, cad_time_t now, char *err);

/* ---- the outbox (dispatcher) -------------------------------------------- */

enum cad_outbox_state {
    CAD_OUTBOX_QUEUED = 0,
    CAD_OUTBOX_IN_FLIGHT,
    CAD_OUTBOX_RETRY_WAIT,
    CAD_OUTBOX_DELIVERED,
    CAD_OUTBOX_DEAD,
    CAD_OUTBOX_CANCELLED,
};

/* "queued", "in_flight", ...; static. */
const char *cad_outbox_state_name(enum cad_outbox_state s);

/* A touch in the outbox, as handed to a channel plugin. Strings point into
 * the store's row buffer and stay valid until the next claim call. */
typedef struct cad_outbox_touch {
    int64_t key;
    const char *idempotency_key;
    const char *customer_id;
    const char *contact_id;
    const char *rule;
    const char *purpose;
    const char *channel;
    const char *content_id; /* may be "" */
    int attempt;            /* attempts made so far */
    cad_time_t decided_at;
    cad_time_t due_at;
    cad_time_t expires_at;
    /* What the dispatcher needs to render and address the touch. */
    int64_t customer_key;
    int64_t contact_key; /* 0 when the contact is gone */
    const char *customer_name;
    const char *customer_attributes; /* JSON object text, "{}" when none */
    const char *contact_name;        /* "" when none */
    const char *contact_first_name;  /* "" when none */
    const char *contact_email;       /* "" when none */
    const char *contact_phone;       /* E.164, "" when none */
    /* Where it stands (listings; a claimed touch is in flight). */
    enum cad_outbox_state state;
    const char *last_error;  /* "" when none */
    const char *provider_id; /* "" until delivered */
    cad_time_t updated_at;
    /* Read again as the touch is claimed (false in listings), so the
     * dispatcher can withdraw a touch the contact may no longer receive. */
    bool email_consent, sms_consent;         /* opted in now */
    bool email_suppressed, phone_suppressed; /* the address is on the suppression list */
    bool unusable;                           /* the contact's channel was marked unusable */
} cad_outbox_touch_t;

/* Reads touch `key` with what a claim checks again (consent, suppression,
 * unusable mark, the contact's addresses) and calls fn with it; the strings
 * live until the next outbox call. -CAD_ENOTFOUND when there is none. */
int cad_store_outbox_get(cad_store_t *st, int64_t key,
                         void (*fn)(const cad_outbox_touch_t *t, void *arg), void *arg, char *err);

/* One transition of a touch: the state written, when, the attempt number
 * then, and the provider id (delivered) or the error or reason (others). */
typedef struct cad_outbox_transition {
    cad_time_t at;
    const char *state;
    int attempt;
    const char *detail; /* "" when none */
} cad_outbox_transition_t;

/* Calls fn with every transition of touch `key`, oldest first (the store
 * records them itself, whoever writes the touch); strings are valid during
 * the call only. Returns the count, -CAD_ENOTFOUND when there is no such
 * touch, or another error. */
int cad_store_outbox_history(cad_store_t *st, int64_t key,
                             void (*fn)(const cad_outbox_transition_t *t, void *arg), void *arg,
                             char *err);

/* Moves up to `max` due touches (queued or retry-wait with due_at <= now) to
 * in-flight and calls fn for each. A paused customer's touches are not due
 * until the customer is resumed (R14). Returns the number claimed. */
int cad_store_outbox_claim(cad_store_t *st, cad_time_t now, int max,
                           void (*fn)(const cad_outbox_touch_t *t, void *arg), void *arg,
                           char *err);

/* The same for one channel (by name) only: the dispatcher claims per
 * channel, as far as that channel's concurrency, rate and circuit allow. */
int cad_store_outbox_claim_channel(cad_store_t *st, const char *channel, cad_time_t now, int max,
                                   void (*fn)(const cad_outbox_touch_t *t, void *arg), void *arg,
                                   char *err);

/* Records the outcome of an attempt: delivered (with provider id), retry at
 * `retry_at`, or dead (with the last error). */
int cad_store_outbox_delivered(cad_store_t *st, int64_t key, const char *provider_id,
                               cad_time_t now, char *err);
int cad_store_outbox_retry(cad_store_t *st, int64_t key, cad_time_t retry_at, const char *error,
                           cad_time_t now, char *err);
/* Like cad_store_outbox_retry for an attempt that never started (the
 * plugin's every slot stuck): the attempt is not counted. */
int cad_store_outbox_retry_unsent(cad_store_t *st, int64_t key, cad_time_t retry_at,
                                  const char *error, cad_time_t now, char *err);
int cad_store_outbox_dead(cad_store_t *st, int64_t key, const char *error, cad_time_t now,
                          char *err);
/* Like cad_store_outbox_dead for a claimed touch that dies before it is
 * sent (past its expiry, say): the claim is not counted as an attempt. */
int cad_store_outbox_dead_unsent(cad_store_t *st, int64_t key, const char *error, cad_time_t now,
                                 char *err);
/* At start: every in-flight row left by a crash goes back to queued (it is
 * re-sent with the same idempotency key, its claim not counted as an
 * attempt: a crash is no verdict of the provider's) and is marked maybe
 * delivered at its claim: the provider may have accepted it before the
 * crash. Returns the count. */
int cad_store_outbox_requeue_in_flight(cad_store_t *st, cad_time_t now, char *err);

/* The wall clock stepped back by `seconds` (to `now`): touches that were
 * due already (queued or retry-wait, due by the old clock) become due
 * `now`, and a retry-wait touch due later keeps the wait it was given
 * (its due time moves back by `seconds`); a queued touch due later keeps
 * its due time (a moment of the calendar, quiet hours' end say, does not
 * move with the clock). Returns the count of touches moved. */
int cad_store_outbox_clock_stepped_back(cad_store_t *st, cad_time_t now, int64_t seconds,
                                        char *err);

/* The wall clock stepped forward by `seconds` (to `now`): retry-wait
 * touches whose last_error starts with `marker` and that were not due yet
 * by the old clock move forward with it. The dispatcher marks so the
 * touches waiting their turn under a rate limit whose bucket runs on the
 * monotonic clock, so a step (or a suspend) does not release them all at
 * once. Returns the count moved. */
int cad_store_outbox_clock_stepped_forward(cad_store_t *st, cad_time_t now, int64_t seconds,
                                           const char *marker, char *err);

/* Notes that an attempt of touch `key`, ended at `at`, may have reached the
 * customer (it failed without an answer after the request left). From then
 * on the engine counts the touch as sent at `at` (the latest such attempt)
 * for its spacing rules — min_gap, caps, recurring periods, appreciations —
 * whatever becomes of it, even dead or cancelled. */
int cad_store_outbox_maybe_delivered(cad_store_t *st, int64_t key, cad_time_t at, char *err);
/* A claimed touch is not sent after all: it becomes cancelled with `reason`
 * (the contact withdrew consent, say), its claim not counted as an attempt. */
int cad_store_outbox_withdraw(cad_store_t *st, int64_t key, const char *reason, cad_time_t now,
                              char *err);
/* Earliest due_at of a queued/retry-wait touch of a customer not paused,
 * CAD_TIME_NEVER when none. */
cad_time_t cad_store_outbox_next_due(cad_store_t *st);
/* The same for one channel (by name). */
cad_time_t cad_store_outbox_next_due_channel(cad_store_t *st, const char *channel);
/* An in-flight attempt that never got a verdict (cancelled at shutdown or
 * reload) goes back to queued, due `now`, its attempt not counted. */
int cad_store_outbox_release(cad_store_t *st, int64_t key, cad_time_t now, char *err);

/* Lists outbox touches, newest decision first: `state` < 0 for every state
 * (final suppressions are not outbox rows), `customer_id` NULL for every
 * customer, `limit` <= 0 for no limit. Strings are valid during the call of
 * fn only. Returns the count or an error. */
int cad_store_outbox_foreach(cad_store_t *st, int state, const char *customer_id, int limit,
                             void (*fn)(const cad_outbox_touch_t *t, void *arg), void *arg,
                             char *err);
/* Operator: cancels a queued, retry-wait or dead touch (never one in flight or
 * delivered); it will not be sent. */
int cad_store_outbox_cancel(cad_store_t *st, int64_t key, cad_time_t now, char *err);
/* Operator: sends a dead or retry-wait touch again, due now, with the same
 * idempotency key and the channel's full retry schedule (its attempt count
 * starts again); refused once the touch is past its expiry (R11). */
int cad_store_outbox_requeue(cad_store_t *st, int64_t key, cad_time_t now, char *err);
/* Operator, after an outage: sends every dead touch of `channel` (NULL: any)
 * and customer `customer_id` (NULL: any) that died at or after `since` again,
 * due now, with their idempotency keys. *requeued counts them; *left counts
 * the matching dead touches kept dead because they are past their expiry
 * (R11). -CAD_ENOTFOUND when the customer does not exist. */
int cad_store_outbox_requeue_dead(cad_store_t *st, const char *channel, const char *customer_id,
                                  cad_time_t since, cad_time_t now, int64_t *requeued,
                                  int64_t *left, char *err);

/* ---- queries (status, why, reports) ------------------------------------- */

typedef struct cad_store_counts {
    int64_t customers, contacts, events;
    int64_t decisions;
    int64_t outbox[6]; /* by enum cad_outbox_state */
    int64_t alerts_open;
    int64_t dropped;            /* final suppressions recorded */
    int64_t alerts_content_gap; /* open alerts by kind */
    int64_t alerts_loop_overdue;
    int64_t alerts_silent;
    int64_t customers_paused;
} cad_store_counts_t;

/* Fills *out with the totals shown by `status` and metrics. */
int cad_store_counts(cad_store_t *st, cad_store_counts_t *out, char *err);

/* The cheap part of the counts, for frequent use (the service's STATUS
 * line): touches waiting to be sent or in flight, and open alerts. Reads
 * indexes over those rows only, never the whole history. */
int cad_store_backlog(cad_store_t *st, int64_t *queued, int64_t *alerts_open, char *err);

/* One recorded verdict of a customer's evaluations, newest first. */
typedef struct cad_trace_row {
    cad_time_t at;
    const char *rule;
    const char *verdict;  /* cad_verdict_name */
    const char *reason;   /* cad_reason_name */
    const char *sentence; /* human sentence, as described at decision time */
    const char *channel;  /* may be "" */
    const char *contact;  /* may be "" */
    const char *content;  /* may be "" */
    cad_time_t until;     /* 0 when none */
} cad_trace_row_t;

/* Calls fn for a customer's newest `limit` trace rows (<= 0: all kept),
 * newest first; strings valid during fn. Returns the count or an error. */
int cad_store_trace_foreach(cad_store_t *st, const char *customer_id, int limit,
                            void (*fn)(const cad_trace_row_t *row, void *arg), void *arg,
                            char *err);

/* One customer as stored, for `customer show`. Strings valid during fn. */
typedef struct cad_customer_row {
    int64_t key;
    const char *id, *name, *timezone, *stage, *segment;
    const char *interests;  /* comma-separated tags */
    const char *attributes; /* JSON object text */
    bool paused;
    cad_time_t created_at, updated_at, next_eval;
} cad_customer_row_t;

/* Calls fn once with the customer; -CAD_ENOTFOUND when there is none. */
int cad_store_customer_get(cad_store_t *st, const char *customer_id,
                           void (*fn)(const cad_customer_row_t *row, void *arg), void *arg,
                           char *err);

/* One contact as stored. Consent: 1 opted in, 0 opted out, -1 never given. */
typedef struct cad_contact_row {
    int64_t key;
    const char *id, *name, *first_name;
    const char *roles; /* comma-separated */
    const char *email, *phone;
    int email_consent, sms_consent;
    const char *unusable; /* comma-separated channels marked unusable, "" when none */
} cad_contact_row_t;

/* Calls fn for every contact of a customer; returns the count or an error. */
int cad_store_contacts_foreach(cad_store_t *st, const char *customer_id,
                               void (*fn)(const cad_contact_row_t *row, void *arg), void *arg,
                               char *err);

/* One operator alert (content gap, overdue feedback loop, silent customer). */
typedef struct cad_alert_row {
    int64_t key;
    const char *kind; /* "content_gap", "loop_overdue", "silent" */
    const char *customer_id;
    const char *rule;   /* "" when no rule explains it */
    const char *detail; /* the human sentence of the verdict behind it */
    cad_time_t first_at, last_at, closed_at;
    bool open;
} cad_alert_row_t;

/* Lists alerts, most recently raised first; open ones only when open_only.
 * Strings valid during fn. Returns the count or an error. */
int cad_store_alerts_foreach(cad_store_t *st, bool open_only, int limit,
                             void (*fn)(const cad_alert_row_t *row, void *arg), void *arg,
                             char *err);

/* One line of the per-rule report (R12): touches decided in [from, to) for
 * `rule`, by outcome; `reason` names why dropped ones were dropped. */
typedef struct cad_report_row {
    const char *rule;
    const char *purpose;
    const char *outcome; /* "pending", "delivered", "failed", "dropped" */
    const char *reason;  /* dropped: the reason name ("stale", "held_out"...); else "" */
    int64_t count;
} cad_report_row_t;

/* Calls fn for each (rule, outcome, reason) with its count, by rule then
 * outcome. Returns the number of rows or an error. */
int cad_store_report_foreach(cad_store_t *st, cad_time_t from, cad_time_t to,
                             void (*fn)(const cad_report_row_t *row, void *arg), void *arg,
                             char *err);

/* ---- operator queries (control commands, reports, metrics) -------------- */

/* Lists customers ordered by id: `stage` and `segment` NULL for any, `limit`
 * <= 0 for no limit. Rows are as in cad_store_customer_get; strings valid
 * during fn. Returns the count or an error. */
int cad_store_customers_foreach(cad_store_t *st, const char *stage, const char *segment, int limit,
                                void (*fn)(const cad_customer_row_t *row, void *arg), void *arg,
                                char *err);

/* The store key and external id (copied into customer_id, CAD_ID_MAX + 1
 * bytes) of a contact's customer; -CAD_ENOTFOUND when no contact has that id. */
int cad_store_contact_customer(cad_store_t *st, const char *contact_id, int64_t *customer_key,
                               char *customer_id, char *err);

/* One line of the calendar: a customer's next evaluation and the pending
 * verdict of its latest evaluation that explains it (a window that opens, a
 * deferral); rule, verdict, reason and sentence are "" when none does. */
typedef struct cad_calendar_row {
    const char *customer_id, *name, *timezone;
    bool paused;
    cad_time_t next_eval; /* when the customer is evaluated next */
    const char *rule, *verdict, *reason, *sentence;
    cad_time_t until; /* the pending verdict's time, 0 when none */
} cad_calendar_row_t;

/* Calls fn for the customers evaluated next, soonest first (customers never
 * due again are left out). `customer_id` narrows to one customer. With
 * `rule`, rows are the customers whose latest evaluation left that rule
 * waiting or deferred, ordered by that verdict's time. `limit` <= 0: all.
 * Strings valid during fn. Returns the count or an error. */
int cad_store_calendar_foreach(cad_store_t *st, const char *customer_id, const char *rule,
                               int limit, void (*fn)(const cad_calendar_row_t *row, void *arg),
                               void *arg, char *err);

/* Calls fn(key, arg) for every customer whose next evaluation lies in
 * [from, to] (imports: the customers they touched). Returns the count. */
int cad_store_due_between_foreach(cad_store_t *st, cad_time_t from, cad_time_t to,
                                  void (*fn)(int64_t key, void *arg), void *arg, char *err);

/* Holdout comparison of one rule over a period: the customers decided for
 * it in [from, to) in one group ("treated": a touch was decided to go out;
 * "held_out": recorded as held out), and how many of them had a churned or a
 * reactivated event at or after that decision. */
typedef struct cad_holdout_row {
    const char *rule;
    const char *group; /* "treated" or "held_out" */
    int64_t customers, churned, reactivated;
} cad_holdout_row_t;

/* Calls fn per (rule, group) for the rules that hold customers out in the
 * period. Strings valid during fn. Returns the number of rows or an error. */
int cad_store_holdout_foreach(cad_store_t *st, cad_time_t from, cad_time_t to,
                              void (*fn)(const cad_holdout_row_t *row, void *arg), void *arg,
                              char *err);

/* Touches by state (outbox states and "dropped") and channel ("" for a
 * dropped one), for metrics. Returns the number of rows or an error. */
int cad_store_touch_counts_foreach(cad_store_t *st,
                                   void (*fn)(const char *state, const char *channel, int64_t count,
                                              void *arg),
                                   void *arg, char *err);

/* Delivery latency (decision to delivered, seconds) of the touches
 * delivered since `since` (due at most a week before it; the index on state
 * and due time keeps this a range scan): counts[i] gets those in (bounds[i-1], bounds[i]],
 * counts[n] those above the last bound, *sum their total. Returns the
 * number of touches or an error. */
int cad_store_delivery_latency(cad_store_t *st, cad_time_t since, const double *bounds, int n,
                               int64_t *counts, double *sum, char *err);

#endif
