/*
 * plugin_host.c — loading channel plugins and running their deliveries.
 *
 * Each configured channel gets one cad_plugin_env (the opaque handle the
 * plugin sees): its dlopen handle, the checked descriptor, the settings
 * resolved against the option table, the plugin's instance, a transport lane
 * and counters. Loading checks everything before calling into the plugin —
 * the ABI major, the descriptor size, the name, the callbacks, each setting
 * — so a bad plugin or a typo costs one log line and that channel, never the
 * daemon.
 *
 * A send is a job: the touch copied into one allocation, the template
 * rendered, then either a transfer prepared by the plugin and run by the
 * transport, or a uv_queue_work() job calling the plugin's blocking send()
 * (with the host's own per-channel queue, since the thread pool has none).
 * Outcomes decided before anything ran (render or prepare failures) are
 * reported from a 0 ms timer so a completion never runs inside the caller's
 * send call.
 *
 * A blocking job gets the channel's timeout from the moment it is handed to
 * libuv's thread pool, as a transfer gets it from its start (waiting in the
 * channel's own queue does not count): a watchdog timer reports one still
 * inside send() past it as a retry, and cancels one still waiting for a
 * pool thread, which is reported as not started. A thread cannot be stopped,
 * so a job abandoned inside send() keeps its thread and its slot of the
 * channel's concurrency until send() returns; its late outcome is logged
 * and dropped (the touch was already given back, and is sent again with
 * the same idempotency key). While every slot of a channel is held that
 * way, its waiting and new jobs are reported as retries at once instead of
 * waiting behind them.
 */
#include "plugin_host.h"

#include "log.h"
#include "plugin_object.h"
#include "template.h"
#include "transport.h"
#include "units.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SECRET_MAX         (64 * 1024)
#define DEFAULT_TIMEOUT_MS 30000
#define WATCHDOG_MS        200 /* how often blocking jobs are checked against their timeout */

typedef struct job job_t;

struct cad_plugin_env {
    cad_plugin_host_t *host;
    int index;
    /* Copies: an old host outlives its config after a reload while sends
     * it started finish. */
    char channel[CAD_NAME_MAX];
    char plugin[CAD_NAME_MAX];
    enum cad_plugin_address address;
    char *path;
    char *error;            /* why not loaded; NULL when loaded */
    bool secret_unreadable; /* the latest secret read failed for want of the file */
    cad_plugin_object_t *object;
    const cad_plugin_descriptor_t *desc;
    void *instance;
    char **values; /* per option of desc->options: validated text or NULL */
    int n_options;
    int lane;
    uint32_t concurrency;
    int64_t timeout_ms;
    int blocking_in_flight;
    int stuck;  /* of those, abandoned past the timeout: still inside send() */
    int active; /* jobs of this channel not yet completed, queued ones included */
    job_t *queue_head, *queue_tail; /* blocking jobs waiting for a slot */
    int queued;
    int64_t delivered, retried, failed;
};

struct cad_plugin_host {
    uv_loop_t *loop;
    /* The configuration, while the channels load only: a reload frees it
     * while this host may still be closing. What plugins ask for later is
     * copied. */
    const cad_config_t *cfg;
    char *state_dir;       /* copy; NULL for "." */
    char *credentials_dir; /* copy; NULL when none is configured */
    cad_transport_t *transport;
    struct cad_plugin_env envs[CAD_MAX_CHANNELS];
    int n_envs;
    uv_timer_t soon; /* reports outcomes decided without running anything */
    job_t *soon_head, *soon_tail;
    uv_timer_t watchdog; /* runs while blocking jobs are timed */
    job_t *timed;        /* blocking jobs inside send(), not yet reported */
    int open_timers;     /* soon and watchdog until both are closed */
    int jobs;            /* jobs not yet completed */
    bool closing, transport_closed, finished;
    void (*closed)(void *arg);
    void *closed_arg;
    FILE *check_errors; /* check-only mode: errors go here, nothing is started */
    FILE *check_notes;  /* ... and what could not be checked on this machine */
};

struct job {
    cad_plugin_host_t *host;
    struct cad_plugin_env *env;
    cad_plugin_touch_t touch; /* strings in `strings` */
    char *strings;
    char *rendered[5]; /* subject, text, html, unsubscribe url, unsubscribe mailto */
    cad_plugin_outcome_t outcome;
    cad_plugin_transfer_t xfer;
    uv_work_t work;
    cad_plugin_done_cb cb;
    void *arg;
    bool maybe_received; /* failed without an answer after the request left */
    job_t *next;
    /* blocking jobs only */
    int64_t deadline_ms; /* loop time after which the job is reported as timed out */
    bool abandoned;      /* reported already; freed when send() returns */
    bool expired;        /* cancelled by the watchdog before a thread took it */
    job_t *timed_prev, *timed_next;
};

static const cad_plugin_api_t host_api;

const char *cad_outcome_kind_name(enum cad_outcome_kind kind)
{
    switch (kind) {
    case CAD_OUTCOME_DELIVERED: return "delivered";
    case CAD_OUTCOME_RETRY: return "retry";
    case CAD_OUTCOME_PERMANENT: return "permanent";
    }
    return "unknown";
}

const char *cad_outcome_effect_name(enum cad_outcome_effect effect)
{
    switch (effect) {
    case CAD_EFFECT_NONE: return "none";
    case CAD_EFFECT_CONTACT_UNUSABLE: return "contact_unusable";
    case CAD_EFFECT_CONSENT_REVOKED: return "consent_revoked";
    case CAD_EFFECT_CHANNEL_DISABLED: return "channel_disabled";
    }
    return "unknown";
}

static void set_outcome(cad_plugin_outcome_t *o, enum cad_outcome_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_outcome(cad_plugin_outcome_t *o, enum cad_outcome_kind kind, const char *fmt, ...)
{
    o->kind = kind;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->reason, sizeof o->reason, fmt, ap);
    va_end(ap);
}

/* ---- the host API given to plugins ------------------------------------------ */

static void api_log(cad_plugin_env_t *env, int level, const char *fmt, ...)
{
    if (level > (int)cad_log_get_level())
        return;
    if (env->host->check_errors && level > CAD_PLUGIN_LOG_WARNING)
        return; /* a config check reports problems only */
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (level < CAD_LOG_ERR)
        level = CAD_LOG_ERR;
    if (level > CAD_LOG_DEBUG)
        level = CAD_LOG_DEBUG;
    cad_log((enum cad_log_level)level, "%s[%s]: %s", env->plugin, env->channel, msg);
}

static const char *api_channel_name(cad_plugin_env_t *env)
{
    return env->channel;
}

static enum cad_plugin_address api_address_kind(cad_plugin_env_t *env)
{
    return env->address;
}

static bool api_checking(cad_plugin_env_t *env)
{
    return env->host->check_errors != NULL;
}

static const char *api_state_dir(cad_plugin_env_t *env)
{
    const char *d = env->host->state_dir;
    return d ? d : ".";
}

static int option_index(const struct cad_plugin_env *env, const char *name)
{
    for (int i = 0; i < env->n_options; i++)
        if (strcmp(env->desc->options[i].name, name) == 0)
            return i;
    return -1;
}

static const char *api_option(cad_plugin_env_t *env, const char *name)
{
    int i = option_index(env, name);
    return i < 0 ? NULL : env->values[i];
}

static int parse_int(const char *text, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end)
        return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *text, bool *out)
{
    static const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < CAD_ARRAY_LEN(yes); i++) {
        if (strcasecmp(text, yes[i]) == 0)
            return *out = true, 0;
        if (strcasecmp(text, no[i]) == 0)
            return *out = false, 0;
    }
    return -1;
}

static int64_t api_option_int(cad_plugin_env_t *env, const char *name, int64_t fallback)
{
    int i = option_index(env, name);
    if (i < 0 || !env->values[i])
        return fallback;
    int64_t v;
    char err[CAD_ERRBUF];
    if (env->desc->options[i].type == CAD_OPTION_DURATION)
        return cad_duration_parse(env->values[i], &v, err) == 0 ? v : fallback;
    return parse_int(env->values[i], &v) == 0 ? v : fallback;
}

static bool api_option_bool(cad_plugin_env_t *env, const char *name, bool fallback)
{
    const char *v = api_option(env, name);
    bool b;
    return v && parse_bool(v, &b) == 0 ? b : fallback;
}

static int api_read_secret(cad_plugin_env_t *env, const char *name, char **out, size_t *len,
                           char *err, size_t err_size)
{
    *out = NULL;
    *len = 0;
    int i = option_index(env, name);
    if (i < 0 || env->desc->options[i].type != CAD_OPTION_SECRET_FILE) {
        snprintf(err, err_size, "option %s is not a secret-file option of plugin %s", name,
                 env->plugin);
        return -CAD_EINVAL;
    }
    const char *file = env->values[i];
    if (!file || !*file) {
        snprintf(err, err_size, "option %s of channel %s is not set", name, env->channel);
        return -CAD_ENOTFOUND;
    }
    char path[4096];
    if (file[0] == '/') {
        snprintf(path, sizeof path, "%s", file);
    } else {
        /* systemd's LoadCredential= directory wins over the config's */
        const char *dir = getenv("CREDENTIALS_DIRECTORY");
        if (!dir || !*dir)
            dir = env->host->credentials_dir;
        if (!dir) {
            env->secret_unreadable = true;
            snprintf(err, err_size,
                     "option %s of channel %s names \"%s\", a relative path, but no credentials "
                     "directory is configured",
                     name, env->channel, file);
            return -CAD_ENOTFOUND;
        }
        snprintf(path, sizeof path, "%s/%s", dir, file);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        env->secret_unreadable = true;
        snprintf(err, err_size, "cannot open secret file %s (option %s of channel %s): %s", path,
                 name, env->channel, strerror(errno));
        return -CAD_EIO;
    }
    char *buf = malloc(SECRET_MAX + 1);
    size_t n = 0;
    ssize_t r = 0;
    while (buf && n < SECRET_MAX && (r = read(fd, buf + n, SECRET_MAX - n)) > 0)
        n += (size_t)r;
    char extra;
    bool too_long = buf && n == SECRET_MAX && read(fd, &extra, 1) > 0;
    close(fd);
    if (!buf || r < 0 || too_long) {
        if (buf) {
            explicit_bzero(buf, SECRET_MAX + 1);
            free(buf);
        }
        snprintf(err, err_size, "cannot read secret file %s (option %s of channel %s): %s", path,
                 name, env->channel,
                 !buf       ? "out of memory"
                 : too_long ? "longer than 64 KiB"
                            : strerror(errno));
        return -CAD_EIO;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    if (n == 0) {
        free(buf);
        snprintf(err, err_size, "secret file %s (option %s of channel %s) is empty", path, name,
                 env->channel);
        return -CAD_EINVAL;
    }
    *out = buf;
    *len = n;
    env->secret_unreadable = false; /* only the latest read counts: init failed after it? */
    return 0;
}

static void api_free_secret(char *secret, size_t len)
{
    if (!secret)
        return;
    explicit_bzero(secret, len);
    free(secret);
}

static int api_render(cad_plugin_env_t *env, const cad_plugin_touch_t *touch, const char *tmpl,
                      bool html, char **out, char *err, size_t err_size)
{
    char e[CAD_ERRBUF] = "";
    int rc = cad_template_render(tmpl, html, touch, out, e);
    if (rc < 0)
        snprintf(err, err_size, "%s", e);
    return rc;
}

static int api_render_as(cad_plugin_env_t *env, const cad_plugin_touch_t *touch, const char *tmpl,
                         enum cad_plugin_escape escape, char **out, char *err, size_t err_size)
{
    char e[CAD_ERRBUF] = "";
    int rc = cad_template_render_as(tmpl, escape, touch, out, e);
    if (rc < 0)
        snprintf(err, err_size, "%s", e);
    return rc;
}

static const char *api_header(const cad_plugin_response_t *resp, const char *name, char *buf,
                              size_t size)
{
    const char *found = NULL;
    size_t found_len = 0;
    size_t name_len = strlen(name);
    const char *p = resp->headers, *end = resp->headers + resp->headers_len;
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon && (size_t)(colon - p) == name_len && strncasecmp(p, name, name_len) == 0) {
            const char *v = colon + 1, *ve = line_end;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            found = v;
            found_len = (size_t)(ve - v);
        }
        p = eol ? eol + 1 : end;
    }
    if (!found || size == 0)
        return NULL;
    if (found_len >= size)
        found_len = size - 1;
    memcpy(buf, found, found_len);
    buf[found_len] = '\0';
    return buf;
}

#define CAD_RETRY_AFTER_MAX (366 * CAD_DAY) /* the longest wait a provider may ask for */

static int64_t api_now(void)
{
    return (int64_t)cad_wall_now();
}

static int64_t api_retry_after(const cad_plugin_response_t *resp)
{
    char v[128];
    if (!api_header(resp, "Retry-After", v, sizeof v) || !*v)
        return -1;
    int64_t secs;
    if (parse_int(v, &secs) == 0)
        return secs < 0 ? -1 : (secs > CAD_RETRY_AFTER_MAX ? CAD_RETRY_AFTER_MAX : secs);
    if (strspn(v, "0123456789") == strlen(v))
        return CAD_RETRY_AFTER_MAX; /* more seconds than 64 bits hold: as long as we wait */
    struct tm tm = {0};
    const char *end = strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end || *end)
        return -1;
    int64_t delta = (int64_t)timegm(&tm) - api_now();
    return delta < 0 ? 0 : (delta > CAD_RETRY_AFTER_MAX ? CAD_RETRY_AFTER_MAX : delta);
}

static const cad_plugin_api_t host_api = {
    .struct_size = sizeof(cad_plugin_api_t),
    .abi_major = CAD_PLUGIN_ABI_MAJOR,
    .abi_minor = CAD_PLUGIN_ABI_MINOR,
    .log = api_log,
    .channel_name = api_channel_name,
    .address_kind = api_address_kind,
    .state_dir = api_state_dir,
    .option = api_option,
    .option_int = api_option_int,
    .option_bool = api_option_bool,
    .read_secret = api_read_secret,
    .free_secret = api_free_secret,
    .render = api_render,
    .header = api_header,
    .retry_after = api_retry_after,
    .now = api_now,
    .checking = api_checking,
    .render_as = api_render_as,
};

/* ---- loading ------------------------------------------------------------------ */

/* "a string", "an integer"...: what a setting of type t must be. */
static const char *option_type_name(enum cad_option_type t)
{
    switch (t) {
    case CAD_OPTION_STRING: return "a string";
    case CAD_OPTION_INT: return "an integer";
    case CAD_OPTION_BOOL: return "a boolean";
    case CAD_OPTION_DURATION: return "a duration";
    case CAD_OPTION_SECRET_FILE: return "a secret file name";
    }
    return "of an unknown type";
}

static void env_fail(struct cad_plugin_env *env, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Records why a channel is not loaded (the first reason) and logs it. */
static void env_fail(struct cad_plugin_env *env, const char *fmt, ...)
{
    char msg[CAD_ERRBUF];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const cad_config_t *cfg = env->host->cfg;
    const char *file = cfg->path ? cfg->path : "config";
    if (env->host->check_errors && strncmp(msg, file, strlen(file)) == 0)
        fprintf(env->host->check_errors, "%s\n", msg);
    else if (env->host->check_errors) /* FILE:LINE: like every config error */
        fprintf(env->host->check_errors, "%s:%d: channel \"%s\": %s\n", file,
                cfg->playbook.channels[env->index].line, env->channel, msg);
    else
        cad_log_err("channel %s not loaded: %s", env->channel, msg);
    if (!env->error)
        env->error = strdup(msg);
}

/* Checks one setting's text against its option's type. */
static int check_value(const cad_plugin_option_t *o, const char *value, char *why, size_t size)
{
    int64_t i;
    bool b;
    char err[CAD_ERRBUF] = "";
    switch (o->type) {
    case CAD_OPTION_STRING: return 0;
    case CAD_OPTION_SECRET_FILE:
        if (!*value) {
            snprintf(why, size, "an empty file name");
            return -1;
        }
        return 0;
    case CAD_OPTION_INT:
        if (parse_int(value, &i) == 0)
            return 0;
        snprintf(why, size, "\"%s\" is not an integer", value);
        return -1;
    case CAD_OPTION_BOOL:
        if (parse_bool(value, &b) == 0)
            return 0;
        snprintf(why, size, "\"%s\" is not a boolean (true or false)", value);
        return -1;
    case CAD_OPTION_DURATION:
        if (cad_duration_parse(value, &i, err) == 0)
            return 0;
        snprintf(why, size, "\"%s\" is not a duration: %s", value, err);
        return -1;
    }
    snprintf(why, size, "option type %d is unknown", (int)o->type);
    return -1;
}

/* Resolves the channel's settings against the option table; every problem
 * is logged with the config file:line, the first is kept. */
/* True when template `t` has an "@" in its own text, outside every
 * {{...}}: an unsubscribe mailto's domain must be literal, since what a
 * variable inserts is percent-encoded (render_unsubscribe). */
static bool literal_at(const char *t)
{
    for (const char *p = t; *p; p++) {
        if (p[0] == '{' && p[1] == '{') {
            const char *end = strstr(p + 2, "}}");
            if (!end)
                return false;
            p = end + 1;
        } else if (*p == '@') {
            return true;
        }
    }
    return false;
}

static int resolve_settings(struct cad_plugin_env *env, const cad_channel_config_t *cc,
                            const cad_channel_t *ch)
{
    const cad_config_t *cfg = env->host->cfg;
    const char *file = cfg->path ? cfg->path : "config";
    const cad_plugin_option_t *opts = env->desc->options;
    int n = 0;
    while (opts && opts[n].name)
        n++;
    /* The option table is the plugin's promise to init: applied defaults it
     * can rely on. A table that breaks it is the plugin's bug, named here. */
    for (int i = 0; i < n; i++) {
        char why[CAD_ERRBUF];
        for (int j = 0; j < i; j++)
            if (strcmp(opts[j].name, opts[i].name) == 0) {
                env_fail(env, "plugin %s declares option %s twice", env->plugin, opts[i].name);
                return -1;
            }
        int type; /* as an integer: the plugin may have stored any bits */
        memcpy(&type, &opts[i].type, sizeof type);
        if (type < CAD_OPTION_STRING || type > CAD_OPTION_SECRET_FILE) {
            env_fail(env, "plugin %s: its option %s has an unknown type %d", env->plugin,
                     opts[i].name, type);
            return -1;
        }
        if (opts[i].default_value &&
            check_value(&opts[i], opts[i].default_value, why, sizeof why) < 0) {
            env_fail(env, "plugin %s: the default of its option %s is not %s: %s", env->plugin,
                     opts[i].name, option_type_name(opts[i].type), why);
            return -1;
        }
    }
    env->n_options = n;
    env->values = calloc((size_t)n + 1, sizeof *env->values);
    if (!env->values) {
        env_fail(env, "out of memory");
        return -1;
    }
    int bad = 0;
    for (int s = 0; s < cc->n_settings; s++) {
        const cad_channel_setting_t *set = &cc->settings[s];
        int i = option_index(env, set->name);
        if (i < 0) {
            char known[256] = "";
            size_t k = 0;
            for (int j = 0; j < n && k < sizeof known - 1; j++)
                k += (size_t)snprintf(known + k, sizeof known - k, "%s%s", j ? ", " : "",
                                      opts[j].name);
            env_fail(env, "%s:%d: channel \"%s\": plugin %s has no option \"%s\" (options: %s)",
                     file, set->line, env->channel, env->plugin, set->name, n ? known : "none");
            bad++;
            continue;
        }
        char why[CAD_ERRBUF];
        const char *value = set->value ? set->value : "";
        if (check_value(&opts[i], value, why, sizeof why) < 0) {
            env_fail(env, "%s:%d: channel \"%s\": option %s must be %s: %s", file, set->line,
                     env->channel, set->name, option_type_name(opts[i].type), why);
            bad++;
            continue;
        }
        /* The unsubscribe settings are templates the host renders for
         * every touch (render_unsubscribe): an unknown variable is known
         * now, not at the first send. */
        if ((strcmp(set->name, "unsubscribe_url") == 0 ||
             strcmp(set->name, "unsubscribe_mailto") == 0) &&
            cad_template_check(value, why) < 0) {
            env_fail(env, "%s:%d: channel \"%s\": option %s: %s", file, set->line, env->channel,
                     set->name, why);
            bad++;
            continue;
        }
        if (strcmp(set->name, "unsubscribe_mailto") == 0 && *value && !literal_at(value)) {
            env_fail(env,
                     "%s:%d: channel \"%s\": option unsubscribe_mailto \"%s\": the address's "
                     "\"@\" and domain must be written in the setting, as values put into it "
                     "are percent-encoded (e.g. \"unsubscribe+{{contact.id}}@shop.example\")",
                     file, set->line, env->channel, value);
            bad++;
            continue;
        }
        free(env->values[i]);
        env->values[i] = strdup(value);
    }
    for (int i = 0; i < n; i++) {
        if (env->values[i])
            continue;
        if (opts[i].default_value) {
            env->values[i] = strdup(opts[i].default_value);
        } else if (opts[i].required) {
            env_fail(env, "%s:%d: channel \"%s\": option %s (%s) is required by plugin %s", file,
                     ch->line, env->channel, opts[i].name, option_type_name(opts[i].type),
                     env->plugin);
            bad++;
        }
    }
    return bad ? -1 : 0;
}

static bool valid_plugin_name(const char *name)
{
    if (!*name)
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
            return false;
    return true;
}

static void load_channel(cad_plugin_host_t *h, int c)
{
    const cad_config_t *cfg = h->cfg;
    const cad_channel_t *ch = &cfg->playbook.channels[c];
    const cad_channel_config_t *cc = &cfg->channel_config[c];
    struct cad_plugin_env *env = &h->envs[c];
    env->host = h;
    env->index = c;
    snprintf(env->channel, sizeof env->channel, "%s", ch->name);
    snprintf(env->plugin, sizeof env->plugin, "%s", ch->plugin);
    env->address = ch->address == CAD_ADDRESS_EMAIL   ? CAD_PLUGIN_ADDRESS_EMAIL
                   : ch->address == CAD_ADDRESS_PHONE ? CAD_PLUGIN_ADDRESS_PHONE
                                                      : CAD_PLUGIN_ADDRESS_NONE;
    env->concurrency = cc->concurrency ? cc->concurrency : 1;
    env->timeout_ms = cc->timeout > 0 ? cc->timeout * 1000 : DEFAULT_TIMEOUT_MS;
    env->lane = -1;

    const char *dir = cfg->plugin_dir ? cfg->plugin_dir : CADENCE_PLUGIN_DIR;
    size_t len = strlen(dir) + strlen(ch->plugin) + 8;
    env->path = malloc(len);
    if (!env->path) {
        env_fail(env, "out of memory");
        return;
    }
    snprintf(env->path, len, "%s/%s.so", dir, ch->plugin);
    if (!valid_plugin_name(ch->plugin)) {
        env_fail(env, "plugin name \"%s\" may hold only a-z, 0-9, _ and - (config line %d)",
                 ch->plugin, ch->line);
        return;
    }
    char why[CAD_ERRBUF];
    /* A reload loads a replaced file afresh, from a copy in the state
     * directory (a check runs in a process of its own: no copy needed). */
    env->object =
        cad_plugin_object_open(env->path, h->check_errors ? NULL : cfg->state_dir, why, sizeof why);
    if (!env->object) {
        env_fail(env, "%s", why);
        return;
    }
    dlerror();
    const cad_plugin_descriptor_t *d =
        dlsym(cad_plugin_object_handle(env->object), CAD_PLUGIN_SYMBOL);
    if (!d) {
        env_fail(env, "%s does not export the symbol %s: not a cadenced channel plugin", env->path,
                 CAD_PLUGIN_SYMBOL);
        return;
    }
    if (d->abi_major != CAD_PLUGIN_ABI_MAJOR) {
        env_fail(env, "%s was built for plugin ABI %u.%u; this daemon speaks %d.%d", env->path,
                 d->abi_major, d->abi_minor, CAD_PLUGIN_ABI_MAJOR, CAD_PLUGIN_ABI_MINOR);
        return;
    }
    if (d->struct_size < CAD_PLUGIN_DESCRIPTOR_MIN_SIZE) {
        env_fail(env, "%s has a descriptor of %u bytes, smaller than the %zu bytes of ABI %d.0",
                 env->path, d->struct_size, (size_t)CAD_PLUGIN_DESCRIPTOR_MIN_SIZE,
                 CAD_PLUGIN_ABI_MAJOR);
        return;
    }
    if (!d->name || strcmp(d->name, ch->plugin) != 0) {
        env_fail(env, "%s calls itself \"%s\", not \"%s\"", env->path, d->name ? d->name : "",
                 ch->plugin);
        return;
    }
    bool transfer = d->prepare && d->interpret;
    if (!d->init || !d->shutdown || (!transfer && !d->send)) {
        env_fail(env,
                 "%s lacks a callback: init, shutdown, and prepare+interpret or send are "
                 "required",
                 env->path);
        return;
    }
    env->desc = d;
    if (resolve_settings(env, cc, ch) < 0) {
        env->desc = NULL;
        return;
    }
    char err[CAD_ERRBUF] = "";
    if (h->check_errors && d->abi_minor < 1) {
        /* Built before api->checking: it could not know not to create or
         * connect, so its init is not run here; say so. */
        if (h->check_notes)
            fprintf(h->check_notes,
                    "%s:%d: channel \"%s\": not checked further here: plugin %s is built for "
                    "ABI %u.%u, whose init cannot be run as a mere check\n",
                    cfg->path ? cfg->path : "config", ch->line, ch->name, ch->plugin, d->abi_major,
                    d->abi_minor);
        return;
    }
    if (h->check_errors) {
        /* Check-only: init validates settings and secrets (api->checking
         * tells it to create nothing), then the instance is shut down. */
        void *probe = NULL;
        if (d->init(&host_api, env, &probe, err, sizeof err) == 0) {
            d->shutdown(probe);
            return;
        }
        env->desc = NULL;
        const char *file = h->cfg->path ? h->cfg->path : "config";
        if (env->secret_unreadable) {
            /* Secrets often exist only where the daemon runs (systemd's
             * LoadCredential=): say what was not checked; not an error. */
            if (h->check_notes)
                fprintf(h->check_notes, "%s:%d: channel \"%s\": not checked further here: %s\n",
                        file, ch->line, ch->name, err[0] ? err : "a secret file cannot be read");
            return;
        }
        env_fail(env, "%s:%d: channel \"%s\": plugin %s would fail to start: %s", file, ch->line,
                 ch->name, ch->plugin, err[0] ? err : "no reason given");
        return;
    }
    if (transfer) {
        env->lane = cad_transport_lane_add(h->transport, ch->name, env->concurrency, err);
        if (env->lane < 0) {
            env->desc = NULL;
            env_fail(env, "%s", err);
            return;
        }
    }
    void *instance = NULL;
    int rc = d->init(&host_api, env, &instance, err, sizeof err);
    if (rc != 0) {
        env->desc = NULL;
        env_fail(env, "plugin %s failed to start: %s", ch->plugin,
                 err[0] ? err : "no reason given");
        return;
    }
    env->instance = instance;
    cad_log_info("channel loaded channel=%s plugin=%s version=%s abi=%u.%u path=%s", ch->name,
                 d->name, d->version ? d->version : "", d->abi_major, d->abi_minor, env->path);
}

static void on_soon(uv_timer_t *t);

static void host_free(cad_plugin_host_t *h);

int cad_plugin_host_new(uv_loop_t *loop, const cad_config_t *cfg, cad_plugin_host_t **out,
                        char *err)
{
    *out = NULL;
    cad_plugin_host_t *h = calloc(1, sizeof *h);
    if (!h)
        return cad_fail(err, CAD_ENOMEM, "plugin host: out of memory");
    h->loop = loop;
    h->cfg = cfg;
    if ((cfg->state_dir && !(h->state_dir = strdup(cfg->state_dir))) ||
        (cfg->credentials_dir && !(h->credentials_dir = strdup(cfg->credentials_dir)))) {
        host_free(h);
        return cad_fail(err, CAD_ENOMEM, "plugin host: out of memory");
    }
    int rc = cad_transport_new(loop, &h->transport, err);
    if (rc < 0) {
        host_free(h);
        return rc;
    }
    /* Channels run their own concurrency; this caps transfers over all of them. */
    cad_transport_set_total(h->transport, cfg->dispatch_concurrency);
    uv_timer_init(loop, &h->soon);
    h->soon.data = h;
    uv_timer_init(loop, &h->watchdog);
    h->watchdog.data = h;
    h->n_envs = cfg->playbook.n_channels;
    for (int c = 0; c < h->n_envs; c++)
        load_channel(h, c);
    h->cfg = NULL; /* borrowed for loading only */
    *out = h;
    return 0;
}

/* Frees the host's own memory (channels, timers and transport done). */
static void host_free(cad_plugin_host_t *h)
{
    free(h->state_dir);
    free(h->credentials_dir);
    free(h);
}

/* Frees what loading a channel allocated (instance already shut down). */
static void env_free(struct cad_plugin_env *env)
{
    cad_plugin_object_close(env->object);
    for (int i = 0; env->values && i < env->n_options; i++)
        free(env->values[i]);
    free(env->values);
    free(env->path);
    free(env->error);
}

int cad_plugin_host_check(const cad_config_t *cfg, FILE *errors, FILE *notes)
{
    cad_plugin_host_t *h = calloc(1, sizeof *h);
    if (!h) {
        fprintf(errors, "plugin check: out of memory\n");
        return 1;
    }
    h->cfg = cfg;
    h->state_dir = cfg->state_dir ? strdup(cfg->state_dir) : NULL;
    h->credentials_dir = cfg->credentials_dir ? strdup(cfg->credentials_dir) : NULL;
    h->check_errors = errors;
    h->check_notes = notes;
    h->n_envs = cfg->playbook.n_channels;
    int failed = 0;
    for (int c = 0; c < h->n_envs; c++) {
        load_channel(h, c);
        failed += h->envs[c].error != NULL;
        env_free(&h->envs[c]);
    }
    host_free(h);
    return failed;
}

bool cad_plugin_host_ready(const cad_plugin_host_t *h, int channel)
{
    return channel >= 0 && channel < h->n_envs && h->envs[channel].instance && !h->closing;
}

/* ---- jobs ------------------------------------------------------------------------ */

static void try_finish(cad_plugin_host_t *h);

static void job_free(job_t *j)
{
    for (int i = 0; i < 5; i++)
        free(j->rendered[i]);
    free(j->strings);
    free(j);
}

/* Control characters (a newline, an escape sequence) of a plugin's text
 * become spaces, trailing ones dropped: the text goes into log lines,
 * tables and terminals. */
static void blank_controls(char *s)
{
    char *end = s;
    for (char *p = s; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
        if (*p != ' ')
            end = p + 1;
    }
    *end = '\0';
}

/* The host's own retries ("not started: ...", "cancelled: ...") tell the
 * dispatcher not to count an attempt; a plugin's reason that happens to
 * begin the same way is marked as the plugin's ("plugin: not started...")
 * so that it counts as any other. */
static void unreserve_reason(cad_plugin_outcome_t *o)
{
    if (strncmp(o->reason, CAD_NOT_STARTED_PREFIX, strlen(CAD_NOT_STARTED_PREFIX)) != 0 &&
        strncmp(o->reason, CAD_CANCELLED_PREFIX, strlen(CAD_CANCELLED_PREFIX)) != 0)
        return;
    static const char mark[] = "plugin: ";
    size_t n = strlen(o->reason), room = sizeof o->reason - 1 - (sizeof mark - 1);
    if (n > room)
        n = room;
    memmove(o->reason + sizeof mark - 1, o->reason, n);
    memcpy(o->reason, mark, sizeof mark - 1);
    o->reason[n + sizeof mark - 1] = '\0';
}

/* A plugin's outcome is input like any other: an unknown kind becomes a
 * RETRY naming the plugin's mistake (the touch is neither lost nor counted
 * as delivered; max_attempts ends it), an unknown effect is logged and
 * dropped, a negative retry_after is dropped, the strings end inside their
 * buffers without control characters, and a failure without a reason
 * says so. */
static void check_outcome(struct cad_plugin_env *env, cad_plugin_outcome_t *o)
{
    o->provider_id[sizeof o->provider_id - 1] = '\0';
    o->reason[sizeof o->reason - 1] = '\0';
    blank_controls(o->provider_id);
    blank_controls(o->reason);
    int kind, effect; /* as integers: the plugin may have stored any bits */
    memcpy(&kind, &o->kind, sizeof kind);
    memcpy(&effect, &o->effect, sizeof effect);
    if (kind != CAD_OUTCOME_DELIVERED && kind != CAD_OUTCOME_RETRY &&
        kind != CAD_OUTCOME_PERMANENT) {
        cad_log_err("plugin %s returned an invalid outcome kind %d; treated as a retry "
                    "channel=%s",
                    env->plugin, kind, env->channel);
        memset(o, 0, sizeof *o);
        set_outcome(o, CAD_OUTCOME_RETRY, "plugin %s returned an invalid outcome kind %d",
                    env->plugin, kind);
        return;
    }
    if (kind == CAD_OUTCOME_PERMANENT && effect != CAD_EFFECT_NONE &&
        effect != CAD_EFFECT_CONTACT_UNUSABLE && effect != CAD_EFFECT_CONSENT_REVOKED &&
        effect != CAD_EFFECT_CHANNEL_DISABLED)
        cad_log_err("plugin %s returned an invalid outcome effect %d; ignored channel=%s",
                    env->plugin, effect, env->channel);
    if (kind != CAD_OUTCOME_PERMANENT ||
        (effect != CAD_EFFECT_CONTACT_UNUSABLE && effect != CAD_EFFECT_CONSENT_REVOKED &&
         effect != CAD_EFFECT_CHANNEL_DISABLED))
        o->effect = CAD_EFFECT_NONE;
    if (kind != CAD_OUTCOME_DELIVERED && !o->reason[0])
        snprintf(o->reason, sizeof o->reason, "plugin %s gave no reason", env->plugin);
    if (o->kind != CAD_OUTCOME_RETRY || o->retry_after < 0)
        o->retry_after = 0;
    if (o->retry_after > CAD_RETRY_AFTER_MAX)
        o->retry_after = CAD_RETRY_AFTER_MAX; /* a plugin's absurd value must not overflow */
    if (o->kind == CAD_OUTCOME_DELIVERED)
        o->reason[0] = '\0';
}

/* Reports outcome `o` (the job's own, or one the host decided while the
 * plugin still writes the job's) to the job's caller, once. */
static void job_report(job_t *j, cad_plugin_outcome_t *o)
{
    struct cad_plugin_env *env = j->env;
    check_outcome(env, o);
    switch (o->kind) {
    case CAD_OUTCOME_DELIVERED: env->delivered++; break;
    case CAD_OUTCOME_RETRY: env->retried++; break;
    case CAD_OUTCOME_PERMANENT: env->failed++; break;
    }
    char r[CAD_LOG_VALUE_MAX];
    if (cad_log_get_level() >= CAD_LOG_DEBUG) /* quoting the reason costs on the hot path */
        cad_log_debug("touch attempt finished channel=%s touch=%lld attempt=%d outcome=%s "
                      "retry_after=%lld effect=%s reason=%s",
                      env->channel, (long long)j->touch.touch_id, j->touch.attempt,
                      cad_outcome_kind_name(o->kind), (long long)o->retry_after,
                      cad_outcome_effect_name(o->effect), cad_log_value(o->reason, r));
    cad_plugin_done_cb cb = j->cb;
    j->cb = NULL;
    if (cb)
        cb(o, j->maybe_received, j->arg);
}

/* Frees a job whose outcome was reported. */
static void job_release(job_t *j)
{
    cad_plugin_host_t *h = j->host;
    struct cad_plugin_env *env = j->env;
    job_free(j);
    env->active--;
    h->jobs--;
    try_finish(h);
}

static void job_complete(job_t *j)
{
    job_report(j, &j->outcome);
    job_release(j);
}

/* ---- timeouts of blocking jobs -------------------------------------------------- */

static void timed_remove(job_t *j)
{
    cad_plugin_host_t *h = j->host;
    if (j->timed_prev)
        j->timed_prev->timed_next = j->timed_next;
    else if (h->timed == j)
        h->timed = j->timed_next;
    if (j->timed_next)
        j->timed_next->timed_prev = j->timed_prev;
    j->timed_prev = j->timed_next = NULL;
    if (!h->timed)
        uv_timer_stop(&h->watchdog);
}

static void on_watchdog(uv_timer_t *t);

static void timed_add(job_t *j)
{
    cad_plugin_host_t *h = j->host;
    j->deadline_ms = (int64_t)uv_now(h->loop) + j->env->timeout_ms;
    j->timed_prev = NULL;
    j->timed_next = h->timed;
    if (h->timed)
        h->timed->timed_prev = j;
    else
        uv_timer_start(&h->watchdog, on_watchdog, WATCHDOG_MS, WATCHDOG_MS);
    h->timed = j;
}

/* Why a blocking job cannot start: every slot of its channel is held by a
 * send() that did not return. Reported as a retry (not a cancellation), so
 * backoff and the circuit apply. */
static void stuck_reason(const struct cad_plugin_env *env, char *buf, size_t size)
{
    snprintf(buf, size,
             CAD_NOT_STARTED_PREFIX ": all %u sends of channel %s are stuck inside plugin %s's "
                                    "send()",
             env->concurrency, env->channel, env->plugin);
}

static void end_queued_jobs(struct cad_plugin_env *env, const char *why);

static void on_watchdog(uv_timer_t *t)
{
    cad_plugin_host_t *h = t->data;
    int64_t now = (int64_t)uv_now(h->loop);
    job_t *j = h->timed;
    while (j) {
        job_t *next = j->timed_next;
        if (now >= j->deadline_ms) {
            struct cad_plugin_env *env = j->env;
            timed_remove(j);
            /* Still in libuv's queue (every pool thread busy, maybe with
             * other channels' sends): cancelled, reported by work_done. */
            if (uv_cancel((uv_req_t *)&j->work) == 0) {
                j->expired = true;
                j = next;
                continue;
            }
            /* Inside send(): the plugin may still write the job's outcome,
             * so the host reports one of its own. The request may have
             * left: counted as possibly received. */
            cad_plugin_outcome_t o;
            memset(&o, 0, sizeof o);
            set_outcome(&o, CAD_OUTCOME_RETRY,
                        "plugin %s did not return from send() within the channel's timeout of "
                        "%lld ms",
                        env->plugin, (long long)env->timeout_ms);
            j->maybe_received = true;
            j->abandoned = true;
            env->stuck++;
            cad_log_err("plugin %s still inside send() after %lld ms; the touch is retried, the "
                        "thread stays taken until send() returns channel=%s touch=%lld stuck=%d",
                        env->plugin, (long long)env->timeout_ms, env->channel,
                        (long long)j->touch.touch_id, env->stuck);
            job_report(j, &o);
            if ((uint32_t)env->stuck >= env->concurrency) {
                char why[CAD_PLUGIN_REASON_MAX];
                stuck_reason(env, why, sizeof why);
                end_queued_jobs(env, why);
            }
        }
        j = next;
    }
}

static void report_soon(job_t *j)
{
    cad_plugin_host_t *h = j->host;
    j->next = NULL;
    if (h->soon_tail)
        h->soon_tail->next = j;
    else
        h->soon_head = j;
    h->soon_tail = j;
    uv_timer_start(&h->soon, on_soon, 0, 0);
}

static void on_soon(uv_timer_t *t)
{
    cad_plugin_host_t *h = t->data;
    job_t *list = h->soon_head;
    h->soon_head = h->soon_tail = NULL;
    while (list) {
        job_t *j = list;
        list = j->next;
        job_complete(j);
    }
}

/* Copies every string of a touch into one allocation. */
static int copy_touch(job_t *j, const cad_plugin_touch_t *src)
{
    j->touch = *src;
    j->touch.struct_size = sizeof j->touch;
    const char **fields[] = {
        &j->touch.idempotency_key,
        &j->touch.customer.id,
        &j->touch.customer.name,
        &j->touch.customer.attributes,
        &j->touch.contact.id,
        &j->touch.contact.name,
        &j->touch.contact.first_name,
        &j->touch.contact.email,
        &j->touch.contact.phone,
        &j->touch.rule,
        &j->touch.purpose,
        &j->touch.channel,
        &j->touch.content.id,
        &j->touch.content.title,
        &j->touch.content.url,
        &j->touch.subject,
        &j->touch.text,
        &j->touch.html,
        &j->touch.unsubscribe_url,
        &j->touch.unsubscribe_mailto,
    };
    size_t total = 0;
    for (size_t i = 0; i < CAD_ARRAY_LEN(fields); i++)
        total += (*fields[i] ? strlen(*fields[i]) : 0) + 1;
    j->strings = malloc(total + 3);
    if (!j->strings)
        return -CAD_ENOMEM;
    char *p = j->strings;
    for (size_t i = 0; i < CAD_ARRAY_LEN(fields); i++) {
        const char *s = *fields[i] ? *fields[i] : "";
        if (fields[i] == &j->touch.customer.attributes && !*s)
            s = "{}";
        size_t n = strlen(s);
        memcpy(p, s, n + 1);
        *fields[i] = p;
        p += n + 1;
    }
    if (j->touch.attempt < 1)
        j->touch.attempt = 1;
    return 0;
}

/* A channel whose plugin has the options unsubscribe_url/unsubscribe_mailto
 * (the email plugin) gives every touch that carries none its rendered
 * setting before the message is rendered, so templates can show the same
 * link as the List-Unsubscribe header ({{unsubscribe_url}}). They are URI
 * templates: each value is percent-encoded as a URI component, so a
 * customer id with a space or non-ASCII letters still gives a valid link. */
static int render_unsubscribe(job_t *j)
{
    static const char *const names[2] = {"unsubscribe_url", "unsubscribe_mailto"};
    const char **fields[2] = {&j->touch.unsubscribe_url, &j->touch.unsubscribe_mailto};
    for (int k = 0; k < 2; k++) {
        int i = option_index(j->env, names[k]);
        const char *tmpl = i >= 0 ? j->env->values[i] : NULL;
        if (!tmpl || !*tmpl || (*fields[k] && **fields[k]))
            continue;
        char err[CAD_ERRBUF] = "";
        if (cad_template_render_as(tmpl, CAD_PLUGIN_ESCAPE_URI_COMPONENT, &j->touch,
                                   &j->rendered[3 + k], err) < 0) {
            set_outcome(&j->outcome, CAD_OUTCOME_PERMANENT, "setting %s of channel %s: %s",
                        names[k], j->env->channel, err);
            return -1;
        }
        *fields[k] = j->rendered[3 + k];
    }
    return 0;
}

static int render(job_t *j, const cad_template_t *tmpl)
{
    const char *parts[3] = {tmpl->subject, tmpl->text, tmpl->html};
    const char *names[3] = {"subject", "text", "html"};
    for (int i = 0; i < 3; i++) {
        char err[CAD_ERRBUF] = "";
        if (cad_template_render(parts[i], i == 2, &j->touch, &j->rendered[i], err) < 0) {
            set_outcome(&j->outcome, CAD_OUTCOME_PERMANENT, "template %s, %s part: %s", tmpl->name,
                        names[i], err);
            return -1;
        }
    }
    j->touch.subject = j->rendered[0];
    j->touch.text = j->rendered[1];
    j->touch.html = j->rendered[2];
    return 0;
}

/* Frees what prepare() put in the transfer, after unhooking it from the easy
 * handle (which the transport cleans up later). */
static void release_transfer(job_t *j, CURL *easy)
{
    cad_plugin_transfer_t *x = &j->xfer;
    if (easy) {
        if (x->headers)
            curl_easy_setopt(easy, CURLOPT_HTTPHEADER, NULL);
        if (x->recipients)
            curl_easy_setopt(easy, CURLOPT_MAIL_RCPT, NULL);
        if (x->mime)
            curl_easy_setopt(easy, CURLOPT_MIMEPOST, NULL);
    }
    curl_slist_free_all(x->headers);
    curl_slist_free_all(x->recipients);
    curl_mime_free(x->mime);
    free(x->body);
    if (x->data && j->env->desc->release)
        j->env->desc->release(j->env->instance, x->data);
    memset(x, 0, sizeof *x);
}

/* Whether a failed transfer may still have reached the provider: (part of)
 * its request left, and no refusal came back (an SMTP server's 4xx/5xx
 * after DATA is an answer; a timeout or a dropped connection is not). A
 * gateway's 502 or 504 says nothing of the service behind it. */
static bool maybe_received(CURL *easy, const cad_plugin_response_t *resp)
{
    if (resp->result == CURLE_OK)
        return resp->code == 502 || resp->code == 504;
    if (resp->code >= 400)
        return false;
    long request_bytes = 0;
    curl_off_t uploaded = 0;
    curl_easy_getinfo(easy, CURLINFO_REQUEST_SIZE, &request_bytes);
    curl_easy_getinfo(easy, CURLINFO_SIZE_UPLOAD_T, &uploaded);
    return request_bytes > 0 || uploaded > 0;
}

static void on_transfer_done(cad_transfer_t *xfer, const cad_plugin_response_t *resp, void *arg)
{
    job_t *j = arg;
    struct cad_plugin_env *env = j->env;
    j->maybe_received = maybe_received(cad_transfer_easy(xfer), resp);
    if (cad_transfer_was_cancelled(xfer)) { /* closing, or taken back: no verdict */
        set_outcome(&j->outcome, CAD_OUTCOME_RETRY, "%s", resp->error);
    } else {
        cad_plugin_response_t r = *resp;
        r.data = j->xfer.data;
        env->desc->interpret(env->instance, &j->touch, &r, &j->outcome);
        j->outcome.provider_id[sizeof j->outcome.provider_id - 1] = '\0';
        j->outcome.reason[sizeof j->outcome.reason - 1] = '\0';
        unreserve_reason(&j->outcome);
    }
    release_transfer(j, cad_transfer_easy(xfer));
    job_complete(j);
}

static void start_transfer(job_t *j)
{
    struct cad_plugin_env *env = j->env;
    char err[CAD_ERRBUF] = "";
    cad_transfer_t *xfer = cad_transfer_new(j->host->transport, env->lane, env->timeout_ms, err);
    if (!xfer) {
        set_outcome(&j->outcome, CAD_OUTCOME_RETRY, "%s", err);
        report_soon(j);
        return;
    }
    j->xfer.easy = cad_transfer_easy(xfer);
    int prepared = env->desc->prepare(env->instance, &j->touch, &j->xfer, &j->outcome);
    j->outcome.reason[sizeof j->outcome.reason - 1] = '\0';
    unreserve_reason(&j->outcome);
    if (prepared != 0) {
        if (j->outcome.kind == CAD_OUTCOME_DELIVERED)
            set_outcome(&j->outcome, CAD_OUTCOME_PERMANENT,
                        "plugin %s refused the touch without a reason", env->plugin);
        cad_transfer_free(xfer);
        release_transfer(j, NULL);
        report_soon(j);
        return;
    }
    if (cad_transport_start(j->host->transport, xfer, on_transfer_done, j, err) < 0) {
        /* the transport freed the transfer */
        release_transfer(j, NULL);
        set_outcome(&j->outcome, CAD_OUTCOME_RETRY, "%s", err);
        report_soon(j);
    }
}

static void work_send(uv_work_t *w)
{
    job_t *j = w->data;
    j->env->desc->send(j->env->instance, &j->touch, &j->outcome);
    j->outcome.provider_id[sizeof j->outcome.provider_id - 1] = '\0';
    j->outcome.reason[sizeof j->outcome.reason - 1] = '\0';
    unreserve_reason(&j->outcome);
}

static void pump_blocking(struct cad_plugin_env *env);

static void work_done(uv_work_t *w, int status)
{
    job_t *j = w->data;
    struct cad_plugin_env *env = j->env;
    env->blocking_in_flight--;
    if (j->abandoned) {
        env->stuck--;
        cad_log_warning("plugin %s returned from send() after its timeout; outcome %s ignored, "
                        "the touch was retried already channel=%s touch=%lld",
                        env->plugin, cad_outcome_kind_name(j->outcome.kind), env->channel,
                        (long long)j->touch.touch_id);
        job_release(j);
        pump_blocking(env);
        return;
    }
    timed_remove(j);
    if (status == UV_ECANCELED && j->expired)
        set_outcome(&j->outcome, CAD_OUTCOME_RETRY,
                    CAD_NOT_STARTED_PREFIX
                    " within the channel's timeout of %lld ms: every thread of the "
                    "pool (UV_THREADPOOL_SIZE) was busy",
                    (long long)env->timeout_ms);
    else if (status == UV_ECANCELED)
        set_outcome(&j->outcome, CAD_OUTCOME_RETRY,
                    CAD_CANCELLED_PREFIX " the daemon is shutting down");
    job_complete(j);
    pump_blocking(env);
}

static void pump_blocking(struct cad_plugin_env *env)
{
    cad_plugin_host_t *h = env->host;
    while (!h->closing && env->queue_head && (uint32_t)env->blocking_in_flight < env->concurrency) {
        job_t *j = env->queue_head;
        env->queue_head = j->next;
        if (!env->queue_head)
            env->queue_tail = NULL;
        env->queued--;
        j->next = NULL;
        j->work.data = j;
        env->blocking_in_flight++;
        timed_add(j);
        int rc = uv_queue_work(h->loop, &j->work, work_send, work_done);
        if (rc < 0) {
            env->blocking_in_flight--;
            timed_remove(j);
            set_outcome(&j->outcome, CAD_OUTCOME_RETRY, "cannot queue work: %s", uv_strerror(rc));
            report_soon(j);
        }
    }
}

int cad_plugin_host_send(cad_plugin_host_t *h, int channel, const cad_plugin_touch_t *touch,
                         const cad_template_t *tmpl, cad_plugin_done_cb cb, void *arg, char *err)
{
    if (channel < 0 || channel >= h->n_envs)
        return cad_fail(err, CAD_EINVAL, "plugin host: no channel %d (%d configured)", channel,
                        h->n_envs);
    struct cad_plugin_env *env = &h->envs[channel];
    if (h->closing)
        return cad_fail(err, CAD_EBUSY, "plugin host: shutting down, touch for channel %s kept",
                        env->channel);
    if (!env->instance)
        return cad_fail(err, CAD_ENOTFOUND, "channel %s has no loaded plugin: %s", env->channel,
                        env->error ? env->error : "not loaded");
    job_t *j = calloc(1, sizeof *j);
    if (!j || copy_touch(j, touch) < 0) {
        free(j);
        return cad_fail(err, CAD_ENOMEM, "plugin host: out of memory for a touch");
    }
    j->host = h;
    j->env = env;
    j->cb = cb;
    j->arg = arg;
    h->jobs++;
    env->active++;
    if (render_unsubscribe(j) < 0 || (tmpl && render(j, tmpl) < 0)) {
        report_soon(j);
        return 0;
    }
    if (env->desc->prepare && env->desc->interpret) {
        start_transfer(j);
        return 0;
    }
    if ((uint32_t)env->stuck >= env->concurrency) {
        char why[CAD_PLUGIN_REASON_MAX];
        stuck_reason(env, why, sizeof why);
        set_outcome(&j->outcome, CAD_OUTCOME_RETRY, "%s", why);
        report_soon(j);
        return 0;
    }
    j->next = NULL;
    if (env->queue_tail)
        env->queue_tail->next = j;
    else
        env->queue_head = j;
    env->queue_tail = j;
    env->queued++;
    pump_blocking(env);
    return 0;
}

int cad_plugin_host_list(const cad_plugin_host_t *h, cad_plugin_info_t *out, int max)
{
    for (int c = 0; c < h->n_envs && c < max; c++) {
        const struct cad_plugin_env *env = &h->envs[c];
        const cad_plugin_descriptor_t *d = env->instance ? env->desc : NULL;
        cad_plugin_info_t *i = &out[c];
        memset(i, 0, sizeof *i);
        i->channel = env->channel;
        i->plugin = env->plugin;
        i->path = env->path ? env->path : "";
        i->loaded = d != NULL;
        i->error = env->error ? env->error : (d ? "" : "not loaded");
        i->description = d && d->description ? d->description : "";
        i->version = d && d->version ? d->version : "";
        i->abi_major = d ? d->abi_major : 0;
        i->abi_minor = d ? d->abi_minor : 0;
        i->blocking = d && !(d->prepare && d->interpret);
        i->options = d ? d->options : NULL;
        i->concurrency = env->concurrency;
        i->in_flight = env->active - env->queued;
        i->queued = env->queued;
        i->stuck = env->stuck;
        if (d && env->lane >= 0 && h->transport) /* a transfer channel: the transport knows */
            cad_transport_lane_counts(h->transport, env->lane, &i->in_flight, &i->queued);
        i->delivered = env->delivered;
        i->retried = env->retried;
        i->failed = env->failed;
    }
    return h->n_envs;
}

/* ---- closing ------------------------------------------------------------------------ */

static void on_timer_closed(uv_handle_t *handle)
{
    cad_plugin_host_t *h = handle->data;
    if (--h->open_timers > 0)
        return;
    void (*closed)(void *) = h->closed;
    void *arg = h->closed_arg;
    host_free(h);
    if (closed)
        closed(arg);
}

static void try_finish(cad_plugin_host_t *h)
{
    if (!h->closing || h->finished || h->jobs > 0 || !h->transport_closed)
        return;
    h->finished = true;
    for (int c = 0; c < h->n_envs; c++) {
        struct cad_plugin_env *env = &h->envs[c];
        if (env->instance)
            env->desc->shutdown(env->instance);
        env_free(env);
    }
    /* After a forced stop the daemon closed every handle, ours included,
     * and exits without waiting for this host. */
    if (uv_is_closing((uv_handle_t *)&h->soon) || uv_is_closing((uv_handle_t *)&h->watchdog))
        return;
    h->open_timers = 2;
    uv_close((uv_handle_t *)&h->soon, on_timer_closed);
    uv_close((uv_handle_t *)&h->watchdog, on_timer_closed);
}

static void on_transport_closed(void *arg)
{
    cad_plugin_host_t *h = arg;
    h->transport = NULL;
    h->transport_closed = true;
    try_finish(h);
}

/* Ends every job of a blocking channel that waits for a pool thread with a
 * RETRY outcome saying `why` ("cancelled: ..." releases the touch unsent,
 * anything else counts as a failed attempt). */
static void end_queued_jobs(struct cad_plugin_env *env, const char *why)
{
    while (env->queue_head) {
        job_t *j = env->queue_head;
        env->queue_head = j->next;
        env->queued--;
        set_outcome(&j->outcome, CAD_OUTCOME_RETRY, "%s", why);
        report_soon(j);
    }
    env->queue_tail = NULL;
}

void cad_plugin_host_close(cad_plugin_host_t *h, int64_t grace_ms, void (*closed)(void *arg),
                           void *arg)
{
    if (h->closing)
        return;
    h->closing = true;
    h->closed = closed;
    h->closed_arg = arg;
    for (int c = 0; c < h->n_envs; c++)
        end_queued_jobs(&h->envs[c], CAD_CANCELLED_PREFIX " the daemon is shutting down");
    cad_transport_close(h->transport, grace_ms, on_transport_closed, h);
}

void cad_plugin_host_hurry(cad_plugin_host_t *h)
{
    if (h && h->closing)
        cad_transport_hurry(h->transport);
}

void cad_plugin_host_take_back(cad_plugin_host_t *h, int channel)
{
    if (h->closing || channel < 0 || channel >= h->n_envs)
        return;
    struct cad_plugin_env *env = &h->envs[channel];
    end_queued_jobs(env, CAD_CANCELLED_PREFIX " taken back before it started");
    if (env->lane >= 0 && env->instance)
        cad_transport_clear_lane(h->transport, env->lane);
}
