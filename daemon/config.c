/*
 * config.c — reads cadenced.conf with libconfig and validates all of it.
 *
 * The loader walks the parsed tree once, section by section, in dependency
 * order: event types and roles first (rules name them), then channels,
 * templates, the content library (which starts the topic table), policies
 * (whose caps name channels) and finally rules, which may name everything
 * above. Every group's keys are checked against the list of keys it may hold,
 * so a typo is an error with a suggestion, never a silently ignored setting.
 *
 * Errors do not stop the walk: each is written at once as "FILE:LINE:
 * message", with FILE and LINE taken from the offending setting (so a mistake
 * inside an @include'd file names that file), and the walk goes on with a
 * default in place of the bad value. The caller gets a config only when the
 * count of errors is zero. Strings are copied out of libconfig's tree, which
 * is destroyed before cad_config_load() returns.
 */
#include "config.h"

#include "backoff.h"
#include "template.h"
#include "tz.h"
#include "units.h"

#include <errno.h>
#include <libconfig.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef CADENCE_PLUGIN_DIR
#define CADENCE_PLUGIN_DIR "/usr/lib/cadence/plugins"
#endif

/* Defaults of the optional settings (docs/configuration.md lists them all). */
#define DEFAULT_STATE_DIR          "/var/lib/cadenced"
#define DEFAULT_SOCKET             "/run/cadenced/control.sock"
#define DEFAULT_TIMEZONE           "UTC"
#define DEFAULT_TOUCH_EXPIRY       (7 * CAD_DAY) /* longer than any sensible min_gap plus a weekend */
#define DEFAULT_PHONE_WINDOW_START (8 * 60)
#define DEFAULT_PHONE_WINDOW_END   (21 * 60)
#define TEN_YEARS                  (3653 * CAD_DAY)

/* The state of one load: where errors go and how many there were. */
struct loader {
    FILE *errors;
    int n_errors;
    bool out_of_memory;
    bool too_many_topics;
    const char *path; /* the main file, for settings libconfig gives no file */
    const char *dir;  /* its directory, which @include paths are relative to; or NULL */
    cad_config_t *cfg;
    cad_playbook_t *pb;
    struct source_file *sources; /* files read back to check integer literals */
};

/* A config file read back into memory (see int_literal_check). */
struct source_file {
    struct source_file *next;
    char *name; /* as libconfig names it */
    char *text; /* NULL when it could not be read */
};

/* ---- error reporting ---------------------------------------------------- */

/* Writes "FILE:LINE: ". libconfig names an included file by its path as
 * written in @include, relative to the main file's directory: prefix that
 * directory so the operator can open the file from anywhere. */
static void print_location(FILE *out, const char *main_path, const char *dir, const char *file,
                           int line)
{
    if (dir && file[0] != '/' && strcmp(file, main_path) != 0)
        fprintf(out, "%s/%s:%d: ", dir, file, line);
    else
        fprintf(out, "%s:%d: ", file, line);
}

static void report_at(struct loader *ld, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void report_at(struct loader *ld, const config_setting_t *s, const char *fmt, ...)
{
    const char *file = s ? config_setting_source_file(s) : NULL;
    int line = s ? (int)config_setting_source_line(s) : 0;
    if (!file)
        file = ld->path;
    if (line <= 0)
        line = 1;
    ld->n_errors++;
    if (!ld->errors)
        return;
    /* Names quoted in a message come from the file and may hold any byte:
     * control characters are written escaped, so every error stays one
     * line and no text in a config can pass for another error line. */
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    print_location(ld->errors, ld->path, ld->dir, file, line);
    for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
        if (*p == '\n')
            fputs("\\n", ld->errors);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(ld->errors, "\\x%02x", *p);
        else
            fputc(*p, ld->errors);
    }
    fputc('\n', ld->errors);
}

static const char *type_name(const config_setting_t *s)
{
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64: return "an integer";
    case CONFIG_TYPE_FLOAT: return "a number with a fraction";
    case CONFIG_TYPE_STRING: return "a string";
    case CONFIG_TYPE_BOOL: return "a boolean";
    case CONFIG_TYPE_GROUP: return "a group { }";
    case CONFIG_TYPE_ARRAY: return "an array [ ]";
    case CONFIG_TYPE_LIST: return "a list ( )";
    default: return "an unknown type";
    }
}

/* Edit distance of two short strings (for "did you mean"). */
static int edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return 99;
    int row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* Reports every member of `group` whose name is not in `allowed` (NULL-ended). */
static void check_keys(struct loader *ld, const config_setting_t *group, const char *ctx,
                       const char *const *allowed)
{
    int n = config_setting_length(group);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
        const char *name = config_setting_name(s);
        if (!name)
            continue;
        const char *best = NULL;
        int best_distance = 3;
        bool known = false;
        for (const char *const *k = allowed; *k; k++) {
            if (strcmp(*k, name) == 0) {
                known = true;
                break;
            }
            int d = edit_distance(*k, name);
            if (d < best_distance) {
                best_distance = d;
                best = *k;
            }
        }
        if (known)
            continue;
        if (best)
            report_at(ld, s, "unknown key '%s' in %s (did you mean '%s'?)", name, ctx, best);
        else
            report_at(ld, s, "unknown key '%s' in %s", name, ctx);
    }
}

/* Writes " (did you mean 'x'?)" into `out` when one of `n` names, each
 * CAD_NAME_MAX bytes into an array of `stride`-byte records starting at
 * `names`, is a close misspelling of `name`; else "". */
static const char *did_you_mean(char *out, size_t size, const char *name, const void *names,
                                size_t stride, int n)
{
    const char *best = NULL;
    int best_distance = 3;
    for (int i = 0; i < n; i++) {
        const char *candidate = (const char *)names + (size_t)i * stride;
        int d = edit_distance(candidate, name);
        if (d < best_distance) {
            best_distance = d;
            best = candidate;
        }
    }
    if (best)
        snprintf(out, size, " (did you mean '%s'?)", best);
    else if (size > 0)
        out[0] = '\0';
    return out;
}

#define SUGGEST_EVENT(ld, name)                                                                    \
    did_you_mean(hint, sizeof hint, name, (ld)->pb->event_types, sizeof(cad_event_type_t),         \
                 (ld)->pb->n_event_types)
#define SUGGEST_ROLE(ld, name)                                                                     \
    did_you_mean(hint, sizeof hint, name, (ld)->pb->roles, CAD_NAME_MAX, (ld)->pb->n_roles)
#define SUGGEST_CHANNEL(ld, name)                                                                  \
    did_you_mean(hint, sizeof hint, name, (ld)->pb->channels, sizeof(cad_channel_t),               \
                 (ld)->pb->n_channels)
#define SUGGEST_TEMPLATE(ld, name)                                                                 \
    did_you_mean(hint, sizeof hint, name, (ld)->pb->templates, sizeof(cad_template_t),             \
                 (ld)->pb->n_templates)

static char *dup_string(struct loader *ld, const char *s)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        ld->out_of_memory = true;
    return d;
}

static void copy_name(char dst[CAD_NAME_MAX], const char *src)
{
    size_t n = strlen(src);
    if (n >= CAD_NAME_MAX)
        n = CAD_NAME_MAX - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ---- integer literals --------------------------------------------------
 * libconfig 1.5 silently truncates an integer written without an L suffix to
 * 32 bits: "max_clients = 4294967297;" reads as 1. To keep out-of-range
 * numbers from passing as small ones, the loader reads the literal back from
 * the setting's source line and compares. */

/* Reads a whole file into a NUL-terminated buffer; *len gets its length
 * (the text may itself hold NUL bytes). NULL, with errno set, when it
 * cannot be read or is larger than 64 MiB (EFBIG). The caller frees the
 * buffer. */
static char *read_whole_file(const char *file, size_t *len)
{
    FILE *in = fopen(file, "rb");
    if (!in)
        return NULL;
    size_t cap = 0, used = 0;
    char *text = NULL;
    for (;;) {
        if (used + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *grown = cap <= 64u * 1024 * 1024 ? realloc(text, cap) : NULL;
            if (!grown) {
                free(text);
                fclose(in);
                errno = cap <= 64u * 1024 * 1024 ? ENOMEM : EFBIG;
                return NULL;
            }
            text = grown;
        }
        size_t n = fread(text + used, 1, 4096, in);
        used += n;
        if (n < 4096)
            break;
    }
    bool failed = ferror(in) != 0;
    fclose(in);
    if (failed) {
        free(text);
        return NULL;
    }
    text[used] = '\0';
    *len = used;
    return text;
}

static const char *source_text(struct loader *ld, const char *file)
{
    for (struct source_file *f = ld->sources; f; f = f->next)
        if (strcmp(f->name, file) == 0)
            return f->text;
    struct source_file *f = calloc(1, sizeof *f);
    if (!f || !(f->name = strdup(file))) {
        free(f);
        ld->out_of_memory = true;
        return NULL;
    }
    f->next = ld->sources;
    ld->sources = f;
    char path[4096];
    if (ld->dir && file[0] != '/' && strcmp(file, ld->path) != 0)
        snprintf(path, sizeof path, "%s/%s", ld->dir, file);
    else
        snprintf(path, sizeof path, "%s", file);
    size_t len = 0;
    char *text = read_whole_file(path, &len);
    f->text = text;
    return text;
}

static bool is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '*';
}

/* Checks the integer setting `s` against its literal in the source. Returns
 * true when they agree (or the literal cannot be found); false, with the
 * literal copied into `literal`, when libconfig truncated it. */
static bool int_literal_check(struct loader *ld, const config_setting_t *s, char *literal,
                              size_t size)
{
    const char *name = config_setting_name(s);
    const char *file = config_setting_source_file(s);
    int line = (int)config_setting_source_line(s);
    if (!name || line <= 0)
        return true;
    const char *text = source_text(ld, file ? file : ld->path);
    if (!text)
        return true;
    const char *p = text;
    for (int l = 1; l < line && p; l++) {
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    if (!p)
        return true;
    const char *end = strchr(p, '\n');
    if (!end)
        end = p + strlen(p);
    size_t nlen = strlen(name);
    long long parsed = config_setting_get_int64(s);
    bool found = false;
    for (const char *q = p; q + nlen <= end; q++) {
        if (memcmp(q, name, nlen) != 0 || (q > p && is_name_char(q[-1])))
            continue;
        const char *r = q + nlen;
        while (r < end && (*r == ' ' || *r == '\t'))
            r++;
        if (r >= end || (*r != '=' && *r != ':'))
            continue;
        r++;
        while (r < end && (*r == ' ' || *r == '\t'))
            r++;
        const char *digits = r + (*r == '-' || *r == '+');
        bool hex = digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X');
        errno = 0;
        char *stop;
        long long v = strtoll(r, &stop, hex ? 16 : 10);
        if (stop == r)
            continue;
        if (errno != ERANGE && v == parsed)
            return true;
        found = true;
        size_t n = (size_t)(stop - r);
        if (n >= size)
            n = size - 1;
        memcpy(literal, r, n);
        literal[n] = '\0';
    }
    return !found;
}

/* ---- typed getters: each returns 1 (found, *out set), 0 (absent) or -1
 * (present but wrong, already reported; *out untouched) ------------------- */

static const config_setting_t *member(const config_setting_t *group, const char *key)
{
    return group ? config_setting_get_member(group, key) : NULL;
}

static int get_string(struct loader *ld, const config_setting_t *g, const char *key,
                      const char *ctx, const char **out)
{
    const config_setting_t *s = member(g, key);
    if (!s)
        return 0;
    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        report_at(ld, s, "'%s' in %s must be a string, not %s", key, ctx, type_name(s));
        return -1;
    }
    *out = config_setting_get_string(s);
    return 1;
}

/* A non-empty string; absent is an error when `required`. */
static int get_text(struct loader *ld, const config_setting_t *g, const char *key, const char *ctx,
                    bool required, const char **out)
{
    const char *v = NULL;
    int r = get_string(ld, g, key, ctx, &v);
    if (r == 0 && required) {
        report_at(ld, g, "%s has no '%s'", ctx, key);
        return -1;
    }
    if (r == 1 && !*v) {
        report_at(ld, member(g, key), "'%s' in %s must not be empty", key, ctx);
        return -1;
    }
    if (r == 1)
        *out = v;
    return r;
}

static int get_int(struct loader *ld, const config_setting_t *g, const char *key, const char *ctx,
                   int64_t min, int64_t max, int64_t *out)
{
    const config_setting_t *s = member(g, key);
    if (!s)
        return 0;
    int t = config_setting_type(s);
    if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) {
        report_at(ld, s, "'%s' in %s must be an integer, not %s", key, ctx, type_name(s));
        return -1;
    }
    long long v = config_setting_get_int64(s);
    char literal[64];
    if (!int_literal_check(ld, s, literal, sizeof literal)) {
        bool hex = strchr(literal, 'x') || strchr(literal, 'X');
        errno = 0;
        long long written = strtoll(literal, NULL, hex ? 16 : 10);
        if (errno != ERANGE && written >= min && written <= max)
            report_at(ld, s,
                      "'%s' in %s is %s, which needs an L suffix (%sL): libconfig reads numbers "
                      "above 2147483647 only with it",
                      key, ctx, literal, literal);
        else
            report_at(ld, s, "'%s' in %s is %s, outside %lld..%lld", key, ctx, literal,
                      (long long)min, (long long)max);
        return -1;
    }
    if (v < min || v > max) {
        report_at(ld, s, "'%s' in %s is %lld, outside %lld..%lld", key, ctx, v, (long long)min,
                  (long long)max);
        return -1;
    }
    *out = v;
    return 1;
}

static int get_u32(struct loader *ld, const config_setting_t *g, const char *key, const char *ctx,
                   int64_t min, int64_t max, uint32_t *out)
{
    int64_t v;
    int r = get_int(ld, g, key, ctx, min, max, &v);
    if (r == 1)
        *out = (uint32_t)v;
    return r;
}

static int get_number(struct loader *ld, const config_setting_t *g, const char *key,
                      const char *ctx, double min, double max, double *out)
{
    const config_setting_t *s = member(g, key);
    if (!s)
        return 0;
    int t = config_setting_type(s);
    double v;
    if (t == CONFIG_TYPE_FLOAT)
        v = config_setting_get_float(s);
    else if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) {
        v = (double)config_setting_get_int64(s);
        char literal[64];
        if (!int_literal_check(ld, s, literal, sizeof literal)) {
            report_at(ld, s, "'%s' in %s is %s, outside %g..%g", key, ctx, literal, min, max);
            return -1;
        }
    } else {
        report_at(ld, s, "'%s' in %s must be a number, not %s", key, ctx, type_name(s));
        return -1;
    }
    if (!(v >= min && v <= max)) {
        report_at(ld, s, "'%s' in %s is %g, outside %g..%g", key, ctx, v, min, max);
        return -1;
    }
    *out = v;
    return 1;
}

static int get_bool(struct loader *ld, const config_setting_t *g, const char *key, const char *ctx,
                    bool *out)
{
    const config_setting_t *s = member(g, key);
    if (!s)
        return 0;
    if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
        report_at(ld, s, "'%s' in %s must be true or false, not %s", key, ctx, type_name(s));
        return -1;
    }
    *out = config_setting_get_bool(s) != 0;
    return 1;
}

static int get_duration(struct loader *ld, const config_setting_t *g, const char *key,
                        const char *ctx, int64_t min, int64_t max, int64_t *out)
{
    const char *text;
    int r = get_string(ld, g, key, ctx, &text);
    if (r != 1)
        return r;
    const config_setting_t *s = member(g, key);
    char why[CAD_ERRBUF];
    int64_t v;
    if (cad_duration_parse(text, &v, why) < 0) {
        report_at(ld, s, "'%s' in %s: %s", key, ctx, why);
        return -1;
    }
    if (v < min || v > max) {
        char lo[32], hi[32];
        cad_duration_format(min, lo, sizeof lo);
        cad_duration_format(max, hi, sizeof hi);
        if (v < min && min == 1)
            report_at(ld, s, "'%s' in %s must be longer than zero", key, ctx);
        else
            report_at(ld, s, "'%s' in %s is %s, outside %s..%s", key, ctx, text, lo, hi);
        return -1;
    }
    *out = v;
    return 1;
}

static int get_clock(struct loader *ld, const config_setting_t *g, const char *key, const char *ctx,
                     uint16_t *out)
{
    const char *text;
    int r = get_string(ld, g, key, ctx, &text);
    if (r != 1)
        return r;
    char why[CAD_ERRBUF];
    int minutes;
    if (cad_clock_parse(text, &minutes, why) < 0) {
        report_at(ld, member(g, key), "'%s' in %s: %s", key, ctx, why);
        return -1;
    }
    *out = (uint16_t)minutes;
    return 1;
}

/* A group member; -1 (reported) when it is something else. */
static int get_group(struct loader *ld, const config_setting_t *g, const char *key, const char *ctx,
                     const config_setting_t **out)
{
    const config_setting_t *s = member(g, key);
    if (!s)
        return 0;
    if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
        report_at(ld, s, "'%s' in %s must be a group { ... }, not %s", key, ctx, type_name(s));
        return -1;
    }
    *out = s;
    return 1;
}

/* An array or list of strings (possibly empty); -1 (reported) otherwise. */
static int get_string_list(struct loader *ld, const config_setting_t *g, const char *key,
                           const char *ctx, const config_setting_t **out)
{
    const config_setting_t *s = member(g, key);
    if (!s)
        return 0;
    int t = config_setting_type(s);
    if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST) {
        report_at(ld, s, "'%s' in %s must be a list of strings [ \"...\", ... ], not %s", key, ctx,
                  type_name(s));
        return -1;
    }
    int n = config_setting_length(s);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            report_at(ld, e, "'%s' in %s must hold only strings, not %s", key, ctx, type_name(e));
            return -1;
        }
    }
    *out = s;
    return 1;
}

/* A list ( { ... }, ... ) of groups at the top level; -1 when malformed. */
static int get_group_list(struct loader *ld, const config_setting_t *root, const char *key,
                          const config_setting_t **out)
{
    const config_setting_t *s = member(root, key);
    if (!s)
        return 0;
    int t = config_setting_type(s);
    if (!(t == CONFIG_TYPE_LIST || (t == CONFIG_TYPE_ARRAY && config_setting_length(s) == 0))) {
        report_at(ld, s, "'%s' must be a list of groups ( { ... }, { ... } ), not %s", key,
                  type_name(s));
        return -1;
    }
    int n = config_setting_length(s);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        if (config_setting_type(e) != CONFIG_TYPE_GROUP) {
            report_at(ld, e, "entry %d of '%s' must be a group { ... }, not %s", i + 1, key,
                      type_name(e));
            return -1;
        }
    }
    *out = s;
    return 1;
}

static bool valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= CAD_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

/* Checks a name's spelling; reports and returns false when it is unusable. */
static bool check_name(struct loader *ld, const config_setting_t *s, const char *what,
                       const char *name)
{
    if (valid_name(name))
        return true;
    report_at(ld, s, "%s '%s' must be 1 to %d letters, digits, '_', '-' or '.'", what, name,
              CAD_NAME_MAX - 1);
    return false;
}

/* A plugin's name is its file's name, PLUGIN.so in the plugin directory:
 * lower-case letters, digits, '_' and '-' only (no path, no dot), as the
 * plugin host requires. */
static bool check_plugin_name(struct loader *ld, const config_setting_t *s, const char *name)
{
    bool ok = *name && strlen(name) < CAD_NAME_MAX;
    for (const char *p = name; ok && *p; p++)
        ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-';
    if (!ok)
        report_at(ld, s,
                  "plugin '%s' must be 1 to %d lower-case letters, digits, '_' or '-' (the "
                  "name of PLUGIN.so in the plugin directory)",
                  name, CAD_NAME_MAX - 1);
    return ok;
}

/* The item's name (required, well spelled) or NULL (reported). */
static const char *get_item_name(struct loader *ld, const config_setting_t *item, const char *key,
                                 const char *what, int index)
{
    char ctx[96];
    snprintf(ctx, sizeof ctx, "%s #%d", what, index + 1);
    const char *name = NULL;
    if (get_text(ld, item, key, ctx, true, &name) != 1)
        return NULL;
    if (!check_name(ld, member(item, key), what, name))
        return NULL;
    return name;
}

/* ---- store, control, log, plugins, engine ------------------------------- */

static void load_store(struct loader *ld, const config_setting_t *root)
{
    static const char *const keys[] = {"state_dir", "sync", "commit_interval_ms", NULL};
    cad_config_t *cfg = ld->cfg;
    const config_setting_t *g = NULL;
    const char *state_dir = DEFAULT_STATE_DIR;
    cfg->sync = CAD_SYNC_FULL;
    cfg->commit_interval_ms = 5;
    if (get_group(ld, root, "store", "the config", &g) == 1) {
        check_keys(ld, g, "store", keys);
        get_text(ld, g, "state_dir", "store", false, &state_dir);
        const char *sync;
        if (get_string(ld, g, "sync", "store", &sync) == 1) {
            if (strcmp(sync, "full") == 0)
                cfg->sync = CAD_SYNC_FULL;
            else if (strcmp(sync, "normal") == 0)
                cfg->sync = CAD_SYNC_NORMAL;
            else
                report_at(ld, member(g, "sync"),
                          "'sync' in store is '%s'; expected \"full\" or \"normal\"", sync);
        }
        get_int(ld, g, "commit_interval_ms", "store", 0, 1000, &cfg->commit_interval_ms);
    }
    cfg->state_dir = dup_string(ld, state_dir);
}

static void load_access(struct loader *ld, const config_setting_t *control)
{
    cad_config_t *cfg = ld->cfg;
    const config_setting_t *list = member(control, "access");
    if (!list) {
        cfg->access = calloc(1, sizeof *cfg->access);
        if (!cfg->access) {
            ld->out_of_memory = true;
            return;
        }
        cfg->access[0] = (cad_access_rule_t){.is_group = false, .id = 0, .admin = true};
        cfg->n_access = 1;
        return;
    }
    int t = config_setting_type(list);
    if (!(t == CONFIG_TYPE_LIST || (t == CONFIG_TYPE_ARRAY && config_setting_length(list) == 0))) {
        report_at(ld, list,
                  "'access' in control must be a list of groups ( { uid = 0; role = "
                  "\"admin\"; }, ... ), not %s",
                  type_name(list));
        return;
    }
    int n = config_setting_length(list);
    if (n == 0)
        return;
    cfg->access = calloc((size_t)n, sizeof *cfg->access);
    if (!cfg->access) {
        ld->out_of_memory = true;
        return;
    }
    static const char *const keys[] = {"uid", "gid", "role", NULL};
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
        char ctx[64];
        snprintf(ctx, sizeof ctx, "access rule #%d of control", i + 1);
        if (config_setting_type(e) != CONFIG_TYPE_GROUP) {
            report_at(ld, e, "%s must be a group { ... }, not %s", ctx, type_name(e));
            continue;
        }
        check_keys(ld, e, ctx, keys);
        cad_access_rule_t rule = {0};
        int64_t id = 0;
        bool has_uid = member(e, "uid") != NULL, has_gid = member(e, "gid") != NULL;
        if (has_uid == has_gid) {
            report_at(ld, e, "%s must name exactly one of 'uid' or 'gid'", ctx);
            continue;
        }
        rule.is_group = has_gid;
        if (get_int(ld, e, has_gid ? "gid" : "uid", ctx, 0, 4294967294LL, &id) != 1)
            continue;
        rule.id = (uint32_t)id;
        const char *role;
        int r = get_string(ld, e, "role", ctx, &role);
        if (r == 0) {
            report_at(ld, e, "%s has no 'role' (\"admin\" or \"read\")", ctx);
            continue;
        }
        if (r < 0)
            continue;
        if (strcmp(role, "admin") == 0)
            rule.admin = true;
        else if (strcmp(role, "read") != 0) {
            report_at(ld, member(e, "role"), "'role' in %s is '%s'; expected \"admin\" or \"read\"",
                      ctx, role);
            continue;
        }
        cfg->access[cfg->n_access++] = rule;
    }
}

static void load_control(struct loader *ld, const config_setting_t *root)
{
    static const char *const keys[] = {"socket", "mode", "max_line", "max_clients", "access", NULL};
    cad_config_t *cfg = ld->cfg;
    const config_setting_t *g = NULL;
    const char *socket = DEFAULT_SOCKET;
    cfg->socket_mode = 0660;
    cfg->max_line = 65536;
    cfg->max_clients = 64;
    if (get_group(ld, root, "control", "the config", &g) == 1) {
        check_keys(ld, g, "control", keys);
        get_text(ld, g, "socket", "control", false, &socket);
        const char *mode;
        if (get_string(ld, g, "mode", "control", &mode) == 1) {
            char *end;
            unsigned long m = strtoul(mode, &end, 8);
            if (!*mode || *end || strspn(mode, "01234567") != strlen(mode) || m > 0777)
                report_at(ld, member(g, "mode"),
                          "'mode' in control is '%s'; expected octal permissions like \"0660\"",
                          mode);
            else
                cfg->socket_mode = (uint32_t)m;
        }
        get_u32(ld, g, "max_line", "control", 1024, 16 * 1024 * 1024, &cfg->max_line);
        get_u32(ld, g, "max_clients", "control", 1, 4096, &cfg->max_clients);
    }
    cfg->socket_path = dup_string(ld, socket);
    load_access(ld, g);
}

int cad_log_level_parse(const char *name)
{
    static const struct {
        const char *name;
        enum cad_log_level level;
    } levels[] = {{"debug", CAD_LOG_DEBUG},
                  {"info", CAD_LOG_INFO},
                  {"notice", CAD_LOG_NOTICE},
                  {"warning", CAD_LOG_WARNING},
                  {"err", CAD_LOG_ERR}};
    if (!name)
        return -1;
    for (size_t i = 0; i < CAD_ARRAY_LEN(levels); i++)
        if (strcmp(levels[i].name, name) == 0)
            return (int)levels[i].level;
    return -1;
}

static void load_log(struct loader *ld, const config_setting_t *root)
{
    static const char *const keys[] = {"level", NULL};
    const config_setting_t *g = NULL;
    ld->cfg->log_level = CAD_LOG_INFO;
    if (get_group(ld, root, "log", "the config", &g) != 1)
        return;
    check_keys(ld, g, "log", keys);
    const char *level;
    if (get_string(ld, g, "level", "log", &level) == 1) {
        int l = cad_log_level_parse(level);
        if (l < 0)
            report_at(ld, member(g, "level"),
                      "'level' in log is '%s'; expected debug, info, notice, warning or err",
                      level);
        else
            ld->cfg->log_level = (enum cad_log_level)l;
    }
}

static void load_plugins(struct loader *ld, const config_setting_t *root)
{
    static const char *const keys[] = {"dir", "credentials_dir", NULL};
    const config_setting_t *g = NULL;
    const char *dir = CADENCE_PLUGIN_DIR, *credentials = NULL;
    if (get_group(ld, root, "plugins", "the config", &g) == 1) {
        check_keys(ld, g, "plugins", keys);
        get_text(ld, g, "dir", "plugins", false, &dir);
        get_text(ld, g, "credentials_dir", "plugins", false, &credentials);
    }
    ld->cfg->plugin_dir = dup_string(ld, dir);
    ld->cfg->credentials_dir = dup_string(ld, credentials);
}

static void load_engine(struct loader *ld, const config_setting_t *root)
{
    static const char *const keys[] = {"batch_size",
                                       "shutdown_timeout",
                                       "default_timezone",
                                       "dispatch_rate",
                                       "dispatch_burst",
                                       "dispatch_concurrency",
                                       NULL};
    cad_config_t *cfg = ld->cfg;
    const config_setting_t *g = NULL;
    const char *zone = DEFAULT_TIMEZONE;
    int64_t shutdown = 10;
    cfg->batch_size = 1000;
    cfg->dispatch_rate = 0;
    cfg->dispatch_burst = 1;
    cfg->dispatch_concurrency = 1024;
    if (get_group(ld, root, "engine", "the config", &g) == 1) {
        check_keys(ld, g, "engine", keys);
        get_u32(ld, g, "batch_size", "engine", 1, 1000000, &cfg->batch_size);
        get_number(ld, g, "dispatch_rate", "engine", 0, 1000000, &cfg->dispatch_rate);
        cfg->dispatch_burst = cfg->dispatch_rate >= 1 ? (uint32_t)ceil(cfg->dispatch_rate) : 1;
        get_u32(ld, g, "dispatch_burst", "engine", 1, 10000000, &cfg->dispatch_burst);
        get_u32(ld, g, "dispatch_concurrency", "engine", 1, 100000, &cfg->dispatch_concurrency);
        get_duration(ld, g, "shutdown_timeout", "engine", 0, CAD_HOUR, &shutdown);
        const char *z;
        if (get_text(ld, g, "default_timezone", "engine", false, &z) == 1) {
            if (cad_tz_valid(z))
                zone = z;
            else
                report_at(ld, member(g, "default_timezone"),
                          "unknown time zone '%s' in engine (expected an IANA name such as "
                          "\"Europe/London\")",
                          z);
        }
    }
    cfg->shutdown_timeout_ms = shutdown * 1000;
    cfg->default_timezone = dup_string(ld, zone);
}

/* ---- event types and roles ---------------------------------------------- */

static void load_event_types(struct loader *ld, const config_setting_t *root)
{
    static const char *const keys[] = {"name", "resolved_by", NULL};
    cad_playbook_t *pb = ld->pb;
    const config_setting_t *list = NULL;
    if (get_group_list(ld, root, "event_types", &list) != 1)
        return;
    int n = config_setting_length(list);
    int first = pb->n_event_types;
    /* Pass 1: the names, so resolved_by may name a later entry. */
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
        const char *name = get_item_name(ld, e, "name", "event type", i);
        if (!name)
            continue;
        char ctx[96];
        snprintf(ctx, sizeof ctx, "event type '%s'", name);
        check_keys(ld, e, ctx, keys);
        int existing = cad_playbook_event_type(pb, name);
        if (existing >= 0) {
            if (existing < CAD_EVENT_BUILTIN_COUNT)
                report_at(ld, e, "event type '%s' is built in; do not define it again", name);
            else
                report_at(ld, e, "duplicate event type '%s'", name);
            continue;
        }
        if (pb->n_event_types >= CAD_MAX_EVENT_TYPES) {
            report_at(ld, e, "too many event types: at most %d, built-ins included",
                      CAD_MAX_EVENT_TYPES);
            break;
        }
        cad_event_type_t *et = &pb->event_types[pb->n_event_types++];
        copy_name(et->name, name);
        et->resolved_by = -1;
    }
    /* Pass 2: resolved_by. */
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
        const config_setting_t *ns = member(e, "name");
        if (!ns || config_setting_type(ns) != CONFIG_TYPE_STRING)
            continue; /* reported in pass 1 */
        const char *name = config_setting_get_string(ns), *by = NULL;
        if (!valid_name(name))
            continue;
        int idx = cad_playbook_event_type(pb, name);
        if (idx < first)
            continue;
        char ctx[96];
        snprintf(ctx, sizeof ctx, "event type '%s'", name);
        if (get_text(ld, e, "resolved_by", ctx, false, &by) != 1)
            continue;
        int r = cad_playbook_event_type(pb, by);
        char hint[96];
        if (r < 0)
            report_at(ld, member(e, "resolved_by"),
                      "unknown event type '%s' in resolved_by of %s%s", by, ctx,
                      SUGGEST_EVENT(ld, by));
        else if (r == idx)
            report_at(ld, member(e, "resolved_by"), "%s cannot be resolved by itself", ctx);
        else
            pb->event_types[idx].resolved_by = r;
    }
}

static void load_roles(struct loader *ld, const config_setting_t *root)
{
    cad_playbook_t *pb = ld->pb;
    const config_setting_t *list = NULL;
    if (get_string_list(ld, root, "roles", "the config", &list) != 1)
        return;
    int n = config_setting_length(list);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
        const char *name = config_setting_get_string(e);
        if (!check_name(ld, e, "role", name))
            continue;
        int existing = cad_playbook_role(pb, name);
        if (existing >= 0) {
            if (existing < CAD_ROLE_BUILTIN_COUNT)
                report_at(ld, e, "role '%s' is built in; do not define it again", name);
            else
                report_at(ld, e, "duplicate role '%s'", name);
            continue;
        }
        if (pb->n_roles >= CAD_MAX_ROLES) {
            report_at(ld, e, "too many roles: at most %d, built-ins included", CAD_MAX_ROLES);
            break;
        }
        copy_name(pb->roles[pb->n_roles++], name);
    }
}

/* ---- channels ----------------------------------------------------------- */

static void load_channel_settings(struct loader *ld, const config_setting_t *g, const char *ctx,
                                  cad_channel_config_t *cc)
{
    int n = config_setting_length(g);
    if (n == 0)
        return;
    cc->settings = calloc((size_t)n, sizeof *cc->settings);
    if (!cc->settings) {
        ld->out_of_memory = true;
        return;
    }
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        char value[64];
        const char *text = value;
        switch (config_setting_type(s)) {
        case CONFIG_TYPE_STRING: text = config_setting_get_string(s); break;
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
            /* keep the literal as written when libconfig truncated it */
            if (int_literal_check(ld, s, value, sizeof value))
                snprintf(value, sizeof value, "%lld", config_setting_get_int64(s));
            break;
        case CONFIG_TYPE_FLOAT:
            snprintf(value, sizeof value, "%.17g", config_setting_get_float(s));
            break;
        case CONFIG_TYPE_BOOL:
            snprintf(value, sizeof value, "%s", config_setting_get_bool(s) ? "true" : "false");
            break;
        default:
            report_at(ld, s,
                      "setting '%s' in settings of %s must be a string, number or boolean, "
                      "not %s",
                      config_setting_name(s), ctx, type_name(s));
            continue;
        }
        cad_channel_setting_t *cs = &cc->settings[cc->n_settings++];
        cs->name = dup_string(ld, config_setting_name(s));
        cs->value = dup_string(ld, text);
        cs->line = (int)config_setting_source_line(s);
    }
}

static void load_send_window(struct loader *ld, const config_setting_t *g, const char *ctx,
                             cad_channel_t *ch)
{
    const char *text;
    if (get_string(ld, g, "send_window", ctx, &text) != 1)
        return;
    const config_setting_t *s = member(g, "send_window");
    const char *dash = strchr(text, '-');
    char start[16], why[CAD_ERRBUF];
    int a, b;
    if (!dash || (size_t)(dash - text) >= sizeof start) {
        report_at(ld, s, "'send_window' in %s is '%s'; expected \"HH:MM-HH:MM\"", ctx, text);
        return;
    }
    memcpy(start, text, (size_t)(dash - text));
    start[dash - text] = '\0';
    if (cad_clock_parse(start, &a, why) < 0 || cad_clock_parse(dash + 1, &b, why) < 0) {
        report_at(ld, s, "'send_window' in %s: %s", ctx, why);
        return;
    }
    if ((a == 0 && b == 1440) || (a == 1440 && b == 0)) {
        ch->window_start = ch->window_end = 0; /* the whole day: any time (phone too) */
        return;
    }
    if (a == b) {
        report_at(ld, s,
                  "'send_window' in %s is '%s', which is empty; write \"00:00-24:00\" to allow "
                  "any time",
                  ctx, text);
        return;
    }
    ch->window_start = (uint16_t)(a % 1440);
    ch->window_end = (uint16_t)b;
}

/* The dispatcher's keys of a channel: retry schedule, shared account and
 * recipient-domain limits, circuit breaker (docs/dispatch.md). */
static void load_channel_dispatch(struct loader *ld, const config_setting_t *e, const char *ctx,
                                  cad_channel_config_t *cc)
{
    cc->retry_schedule = -1;
    cc->retry_base = 10;
    cc->retry_cap = CAD_HOUR;
    cc->circuit_threshold = 5;
    cc->circuit_interval = 30;
    const char *text = NULL;
    if (get_text(ld, e, "retry_schedule", ctx, false, &text) == 1) {
        cc->retry_schedule = cad_backoff_kind_parse(text);
        if (cc->retry_schedule < 0)
            report_at(ld, member(e, "retry_schedule"),
                      "'retry_schedule' in %s is '%s'; expected \"exponential\" or "
                      "\"standard-webhooks\"",
                      ctx, text);
    }
    get_duration(ld, e, "retry_base", ctx, 1, CAD_DAY, &cc->retry_base);
    get_duration(ld, e, "retry_cap", ctx, 1, 7 * CAD_DAY, &cc->retry_cap);
    if (cc->retry_cap < cc->retry_base)
        report_at(ld, e, "%s: 'retry_cap' (%llds) is shorter than 'retry_base' (%llds)", ctx,
                  (long long)cc->retry_cap, (long long)cc->retry_base);
    if (get_text(ld, e, "account", ctx, false, &text) == 1) {
        if (strlen(text) >= sizeof cc->account)
            report_at(ld, member(e, "account"), "'account' in %s is longer than %zu bytes", ctx,
                      sizeof cc->account - 1);
        else
            snprintf(cc->account, sizeof cc->account, "%s", text);
    }
    get_number(ld, e, "account_rate", ctx, 0, 100000, &cc->account_rate);
    cc->account_burst = cc->account_rate >= 1 ? (uint32_t)ceil(cc->account_rate) : 1;
    get_u32(ld, e, "account_burst", ctx, 1, 1000000, &cc->account_burst);
    if (cc->account_rate > 0 && !cc->account[0])
        report_at(ld, member(e, "account_rate"),
                  "%s sets 'account_rate' without 'account': name the provider account the "
                  "channels share",
                  ctx);
    get_u32(ld, e, "domain_per_minute", ctx, 0, 1000000, &cc->domain_per_minute);
    get_u32(ld, e, "circuit_threshold", ctx, 0, 10000, &cc->circuit_threshold);
    get_duration(ld, e, "circuit_interval", ctx, 1, CAD_DAY, &cc->circuit_interval);
}

static void load_channels(struct loader *ld, const config_setting_t *root)
{
    static const char *const keys[] = {"name",
                                       "plugin",
                                       "address",
                                       "send_window",
                                       "concurrency",
                                       "timeout",
                                       "max_attempts",
                                       "max_age",
                                       "rate",
                                       "burst",
                                       "settings",
                                       "retry_schedule",
                                       "retry_base",
                                       "retry_cap",
                                       "account",
                                       "account_rate",
                                       "account_burst",
                                       "domain_per_minute",
                                       "circuit_threshold",
                                       "circuit_interval",
                                       NULL};
    cad_playbook_t *pb = ld->pb;
    const config_setting_t *list = NULL;
    if (get_group_list(ld, root, "channels", &list) != 1)
        return;
    int n = config_setting_length(list);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
        const char *name = get_item_name(ld, e, "name", "channel", i);
        if (!name)
            continue;
        char ctx[96];
        snprintf(ctx, sizeof ctx, "channel '%s'", name);
        check_keys(ld, e, ctx, keys);
        int existing = cad_playbook_channel(pb, name);
        if (existing >= 0) {
            report_at(ld, e, "duplicate channel '%s' (first defined on line %d)", name,
                      pb->channels[existing].line);
            continue;
        }
        if (strcmp(name, "all") == 0) {
            report_at(ld, e, "a channel cannot be named 'all': caps use it for every channel");
            continue;
        }
        if (pb->n_channels >= CAD_MAX_CHANNELS) {
            report_at(ld, e, "too many channels: at most %d", CAD_MAX_CHANNELS);
            break;
        }
        int index = pb->n_channels++;
        cad_channel_t *ch = &pb->channels[index];
        cad_channel_config_t *cc = &ld->cfg->channel_config[index];
        copy_name(ch->name, name);
        ch->line = (int)config_setting_source_line(e);

        const char *plugin = NULL;
        if (get_text(ld, e, "plugin", ctx, true, &plugin) == 1 &&
            check_plugin_name(ld, member(e, "plugin"), plugin))
            copy_name(ch->plugin, plugin);

        const char *address = NULL;
        int r = get_string(ld, e, "address", ctx, &address);
        if (r == 0)
            report_at(ld, e, "%s has no 'address' (\"email\", \"phone\" or \"none\")", ctx);
        else if (r == 1) {
            if (strcmp(address, "email") == 0)
                ch->address = CAD_ADDRESS_EMAIL;
            else if (strcmp(address, "phone") == 0)
                ch->address = CAD_ADDRESS_PHONE;
            else if (strcmp(address, "none") == 0)
                ch->address = CAD_ADDRESS_NONE;
            else
                report_at(ld, member(e, "address"),
                          "'address' in %s is '%s'; expected \"email\", \"phone\" or \"none\"", ctx,
                          address);
        }
        if (ch->address == CAD_ADDRESS_PHONE) {
            ch->window_start = DEFAULT_PHONE_WINDOW_START;
            ch->window_end = DEFAULT_PHONE_WINDOW_END;
        }
        load_send_window(ld, e, ctx, ch);

        cc->concurrency = 4;
        cc->timeout = 30;
        cc->max_attempts = 8;
        cc->max_age = 2 * CAD_DAY;
        cc->rate_per_second = 0;
        get_u32(ld, e, "concurrency", ctx, 1, 1024, &cc->concurrency);
        get_duration(ld, e, "timeout", ctx, 1, CAD_HOUR, &cc->timeout);
        bool attempts_set = get_u32(ld, e, "max_attempts", ctx, 1, 100, &cc->max_attempts) == 1;
        bool age_set =
            get_duration(ld, e, "max_age", ctx, CAD_MINUTE, 30 * CAD_DAY, &cc->max_age) == 1;
        get_number(ld, e, "rate", ctx, 0, 100000, &cc->rate_per_second);
        cc->burst = cc->rate_per_second >= 1 ? (uint32_t)ceil(cc->rate_per_second) : 1;
        get_u32(ld, e, "burst", ctx, 1, 1000000, &cc->burst);
        load_channel_dispatch(ld, e, ctx, cc);
        /* Channels of one provider account share one bucket: two rates for
         * it would leave one of them silently unused. */
        for (int k = 0; k < index && cc->account[0] && cc->account_rate > 0; k++) {
            const cad_channel_config_t *o = &ld->cfg->channel_config[k];
            if (strcmp(o->account, cc->account) == 0 &&
                strcmp(pb->channels[k].plugin, ch->plugin) == 0 && o->account_rate > 0 &&
                (o->account_rate != cc->account_rate || o->account_burst != cc->account_burst)) {
                report_at(ld, member(e, "account_rate"),
                          "%s sets account_rate %g (burst %u) for account '%s', but channel '%s' "
                          "(line %d) set %g (burst %u): the channels of one account share one "
                          "limit; set it on one of them",
                          ctx, cc->account_rate, cc->account_burst, cc->account,
                          pb->channels[k].name, pb->channels[k].line, o->account_rate,
                          o->account_burst);
                break;
            }
        }
        /* The Standard Webhooks schedule (the webhook plugin's default) is
         * ten attempts over about 75 hours plus jitter: unless the operator
         * says otherwise, let it run to its end. */
        bool standard = cc->retry_schedule == CAD_BACKOFF_STANDARD_WEBHOOKS ||
                        (cc->retry_schedule < 0 && strcmp(ch->plugin, "webhook") == 0);
        if (standard && !attempts_set)
            cc->max_attempts = CAD_BACKOFF_WEBHOOK_STEPS + 1;
        if (standard && !age_set)
            cc->max_age = 4 * CAD_DAY;

        const config_setting_t *settings = NULL;
        if (get_group(ld, e, "settings", ctx, &settings) == 1)
            load_channel_settings(ld, settings, ctx, cc);
    }
}

/* ---- templates and content ---------------------------------------------- */

static void load_templates(struct loader *ld, const config_setting_t *root)
{
    static const char *const keys[] = {"name", "subject", "text", "html", NULL};
    cad_playbook_t *pb = ld->pb;
    const config_setting_t *list = NULL;
    if (get_group_list(ld, root, "templates", &list) != 1)
        return;
    int n = config_setting_length(list);
    if (n == 0)
        return;
    pb->templates = calloc((size_t)n, sizeof *pb->templates);
    if (!pb->templates) {
        ld->out_of_memory = true;
        return;
    }
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
        const char *name = get_item_name(ld, e, "name", "template", i);
        if (!name)
            continue;
        char ctx[96];
        snprintf(ctx, sizeof ctx, "template '%s'", name);
        check_keys(ld, e, ctx, keys);
        int existing = cad_playbook_template(pb, name);
        if (existing >= 0) {
            report_at(ld, e, "duplicate template '%s' (first defined on line %d)", name,
                      pb->templates[existing].line);
            continue;
        }
        const char *subject = NULL, *text = NULL, *html = NULL;
        get_text(ld, e, "subject", ctx, false, &subject);
        get_text(ld, e, "text", ctx, true, &text);
        get_text(ld, e, "html", ctx, false, &html);
        static const char *const parts[] = {"subject", "text", "html"};
        const char *bodies[] = {subject, text, html};
        for (int k = 0; k < 3; k++) {
            char why[CAD_ERRBUF];
            if (bodies[k] && cad_template_check(bodies[k], why) < 0)
                report_at(ld, member(e, parts[k]), "'%s' of %s: %s", parts[k], ctx, why);
        }
        cad_template_t *t = &pb->templates[pb->n_templates++];
        copy_name(t->name, name);
        t->line = (int)config_setting_source_line(e);
        t->subject = dup_string(ld, subject);
        t->text = dup_string(ld, text);
        t->html = dup_string(ld, html);
    }
}

/* The topic's index, adding it to the table; -1 when the table is full. */
static int topic_add(struct loader *ld, const config_setting_t *s, const char *name)
{
    cad_playbook_t *pb = ld->pb;
    int t = cad_playbook_topic(pb, name);
    if (t >= 0)
        return t;
    if (pb->n_topics >= CAD_MAX_TOPICS) {
        if (!ld->too_many_topics)
            report_at(ld, s, "too many distinct topics: at most %d across content and rules",
                      CAD_MAX_TOPICS);
        ld->too_many_topics = true;
        return -1;
    }
    copy_name(pb->topics[pb->n_topics], name);
    return pb->n_topics++;
}

static uint64_t load_topics(struct loader *ld, const config_setting_t *g, const char *ctx)
{
    const config_setting_t *list = NULL;
    uint64_t mask = 0;
    if (get_string_list(ld, g, "topics", ctx, &list) != 1)
        return 0;
    int n = config_setting_length(list);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
        const char *name = config_setting_get_string(e);
        if (!check_name(ld, e, "topic", name))
            continue;
        int t = topic_add(ld, e, name);
        if (t >= 0)
            mask |= UINT64_C(1) << t;
    }
    if (n == 0)
        report_at(ld, list, "'topics' in %s is empty; omit it or name at least one topic", ctx);
    return mask;
}

/* A required, non-empty list of stages. */
static cad_stage_set_t load_stages(struct loader *ld, const config_setting_t *g, const char *ctx)
{
    const config_setting_t *list = NULL;
    int r = get_string_list(ld, g, "stages", ctx, &list);
    if (r == 0)
        report_at(ld, g,
                  "%s has no 'stages' (a list of prospect, onboarding, active, at_risk, "
                  "former)",
                  ctx);
    if (r != 1)
        return 0;
    cad_stage_set_t set = 0;
    int n = config_setting_length(list);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
        const char *name = config_setting_get_string(e);
        int s = cad_stage_parse(name);
        if (s < 0)
            report_at(ld, e,
                      "unknown stage '%s' in %s (expected prospect, onboarding, active, at_risk "
                      "or former)",
                      name, ctx);
        else
            set |= (cad_stage_set_t)(1u << s);
    }
    if (n == 0)
        report_at(ld, list, "'stages' in %s is empty: it would reach nobody", ctx);
    return set;
}

static int load_purpose(struct loader *ld, const config_setting_t *g, const char *ctx,
                        const char *missing)
{
    const char *name;
    int r = get_string(ld, g, "purpose", ctx, &name);
    if (r == 0) {
        report_at(ld, g, "%s has no purpose%s", ctx, missing);
        return -1;
    }
    if (r < 0)
        return -1;
    int p = cad_purpose_parse(name);
    if (p < 0)
        report_at(ld, member(g, "purpose"),
                  "unknown purpose '%s' in %s (expected transactional, value, followup, "
                  "appreciation, feedback or ask)",
                  name, ctx);
    return p;
}

static int load_template_ref(struct loader *ld, const config_setting_t *g, const char *ctx)
{
    const char *name;
    if (get_text(ld, g, "template", ctx, false, &name) != 1)
        return CAD_NO_TEMPLATE;
    int t = cad_playbook_template(ld->pb, name);
    if (t < 0) {
        char hint[96];
        report_at(ld, member(g, "template"), "unknown template '%s' in %s%s", name, ctx,
                  SUGGEST_TEMPLATE(ld, name));
    }
    return t < 0 ? CAD_NO_TEMPLATE : t;
}

/* A rule that names a template sends no content item: {{content.*}} in its
 * template would render empty. */
static void check_template_without_content(struct loader *ld, const config_setting_t *rule,
                                           const char *ctx, const cad_template_t *t)
{
    const char *parts[] = {t->subject, t->text, t->html};
    const char *names[] = {"subject", "text", "html"};
    for (int k = 0; k < 3; k++) {
        char why[CAD_ERRBUF];
        if (parts[k] && cad_template_check_without(parts[k], "content.", why) < 0 &&
            strstr(why, "would be empty")) {
            report_at(ld, member(rule, "template"),
                      "%s names template '%s', whose %s part has %s: the rule sends no content "
                      "item (content variables are filled with content = \"library\")",
                      ctx, t->name, names[k], why);
            return;
        }
    }
}

static void load_content(struct loader *ld, const config_setting_t *root)
{
    static const char *const keys[] = {"id",     "purpose",    "title",       "url",      "topics",
                                       "stages", "valid_from", "valid_until", "template", NULL};
    cad_playbook_t *pb = ld->pb;
    const config_setting_t *list = NULL;
    if (get_group_list(ld, root, "content", &list) != 1)
        return;
    int n = config_setting_length(list);
    if (n == 0)
        return;
    pb->content = calloc((size_t)n, sizeof *pb->content);
    if (!pb->content) {
        ld->out_of_memory = true;
        return;
    }
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
        const char *id = get_item_name(ld, e, "id", "content item", i);
        if (!id)
            continue;
        char ctx[96];
        snprintf(ctx, sizeof ctx, "content item '%s'", id);
        check_keys(ld, e, ctx, keys);
        int existing = cad_playbook_content(pb, id);
        if (existing >= 0) {
            report_at(ld, e, "duplicate content item '%s' (first defined on line %d)", id,
                      pb->content[existing].line);
            continue;
        }
        cad_content_t *c = &pb->content[pb->n_content++];
        copy_name(c->id, id);
        c->line = (int)config_setting_source_line(e);
        c->valid_from = 0;
        c->valid_until = CAD_TIME_NEVER;
        int p = load_purpose(ld, e, ctx, "");
        c->purpose = p < 0 ? CAD_PURPOSE_VALUE : (enum cad_purpose)p;
        const char *title = NULL, *url = NULL;
        get_text(ld, e, "title", ctx, true, &title);
        get_text(ld, e, "url", ctx, false, &url);
        c->title = dup_string(ld, title);
        c->url = dup_string(ld, url);
        c->topics = load_topics(ld, e, ctx);
        c->stages = load_stages(ld, e, ctx);
        static const char *const bounds[] = {"valid_from", "valid_until"};
        cad_time_t *dest[] = {&c->valid_from, &c->valid_until};
        for (int b = 0; b < 2; b++) {
            const char *text;
            if (get_text(ld, e, bounds[b], ctx, false, &text) != 1)
                continue;
            char why[CAD_ERRBUF];
            if (cad_time_parse(text, dest[b], why) < 0)
                report_at(ld, member(e, bounds[b]), "'%s' in %s: %s", bounds[b], ctx, why);
        }
        if (c->valid_from >= c->valid_until)
            report_at(ld, member(e, "valid_until"), "'valid_until' in %s is not after 'valid_from'",
                      ctx);
        if (!member(e, "template"))
            report_at(ld, e, "%s has no 'template' to render it with", ctx);
        c->template_index = load_template_ref(ld, e, ctx);
    }
}

/* ---- policies ----------------------------------------------------------- */

static void load_caps(struct loader *ld, const config_setting_t *g, const char *ctx,
                      cad_policy_t *p)
{
    int n = config_setting_length(g);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        const char *key = config_setting_name(s);
        int channel = -1;
        if (strcmp(key, "all") != 0) {
            channel = cad_playbook_channel(ld->pb, key);
            if (channel < 0) {
                char hint[96];
                report_at(ld, s,
                          "unknown channel '%s' in caps of %s (caps name a channel or "
                          "\"all\")%s",
                          key, ctx, SUGGEST_CHANNEL(ld, key));
                continue;
            }
        }
        if (config_setting_type(s) != CONFIG_TYPE_STRING) {
            report_at(ld, s, "cap '%s' in %s must be a string like \"2/7d\", not %s", key, ctx,
                      type_name(s));
            continue;
        }
        char why[CAD_ERRBUF];
        cad_cap_t cap = {.channel = channel};
        if (cad_cap_parse(config_setting_get_string(s), &cap.count, &cap.window, why) < 0) {
            report_at(ld, s, "cap '%s' in %s: %s", key, ctx, why);
            continue;
        }
        if (p->n_caps >= CAD_MAX_CAPS) {
            report_at(ld, s, "too many caps in %s: at most %d", ctx, CAD_MAX_CAPS);
            return;
        }
        p->caps[p->n_caps++] = cap;
    }
}

static void load_weekdays(struct loader *ld, const config_setting_t *g, const char *ctx,
                          cad_policy_t *p)
{
    static const char *const days[7] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};
    const config_setting_t *list = NULL;
    if (get_string_list(ld, g, "weekdays", ctx, &list) != 1)
        return;
    uint8_t mask = 0;
    int n = config_setting_length(list);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
        const char *name = config_setting_get_string(e);
        int d = -1;
        for (int k = 0; k < 7; k++)
            if (strcmp(days[k], name) == 0)
                d = k;
        if (d < 0)
            report_at(ld, e,
                      "unknown weekday '%s' in %s (expected mon, tue, wed, thu, fri, sat, "
                      "sun)",
                      name, ctx);
        else
            mask |= (uint8_t)(1u << d);
    }
    if (n == 0)
        report_at(ld, list, "'weekdays' in %s is empty: nothing could ever be sent", ctx);
    if (mask)
        p->weekdays = mask;
}

static void load_policy(struct loader *ld, const config_setting_t *e, const char *name,
                        cad_policy_t *p)
{
    static const char *const keys[] = {"segment",
                                       "min_gap",
                                       "caps",
                                       "max_silence",
                                       "silence_lead",
                                       "quiet_hours",
                                       "weekdays",
                                       "jitter",
                                       "ask_balance",
                                       "min_relevance",
                                       "appreciation_per_year",
                                       NULL};
    static const char *const quiet_keys[] = {"start", "end", NULL};
    static const char *const balance_keys[] = {"min_value", "window", "max_share", NULL};
    char ctx[96];
    snprintf(ctx, sizeof ctx, "policy '%s'", name);
    check_keys(ld, e, ctx, keys);
    copy_name(p->name, name);
    p->line = (int)config_setting_source_line(e);
    p->min_gap = 3 * CAD_DAY;
    p->max_silence = 30 * CAD_DAY;
    p->silence_lead = 5 * CAD_DAY;
    p->quiet_start = 20 * 60;
    p->quiet_end = 8 * 60;
    p->weekdays = 0x7f;
    p->jitter = 30 * CAD_MINUTE;
    p->min_relevance = 0;
    p->appreciation_per_year = 2;

    get_duration(ld, e, "min_gap", ctx, 0, 365 * CAD_DAY, &p->min_gap);
    const config_setting_t *g = NULL;
    if (get_group(ld, e, "caps", ctx, &g) == 1)
        load_caps(ld, g, ctx, p);
    get_duration(ld, e, "max_silence", ctx, CAD_DAY, TEN_YEARS, &p->max_silence);
    int lead = get_duration(ld, e, "silence_lead", ctx, 0, TEN_YEARS, &p->silence_lead);
    if (lead == 0 && p->max_silence < 10 * CAD_DAY)
        p->silence_lead = p->max_silence / 2; /* the 5d default would not fit */
    if (lead == 1 && p->silence_lead >= p->max_silence)
        report_at(ld, member(e, "silence_lead"),
                  "'silence_lead' in %s must be shorter than 'max_silence'", ctx);
    if (get_group(ld, e, "quiet_hours", ctx, &g) == 1) {
        char qctx[128];
        snprintf(qctx, sizeof qctx, "quiet_hours of %s", ctx);
        check_keys(ld, g, qctx, quiet_keys);
        bool ok = true;
        for (int k = 0; k < 2; k++)
            if (!member(g, quiet_keys[k])) {
                report_at(ld, g, "%s has no '%s'", qctx, quiet_keys[k]);
                ok = false;
            }
        uint16_t start = 0, end = 0;
        ok = get_clock(ld, g, "start", qctx, &start) == 1 && ok;
        ok = get_clock(ld, g, "end", qctx, &end) == 1 && ok;
        if (ok) {
            p->quiet_start = start % 1440;
            p->quiet_end = end % 1440;
        }
    }
    load_weekdays(ld, e, ctx, p);
    get_duration(ld, e, "jitter", ctx, 0, CAD_DAY, &p->jitter);
    if (get_group(ld, e, "ask_balance", ctx, &g) == 1) {
        char bctx[128];
        snprintf(bctx, sizeof bctx, "ask_balance of %s", ctx);
        check_keys(ld, g, bctx, balance_keys);
        p->has_ask_balance = true;
        p->ask_min_value = 2;
        p->ask_window = 60 * CAD_DAY;
        p->ask_max_share = 0.25;
        get_u32(ld, g, "min_value", bctx, 0, 1000, &p->ask_min_value);
        get_duration(ld, g, "window", bctx, CAD_DAY, TEN_YEARS, &p->ask_window);
        get_number(ld, g, "max_share", bctx, 0, 1, &p->ask_max_share);
    }
    get_number(ld, e, "min_relevance", ctx, 0, 1, &p->min_relevance);
    get_u32(ld, e, "appreciation_per_year", ctx, 0, 52, &p->appreciation_per_year);
}

static void load_policies(struct loader *ld, const config_setting_t *root)
{
    cad_playbook_t *pb = ld->pb;
    const config_setting_t *list = NULL;
    int r = get_group_list(ld, root, "policies", &list);
    if (r == 0)
        report_at(ld, root, "no 'policies': a policy with segment \"default\" is required");
    if (r != 1)
        return;
    int n = config_setting_length(list);
    if (n > 0) {
        pb->policies = calloc((size_t)n, sizeof *pb->policies);
        if (!pb->policies) {
            ld->out_of_memory = true;
            return;
        }
    }
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
        const char *name = get_item_name(ld, e, "segment", "policy", i);
        if (!name)
            continue;
        bool dup = false;
        for (int k = 0; k < pb->n_policies; k++)
            if (strcmp(pb->policies[k].name, name) == 0) {
                report_at(ld, e, "duplicate policy for segment '%s' (first defined on line %d)",
                          name, pb->policies[k].line);
                dup = true;
            }
        if (!dup)
            load_policy(ld, e, name, &pb->policies[pb->n_policies++]);
    }
    int def = -1;
    for (int k = 0; k < pb->n_policies; k++)
        if (strcmp(pb->policies[k].name, "default") == 0)
            def = k;
    if (def < 0) {
        report_at(ld, list,
                  "no policy with segment \"default\": it is required and serves "
                  "every customer whose segment has no policy");
    } else if (def > 0) {
        cad_policy_t d = pb->policies[def];
        memmove(&pb->policies[1], &pb->policies[0], (size_t)def * sizeof d);
        pb->policies[0] = d;
    }
}

/* ---- rules -------------------------------------------------------------- */

static void load_trigger(struct loader *ld, const config_setting_t *e, const char *ctx,
                         cad_rule_t *rule, bool *is_silence)
{
    static const char *const keys[] = {"event", "after", "expires", "every", "silence", NULL};
    const config_setting_t *g = NULL;
    int r = get_group(ld, e, "trigger", ctx, &g);
    if (r == 0)
        report_at(ld, e,
                  "%s has no 'trigger' ({ event = ...; after = ...; expires = ...; }, "
                  "{ every = ...; } or { silence = true; })",
                  ctx);
    if (r != 1)
        return;
    char tctx[128];
    snprintf(tctx, sizeof tctx, "trigger of %s", ctx);
    check_keys(ld, g, tctx, keys);
    bool has_event = member(g, "event"), has_every = member(g, "every"),
         has_silence = member(g, "silence");
    if (has_event + has_every + has_silence != 1) {
        report_at(ld, g, "%s must have exactly one of 'event', 'every' or 'silence'", tctx);
        return;
    }
    if (!has_event)
        for (int k = 1; k <= 2; k++)
            if (member(g, keys[k]))
                report_at(ld, member(g, keys[k]), "'%s' in %s only applies to event triggers",
                          keys[k], tctx);
    if (has_event) {
        rule->trigger = CAD_TRIGGER_EVENT;
        const char *name;
        if (get_text(ld, g, "event", tctx, true, &name) == 1) {
            rule->event_type = cad_playbook_event_type(ld->pb, name);
            if (rule->event_type < 0) {
                char hint[96];
                report_at(ld, member(g, "event"), "unknown event type '%s' in %s%s", name, tctx,
                          SUGGEST_EVENT(ld, name));
            }
        }
        rule->after = 0;
        int ra = get_duration(ld, g, "after", tctx, 0, TEN_YEARS, &rule->after);
        int re = get_duration(ld, g, "expires", tctx, 1, TEN_YEARS, &rule->expires);
        if (re == 0)
            report_at(ld, g, "%s has no 'expires': a triggered touch must go stale some time",
                      tctx);
        if (ra >= 0 && re == 1 && rule->after >= rule->expires)
            report_at(ld, member(g, "expires"), "'after' in %s must be shorter than 'expires'",
                      tctx);
    } else if (has_every) {
        rule->trigger = CAD_TRIGGER_RECURRING;
        get_duration(ld, g, "every", tctx, CAD_HOUR, TEN_YEARS, &rule->every);
    } else {
        rule->trigger = CAD_TRIGGER_SILENCE;
        bool on = false;
        if (get_bool(ld, g, "silence", tctx, &on) == 1 && !on)
            report_at(ld, member(g, "silence"),
                      "'silence' in %s must be true (remove the trigger to disable the rule)",
                      tctx);
        *is_silence = true;
    }
}

static uint32_t load_roles_ref(struct loader *ld, const config_setting_t *e, const char *ctx)
{
    const config_setting_t *list = NULL;
    int r = get_string_list(ld, e, "roles", ctx, &list);
    if (r == 0)
        report_at(ld, e, "%s has no 'roles': name the contact roles it reaches", ctx);
    if (r != 1)
        return 0;
    uint32_t mask = 0;
    int n = config_setting_length(list);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(list, (unsigned)i);
        const char *name = config_setting_get_string(s);
        int role = cad_playbook_role(ld->pb, name);
        if (role < 0) {
            char hint[96];
            report_at(ld, s, "unknown role '%s' in %s%s", name, ctx, SUGGEST_ROLE(ld, name));
        } else
            mask |= UINT32_C(1) << role;
    }
    if (n == 0)
        report_at(ld, list, "'roles' in %s is empty: it would reach nobody", ctx);
    return mask;
}

static void load_channels_ref(struct loader *ld, const config_setting_t *e, const char *ctx,
                              cad_rule_t *rule)
{
    const config_setting_t *list = NULL;
    int r = get_string_list(ld, e, "channels", ctx, &list);
    if (r == 0)
        report_at(ld, e, "%s has no 'channels'", ctx);
    if (r != 1)
        return;
    int n = config_setting_length(list);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(list, (unsigned)i);
        const char *name = config_setting_get_string(s);
        int ch = cad_playbook_channel(ld->pb, name);
        if (ch < 0) {
            char hint[96];
            report_at(ld, s, "unknown channel '%s' in %s%s", name, ctx, SUGGEST_CHANNEL(ld, name));
            continue;
        }
        bool dup = false;
        for (int k = 0; k < rule->n_channels; k++)
            dup = dup || rule->channels[k] == ch;
        if (dup) {
            report_at(ld, s, "channel '%s' is listed twice in %s", name, ctx);
            continue;
        }
        rule->channels[rule->n_channels++] = (uint8_t)ch;
    }
    if (n == 0)
        report_at(ld, list, "'channels' in %s is empty", ctx);
}

static uint64_t load_suppress_while(struct loader *ld, const config_setting_t *e, const char *ctx)
{
    const config_setting_t *list = NULL;
    if (get_string_list(ld, e, "suppress_while", ctx, &list) != 1)
        return 0;
    uint64_t mask = 0;
    int n = config_setting_length(list);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(list, (unsigned)i);
        const char *name = config_setting_get_string(s);
        int et = cad_playbook_event_type(ld->pb, name);
        if (et < 0) {
            char hint[96];
            report_at(ld, s, "unknown event type '%s' in suppress_while of %s%s", name, ctx,
                      SUGGEST_EVENT(ld, name));
        } else if (ld->pb->event_types[et].resolved_by < 0)
            report_at(ld, s,
                      "event type '%s' in suppress_while of %s has no resolved_by event, so it "
                      "would suppress for ever",
                      name, ctx);
        else
            mask |= UINT64_C(1) << et;
    }
    return mask;
}

static void load_rule(struct loader *ld, const config_setting_t *e, const char *name,
                      cad_rule_t *rule)
{
    static const char *const keys[] = {"name",
                                       "purpose",
                                       "trigger",
                                       "stages",
                                       "roles",
                                       "channels",
                                       "template",
                                       "content",
                                       "topics",
                                       "requires_value_count",
                                       "requires_value_within",
                                       "suppress_while",
                                       "expiry",
                                       "bypass_caps",
                                       "bypass_quiet_hours",
                                       "sla",
                                       "holdout",
                                       NULL};
    cad_playbook_t *pb = ld->pb;
    char ctx[96];
    snprintf(ctx, sizeof ctx, "rule '%s'", name);
    check_keys(ld, e, ctx, keys);
    copy_name(rule->name, name);
    rule->line = (int)config_setting_source_line(e);
    rule->event_type = -1;
    rule->template_index = CAD_NO_TEMPLATE;

    int purpose = load_purpose(ld, e, ctx,
                               ": say why the customer hears from us (transactional, value, "
                               "followup, appreciation, feedback or ask)");
    rule->purpose = purpose < 0 ? CAD_PURPOSE_VALUE : (enum cad_purpose)purpose;

    bool is_silence = false;
    load_trigger(ld, e, ctx, rule, &is_silence);
    rule->stages = load_stages(ld, e, ctx);
    rule->roles = load_roles_ref(ld, e, ctx);
    load_channels_ref(ld, e, ctx, rule);

    /* R5: every rule carries content: a template or a pick from the library. */
    bool has_template = member(e, "template"), has_content = member(e, "content");
    if (has_template && has_content)
        report_at(ld, e, "%s names both a 'template' and 'content'; choose one", ctx);
    else if (!has_template && !has_content)
        report_at(ld, e,
                  "%s has no content: name a 'template' or set content = \"library\" (there is "
                  "no content-free keeping in touch)",
                  ctx);
    rule->template_index = load_template_ref(ld, e, ctx);
    if (rule->template_index != CAD_NO_TEMPLATE)
        check_template_without_content(ld, e, ctx, &pb->templates[rule->template_index]);
    const char *content;
    if (get_string(ld, e, "content", ctx, &content) == 1) {
        if (strcmp(content, "library") == 0)
            rule->use_library = true;
        else
            report_at(ld, member(e, "content"),
                      "'content' in %s is '%s'; the only source is \"library\" (or name a "
                      "'template')",
                      ctx, content);
    }
    if (member(e, "topics") && !rule->use_library && !has_content)
        report_at(ld, member(e, "topics"), "'topics' in %s only applies with content = \"library\"",
                  ctx);
    rule->topics = load_topics(ld, e, ctx);
    if (is_silence && !rule->use_library && !has_content)
        report_at(ld, e, "%s has a silence trigger, which needs content = \"library\"", ctx);
    if (is_silence && purpose >= 0 && rule->purpose != CAD_PURPOSE_VALUE)
        report_at(ld, member(e, "purpose"),
                  "%s has a silence trigger, which sends value content: its purpose must be "
                  "value",
                  ctx);

    /* R3: value before ask. */
    bool is_ask = purpose == CAD_PURPOSE_ASK;
    if (get_u32(ld, e, "requires_value_count", ctx, 0, 1000, &rule->requires_value_count) == 1 &&
        !is_ask && purpose >= 0)
        report_at(ld, member(e, "requires_value_count"),
                  "'requires_value_count' in %s only applies to ask rules", ctx);
    if (get_duration(ld, e, "requires_value_within", ctx, CAD_DAY, TEN_YEARS,
                     &rule->requires_value_within) == 1 &&
        !is_ask && purpose >= 0)
        report_at(ld, member(e, "requires_value_within"),
                  "'requires_value_within' in %s only applies to ask rules", ctx);
    if (is_ask)
        for (int k = 0; k < pb->n_policies; k++)
            if (!pb->policies[k].has_ask_balance) {
                report_at(ld, member(e, "purpose"),
                          "%s is an ask, but policy '%s' (line %d) has no ask_balance: an ask "
                          "needs a balance policy",
                          ctx, pb->policies[k].name, pb->policies[k].line);
                break;
            }

    rule->suppress_while = load_suppress_while(ld, e, ctx);

    /* How long a decided touch stays sendable. */
    int64_t window = rule->expires > rule->after ? rule->expires - rule->after : 0;
    rule->touch_expiry =
        rule->trigger == CAD_TRIGGER_EVENT && window > 0 ? window : DEFAULT_TOUCH_EXPIRY;
    if (get_duration(ld, e, "expiry", ctx, CAD_MINUTE, TEN_YEARS, &rule->touch_expiry) == 1 &&
        rule->trigger == CAD_TRIGGER_EVENT && window > 0 && rule->touch_expiry > window) {
        report_at(ld, member(e, "expiry"),
                  "'expiry' in %s is longer than its trigger window (expires - after): the touch "
                  "would go out stale",
                  ctx);
    }

    bool transactional = purpose == CAD_PURPOSE_TRANSACTIONAL;
    static const char *const bypass_keys[] = {"bypass_caps", "bypass_quiet_hours"};
    bool *bypass[] = {&rule->bypass_caps, &rule->bypass_quiet_hours};
    for (int k = 0; k < 2; k++)
        if (get_bool(ld, e, bypass_keys[k], ctx, bypass[k]) == 1 && *bypass[k] && !transactional &&
            purpose >= 0)
            report_at(ld, member(e, bypass_keys[k]),
                      "'%s' in %s is only allowed on transactional rules", bypass_keys[k], ctx);

    if (get_duration(ld, e, "sla", ctx, CAD_HOUR, TEN_YEARS, &rule->sla) == 1 &&
        purpose != CAD_PURPOSE_FOLLOWUP && purpose >= 0)
        report_at(ld, member(e, "sla"), "'sla' in %s only applies to followup rules", ctx);

    double holdout = 0;
    if (get_number(ld, e, "holdout", ctx, 0, 0.5, &holdout) == 1)
        rule->holdout_permille = (uint32_t)lround(holdout * 1000);

    /* R1: customer-only asks for feedback never reach former customers. */
    if (purpose == CAD_PURPOSE_FEEDBACK && (rule->stages & (1u << CAD_STAGE_FORMER)))
        report_at(ld, member(e, "stages"),
                  "%s asks for feedback and names stage 'former': surveys never reach former "
                  "customers",
                  ctx);
}

static void load_rules(struct loader *ld, const config_setting_t *root)
{
    cad_playbook_t *pb = ld->pb;
    const config_setting_t *list = NULL;
    if (get_group_list(ld, root, "rules", &list) != 1)
        return;
    int n = config_setting_length(list);
    if (n == 0)
        return;
    pb->rules = calloc((size_t)n, sizeof *pb->rules);
    if (!pb->rules) {
        ld->out_of_memory = true;
        return;
    }
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
        const char *name = get_item_name(ld, e, "name", "rule", i);
        if (!name)
            continue;
        bool dup = false;
        for (int k = 0; k < pb->n_rules && !dup; k++)
            if (strcmp(pb->rules[k].name, name) == 0) {
                report_at(ld, e, "duplicate rule name '%s' (first defined on line %d)", name,
                          pb->rules[k].line);
                dup = true;
            }
        if (!dup)
            load_rule(ld, e, name, &pb->rules[pb->n_rules++]);
    }
}

/* ---- entry points ------------------------------------------------------- */

static void load_root(struct loader *ld, const config_setting_t *root)
{
    static const char *const keys[] = {
        "store",    "control",  "log",       "plugins", "engine", "event_types", "roles",
        "channels", "policies", "templates", "content", "rules",  NULL};
    check_keys(ld, root, "the top level", keys);
    cad_playbook_init_builtins(ld->pb);
    load_store(ld, root);
    load_control(ld, root);
    load_log(ld, root);
    load_plugins(ld, root);
    load_engine(ld, root);
    load_event_types(ld, root);
    load_roles(ld, root);
    load_channels(ld, root);
    load_templates(ld, root);
    load_content(ld, root);
    load_policies(ld, root);
    load_rules(ld, root);
}

/* libconfig 1.5 reads an @include target with its flex scanner, which
 * calls exit() when the read fails — as it does for a directory (an empty
 * path, or one cut short by a NUL byte, names the include directory
 * itself) — so a bad include in a config reloaded by SIGHUP would end the
 * daemon. Every @include target, at any depth, must therefore be a regular
 * file before libconfig sees the text.
 *
 * The scan mirrors libconfig's own rule: a directive is `@include`, after
 * nothing but blanks at the start of a line, then blanks and a quoted path
 * that may span lines; libconfig joins the path onto the include
 * directory, absolute or not. A path holding a control byte, a NUL or a
 * backslash (an escape) is refused outright, so the path checked here is
 * byte for byte the one libconfig opens. A directive inside a block
 * comment is checked too: erring towards a check costs nothing.
 * Returns the number of errors written to `errors`. */
static int check_includes(const char *file, const char *dir, int depth, FILE *errors)
{
    size_t len = 0;
    char *text = read_whole_file(file, &len);
    if (!text && errno == EFBIG) {
        if (errors)
            fprintf(errors, "%s:1: the file is larger than 64 MiB\n", file);
        return 1;
    }
    if (!text)
        return 0; /* libconfig reports what cannot be read */
    int n_errors = 0, lineno = 1;
    for (size_t i = 0; i < len; i++) {
        bool line_start = i == 0 || text[i - 1] == '\n';
        if (i > 0 && text[i - 1] == '\n')
            lineno++;
        if (!line_start)
            continue;
        size_t p = i;
        while (p < len && (text[p] == ' ' || text[p] == '\t'))
            p++;
        if (len - p < 8 || memcmp(text + p, "@include", 8) != 0)
            continue;
        p += 8;
        size_t blanks = p;
        while (p < len && (text[p] == ' ' || text[p] == '\t'))
            p++;
        if (p == blanks || p >= len || text[p] != '"')
            continue; /* not a directive libconfig acts on */
        size_t open = ++p;
        bool clean = true;
        while (p < len && text[p] != '"') {
            unsigned char c = (unsigned char)text[p];
            if (c < 0x20 || c == 0x7f || c == '\\')
                clean = false;
            p++;
        }
        int plen = (int)(p - open);
        int shown = plen > 200 ? 200 : plen;
        char target[4096];
        struct stat sb;
        const char *why = NULL;
        if (p >= len)
            why = "has no closing quote";
        else if (!clean)
            why = "holds a control character, a NUL byte or a backslash";
        else if (plen == 0)
            why = "does not name a readable file";
        else if (snprintf(target, sizeof target, "%s%s%.*s", dir ? dir : "", dir ? "/" : "", plen,
                          text + open) >= (int)sizeof target)
            why = "is too long";
        else if (stat(target, &sb) != 0 || !S_ISREG(sb.st_mode))
            why = text[open] == '/' && dir
                      ? "does not name a readable file (paths are read relative to the "
                        "main file's directory, even absolute ones)"
                      : "does not name a readable file";
        if (why) {
            if (errors) {
                fprintf(errors, "%s:%d: @include \"", file, lineno);
                for (int k = 0; k < shown; k++) {
                    unsigned char c = (unsigned char)text[open + k];
                    if (c < 0x20 || c == 0x7f)
                        fprintf(errors, "\\x%02x", c);
                    else
                        fputc(c, errors);
                }
                fprintf(errors, "%s\" %s\n", shown < plen ? "..." : "", why);
            }
            n_errors++;
        } else if (depth < 10) {
            n_errors += check_includes(target, dir, depth + 1, errors);
        }
    }
    free(text);
    return n_errors;
}

int cad_config_load(const char *path, cad_config_t **out, FILE *errors)
{
    if (!out)
        return -CAD_EINVAL;
    *out = NULL;
    if (!path || !*path) {
        if (errors)
            fprintf(errors, "no configuration file named\n");
        return -CAD_EINVAL;
    }
    FILE *probe = fopen(path, "r");
    if (!probe) {
        if (errors)
            fprintf(errors, "%s: cannot open the config: %s\n", path, strerror(errno));
        return -CAD_EIO;
    }
    fclose(probe);

    cad_config_t *cfg = calloc(1, sizeof *cfg);
    if (!cfg) {
        if (errors)
            fprintf(errors, "%s: out of memory\n", path);
        return -CAD_ENOMEM;
    }
    struct loader ld = {.errors = errors, .path = path, .cfg = cfg, .pb = &cfg->playbook};
    cfg->path = dup_string(&ld, path);

    config_t lc;
    config_init(&lc);
    /* @include paths are relative to the directory of the main file. */
    char *dir = NULL;
    const char *slash = strrchr(path, '/');
    if (slash) {
        dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
        if (!dir)
            ld.out_of_memory = true;
        else
            config_set_include_dir(&lc, dir);
    }
    ld.dir = dir;
    int rc = 0;
    if (!ld.out_of_memory && check_includes(path, dir, 0, errors) > 0) {
        rc = -CAD_EINVAL;
    } else if (!config_read_file(&lc, path)) {
        const char *file = config_error_file(&lc);
        if (config_error_type(&lc) == CONFIG_ERR_FILE_IO) {
            if (errors)
                fprintf(errors, "%s: cannot read the config\n", file ? file : path);
            rc = -CAD_EIO;
        } else {
            if (errors) {
                print_location(errors, path, dir, file ? file : path, config_error_line(&lc));
                fprintf(errors, "%s\n", config_error_text(&lc));
            }
            rc = -CAD_EINVAL;
        }
    } else {
        load_root(&ld, config_root_setting(&lc));
        if (ld.out_of_memory) {
            if (errors)
                fprintf(errors, "%s: out of memory while loading the config\n", path);
            rc = -CAD_ENOMEM;
        } else if (ld.n_errors > 0) {
            rc = -CAD_EINVAL;
        }
    }
    config_destroy(&lc);
    free(dir);
    while (ld.sources) {
        struct source_file *next = ld.sources->next;
        free(ld.sources->name);
        free(ld.sources->text);
        free(ld.sources);
        ld.sources = next;
    }
    if (rc < 0) {
        cad_config_free(cfg);
        return rc;
    }
    *out = cfg;
    return 0;
}

void cad_config_free(cad_config_t *cfg)
{
    if (!cfg)
        return;
    free(cfg->path);
    free(cfg->state_dir);
    free(cfg->socket_path);
    free(cfg->access);
    free(cfg->plugin_dir);
    free(cfg->credentials_dir);
    free(cfg->default_timezone);
    for (int i = 0; i < CAD_MAX_CHANNELS; i++) {
        cad_channel_config_t *cc = &cfg->channel_config[i];
        for (int k = 0; k < cc->n_settings; k++) {
            free(cc->settings[k].name);
            free(cc->settings[k].value);
        }
        free(cc->settings);
    }
    cad_playbook_clear(&cfg->playbook);
    free(cfg);
}

const char *cad_config_channel_setting(const cad_config_t *cfg, int channel, const char *name)
{
    if (!cfg || !name || channel < 0 || channel >= cfg->playbook.n_channels)
        return NULL;
    const cad_channel_config_t *cc = &cfg->channel_config[channel];
    for (int i = 0; i < cc->n_settings; i++)
        if (strcmp(cc->settings[i].name, name) == 0)
            return cc->settings[i].value;
    return NULL;
}
