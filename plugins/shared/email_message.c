/*
 * email_message.c — the bytes of one email, built without I/O; shared by the
 * email channel (what it sends) and the file channel (its .eml files).
 *
 * A message is assembled header by header into a growable buffer. Header
 * values come from customers' data (names, subjects rendered from
 * templates), so each is checked before it is written: a CR or LF would let
 * a value start a header of its own (header injection), and libcurl sends
 * whatever it is given. Non-ASCII text in the Subject and in display names
 * is written as RFC 2047 "=?UTF-8?B?...?=" words cut on UTF-8 character
 * boundaries, one word per line, so no line passes 76 columns. Bodies are
 * quoted-printable, which keeps lines short, makes the output 7-bit clean
 * and can never contain the "=_" that starts our MIME boundary. The
 * Message-ID and the boundary derive from the idempotency key, so sending
 * the same touch twice produces the same message.
 */
#include "email_message.h"

#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINE_MAX_COLUMNS 76 /* our folding target, RFC 2047 section 2 */
#define ADDRESS_MAX      254

static int message_fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int message_fail(char *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, CAD_EMAIL_ERRBUF, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int cad_email_buf_append(cad_email_buf_t *buf, const char *data, size_t n)
{
    if (buf->len + n + 1 > buf->cap) {
        size_t cap = buf->cap ? buf->cap : 1024;
        while (cap < buf->len + n + 1)
            cap *= 2;
        char *p = realloc(buf->data, cap);
        if (!p)
            return -1;
        buf->data = p;
        buf->cap = cap;
    }
    memcpy(buf->data + buf->len, data, n);
    buf->len += n;
    buf->data[buf->len] = '\0';
    return 0;
}

int cad_email_buf_puts(cad_email_buf_t *buf, const char *s)
{
    return cad_email_buf_append(buf, s, strlen(s));
}

void cad_email_buf_free(cad_email_buf_t *buf)
{
    if (!buf)
        return;
    free(buf->data);
    buf->data = NULL;
    buf->len = buf->cap = 0;
}

static bool is_empty(const char *s)
{
    return !s || !*s;
}

int cad_email_check_header(const char *field, const char *value, char *err)
{
    if (!value)
        return 0;
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        if (*p == '\r' || *p == '\n')
            return message_fail(err, "header injection refused in %s", field);
    }
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return message_fail(err, "control character 0x%02x refused in %s", *p, field);
    }
    return 0;
}

int cad_email_check_address(const char *field, const char *address, char *err)
{
    if (is_empty(address))
        return message_fail(err, "%s address is missing", field);
    if (cad_email_check_header(field, address, err) < 0)
        return -1;
    size_t len = strlen(address);
    if (len > ADDRESS_MAX)
        return message_fail(err, "%s address is longer than %d bytes", field, ADDRESS_MAX);
    const char *at = strrchr(address, '@');
    if (!at || at == address || at[1] == '\0')
        return message_fail(err, "%s address \"%s\" is not local@domain", field, address);
    for (const unsigned char *p = (const unsigned char *)address; *p; p++) {
        if (*p <= 0x20 || *p >= 0x7f || strchr("<>()[]\\,;:\"", *p))
            return message_fail(err, "%s address \"%s\" has a character not allowed in an address",
                                field, address);
        if (*p == '@' && (const char *)p != at)
            return message_fail(err, "%s address \"%s\" has more than one '@'", field, address);
    }
    const char *domain = at + 1;
    if (domain[0] == '.' || domain[0] == '-' || address[len - 1] == '.' || strstr(domain, ".."))
        return message_fail(err, "%s address \"%s\" has a malformed domain", field, address);
    return 0;
}

/* Length of the UTF-8 sequence starting at p, or 0 when it is malformed. */
static size_t utf8_sequence(const unsigned char *p)
{
    if (p[0] < 0x80)
        return 1;
    size_t n;
    uint32_t cp;
    if ((p[0] & 0xe0) == 0xc0) {
        n = 2;
        cp = p[0] & 0x1f;
    } else if ((p[0] & 0xf0) == 0xe0) {
        n = 3;
        cp = p[0] & 0x0f;
    } else if ((p[0] & 0xf8) == 0xf0) {
        n = 4;
        cp = p[0] & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    /* overlong forms, surrogates and values past U+10FFFF */
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
        return 0;
    return n;
}

static bool is_printable_ascii(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p >= 0x7f)
            return false;
    }
    return true;
}

static const char base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int append_base64(cad_email_buf_t *buf, const unsigned char *p, size_t n)
{
    char quad[4];
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        quad[0] = base64_alphabet[(v >> 18) & 63];
        quad[1] = base64_alphabet[(v >> 12) & 63];
        quad[2] = i + 1 < n ? base64_alphabet[(v >> 6) & 63] : '=';
        quad[3] = i + 2 < n ? base64_alphabet[v & 63] : '=';
        if (cad_email_buf_append(buf, quad, 4) < 0)
            return -1;
    }
    return 0;
}

/*
 * Appends `value` as a run of encoded-words starting at `*column`, one word
 * per line, each line at most LINE_MAX_COLUMNS wide. `reserve` columns are
 * kept free after the last word (for what follows it on the same line).
 */
static int append_encoded_words(cad_email_buf_t *buf, size_t *column, const char *value,
                                size_t reserve, const char *field, char *err)
{
    static const char prefix[] = "=?UTF-8?B?";
    const size_t overhead = sizeof(prefix) - 1 + 2; /* prefix + "?=" */
    const unsigned char *p = (const unsigned char *)value;
    size_t total = strlen(value);
    size_t done = 0;
    bool first = true;

    for (size_t i = 0; i < total;) {
        size_t n = utf8_sequence(p + i);
        if (n == 0)
            return message_fail(err, "%s is not valid UTF-8 at byte %zu", field, i);
        i += n;
    }
    if (total == 0)
        return 0;
    while (done < total) {
        if (!first) {
            if (cad_email_buf_append(buf, "\r\n ", 3) < 0)
                return -1;
            *column = 1;
        }
        size_t room =
            LINE_MAX_COLUMNS > *column + overhead ? LINE_MAX_COLUMNS - *column - overhead : 0;
        size_t max_bytes = room / 4 * 3;
        if (max_bytes < 4) {
            /* not even one character fits here: start on a fresh line */
            if (first && *column > 1) {
                first = false;
                continue;
            }
            max_bytes = 4;
        }
        size_t take = 0;
        while (done + take < total) {
            size_t n = utf8_sequence(p + done + take);
            if (take + n > max_bytes)
                break;
            take += n;
        }
        /* keep room for what follows the last word, if it would not fit */
        if (done + take == total && take > 0) {
            size_t width = overhead + (take + 2) / 3 * 4;
            while (take > 0 && *column + width + reserve > LINE_MAX_COLUMNS) {
                size_t back = 1;
                while (back < take && (p[done + take - back] & 0xc0) == 0x80)
                    back++;
                if (back == take)
                    break;
                take -= back;
                width = overhead + (take + 2) / 3 * 4;
            }
        }
        if (cad_email_buf_append(buf, prefix, sizeof(prefix) - 1) < 0 ||
            append_base64(buf, p + done, take) < 0 || cad_email_buf_append(buf, "?=", 2) < 0)
            return -1;
        *column += overhead + (take + 2) / 3 * 4;
        done += take;
        first = false;
    }
    return 0;
}

/* True when the ASCII value can be folded at its white space so that every
 * line fits, starting at `column`; mirrors append_folded_ascii(). */
static bool ascii_folds(const char *value, size_t column)
{
    size_t col = column;
    const char *start = value; /* the pending word, with its leading white space */
    for (const char *p = value;; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\0') {
            size_t word = (size_t)(p - start);
            if (col + word > LINE_MAX_COLUMNS && start != value)
                col = 0;
            col += word;
            if (col > LINE_MAX_COLUMNS)
                return false;
            if (*p == '\0')
                return true;
            start = p;
        }
    }
}

static int append_folded_ascii(cad_email_buf_t *buf, size_t column, const char *value)
{
    size_t col = column;
    const char *start = value; /* start of the pending word, including its leading space */
    for (const char *p = value;; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\0') {
            size_t word = (size_t)(p - start);
            if (col + word > LINE_MAX_COLUMNS && start != value) {
                if (cad_email_buf_append(buf, "\r\n", 2) < 0)
                    return -1;
                col = 0; /* the word's leading white space becomes the fold's */
            }
            if (cad_email_buf_append(buf, start, word) < 0)
                return -1;
            col += word;
            if (*p == '\0')
                return 0;
            start = p;
        }
    }
}

int cad_email_append_unstructured(cad_email_buf_t *buf, const char *name, const char *value,
                                  char *err)
{
    size_t column = strlen(name) + 2;
    if (cad_email_buf_puts(buf, name) < 0 || cad_email_buf_append(buf, ": ", 2) < 0)
        return message_fail(err, "out of memory");
    size_t len = strlen(value);
    bool plain = is_printable_ascii(value) && !strstr(value, "=?") && len > 0 && value[0] != ' ' &&
                 value[len - 1] != ' ' && value[len - 1] != '\t' && ascii_folds(value, column);
    int rc = plain ? append_folded_ascii(buf, column, value)
                   : append_encoded_words(buf, &column, value, 0, name, err);
    if (rc < 0) {
        if (err && !*err)
            message_fail(err, "out of memory");
        return -1;
    }
    if (cad_email_buf_append(buf, "\r\n", 2) < 0)
        return message_fail(err, "out of memory");
    return 0;
}

/* atext of RFC 5322 plus the space between words of a phrase */
static bool is_phrase_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-/=?^_`{|}~ ", c));
}

int cad_email_append_mailbox(cad_email_buf_t *buf, size_t column, const char *name,
                             const char *address, char *err)
{
    if (err)
        err[0] = '\0';
    size_t addr_width = strlen(address) + 3; /* " <" + address + ">" */
    if (is_empty(name))
        return cad_email_buf_puts(buf, address) < 0 ? message_fail(err, "out of memory") : 0;
    int rc = 0;
    /* A plain name is written as it is (an atom phrase or a quoted string)
     * only when it fits on its line: a longer one becomes encoded-words,
     * which fold, so no header line grows past its limit. */
    size_t quoted_width = strlen(name) + 2;
    for (const char *p = name; *p; p++)
        quoted_width += *p == '"' || *p == '\\';
    if (is_printable_ascii(name) && !strstr(name, "=?") &&
        column + quoted_width <= LINE_MAX_COLUMNS) {
        bool atoms = name[0] != ' ' && name[strlen(name) - 1] != ' ';
        for (const char *p = name; *p && atoms; p++)
            atoms = is_phrase_char((unsigned char)*p);
        if (atoms) {
            rc = cad_email_buf_puts(buf, name);
        } else {
            rc = cad_email_buf_append(buf, "\"", 1);
            for (const char *p = name; *p && rc == 0; p++) {
                if (*p == '"' || *p == '\\')
                    rc = cad_email_buf_append(buf, "\\", 1);
                if (rc == 0)
                    rc = cad_email_buf_append(buf, p, 1);
            }
            if (rc == 0)
                rc = cad_email_buf_append(buf, "\"", 1);
        }
        column += strlen(name) + 2;
    } else {
        rc = append_encoded_words(buf, &column, name, addr_width, "display name", err);
    }
    if (rc < 0)
        return (err && *err) ? -1 : message_fail(err, "out of memory");
    /* fold before the address when it would pass the line limit */
    const char *sep = column + addr_width > LINE_MAX_COLUMNS ? "\r\n <" : " <";
    if (cad_email_buf_puts(buf, sep) < 0 || cad_email_buf_puts(buf, address) < 0 ||
        cad_email_buf_append(buf, ">", 1) < 0)
        return message_fail(err, "out of memory");
    return 0;
}

int cad_email_parse_mailbox(const char *field, const char *text, char *name, char *address,
                            size_t size, char *err)
{
    name[0] = address[0] = '\0';
    if (cad_email_check_header(field, text, err) < 0)
        return -1;
    size_t len = strlen(text);
    const char *open = strrchr(text, '<');
    if (!open) {
        if (len >= size)
            return message_fail(err, "%s is longer than %zu bytes", field, size - 1);
        memcpy(address, text, len + 1);
        return cad_email_check_address(field, address, err);
    }
    const char *close = strchr(open, '>');
    if (!close || close[1] != '\0')
        return message_fail(err, "%s \"%s\" is not \"Name <address>\"", field, text);
    size_t alen = (size_t)(close - open - 1);
    const char *n = text, *ne = open;
    while (n < ne && (*n == ' ' || *n == '\t'))
        n++;
    while (ne > n && (ne[-1] == ' ' || ne[-1] == '\t'))
        ne--;
    if (ne - n >= 2 && *n == '"' && ne[-1] == '"') {
        n++;
        ne--;
    }
    if (alen >= size || (size_t)(ne - n) >= size)
        return message_fail(err, "%s is longer than %zu bytes", field, size - 1);
    memcpy(address, open + 1, alen);
    address[alen] = '\0';
    size_t k = 0;
    for (const char *p = n; p < ne; p++) {
        if (*p == '\\' && p + 1 < ne)
            p++; /* a quoted-pair */
        name[k++] = *p;
    }
    name[k] = '\0';
    return cad_email_check_address(field, address, err);
}

void cad_email_format_date(time_t t, char *out, size_t size)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, size, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

const char *cad_email_domain(const char *address)
{
    const char *at = address ? strrchr(address, '@') : NULL;
    return at && at[1] ? at + 1 : NULL;
}

void cad_email_key_digest(const char *key, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (!EVP_Digest(key, strlen(key), md, &md_len, EVP_sha256(), NULL) || md_len < 16)
        memset(md, 0, 16);
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[32] = '\0';
}

int cad_email_append_qp(cad_email_buf_t *buf, const char *text)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t col = 0;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        bool crlf = p[0] == '\r' && p[1] == '\n';
        if (crlf || p[0] == '\n') {
            if (cad_email_buf_append(buf, "\r\n", 2) < 0)
                return -1;
            col = 0;
            if (crlf)
                p++;
            continue;
        }
        char token[3];
        size_t n;
        bool at_line_end = p[1] == '\0' || p[1] == '\n' || (p[1] == '\r' && p[2] == '\n');
        bool literal = (*p >= 33 && *p <= 126 && *p != '=' && !(*p == '.' && col == 0)) ||
                       ((*p == ' ' || *p == '\t') && !at_line_end);
        if (literal) {
            token[0] = (char)*p;
            n = 1;
        } else {
            token[0] = '=';
            token[1] = hex[*p >> 4];
            token[2] = hex[*p & 15];
            n = 3;
        }
        /* 75 columns of text plus the soft break's '=' make 76 */
        if (col + n > LINE_MAX_COLUMNS - 1) {
            if (cad_email_buf_append(buf, "=\r\n", 3) < 0)
                return -1;
            col = 0;
            if (n == 1 && *p == '.') {
                token[0] = '=';
                token[1] = '2';
                token[2] = 'E';
                n = 3;
            }
        }
        if (cad_email_buf_append(buf, token, n) < 0)
            return -1;
        col += n;
    }
    return 0;
}

/* URIs are written unfolded in List-Unsubscribe: this bound keeps that
 * line within RFC 5322's 998 bytes. */
#define URI_MAX 900

static int check_uri(const char *field, const char *uri, char *err)
{
    if (cad_email_check_header(field, uri, err) < 0)
        return -1;
    if (strlen(uri) > URI_MAX)
        return message_fail(err, "%s is longer than %d bytes", field, URI_MAX);
    for (const unsigned char *p = (const unsigned char *)uri; *p; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == '<' || *p == '>' || *p == '"')
            return message_fail(err, "%s \"%s\" has a character not allowed in a URI", field, uri);
    }
    return 0;
}

static int append_header(cad_email_buf_t *buf, const char *name, const char *value)
{
    if (cad_email_buf_puts(buf, name) < 0 || cad_email_buf_append(buf, ": ", 2) < 0 ||
        cad_email_buf_puts(buf, value) < 0 || cad_email_buf_append(buf, "\r\n", 2) < 0)
        return -1;
    return 0;
}

static int append_list_unsubscribe(cad_email_buf_t *buf, const char *mailto, const char *url)
{
    static const char name[] = "List-Unsubscribe: ";
    size_t col = sizeof(name) - 1;
    if (cad_email_buf_puts(buf, name) < 0)
        return -1;
    bool first = true;
    const char *items[2] = {mailto, url};
    for (int i = 0; i < 2; i++) {
        if (is_empty(items[i]))
            continue;
        bool needs_scheme = i == 0 && strncmp(items[i], "mailto:", 7) != 0;
        size_t width = strlen(items[i]) + 2 + (needs_scheme ? 7 : 0);
        if (!first) {
            bool fold = col + 2 + width > LINE_MAX_COLUMNS;
            if (cad_email_buf_puts(buf, fold ? ",\r\n " : ", ") < 0)
                return -1;
            col = fold ? 1 : col + 2;
        }
        if (cad_email_buf_append(buf, "<", 1) < 0 ||
            (needs_scheme && cad_email_buf_puts(buf, "mailto:") < 0) ||
            cad_email_buf_puts(buf, items[i]) < 0 || cad_email_buf_append(buf, ">", 1) < 0)
            return -1;
        col += width;
        first = false;
    }
    if (cad_email_buf_append(buf, "\r\n", 2) < 0)
        return -1;
    if (!is_empty(url) &&
        append_header(buf, "List-Unsubscribe-Post", "List-Unsubscribe=One-Click") < 0)
        return -1;
    return 0;
}

static int append_part(cad_email_buf_t *buf, const char *boundary, const char *type,
                       const char *body)
{
    if (boundary && (cad_email_buf_puts(buf, "--") < 0 || cad_email_buf_puts(buf, boundary) < 0 ||
                     cad_email_buf_append(buf, "\r\n", 2) < 0))
        return -1;
    if (cad_email_buf_puts(buf, "Content-Type: ") < 0 || cad_email_buf_puts(buf, type) < 0 ||
        cad_email_buf_puts(buf, "; charset=UTF-8\r\n"
                                "Content-Transfer-Encoding: quoted-printable\r\n\r\n") < 0 ||
        cad_email_append_qp(buf, body) < 0 || cad_email_buf_append(buf, "\r\n", 2) < 0)
        return -1;
    return 0;
}

/* Every value that goes into a header, checked before any byte is written. */
static int check_message(const cad_email_message_t *msg, char *err)
{
    if (cad_email_check_address("from", msg->from_address, err) < 0 ||
        cad_email_check_address("to", msg->to_address, err) < 0)
        return -1;
    if (!is_empty(msg->reply_to) && cad_email_check_address("reply_to", msg->reply_to, err) < 0)
        return -1;
    if (cad_email_check_header("from name", msg->from_name, err) < 0 ||
        cad_email_check_header("to name", msg->to_name, err) < 0 ||
        cad_email_check_header("subject", msg->subject, err) < 0 ||
        cad_email_check_header("idempotency key", msg->idempotency_key, err) < 0 ||
        cad_email_check_header("rule", msg->rule, err) < 0 ||
        cad_email_check_header("purpose", msg->purpose, err) < 0)
        return -1;
    if (is_empty(msg->subject))
        return message_fail(err, "subject is empty");
    if (is_empty(msg->idempotency_key))
        return message_fail(err, "idempotency key is missing");
    if (!is_printable_ascii(msg->idempotency_key) || strlen(msg->idempotency_key) > 900)
        return message_fail(err, "idempotency key is not printable ASCII of at most 900 bytes");
    if (is_empty(msg->text) && is_empty(msg->html))
        return message_fail(err, "message has neither a text nor an HTML body");
    if (!is_empty(msg->unsubscribe_mailto)) {
        if (check_uri("unsubscribe mailto", msg->unsubscribe_mailto, err) < 0)
            return -1;
        const char *addr = msg->unsubscribe_mailto;
        if (strncmp(addr, "mailto:", 7) == 0)
            addr += 7;
        if (!strchr(addr, '@'))
            return message_fail(err, "unsubscribe mailto \"%s\" has no address",
                                msg->unsubscribe_mailto);
    }
    if (!is_empty(msg->unsubscribe_url)) {
        if (check_uri("unsubscribe url", msg->unsubscribe_url, err) < 0)
            return -1;
        if (strncmp(msg->unsubscribe_url, "https://", 8) != 0 || msg->unsubscribe_url[8] == '\0')
            return message_fail(
                err, "unsubscribe url \"%s\" is not https:// (RFC 8058 one-click needs https)",
                msg->unsubscribe_url);
    }
    return 0;
}

int cad_email_build(const cad_email_message_t *msg, cad_email_buf_t *out, char *err)
{
    if (err)
        err[0] = '\0';
    if (check_message(msg, err) < 0)
        return -1;

    char digest[33];
    char date[40];
    char line[1024];
    cad_email_key_digest(msg->idempotency_key, digest);
    cad_email_format_date(msg->date, date, sizeof(date));
    bool multipart = !is_empty(msg->text) && !is_empty(msg->html);
    char boundary[48];
    snprintf(boundary, sizeof(boundary), "=_cadence_%s", digest);

    int rc = 0;
    rc |= cad_email_buf_puts(out, "From: ");
    if (rc == 0 && cad_email_append_mailbox(out, 6, msg->from_name, msg->from_address, err) < 0)
        goto failed;
    rc |= cad_email_buf_puts(out, "\r\nTo: ");
    if (rc == 0 && cad_email_append_mailbox(out, 4, msg->to_name, msg->to_address, err) < 0)
        goto failed;
    rc |= cad_email_buf_puts(out, "\r\n");
    if (!is_empty(msg->reply_to))
        rc |= append_header(out, "Reply-To", msg->reply_to);
    if (rc == 0 && cad_email_append_unstructured(out, "Subject", msg->subject, err) < 0)
        goto failed;
    rc |= append_header(out, "Date", date);
    snprintf(line, sizeof(line), "<%s@%s>", digest, cad_email_domain(msg->from_address));
    rc |= append_header(out, "Message-ID", line);
    rc |= append_header(out, "X-Cadence-Idempotency-Key", msg->idempotency_key);
    if (!is_empty(msg->unsubscribe_mailto) || !is_empty(msg->unsubscribe_url))
        rc |= append_list_unsubscribe(out, msg->unsubscribe_mailto, msg->unsubscribe_url);
    if (rc == 0 && !is_empty(msg->rule) &&
        cad_email_append_unstructured(out, "X-Cadence-Rule", msg->rule, err) < 0)
        goto failed;
    if (rc == 0 && !is_empty(msg->purpose) &&
        cad_email_append_unstructured(out, "X-Cadence-Purpose", msg->purpose, err) < 0)
        goto failed;
    rc |= append_header(out, "MIME-Version", "1.0");
    if (multipart) {
        snprintf(line, sizeof(line), "multipart/alternative;\r\n boundary=\"%s\"", boundary);
        rc |= append_header(out, "Content-Type", line);
        rc |= cad_email_buf_puts(out, "\r\nThis is a multipart message in MIME format.\r\n");
        rc |= append_part(out, boundary, "text/plain", msg->text);
        rc |= append_part(out, boundary, "text/html", msg->html);
        rc |= cad_email_buf_puts(out, "--");
        rc |= cad_email_buf_puts(out, boundary);
        rc |= cad_email_buf_puts(out, "--\r\n");
    } else {
        rc |= append_part(out, NULL, is_empty(msg->html) ? "text/plain" : "text/html",
                          is_empty(msg->html) ? msg->text : msg->html);
    }
    if (rc != 0) {
        message_fail(err, "out of memory building the message");
        goto failed;
    }
    return 0;

failed:
    cad_email_buf_free(out);
    return -1;
}
