"""The orchestration of a run: order, enumerate, validate, run, resume, skip, interrupt.

:class:`Runner` holds what a target's run needs before it starts (the enabled modules,
their descriptors, the validation of the params, the run lock); :class:`_TargetRun` is
one run, step by step:

start
    log the modules; find what an interrupted run of the same target and params completed
    (:mod:`templateconfig.run.state`); import what modules import while the PBKDF2 of the
    run state's fingerprint runs (:func:`templateconfig.run.preload.preload_while`).
each module, in (priority, name) order, one of
    *resume*: it completed before the interruption: its recorded changes are replayed;
    *skip*: a dry run, and the module does not use ``templateconfig.common``;
    *run*: the report says it runs; while its process runs, the report is rewritten, the
    fingerprint computed and the next Python module's process started ahead; then its
    outcome is recorded, durably if it succeeded.
finish
    the report's final status; the run state is removed.
interrupted (Ctrl-C, SIGTERM, any error)
    modules still running are reported failed ("interrupted"), the report finished as
    failed; the run state stays, so that the next run with the same params resumes.
always, at the end
    processes started ahead are stopped, finished children reaped, the journals removed,
    the run log closed.

Module scripts stay separate processes (:mod:`templateconfig.run.launcher`); a module's
descriptors come from the enumerate cache when its script is unchanged
(:mod:`templateconfig.run.enumcache`), so a steady-state run forks once per module, not
twice. A run that can change the system holds the root's run lock
(:mod:`templateconfig.run.lock`).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import tempfile
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from ovmd.paths import ROOT_ENV, Paths
from ovmd.runreport import ModuleStatus, RunStatus
from ovmd.secrets import RedactingFilter, is_secret_key
from templateconfig.run.contract import ACTIONS_ENV, DEFAULT_TIMEOUT, DRY_RUN_ENV, NO_FORK_ENV
from templateconfig.run.enumcache import EnumerateCache, script_identity
from templateconfig.run.launcher import Launcher, ModuleProcess, ProcessResult
from templateconfig.run.lock import RunLock
from templateconfig.run.plan import describe, read_actions
from templateconfig.run.preload import preload_while, preloaded
from templateconfig.run.report import RunReport
from templateconfig.run.runlog import close_run_log, open_run_log
from templateconfig.run.scripts import Module, uses_common
from templateconfig.run.state import Completed, RunState, resumable

log = logging.getLogger(__name__)

_STDERR_LIMIT = 4000
_MISSING = object()
#: A module's enumeration as Oracle's ``--enumerate`` prints it: (priority, name, descriptors).
Enumeration = List[Tuple[int, str, List[dict]]]


class RunnerError(Exception):
    """The run cannot start (unknown target or module); the message says why."""


class ValidationError(RunnerError):
    """The params do not satisfy the modules' descriptors; nothing was run."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid parameters, nothing was run:\n  " + "\n  ".join(self.problems))


class ModuleOutcome(NamedTuple):
    """What one module did in a run."""

    module: Module
    status: str  # a ModuleStatus: OK, FAILED or SKIPPED
    seconds: float
    error: Optional[str]
    changed: Dict[str, Any]
    removed: List[str]
    actions: List[Dict[str, Any]]
    resumed: bool = False


class RunResult(NamedTuple):
    """The outcome of :meth:`Runner.run`."""

    target: str
    ok: bool
    params: Dict[str, Any]  # the final params
    changed_keys: List[str]
    outcomes: List[ModuleOutcome]
    dry_run: bool
    report: Dict[str, Any]  # the run report (docs/formats.md), redacted


def module_env(paths: Paths, dry_run: bool,
               base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment of module processes (the actions journal is added per module)."""
    env = dict(os.environ if base is None else base)
    env[ROOT_ENV] = paths.root
    env.pop(ACTIONS_ENV, None)
    env.pop(NO_FORK_ENV, None)
    if dry_run:
        env[DRY_RUN_ENV] = "1"
    else:
        env.pop(DRY_RUN_ENV, None)
    return env


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def _tail(text: str, limit: int = _STDERR_LIMIT) -> str:
    text = text.strip()
    if len(text) > limit:
        text = "...\n" + text[-limit:]
    return text


def failure_reason(result: ProcessResult, timeout: float) -> Optional[str]:
    """Why a module process failed (with its stderr), or None if it exited 0."""
    if result.timed_out:
        summary = "timed out after %g s and was killed" % timeout
    elif result.returncode < 0:
        try:
            name = signal.Signals(-result.returncode).name
        except ValueError:
            name = "signal %d" % -result.returncode
        summary = "killed by %s" % name
    elif result.returncode != 0:
        summary = "exited with status %d" % result.returncode
    else:
        return None
    stderr = _tail(_decode(result.stderr))
    return summary + (":\n" + stderr if stderr else " (no error output)")


def parse_output(result: ProcessResult) -> Dict[str, Any]:
    """The JSON object a module printed; ValueError saying what is wrong otherwise."""
    text = _decode(result.stdout).strip()
    if not text:
        raise ValueError("printed nothing on stdout (expected the params as a JSON object)")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError("printed invalid JSON on stdout (%s): %s" % (exc, text[:200]))
    if not isinstance(value, dict):
        raise ValueError("printed a JSON %s on stdout, expected an object of key -> value"
                         % type(value).__name__)
    return value


def parse_descriptors(result: ProcessResult, timeout: float) -> Tuple[List[dict], Optional[str]]:
    """(descriptors, None) from a module's ``--enumerate`` process, or ([], why not)."""
    error = failure_reason(result, timeout)
    if error is not None:
        return [], error
    try:
        value = json.loads(_decode(result.stdout) or "[]")
    except ValueError as exc:
        return [], "printed an invalid descriptor list: %s" % exc
    if not isinstance(value, list):
        return [], ("printed an invalid descriptor list: expected a JSON list, got a JSON %s"
                    % type(value).__name__)
    return value, None


class _SecretValues:
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


class Runner:
    """Runs one target's modules under ``paths`` (see the package docstring).

    ``only`` restricts the run to one module name (``-s NAME``); ``fork`` None follows
    ``OVM_TEMPLATE_CONFIG_NO_FORK``. In ``dry_run`` mode modules run in plan mode,
    modules that do not use ``templateconfig.common`` are skipped, and no report, log or
    state file is written.
    """

    def __init__(self, paths: Paths, target: str, timeout: float = DEFAULT_TIMEOUT,
                 dry_run: bool = False, only: Optional[str] = None,
                 fork: Optional[bool] = None,
                 lock_timeout: Optional[float] = None) -> None:
        from templateconfig.header import TARGETS
        from templateconfig.run.contract import DEFAULT_LOCK_TIMEOUT

        if target not in TARGETS:
            raise RunnerError("unknown target %r; the targets are: %s"
                              % (target, ", ".join(TARGETS)))
        self.paths = paths
        self.target = target
        self.timeout = timeout
        self.dry_run = dry_run
        self.only = only
        self.env = module_env(paths, dry_run)
        self.launcher = Launcher(self.env, fork)
        self.problems: List[str] = []  # registry entries skipped
        self.enumerate_errors: Dict[str, str] = {}
        self._modules: Optional[List[Module]] = None
        self._enumeration: Optional[Enumeration] = None
        self._secrets: Optional[_SecretValues] = None
        self.lock_timeout = DEFAULT_LOCK_TIMEOUT if lock_timeout is None else lock_timeout
        #: Called with the holder's pid when the run lock is busy and the run waits.
        self.on_lock_wait: Optional[Callable[[Optional[int]], None]] = None
        self._lock: Optional[RunLock] = None
        self._cache: Optional[EnumerateCache] = None
        self._from_cache = 0  # modules whose descriptors came from the enumerate cache

    def redact(self, text: str) -> str:
        """``text`` without the secret values of the last run (input and produced)."""
        from ovmd.secrets import redact

        return redact(text, self._secrets) if self._secrets is not None else text

    def modules(self) -> List[Module]:
        """The enabled modules of the target, in run order."""
        if self._modules is None:
            from templateconfig.registry import RegistryError, enabled_modules

            try:
                found = [Module(*entry) for entry in
                         enabled_modules(self.paths, self.target, self.problems)]
            except RegistryError as exc:
                raise RunnerError(str(exc)) from None
            if self.only is not None:
                found = [m for m in found if m.name == self.only]
                if not found:
                    raise RunnerError("module %r is not enabled for target %s under %s (see "
                                      "ovm-chkconfig --list)" % (
                                          self.only, self.target,
                                          self.paths.target_dir(self.target)))
            self._modules = found
        return self._modules

    def run_lock(self) -> RunLock:
        """The run lock of this root, reentrant: ``with runner.run_lock():`` around
        several steps keeps it across them."""
        if self._lock is None:
            self._lock = RunLock(self.paths, self.lock_timeout, on_wait=self._lock_wait)
        return self._lock

    def _lock_wait(self, pid: Optional[int]) -> None:
        if self.on_lock_wait is not None:
            self.on_lock_wait(pid)

    def enumerate_cache(self) -> EnumerateCache:
        if self._cache is None:
            self._cache = EnumerateCache(self.paths)
        return self._cache

    def enumerate(self) -> Enumeration:
        """``[priority, name, descriptors]`` per module (Oracle's ``--enumerate`` shape).

        Modules whose script is unchanged since a previous run come from the enumerate
        cache; the others are enumerated all at once. A module whose enumeration fails
        is listed with no descriptors and its error kept in :attr:`enumerate_errors`.
        """
        if self._enumeration is None:
            modules = self.modules()
            cache = self.enumerate_cache()
            identities = [script_identity(m.path) for m in modules]
            found: Dict[int, List[dict]] = {}
            for index, module in enumerate(modules):
                cached = cache.get(self.target, module.path, identities[index])
                if cached is not None:
                    found[index] = cached
            self._from_cache = len(found)
            missing = [i for i in range(len(modules)) if i not in found]
            results = self.launcher.run_many(
                [(modules[i].path, ["--enumerate", self.target], b"", None) for i in missing],
                self.timeout)
            for index, result in zip(missing, results):
                module = modules[index]
                found[index], error = parse_descriptors(result, self.timeout)
                if error is not None:
                    self.enumerate_errors[module.name] = "enumerate " + error
                    log.info("%s: --enumerate %s %s", module.name, self.target, error)
                else:
                    cache.put(self.target, module.path, identities[index], found[index])
            self._enumeration = [(m.priority, m.name, found[i]) for i, m in enumerate(modules)]
        return self._enumeration

    def password_keys(self) -> Set[str]:
        from templateconfig.descriptors import password_keys

        return password_keys([(name, descs) for _, name, descs in self.enumerate()])

    def validate(self, params: Mapping[str, Any]) -> None:
        """Raise :class:`ValidationError` if ``params`` do not satisfy every module."""
        from templateconfig.descriptors import validate_params

        problems = validate_params([(name, descs) for _, name, descs in self.enumerate()], params)
        if problems and self._from_cache:
            # cached descriptors may be stale (a module reading them from another file):
            # refuse only what fresh ones refuse too
            self._enumeration = None
            self.enumerate_errors.clear()
            self.enumerate_cache().use_cached = False
            problems = validate_params([(name, descs) for _, name, descs in self.enumerate()],
                                       params)
        if problems:
            raise ValidationError(problems)

    def run(self, params: Mapping[str, Any],
            on_module: Optional[Callable[[ModuleOutcome], None]] = None) -> RunResult:
        """Validate, then run every module; see the package docstring.

        Unless in dry-run mode, the run holds the run lock of the root
        (:meth:`run_lock`) from after the validation to the end, waiting up to
        ``lock_timeout`` for another run to finish
        (:class:`templateconfig.run.lock.LockTimeout`).
        """
        params = dict(params)
        self.validate(params)
        self._secrets = _SecretValues(RedactingFilter(), self.password_keys())
        if self.dry_run:
            return _TargetRun(self, params, self._secrets, on_module).execute()
        with self.run_lock():
            try:
                self.enumerate_cache().save()
            except OSError as exc:
                log.info("cannot write the enumerate cache: %s", exc)
            return _TargetRun(self, params, self._secrets, on_module).execute()

    def module_env(self, journal: str) -> Dict[str, str]:
        """The environment of one module process, whose actions go to ``journal``."""
        env = dict(self.env)
        env[ACTIONS_ENV] = journal
        return env


class _TargetRun:
    """One run of a target's modules, from start to finish (the steps are in the module
    docstring). Created and executed by :meth:`Runner.run`, after validation."""

    def __init__(self, runner: Runner, params: Dict[str, Any], secrets: _SecretValues,
                 on_module: Optional[Callable[[ModuleOutcome], None]]) -> None:
        self.runner = runner
        self.target = runner.target
        self.launcher = runner.launcher
        self.modules = runner.modules()
        self.on_module = on_module
        self.initial = dict(params)
        self.params = params
        self.secrets = secrets
        secrets.update(params)
        write = not runner.dry_run
        self.report = RunReport(runner.paths, self.target,
                                [(m.priority, m.name) for m in self.modules], secrets,
                                write=write)
        self.state = RunState(runner.paths, self.target, self.initial,
                              {k for k in params if secrets.is_secret(k)}, enabled=write)
        self.handler = open_run_log(runner.paths, secrets.redactor) if write else None
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
                elif index not in self.to_run:
                    outcome = self._skip(module)
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
        self.to_run = [i for i, m in enumerate(self.modules) if m.name not in self.resumed
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

    def _skip(self, module: Module) -> ModuleOutcome:
        """Plan mode, and the module does not use ``templateconfig.common``."""
        reason = ("does not use templateconfig.common, so it cannot be trusted in plan mode: "
                  "not run")
        self.report.update(module.name, ModuleStatus.SKIPPED, 0.0, reason, write=False)
        return ModuleOutcome(module, ModuleStatus.SKIPPED, 0.0, reason, {}, [], [])

    def _run(self, index: int, module: Module) -> ModuleOutcome:
        """Run a module's process; record its outcome (durably if it succeeded)."""
        self.report.update(module.name, ModuleStatus.RUNNING, write=False)
        later = [i for i in self.to_run if i > index]
        meanwhile = functools.partial(self._while_running, later[0] if later else None)
        outcome = self._launch(index, module, meanwhile)
        if outcome.status == ModuleStatus.OK:
            secret = [k for k in outcome.changed if self.secrets.is_secret(k)]
            self.secrets.update(outcome.changed)
            self.state.module_done(module.name, module.priority,
                                   {k: v for k, v in outcome.changed.items() if k not in secret},
                                   outcome.removed, secret)
        # written with the next module's start, or by _finish()
        self.report.update(module.name, outcome.status, outcome.seconds, outcome.error,
                           write=False, actions=[describe(a) for a in outcome.actions])
        _log_outcome(self.target, outcome)
        return outcome

    def _launch(self, index: int, module: Module, meanwhile: Callable[[], None]) -> ModuleOutcome:
        """The module's process with the params on stdin; its output becomes the params."""
        log.info("%s: running %s (priority %d)", self.target, module.name, module.priority)
        journal = self.journals[index]
        result = self.launcher.run(module.path, [self.target],
                                   json.dumps(self.params).encode("utf-8"), self.runner.timeout,
                                   self.runner.module_env(journal), meanwhile,
                                   self.ahead.pop(index, None))
        actions = read_actions(journal)
        error = failure_reason(result, self.runner.timeout)
        output: Optional[Dict[str, Any]] = None
        if error is None:
            try:
                output = parse_output(result)
            except ValueError as exc:
                stderr = _tail(_decode(result.stderr))
                error = str(exc) + ("\n" + stderr if stderr else "")
        if output is None:
            return ModuleOutcome(module, ModuleStatus.FAILED, result.seconds, error, {}, [],
                                 actions)
        params, self.params = self.params, output
        changed = {k: v for k, v in output.items() if params.get(k, _MISSING) != v}
        removed = sorted(k for k in params if k not in output)
        return ModuleOutcome(module, ModuleStatus.OK, result.seconds, None, changed, removed,
                             actions)

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
                self.ahead[following] = self.launcher.prefork(
                    self.modules[following].path, [self.target],
                    self.runner.module_env(self.journals[following]))
            except OSError as exc:  # then it is started when its turn comes
                log.debug("cannot start %s ahead: %s", self.modules[following].name, exc)

    def _finish(self) -> Tuple[bool, List[str]]:
        """(every module succeeded, the changed keys); the report says so, the run state
        is removed."""
        changed = sorted(k for k, v in self.params.items() if self.initial.get(k, _MISSING) != v)
        failed = [o.module.name for o in self.outcomes if o.status == ModuleStatus.FAILED]
        self.report.finish(RunStatus.FAILED if failed else RunStatus.DONE, changed)
        self.state.remove()
        log.info("%s: %s; changed keys: %s", self.target,
                 "failed: %s" % ", ".join(failed) if failed else "all modules succeeded",
                 ", ".join(changed) or "none")
        return not failed, changed

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


def run_target(paths: Paths, target: str, params: Mapping[str, Any], **options: Any) -> RunResult:
    """Run ``target`` under ``paths`` with ``params``; options as for :class:`Runner`."""
    return Runner(paths, target, **options).run(params)
