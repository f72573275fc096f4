#include "capi/reason.h"

#include <string.h>

static const char *const names[CAPID_R__COUNT] = {
    [CAPID_R_NONE] = "",
    [CAPID_R_INVALID_JSON] = "invalid_json",
    [CAPID_R_INVALID_EVENT] = "invalid_event",
    [CAPID_R_TOO_LARGE] = "too_large",
    [CAPID_R_UNKNOWN_SOURCE] = "unknown_source",
    [CAPID_R_NO_DESTINATION] = "no_destination",
    [CAPID_R_NO_CONSENT] = "no_consent",
    [CAPID_R_INSUFFICIENT_MATCH_KEYS] = "insufficient_match_keys",
    [CAPID_R_MISSING_USER_AGENT] = "missing_user_agent",
    [CAPID_R_MISSING_SOURCE_URL] = "missing_source_url",
    [CAPID_R_PURCHASE_WITHOUT_VALUE] = "purchase_without_value",
    [CAPID_R_EVENT_TOO_OLD] = "event_too_old",
    [CAPID_R_EVENT_IN_FUTURE] = "event_in_future",
    [CAPID_R_DUPLICATE] = "duplicate",
    [CAPID_R_GRAPH_REJECTED] = "graph_rejected",
    [CAPID_R_RETRY_WINDOW_EXCEEDED] = "retry_window_exceeded",
};

const char *capid_reason_name(enum capid_reason r)
{
    return (unsigned)r < CAPID_R__COUNT ? names[r] : "unknown";
}

int capid_reason_from_name(const char *name)
{
    for (int i = 1; i < CAPID_R__COUNT; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}
