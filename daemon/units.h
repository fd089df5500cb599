/*
 * units.h — parsers for the little languages of the config and the imports:
 * durations ("14d", "36h", "90m", "45s", "2w", "1d12h"), local clock times
 * ("09:00", "21:30"), frequency caps ("2/7d") and ISO 8601 instants
 * ("2026-03-08T09:30:00Z", "2026-03-08T09:30:00+01:00", "2026-03-08").
 * Each returns 0 or -CAD_EINVAL with a sentence in err saying what is wrong
 * with the text (the caller prefixes file:line).
 */
#ifndef CADENCE_UNITS_H
#define CADENCE_UNITS_H

#include "common.h"

/* "<n><unit>..." with units w, d, h, m, s, each at most once, largest first;
 * at least one part; at most 10 years. Zero ("0", "0s") is accepted: callers
 * refuse it where a zero makes no sense (a cap window, a recurrence). */
int cad_duration_parse(const char *text, int64_t *seconds, char *err);

/* Formats seconds as the shortest duration text ("14d", "1d12h", "0s"). */
int cad_duration_format(int64_t seconds, char *buf, size_t size);

/* "HH:MM", 00:00..24:00, into minutes after midnight. */
int cad_clock_parse(const char *text, int *minutes, char *err);

/* "<count>/<duration>", count >= 1. */
int cad_cap_parse(const char *text, uint32_t *count, int64_t *window, char *err);

/* ISO 8601 date or date-time with Z or an offset (a bare date is midnight UTC). */
int cad_time_parse(const char *text, cad_time_t *out, char *err);

/* Formats an instant as "2026-03-08T09:30:00Z" into buf (>= 21 bytes). */
int cad_time_format(cad_time_t t, char *buf, size_t size);

#endif
