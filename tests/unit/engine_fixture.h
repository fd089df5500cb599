/*
 * engine_fixture.h — the example playbook and customer snapshots, built in C
 * for the engine's tests and benchmark, independent of the config loader.
 *
 * fx_playbook_example() builds the shared example playbook (three policies,
 * email/sms/crm_task channels, ten topics, the thirteen rules in config
 * order, their templates and a twelve-item content library). A fx_t holds one
 * customer's snapshot in fixed arrays; helpers add contacts, events and
 * history rows in time order and run the engine. Everything is static so a
 * test file includes it once; the playbook is freed with cad_playbook_clear.
 */
#ifndef CADENCE_ENGINE_FIXTURE_H
#define CADENCE_ENGINE_FIXTURE_H

#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "tz.h"

#define FX_MAX_CONTACTS 8
#define FX_MAX_EVENTS   64
#define FX_MAX_HISTORY  512

enum fx_channel { FX_EMAIL = 0, FX_SMS = 1, FX_CRM = 2 };
enum fx_topic {
    FX_T_ONBOARDING = 0,
    FX_T_REPORTING,
    FX_T_INTEGRATIONS,
    FX_T_SECURITY,
    FX_T_AUTOMATION,
    FX_T_BILLING,
    FX_T_COMMUNITY,
    FX_T_BEST_PRACTICES,
    FX_T_PRODUCT_NEWS,
    FX_T_CASE_STUDIES,
};
enum fx_rule {
    FX_WELCOME_GUIDE = 0,
    FX_PROJECT_THANK_YOU,
    FX_TOP_OF_MIND,
    FX_USAGE_TIPS,
    FX_FEEDBACK_FOLLOWUP,
    FX_OPERATIONAL_SURVEY,
    FX_NPS_SURVEY,
    FX_REVIEW_REQUEST,
    FX_RENEWAL_REMINDER,
    FX_INVOICE_NOTICE,
    FX_COMPLAINT_CALL_TASK,
    FX_ANNIVERSARY_THANKS,
    FX_WIN_BACK,
    FX_RULE_COUNT
};
enum fx_policy { FX_DEFAULT = 0, FX_ENTERPRISE, FX_SMB };

#define FX_BIT(n)   (UINT64_C(1) << (n))
#define FX_ROLE(r)  (1u << (r))
#define FX_STAGE(s) ((cad_stage_set_t)(1u << (s)))
#define FX_CH(c)    ((uint16_t)(1u << (c)))

/* 2026-03-10T12:00:00Z, a Tuesday: noon in London, 05:00 in Los Angeles. */
#define FX_T0      ((cad_time_t)1773144000)
#define FX_CREATED (FX_T0 - 400 * CAD_DAY)

static inline char *fx_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static inline void fx_name(char dst[CAD_NAME_MAX], const char *src)
{
    size_t n = strlen(src);
    if (n >= CAD_NAME_MAX)
        n = CAD_NAME_MAX - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static inline void fx_policy(cad_policy_t *p, const char *name)
{
    memset(p, 0, sizeof(*p));
    fx_name(p->name, name);
    p->min_gap = 2 * CAD_DAY;
    p->caps[0] = (cad_cap_t){.channel = -1, .count = 3, .window = 7 * CAD_DAY};
    p->caps[1] = (cad_cap_t){.channel = FX_EMAIL, .count = 2, .window = 7 * CAD_DAY};
    p->caps[2] = (cad_cap_t){.channel = FX_SMS, .count = 1, .window = 7 * CAD_DAY};
    p->n_caps = 3;
    p->max_silence = 30 * CAD_DAY;
    p->silence_lead = 3 * CAD_DAY;
    p->quiet_start = 20 * 60;
    p->quiet_end = 8 * 60;
    p->weekdays = 0x7f;
    p->jitter = 0;
    p->has_ask_balance = true;
    p->ask_min_value = 1;
    p->ask_window = 60 * CAD_DAY;
    p->ask_max_share = 0.5;
    p->min_relevance = 0.3;
    p->appreciation_per_year = 2;
}

typedef struct fx_rule_spec {
    const char *name;
    enum cad_purpose purpose;
    enum cad_trigger_kind trigger;
    int event_type;
    int64_t after, expires, every;
    cad_stage_set_t stages;
    uint32_t roles;
    int channels[3];
    int n_channels;
    const char *template_name; /* NULL: library content */
} fx_rule_spec_t;

static inline void fx_content(cad_content_t *c, const char *id, uint64_t topics,
                              cad_stage_set_t stages)
{
    memset(c, 0, sizeof(*c));
    fx_name(c->id, id);
    c->purpose = CAD_PURPOSE_VALUE;
    c->topics = topics;
    c->stages = stages;
    c->valid_from = 0;
    c->valid_until = CAD_TIME_NEVER;
    c->title = fx_strdup(id);
    c->template_index = 0; /* "article" */
}

/* Builds the example playbook into *pb (free with cad_playbook_clear). */
static inline void fx_playbook_example(cad_playbook_t *pb)
{
    memset(pb, 0, sizeof(*pb));
    cad_playbook_init_builtins(pb);
    static const char *const topics[] = {
        "onboarding", "reporting", "integrations",   "security",     "automation",
        "billing",    "community", "best_practices", "product_news", "case_studies"};
    pb->n_topics = (int)CAD_ARRAY_LEN(topics);
    for (int i = 0; i < pb->n_topics; i++)
        fx_name(pb->topics[i], topics[i]);

    pb->n_channels = 3;
    fx_name(pb->channels[FX_EMAIL].name, "email");
    fx_name(pb->channels[FX_EMAIL].plugin, "file");
    pb->channels[FX_EMAIL].address = CAD_ADDRESS_EMAIL;
    fx_name(pb->channels[FX_SMS].name, "sms");
    fx_name(pb->channels[FX_SMS].plugin, "sms");
    pb->channels[FX_SMS].address = CAD_ADDRESS_PHONE;
    pb->channels[FX_SMS].window_start = 8 * 60;
    pb->channels[FX_SMS].window_end = 21 * 60;
    fx_name(pb->channels[FX_CRM].name, "crm_task");
    fx_name(pb->channels[FX_CRM].plugin, "webhook");
    pb->channels[FX_CRM].address = CAD_ADDRESS_NONE;

    pb->n_policies = 3;
    pb->policies = calloc(3, sizeof(cad_policy_t));
    fx_policy(&pb->policies[FX_DEFAULT], "default");
    fx_policy(&pb->policies[FX_ENTERPRISE], "enterprise");
    pb->policies[FX_ENTERPRISE].weekdays = 0x1f; /* Monday to Friday */
    pb->policies[FX_ENTERPRISE].min_gap = 3 * CAD_DAY;
    fx_policy(&pb->policies[FX_SMB], "smb");
    pb->policies[FX_SMB].max_silence = 45 * CAD_DAY;

    static const char *const templates[] = {"article",           "welcome_guide", "thank_you",
                                            "feedback_followup", "ops_survey",    "nps",
                                            "review_request",    "renewal",       "invoice",
                                            "call_task",         "anniversary",   "win_back"};
    pb->n_templates = (int)CAD_ARRAY_LEN(templates);
    pb->templates = calloc((size_t)pb->n_templates, sizeof(cad_template_t));
    for (int i = 0; i < pb->n_templates; i++) {
        fx_name(pb->templates[i].name, templates[i]);
        pb->templates[i].text = fx_strdup("Hello {{contact.name}}");
    }

    const cad_stage_set_t ONB = FX_STAGE(CAD_STAGE_ONBOARDING), ACT = FX_STAGE(CAD_STAGE_ACTIVE),
                          RISK = FX_STAGE(CAD_STAGE_AT_RISK), FORMER = FX_STAGE(CAD_STAGE_FORMER);
    const uint32_t DM = FX_ROLE(CAD_ROLE_DECISION_MAKER), USER = FX_ROLE(CAD_ROLE_USER),
                   BILL = FX_ROLE(CAD_ROLE_BILLING), CHAMP = FX_ROLE(CAD_ROLE_CHAMPION);
    const int64_t D = CAD_DAY;
    const fx_rule_spec_t specs[FX_RULE_COUNT] = {
        {"welcome_guide",
         CAD_PURPOSE_VALUE,
         CAD_TRIGGER_EVENT,
         CAD_EVENT_PURCHASE,
         1 * D,
         10 * D,
         0,
         ONB,
         USER | CHAMP | DM,
         {FX_EMAIL},
         1,
         "welcome_guide"},
        {"project_thank_you",
         CAD_PURPOSE_APPRECIATION,
         CAD_TRIGGER_EVENT,
         CAD_EVENT_PROJECT_COMPLETED,
         2 * D,
         14 * D,
         0,
         ONB | ACT | RISK,
         DM | CHAMP,
         {FX_EMAIL},
         1,
         "thank_you"},
        {"top_of_mind",
         CAD_PURPOSE_VALUE,
         CAD_TRIGGER_SILENCE,
         -1,
         0,
         0,
         0,
         ONB | ACT,
         USER | CHAMP | DM,
         {FX_EMAIL},
         1,
         NULL},
        {"usage_tips",
         CAD_PURPOSE_VALUE,
         CAD_TRIGGER_RECURRING,
         -1,
         0,
         0,
         45 * D,
         ACT,
         USER,
         {FX_EMAIL},
         1,
         NULL},
        {"feedback_followup",
         CAD_PURPOSE_FOLLOWUP,
         CAD_TRIGGER_EVENT,
         CAD_EVENT_FEEDBACK_ACTIONED,
         0,
         14 * D,
         0,
         ONB | ACT | RISK,
         USER | CHAMP | DM,
         {FX_EMAIL, FX_SMS},
         2,
         "feedback_followup"},
        {"operational_survey",
         CAD_PURPOSE_FEEDBACK,
         CAD_TRIGGER_EVENT,
         CAD_EVENT_PROJECT_COMPLETED,
         7 * D,
         21 * D,
         0,
         ONB | ACT,
         USER,
         {FX_EMAIL},
         1,
         "ops_survey"},
        {"nps_survey",
         CAD_PURPOSE_FEEDBACK,
         CAD_TRIGGER_RECURRING,
         -1,
         0,
         0,
         180 * D,
         ACT,
         DM | CHAMP,
         {FX_EMAIL},
         1,
         "nps"},
        {"review_request",
         CAD_PURPOSE_ASK,
         CAD_TRIGGER_EVENT,
         CAD_EVENT_PURCHASE,
         14 * D,
         30 * D,
         0,
         ONB | ACT,
         CHAMP | DM,
         {FX_EMAIL},
         1,
         "review_request"},
        {"renewal_reminder",
         CAD_PURPOSE_ASK,
         CAD_TRIGGER_EVENT,
         CAD_EVENT_RENEWAL_DUE,
         0,
         45 * D,
         0,
         ACT | RISK,
         BILL | DM,
         {FX_EMAIL, FX_SMS},
         2,
         "renewal"},
        {"invoice_notice",
         CAD_PURPOSE_TRANSACTIONAL,
         CAD_TRIGGER_EVENT,
         CAD_EVENT_INVOICE_ISSUED,
         0,
         3 * D,
         0,
         ONB | ACT | RISK | FORMER,
         BILL,
         {FX_EMAIL},
         1,
         "invoice"},
        {"complaint_call_task",
         CAD_PURPOSE_FOLLOWUP,
         CAD_TRIGGER_EVENT,
         CAD_EVENT_COMPLAINT_OPENED,
         0,
         2 * D,
         0,
         ONB | ACT | RISK,
         DM,
         {FX_CRM},
         1,
         "call_task"},
        {"anniversary_thanks",
         CAD_PURPOSE_APPRECIATION,
         CAD_TRIGGER_RECURRING,
         -1,
         0,
         0,
         365 * D,
         ACT,
         DM | CHAMP,
         {FX_EMAIL},
         1,
         "anniversary"},
        {"win_back",
         CAD_PURPOSE_VALUE,
         CAD_TRIGGER_EVENT,
         CAD_EVENT_CHURNED,
         60 * D,
         120 * D,
         0,
         FORMER,
         DM,
         {FX_EMAIL},
         1,
         "win_back"},
    };
    pb->n_rules = FX_RULE_COUNT;
    pb->rules = calloc(FX_RULE_COUNT, sizeof(cad_rule_t));
    for (int i = 0; i < FX_RULE_COUNT; i++) {
        const fx_rule_spec_t *s = &specs[i];
        cad_rule_t *r = &pb->rules[i];
        fx_name(r->name, s->name);
        r->purpose = s->purpose;
        r->trigger = s->trigger;
        r->event_type = s->event_type;
        r->after = s->after;
        r->expires = s->expires;
        r->every = s->every;
        /* as the config loader does: an event rule's touch lasts its whole
         * window, other touches a week */
        r->touch_expiry = s->trigger == CAD_TRIGGER_EVENT ? s->expires - s->after : 7 * D;
        r->stages = s->stages;
        r->roles = s->roles;
        r->n_channels = s->n_channels;
        for (int k = 0; k < s->n_channels; k++)
            r->channels[k] = (uint8_t)s->channels[k];
        r->template_index =
            s->template_name ? cad_playbook_template(pb, s->template_name) : CAD_NO_TEMPLATE;
        r->use_library = s->template_name == NULL;
        r->line = 100 + i * 10;
    }
    pb->rules[FX_USAGE_TIPS].topics =
        FX_BIT(FX_T_AUTOMATION) | FX_BIT(FX_T_BEST_PRACTICES) | FX_BIT(FX_T_REPORTING);
    pb->rules[FX_FEEDBACK_FOLLOWUP].sla = 21 * D;
    pb->rules[FX_REVIEW_REQUEST].requires_value_count = 2;
    pb->rules[FX_REVIEW_REQUEST].requires_value_within = 60 * D;
    pb->rules[FX_REVIEW_REQUEST].suppress_while = FX_BIT(CAD_EVENT_COMPLAINT_OPENED);
    pb->rules[FX_RENEWAL_REMINDER].requires_value_count = 1;
    pb->rules[FX_RENEWAL_REMINDER].requires_value_within = 45 * D;
    pb->rules[FX_RENEWAL_REMINDER].suppress_while = FX_BIT(CAD_EVENT_COMPLAINT_OPENED);
    pb->rules[FX_INVOICE_NOTICE].bypass_caps = true;
    pb->rules[FX_INVOICE_NOTICE].bypass_quiet_hours = true;
    pb->rules[FX_WIN_BACK].holdout_permille = 50;

    pb->n_content = 12;
    pb->content = calloc(12, sizeof(cad_content_t));
    cad_content_t *c = pb->content;
    fx_content(&c[0], "getting_started", FX_BIT(FX_T_ONBOARDING) | FX_BIT(FX_T_BEST_PRACTICES),
               ONB | ACT);
    fx_content(&c[1], "reporting_basics", FX_BIT(FX_T_REPORTING), ACT);
    fx_content(&c[2], "integrations_guide", FX_BIT(FX_T_INTEGRATIONS), ONB | ACT);
    fx_content(&c[3], "security_checklist", FX_BIT(FX_T_SECURITY), ACT);
    fx_content(&c[4], "automation_recipes", FX_BIT(FX_T_AUTOMATION) | FX_BIT(FX_T_BEST_PRACTICES),
               ACT);
    fx_content(&c[5], "billing_explained", FX_BIT(FX_T_BILLING), ONB | ACT);
    fx_content(&c[6], "community_meetup", FX_BIT(FX_T_COMMUNITY), ACT);
    fx_content(&c[7], "product_news_2025", FX_BIT(FX_T_PRODUCT_NEWS), ACT);
    c[7].valid_until = FX_T0 - 60 * D; /* expired */
    fx_content(&c[8], "case_study_retail", FX_BIT(FX_T_CASE_STUDIES) | FX_BIT(FX_T_REPORTING), ACT);
    fx_content(&c[9], "advanced_reporting", FX_BIT(FX_T_REPORTING) | FX_BIT(FX_T_AUTOMATION), ACT);
    fx_content(&c[10], "everything_digest",
               FX_BIT(FX_T_BILLING) | FX_BIT(FX_T_COMMUNITY) | FX_BIT(FX_T_PRODUCT_NEWS) |
                   FX_BIT(FX_T_CASE_STUDIES) | FX_BIT(FX_T_SECURITY),
               ONB | ACT); /* off-topic mix: below min_relevance for most customers */
    fx_content(&c[11], "best_practices_digest", FX_BIT(FX_T_BEST_PRACTICES), ONB | ACT);
}

/* One customer's snapshot with room to grow, and the last decision. */
typedef struct fx {
    const cad_playbook_t *pb;
    char id[CAD_ID_MAX];
    cad_contact_t contacts[FX_MAX_CONTACTS];
    cad_event_t events[FX_MAX_EVENTS];
    cad_history_t history[FX_MAX_HISTORY];
    cad_snapshot_t snap;
    cad_verdict_t verdicts[64];
    cad_decision_t dec;
    int64_t next_key;
} fx_t;

/* A customer `id` in `stage` and zone `tz` (NULL: UTC), default policy,
 * created 20 days before FX_T0 (nothing recurring or silent is due yet), interested in reporting
 * and automation. */
static inline void fx_init(fx_t *f, const cad_playbook_t *pb, const char *id, enum cad_stage stage,
                           const char *tz)
{
    memset(f, 0, sizeof(*f));
    f->pb = pb;
    fx_name(f->id, id);
    f->snap.customer.key = 1;
    f->snap.customer.id = f->id;
    f->snap.customer.stage = stage;
    f->snap.customer.policy = FX_DEFAULT;
    f->snap.customer.interests = FX_BIT(FX_T_REPORTING) | FX_BIT(FX_T_AUTOMATION);
    f->snap.customer.tz = tz ? cad_tz_get(tz, NULL) : cad_tz_utc();
    f->snap.customer.created_at = FX_T0 - 20 * CAD_DAY;
    f->snap.contacts = f->contacts;
    f->snap.events = f->events;
    f->snap.history = f->history;
    f->dec.verdicts = f->verdicts;
    f->next_key = 1000;
}

/* Adds a contact with role bits `roles`, reachable on channel bits `reach`. */
static inline int fx_contact(fx_t *f, const char *id, uint32_t roles, uint16_t reach)
{
    int i = f->snap.n_contacts++;
    f->contacts[i] = (cad_contact_t){.key = 10 + i, .id = id, .roles = roles, .reachable = reach};
    return i;
}

/* Adds an event in time order; returns its key. */
static inline int64_t fx_event(fx_t *f, int type, cad_time_t at)
{
    int n = f->snap.n_events;
    int pos = n;
    while (pos > 0 && f->events[pos - 1].at > at) {
        f->events[pos] = f->events[pos - 1];
        pos--;
    }
    int64_t key = f->next_key++;
    f->events[pos] = (cad_event_t){.key = key, .id = "ev", .type = type, .at = at};
    f->snap.n_events = n + 1;
    return key;
}

/* Adds a history row in time order. */
static inline void fx_row(fx_t *f, int rule, enum cad_purpose purpose, int channel, cad_time_t at,
                          int64_t trigger_key, int content, enum cad_touch_state state)
{
    int n = f->snap.n_history;
    int pos = n;
    while (pos > 0 && f->history[pos - 1].at > at) {
        f->history[pos] = f->history[pos - 1];
        pos--;
    }
    f->history[pos] = (cad_history_t){.rule = rule,
                                      .purpose = purpose,
                                      .channel = channel,
                                      .at = at,
                                      .trigger_key = trigger_key,
                                      .content = content,
                                      .state = state};
    f->snap.n_history = n + 1;
}

/* A delivered touch of `rule` by its first channel at `at`. */
static inline void fx_touch(fx_t *f, int rule, cad_time_t at)
{
    const cad_rule_t *r = &f->pb->rules[rule];
    fx_row(f, rule, r->purpose, r->channels[0], at, f->next_key++, -1, CAD_TOUCH_DELIVERED);
}

/* Runs the engine at `now`; returns its result code. */
static inline int fx_decide(fx_t *f, cad_time_t now)
{
    return cad_engine_decide(f->pb, &f->snap, now, &f->dec);
}

static inline const cad_verdict_t *fx_v(const fx_t *f, int rule)
{
    return &f->dec.verdicts[rule];
}

#endif
