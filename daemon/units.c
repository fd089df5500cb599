/*
 * units.c — the small text formats of the config and the imports (units.h).
 *
 * Every parser is strict and total: it reads the whole string, accepts only
 * the documented grammar, checks ranges, and explains a refusal in one
 * sentence that quotes the text (the caller adds file:line or the import row).
 * Calendar arithmetic is done on proleptic Gregorian day numbers (the
 * civil-from-days / days-from-civil algorithms), so no function here touches
 * the C library's time zone state.
 */
#include "units.h"

#include <stdio.h>
#include <string.h>

/* Ten years, counting the leap days they can contain. */
#define CAD_DURATION_MAX (3653 * CAD_DAY)

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Reads exactly `n` digits at *p into *value; false if any is missing. */
static bool read_digits(const char **p, int n, int *value)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!is_digit((*p)[i]))
            return false;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *value = v;
    return true;
}

static int64_t unit_seconds(char unit)
{
    switch (unit) {
    case 'w': return 7 * CAD_DAY;
    case 'd': return CAD_DAY;
    case 'h': return CAD_HOUR;
    case 'm': return CAD_MINUTE;
    case 's': return 1;
    default: return 0;
    }
}

int cad_duration_parse(const char *text, int64_t *seconds, char *err)
{
    if (!text || !*text)
        return cad_fail(err, CAD_EINVAL,
                        "empty duration (expected e.g. \"14d\", \"36h\", \"1d12h\")");
    if (strcmp(text, "0") == 0) {
        *seconds = 0;
        return 0;
    }
    int64_t total = 0;
    int64_t last_unit = INT64_MAX;
    const char *p = text;
    while (*p) {
        if (!is_digit(*p))
            return cad_fail(err, CAD_EINVAL,
                            "duration '%s' must be a number followed by a unit (w, d, h, m, s), "
                            "e.g. \"14d\" or \"1d12h\"",
                            text);
        int64_t n = 0;
        while (is_digit(*p)) {
            n = n * 10 + (*p - '0');
            if (n > CAD_DURATION_MAX)
                return cad_fail(err, CAD_EINVAL, "duration '%s' is longer than 10 years", text);
            p++;
        }
        if (!*p)
            return cad_fail(err, CAD_EINVAL,
                            "duration '%s' ends with a number without a unit (w, d, h, m or s)",
                            text);
        int64_t unit = unit_seconds(*p);
        if (unit == 0)
            return cad_fail(err, CAD_EINVAL,
                            "duration '%s' has unknown unit '%c' (use w, d, h, m or s)", text, *p);
        if (unit >= last_unit)
            return cad_fail(err, CAD_EINVAL,
                            "duration '%s' must list its units once each, largest first "
                            "(w, d, h, m, s)",
                            text);
        last_unit = unit;
        if (n > CAD_DURATION_MAX / unit)
            return cad_fail(err, CAD_EINVAL, "duration '%s' is longer than 10 years", text);
        total += n * unit;
        if (total > CAD_DURATION_MAX)
            return cad_fail(err, CAD_EINVAL, "duration '%s' is longer than 10 years", text);
        p++;
    }
    *seconds = total;
    return 0;
}

int cad_duration_format(int64_t seconds, char *buf, size_t size)
{
    if (!buf || size == 0)
        return -CAD_EINVAL;
    buf[0] = '\0';
    if (seconds < 0)
        return -CAD_EINVAL;
    if (seconds == 0) {
        if (size < 3)
            return -CAD_EFULL;
        memcpy(buf, "0s", 3);
        return 0;
    }
    static const struct {
        char unit;
        int64_t seconds;
    } parts[] = {{'d', CAD_DAY}, {'h', CAD_HOUR}, {'m', CAD_MINUTE}, {'s', 1}};
    size_t len = 0;
    for (size_t i = 0; i < CAD_ARRAY_LEN(parts); i++) {
        int64_t n = seconds / parts[i].seconds;
        seconds %= parts[i].seconds;
        if (n == 0)
            continue;
        int w = snprintf(buf + len, size - len, "%lld%c", (long long)n, parts[i].unit);
        if (w < 0 || (size_t)w >= size - len) {
            buf[0] = '\0';
            return -CAD_EFULL;
        }
        len += (size_t)w;
    }
    return 0;
}

int cad_clock_parse(const char *text, int *minutes, char *err)
{
    const char *p = text ? text : "";
    int h = 0, m = 0;
    bool ok;
    if (is_digit(p[0]) && p[1] == ':')
        ok = read_digits(&p, 1, &h);
    else
        ok = read_digits(&p, 2, &h);
    ok = ok && *p++ == ':' && read_digits(&p, 2, &m) && *p == '\0';
    if (!ok)
        return cad_fail(err, CAD_EINVAL,
                        "clock time '%s' must be HH:MM, e.g. \"08:00\" or \"21:30\"",
                        text ? text : "");
    if (m > 59 || h > 24 || (h == 24 && m != 0))
        return cad_fail(err, CAD_EINVAL, "clock time '%s' is out of range (00:00 to 24:00)", text);
    *minutes = h * 60 + m;
    return 0;
}

int cad_cap_parse(const char *text, uint32_t *count, int64_t *window, char *err)
{
    const char *p = text ? text : "";
    uint64_t n = 0;
    if (!is_digit(*p))
        return cad_fail(err, CAD_EINVAL,
                        "cap '%s' must be <count>/<duration>, e.g. \"2/7d\" (two per seven days)",
                        p);
    while (is_digit(*p)) {
        n = n * 10 + (uint64_t)(*p - '0');
        if (n > 1000000)
            return cad_fail(err, CAD_EINVAL, "cap '%s' has a count above 1000000", text);
        p++;
    }
    if (*p != '/')
        return cad_fail(err, CAD_EINVAL,
                        "cap '%s' must be <count>/<duration>, e.g. \"2/7d\" (two per seven days)",
                        text);
    if (n < 1)
        return cad_fail(err, CAD_EINVAL, "cap '%s' must allow at least 1 touch", text);
    int64_t w;
    char why[CAD_ERRBUF];
    if (cad_duration_parse(p + 1, &w, why) < 0)
        return cad_fail(err, CAD_EINVAL, "cap '%s': %s", text, why);
    if (w <= 0)
        return cad_fail(err, CAD_EINVAL, "cap '%s' needs a window longer than zero", text);
    *count = (uint32_t)n;
    *window = w;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int days_in_month(int y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

int cad_time_parse(const char *text, cad_time_t *out, char *err)
{
    const char *s = text ? text : "";
    const char *p = s;
    int y, mo, d, h = 0, mi = 0, sec = 0;
    if (!(read_digits(&p, 4, &y) && *p++ == '-' && read_digits(&p, 2, &mo) && *p++ == '-' &&
          read_digits(&p, 2, &d)))
        return cad_fail(err, CAD_EINVAL,
                        "time '%s' must be an ISO 8601 date (2026-03-08) or date-time "
                        "(2026-03-08T09:30:00Z or with an offset like +01:00)",
                        s);
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
        return cad_fail(err, CAD_EINVAL, "time '%s' is not a calendar date", s);
    int64_t offset = 0;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (!(read_digits(&p, 2, &h) && *p++ == ':' && read_digits(&p, 2, &mi)))
            return cad_fail(err, CAD_EINVAL, "time '%s' has a malformed time of day (HH:MM:SS)", s);
        if (*p == ':') {
            p++;
            if (!read_digits(&p, 2, &sec))
                return cad_fail(err, CAD_EINVAL, "time '%s' has malformed seconds", s);
            if (*p == '.' || *p == ',') { /* fractions of a second are dropped */
                p++;
                if (!is_digit(*p))
                    return cad_fail(err, CAD_EINVAL, "time '%s' has a malformed fraction", s);
                while (is_digit(*p))
                    p++;
            }
        }
        if (h > 23 || mi > 59 || sec > 60)
            return cad_fail(err, CAD_EINVAL, "time '%s' has a time of day out of range", s);
        if (sec == 60) /* a leap second is the instant before the next minute */
            sec = 59;
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int sign = *p++ == '-' ? -1 : 1;
            int oh, om = 0;
            if (!read_digits(&p, 2, &oh))
                return cad_fail(err, CAD_EINVAL, "time '%s' has a malformed UTC offset", s);
            if (*p == ':')
                p++;
            if (is_digit(*p) && !read_digits(&p, 2, &om))
                return cad_fail(err, CAD_EINVAL, "time '%s' has a malformed UTC offset", s);
            if (oh > 18 || om > 59)
                return cad_fail(err, CAD_EINVAL, "time '%s' has a UTC offset out of range", s);
            offset = sign * (oh * CAD_HOUR + om * CAD_MINUTE);
        } else if (*p == '\0') {
            return cad_fail(err, CAD_EINVAL,
                            "time '%s' needs a time zone: end it with Z or an offset like +01:00",
                            s);
        }
    }
    if (*p != '\0')
        return cad_fail(err, CAD_EINVAL, "time '%s' has trailing text '%s'", s, p);
    *out = days_from_civil(y, mo, d) * CAD_DAY + h * CAD_HOUR + mi * CAD_MINUTE + sec - offset;
    return 0;
}

int cad_time_format(cad_time_t t, char *buf, size_t size)
{
    if (!buf || size == 0)
        return -CAD_EINVAL;
    int64_t days = t / CAD_DAY;
    int64_t rem = t % CAD_DAY;
    if (rem < 0) {
        rem += CAD_DAY;
        days--;
    }
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    int w = snprintf(buf, size, "%04lld-%02d-%02dT%02d:%02d:%02dZ", (long long)y, m, d,
                     (int)(rem / CAD_HOUR), (int)(rem % CAD_HOUR / CAD_MINUTE),
                     (int)(rem % CAD_MINUTE));
    if (w < 0 || (size_t)w >= size) {
        buf[0] = '\0';
        return -CAD_EFULL;
    }
    return 0;
}
