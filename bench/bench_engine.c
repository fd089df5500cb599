/*
 * bench_engine.c — engine evaluations per second on one core.
 *
 * Builds the example playbook (tests/unit/engine_fixture.h) and N synthetic
 * customers (default 1,000,000) from a seeded PRNG: a mix of stages, five
 * time zones, two to four contacts, up to eight events and up to twenty
 * history rows over the last months. Customers are generated in blocks of
 * 10,000; only the cad_engine_decide() calls are timed. Prints evaluations
 * per second, nanoseconds per evaluation and how the verdicts fell, so a
 * change that makes the engine faster by deciding less shows up too.
 *
 * Usage: bench_engine [customers]
 */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "engine_fixture.h"

#define BLOCK        10000
#define MAX_CONTACTS 4
#define MAX_EVENTS   8
#define MAX_HISTORY  20

static uint64_t rng_state = UINT64_C(0x2545f4914f6cdd1d);

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int64_t rng_range(int64_t lo, int64_t hi)
{
    return lo + (int64_t)(rng() % (uint64_t)(hi - lo + 1));
}

typedef struct block {
    char ids[BLOCK][24];
    cad_snapshot_t snaps[BLOCK];
    cad_contact_t contacts[BLOCK][MAX_CONTACTS];
    cad_event_t events[BLOCK][MAX_EVENTS];
    cad_history_t history[BLOCK][MAX_HISTORY];
} block_t;

static int cmp_event(const void *a, const void *b)
{
    const cad_event_t *x = a, *y = b;
    return (x->at > y->at) - (x->at < y->at);
}

static int cmp_history(const void *a, const void *b)
{
    const cad_history_t *x = a, *y = b;
    return (x->at > y->at) - (x->at < y->at);
}

static void make_customer(block_t *b, int i, long serial, const cad_playbook_t *pb,
                          const cad_tz_t *const *zones, cad_time_t now)
{
    static const enum cad_stage stages[] = {
        CAD_STAGE_ACTIVE,  CAD_STAGE_ACTIVE, CAD_STAGE_ACTIVE,   CAD_STAGE_ONBOARDING,
        CAD_STAGE_AT_RISK, CAD_STAGE_FORMER, CAD_STAGE_PROSPECT, CAD_STAGE_ACTIVE};
    static const uint32_t roles[] = {FX_ROLE(CAD_ROLE_DECISION_MAKER), FX_ROLE(CAD_ROLE_USER),
                                     FX_ROLE(CAD_ROLE_BILLING), FX_ROLE(CAD_ROLE_CHAMPION)};
    cad_snapshot_t *s = &b->snaps[i];
    snprintf(b->ids[i], sizeof(b->ids[i]), "cust-%07ld", serial);
    s->customer = (cad_customer_t){.key = serial,
                                   .id = b->ids[i],
                                   .stage = stages[rng() % 8],
                                   .policy = (int)(rng() % 3),
                                   .interests = rng() & 0x3ff & rng(),
                                   .tz = zones[rng() % 5],
                                   .paused = rng() % 100 == 0,
                                   .created_at = now - rng_range(5, 800) * CAD_DAY};
    int nc = (int)rng_range(2, MAX_CONTACTS);
    for (int k = 0; k < nc; k++)
        b->contacts[i][k] = (cad_contact_t){
            .key = k,
            .id = "contact",
            .roles = roles[k % 4] | (rng() % 4 == 0 ? roles[rng() % 4] : 0),
            .reachable = (uint16_t)((rng() % 10 ? FX_CH(FX_EMAIL) : 0) |
                                    (rng() % 3 ? 0 : FX_CH(FX_SMS)) | FX_CH(FX_CRM))};
    int ne = (int)rng_range(0, MAX_EVENTS);
    for (int k = 0; k < ne; k++)
        b->events[i][k] = (cad_event_t){.key = serial * 16 + k,
                                        .id = "event",
                                        .type = (int)(rng() % 9),
                                        .at = now - rng_range(60, 120 * CAD_DAY)};
    qsort(b->events[i], (size_t)ne, sizeof(cad_event_t), cmp_event);
    int nh = (int)rng_range(0, MAX_HISTORY);
    for (int k = 0; k < nh; k++) {
        int r = (int)(rng() % (uint64_t)pb->n_rules);
        const cad_rule_t *rule = &pb->rules[r];
        int64_t key = ne && rule->trigger == CAD_TRIGGER_EVENT ? b->events[i][rng() % ne].key
                                                               : (int64_t)(rng() % 8);
        b->history[i][k] = (cad_history_t){
            .rule = r,
            .purpose = rule->purpose,
            .channel = rule->channels[0],
            .at = now - rng_range(3600, 200 * CAD_DAY),
            .trigger_key = key,
            .content = rule->use_library ? (int)(rng() % (uint64_t)pb->n_content) : -1,
            .state = rng() % 10 == 0 ? CAD_TOUCH_DROPPED : CAD_TOUCH_DELIVERED};
    }
    qsort(b->history[i], (size_t)nh, sizeof(cad_history_t), cmp_history);
    s->contacts = b->contacts[i];
    s->n_contacts = nc;
    s->events = b->events[i];
    s->n_events = ne;
    s->history = b->history[i];
    s->n_history = nh;
}

static double seconds(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 1000000;
    if (n <= 0 || n > 100000000) {
        fprintf(stderr, "bench_engine: customers must be 1..100000000, got \"%s\"\n", argv[1]);
        return 2;
    }
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    sched_setaffinity(0, sizeof(one), &one); /* one core; best effort */

    cad_playbook_t pb;
    fx_playbook_example(&pb);
    static const char *const names[] = {"Europe/London", "America/Los_Angeles", "America/New_York",
                                        "Europe/Berlin", "Asia/Tokyo"};
    const cad_tz_t *zones[5];
    for (int z = 0; z < 5; z++) {
        char err[CAD_ERRBUF];
        zones[z] = cad_tz_get(names[z], err);
        if (!zones[z]) {
            fprintf(stderr, "bench_engine: %s\n", err);
            return 1;
        }
    }
    block_t *b = malloc(sizeof(*b));
    if (!b) {
        fprintf(stderr, "bench_engine: out of memory for a block of %d customers\n", BLOCK);
        return 1;
    }
    cad_verdict_t verdicts[FX_RULE_COUNT];
    long kinds[5] = {0}, reasons[CAD_REASON_COUNT] = {0}, chosen = 0, alerts = 0;
    long total_history = 0;
    double timed = 0.0;
    const cad_time_t now = FX_T0;
    for (long done = 0; done < n; done += BLOCK) {
        int m = n - done < BLOCK ? (int)(n - done) : BLOCK;
        for (int i = 0; i < m; i++) {
            make_customer(b, i, done + i, &pb, zones, now);
            total_history += b->snaps[i].n_history;
        }
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < m; i++) {
            cad_decision_t dec = {.verdicts = verdicts};
            /* evaluate each customer at a slightly different minute of the day */
            if (cad_engine_decide(&pb, &b->snaps[i], now + (i % 1440) * 60, &dec) != 0) {
                fprintf(stderr, "bench_engine: customer %s refused\n", b->ids[i]);
                return 1;
            }
            chosen += dec.chosen >= 0;
            alerts += dec.alerts != 0;
            for (int r = 0; r < dec.n_verdicts; r++) {
                kinds[dec.verdicts[r].kind]++;
                reasons[dec.verdicts[r].reason]++;
            }
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        timed += seconds(&t0, &t1);
    }
    printf("customers           %ld (rules %d, mean history rows %.1f)\n", n, pb.n_rules,
           (double)total_history / (double)n);
    printf("engine time         %.3f s on one core\n", timed);
    printf("evaluations/s       %.0f\n", (double)n / timed);
    printf("ns per evaluation   %.0f\n", timed * 1e9 / (double)n);
    printf("touches chosen      %ld (%.1f%%), customers with alerts %ld\n", chosen,
           100.0 * (double)chosen / (double)n, alerts);
    printf("verdicts            skip %ld, wait %ld, send %ld, defer %ld, suppress %ld\n",
           kinds[CAD_VERDICT_SKIP], kinds[CAD_VERDICT_WAIT], kinds[CAD_VERDICT_SEND],
           kinds[CAD_VERDICT_DEFER], kinds[CAD_VERDICT_SUPPRESS]);
    printf("reasons            ");
    for (int r = 0; r < CAD_REASON_COUNT; r++)
        if (reasons[r])
            printf(" %s=%ld", cad_reason_name(r), reasons[r]);
    printf("\n");
    free(b);
    cad_playbook_clear(&pb);
    cad_tz_registry_free();
    return 0;
}
