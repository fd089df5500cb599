/*
 * ratelimit.c — token buckets and a bounded map of them (see ratelimit.h).
 *
 * Refill is computed lazily from the elapsed time whenever a bucket is
 * looked at, so an idle bucket costs nothing. The map is a small open hash
 * table with chaining; when it holds more than max_keys buckets, every
 * bucket that is full again (it would be recreated identical) is removed.
 * If none is full the map grows anyway: correctness over a hard cap.
 */
#include "ratelimit.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define UNLIMITED_TOKENS 1e18

void cad_bucket_init(cad_bucket_t *b, double rate, double burst, int64_t now_ms)
{
    b->rate = rate > 0 ? rate : 0;
    b->burst = burst >= 1 ? burst : 1;
    b->tokens = b->burst;
    b->last_ms = now_ms;
}

bool cad_bucket_unlimited(const cad_bucket_t *b)
{
    return b->rate <= 0;
}

static void refill(cad_bucket_t *b, int64_t now_ms)
{
    if (now_ms > b->last_ms) {
        b->tokens += (double)(now_ms - b->last_ms) * b->rate / 1000.0;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
    }
    b->last_ms = now_ms;
}

void cad_bucket_configure(cad_bucket_t *b, double rate, double burst, int64_t now_ms)
{
    refill(b, now_ms);
    b->rate = rate > 0 ? rate : 0;
    b->burst = burst >= 1 ? burst : 1;
    if (b->tokens > b->burst)
        b->tokens = b->burst;
}

double cad_bucket_tokens(cad_bucket_t *b, int64_t now_ms)
{
    if (cad_bucket_unlimited(b))
        return UNLIMITED_TOKENS;
    refill(b, now_ms);
    return b->tokens;
}

bool cad_bucket_take(cad_bucket_t *b, int64_t now_ms)
{
    if (cad_bucket_unlimited(b))
        return true;
    refill(b, now_ms);
    if (b->tokens < 1.0)
        return false;
    b->tokens -= 1.0;
    return true;
}

void cad_bucket_give_back(cad_bucket_t *b)
{
    if (cad_bucket_unlimited(b))
        return;
    b->tokens += 1.0;
    if (b->tokens > b->burst)
        b->tokens = b->burst;
}

int64_t cad_bucket_wait_ms(cad_bucket_t *b, int64_t now_ms)
{
    if (cad_bucket_unlimited(b))
        return 0;
    refill(b, now_ms);
    if (b->tokens >= 1.0)
        return 0;
    double ms = (1.0 - b->tokens) * 1000.0 / b->rate;
    return (int64_t)ceil(ms);
}

int64_t cad_bucket_book_ms(cad_bucket_t *b, int64_t now_ms)
{
    if (cad_bucket_unlimited(b))
        return 0;
    refill(b, now_ms);
    b->tokens -= 1.0;
    if (b->tokens >= 0.0)
        return 0;
    return (int64_t)ceil(-b->tokens * 1000.0 / b->rate);
}

/* ---- the map ---------------------------------------------------------------- */

typedef struct entry {
    struct entry *next;
    cad_bucket_t bucket;
    char key[];
} entry_t;

struct cad_bucket_map {
    double rate, burst;
    size_t max_keys;
    size_t size;
    size_t n_slots;
    entry_t **slots;
};

cad_bucket_map_t *cad_bucket_map_new(double rate, double burst, size_t max_keys)
{
    cad_bucket_map_t *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->rate = rate;
    m->burst = burst;
    m->max_keys = max_keys ? max_keys : 1024;
    m->n_slots = 256;
    m->slots = calloc(m->n_slots, sizeof(*m->slots));
    if (!m->slots) {
        free(m);
        return NULL;
    }
    return m;
}

void cad_bucket_map_free(cad_bucket_map_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_slots; i++) {
        entry_t *e = m->slots[i];
        while (e) {
            entry_t *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->slots);
    free(m);
}

void cad_bucket_map_configure(cad_bucket_map_t *m, double rate, double burst, int64_t now_ms)
{
    m->rate = rate;
    m->burst = burst;
    for (size_t i = 0; i < m->n_slots; i++)
        for (entry_t *e = m->slots[i]; e; e = e->next)
            cad_bucket_configure(&e->bucket, rate, burst, now_ms);
}

static uint64_t hash_key(const char *key)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= (uint64_t)tolower(*p);
        h *= 1099511628211ull;
    }
    return h;
}

/* Drops every bucket that has refilled to its burst. */
static void prune(cad_bucket_map_t *m, int64_t now_ms)
{
    for (size_t i = 0; i < m->n_slots; i++) {
        entry_t **pp = &m->slots[i];
        while (*pp) {
            entry_t *e = *pp;
            if (cad_bucket_tokens(&e->bucket, now_ms) >= e->bucket.burst) {
                *pp = e->next;
                free(e);
                m->size--;
            } else {
                pp = &e->next;
            }
        }
    }
}

cad_bucket_t *cad_bucket_map_get(cad_bucket_map_t *m, const char *key, int64_t now_ms)
{
    if (m->rate <= 0 || !key)
        return NULL;
    uint64_t h = hash_key(key);
    entry_t *e = m->slots[h % m->n_slots];
    for (; e; e = e->next)
        if (strcasecmp(e->key, key) == 0)
            return &e->bucket;
    if (m->size >= m->max_keys)
        prune(m, now_ms);
    size_t len = strlen(key);
    e = malloc(sizeof(*e) + len + 1);
    if (!e)
        return NULL;
    memcpy(e->key, key, len + 1);
    cad_bucket_init(&e->bucket, m->rate, m->burst, now_ms);
    size_t slot = h % m->n_slots;
    e->next = m->slots[slot];
    m->slots[slot] = e;
    m->size++;
    return &e->bucket;
}

size_t cad_bucket_map_size(const cad_bucket_map_t *m)
{
    return m->size;
}
