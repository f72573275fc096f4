#!/usr/bin/env python3
"""make bench, delivery part (issue 4): enqueue the deterministic 100,000-event
corpus with `capid enqueue` into a fresh queue (synchronous=FULL), then deliver
it with `capid serve` to the Graph API simulator on loopback. Prints the median
of RUNS runs: enqueue events/s, delivery events/s (serve start to the last
event accepted by the simulator) and the peak RSS (VmHWM) of capid serve.
Targets (issue 4): >= 100,000/s enqueued, >= 50,000/s delivered, RSS < 64 MB.

The corpus is generated for a fixed NOW (as bench/map.py does), so the clock of
capid serve (CAPID_CLOCK_OFFSET, test only) and the simulator's clock are set
to NOW too: the events are then fresh for both."""
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("CAPID_BUILD", os.path.join(ROOT, "build"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
COUNT = int(os.environ.get("BENCH_EVENTS", "100000"))
NOW = 1764000000
TOKEN = "bench-token-not-a-secret"


def corpus_path():
    os.makedirs(os.path.join(BUILD, "bench"), exist_ok=True)
    path = os.path.join(BUILD, "bench", f"corpus-{COUNT}.ndjson")
    if not os.path.exists(path):
        with open(path + ".tmp", "wb") as f:
            subprocess.run([os.path.join(BUILD, "gen-corpus"), str(COUNT), "--now", str(NOW)],
                           stdout=f, check=True)
        os.rename(path + ".tmp", path)
    return path


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.005)
    sys.exit(f"bench deliver: timed out waiting for {what}")


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def vm_hwm_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def cpu_s(pid):
    """User + system CPU seconds of a running process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(corpus):
    d = tempfile.mkdtemp(prefix="capid-bench-")
    offset = NOW - int(time.time())
    env = dict(os.environ, CAPID_ACCESS_TOKEN=TOKEN)
    port_file = os.path.join(d, "port")
    sim = subprocess.Popen([os.path.join(BUILD, "capid-graph-sim"), "--port-file", port_file,
                            "--token", TOKEN, "--no-store", "--quiet", "--log-max", "1000",
                            "--clock-offset", str(offset)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    serve = None
    try:
        port = int(wait_for(lambda: os.path.exists(port_file) and open(port_file).read().strip(),
                            10, "the simulator"))
        base = f"http://127.0.0.1:{port}"
        cfg = {
            "destinations": [{"name": "bench", "pixel_id": "1234567890",
                              "access_token_env": "CAPID_ACCESS_TOKEN", "consent_category": "4",
                              "graph_url": base}],
            "queue": {"path": os.path.join(d, "queue.db"), "synchronous": "full"},
        }
        config = os.path.join(d, "bench.yaml")
        with open(config, "w") as f:
            json.dump(cfg, f)  # JSON is YAML
        t0 = time.monotonic()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        p = subprocess.run([os.path.join(BUILD, "capid"), "enqueue", "--config", config,
                            "--now", str(NOW), corpus], env=env, capture_output=True, text=True)
        t_enq = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_enq = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        if p.returncode != 0:
            sys.exit(f"bench deliver: capid enqueue failed: {p.stderr[-2000:]}")
        n = json.loads(p.stdout.strip().splitlines()[-1])["enqueued"]
        if n < COUNT * 0.9:
            sys.exit(f"bench deliver: only {n} of {COUNT} events enqueued")
        t0 = time.monotonic()
        serve = subprocess.Popen([os.path.join(BUILD, "capid"), "serve", "--config", config,
                                  "--log-level", "warn"],
                                 env=dict(env, CAPID_CLOCK_OFFSET=str(offset)),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: get_json(base + "/_sim/stats?log=0")["events"] >= n, 300,
                 "delivery of every event")
        t_dlv = time.monotonic() - t0
        rss = vm_hwm_mb(serve.pid)
        cpu_serve = cpu_s(serve.pid)
        cpu_sim = cpu_s(sim.pid)
        st = get_json(base + "/_sim/stats?log=0")
        serve.send_signal(signal.SIGTERM)
        if serve.wait(30) != 0:
            sys.exit(f"bench deliver: capid serve exited {serve.returncode}")
        return (n / t_enq, n / t_dlv, rss, st["requests"], st["duplicates"], cpu_serve, cpu_sim,
                cpu_enq)
    finally:
        if serve and serve.poll() is None:
            serve.kill()
        sim.send_signal(signal.SIGTERM)
        sim.wait(30)
        shutil.rmtree(d, ignore_errors=True)


def main():
    corpus = corpus_path()
    runs = [one_run(corpus) for _ in range(RUNS)]
    enq = statistics.median(r[0] for r in runs)
    dlv = statistics.median(r[1] for r in runs)
    rss = statistics.median(r[2] for r in runs)
    print(f"deliver: enqueue {enq:,.0f} events/s (synchronous=full), delivery {dlv:,.0f} "
          f"events/s, capid serve peak RSS {rss:.1f} MB (medians of {RUNS}; {COUNT} events, "
          f"{statistics.median(r[3] for r in runs):.0f} requests, "
          f"{max(r[4] for r in runs)} duplicates; targets: 100,000/s, 50,000/s, 64 MB)")
    cpu = statistics.median(r[5] for r in runs)
    sim = statistics.median(r[6] for r in runs)
    enq_cpu = statistics.median(r[7] for r in runs)
    # Wall-clock rates depend on what else the machine runs; CPU time per
    # event does not, so it is printed too.
    print(f"deliver: CPU per event: capid enqueue {enq_cpu / COUNT * 1e6:.1f} us (all threads), "
          f"capid serve {cpu / COUNT * 1e6:.1f} us, simulator {sim / COUNT * 1e6:.1f} us "
          f"(machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
