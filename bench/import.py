#!/usr/bin/env python3
"""make bench, import part (issue 6): generates a deterministic CSV of
BENCH_IMPORT_ROWS (1,000,000) conversion rows (unindexed item layout: one row
per item, 1-3 items per order, quoted fields, UTF-8), then runs `capid import`
into a fresh queue with synchronous=FULL, BENCH_IMPORT_RUNS (3) times, and
prints the median rows/s (wall clock, the hash pass included) and the median
peak RSS (ru_maxrss of the capid process alone, from wait4).
Target (issue 6): >= 100,000 rows/s, peak RSS < 64 MB."""
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("CAPID_BUILD", os.path.join(ROOT, "build"))
RUNS = int(os.environ.get("BENCH_IMPORT_RUNS", "3"))
ROWS = int(os.environ.get("BENCH_IMPORT_ROWS", "1000000"))
NOW = 1764000000

HEADER = ("id,value,currency,user.email,user.phone,user.firstname,user.lastname,user.city,"
          "user.zipcode,user.country,user.consent_categories,context.event_timestamp,"
          "items.product.id,items.product.name,items.quantity,items.product.price\n")
FIRST = ["Marie", "Jean", "Zoë", "José", "Anna", "Lukas", "Chloé", "Noah"]
LAST = ["Martin", "Müller", "O'Brien", "Dubois", "García", "Rossi", '"""The"" Rock"', "Nguyen"]
CITY = ["Paris", '"Saint-Denis, Réunion"', "München", "Lyon", "Köln", '"Washington, D.C."',
        "Lille", "Nantes"]
COUNTRY = ["FR", "DE", "US", "IT", "ES", "BE", "fr", "Germany"]
CONSENT = ["1|3", "1|2|3|4", "3", " 1 | 3 "]
CURRENCY = ["EUR", "USD", "GBP"]
PRODUCT = ["Lamp", '"Mug, large"', "Chair", "Desk", "Sofa", "Rug"]


def generate(path, rows):
    """Deterministic conversions: order ids T00000000.., timestamps within the
    last 60 days of NOW (physical_store events may be 62 days old)."""
    rnd = random.Random(42)
    out = [HEADER]
    n = ev = 0
    with open(path + ".tmp", "w", encoding="utf-8", newline="") as f:
        while n < rows:
            r = rnd.random()
            items = 1 if r < 0.75 else 2 if r < 0.92 else 3
            cents = 500 + rnd.randrange(50000)
            ts = (NOW - 60 * 86400 + ev * 5) * 1000 if ev * 5 < 60 * 86400 else (NOW - 3600) * 1000
            root = (f"T{ev:08d},{cents // 100}.{cents % 100:02d},{rnd.choice(CURRENCY)},"
                    f"user{ev}@example.com,+33 6 {rnd.randrange(100):02d} {rnd.randrange(100):02d}"
                    f" {rnd.randrange(100):02d} {rnd.randrange(100):02d},{rnd.choice(FIRST)},"
                    f"{rnd.choice(LAST)},{rnd.choice(CITY)},{10000 + rnd.randrange(89999)},"
                    f"{rnd.choice(COUNTRY)},{rnd.choice(CONSENT)},{ts}")
            for _ in range(items):
                if n >= rows:
                    break
                out.append(f"{root},SKU-{rnd.randrange(100000):05d},{rnd.choice(PRODUCT)},"
                           f"{1 + rnd.randrange(4)},{rnd.randrange(200)}.{rnd.randrange(100):02d}\n")
                n += 1
            ev += 1
            if len(out) >= 10000:
                f.write("".join(out))
                out = []
        f.write("".join(out))
    os.rename(path + ".tmp", path)


def run_once(csv, work):
    db = os.path.join(work, "queue.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    cfg = os.path.join(work, "capid.yaml")
    with open(cfg, "w") as f:
        f.write("destinations:\n  - name: bench\n    pixel_id: \"1234567890\"\n"
                "    access_token_env: CAPID_ACCESS_TOKEN\n"
                f"queue:\n  path: {db}\n  synchronous: full\n")
    t0 = time.monotonic()
    p = subprocess.Popen([os.path.join(BUILD, "capid"), "import", "--config", cfg, "--now",
                          str(NOW), "--report", os.path.join(work, "report.json"), csv],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.monotonic() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"bench import: capid import failed: {err[-2000:]}")
    return ROWS / dt, ru.ru_maxrss / 1024.0, err.strip().splitlines()[-1]


def main():
    os.makedirs(os.path.join(BUILD, "bench"), exist_ok=True)
    csv = os.path.join(BUILD, "bench", f"import-{ROWS}.csv")
    if not os.path.exists(csv):
        generate(csv, ROWS)
    work = tempfile.mkdtemp(prefix="capid-bench-import-")
    try:
        rates, rss = [], []
        for _ in range(RUNS):
            rate, mb, line = run_once(csv, work)
            rates.append(rate)
            rss.append(mb)
        size = os.path.getsize(csv)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"import: {statistics.median(rates):,.0f} rows/s (median of {RUNS}; {ROWS:,} CSV rows, "
          f"{size / 1e6:.0f} MB, synchronous=FULL; runs {', '.join(f'{r:,.0f}' for r in rates)}), "
          f"peak RSS {statistics.median(rss):.1f} MB (max {max(rss):.1f}); target >= 100,000 "
          f"rows/s, < 64 MB")
    print(f"  last run: {line}")


if __name__ == "__main__":
    main()
