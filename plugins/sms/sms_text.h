/*
 * sms_text.h — the checks an SMS needs before it costs anything.
 *
 * Pure functions used by the sms plugin (sms.c) and compiled directly into
 * tests/unit/test_sms_text.c: E.164 and sender validation, the segment
 * count a carrier will bill (GSM 03.38 7-bit alphabet with its extension
 * table, else UCS-2), and application/x-www-form-urlencoded encoding.
 */
#ifndef CADENCE_SMS_TEXT_H
#define CADENCE_SMS_TEXT_H

#include <stdbool.h>
#include <stddef.h>

#define CAD_SMS_ERRBUF 256

enum cad_sms_encoding {
    CAD_SMS_GSM7 = 0, /* every character is in the GSM 03.38 basic or extension table */
    CAD_SMS_UCS2,     /* anything else: UTF-16 code units */
};

typedef struct cad_sms_count {
    enum cad_sms_encoding encoding;
    size_t units;    /* septets (extension characters count 2) or UTF-16 code units */
    size_t segments; /* 1 when units fit one message (160 / 70), else parts of 153 / 67 */
} cad_sms_count_t;

/* True when `number` is E.164: '+', a non-zero digit, then 6 to 14 more
 * digits (7 to 15 digits in all), nothing else. */
bool cad_sms_e164_valid(const char *number);

/* True when `sender` can be a From: an E.164 number, a short code (3 to 8
 * digits) or an alphanumeric sender id (1 to 11 letters, digits and spaces,
 * at least one letter). */
bool cad_sms_sender_valid(const char *sender);

/* Counts the segments of UTF-8 `text`. Returns 0 and fills *count, or -1 and
 * writes "body is not valid UTF-8 at byte N" to `err` (CAD_SMS_ERRBUF
 * bytes, may be NULL). A long message is split the way carriers do: an
 * extension character's two septets or a surrogate pair never straddle
 * two segments. */
int cad_sms_count_segments(const char *text, cad_sms_count_t *count, char *err);

/* Appends "name=value" (with a leading '&' unless `*len` is 0) to the
 * malloc'd form `*form` of length `*len`, percent-encoding both sides
 * (spaces as '+'). Returns 0 or -1 when out of memory; *form stays the
 * caller's to free either way. */
int cad_sms_form_add(char **form, size_t *len, const char *name, const char *value);

#endif
