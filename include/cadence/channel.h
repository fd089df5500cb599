/*
 * cadence/channel.h — the channel plugin ABI of cadenced.
 *
 * A channel plugin is a shared object that exports one descriptor,
 * `cadence_channel_plugin` (CAD_PLUGIN_SYMBOL), of type
 * cad_plugin_descriptor_t. The daemon dlopen()s `<plugin_dir>/<name>.so`
 * for every configured channel, checks the descriptor's ABI version and size
 * before calling anything, validates the channel's settings against the
 * plugin's option table, and calls init() once per channel.
 *
 * The engine decides, the plugin delivers. For each touch the host renders
 * the template and hands the plugin a cad_plugin_touch_t. The plugin either
 *   - prepare()s a libcurl easy handle the host runs on its shared multi
 *     handle (on the host's transfer thread; prepare() and interpret() run
 *     on the event loop, and curl callbacks the plugin sets on the handle
 *     run on the transfer thread and may touch only the transfer's own
 *     data), then interpret()s the finished transfer (curl result,
 *     response code, headers, body), or
 *   - provides a blocking send() the host runs on the libuv thread pool, for
 *     work that is not a libcurl transfer (the file plugin writes files).
 * Either way the plugin reports one outcome: DELIVERED (with the provider's
 * message id), RETRY (optionally after N seconds) or PERMANENT (with a reason,
 * and whether the contact's channel is now unusable or consent was revoked).
 * Retries, backoff, dead letters and consent changes belong to the host: a
 * plugin never sleeps, never blocks the loop, never owns a thread it did not
 * ask for, and never logs secrets or message bodies.
 *
 * Versioning: CAD_PLUGIN_ABI_MAJOR changes when anything here changes
 * incompatibly; the host refuses a plugin whose major differs. Minor versions
 * only append fields to the end of structs; every struct a plugin receives or
 * exports carries its size, so both sides read only what the other knows.
 *
 * This is the only header a plugin includes. It needs libcurl's headers
 * (`pkg-config --cflags cadence-plugin` pulls them in).
 */
#ifndef CADENCE_CHANNEL_H
#define CADENCE_CHANNEL_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CAD_PLUGIN_ABI_MAJOR 1
#define CAD_PLUGIN_ABI_MINOR 2

/* Name of the one symbol a plugin exports. */
#define CAD_PLUGIN_SYMBOL "cadence_channel_plugin"

/* Put before the descriptor definition so it is exported even when the
 * plugin is built with -fvisibility=hidden. */
#define CAD_PLUGIN_EXPORT __attribute__((visibility("default")))

#define CAD_PLUGIN_PROVIDER_ID_MAX 256   /* bytes of a provider message id, with the NUL */
#define CAD_PLUGIN_REASON_MAX      512   /* bytes of an outcome reason, with the NUL */
#define CAD_PLUGIN_BODY_MAX        65536 /* response bytes kept for interpret(); the rest dropped */

/* ---- options -------------------------------------------------------------- */

/* Type of a plugin option. The host checks a setting's text against it at
 * load, so a typo fails with the config file and line. */
enum cad_option_type {
    CAD_OPTION_STRING = 0,  /* any text */
    CAD_OPTION_INT,         /* decimal integer, int64 range */
    CAD_OPTION_BOOL,        /* true/false, yes/no, on/off, 1/0 */
    CAD_OPTION_DURATION,    /* "30s", "5m", "1h30m", "2d"; read back as seconds */
    CAD_OPTION_SECRET_FILE, /* a file name under the credentials directory (or absolute);
                               its content is read with api->read_secret, never logged */
};

/* One entry of a plugin's option table; the table ends with an entry whose
 * name is NULL. */
typedef struct cad_plugin_option {
    const char *name; /* the key in the channel's settings group */
    enum cad_option_type type;
    const char *default_value; /* text as in the config; NULL = no default */
    bool required;             /* a missing required option fails the load */
    const char *description;   /* one line for docs and `cadencectl plugins` */
} cad_plugin_option_t;

/* ---- the touch ------------------------------------------------------------- */

/* What address a channel needs from a contact. */
enum cad_plugin_address {
    CAD_PLUGIN_ADDRESS_EMAIL = 0, /* contact.email */
    CAD_PLUGIN_ADDRESS_PHONE,     /* contact.phone, E.164 */
    CAD_PLUGIN_ADDRESS_NONE,      /* no personal address (webhook, file, CRM task) */
};

typedef struct cad_plugin_customer {
    const char *id; /* external id */
    const char *name;
    const char *attributes; /* JSON object text of free attributes, "{}" when none */
} cad_plugin_customer_t;

typedef struct cad_plugin_contact {
    const char *id;
    const char *name;
    const char *first_name;
    const char *email; /* "" when none */
    const char *phone; /* E.164, "" when none */
} cad_plugin_contact_t;

typedef struct cad_plugin_content {
    const char *id; /* "" when the rule has its own template and no library item */
    const char *title;
    const char *url;
} cad_plugin_content_t;

/* One touch to deliver. Every string is non-NULL ("" when absent) and
 * NUL-terminated; all of it is owned by the host and valid until the
 * outcome is reported (the end of interpret() or send()). */
typedef struct cad_plugin_touch {
    uint32_t struct_size;        /* sizeof(cad_plugin_touch_t) of the host */
    const char *idempotency_key; /* stable across retries and restarts: give it to providers */
    int64_t touch_id;            /* the outbox row */
    cad_plugin_customer_t customer;
    cad_plugin_contact_t contact;
    const char *rule;    /* playbook rule name */
    const char *purpose; /* value, followup, appreciation, feedback, ask, transactional */
    const char *channel; /* configured channel name */
    cad_plugin_content_t content;
    /* Rendered by the host from the rule's or content's template. */
    const char *subject;            /* "" when the template has none */
    const char *text;               /* plain text (also the SMS body) */
    const char *html;               /* "" when the template has no HTML part */
    const char *unsubscribe_url;    /* "" when not configured */
    const char *unsubscribe_mailto; /* "" when not configured */
    int64_t decided_at;             /* Unix seconds, UTC */
    int attempt;                    /* 1 on the first attempt */
} cad_plugin_touch_t;

/* ---- outcomes -------------------------------------------------------------- */

enum cad_outcome_kind {
    CAD_OUTCOME_DELIVERED = 0, /* the provider accepted it */
    CAD_OUTCOME_RETRY,         /* transient: the host retries with backoff */
    CAD_OUTCOME_PERMANENT,     /* will never work: the touch goes dead */
};

/* What a permanent failure means for the contact (SPEC §4 feedback). */
enum cad_outcome_effect {
    CAD_EFFECT_NONE = 0,
    CAD_EFFECT_CONTACT_UNUSABLE, /* hard bounce, invalid number: mark the contact's channel */
    CAD_EFFECT_CONSENT_REVOKED,  /* the recipient opted out (SMS STOP, 21610) */
    CAD_EFFECT_CHANNEL_DISABLED, /* the channel, not this touch, fails for everyone until its
                                    configuration is fixed and reloaded: the endpoint is gone
                                    (webhook 410), its credentials are refused (SMTP 535,
                                    SMS API 401). The touch is dead; the channel stops, its
                                    queue kept, until a reload */
};

/* The result of one attempt, filled by the plugin in a host-owned struct that
 * the host zeroes first (kind DELIVERED, empty strings). */
typedef struct cad_plugin_outcome {
    enum cad_outcome_kind kind;
    enum cad_outcome_effect effect; /* PERMANENT only */
    int64_t retry_after;            /* RETRY only: seconds to wait at least; 0 = host's backoff */
    char provider_id[CAD_PLUGIN_PROVIDER_ID_MAX]; /* DELIVERED: the provider's message id */
    char reason[CAD_PLUGIN_REASON_MAX]; /* RETRY/PERMANENT: one sentence, no secrets or bodies */
} cad_plugin_outcome_t;

/* ---- transfers ------------------------------------------------------------- */

/* A transfer being prepared. The host creates `easy` with its defaults
 * already set: CURLOPT_NOSIGNAL, CURLOPT_TIMEOUT_MS and
 * CURLOPT_CONNECTTIMEOUT_MS from the channel's timeout, no redirects, only
 * the http, https, smtp and smtps protocols, and write/header callbacks that
 * collect the response (do not replace them). When the transfer starts the
 * host sets CURLOPT_SOCKOPTFUNCTION and CURLOPT_CLOSESOCKETFUNCTION (it
 * watches the connections' sockets between transfers); a plugin's own
 * setting of those two is replaced.
 * The plugin sets the URL, method, body and headers with curl_easy_setopt()
 * and stores what it allocated in the fields below; the host frees them
 * after the transfer finishes, whatever happens. */
typedef struct cad_plugin_transfer {
    CURL *easy;                    /* owned by the host */
    struct curl_slist *headers;    /* freed with curl_slist_free_all */
    struct curl_slist *recipients; /* SMTP CURLOPT_MAIL_RCPT; freed with curl_slist_free_all */
    curl_mime *mime;               /* freed with curl_mime_free */
    char *body;                    /* malloc'd request body; freed with free */
    void *data;                    /* the plugin's own per-transfer state, handed back in the
                                      response and released with descriptor->release */
} cad_plugin_transfer_t;

/* A finished transfer, given to interpret(). Owned by the host; valid for
 * the duration of the call. */
typedef struct cad_plugin_response {
    uint32_t struct_size;
    CURLcode result;     /* CURLE_OK when the protocol exchange completed */
    const char *error;   /* curl's error text, "" when none */
    long code;           /* HTTP status or last SMTP reply code; 0 when none was received */
    const char *headers; /* raw header block of the last response, NUL-terminated */
    size_t headers_len;
    const char *body; /* response body, NUL-terminated, at most CAD_PLUGIN_BODY_MAX bytes */
    size_t body_len;
    bool body_truncated;
    void *data; /* cad_plugin_transfer_t.data as set by prepare() */
} cad_plugin_response_t;

/* ---- the host API ------------------------------------------------------------ */

/* How render_as() escapes each value it inserts into a template (ABI 1.2).
 * The template's own text is never changed. */
enum cad_plugin_escape {
    CAD_PLUGIN_ESCAPE_NONE = 0,      /* values as they are (subject, text) */
    CAD_PLUGIN_ESCAPE_HTML,          /* & < > " ' as entities (an HTML part) */
    CAD_PLUGIN_ESCAPE_URI_COMPONENT, /* RFC 3986 percent-encoding of every byte outside
                                        A-Z a-z 0-9 - . _ ~ (a value put into a URL or
                                        into the address of a mailto: URI) */
};

/* The host's handle for one loaded channel; opaque to the plugin. */
typedef struct cad_plugin_env cad_plugin_env_t;

/* Log priorities: journald's. */
enum cad_plugin_log_level {
    CAD_PLUGIN_LOG_ERR = 3,
    CAD_PLUGIN_LOG_WARNING = 4,
    CAD_PLUGIN_LOG_NOTICE = 5,
    CAD_PLUGIN_LOG_INFO = 6,
    CAD_PLUGIN_LOG_DEBUG = 7,
};

/* Functions the host offers a plugin, passed to init(). Every function is
 * safe to call from send() on a thread-pool thread. */
typedef struct cad_plugin_api {
    uint32_t struct_size; /* sizeof(cad_plugin_api_t) of the host */
    uint32_t abi_major;
    uint32_t abi_minor;

    /* Logs one line prefixed with the plugin and channel names. Follow the
     * daemon's style: a sentence, then key=value fields; never a secret. */
    void (*log)(cad_plugin_env_t *env, int level, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

    /* The configured channel's name ("email", "crm") and address kind. */
    const char *(*channel_name)(cad_plugin_env_t *env);
    enum cad_plugin_address (*address_kind)(cad_plugin_env_t *env);
    /* The daemon's state directory (absolute); plugins that write files
     * resolve relative paths against it. */
    const char *(*state_dir)(cad_plugin_env_t *env);

    /* An option's value text (validated against the table, default applied);
     * NULL when neither set nor defaulted. The string lives as long as the
     * channel. */
    const char *(*option)(cad_plugin_env_t *env, const char *name);
    /* An INT option's value, or a DURATION option's value in seconds;
     * `fallback` when unset. */
    int64_t (*option_int)(cad_plugin_env_t *env, const char *name, int64_t fallback);
    /* A BOOL option's value; `fallback` when unset. */
    bool (*option_bool)(cad_plugin_env_t *env, const char *name, bool fallback);

    /* Reads the secret file named by SECRET_FILE option `name` (relative
     * names resolve in $CREDENTIALS_DIRECTORY when systemd set it, else in
     * the config's plugins.credentials_dir). On success returns 0 and
     * *out is a malloc'd NUL-terminated copy without the trailing newline,
     * *len its length; release it with free_secret, which wipes it. On
     * failure returns a negative number and writes a sentence naming the
     * option and the file (never its content) to err. */
    int (*read_secret)(cad_plugin_env_t *env, const char *name, char **out, size_t *len, char *err,
                       size_t err_size);
    void (*free_secret)(char *secret, size_t len);

    /* Renders a template ({{customer.name}}, {{content.url}}...: see
     * docs/plugins.md) against a touch; `html` escapes values for HTML.
     * Returns 0 and a malloc'd *out (free it), or a negative number and a
     * sentence naming the bad variable in err. */
    int (*render)(cad_plugin_env_t *env, const cad_plugin_touch_t *touch, const char *tmpl,
                  bool html, char **out, char *err, size_t err_size);

    /* Copies the value of response header `name` (case-insensitive, last
     * occurrence, surrounding blanks trimmed) into buf; returns buf, or NULL
     * when absent. */
    const char *(*header)(const cad_plugin_response_t *resp, const char *name, char *buf,
                          size_t size);
    /* Seconds to wait according to a Retry-After header (delta seconds or
     * an HTTP date); -1 when absent or unreadable. */
    int64_t (*retry_after)(const cad_plugin_response_t *resp);
    /* Wall clock, Unix seconds UTC. */
    int64_t (*now)(void);

    /* Since ABI 1.1 (api->abi_minor >= 1): true while the host only checks
     * the configuration (`cadenced --check`). init() then validates its
     * settings and secret files as usual, but creates no file or directory
     * and connects nowhere; shutdown() follows at once. */
    bool (*checking)(cad_plugin_env_t *env);

    /* Since ABI 1.2 (api->abi_minor >= 2): render() with a choice of
     * escaping; CAD_PLUGIN_ESCAPE_URI_COMPONENT renders a URL or address
     * template ("https://shop.example/u/{{customer.id}}") so any value
     * (a customer id "café büro") yields a valid URI. Same ownership and
     * errors as render(). */
    int (*render_as)(cad_plugin_env_t *env, const cad_plugin_touch_t *touch, const char *tmpl,
                     enum cad_plugin_escape escape, char **out, char *err, size_t err_size);
} cad_plugin_api_t;

/* ---- the descriptor ---------------------------------------------------------- */

typedef struct cad_plugin_descriptor {
    uint32_t abi_major;   /* CAD_PLUGIN_ABI_MAJOR */
    uint32_t abi_minor;   /* CAD_PLUGIN_ABI_MINOR */
    uint32_t struct_size; /* sizeof(cad_plugin_descriptor_t) */
    const char *name;     /* "webhook": must match the file name <name>.so */
    const char *description;
    const char *version;
    const cad_plugin_option_t *options; /* ends with {NULL}; may be NULL for none */

    /* Called once per configured channel after its settings passed the option
     * table. Keep `api` and `env` in the instance. Returns 0 and *instance, or
     * non-zero (by convention -1) with a sentence in err: the channel is then not
     * loaded and its touches stay queued. */
    int (*init)(const cad_plugin_api_t *api, cad_plugin_env_t *env, void **instance, char *err,
                size_t err_size);

    /* Transfer plugins: turns a touch into a libcurl transfer. Returns 0 to
     * start it, or non-zero after filling `out` (RETRY or PERMANENT), e.g.
     * when the contact has no address or a header would carry CR/LF. */
    int (*prepare)(void *instance, const cad_plugin_touch_t *touch, cad_plugin_transfer_t *xfer,
                   cad_plugin_outcome_t *out);
    /* Transfer plugins: maps a finished transfer to an outcome. */
    void (*interpret)(void *instance, const cad_plugin_touch_t *touch,
                      const cad_plugin_response_t *resp, cad_plugin_outcome_t *out);
    /* Optional: frees cad_plugin_transfer_t.data. */
    void (*release)(void *instance, void *data);

    /* Blocking plugins (instead of prepare/interpret): delivers one touch on a
     * thread-pool thread and fills `out`. Several send() calls of one instance
     * may run at once (up to the channel's concurrency). */
    void (*send)(void *instance, const cad_plugin_touch_t *touch, cad_plugin_outcome_t *out);

    /* Frees the instance; no transfer or send of it is running any more. */
    void (*shutdown)(void *instance);
} cad_plugin_descriptor_t;

/* The smallest descriptor size the host accepts for ABI 1.x. */
#define CAD_PLUGIN_DESCRIPTOR_MIN_SIZE                                                             \
    (offsetof(cad_plugin_descriptor_t, shutdown) + sizeof(void (*)(void *)))

#ifdef __cplusplus
}
#endif

#endif
