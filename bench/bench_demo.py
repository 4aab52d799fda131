#!/usr/bin/env python3
"""How long `make demo` takes end to end (goal: under 10 s), over a few runs.

Usage: .venv/bin/python bench/bench_demo.py [RUNS]
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "scripts" / "demo.py"


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    times = []
    for _ in range(runs):
        start = time.monotonic()
        proc = subprocess.run([sys.executable, str(DEMO)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        times.append(time.monotonic() - start)
        if proc.returncode != 0:
            print("demo failed: %s" % proc.stderr.strip(), file=sys.stderr)
            return 1
    print("make demo (scripts/demo.py), %d runs: min %.2f s, median %.2f s, max %.2f s "
          "(goal: under 10 s)" % (runs, min(times), statistics.median(times), max(times)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
