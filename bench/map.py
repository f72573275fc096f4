#!/usr/bin/env python3
"""make bench, mapping part (issue 2): generates the deterministic 100,000-event
corpus, runs `capid map` over it RUNS times on one core and prints the median
events/s and the peak RSS of the capid process."""
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("CAPID_BUILD", os.path.join(ROOT, "build"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
COUNT = int(os.environ.get("BENCH_EVENTS", "100000"))
NOW = "1764000000"


def main():
    os.makedirs(os.path.join(BUILD, "bench"), exist_ok=True)
    corpus = os.path.join(BUILD, "bench", f"corpus-{COUNT}.ndjson")
    if not os.path.exists(corpus):
        with open(corpus + ".tmp", "wb") as f:
            subprocess.run([os.path.join(BUILD, "gen-corpus"), str(COUNT), "--now", NOW],
                           stdout=f, check=True)
        os.rename(corpus + ".tmp", corpus)
    size = os.path.getsize(corpus)
    # One checked run: every event must come out (output kept in a file).
    out_path = os.path.join(BUILD, "bench", "map-out.ndjson")
    with open(out_path, "wb") as out:
        subprocess.run([os.path.join(BUILD, "capid"), "map", "--config",
                        os.path.join(ROOT, "bench", "bench.yaml"), "--now", NOW, corpus],
                       stdout=out, stderr=subprocess.DEVNULL, check=True)
    with open(out_path, "rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    os.unlink(out_path)
    if lines < COUNT * 0.9:
        sys.exit(f"bench map: only {lines} of {COUNT} events mapped; corpus or config broken")
    # Timed runs: output to /dev/null, so the figure is the engine, not the disk.
    rates, cpu_rates, rss = [], [], []
    for _ in range(RUNS):
        with open(os.devnull, "wb") as out:
            t0 = time.monotonic()
            # taskset pins capid to one core: the figure is "events/s on one core".
            p = subprocess.Popen(["taskset", "-c", "0", os.path.join(BUILD, "capid"), "map",
                                  "--config", os.path.join(ROOT, "bench", "bench.yaml"),
                                  "--now", NOW, corpus],
                                 stdout=out, stderr=subprocess.DEVNULL)
            _, status, ru = os.wait4(p.pid, 0)  # this child's own rusage
            dt = time.monotonic() - t0
        if status != 0:
            sys.exit(f"bench map: capid map exited with status {status}")
        rss.append(ru.ru_maxrss / 1024.0)
        rates.append(COUNT / dt)
        cpu_rates.append(COUNT / (ru.ru_utime + ru.ru_stime))
    print(f"map: {statistics.median(rates):,.0f} events/s on one core "
          f"(median of {RUNS}, wall clock; {statistics.median(cpu_rates):,.0f} events/s per CPU "
          f"second; corpus {COUNT} events, {size / COUNT:.0f} B/event avg), "
          f"peak RSS {max(rss):.1f} MB; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
