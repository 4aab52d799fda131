"""The daemon as a system service: logging per ``-d``, the pid file, systemd's
notification socket, whether the guest itself is shutting down, and the refusal to run
beside Oracle's ``ovmapi`` kernel module."""
from __future__ import annotations

import errno
import fcntl
import logging
import logging.handlers
import os
import socket
import sys
from typing import Any, Dict, List, Optional

from ..paths import Paths
from ..secrets import RedactingFilter

log = logging.getLogger(__name__)


class DaemonError(Exception):
    """The daemon cannot start; the message says what to do."""


# --- logging --------------------------------------------------------------------------

class LogSetup:
    """Handlers per ``-d``: 0 none, 1 stderr, 2 syslog; each carries the redactor."""

    def __init__(self, debug: int, redactor: RedactingFilter, verbose: bool = False) -> None:
        self.debug = debug
        self.redactor = redactor
        self.verbose = verbose
        self.handlers: List[logging.Handler] = []

    def install(self) -> None:
        root = logging.getLogger()
        for old in self.handlers:
            root.removeHandler(old)
            old.close()
        self.handlers = []
        handler: logging.Handler
        if self.debug == 0:
            handler = logging.NullHandler()
        elif self.debug == 1:
            handler = _stderr_handler()
        else:
            handler = _syslog_handler()
        handler.addFilter(self.redactor)
        root.addHandler(handler)
        root.setLevel(logging.DEBUG if self.verbose else logging.INFO)
        self.handlers.append(handler)

    reopen = install


def _stderr_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ovmd[%(process)d] %(levelname)s %(message)s"))
    return handler


def _syslog_handler() -> logging.Handler:
    for address in ("/dev/log", "/var/run/syslog"):
        if os.path.exists(address):
            try:
                handler: logging.Handler = logging.handlers.SysLogHandler(
                    address=address, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
                handler.setFormatter(logging.Formatter("ovmd[%(process)d]: %(message)s"))
                return handler
            except OSError:
                continue
    return _stderr_handler()  # no syslog socket (a container)


# --- pid file and systemd ---------------------------------------------------------------

class PidFile:
    """A pid file guarded by ``fcntl.flock``: it cannot go stale.

    The lock lives as long as the daemon's open file description: after a crash (even
    SIGKILL) the kernel releases it and the next start succeeds; while a daemon runs, a
    second one fails at once with a clear message. Usable as python-daemon's ``pidfile``
    (``__enter__`` writes the pid after the fork; the descriptor must be preserved).
    """

    def __init__(self, path: str, root: Optional[str] = None) -> None:
        self.path = path
        #: the directory must resolve inside this root (the default pid file's)
        self.root = root
        self.fd: Optional[int] = None

    def acquire(self) -> "PidFile":
        from ..fsutil import ensure_private_dir, open_own_file

        ensure_private_dir(os.path.dirname(self.path), self.root)
        fd = open_own_file(self.path, os.O_RDWR, 0o644)  # a link there: replaced
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            other = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DaemonError("ovmd is already running (pid %s holds the lock on %s)"
                                  % (other, self.path)) from None
            raise
        self.fd = fd
        self.write_pid()
        return self

    def write_pid(self) -> None:
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, b"%d\n" % os.getpid(), 0)

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            os.close(self.fd)
            self.fd = None

    # python-daemon's pidfile protocol
    def __enter__(self) -> "PidFile":
        if self.fd is None:
            self.acquire()
        else:
            self.write_pid()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


def sd_notify(state: str, environ: Optional[Dict[str, str]] = None) -> bool:
    """Tell systemd (``NOTIFY_SOCKET``) our state, e.g. ``READY=1``; plain socket code."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
        return True
    except OSError as err:
        log.warning("cannot notify systemd at %s: %s", address, err)
        return False


def guest_shutting_down() -> bool:
    """Whether the guest itself is going down, not only this service: systemd's manager
    is ``stopping`` (``systemctl is-system-running``), or, without systemd, SysV init is
    in runlevel 0 or 6 (``runlevel``). A restart of the daemon (a package upgrade) or
    ``systemctl stop ovmd`` is not. Asked once, when the daemon is told to stop."""
    import subprocess

    argv = ["systemctl", "is-system-running"] if os.path.isdir("/run/systemd/system") \
        else ["runlevel"]
    try:
        out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=5).stdout.split()
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("cannot tell whether the guest is shutting down (%s: %s); taking it "
                    "as not", " ".join(argv), err)
        return False
    if argv[0] == "systemctl":
        return out[:1] == ["stopping"]
    return len(out) == 2 and out[1] in ("0", "6")


def check_no_ovmapi(paths: Paths) -> None:
    """Refuse to start while Oracle's ``ovmapi`` module consumes the same messages."""
    from ..channel import ovmapi_loaded

    found = ovmapi_loaded(paths.root)
    if found:
        raise DaemonError(
            "Oracle's ovmapi kernel module is loaded (%s): it consumes the same XenStore "
            "messages, so two consumers would race. Unload it (`rmmod ovmapi`, and "
            "blacklist it) or keep Oracle's ovmd instead of this one "
            "(`systemctl disable --now ovmd` for the other package)." % found)
