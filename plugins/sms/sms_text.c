/*
 * sms_text.c — E.164, senders, GSM-7/UCS-2 segment counting, form encoding.
 *
 * Segment counting follows 3GPP TS 23.038: a message whose characters are
 * all in the GSM 7-bit default alphabet costs one septet each (two for the
 * extension table: ^ { } \ [ ] ~ | € and form feed, written as ESC + code)
 * and fits 160 septets in one SMS, or 153 per part once a concatenation
 * header is needed. Any other character switches the whole message to
 * UCS-2: 70 UTF-16 code units in one SMS, 67 per part. Parts are packed
 * greedily without splitting an escape pair or a surrogate pair, which is
 * what carriers and Twilio bill.
 */
#include "sms_text.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool cad_sms_e164_valid(const char *number)
{
    if (!number || number[0] != '+' || number[1] < '1' || number[1] > '9')
        return false;
    size_t digits = 0;
    for (const char *p = number + 1; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        digits++;
    }
    return digits >= 7 && digits <= 15;
}

bool cad_sms_sender_valid(const char *sender)
{
    if (!sender || !*sender)
        return false;
    if (sender[0] == '+')
        return cad_sms_e164_valid(sender);
    size_t len = strlen(sender);
    bool letter = false;
    bool digits_only = true;
    for (const char *p = sender; *p; p++) {
        bool is_digit = *p >= '0' && *p <= '9';
        bool is_letter = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z');
        if (!is_digit && !is_letter && *p != ' ')
            return false;
        letter |= is_letter;
        digits_only &= is_digit;
    }
    if (digits_only)
        return len >= 3 && len <= 8;
    return letter && len <= 11 && sender[0] != ' ' && sender[len - 1] != ' ';
}

/* Septets of one code point in GSM 03.38: 1 basic, 2 extension, 0 when
 * the character is not in the alphabet. */
static int gsm7_septets(uint32_t cp)
{
    static const uint16_t basic_non_ascii[] = {
        0x00a3, 0x00a5, 0x00e8, 0x00e9, 0x00f9, 0x00ec, 0x00f2, 0x00c7, 0x00d8, 0x00f8,
        0x00c5, 0x00e5, 0x0394, 0x03a6, 0x0393, 0x039b, 0x03a9, 0x03a0, 0x03a8, 0x03a3,
        0x0398, 0x039e, 0x00c6, 0x00e6, 0x00df, 0x00c9, 0x00a4, 0x00a1, 0x00c4, 0x00d6,
        0x00d1, 0x00dc, 0x00a7, 0x00bf, 0x00e4, 0x00f6, 0x00f1, 0x00fc, 0x00e0,
    };
    if (cp == '\n' || cp == '\r')
        return 1;
    if (cp == '\f' || cp == 0x20ac)
        return 2;
    if (cp >= 0x20 && cp < 0x7f) {
        if (cp == '`')
            return 0;
        if (strchr("^{}\\[]~|", (int)cp))
            return 2;
        return 1;
    }
    for (size_t i = 0; i < sizeof(basic_non_ascii) / sizeof(basic_non_ascii[0]); i++) {
        if (basic_non_ascii[i] == cp)
            return 1;
    }
    return 0;
}

/* Decodes one UTF-8 sequence; returns its length, 0 when malformed. */
static size_t utf8_decode(const unsigned char *p, uint32_t *cp)
{
    size_t n;
    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    }
    if ((p[0] & 0xe0) == 0xc0) {
        n = 2;
        *cp = p[0] & 0x1f;
    } else if ((p[0] & 0xf0) == 0xe0) {
        n = 3;
        *cp = p[0] & 0x0f;
    } else if ((p[0] & 0xf8) == 0xf0) {
        n = 4;
        *cp = p[0] & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        *cp = (*cp << 6) | (p[i] & 0x3f);
    }
    if ((n == 2 && *cp < 0x80) || (n == 3 && *cp < 0x800) || (n == 4 && *cp < 0x10000) ||
        (*cp >= 0xd800 && *cp <= 0xdfff) || *cp > 0x10ffff)
        return 0;
    return n;
}

int cad_sms_count_segments(const char *text, cad_sms_count_t *count, char *err)
{
    const unsigned char *s = (const unsigned char *)(text ? text : "");
    bool gsm = true;
    size_t septets = 0;
    size_t utf16 = 0;
    for (size_t i = 0; s[i];) {
        uint32_t cp;
        size_t n = utf8_decode(s + i, &cp);
        if (n == 0) {
            if (err)
                snprintf(err, CAD_SMS_ERRBUF, "body is not valid UTF-8 at byte %zu", i);
            return -1;
        }
        int w = gsm7_septets(cp);
        if (w == 0)
            gsm = false;
        septets += (size_t)w;
        utf16 += cp >= 0x10000 ? 2 : 1;
        i += n;
    }
    count->encoding = gsm ? CAD_SMS_GSM7 : CAD_SMS_UCS2;
    count->units = gsm ? septets : utf16;
    size_t single = gsm ? 160 : 70;
    size_t part = gsm ? 153 : 67;
    if (count->units == 0) {
        count->segments = 0;
        return 0;
    }
    if (count->units <= single) {
        count->segments = 1;
        return 0;
    }
    /* pack greedily, never splitting a two-unit character */
    size_t segments = 1;
    size_t used = 0;
    for (size_t i = 0; s[i];) {
        uint32_t cp = 0;
        size_t n = utf8_decode(s + i, &cp);
        if (n == 0)
            break; /* cannot happen: the text was validated above */
        size_t w = gsm ? (size_t)gsm7_septets(cp) : (cp >= 0x10000 ? 2 : 1);
        if (used + w > part) {
            segments++;
            used = 0;
        }
        used += w;
        i += n;
    }
    count->segments = segments;
    return 0;
}

/* Writes `s` percent-encoded at `out`; returns the bytes written. */
static size_t form_escape(char *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            out[n++] = (char)*p;
        } else if (*p == ' ') {
            out[n++] = '+';
        } else {
            out[n++] = '%';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        }
    }
    return n;
}

int cad_sms_form_add(char **form, size_t *len, const char *name, const char *value)
{
    if (!value)
        value = "";
    /* worst case: every byte percent-encoded, plus '&', '=' and the NUL */
    size_t need = *len + 3 * (strlen(name) + strlen(value)) + 3;
    char *grown = realloc(*form, need);
    if (!grown)
        return -1;
    *form = grown;
    if (*len > 0)
        grown[(*len)++] = '&';
    *len += form_escape(grown + *len, name);
    grown[(*len)++] = '=';
    *len += form_escape(grown + *len, value);
    grown[*len] = '\0';
    return 0;
}
