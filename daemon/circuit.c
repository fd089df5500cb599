/*
 * circuit.c — the per-channel circuit breaker (see circuit.h).
 *
 * Closed counts consecutive transient failures; the threshold-th opens the
 * circuit for the current interval. When the interval has passed, the next
 * cad_circuit_allow() turns it half-open and lets one probe through; while
 * the probe is out nothing else passes. The probe's success closes the
 * circuit and resets the interval; its failure reopens it with the interval
 * doubled (capped), so a long outage is probed less and less often.
 */
#include "circuit.h"

#include <stddef.h>

void cad_circuit_init(cad_circuit_t *c, uint32_t threshold, int64_t interval_ms,
                      int64_t max_interval_ms, int64_t now_ms)
{
    *c = (cad_circuit_t){0};
    c->state = CAD_CIRCUIT_CLOSED;
    c->threshold = threshold;
    c->base_interval_ms = interval_ms > 0 ? interval_ms : 1000;
    c->max_interval_ms =
        max_interval_ms >= c->base_interval_ms ? max_interval_ms : c->base_interval_ms;
    c->interval_ms = c->base_interval_ms;
    c->since_ms = now_ms;
}

static void set_state(cad_circuit_t *c, enum cad_circuit_state s, int64_t now_ms)
{
    if (c->state != s)
        c->since_ms = now_ms;
    c->state = s;
}

bool cad_circuit_allow(cad_circuit_t *c, int64_t now_ms)
{
    switch (c->state) {
    case CAD_CIRCUIT_CLOSED: return true;
    case CAD_CIRCUIT_OPEN:
        if (now_ms - c->since_ms < c->interval_ms)
            return false;
        set_state(c, CAD_CIRCUIT_HALF_OPEN, now_ms);
        c->probe_in_flight = true;
        return true;
    case CAD_CIRCUIT_HALF_OPEN:
        if (c->probe_in_flight)
            return false;
        c->probe_in_flight = true;
        return true;
    }
    return false;
}

void cad_circuit_success(cad_circuit_t *c, int64_t now_ms)
{
    c->consecutive_failures = 0;
    c->probe_in_flight = false;
    c->interval_ms = c->base_interval_ms;
    set_state(c, CAD_CIRCUIT_CLOSED, now_ms);
}

bool cad_circuit_failure(cad_circuit_t *c, int64_t now_ms)
{
    c->consecutive_failures++;
    if (c->state == CAD_CIRCUIT_HALF_OPEN) {
        c->probe_in_flight = false;
        int64_t next = c->interval_ms * 2;
        c->interval_ms = next > c->max_interval_ms ? c->max_interval_ms : next;
        set_state(c, CAD_CIRCUIT_OPEN, now_ms);
        c->since_ms = now_ms;
        c->opened_count++;
        return true;
    }
    if (c->state == CAD_CIRCUIT_OPEN) {
        /* A failure of an attempt started before the circuit opened. */
        return false;
    }
    if (c->threshold > 0 && c->consecutive_failures >= c->threshold) {
        set_state(c, CAD_CIRCUIT_OPEN, now_ms);
        c->opened_count++;
        return true;
    }
    return false;
}

void cad_circuit_abandon(cad_circuit_t *c)
{
    if (c->state == CAD_CIRCUIT_HALF_OPEN)
        c->probe_in_flight = false;
}

int64_t cad_circuit_wait_ms(const cad_circuit_t *c, int64_t now_ms)
{
    switch (c->state) {
    case CAD_CIRCUIT_CLOSED: return 0;
    case CAD_CIRCUIT_OPEN: {
        int64_t left = c->since_ms + c->interval_ms - now_ms;
        return left > 0 ? left : 0;
    }
    case CAD_CIRCUIT_HALF_OPEN: return c->probe_in_flight ? -1 : 0;
    }
    return 0;
}

const char *cad_circuit_state_name(enum cad_circuit_state s)
{
    switch (s) {
    case CAD_CIRCUIT_CLOSED: return "closed";
    case CAD_CIRCUIT_OPEN: return "open";
    case CAD_CIRCUIT_HALF_OPEN: return "half-open";
    }
    return "unknown";
}
