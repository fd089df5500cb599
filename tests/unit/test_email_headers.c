/*
 * test_email_headers.c — the email channel's message builder, byte by byte.
 *
 * Compiles plugins/shared/email_message.c directly (it is part of the email
 * plugin, not of the core library) and checks header injection refusal,
 * RFC 2047 encoded-words and folding, quoted-printable bodies, the Date and
 * Message-ID formats and the assembled multipart message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../plugins/shared/email_message.c"

/* ---- helpers ---------------------------------------------------------------- */

static int base64_value(char c)
{
    const char *p = strchr(base64_alphabet, c);
    return (c && p) ? (int)(p - base64_alphabet) : -1;
}

/* Decodes base64 `in` of length n into out; returns the decoded length. */
static size_t base64_decode(const char *in, size_t n, char *out)
{
    size_t len = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && in[i] != '='; i++) {
        int v = base64_value(in[i]);
        assert_true(v >= 0);
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[len++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[len] = '\0';
    return len;
}

/* Decodes an unstructured header value made of "=?UTF-8?B?...?=" words
 * separated by folding white space; fails the test on anything else. */
static void decode_words(const char *value, char *out)
{
    out[0] = '\0';
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == '\r' || *p == '\n')
            p++;
        if (!*p)
            break;
        assert_memory_equal(p, "=?UTF-8?B?", 10);
        const char *end = strstr(p + 10, "?=");
        assert_non_null(end);
        assert_true(end - p + 2 <= 75); /* RFC 2047: an encoded-word is at most 75 chars */
        base64_decode(p + 10, (size_t)(end - p - 10), out + strlen(out));
        p = end + 2;
    }
}

/* Removes CRLF before white space (RFC 5322 unfolding), in place. */
static void unfold(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '\r' && r[1] == '\n' && (r[2] == ' ' || r[2] == '\t')) {
            r++;
            continue;
        }
        *w++ = *r;
    }
    *w = '\0';
}

/* Asserts every CRLF-terminated line of s is at most `max` columns and
 * that no CR or LF appears alone. */
static void assert_lines_within(const char *s, size_t max)
{
    size_t col = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '\r') {
            assert_int_equal(p[1], '\n');
            p++;
            col = 0;
            continue;
        }
        assert_int_not_equal(*p, '\n');
        col++;
        if (col > max)
            fail_msg("line longer than %zu columns near: %.40s", max, p - col + 1);
    }
}

/* The value of header `name` in message `msg`, unfolded, into out. */
static bool header_value(const char *msg, const char *name, char *out, size_t size)
{
    size_t n = strlen(name);
    const char *p = msg;
    while (p && *p && !(p[0] == '\r' && p[1] == '\n')) {
        if (strncmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            while (*v == ' ')
                v++;
            const char *end = v;
            while (*end && !(end[0] == '\r' && end[1] == '\n' && end[2] != ' ' && end[2] != '\t'))
                end++;
            snprintf(out, size, "%.*s", (int)(end - v), v);
            unfold(out);
            return true;
        }
        p = strstr(p, "\r\n");
        if (p)
            p += 2;
    }
    return false;
}

static cad_email_message_t sample_message(void)
{
    cad_email_message_t msg = {
        .from_address = "hello@shop.example",
        .from_name = "Corner Shop",
        .to_address = "ada@example.org",
        .to_name = "Ada Lovelace",
        .subject = "Thank you for your order",
        .text = "Hi Ada,\nthank you.\n",
        .html = "<p>Hi Ada,</p><p>thank you.</p>",
        .idempotency_key = "touch-42-rule-thanks",
        .unsubscribe_mailto = "unsubscribe@shop.example",
        .unsubscribe_url = "https://shop.example/u/abc123",
        .date = 1795424590, /* 2026-11-23T09:03:10Z */
    };
    return msg;
}

/* ---- header injection ----------------------------------------------------------- */

static void test_header_injection_refused_in_subject(void **state)
{
    char err[CAD_EMAIL_ERRBUF] = "";
    cad_email_buf_t out = {0};
    cad_email_message_t msg = sample_message();
    msg.subject = "Hello\r\nBcc: victim@example.com";
    assert_int_equal(cad_email_build(&msg, &out, err), -1);
    assert_string_equal(err, "header injection refused in subject");
    assert_null(out.data);

    msg.subject = "Hello\nBcc: victim@example.com";
    assert_int_equal(cad_email_build(&msg, &out, err), -1);
    assert_string_equal(err, "header injection refused in subject");
}

static void test_header_injection_refused_in_names_and_addresses(void **state)
{
    char err[CAD_EMAIL_ERRBUF] = "";
    cad_email_buf_t out = {0};
    cad_email_message_t msg = sample_message();
    msg.to_name = "Ada\rX-Evil: 1";
    assert_int_equal(cad_email_build(&msg, &out, err), -1);
    assert_string_equal(err, "header injection refused in to name");

    msg = sample_message();
    msg.from_name = "Shop\n";
    assert_int_equal(cad_email_build(&msg, &out, err), -1);
    assert_string_equal(err, "header injection refused in from name");

    msg = sample_message();
    msg.to_address = "ada@example.org\r\nBcc: x@y.z";
    assert_int_equal(cad_email_build(&msg, &out, err), -1);
    assert_string_equal(err, "header injection refused in to");

    msg = sample_message();
    msg.idempotency_key = "k\n1";
    assert_int_equal(cad_email_build(&msg, &out, err), -1);
    assert_string_equal(err, "header injection refused in idempotency key");

    msg = sample_message();
    msg.unsubscribe_url = "https://shop.example/u\r\nX: y";
    assert_int_equal(cad_email_build(&msg, &out, err), -1);
    assert_string_equal(err, "header injection refused in unsubscribe url");
    assert_null(out.data);
}

static void test_control_characters_refused(void **state)
{
    char err[CAD_EMAIL_ERRBUF] = "";
    assert_int_equal(cad_email_check_header("subject", "bell\a", err), -1);
    assert_string_equal(err, "control character 0x07 refused in subject");
    assert_int_equal(cad_email_check_header("subject", "tab\tis fine", err), 0);
    assert_int_equal(cad_email_check_header("subject", NULL, err), 0);
}

static void test_bad_addresses_refused(void **state)
{
    char err[CAD_EMAIL_ERRBUF] = "";
    assert_int_equal(cad_email_check_address("to", "ada@example.org", err), 0);
    assert_int_equal(cad_email_check_address("to", "", err), -1);
    assert_string_equal(err, "to address is missing");
    assert_int_equal(cad_email_check_address("to", "ada.example.org", err), -1);
    assert_string_equal(err, "to address \"ada.example.org\" is not local@domain");
    assert_int_equal(cad_email_check_address("to", "ada@", err), -1);
    assert_int_equal(cad_email_check_address("to", "@example.org", err), -1);
    assert_int_equal(cad_email_check_address("to", "a da@example.org", err), -1);
    assert_string_equal(
        err, "to address \"a da@example.org\" has a character not allowed in an address");
    assert_int_equal(cad_email_check_address("to", "a@b@example.org", err), -1);
    assert_string_equal(err, "to address \"a@b@example.org\" has more than one '@'");
    assert_int_equal(cad_email_check_address("from", "x@exa..mple", err), -1);
    assert_string_equal(err, "from address \"x@exa..mple\" has a malformed domain");
    assert_int_equal(cad_email_check_address("to", "\xc3\xa9@example.org", err), -1);

    char long_addr[300];
    memset(long_addr, 'a', sizeof(long_addr));
    strcpy(long_addr + 250, "@example.org");
    assert_int_equal(cad_email_check_address("to", long_addr, err), -1);
    assert_string_equal(err, "to address is longer than 254 bytes");
}

/* ---- Subject: RFC 2047 and folding ---------------------------------------------------- */

static void test_ascii_subject_is_written_plain(void **state)
{
    char err[CAD_EMAIL_ERRBUF] = "";
    cad_email_buf_t buf = {0};
    assert_int_equal(cad_email_append_unstructured(&buf, "Subject", "Thank you", err), 0);
    assert_string_equal(buf.data, "Subject: Thank you\r\n");
    cad_email_buf_free(&buf);
}

static void test_long_ascii_subject_folds_under_76_columns(void **state)
{
    char err[CAD_EMAIL_ERRBUF] = "";
    cad_email_buf_t buf = {0};
    const char *subject = "Here is what we did with your feedback about the delivery times "
                          "in the northern region last spring, and what comes next for you";
    assert_int_equal(cad_email_append_unstructured(&buf, "Subject", subject, err), 0);
    assert_lines_within(buf.data, 76);
    assert_non_null(strstr(buf.data, "\r\n "));
    char value[512];
    assert_true(header_value(buf.data, "Subject", value, sizeof(value)));
    assert_string_equal(value, subject);
    cad_email_buf_free(&buf);
}

static void test_non_ascii_subject_becomes_encoded_words(void **state)
{
    char err[CAD_EMAIL_ERRBUF] = "";
    cad_email_buf_t buf = {0};
    const char *subject = "Merci, Zoë ! Votre café arrive 🎉";
    assert_int_equal(cad_email_append_unstructured(&buf, "Subject", subject, err), 0);
    assert_memory_equal(buf.data, "Subject: =?UTF-8?B?", 19);
    assert_lines_within(buf.data, 76);
    char value[512];
    char decoded[512];
    assert_true(header_value(buf.data, "Subject", value, sizeof(value)));
    decode_words(value, decoded);
    assert_string_equal(decoded, subject);
    cad_email_buf_free(&buf);
}

static void test_long_utf8_subject_folds_on_character_boundaries(void **state)
{
    char err[CAD_EMAIL_ERRBUF] = "";
    cad_email_buf_t buf = {0};
    /* 60 three-byte characters: several encoded-words, none may split one */
    char subject[256] = "";
    for (int i = 0; i < 60; i++)
        strcat(subject, "\xe2\x82\xac"); /* € */
    assert_int_equal(cad_email_append_unstructured(&buf, "Subject", subject, err), 0);
    assert_lines_within(buf.data, 76);
    int lines = 0;
    for (const char *p = buf.data; (p = strstr(p, "\r\n")); p += 2)
        lines++;
    assert_true(lines >= 3);
    /* every word on its own decodes to whole characters */
    const char *p = buf.data;
    while ((p = strstr(p, "=?UTF-8?B?"))) {
        const char *end = strstr(p, "?=");
        char one[128];
        size_t n = base64_decode(p + 10, (size_t)(end - p - 10), one);
        assert_int_equal(n % 3, 0);
        for (size_t i = 0; i < n; i += 3)
            assert_memory_equal(one + i, "\xe2\x82\xac", 3);
        p = end + 2;
    }
    char value[1024];
    char decoded[512];
    assert_true(header_value(buf.data, "Subject", value, sizeof(value)));
    decode_words(value, decoded);
    assert_string_equal(decoded, subject);
    cad_email_buf_free(&buf);
}

static void test_subject_that_looks_encoded_is_encoded(void **state)
{
    char err[CAD_EMAIL_ERRBUF] = "";
    cad_email_buf_t buf = {0};
    assert_int_equal(cad_email_append_unstructured(&buf, "Subject", "=?UTF-8?B?SGk=?=", err), 0);
    char value[256];
    char decoded[256];
    assert_true(header_value(buf.data, "Subject", value, sizeof(value)));
    decode_words(value, decoded);
    assert_string_equal(decoded, "=?UTF-8?B?SGk=?=");
    cad_email_buf_free(&buf);
}

static void test_invalid_utf8_subject_refused(void **state)
{
    char err[CAD_EMAIL_ERRBUF] = "";
    cad_email_buf_t buf = {0};
    assert_int_equal(cad_email_append_unstructured(&buf, "Subject", "caf\xc3", err), -1);
    assert_string_equal(err, "Subject is not valid UTF-8 at byte 3");
    cad_email_buf_free(&buf);
    assert_int_equal(cad_email_append_unstructured(&buf, "Subject", "\xed\xa0\x80", err), -1);
    cad_email_buf_free(&buf);
}

/* ---- mailboxes ------------------------------------------------------------------ */

static void test_mailbox_display_names(void **state)
{
    char err[CAD_EMAIL_ERRBUF] = "";
    cad_email_buf_t buf = {0};
    assert_int_equal(cad_email_append_mailbox(&buf, 4, "Ada Lovelace", "ada@example.org", err), 0);
    assert_string_equal(buf.data, "Ada Lovelace <ada@example.org>");
    cad_email_buf_free(&buf);

    assert_int_equal(
        cad_email_append_mailbox(&buf, 4, "Lovelace, Ada \"AL\"", "ada@example.org", err), 0);
    assert_string_equal(buf.data, "\"Lovelace, Ada \\\"AL\\\"\" <ada@example.org>");
    cad_email_buf_free(&buf);

    assert_int_equal(cad_email_append_mailbox(&buf, 4, "", "ada@example.org", err), 0);
    assert_string_equal(buf.data, "ada@example.org");
    cad_email_buf_free(&buf);

    assert_int_equal(cad_email_append_mailbox(&buf, 4, "Zoë Müller", "zoe@example.org", err), 0);
    assert_string_equal(buf.data, "=?UTF-8?B?Wm/DqyBNw7xsbGVy?= <zoe@example.org>");
    cad_email_buf_free(&buf);
}

static void test_long_encoded_name_folds_before_address(void **state)
{
    char err[CAD_EMAIL_ERRBUF] = "";
    cad_email_buf_t buf = {0};
    const char *name = "Zoë Müller-Lüdenscheidt von und zu Großherzogtum Ölmühle";
    assert_int_equal(cad_email_buf_puts(&buf, "To: "), 0);
    assert_int_equal(
        cad_email_append_mailbox(&buf, 4, name, "zoe.mueller@a-rather-long-domain.example", err),
        0);
    assert_lines_within(buf.data, 76);
    char *addr = strstr(buf.data, "<zoe.mueller@a-rather-long-domain.example>");
    assert_non_null(addr);
    char value[512];
    char decoded[256];
    assert_true(header_value(buf.data, "To", value, sizeof(value)));
    *strstr(value, " <") = '\0';
    decode_words(value, decoded);
    assert_string_equal(decoded, name);
    cad_email_buf_free(&buf);
}

/* ---- Date, Message-ID, quoted-printable -------------------------------------------- */

static void test_date_is_rfc5322(void **state)
{
    char date[40];
    cad_email_format_date(0, date, sizeof(date));
    assert_string_equal(date, "Thu, 01 Jan 1970 00:00:00 +0000");
    cad_email_format_date(1795424590, date, sizeof(date));
    assert_string_equal(date, "Mon, 23 Nov 2026 09:03:10 +0000");
    cad_email_format_date(951782400, date, sizeof(date)); /* leap day */
    assert_string_equal(date, "Tue, 29 Feb 2000 00:00:00 +0000");
}

static void test_key_digest_is_stable_and_distinct(void **state)
{
    char a[33];
    char b[33];
    char c[33];
    cad_email_key_digest("touch-42", a);
    cad_email_key_digest("touch-42", b);
    cad_email_key_digest("touch-43", c);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_int_equal(strlen(a), 32);
    assert_int_equal(strspn(a, "0123456789abcdef"), 32);
    /* SHA-256("abc") starts ba7816bf8f01cfea414140de5dae2223 */
    cad_email_key_digest("abc", a);
    assert_string_equal(a, "ba7816bf8f01cfea414140de5dae2223");
}

static void test_quoted_printable(void **state)
{
    cad_email_buf_t buf = {0};
    assert_int_equal(cad_email_append_qp(&buf, "a=b caf\xc3\xa9 \nnext\r\n.dot\tend\t"), 0);
    assert_string_equal(buf.data, "a=3Db caf=C3=A9=20\r\nnext\r\n=2Edot\tend=09");
    cad_email_buf_free(&buf);

    char long_line[400];
    memset(long_line, 'x', sizeof(long_line) - 1);
    long_line[sizeof(long_line) - 1] = '\0';
    long_line[100] = '=';
    assert_int_equal(cad_email_append_qp(&buf, long_line), 0);
    assert_lines_within(buf.data, 76);
    /* undo the soft breaks and the one escape: the text comes back */
    char *soft;
    while ((soft = strstr(buf.data, "=\r\n")))
        memmove(soft, soft + 3, strlen(soft + 3) + 1);
    char *eq = strstr(buf.data, "=3D");
    assert_non_null(eq);
    memmove(eq + 1, eq + 3, strlen(eq + 3) + 1);
    assert_string_equal(buf.data, long_line);
    cad_email_buf_free(&buf);
}

/* ---- the whole message -------------------------------------------------------------- */

static void test_message_has_every_header(void **state)
{
    char err[CAD_EMAIL_ERRBUF] = "";
    cad_email_buf_t out = {0};
    cad_email_message_t msg = sample_message();
    assert_int_equal(cad_email_build(&msg, &out, err), 0);
    assert_lines_within(out.data, 76);

    char value[512];
    char digest[33];
    char expect[128];
    cad_email_key_digest("touch-42-rule-thanks", digest);
    assert_true(header_value(out.data, "From", value, sizeof(value)));
    assert_string_equal(value, "Corner Shop <hello@shop.example>");
    assert_true(header_value(out.data, "To", value, sizeof(value)));
    assert_string_equal(value, "Ada Lovelace <ada@example.org>");
    assert_true(header_value(out.data, "Subject", value, sizeof(value)));
    assert_string_equal(value, "Thank you for your order");
    assert_true(header_value(out.data, "Date", value, sizeof(value)));
    assert_string_equal(value, "Mon, 23 Nov 2026 09:03:10 +0000");
    assert_true(header_value(out.data, "Message-ID", value, sizeof(value)));
    snprintf(expect, sizeof(expect), "<%s@shop.example>", digest);
    assert_string_equal(value, expect);
    assert_true(header_value(out.data, "X-Cadence-Idempotency-Key", value, sizeof(value)));
    assert_string_equal(value, "touch-42-rule-thanks");
    assert_true(header_value(out.data, "List-Unsubscribe", value, sizeof(value)));
    assert_string_equal(value,
                        "<mailto:unsubscribe@shop.example>, <https://shop.example/u/abc123>");
    assert_true(header_value(out.data, "List-Unsubscribe-Post", value, sizeof(value)));
    assert_string_equal(value, "List-Unsubscribe=One-Click");
    assert_true(header_value(out.data, "MIME-Version", value, sizeof(value)));
    assert_string_equal(value, "1.0");
    assert_true(header_value(out.data, "Content-Type", value, sizeof(value)));
    snprintf(expect, sizeof(expect), "multipart/alternative; boundary=\"=_cadence_%s\"", digest);
    assert_string_equal(value, expect);
    assert_false(header_value(out.data, "Reply-To", value, sizeof(value)));

    /* two parts, text then HTML, and the closing delimiter */
    snprintf(expect, sizeof(expect), "\r\n--=_cadence_%s\r\n", digest);
    char *text_part = strstr(out.data, expect);
    assert_non_null(text_part);
    assert_non_null(strstr(text_part, "Content-Type: text/plain; charset=UTF-8\r\n"
                                      "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                                      "Hi Ada,\r\nthank you.\r\n"));
    char *html_part = strstr(text_part + 1, expect);
    assert_non_null(html_part);
    assert_non_null(strstr(html_part, "Content-Type: text/html; charset=UTF-8\r\n"));
    assert_non_null(strstr(html_part, "<p>Hi Ada,</p><p>thank you.</p>"));
    snprintf(expect, sizeof(expect), "\r\n--=_cadence_%s--\r\n", digest);
    assert_non_null(strstr(html_part, expect));
    cad_email_buf_free(&out);
}

static void test_message_without_html_is_single_part(void **state)
{
    char err[CAD_EMAIL_ERRBUF] = "";
    cad_email_buf_t out = {0};
    cad_email_message_t msg = sample_message();
    msg.html = "";
    msg.unsubscribe_url = NULL;
    msg.reply_to = "care@shop.example";
    assert_int_equal(cad_email_build(&msg, &out, err), 0);
    char value[256];
    assert_true(header_value(out.data, "Content-Type", value, sizeof(value)));
    assert_string_equal(value, "text/plain; charset=UTF-8");
    assert_true(header_value(out.data, "List-Unsubscribe", value, sizeof(value)));
    assert_string_equal(value, "<mailto:unsubscribe@shop.example>");
    /* one-click needs an https URL: without one there is no Post header */
    assert_false(header_value(out.data, "List-Unsubscribe-Post", value, sizeof(value)));
    assert_true(header_value(out.data, "Reply-To", value, sizeof(value)));
    assert_string_equal(value, "care@shop.example");
    assert_null(strstr(out.data, "--=_cadence_"));
    cad_email_buf_free(&out);
}

static void test_message_refuses_bad_inputs(void **state)
{
    char err[CAD_EMAIL_ERRBUF] = "";
    cad_email_buf_t out = {0};
    cad_email_message_t msg = sample_message();
    msg.unsubscribe_url = "http://shop.example/u/1";
    assert_int_equal(cad_email_build(&msg, &out, err), -1);
    assert_string_equal(err, "unsubscribe url \"http://shop.example/u/1\" is not https:// "
                             "(RFC 8058 one-click needs https)");

    msg = sample_message();
    msg.unsubscribe_mailto = "mailto:nobody";
    assert_int_equal(cad_email_build(&msg, &out, err), -1);
    assert_string_equal(err, "unsubscribe mailto \"mailto:nobody\" has no address");

    msg = sample_message();
    msg.unsubscribe_url = "https://shop.example/u/<x>";
    assert_int_equal(cad_email_build(&msg, &out, err), -1);
    assert_string_equal(err, "unsubscribe url \"https://shop.example/u/<x>\" has a character not "
                             "allowed in a URI");

    msg = sample_message();
    msg.subject = "";
    assert_int_equal(cad_email_build(&msg, &out, err), -1);
    assert_string_equal(err, "subject is empty");

    msg = sample_message();
    msg.text = "";
    msg.html = NULL;
    assert_int_equal(cad_email_build(&msg, &out, err), -1);
    assert_string_equal(err, "message has neither a text nor an HTML body");

    msg = sample_message();
    msg.idempotency_key = "";
    assert_int_equal(cad_email_build(&msg, &out, err), -1);
    assert_string_equal(err, "idempotency key is missing");

    msg = sample_message();
    msg.to_address = "not-an-address";
    assert_int_equal(cad_email_build(&msg, &out, err), -1);
    assert_string_equal(err, "to address \"not-an-address\" is not local@domain");

    msg = sample_message();
    msg.subject = "bad \xff byte";
    assert_int_equal(cad_email_build(&msg, &out, err), -1);
    assert_string_equal(err, "Subject is not valid UTF-8 at byte 4");
    assert_null(out.data);
}

static void test_long_unsubscribe_list_folds(void **state)
{
    char err[CAD_EMAIL_ERRBUF] = "";
    cad_email_buf_t out = {0};
    cad_email_message_t msg = sample_message();
    msg.unsubscribe_mailto = "mailto:unsubscribe+customer-12345@lists.shop.example";
    msg.unsubscribe_url = "https://shop.example/unsubscribe/one-click/customer-12345/token-abcdef";
    assert_int_equal(cad_email_build(&msg, &out, err), 0);
    char value[512];
    assert_true(header_value(out.data, "List-Unsubscribe", value, sizeof(value)));
    assert_string_equal(value, "<mailto:unsubscribe+customer-12345@lists.shop.example>, "
                               "<https://shop.example/unsubscribe/one-click/customer-12345/"
                               "token-abcdef>");
    assert_non_null(strstr(out.data, ">,\r\n <https://"));
    cad_email_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_injection_refused_in_subject),
        cmocka_unit_test(test_header_injection_refused_in_names_and_addresses),
        cmocka_unit_test(test_control_characters_refused),
        cmocka_unit_test(test_bad_addresses_refused),
        cmocka_unit_test(test_ascii_subject_is_written_plain),
        cmocka_unit_test(test_long_ascii_subject_folds_under_76_columns),
        cmocka_unit_test(test_non_ascii_subject_becomes_encoded_words),
        cmocka_unit_test(test_long_utf8_subject_folds_on_character_boundaries),
        cmocka_unit_test(test_subject_that_looks_encoded_is_encoded),
        cmocka_unit_test(test_invalid_utf8_subject_refused),
        cmocka_unit_test(test_mailbox_display_names),
        cmocka_unit_test(test_long_encoded_name_folds_before_address),
        cmocka_unit_test(test_date_is_rfc5322),
        cmocka_unit_test(test_key_digest_is_stable_and_distinct),
        cmocka_unit_test(test_quoted_printable),
        cmocka_unit_test(test_message_has_every_header),
        cmocka_unit_test(test_message_without_html_is_single_part),
        cmocka_unit_test(test_message_refuses_bad_inputs),
        cmocka_unit_test(test_long_unsubscribe_list_folds),
    };
    return cmocka_run_group_tests_name("email_headers", tests, NULL, NULL);
}
