/*
 * playbook.c — name tables and lookups of the playbook (see playbook.h).
 */
#include "playbook.h"

#include <stdlib.h>
#include <string.h>

static const char *const stage_names[CAD_STAGE_COUNT] = {
    "prospect", "onboarding", "active", "at_risk", "former",
};

static const char *const purpose_names[CAD_PURPOSE_COUNT] = {
    "transactional", "value", "followup", "appreciation", "feedback", "ask",
};

static const char *const builtin_events[CAD_EVENT_BUILTIN_COUNT] = {
    "purchase",       "project_completed", "feedback_received",  "feedback_actioned", "renewal_due",
    "invoice_issued", "complaint_opened",  "complaint_resolved", "churned",           "reactivated",
};

static const char *const builtin_roles[CAD_ROLE_BUILTIN_COUNT] = {
    "decision_maker", "user", "billing", "champion", "technical",
};

static void copy_name(char dst[CAD_NAME_MAX], const char *src)
{
    size_t n = strlen(src);
    if (n >= CAD_NAME_MAX)
        n = CAD_NAME_MAX - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void cad_playbook_init_builtins(cad_playbook_t *pb)
{
    pb->n_event_types = CAD_EVENT_BUILTIN_COUNT;
    for (int i = 0; i < CAD_EVENT_BUILTIN_COUNT; i++) {
        copy_name(pb->event_types[i].name, builtin_events[i]);
        pb->event_types[i].resolved_by = -1;
    }
    pb->event_types[CAD_EVENT_COMPLAINT_OPENED].resolved_by = CAD_EVENT_COMPLAINT_RESOLVED;
    pb->event_types[CAD_EVENT_CHURNED].resolved_by = CAD_EVENT_REACTIVATED;
    pb->n_roles = CAD_ROLE_BUILTIN_COUNT;
    for (int i = 0; i < CAD_ROLE_BUILTIN_COUNT; i++)
        copy_name(pb->roles[i], builtin_roles[i]);
}

void cad_playbook_clear(cad_playbook_t *pb)
{
    if (!pb)
        return;
    for (int i = 0; i < pb->n_templates; i++) {
        free(pb->templates[i].subject);
        free(pb->templates[i].text);
        free(pb->templates[i].html);
    }
    for (int i = 0; i < pb->n_content; i++) {
        free(pb->content[i].title);
        free(pb->content[i].url);
    }
    free(pb->templates);
    free(pb->content);
    free(pb->policies);
    free(pb->rules);
    memset(pb, 0, sizeof(*pb));
}

int cad_playbook_event_type(const cad_playbook_t *pb, const char *name)
{
    for (int i = 0; i < pb->n_event_types; i++)
        if (strcmp(pb->event_types[i].name, name) == 0)
            return i;
    return -1;
}

int cad_playbook_role(const cad_playbook_t *pb, const char *name)
{
    for (int i = 0; i < pb->n_roles; i++)
        if (strcmp(pb->roles[i], name) == 0)
            return i;
    return -1;
}

int cad_playbook_channel(const cad_playbook_t *pb, const char *name)
{
    for (int i = 0; i < pb->n_channels; i++)
        if (strcmp(pb->channels[i].name, name) == 0)
            return i;
    return -1;
}

int cad_playbook_policy(const cad_playbook_t *pb, const char *segment)
{
    if (segment)
        for (int i = 0; i < pb->n_policies; i++)
            if (strcmp(pb->policies[i].name, segment) == 0)
                return i;
    return 0;
}

int cad_playbook_topic(const cad_playbook_t *pb, const char *name)
{
    for (int i = 0; i < pb->n_topics; i++)
        if (strcmp(pb->topics[i], name) == 0)
            return i;
    return -1;
}

int cad_playbook_template(const cad_playbook_t *pb, const char *name)
{
    for (int i = 0; i < pb->n_templates; i++)
        if (strcmp(pb->templates[i].name, name) == 0)
            return i;
    return -1;
}

int cad_playbook_content(const cad_playbook_t *pb, const char *id)
{
    for (int i = 0; i < pb->n_content; i++)
        if (strcmp(pb->content[i].id, id) == 0)
            return i;
    return -1;
}

uint64_t cad_playbook_topic_mask(const cad_playbook_t *pb, const char *const *tags, int n)
{
    uint64_t mask = 0;
    for (int i = 0; i < n; i++) {
        int t = cad_playbook_topic(pb, tags[i]);
        if (t >= 0)
            mask |= UINT64_C(1) << t;
    }
    return mask;
}

const char *cad_stage_name(enum cad_stage s)
{
    return (unsigned)s < CAD_STAGE_COUNT ? stage_names[s] : "unknown";
}

int cad_stage_parse(const char *name)
{
    for (int i = 0; i < CAD_STAGE_COUNT; i++)
        if (strcmp(stage_names[i], name) == 0)
            return i;
    return -1;
}

const char *cad_purpose_name(enum cad_purpose p)
{
    return (unsigned)p < CAD_PURPOSE_COUNT ? purpose_names[p] : "unknown";
}

int cad_purpose_parse(const char *name)
{
    for (int i = 0; i < CAD_PURPOSE_COUNT; i++)
        if (strcmp(purpose_names[i], name) == 0)
            return i;
    return -1;
}

bool cad_purpose_is_give(enum cad_purpose p)
{
    return p == CAD_PURPOSE_VALUE || p == CAD_PURPOSE_FOLLOWUP || p == CAD_PURPOSE_APPRECIATION;
}
