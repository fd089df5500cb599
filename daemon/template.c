/*
 * template.c — {{variable}} substitution for message templates.
 *
 * One scanner serves both the load-time check and rendering: it walks the
 * template once, copies literal text, and for each "{{ name }}" resolves the
 * name. Checking resolves against the fixed list only (customer attributes
 * are unknown until a customer is at hand); rendering looks the value up in
 * the touch. The output grows in a bounded buffer, so a hostile template or
 * attribute can cost at most CAD_TEMPLATE_OUTPUT_MAX bytes, and the scanner
 * only ever reads inside the template's length. Values, never the literal
 * text, are escaped for where they land: HTML entities in an HTML part,
 * RFC 3986 percent-encoding in a URL or address template (the unsubscribe
 * settings), so a customer id "café büro" gives "caf%C3%A9%20b%C3%BCro".
 */
#include "template.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const cad_template_variables[] = {
    "customer.id",
    "customer.name",
    "contact.id",
    "contact.name",
    "contact.first_name",
    "contact.email",
    "contact.phone",
    "content.id",
    "content.title",
    "content.url",
    "unsubscribe_url",
    "unsubscribe_mailto",
    "rule",
    "purpose",
    "channel",
    "idempotency_key",
    NULL,
};

typedef struct buf {
    char *data;
    size_t len, cap;
} buf_t;

static int buf_append(buf_t *b, const char *s, size_t n)
{
    if (n > CAD_TEMPLATE_OUTPUT_MAX - b->len)
        return -CAD_EFULL;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p)
            return -CAD_ENOMEM;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/* RFC 3986 section 2.3: the bytes a URI component may carry as they are. */
static bool is_unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static int buf_append_percent(buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_unreserved(c))
            continue;
        char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
        int rc = buf_append(b, s + start, i - start);
        if (rc == 0)
            rc = buf_append(b, esc, sizeof esc);
        if (rc < 0)
            return rc;
        start = i + 1;
    }
    return buf_append(b, s + start, n - start);
}

static int buf_append_escaped(buf_t *b, const char *s, size_t n, enum cad_plugin_escape escape)
{
    if (escape == CAD_PLUGIN_ESCAPE_URI_COMPONENT)
        return buf_append_percent(b, s, n);
    if (escape != CAD_PLUGIN_ESCAPE_HTML)
        return buf_append(b, s, n);
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        const char *rep = NULL;
        switch (s[i]) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&#39;"; break;
        default: continue;
        }
        int rc = buf_append(b, s + start, i - start);
        if (rc == 0)
            rc = buf_append(b, rep, strlen(rep));
        if (rc < 0)
            return rc;
        start = i + 1;
    }
    return buf_append(b, s + start, n - start);
}

static int append_error(int r, char *err)
{
    if (r == -CAD_EFULL)
        return cad_fail(err, CAD_EFULL, "rendered template is longer than %d bytes",
                        CAD_TEMPLATE_OUTPUT_MAX);
    return cad_fail(err, CAD_ENOMEM, "out of memory rendering a template");
}

static bool is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

static bool is_known(const char *name)
{
    for (int i = 0; cad_template_variables[i]; i++)
        if (strcmp(cad_template_variables[i], name) == 0)
            return true;
    return false;
}

/* customer.<attribute>: one identifier after the prefix, no further dots. */
static const char *attribute_name(const char *name)
{
    if (strncmp(name, "customer.", 9) != 0)
        return NULL;
    const char *attr = name + 9;
    if (!*attr || strchr(attr, '.'))
        return NULL;
    return attr;
}

static const char *fixed_value(const cad_plugin_touch_t *t, const char *name)
{
    static const struct {
        const char *name;
        size_t offset;
    } map[] = {
        {"customer.id", offsetof(cad_plugin_touch_t, customer.id)},
        {"customer.name", offsetof(cad_plugin_touch_t, customer.name)},
        {"contact.id", offsetof(cad_plugin_touch_t, contact.id)},
        {"contact.name", offsetof(cad_plugin_touch_t, contact.name)},
        {"contact.first_name", offsetof(cad_plugin_touch_t, contact.first_name)},
        {"contact.email", offsetof(cad_plugin_touch_t, contact.email)},
        {"contact.phone", offsetof(cad_plugin_touch_t, contact.phone)},
        {"content.id", offsetof(cad_plugin_touch_t, content.id)},
        {"content.title", offsetof(cad_plugin_touch_t, content.title)},
        {"content.url", offsetof(cad_plugin_touch_t, content.url)},
        {"unsubscribe_url", offsetof(cad_plugin_touch_t, unsubscribe_url)},
        {"unsubscribe_mailto", offsetof(cad_plugin_touch_t, unsubscribe_mailto)},
        {"rule", offsetof(cad_plugin_touch_t, rule)},
        {"purpose", offsetof(cad_plugin_touch_t, purpose)},
        {"channel", offsetof(cad_plugin_touch_t, channel)},
        {"idempotency_key", offsetof(cad_plugin_touch_t, idempotency_key)},
    };
    for (size_t i = 0; i < CAD_ARRAY_LEN(map); i++) {
        if (strcmp(map[i].name, name) == 0) {
            const char *v = *(const char *const *)((const char *)t + map[i].offset);
            return v ? v : "";
        }
    }
    return NULL;
}

/* Where a byte offset lies in the template, 1-based, for messages. */
static void position(const char *tmpl, size_t off, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (tmpl[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

typedef struct render_ctx {
    const cad_plugin_touch_t *touch; /* NULL: check only */
    const char *refuse;              /* check only: variables with this prefix have no value */
    json_t *attributes;              /* parsed lazily */
    enum cad_plugin_escape escape;
    buf_t out;
} render_ctx_t;

static int attribute_value(render_ctx_t *rc, const char *attr, const char *var, char *err)
{
    if (!rc->attributes) {
        const char *text = rc->touch->customer.attributes;
        if (!text || !*text)
            text = "{}";
        json_error_t jerr;
        rc->attributes = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
        /* jansson names no error when it could not even start (out of memory) */
        if (!rc->attributes &&
            (json_error_code(&jerr) == json_error_out_of_memory || jerr.text[0] == '\0'))
            return cad_fail(err, CAD_ENOMEM, "out of memory reading the attributes of customer %s",
                            rc->touch->customer.id);
        if (!rc->attributes || !json_is_object(rc->attributes))
            return cad_fail(err, CAD_EINVAL,
                            "attributes of customer %s are not a JSON object (%s), needed by "
                            "{{%s}}",
                            rc->touch->customer.id, rc->attributes ? "not an object" : jerr.text,
                            var);
    }
    json_t *v = json_object_get(rc->attributes, attr);
    char num[64];
    const char *s = NULL;
    size_t n = 0;
    if (!v || json_is_null(v))
        return cad_fail(err, CAD_ENOTFOUND,
                        "customer %s has no attribute \"%s\", used by {{%s}} in the template",
                        rc->touch->customer.id, attr, var);
    if (json_is_string(v)) {
        s = json_string_value(v);
        n = json_string_length(v);
    } else if (json_is_integer(v)) {
        n = (size_t)snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        s = num;
    } else if (json_is_real(v)) {
        n = (size_t)snprintf(num, sizeof num, "%.15g", json_real_value(v));
        s = num;
    } else if (json_is_boolean(v)) {
        s = json_is_true(v) ? "true" : "false";
        n = strlen(s);
    } else {
        return cad_fail(err, CAD_EINVAL,
                        "attribute \"%s\" of customer %s is an object or array, not a value "
                        "{{%s}} can print",
                        attr, rc->touch->customer.id, var);
    }
    int r = buf_append_escaped(&rc->out, s, n, rc->escape);
    return r < 0 ? append_error(r, err) : 0;
}

static int scan(const char *tmpl, render_ctx_t *rc, char *err)
{
    size_t len = strlen(tmpl);
    size_t i = 0, lit = 0;
    int line, col, r;
    while (i < len) {
        if (!(tmpl[i] == '{' && i + 1 < len && tmpl[i + 1] == '{')) {
            i++;
            continue;
        }
        size_t open = i;
        if (rc->touch && (r = buf_append(&rc->out, tmpl + lit, open - lit)) < 0)
            return append_error(r, err);
        i += 2;
        while (i < len && (tmpl[i] == ' ' || tmpl[i] == '\t'))
            i++;
        size_t name_start = i;
        while (i < len && is_name_char(tmpl[i]))
            i++;
        size_t name_end = i;
        while (i < len && (tmpl[i] == ' ' || tmpl[i] == '\t'))
            i++;
        if (!(i + 1 < len && tmpl[i] == '}' && tmpl[i + 1] == '}')) {
            position(tmpl, open, &line, &col);
            return cad_fail(err, CAD_EINVAL,
                            "template line %d column %d: \"{{\" is not closed by \"}}\" after a "
                            "variable name",
                            line, col);
        }
        i += 2;
        lit = i;
        size_t n = name_end - name_start;
        char name[CAD_TEMPLATE_VAR_MAX];
        if (n == 0 || n >= sizeof name) {
            position(tmpl, open, &line, &col);
            return cad_fail(err, CAD_EINVAL, "template line %d column %d: %s variable name", line,
                            col, n == 0 ? "empty" : "overlong");
        }
        memcpy(name, tmpl + name_start, n);
        name[n] = '\0';
        const char *attr = NULL;
        if (!is_known(name) && !(attr = attribute_name(name))) {
            position(tmpl, open, &line, &col);
            return cad_fail(err, CAD_EINVAL,
                            "template line %d column %d: unknown variable {{%s}} (known: "
                            "customer.id, customer.name, customer.<attribute>, contact.name, "
                            "contact.first_name, content.title, content.url, unsubscribe_url, "
                            "rule, ...)",
                            line, col, name);
        }
        if (rc->refuse && strncmp(name, rc->refuse, strlen(rc->refuse)) == 0) {
            position(tmpl, open, &line, &col);
            return cad_fail(err, CAD_EINVAL, "template line %d column %d: {{%s}} would be empty",
                            line, col, name);
        }
        if (!rc->touch)
            continue;
        if (attr) {
            r = attribute_value(rc, attr, name, err);
            if (r < 0)
                return r;
        } else {
            const char *v = fixed_value(rc->touch, name);
            if ((r = buf_append_escaped(&rc->out, v, strlen(v), rc->escape)) < 0)
                return append_error(r, err);
        }
    }
    if (rc->touch && (r = buf_append(&rc->out, tmpl + lit, len - lit)) < 0)
        return append_error(r, err);
    return 0;
}

int cad_template_check(const char *tmpl, char *err)
{
    return cad_template_check_without(tmpl, NULL, err);
}

int cad_template_check_without(const char *tmpl, const char *prefix, char *err)
{
    if (!tmpl)
        return 0;
    render_ctx_t rc = {.refuse = prefix && *prefix ? prefix : NULL};
    return scan(tmpl, &rc, err);
}

int cad_template_render(const char *tmpl, bool html, const cad_plugin_touch_t *touch, char **out,
                        char *err)
{
    return cad_template_render_as(tmpl, html ? CAD_PLUGIN_ESCAPE_HTML : CAD_PLUGIN_ESCAPE_NONE,
                                  touch, out, err);
}

int cad_template_render_as(const char *tmpl, enum cad_plugin_escape escape,
                           const cad_plugin_touch_t *touch, char **out, char *err)
{
    *out = NULL;
    if (escape != CAD_PLUGIN_ESCAPE_NONE && escape != CAD_PLUGIN_ESCAPE_HTML &&
        escape != CAD_PLUGIN_ESCAPE_URI_COMPONENT)
        return cad_fail(err, CAD_EINVAL, "unknown template escaping %d", (int)escape);
    render_ctx_t rc = {.touch = touch, .escape = escape};
    int r = buf_append(&rc.out, "", 0);
    if (r == 0 && tmpl)
        r = scan(tmpl, &rc, err);
    else if (r < 0)
        r = cad_fail(err, CAD_ENOMEM, "out of memory rendering a template");
    if (rc.attributes)
        json_decref(rc.attributes);
    if (r < 0) {
        free(rc.out.data);
        return r;
    }
    *out = rc.out.data;
    return 0;
}
