/*
 * bad_plugin.c — channel plugins the host must refuse, one defect each
 * (selected by a DEFECT_* define): a foreign ABI major, a descriptor smaller
 * than ABI 1.0's, no exported descriptor, an init that fails, no delivery
 * callback, a descriptor naming another plugin, an option whose default is
 * not of its type, and an option declared twice. Apart from its defect
 * each is a working blocking plugin, so only the defect explains a refusal.
 * PLUGIN_VERSION (default "0") tells builds of one plugin apart.
 */
#include <cadence/channel.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct held {
    const cad_plugin_api_t *api;
    cad_plugin_env_t *env;
};

static int bad_init(const cad_plugin_api_t *api, cad_plugin_env_t *env, void **instance, char *err,
                    size_t err_size)
{
#ifdef DEFECT_INIT_FAILS
    snprintf(err, err_size, "refusing to start: the fixture always fails");
    return -1;
#else
    /* Keeps what shutdown uses: a plugin may call the host API there. */
    struct held *h = malloc(sizeof *h);
    if (!h)
        return -1;
    h->api = api;
    h->env = env;
    *instance = h;
    return 0;
#endif
}

__attribute__((unused)) static void bad_send(void *instance, const cad_plugin_touch_t *touch,
                                             cad_plugin_outcome_t *out)
{
    out->kind = CAD_OUTCOME_DELIVERED;
    snprintf(out->provider_id, sizeof out->provider_id, "fixture-%lld", (long long)touch->touch_id);
}

static void bad_shutdown(void *instance)
{
    struct held *h = instance;
    /* The host API stays valid in shutdown, even when a reload has freed
     * the configuration the host was built from (ASan checks). */
    if (h && h->api->state_dir(h->env)[0] == '\0')
        abort();
    free(instance);
}

#ifdef DEFECT_NO_SYMBOL
#define DESCRIPTOR_NAME some_other_symbol
#else
#define DESCRIPTOR_NAME cadence_channel_plugin
#endif

#if defined(DEFECT_BAD_DEFAULT)
static const cad_plugin_option_t bad_options[] = {
    {.name = "retries", .type = CAD_OPTION_INT, .default_value = "abc"},
    {.name = NULL},
};
#elif defined(DEFECT_TWICE_DECLARED)
static const cad_plugin_option_t bad_options[] = {
    {.name = "url", .type = CAD_OPTION_STRING},
    {.name = "url", .type = CAD_OPTION_STRING},
    {.name = NULL},
};
#else
#define bad_options NULL
#endif

CAD_PLUGIN_EXPORT const cad_plugin_descriptor_t DESCRIPTOR_NAME = {
#ifdef DEFECT_BAD_ABI
    .abi_major = 99,
#else
    .abi_major = CAD_PLUGIN_ABI_MAJOR,
#endif
    .abi_minor = 0,
#ifdef DEFECT_SMALL_STRUCT
    .struct_size = 16,
#else
    .struct_size = sizeof(cad_plugin_descriptor_t),
#endif
#ifdef DEFECT_WRONG_NAME
    .name = "someone_else",
#else
    .name = PLUGIN_NAME,
#endif
    .description = "a plugin with one defect, for tests",
#ifdef PLUGIN_VERSION
    .version = PLUGIN_VERSION,
#else
    .version = "0",
#endif
    .options = bad_options,
    .init = bad_init,
#ifndef DEFECT_NO_CALLBACKS
    .send = bad_send,
#endif
    .shutdown = bad_shutdown,
};
