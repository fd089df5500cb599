/*
 * fuzz_import.h — the body of the two importer targets (fuzz_import_jsonl.c,
 * fuzz_import_csv.c), which include it after defining FUZZ_IMPORT_FORMAT.
 *
 * Once: the example playbook (etc/cadenced.conf) is loaded and a store in a
 * private temporary directory is given three customers and a contact, so
 * contacts and events have someone to belong to. Per input: the first byte
 * picks the kind (customers, contacts, events), the rest is the stream,
 * read through fmemopen() inside a store batch that is rolled back
 * afterwards, so every input meets the same store. Properties:
 *   - the whole stream is read (return 0) unless the store fails;
 *   - every data row is counted once: records = accepted + rejected +
 *     duplicates;
 *   - every rejection names the source and its line ("fuzz.csv:12: ..."),
 *     and the first one is kept in the report.
 */
#ifndef CADENCE_FUZZ_IMPORT_H
#define CADENCE_FUZZ_IMPORT_H

#include "fuzz_common.h"

#include "config.h"
#include "loader.h"
#include "store.h"

#include <ctype.h>
#include <string.h>

#define FUZZ_NOW ((cad_time_t)1795000000)

static cad_config_t *config;
static cad_store_t *store;
static int64_t rejections;
static const char *source_name = FUZZ_IMPORT_FORMAT == CAD_IMPORT_CSV ? "fuzz.csv" : "fuzz.jsonl";

static void seed(enum cad_import_kind kind, const char *csv)
{
    FILE *in = fmemopen((void *)csv, strlen(csv), "r");
    cad_import_options_t opt = {
        .kind = kind, .format = CAD_IMPORT_CSV, .source = "seed", .now = FUZZ_NOW};
    cad_import_report_t rep;
    char err[CAD_ERRBUF] = "";
    int rc = cad_import(store, &config->playbook, in, &opt, &rep, err);
    fclose(in);
    FUZZ_CHECK(rc == 0 && rep.rejected == 0, "seeding the store: %s %s", err, rep.first_error);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *src = getenv("CADENCE_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof(path), "%s/etc/cadenced.conf", src ? src : CADENCE_SOURCE_DIR);
    FUZZ_CHECK(cad_config_load(path, &config, stderr) == 0, "cannot load %s", path);
    char db[320], err[CAD_ERRBUF] = "";
    snprintf(db, sizeof(db), "%s/cadence.db", fuzz_make_tmpdir("import"));
    FUZZ_CHECK(cad_store_open(db, CAD_SYNC_NORMAL, &store, err) == 0, "store: %s", err);
    seed(CAD_IMPORT_CUSTOMERS, "id,name,timezone,stage\n"
                               "c1,Acme,Europe/London,active\n"
                               "c2,Bolt,America/Los_Angeles,onboarding\n"
                               "c3,Crane,UTC,former\n");
    seed(CAD_IMPORT_CONTACTS, "id,customer,name,roles,email\n"
                              "p1,c1,Ada,decision_maker;user,ada@example.com\n");
    return 0;
}

static void on_reject(const char *message, void *arg)
{
    size_t n = strlen(source_name);
    FUZZ_CHECK(strncmp(message, source_name, n) == 0 && message[n] == ':' &&
                   isdigit((unsigned char)message[n + 1]),
               "a rejection that does not name source and line: %s", message);
    rejections++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!store)
        LLVMFuzzerInitialize(NULL, NULL);
    if (size < 1)
        return 0;
    enum cad_import_kind kind = (enum cad_import_kind)(data[0] % 3);
    data++;
    size--;
    /* fmemopen of zero bytes fails; a one-byte NUL buffer reads as empty. */
    static const uint8_t empty[1] = {0};
    FILE *in = fmemopen((void *)(size ? data : empty), size ? size : 1, "r");
    FUZZ_CHECK(in != NULL, "fmemopen failed");
    if (!size)
        fgetc(in);
    char err[CAD_ERRBUF] = "";
    FUZZ_CHECK(cad_store_batch_begin(store, err) == 0, "batch: %s", err);
    cad_import_options_t opt = {.kind = kind,
                                .format = FUZZ_IMPORT_FORMAT,
                                .source = source_name,
                                .now = FUZZ_NOW,
                                .batch_rows = 50,
                                .on_reject = on_reject};
    cad_import_report_t rep;
    rejections = 0;
    int rc = cad_import(store, &config->playbook, in, &opt, &rep, err);
    fclose(in);
    cad_store_batch_rollback(store);
    if (rc != 0) {
        FUZZ_CHECK(err[0], "import failed (%d) without a message", rc);
        /* Only a bad CSV header (or no header) stops an import of good storage. */
        FUZZ_CHECK(FUZZ_IMPORT_FORMAT == CAD_IMPORT_CSV && rc == -CAD_EINVAL,
                   "the import stopped: %s", err);
        return 0;
    }
    FUZZ_CHECK(rep.records == rep.accepted + rep.rejected + rep.duplicates,
               "records %lld != accepted %lld + rejected %lld + duplicates %lld",
               (long long)rep.records, (long long)rep.accepted, (long long)rep.rejected,
               (long long)rep.duplicates);
    FUZZ_CHECK(rejections == rep.rejected, "%lld rejections reported, %lld counted",
               (long long)rejections, (long long)rep.rejected);
    FUZZ_CHECK(rep.rejected == 0 || rep.first_error[0], "rejections without a first error");
    return 0;
}

#endif
