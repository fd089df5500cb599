/*
 * common.c — error names, the error-buffer helper and the wall-clock helper
 * used by every module.
 */
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

const char *cad_strerror(int code)
{
    switch (code < 0 ? -code : code) {
    case CAD_OK: return "success";
    case CAD_EINVAL: return "invalid input";
    case CAD_ENOMEM: return "out of memory";
    case CAD_EIO: return "input/output error";
    case CAD_ESTORE: return "store error";
    case CAD_ENOTFOUND: return "not found";
    case CAD_EEXIST: return "already exists";
    case CAD_EFULL: return "no space left or limit reached";
    case CAD_EBUSY: return "busy";
    case CAD_EPERM: return "permission denied";
    default: return "unknown error";
    }
}

int cad_fail(char *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, CAD_ERRBUF, fmt, ap);
        va_end(ap);
    }
    return -code;
}

int64_t cad_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

cad_time_t cad_wall_now(void)
{
    return (cad_time_t)(cad_wall_ms() / 1000);
}

int64_t cad_ms_until(cad_time_t when)
{
    if (when > INT64_MAX / 1000)
        return INT64_MAX; /* CAD_TIME_NEVER and its like */
    int64_t ms = (int64_t)when * 1000 - cad_wall_ms();
    return ms > 0 ? ms : 0;
}
