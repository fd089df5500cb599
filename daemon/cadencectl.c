/*
 * cadencectl.c — the operator's client for cadenced's control socket.
 *
 * Each subcommand is one entry of a table: its name, a one-line summary, its
 * usage text and a function that turns the arguments into a request object.
 * The common path then sends that one JSON line, reads the one reply line and
 * prints the result — as the raw JSON with --json, or through the entry's
 * printer (a small aligned table) otherwise. Adding a subcommand is adding
 * an entry; the protocol lives in docs/control-protocol.md.
 *
 * Exit status: 0 ok, 1 the daemon answered with an error (its message on
 * stderr), 2 usage error, 3 cannot connect (or the connection was lost).
 */
#include "common.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <locale.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#define DEFAULT_SOCKET "/run/cadenced/control.sock"
#define REPLY_MAX      (64 * 1024 * 1024)
#define EXIT_OK        0
#define EXIT_ERROR     1
#define EXIT_USAGE     2
#define EXIT_CONNECT   3

typedef struct ctl {
    const char *socket_path;
    bool json;
    int timeout_ms;
} ctl_t;

typedef struct subcommand subcommand_t;

/* Builds the request for a subcommand from its arguments (argv[0] is the
 * subcommand). Returns a new object, or NULL after printing a usage error. */
typedef json_t *(*build_fn)(const subcommand_t *sc, int argc, char **argv);
/* Prints a successful result for humans. */
typedef void (*print_fn)(json_t *result);
/* Runs a subcommand that talks to the daemon itself; returns the exit status. */
typedef int (*run_fn)(const ctl_t *ctl, const subcommand_t *sc, int argc, char **argv);

#define MAX_FIELDS 4

struct subcommand {
    const char *name;
    const char *summary;
    const char *usage;              /* arguments and details, after "cadencectl [OPTIONS] NAME" */
    build_fn build;                 /* NULL: build_fields */
    print_fn print;                 /* NULL: print_generic */
    const char *cmd;                /* the daemon's command name when it differs from `name` */
    const char *fields[MAX_FIELDS]; /* build_fields: request fields the positional
                                       arguments fill, in order, as strings */
    run_fn run;                     /* instead of build + one exchange: a subcommand that needs
                                       several requests (import, simulate) */
};

/* ---- output helpers ------------------------------------------------------ */

static void print_scalar(FILE *out, json_t *v)
{
    if (json_is_string(v))
        fputs(json_string_value(v), out);
    else if (json_is_null(v) || !v)
        fputs("-", out);
    else {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        fputs(s ? s : "?", out);
        free(s);
    }
}

/* Prints any result as "key  value" lines, nested objects as dotted keys. */
static void flatten(json_t *v, const char *prefix, int width)
{
    if (json_is_object(v)) {
        const char *key;
        json_t *child;
        json_object_foreach(v, key, child)
        {
            char name[256];
            snprintf(name, sizeof(name), "%s%s%s", prefix, *prefix ? "." : "", key);
            flatten(child, name, width);
        }
        return;
    }
    printf("%-*s  ", width, prefix);
    print_scalar(stdout, v);
    putchar('\n');
}

static int key_width(json_t *v, int prefix_len)
{
    int w = prefix_len;
    if (json_is_object(v)) {
        const char *key;
        json_t *child;
        json_object_foreach(v, key, child)
        {
            int cw = key_width(child, prefix_len + (prefix_len ? 1 : 0) + (int)strlen(key));
            if (cw > w)
                w = cw;
        }
    }
    return w;
}

/* Columns a string takes on a terminal: wcwidth() of each character in a
 * UTF-8 locale (wide CJK characters 2, combining marks 0); otherwise, or for
 * what the locale cannot read, one per UTF-8 code point. */
static size_t text_width(const char *s)
{
    size_t n = 0;
    mbstate_t st;
    memset(&st, 0, sizeof st);
    while (*s) {
        wchar_t wc;
        size_t len = mbrtowc(&wc, s, MB_CUR_MAX, &st);
        int w = len != (size_t)-1 && len != (size_t)-2 && len > 0 ? wcwidth(wc) : -1;
        if (w < 0) { /* not readable here: count the code point */
            memset(&st, 0, sizeof st);
            len = 1;
            while (((unsigned char)s[len] & 0xc0) == 0x80)
                len++;
            w = 1;
        }
        n += (size_t)w;
        s += len;
    }
    return n;
}

/* One table cell: control characters shown as spaces (a stored text must
 * not move the cursor or colour the terminal), padded to `width` columns
 * unless it is the last. */
static void print_cell(const char *s, size_t width, bool last)
{
    for (const char *p = s; *p; p++)
        putchar((unsigned char)*p < 0x20 || *p == 0x7f ? ' ' : *p);
    if (last) {
        putchar('\n');
        return;
    }
    for (size_t w = text_width(s); w < width + 2; w++)
        putchar(' ');
}

/* Prints an array of objects as aligned columns, one row per element. */
static void print_table(json_t *array)
{
    const char *cols[16];
    int n_cols = 0;
    size_t width[16];
    size_t i;
    json_t *item;
    json_array_foreach(array, i, item)
    {
        const char *key;
        json_t *v;
        json_object_foreach(item, key, v)
        {
            int c = 0;
            while (c < n_cols && strcmp(cols[c], key) != 0)
                c++;
            if (c == n_cols && n_cols < 16) {
                cols[n_cols] = key;
                width[n_cols++] = strlen(key);
            }
        }
    }
    if (n_cols == 0) {
        printf("(none)\n");
        return;
    }
    json_array_foreach(array, i, item)
    {
        for (int c = 0; c < n_cols; c++) {
            json_t *v = json_object_get(item, cols[c]);
            char *text = json_is_string(v) ? NULL : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
            size_t w = json_is_string(v) ? text_width(json_string_value(v))
                       : text            ? strlen(text)
                                         : 1;
            free(text);
            if (w > width[c])
                width[c] = w;
        }
    }
    for (int c = 0; c < n_cols; c++)
        printf("%-*s%s", c + 1 < n_cols ? (int)width[c] : 0, cols[c], c + 1 < n_cols ? "  " : "\n");
    json_array_foreach(array, i, item)
    {
        for (int c = 0; c < n_cols; c++) {
            json_t *v = json_object_get(item, cols[c]);
            char *text = json_is_string(v) ? NULL : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
            const char *shown = json_is_string(v) ? json_string_value(v) : text ? text : "-";
            if (json_is_null(v) || !v)
                shown = "-";
            print_cell(shown, width[c], c + 1 == n_cols);
            free(text);
        }
    }
}

static bool is_table(json_t *v)
{
    return json_is_array(v) && json_array_size(v) > 0 && json_is_object(json_array_get(v, 0));
}

/* Any result: scalars and nested objects as "key  value" lines, arrays of
 * objects as tables after them. */
static void print_generic(json_t *result)
{
    if (is_table(result)) {
        print_table(result);
        return;
    }
    if (!json_is_object(result)) {
        print_scalar(stdout, result);
        putchar('\n');
        return;
    }
    json_t *scalars = json_object();
    const char *key;
    json_t *v;
    json_object_foreach(result, key, v)
    {
        if (!is_table(v))
            json_object_set(scalars, key, v);
    }
    if (json_object_size(scalars) > 0)
        flatten(scalars, "", key_width(scalars, 0));
    json_decref(scalars);
    json_object_foreach(result, key, v)
    {
        if (is_table(v)) {
            printf("\n%s:\n", key);
            print_table(v);
        }
    }
}

static void row(const char *label, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void row(const char *label, const char *fmt, ...)
{
    printf("%-14s ", label);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

static long long num(json_t *obj, const char *path)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *v = obj;
    for (char *tok = strtok(buf, "."); tok && v; tok = strtok(NULL, "."))
        v = json_object_get(v, tok);
    return json_is_integer(v) ? (long long)json_integer_value(v) : 0;
}

static const char *str(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "-";
}

static void format_duration(long long s, char *buf, size_t n)
{
    if (s >= 86400)
        snprintf(buf, n, "%lldd %02lldh %02lldm", s / 86400, s % 86400 / 3600, s % 3600 / 60);
    else if (s >= 3600)
        snprintf(buf, n, "%lldh %02lldm %02llds", s / 3600, s % 3600 / 60, s % 60);
    else if (s >= 60)
        snprintf(buf, n, "%lldm %02llds", s / 60, s % 60);
    else
        snprintf(buf, n, "%llds", s);
}

static void format_time(json_t *v, char *buf, size_t n)
{
    if (!json_is_integer(v)) {
        snprintf(buf, n, "-");
        return;
    }
    time_t t = (time_t)json_integer_value(v);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%d %H:%M:%SZ", &tm);
}

/* ---- subcommands --------------------------------------------------------- */

/* The common builder: exactly one positional argument per entry of
 * sc->fields, each sent as a string field of the request. */
static json_t *build_fields(const subcommand_t *sc, int argc, char **argv)
{
    int want = 0;
    while (want < MAX_FIELDS && sc->fields[want])
        want++;
    if (argc - 1 != want) {
        if (argc - 1 > want)
            fprintf(stderr, "cadencectl %s: unexpected argument \"%s\"\n", sc->name,
                    argv[want + 1]);
        else
            fprintf(stderr, "cadencectl %s: missing %s\n", sc->name, sc->fields[argc - 1]);
        return NULL;
    }
    json_t *req = json_pack("{s:s}", "cmd", sc->cmd ? sc->cmd : sc->name);
    for (int i = 0; req && i < want; i++)
        if (json_object_set_new(req, sc->fields[i], json_string(argv[i + 1])) != 0) {
            fprintf(stderr, "cadencectl %s: %s is not valid UTF-8\n", sc->name, sc->fields[i]);
            json_decref(req);
            return NULL;
        }
    return req;
}

static void print_status(json_t *r)
{
    char buf[64];
    row("version", "%s", str(r, "version"));
    row("state", "%s", str(r, "state"));
    row("pid", "%lld", num(r, "pid"));
    format_duration(num(r, "uptime"), buf, sizeof(buf));
    row("uptime", "%s", buf);
    row("config", "%s", str(r, "config"));
    json_t *store = json_object_get(r, "store");
    row("store", "%s (schema %lld)", str(store, "path"), num(store, "schema_version"));
    row("socket", "%s", str(r, "socket"));
    row("log level", "%s", str(r, "log_level"));
    row("playbook", "%lld rules, %lld channels", num(r, "playbook.rules"),
        num(r, "playbook.channels"));
    /* Channels not sending, and why. */
    static const struct {
        const char *key, *what;
    } held[] = {
        {"channels_not_loaded", "not loaded (see `cadencectl plugins`)"},
        {"circuits_open", "with the circuit open, the provider failing; touches wait (see "
                          "`cadencectl alerts`)"},
        {"channels_disabled", "disabled, endpoint gone or credentials refused; fix the "
                              "configuration and reload (see `cadencectl alerts`)"},
    };
    size_t not_sending = 0;
    for (size_t k = 0; k < sizeof held / sizeof held[0]; k++) {
        size_t n = json_array_size(json_object_get(r, held[k].key));
        not_sending += n;
        if (n > 0)
            row("channels", "%zu %s", n, held[k].what);
    }
    json_t *counts = json_object_get(r, "counts");
    if (json_is_object(counts)) {
        row("customers", "%lld", num(counts, "customers"));
        row("contacts", "%lld", num(counts, "contacts"));
        row("events", "%lld", num(counts, "events"));
        row("decisions", "%lld", num(counts, "decisions"));
        row("touches",
            "%lld queued, %lld in flight, %lld retrying, %lld delivered, %lld dead, "
            "%lld cancelled",
            num(counts, "touches.queued"), num(counts, "touches.in_flight"),
            num(counts, "touches.retry_wait"), num(counts, "touches.delivered"),
            num(counts, "touches.dead"), num(counts, "touches.cancelled"));
        /* The same three kinds `cadencectl alerts` opens with. */
        long long open = num(counts, "alerts_open"), dead = num(counts, "touches.dead");
        row("open alerts",
            "%lld (%lld customer alerts, %lld dead touches, %zu channels not "
            "sending; see `cadencectl alerts`)",
            open + dead + (long long)not_sending, open, dead, not_sending);
    } else {
        row("counts", "unavailable: %s", str(r, "counts_error"));
    }
    json_t *s = json_object_get(r, "scheduler");
    format_time(json_object_get(s, "next_due"), buf, sizeof(buf));
    row("scheduler", "%lld customers, next due %s", num(s, "customers"), buf);
    row("evaluations", "%lld (%lld touches decided, %lld deferred, %lld suppressed, %lld errors)",
        num(s, "evaluations"), num(s, "touches_decided"), num(s, "deferred"), num(s, "suppressed"),
        num(s, "errors"));
    row("control", "%lld clients, %lld requests, your role %s", num(r, "control.clients"),
        num(r, "control.requests"), str(json_object_get(r, "control"), "your_role"));
    json_t *rl = json_object_get(r, "reloads");
    if (num(rl, "count") > 0) {
        format_time(json_object_get(rl, "last_at"), buf, sizeof(buf));
        row("reloads", "%lld (%lld failed), last %s %s", num(rl, "count"), num(rl, "failed"), buf,
            json_is_true(json_object_get(rl, "last_ok")) ? "ok" : "rejected");
    }
}

/* Warns on stderr about every channel whose plugin is not loaded. */
static void warn_channels_not_loaded(json_t *r)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(r, "channels_not_loaded"), i, c)
        fprintf(stderr,
                "cadencectl: warning: channel %s is not loaded; its touches wait in the "
                "outbox: %s\n",
                str(c, "channel"), str(c, "error"));
}

static void print_reload(json_t *r)
{
    printf("reloaded %s\n", str(r, "config"));
    warn_channels_not_loaded(r);
}

static void print_help_reply(json_t *r)
{
    json_t *list = json_object_get(r, "commands");
    size_t i;
    json_t *c;
    printf("commands this daemon answers (your role: %s):\n", str(r, "your_role"));
    json_array_foreach(list, i, c)
    {
        printf("  %-20s %s\n", str(c, "cmd"), str(c, "role"));
    }
}

static json_t *build_raw(const subcommand_t *sc, int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "cadencectl raw: expected one argument, a JSON request object\n");
        return NULL;
    }
    json_error_t jerr;
    json_t *req = json_loads(argv[1], 0, &jerr);
    if (!req) {
        fprintf(stderr, "cadencectl raw: the request is not valid JSON at column %d: %s\n",
                jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(req) || !json_is_string(json_object_get(req, "cmd"))) {
        fprintf(stderr, "cadencectl raw: the request must be an object with a \"cmd\" string\n");
        json_decref(req);
        return NULL;
    }
    return req;
}

/* ---- operator subcommands: options, verbs and printers ------------------- */

static int connect_socket(const ctl_t *ctl);
static int send_all(int fd, const char *p, size_t n);
static char *read_line(int fd, int timeout_ms, const char *path);
static void usage_one(FILE *out, const subcommand_t *sc);

enum opt_kind { OPT_STRING, OPT_INT, OPT_FLAG };

/* A subcommand option: "--limit N" fills the request field "limit". */
typedef struct opt_spec {
    const char *flag;
    const char *field;
    enum opt_kind kind;
} opt_spec_t;

/* Splits args into options (set on req) and positionals (kept in order in
 * pos[]). Returns the number of positionals, or -1 after a usage message. */
static int parse_args(const subcommand_t *sc, int argc, char **argv, const opt_spec_t *specs,
                      json_t *req, char **pos, int max_pos)
{
    int n = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || strlen(a) == 2) {
            if (n == max_pos) {
                fprintf(stderr, "cadencectl %s: unexpected argument \"%s\"\n", sc->name, a);
                return -1;
            }
            pos[n++] = argv[i];
            continue;
        }
        const opt_spec_t *o = specs;
        while (o && o->flag && strcmp(o->flag, a) != 0)
            o++;
        if (!o || !o->flag) {
            fprintf(stderr, "cadencectl %s: unknown option \"%s\"\n", sc->name, a);
            return -1;
        }
        if (o->kind == OPT_FLAG) {
            json_object_set_new(req, o->field, json_true());
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "cadencectl %s: %s needs a value\n", sc->name, a);
            return -1;
        }
        const char *v = argv[++i];
        if (o->kind == OPT_INT) {
            char *end;
            long long x = strtoll(v, &end, 10);
            if (!*v || *end) {
                fprintf(stderr, "cadencectl %s: %s: expected a number, got \"%s\"\n", sc->name, a,
                        v);
                return -1;
            }
            json_object_set_new(req, o->field, json_integer(x));
        } else if (json_object_set_new(req, o->field, json_string(v)) != 0) {
            fprintf(stderr, "cadencectl %s: %s: not valid UTF-8\n", sc->name, a);
            return -1;
        }
    }
    return n;
}

static json_t *new_request(const char *cmd)
{
    return json_pack("{s:s}", "cmd", cmd);
}

/* Turns FIELD=VALUE arguments into an object: list fields (interests,
 * roles) split on commas, JSON fields (attributes, data, consent) parsed,
 * paused as a boolean, an empty email or phone as null (remove it),
 * everything else a string. */
static int fill_fields(const subcommand_t *sc, json_t *obj, char **args, int n)
{
    for (int i = 0; i < n; i++) {
        char *eq = strchr(args[i], '=');
        if (!eq || eq == args[i]) {
            fprintf(stderr, "cadencectl %s: expected FIELD=VALUE, got \"%s\"\n", sc->name, args[i]);
            return -1;
        }
        char key[64];
        snprintf(key, sizeof(key), "%.*s", (int)(eq - args[i]), args[i]);
        const char *v = eq + 1;
        json_t *val = NULL;
        if (strcmp(key, "interests") == 0 || strcmp(key, "roles") == 0) {
            val = json_array();
            char *copy = strdup(v);
            for (char *save = NULL, *t = copy ? strtok_r(copy, ",", &save) : NULL; t;
                 t = strtok_r(NULL, ",", &save))
                json_array_append_new(val, json_string(t));
            free(copy);
        } else if (strcmp(key, "attributes") == 0 || strcmp(key, "data") == 0 ||
                   strcmp(key, "consent") == 0) {
            json_error_t jerr;
            val = json_loads(v, 0, &jerr);
            if (!val) {
                fprintf(stderr, "cadencectl %s: %s: not valid JSON: %s\n", sc->name, key,
                        jerr.text);
                return -1;
            }
        } else if (strcmp(key, "paused") == 0) {
            if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0) {
                fprintf(stderr, "cadencectl %s: paused: expected true or false\n", sc->name);
                return -1;
            }
            val = json_boolean(strcmp(v, "true") == 0);
        } else if (!*v && (strcmp(key, "email") == 0 || strcmp(key, "phone") == 0)) {
            val = json_null();
        } else {
            val = json_string(v);
        }
        if (!val || json_object_set_new(obj, key, val) != 0) {
            fprintf(stderr, "cadencectl %s: %s: not valid UTF-8\n", sc->name, key);
            return -1;
        }
    }
    return 0;
}

static const char *verb_of(const subcommand_t *sc, int argc, char **argv, const char *const *verbs)
{
    if (argc < 2) {
        fprintf(stderr, "cadencectl %s: missing the action\n", sc->name);
        return NULL;
    }
    for (int i = 0; verbs[i]; i++)
        if (strcmp(argv[1], verbs[i]) == 0)
            return verbs[i];
    fprintf(stderr, "cadencectl %s: unknown action \"%s\"\n", sc->name, argv[1]);
    return NULL;
}

static json_t *build_customer(const subcommand_t *sc, int argc, char **argv)
{
    static const char *const verbs[] = {"add", "update", "show", "list", NULL};
    static const opt_spec_t list_opts[] = {{"--stage", "stage", OPT_STRING},
                                           {"--segment", "segment", OPT_STRING},
                                           {"--limit", "limit", OPT_INT},
                                           {NULL, NULL, 0}};
    const char *verb = verb_of(sc, argc, argv, verbs);
    if (!verb)
        return NULL;
    char cmd[32];
    snprintf(cmd, sizeof(cmd), "customer.%s", verb);
    json_t *req = new_request(cmd);
    char *pos[64];
    int n = parse_args(sc, argc - 2, argv + 2, strcmp(verb, "list") == 0 ? list_opts : NULL, req,
                       pos, strcmp(verb, "list") == 0 ? 0 : 64);
    if (n < 0)
        goto bad;
    if (strcmp(verb, "list") == 0)
        return req;
    if (n < 1) {
        fprintf(stderr, "cadencectl %s %s: missing the customer ID\n", sc->name, verb);
        goto bad;
    }
    if (strcmp(verb, "show") == 0) {
        if (n > 1) {
            fprintf(stderr, "cadencectl %s show: unexpected argument \"%s\"\n", sc->name, pos[1]);
            goto bad;
        }
        json_object_set_new(req, "customer", json_string(pos[0]));
        return req;
    }
    json_t *obj = json_pack("{s:s}", "id", pos[0]);
    json_object_set_new(req, "customer", obj);
    if (!obj || fill_fields(sc, obj, pos + 1, n - 1) != 0)
        goto bad;
    return req;
bad:
    json_decref(req);
    return NULL;
}

static json_t *build_contact(const subcommand_t *sc, int argc, char **argv)
{
    static const char *const verbs[] = {"add", "update", "consent", "usable", NULL};
    static const opt_spec_t consent_opts[] = {
        {"--source", "source", OPT_STRING}, {"--at", "at", OPT_STRING}, {NULL, NULL, 0}};
    const char *verb = verb_of(sc, argc, argv, verbs);
    if (!verb)
        return NULL;
    char cmd[32];
    snprintf(cmd, sizeof(cmd), "contact.%s", verb);
    json_t *req = new_request(cmd);
    char *pos[64];
    bool consent = strcmp(verb, "consent") == 0;
    int n = parse_args(sc, argc - 2, argv + 2, consent ? consent_opts : NULL, req, pos, 64);
    if (n < 0)
        goto bad;
    if (strcmp(verb, "usable") == 0) {
        if (n != 2) {
            fprintf(stderr, "cadencectl contact usable: expected CONTACT CHANNEL\n");
            goto bad;
        }
        json_object_set_new(req, "contact", json_string(pos[0]));
        json_object_set_new(req, "channel", json_string(pos[1]));
        return req;
    }
    if (consent) {
        if (n != 3 || (strcmp(pos[2], "in") != 0 && strcmp(pos[2], "out") != 0)) {
            fprintf(stderr, "cadencectl contact consent: expected CONTACT email|sms in|out\n");
            goto bad;
        }
        json_object_set_new(req, "contact", json_string(pos[0]));
        json_object_set_new(req, "kind", json_string(pos[1]));
        json_object_set_new(req, "opted_in", json_boolean(strcmp(pos[2], "in") == 0));
        return req;
    }
    bool add = strcmp(verb, "add") == 0;
    if (n < (add ? 2 : 1)) {
        fprintf(stderr, "cadencectl contact %s: expected %s\n", verb,
                add ? "ID CUSTOMER [FIELD=VALUE...]" : "ID [FIELD=VALUE...]");
        goto bad;
    }
    json_t *obj = json_pack("{s:s}", "id", pos[0]);
    json_object_set_new(req, "contact", obj);
    if (add)
        json_object_set_new(obj, "customer", json_string(pos[1]));
    if (!obj || fill_fields(sc, obj, pos + (add ? 2 : 1), n - (add ? 2 : 1)) != 0)
        goto bad;
    return req;
bad:
    json_decref(req);
    return NULL;
}

static json_t *build_event(const subcommand_t *sc, int argc, char **argv)
{
    static const char *const verbs[] = {"add", NULL};
    if (!verb_of(sc, argc, argv, verbs))
        return NULL;
    json_t *req = new_request("event.add");
    char *pos[64];
    int n = parse_args(sc, argc - 2, argv + 2, NULL, req, pos, 64);
    if (n < 3) {
        if (n >= 0)
            fprintf(stderr, "cadencectl event add: expected ID CUSTOMER TYPE [FIELD=VALUE...]\n");
        json_decref(req);
        return NULL;
    }
    json_t *obj = json_pack("{s:s, s:s, s:s}", "id", pos[0], "customer", pos[1], "type", pos[2]);
    json_object_set_new(req, "event", obj);
    if (!obj || fill_fields(sc, obj, pos + 3, n - 3) != 0) {
        json_decref(req);
        return NULL;
    }
    if (!json_object_get(obj, "at"))
        json_object_set_new(obj, "at", json_string("now"));
    return req;
}

/* Options only (and at most `max_pos` positionals filling `fields`). */
static json_t *build_with(const subcommand_t *sc, int argc, char **argv, const char *cmd,
                          const opt_spec_t *specs, const char *const *fields, int n_fields)
{
    json_t *req = new_request(cmd);
    char *pos[8];
    int n = parse_args(sc, argc, argv, specs, req, pos, n_fields);
    if (n < 0 || n < n_fields) {
        if (n >= 0)
            fprintf(stderr, "cadencectl %s: missing %s\n", sc->name, fields[n]);
        json_decref(req);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (json_object_set_new(req, fields[i], json_string(pos[i])) != 0) {
            fprintf(stderr, "cadencectl %s: %s is not valid UTF-8\n", sc->name, fields[i]);
            json_decref(req);
            return NULL;
        }
    return req;
}

static json_t *build_calendar(const subcommand_t *sc, int argc, char **argv)
{
    static const opt_spec_t opts[] = {{"--limit", "limit", OPT_INT},
                                      {"--customer", "customer", OPT_STRING},
                                      {"--rule", "rule", OPT_STRING},
                                      {NULL, NULL, 0}};
    return build_with(sc, argc - 1, argv + 1, "calendar", opts, NULL, 0);
}

static json_t *build_why(const subcommand_t *sc, int argc, char **argv)
{
    static const opt_spec_t opts[] = {{"--limit", "limit", OPT_INT}, {NULL, NULL, 0}};
    static const char *const fields[] = {"customer"};
    return build_with(sc, argc - 1, argv + 1, "why", opts, fields, 1);
}

static json_t *build_outbox(const subcommand_t *sc, int argc, char **argv)
{
    static const char *const verbs[] = {"list", "show", "retry", "cancel", NULL};
    static const opt_spec_t list_opts[] = {{"--state", "state", OPT_STRING},
                                           {"--customer", "customer", OPT_STRING},
                                           {"--limit", "limit", OPT_INT},
                                           {NULL, NULL, 0}};
    static const char *const key_field[] = {"key"};
    const char *verb = verb_of(sc, argc, argv, verbs);
    if (!verb)
        return NULL;
    if (strcmp(verb, "list") == 0)
        return build_with(sc, argc - 2, argv + 2, "outbox.list", list_opts, NULL, 0);
    if (strcmp(verb, "cancel") == 0)
        return build_with(sc, argc - 2, argv + 2, "outbox.cancel", NULL, key_field, 1);
    if (strcmp(verb, "show") == 0)
        return build_with(sc, argc - 2, argv + 2, "outbox.show", NULL, key_field, 1);
    /* retry KEY, or retry --dead [--channel C] [--customer ID] [--since T] */
    static const opt_spec_t retry_opts[] = {{"--dead", "dead", OPT_FLAG},
                                            {"--channel", "channel", OPT_STRING},
                                            {"--customer", "customer", OPT_STRING},
                                            {"--since", "since", OPT_STRING},
                                            {NULL, NULL, 0}};
    json_t *req = new_request("outbox.retry");
    char *pos[1];
    int n = parse_args(sc, argc - 2, argv + 2, retry_opts, req, pos, 1);
    bool bulk = json_object_get(req, "dead") != NULL;
    if (n >= 0 && bulk != (n == 0)) {
        fprintf(stderr, "cadencectl outbox retry: expected KEY, or --dead with its filters\n");
        n = -1;
    } else if (n >= 0 && !bulk && json_object_size(req) > 1) {
        fprintf(stderr, "cadencectl outbox retry: --channel, --customer and --since go with "
                        "--dead\n");
        n = -1;
    }
    if (n < 0) {
        json_decref(req);
        return NULL;
    }
    if (bulk) {
        json_object_del(req, "dead");
        json_object_set_new(req, "state", json_string("dead"));
    } else {
        json_object_set_new(req, "key", json_string(pos[0]));
    }
    return req;
}

static json_t *build_suppress(const subcommand_t *sc, int argc, char **argv)
{
    static const char *const verbs[] = {"add", "remove", "list", NULL};
    static const opt_spec_t add_opts[] = {{"--reason", "reason", OPT_STRING}, {NULL, NULL, 0}};
    static const opt_spec_t list_opts[] = {{"--limit", "limit", OPT_INT}, {NULL, NULL, 0}};
    static const char *const address_field[] = {"address"};
    const char *verb = verb_of(sc, argc, argv, verbs);
    if (!verb)
        return NULL;
    if (strcmp(verb, "list") == 0)
        return build_with(sc, argc - 2, argv + 2, "suppression.list", list_opts, NULL, 0);
    bool add = strcmp(verb, "add") == 0;
    return build_with(sc, argc - 2, argv + 2, add ? "suppression.add" : "suppression.remove",
                      add ? add_opts : NULL, address_field, 1);
}

static json_t *build_alerts(const subcommand_t *sc, int argc, char **argv)
{
    static const opt_spec_t opts[] = {
        {"--all", "all", OPT_FLAG}, {"--limit", "limit", OPT_INT}, {NULL, NULL, 0}};
    return build_with(sc, argc - 1, argv + 1, "alerts", opts, NULL, 0);
}

static json_t *build_period(const subcommand_t *sc, int argc, char **argv)
{
    static const opt_spec_t opts[] = {
        {"--since", "since", OPT_STRING}, {"--until", "until", OPT_STRING}, {NULL, NULL, 0}};
    return build_with(sc, argc - 1, argv + 1, sc->name, opts, NULL, 0);
}

/* Prints a list of objects with the chosen columns (key, heading). */
static void print_columns(json_t *list, const char *const *cols)
{
    json_t *rows = json_array();
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        json_t *r = json_object();
        for (int c = 0; cols[c]; c += 2) {
            json_t *v = json_object_get(item, cols[c]);
            json_object_set(r, cols[c + 1], v ? v : json_null());
        }
        json_array_append_new(rows, r);
    }
    if (json_array_size(rows) == 0)
        printf("(none)\n");
    else
        print_table(rows);
    json_decref(rows);
}

static void print_customers(json_t *r)
{
    static const char *const cols[] = {"id",
                                       "ID",
                                       "name",
                                       "NAME",
                                       "stage",
                                       "STAGE",
                                       "segment",
                                       "SEGMENT",
                                       "timezone",
                                       "TIME ZONE",
                                       "paused",
                                       "PAUSED",
                                       "next_eval_local",
                                       "NEXT EVALUATION",
                                       NULL};
    print_columns(json_object_get(r, "customers"), cols);
    if (json_is_true(json_object_get(r, "more")))
        printf("(more: raise --limit or narrow with --stage/--segment)\n");
}

static void print_customer_or_list(json_t *r)
{
    if (json_object_get(r, "customers")) {
        print_customers(r);
        return;
    }
    /* Unix seconds as UTC times, like every other table */
    static const char *const times[] = {"created_at", "updated_at", "next_eval", NULL};
    for (int i = 0; times[i]; i++) {
        json_t *v = json_object_get(r, times[i]);
        if (!json_is_integer(v))
            continue;
        char buf[64];
        format_time(v, buf, sizeof buf);
        json_object_set_new(r, times[i], json_string(buf));
    }
    print_generic(r);
}

static void print_calendar(json_t *r)
{
    static const char *const cols[] = {"in",       "IN",       "due_local", "DUE (CUSTOMER'S TIME)",
                                       "customer", "CUSTOMER", "rule",      "RULE",
                                       "why",      "WHY",      NULL};
    long long now = num(r, "now");
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(r, "entries"), i, e)
    {
        char buf[32];
        long long due = num(e, "due");
        if (due <= now)
            snprintf(buf, sizeof(buf), "now");
        else
            format_duration(due - now, buf, sizeof(buf));
        json_object_set_new(e, "in", json_string(buf));
    }
    print_columns(json_object_get(r, "entries"), cols);
}

static void print_why(json_t *r)
{
    printf("%s (%s), %s, segment %s, time zone %s%s\n", str(r, "id"), str(r, "name"),
           str(r, "stage"), str(r, "segment"), str(r, "timezone"),
           json_is_true(json_object_get(r, "paused")) ? ", PAUSED" : "");
    printf("%s\n", str(r, "summary"));
    json_t *ds = json_object_get(r, "decisions");
    printf("\nDecisions, newest first (times in the customer's zone):\n");
    if (json_array_size(ds) == 0)
        printf("  (none recorded yet)\n");
    size_t i;
    json_t *d;
    json_array_foreach(ds, i, d)
    {
        printf("  %s  %s\n", str(d, "at_local"), str(d, "text"));
    }
    json_t *ts = json_object_get(r, "touches");
    if (json_array_size(ts) > 0) {
        printf("\nTouches:\n");
        json_array_foreach(ts, i, d)
        {
            const char *e = str(d, "last_error");
            printf("  %s  %s by %s to %s: %s", str(d, "decided_local"), str(d, "rule"),
                   str(d, "channel"), str(d, "contact"), str(d, "state"));
            if (json_object_get(d, "due_local"))
                printf(" (%lld attempt%s so far, next %s%s%s)", num(d, "attempts"),
                       num(d, "attempts") == 1 ? "" : "s", str(d, "due_local"),
                       json_object_get(d, "held") ? "; " : "",
                       json_object_get(d, "held") ? str(d, "held") : "");
            printf("%s%s\n", *e && *e != '-' ? " — " : "", *e && *e != '-' ? e : "");
        }
    }
}

/* outbox show: the touch, then each transition it went through. */
static void print_touch_history(json_t *t, json_t *history)
{
    char decided[64], due[64];
    format_time(json_object_get(t, "decided_at"), decided, sizeof decided);
    format_time(json_object_get(t, "due_at"), due, sizeof due);
    printf("touch %lld: %s, %lld attempt%s\n", num(t, "key"), str(t, "state"), num(t, "attempts"),
           num(t, "attempts") == 1 ? "" : "s");
    printf("  customer %s, contact %s, rule %s, channel %s\n", str(t, "customer"),
           *str(t, "contact") ? str(t, "contact") : "-", str(t, "rule"), str(t, "channel"));
    printf("  idempotency key %s\n  decided %s, due %s\n", str(t, "idempotency_key"), decided, due);
    if (json_object_get(t, "held"))
        printf("  %s\n", str(t, "held"));
    static const char *const cols[] = {"when",    "WHEN (UTC)", "state",  "STATE", "attempt",
                                       "ATTEMPT", "detail",     "DETAIL", NULL};
    size_t i;
    json_t *h;
    json_array_foreach(history, i, h)
    {
        char when[64];
        format_time(json_object_get(h, "at"), when, sizeof when);
        json_object_set_new(h, "when", json_string(when));
    }
    printf("\n");
    print_columns(history, cols);
}

static void print_outbox(json_t *r)
{
    static const char *const cols[] = {
        "key",  "KEY",        "state",      "STATE",      "customer", "CUSTOMER",
        "rule", "RULE",       "channel",    "CHANNEL",    "attempts", "ATTEMPTS",
        "next", "NEXT (UTC)", "last_error", "LAST ERROR", NULL};
    json_t *list = json_object_get(r, "touches");
    if (json_object_get(r, "requeued")) {
        printf("%lld dead touches queued again", num(r, "requeued"));
        if (num(r, "expired") > 0)
            printf("; %lld left dead, past their expiry", num(r, "expired"));
        putchar('\n');
        return;
    }
    json_t *history = json_object_get(r, "history");
    if (history) {
        print_touch_history(json_object_get(r, "touch"), history);
        return;
    }
    if (!list) {
        printf("touch %lld: %s\n", num(r, "key"), str(r, "state"));
        return;
    }
    /* When a touch still to send goes: its next attempt, or its first. */
    size_t i;
    json_t *t;
    json_array_foreach(list, i, t)
    {
        const char *state = str(t, "state");
        char next[64] = "-";
        if (strcmp(state, "queued") == 0 || strcmp(state, "retry_wait") == 0)
            format_time(json_object_get(t, "due_at"), next, sizeof next);
        json_object_set_new(t, "next", json_string(next));
    }
    print_columns(list, cols);
    /* Touches due already that do not go: why, once per reason and channel. */
    json_t *reasons = json_object(); /* "channel\treason" -> [first key, count] */
    json_array_foreach(list, i, t)
    {
        const char *held = json_string_value(json_object_get(t, "held"));
        if (!held || !reasons)
            continue;
        char k[512];
        snprintf(k, sizeof k, "%s\t%s", str(t, "channel"), held);
        json_t *e = json_object_get(reasons, k);
        if (e)
            json_array_set_new(e, 1, json_integer(json_integer_value(json_array_get(e, 1)) + 1));
        else
            json_object_set_new(reasons, k, json_pack("[I, I]", num(t, "key"), (json_int_t)1));
    }
    const char *k;
    json_t *e;
    json_object_foreach(reasons, k, e)
    {
        long long more = json_integer_value(json_array_get(e, 1)) - 1;
        const char *tab = strchr(k, '\t');
        printf("touch %lld%s%.0lld%s (channel %.*s) %s\n",
               (long long)json_integer_value(json_array_get(e, 0)), more ? " and " : "", more,
               more ? " more" : "", (int)(tab - k), k, tab + 1);
    }
    json_decref(reasons);
}

static void print_suppress(json_t *r)
{
    json_t *list = json_object_get(r, "suppressions");
    if (!list) {
        printf("%s %s\n", str(r, "address"),
               json_is_true(json_object_get(r, "suppressed")) ? "is suppressed: never contacted"
                                                              : "taken off the suppression list");
        return;
    }
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        char at[64];
        format_time(json_object_get(item, "at"), at, sizeof at);
        json_object_set_new(item, "since", json_string(at));
    }
    static const char *const cols[] = {"address", "ADDRESS", "since", "SINCE (UTC)",
                                       "reason",  "REASON",  NULL};
    print_columns(list, cols);
}

static void print_alerts(json_t *r)
{
    printf("open: %lld content gaps, %lld feedback loops overdue, %lld silent customers, %lld "
           "dead touches, %zu channels not sending\n\n",
           num(r, "open.content_gap"), num(r, "open.loop_overdue"), num(r, "open.silent"),
           num(r, "open.dead_touches"), json_array_size(json_object_get(r, "channels")));
    size_t i;
    json_t *ch;
    json_array_foreach(json_object_get(r, "channels"), i, ch)
    {
        const char *e = str(ch, "last_error");
        char since[64];
        format_time(json_object_get(ch, "since"), since, sizeof since);
        if (strcmp(str(ch, "kind"), "channel_disabled") == 0)
            printf("channel %s (%s): disabled since %s, its touches wait; fix its url or "
                   "credentials and reload: %s\n",
                   str(ch, "channel"), str(ch, "plugin"), since, e);
        else if (strcmp(str(ch, "kind"), "circuit_open") == 0)
            printf("channel %s (%s): circuit %s since %s after %lld failures in a row; its "
                   "touches wait%s%s\n",
                   str(ch, "channel"), str(ch, "plugin"), str(ch, "circuit"), since,
                   num(ch, "consecutive_failures"), *e && *e != '-' ? "; last error: " : "",
                   *e && *e != '-' ? e : "");
        else
            printf("channel %s (%s): %s, circuit %s%s%s\n", str(ch, "channel"), str(ch, "plugin"),
                   str(ch, "kind"), str(ch, "circuit"), *e && *e != '-' ? ", last error: " : "",
                   *e && *e != '-' ? e : "");
    }
    if (json_array_size(json_object_get(r, "channels")) > 0)
        putchar('\n');
    static const char *const cols[] = {"kind", "KIND",   "customer", "CUSTOMER", "rule",
                                       "RULE", "detail", "DETAIL",   NULL};
    if (json_array_size(json_object_get(r, "alerts")) > 0)
        print_columns(json_object_get(r, "alerts"), cols);
    else
        printf("no customer alerts\n");
    json_t *dead = json_object_get(r, "dead_touches");
    if (json_array_size(dead) == 0)
        return;
    printf("\nlatest dead touches (cadencectl outbox list --state dead; outbox retry KEY):\n");
    static const char *const dead_cols[] = {
        "key",     "KEY",      "customer", "CUSTOMER",   "rule",       "RULE", "channel",
        "CHANNEL", "attempts", "ATTEMPTS", "last_error", "LAST ERROR", NULL};
    print_columns(dead, dead_cols);
}

static void format_pct(json_t *v, char *buf, size_t n)
{
    if (json_is_number(v))
        snprintf(buf, n, "%.0f%%", json_number_value(v));
    else
        snprintf(buf, n, "-");
}

static void print_report(json_t *r)
{
    char from[32], to[32], pct[16];
    format_time(json_object_get(r, "from"), from, sizeof(from));
    format_time(json_object_get(r, "to"), to, sizeof(to));
    printf("Playbook report %s .. %s\n", from, to);
    printf("expected = times the rule applied; executed = delivered. A low share is a playbook\n"
           "step that is not happening; 'mostly' names the reason it was suppressed.\n\n");
    printf("%-22s %-13s %8s %8s %6s  %-10s %6s %6s %10s  %s\n", "RULE", "PURPOSE", "EXPECTED",
           "EXECUTED", "SHARE", "", "QUEUED", "FAILED", "SUPPRESSED", "MOSTLY");
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(r, "rules"), i, l)
    {
        char bar[11] = "";
        json_t *p = json_object_get(l, "executed_pct");
        int filled = json_is_number(p) ? (int)(json_number_value(p) / 10.0 + 0.5) : 0;
        for (int k = 0; k < 10; k++)
            bar[k] = json_is_number(p) ? (k < filled ? '#' : '.') : ' ';
        bar[10] = '\0';
        format_pct(p, pct, sizeof(pct));
        const char *top = str(l, "top_reason");
        printf("%-22s %-13s %8lld %8lld %6s  %-10s %6lld %6lld %10lld  %s\n", str(l, "rule"),
               str(l, "purpose"), num(l, "expected"), num(l, "executed"), pct, bar,
               num(l, "pending"), num(l, "failed"), num(l, "suppressed"), *top ? top : "");
    }
    format_pct(json_object_get(json_object_get(r, "totals"), "executed_pct"), pct, sizeof(pct));
    printf("\ntotal: %lld expected, %lld executed (%s), %lld queued, %lld failed, %lld "
           "suppressed\n",
           num(r, "totals.eligible"), num(r, "totals.delivered"), pct, num(r, "totals.pending"),
           num(r, "totals.failed"), num(r, "totals.suppressed"));
    json_t *ratio = json_object_get(r, "give_ask_ratio");
    if (json_is_number(ratio))
        printf("give/ask: %lld value or appreciation touches delivered for %lld asks (%.2f)\n",
               num(r, "give"), num(r, "ask"), json_number_value(ratio));
    else
        printf("give/ask: %lld value or appreciation touches delivered, no asks\n", num(r, "give"));
    printf("silent past max_silence: %lld customers", num(r, "silent.count"));
    json_array_foreach(json_object_get(json_object_get(r, "silent"), "customers"), i, l)
    {
        printf("%s%s", i ? ", " : ": ", json_string_value(l));
    }
    printf("\nfeedback loops open past their SLA: %lld\n", num(r, "open_loops_overdue"));
    json_t *h = json_object_get(r, "holdout");
    if (json_array_size(h) > 0) {
        printf("\nholdout (churn after the decision, treated vs held out):\n");
        json_array_foreach(h, i, l)
        {
            printf("  %-22s treated %lld customers, %lld churned, %lld reactivated; held out "
                   "%lld, %lld churned, %lld reactivated\n",
                   str(l, "rule"), num(l, "treated.customers"), num(l, "treated.churned"),
                   num(l, "treated.reactivated"), num(l, "held_out.customers"),
                   num(l, "held_out.churned"), num(l, "held_out.reactivated"));
        }
    }
}

static void print_holdout(json_t *r)
{
    json_t *rules = json_object_get(r, "rules");
    if (json_array_size(rules) == 0) {
        printf("no rule holds customers out (set holdout = 0.05; on a rule to measure it)\n");
        return;
    }
    printf("%-22s %8s  %-28s  %-28s  %s\n", "RULE", "HELD OUT", "TREATED: CUST CHURN REACT",
           "HELD OUT: CUST CHURN REACT", "CHURN POINTS SAVED");
    size_t i;
    json_t *l;
    json_array_foreach(rules, i, l)
    {
        char pct[16], saved[16];
        format_pct(json_object_get(l, "holdout_pct"), pct, sizeof(pct));
        json_t *s = json_object_get(l, "churn_pct_points_saved");
        if (json_is_number(s))
            snprintf(saved, sizeof(saved), "%+.1f", json_number_value(s));
        else
            snprintf(saved, sizeof(saved), "-");
        printf("%-22s %8s  %9lld %8lld %9lld  %9lld %8lld %9lld  %s\n", str(l, "rule"), pct,
               num(l, "treated.customers"), num(l, "treated.churned"),
               num(l, "treated.reactivated"), num(l, "held_out.customers"),
               num(l, "held_out.churned"), num(l, "held_out.reactivated"), saved);
    }
}

static void print_metrics(json_t *r)
{
    fputs(str(r, "text"), stdout);
}

static void print_plugins(json_t *r)
{
    static const char *const cols[] = {
        "channel", "CHANNEL", "plugin",      "PLUGIN",      "loaded",    "LOADED",
        "version", "VERSION", "concurrency", "CONCURRENCY", "in_flight", "IN FLIGHT",
        "stuck",   "STUCK",   "delivered",   "DELIVERED",   "failed",    "FAILED",
        "sending", "SENDING", "error",       "ERROR",       NULL};
    /* Whether the dispatcher sends on the channel: its circuit, or disabled. */
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(r, "plugins"), i, p)
    {
        const char *circuit = str(p, "circuit");
        json_object_set_new(p, "sending",
                            json_string(json_is_true(json_object_get(p, "disabled")) ? "disabled"
                                        : strcmp(circuit, "closed") == 0             ? "yes"
                                        : strcmp(circuit, "-") == 0                  ? "-"
                                                                                     : circuit));
    }
    print_columns(json_object_get(r, "plugins"), cols);
}

/* ---- multi-request subcommands: import, simulate -------------------------- */

/* Sends one request on an open connection and returns the reply object,
 * or NULL after a message. */
static json_t *call(const ctl_t *ctl, int fd, json_t *req)
{
    char *line = json_dumps(req, JSON_COMPACT);
    if (!line) {
        fprintf(stderr, "cadencectl: cannot encode the request\n");
        return NULL;
    }
    size_t n = strlen(line);
    line[n] = '\n';
    int rc = send_all(fd, line, n + 1);
    free(line);
    if (rc != 0) {
        fprintf(stderr, "cadencectl: cannot send to %s: %s\n", ctl->socket_path, strerror(errno));
        return NULL;
    }
    char *text = read_line(fd, ctl->timeout_ms, ctl->socket_path);
    if (!text)
        return NULL;
    json_error_t jerr;
    json_t *reply = json_loads(text, 0, &jerr);
    free(text);
    if (!json_is_object(reply)) {
        fprintf(stderr, "cadencectl: the reply from %s is not a JSON object\n", ctl->socket_path);
        json_decref(reply);
        return NULL;
    }
    return reply;
}

static bool reply_ok(const char *name, json_t *reply)
{
    if (json_is_true(json_object_get(reply, "ok")))
        return true;
    json_t *e = json_object_get(reply, "error");
    fprintf(stderr, "cadencectl %s: %s: %s\n", name, str(e, "code"), str(e, "message"));
    return false;
}

/* Bytes a string takes once JSON-encoded (quotes included). */
static size_t json_encoded_len(const char *s, size_t n)
{
    size_t len = 2;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\' || ch == '\n' || ch == '\r' || ch == '\t' || ch == '\b' ||
            ch == '\f')
            len += 2;
        else if (ch < 0x20 || ch == 0x7f)
            len += 6;
        else
            len += 1;
    }
    return len + 1; /* the comma */
}

typedef struct import_totals {
    long long records, accepted, rejected, duplicates;
} import_totals_t;

/* Requests sent before their replies are read: the daemon imports one chunk
 * while the next is read and encoded here. */
#define IMPORT_WINDOW 2

typedef struct import_run {
    const ctl_t *ctl;
    int fd;
    import_totals_t tot;
    int outstanding;
    int status;
    long long max_line; /* from the daemon's first reply */
    char *in;           /* replies received and not yet read: several may come at once */
    size_t in_len, in_cap;
} import_run_t;

/* The next reply line (malloc'd), reading as much as needed; NULL with a
 * message on timeout, EOF or error. */
static char *import_next_line(import_run_t *r)
{
    for (;;) {
        char *nl = r->in ? memchr(r->in, '\n', r->in_len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - r->in);
            char *line = malloc(n + 1);
            if (!line)
                return NULL;
            memcpy(line, r->in, n);
            line[n] = '\0';
            memmove(r->in, nl + 1, r->in_len - n - 1);
            r->in_len -= n + 1;
            return line;
        }
        if (r->in_len + 4096 > r->in_cap) {
            size_t cap = r->in_cap ? r->in_cap * 2 : 65536;
            char *nb = cap <= REPLY_MAX ? realloc(r->in, cap) : NULL;
            if (!nb) {
                fprintf(stderr, "cadencectl import: reply too long\n");
                return NULL;
            }
            r->in = nb;
            r->in_cap = cap;
        }
        struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, r->ctl->timeout_ms);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr == 0) {
            fprintf(stderr, "cadencectl: no reply from %s within %d s\n", r->ctl->socket_path,
                    r->ctl->timeout_ms / 1000);
            return NULL;
        }
        ssize_t got = pr < 0 ? -1 : recv(r->fd, r->in + r->in_len, r->in_cap - r->in_len, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            fprintf(stderr, "cadencectl: %s closed the connection before replying\n",
                    r->ctl->socket_path);
            return NULL;
        }
        r->in_len += (size_t)got;
    }
}

/* Reads one chunk's reply, prints its rejected rows and adds its counts. */
static void import_read_reply(import_run_t *r)
{
    char *text = import_next_line(r);
    r->outstanding--;
    json_error_t jerr;
    json_t *reply = text ? json_loads(text, 0, &jerr) : NULL;
    free(text);
    if (!json_is_object(reply)) {
        if (text)
            fprintf(stderr, "cadencectl import: the reply is not a JSON object\n");
        json_decref(reply);
        r->status = EXIT_CONNECT;
        return;
    }
    if (!reply_ok("import", reply)) {
        json_decref(reply);
        if (r->status == EXIT_OK)
            r->status = EXIT_ERROR;
        return;
    }
    json_t *res = json_object_get(reply, "result");
    r->tot.records += num(res, "records");
    r->tot.accepted += num(res, "accepted");
    r->tot.rejected += num(res, "rejected");
    r->tot.duplicates += num(res, "duplicates");
    r->max_line = num(res, "max_line");
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(res, "errors"), i, e)
    {
        fprintf(stderr, "%s\n", str(e, "message"));
    }
    if (json_is_true(json_object_get(res, "errors_truncated")))
        fprintf(stderr, "(more rejected rows from line %lld on are not listed)\n",
                num(res, "first_line"));
    json_decref(reply);
}

/* Sends one chunk; reads a reply first when the window is full. */
static void import_send(import_run_t *r, json_t *req)
{
    while (r->status == EXIT_OK && r->outstanding >= IMPORT_WINDOW)
        import_read_reply(r);
    if (r->status != EXIT_OK)
        return;
    char *line = json_dumps(req, JSON_COMPACT);
    if (!line) {
        fprintf(stderr, "cadencectl import: cannot encode a request\n");
        r->status = EXIT_ERROR;
        return;
    }
    size_t n = strlen(line);
    line[n] = '\n';
    if (send_all(r->fd, line, n + 1) != 0) {
        fprintf(stderr, "cadencectl import: cannot send to %s: %s\n", r->ctl->socket_path,
                strerror(errno));
        r->status = EXIT_CONNECT;
    } else {
        r->outstanding++;
    }
    free(line);
}

static json_t *import_request(const char *kind, bool csv, const char *source, long long first,
                              const char *header, json_t *lines)
{
    json_t *req = json_pack("{s:s, s:s, s:s, s:s, s:I, s:O}", "cmd", "import", "kind", kind,
                            "format", csv ? "csv" : "jsonl", "source", source, "first_line",
                            (json_int_t)first, "lines", lines);
    if (req && csv)
        json_object_set_new(req, "header", json_string(header ? header : ""));
    return req;
}

static int run_import(const ctl_t *ctl, const subcommand_t *sc, int argc, char **argv)
{
    static const opt_spec_t opts[] = {{"--format", "format", OPT_STRING},
                                      {"--chunk-bytes", "chunk_bytes", OPT_INT},
                                      {NULL, NULL, 0}};
    json_t *o = json_object();
    char *pos[2];
    int n = parse_args(sc, argc - 1, argv + 1, opts, o, pos, 2);
    if (n != 2) {
        if (n >= 0)
            fprintf(stderr, "cadencectl import: expected KIND FILE\n");
        json_decref(o);
        usage_one(stderr, sc);
        return EXIT_USAGE;
    }
    const char *kind = pos[0], *path = pos[1];
    const char *format = json_string_value(json_object_get(o, "format"));
    json_t *cb = json_object_get(o, "chunk_bytes");
    long long chunk_bytes = json_is_integer(cb) ? json_integer_value(cb) : 0;
    if (!format) {
        const char *dot = strrchr(path, '.');
        format = dot && (strcmp(dot, ".csv") == 0 || strcmp(dot, ".CSV") == 0) ? "csv" : "jsonl";
    }
    bool csv = strcmp(format, "csv") == 0;
    if (!csv && strcmp(format, "jsonl") != 0) {
        fprintf(stderr, "cadencectl import: --format: expected csv or jsonl, got \"%s\"\n", format);
        json_decref(o);
        return EXIT_USAGE;
    }
    if (cb && (chunk_bytes < 1024 || chunk_bytes > 16 * 1024 * 1024)) {
        fprintf(stderr, "cadencectl import: --chunk-bytes: expected 1024 to 16777216\n");
        json_decref(o);
        return EXIT_USAGE;
    }
    FILE *in = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!in) {
        fprintf(stderr, "cadencectl import: cannot open %s: %s\n", path, strerror(errno));
        json_decref(o);
        return EXIT_ERROR;
    }
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    import_run_t run = {.ctl = ctl, .fd = connect_socket(ctl), .status = EXIT_OK};
    if (run.fd < 0) {
        if (in != stdin)
            fclose(in);
        json_decref(o);
        return EXIT_CONNECT;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char *line = NULL, *header = NULL;
    size_t cap = 0;
    ssize_t len;
    long long lineno = 0, first = 0, local_rejects = 0;
    size_t base_bytes = 200 + strlen(base) + strlen(kind), bytes = 0;
    json_t *lines = json_array();
    bool in_quotes = false, probed = false;
    while (run.status == EXIT_OK && (len = getline(&line, &cap, in)) >= 0) {
        lineno++;
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        if (csv && lineno == 1) {
            header = strdup(line);
            base_bytes += json_encoded_len(line, (size_t)len);
            continue;
        }
        if (!probed) {
            /* An empty chunk checks kind, format and header and tells how long a
             * request line may be; the chunks are sized from it. */
            json_t *req = import_request(kind, csv, base, lineno, header, lines);
            import_send(&run, req);
            json_decref(req);
            while (run.status == EXIT_OK && run.outstanding > 0)
                import_read_reply(&run);
            probed = true;
            if (!cb) {
                long long m = run.max_line > 0 ? run.max_line : 65536;
                chunk_bytes = m - 256 < 4 * 1024 * 1024 ? m - 256 : 4 * 1024 * 1024;
            }
            if (run.status != EXIT_OK)
                break;
        }
        size_t enc = json_encoded_len(line, (size_t)len);
        bool nul = memchr(line, '\0', (size_t)len) != NULL;
        if (nul || base_bytes + enc > (size_t)chunk_bytes) {
            fprintf(stderr, "%s:%lld: %s; skipped\n", base, lineno,
                    nul ? "the line holds a NUL byte"
                        : "the line is longer than one request may be (control.max_line)");
            local_rejects++;
            continue;
        }
        if (!in_quotes && json_array_size(lines) > 0 &&
            (base_bytes + bytes + enc > (size_t)chunk_bytes || json_array_size(lines) >= 50000)) {
            json_t *req = import_request(kind, csv, base, first, header, lines);
            import_send(&run, req);
            json_decref(req);
            json_array_clear(lines);
            bytes = 0;
        }
        if (json_array_size(lines) == 0)
            first = lineno;
        json_t *s = json_stringn(line, (size_t)len);
        if (!s) {
            fprintf(stderr, "%s:%lld: the line is not valid UTF-8; skipped\n", base, lineno);
            local_rejects++;
            continue;
        }
        json_array_append_new(lines, s);
        bytes += enc;
        if (csv)
            for (ssize_t k = 0; k < len; k++)
                if (line[k] == '"')
                    in_quotes = !in_quotes;
    }
    if (run.status == EXIT_OK && json_array_size(lines) > 0) {
        json_t *req = import_request(kind, csv, base, first, header, lines);
        import_send(&run, req);
        json_decref(req);
    }
    while (run.outstanding > 0 && run.status != EXIT_CONNECT)
        import_read_reply(&run);
    if (ferror(in)) {
        fprintf(stderr, "cadencectl import: reading %s: %s\n", path, strerror(errno));
        run.status = EXIT_ERROR;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    import_totals_t tot = run.tot;
    tot.rejected += local_rejects;
    tot.records += local_rejects;
    double rate = secs > 0 ? (double)tot.records / secs : 0.0;
    if (ctl->json)
        printf("{\"file\": \"%s\", \"kind\": \"%s\", \"records\": %lld, \"accepted\": %lld, "
               "\"rejected\": %lld, \"duplicates\": %lld, \"seconds\": %.3f, \"rows_per_second\": "
               "%.0f}\n",
               base, kind, tot.records, tot.accepted, tot.rejected, tot.duplicates, secs, rate);
    else
        printf("%s: %lld %s accepted, %lld rejected, %lld duplicates in %.2f s (%.0f rows/s)\n",
               path, tot.accepted, kind, tot.rejected, tot.duplicates, secs, rate);
    free(line);
    free(header);
    json_decref(lines);
    json_decref(o);
    close(run.fd);
    free(run.in);
    if (in != stdin)
        fclose(in);
    if (run.status == EXIT_OK && tot.rejected > 0)
        return EXIT_ERROR;
    return run.status;
}

static int run_simulate(const ctl_t *ctl, const subcommand_t *sc, int argc, char **argv)
{
    static const opt_spec_t opts[] = {
        {"--days", "days", OPT_INT}, {"--customer", "customer", OPT_STRING}, {NULL, NULL, 0}};
    json_t *req = new_request("simulate");
    if (parse_args(sc, argc - 1, argv + 1, opts, req, NULL, 0) < 0 ||
        !json_object_get(req, "days")) {
        if (!json_object_get(req, "days"))
            fprintf(stderr, "cadencectl simulate: --days N is required\n");
        json_decref(req);
        usage_one(stderr, sc);
        return EXIT_USAGE;
    }
    if (ctl->json)
        json_object_set_new(req, "json", json_true());
    int fd = connect_socket(ctl);
    if (fd < 0) {
        json_decref(req);
        return EXIT_CONNECT;
    }
    json_t *reply = call(ctl, fd, req);
    json_decref(req);
    if (!reply || !reply_ok("simulate", reply)) {
        json_decref(reply);
        close(fd);
        return reply ? EXIT_ERROR : EXIT_CONNECT;
    }
    long long job = num(json_object_get(reply, "result"), "job");
    json_decref(reply);
    long long offset = 0;
    int status = EXIT_CONNECT;
    for (;;) {
        json_t *q = json_pack("{s:s, s:I, s:I}", "cmd", "simulate.output", "job", (json_int_t)job,
                              "offset", (json_int_t)offset);
        reply = call(ctl, fd, q);
        json_decref(q);
        if (!reply)
            break;
        if (!reply_ok("simulate", reply)) {
            json_decref(reply);
            status = EXIT_ERROR;
            break;
        }
        json_t *res = json_object_get(reply, "result");
        json_t *out = json_object_get(res, "output");
        fwrite(json_string_value(out), 1, json_string_length(out), stdout);
        fflush(stdout);
        long long next = num(res, "offset");
        if (json_is_true(json_object_get(res, "finished"))) {
            const char *errors = str(res, "errors");
            if (*errors && strcmp(errors, "-") != 0)
                fputs(errors, stderr);
            if (json_is_true(json_object_get(res, "truncated")))
                fprintf(stderr, "cadencectl simulate: the output was cut at the daemon's limit\n");
            status = num(res, "exit_status") == 0 ? EXIT_OK : EXIT_ERROR;
            json_decref(reply);
            break;
        }
        json_decref(reply);
        if (next == offset)
            usleep(100 * 1000);
        offset = next;
    }
    close(fd);
    return status;
}

/* One entry per subcommand. Most need only a name, a summary, the daemon's
 * command and the request fields their arguments fill; build and print
 * default to build_fields and print_generic. */
static const subcommand_t subcommands[] = {
    {"status",
     "show the daemon's state, store counts and scheduler counters",
     "",
     NULL,
     print_status,
     NULL,
     {NULL},
     NULL},
    {"reload",
     "re-read the configuration (admin; like SIGHUP); prints every error if rejected",
     "",
     NULL,
     print_reload,
     NULL,
     {NULL},
     NULL},
    {"commands",
     "list the commands the daemon answers and the role each needs",
     "",
     NULL,
     print_help_reply,
     "help",
     {NULL},
     NULL},
    {"raw",
     "send one request object as given and print the result",
     "'{\"cmd\": \"NAME\", ...}'",
     build_raw,
     NULL,
     NULL,
     {NULL},
     NULL},
    {"customer",
     "add, change, show or list customers (add/update: admin)",
     "add ID [FIELD=VALUE...] | update ID [FIELD=VALUE...] | show ID |\n"
     "       list [--stage STAGE] [--segment SEGMENT] [--limit N]\n"
     "  FIELDs: name, timezone, stage, segment, interests=a,b, attributes=JSON, created_at,\n"
     "  paused=true|false",
     build_customer,
     print_customer_or_list,
     NULL,
     {NULL},
     NULL},
    {"contact",
     "add or change a contact, record a consent, or clear an unusable mark (admin)",
     "add ID CUSTOMER [FIELD=VALUE...] | update ID [FIELD=VALUE...] |\n"
     "       consent CONTACT email|sms in|out [--source TEXT] [--at TIME] |\n"
     "       usable CONTACT CHANNEL\n"
     "  FIELDs: name, first_name, roles=a,b, email, phone (E.164), customer, consent=JSON;\n"
     "  email= or phone= (empty) removes that address",
     build_contact,
     NULL,
     NULL,
     {NULL},
     NULL},
    {"event",
     "record an event; its customer is evaluated at once (admin)",
     "add ID CUSTOMER TYPE [at=TIME] [data=JSON]\n"
     "  TIME: 2026-03-08T09:30:00Z, 2026-03-08, now, now-2d (default now)",
     build_event,
     NULL,
     NULL,
     {NULL},
     NULL},
    {"import",
     "stream a CSV or JSONL file of customers, contacts or events to the daemon (admin)",
     "customers|contacts|events FILE [--format csv|jsonl] [--chunk-bytes N]\n"
     "  Rows go in chunks of at most --chunk-bytes (default 60000, below the daemon's\n"
     "  control.max_line); bad rows are printed as FILE:LINE: and skipped, good rows kept.\n"
     "  FILE - reads standard input. Exit status 1 when any row was rejected.",
     NULL,
     NULL,
     NULL,
     {NULL},
     run_import},
    {"calendar",
     "who is due next, and the pending verdict that explains it",
     "[--limit N] [--customer ID] [--rule RULE]",
     build_calendar,
     print_calendar,
     NULL,
     {NULL},
     NULL},
    {"why",
     "a customer's decision trace in plain sentences, newest first",
     "CUSTOMER [--limit N]",
     build_why,
     print_why,
     NULL,
     {NULL},
     NULL},
    {"simulate",
     "forecast the next N days of touches without sending anything",
     "--days N [--customer ID]",
     NULL,
     NULL,
     NULL,
     {NULL},
     run_simulate},
    {"pause",
     "pause a customer: nothing is sent until resume (admin)",
     "",
     NULL,
     NULL,
     NULL,
     {"customer"},
     NULL},
    {"resume", "resume a paused customer (admin)", "", NULL, NULL, NULL, {"customer"}, NULL},
    {"outbox",
     "list touches, show one with its history, send a dead one again or cancel one "
     "(retry/cancel: admin)",
     "list [--state STATE] [--customer ID] [--limit N] | show KEY | retry KEY | cancel KEY |\n"
     "       retry --dead [--channel NAME] [--customer ID] [--since TIME]\n"
     "  STATE: queued, in_flight, retry_wait, delivered, dead, cancelled\n"
     "  retry --dead: every dead touch (of that channel/customer, dead since TIME) again",
     build_outbox,
     print_outbox,
     NULL,
     {NULL},
     NULL},
    {"suppress",
     "the global suppression list: addresses never contacted (add/remove: admin)",
     "add ADDRESS [--reason TEXT] | remove ADDRESS | list [--limit N]\n"
     "  ADDRESS: an email address or an E.164 phone number",
     build_suppress,
     print_suppress,
     NULL,
     {NULL},
     NULL},
    {"alerts",
     "content gaps, overdue feedback loops, silent customers, dead touches",
     "[--all] [--limit N]",
     build_alerts,
     print_alerts,
     NULL,
     {NULL},
     NULL},
    {"report",
     "per rule: expected vs executed touches, suppressions by reason, give/ask, silence",
     "[--since TIME] [--until TIME]   (default: the last 30 days; TIME as for event)",
     build_period,
     print_report,
     NULL,
     {NULL},
     NULL},
    {"holdout",
     "churn and reactivation of treated vs held-out customers, per rule",
     "[--since TIME] [--until TIME]",
     build_period,
     print_holdout,
     NULL,
     {NULL},
     NULL},
    {"plugins",
     "the channels, their plugins and counters",
     "",
     NULL,
     print_plugins,
     NULL,
     {NULL},
     NULL},
    {"metrics",
     "Prometheus text exposition of the daemon's counters",
     "",
     NULL,
     print_metrics,
     NULL,
     {NULL},
     NULL},
};

static const subcommand_t *find_subcommand(const char *name)
{
    for (size_t i = 0; i < CAD_ARRAY_LEN(subcommands); i++)
        if (strcmp(subcommands[i].name, name) == 0)
            return &subcommands[i];
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: cadencectl [OPTIONS] COMMAND [ARGS]\n"
            "Talks to cadenced over its control socket.\n"
            "\n"
            "Options:\n"
            "  -s, --socket PATH   control socket (default $CADENCE_SOCKET or " DEFAULT_SOCKET ")\n"
            "  -j, --json          print the raw JSON result instead of a table\n"
            "  -t, --timeout SEC   wait at most SEC seconds for the reply (default 30)\n"
            "  -h, --help          print this help; \"cadencectl help COMMAND\" for one command\n"
            "  -V, --version       print the version\n"
            "\n"
            "Commands:\n");
    for (size_t i = 0; i < CAD_ARRAY_LEN(subcommands); i++)
        fprintf(out, "  %-10s %s\n", subcommands[i].name, subcommands[i].summary);
    fprintf(out, "\nExit status: 0 ok, 1 error reply, 2 usage error, 3 cannot connect.\n");
}

static void usage_one(FILE *out, const subcommand_t *sc)
{
    char args[2048] = "";
    if (*sc->usage) {
        snprintf(args, sizeof(args), " %s", sc->usage);
    } else {
        size_t len = 0;
        for (int i = 0; i < MAX_FIELDS && sc->fields[i]; i++) {
            len += (size_t)snprintf(args + len, sizeof(args) - len, " ");
            for (const char *p = sc->fields[i]; *p && len + 1 < sizeof(args); p++)
                args[len++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
            args[len] = '\0';
        }
    }
    fprintf(out, "Usage: cadencectl [--socket PATH] [--json] %s%s\n%s\n", sc->name, args,
            sc->summary);
}

/* ---- the exchange -------------------------------------------------------- */

static int connect_socket(const ctl_t *ctl)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(ctl->socket_path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "cadencectl: cannot connect to %s: path too long\n", ctl->socket_path);
        return -1;
    }
    strcpy(sa.sun_path, ctl->socket_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr,
                "cadencectl: cannot connect to %s: %s (is cadenced running? use --socket or "
                "$CADENCE_SOCKET)\n",
                ctl->socket_path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads one reply line; returns a malloc'd string or NULL with a message. */
static char *read_line(int fd, int timeout_ms, const char *path)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, timeout_ms);
        if (pr == 0) {
            fprintf(stderr, "cadencectl: no reply from %s within %d s\n", path, timeout_ms / 1000);
            break;
        }
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (len + 4096 > cap) {
            if (cap >= REPLY_MAX) {
                fprintf(stderr, "cadencectl: reply from %s longer than %d bytes\n", path,
                        REPLY_MAX);
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
        ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            fprintf(stderr, "cadencectl: %s closed the connection before replying%s%s\n", path,
                    r < 0 ? ": " : "", r < 0 ? strerror(errno) : "");
            break;
        }
        char *nl = memchr(buf + len, '\n', (size_t)r);
        len += (size_t)r;
        if (nl) {
            *nl = '\0';
            return buf;
        }
    }
    free(buf);
    return NULL;
}

static int exchange(const ctl_t *ctl, const subcommand_t *sc, json_t *req)
{
    char *line = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!line) {
        fprintf(stderr, "cadencectl: cannot encode the request\n");
        return EXIT_USAGE;
    }
    int fd = connect_socket(ctl);
    if (fd < 0) {
        free(line);
        return EXIT_CONNECT;
    }
    size_t n = strlen(line);
    line[n] = '\n'; /* replaces the terminator; sent with its length */
    int rc = send_all(fd, line, n + 1);
    free(line);
    if (rc != 0) {
        fprintf(stderr, "cadencectl: cannot send to %s: %s\n", ctl->socket_path, strerror(errno));
        close(fd);
        return EXIT_CONNECT;
    }
    char *text = read_line(fd, ctl->timeout_ms, ctl->socket_path);
    close(fd);
    if (!text)
        return EXIT_CONNECT;
    json_error_t jerr;
    json_t *reply = json_loads(text, 0, &jerr);
    free(text);
    if (!json_is_object(reply)) {
        fprintf(stderr, "cadencectl: the reply from %s is not a JSON object: %s\n",
                ctl->socket_path, reply ? "wrong type" : jerr.text);
        json_decref(reply);
        return EXIT_ERROR;
    }
    int status = EXIT_OK;
    if (json_is_true(json_object_get(reply, "ok"))) {
        json_t *result = json_object_get(reply, "result");
        if (ctl->json) {
            char *s = json_dumps(result, JSON_INDENT(2) | JSON_ENCODE_ANY | JSON_SORT_KEYS);
            printf("%s\n", s ? s : "null");
            free(s);
        } else {
            (sc->print ? sc->print : print_generic)(result);
        }
    } else {
        json_t *error = json_object_get(reply, "error");
        if (ctl->json) {
            char *s = json_dumps(error, JSON_INDENT(2) | JSON_ENCODE_ANY);
            fprintf(stderr, "%s\n", s ? s : "null");
            free(s);
        } else {
            fprintf(stderr, "cadencectl %s: %s: %s\n", sc->name, str(error, "code"),
                    str(error, "message"));
            size_t i;
            json_t *d;
            json_array_foreach(json_object_get(error, "details"), i, d)
            {
                fprintf(stderr, "  ");
                print_scalar(stderr, d);
                fputc('\n', stderr);
            }
        }
        status = EXIT_ERROR;
    }
    json_decref(reply);
    return status;
}

int main(int argc, char **argv)
{
    setlocale(LC_CTYPE, ""); /* character widths of the terminal's encoding */
    static const struct option options[] = {
        {"socket", required_argument, NULL, 's'},  {"json", no_argument, NULL, 'j'},
        {"timeout", required_argument, NULL, 't'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},       {NULL, 0, NULL, 0},
    };
    const char *env = getenv("CADENCE_SOCKET");
    ctl_t ctl = {.socket_path = env && *env ? env : DEFAULT_SOCKET, .timeout_ms = 30000};
    int c;
    /* "+": stop at the subcommand, whose own options follow it. */
    while ((c = getopt_long(argc, argv, "+s:jt:hV", options, NULL)) != -1) {
        switch (c) {
        case 's': ctl.socket_path = optarg; break;
        case 'j': ctl.json = true; break;
        case 't': {
            char *end;
            long t = strtol(optarg, &end, 10);
            if (*end || t <= 0 || t > 3600) {
                fprintf(stderr,
                        "cadencectl: --timeout: expected seconds from 1 to 3600, got "
                        "\"%s\"\n",
                        optarg);
                return EXIT_USAGE;
            }
            ctl.timeout_ms = (int)t * 1000;
            break;
        }
        case 'h': usage(stdout); return EXIT_OK;
        case 'V': printf("cadencectl %s\n", CADENCE_VERSION); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "cadencectl: no command given\n");
        usage(stderr);
        return EXIT_USAGE;
    }
    int sargc = argc - optind;
    char **sargv = argv + optind;
    if (strcmp(sargv[0], "help") == 0) {
        if (sargc == 1) {
            usage(stdout);
            return EXIT_OK;
        }
        const subcommand_t *sc = find_subcommand(sargv[1]);
        if (!sc) {
            fprintf(stderr, "cadencectl: unknown command \"%s\"\n", sargv[1]);
            return EXIT_USAGE;
        }
        usage_one(stdout, sc);
        return EXIT_OK;
    }
    const subcommand_t *sc = find_subcommand(sargv[0]);
    if (!sc) {
        fprintf(stderr, "cadencectl: unknown command \"%s\"; \"cadencectl --help\" lists them\n",
                sargv[0]);
        return EXIT_USAGE;
    }
    for (int i = 1; i < sargc; i++) {
        if (strcmp(sargv[i], "--help") == 0 || strcmp(sargv[i], "-h") == 0) {
            usage_one(stdout, sc);
            return EXIT_OK;
        }
        if (strcmp(sargv[i], "--json") == 0) { /* accepted after the command too */
            ctl.json = true;
            memmove(&sargv[i], &sargv[i + 1], (size_t)(sargc - i - 1) * sizeof(*sargv));
            sargc--;
            i--;
        }
    }
    if (sc->run)
        return sc->run(&ctl, sc, sargc, sargv);
    json_t *req = sc->build ? sc->build(sc, sargc, sargv) : build_fields(sc, sargc, sargv);
    if (!req) {
        usage_one(stderr, sc);
        return EXIT_USAGE;
    }
    return exchange(&ctl, sc, req);
}
