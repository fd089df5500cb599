/*
 * test_fault_store.c — storage faults during decisions and dispatch: another
 * process holding SQLite's write lock, I/O errors (writes past a file-size
 * limit, as on a failing disk) and a full database (the store's size cap,
 * as on a full disk).
 *
 * Each test runs the real scheduler on a real loop and store with the
 * shipped example playbook and an injected clock (customers with a billing
 * contact and an invoice: the transactional invoice notice is due at once),
 * injects the fault, and checks the promise of SPEC §4 and §7: the fault
 * ends in an error that names it, nothing crashes, no decided touch is lost
 * or doubled, and the work completes once the fault clears.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "log.h"
#include "scheduler.h"
#include "store.h"
#include "tz.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define N_CUSTOMERS 6

static cad_time_t fake_now;

static cad_time_t fake_clock(void)
{
    return fake_now;
}

typedef struct fixture {
    char dir[64];
    char db[128];
    cad_config_t *cfg;
    cad_store_t *store;
    uv_loop_t loop;
    cad_scheduler_t *sched;
    char err[CAD_ERRBUF];
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/cadence-fault-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof(f->db), "%s/cadence.db", f->dir);
    char path[1024];
    const char *src = getenv("CADENCE_SOURCE_DIR");
    snprintf(path, sizeof(path), "%s/etc/cadenced.conf", src ? src : ".");
    assert_int_equal(cad_config_load(path, &f->cfg, stderr), 0);
    assert_int_equal(cad_store_open(f->db, CAD_SYNC_FULL, &f->store, f->err), 0);
    uv_loop_init(&f->loop);
    fake_now = 1795435200; /* 2026-11-23T09:20:00Z, a Monday */
    *state = f;
    return 0;
}

static void on_closed(void *arg)
{
    *(int *)arg = 1;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f->sched) {
        int closed = 0;
        cad_scheduler_close(f->sched, on_closed, &closed);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(closed, 1);
    }
    uv_loop_close(&f->loop);
    cad_store_close(f->store);
    cad_config_free(f->cfg);
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[160];
        snprintf(p, sizeof(p), "%s%s", f->db, suffix[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    cad_tz_registry_free();
    return 0;
}

/* A customer with a billing contact and an invoice issued an hour ago. */
static void add_customer(fixture_t *f, int i)
{
    char id[32], cid[40], eid[40], email[64];
    snprintf(id, sizeof(id), "cust-%03d", i);
    snprintf(cid, sizeof(cid), "%s-billing", id);
    snprintf(eid, sizeof(eid), "%s-invoice", id);
    snprintf(email, sizeof(email), "billing@%s.example.com", id);
    cad_customer_input_t c = {.id = id,
                              .name = id,
                              .timezone = "Europe/London",
                              .stage = "active",
                              .created_at = fake_now - 10 * CAD_DAY};
    int64_t key;
    assert_int_equal(cad_store_customer_upsert(f->store, &c, fake_now, &key, f->err), 0);
    cad_contact_input_t ct = {
        .id = cid,
        .customer_id = id,
        .name = "Pat Billing",
        .first_name = "Pat",
        .roles = "billing",
        .email = email,
        .consent = {{.kind = "email", .opted_in = true, .at = fake_now, .source = "test"}},
    };
    assert_int_equal(cad_store_contact_upsert(f->store, &ct, fake_now, f->err), 0);
    cad_event_input_t ev = {
        .id = eid, .customer_id = id, .type = "invoice_issued", .at = fake_now - 3600};
    assert_int_equal(cad_store_event_add(f->store, &ev, fake_now, f->err), 0);
}

static void start(fixture_t *f)
{
    for (int i = 0; i < N_CUSTOMERS; i++)
        add_customer(f, i);
    assert_int_equal(cad_scheduler_new(&f->loop, f->store, f->cfg, fake_clock, &f->sched, f->err),
                     0);
    assert_int_equal(cad_scheduler_start(f->sched), 0);
}

static cad_store_counts_t counts(fixture_t *f)
{
    cad_store_counts_t c;
    assert_int_equal(cad_store_counts(f->store, &c, f->err), 0);
    return c;
}

static cad_scheduler_stats_t stats(fixture_t *f)
{
    cad_scheduler_stats_t st;
    cad_scheduler_get_stats(f->sched, &st);
    return st;
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The clock moves past the scheduler's retry delay; the loop turns until
 * every customer has its touch (bounded). */
static void recover(fixture_t *f)
{
    fake_now += 61;
    cad_scheduler_customer_changed(f->sched, 1); /* re-arms the timer now */
    for (int i = 0; i < 20 && counts(f).outbox[CAD_OUTBOX_QUEUED] < N_CUSTOMERS; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* Every customer's touch is in the outbox exactly once, whatever happened. */
static void assert_one_touch_per_customer(fixture_t *f, enum cad_outbox_state state)
{
    cad_store_counts_t c = counts(f);
    assert_int_equal(c.outbox[state], N_CUSTOMERS);
    int64_t total = 0;
    for (int s = 0; s < 6; s++)
        total += c.outbox[s];
    assert_int_equal(total, N_CUSTOMERS);
}

/* ---- another writer holds the lock -------------------------------------- */

static void test_fault_busy_writer_defers_decisions_without_spinning_then_recovers(void **state)
{
    fixture_t *f = *state;
    sqlite3 *other;
    assert_int_equal(sqlite3_open(f->db, &other), SQLITE_OK);
    start(f);
    /* An operator's sqlite3 shell holds a write transaction open. */
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    uv_run(&f->loop, UV_RUN_NOWAIT); /* one attempt: waits out the busy timeout, then fails */
    cad_scheduler_stats_t st = stats(f);
    assert_true(st.errors >= 1);
    assert_int_equal(st.touches_decided, 0);
    assert_int_equal(counts(f).outbox[CAD_OUTBOX_QUEUED], 0);
    assert_int_equal(st.customers, N_CUSTOMERS); /* nobody dropped from the calendar */
    /* The failed attempt is not retried at once: the loop stays free for
     * sockets and signals instead of blocking on the lock again and again. */
    double t0 = seconds();
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_true(seconds() - t0 < 1.0);
    assert_int_equal(stats(f).errors, st.errors);
    /* The lock is released: every touch is decided, once. */
    assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    recover(f);
    assert_one_touch_per_customer(f, CAD_OUTBOX_QUEUED);
    assert_int_equal(stats(f).touches_decided, N_CUSTOMERS);
}

/* ---- I/O errors ----------------------------------------------------------- */

static struct rlimit saved_fsize;

/* From now on no file of this process may grow past one byte: every write
 * SQLite makes fails with EFBIG, as on a failing disk. */
static void io_errors_begin(void)
{
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved_fsize), 0);
    struct rlimit r = saved_fsize;
    r.rlim_cur = 1;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &r), 0);
}

static void io_errors_end(void)
{
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved_fsize), 0);
}

static void test_fault_io_errors_during_decisions_roll_back_then_recover(void **state)
{
    fixture_t *f = *state;
    start(f);
    io_errors_begin();
    uv_run(&f->loop, UV_RUN_NOWAIT);
    io_errors_end();
    cad_scheduler_stats_t st = stats(f);
    assert_true(st.errors >= 1);
    assert_int_equal(counts(f).outbox[CAD_OUTBOX_QUEUED], 0);
    assert_int_equal(st.customers, N_CUSTOMERS);
    recover(f);
    assert_one_touch_per_customer(f, CAD_OUTBOX_QUEUED);
}

/* ---- faults while dispatching --------------------------------------------- */

typedef struct claimed {
    int n;
    int64_t keys[N_CUSTOMERS];
    char idempotency[N_CUSTOMERS][128];
} claimed_t;

static void on_claim(const cad_outbox_touch_t *t, void *arg)
{
    claimed_t *c = arg;
    assert_true(c->n < N_CUSTOMERS);
    c->keys[c->n] = t->key;
    snprintf(c->idempotency[c->n], sizeof(c->idempotency[0]), "%s", t->idempotency_key);
    c->n++;
}

static bool same_keys(const claimed_t *a, const claimed_t *b)
{
    for (int i = 0; i < a->n; i++) {
        bool found = false;
        for (int j = 0; j < b->n && !found; j++)
            found = a->keys[i] == b->keys[j] && strcmp(a->idempotency[i], b->idempotency[j]) == 0;
        if (!found)
            return false;
    }
    return a->n == b->n;
}

static void test_fault_io_errors_while_recording_outcomes_lose_no_touch(void **state)
{
    fixture_t *f = *state;
    start(f);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_one_touch_per_customer(f, CAD_OUTBOX_QUEUED);

    /* A claim that cannot be written claims nothing. */
    claimed_t first = {0};
    io_errors_begin();
    int rc = cad_store_outbox_claim(f->store, fake_now, N_CUSTOMERS, on_claim, &first, f->err);
    io_errors_end();
    assert_int_equal(rc, -CAD_EIO);
    assert_non_null(strstr(f->err, "I/O") ? f->err : strstr(f->err, "disk"));
    assert_int_equal(first.n, 0);
    assert_one_touch_per_customer(f, CAD_OUTBOX_QUEUED);

    /* Claimed; the providers accept; recording "delivered" fails. */
    assert_int_equal(
        cad_store_outbox_claim(f->store, fake_now, N_CUSTOMERS, on_claim, &first, f->err),
        N_CUSTOMERS);
    io_errors_begin();
    for (int i = 0; i < first.n; i++) {
        f->err[0] = '\0';
        rc = cad_store_outbox_delivered(f->store, first.keys[i], "provider-1", fake_now, f->err);
        assert_int_equal(rc, -CAD_EIO);
        assert_true(f->err[0] != '\0');
    }
    io_errors_end();
    assert_one_touch_per_customer(f, CAD_OUTBOX_IN_FLIGHT);

    /* As after a crash: the touches in flight go back to the queue and are
     * sent again with the same idempotency keys, then recorded once. */
    assert_int_equal(cad_store_outbox_requeue_in_flight(f->store, fake_now, f->err), N_CUSTOMERS);
    claimed_t again = {0};
    assert_int_equal(
        cad_store_outbox_claim(f->store, fake_now, N_CUSTOMERS, on_claim, &again, f->err),
        N_CUSTOMERS);
    assert_true(same_keys(&first, &again));
    for (int i = 0; i < again.n; i++)
        assert_int_equal(
            cad_store_outbox_delivered(f->store, again.keys[i], "provider-1", fake_now, f->err), 0);
    assert_one_touch_per_customer(f, CAD_OUTBOX_DELIVERED);
}

static void test_fault_full_database_refuses_decisions_while_the_outbox_drains(void **state)
{
    fixture_t *f = *state;
    start(f);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_one_touch_per_customer(f, CAD_OUTBOX_QUEUED);
    /* A second wave of invoices arrives, and the disk is full. */
    for (int i = 0; i < N_CUSTOMERS; i++) {
        char id[32], eid[64];
        snprintf(id, sizeof(id), "cust-%03d", i);
        snprintf(eid, sizeof(eid), "%s-invoice-2", id);
        cad_event_input_t ev = {
            .id = eid, .customer_id = id, .type = "invoice_issued", .at = fake_now};
        assert_int_equal(cad_store_event_add(f->store, &ev, fake_now, f->err), 0);
    }
    assert_int_equal(cad_store_limit_size(f->store, 1, f->err), 0);
    int64_t errors_before = stats(f).errors;
    for (int64_t k = 1; k <= N_CUSTOMERS; k++)
        cad_scheduler_customer_changed(f->sched, k);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_true(stats(f).errors > errors_before);
    /* The first wave still goes out: claims and outcomes need no new pages. */
    claimed_t c = {0};
    int n = cad_store_outbox_claim(f->store, fake_now, N_CUSTOMERS, on_claim, &c, f->err);
    assert_int_equal(n, N_CUSTOMERS);
    for (int i = 0; i < c.n; i++) {
        int rc = cad_store_outbox_delivered(f->store, c.keys[i], "provider-1", fake_now, f->err);
        assert_true(rc == 0 || rc == -CAD_EFULL);
        if (rc == -CAD_EFULL)
            assert_non_null(strstr(f->err, "full"));
    }
    /* Room again: the second wave is decided, once per customer. */
    assert_int_equal(cad_store_limit_size(f->store, 0, f->err), 0);
    if (counts(f).outbox[CAD_OUTBOX_IN_FLIGHT] > 0) {
        cad_store_outbox_requeue_in_flight(f->store, fake_now, f->err);
        claimed_t r = {0};
        int m = cad_store_outbox_claim(f->store, fake_now, N_CUSTOMERS, on_claim, &r, f->err);
        for (int i = 0; i < m; i++)
            assert_int_equal(
                cad_store_outbox_delivered(f->store, r.keys[i], "provider-1", fake_now, f->err), 0);
    }
    fake_now += 61;
    cad_scheduler_customer_changed(f->sched, 1);
    for (int i = 0; i < 20 && counts(f).outbox[CAD_OUTBOX_QUEUED] < N_CUSTOMERS; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    cad_store_counts_t after = counts(f);
    assert_int_equal(after.outbox[CAD_OUTBOX_DELIVERED], N_CUSTOMERS);
    assert_int_equal(after.outbox[CAD_OUTBOX_QUEUED], N_CUSTOMERS);
}

int main(void)
{
    cad_log_set_level(CAD_LOG_ERR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_fault_busy_writer_defers_decisions_without_spinning_then_recovers, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_fault_io_errors_during_decisions_roll_back_then_recover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_io_errors_while_recording_outcomes_lose_no_touch,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_fault_full_database_refuses_decisions_while_the_outbox_drains, setup, teardown),
    };
    return cmocka_run_group_tests_name("fault_store", tests, NULL, NULL);
}
