/*
 * tz.c — IANA time zones through ICU's ucal, with a per-zone offset cache.
 *
 * Design: a zone is one UCalendar (opened once, kept in a process-wide
 * registry) plus a tiny cache of "offset periods": the UTC range between two
 * transitions found with ucal_getTimeZoneTransitionDate, and the total UTC
 * offset that holds throughout it. Converting an instant to local time is a
 * range check against the cached periods and an addition; ICU is asked only
 * when an instant falls outside every cached period (a few times a year per
 * zone in a running daemon). The civil calendar arithmetic (days <-> y/m/d)
 * is done here with Howard Hinnant's integer algorithms, so no libc time
 * function and no TZ environment variable is ever involved.
 *
 * Local -> UTC tries the offsets that hold a day before and a day after the
 * wall-clock time; a time in a spring-forward gap resolves to the transition
 * instant (the first valid instant after the gap), a repeated time in a
 * fall-back overlap to its first occurrence.
 *
 * Threading: the registry and each zone's cache belong to one thread (the
 * loop thread); a NULL zone pointer means UTC and needs no ICU at all.
 */
#include "tz.h"

#include <stdlib.h>
#include <string.h>

#include <unicode/ucal.h>
#include <unicode/ustring.h>

#define TZ_PERIODS  4 /* cached offset periods per zone */
#define TZ_NAME_MAX 64

typedef struct tz_period {
    cad_time_t lo; /* first second of the period (inclusive) */
    cad_time_t hi; /* first second of the next period (exclusive) */
    int32_t offset;
} tz_period_t;

struct cad_tz {
    char name[TZ_NAME_MAX];
    UCalendar *cal; /* NULL for the built-in UTC zone */
    tz_period_t periods[TZ_PERIODS];
    int n_periods;
    int next_slot; /* round-robin replacement */
    struct cad_tz *next;
};

static struct cad_tz *registry;

/* ---- civil calendar arithmetic (proleptic Gregorian) ---- */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    const int64_t era = floor_div(y, 400);
    const int64_t yoe = y - era * 400;
    const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int *year, int *month, int *day)
{
    z += 719468;
    const int64_t era = floor_div(z, 146097);
    const int64_t doe = z - era * 146097;
    const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const int64_t y = yoe + era * 400;
    const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const int64_t mp = (5 * doy + 2) / 153;
    const int d = (int)(doy - (153 * mp + 2) / 5 + 1);
    const int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *year = (int)(y + (m <= 2));
    *month = m;
    *day = d;
}

/* ---- offsets ---- */

static void period_from_icu(struct cad_tz *tz, cad_time_t t, tz_period_t *p)
{
    UErrorCode st = U_ZERO_ERROR;
    p->lo = INT64_MIN;
    p->hi = INT64_MAX;
    p->offset = 0;
    ucal_setMillis(tz->cal, (UDate)t * 1000.0, &st);
    int32_t zone = ucal_get(tz->cal, UCAL_ZONE_OFFSET, &st);
    int32_t dst = ucal_get(tz->cal, UCAL_DST_OFFSET, &st);
    if (U_FAILURE(st)) {
        /* ICU cannot place this instant (far outside its range): a one-second
         * period keeps the answer correct if slow. */
        p->lo = t;
        p->hi = t + 1;
        return;
    }
    p->offset = (zone + dst) / 1000;
    UDate when = 0;
    st = U_ZERO_ERROR;
    if (ucal_getTimeZoneTransitionDate(tz->cal, UCAL_TZ_TRANSITION_NEXT, &when, &st) &&
        U_SUCCESS(st))
        p->hi = (cad_time_t)(when / 1000.0);
    st = U_ZERO_ERROR;
    if (ucal_getTimeZoneTransitionDate(tz->cal, UCAL_TZ_TRANSITION_PREVIOUS_INCLUSIVE, &when,
                                       &st) &&
        U_SUCCESS(st))
        p->lo = (cad_time_t)(when / 1000.0);
    if (p->lo > t)
        p->lo = t;
    if (p->hi <= t)
        p->hi = t + 1;
}

/* The total UTC offset at instant t, from the cache when possible. The cache
 * is logically part of the zone's read-only state, hence the cast. */
static int32_t offset_at(const cad_tz_t *ctz, cad_time_t t)
{
    if (!ctz || !ctz->cal)
        return 0;
    struct cad_tz *tz = (struct cad_tz *)ctz;
    for (int i = 0; i < tz->n_periods; i++)
        if (t >= tz->periods[i].lo && t < tz->periods[i].hi)
            return tz->periods[i].offset;
    tz_period_t p;
    period_from_icu(tz, t, &p);
    int slot = tz->next_slot;
    tz->periods[slot] = p;
    tz->next_slot = (slot + 1) % TZ_PERIODS;
    if (tz->n_periods < TZ_PERIODS)
        tz->n_periods++;
    return p.offset;
}

/* The first instant after t at which the offset changes (CAD_TIME_NEVER if none). */
static cad_time_t period_end(const cad_tz_t *ctz, cad_time_t t)
{
    if (!ctz || !ctz->cal)
        return CAD_TIME_NEVER;
    offset_at(ctz, t);
    for (int i = 0; i < ctz->n_periods; i++)
        if (t >= ctz->periods[i].lo && t < ctz->periods[i].hi)
            return ctz->periods[i].hi;
    return t + 1;
}

/* ---- registry ---- */

static bool canonical_system_id(const char *name)
{
    UChar id[TZ_NAME_MAX], canon[TZ_NAME_MAX];
    size_t n = strlen(name);
    if (n == 0 || n >= TZ_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x21 || c > 0x7e)
            return false;
    }
    u_uastrcpy(id, name);
    UBool is_system = 0;
    UErrorCode st = U_ZERO_ERROR;
    ucal_getCanonicalTimeZoneID(id, -1, canon, TZ_NAME_MAX, &is_system, &st);
    return U_SUCCESS(st) && is_system;
}

bool cad_tz_valid(const char *name)
{
    if (!name)
        return false;
    if (strcmp(name, "UTC") == 0)
        return true;
    return canonical_system_id(name);
}

static struct cad_tz *registry_find(const char *name)
{
    for (struct cad_tz *z = registry; z; z = z->next)
        if (strcmp(z->name, name) == 0)
            return z;
    return NULL;
}

const cad_tz_t *cad_tz_get(const char *name, char *err)
{
    if (!name || !*name) {
        cad_fail(err, CAD_EINVAL, "time zone: the name is empty");
        return NULL;
    }
    struct cad_tz *z = registry_find(name);
    if (z)
        return z;
    bool utc = strcmp(name, "UTC") == 0;
    if (!utc && !canonical_system_id(name)) {
        cad_fail(err, CAD_EINVAL,
                 "time zone \"%.*s\" is not a known IANA zone (expected e.g. \"Europe/London\")",
                 TZ_NAME_MAX, name);
        return NULL;
    }
    z = calloc(1, sizeof(*z));
    if (!z) {
        cad_fail(err, CAD_ENOMEM, "time zone \"%s\": out of memory", name);
        return NULL;
    }
    memcpy(z->name, name, strlen(name) + 1);
    if (!utc) {
        UChar id[TZ_NAME_MAX];
        u_uastrcpy(id, name);
        UErrorCode st = U_ZERO_ERROR;
        z->cal = ucal_open(id, -1, "en_US_POSIX", UCAL_GREGORIAN, &st);
        if (U_FAILURE(st) || !z->cal) {
            free(z);
            cad_fail(err, CAD_EINVAL, "time zone \"%s\": ICU could not open it (%s)", name,
                     u_errorName(st));
            return NULL;
        }
    }
    z->next = registry;
    registry = z;
    return z;
}

const cad_tz_t *cad_tz_utc(void)
{
    const cad_tz_t *z = cad_tz_get("UTC", NULL);
    if (z)
        return z;
    /* Out of memory for 200 bytes: fall back to a static UTC zone. */
    static struct cad_tz fallback = {.name = "UTC"};
    return &fallback;
}

const char *cad_tz_name(const cad_tz_t *tz)
{
    return tz ? tz->name : "UTC";
}

void cad_tz_registry_free(void)
{
    struct cad_tz *z = registry;
    while (z) {
        struct cad_tz *next = z->next;
        if (z->cal)
            ucal_close(z->cal);
        free(z);
        z = next;
    }
    registry = NULL;
}

/* ---- conversions ---- */

void cad_tz_local(const cad_tz_t *tz, cad_time_t t, cad_local_time_t *out)
{
    int32_t off = offset_at(tz, t);
    int64_t local = t + off;
    int64_t days = floor_div(local, CAD_DAY);
    int64_t sod = local - days * CAD_DAY;
    civil_from_days(days, &out->year, &out->month, &out->day);
    out->hour = (int)(sod / 3600);
    out->minute = (int)(sod / 60 % 60);
    out->second = (int)(sod % 60);
    out->minute_of_day = out->hour * 60 + out->minute;
    out->day_number = days;
    out->weekday = (int)(((days + 3) % 7 + 7) % 7); /* 1970-01-01 was a Thursday */
    out->utc_offset = off;
}

/* Local seconds since the epoch (wall clock) -> UTC instant. */
static cad_time_t from_local_seconds(const cad_tz_t *tz, int64_t local)
{
    if (!tz || !tz->cal)
        return local;
    int32_t before = offset_at(tz, local - CAD_DAY);
    int32_t after = offset_at(tz, local + CAD_DAY);
    cad_time_t a = local - before, b = local - after;
    bool a_ok = offset_at(tz, a) == before;
    bool b_ok = offset_at(tz, b) == after;
    if (a_ok && b_ok)
        return a < b ? a : b; /* repeated time: first occurrence */
    if (a_ok)
        return a;
    if (b_ok)
        return b;
    /* Skipped time: the transition that opened the gap. */
    cad_time_t lo = a < b ? a : b;
    cad_time_t end = period_end(tz, lo);
    return end == CAD_TIME_NEVER ? local - after : end;
}

cad_time_t cad_tz_from_local(const cad_tz_t *tz, int year, int month, int day, int hour, int minute)
{
    int64_t days = days_from_civil(year, month, day);
    return from_local_seconds(tz, days * CAD_DAY + (int64_t)hour * 3600 + (int64_t)minute * 60);
}

static bool minute_allowed(int mod, int start, int end)
{
    if (start == end)
        return true;
    if (start < end)
        return mod >= start && mod < end;
    return mod >= start || mod < end;
}

cad_time_t cad_tz_next_allowed(const cad_tz_t *tz, cad_time_t t, int start, int end,
                               uint8_t weekdays)
{
    weekdays &= 0x7f;
    if (weekdays == 0)
        return CAD_TIME_NEVER;
    if (start == end && weekdays == 0x7f)
        return t;
    /* Each step moves to a later window opening or local midnight; two weeks
     * of steps cover any weekday mask and DST oddity. */
    for (int step = 0; step < 64; step++) {
        cad_local_time_t lt;
        cad_tz_local(tz, t, &lt);
        bool day_ok = (weekdays >> lt.weekday) & 1;
        cad_time_t next;
        if (day_ok && minute_allowed(lt.minute_of_day, start, end))
            return t;
        if (!day_ok || start == end) {
            /* next local midnight */
            next = from_local_seconds(tz, (lt.day_number + 1) * CAD_DAY);
        } else if (lt.minute_of_day < start) {
            next = from_local_seconds(tz, lt.day_number * CAD_DAY + (int64_t)start * 60);
        } else {
            /* past today's window (non-wrapping) — tomorrow's opening */
            next = from_local_seconds(tz, (lt.day_number + 1) * CAD_DAY + (int64_t)start * 60);
        }
        if (next <= t) /* a DST gap swallowed the target: step past it */
            next = t + 60 - (t % 60 + 60) % 60;
        t = next;
    }
    return CAD_TIME_NEVER;
}
