/* Streaming NDJSON line splitter for `capid import` (issue 6).
 *
 * Splits input into lines through a fixed 64 KiB read buffer; a line longer
 * than the buffer is assembled in a side buffer capped at `max_line`. Lines end
 * with LF; a CR before the LF is dropped; a UTF-8 BOM at offset 0 is dropped;
 * the last line may lack its LF. Lines holding only JSON whitespace (space,
 * tab, CR) are skipped. The splitter does not look inside a line: parsing the
 * JSON (and validating its UTF-8) is the caller's job.
 *
 * "Line" is the 1-based count of LFs before the line, plus one. Offsets are
 * absolute byte offsets in the file. Not thread-safe. */
#ifndef CAPID_INGEST_NDJSON_H
#define CAPID_INGEST_NDJSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util/err.h"

#define CAPID_NDJSON_MAX_LINE_DEFAULT ((size_t)1 << 20)

struct capid_ndjson;

/* One line without its line end. `s` is NUL-terminated, but the line itself
 * may hold NUL bytes (it is not inspected): `len` is authoritative. Owned by
 * the reader, valid until the next call on it (the caller may modify it). */
struct capid_ndjson_line {
    char *s;
    size_t len;
    size_t line;
    size_t next_line;    /* line number at end_offset */
    uint64_t offset;     /* offset of the line's first byte (after a BOM) */
    uint64_t end_offset; /* just past its LF: where the next line starts */
};

/* Creates a splitter on `fd` (or `f`), which stays owned by the caller.
 * Reading starts at the current position (lseek/ftello, else 0).
 * `max_line` caps one line's bytes (0 = CAPID_NDJSON_MAX_LINE_DEFAULT).
 * Returns CAPID_OK or CAPID_ENOMEM; `err` may be NULL. */
int capid_ndjson_open_fd(struct capid_ndjson **n, int fd, size_t max_line, struct capid_perr *err);
int capid_ndjson_open_file(struct capid_ndjson **n, FILE *f, size_t max_line,
                           struct capid_perr *err);

/* Frees the splitter; NULL is a no-op. */
void capid_ndjson_free(struct capid_ndjson *n);

/* Reads the next non-blank line. Returns 1 for a line, 0 at end of input,
 * CAPID_ETOOBIG for a line over max_line (it has been skipped: `ln` has its
 * line and offsets, s = NULL, and the next call goes on after it), or
 * CAPID_EIO if reading failed (fatal: later calls return 0). `err` gets a
 * message starting with the line number. */
int capid_ndjson_next(struct capid_ndjson *n, struct capid_ndjson_line *ln, struct capid_perr *err);

/* Continues at `offset` (a line start: some line's offset or end_offset) whose
 * line number is `line`. CAPID_EIO on input that cannot seek. */
int capid_ndjson_seek(struct capid_ndjson *n, uint64_t offset, size_t line, struct capid_perr *err);

/* Bytes consumed so far, as an absolute offset (for progress reports). */
uint64_t capid_ndjson_tell(const struct capid_ndjson *n);

#endif
