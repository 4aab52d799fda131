"""One ``ovm-template-config`` child: the daemon's way of running a template-config target.

The daemon does not import the framework: it runs it as a process (docs/protocol.md
describes the exchange), so a module that crashes or hangs cannot take the daemon with it.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

from ..control import ControlConnection
from ..firstboot.contract import CHANGED_ONLY_OPTION, INITIAL_CONFIG_OPTION
from ..paths import ROOT_ENV, Paths
from .loop import EventLoop

log = logging.getLogger(__name__)

RUNNER = "ovm-template-config"


def runner_command() -> str:
    """``ovm-template-config`` next to our interpreter (a virtualenv), else on PATH."""
    local = os.path.join(os.path.dirname(sys.executable), RUNNER)
    if os.access(local, os.X_OK):
        return local
    import shutil

    return shutil.which(RUNNER) or RUNNER


class TargetRun:
    """One ``ovm-template-config --input FD --output FD [--root DIR] TARGET`` child.

    Params go in as one JSON object on the input pipe (never on argv); the resulting
    params come back on the output pipe; stdout and stderr lines are logged (redacted by
    the log filter), and the last stderr lines kept (:attr:`stderr_lines`: the runner's
    own messages, such as why it refused the params). Completion is noticed through
    SIGCHLD, so a module that leaves a background process holding our pipes cannot hang
    the daemon.

    Started with ``params`` None, the child *stands by*: it does what needs no params
    (its modules' prepare work, imports, enumeration) and waits for them on its input
    pipe until :meth:`feed` gives them; :meth:`stand_down` ends it without a trace.
    """

    #: How many of the runner's last stderr lines are kept.
    KEPT_LINES = 100

    def __init__(self, paths: Paths, target: str, params: Optional[Dict[str, str]],
                 loop: EventLoop, initial_config: bool = False,
                 changed_only: bool = False, timeout: Optional[float] = None) -> None:
        self.paths = paths
        self.target = target
        #: the runner's ``--timeout`` (each module at most this long), if not its default
        self.timeout = timeout
        #: a first-boot run: the runner re-checks INITIAL_CONFIG under its run lock, exits
        #: ALREADY_CONFIGURED if the console dialog won, and sets the flag to no on success
        self.initial_config = initial_config
        #: a reconfiguration: only the modules whose params changed run
        self.changed_only = changed_only
        self.params: Dict[str, str] = {}
        self._input_fd: Optional[int] = None
        self.loop = loop
        self.started = time.time()
        self.output = bytearray()
        self.returncode: Optional[int] = None
        self.error: Optional[str] = None
        self.waiters: List[ControlConnection] = []
        self.stderr_lines: List[str] = []
        self._partial: Dict[int, bytearray] = {}
        self._stderr_fd: Optional[int] = None
        self._fds: List[int] = []
        self.process: Optional[subprocess.Popen] = None
        self._readers: Dict[int, Callable[[int], None]] = {}
        self._start()
        if params is not None:
            self.feed(params)
        elif self.process is not None:
            log.info("started %s %s ahead (pid %d): it prepares, then waits for the params",
                     RUNNER, self.target, self.process.pid)

    @property
    def standing_by(self) -> bool:
        """Started, waiting for its params."""
        return self._input_fd is not None and not self.finished

    def feed(self, params: Dict[str, str]) -> None:
        """Give the run its params (the input pipe is closed once they are written)."""
        self.params = dict(params)
        self.started = time.time()
        fd, self._input_fd = self._input_fd, None
        if fd is None:
            return  # could not even start
        assert self.process is not None
        words = [option for option, on in ((INITIAL_CONFIG_OPTION, self.initial_config),
                                           (CHANGED_ONLY_OPTION, self.changed_only)) if on]
        if self.timeout is not None:
            words += ["--timeout", "%g" % self.timeout]
        log.info("running %s %s (pid %d)", RUNNER, " ".join(words + [self.target]),
                 self.process.pid)
        self._pending_input = memoryview(json.dumps(self.params).encode("utf-8"))
        self.loop.add_writer(fd, lambda m: self._write(fd))

    def stand_down(self) -> None:
        """End a run that stands by: SIGTERM (it leaves nothing behind), and forget it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
        for fd in list(self._fds):
            self._close_fd(fd)
        self._input_fd = None

    def _start(self) -> None:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        argv = [runner_command(), "--input", str(in_r), "--output", str(out_w)]
        if self.paths.root != "/":
            argv += ["--root", self.paths.root]
        if self.initial_config:
            argv.append(INITIAL_CONFIG_OPTION)
        if self.changed_only:
            argv.append(CHANGED_ONLY_OPTION)
        if self.timeout is not None:
            argv += ["--timeout", "%g" % self.timeout]
        argv.append(self.target)
        env = dict(os.environ)
        env[ROOT_ENV] = self.paths.root
        try:
            self.process = subprocess.Popen(
                argv, pass_fds=(in_r, out_w), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, close_fds=True)
        except OSError as err:
            for fd in (in_r, in_w, out_r, out_w):
                os.close(fd)
            self.error = "cannot start %s: %s" % (argv[0], err.strerror)
            self.returncode = 127
            return
        os.close(in_r)
        os.close(out_w)
        for fd in (in_w, out_r):
            os.set_blocking(fd, False)
        self._fds = [in_w, out_r]
        self._input_fd = in_w
        self._readers = {out_r: self._read_output}
        self.loop.add_reader(out_r, lambda m: self._read_output(out_r))
        assert self.process.stderr is not None
        self._stderr_fd = self.process.stderr.fileno()
        for stream in (self.process.stdout, self.process.stderr):
            assert stream is not None
            fd = stream.fileno()
            os.set_blocking(fd, False)
            self._fds.append(fd)
            self._partial[fd] = bytearray()
            self._readers[fd] = self._read_console
            self.loop.add_reader(fd, functools.partial(self._read_on_event, fd))

    @property
    def finished(self) -> bool:
        return self.returncode is not None

    def _write(self, fd: int) -> None:
        try:
            while self._pending_input:
                self._pending_input = self._pending_input[os.write(fd, self._pending_input):]
        except BlockingIOError:
            return
        except OSError as err:  # the child exited without reading (EPIPE)
            log.debug("%s did not read its input: %s", RUNNER, err)
        self._close_fd(fd)

    def _drain(self, fd: int) -> bytes:
        """What the non-blocking ``fd`` holds now; closes it at end of file."""
        chunks = []
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not data:
                self._close_fd(fd)
                break
            chunks.append(data)
        return b"".join(chunks)

    def _read_output(self, fd: int) -> None:
        self.output += self._drain(fd)

    def _read_on_event(self, fd: int, _mask: int) -> None:
        self._read_console(fd)

    def _read_console(self, fd: int) -> None:
        """A line of the runner's stdout or stderr: logged; stderr's kept too."""
        errors = fd == self._stderr_fd
        partial = self._partial.setdefault(fd, bytearray())
        partial += self._drain(fd)
        *lines, rest = partial.split(b"\n")
        if fd not in self._fds and rest:  # end of file: the last line has no newline
            lines.append(rest)
            rest = bytearray()
        self._partial[fd] = bytearray(rest)
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if not text.strip():
                continue
            log.info("%s: %s", RUNNER, text)
            if errors:
                self.stderr_lines = (self.stderr_lines + [text])[-self.KEPT_LINES:]

    def _close_fd(self, fd: int) -> None:
        if fd in self._fds:
            self._fds.remove(fd)
            self.loop.remove(fd)
            for stream in (self.process.stdout, self.process.stderr) \
                    if self.process is not None else ():
                if stream is not None and not stream.closed and fd == stream.fileno():
                    stream.close()
                    break
            else:
                os.close(fd)

    def check_exit(self) -> bool:
        """Called on SIGCHLD: True once the child has exited and been collected."""
        if self.process is None or self.returncode is not None:
            return self.returncode is not None
        code = self.process.poll()
        if code is None:
            return False
        for fd, reader in list(self._readers.items()):  # what the child left in the pipes
            if fd in self._fds:
                try:
                    reader(fd)
                except OSError:
                    pass
        for fd in list(self._fds):
            self._close_fd(fd)
        self.returncode = code
        return True

    def result_params(self) -> Optional[Dict[str, str]]:
        """The params the runner returned, or None if it returned nothing usable."""
        text = bytes(self.output).decode("utf-8", "replace").strip()
        if not text:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        return {str(k): str(v) for k, v in data.items()}

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
