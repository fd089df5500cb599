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
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

struct cad_store_checkpoint {
    sqlite3 *db; /* used by the thread only once started */
    char *path;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    bool requested;                     /* under mu */
    bool stop;                          /* under mu */
    cad_store_checkpoint_stats_t stats; /* under mu */
    int last_rc;                        /* the thread's own: logs each new failure once */
};

static void *checkpoint_main(void *arg)
{
    cad_store_checkpoint_t *c = arg;
    pthread_setname_np(pthread_self(), "cad-checkpoint"); /* as ps -L and top -H show it */
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->requested && !c->stop)
            pthread_cond_wait(&c->wake, &c->mu);
        if (c->stop)
            break;
        c->requested = false;
        pthread_mutex_unlock(&c->mu);

        int log_frames = 0, copied = 0;
        int rc =
            sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &copied);
        /* Busy: another connection is checkpointing (the store's own, past
         * its inline threshold, or an operator's tool). Not a failure; the
         * next commit asks again. */
        if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED)
            rc = SQLITE_OK;
        if (rc != SQLITE_OK && rc != c->last_rc)
            cad_log_warning("store: background checkpoint failed; the WAL keeps growing until "
                            "one succeeds path=%s error=\"%s\"",
                            c->path, sqlite3_errstr(rc));
        else if (rc == SQLITE_OK && c->last_rc != SQLITE_OK)
            cad_log_notice("store: background checkpoint succeeds again path=%s", c->path);
        c->last_rc = rc;

        pthread_mutex_lock(&c->mu);
        c->stats.runs++;
        if (rc == SQLITE_OK && copied > 0)
            c->stats.frames += copied;
        if (rc != SQLITE_OK)
            c->stats.failed++;
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
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
    /* Its own connection, used by its own thread only: no connection mutex. */
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
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->wake, NULL);
    int e = pthread_create(&c->thread, NULL, checkpoint_main, c);
    if (e != 0) {
        pthread_cond_destroy(&c->wake);
        pthread_mutex_destroy(&c->mu);
        sqlite3_close(c->db);
        free(c->path);
        free(c);
        return cad_fail(err, CAD_ENOMEM, "store %s: cannot start the checkpoint thread: %s", path,
                        strerror(e));
    }
    *out = c;
    return 0;
}

void cad_store_checkpoint_request(cad_store_checkpoint_t *c)
{
    pthread_mutex_lock(&c->mu);
    if (!c->requested) {
        c->requested = true;
        pthread_cond_signal(&c->wake);
    }
    pthread_mutex_unlock(&c->mu);
}

void cad_store_checkpoint_get_stats(cad_store_checkpoint_t *c, cad_store_checkpoint_stats_t *out)
{
    pthread_mutex_lock(&c->mu);
    *out = c->stats;
    pthread_mutex_unlock(&c->mu);
}

void cad_store_checkpoint_stop(cad_store_checkpoint_t *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_signal(&c->wake);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    pthread_cond_destroy(&c->wake);
    pthread_mutex_destroy(&c->mu);
    sqlite3_close(c->db);
    free(c->path);
    free(c);
}
