/*
 * test_webhook_body.c — the webhook body writer against jansson: for touches
 * full of quotes, backslashes, control characters, multi-byte UTF-8 and
 * attributes of every shape, the body must be byte for byte what jansson's
 * json_pack + compact json_dumps make of the same document; for invalid
 * UTF-8 in any field both must refuse it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../plugins/webhook/webhook_body.c"
#include "../fuzz/webhook_reference.h"

#define NOW 1795428000 /* 2026-11-23T10:00:00Z, the attempt's time */

static cad_plugin_touch_t sample_touch(void)
{
    cad_plugin_touch_t t = {
        .struct_size = sizeof t,
        .idempotency_key = "c1:order_thanks:e42",
        .touch_id = 9007199254740993LL,
        .customer = {.id = "c1",
                     .name = "Acme GmbH",
                     .attributes = "{\"plan\":\"pro\",\"seats\":12}"},
        .contact = {.id = "c1-dm",
                    .name = "Pat Doe",
                    .first_name = "Pat",
                    .email = "pat@example.com",
                    .phone = "+4930123456"},
        .rule = "order_thanks",
        .purpose = "transactional",
        .channel = "hook",
        .content = {.id = "guide", .title = "The guide", .url = "https://example.com/g?a=1&b=2"},
        .subject = "Thank you",
        .text = "Hi Pat,\n\nthank you.",
        .html = "<p>Hi Pat</p>",
        .unsubscribe_url = "https://example.com/u/1",
        .unsubscribe_mailto = "mailto:u@example.com",
        .decided_at = 1767225600,
        .attempt = 3,
    };
    return t;
}

/* Our body equals jansson's for t, or both refuse it. */
static void assert_same_as_jansson(const cad_plugin_touch_t *t)
{
    size_t len = 0;
    char *ours = cad_webhook_body("touch.decided", NOW, t, &len);
    char *ref = reference_body("touch.decided", NOW, t);
    if (!ref) {
        assert_null(ours);
        assert_int_equal(errno, EILSEQ);
        return;
    }
    assert_non_null(ours);
    assert_string_equal(ours, ref);
    assert_int_equal(len, strlen(ref));
    free(ours);
    free(ref);
}

static void test_body_is_jansson_s_compact_dump(void **state)
{
    (void)state;
    cad_plugin_touch_t t = sample_touch();
    assert_same_as_jansson(&t);
    size_t len;
    char *body = cad_webhook_body("touch.decided", NOW, &t, &len);
    assert_non_null(strstr(body, "\"timestamp\":\"2026-11-23T10:00:00Z\""));
    assert_non_null(strstr(body, "\"decided_at\":\"2026-01-01T00:00:00Z\""));
    free(body);
    t.attempt = 1;
    t.touch_id = 0;
    t.decided_at = 0;
    assert_same_as_jansson(&t);
}

static void test_every_character_class_is_escaped_like_jansson(void **state)
{
    (void)state;
    const char *values[] = {
        "",
        "\"quoted\" and \\backslash\\",
        "tab\there, cr\r, lf\n, ff\f, bs\b",
        "\x01\x02\x1f\x7f control bytes",
        "slash / stays, <script>&amp;</script>",
        "Grüße, naïve café — €5",
        "日本語のテキスト",
        "emoji \xF0\x9F\x98\x80 and \xF4\x8F\xBF\xBF (U+10FFFF)",
        "\xEF\xBF\xBF noncharacter U+FFFF",
    };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        cad_plugin_touch_t t = sample_touch();
        t.text = values[i];
        t.customer.name = values[i];
        t.contact.first_name = values[i];
        t.unsubscribe_mailto = values[i];
        assert_same_as_jansson(&t);
    }
}

static void test_invalid_utf8_is_refused_in_any_field(void **state)
{
    (void)state;
    const char *bad[] = {
        "\x80 lone continuation",
        "\xC0\xAF overlong slash",
        "\xC1\xBF overlong",
        "\xE0\x80\xAF overlong three bytes",
        "\xED\xA0\x80 surrogate D800",
        "\xED\xBF\xBF surrogate DFFF",
        "\xF4\x90\x80\x80 above U+10FFFF",
        "\xF5\x80\x80\x80 lead F5",
        "\xFF",
        "truncated \xE2\x82",
        "truncated at end \xF0\x9F\x98",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (int field = 0; field < 4; field++) {
            cad_plugin_touch_t t = sample_touch();
            if (field == 0)
                t.subject = bad[i];
            else if (field == 1)
                t.contact.email = bad[i];
            else if (field == 2)
                t.idempotency_key = bad[i];
            else
                t.content.url = bad[i];
            size_t len = 99;
            errno = 0;
            assert_null(cad_webhook_body("touch.decided", NOW, &t, &len));
            assert_int_equal(errno, EILSEQ);
            assert_null(reference_body("touch.decided", NOW, &t));
        }
    }
}

static void test_attributes_of_every_shape(void **state)
{
    (void)state;
    const char *attrs[] = {
        "",
        "{}",
        "{ \"a\" : 1 ,\n \"b\": [true, null, 2.5, \"x\\u00e9\"] }",
        "{\"nested\":{\"deep\":{\"k\":\"v\\\"q\"}},\"n\":-12}",
        "[1,2,3]",
        "not json",
        "{\"unterminated\":",
        "\"a bare string\"",
    };
    for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++) {
        cad_plugin_touch_t t = sample_touch();
        t.customer.attributes = attrs[i];
        assert_same_as_jansson(&t);
    }
}

static void test_null_strings_are_written_empty(void **state)
{
    (void)state;
    cad_plugin_touch_t t = sample_touch();
    t.html = NULL;
    t.contact.phone = NULL;
    t.customer.attributes = NULL;
    size_t len = 0;
    char *body = cad_webhook_body("touch.decided", NOW, &t, &len);
    assert_non_null(body);
    json_error_t jerr;
    json_t *doc = json_loads(body, 0, &jerr);
    assert_non_null(doc);
    json_t *data = json_object_get(doc, "data");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(data, "message"), "html")), "");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(data, "contact"), "phone")), "");
    assert_int_equal(
        json_object_size(json_object_get(json_object_get(data, "customer"), "attributes")), 0);
    json_decref(doc);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_body_is_jansson_s_compact_dump),
        cmocka_unit_test(test_every_character_class_is_escaped_like_jansson),
        cmocka_unit_test(test_invalid_utf8_is_refused_in_any_field),
        cmocka_unit_test(test_attributes_of_every_shape),
        cmocka_unit_test(test_null_strings_are_written_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
