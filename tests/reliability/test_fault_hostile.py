"""Fault injection: hostile host input and corrupt or hostile files, against the real daemon.

Host side: dom0 (our client, which can write any bytes) and Debian's ``xenstore-write`` /
``xenstore-chmod`` (an independent writer) leave every class of bad message the daemon
met in the wild next to good ones, waiting at start-up and again while it runs. Files: the
cache and the sysconfig flag are planted corrupt, as directories, or as links leading
out of the root, before the daemon starts.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest
from daemon_helpers import CHANNEL, GUEST, wait_consumed
from reliability_helpers import burst, crashes, listed, outcome, waiting
from testlib import require_tool

from ovmd.vmmessage import HostChannel

BOX = CHANNEL + "/to-guest"
HIDDEN = "HOSTILE-VALUE-never-logged"


def plant(dom0, name, key, pieces, perm="b"):
    node = "%s/%s" % (BOX, name)
    for index, piece in enumerate(pieces):
        dom0.write("%s/%d" % (node, index), piece)
        dom0.set_perms("%s/%d" % (node, index), ["n0", "%s%d" % (perm, GUEST)])
    dom0.write(node, key)
    dom0.set_perms(node, ["n0", "%s%d" % (perm, GUEST)])


def debian(xenstored, *argv):
    subprocess.run([require_tool(argv[0])] + list(argv[1:]), env=xenstored.env, check=True,
                   timeout=30, capture_output=True)


def hostile_batch(dom0, xenstored, start):
    """Every class of bad message, numbered from ``start``; returns (number of nodes, the
    numbers the guest may not delete)."""
    n = start
    events = [b"0777", b"0xZZ", "\u00b2".encode(), b"9" * 5000, b"\xff", b"-1"]
    for value in events:
        plant(dom0, n, b"VMAPIEvent", [value[i:i + 2048] for i in range(0, len(value), 2048)])
        n += 1
    plant(dom0, n, b"com.hostile.\xff\xfe", [HIDDEN.encode()])                 # key not UTF-8
    plant(dom0, n + 1, b"com.hostile.cr\r\x1b[2Jesc", [b"kept"])              # control chars
    plant(dom0, n + 2, b"com.hostile.value", [b"\xc3(" + HIDDEN.encode()])    # value not UTF-8
    plant(dom0, n + 3, b"com.hostile.big", [HIDDEN.encode() * 80] * 4)         # over 8192
    plant(dom0, n + 4, b"com.hostile.hidden", [HIDDEN.encode()], perm="n")    # EACCES
    plant(dom0, n + 5, b"com.hostile.readonly", [b"read-only"], perm="r")     # undeletable
    node = "%s/%d" % (BOX, n + 6)
    debian(xenstored, "xenstore-write", node + "/0", "a", node + "/2", "c", node, "com.x.gap")
    debian(xenstored, "xenstore-write", "%s/%d/zero" % (BOX, n + 7), "a",
           "%s/%d" % (BOX, n + 7), "com.x.named")
    debian(xenstored, "xenstore-chmod", "-r", node, "n0", "b%d" % GUEST)
    debian(xenstored, "xenstore-chmod", "-r", "%s/%d" % (BOX, n + 7), "n0", "b%d" % GUEST)
    for stray in ("foo", "007", "0"):
        plant(dom0, stray, b"com.hostile.stray", [HIDDEN.encode()])
    return n + 8 - start + 3, {n + 4, n + 5}


@pytest.mark.parametrize("when", ["waiting at start-up", "while running"])
def test_hostile_host_messages_never_stop_the_daemon(guest_root, xenstored, dom0, host,
                                                     daemons, figures, when):
    good_before, good_after = burst("ok1", 30), burst("ok2", 30)
    HostChannel(dom0, GUEST).prepare(dom0)
    daemon = None
    if when == "while running":
        daemon = daemons()
    count, undeletable = hostile_batch(dom0, xenstored, 1)
    dom0.write(BOX + "/last-write", "1000000000000")  # a counter that would mean 10^12 reads
    number = host.send(good_before)                  # numbered 10^12 + 1...
    if daemon is None:
        daemon = daemons()  # READY=1 means: everything waiting was handled
    wait_consumed(dom0, number)
    more, later_undeletable = hostile_batch(dom0, xenstored, number + 1)
    dom0.write(BOX + "/last-write", str(number + more))
    wait_consumed(dom0, number + more - 3, counter=False)
    number = host.send(good_after)
    wait_consumed(dom0, number)
    assert daemon.process.poll() is None
    assert daemon.cli("-g", "com.hostile.cr\r\x1b[2Jesc").stdout == "kept\n"
    left = set(waiting(dom0))
    assert left == undeletable | later_undeletable  # all else handled and deleted
    final = listed(daemon)
    log = daemon.log_text()
    assert HIDDEN not in log and "\x1b" not in log and "\r" not in log  # escaped, no values
    assert "lost the XenStore connection" not in log and "XenStore error" not in log
    crashed = crashes(daemon)
    events = json.loads(daemon.cli("--status", "--json").stdout)["events"]
    sent = good_before + good_after + [("com.hostile.cr\r\x1b[2Jesc", "kept"),
                                       ("com.hostile.readonly", "read-only")]
    figures.add("fault", "hostile host messages (%s)" % when, tried=count + more,
                crashes=crashed, **outcome(sent, final))
    assert final == dict(sent) and crashed == 0
    assert len(events) == 10 and {e["event"] for e in events} >= {"0777", "0xZZ", "\u00b2"}


# --- corrupt and hostile files at start-up --------------------------------------------------

GOOD = {"com.files.kept": "yes"}


def state(root):
    return root / "var/lib/ovmd"


@pytest.mark.parametrize("case", [
    "journal: not UTF-8", "journal: [1]", 'journal: {"set":[1,2]}', "snapshot: garbage",
    "snapshot: a directory", "secrets: garbage", "journal: a link out of the root",
    "snapshot: a link out of the root", "state files: mode 0666", "sysconfig: a directory",
    "sysconfig: not UTF-8", "run report: a directory",
])
def test_corrupt_and_hostile_files_never_stop_the_start(guest_root, daemons, figures, case):
    outside = guest_root.parent / "outside"
    outside.write_text("not the guest's\n")
    state(guest_root).mkdir(parents=True)
    (guest_root / "run/ovmd").mkdir(parents=True)
    journal = state(guest_root) / "params.json.journal"
    snapshot = state(guest_root) / "params.json"
    snapshot.write_text(json.dumps(GOOD))
    journal.write_text(json.dumps({"set": {"com.files.journal": "1"}}) + "\n")
    what, trouble = case.split(": ", 1)
    target = {"journal": journal, "snapshot": snapshot,
              "secrets": guest_root / "run/ovmd/secrets.json"}.get(what)
    if trouble == "not UTF-8" and what == "journal":
        with open(str(journal), "ab") as handle:
            handle.write(b'{"set": {"com.files.bad": "\xff"}}\n')
    elif trouble.startswith(("[", "{")):
        with open(str(journal), "a") as handle:
            handle.write(trouble + "\n")
    elif trouble == "garbage":
        target.write_bytes(b"\x00garbage{")
    elif trouble == "a directory" and target is not None:
        snapshot.unlink()
        (snapshot / "sub").mkdir(parents=True)
    elif trouble == "a link out of the root":
        target.unlink()
        os.symlink(str(outside), str(target))
    elif what == "state files":
        os.chmod(str(snapshot), 0o666)
        os.chmod(str(journal), 0o666)
        os.chmod(str(state(guest_root)), 0o777)
    elif what == "sysconfig":
        flag = guest_root / "etc/sysconfig/ovmd"
        if trouble == "a directory":
            flag.mkdir(parents=True)
        else:
            flag.parent.mkdir(parents=True)
            flag.write_bytes(b"INITIAL_CONFIG=no\n# \xff\xfe\n")
    elif what == "run report":
        (guest_root / "var/lib/ovm-template-config/last-run.json").mkdir(parents=True)
    daemon = daemons()  # READY=1: it started
    daemon.cli("-p", "com.files.after=1", check=True)  # and it stores
    status = daemon.cli("--status")
    final = listed(daemon)
    log = daemon.log_text()
    crashed = crashes(daemon)
    figures.add("fault", "corrupt and hostile files at start-up (12 kinds)", tried=1,
                crashes=crashed)
    assert crashed == 0 and status.returncode in (0, 1) and "Traceback" not in status.stderr
    assert outside.read_text() == "not the guest's\n"  # never written through
    assert final.get("com.files.after") == "1"
    if what in ("journal", "snapshot", "secrets") and "link" not in trouble:
        asides = [p for p in target.parent.iterdir() if ".corrupt-" in p.name]
        assert len(asides) == 1 and stat.S_IMODE(asides[0].stat().st_mode) in (0o600, 0o700)
        errors = [line for line in log.splitlines() if " ERROR " in line]
        assert len(errors) == 1 and str(target) in errors[0] and "kept" in errors[0]
    if "link" not in trouble and (what in ("journal", "state files") or what == "secrets"):
        assert final["com.files.kept"] == "yes" and final["com.files.journal"] == "1"
    if what == "state files":
        for path, mode in ((snapshot, 0o600), (journal, 0o600), (state(guest_root), 0o700)):
            assert stat.S_IMODE(path.stat().st_mode) == mode
    if "link" in trouble:
        assert not target.is_symlink()
