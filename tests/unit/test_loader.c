/*
 * test_loader.c — JSONL and CSV imports: good rows, bad rows with their line
 * and field, duplicates, relative times, batches, store failures, and the
 * shipped demo data against the example configuration.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "engine.h"
#include "loader.h"
#include "store.h"
#include "tz.h"

#define NOW ((cad_time_t)1780000000) /* 2026-05-28T20:26:40Z */

typedef struct fixture {
    char dir[64];
    char path[128];
    cad_store_t *st;
    cad_playbook_t pb;
    char err[CAD_ERRBUF];
    char rejects[32][CAD_ERRBUF + 128];
    int n_rejects;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/cad-loader-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/cadence.db", f->dir);
    cad_playbook_init_builtins(&f->pb);
    snprintf(f->pb.topics[0], CAD_NAME_MAX, "reporting");
    snprintf(f->pb.topics[1], CAD_NAME_MAX, "security");
    f->pb.n_topics = 2;
    snprintf(f->pb.channels[0].name, CAD_NAME_MAX, "email");
    f->pb.channels[0].address = CAD_ADDRESS_EMAIL;
    snprintf(f->pb.channels[1].name, CAD_NAME_MAX, "sms");
    f->pb.channels[1].address = CAD_ADDRESS_PHONE;
    f->pb.n_channels = 2;
    f->pb.policies = calloc(1, sizeof(cad_policy_t));
    snprintf(f->pb.policies[0].name, CAD_NAME_MAX, "default");
    f->pb.n_policies = 1;
    if (cad_store_open(f->path, CAD_SYNC_NORMAL, &f->st, f->err) != 0)
        return -1;
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

static void on_reject(const char *message, void *arg)
{
    fixture_t *f = arg;
    if (f->n_rejects < 32)
        snprintf(f->rejects[f->n_rejects++], sizeof(f->rejects[0]), "%s", message);
}

/* Imports `text` and returns cad_import's result; rejections land in f. */
static int import_text(fixture_t *f, enum cad_import_kind kind, enum cad_import_format format,
                       const char *source, const char *text, cad_import_report_t *rep)
{
    FILE *in = fmemopen((void *)text, strlen(text), "r");
    assert_non_null(in);
    cad_import_options_t opt = {.kind = kind,
                                .format = format,
                                .source = source,
                                .now = NOW,
                                .on_reject = on_reject,
                                .arg = f};
    f->n_rejects = 0;
    int r = cad_import(f->st, &f->pb, in, &opt, rep, f->err);
    fclose(in);
    return r;
}

static bool rejected_with(const fixture_t *f, const char *prefix, const char *text)
{
    for (int i = 0; i < f->n_rejects; i++)
        if (strncmp(f->rejects[i], prefix, strlen(prefix)) == 0 && strstr(f->rejects[i], text))
            return true;
    return false;
}

static const char customers_jsonl[] =
    "{\"id\":\"acme\",\"name\":\"Acme\",\"timezone\":\"Europe/London\",\"stage\":\"active\","
    "\"segment\":\"default\",\"interests\":[\"reporting\",\"security\"],"
    "\"attributes\":{\"plan\":\"gold\"},\"created_at\":\"2025-01-15\"}\n"
    "\n"
    "{\"id\":\"globex\",\"stage\":\"onboarding\",\"created_at\":\"now-40d\",\"paused\":true}\n";

static void test_loader_jsonl_customers_contacts_events(void **state)
{
    fixture_t *f = *state;
    cad_import_report_t rep;
    assert_int_equal(
        import_text(f, CAD_IMPORT_CUSTOMERS, CAD_IMPORT_JSONL, "c.jsonl", customers_jsonl, &rep),
        0);
    assert_int_equal(rep.records, 2);
    assert_int_equal(rep.accepted, 2);
    assert_int_equal(rep.rejected, 0);
    assert_string_equal(rep.first_error, "");

    const char *contacts =
        "{\"id\":\"acme-ann\",\"customer\":\"acme\",\"name\":\"Ann Lee\",\"first_name\":\"Ann\","
        "\"roles\":[\"decision_maker\",\"billing\"],\"email\":\"ann@acme.example\","
        "\"phone\":\"+447700900123\",\"consent\":{\"email\":{\"opted_in\":true,\"at\":\"now-100d\","
        "\"source\":\"signup form\"},\"sms\":{\"opted_in\":false}}}\n";
    assert_int_equal(
        import_text(f, CAD_IMPORT_CONTACTS, CAD_IMPORT_JSONL, "p.jsonl", contacts, &rep), 0);
    assert_int_equal(rep.accepted, 1);

    const char *events =
        "{\"id\":\"e1\",\"customer\":\"acme\",\"type\":\"purchase\",\"at\":\"now-40d\","
        "\"data\":{\"plan\":\"gold\"}}\n"
        "{\"id\":\"e2\",\"customer\":\"acme\",\"type\":\"renewal_due\",\"at\":\"2026-05-01T09:00:"
        "00Z\"}\n"
        "{\"id\":\"e3\",\"customer\":\"acme\",\"type\":\"invoice_issued\",\"at\":\"now+2h\"}\n";
    assert_int_equal(import_text(f, CAD_IMPORT_EVENTS, CAD_IMPORT_JSONL, "e.jsonl", events, &rep),
                     0);
    assert_int_equal(rep.accepted, 3);
    assert_int_equal(rep.duplicates, 0);

    int64_t key;
    assert_int_equal(cad_store_customer_key(f->st, "acme", &key, f->err), 0);
    cad_snapshot_buf_t buf = {0};
    cad_snapshot_t snap;
    assert_int_equal(cad_store_load_snapshot(f->st, &f->pb, key, &buf, &snap, f->err), 0);
    assert_int_equal(snap.customer.stage, CAD_STAGE_ACTIVE);
    assert_int_equal(snap.customer.interests, 3u);
    assert_int_equal(snap.customer.created_at, 1736899200); /* 2025-01-15 */
    assert_false(snap.customer.paused);
    assert_int_equal(snap.n_contacts, 1);
    assert_int_equal(snap.contacts[0].roles,
                     (1u << CAD_ROLE_DECISION_MAKER) | (1u << CAD_ROLE_BILLING));
    assert_int_equal(snap.contacts[0].reachable, 1u << 0);
    assert_int_equal(snap.contacts[0].no_consent, 1u << 1);
    assert_int_equal(snap.n_events, 3);
    assert_int_equal(snap.events[0].at, NOW - 40 * CAD_DAY);
    assert_int_equal(snap.events[1].at, 1777626000);
    assert_int_equal(snap.events[2].at, NOW + 2 * CAD_HOUR);

    assert_int_equal(cad_store_customer_key(f->st, "globex", &key, f->err), 0);
    assert_int_equal(cad_store_load_snapshot(f->st, &f->pb, key, &buf, &snap, f->err), 0);
    assert_true(snap.customer.paused);
    assert_int_equal(snap.customer.created_at, NOW - 40 * CAD_DAY);
    assert_int_equal(snap.customer.stage, CAD_STAGE_ONBOARDING);
    cad_snapshot_buf_free(&buf);
}

/* The contact's channel bits (reachable, no_consent) after an import. */
static void contact_bits(fixture_t *f, unsigned *reachable, unsigned *no_consent)
{
    int64_t key;
    assert_int_equal(cad_store_customer_key(f->st, "acme", &key, f->err), 0);
    cad_snapshot_buf_t buf = {0};
    cad_snapshot_t snap;
    assert_int_equal(cad_store_load_snapshot(f->st, &f->pb, key, &buf, &snap, f->err), 0);
    assert_int_equal(snap.n_contacts, 1);
    *reachable = snap.contacts[0].reachable;
    *no_consent = snap.contacts[0].no_consent;
    cad_snapshot_buf_free(&buf);
}

/* A JSON null removes an email or phone; an absent field, an empty string
 * and an empty CSV cell keep it. */
static void test_loader_null_address_removes_it(void **state)
{
    fixture_t *f = *state;
    cad_import_report_t rep;
    assert_int_equal(
        import_text(f, CAD_IMPORT_CUSTOMERS, CAD_IMPORT_JSONL, "c.jsonl", customers_jsonl, &rep),
        0);
    const char *contact =
        "{\"id\":\"acme-ann\",\"customer\":\"acme\",\"email\":\"ann@acme.example\","
        "\"phone\":\"+447700900123\",\"consent\":{\"email\":{\"opted_in\":true}}}\n";
    assert_int_equal(
        import_text(f, CAD_IMPORT_CONTACTS, CAD_IMPORT_JSONL, "p.jsonl", contact, &rep), 0);
    unsigned reachable, no_consent;
    contact_bits(f, &reachable, &no_consent);
    assert_int_equal(reachable, 1u << 0);  /* email */
    assert_int_equal(no_consent, 1u << 1); /* a phone without SMS consent */

    const char *keep = "{\"id\":\"acme-ann\",\"customer\":\"acme\",\"email\":\"\"}\n";
    assert_int_equal(import_text(f, CAD_IMPORT_CONTACTS, CAD_IMPORT_JSONL, "p.jsonl", keep, &rep),
                     0);
    assert_int_equal(rep.accepted, 1);
    const char *keep_csv = "id,customer,email,phone\nacme-ann,acme,,\n";
    assert_int_equal(import_text(f, CAD_IMPORT_CONTACTS, CAD_IMPORT_CSV, "p.csv", keep_csv, &rep),
                     0);
    assert_int_equal(rep.accepted, 1);
    contact_bits(f, &reachable, &no_consent);
    assert_int_equal(reachable, 1u << 0);
    assert_int_equal(no_consent, 1u << 1);

    const char *no_phone = "{\"id\":\"acme-ann\",\"customer\":\"acme\",\"phone\":null}\n";
    assert_int_equal(
        import_text(f, CAD_IMPORT_CONTACTS, CAD_IMPORT_JSONL, "p.jsonl", no_phone, &rep), 0);
    contact_bits(f, &reachable, &no_consent);
    assert_int_equal(reachable, 1u << 0);
    assert_int_equal(no_consent, 0);

    /* a consent for an address being removed is refused, the row kept whole */
    const char *bad = "{\"id\":\"acme-ann\",\"customer\":\"acme\",\"email\":null,"
                      "\"consent\":{\"email\":{\"opted_in\":true}}}\n";
    assert_int_equal(import_text(f, CAD_IMPORT_CONTACTS, CAD_IMPORT_JSONL, "p.jsonl", bad, &rep),
                     0);
    assert_int_equal(rep.rejected, 1);
    assert_true(rejected_with(f, "p.jsonl:1", "consent.email: given without an email address"));
    contact_bits(f, &reachable, &no_consent);
    assert_int_equal(reachable, 1u << 0);

    const char *no_email = "{\"id\":\"acme-ann\",\"customer\":\"acme\",\"email\":null}\n";
    assert_int_equal(
        import_text(f, CAD_IMPORT_CONTACTS, CAD_IMPORT_JSONL, "p.jsonl", no_email, &rep), 0);
    contact_bits(f, &reachable, &no_consent);
    assert_int_equal(reachable, 0);
    assert_int_equal(no_consent, 0);
}

static void test_loader_csv_quoting_lists_and_consent(void **state)
{
    fixture_t *f = *state;
    cad_import_report_t rep;
    const char *customers = "\xef\xbb\xbfid,name,timezone,stage,interests,attributes\r\n"
                            "acme,\"Acme, Inc.\",Asia/Tokyo,active,reporting;security,"
                            "\"{\"\"plan\"\":\"\"gold\"\"}\"\r\n"
                            "globex,Globex,UTC,prospect,,\"{\r\n\"\"tier\"\": 2}\"\r\n"
                            "initech,\"Initech \"\"The\"\" Company\",,at_risk,security,\n";
    assert_int_equal(import_text(f, CAD_IMPORT_CUSTOMERS, CAD_IMPORT_CSV, "c.csv", customers, &rep),
                     0);
    if (rep.rejected)
        fail_msg("%s", rep.first_error);
    assert_int_equal(rep.accepted, 3);

    const char *contacts =
        "id,customer,first_name,roles,email,phone,email_opted_in,email_consent_at,sms_opted_in\n"
        "a1,acme,Ann,decision_maker; champion,ann@acme.example,+819012345678,yes,now-3d,true\n"
        "a2,acme,Bob,user,bob@acme.example,,no,,\n";
    assert_int_equal(import_text(f, CAD_IMPORT_CONTACTS, CAD_IMPORT_CSV, "p.csv", contacts, &rep),
                     0);
    if (rep.rejected)
        fail_msg("%s", rep.first_error);
    assert_int_equal(rep.accepted, 2);

    const char *events = "id,customer,type,at,data\n"
                         "e1,acme,purchase,now-14d,\"{\"\"seats\"\":4}\"\n"
                         "e2,globex,churned,2026-01-01,\n";
    assert_int_equal(import_text(f, CAD_IMPORT_EVENTS, CAD_IMPORT_CSV, "e.csv", events, &rep), 0);
    assert_int_equal(rep.accepted, 2);

    int64_t key;
    assert_int_equal(cad_store_customer_key(f->st, "acme", &key, f->err), 0);
    cad_snapshot_buf_t buf = {0};
    cad_snapshot_t snap;
    assert_int_equal(cad_store_load_snapshot(f->st, &f->pb, key, &buf, &snap, f->err), 0);
    assert_string_equal(cad_tz_name(snap.customer.tz), "Asia/Tokyo");
    assert_int_equal(snap.customer.interests, 3u);
    assert_int_equal(snap.n_contacts, 2);
    assert_int_equal(snap.contacts[0].roles,
                     (1u << CAD_ROLE_DECISION_MAKER) | (1u << CAD_ROLE_CHAMPION));
    assert_int_equal(snap.contacts[0].reachable, 3u);
    assert_int_equal(snap.contacts[1].reachable, 0u);
    assert_int_equal(snap.contacts[1].no_consent, 1u);
    assert_int_equal(snap.n_events, 1);
    assert_int_equal(snap.events[0].at, NOW - 14 * CAD_DAY);
    cad_snapshot_buf_free(&buf);
}

static void test_loader_bad_rows_report_line_and_field_good_rows_stay(void **state)
{
    fixture_t *f = *state;
    cad_import_report_t rep;
    const char *customers = "{\"id\":\"ok1\",\"stage\":\"active\"}\n"                    /* 1 */
                            "{\"id\":\"bad-stage\",\"stage\":\"customer\"}\n"            /* 2 */
                            "{\"id\":\"bad-tz\",\"timezone\":\"Europe/Atlantis\"}\n"     /* 3 */
                            "{\"id\":\"broken\",\n"                                      /* 4 */
                            "{\"id\":\"typo\",\"stgae\":\"active\"}\n"                   /* 5 */
                            "[1,2,3]\n"                                                  /* 6 */
                            "{\"name\":\"no id\"}\n"                                     /* 7 */
                            "{\"id\":\"bad-time\",\"created_at\":\"last tuesday\"}\n"    /* 8 */
                            "{\"id\":\"bad-attr\",\"attributes\":[1]}\n"                 /* 9 */
                            "{\"id\":\"bad-list\",\"interests\":\"reporting\"}\n"        /* 10 */
                            "{\"id\":\"bad-rel\",\"created_at\":\"now-3x\"}\n"           /* 11 */
                            "{\"id\":\"ok2\",\"stage\":\"former\",\"paused\":\"yes\"}\n" /* 12 */
                            "{\"id\":\"ok3\",\"stage\":\"former\"}\n";                   /* 13 */
    assert_int_equal(
        import_text(f, CAD_IMPORT_CUSTOMERS, CAD_IMPORT_JSONL, "bad.jsonl", customers, &rep), 0);
    assert_int_equal(rep.records, 13);
    assert_int_equal(rep.accepted, 2);
    assert_int_equal(rep.rejected, 11);
    assert_true(rejected_with(f, "bad.jsonl:2:", "field stage"));
    assert_true(rejected_with(f, "bad.jsonl:3:", "field timezone"));
    assert_true(rejected_with(f, "bad.jsonl:4:", "not JSON"));
    assert_true(rejected_with(f, "bad.jsonl:5:", "field stgae: unknown field"));
    assert_true(rejected_with(f, "bad.jsonl:6:", "not a JSON object"));
    assert_true(rejected_with(f, "bad.jsonl:7:", "field id: required"));
    assert_true(rejected_with(f, "bad.jsonl:8:", "field created_at"));
    assert_true(rejected_with(f, "bad.jsonl:9:", "field attributes"));
    assert_true(rejected_with(f, "bad.jsonl:10:", "field interests"));
    assert_true(rejected_with(f, "bad.jsonl:11:", "field created_at"));
    assert_true(rejected_with(f, "bad.jsonl:12:", "field paused"));
    assert_non_null(strstr(rep.first_error, "bad.jsonl:2:"));
    cad_store_counts_t c;
    assert_int_equal(cad_store_counts(f->st, &c, f->err), 0);
    assert_int_equal(c.customers, 2);

    const char *contacts =
        "{\"id\":\"p1\",\"customer\":\"ok1\",\"roles\":[\"user\"],\"email\":\"p1@x.example\"}\n"
        "{\"id\":\"p2\",\"customer\":\"ghost\",\"roles\":[\"user\"]}\n"
        "{\"id\":\"p3\",\"customer\":\"ok1\",\"roles\":[\"ceo\"]}\n"
        "{\"id\":\"p4\",\"customer\":\"ok1\",\"email\":\"not an email\"}\n"
        "{\"id\":\"p5\",\"customer\":\"ok1\",\"phone\":\"12345\"}\n"
        "{\"id\":\"p6\",\"customer\":\"ok1\",\"consent\":{\"email\":{\"opted_in\":true}}}\n"
        "{\"id\":\"p7\",\"customer\":\"ok1\",\"email\":\"p7@x.example\","
        "\"consent\":{\"email\":{\"opted_in\":\"yes\"}}}\n"
        "{\"id\":\"p8\",\"customer\":\"ok1\",\"email\":\"p8@x.example\","
        "\"consent\":{\"fax\":{\"opted_in\":true}}}\n";
    assert_int_equal(
        import_text(f, CAD_IMPORT_CONTACTS, CAD_IMPORT_JSONL, "p.jsonl", contacts, &rep), 0);
    assert_int_equal(rep.accepted, 1);
    assert_int_equal(rep.rejected, 7);
    assert_true(rejected_with(f, "p.jsonl:2:", "ghost"));
    assert_true(rejected_with(f, "p.jsonl:3:", "unknown role 'ceo'"));
    assert_true(rejected_with(f, "p.jsonl:4:", "field email"));
    assert_true(rejected_with(f, "p.jsonl:5:", "field phone"));
    assert_true(rejected_with(
        f, "p.jsonl:6:", "contact p6: field consent.email: given without an email address"));
    assert_true(rejected_with(f, "p.jsonl:7:", "consent.email.opted_in"));
    assert_true(rejected_with(f, "p.jsonl:8:", "consent.fax"));

    const char *events =
        "{\"id\":\"e1\",\"customer\":\"ok1\",\"type\":\"purchase\",\"at\":\"now\"}\n"
        "{\"id\":\"e2\",\"customer\":\"ok1\",\"type\":\"purchased\",\"at\":\"now\"}\n"
        "{\"id\":\"e3\",\"customer\":\"ok1\",\"type\":\"purchase\"}\n"
        "{\"id\":\"e4\",\"customer\":\"ok1\",\"type\":\"purchase\",\"at\":\"2026-13-01\"}\n"
        "{\"id\":\"e5\",\"customer\":\"ok1\",\"type\":\"purchase\",\"at\":\"now\","
        "\"data\":\"x\"}\n";
    assert_int_equal(import_text(f, CAD_IMPORT_EVENTS, CAD_IMPORT_JSONL, "e.jsonl", events, &rep),
                     0);
    assert_int_equal(rep.accepted, 1);
    assert_int_equal(rep.rejected, 4);
    assert_true(rejected_with(f, "e.jsonl:2:", "unknown event type 'purchased'"));
    assert_true(rejected_with(f, "e.jsonl:3:", "field at: required"));
    assert_true(rejected_with(f, "e.jsonl:4:", "field at"));
    assert_true(rejected_with(f, "e.jsonl:5:", "field data"));
}

static void test_loader_csv_bad_header_and_bad_records(void **state)
{
    fixture_t *f = *state;
    cad_import_report_t rep;
    assert_int_equal(import_text(f, CAD_IMPORT_CUSTOMERS, CAD_IMPORT_CSV, "c.csv",
                                 "id,name,stgae\nacme,Acme,active\n", &rep),
                     -CAD_EINVAL);
    assert_non_null(strstr(f->err, "c.csv:1:"));
    assert_non_null(strstr(f->err, "stgae"));
    assert_int_equal(
        import_text(f, CAD_IMPORT_CUSTOMERS, CAD_IMPORT_CSV, "c.csv", "name,stage\n", &rep),
        -CAD_EINVAL);
    assert_non_null(strstr(f->err, "no 'id' column"));
    assert_int_equal(import_text(f, CAD_IMPORT_CUSTOMERS, CAD_IMPORT_CSV, "c.csv", "", &rep),
                     -CAD_EINVAL);
    assert_int_equal(import_text(f, CAD_IMPORT_CUSTOMERS, CAD_IMPORT_CSV, "c.csv", "id,id\n", &rep),
                     -CAD_EINVAL);
    const char *csv = "id,stage,attributes\n"
                      "a,active,\n"        /* 2 */
                      "b,active\n"         /* 3: too few cells */
                      "c,act\"ive,\n"      /* 4: stray quote */
                      "d,onboarding,\"{\n" /* 5-6: quoted newline */
                      "\"\"k\"\": 1}\"\n"  /* */
                      "e,sleeping,\n"      /* 7: bad stage */
                      "g,\"active\"ly,\n"  /* 8: text after a closing quote */
                      "f,\"unterminated,\n";
    cad_store_counts_t c;
    assert_int_equal(import_text(f, CAD_IMPORT_CUSTOMERS, CAD_IMPORT_CSV, "c.csv", csv, &rep), 0);
    assert_int_equal(rep.accepted, 2);
    assert_int_equal(rep.rejected, 5);
    assert_true(rejected_with(f, "c.csv:3:", "2 cells, the header has 3"));
    assert_true(rejected_with(f, "c.csv:4:", "quote"));
    assert_true(rejected_with(f, "c.csv:7:", "field stage"));
    assert_true(rejected_with(f, "c.csv:8:", "after a closing quote"));
    assert_true(rejected_with(f, "c.csv:9:", "unterminated"));
    assert_int_equal(cad_store_counts(f->st, &c, f->err), 0);
    assert_int_equal(c.customers, 2);
}

static void test_loader_duplicate_events_counted_not_errors(void **state)
{
    fixture_t *f = *state;
    cad_import_report_t rep;
    assert_int_equal(import_text(f, CAD_IMPORT_CUSTOMERS, CAD_IMPORT_JSONL, "c.jsonl",
                                 "{\"id\":\"acme\"}\n", &rep),
                     0);
    const char *events =
        "{\"id\":\"inv-1\",\"customer\":\"acme\",\"type\":\"invoice_issued\",\"at\":\"now-2h\"}\n"
        "{\"id\":\"inv-1\",\"customer\":\"acme\",\"type\":\"invoice_issued\",\"at\":\"now-2h\"}\n"
        "{\"id\":\"inv-2\",\"customer\":\"acme\",\"type\":\"invoice_issued\",\"at\":\"now-1h\"}\n";
    assert_int_equal(import_text(f, CAD_IMPORT_EVENTS, CAD_IMPORT_JSONL, "e.jsonl", events, &rep),
                     0);
    assert_int_equal(rep.accepted, 2);
    assert_int_equal(rep.duplicates, 1);
    assert_int_equal(rep.rejected, 0);
    /* importing the same file again changes nothing (R13) */
    assert_int_equal(import_text(f, CAD_IMPORT_EVENTS, CAD_IMPORT_JSONL, "e.jsonl", events, &rep),
                     0);
    assert_int_equal(rep.accepted, 0);
    assert_int_equal(rep.duplicates, 3);
    cad_store_counts_t c;
    assert_int_equal(cad_store_counts(f->st, &c, f->err), 0);
    assert_int_equal(c.events, 2);
}

static void test_loader_relative_and_absolute_times(void **state)
{
    fixture_t *f = *state;
    cad_time_t t;
    assert_int_equal(cad_import_time_parse("now", NOW, &t, f->err), 0);
    assert_int_equal(t, NOW);
    assert_int_equal(cad_import_time_parse("now-40d", NOW, &t, f->err), 0);
    assert_int_equal(t, NOW - 40 * CAD_DAY);
    assert_int_equal(cad_import_time_parse("now+2h", NOW, &t, f->err), 0);
    assert_int_equal(t, NOW + 2 * CAD_HOUR);
    assert_int_equal(cad_import_time_parse("now-1d12h", NOW, &t, f->err), 0);
    assert_int_equal(t, NOW - 36 * CAD_HOUR);
    assert_int_equal(cad_import_time_parse("2026-03-08T09:30:00+01:00", NOW, &t, f->err), 0);
    assert_int_equal(t, 1772958600);
    assert_int_equal(cad_import_time_parse("now*2", NOW, &t, f->err), -CAD_EINVAL);
    assert_non_null(strstr(f->err, "now*2"));
    assert_int_equal(cad_import_time_parse("now-", NOW, &t, f->err), -CAD_EINVAL);
    assert_int_equal(cad_import_time_parse("nowhere", NOW, &t, f->err), -CAD_EINVAL);
    assert_int_equal(cad_import_time_parse("yesterday", NOW, &t, f->err), -CAD_EINVAL);
}

static void test_loader_without_a_clock_uses_the_wall_clock(void **state)
{
    fixture_t *f = *state;
    const char *text = "{\"id\":\"late\",\"created_at\":\"now-1d\"}\n";
    FILE *in = fmemopen((void *)text, strlen(text), "r");
    cad_import_options_t opt = {.kind = CAD_IMPORT_CUSTOMERS, .format = CAD_IMPORT_JSONL};
    cad_import_report_t rep;
    cad_time_t before = (cad_time_t)time(NULL);
    assert_int_equal(cad_import(f->st, &f->pb, in, &opt, &rep, f->err), 0);
    fclose(in);
    cad_time_t after = (cad_time_t)time(NULL);
    int64_t key;
    assert_int_equal(cad_store_customer_key(f->st, "late", &key, f->err), 0);
    cad_snapshot_buf_t buf = {0};
    cad_snapshot_t snap;
    assert_int_equal(cad_store_load_snapshot(f->st, &f->pb, key, &buf, &snap, f->err), 0);
    assert_true(snap.customer.created_at >= before - CAD_DAY);
    assert_true(snap.customer.created_at <= after - CAD_DAY);
    cad_snapshot_buf_free(&buf);
}

static void test_loader_names_and_formats(void **state)
{
    assert_int_equal(cad_import_kind_parse("contacts"), CAD_IMPORT_CONTACTS);
    assert_int_equal(cad_import_kind_parse("people"), -1);
    assert_string_equal(cad_import_kind_name(CAD_IMPORT_EVENTS), "events");
    assert_int_equal(cad_import_format_parse("csv"), CAD_IMPORT_CSV);
    assert_int_equal(cad_import_format_parse("ndjson"), CAD_IMPORT_JSONL);
    assert_int_equal(cad_import_format_parse("xml"), -1);
    assert_int_equal(cad_import_format_from_path("/x/customers.CSV"), CAD_IMPORT_CSV);
    assert_int_equal(cad_import_format_from_path("events.jsonl"), CAD_IMPORT_JSONL);
    assert_int_equal(cad_import_format_from_path("events"), -1);
    assert_int_equal(cad_import_format_from_path("dir.d/events"), -1);
}

static void test_loader_batches_and_store_failure_keep_committed_rows(void **state)
{
    fixture_t *f = *state;
    /* 25 customers in batches of 4 */
    static char text[8192];
    size_t n = 0;
    for (int i = 0; i < 25; i++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "{\"id\":\"cust-%02d\"}\n", i);
    FILE *in = fmemopen(text, n, "r");
    cad_import_options_t opt = {
        .kind = CAD_IMPORT_CUSTOMERS, .format = CAD_IMPORT_JSONL, .now = NOW, .batch_rows = 4};
    cad_import_report_t rep;
    assert_int_equal(cad_import(f->st, &f->pb, in, &opt, &rep, f->err), 0);
    fclose(in);
    assert_int_equal(rep.accepted, 25);
    assert_false(cad_store_in_batch(f->st));

    /* inside the caller's batch: rows join it and the caller decides */
    assert_int_equal(cad_store_batch_begin(f->st, f->err), 0);
    in = fmemopen("{\"id\":\"in-batch\"}\n", 18, "r");
    assert_int_equal(cad_import(f->st, &f->pb, in, &opt, &rep, f->err), 0);
    fclose(in);
    assert_true(cad_store_in_batch(f->st));
    cad_store_batch_rollback(f->st);
    int64_t key;
    assert_int_equal(cad_store_customer_key(f->st, "in-batch", &key, f->err), -CAD_ENOTFOUND);

    /* the disk fills up mid-import: committed batches stay, the import stops */
    static char big[1300000];
    n = 0;
    for (int i = 0; i < 40; i++) {
        n += (size_t)snprintf(big + n, sizeof(big) - n,
                              "{\"id\":\"big-%02d\",\"attributes\":{\"blob\":\"", i);
        memset(big + n, 'x', 30000);
        n += 30000;
        n += (size_t)snprintf(big + n, sizeof(big) - n, "\"}}\n");
    }
    cad_store_counts_t before;
    assert_int_equal(cad_store_counts(f->st, &before, f->err), 0);
    assert_int_equal(cad_store_limit_size(f->st, 600 * 1024, f->err), 0);
    in = fmemopen(big, n, "r");
    opt.source = "big.jsonl";
    int r = cad_import(f->st, &f->pb, in, &opt, &rep, f->err);
    fclose(in);
    assert_int_equal(r, -CAD_EFULL);
    assert_non_null(strstr(f->err, "big.jsonl:"));
    assert_false(cad_store_in_batch(f->st));
    assert_int_equal(cad_store_limit_size(f->st, 0, f->err), 0);
    cad_store_counts_t after;
    assert_int_equal(cad_store_counts(f->st, &after, f->err), 0);
    assert_true(rep.accepted < 40);
    assert_int_equal(rep.accepted % 4, 0);
    assert_int_equal(after.customers, before.customers + rep.accepted);
}

static void test_loader_line_too_long_is_rejected(void **state)
{
    fixture_t *f = *state;
    size_t big = CAD_IMPORT_MAX_LINE + 100;
    char *text = malloc(big + 64);
    int n = snprintf(text, 64, "{\"id\":\"x\",\"name\":\"");
    memset(text + n, 'a', big);
    strcpy(text + n + big, "\"}\n{\"id\":\"y\"}\n");
    cad_import_report_t rep;
    assert_int_equal(
        import_text(f, CAD_IMPORT_CUSTOMERS, CAD_IMPORT_JSONL, "long.jsonl", text, &rep), 0);
    free(text);
    assert_int_equal(rep.accepted, 1);
    assert_int_equal(rep.rejected, 1);
    assert_true(rejected_with(f, "long.jsonl:1:", "longer than"));
}

/* xorshift: deterministic, so a failure replays */
static uint32_t next_random(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

/* Mutates a valid input with bytes that matter to the parsers (quotes,
 * separators, line breaks, braces, NUL, high bytes) and checks that every
 * record is accounted for exactly once and nothing stops the import. */
static void test_loader_mutated_inputs_never_crash_and_account_for_every_row(void **state)
{
    fixture_t *f = *state;
    cad_import_report_t rep;
    assert_int_equal(import_text(f, CAD_IMPORT_CUSTOMERS, CAD_IMPORT_JSONL, "c.jsonl",
                                 "{\"id\":\"acme\"}\n", &rep),
                     0);
    static const char *const seeds[][2] = {
        {"id,customer,type,at,data\n"
         "e1,acme,purchase,now-1d,\"{\"\"a\"\":1}\"\n"
         "e2,acme,\"churned\",2026-01-01,\n"
         "e3,acme,invoice_issued,now,\"{\"\"b\"\":\"\"x,y\"\"}\"\r\n",
         "csv"},
        {"{\"id\":\"j1\",\"customer\":\"acme\",\"type\":\"purchase\",\"at\":\"now-2d\"}\n"
         "{\"id\":\"j2\",\"customer\":\"acme\",\"type\":\"renewal_due\",\"at\":\"now\","
         "\"data\":{\"k\":[1,2]}}\n"
         "{\"id\":\"j3\",\"customer\":\"acme\",\"type\":\"churned\",\"at\":\"2026-02-03\"}\n",
         "jsonl"},
    };
    static const char specials[] = "\",\n\r{}[]:\\;\0\xff\xc3 ";
    uint32_t x = 2463534242u;
    char buf[1024];
    for (int round = 0; round < 400; round++) {
        const char *seed = seeds[round % 2][0];
        enum cad_import_format format =
            strcmp(seeds[round % 2][1], "csv") == 0 ? CAD_IMPORT_CSV : CAD_IMPORT_JSONL;
        size_t n = strlen(seed);
        memcpy(buf, seed, n);
        int edits = 1 + (int)(next_random(&x) % 6);
        for (int e = 0; e < edits && n + 2 < sizeof(buf); e++) {
            size_t at = next_random(&x) % n;
            char ch = specials[next_random(&x) % (sizeof(specials) - 1)];
            switch (next_random(&x) % 3) {
            case 0: buf[at] = ch; break;
            case 1:
                memmove(buf + at + 1, buf + at, n - at);
                buf[at] = ch;
                n++;
                break;
            default:
                memmove(buf + at, buf + at + 1, n - at - 1);
                n--;
                break;
            }
        }
        FILE *in = fmemopen(buf, n, "r");
        assert_non_null(in);
        cad_import_options_t opt = {.kind = CAD_IMPORT_EVENTS,
                                    .format = format,
                                    .source = "mutated",
                                    .now = NOW,
                                    .batch_rows = 2};
        int r = cad_import(f->st, &f->pb, in, &opt, &rep, f->err);
        fclose(in);
        if (format == CAD_IMPORT_CSV && r == -CAD_EINVAL)
            continue; /* the header itself was broken: refused as a whole */
        if (r != 0)
            fail_msg("round %d: %s", round, f->err);
        assert_int_equal(rep.records, rep.accepted + rep.rejected + rep.duplicates);
        assert_false(cad_store_in_batch(f->st));
    }
}

/* ---- the shipped demo data ---------------------------------------------- */

static int import_file(cad_store_t *st, const cad_playbook_t *pb, const char *dir, const char *name,
                       enum cad_import_kind kind, cad_time_t now, cad_import_report_t *rep,
                       char *err)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/etc/demo/%s", dir, name);
    FILE *in = fopen(path, "r");
    if (!in)
        fail_msg("cannot open %s", path);
    cad_import_options_t opt = {
        .kind = kind, .format = CAD_IMPORT_JSONL, .source = name, .now = now};
    int r = cad_import(st, pb, in, &opt, rep, err);
    fclose(in);
    if (r < 0)
        fail_msg("%s: %s", name, err);
    if (rep->rejected)
        fail_msg("%s: %lld rows rejected, first: %s", name, (long long)rep->rejected,
                 rep->first_error);
    return r;
}

/* The verdict the engine gives one demo customer for one rule. */
static const cad_verdict_t *verdict_of(fixture_t *f, const cad_playbook_t *pb, const char *customer,
                                       const char *rule, cad_time_t now, cad_snapshot_buf_t *buf,
                                       cad_decision_t *dec)
{
    int64_t key;
    cad_snapshot_t snap;
    if (cad_store_customer_key(f->st, customer, &key, f->err) < 0 ||
        cad_store_load_snapshot(f->st, pb, key, buf, &snap, f->err) < 0)
        fail_msg("%s: %s", customer, f->err);
    if (cad_engine_decide(pb, &snap, now, dec) < 0)
        fail_msg("%s: the engine refused the snapshot", customer);
    for (int i = 0; i < pb->n_rules; i++)
        if (strcmp(pb->rules[i].name, rule) == 0)
            return &dec->verdicts[i];
    fail_msg("no rule %s", rule);
    return NULL;
}

static void test_loader_demo_data_imports_cleanly_and_replays_the_stories(void **state)
{
    fixture_t *f = *state;
    const char *src = getenv("CADENCE_SOURCE_DIR");
    char conf[600];
    snprintf(conf, sizeof(conf), "%s/etc/cadenced.conf", src ? src : ".");
    if (access(conf, R_OK) != 0) {
        print_message("skipped: %s does not exist yet\n", conf);
        skip();
    }
    cad_config_t *cfg = NULL;
    if (cad_config_load(conf, &cfg, stderr) != 0)
        fail_msg("%s does not load", conf);
    const cad_playbook_t *pb = &cfg->playbook;
    cad_time_t now = NOW;
    cad_import_report_t rep;
    import_file(f->st, pb, src ? src : ".", "customers.jsonl", CAD_IMPORT_CUSTOMERS, now, &rep,
                f->err);
    assert_true(rep.accepted >= 45);
    int64_t customers = rep.accepted;
    import_file(f->st, pb, src ? src : ".", "contacts.jsonl", CAD_IMPORT_CONTACTS, now, &rep,
                f->err);
    assert_true(rep.accepted >= customers);
    import_file(f->st, pb, src ? src : ".", "events.jsonl", CAD_IMPORT_EVENTS, now, &rep, f->err);
    assert_int_equal(rep.duplicates, 1); /* the invoice listed twice */
    cad_store_counts_t c;
    assert_int_equal(cad_store_counts(f->st, &c, f->err), 0);
    assert_int_equal(c.customers, customers);

    cad_verdict_t *v = calloc((size_t)pb->n_rules, sizeof(*v));
    cad_decision_t dec = {.verdicts = v};
    cad_snapshot_buf_t buf = {0};
    const cad_verdict_t *x;
    /* 000: left four years ago: no NPS, no newsletter, win-back long stale */
    x = verdict_of(f, pb, "lakeside-dental", "nps_survey", now, &buf, &dec);
    assert_int_equal(x->reason, CAD_REASON_STAGE);
    x = verdict_of(f, pb, "lakeside-dental", "top_of_mind", now, &buf, &dec);
    assert_int_equal(x->reason, CAD_REASON_STAGE);
    x = verdict_of(f, pb, "lakeside-dental", "win_back", now, &buf, &dec);
    assert_int_not_equal(x->kind, CAD_VERDICT_SEND);
    /* win-back 90 days after churn is due (or held out); at 30 days it waits */
    x = verdict_of(f, pb, "copperline-studios", "win_back", now, &buf, &dec);
    assert_true(x->kind == CAD_VERDICT_SEND || x->kind == CAD_VERDICT_DEFER ||
                x->reason == CAD_REASON_HELD_OUT);
    x = verdict_of(f, pb, "bluefin-analytics", "win_back", now, &buf, &dec);
    assert_int_equal(x->kind, CAD_VERDICT_WAIT);
    /* 000: the review request 40 days after a purchase is stale */
    x = verdict_of(f, pb, "orchard-supply", "review_request", now, &buf, &dec);
    assert_int_equal(x->reason, CAD_REASON_STALE);
    /* 001: renewal with no value delivered: value first */
    x = verdict_of(f, pb, "granite-insurance", "renewal_reminder", now, &buf, &dec);
    assert_int_equal(x->reason, CAD_REASON_VALUE_FIRST);
    /* 002: the operational survey goes to a user, not the decision maker */
    x = verdict_of(f, pb, "meridian-build", "operational_survey", now, &buf, &dec);
    assert_true(x->kind == CAD_VERDICT_SEND || x->kind == CAD_VERDICT_DEFER);
    if (x->contact >= 0) {
        int64_t key;
        cad_snapshot_t snap;
        cad_store_customer_key(f->st, "meridian-build", &key, f->err);
        cad_store_load_snapshot(f->st, pb, key, &buf, &snap, f->err);
        assert_true(snap.contacts[x->contact].roles & (1u << CAD_ROLE_USER));
    }
    /* 002/R14: an open complaint suppresses asks; the call task is due */
    x = verdict_of(f, pb, "redwood-legal", "renewal_reminder", now, &buf, &dec);
    assert_int_equal(x->reason, CAD_REASON_SUPPRESSED_BY_EVENT);
    x = verdict_of(f, pb, "redwood-legal", "complaint_call_task", now, &buf, &dec);
    assert_true(x->kind == CAD_VERDICT_SEND || x->kind == CAD_VERDICT_DEFER);
    /* R9: the loop open 30 days raises the overdue alert */
    verdict_of(f, pb, "harborview-hotels", "feedback_followup", now, &buf, &dec);
    assert_true(dec.alerts & CAD_ALERT_LOOP_OVERDUE);
    /* R9: feedback actioned yesterday: the follow-up is the touch */
    x = verdict_of(f, pb, "pinecrest-clinics", "feedback_followup", now, &buf, &dec);
    assert_true(x->kind == CAD_VERDICT_SEND || x->kind == CAD_VERDICT_DEFER);
    /* the invoice goes out at any hour, once */
    x = verdict_of(f, pb, "sunrise-bakeries", "invoice_notice", now, &buf, &dec);
    assert_int_equal(x->kind, CAD_VERDICT_SEND);
    /* R6/R7: interests no content serves: a content gap, no filler */
    verdict_of(f, pb, "tidewater-farms", "top_of_mind", now, &buf, &dec);
    assert_true(dec.alerts & CAD_ALERT_CONTENT_GAP);
    assert_int_equal(dec.chosen, -1);
    /* R14: the paused customer hears nothing */
    verdict_of(f, pb, "quill-publishing", "project_thank_you", now, &buf, &dec);
    assert_int_equal(dec.chosen, -1);
    cad_snapshot_buf_free(&buf);
    free(v);
    cad_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_loader_jsonl_customers_contacts_events, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_loader_null_address_removes_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loader_csv_quoting_lists_and_consent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loader_bad_rows_report_line_and_field_good_rows_stay,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_loader_csv_bad_header_and_bad_records, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_loader_duplicate_events_counted_not_errors, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_loader_relative_and_absolute_times, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loader_names_and_formats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loader_without_a_clock_uses_the_wall_clock, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_loader_batches_and_store_failure_keep_committed_rows,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_loader_line_too_long_is_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_loader_mutated_inputs_never_crash_and_account_for_every_row, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_loader_demo_data_imports_cleanly_and_replays_the_stories, setup, teardown),
    };
    int r = cmocka_run_group_tests_name("loader", tests, NULL, NULL);
    cad_tz_registry_free();
    return r;
}
