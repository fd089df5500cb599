/*
 * backoff.c — retry schedules (see backoff.h).
 *
 * Full jitter (a uniform draw between zero and the exponential ceiling)
 * spreads retries best of the usual variants: after an outage the queue
 * comes back as a smear, not a wave. The Standard Webhooks table is the one
 * receivers of that spec expect; its jitter only stretches a step (never
 * shortens it), so a receiver is never retried before the published time.
 */
#include "backoff.h"

#include <string.h>

static const int64_t webhook_steps_s[CAD_BACKOFF_WEBHOOK_STEPS] = {
    5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 14 * 3600, 20 * 3600, 24 * 3600,
};

uint64_t cad_backoff_random(uint64_t *rng)
{
    uint64_t x = *rng ? *rng : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [0, n]. */
static int64_t uniform(uint64_t *rng, int64_t n)
{
    if (n <= 0)
        return 0;
    return (int64_t)(cad_backoff_random(rng) % ((uint64_t)n + 1));
}

int64_t cad_backoff_delay_ms(const cad_backoff_t *b, int failed, uint64_t *rng)
{
    if (failed < 1)
        failed = 1;
    if (b->kind == CAD_BACKOFF_STANDARD_WEBHOOKS) {
        if (failed > CAD_BACKOFF_WEBHOOK_STEPS)
            return -1;
        int64_t step = webhook_steps_s[failed - 1] * 1000;
        return step + uniform(rng, step / 10);
    }
    int64_t base = b->base_ms > 0 ? b->base_ms : 1000;
    int64_t cap = b->cap_ms >= base ? b->cap_ms : base;
    int64_t ceiling = base;
    for (int i = 1; i < failed && ceiling < cap; i++)
        ceiling *= 2;
    if (ceiling > cap)
        ceiling = cap;
    return uniform(rng, ceiling);
}

int64_t cad_backoff_with_retry_after(int64_t delay_ms, int64_t retry_after_s)
{
    if (delay_ms < 0)
        return -1;
    if (retry_after_s <= 0)
        return delay_ms;
    int64_t asked = retry_after_s * 1000;
    return asked > delay_ms ? asked : delay_ms;
}

int cad_backoff_kind_parse(const char *name)
{
    if (!name)
        return -1;
    if (strcmp(name, "exponential") == 0)
        return CAD_BACKOFF_EXPONENTIAL;
    if (strcmp(name, "standard-webhooks") == 0)
        return CAD_BACKOFF_STANDARD_WEBHOOKS;
    return -1;
}

const char *cad_backoff_kind_name(enum cad_backoff_kind kind)
{
    return kind == CAD_BACKOFF_STANDARD_WEBHOOKS ? "standard-webhooks" : "exponential";
}
