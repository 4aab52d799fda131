"""The runner slot: at most one ``ovm-template-config`` run at a time, and what its end
means (ok or failed, why, the params a first-boot run returned, the answer to ``-s``).

While the guest waits for its first boot, a first-boot runner *stands by*: started
before the host's params come, it does everything that needs no params (its modules'
prepare work such as the SSH host keys, its imports, the enumeration) and waits for
them on its input pipe, so that when the quiet period ends only the modules' own work
remains. It holds no lock and changes nothing until it has its params; stood down
(SIGTERM, or the daemon's end) it leaves nothing behind.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..cache import ParamCache
from ..control import EXIT_FAILURE, EXIT_OK
from ..firstboot.contract import EXIT_ALREADY_CONFIGURED
from ..firstboot.machine import CONFIGURE, Event
from ..paths import Paths
from ..runreport import ModuleStatus, RunStatus, read_report
from ..secrets import is_secret_key, redact
from ..status import format_modules
from .loop import EventLoop
from .targetrun import RUNNER, TargetRun

log = logging.getLogger(__name__)


class RunResult:
    """How a run ended: the first-boot machine's event and what the waiters are told."""

    def __init__(self, run: TargetRun, event: str, reason: str = "",
                 returned: Optional[List[Tuple[str, str]]] = None,
                 answer: Tuple[int, bytes] = (EXIT_OK, b"")) -> None:
        self.run = run
        #: :data:`Event.RUN_OK`, :data:`Event.RUN_FAILED` or :data:`Event.RUN_ALREADY`
        self.event = event
        #: why it failed, with the cached secrets redacted
        self.reason = reason
        #: a successful first-boot run: the public params it added or changed
        self.returned = returned or []
        #: (exit code, stdout) for ``ovmd -s`` clients waiting on the run
        self.answer = answer


class RunSlot:
    """Starts runs and turns each one's exit into a :class:`RunResult` for ``on_finished``."""

    def __init__(self, paths: Paths, loop: EventLoop, cache: ParamCache,
                 on_finished: Callable[[RunResult], None]) -> None:
        self.paths = paths
        self.loop = loop
        self.cache = cache
        self.on_finished = on_finished
        self.current: Optional[TargetRun] = None
        #: the first-boot runner waiting for its params, if one stands by
        self.standby: Optional[TargetRun] = None
        #: the run that ended last (what it was given: see :meth:`params_newer`)
        self.last: Optional[TargetRun] = None

    def start(self, target: str, first_boot: bool = False,
              changed_only: bool = False) -> TargetRun:
        """Start ``target`` with the cached params (a first-boot run: the runner that
        stands by, if there is one); a run that cannot even start ends (``on_finished``)
        before this returns."""
        standby = self.standby
        if first_boot and target == CONFIGURE and standby is not None and standby.standing_by:
            self.standby = None
            run = standby
            run.feed(self.cache.as_dict())
        else:  # (a runner standing by holds no lock: it may stand by meanwhile)
            run = TargetRun(self.paths, target, self.cache.as_dict(), self.loop,
                            initial_config=first_boot, changed_only=changed_only)
        self.current = run
        if run.finished:  # could not even start
            self._finish(run)
        return run

    def stand_by(self) -> None:
        """Have a first-boot runner stand by (unless one does, or a run is going)."""
        if self.standby is None and self.current is None:
            self.standby = TargetRun(self.paths, CONFIGURE, None, self.loop,
                                     initial_config=True)
            if self.standby.finished:
                log.warning("cannot start a first-boot runner ahead: %s", self.standby.error)
                self.standby = None

    def stand_down(self) -> None:
        """No first-boot run is coming (the guest is configured, the daemon stops)."""
        standby, self.standby = self.standby, None
        if standby is not None:
            standby.stand_down()

    def params_newer(self) -> bool:
        """The cache holds a param the last run was not given (added or changed), not
        counting the params it returned."""
        run = self.last
        if run is None:
            return False
        returned = run.result_params() or {}
        return any(run.params.get(key) != value and returned.get(key) != value
                   for key, value in self.cache.items())

    def child_exited(self) -> None:
        """SIGCHLD: collect the run if it was ours that exited."""
        standby = self.standby
        if standby is not None and standby.check_exit():
            log.warning("the first-boot runner that stood by exited (status %s) before "
                        "its params came; the run will start afresh", standby.returncode)
            self.standby = None
        run = self.current
        if run is not None and run.check_exit():
            self._finish(run)

    def _finish(self, run: TargetRun) -> None:
        if self.current is not run:
            return
        self.current = None
        self.last = run
        self.on_finished(self._result(run))

    def _result(self, run: TargetRun) -> RunResult:
        if run.initial_config and run.returncode == EXIT_ALREADY_CONFIGURED:
            return RunResult(run, Event.RUN_ALREADY,
                             answer=(EXIT_OK, b"first boot already configured; nothing done\n"))
        report = read_report(self.paths)
        if report is not None and report.get("target") != run.target:
            report = None
        ok = run.returncode == 0 and run.error is None and \
            (report is None or report.get("status") != RunStatus.FAILED)
        error = run.error or run_error(run, report)
        reason = redact(error, self.cache.secret_values())
        if ok:
            log.info("%s %s finished successfully", RUNNER, run.target)
        else:
            log.error("%s %s failed: %s", RUNNER, run.target, reason)
        summary = run_summary(run, ok, error, report)
        return RunResult(run, Event.RUN_OK if ok else Event.RUN_FAILED, reason=reason,
                         returned=returned_params(run, report) if ok and run.initial_config
                         else None,
                         answer=(EXIT_OK if ok else EXIT_FAILURE, summary.encode("utf-8")))


def run_error(run: TargetRun, report: Optional[Dict[str, Any]]) -> str:
    """Why a run failed: its failed modules' errors, else the runner's exit status."""
    failed = [m for m in (report or {}).get("modules") or []
              if m.get("status") == ModuleStatus.FAILED]
    if failed:
        return "; ".join("module %s failed: %s" % (m.get("name"),
                                                  str(m.get("error") or "").strip()[:300])
                         for m in failed)
    error = (report or {}).get("error")
    if error:  # a runner killed between two modules
        return str(error)
    if run.returncode not in (0, None):
        return "%s exited with status %s" % (RUNNER, run.returncode)
    return ""


def run_summary(run: TargetRun, ok: bool, error: str, report: Optional[Dict[str, Any]]) -> str:
    """What ``ovmd -s TARGET`` prints: the outcome, each module's line, the error."""
    # in the words of a module's status
    lines = ["%s %s: %s" % (RUNNER, run.target, ModuleStatus.OK if ok else ModuleStatus.FAILED)]
    if report:
        lines.extend(format_modules(report))
    if not ok and error:
        lines.append("error: %s" % error)
    return "\n".join(lines) + "\n"


def returned_params(run: TargetRun, report: Optional[Dict[str, Any]]) -> List[Tuple[str, str]]:
    """The params the run added or changed (its output, and the report's changed_keys),
    secrets left out: these go back into the cache and to the host."""
    result = run.result_params() or {}
    changed = [k for k, v in sorted(result.items()) if run.params.get(k) != v]
    for key in (report or {}).get("changed_keys") or []:
        if key in result and key not in changed:
            changed.append(key)
    return [(k, result[k]) for k in changed if not is_secret_key(k)]
