/*
 * test_plugin_host.c — plugin_host.c with real shared objects: the file and
 * webhook plugins of this tree and the refused fixtures of tests/plugins_bad
 * (symlinked into a temporary plugin directory). Covers refusing bad plugins
 * while the others keep working, option validation naming file:line, the
 * file plugin's atomic idempotent writes through the host, render failures
 * as permanent outcomes, secret files, transfer failures as retries, and
 * closing with queued work.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <jansson.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "plugin_host.h"

typedef struct fixture {
    char root[256];
    char plugins[300];
    char state[300];
    char creds[300];
    uv_loop_t loop;
    cad_config_t cfg;
    cad_channel_setting_t settings[CAD_MAX_CHANNELS][8];
    cad_plugin_host_t *host;
    bool closed;
} fixture_t;

typedef struct outcome {
    int calls;
    cad_plugin_outcome_t o;
} outcome_t;

static void link_plugin(fixture_t *fx, const char *dir, const char *name)
{
    const char *build = getenv("CADENCE_BUILD_DIR");
    assert_non_null(build);
    char src[512], dst[512];
    snprintf(src, sizeof src, "%s/%s/%s.so", build, dir, name);
    snprintf(dst, sizeof dst, "%s/%s.so", fx->plugins, name);
    if (access(src, R_OK) != 0)
        fail_msg("%s is missing: build the plugins and fixtures first", src);
    assert_int_equal(symlink(src, dst), 0);
}

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    snprintf(fx->root, sizeof fx->root, "/tmp/cadence-test-plugin-host-XXXXXX");
    assert_non_null(mkdtemp(fx->root));
    snprintf(fx->plugins, sizeof fx->plugins, "%s/plugins", fx->root);
    snprintf(fx->state, sizeof fx->state, "%s/state", fx->root);
    snprintf(fx->creds, sizeof fx->creds, "%s/creds", fx->root);
    mkdir(fx->plugins, 0700);
    mkdir(fx->state, 0700);
    mkdir(fx->creds, 0700);
    link_plugin(fx, "plugins", "file");
    link_plugin(fx, "plugins", "webhook");
    const char *bad[] = {"bad_abi",      "small_struct", "no_symbol",   "init_fails",
                         "no_callbacks", "wrong_name",   "bad_default", "twice_declared"};
    for (size_t i = 0; i < CAD_ARRAY_LEN(bad); i++)
        link_plugin(fx, "tests/plugins_bad", bad[i]);
    uv_loop_init(&fx->loop);
    fx->cfg.path = (char *)"/etc/cadence/cadenced.conf";
    fx->cfg.plugin_dir = fx->plugins;
    fx->cfg.state_dir = fx->state;
    fx->cfg.credentials_dir = fx->creds;
    cad_log_init(CAD_LOG_WARNING);
    *state = fx;
    return 0;
}

static void on_closed(void *arg)
{
    ((fixture_t *)arg)->closed = true;
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char sub[1024];
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        struct stat st;
        if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
            remove_tree(sub);
        else
            unlink(sub);
    }
    closedir(d);
    rmdir(path);
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    if (fx->host && !fx->closed)
        cad_plugin_host_close(fx->host, 1000, on_closed, fx);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    remove_tree(fx->root);
    free(fx);
    return 0;
}

/* Adds a channel; settings are "key=value" strings with lines 100, 101... */
static int add_channel(fixture_t *fx, const char *name, const char *plugin,
                       enum cad_address_kind address, uint32_t concurrency, const char **settings)
{
    int c = fx->cfg.playbook.n_channels++;
    cad_channel_t *ch = &fx->cfg.playbook.channels[c];
    snprintf(ch->name, sizeof ch->name, "%s", name);
    snprintf(ch->plugin, sizeof ch->plugin, "%s", plugin);
    ch->address = address;
    ch->line = 40 + c;
    cad_channel_config_t *cc = &fx->cfg.channel_config[c];
    cc->concurrency = concurrency;
    cc->timeout = 5;
    cc->settings = fx->settings[c];
    for (int i = 0; settings && settings[i]; i++) {
        char *copy = strdup(settings[i]);
        char *eq = strchr(copy, '=');
        *eq = '\0';
        fx->settings[c][i] = (cad_channel_setting_t){copy, strdup(eq + 1), 100 + i};
        cc->n_settings++;
    }
    return c;
}

static void free_settings(fixture_t *fx)
{
    for (int c = 0; c < fx->cfg.playbook.n_channels; c++)
        for (int i = 0; i < fx->cfg.channel_config[c].n_settings; i++) {
            free(fx->settings[c][i].name);
            free(fx->settings[c][i].value);
        }
}

static void start_host(fixture_t *fx)
{
    char err[CAD_ERRBUF] = "";
    assert_int_equal(cad_plugin_host_new(&fx->loop, &fx->cfg, &fx->host, err), 0);
}

static void close_host(fixture_t *fx)
{
    cad_plugin_host_close(fx->host, 1000, on_closed, fx);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_true(fx->closed);
    free_settings(fx);
}

static cad_plugin_touch_t touch(int64_t id, const char *key)
{
    cad_plugin_touch_t t = {
        .struct_size = sizeof t,
        .idempotency_key = key,
        .touch_id = id,
        .customer = {"acme", "Acme & Co", "{\"plan\": \"gold\"}"},
        .contact = {"c-1", "Ada Lovelace", "Ada", "ada@example.com", "+15550100"},
        .rule = "welcome",
        .purpose = "value",
        .channel = "preview",
        .content = {"guide", "The guide", "https://example.com/guide"},
        .subject = "",
        .text = "",
        .html = "",
        .unsubscribe_url = "https://example.com/u/1",
        .unsubscribe_mailto = "",
        .decided_at = 1790000000,
        .attempt = 1,
    };
    return t;
}

static void on_outcome(const cad_plugin_outcome_t *o, bool maybe_received, void *arg)
{
    (void)maybe_received;
    outcome_t *out = arg;
    out->calls++;
    out->o = *o;
}

static void wait_for(fixture_t *fx, outcome_t *outs, int n)
{
    for (int spins = 0; spins < 100000; spins++) {
        int done = 0;
        for (int i = 0; i < n; i++)
            done += outs[i].calls;
        if (done == n)
            return;
        uv_run(&fx->loop, UV_RUN_ONCE);
    }
    fail_msg("outcomes did not arrive");
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static const cad_template_t welcome = {
    .name = "welcome",
    .subject = (char *)"Welcome, {{contact.first_name}}",
    .text = (char *)"Dear {{contact.first_name}},\nyour {{customer.plan}} plan: {{content.url}}\n",
    .html = (char *)"<p>{{customer.name}}</p>",
};

/* ---- tests ------------------------------------------------------------------ */

static void test_plugin_host_refuses_bad_plugins_and_keeps_the_others(void **state)
{
    fixture_t *fx = *state;
    const char *bad[] = {"bad_abi",      "small_struct", "no_symbol",   "init_fails",
                         "no_callbacks", "wrong_name",   "bad_default", "twice_declared",
                         "missing",      "../file"};
    const char *why[] = {"built for plugin ABI 99.0",
                         "smaller than",
                         "does not export the symbol cadence_channel_plugin",
                         "refusing to start: the fixture always fails",
                         "lacks a callback",
                         "calls itself \"someone_else\"",
                         "the default of its option retries is not an integer: \"abc\"",
                         "declares option url twice",
                         "cannot load plugin",
                         "may hold only"};
    for (size_t i = 0; i < CAD_ARRAY_LEN(bad); i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%zu", i);
        add_channel(fx, name, bad[i], CAD_ADDRESS_NONE, 1, NULL);
    }
    int good = add_channel(fx, "preview", "file", CAD_ADDRESS_NONE, 2, NULL);
    start_host(fx);
    cad_plugin_info_t info[CAD_MAX_CHANNELS];
    assert_int_equal(cad_plugin_host_list(fx->host, info, CAD_MAX_CHANNELS), good + 1);
    for (size_t i = 0; i < CAD_ARRAY_LEN(bad); i++) {
        assert_false(info[i].loaded);
        assert_false(cad_plugin_host_ready(fx->host, (int)i));
        if (!strstr(info[i].error, why[i]))
            fail_msg("channel %zu: error \"%s\" lacks \"%s\"", i, info[i].error, why[i]);
        cad_plugin_touch_t t = touch(1, "k");
        char err[CAD_ERRBUF] = "";
        outcome_t o = {0};
        assert_int_equal(cad_plugin_host_send(fx->host, (int)i, &t, NULL, on_outcome, &o, err),
                         -CAD_ENOTFOUND);
        assert_non_null(strstr(err, "has no loaded plugin"));
    }
    assert_true(info[good].loaded);
    assert_true(info[good].blocking);
    assert_string_equal(info[good].plugin, "file");
    assert_string_equal(info[good].options[0].name, "directory");
    cad_plugin_touch_t t = touch(7, "still-works");
    outcome_t o = {0};
    char err[CAD_ERRBUF];
    assert_int_equal(cad_plugin_host_send(fx->host, good, &t, NULL, on_outcome, &o, err), 0);
    assert_int_equal(o.calls, 0); /* never before send returns */
    wait_for(fx, &o, 1);
    assert_int_equal(o.o.kind, CAD_OUTCOME_DELIVERED);
    assert_string_equal(o.o.provider_id, "still-works.json");
    assert_int_equal(cad_plugin_host_send(fx->host, 99, &t, NULL, on_outcome, &o, err),
                     -CAD_EINVAL);
    close_host(fx);
}

static void test_plugin_host_validates_options_with_file_and_line(void **state)
{
    fixture_t *fx = *state;
    const char *typo[] = {"urll=http://x", NULL};
    const char *mistyped[] = {"url=http://127.0.0.1:1/", "secret_file=s", "timeout=soon", NULL};
    const char *missing[] = {"secret_file=s", NULL};
    add_channel(fx, "typo", "webhook", CAD_ADDRESS_NONE, 1, typo);
    add_channel(fx, "mistyped", "webhook", CAD_ADDRESS_NONE, 1, mistyped);
    add_channel(fx, "missing", "webhook", CAD_ADDRESS_NONE, 1, missing);
    start_host(fx);
    cad_plugin_info_t info[3];
    cad_plugin_host_list(fx->host, info, 3);
    for (int i = 0; i < 3; i++)
        assert_false(info[i].loaded);
    assert_non_null(strstr(info[0].error, "/etc/cadence/cadenced.conf:100: channel \"typo\": "
                                          "plugin webhook has no option \"urll\""));
    assert_non_null(strstr(info[0].error, "options: url, secret_file, timeout, event_type"));
    assert_non_null(strstr(info[1].error, "cadenced.conf:102: channel \"mistyped\": option "
                                          "timeout must be a duration: \"soon\""));
    assert_non_null(strstr(info[2].error, "cadenced.conf:42: channel \"missing\": option url "
                                          "(a string) is required by plugin webhook"));
    close_host(fx);
}

static void test_plugin_host_file_plugin_writes_eml_atomically_and_idempotently(void **state)
{
    fixture_t *fx = *state;
    const char *settings[] = {"directory=mail/out", "from=Team <team@example.com>", NULL};
    int c = add_channel(fx, "email-preview", "file", CAD_ADDRESS_EMAIL, 4, settings);
    start_host(fx);
    outcome_t o[2] = {{0}};
    char err[CAD_ERRBUF];
    cad_plugin_touch_t t = touch(1, "acme/welcome/1");
    assert_int_equal(cad_plugin_host_send(fx->host, c, &t, &welcome, on_outcome, &o[0], err), 0);
    wait_for(fx, o, 1);
    assert_int_equal(o[0].o.kind, CAD_OUTCOME_DELIVERED);
    assert_string_equal(o[0].o.provider_id, "acme_2fwelcome_2f1.eml");
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/mail/out", fx->state);
    snprintf(path, sizeof path, "%s/acme_2fwelcome_2f1.eml", dir);
    char *eml = read_file(path);
    assert_non_null(eml);
    assert_non_null(strstr(eml, "From: Team <team@example.com>\r\n"));
    assert_non_null(strstr(eml, "To: Ada Lovelace <ada@example.com>\r\n"));
    assert_non_null(strstr(eml, "Subject: Welcome, Ada\r\n"));
    assert_non_null(strstr(eml, "\r\nDate: "));
    /* the email channel's Message-ID: a digest of the key at the From domain */
    assert_non_null(strstr(eml, "Message-ID: <"));
    assert_non_null(strstr(eml, "@example.com>\r\n"));
    assert_non_null(strstr(eml, "X-Cadence-Rule: welcome\r\n"));
    assert_non_null(strstr(eml, "List-Unsubscribe: <https://example.com/u/1>\r\n"));
    assert_non_null(strstr(eml, "multipart/alternative"));
    assert_non_null(strstr(eml, "Dear Ada,\r\nyour gold plan: https://example.com/guide\r\n"));
    assert_non_null(strstr(eml, "<p>Acme &amp; Co</p>"));
    free(eml);
    /* the same key again: one file, rewritten, and no temporary left behind */
    t = touch(1, "acme/welcome/1");
    t.contact.first_name = "Augusta";
    assert_int_equal(cad_plugin_host_send(fx->host, c, &t, &welcome, on_outcome, &o[1], err), 0);
    wait_for(fx, &o[1], 1);
    assert_int_equal(o[1].o.kind, CAD_OUTCOME_DELIVERED);
    assert_int_equal(count_files(dir), 1);
    eml = read_file(path);
    assert_non_null(strstr(eml, "Subject: Welcome, Augusta\r\n"));
    free(eml);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
    close_host(fx);
}

/* Keys that differ only in bytes outside [A-Za-z0-9.-] ('/' or ':' against
 * '_') or past the part of a long key that fits in a file name must still
 * get files of their own, each name within NAME_MAX. */
static void test_plugin_host_file_plugin_gives_every_key_its_own_file(void **state)
{
    fixture_t *fx = *state;
    int c = add_channel(fx, "crm", "file", CAD_ADDRESS_NONE, 1, NULL);
    start_host(fx);
    static char long_a[801], long_b[801];
    memset(long_a, 'k', 800);
    memset(long_b, 'k', 800);
    long_b[799] = 'j';
    const char *keys[] = {"acme%2Fx/r/e:ev:1",
                          "acme%2Fx/r/e:ev_1",
                          "acme_2Fx_r_e_ev_1",
                          ".hidden",
                          "_2ehidden",
                          long_a,
                          long_b};
    const char *names[] = {"acme_252Fx_2fr_2fe_3aev_3a1.json", "acme_252Fx_2fr_2fe_3aev_5f1.json",
                           "acme_5f2Fx_5fr_5fe_5fev_5f1.json", "_2ehidden.json",
                           "_5f2ehidden.json"};
    enum { N = 7 };
    char err[CAD_ERRBUF];
    for (int i = 0; i < N; i++) {
        outcome_t o = {0};
        cad_plugin_touch_t t = touch(i + 1, keys[i]);
        assert_int_equal(cad_plugin_host_send(fx->host, c, &t, &welcome, on_outcome, &o, err), 0);
        wait_for(fx, &o, 1);
        assert_int_equal(o.o.kind, CAD_OUTCOME_DELIVERED);
        if (i < 5)
            assert_string_equal(o.o.provider_id, names[i]);
        assert_true(strlen(o.o.provider_id) <= 210);
        if (i >= 5) /* cut, then '~' and a digest of the whole key */
            assert_non_null(strchr(o.o.provider_id, '~'));
    }
    char dir[512];
    snprintf(dir, sizeof dir, "%s/outbox", fx->state);
    assert_int_equal(count_files(dir), N);
    close_host(fx);
}

static void test_plugin_host_file_plugin_writes_json_for_other_channels(void **state)
{
    fixture_t *fx = *state;
    int c = add_channel(fx, "crm", "file", CAD_ADDRESS_NONE, 2, NULL);
    start_host(fx);
    outcome_t o = {0};
    char err[CAD_ERRBUF];
    cad_plugin_touch_t t = touch(42, "k42");
    assert_int_equal(cad_plugin_host_send(fx->host, c, &t, &welcome, on_outcome, &o, err), 0);
    wait_for(fx, &o, 1);
    assert_int_equal(o.o.kind, CAD_OUTCOME_DELIVERED);
    char path[600];
    snprintf(path, sizeof path, "%s/outbox/k42.json", fx->state);
    char *text = read_file(path);
    assert_non_null(text);
    json_error_t jerr;
    json_t *doc = json_loads(text, 0, &jerr);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "type")), "touch.decided");
    json_t *data = json_object_get(doc, "data");
    assert_int_equal(json_integer_value(json_object_get(data, "touch_id")), 42);
    assert_string_equal(json_string_value(json_object_get(data, "idempotency_key")), "k42");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(data, "message"), "subject")),
        "Welcome, Ada");
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(json_object_get(data, "customer"), "attributes"), "plan")),
        "gold");
    json_decref(doc);
    free(text);
    close_host(fx);
}

static void test_plugin_host_render_failure_is_permanent_and_names_the_variable(void **state)
{
    fixture_t *fx = *state;
    int c = add_channel(fx, "crm", "file", CAD_ADDRESS_NONE, 1, NULL);
    start_host(fx);
    outcome_t o = {0};
    char err[CAD_ERRBUF];
    cad_plugin_touch_t t = touch(5, "k5");
    t.customer.attributes = "{}";
    assert_int_equal(cad_plugin_host_send(fx->host, c, &t, &welcome, on_outcome, &o, err), 0);
    assert_int_equal(o.calls, 0);
    wait_for(fx, &o, 1);
    assert_int_equal(o.o.kind, CAD_OUTCOME_PERMANENT);
    assert_non_null(strstr(o.o.reason, "template welcome, text part"));
    assert_non_null(strstr(o.o.reason, "{{customer.plan}}"));
    char path[600];
    snprintf(path, sizeof path, "%s/outbox/k5.json", fx->state);
    assert_int_not_equal(access(path, F_OK), 0);
    close_host(fx);
}

static void write_secret(fixture_t *fx, const char *name, const char *content)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", fx->creds, name);
    FILE *f = fopen(path, "w");
    fputs(content, f);
    fclose(f);
}

static void test_plugin_host_webhook_secret_files_and_unreachable_endpoint(void **state)
{
    fixture_t *fx = *state;
    write_secret(fx, "good", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n");
    write_secret(fx, "short", "whsec_c2hvcnQ=\n");
    write_secret(fx, "junk", "whsec_MfKQ9r8GKYqrTwjU*D8ILPZIo2LaLaSw\n");
    const char *good[] = {"url=http://127.0.0.1:1/hook", "secret_file=good", "timeout=2s", NULL};
    const char *shortkey[] = {"url=http://127.0.0.1:1/hook", "secret_file=short", NULL};
    const char *junk[] = {"url=http://127.0.0.1:1/hook", "secret_file=junk", NULL};
    const char *absent[] = {"url=http://127.0.0.1:1/hook", "secret_file=nope", NULL};
    const char *badurl[] = {"url=ftp://example.com/", "secret_file=good", NULL};
    int c = add_channel(fx, "hook", "webhook", CAD_ADDRESS_NONE, 2, good);
    add_channel(fx, "short", "webhook", CAD_ADDRESS_NONE, 1, shortkey);
    add_channel(fx, "junk", "webhook", CAD_ADDRESS_NONE, 1, junk);
    add_channel(fx, "absent", "webhook", CAD_ADDRESS_NONE, 1, absent);
    add_channel(fx, "badurl", "webhook", CAD_ADDRESS_NONE, 1, badurl);
    start_host(fx);
    cad_plugin_info_t info[5];
    cad_plugin_host_list(fx->host, info, 5);
    assert_true(info[0].loaded);
    assert_false(info[0].blocking);
    assert_non_null(strstr(info[1].error, "at least 24 are required"));
    assert_non_null(strstr(info[2].error, "not valid base64"));
    assert_non_null(strstr(info[3].error, "cannot open secret file"));
    assert_non_null(strstr(info[3].error, "/creds/nope"));
    assert_non_null(strstr(info[4].error, "http:// or https://"));
    /* nothing listens on port 1: a transfer failure is a retry */
    outcome_t o = {0};
    char err[CAD_ERRBUF];
    cad_plugin_touch_t t = touch(9, "k9");
    assert_int_equal(cad_plugin_host_send(fx->host, c, &t, &welcome, on_outcome, &o, err), 0);
    wait_for(fx, &o, 1);
    assert_int_equal(o.o.kind, CAD_OUTCOME_RETRY);
    assert_non_null(strstr(o.o.reason, "request failed"));
    cad_plugin_host_list(fx->host, info, 1);
    assert_int_equal(info[0].retried, 1);
    close_host(fx);
}

static void test_plugin_host_close_reports_queued_work_as_retry(void **state)
{
    fixture_t *fx = *state;
    int c = add_channel(fx, "crm", "file", CAD_ADDRESS_NONE, 1, NULL);
    start_host(fx);
    enum { N = 6 };
    outcome_t o[N];
    memset(o, 0, sizeof o);
    char keys[N][16];
    char err[CAD_ERRBUF];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "q%d", i);
        cad_plugin_touch_t t = touch(i, keys[i]);
        assert_int_equal(cad_plugin_host_send(fx->host, c, &t, NULL, on_outcome, &o[i], err), 0);
    }
    cad_plugin_info_t info;
    cad_plugin_host_list(fx->host, &info, 1);
    assert_int_equal(info.in_flight, 1);
    assert_int_equal(info.queued, N - 1);
    cad_plugin_host_close(fx->host, 1000, on_closed, fx);
    cad_plugin_touch_t late = touch(99, "late");
    outcome_t lo = {0};
    assert_int_equal(cad_plugin_host_send(fx->host, c, &late, NULL, on_outcome, &lo, err),
                     -CAD_EBUSY);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_true(fx->closed);
    assert_int_equal(o[0].calls, 1);
    assert_int_equal(o[0].o.kind, CAD_OUTCOME_DELIVERED);
    for (int i = 1; i < N; i++) {
        assert_int_equal(o[i].calls, 1);
        assert_int_equal(o[i].o.kind, CAD_OUTCOME_RETRY);
        assert_non_null(strstr(o[i].o.reason, "shutting down"));
    }
    assert_int_equal(lo.calls, 0);
    free_settings(fx);
}

static void test_plugin_host_concurrency_limits_blocking_sends(void **state)
{
    fixture_t *fx = *state;
    int c = add_channel(fx, "crm", "file", CAD_ADDRESS_NONE, 3, NULL);
    start_host(fx);
    enum { N = 40 };
    outcome_t o[N];
    memset(o, 0, sizeof o);
    char keys[N][16];
    char err[CAD_ERRBUF];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "c%d", i);
        cad_plugin_touch_t t = touch(i, keys[i]);
        assert_int_equal(cad_plugin_host_send(fx->host, c, &t, NULL, on_outcome, &o[i], err), 0);
        cad_plugin_info_t info;
        cad_plugin_host_list(fx->host, &info, 1);
        assert_true(info.in_flight <= 3);
    }
    wait_for(fx, o, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(o[i].o.kind, CAD_OUTCOME_DELIVERED);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/outbox", fx->state);
    assert_int_equal(count_files(dir), N);
    cad_plugin_info_t info;
    cad_plugin_host_list(fx->host, &info, 1);
    assert_int_equal(info.delivered, N);
    assert_int_equal(info.in_flight, 0);
    close_host(fx);
}

static void test_plugin_host_check_reports_without_starting_anything(void **state)
{
    fixture_t *fx = *state;
    const char *typo[] = {"url=http://127.0.0.1:1/", "secret_file=absent", "timout=5s", NULL};
    const char *ftp[] = {"url=ftp://127.0.0.1/", "secret_file=absent", NULL};
    const char *no_secret[] = {"url=http://127.0.0.1:1/", "secret_file=absent", NULL};
    const char *preview[] = {"directory=never-created", NULL};
    add_channel(fx, "crm", "webhook", CAD_ADDRESS_NONE, 1, typo);
    add_channel(fx, "old", "bad_abi", CAD_ADDRESS_NONE, 1, NULL);
    add_channel(fx, "preview", "file", CAD_ADDRESS_EMAIL, 1, preview);
    add_channel(fx, "ftp", "webhook", CAD_ADDRESS_NONE, 1, ftp);
    add_channel(fx, "nosecret", "webhook", CAD_ADDRESS_NONE, 1, no_secret);
    add_channel(fx, "legacy", "init_fails", CAD_ADDRESS_NONE, 1, NULL);
    char *text = NULL, *notes = NULL;
    size_t len = 0, notes_len = 0;
    FILE *errors = open_memstream(&text, &len);
    FILE *note_file = open_memstream(&notes, &notes_len);
    assert_int_equal(cad_plugin_host_check(&fx->cfg, errors, note_file), 3);
    fclose(errors);
    fclose(note_file);
    assert_non_null(strstr(text, "/etc/cadence/cadenced.conf:102: channel \"crm\": plugin "
                                 "webhook has no option \"timout\""));
    /* every line names file, line and channel, load errors too */
    assert_non_null(strstr(text, "/etc/cadence/cadenced.conf:41: channel \"old\": "));
    assert_non_null(strstr(text, "built for plugin ABI 99.0"));
    /* the plugin's own init ran: a setting only it knows is refused... */
    assert_non_null(strstr(text, "/etc/cadence/cadenced.conf:43: channel \"ftp\": plugin webhook "
                                 "would fail to start: option url must be an http:// or https://"));
    /* ...a secret file this machine cannot read is a note, not an error */
    assert_null(strstr(text, "nosecret"));
    assert_non_null(strstr(notes, "/etc/cadence/cadenced.conf:44: channel \"nosecret\": not "
                                  "checked further here: "));
    /* ...and a plugin of ABI 1.0, whose init cannot run as a check, is
     * noted, not passed over in silence */
    assert_non_null(strstr(notes, "cadenced.conf:45: channel \"legacy\": not checked further "
                                  "here: plugin init_fails is built for ABI 1.0"));
    /* ...and the file plugin, told it is only checking, created nothing */
    char dir[600];
    snprintf(dir, sizeof dir, "%s/never-created", fx->state);
    assert_int_not_equal(access(dir, F_OK), 0);
    free(text);
    free(notes);
    free_settings(fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_plugin_host_refuses_bad_plugins_and_keeps_the_others,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_plugin_host_validates_options_with_file_and_line,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_plugin_host_file_plugin_writes_eml_atomically_and_idempotently, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plugin_host_file_plugin_gives_every_key_its_own_file,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_plugin_host_file_plugin_writes_json_for_other_channels,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_plugin_host_render_failure_is_permanent_and_names_the_variable, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_plugin_host_webhook_secret_files_and_unreachable_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plugin_host_close_reports_queued_work_as_retry, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_plugin_host_concurrency_limits_blocking_sends, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_plugin_host_check_reports_without_starting_anything,
                                        setup, teardown),
    };
    return cmocka_run_group_tests_name("plugin_host", tests, NULL, NULL);
}
