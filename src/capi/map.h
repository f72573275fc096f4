/* The mapping engine (SPEC 4): one Commanders Act event + one destination
 * -> one CAPI server event (JSON text) or a reason code. Pure: no I/O. */
#ifndef CAPID_CAPI_MAP_H
#define CAPID_CAPI_MAP_H

#include <stdint.h>

#include "capi/norm.h"
#include "capi/reason.h"
#include "config/config.h"
#include "event/event.h"
#include "util/buf.h"
#include "util/sha256.h"

/* Counters kept by a mapper (per thread; add them up for metrics). */
struct capid_map_stats {
    uint64_t mapped;
    uint64_t skipped[CAPID_R__COUNT];
    uint64_t dropped_value[CAPID_UK__COUNT + 3]; /* per hashed key, then ip, fbp, fbc */
    uint64_t pii_guarded;                        /* custom_data strings kept out (4.4) */
};
#define CAPID_DROPPED_IP  (CAPID_UK__COUNT)
#define CAPID_DROPPED_FBP (CAPID_UK__COUNT + 1)
#define CAPID_DROPPED_FBC (CAPID_UK__COUNT + 2)

/* Reusable state of one thread: hashing context and scratch buffers. */
struct capid_mapper {
    struct capid_sha256 sha;
    struct capid_buf norm, scratch, cd;
    void *cd_entries; /* custom_data entries, reused across events */
    size_t cd_cap;
    struct capid_map_stats stats;
    bool year_known; /* max_year is next year at clock year_of */
    int64_t year_of;
    int max_year;
    struct capid_sha256_memo *memo; /* digests of repeating values (geo, gender) */
};

/* What a mapping produced. On success reason == CAPID_R_NONE and json holds
 * the CAPI event; event_name, event_id and action_source point into the
 * mapper/event and stay valid until the next capid_map_event call or the
 * event's release. On a skip, detail says why in words. */
#define CAPID_NO_ID_TIME INT64_MIN

struct capid_mapped {
    enum capid_reason reason;
    char detail[200];
    struct capid_buf json;
    const char *event_name;
    const char *event_id;
    const char *action_source;
    int64_t event_time;
    /* When event_id was derived from the event's bytes (SPEC 2: no id given)
     * and those bytes carry the event's own timestamp, that time: the same id
     * then always comes with the same time, and the queue puts it in front
     * of the dedup key, so that such keys arrive in time order instead of
     * at random places of the key tree. CAPID_NO_ID_TIME otherwise. */
    int64_t id_time;
    char id_buf[72];
};

int capid_mapper_init(struct capid_mapper *m);
void capid_mapper_release(struct capid_mapper *m);
void capid_mapped_init(struct capid_mapped *out);
void capid_mapped_release(struct capid_mapped *out);

/* Maps ev for destination d at clock `now` (epoch seconds). Returns CAPID_OK
 * (see out->reason for skipped events) or CAPID_ENOMEM. */
int capid_map_event(struct capid_mapper *m, const struct capid_dest *d, struct capid_event *ev,
                    int64_t now, struct capid_mapped *out);

/* Meta's action_source values (SPEC 4.1). */
bool capid_action_source_valid(const char *s);

#endif
