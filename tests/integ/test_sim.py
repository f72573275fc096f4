"""Tests of the Graph API simulator itself (issue 3): Meta's checks, both body
encodings, token and pixel checks, every fault kind as scripted, the control
API, duplicates, concurrency, shutdown. Real process on 127.0.0.1; no fixed
sleeps (latency is asserted from measured times, waits poll a deadline)."""
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import threading
import time
import urllib.error
import urllib.parse

from lib import SHARED, Proc, wait_for
from simlib import DEFAULT_PIXEL, OTHER_PIXEL, Sim

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0"
EM = hashlib.sha256(b"user@example.com").hexdigest()


def event(i=0, now=None, **over):
    """A valid website event; keyword arguments replace top-level members (None
    removes one)."""
    now = int(time.time()) if now is None else now
    ev = {"event_name": "PageView", "event_time": now - 60, "event_id": f"ev-{i}",
          "action_source": "website", "event_source_url": "https://shop.example/p?x=1",
          "user_data": {"em": [EM], "client_ip_address": "203.0.113.7",
                        "client_user_agent": UA}}
    for k, v in over.items():
        if v is None:
            ev.pop(k, None)
        else:
            ev[k] = v
    return ev


def with_ud(**over):
    """A valid event whose user_data members are replaced (None removes)."""
    ev = event(2)
    for k, v in over.items():
        if v is None:
            ev["user_data"].pop(k, None)
        else:
            ev["user_data"][k] = v
    return ev


def purchase(**cd):
    ev = event(2, event_name="Purchase")
    ev["custom_data"] = {k: v for k, v in {"value": 12.5, "currency": "EUR", **cd}.items()
                         if v is not None}
    return ev


DAY = 86400
NOW = int(time.time())

# One row per rule: (name, bad event, subcode). Each bad event is sent third
# in a batch, so the error must name index 2.
REJECT = [
    ("not an object", 5, 2804019),
    ("string that is not JSON", "not json", 2804019),
    ("event_name missing", event(2, event_name=None), 2804902),
    ("event_name empty", event(2, event_name=""), 2804902),
    ("event_name not a string", event(2, event_name=7), 2804902),
    ("event_time missing", event(2, event_time=None), 2804903),
    ("event_time a string", event(2, event_time=str(NOW)), 2804903),
    ("event_time fractional", event(2, event_time=NOW - 0.5), 2804903),
    ("event_time 8 days old", event(2, event_time=NOW - 8 * DAY), 2804003),
    ("physical_store 63 days old", event(2, event_time=NOW - 63 * DAY,
                                         action_source="physical_store"), 2804003),
    ("event_time in milliseconds", event(2, event_time=NOW * 1000), 2804904),
    ("event_time an hour ahead", event(2, event_time=NOW + 3600), 2804904),
    ("action_source missing", event(2, action_source=None), 2804905),
    ("action_source unknown", event(2, action_source="web"), 2804905),
    ("action_source capitalised", event(2, action_source="Website"), 2804905),
    ("website without user agent", with_ud(client_user_agent=None), 2804906),
    ("website with empty user agent", with_ud(client_user_agent=""), 2804906),
    ("website without source url", event(2, event_source_url=None), 2804907),
    ("user_data missing", event(2, action_source="email", user_data=None), 2804908),
    ("user_data empty", event(2, action_source="email", user_data={}), 2804908),
    ("user_data not an object", event(2, action_source="email", user_data=[EM]), 2804908),
    ("em not an array", with_ud(em=EM), 2804909),
    ("em unhashed", with_ud(em=["user@example.com"]), 2804909),
    ("em uppercase hex", with_ud(em=[EM.upper()]), 2804909),
    ("ph 63 hex", with_ud(ph=[EM[:63]]), 2804909),
    ("country not a string", with_ud(country=[7]), 2804909),
    ("zp with appendix", with_ud(zp=[EM + ".AQQCAQIB"]), 2804909),
    ("fbc without click id", with_ud(fbc="fb.1.1554763741205"), 2804001),
    ("fbc not fb", with_ud(fbc="xx.1.1554763741205.AbC"), 2804001),
    ("fbc bad appendix", with_ud(fbc="fb.1.1554763741205.AbC.ZZZ"), 2804001),
    ("fbc time not digits", with_ud(fbc="fb.1.17x.AbC"), 2804001),
    ("fbp not a string", with_ud(fbp=12), 2804910),
    ("fbp three parts", with_ud(fbp="fb.1.1596403881668"), 2804910),
    ("Purchase without value", purchase(value=None), 2804911),
    ("Purchase value a string", purchase(value="12.5"), 2804911),
    ("Purchase without custom_data", event(2, event_name="Purchase"), 2804911),
    ("Purchase without currency", purchase(currency=None), 2804010),
    ("Purchase currency 4 letters", purchase(currency="EURO"), 2804010),
    ("Purchase currency digits", purchase(currency="978"), 2804010),
]

ACCEPT = [
    ("physical_store 30 days old", event(2, event_time=NOW - 30 * DAY,
                                         action_source="physical_store")),
    ("9 minutes ahead", event(2, event_time=NOW + 540)),
    ("non-website without user agent or url",
     event(2, action_source="email", event_source_url=None,
           user_data={"external_id": ["crm-1"]})),
    ("fbc with 2-letter appendix", with_ud(fbc="fb.1.1554763741205.AbC-_d.AQ")),
    ("fbc with 8-letter appendix", with_ud(fbc="fb.2.1554763741205.AbC.AQQCAQIB")),
    ("fbp documented example", with_ud(fbp="fb.1.1596403881668.1116446470")),
    ("empty hashed array", with_ud(em=[], ph=[EM])),
    ("Purchase with lowercase currency", purchase(currency="usd", value=0)),
    ("custom event name", event(2, event_name="newsletter_optin")),
    ("event without event_id", event(2, event_id=None)),
]


def error_of(body):
    assert isinstance(body, dict) and "error" in body, body
    return body["error"]


def test_each_rule_rejects_the_whole_batch_and_names_the_index():
    with Sim() as sim:
        bad = []
        for name, ev, subcode in REJECT:
            st, _, body = sim.send([event(0), event(1), ev])
            err = body.get("error", {}) if isinstance(body, dict) else {}
            ok = (st == 400 and err.get("code") == 100 and err.get("error_subcode") == subcode
                  and err.get("is_transient") is False and err.get("error_user_title")
                  and "(event index 2)" in err.get("error_user_msg", ""))
            if not ok:
                bad.append(f"{name}: {st} {body}")
        assert not bad, "\n".join(bad)
        assert sim.stats()["events"] == 0, "a rejected batch must record nothing"


def test_valid_edge_cases_are_accepted():
    with Sim() as sim:
        bad = []
        for name, ev in ACCEPT:
            st, _, body = sim.send([event(0), ev])
            if st != 200 or body.get("events_received") != 2:
                bad.append(f"{name}: {st} {body}")
        assert not bad, "\n".join(bad)


def test_batch_shape_rules():
    with Sim() as sim:
        cases = [
            ("data not an array", {"data": {"event_name": "x"}}, 2804019),
            ("data missing", {}, 2804019),
            ("more than 1000 events", {"data": [event(i) for i in range(1001)]}, 2804901),
        ]
        for name, body, subcode in cases:
            st, _, doc = sim.send(None, raw_body=json.dumps({**body, "access_token": sim.token}),
                                  headers={"Content-Type": "application/json"})
            err = error_of(doc)
            assert (st, err["code"], err["error_subcode"], err["is_transient"]) == \
                (400, 100, subcode, False), (name, st, doc)
            assert err["error_user_msg"] and err["error_user_title"], (name, doc)
        st, _, doc = sim.send(None, raw_body="{not json", headers={"Content-Type":
                                                                   "application/json"})
        assert st == 400 and error_of(doc)["code"] == 100
        st, _, doc = sim.send([event(i) for i in range(1000)])
        assert st == 200 and doc["events_received"] == 1000


def test_json_parsing_is_strict():
    with Sim() as sim:
        ev = event(0)
        good = json.dumps({"data": [ev], "access_token": sim.token})
        assert sim.send(None, raw_body=good, headers={"Content-Type": "application/json"})[0] == 200
        t = str(ev["event_time"])  # from the same event: the clock may tick in between
        broken = [
            good + " x",                                           # text after the value
            good[:-1],                                             # unterminated object
            good.replace('"PageView"', '"Page\x01View"'),          # raw control character
            good.replace('"PageView"', '"Page\x00View"'),          # raw NUL byte
            good.replace('"PageView"', r'"Page\xView"'),           # invalid escape
            good.replace('"PageView"', r'"\u12G4"'),               # bad hex in \u
            good.replace('"PageView"', r'"\udc00"'),               # lone low surrogate
            good.replace('"PageView"', r'"\ud800x"'),              # unpaired high surrogate
            good.replace(t, "0" + t),                              # leading zero
            good.replace(t, "-"),                                  # sign without digits
            good.replace(t, "." + t),
            good.replace(t, t + "."),
            good.replace(t, t + "e"),
            good.replace(t, "tru"),
            good.replace("]", ",]"),                               # trailing comma
            good.replace('"data"', "'data'"),                      # single quotes
            good.replace('"data"', "data"),                        # bare key
            good.replace('"data": ', '"data" '),                   # missing colon
            good[:-1] + ', "x": ' + "[" * 100 + "]" * 100 + "}",   # nesting too deep
            "",
            "[]",                                                  # not an object
        ]
        for i, body in enumerate(broken):
            assert body != good, i
            st, _, doc = sim.send(None, raw_body=body, headers={"Content-Type": "application/json"})
            err = doc.get("error", {}) if isinstance(doc, dict) else {}
            assert (st, err.get("code"), err.get("error_subcode")) == (400, 100, 2804019), \
                (i, body[:120], st, doc)
        assert sim.stats()["events"] == 1


def test_json_escapes_whitespace_and_exponents_are_understood():
    with Sim() as sim:
        ev = event(0)
        text = json.dumps(ev, indent=2)
        # escaped keys and values mean the same as plain ones
        esc_em = EM[:63] + "\\u%04x" % ord(EM[63])
        text = text.replace('"event_name"', r'"event\u005fname"').replace(
            '"PageView"', r'"Page\u0056iew"').replace(EM, esc_em)
        text = text.replace('"ev-0"', r'"ev-\u00e9\ud83d\ude00"')
        text = text.replace(str(ev["event_time"]), f"{ev['event_time'] / 1e9}e9")
        body = '\n{ "data" :\t[ ' + text + ' ] , "access_token" : "test-token" }\r\n'
        st, _, doc = sim.send(None, raw_body=body, headers={"Content-Type": "application/json"})
        assert st == 200, doc
        got = sim.events()[0]
        assert got["event_name"] == "PageView" and got["event_id"] == "ev-\u00e9\U0001F600", got
        assert got["payload"]["event_time"] == ev["event_time"], "stored as sent"
        # the same event id, unescaped this time, is a duplicate
        assert sim.send([event(0, event_id="ev-\u00e9\U0001F600")])[0] == 200
        assert sim.stats()["duplicates"] == 1


def test_mutated_bodies_get_an_answer():
    """Seeded mutations of valid bodies (bytes dropped, changed, duplicated):
    every request gets a Graph answer and the simulator keeps running (the
    sanitizer build turns any memory error into a failure at exit)."""
    import random
    rnd = random.Random(3)
    with Sim() as sim:
        good = json.dumps({"data": [event(0), purchase(), with_ud(fbc="fb.1.2.AbC.AQ")],
                           "access_token": sim.token}).encode()
        form = ("data=" + urllib.parse.quote(json.dumps([event(1)])) +
                "&access_token=" + sim.token).encode()
        for i in range(300):
            b = bytearray(good if i % 3 else form)
            for _ in range(rnd.randint(1, 4)):
                k = rnd.randrange(len(b))
                op = rnd.randrange(3)
                if op == 0:
                    del b[k]
                elif op == 1:
                    b[k] = rnd.randrange(256)
                else:
                    b[k:k] = b[k:k + rnd.randint(1, 20)]
            ct = "application/json" if i % 3 else "application/x-www-form-urlencoded"
            st, _, doc = sim.send(None, raw_body=bytes(b), headers={"Content-Type": ct})
            assert st in (200, 400, 401), (i, st, doc)
            assert isinstance(doc, dict) and ("events_received" in doc or "error" in doc), doc


def load_vectors():
    with open(os.path.join(SHARED, "vectors", "mapping.json")) as f:
        return [c for c in json.load(f) if "skipped" not in c["expect"]]


def test_mapping_vectors_are_accepted_at_their_clock():
    cases = load_vectors()
    assert len(cases) >= 10
    with Sim() as sim:
        for i, case in enumerate(cases):
            sim.clock(now=case["now"])
            st, _, body = sim.send([case["expect"]])
            assert st == 200 and body["events_received"] == 1, (case["name"], st, body)
        stored = sim.payloads()
        assert stored == [c["expect"] for c in cases], "payloads must be stored as sent"
        # Without the clock the same events are too old: Meta would reject them.
        sim.clock(offset=0)
        st, _, body = sim.send([cases[1]["expect"]])
        assert st == 400 and error_of(body)["error_subcode"] == 2804003


def test_clock_offset_flag():
    case = load_vectors()[0]
    with Sim(clock_now=case["now"]) as sim:
        assert abs(sim.control("clock", method="GET")["now"] - case["now"]) <= 2
        st, _, body = sim.send([case["expect"]])
        assert st == 200, body
        sim.reset()  # reset goes back to the command line's clock
        st, _, body = sim.send([case["expect"]])
        assert st == 200, body


def test_form_and_multipart_bodies():
    with Sim() as sim:
        extra = {"test_event_code": "TEST123", "partner_agent": "capid-test"}
        for i, enc in enumerate(["json", "form", "multipart", "form-strings"]):
            evs = [event(10 * i), event(10 * i + 1, action_source="email")]
            st, _, body = sim.send(evs, encoding=enc, extra=extra)
            assert st == 200 and body["events_received"] == 2, (enc, st, body)
            got = sim.events(event_id=f"ev-{10 * i}")
            assert len(got) == 1 and got[0]["payload"] == evs[0], (enc, got)
            assert got[0]["test_event_code"] == "TEST123", got[0]
            assert got[0]["partner_agent"] == "capid-test", got[0]
        # A bad event is found whatever the encoding.
        for enc in ["form", "multipart", "form-strings"]:
            st, _, body = sim.send([event(0), with_ud(em=["nope"])], encoding=enc)
            assert st == 400 and "(event index 1)" in error_of(body)["error_user_msg"], body
        # data given as a JSON string inside a JSON body
        st, _, body = sim.send(None, raw_body=json.dumps({"data": json.dumps([event(99)]),
                                                          "access_token": sim.token}),
                               headers={"Content-Type": "application/json"})
        assert st == 200 and body["events_received"] == 1, body


def test_token_and_pixel_checks():
    with Sim(tokens=["good-token"], pixels=["1234", "5678"]) as sim:
        st, _, body = sim.send([event()], token=None)
        assert st == 401 and error_of(body)["code"] == 190, body
        st, _, body = sim.send([event()], token="wrong")
        assert st == 400 and error_of(body)["code"] == 190, body
        st, _, body = sim.send([event()], pixel="999")
        err = error_of(body)
        assert (st, err["code"], err["error_subcode"]) == (400, 100, 33), body
        assert sim.send([event()], pixel="5678")[0] == 200
        # the token may also come in the query string (capid never does that)
        st, _, body = sim.send_raw("POST", "/v21.0/1234/events?access_token=good-token",
                                   json.dumps({"data": [event(2)]}),
                                   {"Content-Type": "application/json"})
        assert st == 200, body
        sim.stop()
        log = sim.log()
        assert "good-token" not in log and "wrong" not in log, "the log must never hold tokens"
        assert log.count(" request ") >= 5, log


def test_token_from_environment_and_any_when_unlisted():
    with Sim(tokens=[], args=["--token-env", "SIM_TEST_TOKEN"],
             env={"SIM_TEST_TOKEN": "env-secret"}) as sim:
        assert sim.send([event()], token="env-secret")[0] == 200
        assert sim.send([event()], token="other")[0] == 400
    with Sim(tokens=[], pixels=[]) as sim:
        assert sim.send([event()], token="anything", pixel="42")[0] == 200
        assert sim.send([event()], token="else", pixel="777")[0] == 200


def test_script_sequence_500_500_200():
    with Sim() as sim:
        sim.script([500, 500, 200], pixel=DEFAULT_PIXEL)
        got = [sim.send([event(i)])[0] for i in range(4)]
        assert got == [500, 500, 200, 200], got
        assert sim.stats()["events"] == 2
        # scripts are per pixel: another pixel was never affected
        sim.script([503], pixel=OTHER_PIXEL)
        assert sim.send([event(9)])[0] == 200


# (spec, HTTP status, Graph code, subcode, is_transient, headers expected)
ERROR_KINDS = [
    (500, 500, 1, None, True, {}),
    (503, 503, 2, None, True, {}),
    (502, 502, 2, None, True, {}),
    (429, 429, 17, None, True, {}),
    (400, 400, 100, None, False, {}),
    ({"code": 1}, 500, 1, None, True, {}),
    ({"code": 2}, 503, 2, None, True, {}),
    ({"code": 4, "retry_after": 30}, 400, 4, None, True, {"Retry-After": "30"}),
    ({"code": 17}, 400, 17, None, True, {}),
    ({"code": 17, "status": 429, "retry_after": 1, "app_usage": True}, 429, 17, None, True,
     {"Retry-After": "1", "X-App-Usage": None}),
    ({"code": 32, "buc_usage": True, "retry_after": 120}, 400, 32, None, True,
     {"X-Business-Use-Case-Usage": None}),
    ({"code": 613}, 400, 613, None, True, {}),
    ({"code": 80004, "buc_usage": {"1": [{"type": "ads_management", "call_count": 95}]}}, 400,
     80004, None, True, {"X-Business-Use-Case-Usage": '{"1":[{"type":"ads_management",'
                                                      '"call_count":95}]}'}),
    ({"code": 190, "subcode": 463}, 400, 190, 463, False, {}),
    ({"code": 10}, 403, 10, None, False, {}),
    ({"code": 200}, 403, 200, None, False, {}),
    ({"code": 368}, 400, 368, None, False, {}),
    ({"code": 100, "subcode": 2804003, "title": "Event Timestamp Too Old"}, 400, 100, 2804003,
     False, {}),
    ({"code": 100, "subcode": 33}, 400, 100, 33, False, {}),
    ({"code": 1, "is_transient": False}, 500, 1, None, False, {}),
    ({"code": 100, "is_transient": True}, 400, 100, None, True, {}),
    ({"code": 2, "headers": {"X-Extra": "yes"}}, 503, 2, None, True, {"X-Extra": "yes"}),
]


def test_each_error_kind_as_scripted():
    with Sim() as sim:
        sim.script([k[0] for k in ERROR_KINDS])
        bad = []
        for spec, status, code, subcode, transient, headers in ERROR_KINDS:
            st, h, body = sim.send([event()])
            err = body.get("error", {}) if isinstance(body, dict) else {}
            got = (st, err.get("code"), err.get("error_subcode"), err.get("is_transient"))
            if got != (status, code, subcode, transient) or not err.get("fbtrace_id") or \
                    not err.get("message") or not err.get("type"):
                bad.append(f"{spec}: {got} {body}")
            for k, v in headers.items():
                if k not in h or (v is not None and h[k] != v):
                    bad.append(f"{spec}: header {k}={h.get(k)!r}, want {v!r}")
            if headers.get("X-Business-Use-Case-Usage", "") is None:
                # the default header says when access returns, in minutes
                buc = json.loads(h["X-Business-Use-Case-Usage"])
                entry = buc[DEFAULT_PIXEL][0]
                if entry["estimated_time_to_regain_access"] != 2:
                    bad.append(f"{spec}: {buc}")
        assert not bad, "\n".join(bad)
        stats = sim.stats()
        assert stats["events"] == 0, "error responses never record events"
        assert stats["rejections"]["17"] == 3 and stats["rejections"]["190"] == 1, stats


def test_wrong_count_html_and_latency():
    with Sim() as sim:
        sim.script(["wrong_count", {"kind": "wrong_count", "events_received": 7}, "html",
                    {"kind": "html", "status": 503}, {"kind": "ok", "latency_ms": 300}])
        st, _, body = sim.send([event(0), event(1)])
        assert st == 200 and body["events_received"] == 1, body
        st, _, body = sim.send([event(2)])
        assert st == 200 and body["events_received"] == 7, body
        st, h, body = sim.send([event(3)])
        assert st == 502 and h["Content-Type"].startswith("text/html") and "<html>" in body
        st, h, body = sim.send([event(4)])
        assert st == 503 and "<html>" in body
        t0 = time.monotonic()
        st, _, body = sim.send([event(5)])
        assert st == 200 and time.monotonic() - t0 >= 0.29, "latency_ms delays the answer"
        # wrong counts still recorded what they received; html did not
        assert [e["event_id"] for e in sim.events()] == ["ev-0", "ev-1", "ev-2", "ev-5"]
        faults = sim.stats()["faults"]
        assert faults["wrong_count"] == 2 and faults["html"] == 2, faults


def test_latency_fixed_and_distributions():
    with Sim() as sim:
        sim.latency(ms=200)
        t0 = time.monotonic()
        assert sim.send([event(0)])[0] == 200
        assert time.monotonic() - t0 >= 0.19
        sim.latency(min_ms=50, max_ms=120, seed=3)
        for i in range(3):
            t0 = time.monotonic()
            assert sim.send([event(i)])[0] == 200
            assert time.monotonic() - t0 >= 0.045
        delays = [r["delay_ms"] for r in sim.stats()["request_log"]][1:]
        assert all(50 <= d <= 120 for d in delays), delays
        sim.latency(mean_ms=20, max_ms=60, seed=5)
        for i in range(5):
            assert sim.send([event(i)])[0] == 200
        delays = [r["delay_ms"] for r in sim.stats()["request_log"]][4:]
        assert all(0 <= d <= 60 for d in delays) and len(set(delays)) > 1, delays
        sim.latency(ms=0)
        assert "latency" not in sim.config()["pixels"].get("*", {})


def test_hang_never_answers_until_reset():
    with Sim() as sim:
        sim.script(["hang"])
        t0 = time.monotonic()
        try:
            sim.send([event()], timeout=0.5)
            raise AssertionError("a hung request must not be answered")
        except (TimeoutError, socket.timeout, urllib.error.URLError):
            pass
        assert time.monotonic() - t0 >= 0.45
        stats = sim.wait_stats(lambda s: s["hung"] == 1)
        assert stats["events"] == 0 and stats["faults"]["hang"] == 1
        # other requests are served meanwhile; reset closes the hung one
        assert sim.send([event(1)])[0] == 200
        assert sim.reset()["released"] == 1
        sim.wait_stats(lambda s: s["hung"] == 0 and s["in_flight"] == 0)


def test_hang_can_be_released_and_accept_its_events():
    with Sim() as sim:
        sim.script([{"kind": "hang", "accept": True}])
        result = {}

        def call():
            try:
                result["r"] = sim.send_raw("POST", "/v21.0/1234/events",
                                           json.dumps({"data": [event()],
                                                       "access_token": sim.token}))
            except Exception as e:  # noqa: BLE001 - the connection is closed
                result["e"] = e
        th = threading.Thread(target=call)
        th.start()
        sim.wait_stats(lambda s: s["hung"] == 1)
        assert sim.stats()["events"] == 1, "accept: true records before hanging"
        assert sim.release()["released"] == 1
        th.join(5)
        assert not th.is_alive() and "e" in result, result


def test_reset_mid_response_is_a_connection_error():
    with Sim() as sim:
        sim.script(["reset", {"kind": "reset", "accept": False}])
        for _ in range(2):
            try:
                st, _, body = sim.send_raw("POST", "/v21.0/1234/events",
                                           json.dumps({"data": [event()],
                                                       "access_token": sim.token}))
                raise AssertionError(f"reset must not give a full answer: {st} {body}")
            except (ConnectionError, http.client.IncompleteRead, http.client.HTTPException):
                pass
        stats = sim.stats()
        assert stats["faults"]["reset"] == 2
        assert stats["events"] == 1, "a reset answer had processed the batch, unless accept:false"
        assert sim.send([event(5)])[0] == 200


def test_rate_limit_answers_429_code_17():
    with Sim() as sim:
        sim.rate_limit(2, pixel=DEFAULT_PIXEL)
        got = [sim.send([event(i)]) for i in range(6)]
        codes = [g[0] for g in got]
        assert codes[:2] == [200, 200] and codes.count(429) >= 3, codes
        st, h, body = next(g for g in got if g[0] == 429)
        assert error_of(body)["code"] == 17 and error_of(body)["is_transient"] is True
        assert int(h["Retry-After"]) >= 1
        assert sim.send([event()], pixel=OTHER_PIXEL)[0] == 200, "the limit is per pixel"
        sim.rate_limit(0, pixel=DEFAULT_PIXEL)
        assert all(sim.send([event(i)])[0] == 200 for i in range(5))


def test_failure_rate_is_seeded_and_mixed():
    def run(sim):
        return [sim.send([event(i)])[0] for i in range(40)]
    with Sim() as sim:
        kinds = [500, {"code": 17, "status": 429, "retry_after": 1}, "html",
                 {"code": 2, "weight": 2}]
        sim.failure(0.5, kinds, seed=7)
        first = run(sim)
        sim.failure(0.5, kinds, seed=7)
        assert run(sim) == first, "the same seed gives the same sequence"
        fails = [c for c in first if c != 200]
        assert 8 <= len(fails) <= 32, first
        assert {500, 429, 502, 503} <= set(fails), first
        sim.failure(1.0, [503])
        assert [sim.send([event()])[0] for _ in range(3)] == [503] * 3
        sim.failure(0)
        assert sim.send([event()])[0] == 200


def test_poison_rule_names_the_event():
    with Sim() as sim:
        rid = sim.poison("custom_data.order_id", "BAD-1", subcode=2804050)
        assert rid > 0
        batch = [event(i) for i in range(5)]
        batch[3] = purchase(order_id="BAD-1")
        st, _, body = sim.send(batch)
        err = error_of(body)
        assert (st, err["code"], err["error_subcode"]) == (400, 100, 2804050), body
        assert "(event index 3)" in err["error_user_msg"], body
        assert sim.stats()["events"] == 0
        assert sim.send([event(0), purchase(order_id="GOOD")])[0] == 200
        # array paths and numbers compare as JSON values
        sim.clear_poison()
        sim.poison("user_data.em.0", EM, pixel=OTHER_PIXEL)
        st, _, body = sim.send([event(7, action_source="email", user_data={"ph": [EM]}),
                                event(8)], pixel=OTHER_PIXEL)
        assert st == 400 and "(event index 1)" in error_of(body)["error_user_msg"], body
        assert sim.send([event(9)])[0] == 200, "the rule is for the other pixel only"


def test_poison_rule_with_a_script_per_event():
    with Sim() as sim:
        sim.poison("event_id", "ev-flaky", responses=[500, {"code": 100, "subcode": 2804019},
                                                       200])
        sends = [sim.send([event(0), event(1, event_id="ev-flaky")]) for _ in range(4)]
        assert [s[0] for s in sends] == [500, 400, 200, 200], [s[0] for s in sends]
        assert "(event index 1)" in error_of(sends[1][2])["error_user_msg"]
        rules = sim.config()["pixels"]["*"]["poison"]
        assert rules[0]["left"] == 0 and rules[0]["fired"] == 3, rules


def test_control_api_round_trip_and_errors():
    with Sim() as sim:
        sim.script([500, {"code": 17}], pixel="1234")
        sim.failure(0.25, [503], seed=9, pixel="*")
        sim.latency(pixel="1234", ms=5)
        sim.rate_limit(100, pixel="1234")
        sim.poison("event_name", "Bad")
        cfg = sim.config()
        p = cfg["pixels"]["1234"]
        assert p["script"] == {"left": 2, "used": 0, "responses": [500, {"code": 17}]}, p
        assert p["latency"]["ms"] == 5 and p["rate_limit"]["rps"] == 100, p
        star = cfg["pixels"]["*"]
        assert star["failure"]["rate"] == 0.25 and star["poison"][0]["rule"]["value"] == "Bad"
        sim.script([200], pixel="1234", append=True)
        assert sim.config()["pixels"]["1234"]["script"]["left"] == 3
        assert sim.clock(offset=-100)["offset"] == -100
        for name, body in [("script", {"responses": [99]}), ("script", {"responses": "x"}),
                           ("script", {"responses": [{"kind": "nope"}]}),
                           ("script", {"responses": [{"code": 1, "bogus": 2}]}),
                           ("failure", {"rate": 2}), ("latency", {}),
                           ("latency", {"min_ms": 10}), ("rate-limit", {"rps": -1}),
                           ("poison", {"path": "x"}), ("clock", {"offset": "x"}),
                           ("script", {"pixel": 1234, "responses": []}), ("nope", {})]:
            try:
                sim.control(name, body)
                raise AssertionError(f"{name} {body} must be refused")
            except AssertionError as e:
                assert "must be refused" not in str(e), e
                assert "-> 400" in str(e) or "-> 404" in str(e), e
        sim.send([event()])
        out = sim.reset()
        assert out["ok"] is True
        cfg = sim.config()
        assert cfg["pixels"] == {} and cfg["clock"]["offset"] == 0, cfg
        stats = sim.stats()
        assert stats["requests"] == 0 and stats["events"] == 0 and sim.events() == []


def test_control_flags_apply_at_start_and_after_reset():
    args = ["--control", 'script={"pixel":"1234","responses":[503]}',
            "--control", 'clock={"offset":3600}']
    with Sim(args=args) as sim:
        assert sim.send([event()])[0] == 503
        assert sim.send([event()])[0] == 200
        assert sim.control("clock", method="GET")["offset"] == 3600
        sim.reset()
        assert sim.send([event()])[0] == 503
    bad = Sim(args=["--control", "script={"], start=False)
    p = Proc(bad.argv, log=os.path.join(bad.dir, "sim.log"))
    assert p.p.wait(10) == 2 and "invalid --control" in p.log()
    p.stop()
    shutil.rmtree(bad.dir)


def test_duplicates_counted_by_pixel_name_and_id():
    with Sim() as sim:
        assert sim.send([event(1), event(2), event(1)])[0] == 200
        assert sim.send([event(1), event(2, event_name="Lead")])[0] == 200
        assert sim.send([event(1)], pixel=OTHER_PIXEL)[0] == 200
        assert sim.send([event(3, event_id=None), event(3, event_id=None)])[0] == 200
        stats = sim.stats()
        assert stats["events"] == 8 and stats["duplicates"] == 2, stats
        assert stats["pixels"]["1234"]["duplicates"] == 2
        dups = [(e["event_id"], e["duplicate"]) for e in sim.events(pixel="1234")]
        assert dups[:5] == [("ev-1", False), ("ev-2", False), ("ev-1", True), ("ev-1", True),
                            ("ev-2", False)], dups
        assert [e["request"] for e in sim.events(event_id="ev-1")] == [1, 1, 2, 3]
        assert len(sim.events(limit=2)) == 2 and len(sim.events(since=6)) == 2


def test_max_concurrency_stat():
    with Sim() as sim:
        sim.latency(ms=700)
        threads = [threading.Thread(target=sim.send, args=([event(i)],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        stats = sim.stats()
        assert stats["max_concurrent"] == 4 and stats["in_flight"] == 0, stats
        assert stats["events"] == 4


def test_request_log_has_times_and_outcomes():
    with Sim() as sim:
        sim.script([{"code": 17, "status": 429, "retry_after": 1}])
        t0 = time.time() * 1000
        sim.send([event(0)])
        sim.send([event(1), event(2)])
        log = sim.stats()["request_log"]
        assert [(r["request"], r["status"], r["code"], r["events"]) for r in log] == \
            [(1, 429, 17, 0), (2, 200, 0, 2)], log
        assert t0 - 1000 <= log[0]["t_ms"] <= log[1]["t_ms"] <= time.time() * 1000 + 1000
        assert all(r["pixel"] == "1234" for r in log)


def test_store_caps_and_body_limit():
    with Sim(args=["--store-max", "2", "--max-body", "4096"]) as sim:
        assert sim.send([event(i) for i in range(3)])[0] == 200
        stats = sim.stats()
        assert stats["events"] == 3 and stats["stored"] == 2 and stats["not_stored"] == 1
        st, _, body = sim.send([event(i) for i in range(20)])
        assert st == 413, (st, body)
    with Sim(args=["--no-store"]) as sim:
        assert sim.send([event(1), event(1)])[0] == 200
        stats = sim.stats()
        assert stats["events"] == 2 and stats["duplicates"] == 1 and stats["stored"] == 0


def test_unknown_paths_and_methods():
    with Sim() as sim:
        st, _, body = sim.send_raw("POST", "/v21.0/1234/nope", b"{}")
        assert st == 400 and json.loads(body)["error"]["code"] == 2500
        st, _, body = sim.send_raw("GET", "/v21.0/1234/events")
        assert st == 400 and json.loads(body)["error"]["code"] == 100
        st, _, body = sim.send_raw("GET", "/_sim/nope")
        assert st == 404


def test_sigterm_and_sigint_exit_zero_even_with_hung_requests():
    for sig in (signal.SIGTERM, signal.SIGINT):
        sim = Sim()
        sim.script(["hang"], pixel=DEFAULT_PIXEL)
        sim.latency(ms=60000, pixel=OTHER_PIXEL)
        ths = [threading.Thread(target=lambda: _swallow(sim.send, [event()], timeout=30)),
               threading.Thread(target=lambda: _swallow(sim.send, [event()], pixel=OTHER_PIXEL,
                                                        timeout=30))]
        for t in ths:
            t.start()
        sim.wait_stats(lambda s: s["hung"] == 1 and s["in_flight"] == 2)
        t0 = time.monotonic()
        assert sim.stop(sig) == 0, sim.log()
        assert time.monotonic() - t0 < 5
        for t in ths:
            t.join(10)
        assert not os.path.exists(sim.port_file)
        assert "stopping on" in sim.log()
        shutil.rmtree(sim.dir)


def _swallow(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except Exception:  # noqa: BLE001 - the server went away on purpose
        return None


def test_port_file_and_listen_flag():
    with Sim() as sim:
        assert sim.port > 0
        wait_for(lambda: sim.control("health", method="GET")["ok"], 5, "health")
    bad = Sim(args=["--listen", "256.1.1.1:0"], start=False)
    p = Proc(bad.argv, log=os.path.join(bad.dir, "sim.log"))
    assert p.p.wait(10) == 2 and "cannot parse listen address" in p.log(), p.log()
    p.stop()
    shutil.rmtree(bad.dir)
