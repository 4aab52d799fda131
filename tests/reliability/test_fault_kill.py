"""Fault injection: SIGKILL at random points of a burst and of a first-boot run, and the
development XenStore restarting under a running daemon.

Random points come from a seeded generator (``OVMD_FAULT_SEED``, default 12; printed with
the figures), so a failure can be replayed. A kill takes the daemon and everything it
started at once, as systemd's cgroup kill does.
"""
from __future__ import annotations

import os
import random
import threading

import pytest
from daemon_helpers import (
    GUEST,
    descendants,
    files_containing,
    kill_quietly,
    make_guest,
    wait_consumed,
)
from reliability_helpers import burst, crashes, listed, outcome, waiting
from testlib import start_xenstored

from ovmd.channel import FROM_GUEST, read_counter, read_message
from ovmd.firstboot.contract import STATUS_KEY
from ovmd.vmmessage import HostChannel
from ovmd.xenstore import XenStoreClient

SEED = int(os.environ.get("OVMD_FAULT_SEED", "12"))
ROOT_PASSWORD = "com.oracle.linux.root-password"
PASSWORD = "Fault-Injection-Passw0rd-31337"


def crash(daemon) -> None:
    family = descendants(daemon.process.pid)
    daemon.kill()
    for pid in family:
        kill_quietly(pid)


def test_sigkill_at_random_points_of_a_burst(guest_root, xenstored, dom0, daemons, figures):
    rng = random.Random(SEED)
    messages = burst("kill", 3000)
    points = sorted(rng.sample(range(50, len(messages) - 50), 5))
    sender_client = XenStoreClient.open(xenstored.dom0_socket)
    sender = threading.Thread(target=HostChannel(sender_client, GUEST).send, args=(messages,))
    daemon = daemons()
    crashed = 0
    sender.start()
    try:
        for point in points:
            wait_consumed(dom0, point)  # the daemon is consuming while the host sends
            crash(daemon)
            daemon = daemons()
    finally:
        sender.join(120)
        sender_client.close()
    wait_consumed(dom0, len(messages))
    assert waiting(dom0) == {}
    crash(daemon)  # once more, idle, then a restart from disk
    daemon = daemons()
    final = listed(daemon)
    crashed += sum(crashes(d, killed=True) for d in daemons.started)
    figures.add("fault", "SIGKILL at 5 random points of a 3 750-message burst (seed %d)"
                % SEED, tried=len(points) + 1, crashes=crashed, **outcome(messages, final))
    assert final == dict(messages) and crashed == 0


# --- a first-boot run ---------------------------------------------------------------------

RECORD = ('input=$(cat)\necho "$1" >> "$OVM_TEMPLATE_CONFIG_ROOT/runs-{name}"\n'
          'printf \'%s\\n\' "$input"\n')
GATE = ('echo started > "$OVM_TEMPLATE_CONFIG_ROOT/{name}-started"\n'
        'read _ < "$OVM_TEMPLATE_CONFIG_ROOT/{name}-release"\n') + RECORD
MODULES = [(10, "first", RECORD), (20, "gate1", GATE), (30, "gate2", GATE), (40, "last", RECORD)]
#: Where the run is killed: during the quiet period, in either gated module, or once the
#: run has ended and reported.
POINTS = ["quiet period", "gate1", "gate2", "after the run"]


def status_messages(client):
    """The initial-config-status values the guest sent, in order."""
    base = "/local/domain/%d/control/oracle-vmapi" % GUEST
    found = []
    for number in range(1, (read_counter(client, base, FROM_GUEST) or 0) + 1):
        message = read_message(client, base, FROM_GUEST, number)
        if message is not None and message.key == STATUS_KEY:
            found.append(message.value)
    return found


def release(root, names):
    for name in names:
        with open(str(root / ("%s-started" % name))) as started:
            started.read()
        with open(str(root / ("%s-release" % name)), "w") as gate:
            gate.write("go\n")


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_a_point_of_a_first_boot_run(guest_root, xenstored, dom0, host, daemons,
                                                figures, point):
    rng = random.Random("%d %s" % (SEED, point))
    make_guest(guest_root, [(p, n, body.format(name=n)) for p, n, body in MODULES])
    for name in ("gate1", "gate2"):
        os.mkfifo(str(guest_root / ("%s-started" % name)))
        os.mkfifo(str(guest_root / ("%s-release" % name)))
    messages = burst("run", rng.randint(20, 80))
    daemon = daemons(["--quiet-period", "0.5"])
    wait_consumed(dom0, host.send(messages))
    host.send([(ROOT_PASSWORD, PASSWORD)])  # last, in a batch of its own (its name is logged)
    if point == "quiet period":
        daemon.wait_log(r"stored .*root-password")
        crash(daemon)
        pending = ["gate1", "gate2"]
    elif point == "after the run":
        releaser = threading.Thread(target=release, args=(guest_root, ["gate1", "gate2"]))
        releaser.start()
        assert host.wait_for(STATUS_KEY, 60, new_only=False) == "done"
        releaser.join(30)
        crash(daemon)
        pending = []
    else:
        release(guest_root, ["gate1"] if point == "gate2" else [])
        with open(str(guest_root / ("%s-started" % point))) as started:  # it runs now
            started.read()
        crash(daemon)
        pending = ["gate1", "gate2"][["gate1", "gate2"].index(point):]
    restarted = daemons(["--quiet-period", "0.1"])
    releaser = threading.Thread(target=release, args=(guest_root, pending))
    releaser.start()
    try:
        assert host.wait_for(STATUS_KEY, 60, new_only=False) is not None
    finally:
        releaser.join(30)
    restarted.cli("--status", "--wait", check=True)
    statuses = status_messages(dom0)
    runs = {name: (guest_root / ("runs-%s" % name)).read_text().split()
            for _, name, _ in MODULES}
    final = listed(restarted)
    crashed = crashes(daemon, killed=True) + crashes(restarted)
    reruns = sum(len(r) - 1 for r in runs.values())  # a module that succeeded, run again
    counts = outcome(messages, final)
    counts["duplicated"] += reruns + max(0, len(statuses) - 1)
    figures.add("fault", "SIGKILL during a first-boot run (4 points: quiet period, two "
                "modules, after it)", tried=1, crashes=crashed, **counts)
    assert statuses == ["done"]
    assert runs == {name: ["configure"] for _, name, _ in MODULES}  # each ran once
    assert final == dict(messages) and crashed == 0
    assert ROOT_PASSWORD not in final
    assert files_containing(guest_root, PASSWORD) == []
    assert PASSWORD not in daemon.log_text() + restarted.log_text()


def test_the_xenstore_server_restarting_under_the_daemon(guest_root, xenstored, daemons,
                                                         figures):
    """The development server keeps its store in memory: a restart is a new, empty store
    at the same socket, as after xenstored itself restarts. Messages consumed before it
    are kept; messages sent after it (the daemon reconnecting meanwhile) all arrive."""
    daemon = daemons()
    first, second = burst("before", 400), burst("after", 400)
    with XenStoreClient.open(xenstored.dom0_socket) as client:
        wait_consumed(client, HostChannel(client, GUEST).send(first))
    assert xenstored.stop() == 0
    restarted = start_xenstored(xenstored.socket_dir, xenstored.domains)
    xenstored.process = restarted.process  # the fixture stops it at the end
    with XenStoreClient.open(xenstored.dom0_socket) as client:
        number = HostChannel(client, GUEST).send(second)  # perhaps before the reconnect
        wait_consumed(client, number)
    daemon.wait_log(r"connected to XenStore again")
    crash(daemon)
    again = daemons()
    final = listed(again)
    crashed = crashes(daemon, killed=True) + crashes(again)
    figures.add("fault", "development XenStore restarted under the daemon", tried=1,
                crashes=crashed, **outcome(first + second, final))
    assert final == dict(first + second) and crashed == 0
