#!/usr/bin/env python3
"""make bench, HTTP ingestion part (issue 5): 4 concurrent clients post
batches of 100 corpus events (tools/gen-corpus, timestamps around now) to
`capid serve` with synchronous=FULL. Reports events/s ingested end to end
(HTTP in, parse, map, durable commit, 202 out: every event answered 202 was
committed) and p50/p99 latency of the 202, medians of RUNS runs, each on a
fresh queue.

Two settings, each printed on its own line:
  - ingestion: the destination's Graph API (the simulator) refuses the
    access token, so delivery pauses after its first request (SPEC 7) and the
    queue is written by ingestion only: the figure of issue 5;
  - with delivery: the simulator (`--no-store`) accepts everything, and the
    delivery loop leases and acknowledges events in the same SQLite file at
    the same time.

The clients are separate processes (python http.client, keep-alive, bodies
built before the clock starts); their CPU use is printed next to capid's so a
client-bound figure can be told apart. Knobs: BENCH_RUNS (3),
BENCH_HTTP_EVENTS (events per run, 200000), BENCH_HTTP_THREADS (server.threads,
4), BENCH_HTTP_CLIENTS (4), BENCH_HTTP_BATCH (100), BENCH_HTTP_MODES
("ingest,deliver")."""
import http.client
import json
import multiprocessing as mp
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("CAPID_BUILD", os.path.join(ROOT, "build"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
EVENTS = int(os.environ.get("BENCH_HTTP_EVENTS", "200000"))
THREADS = int(os.environ.get("BENCH_HTTP_THREADS", "4"))
CLIENTS = int(os.environ.get("BENCH_HTTP_CLIENTS", "4"))
BATCH = int(os.environ.get("BENCH_HTTP_BATCH", "100"))
MODES = os.environ.get("BENCH_HTTP_MODES", "ingest,deliver").split(",")
KEY = "bench-ingest-key-0123456789abcdef"


def wait_file(path, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench ingest: process exited early ({proc.returncode})")
        try:
            with open(path) as f:
                s = f.read().strip()
            if s:
                return int(s)
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    sys.exit(f"bench ingest: no port in {path}")


def client(port, bodies, start, out):
    """Posts its bodies on one keep-alive connection; sends back the
    latencies (s), the first send and last answer times and its CPU time."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.connect()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    hdrs = {"Content-Type": "application/x-ndjson", "Authorization": "Bearer " + KEY}
    lat, bad = [], 0
    start.wait()
    t_first = time.monotonic()
    for b in bodies:
        t0 = time.monotonic()
        c.request("POST", "/events/batch", b, hdrs)
        r = c.getresponse()
        data = r.read()
        lat.append(time.monotonic() - t0)
        if r.status != 202 or json.loads(data)["queued"] != BATCH:
            bad += 1
    t_last = time.monotonic()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out.put((lat, t_first, t_last, ru.ru_utime + ru.ru_stime, bad))


def one_run(lines, workdir, mode):
    os.makedirs(workdir)
    env = dict(os.environ, CAPID_ACCESS_TOKEN="bench-token", CAPID_INGEST_KEY=KEY)
    # "ingest": the simulator accepts another token, so it answers code 190
    # and delivery pauses the destination.
    token = "bench-token" if mode == "deliver" else "another-token"
    sim = subprocess.Popen([os.path.join(BUILD, "capid-graph-sim"), "--listen", "127.0.0.1:0",
                            "--port-file", f"{workdir}/sim.port", "--no-store", "--token",
                            token], stderr=subprocess.DEVNULL)
    graph = f"http://127.0.0.1:{wait_file(f'{workdir}/sim.port', sim)}"
    cfg = {"destinations": [{"name": "bench", "pixel_id": "1234567890",
                             "access_token_env": "CAPID_ACCESS_TOKEN", "graph_url": graph}],
           "sources": [{"name": "bench", "key_env": "CAPID_INGEST_KEY",
                        "destinations": ["bench"]}],
           "queue": {"path": f"{workdir}/queue.db", "synchronous": "full"},
           "server": {"listen": "127.0.0.1:0", "ready_file": f"{workdir}/capid.port",
                      "threads": THREADS}}
    with open(f"{workdir}/capid.yaml", "w") as f:
        json.dump(cfg, f)
    serve = subprocess.Popen([os.path.join(BUILD, "capid"), "serve", "--config",
                              f"{workdir}/capid.yaml"], env=env,
                             stderr=open(f"{workdir}/serve.log", "wb"))
    port = wait_file(f"{workdir}/capid.port", serve)
    # bodies: NDJSON batches, dealt round-robin to the clients
    batches = [("\n".join(lines[i:i + BATCH]) + "\n").encode()
               for i in range(0, len(lines) - BATCH + 1, BATCH)]
    per = [batches[k::CLIENTS] for k in range(CLIENTS)]
    start, out = mp.Event(), mp.Queue()
    procs = [mp.Process(target=client, args=(port, per[k], start, out)) for k in range(CLIENTS)]
    for p in procs:
        p.start()
    time.sleep(0.3)  # connections open, bodies in memory
    start.set()
    res = [out.get() for _ in procs]
    for p in procs:
        p.join()
    serve_cpu = None
    try:
        with open(f"/proc/{serve.pid}/stat") as f:
            st = f.read().rsplit(")", 1)[1].split()
        serve_cpu = (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        pass
    serve.send_signal(signal.SIGTERM)
    serve.wait(60)
    sim.send_signal(signal.SIGTERM)
    sim.wait(30)
    lat = sorted(x for r in res for x in r[0])
    wall = max(r[2] for r in res) - min(r[1] for r in res)
    bad = sum(r[4] for r in res)
    if bad:
        sys.exit(f"bench ingest: {bad} requests not fully queued (see {workdir}/serve.log)")
    n = len(lat) * BATCH
    return {"eps": n / wall, "p50": lat[len(lat) // 2] * 1000,
            "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
            "client_cpu": sum(r[3] for r in res) / wall, "serve_cpu": (serve_cpu or 0) / wall,
            "events": n}


def main():
    now = int(time.time())
    p = subprocess.run([os.path.join(BUILD, "gen-corpus"), str(EVENTS), "--now", str(now)],
                       stdout=subprocess.PIPE, check=True)
    lines = [x for x in p.stdout.decode().splitlines() if x.strip()]
    base = tempfile.mkdtemp(prefix="capid-bench-http-")
    try:
        for mode in MODES:
            runs = [one_run(lines, f"{base}/{mode}{i}", mode) for i in range(RUNS)]

            def med(k):
                return statistics.median(r[k] for r in runs)
            label = ("ingest: HTTP -> queue" if mode == "ingest"
                     else "ingest while delivering")
            print(f"{label}: {med('eps'):,.0f} events/s end to end (202 after a "
                  f"synchronous=FULL commit), 202 latency p50 {med('p50'):.1f} ms, p99 "
                  f"{med('p99'):.1f} ms (median of {RUNS}; {CLIENTS} clients x batches of "
                  f"{BATCH}, {runs[0]['events']} events/run, server.threads {THREADS}; cpu: "
                  f"capid {med('serve_cpu'):.2f} cores, clients {med('client_cpu'):.2f} "
                  f"cores{'; target >= 50,000 events/s, p99 < 50 ms' if mode == 'ingest' else ''})",
                  flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
