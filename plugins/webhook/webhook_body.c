/*
 * webhook_body.c — the webhook channel's JSON body (see webhook_body.h).
 *
 * Strings are escaped as jansson's compact dump does (RFC 8259 §7): quote,
 * backslash and the control characters below 0x20, with the short forms
 * \b \f \n \r \t and \u00XX (upper-case hex) for the rest; everything else,
 * non-ASCII included, is copied as is after its UTF-8 is checked (no
 * overlong forms, no surrogates, nothing above U+10FFFF).
 */
#include "webhook_body.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct out {
    char *data;
    size_t len, cap;
    bool failed;       /* out of memory or invalid UTF-8: the body is not written */
    bool invalid_utf8; /* ...and which of the two */
} out_t;

static bool reserve(out_t *o, size_t more)
{
    if (o->failed)
        return false;
    if (o->len + more + 1 <= o->cap)
        return true;
    size_t cap = o->cap ? o->cap : 1024;
    while (cap < o->len + more + 1)
        cap *= 2;
    char *p = realloc(o->data, cap);
    if (!p) {
        o->failed = true;
        return false;
    }
    o->data = p;
    o->cap = cap;
    return true;
}

static void put(out_t *o, const char *s, size_t n)
{
    if (!reserve(o, n))
        return;
    memcpy(o->data + o->len, s, n);
    o->len += n;
}

static void put_lit(out_t *o, const char *s)
{
    put(o, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *s)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t n;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0; /* a continuation byte, an overlong lead (C0, C1) or beyond F4 */
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0; /* also stops at the terminating NUL */
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* Writes s as a quoted JSON string; NULL as "". */
static void put_str(out_t *o, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    put(o, "\"", 1);
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p && !o->failed) {
        /* copy the longest run that needs no escape */
        const unsigned char *run = p;
        while (*p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
            p++;
        if (p > run)
            put(o, (const char *)run, (size_t)(p - run));
        if (!*p)
            break;
        unsigned c = *p;
        if (c >= 0x80) {
            size_t n = utf8_seq(p);
            if (n == 0) {
                o->failed = true;
                o->invalid_utf8 = true;
                return;
            }
            put(o, (const char *)p, n);
            p += n;
            continue;
        }
        char esc[6] = {'\\', 0};
        size_t n = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xF];
            n = 6;
        }
        put(o, esc, n);
        p++;
    }
    put(o, "\"", 1);
}

/* Writes ,"key":"value" (no comma before the first member: `first`). */
static void member(out_t *o, const char *key, const char *value, bool first)
{
    if (!first)
        put(o, ",", 1);
    put_str(o, key);
    put(o, ":", 1);
    put_str(o, value);
}

/* The customer's attributes as the store keeps them (JSON text), parsed and
 * written compact by jansson; {} when empty or not valid JSON. */
static void put_attributes(out_t *o, const char *attributes)
{
    if (!attributes || !*attributes || strcmp(attributes, "{}") == 0) {
        put(o, "{}", 2);
        return;
    }
    json_error_t jerr;
    json_t *v = json_loads(attributes, 0, &jerr);
    char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    put_lit(o, text ? text : "{}");
    free(text);
}

static void iso_time(int64_t t, char *buf, size_t size)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, size, "1970-01-01T00:00:00Z");
}

char *cad_webhook_body(const char *type, int64_t now, const cad_plugin_touch_t *t, size_t *len)
{
    out_t o = {0};
    char num[32], decided[32], timestamp[32];
    iso_time(t->decided_at, decided, sizeof decided);
    iso_time(now, timestamp, sizeof timestamp);
    put(&o, "{", 1);
    member(&o, "type", type, true);
    member(&o, "timestamp", timestamp, false);
    put_lit(&o, ",\"data\":{\"touch_id\":");
    snprintf(num, sizeof num, "%lld", (long long)t->touch_id);
    put_lit(&o, num);
    member(&o, "idempotency_key", t->idempotency_key, false);
    put_lit(&o, ",\"attempt\":");
    snprintf(num, sizeof num, "%d", t->attempt);
    put_lit(&o, num);
    put_lit(&o, ",\"customer\":{");
    member(&o, "id", t->customer.id, true);
    member(&o, "name", t->customer.name, false);
    put_lit(&o, ",\"attributes\":");
    put_attributes(&o, t->customer.attributes);
    put_lit(&o, "},\"contact\":{");
    member(&o, "id", t->contact.id, true);
    member(&o, "name", t->contact.name, false);
    member(&o, "first_name", t->contact.first_name, false);
    member(&o, "email", t->contact.email, false);
    member(&o, "phone", t->contact.phone, false);
    put(&o, "}", 1);
    member(&o, "rule", t->rule, false);
    member(&o, "purpose", t->purpose, false);
    member(&o, "channel", t->channel, false);
    put_lit(&o, ",\"content\":{");
    member(&o, "id", t->content.id, true);
    member(&o, "title", t->content.title, false);
    member(&o, "url", t->content.url, false);
    put_lit(&o, "},\"message\":{");
    member(&o, "subject", t->subject, true);
    member(&o, "text", t->text, false);
    member(&o, "html", t->html, false);
    put_lit(&o, "},\"unsubscribe\":{");
    member(&o, "url", t->unsubscribe_url, true);
    member(&o, "mailto", t->unsubscribe_mailto, false);
    put(&o, "}", 1);
    member(&o, "decided_at", decided, false);
    put_lit(&o, "}}");
    if (o.failed) {
        free(o.data);
        errno = o.invalid_utf8 ? EILSEQ : ENOMEM;
        return NULL;
    }
    o.data[o.len] = '\0';
    *len = o.len;
    return o.data;
}
