/*
 * fuzz_config.c — the config loader (cad_config_load), libconfig syntax
 * and every semantic check behind it (channels, policies, rules, content,
 * templates, durations, clock times, zones).
 *
 * The input is written to a config file in a private temporary directory
 * and loaded. Inputs naming /dev, /proc or /sys are skipped: an @include of
 * /dev/zero or a terminal would read forever, which says nothing about our
 * code. Properties: a refused config comes with at least one error line and
 * no config; an accepted one comes with a config whose playbook has at
 * least one policy (the default), and is freed without leaks.
 *
 * libconfig 1.5 leaks a few bytes on some syntax errors; lsan.supp names
 * that library's frames only, for the replay test and for scripts/fuzz.
 */
#include "fuzz_common.h"

#include "config.h"
#include "tz.h"

#include <string.h>
#include <unistd.h>

static char path[256];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    snprintf(path, sizeof(path), "%s/cadenced.conf", fuzz_make_tmpdir("config"));
    return 0;
}

static bool names_device(const uint8_t *data, size_t size)
{
    static const char *const bad[] = {"dev/", "proc/", "sys/", "dev\\", NULL};
    for (int i = 0; bad[i]; i++)
        if (memmem(data, size, bad[i], strlen(bad[i])))
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path[0])
        LLVMFuzzerInitialize(NULL, NULL);
    if (names_device(data, size))
        return 0;
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f != NULL, "cannot write %s", path);
    FUZZ_CHECK(fwrite(data, 1, size, f) == size && fclose(f) == 0, "cannot write %s", path);

    char *text = NULL;
    size_t len = 0;
    FILE *errors = open_memstream(&text, &len);
    FUZZ_CHECK(errors != NULL, "open_memstream failed");
    cad_config_t *cfg = NULL;
    int rc = cad_config_load(path, &cfg, errors);
    fclose(errors);
    if (rc == 0) {
        FUZZ_CHECK(cfg != NULL, "accepted without a config");
        FUZZ_CHECK(cfg->playbook.n_policies >= 1, "accepted without a default policy");
    } else {
        FUZZ_CHECK(cfg == NULL, "refused but returned a config");
        FUZZ_CHECK(len > 0, "refused (%d) without an error message", rc);
        for (char *line = text; *line;) {
            char *nl = strchr(line, '\n');
            FUZZ_CHECK(nl != NULL, "an error line without its newline: %s", line);
            FUZZ_CHECK(nl > line, "an empty error line");
            line = nl + 1;
        }
    }
    cad_config_free(cfg);
    free(text);
    /* Zones are cached for the life of a daemon; dropped here so every run
     * frees what it allocated and libFuzzer's leak check stays quiet (and
     * fast: a run that allocates more than it frees costs a full check). */
    cad_tz_registry_free();
    return 0;
}
