/*
 * log.h — one line per event on stderr, for the 3 a.m. operator.
 *
 * When $JOURNAL_STREAM is set (stderr goes to journald) each line starts with
 * a "<N>" priority prefix and no timestamp; otherwise with a human local
 * timestamp and the level name. Messages are a sentence followed by
 * key=value fields; never credentials, tokens or message bodies.
 */
#ifndef CADENCE_LOG_H
#define CADENCE_LOG_H

#include "config.h"

/* Reads $JOURNAL_STREAM and sets the threshold; call once at start. */
void cad_log_init(enum cad_log_level level);
void cad_log_set_level(enum cad_log_level level);
enum cad_log_level cad_log_get_level(void);

/* Redirects logging to `fd` (not owned) in journald or human format; for tests
 * and tools that log elsewhere than stderr. */
void cad_log_set_output(int fd, bool journal);
/* Lower-case name of a level ("error", "warning", ...); static storage. */
const char *cad_log_level_name(enum cad_log_level level);

void cad_log(enum cad_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Holds the calling thread's notice, info and debug lines in a buffer of
 * its own until cad_log_release, which writes them all with one write(2)
 * when `emit` is true and drops them otherwise: the scheduler holds the
 * "touch decided" lines of a batch of decisions, so they appear when the
 * batch is committed and not at all when it is rolled back, and a batch of
 * thousands costs a handful of writes instead of one each. Errors and
 * warnings are written at once, held or not. Lines of other threads are
 * not held. When the buffer cannot be allocated, or fills, lines are
 * written as if not held; when it fills, what it holds is written then,
 * emit or not. Holds do not nest. */
void cad_log_hold(void);
void cad_log_release(bool emit);

/* An outside value (an id, an address) for a key=value field: `s` itself
 * when it holds no space, quote, backslash, '=' or control character, else
 * a double-quoted copy with \" and \\ escaped and control characters as
 * \xHH, written into buf (cut to fit). Returns s or buf; s NULL is "". */
#define CAD_LOG_VALUE_MAX 1024
const char *cad_log_value(const char *s, char buf[CAD_LOG_VALUE_MAX]);

#define cad_log_err(...)     cad_log(CAD_LOG_ERR, __VA_ARGS__)
#define cad_log_warning(...) cad_log(CAD_LOG_WARNING, __VA_ARGS__)
#define cad_log_notice(...)  cad_log(CAD_LOG_NOTICE, __VA_ARGS__)
#define cad_log_info(...)    cad_log(CAD_LOG_INFO, __VA_ARGS__)
#define cad_log_debug(...)   cad_log(CAD_LOG_DEBUG, __VA_ARGS__)

#endif
