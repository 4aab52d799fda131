"""The runner: a target's modules, their descriptors, the validation of the params and the
run lock; :meth:`Runner.run` then hands over to :class:`templateconfig.run.steps.Run`,
which runs the modules step by step (start, resume, skip, run, finish, interrupted).

A module's descriptors come from the enumerate cache when its script is unchanged
(:mod:`templateconfig.run.enumcache`), so a steady-state run forks once per module, not
twice; the others are enumerated all at once (:mod:`templateconfig.run.launcher`). A run
that can change the system holds the root's run lock (:mod:`templateconfig.run.lock`).
The modules of a run's steps are imported when a run starts, not for ``--enumerate``.
"""
from __future__ import annotations

import json
import logging
import os
import signal
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from ovmd.paths import ROOT_ENV, Paths
from ovmd.secretkeys import script_identity
from templateconfig.run.contract import ACTIONS_ENV, DEFAULT_TIMEOUT, DRY_RUN_ENV, NO_FORK_ENV
from templateconfig.run.enumcache import EnumerateCache
from templateconfig.run.launcher import Launcher, ProcessResult
from templateconfig.run.scripts import Module

if TYPE_CHECKING:
    from templateconfig.run.lock import RunLock

log = logging.getLogger(__name__)

_STDERR_LIMIT = 4000
#: A module's enumeration as Oracle's ``--enumerate`` prints it: (priority, name, descriptors).
Enumeration = List[Tuple[int, str, List[dict]]]


class RunnerError(Exception):
    """The run cannot start (unknown target or module); the message says why."""


class StateFilesError(RunnerError):
    """The runner's own files cannot be used (a symbolic link on the way leads out of the
    root, say); nothing was run."""


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


def module_output(result: ProcessResult, timeout: float) -> Tuple[Optional[Dict[str, Any]],
                                                                Optional[str]]:
    """(the params a module printed, None), or (None, why it failed, with its stderr)."""
    error = failure_reason(result, timeout)
    if error is not None:
        return None, error
    try:
        return parse_output(result), None
    except ValueError as exc:
        stderr = _tail(_decode(result.stderr))
        return None, str(exc) + ("\n" + stderr if stderr else "")


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
        #: one-line warnings for the run log and stderr: registry entries skipped, state
        #: files put right
        self.problems: List[str] = []
        self.enumerate_errors: Dict[str, str] = {}
        self._modules: Optional[List[Module]] = None
        self._enumeration: Optional[Enumeration] = None
        self._secrets: Optional[Iterable[str]] = None  # the last run's secret values
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
            from templateconfig.run.lock import RunLock

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
        """Validate, then run every module (:mod:`templateconfig.run.steps`).

        Unless in dry-run mode, the run holds the run lock of the root
        (:meth:`run_lock`) from after the validation to the end, waiting up to
        ``lock_timeout`` for another run to finish
        (:class:`templateconfig.run.lock.LockTimeout`).
        """
        params = dict(params)
        self.validate(params)
        if self.dry_run:
            return self._execute(params, on_module)
        with self.run_lock():
            self._claim_state_files()
            try:
                self.enumerate_cache().save()
            except OSError as exc:
                log.info("cannot write the enumerate cache: %s", exc)
            return self._execute(params, on_module)

    def _claim_state_files(self) -> None:
        """The runner's files inside the root, with their modes (before anything is
        written: :mod:`templateconfig.run.statefiles`); what was put right is a problem."""
        from templateconfig.run.statefiles import claim_state_files

        try:
            self.problems.extend(claim_state_files(self.paths))
        except OSError as exc:
            text = str(exc) if exc.filename is None else "%s: %s" % (exc.filename,
                                                                     exc.strerror)
            raise StateFilesError("cannot use the runner's files, nothing was run: %s"
                                  % text) from None

    def _execute(self, params: Dict[str, Any],
                 on_module: Optional[Callable[[ModuleOutcome], None]]) -> RunResult:
        from templateconfig.run.steps import Run

        run = Run(self, params, on_module)
        self._secrets = run.secrets
        return run.execute()

    def module_env(self, journal: str) -> Dict[str, str]:
        """The environment of one module process, whose actions go to ``journal``."""
        env = dict(self.env)
        env[ACTIONS_ENV] = journal
        return env


def run_target(paths: Paths, target: str, params: Mapping[str, Any], **options: Any) -> RunResult:
    """Run ``target`` under ``paths`` with ``params``; options as for :class:`Runner`."""
    return Runner(paths, target, **options).run(params)
