"""The run report: the JSON record of the last (or current) run, ``Paths.report_file``.

Rewritten atomically (mode 0600, inside the root: :mod:`templateconfig.run.statefiles`)
at every module transition, every error text redacted;
``ovmd --status`` reads it (:func:`ovmd.runreport.read_report`). Format in
docs/formats.md; the status values are :class:`ovmd.runreport.RunStatus` and
:class:`ovmd.runreport.ModuleStatus`.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ovmd.fsutil import atomic_write_json
from ovmd.paths import Paths
from ovmd.runreport import ModuleStatus, RunStatus
from ovmd.secrets import redact


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class RunReport:
    """The run report of one target run, kept up to date in ``Paths.report_file``.

    ``secrets`` is a live collection of secret values (the runner adds values that
    modules produce); every error text is redacted against it when written. ``write``
    false (a dry run): the file is never written.
    """

    def __init__(self, paths: Paths, target: str, modules: Sequence[Tuple[int, str]],
                 secrets: Iterable[str] = (), write: bool = True) -> None:
        self.path = paths.report_file
        self.root = paths.root
        self.target = target
        self.secrets = secrets
        self.enabled = write
        self.status = RunStatus.RUNNING
        self.started = _now()
        self.finished: Optional[str] = None
        self.changed_keys: List[str] = []
        self.modules: List[Dict[str, Any]] = [
            {"name": name, "priority": priority, "status": ModuleStatus.PENDING, "seconds": None,
             "error": None}
            for priority, name in modules]
        self._by_name = {entry["name"]: entry for entry in self.modules}

    def update(self, name: str, status: str, seconds: Optional[float] = None,
               error: Optional[str] = None, write: bool = True, **extra: Any) -> None:
        """Record a module's new status and (unless ``write`` is false) rewrite the report."""
        entry = self._by_name[name]
        entry["status"] = status
        if seconds is not None:
            entry["seconds"] = round(seconds, 4)
        entry["error"] = error
        entry.update(extra)
        if write:
            self.write()

    def interrupted(self) -> None:
        """Mark the modules still running as failed by the interruption."""
        for entry in self.modules:
            if entry["status"] == ModuleStatus.RUNNING:
                entry["status"], entry["error"] = ModuleStatus.FAILED, "interrupted"

    def finish(self, status: str, changed_keys: Iterable[str]) -> None:
        self.status = status
        self.finished = _now()
        self.changed_keys = sorted(changed_keys)
        self.write()

    def to_dict(self) -> Dict[str, Any]:
        """The report as a JSON-ready dict, every error text redacted."""
        secrets = list(self.secrets)
        modules = []
        for entry in self.modules:
            entry = dict(entry)
            if entry.get("error"):
                entry["error"] = redact(entry["error"], secrets)
            if entry.get("actions"):
                entry["actions"] = [redact(a, secrets) for a in entry["actions"]]
            modules.append(entry)
        return {"target": self.target, "status": self.status, "started": self.started,
                "finished": self.finished, "modules": modules,
                "changed_keys": list(self.changed_keys)}

    def write(self) -> None:
        if self.enabled:
            atomic_write_json(self.path, self.to_dict(), 0o600, durable=False,
                              root=self.root)
