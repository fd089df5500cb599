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

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

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

#endif
