"""The runner: run the enabled modules of a target, in order, each in its own process.

Semantics (README, "ovm-template-config"):

* The modules linked for the target run in (priority, name) order. Each reads the
  accumulated params (one JSON object) on stdin and prints the resulting object; that
  output is the next module's input. Keys added or changed are collected.
* Before anything runs, every module is enumerated (in parallel) and the params are
  validated against all their descriptors; a missing required key or a value outside its
  choices stops the run up front (:class:`ValidationError`), touching nothing.
* A module that fails (non-zero exit, crash, invalid JSON output, timeout, SyntaxError,
  missing interpreter) is reported with its redacted stderr; the run goes on with the
  params as they were before it.
* Progress goes to the run report and the log (:mod:`templateconfig.report`), and to a
  durable run state, so that a run killed half-way resumes after the modules that
  completed.

Execution. Module scripts stay separate processes, but a fresh interpreter per Python
module costs 20-40 ms. So the runner imports what modules import (``json``,
``templateconfig.cli``, ``templateconfig.common``, ``templateconfig.modules.*``,
``templateconfig.platform.*``) once, and for each Python module (its shebang mentions
python) forks a child that sets up what a fresh process would see: argv ``[script,
TARGET]``, pipes on 0/1/2 and no other descriptor, the module environment, cwd ``/``,
default signal dispositions, its own process group, ``__name__ == "__main__"`` through
``runpy.run_path``, the exit status from ``SystemExit``, tracebacks without the runner's
frames, a clean ``atexit`` and logging set-up. Other modules are exec'd. With
``OVM_TEMPLATE_CONFIG_NO_FORK=1`` Python modules get a fresh interpreter
(``sys.executable SCRIPT TARGET``) instead; either way ``#!/usr/bin/env python`` modules
run where no ``python`` command is on PATH.

Cost (the issue's budget: 100 ms of framework overhead for the eight standard modules,
5 ms per extra no-op module; ``bench/bench_runner.py`` measures it): a module's
descriptors come from the enumerate cache when its script is unchanged
(:class:`templateconfig.report.EnumerateCache`), so a steady-state run forks once per
module, not twice; forked children freeze the inherited objects (``gc.freeze``) so that
the collector does not copy the parent's pages, and the parent works out beforehand
what a child must reset (each object a child touches is a page it copies). While a
module runs, the runner rewrites the report and forks the next Python module's process,
which sets itself up and waits for its input before it reads its script
(:meth:`Launcher.prefork`): the next module starts as soon as the run state says this
one is done. The preload is overlapped with the PBKDF2 of the run state (a thread,
joined before the first fork), and no thread is started per module.

Concurrency: a run holds the root's run lock (:mod:`templateconfig.runlock`).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from ovmd.paths import ROOT_ENV, Paths
from ovmd.runreport import ModuleStatus, RunStatus
from ovmd.secrets import RedactingFilter, is_secret_key

log = logging.getLogger(__name__)

#: Set to 1 to run Python modules in a fresh interpreter instead of a fork of the runner.
NO_FORK_ENV = "OVM_TEMPLATE_CONFIG_NO_FORK"
DRY_RUN_ENV = "OVM_TEMPLATE_CONFIG_DRY_RUN"
ACTIONS_ENV = "OVM_TEMPLATE_CONFIG_ACTIONS"

DEFAULT_TIMEOUT = 300.0
#: Exit status of a child that could not be started (as a shell says "not found").
EXIT_NOT_STARTED = 127
#: How long to keep reading a module's pipes after it exited (a daemon it started may
#: hold them open).
_DRAIN_SECONDS = 0.5
_STDERR_LIMIT = 4000

#: What Python modules import, imported once in the runner before forking (and every
#: module of the ``templateconfig.modules`` and ``templateconfig.platform`` packages, which
#: the standard modules import; the platform code a module picks at run time too).
#: ``simplejson`` is left out: Oracle-style modules only import it when ``json`` is missing.
#: ``pkgutil`` is what ``runpy.run_path`` imports in every child (``get_importer``).
PRELOAD = ("json", "runpy", "pkgutil", "io", "traceback", "atexit",
           "templateconfig.cli", "templateconfig.common", "templateconfig.header")
PRELOAD_PACKAGES = ("templateconfig.modules", "templateconfig.platform")


class RunnerError(Exception):
    """The run cannot start (unknown target or module); the message says why."""


class ValidationError(RunnerError):
    """The params do not satisfy the modules' descriptors; nothing was run."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid parameters, nothing was run:\n  " + "\n  ".join(self.problems))


class Module(NamedTuple):
    """One enabled module of a target."""

    priority: int
    name: str
    path: str


class ProcessResult(NamedTuple):
    """How one module process ended."""

    returncode: int  # negative: killed by that signal
    stdout: bytes
    stderr: bytes
    seconds: float
    timed_out: bool


class ModuleOutcome(NamedTuple):
    """What one module did in a run."""

    module: Module
    status: str  # a ModuleStatus: ok, failed, skipped
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
    report: Dict[str, Any]  # the run report (README format), redacted


# --- which interpreter ------------------------------------------------------------------------

def read_shebang(path: str) -> Optional[List[str]]:
    """The interpreter line of a script, split (``#!/usr/bin/env python`` ->
    ``['/usr/bin/env', 'python']``), or None."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(256)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    return first[2:].decode("utf-8", "replace").split() or None


def is_python_script(path: str) -> bool:
    """True if the script's shebang names a Python interpreter."""
    shebang = read_shebang(path)
    return bool(shebang) and any("python" in os.path.basename(word) for word in shebang[:2])


def uses_common(path: str) -> bool:
    """True if a module records its changes through ``templateconfig.common`` (directly
    or through a standard module), so that it can be trusted in plan mode."""
    if not is_python_script(path):
        return False
    try:
        with open(path, "rb") as handle:
            source = handle.read(1 << 20)
    except OSError:
        return False
    return any(marker in source for marker in (b"templateconfig.common", b"templateconfig.modules",
                                               b"from templateconfig import common"))


def fork_enabled() -> bool:
    return os.environ.get(NO_FORK_ENV, "") in ("", "0")


_preloaded = False


def preload() -> None:
    """Import once what module processes import, so forked children need not."""
    global _preloaded
    if _preloaded:
        return
    _preloaded = True
    import importlib
    names = list(PRELOAD)
    for package in PRELOAD_PACKAGES:
        names.append(package)
        names.extend(_package_modules(package))
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a broken optional import must not stop the runner
            log.debug("preload of %s failed: %s", name, exc)


def _preload_while(work: Callable[[], None]) -> None:
    """:func:`preload` while ``work`` (the PBKDF2 of the run state: no GIL) runs in a
    thread: the imports hold the GIL for tens of ms, so on two CPUs the work costs
    nothing. The thread is over before this returns (nothing is forked while it runs);
    an exception in it is logged, and the work is redone when it is needed."""
    import threading

    def quietly() -> None:
        try:
            work()
        except Exception as exc:
            log.debug("work done while preloading failed: %s", exc)

    worker = threading.Thread(target=quietly, name="ovm-template-config-prepare", daemon=True)
    worker.start()
    try:
        preload()
    finally:
        worker.join()


def _package_modules(package: str) -> List[str]:
    """The submodules of ``package`` (its ``*.py`` files; ``pkgutil.iter_modules`` would
    import ``inspect``, a few ms of start-up for nothing)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    names = set()
    for directory in spec.submodule_search_locations:
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        for entry in entries:
            if entry.endswith(".py") and entry != "__init__.py" and entry[:-3].isidentifier():
                names.add("%s.%s" % (package, entry[:-3]))
    return sorted(names)


# --- starting module processes ------------------------------------------------------------------

class _Child:
    """A started module process and the parent's ends of its pipes."""

    def __init__(self, pid: int, stdin_fd: int, stdout_fd: int, stderr_fd: int,
                 stdin_data: bytes) -> None:
        self.pid = pid
        self.fds = {"stdin": stdin_fd, "stdout": stdout_fd, "stderr": stderr_fd}
        self.pending = memoryview(stdin_data)
        self.out: Dict[str, List[bytes]] = {"stdout": [], "stderr": []}
        self.started = time.monotonic()
        self.status: Optional[int] = None
        self.timed_out = False
        self.pidfd: Optional[int] = None
        self.exited_at: Optional[float] = None
        self.exitcode: Optional[int] = None
        #: A forked Python child ends its stderr with this marker and its exit status,
        #: then closes its pipes before exiting: the parent need not wait for the kernel
        #: to tear the address space down (most of a fork's cost) to know the outcome.
        self.marker: Optional[bytes] = None
        #: A child started ahead (:meth:`Launcher.prefork`) waits, set up but before
        #: anything of the module runs, until a byte arrives on this pipe.
        self.go_fd: Optional[int] = None
        self.job: Optional[Tuple[str, Tuple[str, ...], Dict[str, str]]] = None


#: Children whose outcome is known (exit marker) but that have not been reaped yet.
_unreaped: List[int] = []


def reap_children(block: bool = True) -> None:
    """Collect the exit status of finished forked children (zombies)."""
    for pid in list(_unreaped):
        try:
            done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _unreaped.remove(pid)


class Launcher:
    """Starts module processes (forked or exec'd) and collects their results."""

    def __init__(self, env: Mapping[str, str], fork: Optional[bool] = None) -> None:
        self.env = dict(env)
        self.fork = fork_enabled() if fork is None else fork
        # preload() happens before the first fork (see Runner._run: the run overlaps it
        # with the PBKDF2 of its state)

    def argv(self, script: str, args: Sequence[str]) -> Tuple[bool, List[str]]:
        """(forked, argv) for running ``script args``."""
        if is_python_script(script):
            if self.fork:
                return True, [script] + list(args)
            return False, [sys.executable, script] + list(args)
        return False, [script] + list(args)

    def run(self, script: str, args: Sequence[str], stdin: bytes, timeout: float,
            env: Optional[Mapping[str, str]] = None,
            meanwhile: Optional[Callable[[], None]] = None,
            ready: Optional[_Child] = None) -> ProcessResult:
        """Run one module process to the end (or the timeout); ``meanwhile`` runs while
        the process runs (work that may overlap it, such as writing the run report);
        it is over before this returns. ``ready``: the process :meth:`prefork` started
        for this job, if any (it is used up either way)."""
        return self.run_many([(script, args, stdin, env)], timeout, meanwhile,
                             [ready] if ready is not None else None)[0]

    def run_many(self, jobs: Sequence[Tuple[str, Sequence[str], bytes, Optional[Mapping[str, str]]]],
                 timeout: float,
                 meanwhile: Optional[Callable[[], None]] = None,
                 ready: Optional[Sequence[Optional[_Child]]] = None) -> List[ProcessResult]:
        """Run several module processes at once (enumeration) and collect them all.

        ``meanwhile`` runs in this thread once the children have their input (as far as
        it fits in the pipes), while they start and work: no thread is started for it
        (starting one and handing the GIL back and forth cost 1-5 ms per module on a
        busy machine). If it raises, the children are killed and the exception
        propagates. ``ready``: per job, a process :meth:`prefork` started, or None.
        """
        children: List[_Child] = []
        try:
            for index, (script, args, stdin, env) in enumerate(jobs):
                env = env or self.env
                child = ready[index] if ready else None
                if child is not None and not self._go(child, script, args, stdin, env):
                    child = None
                children.append(child or self._start(script, args, stdin, env))
            if meanwhile is not None:
                for child in children:
                    _feed(child)
                meanwhile()
            _collect(children, timeout)
        except BaseException:
            for child in children:
                _kill(child)
            raise
        for child in children:
            if child.status is not None and child.marker is not None:
                _read_marker(child)  # reaped before EOF: the marker may be in the output
                child.exitcode = os.waitstatus_to_exitcode(child.status)
        return [ProcessResult(child.exitcode, b"".join(child.out["stdout"]),
                              b"".join(child.out["stderr"]),
                              (child.exited_at or time.monotonic()) - child.started,
                              child.timed_out)
                for child in children]

    def prefork(self, script: str, args: Sequence[str],
                env: Optional[Mapping[str, str]] = None) -> Optional[_Child]:
        """Start the process of a Python module that is to run next, up to the point
        where a fresh ``python SCRIPT ARGS`` would start running the script: it sets up
        its descriptors, signals, environment and streams, then waits. Nothing of the
        module runs (its script is not even read) until :meth:`run` gives it its input;
        if the runner goes away instead, it exits without a trace. So the next module
        starts at once when the current one is done, its set-up done meanwhile (on
        another CPU). None for a module that is exec'd (or with forking off)."""
        forked, _ = self.argv(script, args)
        if not forked:
            return None
        return self._start(script, args, b"", env or self.env, wait=True)

    def discard(self, child: Optional[_Child]) -> None:
        """Stop a process :meth:`prefork` started and that will not run."""
        if child is not None:
            if child.go_fd is not None:
                os.close(child.go_fd)
                child.go_fd = None
            _kill(child)

    def _go(self, child: _Child, script: str, args: Sequence[str], stdin: bytes,
            env: Mapping[str, str]) -> bool:
        """Let a pre-forked child run ``script args`` with ``stdin``; False (and the child
        stopped) if it is not that job's or is gone."""
        if child.job != (script, tuple(args), dict(env)) or child.go_fd is None \
                or not self.argv(script, args)[0]:  # (the previous module changed its #!)
            self.discard(child)
            return False
        try:
            os.write(child.go_fd, b"1")
        except OSError:  # it died waiting
            self.discard(child)
            return False
        os.close(child.go_fd)
        child.go_fd = None
        child.pending = memoryview(stdin)
        child.started = time.monotonic()  # its time (and timeout) count from here
        return True

    def _start(self, script: str, args: Sequence[str], stdin: bytes,
               env: Mapping[str, str], wait: bool = False) -> _Child:
        forked, argv = self.argv(script, args)
        if forked:
            preload()
        reap_children(block=False)
        marker = b"\n\0ovm-template-config-exit:%s:" % os.urandom(8).hex().encode() if forked else None
        # What the child has to undo is worked out here: every object the child reads
        # is a page it copies (reference counts), at a few microseconds a page.
        prepared = _Prepared(env, forked)
        go_r, go_w = os.pipe() if wait else (None, None)
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            _child_main(forked, script, argv, env, (in_r, out_w, err_w), marker, prepared,
                        go_r)
        for fd in (in_r, out_w, err_w) + ((go_r,) if wait else ()):
            os.close(fd)
        try:
            os.setpgid(pid, pid)  # also done in the child: whichever runs first
        except OSError:
            pass
        child = _Child(pid, in_w, out_r, err_r, stdin)
        child.marker = marker
        if wait:
            child.go_fd = go_w
            child.job = (script, tuple(args), dict(env))
        if hasattr(os, "pidfd_open"):
            try:
                child.pidfd = os.pidfd_open(pid)
            except OSError:
                child.pidfd = None
        return child


def _collect(children: List[_Child], timeout: float) -> None:
    """Feed stdin and read stdout/stderr of every child until all exited or timed out."""
    import selectors

    selector = selectors.DefaultSelector()
    registered = set()

    def register(fd: int, events: int, data: Tuple[_Child, str]) -> None:
        selector.register(fd, events, data)
        registered.add(fd)

    def unregister(fd: Optional[int]) -> None:
        if fd is not None and fd in registered:
            selector.unregister(fd)
            registered.discard(fd)

    try:
        for child in children:
            _feed(child)
            if child.fds["stdin"] is not None:  # the rest when the pipe has room
                register(child.fds["stdin"], selectors.EVENT_WRITE, (child, "stdin"))
            for stream in ("stdout", "stderr"):
                register(child.fds[stream], selectors.EVENT_READ, (child, stream))
            if child.pidfd is not None:
                register(child.pidfd, selectors.EVENT_READ, (child, "exit"))
        running = list(children)
        while running:
            now = time.monotonic()
            deadlines = []
            for child in running:
                deadlines.append(child.started + timeout)
                if child.exited_at is not None:
                    deadlines.append(child.exited_at + _DRAIN_SECONDS)
                elif child.pidfd is None:
                    deadlines.append(now + 0.005)  # no exit notification: poll
            for key, _events in selector.select(max(0.0, min(deadlines) - now)):
                child, stream = key.data
                if stream == "exit":
                    unregister(key.fd)
                    _reap(child)
                elif stream == "stdin":
                    try:
                        sent = os.write(key.fd, child.pending[:65536])
                        child.pending = child.pending[sent:]
                    except BrokenPipeError:
                        child.pending = child.pending[:0]
                    if not child.pending:
                        unregister(key.fd)
                        _close(child, "stdin")
                else:
                    data = os.read(key.fd, 65536)
                    if data:
                        child.out[stream].append(data)
                    else:
                        unregister(key.fd)
                        _close(child, stream)
            now = time.monotonic()
            for child in list(running):
                streams_open = child.fds["stdout"] is not None or child.fds["stderr"] is not None
                if not streams_open and child.exitcode is None:
                    _read_marker(child)
                if child.exitcode is None:
                    _reap(child)
                if child.exitcode is not None:
                    if streams_open and now < child.exited_at + _DRAIN_SECONDS:
                        continue  # exited: read what is left in the pipes
                elif now >= child.started + timeout:
                    child.timed_out = True
                else:
                    continue
                for fd in list(child.fds.values()) + [child.pidfd]:
                    unregister(fd)
                _kill(child)
                running.remove(child)
    finally:
        selector.close()


def _feed(child: _Child) -> None:
    """Write what the pipe takes now of the child's stdin (without blocking); close it
    once everything is written (or the child closed its end)."""
    fd = child.fds["stdin"]
    if fd is None:
        return
    os.set_blocking(fd, False)
    try:
        while child.pending:
            sent = os.write(fd, child.pending[:65536])
            child.pending = child.pending[sent:]
    except BlockingIOError:
        return
    except BrokenPipeError:
        child.pending = child.pending[:0]
    _close(child, "stdin")


def _read_marker(child: _Child) -> None:
    """Take the exit status a forked child appended to its stderr, if it did."""
    if child.marker is None:
        return
    err = b"".join(child.out["stderr"])
    at = err.rfind(child.marker)
    if at < 0 or not err.endswith(b"\n"):
        return
    try:
        code = int(err[at + len(child.marker):-1])
    except ValueError:
        return
    child.out["stderr"] = [err[:at]]
    child.exitcode = code
    child.exited_at = time.monotonic()


def _close(child: _Child, stream: str) -> None:
    fd = child.fds[stream]
    if fd is not None:
        os.close(fd)
        child.fds[stream] = None


def _reap(child: _Child, block: bool = False) -> None:
    if child.status is not None:
        return
    pid, status = os.waitpid(child.pid, 0 if block else os.WNOHANG)
    if pid:
        child.status = status
        if child.exitcode is None:
            child.exitcode = os.waitstatus_to_exitcode(status)
            child.exited_at = time.monotonic()



def _kill(child: _Child) -> None:
    """Kill a module process and everything in its process group, and reap it; a child
    that reported its exit status is left to :func:`reap_children`."""
    if child.exitcode is not None and child.status is None:
        _unreaped.append(child.pid)
    elif child.status is None:
        for kill in (os.killpg, os.kill):
            try:
                kill(child.pid, signal.SIGKILL)
                break
            except OSError:
                continue
        _reap(child, block=True)
    for stream in ("stdin", "stdout", "stderr"):
        try:
            _close(child, stream)
        except OSError:
            pass
    if child.pidfd is not None:
        os.close(child.pidfd)
        child.pidfd = None


# --- inside the child -------------------------------------------------------------------------

#: Objects the child must keep alive: dropping the parent's stdio or log streams would
#: close descriptor numbers the module may be using by then.
_kept: List[Any] = []


class _Prepared:
    """What a child must reset, found by the parent just before the fork (the same
    state the child inherits): the signals whose disposition is not the default, and
    for a forked Python module the environment changes and the loggers the runner set
    up. The child then touches only what it changes."""

    def __init__(self, env: Mapping[str, str], forked: bool) -> None:
        self.signals = _signals_to_reset()
        self.env_removed: List[str] = []
        self.env_set: List[Tuple[str, str]] = []
        self.loggers: Optional[list] = None
        if forked:
            environ = os.environ
            self.env_removed = [key for key in environ if key not in env]
            self.env_set = [(key, value) for key, value in env.items()
                            if environ.get(key) != value]
            self.loggers = _loggers_to_reset()


_signals: List[int] = []


def _signals_to_reset() -> List[int]:
    """The signals whose handler is not the default (those a fresh process would have
    at their default, or that Python sets itself later)."""
    if not _signals:  # signal.valid_signals() costs 0.1 ms, and its answer never changes
        _signals.extend(sig for sig in sorted(signal.valid_signals())
                        if sig not in (signal.SIGKILL, signal.SIGSTOP))
    found = []
    for sig in _signals:
        try:
            if signal.getsignal(sig) == signal.SIG_DFL:
                continue  # as Python found it at start-up or set it: nothing to undo
        except (OSError, ValueError, RuntimeError):
            continue
        found.append(sig)
    return found


def _loggers_to_reset() -> Optional[list]:
    """The loggers whose set-up differs from a fresh interpreter's (handlers, filters,
    level, propagation, disabled), root first; None if logging is not imported."""
    logging_module = sys.modules.get("logging")
    if logging_module is None:
        return None
    root = logging_module.root
    found = [root]
    for logger in list(logging_module.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging_module.Logger) and (
                logger.handlers or logger.filters or logger.level != logging_module.NOTSET
                or not logger.propagate or logger.disabled):
            found.append(logger)
    return found


def _child_main(forked: bool, script: str, argv: List[str], env: Mapping[str, str],
                fds: Tuple[int, int, int], marker: Optional[bytes] = None,
                prepared: Optional[_Prepared] = None, go_fd: Optional[int] = None) -> None:
    """Turn this forked process into the module process; never returns. With ``go_fd``
    (a forked Python module started ahead), wait for a byte on it before the script is
    read; at EOF (the runner does not need it after all) exit at once."""
    if prepared is None:
        prepared = _Prepared(env, forked)
    code = EXIT_NOT_STARTED
    try:
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
        import fcntl
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 3) for fd in fds]  # keep off 0-2 first
        if go_fd is not None:
            go_fd = fcntl.fcntl(go_fd, fcntl.F_DUPFD, 3)
        for number, fd in enumerate(high):
            os.dup2(fd, number)
        _close_inherited_fds(keep=go_fd)
        os.chdir("/")
        _reset_signals(prepared.signals)
        if forked:
            import gc
            # The runner's objects are the module's too (copy-on-write): keep the
            # collector from walking them, which would copy every page they live on.
            gc.freeze()
            code = _run_python(script, argv, env, prepared, go_fd)
            if marker is not None:
                os.write(2, marker + b"%d\n" % code)
                for fd in (0, 1, 2):
                    os.close(fd)
        else:
            _exec(script, argv, env)
    except BaseException as exc:  # report on the module's stderr, as a shell would
        try:
            os.write(2, ("ovm-template-config: cannot run %s: %s\n" % (script, exc)).encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def _close_inherited_fds(keep: Optional[int] = None) -> None:
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _reset_signals(signals: Optional[Sequence[int]] = None) -> None:
    """Default dispositions for ``signals`` (those :func:`_signals_to_reset` found) and
    an empty signal mask."""
    for sig in _signals_to_reset() if signals is None else signals:
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _exec(script: str, argv: List[str], env: Mapping[str, str]) -> None:
    try:
        os.execve(argv[0], argv, dict(env))
    except OSError as exc:
        shebang = read_shebang(script)
        if exc.errno == errno.ENOENT and shebang and os.path.exists(script):
            reason = "its interpreter %s was not found (#!%s)" % (shebang[0], " ".join(shebang))
        elif exc.errno in (errno.EACCES, errno.ENOEXEC):
            reason = "it is not an executable (%s); give it a #! line and mode 0755" % exc.strerror
        else:
            reason = exc.strerror or str(exc)
        os.write(2, ("ovm-template-config: cannot execute %s: %s\n" % (script, reason)).encode())
        os._exit(EXIT_NOT_STARTED)


def _run_python(script: str, argv: List[str], env: Mapping[str, str],
                prepared: Optional[_Prepared] = None, go_fd: Optional[int] = None) -> int:
    """Run ``script`` as ``__main__`` in this (forked) interpreter; its exit status.
    With ``go_fd``, everything up to reading the script is done, then a byte from it
    awaited (see :func:`_child_main`)."""
    if prepared is None:
        prepared = _Prepared(env, True)
    import atexit
    import io
    import runpy

    # Python's own dispositions for a fresh interpreter.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    for key in prepared.env_removed:
        del os.environ[key]
    for key, value in prepared.env_set:  # only what differs: each change is a putenv()
        os.environ[key] = value
    _kept.extend([sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__,
                  sys.__stderr__])
    encoding = getattr(sys.__stdout__, "encoding", None) or "utf-8"
    sys.stdin = sys.__stdin__ = io.open(0, "r", encoding=encoding, closefd=False)
    sys.stdout = sys.__stdout__ = io.open(1, "w", encoding=encoding, closefd=False)
    sys.stderr = sys.__stderr__ = io.open(2, "w", buffering=1, encoding=encoding,
                                          errors="backslashreplace", closefd=False)
    sys.argv = list(argv)
    atexit._clear()
    _reset_logging(prepared.loggers)
    if go_fd is not None:
        if not os.read(go_fd, 1):
            os._exit(EXIT_NOT_STARTED)  # not needed: leave no trace
        os.close(go_fd)
    sys.path[0] = os.path.dirname(os.path.realpath(script))
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = _exit_status(exc)
    except BaseException as exc:
        _print_exception(exc, script)
        code = 1
        if isinstance(exc, KeyboardInterrupt):
            code = 128 + signal.SIGINT
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            code = 120  # as CPython does when flushing stdout fails at exit
    return code


def _exit_status(exc: SystemExit) -> int:
    """The process exit status CPython derives from ``SystemExit``."""
    value = exc.code
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    try:
        sys.stderr.write("%s\n" % (value,))
    except Exception:
        pass
    return 1


def _print_exception(exc: BaseException, script: str) -> None:
    """The traceback a fresh interpreter would print: the runner's frames left out."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != script:
        tb = tb.tb_next
    try:
        exc.__traceback__ = tb
        sys.excepthook(type(exc), exc, tb)
    except Exception:
        pass


def _reset_logging(loggers: Optional[list] = None) -> None:
    """Forget the runner's log handlers, as a fresh interpreter has none. ``loggers``:
    those :func:`_loggers_to_reset` found (the others are as a fresh interpreter has
    them already)."""
    logging_module = sys.modules.get("logging")
    if logging_module is None:
        return
    if loggers is None:
        loggers = _loggers_to_reset() or []
    for logger in loggers:
        _kept.extend(logger.handlers)
        logger.handlers = []
        logger.filters = []
        if logger is not logging_module.root:
            logger.setLevel(logging_module.NOTSET)
            logger.propagate = True
            logger.disabled = False
    logging_module.root.setLevel(logging_module.WARNING)
    logging_module.disable(logging_module.NOTSET)
    del logging_module._handlerList[:]
    import atexit
    atexit.register(logging_module.shutdown)


# --- the run ---------------------------------------------------------------------------------------

def module_env(paths: Paths, dry_run: bool, base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
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


class Runner:
    """Runs one target's modules under ``paths`` (see the module docstring).

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
        from templateconfig.runlock import DEFAULT_LOCK_TIMEOUT

        if target not in TARGETS:
            raise RunnerError("unknown target %r; the targets are: %s" % (target, ", ".join(TARGETS)))
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
        self._enumeration: Optional[List[Tuple[int, str, List[dict]]]] = None
        self._secrets: Optional[_SecretValues] = None
        self.lock_timeout = DEFAULT_LOCK_TIMEOUT if lock_timeout is None else lock_timeout
        #: Called with the holder's pid when the run lock is busy and the run waits.
        self.on_lock_wait: Optional[Callable[[Optional[int]], None]] = None
        self._lock = None
        self._cache = None
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
                    raise RunnerError("module %r is not enabled for target %s under %s "
                                      "(see ovm-chkconfig --list)"
                                      % (self.only, self.target, self.paths.target_dir(self.target)))
            self._modules = found
        return self._modules

    def run_lock(self):
        """The run lock of this root (:class:`templateconfig.runlock.RunLock`), reentrant:
        ``with runner.run_lock():`` around several steps keeps it across them."""
        if self._lock is None:
            from templateconfig.runlock import RunLock

            self._lock = RunLock(self.paths, self.lock_timeout,
                                 on_wait=lambda pid: self.on_lock_wait and self.on_lock_wait(pid))
        return self._lock

    def enumerate_cache(self):
        if self._cache is None:
            from templateconfig.report import EnumerateCache

            self._cache = EnumerateCache(self.paths)
        return self._cache

    def enumerate(self) -> List[Tuple[int, str, List[dict]]]:
        """``[priority, name, descriptors]`` per module (Oracle's ``--enumerate`` shape).

        Modules whose script is unchanged since a previous run come from the enumerate
        cache (:class:`templateconfig.report.EnumerateCache`); the others are enumerated
        all at once. A module whose enumeration fails is listed with no descriptors and
        its error kept in :attr:`enumerate_errors`.
        """
        if self._enumeration is None:
            from templateconfig.report import script_identity

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
                descriptors: List[dict] = []
                error = failure_reason(result, self.timeout)
                if error is None:
                    try:
                        value = json.loads(_decode(result.stdout) or "[]")
                        if not isinstance(value, list):
                            raise ValueError("expected a JSON list, got a JSON %s"
                                             % type(value).__name__)
                        descriptors = value
                    except ValueError as exc:
                        error = "printed an invalid descriptor list: %s" % exc
                if error is not None:
                    self.enumerate_errors[module.name] = "enumerate " + error
                    log.info("%s: --enumerate %s %s", module.name, self.target, error)
                else:
                    cache.put(self.target, module.path, identities[index], descriptors)
                found[index] = descriptors
            self._enumeration = [(m.priority, m.name, found[i]) for i, m in enumerate(modules)]
        return self._enumeration

    def password_keys(self) -> set:
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
        """Validate, then run every module; see the module docstring.

        Unless in dry-run mode, the run holds the run lock of the root
        (:meth:`run_lock`) from after the validation to the end, waiting up to
        ``lock_timeout`` for another run to finish
        (:class:`templateconfig.runlock.LockTimeout`).
        """
        params = dict(params)
        self.validate(params)
        if self.dry_run:
            return self._run(params, on_module)
        with self.run_lock():
            try:
                self.enumerate_cache().save()
            except OSError as exc:
                log.info("cannot write the enumerate cache: %s", exc)
            return self._run(params, on_module)

    def _run(self, params: Dict[str, Any],
             on_module: Optional[Callable[[ModuleOutcome], None]]) -> RunResult:
        from templateconfig.report import RunReport, RunState, close_run_log, open_run_log

        modules = self.modules()
        secret_keys = self.password_keys()
        initial = dict(params)
        redactor = RedactingFilter()
        secrets = self._secrets = _SecretValues(redactor, secret_keys)
        secrets.update(params)
        write = not self.dry_run
        report = RunReport(self.paths, self.target, [(m.priority, m.name) for m in modules],
                           secrets, write=write)
        state = RunState(self.paths, self.target, initial, _secret_names(params, secret_keys),
                         enabled=write)
        handler = open_run_log(self.paths, redactor) if write else None
        journal_dir = tempfile.mkdtemp(prefix="ovm-template-config-")
        outcomes: List[ModuleOutcome] = []
        ahead: Dict[int, Optional[_Child]] = {}  # module index -> its process, started ahead
        try:
            log.info("%s: starting %d module(s): %s", self.target, len(modules),
                     ", ".join("%s(%d)" % (m.name, m.priority) for m in modules) or "none")
            for problem in self.problems:
                log.warning("%s", problem)
            resumed = _resumable(state.load_previous(), modules)
            if resumed:
                log.info("%s: resuming an interrupted run after %s", self.target,
                         ", ".join(resumed))
            if self.launcher.fork and not _preloaded and state.costly_to_prepare():
                _preload_while(state.prepare)
            runs = {i for i, m in enumerate(modules) if m.name not in resumed
                    and not (self.dry_run and not uses_common(m.path))}
            journals = {i: os.path.join(journal_dir, "%02d-%s.jsonl" % (i, modules[i].name))
                        for i in runs}
            for index, module in enumerate(modules):
                if module.name in resumed:
                    entry = resumed[module.name]
                    params.update(entry["changes"])
                    for key in entry["removed"]:
                        params.pop(key, None)
                    state.completed.append(entry)  # carried over if the file is rewritten
                    outcome = ModuleOutcome(module, ModuleStatus.OK, 0.0, None, dict(entry["changes"]),
                                            list(entry["removed"]), [], resumed=True)
                    report.update(module.name, ModuleStatus.OK, 0.0, None, write=False, resumed=True)
                    log.info("%s: %s already completed before the interruption", self.target,
                             module.name)
                elif index not in runs:  # plan mode and not using templateconfig.common
                    reason = ("does not use templateconfig.common, so it cannot be trusted in "
                              "plan mode: not run")
                    outcome = ModuleOutcome(module, ModuleStatus.SKIPPED, 0.0, reason, {}, [], [])
                    report.update(module.name, ModuleStatus.SKIPPED, 0.0, reason, write=False)
                else:
                    report.update(module.name, ModuleStatus.RUNNING, write=False)
                    later = [i for i in sorted(runs) if i > index]

                    def meanwhile(following=later[0] if later else None) -> None:
                        _while_module_runs(report, state)
                        if following is not None and self.launcher.fork:
                            # the next module's process, set up while this one runs
                            try:
                                ahead[following] = self.launcher.prefork(
                                    modules[following].path, [self.target],
                                    self._module_env(journals[following]))
                            except OSError as exc:  # then it is started when its turn comes
                                log.debug("cannot start %s ahead: %s",
                                          modules[following].name, exc)

                    outcome, params = self._run_module(module, params, journals[index],
                                                       meanwhile, ahead.pop(index, None))
                    if outcome.status == ModuleStatus.OK:
                        secrets.update(outcome.changed)
                        state.module_done(module.name, module.priority,
                                          {k: v for k, v in outcome.changed.items()
                                           if not is_secret_key(k, secret_keys)},
                                          outcome.removed,
                                          [k for k in outcome.changed if is_secret_key(k, secret_keys)])
                    # written with the next module's start, or by finish()
                    report.update(module.name, outcome.status, outcome.seconds, outcome.error,
                                  write=False, actions=[_describe(a) for a in outcome.actions])
                    _log_outcome(self.target, outcome)
                outcomes.append(outcome)
                if on_module is not None:
                    on_module(outcome)
            changed = sorted(k for k, v in params.items() if initial.get(k, _MISSING) != v)
            ok = all(o.status != ModuleStatus.FAILED for o in outcomes)
            report.finish(RunStatus.DONE if ok else RunStatus.FAILED, changed)
            state.remove()
            log.info("%s: %s; changed keys: %s", self.target,
                     "all modules succeeded" if ok else "failed: %s" % ", ".join(
                         o.module.name for o in outcomes if o.status == ModuleStatus.FAILED),
                     ", ".join(changed) or "none")
        except BaseException as exc:  # interrupted (Ctrl-C, SIGTERM): the state stays
            for entry in report.modules:
                if entry["status"] == ModuleStatus.RUNNING:
                    entry["status"], entry["error"] = ModuleStatus.FAILED, "interrupted"
            try:
                report.finish(RunStatus.FAILED, [])
            except OSError:
                pass
            log.warning("%s: run interrupted (%s); the next run with the same params "
                        "resumes after the completed modules", self.target, type(exc).__name__)
            raise
        finally:
            for child in ahead.values():
                self.launcher.discard(child)
            state.close()
            reap_children()
            shutil.rmtree(journal_dir, ignore_errors=True)
            if handler is not None:
                close_run_log(handler)
        return RunResult(self.target, ok, params, changed, outcomes, self.dry_run,
                         report.to_dict())

    def _module_env(self, journal: str) -> Dict[str, str]:
        env = dict(self.env)
        env[ACTIONS_ENV] = journal
        return env

    def _run_module(self, module: Module, params: Dict[str, Any], journal: str,
                    meanwhile: Optional[Callable[[], None]] = None,
                    ready: Optional[_Child] = None) -> Tuple[ModuleOutcome, Dict[str, Any]]:
        from templateconfig.plan import read_actions

        log.info("%s: running %s (priority %d)", self.target, module.name, module.priority)
        result = self.launcher.run(module.path, [self.target],
                                   json.dumps(params).encode("utf-8"), self.timeout,
                                   self._module_env(journal), meanwhile, ready)
        actions = read_actions(journal)
        error = failure_reason(result, self.timeout)
        output: Optional[Dict[str, Any]] = None
        if error is None:
            try:
                output = parse_output(result)
            except ValueError as exc:
                stderr = _tail(_decode(result.stderr))
                error = str(exc) + ("\n" + stderr if stderr else "")
        if output is None:
            return ModuleOutcome(module, ModuleStatus.FAILED, result.seconds, error, {}, [],
                                 actions), params
        changed = {k: v for k, v in output.items() if params.get(k, _MISSING) != v}
        removed = sorted(k for k in params if k not in output)
        return ModuleOutcome(module, ModuleStatus.OK, result.seconds, None, changed, removed,
                             actions), output


_MISSING = object()


def _while_module_runs(report, state) -> None:
    """The parent's work at a module's start, done once the module process is started
    (on another CPU, its start-up overlaps this): rewrite the run report, which now
    says the module is running (an error aborts the run, the module killed, as an
    error before its start did), and, the first time, the state's fingerprint (PBKDF2
    over the secrets, needed once the module is done; usually computed while the
    runner preloaded already). An error there is logged; the fingerprint is computed
    again when it is needed."""
    report.write()
    try:
        state.prepare()
    except Exception as exc:
        log.debug("cannot compute the run state's fingerprint yet: %s", exc)


def _secret_names(params: Mapping[str, Any], secret_keys: Iterable[str]) -> set:
    return {k for k in params if is_secret_key(k, secret_keys)}


class _SecretValues:
    """The secret values of a run, shared by the log filter and the report writer."""

    def __init__(self, redactor: RedactingFilter, secret_keys: Iterable[str]) -> None:
        self.redactor = redactor
        self.secret_keys = set(secret_keys)
        self.values: set = set()

    def update(self, params: Mapping[str, Any]) -> None:
        for key, value in params.items():
            if isinstance(value, str) and value and is_secret_key(key, self.secret_keys):
                self.values.add(value)
                self.redactor.add(value)

    def __iter__(self):
        return iter(self.values)


def _resumable(completed: List[Dict[str, Any]], modules: Sequence[Module]) -> Dict[str, Dict[str, Any]]:
    """The completed modules a resumed run may skip: in run order, up to the first one
    that changed a secret (its value was not saved, so it must run again)."""
    by_name = {}
    for entry in completed:
        try:
            by_name[entry["name"]] = {"name": entry["name"], "priority": int(entry["priority"]),
                                      "changes": dict(entry.get("changes") or {}),
                                      "removed": list(entry.get("removed") or []),
                                      "secret_keys_changed": list(entry.get("secret_keys_changed") or [])}
        except (KeyError, TypeError, ValueError):
            continue
    skippable = {}
    for module in modules:
        entry = by_name.get(module.name)
        if entry is None or entry["priority"] != module.priority:
            continue
        if entry["secret_keys_changed"]:
            break
        skippable[module.name] = entry
    return skippable


def _describe(action: Dict[str, Any]) -> str:
    from templateconfig.plan import describe

    return describe(action)


def _log_outcome(target: str, outcome: ModuleOutcome) -> None:
    name = outcome.module.name
    if outcome.status == ModuleStatus.OK:
        log.info("%s: %s ok in %.3f s; changed keys: %s", target, name, outcome.seconds,
                 ", ".join(sorted(outcome.changed)) or "none")
    else:
        log.warning("%s: %s %s in %.3f s: %s", target, name, outcome.status, outcome.seconds,
                  outcome.error)


def run_target(paths: Paths, target: str, params: Mapping[str, Any], **options: Any) -> RunResult:
    """Run ``target`` under ``paths`` with ``params``; options as for :class:`Runner`."""
    return Runner(paths, target, **options).run(params)
