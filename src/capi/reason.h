/* Reason codes (SPEC 8): why an event did not reach Meta. */
#ifndef CAPID_CAPI_REASON_H
#define CAPID_CAPI_REASON_H

enum capid_reason {
    CAPID_R_NONE = 0, /* not skipped */
    CAPID_R_INVALID_JSON,
    CAPID_R_INVALID_EVENT,
    CAPID_R_TOO_LARGE,
    CAPID_R_UNKNOWN_SOURCE,
    CAPID_R_NO_DESTINATION,
    CAPID_R_NO_CONSENT,
    CAPID_R_INSUFFICIENT_MATCH_KEYS,
    CAPID_R_MISSING_USER_AGENT,
    CAPID_R_MISSING_SOURCE_URL,
    CAPID_R_PURCHASE_WITHOUT_VALUE,
    CAPID_R_EVENT_TOO_OLD,
    CAPID_R_EVENT_IN_FUTURE,
    CAPID_R_DUPLICATE,
    CAPID_R_GRAPH_REJECTED,
    CAPID_R_RETRY_WINDOW_EXCEEDED,
    CAPID_R__COUNT
};

/* The SPEC 8 name ("no_consent", ...); "" for CAPID_R_NONE. */
const char *capid_reason_name(enum capid_reason r);
/* Inverse of capid_reason_name; -1 when unknown. */
int capid_reason_from_name(const char *name);

#endif
