"""The benchmarks under ``bench/`` still run and print their figures.

Each one runs in its shortest form (one repeat, ``--quick``); only that it finishes and
prints each figure it is for is asserted, never a timing (a loaded machine must not fail
the suite). A change that breaks a benchmark (a sandbox root the commands now refuse, a
renamed helper) fails here instead of when someone next measures.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


BENCHMARKS = [
    (["bench_ovmd.py", "--quick"],
     ["cli: ovmd -g KEY", "daemon: start to READY=1", "messages/s stored and deleted",
      "idle CPU", "live: host sent"]),
    (["bench_runner.py", "--repeat", "1"],
     ["fork, enumerate cache", "framework overhead", "module work per module"]),
    (["bench_firstboot.py", "--repeat", "1", "--settle", "0.2"], ["| ol8 |", "| ol9 |"]),
    (["bench_addresses.py", "--quick"],
     ["wake-ups", "daemon (REPORT_ADDRESSES=no): start to READY=1"]),
    (["bench_demo.py", "1"], ["make demo (scripts/demo.py), 1 runs"]),

]


@pytest.mark.parametrize("argv, figures", BENCHMARKS, ids=[argv[0] for argv, _ in BENCHMARKS])
def test_the_benchmark_runs_and_prints_its_figures(argv, figures):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "bench", argv[0])] + argv[1:],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    missing = [figure for figure in figures if figure not in proc.stdout]
    assert not missing, (missing, proc.stdout[-2000:])
    assert "Traceback" not in proc.stderr
