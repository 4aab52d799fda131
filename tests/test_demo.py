"""`make demo`, the main job: a template configured end to end, nothing left behind.

How long it takes is a figure printed by `bench/bench_demo.py`, never asserted here.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

from testlib import REPO, load_script

MESSAGES = load_script("demo").MESSAGES


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
    # the messages first, in the order sent, secret keys' values masked
    messages = out.index("Messages the manager sends")
    assert messages < out.index("manager sent 30 messages") < out.index("Files changed")
    listed = re.findall(r"^  (com\.oracle\.linux\.\S+)\s+(.*)$", out[messages:], re.M)[:30]
    assert [key for key, _ in listed] == [key for key, _ in MESSAGES]
    assert dict(listed)["com.oracle.linux.network.hostname"] == "web01.example.com"
    for key in ("com.oracle.linux.root-password", "com.oracle.linux.user.password.0"):
        assert dict(listed)[key] == "******** (secret)"
    # secrets never shown: neither passwords nor private host keys
    assert "r00t-demo-pass" not in out + proc.stderr
    assert "Al1ce-demo-pass" not in out + proc.stderr
    assert "PRIVATE KEY" not in out
    # a new private host key is shown as created, with its mode and owner, not its content
    assert ("--- /etc/ssh/ssh_host_ed25519_key: created, mode 0640 root:ssh_keys (secret: "
            "content not shown)") in out
    # the template has a real guest's modes, and the modules keep them
    assert "--- /etc/shadow: changed, mode 0000 root:root (secret: content not shown)" in out
    assert "--- /etc/gshadow: changed, mode 0000 root:root (secret: content not shown)" in out
    # the shadow tools' backups are named once, not shown as diffs
    assert "/etc/passwd-" not in out.replace(
        "(and the backups the shadow tools keep of what they changed: /etc/group-, "
        "/etc/gshadow-, /etc/passwd-, /etc/shadow-)", "")
    assert "b/etc/group-" not in out and "/etc/shadow-:" not in out
    # the messages the guest sent back
    assert '{"com.oracle.linux.ovmd.initial-config-status": "done"}' in out
    # nothing left behind: no process, no directory
    work = re.search(r"template root (/tmp/ovmd-demo-[^/]+)/guest", out).group(1)
    assert processes_mentioning(work) == []
    assert not os.path.exists(work)
