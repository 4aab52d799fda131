"""Benchmark of the address reporter; prints figures (and the targets they answer).

    sudo .venv/bin/python bench/bench_addresses.py [--quick]

The daemon runs in a network namespace of its own with two veth NICs listed as vifs in
a development XenStore (as the tests set it up: tests/ovmd/daemon/guestnet.py). Printed:

* change -> host's view latency (target: within a second), for an address added and
  removed with ``ip addr``: from just before ``ip`` runs (so ``ip``'s own run time is
  included) until dom0 sees ``attr/vif`` and, separately, the
  ``com.oracle.linux.network.ipaddrs`` message change (both watched, no polling);
* wake-ups while idle (voluntary context switches of the daemon over a few seconds;
  target 0), with the reporter on and with REPORT_ADDRESSES=no;
* start to READY=1 (target 150 ms) and RSS after start (target 20 MB), reporter on and off.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

from bench_ovmd import Daemon, Server, env_compiled

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests", "ovmd", "daemon")]

from guestnet import GuestNetwork, HostView, context_switches, wait_idle  # noqa: E402

from ovmd.xenstore import XenStoreClient  # noqa: E402

GUEST = 1


def timed_change(net: GuestNetwork, view: HostView, args, xen_done, message_done):
    """Seconds from just before ``ip ARGS`` until attr/vif, and until the message, show
    the change."""
    tokens = {view.attr_vif: "bench-attr", view.last_write: "bench-sent"}
    for path, token in tokens.items():
        view.dom0.watch(path, token)
    view.dom0.pending_events()
    seen = {}
    started = time.perf_counter()
    net.guest(*args)
    try:
        while len(seen) < 2:
            view.dom0.pending_events()
            now = time.perf_counter()
            if "xen" not in seen and xen_done(view.xen()):
                seen["xen"] = now - started
            if "message" not in seen and message_done(view.oracle()):
                seen["message"] = now - started
            if len(seen) < 2 and view.dom0.wait_event(30) is None:
                raise SystemExit("the host's view did not follow %s within 30 s" % (args,))
    finally:
        for path, token in tokens.items():
            view.dom0.unwatch(path, token)
    return seen["xen"], seen["message"]


def latency(net: GuestNetwork, view: HostView, rounds: int) -> None:
    nic = net.nics[0]
    results = {"add": [], "del": []}
    for n in range(rounds):
        addr = "10.5.%d.%d" % (n // 200, n % 200 + 1)

        def has(v, present=True, addr=addr):
            return (addr in v.get(str(nic.devid), {}).get("ipv4", [])) is present

        def said(o, present=True, addr=addr):
            return o is not None and (addr in o.get(nic.mac, [])) is present

        results["add"].append(timed_change(net, view, ["addr", "add", addr + "/24", "dev",
                                                       nic.name], has, said))
        results["del"].append(timed_change(
            net, view, ["addr", "del", addr + "/24", "dev", nic.name],
            lambda v, f=has: f(v, False), lambda o, f=said: f(o, False)))
    for what, pairs in results.items():
        for index, name in ((0, "attr/vif"), (1, "message ")):
            figures = [p[index] * 1000 for p in pairs]
            print("latency: ip addr %s -> %s  median %6.1f ms, max %6.1f ms over %d "
                  "(target: within 1000 ms)" % (what, name, statistics.median(figures),
                                                max(figures), len(figures)))


def idle(daemon: Daemon, seconds: float, label: str) -> None:
    pid = daemon.process.pid
    before = wait_idle(pid)
    cpu = daemon.cpu_seconds()
    time.sleep(seconds)  # the idle window being measured
    print("idle: %-26s %d wake-ups and %.3f s CPU over %.0f s (target 0)"
          % (label, context_switches(pid) - before, daemon.cpu_seconds() - cpu, seconds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (CI smoke)")
    options = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_addresses: network namespaces need root", file=sys.stderr)
        return 1
    cache = tempfile.mkdtemp(prefix="pyc-")
    env = env_compiled(cache)
    server = Server()
    dom0 = XenStoreClient.open(server.dom0)
    net = GuestNetwork(dom0, GUEST).create()
    roots = []
    try:
        for _ in range(2):
            nic = net.add_nic()
            net.guest("addr", "add", "10.4.%d.1/24" % nic.devid, "dev", nic.name)
        view = HostView(dom0, GUEST)
        for reporting in (True, False):
            root = tempfile.mkdtemp(prefix="ovba-", dir="/tmp")
            roots.append(root)
            label = "reporter on" if reporting else "REPORT_ADDRESSES=no"
            os.makedirs(os.path.join(root, "etc/sysconfig"))  # a guest root holds an etc/
            if not reporting:
                with open(os.path.join(root, "etc/sysconfig/ovmd"), "w") as handle:
                    handle.write("REPORT_ADDRESSES=no\n")
            daemon = Daemon(root, server, env, prefix=net.exec_prefix)
            daemon.start()
            daemon.stop()  # the first start compiles bytecode
            ready = []
            for _ in range(3 if options.quick else 10):
                ready.append(daemon.start())
                daemon.stop()
            ready_ms = statistics.median(ready) * 1000
            daemon.start()
            if reporting:  # settled: the link-local addresses passed DAD too
                view.wait(lambda: view.oracle() is not None and len(view.oracle()) == 2
                          and all(len(a) == 2 for a in view.oracle().values()), "both vifs")
            rss = daemon.rss_kb() / 1024.0
            print("daemon (%s): start to READY=1 median %.1f ms (target <= 150 ms); RSS "
                  "after start %.1f MB (target <= 20 MB)" % (label, ready_ms, rss))
            idle(daemon, 2.0 if options.quick else 5.0, "(%s):" % label)
            if reporting:
                latency(net, view, 5 if options.quick else 30)
                idle(daemon, 2.0 if options.quick else 5.0, "(after the changes):")
            daemon.stop()
    finally:
        net.remove()
        dom0.close()
        server.stop()
        for path in roots + [cache]:
            shutil.rmtree(path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
