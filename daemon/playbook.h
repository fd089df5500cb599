/*
 * playbook.h — the customer-success playbook as the engine sees it.
 *
 * The config loader (config.c) turns the `event_types`, `roles`, `channels`,
 * `policies`, `rules`, `templates` and `content` sections of cadenced.conf
 * into this structure; the engine (engine.c) reads it and nothing else. Every
 * name is resolved to a small index at load time so the engine compares
 * integers and bitmasks, never strings: roles, event types, stages and topics
 * are bit positions, channels and policies are array indexes.
 *
 * A playbook is immutable once loaded; a reload builds a new one and swaps it.
 */
#ifndef CADENCE_PLAYBOOK_H
#define CADENCE_PLAYBOOK_H

#include "common.h"

#define CAD_MAX_ROLES       32 /* built-in + config-defined contact roles */
#define CAD_MAX_EVENT_TYPES 64 /* built-in + config-defined event types */
#define CAD_MAX_CHANNELS    16 /* configured channels */
#define CAD_MAX_TOPICS      64 /* distinct topic tags of the content library */
#define CAD_MAX_CAPS        8  /* per-policy frequency caps */
#define CAD_NAME_MAX        64 /* names of rules, channels, policies, roles */

/* Customer lifecycle stages (SPEC §1); bit positions in cad_stage_set_t. */
enum cad_stage {
    CAD_STAGE_PROSPECT = 0,
    CAD_STAGE_ONBOARDING,
    CAD_STAGE_ACTIVE,
    CAD_STAGE_AT_RISK,
    CAD_STAGE_FORMER,
    CAD_STAGE_COUNT
};
typedef uint8_t cad_stage_set_t;

/* Why a touch is sent. The order is the priority when several touches are
 * due at once (SPEC §2): transactional first, then value > feedback
 * follow-up > appreciation > feedback request > ask. */
enum cad_purpose {
    CAD_PURPOSE_TRANSACTIONAL = 0, /* invoice, security notice: informs, never sells */
    CAD_PURPOSE_VALUE,             /* education, news, community */
    CAD_PURPOSE_FOLLOWUP,          /* "here is what we did with your feedback" (a value touch) */
    CAD_PURPOSE_APPRECIATION,      /* a pure thank-you */
    CAD_PURPOSE_FEEDBACK,          /* asking for feedback */
    CAD_PURPOSE_ASK, /* renew, invoice reminder, sell, review, testimonial, referral */
    CAD_PURPOSE_COUNT
};

/* Built-in event types (indexes into cad_playbook_t.event_types). */
enum cad_builtin_event {
    CAD_EVENT_PURCHASE = 0,
    CAD_EVENT_PROJECT_COMPLETED,
    CAD_EVENT_FEEDBACK_RECEIVED,
    CAD_EVENT_FEEDBACK_ACTIONED,
    CAD_EVENT_RENEWAL_DUE,
    CAD_EVENT_INVOICE_ISSUED,
    CAD_EVENT_COMPLAINT_OPENED,
    CAD_EVENT_COMPLAINT_RESOLVED,
    CAD_EVENT_CHURNED,
    CAD_EVENT_REACTIVATED,
    CAD_EVENT_BUILTIN_COUNT
};

/* Built-in contact roles (indexes into cad_playbook_t.roles). */
enum cad_builtin_role {
    CAD_ROLE_DECISION_MAKER = 0,
    CAD_ROLE_USER,
    CAD_ROLE_BILLING,
    CAD_ROLE_CHAMPION,
    CAD_ROLE_TECHNICAL,
    CAD_ROLE_BUILTIN_COUNT
};

/* What address a channel needs from a contact, and which consent applies. */
enum cad_address_kind {
    CAD_ADDRESS_EMAIL = 0, /* contact.email, consent "email" */
    CAD_ADDRESS_PHONE,     /* contact.phone (E.164), consent "sms" */
    CAD_ADDRESS_NONE,      /* webhook/file/CRM task: no personal address, consent "none" */
};

typedef struct cad_event_type {
    char name[CAD_NAME_MAX];
    int resolved_by; /* index of the event type that closes this one (complaint_opened ->
                        complaint_resolved), or -1 */
} cad_event_type_t;

typedef struct cad_channel {
    char name[CAD_NAME_MAX];   /* "email", "sms", "crm", ... as named in config */
    char plugin[CAD_NAME_MAX]; /* plugin that delivers it: "email", "sms", "webhook", "file" */
    enum cad_address_kind address;
    uint16_t window_start; /* allowed local send window, minutes after midnight; */
    uint16_t window_end;   /* start == end means "any time" (sms defaults to 08:00-21:00) */
    int line;              /* config line, for messages */
} cad_channel_t;

/* A frequency cap: at most `count` touches in any sliding `window` seconds,
 * on one channel (channel >= 0) or on all channels together (channel == -1). */
typedef struct cad_cap {
    int channel;
    uint32_t count;
    int64_t window;
} cad_cap_t;

/* A cadence policy: how often and when one segment of customers may hear from us. */
typedef struct cad_policy {
    char name[CAD_NAME_MAX]; /* the segment it serves; "default" catches the rest */
    int64_t min_gap;         /* R5: seconds between any two touches to a customer */
    cad_cap_t caps[CAD_MAX_CAPS];
    int n_caps;
    int64_t max_silence;  /* R6: longest silence allowed for active/onboarding customers */
    int64_t silence_lead; /* R6: how long before max_silence a value touch is sought */
    uint16_t quiet_start; /* R10: quiet hours, local minutes after midnight; */
    uint16_t quiet_end;   /* start == end means no quiet hours; may wrap midnight */
    uint8_t weekdays;     /* R10: allowed local weekdays, bit 0 = Monday ... bit 6 = Sunday */
    int64_t jitter;       /* R11: deferred touches spread over [0, jitter) seconds */
    /* R3: value before ask. has_ask_balance is false when the policy has no
     * ask_balance group; rules with purpose ask are then a config error. */
    bool has_ask_balance;
    uint32_t ask_min_value; /* value/appreciation touches delivered within ask_window */
    int64_t ask_window;
    double ask_max_share;           /* asks / all touches over ask_window, 0..1 */
    double min_relevance;           /* R7: 0..1, interest overlap below this is never sent */
    uint32_t appreciation_per_year; /* R4: default 2 */
    int line;
} cad_policy_t;

enum cad_trigger_kind {
    CAD_TRIGGER_EVENT = 0, /* fires in [event.at + after, event.at + expires] */
    CAD_TRIGGER_RECURRING, /* fires once per `every` seconds */
    CAD_TRIGGER_SILENCE,   /* fires when silence nears the policy's max_silence (R6) */
};

#define CAD_NO_TEMPLATE (-1)

/* One touchpoint rule of the playbook. */
typedef struct cad_rule {
    char name[CAD_NAME_MAX];
    enum cad_purpose purpose;
    enum cad_trigger_kind trigger;
    int event_type;         /* CAD_TRIGGER_EVENT: index into event_types */
    int64_t after;          /* CAD_TRIGGER_EVENT: window opens at event.at + after */
    int64_t expires;        /* CAD_TRIGGER_EVENT: window closes at event.at + expires (R2) */
    int64_t every;          /* CAD_TRIGGER_RECURRING: period */
    int64_t touch_expiry;   /* how long a decided/deferred touch stays sendable (R11) */
    cad_stage_set_t stages; /* R1: bit per enum cad_stage */
    uint32_t roles;         /* R8: bit per role index */
    uint8_t channels[CAD_MAX_CHANNELS]; /* preference order, channel indexes */
    int n_channels;
    int template_index;            /* CAD_NO_TEMPLATE when content comes from the library */
    bool use_library;              /* R6/R7: pick the best unsent content item */
    uint64_t topics;               /* optional topic filter for library picks, 0 = any */
    uint32_t requires_value_count; /* R3: value touches needed within requires_value_within */
    int64_t requires_value_within; /* R3: 0 = use the policy's ask_window */
    uint64_t suppress_while;       /* R14: event types whose open state suppresses this rule */
    bool bypass_caps;              /* transactional only: ignores gap and caps, still counted */
    bool bypass_quiet_hours;       /* transactional only: ignores quiet hours and weekdays */
    int64_t sla;                   /* R9: follow-up due within sla of feedback_received, 0 = none */
    uint32_t holdout_permille;     /* share of eligible customers held out, 0..1000 */
    int line;
} cad_rule_t;

/* A message template: subject/text/html bodies with {{variables}}. */
typedef struct cad_template {
    char name[CAD_NAME_MAX];
    char *subject; /* owned; may be NULL for channels without a subject */
    char *text;    /* owned; plain-text body (also the SMS body) */
    char *html;    /* owned; may be NULL */
    int line;
} cad_template_t;

/* An item of the content library (R6, R7). */
typedef struct cad_content {
    char id[CAD_NAME_MAX];
    enum cad_purpose purpose;
    uint64_t topics;        /* bit per topic index */
    cad_stage_set_t stages; /* stages it suits */
    cad_time_t valid_from;  /* 0 = always */
    cad_time_t valid_until; /* CAD_TIME_NEVER = always */
    char *title;            /* owned */
    char *url;              /* owned, may be NULL */
    int template_index;
    int line;
} cad_content_t;

typedef struct cad_playbook {
    cad_event_type_t event_types[CAD_MAX_EVENT_TYPES];
    int n_event_types;
    char roles[CAD_MAX_ROLES][CAD_NAME_MAX];
    int n_roles;
    char topics[CAD_MAX_TOPICS][CAD_NAME_MAX];
    int n_topics;
    cad_channel_t channels[CAD_MAX_CHANNELS];
    int n_channels;
    cad_policy_t *policies; /* owned; policies[0] is "default" */
    int n_policies;
    cad_rule_t *rules; /* owned; config order is the tie-break order */
    int n_rules;
    cad_template_t *templates; /* owned */
    int n_templates;
    cad_content_t *content; /* owned */
    int n_content;
} cad_playbook_t;

/* Frees everything a playbook owns (not the struct itself). NULL-safe. */
void cad_playbook_clear(cad_playbook_t *pb);

/* Index lookups by name; -1 when unknown. */
int cad_playbook_event_type(const cad_playbook_t *pb, const char *name);
int cad_playbook_role(const cad_playbook_t *pb, const char *name);
int cad_playbook_channel(const cad_playbook_t *pb, const char *name);
int cad_playbook_policy(const cad_playbook_t *pb, const char *segment); /* falls back to 0 */
int cad_playbook_topic(const cad_playbook_t *pb, const char *name);
int cad_playbook_template(const cad_playbook_t *pb, const char *name);
int cad_playbook_content(const cad_playbook_t *pb, const char *id);

/* Fills a playbook's built-in event types and roles; used by the config
 * loader before it adds config-defined ones, and by tests. */
void cad_playbook_init_builtins(cad_playbook_t *pb);

/* Bitmask of topics for a list of tag names; unknown tags are ignored
 * (they can match no content). */
uint64_t cad_playbook_topic_mask(const cad_playbook_t *pb, const char *const *tags, int n);

/* Names of enum values, and parsers from names (-1 when unknown). */
const char *cad_stage_name(enum cad_stage s);
int cad_stage_parse(const char *name);
const char *cad_purpose_name(enum cad_purpose p);
int cad_purpose_parse(const char *name);

/* Is this purpose a "give" (value, follow-up, appreciation) rather than an ask? */
bool cad_purpose_is_give(enum cad_purpose p);

#endif
