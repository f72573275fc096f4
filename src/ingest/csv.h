/* Streaming RFC 4180 CSV reader for `capid import` (issue 6).
 *
 * Reads from a file descriptor or a FILE* through a fixed 64 KiB read buffer;
 * only the record being parsed is held in memory, and it is capped
 * (`max_record`). Accepted input: quoted fields with embedded commas, doubled
 * quotes and embedded CR/LF; LF, CRLF or bare CR line ends, mixed in one file;
 * an optional UTF-8 byte order mark at offset 0; an optional final newline;
 * empty fields. Blank lines between records are skipped. Every field must be
 * valid UTF-8 without NUL bytes.
 *
 * "Line" is always a physical line, 1-based: LF, CRLF and bare CR each end one,
 * including those inside quoted fields, so a record after a field with an
 * embedded newline reports the line an editor shows. "Column" is a 1-based byte
 * position within that physical line (the BOM is not counted). Offsets are
 * absolute byte offsets in the file (the BOM is counted).
 *
 * Not thread-safe: one reader per thread. */
#ifndef CAPID_INGEST_CSV_H
#define CAPID_INGEST_CSV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util/err.h"

#define CAPID_CSV_MAX_RECORD_DEFAULT ((size_t)1 << 20) /* 1 MiB of field data */
#define CAPID_CSV_MAX_FIELDS         16384

struct capid_csv;

/* One field: `s` is NUL-terminated (valid UTF-8, no NUL inside), `len` bytes. */
struct capid_csv_field {
    const char *s;
    size_t len;
};

/* One record. Field memory belongs to the reader and stays valid until the
 * next capid_csv_next/seek/free call on it. */
struct capid_csv_record {
    const struct capid_csv_field *fields;
    size_t nfields;
    size_t line;         /* physical line of the record's first byte */
    size_t next_line;    /* line number of the byte at end_offset */
    uint64_t offset;     /* byte offset of the record's first byte */
    uint64_t end_offset; /* just past its line end: where the next record starts */
    bool fatal;          /* set with an error after which nothing more can be read */
};

/* Creates a reader on `fd` (or `f`), which stays owned by the caller and is
 * never closed by the reader. Reading starts at the descriptor's current
 * position, which is taken from lseek/ftello when possible (else 0); a BOM is
 * only recognised at offset 0. `max_record` caps the bytes of one record's
 * field data (0 = CAPID_CSV_MAX_RECORD_DEFAULT). Returns CAPID_OK or
 * CAPID_ENOMEM; `err` may be NULL. */
int capid_csv_open_fd(struct capid_csv **c, int fd, size_t max_record, struct capid_perr *err);
int capid_csv_open_file(struct capid_csv **c, FILE *f, size_t max_record, struct capid_perr *err);

/* Frees the reader; NULL is a no-op. */
void capid_csv_free(struct capid_csv *c);

/* Reads the next record into `rec`.
 * Returns 1 for a record, 0 at end of input, or a negative capid_err:
 *   CAPID_EPARSE  the record is bad (quote inside an unquoted field, text after
 *                 a closing quote, invalid UTF-8, NUL byte, wrong field count)
 *   CAPID_ETOOBIG the record is over max_record bytes or CAPID_CSV_MAX_FIELDS
 *   CAPID_EIO     reading failed (fatal)
 * On an error `rec` describes the bad record except its fields (nfields = 0):
 * line, offset and end_offset; `err` gets a message that starts with the line
 * ("line 17: 5 fields, header has 7"), and err->line/column/offset point at the
 * fault itself. Unless rec->fatal is set, the bad record has been skipped and
 * the next call goes on with the following one. An unbalanced quote runs to end
 * of input and is fatal; after a fatal error, next() returns 0.
 * The first record returned (the header) fixes the field count that every
 * later record must have, unless capid_csv_expect_fields set one. */
int capid_csv_next(struct capid_csv *c, struct capid_csv_record *rec, struct capid_perr *err);

/* Sets the field count later records must have (0 = no check). */
void capid_csv_expect_fields(struct capid_csv *c, size_t n);

/* Continues reading at `offset`, which must be a record boundary (a record's
 * `offset` or `end_offset`), whose line number is `line`. The expected field
 * count is kept, so an importer resumes with: open, next (header), seek. Works
 * only on seekable input: CAPID_EIO otherwise (message in `err`). */
int capid_csv_seek(struct capid_csv *c, uint64_t offset, size_t line, struct capid_perr *err);

/* Bytes consumed so far, as an absolute offset (for progress reports). */
uint64_t capid_csv_tell(const struct capid_csv *c);

#endif
