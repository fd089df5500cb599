/*
 * model.h — a customer as the engine sees it at one instant.
 *
 * The store (store.c) loads, and the simulator (simulate.c) builds, a
 * snapshot of one customer: its fields, contacts, events and touch history.
 * Everything the engine needs to decide is here, already reduced to indexes
 * and bitmasks of the playbook (playbook.h), so deciding is arithmetic.
 *
 * Memory: a snapshot's arrays are owned by whoever filled it (usually a
 * reusable cad_snapshot_buf_t); the engine only reads them.
 */
#ifndef CADENCE_MODEL_H
#define CADENCE_MODEL_H

#include "common.h"
#include "playbook.h"

struct cad_tz; /* tz.h */

#define CAD_ID_MAX 128 /* external ids: customers, contacts, events, bytes of UTF-8 */

typedef struct cad_customer {
    int64_t key;    /* store row id */
    const char *id; /* external id, for traces and keys */
    enum cad_stage stage;
    int policy;              /* index into playbook.policies (from the segment) */
    uint64_t interests;      /* topic bitmask */
    const struct cad_tz *tz; /* the customer's time zone */
    bool paused;             /* R14: an operator paused this customer */
    cad_time_t created_at;   /* first seen; anchors recurring rules */
} cad_customer_t;

typedef struct cad_contact {
    int64_t key;         /* store row id */
    const char *id;      /* external id */
    uint32_t roles;      /* bit per role index (a contact may hold several) */
    uint16_t reachable;  /* bit per channel index: has the address, consent opted in (or not
                            needed), not marked unusable, not on the suppression list (R10) */
    uint16_t unusable;   /* bit per channel index: marked unusable by a permanent failure */
    uint16_t no_consent; /* bit per channel index: address present but consent missing/out */
} cad_contact_t;

typedef struct cad_event {
    int64_t key;    /* store row id; also the trigger key of the touches it causes */
    const char *id; /* external id (idempotency key of the event, R13) */
    int type;       /* index into playbook.event_types */
    cad_time_t at;
} cad_event_t;

/* What became of a touch the engine once decided, as far as the store knows. */
enum cad_touch_state {
    CAD_TOUCH_PENDING = 0, /* in the outbox: queued, in flight or waiting to retry */
    CAD_TOUCH_DELIVERED,
    CAD_TOUCH_FAILED,  /* dead or cancelled: never reached the customer */
    CAD_TOUCH_DROPPED, /* decided not to send, for good (stale, expired, held out...) */
};

/* One entry of a customer's history: a touch decided for a rule and trigger,
 * or a final suppression that closes that trigger (R2, R13). */
typedef struct cad_history {
    int rule; /* index into playbook.rules, -1 if the rule was removed */
    enum cad_purpose purpose;
    int channel;         /* channel index, -1 for dropped */
    cad_time_t at;       /* decided (pending), delivered, or dropped at */
    int64_t trigger_key; /* event key, or period number for recurring rules */
    int content;         /* content index, or -1 */
    enum cad_touch_state state;
} cad_history_t;

/* A whole snapshot. events sorted by `at` ascending; history by `at` ascending. */
typedef struct cad_snapshot {
    cad_customer_t customer;
    const cad_contact_t *contacts;
    int n_contacts;
    const cad_event_t *events;
    int n_events;
    const cad_history_t *history;
    int n_history;
} cad_snapshot_t;

#endif
