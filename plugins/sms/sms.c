/*
 * sms.c — the SMS channel: a Twilio-compatible Messages API over HTTPS.
 *
 * prepare() checks everything that would make the message fail or cost
 * more than allowed before a request is made: the contact's number must be
 * E.164 and the body must fit `max_segments` (counted as the carrier bills:
 * GSM-7 with its extension table, else UCS-2; sms_text.c). It then POSTs a
 * form (To, From or MessagingServiceSid, Body, optional StatusCallback) to
 * {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json with HTTP basic
 * auth, the account SID and the auth token read from a secret file at init.
 *
 * interpret() maps the reply: 200/201 is delivered with the message "sid"
 * as provider id; Twilio error 21610 (the recipient replied STOP) is
 * permanent and revokes the contact's SMS consent; numbers the provider
 * says cannot receive SMS mark the contact's phone unusable; 429 and 5xx
 * retry, honouring Retry-After; a 401 says the channel's credentials are
 * wrong, not this touch: it is reported with CAD_EFFECT_CHANNEL_DISABLED so
 * the host stops the channel, its queue kept, until a reload; other 4xx are
 * permanent with the provider's own message.
 */
#include "sms_text.h"

#include <cadence/channel.h>
#include <jansson.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TWILIO_UNSUBSCRIBED 21610 /* attempt to send to unsubscribed recipient */
#define TWILIO_INVALID_TO   21211 /* invalid 'To' phone number */
#define TWILIO_NOT_MOBILE   21614 /* 'To' number is not a valid mobile number */
#define TWILIO_UNREACHABLE  21612 /* 'To' number is not currently reachable via SMS */

typedef struct sms_instance {
    const cad_plugin_api_t *api;
    cad_plugin_env_t *env;
    char *url;               /* owned: the Messages.json endpoint */
    const char *account_sid; /* option strings live as long as the channel */
    const char *from;
    const char *messaging_service_sid;
    const char *status_callback;
    const char *ca_file; /* PEM bundle to verify the API with; NULL: the system's */
    int64_t max_segments;
    char *auth_token; /* from the secret file; wiped with api->free_secret */
    size_t auth_token_len;
} sms_instance_t;

static const cad_plugin_option_t sms_options[] = {
    {"base_url", CAD_OPTION_STRING, "https://api.twilio.com", false,
     "API root; the plugin POSTs to {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json"},
    {"account_sid", CAD_OPTION_STRING, NULL, true, "account SID, the basic-auth user name"},
    {"auth_token_file", CAD_OPTION_SECRET_FILE, NULL, true,
     "file holding the auth token (a systemd credential name or absolute path)"},
    {"from", CAD_OPTION_STRING, NULL, false,
     "sender: E.164 number, short code or alphanumeric id (or set messaging_service_sid)"},
    {"messaging_service_sid", CAD_OPTION_STRING, NULL, false,
     "MessagingServiceSid to send through instead of a From number"},
    {"status_callback", CAD_OPTION_STRING, NULL, false,
     "URL the provider calls with delivery status updates (StatusCallback)"},
    {"ca_file", CAD_OPTION_STRING, NULL, false,
     "PEM bundle of CAs to verify an https:// base_url with, instead of the system's"},
    {"max_segments", CAD_OPTION_INT, "3", false,
     "longest body allowed, in billed segments (160/153 GSM-7, 70/67 UCS-2); 1 to 10"},
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

/* Twilio SIDs: two letters then hex digits; we only insist on characters
 * that cannot change the URL's meaning. */
static bool sid_valid(const char *sid)
{
    if (!is_set(sid) || strlen(sid) > 64)
        return false;
    for (const char *p = sid; *p; p++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
            return false;
    }
    return true;
}

static void sms_shutdown(void *instance)
{
    sms_instance_t *sms = instance;
    if (!sms)
        return;
    if (sms->auth_token)
        sms->api->free_secret(sms->auth_token, sms->auth_token_len);
    free(sms->url);
    free(sms);
}

static int sms_init(const cad_plugin_api_t *api, cad_plugin_env_t *env, void **instance, char *err,
                    size_t err_size)
{
    sms_instance_t *sms = calloc(1, sizeof(*sms));
    if (!sms)
        return init_fail(err, err_size, "sms: out of memory");
    sms->api = api;
    sms->env = env;
    const char *base_url = api->option(env, "base_url");
    sms->account_sid = api->option(env, "account_sid");
    sms->from = api->option(env, "from");
    sms->messaging_service_sid = api->option(env, "messaging_service_sid");
    sms->status_callback = api->option(env, "status_callback");
    sms->ca_file = api->option(env, "ca_file");
    sms->max_segments = api->option_int(env, "max_segments", 3);

    int rc = 0;
    if (!is_set(base_url) ||
        (strncmp(base_url, "https://", 8) != 0 && strncmp(base_url, "http://", 7) != 0) ||
        strpbrk(base_url, " \t\r\n?#")) {
        rc = init_fail(err, err_size,
                       "sms: base_url \"%s\" must be an http:// or https:// URL without query",
                       base_url ? base_url : "");
    } else if (!sid_valid(sms->account_sid)) {
        rc = init_fail(err, err_size, "sms: account_sid \"%s\" must be 1 to 64 letters and digits",
                       sms->account_sid ? sms->account_sid : "");
    } else if (is_set(sms->from) == is_set(sms->messaging_service_sid)) {
        rc = init_fail(err, err_size, "sms: set exactly one of from and messaging_service_sid (%s)",
                       is_set(sms->from) ? "both are set" : "neither is set");
    } else if (is_set(sms->from) && !cad_sms_sender_valid(sms->from)) {
        rc = init_fail(err, err_size,
                       "sms: from \"%s\" is not an E.164 number, a short code or an alphanumeric "
                       "sender id of at most 11 characters",
                       sms->from);
    } else if (is_set(sms->messaging_service_sid) && !sid_valid(sms->messaging_service_sid)) {
        rc =
            init_fail(err, err_size, "sms: messaging_service_sid \"%s\" must be letters and digits",
                      sms->messaging_service_sid);
    } else if (is_set(sms->status_callback) && (strncmp(sms->status_callback, "https://", 8) != 0 &&
                                                strncmp(sms->status_callback, "http://", 7) != 0)) {
        rc = init_fail(err, err_size, "sms: status_callback \"%s\" must be an http(s):// URL",
                       sms->status_callback);
    } else if (sms->max_segments < 1 || sms->max_segments > 10) {
        rc = init_fail(err, err_size, "sms: max_segments %lld is outside 1 to 10",
                       (long long)sms->max_segments);
    } else if (is_set(sms->ca_file) && ca_file_problem(sms->ca_file)) {
        rc = init_fail(err, err_size, "sms: ca_file \"%s\" cannot be read: %s", sms->ca_file,
                       ca_file_problem(sms->ca_file));
    }
    if (rc == 0) {
        size_t n = strlen(base_url);
        while (n > 0 && base_url[n - 1] == '/')
            n--;
        size_t size = n + strlen(sms->account_sid) + 64;
        sms->url = malloc(size);
        if (!sms->url)
            rc = init_fail(err, err_size, "sms: out of memory");
        else
            snprintf(sms->url, size, "%.*s/2010-04-01/Accounts/%s/Messages.json", (int)n, base_url,
                     sms->account_sid);
    }
    if (rc == 0 && api->read_secret(env, "auth_token_file", &sms->auth_token, &sms->auth_token_len,
                                    err, err_size) < 0)
        rc = -1;
    if (rc < 0) {
        sms_shutdown(sms);
        return -1;
    }
    if (strncmp(sms->url, "http://", 7) == 0)
        api->log(env, CAD_PLUGIN_LOG_WARNING,
                 "base_url is plain http: the auth token travels in clear text url=%s", sms->url);
    *instance = sms;
    return 0;
}

/* Copies `s` into buf, keeping only printable ASCII so a reason can never
 * carry a line break (or a terminal escape) into a log. */
static void copy_printable(char *buf, size_t size, const char *s)
{
    size_t n = 0;
    for (; s && *s && n + 1 < size; s++)
        buf[n++] = ((unsigned char)*s >= 0x20 && (unsigned char)*s < 0x7f) ? *s : '?';
    buf[n] = '\0';
}

static int sms_prepare(void *instance, const cad_plugin_touch_t *touch, cad_plugin_transfer_t *xfer,
                       cad_plugin_outcome_t *out)
{
    sms_instance_t *sms = instance;
    const char *to = touch->contact.phone;
    char err[CAD_SMS_ERRBUF];

    if (!is_set(to)) {
        outcome(out, CAD_OUTCOME_PERMANENT, CAD_EFFECT_CONTACT_UNUSABLE,
                "contact %s has no phone number", touch->contact.id);
        return -1;
    }
    if (!cad_sms_e164_valid(to)) {
        char shown[41];
        copy_printable(shown, sizeof(shown), to);
        outcome(out, CAD_OUTCOME_PERMANENT, CAD_EFFECT_CONTACT_UNUSABLE,
                "phone number \"%s\" of contact %s is not E.164 (+ and 7 to 15 digits)", shown,
                touch->contact.id);
        return -1;
    }
    cad_sms_count_t count;
    if (cad_sms_count_segments(touch->text, &count, err) < 0) {
        outcome(out, CAD_OUTCOME_PERMANENT, CAD_EFFECT_NONE, "%s", err);
        return -1;
    }
    if (count.segments == 0) {
        outcome(out, CAD_OUTCOME_PERMANENT, CAD_EFFECT_NONE, "body is empty");
        return -1;
    }
    if ((int64_t)count.segments > sms->max_segments) {
        outcome(out, CAD_OUTCOME_PERMANENT, CAD_EFFECT_NONE,
                "body needs %zu %s segments (%zu %s), more than max_segments %lld", count.segments,
                count.encoding == CAD_SMS_GSM7 ? "GSM-7" : "UCS-2", count.units,
                count.encoding == CAD_SMS_GSM7 ? "septets" : "UTF-16 units",
                (long long)sms->max_segments);
        return -1;
    }

    char *form = NULL;
    size_t len = 0;
    int rc = cad_sms_form_add(&form, &len, "To", to);
    if (rc == 0 && is_set(sms->from))
        rc = cad_sms_form_add(&form, &len, "From", sms->from);
    if (rc == 0 && is_set(sms->messaging_service_sid))
        rc = cad_sms_form_add(&form, &len, "MessagingServiceSid", sms->messaging_service_sid);
    if (rc == 0)
        rc = cad_sms_form_add(&form, &len, "Body", touch->text);
    if (rc == 0 && is_set(sms->status_callback))
        rc = cad_sms_form_add(&form, &len, "StatusCallback", sms->status_callback);
    xfer->body = form;
    if (rc < 0) {
        outcome(out, CAD_OUTCOME_RETRY, CAD_EFFECT_NONE, "out of memory preparing the request");
        return -1;
    }

    char header[1100];
    int hn = snprintf(header, sizeof(header), "Idempotency-Key: %s", touch->idempotency_key);
    if (hn < 0 || (size_t)hn >= sizeof header || strpbrk(touch->idempotency_key, "\r\n")) {
        /* cut, two touches could share a key and the provider drop one */
        outcome(out, CAD_OUTCOME_PERMANENT, CAD_EFFECT_NONE,
                "idempotency key is longer than 1,000 bytes or holds CR/LF; refused as a header");
        return -1;
    }
    xfer->headers = curl_slist_append(NULL, "Accept: application/json");
    if (xfer->headers) {
        struct curl_slist *more = curl_slist_append(xfer->headers, header);
        if (more)
            xfer->headers = more;
    }
    CURL *easy = xfer->easy;
    CURLcode cc = curl_easy_setopt(easy, CURLOPT_URL, sms->url);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(easy, CURLOPT_POSTFIELDS, form);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(easy, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(easy, CURLOPT_USERNAME, sms->account_sid);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(easy, CURLOPT_PASSWORD, sms->auth_token);
    if (cc == CURLE_OK && xfer->headers)
        cc = curl_easy_setopt(easy, CURLOPT_HTTPHEADER, xfer->headers);
    if (cc == CURLE_OK && is_set(sms->ca_file))
        cc = curl_easy_setopt(easy, CURLOPT_CAINFO, sms->ca_file);
    if (cc != CURLE_OK) {
        outcome(out, CAD_OUTCOME_RETRY, CAD_EFFECT_NONE, "libcurl refused an HTTP option: %s",
                curl_easy_strerror(cc));
        return -1;
    }
    return 0;
}

static void sms_interpret(void *instance, const cad_plugin_touch_t *touch,
                          const cad_plugin_response_t *resp, cad_plugin_outcome_t *out)
{
    sms_instance_t *sms = instance;
    long status = resp->code;

    if (resp->result != CURLE_OK) {
        outcome(out, CAD_OUTCOME_RETRY, CAD_EFFECT_NONE, "SMS API request failed: %s (%s)",
                curl_easy_strerror(resp->result), resp->error ? resp->error : "");
        return;
    }

    json_error_t jerr;
    json_t *root = resp->body_len > 0 ? json_loadb(resp->body, resp->body_len, 0, &jerr) : NULL;
    json_t *object = json_is_object(root) ? root : NULL;
    char message[300] = "";
    json_int_t code = 0;
    if (object) {
        copy_printable(message, sizeof(message),
                       json_string_value(json_object_get(object, "message")));
        code = json_integer_value(json_object_get(object, "code"));
    }

    if (status == 200 || status == 201) {
        const char *sid = object ? json_string_value(json_object_get(object, "sid")) : NULL;
        out->kind = CAD_OUTCOME_DELIVERED;
        if (sid && *sid) {
            copy_printable(out->provider_id, sizeof(out->provider_id), sid);
        } else {
            sms->api->log(sms->env, CAD_PLUGIN_LOG_WARNING,
                          "SMS API accepted the message but its reply has no sid status=%ld "
                          "touch=%lld",
                          status, (long long)touch->touch_id);
        }
    } else if (status == 429 || (status >= 500 && status < 600)) {
        int64_t after = sms->api->retry_after(resp);
        outcome(out, CAD_OUTCOME_RETRY, CAD_EFFECT_NONE, "SMS API answered %ld%s%s", status,
                message[0] ? ": " : "", message);
        out->retry_after = after > 0 ? after : 0;
    } else if (code == TWILIO_UNSUBSCRIBED) {
        outcome(out, CAD_OUTCOME_PERMANENT, CAD_EFFECT_CONSENT_REVOKED,
                "recipient %s has unsubscribed from SMS (error 21610): %s", touch->contact.phone,
                message);
    } else if (code == TWILIO_INVALID_TO || code == TWILIO_NOT_MOBILE ||
               code == TWILIO_UNREACHABLE) {
        outcome(out, CAD_OUTCOME_PERMANENT, CAD_EFFECT_CONTACT_UNUSABLE,
                "number %s cannot receive SMS (error %lld): %s", touch->contact.phone,
                (long long)code, message);
    } else if (status == 401) {
        sms->api->log(sms->env, CAD_PLUGIN_LOG_ERR,
                      "SMS API refused our credentials; fix account_sid or auth_token_file and "
                      "reload code=%lld",
                      (long long)code);
        outcome(out, CAD_OUTCOME_PERMANENT, CAD_EFFECT_CHANNEL_DISABLED,
                "SMS API refused the credentials (401%s%s)", message[0] ? ": " : "", message);
    } else if (status >= 400 && status < 500) {
        if (message[0])
            outcome(out, CAD_OUTCOME_PERMANENT, CAD_EFFECT_NONE,
                    "SMS API refused the message (%ld, error %lld): %s", status, (long long)code,
                    message);
        else
            outcome(out, CAD_OUTCOME_PERMANENT, CAD_EFFECT_NONE,
                    "SMS API refused the message (%ld) with no error message", status);
    } else {
        outcome(out, CAD_OUTCOME_RETRY, CAD_EFFECT_NONE, "SMS API answered unexpected status %ld",
                status);
    }
    json_decref(root);
}

CAD_PLUGIN_EXPORT const cad_plugin_descriptor_t cadence_channel_plugin = {
    .abi_major = CAD_PLUGIN_ABI_MAJOR,
    .abi_minor = CAD_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(cad_plugin_descriptor_t),
    .name = "sms",
    .description = "SMS through a Twilio-compatible Messages API, GSM-7/UCS-2 segment limits",
    .version = "1.0",
    .options = sms_options,
    .init = sms_init,
    .prepare = sms_prepare,
    .interpret = sms_interpret,
    .release = NULL,
    .send = NULL,
    .shutdown = sms_shutdown,
};
