"""`make demo`, the main job: a template configured end to end, nothing left behind.

How long it takes is a figure printed by `bench/bench_demo.py`, never asserted here.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

from testlib import REPO


def processes_mentioning(text: str):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if text in cmdline:
            found.append((pid, cmdline))
    return found


def test_demo_configures_the_template_and_leaves_nothing_behind():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py")],
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "initial-config-status = done" in out
    for module in ("selinux", "firewall", "datetime", "network", "system", "user", "ssh",
                   "authentication"):
        assert re.search(r"^  %s\s+ok\b" % module, out, re.M), module
    # the diff shows what changed, as files
    assert "+web01.example.com" in out
    assert "+SELINUX=permissive" in out
    assert "ovm-eth0.nmconnection" in out and "ovm-eth1.nmconnection" in out
    assert "+alice:x:2001:2001::/home/alice:/bin/bash" in out
    # secrets never shown: neither passwords nor private host keys
    assert "r00t-demo-pass" not in out + proc.stderr
    assert "Al1ce-demo-pass" not in out + proc.stderr
    assert "PRIVATE KEY" not in out
    assert "etc/ssh/ssh_host_ed25519_key: changed (secret" in out
    # the messages the guest sent back
    assert '{"com.oracle.linux.ovmd.initial-config-status": "done"}' in out
    # nothing left behind: no process, no directory
    work = re.search(r"template root (/tmp/ovmd-demo-[^/]+)/guest", out).group(1)
    assert processes_mentioning(work) == []
    assert not os.path.exists(work)
