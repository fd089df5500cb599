/*
 * fuzz_common.h — what every fuzz target shares.
 *
 * A target defines LLVMFuzzerTestOneInput (and may define
 * LLVMFuzzerInitialize). Built with clang and -fsanitize=fuzzer it is a
 * libFuzzer binary (scripts/fuzz); built with any compiler and
 * fuzz_replay.c it is a plain program that runs a corpus once, which is how
 * CTest replays the seed corpora and the regression inputs of every target.
 *
 * FUZZ_CHECK states a property the code promises beyond "does not crash"
 * (one reply per request line, a header line within its limit...): when it
 * does not hold the target prints what and aborts, so libFuzzer records the
 * input as a crash and the replay test fails.
 */
#ifndef CADENCE_FUZZ_COMMON_H
#define CADENCE_FUZZ_COMMON_H

#include <ftw.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: property violated: %s: ", __FILE__, __LINE__, #cond);          \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static char fuzz_tmpdir_path[128];

static inline int fuzz_remove_entry(const char *path, const struct stat *st, int flag,
                                    struct FTW *ftw)
{
    return remove(path);
}

static inline void fuzz_remove_tmpdir(void)
{
    if (fuzz_tmpdir_path[0])
        nftw(fuzz_tmpdir_path, fuzz_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Creates the target's private directory /tmp/cadence-fuzz-NAME-XXXXXX,
 * removed with everything in it when the process exits normally (a crash
 * leaves it for inspection). Returns its path (static storage). */
static inline const char *fuzz_make_tmpdir(const char *name)
{
    snprintf(fuzz_tmpdir_path, sizeof(fuzz_tmpdir_path), "/tmp/cadence-fuzz-%s-XXXXXX", name);
    FUZZ_CHECK(mkdtemp(fuzz_tmpdir_path) != NULL, "mkdtemp failed");
    atexit(fuzz_remove_tmpdir);
    return fuzz_tmpdir_path;
}

#endif
