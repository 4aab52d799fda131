"""One run of a target's modules, step by step (created by
:meth:`templateconfig.run.runner.Runner.run` after the validation):

start
    log the modules; find what an interrupted run of the same target and params completed
    (:mod:`templateconfig.run.state`); import what modules import while the PBKDF2 of the
    run state's fingerprint runs (:func:`templateconfig.run.preload.preload_while`).
each module, in (priority, name) order, one of
    *resume*: it completed before the interruption: its recorded changes are replayed;
    *skip*: a dry run, and the module does not use ``templateconfig.common``; or a run
    with ``--changed-only``, and none of the module's params changed since it last
    succeeded (:mod:`templateconfig.run.applied`);
    *run*: its preparation (if it had one, :mod:`templateconfig.run.prepare`) is waited
    for; the report says it runs; while its process runs, the report is rewritten, the
    fingerprint computed and the next Python module's process started ahead; then its
    outcome is recorded, durably if it succeeded, and what it prepared removed.
finish
    the report's final status (done, with warnings or not, or failed); the run state is
    removed; what each module that succeeded took is recorded for later
    ``--changed-only`` runs, and after a successful run the names of the keys it applied
    (:mod:`templateconfig.run.applied`).
interrupted (Ctrl-C, SIGTERM, any error)
    modules still running are reported failed ("interrupted"), the report finished as
    failed; the run state stays, so that the next run with the same params resumes.
always, at the end
    processes started ahead are stopped, finished children reaped, the journals removed,
    the run log closed.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Set, Tuple

from ovmd.runreport import ModuleStatus, RunStatus
from ovmd.secrets import RedactingFilter, is_secret_key
from templateconfig.run.applied import AppliedParams, key_matcher
from templateconfig.run.launcher import ModuleProcess
from templateconfig.run.outcome import module_output
from templateconfig.run.preload import preload_while, preloaded
from templateconfig.run.report import RunReport
from templateconfig.run.runlog import close_run_log, open_run_log
from templateconfig.run.runner import ModuleOutcome, Runner, RunResult
from templateconfig.run.scripts import Module, uses_common
from templateconfig.run.state import Completed, RunState, resumable

log = logging.getLogger(__name__)

_MISSING = object()
#: Why a module was not run.
PLAN_UNTRUSTED = ("does not use templateconfig.common, so it cannot be trusted in plan mode: "
                  "not run")
UNCHANGED = "its params did not change since it last succeeded: not run (--changed-only)"


class SecretValues:
    """The secret values of a run, shared by the log filter and the report writer."""

    def __init__(self, redactor: RedactingFilter, secret_keys: Iterable[str]) -> None:
        self.redactor = redactor
        self.secret_keys = set(secret_keys)
        self.values: Set[str] = set()

    def is_secret(self, key: str) -> bool:
        return is_secret_key(key, self.secret_keys)

    def update(self, params: Mapping[str, Any]) -> None:
        for key, value in params.items():
            if isinstance(value, str) and value and self.is_secret(key):
                self.values.add(value)
                self.redactor.add(value)

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)


class Run:
    """One run of a target's modules, from start to finish (the steps are in the module
    docstring). Created and executed by :meth:`Runner.run`, after validation (and under
    the run lock: it opens the run log)."""

    def __init__(self, runner: Runner, params: Dict[str, Any],
                 on_module: Optional[Callable[[ModuleOutcome], None]]) -> None:
        self.runner = runner
        self.target = runner.target
        self.launcher = runner.launcher
        self.modules = runner.modules()
        self.on_module = on_module
        self.initial = dict(params)
        self.params = params
        self.secrets = secrets = SecretValues(RedactingFilter(), runner.password_keys())
        secrets.update(params)
        write = not runner.dry_run
        self.report = RunReport(runner.paths, self.target,
                                [(m.priority, m.name) for m in self.modules], secrets,
                                write=write)
        self.state = RunState(runner.paths, self.target, self.initial,
                              {k for k in params if secrets.is_secret(k)}, enabled=write)
        self.handler = open_run_log(runner.paths, secrets.redactor) if write else None
        self.applied = AppliedParams(runner.paths, self.target, secrets.is_secret)
        self.matchers = [key_matcher(descs) for _, _, descs in runner.enumerate()]
        self.unchanged: Set[int] = set()  # --changed-only: the modules not to run
        self.journal_dir = tempfile.mkdtemp(prefix="ovm-template-config-")
        self.outcomes: List[ModuleOutcome] = []
        self.resumed: Dict[str, Completed] = {}
        self.to_run: List[int] = []  # indexes of the modules whose process runs
        self.journals: Dict[int, str] = {}
        self.ahead: Dict[int, Optional[ModuleProcess]] = {}  # index -> process started ahead

    def execute(self) -> RunResult:
        try:
            self._start()
            for index, module in enumerate(self.modules):
                if module.name in self.resumed:
                    outcome = self._resume(module)
                elif index in self.unchanged:
                    outcome = self._skip(module, UNCHANGED)
                elif index not in self.to_run:
                    outcome = self._skip(module, PLAN_UNTRUSTED)
                else:
                    outcome = self._run(index, module)
                self.outcomes.append(outcome)
                if self.on_module is not None:
                    self.on_module(outcome)
            ok, changed = self._finish()
        except BaseException as exc:
            self._interrupted(exc)
            raise
        finally:
            self._clean_up()
        return RunResult(self.target, ok, self.params, changed, self.outcomes,
                         self.runner.dry_run, self.report.to_dict())

    def _start(self) -> None:
        log.info("%s: starting %d module(s): %s", self.target, len(self.modules),
                 ", ".join("%s(%d)" % (m.name, m.priority) for m in self.modules) or "none")
        for problem in self.runner.problems:
            log.warning("%s", problem)
        self.resumed = resumable(self.state.load_previous(), self.modules)
        if self.resumed:
            log.info("%s: resuming an interrupted run after %s", self.target,
                     ", ".join(self.resumed))
        if self.launcher.fork and not preloaded() and self.state.costly_to_prepare():
            preload_while(self.state.prepare)
        if self.runner.changed_only:
            self.unchanged = self._unchanged()
        self.to_run = [i for i, m in enumerate(self.modules) if m.name not in self.resumed
                       and i not in self.unchanged
                       and not (self.runner.dry_run and not uses_common(m.path))]
        self.journals = {i: os.path.join(self.journal_dir, "%02d-%s.jsonl"
                                         % (i, self.modules[i].name))
                         for i in self.to_run}

    def _resume(self, module: Module) -> ModuleOutcome:
        """A module completed before the interruption: replay its changes."""
        entry = self.resumed[module.name]
        self.params.update(entry["changes"])
        for key in entry["removed"]:
            self.params.pop(key, None)
        self.state.carry_over(entry)
        self.report.update(module.name, ModuleStatus.OK, 0.0, None, write=False, resumed=True)
        log.info("%s: %s already completed before the interruption", self.target, module.name)
        return ModuleOutcome(module, ModuleStatus.OK, 0.0, None, dict(entry["changes"]),
                             list(entry["removed"]), [], resumed=True)

    def _unchanged(self) -> Set[int]:
        """``--changed-only``: the modules none of whose params changed since they last
        succeeded."""
        unchanged = set()
        for index, module in enumerate(self.modules):
            keys = self.applied.changed_keys(module.name, self.matchers[index], self.params)
            if keys:
                log.info("%s: %s runs again: changed %s", self.target, module.name,
                         ", ".join(keys))
            else:
                unchanged.add(index)
        return unchanged

    def _skip(self, module: Module, reason: str) -> ModuleOutcome:
        """Not run: plan mode and the module does not use ``templateconfig.common``, or
        ``--changed-only`` and its params did not change."""
        self.report.update(module.name, ModuleStatus.SKIPPED, 0.0, reason, write=False)
        return ModuleOutcome(module, ModuleStatus.SKIPPED, 0.0, reason, {}, [], [])

    def _run(self, index: int, module: Module) -> ModuleOutcome:
        """Run a module's process; record its outcome (durably if it succeeded)."""
        self.report.update(module.name, ModuleStatus.RUNNING, write=False)
        later = [i for i in self.to_run if i > index]
        meanwhile = functools.partial(self._while_running, later[0] if later else None)
        outcome = self._launch(index, module, meanwhile)
        from templateconfig.run.plan import describe, guest_changes

        if outcome.status == ModuleStatus.OK:
            secret = [k for k in outcome.changed if self.secrets.is_secret(k)]
            self.secrets.update(outcome.changed)
            self.state.module_done(module.name, module.priority,
                                   {k: v for k, v in outcome.changed.items() if k not in secret},
                                   outcome.removed, secret)
            self.applied.module_done(module.name, self.matchers[index], self.params)
        # written with the next module's start, or by _finish()
        self.report.update(module.name, outcome.status, outcome.seconds, outcome.error,
                           write=False,
                           actions=[describe(a) for a in guest_changes(outcome.actions)],
                           warnings=list(outcome.warnings), stderr=outcome.stderr)
        _log_outcome(self.target, outcome)
        return outcome

    def _launch(self, index: int, module: Module, meanwhile: Callable[[], None]) -> ModuleOutcome:
        """The module's process with the params on stdin; its output becomes the params.
        What it prepared (if anything) is ready before it starts, and removed after."""
        preparation = self.runner.preparation
        if preparation is not None:
            preparation.wait(module)
        log.info("%s: running %s (priority %d)", self.target, module.name, module.priority)
        journal = self.journals[index]
        try:
            result = self.launcher.run(module.path, [self.target],
                                       json.dumps(self.params).encode("utf-8"),
                                       self.runner.timeout,
                                       self.runner.module_env(journal, module), meanwhile,
                                       self.ahead.pop(index, None))
        finally:
            if preparation is not None:
                preparation.discard(module)
        # (imported once a module ran: by then the preload imported what plan needs)
        from templateconfig.run.plan import read_actions

        actions = read_actions(journal)
        answer = module_output(result, self.runner.timeout, module.name)
        output = answer.params
        if output is None:
            return ModuleOutcome(module, ModuleStatus.FAILED, result.seconds, answer.error, {},
                                 [], actions, warnings=tuple(answer.warnings),
                                 stderr=answer.stderr)
        params, self.params = self.params, output
        changed = {k: v for k, v in output.items() if params.get(k, _MISSING) != v}
        removed = sorted(k for k in params if k not in output)
        return ModuleOutcome(module, ModuleStatus.OK, result.seconds, None, changed, removed,
                             actions, warnings=tuple(answer.warnings), stderr=answer.stderr)

    def _while_running(self, following: Optional[int]) -> None:
        """The parent's work while a module's process runs (on another CPU, its start-up
        overlaps this): rewrite the run report, which now says the module is running (an
        error aborts the run, the module killed, as an error before its start did); the
        first time, the state's fingerprint (PBKDF2 over the secrets, needed once the
        module is done; an error is logged and the fingerprint computed again when it is
        needed); and start the process of the ``following`` module ahead."""
        self.report.write()
        try:
            self.state.prepare()
        except Exception as exc:
            log.debug("cannot compute the run state's fingerprint yet: %s", exc)
        if following is not None and self.launcher.fork:
            try:
                module = self.modules[following]
                self.ahead[following] = self.launcher.prefork(
                    module.path, [self.target],
                    self.runner.module_env(self.journals[following], module))
            except OSError as exc:  # then it is started when its turn comes
                log.debug("cannot start %s ahead: %s", self.modules[following].name, exc)

    def _finish(self) -> Tuple[bool, List[str]]:
        """(every module succeeded, the changed keys); the report says so, the run state
        is removed."""
        changed = sorted(k for k, v in self.params.items() if self.initial.get(k, _MISSING) != v)
        failed = [o.module.name for o in self.outcomes if o.status == ModuleStatus.FAILED]
        self.report.finish(RunStatus.FAILED if failed else RunStatus.DONE, changed)
        self.state.remove()
        if not self.runner.dry_run:
            try:
                self.applied.save()
            except OSError as exc:  # later --changed-only runs then run these modules again
                log.warning("cannot record what the modules applied: %s", exc)
        warnings = self.report.warnings
        log.info("%s: %s%s; changed keys: %s", self.target,
                 "failed: %s" % ", ".join(failed) if failed else "all modules succeeded",
                 " (%d warning%s)" % (warnings, "" if warnings == 1 else "s") if warnings else "",
                 ", ".join(changed) or "none")
        if not failed and not self.runner.dry_run:
            self._remember_applied()
        return not failed, changed

    def _remember_applied(self) -> None:
        """Record the names of the keys this successful run applied: those of its params
        (input and output) that its modules declare; a successful cleanup forgets what
        configure runs applied (a sealed template's clones are given everything)."""
        from templateconfig.run.applied import forget, remember

        declared = {desc.get("key") for _, _, descs in self.runner.enumerate()
                    for desc in descs if isinstance(desc, dict)}
        keys = [k for k in set(self.initial) | set(self.params) if k in declared]
        try:
            remember(self.runner.paths, self.target, keys)
            if self.target == "cleanup":
                forget(self.runner.paths, "configure")
        except OSError as exc:
            log.warning("%s: cannot record the keys this run applied: %s", self.target, exc)

    def _interrupted(self, exc: BaseException) -> None:
        """Ctrl-C, SIGTERM or an error: the report says so; the run state stays."""
        self.report.interrupted()
        try:
            self.report.finish(RunStatus.FAILED, [])
        except OSError:
            pass
        log.warning("%s: run interrupted (%s); the next run with the same params "
                    "resumes after the completed modules", self.target, type(exc).__name__)

    def _clean_up(self) -> None:
        for child in self.ahead.values():
            self.launcher.discard(child)
        self.state.close()
        self.launcher.reap()
        shutil.rmtree(self.journal_dir, ignore_errors=True)
        if self.handler is not None:
            close_run_log(self.handler)


def _log_outcome(target: str, outcome: ModuleOutcome) -> None:
    name = outcome.module.name
    if outcome.status == ModuleStatus.OK:
        log.info("%s: %s %s in %.3f s; changed keys: %s", target, name, ModuleStatus.OK,
                 outcome.seconds, ", ".join(sorted(outcome.changed)) or "none")
    else:
        log.warning("%s: %s %s in %.3f s: %s", target, name, outcome.status, outcome.seconds,
                    outcome.error)
    for warning in outcome.warnings:
        log.warning("%s: %s: warning: %s", target, name, warning)
    if outcome.status == ModuleStatus.FAILED and outcome.stderr:
        log.info("%s: %s: its stderr: %s", target, name, " | ".join(
            line for line in outcome.stderr.splitlines() if line.strip()))
