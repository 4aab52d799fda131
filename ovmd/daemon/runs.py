"""The runner slot: at most one ``ovm-template-config`` run at a time, and what its end
means (ok or failed, why, the params a first-boot run returned, the answer to ``-s``).

What a run did is read from *its* run report (the report names the runner's pid); a run
that wrote none (a usage error, say) is told by the runner's own stderr lines. Why a run
failed is one line per module (``<module>: <reason>``) or per refused value
(``<module>: <key>: <reason>``), or the runner's last message; never a traceback.

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
from ..firstboot.contract import EXIT_ALREADY_CONFIGURED, join_reasons
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
                 answer: Tuple[int, bytes, bytes] = (EXIT_OK, b"", b"")) -> None:
        self.run = run
        #: :data:`Event.RUN_OK`, :data:`Event.RUN_FAILED` or :data:`Event.RUN_ALREADY`
        self.event = event
        #: why it failed (reasons joined by ``; ``), with the cached secrets redacted
        self.reason = reason
        #: a successful first-boot run: the public params it added or changed
        self.returned = returned or []
        #: (exit code, stdout, stderr) for ``ovmd -s`` clients waiting on the run
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

    def start(self, target: str, first_boot: bool = False, changed_only: bool = False,
              timeout: Optional[float] = None) -> TargetRun:
        """Start ``target`` with the cached params (a first-boot run: the runner that
        stands by, if there is one; ``timeout``: each module's, if not the runner's
        default); a run that cannot even start ends (``on_finished``) before this
        returns."""
        standby = self.standby
        if first_boot and target == CONFIGURE and standby is not None and standby.standing_by:
            self.standby = None
            run = standby
            run.feed(self.cache.as_dict())
        else:  # (a runner standing by holds no lock: it may stand by meanwhile)
            run = TargetRun(self.paths, target, self.cache.as_dict(), self.loop,
                            initial_config=first_boot, changed_only=changed_only,
                            timeout=timeout)
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
            return RunResult(run, Event.RUN_ALREADY, answer=(
                EXIT_OK, b"first boot already configured; nothing done\n", b""))
        report = own_report(self.paths, run)
        ok = run.returncode == 0 and run.error is None and \
            (report is None or report.get("status") != RunStatus.FAILED)
        secrets = self.cache.secret_values()
        reasons = [redact(reason, secrets) for reason in run_reasons(run, report)]
        reason = join_reasons(reasons)
        if ok:
            log.info("%s %s finished successfully", RUNNER, run.target)
        else:
            log.error("%s %s failed: %s", RUNNER, run.target, reason)
        return RunResult(run, Event.RUN_OK if ok else Event.RUN_FAILED, reason=reason,
                         returned=returned_params(run, report)
                         if ok and (run.initial_config or run.changed_only) else None,
                         answer=script_answer(run, ok, report, secrets))


def own_report(paths: Paths, run: TargetRun) -> Optional[Dict[str, Any]]:
    """The run report ``run``'s runner wrote (it names the runner's pid), or None."""
    report = read_report(paths)
    pid = run.process.pid if run.process is not None else None
    if report is None or pid is None or report.get("pid") != pid \
            or report.get("target") != run.target:
        return None
    return report


def _runner_message(run: TargetRun) -> Optional[str]:
    """The runner's last message on its stderr, without its name."""
    for line in reversed(run.stderr_lines):
        text = " ".join(line.split())
        if text:
            prefix = RUNNER + ": "
            return text[len(prefix):] if text.startswith(prefix) else text
    return None


def run_reasons(run: TargetRun, report: Optional[Dict[str, Any]]) -> List[str]:
    """Why a run failed, one line each: the values its validation refused, else its
    failed modules (``<module>: <reason>``), else the runner's own last message, else
    its exit status; none for a run that succeeded."""
    if run.error:
        return ["%s: %s" % (RUNNER, run.error)]
    if report is not None and report.get("problems"):
        return [str(problem) for problem in report["problems"]]
    failed = ["%s: %s" % (m.get("name"), " ".join(str(m.get("error") or "failed").split()))
              for m in (report or {}).get("modules") or []
              if m.get("status") == ModuleStatus.FAILED]
    if failed:
        return failed
    killed = (report or {}).get("error")
    if killed:  # a runner killed between two modules
        return ["%s: %s" % (RUNNER, killed)]
    if run.returncode in (0, None):
        return []
    message = _runner_message(run)
    if message:
        return ["%s: %s" % (RUNNER, message)]
    return ["%s: exited with status %s" % (RUNNER, run.returncode)]


def script_answer(run: TargetRun, ok: bool, report: Optional[Dict[str, Any]],
                  secrets: List[str]) -> Tuple[int, bytes, bytes]:
    """What ``ovmd -s TARGET`` answers: the runner's exit status; on stdout the outcome
    of this run and each module's state, reason and warnings; when the runner ran no
    module (a usage problem, refused params), its own messages on stderr."""
    code = EXIT_FAILURE if run.error or run.returncode is None else run.returncode
    if report is None or report.get("problems"):
        lines = list(run.stderr_lines) or ["%s: %s" % (RUNNER, reason)
                                           for reason in run_reasons(run, report)]
        err = "".join(redact(line, secrets) + "\n" for line in lines)
        if report is None and ok:  # (a runner that wrote no report but succeeded)
            return EXIT_OK, ("%s %s: done\n" % (RUNNER, run.target)).encode("utf-8"), \
                err.encode("utf-8")
        return code, b"", err.encode("utf-8")
    warnings = report.get("warnings") or 0
    outcome = RunStatus.DONE if ok else RunStatus.FAILED
    if ok and warnings:
        outcome += " with %d warning%s" % (warnings, "" if warnings == 1 else "s")
    lines = ["%s %s: %s" % (RUNNER, run.target, outcome)] + format_modules(report)
    return code, "".join(redact(line, secrets) + "\n" for line in lines).encode("utf-8"), b""


def returned_params(run: TargetRun, report: Optional[Dict[str, Any]]) -> List[Tuple[str, str]]:
    """The params the run added or changed (its output, and the report's changed_keys),
    secrets left out: these go back into the cache and to the host."""
    result = run.result_params() or {}
    changed = [k for k, v in sorted(result.items()) if run.params.get(k) != v]
    for key in (report or {}).get("changed_keys") or []:
        if key in result and key not in changed:
            changed.append(key)
    return [(k, result[k]) for k in changed if not is_secret_key(k)]
