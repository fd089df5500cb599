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

/* Where a checkpoint ran: on this module's thread, or on the committing
 * thread (the store's step past its inline threshold). */
enum cad_checkpoint_where { CAD_CHECKPOINT_THREAD, CAD_CHECKPOINT_COMMIT };

typedef struct cad_store_checkpoint_stats {
    /* Checkpoints run, by where and result: ok, busy (another connection was
     * checkpointing: nothing done, not a failure) and failed. */
    int64_t ok[2], busy[2], failed[2];
    /* As the last checkpoint that ran left them: the WAL's size in frames,
     * and how many of those frames are in the database. */
    int64_t wal_frames, wal_checkpointed;
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

/* Counts a checkpoint the committing thread ran itself: `rc` and the two
 * frame counts as sqlite3_wal_checkpoint_v2 returned them. A new failure is
 * logged once, like the thread's. Safe from the writing thread. */
void cad_store_checkpoint_record_commit(cad_store_checkpoint_t *c, int rc, int log_frames,
                                        int checkpointed);

/* Copies the counters so far into *out. */
void cad_store_checkpoint_get_stats(cad_store_checkpoint_t *c, cad_store_checkpoint_stats_t *out);

/* Interrupts a checkpoint in progress (the main connection copies the rest
 * when it closes), stops the thread, closes its connection and frees `c`.
 * NULL is a no-op. */
void cad_store_checkpoint_stop(cad_store_checkpoint_t *c);

#endif
