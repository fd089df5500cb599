/*
 * backoff.h — when a failed touch is tried again.
 *
 * Two schedules. Exponential with full jitter (the default): the n-th retry
 * waits a uniformly random time in [0, min(cap, base * 2^(n-1))], so a
 * thousand touches failing together do not come back together. The Standard
 * Webhooks schedule (the default for webhook channels): after the first
 * failure 5 s, then 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h, each
 * stretched by up to 10% of jitter; after the last step there is no retry.
 *
 * Pure functions of their inputs and a caller-owned random state, so tests
 * drive them with a fixed seed. No allocation.
 */
#ifndef CADENCE_BACKOFF_H
#define CADENCE_BACKOFF_H

#include <stdint.h>

enum cad_backoff_kind {
    CAD_BACKOFF_EXPONENTIAL = 0,   /* full jitter between 0 and min(cap, base * 2^(n-1)) */
    CAD_BACKOFF_STANDARD_WEBHOOKS, /* 5s, 5m, 30m, 2h, 5h, 10h, 14h, 20h, 24h (+ <=10% jitter) */
};

typedef struct cad_backoff {
    enum cad_backoff_kind kind;
    int64_t base_ms; /* exponential: first ceiling; <= 0 means 1000 */
    int64_t cap_ms;  /* exponential: largest ceiling; < base means base */
} cad_backoff_t;

/* Number of retries the Standard Webhooks schedule allows (9: ten attempts). */
#define CAD_BACKOFF_WEBHOOK_STEPS 9

/* Milliseconds to wait before the next attempt after `failed` attempts
 * (failed >= 1), or -1 when the schedule allows no further attempt (only the
 * Standard Webhooks schedule ends; max_attempts is the caller's business).
 * `rng` is a non-zero xorshift state, advanced. */
int64_t cad_backoff_delay_ms(const cad_backoff_t *b, int failed, uint64_t *rng);

/* The wait honouring a provider's Retry-After (seconds, <= 0 = none): the
 * larger of the schedule's delay and the provider's, in ms. -1 passes
 * through (no further attempt). */
int64_t cad_backoff_with_retry_after(int64_t delay_ms, int64_t retry_after_s);

/* A uniformly distributed 64-bit number from a xorshift64* state (which must
 * not be 0; 0 is replaced by a constant). */
uint64_t cad_backoff_random(uint64_t *rng);

/* Parses "exponential" or "standard-webhooks"; -1 when unknown. */
int cad_backoff_kind_parse(const char *name);
/* "exponential" or "standard-webhooks"; static. */
const char *cad_backoff_kind_name(enum cad_backoff_kind kind);

#endif
