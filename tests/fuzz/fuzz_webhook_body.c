/*
 * fuzz_webhook_body.c — the webhook channel's body writer
 * (plugins/webhook/webhook_body.c, compiled into this target as its unit
 * test does).
 *
 * Input: up to eight fields separated by NUL bytes — customer name,
 * attributes (JSON text), contact first name, email, subject, text, HTML,
 * idempotency key — missing ones take a valid default. Properties:
 *   - the body is byte for byte jansson's compact dump of the same document
 *     (webhook_reference.h), or both refuse the touch;
 *   - a refusal is for invalid UTF-8 (errno EILSEQ), never anything else;
 *   - a body parses back with jansson, and its text field is the input.
 */
#include "fuzz_common.h"

#include "webhook_body.c"
#include "webhook_reference.h"

#include <errno.h>

#define N_FIELDS 8

static const char *const defaults[N_FIELDS] = {
    "Acme", "{\"plan\":\"pro\"}", "Pat", "pat@example.com", "Hello", "Body text", "", "key-1",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    copy[size] = '\0';
    const char *field[N_FIELDS];
    char *p = copy;
    for (int i = 0; i < N_FIELDS; i++) {
        if (p <= copy + size) {
            field[i] = p;
            p += strlen(p) + 1;
        } else {
            field[i] = defaults[i];
        }
    }
    cad_plugin_touch_t t = {
        .struct_size = sizeof t,
        .idempotency_key = field[7],
        .touch_id = (int64_t)size * 7919,
        .customer = {.id = "c1", .name = field[0], .attributes = field[1]},
        .contact = {.id = "c1-dm",
                    .name = "Pat Doe",
                    .first_name = field[2],
                    .email = field[3],
                    .phone = ""},
        .rule = "r",
        .purpose = "value",
        .channel = "hook",
        .content = {.id = "", .title = "", .url = ""},
        .subject = field[4],
        .text = field[5],
        .html = field[6],
        .unsubscribe_url = "",
        .unsubscribe_mailto = "",
        .decided_at = (int64_t)size * 86400,
        .attempt = (int)(size % 10) + 1,
    };
    size_t len = 0;
    errno = 0;
    int64_t now = 1767225600 + (int64_t)size * 3601; /* an attempt's time, from the input */
    char *ours = cad_webhook_body("touch.decided", now, &t, &len);
    int err = errno;
    char *ref = reference_body("touch.decided", now, &t);
    if (!ref) {
        FUZZ_CHECK(!ours, "jansson refused the touch, the writer made %s", ours);
        FUZZ_CHECK(err == EILSEQ, "refused with errno %d, not EILSEQ", err);
    } else {
        FUZZ_CHECK(ours, "the writer refused a touch jansson encodes as %s (errno %d)", ref, err);
        FUZZ_CHECK(strcmp(ours, ref) == 0, "bodies differ:\n  ours %s\n  jansson %s", ours, ref);
        FUZZ_CHECK(len == strlen(ours), "length %zu, not %zu", len, strlen(ours));
        json_error_t jerr;
        json_t *doc = json_loads(ours, 0, &jerr);
        FUZZ_CHECK(doc, "the body does not parse: %s", jerr.text);
        const char *text = json_string_value(
            json_object_get(json_object_get(json_object_get(doc, "data"), "message"), "text"));
        FUZZ_CHECK(text && strcmp(text, t.text) == 0, "the text field changed");
        json_decref(doc);
    }
    free(ours);
    free(ref);
    free(copy);
    return 0;
}
