#!/usr/bin/env python3
"""Integration test runner: real capid binaries and the Graph API simulator on
127.0.0.1. Discovers tests/integ/test_*.py, runs every function named test_*,
prints one line per failure and ends with `N passed, N failed`.
Usage: run.py [SUBSTRING]  (only tests whose module or name contain it)."""
import importlib.util
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main():
    filt = sys.argv[1] if len(sys.argv) > 1 else None
    passed = failed = 0
    for fn in sorted(os.listdir(HERE)):
        if not (fn.startswith("test_") and fn.endswith(".py")):
            continue
        spec = importlib.util.spec_from_file_location(fn[:-3], os.path.join(HERE, fn))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for name in sorted(dir(mod)):
            if not name.startswith("test_"):
                continue
            full = f"{fn[:-3]}.{name}"
            if filt and filt not in full:
                continue
            t0 = time.monotonic()
            try:
                getattr(mod, name)()
            except Exception:  # noqa: BLE001 - every failure is reported
                failed += 1
                print(f"FAIL {full}\n{traceback.format_exc()}", flush=True)
                continue
            passed += 1
            print(f"ok {full} ({time.monotonic() - t0:.2f}s)", flush=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
