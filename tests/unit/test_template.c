/*
 * test_template.c — template.c: variables, HTML escaping, customer
 * attributes, load-time checks and render-time errors, and the output bound.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "template.h"

static cad_plugin_touch_t sample_touch(void)
{
    cad_plugin_touch_t t = {
        .struct_size = sizeof t,
        .idempotency_key = "k-1",
        .touch_id = 7,
        .customer = {.id = "acme",
                     .name = "Acme & Sons <Ltd>",
                     .attributes = "{\"plan\": \"gold\", \"seats\": 12, \"ratio\": 0.5, "
                                   "\"vip\": true, \"nothing\": null, \"tags\": [1]}"},
        .contact = {.id = "c1",
                    .name = "Ada Lovelace",
                    .first_name = "Ada",
                    .email = "ada@example.com",
                    .phone = ""},
        .rule = "welcome",
        .purpose = "value",
        .channel = "email",
        .content = {.id = "guide",
                    .title = "Getting \"started\"",
                    .url = "https://x.test/?a=1&b=2"},
        .subject = "",
        .text = "",
        .html = "",
        .unsubscribe_url = "https://x.test/u/1",
        .unsubscribe_mailto = "",
        .decided_at = 0,
        .attempt = 1,
    };
    return t;
}

static char *render_ok(const char *tmpl, bool html)
{
    cad_plugin_touch_t t = sample_touch();
    char *out = NULL;
    char err[CAD_ERRBUF] = "";
    assert_int_equal(cad_template_render(tmpl, html, &t, &out, err), 0);
    assert_string_equal(err, "");
    assert_non_null(out);
    return out;
}

static void assert_render(const char *tmpl, bool html, const char *expected)
{
    char *out = render_ok(tmpl, html);
    assert_string_equal(out, expected);
    free(out);
}

static void assert_render_fails(const char *tmpl, int code, const char *why)
{
    cad_plugin_touch_t t = sample_touch();
    char *out = (char *)"untouched";
    char err[CAD_ERRBUF] = "";
    assert_int_equal(cad_template_render(tmpl, false, &t, &out, err), code);
    assert_null(out);
    if (!strstr(err, why))
        fail_msg("error \"%s\" does not mention \"%s\"", err, why);
}

static void assert_check_fails(const char *tmpl, const char *why)
{
    char err[CAD_ERRBUF] = "";
    assert_int_equal(cad_template_check(tmpl, err), -CAD_EINVAL);
    if (!strstr(err, why))
        fail_msg("error \"%s\" does not mention \"%s\"", err, why);
}

static void test_template_fixed_variables(void **state)
{
    assert_render("Hi {{contact.first_name}}, {{content.title}} at {{content.url}} ({{rule}}, "
                  "{{purpose}}, {{channel}}, {{customer.id}}, {{idempotency_key}})",
                  false,
                  "Hi Ada, Getting \"started\" at https://x.test/?a=1&b=2 (welcome, value, email, "
                  "acme, k-1)");
    assert_render("{{unsubscribe_url}}|{{unsubscribe_mailto}}|{{contact.phone}}", false,
                  "https://x.test/u/1||");
}

static void test_template_blanks_inside_braces(void **state)
{
    assert_render("{{ contact.name }}/{{\tcustomer.plan\t}}", false, "Ada Lovelace/gold");
}

static void test_template_text_is_raw_html_is_escaped(void **state)
{
    assert_render("{{customer.name}}", false, "Acme & Sons <Ltd>");
    assert_render("<b>{{customer.name}}</b>", true, "<b>Acme &amp; Sons &lt;Ltd&gt;</b>");
    assert_render("<a href=\"{{content.url}}\">{{content.title}}</a>", true,
                  "<a href=\"https://x.test/?a=1&amp;b=2\">Getting &quot;started&quot;</a>");
}

static void assert_render_uri(const cad_plugin_touch_t *t, const char *tmpl, const char *expected)
{
    char *out = NULL;
    char err[CAD_ERRBUF] = "";
    assert_int_equal(cad_template_render_as(tmpl, CAD_PLUGIN_ESCAPE_URI_COMPONENT, t, &out, err),
                     0);
    assert_string_equal(err, "");
    assert_string_equal(out, expected);
    free(out);
}

/* A value inserted into a URL or a mailto address is one URI component:
 * every byte outside RFC 3986's unreserved set is %XX; the template's own
 * text ("https://", "/", "?", "+", "@") is kept as written. */
static void test_template_uri_values_are_percent_encoded_literal_text_is_not(void **state)
{
    cad_plugin_touch_t t = sample_touch();
    t.customer.id = "café büro";
    t.contact.id = "sp ace";
    assert_render_uri(&t, "https://shop.example/u/{{customer.id}}",
                      "https://shop.example/u/caf%C3%A9%20b%C3%BCro");
    assert_render_uri(&t, "unsub+{{contact.id}}@shop.example", "unsub+sp%20ace@shop.example");
    assert_render_uri(&t, "mailto:unsub+{{customer.id}}@shop.example?subject=x",
                      "mailto:unsub+caf%C3%A9%20b%C3%BCro@shop.example?subject=x");
    /* reserved characters of a value cannot change the URL's structure */
    t.customer.id = "a/b?c=d&e#f+g%h@i";
    assert_render_uri(&t, "https://x.test/{{customer.id}}?k={{customer.plan}}",
                      "https://x.test/a%2Fb%3Fc%3Dd%26e%23f%2Bg%25h%40i?k=gold");
    t.contact.name = "Ada Lovelace";
    assert_render_uri(&t, "https://x.test/{{ contact.name }}-{{customer.ratio}}~",
                      "https://x.test/Ada%20Lovelace-0.5~");
    /* the other modes are unchanged */
    char *out = NULL;
    char err[CAD_ERRBUF] = "";
    assert_int_equal(
        cad_template_render_as("{{contact.id}}&", CAD_PLUGIN_ESCAPE_HTML, &t, &out, err), 0);
    assert_string_equal(out, "sp ace&");
    free(out);
    assert_int_equal(
        cad_template_render_as("{{customer.name}}", CAD_PLUGIN_ESCAPE_NONE, &t, &out, err), 0);
    assert_string_equal(out, "Acme & Sons <Ltd>");
    free(out);
    assert_int_equal(cad_template_render_as("x", (enum cad_plugin_escape)9, &t, &out, err),
                     -CAD_EINVAL);
    assert_null(out);
}

static void test_template_attributes_of_every_scalar_type(void **state)
{
    assert_render("{{customer.plan}} {{customer.seats}} {{customer.ratio}} {{customer.vip}}", false,
                  "gold 12 0.5 true");
}

static void test_template_literal_text_and_single_braces_pass_through(void **state)
{
    assert_render("", false, "");
    assert_render("no variables { here } }}", false, "no variables { here } }}");
    cad_plugin_touch_t t = sample_touch();
    char *out = NULL;
    char err[CAD_ERRBUF];
    assert_int_equal(cad_template_render(NULL, false, &t, &out, err), 0);
    assert_string_equal(out, "");
    free(out);
}

static void test_template_check_accepts_known_and_attribute_variables(void **state)
{
    char err[CAD_ERRBUF] = "";
    assert_int_equal(cad_template_check("{{customer.name}} {{customer.anything_at_all}} "
                                        "{{contact.first_name}} {{unsubscribe_url}}",
                                        err),
                     0);
    assert_int_equal(cad_template_check(NULL, err), 0);
}

static void test_template_check_names_unknown_variable_and_position(void **state)
{
    assert_check_fails("Hello\n  {{contact.nickname}}", "unknown variable {{contact.nickname}}");
    assert_check_fails("Hello\n  {{contact.nickname}}", "line 2 column 3");
    assert_check_fails("{{unsubscribe}}", "{{unsubscribe}}");
    assert_check_fails("{{customer.a.b}}", "{{customer.a.b}}");
    assert_check_fails("{{customer.}}", "{{customer.}}");
}

static void test_template_check_refuses_unclosed_and_empty(void **state)
{
    assert_check_fails("Hi {{contact.name", "not closed");
    assert_check_fails("Hi {{contact.name}", "not closed");
    assert_check_fails("Hi {{contact name}}", "not closed");
    assert_check_fails("Hi {{}}", "empty variable name");
    assert_check_fails("{{", "line 1 column 1");
}

static void test_template_check_refuses_overlong_name(void **state)
{
    char tmpl[CAD_TEMPLATE_VAR_MAX + 16];
    strcpy(tmpl, "{{customer.");
    size_t n = strlen(tmpl);
    memset(tmpl + n, 'a', CAD_TEMPLATE_VAR_MAX);
    strcpy(tmpl + n + CAD_TEMPLATE_VAR_MAX, "}}");
    assert_check_fails(tmpl, "overlong");
}

static void test_template_render_names_missing_attribute(void **state)
{
    assert_render_fails("Your plan: {{customer.tier}}", -CAD_ENOTFOUND,
                        "customer acme has no attribute \"tier\"");
    assert_render_fails("{{customer.nothing}}", -CAD_ENOTFOUND, "no attribute \"nothing\"");
    assert_render_fails("{{customer.tags}}", -CAD_EINVAL, "object or array");
    assert_render_fails("{{contact.nickname}}", -CAD_EINVAL, "unknown variable");
}

static void test_template_render_refuses_bad_attributes_json(void **state)
{
    cad_plugin_touch_t t = sample_touch();
    t.customer.attributes = "[1, 2]";
    char *out = NULL;
    char err[CAD_ERRBUF] = "";
    assert_int_equal(cad_template_render("{{customer.plan}}", false, &t, &out, err), -CAD_EINVAL);
    assert_non_null(strstr(err, "not a JSON object"));
    t.customer.attributes = "{\"plan\": ";
    assert_int_equal(cad_template_render("{{customer.plan}}", false, &t, &out, err), -CAD_EINVAL);
    assert_non_null(strstr(err, "customer acme"));
    /* attributes are parsed only when a template uses one */
    assert_int_equal(cad_template_render("{{customer.name}}", false, &t, &out, err), 0);
    assert_string_equal(out, "Acme & Sons <Ltd>");
    free(out);
}

static void test_template_output_is_bounded(void **state)
{
    size_t big = 300 * 1024;
    char *value = malloc(big + 32);
    assert_non_null(value);
    strcpy(value, "{\"blob\": \"");
    memset(value + 10, 'x', big);
    strcpy(value + 10 + big, "\"}");
    cad_plugin_touch_t t = sample_touch();
    t.customer.attributes = value;
    char *out = NULL;
    char err[CAD_ERRBUF] = "";
    /* three copies fit in 1 MiB, four do not */
    assert_int_equal(cad_template_render("{{customer.blob}}{{customer.blob}}{{customer.blob}}",
                                         false, &t, &out, err),
                     0);
    assert_int_equal(strlen(out), 3 * big);
    free(out);
    assert_int_equal(cad_template_render("{{customer.blob}}{{customer.blob}}{{customer.blob}}"
                                         "{{customer.blob}}",
                                         false, &t, &out, err),
                     -CAD_EFULL);
    assert_null(out);
    assert_non_null(strstr(err, "longer than"));
    free(value);
}

static void test_template_never_reads_past_a_truncated_variable(void **state)
{
    /* Each prefix of a valid template is either valid or refused; none crashes
     * (the sanitizer build checks the reads). */
    const char *full = "Dear {{ contact.first_name }}, see {{content.url}}";
    size_t n = strlen(full);
    for (size_t i = 0; i <= n; i++) {
        char *prefix = malloc(i + 1);
        memcpy(prefix, full, i);
        prefix[i] = '\0';
        char err[CAD_ERRBUF] = "";
        int rc = cad_template_check(prefix, err);
        assert_true(rc == 0 || rc == -CAD_EINVAL);
        if (rc < 0)
            assert_true(strlen(err) > 0);
        free(prefix);
    }
}

/* A deterministic fuzz pass: random templates over an alphabet rich in braces,
 * dots and variable-name characters. Whatever the input, check and render
 * agree (a template the check accepts renders, or misses an attribute), an
 * error always comes with a sentence, and the output never exceeds the bound.
 * The sanitizer build turns any read past the input into a failure. */
static void test_template_random_inputs_check_and_render_agree(void **state)
{
    static const char alphabet[] = "{{}}..  \tabcustomer_contactfirstnameplan\n<&>\"'x";
    uint32_t seed = 12345;
    cad_plugin_touch_t t = sample_touch();
    for (int round = 0; round < 20000; round++) {
        char tmpl[48];
        seed = seed * 1103515245u + 12345u;
        size_t n = (seed >> 16) % (sizeof tmpl - 1);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            tmpl[i] = alphabet[(seed >> 16) % (sizeof alphabet - 1)];
        }
        tmpl[n] = '\0';
        char err[CAD_ERRBUF] = "";
        int checked = cad_template_check(tmpl, err);
        assert_true(checked == 0 || (checked == -CAD_EINVAL && err[0]));
        for (int html = 0; html < 2; html++) {
            char *out = NULL;
            char rerr[CAD_ERRBUF] = "";
            int rendered = cad_template_render(tmpl, html, &t, &out, rerr);
            if (checked < 0) {
                assert_int_equal(rendered, -CAD_EINVAL);
                assert_string_equal(rerr, err);
            } else if (rendered == 0) {
                assert_true(strlen(out) <= CAD_TEMPLATE_OUTPUT_MAX);
            } else {
                assert_true(rendered == -CAD_ENOTFOUND || rendered == -CAD_EINVAL);
                assert_non_null(strstr(rerr, "customer acme"));
            }
            if (rendered == 0)
                free(out);
            else
                assert_null(out);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_template_fixed_variables),
        cmocka_unit_test(test_template_blanks_inside_braces),
        cmocka_unit_test(test_template_text_is_raw_html_is_escaped),
        cmocka_unit_test(test_template_uri_values_are_percent_encoded_literal_text_is_not),
        cmocka_unit_test(test_template_attributes_of_every_scalar_type),
        cmocka_unit_test(test_template_literal_text_and_single_braces_pass_through),
        cmocka_unit_test(test_template_check_accepts_known_and_attribute_variables),
        cmocka_unit_test(test_template_check_names_unknown_variable_and_position),
        cmocka_unit_test(test_template_check_refuses_unclosed_and_empty),
        cmocka_unit_test(test_template_check_refuses_overlong_name),
        cmocka_unit_test(test_template_render_names_missing_attribute),
        cmocka_unit_test(test_template_render_refuses_bad_attributes_json),
        cmocka_unit_test(test_template_output_is_bounded),
        cmocka_unit_test(test_template_never_reads_past_a_truncated_variable),
        cmocka_unit_test(test_template_random_inputs_check_and_render_agree),
    };
    return cmocka_run_group_tests_name("template", tests, NULL, NULL);
}
