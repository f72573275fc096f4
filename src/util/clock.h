/* Clocks: wall time for event ages, monotonic for timeouts. */
#ifndef CAPID_UTIL_CLOCK_H
#define CAPID_UTIL_CLOCK_H

#include <stdint.h>

int64_t capid_now_s(void);   /* wall clock, epoch seconds */
int64_t capid_now_ms(void);  /* wall clock, epoch milliseconds */
int64_t capid_mono_ms(void); /* monotonic milliseconds */

#endif
