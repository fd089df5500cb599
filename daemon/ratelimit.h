/*
 * ratelimit.h — token buckets for the dispatcher's rate limits.
 *
 * A bucket holds up to `burst` tokens and gains `rate` tokens per second;
 * each send takes one. Nothing sleeps: cad_bucket_wait_ms() says when the
 * next token is due and the dispatcher arms a timer for it. Time is the
 * caller's monotonic clock in milliseconds, so tests need no clock.
 *
 * cad_bucket_map_t keeps one bucket per key (a recipient's mail domain, a
 * provider account) with the same rate and burst, created on first use.
 * Buckets that have refilled completely carry no information and are
 * dropped when the map grows past its limit, so memory stays bounded however
 * many domains the customers use.
 */
#ifndef CADENCE_RATELIMIT_H
#define CADENCE_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cad_bucket {
    double rate;   /* tokens per second; 0 = unlimited */
    double burst;  /* capacity */
    double tokens; /* at last_ms */
    int64_t last_ms;
} cad_bucket_t;

/* Initialises a full bucket. rate <= 0 makes it unlimited; burst < 1 is 1. */
void cad_bucket_init(cad_bucket_t *b, double rate, double burst, int64_t now_ms);

/* Changes rate and burst (reload), keeping the tokens it has (at most the
 * new burst). */
void cad_bucket_configure(cad_bucket_t *b, double rate, double burst, int64_t now_ms);

/* True when the bucket never limits. */
bool cad_bucket_unlimited(const cad_bucket_t *b);

/* Tokens available now (refills first); a large number when unlimited. */
double cad_bucket_tokens(cad_bucket_t *b, int64_t now_ms);

/* Takes one token if there is one: true when taken. */
bool cad_bucket_take(cad_bucket_t *b, int64_t now_ms);

/* Gives one token back (a send that was not started after all). */
void cad_bucket_give_back(cad_bucket_t *b);

/* Milliseconds until a token is available: 0 when one is now. */
int64_t cad_bucket_wait_ms(cad_bucket_t *b, int64_t now_ms);

/* ---- a bucket per key ---------------------------------------------------- */

/* Books the next turn of a send that found no token: takes its token ahead
 * (the bucket goes into debt, so every later take and booking waits behind
 * it) and returns in how many ms that token is earned; 0 when unlimited or
 * a token was there. Turns come one token apart, in booking order. */
int64_t cad_bucket_book_ms(cad_bucket_t *b, int64_t now_ms);

typedef struct cad_bucket_map cad_bucket_map_t;

/* Creates a map whose buckets all have `rate` and `burst`; at most about
 * `max_keys` buckets are kept. Returns NULL when out of memory. Free with
 * cad_bucket_map_free. */
cad_bucket_map_t *cad_bucket_map_new(double rate, double burst, size_t max_keys);
void cad_bucket_map_free(cad_bucket_map_t *m);

/* Changes rate and burst of every bucket (reload). */
void cad_bucket_map_configure(cad_bucket_map_t *m, double rate, double burst, int64_t now_ms);

/* The bucket of `key` (compared case-insensitively, as mail domains are),
 * created full when new. NULL when out of memory or the map is unlimited
 * (rate 0). The pointer is valid until the next call on the map. */
cad_bucket_t *cad_bucket_map_get(cad_bucket_map_t *m, const char *key, int64_t now_ms);

/* Number of buckets held (tests). */
size_t cad_bucket_map_size(const cad_bucket_map_t *m);

#endif
