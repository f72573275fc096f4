/* Logging to stderr: one line per message, `LEVEL message`, lowercase,
 * failure first. Never pass secrets (tokens, keys) or raw PII. Thread-safe. */
#ifndef CAPID_UTIL_LOG_H
#define CAPID_UTIL_LOG_H

enum capid_log_level { CAPID_LOG_DEBUG, CAPID_LOG_INFO, CAPID_LOG_WARN, CAPID_LOG_ERROR };

void capid_log_set_level(enum capid_log_level lvl);
void capid_log(enum capid_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define capid_debug(...) capid_log(CAPID_LOG_DEBUG, __VA_ARGS__)
#define capid_info(...)  capid_log(CAPID_LOG_INFO, __VA_ARGS__)
#define capid_warn(...)  capid_log(CAPID_LOG_WARN, __VA_ARGS__)
#define capid_error(...) capid_log(CAPID_LOG_ERROR, __VA_ARGS__)

#endif
