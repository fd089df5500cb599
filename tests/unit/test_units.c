/*
 * test_units.c — the duration, clock, cap and ISO time parsers of units.c:
 * what they accept, what they refuse (and that the refusal says why), and
 * that formatting round-trips through parsing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "units.h"

static int64_t duration(const char *text)
{
    int64_t s = -1;
    char err[CAD_ERRBUF] = "";
    assert_int_equal(cad_duration_parse(text, &s, err), 0);
    assert_string_equal(err, "");
    return s;
}

static void assert_duration_refused(const char *text, const char *why)
{
    int64_t s = 12345;
    char err[CAD_ERRBUF] = "";
    assert_int_equal(cad_duration_parse(text, &s, err), -CAD_EINVAL);
    assert_int_equal(s, 12345);
    assert_non_null(strstr(err, why));
}

static void test_duration_single_units(void **state)
{
    assert_int_equal(duration("14d"), 14 * CAD_DAY);
    assert_int_equal(duration("36h"), 36 * CAD_HOUR);
    assert_int_equal(duration("90m"), 90 * CAD_MINUTE);
    assert_int_equal(duration("45s"), 45);
    assert_int_equal(duration("2w"), 14 * CAD_DAY);
}

static void test_duration_compound(void **state)
{
    assert_int_equal(duration("1d12h"), CAD_DAY + 12 * CAD_HOUR);
    assert_int_equal(duration("1w2d3h4m5s"), 9 * CAD_DAY + 3 * CAD_HOUR + 4 * CAD_MINUTE + 5);
}

static void test_duration_zero_forms(void **state)
{
    assert_int_equal(duration("0"), 0);
    assert_int_equal(duration("0s"), 0);
    assert_int_equal(duration("0d"), 0);
}

static void test_duration_refuses_missing_unit(void **state)
{
    assert_duration_refused("14", "without a unit");
    assert_duration_refused("1d12", "without a unit");
}

static void test_duration_refuses_unknown_unit(void **state)
{
    assert_duration_refused("14y", "unknown unit 'y'");
    assert_duration_refused("3D", "unknown unit 'D'");
}

static void test_duration_refuses_garbage(void **state)
{
    assert_duration_refused("", "empty duration");
    assert_duration_refused("d", "must be a number followed by a unit");
    assert_duration_refused("-3d", "must be a number followed by a unit");
    assert_duration_refused(" 3d", "must be a number followed by a unit");
    assert_duration_refused("3d ", "must be a number followed by a unit");
}

static void test_duration_refuses_unordered_or_repeated_units(void **state)
{
    assert_duration_refused("12h1d", "largest first");
    assert_duration_refused("1d1d", "largest first");
}

static void test_duration_refuses_more_than_ten_years(void **state)
{
    assert_int_equal(duration("3650d"), 3650 * CAD_DAY);
    assert_duration_refused("3654d", "longer than 10 years");
    assert_duration_refused("99999999999999999999s", "longer than 10 years");
    assert_duration_refused("600w", "longer than 10 years");
}

static void assert_format(int64_t seconds, const char *expected)
{
    char buf[32];
    assert_int_equal(cad_duration_format(seconds, buf, sizeof buf), 0);
    assert_string_equal(buf, expected);
}

static void test_duration_format_is_shortest(void **state)
{
    assert_format(0, "0s");
    assert_format(14 * CAD_DAY, "14d");
    assert_format(CAD_DAY + 12 * CAD_HOUR, "1d12h");
    assert_format(90 * CAD_MINUTE, "1h30m");
    assert_format(61, "1m1s");
}

static void test_duration_format_round_trips(void **state)
{
    static const int64_t values[] = {0,
                                     1,
                                     59,
                                     60,
                                     3599,
                                     3600,
                                     86399,
                                     86400,
                                     86401,
                                     7 * CAD_DAY,
                                     3653 * CAD_DAY,
                                     1234567,
                                     45 * CAD_DAY + 30 * CAD_MINUTE};
    for (size_t i = 0; i < CAD_ARRAY_LEN(values); i++) {
        char buf[32];
        assert_int_equal(cad_duration_format(values[i], buf, sizeof buf), 0);
        assert_int_equal(duration(buf), values[i]);
    }
}

static void test_duration_format_refuses_negative_and_small_buffer(void **state)
{
    char buf[4];
    assert_int_equal(cad_duration_format(-1, buf, sizeof buf), -CAD_EINVAL);
    assert_int_equal(cad_duration_format(CAD_DAY + 12 * CAD_HOUR, buf, sizeof buf), -CAD_EFULL);
    assert_string_equal(buf, "");
}

static void test_clock_accepts_day_range(void **state)
{
    int m = -1;
    assert_int_equal(cad_clock_parse("00:00", &m, NULL), 0);
    assert_int_equal(m, 0);
    assert_int_equal(cad_clock_parse("08:00", &m, NULL), 0);
    assert_int_equal(m, 480);
    assert_int_equal(cad_clock_parse("8:05", &m, NULL), 0);
    assert_int_equal(m, 485);
    assert_int_equal(cad_clock_parse("21:30", &m, NULL), 0);
    assert_int_equal(m, 21 * 60 + 30);
    assert_int_equal(cad_clock_parse("24:00", &m, NULL), 0);
    assert_int_equal(m, 1440);
}

static void test_clock_refuses_bad_text(void **state)
{
    static const char *const bad[] = {"",       "8",   "0800",     "08:0",
                                      "08:000", "8am", "08:00:00", "ab:cd"};
    for (size_t i = 0; i < CAD_ARRAY_LEN(bad); i++) {
        int m = -1;
        char err[CAD_ERRBUF] = "";
        assert_int_equal(cad_clock_parse(bad[i], &m, err), -CAD_EINVAL);
        assert_int_equal(m, -1);
        assert_non_null(strstr(err, "must be HH:MM"));
    }
}

static void test_clock_refuses_out_of_range(void **state)
{
    static const char *const bad[] = {"25:00", "24:01", "12:60", "99:99"};
    for (size_t i = 0; i < CAD_ARRAY_LEN(bad); i++) {
        int m = -1;
        char err[CAD_ERRBUF] = "";
        assert_int_equal(cad_clock_parse(bad[i], &m, err), -CAD_EINVAL);
        assert_non_null(strstr(err, "out of range"));
    }
}

static void test_cap_parses_count_and_window(void **state)
{
    uint32_t count = 0;
    int64_t window = 0;
    assert_int_equal(cad_cap_parse("2/7d", &count, &window, NULL), 0);
    assert_int_equal(count, 2);
    assert_int_equal(window, 7 * CAD_DAY);
    assert_int_equal(cad_cap_parse("10/1d12h", &count, &window, NULL), 0);
    assert_int_equal(count, 10);
    assert_int_equal(window, CAD_DAY + 12 * CAD_HOUR);
}

static void assert_cap_refused(const char *text, const char *why)
{
    uint32_t count = 99;
    int64_t window = 99;
    char err[CAD_ERRBUF] = "";
    assert_int_equal(cad_cap_parse(text, &count, &window, err), -CAD_EINVAL);
    assert_int_equal(count, 99);
    assert_non_null(strstr(err, why));
}

static void test_cap_refuses_bad_text(void **state)
{
    assert_cap_refused("", "must be <count>/<duration>");
    assert_cap_refused("2", "must be <count>/<duration>");
    assert_cap_refused("two/7d", "must be <count>/<duration>");
    assert_cap_refused("0/7d", "at least 1 touch");
    assert_cap_refused("2/0s", "longer than zero");
    assert_cap_refused("2/7x", "unknown unit 'x'");
    assert_cap_refused("2000000/7d", "above 1000000");
}

static cad_time_t iso(const char *text)
{
    cad_time_t t = -1;
    char err[CAD_ERRBUF] = "";
    assert_int_equal(cad_time_parse(text, &t, err), 0);
    assert_string_equal(err, "");
    return t;
}

static void test_time_parses_utc(void **state)
{
    assert_int_equal(iso("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(iso("2026-03-08T09:30:00Z"), 1772962200);
    assert_int_equal(iso("2026-03-08T09:30Z"), 1772962200);
    assert_int_equal(iso("2026-03-08t09:30:00z"), 1772962200);
    assert_int_equal(iso("2026-03-08T09:30:00.750Z"), 1772962200);
}

static void test_time_bare_date_is_midnight_utc(void **state)
{
    assert_int_equal(iso("2026-03-08"), 1772928000);
    assert_int_equal(iso("2000-02-29"), 951782400);
}

static void test_time_parses_offsets(void **state)
{
    assert_int_equal(iso("2026-03-08T10:30:00+01:00"), 1772962200);
    assert_int_equal(iso("2026-03-08T04:30:00-05:00"), 1772962200);
    assert_int_equal(iso("2026-03-08T15:00:00+0530"), 1772962200);
    assert_int_equal(iso("2026-03-08T11:30:00+02"), 1772962200);
    /* an offset that crosses midnight backwards */
    assert_int_equal(iso("2026-03-07T23:30:00-10:00"), 1772962200);
}

static void test_time_before_epoch(void **state)
{
    assert_int_equal(iso("1969-12-31T23:59:59Z"), -1);
}

static void assert_time_refused(const char *text, const char *why)
{
    cad_time_t t = 42;
    char err[CAD_ERRBUF] = "";
    assert_int_equal(cad_time_parse(text, &t, err), -CAD_EINVAL);
    assert_int_equal(t, 42);
    assert_non_null(strstr(err, why));
}

static void test_time_refuses_bad_text(void **state)
{
    assert_time_refused("", "must be an ISO 8601 date");
    assert_time_refused("08/03/2026", "must be an ISO 8601 date");
    assert_time_refused("2026-3-8", "must be an ISO 8601 date");
    assert_time_refused("2026-02-29", "not a calendar date");
    assert_time_refused("2026-13-01", "not a calendar date");
    assert_time_refused("2026-03-08T25:00:00Z", "out of range");
    assert_time_refused("2026-03-08T09:30:00", "needs a time zone");
    assert_time_refused("2026-03-08T09:30:00+25:00", "offset out of range");
    assert_time_refused("2026-03-08T09:30:00Zjunk", "trailing text");
    assert_time_refused("2026-03-08T9:30Z", "malformed time of day");
}

static void test_time_format(void **state)
{
    char buf[32];
    assert_int_equal(cad_time_format(1772962200, buf, sizeof buf), 0);
    assert_string_equal(buf, "2026-03-08T09:30:00Z");
    assert_int_equal(cad_time_format(-1, buf, sizeof buf), 0);
    assert_string_equal(buf, "1969-12-31T23:59:59Z");
    char small[20];
    assert_int_equal(cad_time_format(0, small, sizeof small), -CAD_EFULL);
}

static void test_time_format_round_trips(void **state)
{
    static const cad_time_t values[] = {0, 951782400, 1772962200, 4102444799, 253402300799};
    for (size_t i = 0; i < CAD_ARRAY_LEN(values); i++) {
        char buf[32];
        assert_int_equal(cad_time_format(values[i], buf, sizeof buf), 0);
        assert_int_equal(iso(buf), values[i]);
    }
}

/* The wall-clock helpers the timers use: whole seconds from the same clock
 * as the milliseconds, and no overflow for "never". */
static void test_wall_clock_helpers(void **state)
{
    (void)state;
    cad_time_t now = cad_wall_now();
    assert_true(now >= (cad_time_t)time(NULL) - 1 && now <= (cad_time_t)time(NULL) + 1);
    assert_true(cad_wall_ms() / 1000 >= now);
    assert_int_equal(cad_ms_until(CAD_TIME_NEVER), INT64_MAX);
    assert_int_equal(cad_ms_until(0), 0);
    assert_int_equal(cad_ms_until(now), 0); /* begun already */
    int64_t ms = cad_ms_until(now + 2);
    assert_true(ms > 1000 && ms <= 2000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wall_clock_helpers),
        cmocka_unit_test(test_duration_single_units),
        cmocka_unit_test(test_duration_compound),
        cmocka_unit_test(test_duration_zero_forms),
        cmocka_unit_test(test_duration_refuses_missing_unit),
        cmocka_unit_test(test_duration_refuses_unknown_unit),
        cmocka_unit_test(test_duration_refuses_garbage),
        cmocka_unit_test(test_duration_refuses_unordered_or_repeated_units),
        cmocka_unit_test(test_duration_refuses_more_than_ten_years),
        cmocka_unit_test(test_duration_format_is_shortest),
        cmocka_unit_test(test_duration_format_round_trips),
        cmocka_unit_test(test_duration_format_refuses_negative_and_small_buffer),
        cmocka_unit_test(test_clock_accepts_day_range),
        cmocka_unit_test(test_clock_refuses_bad_text),
        cmocka_unit_test(test_clock_refuses_out_of_range),
        cmocka_unit_test(test_cap_parses_count_and_window),
        cmocka_unit_test(test_cap_refuses_bad_text),
        cmocka_unit_test(test_time_parses_utc),
        cmocka_unit_test(test_time_bare_date_is_midnight_utc),
        cmocka_unit_test(test_time_parses_offsets),
        cmocka_unit_test(test_time_before_epoch),
        cmocka_unit_test(test_time_refuses_bad_text),
        cmocka_unit_test(test_time_format),
        cmocka_unit_test(test_time_format_round_trips),
    };
    return cmocka_run_group_tests_name("units", tests, NULL, NULL);
}
