/*
 * store_checkpoint.c — the WAL checkpoint thread (see store_checkpoint.h).
 *
 * One thread, one connection of its own, one flag under a mutex: the
 * writer sets the flag and signals; the thread runs
 * sqlite3_wal_checkpoint_v2(PASSIVE) for every wake-up that found the flag
 * set. PASSIVE copies what no reader still needs and never takes the write
 * lock, so the loop's commits never wait for it; the WAL restarts from its
 * beginning at the first write after a complete checkpoint, as usual.
 */
#include "store_checkpoint.h"

#include "common.h"
#include "log.h"

#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

struct cad_store_checkpoint {
    sqlite3 *db; /* used by the thread only once started (and sqlite3_interrupt at stop) */
    char *path;
    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t wake;
    bool requested;                     /* under mu */
    bool stop;                          /* under mu */
    cad_store_checkpoint_stats_t stats; /* under mu */
    int last_rc[2];                     /* under mu: logs each new failure once, per place */
};

/* Counts one checkpoint (called with mu held) and logs a failure that is
 * new for its place, or the return to success after one. */
static void record(cad_store_checkpoint_t *c, enum cad_checkpoint_where where, int rc,
                   int log_frames, int checkpointed)
{
    static const char *const place[] = {"background", "in-commit"};
    cad_store_checkpoint_stats_t *s = &c->stats;
    /* Busy: another connection is checkpointing (the other place, or an
     * operator's tool). Nothing was done; the next commit asks again. */
    bool busy = (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
    if (busy) {
        s->busy[where]++;
        return;
    }
    if (rc == SQLITE_OK) {
        s->ok[where]++;
        s->wal_frames = log_frames;
        s->wal_checkpointed = checkpointed;
    } else {
        s->failed[where]++;
    }
    if (rc != SQLITE_OK && rc != c->last_rc[where])
        cad_log_warning("store: %s checkpoint failed; the WAL keeps growing until one succeeds "
                        "path=%s error=\"%s\"",
                        place[where], c->path, sqlite3_errstr(rc));
    else if (rc == SQLITE_OK && c->last_rc[where] != SQLITE_OK)
        cad_log_notice("store: %s checkpoint succeeds again path=%s", place[where], c->path);
    c->last_rc[where] = rc;
}

static void checkpoint_main(void *arg)
{
    cad_store_checkpoint_t *c = arg;
    sigset_t all; /* signals belong to the daemon's loop thread */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_setname_np(pthread_self(), "cad-checkpoint"); /* as ps -L and top -H show it */
    uv_mutex_lock(&c->mu);
    for (;;) {
        while (!c->requested && !c->stop)
            uv_cond_wait(&c->wake, &c->mu);
        if (c->stop)
            break;
        c->requested = false;
        uv_mutex_unlock(&c->mu);
        int log_frames = 0, checkpointed = 0;
        int rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames,
                                           &checkpointed);
        uv_mutex_lock(&c->mu);
        if (!(c->stop && rc == SQLITE_INTERRUPT)) /* stopped on purpose: not a failure */
            record(c, CAD_CHECKPOINT_THREAD, rc, log_frames, checkpointed);
    }
    uv_mutex_unlock(&c->mu);
}

int cad_store_checkpoint_start(const char *path, bool sync_full, cad_store_checkpoint_t **out,
                               char *err)
{
    *out = NULL;
    cad_store_checkpoint_t *c = calloc(1, sizeof *c);
    if (!c || !(c->path = strdup(path))) {
        free(c);
        return cad_fail(err, CAD_ENOMEM, "store %s: out of memory for the checkpoint thread", path);
    }
    /* Its own connection, used by its own thread only: no connection mutex.
     * Setting the synchronous level also reads the schema, which opens the
     * WAL: a connection that has read nothing has nothing to checkpoint. */
    int rc = sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(c->db,
                          sync_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
                          NULL, NULL, NULL);
    if (rc == SQLITE_OK) /* it must never checkpoint on its own commits: it makes none */
        rc = sqlite3_wal_autocheckpoint(c->db, 0);
    if (rc != SQLITE_OK) {
        int r = cad_fail(err, CAD_ESTORE, "store %s: cannot open the checkpoint connection: %s",
                         path, c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        sqlite3_close(c->db);
        free(c->path);
        free(c);
        return r;
    }
    uv_mutex_init(&c->mu);
    uv_cond_init(&c->wake);
    int e = uv_thread_create(&c->thread, checkpoint_main, c);
    if (e != 0) {
        uv_cond_destroy(&c->wake);
        uv_mutex_destroy(&c->mu);
        sqlite3_close(c->db);
        free(c->path);
        free(c);
        return cad_fail(err, CAD_EIO, "store %s: cannot start the checkpoint thread: %s", path,
                        uv_strerror(e));
    }
    *out = c;
    return 0;
}

void cad_store_checkpoint_request(cad_store_checkpoint_t *c)
{
    uv_mutex_lock(&c->mu);
    if (!c->requested) {
        c->requested = true;
        uv_cond_signal(&c->wake);
    }
    uv_mutex_unlock(&c->mu);
}

void cad_store_checkpoint_record_commit(cad_store_checkpoint_t *c, int rc, int log_frames,
                                        int checkpointed)
{
    uv_mutex_lock(&c->mu);
    record(c, CAD_CHECKPOINT_COMMIT, rc, log_frames, checkpointed);
    uv_mutex_unlock(&c->mu);
}

void cad_store_checkpoint_get_stats(cad_store_checkpoint_t *c, cad_store_checkpoint_stats_t *out)
{
    uv_mutex_lock(&c->mu);
    *out = c->stats;
    uv_mutex_unlock(&c->mu);
}

void cad_store_checkpoint_stop(cad_store_checkpoint_t *c)
{
    if (!c)
        return;
    uv_mutex_lock(&c->mu);
    c->stop = true;
    uv_cond_signal(&c->wake);
    uv_mutex_unlock(&c->mu);
    sqlite3_interrupt(c->db); /* a copy in progress ends early; closing the store copies the rest */
    uv_thread_join(&c->thread);
    uv_cond_destroy(&c->wake);
    uv_mutex_destroy(&c->mu);
    sqlite3_close(c->db);
    free(c->path);
    free(c);
}
