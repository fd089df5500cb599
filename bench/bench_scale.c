/*
 * bench_scale.c — figures at scale: store ingest, cold start, calendar
 * memory and simulation speed, over N synthetic customers.
 *
 *   bench_scale [--customers N] [--sim-customers M] [--sim-days D] [--dir DIR]
 *
 * It generates N customers (each with two contacts of different roles, a
 * time zone, interests and a few events) into a fresh store through the
 * store API, then measures:
 *   ingest      rows written per second (customers + contacts + events)
 *   cold start  opening the store and rebuilding the calendar of N customers
 *   calendar    bytes of calendar memory per customer
 *   simulate    M customers x D days through the simulator
 * with the example playbook etc/cadenced.conf. It prints figures; it asserts
 * nothing (targets live in bench/README.md).
 */
#include "calendar.h"
#include "config.h"
#include "simulate.h"
#include "store.h"
#include "tz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static const char *const zones[] = {"America/Los_Angeles",
                                    "America/New_York",
                                    "Europe/London",
                                    "Europe/Berlin",
                                    "Asia/Tokyo",
                                    "Australia/Sydney",
                                    "UTC"};
static const char *const stages[] = {"onboarding", "active", "active",  "active",
                                     "at_risk",    "former", "prospect"};
static const char *const segments[] = {"default", "enterprise", "smb"};
static const char *const interests[] = {"reporting,automation",
                                        "integrations,security",
                                        "best_practices,community",
                                        "billing",
                                        "product_news,case_studies,reporting",
                                        "onboarding"};
static const char *const events[] = {"purchase", "project_completed", "feedback_received",
                                     "renewal_due", "invoice_issued"};

static void fail(const char *what, const char *err)
{
    fprintf(stderr, "bench_scale: %s: %s\n", what, err);
    exit(1);
}

/* Writes n customers into the store at path; returns rows written. */
static long generate(const char *path, long n, cad_time_t now)
{
    char err[CAD_ERRBUF];
    cad_store_t *st;
    if (cad_store_open(path, CAD_SYNC_NORMAL, &st, err) < 0)
        fail("open", err);
    long rows = 0;
    char id[32], cid[48], eid[48], email[128], phone[32];
    for (long i = 0; i < n; i++) {
        if (i % 5000 == 0 && cad_store_batch_begin(st, err) < 0)
            fail("begin", err);
        snprintf(id, sizeof(id), "cust-%07ld", i);
        cad_customer_input_t c = {
            .id = id,
            .name = id,
            .timezone = zones[i % CAD_ARRAY_LEN(zones)],
            .stage = stages[i % CAD_ARRAY_LEN(stages)],
            .segment = segments[i % CAD_ARRAY_LEN(segments)],
            .interests = interests[i % CAD_ARRAY_LEN(interests)],
            .created_at = now - (i % 700) * CAD_DAY,
        };
        int64_t key;
        if (cad_store_customer_upsert(st, &c, now, &key, err) < 0)
            fail("customer", err);
        rows++;
        for (int k = 0; k < 2; k++) {
            snprintf(cid, sizeof(cid), "%s-c%d", id, k);
            snprintf(email, sizeof(email), "person%d@%s.example.com", k, id);
            snprintf(phone, sizeof(phone), "+1415%07ld", (i * 2 + k) % 10000000);
            cad_contact_input_t ct = {
                .id = cid,
                .customer_id = id,
                .name = cid,
                .first_name = k ? "Sam" : "Alex",
                .roles = k ? "user" : "decision_maker,billing",
                .email = email,
                .phone = phone,
                .consent =
                    {{.kind = "email", .opted_in = true, .at = now, .source = "bench"},
                     {.kind = "sms", .opted_in = (i % 3) == 0, .at = now, .source = "bench"}},
            };
            if (cad_store_contact_upsert(st, &ct, now, err) < 0)
                fail("contact", err);
            rows++;
        }
        for (int k = 0; k < 2; k++) {
            snprintf(eid, sizeof(eid), "%s-e%d", id, k);
            cad_event_input_t ev = {
                .id = eid,
                .customer_id = id,
                .type = events[(i + k) % CAD_ARRAY_LEN(events)],
                .at = now - ((i * 7 + k * 13) % 60) * CAD_DAY,
            };
            if (cad_store_event_add(st, &ev, now, err) < 0)
                fail("event", err);
            rows++;
        }
        if ((i + 1) % 5000 == 0 || i + 1 == n)
            if (cad_store_batch_commit(st, err) < 0)
                fail("commit", err);
    }
    cad_store_close(st);
    return rows;
}

static void on_schedule(int64_t key, cad_time_t when, void *arg)
{
    cad_calendar_set(arg, key, when);
}

int main(int argc, char **argv)
{
    long customers = 1000000, sim_customers = 100000;
    int sim_days = 90;
    const char *dir = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--customers"))
            customers = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--sim-customers"))
            sim_customers = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--sim-days"))
            sim_days = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dir"))
            dir = argv[i + 1];
    }
    char tmpl[] = "/tmp/cadence-bench-XXXXXX";
    bool own_dir = !dir;
    if (!dir && !(dir = mkdtemp(tmpl)))
        fail("mkdtemp", "cannot create a temporary directory");
    char err[CAD_ERRBUF], cfg_path[1024], db[1024], sim_db[1024];
    snprintf(cfg_path, sizeof(cfg_path), "%s/etc/cadenced.conf", CADENCE_SOURCE_DIR);
    cad_config_t *cfg;
    if (cad_config_load(cfg_path, &cfg, stderr) < 0)
        fail("config", cfg_path);
    cad_time_t now = (cad_time_t)time(NULL);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    printf("machine: %ld cores\n", cores);

    struct timespec t0;
    if (customers > 0) {
        snprintf(db, sizeof(db), "%s/scale.db", dir);
        unlink(db);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        long rows = generate(db, customers, now);
        double s = seconds_since(&t0);
        printf("ingest: %ld customers, %ld rows in %.2f s = %.0f rows/s (store API, batches of "
               "5000 customers)\n",
               customers, rows, s, rows / s);

        clock_gettime(CLOCK_MONOTONIC, &t0);
        cad_store_t *st;
        if (cad_store_open(db, CAD_SYNC_FULL, &st, err) < 0)
            fail("reopen", err);
        cad_calendar_t cal;
        cad_calendar_init(&cal);
        cad_calendar_reserve(&cal, (size_t)customers, customers + 1);
        if (cad_store_schedule_foreach(st, on_schedule, &cal, err) < 0)
            fail("schedule", err);
        s = seconds_since(&t0);
        printf("cold start: %zu customers into the calendar in %.2f s (target <= 3 s)\n", cal.size,
               s);
        printf("calendar memory: %.1f bytes per customer (target <= 64)\n",
               (double)cad_calendar_memory(&cal) / (double)(cal.size ? cal.size : 1));
        cad_calendar_free(&cal);
        cad_store_close(st);
    }
    if (sim_customers > 0) {
        snprintf(sim_db, sizeof(sim_db), "%s/sim.db", dir);
        unlink(sim_db);
        generate(sim_db, sim_customers, now);
        FILE *devnull = fopen("/dev/null", "w");
        cad_simulate_options_t opt = {
            .db_path = sim_db, .start = now, .days = sim_days, .quiet = true};
        cad_simulate_result_t res;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (cad_simulate_run(cfg, &opt, devnull, &res, err) < 0)
            fail("simulate", err);
        double s = seconds_since(&t0);
        fclose(devnull);
        printf("simulate: %ld customers x %d days in %.2f s (target <= 30 s): %lld evaluations "
               "(%.0f/s), %lld touches\n",
               sim_customers, sim_days, s, (long long)res.evaluations, res.evaluations / s,
               (long long)res.touches);
    }
    cad_config_free(cfg);
    cad_tz_registry_free();
    if (own_dir) {
        static const char *const files[] = {"scale.db", "scale.db-wal", "scale.db-shm",
                                            "sim.db",   "sim.db-wal",   "sim.db-shm"};
        char path[1100];
        for (size_t i = 0; i < CAD_ARRAY_LEN(files); i++) {
            snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
            unlink(path);
        }
        rmdir(dir);
    }
    return 0;
}
