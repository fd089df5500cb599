/*
 * tz.h — time zones through ICU's tz database, fast enough for the engine.
 *
 * A cad_tz_t names one IANA zone. Converting an instant to local time asks
 * ICU once per UTC-offset period (between two transitions) and caches the
 * period, so the engine's hot path is a range check and an addition. Local
 * wall-clock times that do not exist (spring forward) resolve to the first
 * valid instant after the gap; repeated ones (fall back) to the first
 * occurrence. Never uses setenv("TZ").
 *
 * Zones are interned in a process-wide registry (cad_tz_get) and live until
 * cad_tz_registry_free(); the registry is not thread-safe and belongs to the
 * loop thread (the engine only reads zones already obtained).
 */
#ifndef CADENCE_TZ_H
#define CADENCE_TZ_H

#include "common.h"

typedef struct cad_tz cad_tz_t;

/* Local calendar fields of an instant. */
typedef struct cad_local_time {
    int year, month, day; /* month 1..12, day 1..31 */
    int hour, minute, second;
    int weekday;        /* 0 = Monday ... 6 = Sunday */
    int minute_of_day;  /* hour * 60 + minute */
    int64_t day_number; /* local days since 1970-01-01 (for "same local day") */
    int32_t utc_offset; /* seconds east of UTC at that instant */
} cad_local_time_t;

/* True when `name` is a known IANA zone id (e.g. "Europe/London"). */
bool cad_tz_valid(const char *name);

/* Returns the interned zone for `name`, creating it; NULL with err filled
 * for an unknown zone. The zone is owned by the registry. */
const cad_tz_t *cad_tz_get(const char *name, char *err);

/* The zone "UTC"; never NULL. */
const cad_tz_t *cad_tz_utc(void);

/* The zone's IANA name; owned by the zone. */
const char *cad_tz_name(const cad_tz_t *tz);

/* Converts a UTC instant to local fields. */
void cad_tz_local(const cad_tz_t *tz, cad_time_t t, cad_local_time_t *out);

/* Converts local wall-clock fields (year, month, day, hour, minute) to the
 * UTC instant, resolving DST gaps and overlaps as described above. */
cad_time_t cad_tz_from_local(const cad_tz_t *tz, int year, int month, int day, int hour,
                             int minute);

/* The first instant >= t whose local minute-of-day lies in [start, end)
 * (wrapping midnight when start > end) and whose local weekday bit is set in
 * `weekdays` (bit 0 = Monday). start == end means any minute. Returns
 * CAD_TIME_NEVER when weekdays is 0. */
cad_time_t cad_tz_next_allowed(const cad_tz_t *tz, cad_time_t t, int start, int end,
                               uint8_t weekdays);

/* Frees every interned zone (at exit; makes leak checkers quiet). */
void cad_tz_registry_free(void);

#endif
