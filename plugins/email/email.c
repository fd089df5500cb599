/*
 * email.c — the email channel: one touch, one SMTP transaction via libcurl.
 *
 * prepare() builds the whole RFC 5322 message itself (email_message.c) and
 * hands libcurl an upload that reads it from memory, with MAIL FROM set to
 * the configured sender and one RCPT TO, the contact's address. Building
 * the message first means every header value is checked before a
 * connection is opened: a subject or name carrying CR/LF is refused as a
 * permanent failure and nothing reaches the server. STARTTLS is required
 * (CURLUSESSL_ALL) on smtp:// unless the operator writes starttls = "off";
 * smtps:// is TLS from the first byte. The password comes from a secret file
 * read once at init and wiped at shutdown.
 *
 * interpret() reads libcurl's result and the last SMTP reply code (libcurl
 * hands every server reply line to the header callback, so the host's
 * collected "headers" are the SMTP dialogue): a 5xx to RCPT TO is a hard
 * bounce (permanent, the contact's email marked unusable), other 5xx are
 * permanent for this message only, and 4xx replies, connection and TLS
 * errors are retried by the host. A refused login (535) is the channel's
 * fault, not the touch's: it is reported with CAD_EFFECT_CHANNEL_DISABLED,
 * so the host stops the channel, its queue kept, until a reload brings the
 * fixed password.
 */
#include "email_message.h"

#include <cadence/channel.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct email_instance {
    const cad_plugin_api_t *api;
    cad_plugin_env_t *env;
    const char *url; /* option strings live as long as the channel */
    const char *from;
    const char *from_name;
    const char *reply_to;
    const char *username;
    const char *ca_file;
    const char *unsubscribe_url;    /* template, used when the touch has none */
    const char *unsubscribe_mailto; /* template, used when the touch has none */
    bool require_tls;
    char *password; /* from the secret file; wiped with api->free_secret */
    size_t password_len;
} email_instance_t;

/* Per-transfer state: the message being uploaded and how much was read. */
typedef struct email_upload {
    cad_email_buf_t message;
    size_t offset;
    char message_id[128];
} email_upload_t;

static const cad_plugin_option_t email_options[] = {
    {"url", CAD_OPTION_STRING, NULL, true,
     "SMTP server: smtp://host:port (STARTTLS) or smtps://host:port (implicit TLS); an optional "
     "path names the EHLO domain"},
    {"starttls", CAD_OPTION_STRING, "required", false,
     "\"required\" (refuse to send unless the server upgrades to TLS) or \"off\" (plain SMTP; "
     "for loopback relays only)"},
    {"from", CAD_OPTION_STRING, NULL, true, "sender address for From and MAIL FROM"},
    {"from_name", CAD_OPTION_STRING, NULL, false, "display name in From (UTF-8)"},
    {"reply_to", CAD_OPTION_STRING, NULL, false, "address for Reply-To"},
    {"username", CAD_OPTION_STRING, NULL, false, "SMTP AUTH user name"},
    {"password_file", CAD_OPTION_SECRET_FILE, NULL, false,
     "file holding the SMTP AUTH password (a systemd credential name or absolute path)"},
    {"ca_file", CAD_OPTION_STRING, NULL, false,
     "PEM bundle of CAs to verify the server with, instead of the system's"},
    {"unsubscribe_url", CAD_OPTION_STRING, NULL, false,
     "https:// one-click unsubscribe URL template (RFC 8058), used when the touch carries none"},
    {"unsubscribe_mailto", CAD_OPTION_STRING, NULL, false,
     "unsubscribe address template for List-Unsubscribe, used when the touch carries none"},
    {NULL, 0, NULL, false, NULL},
};

static int init_fail(char *err, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Why the PEM bundle at `path` cannot serve as ca_file, or NULL. */
static const char *ca_file_problem(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0 || access(path, R_OK) != 0)
        return strerror(errno);
    return S_ISREG(sb.st_mode) ? NULL : "not a regular file";
}

static int init_fail(char *err, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, size, fmt, ap);
    va_end(ap);
    return -1;
}

static void outcome(cad_plugin_outcome_t *out, enum cad_outcome_kind kind,
                    enum cad_outcome_effect effect, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void outcome(cad_plugin_outcome_t *out, enum cad_outcome_kind kind,
                    enum cad_outcome_effect effect, const char *fmt, ...)
{
    va_list ap;
    out->kind = kind;
    out->effect = effect;
    va_start(ap, fmt);
    vsnprintf(out->reason, sizeof(out->reason), fmt, ap);
    va_end(ap);
}

static bool is_set(const char *s)
{
    return s && *s;
}

/* A From display name must be free of control characters and valid UTF-8:
 * checked once at load rather than failing every message. */
static int check_from_name(const char *name, const char *from, char *check)
{
    if (cad_email_check_header("from_name", name, check) < 0)
        return -1;
    if (!is_set(name))
        return 0;
    cad_email_buf_t buf = {0};
    int rc = cad_email_append_mailbox(&buf, 6, name, from, check);
    cad_email_buf_free(&buf);
    if (rc < 0)
        snprintf(check, CAD_EMAIL_ERRBUF, "from_name is not valid UTF-8");
    return rc;
}

static void email_shutdown(void *instance)
{
    email_instance_t *em = instance;
    if (!em)
        return;
    if (em->password)
        em->api->free_secret(em->password, em->password_len);
    free(em);
}

static int email_init(const cad_plugin_api_t *api, cad_plugin_env_t *env, void **instance,
                      char *err, size_t err_size)
{
    char check[CAD_EMAIL_ERRBUF];
    email_instance_t *em = calloc(1, sizeof(*em));
    if (!em)
        return init_fail(err, err_size, "email: out of memory");
    em->api = api;
    em->env = env;
    em->url = api->option(env, "url");
    em->from = api->option(env, "from");
    em->from_name = api->option(env, "from_name");
    em->reply_to = api->option(env, "reply_to");
    em->username = api->option(env, "username");
    em->ca_file = api->option(env, "ca_file");
    em->unsubscribe_url = api->option(env, "unsubscribe_url");
    em->unsubscribe_mailto = api->option(env, "unsubscribe_mailto");
    const char *starttls = api->option(env, "starttls");

    int rc = 0;
    if (!is_set(em->url) ||
        (strncmp(em->url, "smtp://", 7) != 0 && strncmp(em->url, "smtps://", 8) != 0)) {
        rc = init_fail(err, err_size, "email: url \"%s\" must start with smtp:// or smtps://",
                       em->url ? em->url : "");
    } else if (cad_email_check_address("from", em->from, check) < 0) {
        rc = init_fail(err, err_size, "email: %s", check);
    } else if (check_from_name(em->from_name, em->from, check) < 0) {
        rc = init_fail(err, err_size, "email: %s", check);
    } else if (is_set(em->reply_to) &&
               cad_email_check_address("reply_to", em->reply_to, check) < 0) {
        rc = init_fail(err, err_size, "email: %s", check);
    } else if (starttls && strcmp(starttls, "required") != 0 && strcmp(starttls, "off") != 0) {
        rc = init_fail(err, err_size,
                       "email: starttls \"%s\" is not one of \"required\" or \"off\"", starttls);
    } else if (is_set(em->username) != is_set(api->option(env, "password_file"))) {
        rc = init_fail(err, err_size,
                       "email: username and password_file must be set together (one is missing)");
    } else if (is_set(em->unsubscribe_url) && strncmp(em->unsubscribe_url, "https://", 8) != 0) {
        rc = init_fail(err, err_size,
                       "email: unsubscribe_url \"%s\" must start with https:// (RFC 8058)",
                       em->unsubscribe_url);
    } else if (is_set(em->ca_file) && ca_file_problem(em->ca_file)) {
        rc = init_fail(err, err_size, "email: ca_file \"%s\" cannot be read: %s", em->ca_file,
                       ca_file_problem(em->ca_file));
    }
    if (rc == 0 && is_set(em->username)) {
        if (api->read_secret(env, "password_file", &em->password, &em->password_len, err,
                             err_size) < 0)
            rc = -1;
    }
    if (rc < 0) {
        email_shutdown(em);
        return -1;
    }
    em->require_tls = !starttls || strcmp(starttls, "off") != 0;
    if (!em->require_tls && strncmp(em->url, "smtp://", 7) == 0)
        api->log(env, CAD_PLUGIN_LOG_WARNING,
                 "STARTTLS is off: mail and credentials travel in clear text url=%s", em->url);
    *instance = em;
    return 0;
}

static size_t email_read(char *dest, size_t size, size_t nmemb, void *userdata)
{
    email_upload_t *up = userdata;
    size_t room = size * nmemb;
    size_t left = up->message.len - up->offset;
    size_t n = left < room ? left : room;
    memcpy(dest, up->message.data + up->offset, n);
    up->offset += n;
    return n;
}

static void email_release(void *instance, void *data)
{
    email_upload_t *up = data;
    if (!up)
        return;
    cad_email_buf_free(&up->message);
    free(up);
}

/* Renders an unsubscribe template setting against the touch, each value
 * percent-encoded as a URI component (a host of ABI 1.0/1.1 renders values
 * raw); NULL when the setting is unset. *fail is set when rendering failed
 * (reason in `out`). The host renders these settings into the touch itself,
 * so this serves only when it did not. */
static char *render_setting(email_instance_t *em, const cad_plugin_touch_t *touch, const char *name,
                            const char *tmpl, cad_plugin_outcome_t *out, bool *failed)
{
    char err[CAD_PLUGIN_REASON_MAX];
    char *rendered = NULL;
    if (!is_set(tmpl))
        return NULL;
    bool uri = em->api->abi_minor >= 2 &&
               em->api->struct_size >= offsetof(cad_plugin_api_t, render_as) + sizeof(void *);
    int rc = uri ? em->api->render_as(em->env, touch, tmpl, CAD_PLUGIN_ESCAPE_URI_COMPONENT,
                                      &rendered, err, sizeof(err))
                 : em->api->render(em->env, touch, tmpl, false, &rendered, err, sizeof(err));
    if (rc < 0) {
        outcome(out, CAD_OUTCOME_PERMANENT, CAD_EFFECT_NONE, "setting %s: %s", name, err);
        *failed = true;
        return NULL;
    }
    return rendered;
}

static int email_prepare(void *instance, const cad_plugin_touch_t *touch,
                         cad_plugin_transfer_t *xfer, cad_plugin_outcome_t *out)
{
    email_instance_t *em = instance;
    char err[CAD_EMAIL_ERRBUF];

    if (!is_set(touch->contact.email)) {
        outcome(out, CAD_OUTCOME_PERMANENT, CAD_EFFECT_CONTACT_UNUSABLE,
                "contact %s has no email address", touch->contact.id);
        return -1;
    }
    bool failed = false;
    char *unsub_url = NULL;
    char *unsub_mailto = NULL;
    if (!is_set(touch->unsubscribe_url))
        unsub_url = render_setting(em, touch, "unsubscribe_url", em->unsubscribe_url, out, &failed);
    if (!failed && !is_set(touch->unsubscribe_mailto))
        unsub_mailto =
            render_setting(em, touch, "unsubscribe_mailto", em->unsubscribe_mailto, out, &failed);
    if (failed) {
        free(unsub_url);
        return -1;
    }

    email_upload_t *up = calloc(1, sizeof(*up));
    if (!up) {
        free(unsub_url);
        free(unsub_mailto);
        outcome(out, CAD_OUTCOME_RETRY, CAD_EFFECT_NONE, "out of memory preparing the message");
        return -1;
    }
    cad_email_message_t msg = {
        .from_address = em->from,
        .from_name = em->from_name,
        .reply_to = em->reply_to,
        .to_address = touch->contact.email,
        .to_name = touch->contact.name,
        .subject = is_set(touch->subject) ? touch->subject : touch->content.title,
        .text = touch->text,
        .html = touch->html,
        .idempotency_key = touch->idempotency_key,
        .unsubscribe_url = unsub_url ? unsub_url : touch->unsubscribe_url,
        .unsubscribe_mailto = unsub_mailto ? unsub_mailto : touch->unsubscribe_mailto,
        .date = (time_t)em->api->now(),
    };
    int rc = cad_email_build(&msg, &up->message, err);
    free(unsub_url);
    free(unsub_mailto);
    if (rc < 0) {
        email_release(em, up);
        bool bad_address = strncmp(err, "to address", 10) == 0;
        outcome(out, CAD_OUTCOME_PERMANENT,
                bad_address ? CAD_EFFECT_CONTACT_UNUSABLE : CAD_EFFECT_NONE, "%s", err);
        return -1;
    }
    char digest[33];
    cad_email_key_digest(touch->idempotency_key, digest);
    snprintf(up->message_id, sizeof(up->message_id), "<%s@%s>", digest, cad_email_domain(em->from));

    xfer->data = up;
    xfer->recipients = curl_slist_append(NULL, touch->contact.email);
    if (!xfer->recipients) {
        outcome(out, CAD_OUTCOME_RETRY, CAD_EFFECT_NONE, "out of memory preparing the message");
        return -1;
    }
    CURL *easy = xfer->easy;
    CURLcode cc = CURLE_OK;
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(easy, CURLOPT_URL, em->url);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(easy, CURLOPT_MAIL_FROM, em->from);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(easy, CURLOPT_MAIL_RCPT, xfer->recipients);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(easy, CURLOPT_UPLOAD, 1L);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(easy, CURLOPT_READFUNCTION, email_read);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(easy, CURLOPT_READDATA, up);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t)up->message.len);
    if (cc == CURLE_OK && em->require_tls)
        cc = curl_easy_setopt(easy, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
    if (cc == CURLE_OK && is_set(em->ca_file))
        cc = curl_easy_setopt(easy, CURLOPT_CAINFO, em->ca_file);
    if (cc == CURLE_OK && is_set(em->username))
        cc = curl_easy_setopt(easy, CURLOPT_USERNAME, em->username);
    if (cc == CURLE_OK && em->password)
        cc = curl_easy_setopt(easy, CURLOPT_PASSWORD, em->password);
    if (cc != CURLE_OK) {
        outcome(out, CAD_OUTCOME_RETRY, CAD_EFFECT_NONE, "libcurl refused an SMTP option: %s",
                curl_easy_strerror(cc));
        return -1;
    }
    return 0;
}

/* Copies into buf the last SMTP reply line of the dialogue (libcurl gives
 * the host every server line as a "header") that carries `code`, or the last
 * reply line at all when code is 0; without its line ending, printable only.
 * Matching the code skips the "221 Bye" libcurl's QUIT may add after it. */
static const char *last_reply(const cad_plugin_response_t *resp, long code, char *buf, size_t size)
{
    char want[8];
    snprintf(want, sizeof(want), "%03ld", code);
    buf[0] = '\0';
    if (!resp->headers)
        return buf;
    const char *p = resp->headers;
    const char *end = p + resp->headers_len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        bool is_reply = line_end - p >= 3 && p[0] >= '1' && p[0] <= '5';
        if (is_reply && (code == 0 || memcmp(p, want, 3) == 0)) {
            size_t n = (size_t)(line_end - p);
            while (n > 0 && (p[n - 1] == '\r' || p[n - 1] == ' '))
                n--;
            if (n >= size)
                n = size - 1;
            for (size_t i = 0; i < n; i++) /* keep the reason printable */
                buf[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? p[i] : '?';
            buf[n] = '\0';
        }
        p = line_end + 1;
    }
    return buf;
}

static void email_interpret(void *instance, const cad_plugin_touch_t *touch,
                            const cad_plugin_response_t *resp, cad_plugin_outcome_t *out)
{
    email_instance_t *em = instance;
    email_upload_t *up = resp->data;
    char reply[200];
    long code = resp->code;
    last_reply(resp, resp->result == CURLE_OK ? 250 : code, reply, sizeof(reply));
    const char *error = resp->error ? resp->error : "";

    if (resp->result == CURLE_OK) {
        out->kind = CAD_OUTCOME_DELIVERED;
        /* "250 2.0.0 Ok: queued as 4F1C2" names the server's id; else ours */
        const char *queued = strstr(reply, "queued as ");
        if (queued && queued[10])
            snprintf(out->provider_id, sizeof(out->provider_id), "%s", queued + 10);
        else
            snprintf(out->provider_id, sizeof(out->provider_id), "%s",
                     up ? up->message_id : touch->idempotency_key);
        return;
    }
    if (resp->result == CURLE_LOGIN_DENIED && code >= 500) {
        /* Every touch of the channel would fail the same way: stop the
         * channel (its queue kept) rather than spend each touch's attempts.
         * A 4xx to AUTH ("454 4.7.0 Temporary authentication failure",
         * RFC 4954) is the server's passing trouble: retried below. */
        em->api->log(em->env, CAD_PLUGIN_LOG_ERR,
                     "SMTP authentication refused; fix username or password_file and reload "
                     "reply=\"%s\"",
                     reply);
        outcome(out, CAD_OUTCOME_PERMANENT, CAD_EFFECT_CHANNEL_DISABLED,
                "SMTP authentication refused: %s", reply[0] ? reply : error);
        return;
    }
    if (resp->result == CURLE_USE_SSL_FAILED) {
        /* libcurl fails the same way whether STARTTLS was not advertised or
         * the server answered it with an error ("454 4.7.0 TLS not
         * available"); the reply code tells them apart. */
        if (code >= 400)
            outcome(out, CAD_OUTCOME_RETRY, CAD_EFFECT_NONE,
                    "SMTP server refused STARTTLS, which this channel requires: %s",
                    reply[0] ? reply : error);
        else
            outcome(out, CAD_OUTCOME_RETRY, CAD_EFFECT_NONE,
                    "SMTP server did not offer STARTTLS, which this channel requires");
        return;
    }
    if (code >= 500 && code < 600) {
        if (strstr(error, "RCPT")) {
            outcome(out, CAD_OUTCOME_PERMANENT, CAD_EFFECT_CONTACT_UNUSABLE,
                    "SMTP server refused recipient %s: %s", touch->contact.email,
                    reply[0] ? reply : error);
        } else if (strstr(error, "MAIL")) {
            outcome(out, CAD_OUTCOME_PERMANENT, CAD_EFFECT_NONE,
                    "SMTP server refused sender %s: %s", em->from, reply[0] ? reply : error);
        } else {
            outcome(out, CAD_OUTCOME_PERMANENT, CAD_EFFECT_NONE,
                    "SMTP server refused the message: %s", reply[0] ? reply : error);
        }
        return;
    }
    if (code >= 400 && code < 500) {
        outcome(out, CAD_OUTCOME_RETRY, CAD_EFFECT_NONE, "SMTP server deferred: %s",
                reply[0] ? reply : error);
        return;
    }
    outcome(out, CAD_OUTCOME_RETRY, CAD_EFFECT_NONE, "SMTP transfer failed: %s (%s)",
            curl_easy_strerror(resp->result), error);
}

CAD_PLUGIN_EXPORT const cad_plugin_descriptor_t cadence_channel_plugin = {
    .abi_major = CAD_PLUGIN_ABI_MAJOR,
    .abi_minor = CAD_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(cad_plugin_descriptor_t),
    .name = "email",
    .description = "email over SMTP/SMTPS with STARTTLS, multipart text and HTML, one-click "
                   "unsubscribe",
    .version = "1.0",
    .options = email_options,
    .init = email_init,
    .prepare = email_prepare,
    .interpret = email_interpret,
    .release = email_release,
    .send = NULL,
    .shutdown = email_shutdown,
};
