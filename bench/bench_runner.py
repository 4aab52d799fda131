"""Benchmark: the runner's framework overhead, with no-op modules and with the eight standard ones.

    .venv/bin/python bench/bench_runner.py [--repeat N] [--no-bytecode]

The goal: a ``configure`` run of the eight standard modules spends at most
100 ms on the framework (everything except the modules' own work), and each additional
no-op Python module at most 5 ms. Figures are printed; nothing is asserted.

Part 1, no-op modules. A sandbox root with N no-op modules written like Oracle's
(``templateconfig.cli.main``, ``#!/usr/bin/env python``); measured for N = 8 and 16:

* the whole ``ovm-template-config --stdin configure`` command (interpreter start-up, CLI,
  enumeration, validation, the run lock, the run, report, state and log files), and
* ``Runner.run`` in-process (what the command spends beyond its own start-up),

with forked children and with a fresh interpreter per module
(``OVM_TEMPLATE_CONFIG_NO_FORK=1``), in the steady state (the enumerate cache filled by a
previous run) and with a cold cache (``OVM_TEMPLATE_CONFIG_NO_ENUMERATE_CACHE=1``, as on
a first boot whose template never ran the modules). No-op modules do no work, so all of
it is overhead; "per extra module" is (16 - 8) / 8.

Part 2, the eight standard modules (selinux ... authentication) on a fresh copy of the
Oracle Linux 9 fixture root (``tests/templateconfig/modules/fixtures/roots/ol9``,
registered with ``ovm-chkconfig --add``) with the demo's messages (``scripts/demo.py``'s
MESSAGES). Each
repetition configures a fresh copy (copied outside the timing) and measures

* total: the wall time of the whole ``ovm-template-config --root R --stdin --json
  configure`` command;
* module work: the time each module's handler takes -- ``SPEC.run("configure", params)``,
  the code behind the script's ``do_configure`` (its own validation and its changes) --
  measured by a separate probe process on another fresh copy of the same root, with the
  same params, chained in run order, with the environment the runner gives a module: the
  probe imports what the runner preloads, then runs each handler in a forked child (as
  the runner does, so no module profits from what another one cached) that times the
  handler alone. The imports are outside the timing: the runner does them once, so they
  are framework cost, not the module's. This is the strict definition: all the rest
  (start-up, imports, enumeration, validation, forks, pipes, JSON, report, state, log)
  is counted as overhead;
* overhead = total - module work (minimum minus minimum, median minus median); and, for
  information, the runner's own per-module figure (from the run report: from the moment
  the module's process gets its input to its exit) summed, minus the module work: the
  per-module process cost. The runner forks and sets up each module's process ahead,
  while the previous module runs, so that part is not in this figure (it is in the
  overhead as far as it lengthens the run).

Also printed: what the process title of a forked module (``ps`` shows it as ``python
SCRIPT TARGET``) costs per module, in the runner and in the child.

Python files are byte-compiled first (as an RPM install does), into a private cache
(``PYTHONPYCACHEPREFIX``) so the source tree stays clean; ``--no-bytecode`` measures the
development set-up (``PYTHONDONTWRITEBYTECODE``) instead. Minimum and median of --repeat
runs: the minimum is the least disturbed by other load.
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
from typing import Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, os.path.join(REPO, "scripts")]  # scripts/: demo.py, sandbox_root.py

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

STANDARD = ["selinux", "firewall", "datetime", "network", "system", "user", "ssh",
            "authentication"]
BIN = os.path.dirname(sys.executable)


def _summary(samples: List[float]) -> Tuple[float, float]:
    """(minimum, median)."""
    return min(samples), statistics.median(samples)


def _ms(pair: Tuple[float, float]) -> str:
    return "%.1f / %.1f ms" % (pair[0] * 1000, pair[1] * 1000)


def demo_messages() -> Dict[str, str]:
    import demo

    return dict(demo.MESSAGES)


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


def build_standard(root: str) -> None:
    """The OL9 fixture (a real guest's modes) with the eight standard modules registered."""
    import sandbox_root

    sandbox_root.fixture_root("ol9", root)
    sandbox_root.install_modules(root, STANDARD)


def time_process_title(script: str, count: int = 20000) -> Tuple[float, float, float]:
    """Seconds per module of the process title (templateconfig.run.proctitle): what the
    parent does before each fork (read the #! line, build the title); what the child
    does (write it into its argument area, set comm), measured in a forked child, for a
    title that fits the runner's argument area and for one that goes on into the
    environment area."""
    from templateconfig.run import proctitle
    from templateconfig.run.scripts import read_shebang

    argv = [script, "configure"]
    started = time.perf_counter()
    for _ in range(count):
        proctitle.prepare(read_shebang(script), argv)
    parent = (time.perf_counter() - started) / count
    area = proctitle.argument_area()
    assert area is not None
    short = proctitle.prepare(["/usr/bin/env", "python3"], ["s", "configure"])
    long = proctitle.prepare(["/usr/bin/env", "python3"],
                             ["/x" * (area.arg_end - area.arg_start), "configure"])

    def in_child(title) -> float:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            started = time.perf_counter()
            for _ in range(count):
                proctitle.apply(title)
            os.write(write, repr((time.perf_counter() - started) / count).encode())
            os._exit(0)
        os.close(write)
        seconds = float(os.read(read, 100) or "nan")
        os.close(read)
        os.waitpid(pid, 0)
        return seconds

    return parent, in_child(short), in_child(long)


def command_env(bytecode_dir, fork: bool = True, cache: bool = True) -> Dict[str, str]:
    env = dict(os.environ)
    for name in ("OVM_TEMPLATE_CONFIG_NO_FORK", "OVM_TEMPLATE_CONFIG_NO_ENUMERATE_CACHE"):
        env.pop(name, None)
    if not fork:
        env["OVM_TEMPLATE_CONFIG_NO_FORK"] = "1"
    if not cache:
        env["OVM_TEMPLATE_CONFIG_NO_ENUMERATE_CACHE"] = "1"
    if bytecode_dir:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = bytecode_dir
    return env


def run_command(root: str, params: Dict[str, str], env: Dict[str, str],
                json_report: bool = False) -> Tuple[float, subprocess.CompletedProcess]:
    argv = [os.path.join(BIN, "ovm-template-config"), "--root", root, "--stdin"]
    if json_report:
        argv.append("--json")
    argv.append("configure")
    start = time.perf_counter()
    proc = subprocess.run(argv, input=json.dumps(params), text=True, capture_output=True,
                          env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit("benchmark run failed (%d): %s" % (proc.returncode, proc.stderr))
    return elapsed, proc


def time_cli(roots: Dict[int, str], env: Dict[str, str],
             repeat: int) -> Dict[int, Tuple[float, float]]:
    """The whole command on each root; the roots alternate, so that a change in the
    machine's load hits all of them alike (the per-module figure is a difference)."""
    samples: Dict[int, List[float]] = {n: [] for n in roots}
    for root in roots.values():
        run_command(root, PARAMS, env)  # warm-up: byte-code and (if enabled) the cache
    for _ in range(repeat):
        for n, root in roots.items():
            samples[n].append(run_command(root, PARAMS, env)[0])
    return {n: _summary(values) for n, values in samples.items()}


def time_runner(paths, fork: bool, repeat: int) -> Tuple[float, float]:
    from templateconfig.run.runner import Runner

    Runner(paths, "configure", fork=fork).run(PARAMS)  # warm-up
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = Runner(paths, "configure", fork=fork).run(PARAMS)
        samples.append(time.perf_counter() - start)
        assert result.ok
    return _summary(samples)


def time_python_startup(env: Dict[str, str], repeat: int) -> Tuple[float, float]:
    samples = []
    for _ in range(repeat + 1):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import templateconfig.cli"], check=True, env=env)
        samples.append(time.perf_counter() - start)
    return _summary(samples[1:])


# --- part 2: the standard modules --------------------------------------------------------------

def probe_work(root: str, params_file: str) -> None:
    """(In a child process.) Time each standard module's handler on ``root``; print JSON.

    Every module's code is imported first (as the runner preloads it); then each handler
    runs in a forked child, as under the runner, so that no module profits from caches
    another one warmed; the child times the handler and sends the time and the resulting
    params back on a pipe.
    """
    from ovmd.paths import ROOT_ENV, Paths
    from templateconfig import registry
    from templateconfig.run.contract import ACTIONS_ENV
    from templateconfig.run.preload import preload

    with open(params_file) as handle:
        params = json.load(handle)
    preload()
    os.environ[ROOT_ENV] = root
    os.chdir("/")
    modules = registry.enabled_modules(Paths(root), "configure")
    journal_dir = tempfile.mkdtemp(prefix="bench-journal-")
    seconds = {}
    try:
        for index, (_priority, name, _path) in enumerate(modules):
            spec = __import__("templateconfig.modules.%s" % name, fromlist=["SPEC"]).SPEC
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    os.close(read_end)
                    os.environ[ACTIONS_ENV] = os.path.join(journal_dir, "%02d-%s.jsonl"
                                                           % (index, name))
                    start = time.perf_counter()
                    result = spec.run("configure", dict(params))
                    elapsed = time.perf_counter() - start
                    os.write(write_end, json.dumps([elapsed, result]).encode())
                    code = 0
                finally:
                    os._exit(code)
            os.close(write_end)
            with os.fdopen(read_end, "rb") as pipe:
                data = pipe.read()
            _, status = os.waitpid(pid, 0)
            if status != 0 or not data:
                raise SystemExit("module %s failed in the work probe" % name)
            seconds[name], params = json.loads(data)
    finally:
        shutil.rmtree(journal_dir, ignore_errors=True)
    print(json.dumps(seconds))


def bench_standard(workdir: str, env: Dict[str, str], repeat: int) -> Dict[str, object]:
    from ovmd.runreport import ModuleStatus

    template = os.path.join(workdir, "ol9-template")
    build_standard(template)
    messages = demo_messages()
    params_file = os.path.join(workdir, "params.json")
    with open(params_file, "w") as handle:
        json.dump(messages, handle)

    scripts = os.path.join("etc", "template.d", "scripts")

    def fresh(name: str) -> str:
        """A copy of the template. The module scripts are hard links, so they keep their
        inodes, as they do in a clone of the template's disk image (the enumerate cache
        is keyed by the scripts' mtime, size and inode)."""
        root = os.path.join(workdir, name)
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(template, root, symlinks=True,
                        ignore=lambda d, names: names if d == os.path.join(template, scripts)
                        else [])
        for entry in os.listdir(os.path.join(template, scripts)):
            os.link(os.path.join(template, scripts, entry), os.path.join(root, scripts, entry))
        return root

    # the template's own run fills the enumerate cache (steady state), as a template
    # builder's test run or a previous boot would; a cold run is measured separately
    run_command(fresh("warm"), messages, env)
    shutil.copytree(os.path.join(workdir, "warm", "var", "lib", "ovm-template-config"),
                    os.path.join(workdir, "cache"))
    totals, works, runner_module_sums, per_module = [], [], [], {n: [] for n in STANDARD}
    cold = []
    for index in range(repeat):
        root = fresh("run")
        cache = os.path.join(workdir, "cache", "enumerate-cache.json")
        if os.path.exists(cache):  # (older runners have none: the bench runs there too)
            cache_dir = os.path.join(root, "var", "lib", "ovm-template-config")
            os.makedirs(cache_dir, exist_ok=True)
            shutil.copy2(cache, cache_dir)
        elapsed, proc = run_command(root, messages, env, json_report=True)
        report = json.loads(proc.stdout)
        bad = [m["name"] for m in report["modules"] if m["status"] != ModuleStatus.OK]
        if bad:
            raise SystemExit("modules failed in the benchmark: %s" % bad)
        totals.append(elapsed)
        runner_module_sums.append(sum(m["seconds"] for m in report["modules"]))
        probe_root = fresh("probe")
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--probe-work",
                              probe_root, params_file], env=env, check=True,
                             capture_output=True, text=True).stdout
        work = json.loads(out)
        works.append(sum(work.values()))
        for name, value in work.items():
            per_module[name].append(value)
        cold_env = dict(env, OVM_TEMPLATE_CONFIG_NO_ENUMERATE_CACHE="1")
        cold.append(run_command(fresh("cold"), messages, cold_env)[0])
    def minus(a: List[float], b: List[float]) -> Tuple[float, float]:
        """(min a - min b, median a - median b): each side as little disturbed as it
        gets (a difference of single noisy samples would not be)."""
        return min(a) - min(b), statistics.median(a) - statistics.median(b)

    return {"total": _summary(totals), "work": _summary(works),
            "overhead": minus(totals, works), "process": minus(runner_module_sums, works),
            "cold_total": _summary(cold), "cold_overhead": minus(cold, works),
            "per_module": {n: _summary(v) for n, v in per_module.items() if v}}


def main() -> None:
    if sys.argv[1:2] == ["--probe-work"]:
        probe_work(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--no-bytecode", action="store_true",
                        help="do not byte-compile (PYTHONDONTWRITEBYTECODE, as in development)")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-runner-")
    try:
        bytecode = None if args.no_bytecode else os.path.join(workdir, "pycache")
        env = command_env(bytecode)
        trees = {count: build(os.path.join(workdir, str(count)), count) for count in (8, 16)}
        rows = []
        for fork, cache in ((True, True), (True, False), (False, True)):
            mode_env = command_env(bytecode, fork=fork, cache=cache)
            cli = time_cli({n: p.root for n, p in trees.items()}, mode_env, args.repeat)
            if cache:
                os.environ.pop("OVM_TEMPLATE_CONFIG_NO_ENUMERATE_CACHE", None)
            else:
                os.environ["OVM_TEMPLATE_CONFIG_NO_ENUMERATE_CACHE"] = "1"
            run = {n: time_runner(p, fork, args.repeat) for n, p in trees.items()}
            os.environ.pop("OVM_TEMPLATE_CONFIG_NO_ENUMERATE_CACHE", None)
            mode = ("fork" if fork else "fresh interpreter") + (
                ", enumerate cache" if cache else ", no enumerate cache")
            rows.append((mode, cli, run))
        startup = time_python_startup(env, args.repeat)
        title = time_process_title(os.path.join(REPO, "template.d", "scripts", "ssh"))
        standard = bench_standard(workdir, env, args.repeat)
        print("ovm-template-config: min / median of %d runs, %d CPUs, load average %.1f, %s"
              % (args.repeat, os.cpu_count() or 0, os.getloadavg()[0],
                 "from source (no byte-code)" if args.no_bytecode else "byte-compiled"))
        print("one fresh `python -c 'import templateconfig.cli'`: %s" % _ms(startup))
        print()
        print("No-op Python modules (all of it is framework overhead):")
        print()
        print("| mode | whole command, 8 modules | per extra module (command) "
              "| Runner.run, 8 modules | per extra module (Runner.run) |")
        print("|---|---|---|---|---|")
        for mode, cli, run in rows:
            print("| %s | %s | %.2f / %.2f ms | %s | %.2f / %.2f ms |" % (
                mode, _ms(cli[8]), (cli[16][0] - cli[8][0]) / 8 * 1000,
                (cli[16][1] - cli[8][1]) / 8 * 1000, _ms(run[8]),
                (run[16][0] - run[8][0]) / 8 * 1000, (run[16][1] - run[8][1]) / 8 * 1000))
        print()
        print("process title of a forked module: %.1f us in the runner, %.1f us in the child "
              "(%.1f us when it is longer than the runner's command line: %d variables "
              "copied off the environment area)"
              % (title[0] * 1e6, title[1] * 1e6, title[2] * 1e6, len(os.environ)))
        print()
        print("The eight standard modules on a fresh OL9 root with the demo's messages:")
        print()
        print("| figure | min / median |")
        print("|---|---|")
        print("| total (whole command, enumerate cache filled) | %s |" % _ms(standard["total"]))
        print("| module work (sum of the handlers) | %s |" % _ms(standard["work"]))
        print("| **framework overhead** (total - work) | %s |" % _ms(standard["overhead"]))
        print("| of which per-module process cost (report seconds - work, summed) | %s |"
              % _ms(standard["process"]))
        print("| total, cold enumerate cache (first run) | %s |" % _ms(standard["cold_total"]))
        print("| framework overhead, cold enumerate cache | %s |" % _ms(standard["cold_overhead"]))
        print()
        print("module work per module: " + ", ".join(
            "%s %.1f" % (name, value[1] * 1000) for name, value in standard["per_module"].items())
            + " ms (median)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
