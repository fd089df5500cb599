/*
 * calendar.h — every customer's next evaluation time, in memory.
 *
 * A binary min-heap of (when, customer key) with a position index by key, so
 * that "what is due next", "this customer is due at T now" and "forget this
 * customer" are O(log n). Customer keys are the store's row ids, which are
 * dense small integers: the index is a plain array indexed by key. Memory is
 * about 20 bytes per customer (16 in the heap, 4 in the index).
 *
 * Not thread-safe; owned by the loop thread (or the simulator).
 */
#ifndef CADENCE_CALENDAR_H
#define CADENCE_CALENDAR_H

#include "common.h"

typedef struct cad_calendar_entry {
    cad_time_t when;
    int64_t key;
} cad_calendar_entry_t;

typedef struct cad_calendar {
    cad_calendar_entry_t *heap; /* owned */
    size_t size, cap;
    uint32_t *pos; /* owned: heap index + 1 by key, 0 = absent */
    size_t pos_cap;
} cad_calendar_t;

/* Initialises an empty calendar (no allocation until the first set). */
void cad_calendar_init(cad_calendar_t *cal);

/* Frees the arrays; the calendar is empty and reusable afterwards. */
void cad_calendar_free(cad_calendar_t *cal);

/* Reserves room for `n` customers with keys below `max_key` (optional). */
int cad_calendar_reserve(cad_calendar_t *cal, size_t n, int64_t max_key);

/* Sets (inserting or moving) the customer's next evaluation. Keys must be
 * >= 0 and < 2^31. Returns 0 or -CAD_ENOMEM / -CAD_EINVAL. */
int cad_calendar_set(cad_calendar_t *cal, int64_t key, cad_time_t when);

/* Moves the customer earlier only: when < current (or inserts). */
int cad_calendar_set_earlier(cad_calendar_t *cal, int64_t key, cad_time_t when);

/* Removes the customer; no-op when absent. */
void cad_calendar_remove(cad_calendar_t *cal, int64_t key);

/* The earliest entry, or NULL when empty. Valid until the next change. */
const cad_calendar_entry_t *cad_calendar_peek(const cad_calendar_t *cal);

/* Removes and returns the earliest entry if it is due (when <= now). */
bool cad_calendar_pop_due(cad_calendar_t *cal, cad_time_t now, cad_calendar_entry_t *out);

/* The customer's scheduled time, or CAD_TIME_NEVER when absent. */
cad_time_t cad_calendar_get(const cad_calendar_t *cal, int64_t key);

/* Heap bytes in use (for the memory benchmark and status). */
size_t cad_calendar_memory(const cad_calendar_t *cal);

#endif
