/*
 * engine.h — the decision engine: which touch, if any, a customer is due.
 *
 * cad_engine_decide() is a pure function of (playbook, customer snapshot,
 * now): no I/O, no clock, no globals. For every rule of the playbook it
 * returns a verdict — send, defer until T, suppress, or not applicable — with
 * a machine-readable reason code; it chooses at most one touch to send, and
 * computes the instant at which the customer must next be evaluated. The same
 * function drives the daemon, the tests and the simulator.
 *
 * Reasons are codes; cad_verdict_describe() turns one into the human sentence
 * shown by `cadencectl why`, so deciding never formats strings.
 */
#ifndef CADENCE_ENGINE_H
#define CADENCE_ENGINE_H

#include "common.h"
#include "model.h"
#include "playbook.h"

enum cad_verdict_kind {
    CAD_VERDICT_SKIP = 0, /* not applicable now: wrong stage, no trigger, already done */
    CAD_VERDICT_WAIT,     /* a window opens later (until = when) */
    CAD_VERDICT_SEND,     /* chosen: this touch goes out now */
    CAD_VERDICT_DEFER,    /* due, but must wait until `until` (gap, cap, hours, value first) */
    CAD_VERDICT_SUPPRESS, /* due, but refused; final == true closes the trigger for good */
};

/* Reason codes; cad_reason_name() gives the stable snake_case name used in
 * the store, the control protocol and reports. */
enum cad_reason {
    CAD_REASON_NONE = 0,
    CAD_REASON_DUE,                 /* send: every check passed */
    CAD_REASON_STAGE,               /* R1: customer's stage not targeted by the rule */
    CAD_REASON_NO_TRIGGER,          /* no event of the trigger type */
    CAD_REASON_ALREADY_DONE,        /* R13: touch for this trigger/period already decided */
    CAD_REASON_NOT_YET,             /* R2: window opens later */
    CAD_REASON_STALE,               /* R2: trigger older than expires */
    CAD_REASON_PAUSED,              /* R14: customer paused by an operator */
    CAD_REASON_SUPPRESSED_BY_EVENT, /* R14: e.g. open complaint */
    CAD_REASON_NO_CONTACT_ROLE,     /* R8: no contact with the rule's roles */
    CAD_REASON_NO_CONSENT,          /* R10: contacts exist but none consented/usable */
    CAD_REASON_VALUE_FIRST,         /* R3: too few value touches before an ask */
    CAD_REASON_ASK_SHARE,           /* R3: share of asks over the window is at its cap */
    CAD_REASON_APPRECIATION_CAP,    /* R4: two thank-yous this year already */
    CAD_REASON_SAME_DAY_ASK,        /* R4: an ask (or thank-you) the same local day */
    CAD_REASON_MIN_GAP,             /* R5: too soon after the last touch */
    CAD_REASON_CHANNEL_CAP,         /* R5: per-channel or global cap reached */
    CAD_REASON_NOT_SILENT,          /* R6: customer heard from us recently enough */
    CAD_REASON_CONTENT_GAP,         /* R6: no unused relevant value content: alert, nothing sent */
    CAD_REASON_LOW_RELEVANCE,       /* R7: best content below the policy's minimum relevance */
    CAD_REASON_QUIET_HOURS,         /* R10: local quiet hours or channel window */
    CAD_REASON_WEEKDAY,             /* R10: local weekday not allowed */
    CAD_REASON_EXPIRED,             /* R11: deferral would pass the touch's expiry: dropped */
    CAD_REASON_LOST_PRIORITY,       /* several due: a higher-priority touch goes first */
    CAD_REASON_HELD_OUT,            /* holdout group: recorded, not sent */
    CAD_REASON_LOOP_CLOSED,         /* R9: follow-up already sent for this feedback */
    CAD_REASON_COUNT
};

/* Alerts raised by a decision (bitmask). */
enum cad_alert {
    CAD_ALERT_CONTENT_GAP = 1u << 0,  /* R6/R3: value needed, no content to send */
    CAD_ALERT_LOOP_OVERDUE = 1u << 1, /* R9: feedback loop open past its SLA */
    CAD_ALERT_SILENT = 1u << 2,       /* R6: customer silent past max_silence */
};

typedef struct cad_verdict {
    int rule; /* index into playbook.rules */
    enum cad_verdict_kind kind;
    enum cad_reason reason;
    bool final;            /* a suppression that closes the trigger (recorded as dropped) */
    cad_time_t until;      /* WAIT/DEFER: earliest instant worth re-checking */
    int64_t trigger_key;   /* event key, recurring period number, or (silence rules) the
                              local day number of the due date */
    int event;             /* index into snapshot.events of the trigger, or -1 */
    int contact;           /* index into snapshot.contacts chosen, or -1 */
    int channel;           /* channel index chosen, or -1 */
    int content;           /* content index chosen, or -1 */
    cad_time_t expires_at; /* when this touch stops being worth sending */
    double relevance;      /* R7 score of the chosen content, 0..1 */
} cad_verdict_t;

/* The result of one evaluation. `verdicts` has one entry per rule, in rule
 * order, and is owned by the caller (capacity >= playbook.n_rules). */
typedef struct cad_decision {
    cad_verdict_t *verdicts;
    int n_verdicts;
    int chosen;           /* index into verdicts of the SEND, or -1 */
    cad_time_t next_eval; /* when something can change; CAD_TIME_NEVER if nothing can */
    uint32_t alerts;      /* enum cad_alert bits */
} cad_decision_t;

/* Decides for one customer at `now`. `out->verdicts` must have room for
 * pb->n_rules entries; nothing is allocated. Returns 0, or -CAD_EINVAL when
 * the snapshot references indexes outside the playbook. */
int cad_engine_decide(const cad_playbook_t *pb, const cad_snapshot_t *snap, cad_time_t now,
                      cad_decision_t *out);

/* Checks that a snapshot fits the playbook (policy, stage, event types,
 * history rules, channels and content within range; events and history in
 * time order). Returns 0, or -CAD_EINVAL with err naming the customer and the
 * offending entry. cad_engine_decide() runs it first. */
int cad_engine_check(const cad_playbook_t *pb, const cad_snapshot_t *snap, char *err);

/* The stable snake_case name of a reason ("stale", "min_gap"...); static. */
const char *cad_reason_name(enum cad_reason r);
/* Parses a reason name back; -1 when unknown. */
int cad_reason_parse(const char *name);
/* The stable name of a verdict kind ("send", "defer"...); static. */
const char *cad_verdict_name(enum cad_verdict_kind k);

/* Writes the human sentence for a verdict ("Deferred until 2026-03-09 08:00
 * Europe/London: quiet hours 21:00-08:00 in the customer's time zone.") into
 * buf. Returns the length that would have been written, like snprintf. */
int cad_verdict_describe(const cad_playbook_t *pb, const cad_snapshot_t *snap,
                         const cad_verdict_t *v, char *buf, size_t size);

/* The idempotency key of a touch: "<customer id>/<rule name>/<trigger>" where
 * trigger is "e:<event id>" (the event's external id; "e<store key>" when the
 * snapshot has none), "p<period>" or "s<day>"; written into buf. The ids are
 * percent-encoded beyond letters, digits and "-._~!$&'()*+,;=:@" (a space,
 * "/", "%" or UTF-8 become %XX), so the key is printable ASCII. At most
 * CAD_TOUCH_KEY_MAX bytes with its NUL. */
#define CAD_TOUCH_KEY_MAX (6 * CAD_ID_MAX + CAD_NAME_MAX + 32)
int cad_touch_key(const cad_playbook_t *pb, const cad_snapshot_t *snap, const cad_verdict_t *v,
                  char *buf, size_t size);

#endif
