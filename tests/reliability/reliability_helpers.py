"""Helpers of the reliability suites: the figures, bursts of host messages and what became
of them. (``conftest`` is not importable reliably: the helpers live here.)"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

# the daemon helpers of tests/ovmd/daemon (the real ovmd as a process)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "ovmd" / "daemon"))

from daemon_helpers import CHANNEL, GUEST, Ovmd  # noqa: E402
from testlib import bin_path  # noqa: E402

from ovmd.cache import ParamCache  # noqa: E402
from ovmd.paths import Paths  # noqa: E402
from ovmd.xenstore import XenStoreError  # noqa: E402

#: Rewritten by every message of a burst: its final value must be the last one sent, so an
#: older message applied again after a newer one shows (a "duplicated" message).
SEQUENCE_KEY = "com.fault.sequence"


def burst(prefix: str, count: int, size: int = 24) -> List[Tuple[str, str]]:
    """``count`` messages with distinct keys and values of about ``size`` bytes, every
    fourth followed by the sequence key (so about 1.25 * count messages in all)."""
    messages: List[Tuple[str, str]] = []
    for index in range(count):
        messages.append(("com.fault.%s.%05d" % (prefix, index),
                         ("%s-%d:" % (prefix, index)).ljust(size, "v")))
        if index % 4 == 3:
            messages.append((SEQUENCE_KEY, "%s-%d" % (prefix, index)))
    return messages


def send_with_cli(xenstored, messages: List[Tuple[str, str]]) -> None:
    """Send with the real ``ovm-vmmessage --batch`` (JSON lines on stdin)."""
    lines = "".join(json.dumps({"key": k, "value": v}) + "\n" for k, v in messages)
    subprocess.run([bin_path("ovm-vmmessage"), "--xenstore", xenstored.dom0_socket, "-d",
                    str(GUEST), "--batch", "-"], input=lines, text=True, check=True,
                   timeout=120)


def listed(daemon) -> Dict[str, str]:
    """``ovmd -l`` of a running daemon, as a dict."""
    result = daemon.cli("-l", check=True)
    found: Dict[str, str] = {}
    for line in result.stdout.splitlines():
        found.update(json.loads(line))
    return found


def durable(paths: Paths) -> Dict[str, str]:
    """What a daemon started now would find: a copy of the state loaded aside."""
    copy = Path(tempfile.mkdtemp(prefix="ovcp-", dir="/tmp"))
    try:
        for directory in (paths.state_dir, paths.run_dir):
            if os.path.isdir(directory):
                target = copy / os.path.relpath(directory, paths.root)
                shutil.copytree(directory, str(target), ignore=shutil.ignore_patterns(
                    "*.sock", "*.pid", "*.lock"))
        return ParamCache(Paths(str(copy))).load().as_dict()
    finally:
        shutil.rmtree(str(copy), ignore_errors=True)


def waiting(dom0) -> Dict[int, str]:
    """Message number -> key of what the host's ``to-guest`` still holds."""
    box = CHANNEL + "/to-guest"
    found = {}
    for name in dom0.directory(box):
        if name.isdigit():
            try:
                found[int(name)] = dom0.read("%s/%s" % (box, name))
            except XenStoreError:
                continue
    return found


class Figures:
    """The reliability figures of this session, case by case, in the order recorded."""

    COLUMNS = ("sent", "stored", "lost", "duplicated", "tried", "crashes")

    def __init__(self) -> None:
        self.rows: Dict[str, Dict[str, int]] = {}
        self.suites: Dict[str, str] = {}

    def add(self, suite: str, case: str, **counts: int) -> None:
        row = self.rows.setdefault(case, dict.fromkeys(self.COLUMNS, 0))
        self.suites[case] = suite
        for name, value in counts.items():
            row[name] += value

    def table(self) -> List[str]:
        lines = ["| suite | case | sent | stored | lost | duplicated | cases tried | crashes |",
                 "|---|---|---|---|---|---|---|---|"]
        for case, row in self.rows.items():
            lines.append("| %s | %s | %s |" % (self.suites[case], case, " | ".join(
                str(row[c]) for c in self.COLUMNS)))
        total = {c: sum(r[c] for r in self.rows.values()) for c in self.COLUMNS}
        lines.append("| | **total** | %s |" % " | ".join("**%d**" % total[c]
                                                         for c in self.COLUMNS))
        return lines


FIGURES = Figures()


def outcome(sent, final: Dict[str, str]) -> Dict[str, int]:
    """Figures of one case: ``sent`` the (key, value) pairs the guest had to accept, in
    order; ``final`` what the cache holds at the end (see the module docstring)."""
    last: Dict[str, str] = {}
    older: Dict[str, set] = {}
    for key, value in sent:
        if key in last:
            older.setdefault(key, set()).add(last[key])
        last[key] = value
    stored = lost = duplicated = 0
    for key, value in sent:
        have = final.get(key)
        if have == last[key]:
            stored += 1
        elif have is not None and have in older.get(key, ()):
            duplicated += 1
        else:
            lost += 1
    return {"sent": len(sent), "stored": stored, "lost": lost, "duplicated": duplicated}


def crashes(daemon: Ovmd, killed: bool = False) -> int:
    """1 if ``daemon`` died on its own (not ``killed`` by the test) or logged a traceback
    or an internal error, else 0."""
    died = daemon.process is not None and daemon.process.poll() is not None and not killed \
        and daemon.process.returncode != 0
    log = daemon.log_text()
    return int(died or "Traceback" in log or "internal error" in log)
