/*
 * transport.h — every libcurl transfer of the daemon, on the libuv loop.
 *
 * One CURLM multi handle serves all channel plugins so connections are
 * reused; libuv polls its sockets and runs its timer (curl's multi-uv
 * pattern), so transfers never block the loop. Transfers run in lanes (one
 * per channel) with a concurrency limit each: a transfer started on a full
 * lane waits in that lane's FIFO queue. Each transfer has a total timeout,
 * a connect timeout, no signals and no redirects; its response (status code,
 * the last response's headers, a body bounded by CAD_PLUGIN_BODY_MAX) is
 * collected for the completion callback.
 *
 * Threading: the owner calls every function from the thread of the loop it
 * passed to cad_transport_new, and completion callbacks run there, from the
 * loop, never from inside a libcurl callback; they may start new transfers.
 * libcurl itself runs on a thread of the transport's own (transport.c), so
 * callbacks a plugin sets on the easy handle (an upload's read function)
 * run on that thread and may touch only the transfer's own data.
 */
#ifndef CADENCE_TRANSPORT_H
#define CADENCE_TRANSPORT_H

#include "common.h"

#include <cadence/channel.h>
#include <curl/curl.h>
#include <uv.h>

typedef struct cad_transport cad_transport_t;
typedef struct cad_transfer cad_transfer_t;

/* Called once per started transfer when it finished, failed, timed out or was
 * cancelled by cad_transport_close (then result is CURLE_ABORTED_BY_CALLBACK
 * and error says so). `resp` (struct_size, result, error, code, headers,
 * body; data is NULL) is valid during the call only. The transfer is freed
 * when the callback returns. */
typedef void (*cad_transfer_done_cb)(cad_transfer_t *xfer, const cad_plugin_response_t *resp,
                                     void *arg);

typedef struct cad_transport_stats {
    int64_t started, completed, failed; /* failed: curl result not CURLE_OK */
    int in_flight, queued;
} cad_transport_stats_t;

/* Creates a transport on `loop` (borrowed; must outlive the transport).
 * Returns 0 and *out, or a negative code with err. */
int cad_transport_new(uv_loop_t *loop, cad_transport_t **out, char *err);

/* Adds a lane named `name` (for messages) running at most `concurrency`
 * transfers at once (0 means 1). Returns the lane index (>= 0) or an error. */
int cad_transport_lane_add(cad_transport_t *t, const char *name, uint32_t concurrency, char *err);

/* Creates a transfer on `lane` with its easy handle preset: timeout_ms total
 * (connect timeout the smaller of it and 10 s), NOSIGNAL, no redirects,
 * protocols http/https/smtp/smtps only, and response collection. Returns NULL
 * with err on failure. The caller sets the request with curl_easy_setopt on
 * cad_transfer_easy() and then starts it, or frees it with cad_transfer_free. */
cad_transfer_t *cad_transfer_new(cad_transport_t *t, int lane, int64_t timeout_ms, char *err);

/* The transfer's easy handle, owned by the transfer. */
CURL *cad_transfer_easy(cad_transfer_t *xfer);

/* Releases a transfer that was never started (freed, or kept with its easy
 * handle reset for the next cad_transfer_new). NULL-safe. */
void cad_transfer_free(cad_transfer_t *xfer);

/* Starts a transfer (or queues it when its lane is full). From now on the
 * transport owns it; `cb` is called exactly once, later, from the loop.
 * Returns 0, or -CAD_EBUSY when the transport is closing (the transfer is
 * then freed and cb never called), or another error. */
int cad_transport_start(cad_transport_t *t, cad_transfer_t *xfer, cad_transfer_done_cb cb,
                        void *arg, char *err);

/* Caps the transfers running at once over all lanes (0: no cap beyond the
 * lanes' own). A lane that is under its own limit waits while the total is
 * reached; slots are taken in lane order as transfers finish. */
void cad_transport_set_total(cad_transport_t *t, uint32_t total);

/* Cancels every transfer waiting in `lane` (started, not yet running): their
 * callbacks run soon, from the loop, with result CURLE_ABORTED_BY_CALLBACK
 * and cad_transfer_was_cancelled() true; running ones are left alone. For a
 * channel whose endpoint is failing, so that what was handed over ahead of
 * time is not sent into the failure. */
void cad_transport_clear_lane(cad_transport_t *t, int lane);

/* Whether the transfer was cancelled (cad_transport_clear_lane, or closing)
 * instead of finishing; valid in the completion callback. */
bool cad_transfer_was_cancelled(const cad_transfer_t *xfer);

/* What the transfer thread last reported of `lane`: transfers running and
 * waiting for a slot (0 and 0 for an unknown lane). */
void cad_transport_lane_counts(const cad_transport_t *t, int lane, int *running, int *waiting);

/* Current counters. */
void cad_transport_stats(const cad_transport_t *t, cad_transport_stats_t *out);

/* Closes the transport: new starts are refused; queued transfers are
 * cancelled at once; in-flight ones get up to `grace_ms` to finish, then are
 * cancelled. Every pending callback runs, then all libuv handles close, the
 * transport is freed and `closed` (may be NULL) is called from the loop. */
void cad_transport_close(cad_transport_t *t, int64_t grace_ms, void (*closed)(void *arg),
                         void *arg);

/* A closing transport stops waiting: what still runs is cancelled now, as
 * when the grace period ends (a second stop signal). No-op otherwise. */
void cad_transport_hurry(cad_transport_t *t);

#endif
