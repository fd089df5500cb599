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

#define cad_log_err(...)     cad_log(CAD_LOG_ERR, __VA_ARGS__)
#define cad_log_warning(...) cad_log(CAD_LOG_WARNING, __VA_ARGS__)
#define cad_log_notice(...)  cad_log(CAD_LOG_NOTICE, __VA_ARGS__)
#define cad_log_info(...)    cad_log(CAD_LOG_INFO, __VA_ARGS__)
#define cad_log_debug(...)   cad_log(CAD_LOG_DEBUG, __VA_ARGS__)

#endif
