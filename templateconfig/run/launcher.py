"""The parent side of module processes: start them, feed their stdin, collect their
output, and kill and reap them.

A Python module (its ``#!`` names a python) runs in a fork of the runner, which first
becomes what a fresh ``python SCRIPT ARGS`` would be (:mod:`templateconfig.run.child`);
other modules are exec'd. With ``OVM_TEMPLATE_CONFIG_NO_FORK=1`` Python modules get a
fresh interpreter (``sys.executable SCRIPT ARGS``) instead; either way
``#!/usr/bin/env python`` modules run where no ``python`` command is on PATH.

The next Python module's process can be started ahead (:meth:`Launcher.prefork`) while
the current one runs: it sets itself up and waits for its input before it reads its
script, so it starts as soon as its turn comes. Work the parent has while a module runs
(rewriting the run report, starting the next module ahead) is done in this thread
(``meanwhile``): no thread is started per module.

A forked child ends its stderr with a marker and its exit status, then closes its pipes
before exiting: the parent knows the outcome without waiting for the kernel to tear the
address space down; such a child is reaped later (:meth:`Launcher.reap`).
"""
from __future__ import annotations

import os
import signal
import sys
import time
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

from templateconfig.run.child import Prepared, child_main
from templateconfig.run.contract import NO_FORK_ENV
from templateconfig.run.preload import preload
from templateconfig.run.scripts import is_python_script

#: Signals held back while forking (see :meth:`Launcher._start`).
_DEFERRED_SIGNALS = {signal.SIGTERM, signal.SIGINT}

#: How long to keep reading a module's pipes after it exited (a daemon it started may
#: hold them open).
_DRAIN_SECONDS = 0.5
#: How often to look for the exit of a child when there is no pidfd to wait on.
_POLL_SECONDS = 0.005
_CHUNK = 65536

#: One job: (script, args, stdin, env or None for the launcher's).
Job = Tuple[str, Sequence[str], bytes, Optional[Mapping[str, str]]]


def fork_enabled() -> bool:
    return os.environ.get(NO_FORK_ENV, "") in ("", "0")


class ProcessResult(NamedTuple):
    """How one module process ended."""

    returncode: int  # negative: killed by that signal
    stdout: bytes
    stderr: bytes
    seconds: float
    timed_out: bool


class ModuleProcess:
    """A started module process and the parent's ends of its pipes."""

    def __init__(self, pid: int, stdin_fd: int, stdout_fd: int, stderr_fd: int,
                 stdin_data: bytes) -> None:
        self.pid = pid
        self.fds: Dict[str, Optional[int]] = {"stdin": stdin_fd, "stdout": stdout_fd,
                                              "stderr": stderr_fd}
        self.pending = memoryview(stdin_data)
        self.out: Dict[str, List[bytes]] = {"stdout": [], "stderr": []}
        self.started = time.monotonic()
        self.status: Optional[int] = None  # the wait status, once reaped
        self.timed_out = False
        self.pidfd: Optional[int] = None
        self.exited_at: Optional[float] = None
        self.exitcode: Optional[int] = None
        #: The end-of-output marker of a forked Python child (see the module docstring).
        self.marker: Optional[bytes] = None
        #: A child started ahead (:meth:`Launcher.prefork`) waits, set up but before
        #: anything of the module runs, until a byte arrives on this pipe.
        self.go_fd: Optional[int] = None
        self.job: Optional[Tuple[str, Tuple[str, ...], Dict[str, str]]] = None

    @property
    def streams_open(self) -> bool:
        return self.fds["stdout"] is not None or self.fds["stderr"] is not None

    def feed(self) -> None:
        """Write what the pipe takes now of the child's stdin (without blocking); close
        it once everything is written (or the child closed its end)."""
        fd = self.fds["stdin"]
        if fd is None:
            return
        os.set_blocking(fd, False)
        try:
            while self.pending:
                self.pending = self.pending[os.write(fd, self.pending[:_CHUNK]):]
        except BlockingIOError:
            return
        except BrokenPipeError:
            self.pending = self.pending[:0]
        self.close("stdin")

    def read_marker(self) -> None:
        """Take the exit status a forked child appended to its stderr, if it did."""
        if self.marker is None:
            return
        err = b"".join(self.out["stderr"])
        at = err.rfind(self.marker)
        if at < 0 or not err.endswith(b"\n"):
            return
        try:
            code = int(err[at + len(self.marker):-1])
        except ValueError:
            return
        self.out["stderr"] = [err[:at]]
        self.exitcode = code
        self.exited_at = time.monotonic()

    def close(self, stream: str) -> None:
        fd = self.fds[stream]
        if fd is not None:
            os.close(fd)
            self.fds[stream] = None

    def reap(self, block: bool = False) -> None:
        if self.status is not None:
            return
        pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        if pid:
            self.status = status
            if self.exitcode is None:
                self.exitcode = os.waitstatus_to_exitcode(status)
                self.exited_at = time.monotonic()

    def result(self) -> ProcessResult:
        if self.status is not None and self.marker is not None:
            self.read_marker()  # reaped before EOF: the marker may be in the output
            self.exitcode = os.waitstatus_to_exitcode(self.status)
        assert self.exitcode is not None, "collected, so it exited or was killed"
        return ProcessResult(self.exitcode, b"".join(self.out["stdout"]),
                             b"".join(self.out["stderr"]),
                             (self.exited_at or time.monotonic()) - self.started,
                             self.timed_out)


class Launcher:
    """Starts module processes (forked or exec'd) and collects their results.

    It owns the children whose outcome is known (their exit marker arrived) but that
    have not been reaped yet: :meth:`reap` collects them.
    """

    def __init__(self, env: Mapping[str, str], fork: Optional[bool] = None) -> None:
        self.env = dict(env)
        self.fork = fork_enabled() if fork is None else fork
        self._unreaped: List[int] = []
        #: Called with the pid (= process group) of every module process started.
        self.on_spawn: Optional[Callable[[int], None]] = None
        # preload() happens before the first fork (the runner overlaps it with the
        # PBKDF2 of its state)

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
            ready: Optional[ModuleProcess] = None) -> ProcessResult:
        """Run one module process to the end (or the timeout); ``meanwhile`` runs while
        the process runs (work that may overlap it, such as writing the run report);
        it is over before this returns. ``ready``: the process :meth:`prefork` started
        for this job, if any (it is used up either way)."""
        return self.run_many([(script, args, stdin, env)], timeout, meanwhile,
                             [ready] if ready is not None else None)[0]

    def run_many(self, jobs: Sequence[Job], timeout: float,
                 meanwhile: Optional[Callable[[], None]] = None,
                 ready: Optional[Sequence[Optional[ModuleProcess]]] = None
                 ) -> List[ProcessResult]:
        """Run several module processes at once (enumeration) and collect them all.

        ``meanwhile`` runs in this thread once the children have their input (as far as
        it fits in the pipes), while they start and work. If it raises, the children are
        killed and the exception propagates. ``ready``: per job, a process
        :meth:`prefork` started, or None.
        """
        children: List[ModuleProcess] = []
        try:
            for index, (script, args, stdin, env) in enumerate(jobs):
                job_env = env or self.env
                child = ready[index] if ready else None
                if child is not None and not self._go(child, script, args, stdin, job_env):
                    child = None
                children.append(child or self._start(script, args, stdin, job_env))
            if meanwhile is not None:
                for child in children:
                    child.feed()
                meanwhile()
            _Collector(children, timeout, self._stop).collect()
        except BaseException:
            for child in children:
                self._stop(child)
            raise
        return [child.result() for child in children]

    def prefork(self, script: str, args: Sequence[str],
                env: Optional[Mapping[str, str]] = None) -> Optional[ModuleProcess]:
        """Start the process of a Python module that is to run next, up to the point
        where a fresh ``python SCRIPT ARGS`` would start running the script: it sets up
        its descriptors, signals, environment and streams, then waits. Nothing of the
        module runs (its script is not even read) until :meth:`run` gives it its input;
        if the runner goes away instead, it exits without a trace. None for a module
        that is exec'd (or with forking off)."""
        forked, _ = self.argv(script, args)
        if not forked:
            return None
        return self._start(script, args, b"", env or self.env, wait=True)

    def spawn(self, script: str, args: Sequence[str],
              env: Optional[Mapping[str, str]] = None) -> ModuleProcess:
        """Start a module process with an empty stdin, to be collected later
        (:meth:`collect`) while the runner does other work meanwhile."""
        child = self._start(script, args, b"", env or self.env)
        child.feed()
        return child

    def collect(self, child: ModuleProcess, timeout: float) -> ProcessResult:
        """Wait for a process :meth:`spawn` started (its timeout counts from now)."""
        child.started = time.monotonic()
        try:
            _Collector([child], timeout, self._stop).collect()
        except BaseException:
            self._stop(child)
            raise
        return child.result()

    def discard(self, child: Optional[ModuleProcess]) -> None:
        """Stop a process :meth:`prefork` started and that will not run."""
        if child is not None:
            if child.go_fd is not None:
                os.close(child.go_fd)
                child.go_fd = None
            self._stop(child)

    def reap(self, block: bool = True) -> None:
        """Collect the exit status of finished forked children (zombies)."""
        for pid in list(self._unreaped):
            try:
                done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self._unreaped.remove(pid)

    def _go(self, child: ModuleProcess, script: str, args: Sequence[str], stdin: bytes,
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
               env: Mapping[str, str], wait: bool = False) -> ModuleProcess:
        forked, argv = self.argv(script, args)
        if forked:
            preload()
        self.reap(block=False)
        marker = (b"\n\0ovm-template-config-exit:%s:" % os.urandom(8).hex().encode()
                  if forked else None)
        # What the child has to undo is worked out here: every object the child reads
        # is a page it copies (reference counts).
        prepared = Prepared(env, forked)
        go_r, go_w = os.pipe() if wait else (None, None)
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        # A termination signal arriving while os.fork() runs its at-fork hooks would have
        # its KeyboardInterrupt swallowed there: keep it pending until the fork is over.
        # The child resets its signal mask and dispositions itself.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
        pid = -1
        try:
            pid = os.fork()
            if pid == 0:  # the child: never returns
                child_main(forked, script, argv, env, (in_r, out_w, err_w), marker, prepared,
                           go_r)
        finally:
            if pid != 0:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        for fd in (in_r, out_w, err_w, go_r):
            if fd is not None:
                os.close(fd)
        try:
            os.setpgid(pid, pid)  # also done in the child: whichever runs first
        except OSError:
            pass
        if self.on_spawn is not None:
            self.on_spawn(pid)
        child = ModuleProcess(pid, in_w, out_r, err_r, stdin)
        child.marker = marker
        if go_w is not None:
            child.go_fd = go_w
            child.job = (script, tuple(args), dict(env))
        if hasattr(os, "pidfd_open"):
            try:
                child.pidfd = os.pidfd_open(pid)
            except OSError:
                child.pidfd = None
        return child

    def _stop(self, child: ModuleProcess) -> None:
        """Kill a module process and everything in its process group, and reap it; a
        child that reported its exit status is left to :meth:`reap`."""
        if child.exitcode is not None and child.status is None:
            self._unreaped.append(child.pid)
        elif child.status is None:
            for kill in (os.killpg, os.kill):
                try:
                    kill(child.pid, signal.SIGKILL)
                    break
                except OSError:
                    continue
            child.reap(block=True)
        for stream in ("stdin", "stdout", "stderr"):
            try:
                child.close(stream)
            except OSError:
                pass
        if child.pidfd is not None:
            os.close(child.pidfd)
            child.pidfd = None


class _Collector:
    """Feeds every child its stdin and reads its stdout and stderr until it exited and
    its pipes are drained (or :data:`_DRAIN_SECONDS` passed), or its timeout passed;
    ``stop`` is called on each child as it is done."""

    def __init__(self, children: List[ModuleProcess], timeout: float,
                 stop: Callable[[ModuleProcess], None]) -> None:
        import selectors

        self.children = children
        self.timeout = timeout
        self.stop = stop
        self.selector: selectors.BaseSelector = selectors.DefaultSelector()
        self._events = (selectors.EVENT_READ, selectors.EVENT_WRITE)
        self._registered: Set[int] = set()

    def collect(self) -> None:
        try:
            for child in self.children:
                self._watch(child)
            running = list(self.children)
            while running:
                for key, _events in self.selector.select(self._wait(running)):
                    child, stream = key.data
                    self._ready(child, stream, key.fd)
                now = time.monotonic()
                for child in list(running):
                    if self._done(child, now):
                        self._forget(child)
                        self.stop(child)
                        running.remove(child)
        finally:
            self.selector.close()

    def _watch(self, child: ModuleProcess) -> None:
        read, write = self._events
        child.feed()
        stdin = child.fds["stdin"]
        if stdin is not None:  # the rest when the pipe has room
            self._register(stdin, write, (child, "stdin"))
        for stream in ("stdout", "stderr"):
            fd = child.fds[stream]
            assert fd is not None, "a new child's pipes are open"
            self._register(fd, read, (child, stream))
        if child.pidfd is not None:
            self._register(child.pidfd, read, (child, "exit"))

    def _register(self, fd: int, events: int, data: Tuple[ModuleProcess, str]) -> None:
        self.selector.register(fd, events, data)
        self._registered.add(fd)

    def _unregister(self, fd: Optional[int]) -> None:
        if fd is not None and fd in self._registered:
            self.selector.unregister(fd)
            self._registered.discard(fd)

    def _forget(self, child: ModuleProcess) -> None:
        for fd in list(child.fds.values()) + [child.pidfd]:
            self._unregister(fd)

    def _wait(self, running: List[ModuleProcess]) -> float:
        """Seconds until the next deadline of a running child."""
        now = time.monotonic()
        deadlines = []
        for child in running:
            deadlines.append(child.started + self.timeout)
            if child.exited_at is not None:
                deadlines.append(child.exited_at + _DRAIN_SECONDS)
            elif child.pidfd is None:
                deadlines.append(now + _POLL_SECONDS)  # no exit notification
        return max(0.0, min(deadlines) - now)

    def _ready(self, child: ModuleProcess, stream: str, fd: int) -> None:
        if stream == "exit":
            self._unregister(fd)
            child.reap()
        elif stream == "stdin":
            try:
                child.pending = child.pending[os.write(fd, child.pending[:_CHUNK]):]
            except BrokenPipeError:
                child.pending = child.pending[:0]
            if not child.pending:
                self._unregister(fd)
                child.close("stdin")
        else:
            data = os.read(fd, _CHUNK)
            if data:
                child.out[stream].append(data)
            else:
                self._unregister(fd)
                child.close(stream)

    def _done(self, child: ModuleProcess, now: float) -> bool:
        """True once ``child`` exited and its pipes are drained (or the drain time is
        over), or its timeout passed (then it is marked timed out)."""
        streams_open = child.streams_open
        if not streams_open and child.exitcode is None:
            child.read_marker()
        if child.exitcode is None:
            child.reap()
        if child.exitcode is not None:
            assert child.exited_at is not None
            return not (streams_open and now < child.exited_at + _DRAIN_SECONDS)
        if now >= child.started + self.timeout:
            child.timed_out = True
            return True
        return False
