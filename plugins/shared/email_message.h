/*
 * email_message.h — building an RFC 5322 message for the email and file
 * channels.
 *
 * Pure functions, no I/O and no clock: a plugin (email.c, file.c) gathers the
 * touch's fields and the channel settings into a cad_email_message_t and
 * cad_email_build() turns it into the exact bytes uploaded over SMTP or
 * written to an .eml file. Both plugins compile this file, so both write the
 * same headers. Every
 * header value is checked for CR/LF before anything is written (libcurl does
 * not check them), non-ASCII subjects and display names become RFC 2047
 * encoded-words folded under 76 columns, and the bodies are quoted-printable
 * UTF-8 parts of a multipart/alternative. The unit test
 * tests/unit/test_email_headers.c compiles this file directly.
 */
#ifndef CADENCE_EMAIL_MESSAGE_H
#define CADENCE_EMAIL_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define CAD_EMAIL_ERRBUF 256

/* A growable byte buffer; `data` is always NUL-terminated when non-NULL. */
typedef struct cad_email_buf {
    char *data; /* owned, free with cad_email_buf_free() */
    size_t len;
    size_t cap;
} cad_email_buf_t;

/* Everything one message needs. Strings are borrowed for the call; NULL or
 * "" means absent for the optional ones. */
typedef struct cad_email_message {
    const char *from_address;       /* required: local@domain */
    const char *from_name;          /* optional display name */
    const char *reply_to;           /* optional address */
    const char *to_address;         /* required */
    const char *to_name;            /* optional display name (the contact's name) */
    const char *subject;            /* required, UTF-8 */
    const char *text;               /* text/plain body, UTF-8; may be NULL when html is set */
    const char *html;               /* text/html body, UTF-8; optional */
    const char *idempotency_key;    /* required: X-Cadence-Idempotency-Key and Message-ID */
    const char *unsubscribe_mailto; /* optional mailto: address or URI */
    const char *unsubscribe_url;    /* optional https:// URL (one-click, RFC 8058) */
    time_t date;                    /* the Date header, UTC seconds */
    const char *rule;               /* optional: X-Cadence-Rule (the file channel's previews) */
    const char *purpose;            /* optional: X-Cadence-Purpose */
} cad_email_message_t;

/* Appends `n` bytes; returns 0 or -1 when out of memory. */
int cad_email_buf_append(cad_email_buf_t *buf, const char *data, size_t n);

/* Appends a NUL-terminated string; returns 0 or -1 when out of memory. */
int cad_email_buf_puts(cad_email_buf_t *buf, const char *s);

/* Frees the buffer's bytes and resets it to empty. NULL-safe. */
void cad_email_buf_free(cad_email_buf_t *buf);

/* Returns 0 when `value` may go into the header `field`, or -1 and writes
 * "header injection refused in <field>" to `err` (CAD_EMAIL_ERRBUF bytes,
 * may be NULL) when it holds a CR or LF, or "... control character ..." for
 * any other C0 control or DEL. */
int cad_email_check_header(const char *field, const char *value, char *err);

/* Returns 0 when `address` is a plain ASCII addr-spec (local@domain, no
 * spaces, brackets, quotes or control characters, at most 254 bytes), or -1
 * with a message naming `field` in `err`. */
int cad_email_check_address(const char *field, const char *address, char *err);

/* Appends "Name: value" for an unstructured header (Subject), encoding the
 * value as RFC 2047 UTF-8 base64 encoded-words when it is not printable
 * ASCII and folding every line (CRLF + space) so none exceeds 76 columns.
 * The value must already have passed cad_email_check_header(). Appends the
 * final CRLF. Returns 0 or -1 when out of memory or the value is not UTF-8
 * (message in `err`). */
int cad_email_append_unstructured(cad_email_buf_t *buf, const char *name, const char *value,
                                  char *err);

/* Splits a mailbox setting, "addr@domain" or "Display Name <addr@domain>"
 * (the name may be a quoted string), into `name` and `address` (buffers of
 * `size` bytes each); the name is "" when absent. Returns 0, or -1 with a
 * message naming `field` in `err` when the text is not of that form or the
 * address fails cad_email_check_address(). */
int cad_email_parse_mailbox(const char *field, const char *text, char *name, char *address,
                            size_t size, char *err);

/* Appends a mailbox "display <addr>" for From/To: the display name is kept
 * as an atom phrase, quoted, or encoded as RFC 2047 words as needed; no
 * CRLF is appended. `column` is where the mailbox starts on its line.
 * Returns 0 or -1 with a message in `err`. */
int cad_email_append_mailbox(cad_email_buf_t *buf, size_t column, const char *name,
                             const char *address, char *err);

/* Writes the RFC 5322 date of `t` (UTC, "Mon, 23 Nov 2026 09:03:10 +0000")
 * into `out` (at least 32 bytes). Locale-independent. */
void cad_email_format_date(time_t t, char *out, size_t size);

/* Returns the domain part of an address (a pointer into it), or NULL. */
const char *cad_email_domain(const char *address);

/* Writes the hex digest of `key` used in Message-ID and the MIME boundary:
 * the first 16 bytes of its SHA-256 as 32 hex digits into `out`, which must
 * hold 33 bytes. Deterministic: the same idempotency key always gives the
 * same Message-ID, so a resend after a crash is recognisable downstream. */
void cad_email_key_digest(const char *key, char out[33]);

/* Appends `text` as quoted-printable (RFC 2045): lines at most 76 columns
 * with soft breaks, any LF or CRLF becomes a CRLF hard break, '=' and
 * non-ASCII bytes and trailing white space encoded. Returns 0 or -1 when
 * out of memory. */
int cad_email_append_qp(cad_email_buf_t *buf, const char *text);

/* Builds the whole message (headers, blank line, body) into `out`, which
 * must be empty; on failure `out` is freed and `err` names the field. The
 * caller owns `out` and frees it with cad_email_buf_free(). Returns 0 or -1. */
int cad_email_build(const cad_email_message_t *msg, cad_email_buf_t *out, char *err);

#endif
