"""The run report's vocabulary: the statuses of a run and of its modules.

``ovm-template-config`` writes the report (``Paths.report_file``, format in
docs/formats.md) and ``ovmd`` reads it (``--status``, the first-boot result), so both
take the values from here and :func:`read_report` is the one reader.
"""
from __future__ import annotations

import json
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


def read_report(paths: Paths) -> Optional[Dict[str, Any]]:
    """The last (or current) run's report, or None if there is none or it is unreadable."""
    try:
        text = read_text(paths.report_file)
    except OSError:  # a directory or an unreadable file there: no report to show
        return None
    if not text:
        return None
    try:
        report = json.loads(text)
    except ValueError:
        return None
    return report if isinstance(report, dict) else None
