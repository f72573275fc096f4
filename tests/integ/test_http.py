"""HTTP ingestion end to end (issue 5, "What it must show"): a real `capid
serve` with a `sources:` section on 127.0.0.1:0 (the port comes from its
ready file), a real SQLite queue in a temp dir and the Graph API simulator as
the Graph API. Every wait polls against a deadline.

Covered: single / {"batch":[...]} / JSON array / NDJSON reach the simulator
exactly as `capid map` maps them; skipped events come back in the 202 body
with their reasons; the bad-input suite (each: status, a body naming the
problem, nothing stored, the next valid request still works); slow clients;
SIGTERM under load loses no acknowledged event; canary secrets appear in no
log, queue file, WAL, metrics or 202 body; limits, reload and metrics."""
import functools
import http.client as httpclient
import json
import os
import random
import select
import signal
import socket
import subprocess
import threading
import time

import lib
from simlib import DEFAULT_PIXEL, OTHER_PIXEL, Sim

GEN = os.path.join(lib.BUILD, "gen-corpus")
KEY = "capid-test-ingest-key-6f1c2a9e"
CT_JSON = "application/json"
CT_NDJSON = "application/x-ndjson"


_live = []  # capid processes of the running test


def cleanup(fn):
    """Kills what the test started and left running (a failed assertion
    skips its stop), so no server outlives its test."""
    @functools.wraps(fn)
    def run():
        try:
            return fn()
        finally:
            while _live:
                _live.pop().kill9()
    return run


def corpus(n, now):
    """n deterministic Commanders Act events (tools/gen-corpus) around now, as
    a list of JSON lines (str)."""
    p = subprocess.run([GEN, str(n), "--now", str(now)], stdout=subprocess.PIPE, check=True)
    return [x for x in p.stdout.decode().splitlines() if x.strip()]


def canon(ev):
    return json.dumps(ev, sort_keys=True, separators=(",", ":"))


def seed_event(now, **over):
    """The seed documentation's example (examples/seed-event.ndjson) made
    current: a purchase that maps for a destination without consent rules."""
    with open(os.path.join(lib.ROOT, "examples", "seed-event.ndjson")) as f:
        ev = json.loads(f.readline())
    ev["context"]["event_timestamp"] = now * 1000
    ev["context"]["event_id"] = over.pop("event_id", "seed-%d" % random.getrandbits(48))
    ev.update(over)
    return ev


class Gateway:
    """A capid configuration with one source feeding the destinations, its
    queue and its `capid serve` process, in a fresh temp dir."""

    def __init__(self, sim, token="test-token", dests=None, server=None, delivery=None,
                 key=KEY, source_dests=None):
        self.sim = sim
        self.dir = lib.tmpdir("capid-http-")
        self.token_file = self._secret("token", token)
        self.key_file = self._secret("ingest.key", key)
        self.db = os.path.join(self.dir, "queue.db")
        self.ready = os.path.join(self.dir, "capid.port")
        dests = dests or [{"name": "shop", "pixel_id": DEFAULT_PIXEL}]
        for d in dests:
            d.setdefault("access_token_file", self.token_file)
            d.setdefault("graph_url", sim.base)
        srv = {"listen": "127.0.0.1:0", "ready_file": self.ready}
        srv.update(server or {})
        dlv = {"linger_ms": 20, "backoff_initial_ms": 50, "backoff_max_ms": 400}
        dlv.update(delivery or {})
        self.cfg = {"destinations": dests,
                    "sources": [{"name": "web", "key_file": self.key_file,
                                 "destinations": source_dests or [d["name"] for d in dests]}],
                    "queue": {"path": self.db}, "delivery": dlv, "server": srv}
        self.config = os.path.join(self.dir, "capid.yaml")
        self.write_config()
        self.proc = None
        self.port = None
        self.runs = 0

    def _secret(self, name, value):
        path = os.path.join(self.dir, name)
        with open(path + ".tmp", "w") as f:
            f.write(value + "\n")
        os.chmod(path + ".tmp", 0o600)
        os.rename(path + ".tmp", path)
        return path

    def write_config(self):
        with open(self.config, "w") as f:
            json.dump(self.cfg, f, indent=1)  # JSON is YAML

    def serve(self, args=(), env=None):
        self.runs += 1
        self.proc = lib.Proc([lib.CAPID, "serve", "--config", self.config, *args], env=env,
                             log=os.path.join(self.dir, f"serve-{self.runs}.log"))
        _live.append(self.proc)
        self.port = lib.read_port_file(self.ready, 15, self.proc.p)
        return self

    def stop(self, timeout=30.0):
        return self.proc.stop(signal.SIGTERM, timeout)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def post(self, path, body, ctype=CT_JSON, key=KEY, headers=None, timeout=10.0):
        """POSTs body (bytes, str, or a JSON value); returns (status, headers,
        parsed JSON or raw bytes)."""
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        h = {}
        if ctype is not None:
            h["Content-Type"] = ctype
        if key is not None:
            h["Authorization"] = "Bearer " + key
        h.update(headers or {})
        st, hd, raw = lib.http("POST", self.url(path), body, h, timeout)
        try:
            return st, hd, json.loads(raw)
        except ValueError:
            return st, hd, raw

    def get(self, path):
        st, _, raw = lib.http("GET", self.url(path))
        return st, raw.decode()

    def status(self, dest="shop"):
        p = subprocess.run([lib.CAPID, "status", "--config", self.config, "--json"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return {d["name"]: d for d in json.loads(p.stdout)["destinations"]}[dest]

    def stored(self, dest="shop"):
        s = self.status(dest)
        return s["queued"] + s["leased"] + s["delivered"] + s["dead"]

    def map(self, lines, now, dest=None):
        path = os.path.join(self.dir, "map-in.ndjson")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        args = ["map", "--config", self.config, "--now", str(now), path]
        if dest:
            args += ["--destination", dest]
        p = subprocess.run([lib.CAPID, *args], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return [json.loads(x) for x in p.stdout.splitlines() if x.strip()]

    def log(self):
        return self.proc.log()


def raw_request(port, data, read_timeout=5.0):
    """Sends raw bytes on a fresh connection, returns (status, body bytes, how
    long the answer took in s); status None when the connection closed with no
    answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=read_timeout)
    t0 = time.monotonic()
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            resp += chunk
            if b"\r\n\r\n" in resp:
                head, _, body = resp.partition(b"\r\n\r\n")
                cl = [int(x.split(b":")[1]) for x in head.split(b"\r\n")
                      if x.lower().startswith(b"content-length:")]
                if cl and len(body) >= cl[0]:
                    break
        dt = time.monotonic() - t0
    finally:
        s.close()
    if not resp.startswith(b"HTTP/1.1 "):
        return None, resp, dt
    head, _, body = resp.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body, dt


def head_bytes(path, length=None, ctype=CT_JSON, key=KEY, extra=b""):
    h = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
    if key:
        h += f"Authorization: Bearer {key}\r\n"
    if length is None:
        h += "Transfer-Encoding: chunked\r\n"
    else:
        h += f"Content-Length: {length}\r\n"
    return h.encode() + extra + b"\r\n"


# ---- end to end ----

@cleanup
def test_single_batch_array_ndjson_reach_the_simulator_as_capid_map_maps_them():
    now = int(time.time())
    with Sim() as sim:
        gw = Gateway(sim, dests=[{"name": "shop", "pixel_id": DEFAULT_PIXEL,
                                  "test_event_code": "TEST77"}]).serve()
        lines = corpus(310, now)
        expected = gw.map(lines, now)
        assert len(expected) == 310
        got_queued = 0
        for ln in lines[:10]:  # one by one
            st, _, doc = gw.post("/events", ln)
            assert st == 202 and doc == {"received": 1, "queued": 1, "skipped": []}, (st, doc)
            got_queued += 1
        parts = [lines[10:110], lines[110:210], lines[210:310]]
        bodies = [("{\"batch\":[" + ",".join(parts[0]) + "]}", CT_JSON),
                  ("[" + ",\n".join(parts[1]) + "]", CT_JSON),
                  ("\r\n".join(parts[2]) + "\n", CT_NDJSON)]
        for body, ct in bodies:
            st, _, doc = gw.post("/events/batch", body, ct)
            assert st == 202 and doc == {"received": 100, "queued": 100, "skipped": []}, doc
        sim.wait_stats(lambda s: s["unique_events"] >= 310, 30, "310 events at the simulator")
        got = sim.events(pixel=DEFAULT_PIXEL)
        assert len(got) == 310 and sim.stats()["duplicates"] == 0
        assert sorted(canon(e["payload"]) for e in got) == sorted(canon(e) for e in expected)
        assert all(e["test_event_code"] == "TEST77" for e in got)
        # the same events again: refused as duplicates, with their index
        st, _, doc = gw.post("/events/batch", bodies[1][0])
        assert st == 202 and doc["queued"] == 0 and len(doc["skipped"]) == 100, doc
        assert [s["index"] for s in doc["skipped"]] == list(range(100))
        assert {s["reason"] for s in doc["skipped"]} == {"duplicate"}
        st, _, doc = gw.post("/events/batch", bodies[2][0], CT_NDJSON)
        assert doc["skipped"][0]["line"] == 1 and doc["skipped"][99]["line"] == 100, doc
        assert gw.stop() == 0


@cleanup
def test_skipped_events_come_back_with_index_destination_and_reason():
    now = int(time.time())
    with Sim() as sim:
        gw = Gateway(sim, dests=[{"name": "shop", "pixel_id": DEFAULT_PIXEL},
                                 {"name": "eu", "pixel_id": OTHER_PIXEL,
                                  "consent_category": "9"}]).serve()
        ok = seed_event(now)
        consented = seed_event(now)
        consented["user"]["consent_categories"] = ["1", "9"]
        no_keys = {"event_name": "page_view", "context": {"event_timestamp": now * 1000}}
        old = seed_event(now - 30 * 86400)
        big = seed_event(now, padding="x" * 40000)
        batch = [ok, {"value": 3}, no_keys, consented, old, big, [1, 2],
                 {"event_name": "a", "event_name2": 1, "user": {"id": "u", "id2": 2}}]
        body = json.dumps({"batch": batch}).replace('"event_name2"', '"event_name"')
        st, _, doc = gw.post("/events/batch", body)
        assert st == 202, doc
        assert doc["received"] == 8 and doc["queued"] == 3, doc  # ok->shop, consented->both
        got = {(s["index"], s["destination"]): s for s in doc["skipped"]}
        want = {(0, "eu"): "no_consent", (1, "shop"): "invalid_event",
                (1, "eu"): "invalid_event", (2, "shop"): "insufficient_match_keys",
                (2, "eu"): "no_consent", (4, "shop"): "event_too_old", (4, "eu"): "no_consent",
                (5, "shop"): "too_large", (5, "eu"): "too_large", (6, "shop"): "invalid_event",
                (6, "eu"): "invalid_event", (7, "shop"): "invalid_event",
                (7, "eu"): "invalid_event"}
        assert {k: v["reason"] for k, v in got.items()} == want, doc
        assert all(s["detail"] for s in doc["skipped"])
        assert "event_name" in got[(1, "shop")]["detail"]
        assert "duplicate key" in got[(7, "shop")]["detail"]
        assert [(s["index"], s["destination"]) for s in doc["skipped"]] == sorted(
            got, key=lambda k: (k[0], k[1] != "shop"))  # by index, then destination order
        sim.wait_stats(lambda s: s["unique_events"] == 3, 20, "3 events delivered")
        assert sorted(e["pixel"] for e in sim.events()) == sorted(
            [DEFAULT_PIXEL, DEFAULT_PIXEL, OTHER_PIXEL])
        # the same reasons are counted per destination in the metrics
        _, m = gw.get("/metrics")
        assert 'capid_events_skipped_total{destination="eu",reason="no_consent"} 3' in m, m
        assert 'capid_events_enqueued_total{destination="shop"} 2' in m
        assert 'capid_events_received_total{source="web"} 8' in m
        assert gw.stop() == 0


# ---- bad input ----

@cleanup
def test_bad_input_suite_right_status_named_problem_nothing_stored_next_request_works():
    now = int(time.time())
    with Sim() as sim:
        gw = Gateway(sim).serve()
        deep = b"[" * 10000 + b"]" * 10000
        big_event = json.dumps(seed_event(now, padding="y" * 100 * 1024)).encode()
        over_limit = "[" + ",".join(['{"event_name":"x"}'] * 1001) + "]"
        cases = [
            # (name, path, body, content type, key, status, error, words in detail)
            ("malformed", "/events", b'{"event_name":"a",}', CT_JSON, KEY, 400, "invalid_json",
             "byte"),
            ("truncated", "/events", b'{"event_name":"purch', CT_JSON, KEY, 400, "invalid_json",
             "byte"),
            ("truncated batch", "/events/batch", b'[{"event_name":"a"},{"event_na', CT_JSON,
             KEY, 400, "invalid_json", "truncated"),
            ("empty", "/events", b"", CT_JSON, KEY, 400, "invalid_json", "empty"),
            ("empty batch", "/events/batch", b"  \n", CT_NDJSON, KEY, 400, "invalid_json",
             "empty"),
            ("100 KiB event", "/events", big_event, CT_JSON, KEY, 413, "too_large", "limit"),
            ("deep batch", "/events/batch", deep, CT_JSON, KEY, 400, "invalid_json",
             "nesting deeper than 32"),
            ("deep event", "/events", deep, CT_JSON, KEY, 400, "invalid_json", "nesting"),
            ("invalid utf-8", "/events", b'{"event_name":"a\xff"}', CT_JSON, KEY, 400,
             "invalid_json", "UTF-8"),
            ("overlong utf-8", "/events/batch", b'[{"event_name":"\xc0\xaf"}]', CT_JSON, KEY,
             400, "invalid_json", "UTF-8"),
            ("surrogate", "/events", b'{"event_name":"\xed\xa0\x80"}', CT_JSON, KEY, 400,
             "invalid_json", "UTF-8"),
            ("nul byte", "/events", b'{"event_name":"a\x00b"}', CT_JSON, KEY, 400,
             "invalid_json", "NUL"),
            ("nul escape", "/events/batch", b'{"batch":[{"event_name":"a\\u0000"}]}', CT_JSON,
             KEY, 400, "invalid_json", "NUL"),
            ("duplicate keys", "/events", b'{"event_name":"a","event_name":"purchase"}',
             CT_JSON, KEY, 400, "invalid_event", "duplicate key 'event_name'"),
            ("not an object", "/events", b'[{"event_name":"a"}]', CT_JSON, KEY, 400,
             "invalid_event", "not a JSON object"),
            ("no event_name", "/events", b'{"user":{}}', CT_JSON, KEY, 400, "invalid_event",
             "event_name"),
            ("batch shape", "/events/batch", b'{"events":[]}', CT_JSON, KEY, 400,
             "invalid_json", '"batch"'),
            ("text/plain", "/events", b'{"event_name":"a"}', "text/plain", KEY, 415,
             "unsupported_media_type", "application/json"),
            ("no content type", "/events", b'{"event_name":"a"}', None, KEY, 415,
             "unsupported_media_type", "application/json"),
            ("ndjson on /events", "/events", b'{"event_name":"a"}', CT_NDJSON, KEY, 415,
             "unsupported_media_type", "application/json"),
            ("latin-1", "/events", b'{"event_name":"a"}', CT_JSON + "; charset=iso-8859-1",
             KEY, 415, "unsupported_media_type", "UTF-8"),
            ("more events than the limit", "/events/batch", over_limit.encode(), CT_JSON, KEY,
             413, "too_large", "more than 1000 events"),
        ]
        valid_sent = 0
        for name, path, body, ct, key, status, err, words in cases:
            st, _, doc = gw.post(path, body, ct, key)
            assert st == status, (name, st, doc)
            assert isinstance(doc, dict) and doc.get("error") == err, (name, doc)
            assert words in doc["detail"], (name, doc)
            if status == 400 and err == "invalid_json" and name not in ("empty", "empty batch"):
                assert "position" in doc, (name, doc)
            assert gw.stored() == valid_sent, (name, gw.status())
            st, _, doc = gw.post("/events", seed_event(now))
            assert st == 202 and doc["queued"] == 1, (name, doc)
            valid_sent += 1
        # a position points at the problem
        st, _, doc = gw.post("/events/batch", b'[{"event_name":"a"},\n {"event_name":"b\xff"}]')
        assert st == 400 and doc["index"] == 1 and doc["position"] == 38, doc
        st, _, doc = gw.post("/events/batch", b'{"event_name":"a"}\n\n{"event_name":1,}\n',
                             CT_NDJSON)
        assert st == 400 and doc["line"] == 3 and doc["index"] == 1, doc
        assert gw.stored() == valid_sent
        sim.wait_stats(lambda s: s["unique_events"] == valid_sent, 30, "valid events delivered")
        assert gw.stop() == 0


@cleanup
def test_auth_missing_wrong_empty_long_unicode_keys_get_the_same_401():
    now = int(time.time())
    with Sim() as sim:
        gw = Gateway(sim).serve()
        ev = seed_event(now)
        bodies = set()
        attempts = [{"key": None}, {"key": "wrong"}, {"key": ""}, {"key": KEY + "x"},
                    {"key": KEY[:-1]}, {"key": "k" * 10000}, {"key": "clé-ünïcødé"},
                    {"key": None, "headers": {"Authorization": "Basic " + KEY}},
                    {"key": None, "headers": {"Authorization": KEY}}]
        for a in attempts:
            hdrs = {k: v.encode("utf-8").decode("latin-1") for k, v in
                    a.get("headers", {}).items()}
            key = a["key"]
            if key is not None:
                hdrs["Authorization"] = ("Bearer " + key).encode("utf-8").decode("latin-1")
            st, h, raw = lib.http("POST", gw.url("/events"), json.dumps(ev),
                                  {"Content-Type": CT_JSON, **hdrs})
            assert st == 401, (a, st, raw)
            assert h.get("WWW-Authenticate", "").startswith("Bearer"), h
            bodies.add(raw)
        for q in ["?token=wrong", "?token=", "?tc_s=1&token=" + KEY + "x"]:
            st, _, raw = lib.http("POST", gw.url("/events" + q), json.dumps(ev),
                                  {"Content-Type": CT_JSON})
            assert st == 401, (q, raw)
            bodies.add(raw)
        assert len(bodies) == 1, bodies
        assert json.loads(bodies.pop())["error"] == "unauthorized"
        assert gw.stored() == 0
        # the key as the token query parameter is accepted (compatibility)...
        st, _, raw = lib.http("POST", gw.url("/events?tc_s=1234&token=" + KEY), json.dumps(ev),
                              {"Content-Type": CT_JSON})
        assert st == 202, raw
        # ... and logged nowhere, nor any of the wrong ones
        _, m = gw.get("/metrics")
        assert "capid_http_auth_failures_total 12" in m, m
        assert gw.stop() == 0
        log = gw.log()
        assert KEY not in log and "wrong" not in log and "token=" not in log, log


@cleanup
def test_413_before_the_body_is_read_and_when_a_chunked_body_passes_the_limit():
    with Sim() as sim:
        gw = Gateway(sim).serve()
        # Content-Length of 10 MiB: refused on the headers alone
        st, body, dt = raw_request(gw.port, head_bytes("/events/batch", 10 << 20))
        assert st == 413 and b"too_large" in body and dt < 0.5, (st, body, dt)
        st, body, dt = raw_request(gw.port, head_bytes("/events", 40000) + b"{" * 1000)
        assert st == 413 and b"32768" in body, body
        # 100-continue: the client never has to send the body
        st, body, _ = raw_request(gw.port, head_bytes("/events/batch", 10 << 20,
                                                      extra=b"Expect: 100-continue\r\n"))
        assert st == 413, (st, body)
        # chunked: cut as soon as the count passes 500 KiB, not at the end
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        s.settimeout(5)
        s.connect(("127.0.0.1", gw.port))
        s.sendall(head_bytes("/events/batch", None))
        chunk = b"%x\r\n%s\r\n" % (64 * 1024, b" " * 64 * 1024)
        sent, answer = 0, b""
        try:
            while sent < (10 << 20):
                s.sendall(chunk)
                sent += 64 * 1024
                r, _, _ = select.select([s], [], [], 0)
                if r:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the server: its answer is already in our buffer
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                answer += d
        except (ConnectionResetError, socket.timeout):
            pass
        s.close()
        # answered long before the 10 MiB were sent (what was sent past 500 KiB
        # sat in socket buffers)
        assert sent < (8 << 20) and answer.startswith(b"HTTP/1.1 413"), (sent, answer[:300])
        assert b"too_large" in answer, answer
        assert gw.stored() == 0
        st, _, doc = gw.post("/events", seed_event(int(time.time())))
        assert st == 202 and doc["queued"] == 1
        assert gw.stop() == 0


@cleanup
def test_routes_methods_headers_and_health():
    with Sim() as sim:
        gw = Gateway(sim).serve()
        assert gw.get("/healthz") == (200, '{"status":"ok"}')
        assert gw.get("/readyz") == (200, '{"status":"ready"}')
        st, h, raw = lib.http("GET", gw.url("/events"))
        assert st == 405 and h["Allow"] == "POST", (st, h)
        st, h, raw = lib.http("POST", gw.url("/healthz"), b"{}")
        assert st == 405 and h["Allow"] == "GET, HEAD", (st, h)
        st, _, raw = lib.http("GET", gw.url("/nope?token=" + KEY))
        assert st == 404 and json.loads(raw)["error"] == "not_found"
        st, _, raw = lib.http("POST", gw.url("/events/"), b"{}", {"Authorization": "Bearer " + KEY})
        assert st == 404
        # keep-alive: several requests on one connection
        c = httpclient.HTTPConnection("127.0.0.1", gw.port, timeout=5)
        for _ in range(3):
            c.request("GET", "/healthz")
            r = c.getresponse()
            assert r.status == 200 and r.read() == b'{"status":"ok"}'
        for _ in range(3):
            c.request("POST", "/events", json.dumps(seed_event(int(time.time()))),
                      {"Content-Type": CT_JSON, "Authorization": "Bearer " + KEY})
            r = c.getresponse()
            assert r.status == 202, r.read()
            r.read()
        c.close()
        # a header block over 16 KiB is refused, the server goes on
        st, body, _ = raw_request(gw.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " +
                                  b"a" * 20000 + b"\r\n\r\n")
        assert st == 431, (st, body[:200])  # libmicrohttpd's own answer
        assert gw.get("/healthz")[0] == 200
        # gzip is not decoded, so it is refused
        st, _, doc = gw.post("/events", b"\x1f\x8b", headers={"Content-Encoding": "gzip"})
        assert st == 415 and "Content-Encoding" in doc["detail"], doc
        assert gw.stop() == 0


# ---- limits and slow clients ----

@cleanup
def test_connections_per_ip_are_capped():
    with Sim() as sim:
        gw = Gateway(sim, server={"max_connections_per_ip": 4, "max_connections": 8}).serve()
        held = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(4)]
        for s in held:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
        extra = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        try:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            got = extra.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            got = b""
        extra.close()
        assert got == b"", got  # the fifth connection is closed without an answer
        for s in held:
            s.close()
        lib.wait_for(lambda: gw.get("/healthz")[0] == 200, 5, "a free slot")
        assert gw.stop() == 0


@cleanup
def test_200_slow_clients_do_not_delay_others_and_are_cut_at_the_timeout():
    timeout_s = 2
    with Sim() as sim:
        gw = Gateway(sim, server={"connection_timeout_s": timeout_s,
                                  "max_connections_per_ip": 1000}).serve()
        slow = []
        for i in range(200):
            s = socket.create_connection(("127.0.0.1", gw.port))
            s.setblocking(False)
            if i % 2:  # trickles its headers
                s.send(b"POST /events HTTP/1.1\r\n")
                pending = b"Host: x\r\nX-Slow: " + b"a" * 1000
            else:  # sends its headers, trickles its body
                s.send(head_bytes("/events", 5000))
                pending = b"{" + b" " * 4999
            slow.append({"s": s, "pending": pending, "t0": time.monotonic(), "closed": None})
        stop = threading.Event()

        def trickle():
            while not stop.is_set():
                for c in slow:
                    if c["closed"] is not None:
                        continue
                    try:
                        if c["s"].recv(4096) == b"":
                            c["closed"] = time.monotonic()
                            continue
                    except BlockingIOError:
                        pass
                    except OSError:
                        c["closed"] = time.monotonic()
                        continue
                    try:
                        c["s"].send(c["pending"][:1])  # one byte every 0.2 s
                        c["pending"] = c["pending"][1:]
                    except OSError:
                        c["closed"] = time.monotonic()
                stop.wait(0.2)

        th = threading.Thread(target=trickle)
        th.start()
        lat = []
        try:
            now = int(time.time())
            c = httpclient.HTTPConnection("127.0.0.1", gw.port, timeout=5)
            deadline = time.monotonic() + timeout_s + 1.5
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                c.request("POST", "/events", json.dumps(seed_event(now)),
                          {"Content-Type": CT_JSON, "Authorization": "Bearer " + KEY})
                r = c.getresponse()
                r.read()
                lat.append(time.monotonic() - t0)
                assert r.status == 202
            c.close()
            lib.wait_for(lambda: all(x["closed"] is not None for x in slow), timeout_s + 5,
                         "every slow client cut")
        finally:
            stop.set()
            th.join()
            for x in slow:
                x["s"].close()
        lat.sort()
        p99 = lat[int(len(lat) * 0.99) - 1]
        assert len(lat) >= 50 and p99 < 0.100, (len(lat), p99, lat[-5:])
        held = [x["closed"] - x["t0"] for x in slow]
        # trickling resets libmicrohttpd's idle timer, not capid's request deadline
        assert min(held) >= timeout_s - 0.3 and max(held) < timeout_s + 1.5, (min(held),
                                                                             max(held))
        _, m = gw.get("/metrics")
        cut = int(m.split("\ncapid_http_connections_cut_total ")[1].split()[0])
        assert cut >= 200, cut
        assert gw.stored() == len(lat)
        assert gw.stop() == 0


# ---- shutdown ----

@cleanup
def test_sigterm_during_load_loses_no_acknowledged_event():
    now = int(time.time())
    with Sim() as sim:
        sim.latency(min_ms=20, max_ms=60, seed=7)
        gw = Gateway(sim, server={"threads": 4}, delivery={"max_batch": 200}).serve()
        lines = corpus(20000, now)
        acked, lock, errors = set(), threading.Lock(), []
        stop = threading.Event()

        def client(k):
            c = None
            i = k * 5000
            while not stop.is_set() and i < (k + 1) * 5000:
                chunk = lines[i:i + 50]
                try:
                    if c is None:
                        c = httpclient.HTTPConnection("127.0.0.1", gw.port, timeout=10)
                    c.request("POST", "/events/batch", "\n".join(chunk).encode(),
                              {"Content-Type": CT_NDJSON, "Authorization": "Bearer " + KEY})
                    r = c.getresponse()
                    doc = json.loads(r.read())
                except (OSError, httpclient.HTTPException, ValueError):
                    c = None
                    if gw.proc.p.poll() is not None:
                        return
                    continue  # not acknowledged: send again
                if r.status == 202:
                    if doc["queued"] + len(doc["skipped"]) != 50 or \
                            any(s["reason"] != "duplicate" for s in doc["skipped"]):
                        errors.append(doc)
                    with lock:
                        acked.update(json.loads(x)["context"]["event_id"] for x in chunk)
                    i += 50
                elif r.status != 503:
                    errors.append((r.status, doc))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        lib.wait_for(lambda: len(acked) >= 3000, 30, "3000 acknowledged events")
        assert gw.stop() == 0, gw.log()[-2000:]
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        n = len(acked)
        assert 3000 <= n < 20000, n
        # restart and drain: every acknowledged event reaches the Graph API
        gw.serve()
        sim.wait_stats(lambda s: s["unique_events"] >= n, 120, f"{n} acknowledged delivered")
        seen = {e["payload"]["event_id"] for e in sim.events(pixel=DEFAULT_PIXEL)}
        missing = acked - seen
        assert not missing, (len(missing), sorted(missing)[:5])
        assert gw.stop() == 0


@cleanup
def test_queue_locked_past_its_timeout_is_503_with_retry_after_and_nothing_stored():
    import sqlite3
    now = int(time.time())
    with Sim() as sim:
        gw = Gateway(sim).serve()
        assert gw.post("/events", seed_event(now))[0] == 202
        sim.wait_stats(lambda s: s["unique_events"] == 1, 10, "first event delivered")
        db = sqlite3.connect(gw.db, timeout=10, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        try:
            t0 = time.monotonic()
            st, h, doc = gw.post("/events/batch", [seed_event(now), seed_event(now)], timeout=30)
            dt = time.monotonic() - t0
        finally:
            db.execute("ROLLBACK")
            db.close()
        assert st == 503 and h.get("Retry-After") == "5", (st, h, doc)
        assert doc["error"] == "queue_unavailable" and "nothing was stored" in doc["detail"], doc
        assert dt >= 4, dt  # the queue waited for its busy timeout (5 s) first
        assert gw.stored() == 1
        st, _, doc = gw.post("/events/batch", [seed_event(now), seed_event(now)])
        assert st == 202 and doc["queued"] == 2, doc
        _, m = gw.get("/metrics")
        assert "\ncapid_ingest_queue_errors_total 1\n" in m, m
        assert gw.stop() == 0


@cleanup
def test_a_commit_slower_than_the_connection_timeout_still_gets_its_202():
    import sqlite3
    now = int(time.time())
    with Sim() as sim:
        gw = Gateway(sim, server={"connection_timeout_s": 1}).serve()
        db = sqlite3.connect(gw.db, timeout=10, isolation_level=None, check_same_thread=False)
        db.execute("BEGIN IMMEDIATE")
        timer = threading.Timer(2.5, lambda: db.execute("ROLLBACK"))
        timer.start()
        try:
            st, _, doc = gw.post("/events", seed_event(now), timeout=30)
        finally:
            timer.join()
            db.close()
        assert st == 202 and doc["queued"] == 1, (st, doc)
        assert gw.stored() == 1
        assert gw.stop() == 0


# ---- secrets ----

@cleanup
def test_canary_token_and_email_appear_in_no_log_queue_wal_metrics_or_202():
    now = int(time.time())
    token = "EAAB" + "CANARY%016x" % random.getrandbits(64)
    email = "canary+%08x@example.com" % random.getrandbits(32)
    phone = "+33 6 %02d %02d %02d %02d" % tuple(random.randrange(100) for _ in range(4))
    with Sim(tokens=[token]) as sim:
        gw = Gateway(sim, token=token).serve(args=["--log-level", "debug"])
        bodies = []
        snapshots = []
        for i in range(20):
            ev = seed_event(now)
            ev["user"]["email"] = email
            ev["user"]["phone"] = phone
            ev["note"] = email  # a custom property that is an e-mail (PII guard)
            if i % 3 == 0:
                st, _, raw = lib.http("POST", gw.url("/events?token=" + KEY), json.dumps(ev),
                                      {"Content-Type": CT_JSON})
            else:
                st, _, raw = lib.http("POST", gw.url("/events/batch"),
                                      json.dumps({"batch": [ev, {"event_name": email}]}),
                                      {"Content-Type": CT_JSON, "Authorization": "Bearer " + KEY})
            assert st == 202, raw
            bodies.append(raw)
            if i == 10:  # the WAL before any checkpoint
                snapshots += [open(p, "rb").read() for p in (gw.db, gw.db + "-wal")
                              if os.path.exists(p)]
        sim.wait_stats(lambda s: s["unique_events"] >= 20, 30, "delivered")
        _, metrics = gw.get("/metrics")
        snapshots += [open(p, "rb").read() for p in (gw.db, gw.db + "-wal")
                      if os.path.exists(p)]
        assert gw.stop() == 0
        files = [gw.db, gw.db + "-wal", gw.db + ".state.json", gw.proc.log_path]
        snapshots += [open(p, "rb").read() for p in files if os.path.exists(p)]
        snapshots += [metrics.encode()] + bodies
        secrets = [token.encode(), email.encode(), phone.encode(), KEY.encode(),
                   phone.replace(" ", "").encode()]
        for blob in snapshots:
            for s in secrets:
                assert s not in blob, (s, blob[:200])
        # and the hashes did reach Meta
        assert all(e["payload"]["user_data"]["em"] for e in sim.events())


# ---- configuration ----

@cleanup
def test_sighup_reloads_keys_and_no_sources_means_no_server():
    now = int(time.time())
    with Sim() as sim:
        gw = Gateway(sim).serve()
        assert gw.post("/events", seed_event(now))[0] == 202
        gw._secret("ingest.key", KEY + "-rotated")
        gw.proc.p.send_signal(signal.SIGHUP)
        lib.wait_for(lambda: gw.post("/events", seed_event(now))[0] == 401, 10, "old key refused")
        st, _, doc = gw.post("/events", seed_event(now), key=KEY + "-rotated")
        assert st == 202, doc
        assert gw.stop() == 0
        # without sources, serve delivers but binds nothing
        del gw.cfg["sources"]
        gw.write_config()
        p = lib.Proc([lib.CAPID, "serve", "--config", gw.config],
                     log=os.path.join(gw.dir, "nosrc.log"))
        _live.append(p)
        lib.wait_for(lambda: "serving" in p.log(), 10, "serve started")
        assert not os.path.exists(gw.ready)
        assert p.stop() == 0
