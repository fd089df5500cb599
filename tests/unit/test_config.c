/*
 * test_config.c — cad_config_load() on the shipped etc/cadenced.conf and on
 * the fixtures of tests/unit/data/config/: good files resolve to the expected
 * playbook, and every class of bad input yields "FILE:LINE: message" naming
 * the right file and line. Errors are written into an open_memstream FILE and
 * the tests assert on its text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

static char path_buf[4096];

static const char *source_dir(void)
{
    const char *dir = getenv("CADENCE_SOURCE_DIR");
    return dir && *dir ? dir : ".";
}

static const char *fixture(const char *name)
{
    snprintf(path_buf, sizeof path_buf, "%s/tests/unit/data/config/%s", source_dir(), name);
    return path_buf;
}

/* The outcome of one load: return code, config (or NULL) and error text. */
typedef struct load_result {
    int rc;
    cad_config_t *cfg;
    char *errors;
    size_t errors_len;
} load_result_t;

static load_result_t load(const char *path)
{
    load_result_t r = {0};
    FILE *f = open_memstream(&r.errors, &r.errors_len);
    assert_non_null(f);
    r.rc = cad_config_load(path, &r.cfg, f);
    fclose(f);
    return r;
}

static void result_free(load_result_t *r)
{
    cad_config_free(r->cfg);
    free(r->errors);
}

static int count_lines(const char *text)
{
    int n = 0;
    for (const char *p = text; *p; p++)
        n += *p == '\n';
    return n;
}

/* Asserts the load failed and that its errors hold "<fixture>:<line>: <message...>". */
static void assert_error(const load_result_t *r, const char *file, int line, const char *message)
{
    char expected[1024];
    snprintf(expected, sizeof expected, "/tests/unit/data/config/%s:%d: %s", file, line, message);
    if (!strstr(r->errors, expected))
        fail_msg("expected error \"%s\" in:\n%s", expected, r->errors);
}

static load_result_t load_bad(const char *name)
{
    load_result_t r = load(fixture(name));
    assert_int_equal(r.rc, -CAD_EINVAL);
    assert_null(r.cfg);
    return r;
}

/* ---- the shipped example config ---------------------------------------- */

static load_result_t load_shipped(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/etc/cadenced.conf", source_dir());
    load_result_t r = load(path);
    if (r.rc != 0)
        fail_msg("etc/cadenced.conf does not load:\n%s", r.errors);
    assert_int_equal(r.errors_len, 0);
    assert_non_null(r.cfg);
    return r;
}

static void test_shipped_config_loads_without_errors(void **state)
{
    load_result_t r = load_shipped();
    const cad_config_t *cfg = r.cfg;
    assert_string_equal(cfg->state_dir, "/var/lib/cadenced");
    assert_string_equal(cfg->socket_path, "/run/cadenced/control.sock");
    assert_int_equal(cfg->socket_mode, 0660);
    assert_int_equal(cfg->sync, CAD_SYNC_FULL);
    assert_int_equal(cfg->commit_interval_ms, 5);
    assert_int_equal(cfg->log_level, CAD_LOG_INFO);
    assert_int_equal(cfg->batch_size, 1000);
    assert_int_equal(cfg->shutdown_timeout_ms, 10000);
    assert_string_equal(cfg->default_timezone, "UTC");
    assert_int_equal(cfg->n_access, 1);
    assert_true(cfg->access[0].admin);
    assert_false(cfg->access[0].is_group);
    assert_int_equal(cfg->access[0].id, 0);
    result_free(&r);
}

static void test_shipped_config_channels(void **state)
{
    load_result_t r = load_shipped();
    const cad_playbook_t *pb = &r.cfg->playbook;
    assert_int_equal(pb->n_channels, 3);
    int email = cad_playbook_channel(pb, "email");
    int sms = cad_playbook_channel(pb, "sms");
    int crm = cad_playbook_channel(pb, "crm_task");
    assert_int_equal(email, 0);
    assert_int_equal(sms, 1);
    assert_int_equal(crm, 2);
    assert_string_equal(pb->channels[email].plugin, "file");
    assert_int_equal(pb->channels[email].address, CAD_ADDRESS_EMAIL);
    assert_int_equal(pb->channels[email].window_start, pb->channels[email].window_end);
    assert_string_equal(cad_config_channel_setting(r.cfg, email, "directory"), "outbox");
    assert_string_equal(pb->channels[sms].plugin, "sms");
    assert_int_equal(pb->channels[sms].address, CAD_ADDRESS_PHONE);
    assert_int_equal(pb->channels[sms].window_start, 8 * 60);
    assert_int_equal(pb->channels[sms].window_end, 21 * 60);
    assert_string_equal(pb->channels[crm].plugin, "webhook");
    assert_int_equal(pb->channels[crm].address, CAD_ADDRESS_NONE);
    const cad_channel_config_t *cc = &r.cfg->channel_config[email];
    assert_int_equal(cc->concurrency, 4);
    assert_int_equal(cc->timeout, 30);
    assert_int_equal(cc->max_attempts, 8);
    assert_int_equal(cc->max_age, 2 * CAD_DAY);
    assert_true(cc->rate_per_second > 9.99 && cc->rate_per_second < 10.01);
    assert_int_equal(cc->burst, 20);
    result_free(&r);
}

static void test_standard_webhooks_schedule_runs_to_its_end_by_default(void **state)
{
    load_result_t r = load(fixture("webhook_defaults.conf"));
    assert_int_equal(r.rc, 0);
    const cad_channel_config_t *cc = r.cfg->channel_config;
    /* the webhook plugin's default schedule: ten attempts, about 75 h plus jitter */
    assert_int_equal(cc[0].max_attempts, 10);
    assert_int_equal(cc[0].max_age, 4 * CAD_DAY);
    /* another schedule keeps the general defaults */
    assert_int_equal(cc[1].max_attempts, 8);
    assert_int_equal(cc[1].max_age, 2 * CAD_DAY);
    /* what the operator sets wins */
    assert_int_equal(cc[2].max_attempts, 3);
    assert_int_equal(cc[2].max_age, 4 * CAD_DAY);
    assert_int_equal(cc[3].max_attempts, 10);
    assert_int_equal(cc[3].max_age, CAD_DAY);
    /* "00:00-24:00" lifts a phone channel's default 08:00-21:00 window */
    assert_int_equal(r.cfg->playbook.channels[4].window_start, 0);
    assert_int_equal(r.cfg->playbook.channels[4].window_end, 0);
    result_free(&r);
}

static void test_shipped_config_policies(void **state)
{
    load_result_t r = load_shipped();
    const cad_playbook_t *pb = &r.cfg->playbook;
    assert_int_equal(pb->n_policies, 3);
    assert_string_equal(pb->policies[0].name, "default");
    assert_string_equal(pb->policies[1].name, "enterprise");
    assert_string_equal(pb->policies[2].name, "smb");
    for (int i = 0; i < pb->n_policies; i++)
        assert_true(pb->policies[i].has_ask_balance);
    const cad_policy_t *p = &pb->policies[0];
    assert_int_equal(p->min_gap, 3 * CAD_DAY);
    assert_int_equal(p->n_caps, 3);
    assert_int_equal(p->caps[0].channel, cad_playbook_channel(pb, "email"));
    assert_int_equal(p->caps[0].count, 2);
    assert_int_equal(p->caps[0].window, 7 * CAD_DAY);
    assert_int_equal(p->caps[2].channel, -1);
    assert_int_equal(p->caps[2].count, 4);
    assert_int_equal(p->caps[2].window, 30 * CAD_DAY);
    assert_int_equal(p->max_silence, 30 * CAD_DAY);
    assert_int_equal(p->silence_lead, 5 * CAD_DAY);
    assert_int_equal(p->quiet_start, 20 * 60);
    assert_int_equal(p->quiet_end, 8 * 60);
    assert_int_equal(p->weekdays, 0x1f);
    assert_int_equal(p->jitter, 30 * CAD_MINUTE);
    assert_int_equal(p->ask_min_value, 2);
    assert_int_equal(p->ask_window, 60 * CAD_DAY);
    assert_true(p->ask_max_share > 0.4999 && p->ask_max_share < 0.5001);
    assert_true(p->min_relevance > 0.2999 && p->min_relevance < 0.3001);
    assert_int_equal(p->appreciation_per_year, 2);
    assert_int_equal(cad_playbook_policy(pb, "smb"), 2);
    assert_int_equal(cad_playbook_policy(pb, "no_such_segment"), 0);
    result_free(&r);
}

static void test_shipped_config_rules_in_playbook_order(void **state)
{
    static const struct {
        const char *name;
        enum cad_purpose purpose;
        enum cad_trigger_kind trigger;
    } expected[] = {
        {"welcome_guide", CAD_PURPOSE_VALUE, CAD_TRIGGER_EVENT},
        {"project_thank_you", CAD_PURPOSE_APPRECIATION, CAD_TRIGGER_EVENT},
        {"top_of_mind", CAD_PURPOSE_VALUE, CAD_TRIGGER_SILENCE},
        {"usage_tips", CAD_PURPOSE_VALUE, CAD_TRIGGER_RECURRING},
        {"feedback_followup", CAD_PURPOSE_FOLLOWUP, CAD_TRIGGER_EVENT},
        {"operational_survey", CAD_PURPOSE_FEEDBACK, CAD_TRIGGER_EVENT},
        {"nps_survey", CAD_PURPOSE_FEEDBACK, CAD_TRIGGER_RECURRING},
        {"review_request", CAD_PURPOSE_ASK, CAD_TRIGGER_EVENT},
        {"renewal_reminder", CAD_PURPOSE_ASK, CAD_TRIGGER_EVENT},
        {"invoice_notice", CAD_PURPOSE_TRANSACTIONAL, CAD_TRIGGER_EVENT},
        {"complaint_call_task", CAD_PURPOSE_FOLLOWUP, CAD_TRIGGER_EVENT},
        {"anniversary_thanks", CAD_PURPOSE_APPRECIATION, CAD_TRIGGER_RECURRING},
        {"win_back", CAD_PURPOSE_VALUE, CAD_TRIGGER_EVENT},
    };
    load_result_t r = load_shipped();
    const cad_playbook_t *pb = &r.cfg->playbook;
    assert_int_equal(pb->n_rules, (int)CAD_ARRAY_LEN(expected));
    for (size_t i = 0; i < CAD_ARRAY_LEN(expected); i++) {
        assert_string_equal(pb->rules[i].name, expected[i].name);
        assert_int_equal(pb->rules[i].purpose, expected[i].purpose);
        assert_int_equal(pb->rules[i].trigger, expected[i].trigger);
        assert_true(pb->rules[i].n_channels >= 1);
        assert_true(pb->rules[i].use_library || pb->rules[i].template_index >= 0);
    }
    result_free(&r);
}

static void test_shipped_config_review_request_details(void **state)
{
    load_result_t r = load_shipped();
    const cad_playbook_t *pb = &r.cfg->playbook;
    const cad_rule_t *rule = &pb->rules[7];
    assert_string_equal(rule->name, "review_request");
    assert_int_equal(rule->event_type, CAD_EVENT_PURCHASE);
    assert_int_equal(rule->after, 14 * CAD_DAY);
    assert_int_equal(rule->expires, 30 * CAD_DAY);
    assert_int_equal(rule->touch_expiry, 16 * CAD_DAY);
    assert_int_equal(rule->stages, (1 << CAD_STAGE_ONBOARDING) | (1 << CAD_STAGE_ACTIVE));
    assert_int_equal(rule->roles, (1u << CAD_ROLE_CHAMPION) | (1u << CAD_ROLE_DECISION_MAKER));
    assert_int_equal(rule->n_channels, 1);
    assert_int_equal(rule->channels[0], cad_playbook_channel(pb, "email"));
    assert_int_equal(rule->requires_value_count, 2);
    assert_int_equal(rule->requires_value_within, 60 * CAD_DAY);
    assert_int_equal(rule->suppress_while, UINT64_C(1) << CAD_EVENT_COMPLAINT_OPENED);
    assert_int_equal(rule->template_index, cad_playbook_template(pb, "review_request"));
    assert_false(rule->bypass_caps);
    result_free(&r);
}

static void test_shipped_config_special_rules(void **state)
{
    load_result_t r = load_shipped();
    const cad_playbook_t *pb = &r.cfg->playbook;
    const cad_rule_t *tips = &pb->rules[3];
    assert_true(tips->use_library);
    assert_int_equal(tips->template_index, CAD_NO_TEMPLATE);
    assert_int_equal(tips->every, 45 * CAD_DAY);
    assert_int_equal(tips->touch_expiry, 7 * CAD_DAY);
    const char *const tags[] = {"automation", "best_practices", "reporting"};
    assert_int_equal(tips->topics, cad_playbook_topic_mask(pb, tags, 3));
    const cad_rule_t *followup = &pb->rules[4];
    assert_int_equal(followup->sla, 21 * CAD_DAY);
    assert_int_equal(followup->after, 0);
    assert_int_equal(followup->n_channels, 2);
    const cad_rule_t *invoice = &pb->rules[9];
    assert_true(invoice->bypass_caps);
    assert_true(invoice->bypass_quiet_hours);
    assert_true(invoice->stages & (1 << CAD_STAGE_FORMER));
    const cad_rule_t *call = &pb->rules[10];
    assert_int_equal(call->channels[0], cad_playbook_channel(pb, "crm_task"));
    const cad_rule_t *win_back = &pb->rules[12];
    assert_int_equal(win_back->stages, 1 << CAD_STAGE_FORMER);
    assert_int_equal(win_back->holdout_permille, 50);
    /* R1: former customers hear only from rules that name them. */
    for (int i = 0; i < pb->n_rules; i++)
        if (pb->rules[i].stages & (1 << CAD_STAGE_FORMER))
            assert_true(i == 9 || i == 12);
    result_free(&r);
}

static void test_shipped_config_content_and_topics(void **state)
{
    static const char *const topics[] = {
        "onboarding", "reporting", "integrations",   "security",     "automation",
        "billing",    "community", "best_practices", "product_news", "case_studies"};
    load_result_t r = load_shipped();
    const cad_playbook_t *pb = &r.cfg->playbook;
    assert_int_equal(pb->n_topics, (int)CAD_ARRAY_LEN(topics));
    for (size_t i = 0; i < CAD_ARRAY_LEN(topics); i++)
        assert_true(cad_playbook_topic(pb, topics[i]) >= 0);
    assert_int_equal(pb->n_templates, 12);
    assert_true(cad_playbook_template(pb, "article") >= 0);
    assert_true(pb->n_content >= 10);
    int item = cad_playbook_content(pb, "guide-reporting-101");
    assert_true(item >= 0);
    const cad_content_t *c = &pb->content[item];
    assert_int_equal(c->purpose, CAD_PURPOSE_VALUE);
    assert_int_equal(c->valid_from, 1767225600);  /* 2026-01-01 */
    assert_int_equal(c->valid_until, 1814313600); /* 2027-06-30 */
    assert_int_equal(c->template_index, cad_playbook_template(pb, "article"));
    assert_int_equal(c->topics, UINT64_C(1) << cad_playbook_topic(pb, "reporting"));
    int expired = cad_playbook_content(pb, "webinar-year-end-2025");
    assert_true(expired >= 0);
    assert_true(pb->content[expired].valid_until < 1772928000); /* before 2026-03-08 */
    result_free(&r);
}

/* ---- other good files --------------------------------------------------- */

static void test_minimal_config_gets_defaults(void **state)
{
    load_result_t r = load(fixture("minimal.conf"));
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.errors, "");
    const cad_config_t *cfg = r.cfg;
    assert_string_equal(cfg->state_dir, "/var/lib/cadenced");
    assert_string_equal(cfg->plugin_dir, CADENCE_PLUGIN_DIR);
    assert_null(cfg->credentials_dir);
    assert_int_equal(cfg->max_line, 65536);
    assert_int_equal(cfg->max_clients, 64);
    const cad_rule_t *rule = &cfg->playbook.rules[0];
    assert_int_equal(rule->after, 0);
    assert_int_equal(rule->touch_expiry, 10 * CAD_DAY);
    const cad_policy_t *p = &cfg->playbook.policies[0];
    assert_int_equal(p->weekdays, 0x7f);
    assert_int_equal(p->appreciation_per_year, 2);
    assert_int_equal(p->n_caps, 0);
    result_free(&r);
}

static void test_config_defined_event_types_and_roles(void **state)
{
    load_result_t r = load(fixture("custom_names.conf"));
    if (r.rc != 0)
        fail_msg("custom_names.conf does not load:\n%s", r.errors);
    const cad_playbook_t *pb = &r.cfg->playbook;
    int incident = cad_playbook_event_type(pb, "security_incident");
    int resolved = cad_playbook_event_type(pb, "security_resolved");
    assert_int_equal(incident, CAD_EVENT_BUILTIN_COUNT);
    assert_int_equal(resolved, CAD_EVENT_BUILTIN_COUNT + 1);
    assert_int_equal(pb->event_types[incident].resolved_by, resolved);
    assert_int_equal(pb->event_types[resolved].resolved_by, -1);
    assert_int_equal(cad_playbook_role(pb, "procurement"), CAD_ROLE_BUILTIN_COUNT);
    const cad_rule_t *notice = &pb->rules[0];
    assert_int_equal(notice->event_type, incident);
    assert_int_equal(notice->roles,
                     (1u << (CAD_ROLE_BUILTIN_COUNT + 1)) | (1u << CAD_ROLE_TECHNICAL));
    assert_int_equal(notice->touch_expiry, 12 * CAD_HOUR);
    assert_int_equal(pb->rules[1].suppress_while, UINT64_C(1) << incident);
    result_free(&r);
}

static void test_default_policy_moves_first(void **state)
{
    load_result_t r = load(fixture("custom_names.conf"));
    assert_int_equal(r.rc, 0);
    const cad_playbook_t *pb = &r.cfg->playbook;
    assert_string_equal(pb->policies[0].name, "default");
    assert_string_equal(pb->policies[1].name, "enterprise");
    assert_int_equal(pb->policies[0].quiet_start, 21 * 60 + 30);
    assert_int_equal(pb->policies[0].quiet_end, 7 * 60);
    assert_int_equal(pb->policies[0].weekdays, (1 << 0) | (1 << 6));
    assert_int_equal(pb->policies[1].n_caps, 2);
    /* a short max_silence without silence_lead gets half of it as lead */
    assert_int_equal(pb->policies[1].max_silence, 4 * CAD_DAY);
    assert_int_equal(pb->policies[1].silence_lead, 2 * CAD_DAY);
    assert_int_equal(pb->policies[0].silence_lead, 5 * CAD_DAY);
    result_free(&r);
}

static void test_plugin_settings_kept_as_text(void **state)
{
    load_result_t r = load(fixture("custom_names.conf"));
    assert_int_equal(r.rc, 0);
    const cad_config_t *cfg = r.cfg;
    assert_string_equal(cad_config_channel_setting(cfg, 0, "url"), "smtp://mail.example.com:587");
    assert_string_equal(cad_config_channel_setting(cfg, 0, "port"), "587");
    assert_string_equal(cad_config_channel_setting(cfg, 0, "tls"), "true");
    assert_string_equal(cad_config_channel_setting(cfg, 0, "ratio"), "0.5");
    assert_null(cad_config_channel_setting(cfg, 0, "missing"));
    assert_null(cad_config_channel_setting(cfg, 7, "url"));
    assert_int_equal(cfg->channel_config[0].settings[1].line, 11);
    /* a send window may wrap midnight */
    assert_int_equal(cfg->playbook.channels[1].window_start, 22 * 60);
    assert_int_equal(cfg->playbook.channels[1].window_end, 6 * 60);
    result_free(&r);
}

/* ---- bad input ---------------------------------------------------------- */

static void test_missing_file_is_io_error(void **state)
{
    load_result_t r = load(fixture("no_such_file.conf"));
    assert_int_equal(r.rc, -CAD_EIO);
    assert_null(r.cfg);
    assert_non_null(strstr(r.errors, "no_such_file.conf: cannot open the config"));
    result_free(&r);
}

static void test_empty_path_is_refused(void **state)
{
    load_result_t r = load("");
    assert_int_equal(r.rc, -CAD_EINVAL);
    assert_null(r.cfg);
    assert_string_equal(r.errors, "no configuration file named\n");
    result_free(&r);
}

static void test_parse_error_names_line(void **state)
{
    load_result_t r = load_bad("parse_error.conf");
    assert_error(&r, "parse_error.conf", 4, "syntax error");
    result_free(&r);
}

static void test_parse_error_in_included_file_names_that_file(void **state)
{
    load_result_t r = load_bad("include_parse_error.conf");
    assert_error(&r, "inc/syntax.inc", 3, "syntax error");
    result_free(&r);
}

static void test_unknown_key_at_top_level(void **state)
{
    load_result_t r = load_bad("unknown_key_top.conf");
    assert_error(&r, "unknown_key_top.conf", 3,
                 "unknown key 'stor' in the top level (did you mean 'store'?)");
    assert_error(&r, "unknown_key_top.conf", 4, "unknown key 'colour' in the top level");
    assert_int_equal(count_lines(r.errors), 2);
    result_free(&r);
}

static void test_typo_key_in_policy_names_its_line(void **state)
{
    load_result_t r = load_bad("unknown_key_nested.conf");
    assert_error(&r, "unknown_key_nested.conf", 5,
                 "unknown key 'min_gapp' in policy 'default' (did you mean 'min_gap'?)");
    result_free(&r);
}

static void test_unknown_keys_nested_deeper_all_reported(void **state)
{
    load_result_t r = load_bad("unknown_key_nested.conf");
    assert_error(&r, "unknown_key_nested.conf", 6,
                 "unknown key 'ende' in quiet_hours of policy 'default'");
    assert_error(&r, "unknown_key_nested.conf", 9, "unknown key 'sockett' in control");
    result_free(&r);
}

static void test_error_in_included_file_names_that_file(void **state)
{
    load_result_t r = load_bad("include_error.conf");
    assert_error(&r, "inc/typo_policy.inc", 3,
                 "unknown key 'max_silense' in policy 'default' (did you mean 'max_silence'?)");
    result_free(&r);
}

/* Writes `size` bytes to DIR/NAME. */
static void write_file(const char *dir, const char *name, const char *text, size_t size)
{
    char file[4096];
    snprintf(file, sizeof file, "%s/%s", dir, name);
    FILE *f = fopen(file, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, size, f), size);
    assert_int_equal(fclose(f), 0);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    write_file(dir, name, text, strlen(text));
}

/* A case: the config text (which may hold NUL bytes) and the error it gets. */
#define INCLUDE_CASE(text, error)                                                                  \
    {                                                                                              \
        text, sizeof(text) - 1, error                                                              \
    }

/* libconfig 1.5 ends the process (exit from its flex scanner) when an
 * @include names something that opens but cannot be read, such as a
 * directory; every such include is refused before libconfig reads it,
 * with the file and line of the directive. */
static void test_include_that_libconfig_cannot_read_is_refused(void **state)
{
    (void)state;
    char dir[] = "/tmp/cadence-config-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char sub[4200], main_path[4200];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    write_text(dir, "ok.inc", "log = { level = \"info\"; };\n");
    static const struct {
        const char *text;
        size_t size;
        const char *error;
    } cases[] = {
        INCLUDE_CASE("@include \"\"\n", ":1: @include \"\" does not name a readable file"),
        INCLUDE_CASE("\n  @include\t\"sub\"\n",
                     ":2: @include \"sub\" does not name a readable file"),
        INCLUDE_CASE("@include \"\0\0ok.inc\"\n", ":1: @include \"\\x00\\x00ok.inc\" holds a "
                                                  "control character, a NUL byte or a backslash"),
        INCLUDE_CASE("@include \"o\\\"k.inc\"\n", ":1: @include \"o\\\" holds a control character"),
        INCLUDE_CASE("@include \"ok.\ninc\"\n",
                     ":1: @include \"ok.\\x0ainc\" holds a control character"),
        INCLUDE_CASE("@include \"ok.inc", ":1: @include \"ok.inc\" has no closing quote"),
        INCLUDE_CASE("@include \"/no/ok.inc\"\n", "even absolute ones"),
        INCLUDE_CASE("@include \"ok.inc\"\n@include \"nested.inc\"\n",
                     "/nested.inc:3: @include \"sub\" does not name a readable file"),
    };
    write_text(dir, "nested.inc", "# a comment\n\n@include \"sub\"\n");
    snprintf(main_path, sizeof main_path, "%s/main.conf", dir);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_file(dir, "main.conf", cases[i].text, cases[i].size);
        load_result_t r = load(main_path);
        assert_int_equal(r.rc, -CAD_EINVAL);
        assert_null(r.cfg);
        if (!strstr(r.errors, cases[i].error))
            fail_msg("case %zu: expected \"%s\" in:\n%s", i, cases[i].error, r.errors);
        result_free(&r);
    }
    /* A good include passes the check (after blanks, with a comment line);
     * what the file then lacks is reported by the loader as usual. */
    write_text(dir, "main.conf", "# x\n \t@include \"ok.inc\"\n");
    load_result_t r = load(main_path);
    if (strstr(r.errors, "@include"))
        fail_msg("a good include was refused:\n%s", r.errors);
    assert_non_null(strstr(r.errors, "no 'policies'"));
    result_free(&r);
    const char *names[] = {"main.conf", "ok.inc", "nested.inc"};
    for (size_t i = 0; i < 3; i++) {
        char file[4300];
        snprintf(file, sizeof file, "%s/%s", dir, names[i]);
        unlink(file);
    }
    rmdir(sub);
    rmdir(dir);
}

static void test_wrong_types(void **state)
{
    load_result_t r = load_bad("wrong_type.conf");
    assert_error(&r, "wrong_type.conf", 3,
                 "'commit_interval_ms' in store must be an integer, not a string");
    assert_error(&r, "wrong_type.conf", 4,
                 "'max_clients' in control must be an integer, not a boolean");
    assert_error(&r, "wrong_type.conf", 5, "'batch_size' in engine must be an integer");
    assert_int_equal(count_lines(r.errors), 3);
    result_free(&r);
}

static void test_out_of_range_numbers(void **state)
{
    load_result_t r = load_bad("out_of_range.conf");
    assert_error(&r, "out_of_range.conf", 2, "'max_clients' in control is 0, outside 1..4096");
    assert_error(&r, "out_of_range.conf", 4,
                 "'min_relevance' in policy 'default' is 1.5, outside 0..1");
    assert_error(&r, "out_of_range.conf", 4,
                 "'appreciation_per_year' in policy 'default' is 100, outside 0..52");
    assert_error(&r, "out_of_range.conf", 5,
                 "'max_share' in ask_balance of policy 'default' is -0.1, outside 0..1");
    assert_error(&r, "out_of_range.conf", 10, "'holdout' in rule 'hello' is 0.7, outside 0..0.5");
    result_free(&r);
}

static void test_numbers_beyond_32_bits_are_not_truncated(void **state)
{
    load_result_t r = load_bad("huge_number.conf");
    assert_error(&r, "huge_number.conf", 3,
                 "'max_clients' in control is 4294967297, outside 1..4096");
    assert_error(&r, "huge_number.conf", 5,
                 "'burst' in channel 'email' is 0x100000001, outside 1..1000000");
    assert_int_equal(count_lines(r.errors), 2);
    result_free(&r);
}

static void test_large_id_without_suffix_asks_for_it(void **state)
{
    load_result_t r = load_bad("uid_needs_suffix.conf");
    assert_error(&r, "uid_needs_suffix.conf", 1,
                 "'uid' in access rule #1 of control is 3000000000, which needs an L suffix "
                 "(3000000000L)");
    assert_int_equal(count_lines(r.errors), 1);
    result_free(&r);
}

static void test_bad_durations(void **state)
{
    load_result_t r = load_bad("bad_duration.conf");
    assert_error(&r, "bad_duration.conf", 4, "'min_gap' in policy 'default': duration '3days'");
    assert_error(&r, "bad_duration.conf", 5,
                 "'max_silence' in policy 'default': duration '30' ends with a number without a "
                 "unit");
    assert_error(&r, "bad_duration.conf", 6, "'jitter' in policy 'default': duration '-5m'");
    result_free(&r);
}

static void test_bad_clock_times(void **state)
{
    load_result_t r = load_bad("bad_clock.conf");
    assert_error(&r, "bad_clock.conf", 3,
                 "'send_window' in channel 'sms': clock time '8' must be HH:MM");
    assert_error(&r, "bad_clock.conf", 4,
                 "'send_window' in channel 'sms2' is '09:00-09:00', which is empty; write "
                 "\"00:00-24:00\" to allow any time");
    assert_error(&r, "bad_clock.conf", 8,
                 "'start' in quiet_hours of policy 'default': clock time '25:00' is out of range");
    result_free(&r);
}

static void test_unknown_time_zone(void **state)
{
    load_result_t r = load_bad("unknown_zone.conf");
    assert_error(&r, "unknown_zone.conf", 4, "unknown time zone 'Mars/Olympus_Mons' in engine");
    result_free(&r);
}

static void test_rule_without_purpose(void **state)
{
    load_result_t r = load_bad("rule_without_purpose.conf");
    assert_error(&r, "rule_without_purpose.conf", 4, "rule 'keep_in_touch' has no purpose");
    result_free(&r);
}

static void test_rule_without_content(void **state)
{
    load_result_t r = load_bad("rule_without_content.conf");
    assert_error(&r, "rule_without_content.conf", 4,
                 "rule 'checking_in' has no content: name a 'template' or set content = "
                 "\"library\"");
    result_free(&r);
}

static void test_ask_without_balance_policy(void **state)
{
    load_result_t r = load_bad("ask_without_balance.conf");
    assert_error(&r, "ask_without_balance.conf", 8,
                 "rule 'review_request' is an ask, but policy 'smb' (line 4) has no ask_balance: "
                 "an ask needs a balance policy");
    result_free(&r);
}

static void test_unknown_names_all_reported(void **state)
{
    load_result_t r = load_bad("unknown_names.conf");
    assert_error(&r, "unknown_names.conf", 4, "unknown purpose 'valu' in rule 'everything_wrong'");
    assert_error(&r, "unknown_names.conf", 5,
                 "unknown event type 'purchased' in trigger of rule 'everything_wrong' (did you "
                 "mean 'purchase'?)");
    assert_error(&r, "unknown_names.conf", 6, "unknown stage 'actve' in rule 'everything_wrong'");
    assert_error(&r, "unknown_names.conf", 7, "unknown role 'ceo' in rule 'everything_wrong'");
    assert_error(&r, "unknown_names.conf", 8, "unknown channel 'fax' in rule 'everything_wrong'");
    assert_error(&r, "unknown_names.conf", 9,
                 "unknown template 'helo' in rule 'everything_wrong' (did you mean 'hello'?)");
    assert_int_equal(count_lines(r.errors), 6);
    result_free(&r);
}

static void test_duplicate_rule_name(void **state)
{
    load_result_t r = load_bad("duplicate_rule.conf");
    assert_error(&r, "duplicate_rule.conf", 6,
                 "duplicate rule name 'hello' (first defined on line 4)");
    result_free(&r);
}

static void test_default_policy_required(void **state)
{
    load_result_t r = load_bad("no_default_policy.conf");
    assert_error(&r, "no_default_policy.conf", 2, "no policy with segment \"default\"");
    result_free(&r);
}

static void test_topic_table_holds_at_most_64(void **state)
{
    load_result_t r = load_bad("too_many_topics.conf");
    assert_error(&r, "too_many_topics.conf", 6,
                 "too many distinct topics: at most 64 across content and rules");
    assert_int_equal(count_lines(r.errors), 1);
    result_free(&r);
}

static void test_event_type_table_mistakes(void **state)
{
    load_result_t r = load_bad("name_tables.conf");
    assert_error(&r, "name_tables.conf", 3, "event type 'purchase' is built in");
    assert_error(&r, "name_tables.conf", 4,
                 "unknown event type 'audit_closd' in resolved_by of event type 'audit_opened' "
                 "(did you mean 'audit_closed'?)");
    assert_error(&r, "name_tables.conf", 6, "duplicate event type 'audit_closed'");
    assert_error(&r, "name_tables.conf", 7, "event type 'loop' cannot be resolved by itself");
    result_free(&r);
}

static void test_role_table_mistakes(void **state)
{
    load_result_t r = load_bad("name_tables.conf");
    assert_error(&r, "name_tables.conf", 9, "role 'user' is built in");
    assert_error(&r, "name_tables.conf", 9, "duplicate role 'auditor'");
    assert_error(&r, "name_tables.conf", 9,
                 "role 'bad name' must be 1 to 63 letters, digits, '_', '-' or '.'");
    assert_int_equal(count_lines(r.errors), 7);
    result_free(&r);
}

static void test_bypass_only_on_transactional_rules(void **state)
{
    load_result_t r = load_bad("rule_semantics.conf");
    assert_error(&r, "rule_semantics.conf", 5,
                 "'bypass_caps' in rule 'pushy_value' is only allowed on transactional rules");
    result_free(&r);
}

static void test_silence_trigger_needs_library(void **state)
{
    load_result_t r = load_bad("rule_semantics.conf");
    assert_error(&r, "rule_semantics.conf", 7,
                 "rule 'silent_template' has a silence trigger, which needs content = "
                 "\"library\"");
    result_free(&r);
}

static void test_after_must_precede_expires(void **state)
{
    load_result_t r = load_bad("rule_semantics.conf");
    assert_error(&r, "rule_semantics.conf", 10,
                 "'after' in trigger of rule 'backwards_window' must be shorter than 'expires'");
    result_free(&r);
}

static void test_sla_only_on_followup_rules(void **state)
{
    load_result_t r = load_bad("rule_semantics.conf");
    assert_error(&r, "rule_semantics.conf", 12,
                 "'sla' in rule 'sla_on_value' only applies to followup rules");
    result_free(&r);
}

static void test_suppress_while_needs_resolvable_event(void **state)
{
    load_result_t r = load_bad("rule_semantics.conf");
    assert_error(&r, "rule_semantics.conf", 15,
                 "event type 'purchase' in suppress_while of rule 'forever_suppressed' has no "
                 "resolved_by event");
    result_free(&r);
}

static void test_surveys_never_reach_former_customers(void **state)
{
    load_result_t r = load_bad("rule_semantics.conf");
    assert_error(&r, "rule_semantics.conf", 18,
                 "rule 'survey_former' asks for feedback and names stage 'former'");
    result_free(&r);
}

static void test_template_and_library_are_exclusive(void **state)
{
    load_result_t r = load_bad("rule_semantics.conf");
    assert_error(&r, "rule_semantics.conf", 19,
                 "rule 'both_sources' names both a 'template' and 'content'");
    result_free(&r);
}

static void test_trigger_has_exactly_one_kind(void **state)
{
    load_result_t r = load_bad("rule_semantics.conf");
    assert_error(&r, "rule_semantics.conf", 21,
                 "trigger of rule 'two_triggers' must have exactly one of 'event', 'every' or "
                 "'silence'");
    result_free(&r);
}

static void test_expiry_cannot_outlive_trigger_window(void **state)
{
    load_result_t r = load_bad("rule_semantics.conf");
    assert_error(&r, "rule_semantics.conf", 23,
                 "'expiry' in rule 'long_expiry' is longer than its trigger window");
    assert_int_equal(count_lines(r.errors), 9);
    result_free(&r);
}

static void test_caps_name_channels_or_all(void **state)
{
    load_result_t r = load_bad("policy_semantics.conf");
    assert_error(&r, "policy_semantics.conf", 4,
                 "unknown channel 'fax' in caps of policy 'default' (caps name a channel or "
                 "\"all\")");
    assert_error(&r, "policy_semantics.conf", 4,
                 "cap 'sms' in policy 'default': cap '2 per week' must be <count>/<duration>");
    result_free(&r);
}

static void test_policy_weekdays_and_silence_lead(void **state)
{
    load_result_t r = load_bad("policy_semantics.conf");
    assert_error(&r, "policy_semantics.conf", 5, "unknown weekday 'funday' in policy 'default'");
    assert_error(&r, "policy_semantics.conf", 6,
                 "'silence_lead' in policy 'default' must be shorter than 'max_silence'");
    result_free(&r);
}

static void test_duplicate_policy_segment(void **state)
{
    load_result_t r = load_bad("policy_semantics.conf");
    assert_error(&r, "policy_semantics.conf", 7,
                 "duplicate policy for segment 'default' (first defined on line 3)");
    result_free(&r);
}

static void test_templates_checked_at_load(void **state)
{
    load_result_t r = load_bad("bad_template.conf");
    assert_error(&r, "bad_template.conf", 4, "'subject' of template 'broken': ");
    assert_error(&r, "bad_template.conf", 5,
                 "'text' of template 'broken': template line 1 column 4: unknown variable "
                 "{{contact.nickname}}");
    assert_error(&r, "bad_template.conf", 6, "template 'empty' has no 'text'");
    result_free(&r);
}

/* How many errors a load reported (one line each). */
static size_t error_lines(const load_result_t *r)
{
    size_t lines = 0;
    for (const char *p = r->errors; p && *p; p++)
        lines += *p == '\n';
    return lines;
}

static void test_content_variables_need_a_content_item(void **state)
{
    load_result_t r = load_bad("content_hole.conf");
    assert_error(&r, "content_hole.conf", 15,
                 "rule 'news_blast' names template 'news', whose text part has template line 1 "
                 "column 6: {{content.title}} would be empty: the rule sends no content item");
    assert_error(&r, "content_hole.conf", 17,
                 "rule 'teaser_blast' names template 'teaser', whose subject part has");
    /* a content item's own template, and a library rule, are fine */
    assert_int_equal(error_lines(&r), 2);
    result_free(&r);
}

static void test_one_account_has_one_rate(void **state)
{
    load_result_t r = load_bad("account_conflict.conf");
    assert_error(&r, "account_conflict.conf", 5,
                 "channel 'sms_us' sets account_rate 50 (burst 50) for account 'acct', but "
                 "channel 'sms_eu' (line 4) set 10 (burst 10): the channels of one account share "
                 "one limit");
    /* a channel of the account without a rate, and another plugin's "acct", are fine */
    assert_int_equal(error_lines(&r), 1);
    result_free(&r);
}

/* A plugin name the plugin host would refuse is a config error, not a
 * channel that fails to load at start. */
static void test_plugin_names_are_file_names(void **state)
{
    load_result_t r = load_bad("plugin_names.conf");
    assert_error(&r, "plugin_names.conf", 4,
                 "plugin 'Relay' must be 1 to 63 lower-case letters, digits, '_' or '-'");
    assert_error(&r, "plugin_names.conf", 5, "plugin 'my.plugin' must be");
    assert_error(&r, "plugin_names.conf", 6, "plugin '../file' must be");
    assert_int_equal(error_lines(&r), 3);
    result_free(&r);
}

static void test_log_level_names(void **state)
{
    assert_int_equal(cad_log_level_parse("debug"), CAD_LOG_DEBUG);
    assert_int_equal(cad_log_level_parse("info"), CAD_LOG_INFO);
    assert_int_equal(cad_log_level_parse("notice"), CAD_LOG_NOTICE);
    assert_int_equal(cad_log_level_parse("warning"), CAD_LOG_WARNING);
    assert_int_equal(cad_log_level_parse("err"), CAD_LOG_ERR);
    assert_int_equal(cad_log_level_parse("error"), -1);
    assert_int_equal(cad_log_level_parse(NULL), -1);
}

static void test_free_accepts_null(void **state)
{
    cad_config_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_config_loads_without_errors),
        cmocka_unit_test(test_shipped_config_channels),
        cmocka_unit_test(test_standard_webhooks_schedule_runs_to_its_end_by_default),
        cmocka_unit_test(test_shipped_config_policies),
        cmocka_unit_test(test_shipped_config_rules_in_playbook_order),
        cmocka_unit_test(test_shipped_config_review_request_details),
        cmocka_unit_test(test_shipped_config_special_rules),
        cmocka_unit_test(test_shipped_config_content_and_topics),
        cmocka_unit_test(test_minimal_config_gets_defaults),
        cmocka_unit_test(test_config_defined_event_types_and_roles),
        cmocka_unit_test(test_default_policy_moves_first),
        cmocka_unit_test(test_plugin_settings_kept_as_text),
        cmocka_unit_test(test_missing_file_is_io_error),
        cmocka_unit_test(test_empty_path_is_refused),
        cmocka_unit_test(test_parse_error_names_line),
        cmocka_unit_test(test_parse_error_in_included_file_names_that_file),
        cmocka_unit_test(test_unknown_key_at_top_level),
        cmocka_unit_test(test_typo_key_in_policy_names_its_line),
        cmocka_unit_test(test_unknown_keys_nested_deeper_all_reported),
        cmocka_unit_test(test_error_in_included_file_names_that_file),
        cmocka_unit_test(test_include_that_libconfig_cannot_read_is_refused),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_out_of_range_numbers),
        cmocka_unit_test(test_numbers_beyond_32_bits_are_not_truncated),
        cmocka_unit_test(test_large_id_without_suffix_asks_for_it),
        cmocka_unit_test(test_bad_durations),
        cmocka_unit_test(test_bad_clock_times),
        cmocka_unit_test(test_unknown_time_zone),
        cmocka_unit_test(test_rule_without_purpose),
        cmocka_unit_test(test_rule_without_content),
        cmocka_unit_test(test_ask_without_balance_policy),
        cmocka_unit_test(test_unknown_names_all_reported),
        cmocka_unit_test(test_duplicate_rule_name),
        cmocka_unit_test(test_default_policy_required),
        cmocka_unit_test(test_topic_table_holds_at_most_64),
        cmocka_unit_test(test_event_type_table_mistakes),
        cmocka_unit_test(test_role_table_mistakes),
        cmocka_unit_test(test_bypass_only_on_transactional_rules),
        cmocka_unit_test(test_silence_trigger_needs_library),
        cmocka_unit_test(test_after_must_precede_expires),
        cmocka_unit_test(test_sla_only_on_followup_rules),
        cmocka_unit_test(test_suppress_while_needs_resolvable_event),
        cmocka_unit_test(test_surveys_never_reach_former_customers),
        cmocka_unit_test(test_template_and_library_are_exclusive),
        cmocka_unit_test(test_trigger_has_exactly_one_kind),
        cmocka_unit_test(test_expiry_cannot_outlive_trigger_window),
        cmocka_unit_test(test_caps_name_channels_or_all),
        cmocka_unit_test(test_policy_weekdays_and_silence_lead),
        cmocka_unit_test(test_duplicate_policy_segment),
        cmocka_unit_test(test_templates_checked_at_load),
        cmocka_unit_test(test_content_variables_need_a_content_item),
        cmocka_unit_test(test_one_account_has_one_rate),
        cmocka_unit_test(test_plugin_names_are_file_names),
        cmocka_unit_test(test_log_level_names),
        cmocka_unit_test(test_free_accepts_null),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
