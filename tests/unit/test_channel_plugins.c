/*
 * test_channel_plugins.c — the email and sms plugins, loaded by the real
 * plugin host (plugin_host.c) on a libuv loop.
 *
 * With no server at all, it checks what the plugins must decide before
 * any connection: settings refused at load, header injection and invalid numbers refused as
 * permanent failures (a closed loopback port proves nothing was attempted: an attempt would come
 * back as a retry), and connection failures mapped to retries.
 *
 * The same plugins against loopback SMTP and HTTP servers are driven by
 * tests/integration/test_plugins_email.py and test_plugins_sms.py.
 */
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "config.h"
#include "log.h"
#include "plugin_host.h"

#define MAX_SETTINGS 32

/* One channel's configuration, built in memory the way config.c would. */
typedef struct driver_config {
    cad_config_t *cfg;
    cad_channel_setting_t settings[MAX_SETTINGS];
    int n_settings;
} driver_config_t;

typedef struct driver_result {
    bool done;
    bool maybe_received;
    cad_plugin_outcome_t outcome;
} driver_result_t;

static void driver_config_init(driver_config_t *dc, const char *plugin_dir, const char *plugin,
                               const char *channel, const char *credentials_dir)
{
    memset(dc, 0, sizeof(*dc));
    dc->cfg = calloc(1, sizeof(*dc->cfg));
    assert_non_null(dc->cfg);
    cad_config_t *cfg = dc->cfg;
    cfg->path = (char *)"driver.conf";
    cfg->state_dir = (char *)"/tmp";
    cfg->plugin_dir = (char *)plugin_dir;
    cfg->credentials_dir = (char *)credentials_dir;
    cfg->playbook.n_channels = 1;
    cad_channel_t *ch = &cfg->playbook.channels[0];
    snprintf(ch->name, sizeof(ch->name), "%s", channel);
    snprintf(ch->plugin, sizeof(ch->plugin), "%s", plugin);
    ch->address = strcmp(plugin, "sms") == 0     ? CAD_ADDRESS_PHONE
                  : strcmp(plugin, "email") == 0 ? CAD_ADDRESS_EMAIL
                                                 : CAD_ADDRESS_NONE;
    ch->line = 1;
    cfg->channel_config[0].settings = dc->settings;
    cfg->channel_config[0].concurrency = 1;
    cfg->channel_config[0].timeout = 10;
}

/* Adds "key=value" (the strings are borrowed: they must outlive the host). */
static void driver_config_set(driver_config_t *dc, char *key, char *value)
{
    assert_true(dc->n_settings < MAX_SETTINGS);
    cad_channel_setting_t *s = &dc->settings[dc->n_settings++];
    s->name = key;
    s->value = value;
    s->line = dc->n_settings + 1;
    dc->cfg->channel_config[0].n_settings = dc->n_settings;
}

static void on_done(const cad_plugin_outcome_t *outcome, bool maybe_received, void *arg)
{
    driver_result_t *r = arg;
    r->outcome = *outcome;
    r->maybe_received = maybe_received;
    r->done = true;
}

static void on_closed(void *arg)
{
    *(bool *)arg = true;
}

/*
 * Loads the channel and sends `touch` through it, running the loop until the
 * outcome is known and the host has closed. Returns 0 with *result filled, or
 * -1 with the host's load error in `err`.
 */
static int driver_send(driver_config_t *dc, const cad_plugin_touch_t *touch,
                       driver_result_t *result, char *err, size_t err_size)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    cad_plugin_host_t *host = NULL;
    char e[CAD_ERRBUF] = "";
    memset(result, 0, sizeof(*result));
    int rc = cad_plugin_host_new(&loop, dc->cfg, &host, e);
    if (rc < 0) {
        snprintf(err, err_size, "%s", e);
        uv_loop_close(&loop);
        return -1;
    }
    if (!cad_plugin_host_ready(host, 0)) {
        cad_plugin_info_t info;
        cad_plugin_host_list(host, &info, 1);
        snprintf(err, err_size, "%s", info.error);
        rc = -1;
    } else if (cad_plugin_host_send(host, 0, touch, NULL, on_done, result, e) < 0) {
        snprintf(err, err_size, "%s", e);
        rc = -1;
    } else {
        while (!result->done && uv_run(&loop, UV_RUN_ONCE))
            ;
    }
    bool closed = false;
    cad_plugin_host_close(host, 1000, on_closed, &closed);
    while (!closed && uv_run(&loop, UV_RUN_ONCE))
        ;
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return rc;
}

static const char *driver_plugin_dir(void)
{
    static char dir[4096];
    const char *build = getenv("CADENCE_PLUGIN_BUILD_DIR");
    if (build)
        return build;
    build = getenv("CADENCE_BUILD_DIR");
    snprintf(dir, sizeof(dir), "%s/plugins", build ? build : ".");
    return dir;
}

/* ---- the serverless checks ------------------------------------------------------------- */

/* A loopback TCP port nothing listens on: bound, then closed. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t len = sizeof(sa);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static cad_plugin_touch_t sample_touch(void)
{
    cad_plugin_touch_t touch = {
        .struct_size = sizeof(cad_plugin_touch_t),
        .idempotency_key = "t-1-thanks-e1",
        .touch_id = 1,
        .customer = {"c-1", "Ada & Co", "{}"},
        .contact = {"p-1", "Ada Lovelace", "Ada", "ada@example.org", "+447700900123"},
        .rule = "thanks",
        .purpose = "appreciation",
        .channel = "",
        .content = {"", "", ""},
        .subject = "Thank you",
        .text = "Thank you for your order.",
        .html = "",
        .unsubscribe_url = "",
        .unsubscribe_mailto = "",
        .decided_at = 1795424590,
        .attempt = 1,
    };
    return touch;
}

static char credentials_dir[] = "/tmp/cadence-channel-test-XXXXXX";

static int setup_credentials(void **state)
{
    if (!mkdtemp(credentials_dir))
        return -1;
    char path[sizeof(credentials_dir) + 32];
    snprintf(path, sizeof(path), "%s/token", credentials_dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs("secret-token\n", f);
    fclose(f);
    return 0;
}

static int teardown_credentials(void **state)
{
    char path[sizeof(credentials_dir) + 32];
    snprintf(path, sizeof(path), "%s/token", credentials_dir);
    unlink(path);
    rmdir(credentials_dir);
    return 0;
}

static void email_config(driver_config_t *dc, char *url)
{
    driver_config_init(dc, driver_plugin_dir(), "email", "email", credentials_dir);
    driver_config_set(dc, "url", url);
    driver_config_set(dc, "from", "hello@shop.example");
    driver_config_set(dc, "starttls", "off");
}

static void sms_config(driver_config_t *dc, char *base_url)
{
    driver_config_init(dc, driver_plugin_dir(), "sms", "sms", credentials_dir);
    driver_config_set(dc, "base_url", base_url);
    driver_config_set(dc, "account_sid", "AC123");
    driver_config_set(dc, "auth_token_file", "token");
    driver_config_set(dc, "from", "+15557654321");
}

static void assert_load_error(driver_config_t *dc, const char *expected)
{
    cad_plugin_touch_t touch = sample_touch();
    driver_result_t result;
    char err[CAD_ERRBUF * 2] = "";
    assert_int_equal(driver_send(dc, &touch, &result, err, sizeof(err)), -1);
    if (!strstr(err, expected))
        fail_msg("load error \"%s\" does not contain \"%s\"", err, expected);
    free(dc->cfg);
}

static void assert_outcome(driver_config_t *dc, const cad_plugin_touch_t *touch,
                           enum cad_outcome_kind kind, enum cad_outcome_effect effect,
                           const char *reason)
{
    driver_result_t result;
    char err[CAD_ERRBUF * 2] = "";
    if (driver_send(dc, touch, &result, err, sizeof(err)) < 0)
        fail_msg("plugin did not load: %s", err);
    assert_true(result.done);
    if (!strstr(result.outcome.reason, reason))
        fail_msg("reason \"%s\" does not contain \"%s\"", result.outcome.reason, reason);
    assert_string_equal(cad_outcome_kind_name(result.outcome.kind), cad_outcome_kind_name(kind));
    assert_string_equal(cad_outcome_effect_name(result.outcome.effect),
                        cad_outcome_effect_name(effect));
    free(dc->cfg);
}

static void test_email_settings_refused_at_load(void **state)
{
    driver_config_t dc;
    email_config(&dc, "http://127.0.0.1:25");
    assert_load_error(&dc,
                      "email: url \"http://127.0.0.1:25\" must start with smtp:// or smtps://");

    email_config(&dc, "smtp://127.0.0.1:25");
    driver_config_set(&dc, "starttls", "maybe");
    assert_load_error(&dc, "email: starttls \"maybe\" is not one of \"required\" or \"off\"");

    email_config(&dc, "smtp://127.0.0.1:25");
    driver_config_set(&dc, "from", "not-an-address");
    assert_load_error(&dc, "email: from address \"not-an-address\" is not local@domain");

    email_config(&dc, "smtp://127.0.0.1:25");
    driver_config_set(&dc, "from_name", "Caf\xc3");
    assert_load_error(&dc, "email: from_name is not valid UTF-8");

    email_config(&dc, "smtp://127.0.0.1:25");
    driver_config_set(&dc, "from_name", "Shop\r\nBcc: x@y.z");
    assert_load_error(&dc, "email: header injection refused in from_name");

    email_config(&dc, "smtp://127.0.0.1:25");
    driver_config_set(&dc, "username", "mailer");
    assert_load_error(&dc, "username and password_file must be set together");

    email_config(&dc, "smtp://127.0.0.1:25");
    driver_config_set(&dc, "username", "mailer");
    driver_config_set(&dc, "password_file", "missing-file");
    assert_load_error(&dc, "missing-file");

    email_config(&dc, "smtp://127.0.0.1:25");
    driver_config_set(&dc, "unsubscribe_url", "http://shop.example/u");
    assert_load_error(&dc, "unsubscribe_url \"http://shop.example/u\" must start with https://");

    email_config(&dc, "smtp://127.0.0.1:25");
    driver_config_set(&dc, "from_nmae", "Shop");
    assert_load_error(&dc, "plugin email has no option \"from_nmae\"");
}

static void test_email_header_injection_refused_before_connecting(void **state)
{
    char url[64];
    snprintf(url, sizeof(url), "smtp://127.0.0.1:%d", closed_port());
    driver_config_t dc;
    cad_plugin_touch_t touch = sample_touch();
    touch.subject = "Thank you\r\nBcc: everyone@example.org";
    email_config(&dc, url);
    assert_outcome(&dc, &touch, CAD_OUTCOME_PERMANENT, CAD_EFFECT_NONE,
                   "header injection refused in subject");

    touch = sample_touch();
    touch.contact.name = "Ada\nX-Evil: yes";
    email_config(&dc, url);
    assert_outcome(&dc, &touch, CAD_OUTCOME_PERMANENT, CAD_EFFECT_NONE,
                   "header injection refused in to name");

    touch = sample_touch();
    touch.contact.email = "ada@example.org\r\nRCPT TO:<x@y.z>";
    email_config(&dc, url);
    assert_outcome(&dc, &touch, CAD_OUTCOME_PERMANENT, CAD_EFFECT_NONE,
                   "header injection refused in to");
}

static void test_email_without_address_is_permanent(void **state)
{
    driver_config_t dc;
    cad_plugin_touch_t touch = sample_touch();
    touch.contact.email = "";
    email_config(&dc, "smtp://127.0.0.1:25");
    assert_outcome(&dc, &touch, CAD_OUTCOME_PERMANENT, CAD_EFFECT_CONTACT_UNUSABLE,
                   "contact p-1 has no email address");
}

static void test_email_connection_refused_is_retry(void **state)
{
    char url[64];
    snprintf(url, sizeof(url), "smtp://127.0.0.1:%d", closed_port());
    driver_config_t dc;
    cad_plugin_touch_t touch = sample_touch();
    email_config(&dc, url);
    assert_outcome(&dc, &touch, CAD_OUTCOME_RETRY, CAD_EFFECT_NONE, "SMTP transfer failed");
}

static void test_sms_settings_refused_at_load(void **state)
{
    driver_config_t dc;
    sms_config(&dc, "ftp://127.0.0.1");
    assert_load_error(&dc, "sms: base_url \"ftp://127.0.0.1\" must be an http:// or https:// URL");

    sms_config(&dc, "http://127.0.0.1:1");
    driver_config_set(&dc, "account_sid", "AC/../x");
    assert_load_error(&dc, "sms: account_sid \"AC/../x\" must be 1 to 64 letters and digits");

    sms_config(&dc, "http://127.0.0.1:1");
    driver_config_set(&dc, "messaging_service_sid", "MG1");
    assert_load_error(&dc, "sms: set exactly one of from and messaging_service_sid (both are set)");

    sms_config(&dc, "http://127.0.0.1:1");
    driver_config_set(&dc, "from", "+1 555 765");
    assert_load_error(&dc, "sms: from \"+1 555 765\" is not an E.164 number");

    sms_config(&dc, "http://127.0.0.1:1");
    driver_config_set(&dc, "max_segments", "11");
    assert_load_error(&dc, "sms: max_segments 11 is outside 1 to 10");

    sms_config(&dc, "http://127.0.0.1:1");
    driver_config_set(&dc, "max_segments", "three");
    assert_load_error(&dc, "option max_segments must be a");

    sms_config(&dc, "http://127.0.0.1:1");
    driver_config_set(&dc, "auth_token_file", "no-such-token");
    assert_load_error(&dc, "no-such-token");
}

static void test_sms_invalid_number_refused_before_request(void **state)
{
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", closed_port());
    driver_config_t dc;
    cad_plugin_touch_t touch = sample_touch();
    touch.contact.phone = "07700 900123";
    sms_config(&dc, url);
    assert_outcome(&dc, &touch, CAD_OUTCOME_PERMANENT, CAD_EFFECT_CONTACT_UNUSABLE,
                   "phone number \"07700 900123\" of contact p-1 is not E.164");

    touch.contact.phone = "+4477\r\nX";
    sms_config(&dc, url);
    assert_outcome(&dc, &touch, CAD_OUTCOME_PERMANENT, CAD_EFFECT_CONTACT_UNUSABLE,
                   "phone number \"+4477??X\" of contact p-1 is not E.164");

    touch.contact.phone = "";
    sms_config(&dc, url);
    assert_outcome(&dc, &touch, CAD_OUTCOME_PERMANENT, CAD_EFFECT_CONTACT_UNUSABLE,
                   "contact p-1 has no phone number");
}

static void test_sms_too_many_segments_refused_before_request(void **state)
{
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", closed_port());
    char body[600];
    memset(body, 'a', 460); /* 460 septets: 4 segments of 153 */
    body[460] = '\0';
    driver_config_t dc;
    cad_plugin_touch_t touch = sample_touch();
    touch.text = body;
    sms_config(&dc, url);
    assert_outcome(&dc, &touch, CAD_OUTCOME_PERMANENT, CAD_EFFECT_NONE,
                   "body needs 4 GSM-7 segments (460 septets), more than max_segments 3");

    /* 71 UCS-2 units are two segments: over a limit of one */
    body[0] = '\0';
    for (int i = 0; i < 71; i++)
        strcat(body, "\xc5\x82"); /* ł */
    touch.text = body;
    sms_config(&dc, url);
    driver_config_set(&dc, "max_segments", "1");
    assert_outcome(&dc, &touch, CAD_OUTCOME_PERMANENT, CAD_EFFECT_NONE,
                   "body needs 2 UCS-2 segments (71 UTF-16 units), more than max_segments 1");
}

static void test_sms_connection_refused_is_retry(void **state)
{
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", closed_port());
    driver_config_t dc;
    cad_plugin_touch_t touch = sample_touch();
    sms_config(&dc, url);
    assert_outcome(&dc, &touch, CAD_OUTCOME_RETRY, CAD_EFFECT_NONE, "SMS API request failed");
}

/* A listening socket nobody accepts from: the kernel completes the
 * handshake and takes the request, and no answer ever comes. */
static int silent_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 4), 0);
    socklen_t len = sizeof(sa);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* The host tells the dispatcher when a failed attempt may still have
 * reached the provider (its request left, no answer came): then the touch
 * counts as sent for the engine's spacing rules. A refused connection
 * sent nothing. */
static void test_timeout_after_the_request_left_may_have_been_received(void **state)
{
    int port;
    int fd = silent_listener(&port);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    driver_config_t dc;
    cad_plugin_touch_t touch = sample_touch();
    sms_config(&dc, url);
    dc.cfg->channel_config[0].timeout = 1;
    driver_result_t result;
    char err[CAD_ERRBUF * 2] = "";
    assert_int_equal(driver_send(&dc, &touch, &result, err, sizeof(err)), 0);
    assert_true(result.done);
    assert_int_equal(result.outcome.kind, CAD_OUTCOME_RETRY);
    assert_true(result.maybe_received);
    free(dc.cfg);
    close(fd);

    snprintf(url, sizeof(url), "http://127.0.0.1:%d", closed_port());
    sms_config(&dc, url);
    assert_int_equal(driver_send(&dc, &touch, &result, err, sizeof(err)), 0);
    assert_int_equal(result.outcome.kind, CAD_OUTCOME_RETRY);
    assert_false(result.maybe_received);
    free(dc.cfg);
}

int main(void)
{
    cad_log_init(CAD_LOG_ERR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_email_settings_refused_at_load),
        cmocka_unit_test(test_email_header_injection_refused_before_connecting),
        cmocka_unit_test(test_email_without_address_is_permanent),
        cmocka_unit_test(test_email_connection_refused_is_retry),
        cmocka_unit_test(test_sms_settings_refused_at_load),
        cmocka_unit_test(test_sms_invalid_number_refused_before_request),
        cmocka_unit_test(test_sms_too_many_segments_refused_before_request),
        cmocka_unit_test(test_sms_connection_refused_is_retry),
        cmocka_unit_test(test_timeout_after_the_request_left_may_have_been_received),
    };
    return cmocka_run_group_tests_name("channel_plugins", tests, setup_credentials,
                                       teardown_credentials);
}
