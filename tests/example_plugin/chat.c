/*
 * chat.c — an example cadenced channel plugin, built out of tree.
 *
 * It posts each touch's rendered text to a chat system's "incoming webhook"
 * URL as {"text": "...", "idempotency_key": "..."} (Slack, Mattermost and
 * Rocket.Chat accept this shape), e.g. to tell an account manager that a
 * thank-you is due for their customer. It shows the whole ABI a transfer
 * plugin needs: the descriptor, an option table, init/shutdown, prepare()
 * setting up the host's libcurl handle, and interpret() mapping the reply to
 * an outcome. Everything it includes is <cadence/channel.h>.
 */
#include <cadence/channel.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct chat {
    const cad_plugin_api_t *api;
    cad_plugin_env_t *env;
    char *url;
    char *prefix;
} chat_t;

/* Appends s to out as a JSON string body (without quotes); returns the new length or 0
 * when it does not fit. */
static size_t json_escape(char *out, size_t size, size_t len, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        const char *piece = esc;
        if (*p == '"')
            piece = "\\\"";
        else if (*p == '\\')
            piece = "\\\\";
        else if (*p == '\n')
            piece = "\\n";
        else if (*p < 0x20)
            snprintf(esc, sizeof esc, "\\u%04x", *p);
        else
            esc[0] = (char)*p, esc[1] = '\0';
        size_t n = strlen(piece);
        if (len + n + 1 > size)
            return 0;
        memcpy(out + len, piece, n + 1);
        len += n;
    }
    return len;
}

static int chat_prepare(void *instance, const cad_plugin_touch_t *touch,
                        cad_plugin_transfer_t *xfer, cad_plugin_outcome_t *out)
{
    chat_t *c = instance;
    size_t size =
        strlen(c->prefix) * 2 + strlen(touch->text) * 6 + strlen(touch->idempotency_key) * 6 + 64;
    char *body = malloc(size);
    if (!body) {
        out->kind = CAD_OUTCOME_RETRY;
        snprintf(out->reason, sizeof out->reason, "out of memory");
        return -1;
    }
    size_t len = (size_t)snprintf(body, size, "{\"text\":\"");
    len = json_escape(body, size, len, c->prefix);
    if (len)
        len = json_escape(body, size, len, touch->text);
    if (len) {
        len += (size_t)snprintf(body + len, size - len, "\",\"idempotency_key\":\"");
        len = json_escape(body, size, len, touch->idempotency_key);
    }
    if (!len || len + 3 > size) {
        free(body);
        out->kind = CAD_OUTCOME_PERMANENT;
        snprintf(out->reason, sizeof out->reason, "message too long");
        return -1;
    }
    memcpy(body + len, "\"}", 3);
    xfer->body = body; /* the host frees it after the transfer */
    xfer->headers = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(xfer->easy, CURLOPT_URL, c->url);
    curl_easy_setopt(xfer->easy, CURLOPT_HTTPHEADER, xfer->headers);
    curl_easy_setopt(xfer->easy, CURLOPT_POSTFIELDS, body);
    return 0;
}

static void chat_interpret(void *instance, const cad_plugin_touch_t *touch,
                           const cad_plugin_response_t *resp, cad_plugin_outcome_t *out)
{
    chat_t *c = instance;
    if (resp->result != CURLE_OK) {
        out->kind = CAD_OUTCOME_RETRY;
        snprintf(out->reason, sizeof out->reason, "request failed: %s", resp->error);
    } else if (resp->code >= 200 && resp->code < 300) {
        out->kind = CAD_OUTCOME_DELIVERED;
        snprintf(out->provider_id, sizeof out->provider_id, "chat-%s", touch->idempotency_key);
    } else if (resp->code == 429 || resp->code >= 500) {
        out->kind = CAD_OUTCOME_RETRY;
        int64_t after = c->api->retry_after(resp);
        out->retry_after = after > 0 ? after : 0;
        snprintf(out->reason, sizeof out->reason, "chat answered %ld", resp->code);
    } else {
        out->kind = CAD_OUTCOME_PERMANENT;
        snprintf(out->reason, sizeof out->reason, "chat answered %ld", resp->code);
    }
}

static int chat_init(const cad_plugin_api_t *api, cad_plugin_env_t *env, void **instance, char *err,
                     size_t err_size)
{
    if (api->abi_major != CAD_PLUGIN_ABI_MAJOR) {
        snprintf(err, err_size, "host speaks ABI %u", api->abi_major);
        return -1;
    }
    const char *url = api->option(env, "url"); /* required: the host checked it is set */
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        snprintf(err, err_size, "option url must start with http:// or https://");
        return -1;
    }
    chat_t *c = calloc(1, sizeof *c);
    if (!c || !(c->url = strdup(url)) || !(c->prefix = strdup(api->option(env, "prefix")))) {
        if (c)
            free(c->url);
        free(c);
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    c->api = api;
    c->env = env;
    /* log the host only: chat webhook URLs carry their token in the path */
    const char *host = strstr(url, "://") + 3;
    api->log(env, CAD_PLUGIN_LOG_INFO, "posting to a chat webhook host=%.*s",
             (int)strcspn(host, "/?#"), host);
    *instance = c;
    return 0;
}

static void chat_shutdown(void *instance)
{
    chat_t *c = instance;
    free(c->url);
    free(c->prefix);
    free(c);
}

static const cad_plugin_option_t chat_options[] = {
    {"url", CAD_OPTION_STRING, NULL, true, "the chat's incoming-webhook URL"},
    {"prefix", CAD_OPTION_STRING, "", false, "text put before every message"},
    {NULL, 0, NULL, false, NULL},
};

CAD_PLUGIN_EXPORT const cad_plugin_descriptor_t cadence_channel_plugin = {
    .abi_major = CAD_PLUGIN_ABI_MAJOR,
    .abi_minor = CAD_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(cad_plugin_descriptor_t),
    .name = "chat",
    .description = "posts each touch's text to a chat incoming webhook",
    .version = "1.0",
    .options = chat_options,
    .init = chat_init,
    .prepare = chat_prepare,
    .interpret = chat_interpret,
    .shutdown = chat_shutdown,
};
