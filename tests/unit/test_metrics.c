/*
 * test_metrics.c — the Prometheus text writer: families, samples with
 * escaped labels, cumulative histograms, and refusal of bad names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

static void test_family_and_samples(void **state)
{
    (void)state;
    cad_metrics_t m;
    cad_metrics_init(&m);
    cad_metrics_family(&m, "cadence_touches", "gauge", "Touches by state\nand channel \\.");
    const char *labels[] = {"state", "queued", "channel", "e\"mail\\\n", NULL};
    cad_metrics_sample(&m, "cadence_touches", labels, 42);
    cad_metrics_sample(&m, "cadence_touches", NULL, 0.5);
    assert_false(m.failed);
    assert_string_equal(m.text,
                        "# HELP cadence_touches Touches by state\\nand channel \\\\.\n"
                        "# TYPE cadence_touches gauge\n"
                        "cadence_touches{state=\"queued\",channel=\"e\\\"mail\\\\\\n\"} 42\n"
                        "cadence_touches 0.5\n");
    cad_metrics_free(&m);
    assert_null(m.text);
}

static void test_histogram_is_cumulative(void **state)
{
    (void)state;
    cad_metrics_t m;
    cad_metrics_init(&m);
    const double bounds[] = {1, 60};
    const int64_t counts[] = {2, 3, 1};
    cad_metrics_histogram(&m, "lat_seconds", bounds, counts, 2, 130.5);
    assert_false(m.failed);
    assert_string_equal(m.text, "lat_seconds_bucket{le=\"1\"} 2\n"
                                "lat_seconds_bucket{le=\"60\"} 5\n"
                                "lat_seconds_bucket{le=\"+Inf\"} 6\n"
                                "lat_seconds_sum 130.5\n"
                                "lat_seconds_count 6\n");
    cad_metrics_free(&m);
}

static void test_bad_names_are_refused(void **state)
{
    (void)state;
    assert_true(cad_metrics_name_valid("cadence_queue_depth"));
    assert_true(cad_metrics_name_valid("a:b_c1"));
    assert_false(cad_metrics_name_valid(""));
    assert_false(cad_metrics_name_valid("1abc"));
    assert_false(cad_metrics_name_valid("bad-name"));
    assert_false(cad_metrics_name_valid("bad name"));
    cad_metrics_t m;
    cad_metrics_init(&m);
    cad_metrics_sample(&m, "bad-name", NULL, 1);
    assert_true(m.failed);
    cad_metrics_free(&m);
    cad_metrics_init(&m);
    const char *labels[] = {"bad label", "x", NULL};
    cad_metrics_sample(&m, "ok", labels, 1);
    assert_true(m.failed);
    cad_metrics_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_family_and_samples),
        cmocka_unit_test(test_histogram_is_cumulative),
        cmocka_unit_test(test_bad_names_are_refused),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
