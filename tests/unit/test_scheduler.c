/*
 * test_scheduler.c — the live calendar on a real libuv loop and a real store,
 * with the shipped example playbook and an injected clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "config.h"
#include "scheduler.h"
#include "store.h"
#include "tz.h"

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
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/cadence-sched-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof(f->db), "%s/cadence.db", f->dir);
    char path[1024];
    const char *src = getenv("CADENCE_SOURCE_DIR");
    snprintf(path, sizeof(path), "%s/etc/cadenced.conf", src ? src : ".");
    assert_int_equal(cad_config_load(path, &f->cfg, stderr), 0);
    char err[CAD_ERRBUF];
    assert_int_equal(cad_store_open(f->db, CAD_SYNC_NORMAL, &f->store, err), 0);
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
    unlink(f->db);
    char wal[160];
    snprintf(wal, sizeof(wal), "%s-wal", f->db);
    unlink(wal);
    snprintf(wal, sizeof(wal), "%s-shm", f->db);
    unlink(wal);
    rmdir(f->dir);
    free(f);
    cad_tz_registry_free();
    return 0;
}

/* A customer in Europe/London with a billing contact and an invoice event:
 * the transactional invoice_notice is due at once. */
static void add_customer(fixture_t *f, int i, bool with_invoice)
{
    char err[CAD_ERRBUF], id[32], cid[40], eid[40], email[64];
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
    assert_int_equal(cad_store_customer_upsert(f->store, &c, fake_now, &key, err), 0);
    cad_contact_input_t ct = {
        .id = cid,
        .customer_id = id,
        .name = "Pat Billing",
        .first_name = "Pat",
        .roles = "billing",
        .email = email,
        .consent = {{.kind = "email", .opted_in = true, .at = fake_now, .source = "test"}},
    };
    assert_int_equal(cad_store_contact_upsert(f->store, &ct, fake_now, err), 0);
    if (with_invoice) {
        cad_event_input_t ev = {
            .id = eid, .customer_id = id, .type = "invoice_issued", .at = fake_now - 3600};
        assert_int_equal(cad_store_event_add(f->store, &ev, fake_now, err), 0);
    }
}

static void start(fixture_t *f)
{
    char err[CAD_ERRBUF];
    assert_int_equal(cad_scheduler_new(&f->loop, f->store, f->cfg, fake_clock, &f->sched, err), 0);
    assert_int_equal(cad_scheduler_start(f->sched), 0);
}

static int64_t queued(fixture_t *f)
{
    cad_store_counts_t counts;
    char err[CAD_ERRBUF];
    assert_int_equal(cad_store_counts(f->store, &counts, err), 0);
    return counts.outbox[CAD_OUTBOX_QUEUED];
}

static void test_scheduler_rebuilds_the_calendar_from_the_store(void **state)
{
    fixture_t *f = *state;
    for (int i = 0; i < 7; i++)
        add_customer(f, i, false);
    start(f);
    cad_scheduler_stats_t st;
    cad_scheduler_get_stats(f->sched, &st);
    assert_int_equal(st.customers, 7);
    assert_true(st.next_due <= fake_now);
    assert_int_equal(st.evaluations, 0);
}

static void test_scheduler_decides_a_due_touch_into_the_outbox(void **state)
{
    fixture_t *f = *state;
    add_customer(f, 1, true);
    start(f);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    cad_scheduler_stats_t st;
    cad_scheduler_get_stats(f->sched, &st);
    assert_int_equal(st.evaluations, 1);
    assert_int_equal(st.touches_decided, 1);
    assert_int_equal(queued(f), 1);
    /* The customer is rescheduled in the future, not re-evaluated in a spin. */
    assert_true(st.next_due > fake_now);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    cad_scheduler_get_stats(f->sched, &st);
    assert_int_equal(st.evaluations, 1);
}

static void test_scheduler_evaluates_in_bounded_batches_per_loop_turn(void **state)
{
    fixture_t *f = *state;
    f->cfg->batch_size = 10;
    for (int i = 0; i < 25; i++)
        add_customer(f, i, true);
    start(f);
    cad_scheduler_stats_t st;
    uv_run(&f->loop, UV_RUN_ONCE);
    cad_scheduler_get_stats(f->sched, &st);
    assert_int_equal(st.evaluations, 10);
    uv_run(&f->loop, UV_RUN_ONCE);
    cad_scheduler_get_stats(f->sched, &st);
    assert_int_equal(st.evaluations, 20);
    uv_run(&f->loop, UV_RUN_ONCE);
    cad_scheduler_get_stats(f->sched, &st);
    assert_int_equal(st.evaluations, 25);
    assert_int_equal(queued(f), 25);
}

static void test_scheduler_reevaluates_a_changed_customer_at_once(void **state)
{
    fixture_t *f = *state;
    add_customer(f, 2, false);
    start(f);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(queued(f), 0);
    char err[CAD_ERRBUF];
    cad_event_input_t ev = {
        .id = "late-invoice", .customer_id = "cust-002", .type = "invoice_issued", .at = fake_now};
    assert_int_equal(cad_store_event_add(f->store, &ev, fake_now, err), 0);
    int64_t key;
    assert_int_equal(cad_store_customer_key(f->store, "cust-002", &key, err), 0);
    cad_scheduler_customer_changed(f->sched, key);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(queued(f), 1);
}

static void test_scheduler_rolls_back_a_failed_batch_and_retries_later(void **state)
{
    fixture_t *f = *state;
    enum { N = 40 };
    for (int i = 0; i < N; i++)
        add_customer(f, i, true);
    char err[CAD_ERRBUF];
    /* A "full disk": the database may not grow past its current size, and
     * forty decisions with their traces need new pages. */
    assert_int_equal(cad_store_limit_size(f->store, 1, err), 0);
    start(f);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    cad_scheduler_stats_t st;
    cad_scheduler_get_stats(f->sched, &st);
    assert_true(st.errors >= 1);
    assert_int_equal(queued(f), 0);
    assert_int_equal(st.customers, N); /* nobody lost from the calendar */
    /* Evaluations pause rather than fail through the whole calendar. */
    int64_t errors = st.errors;
    uv_run(&f->loop, UV_RUN_NOWAIT);
    cad_scheduler_get_stats(f->sched, &st);
    assert_int_equal(st.errors, errors);
    assert_int_equal(st.evaluations, 0);
    /* The disk has room again and a minute has passed: decided once each. */
    assert_int_equal(cad_store_limit_size(f->store, 0, err), 0);
    fake_now += 61;
    cad_scheduler_customer_changed(f->sched, 1); /* re-arm now rather than in a minute */
    for (int i = 0; i < 3; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(queued(f), N);
    cad_scheduler_get_stats(f->sched, &st);
    assert_int_equal(st.touches_decided, N);
}

static int count_rows(fixture_t *f, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int n = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

static void test_scheduler_records_the_content_library(void **state)
{
    fixture_t *f = *state;
    start(f);
    int n = f->cfg->playbook.n_content;
    assert_true(n > 1);
    assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM content WHERE in_library = 1"), n);
    assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM content WHERE topics <> ''"), n);
    /* A reload whose library lost its last item keeps the item, retired. */
    f->cfg->playbook.n_content--;
    cad_scheduler_set_config(f->sched, f->cfg);
    f->cfg->playbook.n_content++;
    assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM content WHERE in_library = 1"), n - 1);
    assert_int_equal(count_rows(f, "SELECT COUNT(*) FROM content WHERE in_library = 0"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_scheduler_rebuilds_the_calendar_from_the_store, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_scheduler_decides_a_due_touch_into_the_outbox, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_scheduler_evaluates_in_bounded_batches_per_loop_turn,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_scheduler_reevaluates_a_changed_customer_at_once,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_scheduler_rolls_back_a_failed_batch_and_retries_later,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_scheduler_records_the_content_library, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("scheduler", tests, NULL, NULL);
}
