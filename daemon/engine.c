/*
 * engine.c — the decision engine (see engine.h and docs/engine.md).
 *
 * Design: one pass over the customer's history gathers what every rule needs
 * (last touch, sent content, thank-yous this year, asks and thank-yous
 * today, open suppressing events) into a small context on the stack. Then
 * each rule runs the same pipeline of checks in a fixed order — stage (R1),
 * trigger and window (R2, R13, R6 silence, recurring periods), expiry (R11),
 * pause and suppressing events (R14), recipient and channel (R8, R10),
 * content (R6, R7), thank-you cap (R4), value before ask (R3), same-day rule
 * (R4), holdout, then timing: gap and caps (R5), quiet hours, weekdays and
 * channel windows (R10, R11) — and the first check that refuses decides the
 * verdict. Rules that could send now compete by purpose priority, then rule
 * order; the losers are deferred, not lost. The customer's next evaluation
 * is the earliest instant at which any verdict could change.
 *
 * Pure: no I/O, no clock, no globals, no allocation. Times are UTC seconds;
 * local-time questions go through tz.h with the customer's zone.
 */
#include "engine.h"

#include "tz.h"
#include "units.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define YEAR_SECONDS      (365 * CAD_DAY)
#define SENT_BITMAP_WORDS 16 /* content indexes below 1024 use the bitmap */
#define NO_TIME           INT64_MIN

typedef struct eval_ctx {
    const cad_playbook_t *pb;
    const cad_snapshot_t *snap;
    const cad_policy_t *pol;
    const cad_tz_t *tz;
    cad_time_t now;
    int64_t today;                /* local day number of now */
    cad_time_t last_touch;        /* latest counted touch, NO_TIME if none */
    cad_time_t last_conversation; /* latest counted non-transactional touch (R6 silence) */
    uint32_t appreciation_year;   /* counted thank-yous in (now - 365d, now] */
    bool appreciation_today;      /* a counted thank-you on today's local date */
    bool ask_today;               /* a counted ask on today's local date */
    uint64_t open_events;         /* event types open (no later resolving event) */
    uint64_t sent_content[SENT_BITMAP_WORDS];
    cad_time_t wake; /* earliest future instant at which something changes */
} eval_ctx_t;

/* A touch counts (gaps, caps, balances) when it reached or is about to reach
 * the customer; failed and dropped ones never did. */
static bool counted(const cad_history_t *h)
{
    return h->state == CAD_TOUCH_PENDING || h->state == CAD_TOUCH_DELIVERED;
}

static void wake_at(eval_ctx_t *c, cad_time_t t)
{
    if (t > c->now && t < c->wake)
        c->wake = t;
}

static int popcount64(uint64_t x)
{
    return __builtin_popcountll(x);
}

static uint64_t fnv1a(uint64_t h, const char *s)
{
    for (; s && *s; s++) {
        h ^= (unsigned char)*s;
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Deterministic per (customer, rule) hash: holdout and jitter. */
static uint64_t customer_rule_hash(const eval_ctx_t *c, int r, uint64_t salt)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    h = fnv1a(h, c->snap->customer.id);
    h ^= 0x2f;
    h *= UINT64_C(0x100000001b3);
    h = fnv1a(h, c->pb->rules[r].name);
    return mix64(h ^ salt);
}

static bool history_has(const eval_ctx_t *c, int r, int64_t key)
{
    const cad_snapshot_t *s = c->snap;
    for (int i = 0; i < s->n_history; i++)
        if (s->history[i].rule == r && s->history[i].trigger_key == key)
            return true;
    return false;
}

static bool content_sent(const eval_ctx_t *c, int idx)
{
    if (idx < SENT_BITMAP_WORDS * 64)
        return (c->sent_content[idx / 64] >> (idx % 64)) & 1;
    const cad_snapshot_t *s = c->snap;
    for (int i = 0; i < s->n_history; i++)
        if (s->history[i].content == idx && counted(&s->history[i]))
            return true;
    return false;
}

static int64_t local_day(const cad_tz_t *tz, cad_time_t t)
{
    cad_local_time_t lt;
    cad_tz_local(tz, t, &lt);
    return lt.day_number;
}

/* The first instant of the next local day. */
static cad_time_t next_local_midnight(const eval_ctx_t *c)
{
    cad_local_time_t lt;
    cad_tz_local(c->tz, c->now, &lt);
    cad_time_t t = cad_tz_from_local(c->tz, lt.year, lt.month, lt.day, 0, 0);
    /* local days last 23 to 25 hours: 26 hours after today's midnight is
     * always tomorrow, whose midnight is the answer (month ends included) */
    cad_time_t guess = t + CAD_DAY + 2 * CAD_HOUR;
    cad_tz_local(c->tz, guess, &lt);
    return cad_tz_from_local(c->tz, lt.year, lt.month, lt.day, 0, 0);
}

static void context_init(eval_ctx_t *c, const cad_playbook_t *pb, const cad_snapshot_t *s,
                         cad_time_t now)
{
    memset(c, 0, sizeof(*c));
    c->pb = pb;
    c->snap = s;
    c->pol = &pb->policies[s->customer.policy];
    c->tz = s->customer.tz;
    c->now = now;
    c->wake = CAD_TIME_NEVER;
    c->last_touch = NO_TIME;
    c->last_conversation = NO_TIME;
    c->today = local_day(c->tz, now);
    cad_time_t recent = now - 2 * CAD_DAY; /* only these can share today's local date */
    for (int i = 0; i < s->n_history; i++) {
        const cad_history_t *h = &s->history[i];
        if (!counted(h))
            continue;
        if (h->at > c->last_touch)
            c->last_touch = h->at;
        if (h->purpose != CAD_PURPOSE_TRANSACTIONAL && h->at > c->last_conversation)
            c->last_conversation = h->at;
        if (h->content >= 0 && h->content < SENT_BITMAP_WORDS * 64)
            c->sent_content[h->content / 64] |= UINT64_C(1) << (h->content % 64);
        if (h->purpose == CAD_PURPOSE_APPRECIATION && h->at > now - YEAR_SECONDS && h->at <= now)
            c->appreciation_year++;
        if (h->at > recent && h->at <= now + CAD_DAY &&
            (h->purpose == CAD_PURPOSE_APPRECIATION || h->purpose == CAD_PURPOSE_ASK) &&
            local_day(c->tz, h->at) == c->today) {
            if (h->purpose == CAD_PURPOSE_APPRECIATION)
                c->appreciation_today = true;
            else
                c->ask_today = true;
        }
    }
    /* Open events: newest first, an event type is open when its newest event
     * has no later event of the type that resolves it. */
    uint64_t seen_later = 0, decided = 0;
    for (int i = s->n_events - 1; i >= 0; i--) {
        int t = s->events[i].type;
        if (t >= 64)
            continue;
        uint64_t bit = UINT64_C(1) << t;
        if (!(decided & bit)) {
            decided |= bit;
            int by = pb->event_types[t].resolved_by;
            if (by < 0 || by >= 64 || !(seen_later & (UINT64_C(1) << by)))
                c->open_events |= bit;
        }
        seen_later |= bit;
    }
}

/* Counted touches in (from, now]: all of them, the give ones and the asks,
 * and the time of the oldest ask (CAD_TIME_NEVER when none). */
static void count_window(const eval_ctx_t *c, cad_time_t from, uint32_t *give, uint32_t *asks,
                         uint32_t *all, cad_time_t *oldest_ask)
{
    *give = *asks = *all = 0;
    *oldest_ask = CAD_TIME_NEVER;
    const cad_snapshot_t *s = c->snap;
    for (int i = 0; i < s->n_history; i++) {
        const cad_history_t *h = &s->history[i];
        if (!counted(h) || h->at <= from || h->at > c->now)
            continue;
        (*all)++;
        if (cad_purpose_is_give(h->purpose))
            (*give)++;
        if (h->purpose == CAD_PURPOSE_ASK) {
            (*asks)++;
            if (h->at < *oldest_ask)
                *oldest_ask = h->at;
        }
    }
}

/* When the caps that apply to `channel` all allow one more touch: now when
 * none is full, else the instant the last full one frees (no new touches
 * assumed), CAD_TIME_NEVER for a zero cap. */
static cad_time_t caps_free_at(const eval_ctx_t *c, int channel)
{
    const cad_snapshot_t *s = c->snap;
    cad_time_t free_at = c->now;
    for (int k = 0; k < c->pol->n_caps; k++) {
        const cad_cap_t *cap = &c->pol->caps[k];
        if (cap->channel != -1 && cap->channel != channel)
            continue;
        if (cap->count == 0)
            return CAD_TIME_NEVER;
        cad_time_t from = c->now - cap->window;
        uint32_t n = 0;
        for (int i = 0; i < s->n_history; i++) {
            const cad_history_t *h = &s->history[i];
            if (counted(h) && h->at > from && h->at <= c->now &&
                (cap->channel == -1 || h->channel == cap->channel))
                n++;
        }
        if (n < cap->count)
            continue;
        /* rows in the window, oldest first: the (n - count)-th must leave */
        uint32_t skip = n - cap->count, seen = 0;
        for (int i = 0; i < s->n_history; i++) {
            const cad_history_t *h = &s->history[i];
            if (counted(h) && h->at > from && h->at <= c->now &&
                (cap->channel == -1 || h->channel == cap->channel)) {
                if (seen++ == skip) {
                    if (h->at + cap->window > free_at)
                        free_at = h->at + cap->window;
                    break;
                }
            }
        }
    }
    return free_at;
}

static uint8_t policy_weekdays(const cad_policy_t *p)
{
    return p->weekdays & 0x7f ? p->weekdays & 0x7f : 0x7f; /* 0 = no restriction */
}

/* The first instant >= t allowed by quiet hours and weekdays (unless the rule
 * bypasses them) and by the channel's own send window (always). */
static cad_time_t hours_allowed(const eval_ctx_t *c, const cad_rule_t *rule, int channel,
                                cad_time_t t)
{
    const cad_channel_t *ch = &c->pb->channels[channel];
    for (int i = 0; i < 8 && t != CAD_TIME_NEVER; i++) {
        cad_time_t t1 = t;
        if (!rule->bypass_quiet_hours)
            t1 = cad_tz_next_allowed(c->tz, t, c->pol->quiet_end, c->pol->quiet_start,
                                     policy_weekdays(c->pol));
        cad_time_t t2 = t1;
        if (t1 != CAD_TIME_NEVER && ch->window_start != ch->window_end)
            t2 = cad_tz_next_allowed(c->tz, t1, ch->window_start, ch->window_end, 0x7f);
        if (t2 == t1)
            return t1;
        t = t2;
    }
    /* quiet hours and the channel window never overlap: never allowed */
    return CAD_TIME_NEVER;
}

static void set_defer(eval_ctx_t *c, cad_verdict_t *v, enum cad_reason reason, cad_time_t until)
{
    if (until > v->expires_at) {
        v->kind = CAD_VERDICT_SUPPRESS;
        v->reason = CAD_REASON_EXPIRED;
        v->final = true;
        v->until = until;
        return;
    }
    v->kind = CAD_VERDICT_DEFER;
    v->reason = reason;
    v->final = false;
    v->until = until;
    wake_at(c, until);
}

static void set_suppress(eval_ctx_t *c, cad_verdict_t *v, enum cad_reason reason, bool final)
{
    v->kind = CAD_VERDICT_SUPPRESS;
    v->reason = reason;
    v->final = final;
    /* A held touch becomes stale at its expiry: wake then to record the drop. */
    if (!final && v->expires_at != CAD_TIME_NEVER)
        wake_at(c, v->expires_at + 1);
}

static void set_wait(eval_ctx_t *c, cad_verdict_t *v, enum cad_reason reason, cad_time_t until)
{
    v->kind = CAD_VERDICT_WAIT;
    v->reason = reason;
    v->until = until;
    wake_at(c, until);
}

/* R6: silence runs from the last conversation (any counted touch but a
 * transactional one: an invoice keeps no one's attention) or from creation. */
static cad_time_t silence_base(const eval_ctx_t *c)
{
    cad_time_t base = c->snap->customer.created_at;
    if (c->last_conversation != NO_TIME && c->last_conversation > base)
        base = c->last_conversation;
    return base;
}

/* R9: the newest feedback_received at or before `at`, or -1. */
static int feedback_before(const eval_ctx_t *c, cad_time_t at)
{
    int found = -1;
    for (int i = 0; i < c->snap->n_events; i++)
        if (c->snap->events[i].type == CAD_EVENT_FEEDBACK_RECEIVED && c->snap->events[i].at <= at)
            found = i;
    return found;
}

/* R9: has rule r sent (pending or delivered) anything since `at`? */
static bool rule_sent_since(const eval_ctx_t *c, int r, cad_time_t at)
{
    for (int i = 0; i < c->snap->n_history; i++) {
        const cad_history_t *h = &c->snap->history[i];
        if (h->rule == r && counted(h) && h->at >= at)
            return true;
    }
    return false;
}

/* Trigger, window and expiry. Returns false when the verdict is settled. */
static bool decide_trigger(eval_ctx_t *c, int r, cad_verdict_t *v)
{
    const cad_rule_t *rule = &c->pb->rules[r];
    const cad_snapshot_t *s = c->snap;
    switch (rule->trigger) {
    case CAD_TRIGGER_EVENT: {
        int newest = -1, trigger = -1;
        for (int i = s->n_events - 1; i >= 0; i--) {
            if (s->events[i].type != rule->event_type)
                continue;
            if (newest < 0)
                newest = i;
            if (!history_has(c, r, s->events[i].key)) {
                trigger = i;
                break;
            }
        }
        if (newest < 0) {
            v->reason = CAD_REASON_NO_TRIGGER;
            return false;
        }
        if (trigger < 0) {
            v->event = newest;
            v->trigger_key = s->events[newest].key;
            v->reason = CAD_REASON_ALREADY_DONE;
            return false;
        }
        const cad_event_t *e = &s->events[trigger];
        v->event = trigger;
        v->trigger_key = e->key;
        /* R2 closes the window at at + expires; a shorter `expiry` (R11)
         * counted from the window's opening ends the touch sooner */
        v->expires_at = e->at + rule->expires;
        if (rule->touch_expiry > 0 && e->at + rule->after + rule->touch_expiry < v->expires_at)
            v->expires_at = e->at + rule->after + rule->touch_expiry;
        if (c->now < e->at + rule->after) {
            set_wait(c, v, CAD_REASON_NOT_YET, e->at + rule->after);
            return false;
        }
        if (c->now > e->at + rule->expires) {
            set_suppress(c, v, CAD_REASON_STALE, true);
            return false;
        }
        if (c->now > v->expires_at) {
            set_suppress(c, v, CAD_REASON_EXPIRED, true);
            return false;
        }
        if (rule->sla > 0) {
            int fb = feedback_before(c, e->at);
            if (fb >= 0 && rule_sent_since(c, r, s->events[fb].at)) {
                v->reason = CAD_REASON_LOOP_CLOSED;
                return false;
            }
        }
        return true;
    }
    case CAD_TRIGGER_RECURRING: {
        if (rule->every <= 0) {
            v->reason = CAD_REASON_NO_TRIGGER;
            return false;
        }
        cad_time_t created = s->customer.created_at;
        if (c->now < created + rule->every) {
            set_wait(c, v, CAD_REASON_NOT_YET, created + rule->every);
            return false;
        }
        int64_t period = (c->now - created) / rule->every;
        cad_time_t start = created + period * rule->every;
        v->trigger_key = period;
        if (history_has(c, r, period)) {
            v->reason = CAD_REASON_ALREADY_DONE;
            v->until = start + rule->every;
            wake_at(c, start + rule->every);
            return false;
        }
        cad_time_t last = NO_TIME;
        for (int i = 0; i < s->n_history; i++)
            if (s->history[i].rule == r && counted(&s->history[i]) && s->history[i].at > last)
                last = s->history[i].at;
        cad_time_t due = start;
        if (last != NO_TIME && last + rule->every > due)
            due = last + rule->every;
        v->expires_at = rule->touch_expiry > 0 ? due + rule->touch_expiry : start + rule->every;
        if (last == NO_TIME && c->now > v->expires_at) {
            /* Never sent to this customer and the period's moment has
             * passed (a customer imported mid-period): nothing was missed,
             * the first touch goes at the next period. With history, a
             * missed period is an outage's late touch: dropped below. */
            set_wait(c, v, CAD_REASON_NOT_YET, start + rule->every);
            return false;
        }
        if (c->now < due) {
            set_wait(c, v, CAD_REASON_NOT_YET, due);
            return false;
        }
        break;
    }
    case CAD_TRIGGER_SILENCE: {
        const cad_policy_t *p = c->pol;
        if (p->max_silence <= 0) {
            v->reason = CAD_REASON_NO_TRIGGER;
            return false;
        }
        cad_time_t base = silence_base(c);
        cad_time_t due = base + p->max_silence - p->silence_lead;
        v->trigger_key = local_day(c->tz, due);
        /* a top-of-mind touch ends a silence: late is better than never */
        v->expires_at = CAD_TIME_NEVER;
        if (c->now < due) {
            set_wait(c, v, CAD_REASON_NOT_SILENT, due);
            return false;
        }
        if (history_has(c, r, v->trigger_key)) {
            v->reason = CAD_REASON_ALREADY_DONE;
            return false;
        }
        break;
    }
    default: v->reason = CAD_REASON_NO_TRIGGER; return false;
    }
    if (c->now > v->expires_at) {
        set_suppress(c, v, CAD_REASON_EXPIRED, true);
        return false;
    }
    return true;
}

static bool content_compatible(enum cad_purpose rule, enum cad_purpose content)
{
    return rule == content || (cad_purpose_is_give(rule) && cad_purpose_is_give(content));
}

/* R6/R7: the best unsent content for the rule. Returns false when the
 * verdict is settled (content gap or low relevance). */
static bool decide_content(eval_ctx_t *c, int r, cad_verdict_t *v, uint32_t *alerts)
{
    const cad_rule_t *rule = &c->pb->rules[r];
    const cad_customer_t *cu = &c->snap->customer;
    int best = -1;
    double best_rel = -1.0;
    for (int i = 0; i < c->pb->n_content; i++) {
        const cad_content_t *it = &c->pb->content[i];
        if (!content_compatible(rule->purpose, it->purpose))
            continue;
        if (it->stages && !(it->stages & (1u << cu->stage)))
            continue;
        if (rule->topics && !(it->topics & rule->topics))
            continue;
        if (content_sent(c, i))
            continue;
        if (it->valid_from > c->now) {
            wake_at(c, it->valid_from);
            continue;
        }
        if (it->valid_until != CAD_TIME_NEVER && c->now >= it->valid_until)
            continue;
        int n = popcount64(it->topics);
        double rel = n ? (double)popcount64(it->topics & cu->interests) / n : 0.0;
        if (rel > best_rel) {
            best_rel = rel;
            best = i;
        }
    }
    if (best < 0) {
        *alerts |= CAD_ALERT_CONTENT_GAP;
        set_suppress(c, v, CAD_REASON_CONTENT_GAP, false);
        return false;
    }
    v->relevance = best_rel;
    if (best_rel < c->pol->min_relevance) {
        *alerts |= CAD_ALERT_CONTENT_GAP;
        set_suppress(c, v, CAD_REASON_LOW_RELEVANCE, false);
        return false;
    }
    v->content = best;
    return true;
}

/* R3 deferrals wait for other touches, not for a known instant: re-check
 * at `recheck` but no later than the touch's expiry, so that a give touch
 * sent meanwhile still lets the ask go; only at its expiry is it dropped. */
static cad_time_t soft_recheck(const eval_ctx_t *c, const cad_verdict_t *v, cad_time_t recheck)
{
    if (recheck > v->expires_at && v->expires_at > c->now)
        return v->expires_at;
    return recheck;
}

/* R3: value before ask, and the share of asks. */
static bool decide_value_first(eval_ctx_t *c, int r, cad_verdict_t *v)
{
    const cad_rule_t *rule = &c->pb->rules[r];
    const cad_policy_t *p = c->pol;
    if (rule->purpose != CAD_PURPOSE_ASK || !p->has_ask_balance)
        return true;
    cad_time_t recheck = c->now + (p->min_gap > CAD_DAY ? p->min_gap : CAD_DAY);
    uint32_t need = rule->requires_value_count ? rule->requires_value_count : p->ask_min_value;
    int64_t within = rule->requires_value_within ? rule->requires_value_within : p->ask_window;
    uint32_t give, asks, all;
    cad_time_t oldest_ask;
    count_window(c, c->now - within, &give, &asks, &all, &oldest_ask);
    if (give < need) {
        set_defer(c, v, CAD_REASON_VALUE_FIRST, soft_recheck(c, v, recheck));
        return false;
    }
    if (p->ask_max_share > 0.0 && p->ask_window > 0) {
        count_window(c, c->now - p->ask_window, &give, &asks, &all, &oldest_ask);
        if ((double)(asks + 1) > p->ask_max_share * (double)(all + 1) + 1e-9) {
            cad_time_t until =
                asks && oldest_ask + p->ask_window > c->now ? oldest_ask + p->ask_window : recheck;
            set_defer(c, v, CAD_REASON_ASK_SHARE, soft_recheck(c, v, until));
            return false;
        }
    }
    return true;
}

/* R8 + R10 + R5 + R11: pick the channel and contact, or defer. */
static void decide_timing(eval_ctx_t *c, int r, cad_verdict_t *v)
{
    const cad_rule_t *rule = &c->pb->rules[r];
    const cad_snapshot_t *s = c->snap;
    const cad_policy_t *p = c->pol;
    cad_time_t best_until = CAD_TIME_NEVER;
    enum cad_reason best_reason = CAD_REASON_NONE;
    int best_ch = -1, best_contact = -1;
    bool hours_moved_best = false;
    for (int k = 0; k < rule->n_channels; k++) {
        int ch = rule->channels[k];
        int contact = -1;
        for (int i = 0; i < s->n_contacts; i++)
            if ((s->contacts[i].roles & rule->roles) && ((s->contacts[i].reachable >> ch) & 1)) {
                contact = i;
                break;
            }
        if (contact < 0)
            continue;
        cad_time_t t = c->now;
        enum cad_reason reason = CAD_REASON_NONE;
        if (!rule->bypass_caps) {
            if (c->last_touch != NO_TIME && p->min_gap > 0 && c->last_touch + p->min_gap > t) {
                t = c->last_touch + p->min_gap;
                reason = CAD_REASON_MIN_GAP;
            }
            cad_time_t cap = caps_free_at(c, ch);
            if (cap > t) {
                t = cap;
                if (reason == CAD_REASON_NONE)
                    reason = CAD_REASON_CHANNEL_CAP;
            }
        }
        bool hours_moved = false;
        if (t != CAD_TIME_NEVER) {
            cad_time_t h = hours_allowed(c, rule, ch, t);
            if (h > t) {
                if (reason == CAD_REASON_NONE) {
                    cad_local_time_t lt;
                    cad_tz_local(c->tz, t, &lt);
                    bool day_ok =
                        rule->bypass_quiet_hours || ((policy_weekdays(p) >> lt.weekday) & 1);
                    reason = day_ok ? CAD_REASON_QUIET_HOURS : CAD_REASON_WEEKDAY;
                }
                t = h;
                hours_moved = true;
            }
        }
        if (t == c->now) {
            v->kind = CAD_VERDICT_SEND;
            v->reason = CAD_REASON_DUE;
            v->channel = ch;
            v->contact = contact;
            return;
        }
        if (best_ch < 0 || t < best_until) {
            best_until = t;
            best_reason = reason;
            best_ch = ch;
            best_contact = contact;
            hours_moved_best = hours_moved;
        }
    }
    /* decide_recipient() guaranteed a reachable channel */
    v->channel = best_ch;
    v->contact = best_contact;
    if (hours_moved_best && p->jitter > 0 && best_until != CAD_TIME_NEVER) {
        /* R11: spread a morning rush, reproducibly; stay inside the window */
        cad_time_t j = (cad_time_t)(customer_rule_hash(c, r, 0x6a) % (uint64_t)p->jitter);
        if (hours_allowed(c, rule, best_ch, best_until + j) == best_until + j)
            best_until += j;
    }
    set_defer(c, v, best_reason, best_until);
}

/* R8 + R10: some contact with the rule's roles reachable on some channel. */
static bool decide_recipient(eval_ctx_t *c, int r, cad_verdict_t *v)
{
    const cad_rule_t *rule = &c->pb->rules[r];
    const cad_snapshot_t *s = c->snap;
    uint32_t reach = 0;
    bool role = false;
    for (int i = 0; i < s->n_contacts; i++)
        if (s->contacts[i].roles & rule->roles) {
            role = true;
            reach |= s->contacts[i].reachable;
        }
    if (!role) {
        set_suppress(c, v, CAD_REASON_NO_CONTACT_ROLE, false);
        return false;
    }
    for (int k = 0; k < rule->n_channels; k++)
        if ((reach >> rule->channels[k]) & 1)
            return true;
    set_suppress(c, v, CAD_REASON_NO_CONSENT, false);
    return false;
}

static void decide_rule(eval_ctx_t *c, int r, cad_verdict_t *v, uint32_t *alerts)
{
    const cad_rule_t *rule = &c->pb->rules[r];
    const cad_customer_t *cu = &c->snap->customer;
    *v = (cad_verdict_t){.rule = r,
                         .kind = CAD_VERDICT_SKIP,
                         .reason = CAD_REASON_NONE,
                         .event = -1,
                         .contact = -1,
                         .channel = -1,
                         .content = -1,
                         .expires_at = CAD_TIME_NEVER};
    /* R1 */
    if (!(rule->stages & (1u << cu->stage)) ||
        (rule->trigger == CAD_TRIGGER_SILENCE && cu->stage != CAD_STAGE_ONBOARDING &&
         cu->stage != CAD_STAGE_ACTIVE)) {
        v->reason = CAD_REASON_STAGE;
        return;
    }
    /* R2, R13, R6, R9 */
    if (!decide_trigger(c, r, v))
        return;
    /* R14 */
    if (cu->paused) {
        set_suppress(c, v, CAD_REASON_PAUSED, false);
        return;
    }
    if (rule->suppress_while & c->open_events) {
        set_suppress(c, v, CAD_REASON_SUPPRESSED_BY_EVENT, false);
        return;
    }
    /* R8, R10 */
    if (!decide_recipient(c, r, v))
        return;
    /* R6, R7 */
    if (rule->use_library && !decide_content(c, r, v, alerts))
        return;
    /* R4: thank-yous per rolling year */
    if (rule->purpose == CAD_PURPOSE_APPRECIATION &&
        c->appreciation_year >= c->pol->appreciation_per_year) {
        set_suppress(c, v, CAD_REASON_APPRECIATION_CAP, true);
        return;
    }
    /* R3 */
    if (!decide_value_first(c, r, v))
        return;
    /* R4: never a thank-you and an ask on the same local day */
    if ((rule->purpose == CAD_PURPOSE_ASK && c->appreciation_today) ||
        (rule->purpose == CAD_PURPOSE_APPRECIATION && c->ask_today)) {
        set_defer(c, v, CAD_REASON_SAME_DAY_ASK, next_local_midnight(c));
        return;
    }
    /* holdout group: measured, never sent */
    if (rule->holdout_permille > 0 &&
        customer_rule_hash(c, r, 0x68) % 1000 < rule->holdout_permille) {
        set_suppress(c, v, CAD_REASON_HELD_OUT, true);
        return;
    }
    /* R5, R10, R11 */
    decide_timing(c, r, v);
}

/* Several touches could go now: the first by purpose, then rule order, wins. */
static int choose(eval_ctx_t *c, cad_decision_t *out)
{
    int chosen = -1;
    for (int i = 0; i < out->n_verdicts; i++) {
        const cad_verdict_t *v = &out->verdicts[i];
        if (v->kind != CAD_VERDICT_SEND)
            continue;
        if (chosen < 0 ||
            c->pb->rules[v->rule].purpose < c->pb->rules[out->verdicts[chosen].rule].purpose)
            chosen = i;
    }
    if (chosen < 0)
        return -1;
    enum cad_purpose win = c->pb->rules[out->verdicts[chosen].rule].purpose;
    cad_time_t midnight = CAD_TIME_NEVER;
    for (int i = 0; i < out->n_verdicts; i++) {
        cad_verdict_t *v = &out->verdicts[i];
        if (i == chosen || v->kind != CAD_VERDICT_SEND)
            continue;
        const cad_rule_t *rule = &c->pb->rules[v->rule];
        cad_time_t until = c->now + (rule->bypass_caps     ? CAD_MINUTE
                                     : c->pol->min_gap > 0 ? c->pol->min_gap
                                                           : CAD_MINUTE);
        enum cad_reason reason = CAD_REASON_LOST_PRIORITY;
        if ((win == CAD_PURPOSE_APPRECIATION && rule->purpose == CAD_PURPOSE_ASK) ||
            (win == CAD_PURPOSE_ASK && rule->purpose == CAD_PURPOSE_APPRECIATION)) {
            if (midnight == CAD_TIME_NEVER)
                midnight = next_local_midnight(c);
            if (midnight > until)
                until = midnight;
            reason = CAD_REASON_SAME_DAY_ASK;
        }
        set_defer(c, v, reason, until);
    }
    return chosen;
}

/* R9: feedback received with no follow-up since, past the rule's SLA. The
 * touch chosen now (rule `chosen_rule`, or -1) counts as sent. */
static void check_loops(eval_ctx_t *c, int chosen_rule, uint32_t *alerts)
{
    const cad_snapshot_t *s = c->snap;
    for (int r = 0; r < c->pb->n_rules; r++) {
        const cad_rule_t *rule = &c->pb->rules[r];
        if (rule->sla <= 0 || r == chosen_rule)
            continue;
        for (int i = 0; i < s->n_events; i++) {
            const cad_event_t *e = &s->events[i];
            if (e->type != CAD_EVENT_FEEDBACK_RECEIVED || rule_sent_since(c, r, e->at))
                continue;
            if (c->now > e->at + rule->sla)
                *alerts |= CAD_ALERT_LOOP_OVERDUE;
            else
                wake_at(c, e->at + rule->sla + 1);
        }
    }
}

int cad_engine_check(const cad_playbook_t *pb, const cad_snapshot_t *snap, char *err)
{
    if (!pb || !snap)
        return cad_fail(err, CAD_EINVAL, "engine: no playbook or no snapshot");
    const cad_customer_t *cu = &snap->customer;
    const char *id = cu->id ? cu->id : "(no id)";
    if (pb->n_policies < 1 || !pb->policies)
        return cad_fail(err, CAD_EINVAL, "engine: the playbook has no policy");
    if (pb->n_rules < 0 || (pb->n_rules > 0 && !pb->rules))
        return cad_fail(err, CAD_EINVAL, "engine: the playbook's rules are missing");
    if (pb->n_channels < 0 || pb->n_channels > CAD_MAX_CHANNELS)
        return cad_fail(err, CAD_EINVAL, "engine: %d channels (at most %d)", pb->n_channels,
                        CAD_MAX_CHANNELS);
    for (int r = 0; r < pb->n_rules; r++) {
        const cad_rule_t *rule = &pb->rules[r];
        if ((unsigned)rule->purpose >= CAD_PURPOSE_COUNT)
            return cad_fail(err, CAD_EINVAL, "engine: rule %s has an unknown purpose", rule->name);
        if (rule->n_channels < 0 || rule->n_channels > CAD_MAX_CHANNELS)
            return cad_fail(err, CAD_EINVAL, "engine: rule %s lists %d channels", rule->name,
                            rule->n_channels);
        for (int k = 0; k < rule->n_channels; k++)
            if (rule->channels[k] >= pb->n_channels)
                return cad_fail(err, CAD_EINVAL, "engine: rule %s names channel %d of %d",
                                rule->name, rule->channels[k], pb->n_channels);
        if (rule->trigger == CAD_TRIGGER_EVENT &&
            (rule->event_type < 0 || rule->event_type >= pb->n_event_types))
            return cad_fail(err, CAD_EINVAL, "engine: rule %s triggers on event type %d of %d",
                            rule->name, rule->event_type, pb->n_event_types);
    }
    if (cu->policy < 0 || cu->policy >= pb->n_policies)
        return cad_fail(err, CAD_EINVAL, "customer %s: policy %d is not in the playbook (%d)", id,
                        cu->policy, pb->n_policies);
    if ((unsigned)cu->stage >= CAD_STAGE_COUNT)
        return cad_fail(err, CAD_EINVAL, "customer %s: unknown stage %d", id, (int)cu->stage);
    if (snap->n_contacts < 0 || (snap->n_contacts > 0 && !snap->contacts) || snap->n_events < 0 ||
        (snap->n_events > 0 && !snap->events) || snap->n_history < 0 ||
        (snap->n_history > 0 && !snap->history))
        return cad_fail(err, CAD_EINVAL, "customer %s: a snapshot array is missing", id);
    for (int i = 0; i < snap->n_events; i++) {
        const cad_event_t *e = &snap->events[i];
        if (e->type < 0 || e->type >= pb->n_event_types)
            return cad_fail(err, CAD_EINVAL, "customer %s: event %d has type %d of %d", id, i,
                            e->type, pb->n_event_types);
        if (i > 0 && e->at < snap->events[i - 1].at)
            return cad_fail(err, CAD_EINVAL, "customer %s: event %d is out of time order", id, i);
    }
    for (int i = 0; i < snap->n_history; i++) {
        const cad_history_t *h = &snap->history[i];
        if (h->rule < -1 || h->rule >= pb->n_rules)
            return cad_fail(err, CAD_EINVAL, "customer %s: history %d names rule %d of %d", id, i,
                            h->rule, pb->n_rules);
        if (h->channel < -1 || h->channel >= pb->n_channels)
            return cad_fail(err, CAD_EINVAL, "customer %s: history %d names channel %d of %d", id,
                            i, h->channel, pb->n_channels);
        if (h->content < -1 || h->content >= pb->n_content)
            return cad_fail(err, CAD_EINVAL, "customer %s: history %d names content %d of %d", id,
                            i, h->content, pb->n_content);
        if ((unsigned)h->purpose >= CAD_PURPOSE_COUNT || (unsigned)h->state > CAD_TOUCH_DROPPED)
            return cad_fail(err, CAD_EINVAL,
                            "customer %s: history %d has an unknown purpose or state", id, i);
        if (i > 0 && h->at < snap->history[i - 1].at)
            return cad_fail(err, CAD_EINVAL, "customer %s: history %d is out of time order", id, i);
    }
    return 0;
}

int cad_engine_decide(const cad_playbook_t *pb, const cad_snapshot_t *snap, cad_time_t now,
                      cad_decision_t *out)
{
    if (!out || !out->verdicts)
        return -CAD_EINVAL;
    out->n_verdicts = 0;
    out->chosen = -1;
    out->next_eval = CAD_TIME_NEVER;
    out->alerts = 0;
    int rc = cad_engine_check(pb, snap, NULL);
    if (rc < 0)
        return rc;
    eval_ctx_t c;
    context_init(&c, pb, snap, now);
    uint32_t alerts = 0;
    for (int r = 0; r < pb->n_rules; r++)
        decide_rule(&c, r, &out->verdicts[r], &alerts);
    out->n_verdicts = pb->n_rules;
    out->chosen = choose(&c, out);

    /* R3: an ask waits for value, but no give touch is on its way before
     * the ask expires (sending, deferred, or a window opening in time). */
    cad_time_t ask_deadline = NO_TIME;
    for (int i = 0; i < out->n_verdicts; i++) {
        const cad_verdict_t *v = &out->verdicts[i];
        if (v->kind == CAD_VERDICT_DEFER && v->reason == CAD_REASON_VALUE_FIRST &&
            v->expires_at > ask_deadline)
            ask_deadline = v->expires_at;
    }
    if (ask_deadline != NO_TIME) {
        bool give_coming = false;
        for (int i = 0; i < out->n_verdicts && !give_coming; i++) {
            const cad_verdict_t *v = &out->verdicts[i];
            if (!cad_purpose_is_give(pb->rules[v->rule].purpose))
                continue;
            give_coming = v->kind == CAD_VERDICT_SEND || v->kind == CAD_VERDICT_DEFER ||
                          (v->kind == CAD_VERDICT_WAIT && v->until <= ask_deadline);
        }
        if (!give_coming)
            alerts |= CAD_ALERT_CONTENT_GAP;
    }

    int chosen_rule = out->chosen >= 0 ? out->verdicts[out->chosen].rule : -1;
    bool conversation_now =
        chosen_rule >= 0 && pb->rules[chosen_rule].purpose != CAD_PURPOSE_TRANSACTIONAL;

    /* R6: silent past max_silence (active and onboarding customers); a
     * conversation chosen now ends the silence, an invoice does not. */
    const cad_customer_t *cu = &snap->customer;
    const cad_policy_t *p = c.pol;
    if (p->max_silence > 0 &&
        (cu->stage == CAD_STAGE_ACTIVE || cu->stage == CAD_STAGE_ONBOARDING)) {
        cad_time_t base = silence_base(&c);
        if (now >= base + p->max_silence && !conversation_now)
            alerts |= CAD_ALERT_SILENT;
        else
            wake_at(&c, base + p->max_silence);
    }
    check_loops(&c, chosen_rule, &alerts);
    out->alerts = alerts;
    out->next_eval = c.wake;
    return 0;
}

/* ---- names ---- */

static const char *const reason_names[CAD_REASON_COUNT] = {
    [CAD_REASON_NONE] = "none",
    [CAD_REASON_DUE] = "due",
    [CAD_REASON_STAGE] = "stage",
    [CAD_REASON_NO_TRIGGER] = "no_trigger",
    [CAD_REASON_ALREADY_DONE] = "already_done",
    [CAD_REASON_NOT_YET] = "not_yet",
    [CAD_REASON_STALE] = "stale",
    [CAD_REASON_PAUSED] = "paused",
    [CAD_REASON_SUPPRESSED_BY_EVENT] = "suppressed_by_event",
    [CAD_REASON_NO_CONTACT_ROLE] = "no_contact_role",
    [CAD_REASON_NO_CONSENT] = "no_consent",
    [CAD_REASON_VALUE_FIRST] = "value_first",
    [CAD_REASON_ASK_SHARE] = "ask_share",
    [CAD_REASON_APPRECIATION_CAP] = "appreciation_cap",
    [CAD_REASON_SAME_DAY_ASK] = "same_day_ask",
    [CAD_REASON_MIN_GAP] = "min_gap",
    [CAD_REASON_CHANNEL_CAP] = "channel_cap",
    [CAD_REASON_NOT_SILENT] = "not_silent",
    [CAD_REASON_CONTENT_GAP] = "content_gap",
    [CAD_REASON_LOW_RELEVANCE] = "low_relevance",
    [CAD_REASON_QUIET_HOURS] = "quiet_hours",
    [CAD_REASON_WEEKDAY] = "weekday",
    [CAD_REASON_EXPIRED] = "expired",
    [CAD_REASON_LOST_PRIORITY] = "lost_priority",
    [CAD_REASON_HELD_OUT] = "held_out",
    [CAD_REASON_LOOP_CLOSED] = "loop_closed",
};

static const char *const verdict_names[] = {"skip", "wait", "send", "defer", "suppress"};

const char *cad_reason_name(enum cad_reason r)
{
    return (unsigned)r < CAD_REASON_COUNT ? reason_names[r] : "unknown";
}

int cad_reason_parse(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < CAD_REASON_COUNT; i++)
        if (strcmp(reason_names[i], name) == 0)
            return i;
    return -1;
}

const char *cad_verdict_name(enum cad_verdict_kind k)
{
    return (unsigned)k < CAD_ARRAY_LEN(verdict_names) ? verdict_names[k] : "unknown";
}

/* ---- sentences ---- */

typedef struct text_buf {
    char *buf;
    size_t size;
    int len; /* would-be length, like snprintf */
} text_buf_t;

static void put(text_buf_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(text_buf_t *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t at = (size_t)t->len;
    char *dst = t->buf && at < t->size ? t->buf + at : NULL;
    size_t room = dst ? t->size - at : 0;
    int n = vsnprintf(dst, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        t->len += n;
}

static void put_time(text_buf_t *t, const cad_snapshot_t *s, cad_time_t when)
{
    static const char *const days[7] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    if (when == CAD_TIME_NEVER) {
        put(t, "never");
        return;
    }
    cad_local_time_t lt;
    cad_tz_local(s->customer.tz, when, &lt);
    put(t, "%s %04d-%02d-%02d %02d:%02d %s", days[lt.weekday], lt.year, lt.month, lt.day, lt.hour,
        lt.minute, cad_tz_name(s->customer.tz));
}

static void put_duration(text_buf_t *t, int64_t seconds)
{
    char d[32];
    if (cad_duration_format(seconds < 0 ? 0 : seconds, d, sizeof(d)) != 0)
        snprintf(d, sizeof(d), "%llds", (long long)seconds);
    put(t, "%s", d);
}

static void put_clock(text_buf_t *t, int minutes)
{
    put(t, "%02d:%02d", minutes / 60, minutes % 60);
}

/* Why no contact of the rule's roles can be reached on its channels: the
 * causes found among those contacts, from the snapshot's bits. */
static void put_unreachable_why(text_buf_t *t, const cad_snapshot_t *snap, const cad_rule_t *rule)
{
    uint16_t channels = 0;
    for (int k = 0; k < rule->n_channels; k++)
        channels |= (uint16_t)(1u << rule->channels[k]);
    bool no_consent = false, unusable = false, other = false;
    for (int i = 0; i < snap->n_contacts; i++) {
        const cad_contact_t *c = &snap->contacts[i];
        if (!(c->roles & rule->roles))
            continue;
        no_consent |= (c->no_consent & channels) != 0;
        unusable |= (c->unusable & channels) != 0;
        other |= (channels & ~(c->no_consent | c->unusable)) != 0;
    }
    const char *causes[3];
    int n = 0;
    if (no_consent)
        causes[n++] = "no consent";
    if (unusable)
        causes[n++] = "marked unusable after a permanent failure";
    if (other || n == 0)
        causes[n++] = "no address, or the address is on the suppression list";
    put(t, " (");
    for (int k = 0; k < n; k++)
        put(t, "%s%s", k == 0 ? "" : k == n - 1 ? " or " : ", ", causes[k]);
    put(t, ").");
}

static void put_roles(text_buf_t *t, const cad_playbook_t *pb, uint32_t roles)
{
    bool first = true;
    for (int i = 0; i < pb->n_roles && i < 32; i++)
        if ((roles >> i) & 1) {
            put(t, "%s%s", first ? "" : " or ", pb->roles[i]);
            first = false;
        }
    if (first)
        put(t, "(none)");
}

static void put_trigger(text_buf_t *t, const cad_playbook_t *pb, const cad_snapshot_t *s,
                        const cad_verdict_t *v)
{
    const cad_rule_t *rule = &pb->rules[v->rule];
    if (rule->trigger == CAD_TRIGGER_EVENT && v->event >= 0 && v->event < s->n_events) {
        put(t, "the %s event of ", pb->event_types[s->events[v->event].type].name);
        put_time(t, s, s->events[v->event].at);
    } else if (rule->trigger == CAD_TRIGGER_RECURRING) {
        put(t, "period %lld (every ", (long long)v->trigger_key);
        put_duration(t, rule->every);
        put(t, ")");
    } else if (rule->trigger == CAD_TRIGGER_SILENCE) {
        put(t, "this stretch of silence");
    } else {
        put(t, "this trigger");
    }
}

static void describe_hours(text_buf_t *t, const cad_playbook_t *pb, const cad_snapshot_t *s,
                           const cad_verdict_t *v)
{
    const cad_rule_t *rule = &pb->rules[v->rule];
    const cad_policy_t *p = &pb->policies[s->customer.policy];
    bool said = false;
    if (!rule->bypass_quiet_hours && p->quiet_start != p->quiet_end) {
        put(t, "quiet hours ");
        put_clock(t, p->quiet_start);
        put(t, "\u2013");
        put_clock(t, p->quiet_end);
        said = true;
    }
    if (v->channel >= 0 && v->channel < pb->n_channels) {
        const cad_channel_t *ch = &pb->channels[v->channel];
        if (ch->window_start != ch->window_end) {
            put(t, "%sthe %s window ", said ? " and " : "", ch->name);
            put_clock(t, ch->window_start);
            put(t, "\u2013");
            put_clock(t, ch->window_end);
            said = true;
        }
    }
    if (!said)
        put(t, "the allowed hours");
    put(t, " in the customer's time zone.");
}

int cad_verdict_describe(const cad_playbook_t *pb, const cad_snapshot_t *snap,
                         const cad_verdict_t *v, char *buf, size_t size)
{
    text_buf_t t = {.buf = buf, .size = size, .len = 0};
    if (buf && size)
        buf[0] = '\0';
    if (!pb || !snap || !v || v->rule < 0 || v->rule >= pb->n_rules) {
        put(&t, "No such rule.");
        return t.len;
    }
    const cad_rule_t *rule = &pb->rules[v->rule];
    const cad_policy_t *p = &pb->policies[snap->customer.policy];
    switch (v->kind) {
    case CAD_VERDICT_DEFER:
    case CAD_VERDICT_WAIT:
        put(&t, "%s until ", v->kind == CAD_VERDICT_DEFER ? "Deferred" : "Waiting");
        put_time(&t, snap, v->until);
        put(&t, ": ");
        break;
    case CAD_VERDICT_SEND: put(&t, "Send now: "); break;
    case CAD_VERDICT_SUPPRESS: put(&t, v->final ? "Dropped for good: " : "Held back: "); break;
    case CAD_VERDICT_SKIP:
    default: put(&t, "Not applicable: "); break;
    }
    switch (v->reason) {
    case CAD_REASON_DUE:
        put(&t, "%s (%s)", rule->name, cad_purpose_name(rule->purpose));
        if (v->contact >= 0 && v->contact < snap->n_contacts && snap->contacts[v->contact].id)
            put(&t, " to contact %s", snap->contacts[v->contact].id);
        if (v->channel >= 0 && v->channel < pb->n_channels)
            put(&t, " by %s", pb->channels[v->channel].name);
        if (v->content >= 0 && v->content < pb->n_content)
            put(&t, " with \"%s\" (interest match %.0f%%)",
                pb->content[v->content].title ? pb->content[v->content].title
                                              : pb->content[v->content].id,
                v->relevance * 100.0);
        put(&t, "; every check passed.");
        break;
    case CAD_REASON_STAGE:
        put(&t, "the customer is %s and %s reaches only other stages.",
            cad_stage_name(snap->customer.stage), rule->name);
        break;
    case CAD_REASON_NO_TRIGGER:
        if (rule->trigger == CAD_TRIGGER_EVENT && rule->event_type >= 0 &&
            rule->event_type < pb->n_event_types)
            put(&t, "no %s event for this customer yet.", pb->event_types[rule->event_type].name);
        else
            put(&t, "%s has nothing to trigger it.", rule->name);
        break;
    case CAD_REASON_ALREADY_DONE:
        put(&t, "%s was already decided for ", rule->name);
        put_trigger(&t, pb, snap, v);
        put(&t, "; a touch is never sent twice.");
        break;
    case CAD_REASON_NOT_YET:
        if (rule->trigger == CAD_TRIGGER_EVENT) {
            put(&t, "%s opens ", rule->name);
            put_duration(&t, rule->after);
            put(&t, " after ");
            put_trigger(&t, pb, snap, v);
            put(&t, ".");
        } else {
            put(&t, "the next period of %s (every ", rule->name);
            put_duration(&t, rule->every);
            put(&t, ") has not started.");
        }
        break;
    case CAD_REASON_STALE:
        put(&t, "%s is stale: ", rule->name);
        put_trigger(&t, pb, snap, v);
        put(&t, " is more than ");
        put_duration(&t, rule->expires);
        put(&t, " old, and a late touch is never sent.");
        break;
    case CAD_REASON_PAUSED: put(&t, "an operator paused this customer."); break;
    case CAD_REASON_SUPPRESSED_BY_EVENT: {
        put(&t, "%s waits while ", rule->name);
        bool first = true;
        for (int i = 0; i < pb->n_event_types && i < 64; i++)
            if ((rule->suppress_while >> i) & 1) {
                put(&t, "%sa %s", first ? "" : " or ", pb->event_types[i].name);
                first = false;
            }
        put(&t, " is open (not yet resolved).");
        break;
    }
    case CAD_REASON_NO_CONTACT_ROLE:
        put(&t, "the customer has no ");
        put_roles(&t, pb, rule->roles);
        put(&t, " contact for %s.", rule->name);
        break;
    case CAD_REASON_NO_CONSENT:
        put(&t, "no ");
        put_roles(&t, pb, rule->roles);
        put(&t, " contact can be reached on ");
        for (int k = 0; k < rule->n_channels; k++)
            put(&t, "%s%s", k ? " or " : "", pb->channels[rule->channels[k]].name);
        put_unreachable_why(&t, snap, rule);
        break;
    case CAD_REASON_VALUE_FIRST:
        put(&t, "an ask needs %u value touches within ",
            rule->requires_value_count ? rule->requires_value_count : p->ask_min_value);
        put_duration(&t, rule->requires_value_within ? rule->requires_value_within : p->ask_window);
        put(&t, " first; a value touch goes first.");
        break;
    case CAD_REASON_ASK_SHARE:
        put(&t, "asks would exceed %.0f%% of all touches over ", p->ask_max_share * 100.0);
        put_duration(&t, p->ask_window);
        put(&t, ".");
        break;
    case CAD_REASON_APPRECIATION_CAP:
        put(&t, "the customer already had %u thank-yous in the last 365 days.",
            p->appreciation_per_year);
        break;
    case CAD_REASON_SAME_DAY_ASK:
        put(&t, "a thank-you and an ask never go out on the same day in the customer's time "
                "zone.");
        break;
    case CAD_REASON_MIN_GAP:
        put(&t, "at least ");
        put_duration(&t, p->min_gap);
        put(&t, " between two touches to a customer.");
        break;
    case CAD_REASON_CHANNEL_CAP:
        put(&t, "the frequency cap");
        if (v->channel >= 0 && v->channel < pb->n_channels)
            put(&t, " on %s", pb->channels[v->channel].name);
        put(&t, " is reached; it frees then.");
        break;
    case CAD_REASON_NOT_SILENT:
        put(&t, "the customer heard from us recently; a top-of-mind touch is due ");
        put_duration(&t, p->silence_lead);
        put(&t, " before ");
        put_duration(&t, p->max_silence);
        put(&t, " of silence.");
        break;
    case CAD_REASON_CONTENT_GAP:
        put(&t,
            "no unused %s content suits this customer, so nothing is sent; content gap "
            "reported.",
            cad_purpose_name(rule->purpose));
        break;
    case CAD_REASON_LOW_RELEVANCE:
        put(&t,
            "the best unused content matches the customer's interests %.0f%%, below the "
            "minimum %.0f%%; nothing is sent and a content gap is reported.",
            v->relevance * 100.0, p->min_relevance * 100.0);
        break;
    case CAD_REASON_QUIET_HOURS: describe_hours(&t, pb, snap, v); break;
    case CAD_REASON_WEEKDAY:
        put(&t, "that day of the week is not an allowed sending day in the customer's time "
                "zone.");
        break;
    case CAD_REASON_EXPIRED:
        if (v->until > 0) {
            put(&t, "the next allowed moment, ");
            put_time(&t, snap, v->until);
            put(&t, ", is past the touch's expiry, ");
        } else {
            put(&t, "the touch was not sent before its expiry, ");
        }
        put_time(&t, snap, v->expires_at);
        put(&t, ".");
        break;
    case CAD_REASON_LOST_PRIORITY: put(&t, "another touch of higher priority goes first."); break;
    case CAD_REASON_HELD_OUT:
        put(&t, "the customer is in the %.1f%% holdout group of %s; recorded, not sent.",
            rule->holdout_permille / 10.0, rule->name);
        break;
    case CAD_REASON_LOOP_CLOSED:
        put(&t, "the follow-up for this feedback was already sent.");
        break;
    case CAD_REASON_NONE:
    default: put(&t, "%s.", cad_reason_name(v->reason)); break;
    }
    return t.len;
}

/* An id as it goes into a touch key: bytes other than letters, digits and
 * "-._~!$&'()*+,;=:@" percent-encoded (%XX), so that the key is printable
 * ASCII without spaces (a header value, a Message-ID part) and its "/"
 * separators are unambiguous. Writes at most 3 * strlen(id) + 1 bytes. */
static void key_part(const char *id, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)(id ? id : ""); *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~!$&'()*+,;=:@", *p)) {
            *out++ = (char)*p;
        } else {
            *out++ = '%';
            *out++ = hex[*p >> 4];
            *out++ = hex[*p & 15];
        }
    }
    *out = '\0';
}

int cad_touch_key(const cad_playbook_t *pb, const cad_snapshot_t *snap, const cad_verdict_t *v,
                  char *buf, size_t size)
{
    if (!pb || !snap || !v || v->rule < 0 || v->rule >= pb->n_rules)
        return cad_fail(NULL, CAD_EINVAL, "touch key: no such rule");
    const cad_rule_t *rule = &pb->rules[v->rule];
    const char *customer = snap->customer.id ? snap->customer.id : "";
    if (strlen(customer) > CAD_ID_MAX)
        return cad_fail(NULL, CAD_EINVAL, "touch key: customer id too long");
    char cust[3 * CAD_ID_MAX + 1];
    key_part(customer, cust);
    /* An event-triggered touch is keyed by the event's external id, which
     * survives re-imports and restored backups; the store key is the
     * fallback for snapshots without ids. */
    if (rule->trigger == CAD_TRIGGER_EVENT && v->event >= 0 && v->event < snap->n_events &&
        snap->events[v->event].id && snap->events[v->event].id[0] &&
        strlen(snap->events[v->event].id) <= CAD_ID_MAX) {
        char event[3 * CAD_ID_MAX + 1];
        key_part(snap->events[v->event].id, event);
        return snprintf(buf, size, "%s/%s/e:%s", cust, rule->name, event);
    }
    char kind = rule->trigger == CAD_TRIGGER_EVENT       ? 'e'
                : rule->trigger == CAD_TRIGGER_RECURRING ? 'p'
                                                         : 's';
    return snprintf(buf, size, "%s/%s/%c%lld", cust, rule->name, kind, (long long)v->trigger_key);
}
