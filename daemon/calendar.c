/*
 * calendar.c — a min-heap of next evaluation times with a key index.
 *
 * The heap is the classic array layout (children of i at 2i+1, 2i+2); every
 * move of an entry updates pos[key] so a customer can be found and re-keyed
 * without a search. pos stores index + 1 so that a zeroed array means
 * "absent", which lets it grow with calloc semantics.
 */
#include "calendar.h"

#include <stdlib.h>
#include <string.h>

#define CAD_CALENDAR_MAX_KEY ((int64_t)INT32_MAX)

void cad_calendar_init(cad_calendar_t *cal)
{
    memset(cal, 0, sizeof(*cal));
}

void cad_calendar_free(cad_calendar_t *cal)
{
    free(cal->heap);
    free(cal->pos);
    memset(cal, 0, sizeof(*cal));
}

static int grow_heap(cad_calendar_t *cal, size_t need)
{
    if (need <= cal->cap)
        return 0;
    size_t cap = cal->cap ? cal->cap : 1024;
    while (cap < need)
        cap *= 2;
    cad_calendar_entry_t *h = realloc(cal->heap, cap * sizeof(*h));
    if (!h)
        return -CAD_ENOMEM;
    cal->heap = h;
    cal->cap = cap;
    return 0;
}

static int grow_pos(cad_calendar_t *cal, int64_t key)
{
    if ((size_t)key < cal->pos_cap)
        return 0;
    size_t cap = cal->pos_cap ? cal->pos_cap : 1024;
    while (cap <= (size_t)key)
        cap *= 2;
    uint32_t *p = realloc(cal->pos, cap * sizeof(*p));
    if (!p)
        return -CAD_ENOMEM;
    memset(p + cal->pos_cap, 0, (cap - cal->pos_cap) * sizeof(*p));
    cal->pos = p;
    cal->pos_cap = cap;
    return 0;
}

int cad_calendar_reserve(cad_calendar_t *cal, size_t n, int64_t max_key)
{
    int rc = grow_heap(cal, n);
    if (rc == 0 && max_key > 0 && max_key <= CAD_CALENDAR_MAX_KEY)
        rc = grow_pos(cal, max_key);
    return rc;
}

static inline void place(cad_calendar_t *cal, size_t i, cad_calendar_entry_t e)
{
    cal->heap[i] = e;
    cal->pos[e.key] = (uint32_t)(i + 1);
}

static void sift_up(cad_calendar_t *cal, size_t i)
{
    cad_calendar_entry_t e = cal->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (cal->heap[parent].when <= e.when)
            break;
        place(cal, i, cal->heap[parent]);
        i = parent;
    }
    place(cal, i, e);
}

static void sift_down(cad_calendar_t *cal, size_t i)
{
    cad_calendar_entry_t e = cal->heap[i];
    size_t n = cal->size;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n)
            break;
        if (child + 1 < n && cal->heap[child + 1].when < cal->heap[child].when)
            child++;
        if (e.when <= cal->heap[child].when)
            break;
        place(cal, i, cal->heap[child]);
        i = child;
    }
    place(cal, i, e);
}

int cad_calendar_set(cad_calendar_t *cal, int64_t key, cad_time_t when)
{
    if (key < 0 || key > CAD_CALENDAR_MAX_KEY)
        return -CAD_EINVAL;
    int rc = grow_pos(cal, key);
    if (rc)
        return rc;
    uint32_t p = cal->pos[key];
    if (p) {
        size_t i = p - 1;
        cad_time_t old = cal->heap[i].when;
        cal->heap[i].when = when;
        if (when < old)
            sift_up(cal, i);
        else if (when > old)
            sift_down(cal, i);
        return 0;
    }
    rc = grow_heap(cal, cal->size + 1);
    if (rc)
        return rc;
    size_t i = cal->size++;
    cal->heap[i] = (cad_calendar_entry_t){.when = when, .key = key};
    sift_up(cal, i);
    return 0;
}

int cad_calendar_set_earlier(cad_calendar_t *cal, int64_t key, cad_time_t when)
{
    if (cad_calendar_get(cal, key) <= when)
        return 0;
    return cad_calendar_set(cal, key, when);
}

static void remove_at(cad_calendar_t *cal, size_t i)
{
    cal->pos[cal->heap[i].key] = 0;
    size_t last = --cal->size;
    if (i == last)
        return;
    cad_calendar_entry_t moved = cal->heap[last];
    place(cal, i, moved);
    if (i > 0 && cal->heap[(i - 1) / 2].when > moved.when)
        sift_up(cal, i);
    else
        sift_down(cal, i);
}

void cad_calendar_remove(cad_calendar_t *cal, int64_t key)
{
    if (key < 0 || (size_t)key >= cal->pos_cap || !cal->pos[key])
        return;
    remove_at(cal, cal->pos[key] - 1);
}

const cad_calendar_entry_t *cad_calendar_peek(const cad_calendar_t *cal)
{
    return cal->size ? &cal->heap[0] : NULL;
}

bool cad_calendar_pop_due(cad_calendar_t *cal, cad_time_t now, cad_calendar_entry_t *out)
{
    if (!cal->size || cal->heap[0].when > now)
        return false;
    *out = cal->heap[0];
    remove_at(cal, 0);
    return true;
}

cad_time_t cad_calendar_get(const cad_calendar_t *cal, int64_t key)
{
    if (key < 0 || (size_t)key >= cal->pos_cap || !cal->pos[key])
        return CAD_TIME_NEVER;
    return cal->heap[cal->pos[key] - 1].when;
}

size_t cad_calendar_memory(const cad_calendar_t *cal)
{
    return cal->cap * sizeof(*cal->heap) + cal->pos_cap * sizeof(*cal->pos);
}
