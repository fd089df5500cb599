/*
 * log.c — one line per event on stderr (see log.h).
 *
 * Every message is formatted into one buffer and written with a single
 * write(2), so lines from the daemon never interleave. Line breaks inside a
 * message (a customer name, a config value) become spaces: one event, one
 * line, always. Overlong messages are cut and marked with "...".
 *
 * Journald mode is chosen the way systemd documents it: $JOURNAL_STREAM holds
 * "DEVICE:INODE" of the stream journald connected, and it only counts when
 * stderr is still that stream (a child whose stderr was redirected must not
 * print "<N>" prefixes into a file).
 */
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CAD_LOG_LINE_MAX 4096
#define CAD_LOG_HOLD_MAX (64 * 1024)

static enum cad_log_level log_level = CAD_LOG_INFO;
static bool log_journal;
static int log_fd = 2;

/* cad_log_hold's buffer, per thread: allocated at the first hold, kept. */
static _Thread_local char *hold_buf;
static _Thread_local size_t hold_len;
static _Thread_local bool holding;

static const char *level_name(enum cad_log_level level)
{
    switch (level) {
    case CAD_LOG_ERR: return "error";
    case CAD_LOG_WARNING: return "warning";
    case CAD_LOG_NOTICE: return "notice";
    case CAD_LOG_INFO: return "info";
    case CAD_LOG_DEBUG: return "debug";
    }
    return "log";
}

/* True when $JOURNAL_STREAM names the device and inode of fd. */
static bool fd_is_journal_stream(int fd)
{
    const char *env = getenv("JOURNAL_STREAM");
    if (!env || !*env)
        return false;
    uintmax_t dev, ino;
    if (sscanf(env, "%ju:%ju", &dev, &ino) != 2)
        return false;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return false;
    return (uintmax_t)st.st_dev == dev && (uintmax_t)st.st_ino == ino;
}

void cad_log_init(enum cad_log_level level)
{
    log_fd = 2;
    log_journal = fd_is_journal_stream(log_fd);
    cad_log_set_level(level);
}

void cad_log_set_level(enum cad_log_level level)
{
    if (level < CAD_LOG_ERR)
        level = CAD_LOG_ERR;
    if (level > CAD_LOG_DEBUG)
        level = CAD_LOG_DEBUG;
    log_level = level;
}

enum cad_log_level cad_log_get_level(void)
{
    return log_level;
}

void cad_log_set_output(int fd, bool journal)
{
    log_fd = fd;
    log_journal = journal;
}

const char *cad_log_level_name(enum cad_log_level level)
{
    return level_name(level);
}

static void write_all(const char *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(log_fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report it */
        }
        p += w;
        len -= (size_t)w;
    }
}

void cad_log_hold(void)
{
    if (!hold_buf)
        hold_buf = malloc(CAD_LOG_HOLD_MAX); /* a thread's, never freed; NULL: no holding */
    holding = hold_buf != NULL;
    hold_len = 0;
}

/* Writes held lines in pieces of whole lines of at most PIPE_BUF bytes:
 * a write that size to a pipe or the journald stream is atomic, so another
 * thread's line never lands inside one of ours. */
static void write_lines(const char *p, size_t len)
{
    while (len > 0) {
        size_t n = len;
        if (n > PIPE_BUF) {
            n = PIPE_BUF;
            while (n > 0 && p[n - 1] != '\n')
                n--;
            if (n == 0)
                n = PIPE_BUF; /* not reached: a line is at most CAD_LOG_LINE_MAX */
        }
        write_all(p, n);
        p += n;
        len -= n;
    }
}

void cad_log_release(bool emit)
{
    if (emit && hold_len > 0)
        write_lines(hold_buf, hold_len);
    hold_len = 0;
    holding = false;
}

const char *cad_log_value(const char *s, char buf[CAD_LOG_VALUE_MAX])
{
    if (!s)
        return "";
    const char *p = s;
    while (*p && (unsigned char)*p > 0x20 && *p != 0x7f && !strchr("\"\\=", *p))
        p++;
    if (!*p && p != s)
        return s;
    size_t n = 0;
    buf[n++] = '"';
    for (p = s; *p && n < CAD_LOG_VALUE_MAX - 6; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            n += (size_t)snprintf(buf + n, 5, "\\x%02x", c);
        } else {
            buf[n++] = (char)c;
        }
    }
    buf[n++] = '"';
    buf[n] = '\0';
    return buf;
}

void cad_log(enum cad_log_level level, const char *fmt, ...)
{
    if (level > log_level)
        return;
    char line[CAD_LOG_LINE_MAX];
    size_t len = 0;
    if (log_journal) {
        len = (size_t)snprintf(line, sizeof(line), "<%d>", (int)level);
    } else {
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        /* local time with its UTC offset: unambiguous across zones and DST */
        len = strftime(line, sizeof(line), "%Y-%m-%d %H:%M:%S%z ", &tm);
        len += (size_t)snprintf(line + len, sizeof(line) - len, "%s: ", level_name(level));
    }
    size_t start = len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line + len, sizeof(line) - len - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(line) - len - 1) {
        len = sizeof(line) - 1;
        memcpy(line + len - 3, "...", 3);
    } else {
        len += (size_t)n;
    }
    for (size_t i = start; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    while (len > start && line[len - 1] == ' ')
        len--;
    line[len++] = '\n';
    if (holding && level >= CAD_LOG_NOTICE) {
        if (hold_len + len > CAD_LOG_HOLD_MAX) { /* full: what is held goes out now */
            write_lines(hold_buf, hold_len);
            hold_len = 0;
        }
        memcpy(hold_buf + hold_len, line, len);
        hold_len += len;
        return;
    }
    write_all(line, len);
}
