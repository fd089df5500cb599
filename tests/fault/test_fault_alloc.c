/*
 * test_fault_alloc.c — out-of-memory paths of the allocating parsers: the
 * config loader, the template renderer and the importer.
 *
 * The engine allocates nothing on its hot path, so the allocations that can
 * fail in a running daemon are these modules' (and jansson's, which they
 * use). This binary is linked with -Wl,--wrap for malloc, calloc, realloc,
 * strdup and strndup, so every such call made by our code goes through the
 * injector below; jansson is pointed at it with json_set_alloc_funcs. Each
 * test first counts the allocations of a clean run, then runs again once
 * per allocation with exactly that one failing, and checks each run: it
 * ends in success with the same result, or in an error that says what
 * failed; nothing crashes, and the sanitizer build finds no leak.
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
#include "loader.h"
#include "log.h"
#include "store.h"
#include "template.h"
#include "tz.h"

#include <jansson.h>
#include <unistd.h>

/* ---- the injector ---------------------------------------------------------- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

static long allocations; /* counted while armed */
static long fail_at;     /* the allocation (1-based) that fails; 0 = none */
static bool armed;
static bool failed; /* the run met its failing allocation */

static bool fail_now(void)
{
    if (!armed)
        return false;
    if (++allocations != fail_at)
        return false;
    failed = true;
    return true;
}

void *__wrap_malloc(size_t n)
{
    return fail_now() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return fail_now() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    return fail_now() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
    return fail_now() ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
    return fail_now() ? NULL : __real_strndup(s, n);
}

static bool failed_in_jansson; /* the failing allocation was jansson's */

static void *json_malloc(size_t n)
{
    if (!fail_now())
        return __real_malloc(n);
    failed_in_jansson = true;
    return NULL;
}

static void arm(long at)
{
    allocations = 0;
    fail_at = at;
    failed = false;
    failed_in_jansson = false;
    armed = true;
}

/* Disarms and returns the number of allocations the run made. */
static long disarm(void)
{
    armed = false;
    return allocations;
}

static const char *source_dir(void)
{
    const char *src = getenv("CADENCE_SOURCE_DIR");
    return src ? src : ".";
}

/* Runs `run` once clean (returns its allocation count), then once per
 * allocation with that one failing; `run` checks its own outcome. A long
 * clean run is sampled with a stride so the test stays within seconds. */
static long every_failure(void (*run)(void *arg, bool clean), void *arg, long max_runs)
{
    arm(0);
    run(arg, true);
    long n = disarm();
    assert_true(n > 0);
    long stride = n > max_runs ? n / max_runs : 1;
    long met = 0;
    for (long k = 1; k <= n; k += stride) {
        arm(k);
        run(arg, false);
        disarm();
        met += failed;
    }
    assert_true(met > 0);
    return n;
}

/* ---- config ------------------------------------------------------------- */

static void load_config(void *arg, bool clean)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/etc/cadenced.conf", source_dir());
    char *text = NULL;
    size_t len = 0;
    FILE *errors = open_memstream(&text, &len);
    armed = armed && errors;
    cad_config_t *cfg = NULL;
    int rc = cad_config_load(path, &cfg, errors);
    bool was_armed = armed;
    armed = false;
    fclose(errors);
    if (clean || !failed) {
        assert_int_equal(rc, 0);
        assert_non_null(cfg);
        *(int *)arg = cfg->playbook.n_rules;
    } else if (rc == 0) {
        /* the failed allocation was optional: the result is whole */
        assert_int_equal(cfg->playbook.n_rules, *(int *)arg);
    } else {
        assert_null(cfg);
        assert_true(len > 0);
        if (!strstr(text, "out of memory"))
            fail_msg("allocation %ld failed; the config error does not say so: %s", fail_at, text);
    }
    armed = was_armed;
    cad_config_free(cfg);
    armed = false;
    free(text);
}

static void test_fault_alloc_config_load_reports_out_of_memory(void **state)
{
    int n_rules = 0;
    long n = every_failure(load_config, &n_rules, 600);
    print_message("config: %ld allocations in a load of the example config\n", n);
    assert_true(n_rules > 0);
}

/* ---- template ------------------------------------------------------------- */

static const char *tmpl_text =
    "Hi {{contact.first_name}}, {{customer.name}} on {{customer.plan}} ({{customer.seats}}): "
    "{{content.title}} <{{content.url}}> {{unsubscribe_url}}";

static void render(void *arg, bool clean)
{
    cad_plugin_touch_t t = {
        .struct_size = sizeof t,
        .idempotency_key = "k-1",
        .customer = {"acme", "Acme & Sons <Ltd>", "{\"plan\": \"gold\", \"seats\": 12}"},
        .contact = {"c1", "Ada Lovelace", "Ada", "ada@example.com", ""},
        .rule = "welcome",
        .purpose = "value",
        .channel = "email",
        .content = {"guide", "Getting \"started\"", "https://x.test/?a=1&b=2"},
        .subject = "",
        .text = "",
        .html = "",
        .unsubscribe_url = "https://x.test/u/1",
        .unsubscribe_mailto = "",
        .attempt = 1,
    };
    char **expected = arg;
    for (int html = 0; html <= 1; html++) {
        char *out = NULL;
        char err[CAD_ERRBUF] = "";
        int rc = cad_template_render(tmpl_text, html, &t, &out, err);
        bool was_armed = armed;
        armed = false;
        if (clean) {
            assert_int_equal(rc, 0);
            expected[html] = out;
        } else if (rc == 0) {
            assert_string_equal(out, expected[html]);
            free(out);
        } else if (failed_in_jansson && rc == -CAD_EINVAL) {
            /* jansson 2.14 reports running out of memory inside its parser
             * as a syntax error; the sentence still names the customer */
            assert_null(out);
            assert_non_null(strstr(err, "attributes of customer acme"));
        } else {
            if (rc != -CAD_ENOMEM || !strstr(err, "memory"))
                fail_msg("allocation %ld failed; render returned %d: %s", fail_at, rc, err);
            assert_null(out);
        }
        armed = was_armed;
    }
}

static void test_fault_alloc_template_render_fails_whole_or_not_at_all(void **state)
{
    char *expected[2] = {NULL, NULL};
    long n = every_failure(render, expected, 1000);
    print_message("template: %ld allocations in two renders\n", n);
    free(expected[0]);
    free(expected[1]);
}

/* ---- import ------------------------------------------------------------------ */

typedef struct import_fixture {
    char dir[64], db[128];
    cad_config_t *cfg;
    cad_store_t *st;
    cad_import_report_t clean;
} import_fixture_t;

static const char *jsonl =
    "{\"id\":\"acme\",\"name\":\"Acme\",\"timezone\":\"Europe/London\",\"stage\":\"active\","
    "\"interests\":[\"reporting\",\"security\"],\"attributes\":{\"plan\":\"gold\"}}\n"
    "{\"id\":\"bolt\",\"name\":\"Bolt\",\"stage\":\"nope\"}\n"
    "not json\n"
    "{\"id\":\"crane\",\"name\":\"Crane\",\"timezone\":\"America/Los_Angeles\",\"stage\":"
    "\"onboarding\",\"created_at\":\"now-40d\"}\n";

static void import(void *arg, bool clean)
{
    import_fixture_t *f = arg;
    bool was_armed = armed;
    armed = false;
    char err[CAD_ERRBUF] = "";
    assert_int_equal(cad_store_batch_begin(f->st, err), 0);
    FILE *in = fmemopen((void *)jsonl, strlen(jsonl), "r");
    assert_non_null(in);
    cad_import_options_t opt = {.kind = CAD_IMPORT_CUSTOMERS,
                                .format = CAD_IMPORT_JSONL,
                                .source = "customers.jsonl",
                                .now = 1795435200};
    cad_import_report_t rep;
    armed = was_armed;
    int rc = cad_import(f->st, &f->cfg->playbook, in, &opt, &rep, err);
    armed = false;
    fclose(in);
    cad_store_batch_rollback(f->st);
    if (clean) {
        assert_int_equal(rc, 0);
        f->clean = rep;
    } else if (rc == 0) {
        /* every row is accounted for; a row whose parsing ran out of
         * memory is rejected with a reason, never silently dropped */
        assert_int_equal(rep.records, f->clean.records);
        assert_int_equal(rep.records, rep.accepted + rep.rejected + rep.duplicates);
        assert_true(rep.accepted >= f->clean.accepted - 1);
        if (rep.accepted < f->clean.accepted)
            assert_true(rep.rejected > f->clean.rejected);
    } else {
        assert_int_equal(rc, -CAD_ENOMEM);
        assert_non_null(strstr(err, "customers.jsonl"));
    }
    armed = was_armed;
}

static void test_fault_alloc_import_accounts_for_every_row(void **state)
{
    import_fixture_t f = {0};
    snprintf(f.dir, sizeof(f.dir), "/tmp/cadence-alloc-XXXXXX");
    assert_non_null(mkdtemp(f.dir));
    snprintf(f.db, sizeof(f.db), "%s/cadence.db", f.dir);
    char path[1024], err[CAD_ERRBUF];
    snprintf(path, sizeof(path), "%s/etc/cadenced.conf", source_dir());
    assert_int_equal(cad_config_load(path, &f.cfg, stderr), 0);
    assert_int_equal(cad_store_open(f.db, CAD_SYNC_NORMAL, &f.st, err), 0);
    long n = every_failure(import, &f, 1000);
    print_message("import: %ld allocations importing 4 rows\n", n);
    assert_int_equal(f.clean.accepted, 2);
    assert_int_equal(f.clean.rejected, 2);
    cad_store_close(f.st);
    cad_config_free(f.cfg);
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s%s", f.db, suffix[i]);
        unlink(path);
    }
    rmdir(f.dir);
}

int main(void)
{
    cad_log_set_level(CAD_LOG_ERR);
    json_set_alloc_funcs(json_malloc, free);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_alloc_config_load_reports_out_of_memory),
        cmocka_unit_test(test_fault_alloc_template_render_fails_whole_or_not_at_all),
        cmocka_unit_test(test_fault_alloc_import_accounts_for_every_row),
    };
    int rc = cmocka_run_group_tests_name("fault_alloc", tests, NULL, NULL);
    cad_tz_registry_free();
    return rc;
}
