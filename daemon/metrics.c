/*
 * metrics.c — the Prometheus text format, written into a growing buffer
 * (see metrics.h). Numbers are printed with %.17g (integers exactly);
 * failures are sticky so callers write every line and check once.
 */
#include "metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cad_metrics_init(cad_metrics_t *m)
{
    memset(m, 0, sizeof(*m));
}

void cad_metrics_free(cad_metrics_t *m)
{
    free(m->text);
    cad_metrics_init(m);
}

static void put(cad_metrics_t *m, const char *s, size_t n)
{
    if (m->failed)
        return;
    if (m->len + n + 1 > m->cap) {
        size_t cap = m->cap ? m->cap : 4096;
        while (cap < m->len + n + 1)
            cap *= 2;
        char *t = realloc(m->text, cap);
        if (!t) {
            m->failed = true;
            return;
        }
        m->text = t;
        m->cap = cap;
    }
    memcpy(m->text + m->len, s, n);
    m->len += n;
    m->text[m->len] = '\0';
}

static void puts_(cad_metrics_t *m, const char *s)
{
    put(m, s, strlen(s));
}

static void printf_(cad_metrics_t *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void printf_(cad_metrics_t *m, const char *fmt, ...)
{
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(buf)) {
        m->failed = true;
        return;
    }
    put(m, buf, (size_t)n);
}

bool cad_metrics_name_valid(const char *name)
{
    if (!name || !*name || (name[0] >= '0' && name[0] <= '9'))
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == ':'))
            return false;
    return true;
}

static void put_value(cad_metrics_t *m, double v)
{
    if (isnan(v))
        puts_(m, "NaN");
    else if (isinf(v))
        puts_(m, v > 0 ? "+Inf" : "-Inf");
    else
        printf_(m, "%.17g", v);
}

/* HELP text escapes backslash and newline. */
static void put_help(cad_metrics_t *m, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            puts_(m, "\\\\");
        else if (*s == '\n')
            puts_(m, "\\n");
        else
            put(m, s, 1);
    }
}

/* Label values escape backslash, double quote and newline. */
static void put_label_value(cad_metrics_t *m, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            puts_(m, "\\\\");
        else if (*s == '"')
            puts_(m, "\\\"");
        else if (*s == '\n')
            puts_(m, "\\n");
        else
            put(m, s, 1);
    }
}

void cad_metrics_family(cad_metrics_t *m, const char *name, const char *type, const char *help)
{
    if (!cad_metrics_name_valid(name)) {
        m->failed = true;
        return;
    }
    puts_(m, "# HELP ");
    puts_(m, name);
    puts_(m, " ");
    put_help(m, help);
    puts_(m, "\n# TYPE ");
    puts_(m, name);
    puts_(m, " ");
    puts_(m, type);
    puts_(m, "\n");
}

static void put_labels(cad_metrics_t *m, const char *const *labels, const char *le)
{
    bool any = (labels && labels[0]) || le;
    if (!any)
        return;
    puts_(m, "{");
    bool first = true;
    for (int i = 0; labels && labels[i] && labels[i + 1]; i += 2) {
        if (!cad_metrics_name_valid(labels[i])) {
            m->failed = true;
            return;
        }
        if (!first)
            puts_(m, ",");
        first = false;
        puts_(m, labels[i]);
        puts_(m, "=\"");
        put_label_value(m, labels[i + 1]);
        puts_(m, "\"");
    }
    if (le) {
        if (!first)
            puts_(m, ",");
        puts_(m, "le=\"");
        puts_(m, le);
        puts_(m, "\"");
    }
    puts_(m, "}");
}

void cad_metrics_sample(cad_metrics_t *m, const char *name, const char *const *labels, double value)
{
    if (!cad_metrics_name_valid(name)) {
        m->failed = true;
        return;
    }
    puts_(m, name);
    put_labels(m, labels, NULL);
    puts_(m, " ");
    put_value(m, value);
    puts_(m, "\n");
}

void cad_metrics_histogram(cad_metrics_t *m, const char *name, const double *bounds,
                           const int64_t *counts, int n, double sum)
{
    char bucket[160], le[48];
    if (!cad_metrics_name_valid(name) || strlen(name) > 100) {
        m->failed = true;
        return;
    }
    snprintf(bucket, sizeof(bucket), "%s_bucket", name);
    int64_t cumulative = 0;
    for (int i = 0; i <= n; i++) {
        cumulative += counts[i];
        if (i < n)
            snprintf(le, sizeof(le), "%.17g", bounds[i]);
        else
            snprintf(le, sizeof(le), "+Inf");
        puts_(m, bucket);
        put_labels(m, NULL, le);
        printf_(m, " %lld\n", (long long)cumulative);
    }
    printf_(m, "%s_sum ", name);
    put_value(m, sum);
    printf_(m, "\n%s_count %lld\n", name, (long long)cumulative);
}
