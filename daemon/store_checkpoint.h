/*
 * store_checkpoint.h — copies SQLite's write-ahead log back into the
 * database on a thread of its own.
 *
 * SQLite's automatic checkpoint runs inside the COMMIT that crosses its
 * threshold, on the thread that commits: here the event loop, which then
 * stalls for the copy and its fsync while transfers and the control socket
 * wait. The store turns the automatic checkpoint off and asks this module
 * instead: a thread with its own connection runs a PASSIVE checkpoint (it
 * never blocks the writer or readers) whenever the store reports a WAL
 * past its threshold. Used by store_sqlite.c only; nothing else touches SQL.
 */
#ifndef CADENCE_STORE_CHECKPOINT_H
#define CADENCE_STORE_CHECKPOINT_H

#include <stdbool.h>
#include <stdint.h>

typedef struct cad_store_checkpoint cad_store_checkpoint_t;

typedef struct cad_store_checkpoint_stats {
    int64_t runs;   /* checkpoints run */
    int64_t frames; /* WAL frames copied into the database */
    int64_t failed; /* checkpoints that returned an error */
} cad_store_checkpoint_stats_t;

/* Opens a second connection to the database at `path` (which must already
 * be in WAL mode) with the given synchronous level, and starts the thread.
 * Returns 0 and *out, or a negative CAD_E* code with a message in `err`.
 * The caller owns *out and ends it with cad_store_checkpoint_stop(). */
int cad_store_checkpoint_start(const char *path, bool sync_full, cad_store_checkpoint_t **out,
                               char *err);

/* Asks for a checkpoint; returns at once (requests made while one runs
 * make one more run). Safe from the writing thread. */
void cad_store_checkpoint_request(cad_store_checkpoint_t *c);

/* Copies the counters so far into *out. */
void cad_store_checkpoint_get_stats(cad_store_checkpoint_t *c, cad_store_checkpoint_stats_t *out);

/* Waits for a checkpoint in progress, stops the thread, closes its
 * connection and frees `c`. NULL is a no-op. */
void cad_store_checkpoint_stop(cad_store_checkpoint_t *c);

#endif
