/*
 * fuzz_email_headers.c — the email channel's message builder
 * (plugins/shared/email_message.c, compiled into this target as its unit
 * test does).
 *
 * Input: up to ten fields separated by NUL bytes — from name, to name, to
 * address, subject, text body, HTML body, unsubscribe mailto, unsubscribe
 * URL, reply-to, idempotency key — missing ones take a valid default, so
 * the fuzzer reaches the builder with any one field hostile. Properties:
 *   - a header field holding CR or LF is refused, never built;
 *   - a built message has no bare CR or LF, its header block holds only the
 *     headers the builder writes (nothing injected), each header line is at
 *     most 998 bytes and every Subject line at most 76 columns;
 *   - quoted-printable output has lines of at most 76 columns, no line
 *     starting with '.', and decodes back to the input (line breaks as CRLF);
 *   - every failure comes with an error sentence.
 */
#include "fuzz_common.h"

#include "email_message.h"

#include <stdbool.h>
#include <string.h>

#define N_FIELDS 10

static const char *const defaults[N_FIELDS] = {
    "Cadence Team",
    "Ada Lovelace",
    "ada@example.com",
    "Hello",
    "Body text",
    "",
    "unsubscribe@example.com",
    "https://x.test/u/1",
    "",
    "touch-1-key",
};

static const char *const known_headers[] = {
    "From",
    "To",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "X-Cadence-Idempotency-Key",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    NULL,
};

static bool has_crlf(const char *s)
{
    return s && strpbrk(s, "\r\n") != NULL;
}

static bool known_header(const char *line, size_t len)
{
    const char *colon = memchr(line, ':', len);
    if (!colon)
        return false;
    size_t n = (size_t)(colon - line);
    for (int i = 0; known_headers[i]; i++)
        if (strlen(known_headers[i]) == n && memcmp(known_headers[i], line, n) == 0)
            return true;
    return false;
}

/* Walks a built message (or, when !whole, a header block without its
 * ending blank line) line by line. */
static void check_message(const char *msg, size_t len, bool whole)
{
    for (size_t i = 0; i < len; i++) {
        if (msg[i] == '\r')
            FUZZ_CHECK(i + 1 < len && msg[i + 1] == '\n', "bare CR at byte %zu", i);
        if (msg[i] == '\n')
            FUZZ_CHECK(i > 0 && msg[i - 1] == '\r', "bare LF at byte %zu", i);
    }
    bool headers = true, in_subject = false;
    const char *p = msg, *end = msg + len;
    while (p < end) {
        const char *eol = strstr(p, "\r\n");
        FUZZ_CHECK(eol != NULL, "the message does not end with CRLF");
        size_t n = (size_t)(eol - p);
        FUZZ_CHECK(n <= 998, "a line of %zu bytes", n);
        if (headers) {
            if (n == 0) {
                headers = false;
            } else if (p[0] == ' ' || p[0] == '\t') {
                if (in_subject)
                    FUZZ_CHECK(n <= 76, "a Subject line of %zu columns", n);
            } else {
                FUZZ_CHECK(known_header(p, n), "an unexpected header line: %.*s", (int)n, p);
                in_subject = strncmp(p, "Subject:", 8) == 0;
                if (in_subject)
                    FUZZ_CHECK(n <= 76, "a Subject line of %zu columns", n);
            }
        }
        p = eol + 2;
    }
    FUZZ_CHECK(!whole || !headers, "no blank line ends the header block");
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Checks the quoted-printable encoding of `text` line by line and by round trip. */
static void check_qp(const char *text)
{
    cad_email_buf_t qp = {0};
    FUZZ_CHECK(cad_email_append_qp(&qp, text) == 0, "quoted-printable failed");
    size_t tlen = strlen(text);
    char *expected = malloc(2 * tlen + 1), *decoded = malloc(qp.len + 1);
    FUZZ_CHECK(expected && decoded, "out of memory");
    size_t e = 0, d = 0;
    for (size_t i = 0; i < tlen; i++) {
        if (text[i] == '\n' && (i == 0 || text[i - 1] != '\r'))
            expected[e++] = '\r';
        expected[e++] = text[i];
    }
    const char *q = qp.data ? qp.data : "";
    size_t col = 0;
    for (size_t i = 0; i < qp.len; i++) {
        if (q[i] == '\r') {
            FUZZ_CHECK(i + 1 < qp.len && q[i + 1] == '\n', "bare CR in quoted-printable");
            FUZZ_CHECK(i == 0 || (q[i - 1] != ' ' && q[i - 1] != '\t'),
                       "white space before a line break in quoted-printable");
            decoded[d++] = '\r';
            decoded[d++] = '\n';
            i++;
            col = 0;
            continue;
        }
        FUZZ_CHECK(col != 0 || q[i] != '.', "a quoted-printable line starts with '.'");
        FUZZ_CHECK(q[i] == '\t' || ((unsigned char)q[i] >= 0x20 && (unsigned char)q[i] < 0x7f),
                   "byte 0x%02x in quoted-printable", (unsigned char)q[i]);
        if (q[i] == '=') {
            if (i + 2 < qp.len && q[i + 1] == '\r' && q[i + 2] == '\n') {
                FUZZ_CHECK(col + 1 <= 76, "a quoted-printable line of %zu columns", col + 1);
                i += 2;
                col = 0;
                continue;
            }
            int hi = i + 1 < qp.len ? hex_value(q[i + 1]) : -1;
            int lo = i + 2 < qp.len ? hex_value(q[i + 2]) : -1;
            FUZZ_CHECK(hi >= 0 && lo >= 0, "a bad escape in quoted-printable at %zu", i);
            decoded[d++] = (char)(hi * 16 + lo);
            i += 2;
            col += 3;
        } else {
            decoded[d++] = q[i];
            col++;
        }
        FUZZ_CHECK(col <= 76, "a quoted-printable line of %zu columns", col);
    }
    FUZZ_CHECK(d == e && memcmp(decoded, expected, e) == 0,
               "quoted-printable does not decode back to its input");
    free(expected);
    free(decoded);
    cad_email_buf_free(&qp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1);
    FUZZ_CHECK(copy != NULL, "out of memory");
    memcpy(copy, data, size);
    copy[size] = '\0';
    const char *field[N_FIELDS];
    char *p = copy;
    for (int i = 0; i < N_FIELDS; i++) {
        if (p && (size_t)(p - copy) <= size) {
            field[i] = p;
            size_t n = strlen(p);
            p = (size_t)(p - copy) + n < size ? p + n + 1 : NULL;
        } else {
            field[i] = defaults[i];
        }
    }
    cad_email_message_t msg = {
        .from_address = "news@cadence.test",
        .from_name = field[0],
        .to_name = field[1],
        .to_address = field[2],
        .subject = field[3],
        .text = field[4],
        .html = field[5],
        .unsubscribe_mailto = field[6],
        .unsubscribe_url = field[7],
        .reply_to = field[8],
        .idempotency_key = field[9],
        .date = (time_t)1795000000 + (time_t)size * 86399,
    };
    char err[CAD_EMAIL_ERRBUF] = "";
    cad_email_buf_t out = {0};
    int rc = cad_email_build(&msg, &out, err);
    bool injected = has_crlf(msg.from_name) || has_crlf(msg.to_name) || has_crlf(msg.to_address) ||
                    has_crlf(msg.subject) || has_crlf(msg.unsubscribe_mailto) ||
                    has_crlf(msg.unsubscribe_url) || has_crlf(msg.reply_to) ||
                    has_crlf(msg.idempotency_key);
    if (rc == 0) {
        FUZZ_CHECK(!injected, "a header value with CR or LF was built");
        check_message(out.data, out.len, true);
    } else {
        FUZZ_CHECK(err[0], "build failed without a message");
        FUZZ_CHECK(out.data == NULL, "a failed build left output");
    }
    cad_email_buf_free(&out);

    /* The encoders on their own, on the raw subject and body fields. */
    if (cad_email_check_header("subject", field[3], err) == 0) {
        cad_email_buf_t subject = {0};
        err[0] = '\0';
        if (cad_email_append_unstructured(&subject, "Subject", field[3], err) == 0)
            check_message(subject.data, subject.len, false);
        else
            FUZZ_CHECK(err[0], "subject encoding failed without a message");
        cad_email_buf_free(&subject);
    }
    check_qp(field[4]);
    free(copy);
    return 0;
}
