/*
 * fuzz_template.c — the template checker and renderer (template.h).
 *
 * Input: the template, then optionally a NUL byte and the customer's
 * attributes (JSON object text), then optionally a NUL byte and a value
 * used as the customer's and contact's names. Each input is checked and
 * rendered as text and as HTML. Properties beyond memory safety:
 *   - a failure always comes with an error sentence;
 *   - a template the load-time check refuses never renders;
 *   - rendered output stays within CAD_TEMPLATE_OUTPUT_MAX;
 *   - in HTML, no '<' appears in the output that the template's literal
 *     text did not contain (every value is escaped).
 */
#include "fuzz_common.h"

#include "template.h"

#include <string.h>

static char *part(const uint8_t **data, size_t *size)
{
    const uint8_t *nul = memchr(*data, '\0', *size);
    size_t n = nul ? (size_t)(nul - *data) : *size;
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, *data, n);
    s[n] = '\0';
    *data += nul ? n + 1 : n;
    *size -= nul ? n + 1 : n;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *tmpl = part(&data, &size);
    char *attributes = part(&data, &size);
    char *name = part(&data, &size);
    cad_plugin_touch_t t = {
        .struct_size = sizeof t,
        .idempotency_key = "k-1",
        .touch_id = 1,
        .customer = {.id = "acme", .name = name, .attributes = attributes[0] ? attributes : "{}"},
        .contact = {.id = "c1", .name = name, .first_name = name, .email = "a@b.test", .phone = ""},
        .rule = "welcome",
        .purpose = "value",
        .channel = "email",
        .content = {.id = "guide", .title = name, .url = "https://x.test/?a=1&b=2"},
        .subject = "",
        .text = "",
        .html = "",
        .unsubscribe_url = "https://x.test/u/1",
        .unsubscribe_mailto = "",
        .attempt = 1,
    };
    char err[CAD_ERRBUF] = "";
    int checked = cad_template_check(tmpl, err);
    FUZZ_CHECK(checked == 0 || err[0], "check failed without a message");
    for (int html = 0; html <= 1; html++) {
        char *out = NULL;
        err[0] = '\0';
        int rc = cad_template_render(tmpl, html, &t, &out, err);
        if (rc != 0) {
            FUZZ_CHECK(err[0], "render failed (%d) without a message", rc);
            FUZZ_CHECK(out == NULL, "render failed but returned output");
            continue;
        }
        FUZZ_CHECK(checked == 0, "a template refused at load rendered: %s", err);
        FUZZ_CHECK(out != NULL, "render succeeded without output");
        FUZZ_CHECK(strlen(out) <= CAD_TEMPLATE_OUTPUT_MAX, "output of %zu bytes", strlen(out));
        if (html && !strchr(tmpl, '<'))
            FUZZ_CHECK(!strchr(out, '<'), "an unescaped '<' in HTML output");
        free(out);
    }
    free(tmpl);
    free(attributes);
    free(name);
    return 0;
}
