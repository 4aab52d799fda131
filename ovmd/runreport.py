"""The run report's vocabulary: the statuses of a run and of its modules.

``ovm-template-config`` writes the report (``Paths.report_file``, format in
docs/formats.md) and ``ovmd`` reads it (``--status``, the first-boot result), so both
take the values from here and :func:`read_report` is the one reader.

A report that says ``running`` while its runner (``pid``) is gone, or is no longer an
``ovm-template-config``, is read as what it is: a run that failed, interrupted
(:data:`RUNNER_DIED`). The runner rewrites the report at every step, so only a runner
that was killed (SIGKILL, the OOM killer) leaves one saying ``running``.

``ovmd --status`` is about configure. A run of another target (the shutdown target at
every power-off, say) replaces the report, so the runner first moves a configure report
to ``Paths.configure_report_file`` (:func:`keep_configure_report`), where
:func:`read_configure_report` finds it.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from .fsutil import read_text
from .paths import Paths


class RunStatus:
    """``status`` of a whole run."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class ModuleStatus:
    """``status`` of one module of a run."""

    PENDING = "pending"
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


#: The error of the modules a killed runner left ``running``.
RUNNER_DIED = "interrupted: the runner died"
#: What the command line of a runner process names.
RUNNER_COMMAND = b"ovm-template-config"


def is_runner_process(pid: int) -> bool:
    """True if ``pid`` is a live ``ovm-template-config`` (its command line names it)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            args = handle.read().split(b"\0")[:3]
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return True  # cannot tell (no /proc): do not call it dead
    return any(os.path.basename(arg).startswith(RUNNER_COMMAND) for arg in args)


#: The target whose last report ``ovmd --status`` reads.
STATUS_TARGET = "configure"


def read_report(paths: Paths, path: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The last (or current) run's report (``path``: another report file), or None if
    there is none or it is unreadable. A ``running`` report whose runner died reads as
    ``failed``, with ``error`` :data:`RUNNER_DIED`, as do its modules that were
    running."""
    try:
        text = read_text(path or paths.report_file)
    except OSError:  # a directory or an unreadable file there: no report to show
        return None
    if not text:
        return None
    try:
        report = json.loads(text)
    except ValueError:
        return None
    if not isinstance(report, dict):
        return None
    pid = report.get("pid")
    if report.get("status") == RunStatus.RUNNING and isinstance(pid, int) \
            and not is_runner_process(pid):
        report["status"], report["error"] = RunStatus.FAILED, RUNNER_DIED
        for module in report.get("modules") or []:
            if isinstance(module, dict) and module.get("status") == ModuleStatus.RUNNING:
                module["status"], module["error"] = ModuleStatus.FAILED, RUNNER_DIED
    return report


def read_configure_report(paths: Paths) -> Optional[Dict[str, Any]]:
    """The report of the last configure run: the report, or the one a run of another
    target set aside."""
    for path in (paths.report_file, paths.configure_report_file):
        report = read_report(paths, path)
        if report is not None and report.get("target") == STATUS_TARGET:
            return report
    return None


def keep_configure_report(paths: Paths, target: str) -> None:
    """Before a run of ``target`` writes its first report (under the run lock): a
    configure run's report is moved aside if another target's replaces it, and one moved
    aside earlier is dropped when configure runs again."""
    if target == STATUS_TARGET:
        try:
            os.unlink(paths.configure_report_file)
        except FileNotFoundError:
            pass
        return
    report = read_report(paths)
    if report is not None and report.get("target") == STATUS_TARGET:
        os.replace(paths.report_file, paths.configure_report_file)
