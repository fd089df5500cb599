/*
 * test_backoff.c — retry schedules: full jitter stays within the exponential
 * ceiling and is spread over it, the ceiling stops at the cap, the Standard
 * Webhooks table and its end, Retry-After wins when longer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "backoff.h"

static void test_exponential_within_ceiling(void **state)
{
    cad_backoff_t b = {.kind = CAD_BACKOFF_EXPONENTIAL, .base_ms = 1000, .cap_ms = 60000};
    uint64_t rng = 42;
    for (int failed = 1; failed <= 20; failed++) {
        int64_t ceiling = 1000;
        for (int i = 1; i < failed && ceiling < 60000; i++)
            ceiling *= 2;
        if (ceiling > 60000)
            ceiling = 60000;
        for (int k = 0; k < 1000; k++) {
            int64_t d = cad_backoff_delay_ms(&b, failed, &rng);
            assert_in_range(d, 0, ceiling);
        }
    }
}

static void test_exponential_full_jitter_spreads(void **state)
{
    cad_backoff_t b = {.kind = CAD_BACKOFF_EXPONENTIAL, .base_ms = 1000, .cap_ms = 1000000};
    uint64_t rng = 7;
    int low = 0, high = 0;
    for (int k = 0; k < 10000; k++) {
        int64_t d = cad_backoff_delay_ms(&b, 5, &rng); /* ceiling 16 s */
        if (d < 4000)
            low++;
        if (d > 12000)
            high++;
    }
    /* Uniform over [0, 16000]: about a quarter in each tail. */
    assert_in_range(low, 2200, 2800);
    assert_in_range(high, 2200, 2800);
}

static void test_exponential_never_ends(void **state)
{
    cad_backoff_t b = {.kind = CAD_BACKOFF_EXPONENTIAL, .base_ms = 500, .cap_ms = 2000};
    uint64_t rng = 1;
    assert_true(cad_backoff_delay_ms(&b, 1000, &rng) >= 0);
    assert_true(cad_backoff_delay_ms(&b, 1000, &rng) <= 2000);
}

static void test_exponential_defaults(void **state)
{
    cad_backoff_t b = {.kind = CAD_BACKOFF_EXPONENTIAL, .base_ms = 0, .cap_ms = 0};
    uint64_t rng = 3;
    for (int k = 0; k < 100; k++)
        assert_in_range(cad_backoff_delay_ms(&b, 4, &rng), 0, 1000);
}

static void test_standard_webhooks_schedule(void **state)
{
    static const int64_t want_s[] = {5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400};
    cad_backoff_t b = {.kind = CAD_BACKOFF_STANDARD_WEBHOOKS};
    uint64_t rng = 99;
    for (int failed = 1; failed <= CAD_BACKOFF_WEBHOOK_STEPS; failed++)
        for (int k = 0; k < 200; k++) {
            int64_t d = cad_backoff_delay_ms(&b, failed, &rng);
            int64_t step = want_s[failed - 1] * 1000;
            assert_in_range(d, step, step + step / 10);
        }
    assert_int_equal(cad_backoff_delay_ms(&b, CAD_BACKOFF_WEBHOOK_STEPS + 1, &rng), -1);
}

static void test_retry_after_wins_when_longer(void **state)
{
    assert_int_equal(cad_backoff_with_retry_after(2000, 0), 2000);
    assert_int_equal(cad_backoff_with_retry_after(2000, 1), 2000);
    assert_int_equal(cad_backoff_with_retry_after(2000, 30), 30000);
    assert_int_equal(cad_backoff_with_retry_after(-1, 30), -1);
}

static void test_kind_names_round_trip(void **state)
{
    assert_int_equal(cad_backoff_kind_parse("exponential"), CAD_BACKOFF_EXPONENTIAL);
    assert_int_equal(cad_backoff_kind_parse("standard-webhooks"), CAD_BACKOFF_STANDARD_WEBHOOKS);
    assert_int_equal(cad_backoff_kind_parse("linear"), -1);
    assert_int_equal(cad_backoff_kind_parse(NULL), -1);
    assert_string_equal(cad_backoff_kind_name(CAD_BACKOFF_STANDARD_WEBHOOKS), "standard-webhooks");
}

static void test_random_zero_state_is_usable(void **state)
{
    uint64_t rng = 0;
    uint64_t a = cad_backoff_random(&rng);
    uint64_t b = cad_backoff_random(&rng);
    assert_true(rng != 0);
    assert_true(a != b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exponential_within_ceiling),
        cmocka_unit_test(test_exponential_full_jitter_spreads),
        cmocka_unit_test(test_exponential_never_ends),
        cmocka_unit_test(test_exponential_defaults),
        cmocka_unit_test(test_standard_webhooks_schedule),
        cmocka_unit_test(test_retry_after_wins_when_longer),
        cmocka_unit_test(test_kind_names_round_trip),
        cmocka_unit_test(test_random_zero_state_is_usable),
    };
    return cmocka_run_group_tests_name("backoff", tests, NULL, NULL);
}
