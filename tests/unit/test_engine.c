/*
 * test_engine.c — the decision engine, rule by rule (test_r1_... to
 * test_r14_..., each with an allowed and a refused case), the customer
 * stories of the example playbook, DST-correct quiet hours and channel
 * windows, and property tests of caps and sliding windows against a
 * brute-force reference. The playbook is built in C (engine_fixture.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "engine_fixture.h"

#define D     CAD_DAY
#define H     CAD_HOUR
#define DM    FX_ROLE(CAD_ROLE_DECISION_MAKER)
#define USER  FX_ROLE(CAD_ROLE_USER)
#define BILL  FX_ROLE(CAD_ROLE_BILLING)
#define CHAMP FX_ROLE(CAD_ROLE_CHAMPION)

static cad_playbook_t pb;

static int setup_playbook(void **state)
{
    fx_playbook_example(&pb);
    return 0;
}

static int teardown_playbook(void **state)
{
    cad_playbook_clear(&pb);
    return 0;
}

/* The usual cast: a decision maker, a champion and a user on email, and a
 * billing contact on email and SMS. */
static void fx_cast(fx_t *f)
{
    fx_contact(f, "dm", DM, FX_CH(FX_EMAIL) | FX_CH(FX_CRM));
    fx_contact(f, "champ", CHAMP, FX_CH(FX_EMAIL));
    fx_contact(f, "user", USER, FX_CH(FX_EMAIL));
    fx_contact(f, "billing", BILL, FX_CH(FX_EMAIL) | FX_CH(FX_SMS));
}

static void assert_sent(const fx_t *f, int rule)
{
    const cad_verdict_t *v = fx_v(f, rule);
    if (v->kind != CAD_VERDICT_SEND || f->dec.chosen != rule) {
        char why[512];
        cad_verdict_describe(f->pb, &f->snap, v, why, sizeof(why));
        fail_msg("rule %s: expected send, got %s/%s: %s (chosen %d)", f->pb->rules[rule].name,
                 cad_verdict_name(v->kind), cad_reason_name(v->reason), why, f->dec.chosen);
    }
}

static void assert_verdict(const fx_t *f, int rule, enum cad_verdict_kind kind,
                           enum cad_reason reason)
{
    const cad_verdict_t *v = fx_v(f, rule);
    if (v->kind != kind || v->reason != reason) {
        char why[512];
        cad_verdict_describe(f->pb, &f->snap, v, why, sizeof(why));
        fail_msg("rule %s: expected %s/%s, got %s/%s: %s", f->pb->rules[rule].name,
                 cad_verdict_name(kind), cad_reason_name(reason), cad_verdict_name(v->kind),
                 cad_reason_name(v->reason), why);
    }
}

static void assert_nothing_sent(const fx_t *f)
{
    assert_int_equal(f->dec.chosen, -1);
    for (int i = 0; i < f->dec.n_verdicts; i++)
        assert_int_not_equal(f->dec.verdicts[i].kind, CAD_VERDICT_SEND);
}

/* ---- R1 lifecycle gating ---- */

static void test_r1_nps_never_reaches_former_while_win_back_may(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_FORMER, NULL);
    f.snap.customer.created_at = FX_T0 - 400 * D;
    fx_cast(&f);
    fx_touch(&f, FX_INVOICE_NOTICE, FX_T0 - 10 * D);
    fx_event(&f, CAD_EVENT_CHURNED, FX_T0 - 61 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_verdict(&f, FX_NPS_SURVEY, CAD_VERDICT_SKIP, CAD_REASON_STAGE);
    assert_verdict(&f, FX_TOP_OF_MIND, CAD_VERDICT_SKIP, CAD_REASON_STAGE);
    assert_verdict(&f, FX_ANNIVERSARY_THANKS, CAD_VERDICT_SKIP, CAD_REASON_STAGE);
    assert_sent(&f, FX_WIN_BACK);
    assert_int_equal(fx_v(&f, FX_WIN_BACK)->contact, 0); /* the decision maker */
}

static void test_r1_nps_reaches_active_customer_but_not_win_back(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    f.snap.customer.created_at = FX_T0 - 181 * D;
    fx_cast(&f);
    fx_row(&f, FX_USAGE_TIPS, CAD_PURPOSE_VALUE, FX_EMAIL, FX_T0 - 10 * D, 4, 1,
           CAD_TOUCH_DELIVERED); /* this period's tips went out */
    fx_event(&f, CAD_EVENT_CHURNED, FX_T0 - 61 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_NPS_SURVEY);
    assert_int_equal(fx_v(&f, FX_NPS_SURVEY)->trigger_key, 1);
    assert_verdict(&f, FX_WIN_BACK, CAD_VERDICT_SKIP, CAD_REASON_STAGE);
}

/* ---- R2 fresh triggers ---- */

static void test_r2_review_request_inside_window_is_sent(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    fx_event(&f, CAD_EVENT_PURCHASE, FX_T0 - 15 * D);
    fx_touch(&f, FX_TOP_OF_MIND, FX_T0 - 20 * D);
    fx_touch(&f, FX_WELCOME_GUIDE, FX_T0 - 5 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_REVIEW_REQUEST);
    assert_int_equal(fx_v(&f, FX_REVIEW_REQUEST)->expires_at, FX_T0 + 15 * D);
}

static void test_r2_review_request_forty_days_old_is_stale_never_sent(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    fx_event(&f, CAD_EVENT_PURCHASE, FX_T0 - 40 * D);
    fx_touch(&f, FX_TOP_OF_MIND, FX_T0 - 20 * D);
    fx_touch(&f, FX_WELCOME_GUIDE, FX_T0 - 5 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_verdict(&f, FX_REVIEW_REQUEST, CAD_VERDICT_SUPPRESS, CAD_REASON_STALE);
    assert_true(fx_v(&f, FX_REVIEW_REQUEST)->final);
    assert_nothing_sent(&f);
}

static void test_r2_window_not_open_waits_and_sets_next_eval(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    fx_touch(&f, FX_TOP_OF_MIND, FX_T0 - 1 * D);
    fx_event(&f, CAD_EVENT_PURCHASE, FX_T0 - 3 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_verdict(&f, FX_REVIEW_REQUEST, CAD_VERDICT_WAIT, CAD_REASON_NOT_YET);
    assert_int_equal(fx_v(&f, FX_REVIEW_REQUEST)->until, FX_T0 + 11 * D);
    assert_true(f.dec.next_eval > FX_T0);
    assert_true(f.dec.next_eval <= FX_T0 + 11 * D);
}

/* ---- R3 value before ask ---- */

static void test_r3_renewal_without_value_is_deferred_and_value_goes_first(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    f.snap.customer.created_at = FX_T0 - 40 * D; /* silent 40 days: top of mind is due */
    fx_cast(&f);
    fx_event(&f, CAD_EVENT_RENEWAL_DUE, FX_T0 - 1 * H);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_verdict(&f, FX_RENEWAL_REMINDER, CAD_VERDICT_DEFER, CAD_REASON_VALUE_FIRST);
    assert_true(fx_v(&f, FX_RENEWAL_REMINDER)->until > FX_T0);
    assert_sent(&f, FX_TOP_OF_MIND);
    assert_false(f.dec.alerts & CAD_ALERT_CONTENT_GAP);
}

static void test_r3_renewal_after_a_value_touch_is_sent(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    fx_touch(&f, FX_TOP_OF_MIND, FX_T0 - 10 * D);
    fx_event(&f, CAD_EVENT_RENEWAL_DUE, FX_T0 - 1 * H);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_RENEWAL_REMINDER);
    assert_int_equal(fx_v(&f, FX_RENEWAL_REMINDER)->contact, 0); /* decision maker first */
}

static void test_r3_ask_without_any_value_to_send_raises_content_gap(void **state)
{
    /* an active customer: top of mind comes (in 7 days) before the ask
     * expires, so the ask just waits */
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    fx_event(&f, CAD_EVENT_RENEWAL_DUE, FX_T0 - 1 * H);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_verdict(&f, FX_RENEWAL_REMINDER, CAD_VERDICT_DEFER, CAD_REASON_VALUE_FIRST);
    assert_false(f.dec.alerts & CAD_ALERT_CONTENT_GAP);
    /* at risk, no rule of the playbook gives this customer value: alert */
    f.snap.customer.stage = CAD_STAGE_AT_RISK;
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_verdict(&f, FX_RENEWAL_REMINDER, CAD_VERDICT_DEFER, CAD_REASON_VALUE_FIRST);
    assert_true(f.dec.alerts & CAD_ALERT_CONTENT_GAP);
    assert_nothing_sent(&f);
    /* the ask is re-checked until its expiry, then dropped with that reason */
    cad_time_t expiry = FX_T0 - 1 * H + 45 * D;
    assert_int_equal(fx_decide(&f, expiry - 12 * H), 0);
    assert_verdict(&f, FX_RENEWAL_REMINDER, CAD_VERDICT_DEFER, CAD_REASON_VALUE_FIRST);
    assert_int_equal(fx_v(&f, FX_RENEWAL_REMINDER)->until, expiry);
    assert_int_equal(fx_decide(&f, expiry), 0);
    assert_verdict(&f, FX_RENEWAL_REMINDER, CAD_VERDICT_SUPPRESS, CAD_REASON_EXPIRED);
}

static void test_r3_ask_share_at_cap_is_deferred(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    fx_touch(&f, FX_REVIEW_REQUEST, FX_T0 - 30 * D); /* an ask */
    fx_touch(&f, FX_TOP_OF_MIND, FX_T0 - 10 * D);    /* one value */
    fx_event(&f, CAD_EVENT_RENEWAL_DUE, FX_T0 - 1 * H);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    /* (1 ask + this one) / (2 touches + this one) = 67% > 50% */
    assert_verdict(&f, FX_RENEWAL_REMINDER, CAD_VERDICT_DEFER, CAD_REASON_ASK_SHARE);
    assert_int_equal(fx_v(&f, FX_RENEWAL_REMINDER)->until, FX_T0 - 30 * D + 60 * D);
    /* one more value touch and the share is 50%: allowed */
    fx_touch(&f, FX_WELCOME_GUIDE, FX_T0 - 5 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_RENEWAL_REMINDER);
}

/* ---- R4 pure appreciation ---- */

static void test_r4_two_thank_yous_a_year_then_no_more(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    fx_event(&f, CAD_EVENT_PROJECT_COMPLETED, FX_T0 - 3 * D);
    fx_touch(&f, FX_ANNIVERSARY_THANKS, FX_T0 - 200 * D);
    fx_touch(&f, FX_TOP_OF_MIND, FX_T0 - 10 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_PROJECT_THANK_YOU); /* the second of the year */

    fx_touch(&f, FX_PROJECT_THANK_YOU, FX_T0 - 100 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_verdict(&f, FX_PROJECT_THANK_YOU, CAD_VERDICT_SUPPRESS, CAD_REASON_APPRECIATION_CAP);
    assert_true(fx_v(&f, FX_PROJECT_THANK_YOU)->final);
    /* a year is rolling: a thank-you 366 days ago no longer counts */
    f.history[0].at = FX_T0 - 366 * D;
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_PROJECT_THANK_YOU);
}

static void test_r4_thank_you_never_on_the_day_of_an_ask(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, "Europe/London");
    fx_cast(&f);
    fx_event(&f, CAD_EVENT_PROJECT_COMPLETED, FX_T0 - 3 * D);
    fx_touch(&f, FX_RENEWAL_REMINDER, FX_T0 - 3 * H); /* an ask this morning, 09:00 */
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_verdict(&f, FX_PROJECT_THANK_YOU, CAD_VERDICT_DEFER, CAD_REASON_SAME_DAY_ASK);
    assert_true(fx_v(&f, FX_PROJECT_THANK_YOU)->until >= FX_T0 + 12 * H);

    /* and the other direction: a thank-you this morning holds an ask */
    fx_t g;
    fx_init(&g, &pb, "acme", CAD_STAGE_ACTIVE, "Europe/London");
    fx_cast(&g);
    g.snap.customer.policy = FX_SMB;
    pb.policies[FX_SMB].min_gap = 0;
    fx_touch(&g, FX_TOP_OF_MIND, FX_T0 - 10 * D);
    fx_touch(&g, FX_PROJECT_THANK_YOU, FX_T0 - 3 * H);
    fx_event(&g, CAD_EVENT_RENEWAL_DUE, FX_T0 - 1 * H);
    assert_int_equal(fx_decide(&g, FX_T0), 0);
    pb.policies[FX_SMB].min_gap = 2 * D;
    assert_verdict(&g, FX_RENEWAL_REMINDER, CAD_VERDICT_DEFER, CAD_REASON_SAME_DAY_ASK);
    assert_int_equal(fx_v(&g, FX_RENEWAL_REMINDER)->until, FX_T0 + 12 * H); /* midnight */
}

static void test_r4_thank_you_and_ask_due_together_go_on_different_days(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, "Europe/London");
    fx_cast(&f);
    fx_touch(&f, FX_TOP_OF_MIND, FX_T0 - 10 * D);
    fx_event(&f, CAD_EVENT_PROJECT_COMPLETED, FX_T0 - 3 * D);
    fx_event(&f, CAD_EVENT_RENEWAL_DUE, FX_T0 - 1 * H);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_PROJECT_THANK_YOU); /* appreciation outranks an ask */
    assert_verdict(&f, FX_RENEWAL_REMINDER, CAD_VERDICT_DEFER, CAD_REASON_SAME_DAY_ASK);
    cad_local_time_t a, b;
    cad_tz_local(f.snap.customer.tz, FX_T0, &a);
    cad_tz_local(f.snap.customer.tz, fx_v(&f, FX_RENEWAL_REMINDER)->until, &b);
    assert_true(b.day_number > a.day_number);
}

/* ---- R5 respect attention ---- */

static void test_r5_min_gap_defers_until_gap_ends(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    fx_touch(&f, FX_TOP_OF_MIND, FX_T0 - 1 * D);
    fx_event(&f, CAD_EVENT_PROJECT_COMPLETED, FX_T0 - 3 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_verdict(&f, FX_PROJECT_THANK_YOU, CAD_VERDICT_DEFER, CAD_REASON_MIN_GAP);
    assert_int_equal(fx_v(&f, FX_PROJECT_THANK_YOU)->until, FX_T0 + 1 * D);
    assert_int_equal(f.dec.next_eval, FX_T0 + 1 * D);
    /* at the end of the gap it goes */
    assert_int_equal(fx_decide(&f, FX_T0 + 1 * D), 0);
    assert_sent(&f, FX_PROJECT_THANK_YOU);
    /* a dropped or failed touch takes no attention */
    f.history[0].state = CAD_TOUCH_FAILED;
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_PROJECT_THANK_YOU);
}

static void test_r5_channel_cap_tries_next_channel_then_defers(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_contact(&f, "billing", BILL, FX_CH(FX_EMAIL) | FX_CH(FX_SMS));
    pb.policies[FX_SMB].min_gap = 0;
    f.snap.customer.policy = FX_SMB;
    fx_touch(&f, FX_TOP_OF_MIND, FX_T0 - 6 * D);
    fx_touch(&f, FX_WELCOME_GUIDE, FX_T0 - 2 * D); /* email cap 2/7d reached */
    fx_event(&f, CAD_EVENT_RENEWAL_DUE, FX_T0 - 1 * H);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_RENEWAL_REMINDER);
    assert_int_equal(fx_v(&f, FX_RENEWAL_REMINDER)->channel, FX_SMS);
    /* SMS cap (1/7d) also full: deferred until the earlier channel frees */
    fx_row(&f, -1, CAD_PURPOSE_VALUE, FX_SMS, FX_T0 - 3 * D, 1, -1, CAD_TOUCH_DELIVERED);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    pb.policies[FX_SMB].min_gap = 2 * D;
    assert_verdict(&f, FX_RENEWAL_REMINDER, CAD_VERDICT_DEFER, CAD_REASON_CHANNEL_CAP);
    /* global cap 3/7d: the oldest of three leaves at T0 + 1d; SMS frees at T0 + 4d */
    assert_int_equal(fx_v(&f, FX_RENEWAL_REMINDER)->until, FX_T0 + 1 * D);
}

static void test_r5_transactional_bypass_is_still_counted_in_caps(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    fx_touch(&f, FX_TOP_OF_MIND, FX_T0 - 3 * D);
    fx_touch(&f, FX_INVOICE_NOTICE, FX_T0 - 2 * D);
    fx_touch(&f, FX_INVOICE_NOTICE, FX_T0 - 2 * H);
    fx_event(&f, CAD_EVENT_INVOICE_ISSUED, FX_T0 - 1 * H);
    fx_event(&f, CAD_EVENT_PROJECT_COMPLETED, FX_T0 - 3 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    /* the invoice ignores gap and caps */
    assert_sent(&f, FX_INVOICE_NOTICE);
    /* but invoices count: the thank-you sees the gap and the full caps */
    assert_int_equal(fx_v(&f, FX_PROJECT_THANK_YOU)->kind, CAD_VERDICT_DEFER);
    pb.policies[FX_DEFAULT].min_gap = 0;
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    pb.policies[FX_DEFAULT].min_gap = 2 * D;
    assert_verdict(&f, FX_PROJECT_THANK_YOU, CAD_VERDICT_DEFER, CAD_REASON_CHANNEL_CAP);
    /* global 3/7d frees at T0 + 4d, email 2/7d only when the second oldest leaves */
    assert_int_equal(fx_v(&f, FX_PROJECT_THANK_YOU)->until, FX_T0 + 5 * D);
}

static void test_r5_cap_blocking_several_then_priority_decides(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    f.snap.customer.created_at = FX_T0 - 40 * D;
    fx_cast(&f);
    pb.policies[FX_SMB].caps[0].count = 1; /* global 1 per 7 days */
    pb.policies[FX_SMB].max_silence = 30 * D;
    f.snap.customer.policy = FX_SMB;
    fx_touch(&f, FX_INVOICE_NOTICE, FX_T0 - 34 * D);
    fx_touch(&f, FX_WELCOME_GUIDE, FX_T0 - 28 * D);
    fx_touch(&f, FX_INVOICE_NOTICE, FX_T0 - 5 * D); /* cap full until T0 + 2d */
    fx_event(&f, CAD_EVENT_PURCHASE, FX_T0 - 15 * D);
    fx_event(&f, CAD_EVENT_PROJECT_COMPLETED, FX_T0 - 7 * D);
    fx_event(&f, CAD_EVENT_FEEDBACK_ACTIONED, FX_T0 - 1 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    pb.policies[FX_SMB].caps[0].count = 3;
    pb.policies[FX_SMB].max_silence = 45 * D;
    assert_nothing_sent(&f);
    assert_verdict(&f, FX_FEEDBACK_FOLLOWUP, CAD_VERDICT_DEFER, CAD_REASON_CHANNEL_CAP);
    assert_verdict(&f, FX_PROJECT_THANK_YOU, CAD_VERDICT_DEFER, CAD_REASON_CHANNEL_CAP);
    assert_verdict(&f, FX_OPERATIONAL_SURVEY, CAD_VERDICT_DEFER, CAD_REASON_CHANNEL_CAP);
    assert_int_equal(f.dec.next_eval, FX_T0 + 2 * D);

    pb.policies[FX_SMB].caps[0].count = 1;
    pb.policies[FX_SMB].max_silence = 30 * D;
    assert_int_equal(fx_decide(&f, FX_T0 + 2 * D), 0);
    pb.policies[FX_SMB].caps[0].count = 3;
    pb.policies[FX_SMB].max_silence = 45 * D;
    /* value (top of mind) > follow-up > appreciation > feedback > ask */
    assert_sent(&f, FX_TOP_OF_MIND);
    assert_verdict(&f, FX_FEEDBACK_FOLLOWUP, CAD_VERDICT_DEFER, CAD_REASON_LOST_PRIORITY);
    assert_verdict(&f, FX_PROJECT_THANK_YOU, CAD_VERDICT_DEFER, CAD_REASON_LOST_PRIORITY);
    assert_verdict(&f, FX_OPERATIONAL_SURVEY, CAD_VERDICT_DEFER, CAD_REASON_LOST_PRIORITY);
    assert_int_equal(fx_v(&f, FX_FEEDBACK_FOLLOWUP)->until,
                     FX_T0 + 2 * D + pb.policies[FX_SMB].min_gap);
}

/* ---- R6 top of mind ---- */

static void test_r6_silence_near_max_sends_relevant_value(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    f.snap.customer.created_at = FX_T0 - 100 * D;
    fx_cast(&f);
    fx_touch(&f, FX_PROJECT_THANK_YOU, FX_T0 - 28 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_TOP_OF_MIND);
    const cad_verdict_t *v = fx_v(&f, FX_TOP_OF_MIND);
    assert_true(v->content >= 0);
    assert_false(f.dec.alerts & CAD_ALERT_SILENT);
    cad_local_time_t lt;
    cad_tz_local(NULL, FX_T0 - D, &lt); /* due at 27 days: yesterday */
    assert_int_equal(v->trigger_key, lt.day_number);
}

static void test_r6_recently_heard_customer_is_not_silent(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    fx_touch(&f, FX_PROJECT_THANK_YOU, FX_T0 - 5 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_verdict(&f, FX_TOP_OF_MIND, CAD_VERDICT_WAIT, CAD_REASON_NOT_SILENT);
    assert_int_equal(fx_v(&f, FX_TOP_OF_MIND)->until, FX_T0 + 22 * D);
    assert_int_equal(f.dec.next_eval, FX_T0 + 22 * D);
}

static void test_r6_max_silence_without_content_raises_gap_and_sends_nothing(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    f.snap.customer.created_at = FX_T0 - 400 * D;
    fx_cast(&f);
    for (int i = 0; i < pb.n_content; i++)
        fx_row(&f, FX_TOP_OF_MIND, CAD_PURPOSE_VALUE, FX_EMAIL, FX_T0 - (300 - i * 20) * D,
               1000 + i, i, CAD_TOUCH_DELIVERED);
    fx_row(&f, FX_ANNIVERSARY_THANKS, CAD_PURPOSE_APPRECIATION, FX_EMAIL, FX_T0 - 100 * D, 1, -1,
           CAD_TOUCH_DROPPED); /* this year's anniversary was decided (and dropped) */
    assert_int_equal(fx_decide(&f, FX_T0 - 60 * D + 31 * D), 0);
    assert_verdict(&f, FX_TOP_OF_MIND, CAD_VERDICT_SUPPRESS, CAD_REASON_CONTENT_GAP);
    assert_false(fx_v(&f, FX_TOP_OF_MIND)->final);
    assert_true(f.dec.alerts & CAD_ALERT_CONTENT_GAP);
    assert_true(f.dec.alerts & CAD_ALERT_SILENT);
    assert_nothing_sent(&f);
}

/* ---- R7 tailored ---- */

static void test_r7_best_interest_overlap_wins_ties_by_config_order(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    f.snap.customer.created_at = FX_T0 - 100 * D;
    f.snap.customer.interests = FX_BIT(FX_T_AUTOMATION) | FX_BIT(FX_T_BEST_PRACTICES);
    fx_touch(&f, FX_PROJECT_THANK_YOU, FX_T0 - 28 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_TOP_OF_MIND);
    /* automation_recipes (4) and best_practices_digest (11) both match 100% */
    assert_int_equal(fx_v(&f, FX_TOP_OF_MIND)->content, 4);
    assert_true(fx_v(&f, FX_TOP_OF_MIND)->relevance > 0.99);
    /* once sent, the next best is the other perfect match */
    fx_row(&f, FX_TOP_OF_MIND, CAD_PURPOSE_VALUE, FX_EMAIL, FX_T0 - 40 * D, 7, 4,
           CAD_TOUCH_DELIVERED);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_int_equal(fx_v(&f, FX_TOP_OF_MIND)->content, 11);
}

static void test_r7_below_min_relevance_is_never_sent(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    f.snap.customer.created_at = FX_T0 - 100 * D;
    f.snap.customer.interests = FX_BIT(FX_T_SECURITY) | FX_BIT(FX_T_PRODUCT_NEWS);
    fx_touch(&f, FX_PROJECT_THANK_YOU, FX_T0 - 28 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_TOP_OF_MIND);
    /* security_checklist, not the expired product news item */
    assert_int_equal(fx_v(&f, FX_TOP_OF_MIND)->content, 3);
    fx_row(&f, FX_TOP_OF_MIND, CAD_PURPOSE_VALUE, FX_EMAIL, FX_T0 - 50 * D, 7, 3,
           CAD_TOUCH_DELIVERED);
    /* now only the off-topic digest overlaps (2 of 5 = 40%); with a 50% minimum it is refused */
    pb.policies[FX_DEFAULT].min_relevance = 0.5;
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    pb.policies[FX_DEFAULT].min_relevance = 0.3;
    assert_verdict(&f, FX_TOP_OF_MIND, CAD_VERDICT_SUPPRESS, CAD_REASON_LOW_RELEVANCE);
    assert_true(f.dec.alerts & CAD_ALERT_CONTENT_GAP);
    assert_nothing_sent(&f);
    /* at the 30% minimum it is acceptable */
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_TOP_OF_MIND);
    assert_int_equal(fx_v(&f, FX_TOP_OF_MIND)->content, 10);
}

/* ---- R8 right recipient ---- */

static void test_r8_operational_survey_goes_to_users_not_decision_maker(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    int64_t key = fx_event(&f, CAD_EVENT_PROJECT_COMPLETED, FX_T0 - 8 * D);
    fx_row(&f, FX_PROJECT_THANK_YOU, CAD_PURPOSE_APPRECIATION, FX_EMAIL, FX_T0 - 4 * D, key, -1,
           CAD_TOUCH_DELIVERED);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_OPERATIONAL_SURVEY);
    assert_string_equal(f.contacts[fx_v(&f, FX_OPERATIONAL_SURVEY)->contact].id, "user");
}

static void test_r8_no_contact_with_role_suppresses(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_contact(&f, "dm", DM, FX_CH(FX_EMAIL));
    int64_t key = fx_event(&f, CAD_EVENT_PROJECT_COMPLETED, FX_T0 - 8 * D);
    fx_row(&f, FX_PROJECT_THANK_YOU, CAD_PURPOSE_APPRECIATION, FX_EMAIL, FX_T0 - 4 * D, key, -1,
           CAD_TOUCH_DELIVERED);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_verdict(&f, FX_OPERATIONAL_SURVEY, CAD_VERDICT_SUPPRESS, CAD_REASON_NO_CONTACT_ROLE);
    assert_false(fx_v(&f, FX_OPERATIONAL_SURVEY)->final);
    assert_nothing_sent(&f);
    /* the drop is recorded when it turns stale: wake at the window's end */
    assert_true(f.dec.next_eval <= FX_T0 - 8 * D + 21 * D + 1);
}

/* ---- R9 close the loop ---- */

static void test_r9_feedback_actioned_yields_follow_up_within_sla(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    fx_touch(&f, FX_PROJECT_THANK_YOU, FX_T0 - 4 * D);
    fx_event(&f, CAD_EVENT_FEEDBACK_RECEIVED, FX_T0 - 10 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_false(f.dec.alerts & CAD_ALERT_LOOP_OVERDUE);
    assert_true(f.dec.next_eval <= FX_T0 + 11 * D + 1); /* the SLA deadline */
    fx_event(&f, CAD_EVENT_FEEDBACK_ACTIONED, FX_T0 - 1 * H);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_FEEDBACK_FOLLOWUP);
    assert_false(f.dec.alerts & CAD_ALERT_LOOP_OVERDUE);
    /* once followed up, a second "actioned" for the same feedback is not needed */
    fx_row(&f, FX_FEEDBACK_FOLLOWUP, CAD_PURPOSE_FOLLOWUP, FX_EMAIL, FX_T0, f.events[1].key, -1,
           CAD_TOUCH_DELIVERED);
    fx_event(&f, CAD_EVENT_FEEDBACK_ACTIONED, FX_T0 + 5 * D);
    assert_int_equal(fx_decide(&f, FX_T0 + 6 * D), 0);
    assert_verdict(&f, FX_FEEDBACK_FOLLOWUP, CAD_VERDICT_SKIP, CAD_REASON_LOOP_CLOSED);
    assert_int_equal(fx_decide(&f, FX_T0 + 60 * D), 0);
    assert_false(f.dec.alerts & CAD_ALERT_LOOP_OVERDUE);
}

static void test_r9_open_loop_past_sla_raises_alert(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    fx_touch(&f, FX_PROJECT_THANK_YOU, FX_T0 - 4 * D);
    fx_event(&f, CAD_EVENT_FEEDBACK_RECEIVED, FX_T0 - 22 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_true(f.dec.alerts & CAD_ALERT_LOOP_OVERDUE);
    /* actioned late: the follow-up chosen now closes the loop */
    fx_event(&f, CAD_EVENT_FEEDBACK_ACTIONED, FX_T0 - 1 * H);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_FEEDBACK_FOLLOWUP);
    assert_false(f.dec.alerts & CAD_ALERT_LOOP_OVERDUE);
    f.snap.n_events--;
    /* a follow-up pending in the outbox closes the loop */
    fx_row(&f, FX_FEEDBACK_FOLLOWUP, CAD_PURPOSE_FOLLOWUP, FX_EMAIL, FX_T0 - 1 * H, 5, -1,
           CAD_TOUCH_PENDING);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_false(f.dec.alerts & CAD_ALERT_LOOP_OVERDUE);
}

/* ---- R10 consent and hours ---- */

static void test_r10_no_consent_on_any_channel_suppresses(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_contact(&f, "billing", BILL, 0); /* address without consent */
    fx_contact(&f, "user", USER, FX_CH(FX_EMAIL));
    f.contacts[0].no_consent = FX_CH(FX_EMAIL) | FX_CH(FX_SMS);
    fx_touch(&f, FX_TOP_OF_MIND, FX_T0 - 10 * D);
    fx_event(&f, CAD_EVENT_RENEWAL_DUE, FX_T0 - 1 * H);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_verdict(&f, FX_RENEWAL_REMINDER, CAD_VERDICT_SUPPRESS, CAD_REASON_NO_CONSENT);
    /* the sentence names the cause found, not a list of possibilities */
    char why[512];
    cad_verdict_describe(&pb, &f.snap, fx_v(&f, FX_RENEWAL_REMINDER), why, sizeof why);
    assert_non_null(strstr(why, "(no consent)."));
    f.contacts[0].no_consent = FX_CH(FX_EMAIL);
    f.contacts[0].unusable = FX_CH(FX_SMS);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    cad_verdict_describe(&pb, &f.snap, fx_v(&f, FX_RENEWAL_REMINDER), why, sizeof why);
    assert_non_null(strstr(why, "(no consent or marked unusable after a permanent failure)."));
    f.contacts[0].unusable = 0;
    f.contacts[0].no_consent = 0;
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    cad_verdict_describe(&pb, &f.snap, fx_v(&f, FX_RENEWAL_REMINDER), why, sizeof why);
    assert_non_null(strstr(why, "(no address, or the address is on the suppression list)."));
    f.contacts[0].no_consent = FX_CH(FX_EMAIL) | FX_CH(FX_SMS);
    /* consent on SMS only: the SMS channel is used */
    f.contacts[0].reachable = FX_CH(FX_SMS);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_RENEWAL_REMINDER);
    assert_int_equal(fx_v(&f, FX_RENEWAL_REMINDER)->channel, FX_SMS);
}

/* A follow-up due at `now` in `zone`, contact reachable on `reach`. */
static void follow_up_at(fx_t *f, const char *zone, cad_time_t now, uint16_t reach)
{
    fx_init(f, &pb, "acme", CAD_STAGE_ACTIVE, zone);
    f->snap.customer.created_at = now - 20 * D;
    fx_contact(f, "user", USER, reach);
    fx_touch(f, FX_PROJECT_THANK_YOU, now - 5 * D);
    fx_event(f, CAD_EVENT_FEEDBACK_ACTIONED, now - 1 * H);
    assert_int_equal(fx_decide(f, now), 0);
}

static void test_r10_quiet_hours_across_dst_los_angeles(void **state)
{
    fx_t f;
    /* Sat 2026-03-07 22:00 PST -> Sun 08:00 PDT (15:00Z) */
    follow_up_at(&f, "America/Los_Angeles", 1772949600, FX_CH(FX_EMAIL));
    assert_verdict(&f, FX_FEEDBACK_FOLLOWUP, CAD_VERDICT_DEFER, CAD_REASON_QUIET_HOURS);
    assert_int_equal(fx_v(&f, FX_FEEDBACK_FOLLOWUP)->until, 1772982000);
    /* Sat 2026-10-31 22:00 PDT -> Sun 08:00 PST (16:00Z) */
    follow_up_at(&f, "America/Los_Angeles", 1793509200, FX_CH(FX_EMAIL));
    assert_verdict(&f, FX_FEEDBACK_FOLLOWUP, CAD_VERDICT_DEFER, CAD_REASON_QUIET_HOURS);
    assert_int_equal(fx_v(&f, FX_FEEDBACK_FOLLOWUP)->until, 1793548800);
    /* and at 08:00 local it goes */
    follow_up_at(&f, "America/Los_Angeles", 1793548800, FX_CH(FX_EMAIL));
    assert_sent(&f, FX_FEEDBACK_FOLLOWUP);
}

static void test_r10_quiet_hours_across_dst_london(void **state)
{
    fx_t f;
    /* Sat 2026-03-28 21:00 GMT -> Sun 08:00 BST (07:00Z) */
    follow_up_at(&f, "Europe/London", 1774731600, FX_CH(FX_EMAIL));
    assert_verdict(&f, FX_FEEDBACK_FOLLOWUP, CAD_VERDICT_DEFER, CAD_REASON_QUIET_HOURS);
    assert_int_equal(fx_v(&f, FX_FEEDBACK_FOLLOWUP)->until, 1774767600);
    /* Sat 2026-10-24 21:00 BST -> Sun 08:00 GMT (08:00Z) */
    follow_up_at(&f, "Europe/London", 1792872000, FX_CH(FX_EMAIL));
    assert_verdict(&f, FX_FEEDBACK_FOLLOWUP, CAD_VERDICT_DEFER, CAD_REASON_QUIET_HOURS);
    assert_int_equal(fx_v(&f, FX_FEEDBACK_FOLLOWUP)->until, 1792915200);
    char why[256];
    cad_verdict_describe(&pb, &f.snap, fx_v(&f, FX_FEEDBACK_FOLLOWUP), why, sizeof(why));
    assert_string_equal(why, "Deferred until Sun 2026-10-25 08:00 Europe/London: quiet hours "
                             "20:00\u201308:00 in the customer's time zone.");
}

static void test_r10_sms_window_holds_even_without_quiet_hours(void **state)
{
    fx_t f;
    pb.policies[FX_DEFAULT].quiet_start = pb.policies[FX_DEFAULT].quiet_end = 0;
    /* Sat 2026-03-07 21:30 PST, SMS only: 08:00 PDT next morning */
    follow_up_at(&f, "America/Los_Angeles", 1772949600 - 30 * 60, FX_CH(FX_SMS));
    assert_verdict(&f, FX_FEEDBACK_FOLLOWUP, CAD_VERDICT_DEFER, CAD_REASON_QUIET_HOURS);
    assert_int_equal(fx_v(&f, FX_FEEDBACK_FOLLOWUP)->channel, FX_SMS);
    assert_int_equal(fx_v(&f, FX_FEEDBACK_FOLLOWUP)->until, 1772982000);
    /* email at the same moment is fine: no window on email */
    follow_up_at(&f, "America/Los_Angeles", 1772949600 - 30 * 60, FX_CH(FX_EMAIL));
    assert_sent(&f, FX_FEEDBACK_FOLLOWUP);
    /* Sat 2026-10-31 21:30 PDT -> Sun 08:00 PST (16:00Z) */
    follow_up_at(&f, "America/Los_Angeles", 1793509200 - 30 * 60, FX_CH(FX_SMS));
    assert_verdict(&f, FX_FEEDBACK_FOLLOWUP, CAD_VERDICT_DEFER, CAD_REASON_QUIET_HOURS);
    assert_int_equal(fx_v(&f, FX_FEEDBACK_FOLLOWUP)->until, 1793548800);
    /* London, Sat 2026-03-28 21:30 GMT -> Sun 08:00 BST (07:00Z) */
    follow_up_at(&f, "Europe/London", 1774731600 + 30 * 60, FX_CH(FX_SMS));
    assert_verdict(&f, FX_FEEDBACK_FOLLOWUP, CAD_VERDICT_DEFER, CAD_REASON_QUIET_HOURS);
    assert_int_equal(fx_v(&f, FX_FEEDBACK_FOLLOWUP)->until, 1774767600);
    /* London, Sat 2026-10-24 21:30 BST -> 08:00 GMT */
    follow_up_at(&f, "Europe/London", 1792872000 + 30 * 60, FX_CH(FX_SMS));
    assert_int_equal(fx_v(&f, FX_FEEDBACK_FOLLOWUP)->until, 1792915200);
    char why[256];
    cad_verdict_describe(&pb, &f.snap, fx_v(&f, FX_FEEDBACK_FOLLOWUP), why, sizeof(why));
    assert_string_equal(why, "Deferred until Sun 2026-10-25 08:00 Europe/London: the sms window "
                             "08:00\u201321:00 in the customer's time zone.");
    /* 20:59 in the SMS window is still allowed */
    follow_up_at(&f, "Europe/London", 1792872000 - 60, FX_CH(FX_SMS));
    pb.policies[FX_DEFAULT].quiet_start = 20 * 60;
    pb.policies[FX_DEFAULT].quiet_end = 8 * 60;
    assert_sent(&f, FX_FEEDBACK_FOLLOWUP);
}

static void test_r10_bypass_quiet_hours_keeps_the_sms_window(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, "Europe/London");
    cad_time_t now = 1792872000 + 15 * 60; /* 21:15 BST */
    f.snap.customer.created_at = now - 20 * D;
    fx_contact(&f, "billing", BILL, FX_CH(FX_EMAIL) | FX_CH(FX_SMS));
    fx_event(&f, CAD_EVENT_INVOICE_ISSUED, now - 1 * H);
    assert_int_equal(fx_decide(&f, now), 0);
    assert_sent(&f, FX_INVOICE_NOTICE); /* email, quiet hours bypassed */
    pb.rules[FX_INVOICE_NOTICE].channels[0] = FX_SMS;
    assert_int_equal(fx_decide(&f, now), 0);
    pb.rules[FX_INVOICE_NOTICE].channels[0] = FX_EMAIL;
    assert_verdict(&f, FX_INVOICE_NOTICE, CAD_VERDICT_DEFER, CAD_REASON_QUIET_HOURS);
    assert_int_equal(fx_v(&f, FX_INVOICE_NOTICE)->until, 1792915200);
}

static void test_r10_weekday_not_allowed_defers_to_monday(void **state)
{
    fx_t f;
    cad_time_t sat = 1773489600; /* Sat 2026-03-14 12:00Z */
    follow_up_at(&f, NULL, sat, FX_CH(FX_EMAIL));
    assert_sent(&f, FX_FEEDBACK_FOLLOWUP);
    f.snap.customer.policy = FX_ENTERPRISE; /* Monday to Friday */
    f.history[0].at = sat - 5 * D;
    assert_int_equal(fx_decide(&f, sat), 0);
    assert_verdict(&f, FX_FEEDBACK_FOLLOWUP, CAD_VERDICT_DEFER, CAD_REASON_WEEKDAY);
    assert_int_equal(fx_v(&f, FX_FEEDBACK_FOLLOWUP)->until, 1773648000); /* Mon 08:00 */
}

static void test_r10_jitter_is_deterministic_and_inside_the_window(void **state)
{
    pb.policies[FX_DEFAULT].jitter = 30 * CAD_MINUTE;
    int distinct = 0;
    cad_time_t first = 0;
    for (int i = 0; i < 50; i++) {
        char id[32];
        snprintf(id, sizeof(id), "customer-%d", i);
        fx_t f, g;
        follow_up_at(&f, "Europe/London", 1792872000, FX_CH(FX_EMAIL));
        fx_name(f.id, id);
        assert_int_equal(fx_decide(&f, 1792872000), 0);
        g = f;
        g.snap.customer.id = g.id;
        g.snap.contacts = g.contacts;
        g.snap.events = g.events;
        g.snap.history = g.history;
        g.dec.verdicts = g.verdicts;
        assert_int_equal(fx_decide(&g, 1792872000), 0);
        cad_time_t u = fx_v(&f, FX_FEEDBACK_FOLLOWUP)->until;
        assert_int_equal(u, fx_v(&g, FX_FEEDBACK_FOLLOWUP)->until);
        assert_true(u >= 1792915200 && u < 1792915200 + 30 * CAD_MINUTE);
        if (i == 0)
            first = u;
        else if (u != first)
            distinct++;
    }
    pb.policies[FX_DEFAULT].jitter = 0;
    assert_true(distinct > 0);
}

/* ---- R11 defer, don't drop (unless past expiry) ---- */

static void test_r11_deferral_inside_expiry_is_kept(void **state)
{
    fx_t f;
    follow_up_at(&f, "Europe/London", 1792872000, FX_CH(FX_EMAIL));
    assert_verdict(&f, FX_FEEDBACK_FOLLOWUP, CAD_VERDICT_DEFER, CAD_REASON_QUIET_HOURS);
    assert_false(fx_v(&f, FX_FEEDBACK_FOLLOWUP)->final);
}

static void test_r11_touch_deferred_past_expiry_is_dropped_with_reason(void **state)
{
    fx_t f;
    cad_time_t now = 1792872000; /* 21:00 BST; 08:00 is 11 hours away */
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, "Europe/London");
    f.snap.customer.created_at = now - 20 * D;
    fx_contact(&f, "user", USER, FX_CH(FX_EMAIL));
    fx_touch(&f, FX_PROJECT_THANK_YOU, now - 5 * D);
    fx_event(&f, CAD_EVENT_FEEDBACK_ACTIONED, now - 14 * D + 2 * H); /* expires in 2 hours */
    assert_int_equal(fx_decide(&f, now), 0);
    assert_verdict(&f, FX_FEEDBACK_FOLLOWUP, CAD_VERDICT_SUPPRESS, CAD_REASON_EXPIRED);
    assert_true(fx_v(&f, FX_FEEDBACK_FOLLOWUP)->final);
    char why[256];
    cad_verdict_describe(&pb, &f.snap, fx_v(&f, FX_FEEDBACK_FOLLOWUP), why, sizeof(why));
    assert_non_null(strstr(why, "past the touch's expiry"));
    assert_non_null(strstr(why, "Sun 2026-10-25 08:00 Europe/London"));
}

static void test_r11_short_expiry_ends_an_event_touch_before_its_window(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    fx_touch(&f, FX_TOP_OF_MIND, FX_T0 - 20 * D);
    fx_touch(&f, FX_WELCOME_GUIDE, FX_T0 - 5 * D);
    fx_event(&f, CAD_EVENT_PURCHASE, FX_T0 - 18 * D); /* window opened 4 days ago */
    pb.rules[FX_REVIEW_REQUEST].touch_expiry = 3 * D;
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_verdict(&f, FX_REVIEW_REQUEST, CAD_VERDICT_SUPPRESS, CAD_REASON_EXPIRED);
    assert_true(fx_v(&f, FX_REVIEW_REQUEST)->final);
    assert_int_equal(fx_v(&f, FX_REVIEW_REQUEST)->expires_at, FX_T0 - 1 * D);
    /* two days into the window it is still sendable */
    f.events[0].at = FX_T0 - 16 * D;
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    pb.rules[FX_REVIEW_REQUEST].touch_expiry = 16 * D;
    assert_sent(&f, FX_REVIEW_REQUEST);
    assert_int_equal(fx_v(&f, FX_REVIEW_REQUEST)->expires_at, FX_T0 + 1 * D);
}

/* ---- R12 measure: every verdict has a reason and a sentence ---- */

static void test_r12_every_verdict_is_explained(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, "Europe/London");
    fx_cast(&f);
    fx_touch(&f, FX_TOP_OF_MIND, FX_T0 - 1 * D);
    fx_event(&f, CAD_EVENT_PURCHASE, FX_T0 - 40 * D);
    fx_event(&f, CAD_EVENT_PROJECT_COMPLETED, FX_T0 - 3 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_int_equal(f.dec.n_verdicts, FX_RULE_COUNT);
    for (int i = 0; i < f.dec.n_verdicts; i++) {
        const cad_verdict_t *v = fx_v(&f, i);
        assert_int_equal(v->rule, i);
        assert_int_not_equal(v->reason, CAD_REASON_NONE);
        char why[512];
        int n = cad_verdict_describe(&pb, &f.snap, v, why, sizeof(why));
        assert_true(n > 10 && (size_t)n < sizeof(why));
        assert_int_equal(strlen(why), (size_t)n);
    }
    char why[256];
    cad_verdict_describe(&pb, &f.snap, fx_v(&f, FX_PROJECT_THANK_YOU), why, sizeof(why));
    assert_string_equal(why, "Deferred until Wed 2026-03-11 12:00 Europe/London: at least 2d "
                             "between two touches to a customer.");
    /* truncation behaves like snprintf */
    char small[8];
    int n = cad_verdict_describe(&pb, &f.snap, fx_v(&f, FX_PROJECT_THANK_YOU), small, 8);
    assert_int_equal((size_t)n, strlen(why));
    assert_int_equal(strlen(small), 7);
}

static void test_r12_reason_names_round_trip_and_unknown_is_refused(void **state)
{
    for (int r = 0; r < CAD_REASON_COUNT; r++) {
        const char *name = cad_reason_name(r);
        assert_non_null(name);
        assert_int_equal(cad_reason_parse(name), r);
    }
    assert_string_equal(cad_reason_name(CAD_REASON_STALE), "stale");
    assert_string_equal(cad_reason_name(CAD_REASON_MIN_GAP), "min_gap");
    assert_string_equal(cad_verdict_name(CAD_VERDICT_DEFER), "defer");
    assert_int_equal(cad_reason_parse("bogus"), -1);
    assert_int_equal(cad_reason_parse(NULL), -1);
    assert_string_equal(cad_reason_name(CAD_REASON_COUNT), "unknown");
}

static void test_r12_malformed_snapshot_is_refused_with_where(void **state)
{
    fx_t f;
    char err[CAD_ERRBUF];
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    f.snap.customer.policy = 7;
    assert_int_equal(fx_decide(&f, FX_T0), -CAD_EINVAL);
    assert_int_equal(cad_engine_check(&pb, &f.snap, err), -CAD_EINVAL);
    assert_non_null(strstr(err, "customer acme"));
    assert_non_null(strstr(err, "policy 7"));
    f.snap.customer.policy = 0;
    fx_row(&f, 42, CAD_PURPOSE_VALUE, FX_EMAIL, FX_T0 - D, 1, -1, CAD_TOUCH_DELIVERED);
    assert_int_equal(cad_engine_check(&pb, &f.snap, err), -CAD_EINVAL);
    assert_non_null(strstr(err, "history 0 names rule 42"));
    f.history[0].rule = 0;
    f.history[0].content = 99;
    assert_int_equal(cad_engine_check(&pb, &f.snap, err), -CAD_EINVAL);
    assert_non_null(strstr(err, "content 99"));
    f.history[0].content = -1;
    fx_event(&f, 200, FX_T0 - D);
    assert_int_equal(cad_engine_check(&pb, &f.snap, err), -CAD_EINVAL);
    assert_non_null(strstr(err, "event 0 has type 200"));
    f.events[0].type = CAD_EVENT_PURCHASE;
    fx_event(&f, CAD_EVENT_PURCHASE, FX_T0 - 2 * D);
    f.events[0].at = FX_T0; /* break time order */
    assert_int_equal(cad_engine_check(&pb, &f.snap, err), -CAD_EINVAL);
    assert_non_null(strstr(err, "out of time order"));
    f.events[0].at = FX_T0 - 3 * D;
    assert_int_equal(cad_engine_check(&pb, &f.snap, err), 0);
    f.dec.verdicts = NULL;
    assert_int_equal(fx_decide(&f, FX_T0), -CAD_EINVAL);
}

/* ---- R13 once ---- */

static void test_r13_same_event_twice_yields_one_touch(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    fx_touch(&f, FX_TOP_OF_MIND, FX_T0 - 5 * D);
    int64_t key = fx_event(&f, CAD_EVENT_PROJECT_COMPLETED, FX_T0 - 3 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_PROJECT_THANK_YOU);
    assert_int_equal(fx_v(&f, FX_PROJECT_THANK_YOU)->trigger_key, key);
    char k[256];
    cad_touch_key(&pb, &f.snap, fx_v(&f, FX_PROJECT_THANK_YOU), k, sizeof(k));
    char expect[64];
    snprintf(expect, sizeof(expect), "acme/project_thank_you/e:%s",
             f.snap.events[fx_v(&f, FX_PROJECT_THANK_YOU)->event].id);
    assert_string_equal(k, expect);
    /* the decision is recorded; the same event re-imported changes nothing */
    fx_row(&f, FX_PROJECT_THANK_YOU, CAD_PURPOSE_APPRECIATION, FX_EMAIL, FX_T0, key, -1,
           CAD_TOUCH_PENDING);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(fx_decide(&f, FX_T0 + i * 3 * D), 0);
        assert_verdict(&f, FX_PROJECT_THANK_YOU, CAD_VERDICT_SKIP, CAD_REASON_ALREADY_DONE);
    }
    /* a failed or dropped row closes it just the same */
    f.history[1].state = CAD_TOUCH_FAILED;
    assert_int_equal(fx_decide(&f, FX_T0 + 3 * D), 0);
    assert_verdict(&f, FX_PROJECT_THANK_YOU, CAD_VERDICT_SKIP, CAD_REASON_ALREADY_DONE);
}

/* Ids may hold any UTF-8: the key percent-encodes them into printable ASCII
 * (a header value), "/" included so the separators stay unambiguous. */
static void test_r13_touch_key_of_utf8_ids_is_printable_ascii(void **state)
{
    (void)state;
    fx_t f;
    char k[CAD_TOUCH_KEY_MAX];
    fx_init(&f, &pb, "caf\xc3\xa9 b\xc3\xbcro/2", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    fx_event(&f, CAD_EVENT_PROJECT_COMPLETED, FX_T0 - 3 * D);
    f.events[0].id = "ord caf\xc3\xa9 100%";
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_PROJECT_THANK_YOU);
    assert_true(cad_touch_key(&pb, &f.snap, fx_v(&f, FX_PROJECT_THANK_YOU), k, sizeof(k)) > 0);
    assert_string_equal(k,
                        "caf%C3%A9%20b%C3%BCro%2F2/project_thank_you/e:ord%20caf%C3%A9%20100%25");
    /* plain ids are unchanged */
    fx_init(&f, &pb, "acme-1_x.y~z:@!", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    fx_event(&f, CAD_EVENT_PROJECT_COMPLETED, FX_T0 - 3 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    cad_touch_key(&pb, &f.snap, fx_v(&f, FX_PROJECT_THANK_YOU), k, sizeof(k));
    assert_string_equal(k, "acme-1_x.y~z:@!/project_thank_you/e:ev");
    /* the longest ids, every byte encoded, fit */
    static char id[CAD_ID_MAX + 1];
    memset(id, ' ', CAD_ID_MAX);
    f.snap.customer.id = id;
    f.events[0].id = id;
    int n = cad_touch_key(&pb, &f.snap, fx_v(&f, FX_PROJECT_THANK_YOU), k, sizeof(k));
    assert_true(n > 6 * CAD_ID_MAX && n < (int)sizeof(k));
}

static void test_r13_a_new_event_opens_a_new_touch(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    fx_touch(&f, FX_TOP_OF_MIND, FX_T0 - 30 * D);
    int64_t old = fx_event(&f, CAD_EVENT_PROJECT_COMPLETED, FX_T0 - 20 * D);
    fx_row(&f, FX_PROJECT_THANK_YOU, CAD_PURPOSE_APPRECIATION, FX_EMAIL, FX_T0 - 18 * D, old, -1,
           CAD_TOUCH_DELIVERED);
    int64_t fresh = fx_event(&f, CAD_EVENT_PROJECT_COMPLETED, FX_T0 - 3 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_PROJECT_THANK_YOU);
    assert_int_equal(fx_v(&f, FX_PROJECT_THANK_YOU)->trigger_key, fresh);
    /* recurring: one per period, keyed "p<period>" */
    f.snap.customer.created_at = FX_T0 - 181 * D;
    fx_row(&f, FX_NPS_SURVEY, CAD_PURPOSE_FEEDBACK, FX_EMAIL, FX_T0 - 12 * D, 1, -1,
           CAD_TOUCH_DELIVERED); /* the row of period 1, whatever its time */
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_verdict(&f, FX_NPS_SURVEY, CAD_VERDICT_SKIP, CAD_REASON_ALREADY_DONE);
    char k[128];
    cad_touch_key(&pb, &f.snap, fx_v(&f, FX_NPS_SURVEY), k, sizeof(k));
    assert_string_equal(k, "acme/nps_survey/p1");
}

/* ---- R14 pause ---- */

static void test_r14_paused_customer_gets_nothing_until_resumed(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    fx_touch(&f, FX_TOP_OF_MIND, FX_T0 - 5 * D);
    fx_event(&f, CAD_EVENT_INVOICE_ISSUED, FX_T0 - 1 * H);
    f.snap.customer.paused = true;
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_verdict(&f, FX_INVOICE_NOTICE, CAD_VERDICT_SUPPRESS, CAD_REASON_PAUSED);
    assert_false(fx_v(&f, FX_INVOICE_NOTICE)->final);
    assert_nothing_sent(&f);
    f.snap.customer.paused = false;
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_INVOICE_NOTICE);
}

static void test_r14_complaint_suppresses_asks_until_resolved(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    fx_cast(&f);
    fx_touch(&f, FX_TOP_OF_MIND, FX_T0 - 10 * D);
    fx_event(&f, CAD_EVENT_RENEWAL_DUE, FX_T0 - 2 * D);
    fx_event(&f, CAD_EVENT_COMPLAINT_OPENED, FX_T0 - 1 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_verdict(&f, FX_RENEWAL_REMINDER, CAD_VERDICT_SUPPRESS, CAD_REASON_SUPPRESSED_BY_EVENT);
    assert_sent(&f, FX_COMPLAINT_CALL_TASK); /* the call task goes to the CRM */
    assert_int_equal(fx_v(&f, FX_COMPLAINT_CALL_TASK)->channel, FX_CRM);
    /* resolved: the ask may go */
    fx_row(&f, FX_COMPLAINT_CALL_TASK, CAD_PURPOSE_FOLLOWUP, FX_CRM, FX_T0 - 20 * D,
           f.events[1].key, -1, CAD_TOUCH_DROPPED);
    fx_event(&f, CAD_EVENT_COMPLAINT_RESOLVED, FX_T0 - 1 * H);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_RENEWAL_REMINDER);
    /* a new complaint after the resolution is open again */
    fx_event(&f, CAD_EVENT_COMPLAINT_OPENED, FX_T0 - 30 * 60);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_verdict(&f, FX_RENEWAL_REMINDER, CAD_VERDICT_SUPPRESS, CAD_REASON_SUPPRESSED_BY_EVENT);
}

/* ---- more of R1, R6, R7, R10, R12 and the recurring calendar ---- */

static void test_r1_invoice_reaches_former_but_top_of_mind_not_at_risk(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_FORMER, NULL);
    fx_cast(&f);
    fx_event(&f, CAD_EVENT_INVOICE_ISSUED, FX_T0 - 1 * H);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_INVOICE_NOTICE);
    fx_t g;
    fx_init(&g, &pb, "acme", CAD_STAGE_AT_RISK, NULL);
    g.snap.customer.created_at = FX_T0 - 100 * D;
    fx_cast(&g);
    assert_int_equal(fx_decide(&g, FX_T0), 0);
    assert_verdict(&g, FX_TOP_OF_MIND, CAD_VERDICT_SKIP, CAD_REASON_STAGE);
    assert_false(g.dec.alerts & CAD_ALERT_SILENT); /* at-risk customers are not "silent" */
}

static void test_recurring_first_period_waits_and_periods_follow_sends(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    f.snap.customer.created_at = FX_T0 - 100 * D;
    fx_cast(&f);
    fx_touch(&f, FX_PROJECT_THANK_YOU, FX_T0 - 5 * D);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    /* no survey in the customer's first 180 days */
    assert_verdict(&f, FX_NPS_SURVEY, CAD_VERDICT_WAIT, CAD_REASON_NOT_YET);
    assert_int_equal(fx_v(&f, FX_NPS_SURVEY)->until, FX_T0 + 80 * D);
    /* usage tips: period 2 began 10 days ago, past its 7-day expiry, and was
     * never sent to this customer (imported mid-period): nothing is dropped,
     * the first tips wait for period 3 */
    assert_verdict(&f, FX_USAGE_TIPS, CAD_VERDICT_WAIT, CAD_REASON_NOT_YET);
    assert_false(fx_v(&f, FX_USAGE_TIPS)->final);
    assert_int_equal(fx_v(&f, FX_USAGE_TIPS)->until, FX_T0 + 35 * D);
    /* at the start of period 3 it is due, with content */
    fx_touch(&f, FX_PROJECT_THANK_YOU, FX_T0 + 30 * D); /* keeps top of mind quiet */
    assert_int_equal(fx_decide(&f, FX_T0 + 35 * D), 0);
    assert_sent(&f, FX_USAGE_TIPS);
    assert_int_equal(fx_v(&f, FX_USAGE_TIPS)->trigger_key, 3);
    assert_true(fx_v(&f, FX_USAGE_TIPS)->content >= 0);
    /* sent late in period 2 (an old row): period 3 waits a full period after it */
    fx_row(&f, FX_USAGE_TIPS, CAD_PURPOSE_VALUE, FX_EMAIL, FX_T0 - 3 * D, 2, 1,
           CAD_TOUCH_DELIVERED);
    assert_int_equal(fx_decide(&f, FX_T0 + 35 * D), 0);
    assert_verdict(&f, FX_USAGE_TIPS, CAD_VERDICT_WAIT, CAD_REASON_NOT_YET);
    assert_int_equal(fx_v(&f, FX_USAGE_TIPS)->until, FX_T0 + 42 * D);
}

static void test_recurring_period_missed_by_an_outage_is_dropped_not_sent_late(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    f.snap.customer.created_at = FX_T0 - 100 * D;
    fx_cast(&f);
    fx_touch(&f, FX_PROJECT_THANK_YOU, FX_T0 - 5 * D);
    /* tips went out in period 0; period 2 began 10 days ago while the daemon
     * was down: its touch is past its 7-day expiry and is dropped */
    fx_row(&f, FX_USAGE_TIPS, CAD_PURPOSE_VALUE, FX_EMAIL, FX_T0 - 56 * D, 0, 1,
           CAD_TOUCH_DELIVERED);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_verdict(&f, FX_USAGE_TIPS, CAD_VERDICT_SUPPRESS, CAD_REASON_EXPIRED);
    assert_true(fx_v(&f, FX_USAGE_TIPS)->final);
    assert_int_equal(fx_v(&f, FX_USAGE_TIPS)->trigger_key, 2);
}

static void test_r6_late_silence_touch_is_still_sent_once_per_stretch(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    f.snap.customer.created_at = FX_T0 - 400 * D;
    fx_cast(&f);
    fx_row(&f, FX_ANNIVERSARY_THANKS, CAD_PURPOSE_APPRECIATION, FX_EMAIL, FX_T0 - 50 * D, 1, -1,
           CAD_TOUCH_DELIVERED);
    fx_touch(&f, FX_INVOICE_NOTICE, FX_T0 - 3 * D); /* an invoice is no conversation */
    fx_event(&f, CAD_EVENT_INVOICE_ISSUED, FX_T0 - 1 * H);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_sent(&f, FX_INVOICE_NOTICE); /* transactional first; the silence goes on */
    assert_true(f.dec.alerts & CAD_ALERT_SILENT);
    assert_verdict(&f, FX_TOP_OF_MIND, CAD_VERDICT_DEFER, CAD_REASON_LOST_PRIORITY);
    f.snap.n_events--;
    pb.policies[FX_DEFAULT].min_gap = 0;
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    pb.policies[FX_DEFAULT].min_gap = 2 * D;
    assert_sent(&f, FX_TOP_OF_MIND); /* due 23 days ago, still worth sending */
    cad_local_time_t due;
    cad_tz_local(NULL, FX_T0 - 50 * D + 27 * D, &due);
    assert_int_equal(fx_v(&f, FX_TOP_OF_MIND)->trigger_key, due.day_number);
    char k[128], expect[128];
    cad_touch_key(&pb, &f.snap, fx_v(&f, FX_TOP_OF_MIND), k, sizeof(k));
    snprintf(expect, sizeof(expect), "acme/top_of_mind/s%lld", (long long)due.day_number);
    assert_string_equal(k, expect);
    /* the same stretch, once decided (even if it failed), is not sent again */
    fx_row(&f, FX_TOP_OF_MIND, CAD_PURPOSE_VALUE, FX_EMAIL, FX_T0, due.day_number, 4,
           CAD_TOUCH_FAILED);
    assert_int_equal(fx_decide(&f, FX_T0 + 1 * H), 0);
    assert_verdict(&f, FX_TOP_OF_MIND, CAD_VERDICT_SKIP, CAD_REASON_ALREADY_DONE);
    assert_true(f.dec.alerts & CAD_ALERT_SILENT);
}

static void test_r7_future_content_wakes_the_customer_when_valid(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, NULL);
    f.snap.customer.created_at = FX_T0 - 100 * D;
    fx_cast(&f);
    fx_touch(&f, FX_PROJECT_THANK_YOU, FX_T0 - 28 * D);
    for (int i = 0; i < pb.n_content; i++)
        if (i != 9)
            fx_row(&f, FX_TOP_OF_MIND, CAD_PURPOSE_VALUE, FX_EMAIL, FX_T0 - 90 * D + i, 500 + i, i,
                   CAD_TOUCH_DELIVERED);
    pb.content[9].valid_from = FX_T0 + 5 * D;
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    pb.content[9].valid_from = 0;
    assert_verdict(&f, FX_TOP_OF_MIND, CAD_VERDICT_SUPPRESS, CAD_REASON_CONTENT_GAP);
    assert_true(f.dec.next_eval <= FX_T0 + 5 * D);
    assert_int_equal(fx_decide(&f, FX_T0 + 5 * D), 0);
    assert_sent(&f, FX_TOP_OF_MIND);
    assert_int_equal(fx_v(&f, FX_TOP_OF_MIND)->content, 9);
}

static void test_r10_disjoint_quiet_hours_and_sms_window_drop_the_touch(void **state)
{
    fx_t f;
    /* quiet 08:00-21:00 leaves 21:00-08:00, exactly what the SMS window forbids */
    pb.policies[FX_DEFAULT].quiet_start = 8 * 60;
    pb.policies[FX_DEFAULT].quiet_end = 21 * 60;
    follow_up_at(&f, "Europe/London", FX_T0, FX_CH(FX_SMS));
    pb.policies[FX_DEFAULT].quiet_start = 20 * 60;
    pb.policies[FX_DEFAULT].quiet_end = 8 * 60;
    assert_verdict(&f, FX_FEEDBACK_FOLLOWUP, CAD_VERDICT_SUPPRESS, CAD_REASON_EXPIRED);
    assert_true(fx_v(&f, FX_FEEDBACK_FOLLOWUP)->final);
}

static void test_r12_every_reason_has_a_sentence(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_ACTIVE, "America/Los_Angeles");
    fx_cast(&f);
    fx_event(&f, CAD_EVENT_PURCHASE, FX_T0 - 3 * D);
    for (int r = CAD_REASON_DUE; r < CAD_REASON_COUNT; r++) {
        for (int k = CAD_VERDICT_SKIP; k <= CAD_VERDICT_SUPPRESS; k++) {
            for (int rule = 0; rule < FX_RULE_COUNT; rule++) {
                cad_verdict_t v = {.rule = rule,
                                   .kind = k,
                                   .reason = r,
                                   .until = FX_T0 + D,
                                   .event = rule == FX_REVIEW_REQUEST ? 0 : -1,
                                   .contact = 1,
                                   .channel = pb.rules[rule].channels[0],
                                   .content = pb.rules[rule].use_library ? 2 : -1,
                                   .expires_at = FX_T0 + 2 * D,
                                   .relevance = 0.5};
                char why[512];
                int n = cad_verdict_describe(&pb, &f.snap, &v, why, sizeof(why));
                assert_true(n > 20 && (size_t)n < sizeof(why));
                assert_null(strstr(why, "unknown"));
                assert_int_equal(why[n - 1], '.');
                if (k == CAD_VERDICT_DEFER || k == CAD_VERDICT_WAIT)
                    assert_non_null(strstr(why, "America/Los_Angeles"));
            }
        }
    }
    cad_verdict_t bad = {.rule = 99};
    char why[64];
    assert_true(cad_verdict_describe(&pb, &f.snap, &bad, why, sizeof(why)) > 0);
    assert_string_equal(why, "No such rule.");
    assert_true(cad_touch_key(&pb, &f.snap, &bad, why, sizeof(why)) < 0);
}

/* ---- holdout and next evaluation ---- */

static void test_holdout_is_deterministic_and_near_its_share(void **state)
{
    int held = 0;
    for (int i = 0; i < 2000; i++) {
        fx_t f;
        char id[32];
        snprintf(id, sizeof(id), "cust-%05d", i);
        fx_init(&f, &pb, id, CAD_STAGE_FORMER, NULL);
        fx_contact(&f, "dm", DM, FX_CH(FX_EMAIL));
        fx_event(&f, CAD_EVENT_CHURNED, FX_T0 - 61 * D);
        assert_int_equal(fx_decide(&f, FX_T0), 0);
        const cad_verdict_t *v = fx_v(&f, FX_WIN_BACK);
        enum cad_reason first = v->reason;
        if (v->reason == CAD_REASON_HELD_OUT) {
            held++;
            assert_true(v->final);
        } else {
            assert_sent(&f, FX_WIN_BACK);
        }
        assert_int_equal(fx_decide(&f, FX_T0 + 60), 0);
        assert_int_equal(fx_v(&f, FX_WIN_BACK)->reason, first);
    }
    assert_in_range(held, 60, 140); /* 5% of 2000 = 100 */
}

static void test_next_eval_is_never_when_nothing_can_change(void **state)
{
    fx_t f;
    fx_init(&f, &pb, "acme", CAD_STAGE_PROSPECT, NULL);
    fx_cast(&f);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_int_equal(f.dec.next_eval, CAD_TIME_NEVER);
    assert_int_equal(f.dec.chosen, -1);
    /* an active customer always has a silence horizon */
    f.snap.customer.stage = CAD_STAGE_ACTIVE;
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_int_equal(f.dec.next_eval, FX_T0 - 20 * D + 27 * D);
}

/* ---- property tests: caps and sliding windows ---- */

static uint64_t rng_state;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int64_t rng_range(int64_t lo, int64_t hi)
{
    return lo + (int64_t)(rng() % (uint64_t)(hi - lo + 1));
}

/* Brute force: the earliest t >= now at which every cap on `ch` admits one
 * more touch, trying every instant at which a counted touch leaves a window. */
static cad_time_t reference_free(const cad_policy_t *p, const fx_t *f, int ch, cad_time_t now)
{
    cad_time_t best = CAD_TIME_NEVER;
    for (int cand = -1; cand < f->snap.n_history * p->n_caps; cand++) {
        cad_time_t t = now;
        if (cand >= 0) {
            const cad_history_t *h = &f->history[cand / p->n_caps];
            t = h->at + p->caps[cand % p->n_caps].window;
        }
        if (t < now || t >= best)
            continue;
        bool ok = true;
        for (int k = 0; k < p->n_caps && ok; k++) {
            const cad_cap_t *cap = &p->caps[k];
            if (cap->channel != -1 && cap->channel != ch)
                continue;
            uint32_t n = 0;
            for (int i = 0; i < f->snap.n_history; i++) {
                const cad_history_t *h = &f->history[i];
                bool live = h->state == CAD_TOUCH_PENDING || h->state == CAD_TOUCH_DELIVERED;
                if (live && h->at <= now && h->at > t - cap->window &&
                    (cap->channel == -1 || cap->channel == h->channel))
                    n++;
            }
            ok = n < cap->count;
        }
        if (ok)
            best = t;
    }
    return best;
}

static void test_r5_property_caps_match_brute_force_reference(void **state)
{
    cad_policy_t saved = pb.policies[FX_DEFAULT];
    cad_channel_t saved_sms = pb.channels[FX_SMS];
    cad_policy_t *p = &pb.policies[FX_DEFAULT];
    p->min_gap = 0;
    p->quiet_start = p->quiet_end = 0;
    pb.channels[FX_SMS].window_start = pb.channels[FX_SMS].window_end = 0;
    rng_state = UINT64_C(0x9e3779b97f4a7c15);
    int sent = 0, deferred = 0;
    for (int round = 0; round < 4000; round++) {
        p->n_caps = (int)rng_range(1, 3);
        for (int k = 0; k < p->n_caps; k++) {
            p->caps[k].channel = (int)rng_range(-1, 1);
            p->caps[k].count = (uint32_t)rng_range(1, 4);
            p->caps[k].window = rng_range(1, 10 * 24) * CAD_HOUR;
        }
        fx_t f;
        fx_init(&f, &pb, "prop", CAD_STAGE_ACTIVE, NULL);
        fx_contact(&f, "user", USER, FX_CH(FX_EMAIL) | FX_CH(FX_SMS));
        int rows = (int)rng_range(0, 14);
        for (int i = 0; i < rows; i++)
            fx_row(&f, -1, CAD_PURPOSE_VALUE, (int)rng_range(0, 1),
                   FX_T0 - rng_range(0, 15 * 24 * 60) * 60, i, -1,
                   (enum cad_touch_state)rng_range(0, 3));
        fx_event(&f, CAD_EVENT_FEEDBACK_ACTIONED, FX_T0 - 1 * H);
        assert_int_equal(fx_decide(&f, FX_T0), 0);
        cad_time_t e = reference_free(p, &f, FX_EMAIL, FX_T0);
        cad_time_t s = reference_free(p, &f, FX_SMS, FX_T0);
        const cad_verdict_t *v = fx_v(&f, FX_FEEDBACK_FOLLOWUP);
        if (e == FX_T0 || s == FX_T0) {
            assert_sent(&f, FX_FEEDBACK_FOLLOWUP);
            assert_int_equal(v->channel, e == FX_T0 ? FX_EMAIL : FX_SMS);
            sent++;
            continue;
        }
        deferred++;
        assert_verdict(&f, FX_FEEDBACK_FOLLOWUP, CAD_VERDICT_DEFER, CAD_REASON_CHANNEL_CAP);
        cad_time_t until = e <= s ? e : s;
        assert_int_equal(v->until, until);
        assert_int_equal(v->channel, e <= s ? FX_EMAIL : FX_SMS);
        /* the window really frees then, and not a second earlier */
        assert_int_equal(fx_decide(&f, until), 0);
        assert_sent(&f, FX_FEEDBACK_FOLLOWUP);
        assert_int_equal(fx_decide(&f, until - 1), 0);
        assert_int_equal(fx_v(&f, FX_FEEDBACK_FOLLOWUP)->kind, CAD_VERDICT_DEFER);
    }
    pb.policies[FX_DEFAULT] = saved;
    pb.channels[FX_SMS] = saved_sms;
    assert_true(sent > 400 && deferred > 400); /* both paths were exercised */
}

static void test_r5_property_min_gap_and_counts_match_reference(void **state)
{
    /* random touch sequences: the gap verdict agrees with the newest counted touch */
    rng_state = UINT64_C(0x1234567887654321);
    cad_policy_t saved = pb.policies[FX_DEFAULT];
    cad_policy_t *p = &pb.policies[FX_DEFAULT];
    p->n_caps = 0;
    p->quiet_start = p->quiet_end = 0;
    for (int round = 0; round < 3000; round++) {
        p->min_gap = rng_range(1, 96) * CAD_HOUR;
        fx_t f;
        fx_init(&f, &pb, "prop", CAD_STAGE_ACTIVE, NULL);
        fx_contact(&f, "user", USER, FX_CH(FX_EMAIL));
        int rows = (int)rng_range(0, 10);
        cad_time_t newest = INT64_MIN;
        for (int i = 0; i < rows; i++) {
            cad_time_t at = FX_T0 - rng_range(0, 6 * 24) * CAD_HOUR;
            enum cad_touch_state st = (enum cad_touch_state)rng_range(0, 3);
            fx_row(&f, -1, CAD_PURPOSE_VALUE, FX_EMAIL, at, i, -1, st);
            if ((st == CAD_TOUCH_PENDING || st == CAD_TOUCH_DELIVERED) && at > newest)
                newest = at;
        }
        fx_event(&f, CAD_EVENT_FEEDBACK_ACTIONED, FX_T0 - 1 * H);
        assert_int_equal(fx_decide(&f, FX_T0), 0);
        if (newest == INT64_MIN || newest + p->min_gap <= FX_T0) {
            assert_sent(&f, FX_FEEDBACK_FOLLOWUP);
        } else {
            assert_verdict(&f, FX_FEEDBACK_FOLLOWUP, CAD_VERDICT_DEFER, CAD_REASON_MIN_GAP);
            assert_int_equal(fx_v(&f, FX_FEEDBACK_FOLLOWUP)->until, newest + p->min_gap);
        }
    }
    pb.policies[FX_DEFAULT] = saved;
}

/* Random customers (stages, zones, contacts, events, history, pause):
 * whatever the engine decides obeys the invariants every caller relies on. */
static void test_engine_invariants_on_random_customers(void **state)
{
    static const char *const zones[] = {"Europe/London", "America/Los_Angeles", "Asia/Tokyo",
                                        "Australia/Lord_Howe", "UTC"};
    rng_state = UINT64_C(0xdeadbeefcafef00d);
    for (int round = 0; round < 3000; round++) {
        fx_t f;
        fx_init(&f, &pb, "random", (enum cad_stage)rng_range(0, CAD_STAGE_COUNT - 1),
                zones[rng() % 5]);
        snprintf(f.id, sizeof(f.id), "random-%d", round);
        f.snap.customer.policy = (int)rng_range(0, 2);
        f.snap.customer.interests = rng() & 0x3ff;
        f.snap.customer.paused = rng() % 20 == 0;
        f.snap.customer.created_at = FX_T0 - rng_range(1, 900) * D;
        int nc = (int)rng_range(0, 4);
        for (int k = 0; k < nc; k++)
            fx_contact(&f, "c", (uint32_t)(rng() & 0x1f), (uint16_t)(rng() & 0x7));
        int ne = (int)rng_range(0, 10);
        for (int k = 0; k < ne; k++)
            fx_event(&f, (int)rng_range(0, CAD_EVENT_BUILTIN_COUNT - 1),
                     FX_T0 - rng_range(0, 200 * 24) * H);
        int nh = (int)rng_range(0, 25);
        for (int k = 0; k < nh; k++) {
            int r = (int)rng_range(-1, FX_RULE_COUNT - 1);
            enum cad_purpose p = r >= 0 ? pb.rules[r].purpose : CAD_PURPOSE_VALUE;
            int64_t key = ne && rng() % 2 ? f.events[rng() % ne].key : rng_range(0, 6);
            fx_row(&f, r, p, (int)rng_range(-1, 2), FX_T0 - rng_range(1, 400 * 24) * H, key,
                   (int)rng_range(-1, pb.n_content - 1), (enum cad_touch_state)rng_range(0, 3));
        }
        cad_time_t now = FX_T0 + rng_range(0, 24 * 60) * 60;
        assert_int_equal(fx_decide(&f, now), 0);
        cad_decision_t first = f.dec;
        cad_verdict_t copy[FX_RULE_COUNT];
        memcpy(copy, f.verdicts, sizeof(copy));
        assert_int_equal(f.dec.n_verdicts, FX_RULE_COUNT);
        assert_true(f.dec.next_eval > now);
        int sends = 0;
        for (int i = 0; i < FX_RULE_COUNT; i++) {
            const cad_verdict_t *v = fx_v(&f, i);
            const cad_rule_t *rule = &pb.rules[i];
            assert_int_equal(v->rule, i);
            assert_true(v->reason > CAD_REASON_NONE && v->reason < CAD_REASON_COUNT);
            if (v->kind == CAD_VERDICT_SEND) {
                sends++;
                assert_int_equal(f.dec.chosen, i);
                assert_false(f.snap.customer.paused);
                assert_true(rule->stages & (1u << f.snap.customer.stage));
                assert_in_range(v->contact, 0, f.snap.n_contacts - 1);
                assert_true(f.contacts[v->contact].roles & rule->roles);
                assert_true((f.contacts[v->contact].reachable >> v->channel) & 1);
                assert_true(now <= v->expires_at);
                if (rule->use_library) {
                    assert_in_range(v->content, 0, pb.n_content - 1);
                    assert_true(v->relevance + 1e-9 >=
                                pb.policies[f.snap.customer.policy].min_relevance);
                }
                const cad_channel_t *ch = &pb.channels[v->channel];
                assert_int_equal(cad_tz_next_allowed(f.snap.customer.tz, now, ch->window_start,
                                                     ch->window_end, 0x7f),
                                 now);
                if (!rule->bypass_quiet_hours) {
                    const cad_policy_t *po = &pb.policies[f.snap.customer.policy];
                    assert_int_equal(cad_tz_next_allowed(f.snap.customer.tz, now, po->quiet_end,
                                                         po->quiet_start, po->weekdays),
                                     now);
                }
            }
            if (v->kind == CAD_VERDICT_DEFER) {
                assert_true(v->until > now);
                assert_true(v->until <= v->expires_at);
                assert_true(f.dec.next_eval <= v->until);
            }
            if (v->kind == CAD_VERDICT_WAIT) {
                assert_true(v->until > now);
                assert_true(f.dec.next_eval <= v->until);
            }
            if (v->final)
                assert_int_equal(v->kind, CAD_VERDICT_SUPPRESS);
            char why[512];
            assert_true(cad_verdict_describe(&pb, &f.snap, v, why, sizeof(why)) > 0);
        }
        assert_true(sends <= 1);
        assert_int_equal(sends == 1, f.dec.chosen >= 0);
        /* pure: the same input gives the same output */
        assert_int_equal(fx_decide(&f, now), 0);
        assert_int_equal(f.dec.chosen, first.chosen);
        assert_int_equal(f.dec.next_eval, first.next_eval);
        assert_int_equal(f.dec.alerts, first.alerts);
        assert_memory_equal(copy, f.verdicts, sizeof(copy));
    }
}

static void test_engine_empty_playbook_decides_nothing(void **state)
{
    cad_playbook_t empty;
    memset(&empty, 0, sizeof(empty));
    cad_playbook_init_builtins(&empty);
    cad_policy_t pol;
    fx_policy(&pol, "default");
    empty.policies = &pol;
    empty.n_policies = 1;
    fx_t f;
    fx_init(&f, &empty, "acme", CAD_STAGE_PROSPECT, NULL);
    assert_int_equal(fx_decide(&f, FX_T0), 0);
    assert_int_equal(f.dec.n_verdicts, 0);
    assert_int_equal(f.dec.chosen, -1);
    assert_int_equal(f.dec.next_eval, CAD_TIME_NEVER);
    empty.n_policies = 0;
    char err[CAD_ERRBUF];
    assert_int_equal(cad_engine_check(&empty, &f.snap, err), -CAD_EINVAL);
    assert_non_null(strstr(err, "no policy"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_r13_touch_key_of_utf8_ids_is_printable_ascii),
        cmocka_unit_test(test_r1_nps_never_reaches_former_while_win_back_may),
        cmocka_unit_test(test_r1_nps_reaches_active_customer_but_not_win_back),
        cmocka_unit_test(test_r2_review_request_inside_window_is_sent),
        cmocka_unit_test(test_r2_review_request_forty_days_old_is_stale_never_sent),
        cmocka_unit_test(test_r2_window_not_open_waits_and_sets_next_eval),
        cmocka_unit_test(test_r3_renewal_without_value_is_deferred_and_value_goes_first),
        cmocka_unit_test(test_r3_renewal_after_a_value_touch_is_sent),
        cmocka_unit_test(test_r3_ask_without_any_value_to_send_raises_content_gap),
        cmocka_unit_test(test_r3_ask_share_at_cap_is_deferred),
        cmocka_unit_test(test_r4_two_thank_yous_a_year_then_no_more),
        cmocka_unit_test(test_r4_thank_you_never_on_the_day_of_an_ask),
        cmocka_unit_test(test_r4_thank_you_and_ask_due_together_go_on_different_days),
        cmocka_unit_test(test_r5_min_gap_defers_until_gap_ends),
        cmocka_unit_test(test_r5_channel_cap_tries_next_channel_then_defers),
        cmocka_unit_test(test_r5_transactional_bypass_is_still_counted_in_caps),
        cmocka_unit_test(test_r5_cap_blocking_several_then_priority_decides),
        cmocka_unit_test(test_r5_property_caps_match_brute_force_reference),
        cmocka_unit_test(test_r5_property_min_gap_and_counts_match_reference),
        cmocka_unit_test(test_r6_silence_near_max_sends_relevant_value),
        cmocka_unit_test(test_r6_recently_heard_customer_is_not_silent),
        cmocka_unit_test(test_r6_max_silence_without_content_raises_gap_and_sends_nothing),
        cmocka_unit_test(test_r7_best_interest_overlap_wins_ties_by_config_order),
        cmocka_unit_test(test_r7_below_min_relevance_is_never_sent),
        cmocka_unit_test(test_r8_operational_survey_goes_to_users_not_decision_maker),
        cmocka_unit_test(test_r8_no_contact_with_role_suppresses),
        cmocka_unit_test(test_r9_feedback_actioned_yields_follow_up_within_sla),
        cmocka_unit_test(test_r9_open_loop_past_sla_raises_alert),
        cmocka_unit_test(test_r10_no_consent_on_any_channel_suppresses),
        cmocka_unit_test(test_r10_quiet_hours_across_dst_los_angeles),
        cmocka_unit_test(test_r10_quiet_hours_across_dst_london),
        cmocka_unit_test(test_r10_sms_window_holds_even_without_quiet_hours),
        cmocka_unit_test(test_r10_bypass_quiet_hours_keeps_the_sms_window),
        cmocka_unit_test(test_r10_weekday_not_allowed_defers_to_monday),
        cmocka_unit_test(test_r10_jitter_is_deterministic_and_inside_the_window),
        cmocka_unit_test(test_r11_deferral_inside_expiry_is_kept),
        cmocka_unit_test(test_r11_touch_deferred_past_expiry_is_dropped_with_reason),
        cmocka_unit_test(test_r11_short_expiry_ends_an_event_touch_before_its_window),
        cmocka_unit_test(test_r12_every_verdict_is_explained),
        cmocka_unit_test(test_r12_reason_names_round_trip_and_unknown_is_refused),
        cmocka_unit_test(test_r12_malformed_snapshot_is_refused_with_where),
        cmocka_unit_test(test_r13_same_event_twice_yields_one_touch),
        cmocka_unit_test(test_r13_a_new_event_opens_a_new_touch),
        cmocka_unit_test(test_r14_paused_customer_gets_nothing_until_resumed),
        cmocka_unit_test(test_r14_complaint_suppresses_asks_until_resolved),
        cmocka_unit_test(test_r1_invoice_reaches_former_but_top_of_mind_not_at_risk),
        cmocka_unit_test(test_recurring_first_period_waits_and_periods_follow_sends),
        cmocka_unit_test(test_recurring_period_missed_by_an_outage_is_dropped_not_sent_late),
        cmocka_unit_test(test_r6_late_silence_touch_is_still_sent_once_per_stretch),
        cmocka_unit_test(test_r7_future_content_wakes_the_customer_when_valid),
        cmocka_unit_test(test_r10_disjoint_quiet_hours_and_sms_window_drop_the_touch),
        cmocka_unit_test(test_r12_every_reason_has_a_sentence),
        cmocka_unit_test(test_holdout_is_deterministic_and_near_its_share),
        cmocka_unit_test(test_next_eval_is_never_when_nothing_can_change),
        cmocka_unit_test(test_engine_invariants_on_random_customers),
        cmocka_unit_test(test_engine_empty_playbook_decides_nothing),
    };
    int rc = cmocka_run_group_tests_name("engine", tests, setup_playbook, teardown_playbook);
    cad_tz_registry_free();
    return rc;
}
