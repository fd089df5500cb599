/*
 * common.h — types and conventions shared by every daemon module.
 *
 * Errors are values: a function returns 0 (or a count) on success and a
 * negative CAD_E* code on failure, and fills a caller-given error buffer of
 * CAD_ERRBUF bytes with one sentence naming what went wrong and where
 * (file:line, customer id, field). Instants are seconds since the Unix epoch
 * in UTC (cad_time_t); durations are seconds (int64_t).
 */
#ifndef CADENCE_COMMON_H
#define CADENCE_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CAD_ERRBUF 512

/* Error codes, always returned negated (-CAD_EINVAL). */
enum cad_error {
    CAD_OK = 0,
    CAD_EINVAL = 1,    /* bad input: config, request, import row */
    CAD_ENOMEM = 2,    /* allocation failed */
    CAD_EIO = 3,       /* file or socket error */
    CAD_ESTORE = 4,    /* the store (SQLite) failed */
    CAD_ENOTFOUND = 5, /* the named object does not exist */
    CAD_EEXIST = 6,    /* the object exists already */
    CAD_EFULL = 7,     /* disk full or a limit reached */
    CAD_EBUSY = 8,     /* try again later */
    CAD_EPERM = 9,     /* refused by an access rule */
};

/* An instant: seconds since 1970-01-01T00:00:00Z. */
typedef int64_t cad_time_t;

#define CAD_TIME_NEVER INT64_MAX

#define CAD_MINUTE ((int64_t)60)
#define CAD_HOUR   ((int64_t)3600)
#define CAD_DAY    ((int64_t)86400)

/* The wall clock (CLOCK_REALTIME) in milliseconds since the epoch. */
int64_t cad_wall_ms(void);

/* The wall clock in whole seconds, read from the same clock as cad_wall_ms
 * (time() may read a coarser one that lags it by a few milliseconds, so
 * that a second already begun by cad_ms_until would not have by time()). */
cad_time_t cad_wall_now(void);

/* Milliseconds from the current wall-clock millisecond until the UTC second
 * `when` begins; 0 when it has begun, INT64_MAX for CAD_TIME_NEVER. Due
 * times are whole seconds: a timer armed with this wakes at the start of the
 * due second, not up to a second after it. */
int64_t cad_ms_until(cad_time_t when);

#define CAD_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Human name of a CAD_E* code (positive or negative); static storage. */
const char *cad_strerror(int code);

/* snprintf into an error buffer that may be NULL; returns -code for chaining:
 * `return cad_fail(err, CAD_EINVAL, "%s:%d: ...", file, line);` */
int cad_fail(char *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
