/*
 * test_ratelimit.c — token buckets: burst, refill over time, the wait until
 * the next token, bookings of later turns, reconfiguration, unlimited buckets, and the per-key map
 * (case-insensitive keys, bounded size by dropping refilled buckets).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ratelimit.h"

static void test_bucket_allows_burst_then_refuses(void **state)
{
    cad_bucket_t b;
    cad_bucket_init(&b, 2.0, 5, 0);
    for (int i = 0; i < 5; i++)
        assert_true(cad_bucket_take(&b, 0));
    assert_false(cad_bucket_take(&b, 0));
    assert_int_equal(cad_bucket_wait_ms(&b, 0), 500);
}

static void test_bucket_refills_at_rate(void **state)
{
    cad_bucket_t b;
    cad_bucket_init(&b, 10.0, 1, 0);
    assert_true(cad_bucket_take(&b, 0));
    assert_false(cad_bucket_take(&b, 50));
    assert_int_equal(cad_bucket_wait_ms(&b, 50), 50);
    assert_true(cad_bucket_take(&b, 100));
    /* 1000 ms at 10/s gives 10 tokens, capped at burst 1. */
    assert_true(cad_bucket_take(&b, 1100));
    assert_false(cad_bucket_take(&b, 1100));
}

static void test_bucket_sustained_rate_matches(void **state)
{
    cad_bucket_t b;
    cad_bucket_init(&b, 100.0, 10, 0);
    int taken = 0;
    for (int64_t ms = 0; ms <= 10000; ms++)
        while (cad_bucket_take(&b, ms))
            taken++;
    /* 10 s at 100/s plus the initial burst of 10. */
    assert_in_range(taken, 1005, 1011);
}

static void test_bucket_give_back_and_configure(void **state)
{
    cad_bucket_t b;
    cad_bucket_init(&b, 1.0, 3, 0);
    assert_true(cad_bucket_take(&b, 0));
    cad_bucket_give_back(&b);
    assert_true(cad_bucket_tokens(&b, 0) == 3.0);
    cad_bucket_give_back(&b); /* never above burst */
    assert_true(cad_bucket_tokens(&b, 0) == 3.0);
    cad_bucket_configure(&b, 1.0, 1, 0);
    assert_true(cad_bucket_tokens(&b, 0) == 1.0);
    assert_true(cad_bucket_take(&b, 0));
    assert_int_equal(cad_bucket_wait_ms(&b, 0), 1000);
}

static void test_bucket_zero_rate_is_unlimited(void **state)
{
    cad_bucket_t b;
    cad_bucket_init(&b, 0, 1, 0);
    assert_true(cad_bucket_unlimited(&b));
    for (int i = 0; i < 100000; i++)
        assert_true(cad_bucket_take(&b, 0));
    assert_int_equal(cad_bucket_wait_ms(&b, 0), 0);
}

static void test_bucket_clock_going_back_does_not_add(void **state)
{
    cad_bucket_t b;
    cad_bucket_init(&b, 1.0, 1, 10000);
    assert_true(cad_bucket_take(&b, 10000));
    assert_false(cad_bucket_take(&b, 5000));
    assert_false(cad_bucket_take(&b, 5500));
    assert_true(cad_bucket_take(&b, 6500));
}

static void test_bucket_bookings_come_one_token_apart(void **state)
{
    cad_bucket_t b;
    cad_bucket_init(&b, 0.5, 2, 0); /* 30 a minute: one token every 2 s */
    assert_true(cad_bucket_take(&b, 0));
    assert_true(cad_bucket_take(&b, 0));
    assert_int_equal(cad_bucket_book_ms(&b, 0), 2000);
    assert_int_equal(cad_bucket_book_ms(&b, 0), 4000);
    assert_int_equal(cad_bucket_book_ms(&b, 1000), 5000); /* from t = 1 s: at 6 s */
    /* The bookings hold the tokens earned meanwhile: a take at 5 s finds
     * none, and waits behind the last booking (6 s) for its own (8 s). */
    assert_false(cad_bucket_take(&b, 5000));
    assert_int_equal(cad_bucket_wait_ms(&b, 5000), 3000);
    assert_true(cad_bucket_take(&b, 8000));
    cad_bucket_init(&b, 0.5, 2, 0); /* a token there: the booking is now */
    assert_int_equal(cad_bucket_book_ms(&b, 0), 0);
    cad_bucket_init(&b, 0, 1, 0); /* unlimited */
    assert_int_equal(cad_bucket_book_ms(&b, 0), 0);
}

static void test_map_keys_are_case_insensitive(void **state)
{
    cad_bucket_map_t *m = cad_bucket_map_new(1.0 / 60.0 * 2, 2, 100);
    assert_non_null(m);
    cad_bucket_t *a = cad_bucket_map_get(m, "Example.COM", 0);
    assert_non_null(a);
    assert_true(cad_bucket_take(a, 0));
    cad_bucket_t *b = cad_bucket_map_get(m, "example.com", 0);
    assert_ptr_equal(a, b);
    assert_true(cad_bucket_take(b, 0));
    assert_false(cad_bucket_take(b, 0));
    cad_bucket_t *c = cad_bucket_map_get(m, "other.org", 0);
    assert_true(cad_bucket_take(c, 0));
    assert_int_equal(cad_bucket_map_size(m), 2);
    cad_bucket_map_free(m);
}

static void test_map_stays_bounded(void **state)
{
    cad_bucket_map_t *m = cad_bucket_map_new(10.0, 1, 64);
    char key[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof key, "d%d.example", i);
        cad_bucket_t *b = cad_bucket_map_get(m, key, (int64_t)i * 200);
        assert_non_null(b);
        assert_true(cad_bucket_take(b, (int64_t)i * 200));
    }
    /* Each bucket refills within 100 ms, so old ones are dropped. */
    assert_true(cad_bucket_map_size(m) <= 65);
    cad_bucket_map_free(m);
}

static void test_map_unlimited_has_no_buckets(void **state)
{
    cad_bucket_map_t *m = cad_bucket_map_new(0, 1, 8);
    assert_null(cad_bucket_map_get(m, "example.com", 0));
    assert_int_equal(cad_bucket_map_size(m), 0);
    cad_bucket_map_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_allows_burst_then_refuses),
        cmocka_unit_test(test_bucket_refills_at_rate),
        cmocka_unit_test(test_bucket_sustained_rate_matches),
        cmocka_unit_test(test_bucket_give_back_and_configure),
        cmocka_unit_test(test_bucket_zero_rate_is_unlimited),
        cmocka_unit_test(test_bucket_clock_going_back_does_not_add),
        cmocka_unit_test(test_bucket_bookings_come_one_token_apart),
        cmocka_unit_test(test_map_keys_are_case_insensitive),
        cmocka_unit_test(test_map_stays_bounded),
        cmocka_unit_test(test_map_unlimited_has_no_buckets),
    };
    return cmocka_run_group_tests_name("ratelimit", tests, NULL, NULL);
}
