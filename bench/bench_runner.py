"""Benchmark: the runner's fixed overhead with no-op Python modules, fork vs fresh interpreter.

    .venv/bin/python bench/bench_runner.py [--repeat N]

Builds a sandbox root with N no-op modules written like Oracle's (``templateconfig.cli.main``,
``#!/usr/bin/env python``), then measures

* the whole ``ovm-template-config --stdin configure`` command (interpreter start-up, CLI,
  enumeration of every module, validation, the run, report, state and log files), and
* ``Runner.run`` in-process (what the daemon's child spends beyond its own start-up),

for 8 modules and for 16, with forked children and with a fresh interpreter per module
(``OVM_TEMPLATE_CONFIG_NO_FORK=1``). No-op modules do no work of their own, so the times
are the framework's overhead; "per extra module" is (16 - 8) / 8. Medians of --repeat runs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

NOOP = '''#!/usr/bin/env python
### BEGIN PLUGIN INFO
# name: {name}
# configure: {priority}
# description: no-op benchmark module
### END PLUGIN INFO
try:
    import json
except ImportError:
    import simplejson as json
from templateconfig.cli import main


def do_enumerate(target):
    return json.dumps([{{"key": "com.example.{name}", "description": "unused"}}])


def do_configure(param):
    return param


if __name__ == "__main__":
    main(do_enumerate, {{"configure": do_configure}})
'''

PARAMS = {"com.oracle.linux.root-password": "bench-password",
          "com.oracle.linux.network.hostname": "bench"}


def _summary(samples):
    """(minimum, median): the minimum is the least disturbed by other load."""
    return min(samples), statistics.median(samples)


def build(root: str, count: int):
    from ovmd.paths import Paths
    from templateconfig import registry

    paths = Paths(root)
    os.makedirs(paths.scripts_dir)
    for index in range(count):
        name = "noop%02d" % index
        path = os.path.join(paths.scripts_dir, name)
        with open(path, "w") as handle:
            handle.write(NOOP.format(name=name, priority=10 + index))
        os.chmod(path, 0o755)
        registry.add(paths, name)
    return paths


def time_cli(root: str, fork: bool, repeat: int) -> float:
    command = os.path.join(os.path.dirname(sys.executable), "ovm-template-config")
    env = dict(os.environ)
    env.pop("OVM_TEMPLATE_CONFIG_NO_FORK", None)
    if not fork:
        env["OVM_TEMPLATE_CONFIG_NO_FORK"] = "1"
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run([command, "--root", root, "--stdin", "configure"],
                              input=json.dumps(PARAMS), text=True, capture_output=True, env=env)
        samples.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit("benchmark run failed: %s" % proc.stderr)
    return _summary(samples)


def time_runner(paths, fork: bool, repeat: int) -> float:
    from templateconfig.runner import Runner

    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = Runner(paths, "configure", fork=fork).run(PARAMS)
        samples.append(time.perf_counter() - start)
        assert result.ok
    return _summary(samples)


def time_python_startup(repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import templateconfig.cli"], check=True)
        samples.append(time.perf_counter() - start)
    return _summary(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-runner-")
    try:
        trees = {count: build(os.path.join(workdir, str(count)), count) for count in (8, 16)}
        rows = []
        for fork in (True, False):
            cli = {n: time_cli(p.root, fork, args.repeat) for n, p in trees.items()}
            run = {n: time_runner(p, fork, args.repeat) for n, p in trees.items()}
            rows.append(("fork" if fork else "fresh interpreter", cli, run))
        startup = time_python_startup(args.repeat)
        print("ovm-template-config with no-op Python modules: min / median of %d runs, "
              "%d CPUs, load average %.1f" % (args.repeat, os.cpu_count() or 0,
                                              os.getloadavg()[0]))
        print("one fresh `python -c 'import templateconfig.cli'`: %.1f / %.1f ms"
              % (startup[0] * 1000, startup[1] * 1000))
        print()
        print("| mode | whole command, 8 modules | Runner.run, 8 modules | per extra module |")
        print("|---|---|---|---|")
        for mode, cli, run in rows:
            print("| %s | %.1f / %.1f ms | %.1f / %.1f ms | %.2f / %.2f ms |" % (
                mode, cli[8][0] * 1000, cli[8][1] * 1000, run[8][0] * 1000, run[8][1] * 1000,
                (run[16][0] - run[8][0]) / 8 * 1000, (run[16][1] - run[8][1]) / 8 * 1000))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
