"""Fixtures shared by the whole suite.

Under ``CI=true`` a skipped test is turned into a failure: a real peer that is missing
on CI is a broken set-up, not a reason to pass (CI runs ``make test`` with ``CI=true``).
Helpers live in ``testlib.py``; the names are re-exported here for older imports.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from testlib import (  # noqa: F401  (re-exported)
    BIN,
    IN_CI,
    REPO,
    DevXenStore,
    bin_path,
    require_tool,
    start_xenstored,
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = "skipped under CI=true, which counts as a failure: %s" % (reason,)


@pytest.fixture
def xenstored():
    """A fresh development XenStore with guests 1 (guest1) and 2 (guest2)."""
    # Unix socket paths are limited to 108 bytes: keep the directory short.
    socket_dir = Path(tempfile.mkdtemp(prefix="xs-", dir="/tmp"))
    server = start_xenstored(socket_dir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)
