/*
 * notify.h — the daemon's side of the systemd service protocol.
 *
 * Thin wrappers over libsystemd's sd_notify(): READY=1 once the store is open
 * and the control socket bound, RELOADING=1 / READY=1 around a reload,
 * STOPPING=1 at shutdown, WATCHDOG=1 from a timer, and a one-line STATUS=.
 * Without $NOTIFY_SOCKET (not started by systemd) every call does nothing.
 */
#ifndef CADENCE_NOTIFY_H
#define CADENCE_NOTIFY_H

#include <stdint.h>

/* Each returns 1 when sent, 0 when there is no notify socket, or a negative
 * errno from sd_notify (the caller logs it; a lost notification is not fatal). */
int cad_notify_ready(void);
int cad_notify_reloading(void);
int cad_notify_stopping(void);
int cad_notify_watchdog(void);

/* Sends STATUS=<text>; line breaks in the text become spaces. */
int cad_notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The watchdog interval systemd asked for, in microseconds, or 0 when the
 * watchdog is off for this process ($WATCHDOG_USEC / $WATCHDOG_PID). */
uint64_t cad_notify_watchdog_usec(void);

#endif
