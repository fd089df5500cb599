/*
 * webhook_body.h — the webhook channel's JSON body, written in one pass.
 *
 * The body has a fixed shape (docs/plugins.md): every value is a string
 * from the touch, a number, or the customer's attributes (JSON the store
 * keeps). Building it as a jansson document and dumping it allocated some
 * thirty objects per touch and was a third of the loop thread's time at
 * full dispatch; this writes the same bytes straight into one buffer.
 * jansson still parses and re-serialises the attributes, and the unit test
 * and fuzz target compare every body with jansson's own output.
 */
#ifndef CADENCE_WEBHOOK_BODY_H
#define CADENCE_WEBHOOK_BODY_H

#include <cadence/channel.h>

#include <stddef.h>

/* Returns the compact JSON body of touch `t` (malloc'd, NUL-terminated; the
 * caller frees it) and its length in *len: event `type`, `timestamp` (`now`,
 * the attempt's Unix time, as ISO 8601 UTC) and the touch's data, with keys
 * in the documented
 * order. NULL strings in the touch are written as "". Returns NULL with
 * errno EILSEQ when a string is not valid UTF-8 (JSON cannot carry it), or
 * ENOMEM when memory runs out. */
char *cad_webhook_body(const char *type, int64_t now, const cad_plugin_touch_t *t, size_t *len);

#endif
