/*
 * test_tz.c — time zones: offsets across DST, skipped and repeated local
 * times, and the next allowed moment across midnight and weekdays, in
 * America/Los_Angeles and Europe/London. Expected instants are written as
 * epoch seconds checked against the tz database by hand (date -u -d ...).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tz.h"

/* 2026 transitions (UTC). */
#define LA_SPRING  1772964000 /* 2026-03-08T10:00:00Z: 02:00 PST -> 03:00 PDT */
#define LA_FALL    1793523600 /* 2026-11-01T09:00:00Z: 02:00 PDT -> 01:00 PST */
#define LON_SPRING 1774746000 /* 2026-03-29T01:00:00Z: 01:00 GMT -> 02:00 BST */
#define LON_FALL   1792890000 /* 2026-10-25T01:00:00Z: 02:00 BST -> 01:00 GMT */
#define ALL_DAYS   0x7f
#define WEEKDAYS   0x1f /* Monday..Friday */

static const cad_tz_t *zone(const char *name)
{
    char err[CAD_ERRBUF] = "";
    const cad_tz_t *tz = cad_tz_get(name, err);
    assert_non_null(tz);
    assert_string_equal(cad_tz_name(tz), name);
    return tz;
}

static void test_tz_unknown_zone_is_refused_with_its_name(void **state)
{
    char err[CAD_ERRBUF] = "";
    assert_null(cad_tz_get("Europe/Atlantis", err));
    assert_non_null(strstr(err, "Europe/Atlantis"));
    assert_null(cad_tz_get("", err));
    assert_null(cad_tz_get("Europe/London\n", err));
    assert_false(cad_tz_valid("Mars/Olympus_Mons"));
    assert_false(cad_tz_valid(NULL));
    assert_true(cad_tz_valid("America/Los_Angeles"));
    assert_true(cad_tz_valid("UTC"));
    /* names are exact: no case folding, no custom offsets */
    assert_false(cad_tz_valid("europe/london"));
    assert_false(cad_tz_valid("GMT+5"));
    assert_null(cad_tz_get("GMT+5", err));
    assert_non_null(strstr(err, "GMT+5"));
}

static void test_tz_aliases_are_the_same_zone_rules(void **state)
{
    const cad_tz_t *la = zone("America/Los_Angeles");
    const cad_tz_t *alias = zone("US/Pacific");
    cad_local_time_t a, b;
    for (cad_time_t t = LA_SPRING - 86400; t < LA_FALL + 86400; t += 7 * 86400 + 3600) {
        cad_tz_local(la, t, &a);
        cad_tz_local(alias, t, &b);
        assert_int_equal(a.utc_offset, b.utc_offset);
        assert_int_equal(a.minute_of_day, b.minute_of_day);
    }
}

static void test_tz_registry_interns_zones(void **state)
{
    const cad_tz_t *a = zone("Europe/London");
    const cad_tz_t *b = zone("Europe/London");
    assert_ptr_equal(a, b);
    assert_ptr_equal(cad_tz_utc(), cad_tz_utc());
    assert_string_equal(cad_tz_name(cad_tz_utc()), "UTC");
}

static void test_tz_offsets_across_dst_los_angeles(void **state)
{
    const cad_tz_t *la = zone("America/Los_Angeles");
    cad_local_time_t lt;
    cad_tz_local(la, LA_SPRING - 1, &lt);
    assert_int_equal(lt.utc_offset, -8 * 3600);
    assert_int_equal(lt.hour, 1);
    assert_int_equal(lt.minute, 59);
    assert_int_equal(lt.second, 59);
    cad_tz_local(la, LA_SPRING, &lt);
    assert_int_equal(lt.utc_offset, -7 * 3600);
    assert_int_equal(lt.hour, 3);
    assert_int_equal(lt.minute, 0);
    assert_int_equal(lt.day, 8);
    assert_int_equal(lt.month, 3);
    assert_int_equal(lt.year, 2026);
    assert_int_equal(lt.weekday, 6); /* Sunday */
    cad_tz_local(la, LA_FALL - 1, &lt);
    assert_int_equal(lt.utc_offset, -7 * 3600);
    assert_int_equal(lt.hour, 1);
    assert_int_equal(lt.minute, 59);
    cad_tz_local(la, LA_FALL, &lt);
    assert_int_equal(lt.utc_offset, -8 * 3600);
    assert_int_equal(lt.hour, 1);
    assert_int_equal(lt.minute, 0);
    /* far from the cached periods, and back again */
    cad_tz_local(la, 0, &lt);
    assert_int_equal(lt.year, 1969);
    assert_int_equal(lt.month, 12);
    assert_int_equal(lt.day, 31);
    assert_int_equal(lt.hour, 16);
    assert_int_equal(lt.day_number, -1);
    cad_tz_local(la, LA_SPRING + 3600, &lt);
    assert_int_equal(lt.hour, 4);
}

static void test_tz_offsets_across_dst_london(void **state)
{
    const cad_tz_t *lon = zone("Europe/London");
    cad_local_time_t lt;
    cad_tz_local(lon, LON_SPRING - 1, &lt);
    assert_int_equal(lt.utc_offset, 0);
    assert_int_equal(lt.hour, 0);
    cad_tz_local(lon, LON_SPRING, &lt);
    assert_int_equal(lt.utc_offset, 3600);
    assert_int_equal(lt.hour, 2);
    cad_tz_local(lon, LON_FALL - 1, &lt);
    assert_int_equal(lt.utc_offset, 3600);
    assert_int_equal(lt.hour, 1);
    assert_int_equal(lt.minute, 59);
    cad_tz_local(lon, LON_FALL, &lt);
    assert_int_equal(lt.utc_offset, 0);
    assert_int_equal(lt.hour, 1);
    assert_int_equal(lt.minute, 0);
    /* day numbers and weekdays agree with UTC in winter */
    cad_tz_local(lon, 1773014400, &lt); /* 2026-03-09T00:00Z, a Monday */
    assert_int_equal(lt.weekday, 0);
    assert_int_equal(lt.day_number, 1773014400 / 86400);
}

static void test_tz_from_local_plain_and_utc(void **state)
{
    const cad_tz_t *lon = zone("Europe/London");
    const cad_tz_t *la = zone("America/Los_Angeles");
    assert_int_equal(cad_tz_from_local(lon, 2026, 3, 9, 0, 0), 1773014400);
    assert_int_equal(cad_tz_from_local(la, 2026, 3, 9, 0, 0), 1773014400 + 7 * 3600);
    assert_int_equal(cad_tz_from_local(cad_tz_utc(), 2026, 3, 9, 0, 0), 1773014400);
    assert_int_equal(cad_tz_from_local(NULL, 2026, 3, 9, 0, 0), 1773014400);
    /* summer in London is BST */
    assert_int_equal(cad_tz_from_local(lon, 2026, 7, 1, 12, 0), 1782907200 - 3600);
}

static void test_tz_nonexistent_local_time_resolves_after_the_gap(void **state)
{
    const cad_tz_t *la = zone("America/Los_Angeles");
    const cad_tz_t *lon = zone("Europe/London");
    /* 02:30 on 2026-03-08 does not exist in Los Angeles: 03:00 PDT */
    assert_int_equal(cad_tz_from_local(la, 2026, 3, 8, 2, 30), LA_SPRING);
    assert_int_equal(cad_tz_from_local(la, 2026, 3, 8, 2, 0), LA_SPRING);
    assert_int_equal(cad_tz_from_local(la, 2026, 3, 8, 3, 0), LA_SPRING);
    assert_int_equal(cad_tz_from_local(la, 2026, 3, 8, 1, 59), LA_SPRING - 60);
    /* 01:30 on 2026-03-29 does not exist in London */
    assert_int_equal(cad_tz_from_local(lon, 2026, 3, 29, 1, 30), LON_SPRING);
}

static void test_tz_repeated_local_time_takes_first_occurrence(void **state)
{
    const cad_tz_t *la = zone("America/Los_Angeles");
    const cad_tz_t *lon = zone("Europe/London");
    /* 01:30 happens twice on 2026-11-01 in Los Angeles; first is PDT */
    assert_int_equal(cad_tz_from_local(la, 2026, 11, 1, 1, 30), LA_FALL - 1800);
    assert_int_equal(cad_tz_from_local(la, 2026, 11, 1, 2, 0), LA_FALL + 3600);
    /* 01:30 happens twice on 2026-10-25 in London; first is BST */
    assert_int_equal(cad_tz_from_local(lon, 2026, 10, 25, 1, 30), LON_FALL - 1800);
}

static void test_tz_next_allowed_inside_window_is_now(void **state)
{
    const cad_tz_t *lon = zone("Europe/London");
    cad_time_t t = cad_tz_from_local(lon, 2026, 3, 10, 12, 0); /* Tuesday noon */
    assert_int_equal(cad_tz_next_allowed(lon, t, 8 * 60, 20 * 60, ALL_DAYS), t);
    assert_int_equal(cad_tz_next_allowed(lon, t, 0, 0, ALL_DAYS), t);
    assert_int_equal(cad_tz_next_allowed(lon, t, 8 * 60, 20 * 60, 0), CAD_TIME_NEVER);
}

static void test_tz_next_allowed_wraps_midnight(void **state)
{
    const cad_tz_t *la = zone("America/Los_Angeles");
    /* window 08:00-20:00: at 21:00 the answer is 08:00 the next day */
    cad_time_t t = cad_tz_from_local(la, 2026, 3, 10, 21, 0);
    assert_int_equal(cad_tz_next_allowed(la, t, 8 * 60, 20 * 60, ALL_DAYS),
                     cad_tz_from_local(la, 2026, 3, 11, 8, 0));
    /* at 05:00 it is 08:00 the same day */
    t = cad_tz_from_local(la, 2026, 3, 11, 5, 0);
    assert_int_equal(cad_tz_next_allowed(la, t, 8 * 60, 20 * 60, ALL_DAYS),
                     cad_tz_from_local(la, 2026, 3, 11, 8, 0));
    /* a window that wraps midnight, 22:00-06:00: 23:30 is allowed, 07:00 is not */
    t = cad_tz_from_local(la, 2026, 3, 11, 23, 30);
    assert_int_equal(cad_tz_next_allowed(la, t, 22 * 60, 6 * 60, ALL_DAYS), t);
    t = cad_tz_from_local(la, 2026, 3, 12, 7, 0);
    assert_int_equal(cad_tz_next_allowed(la, t, 22 * 60, 6 * 60, ALL_DAYS),
                     cad_tz_from_local(la, 2026, 3, 12, 22, 0));
}

static void test_tz_next_allowed_skips_weekdays(void **state)
{
    const cad_tz_t *lon = zone("Europe/London");
    /* Friday 2026-03-13 21:00, weekdays only: Monday 08:00 */
    cad_time_t t = cad_tz_from_local(lon, 2026, 3, 13, 21, 0);
    assert_int_equal(cad_tz_next_allowed(lon, t, 8 * 60, 20 * 60, WEEKDAYS),
                     cad_tz_from_local(lon, 2026, 3, 16, 8, 0));
    /* Saturday noon, any hour but weekdays only: Monday 00:00 */
    t = cad_tz_from_local(lon, 2026, 3, 14, 12, 0);
    assert_int_equal(cad_tz_next_allowed(lon, t, 0, 0, WEEKDAYS),
                     cad_tz_from_local(lon, 2026, 3, 16, 0, 0));
    /* Sundays only (bit 6) */
    assert_int_equal(cad_tz_next_allowed(lon, t, 9 * 60, 17 * 60, 1u << 6),
                     cad_tz_from_local(lon, 2026, 3, 15, 9, 0));
}

static void test_tz_next_allowed_across_dst_changes(void **state)
{
    const cad_tz_t *la = zone("America/Los_Angeles");
    const cad_tz_t *lon = zone("Europe/London");
    /* Saturday evening before spring-forward: 08:00 Sunday is PDT (15:00Z) */
    cad_time_t t = cad_tz_from_local(la, 2026, 3, 7, 22, 0);
    assert_int_equal(cad_tz_next_allowed(la, t, 8 * 60, 21 * 60, ALL_DAYS), LA_SPRING + 5 * 3600);
    /* a window opening inside the gap (02:30) opens at 03:00 PDT */
    t = cad_tz_from_local(la, 2026, 3, 8, 0, 30);
    assert_int_equal(cad_tz_next_allowed(la, t, 2 * 60 + 30, 5 * 60, ALL_DAYS), LA_SPRING);
    /* fall-back: 08:00 PST on 2026-11-01 is 16:00Z */
    t = cad_tz_from_local(la, 2026, 10, 31, 23, 0);
    assert_int_equal(cad_tz_next_allowed(la, t, 8 * 60, 21 * 60, ALL_DAYS), LA_FALL + 7 * 3600);
    /* London: 08:00 BST on 2026-03-29 is 07:00Z; 08:00 GMT on 2026-10-25 is 08:00Z */
    t = cad_tz_from_local(lon, 2026, 3, 28, 21, 30);
    assert_int_equal(cad_tz_next_allowed(lon, t, 8 * 60, 20 * 60, ALL_DAYS), LON_SPRING + 6 * 3600);
    t = cad_tz_from_local(lon, 2026, 10, 24, 21, 30);
    assert_int_equal(cad_tz_next_allowed(lon, t, 8 * 60, 20 * 60, ALL_DAYS), LON_FALL + 7 * 3600);
}

static uint64_t rng_state = UINT64_C(0x243f6a8885a308d3);

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static bool allowed_at(const cad_tz_t *tz, cad_time_t t, int start, int end, uint8_t weekdays)
{
    cad_local_time_t lt;
    cad_tz_local(tz, t, &lt);
    if (!((weekdays >> lt.weekday) & 1))
        return false;
    if (start == end)
        return true;
    if (start < end)
        return lt.minute_of_day >= start && lt.minute_of_day < end;
    return lt.minute_of_day >= start || lt.minute_of_day < end;
}

/* Random instants around both 2026 DST changes, random windows (some
 * wrapping midnight) and weekday masks: the answer is allowed, and no
 * whole minute between t and the answer is. */
static void test_tz_property_next_allowed_matches_minute_scan(void **state)
{
    const cad_tz_t *zones[2] = {zone("America/Los_Angeles"), zone("Europe/London")};
    const cad_time_t around[4] = {LA_SPRING, LA_FALL, LON_SPRING, LON_FALL};
    for (int round = 0; round < 400; round++) {
        const cad_tz_t *tz = zones[round % 2];
        cad_time_t t = around[rng() % 4] - 3 * CAD_DAY + (cad_time_t)(rng() % (6 * CAD_DAY));
        int start = (int)(rng() % 48) * 30, end = (int)(rng() % 48) * 30;
        uint8_t weekdays = (uint8_t)(rng() % 127 + 1);
        cad_time_t got = cad_tz_next_allowed(tz, t, start, end, weekdays);
        assert_true(got >= t);
        assert_true(got - t <= 8 * CAD_DAY);
        assert_true(allowed_at(tz, got, start, end, weekdays));
        /* every minute boundary before the answer is refused */
        cad_time_t m = t - (t % 60 + 60) % 60 + 60;
        if (allowed_at(tz, t, start, end, weekdays))
            assert_int_equal(got, t);
        for (; m < got; m += 60)
            assert_false(allowed_at(tz, m, start, end, weekdays));
    }
}

static int teardown_registry(void **state)
{
    cad_tz_registry_free();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tz_unknown_zone_is_refused_with_its_name),
        cmocka_unit_test(test_tz_registry_interns_zones),
        cmocka_unit_test(test_tz_aliases_are_the_same_zone_rules),
        cmocka_unit_test(test_tz_offsets_across_dst_los_angeles),
        cmocka_unit_test(test_tz_offsets_across_dst_london),
        cmocka_unit_test(test_tz_from_local_plain_and_utc),
        cmocka_unit_test(test_tz_nonexistent_local_time_resolves_after_the_gap),
        cmocka_unit_test(test_tz_repeated_local_time_takes_first_occurrence),
        cmocka_unit_test(test_tz_next_allowed_inside_window_is_now),
        cmocka_unit_test(test_tz_next_allowed_wraps_midnight),
        cmocka_unit_test(test_tz_next_allowed_skips_weekdays),
        cmocka_unit_test(test_tz_next_allowed_across_dst_changes),
        cmocka_unit_test(test_tz_property_next_allowed_matches_minute_scan),
    };
    return cmocka_run_group_tests_name("tz", tests, NULL, teardown_registry);
}
