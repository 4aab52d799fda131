"""The runner: a target's modules, their descriptors, the validation of the params and the
run lock; :meth:`Runner.run` then hands over to :class:`templateconfig.run.steps.Run`,
which runs the modules step by step (start, resume, skip, run, finish, interrupted).
What needs no params (the modules' prepare work, the imports, the descriptors) can start
before they arrive: :meth:`Runner.start_early`.

A standard module (its header names its spec) gives its descriptors and validators from
its declaration, in this process (:mod:`templateconfig.run.scripts`). Another module's
descriptors come from the enumerate cache when its script is unchanged
(:mod:`templateconfig.run.enumcache`), so a steady-state run forks once per module, not
twice; the others are enumerated all at once (:mod:`templateconfig.run.launcher`).
Every problem with the params is found before any module starts
(:mod:`templateconfig.run.validation`); a refused run changes nothing but the run report
and the log. A run that can change the system holds the root's run lock
(:mod:`templateconfig.run.lock`).
"""
from __future__ import annotations

import logging
import os
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
from templateconfig.run.contract import (
    ACTIONS_ENV,
    CHANGED_ONLY_ENV,
    DEFAULT_TIMEOUT,
    DRY_RUN_ENV,
    NO_FORK_ENV,
    STAGING_ENV,
)
from templateconfig.run.enumcache import EnumerateCache
from templateconfig.run.launcher import Launcher
from templateconfig.run.scripts import Module

if TYPE_CHECKING:
    from templateconfig.modules.support.spec import ModuleSpec
    from templateconfig.run.lock import RunLock
    from templateconfig.run.prepare import Preparation

log = logging.getLogger(__name__)

#: A module's enumeration as Oracle's ``--enumerate`` prints it: (priority, name, descriptors).
Enumeration = List[Tuple[int, str, List[dict]]]


class RunnerError(Exception):
    """The run cannot start (unknown target or module); the message says why."""


class StateFilesError(RunnerError):
    """The runner's own files cannot be used (a symbolic link on the way leads out of the
    root, say); nothing was run."""


class ValidationError(RunnerError):
    """The params do not satisfy the modules; nothing was run. ``problems``: one line
    each, ``MODULE: KEY: REASON``; ``report``: the run report saying so (None for a dry
    run, which writes none)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        self.report: Optional[Dict[str, Any]] = None
        super().__init__("invalid parameters (%d problem%s): nothing was changed"
                         % (len(self.problems), "" if len(self.problems) == 1 else "s"))


class ModuleOutcome(NamedTuple):
    """What one module did in a run."""

    module: Module
    status: str  # a ModuleStatus: OK, FAILED or SKIPPED
    seconds: float
    error: Optional[str]  # one line
    changed: Dict[str, Any]
    removed: List[str]
    actions: List[Dict[str, Any]]
    resumed: bool = False
    warnings: Tuple[str, ...] = ()
    stderr: str = ""  # the end of its stderr (not redacted yet)


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
               base: Optional[Mapping[str, str]] = None,
               changed_only: bool = False) -> Dict[str, str]:
    """The environment of module processes (the actions journal is added per module)."""
    env = dict(os.environ if base is None else base)
    env[ROOT_ENV] = paths.root
    for name in (ACTIONS_ENV, NO_FORK_ENV, STAGING_ENV, CHANGED_ONLY_ENV):
        env.pop(name, None)
    if changed_only:
        env[CHANGED_ONLY_ENV] = "1"
    if dry_run:
        env[DRY_RUN_ENV] = "1"
    else:
        env.pop(DRY_RUN_ENV, None)
    return env


class Runner:
    """Runs one target's modules under ``paths`` (see the package docstring).

    ``only`` restricts the run to one module name (``-s NAME``); ``fork`` None follows
    ``OVM_TEMPLATE_CONFIG_NO_FORK``. In ``dry_run`` mode modules run in plan mode,
    modules that do not use ``templateconfig.common`` are skipped, and no report, log or
    state file is written. ``first_boot``: a required key is never counted as given
    by an earlier run (:mod:`templateconfig.run.applied`). ``changed_only``: run only
    the modules whose params changed since they last succeeded (the same module); the
    others are skipped. :meth:`close` ends what the runner started (its runner
    directory).
    """

    def __init__(self, paths: Paths, target: str, timeout: float = DEFAULT_TIMEOUT,
                 dry_run: bool = False, only: Optional[str] = None,
                 fork: Optional[bool] = None,
                 lock_timeout: Optional[float] = None, first_boot: bool = False,
                 changed_only: bool = False) -> None:
        from templateconfig.header import TARGETS
        from templateconfig.run.contract import DEFAULT_LOCK_TIMEOUT
        from templateconfig.run.runnerdir import RunnerDir

        if target not in TARGETS:
            raise RunnerError("unknown target %r; the targets are: %s"
                              % (target, ", ".join(TARGETS)))
        self.paths = paths
        self.target = target
        self.timeout = timeout
        self.dry_run = dry_run
        self.only = only
        self.first_boot = first_boot
        self.changed_only = changed_only
        self.env = module_env(paths, dry_run, changed_only=changed_only)
        self.launcher = Launcher(self.env, fork)
        #: where the groups of our module processes are recorded (and staging lives)
        self.runner_dir = RunnerDir(paths)
        #: the modules' prepare work (:meth:`start_early`), None before or without it
        self.preparation: Optional[Preparation] = None
        #: one-line warnings for the run log and stderr: registry entries skipped, state
        #: files put right
        self.problems: List[str] = []
        self.enumerate_errors: Dict[str, str] = {}
        self._modules: Optional[List[Module]] = None
        self._specs: Optional[Dict[str, ModuleSpec]] = None
        self._enumeration: Optional[Enumeration] = None
        self._secrets: Optional[Iterable[str]] = None  # the last run's secret values
        self.lock_timeout = DEFAULT_LOCK_TIMEOUT if lock_timeout is None else lock_timeout
        #: Called with the holder's pid when the run lock is busy and the run waits.
        self.on_lock_wait: Optional[Callable[[Optional[int]], None]] = None
        self._lock: Optional[RunLock] = None
        self._cache: Optional[EnumerateCache] = None
        #: the modules whose descriptors came from the enumerate cache
        self._from_cache: Set[str] = set()

    def start_early(self) -> None:
        """Do what a run needs before its params: start the modules' prepare calls
        (:mod:`templateconfig.run.prepare`), import what modules import, enumerate.
        Nothing in the guest changes (a dry run prepares nothing)."""
        modules = self.modules()
        if not self.dry_run and self.preparation is None:
            from templateconfig.run.prepare import Preparation

            self.preparation = Preparation(self.runner_dir, self.target, self.launcher,
                                           self.env, self.timeout)
            self.preparation.start(modules)
        if self.launcher.fork and any(self.launcher.argv(m.path, [])[0] for m in modules):
            from templateconfig.run.preload import preload

            preload()
        self.enumerate()

    def close(self) -> None:
        """Stop prepare calls still running, kill what is left of our module processes,
        remove our runner directory (what was staged with it)."""
        if self.preparation is not None:
            self.preparation.close()
            self.preparation = None
        self.runner_dir.close()

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

    def specs(self) -> Dict[str, ModuleSpec]:
        """Module name -> the spec its header names, for the standard modules of the run
        (a spec that cannot be loaded is a problem of the run, and the module is treated
        as any other)."""
        if self._specs is None:
            from templateconfig.run.scripts import SpecError, declared_spec, load_spec

            self._specs = {}
            for module in self.modules():
                dotted = declared_spec(module.path)
                if dotted is None:
                    continue
                try:
                    self._specs[module.name] = load_spec(dotted)
                except SpecError as exc:
                    self.problems.append("%s: %s" % (module.path, exc))
        return self._specs

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
            from templateconfig.run.outcome import parse_descriptors

            modules = self.modules()
            specs = self.specs()
            cache = self.enumerate_cache()
            identities = [script_identity(m.path) for m in modules]
            found: Dict[int, List[dict]] = {}
            for index, module in enumerate(modules):
                spec = specs.get(module.name)
                if spec is not None:
                    found[index] = spec.enumerate(self.target)
                    continue
                cached = cache.get(self.target, module.path, identities[index])
                if cached is not None:
                    found[index] = cached
                    self._from_cache.add(module.name)
            missing = [i for i in range(len(modules)) if i not in found]
            results = self.launcher.run_many(
                [(modules[i].path, ["--enumerate", self.target], b"", None) for i in missing],
                self.timeout)
            for index, result in zip(missing, results):
                module = modules[index]
                found[index], error = parse_descriptors(result, self.timeout, module.name)
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

    def given_keys(self) -> Set[str]:
        """Keys that count as given though absent: those earlier successful runs of the
        target applied (none on a first boot)."""
        if self.first_boot:
            return set()
        from templateconfig.run.applied import applied_keys

        return applied_keys(self.paths, self.target)

    def problems_with(self, params: Mapping[str, Any]) -> List[str]:
        """Every problem with ``params`` for this run (:mod:`templateconfig.run.validation`)."""
        from templateconfig.run.validation import problems

        def check() -> List[str]:
            specs = self.specs()
            return problems([(name, descs, specs.get(name))
                             for _, name, descs in self.enumerate()],
                            params, self.target, self.paths.root, self.given_keys())

        found = check()
        if any(problem.split(": ", 1)[0] in self._from_cache for problem in found):
            # cached descriptors may be stale (a module reading them from another file):
            # refuse only what fresh ones refuse too
            self._enumeration = None
            self._from_cache = set()
            self.enumerate_errors.clear()
            self.enumerate_cache().use_cached = False
            found = check()
        return found

    def validate(self, params: Mapping[str, Any]) -> None:
        """Raise :class:`ValidationError` if ``params`` do not satisfy every module."""
        found = self.problems_with(params)
        if found:
            raise ValidationError(found)

    def check_answer(self, key: str, value: str) -> Optional[str]:
        """The console dialog's check of one answer with the standard modules' own
        validators: the reason it is wrong, or None."""
        from templateconfig.descriptors import password_keys

        secret = key in password_keys([(name, descs) for _, name, descs in self.enumerate()])
        with _viewing(self.paths.root):
            for spec in self.specs().values():
                found = spec.key_for(key)
                if found is not None and self.target in found[0].targets:
                    problem = found[0].check(key, value, secret)
                    if problem:
                        return problem.split(": ", 1)[-1]
        return None

    def run(self, params: Mapping[str, Any],
            on_module: Optional[Callable[[ModuleOutcome], None]] = None) -> RunResult:
        """Validate, then run every module (:mod:`templateconfig.run.steps`); at the
        end, :meth:`close`.

        Unless in dry-run mode, the run holds the run lock of the root
        (:meth:`run_lock`) from after the validation to the end, waiting up to
        ``lock_timeout`` for another run to finish
        (:class:`templateconfig.run.lock.LockTimeout`). Refused params raise
        :class:`ValidationError` before anything ran; the run report and the log say so
        (written under the run lock).
        """
        params = dict(params)
        try:
            try:
                self.validate(params)
            except ValidationError as exc:
                if not self.dry_run:
                    self._refused(exc, params)
                raise
            if self.dry_run:
                return self._execute(params, on_module)
            with self.run_lock():
                self._claim_state_files()
                try:
                    self.enumerate_cache().save()
                except OSError as exc:
                    log.info("cannot write the enumerate cache: %s", exc)
                return self._execute(params, on_module)
        finally:
            self.close()

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

    def _refused(self, refusal: ValidationError, params: Mapping[str, Any]) -> None:
        """The report and the log of a run the validation refused: every module
        pending, the problems listed (redacted)."""
        from ovmd.secrets import RedactingFilter
        from templateconfig.run.lock import LockError
        from templateconfig.run.report import RunReport
        from templateconfig.run.runlog import close_run_log, open_run_log
        from templateconfig.run.steps import SecretValues

        secrets = SecretValues(RedactingFilter(), self.password_keys())
        secrets.update(params)
        self._secrets = secrets
        redactor = secrets.redactor
        report = RunReport(self.paths, self.target,
                           [(m.priority, m.name) for m in self.modules()], secrets)
        try:
            with self.run_lock():
                self._claim_state_files()
                report.refuse(refusal.problems)
                handler = open_run_log(self.paths, redactor)
                try:
                    for problem in refusal.problems:
                        log.warning("%s: invalid: %s", self.target, problem)
                    log.warning("%s: %s", self.target, refusal)
                finally:
                    close_run_log(handler)
        except (LockError, StateFilesError, OSError) as exc:
            log.info("cannot record the refused run: %s", exc)
        refusal.report = report.to_dict()

    def _execute(self, params: Dict[str, Any],
                 on_module: Optional[Callable[[ModuleOutcome], None]]) -> RunResult:
        from templateconfig.run.steps import Run

        if not self.dry_run:  # (plan mode leaves no trace, not even under /run)
            self.launcher.on_spawn = self.runner_dir.record
        run = Run(self, params, on_module)
        self._secrets = run.secrets
        return run.execute()

    def module_env(self, journal: str, module: Optional[Module] = None) -> Dict[str, str]:
        """The environment of one module process, whose actions go to ``journal``; with
        ``module``, its staging directory if it prepared (:meth:`start_early`)."""
        env = dict(self.env)
        env[ACTIONS_ENV] = journal
        staging = self.preparation.staging(module) if self.preparation and module else None
        if staging is not None:
            env[STAGING_ENV] = staging
        return env


def _viewing(root: str) -> Any:
    from templateconfig.common import viewing

    return viewing(root)


def run_target(paths: Paths, target: str, params: Mapping[str, Any], **options: Any) -> RunResult:
    """Run ``target`` under ``paths`` with ``params``; options as for :class:`Runner`."""
    return Runner(paths, target, **options).run(params)
