"""The reliability suites: the fuzz suite (hypothesis) and the fault-injection suite.

Every test here records its figures in :class:`~reliability_helpers.Figures` (``figures``
fixture): per case,
the messages sent, stored, lost and duplicated, the cases tried and the crashes. At the end
of the session the table is printed (it is the README's reliability table) and, when
``OVMD_RELIABILITY_TABLE=FILE`` is set, written to FILE as markdown:

    .venv/bin/python -m pytest tests/reliability -q
    OVMD_RELIABILITY_TABLE=/tmp/table.md .venv/bin/python -m pytest tests/reliability

Definitions (also in the README): *sent*: messages the host wrote that the guest must
accept (well-formed, readable, numbered up to ``last-write``); *stored*: those whose value
the cache holds at the end (after a restart from disk); *lost*: sent and not stored;
*duplicated*: an older message applied after a newer one for the same key (its stale
value won); *crashes*: a daemon that exited on its own, a traceback or "internal error"
in a log, or an exception out of the code under test.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import List

import pytest
from reliability_helpers import FIGURES, GUEST, Figures, Ovmd

from ovmd.vmmessage import HostChannel
from ovmd.xenstore import XenStoreClient


@pytest.fixture
def figures() -> Figures:
    return FIGURES


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not FIGURES.rows:
        return
    terminalreporter.section("reliability figures (README table)")
    for line in FIGURES.table():
        terminalreporter.write_line(line)
    target = os.environ.get("OVMD_RELIABILITY_TABLE")
    if target:
        with open(target, "w", encoding="utf-8") as handle:
            handle.write("\n".join(FIGURES.table()) + "\n")


# --- fixtures: a guest root, the host, the real daemon ---------------------------------------

@pytest.fixture
def guest_root():
    """A sandbox guest root with a short path (unix socket paths are limited)."""
    base = Path(tempfile.mkdtemp(prefix="ovrel-", dir="/tmp"))
    (base / "root" / "etc").mkdir(parents=True)  # a guest root holds an etc/
    try:
        yield base / "root"
    finally:
        shutil.rmtree(str(base), ignore_errors=True)


@pytest.fixture
def dom0(xenstored):
    with XenStoreClient.open(xenstored.dom0_socket) as client:
        yield client


@pytest.fixture
def host(dom0):
    return HostChannel(dom0, GUEST)


@pytest.fixture
def daemons(guest_root, xenstored):
    """``daemons(extra_args)``: a started ``ovmd`` on ``guest_root``; all are killed at the
    end. A daemon that exited on its own, or whose log shows a traceback, counts as a
    crash (:func:`crashes`)."""
    started: List[Ovmd] = []

    def start(extra=("--quiet-period", "0.1"), wait_ready: bool = True) -> Ovmd:
        daemon = Ovmd(guest_root, xenstored.guest_socket(GUEST), list(extra))
        started.append(daemon)
        return daemon.start(wait_ready=wait_ready)

    start.started = started  # type: ignore[attr-defined]
    yield start
    for daemon in started:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(10)
