"""The run report: the JSON record of the last (or current) run, ``Paths.report_file``.

Rewritten atomically (mode 0600, inside the root: :mod:`templateconfig.run.statefiles`)
at every module transition, every text a module or the params produced (errors,
warnings, stderr, problems, actions) redacted; ``ovmd --status`` reads it
(:func:`ovmd.runreport.read_report`, which also tells from the runner's pid written in
it whether a ``running`` run's runner was killed). Format in docs/formats.md; the status
values are :class:`ovmd.runreport.RunStatus` and :class:`ovmd.runreport.ModuleStatus`.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ovmd.fsutil import atomic_write_json
from ovmd.paths import Paths
from ovmd.runreport import ModuleStatus, RunStatus, keep_configure_report
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
        self.paths = paths
        self.path = paths.report_file
        self.root = paths.root
        self._written = False
        self.target = target
        self.secrets = secrets
        self.enabled = write
        self.status = RunStatus.RUNNING
        self.started = _now()
        self.finished: Optional[str] = None
        self.changed_keys: List[str] = []
        self.problems: List[str] = []
        self.pid = os.getpid()
        self.modules: List[Dict[str, Any]] = [
            {"name": name, "priority": priority, "status": ModuleStatus.PENDING, "seconds": None,
             "error": None, "warnings": [], "stderr": ""}
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

    def refuse(self, problems: Sequence[str]) -> None:
        """The validation refused the run: nothing ran (every module pending)."""
        self.problems = list(problems)
        self.finish(RunStatus.FAILED, [])

    @property
    def warnings(self) -> int:
        """How many warnings the modules reported."""
        return sum(len(entry.get("warnings") or ()) for entry in self.modules)

    def to_dict(self) -> Dict[str, Any]:
        """The report as a JSON-ready dict, every text redacted."""
        secrets = list(self.secrets)
        modules = []
        for entry in self.modules:
            entry = dict(entry)
            for field in ("error", "stderr"):
                if entry.get(field):
                    entry[field] = redact(entry[field], secrets)
            for field in ("actions", "warnings"):
                if entry.get(field):
                    entry[field] = [redact(a, secrets) for a in entry[field]]
            modules.append(entry)
        report = {"target": self.target, "status": self.status, "started": self.started,
                  "finished": self.finished, "modules": modules,
                  "changed_keys": list(self.changed_keys), "pid": self.pid,
                  "warnings": self.warnings}
        if self.problems:
            report["problems"] = [redact(p, secrets) for p in self.problems]
        return report

    def write(self) -> None:
        if self.enabled:
            if not self._written:  # ovmd --status keeps the last configure run's report
                keep_configure_report(self.paths, self.target)
                self._written = True
            atomic_write_json(self.path, self.to_dict(), 0o600, durable=False,
                              root=self.root)
