/*
 * test_report.c — report.c folds the store's per-rule rows into the report:
 * expected vs executed per rule, suppressions by reason, every playbook rule
 * present, rules gone from the playbook kept, give/ask, silent customers and
 * the holdout comparison.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "report.h"

static cad_rule_t rules[3];

static cad_playbook_t playbook(void)
{
    memset(rules, 0, sizeof(rules));
    snprintf(rules[0].name, CAD_NAME_MAX, "welcome");
    rules[0].purpose = CAD_PURPOSE_VALUE;
    snprintf(rules[1].name, CAD_NAME_MAX, "review");
    rules[1].purpose = CAD_PURPOSE_ASK;
    snprintf(rules[2].name, CAD_NAME_MAX, "win_back");
    rules[2].purpose = CAD_PURPOSE_VALUE;
    rules[2].holdout_permille = 50;
    cad_playbook_t pb;
    memset(&pb, 0, sizeof(pb));
    pb.rules = rules;
    pb.n_rules = 3;
    return pb;
}

static void add(cad_report_t *r, const char *rule, const char *purpose, const char *outcome,
                const char *reason, int64_t count)
{
    cad_report_row_t row = {rule, purpose, outcome, reason, count};
    cad_report_add_row(&row, r);
}

static json_t *rule_line(json_t *report, const char *name)
{
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(report, "rules"), i, l)
    {
        if (strcmp(json_string_value(json_object_get(l, "rule")), name) == 0)
            return l;
    }
    fail_msg("no line for rule %s", name);
    return NULL;
}

static int64_t ival(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static void test_expected_vs_executed_per_rule(void **state)
{
    (void)state;
    cad_playbook_t pb = playbook();
    cad_report_t *r = cad_report_new(&pb, 100, 200);
    assert_non_null(r);
    add(r, "welcome", "value", "delivered", "", 2);
    add(r, "welcome", "value", "dropped", "no_consent", 6);
    add(r, "welcome", "value", "dropped", "stale", 1);
    add(r, "welcome", "value", "dropped", "no_consent", 1);
    add(r, "welcome", "value", "failed", "", 0);
    add(r, "review", "ask", "pending", "", 3);
    json_t *j = cad_report_json(r);
    assert_non_null(j);
    json_t *w = rule_line(j, "welcome");
    assert_int_equal(ival(w, "expected"), 10);
    assert_int_equal(ival(w, "executed"), 2);
    assert_int_equal(ival(w, "suppressed"), 8);
    assert_int_equal(ival(json_object_get(w, "suppressed_by"), "no_consent"), 7);
    assert_int_equal(ival(json_object_get(w, "suppressed_by"), "stale"), 1);
    assert_true(json_real_value(json_object_get(w, "executed_pct")) == 20.0);
    assert_string_equal(json_string_value(json_object_get(w, "top_reason")), "no_consent");
    json_t *rv = rule_line(j, "review");
    assert_int_equal(ival(rv, "sent"), 3);
    assert_int_equal(ival(rv, "pending"), 3);
    assert_true(json_real_value(json_object_get(rv, "executed_pct")) == 0.0);
    /* a rule that never applied still has its line, with no share */
    json_t *wb = rule_line(j, "win_back");
    assert_int_equal(ival(wb, "expected"), 0);
    assert_true(json_is_null(json_object_get(wb, "executed_pct")));
    assert_int_equal(ival(json_object_get(j, "totals"), "eligible"), 13);
    assert_int_equal(ival(json_object_get(j, "totals"), "delivered"), 2);
    assert_int_equal(ival(j, "from"), 100);
    assert_int_equal(ival(j, "to"), 200);
    json_decref(j);
    cad_report_free(r);
}

static void test_rules_gone_from_the_playbook_are_kept(void **state)
{
    (void)state;
    cad_playbook_t pb = playbook();
    cad_report_t *r = cad_report_new(&pb, 0, 1);
    add(r, "old_rule", "feedback", "delivered", "", 4);
    json_t *j = cad_report_json(r);
    json_t *old = rule_line(j, "old_rule");
    assert_string_equal(json_string_value(json_object_get(old, "purpose")), "feedback");
    assert_int_equal(ival(old, "executed"), 4);
    assert_int_equal(json_array_size(json_object_get(j, "rules")), 4);
    json_decref(j);
    cad_report_free(r);
}

static void test_give_ask_ratio_and_silent_customers(void **state)
{
    (void)state;
    cad_playbook_t pb = playbook();
    cad_report_t *r = cad_report_new(&pb, 0, 1);
    json_t *j = cad_report_json(r);
    assert_true(json_is_null(json_object_get(j, "give_ask_ratio"))); /* no asks: no ratio */
    json_decref(j);
    add(r, "welcome", "value", "delivered", "", 5);
    add(r, "win_back", "value", "delivered", "", 1);
    add(r, "review", "ask", "delivered", "", 4);
    add(r, "review", "ask", "failed", "", 9); /* only delivered touches count */
    char id[32];
    for (int i = 0; i < CAD_REPORT_SILENT_LISTED + 5; i++) {
        snprintf(id, sizeof(id), "c-%d", i);
        cad_report_add_silent(id, r);
    }
    j = cad_report_json(r);
    assert_int_equal(ival(j, "give"), 6);
    assert_int_equal(ival(j, "ask"), 4);
    assert_true(json_real_value(json_object_get(j, "give_ask_ratio")) == 1.5);
    json_t *silent = json_object_get(j, "silent");
    assert_int_equal(ival(silent, "count"), CAD_REPORT_SILENT_LISTED + 5);
    assert_int_equal(json_array_size(json_object_get(silent, "customers")),
                     CAD_REPORT_SILENT_LISTED);
    json_decref(j);
    cad_report_free(r);
}

static void test_holdout_comparison(void **state)
{
    (void)state;
    cad_playbook_t pb = playbook();
    cad_report_t *r = cad_report_new(&pb, 0, 1);
    json_t *j = cad_report_holdout_json(r, &pb);
    /* configured but nothing held out yet: listed with empty groups */
    assert_int_equal(json_array_size(json_object_get(j, "rules")), 1);
    json_t *wb = json_array_get(json_object_get(j, "rules"), 0);
    assert_string_equal(json_string_value(json_object_get(wb, "rule")), "win_back");
    assert_true(json_real_value(json_object_get(wb, "holdout_pct")) == 5.0);
    assert_true(json_is_null(json_object_get(wb, "churn_pct_points_saved")));
    json_decref(j);
    cad_holdout_row_t treated = {"win_back", "treated", 200, 10, 30};
    cad_holdout_row_t held = {"win_back", "held_out", 10, 2, 0};
    cad_report_add_holdout(&treated, r);
    cad_report_add_holdout(&held, r);
    j = cad_report_holdout_json(r, &pb);
    wb = json_array_get(json_object_get(j, "rules"), 0);
    assert_int_equal(ival(json_object_get(wb, "treated"), "customers"), 200);
    assert_int_equal(ival(json_object_get(wb, "held_out"), "churned"), 2);
    assert_true(json_real_value(json_object_get(json_object_get(wb, "treated"), "churn_pct")) ==
                5.0);
    /* 20% churn held out vs 5% treated: the touch seems to save 15 points */
    assert_true(json_real_value(json_object_get(wb, "churn_pct_points_saved")) == 15.0);
    json_decref(j);
    j = cad_report_json(r);
    assert_int_equal(json_array_size(json_object_get(j, "holdout")), 1);
    json_decref(j);
    cad_report_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expected_vs_executed_per_rule),
        cmocka_unit_test(test_rules_gone_from_the_playbook_are_kept),
        cmocka_unit_test(test_give_ask_ratio_and_silent_customers),
        cmocka_unit_test(test_holdout_comparison),
    };
    return cmocka_run_group_tests_name("report", tests, NULL, NULL);
}
