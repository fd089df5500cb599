/*
 * simulate.c — the forecast: the live engine on a virtual clock over a copy.
 *
 * Customers are taken from one calendar in due-time order; each evaluation
 * happens at the customer's due instant (never before the start), exactly as
 * the scheduler would do it, and the chosen touch is marked delivered in the
 * copy at once. Per-rule totals count touches sent, and distinct customers
 * per (rule, verdict, reason), so a suppression that repeats at every
 * re-evaluation is counted once per customer.
 */
#include "simulate.h"

#include "calendar.h"
#include "engine.h"
#include "store.h"
#include "tz.h"
#include "units.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* Evaluations closer together than this are pushed apart, so a misbehaving
 * next-evaluation time can never spin the virtual clock. */
#define CAD_SIMULATE_MIN_STEP 60
#define CAD_SIMULATE_BATCH    2000

typedef struct rule_totals {
    int64_t sent;
    int64_t customers[3][CAD_REASON_COUNT]; /* [suppress final, suppress, defer][reason] */
} rule_totals_t;

/* A set of (customer, rule, kind, reason) seen, for distinct counts. */
typedef struct seen_set {
    uint64_t *slots;
    size_t cap, used;
} seen_set_t;

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x *= UINT64_C(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    return x;
}

/* Inserts v (never 0); returns true when it was new, false when seen or on
 * allocation failure (the count is then merely an undercount). */
static bool seen_insert(seen_set_t *s, uint64_t v)
{
    if ((s->used + 1) * 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        uint64_t *slots = calloc(cap, sizeof(*slots));
        if (!slots)
            return false;
        for (size_t i = 0; i < s->cap; i++) {
            if (!s->slots[i])
                continue;
            size_t j = mix(s->slots[i]) & (cap - 1);
            while (slots[j])
                j = (j + 1) & (cap - 1);
            slots[j] = s->slots[i];
        }
        free(s->slots);
        s->slots = slots;
        s->cap = cap;
    }
    size_t j = mix(v) & (s->cap - 1);
    while (s->slots[j]) {
        if (s->slots[j] == v)
            return false;
        j = (j + 1) & (s->cap - 1);
    }
    s->slots[j] = v;
    s->used++;
    return true;
}

typedef struct sim {
    const cad_config_t *cfg;
    const cad_simulate_options_t *opt;
    cad_store_t *store;
    cad_calendar_t cal;
    cad_snapshot_buf_t buf;
    cad_verdict_t *verdicts;
    rule_totals_t *totals;
    seen_set_t seen;
    FILE *out;
    cad_simulate_result_t result;
    int64_t only_key;
    int claim_rc; /* the first failure recording a claimed touch, 0 if none */
    char claim_err[CAD_ERRBUF];
} sim_t;

static void on_schedule(int64_t key, cad_time_t next_eval, void *arg)
{
    sim_t *sim = arg;
    if (sim->only_key && key != sim->only_key)
        return;
    sim->result.customers++;
    cad_calendar_set(&sim->cal, key, next_eval);
}

static void on_claim(const cad_outbox_touch_t *t, void *arg)
{
    sim_t *sim = arg;
    if (sim->claim_rc < 0)
        return; /* the batch is gone: nothing more is written */
    int rc = cad_store_outbox_delivered(sim->store, t->key, "simulated", t->due_at, sim->claim_err);
    if (rc < 0)
        sim->claim_rc = rc;
}

static void print_touch(sim_t *sim, const cad_snapshot_t *snap, const cad_verdict_t *v,
                        cad_time_t at)
{
    const cad_playbook_t *pb = &sim->cfg->playbook;
    const cad_rule_t *rule = &pb->rules[v->rule];
    const char *channel = v->channel >= 0 ? pb->channels[v->channel].name : "-";
    const char *contact = v->contact >= 0 ? snap->contacts[v->contact].id : "-";
    const char *content = v->content >= 0 ? pb->content[v->content].id : "-";
    char utc[32];
    cad_time_format(at, utc, sizeof(utc));
    cad_local_time_t lt;
    cad_tz_local(snap->customer.tz, at, &lt);
    if (sim->opt->json) {
        json_t *o = json_pack(
            "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "at", utc, "customer", snap->customer.id,
            "rule", rule->name, "purpose", cad_purpose_name(rule->purpose), "channel", channel,
            "contact", contact, "content", content, "timezone", cad_tz_name(snap->customer.tz));
        if (o) {
            char *line = json_dumps(o, JSON_COMPACT);
            if (line)
                fprintf(sim->out, "%s\n", line);
            free(line);
            json_decref(o);
        }
        return;
    }
    fprintf(sim->out, "%s  %04d-%02d-%02d %02d:%02d %-20s %-14s %-20s %-13s %-10s %-20s %s\n", utc,
            lt.year, lt.month, lt.day, lt.hour, lt.minute, cad_tz_name(snap->customer.tz),
            snap->customer.id, rule->name, cad_purpose_name(rule->purpose), channel, contact,
            content);
}

static void count_verdicts(sim_t *sim, const cad_snapshot_t *snap, const cad_decision_t *dec)
{
    for (int i = 0; i < dec->n_verdicts; i++) {
        const cad_verdict_t *v = &dec->verdicts[i];
        int kind;
        if (v->kind == CAD_VERDICT_SEND) {
            sim->totals[v->rule].sent++;
            continue;
        } else if (v->kind == CAD_VERDICT_SUPPRESS) {
            kind = v->final ? 0 : 1;
        } else if (v->kind == CAD_VERDICT_DEFER) {
            kind = 2;
        } else {
            continue;
        }
        uint64_t tag = ((uint64_t)snap->customer.key << 24) | ((uint64_t)v->rule << 10) |
                       ((uint64_t)kind << 8) | (uint64_t)v->reason;
        if (seen_insert(&sim->seen, tag + 1))
            sim->totals[v->rule].customers[kind][v->reason]++;
    }
}

/* Evaluates one customer at `at` inside the open batch. */
static int step(sim_t *sim, int64_t key, cad_time_t at, char *err)
{
    const cad_playbook_t *pb = &sim->cfg->playbook;
    cad_snapshot_t snap;
    int rc = cad_store_load_snapshot(sim->store, pb, key, &sim->buf, &snap, err);
    if (rc == -CAD_ENOTFOUND)
        return 0;
    if (rc < 0)
        return rc;
    cad_decision_t dec = {.verdicts = sim->verdicts};
    rc = cad_engine_decide(pb, &snap, at, &dec);
    if (rc < 0)
        return cad_fail(err, CAD_EINVAL, "customer %s does not fit the playbook", snap.customer.id);
    rc = cad_store_record_decision(sim->store, pb, &snap, &dec, at, err);
    if (rc < 0)
        return rc;
    sim->result.evaluations++;
    count_verdicts(sim, &snap, &dec);
    if (dec.chosen >= 0) {
        sim->result.touches++;
        if (!sim->opt->quiet)
            print_touch(sim, &snap, &dec.verdicts[dec.chosen], at);
        rc = cad_store_outbox_claim(sim->store, at, 16, on_claim, sim, err);
        if (rc < 0)
            return rc;
        if (sim->claim_rc < 0)
            return cad_fail(err, -sim->claim_rc, "%s", sim->claim_err);
    }
    if (dec.next_eval != CAD_TIME_NEVER) {
        cad_time_t next = dec.next_eval;
        if (next < at + CAD_SIMULATE_MIN_STEP)
            next = at + CAD_SIMULATE_MIN_STEP;
        cad_calendar_set(&sim->cal, key, next);
    }
    return 0;
}

static void print_totals(sim_t *sim)
{
    const cad_playbook_t *pb = &sim->cfg->playbook;
    static const char *const kinds[3] = {"dropped", "suppressed", "deferred"};
    char from[32], to[32];
    cad_time_format(sim->opt->start, from, sizeof(from));
    cad_time_format(sim->opt->start + (int64_t)sim->opt->days * CAD_DAY, to, sizeof(to));
    if (sim->opt->json) {
        json_t *rules = json_array();
        for (int r = 0; r < pb->n_rules; r++) {
            json_t *o = json_pack("{s:s, s:I}", "rule", pb->rules[r].name, "sent",
                                  (json_int_t)sim->totals[r].sent);
            for (int k = 0; k < 3; k++) {
                json_t *reasons = json_object();
                for (int why = 0; why < CAD_REASON_COUNT; why++)
                    if (sim->totals[r].customers[k][why])
                        json_object_set_new(reasons, cad_reason_name(why),
                                            json_integer(sim->totals[r].customers[k][why]));
                json_object_set_new(o, kinds[k], reasons);
            }
            json_array_append_new(rules, o);
        }
        json_t *all = json_pack("{s:{s:s, s:s, s:I, s:I, s:I, s:o}}", "totals", "from", from, "to",
                                to, "customers", (json_int_t)sim->result.customers, "evaluations",
                                (json_int_t)sim->result.evaluations, "touches",
                                (json_int_t)sim->result.touches, "rules", rules);
        char *line = all ? json_dumps(all, JSON_COMPACT) : NULL;
        if (line)
            fprintf(sim->out, "%s\n", line);
        free(line);
        json_decref(all);
        return;
    }
    fprintf(sim->out,
            "\nForecast %s .. %s: %lld customers, %lld evaluations, %lld touches\n"
            "%-22s %6s  %s\n",
            from, to, (long long)sim->result.customers, (long long)sim->result.evaluations,
            (long long)sim->result.touches, "rule", "sent",
            "customers dropped / suppressed / deferred, by reason");
    for (int r = 0; r < pb->n_rules; r++) {
        fprintf(sim->out, "%-22s %6lld ", pb->rules[r].name, (long long)sim->totals[r].sent);
        bool any = false;
        for (int k = 0; k < 3; k++)
            for (int why = 0; why < CAD_REASON_COUNT; why++)
                if (sim->totals[r].customers[k][why]) {
                    fprintf(sim->out, " %s:%s=%lld", kinds[k], cad_reason_name(why),
                            (long long)sim->totals[r].customers[k][why]);
                    any = true;
                }
        fprintf(sim->out, "%s\n", any ? "" : "  -");
    }
}

int cad_simulate_run(const cad_config_t *cfg, const cad_simulate_options_t *opt, FILE *out,
                     cad_simulate_result_t *result, char *err)
{
    if (opt->days < 1 || opt->days > 3650)
        return cad_fail(err, CAD_EINVAL, "simulate: days must be 1..3650, not %d", opt->days);
    sim_t sim = {.cfg = cfg, .opt = opt, .out = out};
    cad_calendar_init(&sim.cal);
    int n_rules = cfg->playbook.n_rules > 0 ? cfg->playbook.n_rules : 1;
    sim.verdicts = calloc((size_t)n_rules, sizeof(*sim.verdicts));
    sim.totals = calloc((size_t)n_rules, sizeof(*sim.totals));
    int rc = 0;
    if (!sim.verdicts || !sim.totals) {
        rc = cad_fail(err, CAD_ENOMEM, "simulate: out of memory");
        goto done;
    }
    rc = cad_store_open_copy(opt->db_path, &sim.store, err);
    if (rc < 0)
        goto done;
    cad_store_set_traces(sim.store, false);
    if (opt->customer_id) {
        rc = cad_store_customer_key(sim.store, opt->customer_id, &sim.only_key, err);
        if (rc < 0)
            goto done;
    }
    rc = cad_store_schedule_foreach(sim.store, on_schedule, &sim, err);
    if (rc < 0)
        goto done;
    rc = 0;

    cad_time_t end = opt->start + (int64_t)opt->days * CAD_DAY;
    cad_calendar_entry_t e;
    int in_batch = 0;
    while (cad_calendar_pop_due(&sim.cal, end, &e)) {
        if (in_batch == 0 && (rc = cad_store_batch_begin(sim.store, err)) < 0)
            goto done;
        cad_time_t at = e.when < opt->start ? opt->start : e.when;
        rc = step(&sim, e.key, at, err);
        if (rc < 0) {
            cad_store_batch_rollback(sim.store);
            goto done;
        }
        if (++in_batch == CAD_SIMULATE_BATCH) {
            if ((rc = cad_store_batch_commit(sim.store, err)) < 0)
                goto done;
            in_batch = 0;
        }
    }
    if (in_batch && (rc = cad_store_batch_commit(sim.store, err)) < 0)
        goto done;
    print_totals(&sim);
    if (result)
        *result = sim.result;
done:
    cad_store_close(sim.store);
    cad_calendar_free(&sim.cal);
    cad_snapshot_buf_free(&sim.buf);
    free(sim.seen.slots);
    free(sim.verdicts);
    free(sim.totals);
    return rc;
}
