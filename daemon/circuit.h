/*
 * circuit.h — a per-channel circuit breaker.
 *
 * A provider outage makes every attempt fail; hammering it helps nobody and
 * burns the touches' attempts. After `threshold` consecutive failures the
 * circuit opens: the dispatcher stops claiming for that channel (the queue
 * stays intact). After `open_interval_ms` it goes half-open and lets exactly
 * one touch through as a probe; a success closes it, a failure opens it again
 * for the next interval (doubling up to `max_interval_ms`).
 *
 * Pure state machine: the caller passes the monotonic time in milliseconds,
 * so tests drive it without sleeping. No allocation.
 */
#ifndef CADENCE_CIRCUIT_H
#define CADENCE_CIRCUIT_H

#include <stdbool.h>
#include <stdint.h>

enum cad_circuit_state {
    CAD_CIRCUIT_CLOSED = 0, /* sending normally */
    CAD_CIRCUIT_OPEN,       /* not sending until the interval ends */
    CAD_CIRCUIT_HALF_OPEN,  /* one probe allowed */
};

typedef struct cad_circuit {
    enum cad_circuit_state state;
    uint32_t threshold;       /* consecutive failures that open it */
    int64_t base_interval_ms; /* first open interval */
    int64_t max_interval_ms;  /* longest open interval */
    int64_t interval_ms;      /* current open interval */
    uint32_t consecutive_failures;
    int64_t since_ms;      /* monotonic ms of the last state change */
    bool probe_in_flight;  /* half-open: the probe is out */
    uint64_t opened_count; /* times it opened since start */
} cad_circuit_t;

/* Initialises a closed circuit. threshold 0 disables it (never opens). */
void cad_circuit_init(cad_circuit_t *c, uint32_t threshold, int64_t interval_ms,
                      int64_t max_interval_ms, int64_t now_ms);

/* May one more attempt start now? Moves OPEN -> HALF_OPEN when the interval
 * has passed; in HALF_OPEN allows one attempt (the probe) and marks it out. */
bool cad_circuit_allow(cad_circuit_t *c, int64_t now_ms);

/* An attempt succeeded (delivered, or a permanent failure that proves the
 * provider answers): closes the circuit. */
void cad_circuit_success(cad_circuit_t *c, int64_t now_ms);

/* An attempt failed transiently (timeout, 5xx, connection refused). Returns
 * true when this failure opened the circuit. */
bool cad_circuit_failure(cad_circuit_t *c, int64_t now_ms);

/* An attempt that never reached the provider (cancelled at shutdown): a
 * half-open probe slot is released without a verdict. */
void cad_circuit_abandon(cad_circuit_t *c);

/* Milliseconds until an open circuit will let a probe through; 0 when it
 * allows attempts now (closed, or half-open without a probe out); -1 when a
 * half-open probe is out (the outcome decides). */
int64_t cad_circuit_wait_ms(const cad_circuit_t *c, int64_t now_ms);

/* "closed", "open", "half-open"; static. */
const char *cad_circuit_state_name(enum cad_circuit_state s);

#endif
