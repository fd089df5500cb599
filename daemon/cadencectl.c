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
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

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
            size_t w = json_is_string(v) ? strlen(json_string_value(v)) : text ? strlen(text) : 1;
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
            printf("%-*s%s", c + 1 < n_cols ? (int)width[c] : 0, shown,
                   c + 1 < n_cols ? "  " : "\n");
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
        row("open alerts", "%lld", num(counts, "alerts_open"));
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

static void print_reload(json_t *r)
{
    printf("reloaded %s\n", str(r, "config"));
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
     {NULL}},
    {"reload",
     "re-read the configuration (admin; like SIGHUP); prints every error if rejected",
     "",
     NULL,
     print_reload,
     NULL,
     {NULL}},
    {"commands",
     "list the commands the daemon answers and the role each needs",
     "",
     NULL,
     print_help_reply,
     "help",
     {NULL}},
    {"raw",
     "send one request object as given and print the result",
     "'{\"cmd\": \"NAME\", ...}'",
     build_raw,
     NULL,
     NULL,
     {NULL}},
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
    char args[256] = "";
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
    json_t *req = sc->build ? sc->build(sc, sargc, sargv) : build_fields(sc, sargc, sargv);
    if (!req) {
        usage_one(stderr, sc);
        return EXIT_USAGE;
    }
    return exchange(&ctl, sc, req);
}
