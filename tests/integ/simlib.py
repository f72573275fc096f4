"""The Graph API simulator (build/capid-graph-sim) as a real process on
127.0.0.1, for integration tests: start it on port 0 with a port file, send
batches, script faults through its control API, read what it accepted and its
counters, stop it. docs/SIMULATOR.md is the reference for the control API.

    with Sim(tokens=["t0k"], pixels=["1234"]) as sim:
        sim.script(["500", 200], pixel="1234")      # any response specs
        capid_config["graph_url"] = sim.base
        ...
        assert sim.stats()["events"] == 10
"""
import http.client as httpclient
import json
import os
import shutil
import signal
import time
import urllib.parse
import uuid

from lib import SIM, Proc, http, read_port_file, tmpdir, wait_for

DEFAULT_TOKEN = "test-token"
DEFAULT_PIXEL = "1234"
OTHER_PIXEL = "5678"
API_VERSION = "v21.0"
_UNSET = object()


class SimError(AssertionError):
    """A control call the simulator refused (status and its message)."""


class Sim:
    """One simulator process. tokens/pixels: the accepted ones (empty = any).
    clock_now: start with the simulator clock at this epoch second
    (--clock-offset). args: more command-line arguments. env: extra
    environment (for --token-env)."""

    def __init__(self, tokens=(DEFAULT_TOKEN,), pixels=(DEFAULT_PIXEL, OTHER_PIXEL), clock_now=None,
                 args=(), env=None, binary=None, start=True):
        self.dir = tmpdir("capid-sim-")
        self.port_file = os.path.join(self.dir, "port")
        self.argv = [binary or SIM, "--listen", "127.0.0.1:0", "--port-file", self.port_file]
        for t in tokens:
            self.argv += ["--token", t]
        for p in pixels:
            self.argv += ["--pixel", p]
        if clock_now is not None:
            self.argv += ["--clock-offset", str(int(clock_now - time.time()))]
        self.argv += list(args)
        self.env = env
        self.token = tokens[0] if tokens else DEFAULT_TOKEN
        self.proc = None
        self.port = None
        self.base = None
        if start:
            self.start()

    # ---- process ----

    def start(self):
        self.proc = Proc(self.argv, env=self.env, log=os.path.join(self.dir, "sim.log"))
        self.port = read_port_file(self.port_file, proc=self.proc.p)
        self.base = f"http://127.0.0.1:{self.port}"
        return self

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Stops the simulator; returns its exit status."""
        return self.proc.stop(sig, timeout)

    def alive(self):
        return self.proc.p.poll() is None

    def log(self):
        return self.proc.log()

    def __enter__(self):
        return self

    def __exit__(self, etype, *exc):
        """Stops the simulator; when the block succeeded, also checks that it
        exited 0 (a sanitizer report or a crash would not) and removes its
        temporary directory (kept, with sim.log, when something failed)."""
        if self.proc is None:
            return
        rc = self.stop() if self.alive() else self.proc.p.returncode
        if etype is None and rc != 0:
            raise AssertionError(f"simulator exited {rc}:\n{self.log()[-3000:]}")
        if etype is None:
            shutil.rmtree(self.dir, ignore_errors=True)  # kept when something failed

    # ---- the Graph endpoint ----

    def events_url(self, pixel=DEFAULT_PIXEL, version=API_VERSION):
        return f"{self.base}/{version}/{pixel}/events"

    def send(self, data, pixel=DEFAULT_PIXEL, token=_UNSET, encoding="json", extra=None,
             version=API_VERSION, timeout=10.0, raw_body=None, headers=None):
        """POSTs a batch like Meta's tools do. encoding: "json" (a JSON body),
        "form" (urlencoded, data as a JSON string), "multipart" (data as a JSON
        string part, like curl -F) or "form-strings" (urlencoded, data as a
        JSON array of JSON-encoded events, like Meta's Python SDK). Returns
        (status, headers, parsed JSON or the text if not JSON)."""
        token = self.token if token is _UNSET else token
        fields = {}
        if token is not None:
            fields["access_token"] = token
        fields.update(extra or {})
        hdrs = dict(headers or {})
        if raw_body is not None:
            body = raw_body
        elif encoding == "json":
            body = json.dumps({"data": data, **fields})
            hdrs.setdefault("Content-Type", "application/json")
        elif encoding in ("form", "form-strings"):
            if encoding == "form-strings":
                data = [json.dumps(e) for e in data]
            body = urllib.parse.urlencode({"data": json.dumps(data), **fields})
            hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif encoding == "multipart":
            boundary = "----capidsim" + uuid.uuid4().hex
            parts = []
            for k, v in {"data": json.dumps(data), **fields}.items():
                parts.append(f"--{boundary}\r\nContent-Disposition: form-data; "
                             f"name=\"{k}\"\r\n\r\n{v}\r\n")
            body = "".join(parts) + f"--{boundary}--\r\n"
            hdrs.setdefault("Content-Type", f"multipart/form-data; boundary={boundary}")
        else:
            raise ValueError(encoding)
        st, h, raw = http("POST", self.events_url(pixel, version), body, hdrs, timeout)
        try:
            return st, h, json.loads(raw)
        except ValueError:
            return st, h, raw.decode("utf-8", "replace")

    def send_raw(self, method, path, body=b"", headers=None, timeout=10.0):
        """One request on a fresh connection; returns (status, headers, bytes) or
        raises what http.client raises (connection errors, timeouts)."""
        c = httpclient.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    # ---- control API ----

    def control(self, name, body=None, method="POST", query=None):
        url = f"{self.base}/_sim/{name}"
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        st, _, raw = http(method, url, body if body is not None else ({} if method == "POST"
                                                                       else None))
        doc = json.loads(raw) if raw else None
        if st != 200:
            raise SimError(f"/_sim/{name} -> {st}: {doc}")
        return doc

    def script(self, responses, pixel="*", append=False):
        """The next requests to pixel get these responses, in order."""
        return self.control("script", {"pixel": pixel, "responses": list(responses),
                                       "append": append})

    def failure(self, rate, kinds=None, seed=1, pixel="*"):
        """A share of requests fails with one of kinds (weighted), seeded."""
        body = {"pixel": pixel, "rate": rate, "seed": seed}
        if kinds is not None:
            body["kinds"] = list(kinds)
        return self.control("failure", body)

    def latency(self, pixel="*", **spec):
        """ms=N, or min_ms/max_ms (uniform), or mean_ms[/max_ms] (exponential)."""
        return self.control("latency", {"pixel": pixel, **spec})

    def rate_limit(self, rps, pixel="*", burst=None):
        body = {"pixel": pixel, "rps": rps}
        if burst is not None:
            body["burst"] = burst
        return self.control("rate-limit", body)

    def poison(self, path, value, pixel="*", responses=None, **more):
        """Rejects any batch with an event whose path equals value; returns the
        rule id."""
        body = {"pixel": pixel, "path": path, "value": value, **more}
        if responses is not None:
            body["responses"] = list(responses)
        return self.control("poison", body)["id"]

    def clear_poison(self, pixel="*"):
        return self.control("poison", {"pixel": pixel, "clear": True})

    def clock(self, offset=None, now=None, future_tolerance=None):
        body = {k: v for k, v in (("offset", offset), ("now", now),
                                  ("future_tolerance", future_tolerance)) if v is not None}
        return self.control("clock", body)

    def reset(self):
        return self.control("reset")

    def release(self):
        return self.control("release")

    def config(self):
        return self.control("config", method="GET")

    def stats(self, log=True):
        return self.control("stats", method="GET", query=None if log else {"log": "0"})

    def events(self, pixel=None, event_id=None, since=None, limit=None):
        return self.control("events", method="GET",
                            query={"pixel": pixel, "event_id": event_id, "since": since,
                                   "limit": limit})["events"]

    def payloads(self, pixel=None):
        return [e["payload"] for e in self.events(pixel)]

    def wait_stats(self, pred, timeout=10.0, what="simulator stats"):
        """Polls /_sim/stats until pred(stats) holds; returns those stats."""
        return wait_for(lambda: (lambda s: s if pred(s) else None)(self.stats(log=False)),
                        timeout, what)
