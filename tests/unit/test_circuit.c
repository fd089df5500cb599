/*
 * test_circuit.c — the circuit breaker: opens after K consecutive failures,
 * a success in between resets the count, one probe when the interval has
 * passed, the probe's success closes and its failure reopens for a longer
 * interval, a disabled circuit never opens.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "circuit.h"

static void test_opens_after_threshold(void **state)
{
    cad_circuit_t c;
    cad_circuit_init(&c, 3, 1000, 8000, 0);
    assert_false(cad_circuit_failure(&c, 10));
    assert_false(cad_circuit_failure(&c, 20));
    assert_true(cad_circuit_allow(&c, 25));
    assert_true(cad_circuit_failure(&c, 30));
    assert_int_equal(c.state, CAD_CIRCUIT_OPEN);
    assert_int_equal(c.since_ms, 30);
    assert_false(cad_circuit_allow(&c, 500));
    assert_int_equal(cad_circuit_wait_ms(&c, 500), 530);
    assert_int_equal(c.opened_count, 1);
}

static void test_success_resets_count(void **state)
{
    cad_circuit_t c;
    cad_circuit_init(&c, 3, 1000, 8000, 0);
    cad_circuit_failure(&c, 1);
    cad_circuit_failure(&c, 2);
    cad_circuit_success(&c, 3);
    assert_false(cad_circuit_failure(&c, 4));
    assert_false(cad_circuit_failure(&c, 5));
    assert_int_equal(c.state, CAD_CIRCUIT_CLOSED);
}

static void test_half_open_allows_one_probe(void **state)
{
    cad_circuit_t c;
    cad_circuit_init(&c, 1, 1000, 8000, 0);
    assert_true(cad_circuit_failure(&c, 0));
    assert_false(cad_circuit_allow(&c, 999));
    assert_true(cad_circuit_allow(&c, 1000));
    assert_int_equal(c.state, CAD_CIRCUIT_HALF_OPEN);
    assert_false(cad_circuit_allow(&c, 1001));
    assert_int_equal(cad_circuit_wait_ms(&c, 1001), -1);
    cad_circuit_success(&c, 1200);
    assert_int_equal(c.state, CAD_CIRCUIT_CLOSED);
    assert_true(cad_circuit_allow(&c, 1201));
    assert_true(cad_circuit_allow(&c, 1201));
}

static void test_failed_probe_reopens_longer(void **state)
{
    cad_circuit_t c;
    cad_circuit_init(&c, 1, 1000, 3000, 0);
    cad_circuit_failure(&c, 0);
    assert_true(cad_circuit_allow(&c, 1000));
    assert_true(cad_circuit_failure(&c, 1100));
    assert_int_equal(c.state, CAD_CIRCUIT_OPEN);
    assert_false(cad_circuit_allow(&c, 3000));
    assert_true(cad_circuit_allow(&c, 3100));
    assert_true(cad_circuit_failure(&c, 3100));
    /* Doubling stops at the maximum. */
    assert_int_equal(c.interval_ms, 3000);
    assert_true(cad_circuit_allow(&c, 6100));
    cad_circuit_success(&c, 6200);
    assert_int_equal(c.interval_ms, 1000);
}

static void test_abandoned_probe_frees_the_slot(void **state)
{
    cad_circuit_t c;
    cad_circuit_init(&c, 1, 100, 100, 0);
    cad_circuit_failure(&c, 0);
    assert_true(cad_circuit_allow(&c, 100));
    assert_false(cad_circuit_allow(&c, 101));
    cad_circuit_abandon(&c);
    assert_true(cad_circuit_allow(&c, 102));
}

static void test_late_failures_while_open_do_not_extend(void **state)
{
    cad_circuit_t c;
    cad_circuit_init(&c, 2, 1000, 8000, 0);
    cad_circuit_failure(&c, 0);
    assert_true(cad_circuit_failure(&c, 10));
    assert_false(cad_circuit_failure(&c, 500));
    assert_int_equal(c.since_ms, 10);
    assert_true(cad_circuit_allow(&c, 1010));
}

static void test_zero_threshold_never_opens(void **state)
{
    cad_circuit_t c;
    cad_circuit_init(&c, 0, 1000, 1000, 0);
    for (int i = 0; i < 1000; i++)
        assert_false(cad_circuit_failure(&c, i));
    assert_true(cad_circuit_allow(&c, 1000));
}

static void test_state_names(void **state)
{
    assert_string_equal(cad_circuit_state_name(CAD_CIRCUIT_CLOSED), "closed");
    assert_string_equal(cad_circuit_state_name(CAD_CIRCUIT_OPEN), "open");
    assert_string_equal(cad_circuit_state_name(CAD_CIRCUIT_HALF_OPEN), "half-open");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opens_after_threshold),
        cmocka_unit_test(test_success_resets_count),
        cmocka_unit_test(test_half_open_allows_one_probe),
        cmocka_unit_test(test_failed_probe_reopens_longer),
        cmocka_unit_test(test_abandoned_probe_frees_the_slot),
        cmocka_unit_test(test_late_failures_while_open_do_not_extend),
        cmocka_unit_test(test_zero_threshold_never_opens),
        cmocka_unit_test(test_state_names),
    };
    return cmocka_run_group_tests_name("circuit", tests, NULL, NULL);
}
