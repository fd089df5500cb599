/*
 * test_store.c — the SQLite store: schema and migrations, upserts, events,
 * snapshots, decisions, the outbox's state machine, traces and failures.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "engine.h"
#include "store.h"
#include "tz.h"

#define T0 ((cad_time_t)1767225600) /* 2026-01-01T00:00:00Z */

typedef struct fixture {
    char dir[64];
    char path[128];
    cad_store_t *st;
    cad_playbook_t pb;
    char err[CAD_ERRBUF];
} fixture_t;

enum { CH_EMAIL = 0, CH_SMS, CH_CRM };
enum { R_WELCOME = 0, R_REVIEW, R_ANNIVERSARY };

static void set_name(char dst[CAD_NAME_MAX], const char *src)
{
    snprintf(dst, CAD_NAME_MAX, "%s", src);
}

/* A small playbook: three channels (email, sms, a CRM task without an
 * address), two policies, three rules and one content item. */
static void make_playbook(cad_playbook_t *pb)
{
    memset(pb, 0, sizeof(*pb));
    cad_playbook_init_builtins(pb);
    set_name(pb->topics[0], "reporting");
    set_name(pb->topics[1], "security");
    pb->n_topics = 2;
    set_name(pb->channels[CH_EMAIL].name, "email");
    pb->channels[CH_EMAIL].address = CAD_ADDRESS_EMAIL;
    set_name(pb->channels[CH_SMS].name, "sms");
    pb->channels[CH_SMS].address = CAD_ADDRESS_PHONE;
    set_name(pb->channels[CH_CRM].name, "crm_task");
    pb->channels[CH_CRM].address = CAD_ADDRESS_NONE;
    pb->n_channels = 3;
    pb->policies = calloc(2, sizeof(cad_policy_t));
    set_name(pb->policies[0].name, "default");
    set_name(pb->policies[1].name, "enterprise");
    pb->n_policies = 2;
    pb->rules = calloc(3, sizeof(cad_rule_t));
    set_name(pb->rules[R_WELCOME].name, "welcome_guide");
    pb->rules[R_WELCOME].purpose = CAD_PURPOSE_VALUE;
    pb->rules[R_WELCOME].event_type = CAD_EVENT_PURCHASE;
    set_name(pb->rules[R_REVIEW].name, "review_request");
    pb->rules[R_REVIEW].purpose = CAD_PURPOSE_ASK;
    pb->rules[R_REVIEW].event_type = CAD_EVENT_PURCHASE;
    set_name(pb->rules[R_ANNIVERSARY].name, "anniversary_thanks");
    pb->rules[R_ANNIVERSARY].purpose = CAD_PURPOSE_APPRECIATION;
    pb->rules[R_ANNIVERSARY].trigger = CAD_TRIGGER_RECURRING;
    pb->n_rules = 3;
    pb->content = calloc(1, sizeof(cad_content_t));
    set_name(pb->content[0].id, "report-tips");
    pb->content[0].purpose = CAD_PURPOSE_VALUE;
    pb->n_content = 1;
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/cad-store-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/cadence.db", f->dir);
    make_playbook(&f->pb);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    cad_store_close(f->st);
    cad_playbook_clear(&f->pb);
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static cad_store_t *open_store(fixture_t *f)
{
    int r = cad_store_open(f->path, CAD_SYNC_FULL, &f->st, f->err);
    if (r != 0)
        fail_msg("open: %s", f->err);
    return f->st;
}

/* Runs a query on a second connection and returns the first column of the
 * first row as an integer (-1 when no row). */
static int64_t query_int(const fixture_t *f, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    int64_t v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

static int64_t add_customer(fixture_t *f, const char *id, const char *stage, const char *segment,
                            const char *interests)
{
    cad_customer_input_t in = {.id = id,
                               .name = id,
                               .timezone = "Europe/London",
                               .stage = stage,
                               .segment = segment,
                               .interests = interests,
                               .created_at = T0 - 400 * CAD_DAY};
    int64_t key = 0;
    if (cad_store_customer_upsert(f->st, &in, T0, &key, f->err) != 0)
        fail_msg("customer %s: %s", id, f->err);
    return key;
}

static void add_event(fixture_t *f, const char *id, const char *customer, const char *type,
                      cad_time_t at)
{
    cad_event_input_t ev = {.id = id, .customer_id = customer, .type = type, .at = at};
    if (cad_store_event_add(f->st, &ev, T0, f->err) != 0)
        fail_msg("event %s: %s", id, f->err);
}

/* ---- schema ------------------------------------------------------------- */

static void test_store_creates_current_schema_on_empty_file(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    assert_int_equal(cad_store_user_version(f->st), cad_store_schema_version());
    assert_true(cad_store_schema_version() >= 2);
    assert_string_equal(cad_store_path(f->st), f->path);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'alerts'"), 1);
    assert_int_equal(
        query_int(f, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'touches_state_due'"), 1);
    sqlite3 *db;
    sqlite3_open(f->path, &db);
    sqlite3_stmt *s;
    sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
    sqlite3_finalize(s);
    sqlite3_close(db);
    /* reopening an up-to-date database changes nothing */
    cad_store_close(f->st);
    f->st = NULL;
    open_store(f);
    assert_int_equal(cad_store_user_version(f->st), cad_store_schema_version());
}

static void test_store_migrates_v1_database_keeping_data(void **state)
{
    fixture_t *f = *state;
    const char *src = getenv("CADENCE_SOURCE_DIR");
    char fixture_path[512];
    snprintf(fixture_path, sizeof(fixture_path), "%s/tests/unit/data/store/schema_v1.sql",
             src ? src : ".");
    FILE *fp = fopen(fixture_path, "r");
    if (!fp)
        fail_msg("cannot read %s (set CADENCE_SOURCE_DIR)", fixture_path);
    static char sql[65536];
    size_t n = fread(sql, 1, sizeof(sql) - 1, fp);
    sql[n] = '\0';
    fclose(fp);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("fixture: %s", msg);
    sqlite3_close(db);
    assert_int_equal(query_int(f, "PRAGMA user_version"), 1);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'alerts'"), 0);

    open_store(f);
    assert_int_equal(cad_store_user_version(f->st), cad_store_schema_version());
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'alerts'"), 1);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'content'"), 1);
    assert_int_equal(
        query_int(f, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'touches_state_due'"), 1);
    /* v1 data survived and reads through the current API */
    cad_store_counts_t c;
    assert_int_equal(cad_store_counts(f->st, &c, f->err), 0);
    assert_int_equal(c.customers, 1);
    assert_int_equal(c.contacts, 1);
    assert_int_equal(c.events, 1);
    assert_int_equal(c.decisions, 1);
    assert_int_equal(c.outbox[CAD_OUTBOX_DELIVERED], 1);
    assert_int_equal(c.alerts_open, 0);
    int64_t key;
    assert_int_equal(cad_store_customer_key(f->st, "acme", &key, f->err), 0);
    cad_snapshot_buf_t buf = {0};
    cad_snapshot_t snap;
    assert_int_equal(cad_store_load_snapshot(f->st, &f->pb, key, &buf, &snap, f->err), 0);
    assert_string_equal(snap.customer.id, "acme");
    assert_int_equal(snap.customer.policy, 1);
    assert_int_equal(snap.customer.stage, CAD_STAGE_ACTIVE);
    assert_int_equal(snap.n_contacts, 1);
    assert_int_equal(snap.contacts[0].roles,
                     (1u << CAD_ROLE_DECISION_MAKER) | (1u << CAD_ROLE_CHAMPION));
    assert_int_equal(snap.n_history, 1);
    assert_int_equal(snap.history[0].state, CAD_TOUCH_DELIVERED);
    assert_int_equal(snap.history[0].rule, R_WELCOME);
    /* the new table works on the migrated file */
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM alerts"), 0);
    /* v6: the delivered touch has one transition, its state at the upgrade */
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM touch_transitions"), 1);
    assert_int_equal(
        query_int(f, "SELECT COUNT(*) FROM touch_transitions WHERE state = 'delivered'"), 1);
    cad_snapshot_buf_free(&buf);
}

static void test_store_refuses_newer_schema(void **state)
{
    fixture_t *f = *state;
    sqlite3 *db;
    sqlite3_open(f->path, &db);
    sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL);
    sqlite3_close(db);
    cad_store_t *st = NULL;
    assert_int_equal(cad_store_open(f->path, CAD_SYNC_FULL, &st, f->err), -CAD_ESTORE);
    assert_null(st);
    assert_non_null(strstr(f->err, "schema version 99"));
}

static void test_store_open_bad_path_names_it(void **state)
{
    fixture_t *f = *state;
    cad_store_t *st = NULL;
    assert_true(cad_store_open("/nonexistent-dir/x/cadence.db", CAD_SYNC_NORMAL, &st, f->err) < 0);
    assert_null(st);
    assert_non_null(strstr(f->err, "/nonexistent-dir/x/cadence.db"));
    assert_int_equal(cad_store_open("", CAD_SYNC_FULL, &st, f->err), -CAD_EINVAL);
}

/* ---- customers, contacts, events ---------------------------------------- */

static void test_store_customer_upsert_inserts_then_updates_given_fields(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    int64_t k1 = add_customer(f, "c1", "active", "enterprise", "reporting, security");
    assert_true(k1 > 0);
    /* update: only the stage; name, segment, interests stay */
    cad_customer_input_t up = {.id = "c1", .stage = "at_risk"};
    int64_t k2 = 0;
    assert_int_equal(cad_store_customer_upsert(f->st, &up, T0 + 100, &k2, f->err), 0);
    assert_int_equal(k1, k2);
    cad_snapshot_buf_t buf = {0};
    cad_snapshot_t snap;
    assert_int_equal(cad_store_load_snapshot(f->st, &f->pb, k1, &buf, &snap, f->err), 0);
    assert_int_equal(snap.customer.stage, CAD_STAGE_AT_RISK);
    assert_int_equal(snap.customer.policy, 1);
    assert_int_equal(snap.customer.interests, 3u);
    assert_int_equal(snap.customer.created_at, T0 - 400 * CAD_DAY);
    assert_string_equal(cad_tz_name(snap.customer.tz), "Europe/London");
    assert_int_equal(query_int(f, "SELECT next_eval FROM customers WHERE id = 'c1'"), T0 + 100);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM customers WHERE name = 'c1'"), 1);
    /* defaults for a bare customer */
    cad_customer_input_t bare = {.id = "c2"};
    int64_t k3;
    assert_int_equal(cad_store_customer_upsert(f->st, &bare, T0, &k3, f->err), 0);
    assert_int_equal(cad_store_load_snapshot(f->st, &f->pb, k3, &buf, &snap, f->err), 0);
    assert_int_equal(snap.customer.stage, CAD_STAGE_PROSPECT);
    assert_int_equal(snap.customer.policy, 0);
    assert_int_equal(snap.customer.created_at, T0);
    assert_string_equal(cad_tz_name(snap.customer.tz), "UTC");
    /* pause and resume */
    assert_int_equal(cad_store_customer_pause(f->st, "c2", true, T0 + 5, f->err), 0);
    assert_int_equal(cad_store_load_snapshot(f->st, &f->pb, k3, &buf, &snap, f->err), 0);
    assert_true(snap.customer.paused);
    assert_int_equal(cad_store_customer_pause(f->st, "nobody", true, T0, f->err), -CAD_ENOTFOUND);
    assert_non_null(strstr(f->err, "nobody"));
    cad_snapshot_buf_free(&buf);
}

static void test_store_customer_bad_fields_name_the_field(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    cad_customer_input_t in = {.id = "c1", .stage = "customer"};
    assert_int_equal(cad_store_customer_upsert(f->st, &in, T0, NULL, f->err), -CAD_EINVAL);
    assert_non_null(strstr(f->err, "field stage"));
    in = (cad_customer_input_t){.id = "c1", .timezone = "Mars/Olympus"};
    assert_int_equal(cad_store_customer_upsert(f->st, &in, T0, NULL, f->err), -CAD_EINVAL);
    assert_non_null(strstr(f->err, "field timezone"));
    in = (cad_customer_input_t){.id = "c1", .attributes = "[1,2]"};
    assert_int_equal(cad_store_customer_upsert(f->st, &in, T0, NULL, f->err), -CAD_EINVAL);
    assert_non_null(strstr(f->err, "field attributes"));
    in = (cad_customer_input_t){.id = ""};
    assert_int_equal(cad_store_customer_upsert(f->st, &in, T0, NULL, f->err), -CAD_EINVAL);
    assert_non_null(strstr(f->err, "id is required"));
    char longid[CAD_ID_MAX + 2];
    memset(longid, 'x', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    in = (cad_customer_input_t){.id = longid};
    assert_int_equal(cad_store_customer_upsert(f->st, &in, T0, NULL, f->err), -CAD_EINVAL);
    in = (cad_customer_input_t){.id = "bad\xff"};
    assert_int_equal(cad_store_customer_upsert(f->st, &in, T0, NULL, f->err), -CAD_EINVAL);
    assert_non_null(strstr(f->err, "UTF-8"));
    cad_store_counts_t c;
    assert_int_equal(cad_store_counts(f->st, &c, f->err), 0);
    assert_int_equal(c.customers, 0);
}

static void test_store_contact_needs_customer_and_valid_addresses(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    add_customer(f, "c1", "active", NULL, NULL);
    cad_contact_input_t in = {.id = "p1", .customer_id = "ghost", .email = "a@b.example"};
    assert_int_equal(cad_store_contact_upsert(f->st, &in, T0, f->err), -CAD_ENOTFOUND);
    assert_non_null(strstr(f->err, "ghost"));
    in = (cad_contact_input_t){.id = "p1", .customer_id = "c1", .email = "not-an-email"};
    assert_int_equal(cad_store_contact_upsert(f->st, &in, T0, f->err), -CAD_EINVAL);
    assert_non_null(strstr(f->err, "field email"));
    in = (cad_contact_input_t){.id = "p1", .customer_id = "c1", .phone = "07700 900123"};
    assert_int_equal(cad_store_contact_upsert(f->st, &in, T0, f->err), -CAD_EINVAL);
    assert_non_null(strstr(f->err, "field phone"));
    in = (cad_contact_input_t){.id = "p1", .customer_id = "c1", .first_name = "Ann\r\nBcc: x"};
    assert_int_equal(cad_store_contact_upsert(f->st, &in, T0, f->err), -CAD_EINVAL);
    assert_non_null(strstr(f->err, "field first_name"));
    in = (cad_contact_input_t){.id = "p1", .customer_id = "c1", .name = "Ann \xc3("};
    assert_int_equal(cad_store_contact_upsert(f->st, &in, T0, f->err), -CAD_EINVAL);
    assert_non_null(strstr(f->err, "field name"));
    in = (cad_contact_input_t){.id = "p1", .customer_id = "c1", .email = "Ann@B.example"};
    in.consent[0] = (cad_consent_input_t){.kind = "fax", .opted_in = true};
    assert_int_equal(cad_store_contact_upsert(f->st, &in, T0, f->err), -CAD_EINVAL);
    assert_non_null(strstr(f->err, "fax"));
    in.consent[0] = (cad_consent_input_t){.kind = "email", .opted_in = true};
    assert_int_equal(cad_store_contact_upsert(f->st, &in, T0, f->err), 0);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM contacts WHERE email = 'ann@b.example'"),
                     1);
    /* update keeps what is not given */
    cad_contact_input_t up = {.id = "p1", .customer_id = "c1", .roles = "user"};
    assert_int_equal(cad_store_contact_upsert(f->st, &up, T0, f->err), 0);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM contacts WHERE email = 'ann@b.example'"
                                  " AND roles = 'user'"),
                     1);
    assert_int_equal(
        cad_store_consent_set(f->st, "nobody", &(cad_consent_input_t){.kind = "sms"}, f->err),
        -CAD_ENOTFOUND);
    assert_int_equal(
        cad_store_consent_set(f->st, "p1",
                              &(cad_consent_input_t){.kind = "email", .opted_in = false, .at = T0},
                              f->err),
        0);
    assert_int_equal(query_int(f, "SELECT opted_in FROM consents WHERE kind = 'email'"), 0);
}

static void test_store_duplicate_event_is_eexist_and_changes_nothing(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    add_customer(f, "c1", "active", NULL, NULL);
    add_event(f, "ev-1", "c1", "purchase", T0 - CAD_DAY);
    cad_event_input_t again = {
        .id = "ev-1", .customer_id = "c1", .type = "churned", .at = T0, .data = "{\"x\":1}"};
    assert_int_equal(cad_store_event_add(f->st, &again, T0 + 50, f->err), -CAD_EEXIST);
    assert_non_null(strstr(f->err, "ev-1"));
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM events"), 1);
    assert_int_equal(query_int(f, "SELECT at FROM events WHERE id = 'ev-1'"), T0 - CAD_DAY);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM events WHERE type = 'purchase'"), 1);
    cad_event_input_t orphan = {.id = "ev-2", .customer_id = "ghost", .type = "purchase", .at = T0};
    assert_int_equal(cad_store_event_add(f->st, &orphan, T0, f->err), -CAD_ENOTFOUND);
    assert_non_null(strstr(f->err, "ghost"));
    cad_event_input_t untimed = {.id = "ev-3", .customer_id = "c1", .type = "purchase"};
    assert_int_equal(cad_store_event_add(f->st, &untimed, T0, f->err), -CAD_EINVAL);
    assert_non_null(strstr(f->err, "field at"));
}

/* ---- snapshots ---------------------------------------------------------- */

/* Unusable bits of contact `id` in customer `key`'s snapshot. */
static uint16_t unusable_of(fixture_t *f, int64_t key, const char *id)
{
    cad_snapshot_buf_t buf = {0};
    cad_snapshot_t snap;
    assert_int_equal(cad_store_load_snapshot(f->st, &f->pb, key, &buf, &snap, f->err), 0);
    uint16_t bits = 0xffff;
    for (int i = 0; i < snap.n_contacts; i++)
        if (strcmp(snap.contacts[i].id, id) == 0)
            bits = snap.contacts[i].unusable;
    cad_snapshot_buf_free(&buf);
    return bits;
}

static void test_store_unusable_mark_holds_for_its_address_until_cleared(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    int64_t key = add_customer(f, "c1", "active", "default", "");
    cad_contact_input_t c = {
        .id = "p-b", .customer_id = "c1", .roles = "billing", .email = "Billing@c1.example"};
    c.consent[0] = (cad_consent_input_t){.kind = "email", .opted_in = true};
    assert_int_equal(cad_store_contact_upsert(f->st, &c, T0, f->err), 0);
    int64_t ck = query_int(f, "SELECT key FROM contacts WHERE id = 'p-b'");
    assert_int_equal(cad_store_contact_mark_unusable(f->st, ck, "email", CAD_ADDRESS_EMAIL,
                                                     "provider: 550 no such user", T0, f->err),
                     0);
    assert_int_equal(unusable_of(f, key, "p-b"), 1u << CH_EMAIL);
    /* a corrected address is usable again; the old one, in any case, is not */
    c.email = "billing-new@c1.example";
    assert_int_equal(cad_store_contact_upsert(f->st, &c, T0 + 1, f->err), 0);
    assert_int_equal(unusable_of(f, key, "p-b"), 0);
    c.email = "BILLING@c1.example";
    assert_int_equal(cad_store_contact_upsert(f->st, &c, T0 + 2, f->err), 0);
    assert_int_equal(unusable_of(f, key, "p-b"), 1u << CH_EMAIL);
    /* an operator clears the mark */
    assert_int_equal(cad_store_contact_mark_usable(f->st, "p-b", "email", T0 + 3, f->err), 0);
    assert_int_equal(unusable_of(f, key, "p-b"), 0);
    assert_int_equal(cad_store_contact_mark_usable(f->st, "p-b", "email", T0 + 3, f->err),
                     -CAD_ENOTFOUND);
    assert_non_null(strstr(f->err, "channel email is not marked unusable"));
    assert_int_equal(cad_store_contact_mark_usable(f->st, "nobody", "email", T0 + 3, f->err),
                     -CAD_ENOTFOUND);
    /* a channel without an address: the mark holds whatever the contact's addresses */
    assert_int_equal(cad_store_contact_mark_unusable(f->st, ck, "crm_task", CAD_ADDRESS_NONE,
                                                     "provider: 410", T0 + 4, f->err),
                     0);
    c.email = "other@c1.example";
    assert_int_equal(cad_store_contact_upsert(f->st, &c, T0 + 5, f->err), 0);
    assert_int_equal(unusable_of(f, key, "p-b"), 1u << CH_CRM);
    /* a contact without a phone gets no phone mark: it would hold for any later number */
    assert_int_equal(cad_store_contact_mark_unusable(f->st, ck, "sms", CAD_ADDRESS_PHONE,
                                                     "provider: invalid number", T0 + 6, f->err),
                     0);
    assert_int_equal(unusable_of(f, key, "p-b"), 1u << CH_CRM);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM contact_channels WHERE channel = 'sms'"),
                     0);
}

static void test_store_snapshot_resolves_roles_reachability_events_history(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    int64_t key = add_customer(f, "c1", "onboarding", "nosuchsegment", "security,unknown-tag");
    /* p-email: email with consent, phone without sms consent */
    cad_contact_input_t a = {.id = "p-email",
                             .customer_id = "c1",
                             .roles = "decision_maker,champion,no_such_role",
                             .email = "dm@c1.example",
                             .phone = "+447700900001"};
    a.consent[0] = (cad_consent_input_t){.kind = "email", .opted_in = true};
    a.consent[1] = (cad_consent_input_t){.kind = "sms", .opted_in = false};
    assert_int_equal(cad_store_contact_upsert(f->st, &a, T0, f->err), 0);
    /* p-sms: phone with consent, email suppressed globally */
    cad_contact_input_t b = {.id = "p-sms",
                             .customer_id = "c1",
                             .roles = "user",
                             .email = "User@c1.example",
                             .phone = "+447700900002"};
    b.consent[0] = (cad_consent_input_t){.kind = "email", .opted_in = true};
    b.consent[1] = (cad_consent_input_t){.kind = "sms", .opted_in = true};
    assert_int_equal(cad_store_contact_upsert(f->st, &b, T0, f->err), 0);
    assert_int_equal(cad_store_suppress_address(f->st, "user@C1.example", "complaint", T0, f->err),
                     0);
    /* p-bounced: email hard-bounced */
    cad_contact_input_t c = {
        .id = "p-bounced", .customer_id = "c1", .roles = "billing", .email = "billing@c1.example"};
    c.consent[0] = (cad_consent_input_t){.kind = "email", .opted_in = true};
    assert_int_equal(cad_store_contact_upsert(f->st, &c, T0, f->err), 0);
    int64_t bounced_key = query_int(f, "SELECT key FROM contacts WHERE id = 'p-bounced'");
    assert_int_equal(cad_store_contact_mark_unusable(f->st, bounced_key, "email", CAD_ADDRESS_EMAIL,
                                                     "hard bounce", T0, f->err),
                     0);
    assert_int_equal(
        cad_store_contact_mark_unusable(f->st, 9999, "email", CAD_ADDRESS_EMAIL, "x", T0, f->err),
        -CAD_ENOTFOUND);

    add_event(f, "late", "c1", "project_completed", T0 - CAD_DAY);
    add_event(f, "early", "c1", "purchase", T0 - 10 * CAD_DAY);
    add_event(f, "custom", "c1", "webinar_attended", T0 - 5 * CAD_DAY);

    cad_snapshot_buf_t buf = {0};
    cad_snapshot_t snap;
    assert_int_equal(cad_store_load_snapshot(f->st, &f->pb, key, &buf, &snap, f->err), 0);
    assert_string_equal(snap.customer.id, "c1");
    assert_int_equal(snap.customer.key, key);
    assert_int_equal(snap.customer.stage, CAD_STAGE_ONBOARDING);
    assert_int_equal(snap.customer.policy, 0); /* unknown segment -> default */
    assert_int_equal(snap.customer.interests, 1u << 1);
    assert_int_equal(snap.n_contacts, 3);

    const cad_contact_t *pa = &snap.contacts[0];
    assert_string_equal(pa->id, "p-email");
    assert_int_equal(pa->roles, (1u << CAD_ROLE_DECISION_MAKER) | (1u << CAD_ROLE_CHAMPION));
    assert_int_equal(pa->reachable, (1u << CH_EMAIL) | (1u << CH_CRM));
    assert_int_equal(pa->no_consent, 1u << CH_SMS);
    assert_int_equal(pa->unusable, 0);

    const cad_contact_t *pb_ = &snap.contacts[1];
    assert_string_equal(pb_->id, "p-sms");
    assert_int_equal(pb_->roles, 1u << CAD_ROLE_USER);
    assert_int_equal(pb_->reachable, (1u << CH_SMS) | (1u << CH_CRM)); /* email suppressed */
    assert_int_equal(pb_->no_consent, 0);

    const cad_contact_t *pc = &snap.contacts[2];
    assert_int_equal(pc->reachable, 1u << CH_CRM);
    assert_int_equal(pc->unusable, 1u << CH_EMAIL);
    assert_int_equal(pc->no_consent, 0);

    /* events sorted by time; the unknown type is skipped */
    assert_int_equal(snap.n_events, 2);
    assert_string_equal(snap.events[0].id, "early");
    assert_int_equal(snap.events[0].type, CAD_EVENT_PURCHASE);
    assert_int_equal(snap.events[0].at, T0 - 10 * CAD_DAY);
    assert_string_equal(snap.events[1].id, "late");
    assert_int_equal(snap.events[1].type, CAD_EVENT_PROJECT_COMPLETED);

    /* history: one row per outbox state, one of a removed rule */
    sqlite3 *db;
    sqlite3_open(f->path, &db);
    char sql[1024];
    static const char *const states[] = {"queued", "in_flight", "retry_wait", "delivered",
                                         "dead",   "cancelled", "dropped"};
    for (int i = 0; i < 7; i++) {
        snprintf(sql, sizeof(sql),
                 "INSERT INTO touches (idempotency_key, customer_key, rule, purpose, channel,"
                 " content_id, trigger_key, state, decided_at, due_at, expires_at, updated_at)"
                 " VALUES ('k%d', %lld, '%s', 'value', '%s', '%s', %d, '%s', %lld, 0, 0, %lld)",
                 i, (long long)key, i == 6 ? "old_rule" : "welcome_guide", i == 6 ? "" : "email",
                 i == 0 ? "report-tips" : "", i, states[i], (long long)(T0 + i * 10),
                 (long long)(T0 + i * 10 + (i == 3 ? 1000 : 0)));
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    }
    sqlite3_close(db);
    assert_int_equal(cad_store_load_snapshot(f->st, &f->pb, key, &buf, &snap, f->err), 0);
    assert_int_equal(snap.n_history, 7);
    enum cad_touch_state want[7] = {CAD_TOUCH_PENDING,  CAD_TOUCH_PENDING, CAD_TOUCH_PENDING,
                                    CAD_TOUCH_FAILED,   CAD_TOUCH_FAILED,  CAD_TOUCH_DROPPED,
                                    CAD_TOUCH_DELIVERED};
    /* the delivered row moves last: its `at` is the delivery time */
    for (int i = 0; i < 7; i++) {
        assert_int_equal(snap.history[i].state, want[i]);
        if (i > 0)
            assert_true(snap.history[i - 1].at <= snap.history[i].at);
    }
    assert_int_equal(snap.history[0].content, 0);
    assert_int_equal(snap.history[0].channel, CH_EMAIL);
    assert_int_equal(snap.history[0].purpose, CAD_PURPOSE_VALUE);
    assert_int_equal(snap.history[5].rule, -1);
    assert_int_equal(snap.history[5].channel, -1);
    assert_int_equal(snap.history[6].at, T0 + 30 + 1000);
    assert_int_equal(snap.history[6].trigger_key, 3);

    assert_int_equal(cad_store_load_snapshot(f->st, &f->pb, 9999, &buf, &snap, f->err),
                     -CAD_ENOTFOUND);
    cad_snapshot_buf_free(&buf);
}

/* ---- decisions and the outbox ------------------------------------------- */

typedef struct claimed {
    int n;
    int64_t keys[8];
    char idem[8][256];
    char contact[8][64];
    char channel[8][32];
    int attempt[8];
} claimed_t;

static void on_claim(const cad_outbox_touch_t *t, void *arg)
{
    claimed_t *c = arg;
    if (c->n >= 8)
        return;
    c->keys[c->n] = t->key;
    snprintf(c->idem[c->n], sizeof(c->idem[0]), "%s", t->idempotency_key);
    snprintf(c->contact[c->n], sizeof(c->contact[0]), "%s", t->contact_id);
    snprintf(c->channel[c->n], sizeof(c->channel[0]), "%s", t->channel);
    c->attempt[c->n] = t->attempt;
    c->n++;
}

/* A decision for c1: welcome_guide sent by email to contact 0, review
 * request finally suppressed as stale, anniversary waiting. */
static void decide(fixture_t *f, int64_t *key_out, cad_snapshot_buf_t *buf, cad_snapshot_t *snap,
                   cad_verdict_t v[3], cad_decision_t *dec)
{
    int64_t key = add_customer(f, "c1", "active", NULL, "reporting");
    cad_contact_input_t p = {
        .id = "p1", .customer_id = "c1", .roles = "champion", .email = "p1@c1.example"};
    p.consent[0] = (cad_consent_input_t){.kind = "email", .opted_in = true};
    assert_int_equal(cad_store_contact_upsert(f->st, &p, T0, f->err), 0);
    add_event(f, "buy-1", "c1", "purchase", T0 - 2 * CAD_DAY);
    assert_int_equal(cad_store_load_snapshot(f->st, &f->pb, key, buf, snap, f->err), 0);
    int64_t ev = snap->events[0].key;
    v[0] = (cad_verdict_t){.rule = R_WELCOME,
                           .kind = CAD_VERDICT_SEND,
                           .reason = CAD_REASON_DUE,
                           .trigger_key = ev,
                           .event = 0,
                           .contact = 0,
                           .channel = CH_EMAIL,
                           .content = 0,
                           .expires_at = T0 + 8 * CAD_DAY};
    v[1] = (cad_verdict_t){.rule = R_REVIEW,
                           .kind = CAD_VERDICT_SUPPRESS,
                           .reason = CAD_REASON_STALE,
                           .final = true,
                           .trigger_key = ev,
                           .event = 0,
                           .contact = -1,
                           .channel = -1,
                           .content = -1};
    v[2] = (cad_verdict_t){.rule = R_ANNIVERSARY,
                           .kind = CAD_VERDICT_SKIP,
                           .reason = CAD_REASON_NOT_YET,
                           .event = -1,
                           .contact = -1,
                           .channel = -1,
                           .content = -1};
    *dec = (cad_decision_t){.verdicts = v,
                            .n_verdicts = 3,
                            .chosen = 0,
                            .next_eval = T0 + CAD_HOUR,
                            .alerts = CAD_ALERT_SILENT};
    *key_out = key;
}

static void test_store_record_decision_queues_touch_traces_drops_and_alerts(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    cad_snapshot_buf_t buf = {0};
    cad_snapshot_t snap;
    cad_verdict_t v[3];
    cad_decision_t dec;
    int64_t key;
    decide(f, &key, &buf, &snap, v, &dec);
    assert_int_equal(cad_store_batch_begin(f->st, f->err), 0);
    assert_true(cad_store_in_batch(f->st));
    assert_int_equal(cad_store_record_decision(f->st, &f->pb, &snap, &dec, T0, f->err), 0);
    assert_int_equal(cad_store_batch_commit(f->st, f->err), 0);
    assert_false(cad_store_in_batch(f->st));

    char idem[256];
    cad_touch_key(&f->pb, &snap, &v[0], idem, sizeof(idem));
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT COUNT(*) FROM touches WHERE idempotency_key = '%s' AND state = 'queued'"
             " AND channel = 'email' AND content_id = 'report-tips' AND expires_at = %lld",
             idem, (long long)(T0 + 8 * CAD_DAY));
    assert_int_equal(query_int(f, sql), 1);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM touches WHERE state = 'dropped'"
                                  " AND rule = 'review_request' AND last_error = 'stale'"),
                     1);
    assert_int_equal(query_int(f, "SELECT next_eval FROM customers WHERE id = 'c1'"),
                     T0 + CAD_HOUR);
    /* two traces: SKIP is not recorded */
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM traces"), 2);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM alerts WHERE open = 1 AND kind = 'silent'"),
                     1);
    assert_int_equal(cad_store_outbox_next_due(f->st), T0);

    /* the snapshot now shows the pending touch and the dropped trigger */
    assert_int_equal(cad_store_load_snapshot(f->st, &f->pb, key, &buf, &snap, f->err), 0);
    assert_int_equal(snap.n_history, 2);
    int pending = 0, dropped = 0;
    for (int i = 0; i < 2; i++) {
        if (snap.history[i].state == CAD_TOUCH_PENDING && snap.history[i].rule == R_WELCOME)
            pending++;
        if (snap.history[i].state == CAD_TOUCH_DROPPED && snap.history[i].rule == R_REVIEW)
            dropped++;
    }
    assert_int_equal(pending, 1);
    assert_int_equal(dropped, 1);

    /* the same decision again (a restart) queues nothing twice (R13) and the
     * alert stays one row; without the bit it closes */
    dec.alerts = 0;
    assert_int_equal(cad_store_record_decision(f->st, &f->pb, &snap, &dec, T0 + 60, f->err), 0);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM touches"), 2);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM alerts"), 1);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM alerts WHERE open = 1"), 0);
    cad_store_counts_t c;
    assert_int_equal(cad_store_counts(f->st, &c, f->err), 0);
    assert_int_equal(c.decisions, 2);
    assert_int_equal(c.outbox[CAD_OUTBOX_QUEUED], 1);
    assert_int_equal(c.alerts_open, 0);

    /* a chosen touch without a channel is refused, nothing written */
    v[0].channel = -1;
    assert_int_equal(cad_store_record_decision(f->st, &f->pb, &snap, &dec, T0 + 65, f->err),
                     -CAD_EINVAL);
    assert_non_null(strstr(f->err, "welcome_guide"));
    v[0].channel = CH_EMAIL;
    /* a verdict naming a rule outside the playbook is refused, nothing written */
    v[1].rule = 42;
    assert_int_equal(cad_store_record_decision(f->st, &f->pb, &snap, &dec, T0 + 70, f->err),
                     -CAD_EINVAL);
    assert_int_equal(query_int(f, "SELECT value FROM counters WHERE name = 'decisions'"), 2);
    cad_snapshot_buf_free(&buf);
}

/* The longest ids make the longest idempotency key (customer/rule/e:event,
 * 323 bytes with the 128-byte ids the store accepts); it is queued whole. A decision refused inside
 * a batch writes nothing and leaves the batch's earlier decisions to commit. */
static void test_store_longest_key_queued_and_refusal_keeps_batch(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    cad_snapshot_buf_t buf = {0};
    cad_snapshot_t snap;
    cad_verdict_t v[3];
    cad_decision_t dec;
    int64_t key;
    decide(f, &key, &buf, &snap, v, &dec);
    char cid[CAD_ID_MAX + 1], eid[CAD_ID_MAX + 1];
    memset(cid, 'c', sizeof(cid) - 1);
    cid[sizeof(cid) - 1] = '\0';
    memset(eid, 'e', sizeof(eid) - 1);
    eid[sizeof(eid) - 1] = '\0';
    int64_t long_key = add_customer(f, cid, "active", NULL, "reporting");
    add_event(f, eid, cid, "purchase", T0 - CAD_DAY);
    cad_snapshot_buf_t long_buf = {0};
    cad_snapshot_t long_snap;
    assert_int_equal(
        cad_store_load_snapshot(f->st, &f->pb, long_key, &long_buf, &long_snap, f->err), 0);
    cad_verdict_t lv = v[1]; /* a final suppression: a touch row without a contact */
    lv.trigger_key = long_snap.events[0].key;
    cad_decision_t long_dec = {
        .verdicts = &lv, .n_verdicts = 1, .chosen = -1, .next_eval = T0 + CAD_DAY};

    assert_int_equal(cad_store_batch_begin(f->st, f->err), 0);
    assert_int_equal(cad_store_record_decision(f->st, &f->pb, &snap, &dec, T0, f->err), 0);
    assert_int_equal(cad_store_record_decision(f->st, &f->pb, &long_snap, &long_dec, T0, f->err),
                     0);
    v[0].channel = -1; /* the chosen touch names no channel: refused */
    assert_int_equal(cad_store_record_decision(f->st, &f->pb, &snap, &dec, T0 + 1, f->err),
                     -CAD_EINVAL);
    assert_true(cad_store_in_batch(f->st));
    assert_int_equal(cad_store_batch_commit(f->st, f->err), 0);

    char idem[2 * CAD_ID_MAX + CAD_NAME_MAX + 8];
    int n = cad_touch_key(&f->pb, &long_snap, &lv, idem, sizeof(idem));
    assert_int_equal(n, CAD_ID_MAX + 1 + (int)strlen(f->pb.rules[R_REVIEW].name) + 3 + CAD_ID_MAX);
    char sql[1024];
    snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM touches WHERE idempotency_key = '%s'", idem);
    assert_int_equal(query_int(f, sql), 1);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM touches"), 3);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM traces"), 3);
    assert_int_equal(query_int(f, "SELECT value FROM counters WHERE name = 'decisions'"), 2);
    cad_snapshot_buf_free(&long_buf);
    cad_snapshot_buf_free(&buf);
}

/* A decision closes the alerts the customer no longer raises, also when
 * they were opened before the store was last opened (the store skips the
 * closing statement for customers it knows have none open). */
static void test_store_alerts_close_across_reopen(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    cad_snapshot_buf_t buf = {0};
    cad_snapshot_t snap;
    cad_verdict_t v[3];
    cad_decision_t dec;
    int64_t key;
    decide(f, &key, &buf, &snap, v, &dec);
    dec.chosen = -1;
    assert_int_equal(cad_store_record_decision(f->st, &f->pb, &snap, &dec, T0, f->err), 0);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM alerts WHERE open = 1"), 1);

    cad_store_close(f->st);
    open_store(f);
    assert_int_equal(cad_store_load_snapshot(f->st, &f->pb, key, &buf, &snap, f->err), 0);
    dec.alerts = 0;
    assert_int_equal(cad_store_record_decision(f->st, &f->pb, &snap, &dec, T0 + 60, f->err), 0);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM alerts WHERE open = 1"), 0);
    assert_int_equal(query_int(f, "SELECT closed_at FROM alerts"), T0 + 60);

    /* raised again in this session, closed again */
    dec.alerts = CAD_ALERT_SILENT;
    assert_int_equal(cad_store_record_decision(f->st, &f->pb, &snap, &dec, T0 + 120, f->err), 0);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM alerts WHERE open = 1"), 1);
    dec.alerts = 0;
    assert_int_equal(cad_store_record_decision(f->st, &f->pb, &snap, &dec, T0 + 180, f->err), 0);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM alerts WHERE open = 1"), 0);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM alerts"), 2);
    cad_snapshot_buf_free(&buf);
}

static void test_store_outbox_claim_and_outcome_transitions(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    cad_snapshot_buf_t buf = {0};
    cad_snapshot_t snap;
    cad_verdict_t v[3];
    cad_decision_t dec;
    int64_t key;
    decide(f, &key, &buf, &snap, v, &dec);
    assert_int_equal(cad_store_record_decision(f->st, &f->pb, &snap, &dec, T0, f->err), 0);

    claimed_t c = {0};
    assert_int_equal(cad_store_outbox_claim(f->st, T0 - 1, 10, on_claim, &c, f->err), 0);
    assert_int_equal(cad_store_outbox_claim(f->st, T0, 10, on_claim, &c, f->err), 1);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.contact[0], "p1");
    assert_string_equal(c.channel[0], "email");
    assert_int_equal(c.attempt[0], 0);
    char idem[256];
    cad_touch_key(&f->pb, &snap, &v[0], idem, sizeof(idem));
    assert_string_equal(c.idem[0], idem);
    int64_t t = c.keys[0];
    /* in flight: not claimed again, not due */
    assert_int_equal(cad_store_outbox_claim(f->st, T0 + 10, 10, on_claim, &c, f->err), 0);
    assert_int_equal(cad_store_outbox_next_due(f->st), CAD_TIME_NEVER);

    /* retry, then claim again with one attempt made */
    assert_int_equal(cad_store_outbox_retry(f->st, t, T0 + 300, "timeout", T0 + 20, f->err), 0);
    assert_int_equal(cad_store_outbox_next_due(f->st), T0 + 300);
    assert_int_equal(cad_store_outbox_delivered(f->st, t, "x", T0 + 30, f->err), -CAD_EINVAL);
    assert_non_null(strstr(f->err, "retry_wait"));
    assert_int_equal(cad_store_outbox_claim(f->st, T0 + 299, 10, on_claim, &c, f->err), 0);
    assert_int_equal(cad_store_outbox_claim(f->st, T0 + 300, 10, on_claim, &c, f->err), 1);
    assert_int_equal(c.attempt[1], 1);
    assert_int_equal(cad_store_outbox_delivered(f->st, t, "msg-42", T0 + 310, f->err), 0);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM touches WHERE provider_id = 'msg-42'"
                                  " AND state = 'delivered' AND attempt = 2"),
                     1);
    /* delivered is final */
    assert_int_equal(cad_store_outbox_dead(f->st, t, "late", T0 + 320, f->err), -CAD_EINVAL);
    assert_int_equal(cad_store_outbox_retry(f->st, 9999, T0, "x", T0, f->err), -CAD_ENOTFOUND);
    assert_int_equal(cad_store_load_snapshot(f->st, &f->pb, key, &buf, &snap, f->err), 0);
    bool delivered = false;
    for (int i = 0; i < snap.n_history; i++)
        if (snap.history[i].rule == R_WELCOME) {
            delivered = snap.history[i].state == CAD_TOUCH_DELIVERED;
            assert_int_equal(snap.history[i].at, T0 + 310);
        }
    assert_true(delivered);
    cad_snapshot_buf_free(&buf);
}

static void test_store_outbox_dead_and_expired_touches_fail(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    cad_snapshot_buf_t buf = {0};
    cad_snapshot_t snap;
    cad_verdict_t v[3];
    cad_decision_t dec;
    int64_t key;
    decide(f, &key, &buf, &snap, v, &dec);
    assert_int_equal(cad_store_record_decision(f->st, &f->pb, &snap, &dec, T0, f->err), 0);
    claimed_t c = {0};
    /* past its expiry the touch is never handed out */
    assert_int_equal(cad_store_outbox_claim(f->st, T0 + 9 * CAD_DAY, 10, on_claim, &c, f->err), 0);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM touches WHERE state = 'dead'"
                                  " AND last_error LIKE 'expired%'"),
                     1);
    assert_int_equal(cad_store_load_snapshot(f->st, &f->pb, key, &buf, &snap, f->err), 0);
    for (int i = 0; i < snap.n_history; i++)
        if (snap.history[i].rule == R_WELCOME)
            assert_int_equal(snap.history[i].state, CAD_TOUCH_FAILED);
    cad_snapshot_buf_free(&buf);
}

/* A touch whose attempt may have reached the customer (timed out after the
 * request left) counts as sent for the engine even when it dies later; the
 * same for a touch a crash left in flight. */
static void test_store_maybe_delivered_touch_counts_as_sent(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    cad_snapshot_buf_t buf = {0};
    cad_snapshot_t snap;
    cad_verdict_t v[3];
    cad_decision_t dec;
    int64_t key;
    decide(f, &key, &buf, &snap, v, &dec);
    assert_int_equal(cad_store_record_decision(f->st, &f->pb, &snap, &dec, T0, f->err), 0);
    claimed_t c = {0};
    assert_int_equal(cad_store_outbox_claim(f->st, T0, 10, on_claim, &c, f->err), 1);
    assert_int_equal(
        cad_store_outbox_retry(f->st, c.keys[0], T0 + 60, "timed out", T0 + 30, f->err), 0);
    assert_int_equal(cad_store_outbox_maybe_delivered(f->st, c.keys[0], T0 + 40, f->err), 0);
    assert_int_equal(cad_store_outbox_maybe_delivered(f->st, c.keys[0], T0 + 35, f->err), 0);
    assert_int_equal(cad_store_outbox_dead(f->st, c.keys[0], "gave up", T0 + 90, f->err), 0);
    assert_int_equal(cad_store_load_snapshot(f->st, &f->pb, key, &buf, &snap, f->err), 0);
    bool counted = false;
    for (int i = 0; i < snap.n_history; i++)
        if (snap.history[i].rule == R_WELCOME) {
            counted = snap.history[i].state == CAD_TOUCH_DELIVERED;
            assert_int_equal(snap.history[i].at, T0 + 40); /* the latest doubtful attempt */
        }
    assert_true(counted);
    /* an operator's cancel of the dead touch keeps that time */
    assert_int_equal(cad_store_outbox_cancel(f->st, c.keys[0], T0 + 500, f->err), 0);
    assert_int_equal(cad_store_load_snapshot(f->st, &f->pb, key, &buf, &snap, f->err), 0);
    for (int i = 0; i < snap.n_history; i++)
        if (snap.history[i].rule == R_WELCOME) {
            assert_int_equal(snap.history[i].state, CAD_TOUCH_DELIVERED);
            assert_int_equal(snap.history[i].at, T0 + 40);
        }
    assert_int_equal(cad_store_outbox_maybe_delivered(f->st, 9999, T0, f->err),
                     0); /* no such row */
    cad_snapshot_buf_free(&buf);
}

typedef struct history {
    char text[512];
} history_t;

static void on_transition(const cad_outbox_transition_t *t, void *arg)
{
    history_t *h = arg;
    size_t n = strlen(h->text);
    snprintf(h->text + n, sizeof h->text - n, "%s/%d@%lld%s%s ", t->state, t->attempt,
             (long long)(t->at - T0), *t->detail ? ":" : "", t->detail);
}

static void test_store_requeue_in_flight_after_crash(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    cad_snapshot_buf_t buf = {0};
    cad_snapshot_t snap;
    cad_verdict_t v[3];
    cad_decision_t dec;
    int64_t key;
    decide(f, &key, &buf, &snap, v, &dec);
    assert_int_equal(cad_store_record_decision(f->st, &f->pb, &snap, &dec, T0, f->err), 0);
    claimed_t c = {0};
    assert_int_equal(cad_store_outbox_claim(f->st, T0, 10, on_claim, &c, f->err), 1);
    /* the daemon dies here; a new process opens the same file */
    cad_store_close(f->st);
    f->st = NULL;
    open_store(f);
    assert_int_equal(cad_store_outbox_requeue_in_flight(f->st, T0 + 100, f->err), 1);
    assert_int_equal(cad_store_outbox_requeue_in_flight(f->st, T0 + 100, f->err), 0);
    assert_int_equal(cad_store_outbox_next_due(f->st), T0 + 100);
    claimed_t again = {0};
    assert_int_equal(cad_store_outbox_claim(f->st, T0 + 100, 10, on_claim, &again, f->err), 1);
    assert_string_equal(again.idem[0], c.idem[0]); /* same idempotency key */
    /* the crash is no attempt: the re-send is attempt 1 again, so a crash
     * loop does not use up max_attempts of touches never answered */
    assert_int_equal(again.attempt[0], 0);
    assert_int_equal(query_int(f, "SELECT attempt FROM touches WHERE state = 'in_flight'"), 1);
    assert_int_equal(
        query_int(f, "SELECT maybe_delivered_at FROM touches WHERE state = 'in_flight'"), T0);
    /* every transition was kept, the crash's release included */
    assert_int_equal(cad_store_outbox_delivered(f->st, again.keys[0], "p-1", T0 + 101, f->err), 0);
    history_t hist = {0};
    assert_int_equal(cad_store_outbox_history(f->st, again.keys[0], on_transition, &hist, f->err),
                     5);
    assert_string_equal(hist.text, "queued/0@0 in_flight/1@0 queued/0@100 in_flight/1@100 "
                                   "delivered/1@101:p-1 ");
    assert_int_equal(cad_store_outbox_history(f->st, 9999, on_transition, &hist, f->err),
                     -CAD_ENOTFOUND);
    cad_snapshot_buf_free(&buf);
}

static void count_schedule(int64_t key, cad_time_t next_eval, void *arg)
{
    int *n = arg;
    (*n)++;
}

static void test_store_counts_and_schedule(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    add_customer(f, "a", "active", NULL, NULL);
    add_customer(f, "b", "former", NULL, NULL);
    cad_contact_input_t p = {.id = "pa", .customer_id = "a", .roles = "user"};
    assert_int_equal(cad_store_contact_upsert(f->st, &p, T0, f->err), 0);
    add_event(f, "e1", "a", "purchase", T0);
    add_event(f, "e2", "b", "churned", T0);
    cad_store_counts_t c;
    assert_int_equal(cad_store_counts(f->st, &c, f->err), 0);
    assert_int_equal(c.customers, 2);
    assert_int_equal(c.contacts, 1);
    assert_int_equal(c.events, 2);
    assert_int_equal(c.decisions, 0);
    for (int i = 0; i < 6; i++)
        assert_int_equal(c.outbox[i], 0);
    int n = 0;
    assert_int_equal(cad_store_schedule_foreach(f->st, count_schedule, &n, f->err), 2);
    assert_int_equal(n, 2);
    assert_string_equal(cad_outbox_state_name(CAD_OUTBOX_RETRY_WAIT), "retry_wait");
}

typedef struct traces {
    int n;
    cad_time_t at[64];
    char reason[64][32];
} traces_t;

static void on_trace(const cad_trace_row_t *row, void *arg)
{
    traces_t *t = arg;
    if (t->n < 64) {
        t->at[t->n] = row->at;
        snprintf(t->reason[t->n], sizeof(t->reason[0]), "%s", row->reason);
        t->n++;
    }
}

static void test_store_traces_newest_first_and_bounded(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    cad_snapshot_buf_t buf = {0};
    cad_snapshot_t snap;
    cad_verdict_t v[3];
    cad_decision_t dec;
    int64_t key;
    decide(f, &key, &buf, &snap, v, &dec);
    dec.chosen = -1;
    v[0].kind = CAD_VERDICT_DEFER;
    v[0].reason = CAD_REASON_QUIET_HOURS;
    v[0].until = T0 + 8 * CAD_HOUR;
    v[1].kind = CAD_VERDICT_SKIP;
    assert_int_equal(cad_store_batch_begin(f->st, f->err), 0);
    for (int i = 0; i < 80; i++)
        assert_int_equal(
            cad_store_record_decision(f->st, &f->pb, &snap, &dec, T0 + i * CAD_MINUTE, f->err), 0);
    assert_int_equal(cad_store_batch_commit(f->st, f->err), 0);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM traces"), 50);
    traces_t t = {0};
    assert_int_equal(cad_store_trace_foreach(f->st, "c1", 10, on_trace, &t, f->err), 10);
    assert_int_equal(t.at[0], T0 + 79 * CAD_MINUTE);
    for (int i = 1; i < t.n; i++)
        assert_true(t.at[i] < t.at[i - 1]);
    assert_string_equal(t.reason[0], cad_reason_name(CAD_REASON_QUIET_HOURS));
    traces_t all = {0};
    assert_int_equal(cad_store_trace_foreach(f->st, "c1", 0, on_trace, &all, f->err), 50);
    assert_int_equal(all.at[49], T0 + 30 * CAD_MINUTE);
    assert_int_equal(cad_store_trace_foreach(f->st, "ghost", 10, on_trace, &t, f->err),
                     -CAD_ENOTFOUND);
    assert_int_equal(query_int(f, "SELECT until FROM traces ORDER BY key DESC LIMIT 1"),
                     T0 + 8 * CAD_HOUR);
    cad_snapshot_buf_free(&buf);
}

/* ---- batches and failures ----------------------------------------------- */

static void test_store_batch_rollback_and_failed_write_inside_batch(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    add_customer(f, "keep", "active", NULL, NULL);
    assert_int_equal(cad_store_batch_begin(f->st, f->err), 0);
    assert_int_equal(cad_store_batch_begin(f->st, f->err), -CAD_EBUSY);
    add_customer(f, "gone", "active", NULL, NULL);
    cad_store_batch_rollback(f->st);
    assert_false(cad_store_in_batch(f->st));
    assert_int_equal(cad_store_batch_commit(f->st, f->err), -CAD_EINVAL);
    int64_t k;
    assert_int_equal(cad_store_customer_key(f->st, "gone", &k, f->err), -CAD_ENOTFOUND);

    /* a refused write inside a batch leaves the batch's other rows intact */
    assert_int_equal(cad_store_batch_begin(f->st, f->err), 0);
    add_customer(f, "one", "active", NULL, NULL);
    add_event(f, "dup", "one", "purchase", T0);
    cad_event_input_t dup = {.id = "dup", .customer_id = "one", .type = "purchase", .at = T0};
    assert_int_equal(cad_store_event_add(f->st, &dup, T0, f->err), -CAD_EEXIST);
    add_customer(f, "two", "active", NULL, NULL);
    assert_int_equal(cad_store_batch_commit(f->st, f->err), 0);
    cad_store_counts_t c;
    assert_int_equal(cad_store_counts(f->st, &c, f->err), 0);
    assert_int_equal(c.customers, 3);
    assert_int_equal(c.events, 1);
}

static void test_store_disk_full_rolls_back_whole_write(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    add_customer(f, "c1", "active", NULL, NULL);
    cad_store_counts_t before;
    assert_int_equal(cad_store_counts(f->st, &before, f->err), 0);
    int64_t pages = query_int(f, "PRAGMA page_count");
    assert_int_equal(cad_store_limit_size(f->st, pages * 4096, f->err), 0);
    /* big attributes need new pages: the write fails as on a full disk */
    static char attrs[200000];
    int n = snprintf(attrs, sizeof(attrs), "{\"blob\":\"");
    memset(attrs + n, 'a', sizeof(attrs) - (size_t)n - 4);
    memcpy(attrs + sizeof(attrs) - 4, "\"}", 3);
    cad_customer_input_t in = {.id = "c2", .attributes = attrs};
    int r = cad_store_customer_upsert(f->st, &in, T0, NULL, f->err);
    assert_int_equal(r, -CAD_EFULL);
    assert_non_null(strstr(f->err, f->path));
    /* inside a batch too: the batch is rolled back with it, nothing half-written */
    assert_int_equal(cad_store_batch_begin(f->st, f->err), 0);
    cad_event_input_t ev = {.id = "e1", .customer_id = "c1", .type = "purchase", .at = T0};
    assert_int_equal(cad_store_event_add(f->st, &ev, T0, f->err), 0);
    r = cad_store_customer_upsert(f->st, &in, T0, NULL, f->err);
    assert_int_equal(r, -CAD_EFULL);
    if (cad_store_in_batch(f->st))
        cad_store_batch_rollback(f->st);
    assert_int_equal(cad_store_limit_size(f->st, 0, f->err), 0);
    cad_store_counts_t after;
    assert_int_equal(cad_store_counts(f->st, &after, f->err), 0);
    assert_int_equal(after.customers, before.customers);
    assert_int_equal(after.events, before.events);
    /* and the store works again once there is room */
    add_customer(f, "c3", "active", NULL, NULL);
    assert_int_equal(cad_store_limit_size(f->st, -1, f->err), -CAD_EINVAL);
}

/* Adds 500 customers "b<batch>-<i>" named `name` in one batch commit. */
static void commit_named_customers(fixture_t *f, int batch, const char *name)
{
    assert_int_equal(cad_store_batch_begin(f->st, f->err), 0);
    for (int i = 0; i < 500; i++) {
        char id[32];
        snprintf(id, sizeof id, "b%d-%d", batch, i);
        cad_customer_input_t in = {
            .id = id, .name = name, .timezone = "UTC", .stage = "active", .segment = "default"};
        int64_t key;
        if (cad_store_customer_upsert(f->st, &in, T0, &key, f->err) != 0)
            fail_msg("customer %s: %s", id, f->err);
    }
    assert_int_equal(cad_store_batch_commit(f->st, f->err), 0);
}

/* The WAL is copied back into the database by the store's own thread, not
 * inside the loop's commits: after a few megabytes of commits the thread
 * has run and copied frames; everything written is there after reopening,
 * and closing removes the WAL. */
static void test_store_checkpoints_run_on_their_own_thread(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    char name[220];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    for (int batch = 0; batch < 40; batch++)
        commit_named_customers(f, batch, name);
    cad_store_checkpoint_stats_t ck = {0};
    for (int wait = 0; wait < 1000 && ck.wal_checkpointed == 0; wait++) {
        cad_store_checkpoint_counts(f->st, &ck);
        if (ck.wal_checkpointed == 0)
            usleep(10 * 1000);
    }
    assert_true(ck.ok[CAD_CHECKPOINT_THREAD] >= 1);
    assert_int_equal(ck.failed[CAD_CHECKPOINT_THREAD], 0);
    /* The figures describe the WAL as it is: no more frames than its file
     * holds (a frame is a page plus a 24-byte header, after a 32-byte
     * header), and no more checkpointed than there are. */
    struct stat sb;
    char walfile[sizeof f->path + 8];
    snprintf(walfile, sizeof walfile, "%s-wal", f->path);
    assert_int_equal(stat(walfile, &sb), 0);
    assert_true(ck.wal_checkpointed > 0);
    assert_true(ck.wal_checkpointed <= ck.wal_frames);
    assert_true(ck.wal_frames <= (sb.st_size - 32) / (4096 + 24));
    cad_store_close(f->st);
    f->st = NULL;
    char wal[sizeof f->path + 8];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    assert_int_equal(access(wal, F_OK), -1);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM customers"), 40 * 500);

    /* A read-only store and an in-memory copy run no thread. */
    cad_store_t *ro = NULL, *copy = NULL;
    assert_int_equal(cad_store_open_readonly(f->path, &ro, f->err), 0);
    assert_int_equal(cad_store_open_copy(f->path, &copy, f->err), 0);
    for (int i = 0; i < 2; i++) {
        cad_store_checkpoint_counts(i ? copy : ro, &ck);
        assert_int_equal(ck.ok[CAD_CHECKPOINT_THREAD] + ck.busy[CAD_CHECKPOINT_THREAD], 0);
    }
    cad_store_close(ro);
    cad_store_close(copy);
}

/* A checkpoint that cannot write the database (here: the file may not grow,
 * as on a full disk) is counted as failed, and the store goes on: commits
 * still land in the WAL, and once the database may grow again the next
 * checkpoint copies everything and nothing is lost. */
static void test_store_failed_checkpoint_is_counted_and_recovers(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    char name[220];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    for (int batch = 0; batch < 40; batch++)
        commit_named_customers(f, batch, name);
    /* Closed and opened again: everything is in the database, the WAL
     * starts empty. */
    cad_store_close(f->st);
    open_store(f);

    /* The database may not grow past its size now; the WAL, which is
     * written from its start, stays below that size. */
    struct stat sb;
    assert_int_equal(stat(f->path, &sb), 0);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit saved, limit;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
    limit = saved;
    limit.rlim_cur = (rlim_t)sb.st_size;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &limit), 0);
    int failed_batch = -1;
    for (int batch = 40; batch < 60 && failed_batch < 0; batch++) {
        int rc = cad_store_batch_begin(f->st, f->err);
        for (int i = 0; rc == 0 && i < 500; i++) {
            char id[32];
            snprintf(id, sizeof id, "b%d-%d", batch, i);
            cad_customer_input_t in = {
                .id = id, .name = name, .timezone = "UTC", .stage = "active", .segment = "default"};
            int64_t key;
            rc = cad_store_customer_upsert(f->st, &in, T0, &key, f->err);
        }
        if (rc == 0)
            rc = cad_store_batch_commit(f->st, f->err);
        if (rc != 0)
            failed_batch = batch;
    }
    cad_store_checkpoint_stats_t ck = {0};
    for (int wait = 0; wait < 1000 && failed_batch < 0; wait++) {
        cad_store_checkpoint_counts(f->st, &ck);
        if (ck.failed[CAD_CHECKPOINT_THREAD] > 0)
            break;
        usleep(10 * 1000);
    }
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
    if (failed_batch >= 0)
        fail_msg("batch %d: %s", failed_batch, f->err);
    assert_true(ck.failed[CAD_CHECKPOINT_THREAD] >= 1);
    assert_true(ck.wal_checkpointed < ck.wal_frames || ck.wal_frames == 0);
    int64_t ok_before = ck.ok[CAD_CHECKPOINT_THREAD];

    /* The database may grow again: the next checkpoint copies it all. */
    commit_named_customers(f, 60, name);
    for (int wait = 0; wait < 1000; wait++) {
        cad_store_checkpoint_counts(f->st, &ck);
        if (ck.ok[CAD_CHECKPOINT_THREAD] > ok_before && ck.wal_checkpointed == ck.wal_frames)
            break;
        usleep(10 * 1000);
    }
    assert_true(ck.ok[CAD_CHECKPOINT_THREAD] > ok_before);
    assert_int_equal(ck.wal_checkpointed, ck.wal_frames);
    cad_store_close(f->st);
    f->st = NULL;
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM customers"), 61 * 500);
}

/* Under commits that follow each other without a pause the checkpoint
 * thread never finishes a full copy (frames keep arriving while it copies),
 * and the WAL restarts only after one: past 16,000 WAL pages the
 * committing thread checkpoints too, so the WAL file stays near 64 MiB
 * however much is written. 160 MiB of names go in here, 0.5 MiB a commit. */
static void test_store_wal_stays_bounded_under_back_to_back_commits(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    static char name[1001];
    memset(name, 'w', sizeof name - 1);
    char wal[sizeof f->path + 8];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    off_t largest = 0;
    for (int batch = 0; batch < 320; batch++) {
        commit_named_customers(f, batch, name);
        struct stat sb;
        if (stat(wal, &sb) == 0 && sb.st_size > largest)
            largest = sb.st_size;
    }
    /* 16,000 pages of 4 KiB, plus the commit that crossed the line. */
    if (largest > (off_t)80 * 1024 * 1024)
        fail_msg("the WAL grew to %lld bytes", (long long)largest);
    assert_true(largest > 0);
    /* The committing thread's checkpoints are counted, beside the thread's. */
    cad_store_checkpoint_stats_t ck;
    cad_store_checkpoint_counts(f->st, &ck);
    assert_true(ck.ok[CAD_CHECKPOINT_COMMIT] + ck.busy[CAD_CHECKPOINT_COMMIT] >= 1);
    assert_int_equal(ck.failed[CAD_CHECKPOINT_COMMIT] + ck.failed[CAD_CHECKPOINT_THREAD], 0);
}

static void test_store_readonly_refuses_writes(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    add_customer(f, "c1", "active", NULL, NULL);
    cad_store_t *ro = NULL;
    assert_int_equal(cad_store_open_readonly(f->path, &ro, f->err), 0);
    int64_t k;
    assert_int_equal(cad_store_customer_key(ro, "c1", &k, f->err), 0);
    cad_customer_input_t in = {.id = "c2"};
    assert_int_equal(cad_store_customer_upsert(ro, &in, T0, NULL, f->err), -CAD_EPERM);
    assert_non_null(strstr(f->err, "read-only"));
    assert_int_equal(cad_store_batch_begin(ro, f->err), -CAD_EPERM);
    cad_store_close(ro);
    cad_store_close(NULL);
}

static void test_store_open_copy_writes_only_to_memory(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    add_customer(f, "c1", "active", NULL, NULL);
    cad_store_t *copy = NULL;
    assert_int_equal(cad_store_open_copy(f->path, &copy, f->err), 0);
    assert_int_equal(cad_store_user_version(copy), cad_store_schema_version());
    int64_t k;
    assert_int_equal(cad_store_customer_key(copy, "c1", &k, f->err), 0);
    cad_customer_input_t in = {.id = "only-in-copy"};
    assert_int_equal(cad_store_batch_begin(copy, f->err), 0);
    assert_int_equal(cad_store_customer_upsert(copy, &in, T0, NULL, f->err), 0);
    assert_int_equal(cad_store_batch_commit(copy, f->err), 0);
    assert_int_equal(cad_store_customer_key(copy, "only-in-copy", &k, f->err), 0);
    assert_int_equal(cad_store_customer_key(f->st, "only-in-copy", &k, f->err), -CAD_ENOTFOUND);
    cad_store_close(copy);
    char missing[200];
    snprintf(missing, sizeof(missing), "%s/missing.db", f->dir);
    assert_true(cad_store_open_copy(missing, &copy, f->err) < 0);
    assert_null(copy);
    assert_non_null(strstr(f->err, "missing.db"));
}

typedef struct listing {
    int n;
    int64_t keys[16];
    enum cad_outbox_state states[16];
    char text[16][128];
} listing_t;

static void on_list(const cad_outbox_touch_t *t, void *arg)
{
    listing_t *l = arg;
    if (l->n < 16) {
        l->keys[l->n] = t->key;
        l->states[l->n] = t->state;
        snprintf(l->text[l->n], sizeof(l->text[0]), "%s|%s|%s|%s|%s", t->customer_name,
                 t->contact_first_name, t->contact_email, t->last_error, t->rule);
        l->n++;
    }
}

static void on_claim_full(const cad_outbox_touch_t *t, void *arg)
{
    listing_t *l = arg;
    on_list(t, arg);
    assert_int_equal(t->state, CAD_OUTBOX_IN_FLIGHT);
    assert_true(t->customer_key > 0);
    assert_true(t->contact_key > 0);
    assert_string_equal(t->customer_attributes, "{}");
    assert_string_equal(t->contact_phone, "");
    (void)l;
}

static void test_store_outbox_listing_cancel_and_operator_requeue(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    cad_snapshot_buf_t buf = {0};
    cad_snapshot_t snap;
    cad_verdict_t v[3];
    cad_decision_t dec;
    int64_t key;
    decide(f, &key, &buf, &snap, v, &dec);
    assert_int_equal(cad_store_record_decision(f->st, &f->pb, &snap, &dec, T0, f->err), 0);

    /* the claim carries what the dispatcher renders and addresses */
    listing_t c = {0};
    assert_int_equal(cad_store_outbox_claim(f->st, T0, 10, on_claim_full, &c, f->err), 1);
    assert_string_equal(c.text[0], "c1||p1@c1.example||welcome_guide");
    int64_t t = c.keys[0];
    /* in flight: neither cancelled nor requeued by an operator */
    assert_int_equal(cad_store_outbox_cancel(f->st, t, T0 + 1, f->err), -CAD_EINVAL);
    assert_non_null(strstr(f->err, "in_flight"));
    assert_int_equal(cad_store_outbox_dead(f->st, t, "550 mailbox unknown", T0 + 2, f->err), 0);

    listing_t l = {0};
    assert_int_equal(cad_store_outbox_foreach(f->st, -1, NULL, 0, on_list, &l, f->err), 1);
    assert_int_equal(l.states[0], CAD_OUTBOX_DEAD);
    assert_non_null(strstr(l.text[0], "550 mailbox unknown"));
    memset(&l, 0, sizeof(l));
    assert_int_equal(
        cad_store_outbox_foreach(f->st, CAD_OUTBOX_QUEUED, "c1", 10, on_list, &l, f->err), 0);
    assert_int_equal(cad_store_outbox_foreach(f->st, 42, NULL, 10, on_list, &l, f->err),
                     -CAD_EINVAL);
    assert_int_equal(cad_store_outbox_foreach(f->st, -1, "ghost", 10, on_list, &l, f->err),
                     -CAD_ENOTFOUND);

    /* an operator sends the dead touch again, same key, due now */
    assert_int_equal(cad_store_outbox_requeue(f->st, t, T0 + 60, f->err), 0);
    assert_int_equal(cad_store_outbox_next_due(f->st), T0 + 60);
    /* cancel it: it will never go out */
    assert_int_equal(cad_store_outbox_cancel(f->st, t, T0 + 70, f->err), 0);
    assert_int_equal(cad_store_outbox_next_due(f->st), CAD_TIME_NEVER);
    assert_int_equal(cad_store_outbox_requeue(f->st, t, T0 + 80, f->err), -CAD_EINVAL);
    assert_non_null(strstr(f->err, "cancelled"));
    assert_int_equal(cad_store_outbox_cancel(f->st, 9999, T0, f->err), -CAD_ENOTFOUND);

    /* past its expiry a dead touch is never sent again (R11) */
    sqlite3 *db;
    sqlite3_open(f->path, &db);
    sqlite3_exec(db, "UPDATE touches SET state = 'dead' WHERE state = 'cancelled'", NULL, NULL,
                 NULL);
    sqlite3_close(db);
    assert_int_equal(cad_store_outbox_requeue(f->st, t, T0 + 30 * CAD_DAY, f->err), -CAD_EINVAL);
    assert_non_null(strstr(f->err, "never sent"));
    cad_snapshot_buf_free(&buf);
}

/* After an outage: every dead touch of a channel, a customer, dead since a
 * time, queued again at once; those past their expiry stay dead. */
static void test_store_outbox_requeue_dead_in_bulk(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    cad_snapshot_buf_t buf = {0};
    cad_snapshot_t snap;
    cad_verdict_t v[3];
    cad_decision_t dec;
    int64_t key;
    decide(f, &key, &buf, &snap, v, &dec);
    assert_int_equal(cad_store_record_decision(f->st, &f->pb, &snap, &dec, T0, f->err), 0);
    claimed_t c = {0};
    assert_int_equal(cad_store_outbox_claim(f->st, T0, 10, on_claim, &c, f->err), 1);
    assert_int_equal(cad_store_outbox_dead(f->st, c.keys[0], "gave up", T0 + 100, f->err), 0);
    /* two more dead touches: another channel's, and one past its expiry */
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO touches (idempotency_key, customer_key, rule, purpose, channel,"
             " trigger_key, state, decided_at, due_at, expires_at, updated_at)"
             " VALUES ('k-sms', %lld, 'r', 'p', 'sms', 0, 'dead', %lld, %lld, %lld, %lld),"
             " ('k-old', %lld, 'r', 'p', 'email', 0, 'dead', %lld, %lld, %lld, %lld)",
             (long long)key, (long long)T0, (long long)T0, (long long)(T0 + CAD_DAY),
             (long long)(T0 + 200), (long long)key, (long long)T0, (long long)T0,
             (long long)(T0 + 150), (long long)(T0 + 120));
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    int64_t requeued, left;
    assert_int_equal(cad_store_outbox_requeue_dead(f->st, "email", "ghost", 0, T0 + 300, &requeued,
                                                   &left, f->err),
                     -CAD_ENOTFOUND);
    /* dead since T0 + 110: only the expired email touch matches, and stays */
    assert_int_equal(cad_store_outbox_requeue_dead(f->st, "email", NULL, T0 + 110, T0 + 300,
                                                   &requeued, &left, f->err),
                     0);
    assert_int_equal(requeued, 0);
    assert_int_equal(left, 1);
    assert_int_equal(
        cad_store_outbox_requeue_dead(f->st, "email", "c1", 0, T0 + 300, &requeued, &left, f->err),
        0);
    assert_int_equal(requeued, 1);
    assert_int_equal(left, 1);
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM touches WHERE state = 'queued' AND channel = 'email'"
             " AND due_at = %lld AND attempt = 0", /* the whole retry schedule again */
             (long long)(T0 + 300));
    assert_int_equal(query_int(f, sql), 1);
    assert_int_equal(
        cad_store_outbox_requeue_dead(f->st, NULL, NULL, 0, T0 + 300, &requeued, &left, f->err), 0);
    assert_int_equal(requeued, 1); /* the sms one */
    assert_int_equal(left, 1);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM touches WHERE state = 'dead'"), 1);
    cad_snapshot_buf_free(&buf);
}

typedef struct shown {
    char customer[256];
    int n_contacts;
    char contacts[4][160];
    int n_alerts;
    char alerts[4][160];
    int n_report;
    char report[8][128];
} shown_t;

static void on_customer(const cad_customer_row_t *row, void *arg)
{
    shown_t *s = arg;
    snprintf(s->customer, sizeof(s->customer), "%s|%s|%s|%s|%s|%s|%d", row->id, row->timezone,
             row->stage, row->segment, row->interests, row->attributes, row->paused);
}

static void on_contact(const cad_contact_row_t *row, void *arg)
{
    shown_t *s = arg;
    if (s->n_contacts < 4)
        snprintf(s->contacts[s->n_contacts++], sizeof(s->contacts[0]), "%s|%s|%s|%d|%d|%s", row->id,
                 row->roles, row->email, row->email_consent, row->sms_consent, row->unusable);
}

static void on_alert(const cad_alert_row_t *row, void *arg)
{
    shown_t *s = arg;
    if (s->n_alerts < 4)
        snprintf(s->alerts[s->n_alerts++], sizeof(s->alerts[0]), "%s|%s|%s|%d", row->kind,
                 row->customer_id, row->rule, row->open);
}

static void on_report(const cad_report_row_t *row, void *arg)
{
    shown_t *s = arg;
    if (s->n_report < 8)
        snprintf(s->report[s->n_report++], sizeof(s->report[0]), "%s|%s|%s|%s|%lld", row->rule,
                 row->purpose, row->outcome, row->reason, (long long)row->count);
}

static void test_store_show_customer_contacts_alerts_and_report(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    cad_snapshot_buf_t buf = {0};
    cad_snapshot_t snap;
    cad_verdict_t v[3];
    cad_decision_t dec;
    int64_t key;
    decide(f, &key, &buf, &snap, v, &dec);
    cad_contact_input_t p2 = {.id = "p2",
                              .customer_id = "c1",
                              .roles = "user,billing",
                              .email = "p2@c1.example",
                              .phone = "+15555550100"};
    p2.consent[1] = (cad_consent_input_t){.kind = "sms", .opted_in = false};
    assert_int_equal(cad_store_contact_upsert(f->st, &p2, T0, f->err), 0);
    int64_t p2key = query_int(f, "SELECT key FROM contacts WHERE id = 'p2'");
    assert_int_equal(cad_store_contact_mark_unusable(f->st, p2key, "email", CAD_ADDRESS_EMAIL,
                                                     "bounce", T0, f->err),
                     0);
    assert_int_equal(cad_store_customer_pause(f->st, "c1", true, T0, f->err), 0);
    assert_int_equal(cad_store_record_decision(f->st, &f->pb, &snap, &dec, T0, f->err), 0);

    shown_t s = {0};
    assert_int_equal(cad_store_customer_get(f->st, "c1", on_customer, &s, f->err), 0);
    assert_string_equal(s.customer, "c1|Europe/London|active|default|reporting|{}|1");
    assert_int_equal(cad_store_customer_get(f->st, "ghost", on_customer, &s, f->err),
                     -CAD_ENOTFOUND);
    assert_int_equal(cad_store_contacts_foreach(f->st, "c1", on_contact, &s, f->err), 2);
    assert_string_equal(s.contacts[0], "p1|champion|p1@c1.example|1|-1|");
    assert_string_equal(s.contacts[1], "p2|user,billing|p2@c1.example|-1|0|email");
    assert_int_equal(cad_store_contacts_foreach(f->st, "ghost", on_contact, &s, f->err),
                     -CAD_ENOTFOUND);
    assert_int_equal(cad_store_alerts_foreach(f->st, true, 10, on_alert, &s, f->err), 1);
    assert_string_equal(s.alerts[0], "silent|c1||1");

    assert_int_equal(cad_store_report_foreach(f->st, T0, T0 + CAD_DAY, on_report, &s, f->err), 2);
    assert_string_equal(s.report[0], "review_request|ask|dropped|stale|1");
    assert_string_equal(s.report[1], "welcome_guide|value|pending||1");
    s.n_report = 0;
    assert_int_equal(cad_store_report_foreach(f->st, T0 + 1, T0 + CAD_DAY, on_report, &s, f->err),
                     0);
    assert_int_equal(cad_store_report_foreach(f->st, T0, T0 - 1, on_report, &s, f->err),
                     -CAD_EINVAL);

    cad_store_counts_t c;
    assert_int_equal(cad_store_counts(f->st, &c, f->err), 0);
    assert_int_equal(c.dropped, 1);
    assert_int_equal(c.alerts_silent, 1);
    assert_int_equal(c.alerts_content_gap, 0);
    assert_int_equal(c.customers_paused, 1);
    cad_snapshot_buf_free(&buf);
}

typedef struct ops {
    int n;
    char rows[8][200];
} ops_t;

static void ops_add(ops_t *o, const char *text)
{
    if (o->n < 8)
        snprintf(o->rows[o->n++], sizeof(o->rows[0]), "%s", text);
}

static void on_customer_list(const cad_customer_row_t *row, void *arg)
{
    ops_add(arg, row->id);
}

static void on_calendar(const cad_calendar_row_t *row, void *arg)
{
    char text[200];
    snprintf(text, sizeof(text), "%s|%s|%s|%lld", row->customer_id, row->rule, row->verdict,
             (long long)row->until);
    ops_add(arg, text);
}

static void on_key(int64_t key, void *arg)
{
    char text[32];
    snprintf(text, sizeof(text), "%lld", (long long)key);
    ops_add(arg, text);
}

static void on_holdout(const cad_holdout_row_t *row, void *arg)
{
    char text[200];
    snprintf(text, sizeof(text), "%s|%s|%lld|%lld|%lld", row->rule, row->group,
             (long long)row->customers, (long long)row->churned, (long long)row->reactivated);
    ops_add(arg, text);
}

static void on_touch_count(const char *state, const char *channel, int64_t count, void *arg)
{
    char text[200];
    snprintf(text, sizeof(text), "%s|%s|%lld", state, channel, (long long)count);
    ops_add(arg, text);
}

static void test_store_listings_calendar_holdout_and_per_channel_claims(void **state)
{
    fixture_t *f = *state;
    open_store(f);
    cad_snapshot_buf_t buf = {0};
    cad_snapshot_t snap;
    cad_verdict_t v[3];
    cad_decision_t dec;
    int64_t key;
    decide(f, &key, &buf, &snap, v, &dec);
    int64_t k2 = add_customer(f, "c2", "former", "enterprise", NULL);
    v[2].kind = CAD_VERDICT_WAIT;
    v[2].until = T0 + 10 * CAD_DAY;
    assert_int_equal(cad_store_record_decision(f->st, &f->pb, &snap, &dec, T0, f->err), 0);

    ops_t o = {0};
    assert_int_equal(
        cad_store_customers_foreach(f->st, "active", NULL, 0, on_customer_list, &o, f->err), 1);
    assert_string_equal(o.rows[0], "c1");
    assert_int_equal(
        cad_store_customers_foreach(f->st, NULL, "enterprise", 0, on_customer_list, &o, f->err), 1);
    assert_string_equal(o.rows[1], "c2");
    assert_int_equal(
        cad_store_customers_foreach(f->st, NULL, NULL, 1, on_customer_list, &o, f->err), 1);

    /* the calendar: soonest first, with the verdict that explains the wait */
    memset(&o, 0, sizeof(o));
    assert_int_equal(cad_store_calendar_foreach(f->st, NULL, NULL, 10, on_calendar, &o, f->err), 2);
    assert_string_equal(o.rows[0], "c2|||0");
    char want[200];
    snprintf(want, sizeof(want), "c1|anniversary_thanks|wait|%lld", (long long)(T0 + 10 * CAD_DAY));
    assert_string_equal(o.rows[1], want);
    memset(&o, 0, sizeof(o));
    assert_int_equal(
        cad_store_calendar_foreach(f->st, NULL, "anniversary_thanks", 10, on_calendar, &o, f->err),
        1);
    assert_string_equal(o.rows[0], want);

    memset(&o, 0, sizeof(o));
    assert_int_equal(cad_store_due_between_foreach(f->st, T0, T0 + CAD_HOUR, on_key, &o, f->err),
                     2);
    assert_int_equal(
        cad_store_due_between_foreach(f->st, T0 + 1, T0 + CAD_HOUR, on_key, &o, f->err), 1);
    char k1text[32];
    snprintf(k1text, sizeof(k1text), "%lld", (long long)key);
    assert_string_equal(o.rows[2], k1text);

    memset(&o, 0, sizeof(o));
    assert_int_equal(cad_store_touch_counts_foreach(f->st, on_touch_count, &o, f->err), 2);
    assert_string_equal(o.rows[0], "dropped||1");
    assert_string_equal(o.rows[1], "queued|email|1");

    /* holdout: c2 held out of welcome_guide and churned later; c1 treated */
    sqlite3 *db;
    sqlite3_open(f->path, &db);
    char sql[512];
    snprintf(
        sql, sizeof(sql),
        "INSERT INTO touches (idempotency_key, customer_key, rule, purpose, trigger_key, state,"
        " decided_at, due_at, expires_at, updated_at, last_error) VALUES ('c2/welcome_guide/x',"
        " %lld, 'welcome_guide', 'value', 1, 'dropped', %lld, %lld, %lld, %lld, 'held_out')",
        (long long)k2, (long long)T0, (long long)T0, (long long)T0, (long long)T0);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    add_event(f, "c2-churn", "c2", "churned", T0 + 10);
    memset(&o, 0, sizeof(o));
    assert_int_equal(cad_store_holdout_foreach(f->st, T0, T0 + CAD_DAY, on_holdout, &o, f->err), 2);
    assert_string_equal(o.rows[0], "welcome_guide|held_out|1|1|0");
    assert_string_equal(o.rows[1], "welcome_guide|treated|1|0|0");
    assert_int_equal(cad_store_holdout_foreach(f->st, T0, T0 - 1, on_holdout, &o, f->err),
                     -CAD_EINVAL);

    /* per channel: the dispatcher claims and releases */
    assert_int_equal(cad_store_outbox_next_due_channel(f->st, "email"), T0);
    assert_int_equal(cad_store_outbox_next_due_channel(f->st, "sms"), CAD_TIME_NEVER);
    claimed_t c = {0};
    assert_int_equal(cad_store_outbox_claim_channel(f->st, "sms", T0, 10, on_claim, &c, f->err), 0);
    assert_int_equal(cad_store_outbox_claim_channel(f->st, "", T0, 10, on_claim, &c, f->err),
                     -CAD_EINVAL);
    assert_int_equal(cad_store_outbox_claim_channel(f->st, "email", T0, 10, on_claim, &c, f->err),
                     1);
    assert_int_equal(c.attempt[0], 0);
    /* released at shutdown: queued again, the attempt not counted */
    assert_int_equal(cad_store_outbox_release(f->st, c.keys[0], T0 + 5, f->err), 0);
    assert_int_equal(query_int(f, "SELECT attempt FROM touches WHERE state = 'queued'"), 0);
    assert_int_equal(cad_store_outbox_release(f->st, c.keys[0], T0 + 6, f->err), -CAD_EINVAL);
    assert_int_equal(cad_store_outbox_next_due_channel(f->st, "email"), T0 + 5);
    cad_snapshot_buf_free(&buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_store_creates_current_schema_on_empty_file, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_migrates_v1_database_keeping_data, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_refuses_newer_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_open_bad_path_names_it, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_store_customer_upsert_inserts_then_updates_given_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_customer_bad_fields_name_the_field, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_contact_needs_customer_and_valid_addresses,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_duplicate_event_is_eexist_and_changes_nothing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_store_snapshot_resolves_roles_reachability_events_history, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_store_unusable_mark_holds_for_its_address_until_cleared, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_store_record_decision_queues_touch_traces_drops_and_alerts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_longest_key_queued_and_refusal_keeps_batch,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_alerts_close_across_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_outbox_claim_and_outcome_transitions, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_outbox_dead_and_expired_touches_fail, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_maybe_delivered_touch_counts_as_sent, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_requeue_in_flight_after_crash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_counts_and_schedule, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_traces_newest_first_and_bounded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_batch_rollback_and_failed_write_inside_batch,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_disk_full_rolls_back_whole_write, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_checkpoints_run_on_their_own_thread, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_failed_checkpoint_is_counted_and_recovers, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_wal_stays_bounded_under_back_to_back_commits,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_readonly_refuses_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_open_copy_writes_only_to_memory, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_outbox_requeue_dead_in_bulk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_outbox_listing_cancel_and_operator_requeue,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_show_customer_contacts_alerts_and_report, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_listings_calendar_holdout_and_per_channel_claims,
                                        setup, teardown),
    };
    int r = cmocka_run_group_tests_name("store", tests, NULL, NULL);
    cad_tz_registry_free();
    return r;
}
