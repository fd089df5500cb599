/*
 * report.c — folds the store's per-rule aggregates into the report (see
 * report.h).
 *
 * A report is a small array of rule lines, found by name with a linear scan
 * (playbooks have tens of rules, the store sends a few rows per rule), a
 * JSON object of suppression counts per line, and the holdout rows as they
 * came. Nothing here reads the clock or the store, so tests feed rows in and
 * compare the JSON that comes out.
 */
#include "report.h"

#include <stdlib.h>
#include <string.h>

typedef struct rule_line {
    char name[CAD_NAME_MAX];
    char purpose[CAD_NAME_MAX];
    int64_t delivered, failed, pending, dropped;
    json_t *reasons; /* reason name -> count */
} rule_line_t;

typedef struct holdout_line {
    char rule[CAD_NAME_MAX];
    char group[16];
    int64_t customers, churned, reactivated;
} holdout_line_t;

struct cad_report {
    cad_time_t from, to;
    rule_line_t *lines;
    int n_lines, cap_lines;
    holdout_line_t *holdout;
    int n_holdout, cap_holdout;
    int64_t silent;
    json_t *silent_listed;
    bool failed; /* out of memory somewhere: the JSON is refused */
};

static void copy_name(char *dst, const char *src)
{
    snprintf(dst, CAD_NAME_MAX, "%s", src ? src : "");
}

static rule_line_t *line_for(cad_report_t *r, const char *rule, const char *purpose)
{
    for (int i = 0; i < r->n_lines; i++)
        if (strcmp(r->lines[i].name, rule) == 0)
            return &r->lines[i];
    if (r->n_lines == r->cap_lines) {
        int cap = r->cap_lines ? r->cap_lines * 2 : 16;
        rule_line_t *n = realloc(r->lines, (size_t)cap * sizeof(*n));
        if (!n)
            return NULL;
        r->lines = n;
        r->cap_lines = cap;
    }
    rule_line_t *l = &r->lines[r->n_lines];
    memset(l, 0, sizeof(*l));
    l->reasons = json_object();
    if (!l->reasons)
        return NULL;
    copy_name(l->name, rule);
    copy_name(l->purpose, purpose);
    r->n_lines++;
    return l;
}

cad_report_t *cad_report_new(const cad_playbook_t *pb, cad_time_t from, cad_time_t to)
{
    cad_report_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->from = from;
    r->to = to;
    r->silent_listed = json_array();
    if (!r->silent_listed) {
        free(r);
        return NULL;
    }
    for (int i = 0; pb && i < pb->n_rules; i++)
        if (!line_for(r, pb->rules[i].name, cad_purpose_name(pb->rules[i].purpose))) {
            cad_report_free(r);
            return NULL;
        }
    return r;
}

void cad_report_free(cad_report_t *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_lines; i++)
        json_decref(r->lines[i].reasons);
    free(r->lines);
    free(r->holdout);
    json_decref(r->silent_listed);
    free(r);
}

void cad_report_add_row(const cad_report_row_t *row, void *arg)
{
    cad_report_t *r = arg;
    rule_line_t *l = line_for(r, row->rule, row->purpose);
    if (!l) {
        r->failed = true;
        return;
    }
    if (!l->purpose[0])
        copy_name(l->purpose, row->purpose);
    if (strcmp(row->outcome, "delivered") == 0)
        l->delivered += row->count;
    else if (strcmp(row->outcome, "failed") == 0)
        l->failed += row->count;
    else if (strcmp(row->outcome, "dropped") == 0) {
        l->dropped += row->count;
        const char *why = row->reason && *row->reason ? row->reason : "unknown";
        json_int_t before = json_integer_value(json_object_get(l->reasons, why));
        if (json_object_set_new(l->reasons, why, json_integer(before + row->count)) != 0)
            r->failed = true;
    } else
        l->pending += row->count;
}

void cad_report_add_silent(const char *customer_id, void *arg)
{
    cad_report_t *r = arg;
    r->silent++;
    if (json_array_size(r->silent_listed) < CAD_REPORT_SILENT_LISTED &&
        json_array_append_new(r->silent_listed, json_string(customer_id)) != 0)
        r->failed = true;
}

void cad_report_add_holdout(const cad_holdout_row_t *row, void *arg)
{
    cad_report_t *r = arg;
    if (r->n_holdout == r->cap_holdout) {
        int cap = r->cap_holdout ? r->cap_holdout * 2 : 8;
        holdout_line_t *n = realloc(r->holdout, (size_t)cap * sizeof(*n));
        if (!n) {
            r->failed = true;
            return;
        }
        r->holdout = n;
        r->cap_holdout = cap;
    }
    holdout_line_t *h = &r->holdout[r->n_holdout++];
    copy_name(h->rule, row->rule);
    snprintf(h->group, sizeof(h->group), "%s", row->group);
    h->customers = row->customers;
    h->churned = row->churned;
    h->reactivated = row->reactivated;
}

/* A share in percent with one decimal, or JSON null when there is no base. */
static json_t *percent(int64_t part, int64_t whole)
{
    if (whole <= 0)
        return json_null();
    return json_real((double)(int64_t)((double)part * 1000.0 / (double)whole + 0.5) / 10.0);
}

/* The reason that suppressed most touches of a line, "" when none did. */
static const char *top_reason(const rule_line_t *l, int64_t *count)
{
    const char *best = "";
    const char *key;
    json_t *v;
    *count = 0;
    json_object_foreach(l->reasons, key, v)
    {
        int64_t n = json_integer_value(v);
        if (n > *count || (n == *count && *best && strcmp(key, best) < 0)) {
            best = key;
            *count = n;
        }
    }
    return best;
}

static bool purpose_is_ask(const char *name)
{
    return strcmp(name, "ask") == 0;
}

static bool purpose_is_give(const char *name)
{
    int p = cad_purpose_parse(name);
    return p >= 0 && cad_purpose_is_give((enum cad_purpose)p);
}

static json_t *group_json(const holdout_line_t *h)
{
    if (!h)
        return json_pack("{s:I, s:I, s:I, s:n, s:n}", "customers", (json_int_t)0, "churned",
                         (json_int_t)0, "reactivated", (json_int_t)0, "churn_pct",
                         "reactivation_pct");
    return json_pack("{s:I, s:I, s:I, s:o, s:o}", "customers", (json_int_t)h->customers, "churned",
                     (json_int_t)h->churned, "reactivated", (json_int_t)h->reactivated, "churn_pct",
                     percent(h->churned, h->customers), "reactivation_pct",
                     percent(h->reactivated, h->customers));
}

static const holdout_line_t *holdout_find(const cad_report_t *r, const char *rule,
                                          const char *group)
{
    for (int i = 0; i < r->n_holdout; i++)
        if (strcmp(r->holdout[i].rule, rule) == 0 && strcmp(r->holdout[i].group, group) == 0)
            return &r->holdout[i];
    return NULL;
}

/* One holdout line per rule that has held-out rows, or that the playbook
 * configures with a holdout share (`pb` may be NULL). */
static json_t *holdout_array(const cad_report_t *r, const cad_playbook_t *pb)
{
    json_t *arr = json_array();
    if (!arr)
        return NULL;
    for (int i = 0; i < r->n_lines; i++) {
        const char *rule = r->lines[i].name;
        const holdout_line_t *t = holdout_find(r, rule, "treated");
        const holdout_line_t *h = holdout_find(r, rule, "held_out");
        int pr = -1;
        for (int k = 0; pb && k < pb->n_rules; k++)
            if (strcmp(pb->rules[k].name, rule) == 0)
                pr = k;
        bool configured = pr >= 0 && pb->rules[pr].holdout_permille > 0;
        if (!h && !configured)
            continue;
        json_t *item = json_pack("{s:s, s:o, s:o}", "rule", rule, "treated", group_json(t),
                                 "held_out", group_json(h));
        if (!item) {
            json_decref(arr);
            return NULL;
        }
        if (pb)
            json_object_set_new(item, "holdout_pct",
                                pr >= 0 ? json_real(pb->rules[pr].holdout_permille / 10.0)
                                        : json_null());
        /* Churn among the held out minus churn among the treated: positive
         * when the touch seems to keep customers. */
        if (t && h && t->customers > 0 && h->customers > 0) {
            double diff = 100.0 * ((double)h->churned / (double)h->customers -
                                   (double)t->churned / (double)t->customers);
            json_object_set_new(
                item, "churn_pct_points_saved",
                json_real((double)(int64_t)(diff * 10.0 + (diff < 0 ? -0.5 : 0.5)) / 10.0));
        } else {
            json_object_set_new(item, "churn_pct_points_saved", json_null());
        }
        json_array_append_new(arr, item);
    }
    return arr;
}

json_t *cad_report_json(const cad_report_t *r)
{
    if (r->failed)
        return NULL;
    json_t *rules = json_array();
    int64_t give = 0, ask = 0;
    int64_t tot_eligible = 0, tot_delivered = 0, tot_failed = 0, tot_pending = 0, tot_dropped = 0;
    for (int i = 0; rules && i < r->n_lines; i++) {
        const rule_line_t *l = &r->lines[i];
        int64_t sent = l->delivered + l->failed + l->pending;
        int64_t eligible = sent + l->dropped;
        int64_t top_n;
        const char *top = top_reason(l, &top_n);
        json_t *item = json_pack(
            "{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:O, s:I, s:I, s:o, s:s}", "rule", l->name,
            "purpose", l->purpose, "eligible", (json_int_t)eligible, "sent", (json_int_t)sent,
            "delivered", (json_int_t)l->delivered, "failed", (json_int_t)l->failed, "pending",
            (json_int_t)l->pending, "suppressed", (json_int_t)l->dropped, "suppressed_by",
            l->reasons, "expected", (json_int_t)eligible, "executed", (json_int_t)l->delivered,
            "executed_pct", percent(l->delivered, eligible), "top_reason", top);
        if (!item || json_array_append_new(rules, item) != 0) {
            json_decref(rules);
            return NULL;
        }
        if (purpose_is_give(l->purpose))
            give += l->delivered;
        else if (purpose_is_ask(l->purpose))
            ask += l->delivered;
        tot_eligible += eligible;
        tot_delivered += l->delivered;
        tot_failed += l->failed;
        tot_pending += l->pending;
        tot_dropped += l->dropped;
    }
    if (!rules)
        return NULL;
    json_t *holdout = holdout_array(r, NULL);
    json_t *out = json_pack(
        "{s:I, s:I, s:o, s:{s:I, s:I, s:I, s:I, s:I, s:o}, s:I, s:I, s:o, s:{s:I, s:O}, s:o}",
        "from", (json_int_t)r->from, "to", (json_int_t)r->to, "rules", rules, "totals", "eligible",
        (json_int_t)tot_eligible, "delivered", (json_int_t)tot_delivered, "failed",
        (json_int_t)tot_failed, "pending", (json_int_t)tot_pending, "suppressed",
        (json_int_t)tot_dropped, "executed_pct", percent(tot_delivered, tot_eligible), "give",
        (json_int_t)give, "ask", (json_int_t)ask, "give_ask_ratio",
        ask > 0 ? json_real((double)(int64_t)((double)give * 100.0 / (double)ask + 0.5) / 100.0)
                : json_null(),
        "silent", "count", (json_int_t)r->silent, "customers", r->silent_listed, "holdout",
        holdout ? holdout : json_array());
    return out;
}

json_t *cad_report_holdout_json(const cad_report_t *r, const cad_playbook_t *pb)
{
    if (r->failed)
        return NULL;
    json_t *arr = holdout_array(r, pb);
    if (!arr)
        return NULL;
    return json_pack("{s:I, s:I, s:o}", "from", (json_int_t)r->from, "to", (json_int_t)r->to,
                     "rules", arr);
}
