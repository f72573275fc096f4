/* CSV rows -> Commanders Act events (issue 6; shape: reference/cact-input.md
 * sections 1-2, values as in SPEC 2).
 *
 * The header row names event properties by dotted path: `event_name`, `id`,
 * `value`, `user.email`, `context.event_timestamp`, `partners.facebook.x`, ...
 * A plain name is a root property (custom ones allowed); a dotted name must
 * start with one of the objects user., context., items., integrations.,
 * partners. Items come in one of two layouts:
 *   - indexed, `items.0.product.id`, `items.1.quantity`: one row per event;
 *     items appear in index order, items whose cells are all empty are left
 *     out (so indexes need not be contiguous; a gap over 1000 is an error);
 *   - unindexed, `items.product.id`, `items.quantity`: one row per item, and
 *     consecutive rows with the same non-empty `id` form one event whose root
 *     fields come from the group's first row. Without an `id` column, or with
 *     an empty id, a row is an event of its own.
 * Values stay JSON strings (the mapper coerces numbers, SPEC 2); empty cells
 * are left out, and so are objects and arrays left empty. List columns
 * (`user.consent_categories`, an item's `product.colors`) are split on `|`
 * into arrays of trimmed, non-empty strings. Without an `event_name` column
 * every event gets "purchase"; without a `type` column, "offline" (or "online"
 * when `offline` is false).
 *
 * Events come out as compact JSON text, in header order (defaults first; in
 * the unindexed layout `items` last). Not thread-safe. */
#ifndef CAPID_INGEST_ROWS_H
#define CAPID_INGEST_ROWS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ingest/csv.h"
#include "util/err.h"

#define CAPID_ROWS_MAX_COLUMNS   4096
#define CAPID_ROWS_MAX_DEPTH     16                 /* path segments per column */
#define CAPID_ROWS_MAX_INDEX_GAP 1000               /* between indexed items */
#define CAPID_ROWS_MAX_ITEMS     1000               /* rows in one unindexed group */
#define CAPID_ROWS_MAX_EVENT     ((size_t)16 << 20) /* JSON bytes of a grouped event */

struct capid_rows;

enum capid_rows_layout {
    CAPID_ROWS_NO_ITEMS,  /* no items.* column */
    CAPID_ROWS_INDEXED,   /* items.N.x: one row per event */
    CAPID_ROWS_UNINDEXED, /* items.x: one row per item, grouped by id */
};

/* A finished event. `json` (NUL-terminated) is owned by the builder and valid
 * until the next feed/flush/free. Positions let an importer report the event
 * and commit a resume point after it: offset/line of its first row, and
 * end_offset/next_line just past its last row (pass those to
 * capid_csv_seek to continue after this event). */
struct capid_rows_event {
    const char *json;
    size_t len;
    size_t line;      /* physical line of the first row */
    size_t rows;      /* rows that went into it */
    size_t next_line; /* line at end_offset */
    uint64_t offset;
    uint64_t end_offset;
};

/* Validates `header` (the first CSV record; NULL means the file had none) and
 * plans the events. `offline` picks the default `type` (see above). Errors
 * (CAPID_EPARSE; CAPID_ETOOBIG over CAPID_ROWS_MAX_COLUMNS) name the column:
 * an empty header or column name, a duplicate column, a dotted name under an
 * unknown object, a name that is both a value and an object, indexed and
 * unindexed items mixed, a bad item index or a gap over 1000. `err` gets the
 * header line and the 1-based column in err->column. */
int capid_rows_new(struct capid_rows **r, const struct capid_csv_record *header, bool offline,
                   struct capid_perr *err);

/* Frees the builder; NULL is a no-op. */
void capid_rows_free(struct capid_rows *r);

enum capid_rows_layout capid_rows_layout(const struct capid_rows *r);

/* Feeds one data row (as many fields as the header). Returns
 *   1  `ev` holds a finished event: this row's, or, in the unindexed layout,
 *      the previous group's (which this row closed; the row opens the next);
 *   0  the row joined or opened a group that is still open;
 *   <0 the row was rejected and nothing changed (CAPID_EINVAL: field count;
 *      CAPID_ETOOBIG: its group is over CAPID_ROWS_MAX_ITEMS rows or
 *      CAPID_ROWS_MAX_EVENT bytes); `err` says why, with the row's line. */
int capid_rows_feed(struct capid_rows *r, const struct capid_csv_record *rec,
                    struct capid_rows_event *ev, struct capid_perr *err);

/* At end of input: 1 and the last open group in `ev`, or 0 if none. */
int capid_rows_flush(struct capid_rows *r, struct capid_rows_event *ev);

#endif
