/*
 * notify.c — sd_notify wrappers (see notify.h).
 *
 * The environment is left in place (unset_environment = 0) so that a reload
 * and the watchdog timer can keep notifying for the life of the process.
 */
#include "notify.h"

#include <stdarg.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>

int cad_notify_ready(void)
{
    return sd_notify(0, "READY=1");
}

int cad_notify_reloading(void)
{
    return sd_notify(0, "RELOADING=1");
}

int cad_notify_stopping(void)
{
    return sd_notify(0, "STOPPING=1");
}

int cad_notify_watchdog(void)
{
    return sd_notify(0, "WATCHDOG=1");
}

int cad_notify_status(const char *fmt, ...)
{
    char line[512] = "STATUS=";
    size_t off = 7;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + off, sizeof(line) - off, fmt, ap);
    va_end(ap);
    for (char *p = line + off; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    return sd_notify(0, line);
}

uint64_t cad_notify_watchdog_usec(void)
{
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0)
        return 0;
    return usec;
}
