/*
 * config.h — cadenced.conf, loaded and validated.
 *
 * cad_config_load() reads a libconfig file (with @include) and returns the
 * whole configuration or every error it found, each as "FILE:LINE: message".
 * Unknown keys, wrong types, out-of-range values, bad durations, clock times
 * and time zones are errors: a typo never passes silently. The config owns
 * the playbook (playbook.h) the engine reads.
 */
#ifndef CADENCE_CONFIG_H
#define CADENCE_CONFIG_H

#include "common.h"
#include "playbook.h"

#include <stdio.h>

enum cad_log_level {
    CAD_LOG_ERR = 3, /* journald priorities */
    CAD_LOG_WARNING = 4,
    CAD_LOG_NOTICE = 5,
    CAD_LOG_INFO = 6,
    CAD_LOG_DEBUG = 7,
};

enum cad_store_sync {
    CAD_SYNC_FULL = 0, /* every commit fsynced: nothing acknowledged is lost on power loss */
    CAD_SYNC_NORMAL,   /* WAL NORMAL: the last commits may be lost on power loss, never corrupt */
};

/* Access rule of the control socket: a peer uid or gid and the role it gets. */
typedef struct cad_access_rule {
    bool is_group;
    uint32_t id;
    bool admin; /* false: read-only queries */
} cad_access_rule_t;

/* A plugin option as written in the channel's config group, kept for the
 * plugin host to hand to the plugin (which validates its own keys). */
typedef struct cad_channel_setting {
    char *name;  /* owned */
    char *value; /* owned; numbers and booleans as text */
    int line;
} cad_channel_setting_t;

typedef struct cad_channel_config {
    cad_channel_setting_t *settings; /* owned */
    int n_settings;
    uint32_t concurrency;   /* transfers in flight at once */
    int64_t timeout;        /* seconds per transfer */
    uint32_t max_attempts;  /* before dead */
    int64_t max_age;        /* seconds from decision to dead */
    double rate_per_second; /* token bucket refill, 0 = unlimited */
    uint32_t burst;
    /* Retries (dispatch.h): -1 = by plugin (webhook: Standard Webhooks,
     * others exponential), else enum cad_backoff_kind. */
    int retry_schedule;
    int64_t retry_base; /* seconds: first exponential ceiling */
    int64_t retry_cap;  /* seconds: largest exponential ceiling */
    /* Shared limits: channels with the same plugin and account share one
     * bucket (the provider's rate per account); "" = no shared account. */
    char account[64];
    double account_rate; /* touches per second for the account, 0 = unlimited */
    uint32_t account_burst;
    uint32_t domain_per_minute; /* touches per minute to one recipient mail domain, 0 = any */
    uint32_t circuit_threshold; /* consecutive failures that open the circuit, 0 = never */
    int64_t circuit_interval;   /* seconds before an open circuit is probed */
} cad_channel_config_t;

typedef struct cad_config {
    char *path; /* owned: the main file as given */
    /* store */
    char *state_dir; /* owned: where cadence.db lives */
    enum cad_store_sync sync;
    int64_t commit_interval_ms; /* group commit: longest wait before a batch commits */
    /* control */
    char *socket_path;         /* owned */
    uint32_t socket_mode;      /* default 0660 */
    cad_access_rule_t *access; /* owned */
    int n_access;
    uint32_t max_line; /* longest request line in bytes */
    uint32_t max_clients;
    /* logging */
    enum cad_log_level log_level;
    /* plugins */
    char *plugin_dir;      /* owned */
    char *credentials_dir; /* owned, may be NULL: where secret files are looked up */
    /* engine */
    uint32_t batch_size; /* customers evaluated per loop turn */
    int64_t shutdown_timeout_ms;
    /* dispatch: global caps over every channel */
    double dispatch_rate; /* touches per second, 0 = unlimited */
    uint32_t dispatch_burst;
    uint32_t dispatch_concurrency; /* transfers in flight over all channels */
    char *default_timezone;        /* owned: IANA zone of customers that name none ("UTC") */
    /* channel settings, indexed like playbook.channels */
    cad_channel_config_t channel_config[CAD_MAX_CHANNELS];
    cad_playbook_t playbook;
} cad_config_t;

/* Loads and validates `path`. On success returns 0 and *out is a new config
 * (free with cad_config_free). On failure returns -CAD_EINVAL (or -CAD_EIO)
 * and writes every error, one "FILE:LINE: message" per line, to `errors`
 * (which may be NULL); *out is NULL. */
int cad_config_load(const char *path, cad_config_t **out, FILE *errors);

/* Frees a config and everything it owns. NULL-safe. */
void cad_config_free(cad_config_t *cfg);

/* Looks up a channel setting's value; NULL when absent. */
const char *cad_config_channel_setting(const cad_config_t *cfg, int channel, const char *name);

/* Parses "debug", "info", "notice", "warning", "err"; -1 when unknown. */
int cad_log_level_parse(const char *name);

#endif
