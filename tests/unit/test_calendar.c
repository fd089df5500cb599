/*
 * test_calendar.c — the in-memory calendar against a brute-force reference.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "calendar.h"

static void test_calendar_empty_pops_nothing(void **state)
{
    cad_calendar_t cal;
    cad_calendar_entry_t e;
    cad_calendar_init(&cal);
    assert_null(cad_calendar_peek(&cal));
    assert_false(cad_calendar_pop_due(&cal, CAD_TIME_NEVER, &e));
    assert_int_equal(cad_calendar_get(&cal, 5), CAD_TIME_NEVER);
    cad_calendar_remove(&cal, 5);
    cad_calendar_free(&cal);
}

static void test_calendar_pops_in_time_order_and_only_when_due(void **state)
{
    cad_calendar_t cal;
    cad_calendar_entry_t e;
    cad_calendar_init(&cal);
    assert_int_equal(cad_calendar_set(&cal, 1, 300), 0);
    assert_int_equal(cad_calendar_set(&cal, 2, 100), 0);
    assert_int_equal(cad_calendar_set(&cal, 3, 200), 0);
    assert_false(cad_calendar_pop_due(&cal, 99, &e));
    assert_true(cad_calendar_pop_due(&cal, 250, &e));
    assert_int_equal(e.key, 2);
    assert_true(cad_calendar_pop_due(&cal, 250, &e));
    assert_int_equal(e.key, 3);
    assert_false(cad_calendar_pop_due(&cal, 250, &e));
    assert_int_equal(cad_calendar_get(&cal, 1), 300);
    cad_calendar_free(&cal);
}

static void test_calendar_set_moves_an_existing_customer(void **state)
{
    cad_calendar_t cal;
    cad_calendar_entry_t e;
    cad_calendar_init(&cal);
    cad_calendar_set(&cal, 7, 500);
    cad_calendar_set(&cal, 8, 400);
    cad_calendar_set(&cal, 7, 10);
    assert_int_equal(cal.size, 2);
    assert_true(cad_calendar_pop_due(&cal, 10, &e));
    assert_int_equal(e.key, 7);
    cad_calendar_set_earlier(&cal, 8, 900); /* later: ignored */
    assert_int_equal(cad_calendar_get(&cal, 8), 400);
    cad_calendar_set_earlier(&cal, 8, 50);
    assert_int_equal(cad_calendar_get(&cal, 8), 50);
    cad_calendar_free(&cal);
}

static void test_calendar_refuses_negative_keys(void **state)
{
    cad_calendar_t cal;
    cad_calendar_init(&cal);
    assert_int_equal(cad_calendar_set(&cal, -1, 5), -CAD_EINVAL);
    assert_int_equal(cad_calendar_set(&cal, (int64_t)1 << 40, 5), -CAD_EINVAL);
    cad_calendar_free(&cal);
}

/* Random sets, removes and pops checked against a plain array. */
static void test_calendar_matches_brute_force_reference(void **state)
{
    enum { KEYS = 300, OPS = 20000 };
    cad_time_t ref[KEYS];
    cad_calendar_t cal;
    cad_calendar_init(&cal);
    for (int k = 0; k < KEYS; k++)
        ref[k] = CAD_TIME_NEVER;
    srand(12345);
    for (int op = 0; op < OPS; op++) {
        int k = rand() % KEYS;
        int what = rand() % 4;
        if (what <= 1) {
            cad_time_t when = rand() % 1000;
            assert_int_equal(cad_calendar_set(&cal, k, when), 0);
            ref[k] = when;
        } else if (what == 2) {
            cad_calendar_remove(&cal, k);
            ref[k] = CAD_TIME_NEVER;
        } else {
            cad_time_t now = rand() % 1000;
            cad_calendar_entry_t e;
            cad_time_t min = CAD_TIME_NEVER;
            for (int j = 0; j < KEYS; j++)
                if (ref[j] < min)
                    min = ref[j];
            bool popped = cad_calendar_pop_due(&cal, now, &e);
            assert_int_equal(popped, min <= now);
            if (popped) {
                assert_int_equal(e.when, min);
                assert_int_equal(ref[e.key], min);
                ref[e.key] = CAD_TIME_NEVER;
            }
        }
        size_t count = 0;
        for (int j = 0; j < KEYS; j++) {
            assert_int_equal(cad_calendar_get(&cal, j), ref[j]);
            count += ref[j] != CAD_TIME_NEVER;
        }
        assert_int_equal(cal.size, count);
    }
    cad_calendar_free(&cal);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calendar_empty_pops_nothing),
        cmocka_unit_test(test_calendar_pops_in_time_order_and_only_when_due),
        cmocka_unit_test(test_calendar_set_moves_an_existing_customer),
        cmocka_unit_test(test_calendar_refuses_negative_keys),
        cmocka_unit_test(test_calendar_matches_brute_force_reference),
    };
    return cmocka_run_group_tests_name("calendar", tests, NULL, NULL);
}
