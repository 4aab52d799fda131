"""Benchmark: a first boot through the daemon, against the same configuration run directly.

    .venv/bin/python bench/bench_firstboot.py [--repeat N] [--settle SECS] [--root ol8,ol9]

The goal: from the moment the host has written the root password to the moment the guest
has sent ``com.oracle.linux.ovmd.initial-config-status = done``, at most 1.5 times a
direct ``ovm-template-config --root R --stdin configure`` of an identical root on the
Oracle Linux 8 fixture root (its sshd uses RSA host keys, whose generation dominates the
modules' work), and at most 2 times on the Oracle Linux 9 fixture root. Figures are
printed; nothing is asserted.

Each root is a fixture root (``tests/templateconfig/modules/fixtures/roots/ol8``, ``ol9``)
with the eight standard modules registered by ``ovm-chkconfig --add`` and
``INITIAL_CONFIG=yes``, configured with the demo's messages (``scripts/demo.py``'s
MESSAGES). The template's own run filled the enumerate cache (the steady state of a
template that was tested before it was sealed), for both paths alike. Every repetition
uses fresh copies, made outside the timing, and alternates the two paths, so that a
change in the machine's load hits both alike:

* direct: the wall time of ``ovm-template-config --root R --stdin configure``;
* daemon: a fresh development XenStore (``ovmd-xenstored``) and ``ovmd --foreground
  --root R`` (its default quiet period, its sysconfig as shipped); once it is ready the
  host sends every message but the root password, waits ``--settle`` seconds (real
  clients send the password last and usually seconds later), then writes the root
  password; measured from just before that write to the moment the status arrives (a
  XenStore watch on ``from-guest``, set before the write).

Both paths must end with every module ``ok``. Python files are byte-compiled into a
private cache first (``PYTHONPYCACHEPREFIX``), as an RPM install ships them.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, os.path.join(REPO, "scripts")]  # scripts/: demo.py, sandbox_root.py

BIN = os.path.dirname(sys.executable)
STANDARD = ["selinux", "firewall", "datetime", "network", "system", "user", "ssh",
            "authentication"]
TRIGGER = "com.oracle.linux.root-password"
DOMID = 3


def demo_messages() -> List[Tuple[str, str]]:
    import demo

    return list(demo.MESSAGES)


def _summary(samples: List[float]) -> Tuple[float, float]:
    return min(samples), statistics.median(samples)


def _ms(pair: Tuple[float, float]) -> str:
    return "%.0f / %.0f ms" % (pair[0] * 1000, pair[1] * 1000)


def command_env(bytecode_dir: str) -> Dict[str, str]:
    env = dict(os.environ)
    for name in ("OVM_TEMPLATE_CONFIG_NO_FORK", "OVM_TEMPLATE_CONFIG_NO_ENUMERATE_CACHE",
                 "PYTHONDONTWRITEBYTECODE", "OVM_TEMPLATE_CONFIG_ROOT"):
        env.pop(name, None)
    env["PYTHONPYCACHEPREFIX"] = bytecode_dir
    return env


def build_template(fixture: str, root: str) -> None:
    import sandbox_root

    sandbox_root.fixture_root(fixture, root)
    sysconfig = os.path.join(root, "etc", "sysconfig")
    os.makedirs(sysconfig, exist_ok=True)
    shutil.copy2(os.path.join(REPO, "packaging", "sysconfig", "ovmd"), sysconfig)
    with open(os.path.join(sysconfig, "ovmd")) as handle:
        text = handle.read().replace("INITIAL_CONFIG=no", "INITIAL_CONFIG=yes")
    with open(os.path.join(sysconfig, "ovmd"), "w") as handle:
        handle.write(text)
    sandbox_root.install_modules(root, STANDARD)


class Copies:
    """Fresh copies of a template. The module scripts are hard links, so they keep their
    inodes, as in a clone of the template's disk image (the enumerate cache is keyed by
    the scripts' identity); the template's enumerate cache is copied in."""

    SCRIPTS = os.path.join("etc", "template.d", "scripts")
    STATE = os.path.join("var", "lib", "ovm-template-config")

    def __init__(self, template: str, workdir: str) -> None:
        self.template = template
        self.workdir = workdir
        self.cache = None

    def fresh(self, name: str) -> str:
        root = os.path.join(self.workdir, name)
        shutil.rmtree(root, ignore_errors=True)
        scripts = os.path.join(self.template, self.SCRIPTS)
        shutil.copytree(self.template, root, symlinks=True,
                        ignore=lambda d, names: names if d == scripts else [])
        for entry in os.listdir(scripts):
            os.link(os.path.join(scripts, entry), os.path.join(root, self.SCRIPTS, entry))
        if self.cache is not None:
            os.makedirs(os.path.join(root, self.STATE), exist_ok=True)
            shutil.copy2(self.cache, os.path.join(root, self.STATE))
        return root

    def keep_cache(self, root: str) -> None:
        cache = os.path.join(root, self.STATE, "enumerate-cache.json")
        if os.path.exists(cache):
            self.cache = os.path.join(self.workdir, "enumerate-cache.json")
            shutil.copy2(cache, self.cache)


def check_report(root: str, what: str) -> None:
    with open(os.path.join(root, Copies.STATE, "last-run.json")) as handle:
        report = json.load(handle)
    bad = [m["name"] for m in report["modules"] if m["status"] != "ok"]
    if bad or report["status"] != "done":
        raise SystemExit("%s: the run did not succeed (%s): %s" % (what, report["status"], bad))


def direct(root: str, messages: List[Tuple[str, str]], env: Dict[str, str]) -> float:
    argv = [os.path.join(BIN, "ovm-template-config"), "--root", root, "--stdin", "configure"]
    start = time.perf_counter()
    proc = subprocess.run(argv, input=json.dumps(dict(messages)), text=True,
                          capture_output=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit("direct run failed (%d): %s" % (proc.returncode, proc.stderr))
    check_report(root, "direct run")
    return elapsed


def _start(argv: List[str], env: Dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(argv, env=env, **kwargs)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def through_daemon(root: str, messages: List[Tuple[str, str]], env: Dict[str, str],
                   settle: float) -> float:
    from ovmd.firstboot.contract import STATUS_KEY
    from ovmd.vmmessage import HostChannel
    from ovmd.xenstore import XenStoreClient

    sockets = tempfile.mkdtemp(prefix="bfb-", dir="/tmp")
    processes = []
    try:
        xenstored = _start([os.path.join(BIN, "ovmd-xenstored"), "--socket-dir", sockets,
                            "--domain", "%d:bench" % DOMID, "--quiet"], env,
                           stdout=subprocess.PIPE, text=True)
        processes.append(xenstored)
        if xenstored.stdout.readline().strip() != "ready":
            raise SystemExit("ovmd-xenstored did not start")
        notify_path = os.path.join(sockets, "notify")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        notify.settimeout(30)
        daemon = _start([os.path.join(BIN, "ovmd"), "--foreground", "--root", root,
                         "--xenstore", os.path.join(sockets, "domain", str(DOMID)), "-d", "0"],
                        dict(env, NOTIFY_SOCKET=notify_path))
        processes.append(daemon)
        try:
            while b"READY=1" not in notify.recv(4096).split(b"\n"):
                pass
        finally:
            notify.close()
        dom0 = XenStoreClient.open(os.path.join(sockets, "socket"))
        try:
            host = HostChannel(dom0, DOMID)
            host.send([(k, v) for k, v in messages if k != TRIGGER])
            time.sleep(settle)
            watch = "%s/from-guest/last-write" % host.base
            dom0.watch(watch, "bench")
            dom0.wait_event(5)  # the watch's first event
            start = time.perf_counter()
            host.send([(k, v) for k, v in messages if k == TRIGGER])
            while STATUS_KEY not in host.received():
                if not dom0.wait_event(120):
                    raise SystemExit("no %s within 120 s" % STATUS_KEY)
                dom0.pending_events()
            elapsed = time.perf_counter() - start
            status = host.received()[STATUS_KEY]
        finally:
            dom0.close()
        if status != "done":
            raise SystemExit("the daemon's first boot ended %r" % status)
        check_report(root, "first boot through the daemon")
        return elapsed
    finally:
        for proc in reversed(processes):
            _stop(proc)
        shutil.rmtree(sockets, ignore_errors=True)


def bench_root(fixture: str, workdir: str, env: Dict[str, str], repeat: int,
               settle: float) -> Dict[str, Tuple[float, float]]:
    messages = demo_messages()
    template = os.path.join(workdir, fixture + "-template")
    build_template(fixture, template)
    copies = Copies(template, workdir)
    warm = copies.fresh(fixture + "-warm")
    direct(warm, messages, env)  # byte-code, and the enumerate cache the template keeps
    copies.keep_cache(warm)
    directs, daemons = [], []
    for _ in range(repeat):
        directs.append(direct(copies.fresh(fixture + "-direct"), messages, env))
        daemons.append(through_daemon(copies.fresh(fixture + "-daemon"), messages, env,
                                      settle))
    return {"direct": _summary(directs), "daemon": _summary(daemons)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds between the other messages and the root password")
    parser.add_argument("--root", default="ol8,ol9", help="fixture roots, comma-separated")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the modules need root to configure a sandbox root")
    workdir = tempfile.mkdtemp(prefix="bench-firstboot-")
    try:
        env = command_env(os.path.join(workdir, "pycache"))
        results = {fixture: bench_root(fixture, workdir, env, args.repeat, args.settle)
                   for fixture in args.root.split(",")}
        print("first boot: min / median of %d runs, %d CPUs, load average %.1f, settle %g s"
              % (args.repeat, os.cpu_count() or 0, os.getloadavg()[0], args.settle))
        print()
        print("| root | direct `ovm-template-config --stdin configure` | root password "
              "written -> `done` | ratio (min, median) |")
        print("|---|---|---|---|")
        for fixture, figures in results.items():
            d, f = figures["direct"], figures["daemon"]
            print("| %s | %s | %s | %.2f x, %.2f x |" % (fixture, _ms(d), _ms(f),
                                                       f[0] / d[0], f[1] / d[1]))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
