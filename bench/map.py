#!/usr/bin/env python3
"""make bench, mapping part (issue 2): generates the deterministic 100,000-event
corpus, runs `capid map` over it RUNS times on one core and prints the median
events/s and the peak RSS of the capid process."""
import os
import resource
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
    rates, rss = [], []
    for _ in range(RUNS):
        t0 = time.monotonic()
        # taskset pins to one core: the figure is "events/s on one core".
        p = subprocess.run(["taskset", "-c", "0", os.path.join(BUILD, "capid"), "map",
                            "--config", os.path.join(ROOT, "bench", "bench.yaml"),
                            "--now", NOW, corpus],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True)
        dt = time.monotonic() - t0
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        rss.append(ru.ru_maxrss / 1024.0)
        lines = p.stdout.count(b"\n")
        if lines < COUNT * 0.9:
            sys.exit(f"bench map: only {lines} of {COUNT} events mapped; corpus or config broken")
        rates.append(COUNT / dt)
    print(f"map: {statistics.median(rates):,.0f} events/s on one core "
          f"(median of {RUNS}; corpus {COUNT} events, {size / COUNT:.0f} B/event avg), "
          f"peak RSS {max(rss):.1f} MB")


if __name__ == "__main__":
    main()
