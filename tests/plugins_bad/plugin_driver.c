/*
 * plugin_driver.c — a minimal plugin host for tests: loads one channel's
 * plugin exactly as the daemon does (plugin_host.c), sends the touches it
 * reads on stdin as JSON lines, and prints each outcome as a JSON line.
 *
 *   plugin_driver --plugin-dir DIR --state-dir DIR --plugin NAME
 *                 [--channel NAME] [--address email|phone|none]
 *                 [--credentials-dir DIR] [--timeout SECONDS]
 *                 [--concurrency N] [--set key=value]... [--list] < touches.jsonl
 *
 * A touch line holds the cad_plugin_touch_t fields by name (touch_id,
 * idempotency_key, customer_id, customer_name, attributes (an object),
 * contact_id, contact_name, first_name, email, phone, rule, purpose,
 * content_id, content_title, content_url, subject, text, html,
 * unsubscribe_url, unsubscribe_mailto, decided_at, attempt) and optionally
 * "template": {"subject", "text", "html"} for the host to render.
 * Exit status: 0 when every touch got an outcome, 3 when the plugin did not
 * load (the reason is printed as {"error": ...}), 2 for bad usage.
 */
#include "log.h"
#include "plugin_host.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SETTINGS 32
#define MAX_TOUCHES  1024

typedef struct pending {
    json_t *line;
    cad_plugin_touch_t touch;
    cad_template_t tmpl;
    bool has_tmpl;
} pending_t;

static int outstanding;
static uv_loop_t *loop;

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static void on_outcome(const cad_plugin_outcome_t *o, bool maybe_received, void *arg)
{
    (void)maybe_received;
    pending_t *p = arg;
    json_t *out = json_pack(
        "{s:I, s:s, s:s, s:s, s:I, s:s}", "touch_id", (json_int_t)p->touch.touch_id, "outcome",
        cad_outcome_kind_name(o->kind), "provider_id", o->provider_id, "reason", o->reason,
        "retry_after", (json_int_t)o->retry_after, "effect", cad_outcome_effect_name(o->effect));
    char *text = json_dumps(out, JSON_COMPACT);
    printf("%s\n", text);
    fflush(stdout);
    free(text);
    json_decref(out);
    outstanding--;
}

static void on_closed(void *arg)
{
    *(bool *)arg = true;
}

static void print_list(cad_plugin_host_t *host)
{
    cad_plugin_info_t info[CAD_MAX_CHANNELS];
    int n = cad_plugin_host_list(host, info, CAD_MAX_CHANNELS);
    for (int i = 0; i < n; i++) {
        json_t *opts = json_array();
        for (const cad_plugin_option_t *o = info[i].options; o && o->name; o++)
            json_array_append_new(opts,
                                  json_pack("{s:s, s:s?, s:b, s:s}", "name", o->name, "default",
                                            o->default_value, "required", o->required,
                                            "description", o->description ? o->description : ""));
        json_t *j =
            json_pack("{s:s, s:s, s:s, s:b, s:s, s:s, s:s, s:b, s:o}", "channel", info[i].channel,
                      "plugin", info[i].plugin, "path", info[i].path, "loaded", info[i].loaded,
                      "error", info[i].error, "description", info[i].description, "version",
                      info[i].version, "blocking", info[i].blocking, "options", opts);
        char *text = json_dumps(j, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
        json_decref(j);
    }
}

static int usage(void)
{
    fprintf(stderr, "usage: plugin_driver --plugin-dir DIR --state-dir DIR --plugin NAME "
                    "[--channel NAME] [--address email|phone|none] [--credentials-dir DIR] "
                    "[--timeout SECONDS] [--concurrency N] [--set key=value]... [--list]\n");
    return 2;
}

int main(int argc, char **argv)
{
    cad_log_init(CAD_LOG_DEBUG);
    cad_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.path = (char *)"driver.conf";
    cad_channel_setting_t settings[MAX_SETTINGS];
    int n_settings = 0;
    const char *plugin = NULL, *channel = NULL;
    enum cad_address_kind address = CAD_ADDRESS_NONE;
    bool list = false;
    cfg.channel_config[0].concurrency = 4;
    cfg.channel_config[0].timeout = 10;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--list") == 0) {
            list = true;
            continue;
        }
        if (!v)
            return usage();
        i++;
        if (strcmp(a, "--plugin-dir") == 0)
            cfg.plugin_dir = (char *)v;
        else if (strcmp(a, "--state-dir") == 0)
            cfg.state_dir = (char *)v;
        else if (strcmp(a, "--credentials-dir") == 0)
            cfg.credentials_dir = (char *)v;
        else if (strcmp(a, "--plugin") == 0)
            plugin = v;
        else if (strcmp(a, "--channel") == 0)
            channel = v;
        else if (strcmp(a, "--timeout") == 0)
            cfg.channel_config[0].timeout = atoi(v);
        else if (strcmp(a, "--concurrency") == 0)
            cfg.channel_config[0].concurrency = (uint32_t)atoi(v);
        else if (strcmp(a, "--address") == 0)
            address = strcmp(v, "email") == 0   ? CAD_ADDRESS_EMAIL
                      : strcmp(v, "phone") == 0 ? CAD_ADDRESS_PHONE
                                                : CAD_ADDRESS_NONE;
        else if (strcmp(a, "--set") == 0 && n_settings < MAX_SETTINGS && strchr(v, '=')) {
            char *copy = strdup(v);
            char *eq = strchr(copy, '=');
            *eq = '\0';
            settings[n_settings] = (cad_channel_setting_t){copy, eq + 1, 10 + n_settings};
            n_settings++;
        } else
            return usage();
    }
    if (!plugin || !cfg.plugin_dir || !cfg.state_dir)
        return usage();
    cad_channel_t *ch = &cfg.playbook.channels[0];
    snprintf(ch->name, sizeof ch->name, "%s", channel ? channel : plugin);
    snprintf(ch->plugin, sizeof ch->plugin, "%s", plugin);
    ch->address = address;
    ch->line = 9;
    cfg.playbook.n_channels = 1;
    cfg.channel_config[0].settings = settings;
    cfg.channel_config[0].n_settings = n_settings;

    uv_loop_t l;
    uv_loop_init(&l);
    loop = &l;
    cad_plugin_host_t *host = NULL;
    char err[CAD_ERRBUF] = "";
    if (cad_plugin_host_new(loop, &cfg, &host, err) < 0) {
        fprintf(stderr, "plugin_driver: %s\n", err);
        return 1;
    }
    int status = 0;
    if (list)
        print_list(host);
    pending_t *touches = calloc(MAX_TOUCHES, sizeof *touches);
    int n = 0;
    if (!cad_plugin_host_ready(host, 0)) {
        cad_plugin_info_t info;
        cad_plugin_host_list(host, &info, 1);
        json_t *j = json_pack("{s:s}", "error", info.error);
        char *text = json_dumps(j, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
        json_decref(j);
        status = 3;
    } else if (!list) {
        char line[1 << 16];
        while (n < MAX_TOUCHES && fgets(line, sizeof line, stdin)) {
            if (line[0] == '\n')
                continue;
            json_error_t jerr;
            json_t *o = json_loads(line, 0, &jerr);
            if (!json_is_object(o)) {
                fprintf(stderr, "plugin_driver: stdin line %d: %s\n", n + 1, jerr.text);
                return 2;
            }
            pending_t *p = &touches[n++];
            p->line = o;
            json_t *attrs = json_object_get(o, "attributes");
            char *attrs_text = attrs ? json_dumps(attrs, JSON_COMPACT) : strdup("{}");
            p->touch = (cad_plugin_touch_t){
                .struct_size = sizeof(cad_plugin_touch_t),
                .idempotency_key = str(o, "idempotency_key"),
                .touch_id = json_integer_value(json_object_get(o, "touch_id")),
                .customer = {str(o, "customer_id"), str(o, "customer_name"), attrs_text},
                .contact = {str(o, "contact_id"), str(o, "contact_name"), str(o, "first_name"),
                            str(o, "email"), str(o, "phone")},
                .rule = str(o, "rule"),
                .purpose = str(o, "purpose"),
                .channel = ch->name,
                .content = {str(o, "content_id"), str(o, "content_title"), str(o, "content_url")},
                .subject = str(o, "subject"),
                .text = str(o, "text"),
                .html = str(o, "html"),
                .unsubscribe_url = str(o, "unsubscribe_url"),
                .unsubscribe_mailto = str(o, "unsubscribe_mailto"),
                .decided_at = json_integer_value(json_object_get(o, "decided_at")),
                .attempt = (int)json_integer_value(json_object_get(o, "attempt")),
            };
            json_t *t = json_object_get(o, "template");
            if (json_is_object(t)) {
                p->has_tmpl = true;
                snprintf(p->tmpl.name, sizeof p->tmpl.name, "driver");
                p->tmpl.subject = (char *)json_string_value(json_object_get(t, "subject"));
                p->tmpl.text = (char *)json_string_value(json_object_get(t, "text"));
                p->tmpl.html = (char *)json_string_value(json_object_get(t, "html"));
            }
            outstanding++;
            if (cad_plugin_host_send(host, 0, &p->touch, p->has_tmpl ? &p->tmpl : NULL, on_outcome,
                                     p, err) < 0) {
                fprintf(stderr, "plugin_driver: send refused: %s\n", err);
                outstanding--;
                status = 1;
            }
            free(attrs_text);
        }
        while (outstanding > 0)
            uv_run(loop, UV_RUN_ONCE);
    }
    bool closed = false;
    cad_plugin_host_close(host, 1000, on_closed, &closed);
    uv_run(loop, UV_RUN_DEFAULT);
    if (!closed || uv_loop_close(loop) != 0) {
        fprintf(stderr, "plugin_driver: the host did not close cleanly\n");
        status = 1;
    }
    for (int i = 0; i < n; i++)
        json_decref(touches[i].line);
    free(touches);
    for (int i = 0; i < n_settings; i++)
        free(settings[i].name);
    return status;
}
