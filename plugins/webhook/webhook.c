/*
 * webhook.c — the webhook channel: one signed JSON POST per touch.
 *
 * The body is {"type": "touch.decided", "timestamp": ..., "data": {touch id,
 * idempotency key, attempt, customer, contact, rule, purpose, channel,
 * content, rendered message, unsubscribe links, decided_at}} (docs/plugins.md
 * documents it). It is signed per Standard Webhooks 1.0: headers webhook-id
 * (the touch's idempotency key, identical on every retry so receivers can
 * deduplicate), webhook-timestamp (Unix seconds of this attempt) and
 * webhook-signature "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>", where
 * key is the base64-decoded part after "whsec_" of the secret file.
 *
 * Outcomes: 2xx delivered; 410 permanent and the endpoint is disabled (the
 * host stops the channel until a reload); every other answer is a failed
 * attempt, retried on the schedule and honouring Retry-After (a redirect is
 * not followed: the reason says to fix the url). Network errors and
 * timeouts retry. The plugin only builds requests and reads replies; the
 * host runs them on its shared libcurl multi handle.
 */
#include "webhook_body.h"

#include <cadence/channel.h>

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define KEY_MAX 256

typedef struct webhook {
    const cad_plugin_api_t *api;
    cad_plugin_env_t *env;
    char *url;
    unsigned char key[KEY_MAX];
    size_t key_len;
    int64_t timeout;
    char *event_type;
    char *ca_file;       /* PEM bundle to verify an https:// endpoint with; NULL: the system's */
    EVP_MAC *hmac;       /* fetched once: a fetch per signature costs more than the MAC */
    EVP_MAC_CTX *signer; /* HMAC-SHA256 keyed with `key`; re-initialised per signature */
} webhook_t;

/* HMAC-SHA256 of "{id}.{ts}.{body}" with the instance's key, fed in pieces
 * to the context keyed at init (a NULL key re-initialises it with its key). */
static bool sign(webhook_t *w, const char *id, const char *ts, const char *body, size_t body_len,
                 unsigned char *mac, size_t *mac_len)
{
    return EVP_MAC_init(w->signer, NULL, 0, NULL) &&
           EVP_MAC_update(w->signer, (const unsigned char *)id, strlen(id)) &&
           EVP_MAC_update(w->signer, (const unsigned char *)".", 1) &&
           EVP_MAC_update(w->signer, (const unsigned char *)ts, strlen(ts)) &&
           EVP_MAC_update(w->signer, (const unsigned char *)".", 1) &&
           EVP_MAC_update(w->signer, (const unsigned char *)body, body_len) &&
           EVP_MAC_final(w->signer, mac, mac_len, EVP_MAX_MD_SIZE);
}

/* Creates the instance's HMAC-SHA256 context keyed with w->key. */
static bool signer_new(webhook_t *w)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    w->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    w->signer = w->hmac ? EVP_MAC_CTX_new(w->hmac) : NULL;
    return w->signer && EVP_MAC_init(w->signer, w->key, w->key_len, params);
}

static void signer_free(webhook_t *w)
{
    EVP_MAC_CTX_free(w->signer);
    EVP_MAC_free(w->hmac);
    w->signer = NULL;
    w->hmac = NULL;
}

static bool header_safe(const char *s)
{
    return strpbrk(s, "\r\n") == NULL;
}

static int webhook_prepare(void *instance, const cad_plugin_touch_t *t, cad_plugin_transfer_t *xfer,
                           cad_plugin_outcome_t *out)
{
    webhook_t *w = instance;
    const char *id = *t->idempotency_key ? t->idempotency_key : NULL;
    char idbuf[32];
    if (!id) {
        snprintf(idbuf, sizeof idbuf, "touch-%lld", (long long)t->touch_id);
        id = idbuf;
    }
    if (!header_safe(id)) {
        out->kind = CAD_OUTCOME_PERMANENT;
        snprintf(out->reason, sizeof out->reason,
                 "idempotency key of touch %lld holds CR or LF; refused as a header value",
                 (long long)t->touch_id);
        return -1;
    }
    /* The header carries the whole key, as signed: a key that does not fit
     * the line would be signed one way and sent another. */
    char l_id[1024];
    if (snprintf(l_id, sizeof l_id, "webhook-id: %s", id) >= (int)sizeof l_id) {
        out->kind = CAD_OUTCOME_PERMANENT;
        snprintf(out->reason, sizeof out->reason,
                 "idempotency key of touch %lld is longer than %zu bytes; refused as webhook-id",
                 (long long)t->touch_id, sizeof l_id - 13);
        return -1;
    }
    int64_t now = w->api->now();
    size_t body_len = 0;
    char *body = cad_webhook_body(w->event_type, now, t, &body_len);
    if (!body && errno == EILSEQ) {
        out->kind = CAD_OUTCOME_PERMANENT;
        snprintf(out->reason, sizeof out->reason,
                 "cannot encode touch %lld as JSON (a field is not valid UTF-8)",
                 (long long)t->touch_id);
        return -1;
    }
    if (!body) {
        out->kind = CAD_OUTCOME_RETRY;
        snprintf(out->reason, sizeof out->reason, "out of memory encoding touch %lld",
                 (long long)t->touch_id);
        return -1;
    }
    xfer->body = body;

    /* signature over "{id}.{timestamp}.{body}" */
    char ts[32];
    snprintf(ts, sizeof ts, "%lld", (long long)now);
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t mac_len = 0;
    if (!sign(w, id, ts, body, body_len, mac, &mac_len)) {
        out->kind = CAD_OUTCOME_RETRY;
        snprintf(out->reason, sizeof out->reason, "HMAC-SHA256 failed signing touch %lld",
                 (long long)t->touch_id);
        return -1;
    }
    char sig[4 * EVP_MAX_MD_SIZE / 3 + 8];
    EVP_EncodeBlock((unsigned char *)sig, mac, (int)mac_len);

    struct curl_slist *headers = NULL, *next;
    const char *lines[5];
    char l_ts[64], l_sig[sizeof sig + 32];
    snprintf(l_ts, sizeof l_ts, "webhook-timestamp: %s", ts);
    snprintf(l_sig, sizeof l_sig, "webhook-signature: v1,%s", sig);
    lines[0] = "Content-Type: application/json";
    lines[1] = l_id;
    lines[2] = l_ts;
    lines[3] = l_sig;
    lines[4] = "Expect:";
    for (size_t i = 0; i < 5; i++) {
        next = curl_slist_append(headers, lines[i]); /* copies the line */
        if (!next) {
            curl_slist_free_all(headers);
            out->kind = CAD_OUTCOME_RETRY;
            snprintf(out->reason, sizeof out->reason, "out of memory building headers");
            return -1;
        }
        headers = next;
    }
    xfer->headers = headers;
    CURL *e = xfer->easy;
    curl_easy_setopt(e, CURLOPT_URL, w->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (w->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, w->ca_file);
    if (w->timeout > 0) {
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(w->timeout * 1000));
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                         (long)(w->timeout < 10 ? w->timeout * 1000 : 10000));
    }
    return 0;
}

static void webhook_interpret(void *instance, const cad_plugin_touch_t *t,
                              const cad_plugin_response_t *r, cad_plugin_outcome_t *out)
{
    webhook_t *w = instance;
    if (r->result != CURLE_OK) {
        bool permanent =
            r->result == CURLE_URL_MALFORMAT || r->result == CURLE_UNSUPPORTED_PROTOCOL;
        out->kind = permanent ? CAD_OUTCOME_PERMANENT : CAD_OUTCOME_RETRY;
        snprintf(out->reason, sizeof out->reason, "%s: %s",
                 r->result == CURLE_OPERATION_TIMEDOUT ? "timed out" : "request failed", r->error);
        return;
    }
    long code = r->code;
    if (code >= 200 && code < 300) {
        out->kind = CAD_OUTCOME_DELIVERED;
        char id[CAD_PLUGIN_PROVIDER_ID_MAX];
        if (!w->api->header(r, "webhook-id", id, sizeof id) &&
            !w->api->header(r, "x-request-id", id, sizeof id))
            snprintf(id, sizeof id, "%s", t->idempotency_key);
        snprintf(out->provider_id, sizeof out->provider_id, "%s", id);
        return;
    }
    if (code == 410) {
        out->kind = CAD_OUTCOME_PERMANENT;
        out->effect = CAD_EFFECT_CHANNEL_DISABLED;
        snprintf(out->reason, sizeof out->reason,
                 "endpoint answered 410 Gone: it no longer accepts webhooks");
        return;
    }
    /* Standard Webhooks: any other answer is a failed attempt, retried on
     * the schedule (an endpoint answering 404 during a deploy, or a wrong
     * url, keeps its touches: the circuit opens and they wait for a fix). */
    out->kind = CAD_OUTCOME_RETRY;
    if (code >= 300 && code < 400) {
        char loc[256];
        snprintf(out->reason, sizeof out->reason,
                 "endpoint answered %ld redirect to %s; redirects are not followed, fix the url",
                 code, w->api->header(r, "Location", loc, sizeof loc) ? loc : "(no Location)");
        return;
    }
    int64_t after = w->api->retry_after(r);
    out->retry_after = after > 0 ? after : 0;
    if (after >= 0)
        snprintf(out->reason, sizeof out->reason, "endpoint answered %ld with Retry-After %llds",
                 code, (long long)after);
    else
        snprintf(out->reason, sizeof out->reason, "endpoint answered %ld", code);
}

static int decode_secret(const char *secret, size_t len, unsigned char *key, size_t *key_len,
                         char *err, size_t err_size)
{
    const char *b64 = secret;
    if (len > 6 && strncmp(secret, "whsec_", 6) == 0) {
        b64 += 6;
        len -= 6;
    }
    if (len == 0 || len % 4 != 0 || len / 4 * 3 > KEY_MAX) {
        snprintf(err, err_size,
                 "the webhook secret must be \"whsec_\" followed by base64 of 24 to %d bytes",
                 KEY_MAX);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        char c = b64[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '+' || c == '/' || (c == '=' && i >= len - 2);
        if (!ok) {
            snprintf(err, err_size, "the webhook secret is not valid base64 after \"whsec_\"");
            return -1;
        }
    }
    unsigned char tmp[KEY_MAX + 3];
    int n = EVP_DecodeBlock(tmp, (const unsigned char *)b64, (int)len);
    if (n < 0) {
        snprintf(err, err_size, "the webhook secret is not valid base64 after \"whsec_\"");
        return -1;
    }
    size_t pad = (b64[len - 1] == '=') + (b64[len - 2] == '=');
    *key_len = (size_t)n - pad;
    memcpy(key, tmp, *key_len);
    OPENSSL_cleanse(tmp, sizeof tmp);
    if (*key_len < 24) {
        OPENSSL_cleanse(key, KEY_MAX);
        snprintf(err, err_size, "the webhook secret is %zu bytes; at least 24 are required",
                 *key_len);
        return -1;
    }
    return 0;
}

/* Why the PEM bundle at `path` cannot serve as ca_file, or NULL. */
static const char *ca_file_problem(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0 || access(path, R_OK) != 0)
        return strerror(errno);
    return S_ISREG(sb.st_mode) ? NULL : "not a regular file";
}

static int webhook_init(const cad_plugin_api_t *api, cad_plugin_env_t *env, void **instance,
                        char *err, size_t err_size)
{
    const char *url = api->option(env, "url");
    if (!url || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) ||
        !header_safe(url)) {
        snprintf(err, err_size, "option url must be an http:// or https:// URL, not \"%s\"",
                 url ? url : "");
        return -1;
    }
    webhook_t *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    w->api = api;
    w->env = env;
    w->timeout = api->option_int(env, "timeout", 0);
    w->url = strdup(url);
    w->event_type =
        strdup(api->option(env, "event_type") ? api->option(env, "event_type") : "touch.decided");
    char *secret = NULL;
    size_t len = 0;
    if (!w->url || !w->event_type) {
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    const char *ca_file = api->option(env, "ca_file");
    if (ca_file && *ca_file) {
        if (ca_file_problem(ca_file)) {
            snprintf(err, err_size, "option ca_file \"%s\" cannot be read: %s", ca_file,
                     ca_file_problem(ca_file));
            goto fail;
        }
        if (!(w->ca_file = strdup(ca_file))) {
            snprintf(err, err_size, "out of memory");
            goto fail;
        }
    }
    if (api->read_secret(env, "secret_file", &secret, &len, err, err_size) < 0)
        goto fail;
    int rc = decode_secret(secret, len, w->key, &w->key_len, err, err_size);
    api->free_secret(secret, len);
    if (rc < 0)
        goto fail;
    if (!signer_new(w)) {
        snprintf(err, err_size, "OpenSSL cannot provide HMAC-SHA256");
        goto fail;
    }
    /* only scheme and host: paths and queries of webhook URLs often carry tokens */
    const char *host = strstr(url, "://") + 3;
    int origin_len = (int)(strcspn(host, "/?#") + (size_t)(host - url));
    api->log(env, CAD_PLUGIN_LOG_INFO, "posting signed touches endpoint=%.*s", origin_len, url);
    *instance = w;
    return 0;
fail:
    signer_free(w);
    OPENSSL_cleanse(w->key, sizeof w->key);
    free(w->url);
    free(w->event_type);
    free(w->ca_file);
    free(w);
    return -1;
}

static void webhook_shutdown(void *instance)
{
    webhook_t *w = instance;
    signer_free(w);
    OPENSSL_cleanse(w->key, sizeof w->key);
    free(w->url);
    free(w->event_type);
    free(w->ca_file);
    free(w);
}

static const cad_plugin_option_t webhook_options[] = {
    {"url", CAD_OPTION_STRING, NULL, true, "endpoint receiving the POST (http:// or https://)"},
    {"secret_file", CAD_OPTION_SECRET_FILE, NULL, true,
     "file holding the signing secret \"whsec_<base64>\" (Standard Webhooks)"},
    {"timeout", CAD_OPTION_DURATION, NULL, false,
     "total time allowed per request; default: the channel's timeout"},
    {"event_type", CAD_OPTION_STRING, "touch.decided", false, "the \"type\" field of the body"},
    {"ca_file", CAD_OPTION_STRING, NULL, false,
     "PEM bundle of CAs to verify an https:// endpoint with, instead of the system's"},
    {NULL, 0, NULL, false, NULL},
};

CAD_PLUGIN_EXPORT const cad_plugin_descriptor_t cadence_channel_plugin = {
    .abi_major = CAD_PLUGIN_ABI_MAJOR,
    .abi_minor = CAD_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(cad_plugin_descriptor_t),
    .name = "webhook",
    .description = "POSTs each touch as JSON signed per Standard Webhooks",
    .version = "1.0",
    .options = webhook_options,
    .init = webhook_init,
    .prepare = webhook_prepare,
    .interpret = webhook_interpret,
    .shutdown = webhook_shutdown,
};
