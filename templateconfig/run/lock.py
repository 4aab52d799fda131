"""One run at a time per root: an exclusive ``flock`` on ``Paths.run_dir/run.lock``.

The daemon's first-boot run (the message path) and the console dialog
(``ovm-template-config-initial-config.service``) may both decide to configure the same
guest; an operator may start a third run by hand. Without a lock two runners would run
modules concurrently on one root and interleave the run report and the resumable state.
Every run that can change the system (not ``--dry-run``, not ``--enumerate``) therefore
holds this lock for its whole duration; a second runner waits for it, bounded by
``--lock-timeout``, and then sees the first runner's result (for ``--initial-config``:
INITIAL_CONFIG=no, so it stands down).

Waiting is a blocking ``flock(LOCK_EX)`` interrupted by a real-time timer (SIGALRM,
``setitimer``), not a polling loop: the waiter wakes the moment the holder exits (the
kernel releases a ``flock`` with the holder's last descriptor, also when it is killed).
The timer needs the main thread; elsewhere the wait is unbounded. The holder's pid is
written into the file, for the message a waiter prints. The file is 0600 in a 0700
directory inside the root (modes put back if someone widened them; a symbolic link
where the file belongs is replaced, never followed). Module processes never inherit
the descriptor (``O_CLOEXEC``, and the runner closes every inherited descriptor in its
children), so a daemon a module starts cannot keep the lock held after the run.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import threading
from types import FrameType
from typing import Any, Callable, Optional

from ovmd.paths import Paths
from templateconfig.run.contract import DEFAULT_LOCK_TIMEOUT

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"


class LockError(Exception):
    """The run lock cannot be taken; nothing was run."""


class LockTimeout(LockError):
    """Another run held the lock for longer than the timeout; nothing was run."""


class _Alarm(Exception):
    pass


def lock_path(paths: Paths) -> str:
    return os.path.join(paths.run_dir, LOCK_NAME)


class RunLock:
    """The run lock of one root; reentrant within one object (nested ``with`` is fine).

    ``timeout`` None waits forever; 0 fails at once if the lock is held. ``on_wait`` is
    called once, with the holder's pid (or None), when the lock is not free at once.
    """

    def __init__(self, paths: Paths, timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT,
                 on_wait: Optional[Callable[[Optional[int]], None]] = None) -> None:
        self.path = lock_path(paths)
        self.root = paths.root
        self.timeout = timeout
        self.on_wait = on_wait
        self._fd: Optional[int] = None
        self._depth = 0

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._depth:
            self._depth += 1
            return
        from ovmd.fsutil import ensure_private_dir, open_own_file

        try:
            # the directory 0700 and inside the root, the file 0600 and never a link
            ensure_private_dir(os.path.dirname(self.path), self.root)
            fd = open_own_file(self.path, os.O_RDWR, 0o600)
        except OSError as exc:
            hint = " (run as root)" if exc.errno in (errno.EACCES, errno.EPERM) else ""
            raise LockError("cannot open the run lock %s: %s%s"
                            % (self.path, exc.strerror or exc, hint)) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                holder = _read_pid(fd)
                log.info("waiting for the run lock %s (held by pid %s)", self.path, holder)
                if self.on_wait is not None:
                    self.on_wait(holder)
                self._wait(fd, holder)
            os.ftruncate(fd, 0)
            os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._depth = 1

    def _wait(self, fd: int, holder: Optional[int]) -> None:
        timeout = self.timeout
        if timeout is not None and timeout <= 0:
            raise LockTimeout(self._timeout_message(holder))
        if timeout is None or threading.current_thread() is not threading.main_thread():
            fcntl.flock(fd, fcntl.LOCK_EX)
            return

        def alarm(signum: int, frame: Optional[FrameType]) -> None:
            raise _Alarm()

        previous = signal.signal(signal.SIGALRM, alarm)
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Alarm:
            raise LockTimeout(self._timeout_message(_read_pid(fd) or holder)) from None
        finally:
            signal.signal(signal.SIGALRM, previous)

    def _timeout_message(self, holder: Optional[int]) -> str:
        return ("another run of this root (pid %s) still holds %s after %g s; nothing was "
                "run (raise --lock-timeout, or wait for it to finish)"
                % (holder if holder is not None else "unknown", self.path, self.timeout or 0))

    def release(self) -> None:
        if not self._depth:
            return
        self._depth -= 1
        if self._depth:
            return
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # releases the flock; the file stays (unlinking would race)

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


def _read_pid(fd: int) -> Optional[int]:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
