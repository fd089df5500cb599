/*
 * webhook_reference.h — the webhook body as jansson builds it: json_pack of
 * the documented shape and a compact json_dumps, as the plugin did before
 * it wrote the body itself. The unit test and the fuzz target compare
 * cad_webhook_body() with it byte for byte.
 */
#ifndef CADENCE_WEBHOOK_REFERENCE_H
#define CADENCE_WEBHOOK_REFERENCE_H

#include <cadence/channel.h>
#include <jansson.h>
#include <time.h>

/* Returns the reference body (malloc'd), or NULL when jansson refuses a
 * string (invalid UTF-8). */
static inline char *reference_body(const char *type, int64_t now, const cad_plugin_touch_t *t)
{
    char ts[32], decided[32];
    struct tm tm;
    time_t tt = (time_t)now;
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&tt, &tm));
    tt = (time_t)t->decided_at;
    strftime(decided, sizeof decided, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&tt, &tm));
    json_error_t jerr;
    json_t *attrs = t->customer.attributes ? json_loads(t->customer.attributes, 0, &jerr) : NULL;
    if (!attrs)
        attrs = json_object();
    json_t *doc = json_pack(
        "{s:s, s:s, s:{s:I, s:s, s:i, s:{s:s, s:s, s:o}, s:{s:s, s:s, s:s, s:s, s:s}, s:s, s:s, "
        "s:s, s:{s:s, s:s, s:s}, s:{s:s, s:s, s:s}, s:{s:s, s:s}, s:s}}",
        "type", type, "timestamp", ts, "data", "touch_id", (json_int_t)t->touch_id,
        "idempotency_key", t->idempotency_key, "attempt", t->attempt, "customer", "id",
        t->customer.id, "name", t->customer.name, "attributes", attrs, "contact", "id",
        t->contact.id, "name", t->contact.name, "first_name", t->contact.first_name, "email",
        t->contact.email, "phone", t->contact.phone, "rule", t->rule, "purpose", t->purpose,
        "channel", t->channel, "content", "id", t->content.id, "title", t->content.title, "url",
        t->content.url, "message", "subject", t->subject, "text", t->text, "html", t->html,
        "unsubscribe", "url", t->unsubscribe_url, "mailto", t->unsubscribe_mailto, "decided_at",
        decided);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return text;
}

#endif
