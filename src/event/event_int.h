/* Shared by event.c and json.c only: the per-event arena that holds the
 * cJSON nodes and strings of a parsed event. */
#ifndef CAPID_EVENT_EVENT_INT_H
#define CAPID_EVENT_EVENT_INT_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "event/event.h"

#define CAPID_ARENA_BLOCK (64 * 1024)

/* One block, bump-allocated from mem[0]. event.c recycles blocks through a
 * per-thread free list and installs cJSON hooks whose free is a no-op for
 * pointers inside mem while the arena is current (delete_tree). Whatever did
 * not fit came from malloc(): overflowed is then set, and the tree must go
 * through cJSON_Delete so those pieces are freed. */
struct capid_arena {
    struct capid_arena *next;
    size_t used;
    bool overflowed;
    _Alignas(16) char mem[CAPID_ARENA_BLOCK];
};

/* capid_json_parse (json.h) that also finds, on success, the first member in
 * document order whose key repeats that of an earlier member of the same
 * object (*dup; NULL if none): what event.c refuses as a duplicate key. */
enum capid_event_status capid_json_parse_event(const char *json, size_t len,
                                               const struct capid_limits *lim,
                                               struct capid_arena *arena, cJSON **rootp,
                                               struct capid_perr *err, const cJSON **dup);

#endif
