/*
 * fault_plugin.c — channel plugins that misbehave while delivering, for the
 * fault-injection tests (tests/integration/test_fault_plugins.py). One
 * source, one fault per build, selected by a define:
 *
 *   FAULT_GARBAGE  send() fills the outcome with values no plugin may
 *                  return: an unknown kind and effect, a negative
 *                  retry_after, provider id and reason without their NUL.
 *   FAULT_HANG     send() does not return until the file named by
 *                  $CADENCE_FAULT_RELEASE exists (at most 120 s): a plugin
 *                  stuck on a dead peer without a timeout of its own.
 *   FAULT_SLOW     send() takes 1.5 s, then delivers: a slow provider,
 *                  each call well within a 2 s timeout.
 *   FAULT_SPOOF    send() asks for a retry with a reason that imitates the
 *                  host's own "not started: ..." (which counts no attempt).
 *   FAULT_CONTROLS send() fails permanently with a reason full of control
 *                  characters (a forged log line, terminal escapes) and an
 *                  unknown effect, or (odd touch ids) with no reason.
 *
 * Each loads and initialises like a well-behaved blocking plugin, so only
 * the fault explains what the host and the dispatcher do.
 */
#include <cadence/channel.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int fault_init(const cad_plugin_api_t *api, cad_plugin_env_t *env, void **instance,
                      char *err, size_t err_size)
{
    *instance = malloc(1);
    return *instance ? 0 : -1;
}

static void fault_send(void *instance, const cad_plugin_touch_t *touch, cad_plugin_outcome_t *out)
{
#ifdef FAULT_GARBAGE
    memset(out, 0x7a, sizeof *out); /* 'z' everywhere, strings unterminated */
    out->kind = (enum cad_outcome_kind)77;
    out->effect = (enum cad_outcome_effect)1234;
    out->retry_after = -5;
#endif
#ifdef FAULT_HANG
    const char *release = getenv("CADENCE_FAULT_RELEASE");
    for (int i = 0; i < 1200 && !(release && access(release, F_OK) == 0); i++) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    out->kind = CAD_OUTCOME_DELIVERED;
    strcpy(out->provider_id, "late");
#endif
#ifdef FAULT_SPOOF
    out->kind = CAD_OUTCOME_RETRY;
    strcpy(out->reason, "not started: a plugin pretending to be the host");
#endif
#ifdef FAULT_CONTROLS
    out->kind = CAD_OUTCOME_PERMANENT;
    if (touch->touch_id % 2 == 0) {
        strcpy(out->reason, "line1\n2026-01-01 00:00:00 error: forged\x1b[31m red\a\r");
        out->effect = (enum cad_outcome_effect)99;
    }
#endif
#ifdef FAULT_SLOW
    struct timespec ts = {1, 500 * 1000 * 1000};
    nanosleep(&ts, NULL);
    out->kind = CAD_OUTCOME_DELIVERED;
    strcpy(out->provider_id, "slow");
#endif
}

static void fault_shutdown(void *instance)
{
    free(instance);
}

CAD_PLUGIN_EXPORT const cad_plugin_descriptor_t cadence_channel_plugin = {
    .abi_major = CAD_PLUGIN_ABI_MAJOR,
    .abi_minor = CAD_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(cad_plugin_descriptor_t),
    .name = PLUGIN_NAME,
    .description = "a plugin with one fault while delivering, for tests",
    .version = "0",
    .options = NULL,
    .init = fault_init,
    .send = fault_send,
    .shutdown = fault_shutdown,
};
