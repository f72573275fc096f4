"""Delivery end to end (issue 4, "What it must show"; SPEC 6-7): real `capid
enqueue` and `capid serve` processes, a real SQLite queue in a temp dir, and the
Graph API simulator as a separate process on 127.0.0.1. Every wait polls
against a deadline; faults come from the simulator, crashes from kill -9.

Settings are small (backoff 50-400 ms, probe interval 1 s, linger 20 ms) so
that the whole file runs in a couple of minutes."""
import atexit
import json
import os
import random
import shutil
import signal
import subprocess
import time

import lib
from simlib import DEFAULT_PIXEL, DEFAULT_TOKEN, Sim

GEN = os.path.join(lib.BUILD, "gen-corpus")
_DIRS = []


@atexit.register
def _cleanup():
    """The queues of these tests reach 100 MB: removed at exit unless
    CAPID_KEEP_TMP=1 (to look at them after a failure)."""
    if os.environ.get("CAPID_KEEP_TMP") != "1":
        for d in _DIRS:
            shutil.rmtree(d, ignore_errors=True)


def corpus(n, now, path):
    """n deterministic Commanders Act events (tools/gen-corpus) around now."""
    with open(path, "wb") as f:
        subprocess.run([GEN, str(n), "--now", str(now)], stdout=f, check=True)
    return path


class Gateway:
    """One capid configuration (one destination, pointed at the simulator),
    its queue and its processes, all in a fresh temp dir."""

    def __init__(self, sim, token=DEFAULT_TOKEN, delivery=None, dest=None, sync="full"):
        self.sim = sim
        self.dir = lib.tmpdir("capid-dlv-")
        _DIRS.append(self.dir)
        self.token_file = os.path.join(self.dir, "token")
        self.set_token(token)
        self.db = os.path.join(self.dir, "queue.db")
        d = {"max_batch": 1000, "linger_ms": 20, "max_inflight": 4, "timeout_ms": 2000,
             "backoff_initial_ms": 50, "backoff_max_ms": 400, "probe_interval_s": 1}
        d.update(delivery or {})
        self.delivery = d
        dst = {"name": "shop", "pixel_id": DEFAULT_PIXEL, "access_token_file": self.token_file,
               "graph_url": sim.base}
        dst.update(dest or {})
        cfg = {"destinations": [dst], "queue": {"path": self.db, "synchronous": sync},
               "delivery": d}
        self.config = os.path.join(self.dir, "capid.yaml")
        with open(self.config, "w") as f:
            json.dump(cfg, f, indent=1)  # JSON is YAML
        self.serve_proc = None
        self.serves = 0

    def set_token(self, token):
        tmp = self.token_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(token + "\n")
        os.chmod(tmp, 0o600)
        os.rename(tmp, self.token_file)

    def run(self, *args, check=True):
        p = subprocess.run([lib.CAPID, *args], capture_output=True, text=True, timeout=300)
        if check and p.returncode != 0:
            raise AssertionError(f"capid {args[0]} exited {p.returncode}: {p.stderr[-2000:]}")
        return p

    def enqueue(self, path, now):
        p = self.run("enqueue", "--config", self.config, "--now", str(now), path)
        return json.loads(p.stdout.strip().splitlines()[-1])

    def map(self, path, now):
        p = self.run("map", "--config", self.config, "--now", str(now), path)
        return [json.loads(x) for x in p.stdout.splitlines() if x.strip()]

    def serve(self, env=None):
        self.serves += 1
        self.serve_proc = lib.Proc([lib.CAPID, "serve", "--config", self.config], env=env,
                                   log=os.path.join(self.dir, f"serve-{self.serves}.log"))
        return self.serve_proc

    def stop(self, timeout=20.0):
        rc = self.serve_proc.stop(signal.SIGTERM, timeout)
        return rc

    def status(self):
        p = self.run("status", "--config", self.config, "--json")
        doc = json.loads(p.stdout)
        return {d["name"]: d for d in doc["destinations"]}["shop"]

    def dlq(self):
        p = self.run("dlq", "list", "--config", self.config, "--json", "--limit", "100000")
        return [json.loads(x) for x in p.stdout.splitlines() if x.strip()]

    def wait_status(self, pred, timeout=30.0, what="queue status"):
        def check():
            if self.serve_proc and self.serve_proc.p.poll() is not None:
                raise AssertionError(f"capid serve exited {self.serve_proc.p.returncode}:\n"
                                     f"{self.serve_proc.log()[-3000:]}")
            s = self.status()
            return s if pred(s) else None
        return lib.wait_for(check, timeout, what)


def canon(ev):
    return json.dumps(ev, sort_keys=True, separators=(",", ":"))


def request_log(sim):
    return sorted(sim.stats()["request_log"], key=lambda r: r["t_ms"])


def max_overlap(intervals):
    """Most intervals [a, b) open at one instant."""
    points = []
    for a, b in intervals:
        points += [(a, 1), (max(b, a), -1)]
    points.sort(key=lambda p: (p[0], p[1]))  # an end before a start at the same ms
    cur = best = 0
    for _, d in points:
        cur += d
        best = max(best, cur)
    return best


# ---- happy path ----

def test_happy_path_10000_events_match_capid_map():
    now = int(time.time())
    with Sim() as sim:
        gw = Gateway(sim, dest={"test_event_code": "TEST4242"})
        src = corpus(10000, now, os.path.join(gw.dir, "in.ndjson"))
        expected = gw.map(src, now)
        assert len(expected) == 10000
        summary = gw.enqueue(src, now)
        assert summary["enqueued"] == 10000, summary
        gw.serve()
        gw.wait_status(lambda s: s["delivered"] == 10000, 60, "10000 delivered")
        st = sim.stats()
        assert st["events"] == 10000 and st["duplicates"] == 0, st
        # exactly the CAPI events `capid map` produces, compared as JSON values
        got = sim.events(pixel=DEFAULT_PIXEL)
        assert sorted(canon(e["payload"]) for e in got) == \
            sorted(canon(e) for e in expected)
        assert all(e["test_event_code"] == "TEST4242" for e in got)
        assert all(e["partner_agent"].startswith("capid-") for e in got)
        # batches of at most 1000, never more than max_inflight at once
        log = st["request_log"]
        assert all(r["events"] <= 1000 for r in log), [r["events"] for r in log]
        assert len(log) >= 10
        assert st["max_concurrent"] <= gw.delivery["max_inflight"], st["max_concurrent"]
        s = gw.status()
        assert s["queued"] == 0 and s["leased"] == 0 and s["dead"] == 0, s
        assert gw.stop() == 0
        # the token never reaches a log line, argv or the state file
        logs = gw.serve_proc.log()
        assert DEFAULT_TOKEN not in logs
        with open(gw.db + ".state.json") as f:
            assert DEFAULT_TOKEN not in f.read()


def test_sigterm_waits_for_inflight_and_leaves_nothing_leased():
    now = int(time.time())
    with Sim() as sim:
        sim.latency(ms=700)
        gw = Gateway(sim, delivery={"max_batch": 100, "max_inflight": 2})
        gw.enqueue(corpus(1000, now, os.path.join(gw.dir, "in.ndjson")), now)
        gw.serve()
        sim.wait_stats(lambda s: s["in_flight"] >= 1, 10, "a request in flight")
        t0 = time.monotonic()
        assert gw.stop() == 0
        assert time.monotonic() - t0 < 5
        s = gw.status()
        assert s["leased"] == 0, s
        # what was answered is delivered, the rest is queued again
        assert s["delivered"] + s["queued"] == 1000, s
        assert s["delivered"] == sim.stats()["events"], s


# ---- flaky API ----

def test_flaky_api_30_percent_faults_all_delivered():
    now = int(time.time())
    timeout_ms = 400
    with Sim() as sim:
        kinds = [500,
                 {"status": 503, "code": 2},
                 {"status": 429, "code": 17, "retry_after": 1},
                 {"kind": "ok", "latency_ms": 2 * timeout_ms},  # timeout: Meta got it
                 "reset"]
        sim.failure(0.3, kinds=kinds, seed=42)
        gw = Gateway(sim, delivery={"max_batch": 100, "max_inflight": 4,
                                    "timeout_ms": timeout_ms})
        src = corpus(5000, now, os.path.join(gw.dir, "in.ndjson"))
        gw.enqueue(src, now)
        gw.serve()
        gw.wait_status(lambda s: s["delivered"] == 5000, 120, "5000 delivered")
        s = gw.status()
        assert s["dead"] == 0 and s["queued"] == 0 and s["leased"] == 0, s
        st = sim.stats()
        assert st["unique_events"] == 5000, st
        log = sorted(st["request_log"], key=lambda r: r["t_ms"])
        by_req = {r["request"]: r for r in log}
        faults = sum(1 for r in log if r["status"] != 200 or r["kind"] != "ok"
                     or r["delay_ms"] >= timeout_ms)
        assert faults >= 0.15 * len(log), (faults, len(log))

        def failed_in_flight(r):
            # Meta accepted the batch but capid saw a failure: a reset, or an
            # answer later than the timeout
            return r["kind"] in ("reset", "wrong_count") or r["delay_ms"] >= timeout_ms

        # 100% delivered, duplicates only from failed in-flight batches, each
        # with its original event_id and byte-identical payload
        seen = {}
        for e in sim.events(pixel=DEFAULT_PIXEL):
            seen.setdefault(e["event_id"], []).append(e)
        assert len(seen) == 5000
        for eid, occ in seen.items():
            for e in occ[:-1]:
                assert failed_in_flight(by_req[e["request"]]), (eid, by_req[e["request"]])
            assert len({canon(e["payload"]) for e in occ}) == 1, eid
        # Retry-After: 1 respected: after a 429 no request starts within its
        # second (300 ms of slack for requests already handed to libcurl when
        # the answer came, on a busy machine)
        for r in log:
            if r["status"] == 429:
                early = [x for x in log if r["t_ms"] + 300 <= x["t_ms"] < r["t_ms"] + 1000]
                assert not early, (r, early[:3])
        assert any(r["status"] == 429 for r in log)
        # concurrency from what the simulator saw: a request is open from its
        # arrival to its answer, or until capid's timeout (minus 50 ms of
        # slack: the simulator keeps a timed-out request open longer)
        spans = []
        for r in log:
            d = r["delay_ms"]
            end = r["t_ms"] + (timeout_ms - 50 if d >= timeout_ms else d)
            spans.append((r["t_ms"], end))
        assert max_overlap(spans) <= gw.delivery["max_inflight"]
        assert gw.stop() == 0


# ---- poison ----

def test_poison_event_isolated_in_at_most_21_requests():
    now = int(time.time())
    with Sim() as sim:
        gw = Gateway(sim)
        src = corpus(1000, now, os.path.join(gw.dir, "in.ndjson"))
        bad = gw.map(src, now)[617]["event_id"]
        sim.poison("event_id", bad, subcode=2804050, message="poisoned for the test")
        gw.enqueue(src, now)
        gw.serve()
        gw.wait_status(lambda s: s["delivered"] == 999 and s["dead"] == 1, 30,
                       "999 delivered, 1 dead")
        st = sim.stats()
        assert st["requests"] <= 21, st["requests"]
        assert st["unique_events"] == 999 and st["duplicates"] == 0, st
        dead = gw.dlq()
        assert len(dead) == 1, dead
        d = dead[0]
        assert d["event_id"] == bad and d["reason"] == "graph_rejected", d
        assert d["code"] == 100 and d["subcode"] == 2804050, d
        assert "poisoned for the test" in json.dumps(d["error"]), d
        assert not sim.events(event_id=bad)
        # show keeps the hashed payload for a replay
        show = json.loads(gw.run("dlq", "show", "--config", gw.config, str(d["id"])).stdout)
        assert show["payload"]["event_id"] == bad
        assert gw.stop() == 0


# ---- token revoked ----

def test_token_revoked_pauses_probes_and_resumes_on_sighup():
    now = int(time.time())
    with Sim(tokens=("good-token",)) as sim:
        gw = Gateway(sim, token="revoked-token", delivery={"max_batch": 500})
        gw.enqueue(corpus(2000, now, os.path.join(gw.dir, "in.ndjson")), now)
        gw.serve()
        s = gw.wait_status(lambda s: s["paused"], 10, "destination paused")
        assert "190" in s["pause_reason"], s
        t0 = time.time()
        # a few probe intervals
        lib.wait_for(lambda: time.time() - t0 > 3.5, 10, "3.5 s paused")
        s = gw.status()
        assert s["paused"] and s["dead"] == 0 and s["delivered"] == 0, s
        assert s["queued"] + s["leased"] == 2000, s
        log = request_log(sim)
        assert all(r["code"] == 190 for r in log), log
        # after the first round (at most max_inflight requests, all before
        # the first probe can be due: 1 s after the first answer), one probe
        # per probe interval
        first = log[0]["t_ms"]
        burst = [r for r in log if r["t_ms"] < first + 900]
        assert len(burst) <= gw.delivery["max_inflight"], burst
        probes = [r["t_ms"] for r in log if r["t_ms"] >= first + 900]
        assert 2 <= len(probes) <= 5, probes
        gaps = [b - a for a, b in zip(probes, probes[1:])]
        assert all(g >= 950 for g in gaps), gaps
        # a good token in the file, SIGHUP: everything goes
        gw.set_token("good-token")
        gw.serve_proc.p.send_signal(signal.SIGHUP)
        s = gw.wait_status(lambda s: s["delivered"] == 2000, 20, "2000 delivered")
        assert not s["paused"] and s["dead"] == 0, s
        assert sim.stats()["unique_events"] == 2000
        assert "revoked-token" not in gw.serve_proc.log()
        assert gw.stop() == 0


# ---- event age ----

def test_event_aging_past_7_days_while_api_down_is_dead_lettered_not_sent():
    now = int(time.time())
    with Sim() as sim:
        sim.failure(1.0, kinds=[503])  # the API is down
        gw = Gateway(sim)
        src = corpus(20, now, os.path.join(gw.dir, "in.ndjson"))
        lines = open(src).read().splitlines()
        old = json.loads(lines[5])
        old["context"]["event_timestamp"] = (now - 7 * 86400 + 100) * 1000  # 100 s left
        lines[5] = json.dumps(old)
        with open(src, "w") as f:
            f.write("\n".join(lines) + "\n")
        old_id = gw.map(src, now)[5]["event_id"]
        assert gw.enqueue(src, now)["enqueued"] == 20
        gw.serve()
        sim.wait_stats(lambda s: s["requests"] >= 2, 20, "attempts while the API is down")
        assert gw.stop() == 0
        s = gw.status()
        assert s["queued"] == 20 and s["dead"] == 0, s
        # 200 s later (test clock: capid's CAPID_CLOCK_OFFSET and the
        # simulator's clock), the API is back
        sim.failure(0)
        sim.clock(offset=200)
        gw.serve(env={"CAPID_CLOCK_OFFSET": "200"})
        s = gw.wait_status(lambda s: s["delivered"] == 19 and s["dead"] == 1, 20,
                           "19 delivered, 1 dead")
        dead = gw.dlq()
        assert [(d["event_id"], d["reason"]) for d in dead] == [(old_id, "event_too_old")], dead
        assert not sim.events(event_id=old_id)
        st = sim.stats()
        assert st["rejections"].get("100") is None, st["rejections"]
        assert st["unique_events"] == 19
        # the rest of its batch went in one request
        ok = [r for r in st["request_log"] if r["status"] == 200]
        assert len(ok) == 1 and ok[0]["events"] == 19, ok
        assert gw.stop() == 0


# ---- crash ----

def test_kill9_during_delivery_10_times_everything_delivered():
    now = int(time.time())
    rnd = random.Random(4)
    with Sim() as sim:
        sim.latency(min_ms=30, max_ms=120, seed=3)
        gw = Gateway(sim, delivery={"max_batch": 250, "max_inflight": 4})
        src = corpus(50000, now, os.path.join(gw.dir, "in.ndjson"))
        ids = {e["event_id"] for e in gw.map(src, now)}
        assert len(ids) == 50000
        assert gw.enqueue(src, now)["enqueued"] == 50000
        kills = 0
        for _ in range(10):
            before = sim.stats(log=False)["unique_events"]
            p = gw.serve()
            # kill at a random moment once delivery is under way
            sim.wait_stats(lambda s: s["unique_events"] > before or s["in_flight"] > 0, 20,
                           "delivery under way")
            deadline = time.monotonic() + rnd.uniform(0.05, 0.6)
            lib.wait_for(lambda: time.monotonic() >= deadline, 5, "the kill moment")
            assert p.p.poll() is None, p.log()[-2000:]
            p.kill9()
            kills += 1
            if sim.stats(log=False)["unique_events"] == 50000:
                break
        assert sim.stats(log=False)["unique_events"] < 50000 or kills >= 5, \
            "delivery ended before the kills: make it slower"
        gw.serve()
        gw.wait_status(lambda s: s["delivered"] == 50000, 120, "50000 delivered")
        s = gw.status()
        assert s["queued"] == 0 and s["leased"] == 0 and s["dead"] == 0, s
        st = sim.stats(log=False)
        assert st["unique_events"] == 50000, st
        # duplicates: only batches in flight at a kill (at most max_batch x
        # max_inflight per kill), each with its original event_id and payload
        assert st["duplicates"] <= kills * 250 * 4, (st["duplicates"], kills)
        seen = {}
        for e in sim.events(pixel=DEFAULT_PIXEL):
            seen.setdefault(e["event_id"], set()).add(canon(e["payload"]))
        assert set(seen) == ids
        assert all(len(v) == 1 for v in seen.values())
        assert gw.stop() == 0


# ---- retry window, anomalies ----

def test_retry_window_exceeded_only_after_attempts_and_window():
    now = int(time.time())
    with Sim() as sim:
        sim.failure(1.0, kinds=[500])
        # window 0: dead after max_attempts
        gw = Gateway(sim, delivery={"max_attempts": 3, "retry_window_s": 0})
        gw.enqueue(corpus(10, now, os.path.join(gw.dir, "in.ndjson")), now)
        gw.serve()
        gw.wait_status(lambda s: s["dead"] == 10, 20, "10 dead after 3 attempts")
        dead = gw.dlq()
        assert {d["reason"] for d in dead} == {"retry_window_exceeded"}, dead
        assert {d["attempts"] for d in dead} == {3}, dead
        assert gw.stop() == 0
        # attempts reached but not the window: nothing dead, still retrying
        gw2 = Gateway(sim, delivery={"max_attempts": 2, "retry_window_s": 3600})
        gw2.enqueue(corpus(10, now, os.path.join(gw2.dir, "in.ndjson")), now)
        before = sim.stats(log=False)["requests"]
        gw2.serve()
        sim.wait_stats(lambda s: s["requests"] >= before + 4, 20, "4 more attempts")
        s = gw2.status()
        assert s["dead"] == 0 and s["delivered"] == 0, s
        assert gw2.stop() == 0


def test_wrong_events_received_is_retried_and_counted_as_anomaly():
    now = int(time.time())
    with Sim() as sim:
        sim.script(["wrong_count"])
        gw = Gateway(sim)
        gw.enqueue(corpus(50, now, os.path.join(gw.dir, "in.ndjson")), now)
        gw.serve()
        gw.wait_status(lambda s: s["delivered"] == 50, 20, "50 delivered")
        st = sim.stats()
        assert st["requests"] == 2 and st["unique_events"] == 50, st
        assert st["duplicates"] == 50  # the same batch again, same event_ids

        def anomalies():
            with open(gw.db + ".state.json") as f:
                m = json.load(f)["metrics"]["shop"]
            return m if m["anomalies_total"] == 1 and m["outcomes"]["delivered"] == 1 else None
        m = lib.wait_for(anomalies, 5, "anomaly counted, then delivered")
        assert m["outcomes"]["retry"] == 1 and m["outcomes"]["delivered"] == 1, m
        assert gw.stop() == 0


# ---- the commands around the queue ----

def test_enqueue_summary_status_and_dlq_commands():
    now = int(time.time())
    with Sim() as sim:
        gw = Gateway(sim, dest={"consent_category": "4"})
        src = corpus(100, now, os.path.join(gw.dir, "in.ndjson"))
        events = gw.map(src, now)
        lines = open(src).read().splitlines()
        no_consent = json.loads(lines[0])
        no_consent["user"]["consent_categories"] = ["1"]
        no_consent["context"]["event_id"] = "no-consent-1"
        with open(src, "a") as f:
            f.write("{not json\n" + json.dumps(no_consent) + "\n\n")
        s1 = gw.enqueue(src, now)
        assert s1["lines"] == 102 and s1["enqueued"] == 100, s1
        assert s1["skipped"] == {"invalid_json": 1, "no_consent": 1}, s1
        assert s1["destinations"] == {"shop": 100}, s1
        s2 = gw.enqueue(src, now)  # the same events again: refused as duplicates
        assert s2["enqueued"] == 0 and s2["skipped"]["duplicate"] == 100, s2
        st = gw.status()
        assert st["queued"] == 100 and st["paused"] is False and st["configured"], st
        text = gw.run("status", "--config", gw.config).stdout
        assert "shop" in text and "100" in text, text
        # two events rejected by Meta, then replayed and purged
        bad = [events[3]["event_id"], events[40]["event_id"]]
        for b in bad:
            sim.poison("event_id", b, subcode=2804001)
        gw.serve()
        gw.wait_status(lambda s: s["delivered"] == 98 and s["dead"] == 2, 30, "98 + 2 dead")
        dead = gw.dlq()
        assert sorted(d["event_id"] for d in dead) == sorted(bad), dead
        assert all(d["code"] == 100 and d["subcode"] == 2804001 for d in dead), dead
        assert gw.run("dlq", "replay", "--config", gw.config, check=False).returncode == 2
        listed = gw.run("dlq", "list", "--config", gw.config, "--reason", "graph_rejected").stdout
        assert bad[0] in listed and bad[1] in listed, listed
        sim.clear_poison()
        keep = dead[0]
        out = gw.run("dlq", "replay", "--config", gw.config, "--id", str(keep["id"])).stdout
        assert json.loads(out) == {"replayed": 1}
        gw.wait_status(lambda s: s["delivered"] == 99 and s["dead"] == 1, 20, "replay delivered")
        assert sim.events(event_id=keep["event_id"])
        out = gw.run("dlq", "purge", "--config", gw.config, "--reason", "graph_rejected").stdout
        assert json.loads(out) == {"purged": 1}
        assert gw.dlq() == []
        assert gw.run("dlq", "show", "--config", gw.config, "999999", check=False).returncode == 1
        assert gw.stop() == 0
        st = gw.status()
        assert st["dead"] == 0 and st["delivered"] == 99, st


# ---- transport security ----

class _Recorder:
    """A tiny HTTP(S) server in this process: records the requests it gets
    and answers each with `answer` (status, headers)."""

    def __init__(self, answer, tls_dir=None):
        import http.server
        import ssl
        import threading
        rec = self
        self.requests = []

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                rec.requests.append((self.path, self.rfile.read(n)))
                status, headers = answer
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        if tls_dir:
            key, crt = os.path.join(tls_dir, "key.pem"), os.path.join(tls_dir, "crt.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                            key, "-out", crt, "-days", "1", "-subj", "/CN=127.0.0.1",
                            "-addext", "subjectAltName=IP:127.0.0.1"],
                           check=True, capture_output=True)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(crt, key)
            self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def test_tls_peer_verified_and_redirects_not_followed():
    now = int(time.time())
    with Sim() as sim:
        # a self-signed server: the handshake fails, nothing is sent, the
        # events wait (retry), nothing is dead-lettered
        tls = _Recorder((200, {}), tls_dir=lib.tmpdir())
        redirect = _Recorder((307, {"Location": sim.events_url()}))
        try:
            gw = Gateway(sim, dest={"graph_url": f"https://127.0.0.1:{tls.port}"})
            gw.enqueue(corpus(5, now, os.path.join(gw.dir, "in.ndjson")), now)
            gw.serve()
            lib.wait_for(lambda: "cannot connect: SSL certificate problem" in gw.serve_proc.log(),
                         10, "a TLS verification failure")
            assert tls.requests == []
            s = gw.status()
            assert s["delivered"] == 0 and s["dead"] == 0, s
            assert gw.stop() == 0
            # a 307 to the simulator: not followed, retried later
            gw2 = Gateway(sim, dest={"graph_url": f"http://127.0.0.1:{redirect.port}"})
            gw2.enqueue(corpus(5, now, os.path.join(gw2.dir, "in.ndjson")), now)
            gw2.serve()
            lib.wait_for(lambda: len(redirect.requests) >= 2, 10, "two attempts")
            path, body = redirect.requests[0]
            assert path == f"/v21.0/{DEFAULT_PIXEL}/events" and "access_token" not in path
            assert json.loads(body)["access_token"] == DEFAULT_TOKEN
            assert sim.stats()["requests"] == 0
            s = gw2.status()
            assert s["delivered"] == 0 and s["dead"] == 0, s
            assert gw2.stop() == 0
        finally:
            tls.close()
            redirect.close()


def test_enqueue_input_rules_bom_crlf_blank_too_long_and_stdin():
    """enqueue reads as `capid map` does: BOM and CRLF ignored, blank lines
    skipped (not counted), a line over server.max_event_bytes skipped as
    too_large with its size (one more than 1 MiB over it without being held),
    a bad line as invalid_json, and the rest goes on; stdin too."""
    now = int(time.time())
    with Sim() as sim:
        gw = Gateway(sim)
        lines = open(corpus(3, now, os.path.join(gw.dir, "c.ndjson"))).read().splitlines()
        big = json.dumps({"event_name": "purchase", "pad": "x" * 40000})
        huge = json.dumps({"event_name": "purchase", "pad": "x" * 1100000})
        text = ("\ufeff" + lines[0] + "\r\n\n  \t\n" + big + "\n{bad json\n" + huge + "\n"
                + lines[1] + "\r\n" + lines[2])
        path = os.path.join(gw.dir, "edge.ndjson")
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        p = gw.run("enqueue", "--config", gw.config, "--now", str(now), "--verbose", path)
        s = json.loads(p.stdout.strip().splitlines()[-1])
        assert s["lines"] == 6 and s["enqueued"] == 3, s
        assert s["skipped"] == {"invalid_json": 1, "too_large": 2}, s
        notes = [json.loads(x) for x in p.stderr.splitlines() if x.startswith("{")]
        assert [(n["line"], n["skipped"]) for n in notes] == [
            (4, "too_large"), (5, "invalid_json"), (6, "too_large")], notes
        assert notes[0]["detail"] == f"event is {len(big)} bytes, over the limit of 32768", notes
        assert f"line of {len(huge) + 1} bytes" in notes[2]["detail"], notes
        # stdin: the same lines, now duplicates of what is queued
        p = subprocess.run([lib.CAPID, "enqueue", "--config", gw.config, "--now", str(now)],
                           input=text.encode(), capture_output=True, timeout=60)
        s = json.loads(p.stdout.decode().strip().splitlines()[-1])
        assert p.returncode == 0 and s["lines"] == 6 and s["enqueued"] == 0, s
        assert s["skipped"] == {"invalid_json": 1, "too_large": 2, "duplicate": 3}, s


def test_enqueue_small_groups_merge_commits_and_keep_input_order():
    """Groups mapped while a commit waits for its fsync are committed together
    (up to four per transaction): every event once, rows in input order, and
    between n/group/4 and n/group transactions."""
    import sqlite3
    now = int(time.time())
    with Sim() as sim:
        gw = Gateway(sim)
        src = corpus(3000, now, os.path.join(gw.dir, "in.ndjson"))
        want = [e["event_id"] for e in gw.map(src, now)]
        p = gw.run("enqueue", "--config", gw.config, "--now", str(now), "--group", "10", src)
        s = json.loads(p.stdout.strip().splitlines()[-1])
        assert s["lines"] == 3000 and s["enqueued"] == 3000, s
        assert 75 <= s["commits"] <= 300, s
        con = sqlite3.connect(gw.db)
        try:
            got = [r[0] for r in con.execute("SELECT event_id FROM events ORDER BY id")]
        finally:
            con.close()
        assert got == want
        print(f"    {s['commits']} commits for 300 groups of 10")


def test_events_enqueued_while_serving_are_batched_and_delivered():
    now = int(time.time())
    with Sim() as sim:
        gw = Gateway(sim, delivery={"linger_ms": 300, "max_batch": 1000})
        gw.serve()  # empty queue: it polls
        src = corpus(6000, now, os.path.join(gw.dir, "in.ndjson"))
        lines = open(src).read().splitlines()
        for i in range(3):
            part = os.path.join(gw.dir, f"part{i}.ndjson")
            with open(part, "w") as f:
                f.write("\n".join(lines[i * 2000:(i + 1) * 2000]) + "\n")
            assert gw.enqueue(part, now)["enqueued"] == 2000
        gw.wait_status(lambda s: s["delivered"] == 6000, 60, "6000 delivered")
        st = sim.stats()
        assert st["unique_events"] == 6000 and st["duplicates"] == 0, st
        sizes = [r["events"] for r in st["request_log"]]
        # linger: events committed in groups travel in batches of up to max_batch
        assert max(sizes) <= 1000 and len(sizes) <= 24, sizes
        assert gw.stop() == 0
