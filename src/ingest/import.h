/* The file import engine behind `capid import` (issue 6): the pieces that do
 * not depend on the queue or the mapping, so that they can be tested alone.
 *
 *   - identity: the SHA-256 of a file's bytes, computed in one streaming pass
 *     (the import mark's key names it, so an edited file is a new import);
 *   - reading: one source per file, CSV (through ingest/rows.h) or NDJSON,
 *     that hands out inputs (an event as JSON text, or a bad row with its
 *     line and what is wrong) with the position to resume after them;
 *   - resume: positions are byte offsets; the line number of an offset is
 *     counted again when a run resumes (one pass over the prefix);
 *   - the report: counters, the first invalid rows for the terminal, every
 *     invalid row streamed into a JSON report file, a progress bar.
 *
 * Positions: an input's `resume` is the offset where reading starts again so
 * that every input before it is never read twice and none after it is lost:
 * a CSV event's end (in the unindexed layout only an event's end is safe, as
 * a group of rows may still be open), the end of a bad row when no group is
 * open, an NDJSON line's end. Not thread-safe: one source per thread. */
#ifndef CAPID_INGEST_IMPORT_H
#define CAPID_INGEST_IMPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "capi/reason.h"
#include "util/err.h"

enum capid_import_format { CAPID_IMPORT_CSV, CAPID_IMPORT_NDJSON };

#define CAPID_IMPORT_SHOW_INVALID 20  /* invalid rows kept for the terminal summary */
#define CAPID_IMPORT_SHOW_SKIPPED 5   /* examples kept per skip reason */
#define CAPID_IMPORT_MSG_MAX      300 /* bytes of one invalid row's message */

/* "csv", "ndjson". */
const char *capid_import_format_name(enum capid_import_format f);
/* Format from a name ("csv", "ndjson"/"jsonl") or a path's extension
 * (.csv; .ndjson, .jsonl, .json); -1 when neither tells. */
int capid_import_format_parse(const char *name);
int capid_import_format_of_path(const char *path);

/* Reads fd from offset 0 to its end: lowercase hex SHA-256 into hex and the
 * byte count into *size. Leaves the offset at the end. Returns CAPID_OK,
 * CAPID_EIO (message in err) or CAPID_ENOMEM. */
int capid_import_hash(int fd, char hex[65], uint64_t *size, struct capid_perr *err);

/* The line number (1-based) of the byte at `offset` of fd, as the reader of
 * that format counts lines (csv.h: LF, CRLF and a bare CR each end a line;
 * ndjson.h: LFs only). Reads fd with pread. Returns CAPID_OK or CAPID_EIO. */
int capid_import_line_at(int fd, enum capid_import_format f, uint64_t offset, size_t *line,
                         struct capid_perr *err);

/* One input: an event, or a bad row (json is NULL, msg says why). */
struct capid_import_input {
    const char *json; /* owned by the source, valid until the next call */
    size_t len;
    const char *msg; /* bad row: "line 17: 5 fields, header has 7" */
    uint64_t line;   /* first line */
    uint32_t rows;   /* rows it came from (CSV grouping), 1 otherwise */
    int64_t resume;  /* where to resume after this input; -1 when it is not a safe point */
};

struct capid_import_src;

/* Opens a source on fd (owned by the caller, read from offset 0 for a CSV
 * header, then from `offset`, whose line is `line`; offset 0 = from the
 * start). `offline` picks the CSV default `type`. A CSV header is read and
 * checked here: a file without one, or with a bad column, is CAPID_EPARSE
 * with the line and column in err (the file is malformed: nothing imported).
 * Returns CAPID_OK, CAPID_EPARSE, CAPID_EIO (cannot seek) or CAPID_ENOMEM. */
int capid_import_src_open(struct capid_import_src **s, int fd, enum capid_import_format f,
                          bool offline, uint64_t offset, size_t line, struct capid_perr *err);
void capid_import_src_free(struct capid_import_src *s);

/* The next input. Returns 1 (an input in *in), 0 at the end of the file, or
 * a negative capid_err after which nothing more can be read (CAPID_EPARSE: an
 * unbalanced quote runs to the end of the file; CAPID_EIO: reading failed),
 * with the message in err and the bad row in *in (reported like others). */
int capid_import_src_next(struct capid_import_src *s, struct capid_import_input *in,
                          struct capid_perr *err);

/* Bytes consumed so far (absolute offset), for progress. */
uint64_t capid_import_src_tell(const struct capid_import_src *s);
/* CSV: "no_items", "indexed" or "unindexed"; NDJSON: "ndjson". */
const char *capid_import_src_layout(const struct capid_import_src *s);

/* ---- the report ------------------------------------------------------- */

struct capid_import_invalid {
    uint64_t line;
    char msg[CAPID_IMPORT_MSG_MAX];
};

struct capid_import_example {
    uint64_t line;
    size_t dest;
    char detail[160];
};

/* What one file gave in this run (a resumed run counts from where it
 * resumed). Skips are per event and destination; invalid rows per row. */
struct capid_import_file {
    const char *path;
    enum capid_import_format format;
    char sha256[65];
    uint64_t size;
    uint64_t resumed_offset; /* 0: from the start */
    size_t resumed_line;
    const char *status;               /* "imported", "validated", "already_imported", "malformed",
                                         "invalid", "interrupted", "failed", "unreadable" */
    char error[CAPID_IMPORT_MSG_MAX]; /* fatal problem, "" if none */
    uint64_t rows, events, queued, duplicates, invalid;
    uint64_t skipped[CAPID_R__COUNT]; /* gate reasons only */
    uint64_t *per_dest;               /* ndests counters */
    struct capid_import_invalid shown[CAPID_IMPORT_SHOW_INVALID];
    size_t nshown;
    struct capid_import_example examples[CAPID_R__COUNT][CAPID_IMPORT_SHOW_SKIPPED];
    size_t nexamples[CAPID_R__COUNT];
    int64_t elapsed_ms;
};

/* The whole run: files in order, and the JSON report being written. */
struct capid_import_report {
    const char *const *dest_names;
    size_t ndests;
    bool dry_run, strict;
    bool quiet;      /* no per-file line on stderr (a --strict check pass) */
    FILE *json;      /* report being streamed (to json_tmp), or NULL */
    char *json_path; /* final name */
    char *json_tmp;  /* written, renamed over json_path at the end */
    int nfiles_json; /* file objects written so far */
    bool in_file;    /* a file object is open in the JSON */
    struct capid_import_file totals;
    /* progress */
    bool tty;
    int64_t t0_ms, last_draw_ms;
    uint64_t start_offset;
};

/* Sets up a report; `json_path` (may be NULL) is where the JSON report goes:
 * written to a temporary file next to it and renamed at the end. Returns
 * CAPID_OK or CAPID_EIO (message in err). */
int capid_import_report_init(struct capid_import_report *r, const char *const *dest_names,
                             size_t ndests, bool dry_run, bool strict, const char *json_path,
                             struct capid_perr *err);
/* Closes (and on a failure removes) the temporary report; frees. */
void capid_import_report_release(struct capid_import_report *r);

/* Starts a file (zeroes f but path, format, sha256, size and the resume
 * point, which the caller has set) and opens its JSON object. */
void capid_import_file_begin(struct capid_import_report *r, struct capid_import_file *f,
                             uint64_t *per_dest);
/* Records an invalid row: counted, kept if among the first shown, streamed
 * into the JSON report. */
void capid_import_file_invalid(struct capid_import_report *r, struct capid_import_file *f,
                               uint64_t line, const char *msg);
/* Records a skipped event (a gate's reason, not a duplicate). */
void capid_import_file_skipped(struct capid_import_file *f, uint64_t line, size_t dest,
                               enum capid_reason reason, const char *detail);
/* Redraws the progress bar on a terminal (at most 10 times a second unless
 * `force`): rows, rows/s, skipped so far, time left from the file size. */
void capid_import_progress(struct capid_import_report *r, const struct capid_import_file *f,
                           uint64_t position, bool force);
/* Ends a file: clears the bar, closes its JSON object, adds to the totals,
 * prints one summary line on stderr when not on a terminal, and the
 * human-readable summary (rows, events, queued, duplicates, skips by reason,
 * the first invalid rows) to `out`. */
void capid_import_file_end(struct capid_import_report *r, struct capid_import_file *f, FILE *out);
/* Writes the totals and renames the JSON report in place. Returns CAPID_OK or
 * CAPID_EIO (message in err). */
int capid_import_report_finish(struct capid_import_report *r, struct capid_perr *err);

#endif
