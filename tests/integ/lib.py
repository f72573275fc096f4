"""Shared helpers for integration tests: build paths, processes on 127.0.0.1
with a port file, JSON over HTTP. Keep module-specific helpers in their own
files (simlib.py, ...)."""
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("CAPID_BUILD", os.path.join(ROOT, "build"))
CAPID = os.path.join(BUILD, "capid")
SIM = os.path.join(BUILD, "capid-graph-sim")
SHARED = os.environ.get("CAPID_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))


def tmpdir(prefix="capid-test-"):
    return tempfile.mkdtemp(prefix=prefix)


def wait_for(pred, timeout=10.0, what="condition"):
    """Polls pred() against a deadline; never sleeps a fixed time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read_port_file(path, timeout=10.0, proc=None):
    def ready():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited early with {proc.returncode}")
        try:
            with open(path) as f:
                s = f.read().strip()
            return int(s) if s else None
        except (OSError, ValueError):
            return None
    return wait_for(ready, timeout, f"port file {path}")


class Proc:
    """A real process whose stderr goes to a log file in its work dir."""

    def __init__(self, argv, cwd=None, env=None, log=None):
        self.log_path = log or os.path.join(tmpdir(), "proc.log")
        self.logf = open(self.log_path, "wb")
        e = dict(os.environ)
        if env:
            e.update(env)
        self.p = subprocess.Popen(argv, cwd=cwd, env=e, stdin=subprocess.DEVNULL,
                                  stdout=self.logf, stderr=subprocess.STDOUT)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.logf.close()
        return self.p.returncode

    def kill9(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.logf.close()


def http(method, url, body=None, headers=None, timeout=10.0):
    """Returns (status, headers, bytes). body may be bytes, str or a JSON value."""
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def http_json(method, url, body=None, headers=None, timeout=10.0):
    st, h, data = http(method, url, body, headers, timeout)
    return st, json.loads(data) if data else None
